// Dual-side sparse GEMM for Hopper (sm_90a): wgmma.mma_async.sp.
//
//   Y[i, o] = sum_c W[o, c] * X[rows[i], c]     (f32 accumulation)
//
// Same arguments, weights (the portable packing), row-selection fold,
// epilogues and split-k as dual_sparse_gemm.cu (shared through
// samoyeds_gemm.cuh); what differs is the main loop:
//
// * The CTA is two warpgroups (8 warps). Warpgroup c owns condensed rows
//   64c .. 64c+63 of the CTA's 128 (in the SiLU mode warpgroup 0 runs the
//   gate and warpgroup 1 the up weight on the same 64 rows) and all BN tokens.
// * Each k32 chunk is one wgmma.mma_async.sp.m64nBNk32 per warpgroup. The
//   sparse weight is the A operand, from registers: the portable packing's
//   per-lane fragments are exactly wgmma's register fragment of the warp's
//   16 rows, and its metadata words (one per chunk pair, selector 0 for even
//   chunks, 1 for odd) are wgmma.sp's per-warp metadata.
// * The token rows are the B operand, from shared memory through a matrix
//   descriptor: the producer (every thread, cp.async) gathers X[rows[n], k]
//   directly into the 128-byte-swizzled K-major layout wgmma reads (no
//   gathered copy in global memory, no ldmatrix through registers).
// * A stage is four chunks (k128): A fragments, metadata and two B slabs of
//   [BN tokens][64 k]; a four-stage cp.async ring, one barrier per stage.
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
// Orders this thread's generic-proxy shared-memory writes (cp.async) before
// later async-proxy reads (wgmma operands).
__device__ __forceinline__ void fenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

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

template <> struct Wgmma<bf16, 32> {
  template <int SEL>
  static __device__ __forceinline__ void run(float (&d)[4][4], const uint4& a, uint64_t b, uint32_t e) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %22, 0;\n"
        "wgmma.mma_async.sp.sync.aligned.m64n32k32.f32.bf16.bf16 "
        "{" 
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
        "}, {%16, %17, %18, %19}, %20, %21, %23, p, 1, 1, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "l"(b), "r"(e), "r"(1), "n"(SEL));
  }
};

template <> struct Wgmma<fp16, 32> {
  template <int SEL>
  static __device__ __forceinline__ void run(float (&d)[4][4], const uint4& a, uint64_t b, uint32_t e) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %22, 0;\n"
        "wgmma.mma_async.sp.sync.aligned.m64n32k32.f32.f16.f16 "
        "{" 
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
        "}, {%16, %17, %18, %19}, %20, %21, %23, p, 1, 1, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "l"(b), "r"(e), "r"(1), "n"(SEL));
  }
};

template <> struct Wgmma<bf16, 64> {
  template <int SEL>
  static __device__ __forceinline__ void run(float (&d)[8][4], const uint4& a, uint64_t b, uint32_t e) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
        "wgmma.mma_async.sp.sync.aligned.m64n64k32.f32.bf16.bf16 "
        "{" 
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, {%32, %33, %34, %35}, %36, %37, %39, p, 1, 1, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "l"(b), "r"(e), "r"(1), "n"(SEL));
  }
};

template <> struct Wgmma<fp16, 64> {
  template <int SEL>
  static __device__ __forceinline__ void run(float (&d)[8][4], const uint4& a, uint64_t b, uint32_t e) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
        "wgmma.mma_async.sp.sync.aligned.m64n64k32.f32.f16.f16 "
        "{" 
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, {%32, %33, %34, %35}, %36, %37, %39, p, 1, 1, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "l"(b), "r"(e), "r"(1), "n"(SEL));
  }
};

template <> struct Wgmma<bf16, 128> {
  template <int SEL>
  static __device__ __forceinline__ void run(float (&d)[16][4], const uint4& a, uint64_t b, uint32_t e) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %70, 0;\n"
        "wgmma.mma_async.sp.sync.aligned.m64n128k32.f32.bf16.bf16 "
        "{" 
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, {%64, %65, %66, %67}, %68, %69, %71, p, 1, 1, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
          "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
          "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
          "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
          "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "l"(b), "r"(e), "r"(1), "n"(SEL));
  }
};

template <> struct Wgmma<fp16, 128> {
  template <int SEL>
  static __device__ __forceinline__ void run(float (&d)[16][4], const uint4& a, uint64_t b, uint32_t e) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %70, 0;\n"
        "wgmma.mma_async.sp.sync.aligned.m64n128k32.f32.f16.f16 "
        "{" 
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, {%64, %65, %66, %67}, %68, %69, %71, p, 1, 1, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
          "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
          "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
          "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
          "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "l"(b), "r"(e), "r"(1), "n"(SEL));
  }
};

template <typename T, int N, int M, int BN, int EPILOGUE>
__device__ __forceinline__ void wgmmaGemm(const GemmArgs& args) {
  constexpr int BANKS = M - N + 1;
  constexpr int NT = BN / 8;
  using L = Stage<BN>;
  extern __shared__ __align__(1024) unsigned char sharedRaw[];
  // SW128 atoms must start on 1024-byte boundaries (the host asks for 1 KB extra).
  const uint32_t rawAddress = (uint32_t)__cvta_generic_to_shared(sharedRaw);
  unsigned char* smem = sharedRaw + ((1024 - (rawAddress & 1023)) & 1023);
  const uint32_t smemAddress = (uint32_t)__cvta_generic_to_shared(smem);

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const bool silu = EPILOGUE == kSiluMul;
  const WeightArgs& w = (silu && warp >= kWarps / 2) ? args.w1 : args.w0;
  const int warpsPerWeight = silu ? kWarps / 2 : kWarps;
  const int rowTile = blockIdx.x * warpsPerWeight + warp % warpsPerWeight;
  // A warp past the weight's last row tile still takes part in every wgmma
  // (they are warpgroup-wide) on zero-filled fragments; its rows are never stored.
  const bool warpActive = rowTile < (w.mc + kTileRows - 1) / kTileRows;
  const int tokenBase = blockIdx.y * BN;

  const int chunks = args.k / kChunk;
  const int chunkPairs = (chunks + 1) / 2;
  const int firstChunk = blockIdx.z * args.chunksPerSplit;  // even
  const int lastChunk = min(chunks, firstChunk + args.chunksPerSplit);
  const int myChunks = lastChunk - firstChunk;
  const int myStages = (myChunks + kStageChunks - 1) / kStageChunks;

  // ---- producer plan: what this thread copies in every stage ----
  // A: its own lane's fragments of its warp's row tile, the stage's 4 chunks
  // (it reads back exactly what it copied). E: the 2 metadata words.
  const uint4* aSource = w.a + (size_t)(warpActive ? rowTile : 0) * chunks * 32 + lane;
  const uint32_t* eSource = w.e + (size_t)(warpActive ? rowTile : 0) * chunkPairs * 32 + lane;
  const int aOffset = L::a + (warp * kStageChunks * 32 + lane) * 16;
  const int eOffset = L::e + (warp * (kStageChunks / 2) * 32 + lane) * 4;
  // B: 16-byte piece `piece` (of the 16 per token row and stage) of token
  // rows threadIdx.x / 16 + 16 j; 16 consecutive threads read one row's
  // 256 contiguous bytes.
  constexpr int kRowsPerPass = kThreads / 16;
  constexpr int kPasses = BN / kRowsPerPass;
  static_assert(BN % kRowsPerPass == 0, "whole passes of token rows");
  const int piece = threadIdx.x % 16;
  const uint16_t* bSource[kPasses];
  bool bValid[kPasses];
#pragma unroll
  for (int j = 0; j < kPasses; ++j) {
    const int token = tokenBase + threadIdx.x / 16 + j * kRowsPerPass;
    bValid[j] = token < args.count;
    bSource[j] = args.x + (size_t)(bValid[j] ? args.rows[token] : 0) * args.k + piece * 8;
  }
  const int firstRow = threadIdx.x / 16;  // rows firstRow + 16 j share (row % 8)
  const int bOffset = L::b + (piece / 8) * L::slab + firstRow * 128 + (((piece % 8) ^ (firstRow % 8)) * 16);

  // Stage `stage` <- chunks chunk0 .. chunk0 + 3 of the split (past its end: zeros).
  auto loadStage = [&](int stage, int chunk0) {
    unsigned char* base = smem + stage * L::bytes;
#pragma unroll
    for (int c = 0; c < kStageChunks; ++c) {
      const bool inSplit = chunk0 + c < lastChunk;
      cpAsync16(base + aOffset + c * 32 * 16, aSource + (size_t)(inSplit ? chunk0 + c : 0) * 32, warpActive && inSplit);
    }
#pragma unroll
    for (int p = 0; p < kStageChunks / 2; ++p) {
      const bool inSplit = chunk0 + 2 * p < lastChunk;
      cpAsync4(base + eOffset + p * 32 * 4, eSource + (size_t)(inSplit ? chunk0 / 2 + p : 0) * 32, warpActive && inSplit);
    }
    const bool pieceInSplit = chunk0 + piece / 4 < lastChunk;
#pragma unroll
    for (int j = 0; j < kPasses; ++j) {
      cpAsync16(base + bOffset + j * kRowsPerPass * 128, bSource[j] + (size_t)(pieceInSplit ? chunk0 : 0) * kChunk,
                bValid[j] && pieceInSplit);
    }
  };

  float acc[1][NT][4];               // running total over the split (the wgmma accumulator)
  float bank[BANKS - 1][1][NT][4];   // banks 0 .. BANKS-2 (the last is acc minus them)
#pragma unroll
  for (int t = 0; t < NT; ++t)
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      acc[0][t][q] = 0.f;
#pragma unroll
      for (int b = 0; b < BANKS - 1; ++b) bank[b][0][t][q] = 0.f;
    }
  RowSelection<N, M, 1, NT> selection;
  selection.start(w, rowTile, lane, firstChunk, args.vectorChunks, args.k / (args.vectorChunks * kChunk), warpActive);

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < myStages) loadStage(s, firstChunk + s * kStageChunks);
    cpAsyncCommit();
  }

  int readStage = 0;
  int writeStage = kStages - 1;
  for (int i = 0; i < myStages; ++i) {
    cpAsyncWait<kStages - 2>();
    fenceProxyAsync();  // the landed token rows, before wgmma reads them
    __syncthreads();    // ... and everyone else's; also: every wgmma of stage i - 1 is done
    if (i + kStages - 1 < myStages) loadStage(writeStage, firstChunk + (i + kStages - 1) * kStageChunks);
    cpAsyncCommit();

    const unsigned char* base = smem + readStage * L::bytes;
    uint4 a[kStageChunks];
    uint32_t e[kStageChunks / 2];
#pragma unroll
    for (int c = 0; c < kStageChunks; ++c) a[c] = *reinterpret_cast<const uint4*>(base + aOffset + c * 32 * 16);
#pragma unroll
    for (int p = 0; p < kStageChunks / 2; ++p) e[p] = *reinterpret_cast<const uint32_t*>(base + eOffset + p * 32 * 4);
    const uint64_t descriptor = sw128Descriptor(smemAddress + readStage * L::bytes + L::b);
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
    wgmmaCommit();
    wgmmaWait<0>();  // stage i's buffers are free once every warpgroup passes the next barrier
    writeStage = readStage;
    readStage = readStage == kStages - 1 ? 0 : readStage + 1;
  }
  cpAsyncWait<0>();
  __syncthreads();
  selection.finish(bank, acc);
  storeTile<T, N, M, 1, BN, EPILOGUE>(args, bank, acc, smem, warpActive, blockIdx.x, tokenBase, blockIdx.z);
}

}  // namespace sm90
}  // namespace samoyeds

// ---------------------------------------------------------------------------
// Entry points: `<portable name>_sm90`, one per (type, pattern, epilogue);
// the split-k epilogue is the portable family's `_split` (same partials).
// ---------------------------------------------------------------------------

#define SAMOYEDS_SM90(NAME, T, N, M, BN, EPI)                                     \
  extern "C" __global__ void __launch_bounds__(samoyeds::kThreads, 1)             \
      NAME##_sm90(const samoyeds::GemmArgs args) {                                \
    samoyeds::sm90::wgmmaGemm<T, N, M, BN, EPI>(args);                            \
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
