import CPUEngine
import CUDA
import Kernels
import SamoyedsFormat
import SamoyedsModel

/// What a GPU forward pass produced, with the routing it used.
public struct GPUMoEResult: Sendable {
  /// [T, hidden] f32.
  public var output: Matrix<Float>
  /// The activation side the experts read (built on the host in v0).
  public var plan: RoutingPlan
}

/// An MoE layer on the GPU, v0: every expert's weights live on the device;
/// the router still runs on the host.
///
/// Pipeline of `forward` (docs/DATAFLOW.md, "GPU layer v0"):
///
/// 1. host: `CPUMoELayer.route` (the CPU engine's own checks, router GEMM,
///    softmax/top-k/capacity and `RoutingPlan`), and the shared expert's
///    per-token scale (`CPUMoELayer.sharedExpertScale`);
/// 2. upload: x [T, hidden] as bf16/fp16, and every index list in one copy
///    (`IndexUpload`);
/// 3. per expert with tokens, two `PortableKernel` launches on its token
///    rows: gate/up with `.siluMul` → intermediate [count, ffn], then down
///    with `.scaleToSlots` → f32 slots [T·topK, hidden] (zeroed first);
/// 4. `PortableKernel.combine` → f32 out [T, hidden], rank order;
/// 5. shared expert on all T rows: `.siluMul`, then down with `.scaleAdd`
///    and the per-token scales as routing weights, into out;
/// 6. stream synchronize, download out.
///
/// Every element of `out` is written by the combine and receives at most
/// one add (the shared expert's), so results repeat bitwise and match
/// `CPUMoELayer.forward` to bf16/fp16 rounding of x and the intermediate.
///
/// Not thread-safe: `forward` reuses scratch buffers cached by token count;
/// use one layer from one thread at a time.
public final class GPUMoELayer {
  public let config: MoEConfig
  /// Element type of weights, x and the intermediate on the GPU (bf16 or fp16).
  public let dtype: DType
  public let session: GPUSession
  let router: Matrix<Float>
  let sharedGate: Matrix<Float>?
  let experts: [GPUExpert]
  let shared: GPUExpert?
  /// Buffers of the last forward's token count.
  private var scratch: Scratch?
  /// Split-k partials, grown to the largest launch seen.
  private var workspace: DeviceBuffer?

  /// Checks, packs (`pack(_:dtype:)`) and uploads every expert of `weights`.
  ///
  /// - Throws: `.unsupported` for a dense projection, a pattern without a
  ///   GPU kernel or a dtype other than bf16/fp16; `.input` for weights that
  ///   do not match their configuration; `.cuda` when an upload fails.
  public init(weights: CPUMoEWeights, session: GPUSession, dtype: DType = .bf16) throws(GPUEngineError) {
    let packed = try Self.pack(weights, dtype: dtype)
    do {
      experts = try packed.experts.map { (expert) throws(CUDAError) in
        try GPUExpert(context: session.context, packed: expert)
      }
      shared = try packed.shared.map { (expert) throws(CUDAError) in try GPUExpert(context: session.context, packed: expert) }
    } catch {
      throw .cuda(error)
    }
    config = weights.config
    self.dtype = dtype
    self.session = session
    router = weights.router
    sharedGate = weights.sharedGate
  }

  /// Device bytes of all expert weights (routed and shared), as packed.
  public var weightBytes: Int { experts.reduce(0) { $0 + $1.deviceBytes } + (shared?.deviceBytes ?? 0) }

  /// Runs the layer on hidden states `x` [T, hidden] (f32 on the host).
  ///
  /// - Returns: out [T, hidden] f32 and the routing plan.
  /// - Throws: `.input` for a wrong hidden size or a non-finite hidden
  ///   state (the CPU engine's checks); `.cuda` for a device failure.
  public func forward(_ x: Matrix<Float>) throws(GPUEngineError) -> GPUMoEResult {
    let plan: RoutingPlan
    var sharedScale: [Float]? = nil
    do {
      plan = try CPUMoELayer.route(x, config: config, router: router)
      if shared != nil { sharedScale = try CPUMoELayer.sharedExpertScale(x, config: config, sharedGate: sharedGate) }
    } catch {
      throw .input(error)
    }
    let hidden = config.hiddenSize
    if x.rows == 0 { return GPUMoEResult(output: Matrix(rows: 0, columns: hidden, repeating: 0), plan: plan) }
    var output = Matrix<Float>(rows: x.rows, columns: hidden, repeating: 0)
    do {
      output.storage = try run(x, plan: plan, sharedScale: sharedScale)  // exactly T·hidden values
    } catch {
      throw .cuda(error)
    }
    return GPUMoEResult(output: output, plan: plan)
  }

  /// Steps 2-6 of the pipeline; returns out [T, hidden] row-major.
  private func run(_ x: Matrix<Float>, plan: RoutingPlan, sharedScale: [Float]?) throws(CUDAError) -> [Float] {
    let context = session.context
    let stream = session.stream
    try context.makeCurrent()
    let tokens = x.rows
    let hidden = config.hiddenSize
    let s = try scratch(tokens: tokens)
    let indices = IndexUpload(plan: plan, sharedScale: sharedScale)
    try s.x.upload(HalfBits.encode(x.storage, dtype), on: stream)
    try s.indices.upload(indices.words, on: stream)
    func words(_ offset: Int, _ count: Int) throws(CUDAError) -> DeviceBuffer {
      try s.indices.view(offset: offset * 4, byteCount: count * 4)
    }

    // Every launch's arguments first, so one workspace fits them all.
    var routed: [PortableKernel.Arguments] = []
    for (e, expert) in experts.enumerated() {
      let range = plan.entries(ofExpert: e)
      if range.isEmpty { continue }
      let count = range.count
      routed.append(
        PortableKernel.Arguments(
          weight: expert.gate, epilogue: .siluMul(up: expert.up), x: s.x, tokens: tokens,
          rows: try words(indices.tokenIndices + range.lowerBound, count), count: count, output: s.intermediate))
      routed.append(
        PortableKernel.Arguments(
          weight: expert.down,
          epilogue: .scaleToSlots(
            routeWeights: try words(indices.weights + range.lowerBound, count),
            slots: try words(indices.outputSlots + range.lowerBound, count)),
          x: s.intermediate, tokens: count, rows: try words(indices.identity, count), count: count,
          output: s.slots))
    }
    var sharedLaunches: [PortableKernel.Arguments] = []
    if let shared, let scaleOffset = indices.sharedScale {
      let all = try words(indices.identity, tokens)
      sharedLaunches.append(
        PortableKernel.Arguments(
          weight: shared.gate, epilogue: .siluMul(up: shared.up), x: s.x, tokens: tokens, rows: all, count: tokens,
          output: s.intermediate))
      sharedLaunches.append(
        PortableKernel.Arguments(
          weight: shared.down, epilogue: .scaleAdd(routeWeights: try words(scaleOffset, tokens)), x: s.intermediate,
          tokens: tokens, rows: all, count: tokens, output: s.out))
    }
    let workspaceBytes = (routed + sharedLaunches).map { PortableKernel.workspaceBytes($0, context: context) }.max() ?? 0
    let workspace = try self.workspace(bytes: workspaceBytes)

    // Launches run in stream order, so one intermediate and one workspace
    // serve every expert in turn.
    try s.slots.fill(byte: 0, on: stream)
    for arguments in routed {
      try PortableKernel.run(arguments, workspace: workspace, library: session.library, stream: stream)
    }
    try PortableKernel.combine(
      slots: s.slots, into: s.out, tokens: tokens, topK: config.topK, hidden: hidden, library: session.library,
      stream: stream)
    for arguments in sharedLaunches {
      try PortableKernel.run(arguments, workspace: workspace, library: session.library, stream: stream)
    }
    // The download is a synchronous copy on the legacy stream, which does
    // not wait for this non-blocking stream: synchronize first.
    try stream.synchronize()
    return try s.out.download(Float.self, count: tokens * hidden)
  }

  /// Device buffers of one token count T.
  private struct Scratch {
    let tokens: Int
    /// [T, hidden] bf16/fp16.
    let x: DeviceBuffer
    /// `IndexUpload` words, room for T·topK routed entries.
    let indices: DeviceBuffer
    /// [T, max(ffn, shared ffn)] bf16/fp16: SiLU(gate)·up of one expert.
    let intermediate: DeviceBuffer
    /// [T·topK, hidden] f32.
    let slots: DeviceBuffer
    /// [T, hidden] f32.
    let out: DeviceBuffer
  }

  private func scratch(tokens: Int) throws(CUDAError) -> Scratch {
    if let scratch, scratch.tokens == tokens { return scratch }
    scratch = nil  // free the old buffers before allocating new ones
    let context = session.context
    let hidden = config.hiddenSize
    let ffn = max(config.expertIntermediateSize, config.sharedExpert?.intermediateSize ?? 0)
    let made = Scratch(
      tokens: tokens,
      x: try DeviceBuffer(context: context, byteCount: tokens * hidden * 2),
      indices: try DeviceBuffer(
        context: context,
        byteCount: IndexUpload.wordCapacity(tokens: tokens, topK: config.topK, shared: shared != nil) * 4),
      intermediate: try DeviceBuffer(context: context, byteCount: tokens * ffn * 2),
      slots: try DeviceBuffer(context: context, byteCount: tokens * config.topK * hidden * 4),
      out: try DeviceBuffer(context: context, byteCount: tokens * hidden * 4))
    scratch = made
    return made
  }

  private func workspace(bytes: Int) throws(CUDAError) -> DeviceBuffer? {
    if bytes == 0 { return nil }
    if let workspace, workspace.byteCount >= bytes { return workspace }
    workspace = nil
    let made = try DeviceBuffer(context: session.context, byteCount: bytes)
    workspace = made
    return made
  }
}

/// The index lists of one forward as one host array of 32-bit words, so
/// they reach the GPU in one copy; launches read views of its sections.
///
/// Sections, in order (T tokens, n = `plan.entryCount` routed entries):
/// - `identity` [T] Int32 0, 1, …, T−1: the rows the down projection reads
///   (its expert's intermediate [count, ffn], in order) and the shared
///   expert's rows (every token);
/// - `tokenIndices` [n] Int32 and `outputSlots` [n] Int32: the plan's;
/// - `weights` [n] f32 bits: the plan's routing weights;
/// - `sharedScale` [T] f32 bits: the shared expert's per-token scale, only
///   when the layer has one.
///
/// Worked example, the plan of `RoutingPlan`'s documentation (T = 3, top-2,
/// n = 6), no shared expert: words `[0 1 2 | 0 1 1 2 0 2 | 1 2 3 5 0 4 |
/// w0 … w5]`, offsets identity 0, tokenIndices 3, outputSlots 9, weights 15.
/// Expert 1 (entries 2..<4) reads rows `words[5..<7]` = (1, 2) and writes
/// slots `words[11..<13]` = (3, 5).
struct IndexUpload {
  var words: [UInt32]
  let identity = 0
  let tokenIndices: Int
  let outputSlots: Int
  let weights: Int
  let sharedScale: Int?

  init(plan: RoutingPlan, sharedScale scale: [Float]?) {
    let tokens = plan.numTokens
    let n = plan.entryCount
    tokenIndices = tokens
    outputSlots = tokenIndices + n
    weights = outputSlots + n
    sharedScale = scale == nil ? nil : weights + n
    var words = [UInt32]()
    words.reserveCapacity(weights + n + (scale?.count ?? 0))
    words += (0..<tokens).map { UInt32($0) }
    words += plan.tokenIndices.map { UInt32(bitPattern: $0) }
    words += plan.outputSlots.map { UInt32(bitPattern: $0) }
    words += plan.weights.map(\.bitPattern)
    if let scale { words += scale.map(\.bitPattern) }
    self.words = words
  }

  /// Most words a forward of T tokens needs (n ≤ T·topK).
  static func wordCapacity(tokens: Int, topK: Int, shared: Bool) -> Int {
    tokens * (1 + 3 * topK) + (shared ? tokens : 0)
  }
}
