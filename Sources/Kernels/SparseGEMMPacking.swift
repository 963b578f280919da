import SamoyedsFormat

/// The 16-bit storage types the GPU kernels take.
public protocol SixteenBitScalar: SparseScalar {
  var bitPattern: UInt16 { get }
}
extension BFloat16: SixteenBitScalar {}
extension Float16: SixteenBitScalar {}

/// How the 2-bit positions of one mma.sp m16n8k32 (16-bit types) are spread
/// over the lanes of a warp. The sparsity selector picks which lanes of each
/// quad supply metadata (0: lanes t = 0, 1; 1: lanes t = 2, 3), so one 32-bit
/// register per lane carries a pair of k32 chunks.
///
/// For lane (g = lane / 4, t = lane % 4), chunk `2p + t / 2` and half
/// `h = t % 2` (columns 16h ..< 16h + 16 of the chunk):
/// bits 0-15 are row g's positions, bits 16-31 row g + 8's, each 8 values x
/// 2 bits in column order — the canonical word's half h.
public enum MetadataLayout: Sendable {
  case rowPairHalves
}

/// A weight in the format, repacked for the portable mma.sp kernel
/// (`dual_sparse_gemm.cu`). Built once when weights are loaded.
///
/// - `fragments` [rowTiles][chunks][32 lanes][4] UInt32: each lane's four A
///   registers (the m16n8k16 A-fragment layout on the compressed 16x16
///   tile): reg0 = row g values 2t, 2t+1; reg1 = row g+8 values 2t, 2t+1;
///   reg2 = row g values 2t+8, 2t+9; reg3 = row g+8 values 2t+8, 2t+9 (of
///   the chunk's 16 kept values), lower index in the low 16 bits.
/// - `metadata` [rowTiles][chunkPairs][32 lanes] UInt32, see `MetadataLayout`.
/// - `selection` the canonical [mc][k/V] row selections.
///
/// Row tiles are 16 condensed rows; the last one is padded with zero values
/// and valid (0, 1) positions, and its rows are never stored.
public struct PackedSparseWeight: Sendable {
  public let pattern: SparsePattern
  public let dtype: DType
  public let rows: Int
  public let columns: Int
  public let condensedRows: Int
  public let fragments: [UInt32]
  public let metadata: [UInt32]
  public let selection: [UInt8]

  public static let tileRows = 16
  public static let chunkColumns = 32

  /// Device bytes of an m × k weight in `pattern` once packed (fragments +
  /// metadata + row selections), without packing it — what
  /// `GPUSparseWeight.deviceBytes` will be. m must be a multiple of M.
  public static func deviceBytes(rows: Int, columns: Int, pattern: SparsePattern) -> Int {
    let condensed = rows / pattern.groupRows * pattern.keptRows
    let tiles = (condensed + tileRows - 1) / tileRows
    let chunks = columns / chunkColumns
    return tiles * chunks * 32 * 16 + tiles * ((chunks + 1) / 2) * 32 * 4 + condensed * (columns / pattern.vectorLength)
  }

  public var rowTiles: Int { (condensedRows + Self.tileRows - 1) / Self.tileRows }
  public var chunks: Int { columns / Self.chunkColumns }
  public var chunkPairs: Int { (chunks + 1) / 2 }

  /// Packs a bf16 or fp16 sparse matrix.
  public init<S: SixteenBitScalar>(_ sparse: SparseMatrix<S>) {
    let bits: (S) -> UInt32 = { UInt32($0.bitPattern) }
    pattern = sparse.pattern
    dtype = S.dtype
    rows = sparse.rows
    columns = sparse.columns
    condensedRows = sparse.condensedRows
    let mc = sparse.condensedRows
    let tiles = (mc + 15) / 16
    let chunks = columns / 32
    let pairs = (chunks + 1) / 2
    let perRow = sparse.valuesPerRow
    let wordsPerRow = sparse.metadataWordsPerRow
    var fragments = [UInt32](repeating: 0, count: tiles * chunks * 32 * 4)
    var metadata = [UInt32](repeating: 0, count: tiles * pairs * 32)
    let values = sparse.values
    let canonical = sparse.metadata
    func pair(_ row: Int, _ j: Int) -> UInt32 {
      guard row < mc else { return 0 }
      return bits(values[row * perRow + j]) | bits(values[row * perRow + j + 1]) << 16
    }
    func word(_ row: Int, _ chunk: Int) -> UInt32 {
      guard row < mc, chunk < chunks else { return 0x4444_4444 }  // positions (0, 1)
      return canonical[row * wordsPerRow + chunk]
    }
    for tile in 0..<tiles {
      for lane in 0..<32 {
        let g = lane / 4
        let t = lane % 4
        let r0 = tile * 16 + g
        let r1 = r0 + 8
        for chunk in 0..<chunks {
          let base = chunk * 16
          let at = ((tile * chunks + chunk) * 32 + lane) * 4
          fragments[at] = pair(r0, base + 2 * t)
          fragments[at + 1] = pair(r1, base + 2 * t)
          fragments[at + 2] = pair(r0, base + 2 * t + 8)
          fragments[at + 3] = pair(r1, base + 2 * t + 8)
        }
        for p in 0..<pairs {
          let chunk = 2 * p + t / 2
          let shift = UInt32(16 * (t % 2))
          let low = (word(r0, chunk) >> shift) & 0xFFFF
          let high = (word(r1, chunk) >> shift) & 0xFFFF
          metadata[(tile * pairs + p) * 32 + lane] = low | high << 16
        }
      }
    }
    self.fragments = fragments
    self.metadata = metadata
    self.selection = sparse.rowSelection
  }
}
