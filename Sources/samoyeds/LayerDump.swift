import ArgumentParser
import CPUEngine
import Checkpoint
import SamoyedsFormat
import SamoyedsModel

/// `demo --dump FILE`: one layer's inputs, outputs and weights as a
/// safetensors file, so a reference implementation outside Swift (the
/// transformers block of the family, `bench/baselines/compare_hf.py`) can
/// run the same layer on the same tokens.
///
/// Tensors (f32), named as the baselines name them:
/// - `x` [T, hidden]; `output.cpu` [T, hidden]; `output.gpu` [T, hidden] when the GPU ran;
/// - `router` [E, hidden]; `w13` [E, 2·ffn, hidden] (gate rows, then up rows); `w2` [E, hidden, ffn];
/// - with a shared expert: `ws13` [2·sharedFfn, hidden], `ws2` [hidden, sharedFfn],
///   and for a sigmoid-gated one `shared_gate` [1, hidden].
///
/// `__metadata__` holds the layer's routing rule and shapes: `family`,
/// `name`, `hidden`, `ffn`, `experts`, `top_k`, `norm_topk`, `shared_ffn`,
/// `shared_gate`, and for OpenMoE `capacity_factor` and `capacity_min`.
enum LayerDump {
  static func write(
    to path: String, config: MoEConfig, weights: CPUMoEWeights, x: Matrix<Float>, cpuOutput: Matrix<Float>,
    gpuOutput: Matrix<Float>?
  ) throws {
    guard let dense = weights.denseWeights() else {
      throw ValidationError("--dump needs the layer's weights as dense matrices")
    }
    var file = SafeTensorsWriter()
    func add(_ name: String, _ shape: [Int], _ values: [Float]) throws {
      try file.add(name, dtype: .f32, shape: shape, elements: values)
    }
    let h = config.hiddenSize
    let f = config.expertIntermediateSize
    let e = config.numExperts
    try add("x", [x.rows, h], x.storage)
    try add("output.cpu", [x.rows, h], cpuOutput.storage)
    if let gpuOutput { try add("output.gpu", [x.rows, h], gpuOutput.storage) }
    try add("router", [e, h], dense.router.storage)
    try add("w13", [e, 2 * f, h], dense.experts.flatMap { $0.gate.storage + $0.up.storage })
    try add("w2", [e, h, f], dense.experts.flatMap { $0.down.storage })
    if let shared = dense.shared {
      let fs = shared.gate.rows
      try add("ws13", [2 * fs, h], shared.gate.storage + shared.up.storage)
      try add("ws2", [h, fs], shared.down.storage)
      if config.sharedExpert?.gate == .sigmoid, let gate = dense.sharedGate {
        try add("shared_gate", [1, h], gate.storage)
      }
    }
    var metadata: [String: String] = [
      "family": config.family.rawValue, "name": config.name, "hidden": "\(h)", "ffn": "\(f)", "experts": "\(e)",
      "top_k": "\(config.topK)", "norm_topk": config.router.normalizeTopK ? "true" : "false",
      "shared_ffn": "\(config.sharedExpert?.intermediateSize ?? 0)",
      "shared_gate": config.sharedExpert?.gate == .sigmoid ? "sigmoid" : "none",
    ]
    if let capacity = config.router.capacity {
      metadata["capacity_factor"] = "\(capacity.factor)"
      metadata["capacity_min"] = "\(capacity.minimum)"
    }
    file.metadata = metadata
    try file.write(to: path)
  }
}
