#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import CPUEngine
import Checkpoint
import SamoyedsFormat
import SamoyedsModel

/// What `CheckpointPruner.prune` does and reports.
public struct PruneOptions: Sendable {
  public var pattern: SparsePattern = .default
  /// A calibration file (see `CalibrationSet`); nil prunes by magnitude.
  public var calibrationPath: String?
  /// MoE layers to prune; nil = all.
  public var layers: [Int]?
  /// Replace an existing output folder.
  public var force = false
  /// Called after each tensor with (tensors done, tensors total, bytes done,
  /// bytes total, tensor name).
  public var progress: (@Sendable (Int, Int, Int, Int, String) -> Void)?

  public init() {}
}

/// Relative output error of one pruned MoE layer against the dense layer,
/// on held-out tokens.
public struct LayerQuality: Codable, Sendable {
  public var layer: Int
  public var heldOutTokens: Int
  /// Pruned by |W|.
  public var magnitudeError: Double
  /// Pruned by |W| x ‖x‖ (only with calibration).
  public var calibrationError: Double?
}

/// The report `prune` prints and saves as `samoyeds-prune-report.json`.
public struct PruneReport: Codable, Sendable {
  public var input: String
  public var output: String
  public var pattern: String
  public var importance: String
  /// "calibration file (held-out tail)" or "synthetic Gaussian tokens".
  public var heldOutSource: String
  public var layers: [LayerQuality]
  public var tensorsPruned: Int
  public var tensorsCopied: Int
  public var inputBytes: Int
  public var outputBytes: Int
  public var seconds: Double

  public var meanMagnitudeError: Double {
    layers.isEmpty ? 0 : layers.map(\.magnitudeError).reduce(0, +) / Double(layers.count)
  }

  public var meanCalibrationError: Double? {
    let values = layers.compactMap(\.calibrationError)
    return values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
  }
}

/// Set by SIGINT while pruning; checked between tensors so an interrupt
/// unwinds through the cleanup that removes the partial output.
nonisolated(unsafe) private var interruptRequested: sig_atomic_t = 0

/// Hugging Face MoE checkpoint → Samoyeds checkpoint.
///
/// Streams shard by shard, tensor by tensor: each output shard is planned
/// (names, dtypes, shapes) and written in input order; expert projections
/// become three tensors in the format, everything else is copied byte for
/// byte. Memory stays bounded by a few expert matrices. The output is built
/// in `<out>.partial-<pid>` and renamed into place at the end, so a failure
/// or an interrupt (Ctrl-C) leaves no half-written checkpoint.
public enum CheckpointPruner {
  public static let reportName = "samoyeds-prune-report.json"

  public static func prune(input: String, output: String, options: PruneOptions) throws -> PruneReport {
    let clock = ContinuousClock()
    let start = clock.now
    let checkpoint = try CheckpointDirectory(path: input)
    let config = checkpoint.config
    if checkpoint.sparsity != nil {
      throw CheckpointError.invalid("\(input) is already a Samoyeds checkpoint (config.json has a samoyeds section)")
    }
    let fm = FileManager.default
    if URL(fileURLWithPath: output).standardizedFileURL.path == URL(fileURLWithPath: input).standardizedFileURL.path {
      throw CheckpointError.invalid("--out \(output) is the input checkpoint itself; choose another folder")
    }
    if fm.fileExists(atPath: output) && !options.force {
      throw CheckpointError.io("\(output) exists; pass --force to replace it")
    }
    let layers = try selectedLayers(options.layers, config: config)
    let pattern = options.pattern
    // Every expert shape must take the pattern before anything is written.
    var expertTensors: [String: [(TensorReference, rows: Int, columns: Int)]] = [:]
    for layer in layers {
      for (reference, rows, columns) in checkpoint.layout.expertTensors(layer: layer, config: config) {
        do {
          try pattern.checkApplicable(rows: rows, columns: columns)
        } catch {
          throw CheckpointError.invalid("layer \(layer) '\(reference.sparseName)' [\(rows), \(columns)]: \(error)")
        }
        expertTensors[reference.name, default: []].append((reference, rows, columns))
      }
    }

    // Calibration: per-expert channel norms from the first part of the set.
    let calibration = try options.calibrationPath.map { try CalibrationSet(path: $0, checkpoint: checkpoint) }
    var norms: [Int: [Int?: ExpertNorms]] = [:]
    if let calibration {
      for layer in layers {
        norms[layer] = try ExpertNorms.compute(checkpoint, layer: layer, x: calibration.fitting(layer: layer))
      }
    }
    let importanceName = options.calibrationPath.map {
      "calibration:" + URL(fileURLWithPath: $0).lastPathComponent
    } ?? "magnitude"

    // Output folder, built under a temporary name.
    let temporary = output + ".partial-\(getpid())"
    try? fm.removeItem(atPath: temporary)
    do {
      try fm.createDirectory(atPath: temporary, withIntermediateDirectories: true)
    } catch {
      throw CheckpointError.io("\(temporary): cannot be created (\(error))")
    }
    var finished = false
    defer { if !finished { try? fm.removeItem(atPath: temporary) } }
    interruptRequested = 0
    let previousHandler = signal(SIGINT) { _ in interruptRequested = 1 }
    defer { signal(SIGINT, previousHandler) }

    // Plan every shard first (for the totals), then stream.
    var plans: [(shard: String, file: SafeTensorsFile, order: [String], out: [TensorPlan])] = []
    var totalTensors = 0
    var totalBytes = 0
    for shard in checkpoint.shardNames {
      let file = try checkpoint.shard(shard)
      let order = file.tensors.sorted { $0.value.dataRange.lowerBound < $1.value.dataRange.lowerBound }.map(\.key)
      var out: [TensorPlan] = []
      for name in order {
        let info = try file.info(name)
        totalTensors += 1
        totalBytes += info.dataRange.count
        if let expert = expertTensors[name] {
          guard [.bf16, .f16, .f32].contains(info.dtype) else {
            throw CheckpointError.unsupportedDType(
              "\(file.path): expert tensor '\(name)' is \(info.dtype.rawValue); expected BF16, F16 or F32")
          }
          for (reference, rows, columns) in expert {
            let mc = rows / pattern.groupRows * pattern.keptRows
            out.append(TensorPlan(name: reference.sparseName + SparseTensorIO.valuesSuffix, dtype: info.dtype, shape: [mc, columns / 2]))
            out.append(TensorPlan(name: reference.sparseName + SparseTensorIO.metadataSuffix, dtype: .u32, shape: [mc, columns / 32]))
            out.append(TensorPlan(name: reference.sparseName + SparseTensorIO.rowSelectSuffix, dtype: .u8, shape: [mc, columns / pattern.vectorLength]))
          }
        } else {
          out.append(TensorPlan(name: name, dtype: info.dtype, shape: info.shape))
        }
      }
      plans.append((shard, file, order, out))
    }

    var weightMap: [String: String] = [:]
    var doneTensors = 0
    var doneBytes = 0
    var pruned = 0
    var copied = 0
    var outputBytes = 0
    for (shard, file, order, out) in plans {
      var metadata = file.metadata
      for (name, list) in expertTensors where order.contains(name) {
        for (reference, rows, columns) in list {
          metadata[SparseTensorIO.metadataPrefix + reference.sparseName] =
            #"{"columns":\#(columns),"pattern":"\#(pattern)","rows":\#(rows)}"#
        }
      }
      let writer = try SafeTensorsStreamWriter(path: temporary + "/" + shard, plans: out, metadata: metadata)
      for name in order {
        if interruptRequested != 0 { throw CheckpointError.io("interrupted; no output written") }
        let info = try file.info(name)
        if let list = expertTensors[name] {
          for (reference, rows, columns) in list {
            let layer = Int(name.split(separator: ".")[2]) ?? 0
            let expertIndex = expertIndexOf(reference, checkpoint: checkpoint, layer: layer)
            let dense = try checkpoint.dense(reference, rows: rows, columns: columns)
            let channel = norms[layer]?[expertIndex]
            let sparse = try pruneAny(dense, pattern: pattern, channelNorms: channel?.norms(for: reference, checkpoint: checkpoint, layer: layer))
            try write(sparse, name: reference.sparseName, to: writer)
            pruned += 1
          }
        } else {
          var failure: Error?
          try file.withBytes(name) { raw in
            do { try writer.append(name, bytes: raw) } catch { failure = error }
          }
          if let failure { throw failure }
          file.releasePages(name)
          copied += 1
        }
        doneTensors += 1
        doneBytes += info.dataRange.count
        options.progress?(doneTensors, totalTensors, doneBytes, totalBytes, name)
      }
      try writer.finish()
      for plan in out { weightMap[plan.name] = shard }
      outputBytes += out.reduce(0) { $0 + $1.byteCount }
    }

    // Index, config.json with the samoyeds section, other files.
    let info = SparsityInfo(
      formatVersion: 1, pattern: pattern.description, layers: layers, sharedExperts: config.sharedExpert != nil,
      importance: importanceName,
      tensors: "<name>.values / .metadata / .row_select with __metadata__ samoyeds.sparse.<name> (docs/FORMAT.md)")
    try writeConfig(checkpoint.rawConfig, sparsity: info, to: temporary + "/config.json")
    if fm.fileExists(atPath: input + "/" + CheckpointDirectory.indexName) {
      try writeIndex(weightMap: weightMap, totalSize: outputBytes, to: temporary + "/" + CheckpointDirectory.indexName)
    }
    let skip: Set<String> = Set(checkpoint.shardNames + ["config.json", CheckpointDirectory.indexName, reportName])
    for entry in (try? fm.contentsOfDirectory(atPath: input)) ?? [] where !skip.contains(entry) {
      var isDirectory = false
      if fm.fileExists(atPath: input + "/" + entry, isDirectory: &isDirectory), !isDirectory {
        do {
          try fm.copyItem(atPath: input + "/" + entry, toPath: temporary + "/" + entry)
        } catch {
          throw CheckpointError.io("\(input)/\(entry): cannot be copied (\(error))")
        }
      }
    }

    // Quality: each pruned layer against the dense one on held-out tokens.
    var quality: [LayerQuality] = []
    for layer in layers {
      let heldOut = calibration?.heldOut(layer: layer) ?? syntheticTokens(config: config, layer: layer)
      quality.append(try measure(checkpoint, layer: layer, x: heldOut, pattern: pattern, norms: norms[layer]))
    }
    let report = PruneReport(
      input: input, output: output, pattern: pattern.description, importance: importanceName,
      heldOutSource: calibration == nil ? "synthetic Gaussian tokens (no calibration file)" : "calibration file, held-out tail",
      layers: quality, tensorsPruned: pruned, tensorsCopied: copied, inputBytes: totalBytes, outputBytes: outputBytes,
      seconds: Double((clock.now - start).components.seconds))
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    do {
      try encoder.encode(report).write(to: URL(fileURLWithPath: temporary + "/" + reportName), options: .atomic)
    } catch {
      throw CheckpointError.io("\(temporary)/\(reportName): cannot be written (\(error))")
    }

    if fm.fileExists(atPath: output) {
      do { try fm.removeItem(atPath: output) } catch { throw CheckpointError.io("\(output): cannot be replaced (\(error))") }
    }
    guard rename(temporary, output) == 0 else {
      throw CheckpointError.io("\(output): rename failed (\(String(cString: strerror(errno))))")
    }
    finished = true
    return report
  }

  /// Parses "0-3,7" against the config's MoE layers (nil = all of them).
  public static func selectedLayers(_ requested: [Int]?, config: MoEConfig) throws -> [Int] {
    guard let requested else { return config.moeLayerIndices }
    for layer in requested where !config.moeLayerIndices.contains(layer) {
      throw CheckpointError.invalid(
        "layer \(layer) is not an MoE layer of \(config.name); MoE layers: \(config.moeLayerIndices)")
    }
    return Array(Set(requested)).sorted()
  }

  /// "0-3,7" → [0, 1, 2, 3, 7].
  public static func parseLayers(_ text: String) throws -> [Int] {
    var result: [Int] = []
    for part in text.split(separator: ",") {
      let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
      if bounds.count == 1, let value = Int(bounds[0]), value >= 0 {
        result.append(value)
      } else if bounds.count == 2, let low = Int(bounds[0]), let high = Int(bounds[1]), low >= 0, low <= high,
        high <= MoEConfig.maxLayers
      {
        result += Array(low...high)
      } else {
        throw CheckpointError.invalid(
          "--layers '\(text)': '\(part)' is not a layer or a range like 0-3 (at most \(MoEConfig.maxLayers))")
      }
    }
    return result
  }

  static func expertIndexOf(_ reference: TensorReference, checkpoint: CheckpointDirectory, layer: Int) -> Int? {
    if let expert = reference.expert { return expert }
    for e in 0..<checkpoint.config.numExperts {
      for projection in Projection.allCases where checkpoint.layout.expert(layer: layer, expert: e, projection) == reference {
        return e
      }
    }
    return nil  // shared expert
  }

  static func write(_ sparse: AnySparseMatrix, name: String, to writer: SafeTensorsStreamWriter) throws {
    func emit<S: SparseScalar & BitwiseCopyable>(_ s: SparseMatrix<S>) throws {
      try writer.append(name + SparseTensorIO.valuesSuffix, elements: s.values)
      try writer.append(name + SparseTensorIO.metadataSuffix, elements: s.metadata)
      try writer.append(name + SparseTensorIO.rowSelectSuffix, elements: s.rowSelection)
    }
    switch sparse {
    case .bf16(let s): try emit(s)
    case .fp16(let s): try emit(s)
    case .f32(let s): try emit(s)
    }
  }

  /// Prunes in the stored element type; with channel norms the importance is
  /// |W[i, j]| · norms[j] (Wanda-style), otherwise |W|.
  public static func pruneAny(_ dense: AnyDenseMatrix, pattern: SparsePattern, channelNorms: [Float]?) throws
    -> AnySparseMatrix
  {
    func importance<S: SparseScalar>(_ m: Matrix<S>) -> Matrix<Float>? {
      guard let norms = channelNorms, norms.count == m.columns else { return nil }
      return Matrix(rows: m.rows, columns: m.columns) { r, c in abs(m[r, c].floatValue) * norms[c] }
    }
    switch dense {
    case .bf16(let m): return .bf16(try SparseMatrix.prune(m, pattern: pattern, importance: importance(m)))
    case .fp16(let m): return .fp16(try SparseMatrix.prune(m, pattern: pattern, importance: importance(m)))
    case .f32(let m): return .f32(try SparseMatrix.prune(m, pattern: pattern, importance: importance(m)))
    }
  }

  static func writeConfig(_ raw: JSONValue, sparsity: SparsityInfo, to path: String) throws {
    guard case .object(var object) = raw else { throw CheckpointError.malformed("config.json is not an object") }
    object["samoyeds"] = try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(sparsity))
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    do {
      try encoder.encode(JSONValue.object(object)).write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
      throw CheckpointError.io("\(path): cannot be written (\(error))")
    }
  }

  static func writeIndex(weightMap: [String: String], totalSize: Int, to path: String) throws {
    let index = JSONValue.object([
      "metadata": .object(["total_size": .int(Int64(totalSize))]),
      "weight_map": .object(weightMap.mapValues { .string($0) }),
    ])
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    do {
      try encoder.encode(index).write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
      throw CheckpointError.io("\(path): cannot be written (\(error))")
    }
  }

  /// Held-out tokens when there is no calibration file: 64 Gaussian rows.
  static func syntheticTokens(config: MoEConfig, layer: Int) -> Matrix<Float> {
    var rng = SeededGenerator(seed: UInt64(layer) &+ 0x5A40)
    return rng.normalMatrix(rows: 64, columns: config.hiddenSize)
  }

  /// Dense layer vs the same layer pruned by magnitude (and by calibration
  /// importance), expert by expert.
  static func measure(
    _ checkpoint: CheckpointDirectory, layer: Int, x: Matrix<Float>, pattern: SparsePattern,
    norms: [Int?: ExpertNorms]?
  ) throws -> LayerQuality {
    let config = checkpoint.config
    let router = try checkpoint.denseFloat(
      checkpoint.layout.router(layer: layer), rows: config.numExperts, columns: config.hiddenSize)
    let sharedGate = try checkpoint.layout.sharedGate(layer: layer).map {
      try checkpoint.denseFloat($0, rows: 1, columns: config.hiddenSize)
    }
    enum Variant { case dense, magnitude, calibration }
    func run(_ variant: Variant) throws -> Matrix<Float> {
      func build(_ expert: Int?) throws(EngineError) -> CPUExpert {
        do {
          let h = config.hiddenSize
          let f = expert == nil ? (config.sharedExpert?.intermediateSize ?? 0) : config.expertIntermediateSize
          func linear(_ projection: Projection) throws -> CPULinear {
            guard
              let reference = expert.map({ checkpoint.layout.expert(layer: layer, expert: $0, projection) })
                ?? checkpoint.layout.shared(layer: layer, projection)
            else { throw CheckpointError.missingTensor("no shared expert") }
            let (rows, columns) = projection == .down ? (h, f) : (f, h)
            let dense = try checkpoint.dense(reference, rows: rows, columns: columns)
            switch variant {
            case .dense: return .dense(dense.asFloat)
            case .magnitude:
              return .sparse(CPUSparseWeight(try pruneAny(dense, pattern: pattern, channelNorms: nil).asFloat))
            case .calibration:
              let channel = norms?[expert]?.norms(for: reference, checkpoint: checkpoint, layer: layer)
              return .sparse(CPUSparseWeight(try pruneAny(dense, pattern: pattern, channelNorms: channel).asFloat))
            }
          }
          return CPUExpert(gate: try linear(.gate), up: try linear(.up), down: try linear(.down))
        } catch let error as EngineError {
          throw error
        } catch {
          throw .shapeMismatch("\(error)")
        }
      }
      return try CPUMoELayer.forward(
        x, config: config, router: router, sharedGate: sharedGate, expert: { e throws(EngineError) in try build(e) },
        shared: { () throws(EngineError) in config.sharedExpert == nil ? nil : try build(nil) }
      ).output
    }
    let dense = try run(.dense)
    let magnitude = try run(.magnitude)
    let calibrated = norms == nil ? nil : try run(.calibration)
    return LayerQuality(
      layer: layer, heldOutTokens: x.rows, magnitudeError: relativeError(magnitude, dense),
      calibrationError: calibrated.map { relativeError($0, dense) })
  }
}
