/// The MoE families Samoyeds runs, each with its own router rules.
public enum MoEFamily: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
  /// Mixtral: softmax over all experts, top-k, renormalized.
  case mixtral
  /// Qwen2-MoE (Qwen1.5-MoE): softmax, top-k, not renormalized; one shared
  /// expert scaled by sigmoid(shared_gate · x).
  case qwen2MoE = "qwen2_moe"
  /// DeepSeek-MoE: softmax, top-k, not renormalized; shared experts added
  /// ungated; the first layers dense.
  case deepseekMoE = "deepseek"
  /// MiniCPM-MoE: softmax, top-k, renormalized (Mixtral-style).
  case miniCPMMoE = "minicpm"
  /// OpenMoE: softmax, top-k, not renormalized, with an expert capacity
  /// (tokens past it are dropped, first choices before second choices).
  case openMoE = "openmoe"
  /// Qwen3-MoE: fine-grained, softmax, top-k, renormalized per config.
  case qwen3MoE = "qwen3_moe"
  /// OLMoE: fine-grained, softmax, top-k, renormalized per config.
  case olmoe

  public var description: String { rawValue }
}

/// How many tokens an expert accepts (OpenMoE's evaluation-time routing).
///
/// `capacity(T) = max(minimum, even(floor(topK * factor * T / E)))` where
/// `even` rounds up to an even number, as in OpenMoE's Top2 router. Tokens
/// are admitted in order: every first choice (in token order) before any
/// second choice; assignments past the capacity are dropped.
public struct ExpertCapacity: Sendable, Hashable, Codable {
  /// Capacity factor (`router_capacity_factor_eval`).
  public var factor: Double
  /// Lower bound (`router_min_capacity`).
  public var minimum: Int

  public init(factor: Double, minimum: Int) {
    self.factor = factor
    self.minimum = minimum
  }

  /// Tokens each expert accepts for a batch of `tokens` tokens.
  public func capacity(tokens: Int, experts: Int, topK: Int) -> Int {
    let raw = (Double(topK) * factor * Double(tokens) / Double(experts)).rounded(.down)
    var value = raw.isFinite ? Int(min(raw, Double(Int32.max))) : Int(Int32.max)
    value += value % 2
    return max(value, minimum)
  }
}

/// Top-k routing over a softmax of the router logits.
public struct RouterRule: Sendable, Hashable, Codable {
  /// Experts chosen per token.
  public var topK: Int
  /// Divide the chosen weights by their sum.
  public var normalizeTopK: Bool
  /// Optional capacity limit (token dropping); nil = no limit.
  public var capacity: ExpertCapacity?

  public init(topK: Int, normalizeTopK: Bool, capacity: ExpertCapacity? = nil) {
    self.topK = topK
    self.normalizeTopK = normalizeTopK
    self.capacity = capacity
  }
}

/// How a shared expert's output is scaled before it is added.
public enum SharedExpertGate: String, Sendable, Hashable, Codable {
  /// Added as is (DeepSeek-MoE).
  case none
  /// Scaled per token by sigmoid(x · g), g a [1, hidden] weight (Qwen2-MoE).
  case sigmoid
}

/// The always-active expert(s) some families add to every token.
///
/// Several shared experts (DeepSeek's `n_shared_experts`) are one SwiGLU MLP
/// whose intermediate size is their sum, exactly as the reference models
/// implement them.
public struct SharedExpertConfig: Sendable, Hashable, Codable {
  public var intermediateSize: Int
  public var gate: SharedExpertGate

  public init(intermediateSize: Int, gate: SharedExpertGate) {
    self.intermediateSize = intermediateSize
    self.gate = gate
  }
}

/// The shape and routing of one family's MoE layer, plus where MoE layers
/// sit in the model.
///
/// Experts are SwiGLU: `down(SiLU(gate · x) ⊙ (up · x))` with gate and up
/// [expertIntermediateSize, hiddenSize] and down [hiddenSize,
/// expertIntermediateSize].
public struct MoEConfig: Sendable, Hashable, Codable, CustomStringConvertible {
  /// Preset or source name.
  public var name: String
  public var family: MoEFamily
  public var hiddenSize: Int
  /// Intermediate size of one routed expert.
  public var expertIntermediateSize: Int
  public var numExperts: Int
  public var router: RouterRule
  public var sharedExpert: SharedExpertConfig?
  /// Decoder layers in the model.
  public var numHiddenLayers: Int
  /// Indices of the decoder layers that hold an MoE block (the others are
  /// dense MLPs, untouched by Samoyeds).
  public var moeLayerIndices: [Int]
  /// The checkpoint's dtype ("bfloat16", "float16", …).
  public var torchDType: String

  public init(
    name: String, family: MoEFamily, hiddenSize: Int, expertIntermediateSize: Int,
    numExperts: Int, router: RouterRule, sharedExpert: SharedExpertConfig? = nil,
    numHiddenLayers: Int, moeLayerIndices: [Int]? = nil, torchDType: String = "bfloat16"
  ) {
    self.name = name
    self.family = family
    self.hiddenSize = hiddenSize
    self.expertIntermediateSize = expertIntermediateSize
    self.numExperts = numExperts
    self.router = router
    self.sharedExpert = sharedExpert
    self.numHiddenLayers = numHiddenLayers
    self.moeLayerIndices = moeLayerIndices ?? Array(0..<numHiddenLayers)
    self.torchDType = torchDType
  }

  /// Experts per token.
  public var topK: Int { router.topK }

  /// Checks that the numbers make a usable layer.
  public func validate() throws(ConfigError) {
    func positive(_ value: Int, _ what: String) throws(ConfigError) {
      guard value > 0 else { throw .invalid("\(name): \(what) must be positive, got \(value)") }
    }
    try positive(hiddenSize, "hidden_size")
    try positive(expertIntermediateSize, "expert intermediate size")
    try positive(numExperts, "number of experts")
    try positive(router.topK, "experts per token")
    guard router.topK <= numExperts else {
      throw .invalid("\(name): top-k \(router.topK) exceeds the \(numExperts) experts")
    }
    if let shared = sharedExpert { try positive(shared.intermediateSize, "shared expert size") }
    if let capacity = router.capacity, !(capacity.factor > 0 && capacity.factor <= 1e6) || capacity.minimum < 0 {
      throw .invalid("\(name): capacity factor must be in (0, 1e6] and minimum >= 0")
    }
    for (value, what) in [(hiddenSize, "hidden size"), (expertIntermediateSize, "expert intermediate size"),
                          (sharedExpert?.intermediateSize ?? 1, "shared expert size")]
    where value > Self.maxDimension {
      throw .invalid("\(name): \(what) \(value) exceeds \(Self.maxDimension)")
    }
    guard numExperts <= Self.maxExperts, numHiddenLayers <= Self.maxLayers else {
      throw .invalid("\(name): \(numExperts) experts or \(numHiddenLayers) layers exceed the limits")
    }
  }

  /// Parameters of one MoE layer's experts (routed and shared, not router).
  public var expertParameterCount: Int {
    let routed = numExperts * 3 * hiddenSize * expertIntermediateSize
    let shared = (sharedExpert?.intermediateSize ?? 0) * 3 * hiddenSize
    return routed + shared
  }

  public var description: String {
    var text =
      "\(name) [\(family)]: hidden \(hiddenSize), \(numExperts) experts x ffn \(expertIntermediateSize), top-\(router.topK)"
    text += router.normalizeTopK ? " renormalized" : " not renormalized"
    if let capacity = router.capacity {
      text += ", capacity factor \(capacity.factor) (min \(capacity.minimum))"
    }
    if let shared = sharedExpert {
      text += ", shared expert ffn \(shared.intermediateSize)"
      if shared.gate == .sigmoid { text += " (sigmoid gate)" }
    }
    text += ", \(moeLayerIndices.count)/\(numHiddenLayers) MoE layers"
    return text
  }
}

/// A configuration that cannot be read or used.
public enum ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
  case unreadable(String)
  case unsupported(String)
  case missingKey(String)
  case invalid(String)
  case unknownPreset(String)

  public var description: String {
    switch self {
    case .unreadable(let s): "cannot read config: \(s)"
    case .unsupported(let s): "unsupported model: \(s)"
    case .missingKey(let s): "config.json lacks a key: \(s)"
    case .invalid(let s): "invalid config: \(s)"
    case .unknownPreset(let s): "unknown preset: \(s)"
    }
  }
}
