// Dual-side sparse GEMM, portable (sm_80 and newer): mma.sp m16n8k32.
//
//   Y[i, o] = sum_c W[o, c] * X[rows[i], c]     (f32 accumulation)
//
// W is an expert weight [m, k] in the Samoyeds format (N:M:V + 2:4), repacked
// on the host (Sources/Kernels/SparseGEMMPacking.swift) into mma fragment
// order; X is the hidden-state matrix [T, k], read row by row through the
// index list `rows` (the activation side: no gathered copy). Layout of this
// file: device helpers (one per PTX instruction), the tile layout in shared
// memory, the main kernel (producer = cp.async of every thread, consumer =
// the warps' mma.sp), its epilogues, then the split-k epilogue and combine
// kernels. docs/KERNELS.md explains the design with a worked example.

#include "samoyeds_common.cuh"

namespace samoyeds {

// ---------------------------------------------------------------------------
// Tile configuration
// ---------------------------------------------------------------------------

constexpr int kWarps = 8;              // warps per CTA
constexpr int kThreads = kWarps * 32;  // threads per CTA
constexpr int kTileRows = 16;          // condensed rows of one mma (M = 16)
constexpr int kChunk = 32;             // logical k per mma.sp (k32)
constexpr int kStages = 6;             // cp.async pipeline depth (chunks)

// Shared memory per stage, RT row tiles of 16 condensed rows per warp:
//   A  fragments  kWarps x RT x 32 lanes x 16 B
//   E  metadata   kWarps x RT x 32 lanes x 4 B (one word serves a pair of
//                 chunks; the stage of the pair's first chunk holds it)
//   B  token rows BN x (32 k + 8 pad) bf16 = BN x 80 B (conflict-free ldmatrix)
constexpr int kBRowBytes = (kChunk + 8) * 2;

template <int RT, int BN>
struct StageLayout {
  static constexpr int a = 0;
  static constexpr int e = kWarps * RT * 32 * 16;
  static constexpr int b = e + kWarps * RT * 32 * 4;
  static constexpr int bytes = b + BN * kBRowBytes;
};

// Epilogue tile, reusing the pipeline's shared memory: f32 [BN][stride],
// outRows = kWarps * RT * 16 * M / N output rows of the CTA.
template <int RT, int BN, int N, int M>
struct EpilogueLayout {
  static constexpr int outRows = kWarps * RT * kTileRows * M / N;
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
};

enum Epilogue : int {
  kStore = 0,         // out: bf16/fp16 [count][m]        Y[i, o]
  kSiluMul = 1,       // out: bf16/fp16 [count][m]        SiLU(W0 x) * (W1 x)
  kScaleAdd = 2,      // out: f32 [T][m], atomicAdd(out[rows[i], o], w_i * Y[i, o])
  kScaleSlots = 3,    // out: f32 [T*topK][m], out[slots[i], o] = w_i * Y[i, o]
};

// ---------------------------------------------------------------------------
// The main kernel
// ---------------------------------------------------------------------------
//
// Grid: x = row tiles (kWarps * 16 condensed rows; half that per weight in
// the SiLU mode), y = token tiles of BN, z = k splits. Every warp owns 16
// condensed rows and all BN tokens of the tile: 16 x BN per k32 chunk is
// BN / 8 mma.sp. The row selection is folded once per vector: the chunk
// results of a vector accumulate in `part`, which is then added to the bank
// of the output row this vector's selection names (BANKS = M - N + 1
// possible rows per condensed row), so no multiply is wasted on a row the
// format left empty.

// One k32 chunk of a warp: RT x NT mma.sp. Token fragments are loaded in
// groups of G (all of a group's ldmatrix before its mma.sp), so the loads
// overlap instead of each mma.sp waiting for its own ldmatrix.
template <typename T, int SELECTOR, int RT, int NT>
__device__ __forceinline__ void chunkMma(float (&part)[RT][NT][4], const uint4 (&a)[RT], const uint32_t (&e)[RT],
                                         const unsigned char* bTile, int lane) {
  constexpr int G = RT == 1 ? NT : (NT >= 4 ? 4 : NT);
#pragma unroll
  for (int t0 = 0; t0 < NT; t0 += G) {
    uint32_t b[G][4];
#pragma unroll
    for (int t = 0; t < G; ++t) {
      // Tokens (t0+t)*8 .. +7, k 0..31 of the chunk: four 8x8 matrices.
      ldmatrixX4(b[t], bTile + ((t0 + t) * 8 + (lane % 8)) * kBRowBytes + (lane / 8) * 16);
    }
#pragma unroll
    for (int t = 0; t < G; ++t)
#pragma unroll
      for (int j = 0; j < RT; ++j) mmaSparse<T, SELECTOR>(part[j][t0 + t], a[j], b[t], e[j]);
  }
}

template <typename T, int N, int M, int RT, int BN, int EPILOGUE>
__device__ __forceinline__ void dualSparseGemm(const GemmArgs& args) {
  constexpr int BANKS = M - N + 1;
  constexpr int NT = BN / 8;  // n8 tiles per warp
  constexpr int kRowsPerWarp = RT * kTileRows;
  using Stage = StageLayout<RT, BN>;
  extern __shared__ __align__(128) unsigned char smem[];

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const bool silu = EPILOGUE == kSiluMul;
  // In the SiLU mode warps 0-3 run W0 (gate) and warps 4-7 run W1 (up) on
  // the same rows and the same token tile.
  const WeightArgs& w = (silu && warp >= kWarps / 2) ? args.w1 : args.w0;
  const int warpsPerWeight = silu ? kWarps / 2 : kWarps;
  // The warp's first 16-row tile; it owns tiles rowTile .. rowTile + RT - 1.
  const int rowTile = (blockIdx.x * warpsPerWeight + (warp % warpsPerWeight)) * RT;
  const int rowTiles = (w.mc + kTileRows - 1) / kTileRows;
  const bool warpActive = rowTile < rowTiles;
  const int tokenBase = blockIdx.y * BN;

  const int chunks = args.k / kChunk;
  const int chunkPairs = (chunks + 1) / 2;
  const int firstChunk = blockIdx.z * args.chunksPerSplit;
  const int lastChunk = min(chunks, firstChunk + args.chunksPerSplit);
  const int myChunks = lastChunk - firstChunk;

  // ---- producer: every thread issues cp.async for one stage ----
  // The token row each thread copies is read once here, so the index list
  // never sits on the pipeline's critical path.
  const uint16_t* bSource = nullptr;
  bool bValid = false;
  if (threadIdx.x < BN * 4) {
    const int token = tokenBase + threadIdx.x / 4;
    bValid = token < args.count;
    const int row = bValid ? args.rows[token] : 0;
    bSource = args.x + (size_t)row * args.k + (threadIdx.x % 4) * 8;
  }
  auto loadStage = [&](int stage, int chunk) {
    unsigned char* base = smem + stage * Stage::bytes;
    // A: RT 16 B fragments per lane of every warp.
#pragma unroll
    for (int j = 0; j < RT; ++j) {
      const int t = threadIdx.x;  // kThreads == kWarps * 32
      const int wv = t / 32;
      const WeightArgs& wt = (silu && wv >= kWarps / 2) ? args.w1 : args.w0;
      const int tile = (blockIdx.x * warpsPerWeight + (wv % warpsPerWeight)) * RT + j;
      const bool valid = tile < (wt.mc + kTileRows - 1) / kTileRows;
      const uint4* src = wt.a + ((size_t)(valid ? tile : 0) * chunks + chunk) * 32 + (t % 32);
      cpAsync16(base + Stage::a + ((wv * RT + j) * 32 + t % 32) * 16, src, valid);
    }
    // E: the pair's metadata words, with the pair's first chunk of this split.
    if ((chunk % 2 == 0 || chunk == firstChunk) && threadIdx.x < kWarps * RT * 8) {
      // kWarps * RT * 32 words, 4 words (16 B) per thread.
      const int t = threadIdx.x;
      const int wv = t / (8 * RT);
      const int j = (t / 8) % RT;
      const WeightArgs& wt = (silu && wv >= kWarps / 2) ? args.w1 : args.w0;
      const int tile = (blockIdx.x * warpsPerWeight + (wv % warpsPerWeight)) * RT + j;
      const bool valid = tile < (wt.mc + kTileRows - 1) / kTileRows;
      const uint32_t* src = wt.e + ((size_t)(valid ? tile : 0) * chunkPairs + chunk / 2) * 32 + (t % 8) * 4;
      cpAsync16(base + Stage::e + t * 16, src, valid);
    }
    // B: BN token rows x 32 k (4 x 16 B each), rows fixed per thread.
    if (threadIdx.x < BN * 4) {
      cpAsync16(base + Stage::b + (threadIdx.x / 4) * kBRowBytes + (threadIdx.x % 4) * 16,
                bSource + chunk * kChunk, bValid);
    }
  };

  float part[RT][NT][4];
  float bank[BANKS][RT][NT][4];
#pragma unroll
  for (int b = 0; b < BANKS; ++b)
#pragma unroll
    for (int j = 0; j < RT; ++j)
#pragma unroll
      for (int t = 0; t < NT; ++t)
#pragma unroll
        for (int i = 0; i < 4; ++i) bank[b][j][t][i] = 0.f;
#pragma unroll
  for (int j = 0; j < RT; ++j)
#pragma unroll
    for (int t = 0; t < NT; ++t)
#pragma unroll
      for (int i = 0; i < 4; ++i) part[j][t][i] = 0.f;

  // Row selections of this lane's rows (g and g + 8 of each tile), loaded a
  // vector ahead of the fold that uses them.
  const int vectors = args.k / (args.vectorChunks * kChunk);
  const uint8_t* selectionBase = w.selection;
  const int mc = w.mc;
  auto bankOf = [=](int j, int h, int vector) -> int {
    const int r = (rowTile + j) * kTileRows + lane / 4 + 8 * h;
    return (warpActive && r < mc && vector < vectors) ? int(selectionBase[(size_t)r * vectors + vector]) - r % N : 0;
  };
  int selection[RT][2];
#pragma unroll
  for (int j = 0; j < RT; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h) selection[j][h] = bankOf(j, h, firstChunk / args.vectorChunks);

  // Prologue: fill kStages - 1 stages.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < myChunks) loadStage(s, firstChunk + s);
    cpAsyncCommit();
  }

  const int g = lane / 4;  // row within the 16 (and g + 8)
  uint32_t metadata[RT];
#pragma unroll
  for (int j = 0; j < RT; ++j) metadata[j] = 0;
  for (int i = 0; i < myChunks; ++i) {
    cpAsyncWait<kStages - 2>();
    __syncthreads();
    // Refill the stage consumed last iteration.
    if (i + kStages - 1 < myChunks) loadStage((i + kStages - 1) % kStages, firstChunk + i + kStages - 1);
    cpAsyncCommit();

    const int chunk = firstChunk + i;
    const unsigned char* base = smem + (i % kStages) * Stage::bytes;
    if (warpActive) {
      uint4 a[RT];
#pragma unroll
      for (int j = 0; j < RT; ++j) {
        a[j] = *reinterpret_cast<const uint4*>(base + Stage::a + ((warp * RT + j) * 32 + lane) * 16);
        if (chunk % 2 == 0 || i == 0) {
          metadata[j] = *reinterpret_cast<const uint32_t*>(base + Stage::e + ((warp * RT + j) * 32 + lane) * 4);
        }
      }
      // The selector is warp-uniform: branch once per chunk so each path is
      // straight-line mma.sp with a constant selector.
      if (chunk % 2 == 0) {
        chunkMma<T, 0, RT, NT>(part, a, metadata, base + Stage::b, lane);
      } else {
        chunkMma<T, 1, RT, NT>(part, a, metadata, base + Stage::b, lane);
      }
      // End of a vector (or of this split): fold into the selected banks.
      if ((chunk + 1) % args.vectorChunks == 0 || i == myChunks - 1) {
        // bank[b] += part where b is the row's selection. Written as a
        // multiply by a 0/1 mask so every register index stays a
        // compile-time constant (an `if (b == s)` lets the compiler index
        // the banks by `s`, which moves them to local memory).
#pragma unroll
        for (int b = 0; b < BANKS; ++b) {
#pragma unroll
          for (int j = 0; j < RT; ++j) {
            const float low = selection[j][0] == b ? 1.f : 0.f;
            const float high = selection[j][1] == b ? 1.f : 0.f;
#pragma unroll
            for (int t = 0; t < NT; ++t) {
              bank[b][j][t][0] = fmaf(low, part[j][t][0], bank[b][j][t][0]);
              bank[b][j][t][1] = fmaf(low, part[j][t][1], bank[b][j][t][1]);
              bank[b][j][t][2] = fmaf(high, part[j][t][2], bank[b][j][t][2]);
              bank[b][j][t][3] = fmaf(high, part[j][t][3], bank[b][j][t][3]);
            }
          }
        }
#pragma unroll
        for (int j = 0; j < RT; ++j)
#pragma unroll
          for (int t = 0; t < NT; ++t)
#pragma unroll
            for (int q = 0; q < 4; ++q) part[j][t][q] = 0.f;
#pragma unroll
        for (int j = 0; j < RT; ++j)
#pragma unroll
          for (int h = 0; h < 2; ++h) selection[j][h] = bankOf(j, h, chunk / args.vectorChunks + 1);
      }
    }
  }
  cpAsyncWait<0>();
  __syncthreads();

  // ---- epilogue: banks -> shared f32 tile [BN][stride] -> global ----
  using Tile = EpilogueLayout<RT, BN, N, M>;
  constexpr int stride = Tile::stride;
  float* tile = reinterpret_cast<float*>(smem);
  // Warp-local output rows: condensed row r (0..16*RT-1 in the warp) of
  // group r / N, bank b -> output row (r / N) * M + r % N + b of the warp's
  // 16 * RT * M / N rows. With N = 1 every (token, row) of the tile gets
  // exactly one value (zero from a bank never selected), so plain stores;
  // with N > 1 two (row, bank) pairs can name one output row, so the tile is
  // zeroed and the banks added with shared atomics.
  if (N > 1) {
    for (int i = threadIdx.x; i < BN * stride; i += kThreads) tile[i] = 0.f;
    __syncthreads();
  }
  if (warpActive) {
    const int warpOut = warp * kRowsPerWarp * M / N;
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
            const int n = t * 8 + (lane % 4) * 2;
            if (N == 1) {
              tile[n * stride + o] = bank[b][j][t][2 * half];
              tile[(n + 1) * stride + o] = bank[b][j][t][2 * half + 1];
            } else {
              atomicAdd(&tile[n * stride + o], bank[b][j][t][2 * half]);
              atomicAdd(&tile[(n + 1) * stride + o], bank[b][j][t][2 * half + 1]);
            }
          }
        }
      }
    }
  }
  __syncthreads();

  // Tile -> global, two adjacent output rows per thread (m is a multiple of
  // M >= 2, so pairs never straddle the end), consecutive threads on
  // consecutive rows of one token.
  constexpr int rowsPerWeightTile = (silu ? kWarps / 2 : kWarps) * kRowsPerWarp * M / N;
  constexpr int pairsPerToken = rowsPerWeightTile / 2;
  const int outBase = blockIdx.x * rowsPerWeightTile;
  const int m = args.w0.m;
  for (int idx = threadIdx.x; idx < BN * pairsPerToken; idx += kThreads) {
    const int n = idx / pairsPerToken;
    const int o = 2 * (idx % pairsPerToken);
    const int token = tokenBase + n;
    const int row = outBase + o;
    if (token >= args.count || row >= m) continue;
    const float2 v = *reinterpret_cast<const float2*>(&tile[n * stride + o]);
    if (args.splits > 1) {
      // Split-k: plain f32 partials, reduced in order by splitEpilogue.
      float* p = args.partial + ((size_t)blockIdx.z * 2 * args.count + token) * m + row;
      *reinterpret_cast<float2*>(p) = v;
      if (silu) {
        *reinterpret_cast<float2*>(p + (size_t)args.count * m) =
            *reinterpret_cast<const float2*>(&tile[n * stride + o + rowsPerWeightTile]);
      }
      continue;
    }
    if (EPILOGUE == kStore) {
      storePair<T>(reinterpret_cast<T*>(args.out) + (size_t)token * m + row, v.x, v.y);
    } else if (EPILOGUE == kSiluMul) {
      const float2 up = *reinterpret_cast<const float2*>(&tile[n * stride + o + rowsPerWeightTile]);
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
  }
}

// Split-k epilogue: sums the splits' partials in order (deterministic) and
// applies the epilogue. One thread per (token, output row).
template <typename T, int EPILOGUE>
__device__ __forceinline__ void splitEpilogue(const GemmArgs& args) {
  const int m = args.w0.m;
  const size_t total = (size_t)args.count * m;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
    const int token = int(idx / m);
    const int row = int(idx % m);
    float value = 0.f, up = 0.f;
    for (int s = 0; s < args.splits; ++s) {
      const float* p = args.partial + ((size_t)s * 2 * args.count + token) * m + row;
      value += p[0];
      if (EPILOGUE == kSiluMul) up += p[total];
    }
    if (EPILOGUE == kStore) {
      reinterpret_cast<T*>(args.out)[idx] = fromFloat<T>(value);
    } else if (EPILOGUE == kSiluMul) {
      reinterpret_cast<T*>(args.out)[idx] = fromFloat<T>(siluf(value) * up);
    } else if (EPILOGUE == kScaleAdd) {
      atomicAdd(reinterpret_cast<float*>(args.out) + (size_t)args.rows[token] * m + row,
                args.routeWeights[token] * value);
    } else {
      reinterpret_cast<float*>(args.out)[(size_t)args.slots[token] * m + row] = args.routeWeights[token] * value;
    }
  }
}

}  // namespace samoyeds

// ---------------------------------------------------------------------------
// Entry points: extern "C" names, one per (type, pattern, BN, epilogue).
// SAMOYEDS_GEMM(name, T, N, M, BN, EPILOGUE)
// ---------------------------------------------------------------------------

#define SAMOYEDS_GEMM(NAME, T, N, M, BN, EPI)                                                    \
  extern "C" __global__ void __launch_bounds__(samoyeds::kThreads, 1)                            \
      NAME(const samoyeds::GemmArgs args) {                                                      \
    samoyeds::dualSparseGemm<T, N, M, 1, BN, EPI>(args);                                         \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(samoyeds::kThreads, 1)                            \
      NAME##_rt2(const samoyeds::GemmArgs args) {                                                \
    samoyeds::dualSparseGemm<T, N, M, 2, BN, EPI>(args);                                         \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256) NAME##_split(const samoyeds::GemmArgs args) { \
    samoyeds::splitEpilogue<T, EPI>(args);                                                       \
  }

// A half-width token tile with two CTAs per SM (<= 128 registers): more
// warps to hide latency, at twice the weight re-reads. `_bn32`.
#define SAMOYEDS_GEMM_NARROW(NAME, T, N, M, BN, EPI)                                             \
  extern "C" __global__ void __launch_bounds__(samoyeds::kThreads, 2)                            \
      NAME##_bn32(const samoyeds::GemmArgs args) {                                               \
    samoyeds::dualSparseGemm<T, N, M, 1, BN / 2, EPI>(args);                                     \
  }

#define SAMOYEDS_GEMM_NARROW_EPILOGUES(PREFIX, T, N, M, BN)               \
  SAMOYEDS_GEMM_NARROW(PREFIX##_store, T, N, M, BN, samoyeds::kStore)     \
  SAMOYEDS_GEMM_NARROW(PREFIX##_silu, T, N, M, BN, samoyeds::kSiluMul)    \
  SAMOYEDS_GEMM_NARROW(PREFIX##_add, T, N, M, BN, samoyeds::kScaleAdd)    \
  SAMOYEDS_GEMM_NARROW(PREFIX##_slots, T, N, M, BN, samoyeds::kScaleSlots)

#define SAMOYEDS_GEMM_EPILOGUES(PREFIX, T, N, M, BN)               \
  SAMOYEDS_GEMM(PREFIX##_store, T, N, M, BN, samoyeds::kStore)     \
  SAMOYEDS_GEMM(PREFIX##_silu, T, N, M, BN, samoyeds::kSiluMul)    \
  SAMOYEDS_GEMM(PREFIX##_add, T, N, M, BN, samoyeds::kScaleAdd)    \
  SAMOYEDS_GEMM(PREFIX##_slots, T, N, M, BN, samoyeds::kScaleSlots)

// Patterns with up to 2 banks use 64-token tiles; up to 4 banks 32; up to 8,
// 16. Each has a 1-tile-per-warp and a 2-tiles-per-warp (_rt2) variant.
SAMOYEDS_GEMM_EPILOGUES(samoyeds_bf16_n1m2, samoyeds::bf16, 1, 2, 64)
SAMOYEDS_GEMM_EPILOGUES(samoyeds_fp16_n1m2, samoyeds::fp16, 1, 2, 64)
SAMOYEDS_GEMM_NARROW_EPILOGUES(samoyeds_bf16_n1m2, samoyeds::bf16, 1, 2, 64)
SAMOYEDS_GEMM_NARROW_EPILOGUES(samoyeds_fp16_n1m2, samoyeds::fp16, 1, 2, 64)
SAMOYEDS_GEMM_EPILOGUES(samoyeds_bf16_n1m4, samoyeds::bf16, 1, 4, 32)
SAMOYEDS_GEMM_EPILOGUES(samoyeds_fp16_n1m4, samoyeds::fp16, 1, 4, 32)
SAMOYEDS_GEMM_EPILOGUES(samoyeds_bf16_n2m4, samoyeds::bf16, 2, 4, 32)
SAMOYEDS_GEMM_EPILOGUES(samoyeds_fp16_n2m4, samoyeds::fp16, 2, 4, 32)
SAMOYEDS_GEMM_EPILOGUES(samoyeds_bf16_n1m8, samoyeds::bf16, 1, 8, 16)
SAMOYEDS_GEMM_EPILOGUES(samoyeds_fp16_n1m8, samoyeds::fp16, 1, 8, 16)

// Combine for the deterministic mode: out[t, c] = sum over ranks of
// slots[t * topK + rank, c], in rank order. out f32 [T][hidden].
extern "C" __global__ void __launch_bounds__(256)
    samoyeds_combine(const float* slots, float* out, int tokens, int topK, int hidden) {
  const size_t total = (size_t)tokens * hidden;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
    const size_t t = idx / hidden;
    const size_t c = idx % hidden;
    float sum = 0.f;
    for (int r = 0; r < topK; ++r) sum += slots[(t * topK + r) * hidden + c];
    out[idx] = sum;
  }
}

// Dense baseline helper: copies the routed rows of X into a contiguous
// [count][k] buffer (what a dense GEMM needs first). 16 B per thread.
extern "C" __global__ void __launch_bounds__(256)
    samoyeds_gather_rows(const uint4* x, const int* rows, uint4* out, int count, int k) {
  const int perRow = k / 8;  // uint4 = 8 x 16-bit
  const size_t total = (size_t)count * perRow;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
    const size_t i = idx / perRow;
    const size_t c = idx % perRow;
    out[idx] = x[(size_t)rows[i] * perRow + c];
  }
}
