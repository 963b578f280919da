import ArgumentParser
import Checkpoint
import Models
import SamoyedsFormat
import SamoyedsModel

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// `samoyeds prune`: Hugging Face checkpoint → Samoyeds checkpoint.
struct Prune: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Prune a Hugging Face MoE checkpoint's experts into the format.",
    discussion: """
      Expert projections (routed and shared) of the chosen MoE layers become sparse \
      tensors; every other tensor is copied unchanged; config.json gains a "samoyeds" \
      section. The output is built under a temporary name and renamed at the end. A \
      quality report (relative layer-output error on held-out tokens, magnitude vs \
      calibration-aware) is printed and saved as samoyeds-prune-report.json. \
      See docs/CHECKPOINTS.md for the calibration file format.
      """)

  @Argument(help: "Folder with config.json and .safetensors shards.")
  var input: String

  @Option(help: "Output folder.")
  var out: String

  @Option(help: "Sparsity pattern N:M:V.", transform: parsePattern)
  var pattern: SparsePattern = .default

  @Option(help: "Calibration file (safetensors: hidden_states, layers.<i>.hidden_states or input_ids).")
  var calibration: String?

  @Option(help: "MoE layers to prune, e.g. 0-3,7 (default: all).")
  var layers: String?

  @Flag(help: "Replace an existing output folder.")
  var force = false

  func run() throws {
    var options = PruneOptions()
    options.pattern = pattern
    options.calibrationPath = calibration
    options.layers = try layers.map { try CheckpointPruner.parseLayers($0) }
    options.force = force
    let progress = ProgressPrinter()
    options.progress = { done, total, bytes, totalBytes, name in progress.update(done, total, bytes, totalBytes, name) }
    let report = try CheckpointPruner.prune(input: input, output: out, options: options)
    progress.finish()
    print("pruned \(report.tensorsPruned) expert tensors, copied \(report.tensorsCopied), \(Fmt.bytes(report.inputBytes)) -> \(Fmt.bytes(report.outputBytes)) in \(Int(report.seconds)) s")
    print("quality (relative layer-output error on \(report.heldOutSource)):")
    print("  layer  tokens  magnitude  calibration-aware")
    for layer in report.layers {
      print(
        "  \(Fmt.right("\(layer.layer)", 5))  \(Fmt.right("\(layer.heldOutTokens)", 6))  \(Fmt.right(Fmt.scientific(layer.magnitudeError), 9))  \(layer.calibrationError.map { Fmt.right(Fmt.scientific($0), 17) } ?? "                -")"
      )
    }
    let calibrated = report.meanCalibrationError.map { ", calibration-aware \(Fmt.scientific($0))" } ?? ""
    print("  mean: magnitude \(Fmt.scientific(report.meanMagnitudeError))\(calibrated)")
    print("wrote \(out) (report: \(out)/\(CheckpointPruner.reportName))")
  }
}

/// Progress as a bar with ETA on a terminal, plain lines every 10% otherwise.
final class ProgressPrinter: @unchecked Sendable {
  let terminal = isatty(STDERR_FILENO) != 0
  let clock = ContinuousClock()
  let start: ContinuousClock.Instant
  var lastDecile = -1

  init() { start = clock.now }

  func update(_ done: Int, _ total: Int, _ bytes: Int, _ totalBytes: Int, _ name: String) {
    let fraction = totalBytes > 0 ? Double(bytes) / Double(totalBytes) : Double(done) / Double(max(total, 1))
    let elapsed = Fmt.milliseconds(clock.now - start) / 1000
    let eta = fraction > 0 ? elapsed / fraction - elapsed : 0
    if terminal {
      let width = 30
      let filled = Int(fraction * Double(width))
      let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
      let line = "\r[\(bar)] \(Fmt.fixed(fraction * 100, 1))% \(done)/\(total) tensors, ETA \(Int(eta)) s  \(String(name.suffix(40)))"
      FileHandleShim.stderr(line + "\u{1B}[K")
    } else {
      let decile = Int(fraction * 10)
      if decile > lastDecile {
        lastDecile = decile
        FileHandleShim.stderr("progress \(decile * 10)%: \(done)/\(total) tensors, \(Fmt.bytes(bytes)) of \(Fmt.bytes(totalBytes)), ETA \(Int(eta)) s\n")
      }
    }
  }

  func finish() { if terminal { FileHandleShim.stderr("\n") } }
}

enum FileHandleShim {
  static func stderr(_ text: String) {
    var text = text
    text.withUTF8 { buffer in _ = write(STDERR_FILENO, buffer.baseAddress, buffer.count) }
  }
}

/// `samoyeds inspect`: summary of a dense or Samoyeds checkpoint.
struct Inspect: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Summarize a dense or Samoyeds checkpoint; --validate checks every sparse tensor.")

  @Argument(help: "Checkpoint folder.")
  var path: String

  @Flag(help: "Check every invariant of every sparse tensor.")
  var validate = false

  func run() throws {
    let checkpoint = try CheckpointDirectory(path: path)
    let config = checkpoint.config
    print("checkpoint   \(path)")
    print("architecture \(config)")
    print("shards       \(checkpoint.shardNames.count) (\(checkpoint.weightMap.count) tensors)")
    if let sparsity = checkpoint.sparsity {
      print("format       Samoyeds \(sparsity.pattern) (importance: \(sparsity.importance)), layers \(sparsity.layers)")
    } else {
      print("format       dense (no samoyeds section)")
    }
    var dense = 0
    var stored = 0
    var sparseCount = 0
    var denseExperts = 0
    for layer in config.moeLayerIndices {
      for (reference, rows, columns) in checkpoint.layout.expertTensors(layer: layer, config: config) {
        let dtype = try expertDType(checkpoint, reference)
        dense += rows * columns * dtype.byteSize
        if checkpoint.hasSparse(reference) {
          sparseCount += 1
          if validate {
            _ = try checkpoint.sparse(reference, rows: rows, columns: columns)  // validates every invariant
          }
          let pattern = try SparsePattern(parsing: checkpoint.sparsity?.pattern ?? "1:2:128")
          stored += SparseMatrix<Float>.storedByteCount(rows: rows, columns: columns, pattern: pattern, dtype: dtype)
        } else {
          guard checkpoint.weightMap[reference.name] != nil else {
            throw CheckpointError.missingTensor("\(path): expert tensor '\(reference.sparseName)' is missing")
          }
          denseExperts += 1
          stored += rows * columns * dtype.byteSize
        }
      }
    }
    let density = dense > 0 ? Double(stored) / Double(dense) : 1
    print("experts      \(sparseCount) sparse, \(denseExperts) dense projections over \(config.moeLayerIndices.count) MoE layers")
    print("bytes        experts dense \(Fmt.bytes(dense)), as stored \(Fmt.bytes(stored)) (\(Fmt.fixed(density * 100, 1))%)")
    if validate { print("validate     all \(sparseCount) sparse tensors pass every invariant") }
  }

  func expertDType(_ checkpoint: CheckpointDirectory, _ reference: TensorReference) throws -> DType {
    let name = checkpoint.hasSparse(reference) ? reference.sparseName + SparseTensorIO.valuesSuffix : reference.name
    let info = try checkpoint.file(holding: name).info(name)
    switch info.dtype {
    case .bf16: return .bf16
    case .f16: return .fp16
    case .f32: return .f32
    default: throw CheckpointError.unsupportedDType("\(name) is \(info.dtype.rawValue)")
    }
  }
}

/// `samoyeds make-checkpoint`: a random checkpoint in a family's layout.
struct MakeCheckpoint: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "make-checkpoint",
    abstract: "Write a Hugging Face-style checkpoint with random weights in a family's tensor layout.",
    discussion: "For tests and benchmarks without real weights. --outlier-channels also writes calibration.safetensors.")

  @OptionGroup var model: ModelOptions

  @Option(help: "Output folder (must not exist).")
  var out: String

  @Option(help: "Decoder layers (default: the config's).")
  var layers: Int?

  @Option(help: "Number of shards.")
  var shards: Int = 1

  @Option(help: "Weight dtype (bf16, fp16, f32).", transform: parseDType)
  var dtype: DType = .bf16

  @Option(help: "Rows of calibration hidden states to write (0: none).")
  var calibrationTokens: Int = 0

  @Option(help: "Channels of the calibration states scaled 20x.")
  var outlierChannels: Int = 0

  @Option(help: "Random seed.")
  var seed: UInt64 = 7

  func run() throws {
    guard shards >= 1, shards <= 1000 else { throw ValidationError("--shards must be in 1...1000, got \(shards)") }
    if let layers, layers < 1 || layers > MoEConfig.maxLayers {
      throw ValidationError("--layers must be in 1...\(MoEConfig.maxLayers), got \(layers)")
    }
    guard calibrationTokens >= 0, calibrationTokens <= 1 << 20 else {
      throw ValidationError("--calibration-tokens must be in 0...1048576")
    }
    guard outlierChannels >= 0 else { throw ValidationError("--outlier-channels must be >= 0") }
    if outlierChannels > 0 && calibrationTokens == 0 {
      throw ValidationError("--outlier-channels shapes the calibration states; give --calibration-tokens too")
    }
    var options = SyntheticCheckpoint.Options()
    options.dtype = dtype == .f32 ? .f32 : dtype == .fp16 ? .f16 : .bf16
    options.layers = layers
    options.shards = shards
    options.seed = seed
    options.calibrationTokens = calibrationTokens
    options.outlierChannels = outlierChannels
    try SyntheticCheckpoint.write(config: try model.resolve(), to: out, options: options)
    print("wrote \(out)")
  }
}
