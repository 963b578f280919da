import Synchronization
import CUDA
import SamoyedsFormat

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A sparse weight on the GPU, packed for `PortableKernel`.
public final class GPUSparseWeight: @unchecked Sendable {
  public let pattern: SparsePattern
  public let dtype: DType
  /// Output rows m.
  public let rows: Int
  /// Input columns k.
  public let columns: Int
  public let condensedRows: Int
  let fragments: DeviceBuffer
  let metadata: DeviceBuffer
  let selection: DeviceBuffer

  /// Uploads a packed weight.
  public init(context: CUDAContext, packed: PackedSparseWeight) throws(CUDAError) {
    pattern = packed.pattern
    dtype = packed.dtype
    rows = packed.rows
    columns = packed.columns
    condensedRows = packed.condensedRows
    fragments = try DeviceBuffer(context: context, copying: packed.fragments)
    metadata = try DeviceBuffer(context: context, copying: packed.metadata)
    selection = try DeviceBuffer(context: context, copying: packed.selection)
  }

  /// Bytes on the device (fragments + metadata + selections).
  public var deviceBytes: Int { fragments.byteCount + metadata.byteCount + selection.byteCount }
}

/// The portable dual-side sparse GEMM (mma.sp m16n8k32, sm_80 and newer).
///
/// `Y[i, o] = Σ_c W[o, c] · X[rows[i], c]` for the `count` token rows the
/// index list names (f32 accumulation), with one of four epilogues. Host
/// contract in CUTLASS's style: `Arguments` → `canImplement` →
/// `workspaceBytes` → `run`.
public enum PortableKernel {
  /// (N, M) the kernel family is instantiated for, with its token tile.
  public static let supportedPatterns: [(n: Int, m: Int, tokenTile: Int)] = [
    (1, 2, 64), (1, 4, 32), (2, 4, 32), (1, 8, 16),
  ]
  /// Threads per CTA, condensed rows per warp, pipeline stages (as in the .cu).
  static let threads = 256
  static let warps = 8
  static let rowsPerWarp = 16
  static let stages = 6

  /// What to do with each result `Y[i, o]`.
  public enum Epilogue {
    /// `output` [count, m] bf16/fp16: Y.
    case store
    /// `output` [count, m]: SiLU(W·x) ⊙ (up·x); `up` has W's shape and pattern.
    case siluMul(up: GPUSparseWeight)
    /// `output` f32 [T, m]: `output[rows[i]] += routeWeights[i] · Y[i]` (atomics).
    case scaleAdd(routeWeights: DeviceBuffer)
    /// `output` f32 [T·topK, m]: `output[slots[i]] = routeWeights[i] · Y[i]`;
    /// `combine` then sums each token's slots in rank order (deterministic).
    case scaleToSlots(routeWeights: DeviceBuffer, slots: DeviceBuffer)

    var name: String {
      switch self {
      case .store: "store"
      case .siluMul: "silu"
      case .scaleAdd: "add"
      case .scaleToSlots: "slots"
      }
    }
  }

  public struct Arguments {
    public var weight: GPUSparseWeight
    public var epilogue: Epilogue
    /// Hidden states [tokens, k], same dtype as the weight.
    public var x: DeviceBuffer
    public var tokens: Int
    /// Int32 [count] rows of `x` to read.
    public var rows: DeviceBuffer
    public var count: Int
    public var output: DeviceBuffer
    /// Split-k factor; nil chooses one from the shape and the GPU.
    public var splits: Int?
    /// The CTA tiling; nil chooses from the shape.
    public var tiling: Tiling?

    public init(
      weight: GPUSparseWeight, epilogue: Epilogue, x: DeviceBuffer, tokens: Int, rows: DeviceBuffer, count: Int,
      output: DeviceBuffer, splits: Int? = nil
    ) {
      self.weight = weight
      self.epilogue = epilogue
      self.x = x
      self.tokens = tokens
      self.rows = rows
      self.count = count
      self.output = output
      self.splits = splits
    }
  }

  /// How a CTA tiles its work (every tiling is checked by `samoyeds verify`).
  public enum Tiling: String, Sendable, CaseIterable {
    /// One 16-row tile per warp, the pattern's full token tile.
    case rt1
    /// Two 16-row tiles per warp: each token fragment feeds two mma.sp.
    case rt2
    /// One tile per warp and half the token tile, at most 128 registers, two
    /// CTAs per SM (1:2 only).
    case bn32
    /// Decode-sized batches: 16-token tiles, each warp streams its weight
    /// fragments from global memory into registers (no shared-memory ring,
    /// no barrier in the loop); the token rows of the CTA's k range are
    /// staged in shared memory once.
    case stream
    /// rt2 with chunk-pair stages: one barrier per two chunks, and the
    /// second chunk's token fragments load while the first's mma.sp issue
    /// (1:2 only).
    case rt2x2
    /// Large token counts (1:2:128 only, k a multiple of 128): rt2x2's CTA tile
    /// with warps laid out 4 over rows × 2 over tokens, each with four 16-row
    /// tiles and 32 tokens (16 mma.sp per chunk on 4 A and 4 token
    /// fragments), stages of 4 chunks (one barrier and one round of copies
    /// per 64 mma.sp of a warp), the next chunk's fragments loaded during
    /// this chunk's mma.sp.
    case rt4
    /// Hopper (sm_90a only): `dual_sparse_gemm_sm90.cu`, wgmma.mma_async.sp
    /// with the weight fragments in registers and the token rows gathered
    /// by cp.async into a 128-byte-swizzled shared tile read by descriptor;
    /// two warpgroups × 64 condensed rows, 4-chunk stages.
    case wgmma

    /// The CTA's 16-row tiles per warp: the CTA covers `warps × rowTiles`
    /// row tiles (rt4: 4 row warps × 4 tiles, the same 16 as rt2 and rt2x2).
    public var rowTiles: Int { self == .rt2 || self == .rt2x2 || self == .rt4 ? 2 : 1 }

    /// Instantiated for the 1:2 family only.
    public var oneOfTwoOnly: Bool { self == .bn32 || self == .rt2x2 || self == .rt4 }

    /// k32 chunks per pipeline stage.
    var chunksPerStage: Int {
      switch self {
      case .rt2x2: 2
      case .rt4, .wgmma: 4
      default: 1
      }
    }

    var suffix: String {
      switch self {
      case .rt1: ""
      case .rt2: "_rt2"
      case .bn32: "_bn32"
      case .stream: "_stream"
      case .rt2x2: "_rt2x2"
      case .rt4: "_rt4"
      case .wgmma: "_sm90"
      }
    }
  }

  /// Token tile of the streaming kernel (every pattern).
  static let streamTokenTile = 16

  /// The pattern's default token tile.
  static func tokenTile(_ pattern: SparsePattern) -> Int? {
    supportedPatterns.first { $0.n == pattern.keptRows && $0.m == pattern.groupRows }?.tokenTile
  }

  /// The token tile of `tiling` for `pattern`, nil when not instantiated.
  static func tokenTile(_ pattern: SparsePattern, _ tiling: Tiling) -> Int? {
    guard let base = tokenTile(pattern) else { return nil }
    if tiling == .stream { return streamTokenTile }
    let oneOfTwo = pattern.keptRows == 1 && pattern.groupRows == 2
    if tiling == .bn32 { return oneOfTwo ? base / 2 : nil }
    if tiling == .rt2x2 || tiling == .rt4 { return oneOfTwo ? base : nil }
    if tiling == .wgmma { return 2 * base }  // wgmma's N: 128 (1:2), 64 (1:4, 2:4), 32 (1:8)
    return base
  }

  /// Dynamic shared memory of a CTA (max of the pipeline and the epilogue
  /// tile), for `rt` 16-row tiles per warp and `cps` chunks per stage — as
  /// laid out in the .cu file (`StageLayout`; six chunks in flight).
  static func sharedBytes(tokenTile bn: Int, pattern: SparsePattern, rowTiles rt: Int, chunksPerStage cps: Int = 1)
    -> Int
  {
    let stage = cps * warps * rt * 32 * 16 + warps * rt * 32 * 4 + cps * bn * (32 + 8) * 2
    let epilogue = bn * (warps * rt * rowsPerWarp * pattern.groupRows / pattern.keptRows + 4) * 4
    return max(stage * (stages / cps), epilogue)
  }

  /// Stages of the Hopper kernel's ring (`sm90::kStages`).
  static let wgmmaStages = 4

  /// Threads of a Hopper CTA: a producer warpgroup and two consumer warpgroups.
  static let wgmmaThreads = 384

  /// Dynamic shared memory of a Hopper CTA (`sm90::Stage`, `BarrierLayout`):
  /// per stage two 128-byte-swizzled slabs of token rows, the A fragments
  /// and metadata of 4 chunks; or the epilogue tile if larger; then a full
  /// and an empty mbarrier per stage; plus 1 KB to align the swizzle atoms.
  static func wgmmaSharedBytes(tokenTile bn: Int, pattern: SparsePattern) -> Int {
    let stage = 2 * bn * 128 + warps * 4 * 32 * 16 + warps * 2 * 32 * 4
    let epilogue = bn * (warps * rowsPerWarp * pattern.groupRows / pattern.keptRows + 4) * 4
    return (max(stage * wgmmaStages, epilogue) + 7) / 8 * 8 + 2 * wgmmaStages * 8 + 1024
  }

  /// Stages of the rt4 kernel's ring (`kWideStages`).
  static let wideStages = 3

  /// Dynamic shared memory of an rt4 CTA (`WideLayout`): per stage the A
  /// fragments of 4 chunks for 16 row tiles, their 2 pairs' metadata and
  /// the token rows (128 k + 8 pad, bf16); or the epilogue tile if larger.
  static func wideSharedBytes(tokenTile bn: Int, pattern: SparsePattern) -> Int {
    let tiles = warps * Tiling.rt4.rowTiles
    let stage = 4 * tiles * 32 * 16 + tiles * 2 * 32 * 4 + bn * (128 + 8) * 2
    let epilogue = bn * (tiles * rowsPerWarp * pattern.groupRows / pattern.keptRows + 4) * 4
    return max(stage * wideStages, epilogue)
  }

  /// Dynamic shared memory of a CTA of `tiling` (not the streaming one).
  static func sharedBytes(_ tiling: Tiling, tokenTile bn: Int, pattern: SparsePattern) -> Int {
    switch tiling {
    case .wgmma: wgmmaSharedBytes(tokenTile: bn, pattern: pattern)
    case .rt4: wideSharedBytes(tokenTile: bn, pattern: pattern)
    default:
      sharedBytes(tokenTile: bn, pattern: pattern, rowTiles: tiling.rowTiles, chunksPerStage: tiling.chunksPerStage)
    }
  }

  /// Chunks in each lane's ring of the streaming kernel (`kStreamDepth`).
  static let streamDepth = 8

  /// Bytes of the streaming kernel's lane rings: A fragments (16 B) per
  /// chunk and metadata words (4 B) per chunk pair, for every lane.
  static var streamRingBytes: Int { warps * streamDepth * 32 * 16 + warps * (streamDepth / 2) * 32 * 4 }

  /// Dynamic shared memory of a streaming CTA: its token rows for
  /// `chunks` k32 chunks (80-byte rows, padded to 128 bytes), then the
  /// rings; or the epilogue tile if larger.
  static func streamSharedBytes(chunks: Int, pattern: SparsePattern) -> Int {
    let tokens = (chunks * streamTokenTile * (32 + 8) * 2 + 127) / 128 * 128
    let epilogue = streamTokenTile * (warps * rowsPerWarp * pattern.groupRows / pattern.keptRows + 4) * 4
    return max(tokens + streamRingBytes, epilogue)
  }

  /// The most k32 chunks one streaming CTA stages, so that two CTAs share
  /// an SM (an even number: metadata comes in chunk pairs).
  /// `reserved`: the kernel's static shared memory (the grouped entry's).
  static func streamMaxChunks(context: CUDAContext, reserved: Int = 0) -> Int {
    let perCTA = min(context.maxSharedMemoryPerBlockOptin, context.maxSharedMemoryPerMultiprocessor / 2 - 1024) - reserved
    let chunks = (perCTA - streamRingBytes - 128) / (streamTokenTile * (32 + 8) * 2)
    return max(2, chunks - chunks % 2)
  }

  /// Whether `tiling` exists for the pattern and fits the device's shared memory.
  public static func isAvailable(_ tiling: Tiling, _ a: Arguments, context: CUDAContext) -> Bool {
    isAvailable(tiling, pattern: a.weight.pattern, tokens: a.tokens, columns: a.weight.columns, context: context)
  }

  /// `isAvailable` on plain numbers: x has `tokens` rows of `columns`;
  /// `reservedShared`: the entry point's static shared memory (a grouped
  /// launch's narrowed arguments).
  static func isAvailable(
    _ tiling: Tiling, pattern: SparsePattern, tokens: Int, columns: Int, reservedShared: Int = 0,
    context: CUDAContext
  ) -> Bool {
    guard let bn = tokenTile(pattern, tiling) else { return false }
    // wgmma.mma_async.sp exists on sm_90a only (not on sm_100 and later).
    if tiling == .wgmma && context.architecture != "sm_90a" { return false }
    // Its producer addresses X with 32-bit element offsets.
    if tiling == .wgmma && tokens * columns >= 1 << 32 { return false }
    // Its stages are 4 chunks (128 k), one vector each.
    if tiling == .rt4 && (columns % 128 != 0 || pattern.vectorLength != 128) { return false }
    let limit = context.maxSharedMemoryPerBlockOptin - reservedShared
    if tiling == .stream { return streamSharedBytes(chunks: 2, pattern: pattern) <= limit }
    return sharedBytes(tiling, tokenTile: bn, pattern: pattern) <= limit
  }

  /// Warps of a CTA that work on one weight: all, or half in the SiLU mode
  /// (the other half runs the up projection on the same tokens).
  static func warpsPerWeightTile(_ epilogue: Epilogue) -> Int {
    if case .siluMul = epilogue { return warps / 2 }
    return warps
  }

  /// The tiling `run` uses: the forced one, else the active tuning table's
  /// choice for this device, dtype, pattern, shape and token bucket
  /// (`KernelTuning`, written by `samoyeds tune`), else the fastest measured
  /// for the shape class and token count on an H200 (`samoyeds bench kernel`
  /// times every tiling side by side; docs/bench/portable-kernel-h200.txt):
  ///
  /// | weight | T <= 16 | T <= 32 | T <= 64 | T <= 256 | T <= 1024 | larger |
  /// |---|---|---|---|---|---|---|
  /// | small (<= 4M elements) | stream | stream | stream | stream | rt4, bn32 | rt4 |
  /// | large, m >= k | stream | rt4, bn32, stream | rt4, bn32 | rt4, rt1 | rt4 | rt4 |
  /// | large, m < k | stream | rt4, bn32, stream | rt4, rt1 | rt4 | rt4 | rt4 |
  ///
  /// A tiling that is not available for the pattern (bn32 and rt2x2: 1:2
  /// only; rt4: 1:2:128 with k a multiple of 128) or does not fit the
  /// device falls back to the next in its cell, then rt2x2, rt2, rt1. On
  /// sm_90a, `wgmma` replaces the table above 64 tokens (256 for small
  /// weights).
  public static func tiling(_ a: Arguments, context: CUDAContext) -> Tiling {
    if let forced = a.tiling { return forced }
    // (Every launch asks, some twice: with no table, no key is built.)
    let tuning = KernelTuning.active
    if !tuning.entries.isEmpty, let tuned = tuning.tiling(for: tuningKey(a, context: context)),
      isAvailable(tuned, a, context: context)
    {
      return tuned
    }
    let small = a.weight.rows * a.weight.columns <= 4 << 20
    // Hopper: the wgmma kernel from 65 tokens for large weights, from 257 for
    // small ones. Session eleven, H200, medians of 3 interleaved runs of
    // `bench kernel` (devrun r16; docs/KERNELS.md, "Choosing the portable
    // tiling at small T"): at T = 33-64 rt4 ties or beats wgmma (14336x4096
    // T = 48 / 64: 23.8 / 25.8 us against 26.0 / 26.6; 4096x14336 23.3 /
    // 25.5 against 24.6 / 25.0); at T = 128 wgmma is ahead (28.9 against
    // 36.2). 1408x2048 at T = 256: stream 0.0175 ms, wgmma 0.020.
    if a.count > (small ? 256 : 64) && isAvailable(.wgmma, a, context: context) { return .wgmma }
    let tall = a.weight.rows >= a.weight.columns
    let preferred: [Tiling]
    switch a.count {
    // Large weights: stream to T = 16, rt4 from 17 (same runs: 14336x4096
    // T = 16 stream 19.7 us, rt4 29.4; T = 24 / 32 rt4 21.8 / 22.5 us,
    // stream 29.4 / 30.2, bn32 26.6 / 27.4; 4096x14336 T = 24 / 32 rt4
    // 20.9 / 21.5, stream 27.0 / 27.3). Small weights: stream to T = 256
    // (with its splits, below: 1408x2048 and 2048x1408 at T = 16-64 took
    // 8.6-10.1 us at 4 splits, where bn32 took 9.9-12.7).
    case ...16: preferred = [.stream]
    case ...32: preferred = small ? [.stream] : [.rt4, .bn32, .stream]
    case ...64: preferred = small ? [.stream] : [.rt4, tall ? .bn32 : .rt1]
    case ...256: preferred = small ? [.stream] : [.rt4, tall ? .rt1 : .rt2x2]
    // Small weights at T = 257-1024: rt4 since its direct epilogue (session
    // eight, H200, T = 1024: 1408x2048 rt4 0.0303 ms, bn32 0.0350;
    // 2048x1408 0.0235 against 0.0257); bn32 where rt4 is not available.
    case ...1024: preferred = small ? [.rt4, .bn32] : [.rt4]
    default: preferred = [.rt4]
    }
    for candidate in preferred + [.rt2x2, .rt2, .rt1] where isAvailable(candidate, a, context: context) {
      return candidate
    }
    return .rt1
  }

  /// The key of `a` in a tuning table (`KernelTuning`).
  public static func tuningKey(_ a: Arguments, context: CUDAContext) -> KernelTuning.Key {
    KernelTuning.Key(
      device: context.name, architecture: context.architecture, dtype: "\(a.weight.dtype)",
      pattern: a.weight.pattern.description, m: a.weight.rows, k: a.weight.columns, tokens: a.count)
  }

  /// Throws `invalidArgument` naming the first thing the kernel cannot do.
  public static func canImplement(_ a: Arguments) throws(CUDAError) {
    let w = a.weight
    guard tokenTile(w.pattern) != nil else {
      throw .invalidArgument(
        "pattern \(w.pattern) has no GPU kernel; supported N:M are \(supportedPatterns.map { "\($0.n):\($0.m)" }.joined(separator: ", "))"
      )
    }
    guard w.dtype == .bf16 || w.dtype == .fp16 else { throw .invalidArgument("weights must be bf16 or fp16") }
    guard a.count >= 0, a.tokens >= 0 else { throw .invalidArgument("negative token count") }
    guard a.x.byteCount >= a.tokens * w.columns * 2 else {
      throw .invalidArgument("x holds \(a.x.byteCount) bytes, [\(a.tokens), \(w.columns)] needs \(a.tokens * w.columns * 2)")
    }
    guard a.rows.byteCount >= a.count * 4 else { throw .invalidArgument("rows holds fewer than \(a.count) indices") }
    let outputElements: Int
    switch a.epilogue {
    case .store: outputElements = a.count * w.rows * 2
    case .siluMul(let up):
      guard up.rows == w.rows, up.columns == w.columns, up.pattern == w.pattern, up.dtype == w.dtype else {
        throw .invalidArgument("gate and up weights differ in shape, pattern or dtype")
      }
      outputElements = a.count * w.rows * 2
    case .scaleAdd(let routeWeights):
      guard routeWeights.byteCount >= a.count * 4 else { throw .invalidArgument("fewer routing weights than rows") }
      outputElements = a.tokens * w.rows * 4
    case .scaleToSlots(let routeWeights, let slots):
      guard routeWeights.byteCount >= a.count * 4, slots.byteCount >= a.count * 4 else {
        throw .invalidArgument("fewer routing weights or slots than rows")
      }
      outputElements = a.count * w.rows * 4  // at least; slots index a [T*topK, m] buffer
    }
    guard a.output.byteCount >= outputElements else {
      throw .invalidArgument("output holds \(a.output.byteCount) bytes, needs at least \(outputElements)")
    }
    if let splits = a.splits, splits < 1 { throw .invalidArgument("splits must be >= 1") }
  }

  /// The split-k factor `run` uses: enough CTAs to fill the GPU twice when
  /// the tile grid is small, bounded so partials stay small next to the
  /// weight, and a whole number of chunk pairs per split.
  ///
  /// The streaming tiling is bound by the weight's bytes: it splits until
  /// the grid fills one wave of two CTAs per SM (not more), keeps the partials'
  /// write + read traffic within half the weight's bytes, and never stages
  /// more than `maxChunksPerSplit` chunks of token rows in shared memory.
  public static func plan(
    _ a: Arguments, multiprocessors: Int, tiling: Tiling = .rt1, maxChunksPerSplit: Int = .max
  ) -> (splits: Int, chunksPerSplit: Int) {
    let w = a.weight
    return splitPlan(
      SplitProblem(
        pattern: w.pattern, rows: w.rows, columns: w.columns, condensedRows: w.condensedRows,
        weightBytes: w.deviceBytes, count: a.count, twoWeights: warpsPerWeightTile(a.epilogue) != warps,
        splits: a.splits),
      multiprocessors: multiprocessors, tiling: tiling, maxChunksPerSplit: maxChunksPerSplit)
  }

  /// What `splitPlan` needs to know of a launch (no device objects, so the
  /// planning is testable anywhere).
  public struct SplitProblem: Sendable {
    /// The weight's pattern.
    public var pattern: SparsePattern
    /// Output rows m.
    public var rows: Int
    /// Input columns k.
    public var columns: Int
    /// Condensed rows (m / M · N).
    public var condensedRows: Int
    /// The packed weight's bytes on the device (the partials' budget).
    public var weightBytes: Int
    /// Routed token rows T.
    public var count: Int
    /// The SiLU mode: half the warps run the up projection.
    public var twoWeights: Bool
    /// A forced split-k factor.
    public var splits: Int?

    public init(
      pattern: SparsePattern, rows: Int, columns: Int, condensedRows: Int, weightBytes: Int, count: Int,
      twoWeights: Bool, splits: Int?
    ) {
      self.pattern = pattern
      self.rows = rows
      self.columns = columns
      self.condensedRows = condensedRows
      self.weightBytes = weightBytes
      self.count = count
      self.twoWeights = twoWeights
      self.splits = splits
    }
  }

  /// The least weight bytes a streaming CTA (one row block, one split)
  /// streams when `splitPlan` chooses the split. Measured on an H200
  /// (`bench kernel --splits`, 1408×2048 and 2048×1408, T = 1): 32 and 22
  /// splits took 11.2 and 10.1 µs, 4 splits 8.2 and 7.7 µs (the Mixtral
  /// shapes stream 128-148 KB per CTA and keep their splits). Session
  /// eleven (medians of 3 runs, T = 16-64): 2048×1408 took 8.6-9.8 µs at 4
  /// splits (51 KB per CTA) and 10.2-11.5 at 3 (the 64 KB minimum then),
  /// hence 48 KB.
  /// `SAMOYEDS_STREAM_SPLIT_BYTES` overrides it (0: no limit).
  static let streamMinimumSplitBytes: Int = {
    Switches.integer("SAMOYEDS_STREAM_SPLIT_BYTES", atLeast: 0) ?? 48 << 10
  }()

  /// `plan` on plain numbers.
  public static func splitPlan(
    _ p: SplitProblem, multiprocessors: Int, tiling: Tiling, maxChunksPerSplit: Int = .max
  ) -> (splits: Int, chunksPerSplit: Int) {
    let chunks = p.columns / 32
    guard let bn = tokenTile(p.pattern, tiling), chunks > 0 else { return (1, max(2, chunks + chunks % 2)) }
    let warpsPerWeight = (p.twoWeights ? warps / 2 : warps) * tiling.rowTiles
    let rowTiles = (p.condensedRows + 15) / 16
    let rowBlocks = (rowTiles + warpsPerWeight - 1) / warpsPerWeight
    let ctas = max(1, rowBlocks * ((p.count + bn - 1) / bn))
    let partialBytesPerSplit = (p.twoWeights ? 2 : 1) * p.count * p.rows * 4
    var splits = p.splits ?? 1
    if p.splits == nil && tiling == .stream {
      // At most one wave of two CTAs per SM (a second, partial wave would
      // double the time of a bandwidth-bound kernel), and at least
      // `streamMinimumSplitBytes` of weight per row block and split: a
      // small weight is latency-bound, and each split adds a staging, a
      // pipeline fill and its partials' sum.
      // The partials stay in L2 at these sizes, so they may reach the
      // weight's bytes (or 4 MB): 1408x2048 at T = 48 / 64 took 9.7 / 9.8 us
      // at 4 splits (partials 0.7-0.9x the weight) and 13.2 / 12.3 at the
      // one or two the earlier quarter-of-the-weight budget allowed.
      splits = max(1, 2 * multiprocessors / ctas)
      splits = min(
        splits, max(1, max(p.weightBytes, 4 << 20) / max(partialBytesPerSplit, 1)), max(1, chunks / 2),
        max(1, p.weightBytes / max(rowBlocks * streamMinimumSplitBytes, 1)))
    } else if p.splits == nil && (tiling == .wgmma || tiling == .rt4) && ctas < multiprocessors {
      // One CTA per SM: split to fill one wave, not more. For rt4 (H200,
      // `bench kernel --splits`, T = 64-256) the best split was the one
      // wave's every time: 14336x4096 at T = 64 / 128 / 256 took 4 / 2 / 1
      // splits (30.6 / 48.3 / 61.0 us), the two-wave rule's 8 / 4 / 2
      // took 43.1 / 56.1 / 91.8 us.
      let budget = max(p.weightBytes, 4 << 20)
      splits = max(1, min(multiprocessors / ctas, budget / max(partialBytesPerSplit, 1), chunks / 4))
    } else if p.splits == nil && ctas < multiprocessors {
      splits = (2 * multiprocessors + ctas - 1) / ctas
      // Partials written and read back per split; keep their traffic within
      // the weight's own bytes (the floor at small T).
      let budget = max(p.weightBytes, 4 << 20)
      splits = max(1, min(splits, budget / max(partialBytesPerSplit, 1), chunks / max(2, tiling.chunksPerStage)))
    }
    if chunks > maxChunksPerSplit {
      splits = max(splits, (chunks + maxChunksPerSplit - 1) / maxChunksPerSplit)
    }
    var perSplit = (chunks + splits - 1) / splits
    // Whole chunk pairs (metadata); for wgmma whole 4-chunk stages where
    // that stays within the limit; for rt4 always (it has no partial stage).
    let pairs = (perSplit + 1) / 2 * 2
    let stages = (perSplit + 3) / 4 * 4
    perSplit = (tiling == .wgmma && stages <= maxChunksPerSplit) || tiling == .rt4 ? stages : pairs
    perSplit = max(perSplit, 2)
    return ((chunks + perSplit - 1) / perSplit, perSplit)
  }

  /// `plan` on this device.
  public static func plan(_ a: Arguments, context: CUDAContext, tiling: Tiling) -> (splits: Int, chunksPerSplit: Int) {
    plan(
      a, multiprocessors: context.multiprocessorCount, tiling: tiling,
      maxChunksPerSplit: tiling == .stream ? streamMaxChunks(context: context) : .max)
  }

  /// Scratch bytes `run` needs with split-k: `splitCounterBytes` of arrival
  /// counters (one UInt32 per output tile, for launches that sum their
  /// splits themselves), then the partials f32 [splits][2][count][m]. The
  /// counters must be zero when the workspace is first used
  /// (`DeviceBuffer.fill(byte: 0, on:)` after allocating); every launch
  /// leaves them zero (each tile's last split resets its own), so launches
  /// in stream order can share one workspace.
  public static func workspaceBytes(_ a: Arguments, context: CUDAContext) -> Int {
    let (splits, _) = plan(a, context: context, tiling: tiling(a, context: context))
    return splitWorkspaceBytes(a, splits: splits)
  }

  /// The workspace of a launch with `splits` splits: counters, then partials.
  static func splitWorkspaceBytes(_ a: Arguments, splits: Int) -> Int {
    splits > 1 ? splitCounterBytes + splits * 2 * a.count * a.weight.rows * 4 : 0
  }

  /// Output tiles a launch that sums its own splits may have.
  static let splitCounterCapacity = 32768

  /// The counters' bytes at the start of a split-k workspace (fixed, so
  /// that launches of any shape find theirs zero).
  static let splitCounterBytes = splitCounterCapacity * 4

  /// Largest routed token count whose split-k launches may sum their own
  /// partials (each tile's last split), instead of a second `_split`
  /// launch. `SAMOYEDS_SPLIT_IN_KERNEL_TOKENS` overrides it (0: never).
  static let splitInKernelTokens: Int = {
    Switches.integer("SAMOYEDS_SPLIT_IN_KERNEL_TOKENS", atLeast: 0) ?? 64
  }()

  /// Whether a split-k launch sums its own partials. The last split of a
  /// tile sums them alone, about ceil(tokens of the tile / 2) x splits
  /// dependent loads per thread; the `_split` launch it saves costs about
  /// 2-3 us. Measured on an H200 (docs/KERNELS.md, "Split-k"): up to 25%
  /// faster at T = 1 and 16 with up to 32 loads per thread; 11% slower at
  /// T = 16 with 16 splits (128 loads); slower at T = 64 on tiles of 32 or
  /// more tokens. A streaming tile holds 16 tokens whatever T, so its sum
  /// stays as short at T = 17-64 (session eleven: docs/KERNELS.md).
  static func sumsSplitsInKernel(count: Int, splits: Int, tiles: Int, tiling: Tiling) -> Bool {
    // The other tilings stop at T = 16, so a tile holds min(T, 16) tokens either way.
    let limit = tiling == .stream ? splitInKernelTokens : min(splitInKernelTokens, streamTokenTile)
    return splits > 1 && count <= limit && (min(count, streamTokenTile) + 1) / 2 * splits <= 40
      && tiles <= splitCounterCapacity
  }

  /// Most k splits one cluster sums through distributed shared memory
  /// (`sumsSplitsInCluster`); `SAMOYEDS_CLUSTER_SUM_SPLITS` overrides it
  /// (0 or 1: never; at most 16, past 8 the non-portable cluster sizes).
  static let clusterSumSplits: Int = {
    Switches.integer("SAMOYEDS_CLUSTER_SUM_SPLITS", atLeast: 0).map { min($0, 16) } ?? 8
  }()

  /// Whether a split-k launch of `tiling` sums its splits through
  /// distributed shared memory: the splits of an output tile run as one
  /// cluster (shape (1, 1, splits)) and, once each has its f32 tile in
  /// shared memory, sum the tile together (docs/KERNELS.md, "Split-k").
  /// No partials, counters or second launch. The streaming and rt4 tilings
  /// (all of their threads reach the epilogue), on GPUs that launch
  /// clusters (`CUDAFunction.acceptsLaunchAttributes`: sm_90 and newer).
  static func sumsSplitsInCluster(splits: Int, tiling: Tiling, acceptsLaunchAttributes: Bool) -> Bool {
    splits > 1 && splits <= clusterSumSplits && (tiling == .stream || tiling == .rt4) && acceptsLaunchAttributes
  }

  /// Whether streaming launches start while the kernel before them in
  /// their stream still runs (programmatic dependent launch, sm_90 and
  /// newer): they stream their first weight chunks, then wait for it
  /// (`griddepcontrol.wait`) before reading tokens or writing anything.
  /// `SAMOYEDS_PDL=0` turns it off.
  static let overlapsPrevious: Bool = ProcessInfo.processInfo.environment["SAMOYEDS_PDL"] != "0"

  /// Clusters of each size that run at once, per kernel and shared memory
  /// (`CUDAFunction.maxActiveClusters`, asked once).
  private static let activeClusters = Mutex<[String: Int]>([:])

  /// Whether `ctas` CTAs in clusters of `splits` all run at once. A cluster
  /// needs all its CTAs' SMs in one GPC free together, so clusters of CTAs
  /// that fill an SM (rt4) can take more waves than the CTAs alone: rt4 at
  /// 4096x14336, T = 256, 128 CTAs in clusters of 4, took 0.093 ms against
  /// 0.052 without (H200). A cluster sum is used only when the grid fits.
  static func clustersFit(
    kernel: CUDAFunction, ctas: Int, splits: Int, block: (Int, Int, Int), sharedMemoryBytes: Int
  ) -> Bool {
    let key = "\(kernel.name) \(sharedMemoryBytes) \(splits)"
    let known = activeClusters.withLock { $0[key] }
    let clusters =
      known
      ?? {
        let count =
          kernel.maxActiveClusters(cluster: (1, 1, splits), block: block, sharedMemoryBytes: sharedMemoryBytes) ?? 0
        activeClusters.withLock { $0[key] = count }
        return count
      }()
    return clusters * splits >= ctas
  }

  /// The launch attributes of a `tiling` launch with `splits` splits on
  /// `grid`, or nil for a plain launch.
  static func launchAttributes(
    splits: Int, tiling: Tiling, kernel: CUDAFunction, grid: (Int, Int, Int), block: (Int, Int, Int),
    sharedMemoryBytes: Int
  ) -> CUDAFunction.LaunchAttributes? {
    guard kernel.acceptsLaunchAttributes else { return nil }
    let cluster =
      sumsSplitsInCluster(splits: splits, tiling: tiling, acceptsLaunchAttributes: true)
      && clustersFit(
        kernel: kernel, ctas: grid.0 * grid.1 * grid.2, splits: splits, block: block,
        sharedMemoryBytes: sharedMemoryBytes)
    let overlaps = overlapsPrevious && tiling == .stream
    guard cluster || overlaps else { return nil }
    return CUDAFunction.LaunchAttributes(cluster: cluster ? (1, 1, splits) : nil, overlapsPrevious: overlaps)
  }

  /// Launches `kernel` with `attributes` (cuLaunchKernelEx), or plainly.
  static func launch(
    _ kernel: CUDAFunction, grid: (Int, Int, Int), block: (Int, Int, Int), sharedMemoryBytes: Int,
    attributes: CUDAFunction.LaunchAttributes?, stream: CUDAStream, arguments: KernelArguments
  ) throws(CUDAError) {
    guard let attributes else {
      try kernel.launch(
        grid: grid, block: block, sharedMemoryBytes: sharedMemoryBytes, stream: stream, arguments: arguments)
      return
    }
    if let cluster = attributes.cluster, cluster.0 * cluster.1 * cluster.2 > 8 { try kernel.allowNonPortableClusterSize() }
    try kernel.launch(
      grid: grid, block: block, sharedMemoryBytes: sharedMemoryBytes, attributes: attributes, stream: stream,
      arguments: arguments)
  }

  /// Launches on `stream`. `workspace` must hold `workspaceBytes` bytes.
  public static func run(
    _ a: Arguments, workspace: DeviceBuffer?, library: KernelLibrary, stream: CUDAStream
  ) throws(CUDAError) {
    try canImplement(a)
    if a.count == 0 { return }
    let w = a.weight
    let tiling = tiling(a, context: library.context)
    guard let bn = tokenTile(w.pattern, tiling) else {
      throw .invalidArgument("tiling \(tiling) is not instantiated for pattern \(w.pattern)")
    }
    guard isAvailable(tiling, a, context: library.context) else {
      throw .invalidArgument(
        "tiling \(tiling) is not available for \(w.rows)x\(w.columns) \(w.pattern), \(a.tokens) tokens on \(library.architecture)")
    }
    let rt = tiling.rowTiles
    let (splits, chunksPerSplit) = plan(a, context: library.context, tiling: tiling)
    let name = "samoyeds_\(w.dtype)_n\(w.pattern.keptRows)m\(w.pattern.groupRows)_\(a.epilogue.name)"
    let kernel = try library.function(name + tiling.suffix)
    let shared =
      tiling == .stream
      ? streamSharedBytes(chunks: chunksPerSplit, pattern: w.pattern)
      : sharedBytes(tiling, tokenTile: bn, pattern: w.pattern)
    guard shared <= library.context.maxSharedMemoryPerBlockOptin else {
      throw .invalidArgument("\(shared) bytes of shared memory exceed the device's \(library.context.maxSharedMemoryPerBlockOptin)")
    }
    try kernel.setMaxDynamicSharedMemory(shared)
    let tilesPerCTA = warpsPerWeightTile(a.epilogue) * rt
    let rowTiles = (w.condensedRows + 15) / 16
    let rowBlocks = (rowTiles + tilesPerCTA - 1) / tilesPerCTA
    let tokenTiles = (a.count + bn - 1) / bn
    // The streaming kernel puts token tiles on x so CTAs sharing weight rows
    // are launched together.
    var grid = tiling == .stream ? (tokenTiles, rowBlocks, splits) : (rowBlocks, tokenTiles, splits)
    if tiling == .rt4 {
      // rt4 on sm_90 may pair adjacent token tiles in a cluster (ring fill
      // 3); the pair's extra tile past the tokens stores nothing.
      let cluster = kernel.requiredClusterShape()
      grid.1 = (grid.1 + cluster.1 - 1) / cluster.1 * cluster.1
    }
    let block = (tiling == .wgmma ? wgmmaThreads : threads, 1, 1)
    let attributes = launchAttributes(
      splits: splits, tiling: tiling, kernel: kernel, grid: grid, block: block, sharedMemoryBytes: shared)
    let cluster = attributes?.cluster != nil
    let needed = cluster ? 0 : splitWorkspaceBytes(a, splits: splits)
    if needed > 0 && (workspace?.byteCount ?? 0) < needed {
      throw .invalidArgument("workspace of \(workspace?.byteCount ?? 0) bytes, split-k needs \(needed)")
    }

    var bytes = ArgumentBytes()
    bytes.weightArgs(w)
    var upWeight = w
    var routeWeights: CUdeviceptr = 0
    var slots: CUdeviceptr = 0
    switch a.epilogue {
    case .store: break
    case .siluMul(let up): upWeight = up
    case .scaleAdd(let r): routeWeights = r.address
    case .scaleToSlots(let r, let s):
      routeWeights = r.address
      slots = s.address
    }
    bytes.weightArgs(upWeight)
    bytes.pointer(a.x.address)
    bytes.pointer(a.rows.address)
    bytes.pointer(routeWeights)
    bytes.pointer(slots)
    bytes.int32(a.count)
    bytes.int32(w.columns)
    bytes.int32(w.pattern.vectorLength / 32)
    bytes.int32(chunksPerSplit)
    bytes.int32(splits)
    bytes.pointer(a.output.address)  // aligned to 8 by `pointer`
    let inKernel =
      !cluster && sumsSplitsInKernel(count: a.count, splits: splits, tiles: rowBlocks * tokenTiles, tiling: tiling)
    let base = workspace?.address ?? 0
    bytes.pointer(splits > 1 && !cluster ? base + CUdeviceptr(splitCounterBytes) : 0)
    bytes.pointer(inKernel ? base : 0)
    bytes.int32(cluster ? 1 : 0)
    bytes.align(8)
    var arguments = KernelArguments()
    arguments.append(bytes: bytes.bytes)

    try launch(
      kernel, grid: grid, block: block, sharedMemoryBytes: shared, attributes: attributes, stream: stream,
      arguments: arguments)
    if splits > 1 && !inKernel && !cluster {
      let epilogue = try library.function(name + "_split")
      // One group of 4 (or 2) output rows per thread, all in one round: the
      // sum is one memory latency, not a grid-stride loop of them.
      let groups = a.count * w.rows / (w.rows % 4 == 0 ? 4 : 2)
      try epilogue.launch(
        grid: ((groups + 255) / 256, 1, 1), block: (256, 1, 1), stream: stream, arguments: arguments)
    }
  }

  /// Deterministic combine: `out[t, c] = Σ_rank slots[t·topK + rank, c]`
  /// (f32, rank order). `slots` [T·topK, hidden] must be zero where no
  /// entry wrote.
  public static func combine(
    slots: DeviceBuffer, into out: DeviceBuffer, tokens: Int, topK: Int, hidden: Int, library: KernelLibrary,
    stream: CUDAStream
  ) throws(CUDAError) {
    guard slots.byteCount >= tokens * topK * hidden * 4, out.byteCount >= tokens * hidden * 4 else {
      throw .invalidArgument("combine buffers too small for [\(tokens), \(topK), \(hidden)]")
    }
    if tokens == 0 { return }
    var arguments = KernelArguments()
    arguments.append(slots)
    arguments.append(out)
    arguments.append(Int32(tokens))
    arguments.append(Int32(topK))
    arguments.append(Int32(hidden))
    let blocks = min((tokens * hidden + 255) / 256, library.context.multiprocessorCount * 8)
    try library.function("samoyeds_combine").launch(
      grid: (blocks, 1, 1), block: (256, 1, 1), stream: stream, arguments: arguments)
  }

  /// Copies rows `rows[i]` of `x` [*, k] into `out` [count, k] (the dense
  /// baseline's gather).
  public static func gatherRows(
    x: DeviceBuffer, rows: DeviceBuffer, count: Int, k: Int, into out: DeviceBuffer, library: KernelLibrary,
    stream: CUDAStream
  ) throws(CUDAError) {
    guard k % 8 == 0, out.byteCount >= count * k * 2 else { throw .invalidArgument("gather: bad k or output size") }
    if count == 0 { return }
    var arguments = KernelArguments()
    arguments.append(x)
    arguments.append(rows)
    arguments.append(out)
    arguments.append(Int32(count))
    arguments.append(Int32(k))
    let blocks = min((count * k / 8 + 255) / 256, library.context.multiprocessorCount * 16)
    try library.function("samoyeds_gather_rows").launch(
      grid: (blocks, 1, 1), block: (256, 1, 1), stream: stream, arguments: arguments)
  }
}

/// Builds a C struct's bytes field by field with C's alignment rules.
struct ArgumentBytes {
  var bytes: [UInt8] = []

  mutating func align(_ n: Int) {
    while bytes.count % n != 0 { bytes.append(0) }
  }

  mutating func pointer(_ value: UInt64) {
    align(8)
    withUnsafeBytes(of: value) { bytes += $0 }
  }

  mutating func int32(_ value: Int) {
    align(4)
    withUnsafeBytes(of: Int32(truncatingIfNeeded: value)) { bytes += $0 }
  }

  /// A kernel's `WeightArgs`: fragments, metadata, selections, condensed
  /// rows, rows (32 bytes).
  mutating func weightArgs(_ weight: GPUSparseWeight) {
    pointer(weight.fragments.address)
    pointer(weight.metadata.address)
    pointer(weight.selection.address)
    int32(weight.condensedRows)
    int32(weight.rows)
  }
}
