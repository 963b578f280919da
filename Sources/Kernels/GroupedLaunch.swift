import CUDA
import SamoyedsFormat

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Every expert of one projection in one launch of the streaming kernel
/// (`<name>_stream_grouped`, few entries per expert) or, on sm_90a, of the
/// wgmma kernel (`<name>_sm90_grouped`, from 32 per expert on average): the
/// CTAs find their expert and token tile from the routing plan's expert
/// offsets on the device, so the host needs no token counts, issues no
/// synchronize, and the launch can be captured in a CUDA graph. The grid
/// covers an upper bound of the experts' token tiles (`maxEntries`, e.g.
/// T·topK); CTAs past the last tile return at once.
///
/// Verified on the H200 (`samoyeds verify --filter grouped`; memcheck clean).
/// `GPUMoELayer` uses it when asked (`ExpertLaunch.grouped`) and for its
/// device path (`DecodeGraph`).
public enum GroupedLaunch {
  /// The experts' packed weights as the grouped kernels read them: a table
  /// of `WeightArgs` (three pointers and two Int32, 32 bytes) per expert on
  /// the device, built once.
  public final class WeightTable: @unchecked Sendable {
    /// The experts, in expert order; all of one shape, pattern and dtype.
    public let weights: [GPUSparseWeight]
    let table: DeviceBuffer

    /// Uploads the table.
    ///
    /// - Throws: `.invalidArgument` for no weights, too many for the
    ///   kernel's expert scan, or weights that differ in shape, pattern or
    ///   dtype; `.driver` when the upload fails.
    public init(_ weights: [GPUSparseWeight], context: CUDAContext) throws(CUDAError) {
      guard let first = weights.first else { throw .invalidArgument("a grouped launch needs at least one expert") }
      guard weights.count <= maxExperts else {
        throw .invalidArgument("\(weights.count) experts; grouped launches take at most \(maxExperts)")
      }
      for w in weights
      where w.rows != first.rows || w.columns != first.columns || w.pattern != first.pattern || w.dtype != first.dtype {
        throw .invalidArgument(
          "experts differ: \(w.rows)x\(w.columns) \(w.pattern) \(w.dtype) against \(first.rows)x\(first.columns) \(first.pattern) \(first.dtype)"
        )
      }
      var bytes = ArgumentBytes()
      for w in weights { bytes.weightArgs(w) }
      self.weights = weights
      self.table = try DeviceBuffer(context: context, copying: bytes.bytes)
    }
  }

  /// Experts a grouped launch takes (`kMaxGroupExperts`: 8 per lane of the
  /// device's expert scan).
  public static let maxExperts = 256

  /// What the grouped launch writes, per routed entry j of expert e
  /// (entries offsets[e] ..< offsets[e+1], in the plan's order).
  public enum Epilogue {
    /// `output` [maxEntries, m] bf16/fp16, row j: Y_j.
    case store
    /// `output` [maxEntries, m], row j: SiLU(W_e x) ⊙ (up_e x).
    case siluMul(up: WeightTable)
    /// `output` f32 [T·topK, m], row slots[j]: routeWeights[j] · Y_j.
    case scaleToSlots(routeWeights: DeviceBuffer, slots: DeviceBuffer)

    var name: String {
      switch self {
      case .store: "store"
      case .siluMul: "silu"
      case .scaleToSlots: "slots"
      }
    }
  }

  /// One grouped launch.
  public struct Arguments {
    public var weights: WeightTable
    public var epilogue: Epilogue
    /// bf16/fp16 [tokens, k]: the rows entries read.
    public var x: DeviceBuffer
    public var tokens: Int
    /// Int32 [maxEntries]: entry j reads row rows[j] of x.
    public var rows: DeviceBuffer
    /// Int32 [experts + 1] on the device: expert e's entries.
    public var offsets: DeviceBuffer
    /// An upper bound of offsets[experts] (T·topK for a routing plan).
    public var maxEntries: Int
    public var output: DeviceBuffer
    /// `.stream` or `.wgmma` (sm_90a); nil: `GroupedLaunch.tiling` chooses.
    public var tiling: PortableKernel.Tiling?

    public init(
      weights: WeightTable, epilogue: Epilogue, x: DeviceBuffer, tokens: Int, rows: DeviceBuffer,
      offsets: DeviceBuffer, maxEntries: Int, output: DeviceBuffer, tiling: PortableKernel.Tiling? = nil
    ) {
      self.weights = weights
      self.epilogue = epilogue
      self.x = x
      self.tokens = tokens
      self.rows = rows
      self.offsets = offsets
      self.maxEntries = maxEntries
      self.output = output
      self.tiling = tiling
    }
  }

  /// Static shared memory of a grouped CTA (the narrowed arguments and the
  /// token tile, `__shared__` in the entry point): within 256 bytes for the
  /// streaming kernel; 1 KB for the Hopper one, whose dynamic shared memory
  /// is 1024-byte aligned after it (ptxas -v reports 1024 bytes).
  static func staticSharedBytes(_ tiling: PortableKernel.Tiling) -> Int { tiling == .wgmma ? 1024 : 256 }

  /// The launch's grid and split-k.
  struct Plan: Equatable {
    /// Upper bound of the experts' token tiles (16 tokens for the streaming
    /// kernel, 128 / 64 / 32 for the Hopper one): grid.x (streaming) or grid.y.
    var tiles: Int
    var rowBlocks: Int
    var splits: Int
    var chunksPerSplit: Int
  }

  /// The kernel of a grouped launch: the forced one, else wgmma (sm_90a)
  /// when the experts' average entry count reaches `wgmmaEntries` (32),
  /// else the streaming kernel. The average assumes every expert with an
  /// entry: min(experts, maxEntries) of them.
  ///
  /// One expert alone switches later for small weights (`PortableKernel
  /// .tiling`: past 256 tokens), where a single launch has too few CTAs for
  /// the wgmma kernel; a grouped launch has every expert's. Measured on an
  /// H200 with the per-expert thresholds (`bench moe` stages, Qwen3-30B-A3B
  /// at T = 4096, 256 entries per expert): the streaming gate/up took 1.34
  /// ms, against 1.39 ms for the wgmma one at T = 16384 with 4x the entries.
  public static func tiling(_ a: Arguments, context: CUDAContext) -> PortableKernel.Tiling {
    if let forced = a.tiling { return forced }
    let average = a.maxEntries / max(1, min(a.weights.weights.count, a.maxEntries))
    return average >= wgmmaEntries && wgmmaAvailable(a, context: context) ? .wgmma : .stream
  }

  /// Average entries per expert from which grouped launches use wgmma;
  /// `SAMOYEDS_GROUPED_WGMMA_ENTRIES` overrides it (a large value: never).
  static let wgmmaEntries: Int = {
    Switches.integer("SAMOYEDS_GROUPED_WGMMA_ENTRIES", atLeast: 1) ?? 32
  }()

  /// Whether the Hopper kernel can run `a` here (sm_90a; its producer's
  /// 32-bit offsets into x; its shared memory).
  static func wgmmaAvailable(_ a: Arguments, context: CUDAContext) -> Bool {
    let w = a.weights.weights[0]
    return PortableKernel.isAvailable(
      .wgmma, pattern: w.pattern, tokens: a.tokens, columns: w.columns, reservedShared: staticSharedBytes(.wgmma),
      context: context)
  }

  /// `SAMOYEDS_GROUPED_SPLITS=n` asks streaming grouped launches for n
  /// k splits (more where a split's token rows need it; a measurement
  /// switch).
  static let forcedStreamSplits: Int? = Switches.integer("SAMOYEDS_GROUPED_SPLITS", atLeast: 1)

  /// Grid and splits: tiles ≤ ceil(maxEntries / 16) + min(experts,
  /// maxEntries) (each expert's last tile may be partial); k is split so
  /// that the CTAs of min(experts, maxEntries) tiles fill about two per SM,
  /// and so that a split's token rows fit in shared memory. The splits are
  /// always summed in the launch (each tile's last split), within the
  /// workspace's counters.
  static func plan(
    experts: Int, rows m: Int, columns k: Int, condensedRows: Int, maxEntries: Int, twoWeights: Bool,
    multiprocessors: Int, maxChunksPerSplit: Int
  ) -> Plan {
    let bn = PortableKernel.streamTokenTile
    let tiles = max(1, (maxEntries + bn - 1) / bn + min(experts, maxEntries))
    let warpsPerWeight = twoWeights ? PortableKernel.warps / 2 : PortableKernel.warps
    let rowBlocks = ((condensedRows + 15) / 16 + warpsPerWeight - 1) / warpsPerWeight
    let chunks = k / 32
    let active = max(1, min(experts, maxEntries)) * rowBlocks
    var splits = max(1, min(4, 2 * multiprocessors / active, chunks / 2))
    if let forced = forcedStreamSplits { splits = max(1, min(forced, chunks / 2)) }
    if chunks > maxChunksPerSplit { splits = max(splits, (chunks + maxChunksPerSplit - 1) / maxChunksPerSplit) }
    var perSplit = (chunks + splits - 1) / splits
    perSplit = max(2, (perSplit + 1) / 2 * 2)
    return Plan(tiles: tiles, rowBlocks: rowBlocks, splits: (chunks + perSplit - 1) / perSplit, chunksPerSplit: perSplit)
  }

  /// Grid and splits of the Hopper kernel: tiles ≤ ceil(maxEntries / bn) +
  /// min(experts, maxEntries) of bn tokens; rowBlocks of 64 condensed rows
  /// per consumer warpgroup (or 32 per weight in the SiLU mode, as
  /// `PortableKernel`); k split into whole 4-chunk stages only while the
  /// CTAs of the entries' full tiles do not fill one wave (one CTA per SM),
  /// and only within the workspace's counters (the splits are summed in
  /// the launch).
  static func wgmmaPlan(
    experts: Int, columns k: Int, condensedRows: Int, tokenTile bn: Int, maxEntries: Int, twoWeights: Bool,
    multiprocessors: Int
  ) -> Plan {
    let tiles = max(1, (maxEntries + bn - 1) / bn + min(experts, maxEntries))
    let warpsPerWeight = twoWeights ? PortableKernel.warps / 2 : PortableKernel.warps
    let rowBlocks = ((condensedRows + 15) / 16 + warpsPerWeight - 1) / warpsPerWeight
    let chunks = k / 32
    let busy = rowBlocks * max(1, maxEntries / bn)
    var splits = 1
    if busy < multiprocessors && tiles * rowBlocks <= PortableKernel.splitCounterCapacity {
      splits = max(1, min(multiprocessors / busy, chunks / 4))
    }
    let perSplit = max(4, ((chunks + splits - 1) / splits + 3) / 4 * 4)
    return Plan(tiles: tiles, rowBlocks: rowBlocks, splits: (chunks + perSplit - 1) / perSplit, chunksPerSplit: perSplit)
  }

  static func plan(_ a: Arguments, context: CUDAContext) -> Plan {
    let w = a.weights.weights[0]
    let twoWeights: Bool
    if case .siluMul = a.epilogue { twoWeights = true } else { twoWeights = false }
    let tiling = tiling(a, context: context)
    if tiling == .wgmma, let bn = PortableKernel.tokenTile(w.pattern, .wgmma) {
      return wgmmaPlan(
        experts: a.weights.weights.count, columns: w.columns, condensedRows: w.condensedRows, tokenTile: bn,
        maxEntries: a.maxEntries, twoWeights: twoWeights, multiprocessors: context.multiprocessorCount)
    }
    return plan(
      experts: a.weights.weights.count, rows: w.rows, columns: w.columns, condensedRows: w.condensedRows,
      maxEntries: a.maxEntries, twoWeights: twoWeights, multiprocessors: context.multiprocessorCount,
      maxChunksPerSplit: PortableKernel.streamMaxChunks(context: context, reserved: staticSharedBytes(.stream)))
  }

  /// Scratch bytes `run` needs: as `PortableKernel.workspaceBytes`, the
  /// counters (zero when first used) then the partials of every entry.
  public static func workspaceBytes(_ a: Arguments, context: CUDAContext) -> Int {
    let p = plan(a, context: context)
    return p.splits > 1
      ? PortableKernel.splitCounterBytes + p.splits * 2 * a.maxEntries * a.weights.weights[0].rows * 4 : 0
  }

  /// Checks what the kernel cannot check: buffer sizes, the shared shape.
  public static func canImplement(_ a: Arguments) throws(CUDAError) {
    let w = a.weights.weights[0]
    guard PortableKernel.tokenTile(w.pattern) != nil else {
      throw .invalidArgument("pattern \(w.pattern) has no GPU kernel")
    }
    if let tiling = a.tiling, tiling != .stream && tiling != .wgmma {
      throw .invalidArgument("grouped launches run the stream or wgmma kernel, not \(tiling)")
    }
    guard w.dtype == .bf16 || w.dtype == .fp16 else { throw .invalidArgument("weights must be bf16 or fp16") }
    guard a.maxEntries >= 0, a.tokens >= 0 else { throw .invalidArgument("negative token or entry count") }
    guard a.x.byteCount >= a.tokens * w.columns * 2 else {
      throw .invalidArgument("x holds \(a.x.byteCount) bytes, [\(a.tokens), \(w.columns)] needs \(a.tokens * w.columns * 2)")
    }
    guard a.rows.byteCount >= a.maxEntries * 4 else { throw .invalidArgument("rows holds fewer than \(a.maxEntries) entries") }
    guard a.offsets.byteCount >= (a.weights.weights.count + 1) * 4 else {
      throw .invalidArgument("offsets holds fewer than \(a.weights.weights.count + 1) entries")
    }
    switch a.epilogue {
    case .store:
      guard a.output.byteCount >= a.maxEntries * w.rows * 2 else { throw .invalidArgument("output too small") }
    case .siluMul(let up):
      let u = up.weights[0]
      guard up.weights.count == a.weights.weights.count, u.rows == w.rows, u.columns == w.columns,
        u.pattern == w.pattern, u.dtype == w.dtype
      else { throw .invalidArgument("gate and up tables differ in experts, shape, pattern or dtype") }
      guard a.output.byteCount >= a.maxEntries * w.rows * 2 else { throw .invalidArgument("output too small") }
    case .scaleToSlots(let routeWeights, let slots):
      guard routeWeights.byteCount >= a.maxEntries * 4, slots.byteCount >= a.maxEntries * 4 else {
        throw .invalidArgument("fewer routing weights or slots than entries")
      }
      guard a.output.byteCount >= a.maxEntries * w.rows * 4 else { throw .invalidArgument("output too small") }
    }
  }

  /// Launches on `stream`; `workspace` must hold `workspaceBytes` bytes,
  /// its counters zeroed when it was allocated.
  public static func run(
    _ a: Arguments, workspace: DeviceBuffer?, library: KernelLibrary, stream: CUDAStream
  ) throws(CUDAError) {
    try canImplement(a)
    if a.maxEntries == 0 { return }
    let w = a.weights.weights[0]
    let tiling = tiling(a, context: library.context)
    if tiling == .wgmma && !wgmmaAvailable(a, context: library.context) {
      throw .invalidArgument("the wgmma kernel is not available for this grouped launch on \(library.architecture)")
    }
    let p = plan(a, context: library.context)
    let needed = workspaceBytes(a, context: library.context)
    guard (workspace?.byteCount ?? 0) >= needed else {
      throw .invalidArgument("workspace of \(workspace?.byteCount ?? 0) bytes, the grouped launch needs \(needed)")
    }
    let kernel = try library.function(
      "samoyeds_\(w.dtype)_n\(w.pattern.keptRows)m\(w.pattern.groupRows)_\(a.epilogue.name)\(tiling.suffix)_grouped")
    let shared =
      tiling == .wgmma
      ? PortableKernel.wgmmaSharedBytes(tokenTile: PortableKernel.tokenTile(w.pattern, .wgmma) ?? 0, pattern: w.pattern)
      : PortableKernel.streamSharedBytes(chunks: p.chunksPerSplit, pattern: w.pattern)
    guard shared + staticSharedBytes(tiling) <= library.context.maxSharedMemoryPerBlockOptin else {
      throw .invalidArgument("\(shared) bytes of shared memory exceed the device's limit")
    }
    try kernel.setMaxDynamicSharedMemory(shared)
    // With a cluster sum the splits of a tile are one cluster (1, 1, splits);
    // streaming launches may overlap the kernel before them.
    let wgmma = tiling == .wgmma
    let grid = wgmma ? (p.rowBlocks, p.tiles, p.splits) : (p.tiles, p.rowBlocks, p.splits)
    let block = (wgmma ? PortableKernel.wgmmaThreads : PortableKernel.threads, 1, 1)
    let attributes = PortableKernel.launchAttributes(
      splits: p.splits, tiling: tiling, kernel: kernel, grid: grid, block: block, sharedMemoryBytes: shared)
    let cluster = attributes?.cluster != nil
    guard p.splits == 1 || cluster || p.tiles * p.rowBlocks <= PortableKernel.splitCounterCapacity else {
      throw .invalidArgument(
        "\(p.tiles * p.rowBlocks) output tiles with split-k exceed the \(PortableKernel.splitCounterCapacity) counters")
    }

    // GemmArgs: w0/w1 come from the tables per CTA; the fields here are the
    // launch's (x, all entries' index lists, outputs, k, splits).
    var bytes = ArgumentBytes()
    bytes.weightArgs(w)
    bytes.weightArgs(w)
    var routeWeights: CUdeviceptr = 0
    var slots: CUdeviceptr = 0
    if case .scaleToSlots(let r, let s) = a.epilogue {
      routeWeights = r.address
      slots = s.address
    }
    bytes.pointer(a.x.address)
    bytes.pointer(a.rows.address)
    bytes.pointer(routeWeights)
    bytes.pointer(slots)
    bytes.int32(a.maxEntries)  // each CTA narrows count to its expert's
    bytes.int32(w.columns)
    bytes.int32(w.pattern.vectorLength / 32)
    bytes.int32(p.chunksPerSplit)
    bytes.int32(p.splits)
    bytes.pointer(a.output.address)
    let base = workspace?.address ?? 0
    bytes.pointer(p.splits > 1 && !cluster ? base + CUdeviceptr(PortableKernel.splitCounterBytes) : 0)
    bytes.pointer(p.splits > 1 && !cluster ? base : 0)
    bytes.int32(cluster ? 1 : 0)
    bytes.align(8)
    var group = ArgumentBytes()
    group.pointer(a.offsets.address)
    group.pointer(a.weights.table.address)
    if case .siluMul(let up) = a.epilogue { group.pointer(up.table.address) } else { group.pointer(0) }
    group.int32(a.weights.weights.count)
    group.align(8)
    var arguments = KernelArguments()
    arguments.append(bytes: bytes.bytes)
    arguments.append(bytes: group.bytes)
    // The streaming kernel's token tiles on x (CTAs sharing weight rows
    // launch together), the Hopper kernel's on y (as `PortableKernel.run`).
    try PortableKernel.launch(
      kernel, grid: grid, block: block, sharedMemoryBytes: shared, attributes: attributes, stream: stream,
      arguments: arguments)
  }
}
