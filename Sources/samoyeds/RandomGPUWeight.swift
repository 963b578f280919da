import CUDA
import GPUEngine
import Kernels
import SamoyedsFormat

/// Prunes a random weight into a packed GPU weight of `dtype`, returning the
/// sparse matrix widened to f32 for the CPU reference. Values are rounded
/// to `dtype` before pruning, so both sides hold exactly the same numbers.
func randomSparseWeight(
  m: Int, k: Int, pattern: SparsePattern, dtype: DType, rng: inout SeededGenerator, context: CUDAContext
) throws -> (gpu: GPUSparseWeight, reference: SparseMatrix<Float>) {
  let dense = HalfBits.rounded(rng.normalMatrix(rows: m, columns: k, scale: 1 / Float(k).squareRoot()), dtype)
  let sparse = try SparseMatrix<Float>.prune(dense, pattern: pattern)
  return (try GPUSparseWeight(context: context, packed: HalfBits.packed(sparse, dtype)), sparse)
}
