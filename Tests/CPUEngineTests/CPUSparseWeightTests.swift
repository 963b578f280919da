import Testing

@testable import CPUEngine
import SamoyedsFormat

/// `CPUSparseWeight.sparseMatrix()` inverts the CPU expansion (the GPU layer
/// packs checkpoint weights from it).
@Suite struct CPUSparseWeightRoundTrip {
  /// Without kept zeros the canonical arrays come back exactly, for every
  /// N:M shape family (N = 1 and N > 1, V = 32 and larger).
  @Test(arguments: ["1:2:128", "1:4:64", "2:4:32", "1:8:32", "3:8:32", "2:3:64"])
  func canonicalArraysComeBack(pattern text: String) throws {
    let pattern = try SparsePattern(parsing: text)
    let seed = UInt64(text.utf8.reduce(0) { $0 &* 31 &+ Int($1) } & 0xFFFF)
    var rng = SeededGenerator(seed: seed)
    let dense = rng.normalMatrix(rows: pattern.groupRows * 3, columns: pattern.vectorLength * 2)
    let sparse = try SparseMatrix<BFloat16>.prune(Matrix<BFloat16>.rounding(dense), pattern: pattern)
    let back = try CPUSparseWeight(sparse).sparseMatrix()
    let expected = sparse.converted(to: Float.self)
    #expect(back.values == expected.values, "pattern \(text) seed \(seed)")
    #expect(back.metadata == expected.metadata, "pattern \(text) seed \(seed)")
    #expect(back.rowSelection == expected.rowSelection, "pattern \(text) seed \(seed)")
  }

  /// Kept values that are exactly zero (a zero weight, zero rows, zero
  /// columns) give a valid matrix with the same densified weight: open
  /// positions take the lowest free ones.
  @Test func keptZerosKeepTheProduct() throws {
    let pattern = try SparsePattern(parsing: "1:2:32")
    var rng = SeededGenerator(seed: 11)
    var dense = rng.normalMatrix(rows: 8, columns: 64)
    for c in 0..<64 { dense[2, c] = 0; dense[3, c] = 0 }  // a whole row group
    for r in 0..<8 { dense[r, 5] = 0; dense[r, 6] = 0; dense[r, 7] = 0 }  // one non-zero in columns 4..<8
    dense[0, 9] = 0
    let sparse = try SparseMatrix<Float>.prune(dense, pattern: pattern)
    let back = try CPUSparseWeight(sparse).sparseMatrix()
    #expect(back.densified().storage == sparse.densified().storage)
    // Group 0 of the zero row pair: positions (0, 1); columns 4..<8 of row 0
    // keep column 4 (position 0) and an open position 1.
    #expect(back.metadata[1 * 2] & 0xF == 0b01_00)
    #expect(back.metadata[0] >> 4 & 0xF == 0b01_00)

    let zero = try SparseMatrix<Float>.prune(Matrix(rows: 4, columns: 32, repeating: 0), pattern: pattern)
    let zeroBack = try CPUSparseWeight(zero).sparseMatrix()
    #expect(zeroBack.values.allSatisfy { $0 == 0 })
    #expect(zeroBack.metadata.allSatisfy { $0 == 0x4444_4444 })  // (0, 1) in every group
  }
}
