/// The activation side of the format: which token rows each expert reads,
/// with which routing weight, and where each result goes.
///
/// No gathered copy of the hidden states exists: kernels read row
/// `tokenIndices[i]` of the hidden-state matrix [T, hidden] directly.
///
/// Layout (CSR over experts), for `E` experts and `n` routed entries:
/// - `expertOffsets` [E + 1]: expert `e` owns entries
///   `expertOffsets[e] ..< expertOffsets[e + 1]`; `expertOffsets[0] == 0`,
///   non-decreasing, `expertOffsets[E] == n`. An expert with no tokens has an
///   empty range.
/// - `tokenIndices` [n]: the hidden-state row each entry reads. Within one
///   expert strictly ascending (a token picks an expert at most once).
/// - `weights` [n]: the routing weight, finite.
/// - `outputSlots` [n]: `token * topK + rank`, where `rank` is the position
///   of this expert in the token's top-k list (0 = highest score). Slots are
///   unique. The combine adds `weight * result` into output row `token`;
///   the deterministic combine writes each result to slot row `outputSlots[i]`
///   of a [T * topK, hidden] buffer and sums each token's slots in rank
///   order. Slots of dropped assignments (capacity limits) are simply absent
///   and count as zero.
///
/// Worked example, T = 3, E = 3, top-2: token 0 -> experts (2, 0),
/// token 1 -> (0, 1), token 2 -> (2, 1) gives
/// `expertOffsets = [0, 2, 4, 6]`, `tokenIndices = [0, 1, 1, 2, 0, 2]`,
/// `outputSlots = [1, 2, 3, 5, 0, 4]`.
///
/// The plan carries no padding; see `PaddedRoutingPlan` for the block-padded
/// view some kernels launch over.
public struct RoutingPlan: Sendable, Equatable {
  /// Tokens T (rows of the hidden states).
  public let numTokens: Int
  /// Experts E.
  public let numExperts: Int
  /// Experts chosen per token.
  public let topK: Int
  /// [E + 1] entry offsets per expert.
  public let expertOffsets: [Int32]
  /// [n] hidden-state row read by each entry.
  public let tokenIndices: [Int32]
  /// [n] routing weight of each entry.
  public let weights: [Float]
  /// [n] output slot (token * topK + rank) of each entry.
  public let outputSlots: [Int32]

  /// Builds the plan from the router's choice.
  ///
  /// - Parameters:
  ///   - selectedExperts: [T, topK] row-major, the experts of each token in
  ///     rank order; -1 marks an assignment dropped by a capacity limit.
  ///   - weights: [T, topK] the routing weight of each choice.
  public init(
    numTokens: Int, numExperts: Int, topK: Int,
    selectedExperts: [Int32], weights routingWeights: [Float]
  ) throws(FormatError) {
    guard numTokens >= 0, numExperts >= 1, topK >= 1, topK <= numExperts else {
      throw .badRouting(
        "T=\(numTokens), E=\(numExperts), topK=\(topK): need T >= 0 and 1 <= topK <= E")
    }
    let total = numTokens * topK
    guard selectedExperts.count == total, routingWeights.count == total else {
      throw .shapeMismatch(
        "router output must be [T=\(numTokens), topK=\(topK)] = \(total) entries, got \(selectedExperts.count) experts and \(routingWeights.count) weights"
      )
    }
    var counts = [Int](repeating: 0, count: numExperts)
    for (i, expert) in selectedExperts.enumerated() where expert != -1 {
      guard expert >= 0, Int(expert) < numExperts else {
        throw .badRouting("token \(i / topK) rank \(i % topK) chose expert \(expert), but E=\(numExperts)")
      }
      counts[Int(expert)] += 1
    }
    var offsets = [Int32](repeating: 0, count: numExperts + 1)
    for e in 0..<numExperts { offsets[e + 1] = offsets[e] + Int32(counts[e]) }
    let n = Int(offsets[numExperts])
    var cursor = offsets.map { Int($0) }
    var tokens = [Int32](repeating: 0, count: n)
    var entryWeights = [Float](repeating: 0, count: n)
    var slots = [Int32](repeating: 0, count: n)
    // Visiting tokens in order makes each expert's list ascending.
    for t in 0..<numTokens {
      for rank in 0..<topK {
        let expert = selectedExperts[t * topK + rank]
        if expert == -1 { continue }
        let at = cursor[Int(expert)]
        cursor[Int(expert)] += 1
        tokens[at] = Int32(t)
        entryWeights[at] = routingWeights[t * topK + rank]
        slots[at] = Int32(t * topK + rank)
      }
    }
    try self.init(
      numTokens: numTokens, numExperts: numExperts, topK: topK, expertOffsets: offsets,
      tokenIndices: tokens, weights: entryWeights, outputSlots: slots)
  }

  /// Wraps prepared arrays and validates every rule above.
  public init(
    numTokens: Int, numExperts: Int, topK: Int, expertOffsets: [Int32],
    tokenIndices: [Int32], weights: [Float], outputSlots: [Int32]
  ) throws(FormatError) {
    self.numTokens = numTokens
    self.numExperts = numExperts
    self.topK = topK
    self.expertOffsets = expertOffsets
    self.tokenIndices = tokenIndices
    self.weights = weights
    self.outputSlots = outputSlots
    try validate()
  }

  /// Number of routed entries n.
  public var entryCount: Int { tokenIndices.count }

  /// The entries of expert `expert`.
  public func entries(ofExpert expert: Int) -> Range<Int> {
    Int(expertOffsets[expert])..<Int(expertOffsets[expert + 1])
  }

  /// Checks every rule of the layout and throws the first violation.
  public func validate() throws(FormatError) {
    guard numTokens >= 0, numExperts >= 1, topK >= 1, topK <= numExperts else {
      throw .badRouting("T=\(numTokens), E=\(numExperts), topK=\(topK)")
    }
    let n = tokenIndices.count
    guard expertOffsets.count == numExperts + 1 else {
      throw .shapeMismatch("expertOffsets has \(expertOffsets.count) entries, expected E+1 = \(numExperts + 1)")
    }
    guard weights.count == n, outputSlots.count == n else {
      throw .shapeMismatch(
        "tokenIndices, weights and outputSlots must have one length, got \(n), \(weights.count), \(outputSlots.count)")
    }
    guard n <= numTokens * topK else {
      throw .badRouting("\(n) entries exceed T * topK = \(numTokens * topK)")
    }
    guard expertOffsets[0] == 0, Int(expertOffsets[numExperts]) == n else {
      throw .badRouting("expertOffsets must start at 0 and end at \(n), got \(expertOffsets[0]) and \(expertOffsets[numExperts])")
    }
    var slotSeen = [Bool](repeating: false, count: numTokens * topK)
    for e in 0..<numExperts {
      guard expertOffsets[e] <= expertOffsets[e + 1] else {
        throw .badRouting("expertOffsets decrease at expert \(e): \(expertOffsets[e]) > \(expertOffsets[e + 1])")
      }
      var previous: Int32 = -1
      for i in entries(ofExpert: e) {
        let token = tokenIndices[i]
        guard token >= 0, Int(token) < numTokens else {
          throw .badRouting("entry \(i) of expert \(e) reads token \(token), but T=\(numTokens)")
        }
        guard token > previous else {
          throw .badRouting("expert \(e): token rows must be strictly ascending, got \(token) after \(previous) at entry \(i)")
        }
        previous = token
        let slot = outputSlots[i]
        guard slot >= 0, Int(slot) < numTokens * topK, Int(slot) / topK == Int(token) else {
          throw .badRouting("entry \(i) of expert \(e): slot \(slot) is not token \(token) * topK + rank")
        }
        guard !slotSeen[Int(slot)] else {
          throw .badRouting("entry \(i) of expert \(e): slot \(slot) used twice")
        }
        slotSeen[Int(slot)] = true
        guard weights[i].isFinite else {
          throw .nonFinite("routing weight \(weights[i]) at entry \(i) (expert \(e), token \(token))")
        }
      }
    }
  }

  /// The block-padded view: each expert's entries rounded up to a multiple
  /// of `blockRows`, so a kernel can launch one tile per block.
  public func padded(toMultipleOf blockRows: Int) throws(FormatError) -> PaddedRoutingPlan {
    guard blockRows >= 1 else { throw .badRouting("blockRows must be >= 1, got \(blockRows)") }
    var offsets = [Int32](repeating: 0, count: numExperts + 1)
    var tokens: [Int32] = []
    var entryWeights: [Float] = []
    var slots: [Int32] = []
    var blockExperts: [Int32] = []
    for e in 0..<numExperts {
      let range = entries(ofExpert: e)
      let padded = (range.count + blockRows - 1) / blockRows * blockRows
      tokens += tokenIndices[range]
      entryWeights += weights[range]
      slots += outputSlots[range]
      let padding = padded - range.count
      tokens += repeatElement(PaddedRoutingPlan.paddingToken, count: padding)
      entryWeights += repeatElement(0, count: padding)
      slots += repeatElement(PaddedRoutingPlan.paddingToken, count: padding)
      blockExperts += repeatElement(Int32(e), count: padded / blockRows)
      offsets[e + 1] = offsets[e] + Int32(padded)
    }
    return PaddedRoutingPlan(
      blockRows: blockRows, numTokens: numTokens, numExperts: numExperts, topK: topK,
      expertOffsets: offsets, tokenIndices: tokens, weights: entryWeights, outputSlots: slots,
      blockExperts: blockExperts)
  }
}

/// A routing plan whose expert segments are padded to whole blocks.
///
/// Same arrays as `RoutingPlan`, except that each expert's segment length is
/// a multiple of `blockRows`; padding entries have token and slot
/// `paddingToken` (-1) and weight 0, always after the real entries of their
/// expert, and must be neither read nor written. `blockExperts[b]` is the
/// expert of block `b` (entries `b * blockRows ..< (b + 1) * blockRows`).
/// Experts with no tokens own no block.
public struct PaddedRoutingPlan: Sendable, Equatable {
  /// Marks a padding entry in `tokenIndices` and `outputSlots`.
  public static let paddingToken: Int32 = -1
  /// Block size the segments are padded to.
  public let blockRows: Int
  public let numTokens: Int
  public let numExperts: Int
  public let topK: Int
  /// [E + 1] padded offsets, each a multiple of `blockRows`.
  public let expertOffsets: [Int32]
  /// [padded n] token rows, `paddingToken` for padding.
  public let tokenIndices: [Int32]
  /// [padded n] routing weights, 0 for padding.
  public let weights: [Float]
  /// [padded n] output slots, `paddingToken` for padding.
  public let outputSlots: [Int32]
  /// [padded n / blockRows] expert of each block.
  public let blockExperts: [Int32]
}

extension RoutingPlan {
  /// How far `other`'s weights are from this plan's when both route the same
  /// entries: nil unless T, E, topK, `expertOffsets`, `tokenIndices` and
  /// `outputSlots` are equal; else the largest relative weight difference
  /// `|a - b| / max(|a|, |b|)` (0 where both are 0).
  ///
  /// For comparing plans built by engines whose arithmetic differs in the
  /// last bits (the GPU router against the CPU's).
  public func weightDifference(to other: RoutingPlan) -> Float? {
    guard numTokens == other.numTokens, numExperts == other.numExperts, topK == other.topK,
      expertOffsets == other.expertOffsets, tokenIndices == other.tokenIndices, outputSlots == other.outputSlots
    else { return nil }
    var largest: Float = 0
    for (a, b) in zip(weights, other.weights) where a != b {
      let difference = abs(a - b) / max(abs(a), abs(b))
      if !(difference <= largest) { largest = difference }  // NaN stays NaN
    }
    return largest
  }
}
