#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Checkpoint
import SamoyedsFormat
import SamoyedsModel

/// Writes Hugging Face-style checkpoints with random weights in each
/// family's exact tensor layout (config.json, shards, index), for tests, the
/// demo and benchmarks when no real weights are at hand. Tensor by tensor, in
/// bounded memory.
///
/// Besides the MoE tensors it writes an embedding table, per-layer norms and
/// attention projections and, for non-MoE layers, a dense MLP, so pruning
/// has tensors to copy through. With `outlierChannels > 0` it also writes
/// `calibration.safetensors`: hidden states whose first few channels are 20x
/// larger, as real LLM activations have, which makes calibration-aware
/// pruning matter.
public enum SyntheticCheckpoint {
  public struct Options: Sendable {
    public var dtype: TensorDType = .bf16
    /// Decoder layers to write (nil: the config's count).
    public var layers: Int?
    public var shards = 1
    public var seed: UInt64 = 7
    public var calibrationTokens = 0
    public var outlierChannels = 0
    public var vocabulary = 256

    public init() {}
  }

  /// The config.json keys `MoEConfig(huggingFaceJSON:)` reads for `config`.
  public static func huggingFaceConfig(_ config: MoEConfig, layers: Int) -> JSONValue {
    var o: [String: JSONValue] = [
      "hidden_size": .int(Int64(config.hiddenSize)), "num_hidden_layers": .int(Int64(layers)),
      "hidden_act": .string("silu"), "torch_dtype": .string(config.torchDType),
      "num_experts_per_tok": .int(Int64(config.topK)), "norm_topk_prob": .bool(config.router.normalizeTopK),
    ]
    func set(_ key: String, _ value: Int) { o[key] = .int(Int64(value)) }
    switch config.family {
    case .mixtral:
      o["model_type"] = .string("mixtral")
      o["architectures"] = .array([.string("MixtralForCausalLM")])
      set("intermediate_size", config.expertIntermediateSize)
      set("num_local_experts", config.numExperts)
    case .qwen2MoE, .qwen3MoE:
      o["model_type"] = .string(config.family == .qwen2MoE ? "qwen2_moe" : "qwen3_moe")
      o["architectures"] = .array([.string(config.family == .qwen2MoE ? "Qwen2MoeForCausalLM" : "Qwen3MoeForCausalLM")])
      set("moe_intermediate_size", config.expertIntermediateSize)
      set("intermediate_size", config.expertIntermediateSize * 4)
      set("num_experts", config.numExperts)
      set("decoder_sparse_step", 1)
      if let shared = config.sharedExpert { set("shared_expert_intermediate_size", shared.intermediateSize) }
    case .deepseekMoE:
      o["model_type"] = .string("deepseek")
      o["architectures"] = .array([.string("DeepseekForCausalLM")])
      set("moe_intermediate_size", config.expertIntermediateSize)
      set("intermediate_size", config.expertIntermediateSize * 4)
      set("n_routed_experts", config.numExperts)
      set("n_shared_experts", (config.sharedExpert?.intermediateSize ?? 0) / config.expertIntermediateSize)
      set("first_k_dense_replace", config.moeLayerIndices.first ?? 0)
      set("moe_layer_freq", 1)
      o["scoring_func"] = .string("softmax")
    case .miniCPMMoE:
      o["model_type"] = .string("minicpm")
      o["architectures"] = .array([.string("MiniCPMForCausalLM")])
      set("intermediate_size", config.expertIntermediateSize)
      set("num_experts", config.numExperts)
    case .openMoE:
      o["model_type"] = .string("llama")
      o["architectures"] = .array([.string("OpenMoeForCausalLM")])
      set("intermediate_size", config.expertIntermediateSize)
      set("num_experts", config.numExperts)
      set("router_topk", config.topK)
      o["mlp_gated"] = .bool(true)
      let interval = config.moeLayerIndices.count > 1 ? config.moeLayerIndices[1] - config.moeLayerIndices[0] : (config.moeLayerIndices.first ?? 0) + 1
      set("moe_layer_interval", interval)
      if let capacity = config.router.capacity {
        o["router_drop_tks"] = .bool(true)
        o["router_capacity_factor_eval"] = .double(capacity.factor)
        set("router_min_capacity", capacity.minimum)
      }
    case .olmoe:
      o["model_type"] = .string("olmoe")
      o["architectures"] = .array([.string("OlmoeForCausalLM")])
      set("intermediate_size", config.expertIntermediateSize)
      set("num_experts", config.numExperts)
    }
    return .object(o)
  }

  /// Writes the checkpoint into `folder` (must not exist), built under
  /// `<folder>.partial-<pid>` and renamed at the end.
  public static func write(config base: MoEConfig, to target: String, options: Options) throws {
    let fm = FileManager.default
    guard !fm.fileExists(atPath: target) else { throw CheckpointError.io("\(target) exists") }
    let folder = target + ".partial-\(getpid())"
    try? fm.removeItem(atPath: folder)
    do {
      try fm.createDirectory(atPath: folder, withIntermediateDirectories: true)
    } catch {
      throw CheckpointError.io("\(target): the folder cannot be created")
    }
    var finished = false
    defer { if !finished { try? fm.removeItem(atPath: folder) } }
    let layers = options.layers ?? base.numHiddenLayers
    // Re-read the config we write, so layer placement follows the family rules.
    let json = huggingFaceConfig(base, layers: layers)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let configData = try encoder.encode(json)
    try configData.write(to: URL(fileURLWithPath: folder + "/config.json"))
    let config = try MoEConfig(huggingFaceJSON: configData, name: base.name)
    let layout = FamilyLayout(config.family)
    let h = config.hiddenSize

    // (name, shape, scale) of every tensor, grouped into shards by layer.
    var tensors: [[(String, [Int], Float)]] = Array(repeating: [], count: max(1, options.shards))
    tensors[0].append(("model.embed_tokens.weight", [options.vocabulary, h], 1))
    for layer in 0..<layers {
      let shard = layer % tensors.count
      let p = "model.layers.\(layer)."
      tensors[shard].append((p + "input_layernorm.weight", [h], 1))
      tensors[shard].append((p + "self_attn.o_proj.weight", [h, h], 1 / Float(h).squareRoot()))
      if config.moeLayerIndices.contains(layer) {
        tensors[shard].append((layout.router(layer: layer), [config.numExperts, h], 4 / Float(h).squareRoot()))
        var stacked = Set<String>()
        for (reference, rows, columns) in layout.expertTensors(layer: layer, config: config) {
          if reference.expert != nil {
            if stacked.insert(reference.name).inserted {
              tensors[shard].append((reference.name, [config.numExperts, columns, rows], 1 / Float(columns).squareRoot()))
            }
          } else {
            tensors[shard].append((reference.name, [rows, columns], 1 / Float(columns).squareRoot()))
          }
        }
        if let gate = layout.sharedGate(layer: layer) { tensors[shard].append((gate, [1, h], 1 / Float(h).squareRoot())) }
      } else {
        let f = config.expertIntermediateSize
        tensors[shard].append((p + "mlp.gate_proj.weight", [f, h], 1 / Float(h).squareRoot()))
        tensors[shard].append((p + "mlp.up_proj.weight", [f, h], 1 / Float(h).squareRoot()))
        tensors[shard].append((p + "mlp.down_proj.weight", [h, f], 1 / Float(f).squareRoot()))
      }
    }
    tensors[tensors.count - 1].append(("model.norm.weight", [h], 1))

    var rng = SeededGenerator(seed: options.seed)
    var weightMap: [String: String] = [:]
    let names =
      tensors.count == 1
      ? [CheckpointDirectory.singleName]
      : (1...tensors.count).map { "model-\(pad($0))-of-\(pad(tensors.count)).safetensors" }
    for (index, list) in tensors.enumerated() {
      let plans = list.map { TensorPlan(name: $0.0, dtype: options.dtype, shape: $0.1) }
      let writer = try SafeTensorsStreamWriter(
        path: folder + "/" + names[index], plans: plans, metadata: ["format": "pt"])
      for (name, shape, scale) in list {
        let count = shape.reduce(1, *)
        let isNorm = shape.count == 1
        // Random normal values in bounded chunks.
        var values = [Float](repeating: 0, count: count)
        for i in 0..<count { values[i] = isNorm ? 1 : rng.nextNormal() * scale }
        switch options.dtype {
        case .f32: try writer.append(name, elements: values)
        case .f16: try writer.append(name, elements: values.map { Float16($0) })
        default: try writer.append(name, elements: values.map { BFloat16($0).bitPattern })
        }
        weightMap[name] = names[index]
      }
      try writer.finish()
    }
    if tensors.count > 1 {
      let totalSize = tensors.joined().reduce(0) { $0 + $1.1.reduce(1, *) * options.dtype.byteSize }
      try CheckpointPruner.writeIndex(weightMap: weightMap, totalSize: totalSize, to: folder + "/" + CheckpointDirectory.indexName)
    }
    if options.calibrationTokens > 0 {
      var states = rng.normalMatrix(rows: options.calibrationTokens, columns: h)
      for r in 0..<states.rows {
        for c in 0..<min(options.outlierChannels, h) { states[r, c] *= 20 }
      }
      let writer = try SafeTensorsStreamWriter(
        path: folder + "/calibration.safetensors",
        plans: [TensorPlan(name: "hidden_states", dtype: .f32, shape: [states.rows, h])])
      try writer.append("hidden_states", elements: states.storage)
      try writer.finish()
    }
    guard rename(folder, target) == 0 else { throw CheckpointError.io("\(target): rename failed") }
    finished = true
  }

  static func pad(_ n: Int) -> String {
    let text = String(n)
    return String(repeating: "0", count: max(0, 5 - text.count)) + text
  }
}
