import CPUEngine
import CUDA
import GPUEngine
import Kernels
import SamoyedsFormat

/// GPU kernel cases for `samoyeds verify`: every kernel and epilogue on
/// fresh random inputs against the f32 CPU reference, outputs poisoned
/// first so unwritten elements show as NaN.
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
      for tiling in PortableKernel.Tiling.allCases where tiling != .bn32 || pattern.hasPrefix("1:2:") {
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
