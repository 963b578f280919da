import CPUEngine
import CUDA
import Kernels
import SamoyedsFormat
import SamoyedsModel

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Called between the stages of an enqueued forward with the name of the
/// stage just enqueued (`DecodeGraph.enqueueEager(marking:)`).
public typealias StageMark = (String) throws(CUDAError) -> Void

/// What a GPU forward pass produced, with the routing it used.
public struct GPUMoEResult: Sendable {
  /// [T, hidden] f32.
  public var output: Matrix<Float>
  /// The activation side the experts read: built on the host
  /// (`RouterPlacement.host`) or downloaded from the GPU after the output
  /// (`.device`).
  public var plan: RoutingPlan
}

/// Where a GPU layer routes its tokens.
public enum RouterPlacement: String, Sendable, CaseIterable {
  /// On the host: `CPUMoELayer.route` (the CPU engine's own router), the
  /// index lists uploaded with the hidden states.
  case host
  /// On the GPU: `GPURouter` (`MoERouting`) builds the plan from the hidden
  /// states on the device; only the expert offsets [E + 1] come back to the
  /// host, for the launch loop's grid sizes.
  case device
}

/// How a GPU layer launches its routed experts.
public enum ExpertLaunch: Sendable {
  /// Two launches per expert with tokens, each sized from the expert's
  /// token count (read on the host: with the GPU router, one synchronize
  /// and an [E + 1] download per forward).
  case perExpert
  /// One launch per projection for all experts (`GroupedLaunch`, the
  /// streaming kernel): the counts stay on the device, nothing waits for
  /// the host between the router and the output. Needs `RouterPlacement
  /// .device`; meant for decode (each launch is sized for T·topK entries).
  case grouped
}

/// An MoE layer on the GPU, v0: every expert's weights live on the device;
/// the router runs on the host or, with `RouterPlacement.device`, on the GPU.
///
/// Pipeline of `forward` (docs/DATAFLOW.md, "GPU layer v0" and "Router on
/// the GPU"):
///
/// 1. host: with `.host`, `CPUMoELayer.route` (the CPU engine's own checks,
///    router GEMM, softmax/top-k/capacity and `RoutingPlan`); with
///    `.device`, only its checks of the hidden states; and the shared
///    expert's per-token scale (`CPUMoELayer.sharedExpertScale`);
/// 2. upload: x [T, hidden] as bf16/fp16, and the index lists in one copy
///    (`IndexUpload`; with `.device` only the identity rows and the shared
///    scale); with `.device`, `GPURouter.route` builds the plan on the GPU,
///    then one synchronize and a download of the [E + 1] expert offsets
///    (the launch loop below needs each expert's token count for its grid;
///    issue #5's grouped launch reads the offsets on the device instead);
/// 3. per expert with tokens, two `PortableKernel` launches on its token
///    rows: gate/up with `.siluMul` → intermediate [count, ffn], then down
///    with `.scaleToSlots` → f32 slots [T·topK, hidden] (zeroed first);
/// 4. `PortableKernel.combine` → f32 out [T, hidden], rank order;
/// 5. shared expert on all T rows: `.siluMul`, then down with `.scaleAdd`
///    and the per-token scales as routing weights, into out;
/// 6. stream synchronize, download out (with `.device`, then the plan).
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
  /// Where `forward` routes.
  public let routerPlacement: RouterPlacement
  /// The GPU router (`.device` only).
  let deviceRouter: GPURouter?
  /// Buffers of the last forward's token count.
  private var scratch: Scratch?
  /// Split-k partials, grown to the largest launch seen.
  private var workspace = GrowingBuffer()
  /// How routed experts are launched (`.grouped` only with the GPU router).
  public var expertLaunch: ExpertLaunch = .perExpert
  /// The kernel of grouped launches (`.stream` or `.wgmma`); nil: chosen
  /// per launch from T·topK (`GroupedLaunch.tiling`).
  public var groupedTiling: PortableKernel.Tiling? = nil
  /// The experts' weight tables for grouped launches, made on first use.
  private var groupTables: (gate: GroupedLaunch.WeightTable, up: GroupedLaunch.WeightTable, down: GroupedLaunch.WeightTable)?
  /// Grouped scratch: intermediate [T·topK, ffn] and identity [T·topK], by entry count.
  var groupScratch: (entries: Int, intermediate: DeviceBuffer, identity: DeviceBuffer)?

  /// Checks, packs (`pack(_:dtype:)`) and uploads every expert of `weights`;
  /// with `router: .device` also the router weight (`GPURouter`).
  ///
  /// The default is `.host` until the GPU router has been verified on a GPU
  /// (`samoyeds verify`, cases `gpu router …` and `… device-router`).
  ///
  /// - Throws: `.unsupported` for a dense projection, a pattern without a
  ///   GPU kernel, a dtype other than bf16/fp16, or (`.device`) a router the
  ///   GPU router cannot run; `.input` for weights that do not match their
  ///   configuration; `.cuda` when an upload fails.
  public convenience init(
    weights: CPUMoEWeights, session: GPUSession, dtype: DType = .bf16, router placement: RouterPlacement = .host
  ) throws(GPUEngineError) {
    if placement == .device { try GPURouter.check(config: weights.config, dtype: dtype) }
    let packed = try Self.pack(weights, dtype: dtype)
    try self.init(
      config: weights.config, experts: packed.experts, shared: packed.shared, router: weights.router,
      sharedGate: weights.sharedGate, session: session, dtype: dtype, router: placement)
  }

  /// A layer from experts already packed (`pack`, or synthetic weights of
  /// a benchmark), uploaded as they are.
  ///
  /// - Throws: `.input` when the experts' count or shapes, the router's or
  ///   the shared gate's shape do not match `config`, or a weight is not in
  ///   `dtype`; `.unsupported` as the other initializer; `.cuda` when an
  ///   upload fails.
  public init(
    config: MoEConfig, experts packedExperts: [PackedExpert], shared packedShared: PackedExpert?,
    router routerWeight: Matrix<Float>, sharedGate gate: Matrix<Float>?, session: GPUSession, dtype: DType = .bf16,
    router placement: RouterPlacement = .host
  ) throws(GPUEngineError) {
    guard Self.supportedDTypes.contains(dtype) else {
      throw .unsupported("the GPU layer computes in bf16 or fp16, not \(dtype)")
    }
    if placement == .device { try GPURouter.check(config: config, dtype: dtype) }
    func check(_ expert: PackedExpert, ffn: Int, _ name: String) throws(GPUEngineError) {
      let h = config.hiddenSize
      for (weight, rows, columns, what) in [
        (expert.gate, ffn, h, "gate"), (expert.up, ffn, h, "up"), (expert.down, h, ffn, "down"),
      ] where weight.rows != rows || weight.columns != columns || weight.dtype != dtype {
        throw .input(
          .shapeMismatch(
            "\(name) \(what) is [\(weight.rows), \(weight.columns)] \(weight.dtype), expected [\(rows), \(columns)] \(dtype)"))
      }
    }
    guard packedExperts.count == config.numExperts else {
      throw .input(.shapeMismatch("\(packedExperts.count) experts, the configuration has \(config.numExperts)"))
    }
    for (e, expert) in packedExperts.enumerated() { try check(expert, ffn: config.expertIntermediateSize, "expert \(e)") }
    guard (packedShared == nil) == (config.sharedExpert == nil) else {
      throw .input(.shapeMismatch("the shared expert does not match the configuration"))
    }
    if let packedShared, let sharedConfig = config.sharedExpert {
      try check(packedShared, ffn: sharedConfig.intermediateSize, "shared expert")
    }
    guard routerWeight.rows == config.numExperts, routerWeight.columns == config.hiddenSize else {
      throw .input(
        .shapeMismatch(
          "router is [\(routerWeight.rows), \(routerWeight.columns)], expected [\(config.numExperts), \(config.hiddenSize)]"))
    }
    if let (row, column) = routerWeight.firstNonFinite() {
      throw .input(.nonFinite("router weight [\(row), \(column)] is \(routerWeight[row, column])"))
    }
    do {
      experts = try packedExperts.map { (expert) throws(CUDAError) in
        try GPUExpert(context: session.context, packed: expert)
      }
      shared = try packedShared.map { (expert) throws(CUDAError) in try GPUExpert(context: session.context, packed: expert) }
    } catch {
      throw .cuda(error)
    }
    self.config = config
    self.dtype = dtype
    self.session = session
    router = routerWeight
    sharedGate = gate
    routerPlacement = placement
    deviceRouter =
      placement == .device
      ? try GPURouter(config: config, router: routerWeight, session: session, dtype: dtype) : nil
  }

  /// Device bytes of all expert weights (routed and shared), as packed.
  public var weightBytes: Int { experts.reduce(0) { $0 + $1.deviceBytes } + (shared?.deviceBytes ?? 0) }

  /// Runs the layer on hidden states `x` [T, hidden] (f32 on the host).
  ///
  /// - Returns: out [T, hidden] f32 and the routing plan.
  /// - Throws: `.input` for a wrong hidden size or a non-finite hidden
  ///   state (the CPU engine's checks); `.cuda` for a device failure;
  ///   `.wrongResult` if the GPU router's plan breaks its layout.
  public func forward(_ x: Matrix<Float>) throws(GPUEngineError) -> GPUMoEResult {
    var hostPlan: RoutingPlan? = nil
    var sharedScale: [Float]? = nil
    do {
      // The GPU router replaces the host's routing, not its checks. An empty
      // batch launches nothing; its (empty) plan comes from the host.
      if deviceRouter != nil && x.rows > 0 {
        try CPUMoELayer.checkHiddenStates(x, config: config)
      } else {
        hostPlan = try CPUMoELayer.route(x, config: config, router: router)
      }
      if shared != nil { sharedScale = try CPUMoELayer.sharedExpertScale(x, config: config, sharedGate: sharedGate) }
    } catch {
      throw .input(error)
    }
    let hidden = config.hiddenSize
    if x.rows == 0, let hostPlan {
      return GPUMoEResult(output: Matrix(rows: 0, columns: hidden, repeating: 0), plan: hostPlan)
    }
    var output = Matrix<Float>(rows: x.rows, columns: hidden, repeating: 0)
    let devicePlan: MoERouting.DevicePlan?
    (output.storage, devicePlan) = try run(x, hostPlan: hostPlan, sharedScale: sharedScale)  // T·hidden values
    if let hostPlan { return GPUMoEResult(output: output, plan: hostPlan) }
    guard let devicePlan, let deviceRouter else { throw .wrongResult("the GPU router returned no plan") }
    return GPUMoEResult(output: output, plan: try deviceRouter.download(devicePlan, tokens: x.rows))
  }

  /// The index lists of one forward on the device, wherever they were built.
  private struct IndexLists {
    /// [E + 1] on the host: each expert's entry range (the launch loop's counts).
    let expertOffsets: [Int32]
    /// Int32 / f32 / Int32 [n] on the device.
    let tokenIndices: DeviceBuffer
    let weights: DeviceBuffer
    let outputSlots: DeviceBuffer
    /// Int32 [T] 0, 1, …, T−1.
    let identity: DeviceBuffer
    /// f32 [T], when the layer has a shared expert.
    let sharedScale: DeviceBuffer?
  }

  /// Steps 2-6 of the pipeline with the plan built on the host (`hostPlan`)
  /// or, when it is nil, on the GPU; returns out [T, hidden] row-major and
  /// the device plan (GPU routing only). Step 2: uploads and, with the GPU
  /// router, the routing and the offsets' download.
  private func run(
    _ x: Matrix<Float>, hostPlan: RoutingPlan?, sharedScale: [Float]?
  ) throws(GPUEngineError) -> ([Float], MoERouting.DevicePlan?) {
    let tokens = x.rows
    let upload =
      hostPlan.map { IndexUpload(plan: $0, sharedScale: sharedScale) }
      ?? IndexUpload(tokens: tokens, sharedScale: sharedScale)
    let s = try cuda { () throws(CUDAError) in
      try session.context.makeCurrent()
      let s = try scratch(tokens: tokens)
      try s.x.upload(HalfBits.encode(x.storage, dtype), on: session.stream)
      try s.indices.upload(upload.words, on: session.stream)
      return s
    }
    func words(_ offset: Int, _ count: Int) throws(CUDAError) -> DeviceBuffer {
      try s.indices.view(offset: offset * 4, byteCount: count * 4)
    }
    let identity = try cuda { () throws(CUDAError) in try words(upload.identity, tokens) }
    let sharedScale = try cuda { () throws(CUDAError) -> DeviceBuffer? in
      guard let offset = upload.sharedScale else { return nil }
      return try words(offset, tokens)
    }
    let lists: IndexLists
    var devicePlan: MoERouting.DevicePlan? = nil
    if let hostPlan {
      let n = hostPlan.entryCount
      lists = try cuda { () throws(CUDAError) in
        IndexLists(
          expertOffsets: hostPlan.expertOffsets, tokenIndices: try words(upload.tokenIndices, n),
          weights: try words(upload.weights, n), outputSlots: try words(upload.outputSlots, n), identity: identity,
          sharedScale: sharedScale)
      }
    } else if let deviceRouter, expertLaunch == .grouped {
      // The counts stay on the device: no synchronize until the output.
      let plan = try cuda { () throws(CUDAError) in try deviceRouter.route(x: s.x, tokens: tokens) }
      let output = try cuda { () throws(CUDAError) in
        try launchGrouped(s, plan: plan, identity: identity, sharedScale: sharedScale)
      }
      return (output, plan)
    } else if let deviceRouter {
      let plan = try cuda { () throws(CUDAError) in try deviceRouter.route(x: s.x, tokens: tokens) }
      // The launch loop sizes each expert's grid from its token count: one
      // synchronize and an [E + 1] download, until issue #5's grouped
      // launch reads the offsets on the device.
      lists = IndexLists(
        expertOffsets: try deviceRouter.downloadOffsets(plan, tokens: tokens), tokenIndices: plan.tokenIndices,
        weights: plan.weights, outputSlots: plan.outputSlots, identity: identity, sharedScale: sharedScale)
      devicePlan = plan
    } else {
      // Unreachable: forward passes a host plan unless the layer has a router.
      throw .wrongResult("no routing plan and no GPU router")
    }
    let output = try cuda { () throws(CUDAError) in try launch(s, lists: lists) }
    return (output, devicePlan)
  }

  /// Steps 3-6: the expert launches on the index lists, the combine, the
  /// shared expert, then synchronize and download out [T, hidden].
  private func launch(_ s: Scratch, lists: IndexLists) throws(CUDAError) -> [Float] {
    let context = session.context
    let stream = session.stream
    let tokens = s.tokens
    func entries(_ buffer: DeviceBuffer, _ range: Range<Int>) throws(CUDAError) -> DeviceBuffer {
      try buffer.view(offset: range.lowerBound * 4, byteCount: range.count * 4)
    }

    // Every launch's arguments first, so one workspace fits them all.
    var routed: [PortableKernel.Arguments] = []
    for (e, expert) in experts.enumerated() {
      let range = Int(lists.expertOffsets[e])..<Int(lists.expertOffsets[e + 1])
      if range.isEmpty { continue }
      let count = range.count
      routed.append(
        PortableKernel.Arguments(
          weight: expert.gate, epilogue: .siluMul(up: expert.up), x: s.x, tokens: tokens,
          rows: try entries(lists.tokenIndices, range), count: count, output: s.intermediate))
      routed.append(
        PortableKernel.Arguments(
          weight: expert.down,
          epilogue: .scaleToSlots(
            routeWeights: try entries(lists.weights, range), slots: try entries(lists.outputSlots, range)),
          x: s.intermediate, tokens: count, rows: try entries(lists.identity, 0..<count), count: count,
          output: s.slots))
    }
    let sharedLaunches = sharedLaunches(s, identity: lists.identity, sharedScale: lists.sharedScale)
    let workspaceBytes = (routed + sharedLaunches).map { PortableKernel.workspaceBytes($0, context: context) }.max() ?? 0
    let workspace = try self.workspace.atLeast(workspaceBytes, context: context, zeroedOn: stream)

    // Launches run in stream order, so one intermediate and one workspace
    // serve every expert in turn.
    try s.slots.fill(byte: 0, on: stream)
    for arguments in routed {
      try PortableKernel.run(arguments, workspace: workspace, library: session.library, stream: stream)
    }
    return try combineAndShared(s, sharedLaunches: sharedLaunches, workspace: workspace)
  }

  /// The shared expert's launches on all T rows (gate/up with `.siluMul`,
  /// down with `.scaleAdd` by the per-token scale), when the layer has one.
  private func sharedLaunches(_ s: Scratch, identity: DeviceBuffer, sharedScale: DeviceBuffer?) -> [PortableKernel.Arguments] {
    guard let shared, let scale = sharedScale else { return [] }
    let tokens = s.tokens
    return [
      PortableKernel.Arguments(
        weight: shared.gate, epilogue: .siluMul(up: shared.up), x: s.x, tokens: tokens, rows: identity, count: tokens,
        output: s.intermediate),
      PortableKernel.Arguments(
        weight: shared.down, epilogue: .scaleAdd(routeWeights: scale), x: s.intermediate, tokens: tokens,
        rows: identity, count: tokens, output: s.out),
    ]
  }

  /// Steps 4-6 after the routed experts filled the slots: combine into out,
  /// the shared expert's launches, synchronize and download out [T, hidden].
  private func combineAndShared(
    _ s: Scratch, sharedLaunches: [PortableKernel.Arguments], workspace: DeviceBuffer?
  ) throws(CUDAError) -> [Float] {
    try enqueueCombineAndShared(s, sharedLaunches: sharedLaunches, workspace: workspace)
    // The download is a synchronous copy on the legacy stream, which does
    // not wait for this non-blocking stream: synchronize first.
    try session.stream.synchronize()
    return try s.out.download(Float.self, count: s.tokens * config.hiddenSize)
  }

  /// Enqueues the combine into out and the shared expert's launches;
  /// `mark` (if any) after each of the two.
  private func enqueueCombineAndShared(
    _ s: Scratch, sharedLaunches: [PortableKernel.Arguments], workspace: DeviceBuffer?, mark: StageMark? = nil
  ) throws(CUDAError) {
    let stream = session.stream
    try PortableKernel.combine(
      slots: s.slots, into: s.out, tokens: s.tokens, topK: config.topK, hidden: config.hiddenSize,
      library: session.library, stream: stream)
    try mark?("combine")
    for arguments in sharedLaunches {
      try PortableKernel.run(arguments, workspace: workspace, library: session.library, stream: stream)
    }
    if !sharedLaunches.isEmpty { try mark?("shared expert") }
  }

  /// Steps 3-6 with grouped launches (`ExpertLaunch.grouped`): gate/up for
  /// every expert in one launch into the intermediate [T·topK, ffn] (entry
  /// j's row j), down for every expert in one launch into the slots, both
  /// reading the plan's expert offsets on the device; then as `launch`.
  private func launchGrouped(
    _ s: Scratch, plan: MoERouting.DevicePlan, identity: DeviceBuffer, sharedScale: DeviceBuffer?
  ) throws(CUDAError) -> [Float] {
    _ = try enqueueGrouped(s, plan: plan, identity: identity, sharedScale: sharedScale)
    try session.stream.synchronize()
    return try s.out.download(Float.self, count: s.tokens * config.hiddenSize)
  }

  /// Enqueues steps 3-5 with grouped launches (no synchronize, no host
  /// work between the operations); returns the device buffers they use
  /// beyond `s` and `plan` (a captured graph keeps them alive). `mark` (if
  /// any) is called after each stage is enqueued, with its name.
  func enqueueGrouped(
    _ s: Scratch, plan: MoERouting.DevicePlan, identity: DeviceBuffer, sharedScale: DeviceBuffer?,
    mark: StageMark? = nil
  ) throws(CUDAError) -> [DeviceBuffer] {
    let context = session.context
    let stream = session.stream
    let entries = s.tokens * config.topK
    if groupTables == nil {
      groupTables = (
        try GroupedLaunch.WeightTable(experts.map(\.gate), context: context),
        try GroupedLaunch.WeightTable(experts.map(\.up), context: context),
        try GroupedLaunch.WeightTable(experts.map(\.down), context: context)
      )
    }
    guard let tables = groupTables else { throw .invalidArgument("no weight tables") }
    if groupScratch?.entries != entries {
      groupScratch = nil
      let sizes = LayerMemory.groupedSizes(config, entries: entries)  // as `samoyeds memory` reports
      groupScratch = (
        entries, try DeviceBuffer(context: context, byteCount: sizes.intermediate),
        try DeviceBuffer(context: context, copying: (0..<sizes.rows / 4).map { Int32($0) })
      )
    }
    guard let g = groupScratch else { throw .invalidArgument("no grouped scratch") }
    let gateUp = GroupedLaunch.Arguments(
      weights: tables.gate, epilogue: .siluMul(up: tables.up), x: s.x, tokens: s.tokens, rows: plan.tokenIndices,
      offsets: plan.expertOffsets, maxEntries: entries, output: g.intermediate, tiling: groupedTiling)
    let down = GroupedLaunch.Arguments(
      weights: tables.down, epilogue: .scaleToSlots(routeWeights: plan.weights, slots: plan.outputSlots),
      x: g.intermediate, tokens: entries, rows: g.identity, offsets: plan.expertOffsets, maxEntries: entries,
      output: s.slots, tiling: groupedTiling)
    let shared = sharedLaunches(s, identity: identity, sharedScale: sharedScale)
    let workspaceBytes = max(
      GroupedLaunch.workspaceBytes(gateUp, context: context), GroupedLaunch.workspaceBytes(down, context: context),
      shared.map { PortableKernel.workspaceBytes($0, context: context) }.max() ?? 0)
    let workspace = try self.workspace.atLeast(workspaceBytes, context: context, zeroedOn: stream)
    // The combine reads every slot. Each admitted entry's slot is written
    // exactly once by its expert's down tile (plain stores after any split
    // sum), so only a capacity (OpenMoE), whose dropped entries write
    // nothing, needs them zeroed first. Without the memset the router's
    // kernel directly precedes gate/up in the stream (and the graph).
    if config.router.capacity != nil || Self.alwaysZeroSlots {
      try s.slots.fill(byte: 0, on: stream)
      try mark?("zero slots")
    } else if poisonsUnwrittenSlots {
      try s.slots.fill(byte: 0xFF, on: stream)  // NaN: a slot no entry wrote would reach the output
    }
    try GroupedLaunch.run(gateUp, workspace: workspace, library: session.library, stream: stream)
    try mark?("gate/up")
    try GroupedLaunch.run(down, workspace: workspace, library: session.library, stream: stream)
    try mark?("down")
    try enqueueCombineAndShared(s, sharedLaunches: shared, workspace: workspace, mark: mark)
    return [g.intermediate, g.identity] + (workspace.map { [$0] } ?? [])
  }

  /// For `verify`: grouped forwards that skip zeroing the slots fill them
  /// with NaN instead, so a slot that no entry writes shows in the output.
  public var poisonsUnwrittenSlots = false

  /// `SAMOYEDS_ZERO_SLOTS=1` zeroes the slots before every grouped
  /// forward, capacity or not (a measurement switch).
  static let alwaysZeroSlots: Bool = ProcessInfo.processInfo.environment["SAMOYEDS_ZERO_SLOTS"] == "1"

  /// Device buffers of one token count T.
  struct Scratch {
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

  func scratch(tokens: Int) throws(CUDAError) -> Scratch {
    if let scratch, scratch.tokens == tokens { return scratch }
    scratch = nil  // free the old buffers before allocating new ones
    let context = session.context
    // The sizes `LayerMemory` reports (samoyeds memory), by construction.
    let sizes = LayerMemory.scratchSizes(config, tokens: tokens, shared: shared != nil)
    let made = Scratch(
      tokens: tokens,
      x: try DeviceBuffer(context: context, byteCount: sizes.x),
      indices: try DeviceBuffer(context: context, byteCount: sizes.indices),
      intermediate: try DeviceBuffer(context: context, byteCount: sizes.intermediate),
      slots: try DeviceBuffer(context: context, byteCount: sizes.slots),
      out: try DeviceBuffer(context: context, byteCount: sizes.out))
    scratch = made
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

  /// Every section, from the host-built `plan`.
  init(plan: RoutingPlan, sharedScale scale: [Float]?) {
    self.init(
      tokens: plan.numTokens, tokenIndices: plan.tokenIndices, outputSlots: plan.outputSlots, weights: plan.weights,
      sharedScale: scale)
  }

  /// Only the identity rows and the shared scale (n = 0): the GPU router
  /// writes the plan's lists on the device.
  init(tokens: Int, sharedScale scale: [Float]?) {
    self.init(tokens: tokens, tokenIndices: [], outputSlots: [], weights: [], sharedScale: scale)
  }

  private init(tokens: Int, tokenIndices planTokens: [Int32], outputSlots planSlots: [Int32], weights planWeights: [Float], sharedScale scale: [Float]?) {
    let n = planTokens.count
    tokenIndices = tokens
    outputSlots = tokenIndices + n
    weights = outputSlots + n
    sharedScale = scale == nil ? nil : weights + n
    var words = [UInt32]()
    words.reserveCapacity(weights + n + (scale?.count ?? 0))
    words += (0..<tokens).map { UInt32($0) }
    words += planTokens.map { UInt32(bitPattern: $0) }
    words += planSlots.map { UInt32(bitPattern: $0) }
    words += planWeights.map(\.bitPattern)
    if let scale { words += scale.map(\.bitPattern) }
    self.words = words
  }

  /// Most words a forward of T tokens needs (n ≤ T·topK).
  static func wordCapacity(tokens: Int, topK: Int, shared: Bool) -> Int {
    tokens * (1 + 3 * topK) + (shared ? tokens : 0)
  }
}
