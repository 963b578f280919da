import Testing

@testable import CPUEngine
@testable import Checkpoint
@testable import Models
import SamoyedsFormat
import SamoyedsModel

import Foundation  // tests may use all of Foundation; the shipped modules use FoundationEssentials

func scratch(_ name: String) -> String {
  FileManager.default.temporaryDirectory.path + "/samoyeds-models-\(name)-\(UInt64.random(in: 0...UInt64.max))"
}

/// A small copy of a mini preset (hidden 128, ffn 128) so debug builds stay fast.
func small(_ preset: String) throws -> MoEConfig {
  var c = try Presets.named(preset)
  c.hiddenSize = 128
  c.expertIntermediateSize = 128
  if var shared = c.sharedExpert {
    shared.intermediateSize = 128 * max(1, shared.intermediateSize / max(1, (try Presets.named(preset)).expertIntermediateSize))
    c.sharedExpert = shared
  }
  return c
}

@Suite struct CheckpointRoundTrip {
  /// dense checkpoint → Samoyeds checkpoint → load → the same outputs as
  /// pruning the dense layer in memory, for every family.
  @Test(arguments: Presets.mini.map(\.name))
  func prunedCheckpointMatchesPruningInMemory(preset: String) throws {
    let config = try small(preset)
    let input = scratch("in")
    let output = scratch("out")
    defer {
      try? FileManager.default.removeItem(atPath: input)
      try? FileManager.default.removeItem(atPath: output)
    }
    var options = SyntheticCheckpoint.Options()
    options.shards = 2
    options.seed = UInt64(preset.utf8.count)
    print("prunedCheckpointMatchesPruningInMemory \(preset) seed \(options.seed)")
    try SyntheticCheckpoint.write(config: config, to: input, options: options)
    let dense = try CheckpointDirectory(path: input)
    #expect(dense.config.family == config.family)
    let report = try CheckpointPruner.prune(input: input, output: output, options: PruneOptions())
    #expect(report.layers.count == dense.config.moeLayerIndices.count)
    #expect(!FileManager.default.fileExists(atPath: output + ".partial-\(getpid())"))

    let sparse = try CheckpointDirectory(path: output)
    #expect(sparse.sparsity?.pattern == "1:2:128")
    for layer in dense.config.moeLayerIndices {
      let stored = try LayerLoader.layer(sparse, layer: layer)
      #expect(stored.hasSparseExperts)
      let original = try LayerLoader.layer(dense, layer: layer)
      guard let weights = original.denseWeights() else {
        Issue.record("dense checkpoint loaded sparse")
        continue
      }
      let (inMemory, _) = try weights.pruned(pattern: .default, storage: .bf16)
      var rng = SeededGenerator(seed: 11)
      let x = rng.normalMatrix(rows: 5, columns: config.hiddenSize)
      let a = try CPUMoELayer.forward(x, weights: stored).output
      let b = try CPUMoELayer.forward(x, weights: inMemory).output
      #expect(relativeError(a, b) == 0, "\(preset) layer \(layer)")
    }
    // Non-expert tensors are copied byte for byte.
    let name = "model.embed_tokens.weight"
    let before: [UInt16] = try dense.file(holding: name).array(name, as: .bf16)
    let after: [UInt16] = try sparse.file(holding: name).array(name, as: .bf16)
    #expect(before == after)
  }

  /// Calibration-aware pruning beats magnitude pruning on a model whose
  /// activations have a few large-norm channels.
  @Test func calibrationBeatsMagnitudeWithOutlierChannels() throws {
    var config = try small("mixtral-mini")
    config.expertIntermediateSize = 256
    let input = scratch("calib-in")
    let output = scratch("calib-out")
    defer {
      try? FileManager.default.removeItem(atPath: input)
      try? FileManager.default.removeItem(atPath: output)
    }
    var options = SyntheticCheckpoint.Options()
    options.layers = 1
    options.calibrationTokens = 256
    options.outlierChannels = 4
    try SyntheticCheckpoint.write(config: config, to: input, options: options)
    var prune = PruneOptions()
    prune.calibrationPath = input + "/calibration.safetensors"
    let report = try CheckpointPruner.prune(input: input, output: output, options: prune)
    let calibrated = try #require(report.meanCalibrationError)
    print("magnitude \(report.meanMagnitudeError), calibration-aware \(calibrated)")
    #expect(calibrated < report.meanMagnitudeError)
    #expect(try CheckpointDirectory(path: output).sparsity?.importance == "calibration:calibration.safetensors")
  }
}

@Suite struct CheckpointBadInput {
  func makeCheckpoint(_ name: String, preset: String = "mixtral-mini") throws -> String {
    let path = scratch(name)
    var options = SyntheticCheckpoint.Options()
    options.layers = 1
    try SyntheticCheckpoint.write(config: try small(preset), to: path, options: options)
    return path
  }

  func expectPruneFails(_ input: String, containing text: String, options: PruneOptions = PruneOptions(),
                        sourceLocation: SourceLocation = #_sourceLocation) {
    let output = scratch("bad-out")
    defer { try? FileManager.default.removeItem(atPath: output) }
    #expect(sourceLocation: sourceLocation) {
      _ = try CheckpointPruner.prune(input: input, output: output, options: options)
    } throws: { error in
      "\(error)".contains(text)
    }
    #expect(!FileManager.default.fileExists(atPath: output), "partial output left behind", sourceLocation: sourceLocation)
    let parent = URL(fileURLWithPath: output).deletingLastPathComponent().path
    let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: parent))?.filter {
      $0.hasPrefix(URL(fileURLWithPath: output).lastPathComponent)
    } ?? []
    #expect(leftovers.isEmpty, "temporary output left behind: \(leftovers)", sourceLocation: sourceLocation)
  }

  func rewrite(_ path: String, _ transform: (inout Data) -> Void) throws {
    var data = try Data(contentsOf: URL(fileURLWithPath: path))
    transform(&data)
    try data.write(to: URL(fileURLWithPath: path))
  }

  @Test func truncatedShard() throws {
    let input = try makeCheckpoint("trunc")
    defer { try? FileManager.default.removeItem(atPath: input) }
    try rewrite(input + "/model.safetensors") { $0 = $0.prefix($0.count - 100) }
    expectPruneFails(input, containing: "model.safetensors")
  }

  @Test func headerThatIsNotJSON() throws {
    let input = try makeCheckpoint("json")
    defer { try? FileManager.default.removeItem(atPath: input) }
    try rewrite(input + "/model.safetensors") { data in
      data.replaceSubrange(8..<12, with: Data("!!!!".utf8))
    }
    expectPruneFails(input, containing: "not a JSON object")
  }

  @Test func shapesThatDisagreeWithConfig() throws {
    let input = try makeCheckpoint("shape")
    defer { try? FileManager.default.removeItem(atPath: input) }
    try rewrite(input + "/config.json") { data in
      let text = String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\"intermediate_size\" : 128", with: "\"intermediate_size\" : 256")
      data = Data(text.utf8)
    }
    expectPruneFails(input, containing: "config.json implies")
  }

  @Test func missingTensor() throws {
    let input = try makeCheckpoint("missing")
    defer { try? FileManager.default.removeItem(atPath: input) }
    // Rewrite the shard without one expert projection.
    let file = try SafeTensorsFile(path: input + "/model.safetensors")
    let dropped = "model.layers.0.block_sparse_moe.experts.3.w2.weight"
    var writer = SafeTensorsWriter()
    for (name, info) in file.tensors.sorted(by: { $0.key < $1.key }) where name != dropped {
      let values: [UInt16] = try file.array(name, as: .bf16)
      try writer.add(name, dtype: info.dtype, shape: info.shape, elements: values)
    }
    try writer.write(to: input + "/model.safetensors")
    expectPruneFails(input, containing: dropped)
  }

  @Test func unsupportedExpertDType() throws {
    let input = try makeCheckpoint("dtype")
    defer { try? FileManager.default.removeItem(atPath: input) }
    let file = try SafeTensorsFile(path: input + "/model.safetensors")
    var writer = SafeTensorsWriter()
    for (name, info) in file.tensors.sorted(by: { $0.key < $1.key }) {
      let values: [UInt16] = try file.array(name, as: .bf16)
      if name.hasSuffix("experts.0.w1.weight") {
        // Same bytes, declared as pairs of U8: a dtype experts cannot have.
        let bytes = values.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        try writer.add(name, dtype: .u8, shape: [info.shape[0], info.shape[1] * 2], elements: bytes)
      } else {
        try writer.add(name, dtype: info.dtype, shape: info.shape, elements: values)
      }
    }
    try writer.write(to: input + "/model.safetensors")
    expectPruneFails(input, containing: "U8")
  }

  @Test func patternThatDoesNotDivide() throws {
    let input = try makeCheckpoint("pattern")
    defer { try? FileManager.default.removeItem(atPath: input) }
    var options = PruneOptions()
    options.pattern = try SparsePattern(parsing: "1:2:256")  // hidden = 128
    expectPruneFails(input, containing: "not divisible", options: options)
  }

  @Test func unknownArchitectureAndLayersAndOverwrite() throws {
    let input = try makeCheckpoint("arch")
    defer { try? FileManager.default.removeItem(atPath: input) }
    var options = PruneOptions()
    options.layers = [5]
    expectPruneFails(input, containing: "not an MoE layer", options: options)
    #expect(throws: (any Error).self) { try CheckpointPruner.parseLayers("1-x") }
    #expect(try CheckpointPruner.parseLayers("0-2,7") == [0, 1, 2, 7])

    let existing = scratch("exists")
    try FileManager.default.createDirectory(atPath: existing, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: existing) }
    #expect {
      _ = try CheckpointPruner.prune(input: input, output: existing, options: PruneOptions())
    } throws: { error in "\(error)".contains("--force") }
    var force = PruneOptions()
    force.force = true
    _ = try CheckpointPruner.prune(input: input, output: existing, options: force)
    #expect(try CheckpointDirectory(path: existing).sparsity != nil)
    // Pruning a pruned checkpoint is refused.
    expectPruneFails(existing, containing: "already a Samoyeds checkpoint")

    try rewrite(input + "/config.json") { data in
      let text = String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\"mixtral\"", with: "\"gpt2\"")
      data = Data(text.utf8)
    }
    expectPruneFails(input, containing: "supported:")
  }
}
