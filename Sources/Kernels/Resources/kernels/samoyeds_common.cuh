// Device helpers shared by the Samoyeds kernels: fixed-width types, 16-bit
// float storage types and one wrapper per PTX instruction, each with the PTX
// ISA section it implements. No CUDA headers are needed, so NVRTC compiles
// this file from memory on any machine.
#pragma once

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef unsigned long long size_t_;

namespace samoyeds {

/// bf16 and fp16 as storage (16 bits); arithmetic is f32.
struct bf16 { uint16_t bits; };
struct fp16 { uint16_t bits; };

template <typename T> __device__ __forceinline__ T fromFloat(float v);

// cvt.rn.bf16.f32 (PTX ISA "cvt"): round to nearest even.
template <> __device__ __forceinline__ bf16 fromFloat<bf16>(float v) {
  uint16_t r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(v));
  return bf16{r};
}

// cvt.rn.f16.f32.
template <> __device__ __forceinline__ fp16 fromFloat<fp16>(float v) {
  uint16_t r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(v));
  return fp16{r};
}

// Two adjacent 16-bit values in one 32-bit store (cvt.rn.{bf16x2,f16x2}.f32
// packs its second source into the low half). `p` must be 4-byte aligned.
template <typename T> __device__ __forceinline__ void storePair(T* p, float lo, float hi);
template <> __device__ __forceinline__ void storePair<bf16>(bf16* p, float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  *reinterpret_cast<uint32_t*>(p) = r;
}
template <> __device__ __forceinline__ void storePair<fp16>(fp16* p, float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  *reinterpret_cast<uint32_t*>(p) = r;
}

__device__ __forceinline__ float siluf(float x) { return x / (1.f + __expf(-x)); }

// cp.async.cg.shared.global (PTX ISA "cp.async"): 16 bytes global -> shared,
// bypassing L1; when `valid` is false the source size is 0 and the 16
// destination bytes are zero-filled.
__device__ __forceinline__ void cpAsync16(void* sharedDst, const void* globalSrc, bool valid) {
  const unsigned dst = (unsigned)__cvta_generic_to_shared(sharedDst);
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(globalSrc), "r"(bytes));
}

// cpAsync16 with the destination as a shared-window address (the result of
// __cvta_generic_to_shared), for callers that keep that address in a register.
__device__ __forceinline__ void cpAsync16(unsigned sharedDst, const void* globalSrc, bool valid) {
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sharedDst), "l"(globalSrc), "r"(bytes));
}

// keepAlive reads `value` here, so the register holding it is not reused
// before this point. A cp.async or shared load reads its address registers
// when the memory pipeline takes it, later than issue; an instruction that
// overwrites one of them right after waits for that (ncu: the warp stalls).
// The read is a real instruction (an xor into `sink`, which the caller
// consumes once at the end): ptxas never sees an empty asm's operands.
// `pinned` makes a value the compiler cannot recompute (a volatile move),
// so the register that a cp.async reads is the one keepAlive reads.
__device__ __forceinline__ void keepAlive(unsigned& sink, unsigned value) {
  asm volatile("xor.b32 %0, %0, %1;" : "+r"(sink) : "r"(value));
}
__device__ __forceinline__ void keepAlive(unsigned& sink, const void* value) {
  asm volatile("{ .reg .b32 lo, hi; mov.b64 {lo, hi}, %1; xor.b32 %0, %0, lo; xor.b32 %0, %0, hi; }"
               : "+r"(sink)
               : "l"(value));
}
__device__ __forceinline__ unsigned pinned(unsigned value) {
  unsigned r;
  asm volatile("mov.b32 %0, %1;" : "=r"(r) : "r"(value));
  return r;
}
template <typename P>
__device__ __forceinline__ const P* pinned(const P* value) {
  const P* r;
  asm volatile("mov.b64 %0, %1;" : "=l"(r) : "l"(value));
  return r;
}

// cp.async.ca.shared.global, 4 bytes (the .cg form copies 16 only); zero-
// filled when `valid` is false.
__device__ __forceinline__ void cpAsync4(void* sharedDst, const void* globalSrc, bool valid) {
  const unsigned dst = (unsigned)__cvta_generic_to_shared(sharedDst);
  const int bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(globalSrc), "r"(bytes));
}

// cp.async.commit_group.
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }

// cp.async.wait_group N: at most N groups still in flight.
template <int N>
__device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ---- mbarrier (PTX ISA "Parallel Synchronization and Communication
// Instructions: mbarrier"), CTA scope, addresses in the shared window ----
__device__ __forceinline__ void mbarrierInit(uint32_t barrier, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(barrier), "r"(count) : "memory");
}
// Whether the phase with parity `parity` has completed (try_wait may
// suspend the thread for a while before answering no).
__device__ __forceinline__ bool mbarrierTryWait(uint32_t barrier, int parity) {
  uint32_t done;
  asm volatile(
      "{\n.reg .pred p;\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(barrier), "r"(parity)
      : "memory");
  return done != 0;
}
// Waits until the phase with parity `parity` has completed. A pipeline
// that stops making progress for ~2^34 cycles (seconds) traps, so a bug
// surfaces as a launch error instead of a hung process.
__device__ __forceinline__ void mbarrierWait(uint32_t barrier, int parity) {
  if (mbarrierTryWait(barrier, parity)) return;
  const long long start = clock64();
  while (!mbarrierTryWait(barrier, parity)) {
    if (clock64() - start > (1ll << 34)) __trap();
  }
}
__device__ __forceinline__ void mbarrierArrive(uint32_t barrier) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(barrier) : "memory");
}
// Programmatic dependent launch (PTX ISA "griddepcontrol", sm_90): a
// kernel launched with programmatic stream serialization may start while
// the previous kernel of its stream still runs. `gridDependencyWait` blocks
// until that kernel has completed and its memory is visible: everything
// before it may read only what no earlier kernel writes (the weights), and
// every write comes after it. `allowDependentLaunch` lets the next such
// kernel start once every CTA of this grid has called it or exited. Both
// do nothing in a kernel launched without the attribute, and below sm_90.
__device__ __forceinline__ void gridDependencyWait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void allowDependentLaunch() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Orders this thread's generic-proxy shared-memory accesses (cp.async
// writes, mbarrier.init) before later async-proxy ones (wgmma operand
// reads, bulk copies completing on a barrier). sm_90.
__device__ __forceinline__ void fenceProxyAsync() {
#if __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

#if __CUDA_ARCH__ >= 900
// mbarrier.arrive.expect_tx (sm_90): this thread's arrival, and `bytes` more
// to come from bulk copies completing on the barrier in this phase.
__device__ __forceinline__ void mbarrierArriveExpectTx(uint32_t barrier, uint32_t bytes) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(barrier),
               "r"(bytes)
               : "memory");
}
// Thread block clusters (sm_90). This CTA's rank in its cluster.
__device__ __forceinline__ unsigned clusterRank() {
  unsigned rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}
// The shared::cluster address of `sharedAddress` (a shared::cta address of
// this CTA) in the cluster's CTA `rank` (PTX ISA "mapa").
__device__ __forceinline__ uint32_t mapaShared(uint32_t sharedAddress, unsigned rank) {
  uint32_t mapped;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(mapped) : "r"(sharedAddress), "r"(rank));
  return mapped;
}
// An arrival (release at cluster scope) on a barrier of another CTA of the
// cluster, named by its shared::cluster address (`mapaShared`).
__device__ __forceinline__ void mbarrierArriveCluster(uint32_t clusterBarrier) {
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(clusterBarrier) : "memory");
}
// Makes this thread's mbarrier.init visible to the cluster's other CTAs
// (before the cluster barrier that lets them use it).
__device__ __forceinline__ void fenceMbarrierInitCluster() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// The cluster-wide barrier in two halves (every thread of every CTA of the
// cluster executes both, in this order).
__device__ __forceinline__ void clusterArrive() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void clusterWait() {
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// cp.async.bulk ... .multicast::cluster (sm_90a): one read of `bytes` from
// global memory written at the same shared offset `sharedDst` in every CTA
// of the cluster named in `ctaMask`, each completing on its own barrier at
// offset `barrier`.
__device__ __forceinline__ void bulkCopyMulticast(uint32_t sharedDst, const void* globalSrc, uint32_t bytes,
                                                  uint32_t barrier, uint16_t ctaMask) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1], %2, [%3], %4;\n" ::
          "r"(sharedDst),
      "l"(globalSrc), "r"(bytes), "r"(barrier), "h"(ctaMask)
      : "memory");
}
// cp.async.mbarrier.arrive.noinc (PTX ISA "cp.async.mbarrier.arrive"): an
// arrival on `barrier` once this thread's earlier cp.async have landed (the
// barrier's count includes it).
__device__ __forceinline__ void cpAsyncArriveOn(uint32_t barrier) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(barrier) : "memory");
}
// cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes (PTX ISA
// "cp.async.bulk", sm_90): `bytes` (a multiple of 16, both addresses 16-byte
// aligned) global -> shared by the copy engine, completing on `barrier`.
__device__ __forceinline__ void bulkCopy(uint32_t sharedDst, const void* globalSrc, uint32_t bytes, uint32_t barrier) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(sharedDst),
      "l"(globalSrc), "r"(bytes), "r"(barrier)
      : "memory");
}
#endif

// ldmatrix.sync.aligned.m8n8.x4.shared.b16 (PTX ISA "ldmatrix"): four 8x8
// b16 matrices; lanes 8j..8j+7 give the row addresses of matrix j, and lane l
// receives row l/4, columns 2(l%4), 2(l%4)+1 of each matrix in r[j].
__device__ __forceinline__ void ldmatrixX4(uint32_t r[4], const void* sharedRow) {
  const unsigned address = (unsigned)__cvta_generic_to_shared(sharedRow);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.{bf16,f16}
// (PTX ISA "Multiply-and-Accumulate Instruction: mma.sp"): D = A * B + D with
// A a 16x32 2:4-sparse matrix given as its 16x16 compressed values (four
// registers, the m16n8k16 A-fragment layout), B 32x8 (four registers), D
// 16x8 f32, `e` the 2-bit positions and SELECTOR the pair of lanes of each
// quad that supplies them (0: lanes 0,1; 1: lanes 2,3).
template <typename T, int SELECTOR>
__device__ __forceinline__ void mmaSparse(float d[4], const uint4& a, const uint32_t b[4], uint32_t e);

#define SAMOYEDS_MMA_SP(TYPE, PTXTYPE)                                                                  \
  template <>                                                                                          \
  __device__ __forceinline__ void mmaSparse<TYPE, 0>(float d[4], const uint4& a, const uint32_t b[4],  \
                                                     uint32_t e) {                                      \
    asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32." PTXTYPE "." PTXTYPE      \
                 ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, 0x0;\n"      \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                      \
                 : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), \
                   "r"(e));                                                                            \
  }                                                                                                    \
  template <>                                                                                          \
  __device__ __forceinline__ void mmaSparse<TYPE, 1>(float d[4], const uint4& a, const uint32_t b[4],  \
                                                     uint32_t e) {                                      \
    asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32." PTXTYPE "." PTXTYPE      \
                 ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, 0x1;\n"      \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                      \
                 : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), \
                   "r"(e));                                                                            \
  }

SAMOYEDS_MMA_SP(bf16, "bf16")
SAMOYEDS_MMA_SP(fp16, "f16")

}  // namespace samoyeds

// ---------------------------------------------------------------------------
// Helpers added for moe_routing.cu
// ---------------------------------------------------------------------------

namespace samoyeds {

// 16-bit storage to f32, exact: bf16 is the upper half of an f32; fp16
// widens with cvt.f32.f16 (PTX ISA "cvt").
template <typename T> __device__ __forceinline__ float toFloat(uint16_t bits);
template <> __device__ __forceinline__ float toFloat<bf16>(uint16_t bits) {
  return __uint_as_float(uint32_t(bits) << 16);
}
template <> __device__ __forceinline__ float toFloat<fp16>(uint16_t bits) {
  float r;
  asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(bits));
  return r;
}

}  // namespace samoyeds
