import Testing

@testable import SamoyedsFormat

@Suite struct RoutingPlanTests {
  @Test func workedExampleOfTheDocs() throws {
    // T = 3, E = 3, top-2: token 0 -> (2, 0), token 1 -> (0, 1), token 2 -> (2, 1).
    let plan = try RoutingPlan(
      numTokens: 3, numExperts: 3, topK: 2, selectedExperts: [2, 0, 0, 1, 2, 1],
      weights: [0.6, 0.4, 0.7, 0.3, 0.9, 0.1])
    #expect(plan.expertOffsets == [0, 2, 4, 6])
    #expect(plan.tokenIndices == [0, 1, 1, 2, 0, 2])
    #expect(plan.outputSlots == [1, 2, 3, 5, 0, 4])
    #expect(plan.weights == [0.4, 0.7, 0.3, 0.1, 0.6, 0.9])
    let padded = try plan.padded(toMultipleOf: 4)
    #expect(padded.expertOffsets == [0, 4, 8, 12])
    #expect(padded.tokenIndices == [0, 1, -1, -1, 1, 2, -1, -1, 0, 2, -1, -1])
    #expect(padded.blockExperts == [0, 1, 2])
  }

  @Test func randomPlansSatisfyTheRules() throws {
    for seed in UInt64(0)..<20 {
      var rng = SeededGenerator(seed: seed)
      let experts = Int.random(in: 1...9, using: &rng)
      let k = Int.random(in: 1...experts, using: &rng)
      let tokens = Int.random(in: 0...40, using: &rng)
      var chosen: [Int32] = []
      var weights: [Float] = []
      for _ in 0..<tokens {
        let picks = Array((0..<experts).shuffled(using: &rng).prefix(k))
        for p in picks {
          // Drop about one in eight assignments, as a capacity limit would.
          chosen.append(Int.random(in: 0..<8, using: &rng) == 0 ? -1 : Int32(p))
          weights.append(Float.random(in: 0..<1, using: &rng))
        }
      }
      let plan = try RoutingPlan(
        numTokens: tokens, numExperts: experts, topK: k, selectedExperts: chosen, weights: weights)
      try plan.validate()
      #expect(plan.entryCount == chosen.filter { $0 >= 0 }.count, "seed \(seed)")
      for i in 0..<plan.entryCount {
        let slot = Int(plan.outputSlots[i])
        #expect(chosen[slot] >= 0 && weights[slot] == plan.weights[i], "seed \(seed)")
      }
      for blockRows in [1, 4, 16] {
        let padded = try plan.padded(toMultipleOf: blockRows)
        #expect(padded.tokenIndices.count % blockRows == 0)
        #expect(padded.blockExperts.count * blockRows == padded.tokenIndices.count)
        for e in 0..<experts {
          let start = Int(padded.expertOffsets[e])
          let end = Int(padded.expertOffsets[e + 1])
          #expect((end - start) % blockRows == 0)
          let real = plan.entries(ofExpert: e)
          #expect(Array(padded.tokenIndices[start..<(start + real.count)]) == Array(plan.tokenIndices[real]))
          #expect(padded.tokenIndices[(start + real.count)..<end].allSatisfy { $0 == PaddedRoutingPlan.paddingToken })
          #expect(padded.weights[(start + real.count)..<end].allSatisfy { $0 == 0 })
          for b in (start / blockRows)..<(end / blockRows) { #expect(padded.blockExperts[b] == Int32(e)) }
        }
      }
    }
  }

  @Test func expertsWithNoTokensAndAllOnOne() throws {
    let plan = try RoutingPlan(
      numTokens: 5, numExperts: 4, topK: 1, selectedExperts: [2, 2, 2, 2, 2], weights: [1, 1, 1, 1, 1])
    #expect(plan.expertOffsets == [0, 0, 0, 5, 5])
    #expect(plan.entries(ofExpert: 0).isEmpty)
    #expect(plan.tokenIndices == [0, 1, 2, 3, 4])
    let padded = try plan.padded(toMultipleOf: 4)
    #expect(padded.expertOffsets == [0, 0, 0, 8, 8])
    #expect(padded.blockExperts == [2, 2])
    let empty = try RoutingPlan(numTokens: 0, numExperts: 3, topK: 2, selectedExperts: [], weights: [])
    #expect(empty.entryCount == 0 && empty.expertOffsets == [0, 0, 0, 0])
  }

  @Test func violationsAreNamed() throws {
    #expect(throws: FormatError.self) {
      try RoutingPlan(numTokens: 1, numExperts: 2, topK: 1, selectedExperts: [5], weights: [1])
    }
    #expect(throws: FormatError.self) {
      try RoutingPlan(numTokens: 2, numExperts: 2, topK: 1, selectedExperts: [0], weights: [1])
    }
    #expect(throws: FormatError.self) {
      try RoutingPlan(numTokens: 1, numExperts: 2, topK: 3, selectedExperts: [0, 1, 0], weights: [1, 1, 1])
    }
    // A token twice in one expert (descending rows).
    #expect {
      try RoutingPlan(
        numTokens: 2, numExperts: 2, topK: 1, expertOffsets: [0, 2, 2], tokenIndices: [1, 0],
        weights: [1, 1], outputSlots: [1, 0])
    } throws: { error in
      guard case FormatError.badRouting(let text) = error else { return false }
      return text.contains("strictly ascending")
    }
    // A slot that does not belong to its token.
    #expect(throws: FormatError.self) {
      try RoutingPlan(
        numTokens: 2, numExperts: 1, topK: 1, expertOffsets: [0, 2], tokenIndices: [0, 1],
        weights: [1, 1], outputSlots: [1, 0])
    }
    // NaN weight.
    #expect(throws: FormatError.self) {
      try RoutingPlan(numTokens: 1, numExperts: 2, topK: 1, selectedExperts: [1], weights: [.nan])
    }
    #expect(throws: FormatError.self) {
      try RoutingPlan(numTokens: 1, numExperts: 2, topK: 1, selectedExperts: [1], weights: [1]).padded(toMultipleOf: 0)
    }
  }
}

/// `weightDifference`: entries must match exactly, weights up to a relative tolerance.
@Suite struct PlanComparison {
  func plan(_ experts: [Int32], _ weights: [Float]) throws -> RoutingPlan {
    try RoutingPlan(numTokens: 3, numExperts: 3, topK: 2, selectedExperts: experts, weights: weights)
  }

  @Test func sameEntriesGiveTheLargestRelativeWeightDifference() throws {
    let a = try plan([2, 0, 0, 1, 2, 1], [0.6, 0.4, 0.7, 0.3, 0.5, 0.5])
    #expect(a.weightDifference(to: a) == 0)
    let b = try plan([2, 0, 0, 1, 2, 1], [0.6, 0.4, 0.7, 0.3, 0.5, 0.5 * (1 + 1e-6)])
    let difference = try #require(a.weightDifference(to: b))
    #expect(difference > 0.5e-6 && difference < 2e-6)
    // Zero weights on both sides (a capacity drop is absent, but a 0 weight may occur) compare equal.
    let zeros = try plan([2, 0, 0, 1, 2, 1], [0, 0, 0, 0, 0, 0])
    #expect(zeros.weightDifference(to: zeros) == 0)
  }

  @Test func differentEntriesGiveNil() throws {
    let a = try plan([2, 0, 0, 1, 2, 1], [0.6, 0.4, 0.7, 0.3, 0.5, 0.5])
    // Token 1's ranks swapped: same experts and tokens, different slots.
    #expect(a.weightDifference(to: try plan([2, 0, 1, 0, 2, 1], [0.6, 0.4, 0.7, 0.3, 0.5, 0.5])) == nil)
    // A dropped choice.
    #expect(a.weightDifference(to: try plan([2, 0, 0, -1, 2, 1], [0.6, 0.4, 0.7, 0, 0.5, 0.5])) == nil)
    // Another expert.
    #expect(a.weightDifference(to: try plan([1, 0, 0, 1, 2, 1], [0.6, 0.4, 0.7, 0.3, 0.5, 0.5])) == nil)
  }
}
