/// A weight [m, k] stored in the dual sparse format (canonical layout).
///
/// With pattern (N, M, V) and `mc = m * N / M` condensed rows:
///
/// - `values`        [mc, k/2]   the kept values of each condensed row: two
///                               per aligned group of 4 columns, in column
///                               order (slot 0 then slot 1).
/// - `metadata`      [mc, k/32]  UInt32 words; kept value `j` of a condensed
///                               row has its position inside its 4-column
///                               group (0...3) at bits `2*(j % 16)` of word
///                               `j / 16`. The two positions of a group are
///                               strictly ascending.
/// - `rowSelection`  [mc, k/V]   UInt8; condensed row `r` in vector `v` holds
///                               original row `(r / N) * M + rowSelection[r, v]`.
///                               The N selections of one group and vector are
///                               distinct and ascending.
///
/// Worked example (1:2:128, k = 128, one group of rows 0 and 1): if the
/// vector keeps row 1, condensed row 0 has `rowSelection = [1]`; if its first
/// four columns keep columns 1 and 3, `values[0] = W[1,1]`,
/// `values[1] = W[1,3]` and the low four bits of `metadata[0]` are
/// `0b11_01` (1 at bits 0-1, 3 at bits 2-3). See docs/FORMAT.md.
public struct SparseMatrix<Scalar: SparseScalar>: Sendable {
  /// The (N, M, V) pattern.
  public let pattern: SparsePattern
  /// Rows of the dense weight (m).
  public let rows: Int
  /// Columns of the dense weight (k).
  public let columns: Int
  /// Kept values, [condensedRows, columns / 2].
  public internal(set) var values: [Scalar]
  /// 2-bit positions, [condensedRows, columns / 32] words.
  public internal(set) var metadata: [UInt32]
  /// Row selections, [condensedRows, columns / V].
  public internal(set) var rowSelection: [UInt8]

  /// Condensed rows: m * N / M.
  public var condensedRows: Int { rows / pattern.groupRows * pattern.keptRows }
  /// Kept values per condensed row: k / 2.
  public var valuesPerRow: Int { columns / 2 }
  /// Metadata words per condensed row: k / 32.
  public var metadataWordsPerRow: Int { columns / SparsePattern.columnsPerMetadataWord }
  /// Vectors per row: k / V.
  public var vectorsPerRow: Int { columns / pattern.vectorLength }

  /// Wraps the three arrays and validates every invariant.
  public init(
    pattern: SparsePattern, rows: Int, columns: Int,
    values: [Scalar], metadata: [UInt32], rowSelection: [UInt8]
  ) throws(FormatError) {
    try pattern.checkApplicable(rows: rows, columns: columns)
    self.pattern = pattern
    self.rows = rows
    self.columns = columns
    self.values = values
    self.metadata = metadata
    self.rowSelection = rowSelection
    try validate()
  }

  /// For builders in this module that fill the arrays and validate later.
  init(unchecked pattern: SparsePattern, rows: Int, columns: Int) {
    self.pattern = pattern
    self.rows = rows
    self.columns = columns
    let mc = rows / pattern.groupRows * pattern.keptRows
    values = Array(repeating: .zero, count: mc * columns / 2)
    metadata = Array(repeating: 0, count: mc * columns / SparsePattern.columnsPerMetadataWord)
    rowSelection = Array(repeating: 0, count: mc * columns / pattern.vectorLength)
  }

  // MARK: Element access

  /// Position (0...3) inside its 4-column group of kept value `j` of
  /// condensed row `row`.
  @inlinable
  public func position(condensedRow row: Int, value j: Int) -> Int {
    let word = metadata[row * (columns / 32) + j / 16]
    return Int((word >> UInt32(2 * (j % 16))) & 3)
  }

  /// Dense column of kept value `j` of condensed row `row`.
  @inlinable
  public func column(condensedRow row: Int, value j: Int) -> Int {
    (j / 2) * 4 + position(condensedRow: row, value: j)
  }

  /// Original (dense) row that condensed row `row` holds in vector `vector`.
  @inlinable
  public func originalRow(condensedRow row: Int, vector: Int) -> Int {
    let group = row / pattern.keptRows
    let selected = Int(rowSelection[row * (columns / pattern.vectorLength) + vector])
    return group * pattern.groupRows + selected
  }

  // MARK: Densify

  /// The dense [m, k] matrix: kept values in place, zeros elsewhere.
  @_specialize(where Scalar == Float)
  @_specialize(where Scalar == BFloat16)
  @_specialize(where Scalar == Float16)
  public func densified() -> Matrix<Scalar> {
    var dense = Matrix<Scalar>(rows: rows, columns: columns, repeating: .zero)
    let perVector = pattern.vectorLength / 2
    for r in 0..<condensedRows {
      for j in 0..<valuesPerRow {
        let row = originalRow(condensedRow: r, vector: j / perVector)
        dense[row, column(condensedRow: r, value: j)] = values[r * valuesPerRow + j]
      }
    }
    return dense
  }

  /// Converts the stored values to another element type (rounding to
  /// nearest even); metadata and row selections are unchanged.
  public func converted<Other: SparseScalar>(to: Other.Type = Other.self) -> SparseMatrix<Other> {
    var result = SparseMatrix<Other>(unchecked: pattern, rows: rows, columns: columns)
    result.values = values.map { Other($0.floatValue) }
    result.metadata = metadata
    result.rowSelection = rowSelection
    return result
  }

  // MARK: Sizes

  /// Bytes the three arrays take: values + metadata + row selections.
  public var storedByteCount: Int {
    values.count * Scalar.dtype.byteSize + metadata.count * 4 + rowSelection.count
  }

  /// Bytes the same weight takes stored in the format with element `dtype`.
  public static func storedByteCount(
    rows: Int, columns: Int, pattern: SparsePattern, dtype: DType
  ) -> Int {
    let mc = rows / pattern.groupRows * pattern.keptRows
    return mc * columns / 2 * dtype.byteSize + mc * columns / 32 * 4
      + mc * columns / pattern.vectorLength
  }

  // MARK: Validation

  /// Checks every invariant of the format and throws the first violation,
  /// naming the condensed row, vector and column group that break it.
  ///
  /// - array sizes match [mc, k/2], [mc, k/32], [mc, k/V];
  /// - each 2:4 pair of positions is strictly ascending;
  /// - each (group, vector) selects N distinct rows in 0..<M, ascending;
  /// - every value is finite.
  @_specialize(where Scalar == Float)
  @_specialize(where Scalar == BFloat16)
  @_specialize(where Scalar == Float16)
  public func validate() throws(FormatError) {
    try pattern.checkApplicable(rows: rows, columns: columns)
    let mc = condensedRows
    guard values.count == mc * valuesPerRow else {
      throw .shapeMismatch(
        "values hold \(values.count) elements, expected [\(mc), \(valuesPerRow)] = \(mc * valuesPerRow)")
    }
    guard metadata.count == mc * metadataWordsPerRow else {
      throw .shapeMismatch(
        "metadata holds \(metadata.count) words, expected [\(mc), \(metadataWordsPerRow)] = \(mc * metadataWordsPerRow)"
      )
    }
    guard rowSelection.count == mc * vectorsPerRow else {
      throw .shapeMismatch(
        "row selection holds \(rowSelection.count) entries, expected [\(mc), \(vectorsPerRow)] = \(mc * vectorsPerRow)"
      )
    }
    let n = pattern.keptRows
    let m = pattern.groupRows
    let vectorLength = pattern.vectorLength
    for r in 0..<mc {
      for q in 0..<(columns / 4) {
        let p0 = position(condensedRow: r, value: 2 * q)
        let p1 = position(condensedRow: r, value: 2 * q + 1)
        if p0 >= p1 {
          throw .badMetadata(
            "condensed row \(r) (row group \(r / n)), vector \(4 * q / vectorLength), columns \(4 * q)..<\(4 * q + 4): positions (\(p0), \(p1)) are not two distinct ascending positions"
          )
        }
      }
      for j in 0..<valuesPerRow where !values[r * valuesPerRow + j].floatValue.isFinite {
        throw .nonFinite(
          "value \(values[r * valuesPerRow + j].floatValue) at condensed row \(r), column \(column(condensedRow: r, value: j))"
        )
      }
    }
    for group in 0..<(rows / m) {
      for v in 0..<vectorsPerRow {
        var previous = -1
        for j in 0..<n {
          let selected = Int(rowSelection[(group * n + j) * vectorsPerRow + v])
          if selected >= m {
            throw .badRowSelection(
              "row group \(group), vector \(v) (columns \(v * vectorLength)..<\((v + 1) * vectorLength)): condensed row \(group * n + j) selects row \(selected), but M=\(m)"
            )
          }
          if selected <= previous {
            throw .badRowSelection(
              "row group \(group), vector \(v) (columns \(v * vectorLength)..<\((v + 1) * vectorLength)): selections must be distinct and ascending, got \(selected) after \(previous)"
            )
          }
          previous = selected
        }
      }
    }
  }
}

extension SparseMatrix: Equatable {}
