#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Checkpoint
import SamoyedsFormat
import SamoyedsModel

/// The `samoyeds` section a pruned checkpoint's config.json gains.
public struct SparsityInfo: Codable, Equatable, Sendable {
  public var formatVersion: Int
  /// "N:M:V"
  public var pattern: String
  /// MoE layers whose experts are in the format.
  public var layers: [Int]
  /// Whether shared experts were pruned too.
  public var sharedExperts: Bool
  /// "magnitude" or "calibration:<file name>".
  public var importance: String
  /// How sparse tensors are named and stored.
  public var tensors: String

  enum CodingKeys: String, CodingKey {
    case formatVersion = "format_version"
    case pattern, layers
    case sharedExperts = "shared_experts"
    case importance, tensors
  }
}

/// A dense weight in its stored element type.
public enum AnyDenseMatrix: Sendable {
  case bf16(Matrix<BFloat16>)
  case fp16(Matrix<Float16>)
  case f32(Matrix<Float>)

  public var asFloat: Matrix<Float> {
    switch self {
    case .bf16(let m): m.toFloat()
    case .fp16(let m): m.toFloat()
    case .f32(let m): m
    }
  }
}

/// A Hugging Face (or Samoyeds) checkpoint folder: config.json plus one
/// `model.safetensors` or shards listed in `model.safetensors.index.json`.
///
/// Load pipeline: read config.json → family and shapes; read the index (or
/// take the single file) → which shard holds which tensor; map shards lazily
/// as tensors are asked for; map each family's names to one layout
/// (`FamilyLayout`); check every shape against config.json. Not thread-safe
/// (it caches open shards).
public final class CheckpointDirectory {
  public let path: String
  public let config: MoEConfig
  public let rawConfig: JSONValue
  /// The sparsity section, when this is a Samoyeds checkpoint.
  public let sparsity: SparsityInfo?
  /// Shard file names in index order.
  public let shardNames: [String]
  /// Tensor name → shard file name.
  public let weightMap: [String: String]
  public let layout: FamilyLayout
  private var open: [String: SafeTensorsFile] = [:]

  public static let indexName = "model.safetensors.index.json"
  public static let singleName = "model.safetensors"

  public init(path: String) throws {
    self.path = path
    let fm = FileManager.default
    var isDirectory = false
    guard fm.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory else {
      throw CheckpointError.io("\(path): not a folder")
    }
    let configPath = path + "/config.json"
    guard let configData = fm.contents(atPath: configPath) else {
      throw CheckpointError.io("\(configPath): missing or unreadable")
    }
    config = try MoEConfig(huggingFaceJSON: configData, name: URL(fileURLWithPath: path).lastPathComponent)
    do {
      rawConfig = try JSONDecoder().decode(JSONValue.self, from: configData)
    } catch {
      throw CheckpointError.malformed("\(configPath): not JSON (\(error))")
    }
    if let section = rawConfig["samoyeds"] {
      do {
        sparsity = try JSONDecoder().decode(SparsityInfo.self, from: JSONEncoder().encode(section))
      } catch {
        throw CheckpointError.malformed("\(configPath): the samoyeds section is not valid (\(error))")
      }
    } else {
      sparsity = nil
    }
    layout = FamilyLayout(config.family)

    if let indexData = fm.contents(atPath: path + "/" + Self.indexName) {
      struct Index: Decodable { var weight_map: [String: String] }
      let index: Index
      do {
        index = try JSONDecoder().decode(Index.self, from: indexData)
      } catch {
        throw CheckpointError.malformed("\(path)/\(Self.indexName): no weight_map (\(error))")
      }
      weightMap = index.weight_map
      var seen = Set<String>()
      shardNames = index.weight_map.values.sorted().filter { seen.insert($0).inserted }
      for shard in shardNames where !fm.fileExists(atPath: path + "/" + shard) {
        throw CheckpointError.io("\(path)/\(shard): listed in the index but missing")
      }
    } else if fm.fileExists(atPath: path + "/" + Self.singleName) {
      let file = try SafeTensorsFile(path: path + "/" + Self.singleName)
      open[Self.singleName] = file
      weightMap = Dictionary(uniqueKeysWithValues: file.tensors.keys.map { ($0, Self.singleName) })
      shardNames = [Self.singleName]
    } else {
      throw CheckpointError.io("\(path): neither \(Self.indexName) nor \(Self.singleName)")
    }
  }

  /// The shard named `name`, mapped on first use.
  public func shard(_ name: String) throws -> SafeTensorsFile {
    if let file = open[name] { return file }
    let file = try SafeTensorsFile(path: path + "/" + name)
    open[name] = file
    return file
  }

  /// The shard that holds tensor `name`.
  public func file(holding name: String) throws -> SafeTensorsFile {
    guard let shard = weightMap[name] else {
      throw CheckpointError.missingTensor("\(path): no tensor '\(name)' (\(config.family) layout)")
    }
    let file = try self.shard(shard)
    guard file.tensors[name] != nil else {
      throw CheckpointError.missingTensor("\(file.path): the index lists '\(name)' here, the file lacks it")
    }
    return file
  }

  /// Whether the checkpoint holds `reference` in the format.
  public func hasSparse(_ reference: TensorReference) -> Bool {
    weightMap[reference.sparseName + SparseTensorIO.valuesSuffix] != nil
  }

  /// The sparse weight stored for `reference`, validated, shape-checked.
  public func sparse(_ reference: TensorReference, rows: Int, columns: Int) throws -> AnySparseMatrix {
    let file = try self.file(holding: reference.sparseName + SparseTensorIO.valuesSuffix)
    let matrix = try SparseTensorIO.read(reference.sparseName, from: file)
    let (r, c): (Int, Int) =
      switch matrix {
      case .bf16(let s): (s.rows, s.columns)
      case .fp16(let s): (s.rows, s.columns)
      case .f32(let s): (s.rows, s.columns)
      }
    guard r == rows, c == columns else {
      throw CheckpointError.shapeMismatch(
        "\(file.path): sparse weight '\(reference.sparseName)' is [\(r), \(c)], config.json implies [\(rows), \(columns)]")
    }
    return matrix
  }

  /// A dense matrix [rows, columns] in its stored element type (one expert
  /// of a stacked tensor, transposed when stored [in, out]).
  public func dense(_ reference: TensorReference, rows: Int, columns: Int) throws -> AnyDenseMatrix {
    let file = try self.file(holding: reference.name)
    let info = try file.info(reference.name)
    let stored = reference.transposed ? [columns, rows] : [rows, columns]
    let expected = reference.expert == nil ? stored : [config.numExperts] + stored
    guard info.shape == expected else {
      throw CheckpointError.shapeMismatch(
        "\(file.path): tensor '\(reference.name)' is \(info.shape), config.json implies \(expected)")
    }
    let count = rows * columns
    let offset = (reference.expert ?? 0) * count
    func extract<S: BitwiseCopyable>(_: S.Type) throws -> [S] {
      // A byte copy: tensor data need not be aligned to its element size.
      try file.withBytes(reference.name) { raw in
        [S](unsafeUninitializedCapacity: count) { buffer, initialized in
          let stride = MemoryLayout<S>.stride
          if let base = raw.baseAddress {
            UnsafeMutableRawBufferPointer(buffer).copyMemory(
              from: UnsafeRawBufferPointer(start: base + offset * stride, count: count * stride))
          }
          initialized = count
        }
      }
    }
    func shaped<S: Sendable>(_ values: [S]) throws -> Matrix<S> {
      let m = try Matrix(rows: stored[0], columns: stored[1], storage: values)
      return reference.transposed ? Matrix(rows: rows, columns: columns) { r, c in m[c, r] } : m
    }
    defer { file.releasePages(reference.name) }
    switch info.dtype {
    case .bf16: return .bf16(try shaped(try extract(UInt16.self).map { BFloat16(bitPattern: $0) }))
    case .f16: return .fp16(try shaped(try extract(Float16.self)))
    case .f32: return .f32(try shaped(try extract(Float.self)))
    default:
      throw CheckpointError.unsupportedDType(
        "\(file.path): tensor '\(reference.name)' is \(info.dtype.rawValue); weights must be BF16, F16 or F32")
    }
  }

  /// A small dense tensor (router, shared gate) as f32 [rows, columns].
  public func denseFloat(_ name: String, rows: Int, columns: Int) throws -> Matrix<Float> {
    try dense(TensorReference(name: name, expert: nil, transposed: false), rows: rows, columns: columns).asFloat
  }
}
