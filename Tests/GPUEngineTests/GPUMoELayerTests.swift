import Testing

import CPUEngine
import CUDA
@testable import GPUEngine
import Kernels
import SamoyedsFormat
import SamoyedsModel

/// What the GPU layer decides on the host: which weights it accepts, how it
/// packs them, how the index lists are laid out. Runs without a GPU.
@Suite struct GPULayerHostSide {
  func pruned(_ preset: String, pattern: String = "1:2:128", storage: DType = .bf16, seed: UInt64 = 3) throws
    -> (dense: DenseMoEWeights, sparse: CPUMoEWeights)
  {
    let dense = DenseMoEWeights.random(config: try Presets.named(preset), seed: seed)
    return (dense, try dense.pruned(pattern: try SparsePattern(parsing: pattern), storage: storage).sparse)
  }

  func unsupportedText(_ body: () throws(GPUEngineError) -> Void) -> String? {
    do {
      try body()
      return nil
    } catch {
      guard case .unsupported(let text) = error else { return nil }
      return text
    }
  }

  @Test func denseExpertsAreRefusedWithWhatToDo() throws {
    let layer = try DenseMoEWeights.random(config: try Presets.named("mixtral-mini"), seed: 1).denseLayer()
    let text = unsupportedText { () throws(GPUEngineError) in _ = try GPUMoELayer.pack(layer, dtype: .bf16) }
    #expect(text?.contains("expert 0 gate_proj is dense") == true, "\(text ?? "no error")")
    #expect(text?.contains("prune") == true && text?.contains("#5") == true)
  }

  /// A shared expert left dense is named as such (the routed ones are sparse).
  @Test func denseSharedExpertIsNamed() throws {
    var (_, layer) = try pruned("qwen2-moe-mini")
    let densified = try layer.densified()
    layer.shared = densified.shared
    let text = unsupportedText { () throws(GPUEngineError) in _ = try GPUMoELayer.pack(layer, dtype: .bf16) }
    #expect(text?.contains("shared expert gate_proj is dense") == true, "\(text ?? "no error")")
  }

  @Test func patternsWithoutKernelAreRefused() throws {
    let (_, layer) = try pruned("mixtral-mini", pattern: "3:8:32")
    let text = unsupportedText { () throws(GPUEngineError) in _ = try GPUMoELayer.pack(layer, dtype: .bf16) }
    #expect(text?.contains("3:8:32") == true && text?.contains("1:2, 1:4, 2:4, 1:8") == true, "\(text ?? "no error")")
  }

  @Test func onlySixteenBitTypes() throws {
    let (_, layer) = try pruned("mixtral-mini")
    let text = unsupportedText { () throws(GPUEngineError) in _ = try GPUMoELayer.pack(layer, dtype: .f32) }
    #expect(text?.contains("bf16 or fp16") == true, "\(text ?? "no error")")
  }

  @Test func weightsThatDisagreeWithTheirConfigAreBadInput() throws {
    var (_, layer) = try pruned("mixtral-mini")
    layer.experts.removeLast()
    #expect {
      try GPUMoELayer.pack(layer, dtype: .bf16)
    } throws: { error in
      guard case GPUEngineError.input(.shapeMismatch) = error else { return false }
      return true
    }
  }

  /// Packing from the CPU layer equals packing the checkpoint's bf16/fp16
  /// matrices directly, for routed and shared experts and each pattern the
  /// kernel has.
  @Test(arguments: [("qwen2-moe-mini", "1:2:128", DType.bf16), ("deepseek-moe-mini", "1:4:64", .fp16), ("mixtral-mini", "2:4:32", .bf16), ("olmoe-mini", "1:8:32", .fp16)])
  func packingMatchesTheStoredMatrices(preset: String, pattern text: String, dtype: DType) throws {
    let (dense, layer) = try pruned(preset, pattern: text, storage: dtype)
    let packed = try GPUMoELayer.pack(layer, dtype: dtype)
    let pattern = try SparsePattern(parsing: text)
    func direct(_ w: Matrix<Float>) throws -> PackedSparseWeight {
      dtype == .fp16
        ? PackedSparseWeight(try SparseMatrix<Float16>.prune(Matrix<Float16>.rounding(w), pattern: pattern))
        : PackedSparseWeight(try SparseMatrix<BFloat16>.prune(Matrix<BFloat16>.rounding(w), pattern: pattern))
    }
    func same(_ a: PackedSparseWeight, _ b: PackedSparseWeight) -> Bool {
      a.dtype == b.dtype && a.rows == b.rows && a.columns == b.columns && a.fragments == b.fragments
        && a.metadata == b.metadata && a.selection == b.selection
    }
    #expect(packed.experts.count == dense.experts.count)
    for e in [0, dense.experts.count - 1] {
      #expect(same(packed.experts[e].gate, try direct(dense.experts[e].gate)), "\(preset) expert \(e) gate")
      #expect(same(packed.experts[e].down, try direct(dense.experts[e].down)), "\(preset) expert \(e) down")
    }
    #expect((packed.shared == nil) == (dense.shared == nil))
    if let shared = dense.shared, let packedShared = packed.shared {
      #expect(same(packedShared.up, try direct(shared.up)), "\(preset) shared up")
    }
  }

  /// The worked example of `IndexUpload`: RoutingPlan's documented plan.
  @Test func indexListsLayoutMatchesItsDocumentation() throws {
    let plan = try RoutingPlan(
      numTokens: 3, numExperts: 3, topK: 2, selectedExperts: [2, 0, 0, 1, 2, 1],
      weights: [0.6, 0.4, 0.7, 0.3, 0.5, 0.5])
    let upload = IndexUpload(plan: plan, sharedScale: nil)
    #expect((upload.identity, upload.tokenIndices, upload.outputSlots, upload.weights) == (0, 3, 9, 15))
    #expect(upload.sharedScale == nil)
    #expect(Array(upload.words[0..<15]) == [0, 1, 2, 0, 1, 1, 2, 0, 2, 1, 2, 3, 5, 0, 4])
    #expect(upload.words[15...].map { Float(bitPattern: $0) } == plan.weights)
    let expert1 = plan.entries(ofExpert: 1)
    #expect(Array(upload.words[(upload.tokenIndices + expert1.lowerBound)...].prefix(expert1.count)) == [1, 2])
    #expect(Array(upload.words[(upload.outputSlots + expert1.lowerBound)...].prefix(expert1.count)) == [3, 5])

    let shared = IndexUpload(plan: plan, sharedScale: [0.25, 0.5, 1])
    #expect(shared.sharedScale == 21)
    #expect(shared.words[21...].map { Float(bitPattern: $0) } == [0.25, 0.5, 1])
    #expect(shared.words.count <= IndexUpload.wordCapacity(tokens: 3, topK: 2, shared: true))

    // With the GPU router only the identity rows and the shared scale travel.
    let deviceRouted = IndexUpload(tokens: 3, sharedScale: [0.25, 0.5, 1])
    #expect(deviceRouted.words.count == 6 && Array(deviceRouted.words[0..<3]) == [0, 1, 2])
    #expect(deviceRouted.sharedScale == 3)
    #expect(deviceRouted.words[3...].map { Float(bitPattern: $0) } == [0.25, 0.5, 1])
    #expect(IndexUpload(tokens: 3, sharedScale: nil).words == [0, 1, 2])
  }
}

/// The GPU router's host side: each family's rule as kernel numbers, and
/// what it refuses, with the reason. Runs without a GPU.
@Suite struct GPURouterHostSide {
  @Test(arguments: Presets.all.map(\.name))
  func everyPresetMapsToItsRule(preset: String) throws {
    let config = try Presets.named(preset)
    try GPURouter.check(config: config, dtype: .bf16)
    try GPURouter.check(config: config, dtype: .fp16)
    for tokens in [1, 77, 16384] {
      let problem = GPURouter.problem(config: config, tokens: tokens, dtype: .bf16)
      #expect(problem.tokens == tokens && problem.experts == config.numExperts && problem.hidden == config.hiddenSize)
      #expect(problem.topK == config.topK && problem.renormalize == config.router.normalizeTopK)
      #expect(
        problem.capacity
          == config.router.capacity?.capacity(tokens: tokens, experts: config.numExperts, topK: config.topK))
      try MoERouting.canImplement(problem)
    }
  }

  /// OpenMoE's capacity is the CPU's number for the batch at hand.
  @Test func openMoECapacityFollowsTheBatch() throws {
    let config = try Presets.named("openmoe-mini")  // 8 experts, top-2, factor 2, minimum 4
    #expect(GPURouter.problem(config: config, tokens: 77, dtype: .bf16).capacity == 38)  // even(floor(2·2·77/8))
    #expect(GPURouter.problem(config: config, tokens: 1, dtype: .bf16).capacity == 4)  // the minimum
    #expect(GPURouter.problem(config: try Presets.named("mixtral-mini"), tokens: 77, dtype: .bf16).capacity == nil)
  }

  func unsupportedText(_ config: MoEConfig, _ dtype: DType = .bf16) -> String? {
    do {
      try GPURouter.check(config: config, dtype: dtype)
      return nil
    } catch {
      guard case .unsupported(let text) = error else { return "unexpected \(error)" }
      return text
    }
  }

  @Test func refusesWhatTheKernelsCannotRoute() throws {
    var config = try Presets.named("qwen3-moe-mini")
    #expect(unsupportedText(config, .f32)?.contains("bf16 or fp16") == true)
    config.numExperts = 300
    #expect(unsupportedText(config)?.contains("300 experts") == true)
    #expect(unsupportedText(config)?.contains("qwen3-moe-mini") == true)
    config.numExperts = 64
    config.router.topK = 40
    #expect(unsupportedText(config)?.contains("top-40") == true)
    config.router.topK = 8
    config.hiddenSize = 100
    #expect(unsupportedText(config)?.contains("multiple of 32") == true)
  }
}

/// The layer on a GPU against the CPU engine; without a usable GPU, that
/// opening one fails with a CUDA error saying why (no crash).
@Suite struct GPULayerOnDevice {
  static var session: Result<GPUSession, CUDAError> { Result { () throws(CUDAError) in try GPUSession.open() } }

  @Test func withoutAGPUOpeningFailsClearly() throws {
    guard case .unusable(let reason) = DriverProbe.probe() else {
      print("a GPU is usable here; the no-driver path is not exercised")
      return
    }
    print("no usable GPU: \(reason)")
    #expect {
      _ = try GPUSession.open()
    } throws: { error in
      guard let error = error as? CUDAError else { return false }
      print("GPUSession.open: \(error)")
      return !error.description.isEmpty
    }
  }

  /// Every family, one odd token count, bf16 weights identical on both
  /// sides, with the router on the host and on the GPU (on `ExactLogits`
  /// inputs, so both engines must choose identically); the same forward
  /// twice is bitwise identical; bad hidden states are rejected before any
  /// launch.
  @Test(arguments: Presets.mini.map(\.name), RouterPlacement.allCases)
  func layerMatchesTheCPUEngine(preset: String, router: RouterPlacement) throws {
    guard case .usable = DriverProbe.probe(), case .success(let session) = Self.session else {
      print("no usable GPU: skipping the GPU layer for \(preset) (\(router) router)")
      return
    }
    let config = try Presets.named(preset)
    let seed: UInt64 = 77
    var weights = DenseMoEWeights.random(config: config, seed: seed)
    weights.router = ExactLogits.router(weights.router)
    let (sparse, _) = try weights.pruned(pattern: .default, storage: .bf16)
    var rng = SeededGenerator(seed: seed &+ 1)
    let x = ExactLogits.hiddenStates(rng.normalMatrix(rows: 37, columns: config.hiddenSize))
    let layer = try GPUMoELayer(weights: sparse, session: session, router: router)
    let gpu = try layer.forward(x)
    let cpu = try CPUMoELayer.forward(x, weights: sparse)
    let weightDifference = try #require(gpu.plan.weightDifference(to: cpu.plan), "\(preset): the plans' entries differ")
    #expect(weightDifference <= (router == .host ? 0 : 1e-5))
    #expect(relativeError(gpu.output, cpu.output) < 1e-2, "\(preset) seed \(seed)")
    let again = try layer.forward(x)
    #expect(again.output.storage.map(\.bitPattern) == gpu.output.storage.map(\.bitPattern))
    #expect(again.plan == gpu.plan && again.plan.weights.map(\.bitPattern) == gpu.plan.weights.map(\.bitPattern))

    var bad = x
    bad[2, 3] = .infinity
    #expect(throws: GPUEngineError.input(.nonFinite("hidden state [2, 3] is inf"))) { try layer.forward(bad) }
    #expect {
      try layer.forward(Matrix(rows: 2, columns: config.hiddenSize + 32, repeating: 0))
    } throws: { error in
      guard case GPUEngineError.input(.shapeMismatch) = error else { return false }
      return true
    }
  }
}

/// `LayerMemory` (samoyeds memory) against what the layer really packs and
/// allocates, and the budget search. No GPU needed.
@Suite struct LayerMemoryModel {
  static func bytes(_ w: PackedSparseWeight) -> Int { w.fragments.count * 4 + w.metadata.count * 4 + w.selection.count }

  /// The size formula is the packing's, for odd shapes and every pattern.
  @Test(arguments: ["1:2:128", "1:4:64", "2:4:32", "1:8:32", "1:2:32"])
  func packedSizeFormula(pattern text: String) throws {
    let pattern = try SparsePattern(parsing: text)
    var rng = SeededGenerator(seed: 77)
    for (m, k) in [(pattern.groupRows * 3, 256), (pattern.groupRows * 17, 512), (2 * pattern.groupRows * 40, 128)] {
      let dense = rng.normalMatrix(rows: m, columns: k)
      let packed = HalfBits.packed(try SparseMatrix<Float>.prune(dense, pattern: pattern), .bf16)
      #expect(PackedSparseWeight.deviceBytes(rows: m, columns: k, pattern: pattern) == Self.bytes(packed), "\(m)x\(k) \(text)")
    }
  }

  /// Weight bytes = the layer's packed experts + the f32 router (+ shared gate), for every mini family.
  @Test(arguments: Presets.mini.map(\.name))
  func weightBytesAreWhatTheLayerPacks(preset: String) throws {
    let config = try Presets.named(preset)
    let pattern = SparsePattern.default
    let weights = try DenseMoEWeights.random(config: config, seed: 5).pruned(pattern: pattern, storage: .bf16).sparse
    let packed = try GPUMoELayer.pack(weights, dtype: .bf16)
    let experts = (packed.experts + (packed.shared.map { [$0] } ?? [])).reduce(0) {
      $0 + Self.bytes($1.gate) + Self.bytes($1.up) + Self.bytes($1.down)
    }
    let extra = config.numExperts * config.hiddenSize * 4 + (config.sharedExpert != nil ? config.hiddenSize * 4 : 0)
    #expect(LayerMemory.weightBytes(config, pattern: pattern) == experts + extra)
    // Dense bf16: 3 projections per expert.
    let denseExperts = config.numExperts * 3 * config.expertIntermediateSize * config.hiddenSize * 2
      + (config.sharedExpert.map { 3 * $0.intermediateSize * config.hiddenSize * 2 } ?? 0)
    #expect(LayerMemory.weightBytes(config, pattern: nil) == denseExperts + extra)
  }

  /// No buffer grows with experts × T: scratch is linear in T with a slope
  /// independent of the expert count.
  @Test func scratchDoesNotScaleWithExperts() throws {
    var config = try Presets.named("qwen3-moe-mini")
    let slope = LayerMemory.scratchBytes(config, tokens: 1001) - LayerMemory.scratchBytes(config, tokens: 1000)
    config.numExperts *= 8
    #expect(LayerMemory.scratchBytes(config, tokens: 1001) - LayerMemory.scratchBytes(config, tokens: 1000) == slope)
    #expect(LayerMemory.scratchBytes(config, tokens: 0) == (config.numExperts + 1) * 4)
  }

  /// The largest T fits and T + 1 does not; weights that do not fit give 0.
  @Test func largestTokensIsTheEdgeOfTheBudget() throws {
    let config = try Presets.named("mixtral-8x7b")
    for pattern in [nil, SparsePattern.default] as [SparsePattern?] {
      for budgetGiB in [30, 80, 141] {
        let budget = budgetGiB << 30
        let t = LayerMemory.largestTokens(config, pattern: pattern, layers: 32, budget: budget)
        if t == 0 {
          #expect(LayerMemory.totalBytes(config, pattern: pattern, layers: 32, tokens: 1) > budget)
        } else {
          #expect(LayerMemory.totalBytes(config, pattern: pattern, layers: 32, tokens: t) <= budget)
          #expect(LayerMemory.totalBytes(config, pattern: pattern, layers: 32, tokens: t + 1) > budget)
        }
      }
    }
    // Sizes past what an Int holds saturate (they never fit) instead of trapping.
    var huge = config
    huge.hiddenSize = 1 << 20
    huge.expertIntermediateSize = 1 << 20
    huge.numExperts = 1 << 16
    #expect(LayerMemory.totalBytes(huge, pattern: nil, layers: 10_000, tokens: 1) == Int.max)
    #expect(LayerMemory.largestTokens(huge, pattern: .default, layers: 10_000, budget: 1 << 50) == 0)
    // 84 GiB of dense Mixtral experts do not fit 80 GiB; the sparse ones (28%) do.
    #expect(LayerMemory.largestTokens(config, pattern: nil, layers: 32, budget: 80 << 30) == 0)
    #expect(LayerMemory.largestTokens(config, pattern: .default, layers: 32, budget: 80 << 30) > 0)
  }
}
