#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Element types a safetensors tensor can have that Samoyeds reads.
public enum TensorDType: String, Sendable, CaseIterable {
  case bf16 = "BF16"
  case f16 = "F16"
  case f32 = "F32"
  case u8 = "U8"
  case i32 = "I32"
  case u32 = "U32"
  case i64 = "I64"

  public var byteSize: Int {
    switch self {
    case .u8: 1
    case .bf16, .f16: 2
    case .f32, .i32, .u32: 4
    case .i64: 8
    }
  }
}

/// One tensor's entry in a safetensors header.
public struct TensorInfo: Sendable, Equatable {
  public var dtype: TensorDType
  public var shape: [Int]
  /// Byte range inside the data section (after the header).
  public var dataRange: Range<Int>

  public var elementCount: Int { shape.reduce(1, *) }
}

/// A safetensors file read into memory and fully checked:
/// `[u64 little-endian header length][JSON header][data]`.
///
/// The header maps tensor names to `{dtype, shape, data_offsets}` plus an
/// optional `__metadata__` string map. Every offset is checked against the
/// file, tensors must not overlap and each byte range must match its shape
/// and dtype, before any tensor is handed out.
public struct SafeTensorsFile: Sendable {
  /// Largest header accepted (100 MB, as the reference implementation).
  public static let maxHeaderBytes = 100_000_000

  public let path: String
  public let tensors: [String: TensorInfo]
  public let metadata: [String: String]
  private let file: FileBytes
  private let dataStart: Int

  /// Maps and validates `path` (nothing but the header is read yet).
  public init(path: String) throws(CheckpointError) {
    try self.init(bytes: try FileBytes(mapping: path), path: path)
  }

  /// Validates an in-memory file; `path` only names it in errors.
  public init(data: Data, path: String) throws(CheckpointError) {
    try self.init(bytes: FileBytes(copying: data), path: path)
  }

  init(bytes file: FileBytes, path: String) throws(CheckpointError) {
    self.path = path
    guard file.count >= 8 else {
      throw .malformed("\(path): \(file.count) bytes, shorter than the 8-byte header length")
    }
    var headerLength: UInt64 = 0
    for i in 0..<8 { headerLength |= UInt64(file.byte(i)) << (8 * UInt64(i)) }
    guard headerLength <= UInt64(Self.maxHeaderBytes) else {
      throw .malformed("\(path): header length \(headerLength) exceeds the \(Self.maxHeaderBytes)-byte limit")
    }
    guard Int(headerLength) <= file.count - 8 else {
      throw .malformed("\(path): header length \(headerLength) runs past the end of the \(file.count)-byte file (truncated?)")
    }
    let headerBytes = file.withBytes(8..<(8 + Int(headerLength))) { Data($0) }
    let header: RawHeader
    do {
      header = try JSONDecoder().decode(RawHeader.self, from: headerBytes)
    } catch {
      throw .malformed("\(path): header is not a JSON object of tensor entries (\(error))")
    }
    let dataStart = 8 + Int(headerLength)
    let dataSize = file.count - dataStart
    var tensors: [String: TensorInfo] = [:]
    for (name, entry) in header.tensors {
      guard let dtype = TensorDType(rawValue: entry.dtype) else {
        throw .unsupportedDType(
          "\(path): tensor '\(name)' has dtype \(entry.dtype); supported: \(TensorDType.allCases.map(\.rawValue).joined(separator: ", "))"
        )
      }
      guard entry.dataOffsets.count == 2 else {
        throw .malformed("\(path): tensor '\(name)' data_offsets must be [begin, end]")
      }
      let begin = entry.dataOffsets[0]
      let end = entry.dataOffsets[1]
      guard begin >= 0, begin <= end, end <= dataSize else {
        throw .malformed(
          "\(path): tensor '\(name)' data_offsets [\(begin), \(end)] lie outside the \(dataSize)-byte data section")
      }
      var count = 1
      for dimension in entry.shape {
        guard dimension >= 0 else { throw .malformed("\(path): tensor '\(name)' has negative dimension \(dimension)") }
        let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
        guard !overflow else { throw .malformed("\(path): tensor '\(name)' shape \(entry.shape) overflows") }
        count = product
      }
      let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
      guard !overflow else { throw .malformed("\(path): tensor '\(name)' shape \(entry.shape) overflows") }
      guard bytes == end - begin else {
        throw .malformed(
          "\(path): tensor '\(name)' of shape \(entry.shape) \(dtype.rawValue) needs \(bytes) bytes, data_offsets give \(end - begin)"
        )
      }
      tensors[name] = TensorInfo(dtype: dtype, shape: entry.shape, dataRange: begin..<end)
    }
    let ordered = tensors.sorted { $0.value.dataRange.lowerBound < $1.value.dataRange.lowerBound }
    for (a, b) in zip(ordered, ordered.dropFirst()) where a.value.dataRange.upperBound > b.value.dataRange.lowerBound {
      throw .malformed("\(path): tensors '\(a.key)' and '\(b.key)' overlap")
    }
    self.tensors = tensors
    self.metadata = header.metadata
    self.file = file
    self.dataStart = dataStart
  }

  /// The info of tensor `name`, or an error naming the file and tensor.
  public func info(_ name: String) throws(CheckpointError) -> TensorInfo {
    guard let info = tensors[name] else { throw .missingTensor("\(path): no tensor '\(name)'") }
    return info
  }

  /// Calls `body` with the raw little-endian bytes of tensor `name`
  /// (straight from the mapping; valid only inside `body`).
  public func withBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
    let info = try info(name)
    return try file.withBytes(
      (dataStart + info.dataRange.lowerBound)..<(dataStart + info.dataRange.upperBound), body)
  }

  /// Drops tensor `name`'s mapped pages from memory once it has been read
  /// (see `FileBytes.release`).
  public func releasePages(_ name: String) {
    guard let info = tensors[name] else { return }
    file.release((dataStart + info.dataRange.lowerBound)..<(dataStart + info.dataRange.upperBound))
  }

  /// Tensor `name` as an array of `T`, after checking its dtype is `dtype`.
  public func array<T: BitwiseCopyable>(_ name: String, as dtype: TensorDType, _: T.Type = T.self)
    throws(CheckpointError) -> [T]
  {
    let info = try info(name)
    guard info.dtype == dtype else {
      throw .unsupportedDType("\(path): tensor '\(name)' is \(info.dtype.rawValue), expected \(dtype.rawValue)")
    }
    guard MemoryLayout<T>.stride == dtype.byteSize else {
      throw .unsupportedDType("\(path): tensor '\(name)' read as \(MemoryLayout<T>.stride)-byte elements")
    }
    let range = (dataStart + info.dataRange.lowerBound)..<(dataStart + info.dataRange.upperBound)
    return file.withBytes(range) { source in
      [T](unsafeUninitializedCapacity: info.elementCount) { buffer, initialized in
        if let base = source.baseAddress { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(start: base, count: source.count)) }
        initialized = info.elementCount
      }
    }
  }
}

/// Builds a safetensors file in memory and writes it atomically.
public struct SafeTensorsWriter {
  private var entries: [(name: String, dtype: TensorDType, shape: [Int], bytes: Data)] = []
  /// The `__metadata__` string map.
  public var metadata: [String: String] = [:]

  public init() {}

  /// Adds a tensor from an array of `T` (its byte size must be `dtype`'s).
  public mutating func add<T: BitwiseCopyable>(
    _ name: String, dtype: TensorDType, shape: [Int], elements: [T]
  ) throws(CheckpointError) {
    guard MemoryLayout<T>.stride == dtype.byteSize else {
      throw .unsupportedDType("tensor '\(name)': element size \(MemoryLayout<T>.stride) does not match \(dtype.rawValue)")
    }
    guard shape.reduce(1, *) == elements.count else {
      throw .shapeMismatch("tensor '\(name)': shape \(shape) holds \(shape.reduce(1, *)) elements, got \(elements.count)")
    }
    guard !entries.contains(where: { $0.name == name }), name != "__metadata__" else {
      throw .malformed("tensor name '\(name)' used twice or reserved")
    }
    let bytes = elements.withUnsafeBytes { Data($0) }
    entries.append((name, dtype, shape, bytes))
  }

  /// The complete file: header length, header JSON (space-padded to a
  /// multiple of 8), data.
  public func serialized() throws(CheckpointError) -> Data {
    var file = try encodeHeader(
      entries.map { TensorPlan(name: $0.name, dtype: $0.dtype, shape: $0.shape) }, metadata: metadata)
    for entry in entries { file.append(entry.bytes) }
    return file
  }

  /// Writes the file to `path` through a temporary file and a rename, so a
  /// failure leaves no partial file behind.
  public func write(to path: String) throws(CheckpointError) {
    let data = try serialized()
    do {
      try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
      throw .io("\(path): cannot be written (\(error))")
    }
  }
}

/// The JSON header, decoded with dynamic keys.
struct RawHeader: Codable {
  struct Entry: Codable {
    var dtype: String
    var shape: [Int]
    var dataOffsets: [Int]
    enum CodingKeys: String, CodingKey {
      case dtype, shape
      case dataOffsets = "data_offsets"
    }
  }

  var tensors: [String: Entry]
  var metadata: [String: String]

  init(tensors: [String: Entry], metadata: [String: String]) {
    self.tensors = tensors
    self.metadata = metadata
  }

  struct Key: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
  }

  init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: Key.self)
    var tensors: [String: Entry] = [:]
    var metadata: [String: String] = [:]
    for key in container.allKeys {
      if key.stringValue == "__metadata__" {
        metadata = try container.decode([String: String].self, forKey: key)
      } else {
        tensors[key.stringValue] = try container.decode(Entry.self, forKey: key)
      }
    }
    self.tensors = tensors
    self.metadata = metadata
  }

  func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: Key.self)
    if !metadata.isEmpty { try container.encode(metadata, forKey: Key(stringValue: "__metadata__")) }
    for (name, entry) in tensors { try container.encode(entry, forKey: Key(stringValue: name)) }
  }
}

/// A tensor a streamed file will hold, in file order.
public struct TensorPlan: Sendable, Equatable {
  public var name: String
  public var dtype: TensorDType
  public var shape: [Int]

  public init(name: String, dtype: TensorDType, shape: [Int]) {
    self.name = name
    self.dtype = dtype
    self.shape = shape
  }

  public var byteCount: Int { shape.reduce(1, *) * dtype.byteSize }
}

/// The 8-byte length and the JSON header for `plans` laid out back to back.
func encodeHeader(_ plans: [TensorPlan], metadata: [String: String]) throws(CheckpointError) -> Data {
  var header = RawHeader(tensors: [:], metadata: metadata)
  var offset = 0
  for plan in plans {
    guard header.tensors[plan.name] == nil, plan.name != "__metadata__" else {
      throw .malformed("tensor name '\(plan.name)' used twice or reserved")
    }
    header.tensors[plan.name] = RawHeader.Entry(
      dtype: plan.dtype.rawValue, shape: plan.shape, dataOffsets: [offset, offset + plan.byteCount])
    offset += plan.byteCount
  }
  var json: Data
  do {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    json = try encoder.encode(header)
  } catch {
    throw .malformed("cannot encode header: \(error)")
  }
  while json.count % 8 != 0 { json.append(0x20) }
  var file = Data()
  var length = UInt64(json.count)
  for _ in 0..<8 {
    file.append(UInt8(length & 0xFF))
    length >>= 8
  }
  file.append(json)
  return file
}
