#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Writes a safetensors file tensor by tensor in bounded memory.
///
/// The header is written first from the plan (names, dtypes, shapes); tensors
/// are then appended in plan order, each checked against its planned size.
/// Everything goes to `<path>.partial-<pid>` in the same folder and is renamed
/// over `path` only by `finish()`, after an fsync; a writer dropped before
/// `finish()` (an error, an interrupt) removes its partial file. Write errors
/// (a full disk) name the file.
public final class SafeTensorsStreamWriter {
  public let path: String
  let temporaryPath: String
  private var descriptor: Int32
  private let plans: [TensorPlan]
  private var next = 0
  private var finished = false

  public init(path: String, plans: [TensorPlan], metadata: [String: String] = [:]) throws(CheckpointError) {
    self.path = path
    self.plans = plans
    temporaryPath = path + ".partial-\(getpid())"
    let header = try encodeHeader(plans, metadata: metadata)
    descriptor = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard descriptor >= 0 else {
      throw .io("\(path): cannot be created (\(String(cString: strerror(errno))))")
    }
    var failure: CheckpointError?
    header.withUnsafeBytes { raw in
      do throws(CheckpointError) { try writeAll(raw) } catch { failure = error }
    }
    if let failure {
      abandon()
      throw failure
    }
  }

  deinit {
    if !finished { abandon() }
  }

  /// The plan of the next tensor to append, if any.
  public var nextPlan: TensorPlan? { next < plans.count ? plans[next] : nil }

  /// Appends the next planned tensor's bytes.
  public func append(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
    guard next < plans.count, plans[next].name == name else {
      throw .malformed("\(path): tensor '\(name)' written out of plan order (expected '\(nextPlan?.name ?? "none")')")
    }
    guard bytes.count == plans[next].byteCount else {
      throw .shapeMismatch("\(path): tensor '\(name)' has \(bytes.count) bytes, planned \(plans[next].byteCount)")
    }
    try writeAll(bytes)
    next += 1
  }

  /// Appends the next planned tensor from an array.
  public func append<T: BitwiseCopyable>(_ name: String, elements: [T]) throws(CheckpointError) {
    var failure: CheckpointError?
    elements.withUnsafeBytes { raw in
      do throws(CheckpointError) { try append(name, bytes: raw) } catch { failure = error }
    }
    if let failure { throw failure }
  }

  /// Checks every tensor was written, syncs and renames into place.
  public func finish() throws(CheckpointError) {
    guard next == plans.count else {
      throw .malformed("\(path): \(plans.count - next) planned tensors were never written")
    }
    guard fsync(descriptor) == 0 else { let e = errno; abandon(); throw .io("\(path): fsync failed (\(String(cString: strerror(e))))") }
    close(descriptor)
    descriptor = -1
    guard rename(temporaryPath, path) == 0 else {
      let e = errno
      unlink(temporaryPath)
      finished = true
      throw .io("\(path): rename failed (\(String(cString: strerror(e))))")
    }
    finished = true
  }

  private func writeAll(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
    guard var pointer = bytes.baseAddress else { return }
    var remaining = bytes.count
    while remaining > 0 {
      let written = write(descriptor, pointer, min(remaining, 1 << 30))
      if written < 0 {
        if errno == EINTR { continue }
        let e = errno
        abandon()
        throw .io("\(path): write failed (\(String(cString: strerror(e))))")
      }
      remaining -= written
      pointer += written
    }
  }

  private func abandon() {
    if descriptor >= 0 { close(descriptor) }
    descriptor = -1
    unlink(temporaryPath)
    finished = true
  }
}
