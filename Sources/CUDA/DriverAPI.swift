#if canImport(Glibc)
import Glibc
#endif

/// Opaque driver handles.
public typealias CUcontext = OpaquePointer
public typealias CUmodule = OpaquePointer
public typealias CUfunction = OpaquePointer
public typealias CUstream = OpaquePointer
public typealias CUevent = OpaquePointer
public typealias CUgraph = OpaquePointer
public typealias CUgraphExec = OpaquePointer
/// A device address.
public typealias CUdeviceptr = UInt64

/// The CUDA driver API entry points Samoyeds uses, resolved with dlsym from
/// the library `LibraryLocator` finds. Immutable after loading, so it is
/// safe to share between threads.
final class DriverAPI: @unchecked Sendable {
  typealias Status = Int32
  let cuInit: @convention(c) (UInt32) -> Status
  let cuDeviceGet: @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Status
  let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> Status
  let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Status
  let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Status
  let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<CUcontext?>, Int32) -> Status
  let cuDevicePrimaryCtxRelease: @convention(c) (Int32) -> Status
  let cuCtxSetCurrent: @convention(c) (CUcontext?) -> Status
  let cuCtxSynchronize: @convention(c) () -> Status
  let cuMemAlloc: @convention(c) (UnsafeMutablePointer<CUdeviceptr>, Int) -> Status
  let cuMemFree: @convention(c) (CUdeviceptr) -> Status
  let cuMemcpyHtoD: @convention(c) (CUdeviceptr, UnsafeRawPointer?, Int) -> Status
  let cuMemcpyDtoH: @convention(c) (UnsafeMutableRawPointer?, CUdeviceptr, Int) -> Status
  let cuMemcpyHtoDAsync: @convention(c) (CUdeviceptr, UnsafeRawPointer?, Int, CUstream?) -> Status
  let cuMemcpyDtoDAsync: @convention(c) (CUdeviceptr, CUdeviceptr, Int, CUstream?) -> Status
  let cuMemsetD8Async: @convention(c) (CUdeviceptr, UInt8, Int, CUstream?) -> Status
  let cuMemsetD32Async: @convention(c) (CUdeviceptr, UInt32, Int, CUstream?) -> Status
  let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<CUmodule?>, UnsafeRawPointer?) -> Status
  let cuModuleUnload: @convention(c) (CUmodule?) -> Status
  let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<CUfunction?>, CUmodule?, UnsafePointer<CChar>) -> Status
  let cuFuncSetAttribute: @convention(c) (CUfunction?, Int32, Int32) -> Status
  let cuFuncGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, CUfunction?) -> Status
  let cuLaunchKernel:
    @convention(c) (
      CUfunction?, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, CUstream?,
      UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?
    ) -> Status
  /// cuLaunchKernelEx (CUDA 11.8 drivers on): launch attributes such as a
  /// cluster shape chosen at launch time; nil where the driver lacks it.
  let cuLaunchKernelEx:
    (@convention(c) (
      UnsafeRawPointer?, CUfunction?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
      UnsafeMutablePointer<UnsafeMutableRawPointer?>?
    ) -> Status)?
  /// cuOccupancyMaxActiveClusters (CUDA 11.8 drivers on); nil where missing.
  let cuOccupancyMaxActiveClusters:
    (@convention(c) (UnsafeMutablePointer<Int32>, CUfunction?, UnsafeRawPointer?) -> Status)?
  let cuStreamCreate: @convention(c) (UnsafeMutablePointer<CUstream?>, UInt32) -> Status
  let cuStreamDestroy: @convention(c) (CUstream?) -> Status
  let cuStreamSynchronize: @convention(c) (CUstream?) -> Status
  let cuEventCreate: @convention(c) (UnsafeMutablePointer<CUevent?>, UInt32) -> Status
  let cuEventDestroy: @convention(c) (CUevent?) -> Status
  let cuEventRecord: @convention(c) (CUevent?, CUstream?) -> Status
  let cuEventSynchronize: @convention(c) (CUevent?) -> Status
  let cuEventElapsedTime: @convention(c) (UnsafeMutablePointer<Float>, CUevent?, CUevent?) -> Status
  let cuStreamBeginCapture: @convention(c) (CUstream?, Int32) -> Status
  let cuStreamEndCapture: @convention(c) (CUstream?, UnsafeMutablePointer<CUgraph?>) -> Status
  let cuGraphInstantiate: @convention(c) (UnsafeMutablePointer<CUgraphExec?>, CUgraph?, UInt64) -> Status
  let cuGraphLaunch: @convention(c) (CUgraphExec?, CUstream?) -> Status
  let cuGraphExecDestroy: @convention(c) (CUgraphExec?) -> Status
  let cuGraphDestroy: @convention(c) (CUgraph?) -> Status
  let cuGetErrorName: @convention(c) (Status, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Status
  let cuGetErrorString: @convention(c) (Status, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Status

  /// Where the library was found.
  let path: String

  /// The process-wide instance, or why it could not be loaded.
  static let shared: Result<DriverAPI, CUDAError> = Result { () throws(CUDAError) in try DriverAPI() }

  /// Loaded instance or the error explaining why not.
  static func get() throws(CUDAError) -> DriverAPI { try shared.get() }

  private init() throws(CUDAError) {
    let library = try OpenedLibrary(.driver)
    path = library.name
    func load<T>(_ names: String...) throws(CUDAError) -> T {
      for name in names {
        if let function: T = try? library.symbol(name) { return function }
      }
      throw .unavailable("\(library.name) has no symbol \(names.joined(separator: " or "))")
    }
    cuInit = try load("cuInit")
    cuDeviceGet = try load("cuDeviceGet")
    cuDeviceGetCount = try load("cuDeviceGetCount")
    cuDeviceGetAttribute = try load("cuDeviceGetAttribute")
    cuDeviceGetName = try load("cuDeviceGetName")
    cuDevicePrimaryCtxRetain = try load("cuDevicePrimaryCtxRetain")
    cuDevicePrimaryCtxRelease = try load("cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease")
    cuCtxSetCurrent = try load("cuCtxSetCurrent")
    cuCtxSynchronize = try load("cuCtxSynchronize")
    cuMemAlloc = try load("cuMemAlloc_v2")
    cuMemFree = try load("cuMemFree_v2")
    cuMemcpyHtoD = try load("cuMemcpyHtoD_v2")
    cuMemcpyDtoH = try load("cuMemcpyDtoH_v2")
    cuMemcpyHtoDAsync = try load("cuMemcpyHtoDAsync_v2")
    cuMemcpyDtoDAsync = try load("cuMemcpyDtoDAsync_v2")
    cuMemsetD8Async = try load("cuMemsetD8Async")
    cuMemsetD32Async = try load("cuMemsetD32Async")
    cuModuleLoadData = try load("cuModuleLoadData")
    cuModuleUnload = try load("cuModuleUnload")
    cuModuleGetFunction = try load("cuModuleGetFunction")
    cuFuncSetAttribute = try load("cuFuncSetAttribute")
    cuFuncGetAttribute = try load("cuFuncGetAttribute")
    cuLaunchKernel = try load("cuLaunchKernel")
    cuLaunchKernelEx = try? library.symbol("cuLaunchKernelEx")
    cuOccupancyMaxActiveClusters = try? library.symbol("cuOccupancyMaxActiveClusters")
    cuStreamCreate = try load("cuStreamCreate")
    cuStreamDestroy = try load("cuStreamDestroy_v2", "cuStreamDestroy")
    cuStreamSynchronize = try load("cuStreamSynchronize")
    cuEventCreate = try load("cuEventCreate")
    cuEventDestroy = try load("cuEventDestroy_v2", "cuEventDestroy")
    cuEventRecord = try load("cuEventRecord")
    cuEventSynchronize = try load("cuEventSynchronize")
    cuEventElapsedTime = try load("cuEventElapsedTime_v2", "cuEventElapsedTime")
    cuStreamBeginCapture = try load("cuStreamBeginCapture_v2")
    cuStreamEndCapture = try load("cuStreamEndCapture")
    cuGraphInstantiate = try load("cuGraphInstantiateWithFlags")
    cuGraphLaunch = try load("cuGraphLaunch")
    cuGraphExecDestroy = try load("cuGraphExecDestroy")
    cuGraphDestroy = try load("cuGraphDestroy")
    cuGetErrorName = try load("cuGetErrorName")
    cuGetErrorString = try load("cuGetErrorString")
    try check(cuInit(0), "cuInit")
  }

  /// Throws a `CUDAError.driver` naming `api` unless `status` is success.
  @inline(__always)
  func check(_ status: Status, _ api: @autoclosure () -> String) throws(CUDAError) {
    guard status != 0 else { return }
    var name: UnsafePointer<CChar>? = nil
    var text: UnsafePointer<CChar>? = nil
    _ = cuGetErrorName(status, &name)
    _ = cuGetErrorString(status, &text)
    throw .driver(
      api: api(), code: status, name: name.map { String(cString: $0) } ?? "CUresult \(status)",
      message: text.map { String(cString: $0) } ?? "unknown error")
  }
}
