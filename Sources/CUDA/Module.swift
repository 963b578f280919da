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

  // CUfunction_attribute values (cuda.h).
  static let attributeNumRegisters: Int32 = 4
  static let attributeMaxDynamicSharedBytes: Int32 = 8
  static let attributeRequiredClusterWidth: Int32 = 11
  static let attributeRequiredClusterHeight: Int32 = 12
  static let attributeRequiredClusterDepth: Int32 = 13

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
  public func requiredClusterShape() -> (Int, Int, Int) {
    let api = module.context.api
    func dimension(_ attribute: Int32) -> Int {
      var value: Int32 = 0
      return api.cuFuncGetAttribute(&value, attribute, function) == 0 && value > 0 ? Int(value) : 1
    }
    return (
      dimension(Self.attributeRequiredClusterWidth), dimension(Self.attributeRequiredClusterHeight),
      dimension(Self.attributeRequiredClusterDepth)
    )
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
