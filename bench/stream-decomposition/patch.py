# Adds switches to a copy of dual_sparse_gemm.cu for the streaming kernel
# (bench/stream-decomposition/run.sh); every other kernel stays as it is.
#   EXP_NOMMA   no token fragment loads and no mma.sp (the weight fragment
#               and metadata are folded into the running total instead)
#   EXP_NOSEL   no row-selection fold after each chunk
#   EXP_NOTOK   no token-row staging
#   EXP_NOEPI   no epilogue (the tile is stored only if a total is one
#               particular NaN, which keeps the work alive)
# Fails if the source no longer has the lines it patches.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from patchlib import Patch  # noqa: E402

patch = Patch()
rep = patch.rep
rep("""      chunkMma<T, even ? 0 : 1, 1, NT>(acc, a, metadata, smem + i * Layout::chunkBytes, lane);
      selection.afterChunk(bank, acc, i == myChunks - 1);""",
"""#ifdef EXP_NOMMA
      acc[0][0][0] += __uint_as_float((a[0].x ^ a[0].y ^ a[0].z ^ a[0].w ^ metadata[0]) & 0x007fffffu);
#else
      chunkMma<T, even ? 0 : 1, 1, NT>(acc, a, metadata, smem + i * Layout::chunkBytes, lane);
#endif
#ifndef EXP_NOSEL
      selection.afterChunk(bank, acc, i == myChunks - 1);
#endif""")
rep("""    for (int c = from + threadIdx.x / (BN * 4); c < to; c += kThreads / (BN * 4)) {
      cpAsync16(tokenSlot + c * Layout::chunkBytes, tokenSource + c * kChunk, tokenValid);""",
"""#ifdef EXP_NOTOK
    if (args.count < 0)
#endif
    for (int c = from + threadIdx.x / (BN * 4); c < to; c += kThreads / (BN * 4)) {
      cpAsync16(tokenSlot + c * Layout::chunkBytes, tokenSource + c * kChunk, tokenValid);""")
rep("""  storeTile<T, N, M, 1, BN, EPILOGUE>(args, bank, acc, smem, warpActive, rowBlock, tokenBase, blockIdx.z, threadIdx.x);
}""",
"""#ifdef EXP_NOEPI
  if (__float_as_uint(acc[0][0][0]) == 0x7fc01234u)
#endif
  storeTile<T, N, M, 1, BN, EPILOGUE>(args, bank, acc, smem, warpActive, rowBlock, tokenBase, blockIdx.z, threadIdx.x);
}""")
patch.write()
