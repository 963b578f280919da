/// Brain floating point: 1 sign bit, 8 exponent bits, 7 mantissa bits.
///
/// The upper half of an IEEE-754 binary32. Conversion from `Float` rounds to
/// nearest, ties to even, and keeps NaN a (quiet) NaN; conversion to `Float`
/// is exact.
public struct BFloat16: Sendable, Hashable, BitwiseCopyable, CustomStringConvertible {
  /// The raw 16 bits.
  public var bitPattern: UInt16

  /// Creates a value from its raw 16 bits.
  @inlinable
  public init(bitPattern: UInt16) { self.bitPattern = bitPattern }

  /// Rounds `value` to the nearest bf16 (ties to even); NaN stays NaN.
  /// Inlinable (as the conversions below) so that loops over arrays
  /// specialize and vectorize in the calling module.
  @inlinable
  public init(_ value: Float) {
    let bits = value.bitPattern
    if value.isNaN {
      // Keep the sign and force a quiet-NaN mantissa bit so truncation
      // cannot turn the NaN into an infinity.
      bitPattern = UInt16(truncatingIfNeeded: bits >> 16) | 0x0040
      return
    }
    let lsb = (bits >> 16) & 1
    let rounded = bits &+ 0x7FFF &+ lsb
    bitPattern = UInt16(truncatingIfNeeded: rounded >> 16)
  }

  /// The exact `Float` value.
  @inlinable
  public var floatValue: Float { Float(bitPattern: UInt32(bitPattern) << 16) }

  public var description: String { floatValue.description }
}
