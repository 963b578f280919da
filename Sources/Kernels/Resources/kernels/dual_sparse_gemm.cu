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
// the warps' mma.sp), its epilogues, then the split-k epilogue (for launches
// that do not sum their splits themselves) and combine kernels. docs/KERNELS.md explains the design with a worked example.

#include "samoyeds_gemm.cuh"

namespace samoyeds {

constexpr int kStages = 6;             // cp.async pipeline depth (chunks)

// Shared memory per stage of CPS chunks (1, or a chunk pair), RT row tiles
// of 16 condensed rows per warp:
//   A  fragments  CPS x kWarps x RT x 32 lanes x 16 B
//   E  metadata   kWarps x RT x 32 lanes x 4 B (one word serves a pair of
//                 chunks; the stage of the pair's first chunk holds it)
//   B  token rows CPS x BN x (32 k + 8 pad) bf16 = BN x 80 B per chunk
//      (conflict-free ldmatrix)
constexpr int kBRowBytes = (kChunk + 8) * 2;

template <int RT, int BN, int CPS = 1>
struct StageLayout {
  static constexpr int aChunk = kWarps * RT * 32 * 16;  // A bytes of one chunk
  static constexpr int bChunk = BN * kBRowBytes;        // B bytes of one chunk
  static constexpr int a = 0;
  static constexpr int e = CPS * aChunk;
  static constexpr int b = e + kWarps * RT * 32 * 4;
  static constexpr int bytes = b + CPS * bChunk;
  // Ring depth in stages: six chunks in flight either way.
  static constexpr int stages = CPS == 1 ? kStages : kStages / CPS;
};
// ---------------------------------------------------------------------------
// The main kernel
// ---------------------------------------------------------------------------
//
// Grid: x = row tiles (kWarps * 16 condensed rows; half that per weight in
// the SiLU mode), y = token tiles of BN, z = k splits. Every warp owns 16
// condensed rows and all BN tokens of the tile: 16 x BN per k32 chunk is
// BN / 8 mma.sp. The row selection is folded once per vector: the chunk
// results go to the bank of the output row the vector's selection names
// (BANKS = M - N + 1 possible rows per condensed row; see RowSelection), so
// no multiply is wasted on a row the format left empty.


// One k32 chunk of a warp: RT x NT mma.sp. Token fragments are loaded in
// groups of G (all of a group's ldmatrix before its mma.sp), so the loads
// overlap instead of each mma.sp waiting for its own ldmatrix.
// A chunk's token fragments (tokens 8t .. 8t+7, k 0..31: four 8x8 matrices each).
template <int NT>
__device__ __forceinline__ void loadTokens(uint32_t (&b)[NT][4], const unsigned char* bTile, int lane) {
#pragma unroll
  for (int t = 0; t < NT; ++t) ldmatrixX4(b[t], bTile + (t * 8 + (lane % 8)) * kBRowBytes + (lane / 8) * 16);
}

// RT x NT mma.sp of a chunk on token fragments already in registers.
template <typename T, int SELECTOR, int RT, int NT>
__device__ __forceinline__ void mmaTokens(float (&acc)[RT][NT][4], const uint4 (&a)[RT], const uint32_t (&e)[RT],
                                          const uint32_t (&b)[NT][4]) {
#pragma unroll
  for (int t = 0; t < NT; ++t)
#pragma unroll
    for (int j = 0; j < RT; ++j) mmaSparse<T, SELECTOR>(acc[j][t], a[j], b[t], e[j]);
}

template <typename T, int SELECTOR, int RT, int NT>
__device__ __forceinline__ void chunkMma(float (&acc)[RT][NT][4], const uint4 (&a)[RT], const uint32_t (&e)[RT],
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
      for (int j = 0; j < RT; ++j) mmaSparse<T, SELECTOR>(acc[j][t0 + t], a[j], b[t], e[j]);
  }
}

// CPS = 2 stages a chunk pair: one barrier per pair, and the second chunk's
// token fragments load while the first chunk's mma.sp issue.
template <typename T, int N, int M, int RT, int BN, int EPILOGUE, int CPS = 1>
__device__ __forceinline__ void dualSparseGemm(const GemmArgs& args) {
  constexpr int BANKS = M - N + 1;
  constexpr int NT = BN / 8;  // n8 tiles per warp
  using Stage = StageLayout<RT, BN, CPS>;
  constexpr int kRing = Stage::stages;
  static_assert(CPS == 1 || CPS == 2, "stages of one chunk or a chunk pair");
  extern __shared__ __align__(128) unsigned char smem[];

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  // The warp's weight and its RT 16-row tiles (WarpTiles).
  const WarpTiles<EPILOGUE, RT> tiles(args, warp, blockIdx.x);
  const WeightArgs& w = tiles.weight;
  const int rowTile = tiles.first;
  const bool warpActive = tiles.has();
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
  // Each thread's copies are the same in every stage: resolve sources,
  // destinations and validity once; a stage then costs one pointer offset
  // per copy. A: RT 16 B fragments per lane of every warp; E (threads
  // < kWarps * RT * 8, 16 B each): the pair's metadata words, copied with
  // the pair's first (even) chunk; B: BN token rows x 32 k, 4 x 16 B each.
  const uint4* aSrc[RT];
  int aDst[RT];
  bool aValid[RT];
#pragma unroll
  for (int j = 0; j < RT; ++j) {
    const int wv = threadIdx.x / 32;  // kThreads == kWarps * 32
    const WarpTiles<EPILOGUE, RT> copied(args, wv, blockIdx.x);
    const int tile = copied.first + j;
    aValid[j] = copied.has(j);
    aSrc[j] = copied.weight.a + (size_t)(aValid[j] ? tile : 0) * chunks * 32 + threadIdx.x % 32;
    aDst[j] = Stage::a + ((wv * RT + j) * 32 + threadIdx.x % 32) * 16;
  }
  const bool eCopier = threadIdx.x < kWarps * RT * 8;
  const uint32_t* eSrc = nullptr;
  bool eValid = false;
  if (eCopier) {
    const int wv = threadIdx.x / (8 * RT);
    const int j = (threadIdx.x / 8) % RT;
    const WarpTiles<EPILOGUE, RT> copied(args, wv, blockIdx.x);
    const int tile = copied.first + j;
    eValid = copied.has(j);
    eSrc = copied.weight.e + (size_t)(eValid ? tile : 0) * chunkPairs * 32 + (threadIdx.x % 8) * 4;
  }
  const int eDst = Stage::e + threadIdx.x * 16;
  const bool bCopier = threadIdx.x < BN * 4;
  const int bDst = Stage::b + (threadIdx.x / 4) * kBRowBytes + (threadIdx.x % 4) * 16;
  // Stage `stage` gets chunks chunk0 .. chunk0 + CPS - 1 (chunks past the
  // split are zero-filled and never used).
  auto loadStage = [&](int stage, int chunk0) {
    unsigned char* base = smem + stage * Stage::bytes;
#pragma unroll
    for (int c = 0; c < CPS; ++c) {
      const int chunk = chunk0 + c;
      const bool inSplit = CPS == 1 || chunk < lastChunk;
#pragma unroll
      for (int j = 0; j < RT; ++j) {
        cpAsync16(base + c * Stage::aChunk + aDst[j], aSrc[j] + (inSplit ? chunk : 0) * 32, aValid[j] && inSplit);
      }
      if (chunk % 2 == 0 && eCopier) cpAsync16(base + eDst, eSrc + (chunk / 2) * 32, eValid);
      if (bCopier) {
        cpAsync16(base + c * Stage::bChunk + bDst, bSource + (inSplit ? chunk : 0) * kChunk, bValid && inSplit);
      }
    }
  };

  float acc[RT][NT][4];           // running total over the split
  float bank[BANKS - 1][RT][NT][4];  // banks 0 .. BANKS-2 (the last is acc minus them)
  RowSelection<N, M, RT, NT>::zero(bank, acc);
  RowSelection<N, M, RT, NT> selection;
  selection.start(w, rowTile, lane, firstChunk, args.vectorChunks, args.k / (args.vectorChunks * kChunk), warpActive);

  // Prologue: fill kRing - 1 stages. Splits start on even chunks, so a
  // stage holding an even chunk also holds its pair's metadata.
#pragma unroll
  for (int s = 0; s < kRing - 1; ++s) {
    if (s * CPS < myChunks) loadStage(s, firstChunk + s * CPS);
    cpAsyncCommit();
  }

  uint32_t metadata[RT];
#pragma unroll
  for (int j = 0; j < RT; ++j) metadata[j] = 0;
  int readStage = 0;              // (i / CPS) % kRing, as a counter
  int writeStage = kRing - 1;     // the stage kRing - 1 ahead
  const int aRead = Stage::a + (warp * RT * 32 + lane) * 16;
  const int eRead = Stage::e + (warp * RT * 32 + lane) * 4;
  for (int i = 0; i < myChunks; i += CPS) {
    cpAsyncWait<kRing - 2>();
    __syncthreads();
    // Refill the stage consumed last iteration.
    if (i + (kRing - 1) * CPS < myChunks) loadStage(writeStage, firstChunk + i + (kRing - 1) * CPS);
    cpAsyncCommit();

    const unsigned char* base = smem + readStage * Stage::bytes;
    if (warpActive) {
      uint4 a[RT];
      if (CPS == 1) {
        const bool even = (firstChunk + i) % 2 == 0;
#pragma unroll
        for (int j = 0; j < RT; ++j) {
          a[j] = *reinterpret_cast<const uint4*>(base + aRead + j * 32 * 16);
          if (even) metadata[j] = *reinterpret_cast<const uint32_t*>(base + eRead + j * 32 * 4);
        }
        // The selector is warp-uniform: branch once per chunk so each path
        // is straight-line mma.sp with a constant selector.
        if (even) {
          chunkMma<T, 0, RT, NT>(acc, a, metadata, base + Stage::b, lane);
        } else {
          chunkMma<T, 1, RT, NT>(acc, a, metadata, base + Stage::b, lane);
        }
        selection.afterChunk(bank, acc, i == myChunks - 1);
      } else {
        // The pair: even chunk (selector 0), then odd (selector 1), both
        // chunks' token fragments loaded before the first mma.sp.
        uint32_t b0[NT][4], b1[NT][4];
        loadTokens<NT>(b0, base + Stage::b, lane);
        loadTokens<NT>(b1, base + Stage::b + Stage::bChunk, lane);
#pragma unroll
        for (int j = 0; j < RT; ++j) {
          a[j] = *reinterpret_cast<const uint4*>(base + aRead + j * 32 * 16);
          metadata[j] = *reinterpret_cast<const uint32_t*>(base + eRead + j * 32 * 4);
        }
        mmaTokens<T, 0, RT, NT>(acc, a, metadata, b0);
        selection.afterChunk(bank, acc, i == myChunks - 1);
        if (i + 1 < myChunks) {
#pragma unroll
          for (int j = 0; j < RT; ++j) a[j] = *reinterpret_cast<const uint4*>(base + Stage::aChunk + aRead + j * 32 * 16);
          mmaTokens<T, 1, RT, NT>(acc, a, metadata, b1);
          selection.afterChunk(bank, acc, i + 1 == myChunks - 1);
        }
      }
    }
    writeStage = readStage;
    readStage = readStage == kRing - 1 ? 0 : readStage + 1;
  }
  cpAsyncWait<0>();
  __syncthreads();
  selection.finish(bank, acc);
  storeTile<T, N, M, RT, BN, EPILOGUE>(args, bank, acc, smem, warpActive, blockIdx.x, tokenBase, blockIdx.z, threadIdx.x);
}

// ---------------------------------------------------------------------------
// The wide-warp kernel (tiling `rt4`: large token counts, 1:2)
// ---------------------------------------------------------------------------
//
// The CTA tile of rt2x2 (256 condensed rows x 64 tokens) with a squarer warp
// tile and fewer instructions per mma.sp. The 8 warps are laid out 4 over
// rows by 2 over tokens; each owns 4 row tiles (64 condensed rows) and 32
// tokens, so a chunk is 16 mma.sp on 4 A fragments (LDS.128) and 4 token
// fragments (ldmatrix.x4): 4 KB of shared reads where rt2x2 reads 5 KB. A
// stage holds 4 chunks (128 k), so one barrier and one round of copies
// serve 64 mma.sp per warp, every copy of a stage is one base pointer plus
// constant offsets, and the selectors of the unrolled chunks are constants.
// The next chunk's fragments are loaded while the current chunk's mma.sp
// issue. Needs V = 128 (a stage is a vector), k a multiple of 128 and
// 4-chunk splits (PortableKernel).
//
// Shared memory per stage (kWideStages stages; the epilogue tile reuses it):
//   A  [16 row tiles][4 chunks][32 lanes] 16 B          32 KB
//   E  [16 row tiles][2 chunk pairs][32 lanes] 4 B       4 KB
//   B  [BN tokens][128 k + 8 pad] bf16 (272-byte rows, conflict-free ldmatrix)
// Each row tile's A and E pieces of a stage, and each token row's 128 k,
// are contiguous both in global memory (the packing) and in the slot.
//
// Filling the ring (kWideFill):
// * 0, sm_80 / sm_89: every thread issues cp.async for the same 16-byte
//   pieces of every stage; one cp.async.wait_group and one __syncthreads
//   per stage.
// * 2, sm_90: each warp copies an eighth of a stage after its first
//   chunk's mma.sp: lanes 0-1 one bulk copy (cp.async.bulk, the copy
//   engine) each of two row tiles' A piece (2 KB) and E piece (256 B), and
//   every thread its token row's four 16-byte pieces by cp.async, then
//   cp.async.mbarrier.arrive.noinc. Each slot has a `full` mbarrier (8
//   expected-byte arrivals and 256 cp.async arrivals) and an `empty` one
//   (one arrival per thread once it is done reading the slot); a warp
//   refills its part of a slot once all 256 threads released it. There is no CTA-wide
//   barrier in the loop. Row tiles past the weight copy its tile 0 instead
//   of zeros (they only feed accumulators that are never stored).
// * 1 (bench/rt4-decomposition only): the token rows by bulk copies too,
//   one per row (tokens past `count` copy X's row 0). Slower than 2: a bulk
//   copy's operands must be warp-uniform, so ptxas issues a warp's copies
//   one lane at a time, and 64 row copies per stage cost more than their
//   bytes (docs/KERNELS.md).
// * 3 (bench/rt4-decomposition's MCAST, or this define changed in a copy
//   of the kernels named by SAMOYEDS_KERNEL_DIR): fill 2 with the weight
//   multicast over a cluster of two CTAs (adjacent token tiles, same row
//   block). Each copies 8 of the 16 row tiles' pieces into both slots
//   (cp.async.bulk .multicast::cluster); `empty` also counts one arrival
//   per warp of the peer (mbarrier.arrive.release.cluster on the peer's
//   barrier). 1.14-1.43x slower than fill 2 on the H200 (docs/KERNELS.md).

constexpr int kWideTokenWarps = 2;                 // warps over tokens (4 over rows)
constexpr int kWideRowTiles = 4;                   // 16-row tiles per warp
constexpr int kWideStageChunks = 4;                // k32 chunks per stage
constexpr int kWideStages = 3;                     // ring depth (8 chunks ahead)
#ifndef SAMOYEDS_RT4_FILL  // bench/rt4-decomposition builds every way
#if __CUDA_ARCH__ >= 900
#define SAMOYEDS_RT4_FILL 2
#else
#define SAMOYEDS_RT4_FILL 0
#endif
#endif
// How the ring is filled: 0 cp.async and a CTA barrier per stage; 1 bulk
// copies (sm_90) and mbarriers; 2 bulk copies of the weight, cp.async of
// the token rows, mbarriers; 3 fill 2 with the weight multicast to a pair.
constexpr int kWideFill = SAMOYEDS_RT4_FILL;
constexpr bool kWideBulk = kWideFill != 0;       // bulk copies, mbarriers
constexpr bool kWideBulkRows = kWideFill == 1;   // token rows by bulk copies too
constexpr bool kWideCluster = kWideFill == 3;    // fill 3: fill 2, the weight multicast to a pair of CTAs
constexpr int kWidePair = kWideCluster ? 2 : 1;  // CTAs (adjacent token tiles) sharing a weight copy
#if SAMOYEDS_RT4_FILL == 3
#define SAMOYEDS_RT4_CLUSTER __cluster_dims__(1, 2, 1)
#else
#define SAMOYEDS_RT4_CLUSTER
#endif

template <int BN>
struct WideLayout {
  static constexpr int rowWarps = kWarps / kWideTokenWarps;
  static constexpr int tiles = rowWarps * kWideRowTiles;                   // row tiles per CTA
  static constexpr int rowBytes = (kWideStageChunks * kChunk + 8) * 2;     // 272
  static constexpr int aTile = kWideStageChunks * 32 * 16;              // a row tile's A piece: 2 KB
  static constexpr int eTile = (kWideStageChunks / 2) * 32 * 4;         // its E piece: 256 B
  static constexpr int a = 0;
  static constexpr int e = tiles * aTile;
  static constexpr int b = e + tiles * eTile;
  static constexpr int bytes = b + BN * rowBytes;
  static constexpr int copied = tiles * (aTile + eTile) + BN * kWideStageChunks * kChunk * 2;  // bulk bytes per stage
};

// The row selections of a wide-kernel warp (1:2: a row's selection byte is
// its bank, 0 or 1) for the lane's 8 rows g + 8i of the warp's 64 condensed
// rows (tile i / 2, half i % 2), one byte per row in two registers (rows
// 0-3, 4-7). The fold (RowSelection's telescoped sum) gives bank 0 of row i
// the coefficient [s_v = 0] - [s_{v+1} = 0] = s_{v+1} - s_v (past the
// split's last vector s counts as 1). Bytewise, X = next + 0x01010101 -
// current holds s_{v+1} - s_v + 1 in {0, 1, 2} per byte (no borrows), and
// one byte permute makes the float 2^23 + that byte, so a coefficient is a
// PRMT and an FADD. The selections are read 4 vectors per row at a time
// (32-bit loads) when the row length allows, one group ahead of use; rows
// past the weight read nothing (their bits are 0 and they are never stored).
struct PairSelection {
  const uint8_t* base;  // row g's selections; null for an inactive warp
  int stride;           // bytes from row g + 8i to row g + 8(i + 1)
  unsigned valid;       // bit i: row g + 8i is a row of the weight
  int vectors;
  int groupMask;        // vectors per load minus 1: 3 when the row length allows 32-bit loads, else 0
  uint32_t words[8];    // per row: the selections of the group holding the next vector
  uint32_t current[2];  // bytes of the vector being accumulated

  // Loads the group of vectors starting at `v` (a multiple of groupMask + 1).
  __device__ __forceinline__ void load(int v) {
    const bool inRange = base != nullptr && v < vectors;
    const uint8_t* p = inRange ? base + v : nullptr;
    if (groupMask != 0) {
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        words[i] = inRange && ((valid >> i) & 1u) ? *reinterpret_cast<const uint32_t*>(p + i * stride) : 0u;
      }
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) words[i] = inRange && ((valid >> i) & 1u) ? uint32_t(p[i * stride]) : 0u;
    }
  }

  // The bytes of vector `v` (in the loaded group) of rows 0-3 and 4-7.
  __device__ __forceinline__ void gather(int v, uint32_t (&out)[2]) const {
    const int k = v & groupMask;
    const unsigned select = unsigned(k) | unsigned(k + 4) << 4;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const uint32_t low = __byte_perm(words[4 * half], words[4 * half + 1], select);
      const uint32_t high = __byte_perm(words[4 * half + 2], words[4 * half + 3], select);
      out[half] = __byte_perm(low, high, 0x5410);
    }
  }

  // Starts at vector `first` (the split's first).
  __device__ __forceinline__ void start(const WeightArgs& w, int rowTile, int lane, int first, int vectorCount,
                                        bool active) {
    const int firstRow = rowTile * kTileRows + lane / 4;
    vectors = vectorCount;
    stride = 8 * vectorCount;
    groupMask = vectorCount % 4 == 0 ? 3 : 0;
    valid = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) valid |= unsigned(firstRow + 8 * i < w.mc) << i;
    base = active ? w.selection + (size_t)firstRow * vectorCount : nullptr;
    load(first & ~groupMask);
    gather(first, current);
    // Invariant: `words` holds the group of the vector after the one being accumulated.
    if (((first + 1) & groupMask) == 0) load(first + 1);
  }

  // The end of vector `v`: bank 0 takes the fold (`last`: v ends the split).
  template <bool LAST, int RT, int NT>
  __device__ __forceinline__ void fold(int v, float (&bank)[1][RT][NT][4], const float (&acc)[RT][NT][4]) {
    static_assert(RT == 4, "8 rows per lane");
    uint32_t next[2] = {0x01010101u, 0x01010101u};
    if (!LAST) {
      gather(v + 1, next);
      if (((v + 2) & groupMask) == 0) load(v + 2);
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const uint32_t x = next[half] + 0x01010101u - current[half];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int j = (4 * half + r) / 2;
        const int h = r % 2;
        const float c = __uint_as_float(__byte_perm(x, 0x4B000000u, 0x7540u + r)) - 8388609.f;
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          bank[0][j][t][2 * h] = fmaf(c, acc[j][t][2 * h], bank[0][j][t][2 * h]);
          bank[0][j][t][2 * h + 1] = fmaf(c, acc[j][t][2 * h + 1], bank[0][j][t][2 * h + 1]);
        }
      }
      current[half] = next[half];
    }
  }
};

template <typename T, int N, int M, int BN, int EPILOGUE>
__device__ __forceinline__ void wideGemm(const GemmArgs& args) {
  static_assert(N == 1 && M == 2, "the 1:2 family");
  constexpr int RT = kWideRowTiles;
  constexpr int WN = kWideTokenWarps;
  constexpr int NT = BN / 8 / WN;  // n8 tiles per warp
  constexpr int SC = kWideStageChunks;
  constexpr int S = kWideStages;
  using L = WideLayout<BN>;
  static_assert(kThreads == L::tiles * 16, "one A tile and one E piece per 16 threads");
  static_assert(kThreads == BN * 4, "four threads per token row");
  extern __shared__ __align__(128) unsigned char smem[];

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int rowBlock = blockIdx.x;
  const WarpTiles<EPILOGUE, RT, WN> tiles(args, warp, rowBlock);
  const WeightArgs& w = tiles.weight;
  const bool warpActive = tiles.has();
  const int tokenBase = blockIdx.y * BN;
  const int chunks = args.k / kChunk;
  const int chunkPairs = (chunks + 1) / 2;
  const int firstChunk = blockIdx.z * args.chunksPerSplit;  // a multiple of SC: a vector's start (V = 128)
  const int myStages = (min(chunks, firstChunk + args.chunksPerSplit) - firstChunk) / SC;

  // ---- producer, fill 0: every thread copies the same pieces of every stage (fill 2 uses its B pieces) ----
  // A: row tile q = thread / 16 of the CTA, lanes 2 (thread % 16), +1, of
  // each of the stage's chunks (8 x 16 B). E: the tile's metadata words for
  // the stage's two pairs, piece thread % 16 (16 B). B: token row thread /
  // 4, pieces thread % 4 + 4 i (4 x 16 B). Sources advance by one stage per
  // copy round; destinations are fixed offsets in the slot.
  const int q = threadIdx.x / 16;
  const WarpTiles<EPILOGUE, RT, WN> copied(args, q / RT, rowBlock);
  const bool tileValid = copied.has(q % RT);
  const int tile = tileValid ? copied.first + q % RT : 0;
  const uint4* aSrc = copied.weight.a + ((size_t)tile * chunks + firstChunk) * 32 + (threadIdx.x % 16) * 2;
  const uint4* eSrc = reinterpret_cast<const uint4*>(copied.weight.e + ((size_t)tile * chunkPairs + firstChunk / 2) * 32) +
                      threadIdx.x % 16;
  const int token = tokenBase + threadIdx.x / 4;
  const bool tokenValid = token < args.count;
  const uint4* bSrc = reinterpret_cast<const uint4*>(args.x + (size_t)(tokenValid ? args.rows[token] : 0) * args.k +
                                                     (size_t)firstChunk * kChunk) + threadIdx.x % 4;
  const int aDst = L::a + q * L::aTile + (threadIdx.x % 16) * 2 * 16;
  const int eDst = L::e + threadIdx.x * 16;
  const int bDst = L::b + (threadIdx.x / 4) * L::rowBytes + (threadIdx.x % 4) * 16;
  // This thread's four 16-byte pieces of its token row (zeros past `count`).
  auto copyRowPieces = [&](unsigned dst, const uint4* from) {
#pragma unroll
    for (int i = 0; i < 4; ++i) cpAsync16(dst + i * 64, from + 4 * i, tokenValid);
  };
  // The addresses of one stage's copies. A cp.async reads its address
  // registers when the memory pipeline takes it, well after issue; ncu
  // showed warps stalled on instructions that overwrote them right after
  // the copies. So sources are computed from fixed bases (not advanced in
  // place), and the addresses are kept alive (`keep`) until the stage's
  // last mma.sp are issued.
  struct StageCopies {
    unsigned a, e, b;              // shared destinations
    const uint4 *aFrom, *eFrom, *bFrom;
    __device__ __forceinline__ void keep(unsigned& sink) const {
      keepAlive(sink, a);
      keepAlive(sink, e);
      keepAlive(sink, b);
      keepAlive(sink, aFrom);
      keepAlive(sink, eFrom);
      keepAlive(sink, bFrom);
    }
  };
  const unsigned smemBase = (unsigned)__cvta_generic_to_shared(smem);
  auto loadStage = [&](int slot, int stage) {
    StageCopies copies;
    const unsigned base = smemBase + slot * L::bytes;
    copies.a = pinned(base + aDst);
    copies.e = pinned(base + eDst);
    copies.b = pinned(base + bDst);
    copies.aFrom = pinned(aSrc + stage * (SC * 32));
    copies.eFrom = pinned(eSrc + stage * ((SC / 2) * 32 / 4));
    copies.bFrom = pinned(bSrc + stage * (SC * kChunk / 8));
    cpAsync16(copies.e, copies.eFrom, tileValid);
#pragma unroll
    for (int c = 0; c < SC; ++c) {
      cpAsync16(copies.a + c * 32 * 16, copies.aFrom + c * 32, tileValid);
      cpAsync16(copies.a + c * 32 * 16 + 16, copies.aFrom + c * 32 + 1, tileValid);
    }
    copyRowPieces(copies.b, copies.bFrom);
    return copies;
  };

  // ---- producer, fills 1 and 2 (sm_90): bulk copies; the slots' full and empty mbarriers follow the ring ----
  __shared__ __align__(8) uint64_t wideBarriers[2 * S];
  const unsigned fullBarrier = (unsigned)__cvta_generic_to_shared(wideBarriers);
  const unsigned emptyBarrier = fullBarrier + 8 * S;
  // Every warp copies an eighth of each stage: `tileCopies` row tiles' A and
  // E pieces and `rowCopies` token rows, one per lane. (Warp 0 alone was
  // 2.6x slower: a bulk copy's operands must be warp-uniform, so ptxas
  // issues a lane's copies one lane at a time, ~8 instructions each.)
  // Sources at the split's first stage (each stage adds a constant).
  constexpr int copiers = kWarps;
  constexpr int tileCopies = L::tiles / copiers / kWidePair;  // per warp, of this CTA's share
  constexpr int rowCopies = BN / copiers;
  constexpr int rowRounds = (rowCopies + 31) / 32;
  const int copier = warp;
  const uint4* bulkA = nullptr;
  const uint32_t* bulkE = nullptr;
  const uint16_t* bulkB[rowRounds];
  constexpr int bulkBytes = kWideBulkRows ? L::copied : L::tiles * (L::aTile + L::eTile);  // per stage
  // (fill 3) The pair's CTA `rank` copies row tiles 8 rank .. 8 rank + 7,
  // one per warp (A by lane 0, E by lane 1), into both CTAs.
  unsigned rank = 0;
#if __CUDA_ARCH__ >= 900
  if constexpr (kWideCluster) rank = clusterRank();
#endif
  if constexpr (kWideBulk) {
    const int q = kWideCluster ? int(rank) * (L::tiles / 2) + copier : copier * tileCopies + lane % tileCopies;
    const WarpTiles<EPILOGUE, RT, WN> mine(args, q / RT, rowBlock);
    const int t = mine.has(q % RT) ? mine.first + q % RT : 0;
    bulkA = mine.weight.a + ((size_t)t * chunks + firstChunk) * 32;
    bulkE = mine.weight.e + ((size_t)t * chunkPairs + firstChunk / 2) * 32;
#pragma unroll
    for (int h = 0; h < rowRounds && kWideBulkRows; ++h) {
      const int token = tokenBase + copier * rowCopies + (lane + 32 * h) % rowCopies;
      bulkB[h] = args.x + (size_t)(token < args.count ? args.rows[token] : 0) * args.k + (size_t)firstChunk * kChunk;
    }
  }
  auto bulkStage = [&](int slot, int stage) {
#if __CUDA_ARCH__ >= 900
    const unsigned base = smemBase + slot * L::bytes;
    const unsigned full = fullBarrier + 8 * slot;
    if (lane == 0) mbarrierArriveExpectTx(full, bulkBytes / copiers);
    __syncwarp();
    if constexpr (kWideCluster) {
      const int q = int(rank) * (L::tiles / 2) + copier;
      if (lane == 0) bulkCopyMulticast(base + L::a + q * L::aTile, bulkA + stage * (SC * 32), L::aTile, full, 0x3);
      if (lane == 1) bulkCopyMulticast(base + L::e + q * L::eTile, bulkE + stage * ((SC / 2) * 32), L::eTile, full, 0x3);
    } else if (lane < tileCopies) {
      const int q = copier * tileCopies + lane;
      bulkCopy(base + L::a + q * L::aTile, bulkA + stage * (SC * 32), L::aTile, full);
      bulkCopy(base + L::e + q * L::eTile, bulkE + stage * ((SC / 2) * 32), L::eTile, full);
    }
    if constexpr (kWideBulkRows) {
#pragma unroll
      for (int h = 0; h < rowRounds; ++h) {
        if (lane + 32 * h < rowCopies) {
          bulkCopy(base + L::b + (copier * rowCopies + lane + 32 * h) * L::rowBytes, bulkB[h] + stage * (SC * kChunk),
                   SC * kChunk * 2, full);
        }
      }
    } else {
      // Every thread's token-row pieces, then its arrival once they landed.
      copyRowPieces(base + bDst, bSrc + stage * (SC * kChunk / 8));
      cpAsyncArriveOn(full);
    }
#endif
  };
  if constexpr (kWideBulk) {
    static_assert(tileCopies >= 1 && tileCopies <= 32 && L::tiles % (copiers * kWidePair) == 0 && BN % copiers == 0,
                  "the copiers' lanes cover the stage");
    if (threadIdx.x == 0) {
#pragma unroll
      for (int s = 0; s < S; ++s) {
        mbarrierInit(fullBarrier + 8 * s, copiers + (kWideBulkRows ? 0 : kThreads));
        // this CTA's threads, and (fill 3) one arrival per warp of the peer
        mbarrierInit(emptyBarrier + 8 * s, kThreads + (kWideCluster ? kWarps : 0));
      }
      fenceProxyAsync();  // the copy engine sees the initialized barriers
#if __CUDA_ARCH__ >= 900
      if constexpr (kWideCluster) fenceMbarrierInitCluster();  // ... and the peer CTA
#endif
    }
#if __CUDA_ARCH__ >= 900
    if constexpr (kWideCluster) {
      clusterArrive();
      clusterWait();
    } else
#endif
    {
      __syncthreads();
    }
  }

  float acc[RT][NT][4];
  float bank[1][RT][NT][4];
  RowSelection<N, M, RT, NT>::zero(bank, acc);
  const int firstVector = firstChunk / SC;
  PairSelection selection;
  selection.start(w, tiles.first, lane, firstVector, args.k / (SC * kChunk), warpActive);

  unsigned char* const ringEnd = smem + S * L::bytes;
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if constexpr (kWideBulk) {
      if (s < myStages) bulkStage(s, s);
    } else {
      if (s < myStages) loadStage(s, s);
      cpAsyncCommit();
    }
  }

  // The warp's fragments in a stage.
  const int rowWarp = warp % L::rowWarps;
  const int aRead = L::a + rowWarp * RT * L::aTile + lane * 16;
  const int eRead = L::e + (rowWarp * RT * 2 * 32 + lane) * 4;
  const int bRead = L::b + ((warp / L::rowWarps) * NT * 8 + lane % 8) * L::rowBytes + (lane / 8) * 16;
  auto loadChunk = [&](const unsigned char* slot, int c, uint4 (&a)[RT], uint32_t (&b)[NT][4]) {
#pragma unroll
    for (int j = 0; j < RT; ++j) a[j] = *reinterpret_cast<const uint4*>(slot + aRead + j * L::aTile + c * 32 * 16);
#pragma unroll
    for (int t = 0; t < NT; ++t) ldmatrixX4(b[t], slot + bRead + t * 8 * L::rowBytes + c * kChunk * 2);
  };

  // A stage is one vector (V = 128). The fold of a vector runs at the start
  // of the next stage, after its barrier and first fragment loads, so the
  // last mma.sp of the vector complete meanwhile. The copies of the stage
  // S - 1 ahead are issued after the first chunk's mma.sp, so the tensor
  // pipe has work while the copies issue.
  unsigned char* readSlot = smem;
  int writeSlot = S - 1;
  unsigned sink = 0;  // StageCopies::keep
  for (int stage = 0; stage < myStages; ++stage) {
    const int readIndex = int(readSlot - smem) / L::bytes;
    StageCopies copies;
    const bool refillsRing = stage + S - 1 < myStages;
    const bool refills = !kWideBulk && refillsRing;
    // Bulk copies refill the slot every warp released at the end of stage - 1.
    auto bulkRefill = [&] {
      if (refillsRing) {
        if (stage > 0) mbarrierWait(emptyBarrier + 8 * writeSlot, ((stage + S - 1) / S - 1) & 1);
        bulkStage(writeSlot, stage + S - 1);
      }
    };
    auto refill = [&] {
      if constexpr (kWideBulk) {
        bulkRefill();
      } else {
        if (refills) copies = loadStage(writeSlot, stage + S - 1);
        cpAsyncCommit();
      }
    };
    if constexpr (kWideBulk) {
      mbarrierWait(fullBarrier + 8 * readIndex, (stage / S) & 1);
    } else {
      cpAsyncWait<S - 2>();
      __syncthreads();
    }
    if (!warpActive) refill();
    if (warpActive) {
      uint32_t e[2][RT];
#pragma unroll
      for (int p = 0; p < 2; ++p)
#pragma unroll
        for (int j = 0; j < RT; ++j) e[p][j] = *reinterpret_cast<const uint32_t*>(readSlot + eRead + (j * 2 + p) * 32 * 4);
      uint4 a[2][RT];
      uint32_t b[2][NT][4];
      loadChunk(readSlot, 0, a[0], b[0]);
      if (stage > 0) selection.fold<false>(firstVector + stage - 1, bank, acc);
#pragma unroll
      for (int c = 0; c < SC; ++c) {
        if (c + 1 < SC) loadChunk(readSlot, c + 1, a[(c + 1) % 2], b[(c + 1) % 2]);
        if (c % 2 == 0) {
          mmaTokens<T, 0, RT, NT>(acc, a[c % 2], e[c / 2], b[c % 2]);
        } else {
          mmaTokens<T, 1, RT, NT>(acc, a[c % 2], e[c / 2], b[c % 2]);
        }
        if (c == 0) refill();
      }
      if (refills) copies.keep(sink);
    }
    // Every thread releases its own reads of the slot (an arrival releases
    // only its thread's accesses; one lane's arrival after __syncwarp also
    // orders the warp's, but compute-sanitizer's racecheck does not follow
    // that chain and reports the refill as a race).
    if constexpr (kWideBulk) mbarrierArrive(emptyBarrier + 8 * readIndex);
#if __CUDA_ARCH__ >= 900
    if constexpr (kWideCluster) {
      // The peer refills this slot in both CTAs too: one arrival per warp on
      // its barrier, after every lane's reads (__syncwarp orders them).
      __syncwarp();
      if (lane == 0) mbarrierArriveCluster(mapaShared(emptyBarrier + 8 * readIndex, rank ^ 1));
    }
#endif
    writeSlot = readIndex;
    readSlot = readSlot + L::bytes == ringEnd ? smem : readSlot + L::bytes;
  }
  if (warpActive && myStages > 0) selection.fold<true>(firstVector + myStages - 1, bank, acc);
  // Consumes the kept addresses' xor: an impossible value, never taken.
  if (sink == 0xFFFFFFFFu && args.count < 0) args.counters[0] = sink;
  cpAsyncWait<0>();
  // (fill 3) Neither CTA of the pair leaves while the other may still arrive
  // on its barriers: this CTA is done with the pair's here, and waits for
  // the peer before it returns. (Every copy into either CTA was consumed in
  // the loop, so the epilogue may reuse the ring.)
#if __CUDA_ARCH__ >= 900
  auto leavePair = [] {
    if constexpr (kWideCluster) clusterWait();
  };
  if constexpr (kWideCluster) clusterArrive();
#else
  auto leavePair = [] {};
#endif
  // A tile past the tokens (the pair's second when the tiles are odd) stores nothing.
  if (kWideCluster && tokenBase >= args.count) {
    leavePair();
    return;
  }
  RowSelection<N, M, RT, NT>::finish(bank, acc);
  if constexpr (EPILOGUE != kSiluMul) {
    // Straight to global memory unless the splits sum the tile in this
    // launch (storeTile's counters or cluster sum).
    if (args.counters == nullptr && !args.clusterSum) {
      if (warpActive) storeTileDirect<T, RT, BN, WN, EPILOGUE>(args, bank, acc, rowBlock, tokenBase, blockIdx.z, warp, lane);
      leavePair();
      return;
    }
  }
  __syncthreads();
  storeTile<T, N, M, RT, BN, EPILOGUE, 0, WN>(args, bank, acc, smem, warpActive, rowBlock, tokenBase, blockIdx.z,
                                              threadIdx.x);
  leavePair();
}

// ---------------------------------------------------------------------------
// The streaming kernel (decode-sized token tiles)
// ---------------------------------------------------------------------------
//
// At small T the product is bound by the weight's bytes, and every weight
// fragment is used by one warp only — by the lane that loads it. So each
// lane streams its own 16-byte A fragments (and 4-byte metadata words)
// through a private ring of kStreamDepth chunks in shared memory with
// cp.async: it waits only for its own copies (cp.async.wait_group), so the
// weight needs no barrier and kStreamDepth - 1 chunks per warp stay in
// flight. The CTA's token rows for its whole k range are staged in shared memory,
// in a tile of more than half its rows kTokenSegment chunks at a time: the
// first segment before the loop, each next one while the loop runs the one
// before (one barrier per segment); otherwise all at the start.
// Grid: x = token
// tiles (CTAs on the same weight rows run together, so re-reads hit L2),
// y = row blocks of kWarps tiles (half per weight in the SiLU mode),
// z = k splits.
//
// Shared memory:
//   tokens  [chunksPerSplit][BN][32 + 8 pad] bf16      (ldmatrix, conflict-free)
//   A ring  [kWarps][kStreamDepth][32 lanes] 16 B      (lane-private slots)
//   E ring  [kWarps][kStreamDepth / 2][32 lanes] 4 B   (one word per chunk pair)
// then reused for the epilogue tile.

constexpr int kStreamDepth = 8;  // chunks per lane's ring (7 in flight)
// Chunks of token rows staged at a time (L) in a tile of more than half
// its rows: the first segment before the loop, segment s + 1 while the
// loop runs segment s. Issued at step s·L,
// segment s + 1's copies join the lane ring's cp.async group of chunk
// s·L + D - 1, which step s·L + D - 1 waits for: before step (s + 1)·L,
// where the segment is first read, when L >= D.
constexpr int kTokenSegment = 8;
static_assert(kTokenSegment >= kStreamDepth && kTokenSegment % 2 == 0, "token segments vs the lane ring");

// Two CTAs per SM where the banks fit in 128 registers (up to 4 banks).
template <int N, int M>
constexpr int streamMinBlocks() { return M - N + 1 <= 4 ? 2 : 1; }

// A compile-time flag passed to generic lambdas.
template <bool V>
struct Constant {
  static constexpr bool value = V;
};

template <int BN>
struct StreamLayout {
  static constexpr int chunkBytes = BN * kBRowBytes;  // token rows of one chunk
  static constexpr int ringBytes = kWarps * kStreamDepth * 32 * 16 + kWarps * (kStreamDepth / 2) * 32 * 4;
  // Start of the rings after `chunks` chunks of token rows (128-byte aligned).
  static __device__ __host__ constexpr int ringOffset(int chunks) { return (chunks * chunkBytes + 127) / 128 * 128; }
};

// `tokenTile`: the CTA's tile of BN routed tokens (blockIdx.x, or its
// expert's tile in a grouped launch).
template <typename T, int N, int M, int BN, int EPILOGUE>
__device__ __forceinline__ void streamGemm(const GemmArgs& args, int tokenTile) {
  constexpr int BANKS = M - N + 1;
  constexpr int NT = BN / 8;
  constexpr int D = kStreamDepth;
  using Layout = StreamLayout<BN>;
  static_assert(kThreads % (BN * 4) == 0, "token copy assumes whole rows per thread round");
  extern __shared__ __align__(128) unsigned char smem[];

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int rowBlock = blockIdx.y;
  const WarpTiles<EPILOGUE, 1> tiles(args, warp, rowBlock);
  const WeightArgs& w = tiles.weight;
  const int rowTile = tiles.first;
  const bool warpActive = tiles.has();
  const int tokenBase = tokenTile * BN;
  const int chunks = args.k / kChunk;
  const int chunkPairs = (chunks + 1) / 2;
  const int firstChunk = blockIdx.z * args.chunksPerSplit;  // even
  const int lastChunk = min(chunks, firstChunk + args.chunksPerSplit);
  const int myChunks = lastChunk - firstChunk;

  // The lane's rings and its sources.
  unsigned char* aRing = smem + Layout::ringOffset(args.chunksPerSplit) + (warp * D * 32 + lane) * 16;
  unsigned char* eRing = smem + Layout::ringOffset(args.chunksPerSplit) + kWarps * D * 32 * 16 +
                         (warp * (D / 2) * 32 + lane) * 4;
  // Sources of this split: chunk i of the split at aSource + 32 i, its pair
  // at eSource + 32 (i / 2).
  const uint4* aSource = w.a + ((size_t)(warpActive ? rowTile : 0) * chunks + firstChunk) * 32 + lane;
  const uint32_t* eSource = w.e + ((size_t)(warpActive ? rowTile : 0) * chunkPairs + firstChunk / 2) * 32 + lane;
  // Chunk `i` of the split (and, with an even i, its pair's metadata) into
  // ring slot i % D; past the split or for an inactive warp, zero-fill.
  auto issue = [&](int i, auto evenChunk) {
    const bool valid = warpActive && i < myChunks;
    cpAsync16(aRing + (i % D) * 32 * 16, aSource + (valid ? i : 0) * 32, valid);
    if (decltype(evenChunk)::value) cpAsync4(eRing + ((i / 2) % (D / 2)) * 32 * 4, eSource + (valid ? i / 2 : 0) * 32, valid);
    cpAsyncCommit();
  };
#pragma unroll
  for (int i = 0; i < D - 1; ++i) {
    if (i % 2 == 0) {
      issue(i, Constant<true>{});
    } else {
      issue(i, Constant<false>{});
    }
  }

  float acc[1][NT][4];
  float bank[BANKS - 1][1][NT][4];
  RowSelection<N, M, 1, NT>::zero(bank, acc);
  RowSelection<N, M, 1, NT> selection;
  selection.start(w, rowTile, lane, firstChunk, args.vectorChunks, args.k / (args.vectorChunks * kChunk), warpActive);

  // So far only the weight was read. With a programmatic dependent launch
  // (PortableKernel: `overlapsPrevious`) the kernel before this one may
  // still be running: its outputs (the token rows, the index list, this
  // launch's output) are touched only after it has completed.
  allowDependentLaunch();
  gridDependencyWait();

  // Token rows -> shared, kTokenSegment chunks at a time. Each thread
  // always copies the same 16 B piece of the same token row, of every
  // (kThreads / (BN * 4))-th chunk.
  const int piece = threadIdx.x % (BN * 4);
  const bool tokenValid = tokenBase + piece / 4 < args.count;
  const uint16_t* tokenSource = args.x +
                                (size_t)(tokenValid ? args.rows[tokenBase + piece / 4] : 0) * args.k +
                                (size_t)firstChunk * kChunk + (piece % 4) * 8;
  unsigned char* tokenSlot = smem + (piece / 4) * kBRowBytes + (piece % 4) * 16;
  // A tile of at most half its rows stages them at once: the copies are few,
  // and segments would only add barriers (the MoE layer's grouped launches
  // at decode, 1-4 tokens per expert, were 5-7% slower segmented).
  const bool segmented = args.count - tokenBase > BN / 2;
  auto stageTokens = [&](int from) {
    const int to = segmented ? min(myChunks, from + kTokenSegment) : myChunks;
    for (int c = from + threadIdx.x / (BN * 4); c < to; c += kThreads / (BN * 4)) {
      cpAsync16(tokenSlot + c * Layout::chunkBytes, tokenSource + c * kChunk, tokenValid);
    }
  };
  // The first segment is the newest group: waiting for all completes it
  // (and the ring's first D - 1 chunks); the barrier publishes the tokens
  // other threads copied.
  stageTokens(0);
  cpAsyncCommit();
  cpAsyncWait<0>();
  __syncthreads();
  uint32_t metadata[1] = {0};
  // One chunk; splits start on even chunks, so the parity of i is the
  // chunk's and the selector is a constant in each half of the unrolled pair.
  auto step = [&](int i, auto evenChunk) {
    constexpr bool even = decltype(evenChunk)::value;
    cpAsyncWait<D - 2>();  // this lane's chunk i has landed (no barrier: lane-private)
    const uint4 a[1] = {*reinterpret_cast<const uint4*>(aRing + (i % D) * 32 * 16)};
    if (even) metadata[0] = *reinterpret_cast<const uint32_t*>(eRing + ((i / 2) % (D / 2)) * 32 * 4);
    // Refill the slot read last iteration (its values are already in
    // registers); i + D - 1 has the other parity.
    issue(i + D - 1, Constant<!even>{});
    if (warpActive) {
      chunkMma<T, even ? 0 : 1, 1, NT>(acc, a, metadata, smem + i * Layout::chunkBytes, lane);
      selection.afterChunk(bank, acc, i == myChunks - 1);
    }
  };
  if (segmented) {
    for (int i = 0; i < myChunks; i += 2) {
      if (i % kTokenSegment == 0) {
        // Segment i / kTokenSegment landed: each thread's copies of it
        // joined the ring's group of chunk i - kTokenSegment + D - 1, which
        // its step of that chunk waited for; the barrier publishes them.
        // Then the next segment's copies, which join the group of chunk
        // i + D - 1 (issued by this step).
        if (i > 0) __syncthreads();
        stageTokens(i + kTokenSegment);
      }
      step(i, Constant<true>{});
      if (i + 1 < myChunks) step(i + 1, Constant<false>{});
    }
  } else {
    for (int i = 0; i < myChunks; i += 2) {
      step(i, Constant<true>{});
      if (i + 1 < myChunks) step(i + 1, Constant<false>{});
    }
  }
  cpAsyncWait<0>();
  __syncthreads();  // every warp is done with the token rows before the epilogue reuses them
  selection.finish(bank, acc);
  storeTile<T, N, M, 1, BN, EPILOGUE>(args, bank, acc, smem, warpActive, rowBlock, tokenBase, blockIdx.z, threadIdx.x);
}

}  // namespace samoyeds

// ---------------------------------------------------------------------------
// Entry points: extern "C" names, one per (type, pattern, BN, epilogue).
// SAMOYEDS_GEMM(name, T, N, M, BN, EPILOGUE)
// ---------------------------------------------------------------------------

#define SAMOYEDS_GEMM(NAME, T, N, M, BN, EPI)                                                    \
  extern "C" __global__ void __launch_bounds__(samoyeds::kThreads, 2)                            \
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

// Two row tiles per warp with chunk-pair stages (one barrier per pair,
// next chunk's token fragments loaded during this chunk's mma.sp). `_rt2x2`.
#define SAMOYEDS_GEMM_PAIRED(NAME, T, N, M, BN, EPI)                                             \
  extern "C" __global__ void __launch_bounds__(samoyeds::kThreads, 1)                            \
      NAME##_rt2x2(const samoyeds::GemmArgs args) {                                              \
    samoyeds::dualSparseGemm<T, N, M, 2, BN, EPI, 2>(args);                                      \
  }

// Four row tiles per warp, warps 4 x 2 over rows x tokens, 4-chunk
// stages. `_rt4`.
#define SAMOYEDS_GEMM_WIDE(NAME, T, N, M, BN, EPI)                                               \
  extern "C" __global__ void __launch_bounds__(samoyeds::kThreads, 1) SAMOYEDS_RT4_CLUSTER       \
      NAME##_rt4(const samoyeds::GemmArgs args) {                                                \
    samoyeds::wideGemm<T, N, M, BN, EPI>(args);                                                  \
  }

#define SAMOYEDS_GEMM_NARROW_EPILOGUES(PREFIX, T, N, M, BN)               \
  SAMOYEDS_GEMM_NARROW(PREFIX##_store, T, N, M, BN, samoyeds::kStore)     \
  SAMOYEDS_GEMM_NARROW(PREFIX##_silu, T, N, M, BN, samoyeds::kSiluMul)    \
  SAMOYEDS_GEMM_NARROW(PREFIX##_add, T, N, M, BN, samoyeds::kScaleAdd)    \
  SAMOYEDS_GEMM_NARROW(PREFIX##_slots, T, N, M, BN, samoyeds::kScaleSlots) \
  SAMOYEDS_GEMM_PAIRED(PREFIX##_store, T, N, M, BN, samoyeds::kStore)     \
  SAMOYEDS_GEMM_PAIRED(PREFIX##_silu, T, N, M, BN, samoyeds::kSiluMul)    \
  SAMOYEDS_GEMM_PAIRED(PREFIX##_add, T, N, M, BN, samoyeds::kScaleAdd)    \
  SAMOYEDS_GEMM_PAIRED(PREFIX##_slots, T, N, M, BN, samoyeds::kScaleSlots) \
  SAMOYEDS_GEMM_WIDE(PREFIX##_store, T, N, M, BN, samoyeds::kStore)       \
  SAMOYEDS_GEMM_WIDE(PREFIX##_silu, T, N, M, BN, samoyeds::kSiluMul)      \
  SAMOYEDS_GEMM_WIDE(PREFIX##_add, T, N, M, BN, samoyeds::kScaleAdd)      \
  SAMOYEDS_GEMM_WIDE(PREFIX##_slots, T, N, M, BN, samoyeds::kScaleSlots)

// The streaming kernel (decode): 16-token tiles, lane-private weight rings.
// `_stream`; `_stream_grouped` runs every expert of a projection in one
// launch (GroupArgs), its CTAs mapped to experts on the device.
#define SAMOYEDS_GEMM_STREAM(NAME, T, N, M, EPI)                                                 \
  extern "C" __global__ void __launch_bounds__(samoyeds::kThreads, samoyeds::streamMinBlocks<N, M>()) \
      NAME##_stream(const samoyeds::GemmArgs args) {                                             \
    samoyeds::streamGemm<T, N, M, 16, EPI>(args, blockIdx.x);                                    \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(samoyeds::kThreads, samoyeds::streamMinBlocks<N, M>()) \
      NAME##_stream_grouped(const samoyeds::GemmArgs args, const samoyeds::GroupArgs group) {    \
    __shared__ samoyeds::GemmArgs expert;                                                        \
    __shared__ int tokenTile;                                                                    \
    samoyeds::gridDependencyWait(); /* the routing plan may come from the kernel before */       \
    if (threadIdx.x < 32) samoyeds::groupTile<T, 16, EPI>(args, group, blockIdx.x, expert, tokenTile); \
    __syncthreads();                                                                             \
    if (tokenTile < 0) return;                                                                   \
    samoyeds::streamGemm<T, N, M, 16, EPI>(expert, tokenTile);                                   \
  }

#define SAMOYEDS_GEMM_EPILOGUES(PREFIX, T, N, M, BN)               \
  SAMOYEDS_GEMM(PREFIX##_store, T, N, M, BN, samoyeds::kStore)     \
  SAMOYEDS_GEMM(PREFIX##_silu, T, N, M, BN, samoyeds::kSiluMul)    \
  SAMOYEDS_GEMM(PREFIX##_add, T, N, M, BN, samoyeds::kScaleAdd)    \
  SAMOYEDS_GEMM(PREFIX##_slots, T, N, M, BN, samoyeds::kScaleSlots)    \
  SAMOYEDS_GEMM_STREAM(PREFIX##_store, T, N, M, samoyeds::kStore)        \
  SAMOYEDS_GEMM_STREAM(PREFIX##_silu, T, N, M, samoyeds::kSiluMul)       \
  SAMOYEDS_GEMM_STREAM(PREFIX##_add, T, N, M, samoyeds::kScaleAdd)       \
  SAMOYEDS_GEMM_STREAM(PREFIX##_slots, T, N, M, samoyeds::kScaleSlots)

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
