import ArgumentParser
import CUDA
import Kernels
import SamoyedsModel

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// `samoyeds info`: the machine, its GPU and the CUDA libraries found.
struct Info: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show the machine, the GPU and the CUDA libraries found (or why not).",
    discussion: """
      Libraries are searched in this order: SAMOYEDS_LIBCUDA / SAMOYEDS_LIBNVRTC / \
      SAMOYEDS_LIBCUBLASLT, $CUDA_HOME, /usr/local/cuda, pip's nvidia-* wheels, \
      then the loader's default path.
      """)

  @Flag(help: "Also list the built-in presets.")
  var presets = false

  func run() throws {
    print("machine")
    print("  host      \(hostName())")
    print("  os        \(operatingSystem())")
    print("  cpu       \(ProcessInfo.processInfo.activeProcessorCount) cores")
    print("  memory    \(Fmt.bytes(Int(ProcessInfo.processInfo.physicalMemory)))")
    print("gpu")
    switch DriverProbe.probe() {
    case .usable(let version, let devices):
      print("  driver    CUDA \(version / 1000).\(version % 1000 / 10)")
      for d in devices {
        print(
          "  device \(d.ordinal)  \(d.name), compute capability \(d.computeCapability.major).\(d.computeCapability.minor), \(d.multiprocessors) SMs, \(Fmt.bytes(d.totalMemoryBytes))"
        )
      }
    case .unusable(let reason):
      print("  none usable: \(reason)")
    }
    print("libraries")
    for library in CUDALibrary.allCases {
      print("  " + LibraryLocator.open(library).lookup.summary)
    }
    print("engines")
    print("  CPU reference engine: available")
    print("  GPU kernels: dual-sparse GEMM, portable (mma.sp, sm_80+) and Hopper (wgmma.sp, sm_90a), compiled at run time by NVRTC; `samoyeds verify` checks them")
    print("  GPU MoE layer: v0 (per-expert launches; router on the host or the GPU); `demo` runs it beside the CPU engine when a GPU is usable")
    print("  tuning table: \(KernelTuning.defaultPath) (`samoyeds tune` writes it)")
    print("  kernel sources: \(KernelSource.searchPath.joined(separator: ", "))")
    print("  kernel cache: \(KernelCache.folder)")
    if presets {
      print("presets")
      for config in Presets.all { print("  \(Fmt.left(config.name, 20)) \(config)") }
    }
  }

  private func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, 255) == 0 else { return "?" }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  private func operatingSystem() -> String {
    guard let data = FileManager.default.contents(atPath: "/etc/os-release") else { return "?" }
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n")
    where line.hasPrefix("PRETTY_NAME=") {
      return String(line.dropFirst("PRETTY_NAME=".count).filter { $0 != "\"" })
    }
    return "?"
  }
}
