import CPUEngine
import CUDA

/// Every failure of the GPU engine, one case per cause.
public enum GPUEngineError: Error, Equatable, Sendable, CustomStringConvertible {
  /// The layer cannot run on the GPU (yet): a dense expert projection, a
  /// pattern or element type without a kernel. Says what and what to do.
  case unsupported(String)
  /// Bad hidden states or weights, as the CPU engine reports them (wrong
  /// hidden size, a NaN or infinity in the hidden states).
  case input(EngineError)
  /// A CUDA failure: driver, NVRTC, or launch arguments the kernels reject.
  case cuda(CUDAError)
  /// The GPU produced a result that breaks its contract (e.g. a routing
  /// plan that fails `RoutingPlan.validate`): a kernel defect.
  case wrongResult(String)

  public var description: String {
    switch self {
    case .unsupported(let text): "not supported on the GPU: \(text)"
    case .input(let error): error.description
    case .cuda(let error): error.description
    case .wrongResult(let text): "wrong GPU result: \(text)"
    }
  }
}

/// Runs CUDA-layer work, reporting its failure as `GPUEngineError.cuda`.
func cuda<Result>(_ body: () throws(CUDAError) -> Result) throws(GPUEngineError) -> Result {
  do {
    return try body()
  } catch {
    throw .cuda(error)
  }
}
