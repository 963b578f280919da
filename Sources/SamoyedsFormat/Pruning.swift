extension SparseMatrix {
  /// Prunes a dense weight [m, k] into the format.
  ///
  /// For every row group and vector, each of the M rows is first pruned 2:4
  /// on its own (in each aligned group of 4 columns keep the 2 of highest
  /// importance; ties keep the lower column), then the N rows that keep the
  /// most total importance are selected (ties keep the lower row), and
  /// stored in ascending row order.
  ///
  /// - Parameters:
  ///   - dense: the weight [m, k]; every element must be finite.
  ///   - pattern: (N, M, V); m must divide by M and k by V.
  ///   - importance: optional per-element importance [m, k] used instead of
  ///     |W| (e.g. |W| x ‖x‖ from calibration); finite and non-negative.
  /// - Throws: `FormatError` naming the offending shape or element.
  @_specialize(where Scalar == Float)
  @_specialize(where Scalar == BFloat16)
  @_specialize(where Scalar == Float16)
  public static func prune(
    _ dense: Matrix<Scalar>, pattern: SparsePattern = .default,
    importance: Matrix<Float>? = nil
  ) throws(FormatError) -> SparseMatrix<Scalar> {
    try pattern.checkApplicable(rows: dense.rows, columns: dense.columns)
    if let (row, column) = dense.firstNonFinite() {
      throw .nonFinite(
        "weight element [\(row), \(column)] is \(dense[row, column].floatValue); prune needs finite weights")
    }
    if let importance {
      guard importance.rows == dense.rows, importance.columns == dense.columns else {
        throw .shapeMismatch(
          "importance is [\(importance.rows), \(importance.columns)] but the weight is [\(dense.rows), \(dense.columns)]"
        )
      }
      for (i, value) in importance.storage.enumerated() where !(value.isFinite && value >= 0) {
        throw .nonFinite(
          "importance element [\(i / dense.columns), \(i % dense.columns)] is \(value); it must be finite and >= 0"
        )
      }
    }
    // One pass for the scores, so the selection loops read a plain array.
    let scores: [Float] = importance?.storage ?? dense.storage.map { abs($0.floatValue) }

    var result = SparseMatrix(unchecked: pattern, rows: dense.rows, columns: dense.columns)
    let k = dense.columns
    let n = pattern.keptRows
    let m = pattern.groupRows
    let vectorLength = pattern.vectorLength
    let quadsPerVector = vectorLength / 4
    let vectors = k / vectorLength
    let valuesPerRow = k / 2
    let wordsPerRow = k / 32

    // Per (row in group, quad in vector): the two kept positions.
    var kept = [(UInt8, UInt8)](repeating: (0, 1), count: m * quadsPerVector)
    var totals = [Float](repeating: 0, count: m)
    var selected = [Int](repeating: 0, count: n)

    scores.withUnsafeBufferPointer { score in
      for group in 0..<(dense.rows / m) {
        for v in 0..<vectors {
          for i in 0..<m {
            let base = (group * m + i) * k + v * vectorLength
            var total: Float = 0
            for q in 0..<quadsPerVector {
              let at = base + 4 * q
              let (p0, p1, sum) = topTwo(score[at], score[at + 1], score[at + 2], score[at + 3])
              kept[i * quadsPerVector + q] = (p0, p1)
              total += sum
            }
            totals[i] = total
          }
          // The N highest totals; ties keep the lower row. Then ascending.
          for j in 0..<n {
            var best = -1
            for i in 0..<m where !selected[0..<j].contains(i) {
              if best < 0 || totals[i] > totals[best] { best = i }
            }
            selected[j] = best
          }
          selected.sort()
          for (j, i) in selected.enumerated() {
            let condensed = group * n + j
            result.rowSelection[condensed * vectors + v] = UInt8(i)
            let source = (group * m + i) * k + v * vectorLength
            for q in 0..<quadsPerVector {
              let (p0, p1) = kept[i * quadsPerVector + q]
              let valueIndex: Int = v * quadsPerVector * 2 + 2 * q  // within the row
              let destination: Int = condensed * valuesPerRow + valueIndex
              let quad: Int = source + 4 * q
              result.values[destination] = dense.storage[quad + Int(p0)]
              result.values[destination + 1] = dense.storage[quad + Int(p1)]
              let word = condensed * wordsPerRow + valueIndex / 16
              let shift = UInt32(2 * (valueIndex % 16))
              result.metadata[word] |= (UInt32(p0) | UInt32(p1) << 2) << shift
            }
          }
        }
      }
    }
    return result
  }
}

/// The positions of the two largest of four scores (ties keep the lower
/// position), ascending, and their sum.
@inline(__always)
private func topTwo(_ a: Float, _ b: Float, _ c: Float, _ d: Float) -> (UInt8, UInt8, Float) {
  // Largest (first on ties).
  var first: UInt8 = 0
  var best = a
  if b > best { first = 1; best = b }
  if c > best { first = 2; best = c }
  if d > best { first = 3; best = d }
  // Second largest among the rest (first on ties).
  var second: UInt8 = 255
  var runnerUp = -Float.infinity
  if first != 0 { second = 0; runnerUp = a }
  if first != 1 && (second == 255 || b > runnerUp) { second = 1; runnerUp = b }
  if first != 2 && (second == 255 || c > runnerUp) { second = 2; runnerUp = c }
  if first != 3 && (second == 255 || d > runnerUp) { second = 3; runnerUp = d }
  return (min(first, second), max(first, second), best + runnerUp)
}
