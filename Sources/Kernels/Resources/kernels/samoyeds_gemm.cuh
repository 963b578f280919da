// The parts of the dual-side sparse GEMM that every kernel family shares
// (dual_sparse_gemm.cu: mma.sp, sm_80+; dual_sparse_gemm_sm90.cu: wgmma.sp,
// sm_90a): the CTA's warp layout, the kernel arguments, the row-selection
// fold, the epilogue tile and the split-k epilogue. Both families give each
// warp 16 condensed rows per row tile with the m16n8 accumulator layout
// (lane g = lane / 4 holds rows g and g + 8, tokens 8t + 2(lane % 4), +1),
// so the fold and the epilogue are the same code.
#pragma once

#include "samoyeds_common.cuh"

namespace samoyeds {

// ---------------------------------------------------------------------------
// Tile configuration
// ---------------------------------------------------------------------------

constexpr int kWarps = 8;              // warps per CTA
constexpr int kThreads = kWarps * 32;  // threads per CTA
constexpr int kTileRows = 16;          // condensed rows of one mma (M = 16)
constexpr int kChunk = 32;             // logical k per mma.sp (k32)

// Epilogue tile, reusing the pipeline's shared memory: f32 [BN][stride],
// outRows = (kWarps / WN) * RT * 16 * M / N output rows of the CTA, whose
// warps are laid out (kWarps / WN) over rows by WN over tokens.
template <int RT, int BN, int N, int M, int WN = 1>
struct EpilogueLayout {
  static constexpr int outRows = (kWarps / WN) * RT * kTileRows * M / N;
  // Row stride padded by 4 floats: the four token columns a quad writes
  // land 8 banks apart instead of in one bank.
  static constexpr int stride = outRows + 4;
  static constexpr int bytes = BN * stride * 4;
};

// ---------------------------------------------------------------------------
// Kernel arguments
// ---------------------------------------------------------------------------

struct WeightArgs {
  const uint4* a;             // [rowTiles][chunks][32] fragments
  const uint32_t* e;          // [rowTiles][chunkPairs][32] metadata words
  const uint8_t* selection;   // [mc][vectors] canonical row selections
  int mc;                     // condensed rows
  int m;                      // output rows
};

struct GemmArgs {
  WeightArgs w0;              // the weight (gate in the SiLU mode)
  WeightArgs w1;              // up (SiLU mode only)
  const uint16_t* x;          // hidden states [T, k] (bf16 or fp16 bits)
  const int* rows;            // [count] token rows of X to read
  const float* routeWeights;  // [count] routing weights (scale-add modes)
  const int* slots;           // [count] output slots (deterministic mode)
  int count;                  // routed token rows
  int k;                      // input features
  int vectorChunks;           // V / 32
  int chunksPerSplit;         // chunks each split handles
  int splits;                 // split-k factor (grid.z)
  void* out;                  // see Epilogue
  float* partial;             // [splits][2][count][m] f32 when splits > 1
  unsigned* counters;         // [output tiles] splits arrived, 0 between launches; null: the
                              // `_split` kernel sums the partials after this launch
  int clusterSum;             // sm_90, splits > 1: the launch's clusters are (1, 1, splits), and
                              // the splits sum through distributed shared memory (no partials)
};

enum Epilogue : int {
  kStore = 0,         // out: bf16/fp16 [count][m]        Y[i, o]
  kSiluMul = 1,       // out: bf16/fp16 [count][m]        SiLU(W0 x) * (W1 x)
  kScaleAdd = 2,      // out: f32 [T][m], atomicAdd(out[rows[i], o], w_i * Y[i, o])
  kScaleSlots = 3,    // out: f32 [T*topK][m], out[slots[i], o] = w_i * Y[i, o]
};

// Which weight and 16-row tiles warp `warp` of a CTA works on. The CTA's
// warps are laid out R = kWarps / WN over rows by WN over tokens: warp w
// has row warp r = w % R (and token warp w / R). In the SiLU mode row warps
// 0 .. R/2 - 1 run W0 (gate) and the others W1 (up) on the same rows;
// otherwise all run W0. In row block `rowBlock` the warp owns tiles
// first .. first + RT - 1, first = (rowBlock * warpsPerWeight + r %
// warpsPerWeight) * RT. Every kernel family maps warps to rows this way (so
// that storeTile's output rows agree).
template <int EPILOGUE, int RT, int WN = 1>
struct WarpTiles {
  static constexpr int rowWarps = kWarps / WN;
  static constexpr int warpsPerWeight = EPILOGUE == kSiluMul ? rowWarps / 2 : rowWarps;
  const WeightArgs& weight;
  int first;  // the warp's first 16-row tile
  int count;  // the weight's 16-row tiles

  __device__ __forceinline__ WarpTiles(const GemmArgs& args, int warp, int rowBlock)
      : weight((EPILOGUE == kSiluMul && warp % rowWarps >= rowWarps / 2) ? args.w1 : args.w0),
        first((rowBlock * warpsPerWeight + warp % rowWarps % warpsPerWeight) * RT),
        count((weight.mc + kTileRows - 1) / kTileRows) {}

  // Whether the warp's j-th tile holds rows of the weight (a warp past the
  // last one runs on zero-filled fragments, and its rows are never stored).
  __device__ __forceinline__ bool has(int j = 0) const { return first + j < count; }
};

// The row selection of a warp's rows (g and g + 8 of each of its RT tiles),
// folded into the accumulation without a second accumulator tile.
//
// The mma results (mma.sp or wgmma.sp) accumulate into one running total `acc` that is never
// reset. A condensed row contributes, in vector v, to bank s_v (its
// selection minus its offset in the group, 0 .. M - N). With T_v the total
// after vector v, bank b must receive sum_v [s_v = b] (T_v - T_{v-1}), which
// telescopes to
//   sum_v ([s_v = b] - [s_{v+1} = b]) T_v        (s after the split = none),
// one FMA per accumulator with a coefficient in {-1, 0, 1} at each vector's
// end. Only banks 0 .. M-N-1 are kept; the last is the total minus them
// (`finish`). Coefficients are per lane and register indices stay
// compile-time constants (an `if (b == s)` lets the compiler index the
// banks by `s`, which moves them to local memory). Selections are read two
// vectors ahead of their use; the vector position is a counter, so the
// per-chunk cost is one decrement and a branch.
template <int N, int M, int RT, int NT>
struct RowSelection {
  static constexpr int kKept = M - N;  // banks held explicitly
  int current[RT][2];
  int upcoming[RT][2];
  const uint8_t* base;  // selections of row g of the first tile; null for an inactive warp
  int firstRow;
  int rowsLeft;         // condensed rows from firstRow to the end
  int vectors;
  int vectorChunks;
  int vector;           // vector of the chunk being accumulated
  int untilFold;        // chunks left in it

  // Bank of row (j, h) in vector v; 0 past the end (the fold then adds zeros).
  __device__ __forceinline__ int bankAt(int j, int h, int v) const {
    const int offset = j * kTileRows + 8 * h;
    return (base != nullptr && offset < rowsLeft && v < vectors)
               ? int(base[offset * vectors + v]) - (firstRow + offset) % N
               : 0;
  }

  __device__ __forceinline__ void start(const WeightArgs& w, int rowTile, int lane, int firstChunk, int chunksPerVector,
                                        int vectorCount, bool active) {
    firstRow = rowTile * kTileRows + lane / 4;
    rowsLeft = w.mc - firstRow;
    vectors = vectorCount;
    base = active ? w.selection + (size_t)firstRow * vectors : nullptr;
    vectorChunks = chunksPerVector;
    vector = firstChunk / vectorChunks;
    untilFold = vectorChunks - firstChunk % vectorChunks;
#pragma unroll
    for (int j = 0; j < RT; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        current[j][h] = bankAt(j, h, vector);
        upcoming[j][h] = bankAt(j, h, vector + 1);
      }
  }

  // Whether `afterChunk(…, last)` folds (reads the running total).
  __device__ __forceinline__ bool foldsAfterChunk(bool last) const { return untilFold == 1 || last; }

  // After a chunk for which `foldsAfterChunk` is false (no fold, no read of the total).
  __device__ __forceinline__ void skipChunk() { --untilFold; }

  // After each chunk: fold at the end of a vector or of the split (`last`).
  __device__ __forceinline__ void afterChunk(float (&bank)[kKept][RT][NT][4], const float (&acc)[RT][NT][4],
                                             bool last) {
    if (--untilFold == 0 || last) {
      fold(bank, acc, last);
      ++vector;
      untilFold = vectorChunks;
    }
  }

  // End of `vector` (or of the split when `last`).
  __device__ __forceinline__ void fold(float (&bank)[kKept][RT][NT][4], const float (&acc)[RT][NT][4], bool last) {
    int next[RT][2];
#pragma unroll
    for (int j = 0; j < RT; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) next[j][h] = last ? -1 : upcoming[j][h];
#pragma unroll
    for (int b = 0; b < kKept; ++b) {
#pragma unroll
      for (int j = 0; j < RT; ++j) {
        const float low = float(current[j][0] == b) - float(next[j][0] == b);
        const float high = float(current[j][1] == b) - float(next[j][1] == b);
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          bank[b][j][t][0] = fmaf(low, acc[j][t][0], bank[b][j][t][0]);
          bank[b][j][t][1] = fmaf(low, acc[j][t][1], bank[b][j][t][1]);
          bank[b][j][t][2] = fmaf(high, acc[j][t][2], bank[b][j][t][2]);
          bank[b][j][t][3] = fmaf(high, acc[j][t][3], bank[b][j][t][3]);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < RT; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        current[j][h] = next[j][h];
        upcoming[j][h] = bankAt(j, h, vector + 2);
      }
  }

  // Zeroes the running total and the kept banks (before a split's first chunk).
  static __device__ __forceinline__ void zero(float (&bank)[kKept][RT][NT][4], float (&acc)[RT][NT][4]) {
#pragma unroll
    for (int j = 0; j < RT; ++j)
#pragma unroll
      for (int t = 0; t < NT; ++t)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          acc[j][t][q] = 0.f;
#pragma unroll
          for (int b = 0; b < kKept; ++b) bank[b][j][t][q] = 0.f;
        }
  }

  // acc becomes the last bank: the total minus the kept banks.
  static __device__ __forceinline__ void finish(const float (&bank)[kKept][RT][NT][4], float (&acc)[RT][NT][4]) {
#pragma unroll
    for (int b = 0; b < kKept; ++b)
#pragma unroll
      for (int j = 0; j < RT; ++j)
#pragma unroll
        for (int t = 0; t < NT; ++t)
#pragma unroll
          for (int q = 0; q < 4; ++q) acc[j][t][q] -= bank[b][j][t][q];
  }
};

// ---- epilogue: banks -> shared f32 tile [BN][stride] -> global ----
// Shared by every tiling: the warps' banks (RT row tiles x BN tokens each)
// go to a padded f32 tile in shared memory (reusing the pipeline's), then
// consecutive threads write consecutive row pairs of one token. `rowBlock`
// is the CTA's block of output rows, `split` its k-split (partials).
// Barrier of the kThreads threads that store a tile: __syncthreads() when
// they are the whole CTA (BARRIER = 0), else named barrier BARRIER (the
// Hopper kernel's two consumer warpgroups, without its producer).
template <int BARRIER>
__device__ __forceinline__ void tileSync() {
  if (BARRIER == 0) {
    __syncthreads();
  } else {
    asm volatile("bar.sync %0, %1;\n" ::"n"(BARRIER), "n"(kThreads) : "memory");
  }
}

// Most splits whose partials a split sum loads all at once (the cluster
// sum's limit too: a cluster of 16 needs the non-portable cluster size the
// host allows per kernel).
constexpr int kSplitsInFlight = 16;

// The sum over `splits` (at most kSplitsInFlight) of one row pair's
// partials, in split order: every load first (`load(s, up)` gives split s's
// pair, of W1 x when `up`), then the adds, so the loads are in flight
// together.
template <bool SILU, typename Load>
__device__ __forceinline__ void sumSplitPair(int splits, Load load, float2& v, float2& up) {
  float2 part[kSplitsInFlight], partUp[kSplitsInFlight];
#pragma unroll
  for (int s = 0; s < kSplitsInFlight; ++s) {
    if (s < splits) {
      part[s] = load(s, false);
      if (SILU) partUp[s] = load(s, true);
    }
  }
  v = make_float2(0.f, 0.f);
  up = v;
#pragma unroll
  for (int s = 0; s < kSplitsInFlight; ++s) {
    if (s < splits) {
      v.x += part[s].x;
      v.y += part[s].y;
      if (SILU) {
        up.x += partUp[s].x;
        up.y += partUp[s].y;
      }
    }
  }
}

#if __CUDA_ARCH__ >= 900

__device__ __forceinline__ float2 loadClusterFloat2(uint32_t clusterAddress) {
  float2 v;
  asm volatile("ld.shared::cluster.v2.f32 {%0, %1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "r"(clusterAddress) : "memory");
  return v;
}

// Split-k through distributed shared memory (storeTile, `args.clusterSum`):
// the launch's clusters span its k splits (cluster shape (1, 1, splits), so
// the cluster rank is the split), and every split has just written its f32
// tile of the same output tile at the same shared offset. After a cluster
// barrier each CTA sums its share of the tile's row pairs (every splits-th
// group of kThreads pairs, from its split on) over all splits in split order
// (deterministic) and applies the epilogue; no partials reach global memory
// and no counter or second launch is involved. The second barrier keeps
// every CTA's tile alive until the cluster's reads are done. Every thread of
// every CTA of the cluster must get here.
template <int EPILOGUE, int BN, int PAIRS_PER_TOKEN, int STRIDE, int ROWS_PER_WEIGHT_TILE, typename Finish>
__device__ __forceinline__ void clusterSumTile(const GemmArgs& args, const float* tile, int outBase, int tokenBase,
                                               int split, int thread, Finish& finish) {
  const int m = args.w0.m;
  clusterArrive();
  clusterWait();
  const uint32_t tileAddress = (uint32_t)__cvta_generic_to_shared(tile);
  for (int idx = thread + split * kThreads; idx < BN * PAIRS_PER_TOKEN; idx += kThreads * args.splits) {
    const int n = idx / PAIRS_PER_TOKEN;
    const int o = 2 * (idx % PAIRS_PER_TOKEN);
    const int token = tokenBase + n;
    const int row = outBase + o;
    if (token >= args.count || row >= m) continue;
    const uint32_t at = tileAddress + (uint32_t)(n * STRIDE + o) * 4;
    float2 v, up;
    sumSplitPair<EPILOGUE == kSiluMul>(
        args.splits,
        [&](int s, bool ofUp) { return loadClusterFloat2(mapaShared(at + (ofUp ? ROWS_PER_WEIGHT_TILE * 4 : 0), s)); },
        v, up);
    finish(token, row, v, up);
  }
  clusterArrive();
  clusterWait();
}
#endif

// `thread` is the caller's index among the kThreads storing threads (warp
// thread / 32 owns the warp's row tiles). With WN token warps (WarpTiles)
// each warp holds BN / WN of the CTA's BN tokens.
template <typename T, int N, int M, int RT, int BN, int EPILOGUE, int BARRIER = 0, int WN = 1>
__device__ __forceinline__ void storeTile(const GemmArgs& args, const float (&bank)[M - N][RT][BN / 8 / WN][4],
                                          const float (&lastBank)[RT][BN / 8 / WN][4], unsigned char* smem, bool warpActive, int rowBlock, int tokenBase,
                                          int split, int thread) {
  constexpr int BANKS = M - N + 1;
  constexpr int NT = BN / 8 / WN;
  constexpr int kRowWarps = kWarps / WN;
  constexpr int kRowsPerWarp = RT * kTileRows;
  const bool silu = EPILOGUE == kSiluMul;
  const int warp = thread / 32;
  const int lane = thread % 32;
  const int g = lane / 4;
  using Tile = EpilogueLayout<RT, BN, N, M, WN>;
  constexpr int stride = Tile::stride;
  float* tile = reinterpret_cast<float*>(smem);
  // Warp-local output rows: condensed row r (0..16*RT-1 in the warp) of
  // group r / N, bank b -> output row (r / N) * M + r % N + b of the warp's
  // 16 * RT * M / N rows. With N = 1 every (token, row) of the tile gets
  // exactly one value (zero from a bank never selected), so plain stores;
  // with N > 1 two (row, bank) pairs can name one output row, so the tile is
  // zeroed and the banks added with shared atomics.
  if (N > 1) {
    for (int i = thread; i < BN * stride; i += kThreads) tile[i] = 0.f;
    tileSync<BARRIER>();
  }
  if (warpActive) {
    const int warpOut = warp % kRowWarps * kRowsPerWarp * M / N;
    const int warpTokens = warp / kRowWarps * NT * 8;
#pragma unroll
    for (int j = 0; j < RT; ++j) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = j * kTileRows + g + 8 * half;
#pragma unroll
        for (int b = 0; b < BANKS; ++b) {
          const int o = warpOut + (r / N) * M + r % N + b;
#pragma unroll
          for (int t = 0; t < NT; ++t) {
            const int n = warpTokens + t * 8 + (lane % 4) * 2;
            const float v0 = b < BANKS - 1 ? bank[b < BANKS - 1 ? b : 0][j][t][2 * half] : lastBank[j][t][2 * half];
            const float v1 =
                b < BANKS - 1 ? bank[b < BANKS - 1 ? b : 0][j][t][2 * half + 1] : lastBank[j][t][2 * half + 1];
            if (N == 1) {
              tile[n * stride + o] = v0;
              tile[(n + 1) * stride + o] = v1;
            } else {
              atomicAdd(&tile[n * stride + o], v0);
              atomicAdd(&tile[(n + 1) * stride + o], v1);
            }
          }
        }
      }
    }
  }
  tileSync<BARRIER>();

  // Tile -> global, two adjacent output rows per thread (m is a multiple of
  // M >= 2, so pairs never straddle the end), consecutive threads on
  // consecutive rows of one token.
  constexpr int rowsPerWeightTile = (silu ? kRowWarps / 2 : kRowWarps) * kRowsPerWarp * M / N;
  constexpr int pairsPerToken = rowsPerWeightTile / 2;
  const int outBase = rowBlock * rowsPerWeightTile;
  const int m = args.w0.m;
  // The epilogue of output rows (row, row + 1) of routed token `token`:
  // v = W0 x, up = W1 x (SiLU mode).
  auto finish = [&](int token, int row, float2 v, float2 up) {
    if (EPILOGUE == kStore) {
      storePair<T>(reinterpret_cast<T*>(args.out) + (size_t)token * m + row, v.x, v.y);
    } else if (EPILOGUE == kSiluMul) {
      storePair<T>(reinterpret_cast<T*>(args.out) + (size_t)token * m + row, siluf(v.x) * up.x, siluf(v.y) * up.y);
    } else if (EPILOGUE == kScaleAdd) {
      const float w = args.routeWeights[token];
      float* out = reinterpret_cast<float*>(args.out) + (size_t)args.rows[token] * m + row;
      atomicAdd(out, w * v.x);
      atomicAdd(out + 1, w * v.y);
    } else {
      const float w = args.routeWeights[token];
      *reinterpret_cast<float2*>(reinterpret_cast<float*>(args.out) + (size_t)args.slots[token] * m + row) =
          make_float2(w * v.x, w * v.y);
    }
  };
#if __CUDA_ARCH__ >= 900
  if (args.splits > 1 && args.clusterSum) {
    clusterSumTile<EPILOGUE, BN, pairsPerToken, stride, rowsPerWeightTile>(args, tile, outBase, tokenBase, split,
                                                                            thread, finish);
    return;
  }
#endif
  for (int idx = thread; idx < BN * pairsPerToken; idx += kThreads) {
    const int n = idx / pairsPerToken;
    const int o = 2 * (idx % pairsPerToken);
    const int token = tokenBase + n;
    const int row = outBase + o;
    if (token >= args.count || row >= m) continue;
    const float2 v = *reinterpret_cast<const float2*>(&tile[n * stride + o]);
    const float2 up = silu ? *reinterpret_cast<const float2*>(&tile[n * stride + o + rowsPerWeightTile]) : v;
    if (args.splits > 1) {
      // Split-k: plain f32 partials; the last split of the tile sums them.
      float* p = args.partial + ((size_t)split * 2 * args.count + token) * m + row;
      *reinterpret_cast<float2*>(p) = v;
      if (silu) *reinterpret_cast<float2*>(p + (size_t)args.count * m) = up;
    } else {
      finish(token, row, v, up);
    }
  }
  if (args.splits == 1 || args.counters == nullptr) return;

  // Split-k, in this launch: the CTA that brings the tile's last split sums
  // every split's partials in split order (deterministic, whatever order
  // the CTAs ran in) and applies the epilogue. The tile's counter counts
  // arrivals and wraps back to 0 on the last (atomicInc), ready for the
  // next launch. For few tokens this saves the `_split` launch; the host
  // picks it (PortableKernel.sumsSplitsInKernel).
  __threadfence();  // this thread's partials, before the CTA's arrival
  tileSync<BARRIER>();
  unsigned* flag = reinterpret_cast<unsigned*>(tile);  // the tile's values are all stored
  if (thread == 0) {
    const unsigned arrived = atomicInc(args.counters + blockIdx.x + blockIdx.y * gridDim.x, unsigned(args.splits - 1));
    *flag = arrived == unsigned(args.splits - 1);
  }
  tileSync<BARRIER>();
  if (*flag == 0) return;
  __threadfence();  // the other splits' partials, after their arrivals
  if (args.splits <= kSplitsInFlight && min(BN, args.count - tokenBase) * pairsPerToken <= kThreads) {
    // At most one pair per thread (a tile of few tokens): every split's
    // partial of it in flight at once, one memory latency instead of
    // splits / 4 of them (H200, 4096x14336 at T = 1, 16 splits: 18.4 ->
    // 16.5 us). With more pairs per thread, the loop below keeps four
    // pairs' loads in flight: this path alone took 12.2-12.6 us at T = 16
    // on the small shapes (4-5 splits), the loop below 9.6-9.9.
    for (int idx = thread; idx < BN * pairsPerToken; idx += kThreads) {
      const int token = tokenBase + idx / pairsPerToken;
      const int row = outBase + 2 * (idx % pairsPerToken);
      if (token >= args.count || row >= m) continue;
      const float* p = args.partial + (size_t)token * m + row;
      const size_t splitStride = (size_t)2 * args.count * m;
      float2 v, up;
      sumSplitPair<silu>(
          args.splits,
          [&](int s, bool ofUp) {
            return __ldcg(reinterpret_cast<const float2*>(p + s * splitStride + (ofUp ? (size_t)args.count * m : 0)));
          },
          v, up);
      finish(token, row, v, up);
    }
    return;
  }
  // More splits: U pairs per thread at a time, so that U loads (2U in the
  // SiLU mode) of each split are in flight together.
  constexpr int U = 4;
  for (int first = thread; first < BN * pairsPerToken; first += kThreads * U) {
    float2 v[U], up[U];
    const float* p[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int idx = first + u * kThreads;
      const int token = tokenBase + idx / pairsPerToken;
      const int row = outBase + 2 * (idx % pairsPerToken);
      p[u] = idx < BN * pairsPerToken && token < args.count && row < m
                 ? args.partial + (size_t)token * m + row
                 : nullptr;
      v[u] = make_float2(0.f, 0.f);
      up[u] = v[u];
    }
#pragma unroll 4
    for (int s = 0; s < args.splits; ++s) {
      const size_t offset = (size_t)s * 2 * args.count * m;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (p[u] == nullptr) continue;
        const float2 part = __ldcg(reinterpret_cast<const float2*>(p[u] + offset));
        v[u].x += part.x;
        v[u].y += part.y;
        if (silu) {
          const float2 partUp = __ldcg(reinterpret_cast<const float2*>(p[u] + offset + (size_t)args.count * m));
          up[u].x += partUp.x;
          up[u].y += partUp.y;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (p[u] == nullptr) continue;
      const int idx = first + u * kThreads;
      finish(tokenBase + idx / pairsPerToken, outBase + 2 * (idx % pairsPerToken), v[u], up[u]);
    }
  }
}

// The epilogue straight from the accumulators, for the 1:2 family without
// the SiLU pairing (which needs two warps' tiles) and without the in-launch
// split sum: no shared-memory tile, no barrier. After RowSelection::finish
// `bank` holds output row 2r and `acc` row 2r + 1 of condensed row r, so a
// lane stores, for each of its tokens, one pair of adjacent output rows: 8
// lanes (g) cover 16 adjacent rows of one token, 32 (bf16) or 64 (f32) bytes.
// Rows past the weight (a row tile past its end) and tokens past `count`
// are skipped. `warp` lays out rows and tokens as WarpTiles<…, RT, WN>.
template <typename T, int RT, int BN, int WN, int EPILOGUE>
__device__ __forceinline__ void storeTileDirect(const GemmArgs& args, const float (&bank)[1][RT][BN / 8 / WN][4],
                                                const float (&acc)[RT][BN / 8 / WN][4], int rowBlock, int tokenBase,
                                                int split, int warp, int lane) {
  static_assert(EPILOGUE != kSiluMul, "the SiLU mode pairs two warps' tiles (storeTile)");
  constexpr int NT = BN / 8 / WN;
  constexpr int kRowWarps = kWarps / WN;
  constexpr int kWarpRows = RT * kTileRows * 2;  // output rows of a warp
  const int m = args.w0.m;
  const int g = lane / 4;
  const int warpRow = (rowBlock * kRowWarps + warp % kRowWarps) * kWarpRows + 2 * g;
  const int warpToken = tokenBase + (warp / kRowWarps) * NT * 8 + (lane % 4) * 2;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      const int token = warpToken + t * 8 + p;
      if (token >= args.count) continue;
      size_t base;  // element offset of row 0 of this token's output row
      float scale = 1.f;
      if (args.splits > 1) {
        base = ((size_t)split * 2 * args.count + token) * m;
      } else if (EPILOGUE == kStore) {
        base = (size_t)token * m;
      } else {
        scale = args.routeWeights[token];
        base = (size_t)(EPILOGUE == kScaleAdd ? args.rows[token] : args.slots[token]) * m;
      }
#pragma unroll
      for (int j = 0; j < RT; ++j) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = warpRow + 2 * (j * kTileRows + 8 * h);
          if (row >= m) continue;
          const float v0 = bank[0][j][t][2 * h + p];
          const float v1 = acc[j][t][2 * h + p];
          if (args.splits > 1) {
            *reinterpret_cast<float2*>(args.partial + base + row) = make_float2(v0, v1);
          } else if (EPILOGUE == kStore) {
            storePair<T>(reinterpret_cast<T*>(args.out) + base + row, v0, v1);
          } else if (EPILOGUE == kScaleAdd) {
            float* out = reinterpret_cast<float*>(args.out) + base + row;
            atomicAdd(out, scale * v0);
            atomicAdd(out + 1, scale * v1);
          } else {
            *reinterpret_cast<float2*>(reinterpret_cast<float*>(args.out) + base + row) =
                make_float2(scale * v0, scale * v1);
          }
        }
      }
    }
  }
}

// f32 vectors of W lanes (float2, float4) for the split sums.
template <int W> struct VectorOf;
template <> struct VectorOf<2> {
  typedef float2 type;
  static __device__ __forceinline__ void add(float (&v)[2], float2 p) {
    v[0] += p.x;
    v[1] += p.y;
  }
};
template <> struct VectorOf<4> {
  typedef float4 type;
  static __device__ __forceinline__ void add(float (&v)[4], float4 p) {
    v[0] += p.x;
    v[1] += p.y;
    v[2] += p.z;
    v[3] += p.w;
  }
};

// Split-k epilogue: sums the splits' partials in order (deterministic) and
// applies the epilogue. Each thread takes W adjacent output rows of one
// token (W = 4 when m is a multiple of 4, else 2: m is a multiple of M >= 2)
// and issues the loads of 4 splits at once, so one launch of enough CTAs
// covers the output in about one memory latency (the host sizes the grid
// to one group per thread).
template <typename T, int EPILOGUE, int W>
__device__ __forceinline__ void splitSumGroup(const GemmArgs& args, size_t group) {
  typedef typename VectorOf<W>::type Vec;
  const int m = args.w0.m;
  const size_t total = (size_t)args.count * m;
  const size_t idx = group * W;
  const int token = int(idx / m);
  const int row = int(idx % m);
  const float* p = args.partial + (size_t)token * m + row;
  const size_t stride = 2 * total;  // one split's partials
  float v[W], up[W];
#pragma unroll
  for (int i = 0; i < W; ++i) v[i] = up[i] = 0.f;
  int s = 0;
  for (; s + 4 <= args.splits; s += 4) {
    Vec part[4], partUp[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      part[u] = __ldcs(reinterpret_cast<const Vec*>(p + (s + u) * stride));
      if (EPILOGUE == kSiluMul) partUp[u] = __ldcs(reinterpret_cast<const Vec*>(p + (s + u) * stride + total));
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      VectorOf<W>::add(v, part[u]);
      if (EPILOGUE == kSiluMul) VectorOf<W>::add(up, partUp[u]);
    }
  }
  for (; s < args.splits; ++s) {
    VectorOf<W>::add(v, __ldcs(reinterpret_cast<const Vec*>(p + s * stride)));
    if (EPILOGUE == kSiluMul) VectorOf<W>::add(up, __ldcs(reinterpret_cast<const Vec*>(p + s * stride + total)));
  }
  if (EPILOGUE == kStore || EPILOGUE == kSiluMul) {
    T* out = reinterpret_cast<T*>(args.out) + idx;
#pragma unroll
    for (int i = 0; i < W; i += 2) {
      if (EPILOGUE == kStore) storePair<T>(out + i, v[i], v[i + 1]);
      else storePair<T>(out + i, siluf(v[i]) * up[i], siluf(v[i + 1]) * up[i + 1]);
    }
  } else {
    const float w = args.routeWeights[token];
    const size_t outRow = (size_t)(EPILOGUE == kScaleAdd ? args.rows[token] : args.slots[token]) * m + row;
    float* out = reinterpret_cast<float*>(args.out) + outRow;
#pragma unroll
    for (int i = 0; i < W; ++i) {
      if (EPILOGUE == kScaleAdd) atomicAdd(out + i, w * v[i]);
      else out[i] = w * v[i];
    }
  }
}

template <typename T, int EPILOGUE>
__device__ __forceinline__ void splitEpilogue(const GemmArgs& args) {
  const int m = args.w0.m;
  const size_t total = (size_t)args.count * m;
  const bool quads = m % 4 == 0;
  const size_t groups = quads ? total / 4 : total / 2;
  for (size_t g = blockIdx.x * (size_t)blockDim.x + threadIdx.x; g < groups; g += (size_t)gridDim.x * blockDim.x) {
    if (quads) {
      splitSumGroup<T, EPILOGUE, 4>(args, g);
    } else {
      splitSumGroup<T, EPILOGUE, 2>(args, g);
    }
  }
}

// ---------------------------------------------------------------------------
// Grouped launches: every expert of a projection in one launch
// ---------------------------------------------------------------------------
//
// The experts' routed entries lie back to back in the routing plan (expert
// e owns entries offsets[e] .. offsets[e+1]); grid.x covers an upper bound
// of their token tiles (sum over experts of ceil(n_e / BN)), and each CTA
// finds its expert and tile from the offsets on the device, so the host
// needs no token counts (no synchronize; the launch can be captured in a
// CUDA graph). A CTA past the last tile returns at once. Every expert has
// the same shape, pattern and dtype; their packed weights are in tables.

constexpr int kMaxGroupExperts = 256;  // 8 per lane of the expert scan

struct GroupArgs {
  const int* offsets;    // [experts + 1] entry offsets (the routing plan's, on the device)
  const WeightArgs* w0;  // [experts] the weight (gate in the SiLU mode)
  const WeightArgs* w1;  // [experts] up (SiLU mode only)
  int experts;
};

// Run by one warp: maps this CTA (`tile`, its token tile over all experts:
// blockIdx.x of the streaming kernel, blockIdx.y of the Hopper one) to its
// expert. Lane 0 writes `expert`, `args` narrowed to that expert's
// entries (weights, index lists, outputs, split-k partials), and
// `tokenTile`, the tile within them, or -1 past the last tile. Lane l scans
// experts l, l + 32, … with shuffles. The results go to shared memory for
// the CTA (a per-thread copy of the arguments would live on the stack).
template <typename T, int BN, int EPILOGUE>
__device__ __forceinline__ void groupTile(const GemmArgs& args, const GroupArgs& group, int tile,
                                          GemmArgs& expert, int& tokenTile) {
  constexpr int kPerLane = kMaxGroupExperts / 32;
  const int lane = threadIdx.x % 32;
  int begin[kPerLane], end[kPerLane];
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {  // independent loads, one latency
    const int e = c * 32 + lane;
    begin[c] = e < group.experts ? group.offsets[e] : 0;
    end[c] = e < group.experts ? group.offsets[e + 1] : 0;
  }
  int before = 0;  // tiles of the experts of earlier chunks
  int found = -1, first = 0, count = 0, local = 0;
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {
    const int tiles = max(end[c] - begin[c], 0) / BN + (max(end[c] - begin[c], 0) % BN != 0);
    int inclusive = tiles;
#pragma unroll
    for (int d = 1; d < 32; d *= 2) {
      const int v = __shfl_up_sync(0xffffffffu, inclusive, d);
      if (lane >= d) inclusive += v;
    }
    const int exclusive = before + inclusive - tiles;
    const unsigned hit = __ballot_sync(0xffffffffu, tile >= exclusive && tile < exclusive + tiles);
    if (found < 0 && hit != 0) {
      const int source = __ffs(hit) - 1;
      found = c * 32 + source;
      local = tile - __shfl_sync(0xffffffffu, exclusive, source);
      first = __shfl_sync(0xffffffffu, begin[c], source);
      count = __shfl_sync(0xffffffffu, end[c] - begin[c], source);
    }
    before += __shfl_sync(0xffffffffu, inclusive, 31);
  }
  if (lane != 0) return;
  tokenTile = found < 0 ? -1 : local;
  if (found < 0) return;
  GemmArgs narrowed = args;
  narrowed.w0 = group.w0[found];
  if (EPILOGUE == kSiluMul) narrowed.w1 = group.w1[found];
  const int m = narrowed.w0.m;
  narrowed.rows = args.rows + first;
  narrowed.count = count;
  if (EPILOGUE == kScaleAdd || EPILOGUE == kScaleSlots) narrowed.routeWeights = args.routeWeights + first;
  if (EPILOGUE == kScaleSlots) narrowed.slots = args.slots + first;
  // Store and SiLU write the expert's rows of out [entries][m]; the scaled
  // modes address out through rows / slots, which already hold global rows.
  if (EPILOGUE == kStore || EPILOGUE == kSiluMul) narrowed.out = reinterpret_cast<T*>(args.out) + (size_t)first * m;
  if (args.splits > 1) narrowed.partial = args.partial + (size_t)first * 2 * args.splits * m;
  expert = narrowed;
}

}  // namespace samoyeds
