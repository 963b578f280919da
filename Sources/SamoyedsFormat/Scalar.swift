/// Element types the format stores: bf16, fp16 and f32.
public enum DType: String, Sendable, CaseIterable, Codable, CustomStringConvertible {
  case bf16
  case fp16
  case f32

  /// Bytes per element.
  public var byteSize: Int {
    switch self {
    case .bf16, .fp16: 2
    case .f32: 4
    }
  }

  /// The dtype name used in safetensors headers ("BF16", "F16", "F32").
  public var safetensorsName: String {
    switch self {
    case .bf16: "BF16"
    case .fp16: "F16"
    case .f32: "F32"
    }
  }

  /// Parses user spellings: "bf16"/"bfloat16", "fp16"/"f16"/"float16"/"half",
  /// "f32"/"fp32"/"float32"/"float".
  public init?(parsing text: String) {
    switch text.lowercased() {
    case "bf16", "bfloat16": self = .bf16
    case "fp16", "f16", "float16", "half": self = .fp16
    case "f32", "fp32", "float32", "float": self = .f32
    default: return nil
    }
  }

  public var description: String { rawValue }
}

/// A scalar the format can store; every one converts to and from `Float`.
///
/// Arithmetic in this package always happens in `Float` (f32 accumulation);
/// the storage types only differ in how values are rounded when stored.
public protocol SparseScalar: Sendable, Equatable {
  /// The element type tag of this scalar.
  static var dtype: DType { get }
  /// Rounds a `Float` to this type (round to nearest even).
  init(_ value: Float)
  /// The value as a `Float` (exact for all three types).
  var floatValue: Float { get }
  /// The additive identity.
  static var zero: Self { get }
}

extension Float: SparseScalar {
  public static var dtype: DType { .f32 }
  public var floatValue: Float { self }
}

extension BFloat16: SparseScalar {
  public static var dtype: DType { .bf16 }
  public static var zero: BFloat16 { BFloat16(bitPattern: 0) }
}

#if !((os(macOS) || targetEnvironment(macCatalyst)) && arch(x86_64))
extension Float16: SparseScalar {
  public static var dtype: DType { .fp16 }
  public var floatValue: Float { Float(self) }
}
#endif
