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
    let (source, _) = try KernelLibrary.sources()
    for prefix in ["samoyeds_bf16_n1m2", "samoyeds_fp16_n1m2", "samoyeds_bf16_n1m4", "samoyeds_bf16_n2m4", "samoyeds_bf16_n1m8"] {
      #expect(source.contains(prefix), "\(prefix) missing from the .cu file")
    }
    // Per dtype, pattern and epilogue: rt1, rt2, split, stream (+ bn32, rt2x2 for 1:2).
    #expect(KernelLibrary.entryPoints.count == 2 + 2 * PortableKernel.supportedPatterns.count * 4 * 4 + 2 * 4 * 2)
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
              if chunks >= 2 && maxChunks < Int.max { #expect(perSplit <= max(maxChunks, 2), "\(label)") }
            }
          }
        }
      }
    }
  }
}
