import Testing

@testable import SamoyedsFormat

/// Random-shape property tests of prune / densify / validate.
///
/// Every case draws its own seed from a base seed; the seed is printed in the
/// failure message (and on stdout), so a failure can be replayed exactly.
@Suite struct PruneProperties {
  static let patterns: [(Int, Int, Int)] = [
    (1, 2, 128), (1, 2, 32), (1, 4, 64), (3, 4, 32), (1, 8, 32), (5, 8, 64), (2, 3, 96),
  ]

  @Test(arguments: 0..<Self.patterns.count)
  func pruneKeepsExactlyTheKeptValues(patternIndex: Int) throws {
    let (n, m, v) = Self.patterns[patternIndex]
    let pattern = try SparsePattern(keptRows: n, groupRows: m, vectorLength: v)
    for trial in 0..<4 {
      let seed = UInt64(1000 * patternIndex + trial)
      print("pruneKeepsExactlyTheKeptValues pattern \(pattern) seed \(seed)")
      var rng = SeededGenerator(seed: seed)
      let rows = m * Int.random(in: 1...4, using: &rng)
      let columns = v * Int.random(in: 1...3, using: &rng)
      var weight = rng.normalMatrix(rows: rows, columns: columns)
      // Sprinkle exact zeros and ties to exercise tie-breaking.
      for i in weight.storage.indices where Int.random(in: 0..<10, using: &rng) == 0 {
        weight.storage[i] = Int.random(in: 0..<2, using: &rng) == 0 ? 0 : 1
      }
      let sparse = try SparseMatrix<Float>.prune(weight, pattern: pattern)
      try sparse.validate()
      let dense = sparse.densified()

      // 1. Every stored value is the original value at its position.
      for r in 0..<sparse.condensedRows {
        for j in 0..<sparse.valuesPerRow {
          let row = sparse.originalRow(condensedRow: r, vector: j / (v / 2))
          let column = sparse.column(condensedRow: r, value: j)
          #expect(sparse.values[r * sparse.valuesPerRow + j] == weight[row, column], "seed \(seed)")
        }
      }
      // 2. densify keeps those and zeroes the rest; 2:4 and N-of-M hold.
      for group in 0..<(rows / m) {
        for vector in 0..<(columns / v) {
          var keptRows: [Int] = []
          for i in 0..<m {
            let row = group * m + i
            var nonZeroInRow = false
            for quad in 0..<(v / 4) {
              var count = 0
              for c in 0..<4 {
                let column = vector * v + 4 * quad + c
                let value = dense[row, column]
                #expect(value == 0 || value == weight[row, column], "seed \(seed)")
                if value != 0 { count += 1; nonZeroInRow = true }
              }
              #expect(count <= 2, "2:4 broken at row \(row) quad \(quad), seed \(seed)")
            }
            if nonZeroInRow { keptRows.append(i) }
          }
          #expect(keptRows.count <= n, "more than N rows kept, seed \(seed)")
        }
      }
      // 3. The selected rows keep at least as much magnitude as any other.
      for group in 0..<(rows / m) {
        for vector in 0..<(columns / v) {
          let selected = (0..<n).map {
            sparse.originalRow(condensedRow: group * n + $0, vector: vector) - group * m
          }
          func keptMagnitude(_ i: Int) -> Float {
            var total: Float = 0
            for quad in 0..<(v / 4) {
              let magnitudes = (0..<4).map { abs(weight[group * m + i, vector * v + 4 * quad + $0]) }
                .sorted(by: >)
              total += magnitudes[0] + magnitudes[1]
            }
            return total
          }
          let worstSelected = selected.map(keptMagnitude).min() ?? 0
          for i in 0..<m where !selected.contains(i) {
            #expect(keptMagnitude(i) <= worstSelected, "row selection not optimal, seed \(seed)")
          }
        }
      }
    }
  }

  @Test func importanceOverridesMagnitude() throws {
    // Importance puts all weight on row 1 and columns {0, 3} of each quad,
    // though row 0 has the larger magnitudes everywhere.
    let pattern = try SparsePattern(parsing: "1:2:32")
    var weight = Matrix<Float>(rows: 2, columns: 32, repeating: 1)
    for c in 0..<32 { weight[0, c] = 10 }
    var importance = Matrix<Float>(rows: 2, columns: 32, repeating: 0)
    for q in 0..<8 {
      importance[1, 4 * q] = 1
      importance[1, 4 * q + 3] = 1
    }
    let sparse = try SparseMatrix<Float>.prune(weight, pattern: pattern, importance: importance)
    #expect(sparse.rowSelection == [1])
    for q in 0..<8 {
      #expect(sparse.column(condensedRow: 0, value: 2 * q) == 4 * q)
      #expect(sparse.column(condensedRow: 0, value: 2 * q + 1) == 4 * q + 3)
    }
    // Magnitude pruning picks row 0 instead.
    #expect(try SparseMatrix<Float>.prune(weight, pattern: pattern).rowSelection == [0])
  }

  @Test func workedExampleOfTheFormatDoc() throws {
    // docs/FORMAT.md: 2 x 32 weight, pattern 1:2:32, row 1 keeps more.
    var weight = Matrix<Float>(rows: 2, columns: 32, repeating: 0)
    weight[0, 0] = 1  // row 0 is small
    weight[1, 1] = 5
    weight[1, 3] = -4
    weight[1, 2] = 0.5  // dropped by 2:4
    weight[1, 6] = 2
    let sparse = try SparseMatrix<Float>.prune(weight, pattern: try SparsePattern(parsing: "1:2:32"))
    #expect(sparse.rowSelection == [1])
    #expect(Array(sparse.values[0..<4]) == [5, -4, 0, 2])
    // Quad 0 keeps positions 1, 3: bits 0b11_01; quad 1 keeps 0 and 2 (value 2
    // at position 2, and the first zero at position 0): 0b10_00 << 4.
    #expect(sparse.metadata[0] & 0xFF == 0b1000_1101)
    let dense = sparse.densified()
    #expect(dense[1, 1] == 5 && dense[1, 3] == -4 && dense[1, 6] == 2 && dense[1, 2] == 0)
    #expect(dense[0, 0] == 0)
  }

  @Test func storageTypesRoundTripThroughConversion() throws {
    var rng = SeededGenerator(seed: 7)
    let weight = rng.normalMatrix(rows: 8, columns: 64)
    let bf16 = try SparseMatrix<BFloat16>.prune(Matrix<BFloat16>.rounding(weight), pattern: .default.withVector(64))
    let widened = bf16.converted(to: Float.self)
    #expect(widened.converted(to: BFloat16.self) == bf16)
    #expect(widened.densified() == bf16.densified().toFloat())
    let fp16 = try SparseMatrix<Float16>.prune(Matrix<Float16>.rounding(weight), pattern: .default.withVector(64))
    try fp16.validate()
  }

  @Test func storedBytesMatchTheDocumentedRatio() throws {
    // 1:2:128 bf16: values 25% + metadata 3.125% + selections 0.195% of dense.
    let bytes = SparseMatrix<BFloat16>.storedByteCount(rows: 14336, columns: 4096, pattern: .default, dtype: .bf16)
    let ratio = Double(bytes) / Double(14336 * 4096 * 2)
    #expect(abs(ratio - 0.283203125) < 1e-9)
  }
}

extension SparsePattern {
  /// The same N and M with another V.
  func withVector(_ v: Int) throws -> SparsePattern {
    try SparsePattern(keptRows: keptRows, groupRows: groupRows, vectorLength: v)
  }
}

@Suite struct Violations {
  func sample(_ pattern: String = "2:4:32", seed: UInt64 = 3) throws -> SparseMatrix<Float> {
    var rng = SeededGenerator(seed: seed)
    return try SparseMatrix<Float>.prune(
      rng.normalMatrix(rows: 8, columns: 64), pattern: try SparsePattern(parsing: pattern))
  }

  func rebuild(
    _ s: SparseMatrix<Float>, values: [Float]? = nil, metadata: [UInt32]? = nil, rowSelection: [UInt8]? = nil
  ) throws(FormatError) -> SparseMatrix<Float> {
    try SparseMatrix(
      pattern: s.pattern, rows: s.rows, columns: s.columns, values: values ?? s.values,
      metadata: metadata ?? s.metadata, rowSelection: rowSelection ?? s.rowSelection)
  }

  @Test func descendingOrEqualPositionsAreRejected() throws {
    let s = try sample()
    var metadata = s.metadata
    // Condensed row 1, quad 2 (values 4, 5 of word 1*2+0): set positions (2, 2).
    metadata[1 * 2] = (metadata[1 * 2] & ~(0xF << 8)) | (0b10_10 << 8)
    #expect {
      try rebuild(s, metadata: metadata)
    } throws: { error in
      guard case FormatError.badMetadata(let text) = error else { return false }
      return text.contains("condensed row 1") && text.contains("columns 8..<12") && text.contains("(2, 2)")
    }
    metadata[1 * 2] = (s.metadata[1 * 2] & ~(0xF << 8)) | (0b01_11 << 8)  // (3, 1)
    #expect(throws: FormatError.self) { try rebuild(s, metadata: metadata) }
  }

  @Test func outOfRangeAndUnorderedSelectionsAreRejected() throws {
    let s = try sample()
    var selection = s.rowSelection
    selection[0] = 4  // M = 4
    #expect {
      try rebuild(s, rowSelection: selection)
    } throws: { error in
      guard case FormatError.badRowSelection(let text) = error else { return false }
      return text.contains("row group 0") && text.contains("selects row 4")
    }
    selection = s.rowSelection
    // Rows of group 0, vector 0 are condensed rows 0 and 1: make them equal.
    selection[2] = selection[0]
    #expect {
      try rebuild(s, rowSelection: selection)
    } throws: { error in
      guard case FormatError.badRowSelection(let text) = error else { return false }
      return text.contains("distinct and ascending")
    }
  }

  @Test func wrongSizesNonFiniteAndShapesAreRejected() throws {
    let s = try sample()
    #expect(throws: FormatError.self) { try rebuild(s, values: Array(s.values.dropLast())) }
    #expect(throws: FormatError.self) { try rebuild(s, metadata: s.metadata + [0]) }
    #expect(throws: FormatError.self) { try rebuild(s, rowSelection: []) }
    var values = s.values
    values[5] = .nan
    #expect {
      try rebuild(s, values: values)
    } throws: { error in
      guard case FormatError.nonFinite(let text) = error else { return false }
      return text.contains("condensed row 0")
    }
    var weight = Matrix<Float>(rows: 4, columns: 32, repeating: 1)
    weight[2, 7] = .infinity
    #expect {
      try SparseMatrix<Float>.prune(weight, pattern: try SparsePattern(parsing: "1:2:32"))
    } throws: { error in
      guard case FormatError.nonFinite(let text) = error else { return false }
      return text.contains("[2, 7]")
    }
    weight[2, 7] = .nan
    #expect(throws: FormatError.self) {
      try SparseMatrix<Float>.prune(weight, pattern: try SparsePattern(parsing: "1:2:32"))
    }
    // Indivisible shapes.
    #expect(throws: FormatError.self) {
      try SparseMatrix<Float>.prune(Matrix(rows: 3, columns: 32, repeating: 1), pattern: .default.withVector(32))
    }
    #expect(throws: FormatError.self) {
      try SparseMatrix<Float>.prune(Matrix(rows: 2, columns: 100, repeating: 1), pattern: .default)
    }
    // Importance of the wrong shape, or negative.
    #expect(throws: FormatError.self) {
      try SparseMatrix<Float>.prune(
        Matrix(rows: 2, columns: 32, repeating: 1), pattern: .default.withVector(32),
        importance: Matrix(rows: 2, columns: 64, repeating: 1))
    }
    #expect(throws: FormatError.self) {
      try SparseMatrix<Float>.prune(
        Matrix(rows: 2, columns: 32, repeating: 1), pattern: .default.withVector(32),
        importance: Matrix(rows: 2, columns: 32, repeating: -1))
    }
  }

  @Test func invalidPatternsAreRejected() {
    for text in ["2:2:128", "0:2:128", "1:1:128", "1:2:100", "1:2:0", "1:300:128", "1:2", "a:b:c", ""] {
      #expect(throws: FormatError.self, "pattern \(text)") { try SparsePattern(parsing: text) }
    }
    #expect((try? SparsePattern(parsing: "1:8:32"))?.density == 1.0 / 16)
  }
}

@Suite struct BFloat16Conversion {
  @Test func roundsToNearestEven() {
    #expect(BFloat16(1.0).bitPattern == 0x3F80)
    // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even (1).
    #expect(BFloat16(1.0 + 1.0 / 256).bitPattern == 0x3F80)
    // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even.
    #expect(BFloat16(1.0 + 3.0 / 256).bitPattern == 0x3F82)
    #expect(BFloat16(-2.5).floatValue == -2.5)
    #expect(BFloat16(Float.infinity).floatValue == .infinity)
    #expect(BFloat16(Float.nan).floatValue.isNaN)
    #expect(BFloat16(Float(bitPattern: 0x7F80_0001)).floatValue.isNaN)  // signalling NaN stays NaN
    #expect(BFloat16(Float.greatestFiniteMagnitude).floatValue == .infinity)  // overflow rounds up
  }

  @Test func relativeErrorNeverPassesNaN() throws {
    let a = try Matrix<Float>(rows: 1, columns: 2, storage: [1, .nan])
    let b = try Matrix<Float>(rows: 1, columns: 2, storage: [1, 2])
    #expect(relativeError(a, b).isNaN)
    #expect(!(relativeError(a, b) < 1e-2))
    #expect(relativeError(b, b) == 0)
  }
}
