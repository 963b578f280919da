// Dual-side sparse GEMM for Hopper (sm_90a): wgmma.mma_async.sp.
//
//   Y[i, o] = sum_c W[o, c] * X[rows[i], c]     (f32 accumulation)
//
// Same arguments, weights (the portable packing), row-selection fold,
// epilogues and split-k as dual_sparse_gemm.cu (shared through
// samoyeds_gemm.cuh); what differs is the main loop:
//
// * The CTA is three warpgroups: warpgroup 0 produces, warpgroups 1 and 2
//   consume. Consumer warpgroup c owns condensed rows 64c .. 64c+63 of the
//   CTA's 128 (in the SiLU mode the first runs the gate and the second the
//   up weight on the same 64 rows) and all BN tokens.
// * Each k32 chunk is one wgmma.mma_async.sp.m64nBNk32 per consumer
//   warpgroup. The sparse weight is the A operand, from registers: the
//   portable packing's per-lane fragments are exactly wgmma's register
//   fragment of the warp's 16 rows, and its metadata words (one per chunk
//   pair, selector 0 for even chunks, 1 for odd) are wgmma.sp's per-warp
//   metadata.
// * The token rows are the B operand, from shared memory through a matrix
//   descriptor: the producer gathers X[rows[n], k] with cp.async directly
//   into the 128-byte-swizzled K-major layout wgmma reads (no gathered copy
//   in global memory, no ldmatrix through registers).
// * A stage is four chunks (k128): A fragments, metadata and two B slabs of
//   [BN tokens][64 k]; four stages in a ring, each with a full and an empty
//   mbarrier: a consumer waits for data, and for the other consumer only
//   through the empty barriers (they drift at most a few stages apart).
// * The row selection is folded at each vector's end, after wgmma.wait_group
//   0 (the fold reads the running total), exactly as in the portable kernel.
//
// docs/KERNELS.md describes the layout with a worked example.

#include "samoyeds_gemm.cuh"

namespace samoyeds {
namespace sm90 {

constexpr int kStageChunks = 4;  // k32 chunks per stage (one 128-column block)
constexpr int kStages = 4;       // cp.async ring depth (stages)

// One stage in shared memory (every offset a multiple of 1024):
//   B  2 slabs x [BN token rows][128 B]: k 0..63 and 64..127 of the stage,
//      16-byte piece c of row r at r * 128 + ((c ^ (r % 8)) * 16) (SW128)
//   A  [kWarps][kStageChunks][32 lanes] 16 B fragments
//   E  [kWarps][kStageChunks / 2][32 lanes] 4 B metadata words
template <int BN>
struct Stage {
  static constexpr int slab = BN * 128;
  static constexpr int b = 0;
  static constexpr int a = 2 * slab;
  static constexpr int e = a + kWarps * kStageChunks * 32 * 16;
  static constexpr int bytes = e + kWarps * (kStageChunks / 2) * 32 * 4;
  static_assert(bytes % 1024 == 0, "stages keep the 1024-byte alignment of SW128 atoms");
};

// Shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format") of a
// K-major operand in the 128-byte swizzle: start address >> 4 (bits 0-13),
// leading byte offset unused (1), stride byte offset 1024 >> 4 (8-row
// groups, bits 32-45), swizzle mode 1 = 128B (bits 62-63).
__device__ __forceinline__ uint64_t sw128Descriptor(uint32_t sharedAddress) {
  return uint64_t((sharedAddress & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}

// wgmma.fence: registers written by ordinary instructions (A fragments,
// accumulators) are visible to the next wgmma.
__device__ __forceinline__ void wgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// wgmma.mma_async.sp.sync.aligned.m64nBNk32.f32.{bf16,f16}: D += A * B with
// A the warpgroup's 64 x 32 2:4-sparse weight (four registers per thread:
// the mma.sp m16n8k32 A fragment of the warp's 16 rows), B a K-major 32 x BN
// token tile in shared memory (descriptor), e the metadata word and SEL the
// lane pair of each quad that supplies it. D is the m64nBN f32 accumulator:
// d[t][0..3] = rows g and g + 8 of the warp, tokens 8t + 2(lane % 4), +1 —
// the layout of the portable kernel's acc[0][t].
template <typename T, int BN>
struct Wgmma;

// A compile-time int passed to generic lambdas.
template <int V>
struct Int {
  static constexpr int value = V;
};

// One specialization per token tile, instantiated for bf16 and fp16.
#define SAMOYEDS_WGMMA_SP_N32(TYPE, PTX)                                                                                          \
template <> struct Wgmma<TYPE, 32> {                                                                                              \
  template <int SEL>                                                                                                              \
  static __device__ __forceinline__ void run(float (&d)[4][4], const uint4& a, uint64_t b, uint32_t e) {                          \
    asm volatile(                                                                                                                 \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %22, 0;\n"                                                                              \
        "wgmma.mma_async.sp.sync.aligned.m64n32k32.f32." PTX "." PTX " "                                                          \
        "{"                                                                                                                       \
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"                                                    \
        "}, {%16, %17, %18, %19}, %20, %21, %23, p, 1, 1, 0;\n}\n"                                                                \
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])  \
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "l"(b), "r"(e), "r"(1), "n"(SEL));                                              \
  }                                                                                                                               \
};

SAMOYEDS_WGMMA_SP_N32(bf16, "bf16")
SAMOYEDS_WGMMA_SP_N32(fp16, "f16")

#define SAMOYEDS_WGMMA_SP_N64(TYPE, PTX)                                                                                          \
template <> struct Wgmma<TYPE, 64> {                                                                                              \
  template <int SEL>                                                                                                              \
  static __device__ __forceinline__ void run(float (&d)[8][4], const uint4& a, uint64_t b, uint32_t e) {                          \
    asm volatile(                                                                                                                 \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"                                                                              \
        "wgmma.mma_async.sp.sync.aligned.m64n64k32.f32." PTX "." PTX " "                                                          \
        "{"                                                                                                                       \
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"                                                   \
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"                                          \
        "}, {%32, %33, %34, %35}, %36, %37, %39, p, 1, 1, 0;\n}\n"                                                                \
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), \
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])  \
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "l"(b), "r"(e), "r"(1), "n"(SEL));                                              \
  }                                                                                                                               \
};

SAMOYEDS_WGMMA_SP_N64(bf16, "bf16")
SAMOYEDS_WGMMA_SP_N64(fp16, "f16")

#define SAMOYEDS_WGMMA_SP_N128(TYPE, PTX)                                                                                                 \
template <> struct Wgmma<TYPE, 128> {                                                                                                     \
  template <int SEL>                                                                                                                      \
  static __device__ __forceinline__ void run(float (&d)[16][4], const uint4& a, uint64_t b, uint32_t e) {                                 \
    asm volatile(                                                                                                                         \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %70, 0;\n"                                                                                      \
        "wgmma.mma_async.sp.sync.aligned.m64n128k32.f32." PTX "." PTX " "                                                                 \
        "{"                                                                                                                               \
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"                                                           \
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"                                                 \
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"                                                 \
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"                                                  \
        "}, {%64, %65, %66, %67}, %68, %69, %71, p, 1, 1, 0;\n}\n"                                                                        \
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),         \
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),         \
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),         \
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),         \
          "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),         \
          "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), \
          "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), \
          "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])  \
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "l"(b), "r"(e), "r"(1), "n"(SEL));                                                      \
  }                                                                                                                                       \
};

SAMOYEDS_WGMMA_SP_N128(bf16, "bf16")
SAMOYEDS_WGMMA_SP_N128(fp16, "f16")

constexpr int kProducerThreads = 128;                    // warpgroup 0
constexpr int kCTAThreads = kProducerThreads + kThreads;  // + two consumer warpgroups
constexpr int kConsumerBarrier = 1;                       // named barrier of the consumers

// Where the stage barriers live: past both the ring and the epilogue tile.
template <int BN, int N, int M>
struct BarrierLayout {
  static constexpr int ring = kStages * Stage<BN>::bytes;
  static constexpr int tile = EpilogueLayout<1, BN, N, M>::bytes;
  static constexpr int full = ((ring > tile ? ring : tile) + 7) / 8 * 8;  // kStages x 8 B
  static constexpr int empty = full + kStages * 8;                        // kStages x 8 B
  static constexpr int bytes = empty + kStages * 8;
};

// Warp-specialized CTA: warpgroup 0 produces (cp.async of weight fragments,
// metadata and gathered token rows into the ring), warpgroups 1 and 2
// consume (wgmma.sp, fold, epilogue). Stage s has two mbarriers: full[s]
// (the 128 producer threads arrive once their copies of the stage landed)
// and empty[s] (the 256 consumer threads arrive once their wgmmas on it
// completed). Consumers are not tied to each other inside the loop, so one
// warpgroup's fold overlaps the other's wgmmas. `tokenTile`: the CTA's tile
// of args' entries (blockIdx.y, or the grouped launch's tile of its expert).
template <typename T, int N, int M, int BN, int EPILOGUE>
__device__ __forceinline__ void wgmmaGemm(const GemmArgs& args, int tokenTile) {
  constexpr int BANKS = M - N + 1;
  constexpr int NT = BN / 8;
  using L = Stage<BN>;
  using B = BarrierLayout<BN, N, M>;
  extern __shared__ __align__(1024) unsigned char sharedRaw[];
  // SW128 atoms must start on 1024-byte boundaries (the host asks for 1 KB extra).
  const uint32_t rawAddress = (uint32_t)__cvta_generic_to_shared(sharedRaw);
  unsigned char* smem = sharedRaw + ((1024 - (rawAddress & 1023)) & 1023);
  const uint32_t smemAddress = (uint32_t)__cvta_generic_to_shared(smem);
  const uint32_t fullBarrier = smemAddress + B::full;
  const uint32_t emptyBarrier = smemAddress + B::empty;

  const int tokenBase = tokenTile * BN;
  const int chunks = args.k / kChunk;
  const int chunkPairs = (chunks + 1) / 2;
  const int firstChunk = blockIdx.z * args.chunksPerSplit;  // even
  const int lastChunk = min(chunks, firstChunk + args.chunksPerSplit);
  const int myChunks = lastChunk - firstChunk;
  const int myStages = (myChunks + kStageChunks - 1) / kStageChunks;

  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < kStages; ++s) {
      mbarrierInit(fullBarrier + 8 * s, kProducerThreads);
      mbarrierInit(emptyBarrier + 8 * s, kThreads);
    }
  }
  __syncthreads();

  // The role as a value the compiler knows is uniform across each warp
  // (as CUTLASS's canonical_warp_group_idx): with a plain threadIdx test
  // ptxas treats the consumer code as a divergent path and serializes
  // every wgmma (advisory C7519).
  const int warpGroup = __shfl_sync(0xffffffffu, int(threadIdx.x) / kProducerThreads, 0);
  if (warpGroup == 0) {
    // ================= producer =================
    const int p = threadIdx.x;
    // A: for consumer warp j, lane p % 32 of chunk p / 32 of the stage.
    const uint4* aSource[kWarps];
    unsigned aValid = 0;  // bit j: warp j has rows
#pragma unroll
    for (int j = 0; j < kWarps; ++j) {
      const WarpTiles<EPILOGUE, 1> tiles(args, j, blockIdx.x);
      const bool valid = tiles.has();
      aValid |= unsigned(valid) << j;
      aSource[j] = tiles.weight.a + ((size_t)(valid ? tiles.first : 0) * chunks + firstChunk + p / 32) * 32 + p % 32;
    }
    const int aDestination = L::a + ((p / 32) * 32 + p % 32) * 16;  // + j * kStageChunks * 32 * 16
    // E: words q = p + 128 jj: warp 2 jj + p / 64, pair (p / 32) % 2, lane p % 32.
    const int ePair = (p / 32) % 2;
    const uint32_t* eSource[kWarps / 2];
#pragma unroll
    for (int jj = 0; jj < kWarps / 2; ++jj) {
      const int j = 2 * jj + p / 64;
      const WarpTiles<EPILOGUE, 1> tiles(args, j, blockIdx.x);
      eSource[jj] = tiles.weight.e + ((size_t)(((aValid >> j) & 1) ? tiles.first : 0) * chunkPairs + firstChunk / 2 + ePair) * 32 + p % 32;
    }
    const int eDestination = L::e + ((p / 64) * 2 * 32 + ePair * 32 + p % 32) * 4;  // + jj * 4 * 32 * 4
    // B: pieces p % 8 of both 128-byte halves (slabs) of token rows p / 8 + 16 r.
    constexpr int kRowsPerThread = BN / 16;
    uint32_t bOffset[kRowsPerThread];  // element offset of the row's piece in X
    unsigned bValid = 0;
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      const int token = tokenBase + p / 8 + 16 * r;
      const bool valid = token < args.count;
      bValid |= unsigned(valid) << r;
      bOffset[r] = uint32_t(valid ? args.rows[token] : 0) * uint32_t(args.k) + uint32_t(firstChunk * kChunk + (p % 8) * 8);
    }
    const int bDestination = L::b + (p / 8) * 128 + (((p % 8) ^ ((p / 8) % 8)) * 16);

    for (int i = 0; i < myStages; ++i) {
      const int s = i % kStages;
      if (i >= kStages) mbarrierWait(emptyBarrier + 8 * s, ((i / kStages) + 1) & 1);
      unsigned char* base = smem + s * L::bytes;
      const int chunk0 = firstChunk + i * kStageChunks;
      const bool aInSplit = chunk0 + p / 32 < lastChunk;
#pragma unroll
      for (int j = 0; j < kWarps; ++j) {
        const bool valid = ((aValid >> j) & 1) && aInSplit;
        cpAsync16(base + aDestination + j * kStageChunks * 32 * 16, aSource[j] + (valid ? i * kStageChunks * 32 : 0), valid);
      }
      const bool eInSplit = chunk0 + 2 * ePair < lastChunk;
#pragma unroll
      for (int jj = 0; jj < kWarps / 2; ++jj) {
        const bool valid = ((aValid >> (2 * jj + p / 64)) & 1) && eInSplit;
        cpAsync4(base + eDestination + jj * 4 * 32 * 4, eSource[jj] + (valid ? i * (kStageChunks / 2) * 32 : 0), valid);
      }
#pragma unroll
      for (int slab = 0; slab < 2; ++slab) {
        const bool inSplit = chunk0 + slab * 2 + (p % 8) / 4 < lastChunk;
#pragma unroll
        for (int r = 0; r < kRowsPerThread; ++r) {
          const bool valid = ((bValid >> r) & 1) && inSplit;
          cpAsync16(base + bDestination + slab * L::slab + r * 16 * 128,
                    args.x + (valid ? bOffset[r] + uint32_t(i * kStageChunks * kChunk + slab * 64) : 0u), valid);
        }
      }
      cpAsyncCommit();
      // Publish stage i - 2 (its copies have landed; two stages stay in flight).
      if (i >= 2) {
        cpAsyncWait<2>();
        fenceProxyAsync();  // generic-proxy writes, read next by wgmma (async proxy)
        mbarrierArrive(fullBarrier + 8 * ((i - 2) % kStages));
      }
    }
    cpAsyncWait<0>();
    fenceProxyAsync();
    for (int i = max(0, myStages - 2); i < myStages; ++i) mbarrierArrive(fullBarrier + 8 * (i % kStages));
    return;
  }

  // ================= consumers =================
  const int thread = threadIdx.x - kProducerThreads;  // 0 .. kThreads - 1
  const int warp = thread / 32;                        // consumer warp: warpgroup warp / 4, rows (warp % 4) * 16
  const int lane = thread % 32;
  // A warp past the weight's last row tile still takes part in every wgmma
  // (they are warpgroup-wide) on zero-filled fragments; its rows are never stored.
  const WarpTiles<EPILOGUE, 1> tiles(args, warp, blockIdx.x);
  const WeightArgs& w = tiles.weight;
  const int rowTile = tiles.first;
  const bool warpActive = tiles.has();
  const int aOffset = L::a + (warp * kStageChunks * 32 + lane) * 16;
  const int eOffset = L::e + (warp * (kStageChunks / 2) * 32 + lane) * 4;

  float acc[1][NT][4];               // running total over the split (the wgmma accumulator)
  float bank[BANKS - 1][1][NT][4];   // banks 0 .. BANKS-2 (the last is acc minus them)
  RowSelection<N, M, 1, NT>::zero(bank, acc);
  RowSelection<N, M, 1, NT> selection;
  selection.start(w, rowTile, lane, firstChunk, args.vectorChunks, args.k / (args.vectorChunks * kChunk), warpActive);

  for (int i = 0; i < myStages; ++i) {
    const int s = i % kStages;
    mbarrierWait(fullBarrier + 8 * s, (i / kStages) & 1);
    const unsigned char* base = smem + s * L::bytes;
    uint4 a[kStageChunks];
    uint32_t e[kStageChunks / 2];
#pragma unroll
    for (int c = 0; c < kStageChunks; ++c) a[c] = *reinterpret_cast<const uint4*>(base + aOffset + c * 32 * 16);
#pragma unroll
    for (int q = 0; q < kStageChunks / 2; ++q) e[q] = *reinterpret_cast<const uint32_t*>(base + eOffset + q * 32 * 4);
    const uint64_t descriptor = sw128Descriptor(smemAddress + s * L::bytes + L::b);
    wgmmaFence();
    // Chunk C of the stage (a compile-time constant: the selector is an immediate).
    auto chunkStep = [&](auto constant) {
      constexpr int c = decltype(constant)::value;
      const int chunk = i * kStageChunks + c;  // of the split
      if (chunk < myChunks) {                  // uniform over the CTA
        // Chunk c reads slab c / 2 at byte 64 (c % 2) of each 128-byte row.
        const uint64_t b = descriptor + (c / 2) * (L::slab >> 4) + (c % 2) * (64 >> 4);
        Wgmma<T, BN>::template run<c % 2>(acc[0], a[c], b, e[c / 2]);
        const bool last = chunk == myChunks - 1;
        if (selection.foldsAfterChunk(last)) {
          // The fold reads the running total: only after the wgmma completed
          // (lexically inside this branch, so ptxas sees no read in flight).
          wgmmaCommit();
          wgmmaWait<0>();
          selection.afterChunk(bank, acc, last);
        } else {
          selection.skipChunk();
        }
      }
    };
    static_assert(kStageChunks == 4, "four chunk steps below");
    chunkStep(Int<0>{});
    chunkStep(Int<1>{});
    chunkStep(Int<2>{});
    chunkStep(Int<3>{});
    // Drained at every stage's end, unconditionally (a fold may already have
    // drained it): ptxas then sees no wgmma in flight across the loop's back
    // edge or a branch, and neither serializes nor injects waits.
    wgmmaCommit();
    wgmmaWait<0>();
    mbarrierArrive(emptyBarrier + 8 * s);  // this warpgroup is done with stage s
  }
  // Both consumer warpgroups are past every wgmma before the tile reuses the ring.
  tileSync<kConsumerBarrier>();
  selection.finish(bank, acc);
  storeTile<T, N, M, 1, BN, EPILOGUE, kConsumerBarrier>(args, bank, acc, smem, warpActive, blockIdx.x, tokenBase,
                                                         blockIdx.z, thread);
}

}  // namespace sm90
}  // namespace samoyeds

// ---------------------------------------------------------------------------
// Entry points: `<portable name>_sm90`, one per (type, pattern, epilogue);
// split-k partials are summed by each tile's last split (storeTile) or by the
// portable family's `_split` kernel.
// ---------------------------------------------------------------------------

// `_sm90_grouped`: every expert of a projection in one launch (GroupArgs),
// grid.y an upper bound of the experts' token tiles, each CTA mapped to its
// expert on the device (groupTile) as the streaming kernel's grouped launch.
#define SAMOYEDS_SM90(NAME, T, N, M, BN, EPI)                                                   \
  extern "C" __global__ void __launch_bounds__(samoyeds::sm90::kCTAThreads, 1)                  \
      NAME##_sm90(const samoyeds::GemmArgs args) {                                              \
    samoyeds::sm90::wgmmaGemm<T, N, M, BN, EPI>(args, blockIdx.y);                              \
  }                                                                                             \
  extern "C" __global__ void __launch_bounds__(samoyeds::sm90::kCTAThreads, 1)                  \
      NAME##_sm90_grouped(const samoyeds::GemmArgs args, const samoyeds::GroupArgs group) {     \
    __shared__ samoyeds::GemmArgs expert;                                                       \
    __shared__ int tokenTile;                                                                   \
    if (threadIdx.x < 32) samoyeds::groupTile<T, BN, EPI>(args, group, blockIdx.y, expert, tokenTile); \
    __syncthreads();                                                                            \
    if (tokenTile < 0) return;                                                                  \
    samoyeds::sm90::wgmmaGemm<T, N, M, BN, EPI>(expert, tokenTile);                             \
  }

#define SAMOYEDS_SM90_EPILOGUES(PREFIX, T, N, M, BN)               \
  SAMOYEDS_SM90(PREFIX##_store, T, N, M, BN, samoyeds::kStore)     \
  SAMOYEDS_SM90(PREFIX##_silu, T, N, M, BN, samoyeds::kSiluMul)    \
  SAMOYEDS_SM90(PREFIX##_add, T, N, M, BN, samoyeds::kScaleAdd)    \
  SAMOYEDS_SM90(PREFIX##_slots, T, N, M, BN, samoyeds::kScaleSlots)

// Token tiles: the running total plus the kept banks stay within 128
// accumulator registers per thread (1:2: 2 x 64; 1:4, 2:4: 4 x 32 and 3 x 32;
// 1:8: 8 x 16).
SAMOYEDS_SM90_EPILOGUES(samoyeds_bf16_n1m2, samoyeds::bf16, 1, 2, 128)
SAMOYEDS_SM90_EPILOGUES(samoyeds_fp16_n1m2, samoyeds::fp16, 1, 2, 128)
SAMOYEDS_SM90_EPILOGUES(samoyeds_bf16_n1m4, samoyeds::bf16, 1, 4, 64)
SAMOYEDS_SM90_EPILOGUES(samoyeds_fp16_n1m4, samoyeds::fp16, 1, 4, 64)
SAMOYEDS_SM90_EPILOGUES(samoyeds_bf16_n2m4, samoyeds::bf16, 2, 4, 64)
SAMOYEDS_SM90_EPILOGUES(samoyeds_fp16_n2m4, samoyeds::fp16, 2, 4, 64)
SAMOYEDS_SM90_EPILOGUES(samoyeds_bf16_n1m8, samoyeds::bf16, 1, 8, 32)
SAMOYEDS_SM90_EPILOGUES(samoyeds_fp16_n1m8, samoyeds::fp16, 1, 8, 32)
