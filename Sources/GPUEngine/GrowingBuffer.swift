import CUDA

/// Device scratch grown to the largest size asked for and then reused
/// (split-k partials, the router's workspace): a launch sequence on one
/// stream asks for its largest need once, and later forwards allocate
/// nothing.
struct GrowingBuffer {
  private var buffer: DeviceBuffer?

  /// A buffer of at least `bytes` bytes; nil for 0 bytes. With `stream`, a
  /// newly allocated buffer is zeroed on it (`PortableKernel`'s split-k
  /// counters must start at zero; its launches leave them zero).
  mutating func atLeast(_ bytes: Int, context: CUDAContext, zeroedOn stream: CUDAStream? = nil) throws(CUDAError)
    -> DeviceBuffer?
  {
    if bytes == 0 { return nil }
    if let buffer, buffer.byteCount >= bytes { return buffer }
    buffer = nil  // free the smaller one first
    let made = try DeviceBuffer(context: context, byteCount: bytes)
    if let stream { try made.fill(byte: 0, on: stream) }
    buffer = made
    return made
  }
}
