import CPUEngine
import Checkpoint
import SamoyedsFormat
import SamoyedsModel

/// Builds CPU MoE layers from a checkpoint: each expert projection comes in
/// the format when the checkpoint stores it so, dense otherwise.
public enum LayerLoader {
  /// The linear for one projection as stored.
  public static func linear(
    _ checkpoint: CheckpointDirectory, _ reference: TensorReference, rows: Int, columns: Int
  ) throws -> CPULinear {
    if checkpoint.hasSparse(reference) {
      return .sparse(CPUSparseWeight(try checkpoint.sparse(reference, rows: rows, columns: columns).asFloat))
    }
    return .dense(try checkpoint.dense(reference, rows: rows, columns: columns).asFloat)
  }

  /// One expert (routed `expert`, or the shared one when nil).
  public static func expert(_ checkpoint: CheckpointDirectory, layer: Int, expert: Int?) throws -> CPUExpert {
    let config = checkpoint.config
    let h = config.hiddenSize
    let f = expert == nil ? (config.sharedExpert?.intermediateSize ?? 0) : config.expertIntermediateSize
    func reference(_ projection: Projection) throws -> TensorReference {
      if let expert { return checkpoint.layout.expert(layer: layer, expert: expert, projection) }
      guard let shared = checkpoint.layout.shared(layer: layer, projection) else {
        throw CheckpointError.missingTensor("\(config.family) has no shared expert")
      }
      return shared
    }
    return CPUExpert(
      gate: try linear(checkpoint, reference(.gate), rows: f, columns: h),
      up: try linear(checkpoint, reference(.up), rows: f, columns: h),
      down: try linear(checkpoint, reference(.down), rows: h, columns: f))
  }

  /// The whole MoE layer `layer` (all experts in memory).
  public static func layer(_ checkpoint: CheckpointDirectory, layer: Int) throws -> CPUMoEWeights {
    let config = checkpoint.config
    guard config.moeLayerIndices.contains(layer) else {
      throw CheckpointError.missingTensor(
        "layer \(layer) of \(config.name) is not an MoE layer; MoE layers: \(config.moeLayerIndices)")
    }
    let router = try checkpoint.denseFloat(
      checkpoint.layout.router(layer: layer), rows: config.numExperts, columns: config.hiddenSize)
    let experts = try (0..<config.numExperts).map { try expert(checkpoint, layer: layer, expert: $0) }
    let shared = config.sharedExpert == nil ? nil : try expert(checkpoint, layer: layer, expert: nil)
    let sharedGate = try checkpoint.layout.sharedGate(layer: layer).map {
      try checkpoint.denseFloat($0, rows: 1, columns: config.hiddenSize)
    }
    return try CPUMoEWeights(config: config, router: router, experts: experts, shared: shared, sharedGate: sharedGate)
  }
}
