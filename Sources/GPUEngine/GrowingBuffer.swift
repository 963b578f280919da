import CUDA

/// Device scratch grown to the largest size asked for and then reused
/// (split-k partials, the router's workspace): a launch sequence on one
/// stream asks for its largest need once, and later forwards allocate
/// nothing.
struct GrowingBuffer {
  private var buffer: DeviceBuffer?

  /// A buffer of at least `bytes` bytes; nil for 0 bytes.
  mutating func atLeast(_ bytes: Int, context: CUDAContext) throws(CUDAError) -> DeviceBuffer? {
    if bytes == 0 { return nil }
    if let buffer, buffer.byteCount >= bytes { return buffer }
    buffer = nil  // free the smaller one first
    let made = try DeviceBuffer(context: context, byteCount: bytes)
    buffer = made
    return made
  }
}
