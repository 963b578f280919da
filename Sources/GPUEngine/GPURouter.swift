import CPUEngine
import CUDA
import Kernels
import SamoyedsFormat
import SamoyedsModel

/// An MoE layer's router on the GPU: the router weight on the device (f32,
/// as the CPU engine holds it) and the family's rule, run by `MoERouting`
/// (docs/DATAFLOW.md, "Router on the GPU").
///
/// `route` builds the routing plan of hidden states already on the device
/// on the session's stream and synchronizes nothing; `download` brings a
/// plan back as a validated `RoutingPlan` (for checks and inspection).
///
/// The plan is the CPU engine's (`CPUMoELayer.route`) up to the order of the
/// f32 sums in the logits and the softmax: the same choices wherever no two
/// probabilities are within a few ulps, weights within a few ulps
/// (`ExactLogits` gives inputs where the choices provably agree).
///
/// Not thread-safe: the plan buffers and the workspace are cached for the
/// last token count; use one router from one thread at a time.
public final class GPURouter {
  public let config: MoEConfig
  /// Element type of the hidden states it reads (bf16 or fp16).
  public let dtype: DType
  public let session: GPUSession
  /// Router weight [E, hidden] f32.
  let weight: DeviceBuffer
  /// Plan buffers of the last token count.
  private var buffers: (tokens: Int, plan: MoERouting.DevicePlan)?
  /// Grown to the largest launch seen.
  private var workspace = GrowingBuffer()
  /// A forced k split of the logits (`MoERouting.Problem.splits`), which
  /// also keeps few tokens on the general path (`verify` covers both); nil
  /// chooses.
  public var logitSplits: Int? = nil

  /// The `MoERouting` problem of `config`'s router rule for `tokens` tokens:
  /// top-k, renormalization and, for a capacity (OpenMoE), the number of
  /// entries each expert admits at this T (`ExpertCapacity.capacity`).
  public static func problem(config: MoEConfig, tokens: Int, dtype: DType) -> MoERouting.Problem {
    let rule = config.router
    return MoERouting.Problem(
      tokens: tokens, hidden: config.hiddenSize, experts: config.numExperts, topK: rule.topK, dtype: dtype,
      renormalize: rule.normalizeTopK,
      capacity: rule.capacity?.capacity(tokens: tokens, experts: config.numExperts, topK: rule.topK))
  }

  /// Throws `.unsupported` saying why when the GPU router cannot route
  /// `config` with hidden states in `dtype` (too many experts, a top-k or
  /// hidden size the kernels do not take, an element type other than
  /// bf16/fp16). Needs no GPU.
  public static func check(config: MoEConfig, dtype: DType) throws(GPUEngineError) {
    do {
      try MoERouting.canImplement(problem(config: config, tokens: 1, dtype: dtype))
    } catch {
      guard case .invalidArgument(let text) = error else { throw .cuda(error) }
      throw .unsupported("the GPU router cannot route \(config.name): \(text)")
    }
  }

  /// Checks the configuration (`check`) and the router weight [E, hidden]
  /// (shape, finite values), then uploads the weight.
  public init(config: MoEConfig, router: Matrix<Float>, session: GPUSession, dtype: DType = .bf16)
    throws(GPUEngineError)
  {
    try Self.check(config: config, dtype: dtype)
    guard router.rows == config.numExperts, router.columns == config.hiddenSize else {
      throw .input(
        .shapeMismatch(
          "router is [\(router.rows), \(router.columns)], expected [\(config.numExperts), \(config.hiddenSize)]"))
    }
    if let (row, column) = router.firstNonFinite() {
      throw .input(.nonFinite("router weight [\(row), \(column)] is \(router[row, column])"))
    }
    weight = try cuda { () throws(CUDAError) in try DeviceBuffer(context: session.context, copying: router.storage) }
    self.config = config
    self.dtype = dtype
    self.session = session
  }

  /// Routes hidden states `x` [tokens, hidden] (on the device, in `dtype`)
  /// on the session's stream; nothing is synchronized. The returned buffers
  /// are reused by the next call.
  public func route(x: DeviceBuffer, tokens: Int) throws(CUDAError) -> MoERouting.DevicePlan {
    try routeRetaining(x: x, tokens: tokens).plan
  }

  /// `route`, also returning the scratch it used (a captured graph keeps
  /// it alive: a later, larger call replaces it).
  func routeRetaining(x: DeviceBuffer, tokens: Int) throws(CUDAError) -> (
    plan: MoERouting.DevicePlan, scratch: DeviceBuffer?
  ) {
    var problem = Self.problem(config: config, tokens: tokens, dtype: dtype)
    problem.splits = logitSplits
    try MoERouting.canImplement(problem)
    let plan = try planBuffers(tokens: tokens)
    let bytes = MoERouting.workspaceBytes(problem, multiprocessors: session.context.multiprocessorCount)
    // Zeroed when allocated: the decode path's arrival counter.
    let scratch = try workspace.atLeast(bytes, context: session.context, zeroedOn: session.stream)
    try MoERouting.run(
      MoERouting.Arguments(problem: problem, x: x, router: weight, plan: plan), workspace: scratch,
      library: session.library, stream: session.stream)
    return (plan, scratch)
  }

  /// Synchronizes the stream and downloads `plan` (routed for `tokens`
  /// tokens) as a `RoutingPlan`, whose initializer checks every rule of the
  /// layout.
  ///
  /// - Throws: `.cuda` for a device failure; `.wrongResult` when the plan
  ///   breaks its layout (a kernel defect).
  public func download(_ plan: MoERouting.DevicePlan, tokens: Int) throws(GPUEngineError) -> RoutingPlan {
    let offsets = try downloadOffsets(plan, tokens: tokens)
    let n = Int(offsets[config.numExperts])
    let (tokenIndices, weights, outputSlots) = try cuda { () throws(CUDAError) in
      (
        try plan.tokenIndices.download(Int32.self, count: n), try plan.weights.download(Float.self, count: n),
        try plan.outputSlots.download(Int32.self, count: n)
      )
    }
    do {
      return try RoutingPlan(
        numTokens: tokens, numExperts: config.numExperts, topK: config.topK, expertOffsets: offsets,
        tokenIndices: tokenIndices, weights: weights, outputSlots: outputSlots)
    } catch {
      throw .wrongResult("the GPU routing plan breaks its layout: \(error)")
    }
  }

  /// Synchronizes the stream and downloads `plan`'s expert offsets [E + 1]
  /// (routed for `tokens` tokens), checked to start at 0, never decrease and
  /// end at most at T·topK, so that they can size launches.
  ///
  /// - Throws: `.cuda` for a device failure, `.wrongResult` for offsets
  ///   that break those rules (a kernel defect).
  public func downloadOffsets(_ plan: MoERouting.DevicePlan, tokens: Int) throws(GPUEngineError) -> [Int32] {
    let experts = config.numExperts
    let offsets = try cuda { () throws(CUDAError) in
      // Downloads are synchronous copies on the legacy stream, which does
      // not wait for the session's non-blocking stream.
      try session.stream.synchronize()
      return try plan.expertOffsets.download(Int32.self, count: experts + 1)
    }
    let ordered = zip(offsets, offsets.dropFirst()).allSatisfy { $0 <= $1 }
    guard offsets.first == 0, ordered, let last = offsets.last, Int(last) <= tokens * config.topK else {
      throw .wrongResult(
        "the GPU router's expert offsets are malformed (T·topK = \(tokens * config.topK)): \(offsets.prefix(17))")
    }
    return offsets
  }

  private func planBuffers(tokens: Int) throws(CUDAError) -> MoERouting.DevicePlan {
    if let buffers, buffers.tokens == tokens { return buffers.plan }
    buffers = nil  // free the old buffers first
    let plan = try MoERouting.DevicePlan(
      context: session.context, tokens: tokens, experts: config.numExperts, topK: config.topK)
    buffers = (tokens, plan)
    return plan
  }
}
