import Dispatch

/// Runs `body(chunk)` for `chunk in 0..<chunks` on all cores and waits.
///
/// Work is handed out in `chunks` independent pieces; callers pick pieces
/// that write disjoint memory.
@inline(__always)
func parallelFor(_ chunks: Int, _ body: @Sendable (Int) -> Void) {
  if chunks <= 1 {
    if chunks == 1 { body(0) }
    return
  }
  DispatchQueue.concurrentPerform(iterations: chunks, execute: body)
}

/// Splits `0..<count` into about `pieces` contiguous ranges.
@inline(__always)
func split(_ count: Int, pieces: Int) -> [Range<Int>] {
  guard count > 0 else { return [] }
  let parts = max(1, min(pieces, count))
  return (0..<parts).map { p in (count * p / parts)..<(count * (p + 1) / parts) }
}

/// How many pieces to cut parallel work into: a few per core, so uneven
/// pieces still balance.
let workPieces = 4 * max(1, ProcessInfoShim.activeProcessorCount)

/// The processor count without importing Foundation.
enum ProcessInfoShim {
  static let activeProcessorCount: Int = {
    #if canImport(Glibc)
    return Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    #else
    return 2
    #endif
  }()
}

#if canImport(Glibc)
import Glibc
#endif

/// A raw pointer handed to parallel pieces.
///
/// `@unchecked Sendable` because the pieces that share it read only, or
/// write disjoint elements (each caller documents which); the pointee
/// outlives `parallelFor`, which waits for every piece.
struct SharedPointer<Pointee>: @unchecked Sendable {
  let base: UnsafeMutablePointer<Pointee>
  init(_ base: UnsafeMutablePointer<Pointee>) { self.base = base }
  init(_ base: UnsafePointer<Pointee>) { self.base = UnsafeMutablePointer(mutating: base) }
}
