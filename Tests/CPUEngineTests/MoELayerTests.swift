import Testing

@testable import CPUEngine
import SamoyedsFormat
import SamoyedsModel

#if canImport(Glibc)
import Glibc
#endif

/// A golden MoE layer written the way the reference models read: a loop
/// over tokens and their chosen experts, in Double, with each family's rule
/// spelled out here independently of `Router`.
func goldenMoE(_ x: Matrix<Float>, _ w: DenseMoEWeights) -> Matrix<Float> {
  let config = w.config
  let h = config.hiddenSize
  let k = config.topK
  func mlp(_ e: (gate: Matrix<Float>, up: Matrix<Float>, down: Matrix<Float>), _ t: Int) -> [Double] {
    let ffn = e.gate.rows
    var act = [Double](repeating: 0, count: ffn)
    for f in 0..<ffn {
      var g = 0.0
      var u = 0.0
      for c in 0..<h {
        g += Double(e.gate[f, c]) * Double(x[t, c])
        u += Double(e.up[f, c]) * Double(x[t, c])
      }
      act[f] = g / (1 + exp(-g)) * u
    }
    return (0..<h).map { o in (0..<ffn).reduce(0.0) { $0 + Double(e.down[o, $1]) * act[$1] } }
  }
  // Router: softmax, top-k (ties -> lower index), optional renormalize.
  var chosen: [[(Int, Double)]] = []
  for t in 0..<x.rows {
    let logits = (0..<config.numExperts).map { e in
      (0..<h).reduce(0.0) { $0 + Double(w.router[e, $1]) * Double(x[t, $1]) }
    }
    let maximum = logits.max() ?? 0
    let z = logits.map { exp($0 - maximum) }
    let total = z.reduce(0, +)
    let probabilities = z.map { $0 / total }
    var picks = Array(probabilities.enumerated().sorted { $0.element > $1.element || ($0.element == $1.element && $0.offset < $1.offset) }.prefix(k))
      .map { ($0.offset, $0.element) }
    if config.router.normalizeTopK {
      let sum = picks.reduce(0.0) { $0 + $1.1 }
      picks = picks.map { ($0.0, $0.1 / sum) }
    }
    chosen.append(picks)
  }
  // Capacity: first choices in token order, then second choices.
  if let capacity = config.router.capacity {
    let limit = capacity.capacity(tokens: x.rows, experts: config.numExperts, topK: k)
    var load = [Int](repeating: 0, count: config.numExperts)
    for rank in 0..<k {
      for t in 0..<x.rows {
        let e = chosen[t][rank].0
        if load[e] < limit { load[e] += 1 } else { chosen[t][rank].1 = 0 }
      }
    }
  }
  var out = Matrix<Float>(rows: x.rows, columns: h, repeating: 0)
  for t in 0..<x.rows {
    var acc = [Double](repeating: 0, count: h)
    for (e, weight) in chosen[t] where weight != 0 {
      let y = mlp(w.experts[e], t)
      for c in 0..<h { acc[c] += weight * y[c] }
    }
    if let shared = w.shared {
      var scale = 1.0
      if let gate = w.sharedGate {
        let g = (0..<h).reduce(0.0) { $0 + Double(gate[0, $1]) * Double(x[t, $1]) }
        scale = 1 / (1 + exp(-g))
      }
      let y = mlp(shared, t)
      for c in 0..<h { acc[c] += scale * y[c] }
    }
    for c in 0..<h { out[t, c] = Float(acc[c]) }
  }
  return out
}

/// A smaller copy of a mini preset, so the Double golden model stays fast
/// in debug builds.
func shrunk(_ config: MoEConfig) -> MoEConfig {
  var c = config
  c.hiddenSize = 128
  c.expertIntermediateSize = 128
  if var shared = c.sharedExpert {
    shared.intermediateSize = 128
    c.sharedExpert = shared
  }
  return c
}

@Suite struct MoELayerProperties {
  @Test(arguments: Presets.mini.map(\.name))
  func denseLayerMatchesGoldenModel(preset: String) throws {
    let config = shrunk(try Presets.named(preset))
    for tokens in [1, 5] {
      let seed = UInt64(tokens * 7919) ^ UInt64(preset.utf8.reduce(0) { $0 &* 31 &+ Int($1) } & 0xFFFF)
      print("denseLayerMatchesGoldenModel \(preset) T=\(tokens) seed \(seed)")
      let weights = DenseMoEWeights.random(config: config, seed: seed)
      var rng = SeededGenerator(seed: seed &+ 1)
      let x = rng.normalMatrix(rows: tokens, columns: config.hiddenSize)
      let out = try CPUMoELayer.forward(x, weights: weights.denseLayer()).output
      #expect(relativeError(out, goldenMoE(x, weights)) < 1e-5, "\(preset) T=\(tokens) seed \(seed)")
    }
  }

  /// The sparse layer equals the dense layer holding the same pruned
  /// weights, for every family, token counts that are not multiples of
  /// anything, and each storage type.
  @Test(arguments: Presets.mini.map(\.name))
  func sparseLayerMatchesDenseOnPrunedWeights(preset: String) throws {
    let config = try Presets.named(preset)
    for (tokens, storage) in [(1, DType.bf16), (3, .f32), (37, .fp16)] {
      let seed = UInt64(tokens) &* 0x9E37 &+ UInt64(config.numExperts)
      print("sparseLayerMatchesDenseOnPrunedWeights \(preset) T=\(tokens) \(storage) seed \(seed)")
      let weights = DenseMoEWeights.random(config: config, seed: seed)
      let (sparse, dense) = try weights.pruned(pattern: .default, storage: storage)
      var rng = SeededGenerator(seed: seed &+ 1)
      let x = rng.normalMatrix(rows: tokens, columns: config.hiddenSize)
      let a = try CPUMoELayer.forward(x, weights: sparse)
      let b = try CPUMoELayer.forward(x, weights: dense)
      #expect(a.plan == b.plan)
      #expect(relativeError(a.output, b.output) < 1e-5, "\(preset) T=\(tokens) \(storage) seed \(seed)")
      #expect(a.output.storage.allSatisfy { $0.isFinite })
    }
  }

  /// Routing forced onto few experts: every other expert gets no token.
  @Test func allTokensOnOneExpertAndExpertsWithNone() throws {
    var config = shrunk(try Presets.named("mixtral-mini"))
    config.router = RouterRule(topK: 1, normalizeTopK: true)
    var weights = DenseMoEWeights.random(config: config, seed: 5)
    // Positive tokens and a router whose expert-3 row is positive and every
    // other row negative: every token picks expert 3.
    weights.router = Matrix(rows: config.numExperts, columns: config.hiddenSize) { e, _ in e == 3 ? 1 : -1 }
    var rng = SeededGenerator(seed: 6)
    let x = rng.normalMatrix(rows: 9, columns: config.hiddenSize).map { abs($0) + 0.01 }
    let (sparse, dense) = try weights.pruned(pattern: .default)
    let a = try CPUMoELayer.forward(x, weights: sparse)
    #expect(a.plan.entries(ofExpert: 3).count == 9)
    for e in 0..<config.numExperts where e != 3 { #expect(a.plan.entries(ofExpert: e).isEmpty) }
    let b = try CPUMoELayer.forward(x, weights: dense)
    #expect(relativeError(a.output, b.output) < 1e-5)
    // With top-1 renormalized, the layer is exactly expert 3.
    let expertOnly = try dense.experts[3].apply(x)
    #expect(relativeError(b.output, expertOnly) < 1e-6)
  }

  /// OpenMoE's capacity drops second choices first, in token order.
  @Test func capacityDropsAssignmentsInOrder() throws {
    let logits = try Matrix<Float>(rows: 6, columns: 4, storage: [
      5, 4, 0, 0,
      5, 4, 0, 0,
      5, 0, 4, 0,
      5, 0, 0, 4,
      0, 5, 4, 0,
      4, 5, 0, 0,
    ])
    let rule = RouterRule(topK: 2, normalizeTopK: false, capacity: ExpertCapacity(factor: 0.5, minimum: 4))
    // capacity = max(4, even(floor(2 * 0.5 * 6 / 4))) = 4
    let choice = Router.route(logits: logits, rule: rule)
    // Expert 0 takes first choices of tokens 0-3 (4 = full); token 5's second
    // choice (expert 0) is dropped.
    #expect(Array(choice.experts[0..<8]) == [0, 1, 0, 1, 0, 2, 0, 3])
    #expect(choice.experts[10] == 1 && choice.experts[11] == -1 && choice.weights[11] == 0)
    let plan = try RoutingPlan(
      numTokens: 6, numExperts: 4, topK: 2, selectedExperts: choice.experts, weights: choice.weights)
    #expect(plan.entries(ofExpert: 0).count == 4)
    #expect(plan.entryCount == 11)
  }

  @Test func routerRenormalizesOnlyWhenAsked() throws {
    let logits = try Matrix<Float>(rows: 1, columns: 3, storage: [1, 2, 3])
    let plain = Router.route(logits: logits, rule: RouterRule(topK: 2, normalizeTopK: false))
    let normalized = Router.route(logits: logits, rule: RouterRule(topK: 2, normalizeTopK: true))
    #expect(plain.experts == [2, 1] && normalized.experts == [2, 1])
    let z = [exp(1.0), exp(2.0), exp(3.0)]
    #expect(abs(Double(plain.weights[0]) - z[2] / z.reduce(0, +)) < 1e-6)
    #expect(abs(Double(normalized.weights[0]) - z[2] / (z[1] + z[2])) < 1e-6)
    // Ties keep the lower expert.
    let tie = Router.route(logits: try Matrix(rows: 1, columns: 4, storage: [1, 1, 1, 1]), rule: RouterRule(topK: 2, normalizeTopK: true))
    #expect(tie.experts == [0, 1] && tie.weights == [0.5, 0.5])
  }

  @Test func badInputsAreRejected() throws {
    let config = shrunk(try Presets.named("qwen2-moe-mini"))
    let weights = try DenseMoEWeights.random(config: config, seed: 1).denseLayer()
    var rng = SeededGenerator(seed: 2)
    var x = rng.normalMatrix(rows: 3, columns: config.hiddenSize)
    x[1, 5] = .nan
    #expect {
      try CPUMoELayer.forward(x, weights: weights)
    } throws: { error in
      guard case EngineError.nonFinite(let text) = error else { return false }
      return text.contains("[1, 5]")
    }
    #expect(throws: EngineError.self) {
      try CPUMoELayer.forward(rng.normalMatrix(rows: 2, columns: 64), weights: weights)
    }
    // Weights that disagree with the config.
    #expect(throws: EngineError.self) {
      try CPUMoEWeights(config: config, router: weights.router, experts: Array(weights.experts.dropLast()), shared: weights.shared, sharedGate: weights.sharedGate)
    }
    #expect(throws: EngineError.self) {
      try CPUMoEWeights(config: config, router: weights.router, experts: weights.experts, shared: weights.shared, sharedGate: nil)
    }
    // Empty batch: zero rows out, no crash.
    let empty = try CPUMoELayer.forward(Matrix(rows: 0, columns: config.hiddenSize, repeating: 0), weights: weights)
    #expect(empty.output.rows == 0 && empty.plan.entryCount == 0)
  }
}
