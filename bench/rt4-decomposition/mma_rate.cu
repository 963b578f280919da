// mma.sp m16n8k32 (bf16, f32 accumulators) issue rate on register operands:
// how it depends on the warps per scheduler and on the operand pattern.
// Each warp runs ITER rounds of RA x RB mma.sp: RA weight fragments times
// RB token fragments, each product into its own accumulator tile (rt4's
// warp does 4 x 4 per chunk), one CTA per SM. Prints sparse-counted TFLOP/s (8192 per
// mma.sp, as the register-only figure of gpu-machine.md counts them).
// Usage: mma_rate (no arguments).
#include <cstdio>
#include <algorithm>
#include <vector>
#include <cuda_runtime.h>
#include "samoyeds_common.cuh"  // mmaSparse, the kernels' mma.sp wrapper

template <int RA, int RB>
__global__ void rate(float* out, int iterations) {
  uint4 a[RA];
  unsigned b[RB][4];
  float acc[RA][RB][4];
  for (int i = 0; i < RA; ++i)
    a[i] = make_uint4(0x3c003c00u ^ (threadIdx.x * 977u + i * 131u), 0x3c003c00u ^ (threadIdx.x * 977u + i * 131u + 1),
                     0x3c003c00u ^ (threadIdx.x * 977u + i * 131u + 2), 0x3c003c00u ^ (threadIdx.x * 977u + i * 131u + 3));
  for (int i = 0; i < RB; ++i)
    for (int j = 0; j < 4; ++j) b[i][j] = 0x3c003c00u ^ (threadIdx.x * 613u + i * 71u + j);
  for (int i = 0; i < RA; ++i)
    for (int t = 0; t < RB; ++t)
      for (int j = 0; j < 4; ++j) acc[i][t][j] = 0.f;
  const unsigned e = 0x44444444u;
  for (int it = 0; it < iterations; ++it) {
#pragma unroll
    for (int i = 0; i < RA; ++i)
#pragma unroll
      for (int t = 0; t < RB; ++t) {
        if (it & 1) samoyeds::mmaSparse<samoyeds::bf16, 1>(acc[i][t], a[i], b[t], e);
        else samoyeds::mmaSparse<samoyeds::bf16, 0>(acc[i][t], a[i], b[t], e);
      }
  }
  float s = 0.f;
  for (int i = 0; i < RA; ++i)
    for (int t = 0; t < RB; ++t)
      for (int j = 0; j < 4; ++j) s += acc[i][t][j];
  if (s == 12345.f) out[threadIdx.x] = s;
}

template <int RA, int RB>
void measure(float* out, int warpsPerSM, int sms) {
  const int iterations = 4096;
  // One CTA of warpsPerSM warps per SM (at most 32 warps: 1024 threads).
  auto launch = [&] { rate<RA, RB><<<sms, 32 * warpsPerSM>>>(out, iterations); };
  launch();
  cudaDeviceSynchronize();
  cudaEvent_t t0, t1;
  cudaEventCreate(&t0);
  cudaEventCreate(&t1);
  std::vector<float> ms;
  for (int r = 0; r < 7; ++r) {
    cudaEventRecord(t0);
    launch();
    cudaEventRecord(t1);
    cudaEventSynchronize(t1);
    float v;
    cudaEventElapsedTime(&v, t0, t1);
    ms.push_back(v);
  }
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2] * 1e-3;
  const double mmas = (double)sms * warpsPerSM * iterations * RA * RB;
  cudaError_t err = cudaGetLastError();
  printf("RA=%d RB=%d warps/SM=%2d (per scheduler %d): %7.1f TFLOP/s sparse-counted, %5.2f cycles per mma.sp per scheduler at 1.98 GHz%s\n",
         RA, RB, warpsPerSM, warpsPerSM / 4, mmas * 8192 / med / 1e12, med * 1.98e9 / (mmas / sms / 4),
         err == cudaSuccess ? "" : cudaGetErrorString(err));
}

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  float* out;
  cudaMalloc(&out, 4096);
  for (int w : {4, 8, 12, 16}) measure<4, 4>(out, w, sms);  // rt4's 16 tiles per warp
  for (int w : {4, 8, 16, 32}) measure<2, 2>(out, w, sms);
  for (int w : {8, 16, 32}) measure<1, 1>(out, w, sms);
  for (int w : {8}) measure<8, 2>(out, w, sms);
  return 0;
}
