#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The keys of a Hugging Face config.json that Samoyeds reads, for every
/// supported family. All optional: which ones must be present depends on
/// the family.
struct HuggingFaceConfig: Decodable {
  var architectures: [String]?
  var modelType: String?
  var hiddenAct: String?
  var hiddenSize: Int?
  var intermediateSize: Int?
  var moeIntermediateSize: Int?
  var sharedExpertIntermediateSize: Int?
  var numHiddenLayers: Int?
  var numLocalExperts: Int?
  var numExperts: Int?
  var nRoutedExperts: Int?
  var nSharedExperts: Int?
  var numExpertsPerTok: Int?
  var routerTopk: Int?
  var normTopkProb: Bool?
  var scoringFunc: String?
  var firstKDenseReplace: Int?
  var moeLayerFreq: Int?
  var decoderSparseStep: Int?
  var mlpOnlyLayers: [Int]?
  var moeLayerInterval: Int?
  var mlpGated: Bool?
  var routerCapacityFactorEval: Double?
  var routerMinCapacity: Int?
  var routerDropTks: Bool?
  var torchDtype: String?

  enum CodingKeys: String, CodingKey {
    case architectures
    case modelType = "model_type"
    case hiddenAct = "hidden_act"
    case hiddenSize = "hidden_size"
    case intermediateSize = "intermediate_size"
    case moeIntermediateSize = "moe_intermediate_size"
    case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
    case numHiddenLayers = "num_hidden_layers"
    case numLocalExperts = "num_local_experts"
    case numExperts = "num_experts"
    case nRoutedExperts = "n_routed_experts"
    case nSharedExperts = "n_shared_experts"
    case numExpertsPerTok = "num_experts_per_tok"
    case routerTopk = "router_topk"
    case normTopkProb = "norm_topk_prob"
    case scoringFunc = "scoring_func"
    case firstKDenseReplace = "first_k_dense_replace"
    case moeLayerFreq = "moe_layer_freq"
    case decoderSparseStep = "decoder_sparse_step"
    case mlpOnlyLayers = "mlp_only_layers"
    case moeLayerInterval = "moe_layer_interval"
    case mlpGated = "mlp_gated"
    case routerCapacityFactorEval = "router_capacity_factor_eval"
    case routerMinCapacity = "router_min_capacity"
    case routerDropTks = "router_drop_tks"
    case torchDtype = "torch_dtype"
  }
}

extension MoEConfig {
  /// Largest accepted decoder-layer count, hidden or intermediate size and
  /// expert count: far beyond any real model, small enough that shapes and
  /// parameter counts cannot overflow.
  public static let maxLayers = 10_000
  public static let maxDimension = 1 << 20
  public static let maxExperts = 65_536

  /// The architectures `init(huggingFaceJSON:)` accepts, as
  /// "architecture (model_type)".
  public static let supportedArchitectures = [
    "MixtralForCausalLM (mixtral)", "Qwen2MoeForCausalLM (qwen2_moe)",
    "DeepseekForCausalLM (deepseek)", "MiniCPMForCausalLM (minicpm, with num_experts)",
    "OpenMoeForCausalLM (llama)", "Qwen3MoeForCausalLM (qwen3_moe)", "OlmoeForCausalLM (olmoe)",
  ]

  /// Reads a Hugging Face config.json file.
  public init(huggingFaceConfigAt path: String) throws(ConfigError) {
    var isDirectory = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory
    else {
      throw .unreadable("\(path): no such file")
    }
    let data: Data
    do {
      data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
      throw .unreadable("\(path): cannot be read (\(error))")
    }
    let base = URL(fileURLWithPath: path).deletingLastPathComponent().lastPathComponent
    try self.init(huggingFaceJSON: data, name: base.isEmpty ? path : base)
  }

  /// Maps a Hugging Face config.json to the MoE layer configuration of its
  /// family.
  ///
  /// The family comes from `model_type` (and `architectures` for OpenMoE,
  /// whose model_type is "llama"). Unknown architectures are refused with
  /// the list of supported ones; missing keys are named.
  public init(huggingFaceJSON data: Data, name: String) throws(ConfigError) {
    let hf: HuggingFaceConfig
    do {
      hf = try JSONDecoder().decode(HuggingFaceConfig.self, from: data)
    } catch {
      throw .unreadable("\(name): not a valid config.json (\(error))")
    }
    let architecture = hf.architectures?.first ?? "?"
    let modelType = hf.modelType ?? "?"

    func require<T>(_ value: T?, _ key: String) throws(ConfigError) -> T {
      guard let value else { throw .missingKey("\(name): '\(key)' is required for \(modelType)") }
      return value
    }

    let family: MoEFamily
    if hf.architectures?.contains("OpenMoeForCausalLM") == true {
      family = .openMoE
    } else {
      switch modelType {
      case "mixtral": family = .mixtral
      case "qwen2_moe": family = .qwen2MoE
      case "deepseek": family = .deepseekMoE
      case "minicpm" where (hf.numExperts ?? 0) > 0: family = .miniCPMMoE
      case "qwen3_moe": family = .qwen3MoE
      case "olmoe": family = .olmoe
      default:
        throw .unsupported(
          "\(name): architecture \(architecture) (model_type \(modelType)) is not a supported MoE; supported: \(Self.supportedArchitectures.joined(separator: ", "))"
        )
      }
    }
    if let act = hf.hiddenAct, act != "silu", act != "swiglu" {
      throw .unsupported("\(name): hidden_act '\(act)'; Samoyeds experts are SwiGLU (silu)")
    }
    let hidden = try require(hf.hiddenSize, "hidden_size")
    let layers = try require(hf.numHiddenLayers, "num_hidden_layers")
    // Bounds before any arithmetic or range is built from these numbers.
    func bounded(_ value: Int?, _ key: String, _ range: ClosedRange<Int>) throws(ConfigError) {
      if let value, !range.contains(value) {
        throw .invalid("\(name): \(key) = \(value) is outside \(range.lowerBound)...\(range.upperBound)")
      }
    }
    try bounded(layers, "num_hidden_layers", 1...Self.maxLayers)
    try bounded(hidden, "hidden_size", 1...Self.maxDimension)
    try bounded(hf.intermediateSize, "intermediate_size", 1...Self.maxDimension)
    try bounded(hf.moeIntermediateSize, "moe_intermediate_size", 1...Self.maxDimension)
    try bounded(hf.sharedExpertIntermediateSize, "shared_expert_intermediate_size", 0...Self.maxDimension)
    for (value, key) in [(hf.numLocalExperts, "num_local_experts"), (hf.numExperts, "num_experts"), (hf.nRoutedExperts, "n_routed_experts")] {
      try bounded(value, key, 0...Self.maxExperts)
    }
    try bounded(hf.nSharedExperts, "n_shared_experts", 0...Self.maxExperts)
    try bounded(hf.numExpertsPerTok ?? hf.routerTopk, "num_experts_per_tok", 1...Self.maxExperts)
    try bounded(hf.decoderSparseStep, "decoder_sparse_step", 1...Self.maxLayers)
    try bounded(hf.moeLayerFreq, "moe_layer_freq", 1...Self.maxLayers)
    try bounded(hf.moeLayerInterval, "moe_layer_interval", 1...Self.maxLayers)
    try bounded(hf.firstKDenseReplace, "first_k_dense_replace", 0...Self.maxLayers)
    try bounded(hf.routerMinCapacity, "router_min_capacity", 0...Int(Int32.max))
    if let factor = hf.routerCapacityFactorEval, !(factor > 0 && factor <= 1e6) {
      throw .invalid("\(name): router_capacity_factor_eval = \(factor) must be in (0, 1e6]")
    }
    let dtype = hf.torchDtype ?? "bfloat16"

    switch family {
    case .mixtral:
      self.init(
        name: name, family: family, hiddenSize: hidden,
        expertIntermediateSize: try require(hf.intermediateSize, "intermediate_size"),
        numExperts: try require(hf.numLocalExperts, "num_local_experts"),
        router: RouterRule(topK: try require(hf.numExpertsPerTok, "num_experts_per_tok"), normalizeTopK: true),
        numHiddenLayers: layers, torchDType: dtype)

    case .miniCPMMoE:
      self.init(
        name: name, family: family, hiddenSize: hidden,
        expertIntermediateSize: try require(hf.intermediateSize, "intermediate_size"),
        numExperts: try require(hf.numExperts, "num_experts"),
        router: RouterRule(topK: try require(hf.numExpertsPerTok, "num_experts_per_tok"), normalizeTopK: true),
        numHiddenLayers: layers, torchDType: dtype)

    case .qwen2MoE, .qwen3MoE:
      let step = max(hf.decoderSparseStep ?? 1, 1)
      let dense = Set(hf.mlpOnlyLayers ?? [])
      let moeLayers = (0..<layers).filter { !dense.contains($0) && ($0 + 1) % step == 0 }
      var shared: SharedExpertConfig? = nil
      if family == .qwen2MoE, let size = hf.sharedExpertIntermediateSize, size > 0 {
        shared = SharedExpertConfig(intermediateSize: size, gate: .sigmoid)
      }
      self.init(
        name: name, family: family, hiddenSize: hidden,
        expertIntermediateSize: try require(hf.moeIntermediateSize, "moe_intermediate_size"),
        numExperts: try require(hf.numExperts, "num_experts"),
        router: RouterRule(
          topK: try require(hf.numExpertsPerTok, "num_experts_per_tok"),
          normalizeTopK: hf.normTopkProb ?? false),
        sharedExpert: shared, numHiddenLayers: layers, moeLayerIndices: moeLayers, torchDType: dtype)

    case .deepseekMoE:
      if let scoring = hf.scoringFunc, scoring != "softmax" {
        throw .unsupported("\(name): scoring_func '\(scoring)'; DeepSeek-MoE routing is softmax")
      }
      let expertSize = try require(hf.moeIntermediateSize, "moe_intermediate_size")
      let sharedCount = hf.nSharedExperts ?? 0
      let firstDense = hf.firstKDenseReplace ?? 0
      let frequency = max(hf.moeLayerFreq ?? 1, 1)
      self.init(
        name: name, family: family, hiddenSize: hidden, expertIntermediateSize: expertSize,
        numExperts: try require(hf.nRoutedExperts, "n_routed_experts"),
        router: RouterRule(
          topK: try require(hf.numExpertsPerTok, "num_experts_per_tok"),
          normalizeTopK: hf.normTopkProb ?? false),
        sharedExpert: sharedCount > 0
          ? SharedExpertConfig(intermediateSize: expertSize * sharedCount, gate: .none) : nil,
        numHiddenLayers: layers,
        moeLayerIndices: (0..<layers).filter { $0 >= firstDense && $0 % frequency == 0 },
        torchDType: dtype)

    case .openMoE:
      if hf.mlpGated == false {
        throw .unsupported("\(name): OpenMoE with mlp_gated=false; Samoyeds experts are gated SwiGLU")
      }
      let interval = max(hf.moeLayerInterval ?? 1, 1)
      var capacity: ExpertCapacity? = nil
      if hf.routerDropTks ?? false {
        capacity = ExpertCapacity(
          factor: hf.routerCapacityFactorEval ?? 2.0, minimum: hf.routerMinCapacity ?? 4)
      }
      self.init(
        name: name, family: family, hiddenSize: hidden,
        expertIntermediateSize: try require(hf.intermediateSize, "intermediate_size"),
        numExperts: try require(hf.numExperts, "num_experts"),
        router: RouterRule(
          topK: try require(hf.routerTopk ?? hf.numExpertsPerTok, "router_topk"),
          normalizeTopK: false, capacity: capacity),
        numHiddenLayers: layers,
        moeLayerIndices: (0..<layers).filter { ($0 + 1) % interval == 0 }, torchDType: dtype)

    case .olmoe:
      self.init(
        name: name, family: family, hiddenSize: hidden,
        expertIntermediateSize: try require(hf.intermediateSize, "intermediate_size"),
        numExperts: try require(hf.numExperts, "num_experts"),
        router: RouterRule(
          topK: try require(hf.numExpertsPerTok, "num_experts_per_tok"),
          normalizeTopK: hf.normTopkProb ?? false),
        numHiddenLayers: layers, torchDType: dtype)
    }
    try validate()
  }
}
