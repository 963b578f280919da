import RealModule

/// A small, fast, seedable random number generator (SplitMix64), so every
/// random test input and demo weight can be reproduced from its seed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
  private var state: UInt64

  /// Creates a generator; equal seeds give equal sequences.
  public init(seed: UInt64) { state = seed }

  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// A standard normal sample (Box-Muller).
  public mutating func nextNormal() -> Float {
    let u1 = Double.random(in: Double.ulpOfOne..<1, using: &self)
    let u2 = Double.random(in: 0..<1, using: &self)
    let radius = (-2 * Double.log(u1)).squareRoot()
    return Float(radius * Double.cos(2 * Double.pi * u2))
  }

  /// A [rows, columns] matrix of normal samples times `scale`.
  public mutating func normalMatrix(rows: Int, columns: Int, scale: Float = 1) -> Matrix<Float> {
    var storage = [Float](repeating: 0, count: rows * columns)
    for i in storage.indices { storage[i] = nextNormal() * scale }
    return Matrix(unchecked: rows, columns, storage)
  }
}

