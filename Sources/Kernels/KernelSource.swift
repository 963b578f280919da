#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Finds the CUDA C++ kernel sources shipped as this package's resources.
///
/// The .cu files live in `Sources/Kernels/Resources/kernels` and travel as
/// plain files beside the binary, not as a SwiftPM resource bundle: SwiftPM's
/// generated bundle accessor links all of Foundation, which takes a static
/// binary from 16 MB to 60 MB (measured, stripped).
///
/// Searched in order: `$SAMOYEDS_KERNEL_DIR`; `samoyeds-kernels/` next to the
/// running executable (where `scripts/gpu-check.sh build` puts them); the
/// source tree this file was compiled from (`swift run`, `swift test`).
public enum KernelSource {
  /// The folder beside the executable.
  static let bundleName = "samoyeds-kernels"

  /// Candidate folders, in search order.
  public static var searchPath: [String] {
    var result: [String] = []
    if let explicit = ProcessInfo.processInfo.environment["SAMOYEDS_KERNEL_DIR"], !explicit.isEmpty {
      result.append(explicit)
    }
    if let executable = executablePath() {
      let folder = String(executable[..<(executable.lastIndex(of: "/") ?? executable.endIndex)])
      result.append(folder + "/" + bundleName)
    }
    let file = #filePath
    if let slash = file.lastIndex(of: "/") {
      result.append(String(file[..<slash]) + "/Resources/kernels")
    }
    return result
  }

  /// The text of kernel file `name` (e.g. "dual_sparse_gemm.cu").
  public static func text(_ name: String) throws(CUDAErrorBridge) -> String {
    for folder in searchPath {
      if let data = FileManager.default.contents(atPath: folder + "/" + name) {
        return String(decoding: data, as: UTF8.self)
      }
    }
    throw CUDAErrorBridge("kernel source \(name) not found; looked in \(searchPath.joined(separator: ", ")); set SAMOYEDS_KERNEL_DIR")
  }

  static func executablePath() -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard count > 0 else { return nil }
    return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }
}

/// A missing kernel source, reported as a CUDA-layer unavailability.
public struct CUDAErrorBridge: Error, CustomStringConvertible {
  public let description: String
  init(_ text: String) { description = text }
}
