/// Device memory owned by this object (cuMemAlloc / cuMemFree), or a view
/// of part of another buffer (`view(offset:byteCount:)`), which keeps that
/// buffer alive and frees nothing.
public final class DeviceBuffer: @unchecked Sendable {
  let context: CUDAContext
  /// Device address of the first byte.
  public let address: CUdeviceptr
  /// Size in bytes.
  public let byteCount: Int
  /// The allocation a view borrows; nil when this buffer owns its memory.
  let owner: DeviceBuffer?

  /// Allocates `byteCount` bytes (at least 1, so every buffer has an address).
  public init(context: CUDAContext, byteCount: Int) throws(CUDAError) {
    guard byteCount >= 0 else { throw .invalidArgument("negative allocation \(byteCount)") }
    try context.makeCurrent()
    var address: CUdeviceptr = 0
    try context.api.check(context.api.cuMemAlloc(&address, max(byteCount, 1)), "cuMemAlloc(\(byteCount) bytes)")
    self.context = context
    self.address = address
    self.byteCount = byteCount
    self.owner = nil
  }

  private init(viewing owner: DeviceBuffer, address: CUdeviceptr, byteCount: Int) {
    self.context = owner.context
    self.address = address
    self.byteCount = byteCount
    self.owner = owner
  }

  /// Bytes `offset ..< offset + byteCount` of this buffer as a buffer of
  /// their own (no copy), e.g. one expert's segment of an index list
  /// uploaded whole. The view keeps the allocation alive.
  public func view(offset: Int, byteCount: Int) throws(CUDAError) -> DeviceBuffer {
    guard offset >= 0, byteCount >= 0, offset <= self.byteCount - byteCount else {
      throw .invalidArgument("view of bytes \(offset)..<\(offset + byteCount) of a \(self.byteCount)-byte buffer")
    }
    return DeviceBuffer(viewing: owner ?? self, address: address + CUdeviceptr(offset), byteCount: byteCount)
  }

  /// Allocates and uploads `elements`.
  public convenience init<T: BitwiseCopyable>(context: CUDAContext, copying elements: [T]) throws(CUDAError) {
    try self.init(context: context, byteCount: elements.count * MemoryLayout<T>.stride)
    try upload(elements)
  }

  deinit {
    if owner == nil { _ = context.api.cuMemFree(address) }
  }

  /// Copies `elements` to the start of the buffer (synchronous).
  public func upload<T: BitwiseCopyable>(_ elements: [T]) throws(CUDAError) {
    try copyIn(elements, stream: nil)
  }

  /// Copies `elements` to the start of the buffer, in order on `stream`.
  /// The driver stages pageable host memory before returning, so `elements`
  /// may go away at once; later work on `stream` sees the data.
  public func upload<T: BitwiseCopyable>(_ elements: [T], on stream: CUDAStream) throws(CUDAError) {
    try copyIn(elements, stream: stream)
  }

  private func copyIn<T: BitwiseCopyable>(_ elements: [T], stream: CUDAStream?) throws(CUDAError) {
    let bytes = elements.count * MemoryLayout<T>.stride
    guard bytes <= byteCount else {
      throw .invalidArgument("upload of \(bytes) bytes into a \(byteCount)-byte buffer")
    }
    if bytes == 0 { return }
    let api = context.api
    let address = self.address
    let status = elements.withUnsafeBytes { raw in
      if let stream { api.cuMemcpyHtoDAsync(address, raw.baseAddress, bytes, stream.stream) }
      else { api.cuMemcpyHtoD(address, raw.baseAddress, bytes) }
    }
    try api.check(status, stream == nil ? "cuMemcpyHtoD" : "cuMemcpyHtoDAsync")
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
