import Testing

@testable import CUDA
@testable import Kernels
import SamoyedsFormat

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Every kernel variant compiles with NVRTC for each target architecture,
/// without warnings. Needs only NVRTC (no GPU): CI installs PyPI's
/// nvidia-cuda-nvrtc and sets SAMOYEDS_REQUIRE_NVRTC=1, so there a missing
/// NVRTC fails the test; elsewhere it is reported and skipped.
@Suite struct NVRTCCompile {
  static var required: Bool { ProcessInfo.processInfo.environment["SAMOYEDS_REQUIRE_NVRTC"] == "1" }

  @Test(arguments: ["sm_80", "sm_89", "sm_90a"])
  func everyKernelCompiles(architecture: String) throws {
    let nvrtc: NVRTC
    do {
      nvrtc = try NVRTC.get()
    } catch {
      if Self.required { Issue.record("NVRTC required but not loadable: \(error)") }
      print("skipping NVRTC compile for \(architecture): \(error)")
      return
    }
    print("NVRTC \(nvrtc.version.major).\(nvrtc.version.minor) from \(nvrtc.path), compiling for \(architecture)")
    let log = try KernelLibrary.compileOnly(architecture: architecture)
    #expect(!log.lowercased().contains("warning"), "NVRTC warnings for \(architecture):\n\(log)")
  }

  /// ptxas must not serialize the Hopper kernel's wgmmas: with `-v` it says
  /// "wgmma.mma_async instructions are serialized" (C7514/C7519/C7520,
  /// numbered by version) when, say, a register read or a divergent path
  /// sits inside a wgmma pipeline stage — correct results, a large loss of
  /// speed, and nothing else would notice.
  @Test func hopperWgmmaIsNotSerialized() throws {
    let nvrtc: NVRTC
    do {
      nvrtc = try NVRTC.get()
    } catch {
      if Self.required { Issue.record("NVRTC required but not loadable: \(error)") }
      return
    }
    let (source, headers) = try KernelLibrary.sources(of: "dual_sparse_gemm_sm90.cu")
    let log = try nvrtc.compile(
      source: source, name: "dual_sparse_gemm_sm90.cu", headers: headers, architecture: "sm_90a",
      options: KernelLibrary.options + ["--ptxas-options=-v"]
    ).log
    let serialized = log.split(separator: "\n").filter { $0.contains("serialized") }
    #expect(serialized.isEmpty, "NVRTC \(nvrtc.version.major).\(nvrtc.version.minor):\n\(serialized.prefix(3).joined(separator: "\n"))")
  }

  @Test func compileErrorsCarryTheLog() throws {
    guard let nvrtc = try? NVRTC.get() else { return }
    #expect {
      try nvrtc.compile(source: "__global__ void k() { undeclared(); }", name: "bad.cu", architecture: "sm_80")
    } throws: { error in
      guard case CUDAError.nvrtc(_, _, _, let log) = error else { return false }
      return log.contains("undeclared")
    }
  }

  @Test func cacheKeyCoversEveryInput() {
    let base = KernelCache.key(
      source: "a", headers: [("h", "1")], architecture: "sm_90a", options: ["-x"], nvrtcVersion: (13, 0))
    #expect(base != KernelCache.key(source: "b", headers: [("h", "1")], architecture: "sm_90a", options: ["-x"], nvrtcVersion: (13, 0)))
    #expect(base != KernelCache.key(source: "a", headers: [("h", "2")], architecture: "sm_90a", options: ["-x"], nvrtcVersion: (13, 0)))
    #expect(base != KernelCache.key(source: "a", headers: [("h", "1")], architecture: "sm_80", options: ["-x"], nvrtcVersion: (13, 0)))
    #expect(base != KernelCache.key(source: "a", headers: [("h", "1")], architecture: "sm_90a", options: ["-y"], nvrtcVersion: (13, 0)))
    #expect(base != KernelCache.key(source: "a", headers: [("h", "1")], architecture: "sm_90a", options: ["-x"], nvrtcVersion: (13, 5)))
    #expect(base == KernelCache.key(source: "a", headers: [("h", "1")], architecture: "sm_90a", options: ["-x"], nvrtcVersion: (13, 0)))
  }

  @Test func entryPointsMatchTheSource() throws {
    let (source, _) = try KernelLibrary.sources(of: "dual_sparse_gemm.cu")
    for prefix in ["samoyeds_bf16_n1m2", "samoyeds_fp16_n1m2", "samoyeds_bf16_n1m4", "samoyeds_bf16_n2m4", "samoyeds_bf16_n1m8"] {
      #expect(source.contains(prefix), "\(prefix) missing from the .cu file")
    }
    // The routing kernels are written out by name, each an extern "C" kernel.
    let (routing, _) = try KernelLibrary.sources(of: "moe_routing.cu")
    for name in MoERouting.entryPoints {
      #expect(routing.contains("\n    \(name)(const "), "\(name) missing from moe_routing.cu")
    }
    #expect(KernelLibrary.files.map(\.name) == ["dual_sparse_gemm.cu", "moe_routing.cu", "dual_sparse_gemm_sm90.cu"])
    #expect(KernelLibrary.files(for: "sm_80").map(\.name) == ["dual_sparse_gemm.cu", "moe_routing.cu"])
    #expect(KernelLibrary.files(for: "sm_90a").count == 3)
    // The Hopper family: one entry point per dtype, pattern and epilogue,
    // each an extern "C" kernel made by SAMOYEDS_SM90 from a prefix the file names.
    let (hopper, _) = try KernelLibrary.sources(of: "dual_sparse_gemm_sm90.cu")
    for name in KernelLibrary.sm90EntryPoints {
      let prefix = name.split(separator: "_").prefix(3).joined(separator: "_")
      #expect(hopper.contains("SAMOYEDS_SM90_EPILOGUES(\(prefix),"), "\(name): no \(prefix) in dual_sparse_gemm_sm90.cu")
    }
    // Per dtype, pattern and epilogue: rt1, rt2, split, stream, stream_grouped
    // (+ bn32, rt2x2, rt4 for 1:2); then logits (bf16, fp16), select, scan,
    // scatter, the shared gate and the decode routing (bf16, fp16); then sm90
    // and sm90_grouped.
    #expect(
      KernelLibrary.entryPoints.count
        == 2 + 2 * PortableKernel.supportedPatterns.count * 4 * 5 + 2 * 4 * 3 + 9
        + 2 * PortableKernel.supportedPatterns.count * 4 * 2)
    #expect(Set(KernelLibrary.entryPoints).count == KernelLibrary.entryPoints.count, "an entry point twice")
  }

  /// The value of `constexpr int NAME = <digits>` at the start of a line of `text`.
  static func constant(_ name: String, in text: String) -> Int? {
    let prefix = "constexpr int \(name) = "
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) else { return nil }
    return Int(line.dropFirst(prefix.count).prefix { $0.isNumber })
  }

  /// The Swift mirrors of the portable kernel's ring depths (the host sizes
  /// their shared memory) are the source's values.
  @Test func portableConstantsMatchTheSource() throws {
    let (source, _) = try KernelLibrary.sources(of: "dual_sparse_gemm.cu")
    func constant(_ name: String) -> Int? { Self.constant(name, in: source) }
    #expect(constant("kStreamDepth") == PortableKernel.streamDepth)
    #expect(constant("kStages") == PortableKernel.stages)
    #expect(constant("kWideStages") == PortableKernel.wideStages)
    #expect(constant("kWideStageChunks") == PortableKernel.Tiling.rt4.chunksPerStage)
    #expect(constant("kWideRowTiles").map { $0 * PortableKernel.warps / (constant("kWideTokenWarps") ?? 0) }
      == PortableKernel.warps * PortableKernel.Tiling.rt4.rowTiles)
    // 1:2, 64 tokens: three stages of 32 KB of fragments, 4 KB of metadata
    // and 64 token rows of 272 bytes; the epilogue tile (64 × 516 floats) is smaller.
    #expect(PortableKernel.wideSharedBytes(tokenTile: 64, pattern: .default) == 3 * (32768 + 4096 + 64 * 272))
  }

  /// The Swift mirrors of the Hopper kernel's configuration (shared-memory
  /// size, threads, stage shape) are the source's values: a mismatch would
  /// launch with too little shared memory.
  @Test func hopperConstantsMatchTheSource() throws {
    let (source, headers) = try KernelLibrary.sources(of: "dual_sparse_gemm_sm90.cu")
    let text = ([source] + headers.map(\.contents)).joined(separator: "\n")
    func constant(_ name: String) -> Int? { Self.constant(name, in: text) }
    #expect(constant("kStages") == PortableKernel.wgmmaStages)
    #expect(constant("kStageChunks") == PortableKernel.Tiling.wgmma.chunksPerStage)
    #expect(constant("kProducerThreads").map { $0 + PortableKernel.threads } == PortableKernel.wgmmaThreads)
    #expect(constant("kWarps") == PortableKernel.warps && constant("kTileRows") == PortableKernel.rowsPerWarp)
    // 1:2 at BN = 128: four stages of 50 KB (two 16 KB token slabs, 16 KB of
    // fragments, 2 KB of metadata), two barriers per stage, 1 KB for alignment.
    let shared = PortableKernel.wgmmaSharedBytes(tokenTile: 128, pattern: .default)
    #expect(shared == PortableKernel.wgmmaStages * (2 * 128 * 128 + 8 * 4 * 32 * 16 + 8 * 2 * 32 * 4) + 16 * PortableKernel.wgmmaStages + 1024)
  }

  /// The Swift mirrors of moe_routing.cu's configuration are the source's values.
  @Test func routingConstantsMatchTheSource() throws {
    let (source, _) = try KernelLibrary.sources(of: "moe_routing.cu")
    func constant(_ name: String) -> Int? { Self.constant(name, in: source) }
    let mirrors: [(String, Int)] = [
      ("kMaxExperts", MoERouting.maxExperts), ("kMaxTopK", MoERouting.maxTopK), ("kChunk", MoERouting.hiddenMultiple),
      ("kTileTokens", MoERouting.tileTokens), ("kTileExperts", MoERouting.tileExperts),
      ("kLogitThreads", MoERouting.logitThreads), ("kSelectWarps", MoERouting.selectWarps),
      ("kBlockTokens", MoERouting.blockTokens), ("kScatterWarps", MoERouting.scatterWarps),
      ("kScanThreads", MoERouting.scanThreads), ("kSmallTokens", MoERouting.smallTokens),
      ("kSmallWarps", MoERouting.smallWarps),
    ]
    for (name, value) in mirrors { #expect(constant(name) == value, "\(name)") }
  }
}

/// The packed layout, checked on the CPU by emulating mma.sp m16n8k32 from
/// the PTX ISA's fragment and metadata description (the GPU run of
/// `samoyeds verify` confirms the same description on hardware).
@Suite struct PackingEmulation {
  /// One warp's mma.sp over a 16-row tile and a k32 chunk: D[16][8].
  func emulate(_ packed: PackedSparseWeight, tile: Int, chunk: Int, b: (Int, Int) -> Float) -> [[Float]] {
    var d = [[Float]](repeating: [Float](repeating: 0, count: 8), count: 16)
    func value(_ bits: UInt32) -> Float { BFloat16(bitPattern: UInt16(bits & 0xFFFF)).floatValue }
    let pair = chunk / 2
    let selector = chunk % 2
    for lane in 0..<32 {
      let g = lane / 4
      let t = lane % 4
      let base = ((tile * packed.chunks + chunk) * 32 + lane) * 4
      // (register, row, compressed column) of the m16n8k16 A fragment.
      let layout = [(0, g, 2 * t), (1, g + 8, 2 * t), (2, g, 2 * t + 8), (3, g + 8, 2 * t + 8)]
      for (register, row, column) in layout {
        let word = packed.fragments[base + register]
        for (offset, element) in [word & 0xFFFF, word >> 16].enumerated() {
          let compressed = column + offset  // 0..15
          // Metadata for this row and half of the chunk comes from lane
          // (g, 2 * selector + half) of the pair's word.
          let half = compressed / 8
          let metaLane = g * 4 + 2 * selector + half
          let e = packed.metadata[(tile * packed.chunkPairs + pair) * 32 + metaLane]
          let rowBits = row < 8 ? e & 0xFFFF : e >> 16
          let slot = compressed % 8  // value index within the 16-column half
          let position = Int((rowBits >> UInt32(2 * slot)) & 3)
          let k = half * 16 + (slot / 2) * 4 + position
          for n in 0..<8 { d[row][n] += value(element) * b(k, n) }
        }
      }
    }
    return d
  }

  @Test func packedFragmentsReproduceTheDenseProduct() throws {
    for (index, text) in ["1:2:32", "1:2:128", "2:4:32", "1:8:64"].enumerated() {
      let seed = UInt64(500 + index)
      var rng = SeededGenerator(seed: seed)
      let pattern = try SparsePattern(parsing: text)
      let m = pattern.groupRows * 24 / pattern.keptRows  // 24 condensed rows: a padded second tile
      let k = pattern.vectorLength == 32 ? 96 : 2 * pattern.vectorLength  // 96: an odd chunk count
      let sparse = try SparseMatrix<BFloat16>.prune(
        Matrix<BFloat16>.rounding(rng.normalMatrix(rows: m, columns: k)), pattern: pattern)
      let packed = PackedSparseWeight(sparse)
      let x = rng.normalMatrix(rows: 8, columns: k)
      let dense = sparse.densified().toFloat()
      for tile in 0..<packed.rowTiles {
        for chunk in 0..<packed.chunks {
          let d = emulate(packed, tile: tile, chunk: chunk) { kk, n in x[n, chunk * 32 + kk] }
          for r in 0..<16 {
            let condensed = tile * 16 + r
            for n in 0..<8 {
              var expected: Float = 0
              if condensed < sparse.condensedRows {
                let row = sparse.originalRow(condensedRow: condensed, vector: chunk * 32 / pattern.vectorLength)
                for kk in 0..<32 { expected += dense[row, chunk * 32 + kk] * x[n, chunk * 32 + kk] }
              }
              #expect(abs(d[r][n] - expected) <= 1e-4 * max(1, abs(expected)), "\(text) tile \(tile) chunk \(chunk) row \(r) seed \(seed)")
            }
          }
        }
      }
    }
  }
}

/// The split-k plan covers every chunk exactly once, in whole chunk pairs,
/// for every tiling and shape class (no device needed).
@Suite struct SplitPlanning {
  static let shapes: [(m: Int, k: Int, pattern: String)] = [
    (14336, 4096, "1:2:128"), (4096, 14336, "1:2:128"), (1408, 2048, "1:2:128"), (2, 128, "1:2:128"),
    (96, 256, "1:4:64"), (64, 96, "2:4:32"), (64, 128, "1:8:32"), (256, 32, "1:2:32"),
  ]

  @Test(arguments: PortableKernel.Tiling.allCases)
  func everyChunkOnceInPairs(tiling: PortableKernel.Tiling) throws {
    for (m, k, text) in Self.shapes {
      let pattern = try SparsePattern(parsing: text)
      if PortableKernel.tokenTile(pattern, tiling) == nil { continue }  // not instantiated
      let condensed = m / pattern.groupRows * pattern.keptRows
      for count in [0, 1, 3, 16, 64, 77, 1000, 16384] {
        for forced in [nil, 1, 3, 1000] as [Int?] {
          for twoWeights in [false, true] {
            for maxChunks in [Int.max, 90, 2] {
              let problem = PortableKernel.SplitProblem(
                pattern: pattern, rows: m, columns: k, condensedRows: condensed, weightBytes: m * k / 2,
                count: count, twoWeights: twoWeights, splits: forced)
              let (splits, perSplit) = PortableKernel.splitPlan(
                problem, multiprocessors: 132, tiling: tiling, maxChunksPerSplit: maxChunks)
              let chunks = k / 32
              let label = "\(tiling) \(m)x\(k) \(text) T=\(count) forced=\(String(describing: forced)) max=\(maxChunks)"
              #expect(splits >= 1, "\(label)")
              #expect(perSplit % 2 == 0 && perSplit >= 2, "\(label)")
              #expect(splits * perSplit >= chunks, "\(label): chunks left over")
              #expect((splits - 1) * perSplit < max(chunks, 1), "\(label): an empty split")
              if tiling == .rt4 {
                // No partial stage: whole 4-chunk stages (the limit is the
                // streaming kernel's and does not apply).
                #expect(perSplit % 4 == 0, "\(label)")
              } else if chunks >= 2 && maxChunks < Int.max {
                #expect(perSplit <= max(maxChunks, 2), "\(label)")
              }
            }
          }
        }
      }
    }
  }
}

extension SplitPlanning {
  /// The streaming split keeps `streamMinimumSplitBytes` of weight per CTA
  /// (one row block, one split): a small weight takes few long splits, a
  /// Mixtral-sized one keeps the splits that fill one wave.
  @Test func streamingSplitsKeepEnoughWeightPerCTA() {
    func splits(_ m: Int, _ k: Int, weightBytes: Int) -> Int {
      let problem = PortableKernel.SplitProblem(
        pattern: .default, rows: m, columns: k, condensedRows: m / 2, weightBytes: weightBytes, count: 1,
        twoWeights: false, splits: nil)
      return PortableKernel.splitPlan(problem, multiprocessors: 132, tiling: .stream).splits
    }
    let minimum = PortableKernel.streamMinimumSplitBytes
    // 1408x2048: 44 row tiles = 6 row blocks of 8 warps, 1.63 MB packed.
    let small = splits(1408, 2048, weightBytes: 1_630_000)
    #expect(minimum == 0 || 1_630_000 / (6 * small) >= minimum)
    if minimum == 48 << 10 {
      #expect(small == 5)
      // 2048x1408: 8 row blocks: 4 splits of 51 KB each (measured best at T = 16-64).
      #expect(splits(2048, 1408, weightBytes: 1_633_280) == 4)
    }
    // 14336x4096: 56 row blocks, 33 MB packed: 2 CTAs per SM over 56 row blocks = 4 splits.
    #expect(splits(14336, 4096, weightBytes: 33_200_000) == 4)
  }

  /// The partials of a small weight's splits stay in L2, so the streaming
  /// split may write up to the weight's bytes (or 4 MB) of them: at T = 64
  /// the small shapes keep the splits they have at T = 1.
  @Test func streamingSplitsAtSixtyFourTokens() {
    for (m, k) in [(1408, 2048), (2048, 1408)] {
      let pattern = SparsePattern.default
      let bytes = PackedSparseWeight.deviceBytes(rows: m, columns: k, pattern: pattern)
      func splits(_ count: Int) -> Int {
        let problem = PortableKernel.SplitProblem(
          pattern: pattern, rows: m, columns: k, condensedRows: m / 2, weightBytes: bytes, count: count,
          twoWeights: false, splits: nil)
        return PortableKernel.splitPlan(problem, multiprocessors: 132, tiling: .stream).splits
      }
      #expect(splits(64) == splits(1), "\(m)x\(k)")
      #expect(splits(64) >= 4, "\(m)x\(k)")
    }
  }

  /// rt4 runs one CTA per SM, so the planner splits k to fill one wave,
  /// not two: the splits measured best on an H200 at T = 64-256.
  @Test func wideTilingSplitsForOneWave() {
    func splits(_ m: Int, _ k: Int, tokens: Int) -> (splits: Int, chunksPerSplit: Int) {
      let pattern = SparsePattern.default
      let problem = PortableKernel.SplitProblem(
        pattern: pattern, rows: m, columns: k, condensedRows: m / 2,
        weightBytes: PackedSparseWeight.deviceBytes(rows: m, columns: k, pattern: pattern), count: tokens,
        twoWeights: false, splits: nil)
      return PortableKernel.splitPlan(problem, multiprocessors: 132, tiling: .rt4)
    }
    // 14336x4096: 28 row blocks of 256 condensed rows; 64-token tiles.
    #expect(splits(14336, 4096, tokens: 64) == (4, 32))
    #expect(splits(14336, 4096, tokens: 128) == (2, 64))
    #expect(splits(14336, 4096, tokens: 256) == (1, 128))
    // 4096x14336: 8 row blocks.
    #expect(splits(4096, 14336, tokens: 64) == (16, 28))
    #expect(splits(4096, 14336, tokens: 128) == (8, 56))
    #expect(splits(4096, 14336, tokens: 256) == (4, 112))
    // A full grid is not split.
    #expect(splits(14336, 4096, tokens: 1024).splits == 1)
  }
}

/// The grouped launch's grid: enough 16-token tiles for any split of the
/// entries among the experts, splits that fill the GPU without passing the
/// shared-memory limit, whole chunk pairs.
@Suite struct GroupedPlanning {
  @Test func tilesCoverEveryRoutingAndSplitsCoverK() {
    for (experts, entries) in [(8, 2), (8, 32), (60, 8), (64, 96), (128, 8), (8, 1000)] {
      for (m, k) in [(14336, 4096), (4096, 14336), (1408, 2048), (2048, 1408)] {
        for twoWeights in [false, true] {
          let p = GroupedLaunch.plan(
            experts: experts, rows: m, columns: k, condensedRows: m / 2, maxEntries: entries, twoWeights: twoWeights,
            multiprocessors: 132, maxChunksPerSplit: 60)
          let label = "E=\(experts) entries=\(entries) \(m)x\(k) silu=\(twoWeights)"
          // The worst case: every expert's last tile partial.
          let active = min(experts, entries)
          #expect(p.tiles >= entries / 16 + active, "\(label)")
          // The tiles of a routing where each of `active` experts takes one entry, the rest one expert.
          #expect(p.tiles >= (active - 1) + (entries - (active - 1) + 15) / 16, "\(label)")
          #expect(p.chunksPerSplit % 2 == 0 && p.chunksPerSplit <= max(60, 2), "\(label)")
          #expect(p.splits * p.chunksPerSplit >= k / 32 && (p.splits - 1) * p.chunksPerSplit < k / 32, "\(label)")
          #expect(p.rowBlocks * (twoWeights ? 4 : 8) * 16 >= m / 2, "\(label)")
        }
      }
    }
  }

  /// The Hopper kernel's grouped grid: bn-token tiles for any routing,
  /// whole 4-chunk stages, splits only below one wave and within the counters.
  @Test func wgmmaTilesCoverEveryRoutingAndSplitsStayInTheCounters() {
    for (experts, entries) in [(8, 2), (8, 256), (60, 8), (64, 96), (128, 8), (8, 2048), (128, 131_072), (8, 32768)] {
      for (m, k) in [(14336, 4096), (4096, 14336), (1408, 2048), (2048, 1408), (256, 64)] {
        for twoWeights in [false, true] {
          let bn = 128
          let p = GroupedLaunch.wgmmaPlan(
            experts: experts, columns: k, condensedRows: m / 2, tokenTile: bn, maxEntries: entries,
            twoWeights: twoWeights, multiprocessors: 132)
          let label = "E=\(experts) entries=\(entries) \(m)x\(k) silu=\(twoWeights)"
          let active = min(experts, entries)
          #expect(p.tiles >= entries / bn + active, "\(label)")
          #expect(p.tiles >= (active - 1) + (entries - (active - 1) + bn - 1) / bn, "\(label)")
          #expect(p.chunksPerSplit % 4 == 0, "\(label)")
          #expect(p.splits * p.chunksPerSplit >= k / 32, "\(label)")
          #expect(p.splits == 1 || (p.splits - 1) * p.chunksPerSplit < k / 32, "\(label): an empty split")
          #expect(p.splits == 1 || p.tiles * p.rowBlocks <= 32768, "\(label): more tiles than counters")
          #expect(p.rowBlocks * (twoWeights ? 4 : 8) * 16 >= m / 2, "\(label)")
        }
      }
    }
  }
}

/// Which split-k launches sum their own partials (each tile's last split)
/// and which leave them to the `_split` launch: the points measured on an
/// H200 (docs/KERNELS.md, "Split-k").
@Suite struct SplitSumPlacement {
  @Test(arguments: PortableKernel.Tiling.allCases)
  func measuredPointsFallOnTheirSide(tiling: PortableKernel.Tiling) {
    // Faster in the launch: T = 1 at 4..32 splits, T = 16 at 3..4 splits.
    for (count, splits) in [(1, 4), (1, 32), (16, 4), (16, 3), (5, 4)] {
      #expect(
        PortableKernel.sumsSplitsInKernel(count: count, splits: splits, tiles: 56, tiling: tiling),
        "\(tiling) T=\(count) splits=\(splits)")
    }
    // Slower: T = 16 at 16 splits; no split; too many tiles for the counters.
    for (count, splits, tiles) in [(16, 16, 16), (1, 1, 56), (1, 4, 40000), (100, 4, 56)] {
      #expect(
        !PortableKernel.sumsSplitsInKernel(count: count, splits: splits, tiles: tiles, tiling: tiling),
        "\(tiling) T=\(count) splits=\(splits)")
    }
    // T = 17-64: a streaming tile still holds 16 tokens, so its sum is as
    // short as at T = 16; the other tilings' tiles grow with T (slower at 64).
    for (count, splits) in [(17, 2), (40, 4), (64, 5)] {
      #expect(
        PortableKernel.sumsSplitsInKernel(count: count, splits: splits, tiles: 56, tiling: tiling) == (tiling == .stream),
        "\(tiling) T=\(count) splits=\(splits)")
    }
  }
}

/// Where split-k sums through distributed shared memory: the streaming and
/// rt4 tilings (every thread reaches their epilogue's cluster barriers), on
/// GPUs that launch clusters, up to `clusterSumSplits` splits (8 unless
/// `SAMOYEDS_CLUSTER_SUM_SPLITS` says otherwise).
@Suite struct ClusterSumPlacement {
  @Test(arguments: PortableKernel.Tiling.allCases)
  func clusterSumsTheStreamingAndRt4SplitsOnClusterGPUs(tiling: PortableKernel.Tiling) {
    let limit = PortableKernel.clusterSumSplits
    #expect((0...16).contains(limit))
    for splits in [1, 2, 3, 4, 5, 8, 9, 16, 17] {
      let expected = splits > 1 && splits <= limit && (tiling == .stream || tiling == .rt4)
      #expect(
        PortableKernel.sumsSplitsInCluster(splits: splits, tiling: tiling, acceptsLaunchAttributes: true) == expected,
        "\(tiling) splits=\(splits) limit=\(limit)")
      #expect(
        !PortableKernel.sumsSplitsInCluster(splits: splits, tiling: tiling, acceptsLaunchAttributes: false),
        "\(tiling) splits=\(splits) without cluster launches")
    }
  }
}

/// The GPU router's host side: what it refuses, how it splits the logits and
/// lays out its workspace (no device needed).
@Suite struct RoutingHostSide {
  static let base = MoERouting.Problem(
    tokens: 77, hidden: 256, experts: 32, topK: 8, dtype: .bf16, renormalize: true)

  func rejection(_ change: (inout MoERouting.Problem) -> Void) -> String? {
    var problem = Self.base
    change(&problem)
    do {
      try MoERouting.canImplement(problem)
      return nil
    } catch {
      guard case .invalidArgument(let text) = error else { return "unexpected \(error)" }
      return text
    }
  }

  @Test func acceptsEveryPresetShape() throws {
    #expect(rejection { _ in } == nil)
    // Qwen3-30B-A3B: 128 experts, top-8, hidden 2048; DeepSeek-V3-sized 256 experts; T = 0 and 16384.
    #expect(rejection { $0.experts = 128; $0.hidden = 2048; $0.tokens = 16384 } == nil)
    #expect(rejection { $0.experts = MoERouting.maxExperts; $0.hidden = 7168 } == nil)
    #expect(rejection { $0.tokens = 0 } == nil)
    #expect(rejection { $0.dtype = .fp16; $0.capacity = 0; $0.renormalize = false } == nil)
    #expect(rejection { $0.topK = 32; $0.experts = 32 } == nil)
  }

  @Test func refusesWhatTheKernelsCannotDo() {
    #expect(rejection { $0.dtype = .f32 }?.contains("bf16 or fp16, not f32") == true)
    #expect(rejection { $0.experts = MoERouting.maxExperts + 1 }?.contains("1 to 256") == true)
    #expect(rejection { $0.experts = 0 }?.contains("1 to 256") == true)
    #expect(rejection { $0.topK = 33; $0.experts = 64 }?.contains("min(E, 32)") == true)
    #expect(rejection { $0.topK = 9; $0.experts = 8 }?.contains("top-9 of 8") == true)
    #expect(rejection { $0.topK = 0 } != nil)
    #expect(rejection { $0.hidden = 100 }?.contains("multiple of 32") == true)
    #expect(rejection { $0.hidden = 0 }?.contains("multiple of 32") == true)
    #expect(rejection { $0.tokens = -1 }?.contains("negative token count") == true)
    #expect(rejection { $0.tokens = Int(Int32.max) / 8 }?.contains("32-bit") == true)
    #expect(rejection { $0.capacity = -1 }?.contains("negative capacity") == true)
    #expect(rejection { $0.splits = 0 }?.contains("splits") == true)
  }

  /// Every 32-column stage of the hidden size belongs to exactly one split;
  /// a grid that fills the GPU is not split; T = 1 is.
  @Test func logitSplitsCoverEveryStageOnce() {
    for hidden in [32, 256, 2048, 2304, 7168] {
      for tokens in [0, 1, 3, 77, 1000, 16384] {
        for experts in [8, 60, 128, 256] {
          for forced in [nil, 1, 5, 1000] as [Int?] {
            var problem = Self.base
            (problem.hidden, problem.tokens, problem.experts, problem.topK, problem.splits) =
              (hidden, tokens, experts, 2, forced)
            let (splits, perSplit) = MoERouting.logitSplits(problem, multiprocessors: 132)
            let chunks = hidden / 32
            let label = "hidden \(hidden) T=\(tokens) E=\(experts) forced \(String(describing: forced))"
            #expect(splits >= 1 && perSplit >= 1, "\(label)")
            #expect(splits * perSplit >= chunks && (splits - 1) * perSplit < chunks, "\(label)")
            if forced == nil { #expect(splits <= MoERouting.maxSplits, "\(label)") }
          }
        }
      }
    }
    var decode = Self.base
    (decode.tokens, decode.hidden, decode.experts) = (1, 2048, 128)
    #expect(MoERouting.logitSplits(decode, multiprocessors: 132).splits == MoERouting.maxSplits)
    decode.tokens = 16384
    #expect(MoERouting.logitSplits(decode, multiprocessors: 132).splits == 1)
  }

  /// Sections in order, 256-byte aligned, each as large as its array.
  @Test func workspaceSectionsDoNotOverlap() {
    var problem = Self.base
    (problem.tokens, problem.experts, problem.topK) = (1000, 60, 4)
    let layout = MoERouting.WorkspaceLayout(problem, splits: 3)
    let blocks = (1000 + 127) / 128
    let sections = [
      (layout.arrivals, 4), (layout.logits, 3 * 1000 * 60 * 4), (layout.counts, 60 * 4 * blocks * 4), (layout.admitted, 60 * 4 * blocks * 4),
      (layout.blockStart, 60 * blocks * 4), (layout.expertTotals, 60 * 4),
    ]
    #expect(layout.countsBytes == 60 * 4 * blocks * 4)
    for (i, (offset, bytes)) in sections.enumerated() {
      #expect(offset % 256 == 0)
      let end = i + 1 < sections.count ? sections[i + 1].0 : layout.bytes
      #expect(offset + bytes <= end, "section \(i)")
    }
    let splits = MoERouting.logitSplits(problem, multiprocessors: 132).splits
    #expect(
      MoERouting.workspaceBytes(problem, multiprocessors: 132)
        == MoERouting.WorkspaceLayout(problem, splits: splits).bytes)
    problem.tokens = 0
    #expect(MoERouting.workspaceBytes(problem, multiprocessors: 132) == 0)
  }

  /// The one-launch decode path: 1 ... 16 tokens (T <= 8 by default), never
  /// with capacity drops or a forced split; its layout fits in the general
  /// path's workspace.
  @Test func decodeRoutingTakesFewTokensWithoutDrops() {
    var problem = Self.base
    problem.tokens = 1
    #expect(MoERouting.routesInOneLaunch(problem) == (MoERouting.smallPathTokens >= 1))
    for tokens in [1, 7, 16] {
      problem.tokens = tokens
      problem.capacity = nil
      #expect(MoERouting.routesInOneLaunch(problem, upTo: 16), "T=\(tokens)")
      #expect(
        MoERouting.WorkspaceLayout(problem, splits: 1).bytes
          <= MoERouting.workspaceBytes(problem, multiprocessors: 132))
      problem.capacity = tokens - 1  // a drop is possible
      #expect(!MoERouting.routesInOneLaunch(problem, upTo: 16), "T=\(tokens) capacity \(tokens - 1)")
      problem.capacity = tokens
      #expect(MoERouting.routesInOneLaunch(problem, upTo: 16), "T=\(tokens) capacity \(tokens)")
      problem.splits = 1  // forced: the general path
      #expect(!MoERouting.routesInOneLaunch(problem, upTo: 16), "T=\(tokens) forced split")
      problem.splits = nil
    }
    for tokens in [0, 17, 1000] {
      problem.tokens = tokens
      problem.capacity = nil
      #expect(!MoERouting.routesInOneLaunch(problem, upTo: 64), "T=\(tokens)")
    }
  }
}

/// The kernel's row-selection fold (`RowSelection` in dual_sparse_gemm.cu),
/// replayed on the CPU: a running total T never reset, and at each vector's
/// end bank b += ([s_v = b] − [s_{v+1} = b]) · T (s after the split = none),
/// with the last bank = total − the kept ones, equals adding each vector's
/// partial sum to the bank its selection names.
@Suite struct TelescopedFold {
  @Test(arguments: [(1, 2), (1, 4), (2, 4), (1, 8)])
  func telescopedBanksEqualDirectSums(n: Int, m: Int) {
    let seed = UInt64(n * 131 + m)
    var rng = SeededGenerator(seed: seed)
    let banks = m - n + 1
    for trial in 0..<200 {
      let vectors = Int.random(in: 1...40, using: &rng)
      let selections = (0..<vectors).map { _ in Int.random(in: 0..<banks, using: &rng) }
      let partials = (0..<vectors).map { _ in Float.random(in: -4...4, using: &rng) }
      var direct = [Float](repeating: 0, count: banks)
      for v in 0..<vectors { direct[selections[v]] += partials[v] }

      var total: Float = 0
      var kept = [Float](repeating: 0, count: banks - 1)
      for v in 0..<vectors {
        total += partials[v]
        let next = v + 1 < vectors ? selections[v + 1] : -1  // the split ends: none
        for b in 0..<(banks - 1) {
          let coefficient = Float(selections[v] == b ? 1 : 0) - Float(next == b ? 1 : 0)
          kept[b] = kept[b].addingProduct(coefficient, total)  // the kernel's fmaf
        }
      }
      let folded = kept + [total - kept.reduce(0, +)]
      for b in 0..<banks {
        #expect(
          abs(folded[b] - direct[b]) <= 1e-4 * max(1, abs(direct[b])),
          "N:M \(n):\(m) seed \(seed) trial \(trial) bank \(b): \(folded[b]) vs \(direct[b])")
      }
    }
  }
}

extension TelescopedFold {
  /// CUDA's `__byte_perm(x, y, s)`: byte i of the result is byte
  /// `(s >> 4i) & 7` of the 8 bytes of (y:x).
  static func bytePerm(_ x: UInt32, _ y: UInt32, _ selector: UInt32) -> UInt32 {
    let bytes = (0..<4).map { UInt8(truncatingIfNeeded: x >> (8 * $0)) } + (0..<4).map { UInt8(truncatingIfNeeded: y >> (8 * $0)) }
    return (0..<4).reduce(UInt32(0)) { word, i in word | UInt32(bytes[Int((selector >> (4 * UInt32(i))) & 7)]) << (8 * UInt32(i)) }
  }

  /// The rt4 kernel's `PairSelection` on the CPU: selections gathered from
  /// 32-bit words of 4 vectors (`gather`), then every 1:2 coefficient
  /// s_{v+1} - s_v from the bytewise difference and the 2^23 float trick,
  /// including the split's end (s taken as 1). Compared with the direct
  /// coefficient of `telescopedBanksEqualDirectSums`.
  @Test func pairSelectionBytesGiveTheFoldCoefficients() {
    let seed: UInt64 = 0x5E1EC7
    var rng = SeededGenerator(seed: seed)
    for trial in 0..<500 {
      // 8 rows (one lane's), 4 vectors per 32-bit word, as in device memory.
      let selections = (0..<8).map { _ in (0..<4).map { _ in UInt8.random(in: 0...1, using: &rng) } }
      let words = selections.map { row in row.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) } }
      func gather(_ k: Int) -> [UInt32] {
        let select = UInt32(k) | UInt32(k + 4) << 4
        return (0..<2).map { half in
          let low = Self.bytePerm(words[4 * half], words[4 * half + 1], select)
          let high = Self.bytePerm(words[4 * half + 2], words[4 * half + 3], select)
          return Self.bytePerm(low, high, 0x5410)
        }
      }
      let v = Int.random(in: 0..<4, using: &rng)
      let last = v == 3 || Bool.random(using: &rng)
      let current = gather(v)
      let next = last ? [0x0101_0101, 0x0101_0101] : gather(v + 1)
      for half in 0..<2 {
        let x = next[half] &+ 0x0101_0101 &- current[half]
        for r in 0..<4 {
          let row = 4 * half + r
          let coefficient = Float(bitPattern: Self.bytePerm(x, 0x4B00_0000, 0x7540 + UInt32(r))) - 8_388_609
          let expected = Float(last ? 1 : Int(selections[row][v + 1])) - Float(selections[row][v])
          #expect(coefficient == expected, "seed \(seed) trial \(trial) row \(row) vector \(v) last \(last)")
        }
      }
    }
  }
}

/// The tuning table: buckets, lookup, replacement, and the file (no device needed).
@Suite struct TuningTable {
  static func key(tokens: Int, m: Int = 14336, device: String = "NVIDIA H200") -> KernelTuning.Key {
    KernelTuning.Key(device: device, architecture: "sm_90a", dtype: "bf16", pattern: "1:2:128", m: m, k: 4096, tokens: tokens)
  }

  @Test func bucketsArePowersOfTwo() {
    #expect([0, 1, 2, 3, 64, 65, 1000, 1024, 16384].map(KernelTuning.bucket) == [1, 1, 2, 4, 64, 128, 1024, 1024, 16384])
  }

  @Test func lookupTakesTheBucketThenTheNearestTunedOne() {
    var table = KernelTuning()
    table.record(.init(key: Self.key(tokens: 16), tiling: "stream", milliseconds: ["stream": 0.02]))
    table.record(.init(key: Self.key(tokens: 64), tiling: "wgmma", milliseconds: ["wgmma": 0.03]))
    table.record(.init(key: Self.key(tokens: 1024), tiling: "rt2x2", milliseconds: ["rt2x2": 0.2]))
    #expect(table.tiling(for: Self.key(tokens: 9)) == .stream)     // bucket 16
    #expect(table.tiling(for: Self.key(tokens: 48)) == .wgmma)     // bucket 64
    #expect(table.tiling(for: Self.key(tokens: 4)) == .stream)     // nearest: 16, two steps
    #expect(table.tiling(for: Self.key(tokens: 1)) == nil)         // 16 is four steps away: built-in choice
    #expect(table.tiling(for: Self.key(tokens: 256)) == .rt2x2)    // 64 and 1024 are both 2 steps: the larger
    #expect(table.tiling(for: Self.key(tokens: 4096)) == .rt2x2)
    #expect(table.tiling(for: Self.key(tokens: 100_000)) == nil)
    #expect(table.tiling(for: Self.key(tokens: 64, m: 4096)) == nil)  // another shape: untuned
    #expect(table.tiling(for: Self.key(tokens: 64, device: "NVIDIA H100")) == nil)
    // Same key again: replaced, not duplicated.
    table.record(.init(key: Self.key(tokens: 64), tiling: "rt1", milliseconds: ["rt1": 0.025]))
    #expect(table.entries.count == 3)
    #expect(table.tiling(for: Self.key(tokens: 64)) == .rt1)
    // A tiling this build does not know is ignored, even when nearest.
    table.record(.init(key: Self.key(tokens: 4096), tiling: "future", milliseconds: [:]))
    #expect(table.tiling(for: Self.key(tokens: 4096)) == .rt2x2)
    #expect(table.tiling(for: Self.key(tokens: 2048)) == .rt2x2)
  }

  @Test func fileRoundTripAndBadFiles() throws {
    let folder = FileManager.default.temporaryDirectory.path + "/samoyeds-tuning-\(UInt64.random(in: 0...UInt64.max))"
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let path = folder + "/sub/tuning.json"
    #expect(try KernelTuning.load(path: path) == KernelTuning())  // missing: empty
    var table = KernelTuning()
    table.record(.init(key: Self.key(tokens: 1024), tiling: "wgmma", milliseconds: ["wgmma": 0.139, "rt2x2": 0.292]))
    try table.write(to: path)
    #expect(try KernelTuning.load(path: path) == table)
    for (contents, expected) in [
      ("{\"version\": 1, \"entr", "not a Samoyeds tuning table"),
      ("{\"version\": 7, \"entries\": []}", "format version 7"),
    ] {
      try Data(contents.utf8).write(to: URL(fileURLWithPath: path))
      #expect {
        try KernelTuning.load(path: path)
      } throws: { error in
        "\(error)".contains(path) && "\(error)".contains(expected)
      }
    }
  }
}
