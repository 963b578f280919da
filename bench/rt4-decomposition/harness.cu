// Times the rt4 kernel (dual_sparse_gemm.cu, patched by patch.py) on
// synthetic data: bench/rt4-decomposition/run.sh builds it once per variant.
// Usage: harness M K T LABEL (1:2:128, bf16, store epilogue, one split).
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
#include "dual_sparse_gemm.cu"

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); exit(1);} } while (0)

__global__ void fillBits(uint16_t* p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    unsigned h = (unsigned)i * 2654435761u ^ seed; h ^= h >> 13; h *= 0x5bd1e995u; h ^= h >> 15;
    p[i] = (uint16_t)(0x3c00 | (h & 0x7f) | ((h >> 8) & 1) << 15);  // bf16 in +-[0.0078, 0.0156)
  }
}

int main(int argc, char** argv) {
  if (argc < 5) {
    printf("usage: %s M K T LABEL (M a multiple of 32, K of 128)\n", argv[0]);
    return 2;
  }
  const int m = atoi(argv[1]), k = atoi(argv[2]), T = atoi(argv[3]);
  const char* label = argv[4];
  const int mc = m / 2, rowTiles = mc / 16, chunks = k / 32, vectors = k / 128;
  uint4* a; uint32_t* e; uint8_t* sel; uint16_t* x; int* rows; uint16_t* out;
  // A, or (EXP_BIGA) a weight packed per row block and stage: 36 KB per
  // block-stage, row blocks of 16 tiles rounded up.
  const size_t aBytes = std::max((size_t)rowTiles * chunks * 32 * 16, (size_t)((rowTiles + 15) / 16) * (k / 128) * 36864);
  CK(cudaMalloc(&a, aBytes));
  CK(cudaMalloc(&e, (size_t)rowTiles * (chunks / 2) * 32 * 4));
  CK(cudaMalloc(&sel, (size_t)mc * vectors));
  CK(cudaMalloc(&x, (size_t)T * k * 2));
  CK(cudaMalloc(&rows, T * 4));
  CK(cudaMalloc(&out, (size_t)T * m * 2));
  fillBits<<<1024, 256>>>((uint16_t*)a, aBytes / 2, 1);
  fillBits<<<1024, 256>>>(x, (size_t)T * k, 2);
  CK(cudaMemset(e, 0x44, (size_t)rowTiles * (chunks / 2) * 32 * 4));
  std::vector<uint8_t> hs((size_t)mc * vectors);
  for (size_t i = 0; i < hs.size(); ++i) hs[i] = (i * 7 + i / 13) & 1;
  CK(cudaMemcpy(sel, hs.data(), hs.size(), cudaMemcpyHostToDevice));
  std::vector<int> hr(T);
  for (int i = 0; i < T; ++i) hr[i] = (int)(((long)i * 7919) % T);
  CK(cudaMemcpy(rows, hr.data(), T * 4, cudaMemcpyHostToDevice));
  samoyeds::GemmArgs g = {};
  g.w0.a = a; g.w0.e = e; g.w0.selection = sel; g.w0.mc = mc; g.w0.m = m;
  g.x = x; g.rows = rows; g.count = T; g.k = k; g.vectorChunks = 4; g.chunksPerSplit = chunks; g.splits = 1;
  g.out = out;
  using L = samoyeds::WideLayout<64>;
  const int smem = samoyeds::kWideStages * L::bytes > 140000 ? samoyeds::kWideStages * L::bytes : 140000;
  CK(cudaFuncSetAttribute(samoyeds_bf16_n1m2_store_rt4, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  dim3 grid((rowTiles + 15) / 16, (T + 63) / 64, 1);
  cudaEvent_t t0, t1; cudaEventCreate(&t0); cudaEventCreate(&t1);
  for (int i = 0; i < 5; ++i) samoyeds_bf16_n1m2_store_rt4<<<grid, 256, smem>>>(g);
  CK(cudaDeviceSynchronize());
  std::vector<float> ms;
  for (int r = 0; r < 15; ++r) {
    cudaEventRecord(t0);
    samoyeds_bf16_n1m2_store_rt4<<<grid, 256, smem>>>(g);
    cudaEventRecord(t1); cudaEventSynchronize(t1);
    float v; cudaEventElapsedTime(&v, t0, t1); ms.push_back(v);
  }
  CK(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  // Cycles per CTA stage, assuming 1.98 GHz, 132 SMs and one CTA per SM
  // (the last wave's partial fill is counted as full waves' share).
  const double waves = (double)(grid.x * grid.y) / 132.0;
  const double cyc = med * 1e-3 * 1.98e9 / (waves * (chunks / 4));
  // With at most one CTA per SM (grid <= 132) a CTA's own cycles per stage.
  const double one = med * 1e-3 * 1.98e9 / (chunks / 4);
  printf("%-10s m=%d k=%d T=%d  %.4f ms  %.0f cycles/stage  %s%.0f  (%.0f sparse TF/s dense-eq %.0f)\n", label, m, k, T, med, cyc,
         grid.x * grid.y <= 132 ? "one wave: " : "if one wave: ", one,
         2.0 * mc * k * T / (med * 1e-3) / 1e12, 2.0 * m * k * T / (med * 1e-3) / 1e12);
  return 0;
}
