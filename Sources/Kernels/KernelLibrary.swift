import CUDA

/// The compiled kernels of `dual_sparse_gemm.cu` for one GPU: compiled
/// with NVRTC for the device's architecture (through the on-disk cache) and
/// loaded once, then launched many times.
public final class KernelLibrary: @unchecked Sendable {
  public let context: CUDAContext
  let module: CUDAModule
  /// Every entry point, resolved at load (immutable afterwards).
  let functions: [String: CUDAFunction]
  /// Whether the cubin came from the disk cache.
  public let cached: Bool
  /// The NVRTC target, e.g. "sm_90a".
  public let architecture: String

  /// The kernel file and the headers it includes.
  public static let sourceName = "dual_sparse_gemm.cu"
  public static let headerNames = ["samoyeds_common.cuh"]
  /// NVRTC options every build uses.
  public static let options = ["-lineinfo"]

  /// Entry points of the portable kernel family.
  public static var entryPoints: [String] {
    var names = ["samoyeds_combine", "samoyeds_gather_rows"]
    for dtype in ["bf16", "fp16"] {
      for pattern in PortableKernel.supportedPatterns {
        for epilogue in ["store", "silu", "add", "slots"] {
          let name = "samoyeds_\(dtype)_n\(pattern.n)m\(pattern.m)_\(epilogue)"
          names += [name, name + "_rt2", name + "_split", name + "_stream"]
          if pattern.n == 1 && pattern.m == 2 { names += [name + "_bn32", name + "_rt2x2"] }
        }
      }
    }
    return names
  }

  /// Compiles (or loads from the cache) and resolves every kernel.
  public init(context: CUDAContext) throws(CUDAError) {
    guard context.computeCapability.major >= 8 else {
      throw .invalidArgument(
        "\(context.name) is compute capability \(context.computeCapability.major).\(context.computeCapability.minor); Sparse Tensor Core kernels need 8.0 or newer"
      )
    }
    let (source, headers) = try Self.sources()
    let (cubin, cached) = try KernelCache.cubin(
      source: source, name: "dual_sparse_gemm", headers: headers, architecture: context.architecture,
      options: Self.options)
    let module = try CUDAModule(context: context, image: cubin)
    var functions: [String: CUDAFunction] = [:]
    for name in Self.entryPoints { functions[name] = try module.function(named: name) }
    self.context = context
    self.module = module
    self.functions = functions
    self.cached = cached
    self.architecture = context.architecture
  }

  /// The kernel source and headers as shipped.
  public static func sources() throws(CUDAError) -> (source: String, headers: [(name: String, contents: String)]) {
    do {
      let source = try KernelSource.text(sourceName)
      let headers = try headerNames.map { (name: $0, contents: try KernelSource.text($0)) }
      return (source, headers)
    } catch let error as CUDAErrorBridge {
      throw .unavailable(error.description)
    } catch {
      throw .unavailable("\(error)")
    }
  }

  /// Compiles every kernel for `architecture` without a GPU (NVRTC only);
  /// returns NVRTC's log (empty when there were no warnings).
  public static func compileOnly(architecture: String) throws(CUDAError) -> String {
    let (source, headers) = try sources()
    return try NVRTC.get().compile(
      source: source, name: sourceName, headers: headers, architecture: architecture, options: options
    ).log
  }

  func function(_ name: String) throws(CUDAError) -> CUDAFunction {
    guard let function = functions[name] else { throw .unavailable("no kernel \(name) in \(Self.sourceName)") }
    return function
  }
}
