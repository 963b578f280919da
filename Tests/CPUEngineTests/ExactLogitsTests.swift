import Testing

@testable import CPUEngine
import SamoyedsFormat

/// `ExactLogits`: on its grids every router logit is exact in f32, so any
/// order of the sums gives the same bits (what the GPU router's verify cases
/// rely on).
@Suite struct ExactLogitsTests {
  /// The f32 sum in reverse column order, one product at a time.
  func reversedSum(_ x: Matrix<Float>, _ t: Int, _ r: Matrix<Float>, _ e: Int) -> Float {
    var sum: Float = 0
    for c in (0..<x.columns).reversed() { sum += x[t, c] * r[e, c] }
    return sum
  }

  func exactSum(_ x: Matrix<Float>, _ t: Int, _ r: Matrix<Float>, _ e: Int) -> Double {
    (0..<x.columns).reduce(0.0) { $0 + Double(x[t, $1]) * Double(r[e, $1]) }
  }

  @Test(arguments: [256, 2048, 7168, ExactLogits.maxHidden])
  func logitsAreExactInAnyOrder(hidden: Int) throws {
    let seed = UInt64(hidden)
    var rng = SeededGenerator(seed: seed)
    let x = ExactLogits.hiddenStates(rng.normalMatrix(rows: 5, columns: hidden))
    let router = ExactLogits.router(rng.normalMatrix(rows: 9, columns: hidden, scale: 4 / Float(hidden).squareRoot()))
    let logits = try CPUGEMM.dense(x, weight: router)
    for t in 0..<x.rows {
      for e in 0..<router.rows {
        #expect(Double(logits[t, e]) == exactSum(x, t, router, e), "hidden \(hidden) seed \(seed) [\(t), \(e)]")
        #expect(logits[t, e].bitPattern == reversedSum(x, t, router, e).bitPattern, "hidden \(hidden) seed \(seed)")
      }
    }
  }

  /// The extremes: |x| = 4 and |r| = 1 everywhere at the longest hidden size
  /// (the partial sums reach 2¹⁵), with signs making them climb and fall.
  @Test func extremesStayExact() throws {
    let hidden = ExactLogits.maxHidden
    let x = ExactLogits.hiddenStates(Matrix(rows: 2, columns: hidden) { t, c in t == 0 ? 9 : (c % 3 == 0 ? -4 : 4.125) })
    let router = ExactLogits.router(Matrix(rows: 2, columns: hidden) { e, c in e == 0 ? 2 : (c % 2 == 0 ? 1 : -0.984375) })
    #expect(x[0, 0] == 4 && x[1, 1] == 4 && router[0, 0] == 1)
    let logits = try CPUGEMM.dense(x, weight: router)
    #expect(logits[0, 0] == 32768)
    for t in 0..<2 {
      for e in 0..<2 {
        #expect(Double(logits[t, e]) == exactSum(x, t, router, e))
        #expect(logits[t, e] == reversedSum(x, t, router, e))
      }
    }
  }

  /// The snapped hidden states survive bf16 and fp16 unchanged (the GPU reads them in those types).
  @Test func hiddenStatesAreExactInSixteenBits() {
    var rng = SeededGenerator(seed: 9)
    let x = ExactLogits.hiddenStates(rng.normalMatrix(rows: 16, columns: 256, scale: 3))
    for v in x.storage {
      #expect(BFloat16(v).floatValue == v && Float(Float16(v)) == v, "\(v)")
      #expect(abs(v) <= ExactLogits.hiddenBound && (v / ExactLogits.hiddenStep).rounded() == v / ExactLogits.hiddenStep)
    }
  }
}
