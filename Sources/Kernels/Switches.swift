#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The `SAMOYEDS_*` tuning and measurement switches read from the
/// environment once, when a launch first needs them.
enum Switches {
  /// The integer value of `name`, or nil when it is unset, not an integer
  /// or below `minimum` (then the caller's default applies).
  static func integer(_ name: String, atLeast minimum: Int) -> Int? {
    guard let text = ProcessInfo.processInfo.environment[name], let value = Int(text), value >= minimum else {
      return nil
    }
    return value
  }
}
