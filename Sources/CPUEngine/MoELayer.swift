import RealModule
import SamoyedsFormat
import SamoyedsModel

/// One linear projection's weight on the CPU: dense or in the format.
public enum CPULinear: Sendable {
  case dense(Matrix<Float>)
  case sparse(CPUSparseWeight)

  /// Output features (m).
  public var outputSize: Int {
    switch self {
    case .dense(let w): w.rows
    case .sparse(let w): w.rows
    }
  }

  /// Input features (k).
  public var inputSize: Int {
    switch self {
    case .dense(let w): w.columns
    case .sparse(let w): w.columns
    }
  }

  /// `X[rows] · Wᵀ`, [rows.count, m].
  public func apply(_ x: Matrix<Float>, rows: [Int32]? = nil) throws(EngineError) -> Matrix<Float> {
    switch self {
    case .dense(let w): try CPUGEMM.dense(x, rows: rows, weight: w)
    case .sparse(let w): try CPUGEMM.sparse(x, rows: rows, weight: w)
    }
  }

  /// Bytes the weight takes stored with element `dtype` (sparse: values,
  /// metadata and row selections).
  public func storedBytes(dtype: DType) -> Int {
    switch self {
    case .dense(let w): w.rows * w.columns * dtype.byteSize
    case .sparse(let w):
      SparseMatrix<Float>.storedByteCount(
        rows: w.rows, columns: w.columns, pattern: w.pattern, dtype: dtype)
    }
  }
}

/// A SwiGLU expert: `down(SiLU(gate · x) ⊙ (up · x))`.
///
/// gate, up: [ffn, hidden]; down: [hidden, ffn].
public struct CPUExpert: Sendable {
  public var gate: CPULinear
  public var up: CPULinear
  public var down: CPULinear

  public init(gate: CPULinear, up: CPULinear, down: CPULinear) {
    self.gate = gate
    self.up = up
    self.down = down
  }

  /// The expert on the token rows `rows` of `x` (all rows when nil):
  /// [rows.count, hidden].
  public func apply(_ x: Matrix<Float>, rows: [Int32]? = nil) throws(EngineError) -> Matrix<Float> {
    var hidden = try gate.apply(x, rows: rows)
    let upOut = try up.apply(x, rows: rows)
    for i in hidden.storage.indices {
      let g = hidden.storage[i]
      hidden.storage[i] = g / (1 + Float.exp(-g)) * upOut.storage[i]
    }
    return try down.apply(hidden)
  }

  public func storedBytes(dtype: DType) -> Int {
    gate.storedBytes(dtype: dtype) + up.storedBytes(dtype: dtype) + down.storedBytes(dtype: dtype)
  }
}

/// Every weight of one MoE layer.
///
/// - router: [E, hidden] (always dense)
/// - experts: E SwiGLU experts
/// - shared: the shared expert(s) as one SwiGLU MLP, when the family has one
/// - sharedGate: [1, hidden] for a sigmoid-gated shared expert
public struct CPUMoEWeights: Sendable {
  public var config: MoEConfig
  public var router: Matrix<Float>
  public var experts: [CPUExpert]
  public var shared: CPUExpert?
  public var sharedGate: Matrix<Float>?

  public init(
    config: MoEConfig, router: Matrix<Float>, experts: [CPUExpert], shared: CPUExpert? = nil,
    sharedGate: Matrix<Float>? = nil
  ) throws(EngineError) {
    self.config = config
    self.router = router
    self.experts = experts
    self.shared = shared
    self.sharedGate = sharedGate
    try validate()
  }

  /// Checks every shape against the configuration.
  public func validate() throws(EngineError) {
    let h = config.hiddenSize
    func check(_ linear: CPULinear, _ m: Int, _ k: Int, _ name: String) throws(EngineError) {
      guard linear.outputSize == m, linear.inputSize == k else {
        throw .shapeMismatch(
          "\(name) is [\(linear.outputSize), \(linear.inputSize)], expected [\(m), \(k)]")
      }
    }
    guard router.rows == config.numExperts, router.columns == h else {
      throw .shapeMismatch("router is [\(router.rows), \(router.columns)], expected [\(config.numExperts), \(h)]")
    }
    guard experts.count == config.numExperts else {
      throw .shapeMismatch("\(experts.count) experts given, config has \(config.numExperts)")
    }
    let f = config.expertIntermediateSize
    for (e, expert) in experts.enumerated() {
      try check(expert.gate, f, h, "expert \(e) gate_proj")
      try check(expert.up, f, h, "expert \(e) up_proj")
      try check(expert.down, h, f, "expert \(e) down_proj")
    }
    switch (config.sharedExpert, shared) {
    case (nil, nil): break
    case (let sc?, let s?):
      try check(s.gate, sc.intermediateSize, h, "shared expert gate_proj")
      try check(s.up, sc.intermediateSize, h, "shared expert up_proj")
      try check(s.down, h, sc.intermediateSize, "shared expert down_proj")
      if sc.gate == .sigmoid {
        guard let g = sharedGate, g.rows == 1, g.columns == h else {
          throw .shapeMismatch("sigmoid-gated shared expert needs a [1, \(h)] shared_expert_gate")
        }
      }
    case (nil, _?): throw .shapeMismatch("shared expert given but \(config.name) has none")
    case (_?, nil): throw .shapeMismatch("\(config.name) needs a shared expert")
    }
  }

  /// The same layer with every sparse projection densified: the dense
  /// reference a sparse layer must match.
  public func densified() throws(EngineError) -> CPUMoEWeights {
    func dense(_ linear: CPULinear) -> CPULinear {
      if case .sparse(let w) = linear { return .dense(w.densified()) }
      return linear
    }
    func expert(_ e: CPUExpert) -> CPUExpert { CPUExpert(gate: dense(e.gate), up: dense(e.up), down: dense(e.down)) }
    return try CPUMoEWeights(
      config: config, router: router, experts: experts.map(expert), shared: shared.map(expert), sharedGate: sharedGate)
  }

  /// Whether any projection is stored in the format.
  public var hasSparseExperts: Bool {
    func sparse(_ linear: CPULinear) -> Bool { if case .sparse = linear { return true } else { return false } }
    return (experts + (shared.map { [$0] } ?? [])).contains { sparse($0.gate) || sparse($0.up) || sparse($0.down) }
  }

  /// The dense projections as a `DenseMoEWeights` (for pruning in memory);
  /// nil when some projection is already sparse.
  public func denseWeights() -> DenseMoEWeights? {
    func matrix(_ linear: CPULinear) -> Matrix<Float>? { if case .dense(let m) = linear { return m } else { return nil } }
    func triple(_ e: CPUExpert) -> (gate: Matrix<Float>, up: Matrix<Float>, down: Matrix<Float>)? {
      guard let g = matrix(e.gate), let u = matrix(e.up), let d = matrix(e.down) else { return nil }
      return (g, u, d)
    }
    let routed = experts.compactMap(triple)
    guard routed.count == experts.count else { return nil }
    var sharedTriple: (gate: Matrix<Float>, up: Matrix<Float>, down: Matrix<Float>)? = nil
    if let shared {
      guard let t = triple(shared) else { return nil }
      sharedTriple = t
    }
    return DenseMoEWeights(config: config, router: router, experts: routed, shared: sharedTriple, sharedGate: sharedGate)
  }

  /// Bytes of all expert weights (routed and shared) stored with `dtype`.
  public func expertBytes(dtype: DType) -> Int {
    experts.reduce(0) { $0 + $1.storedBytes(dtype: dtype) } + (shared?.storedBytes(dtype: dtype) ?? 0)
  }
}

/// What a forward pass produced, with the routing it used.
public struct CPUMoEResult: Sendable {
  /// [T, hidden]
  public var output: Matrix<Float>
  /// The activation side the experts read.
  public var plan: RoutingPlan
}

/// The MoE layer forward on the CPU:
/// router → activation-side index lists → experts (SiLU(gate)·up, down)
/// → routing-weight scale → deterministic combine (+ shared experts).
public enum CPUMoELayer {
  /// Runs the layer on hidden states `x` [T, hidden].
  ///
  /// Throws on a shape mismatch or a non-finite hidden state.
  public static func forward(_ x: Matrix<Float>, weights: CPUMoEWeights) throws(EngineError) -> CPUMoEResult {
    try forward(
      x, config: weights.config, router: weights.router, sharedGate: weights.sharedGate,
      expert: { e throws(EngineError) in weights.experts[e] }, shared: { () throws(EngineError) in weights.shared })
  }

  /// The same forward with experts supplied one at a time (so a caller can
  /// load, or prune, one expert's weights at a time and keep memory bounded).
  /// `expert(e)` is called once per expert that receives tokens, in order.
  public static func forward(
    _ x: Matrix<Float>, config: MoEConfig, router: Matrix<Float>, sharedGate: Matrix<Float>?,
    expert: (Int) throws(EngineError) -> CPUExpert, shared: () throws(EngineError) -> CPUExpert?
  ) throws(EngineError) -> CPUMoEResult {
    let hidden = config.hiddenSize
    let tokens = x.rows
    let k = config.topK

    // 1. Router → activation side.
    let plan = try route(x, config: config, router: router)

    // 2. Experts on their token rows; results scaled into their slots.
    var slots = Matrix<Float>(rows: tokens * k, columns: hidden, repeating: 0)
    for e in 0..<config.numExperts {
      let range = plan.entries(ofExpert: e)
      if range.isEmpty { continue }
      let rows = Array(plan.tokenIndices[range])
      let y = try expert(e).apply(x, rows: rows)
      for (i, entry) in range.enumerated() {
        let slot = Int(plan.outputSlots[entry])
        let w = plan.weights[entry]
        for c in 0..<hidden { slots[slot, c] = w * y[i, c] }
      }
    }

    // 3. Deterministic combine: each token's slots in rank order.
    var output = Matrix<Float>(rows: tokens, columns: hidden, repeating: 0)
    for t in 0..<tokens {
      for rank in 0..<k {
        for c in 0..<hidden { output[t, c] += slots[t * k + rank, c] }
      }
    }

    // 4. Shared experts.
    if let sharedExpert = try shared() {
      let s = try sharedExpert.apply(x)
      let scale = try sharedExpertScale(x, config: config, sharedGate: sharedGate)
      for t in 0..<tokens {
        for c in 0..<hidden { output[t, c] += scale[t] * s[t, c] }
      }
    }
    return CPUMoEResult(output: output, plan: plan)
  }

  /// Steps 1-3 of the layer, shared by every engine: checks the hidden
  /// states `x` [T, hidden], computes the router logits `x · routerᵀ` [T, E]
  /// (f32, `CPUGEMM.dense`), routes them by the family's rule and builds the
  /// activation side.
  ///
  /// Throws `shapeMismatch` when `x` does not have `config.hiddenSize`
  /// columns and `nonFinite` naming the first NaN or infinity in `x`.
  public static func route(
    _ x: Matrix<Float>, config: MoEConfig, router: Matrix<Float>
  ) throws(EngineError) -> RoutingPlan {
    try checkHiddenStates(x, config: config)
    let logits = try CPUGEMM.dense(x, weight: router)
    let choice = Router.route(logits: logits, rule: config.router)
    do {
      return try RoutingPlan(
        numTokens: x.rows, numExperts: config.numExperts, topK: config.topK,
        selectedExperts: choice.experts, weights: choice.weights)
    } catch {
      throw .format(error)
    }
  }

  /// The checks `route` makes on hidden states `x` [T, hidden] (also made
  /// by engines that route elsewhere, e.g. on the GPU).
  ///
  /// Throws `shapeMismatch` when `x` does not have `config.hiddenSize`
  /// columns and `nonFinite` naming the first NaN or infinity in `x`.
  public static func checkHiddenStates(_ x: Matrix<Float>, config: MoEConfig) throws(EngineError) {
    guard x.columns == config.hiddenSize else {
      throw .shapeMismatch(
        "hidden states have \(x.columns) columns, \(config.name) has hidden size \(config.hiddenSize)")
    }
    if let (row, column) = x.firstNonFinite() {
      throw .nonFinite("hidden state [\(row), \(column)] is \(x[row, column])")
    }
  }

  /// The shared expert's per-token scale s(t) [T]: 1 for an ungated shared
  /// expert (DeepSeek-MoE), `sigmoid(x[t] · g)` for a sigmoid-gated one
  /// (Qwen2-MoE, `sharedGate` g [1, hidden]).
  public static func sharedExpertScale(
    _ x: Matrix<Float>, config: MoEConfig, sharedGate: Matrix<Float>?
  ) throws(EngineError) -> [Float] {
    var scale = [Float](repeating: 1, count: x.rows)
    if config.sharedExpert?.gate == .sigmoid, let gate = sharedGate {
      let g = try CPUGEMM.dense(x, weight: gate)
      for t in 0..<x.rows { scale[t] = 1 / (1 + Float.exp(-g[t, 0])) }
    }
    return scale
  }
}
