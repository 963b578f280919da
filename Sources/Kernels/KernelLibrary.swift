import CUDA

/// The compiled kernels for one GPU: every file of `files`, each compiled
/// with NVRTC for the device's architecture (through the on-disk cache, one
/// entry per file) and loaded once, then launched many times.
public final class KernelLibrary: @unchecked Sendable {
  public let context: CUDAContext
  /// One module per kernel file (each `CUDAFunction` also keeps its own alive).
  let modules: [CUDAModule]
  /// Every entry point of every file, resolved at load (immutable afterwards).
  let functions: [String: CUDAFunction]
  /// Whether every cubin came from the disk cache.
  public let cached: Bool
  /// The NVRTC target, e.g. "sm_90a".
  public let architecture: String

  /// A kernel file in `Resources/kernels` and the entry points it defines.
  public struct File: Sendable {
    /// File name, e.g. "moe_routing.cu".
    public let name: String
    /// Its `extern "C"` kernels.
    public let entryPoints: [String]
    /// The NVRTC targets it is built for; nil: every target (sm_80 and up).
    public var architectures: Set<String>? = nil

    /// Whether the file is built for `architecture`.
    public func builds(for architecture: String) -> Bool { architectures?.contains(architecture) ?? true }

    /// The name without ".cu" (the cache entry's prefix).
    var stem: String { name.hasSuffix(".cu") ? String(name.dropLast(3)) : name }
  }

  /// Every kernel file the library builds.
  public static var files: [File] {
    [
      File(name: "dual_sparse_gemm.cu", entryPoints: portableEntryPoints),
      File(name: "moe_routing.cu", entryPoints: MoERouting.entryPoints),
      File(name: "dual_sparse_gemm_sm90.cu", entryPoints: sm90EntryPoints, architectures: ["sm_90a"]),
    ]
  }
  /// Headers every kernel file may include.
  public static let headerNames = ["samoyeds_common.cuh", "samoyeds_gemm.cuh"]
  /// NVRTC options every build uses.
  public static let options = ["-lineinfo"]

  /// Every entry point of every file.
  public static var entryPoints: [String] { files.flatMap(\.entryPoints) }

  /// The files built for `architecture`.
  public static func files(for architecture: String) -> [File] { files.filter { $0.builds(for: architecture) } }

  /// Entry points of the Hopper family (`dual_sparse_gemm_sm90.cu`): the
  /// portable names with `_sm90` and `_sm90_grouped`, every pattern, dtype
  /// and epilogue.
  static var sm90EntryPoints: [String] {
    var names: [String] = []
    for dtype in ["bf16", "fp16"] {
      for pattern in PortableKernel.supportedPatterns {
        for epilogue in ["store", "silu", "add", "slots"] {
          let name = "samoyeds_\(dtype)_n\(pattern.n)m\(pattern.m)_\(epilogue)_sm90"
          names += [name, name + "_grouped"]
        }
      }
    }
    return names
  }

  /// Entry points of the portable kernel family (`dual_sparse_gemm.cu`).
  static var portableEntryPoints: [String] {
    var names = ["samoyeds_combine", "samoyeds_gather_rows"]
    for dtype in ["bf16", "fp16"] {
      for pattern in PortableKernel.supportedPatterns {
        for epilogue in ["store", "silu", "add", "slots"] {
          let name = "samoyeds_\(dtype)_n\(pattern.n)m\(pattern.m)_\(epilogue)"
          names += [name, name + "_rt2", name + "_split", name + "_stream", name + "_stream_grouped"]
          if pattern.n == 1 && pattern.m == 2 { names += [name + "_bn32", name + "_rt2x2", name + "_rt4"] }
        }
      }
    }
    return names
  }

  /// Compiles (or loads from the cache) every file and resolves every kernel.
  public init(context: CUDAContext) throws(CUDAError) {
    guard context.computeCapability.major >= 8 else {
      throw .invalidArgument(
        "\(context.name) is compute capability \(context.computeCapability.major).\(context.computeCapability.minor); Sparse Tensor Core kernels need 8.0 or newer"
      )
    }
    var modules: [CUDAModule] = []
    var functions: [String: CUDAFunction] = [:]
    var cached = true
    for file in Self.files(for: context.architecture) {
      let (cubin, hit) = try Self.cubin(of: file, architecture: context.architecture)
      let module = try CUDAModule(context: context, image: cubin)
      for name in file.entryPoints { functions[name] = try module.function(named: name) }
      modules.append(module)
      cached = cached && hit
    }
    // The tuned tilings, if `samoyeds tune` wrote any (a damaged file is an error naming it).
    KernelTuning.activate(try KernelTuning.load(path: KernelTuning.defaultPath))
    self.context = context
    self.modules = modules
    self.functions = functions
    self.cached = cached
    self.architecture = context.architecture
  }

  /// Kernel file `name` and the headers, as shipped.
  public static func sources(of name: String) throws(CUDAError) -> (
    source: String, headers: [(name: String, contents: String)]
  ) {
    do {
      let source = try KernelSource.text(name)
      let headers = try headerNames.map { (name: $0, contents: try KernelSource.text($0)) }
      return (source, headers)
    } catch let error as CUDAErrorBridge {
      throw .unavailable(error.description)
    } catch {
      throw .unavailable("\(error)")
    }
  }

  /// The cubin of `file` for `architecture`, through the on-disk cache
  /// (the same entry whether a GPU opens it or `precompile` fills it).
  static func cubin(
    of file: File, architecture: String, cache folder: String = KernelCache.folder
  ) throws(CUDAError) -> (cubin: [UInt8], cached: Bool) {
    let (source, headers) = try sources(of: file.name)
    return try KernelCache.cubin(
      source: source, name: file.stem, headers: headers, architecture: architecture, options: options, in: folder)
  }

  /// Fills the kernel cache for `architecture` without a GPU (NVRTC only),
  /// so that a later run on a GPU of that architecture, with the same NVRTC
  /// major.minor, loads every file instead of compiling it (`folder`: the
  /// cache to fill, by default the one runs use). Returns one
  /// entry per file: its name, whether it was already cached, the cubin's
  /// size in bytes.
  public static func precompile(architecture: String, cache folder: String = KernelCache.folder) throws(CUDAError) -> [(
    file: String, cached: Bool, bytes: Int
  )] {
    try checkArchitecture(architecture)
    var built: [(file: String, cached: Bool, bytes: Int)] = []
    for file in files(for: architecture) {
      let (cubin, hit) = try cubin(of: file, architecture: architecture, cache: folder)
      built.append((file.name, hit, cubin.count))
    }
    return built
  }

  /// Throws unless `architecture` names an NVRTC target the kernels build
  /// for: sm_NN or sm_NNa with NN >= 80 (Sparse Tensor Cores).
  public static func checkArchitecture(_ architecture: String) throws(CUDAError) {
    let digits = architecture.hasPrefix("sm_") ? architecture.dropFirst(3).prefix { $0.isNumber } : ""
    let rest = architecture.dropFirst(3 + digits.count)
    guard let number = Int(digits), number >= 80, rest.isEmpty || rest == "a" else {
      throw .invalidArgument(
        "architecture \"\(architecture)\" is not an NVRTC target of the form sm_NN or sm_NNa with NN >= 80 (Sparse Tensor Cores), e.g. sm_80, sm_89, sm_90a"
      )
    }
  }

  /// Whether kernel `name` was built for this GPU.
  public func has(_ name: String) -> Bool { functions[name] != nil }

  /// Compiles every file for `architecture` without a GPU (NVRTC only);
  /// returns NVRTC's logs, each under its file name (empty when no file
  /// had warnings).
  public static func compileOnly(architecture: String) throws(CUDAError) -> String {
    var logs: [String] = []
    for file in files(for: architecture) {
      let (source, headers) = try sources(of: file.name)
      let log = try NVRTC.get().compile(
        source: source, name: file.name, headers: headers, architecture: architecture, options: options
      ).log
      if !log.isEmpty { logs.append("\(file.name):\n\(log)") }
    }
    return logs.joined(separator: "\n")
  }

  func function(_ name: String) throws(CUDAError) -> CUDAFunction {
    guard let function = functions[name] else {
      throw .unavailable(
        "no kernel \(name) for \(architecture) in \(Self.files(for: architecture).map(\.name).joined(separator: ", "))")
    }
    return function
  }
}
