#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CPUEngine
import Checkpoint
import SamoyedsFormat
import SamoyedsModel

/// Calibration data for importance-aware pruning.
///
/// A safetensors file holding one of (checked in this order):
/// - `layers.<i>.hidden_states` [N, hidden]: the inputs of MoE layer i
///   (for the layers it names; others fall back to the next two forms);
/// - `hidden_states` [N, hidden]: one set used for every MoE layer;
/// - `input_ids` [N] (I32 or I64): token ids, embedded through the
///   checkpoint's `model.embed_tokens.weight` and used for every MoE layer.
///   This skips attention and norms, so it approximates the layer inputs.
///
/// Hidden states may be BF16, F16 or F32. The last quarter of the rows (at
/// least one) is held out for the quality report; the rest fits the
/// importance.
public struct CalibrationSet {
  public let path: String
  let perLayer: [Int: Matrix<Float>]
  let common: Matrix<Float>?

  public init(path: String, checkpoint: CheckpointDirectory) throws {
    self.path = path
    let file = try SafeTensorsFile(path: path)
    let hidden = checkpoint.config.hiddenSize
    func states(_ name: String) throws -> Matrix<Float> {
      let info = try file.info(name)
      guard info.shape.count == 2, info.shape[1] == hidden, info.shape[0] >= 2 else {
        throw CheckpointError.shapeMismatch(
          "\(path): '\(name)' is \(info.shape); calibration states must be [N >= 2, hidden = \(hidden)]")
      }
      let values: [Float]
      switch info.dtype {
      case .f32: values = try file.array(name, as: .f32)
      case .bf16: values = (try file.array(name, as: .bf16) as [UInt16]).map { BFloat16(bitPattern: $0).floatValue }
      case .f16: values = (try file.array(name, as: .f16) as [Float16]).map { Float($0) }
      default:
        throw CheckpointError.unsupportedDType("\(path): '\(name)' is \(info.dtype.rawValue); use F32, BF16 or F16")
      }
      let matrix = try Matrix(rows: info.shape[0], columns: hidden, storage: values)
      if let (r, c) = matrix.firstNonFinite() {
        throw CheckpointError.invalid("\(path): '\(name)' has a non-finite value at [\(r), \(c)]")
      }
      return matrix
    }
    var byLayer: [Int: Matrix<Float>] = [:]
    for layer in checkpoint.config.moeLayerIndices where file.tensors["layers.\(layer).hidden_states"] != nil {
      byLayer[layer] = try states("layers.\(layer).hidden_states")
    }
    let common: Matrix<Float>?
    if file.tensors["hidden_states"] != nil {
      common = try states("hidden_states")
    } else if let ids = file.tensors["input_ids"] {
      let tokens: [Int]
      switch ids.dtype {
      case .i32: tokens = (try file.array("input_ids", as: .i32) as [Int32]).map(Int.init)
      case .i64: tokens = (try file.array("input_ids", as: .i64) as [Int64]).map { Int($0) }
      default: throw CheckpointError.unsupportedDType("\(path): input_ids are \(ids.dtype.rawValue); use I32 or I64")
      }
      let embedName = "model.embed_tokens.weight"
      let embedFile = try checkpoint.file(holding: embedName)
      let shape = try embedFile.info(embedName).shape
      guard shape.count == 2, shape[1] == hidden else {
        throw CheckpointError.shapeMismatch("\(embedFile.path): '\(embedName)' is \(shape), expected [vocab, \(hidden)]")
      }
      guard tokens.count >= 2, let bad = Optional(tokens.first { $0 < 0 || $0 >= shape[0] }), bad == nil else {
        throw CheckpointError.invalid("\(path): input_ids need at least 2 ids, each in 0..<\(shape[0])")
      }
      let table = try checkpoint.dense(
        TensorReference(name: embedName, expert: nil, transposed: false), rows: shape[0], columns: hidden
      ).asFloat
      common = Matrix(rows: tokens.count, columns: hidden) { r, c in table[tokens[r], c] }
    } else {
      common = nil
    }
    self.common = common
    guard common != nil || !byLayer.isEmpty else {
      throw CheckpointError.missingTensor(
        "\(path): no hidden_states, layers.<i>.hidden_states or input_ids tensor (see docs/CHECKPOINTS.md)")
    }
    self.perLayer = byLayer
  }

  func all(layer: Int) -> Matrix<Float> {
    // One of the two exists (checked in init).
    perLayer[layer] ?? common ?? Matrix(rows: 0, columns: 0, repeating: 0)
  }

  static func split(_ m: Matrix<Float>) -> Int { max(1, m.rows - max(1, m.rows / 4)) }

  /// Rows that fit the importance.
  public func fitting(layer: Int) -> Matrix<Float> {
    let m = all(layer: layer)
    let n = Self.split(m)
    return Matrix(rows: n, columns: m.columns) { r, c in m[r, c] }
  }

  /// Held-out rows for the quality report.
  public func heldOut(layer: Int) -> Matrix<Float> {
    let m = all(layer: layer)
    let n = Self.split(m)
    return Matrix(rows: m.rows - n, columns: m.columns) { r, c in m[n + r, c] }
  }
}

/// Input-channel norms of one expert over the calibration tokens routed to
/// it: ‖x_c‖ for gate/up's inputs, ‖h_c‖ (h = SiLU(gate·x) ⊙ up·x) for
/// down's.
public struct ExpertNorms: Sendable {
  public var input: [Float]
  public var intermediate: [Float]

  /// The norms for the projection `reference` names.
  func norms(for reference: TensorReference, checkpoint: CheckpointDirectory, layer: Int) -> [Float] {
    let layout = checkpoint.layout
    for e in 0..<checkpoint.config.numExperts where layout.expert(layer: layer, expert: e, .down) == reference {
      return intermediate
    }
    if layout.shared(layer: layer, .down) == reference { return intermediate }
    return input
  }

  /// Routes `x` with the layer's dense router and measures every expert that
  /// receives tokens (one expert's weights in memory at a time). Experts
  /// with no calibration token are absent: they fall back to magnitude.
  static func compute(_ checkpoint: CheckpointDirectory, layer: Int, x: Matrix<Float>) throws -> [Int?: ExpertNorms] {
    let config = checkpoint.config
    let router = try checkpoint.denseFloat(
      checkpoint.layout.router(layer: layer), rows: config.numExperts, columns: config.hiddenSize)
    let choice = Router.route(logits: try CPUGEMM.dense(x, weight: router), rule: config.router)
    let plan = try RoutingPlan(
      numTokens: x.rows, numExperts: config.numExperts, topK: config.topK, selectedExperts: choice.experts,
      weights: choice.weights)
    var result: [Int?: ExpertNorms] = [:]
    func measure(_ expert: Int?, rows: [Int32]) throws -> ExpertNorms {
      let weights = try LayerLoader.expert(checkpoint, layer: layer, expert: expert)
      let g = try weights.gate.apply(x, rows: rows)
      let u = try weights.up.apply(x, rows: rows)
      var input = [Float](repeating: 0, count: x.columns)
      for r in rows {
        for c in 0..<x.columns { input[c] += x[Int(r), c] * x[Int(r), c] }
      }
      var intermediate = [Float](repeating: 0, count: g.columns)
      for i in 0..<g.rows {
        for c in 0..<g.columns {
          let h = g[i, c] / (1 + Float.exp(-g[i, c])) * u[i, c]
          intermediate[c] += h * h
        }
      }
      return ExpertNorms(input: input.map { $0.squareRoot() }, intermediate: intermediate.map { $0.squareRoot() })
    }
    for e in 0..<config.numExperts {
      let range = plan.entries(ofExpert: e)
      if range.isEmpty { continue }
      result[e] = try measure(e, rows: Array(plan.tokenIndices[range]))
    }
    if config.sharedExpert != nil {
      result[nil] = try measure(nil, rows: (0..<x.rows).map(Int32.init))
    }
    return result
  }
}
