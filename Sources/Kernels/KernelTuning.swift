#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CUDA
import Synchronization

/// Tilings chosen by measurement (`samoyeds tune`) on one GPU, stored as
/// data: a JSON file keyed by device, dtype, pattern, shape and token-count
/// bucket. `PortableKernel.tiling` consults the active table first and falls
/// back to its built-in defaults for anything not tuned.
///
/// File: `$SAMOYEDS_TUNING`, else `tuning.json` beside the kernel cache
/// (`KernelCache.folder/..`). A missing file is an empty table; a file that
/// cannot be read as a table is an error naming it (`KernelLibrary` loads it).
public struct KernelTuning: Codable, Sendable, Equatable {
  /// What a choice is keyed by.
  public struct Key: Codable, Hashable, Sendable {
    /// The GPU's name, e.g. "NVIDIA H200".
    public var device: String
    /// The NVRTC target, e.g. "sm_90a".
    public var architecture: String
    /// "bf16" or "fp16".
    public var dtype: String
    /// N:M:V, e.g. "1:2:128".
    public var pattern: String
    public var m: Int
    public var k: Int
    /// Token-count bucket: the smallest power of two ≥ T (`bucket`).
    public var tokens: Int

    public init(device: String, architecture: String, dtype: String, pattern: String, m: Int, k: Int, tokens: Int) {
      self.device = device
      self.architecture = architecture
      self.dtype = dtype
      self.pattern = pattern
      self.m = m
      self.k = k
      self.tokens = tokens
    }

    /// The same key in another bucket.
    func with(tokens: Int) -> Key {
      var copy = self
      copy.tokens = tokens
      return copy
    }
  }

  /// One measured choice.
  public struct Entry: Codable, Sendable, Equatable {
    public var key: Key
    /// `PortableKernel.Tiling.rawValue` of the fastest tiling.
    public var tiling: String
    /// Median milliseconds of every tiling timed, by name.
    public var milliseconds: [String: Double]

    public init(key: Key, tiling: String, milliseconds: [String: Double]) {
      self.key = key
      self.tiling = tiling
      self.milliseconds = milliseconds
    }
  }

  /// The file format's version (this code reads and writes 1).
  public var version: Int
  public var entries: [Entry]

  public init(entries: [Entry] = []) {
    version = Self.formatVersion
    self.entries = entries
  }

  static let formatVersion = 1

  /// The bucket of T routed tokens: 1, 2, 4, … (the smallest power of two ≥ T; 1 for T ≤ 1).
  public static func bucket(_ count: Int) -> Int {
    var bucket = 1
    while bucket < count && bucket < 1 << 40 { bucket <<= 1 }
    return bucket
  }

  /// Adds `entry`, replacing any entry with the same key.
  public mutating func record(_ entry: Entry) {
    entries.removeAll { $0.key == entry.key }
    entries.append(entry)
  }

  /// How far (in powers of two) a tuned bucket may be from the one asked for.
  public static let maximumBucketDistance = 2

  /// The tuned tiling for `key`: its bucket's entry, else the entry of the
  /// nearest tuned bucket (in powers of two, at most `maximumBucketDistance`
  /// away; the larger on a tie) of the same device, dtype, pattern and
  /// shape whose tiling this build has; nil otherwise.
  public func tiling(for key: Key) -> PortableKernel.Tiling? {
    let bucket = Self.bucket(key.tokens)
    // Entries of this shape whose tiling this build has, at most a factor
    // of 4 away in token count (further away a choice says little).
    let sameShape = entries.filter {
      $0.key.with(tokens: bucket) == key.with(tokens: bucket) && PortableKernel.Tiling(rawValue: $0.tiling) != nil
        && abs($0.key.tokens.trailingZeroBitCount - bucket.trailingZeroBitCount) <= Self.maximumBucketDistance
    }
    func distance(_ entry: Entry) -> Int {
      abs(entry.key.tokens.trailingZeroBitCount - bucket.trailingZeroBitCount)
    }
    let best = sameShape.min { a, b in
      let (da, db) = (distance(a), distance(b))
      return da != db ? da < db : a.key.tokens > b.key.tokens
    }
    return best.flatMap { PortableKernel.Tiling(rawValue: $0.tiling) }
  }

  /// `$SAMOYEDS_TUNING`, else `tuning.json` next to the kernel cache folder.
  public static var defaultPath: String {
    if let explicit = ProcessInfo.processInfo.environment["SAMOYEDS_TUNING"], !explicit.isEmpty { return explicit }
    let cache = KernelCache.folder
    let parent = cache.lastIndex(of: "/").map { String(cache[..<$0]) } ?? "."
    return parent + "/tuning.json"
  }

  /// The table in `path`; empty when no file exists there.
  public static func load(path: String) throws(CUDAError) -> KernelTuning {
    guard FileManager.default.fileExists(atPath: path) else { return KernelTuning() }
    guard let data = FileManager.default.contents(atPath: path) else {
      throw .invalidArgument("tuning file \(path) cannot be read; delete it or set SAMOYEDS_TUNING to another file")
    }
    let table: KernelTuning
    do {
      table = try JSONDecoder().decode(KernelTuning.self, from: data)
    } catch {
      throw .invalidArgument(
        "tuning file \(path) is not a Samoyeds tuning table (\(error)); delete it, or run `samoyeds tune --reset` to measure a new one")
    }
    guard table.version == formatVersion else {
      throw .invalidArgument(
        "tuning file \(path) has format version \(table.version); this build reads version \(formatVersion)")
    }
    return table
  }

  /// Writes the table to `path` atomically (a crash leaves the old file or
  /// the new one, never half of one), creating the folder.
  public func write(to path: String) throws(CUDAError) {
    do {
      let folder = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
      try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
      try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
      throw .invalidArgument("cannot write tuning file \(path): \(error)")
    }
  }

  // MARK: The table `PortableKernel.tiling` consults

  private static let storage = Mutex(KernelTuning())

  /// The table in use (empty until `activate` or a `KernelLibrary` loads one).
  public static var active: KernelTuning { storage.withLock { $0 } }

  /// Makes `table` the one `PortableKernel.tiling` consults.
  public static func activate(_ table: KernelTuning) { storage.withLock { $0 = table } }
}
