import CUDA
import Kernels
import SamoyedsFormat

/// The GPU objects a command needs: context, stream and compiled kernels.
struct GPUSession {
  let context: CUDAContext
  let stream: CUDAStream
  let library: KernelLibrary

  /// Opens device 0 and compiles (or loads) the kernels.
  static func open() throws(CUDAError) -> GPUSession {
    let context = try CUDAContext()
    let stream = try CUDAStream(context: context)
    let library = try KernelLibrary(context: context)
    return GPUSession(context: context, stream: stream, library: library)
  }

  var summary: String {
    "\(context.name) (\(library.architecture), \(context.multiprocessorCount) SMs), kernels \(library.cached ? "from cache" : "compiled with NVRTC")"
  }
}

/// 16-bit encodings of f32 host data for upload.
enum HalfBits {
  static func encode(_ values: [Float], _ dtype: DType) -> [UInt16] {
    switch dtype {
    case .fp16: values.map { Float16($0).bitPattern }
    default: values.map { BFloat16($0).bitPattern }
    }
  }

  static func decode(_ bits: [UInt16], _ dtype: DType) -> [Float] {
    switch dtype {
    case .fp16: bits.map { Float(Float16(bitPattern: $0)) }
    default: bits.map { BFloat16(bitPattern: $0).floatValue }
    }
  }

  /// `values` rounded through `dtype` (what the GPU actually reads).
  static func rounded(_ values: Matrix<Float>, _ dtype: DType) -> Matrix<Float> {
    switch dtype {
    case .fp16: values.map { Float(Float16($0)) }
    default: values.map { BFloat16($0).floatValue }
    }
  }
}

/// Prunes a random weight into a packed GPU weight of `dtype`, returning the
/// sparse matrix widened to f32 for the CPU reference.
func randomSparseWeight(
  m: Int, k: Int, pattern: SparsePattern, dtype: DType, rng: inout SeededGenerator, context: CUDAContext
) throws -> (gpu: GPUSparseWeight, reference: SparseMatrix<Float>) {
  let dense = rng.normalMatrix(rows: m, columns: k, scale: 1 / Float(k).squareRoot())
  switch dtype {
  case .fp16:
    let sparse = try SparseMatrix<Float16>.prune(Matrix<Float16>.rounding(dense), pattern: pattern)
    return (try GPUSparseWeight(context: context, packed: PackedSparseWeight(sparse)), sparse.converted(to: Float.self))
  default:
    let sparse = try SparseMatrix<BFloat16>.prune(Matrix<BFloat16>.rounding(dense), pattern: pattern)
    return (try GPUSparseWeight(context: context, packed: PackedSparseWeight(sparse)), sparse.converted(to: Float.self))
  }
}
