/// Number formatting without Foundation (keeps the binary small).
enum Fmt {
  /// Fixed-point with `digits` decimals.
  static func fixed(_ value: Double, _ digits: Int = 2) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (abs(value) * scale).rounded()
    let whole = Int(rounded / scale)
    let fraction = Int(rounded - Double(whole) * scale)
    let sign = value < 0 && rounded != 0 ? "-" : ""
    if digits == 0 { return "\(sign)\(whole)" }
    var fractionText = String(fraction)
    while fractionText.count < digits { fractionText = "0" + fractionText }
    return "\(sign)\(whole).\(fractionText)"
  }

  /// Scientific with one leading digit and `digits` decimals: 3.14e-05.
  static func scientific(_ value: Double, _ digits: Int = 2) -> String {
    guard value.isFinite else { return "\(value)" }
    if value == 0 { return "0" }
    var exponent = 0
    var mantissa = abs(value)
    while mantissa >= 10 { mantissa /= 10; exponent += 1 }
    while mantissa < 1 { mantissa *= 10; exponent -= 1 }
    var text = fixed(mantissa, digits)
    if text.hasPrefix("10") {  // rounding carried into a new digit
      text = fixed(mantissa / 10, digits)
      exponent += 1
    }
    let sign = value < 0 ? "-" : ""
    let exponentText = exponent < 0 ? "-" + pad(-exponent) : "+" + pad(exponent)
    return "\(sign)\(text)e\(exponentText)"
  }

  /// Bytes as MiB / GiB.
  static func bytes(_ count: Int) -> String {
    let mib = Double(count) / 1_048_576
    return mib >= 1024 ? fixed(mib / 1024, 2) + " GiB" : fixed(mib, 2) + " MiB"
  }

  /// Milliseconds from a Duration.
  static func milliseconds(_ duration: Duration) -> Double {
    let (seconds, attoseconds) = duration.components
    return Double(seconds) * 1000 + Double(attoseconds) / 1e15
  }

  private static func pad(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }

  /// Left-pads `text` to `width`.
  static func right(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
  }

  /// Right-pads `text` to `width`.
  static func left(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
  }
}

/// Median wall time of `body` over `repetitions` runs after `warmup` runs.
func medianTime(warmup: Int = 2, repetitions: Int = 7, _ body: () throws -> Void) rethrows -> Double {
  let clock = ContinuousClock()
  for _ in 0..<warmup { try body() }
  var times: [Double] = []
  for _ in 0..<max(1, repetitions) {
    let start = clock.now
    try body()
    times.append(Fmt.milliseconds(clock.now - start))
  }
  times.sort()
  return times[times.count / 2]
}
