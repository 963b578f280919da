/// A loaded module (cubin), unloaded with this object.
public final class CUDAModule: @unchecked Sendable {
  let context: CUDAContext
  let module: CUmodule

  /// Loads a cubin image.
  public init(context: CUDAContext, image: [UInt8]) throws(CUDAError) {
    try context.makeCurrent()
    var module: CUmodule? = nil
    let api = context.api
    let status = image.withUnsafeBytes { raw in api.cuModuleLoadData(&module, raw.baseAddress) }
    try api.check(status, "cuModuleLoadData")
    guard let module else { throw .unavailable("cuModuleLoadData returned no module") }
    self.context = context
    self.module = module
  }

  deinit { _ = context.api.cuModuleUnload(module) }

  /// The kernel named `name` (a lowered, mangled name for templates).
  public func function(named name: String) throws(CUDAError) -> CUDAFunction {
    var function: CUfunction? = nil
    try context.api.check(context.api.cuModuleGetFunction(&function, module, name), "cuModuleGetFunction(\(name))")
    guard let function else { throw .unavailable("no function \(name)") }
    return CUDAFunction(module: self, function: function, name: name)
  }
}

/// One kernel of a module; keeps its module alive.
public struct CUDAFunction: @unchecked Sendable {
  let module: CUDAModule
  let function: CUfunction
  public let name: String
  /// `requiredClusterShape()` and `acceptsLaunchAttributes`, asked of the
  /// driver once here rather than on every launch.
  private let compiledCluster: (Int, Int, Int)
  /// Whether `launch(…, attributes:)` can run this kernel with launch
  /// attributes (a cluster shape chosen at launch time, programmatic
  /// dependent launch): compute capability 9.0 or newer, a driver with
  /// cuLaunchKernelEx, and no cluster shape compiled in.
  public let acceptsLaunchAttributes: Bool

  init(module: CUDAModule, function: CUfunction, name: String) {
    self.module = module
    self.function = function
    self.name = name
    let api = module.context.api
    func dimension(_ attribute: Int32) -> Int {
      var value: Int32 = 0
      return api.cuFuncGetAttribute(&value, attribute, function) == 0 && value > 0 ? Int(value) : 1
    }
    compiledCluster = (
      dimension(Self.attributeRequiredClusterWidth), dimension(Self.attributeRequiredClusterHeight),
      dimension(Self.attributeRequiredClusterDepth)
    )
    acceptsLaunchAttributes =
      api.cuLaunchKernelEx != nil && module.context.computeCapability.major >= 9 && compiledCluster == (1, 1, 1)
  }

  // CUfunction_attribute values (cuda.h).
  static let attributeNumRegisters: Int32 = 4
  static let attributeMaxDynamicSharedBytes: Int32 = 8
  static let attributeRequiredClusterWidth: Int32 = 11
  static let attributeRequiredClusterHeight: Int32 = 12
  static let attributeRequiredClusterDepth: Int32 = 13
  static let attributeNonPortableClusterSizeAllowed: Int32 = 14

  /// Allows `bytes` of dynamic shared memory per block.
  public func setMaxDynamicSharedMemory(_ bytes: Int) throws(CUDAError) {
    let api = module.context.api
    try api.check(
      api.cuFuncSetAttribute(function, Self.attributeMaxDynamicSharedBytes, Int32(bytes)),
      "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES=\(bytes)) for \(name)")
  }

  /// Registers per thread the compiler gave the kernel.
  public func registersPerThread() throws(CUDAError) -> Int {
    var value: Int32 = 0
    let api = module.context.api
    try api.check(api.cuFuncGetAttribute(&value, Self.attributeNumRegisters, function), "cuFuncGetAttribute")
    return Int(value)
  }

  /// The cluster shape the kernel was compiled with (`__cluster_dims__`):
  /// its launch grid must be a multiple of it. (1, 1, 1) for a kernel
  /// without one, or where the driver cannot say (it predates clusters).
  public func requiredClusterShape() -> (Int, Int, Int) { compiledCluster }

  /// Allows clusters larger than the portable 8 CTAs (16 on Hopper).
  public func allowNonPortableClusterSize() throws(CUDAError) {
    let api = module.context.api
    try api.check(
      api.cuFuncSetAttribute(function, Self.attributeNonPortableClusterSizeAllowed, 1),
      "cuFuncSetAttribute(NON_PORTABLE_CLUSTER_SIZE_ALLOWED) for \(name)")
  }

  /// What `launch(…, attributes:)` asks of the driver besides the grid.
  public struct LaunchAttributes: Sendable {
    /// CTAs per cluster in x, y, z (each grid dimension a multiple of it).
    public var cluster: (Int, Int, Int)?
    /// Programmatic dependent launch: the kernel may start while the
    /// previous kernel of the stream still runs, and must itself wait for
    /// it (`griddepcontrol.wait`) before touching what that kernel writes.
    public var overlapsPrevious: Bool

    public init(cluster: (Int, Int, Int)? = nil, overlapsPrevious: Bool = false) {
      self.cluster = cluster
      self.overlapsPrevious = overlapsPrevious
    }
  }

  /// Launches through cuLaunchKernelEx with `attributes`. Needs
  /// `acceptsLaunchAttributes`.
  public func launch(
    grid: (Int, Int, Int), block: (Int, Int, Int), sharedMemoryBytes: Int = 0, attributes: LaunchAttributes,
    stream: CUDAStream, arguments: KernelArguments
  ) throws(CUDAError) {
    guard grid.0 > 0, grid.1 > 0, grid.2 > 0 else { return }
    let api = module.context.api
    guard let launchEx = api.cuLaunchKernelEx, acceptsLaunchAttributes else {
      throw .unavailable("\(name): no launch attributes here (needs compute capability 9.0 and cuLaunchKernelEx)")
    }
    if let cluster = attributes.cluster {
      guard cluster.0 > 0, cluster.1 > 0, cluster.2 > 0, grid.0 % cluster.0 == 0, grid.1 % cluster.1 == 0,
        grid.2 % cluster.2 == 0
      else {
        throw .invalidArgument("\(name): grid \(grid) is not a whole number of clusters \(cluster)")
      }
    }
    try arguments.withParameterArray { params throws(CUDAError) in
      let status = Self.withLaunchConfig(
        grid: grid, block: block, sharedMemoryBytes: sharedMemoryBytes, attributes: attributes, stream: stream.stream
      ) { config in launchEx(config, function, params, nil) }
      try api.check(
        status,
        "cuLaunchKernelEx(\(name), grid \(grid), \(attributes.cluster.map { "cluster \($0), " } ?? "")"
          + "\(attributes.overlapsPrevious ? "programmatic, " : "")block \(block), smem \(sharedMemoryBytes))")
    }
  }

  /// How many clusters of `cluster` CTAs (with this block and dynamic
  /// shared memory) the GPU runs at once (cuOccupancyMaxActiveClusters), or
  /// nil where the driver cannot say.
  public func maxActiveClusters(cluster: (Int, Int, Int), block: (Int, Int, Int), sharedMemoryBytes: Int) -> Int? {
    let api = module.context.api
    guard let query = api.cuOccupancyMaxActiveClusters, acceptsLaunchAttributes else { return nil }
    var count: Int32 = 0
    let status = Self.withLaunchConfig(
      grid: cluster, block: block, sharedMemoryBytes: sharedMemoryBytes,
      attributes: LaunchAttributes(cluster: cluster), stream: nil
    ) { config in query(&count, function, config) }
    return status == 0 ? Int(count) : nil
  }

  /// A CUlaunchConfig (cuda.h) for `body`: grid x/y/z, block x/y/z, shared
  /// bytes (u32 each), padding, stream, attributes, their count, padding.
  /// Each CUlaunchAttribute is an id, 4 bytes of padding and a 64-byte value
  /// (clusterDim: x, y, z; programmaticStreamSerializationAllowed: int).
  private static func withLaunchConfig<R>(
    grid: (Int, Int, Int), block: (Int, Int, Int), sharedMemoryBytes: Int, attributes: LaunchAttributes,
    stream: CUstream?, _ body: (UnsafeRawPointer?) -> R
  ) -> R {
    var attribute = [UInt32]()
    if let cluster = attributes.cluster {
      var value = [UInt32](repeating: 0, count: 18)
      value[0] = 4  // CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
      value[2] = UInt32(cluster.0)
      value[3] = UInt32(cluster.1)
      value[4] = UInt32(cluster.2)
      attribute += value
    }
    if attributes.overlapsPrevious {
      var value = [UInt32](repeating: 0, count: 18)
      value[0] = 6  // CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
      value[2] = 1
      attribute += value
    }
    let count = UInt32(attribute.count / 18)
    attribute.append(0)  // never empty, so the buffer has an address
    let words = [grid.0, grid.1, grid.2, block.0, block.1, block.2, sharedMemoryBytes].map { UInt32($0) }
    return attribute.withUnsafeMutableBytes { attributeBytes in
      var config = [UInt64](repeating: 0, count: 7)
      config.withUnsafeMutableBytes { raw in
        for (i, word) in words.enumerated() { raw.storeBytes(of: word, toByteOffset: 4 * i, as: UInt32.self) }
        raw.storeBytes(of: stream, toByteOffset: 32, as: CUstream?.self)
        raw.storeBytes(of: attributeBytes.baseAddress, toByteOffset: 40, as: UnsafeMutableRawPointer?.self)
        raw.storeBytes(of: count, toByteOffset: 48, as: UInt32.self)
      }
      return config.withUnsafeBytes { raw in body(raw.baseAddress) }
    }
  }

  /// Launches with the given grid, block, dynamic shared memory and
  /// arguments (in the kernel's parameter order).
  public func launch(
    grid: (Int, Int, Int), block: (Int, Int, Int), sharedMemoryBytes: Int = 0,
    stream: CUDAStream, arguments: KernelArguments
  ) throws(CUDAError) {
    guard grid.0 > 0, grid.1 > 0, grid.2 > 0 else { return }  // nothing to do
    let api = module.context.api
    try arguments.withParameterArray { params throws(CUDAError) in
      try api.check(
        api.cuLaunchKernel(
          function, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2), UInt32(block.0), UInt32(block.1),
          UInt32(block.2), UInt32(sharedMemoryBytes), stream.stream, params, nil),
        "cuLaunchKernel(\(name), grid \(grid), block \(block), smem \(sharedMemoryBytes))")
    }
  }
}

/// Kernel arguments packed the way cuLaunchKernel wants them: one pointer
/// per parameter, each to a copy of the value.
public struct KernelArguments {
  private var storage: [[UInt8]] = []

  public init() {}

  /// Appends one parameter (an integer, float, or device pointer).
  public mutating func append<T: BitwiseCopyable>(_ value: T) {
    storage.append(withUnsafeBytes(of: value) { Array($0) })
  }

  /// Appends a device buffer's address.
  public mutating func append(_ buffer: DeviceBuffer) { append(buffer.address) }

  /// Appends a parameter given as its raw bytes (a struct passed by value,
  /// laid out exactly as the kernel's C++ struct).
  public mutating func append(bytes: [UInt8]) { storage.append(bytes) }

  func withParameterArray<R>(_ body: (UnsafeMutablePointer<UnsafeMutableRawPointer?>) throws(CUDAError) -> R)
    throws(CUDAError) -> R
  {
    // Copy every value into one 16-byte-aligned block, each at a 16-byte
    // boundary, then pass pointers into it.
    let offsets = storage.reduce(into: [0]) { $0.append(($0.last ?? 0) + ($1.count + 15) / 16 * 16) }
    let block = UnsafeMutableRawPointer.allocate(byteCount: max(16, offsets.last ?? 16), alignment: 16)
    defer { block.deallocate() }
    let pointers = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: max(1, storage.count))
    defer { pointers.deallocate() }
    for (i, bytes) in storage.enumerated() {
      let destination = block + offsets[i]
      bytes.withUnsafeBytes { raw in
        if let source = raw.baseAddress { destination.copyMemory(from: source, byteCount: raw.count) }
      }
      pointers[i] = destination
    }
    return try body(pointers)
  }
}
