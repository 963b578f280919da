import CPUEngine
import CUDA
import GPUEngine
import Kernels
import SamoyedsFormat
import SamoyedsModel

/// GPU cases for `samoyeds verify`: every kernel and epilogue on fresh
/// random inputs against the f32 CPU reference, outputs poisoned first so
/// unwritten elements show as NaN; then the whole GPU MoE layer against the
/// CPU layer for every family.
struct GPUVerifier {
  let session: GPUSession
  var report: (String, Double, Double) -> Void

  struct Case {
    var m: Int
    var k: Int
    var pattern: String
    var count: Int
    var dtype: DType
    var epilogue: String  // store, silu, add, slots
    var splits: Int?
    var tiling: PortableKernel.Tiling? = nil
  }

  static func cases() -> [Case] {
    var result: [Case] = []
    let shapes: [(Int, Int, String)] = [
      (256, 256, "1:2:128"), (1408, 2048, "1:2:128"), (2048, 1408, "1:2:128"), (2, 128, "1:2:128"),
      (34, 256, "1:2:128"), (96, 256, "1:4:64"), (64, 96, "2:4:32"), (64, 128, "1:8:32"),
    ]
    for (m, k, pattern) in shapes {
      for count in [0, 1, 3, 77, 1000] {
        for epilogue in ["store", "silu", "add", "slots"] {
          result.append(Case(m: m, k: k, pattern: pattern, count: count, dtype: .bf16, epilogue: epilogue, splits: nil))
        }
      }
      result.append(Case(m: m, k: k, pattern: pattern, count: 77, dtype: .fp16, epilogue: "store", splits: nil))
      result.append(Case(m: m, k: k, pattern: pattern, count: 77, dtype: .bf16, epilogue: "store", splits: 1))
      result.append(Case(m: m, k: k, pattern: pattern, count: 3, dtype: .bf16, epilogue: "silu", splits: 3))
      // Every tiling on every epilogue, whatever the heuristic picks.
      for tiling in PortableKernel.Tiling.allCases
      where (tiling != .bn32 && tiling != .rt2x2) || pattern.hasPrefix("1:2:") {
        for epilogue in ["store", "silu", "add", "slots"] {
          result.append(
            Case(m: m, k: k, pattern: pattern, count: 77, dtype: .bf16, epilogue: epilogue, splits: nil, tiling: tiling))
        }
        result.append(Case(m: m, k: k, pattern: pattern, count: 1000, dtype: .fp16, epilogue: "store", splits: 1, tiling: tiling))
      }
    }
    return result
  }

  func run(_ c: Case, seed: UInt64) throws {
    let context = session.context
    let stream = session.stream
    var rng = SeededGenerator(seed: seed)
    let pattern = try SparsePattern(parsing: c.pattern)
    let tokens = 2 * c.count + 1
    let x = HalfBits.rounded(rng.normalMatrix(rows: tokens, columns: c.k), c.dtype)
    // Every other row (plus a random start) — an ascending index list.
    let rows = (0..<c.count).map { Int32(2 * $0 + 1) }
    let (weight, reference) = try randomSparseWeight(
      m: c.m, k: c.k, pattern: pattern, dtype: c.dtype, rng: &rng, context: context)
    let xBuffer = try DeviceBuffer(context: context, copying: HalfBits.encode(x.storage, c.dtype))
    let rowBuffer = try DeviceBuffer(context: context, copying: rows)
    let y = try CPUGEMM.sparse(x, rows: rows, weight: CPUSparseWeight(reference))
    let name =
      "gpu \(c.dtype) \(c.m)x\(c.k) \(c.pattern) T=\(c.count) \(c.epilogue)\(c.splits.map { " splits=\($0)" } ?? "")\(c.tiling.map { " \($0.rawValue)" } ?? "") seed=\(seed)"

    func launch(_ epilogue: PortableKernel.Epilogue, output: DeviceBuffer) throws {
      var arguments = PortableKernel.Arguments(
        weight: weight, epilogue: epilogue, x: xBuffer, tokens: tokens, rows: rowBuffer, count: c.count,
        output: output, splits: c.splits)
      arguments.tiling = c.tiling
      let bytes = PortableKernel.workspaceBytes(arguments, context: context)
      let workspace = bytes > 0 ? try DeviceBuffer(context: context, byteCount: bytes) : nil
      try PortableKernel.run(arguments, workspace: workspace, library: session.library, stream: stream)
      try stream.synchronize()
    }

    switch c.epilogue {
    case "store", "silu":
      var expected = y
      var epilogue = PortableKernel.Epilogue.store
      if c.epilogue == "silu" {
        let (up, upReference) = try randomSparseWeight(
          m: c.m, k: c.k, pattern: pattern, dtype: c.dtype, rng: &rng, context: context)
        let u = try CPUGEMM.sparse(x, rows: rows, weight: CPUSparseWeight(upReference))
        for i in expected.storage.indices {
          let g = y.storage[i]
          expected.storage[i] = g / (1 + Float.exp(-g)) * u.storage[i]
        }
        epilogue = .siluMul(up: up)
      }
      let output = try DeviceBuffer(context: context, byteCount: max(2, c.count * c.m * 2))
      try output.fill(byte: 0xFF, on: stream)  // NaN in bf16 and fp16
      try launch(epilogue, output: output)
      let got = HalfBits.decode(try output.download(UInt16.self, count: c.count * c.m), c.dtype)
      report(name, compare(got, expected.storage), 1e-2)

    case "add":
      let routeWeights = (0..<c.count).map { _ in Float.random(in: 0.1..<1, using: &rng) }
      let initial = (0..<(tokens * c.m)).map { _ in Float.random(in: -1..<1, using: &rng) }
      var expected = initial
      for i in 0..<c.count {
        for o in 0..<c.m { expected[Int(rows[i]) * c.m + o] += routeWeights[i] * y[i, o] }
      }
      let output = try DeviceBuffer(context: context, copying: initial)
      try launch(.scaleAdd(routeWeights: try DeviceBuffer(context: context, copying: routeWeights)), output: output)
      report(name, compare(try output.download(Float.self, count: tokens * c.m), expected), 1e-2)

    default:  // slots + deterministic combine, run twice for bitwise equality
      let topK = 2
      let routeWeights = (0..<c.count).map { _ in Float.random(in: 0.1..<1, using: &rng) }
      let slots = rows.enumerated().map { Int32(Int($0.element) * topK + $0.offset % topK) }
      var expected = [Float](repeating: 0, count: tokens * c.m)
      for i in 0..<c.count {
        for o in 0..<c.m { expected[Int(rows[i]) * c.m + o] += routeWeights[i] * y[i, o] }
      }
      var results: [[Float]] = []
      for _ in 0..<2 {
        let slotBuffer = try DeviceBuffer(context: context, byteCount: tokens * topK * c.m * 4)
        try slotBuffer.fill(byte: 0, on: stream)
        try launch(
          .scaleToSlots(
            routeWeights: try DeviceBuffer(context: context, copying: routeWeights),
            slots: try DeviceBuffer(context: context, copying: slots)), output: slotBuffer)
        let out = try DeviceBuffer(context: context, byteCount: tokens * c.m * 4)
        try out.fill(byte: 0xFF, on: stream)
        try PortableKernel.combine(
          slots: slotBuffer, into: out, tokens: tokens, topK: topK, hidden: c.m, library: session.library,
          stream: stream)
        try stream.synchronize()
        results.append(try out.download(Float.self, count: tokens * c.m))
      }
      let deterministic = results[0].elementsEqual(results[1]) { $0.bitPattern == $1.bitPattern }
      report(name + (deterministic ? " (bitwise repeatable)" : " (NOT repeatable)"),
             deterministic ? compare(results[0], expected) : .nan, 1e-2)
    }
  }

  /// One GPU MoE-layer case: `GPUMoELayer` against `CPUMoELayer.forward` on
  /// the same pruned weights (values stored in `dtype`, so both sides hold
  /// identical numbers) and the same hidden states rounded to `dtype`.
  struct LayerCase {
    var config: MoEConfig
    var tokens: Int
    var dtype: DType = .bf16
    /// Routing pushed onto expert 0 and away from the last expert (`skew`).
    var skewed = false

    /// "gpu moe layer mixtral-mini T=77", then " skewed" / " fp16".
    var description: String {
      "gpu moe layer \(config.name) T=\(tokens)\(skewed ? " skewed" : "")\(dtype == .bf16 ? "" : " \(dtype)")"
    }
  }

  /// Per mini family: T = 1, 3, 77 (bf16), T = 77 skewed, T = 77 fp16.
  /// Experts without tokens occur in every T = 1 case and every skewed case
  /// (the last expert); skewed OpenMoE also drops tokens by capacity.
  static func layerCases() -> [LayerCase] {
    Presets.mini.flatMap { config in
      [1, 3, 77].map { LayerCase(config: config, tokens: $0) }
        + [LayerCase(config: config, tokens: 77, skewed: true), LayerCase(config: config, tokens: 77, dtype: .fp16)]
    }
  }

  /// Skewed routing: a unit direction u is taken out of every token and put
  /// back with length 4, and ±8·u is added to the router rows of expert 0 and
  /// the last expert, so expert 0's logit leads every token's by about 32
  /// (it gets every token, up to a capacity) and the last expert's trails by
  /// as much (it gets none).
  static func skew(_ weights: inout DenseMoEWeights, _ x: inout Matrix<Float>, rng: inout SeededGenerator) {
    let hidden = x.columns
    var u = rng.normalMatrix(rows: 1, columns: hidden).storage
    let norm = u.reduce(0) { $0 + $1 * $1 }.squareRoot()
    u = u.map { $0 / norm }
    for t in 0..<x.rows {
      var along: Float = 0
      for c in 0..<hidden { along += x[t, c] * u[c] }
      for c in 0..<hidden { x[t, c] += (4 - along) * u[c] }
    }
    let last = weights.config.numExperts - 1
    for c in 0..<hidden {
      weights.router[0, c] += 8 * u[c]
      weights.router[last, c] -= 8 * u[c]
    }
  }

  /// Runs `c` twice on the GPU (the two outputs must be bitwise equal and
  /// the routing plan the CPU's) and reports the error against the CPU.
  func runLayer(_ c: LayerCase, seed: UInt64) throws {
    var weights = DenseMoEWeights.random(config: c.config, seed: seed)
    var rng = SeededGenerator(seed: seed &+ 7)
    var x = rng.normalMatrix(rows: c.tokens, columns: c.config.hiddenSize)
    if c.skewed { Self.skew(&weights, &x, rng: &rng) }
    x = HalfBits.rounded(x, c.dtype)
    let (sparse, _) = try weights.pruned(pattern: .default, storage: c.dtype)
    let expected = try CPUMoELayer.forward(x, weights: sparse)
    let layer = try GPUMoELayer(weights: sparse, session: session, dtype: c.dtype)
    let first = try layer.forward(x)
    let second = try layer.forward(x)
    let repeatable = first.output.storage.elementsEqual(second.output.storage) { $0.bitPattern == $1.bitPattern }
    let plan = first.plan
    let counts = (0..<plan.numExperts).map { plan.entries(ofExpert: $0).count }
    let notes = [
      "max \(counts.max() ?? 0) tokens/expert", "\(counts.filter { $0 == 0 }.count) idle",
      "\(plan.numTokens * plan.topK - plan.entryCount) dropped",
      plan == expected.plan ? nil : "PLAN DIFFERS", repeatable ? "repeatable" : "NOT repeatable",
    ].compactMap { $0 }
    report(
      "\(c.description) seed=\(seed) (\(notes.joined(separator: ", ")))",
      repeatable && plan == expected.plan ? relativeError(first.output, expected.output) : .nan, 1e-2)
  }

  /// Relative Frobenius error; NaN if any element is NaN.
  func compare(_ got: [Float], _ expected: [Float]) -> Double {
    guard got.count == expected.count else { return .nan }
    if got.isEmpty { return 0 }
    do {
      return relativeError(
        try Matrix(rows: 1, columns: got.count, storage: got),
        try Matrix(rows: 1, columns: expected.count, storage: expected))
    } catch {
      return .nan
    }
  }
}
