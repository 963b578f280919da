#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import CPUEngine
import GPUEngine
import SamoyedsFormat
import SamoyedsModel

/// `verify`'s comparison of the GPU layer with the Hugging Face transformers
/// block of its family: the layer's pruned weights, densified, go into the
/// block (`bench/baselines/compare_hf.py`, run by the python3 on PATH), which
/// runs on the same tokens; the GPU output must agree within 1e-2.
extension GPUVerifier {
  /// One family's case: "gpu moe layer NAME vs transformers T=33".
  struct TransformersCase {
    var config: MoEConfig
    var tokens = 33
    var description: String { "gpu moe layer \(config.name) vs transformers T=\(tokens)" }
  }

  static func transformersCases() -> [TransformersCase] { Presets.mini.map { TransformersCase(config: $0) } }

  /// The reference script and a python3 that imports torch, transformers
  /// and safetensors; else why the comparison cannot run on this machine.
  static func transformersReference() -> Result<String, TransformersUnavailable> {
    var candidates: [String] = []
    let environment = ProcessInfo.processInfo.environment
    if let repo = environment["SAMOYEDS_REPO"], !repo.isEmpty { candidates.append(repo) }
    candidates.append(FileManager.default.currentDirectoryPath)
    let source = #filePath  // <repo>/Sources/samoyeds/TransformersCheck.swift
    candidates.append(source.split(separator: "/", omittingEmptySubsequences: false).dropLast(3).joined(separator: "/"))
    let scripts = candidates.map { $0 + "/bench/baselines/compare_hf.py" }
    guard let script = scripts.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
      return .failure(.init("bench/baselines/compare_hf.py not found (looked in \(scripts.joined(separator: ", ")); set SAMOYEDS_REPO)"))
    }
    guard let probe = runProgram(["python3", "-c", "import torch, transformers, safetensors"]) else {
      return .failure(.init("python3 not found on PATH"))
    }
    guard probe.status == 0 else {
      return .failure(.init("python3 cannot import torch, transformers and safetensors: \(probe.output.split(separator: "\n").last ?? "")"))
    }
    return .success(script)
  }

  struct TransformersUnavailable: Error, CustomStringConvertible {
    let description: String
    init(_ text: String) { description = text }
  }

  /// Runs one family: GPU layer (and CPU engine) on tokens whose router
  /// logits are exact in f32 (`ExactLogits`, so torch and Swift choose the
  /// same experts), then the reference script on the dump.
  func runTransformers(_ c: TransformersCase, seed: UInt64, script: String) throws {
    var weights = DenseMoEWeights.random(config: c.config, seed: seed)
    var rng = SeededGenerator(seed: seed &+ 11)
    weights.router = ExactLogits.router(weights.router)
    let x = HalfBits.rounded(ExactLogits.hiddenStates(rng.normalMatrix(rows: c.tokens, columns: c.config.hiddenSize)), .bf16)
    let (sparse, densePruned) = try weights.pruned(pattern: .default, storage: .bf16)
    let cpu = try CPUMoELayer.forward(x, weights: sparse)
    let gpu = try GPUMoELayer(weights: sparse, session: session, dtype: .bf16).forward(x)
    let path = FileManager.default.temporaryDirectory.path + "/samoyeds-verify-\(getpid())-\(c.config.name).safetensors"
    defer { unlink(path) }
    try LayerDump.write(
      to: path, config: c.config, weights: densePruned, x: x, cpuOutput: cpu.output, gpuOutput: gpu.output)
    let name = "\(c.description) seed=\(seed)"
    guard let (status, output) = runProgram(["python3", script, path, "--tolerance", "1e-2"]) else {
      report(name + " (python3 did not start)", .nan, 1e-2)
      return
    }
    let lines = output.split(separator: "\n").map(String.init)
    // compare_hf.py's own n/a line: "NAME (FAMILY): n/a — reason", exit 0.
    let notApplicable = "\(c.config.name) (\(c.config.family.rawValue)): n/a"
    if status == 0, let line = lines.first(where: { $0.hasPrefix(notApplicable) }) {
      print("skip  \(name): \(line.dropFirst(notApplicable.count).drop { $0 == " " || $0 == "—" })")
      return
    }
    let marker = "samoyeds gpu vs transformers: rel. error "
    guard status == 0 || status == 1,  // 1: an error above the tolerance (reported below)
      let line = lines.first(where: { $0.contains(marker) }),
      let value = line.split(separator: marker).last,
      let error = Double(String(value.prefix { !$0.isWhitespace }))
    else {
      report(name + " (compare_hf.py exited \(status): \(lines.last ?? "no output"))", .nan, 1e-2)
      return
    }
    // Exit 1 with the GPU within tolerance means the CPU engine was not: a failure too.
    report(name, status == 0 || !(error < 1e-2) ? error : .nan, 1e-2)
  }
}
