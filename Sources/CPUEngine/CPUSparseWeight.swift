import SamoyedsFormat

/// A sparse weight repacked once for the CPU kernel.
///
/// The 2:4 positions are expanded (each condensed row becomes k floats,
/// half of them zero) so the inner loop is a plain SIMD dot product over a
/// vector of V columns; the row selection is kept, so each (condensed row,
/// vector) is computed once and added to its original row. Work is N/M of
/// the dense GEMM (half for 1:2:128); the 2:4 half is not exploited on the
/// CPU — that is the Sparse Tensor Cores' job.
///
/// - `expanded`     [mc, k] f32, zeros where the 2:4 pattern dropped a value
/// - `originalRows` [mc, k/V] Int32 output row of each vector segment
public struct CPUSparseWeight: Sendable {
  public let pattern: SparsePattern
  public let rows: Int
  public let columns: Int
  public let expanded: [Float]
  public let originalRows: [Int32]

  /// Condensed rows: m * N / M.
  public var condensedRows: Int { rows / pattern.groupRows * pattern.keptRows }
  /// Vectors per row: k / V.
  public var vectorsPerRow: Int { columns / pattern.vectorLength }

  /// Repacks a (valid) sparse matrix of any storage type.
  @_specialize(where Scalar == Float)
  @_specialize(where Scalar == BFloat16)
  @_specialize(where Scalar == Float16)
  public init<Scalar: SparseScalar>(_ sparse: SparseMatrix<Scalar>) {
    pattern = sparse.pattern
    rows = sparse.rows
    columns = sparse.columns
    let mc = sparse.condensedRows
    let k = sparse.columns
    var expanded = [Float](repeating: 0, count: mc * k)
    var originalRows = [Int32](repeating: 0, count: mc * sparse.vectorsPerRow)
    for r in 0..<mc {
      for j in 0..<sparse.valuesPerRow {
        expanded[r * k + sparse.column(condensedRow: r, value: j)] =
          sparse.values[r * sparse.valuesPerRow + j].floatValue
      }
      for v in 0..<sparse.vectorsPerRow {
        originalRows[r * sparse.vectorsPerRow + v] = Int32(sparse.originalRow(condensedRow: r, vector: v))
      }
    }
    self.expanded = expanded
    self.originalRows = originalRows
  }
}

extension CPUSparseWeight {
  /// The dense [m, k] weight holding exactly the stored values.
  public func densified() -> Matrix<Float> {
    var dense = Matrix<Float>(rows: rows, columns: columns, repeating: 0)
    let vectorLength = pattern.vectorLength
    for r in 0..<condensedRows {
      for v in 0..<vectorsPerRow {
        let o = Int(originalRows[r * vectorsPerRow + v])
        for c in (v * vectorLength)..<((v + 1) * vectorLength) {
          let value = expanded[r * columns + c]
          if value != 0 { dense[o, c] = value }
        }
      }
    }
    return dense
  }
}
