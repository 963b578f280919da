# Adds switches to a copy of dual_sparse_gemm_sm90.cu (the Hopper kernel)
# for bench/wgmma-decomposition; results are wrong with any switch on, the
# times are what the variants are for.
#   EXP_NOB     the producer copies no token rows (B slabs keep stale bytes)
#   EXP_NOAE    the producer copies no weight fragments or metadata
#   EXP_NOWGMMA the consumers issue no wgmma (waits, fold and barriers stay)
# Fails if the source no longer has the lines it patches.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from patchlib import Patch  # noqa: E402

patch = Patch()
rep = patch.rep
rep("""#pragma unroll
      for (int j = 0; j < kWarps; ++j) {
        const bool valid = ((aValid >> j) & 1) && aInSplit;""",
"""#ifdef EXP_NOAE
      if (args.count < 0)
#endif
#pragma unroll
      for (int j = 0; j < kWarps; ++j) {
        const bool valid = ((aValid >> j) & 1) && aInSplit;""")
rep("""#pragma unroll
      for (int jj = 0; jj < kWarps / 2; ++jj) {
        const bool valid = ((aValid >> (2 * jj + p / 64)) & 1) && eInSplit;""",
"""#ifdef EXP_NOAE
      if (args.count < 0)
#endif
#pragma unroll
      for (int jj = 0; jj < kWarps / 2; ++jj) {
        const bool valid = ((aValid >> (2 * jj + p / 64)) & 1) && eInSplit;""")
rep("""#pragma unroll
      for (int slab = 0; slab < 2; ++slab) {""",
"""#ifdef EXP_NOB
      if (args.count < 0)
#endif
#pragma unroll
      for (int slab = 0; slab < 2; ++slab) {""")
rep("""        Wgmma<T, BN>::template run<c % 2>(acc[0], a[c], b, e[c / 2]);""",
"""#ifdef EXP_NOWGMMA
        acc[0][0][0] += __uint_as_float((a[c].x ^ a[c].y ^ a[c].z ^ a[c].w ^ e[c / 2] ^ uint32_t(b)) & 0x007fffffu);
#else
        Wgmma<T, BN>::template run<c % 2>(acc[0], a[c], b, e[c / 2]);
#endif""")
patch.write()
