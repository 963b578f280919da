import ArgumentParser
import CPUEngine
import GPUEngine
import CUDA
import Kernels
import Models
import SamoyedsFormat
import SamoyedsModel

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `samoyeds bench`: timings with JSON output.
struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Benchmarks (JSON output).",
    subcommands: [CPU.self, Kernel.self, MoE.self])

  /// Dense vs sparse GEMM on the CPU reference engine.
  struct CPU: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Time the CPU dense and dual-side sparse GEMMs on routed token rows.")

    @Option(help: "Shapes as MxK, comma-separated.")
    var shapes: String = "1408x2048,2048x1408"

    @Option(help: "Token counts, comma-separated.")
    var tokens: String = "1,16,64,256"

    @Option(help: "Sparsity pattern N:M:V.", transform: parsePattern)
    var pattern: SparsePattern = .default

    @Option(help: "Write results as JSON to this file.")
    var json: String?

    @Option(help: "Timed repetitions (median).")
    var repetitions: Int = 5

    @Option(help: "Time a MoE layer of this (dense or Samoyeds) checkpoint instead of single GEMMs.")
    var checkpoint: String?

    @Option(help: "With --checkpoint: the MoE layer (default: the first).")
    var layer: Int?

    struct LayerRow: Codable {
      var checkpoint: String
      var layer: Int
      var tokens: Int
      var denseMilliseconds: Double
      var sparseMilliseconds: Double
      var speedup: Double
    }

    func runCheckpoint(_ path: String) throws {
      let (directory, index, stored) = try loadCheckpointLayer(path, layer: layer)
      let (sparse, dense): (CPUMoEWeights, CPUMoEWeights)
      if stored.hasSparseExperts {
        (sparse, dense) = (stored, try stored.densified())
      } else if let weights = stored.denseWeights() {
        (sparse, dense) = try weights.pruned(pattern: pattern, storage: .bf16)
      } else {
        throw ValidationError("layer \(index) mixes dense and sparse experts")
      }
      var rows: [LayerRow] = []
      print("layer \(index) of \(path): \(directory.config)")
      print("\(Fmt.right("T", 6)) \(Fmt.right("dense ms", 10)) \(Fmt.right("sparse ms", 10)) \(Fmt.right("speedup", 8))")
      for t in try parseCounts(tokens) {
        var rng = SeededGenerator(seed: UInt64(t))
        let x = rng.normalMatrix(rows: t, columns: directory.config.hiddenSize)
        let d = try medianTime(repetitions: repetitions) { _ = try CPUMoELayer.forward(x, weights: dense) }
        let s = try medianTime(repetitions: repetitions) { _ = try CPUMoELayer.forward(x, weights: sparse) }
        rows.append(LayerRow(checkpoint: path, layer: index, tokens: t, denseMilliseconds: d, sparseMilliseconds: s, speedup: d / s))
        print("\(Fmt.right("\(t)", 6)) \(Fmt.right(Fmt.fixed(d, 3), 10)) \(Fmt.right(Fmt.fixed(s, 3), 10)) \(Fmt.right(Fmt.fixed(d / s, 2) + "x", 8))")
      }
      if let json {
        try writeJSON(rows, to: json)
        print("wrote \(json)")
      }
    }

    struct Row: Codable {
      var m: Int
      var k: Int
      var tokens: Int
      var pattern: String
      var denseMilliseconds: Double
      var sparseMilliseconds: Double
      var speedup: Double
    }

    func run() throws {
      if let checkpoint { return try runCheckpoint(checkpoint) }
      let parsedShapes = try parseShapes(shapes)
      let parsedTokens = try parseCounts(tokens)
      var rows: [Row] = []
      print("\(Fmt.right("m", 6)) \(Fmt.right("k", 6)) \(Fmt.right("T", 6)) \(Fmt.right("dense ms", 10)) \(Fmt.right("sparse ms", 10)) \(Fmt.right("speedup", 8))")
      for (m, k) in parsedShapes {
        try pattern.checkApplicable(rows: m, columns: k)
        var rng = SeededGenerator(seed: UInt64(truncatingIfNeeded: m &* 31 &+ k))
        let weight = rng.normalMatrix(rows: m, columns: k, scale: 0.05)
        let sparse = try SparseMatrix<Float>.prune(weight, pattern: pattern)
        let denseWeight = sparse.densified()
        let packed = CPUSparseWeight(sparse)
        for t in parsedTokens {
          // Routed rows: every other row of a 2T-row hidden-state matrix.
          let x = rng.normalMatrix(rows: 2 * t, columns: k)
          let index = (0..<t).map { Int32(2 * $0) }
          let dense = try medianTime(repetitions: repetitions) {
            _ = try CPUGEMM.dense(x, rows: index, weight: denseWeight)
          }
          let sparseTime = try medianTime(repetitions: repetitions) {
            _ = try CPUGEMM.sparse(x, rows: index, weight: packed)
          }
          let row = Row(
            m: m, k: k, tokens: t, pattern: pattern.description, denseMilliseconds: dense,
            sparseMilliseconds: sparseTime, speedup: dense / sparseTime)
          rows.append(row)
          print("\(Fmt.right("\(m)", 6)) \(Fmt.right("\(k)", 6)) \(Fmt.right("\(t)", 6)) \(Fmt.right(Fmt.fixed(dense, 3), 10)) \(Fmt.right(Fmt.fixed(sparseTime, 3), 10)) \(Fmt.right(Fmt.fixed(row.speedup, 2) + "x", 8))")
        }
      }
      if let json {
        try writeJSON(rows, to: json)
        print("wrote \(json)")
      }
    }
  }

  struct Kernel: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Dual-side sparse GEMM on the GPU vs cuBLASLt dense on the same routed tokens.",
      discussion: """
        For each shape m x k and routed token count T: the sparse kernel reads T rows of a \
        4T-row hidden-state matrix through the index list; the dense side gathers the same \
        rows into a contiguous buffer, then runs cuBLASLt (bf16, f32 accumulation). CUDA \
        events, warm-up, median of many samples, weights rotated across copies larger than \
        the L2 cache. Reports time, dense-equivalent TFLOP/s (2·m·k·T / time), achieved \
        GB/s and the ratio dense / sparse.
        """)

    @Option(help: "Shapes as MxK, comma-separated.")
    var shapes: String = "14336x4096,4096x14336,1408x2048,2048x1408"

    @Option(help: "Routed token counts, comma-separated.")
    var tokens: String = "1,16,64,256,1024,4096,16384"

    @Option(help: "Sparsity pattern N:M:V.", transform: parsePattern)
    var pattern: SparsePattern = .default

    @Option(help: "Timed samples per case (median reported).")
    var samples: Int = 15

    @Option(help: "Write results as JSON to this file.")
    var json: String?

    @Flag(inversion: .prefixedNo, help: "Also time the sparse kernel with every tiling forced.")
    var variants = true

    @Option(help: "With variants: only these tilings, comma-separated (\(PortableKernel.Tiling.allCases.map(\.rawValue).joined(separator: ", "))).")
    var tilings: String?

    /// The tilings timed forced.
    func variantTilings() throws -> Set<PortableKernel.Tiling> {
      guard variants else { return [] }
      guard let tilings else { return Set(PortableKernel.Tiling.allCases) }
      return Set(try tilings.split(separator: ",").map { name in
        guard let tiling = PortableKernel.Tiling(rawValue: String(name)) else {
          throw ValidationError("unknown tiling '\(name)'; known: \(PortableKernel.Tiling.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return tiling
      })
    }

    @Option(help: "Time the expert projections of this (dense or Samoyeds) checkpoint's layer instead of random weights of --shapes.")
    var checkpoint: String?

    @Option(help: "With --checkpoint: the MoE layer (default: the first).")
    var layer: Int?

    @Option(help: "Force this split-k factor on every sparse launch (default: the planner's).")
    var splits: Int?

    func validate() throws {
      if layer != nil && checkpoint == nil { throw ValidationError("--layer needs --checkpoint") }
      guard samples >= 1 else { throw ValidationError("--samples must be at least 1") }
      if let splits, splits < 1 { throw ValidationError("--splits must be at least 1") }
      _ = try variantTilings()
    }

    func run() throws {
      let parsedTokens = try parseCounts(tokens)
      // The checkpoint's layer first, so a bad path is reported as such.
      var stored: CPUMoEWeights? = nil
      if let checkpoint {
        let (_, index, weights) = try loadCheckpointLayer(checkpoint, layer: layer)
        stored = weights
        print("weights: \(checkpoint), layer \(index), \(stored?.experts.count ?? 0) experts (gate [ffn, hidden] and down [hidden, ffn])")
      }
      let session = try GPUSession.open()
      let cublas = try CublasLt(context: session.context)
      print("GPU: \(session.summary); cuBLASLt \(cublas.path)")
      var benches: [() throws -> KernelBench] = []
      if let stored {
        // The layer's gate and down projections over all its experts: real
        // weights, rotated expert by expert.
        for projection in [\CPUExpert.gate, \CPUExpert.down] {
          benches.append {
            try KernelBench(
              session: session, cublas: cublas, linears: stored.experts.map { $0[keyPath: projection] },
              pattern: pattern, samples: samples, variants: variantTilings())
          }
        }
      } else {
        for (m, k) in try parseShapes(shapes) {
          try pattern.checkApplicable(rows: m, columns: k)
          benches.append {
            try KernelBench(
              session: session, cublas: cublas, m: m, k: k, pattern: pattern, samples: samples, variants: variantTilings())
          }
        }
      }
      var rows: [KernelBenchRow] = []
      print(KernelBenchRow.header)
      for makeBench in benches {
        let bench = try makeBench()
        bench.forcedSplits = splits
        for t in parsedTokens {
          let row = try bench.run(tokens: t)
          rows.append(row)
          print(row.line)
        }
      }
      if let json {
        let document = KernelBenchDocument(device: session.context.name, architecture: session.library.architecture, pattern: pattern.description, rows: rows)
        try writeJSON(document, to: json)
        print("wrote \(json)")
      }
    }
  }

  struct MoE: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "moe",
      abstract: "Time the GPU MoE layer of each preset: per-expert forward, and the device path eager and as a CUDA graph.",
      discussion: """
        Random weights in the format (one pruned weight per projection shape, uploaded once per \
        expert), the GPU router, bf16. Per token count: `forwardMilliseconds`, the wall time of \
        `forward` (host routing checks, upload, per-expert launches sized from the counts, \
        download); for T <= --graph-tokens, the device path (GPU router, grouped expert launches \
        of the streaming or, on sm_90a with enough tokens per expert, the wgmma kernel, combine, \
        shared expert; no host work in between) timed with CUDA events around one call \
        after flushing the L2 (as the dense baselines), launched one by one \
        (`eagerMilliseconds`) and replayed as one CUDA graph (`graphMilliseconds`), and \
        the relative error between its output and forward's, and the median time of each of \
        its stages (an event after each; a second line per row, `stages` in the JSON). \
        bench/baselines/run_all.py reads \
        the JSON next to the dense baselines.
        """)

    @Option(help: "Presets, comma-separated (samoyeds info --presets).")
    var presets: String = "mixtral-8x7b,qwen1.5-moe-a2.7b,deepseek-moe-16b,minicpm-moe-8x2b,openmoe-34b,qwen3-30b-a3b,olmoe-1b-7b"

    @Option(help: "Token counts, comma-separated.")
    var tokens: String = "1,16,128,1024,4096,16384"

    @Option(help: "Largest token count timed on the device path (eager and as a CUDA graph).")
    var graphTokens: Int = 16384

    @Option(help: "Timed samples per case (median reported).")
    var samples: Int = 10

    @Option(help: "Write results as JSON to this file.")
    var json: String?

    func validate() throws {
      guard samples >= 1 else { throw ValidationError("--samples must be at least 1") }
      guard graphTokens >= 0 else { throw ValidationError("--graph-tokens must be at least 0") }
    }

    func run() throws {
      let configs = try presets.split(separator: ",").map { try Presets.named(String($0)) }
      let counts = try parseCounts(tokens)
      let session = try GPUSession.open()
      print("GPU: \(session.summary)")
      print("model                  T   forward ms   eager ms   graph ms   graph GB/s   graph vs forward")
      var rows: [MoEBenchRow] = []
      var failures = 0
      // A preset or token count that fails is reported (a row with the
      // error as its note) and the others still run; the exit status is 1.
      for config in configs {
        let bench: MoEBench
        do {
          bench = try MoEBench(config: config, session: session, samples: samples)
        } catch {
          failures += 1
          print("\(config.name): \(error)")
          continue
        }
        for count in counts {
          do {
            let row = try bench.run(tokens: count, decode: count <= graphTokens)
            rows.append(row)
            print(row.line)
            if let stages = row.stageLine { print(stages) }
          } catch {
            failures += 1
            print("\(config.name) T=\(count): \(error)")
            var row = MoEBenchRow(model: config.name, tokens: count, forwardMilliseconds: nil)
            row.note = "error: \(error)"
            rows.append(row)
          }
        }
      }
      if let json {
        try writeJSON(rows, to: json)
        print("wrote \(json)")
      }
      if failures > 0 { throw ExitCode(1) }
    }
  }
}

/// Parses "MxK,MxK".
func parseShapes(_ text: String) throws -> [(Int, Int)] {
  let items = text.split(separator: ",")
  guard !items.isEmpty else { throw ValidationError("no shapes given") }
  return try items.map { item -> (Int, Int) in
    let parts = item.split(separator: "x")
    guard parts.count == 2, let m = Int(parts[0]), let k = Int(parts[1]), m > 0, k > 0 else {
      throw ValidationError("shape '\(item)' is not MxK with positive integers")
    }
    guard m <= 1 << 20, k <= 1 << 20, m * k <= 1 << 28 else {
      throw ValidationError("shape '\(item)' is too large (m, k <= 1048576 and m*k <= 268435456)")
    }
    return (m, k)
  }
}

/// Parses "1,16,64".
func parseCounts(_ text: String) throws -> [Int] {
  let items = text.split(separator: ",")
  guard !items.isEmpty else { throw ValidationError("no token counts given") }
  return try items.map { item -> Int in
    guard let t = Int(item), t >= 1, t <= 1 << 20 else {
      throw ValidationError("token count '\(item)' is not an integer in 1...1048576")
    }
    return t
  }
}

/// Writes `value` as pretty, key-sorted JSON to `path` (atomically).
func writeJSON<T: Encodable>(_ value: T, to path: String) throws {
  let encoder = JSONEncoder()
  encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
  // A NaN (a failed comparison, an empty median) is written as "nan" rather
  // than failing the whole file at the end of a long run.
  encoder.nonConformingFloatEncodingStrategy = .convertToString(
    positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
  try encoder.encode(value).write(to: URL(fileURLWithPath: path), options: .atomic)
}
