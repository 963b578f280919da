#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// NVRTC, loaded at run time: compiles CUDA C++ to a cubin for one
/// architecture. Headers are passed from memory, never from the disk.
public final class NVRTC: @unchecked Sendable {
  typealias Status = Int32
  typealias Program = OpaquePointer
  let nvrtcVersion: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Status
  let nvrtcGetErrorString: @convention(c) (Status) -> UnsafePointer<CChar>?
  let nvrtcCreateProgram:
    @convention(c) (
      UnsafeMutablePointer<Program?>, UnsafePointer<CChar>, UnsafePointer<CChar>, Int32,
      UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?
    ) -> Status
  let nvrtcDestroyProgram: @convention(c) (UnsafeMutablePointer<Program?>) -> Status
  let nvrtcCompileProgram: @convention(c) (Program?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Status
  let nvrtcGetProgramLogSize: @convention(c) (Program?, UnsafeMutablePointer<Int>) -> Status
  let nvrtcGetProgramLog: @convention(c) (Program?, UnsafeMutablePointer<CChar>) -> Status
  let nvrtcGetCUBINSize: @convention(c) (Program?, UnsafeMutablePointer<Int>) -> Status
  let nvrtcGetCUBIN: @convention(c) (Program?, UnsafeMutablePointer<CChar>) -> Status

  /// Where the library was found.
  public let path: String
  /// NVRTC's version (major, minor).
  public let version: (major: Int, minor: Int)

  /// The process-wide instance, or why NVRTC could not be loaded.
  static let shared: Result<NVRTC, CUDAError> = Result { () throws(CUDAError) in try NVRTC() }

  /// Loaded instance or the error explaining why not.
  public static func get() throws(CUDAError) -> NVRTC { try shared.get() }

  private init() throws(CUDAError) {
    let library = try OpenedLibrary(.nvrtc)
    Self.preloadBuiltins(besides: library.name)
    func load<T>(_ name: String) throws(CUDAError) -> T { try library.symbol(name) }
    nvrtcVersion = try load("nvrtcVersion")
    nvrtcGetErrorString = try load("nvrtcGetErrorString")
    nvrtcCreateProgram = try load("nvrtcCreateProgram")
    nvrtcDestroyProgram = try load("nvrtcDestroyProgram")
    nvrtcCompileProgram = try load("nvrtcCompileProgram")
    nvrtcGetProgramLogSize = try load("nvrtcGetProgramLogSize")
    nvrtcGetProgramLog = try load("nvrtcGetProgramLog")
    nvrtcGetCUBINSize = try load("nvrtcGetCUBINSize")
    nvrtcGetCUBIN = try load("nvrtcGetCUBIN")
    path = library.name
    var major: Int32 = 0
    var minor: Int32 = 0
    _ = nvrtcVersion(&major, &minor)
    version = (Int(major), Int(minor))
  }

  /// NVRTC opens its builtins library (`libnvrtc-builtins.so.X.Y`) by
  /// name when it first compiles, which the loader finds only on its own
  /// path: a libnvrtc named by file (SAMOYEDS_LIBNVRTC, a pip wheel's lib
  /// folder) would then fail to compile for want of its neighbour. Opening
  /// the builtins beside it first (RTLD_GLOBAL) lets NVRTC's lookup by name
  /// find the loaded one. Not finding any is not an error here: NVRTC then
  /// reports it when it compiles.
  static func preloadBuiltins(besides path: String) {
    guard let slash = path.lastIndex(of: "/") else { return }
    let folder = String(path[..<slash])
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return }
    for name in names.sorted() where name.hasPrefix("libnvrtc-builtins.so.") {
      _ = dlopen(folder + "/" + name, RTLD_NOW | RTLD_GLOBAL)
    }
  }

  func check(_ status: Status, _ api: String, log: String = "") throws(CUDAError) {
    guard status != 0 else { return }
    let message = nvrtcGetErrorString(status).map { String(cString: $0) } ?? "NVRTC error"
    throw .nvrtc(api: api, code: status, message: message, log: log)
  }

  /// The result of a compile: the cubin and the compiler's log (warnings).
  public struct Output: Sendable {
    public var cubin: [UInt8]
    public var log: String
  }

  /// Compiles `source` for `architecture` (e.g. "sm_90a").
  ///
  /// - Parameters:
  ///   - headers: (include name, contents) pairs served from memory.
  ///   - options: extra NVRTC options (`-D…`, `-lineinfo`, …).
  /// - Throws: `CUDAError.nvrtc` carrying NVRTC's log on a compile error.
  public func compile(
    source: String, name: String, headers: [(name: String, contents: String)] = [],
    architecture: String, options: [String] = []
  ) throws(CUDAError) -> Output {
    let allOptions = ["--gpu-architecture=\(architecture)", "--std=c++17", "-default-device"] + options
    var program: Program? = nil
    let headerContents = headers.map { strdup($0.contents) }
    let headerNames = headers.map { strdup($0.name) }
    let optionStrings = allOptions.map { strdup($0) }
    defer {
      (headerContents + headerNames + optionStrings).forEach { free($0) }
      if program != nil { _ = nvrtcDestroyProgram(&program) }
    }
    let contentPointers: [UnsafePointer<CChar>?] = headerContents.map { UnsafePointer($0) }
    let namePointers: [UnsafePointer<CChar>?] = headerNames.map { UnsafePointer($0) }
    let optionPointers: [UnsafePointer<CChar>?] = optionStrings.map { UnsafePointer($0) }
    try check(
      nvrtcCreateProgram(&program, source, name, Int32(headers.count), contentPointers, namePointers),
      "nvrtcCreateProgram(\(name))")
    let status = nvrtcCompileProgram(program, Int32(optionPointers.count), optionPointers)
    var logSize = 0
    _ = nvrtcGetProgramLogSize(program, &logSize)
    var log = ""
    if logSize > 1 {
      var buffer = [CChar](repeating: 0, count: logSize)
      _ = nvrtcGetProgramLog(program, &buffer)
      log = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    try check(status, "nvrtcCompileProgram(\(name), \(architecture))", log: log)
    var size = 0
    try check(nvrtcGetCUBINSize(program, &size), "nvrtcGetCUBINSize")
    var cubin = [CChar](repeating: 0, count: size)
    try check(nvrtcGetCUBIN(program, &cubin), "nvrtcGetCUBIN")
    return Output(cubin: cubin.map { UInt8(bitPattern: $0) }, log: log)
  }
}

/// Compiled kernels on disk, keyed by the content that made them: source,
/// headers, options, architecture and NVRTC version. Never by name alone.
///
/// Folder: `$SAMOYEDS_CACHE_DIR`, else `$XDG_CACHE_HOME/samoyeds/kernels`,
/// else `~/.cache/samoyeds/kernels`. Entries are written atomically; an
/// unreadable cache is skipped (compiling again), never fatal.
public enum KernelCache {
  public static var folder: String {
    let environment = ProcessInfo.processInfo.environment
    if let explicit = environment["SAMOYEDS_CACHE_DIR"], !explicit.isEmpty { return explicit }
    if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/samoyeds/kernels" }
    return (environment["HOME"] ?? "/tmp") + "/.cache/samoyeds/kernels"
  }

  /// The cache key of a compile.
  public static func key(
    source: String, headers: [(name: String, contents: String)], architecture: String, options: [String],
    nvrtcVersion: (major: Int, minor: Int)
  ) -> String {
    var parts = [source, architecture, "nvrtc \(nvrtcVersion.major).\(nvrtcVersion.minor)"] + options
    for header in headers { parts += [header.name, header.contents] }
    let text = parts.joined(separator: "\u{1}")
    return hex(fnv1a(text, basis: 0xcbf2_9ce4_8422_2325)) + hex(fnv1a(text, basis: 0x8422_2325_cbf2_9ce4))
  }

  /// Compiles through the cache: returns the cached cubin when the key
  /// matches, else compiles with NVRTC and stores the result.
  public static func cubin(
    source: String, name: String, headers: [(name: String, contents: String)] = [], architecture: String,
    options: [String] = [], in folder: String = KernelCache.folder
  ) throws(CUDAError) -> (cubin: [UInt8], cached: Bool) {
    let nvrtc = try NVRTC.get()
    let key = key(
      source: source, headers: headers, architecture: architecture, options: options, nvrtcVersion: nvrtc.version)
    let path = folder + "/" + String(name.map { $0 == "/" ? "_" : $0 }) + "-" + key + ".cubin"
    if let data = FileManager.default.contents(atPath: path), !data.isEmpty {
      return ([UInt8](data), true)
    }
    let output = try nvrtc.compile(
      source: source, name: name, headers: headers, architecture: architecture, options: options)
    do {
      try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
      try Data(output.cubin).write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
      // A cache that cannot be written only costs a recompile next time.
    }
    return (output.cubin, false)
  }

  static func fnv1a(_ text: String, basis: UInt64) -> UInt64 {
    var hash = basis
    for byte in text.utf8 {
      hash ^= UInt64(byte)
      hash &*= 0x0000_0100_0000_01B3
    }
    return hash
  }

  static func hex(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
  }
}
