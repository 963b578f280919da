// The tensor map of bench/copy-intake/intake.cu (host only: cuda.h's
// fixed-width types would clash with the kernels' own in intake.cu).
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cstring>

struct alignas(64) TensorMap {
  unsigned long long opaque[16];
};
static_assert(sizeof(TensorMap) == sizeof(CUtensorMap), "CUtensorMap is 128 bytes");

int encodeTensorMap(TensorMap* out, void* base, unsigned long long bytes, unsigned boxRows) {
  PFN_cuTensorMapEncodeTiled_v12000 encode = nullptr;
  cudaDriverEntryPointQueryResult query;
  if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", reinterpret_cast<void**>(&encode), 12000,
                                       cudaEnableDefault, &query) != cudaSuccess ||
      encode == nullptr)
    return -1;
  const cuuint64_t dims[2] = {64, bytes / 128};
  const cuuint64_t strides[1] = {128};
  const cuuint32_t box[2] = {64, boxRows};
  const cuuint32_t elementStrides[2] = {1, 1};
  CUtensorMap map;
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, base, dims, strides, box, elementStrides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return int(r);
  std::memcpy(out, &map, sizeof map);
  return 0;
}
