import SamoyedsFormat

/// Router inputs whose logits `x · Rᵀ` are exact in f32 whatever the order
/// of the sums, so that two engines summing in different orders (the CPU's
/// SIMD dot products, the GPU router's tiles and k splits) get the same bits.
///
/// Hidden states are snapped to multiples of 1/8 in [-4, 4], router weights
/// to multiples of 1/64 in [-1, 1]. Every product is then a multiple of 2⁻⁹
/// of magnitude at most 4, so every partial sum of up to `maxHidden` = 8192
/// products is an integer multiple of 2⁻⁹ of magnitude at most 2¹⁵, i.e.
/// an integer up to 2²⁴ times 2⁻⁹: exact in f32. bf16 and fp16 hold the
/// snapped hidden states exactly (at most 6 significant bits).
///
/// Why this makes routing comparisons sound: with identical logits, two
/// distinct logits differ by at least 2⁻⁹, so their softmax probabilities
/// differ by a factor of at least e^(2⁻⁹) ≈ 1.002 — far more than the few
/// ulps by which two `exp` implementations or two orders of the softmax sum
/// differ — and equal logits give equal probabilities within each engine,
/// so both break the tie toward the lower expert. Both engines therefore
/// choose the same experts in the same ranks (as long as the chosen
/// probabilities are not subnormal: logits within about 85 of the token's
/// largest), and their weights differ by a few ulps.
public enum ExactLogits {
  /// Longest dot product that stays exact.
  public static let maxHidden = 8192
  /// Grid and bound of the hidden states.
  public static let hiddenStep: Float = 1.0 / 8
  public static let hiddenBound: Float = 4
  /// Grid and bound of the router weights.
  public static let routerStep: Float = 1.0 / 64
  public static let routerBound: Float = 1

  /// `x` snapped to multiples of 1/8, clamped to [-4, 4].
  public static func hiddenStates(_ x: Matrix<Float>) -> Matrix<Float> {
    x.map { snap($0, step: hiddenStep, bound: hiddenBound) }
  }

  /// `router` snapped to multiples of 1/64, clamped to [-1, 1].
  public static func router(_ router: Matrix<Float>) -> Matrix<Float> {
    router.map { snap($0, step: routerStep, bound: routerBound) }
  }

  static func snap(_ value: Float, step: Float, bound: Float) -> Float {
    min(max((value / step).rounded() * step, -bound), bound)
  }
}
