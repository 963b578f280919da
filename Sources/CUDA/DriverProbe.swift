#if canImport(Glibc)
import Glibc
#endif

/// What the CUDA driver reports about one GPU.
public struct GPUDescription: Sendable {
  public let ordinal: Int
  public let name: String
  public let computeCapability: (major: Int, minor: Int)
  public let totalMemoryBytes: Int
  public let multiprocessors: Int
}

/// A quick, read-only look at the driver: loads libcuda, calls cuInit and
/// lists the devices. Used by `samoyeds info` and to decide whether a GPU
/// is usable at all.
public enum DriverProbe {
  /// The result: the driver version and devices, or why none is usable.
  public enum Outcome: Sendable {
    case usable(driverVersion: Int, devices: [GPUDescription])
    case unusable(reason: String)
  }

  private typealias Init = @convention(c) (UInt32) -> Int32
  private typealias GetVersion = @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
  private typealias GetCount = @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
  private typealias GetDevice = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
  private typealias GetName = @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Int32
  private typealias GetAttribute = @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Int32
  private typealias TotalMemory = @convention(c) (UnsafeMutablePointer<Int>, Int32) -> Int32

  // CUdevice_attribute values from cuda.h.
  private static let attributeMultiprocessors: Int32 = 16
  private static let attributeMajor: Int32 = 75
  private static let attributeMinor: Int32 = 76

  /// Probes the driver; never throws, never crashes on a missing library.
  public static func probe() -> Outcome {
    let (handle, lookup) = LibraryLocator.open(.driver)
    guard let handle else { return .unusable(reason: lookup.summary) }
    func symbol<T>(_ name: String, _: T.Type) -> T? {
      guard let pointer = dlsym(handle, name) else { return nil }
      return unsafeBitCast(pointer, to: T.self)
    }
    guard let cuInit = symbol("cuInit", Init.self),
      let cuDriverGetVersion = symbol("cuDriverGetVersion", GetVersion.self),
      let cuDeviceGetCount = symbol("cuDeviceGetCount", GetCount.self),
      let cuDeviceGet = symbol("cuDeviceGet", GetDevice.self),
      let cuDeviceGetName = symbol("cuDeviceGetName", GetName.self),
      let cuDeviceGetAttribute = symbol("cuDeviceGetAttribute", GetAttribute.self),
      let cuDeviceTotalMem = symbol("cuDeviceTotalMem_v2", TotalMemory.self)
    else {
      return .unusable(reason: "\(lookup.loaded ?? "libcuda") lacks a driver API symbol (too old?)")
    }
    let status = cuInit(0)
    guard status == 0 else {
      return .unusable(reason: "cuInit failed with CUresult \(status) (\(resultName(status)))")
    }
    var version: Int32 = 0
    _ = cuDriverGetVersion(&version)
    var count: Int32 = 0
    guard cuDeviceGetCount(&count) == 0, count > 0 else {
      return .unusable(reason: "the driver loaded but reports no CUDA device")
    }
    var devices: [GPUDescription] = []
    for ordinal in 0..<count {
      var device: Int32 = 0
      guard cuDeviceGet(&device, ordinal) == 0 else { continue }
      var nameBuffer = [CChar](repeating: 0, count: 256)
      _ = cuDeviceGetName(&nameBuffer, 256, device)
      var major: Int32 = 0
      var minor: Int32 = 0
      var sms: Int32 = 0
      _ = cuDeviceGetAttribute(&major, attributeMajor, device)
      _ = cuDeviceGetAttribute(&minor, attributeMinor, device)
      _ = cuDeviceGetAttribute(&sms, attributeMultiprocessors, device)
      var memory = 0
      _ = cuDeviceTotalMem(&memory, device)
      let name = String(decoding: nameBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
      devices.append(
        GPUDescription(
          ordinal: Int(ordinal), name: name, computeCapability: (Int(major), Int(minor)),
          totalMemoryBytes: memory, multiprocessors: Int(sms)))
    }
    return .usable(driverVersion: Int(version), devices: devices)
  }

  /// Names of the CUresult codes a probe can meet.
  static func resultName(_ code: Int32) -> String {
    switch code {
    case 0: "CUDA_SUCCESS"
    case 3: "CUDA_ERROR_NOT_INITIALIZED"
    case 35: "CUDA_ERROR_INSUFFICIENT_DRIVER"
    case 100: "CUDA_ERROR_NO_DEVICE"
    case 101: "CUDA_ERROR_INVALID_DEVICE"
    case 304: "CUDA_ERROR_OPERATING_SYSTEM"
    case 999: "CUDA_ERROR_UNKNOWN"
    default: "CUresult \(code)"
    }
  }
}
