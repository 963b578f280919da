import CPUEngine
import CUDA
import Kernels
import SamoyedsFormat

/// One SwiGLU expert's projections packed for `PortableKernel`, on the host.
///
/// gate, up: [ffn, hidden]; down: [hidden, ffn].
public struct PackedExpert: Sendable {
  public var gate: PackedSparseWeight
  public var up: PackedSparseWeight
  public var down: PackedSparseWeight

  public init(gate: PackedSparseWeight, up: PackedSparseWeight, down: PackedSparseWeight) {
    self.gate = gate
    self.up = up
    self.down = down
  }
}

/// One SwiGLU expert's projections on the GPU (shapes as `PackedExpert`).
struct GPUExpert {
  let gate: GPUSparseWeight
  let up: GPUSparseWeight
  let down: GPUSparseWeight

  init(context: CUDAContext, packed: PackedExpert) throws(CUDAError) {
    gate = try GPUSparseWeight(context: context, packed: packed.gate)
    up = try GPUSparseWeight(context: context, packed: packed.up)
    down = try GPUSparseWeight(context: context, packed: packed.down)
  }

  /// Device bytes of the three weights.
  var deviceBytes: Int { gate.deviceBytes + up.deviceBytes + down.deviceBytes }
}

extension GPUMoELayer {
  /// Element types the GPU layer computes in.
  public static let supportedDTypes: [DType] = [.bf16, .fp16]

  /// Checks that every expert projection of `weights` (routed and shared)
  /// can run on the GPU in `dtype` and packs them, on the host only (no GPU
  /// needed; this is what `init` uploads).
  ///
  /// Every projection must be sparse (`CPULinear.sparse`) with an N:M that
  /// `PortableKernel.supportedPatterns` lists; values are rounded to
  /// `dtype` (exact for checkpoints stored in that type).
  ///
  /// - Throws: `.unsupported` naming the first dense projection, the first
  ///   pattern without a kernel, or an element type other than bf16/fp16;
  ///   `.input` when the weights' shapes do not match their configuration.
  public static func pack(
    _ weights: CPUMoEWeights, dtype: DType
  ) throws(GPUEngineError) -> (experts: [PackedExpert], shared: PackedExpert?) {
    guard supportedDTypes.contains(dtype) else {
      throw .unsupported("the GPU layer computes in bf16 or fp16, not \(dtype)")
    }
    do {
      try weights.validate()
    } catch {
      throw .input(error)
    }
    var named: [(String, CPUExpert)] = weights.experts.enumerated().map { ("expert \($0.offset)", $0.element) }
    if let shared = weights.shared { named.append(("shared expert", shared)) }

    // Check everything before packing anything (packing is the slow part).
    var sparse: [(gate: CPUSparseWeight, up: CPUSparseWeight, down: CPUSparseWeight)] = []
    for (name, expert) in named {
      sparse.append(
        (
          try supportedWeight(expert.gate, "\(name) gate_proj"), try supportedWeight(expert.up, "\(name) up_proj"),
          try supportedWeight(expert.down, "\(name) down_proj")
        ))
    }
    var packed: [PackedExpert] = []
    for projections in sparse {
      do {
        packed.append(
          PackedExpert(
            gate: HalfBits.packed(try projections.gate.sparseMatrix(), dtype),
            up: HalfBits.packed(try projections.up.sparseMatrix(), dtype),
            down: HalfBits.packed(try projections.down.sparseMatrix(), dtype)))
      } catch {
        throw .input(.format(error))
      }
    }
    let shared = weights.shared == nil ? nil : packed.removeLast()
    return (packed, shared)
  }

  /// The sparse weight of `linear`, or why the GPU cannot run it.
  static func supportedWeight(_ linear: CPULinear, _ name: String) throws(GPUEngineError) -> CPUSparseWeight {
    guard case .sparse(let weight) = linear else {
      throw .unsupported(
        "\(name) is dense; dense experts on the GPU are not supported yet (issue #5): prune the checkpoint first (`samoyeds prune`)"
      )
    }
    let pattern = weight.pattern
    guard PortableKernel.supportedPatterns.contains(where: { $0.n == pattern.keptRows && $0.m == pattern.groupRows })
    else {
      let supported = PortableKernel.supportedPatterns.map { "\($0.n):\($0.m)" }.joined(separator: ", ")
      throw .unsupported("\(name) has pattern \(pattern); the GPU kernel supports N:M \(supported) (any V)")
    }
    return weight
  }
}
