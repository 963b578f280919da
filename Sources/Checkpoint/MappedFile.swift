#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The bytes of a file: memory-mapped read-only (pages come in on demand, so
/// a checkpoint larger than RAM is read tensor by tensor), or an in-memory
/// copy for tests. Unmapped in deinit.
///
/// `@unchecked Sendable`: the mapping is read-only and immutable for the
/// object's life.
public final class FileBytes: @unchecked Sendable {
  let base: UnsafeRawPointer?
  public let count: Int
  private let owner: Owner

  private enum Owner {
    case mapping(UnsafeMutableRawPointer, Int)
    case memory(UnsafeMutableRawPointer)
    case empty
  }

  /// Maps `path` read-only.
  public init(mapping path: String) throws(CheckpointError) {
    let descriptor = open(path, O_RDONLY)
    guard descriptor >= 0 else {
      throw .io("\(path): cannot be opened (\(String(cString: strerror(errno))))")
    }
    defer { close(descriptor) }
    var info = stat()
    guard fstat(descriptor, &info) == 0 else {
      throw .io("\(path): cannot be read (\(String(cString: strerror(errno))))")
    }
    guard (info.st_mode & S_IFMT) == S_IFREG else { throw .io("\(path): not a regular file") }
    let size = Int(info.st_size)
    count = size
    if size == 0 {
      base = nil
      owner = .empty
      return
    }
    guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0), address != MAP_FAILED else {
      throw .io("\(path): cannot be mapped (\(String(cString: strerror(errno))))")
    }
    base = UnsafeRawPointer(address)
    owner = .mapping(address, size)
  }

  /// Copies `data` (tests, in-memory files).
  public init(copying data: Data) {
    count = data.count
    if data.isEmpty {
      base = nil
      owner = .empty
      return
    }
    let memory = UnsafeMutableRawPointer.allocate(byteCount: data.count, alignment: 64)
    data.withUnsafeBytes { raw in
      if let source = raw.baseAddress { memory.copyMemory(from: source, byteCount: data.count) }
    }
    base = UnsafeRawPointer(memory)
    owner = .memory(memory)
  }

  deinit {
    switch owner {
    case .mapping(let address, let size): munmap(address, size)
    case .memory(let memory): memory.deallocate()
    case .empty: break
    }
  }

  /// Calls `body` with bytes `range` (which the caller has checked).
  func withBytes<R>(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    guard let base, !range.isEmpty else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
    return try body(UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count))
  }

  /// Drops the mapped pages of `range` from memory (they are re-read from
  /// the file if touched again), so streaming a file larger than RAM keeps
  /// the resident set bounded. A no-op for in-memory copies.
  func release(_ range: Range<Int>) {
    guard case .mapping(let address, let size) = owner, !range.isEmpty else { return }
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = range.lowerBound / page * page
    let end = min(size, (range.upperBound + page - 1) / page * page)
    if end > start { _ = madvise(address + start, end - start, MADV_DONTNEED) }
  }

  /// Byte `i`.
  func byte(_ i: Int) -> UInt8 { base.map { $0.load(fromByteOffset: i, as: UInt8.self) } ?? 0 }
}
