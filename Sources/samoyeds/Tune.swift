import ArgumentParser
import CUDA
import GPUEngine
import Kernels
import SamoyedsFormat

/// `samoyeds tune`: times every tiling of the sparse GEMM on this GPU for
/// each shape and token count, and stores the fastest per (device, dtype,
/// pattern, shape, token bucket) in the tuning table that
/// `PortableKernel.tiling` consults (`KernelTuning`).
struct Tune: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Measure every kernel tiling on this GPU and store the fastest per shape and token count.",
    discussion: """
      For each shape m x k and routed token count T, times each tiling the GPU has \
      (as `bench kernel` does: CUDA events, warm-up, median, weights rotated past the \
      L2) and records the fastest under the key (device, bf16, pattern, m, k, bucket \
      of T: the next power of two). Entries with the same key are replaced; others \
      are kept. The table is read by every later run on this machine; untuned \
      shapes keep the built-in choice. File: $SAMOYEDS_TUNING, else tuning.json \
      beside the kernel cache.
      """)

  @Option(help: "Shapes as MxK, comma-separated (the experts' gate/up [ffn x hidden] and down [hidden x ffn]).")
  var shapes: String = "14336x4096,4096x14336,1408x2048,2048x1408"

  @Option(help: "Routed token counts, comma-separated (each stands for its power-of-two bucket).")
  var tokens: String = "1,16,32,64,128,256,512,1024,4096,16384"

  @Option(help: "Sparsity pattern N:M:V.", transform: parsePattern)
  var pattern: SparsePattern = .default

  @Option(help: "Timed samples per tiling (median).")
  var samples: Int = 7

  @Option(help: "Tuning table to update (default: $SAMOYEDS_TUNING or tuning.json beside the kernel cache).")
  var out: String?

  @Flag(help: "Start from an empty table (replaces a damaged or outdated one) instead of updating it.")
  var reset = false

  func validate() throws {
    guard samples >= 1 else { throw ValidationError("--samples must be at least 1") }
  }

  func run() throws {
    let parsedShapes = try parseShapes(shapes)
    let counts = try parseCounts(tokens)
    for (m, k) in parsedShapes { try pattern.checkApplicable(rows: m, columns: k) }
    let path = out ?? KernelTuning.defaultPath
    var table = reset ? KernelTuning() : try KernelTuning.load(path: path)
    // Written before the GPU opens: `KernelLibrary` loads the default table,
    // which must not be the damaged one being replaced.
    if reset { try table.write(to: path) }
    let session = try GPUSession.open()
    let cublas = try CublasLt(context: session.context)
    // Time the built-in choice, not an earlier table's.
    KernelTuning.activate(KernelTuning())
    print("GPU: \(session.summary); tuning table \(path) (\(table.entries.count) entries)")
    print("     m      k      T  bucket  fastest   ms       built-in  ms       gain")
    for (m, k) in parsedShapes {
      let bench = try KernelBench(session: session, cublas: cublas, m: m, k: k, pattern: pattern, samples: samples)
      for count in counts {
        let row = try bench.run(tokens: count)
        guard let (best, bestTime) = row.variantMilliseconds.min(by: { $0.value < $1.value }) else { continue }
        let key = KernelTuning.Key(
          device: session.context.name, architecture: session.library.architecture, dtype: "bf16",
          pattern: pattern.description, m: m, k: k, tokens: KernelTuning.bucket(count))
        table.record(KernelTuning.Entry(key: key, tiling: best, milliseconds: row.variantMilliseconds))
        print(
          "\(Fmt.right("\(m)", 6)) \(Fmt.right("\(k)", 6)) \(Fmt.right("\(count)", 6)) \(Fmt.right("\(key.tokens)", 7))  \(Fmt.left(best, 7)) \(Fmt.fixed(bestTime, 4))   \(Fmt.left(row.tiling, 7))  \(Fmt.fixed(row.sparseMilliseconds, 4))   \(Fmt.fixed(row.sparseMilliseconds / bestTime, 2))x"
        )
      }
      // Write after every shape: an interrupted run keeps what it measured.
      try table.write(to: path)
    }
    KernelTuning.activate(table)
    print("wrote \(table.entries.count) entries to \(path)")
  }
}
