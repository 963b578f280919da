import Testing

@testable import SamoyedsModel

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The config.json files of every family (copied from shared/model-configs).
let fixtures: String = {
  let file = #filePath
  return String(file[..<file.lastIndex(of: "/")!]) + "/Fixtures"
}()

@Suite struct HuggingFaceConfigs {
  @Test(arguments: Presets.full.map(\.name))
  func configJSONMatchesPreset(name: String) throws {
    let parsed = try MoEConfig(huggingFaceConfigAt: "\(fixtures)/\(name).json")
    var preset = try Presets.named(name)
    preset.name = parsed.name
    #expect(parsed == preset)
  }

  @Test func familyRulesFromTheFiles() throws {
    let qwen = try MoEConfig(huggingFaceConfigAt: "\(fixtures)/qwen1.5-moe-a2.7b.json")
    #expect(qwen.family == .qwen2MoE)
    #expect(qwen.router.normalizeTopK == false)
    #expect(qwen.sharedExpert == SharedExpertConfig(intermediateSize: 5632, gate: .sigmoid))
    let deepseek = try MoEConfig(huggingFaceConfigAt: "\(fixtures)/deepseek-moe-16b.json")
    #expect(deepseek.sharedExpert == SharedExpertConfig(intermediateSize: 2 * 1408, gate: .none))
    #expect(deepseek.moeLayerIndices.first == 1 && deepseek.moeLayerIndices.count == 27)
    let openmoe = try MoEConfig(huggingFaceConfigAt: "\(fixtures)/openmoe-34b.json")
    #expect(openmoe.family == .openMoE)
    #expect(openmoe.router.capacity == ExpertCapacity(factor: 2.0, minimum: 4))
    #expect(openmoe.moeLayerIndices == [3, 7, 11, 15, 19, 23, 27, 31])
    let qwen3 = try MoEConfig(huggingFaceConfigAt: "\(fixtures)/qwen3-30b-a3b.json")
    #expect(qwen3.router.normalizeTopK && qwen3.sharedExpert == nil && qwen3.topK == 8)
    let olmoe = try MoEConfig(huggingFaceConfigAt: "\(fixtures)/olmoe-1b-7b.json")
    #expect(!olmoe.router.normalizeTopK && olmoe.numExperts == 64)
    let minicpm = try MoEConfig(huggingFaceConfigAt: "\(fixtures)/minicpm-moe-8x2b.json")
    #expect(minicpm.family == .miniCPMMoE && minicpm.router.normalizeTopK)
  }

  @Test func badConfigsGetOneClearError() throws {
    func parse(_ json: String) throws(ConfigError) -> MoEConfig {
      try MoEConfig(huggingFaceJSON: Data(json.utf8), name: "test")
    }
    #expect {
      try parse(#"{"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8}"#)
    } throws: { error in
      guard case ConfigError.unsupported(let text) = error else { return false }
      return text.contains("LlamaForCausalLM") && text.contains("MixtralForCausalLM")
    }
    #expect {
      try parse(#"{"model_type": "mixtral", "hidden_size": 8, "num_hidden_layers": 2}"#)
    } throws: { error in
      guard case ConfigError.missingKey(let text) = error else { return false }
      return text.contains("intermediate_size")
    }
    #expect(throws: ConfigError.self) { try parse("{not json") }
    #expect(throws: ConfigError.self) { try parse("[]") }
    #expect(throws: ConfigError.self) {
      try parse(
        #"{"model_type": "mixtral", "hidden_act": "gelu", "hidden_size": 8, "intermediate_size": 8, "num_local_experts": 2, "num_experts_per_tok": 1, "num_hidden_layers": 1}"#
      )
    }
    #expect(throws: ConfigError.self) {  // top-k above the expert count
      try parse(
        #"{"model_type": "mixtral", "hidden_size": 8, "intermediate_size": 8, "num_local_experts": 2, "num_experts_per_tok": 3, "num_hidden_layers": 1}"#
      )
    }
    #expect(throws: ConfigError.self) { try MoEConfig(huggingFaceConfigAt: "/nonexistent/config.json") }
    // Regressions (found by review): out-of-range numbers are refused before
    // any range or product is built from them.
    let mixtral = #""model_type": "mixtral", "intermediate_size": 8, "num_local_experts": 2, "num_experts_per_tok": 1"#
    for bad in [
      #"{\#(mixtral), "hidden_size": 8, "num_hidden_layers": -3}"#,
      #"{\#(mixtral), "hidden_size": 8, "num_hidden_layers": 9223372036854775807}"#,
      #"{\#(mixtral), "hidden_size": 1073741824, "num_hidden_layers": 1}"#,
      #"{"model_type": "deepseek", "hidden_size": 8, "num_hidden_layers": 1, "moe_intermediate_size": 4611686018427387904, "n_routed_experts": 2, "n_shared_experts": 4, "num_experts_per_tok": 1}"#,
      #"{"architectures": ["OpenMoeForCausalLM"], "model_type": "llama", "hidden_size": 8, "intermediate_size": 8, "num_experts": 2, "router_topk": 1, "num_hidden_layers": 4, "router_drop_tks": true, "router_capacity_factor_eval": 1e300}"#,
    ] {
      #expect(throws: ConfigError.self, "\(bad)") { try parse(bad) }
    }
    #expect {
      try Presets.named("gpt-5")
    } throws: { error in
      guard case ConfigError.unknownPreset(let text) = error else { return false }
      return text.contains("mixtral-mini")
    }
  }

  @Test func presetsAreUsableAndMiniPresetsMirrorTheirFamily() throws {
    for config in Presets.all { try config.validate() }
    #expect(try Presets.named("Mixtral") == Presets.named("mixtral-8x7b"))
    for family in MoEFamily.allCases {
      let full = Presets.full.first { $0.family == family }
      let mini = Presets.mini.first { $0.family == family }
      #expect(full != nil && mini != nil, "family \(family)")
      if let full, let mini {
        #expect(full.router.normalizeTopK == mini.router.normalizeTopK)
        #expect((full.sharedExpert == nil) == (mini.sharedExpert == nil))
        #expect(full.sharedExpert?.gate == mini.sharedExpert?.gate)
        #expect(full.router.capacity == mini.router.capacity)
        #expect(mini.hiddenSize % 128 == 0 && mini.expertIntermediateSize % 128 == 0)
      }
    }
  }

  @Test func capacityFollowsOpenMoE() {
    let capacity = ExpertCapacity(factor: 2.0, minimum: 4)
    #expect(capacity.capacity(tokens: 1, experts: 32, topK: 2) == 4)  // minimum
    #expect(capacity.capacity(tokens: 100, experts: 32, topK: 2) == 12)  // floor(12.5) = 12, even
    #expect(capacity.capacity(tokens: 72, experts: 32, topK: 2) == 10)  // 9 -> 10
  }
}
