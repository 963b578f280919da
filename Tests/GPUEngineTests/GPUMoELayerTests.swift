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
  /// sides; the same forward twice is bitwise identical; bad hidden states
  /// are rejected before any launch.
  @Test(arguments: Presets.mini.map(\.name))
  func layerMatchesTheCPUEngine(preset: String) throws {
    guard case .usable = DriverProbe.probe(), case .success(let session) = Self.session else {
      print("no usable GPU: skipping the GPU layer for \(preset)")
      return
    }
    let config = try Presets.named(preset)
    let seed: UInt64 = 77
    let (sparse, _) = try DenseMoEWeights.random(config: config, seed: seed).pruned(pattern: .default, storage: .bf16)
    var rng = SeededGenerator(seed: seed &+ 1)
    let x = HalfBits.rounded(rng.normalMatrix(rows: 37, columns: config.hiddenSize), .bf16)
    let layer = try GPUMoELayer(weights: sparse, session: session)
    let gpu = try layer.forward(x)
    let cpu = try CPUMoELayer.forward(x, weights: sparse)
    #expect(gpu.plan == cpu.plan)
    #expect(relativeError(gpu.output, cpu.output) < 1e-2, "\(preset) seed \(seed)")
    #expect(try layer.forward(x).output.storage.map(\.bitPattern) == gpu.output.storage.map(\.bitPattern))

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
