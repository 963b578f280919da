import ArgumentParser
import CPUEngine
import CUDA
import GPUEngine
import Models
import SamoyedsFormat
import SamoyedsModel

/// `samoyeds demo`: one MoE layer, dense and sparse, side by side.
struct Demo: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Build a mini MoE layer, prune its experts, run dense and sparse forwards, compare.",
    discussion: """
      Random weights of the chosen configuration are pruned into the format; the \
      sparse layer is compared with a dense layer holding the same pruned weights \
      (so the error measures the engine, not the pruning), and both are timed. \
      With a usable GPU the sparse layer also runs on it (GPUMoELayer v0, bf16, or \
      fp16 with --storage fp16); its relative error against the CPU sparse output \
      must stay below 1e-2.
      """)

  @OptionGroup var model: ModelOptions

  @Option(help: "Tokens in the batch.")
  var tokens: Int = 64

  @Option(help: "Sparsity pattern N:M:V.", transform: parsePattern)
  var pattern: SparsePattern = .default

  @Option(help: "Element type the sparse values are stored in (f32, bf16, fp16).", transform: parseDType)
  var storage: DType = .f32

  @Option(help: "Random seed for weights and tokens.")
  var seed: UInt64 = 42

  @Option(help: "Timed repetitions (median reported).")
  var repetitions: Int = 7

  @Option(help: "Run a layer of this checkpoint (dense: pruned in memory; Samoyeds: as stored).")
  var checkpoint: String?

  @Option(help: "With --checkpoint: the MoE layer to run (default: the first).")
  var layer: Int?

  @Option(help: "Write the tokens, the CPU (and GPU) outputs and the layer's pruned weights, densified, to this safetensors file (for bench/baselines/compare_hf.py).")
  var dump: String?

  func validate() throws {
    guard tokens >= 1, tokens <= 65_536 else { throw ValidationError("--tokens must be in 1...65536, got \(tokens)") }
    if layer != nil && checkpoint == nil { throw ValidationError("--layer needs --checkpoint") }
    guard repetitions >= 1 else { throw ValidationError("--repetitions must be at least 1") }
  }

  func run() throws {
    var loaded: CPUMoEWeights? = nil
    var source = "random weights, seed \(seed)"
    if let checkpoint {
      let (directory, index, weights) = try loadCheckpointLayer(checkpoint, layer: layer)
      loaded = weights
      source = "\(checkpoint), layer \(index) (\(directory.sparsity.map { "Samoyeds \($0.pattern)" } ?? "dense"))"
    }
    let config = try loaded?.config ?? model.resolve()
    try config.validate()
    try pattern.checkApplicable(rows: config.expertIntermediateSize, columns: config.hiddenSize)
    try pattern.checkApplicable(rows: config.hiddenSize, columns: config.expertIntermediateSize)
    if loaded == nil && config.expertParameterCount > 200_000_000 {
      throw ValidationError(
        "\(config.name) has \(config.expertParameterCount / 1_000_000)M expert parameters per layer; the CPU demo is meant for mini presets (e.g. --preset mixtral-mini)"
      )
    }

    print("Samoyeds demo")
    print("  layer    \(config)")
    print(
      "  pattern  \(pattern) (N:M:V + 2:4, \(Fmt.fixed(pattern.density * 100, 1))% dense), values stored as \(storage)")
    print("  weights  \(source)")
    print("  batch    \(tokens) tokens, seed \(seed)")
    var gpuSession: GPUSession? = nil
    switch DriverProbe.probe() {
    case .usable:
      do {
        let session = try GPUSession.open()
        gpuSession = session
        print("  engine   CPU and GPU — \(session.summary); the GPU runs the sparse layer (v0: router on the host)")
      } catch {
        print("  engine   CPU — a GPU is present but cannot run kernels (\(error)); falling back to CPU")
      }
    case .unusable(let reason):
      print("  engine   CPU — no usable GPU (\(reason)); falling back to CPU")
    }
    print("")

    let clock = ContinuousClock()
    let pruneStart = clock.now
    let original: CPUMoEWeights
    let sparseLayer: CPUMoEWeights
    let densePruned: CPUMoEWeights
    if let loaded, loaded.hasSparseExperts {
      // A Samoyeds checkpoint: as stored, against its densified self.
      sparseLayer = loaded
      densePruned = try loaded.densified()
      original = densePruned
    } else {
      let dense = loaded?.denseWeights() ?? DenseMoEWeights.random(config: config, seed: seed)
      (sparseLayer, densePruned) = try dense.pruned(pattern: pattern, storage: storage)
      original = try dense.denseLayer()
    }
    let pruneTime = Fmt.milliseconds(clock.now - pruneStart)

    var rng = SeededGenerator(seed: seed &+ 1)
    let x = rng.normalMatrix(rows: tokens, columns: config.hiddenSize)

    let sparseResult = try CPUMoELayer.forward(x, weights: sparseLayer)
    let denseResult = try CPUMoELayer.forward(x, weights: densePruned)
    let error = relativeError(sparseResult.output, denseResult.output)
    let originalResult = try CPUMoELayer.forward(x, weights: original)
    let pruningError = relativeError(denseResult.output, originalResult.output)

    let denseTime = try medianTime(repetitions: repetitions) {
      _ = try CPUMoELayer.forward(x, weights: densePruned)
    }
    let sparseTime = try medianTime(repetitions: repetitions) {
      _ = try CPUMoELayer.forward(x, weights: sparseLayer)
    }

    let plan = sparseResult.plan
    let perExpert = (0..<plan.numExperts).map { plan.entries(ofExpert: $0).count }
    print("routing      tokens per expert \(perExpert) (\(plan.entryCount) routed rows)")
    let verdict = error < 1e-3 ? "OK, below 1e-3" : "FAIL, above 1e-3"
    print("rel. error   \(Fmt.scientific(error)) sparse vs dense on the same pruned weights (f32 accumulation; \(verdict))")
    if let loaded, loaded.hasSparseExperts {
      print("pruning      n/a: the checkpoint holds pruned weights (loaded in \(Fmt.fixed(pruneTime, 1)) ms)")
    } else {
      print("pruning      \(Fmt.scientific(pruningError)) layer output change from pruning (dense original vs pruned), pruned in \(Fmt.fixed(pruneTime, 1)) ms")
      if loaded == nil {
        print("             (random weights have no structure for pruning to keep; `samoyeds prune --calibration` reports this for real checkpoints)")
      }
    }
    let denseBytes = densePruned.expertBytes(dtype: .bf16)
    let sparseBytes = sparseLayer.expertBytes(dtype: .bf16)
    print(
      "memory       expert weights as bf16: dense \(Fmt.bytes(denseBytes)), sparse \(Fmt.bytes(sparseBytes)) (\(Fmt.fixed(100 * Double(sparseBytes) / Double(denseBytes), 1))% of dense)"
    )
    print(
      "time (CPU)   dense \(Fmt.fixed(denseTime, 3)) ms, sparse \(Fmt.fixed(sparseTime, 3)) ms (median of \(repetitions); sparse/dense speed \(Fmt.fixed(denseTime / sparseTime, 2))x)"
    )
    var gpuError = 0.0
    var gpuOutput: Matrix<Float>? = nil
    if let gpuSession {
      (gpuError, gpuOutput) = try runOnGPU(session: gpuSession, weights: sparseLayer, x: x, cpuOutput: sparseResult.output)
    }
    if let dump {
      try LayerDump.write(
        to: dump, config: config, weights: densePruned, x: x, cpuOutput: sparseResult.output, gpuOutput: gpuOutput)
      print("dump         \(dump) (x, outputs, pruned weights densified; compare with bench/baselines/compare_hf.py)")
    }
    if !(error < 1e-3) || !(gpuError < 1e-2) { throw ExitCode(1) }
  }

  /// Runs the sparse layer on the GPU, prints its error against the CPU
  /// sparse output and its time; returns the error and the output (0 and nil
  /// when the layer cannot run on the GPU, which is said and is not a failure).
  func runOnGPU(session: GPUSession, weights: CPUMoEWeights, x: Matrix<Float>, cpuOutput: Matrix<Float>) throws
    -> (Double, Matrix<Float>?)
  {
    let dtype: DType = storage == .fp16 ? .fp16 : .bf16
    let layer: GPUMoELayer
    do {
      layer = try GPUMoELayer(weights: weights, session: session, dtype: dtype)
    } catch .unsupported(let text) {
      print("GPU          not run: \(text)")
      return (0, nil)
    }
    let gpu = try layer.forward(x)
    let error = relativeError(gpu.output, cpuOutput)
    let time = try medianTime(repetitions: repetitions) { _ = try layer.forward(x) }
    let verdict = error < 1e-2 ? "OK, below 1e-2" : "FAIL, above 1e-2"
    print("GPU error    \(Fmt.scientific(error)) GPU sparse (\(dtype)) vs CPU sparse (\(verdict)); weights on the GPU \(Fmt.bytes(layer.weightBytes))")
    print(
      "time (GPU)   sparse \(Fmt.fixed(time, 3)) ms (median of \(repetitions), forward to stream sync and download; v0: host router, 2 launches per expert)"
    )
    return (error, gpu.output)
  }
}
