// What the SMs take in from L2 through the copy engine, with nothing else
// running (GPU machine, sm_90a, not part of the package): the question
// behind the portable kernel's rt4 floor and the Hopper kernel's next steps
// (docs/KERNELS.md, "What bounds the copies"). One CTA per SM streams
// `stages` stages of `stage` bytes through a ring of `ring` slots:
//
//   bulk      `pieces` cp.async.bulk per stage from one thread (2 KB pieces
//             are rt4's weight copies; one piece is the largest copy)
//   tensor    cp.async.bulk.tensor.2d, boxes of 256 rows x 128 bytes (32 KB),
//             the kind of copy cuBLASLt's Hopper kernels use
//   +mcN      a cluster of N CTAs reads each piece once and multicasts it into
//             all N CTAs' slots (.multicast::cluster): the L2 reads drop N
//             times, each SM still receives every byte; a slot is refilled
//             once all N consumers released it (remote mbarrier arrivals)
//   +cpasync  every one of 256 threads also copies 16-byte pieces with
//             cp.async (`rows` bytes per stage), as rt4's token rows
//
// A consumer thread waits for each stage and releases it at once. Sources
// are distinct per CTA (per cluster with multicast) and wrap around a
// `source` MB buffer: 32 MB stays in L2, 2048 MB comes from HBM. Prints, per
// mode, the median CTA's cycles per stage, bytes per SM-cycle received and
// the total received and read from L2 in TB/s (kernel time by events).
//
// Usage: intake (no arguments: the sweep below). Build: run.sh.
// The kernels' helpers come first: they define the fixed-width types
// themselves, so this file includes neither <cstdint> nor <cuda.h> (the
// tensor map is made in tensormap.cpp).
#include "samoyeds_common.cuh"  // mbarrier*, bulkCopy, bulkCopyMulticast, cluster helpers

#include "check.cuh"  // CHECK

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

// CUtensorMap's storage (128 bytes, 64-byte aligned), filled by tensormap.cpp.
struct alignas(64) TensorMap {
  unsigned long long opaque[16];
};
// cuTensorMapEncodeTiled for `bytes` of 16-bit data seen as [bytes / 128][64],
// boxes of `boxRows` x 64, no swizzle. Returns 0 on success.
int encodeTensorMap(TensorMap* map, void* base, unsigned long long bytes, unsigned boxRows);

using namespace samoyeds;

struct Params {
  const uint8_t* src;
  size_t sourceBytes;
  int stages, stage, pieces, ring, rows;  // rows: cp.async bytes per stage (multiple of 4 KB)
  bool tensor;
  unsigned long long* cycles;
};

__device__ __forceinline__ void tensorCopy(uint32_t dst, const TensorMap* map, int x, int y, uint32_t barrier) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          dst),
      "l"(map), "r"(x), "r"(y), "r"(barrier)
      : "memory");
}
__device__ __forceinline__ void tensorCopyMulticast(uint32_t dst, const TensorMap* map, int x, int y, uint32_t barrier,
                                                    uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%2, "
      "%3}], [%4], %5;\n" ::"r"(dst),
      "l"(map), "r"(x), "r"(y), "r"(barrier), "h"(mask)
      : "memory");
}

// How the producer and the consumer wait: mbarrier.try_wait (which may
// suspend the thread for a while) by default, mbarrier.test_wait polled in a
// loop with -DSPIN (run.sh builds both).
__device__ __forceinline__ void waitPhase(uint32_t barrier, int parity) {
#ifdef SPIN
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(barrier), "r"(parity)
        : "memory");
  }
#else
  mbarrierWait(barrier, parity);
#endif
}

// The tensor: the source as [rows][128 B] of 16-bit elements (64 per row).
constexpr int kTensorBoxRows = 256;
constexpr int kTensorBox = kTensorBoxRows * 128;  // 32 KB

template <int CLUSTER>
__global__ void __launch_bounds__(256, 1) intake(Params p, const __grid_constant__ TensorMap map) {
#if __CUDA_ARCH__ >= 900  // the helpers exist in the device pass only
  extern __shared__ __align__(1024) uint8_t smem[];
  __shared__ __align__(8) uint64_t full[8], empty[8];
  const unsigned rank = CLUSTER > 1 ? clusterRank() : 0;
  const int group = blockIdx.x / CLUSTER;  // sources are per cluster
  const uint32_t base = (uint32_t)__cvta_generic_to_shared(smem);
  const uint32_t fullBase = (uint32_t)__cvta_generic_to_shared(full);
  const uint32_t emptyBase = (uint32_t)__cvta_generic_to_shared(empty);
  const int slotBytes = p.stage + p.rows;
  if (threadIdx.x == 0) {
    for (int s = 0; s < p.ring; ++s) {
      mbarrierInit(fullBase + 8 * s, 1 + (p.rows ? 256 : 0));
      mbarrierInit(emptyBase + 8 * s, CLUSTER);
    }
    fenceMbarrierInitCluster();
  }
  if (CLUSTER > 1) {
    clusterArrive();
    clusterWait();
  } else {
    __syncthreads();
  }
  const unsigned long long start = clock64();
  const int pieceBytes = p.tensor ? kTensorBox : p.stage / p.pieces;
  const int pieces = p.tensor ? p.stage / kTensorBox : p.pieces;
  // The stage's source index, advanced by one per stage and wrapped by a
  // compare (a 64-bit `%` per stage costs the producer hundreds of cycles).
  const unsigned wrap = (unsigned)(p.sourceBytes / slotBytes);  // stages that fit the source
  unsigned index = (unsigned)(((size_t)group * p.stages) % wrap);
  int slot = 0, lap = 0;
  for (int s = 0; s < p.stages; ++s, index = index + 1 == wrap ? 0 : index + 1) {
    const uint32_t fullBar = fullBase + 8 * slot, emptyBar = emptyBase + 8 * slot;
    const uint8_t* src = p.src + (size_t)index * slotBytes;
    if (threadIdx.x == 0) {
      if (lap > 0) waitPhase(emptyBar, (lap - 1) & 1);
      mbarrierArriveExpectTx(fullBar, p.stage);
      for (int i = rank; p.stage > 0 && i < pieces; i += CLUSTER) {
        const uint32_t dst = base + slot * slotBytes + i * pieceBytes;
        if (p.tensor) {
          const int row = (int)(((size_t)index * slotBytes + (size_t)i * pieceBytes) / 128);
          if (CLUSTER > 1) tensorCopyMulticast(dst, &map, 0, row, fullBar, (1 << CLUSTER) - 1);
          else tensorCopy(dst, &map, 0, row, fullBar);
        } else if (CLUSTER > 1) {
          bulkCopyMulticast(dst, src + (size_t)i * pieceBytes, pieceBytes, fullBar, (1 << CLUSTER) - 1);
        } else {
          bulkCopy(dst, src + (size_t)i * pieceBytes, pieceBytes, fullBar);
        }
      }
    }
    if (p.rows) {
      // cp.async: every thread its 16-byte pieces of the stage's rows part
      // (all threads wait for the slot's release first, via thread 0's wait
      // and a warp-level re-check of the same barrier phase).
      if (lap > 0 && threadIdx.x != 0) waitPhase(emptyBar, (lap - 1) & 1);
      const uint32_t dst = base + slot * slotBytes + p.stage;
      for (int off = threadIdx.x * 16; off < p.rows; off += 256 * 16)
        cpAsync16(dst + off, src + p.stage + off, true);
      cpAsyncArriveOn(fullBar);
    }
    if (threadIdx.x == 32) {  // the consumer
      waitPhase(fullBar, lap & 1);
      if (CLUSTER > 1) {
        for (int r = 0; r < CLUSTER; ++r) mbarrierArriveCluster(mapaShared(emptyBar, r));
      } else {
        mbarrierArrive(emptyBar);
      }
    }
    if (++slot == p.ring) {
      slot = 0;
      ++lap;
    }
  }
  if (threadIdx.x == 32) p.cycles[blockIdx.x] = clock64() - start;
  __syncthreads();
  if (CLUSTER > 1) {  // no remote arrival may target a CTA that has left
    clusterArrive();
    clusterWait();
  }
#endif
}

int main() {
  int sms = 0, clockKHz = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  CHECK(cudaDeviceGetAttribute(&clockKHz, cudaDevAttrClockRate, 0));
  const size_t bigBytes = size_t(2048) << 20;
  uint8_t* src = nullptr;
  CHECK(cudaMalloc(&src, bigBytes));
  CHECK(cudaMemset(src, 1, bigBytes));
  unsigned long long* cycles = nullptr;
  CHECK(cudaMalloc(&cycles, sizeof(unsigned long long) * 1024));
  TensorMap map;
  if (int r = encodeTensorMap(&map, src, bigBytes, kTensorBoxRows)) {
    fprintf(stderr, "cuTensorMapEncodeTiled failed: %d\n", r);
    return 1;
  }
  cudaEvent_t t0, t1;
  CHECK(cudaEventCreate(&t0));
  CHECK(cudaEventCreate(&t1));

  struct Mode {
    const char* name;
    int cluster, stage, pieces, rows;
    bool tensor;
    int ring = 3;
  };
  // 36 KB = rt4's weight part of a stage (A 32 KB + metadata 4 KB); 16 KB its
  // token rows; 32 KB + 32 KB a tensor-friendly stage of the same order.
  const Mode modes[] = {
      {"bulk 36K in 18x2K", 1, 36864, 18, 0, false},
      {"bulk 36K in 1", 1, 36864, 1, 0, false},
      {"bulk 36K in 18x2K +cpasync 16K", 1, 36864, 18, 16384, false},
      {"bulk 64K in 2", 1, 65536, 2, 0, false},
      {"tensor 64K in 2x32K", 1, 65536, 0, 0, true},
      {"bulk 36K in 18x2K +mc2", 2, 36864, 18, 0, false},
      {"bulk 36K in 2 +mc2", 2, 36864, 2, 0, false},
      {"bulk 36K in 18x2K +mc2 +cpasync 16K", 2, 36864, 18, 16384, false},
      {"bulk 64K in 2 +mc2", 2, 65536, 2, 0, false},
      {"tensor 64K in 2x32K +mc2", 2, 65536, 0, 0, true},
      {"bulk 64K in 4 +mc4", 4, 65536, 4, 0, false},
      {"tensor 64K in 2x32K +mc4", 4, 65536, 0, 0, true},
      // Bytes in flight: the same copies through deeper rings, and cp.async
      // alone (every thread 16-byte pieces, as gathered token rows).
      {"bulk 32K in 1, ring 2", 1, 32768, 1, 0, false, 2},
      {"bulk 32K in 1, ring 3", 1, 32768, 1, 0, false, 3},
      {"bulk 32K in 1, ring 6", 1, 32768, 1, 0, false, 6},
      {"bulk 16K in 1, ring 6", 1, 16384, 1, 0, false, 6},
      {"bulk 64K in 4x16K, ring 3", 1, 65536, 4, 0, false, 3},
      {"bulk 36K in 18x2K, ring 6", 1, 36864, 18, 0, false, 6},
      {"cpasync 16K, ring 3", 1, 0, 1, 16384, false, 3},
      {"cpasync 32K, ring 3", 1, 0, 1, 32768, false, 3},
      {"cpasync 32K, ring 6", 1, 0, 1, 32768, false, 6},
      {"bulk 32K in 1 +cpasync 16K, ring 4", 1, 32768, 1, 16384, false, 4},
  };
  printf("GPU: %d SMs, %.2f GHz; one CTA per SM, rings of 3 slots unless named, %s; waits by %s\n", sms, clockKHz / 1e6,
         "cycles per stage = the median CTA's",
#ifdef SPIN
         "test_wait polling");
#else
         "try_wait");
#endif
  printf("%-38s %8s %7s | %10s %8s %9s %9s\n", "mode", "source", "CTAs", "cyc/stage", "B/SM-cyc", "recv TB/s",
         "L2rd TB/s");
  for (size_t sourceMB : {size_t(32), size_t(2048)}) {
    for (const Mode& m : modes) {
      for (int ctas : {sms / 4 / m.cluster * m.cluster, sms / m.cluster * m.cluster}) {
        Params p{src, sourceMB << 20, 64, m.stage, m.pieces, m.ring, m.rows, m.tensor, cycles};
        const int smemBytes = m.ring * (m.stage + m.rows);
        if (smemBytes > 227 * 1024) continue;
        // One launch configuration (cluster shape, shared memory) for the
        // occupancy query and every launch of this mode.
        void (*kernel)(Params, TensorMap) = m.cluster == 1 ? intake<1> : m.cluster == 2 ? intake<2> : intake<4>;
        CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smemBytes));
        if (m.cluster > 1) CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
        cudaLaunchAttribute attribute[1];
        attribute[0].id = cudaLaunchAttributeClusterDimension;
        attribute[0].val.clusterDim.x = m.cluster;
        attribute[0].val.clusterDim.y = 1;
        attribute[0].val.clusterDim.z = 1;
        cudaLaunchConfig_t config = {};
        config.gridDim = dim3(ctas);
        config.blockDim = dim3(256);
        config.dynamicSmemBytes = smemBytes;
        config.attrs = attribute;
        config.numAttrs = 1;
        int clusters = 0;  // one wave: no more clusters than fit at once
        CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
        if (clusters * m.cluster < ctas) ctas = clusters * m.cluster;
        config.gridDim = dim3(ctas);
        auto launch = [&]() { CHECK(cudaLaunchKernelEx(&config, kernel, p, map)); };
        for (int w = 0; w < 3; ++w) launch();
        CHECK(cudaDeviceSynchronize());
        std::vector<float> times;
        std::vector<unsigned long long> perCTA(ctas);
        for (int r = 0; r < 9; ++r) {
          CHECK(cudaEventRecord(t0));
          launch();
          CHECK(cudaEventRecord(t1));
          CHECK(cudaEventSynchronize(t1));
          float ms = 0;
          CHECK(cudaEventElapsedTime(&ms, t0, t1));
          times.push_back(ms);
        }
        CHECK(cudaMemcpy(perCTA.data(), cycles, sizeof(unsigned long long) * ctas, cudaMemcpyDeviceToHost));
        std::sort(times.begin(), times.end());
        std::sort(perCTA.begin(), perCTA.end());
        const double ms = times[times.size() / 2];
        const double cyc = double(perCTA[ctas / 2]) / p.stages;
        const double received = double(ctas) * p.stages * (m.stage + m.rows);
        const double read = double(ctas) * p.stages * (double(m.stage) / m.cluster + m.rows);
        printf("%-38s %6zuMB %7d | %10.0f %8.1f %9.2f %9.2f\n", m.name, sourceMB, ctas, cyc, (m.stage + m.rows) / cyc,
               received / (ms * 1e-3) / 1e12, read / (ms * 1e-3) / 1e12);
      }
    }
  }
  return 0;
}
