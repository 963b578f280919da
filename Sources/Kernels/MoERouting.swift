import CUDA
import SamoyedsFormat

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The router and the activation-side dispatch on the GPU (`moe_routing.cu`).
///
/// From hidden states x [T, hidden] (bf16/fp16, the buffer the expert GEMMs
/// read) and a router weight R [E, hidden] (f32) already on the device, it
/// builds the routing plan on the device, exactly as the CPU engine's
/// `Router.route` + `RoutingPlan(…)` define it:
///
/// 1. logits `x · Rᵀ` [T, E], f32 accumulation (k split when the tiles
///    alone cannot fill the GPU; the splits are summed in order);
/// 2. per token: softmax over all experts, top-k with ties to the lower
///    expert, optional renormalization → `selectedExperts`/`selectedWeights`
///    [T, topK] (the CPU's `Router.Choice`);
/// 3. optional capacity (OpenMoE): every first choice in token order, then
///    every second choice, …; choices past `capacity` are dropped (expert -1,
///    weight 0, as on the CPU);
/// 4. the CSR plan: `expertOffsets` [E + 1], and per expert its tokens in
///    ascending order with their `weights` and `outputSlots` (token·topK +
///    rank) — a stable counting sort by expert (counts → scan → scatter).
///
/// Bitwise deterministic: no float atomics; integer atomics only count.
/// Four launches and one memset on the caller's stream, nothing
/// synchronized; for decode (T <= 8 by default, up to `smallTokens`; no
/// capacity drops) one launch (`samoyeds_route_small_*`: logits by one warp per expert, then
/// the last CTA selects and builds the plan). Host contract in CUTLASS's style: `Problem`/`Arguments` →
/// `canImplement` → `workspaceBytes` → `run(on:)`.
///
/// The router weight is f32 (a bf16 checkpoint's router converts exactly),
/// so the logits are the CPU's up to the order of the f32 sums.
public enum MoERouting {
  /// Experts a token chooses from (`kMaxExperts`).
  public static let maxExperts = 256
  /// Choices per token (`kMaxTopK`).
  public static let maxTopK = 32
  /// The hidden size must be a multiple of this (`kChunk`, columns per stage).
  public static let hiddenMultiple = 32

  // Mirrors of moe_routing.cu's configuration (KernelsTests compares them
  // with the source).
  static let tileTokens = 64
  static let tileExperts = 64
  static let logitThreads = 256
  static let selectWarps = 8
  static let blockTokens = 128
  static let scatterWarps = 8
  static let scanThreads = 256
  /// Decode routing: most tokens of the one-launch path (`kSmallTokens`),
  /// experts per CTA (`kSmallWarps`).
  static let smallTokens = 16
  static let smallWarps = 8
  /// Most k splits of the logits: partials summed per logit by `select`.
  static let maxSplits = 16

  /// The kernels of `moe_routing.cu`.
  public static let entryPoints = [
    "samoyeds_router_logits_bf16", "samoyeds_router_logits_fp16", "samoyeds_router_select", "samoyeds_route_scan",
    "samoyeds_route_scatter", "samoyeds_shared_gate_bf16", "samoyeds_shared_gate_fp16", "samoyeds_route_small_bf16",
    "samoyeds_route_small_fp16",
  ]

  /// Most tokens routed by the one-launch decode path by default: 8.
  /// `SAMOYEDS_ROUTER_SMALL_TOKENS` overrides it (0: never; at most
  /// `smallTokens`, the kernel's limit). Measured on an H200 (`bench moe`
  /// stages, each against `SAMOYEDS_ROUTER_SMALL_TOKENS=0` in the same
  /// call), router µs one launch / general path: Mixtral-8x7B 21.4 / 31.7
  /// at T = 1, 22.2 / 30.9 at 2, 23.7 / 30.7 at 4, 27.5 / 31.0 at 8, 43.7 /
  /// 31.7 at 16; Qwen3-30B-A3B 21.1 / 33.3, 21.3 / 34.6, 23.3 / 33.7,
  /// 27.3 / 34.7, 44.4 / 35.1. At T = 16 each warp's 16 token rows and
  /// the last CTA's selection of 16 tokens (two per warp) cost more than
  /// the general path's five launches.
  static let smallPathTokens: Int = {
    Switches.integer("SAMOYEDS_ROUTER_SMALL_TOKENS", atLeast: 0).map { min($0, smallTokens) } ?? 8
  }()

  /// Whether `p` takes the one-launch decode path: few tokens, no
  /// capacity drops (with a capacity below T the general path's admission
  /// order applies) and no forced split (a forced split asks for the
  /// general path's tiled logits).
  static func routesInOneLaunch(_ p: Problem, upTo limit: Int = smallPathTokens) -> Bool {
    p.tokens >= 1 && p.tokens <= min(limit, smallTokens) && p.kernelCapacity >= p.tokens && p.splits == nil
  }

  /// The shared expert's sigmoid gate on the device (Qwen2-MoE):
  /// `scale[t] = 1 / (1 + exp(−x[t] · gate))` for t < `tokens`, x
  /// bf16/fp16 [tokens, hidden], gate f32 [hidden], scale f32 [tokens]; one
  /// warp per token, fixed summation order (as `CPUMoELayer.sharedExpertScale`
  /// up to f32 rounding).
  public static func sharedGate(
    x: DeviceBuffer, gate: DeviceBuffer, into scale: DeviceBuffer, tokens: Int, hidden: Int, dtype: DType,
    library: KernelLibrary, stream: CUDAStream
  ) throws(CUDAError) {
    guard dtype == .bf16 || dtype == .fp16 else { throw .invalidArgument("x must be bf16 or fp16") }
    guard tokens >= 0, hidden >= 1, x.byteCount >= tokens * hidden * 2, gate.byteCount >= hidden * 4,
      scale.byteCount >= tokens * 4
    else {
      throw .invalidArgument("shared gate buffers too small for [\(tokens), \(hidden)]")
    }
    if tokens == 0 { return }
    var arguments = KernelArguments()
    arguments.append(x)
    arguments.append(gate)
    arguments.append(scale)
    arguments.append(Int32(tokens))
    arguments.append(Int32(hidden))
    let warps = 8  // kGateWarps
    try library.function("samoyeds_shared_gate_\(dtype)").launch(
      grid: ((tokens + warps - 1) / warps, 1, 1), block: (warps * 32, 1, 1), stream: stream, arguments: arguments)
  }

  /// One routing launch as plain numbers.
  public struct Problem: Sendable, Hashable {
    /// Tokens T (rows of x).
    public var tokens: Int
    /// Hidden size (columns of x and of the router).
    public var hidden: Int
    /// Experts E (rows of the router).
    public var experts: Int
    /// Choices per token.
    public var topK: Int
    /// Element type of x: bf16 or fp16.
    public var dtype: DType
    /// Divide each token's top-k weights by their sum.
    public var renormalize: Bool
    /// Entries each expert admits for this T (OpenMoE's
    /// `ExpertCapacity.capacity`); nil = no limit.
    public var capacity: Int?
    /// A forced k split of the logits (and the general path even for few
    /// tokens); nil chooses one (`logitSplits`).
    public var splits: Int?

    public init(
      tokens: Int, hidden: Int, experts: Int, topK: Int, dtype: DType, renormalize: Bool, capacity: Int? = nil,
      splits: Int? = nil
    ) {
      self.tokens = tokens
      self.hidden = hidden
      self.experts = experts
      self.topK = topK
      self.dtype = dtype
      self.renormalize = renormalize
      self.capacity = capacity
      self.splits = splits
    }

    /// Dispatch blocks: groups of `blockTokens` tokens one warp scatters in order.
    var blocks: Int { (tokens + MoERouting.blockTokens - 1) / MoERouting.blockTokens }

    /// The capacity as the kernels take it: at most T (an expert cannot get
    /// more than T entries, so T means no limit).
    var kernelCapacity: Int { min(capacity ?? tokens, tokens) }
  }

  /// The plan on the device, sized for `tokens` (n ≤ tokens·topK entries).
  ///
  /// The entries of expert e are `expertOffsets[e] ..< expertOffsets[e + 1]`
  /// of `tokenIndices`, `weights` and `outputSlots` (`RoutingPlan`'s layout);
  /// the arrays past `expertOffsets[E]` are unspecified.
  public struct DevicePlan {
    /// Int32 [T, topK]: each token's experts in rank order, -1 where the
    /// capacity dropped the choice.
    public let selectedExperts: DeviceBuffer
    /// f32 [T, topK]: their routing weights, 0 where dropped.
    public let selectedWeights: DeviceBuffer
    /// Int32 [E + 1].
    public let expertOffsets: DeviceBuffer
    /// Int32 [T·topK].
    public let tokenIndices: DeviceBuffer
    /// f32 [T·topK].
    public let weights: DeviceBuffer
    /// Int32 [T·topK].
    public let outputSlots: DeviceBuffer

    /// Allocates the buffers for up to `tokens` tokens.
    public init(context: CUDAContext, tokens: Int, experts: Int, topK: Int) throws(CUDAError) {
      let entries = tokens * topK * 4
      selectedExperts = try DeviceBuffer(context: context, byteCount: entries)
      selectedWeights = try DeviceBuffer(context: context, byteCount: entries)
      expertOffsets = try DeviceBuffer(context: context, byteCount: (experts + 1) * 4)
      tokenIndices = try DeviceBuffer(context: context, byteCount: entries)
      weights = try DeviceBuffer(context: context, byteCount: entries)
      outputSlots = try DeviceBuffer(context: context, byteCount: entries)
    }
  }

  public struct Arguments {
    public var problem: Problem
    /// Hidden states [T, hidden] in `problem.dtype`, 16-byte aligned.
    public var x: DeviceBuffer
    /// Router weight [E, hidden] f32, 16-byte aligned.
    public var router: DeviceBuffer
    /// Where the plan goes.
    public var plan: DevicePlan

    public init(problem: Problem, x: DeviceBuffer, router: DeviceBuffer, plan: DevicePlan) {
      self.problem = problem
      self.x = x
      self.router = router
      self.plan = plan
    }
  }

  /// Throws `invalidArgument` naming the first thing the kernels cannot do
  /// with these numbers (no device needed).
  public static func canImplement(_ p: Problem) throws(CUDAError) {
    guard p.dtype == .bf16 || p.dtype == .fp16 else {
      throw .invalidArgument("router input x must be bf16 or fp16, not \(p.dtype)")
    }
    guard p.tokens >= 0 else { throw .invalidArgument("negative token count \(p.tokens)") }
    guard p.hidden > 0, p.hidden % hiddenMultiple == 0 else {
      throw .invalidArgument("hidden size \(p.hidden) must be a positive multiple of \(hiddenMultiple)")
    }
    guard p.experts >= 1, p.experts <= maxExperts else {
      throw .invalidArgument("\(p.experts) experts; the GPU router handles 1 to \(maxExperts)")
    }
    guard p.topK >= 1, p.topK <= min(p.experts, maxTopK) else {
      throw .invalidArgument("top-\(p.topK) of \(p.experts) experts; the GPU router needs 1 <= topK <= min(E, \(maxTopK))")
    }
    // Entries, slots and logit indices are 32-bit on the device.
    guard p.tokens <= Int(Int32.max) / max(p.topK, p.experts) else {
      throw .invalidArgument("\(p.tokens) tokens x \(max(p.topK, p.experts)) exceed 32-bit indices")
    }
    if let capacity = p.capacity, capacity < 0 { throw .invalidArgument("negative capacity \(capacity)") }
    if let splits = p.splits, splits < 1 { throw .invalidArgument("splits must be >= 1, got \(splits)") }
  }

  /// `canImplement` on the numbers, then every buffer's size and alignment.
  public static func canImplement(_ a: Arguments) throws(CUDAError) {
    let p = a.problem
    try canImplement(p)
    func need(_ buffer: DeviceBuffer, _ bytes: Int, _ name: String) throws(CUDAError) {
      guard buffer.byteCount >= bytes else {
        throw .invalidArgument("\(name) holds \(buffer.byteCount) bytes, needs \(bytes)")
      }
    }
    try need(a.x, p.tokens * p.hidden * 2, "x [\(p.tokens), \(p.hidden)]")
    try need(a.router, p.experts * p.hidden * 4, "router [\(p.experts), \(p.hidden)] f32")
    guard a.x.address % 16 == 0, a.router.address % 16 == 0 else {
      throw .invalidArgument("x and the router must be 16-byte aligned (16-byte loads)")
    }
    let entries = p.tokens * p.topK * 4
    try need(a.plan.selectedExperts, entries, "selectedExperts")
    try need(a.plan.selectedWeights, entries, "selectedWeights")
    try need(a.plan.expertOffsets, (p.experts + 1) * 4, "expertOffsets")
    try need(a.plan.tokenIndices, entries, "tokenIndices")
    try need(a.plan.weights, entries, "weights")
    try need(a.plan.outputSlots, entries, "outputSlots")
  }

  /// The k split of the logits: one when the 64×64 tiles fill the GPU, else
  /// enough splits for about two CTAs per SM (at most `maxSplits`, at most
  /// one per 32-column stage), each split a whole number of stages.
  public static func logitSplits(_ p: Problem, multiprocessors: Int) -> (splits: Int, chunksPerSplit: Int) {
    let chunks = p.hidden / hiddenMultiple
    guard chunks > 0 else { return (1, 1) }
    let tiles = ((p.tokens + tileTokens - 1) / tileTokens) * ((p.experts + tileExperts - 1) / tileExperts)
    var splits = p.splits ?? 1
    if p.splits == nil && tiles < multiprocessors {
      splits = min(maxSplits, (2 * multiprocessors + max(tiles, 1) - 1) / max(tiles, 1))
    }
    splits = max(1, min(splits, chunks))
    let perSplit = (chunks + splits - 1) / splits
    return ((chunks + perSplit - 1) / perSplit, perSplit)
  }

  /// Byte offsets of the workspace sections, each 256-byte aligned: the
  /// decode path's arrival counter (UInt32 at 0, in a 256-byte header, so
  /// every T finds it at the same place); partial logits f32
  /// [splits][T][E]; counts, admitted Int32 [E][topK][blocks]; block
  /// starts Int32 [E][blocks]; totals Int32 [E].
  struct WorkspaceLayout: Equatable {
    var arrivals = 0
    var logits = 256
    var counts = 0
    var countsBytes = 0
    var admitted = 0
    var blockStart = 0
    var expertTotals = 0
    var bytes = 0

    init(_ p: Problem, splits: Int) {
      func aligned(_ n: Int) -> Int { (n + 255) / 256 * 256 }
      let pairs = p.experts * p.topK * p.blocks
      countsBytes = pairs * 4
      counts = logits + aligned(splits * p.tokens * p.experts * 4)
      admitted = counts + aligned(countsBytes)
      blockStart = admitted + aligned(countsBytes)
      expertTotals = blockStart + aligned(p.experts * p.blocks * 4)
      bytes = expertTotals + aligned(p.experts * 4)
    }
  }

  /// Scratch bytes `run` needs for `p` on a GPU with `multiprocessors` SMs
  /// (0 for no tokens).
  public static func workspaceBytes(_ p: Problem, multiprocessors: Int) -> Int {
    if p.tokens == 0 { return 0 }
    return WorkspaceLayout(p, splits: logitSplits(p, multiprocessors: multiprocessors).splits).bytes
  }

  /// Builds the plan on `stream`: a memset and four launches, or one launch
  /// (`routesInOneLaunch`), nothing synchronized. `workspace` must hold
  /// `workspaceBytes` bytes, its first 4 bytes (the decode path's arrival
  /// counter) zero when first used; every launch leaves them zero. With no
  /// tokens only `expertOffsets` is written (all zero).
  public static func run(
    _ a: Arguments, workspace: DeviceBuffer?, library: KernelLibrary, stream: CUDAStream
  ) throws(CUDAError) {
    try canImplement(a)
    let p = a.problem
    if p.tokens == 0 {
      try a.plan.expertOffsets.fill(word: 0, count: p.experts + 1, on: stream)
      return
    }
    // Both paths split the logits alike (the one-launch path a CTA per
    // split and 8 experts), so `workspaceBytes` sizes either.
    let small = routesInOneLaunch(p)
    let (splits, chunksPerSplit) = logitSplits(p, multiprocessors: library.context.multiprocessorCount)
    let layout = WorkspaceLayout(p, splits: splits)
    guard let workspace, workspace.byteCount >= layout.bytes else {
      throw .invalidArgument("routing workspace of \(workspace?.byteCount ?? 0) bytes, needs \(layout.bytes)")
    }
    if !small { try workspace.view(offset: layout.counts, byteCount: layout.countsBytes).fill(byte: 0, on: stream) }

    // struct RoutingArgs, field by field.
    var bytes = ArgumentBytes()
    bytes.pointer(a.x.address)
    bytes.pointer(a.router.address)
    bytes.pointer(workspace.address + UInt64(layout.logits))
    bytes.pointer(a.plan.selectedExperts.address)
    bytes.pointer(a.plan.selectedWeights.address)
    for offset in [layout.counts, layout.admitted, layout.blockStart, layout.expertTotals] {
      bytes.pointer(workspace.address + UInt64(offset))
    }
    bytes.pointer(a.plan.expertOffsets.address)
    bytes.pointer(a.plan.tokenIndices.address)
    bytes.pointer(a.plan.weights.address)
    bytes.pointer(a.plan.outputSlots.address)
    for value in [
      p.tokens, p.hidden, p.experts, p.topK, splits, chunksPerSplit, p.blocks, p.renormalize ? 1 : 0, p.kernelCapacity,
    ] {
      bytes.int32(value)
    }
    bytes.align(8)  // sizeof(RoutingArgs): 13 pointers and 9 ints, padded to 8
    var arguments = KernelArguments()
    arguments.append(bytes: bytes.bytes)

    if small {
      arguments.append(workspace.address + UInt64(layout.arrivals))
      try library.function("samoyeds_route_small_\(p.dtype)").launch(
        grid: ((p.experts + smallWarps - 1) / smallWarps, splits, 1), block: (smallWarps * 32, 1, 1), stream: stream,
        arguments: arguments)
      return
    }
    let block = (logitThreads, 1, 1)
    try library.function("samoyeds_router_logits_\(p.dtype)").launch(
      grid: ((p.tokens + tileTokens - 1) / tileTokens, (p.experts + tileExperts - 1) / tileExperts, splits),
      block: block, stream: stream, arguments: arguments)
    try library.function("samoyeds_router_select").launch(
      grid: ((p.tokens + selectWarps - 1) / selectWarps, 1, 1), block: (selectWarps * 32, 1, 1), stream: stream,
      arguments: arguments)
    try library.function("samoyeds_route_scan").launch(
      grid: (p.experts, 1, 1), block: (scanThreads, 1, 1), stream: stream, arguments: arguments)
    try library.function("samoyeds_route_scatter").launch(
      grid: ((p.blocks + scatterWarps - 1) / scatterWarps, 1, 1), block: (scatterWarps * 32, 1, 1), stream: stream,
      arguments: arguments)
  }
}
