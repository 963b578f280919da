// MoE routing on the GPU: the router (logits, softmax, top-k) and the
// activation-side dispatch — the `RoutingPlan` of
// Sources/SamoyedsFormat/RoutingPlan.swift — built on the device from the
// hidden states the expert GEMMs read, with no host round trip.
//
// Four kernels, launched in this order on one stream by
// Sources/Kernels/MoERouting.swift (the host zeroes `counts` first):
//
//   1. samoyeds_router_logits_{bf16,fp16}
//        P[s][t][e] = sum over the columns c of k-split s of x[t, c] * R[e, c]
//        (f32; a 64-token x 64-expert tile per CTA, k split only when the
//        tiles alone cannot fill the GPU)
//   2. samoyeds_router_select                     one warp per token
//        logits l[e] = sum_s P[s][t][e] (split order), softmax over all
//        experts, top-k (ties: lower expert), optional renormalization
//        -> selectedExperts/selectedWeights [T][topK] (the CPU Router's
//        `Choice`), and counts[e][rank][block] of every (expert, rank,
//        dispatch block of kBlockTokens tokens)
//   3. samoyeds_route_scan                        one CTA per expert
//        capacity admission in the CPU's order (every first choice in token
//        order, then every second choice, ...) -> admitted[e][rank][block];
//        where each dispatch block's entries start in the expert's segment
//        -> blockStart[e][block]; the expert's entry count -> expertTotals[e]
//   4. samoyeds_route_scatter                     one warp per dispatch block
//        expert offsets (a scan of the totals; CTA 0 writes them); drops the
//        choices past capacity (-1, weight 0, as the CPU does); then a stable
//        scatter in token order: entry (t, rank) of expert e goes to
//        offsets[e] + blockStart[e][block] + (entries of e from earlier
//        tokens of its block) -> tokenIndices, weights, outputSlots.
//
// For decode (few tokens, no capacity drop) the host launches instead one
// kernel, samoyeds_route_small_{bf16,fp16}, that does all four steps (see
// "Decode routing" below) and needs no memset.
//
// Determinism: every float is computed by one thread or one warp in a fixed
// order (no float atomics; butterfly reductions give every lane the same
// bits because IEEE addition is commutative); the integer atomics (counts,
// member masks) give the same totals in any order. So a plan repeats
// bitwise. docs/DATAFLOW.md ("Router on the GPU") walks through an example.

#include "samoyeds_common.cuh"

namespace samoyeds {
namespace routing {

// ---------------------------------------------------------------------------
// Configuration (mirrored in MoERouting.swift; KernelsTests checks the values)
// ---------------------------------------------------------------------------

constexpr int kMaxExperts = 256;   // experts a token chooses from (8 per lane in `select`)
constexpr int kMaxTopK = 32;       // choices per token (rank r is held by lane r)
constexpr int kSplitLoads = 16;    // partial logits a lane loads at once when summing the splits
constexpr int kTileTokens = 64;    // logits tile: tokens per CTA
constexpr int kTileExperts = 64;   //              experts per CTA
constexpr int kChunk = 32;         //              hidden columns per shared-memory stage
constexpr int kLogitThreads = 256; //              16 x 16 threads, 4 x 4 outputs each
constexpr int kSelectWarps = 8;    // select: tokens (warps) per CTA
constexpr int kBlockTokens = 128;  // dispatch block: tokens one warp scatters, in order
constexpr int kScatterWarps = 8;   // scatter: dispatch blocks (warps) per CTA
constexpr int kScanThreads = 256;  // scan and scatter CTAs (>= kMaxExperts)
constexpr int kSmallTokens = 16;   // decode routing (one launch): at most this many tokens
constexpr int kSmallWarps = 8;     //   experts per CTA (a warp each); the last CTA builds the plan

constexpr int kExpertsPerLane = kMaxExperts / 32;
static_assert(kScatterWarps * 32 == kScanThreads && kScanThreads >= kMaxExperts, "one thread per expert");
static_assert(kMaxTopK <= 32, "rank r of a token is held by lane r in select");
static_assert(kBlockTokens % 32 == 0, "dispatch blocks are whole warps of tokens");
static_assert(kSmallWarps * 32 >= kMaxExperts, "decode routing: one thread per expert in the plan step");

// ---------------------------------------------------------------------------
// Arguments: one struct for every kernel (laid out by MoERouting.swift)
// ---------------------------------------------------------------------------

struct RoutingArgs {
  const uint16_t* x;       // hidden states [T][hidden], bf16 or fp16 bits
  const float* router;     // router weight [E][hidden], f32
  float* logits;           // partial logits [splits][T][E]
  int* selectedExperts;    // [T][topK] experts in rank order; -1 = dropped by capacity
  float* selectedWeights;  // [T][topK] routing weights; 0 when dropped
  int* counts;             // [E][topK][blocks] choices per (expert, rank, dispatch block); zeroed by the host
  int* admitted;           // [E][topK][blocks] of those, admitted (the first ones in token order)
  int* blockStart;         // [E][blocks] first entry of each block within the expert's segment
  int* expertTotals;       // [E] admitted entries per expert
  int* expertOffsets;      // [E + 1] the plan's CSR offsets
  int* tokenIndices;       // [T * topK] (first expertOffsets[E] used)
  float* weights;          // [T * topK]
  int* outputSlots;        // [T * topK]
  int tokens;              // T
  int hidden;              // a multiple of kChunk
  int experts;             // E <= kMaxExperts
  int topK;                // <= min(E, kMaxTopK)
  int splits;              // k splits of the logits (grid.z of kernel 1)
  int chunksPerSplit;      // kChunk-column stages per split
  int blocks;              // dispatch blocks, ceil(T / kBlockTokens)
  int renormalize;         // 1: divide the top-k weights by their sum
  int capacity;            // entries each expert admits; >= T means no limit
};

// ---------------------------------------------------------------------------
// Warp and CTA helpers
// ---------------------------------------------------------------------------

__device__ __forceinline__ float negativeInfinity() { return __int_as_float(0xff800000); }

// Butterfly reductions: every lane ends with the same bits (a + b == b + a).
__device__ __forceinline__ float warpMax(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Exclusive prefix sum of `value` over the CTA's threads in thread order;
// `total` receives the sum. Every thread of the CTA must call it.
__device__ __forceinline__ int blockExclusiveScan(int value, int* warpTotals, int& total) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  int inclusive = value;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int up = __shfl_up_sync(0xffffffffu, inclusive, d);
    if (lane >= d) inclusive += up;
  }
  if (lane == 31) warpTotals[warp] = inclusive;
  __syncthreads();
  int before = 0;
  total = 0;
  for (int w = 0; w < int(blockDim.x / 32); ++w) {
    const int v = warpTotals[w];
    if (w < warp) before += v;
    total += v;
  }
  __syncthreads();  // warpTotals may be reused
  return before + inclusive - value;
}

// Whether (value, expert) comes before (bestValue, best) in top-k order:
// the larger probability first, ties to the lower expert index (the CPU
// Router's rule). expert < 0 is "none".
__device__ __forceinline__ bool ranksBefore(float value, int expert, float bestValue, int best) {
  if (expert < 0) return false;
  if (best < 0) return true;
  return value > bestValue || (value == bestValue && expert < best);
}

// ---------------------------------------------------------------------------
// 1. Router logits: P[s][t][e] = sum_{c in split s} x[t, c] * R[e, c]
// ---------------------------------------------------------------------------
//
// Grid (ceil(T / 64), ceil(E / 64), splits), 256 threads. Per stage, the
// CTA stages 32 columns of its 64 token rows (converted to f32) and of its
// 64 router rows in shared memory, both transposed ([column][row]) so each
// thread reads its 4 tokens and 4 experts as two float4. Thread (i, j) =
// (tid / 16, tid % 16) accumulates tokens 4i..4i+3 x experts 4j..4j+3 in
// column order with fmaf. A warp covers 8 tokens; warps whose tokens are all
// past T skip the arithmetic (decode: one warp of eight works), and rows past
// T or E are zero-filled. Each router element loaded feeds 64 tokens.

template <typename T>
__device__ __forceinline__ void routerLogits(const RoutingArgs& a) {
  __shared__ __align__(16) float xs[kChunk][kTileTokens];
  __shared__ __align__(16) float rs[kChunk][kTileExperts];
  const int tid = threadIdx.x;
  const int tokenBase = blockIdx.x * kTileTokens;
  const int expertBase = blockIdx.y * kTileExperts;
  const int firstChunk = blockIdx.z * a.chunksPerSplit;
  const int endChunk = min(a.hidden / kChunk, firstChunk + a.chunksPerSplit);
  const int tokenGroup = tid / 16;   // tokens 4 * tokenGroup ..
  const int expertGroup = tid % 16;  // experts 4 * expertGroup ..
  const bool warpActive = tokenBase + (tid / 32) * 8 < a.tokens;

  // Loader roles: x is 64 rows x 32 columns of 16 bits, one 16-byte load
  // (8 values) per thread; R is 64 rows x 32 f32, two float4 per thread.
  const int xRow = tid / 4;
  const int xPart = tid % 4;
  const bool xValid = tokenBase + xRow < a.tokens;
  const uint16_t* xSource = a.x + (size_t)(xValid ? tokenBase + xRow : 0) * a.hidden + xPart * 8;
  constexpr int kRouterLoads = kTileExperts * kChunk / 4 / kLogitThreads;  // float4 per thread
  static_assert(kRouterLoads * kLogitThreads * 4 == kTileExperts * kChunk, "whole float4 loads");

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

  for (int chunk = firstChunk; chunk < endChunk; ++chunk) {
    const int column = chunk * kChunk;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (xValid) v = *reinterpret_cast<const uint4*>(xSource + column);
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      xs[xPart * 8 + 2 * w][xRow] = toFloat<T>(uint16_t(words[w] & 0xffffu));
      xs[xPart * 8 + 2 * w + 1][xRow] = toFloat<T>(uint16_t(words[w] >> 16));
    }
#pragma unroll
    for (int load = 0; load < kRouterLoads; ++load) {
      const int i = tid + load * kLogitThreads;
      const int row = i / (kChunk / 4);
      const int part = i % (kChunk / 4);
      float4 r = make_float4(0.f, 0.f, 0.f, 0.f);
      if (expertBase + row < a.experts) {
        r = *reinterpret_cast<const float4*>(a.router + (size_t)(expertBase + row) * a.hidden + column + part * 4);
      }
      rs[part * 4 + 0][row] = r.x;
      rs[part * 4 + 1][row] = r.y;
      rs[part * 4 + 2][row] = r.z;
      rs[part * 4 + 3][row] = r.w;
    }
    __syncthreads();
    if (warpActive) {
#pragma unroll 8
      for (int c = 0; c < kChunk; ++c) {
        const float4 xv = *reinterpret_cast<const float4*>(&xs[c][tokenGroup * 4]);
        const float4 rv = *reinterpret_cast<const float4*>(&rs[c][expertGroup * 4]);
        const float xf[4] = {xv.x, xv.y, xv.z, xv.w};
        const float rf[4] = {rv.x, rv.y, rv.z, rv.w};
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(xf[i], rf[j], acc[i][j]);
      }
    }
    __syncthreads();  // the stage is overwritten next
  }

  float* out = a.logits + (size_t)blockIdx.z * a.tokens * a.experts;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int t = tokenBase + tokenGroup * 4 + i;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int e = expertBase + expertGroup * 4 + j;
      if (t < a.tokens && e < a.experts) out[(size_t)t * a.experts + e] = acc[i][j];
    }
  }
}

// ---------------------------------------------------------------------------
// 2. Select: softmax, top-k, renormalization, counts. One warp per token.
// ---------------------------------------------------------------------------
//
// Lane l holds experts l, l + 32, ... (kExpertsPerLane registers). Exactly
// the CPU Router's arithmetic: p[e] = expf(l[e] - max) / total in f32 (IEEE
// division, no fast math); the k picks compare those quotients, larger
// first, ties to the lower expert; with renormalization the k weights are
// summed in rank order and divided by the sum. Only `total` is summed in a
// different order (lane sums, then a butterfly): weights agree with the CPU
// to a few ulps, and a choice can differ only where two probabilities are
// within that of each other (docs/DATAFLOW.md: exact-logit inputs).
// Lane r keeps rank r's choice and counts it in counts[e][r][t / kBlockTokens].

// `COHERENT`: read the logits with ld.global.cg (written by other CTAs of
// the same launch: the decode routing's last CTA).
template <bool COHERENT>
__device__ __forceinline__ void selectToken(const RoutingArgs& a, int t, int lane, int& myExpert, float& myWeight) {
  float p[kExpertsPerLane];
  float maximum = negativeInfinity();
#pragma unroll
  for (int j = 0; j < kExpertsPerLane; ++j) {
    const int e = lane + 32 * j;
    p[j] = 0.f;
    if (e < a.experts) {
      // The splits summed in order, their loads issued kSplitLoads at a
      // time (a dependent load per split cost ~0.3 us each from L2).
      float logit = 0.f;
      for (int s0 = 0; s0 < a.splits; s0 += kSplitLoads) {
        float part[kSplitLoads];
#pragma unroll
        for (int s = 0; s < kSplitLoads; ++s) {
          const float* at = a.logits + ((size_t)(s0 + s) * a.tokens + t) * a.experts + e;
          part[s] = s0 + s < a.splits ? (COHERENT ? __ldcg(at) : *at) : 0.f;
        }
#pragma unroll
        for (int s = 0; s < kSplitLoads; ++s) {
          if (s0 + s < a.splits) logit += part[s];
        }
      }
      p[j] = logit;
      maximum = fmaxf(maximum, logit);
    }
  }
  maximum = warpMax(maximum);
  float total = 0.f;
#pragma unroll
  for (int j = 0; j < kExpertsPerLane; ++j) {
    if (lane + 32 * j < a.experts) {
      p[j] = expf(p[j] - maximum);
      total += p[j];
    }
  }
  total = warpSum(total);
#pragma unroll
  for (int j = 0; j < kExpertsPerLane; ++j) p[j] = p[j] / total;

  unsigned taken = 0u;  // bit j: expert lane + 32 j already chosen
  myExpert = -1;
  myWeight = 0.f;
  for (int rank = 0; rank < a.topK; ++rank) {
    float bestValue = 0.f;
    int best = -1;
#pragma unroll
    for (int j = 0; j < kExpertsPerLane; ++j) {
      const int e = lane + 32 * j;
      if (e < a.experts && !((taken >> j) & 1u) && ranksBefore(p[j], e, bestValue, best)) {
        bestValue = p[j];
        best = e;
      }
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float otherValue = __shfl_xor_sync(0xffffffffu, bestValue, offset);
      const int other = __shfl_xor_sync(0xffffffffu, best, offset);
      if (ranksBefore(otherValue, other, bestValue, best)) {
        bestValue = otherValue;
        best = other;
      }
    }
    // The order is total for finite values, so every lane holds the same
    // winner; take lane 0's so that even NaN logits give one valid choice.
    best = __shfl_sync(0xffffffffu, best, 0);
    bestValue = __shfl_sync(0xffffffffu, bestValue, 0);
    if (best % 32 == lane) taken |= 1u << (best / 32);
    if (lane == rank) {
      myExpert = best;
      myWeight = bestValue;
    }
  }
  if (a.renormalize) {
    float sum = 0.f;
    for (int rank = 0; rank < a.topK; ++rank) sum += __shfl_sync(0xffffffffu, myWeight, rank);
    myWeight = myWeight / sum;
  }
}

__device__ __forceinline__ void routerSelect(const RoutingArgs& a) {
  const int t = blockIdx.x * kSelectWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= a.tokens) return;  // whole warps
  int myExpert;
  float myWeight;
  selectToken<false>(a, t, lane, myExpert, myWeight);
  if (lane < a.topK) {
    a.selectedExperts[(size_t)t * a.topK + lane] = myExpert;
    a.selectedWeights[(size_t)t * a.topK + lane] = myWeight;
    atomicAdd(&a.counts[((size_t)myExpert * a.topK + lane) * a.blocks + t / kBlockTokens], 1);
  }
}

// ---------------------------------------------------------------------------
// 3. Scan: capacity admission and block starts. One CTA per expert.
// ---------------------------------------------------------------------------
//
// The expert's counts [topK][blocks] read in memory order are its choices
// in the CPU's admission order: rank 0 of every token in token order, then
// rank 1, ... A choice is admitted while fewer than `capacity` choices came
// before it, so block b's rank-r choices admit
//   admitted = min(count, max(0, capacity - (choices before them))),
// the first ones in token order. Then, over blocks in order, the admitted
// entries of all ranks give each block's start within the segment.

__device__ __forceinline__ void routeScan(const RoutingArgs& a) {
  __shared__ int warpTotals[32];
  const int e = blockIdx.x;
  const int items = a.topK * a.blocks;
  const int* counts = a.counts + (size_t)e * items;
  int* admitted = a.admitted + (size_t)e * items;

  // Admission: each thread takes a contiguous run of (rank, block) items.
  const int perThread = (items + kScanThreads - 1) / kScanThreads;
  const int begin = min(items, (int)threadIdx.x * perThread);
  const int end = min(items, begin + perThread);
  int sum = 0;
  for (int i = begin; i < end; ++i) sum += counts[i];
  int total;
  int before = blockExclusiveScan(sum, warpTotals, total);
  for (int i = begin; i < end; ++i) {
    const int count = counts[i];
    admitted[i] = min(count, max(0, a.capacity - before));
    before += count;
  }
  __syncthreads();  // admitted[] (global) is read by other threads of this CTA below

  // Block starts: admitted entries of every rank, block by block.
  const int blocksPerThread = (a.blocks + kScanThreads - 1) / kScanThreads;
  const int firstBlock = min(a.blocks, (int)threadIdx.x * blocksPerThread);
  const int endBlock = min(a.blocks, firstBlock + blocksPerThread);
  sum = 0;
  for (int b = firstBlock; b < endBlock; ++b)
    for (int r = 0; r < a.topK; ++r) sum += admitted[r * a.blocks + b];
  int start = blockExclusiveScan(sum, warpTotals, total);
  for (int b = firstBlock; b < endBlock; ++b) {
    a.blockStart[(size_t)e * a.blocks + b] = start;
    for (int r = 0; r < a.topK; ++r) start += admitted[r * a.blocks + b];
  }
  if (threadIdx.x == 0) a.expertTotals[e] = total;
}

// ---------------------------------------------------------------------------
// 4. Scatter: offsets, capacity drops, the stable scatter. One warp per block.
// ---------------------------------------------------------------------------
//
// Lane l handles token first + 32 c + l of its dispatch block in chunk c;
// chunks go in order, so a per-warp running count per expert (`seen`) plus
// the rank of the lane among this chunk's lanes with the same expert gives
// each entry its place in token order without sorting:
//   drops (only with a capacity below T): per rank r, the lanes choosing e
//     at rank r are found with match.any; choice number seen[e] + (lower such
//     lanes) of the block is admitted iff below admitted[e][r][block];
//   scatter: each surviving choice sets its lane's bit in members[e]; the
//     entry goes to offsets[e] + blockStart[e][block] + seen[e]
//     + popc(members[e] & lanes below), and the highest member adds
//     popc(members[e]) to seen[e] for the next chunk.
// A token chooses an expert at most once, so members[e] has one bit per token.

__device__ __forceinline__ void routeScatter(const RoutingArgs& a) {
  __shared__ int offsets[kMaxExperts];
  __shared__ int warpTotals[32];
  __shared__ int seenAll[kScatterWarps][kMaxExperts];
  __shared__ unsigned membersAll[kScatterWarps][kMaxExperts];

  // Expert offsets: a scan of the totals, in every CTA; CTA 0 stores them.
  const int tid = threadIdx.x;
  int total;
  const int offset = blockExclusiveScan(tid < a.experts ? a.expertTotals[tid] : 0, warpTotals, total);
  if (tid < a.experts) offsets[tid] = offset;
  if (blockIdx.x == 0) {
    if (tid < a.experts) a.expertOffsets[tid] = offset;
    if (tid == 0) a.expertOffsets[a.experts] = total;
  }
  __syncthreads();

  const int warp = tid / 32;
  const int lane = tid % 32;
  const int block = blockIdx.x * kScatterWarps + warp;
  if (block >= a.blocks) return;  // no CTA-wide barrier follows
  int* seen = seenAll[warp];
  unsigned* members = membersAll[warp];
  const unsigned lanesBelow = (1u << lane) - 1u;
  const int first = block * kBlockTokens;

  if (a.capacity < a.tokens) {
    for (int r = 0; r < a.topK; ++r) {
      for (int i = lane; i < a.experts; i += 32) seen[i] = 0;
      __syncwarp();
      for (int c = 0; c < kBlockTokens / 32; ++c) {
        const int t = first + 32 * c + lane;
        const bool valid = t < a.tokens;
        const size_t at = (size_t)t * a.topK + r;
        const int e = valid ? a.selectedExperts[at] : -1;
        const unsigned group = __match_any_sync(0xffffffffu, e);
        if (valid) {
          const int number = seen[e] + __popc(group & lanesBelow);
          if (number >= a.admitted[((size_t)e * a.topK + r) * a.blocks + block]) {
            a.selectedExperts[at] = -1;
            a.selectedWeights[at] = 0.f;
          }
        }
        __syncwarp();
        if (valid && lane == 31 - __clz(group)) seen[e] += __popc(group);
        __syncwarp();
      }
    }
  }

  for (int i = lane; i < a.experts; i += 32) {
    seen[i] = 0;
    members[i] = 0u;
  }
  __syncwarp();
  for (int c = 0; c < kBlockTokens / 32; ++c) {
    const int t = first + 32 * c + lane;
    const bool valid = t < a.tokens;
    const int* chosen = a.selectedExperts + (size_t)t * a.topK;
    if (valid) {
      for (int r = 0; r < a.topK; ++r) {
        const int e = chosen[r];
        if (e >= 0) atomicOr(&members[e], 1u << lane);
      }
    }
    __syncwarp();
    if (valid) {
      for (int r = 0; r < a.topK; ++r) {
        const int e = chosen[r];
        if (e < 0) continue;
        const int at = offsets[e] + a.blockStart[(size_t)e * a.blocks + block] + seen[e] +
                       __popc(members[e] & lanesBelow);
        a.tokenIndices[at] = t;
        a.weights[at] = a.selectedWeights[(size_t)t * a.topK + r];
        a.outputSlots[at] = t * a.topK + r;
      }
    }
    __syncwarp();
    if (valid) {
      for (int r = 0; r < a.topK; ++r) {
        const int e = chosen[r];
        if (e >= 0 && lane == 31 - __clz(members[e])) seen[e] += __popc(members[e]);
      }
    }
    __syncwarp();
    if (valid) {
      for (int r = 0; r < a.topK; ++r) {
        const int e = chosen[r];
        if (e >= 0) members[e] = 0u;
      }
    }
    __syncwarp();
  }
}

// ---------------------------------------------------------------------------
// Decode routing: steps 1-4 in one launch (T <= kSmallTokens, no capacity drops)
// ---------------------------------------------------------------------------
//
// Grid (ceil(E / kSmallWarps), splits), 256 threads. Warp w of CTA (b, s)
// computes the partial logits of expert e = b * kSmallWarps + w over the
// columns of split s (chunksPerSplit stages of kChunk, as the general
// path splits) for every token (lane l takes columns 8 l .. 8 l + 7 of
// every 256: one 16-byte load of x per token and two float4 of R per step,
// R read once; then a butterfly per token) into logits [s][T][E]. With
// about 256 columns per split every load of a warp is issued at once: one
// round trip to memory instead of hidden / 256 dependent ones. The CTA
// that arrives last (a counter at the workspace's start, atomicInc
// wrapping back to 0) selects every token as `select` does (a warp per
// token, the splits summed in order, read with ld.global.cg) and
// builds the plan: thread e counts its entries, a CTA scan gives the
// offsets, and thread e writes its entries in token order. Saves the
// memset and three launches of the general path; same plan (a stable
// counting sort), logits summed in a different order.

template <typename T>
__device__ __forceinline__ float dot8(uint4 v, float4 r0, float4 r1, float acc) {
  acc = fmaf(toFloat<T>(uint16_t(v.x & 0xffffu)), r0.x, acc);
  acc = fmaf(toFloat<T>(uint16_t(v.x >> 16)), r0.y, acc);
  acc = fmaf(toFloat<T>(uint16_t(v.y & 0xffffu)), r0.z, acc);
  acc = fmaf(toFloat<T>(uint16_t(v.y >> 16)), r0.w, acc);
  acc = fmaf(toFloat<T>(uint16_t(v.z & 0xffffu)), r1.x, acc);
  acc = fmaf(toFloat<T>(uint16_t(v.z >> 16)), r1.y, acc);
  acc = fmaf(toFloat<T>(uint16_t(v.w & 0xffffu)), r1.z, acc);
  acc = fmaf(toFloat<T>(uint16_t(v.w >> 16)), r1.w, acc);
  return acc;
}

template <typename T>
__device__ __forceinline__ void routeSmall(const RoutingArgs& a, unsigned* arrivals) {
  __shared__ int warpTotals[32];
  __shared__ int chosen[kSmallTokens * kMaxTopK];
  __shared__ float chosenWeights[kSmallTokens * kMaxTopK];
  __shared__ bool isLast;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int e = blockIdx.x * kSmallWarps + warp;
  // The next launch (the grouped gate/up, a programmatic dependent launch)
  // may become resident now: it waits for this grid to complete before it
  // reads the plan, so only its launch overlaps this kernel.
  allowDependentLaunch();
  if (e < a.experts) {  // uniform over the warp
    float acc[kSmallTokens];
#pragma unroll
    for (int t = 0; t < kSmallTokens; ++t) acc[t] = 0.f;
    const float* row = a.router + (size_t)e * a.hidden;
    const int first = blockIdx.y * a.chunksPerSplit * kChunk;
    const int end = min(a.hidden, first + a.chunksPerSplit * kChunk);
    for (int c = first + lane * 8; c < end; c += 256) {  // split ends are multiples of 32
      const float4 r0 = *reinterpret_cast<const float4*>(row + c);
      const float4 r1 = *reinterpret_cast<const float4*>(row + c + 4);
#pragma unroll
      for (int t = 0; t < kSmallTokens; ++t) {
        if (t < a.tokens) {
          const uint4 v = *reinterpret_cast<const uint4*>(a.x + (size_t)t * a.hidden + c);
          acc[t] = dot8<T>(v, r0, r1, acc[t]);
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kSmallTokens; ++t) {
      if (t < a.tokens) {
        const float sum = warpSum(acc[t]);
        if (lane == 0) a.logits[((size_t)blockIdx.y * a.tokens + t) * a.experts + e] = sum;
      }
    }
  }
  __threadfence();  // this CTA's logits before its arrival
  __syncthreads();
  const unsigned ctas = gridDim.x * gridDim.y;
  if (threadIdx.x == 0) isLast = atomicInc(arrivals, ctas - 1) == ctas - 1;
  __syncthreads();
  if (!isLast) return;
  __threadfence();

  for (int t = warp; t < a.tokens; t += kSmallWarps) {
    int myExpert;
    float myWeight;
    selectToken<true>(a, t, lane, myExpert, myWeight);
    if (lane < a.topK) {
      a.selectedExperts[(size_t)t * a.topK + lane] = myExpert;
      a.selectedWeights[(size_t)t * a.topK + lane] = myWeight;
      chosen[t * a.topK + lane] = myExpert;
      chosenWeights[t * a.topK + lane] = myWeight;
    }
  }
  __syncthreads();
  const int expert = threadIdx.x;  // blockDim >= kMaxExperts >= E
  const int choices = a.tokens * a.topK;
  int count = 0;
  if (expert < a.experts)
    for (int i = 0; i < choices; ++i) count += chosen[i] == expert;
  int total;
  int at = blockExclusiveScan(count, warpTotals, total);
  if (expert < a.experts) {
    a.expertOffsets[expert] = at;
    for (int i = 0; i < choices; ++i) {  // token order, then rank: ascending tokens
      if (chosen[i] != expert) continue;
      a.tokenIndices[at] = i / a.topK;
      a.weights[at] = chosenWeights[i];
      a.outputSlots[at] = i;
      ++at;
    }
  }
  if (threadIdx.x == 0) a.expertOffsets[a.experts] = total;
}

// The shared expert's sigmoid gate (Qwen2-MoE): scale[t] = sigmoid(x[t] · g),
// one warp per token, f32 accumulation in a fixed order (lane-strided
// partial sums, then a butterfly), so a replay repeats bitwise.
constexpr int kGateWarps = 8;

template <typename T>
__device__ __forceinline__ void sharedGate(const uint16_t* x, const float* gate, float* scale, int tokens,
                                           int hidden) {
  const int lane = threadIdx.x % 32;
  const int t = blockIdx.x * kGateWarps + threadIdx.x / 32;
  if (t >= tokens) return;
  const uint16_t* row = x + (size_t)t * hidden;
  float sum = 0.f;
  for (int c = lane; c < hidden; c += 32) sum = fmaf(toFloat<T>(row[c]), gate[c], sum);
#pragma unroll
  for (int d = 16; d > 0; d /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, d);
  if (lane == 0) scale[t] = 1.f / (1.f + expf(-sum));
}

}  // namespace routing
}  // namespace samoyeds

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(samoyeds::routing::kLogitThreads)
    samoyeds_router_logits_bf16(const samoyeds::routing::RoutingArgs args) {
  samoyeds::routing::routerLogits<samoyeds::bf16>(args);
}

extern "C" __global__ void __launch_bounds__(samoyeds::routing::kLogitThreads)
    samoyeds_router_logits_fp16(const samoyeds::routing::RoutingArgs args) {
  samoyeds::routing::routerLogits<samoyeds::fp16>(args);
}

extern "C" __global__ void __launch_bounds__(samoyeds::routing::kSelectWarps * 32)
    samoyeds_router_select(const samoyeds::routing::RoutingArgs args) {
  samoyeds::routing::routerSelect(args);
}

extern "C" __global__ void __launch_bounds__(samoyeds::routing::kScanThreads)
    samoyeds_route_scan(const samoyeds::routing::RoutingArgs args) {
  samoyeds::routing::routeScan(args);
}

extern "C" __global__ void __launch_bounds__(samoyeds::routing::kScanThreads)
    samoyeds_route_scatter(const samoyeds::routing::RoutingArgs args) {
  samoyeds::routing::routeScatter(args);
}

extern "C" __global__ void __launch_bounds__(samoyeds::routing::kSmallWarps * 32)
    samoyeds_route_small_bf16(const samoyeds::routing::RoutingArgs args, unsigned* arrivals) {
  samoyeds::routing::routeSmall<samoyeds::bf16>(args, arrivals);
}

extern "C" __global__ void __launch_bounds__(samoyeds::routing::kSmallWarps * 32)
    samoyeds_route_small_fp16(const samoyeds::routing::RoutingArgs args, unsigned* arrivals) {
  samoyeds::routing::routeSmall<samoyeds::fp16>(args, arrivals);
}

extern "C" __global__ void __launch_bounds__(samoyeds::routing::kGateWarps * 32)
    samoyeds_shared_gate_bf16(const uint16_t* x, const float* gate, float* scale, int tokens, int hidden) {
  samoyeds::routing::sharedGate<samoyeds::bf16>(x, gate, scale, tokens, hidden);
}

extern "C" __global__ void __launch_bounds__(samoyeds::routing::kGateWarps * 32)
    samoyeds_shared_gate_fp16(const uint16_t* x, const float* gate, float* scale, int tokens, int hidden) {
  samoyeds::routing::sharedGate<samoyeds::fp16>(x, gate, scale, tokens, hidden);
}
