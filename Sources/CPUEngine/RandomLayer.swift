import SamoyedsFormat
import SamoyedsModel

/// Dense f32 weights of one MoE layer, before any pruning.
///
/// Shapes as in `CPUMoEWeights`; each expert is (gate, up, down).
public struct DenseMoEWeights: Sendable {
  public var config: MoEConfig
  public var router: Matrix<Float>
  public var experts: [(gate: Matrix<Float>, up: Matrix<Float>, down: Matrix<Float>)]
  public var shared: (gate: Matrix<Float>, up: Matrix<Float>, down: Matrix<Float>)?
  public var sharedGate: Matrix<Float>?

  /// Random weights of `config`'s shapes: normal, scaled by 1/sqrt(fan-in)
  /// (the router by 4/sqrt(hidden) so routing is decisive but not one-hot).
  public static func random(config: MoEConfig, seed: UInt64) -> DenseMoEWeights {
    var rng = SeededGenerator(seed: seed)
    let h = config.hiddenSize
    let f = config.expertIntermediateSize
    func mlp(_ ffn: Int) -> (gate: Matrix<Float>, up: Matrix<Float>, down: Matrix<Float>) {
      let inScale = 1 / Float(h).squareRoot()
      let outScale = 1 / Float(ffn).squareRoot()
      return (
        rng.normalMatrix(rows: ffn, columns: h, scale: inScale),
        rng.normalMatrix(rows: ffn, columns: h, scale: inScale),
        rng.normalMatrix(rows: h, columns: ffn, scale: outScale)
      )
    }
    let router = rng.normalMatrix(rows: config.numExperts, columns: h, scale: 4 / Float(h).squareRoot())
    let experts = (0..<config.numExperts).map { _ in mlp(f) }
    let shared = config.sharedExpert.map { mlp($0.intermediateSize) }
    let sharedGate =
      config.sharedExpert?.gate == .sigmoid
      ? rng.normalMatrix(rows: 1, columns: h, scale: 1 / Float(h).squareRoot()) : nil
    return DenseMoEWeights(
      config: config, router: router, experts: experts, shared: shared, sharedGate: sharedGate)
  }

  /// The layer with every expert projection (routed and shared) dense.
  public func denseLayer() throws(EngineError) -> CPUMoEWeights {
    try CPUMoEWeights(
      config: config, router: router,
      experts: experts.map { CPUExpert(gate: .dense($0.gate), up: .dense($0.up), down: .dense($0.down)) },
      shared: shared.map { CPUExpert(gate: .dense($0.gate), up: .dense($0.up), down: .dense($0.down)) },
      sharedGate: sharedGate)
  }

  /// Prunes every expert projection (routed and shared) into the format.
  ///
  /// Returns the sparse layer and the dense layer holding exactly the
  /// pruned weights (densified), the reference the sparse layer must match.
  /// Values are rounded to `storage` first, as a checkpoint would hold them.
  public func pruned(
    pattern: SparsePattern, storage: DType = .f32
  ) throws(EngineError) -> (sparse: CPUMoEWeights, densePruned: CPUMoEWeights) {
    func prune(_ w: Matrix<Float>) throws(EngineError) -> (CPULinear, CPULinear) {
      do {
        switch storage {
        case .f32:
          let s = try SparseMatrix<Float>.prune(w, pattern: pattern)
          return (.sparse(CPUSparseWeight(s)), .dense(s.densified()))
        case .bf16:
          let s = try SparseMatrix<BFloat16>.prune(Matrix<BFloat16>.rounding(w), pattern: pattern)
          return (.sparse(CPUSparseWeight(s)), .dense(s.densified().toFloat()))
        case .fp16:
          let s = try SparseMatrix<Float16>.prune(Matrix<Float16>.rounding(w), pattern: pattern)
          return (.sparse(CPUSparseWeight(s)), .dense(s.densified().toFloat()))
        }
      } catch {
        throw .format(error)
      }
    }
    func expert(_ e: (gate: Matrix<Float>, up: Matrix<Float>, down: Matrix<Float>)) throws(EngineError) -> (
      CPUExpert, CPUExpert
    ) {
      let g = try prune(e.gate)
      let u = try prune(e.up)
      let d = try prune(e.down)
      return (CPUExpert(gate: g.0, up: u.0, down: d.0), CPUExpert(gate: g.1, up: u.1, down: d.1))
    }
    var sparseExperts: [CPUExpert] = []
    var denseExperts: [CPUExpert] = []
    for e in experts {
      let (s, d) = try expert(e)
      sparseExperts.append(s)
      denseExperts.append(d)
    }
    var sharedPair: (CPUExpert, CPUExpert)? = nil
    if let shared { sharedPair = try expert(shared) }
    let sparse = try CPUMoEWeights(
      config: config, router: router, experts: sparseExperts, shared: sharedPair?.0, sharedGate: sharedGate)
    let dense = try CPUMoEWeights(
      config: config, router: router, experts: denseExperts, shared: sharedPair?.1, sharedGate: sharedGate)
    return (sparse, dense)
  }
}
