import ArgumentParser
import CUDA
import Kernels

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `samoyeds compile`: fills the kernel cache for named GPU architectures
/// without a GPU, so that a machine with that GPU loads the kernels instead
/// of compiling them on first use (a cold compile of every file takes about
/// a minute).
struct Compile: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Compile every kernel for the named architectures into the kernel cache (no GPU needed).",
    discussion: """
      Uses NVRTC only. A cache entry is keyed by the kernel source, headers, options, \
      architecture and NVRTC major.minor, so it is used on a GPU machine whose NVRTC has \
      the same major.minor as the one that compiled it; any other version simply \
      compiles again. Cache folder: --cache, else $SAMOYEDS_CACHE_DIR, else \
      $XDG_CACHE_HOME/samoyeds/kernels, else ~/.cache/samoyeds/kernels.
      """)

  @Option(help: "NVRTC targets, comma-separated (sm_NN or sm_NNa, NN >= 80).")
  var arch: String = "sm_80,sm_86,sm_89,sm_90a"

  @Option(help: "Kernel cache folder to fill (default: the folder runs use).")
  var cache: String?

  var architectures: [String] {
    arch.split(separator: ",", omittingEmptySubsequences: false).map { String($0.filter { $0 != " " }) }
  }

  func validate() throws {
    for architecture in architectures {
      do {
        try KernelLibrary.checkArchitecture(architecture)
      } catch {
        throw ValidationError("--arch: \(error)")
      }
    }
  }

  func run() throws {
    let folder = cache ?? KernelCache.folder
    let nvrtc = try NVRTC.get()
    print("NVRTC \(nvrtc.version.major).\(nvrtc.version.minor) (\(nvrtc.path)); cache \(folder)")
    for architecture in architectures {
      let start = ContinuousClock.now
      let files = try KernelLibrary.precompile(architecture: architecture, cache: folder)
      let elapsed = (ContinuousClock.now - start).components
      let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
      for file in files {
        print("  \(Fmt.left(architecture, 7)) \(Fmt.left(file.file, 28)) \(file.cached ? "cached  " : "compiled") \(Fmt.bytes(file.bytes))")
      }
      print("  \(architecture): \(files.count) files in \(Fmt.fixed(seconds, 1)) s")
    }
  }
}
