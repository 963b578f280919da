import ArgumentParser
import CPUEngine
import Models
import SamoyedsFormat
import SamoyedsModel

/// Parses --pattern values, passing on the format's own explanation.
func parsePattern(_ text: String) throws -> SparsePattern {
  try SparsePattern(parsing: text)
}

/// Parses --storage / --dtype values.
func parseDType(_ text: String) throws -> DType {
  guard let dtype = DType(parsing: text) else {
    throw ValidationError("unsupported dtype '\(text)'; use bf16, fp16 or f32")
  }
  return dtype
}

/// Selects a layer configuration: a built-in preset or a config.json.
struct ModelOptions: ParsableArguments {
  @Option(help: "Built-in preset (see `samoyeds info --presets`).")
  var preset: String = "mixtral-mini"

  @Option(help: "A Hugging Face config.json to read instead of a preset.")
  var config: String?

  func resolve() throws -> MoEConfig {
    if let config { return try MoEConfig(huggingFaceConfigAt: config) }
    return try Presets.named(preset)
  }
}

/// Thrown by subcommands whose engine has not landed yet.
struct NotYetAvailable: Error, CustomStringConvertible {
  let what: String
  let issue: String
  var description: String { "\(what) is not available in this build yet: it arrives with \(issue)" }
}

/// MoE layer `layer` of the checkpoint at `path` (default: its first MoE
/// layer), as `--checkpoint DIR [--layer L]` name it in demo and bench.
func loadCheckpointLayer(_ path: String, layer: Int?) throws -> (
  directory: CheckpointDirectory, index: Int, weights: CPUMoEWeights
) {
  let directory = try CheckpointDirectory(path: path)
  let index = layer ?? directory.config.moeLayerIndices.first ?? 0
  return (directory, index, try LayerLoader.layer(directory, layer: index))
}
