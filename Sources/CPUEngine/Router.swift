import RealModule
import SamoyedsFormat
import SamoyedsModel

/// The router of every family: softmax over the expert logits, top-k,
/// optional renormalization, optional capacity (token dropping).
///
/// Ties in top-k keep the lower expert index. Softmax is computed in f32
/// after subtracting the row maximum, as the reference models do.
public enum Router {
  /// The router's choice for each token.
  public struct Choice: Sendable, Equatable {
    /// [T, topK] chosen experts in rank order; -1 = dropped by capacity.
    public var experts: [Int32]
    /// [T, topK] routing weights.
    public var weights: [Float]
  }

  /// Routes every row of `logits` [T, E] by `rule`.
  public static func route(logits: Matrix<Float>, rule: RouterRule) -> Choice {
    let tokens = logits.rows
    let numExperts = logits.columns
    let k = rule.topK
    var experts = [Int32](repeating: -1, count: tokens * k)
    var weights = [Float](repeating: 0, count: tokens * k)
    var probabilities = [Float](repeating: 0, count: numExperts)
    var order = Array(0..<numExperts)
    for t in 0..<tokens {
      var maximum = -Float.infinity
      for e in 0..<numExperts { maximum = max(maximum, logits[t, e]) }
      var total: Float = 0
      for e in 0..<numExperts {
        probabilities[e] = Float.exp(logits[t, e] - maximum)
        total += probabilities[e]
      }
      for e in 0..<numExperts { probabilities[e] /= total }
      for e in 0..<numExperts { order[e] = e }
      // Partial selection sort: k is small.
      for rank in 0..<k {
        var best = rank
        for j in (rank + 1)..<numExperts {
          let a = probabilities[order[j]]
          let b = probabilities[order[best]]
          if a > b || (a == b && order[j] < order[best]) { best = j }
        }
        order.swapAt(rank, best)
        experts[t * k + rank] = Int32(order[rank])
        weights[t * k + rank] = probabilities[order[rank]]
      }
      if rule.normalizeTopK {
        var sum: Float = 0
        for rank in 0..<k { sum += weights[t * k + rank] }
        for rank in 0..<k { weights[t * k + rank] /= sum }
      }
    }
    if let capacity = rule.capacity {
      let limit = capacity.capacity(tokens: tokens, experts: numExperts, topK: k)
      var load = [Int](repeating: 0, count: numExperts)
      // Every first choice (in token order) before any second choice.
      for rank in 0..<k {
        for t in 0..<tokens {
          let e = Int(experts[t * k + rank])
          if load[e] < limit {
            load[e] += 1
          } else {
            experts[t * k + rank] = -1
            weights[t * k + rank] = 0
          }
        }
      }
    }
    return Choice(experts: experts, weights: weights)
  }
}
