// What the streaming kernel's weight reads reach from HBM (GPU machine,
// sm_90a, not part of the package): the question behind the `stream`
// tiling's ~2.1 TB/s at T = 1 (docs/KERNELS.md, "The streaming CTA").
//
// Every CTA has the streaming kernel's shape: 8 warps, grid (1, row blocks,
// k splits), each warp reading one row tile's A fragments (512 B per k32
// chunk, contiguous per row tile) and metadata (128 B per chunk pair) for
// its split, laid out as `PackedSparseWeight` lays them out. No mma: each
// lane folds what it reads into a checksum, so only the reads are timed.
// Modes:
//
//   lane D     the kernel as shipped: each lane cp.async's its own 16 B of
//              every chunk (4 B of metadata per pair) into a lane-private
//              ring of D chunks and waits for its own copies only
//   warp G/S   one lane per warp issues a cp.async.bulk of G chunks (G x
//              512 B) and their metadata into slot s of a warp ring of S
//              slots; the slot's `full` mbarrier counts the bytes, its
//              `empty` mbarrier the 32 lanes that read it
//   ldg        a plain grid-stride uint4 read of the same bytes (the rate
//              a simple kernel gets from this grid)
//
// `pad` KB of extra dynamic shared memory per CTA stand for the kernel's
// token staging (40 KB at 32 chunks per split), so the CTAs per SM match.
// Each launch reads a fresh part of a 4 GB buffer (HBM, not L2); times are
// CUDA events around 20 back-to-back launches, the median of 7 such runs.
//
// Usage: stream (no arguments: the sweep below). Build: run.sh.
#include "samoyeds_common.cuh"  // cpAsync16/4, mbarrier*, bulkCopy

#include "check.cuh"  // CHECK

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

using namespace samoyeds;

struct Params {
  const uint8_t* a;  // [row tiles][chunks][512 B]
  const uint8_t* e;  // [row tiles][chunks / 2][128 B]
  int chunks, chunksPerSplit;
  unsigned* sink;
};

__device__ __forceinline__ unsigned fold(uint4 v) { return v.x ^ v.y ^ v.z ^ v.w; }

// The shipped pattern: lane-private rings of D chunks.
template <int D>
__global__ void __launch_bounds__(256, 2) laneRing(Params p) {
  extern __shared__ __align__(128) uint8_t smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rowTile = blockIdx.y * 8 + warp;
  const int first = blockIdx.z * p.chunksPerSplit;
  const int mine = min(p.chunks - first, p.chunksPerSplit);
  uint8_t* aRing = smem + (warp * D * 32 + lane) * 16;
  uint8_t* eRing = smem + 8 * D * 32 * 16 + (warp * (D / 2) * 32 + lane) * 4;
  const uint8_t* aSrc = p.a + ((size_t)rowTile * p.chunks + first) * 512 + lane * 16;
  const uint8_t* eSrc = p.e + ((size_t)rowTile * (p.chunks / 2) + first / 2) * 128 + lane * 4;
  auto issue = [&](int i) {
    const bool valid = i < mine;
    cpAsync16(aRing + (i % D) * 512, aSrc + (size_t)(valid ? i : 0) * 512, valid);
    if (i % 2 == 0) cpAsync4(eRing + ((i / 2) % (D / 2)) * 128, eSrc + (size_t)(valid ? i / 2 : 0) * 128, valid);
    cpAsyncCommit();
  };
#pragma unroll
  for (int i = 0; i < D - 1; ++i) issue(i);
  unsigned sum = 0;
  for (int i = 0; i < mine; ++i) {
    cpAsyncWait<D - 2>();
    sum ^= fold(*reinterpret_cast<const uint4*>(aRing + (i % D) * 512));
    if (i % 2 == 0) sum ^= *reinterpret_cast<const unsigned*>(eRing + ((i / 2) % (D / 2)) * 128);
    issue(i + D - 1);
  }
  cpAsyncWait<0>();
  if (sum == 0x12345678u) p.sink[0] = sum;  // never true for the fill used; keeps the reads
}

// One bulk copy of G chunks (and G / 2 metadata pieces) per slot and warp.
template <int G, int S>
__global__ void __launch_bounds__(256, 2) warpRing(Params p) {
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ __align__(8) uint64_t full[8][S], empty[8][S];
  constexpr int slotBytes = G * 512 + G / 2 * 128;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rowTile = blockIdx.y * 8 + warp;
  const int first = blockIdx.z * p.chunksPerSplit;
  const int mine = min(p.chunks - first, p.chunksPerSplit);
  const int groups = (mine + G - 1) / G;
  const uint32_t ring = (uint32_t)__cvta_generic_to_shared(smem) + warp * S * slotBytes;
  const uint32_t fullBase = (uint32_t)__cvta_generic_to_shared(&full[warp][0]);
  const uint32_t emptyBase = (uint32_t)__cvta_generic_to_shared(&empty[warp][0]);
  const uint8_t* aSrc = p.a + ((size_t)rowTile * p.chunks + first) * 512;
  const uint8_t* eSrc = p.e + ((size_t)rowTile * (p.chunks / 2) + first / 2) * 128;
  if (lane == 0) {
    for (int s = 0; s < S; ++s) {
      mbarrierInit(fullBase + 8 * s, 1);
      mbarrierInit(emptyBase + 8 * s, 32);
    }
    fenceProxyAsync();
  }
  __syncwarp();
  auto issue = [&](int g) {  // lane 0
    const int chunks = min(G, mine - g * G);
    const int slot = g % S;
    const uint32_t aBytes = chunks * 512, eBytes = (chunks + 1) / 2 * 128;
    mbarrierArriveExpectTx(fullBase + 8 * slot, aBytes + eBytes);
    bulkCopy(ring + slot * slotBytes, aSrc + (size_t)g * G * 512, aBytes, fullBase + 8 * slot);
    bulkCopy(ring + slot * slotBytes + G * 512, eSrc + (size_t)g * (G / 2) * 128, eBytes, fullBase + 8 * slot);
  };
  if (lane == 0)
    for (int g = 0; g < S && g < groups; ++g) issue(g);
  unsigned sum = 0;
  for (int g = 0; g < groups; ++g) {
    const int slot = g % S, phase = (g / S) & 1;
    mbarrierWait(fullBase + 8 * slot, phase);
    const int chunks = min(G, mine - g * G);
    const uint8_t* base = smem + warp * S * slotBytes + slot * slotBytes;
#pragma unroll
    for (int c = 0; c < G; ++c)
      if (c < chunks) {
        sum ^= fold(*reinterpret_cast<const uint4*>(base + c * 512 + lane * 16));
        if (c % 2 == 0) sum ^= *reinterpret_cast<const unsigned*>(base + G * 512 + (c / 2) * 128 + lane * 4);
      }
    mbarrierArrive(emptyBase + 8 * slot);
    if (lane == 0 && g + S < groups) {
      mbarrierWait(emptyBase + 8 * slot, phase);
      issue(g + S);
    }
  }
  if (sum == 0x12345678u) p.sink[0] = sum;
}

// The same bytes by a grid-stride uint4 loop (A then metadata).
__global__ void __launch_bounds__(256, 2) plainRead(Params p, size_t aBytes, size_t eBytes) {
  unsigned sum = 0;
  const size_t stride = (size_t)gridDim.x * gridDim.y * gridDim.z * 256;
  const size_t id = ((size_t)(blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x) * 256 + threadIdx.x;
  const uint4* a = reinterpret_cast<const uint4*>(p.a);
  const uint4* e = reinterpret_cast<const uint4*>(p.e);
#pragma unroll 8
  for (size_t i = id; i < aBytes / 16; i += stride) sum ^= fold(__ldg(a + i));
  for (size_t i = id; i < eBytes / 16; i += stride) sum ^= fold(__ldg(e + i));
  if (sum == 0x12345678u) p.sink[0] = sum;
}

int main() {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t bufferBytes = size_t(4096) << 20;
  uint8_t* buffer = nullptr;
  CHECK(cudaMalloc(&buffer, bufferBytes));
  CHECK(cudaMemset(buffer, 1, bufferBytes));
  unsigned* sink = nullptr;
  CHECK(cudaMalloc(&sink, 64));
  cudaEvent_t t0, t1;
  CHECK(cudaEventCreate(&t0));
  CHECK(cudaEventCreate(&t1));

  struct Shape {
    const char* name;
    int m, k, splits;  // the streaming kernel's split at T = 1
  };
  const Shape shapes[] = {{"14336x4096", 14336, 4096, 4}, {"4096x14336", 4096, 14336, 16}};
  printf("GPU: %d SMs. Each row: one shape, one mode; us per launch (median of 7 runs of 20 launches), TB/s of the weight's bytes\n",
         sms);
  printf("%-11s %-16s %6s %5s %9s %8s\n", "shape", "mode", "CTAs", "/SM", "us", "TB/s");
  for (const Shape& s : shapes) {
    const int rowTiles = s.m / 2 / 16, chunks = s.k / 32, rowBlocks = rowTiles / 8;
    const int perSplit = (chunks / s.splits + 1) / 2 * 2;
    const int splits = (chunks + perSplit - 1) / perSplit;
    const size_t aBytes = (size_t)rowTiles * chunks * 512, eBytes = (size_t)rowTiles * (chunks / 2) * 128;
    const size_t weightBytes = aBytes + eBytes;
    const int copies = (int)(bufferBytes / weightBytes);
    const int pad = ((perSplit * 16 * 80 + 127) / 128) * 128;  // the kernel's token staging at BN = 16
    struct Mode {
      const char* name;
      const void* kernel;
      int smem;
    };
    const Mode modes[] = {
        {"lane 8 (shipped)", (const void*)laneRing<8>, 8 * 8 * 512 + 8 * 4 * 128},
        {"lane 16", (const void*)laneRing<16>, 8 * 16 * 512 + 8 * 8 * 128},
        {"warp 2/4", (const void*)warpRing<2, 4>, 8 * 4 * (2 * 576)},
        {"warp 4/4", (const void*)warpRing<4, 4>, 8 * 4 * (4 * 576)},
        {"warp 2/8", (const void*)warpRing<2, 8>, 8 * 8 * (2 * 576)},
        {"warp 8/3", (const void*)warpRing<8, 3>, 8 * 3 * (8 * 576)},
        {"warp 4/6", (const void*)warpRing<4, 6>, 8 * 6 * (4 * 576)},
        {"ldg", (const void*)plainRead, 0},
    };
    for (const Mode& m : modes) {
      for (int withPad : {1, 0}) {
        const int smem = m.smem + (withPad ? pad : 0);
        if (m.kernel == (const void*)plainRead && withPad) continue;
        if (smem > 227 * 1024) continue;
        CHECK(cudaFuncSetAttribute(m.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        int perSM = 0;
        CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSM, m.kernel, 256, smem));
        const dim3 grid(1, rowBlocks, splits);
        auto launch = [&](int i) {
          const size_t offset = (size_t)(i % copies) * weightBytes;
          Params p{buffer + offset, buffer + offset + aBytes, chunks, perSplit, sink};
          if (m.kernel == (const void*)plainRead) {
            plainRead<<<grid, 256, smem>>>(p, aBytes, eBytes);
          } else {
            void* args[] = {&p};
            CHECK(cudaLaunchKernel(m.kernel, grid, dim3(256), args, smem, 0));
          }
        };
        for (int i = 0; i < 5; ++i) launch(i);
        CHECK(cudaDeviceSynchronize());
        std::vector<float> runs;
        int next = 0;
        for (int r = 0; r < 7; ++r) {
          CHECK(cudaEventRecord(t0));
          for (int i = 0; i < 20; ++i) launch(next++);
          CHECK(cudaEventRecord(t1));
          CHECK(cudaEventSynchronize(t1));
          float ms = 0;
          CHECK(cudaEventElapsedTime(&ms, t0, t1));
          runs.push_back(ms / 20);
        }
        CHECK(cudaGetLastError());
        std::sort(runs.begin(), runs.end());
        const double us = runs[3] * 1e3;
        char name[64];
        snprintf(name, sizeof name, "%s%s", m.name, withPad ? "" : " nopad");
        printf("%-11s %-16s %6d %5d %9.2f %8.2f\n", s.name, name, rowBlocks * splits, perSM, us,
               weightBytes / (us * 1e-6) / 1e12);
      }
    }
  }
  return 0;
}
