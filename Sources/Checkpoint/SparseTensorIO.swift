#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import SamoyedsFormat

/// A sparse matrix of any storage type, as read from a file.
public enum AnySparseMatrix: Sendable {
  case bf16(SparseMatrix<BFloat16>)
  case fp16(SparseMatrix<Float16>)
  case f32(SparseMatrix<Float>)

  public var dtype: DType {
    switch self {
    case .bf16: .bf16
    case .fp16: .fp16
    case .f32: .f32
    }
  }

  /// The values widened to f32 (exact).
  public var asFloat: SparseMatrix<Float> {
    switch self {
    case .bf16(let s): s.converted(to: Float.self)
    case .fp16(let s): s.converted(to: Float.self)
    case .f32(let s): s
    }
  }
}

/// How a sparse weight is stored in a safetensors file.
///
/// A weight named `W` becomes three tensors and one metadata entry:
/// - `W.values`      BF16/F16/F32 [mc, k/2]
/// - `W.metadata`    U32 [mc, k/32]
/// - `W.row_select`  U8 [mc, k/V]
/// - `__metadata__["samoyeds.sparse.W"]` = `{"pattern":"N:M:V","rows":m,"columns":k}`
///
/// The three arrays are the canonical layout of `SparseMatrix` byte for
/// byte (little-endian). See docs/FORMAT.md.
public enum SparseTensorIO {
  /// Prefix of the metadata key describing each sparse weight.
  public static let metadataPrefix = "samoyeds.sparse."
  /// Suffixes of the three tensors.
  public static let valuesSuffix = ".values"
  public static let metadataSuffix = ".metadata"
  public static let rowSelectSuffix = ".row_select"

  struct Descriptor: Codable, Equatable {
    var pattern: String
    var rows: Int
    var columns: Int
  }

  /// Adds sparse weight `name` to `writer`.
  public static func add<S: SparseScalar & BitwiseCopyable>(
    _ matrix: SparseMatrix<S>, named name: String, to writer: inout SafeTensorsWriter
  ) throws(CheckpointError) {
    let valueType: TensorDType =
      switch S.dtype {
      case .bf16: .bf16
      case .fp16: .f16
      case .f32: .f32
      }
    let mc = matrix.condensedRows
    try writer.add(
      name + valuesSuffix, dtype: valueType, shape: [mc, matrix.valuesPerRow], elements: matrix.values)
    try writer.add(
      name + metadataSuffix, dtype: .u32, shape: [mc, matrix.metadataWordsPerRow], elements: matrix.metadata)
    try writer.add(
      name + rowSelectSuffix, dtype: .u8, shape: [mc, matrix.vectorsPerRow], elements: matrix.rowSelection)
    let descriptor = Descriptor(
      pattern: matrix.pattern.description, rows: matrix.rows, columns: matrix.columns)
    do {
      let json = try JSONEncoder().encode(descriptor)
      writer.metadata[metadataPrefix + name] = String(decoding: json, as: UTF8.self)
    } catch {
      throw .malformed("cannot encode descriptor of '\(name)': \(error)")
    }
  }

  /// Names of the sparse weights a file holds.
  public static func sparseNames(in file: SafeTensorsFile) -> [String] {
    file.metadata.keys.filter { $0.hasPrefix(metadataPrefix) }
      .map { String($0.dropFirst(metadataPrefix.count)) }.sorted()
  }

  /// Reads sparse weight `name` and validates every invariant of the format.
  public static func read(_ name: String, from file: SafeTensorsFile) throws(CheckpointError) -> AnySparseMatrix {
    guard let text = file.metadata[metadataPrefix + name] else {
      throw .missingTensor("\(file.path): no sparse weight '\(name)' (no \(metadataPrefix + name) metadata)")
    }
    let descriptor: Descriptor
    do {
      descriptor = try JSONDecoder().decode(Descriptor.self, from: Data(text.utf8))
    } catch {
      throw .malformed("\(file.path): descriptor of '\(name)' is not {pattern, rows, columns}: \(text)")
    }
    do {
      let pattern = try SparsePattern(parsing: descriptor.pattern)
      try pattern.checkApplicable(rows: descriptor.rows, columns: descriptor.columns)
      let mc = descriptor.rows / pattern.groupRows * pattern.keptRows
      let expected: [(String, [Int])] = [
        (valuesSuffix, [mc, descriptor.columns / 2]),
        (metadataSuffix, [mc, descriptor.columns / 32]),
        (rowSelectSuffix, [mc, descriptor.columns / pattern.vectorLength]),
      ]
      for (suffix, shape) in expected {
        let info = try file.info(name + suffix)
        guard info.shape == shape else {
          throw CheckpointError.shapeMismatch(
            "\(file.path): tensor '\(name + suffix)' is \(info.shape), the descriptor (\(descriptor.rows)x\(descriptor.columns), \(pattern)) implies \(shape)"
          )
        }
      }
      let metadata: [UInt32] = try file.array(name + metadataSuffix, as: .u32)
      let rowSelection: [UInt8] = try file.array(name + rowSelectSuffix, as: .u8)
      let valueType = try file.info(name + valuesSuffix).dtype
      switch valueType {
      case .bf16:
        let raw: [UInt16] = try file.array(name + valuesSuffix, as: .bf16)
        return .bf16(
          try SparseMatrix(
            pattern: pattern, rows: descriptor.rows, columns: descriptor.columns,
            values: raw.map { BFloat16(bitPattern: $0) }, metadata: metadata, rowSelection: rowSelection))
      case .f16:
        let values: [Float16] = try file.array(name + valuesSuffix, as: .f16)
        return .fp16(
          try SparseMatrix(
            pattern: pattern, rows: descriptor.rows, columns: descriptor.columns,
            values: values, metadata: metadata, rowSelection: rowSelection))
      case .f32:
        let values: [Float] = try file.array(name + valuesSuffix, as: .f32)
        return .f32(
          try SparseMatrix(
            pattern: pattern, rows: descriptor.rows, columns: descriptor.columns,
            values: values, metadata: metadata, rowSelection: rowSelection))
      default:
        throw CheckpointError.unsupportedDType(
          "\(file.path): values of '\(name)' are \(valueType.rawValue); expected BF16, F16 or F32")
      }
    } catch let error as CheckpointError {
      throw error
    } catch let error as FormatError {
      throw .format("\(file.path): '\(name)': \(error)")
    } catch {
      throw .malformed("\(file.path): '\(name)': \(error)")
    }
  }

  /// Writes one sparse weight to its own file (atomically).
  public static func write<S: SparseScalar & BitwiseCopyable>(
    _ matrix: SparseMatrix<S>, named name: String, to path: String
  ) throws(CheckpointError) {
    var writer = SafeTensorsWriter()
    try add(matrix, named: name, to: &writer)
    try writer.write(to: path)
  }
}
