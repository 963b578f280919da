import ArgumentParser

/// `samoyeds prune`: Hugging Face checkpoint → Samoyeds checkpoint.
struct Prune: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Prune a Hugging Face MoE checkpoint's experts into the format (arrives with issue #6).")

  @Argument(help: "Folder with config.json and .safetensors shards.")
  var input: String

  @Option(help: "Output folder.")
  var out: String

  @Option(help: "Sparsity pattern N:M:V.")
  var pattern: String = "1:2:128"

  @Option(help: "Calibration file (token ids or hidden states).")
  var calibration: String?

  @Option(help: "Layers to prune, e.g. 0-3,7.")
  var layers: String?

  @Flag(help: "Overwrite an existing output folder.")
  var force = false

  func run() throws {
    throw NotYetAvailable(what: "checkpoint pruning", issue: "issue #6 (real checkpoints)")
  }
}

/// `samoyeds inspect`: summary of a dense or Samoyeds checkpoint.
struct Inspect: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Summarize a dense or Samoyeds checkpoint (arrives with issue #6).")

  @Argument(help: "Checkpoint folder or .safetensors file.")
  var path: String

  @Flag(help: "Check every invariant of every sparse tensor.")
  var validate = false

  func run() throws {
    throw NotYetAvailable(what: "checkpoint inspection", issue: "issue #6 (real checkpoints)")
  }
}
