import SamoyedsModel

/// One of an expert's three SwiGLU projections.
public enum Projection: String, Sendable, CaseIterable, Codable {
  /// gate [ffn, hidden]
  case gate
  /// up [ffn, hidden]
  case up
  /// down [hidden, ffn]
  case down
}

/// Where an expert projection lives in a Hugging Face checkpoint.
///
/// Most families store one `nn.Linear` weight per expert, [out, in]. OpenMoE
/// stacks all experts of a layer into one tensor, [E, in, out] (used as
/// `x @ w[e]`), so the expert is an index and the matrix is transposed.
public struct TensorReference: Sendable, Hashable {
  /// The tensor's name in the checkpoint.
  public var name: String
  /// For stacked tensors, the expert's index along the first dimension.
  public var expert: Int?
  /// Whether the stored matrix is [in, out] and must be transposed to [out, in].
  public var transposed: Bool

  /// The name the sparse weight gets in a Samoyeds checkpoint: the tensor's
  /// own name, or `<name>.<expert>` for a stacked tensor.
  public var sparseName: String { expert.map { "\(name).\($0)" } ?? name }
}

/// Each family's tensor names for its MoE layers (the hub checkpoints'
/// names, which every loader maps to one internal layout).
///
/// | family | router | expert e | shared |
/// |---|---|---|---|
/// | Mixtral | `block_sparse_moe.gate` | `block_sparse_moe.experts.e.{w1,w3,w2}` (gate, up, down) | — |
/// | Qwen2-MoE | `mlp.gate` | `mlp.experts.e.{gate,up,down}_proj` | `mlp.shared_expert.*`, `mlp.shared_expert_gate` |
/// | DeepSeek-MoE | `mlp.gate` | as Qwen2-MoE | `mlp.shared_experts.*` |
/// | MiniCPM-MoE, Qwen3-MoE, OLMoE | `mlp.gate` | as Qwen2-MoE | — |
/// | OpenMoE | `mlp.gate_weight` | `mlp.experts.{wi_gate,wi_up,wo}` stacked [E, in, out] | — |
///
/// All names are prefixed `model.layers.<layer>.` and, but for OpenMoE's,
/// end in `.weight`.
public struct FamilyLayout: Sendable {
  public let family: MoEFamily

  public init(_ family: MoEFamily) { self.family = family }

  func prefix(_ layer: Int) -> String { "model.layers.\(layer)." }

  /// The router weight [E, hidden].
  public func router(layer: Int) -> String {
    switch family {
    case .mixtral: prefix(layer) + "block_sparse_moe.gate.weight"
    case .openMoE: prefix(layer) + "mlp.gate_weight"
    default: prefix(layer) + "mlp.gate.weight"
    }
  }

  /// Routed expert `expert`'s projection.
  public func expert(layer: Int, expert: Int, _ projection: Projection) -> TensorReference {
    switch family {
    case .mixtral:
      let short = ["gate": "w1", "up": "w3", "down": "w2"][projection.rawValue] ?? "w1"
      return TensorReference(
        name: prefix(layer) + "block_sparse_moe.experts.\(expert).\(short).weight", expert: nil, transposed: false)
    case .openMoE:
      let short = ["gate": "wi_gate", "up": "wi_up", "down": "wo"][projection.rawValue] ?? "wi_gate"
      return TensorReference(name: prefix(layer) + "mlp.experts.\(short)", expert: expert, transposed: true)
    default:
      return TensorReference(
        name: prefix(layer) + "mlp.experts.\(expert).\(projection.rawValue)_proj.weight", expert: nil, transposed: false)
    }
  }

  /// The shared expert's projection, for families that have one.
  public func shared(layer: Int, _ projection: Projection) -> TensorReference? {
    switch family {
    case .qwen2MoE:
      TensorReference(
        name: prefix(layer) + "mlp.shared_expert.\(projection.rawValue)_proj.weight", expert: nil, transposed: false)
    case .deepseekMoE:
      TensorReference(
        name: prefix(layer) + "mlp.shared_experts.\(projection.rawValue)_proj.weight", expert: nil, transposed: false)
    default: nil
    }
  }

  /// Qwen2-MoE's shared-expert gate [1, hidden].
  public func sharedGate(layer: Int) -> String? {
    family == .qwen2MoE ? prefix(layer) + "mlp.shared_expert_gate.weight" : nil
  }

  /// Every expert projection of `layer` (routed, then shared), with the
  /// shape [out, in] the config implies.
  public func expertTensors(layer: Int, config: MoEConfig) -> [(TensorReference, rows: Int, columns: Int)] {
    var result: [(TensorReference, rows: Int, columns: Int)] = []
    let h = config.hiddenSize
    let f = config.expertIntermediateSize
    for e in 0..<config.numExperts {
      for projection in Projection.allCases {
        let (rows, columns) = projection == .down ? (h, f) : (f, h)
        result.append((expert(layer: layer, expert: e, projection), rows, columns))
      }
    }
    if let shared = config.sharedExpert {
      for projection in Projection.allCases {
        if let reference = self.shared(layer: layer, projection) {
          let (rows, columns) =
            projection == .down ? (h, shared.intermediateSize) : (shared.intermediateSize, h)
          result.append((reference, rows, columns))
        }
      }
    }
    return result
  }
}
