import ArgumentParser
import CPUEngine
import CUDA
import GPUEngine
import Kernels
import SamoyedsFormat

/// One row of `bench kernel`.
struct KernelBenchRow: Codable {
  var m: Int
  var k: Int
  var tokens: Int
  var sparseMilliseconds: Double
  var denseMilliseconds: Double
  var denseGemmOnlyMilliseconds: Double
  var ratio: Double
  var sparseTFLOPS: Double
  var denseTFLOPS: Double
  var sparseGBps: Double
  var denseGBps: Double
  var splits: Int
  /// The tiling `PortableKernel.tiling` chose for the `sparse` column.
  var tiling: String
  /// Dense-equivalent TFLOP/s of the chosen tiling as a share of the sparse
  /// tensor-core peak for this operand (nil off Hopper): the datasheet's
  /// 1979 TFLOP/s counts 2:4 as 2x; the format's row selection multiplies
  /// it by M/N, so a 25%-dense 1:2 weight peaks at 3958 dense-equivalent TFLOP/s.
  var shareOfSparsePeak: Double?
  /// The sparse kernel with each tiling forced: "rt1", "rt2", "bn32", "stream", "rt2x2", "rt4", "wgmma".
  var variantMilliseconds: [String: Double]

  static let variantColumns = PortableKernel.Tiling.allCases.map(\.rawValue)

  static let header =
    "     m      k      T  sparse ms   dense ms  (gemm ms)   ratio  tiling  sparse TF/s  peak%  dense TF/s  sparse GB/s  splits"
    + variantColumns.map { Fmt.right("\($0) ms", 10) }.joined()

  var line: String {
    Fmt.right("\(m)", 6) + " " + Fmt.right("\(k)", 6) + " " + Fmt.right("\(tokens)", 6) + " "
      + Fmt.right(Fmt.fixed(sparseMilliseconds, 4), 10) + " " + Fmt.right(Fmt.fixed(denseMilliseconds, 4), 10) + " "
      + Fmt.right(Fmt.fixed(denseGemmOnlyMilliseconds, 4), 10) + " " + Fmt.right(Fmt.fixed(ratio, 2) + "x", 7) + " "
      + Fmt.right(tiling, 7) + " " + Fmt.right(Fmt.fixed(sparseTFLOPS, 1), 12) + " "
      + Fmt.right(shareOfSparsePeak.map { Fmt.fixed(100 * $0, 1) } ?? "-", 6) + " "
      + Fmt.right(Fmt.fixed(denseTFLOPS, 1), 11) + " "
      + Fmt.right(Fmt.fixed(sparseGBps, 0), 12) + " " + Fmt.right("\(splits)", 7)
      + Self.variantColumns.map { Fmt.right(variantMilliseconds[$0].map { Fmt.fixed($0, 4) } ?? "-", 10) }.joined()
  }
}

struct KernelBenchDocument: Codable {
  var device: String
  var architecture: String
  var pattern: String
  var rows: [KernelBenchRow]
}

/// Times the sparse kernel and the dense baseline on one shape, side by
/// side in one process. Weights are built once per shape; token counts reuse
/// them.
final class KernelBench {
  let session: GPUSession
  let cublas: CublasLt
  let m: Int
  let k: Int
  let pattern: SparsePattern
  let samples: Int
  /// The tilings also timed forced (besides the default choice).
  let variants: Set<PortableKernel.Tiling>
  /// A split-k factor forced on every sparse launch (`--splits`).
  var forcedSplits: Int?
  let sparseWeights: [GPUSparseWeight]
  let denseWeights: [DeviceBuffer]

  /// Dense-equivalent peak of a weight in `pattern` on H100/H200 SXM: the
  /// datasheet's 1979 TFLOP/s for 2:4, times M/N for the rows the selection
  /// skips: 3958 for 1:2 and 2:4 (25% dense), 7916 for 1:4, 15832 for 1:8.
  static func hopperSparsePeakTFLOPS(_ pattern: SparsePattern) -> Double {
    1979.0 * Double(pattern.groupRows) / Double(pattern.keptRows)
  }

  /// Launches per timed sample (amortizes the host's launch cost).
  static let launchesPerSample = 10

  /// Times the given weights, rotating over them launch by launch:
  /// `sparse[i]` and `dense[i]` (bf16 [m, k]) are the same weight.
  init(
    session: GPUSession, cublas: CublasLt, sparse: [GPUSparseWeight], dense: [DeviceBuffer], samples: Int,
    variants: Set<PortableKernel.Tiling> = Set(PortableKernel.Tiling.allCases)
  ) throws {
    guard let first = sparse.first, !dense.isEmpty else { throw ValidationError("no weights to time") }
    self.session = session
    self.cublas = cublas
    self.m = first.rows
    self.k = first.columns
    self.pattern = first.pattern
    self.samples = samples
    self.variants = variants
    self.sparseWeights = sparse
    self.denseWeights = dense
  }

  /// Random weights of one shape, copied so that one rotation exceeds the
  /// L2 cache several times.
  convenience init(
    session: GPUSession, cublas: CublasLt, m: Int, k: Int, pattern: SparsePattern, samples: Int, variants: Set<PortableKernel.Tiling> = Set(PortableKernel.Tiling.allCases)
  ) throws {
    let context = session.context
    var rng = SeededGenerator(seed: UInt64(m &* 131 &+ k &* 7))
    // One random weight, pruned once (pruning tens of millions of values on
    // the host is slow); the copies hold the same values at other addresses,
    // which defeats the L2 just as well.
    let (first, reference) = try randomSparseWeight(
      m: m, k: k, pattern: pattern, dtype: .bf16, rng: &rng, context: context)
    let packed = HalfBits.packed(reference, .bf16)
    let sparseCopies = max(2, min(8, (3 * context.l2CacheBytes) / max(first.deviceBytes, 1) + 1))
    var sparse = [first]
    for _ in 1..<sparseCopies { sparse.append(try GPUSparseWeight(context: context, packed: packed)) }
    let denseCopies = max(2, min(8, (3 * context.l2CacheBytes) / (m * k * 2) + 1))
    let block = randomBits(count: 1 << 20, scale: 0.05, rng: &rng)
    var dense: [DeviceBuffer] = []
    for copy in 0..<denseCopies {
      dense.append(try DeviceBuffer(context: context, copying: tiled(block, count: m * k, offset: copy * 7919)))
    }
    try self.init(session: session, cublas: cublas, sparse: sparse, dense: dense, samples: samples, variants: variants)
  }

  /// One projection of every expert of a checkpoint layer: the stored
  /// sparse weights (or `pattern` pruning of dense ones) and, for the dense
  /// baseline, the same weights densified — the real weights, rotated over
  /// the layer's experts.
  convenience init(
    session: GPUSession, cublas: CublasLt, linears: [CPULinear], pattern: SparsePattern, samples: Int,
    variants: Set<PortableKernel.Tiling>
  ) throws {
    let context = session.context
    var sparse: [GPUSparseWeight] = []
    var dense: [DeviceBuffer] = []
    for linear in linears {
      let matrix: SparseMatrix<Float>
      switch linear {
      case .sparse(let weight): matrix = try weight.sparseMatrix()
      case .dense(let weight): matrix = try SparseMatrix<Float>.prune(HalfBits.rounded(weight, .bf16), pattern: pattern)
      }
      sparse.append(try GPUSparseWeight(context: context, packed: HalfBits.packed(matrix, .bf16)))
      dense.append(try DeviceBuffer(context: context, copying: HalfBits.encode(matrix.densified().storage, .bf16)))
    }
    try self.init(session: session, cublas: cublas, sparse: sparse, dense: dense, samples: samples, variants: variants)
  }

  func run(tokens: Int) throws -> KernelBenchRow {
    let context = session.context
    let stream = session.stream
    var rng = SeededGenerator(seed: UInt64(m &* 131 &+ k &* 7 &+ tokens))
    let hiddenRows = 4 * tokens
    // Hidden states [4T, k]: random bf16 (never zeros), tiled from a block.
    let xBuffer = try DeviceBuffer(
      context: context, copying: tiled(randomBits(count: 1 << 20, scale: 1, rng: &rng), count: hiddenRows * k, offset: 0))
    let rows = Array((0..<hiddenRows).shuffled(using: &rng).prefix(tokens)).sorted().map(Int32.init)
    let rowBuffer = try DeviceBuffer(context: context, copying: rows)
    let sparseOut = try DeviceBuffer(context: context, byteCount: tokens * m * 2)
    let gathered = try DeviceBuffer(context: context, byteCount: tokens * k * 2)
    let denseOut = try DeviceBuffer(context: context, byteCount: tokens * m * 2)
    let plan = try cublas.plan(tokens: tokens, m: m, k: k)
    let first = sparseWeights[0]

    func arguments(_ weight: GPUSparseWeight, tiling: PortableKernel.Tiling? = nil) -> PortableKernel.Arguments {
      var a = PortableKernel.Arguments(
        weight: weight, epilogue: .store, x: xBuffer, tokens: hiddenRows, rows: rowBuffer, count: tokens,
        output: sparseOut)
      a.tiling = tiling
      a.splits = forcedSplits
      return a
    }
    let tilings = PortableKernel.Tiling.allCases.filter { PortableKernel.isAvailable($0, arguments(first), context: context) }
    let workspaceBytes = ([nil] + tilings).map {
      PortableKernel.workspaceBytes(arguments(first, tiling: $0), context: context)
    }.max() ?? 0
    let workspace = workspaceBytes > 0 ? try DeviceBuffer(context: context, byteCount: workspaceBytes) : nil
    try workspace?.fill(byte: 0, on: session.stream)  // split-k counters start at zero
    let chosen = PortableKernel.tiling(arguments(first), context: context)
    let splits = PortableKernel.plan(arguments(first), context: context, tiling: chosen).splits

    var launch = 0
    func timeSparse(_ tiling: PortableKernel.Tiling?) throws -> Double {
      try time {
        try PortableKernel.run(
          arguments(sparseWeights[launch % sparseWeights.count], tiling: tiling), workspace: workspace,
          library: session.library, stream: stream)
        launch += 1
      }
    }
    let sparse = try timeSparse(nil)
    var variants: [String: Double] = [:]
    for tiling in tilings where self.variants.contains(tiling) { variants[tiling.rawValue] = try timeSparse(tiling) }
    let denseGemm = try time {
      try plan.run(
        x: gathered.address, w: denseWeights[launch % denseWeights.count].address, y: denseOut.address, stream: stream)
      launch += 1
    }
    let dense = try time {
      try PortableKernel.gatherRows(
        x: xBuffer, rows: rowBuffer, count: tokens, k: k, into: gathered, library: session.library, stream: stream)
      try plan.run(
        x: gathered.address, w: denseWeights[launch % denseWeights.count].address, y: denseOut.address, stream: stream)
      launch += 1
    }
    let flops = 2.0 * Double(m) * Double(k) * Double(tokens)
    let sparseBytes = Double(first.deviceBytes + tokens * k * 2 + tokens * m * 2 + tokens * 4)
    let denseMoved = Double(m * k * 2 + 2 * tokens * k * 2 + tokens * k * 2 + tokens * m * 2)
    return KernelBenchRow(
      m: m, k: k, tokens: tokens, sparseMilliseconds: sparse, denseMilliseconds: dense,
      denseGemmOnlyMilliseconds: denseGemm, ratio: dense / sparse, sparseTFLOPS: flops / sparse / 1e9,
      denseTFLOPS: flops / dense / 1e9, sparseGBps: sparseBytes / sparse / 1e6, denseGBps: denseMoved / dense / 1e6,
      splits: splits, tiling: chosen.rawValue,
      shareOfSparsePeak: session.library.architecture == "sm_90a"
        ? flops / sparse / 1e9 / Self.hopperSparsePeakTFLOPS(first.pattern) : nil,
      variantMilliseconds: variants)
  }

  /// Median milliseconds per launch of `body` (CUDA events around batches).
  func time(_ body: () throws -> Void) throws -> Double {
    let stream = session.stream
    for _ in 0..<3 { try body() }
    try stream.synchronize()
    let start = try CUDAEvent(context: session.context)
    let end = try CUDAEvent(context: session.context)
    var samplesMs: [Double] = []
    for _ in 0..<max(1, samples) {
      try start.record(on: stream)
      for _ in 0..<Self.launchesPerSample { try body() }
      try end.record(on: stream)
      try end.synchronize()
      samplesMs.append(Double(try end.milliseconds(since: start)) / Double(Self.launchesPerSample))
    }
    samplesMs.sort()
    return samplesMs[samplesMs.count / 2]
  }
}

/// `count` random bf16 bit patterns, uniform in ±scale (never all zero).
func randomBits(count: Int, scale: Float, rng: inout SeededGenerator) -> [UInt16] {
  (0..<count).map { _ in BFloat16(Float.random(in: -scale..<scale, using: &rng)).bitPattern }
}

/// `block` repeated to `count` elements, starting `offset` into it.
func tiled(_ block: [UInt16], count: Int, offset: Int) -> [UInt16] {
  var result = [UInt16]()
  result.reserveCapacity(count)
  var i = offset % block.count
  while result.count < count {
    let take = min(block.count - i, count - result.count)
    result += block[i..<(i + take)]
    i = 0
  }
  return result
}
