import Kernels
import SamoyedsFormat
import SamoyedsModel

/// Device memory of the GPU MoE layer, computed from the configuration
/// alone (no device): the expert weights of every MoE layer, dense bf16 or
/// packed in the format, and the buffers one forward of T tokens allocates
/// (`GPUMoELayer`'s scratch, the GPU router's plan, the split-k workspace).
/// `largestTokens` answers: how many tokens fit in a memory budget? Layers
/// run one after another, so activations count once; weights count for
/// every MoE layer.
///
/// No buffer of the layer is sized by experts × T: the slots are
/// [T·topK, hidden], the intermediate [T, ffn] (reused expert after
/// expert) and, on the device path (grouped launches, `DecodeGraph`), the
/// grouped intermediate [T·topK, ffn] (every expert's rows at once). Not
/// counted: the GPU router's logits workspace (f32 [T, E] per k-split;
/// routing needs a score per token and expert) when the layer routes on
/// the device.
public enum LayerMemory {
  /// a · b, or Int.max when that overflows (configurations can describe
  /// more bytes than an Int holds; the answer is then "does not fit").
  public static func product(_ a: Int, _ b: Int) -> Int {
    let (value, overflow) = a.multipliedReportingOverflow(by: b)
    return overflow ? Int.max : value
  }

  /// a + b, or Int.max when that overflows.
  public static func sum(_ a: Int, _ b: Int) -> Int {
    let (value, overflow) = a.addingReportingOverflow(b)
    return overflow ? Int.max : value
  }

  /// The buffers `GPUMoELayer` allocates for a forward of T tokens (16-bit
  /// x and intermediate), in bytes.
  public struct ScratchSizes: Sendable, Equatable {
    /// x [T, hidden].
    public var x: Int
    /// The index lists (`IndexUpload`).
    public var indices: Int
    /// [T, max(ffn, shared ffn)]: SiLU(gate)·up of one expert at a time.
    public var intermediate: Int
    /// [T·topK, hidden] f32.
    public var slots: Int
    /// [T, hidden] f32.
    public var out: Int
  }

  /// `shared`: whether the layer runs a shared expert (one more index word per token).
  public static func scratchSizes(_ config: MoEConfig, tokens: Int, shared: Bool? = nil) -> ScratchSizes {
    let hidden = config.hiddenSize
    let ffn = max(config.expertIntermediateSize, config.sharedExpert?.intermediateSize ?? 0)
    return ScratchSizes(
      x: tokens * hidden * 2,
      indices: IndexUpload.wordCapacity(tokens: tokens, topK: config.topK, shared: shared ?? (config.sharedExpert != nil)) * 4,
      intermediate: tokens * ffn * 2, slots: tokens * config.topK * hidden * 4, out: tokens * hidden * 4)
  }

  /// The device path's grouped scratch for `entries` (T·topK) routed
  /// entries: the intermediate [entries, ffn] 16-bit (every expert's SiLU
  /// rows) and the identity rows [entries] Int32 the down projection reads.
  public static func groupedSizes(_ config: MoEConfig, entries: Int) -> (intermediate: Int, rows: Int) {
    (max(entries * config.expertIntermediateSize * 2, 16), max(entries, 1) * 4)
  }

  /// Bytes of each buffer one forward of `tokens` tokens allocates, by name:
  /// `scratchSizes`, the GPU router's plan (experts, weights, token
  /// indices, output slots: 4 B per entry each, and the offsets), and the
  /// device path's grouped scratch (`groupedSizes`) with a graph's identity
  /// rows and shared scale (8 B per token).
  public static func scratch(_ config: MoEConfig, tokens: Int) -> [(name: String, bytes: Int)] {
    let s = scratchSizes(config, tokens: tokens)
    let grouped = tokens == 0 ? (intermediate: 0, rows: 0) : groupedSizes(config, entries: tokens * config.topK)
    return [
      ("x [T, hidden] bf16", s.x), ("index lists", s.indices), ("intermediate [T, ffn] bf16", s.intermediate),
      ("slots [T·topK, hidden] f32", s.slots), ("out [T, hidden] f32", s.out),
      ("GPU router plan", 5 * tokens * config.topK * 4 + (config.numExperts + 1) * 4),
      ("grouped intermediate [T·topK, ffn] bf16", grouped.intermediate), ("grouped rows [T·topK]", grouped.rows),
      ("graph rows and scale [T]", tokens * 8),
    ]
  }

  /// The sum of `scratch`.
  public static func scratchBytes(_ config: MoEConfig, tokens: Int) -> Int {
    scratch(config, tokens: tokens).reduce(0) { $0 + $1.bytes }
  }

  /// Expert weights of one MoE layer on the device: routed experts and the
  /// shared expert (gate, up [ffn, hidden], down [hidden, ffn]) in bf16 when
  /// `pattern` is nil, else packed; plus the router [E, hidden] and the
  /// shared gate [hidden] in f32 (both ways).
  public static func weightBytes(_ config: MoEConfig, pattern: SparsePattern?) -> Int {
    func expert(_ ffn: Int) -> Int {
      let hidden = config.hiddenSize
      guard let pattern else { return 3 * ffn * hidden * 2 }
      return 2 * PackedSparseWeight.deviceBytes(rows: ffn, columns: hidden, pattern: pattern)
        + PackedSparseWeight.deviceBytes(rows: hidden, columns: ffn, pattern: pattern)
    }
    var bytes = sum(product(config.numExperts, expert(config.expertIntermediateSize)), config.numExperts * config.hiddenSize * 4)
    if let shared = config.sharedExpert {
      bytes = sum(bytes, expert(shared.intermediateSize) + config.hiddenSize * 4)
    }
    return bytes
  }

  /// An allowance for the split-k partials (`PortableKernel.splitPlan`
  /// keeps them within max(weight bytes, 4 MiB) per launch; the SiLU mode
  /// has two weights).
  public static func splitAllowance(_ config: MoEConfig, pattern: SparsePattern?) -> Int {
    let ffn = max(config.expertIntermediateSize, config.sharedExpert?.intermediateSize ?? 0)
    let largest =
      pattern.map { PackedSparseWeight.deviceBytes(rows: ffn, columns: config.hiddenSize, pattern: $0) }
      ?? ffn * config.hiddenSize * 2
    return 2 * 2 * max(largest, 4 << 20)
  }

  /// Everything for T tokens: `layers` MoE layers' weights, one forward's
  /// scratch, the split allowance, and `extraPerToken` bytes per token that
  /// the caller holds besides (a KV cache, say).
  public static func totalBytes(
    _ config: MoEConfig, pattern: SparsePattern?, layers: Int, tokens: Int, extraPerToken: Int = 0
  ) -> Int {
    sum(
      sum(product(layers, weightBytes(config, pattern: pattern)), splitAllowance(config, pattern: pattern)),
      sum(scratchBytes(config, tokens: tokens), product(tokens, extraPerToken)))
  }

  /// The most tokens one forward can take within `budget` bytes (0 when
  /// the weights alone do not fit). Scratch grows linearly in T, so this is
  /// a search over a monotone function.
  public static func largestTokens(
    _ config: MoEConfig, pattern: SparsePattern?, layers: Int, budget: Int, extraPerToken: Int = 0
  ) -> Int {
    func totalBytes(_ config: MoEConfig, pattern: SparsePattern?, layers: Int, tokens: Int) -> Int {
      Self.totalBytes(config, pattern: pattern, layers: layers, tokens: tokens, extraPerToken: extraPerToken)
    }
    guard totalBytes(config, pattern: pattern, layers: layers, tokens: 1) <= budget else { return 0 }
    var low = 1  // fits
    var high = 2
    while high < 1 << 40 && totalBytes(config, pattern: pattern, layers: layers, tokens: high) <= budget {
      low = high
      high *= 2
    }
    while high - low > 1 {
      let middle = low + (high - low) / 2
      if totalBytes(config, pattern: pattern, layers: layers, tokens: middle) <= budget { low = middle } else { high = middle }
    }
    return low
  }
}
