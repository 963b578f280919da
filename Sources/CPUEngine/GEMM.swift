import SamoyedsFormat

/// Reference GEMMs on the CPU: f32 in, f32 accumulation, all cores.
///
/// Both compute `Y = X[rows] · Wᵀ`: X is hidden states [T, k], `rows` an
/// optional list of token rows to read (the activation side: no gathered
/// copy is made), W a weight [m, k]; Y is [rows.count, m] (or [T, m]) with
/// row `i` belonging to token `rows[i]`.
public enum CPUGEMM {
  /// Dense `X[rows] · Wᵀ`.
  public static func dense(
    _ x: Matrix<Float>, rows: [Int32]? = nil, weight: Matrix<Float>
  ) throws(EngineError) -> Matrix<Float> {
    try checkOperands(x, rows: rows, columns: weight.columns)
    let count = rows?.count ?? x.rows
    let m = weight.rows
    let k = weight.columns
    var y = Matrix<Float>(rows: count, columns: m, repeating: 0)
    if count == 0 || m == 0 || k == 0 { return y }
    let tokenRows = rows.map { $0.map(Int.init) } ?? Array(0..<x.rows)
    x.storage.withUnsafeBufferPointer { xp in
      weight.storage.withUnsafeBufferPointer { wp in
        y.storage.withUnsafeMutableBufferPointer { yp in
          // Pieces write disjoint output columns o of Y.
          guard let xb = xp.baseAddress, let wb = wp.baseAddress, let yb = yp.baseAddress else { return }
          let xShared = SharedPointer(xb)
          let wShared = SharedPointer(wb)
          let yShared = SharedPointer(yb)
          let pieces = split(m, pieces: workPieces)
          parallelFor(pieces.count) { p in
            let xBase = UnsafePointer(xShared.base)
            let wBase = UnsafePointer(wShared.base)
            let yBase = yShared.base
            for o in pieces[p] {
              let w = wBase + o * k
              var i = 0
              while i + 4 <= count {
                let sums = dot4(
                  w, xBase + tokenRows[i] * k, xBase + tokenRows[i + 1] * k,
                  xBase + tokenRows[i + 2] * k, xBase + tokenRows[i + 3] * k, k)
                yBase[i * m + o] = sums.0
                yBase[(i + 1) * m + o] = sums.1
                yBase[(i + 2) * m + o] = sums.2
                yBase[(i + 3) * m + o] = sums.3
                i += 4
              }
              while i < count {
                yBase[i * m + o] = dot1(w, xBase + tokenRows[i] * k, k)
                i += 1
              }
            }
          }
        }
      }
    }
    return y
  }

  /// Dual-side sparse `X[rows] · Wᵀ` with W in the format (prepared once as
  /// a `CPUSparseWeight`).
  public static func sparse(
    _ x: Matrix<Float>, rows: [Int32]? = nil, weight: CPUSparseWeight
  ) throws(EngineError) -> Matrix<Float> {
    try checkOperands(x, rows: rows, columns: weight.columns)
    let count = rows?.count ?? x.rows
    let m = weight.rows
    let k = weight.columns
    var y = Matrix<Float>(rows: count, columns: m, repeating: 0)
    if count == 0 { return y }
    let tokenRows = rows.map { $0.map(Int.init) } ?? Array(0..<x.rows)
    let n = weight.pattern.keptRows
    let vectorLength = weight.pattern.vectorLength
    let vectors = weight.vectorsPerRow
    let groups = m / weight.pattern.groupRows
    x.storage.withUnsafeBufferPointer { xp in
      weight.expanded.withUnsafeBufferPointer { wp in
        weight.originalRows.withUnsafeBufferPointer { op in
          y.storage.withUnsafeMutableBufferPointer { yp in
            // A row group writes only its own M output columns of Y, so
            // pieces of whole groups never write the same element.
            guard let xb = xp.baseAddress, let wb = wp.baseAddress, let ob = op.baseAddress,
              let yb = yp.baseAddress
            else { return }
            let xShared = SharedPointer(xb)
            let wShared = SharedPointer(wb)
            let oShared = SharedPointer(ob)
            let yShared = SharedPointer(yb)
            let pieces = split(groups, pieces: workPieces)
            parallelFor(pieces.count) { p in
              let xBase = UnsafePointer(xShared.base)
              let yBase = yShared.base
              for group in pieces[p] {
                for r in (group * n)..<(group * n + n) {
                  for v in 0..<vectors {
                    let o = Int(oShared.base[r * vectors + v])
                    let w = UnsafePointer(wShared.base) + r * k + v * vectorLength
                    let offset = v * vectorLength
                    var i = 0
                    while i + 4 <= count {
                      let sums = dot4(
                        w, xBase + tokenRows[i] * k + offset, xBase + tokenRows[i + 1] * k + offset,
                        xBase + tokenRows[i + 2] * k + offset, xBase + tokenRows[i + 3] * k + offset,
                        vectorLength)
                      yBase[i * m + o] += sums.0
                      yBase[(i + 1) * m + o] += sums.1
                      yBase[(i + 2) * m + o] += sums.2
                      yBase[(i + 3) * m + o] += sums.3
                      i += 4
                    }
                    while i < count {
                      yBase[i * m + o] += dot1(w, xBase + tokenRows[i] * k + offset, vectorLength)
                      i += 1
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
    return y
  }

  static func checkOperands(_ x: Matrix<Float>, rows: [Int32]?, columns: Int) throws(EngineError) {
    guard x.columns == columns else {
      throw .shapeMismatch("hidden states have \(x.columns) columns but the weight takes k=\(columns)")
    }
    if let rows {
      for (i, row) in rows.enumerated() where row < 0 || Int(row) >= x.rows {
        throw .shapeMismatch("token index \(row) at position \(i) is outside the \(x.rows) hidden-state rows")
      }
    }
  }
}

// MARK: - Inner loops

@inline(__always)
private func dot1(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ k: Int) -> Float {
  var acc = SIMD8<Float>()
  var c = 0
  while c + 8 <= k {
    acc += load8(a + c) * load8(b + c)
    c += 8
  }
  var s = acc.sum()
  while c < k {
    s += a[c] * b[c]
    c += 1
  }
  return s
}

@inline(__always)
private func dot4(
  _ w: UnsafePointer<Float>, _ x0: UnsafePointer<Float>, _ x1: UnsafePointer<Float>,
  _ x2: UnsafePointer<Float>, _ x3: UnsafePointer<Float>, _ k: Int
) -> (Float, Float, Float, Float) {
  var a0 = SIMD8<Float>()
  var a1 = SIMD8<Float>()
  var a2 = SIMD8<Float>()
  var a3 = SIMD8<Float>()
  var c = 0
  while c + 8 <= k {
    let wv = load8(w + c)
    a0 += wv * load8(x0 + c)
    a1 += wv * load8(x1 + c)
    a2 += wv * load8(x2 + c)
    a3 += wv * load8(x3 + c)
    c += 8
  }
  var s = (a0.sum(), a1.sum(), a2.sum(), a3.sum())
  while c < k {
    s.0 += w[c] * x0[c]
    s.1 += w[c] * x1[c]
    s.2 += w[c] * x2[c]
    s.3 += w[c] * x3[c]
    c += 1
  }
  return s
}

@inline(__always)
private func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
  UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}
