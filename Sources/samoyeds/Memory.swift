import ArgumentParser
import GPUEngine
import Kernels
import SamoyedsFormat
import SamoyedsModel

/// One budget's answer in `samoyeds memory --json`.
struct MemoryReportRow: Codable {
  var budgetGiB: Double
  var denseTokens: Int
  var sparseTokens: Int
  /// sparse / dense (nil when the dense weights alone do not fit).
  var ratio: Double?
}

struct MemoryReport: Codable {
  var model: String
  var pattern: String
  var moeLayers: Int
  var denseWeightBytes: Int
  var sparseWeightBytes: Int
  var bytesPerToken: Int
  var rows: [MemoryReportRow]
}

/// `samoyeds memory`: the largest batch the GPU MoE layers take in a memory
/// budget, with the expert weights dense (bf16) or in the format. Computed
/// from the configuration (`LayerMemory`), no GPU needed.
struct Memory: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Largest token batch that fits a GPU memory budget, dense vs sparse expert weights.",
    discussion: """
      Counts what the GPU MoE layers hold on the device: the expert weights of every \
      MoE layer (routed and shared experts; dense bf16, or packed in the format), the \
      routers in f32, and the buffers one forward of T tokens allocates (x, index \
      lists, intermediate, slots, out, the GPU router's plan, and the device path's \
      grouped intermediate [T·topK, ffn] and rows; layers run one after another, so \
      once) plus a split-k allowance. The rest of the model (attention, \
      embeddings, KV cache) is whatever --reserved says.
      """)

  @Option(help: "Built-in preset (see `samoyeds info --presets`).")
  var preset: String = "mixtral-8x7b"

  @Option(help: "A Hugging Face config.json to read instead of a preset.")
  var config: String?

  @Option(help: "Sparsity pattern N:M:V.", transform: parsePattern)
  var pattern: SparsePattern = .default

  @Option(help: "Memory budgets in GiB, comma-separated.")
  var budget: String = "80,141"

  @Option(help: "GiB of each budget reserved for the rest of the model (attention, embeddings, KV cache).")
  var reserved: Double = 0

  @Option(help: "KiB per token held besides the MoE layers (e.g. its KV cache across the model).")
  var extraPerToken: Double = 0

  @Option(help: "Write the report as JSON to this file.")
  var json: String?

  func budgets() throws -> [Double] {
    let items = budget.split(separator: ",", omittingEmptySubsequences: false)
    let values = items.compactMap { Double(String($0.filter { !$0.isWhitespace })) }
    guard !values.isEmpty, values.count == items.count,
      values.allSatisfy({ $0 > 0 && $0 <= 1_048_576 })
    else {
      throw ValidationError("--budget must be positive GiB values (at most 1048576), comma-separated; got '\(budget)'")
    }
    return values
  }

  func validate() throws {
    _ = try budgets()
    guard reserved >= 0, reserved <= 1_048_576 else {
      throw ValidationError("--reserved must be between 0 and 1048576 GiB")
    }
    guard extraPerToken >= 0, extraPerToken <= 1_073_741_824 else {
      throw ValidationError("--extra-per-token must be a non-negative number of KiB")
    }
  }

  func run() throws {
    let model = try config.map { try MoEConfig(huggingFaceConfigAt: $0) } ?? Presets.named(preset)
    let hidden = model.hiddenSize
    for (m, k) in [(model.expertIntermediateSize, hidden), (hidden, model.expertIntermediateSize)] {
      try pattern.checkApplicable(rows: m, columns: k)
    }
    if let shared = model.sharedExpert {
      try pattern.checkApplicable(rows: shared.intermediateSize, columns: hidden)
      try pattern.checkApplicable(rows: hidden, columns: shared.intermediateSize)
    }
    let layers = model.moeLayerIndices.count
    guard layers > 0 else { throw ValidationError("\(model.name) has no MoE layers; nothing to report") }
    let dense = LayerMemory.product(layers, LayerMemory.weightBytes(model, pattern: nil))
    let sparse = LayerMemory.product(layers, LayerMemory.weightBytes(model, pattern: pattern))
    // Per-token bytes of one forward (the scratch is linear in T).
    let perToken = LayerMemory.scratchBytes(model, tokens: 2) - LayerMemory.scratchBytes(model, tokens: 1)
    print("model        \(model.name): \(layers) MoE layers, \(model.numExperts) experts x ffn \(model.expertIntermediateSize), hidden \(hidden), top-\(model.topK)\(model.sharedExpert.map { ", shared expert ffn \($0.intermediateSize)" } ?? "")")
    func size(_ bytes: Int) -> String { bytes == Int.max ? "more than 8 EiB" : Fmt.bytes(bytes) }
    let share = dense == Int.max || sparse == Int.max ? "" : " (\(Fmt.fixed(100 * Double(sparse) / Double(dense), 1))%)"
    print("weights      dense bf16 \(size(dense)), sparse \(pattern) \(size(sparse))\(share), all MoE layers")
    print("per token    \(Fmt.bytes(perToken)) for one forward: " + LayerMemory.scratch(model, tokens: 1).map { "\($0.name) \($0.bytes) B" }.joined(separator: ", "))
    let extra = Int(extraPerToken * 1024)
    if reserved > 0 { print("reserved     \(Fmt.fixed(reserved, 1)) GiB of each budget for the rest of the model") }
    if extra > 0 { print("extra        \(Fmt.fixed(extraPerToken, 1)) KiB per token held besides") }
    if reserved == 0 && extra == 0 {
      print("note         MoE layers only: --reserved and --extra-per-token add the rest of the model and its KV cache")
    }
    print("")
    print("  budget GiB   largest T dense   largest T sparse   sparse/dense")
    var rows: [MemoryReportRow] = []
    for gib in try budgets() {
      let bytes = Int(max(0, gib - reserved) * Double(1 << 30))
      let denseTokens = bytes > 0 ? LayerMemory.largestTokens(model, pattern: nil, layers: layers, budget: bytes, extraPerToken: extra) : 0
      let sparseTokens = bytes > 0 ? LayerMemory.largestTokens(model, pattern: pattern, layers: layers, budget: bytes, extraPerToken: extra) : 0
      let ratio = denseTokens > 0 ? Double(sparseTokens) / Double(denseTokens) : nil
      rows.append(MemoryReportRow(budgetGiB: gib, denseTokens: denseTokens, sparseTokens: sparseTokens, ratio: ratio))
      let denseText = denseTokens > 0 ? "\(denseTokens)" : "weights do not fit"
      print(
        "\(Fmt.right(Fmt.fixed(gib, 1), 12))  \(Fmt.right(denseText, 18))  \(Fmt.right(sparseTokens > 0 ? "\(sparseTokens)" : "weights do not fit", 17))  \(Fmt.right(ratio.map { Fmt.fixed($0, 2) + "x" } ?? "-", 13))"
      )
    }
    if let json {
      try writeJSON(
        MemoryReport(
          model: model.name, pattern: pattern.description, moeLayers: layers, denseWeightBytes: dense,
          sparseWeightBytes: sparse, bytesPerToken: perToken, rows: rows), to: json)
      print("wrote \(json)")
    }
  }
}
