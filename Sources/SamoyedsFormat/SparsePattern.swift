/// The weight-side sparsity pattern (N, M, V) on top of 2:4.
///
/// Rows of a weight [m, k] are grouped M at a time; columns are cut into
/// vectors of V. For every (row group, vector) exactly N of the M rows keep
/// values and the others are zero there. Inside every kept row segment each
/// aligned group of 4 columns holds at most 2 non-zeros (2:4), which is what
/// Sparse Tensor Cores execute. Density is N / M / 2: 25% for the default
/// 1:2:128.
///
/// Written as "N:M:V", e.g. "1:2:128".
public struct SparsePattern: Sendable, Hashable, Codable, CustomStringConvertible {
  /// Rows kept per group (N).
  public let keptRows: Int
  /// Rows per group (M).
  public let groupRows: Int
  /// Columns per vector (V).
  public let vectorLength: Int

  /// Columns covered by one 32-bit metadata word (16 kept values x 2 bits,
  /// two kept values per 4 columns).
  public static let columnsPerMetadataWord = 32
  /// Largest M: row selections are stored as one byte.
  public static let maxGroupRows = 256

  /// The paper's default: N=1, M=2, V=128 (25% dense).
  public static let `default` = SparsePattern(unchecked: 1, 2, 128)

  private init(unchecked n: Int, _ m: Int, _ v: Int) {
    keptRows = n
    groupRows = m
    vectorLength = v
  }

  /// Validates and creates a pattern.
  ///
  /// Requires 1 <= N < M <= 256 and V a positive multiple of 32.
  public init(keptRows: Int, groupRows: Int, vectorLength: Int) throws(FormatError) {
    guard groupRows >= 2, groupRows <= Self.maxGroupRows else {
      throw .invalidPattern("M=\(groupRows) must be in 2...\(Self.maxGroupRows)")
    }
    guard keptRows >= 1, keptRows < groupRows else {
      throw .invalidPattern("N=\(keptRows) must satisfy 1 <= N < M=\(groupRows)")
    }
    guard vectorLength > 0, vectorLength % Self.columnsPerMetadataWord == 0 else {
      throw .invalidPattern("V=\(vectorLength) must be a positive multiple of 32")
    }
    self.keptRows = keptRows
    self.groupRows = groupRows
    self.vectorLength = vectorLength
  }

  /// Parses "N:M:V" (e.g. "1:2:128").
  public init(parsing text: String) throws(FormatError) {
    let parts = text.split(separator: ":", omittingEmptySubsequences: false)
    guard parts.count == 3, let n = Int(parts[0]), let m = Int(parts[1]), let v = Int(parts[2])
    else {
      throw .parse("pattern '\(text)' is not N:M:V with three integers (e.g. 1:2:128)")
    }
    try self.init(keptRows: n, groupRows: m, vectorLength: v)
  }

  /// Fraction of the dense elements that are stored: N / M / 2.
  public var density: Double { Double(keptRows) / Double(groupRows) / 2 }

  /// Checks that a weight of [rows, columns] can take this pattern:
  /// rows divisible by M, columns divisible by V (hence by 4 and 32).
  public func checkApplicable(rows: Int, columns: Int) throws(FormatError) {
    guard rows > 0, columns > 0 else {
      throw .indivisible("weight [\(rows), \(columns)] is empty")
    }
    guard rows % groupRows == 0 else {
      throw .indivisible("rows m=\(rows) not divisible by M=\(groupRows) (pattern \(self))")
    }
    guard columns % vectorLength == 0 else {
      throw .indivisible("columns k=\(columns) not divisible by V=\(vectorLength) (pattern \(self))")
    }
  }

  public var description: String { "\(keptRows):\(groupRows):\(vectorLength)" }

  // Codable as the "N:M:V" string.
  public init(from decoder: any Decoder) throws {
    let text = try decoder.singleValueContainer().decode(String.self)
    try self.init(parsing: text)
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(description)
  }
}
