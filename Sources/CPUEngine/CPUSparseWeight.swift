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

extension CPUSparseWeight {
  /// The weight back in the canonical format (f32 values): the inverse of
  /// `init(_:)`, for engines that pack it their own way (the GPU).
  ///
  /// The expansion keeps values, not positions, so a kept value that is
  /// exactly zero leaves its position open: such a 4-column group gets its
  /// non-zero positions plus the lowest free ones (holding zeros). The
  /// result has the same `densified()` matrix and so the same products; for
  /// weights without kept zeros it equals the original (values widened to
  /// f32).
  ///
  /// Worked example: a group whose expanded columns are `[0, 0.5, 0, 0]`
  /// becomes positions (0, 1) with values (0, 0.5); `[0, 0, 0, 0]` becomes
  /// (0, 1) with (0, 0).
  public func sparseMatrix() throws(FormatError) -> SparseMatrix<Float> {
    let mc = condensedRows
    let k = columns
    let wordsPerRow = k / SparsePattern.columnsPerMetadataWord
    var values = [Float](repeating: 0, count: mc * k / 2)
    var metadata = [UInt32](repeating: 0, count: mc * wordsPerRow)
    var selection = [UInt8](repeating: 0, count: mc * vectorsPerRow)
    for r in 0..<mc {
      for q in 0..<(k / 4) {
        let base = r * k + 4 * q
        var first = -1
        var second = -1
        var nonZeros = 0
        for p in 0..<4 where expanded[base + p] != 0 {
          nonZeros += 1
          if first < 0 { first = p } else { second = p }
        }
        guard nonZeros <= 2 else {
          throw .badMetadata("condensed row \(r), columns \(4 * q)..<\(4 * q + 4) hold \(nonZeros) non-zeros (2:4 allows 2)")
        }
        // Fill open positions with the lowest free ones, keeping the pair ascending.
        if first < 0 {
          (first, second) = (0, 1)
        } else if second < 0 {
          (first, second) = first == 0 ? (0, 1) : (0, first)
        }
        for slot in 0..<2 {
          let p = slot == 0 ? first : second
          let j = 2 * q + slot
          values[r * (k / 2) + j] = expanded[base + p]
          metadata[r * wordsPerRow + j / 16] |= UInt32(p) << UInt32(2 * (j % 16))
        }
      }
      let groupStart = (r / pattern.keptRows) * pattern.groupRows
      for v in 0..<vectorsPerRow {
        let offset = Int(originalRows[r * vectorsPerRow + v]) - groupStart
        guard offset >= 0, offset < pattern.groupRows else {
          throw .badRowSelection("condensed row \(r), vector \(v) holds row \(offset + groupStart), outside its group")
        }
        selection[r * vectorsPerRow + v] = UInt8(offset)
      }
    }
    return try SparseMatrix(
      pattern: pattern, rows: rows, columns: columns, values: values, metadata: metadata, rowSelection: selection)
  }
}
