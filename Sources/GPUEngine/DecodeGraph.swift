import CPUEngine
import CUDA
import Kernels
import SamoyedsFormat
import SamoyedsModel

/// One forward of a GPU MoE layer for a fixed token count, captured once as
/// a CUDA graph and replayed: the GPU router, the grouped expert launches
/// (`ExpertLaunch.grouped`), the combine and the shared expert, with no
/// host work or synchronize in between (issue #5's decode path). A shared
/// expert's sigmoid gate (Qwen2-MoE) is computed on the device.
///
/// The graph reads the hidden states from `input` and leaves the output in
/// `output`; it keeps every buffer it touches alive. It shares the layer's
/// scratch for its token count, so run a layer's graphs and forwards one at
/// a time, from one thread.
public final class DecodeGraph {
  public let layer: GPUMoELayer
  public let tokens: Int
  /// [T, hidden] bf16/fp16: the hidden states a replay reads.
  public let input: DeviceBuffer
  /// [T, hidden] f32: the layer output once a replay completed.
  public let output: DeviceBuffer
  let graph: CUDAGraph
  /// Buffers the captured operations use (kept at their addresses).
  let retained: [AnyObject]
  /// Int32 [T] 0 … T−1 and, with a shared expert, f32 [T] ones.
  let identity: DeviceBuffer
  let sharedScale: DeviceBuffer?
  /// f32 [hidden]: the shared expert's sigmoid gate (Qwen2-MoE), if any.
  let sharedGate: DeviceBuffer?

  init(
    layer: GPUMoELayer, tokens: Int, input: DeviceBuffer, output: DeviceBuffer, graph: CUDAGraph,
    retained: [AnyObject], identity: DeviceBuffer, sharedScale: DeviceBuffer?, sharedGate: DeviceBuffer?
  ) {
    self.sharedGate = sharedGate
    self.layer = layer
    self.tokens = tokens
    self.input = input
    self.output = output
    self.graph = graph
    self.retained = retained
    self.identity = identity
    self.sharedScale = sharedScale
  }

  /// Enqueues the same work as `replay`, launch by launch (no graph): the
  /// eager time of the captured forward.
  public func enqueueEager() throws(GPUEngineError) {
    try enqueueEager(marking: nil)
  }

  /// `enqueueEager`, calling `mark` after each stage is enqueued with its
  /// name ("router", "shared gate", "zero slots", "gate/up", "down",
  /// "combine", "shared expert"): e.g. to record an event there and time
  /// the stages (`samoyeds bench moe --stages`).
  public func enqueueEager(marking mark: StageMark?) throws(GPUEngineError) {
    guard let router = layer.deviceRouter else { throw .unsupported("no GPU router") }
    _ = try cuda { () throws(CUDAError) in
      try layer.enqueueOnDevice(
        tokens: tokens, router: router, identity: identity, sharedScale: sharedScale, sharedGate: sharedGate,
        mark: mark)
    }
  }

  /// Enqueues one replay on the layer's session stream (returns at once).
  public func replay() throws(GPUEngineError) {
    try cuda { () throws(CUDAError) in try graph.launch(on: layer.session.stream) }
  }

  /// Checks x [T, hidden] as `forward` does and copies it into `input`
  /// (stream-ordered before the next replay).
  public func setInput(_ x: Matrix<Float>) throws(GPUEngineError) {
    guard x.rows == tokens else {
      throw .input(.shapeMismatch("the graph was captured for \(tokens) tokens, x has \(x.rows)"))
    }
    do {
      try CPUMoELayer.checkHiddenStates(x, config: layer.config)
    } catch {
      throw .input(error)
    }
    try cuda { () throws(CUDAError) in
      try input.upload(HalfBits.encode(x.storage, layer.dtype), on: layer.session.stream)
    }
  }

  /// Waits for the stream and downloads the output [T, hidden].
  public func readOutput() throws(GPUEngineError) -> Matrix<Float> {
    var out = Matrix<Float>(rows: tokens, columns: layer.config.hiddenSize, repeating: 0)
    out.storage = try cuda { () throws(CUDAError) in
      try layer.session.stream.synchronize()
      return try output.download(Float.self, count: tokens * layer.config.hiddenSize)
    }
    return out
  }
}

extension GPUMoELayer {
  /// Enqueues one forward of `tokens` tokens on hidden states already in
  /// the scratch's x — route on the GPU, grouped expert launches, combine,
  /// shared expert — with no synchronize and no host work between them.
  /// Returns the scratch (x, out) and every buffer the operations use.
  func enqueueOnDevice(
    tokens: Int, router: GPURouter, identity: DeviceBuffer, sharedScale: DeviceBuffer?, sharedGate: DeviceBuffer?,
    mark: StageMark? = nil
  ) throws(CUDAError) -> (Scratch, [AnyObject]) {
    let s = try scratch(tokens: tokens)
    let (plan, routerScratch) = try router.routeRetaining(x: s.x, tokens: tokens)
    try mark?("router")
    if let sharedGate, let sharedScale {
      try MoERouting.sharedGate(
        x: s.x, gate: sharedGate, into: sharedScale, tokens: tokens, hidden: config.hiddenSize, dtype: dtype,
        library: session.library, stream: session.stream)
      try mark?("shared gate")
    }
    let used = try enqueueGrouped(s, plan: plan, identity: identity, sharedScale: sharedScale, mark: mark)
    var retained: [AnyObject] = [s.x, s.indices, s.intermediate, s.slots, s.out, identity]
    retained += [plan.selectedExperts, plan.selectedWeights, plan.expertOffsets, plan.tokenIndices]
    retained += [plan.weights, plan.outputSlots] + used
    if let routerScratch { retained.append(routerScratch) }
    if let sharedScale { retained.append(sharedScale) }
    if let sharedGate { retained.append(sharedGate) }
    return (s, retained)
  }

  /// Captures one forward of `tokens` tokens as a graph (`DecodeGraph`).
  /// Runs it once eagerly first, on zeroed hidden states, so that every
  /// buffer exists before the capture.
  ///
  /// A shared expert's sigmoid gate (Qwen2-MoE) runs on the device
  /// (`MoERouting.sharedGate`); other shared experts have scale 1.
  ///
  /// - Throws: `.unsupported` without the GPU router; `.input` for
  ///   tokens < 1; `.cuda` for a failed capture.
  public func captureDecode(tokens: Int) throws(GPUEngineError) -> DecodeGraph {
    guard tokens >= 1 else { throw .input(.shapeMismatch("a decode graph needs at least one token")) }
    guard let deviceRouter else {
      throw .unsupported("decode graphs route on the GPU: make the layer with router: .device")
    }
    let gated = shared != nil && config.sharedExpert?.gate == .sigmoid
    if gated && sharedGate == nil { throw .input(.shapeMismatch("the shared expert's sigmoid gate weight is missing")) }
    let (identity, sharedScale, gate) = try cuda { () throws(CUDAError) -> (DeviceBuffer, DeviceBuffer?, DeviceBuffer?) in
      try session.context.makeCurrent()
      let identity = try DeviceBuffer(context: session.context, copying: (0..<tokens).map { Int32($0) })
      let scale = shared == nil ? nil : try DeviceBuffer(context: session.context, copying: [Float](repeating: 1, count: tokens))
      let gate = gated ? try DeviceBuffer(context: session.context, copying: sharedGate?.storage ?? []) : nil
      try scratch(tokens: tokens).x.fill(byte: 0, on: session.stream)
      return (identity, scale, gate)
    }
    var captured: (Scratch, [AnyObject])? = nil
    let graph = try cuda { () throws(CUDAError) -> CUDAGraph in
      _ = try enqueueOnDevice(
        tokens: tokens, router: deviceRouter, identity: identity, sharedScale: sharedScale, sharedGate: gate)
      try session.stream.synchronize()
      return try CUDAGraph.capture(on: session.stream) { () throws(CUDAError) in
        captured = try enqueueOnDevice(
          tokens: tokens, router: deviceRouter, identity: identity, sharedScale: sharedScale, sharedGate: gate)
      }
    }
    guard let (s, retained) = captured else { throw .wrongResult("the capture recorded no forward") }
    return DecodeGraph(
      layer: self, tokens: tokens, input: s.x, output: s.out, graph: graph, retained: retained, identity: identity,
      sharedScale: sharedScale, sharedGate: gate)
  }
}
