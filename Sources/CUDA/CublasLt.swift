#if canImport(Glibc)
import Glibc
#endif

/// cuBLASLt, loaded at run time: the dense baseline the sparse kernels are
/// measured against. One handle per object, destroyed in deinit.
public final class CublasLt: @unchecked Sendable {
  typealias Status = Int32
  typealias Handle = OpaquePointer
  typealias Descriptor = OpaquePointer
  let cublasLtCreate: @convention(c) (UnsafeMutablePointer<Handle?>) -> Status
  let cublasLtDestroy: @convention(c) (Handle?) -> Status
  let cublasLtMatmulDescCreate: @convention(c) (UnsafeMutablePointer<Descriptor?>, Int32, Int32) -> Status
  let cublasLtMatmulDescDestroy: @convention(c) (Descriptor?) -> Status
  let cublasLtMatmulDescSetAttribute: @convention(c) (Descriptor?, Int32, UnsafeRawPointer, Int) -> Status
  let cublasLtMatrixLayoutCreate:
    @convention(c) (UnsafeMutablePointer<Descriptor?>, Int32, UInt64, UInt64, Int64) -> Status
  let cublasLtMatrixLayoutDestroy: @convention(c) (Descriptor?) -> Status
  let cublasLtMatmulPreferenceCreate: @convention(c) (UnsafeMutablePointer<Descriptor?>) -> Status
  let cublasLtMatmulPreferenceDestroy: @convention(c) (Descriptor?) -> Status
  let cublasLtMatmulPreferenceSetAttribute: @convention(c) (Descriptor?, Int32, UnsafeRawPointer, Int) -> Status
  let cublasLtMatmulAlgoGetHeuristic:
    @convention(c) (
      Handle?, Descriptor?, Descriptor?, Descriptor?, Descriptor?, Descriptor?, Descriptor?, Int32,
      UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>
    ) -> Status
  let cublasLtMatmul:
    @convention(c) (
      Handle?, Descriptor?, UnsafeRawPointer, UInt64, Descriptor?, UInt64, Descriptor?, UnsafeRawPointer,
      UInt64, Descriptor?, UInt64, Descriptor?, UnsafeRawPointer?, UInt64, Int, OpaquePointer?
    ) -> Status

  // Values from cublasLt.h / library_types.h.
  static let computeF32: Int32 = 68  // CUBLAS_COMPUTE_32F
  static let dataF32: Int32 = 0  // CUDA_R_32F
  static let dataF16: Int32 = 2  // CUDA_R_16F
  static let dataBF16: Int32 = 14  // CUDA_R_16BF
  static let descTransA: Int32 = 3  // CUBLASLT_MATMUL_DESC_TRANSA
  static let descTransB: Int32 = 4  // CUBLASLT_MATMUL_DESC_TRANSB
  static let opN: Int32 = 0
  static let opT: Int32 = 1
  static let prefMaxWorkspace: Int32 = 1  // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES
  /// sizeof(cublasLtMatmulHeuristicResult_t): algo (64) + workspaceSize (8)
  /// + state (4) + wavesCount (4) + reserved[4] (16).
  static let heuristicResultBytes = 96

  let context: CUDAContext
  let handle: Handle
  /// Where the library was found.
  public let path: String
  /// Workspace handed to cuBLASLt.
  let workspace: DeviceBuffer

  /// Loads cuBLASLt and creates a handle with a 32 MiB workspace.
  public init(context: CUDAContext) throws(CUDAError) {
    let library = try OpenedLibrary(.cublasLt)
    func load<T>(_ name: String) throws(CUDAError) -> T { try library.symbol(name) }
    cublasLtCreate = try load("cublasLtCreate")
    cublasLtDestroy = try load("cublasLtDestroy")
    cublasLtMatmulDescCreate = try load("cublasLtMatmulDescCreate")
    cublasLtMatmulDescDestroy = try load("cublasLtMatmulDescDestroy")
    cublasLtMatmulDescSetAttribute = try load("cublasLtMatmulDescSetAttribute")
    cublasLtMatrixLayoutCreate = try load("cublasLtMatrixLayoutCreate")
    cublasLtMatrixLayoutDestroy = try load("cublasLtMatrixLayoutDestroy")
    cublasLtMatmulPreferenceCreate = try load("cublasLtMatmulPreferenceCreate")
    cublasLtMatmulPreferenceDestroy = try load("cublasLtMatmulPreferenceDestroy")
    cublasLtMatmulPreferenceSetAttribute = try load("cublasLtMatmulPreferenceSetAttribute")
    cublasLtMatmulAlgoGetHeuristic = try load("cublasLtMatmulAlgoGetHeuristic")
    cublasLtMatmul = try load("cublasLtMatmul")
    try context.makeCurrent()
    var handle: Handle? = nil
    let status = cublasLtCreate(&handle)
    guard status == 0, let handle else {
      throw .cublas(api: "cublasLtCreate", code: status, name: Self.statusName(status))
    }
    self.context = context
    self.handle = handle
    self.path = library.name
    self.workspace = try DeviceBuffer(context: context, byteCount: 32 << 20)
  }

  deinit { _ = cublasLtDestroy(handle) }

  func check(_ status: Status, _ api: String) throws(CUDAError) {
    guard status != 0 else { return }
    throw .cublas(api: api, code: status, name: Self.statusName(status))
  }

  static func statusName(_ status: Status) -> String {
    switch status {
    case 0: "CUBLAS_STATUS_SUCCESS"
    case 1: "CUBLAS_STATUS_NOT_INITIALIZED"
    case 3: "CUBLAS_STATUS_ALLOC_FAILED"
    case 7: "CUBLAS_STATUS_INVALID_VALUE"
    case 8: "CUBLAS_STATUS_ARCH_MISMATCH"
    case 11: "CUBLAS_STATUS_MAPPING_ERROR"
    case 13: "CUBLAS_STATUS_EXECUTION_FAILED"
    case 14: "CUBLAS_STATUS_INTERNAL_ERROR"
    case 15: "CUBLAS_STATUS_NOT_SUPPORTED"
    default: "cublasStatus \(status)"
    }
  }

  /// A planned dense GEMM `Y[T, m] = X[T, k] · W[m, k]ᵀ`, all row-major,
  /// bf16 or fp16 in and out, f32 accumulation. Plan once, run many times.
  public final class Plan: @unchecked Sendable {
    let owner: CublasLt
    let operation: Descriptor
    let layouts: (a: Descriptor, b: Descriptor, d: Descriptor)
    let algorithm: UnsafeMutableRawPointer
    public let tokens: Int
    public let m: Int
    public let k: Int

    deinit {
      _ = owner.cublasLtMatmulDescDestroy(operation)
      _ = owner.cublasLtMatrixLayoutDestroy(layouts.a)
      _ = owner.cublasLtMatrixLayoutDestroy(layouts.b)
      _ = owner.cublasLtMatrixLayoutDestroy(layouts.d)
      algorithm.deallocate()
    }

    init(owner: CublasLt, tokens: Int, m: Int, k: Int, half: Bool) throws(CUDAError) {
      self.owner = owner
      self.tokens = tokens
      self.m = m
      self.k = k
      let dataType = half ? CublasLt.dataF16 : CublasLt.dataBF16
      // Row-major Y = X Wᵀ is column-major Yᵀ (m x T) = op_T(W as k x m) · X as k x T.
      var operation: Descriptor? = nil
      try owner.check(
        owner.cublasLtMatmulDescCreate(&operation, CublasLt.computeF32, CublasLt.dataF32), "cublasLtMatmulDescCreate")
      var transA = CublasLt.opT
      var transB = CublasLt.opN
      try owner.check(
        owner.cublasLtMatmulDescSetAttribute(operation, CublasLt.descTransA, &transA, 4), "cublasLtMatmulDescSetAttribute")
      try owner.check(
        owner.cublasLtMatmulDescSetAttribute(operation, CublasLt.descTransB, &transB, 4), "cublasLtMatmulDescSetAttribute")
      var a: Descriptor? = nil
      var b: Descriptor? = nil
      var d: Descriptor? = nil
      try owner.check(
        owner.cublasLtMatrixLayoutCreate(&a, dataType, UInt64(k), UInt64(m), Int64(k)), "cublasLtMatrixLayoutCreate(W)")
      try owner.check(
        owner.cublasLtMatrixLayoutCreate(&b, dataType, UInt64(k), UInt64(tokens), Int64(k)),
        "cublasLtMatrixLayoutCreate(X)")
      try owner.check(
        owner.cublasLtMatrixLayoutCreate(&d, dataType, UInt64(m), UInt64(tokens), Int64(m)),
        "cublasLtMatrixLayoutCreate(Y)")
      var preference: Descriptor? = nil
      try owner.check(owner.cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate")
      defer { _ = owner.cublasLtMatmulPreferenceDestroy(preference) }
      var workspaceBytes = UInt64(owner.workspace.byteCount)
      try owner.check(
        owner.cublasLtMatmulPreferenceSetAttribute(preference, CublasLt.prefMaxWorkspace, &workspaceBytes, 8),
        "cublasLtMatmulPreferenceSetAttribute")
      let results = UnsafeMutableRawPointer.allocate(byteCount: CublasLt.heuristicResultBytes, alignment: 16)
      var found: Int32 = 0
      try owner.check(
        owner.cublasLtMatmulAlgoGetHeuristic(owner.handle, operation, a, b, d, d, preference, 1, results, &found),
        "cublasLtMatmulAlgoGetHeuristic")
      guard found > 0, let operation, let a, let b, let d else {
        results.deallocate()
        throw .cublas(api: "cublasLtMatmulAlgoGetHeuristic", code: 15, name: "no algorithm for \(tokens)x\(m)x\(k)")
      }
      self.operation = operation
      self.layouts = (a, b, d)
      self.algorithm = results  // the algo is the first 64 bytes of the result
    }

    /// Runs `Y = X · Wᵀ` on `stream`.
    public func run(x: CUdeviceptr, w: CUdeviceptr, y: CUdeviceptr, stream: CUDAStream) throws(CUDAError) {
      var alpha: Float = 1
      var beta: Float = 0
      try owner.check(
        owner.cublasLtMatmul(
          owner.handle, operation, &alpha, w, layouts.a, x, layouts.b, &beta, y, layouts.d, y, layouts.d,
          algorithm, owner.workspace.address, owner.workspace.byteCount, stream.handle),
        "cublasLtMatmul(\(tokens)x\(m)x\(k))")
    }
  }

  /// Plans `Y[T, m] = X[T, k] · W[m, k]ᵀ` (bf16, or fp16 when `half`).
  public func plan(tokens: Int, m: Int, k: Int, half: Bool = false) throws(CUDAError) -> Plan {
    guard tokens > 0, m > 0, k > 0 else { throw .invalidArgument("empty GEMM \(tokens)x\(m)x\(k)") }
    return try Plan(owner: self, tokens: tokens, m: m, k: k, half: half)
  }
}
