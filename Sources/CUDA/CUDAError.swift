/// Every failure of the CUDA layer: a library that could not be loaded, or
/// a status code from the driver, NVRTC or cuBLASLt with the API's name, the
/// code's name and its text.
public enum CUDAError: Error, Equatable, Sendable, CustomStringConvertible {
  /// A library or symbol could not be loaded (with where it was looked for).
  case unavailable(String)
  /// A driver API call failed.
  case driver(api: String, code: Int32, name: String, message: String)
  /// An NVRTC call failed; `log` holds the compiler's log when there is one.
  case nvrtc(api: String, code: Int32, message: String, log: String)
  /// A cuBLASLt call failed.
  case cublas(api: String, code: Int32, name: String)
  /// Arguments rejected before any call (shapes, sizes, architecture).
  case invalidArgument(String)

  public var description: String {
    switch self {
    case .unavailable(let text): "CUDA unavailable: \(text)"
    case .driver(let api, let code, let name, let message): "\(api) failed: \(name) (\(code)): \(message)"
    case .nvrtc(let api, let code, let message, let log):
      log.isEmpty ? "\(api) failed: \(message) (\(code))" : "\(api) failed: \(message) (\(code))\n\(log)"
    case .cublas(let api, let code, let name): "\(api) failed: \(name) (\(code))"
    case .invalidArgument(let text): "invalid argument: \(text)"
    }
  }
}
