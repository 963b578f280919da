import CUDA
import Kernels
import SamoyedsFormat

/// The GPU objects a command or layer needs: one context, the stream work
/// runs on, and the compiled kernels.
///
/// `Sendable` as its members are (the CUDA layer's handle owners); work
/// submitted to `stream` from two threads interleaves in submission order,
/// so give each concurrent user its own session or stream.
public struct GPUSession: Sendable {
  public let context: CUDAContext
  public let stream: CUDAStream
  public let library: KernelLibrary

  public init(context: CUDAContext, stream: CUDAStream, library: KernelLibrary) {
    self.context = context
    self.stream = stream
    self.library = library
  }

  /// Opens device `ordinal` and compiles (or loads from the cache) the
  /// kernels. Throws `CUDAError.unavailable` naming every place searched
  /// when the driver or NVRTC cannot be loaded.
  public static func open(ordinal: Int = 0) throws(CUDAError) -> GPUSession {
    let context = try CUDAContext(ordinal: ordinal)
    let stream = try CUDAStream(context: context)
    let library = try KernelLibrary(context: context)
    return GPUSession(context: context, stream: stream, library: library)
  }

  /// "NVIDIA H200 (sm_90a, 132 SMs), kernels from cache".
  public var summary: String {
    "\(context.name) (\(library.architecture), \(context.multiprocessorCount) SMs), kernels \(library.cached ? "from cache" : "compiled with NVRTC")"
  }
}

/// 16-bit encodings of f32 host data for upload, and back.
public enum HalfBits {
  /// `values` rounded to nearest even in `dtype` (fp16, else bf16), as bits.
  public static func encode(_ values: [Float], _ dtype: DType) -> [UInt16] {
    switch dtype {
    case .fp16: values.map { Float16($0).bitPattern }
    default: values.map { BFloat16($0).bitPattern }
    }
  }

  /// Bits of `dtype` (fp16, else bf16) widened to f32.
  public static func decode(_ bits: [UInt16], _ dtype: DType) -> [Float] {
    switch dtype {
    case .fp16: bits.map { Float(Float16(bitPattern: $0)) }
    default: bits.map { BFloat16(bitPattern: $0).floatValue }
    }
  }

  /// `values` rounded through `dtype` (what the GPU actually reads).
  public static func rounded(_ values: Matrix<Float>, _ dtype: DType) -> Matrix<Float> {
    switch dtype {
    case .fp16: values.map { Float(Float16($0)) }
    default: values.map { BFloat16($0).floatValue }
    }
  }

  /// Packs an f32 sparse weight for the portable kernel with values
  /// rounded to `dtype` (fp16, else bf16); metadata and row selections are
  /// kept as they are.
  public static func packed(_ sparse: SparseMatrix<Float>, _ dtype: DType) -> PackedSparseWeight {
    switch dtype {
    case .fp16: PackedSparseWeight(sparse.converted(to: Float16.self))
    default: PackedSparseWeight(sparse.converted(to: BFloat16.self))
    }
  }
}
