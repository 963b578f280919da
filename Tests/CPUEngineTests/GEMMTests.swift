import Testing

@testable import CPUEngine
import SamoyedsFormat

/// Naive `X[rows] · Wᵀ` in Double: the golden reference.
func naiveGEMM(_ x: Matrix<Float>, rows: [Int32], _ w: Matrix<Float>) -> Matrix<Float> {
  Matrix(rows: rows.count, columns: w.rows) { i, o in
    var sum = 0.0
    for c in 0..<w.columns { sum += Double(x[Int(rows[i]), c]) * Double(w[o, c]) }
    return Float(sum)
  }
}

@Suite struct GEMMProperties {
  @Test func denseMatchesNaive() throws {
    for seed in UInt64(0)..<6 {
      var rng = SeededGenerator(seed: seed)
      let m = Int.random(in: 1...40, using: &rng)
      let k = Int.random(in: 1...70, using: &rng)
      let t = Int.random(in: 0...11, using: &rng)
      let x = rng.normalMatrix(rows: t + 3, columns: k)
      let w = rng.normalMatrix(rows: m, columns: k)
      let rows = (0..<t).map { _ in Int32.random(in: 0..<Int32(t + 3), using: &rng) }  // repeats allowed
      let y = try CPUGEMM.dense(x, rows: rows, weight: w)
      let reference = naiveGEMM(x, rows: rows, w)
      #expect(y.rows == t && y.columns == m)
      if t > 0 { #expect(relativeError(y, reference) < 1e-5, "seed \(seed) m \(m) k \(k) t \(t)") }
    }
  }

  /// Sparse GEMM equals the dense GEMM on the densified weight, over random
  /// shapes, patterns, storage types and index lists (one token, none, odd
  /// counts).
  @Test func sparseMatchesDenseOnDensified() throws {
    let patterns = ["1:2:128", "1:2:32", "1:4:64", "3:4:32", "1:8:32", "2:3:64"]
    for (index, text) in patterns.enumerated() {
      for trial in 0..<3 {
        let seed = UInt64(index * 10 + trial)
        var rng = SeededGenerator(seed: seed)
        let pattern = try SparsePattern(parsing: text)
        let m = pattern.groupRows * Int.random(in: 1...5, using: &rng)
        let k = pattern.vectorLength * Int.random(in: 1...2, using: &rng)
        let hiddenRows = Int.random(in: 1...20, using: &rng)
        let t = [0, 1, 3, 7, 13][trial % 5 + (index % 3)]
        let x = rng.normalMatrix(rows: hiddenRows, columns: k)
        let rows = (0..<t).map { _ in Int32.random(in: 0..<Int32(hiddenRows), using: &rng) }
        let weight = rng.normalMatrix(rows: m, columns: k)
        let sparse = try SparseMatrix<BFloat16>.prune(Matrix<BFloat16>.rounding(weight), pattern: pattern)
        let y = try CPUGEMM.sparse(x, rows: rows, weight: CPUSparseWeight(sparse))
        let reference = try CPUGEMM.dense(x, rows: rows, weight: sparse.densified().toFloat())
        #expect(y.rows == t && y.columns == m, "seed \(seed)")
        if t > 0 {
          #expect(relativeError(y, reference) < 1e-5, "pattern \(text) seed \(seed) m \(m) k \(k) t \(t)")
          #expect(relativeError(y, naiveGEMM(x, rows: rows, sparse.densified().toFloat())) < 1e-5, "seed \(seed)")
        }
      }
    }
  }

  @Test func badOperandsAreRejected() throws {
    var rng = SeededGenerator(seed: 1)
    let x = rng.normalMatrix(rows: 2, columns: 32)
    let w = rng.normalMatrix(rows: 4, columns: 64)
    #expect(throws: EngineError.self) { try CPUGEMM.dense(x, weight: w) }
    let sparse = CPUSparseWeight(try SparseMatrix<Float>.prune(w, pattern: try SparsePattern(parsing: "1:2:32")))
    #expect(throws: EngineError.self) { try CPUGEMM.sparse(x, weight: sparse) }
    let x64 = rng.normalMatrix(rows: 2, columns: 64)
    #expect(throws: EngineError.self) { try CPUGEMM.sparse(x64, rows: [0, 2], weight: sparse) }
    #expect(throws: EngineError.self) { try CPUGEMM.dense(x64, rows: [-1], weight: w) }
  }
}
