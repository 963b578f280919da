import SamoyedsFormat

/// Problems reading or writing checkpoint files; each names the file and,
/// where there is one, the tensor.
public enum CheckpointError: Error, Equatable, Sendable, CustomStringConvertible {
  case io(String)
  case malformed(String)
  case unsupportedDType(String)
  case missingTensor(String)
  case shapeMismatch(String)
  case format(String)
  /// Input that is well-formed but cannot be used as asked.
  case invalid(String)

  public var description: String {
    switch self {
    case .io(let s): "I/O error: \(s)"
    case .malformed(let s): "malformed safetensors file: \(s)"
    case .unsupportedDType(let s): "unsupported dtype: \(s)"
    case .missingTensor(let s): "missing tensor: \(s)"
    case .shapeMismatch(let s): "shape mismatch: \(s)"
    case .format(let s): "invalid sparse tensor: \(s)"
    case .invalid(let s): "invalid input: \(s)"
    }
  }
}
