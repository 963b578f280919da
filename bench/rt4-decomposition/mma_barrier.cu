// mma.sp issue rate in rt4's 4 x 4 pattern (8 warps per SM) with what rt4's
// stage adds around it: MODE 0 one metadata register, 1 four, 2 a barrier
// and a shared-memory reload of the four every 64 mma.sp per warp (as rt4),
// 3 the barrier only, 4 the reload into a second register set, 5 the reload
// issued after the stage's first 16 mma.sp. Usage: mma_barrier.
#include <cstdio>
#include <algorithm>
#include <vector>
#include <cuda_runtime.h>
#include "samoyeds_common.cuh"  // mmaSparse, the kernels' mma.sp wrapper
template <int MODE>
__global__ void rate(float* out, int iterations) {
  __shared__ unsigned es[2][4][32];
  constexpr int RA = 4, RB = 4;
  uint4 a[RA];
  unsigned b[RB][4];
  float acc[RA][RB][4];
  for (int i = 0; i < RA; ++i) a[i] = make_uint4(0x3c003c00u ^ (threadIdx.x * 977u + i * 131u), 0x3c003c00u ^ (threadIdx.x * 977u + i * 131u + 1),
                     0x3c003c00u ^ (threadIdx.x * 977u + i * 131u + 2), 0x3c003c00u ^ (threadIdx.x * 977u + i * 131u + 3));
  for (int i = 0; i < RB; ++i) for (int j = 0; j < 4; ++j) b[i][j] = 0x3c003c00u ^ (threadIdx.x * 613u + i * 71u + j);
  for (int i = 0; i < RA; ++i) for (int t = 0; t < RB; ++t) for (int j = 0; j < 4; ++j) acc[i][t][j] = 0.f;
  if (threadIdx.x < 32) for (int p = 0; p < 2; ++p) for (int i = 0; i < 4; ++i) es[p][i][threadIdx.x] = 0x44444444u;
  __syncthreads();
  const int lane = threadIdx.x % 32;
  unsigned e[2][4];
  for (int i = 0; i < 4; ++i) e[0][i] = e[1][i] = 0x44444444u;
  for (int it = 0; it < iterations; it += 4) {
    if (MODE == 2 || MODE == 3 || MODE == 5) __syncthreads();
    if (MODE == 2) for (int i = 0; i < 4; ++i) e[0][i] = es[(it >> 2) & 1][i][lane];
    if (MODE == 4) {
      __syncthreads();
      for (int i = 0; i < 4; ++i) e[((it >> 2) + 1) & 1][i] = es[(it >> 2) & 1][i][lane];
    }
#pragma unroll
    for (int c = 0; c < 4; ++c) {
#pragma unroll
      for (int i = 0; i < RA; ++i)
#pragma unroll
        for (int t = 0; t < RB; ++t) {
          const unsigned ee = MODE == 0 ? e[0][0] : MODE == 4 ? e[(it >> 2) & 1][i] : e[0][i];
          if (c & 1) samoyeds::mmaSparse<samoyeds::bf16, 1>(acc[i][t], a[i], b[t], ee);
          else samoyeds::mmaSparse<samoyeds::bf16, 0>(acc[i][t], a[i], b[t], ee);
        }
      if (MODE == 5 && c == 0) for (int i = 0; i < 4; ++i) e[1][i] = es[(it >> 2) & 1][i][lane];
    }
    if (MODE == 5) for (int i = 0; i < 4; ++i) e[0][i] = e[1][i];
  }
  float s = 0.f;
  for (int i = 0; i < RA; ++i) for (int t = 0; t < RB; ++t) for (int j = 0; j < 4; ++j) s += acc[i][t][j];
  if (s == 12345.f) out[threadIdx.x] = s;
}
template <int MODE>
void measure(float* out, int warpsPerSM, int sms) {
  const int iterations = 4096;
  auto launch = [&] { rate<MODE><<<sms, 32 * warpsPerSM>>>(out, iterations); };
  launch(); cudaDeviceSynchronize();
  cudaEvent_t t0, t1; cudaEventCreate(&t0); cudaEventCreate(&t1);
  std::vector<float> ms;
  for (int r = 0; r < 7; ++r) { cudaEventRecord(t0); launch(); cudaEventRecord(t1); cudaEventSynchronize(t1); float v; cudaEventElapsedTime(&v, t0, t1); ms.push_back(v); }
  std::sort(ms.begin(), ms.end());
  const double med = ms[3] * 1e-3;
  const double mmas = (double)sms * warpsPerSM * iterations * 16;
  printf("MODE %d warps/SM=%2d: %7.1f TFLOP/s, %5.2f cycles/mma/scheduler %s\n", MODE, warpsPerSM, mmas * 8192 / med / 1e12,
         med * 1.98e9 / (mmas / sms / 4), cudaGetErrorString(cudaGetLastError()));
}
int main() {
  int sms = 0; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  float* out; cudaMalloc(&out, 4096);
  measure<0>(out, 8, sms); measure<1>(out, 8, sms); measure<2>(out, 8, sms); measure<3>(out, 8, sms);
  measure<4>(out, 8, sms); measure<5>(out, 8, sms);
  measure<2>(out, 16, sms); measure<3>(out, 16, sms);
  return 0;
}
