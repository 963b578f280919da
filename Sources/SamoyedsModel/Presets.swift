/// Built-in configurations: the published models, and "mini" layers of the
/// same structure (same family, router rule, shared experts, top-k) at sizes
/// that run in milliseconds on a CPU, for tests and the demo.
///
/// Full presets equal what `MoEConfig(huggingFaceJSON:)` reads from the
/// model's config.json (a test checks this against the files).
public enum Presets {
  /// Every preset by name.
  public static let all: [MoEConfig] = full + mini

  /// The published models.
  public static let full: [MoEConfig] = [
    MoEConfig(
      name: "mixtral-8x7b", family: .mixtral, hiddenSize: 4096, expertIntermediateSize: 14336,
      numExperts: 8, router: RouterRule(topK: 2, normalizeTopK: true), numHiddenLayers: 32),
    MoEConfig(
      name: "mixtral-8x22b", family: .mixtral, hiddenSize: 6144, expertIntermediateSize: 16384,
      numExperts: 8, router: RouterRule(topK: 2, normalizeTopK: true), numHiddenLayers: 56),
    MoEConfig(
      name: "qwen1.5-moe-a2.7b", family: .qwen2MoE, hiddenSize: 2048, expertIntermediateSize: 1408,
      numExperts: 60, router: RouterRule(topK: 4, normalizeTopK: false),
      sharedExpert: SharedExpertConfig(intermediateSize: 5632, gate: .sigmoid), numHiddenLayers: 24),
    MoEConfig(
      name: "deepseek-moe-16b", family: .deepseekMoE, hiddenSize: 2048, expertIntermediateSize: 1408,
      numExperts: 64, router: RouterRule(topK: 6, normalizeTopK: false),
      sharedExpert: SharedExpertConfig(intermediateSize: 2816, gate: .none), numHiddenLayers: 28,
      moeLayerIndices: Array(1..<28)),
    MoEConfig(
      name: "minicpm-moe-8x2b", family: .miniCPMMoE, hiddenSize: 2304, expertIntermediateSize: 5760,
      numExperts: 8, router: RouterRule(topK: 2, normalizeTopK: true), numHiddenLayers: 40),
    MoEConfig(
      name: "openmoe-34b", family: .openMoE, hiddenSize: 3072, expertIntermediateSize: 12288,
      numExperts: 32,
      router: RouterRule(
        topK: 2, normalizeTopK: false, capacity: ExpertCapacity(factor: 2.0, minimum: 4)),
      numHiddenLayers: 32, moeLayerIndices: Array(stride(from: 3, to: 32, by: 4)),
      torchDType: "float16"),
    MoEConfig(
      name: "qwen3-30b-a3b", family: .qwen3MoE, hiddenSize: 2048, expertIntermediateSize: 768,
      numExperts: 128, router: RouterRule(topK: 8, normalizeTopK: true), numHiddenLayers: 48),
    MoEConfig(
      name: "olmoe-1b-7b", family: .olmoe, hiddenSize: 2048, expertIntermediateSize: 1024,
      numExperts: 64, router: RouterRule(topK: 8, normalizeTopK: false), numHiddenLayers: 16),
  ]

  /// Small layers of each family's structure. Hidden and expert sizes are
  /// multiples of 128 so the default pattern applies to every projection.
  public static let mini: [MoEConfig] = [
    MoEConfig(
      name: "mixtral-mini", family: .mixtral, hiddenSize: 256, expertIntermediateSize: 512,
      numExperts: 8, router: RouterRule(topK: 2, normalizeTopK: true), numHiddenLayers: 2),
    MoEConfig(
      name: "qwen2-moe-mini", family: .qwen2MoE, hiddenSize: 256, expertIntermediateSize: 128,
      numExperts: 12, router: RouterRule(topK: 4, normalizeTopK: false),
      sharedExpert: SharedExpertConfig(intermediateSize: 512, gate: .sigmoid), numHiddenLayers: 2),
    MoEConfig(
      name: "deepseek-moe-mini", family: .deepseekMoE, hiddenSize: 256, expertIntermediateSize: 128,
      numExperts: 16, router: RouterRule(topK: 6, normalizeTopK: false),
      sharedExpert: SharedExpertConfig(intermediateSize: 256, gate: .none), numHiddenLayers: 2,
      moeLayerIndices: [1]),
    MoEConfig(
      name: "minicpm-moe-mini", family: .miniCPMMoE, hiddenSize: 256, expertIntermediateSize: 384,
      numExperts: 8, router: RouterRule(topK: 2, normalizeTopK: true), numHiddenLayers: 2),
    MoEConfig(
      name: "openmoe-mini", family: .openMoE, hiddenSize: 256, expertIntermediateSize: 512,
      numExperts: 8,
      router: RouterRule(
        topK: 2, normalizeTopK: false, capacity: ExpertCapacity(factor: 2.0, minimum: 4)),
      numHiddenLayers: 4, moeLayerIndices: [3], torchDType: "float16"),
    MoEConfig(
      name: "qwen3-moe-mini", family: .qwen3MoE, hiddenSize: 256, expertIntermediateSize: 128,
      numExperts: 32, router: RouterRule(topK: 8, normalizeTopK: true), numHiddenLayers: 2),
    MoEConfig(
      name: "olmoe-mini", family: .olmoe, hiddenSize: 256, expertIntermediateSize: 128,
      numExperts: 32, router: RouterRule(topK: 8, normalizeTopK: false), numHiddenLayers: 2),
  ]

  /// Other accepted spellings.
  public static let aliases: [String: String] = [
    "mixtral": "mixtral-8x7b", "qwen2-moe": "qwen1.5-moe-a2.7b", "qwen1.5-moe": "qwen1.5-moe-a2.7b",
    "deepseek-moe": "deepseek-moe-16b", "minicpm-moe": "minicpm-moe-8x2b", "openmoe": "openmoe-34b",
    "qwen3-moe": "qwen3-30b-a3b", "olmoe": "olmoe-1b-7b",
  ]

  /// The preset named `name` (or an alias), or an error listing the names.
  public static func named(_ name: String) throws(ConfigError) -> MoEConfig {
    let key = aliases[name.lowercased()] ?? name.lowercased()
    if let config = all.first(where: { $0.name == key }) { return config }
    throw .unknownPreset("'\(name)'; known presets: \(all.map(\.name).joined(separator: ", "))")
  }
}
