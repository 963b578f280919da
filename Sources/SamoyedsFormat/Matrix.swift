/// A dense row-major matrix: `storage[row * columns + column]`.
///
/// Shapes are written [rows, columns]. A weight `W` of a linear layer with
/// `k` inputs and `m` outputs is [m, k]; hidden states of `T` tokens are
/// [T, hidden].
public struct Matrix<Scalar: Sendable>: Sendable {
  /// Number of rows.
  public let rows: Int
  /// Number of columns.
  public let columns: Int
  /// Row-major elements, `rows * columns` of them.
  public var storage: [Scalar]

  /// A matrix with every element `value`. Requires non-negative dimensions.
  public init(rows: Int, columns: Int, repeating value: Scalar) {
    precondition(rows >= 0 && columns >= 0, "negative matrix dimension")
    self.rows = rows
    self.columns = columns
    self.storage = Array(repeating: value, count: rows * columns)
  }

  /// Wraps `storage`; throws when its count is not `rows * columns`.
  public init(rows: Int, columns: Int, storage: [Scalar]) throws(FormatError) {
    guard rows >= 0, columns >= 0 else {
      throw .shapeMismatch("matrix dimensions must be non-negative, got [\(rows), \(columns)]")
    }
    guard storage.count == rows * columns else {
      throw .shapeMismatch(
        "matrix [\(rows), \(columns)] needs \(rows * columns) elements, got \(storage.count)")
    }
    self.rows = rows
    self.columns = columns
    self.storage = storage
  }

  /// Builds a matrix from `body(row, column)`.
  public init(rows: Int, columns: Int, _ body: (Int, Int) throws -> Scalar) rethrows {
    precondition(rows >= 0 && columns >= 0, "negative matrix dimension")
    self.rows = rows
    self.columns = columns
    var storage: [Scalar] = []
    storage.reserveCapacity(rows * columns)
    for r in 0..<rows {
      for c in 0..<columns { storage.append(try body(r, c)) }
    }
    self.storage = storage
  }

  /// Element at (`row`, `column`).
  @inlinable
  public subscript(row: Int, column: Int) -> Scalar {
    get { storage[row * columns + column] }
    set { storage[row * columns + column] = newValue }
  }

  /// The shape as [rows, columns].
  public var shape: [Int] { [rows, columns] }

  /// Applies `transform` to every element (inlinable: a generic map costs
  /// tens of ns per element across modules).
  @inlinable
  public func map<Other>(_ transform: (Scalar) throws -> Other) rethrows -> Matrix<Other> {
    Matrix<Other>(unchecked: rows, columns, try storage.map(transform))
  }

  /// Wraps storage whose count the caller has already checked.
  @usableFromInline
  init(unchecked rows: Int, _ columns: Int, _ storage: [Scalar]) {
    assert(storage.count == rows * columns)
    self.rows = rows
    self.columns = columns
    self.storage = storage
  }
}

extension Matrix: Equatable where Scalar: Equatable {}

extension Matrix where Scalar: SparseScalar {
  /// Converts every element to `Float`.
  public func toFloat() -> Matrix<Float> { map { $0.floatValue } }

  /// Rounds every element of a `Float` matrix to `Scalar`.
  public static func rounding(_ matrix: Matrix<Float>) -> Matrix<Scalar> {
    matrix.map { Scalar($0) }
  }

  /// The first element that is NaN or infinite, as (row, column), if any.
  /// Inlinable so that callers get a loop specialized for their element
  /// type: the generic one took about 120 ns per element (half a second for
  /// one [1024, 4096] batch of hidden states).
  @inlinable
  public func firstNonFinite() -> (row: Int, column: Int)? {
    let index = storage.withUnsafeBufferPointer { values in values.firstIndex { !$0.floatValue.isFinite } }
    guard let index else { return nil }
    return (index / max(columns, 1), index % max(columns, 1))
  }
}

/// Relative Frobenius error ‖a − b‖ / ‖b‖, accumulated in Double.
///
/// Returns `.nan` when either input holds a NaN (so NaN never passes a
/// tolerance check), 0 when both are empty or both all-zero and equal, and
/// `.infinity` when `b` is zero but `a` is not.
public func relativeError(_ a: Matrix<Float>, _ b: Matrix<Float>) -> Double {
  precondition(a.rows == b.rows && a.columns == b.columns, "relativeError: shape mismatch")
  var diff = 0.0
  var reference = 0.0
  for i in 0..<a.storage.count {
    let x = Double(a.storage[i])
    let y = Double(b.storage[i])
    if x.isNaN || y.isNaN { return .nan }
    diff += (x - y) * (x - y)
    reference += y * y
  }
  if reference == 0 { return diff == 0 ? 0 : .infinity }
  return (diff / reference).squareRoot()
}
