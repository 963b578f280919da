/// The primary context of one GPU, retained for the life of this object and
/// made current on the calling thread by every operation that needs it.
///
/// `@unchecked Sendable`: its state is immutable after init; the driver's
/// context calls are thread-safe.
public final class CUDAContext: @unchecked Sendable {
  let api: DriverAPI
  let context: CUcontext
  /// Device ordinal.
  public let ordinal: Int
  /// Device name as the driver reports it.
  public let name: String
  /// Compute capability.
  public let computeCapability: (major: Int, minor: Int)
  /// Streaming multiprocessors.
  public let multiprocessorCount: Int
  /// Largest dynamic shared memory a block may opt in to, in bytes.
  public let maxSharedMemoryPerBlockOptin: Int
  /// Shared memory of one multiprocessor, in bytes (all resident blocks).
  public let maxSharedMemoryPerMultiprocessor: Int
  /// L2 cache size in bytes.
  public let l2CacheBytes: Int

  // CUdevice_attribute values (cuda.h).
  static let attributeMultiprocessors: Int32 = 16
  static let attributeL2CacheSize: Int32 = 38
  static let attributeMajor: Int32 = 75
  static let attributeMinor: Int32 = 76
  static let attributeMaxSharedPerMultiprocessor: Int32 = 81
  static let attributeMaxSharedPerBlockOptin: Int32 = 97

  /// Retains the primary context of device `ordinal`.
  public init(ordinal: Int = 0) throws(CUDAError) {
    let api = try DriverAPI.get()
    var count: Int32 = 0
    try api.check(api.cuDeviceGetCount(&count), "cuDeviceGetCount")
    guard ordinal >= 0, ordinal < Int(count) else {
      throw .invalidArgument("device \(ordinal) requested, \(count) present")
    }
    var device: Int32 = 0
    try api.check(api.cuDeviceGet(&device, Int32(ordinal)), "cuDeviceGet")
    var context: CUcontext? = nil
    try api.check(api.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain")
    guard let context else { throw .unavailable("cuDevicePrimaryCtxRetain returned no context") }
    try api.check(api.cuCtxSetCurrent(context), "cuCtxSetCurrent")
    func attribute(_ which: Int32) throws(CUDAError) -> Int {
      var value: Int32 = 0
      try api.check(api.cuDeviceGetAttribute(&value, which, device), "cuDeviceGetAttribute(\(which))")
      return Int(value)
    }
    var nameBuffer = [CChar](repeating: 0, count: 256)
    try api.check(api.cuDeviceGetName(&nameBuffer, 256, device), "cuDeviceGetName")
    self.api = api
    self.context = context
    self.ordinal = ordinal
    self.name = String(decoding: nameBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    self.computeCapability = (try attribute(Self.attributeMajor), try attribute(Self.attributeMinor))
    self.multiprocessorCount = try attribute(Self.attributeMultiprocessors)
    self.maxSharedMemoryPerBlockOptin = try attribute(Self.attributeMaxSharedPerBlockOptin)
    self.maxSharedMemoryPerMultiprocessor = try attribute(Self.attributeMaxSharedPerMultiprocessor)
    self.l2CacheBytes = try attribute(Self.attributeL2CacheSize)
  }

  deinit {
    _ = api.cuDevicePrimaryCtxRelease(Int32(ordinal))
  }

  /// Makes this context current on the calling thread.
  public func makeCurrent() throws(CUDAError) {
    try api.check(api.cuCtxSetCurrent(context), "cuCtxSetCurrent")
  }

  /// Waits for all work in the context.
  public func synchronize() throws(CUDAError) {
    try makeCurrent()
    try api.check(api.cuCtxSynchronize(), "cuCtxSynchronize")
  }

  /// "sm_90a", "sm_89", … — the NVRTC target for this device. Hopper and
  /// later datacenter parts get the arch-specific "a" target so kernels may
  /// use wgmma and setmaxnreg.
  public var architecture: String {
    let (major, minor) = computeCapability
    return major >= 9 && minor == 0 ? "sm_\(major)\(minor)a" : "sm_\(major)\(minor)"
  }
}

/// A stream; work on it runs in order. Destroyed with this object.
public final class CUDAStream: @unchecked Sendable {
  let context: CUDAContext
  let stream: CUstream

  public init(context: CUDAContext) throws(CUDAError) {
    try context.makeCurrent()
    var stream: CUstream? = nil
    try context.api.check(context.api.cuStreamCreate(&stream, 1 /* non-blocking */), "cuStreamCreate")
    guard let stream else { throw .unavailable("cuStreamCreate returned no stream") }
    self.context = context
    self.stream = stream
  }

  deinit { _ = context.api.cuStreamDestroy(stream) }

  /// Waits until all work on the stream is done.
  public func synchronize() throws(CUDAError) {
    try context.api.check(context.api.cuStreamSynchronize(stream), "cuStreamSynchronize")
  }

  /// Raw handle for libraries (cuBLASLt).
  public var handle: OpaquePointer { stream }
}

/// Work captured from a stream once (`capture`) and replayed as one unit
/// (`launch`): kernel launches, copies and fills with their arguments, so a
/// replay costs one launch instead of one per operation and needs no host
/// work in between. Every buffer the captured work touches must outlive
/// the graph and keep its address.
public final class CUDAGraph: @unchecked Sendable {
  let context: CUDAContext
  let exec: CUgraphExec

  /// Records what `body` enqueues on `stream` (nothing runs), then
  /// instantiates it. Capture is thread-local: a call in `body` that would
  /// synchronize or allocate is an error (the capture is then discarded),
  /// not a silent break of the graph.
  public static func capture(
    on stream: CUDAStream, _ body: () throws(CUDAError) -> Void
  ) throws(CUDAError) -> CUDAGraph {
    let context = stream.context
    let api = context.api
    try context.makeCurrent()
    try api.check(api.cuStreamBeginCapture(stream.stream, 1 /* CU_STREAM_CAPTURE_MODE_THREAD_LOCAL */), "cuStreamBeginCapture")
    var graph: CUgraph? = nil
    do {
      try body()
    } catch {
      _ = api.cuStreamEndCapture(stream.stream, &graph)
      if let graph { _ = api.cuGraphDestroy(graph) }
      throw error
    }
    try api.check(api.cuStreamEndCapture(stream.stream, &graph), "cuStreamEndCapture")
    guard let graph else { throw .unavailable("cuStreamEndCapture returned no graph") }
    defer { _ = api.cuGraphDestroy(graph) }
    var exec: CUgraphExec? = nil
    try api.check(api.cuGraphInstantiate(&exec, graph, 0), "cuGraphInstantiateWithFlags")
    guard let exec else { throw .unavailable("cuGraphInstantiateWithFlags returned no executable graph") }
    return CUDAGraph(context: context, exec: exec)
  }

  private init(context: CUDAContext, exec: CUgraphExec) {
    self.context = context
    self.exec = exec
  }

  deinit { _ = context.api.cuGraphExecDestroy(exec) }

  /// Enqueues one replay on `stream`.
  public func launch(on stream: CUDAStream) throws(CUDAError) {
    try context.api.check(context.api.cuGraphLaunch(exec, stream.stream), "cuGraphLaunch")
  }
}

/// A timing event.
public final class CUDAEvent: @unchecked Sendable {
  let context: CUDAContext
  let event: CUevent

  public init(context: CUDAContext) throws(CUDAError) {
    try context.makeCurrent()
    var event: CUevent? = nil
    try context.api.check(context.api.cuEventCreate(&event, 0), "cuEventCreate")
    guard let event else { throw .unavailable("cuEventCreate returned no event") }
    self.context = context
    self.event = event
  }

  deinit { _ = context.api.cuEventDestroy(event) }

  public func record(on stream: CUDAStream) throws(CUDAError) {
    try context.api.check(context.api.cuEventRecord(event, stream.stream), "cuEventRecord")
  }

  public func synchronize() throws(CUDAError) {
    try context.api.check(context.api.cuEventSynchronize(event), "cuEventSynchronize")
  }

  /// Milliseconds from `start` to this event (both recorded and complete).
  public func milliseconds(since start: CUDAEvent) throws(CUDAError) -> Float {
    var ms: Float = 0
    try context.api.check(context.api.cuEventElapsedTime(&ms, start.event, event), "cuEventElapsedTime")
    return ms
  }
}
