import SamoyedsFormat

/// Errors from running a layer: bad shapes or values in the inputs.
public enum EngineError: Error, Equatable, Sendable, CustomStringConvertible {
  case shapeMismatch(String)
  case nonFinite(String)
  case format(FormatError)

  public var description: String {
    switch self {
    case .shapeMismatch(let s): "shape mismatch: \(s)"
    case .nonFinite(let s): "non-finite input: \(s)"
    case .format(let error): error.description
    }
  }
}
