import CPUEngine
import CUDA
import GPUEngine
import Kernels
import SamoyedsFormat
import SamoyedsModel

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One row of `samoyeds bench moe --json` (keys read by bench/baselines/moe_results.py).
/// "Device path" = the GPU router, grouped expert launches, combine and
/// shared expert with no host work in between (`DecodeGraph`).
struct MoEBenchRow: Codable {
  var model: String
  var tokens: Int
  /// Wall time of `GPUMoELayer.forward` (host checks, upload, per-expert launches, download).
  var forwardMilliseconds: Double?
  /// The device path launched one operation at a time (CUDA events), if timed.
  var eagerMilliseconds: Double?
  /// The device path replayed as one CUDA graph (CUDA events), if timed.
  var graphMilliseconds: Double?
  /// Weight bytes of the experts a replay reads at most (every expert with a
  /// token: min(E, T·topK) experts, plus the shared expert) over graph time.
  var graphGBps: Double?
  /// Relative Frobenius difference between the device path's output and forward's.
  var graphVersusForward: Double?
  /// Why the device path was not timed, if it was not.
  var note: String?
  /// The device path's stages launched one by one with an event after
  /// each (router, shared gate, zero slots, gate/up, down, combine, shared
  /// expert): the median of each stage's time, in launch order.
  var stages: [Stage]?

  struct Stage: Codable {
    var stage: String
    var milliseconds: Double
  }

  /// "router 0.012 · gate/up 0.451 · …", or nil.
  var stageLine: String? {
    stages.map { "    " + $0.map { "\($0.stage) \(Fmt.fixed($0.milliseconds, 4))" }.joined(separator: " · ") }
  }

  var line: String {
    func ms(_ v: Double?) -> String { v.map { Fmt.right(Fmt.fixed($0, 4), 10) } ?? Fmt.right("-", 10) }
    return "\(Fmt.left(model, 20)) \(Fmt.right("\(tokens)", 5)) \(ms(forwardMilliseconds))  \(ms(eagerMilliseconds)) \(ms(graphMilliseconds))"
      + "   \(graphGBps.map { Fmt.right(Fmt.fixed($0, 0), 10) } ?? Fmt.right("-", 10))"
      + "   \(graphVersusForward.map { Fmt.right(Fmt.scientific($0), 10) } ?? (note ?? "-"))"
  }
}

/// A preset's layer with random weights in the format, timed by `bench moe`.
final class MoEBench {
  let config: MoEConfig
  let session: GPUSession
  let layer: GPUMoELayer
  let samples: Int
  /// Bytes of one routed expert's three packed weights, and of the shared expert's.
  let expertBytes: Int
  let sharedBytes: Int
  /// Twice the L2, written before each timed call (evicts the weights).
  let flush: DeviceBuffer

  /// Random weights: one pruned weight per projection shape, packed once
  /// and uploaded per expert (pruning hundreds of millions of values on the
  /// host would dominate; the experts' values do not change the timing).
  init(config: MoEConfig, session: GPUSession, samples: Int) throws {
    self.config = config
    self.session = session
    self.samples = samples
    var rng = SeededGenerator(seed: 0x5A40_E5)
    let pattern = SparsePattern.default
    func packed(_ m: Int, _ k: Int) throws -> PackedSparseWeight {
      let dense = HalfBits.rounded(rng.normalMatrix(rows: m, columns: k, scale: 1 / Float(k).squareRoot()), .bf16)
      return HalfBits.packed(try SparseMatrix<Float>.prune(dense, pattern: pattern), .bf16)
    }
    let h = config.hiddenSize
    let ffn = config.expertIntermediateSize
    let gateUp = try packed(ffn, h)
    let expert = PackedExpert(gate: gateUp, up: gateUp, down: try packed(h, ffn))
    var shared: PackedExpert? = nil
    if let s = config.sharedExpert {
      let sharedGateUp = try packed(s.intermediateSize, h)
      shared = PackedExpert(gate: sharedGateUp, up: sharedGateUp, down: try packed(h, s.intermediateSize))
    }
    let router = rng.normalMatrix(rows: config.numExperts, columns: h, scale: 1 / Float(h).squareRoot())
    let sharedGate = config.sharedExpert?.gate == .sigmoid ? rng.normalMatrix(rows: 1, columns: h, scale: 0.02) : nil
    layer = try GPUMoELayer(
      config: config, experts: Array(repeating: expert, count: config.numExperts), shared: shared, router: router,
      sharedGate: sharedGate, session: session, dtype: .bf16, router: .device)
    func bytes(_ e: PackedExpert) -> Int {
      [e.gate, e.up, e.down].reduce(0) { $0 + ($1.fragments.count + $1.metadata.count) * 4 + $1.selection.count }
    }
    expertBytes = bytes(expert)
    sharedBytes = shared.map(bytes) ?? 0
    flush = try DeviceBuffer(context: session.context, byteCount: max(2 * session.context.l2CacheBytes, 1 << 20))
  }

  func run(tokens: Int, decode: Bool) throws -> MoEBenchRow {
    var rng = SeededGenerator(seed: UInt64(tokens) &* 977)
    let x = HalfBits.rounded(rng.normalMatrix(rows: tokens, columns: config.hiddenSize), .bf16)
    // forward: wall time, two warm-ups, median.
    _ = try layer.forward(x)
    let reference = try layer.forward(x)
    var wall: [Double] = []
    for _ in 0..<samples {
      let start = ContinuousClock.now
      _ = try layer.forward(x)
      wall.append(Fmt.milliseconds(ContinuousClock.now - start))
    }
    var row = MoEBenchRow(model: config.name, tokens: tokens, forwardMilliseconds: median(wall))
    guard decode else {
      row.note = "T above --graph-tokens"
      return row
    }
    let graph: DecodeGraph
    do {
      graph = try layer.captureDecode(tokens: tokens)
    } catch GPUEngineError.unsupported(let why) {
      row.note = "no device path: \(why)"
      return row
    }
    try graph.setInput(x)
    try graph.replay()
    let output = try graph.readOutput()
    row.graphVersusForward = relativeDifference(output.storage, reference.output.storage)
    // As the dense baselines (docs/BENCHMARKS.md): L2 flushed before every
    // call, CUDA events around one call, the median of the samples.
    let stream = session.stream
    let start = try CUDAEvent(context: session.context)
    let end = try CUDAEvent(context: session.context)
    func time(_ body: () throws -> Void) throws -> Double {
      for _ in 0..<3 { try body() }
      var times: [Double] = []
      for _ in 0..<samples {
        try flush.fill(byte: 0, on: stream)
        try start.record(on: stream)
        try body()
        try end.record(on: stream)
        try end.synchronize()
        times.append(Double(try end.milliseconds(since: start)))
      }
      return median(times)
    }
    row.eagerMilliseconds = try time { try graph.enqueueEager() }
    let graphMs = try time { try graph.replay() }
    row.graphMilliseconds = graphMs
    let experts = min(config.numExperts, tokens * config.topK)
    row.graphGBps = Double(experts * expertBytes + sharedBytes) / (graphMs * 1e6)
    row.stages = try stageTimes(graph)
    return row
  }

  /// Each stage's median time over `samples` eager calls with an event
  /// recorded after every stage (L2 flushed before each call).
  func stageTimes(_ graph: DecodeGraph) throws -> [MoEBenchRow.Stage] {
    let stream = session.stream
    let context = session.context
    var order: [String] = []
    var times: [String: [Double]] = [:]
    for _ in 0..<samples {
      try flush.fill(byte: 0, on: stream)
      let start = try CUDAEvent(context: context)
      try start.record(on: stream)
      var events: [(String, CUDAEvent)] = []
      try graph.enqueueEager { (name: String) throws(CUDAError) in
        let event = try CUDAEvent(context: context)
        try event.record(on: stream)
        events.append((name, event))
      }
      try (events.last?.1 ?? start).synchronize()
      var previous = start
      for (name, event) in events {
        if times[name] == nil { order.append(name) }
        times[name, default: []].append(Double(try event.milliseconds(since: previous)))
        previous = event
      }
    }
    return order.map { MoEBenchRow.Stage(stage: $0, milliseconds: median(times[$0] ?? [])) }
  }

  func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? .nan : sorted[sorted.count / 2]
  }

  /// ‖a − b‖ / ‖b‖ (NaN if either holds a NaN or the sizes differ).
  func relativeDifference(_ a: [Float], _ b: [Float]) -> Double {
    guard a.count == b.count else { return .nan }
    var difference = 0.0
    var norm = 0.0
    for (u, v) in zip(a, b) {
      difference += Double(u - v) * Double(u - v)
      norm += Double(v) * Double(v)
    }
    return norm > 0 ? (difference / norm).squareRoot() : difference.squareRoot()
  }
}
