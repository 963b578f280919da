#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The CUDA libraries Samoyeds loads at run time.
public enum CUDALibrary: String, Sendable, CaseIterable {
  case driver = "CUDA driver"
  case nvrtc = "NVRTC"
  case cublasLt = "cuBLASLt"

  /// File names tried, newest first.
  public var sonames: [String] {
    switch self {
    case .driver: ["libcuda.so.1", "libcuda.so"]
    case .nvrtc: ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
    case .cublasLt: ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"]
    }
  }

  /// Environment variable naming the library file explicitly.
  public var environmentVariable: String {
    switch self {
    case .driver: "SAMOYEDS_LIBCUDA"
    case .nvrtc: "SAMOYEDS_LIBNVRTC"
    case .cublasLt: "SAMOYEDS_LIBCUBLASLT"
    }
  }

  /// Sub-folders of pip's `site-packages/nvidia` that hold this library.
  var wheelFolders: [String] {
    switch self {
    case .driver: []
    case .nvrtc: ["cu13/lib", "cuda_nvrtc/lib"]
    case .cublasLt: ["cu13/lib", "cublas/lib"]
    }
  }
}

/// A library opened with dlopen, for resolving its C entry points.
struct OpenedLibrary {
  let handle: UnsafeMutableRawPointer
  let name: String

  /// Opens `library` or throws `unavailable` with every place tried.
  init(_ library: CUDALibrary) throws(CUDAError) {
    let (handle, lookup) = LibraryLocator.open(library)
    guard let handle else { throw .unavailable(lookup.summary) }
    self.handle = handle
    self.name = lookup.loaded ?? library.rawValue
  }

  /// The first of `names` the library exports, as a C function of type `T`.
  func symbol<T>(_ names: String...) throws(CUDAError) -> T {
    for name in names {
      if let symbol = dlsym(handle, name) { return unsafeBitCast(symbol, to: T.self) }
    }
    throw .unavailable("\(self.name) has no symbol \(names.joined(separator: " or "))")
  }
}

/// Outcome of looking for one library.
public struct LibraryLookup: Sendable {
  public let library: CUDALibrary
  /// The path or soname that loaded, if any.
  public let loaded: String?
  /// Every candidate tried, in order, with why it failed.
  public let attempts: [String]

  /// One line: where it was found, or where it was looked for.
  public var summary: String {
    if let loaded { return "\(library.rawValue): \(loaded)" }
    return "\(library.rawValue): not found (tried \(attempts.count) places: \(attempts.joined(separator: "; ")))"
  }
}

/// Finds and opens the CUDA libraries with dlopen, in a documented order:
///
/// 1. the explicit environment variable (`SAMOYEDS_LIBCUDA`,
///    `SAMOYEDS_LIBNVRTC`, `SAMOYEDS_LIBCUBLASLT`): a file path;
/// 2. `$CUDA_HOME/lib64` and `$CUDA_HOME/targets/x86_64-linux/lib`;
/// 3. `/usr/local/cuda/lib64` and `/usr/local/cuda/targets/x86_64-linux/lib`;
/// 4. the lib folders of pip's `nvidia-*` wheels in the site-packages of
///    `$VIRTUAL_ENV`, `/usr/local/lib/python3.*`, `/usr/lib/python3.*`,
///    `~/.local/lib/python3.*`, `~/.pyenv/versions/*/lib/python3.*` and
///    `/opt/*/.venv/lib/python3.*`;
/// 5. the dynamic loader's default search path (`LD_LIBRARY_PATH`, ld.so
///    cache), by soname. For the driver this step comes right after 1, as the
///    driver belongs to the system, not to a toolkit.
public enum LibraryLocator {
  /// Candidate paths for `library`, in search order.
  public static func candidates(for library: CUDALibrary) -> [String] {
    let environment = ProcessInfo.processInfo.environment
    var result: [String] = []
    if let explicit = environment[library.environmentVariable], !explicit.isEmpty {
      result.append(explicit)
    }
    if library == .driver {
      result += library.sonames
      result += ["/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"]
        .flatMap { folder in library.sonames.map { folder + "/" + $0 } }
      return result
    }
    var folders: [String] = []
    if let home = environment["CUDA_HOME"], !home.isEmpty {
      folders += [home + "/lib64", home + "/targets/x86_64-linux/lib"]
    }
    folders += ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]
    for sitePackages in pythonSitePackages(environment: environment) {
      folders += library.wheelFolders.map { sitePackages + "/nvidia/" + $0 }
    }
    for folder in folders {
      result += library.sonames.map { folder + "/" + $0 }
    }
    result += library.sonames
    return result
  }

  /// Opens `library` (RTLD_NOW | RTLD_LOCAL) from the first candidate that
  /// loads. The handle stays open for the life of the process.
  public static func open(_ library: CUDALibrary) -> (handle: UnsafeMutableRawPointer?, lookup: LibraryLookup) {
    var attempts: [String] = []
    for candidate in candidates(for: library) {
      if candidate.contains("/") && !FileManager.default.fileExists(atPath: candidate) {
        continue
      }
      if let handle = dlopen(candidate, RTLD_NOW | RTLD_LOCAL) {
        return (handle, LibraryLookup(library: library, loaded: candidate, attempts: attempts))
      }
      let reason = dlerror().map { String(cString: $0) } ?? "dlopen failed"
      attempts.append(reason)
    }
    if attempts.isEmpty {
      attempts = ["no candidate file exists; set \(library.environmentVariable) or CUDA_HOME"]
    }
    return (nil, LibraryLookup(library: library, loaded: nil, attempts: attempts))
  }

  static func pythonSitePackages(environment: [String: String]) -> [String] {
    var roots: [String] = []
    if let venv = environment["VIRTUAL_ENV"], !venv.isEmpty { roots.append(venv + "/lib") }
    roots.append("/usr/local/lib")
    roots.append("/usr/lib")
    let fm = FileManager.default
    if let home = environment["HOME"], !home.isEmpty {
      roots.append(home + "/.local/lib")
      if let versions = try? fm.contentsOfDirectory(atPath: home + "/.pyenv/versions") {
        roots += versions.sorted().map { home + "/.pyenv/versions/" + $0 + "/lib" }
      }
    }
    if let opt = try? fm.contentsOfDirectory(atPath: "/opt") {
      roots += opt.sorted().map { "/opt/" + $0 + "/.venv/lib" }
    }
    var result: [String] = []
    for root in roots {
      guard let entries = try? fm.contentsOfDirectory(atPath: root) else { continue }
      for entry in entries.sorted() where entry.hasPrefix("python3") {
        for kind in ["site-packages", "dist-packages"] {
          let path = root + "/" + entry + "/" + kind
          if fm.fileExists(atPath: path + "/nvidia") { result.append(path) }
        }
      }
    }
    return result
  }
}
