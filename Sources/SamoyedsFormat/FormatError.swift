/// Everything that can be wrong with a pattern, a sparse matrix or a
/// routing plan. Each case's description is one line naming the problem and
/// where it is (row, vector, column group, expert…).
public enum FormatError: Error, Equatable, Sendable, CustomStringConvertible {
  /// (N, M, V) themselves are unusable.
  case invalidPattern(String)
  /// A dimension is not divisible as the pattern requires.
  case indivisible(String)
  /// Array sizes or matrix shapes disagree.
  case shapeMismatch(String)
  /// A 2:4 metadata pair is not two distinct ascending positions.
  case badMetadata(String)
  /// A row selection is out of range, repeated or not ascending.
  case badRowSelection(String)
  /// A NaN or infinity where finite numbers are required.
  case nonFinite(String)
  /// A routing plan breaks its ordering or range rules.
  case badRouting(String)
  /// A textual pattern or dtype could not be parsed.
  case parse(String)

  public var description: String {
    switch self {
    case .invalidPattern(let s): "invalid sparsity pattern: \(s)"
    case .indivisible(let s): "shape not divisible: \(s)"
    case .shapeMismatch(let s): "shape mismatch: \(s)"
    case .badMetadata(let s): "bad 2:4 metadata: \(s)"
    case .badRowSelection(let s): "bad row selection: \(s)"
    case .nonFinite(let s): "non-finite value: \(s)"
    case .badRouting(let s): "bad routing plan: \(s)"
    case .parse(let s): "cannot parse: \(s)"
    }
  }
}
