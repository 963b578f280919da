/// Device memory owned by this object (cuMemAlloc / cuMemFree).
public final class DeviceBuffer: @unchecked Sendable {
  let context: CUDAContext
  /// Device address of the first byte.
  public let address: CUdeviceptr
  /// Size in bytes.
  public let byteCount: Int

  /// Allocates `byteCount` bytes (at least 1, so every buffer has an address).
  public init(context: CUDAContext, byteCount: Int) throws(CUDAError) {
    guard byteCount >= 0 else { throw .invalidArgument("negative allocation \(byteCount)") }
    try context.makeCurrent()
    var address: CUdeviceptr = 0
    try context.api.check(context.api.cuMemAlloc(&address, max(byteCount, 1)), "cuMemAlloc(\(byteCount) bytes)")
    self.context = context
    self.address = address
    self.byteCount = byteCount
  }

  /// Allocates and uploads `elements`.
  public convenience init<T: BitwiseCopyable>(context: CUDAContext, copying elements: [T]) throws(CUDAError) {
    try self.init(context: context, byteCount: elements.count * MemoryLayout<T>.stride)
    try upload(elements)
  }

  deinit { _ = context.api.cuMemFree(address) }

  /// Copies `elements` to the start of the buffer (synchronous).
  public func upload<T: BitwiseCopyable>(_ elements: [T]) throws(CUDAError) {
    let bytes = elements.count * MemoryLayout<T>.stride
    guard bytes <= byteCount else {
      throw .invalidArgument("upload of \(bytes) bytes into a \(byteCount)-byte buffer")
    }
    if bytes == 0 { return }
    let api = context.api
    let address = self.address
    let status = elements.withUnsafeBytes { raw in api.cuMemcpyHtoD(address, raw.baseAddress, bytes) }
    try api.check(status, "cuMemcpyHtoD")
  }

  /// Copies the first `count` elements of type `T` back (synchronous).
  public func download<T: BitwiseCopyable>(_: T.Type = T.self, count: Int) throws(CUDAError) -> [T] {
    let bytes = count * MemoryLayout<T>.stride
    guard bytes <= byteCount else {
      throw .invalidArgument("download of \(bytes) bytes from a \(byteCount)-byte buffer")
    }
    var result = [T]()
    result.reserveCapacity(count)
    if count == 0 { return result }
    let api = context.api
    let address = self.address
    var status: Int32 = 0
    result = [T](unsafeUninitializedCapacity: count) { buffer, initialized in
      status = api.cuMemcpyDtoH(UnsafeMutableRawPointer(buffer.baseAddress), address, bytes)
      initialized = status == 0 ? count : 0
    }
    try api.check(status, "cuMemcpyDtoH")
    return result
  }

  /// Fills every byte with `value` on `stream`.
  public func fill(byte value: UInt8, on stream: CUDAStream) throws(CUDAError) {
    try context.api.check(context.api.cuMemsetD8Async(address, value, byteCount, stream.stream), "cuMemsetD8Async")
  }

  /// Fills `count` 32-bit words with `word` on `stream`.
  public func fill(word: UInt32, count: Int, on stream: CUDAStream) throws(CUDAError) {
    guard count * 4 <= byteCount else { throw .invalidArgument("fill past the end of the buffer") }
    try context.api.check(context.api.cuMemsetD32Async(address, word, count, stream.stream), "cuMemsetD32Async")
  }
}
