import ArgumentParser
import CPUEngine
import GPUEngine
import SamoyedsFormat
import SamoyedsModel

/// `samoyeds verify`: checks engines against the CPU reference.
struct Verify: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Check every engine against the f32 CPU reference on fresh random inputs.",
    discussion: """
      CPU engine: the sparse GEMM against the dense GEMM on the densified weights over \
      many shapes and patterns, and every family's MoE layer (sparse against dense on \
      the same pruned weights). GPU: every kernel and epilogue (store, SiLU·up, scale-add, \
      deterministic slots + combine), bf16 and fp16, token counts 0, 1, 3, 77, 1000, odd \
      row counts, split-k, against the CPU reference with outputs poisoned first; the \
      GPU router's plan against the CPU's for every family (T = 1, 3, 77, 1000, skewed, \
      fp16, full-size presets, T = 16384) on exact-logit inputs: identical entries, \
      weights within 1e-5, bitwise repeatable; then the GPU MoE layer (v0) of every \
      mini family, T = 1, 3, 77, skewed routing, fp16 and the GPU router, against the \
      CPU layer on the same pruned weights, run twice for bitwise repeatability (bf16 \
      tolerance: relative Frobenius error below 1e-2; NaN never passes). Without a \
      usable GPU it says why and exits 2 (use --cpu-only).
      """)

  @Flag(help: "Check only the CPU engine (exit 0 when it passes).")
  var cpuOnly = false

  @Flag(
    inversion: .prefixedNo,
    help: "Also compare the GPU layer with each family's transformers block (bench/baselines/compare_hf.py; needs python3 with torch and transformers, else skipped).")
  var transformers = true

  @Option(help: "Base random seed (printed per case).")
  var seed: UInt64 = 2025

  @Option(help: "Only GPU cases whose description contains this text (kernel cases: \"MxK N:M:V epilogue tiling\", tiling \"auto\" unless forced, or the printed name such as \"gpu bf16 256x256 1:2:128 T=77 store rt4\"; router cases: \"gpu router NAME T=…\"; layer cases: \"gpu moe layer NAME T=…\"). Exits 2 when no GPU case matches.")
  var filter: String?

  func run() throws {
    var failures = 0
    var cases = 0
    func report(_ name: String, _ error: Double, _ tolerance: Double) {
      cases += 1
      let ok = error < tolerance  // NaN fails
      if !ok { failures += 1 }
      print("\(ok ? "PASS" : "FAIL")  \(Fmt.left(name, 58)) rel.err \(Fmt.scientific(error))")
    }

    let shapes: [(m: Int, k: Int, pattern: String)] = [
      (128, 128, "1:2:128"), (256, 384, "1:2:128"), (96, 256, "1:4:64"), (64, 96, "3:8:32"),
      (2, 32, "1:2:32"),
    ]
    for (index, shape) in shapes.enumerated() {
      for tokens in [1, 3, 77] {
        let caseSeed = seed &+ UInt64(index * 1000 + tokens)
        var rng = SeededGenerator(seed: caseSeed)
        let pattern = try SparsePattern(parsing: shape.pattern)
        let weight = rng.normalMatrix(rows: shape.m, columns: shape.k)
        let sparse = try SparseMatrix<BFloat16>.prune(Matrix<BFloat16>.rounding(weight), pattern: pattern)
        let x = rng.normalMatrix(rows: tokens * 2 + 1, columns: shape.k)
        let rows = (0..<tokens).map { Int32(2 * $0 + 1) }  // every other row: an index list
        let y = try CPUGEMM.sparse(x, rows: rows, weight: CPUSparseWeight(sparse))
        let reference = try CPUGEMM.dense(x, rows: rows, weight: sparse.densified().toFloat())
        report("cpu sparse gemm \(shape.m)x\(shape.k) \(pattern) T=\(tokens) seed=\(caseSeed)", relativeError(y, reference), 1e-5)
      }
    }
    for config in Presets.mini {
      for tokens in [1, 3, 77] {
        let caseSeed = seed &+ UInt64(tokens)
        let weights = DenseMoEWeights.random(config: config, seed: caseSeed)
        let (sparse, dense) = try weights.pruned(pattern: .default, storage: .bf16)
        var rng = SeededGenerator(seed: caseSeed &+ 7)
        let x = rng.normalMatrix(rows: tokens, columns: config.hiddenSize)
        let a = try CPUMoELayer.forward(x, weights: sparse).output
        let b = try CPUMoELayer.forward(x, weights: dense).output
        report("cpu moe layer \(config.name) T=\(tokens) seed=\(caseSeed)", relativeError(a, b), 1e-5)
      }
    }
    let cpuCases = cases
    let cpuFailures = failures
    print("")
    print("CPU engine: \(cpuCases - cpuFailures) passed, \(cpuFailures) failed")
    if cpuOnly {
      print("\(cases - failures) passed, \(failures) failed")
      if failures > 0 { throw ExitCode(1) }
      return
    }

    let session: GPUSession
    do {
      session = try GPUSession.open()
    } catch {
      print("GPU: cannot verify the GPU kernels and layer: \(error)")
      print("\(cases - failures) passed, \(failures) failed (GPU not verified; use --cpu-only to check the CPU engine alone)")
      throw ExitCode(2)
    }
    print("GPU: \(session.summary)")
    let verifier = GPUVerifier(session: session, report: report)
    var selected = 0  // GPU cases the filter let through
    for (index, c) in GPUVerifier.cases().enumerated() where filter.map({ c.matches($0) }) ?? true {
      selected += 1
      do {
        try verifier.run(c, seed: seed &+ UInt64(100_000 + index))
      } catch {
        report("gpu case \(index) \(c.m)x\(c.k) \(c.pattern) T=\(c.count) \(c.epilogue): \(error)", .nan, 1e-2)
      }
    }
    // Described cases: each seeded from its index, a thrown error reported as a failure.
    func runEach<Case>(
      _ list: [Case], seedBase: UInt64, tolerance: Double, _ describe: (Case) -> String,
      _ body: (Case, UInt64) throws -> Void
    ) {
      for (index, c) in list.enumerated() where filter.map({ describe(c).contains($0) }) ?? true {
        selected += 1
        let caseSeed = seed &+ seedBase &+ UInt64(index)
        do {
          try body(c, caseSeed)
        } catch {
          report("\(describe(c)) seed=\(caseSeed): \(error)", .nan, tolerance)
        }
      }
    }
    runEach(GPUVerifier.routerCases(), seedBase: 300_000, tolerance: 1e-5, \.description, verifier.runRouter)
    runEach(GPUVerifier.layerCases(), seedBase: 200_000, tolerance: 1e-2, \.description, verifier.runLayer)
    if transformers {
      switch GPUVerifier.transformersReference() {
      case .success(let script):
        runEach(GPUVerifier.transformersCases(), seedBase: 400_000, tolerance: 1e-2, \.description) { c, s in
          try verifier.runTransformers(c, seed: s, script: script)
        }
      case .failure(let reason):
        print("skip  gpu moe layer vs transformers: \(reason)")
      }
    }
    print("")
    print("\(cases - failures) passed, \(failures) failed (CPU engine, GPU kernels, GPU router and GPU MoE layer)")
    if failures > 0 { throw ExitCode(1) }
    if let filter, selected == 0 {
      print("verify: no GPU case matches --filter \"\(filter)\" (see --help for what it matches); nothing on the GPU was verified")
      throw ExitCode(2)
    }
  }
}
