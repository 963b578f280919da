import CPUEngine
import CUDA
import GPUEngine
import Kernels
import SamoyedsFormat
import SamoyedsModel

/// GPU cases for `samoyeds verify`: every kernel and epilogue on fresh
/// random inputs against the f32 CPU reference, outputs poisoned first so
/// unwritten elements show as NaN; the GPU router's plan against the CPU's;
/// then the whole GPU MoE layer against the CPU layer for every family.
struct GPUVerifier {
  let session: GPUSession
  var report: (String, Double, Double) -> Void

  struct Case {
    var m: Int
    var k: Int
    var pattern: String
    var count: Int
    var dtype: DType
    var epilogue: String  // store, silu, add, slots
    var splits: Int?
    var tiling: PortableKernel.Tiling? = nil

    /// The case as `verify` prints it, without the seed.
    var name: String {
      "gpu \(dtype) \(m)x\(k) \(pattern) T=\(count) \(epilogue)\(splits.map { " splits=\($0)" } ?? "")\(tiling.map { " \($0.rawValue)" } ?? "")"
    }

    /// Whether `verify --filter text` selects the case: `text` is part of
    /// "MxK N:M:V epilogue tiling" (tiling "auto" when not forced) or of the
    /// printed name.
    func matches(_ text: String) -> Bool {
      "\(m)x\(k) \(pattern) \(epilogue) \(tiling?.rawValue ?? "auto")".contains(text) || name.contains(text)
    }
  }

  static func cases() -> [Case] {
    var result: [Case] = []
    let shapes: [(Int, Int, String)] = [
      (256, 256, "1:2:128"), (1408, 2048, "1:2:128"), (2048, 1408, "1:2:128"), (2, 128, "1:2:128"),
      (34, 256, "1:2:128"), (96, 256, "1:4:64"), (64, 96, "2:4:32"), (64, 128, "1:8:32"),
    ]
    for (m, k, pattern) in shapes {
      for count in [0, 1, 3, 77, 1000] {
        for epilogue in ["store", "silu", "add", "slots"] {
          result.append(Case(m: m, k: k, pattern: pattern, count: count, dtype: .bf16, epilogue: epilogue, splits: nil))
        }
      }
      result.append(Case(m: m, k: k, pattern: pattern, count: 77, dtype: .fp16, epilogue: "store", splits: nil))
      result.append(Case(m: m, k: k, pattern: pattern, count: 77, dtype: .bf16, epilogue: "store", splits: 1))
      result.append(Case(m: m, k: k, pattern: pattern, count: 3, dtype: .bf16, epilogue: "silu", splits: 3))
      // Every tiling on every epilogue, whatever the heuristic picks.
      for tiling in PortableKernel.Tiling.allCases
      where !tiling.oneOfTwoOnly || pattern.hasPrefix("1:2:") {
        for epilogue in ["store", "silu", "add", "slots"] {
          result.append(
            Case(m: m, k: k, pattern: pattern, count: 77, dtype: .bf16, epilogue: epilogue, splits: nil, tiling: tiling))
        }
        result.append(Case(m: m, k: k, pattern: pattern, count: 1000, dtype: .fp16, epilogue: "store", splits: 1, tiling: tiling))
      }
    }
    // The Hopper pipeline beyond one lap of its ring: 32 stages (8 laps) for
    // every token tile, V = 256 (folds across stages, splits starting
    // mid-vector), and a partial last stage inside split-k (45 chunks, 2 splits).
    for (m, k, pattern) in [
      (128, 4096, "1:2:128"), (128, 4096, "1:4:64"), (128, 4096, "2:4:32"), (128, 4096, "1:8:32"), (256, 4096, "1:2:256"),
    ] {
      for count in [77, 1000] {
        result.append(Case(m: m, k: k, pattern: pattern, count: count, dtype: .bf16, epilogue: "store", splits: 1, tiling: .wgmma))
      }
    }
    result.append(Case(m: 256, k: 4096, pattern: "1:2:256", count: 300, dtype: .bf16, epilogue: "slots", splits: 3, tiling: .wgmma))
    // The Hopper kernel over more tiles than SMs: 16 row blocks (the last
    // partial: m = 4000) x 10 token tiles (the last 48 tokens).
    for (pattern, dtype, epilogue) in [
      ("1:2:128", DType.bf16, "store"), ("1:2:128", .bf16, "slots"), ("1:2:128", .fp16, "add"), ("1:2:256", .bf16, "store"),
    ] {
      result.append(Case(m: 4000, k: 1024, pattern: pattern, count: 1200, dtype: dtype, epilogue: epilogue, splits: 1, tiling: .wgmma))
    }
    // rt4's ring (3 stages of one vector) over many laps: 32 stages, a
    // partial row block (m = 34 + 128), splits of 11 stages.
    for (m, count) in [(128, 77), (128, 1000), (162, 130)] {
      result.append(Case(m: m, k: 4096, pattern: "1:2:128", count: count, dtype: .bf16, epilogue: "store", splits: 1, tiling: .rt4))
    }
    result.append(Case(m: 256, k: 4096, pattern: "1:2:128", count: 300, dtype: .bf16, epilogue: "slots", splits: 3, tiling: .rt4))
    result.append(Case(m: 256, k: 4096, pattern: "1:2:128", count: 65, dtype: .bf16, epilogue: "silu", splits: 1, tiling: .rt4))
    // rt4 with the planner's own splits on the small shapes at T = 1000 and
    // 4096 (48, 64 and 192 CTAs; their partials' budget allows no split).
    for (m, k, count) in [(1408, 2048, 1000), (2048, 1408, 1000), (1408, 2048, 4096)] {
      for epilogue in ["store", "silu"] {
        result.append(Case(m: m, k: k, pattern: "1:2:128", count: count, dtype: .bf16, epilogue: epilogue, splits: nil, tiling: .rt4))
      }
    }
    result.append(Case(m: 256, k: 1440, pattern: "1:2:32", count: 300, dtype: .bf16, epilogue: "silu", splits: 2, tiling: .wgmma))
    // Split-k summed by each tile's last split (T <= 16), on every tiling and
    // epilogue, patterns with one and with two kept rows (the tile's atomics).
    for tiling in PortableKernel.Tiling.allCases {
      for (epilogue, count) in [("store", 1), ("silu", 5), ("add", 16), ("slots", 9)] {
        result.append(Case(m: 256, k: 1024, pattern: "1:2:128", count: count, dtype: .bf16, epilogue: epilogue, splits: 4, tiling: tiling))
      }
      if !tiling.oneOfTwoOnly {
        result.append(Case(m: 256, k: 1024, pattern: "2:4:32", count: 7, dtype: .fp16, epilogue: "slots", splits: 3, tiling: tiling))
      }
    }
    // Split-k of the built-in tiling at T = 40 (streaming tiles of 16
    // tokens on these small weights: summed by each tile's last split over
    // three token tiles) and T = 100 (summed by the `_split` launch): rows
    // in fours (m = 256) and in pairs (m = 34, not a multiple of 4), every
    // epilogue.
    for (m, k) in [(256, 1024), (34, 256)] {
      for count in [40, 100] {
        for epilogue in ["store", "silu", "add", "slots"] {
          result.append(Case(m: m, k: k, pattern: "1:2:128", count: count, dtype: .bf16, epilogue: epilogue, splits: 2))
        }
      }
    }
    return result
  }

  func run(_ c: Case, seed: UInt64) throws {
    let context = session.context
    let stream = session.stream
    var rng = SeededGenerator(seed: seed)
    let pattern = try SparsePattern(parsing: c.pattern)
    let tokens = 2 * c.count + 1
    let x = HalfBits.rounded(rng.normalMatrix(rows: tokens, columns: c.k), c.dtype)
    // Every other row (plus a random start) — an ascending index list.
    let rows = (0..<c.count).map { Int32(2 * $0 + 1) }
    let (weight, reference) = try randomSparseWeight(
      m: c.m, k: c.k, pattern: pattern, dtype: c.dtype, rng: &rng, context: context)
    let xBuffer = try DeviceBuffer(context: context, copying: HalfBits.encode(x.storage, c.dtype))
    let rowBuffer = try DeviceBuffer(context: context, copying: rows)
    let name = "\(c.name) seed=\(seed)"
    // A forced tiling this GPU does not have (wgmma off sm_90a, a tile its
    // shared memory cannot hold) is not a case here: the kernel's own test.
    if let tiling = c.tiling,
      !PortableKernel.isAvailable(
        tiling,
        PortableKernel.Arguments(
          weight: weight, epilogue: .store, x: xBuffer, tokens: tokens, rows: rowBuffer, count: c.count, output: xBuffer),
        context: context)
    {
      print("skip  \(name): tiling \(tiling.rawValue) is not available on this GPU")
      return
    }
    let y = try CPUGEMM.sparse(x, rows: rows, weight: CPUSparseWeight(reference))

    func launch(_ epilogue: PortableKernel.Epilogue, output: DeviceBuffer) throws {
      var arguments = PortableKernel.Arguments(
        weight: weight, epilogue: epilogue, x: xBuffer, tokens: tokens, rows: rowBuffer, count: c.count,
        output: output, splits: c.splits)
      arguments.tiling = c.tiling
      let bytes = PortableKernel.workspaceBytes(arguments, context: context)
      let workspace = bytes > 0 ? try DeviceBuffer(context: context, byteCount: bytes) : nil
      try workspace?.fill(byte: 0, on: stream)  // split-k counters start at zero
      try PortableKernel.run(arguments, workspace: workspace, library: session.library, stream: stream)
      try stream.synchronize()
    }

    switch c.epilogue {
    case "store", "silu":
      var expected = y
      var epilogue = PortableKernel.Epilogue.store
      if c.epilogue == "silu" {
        let (up, upReference) = try randomSparseWeight(
          m: c.m, k: c.k, pattern: pattern, dtype: c.dtype, rng: &rng, context: context)
        let u = try CPUGEMM.sparse(x, rows: rows, weight: CPUSparseWeight(upReference))
        for i in expected.storage.indices {
          let g = y.storage[i]
          expected.storage[i] = g / (1 + Float.exp(-g)) * u.storage[i]
        }
        epilogue = .siluMul(up: up)
      }
      let output = try DeviceBuffer(context: context, byteCount: max(2, c.count * c.m * 2))
      try output.fill(byte: 0xFF, on: stream)  // NaN in bf16 and fp16
      try launch(epilogue, output: output)
      let got = HalfBits.decode(try output.download(UInt16.self, count: c.count * c.m), c.dtype)
      report(name, compare(got, expected.storage), 1e-2)

    case "add":
      let routeWeights = (0..<c.count).map { _ in Float.random(in: 0.1..<1, using: &rng) }
      let initial = (0..<(tokens * c.m)).map { _ in Float.random(in: -1..<1, using: &rng) }
      var expected = initial
      for i in 0..<c.count {
        for o in 0..<c.m { expected[Int(rows[i]) * c.m + o] += routeWeights[i] * y[i, o] }
      }
      let output = try DeviceBuffer(context: context, copying: initial)
      try launch(.scaleAdd(routeWeights: try DeviceBuffer(context: context, copying: routeWeights)), output: output)
      report(name, compare(try output.download(Float.self, count: tokens * c.m), expected), 1e-2)

    default:  // slots + deterministic combine, run twice for bitwise equality
      let topK = 2
      let routeWeights = (0..<c.count).map { _ in Float.random(in: 0.1..<1, using: &rng) }
      let slots = rows.enumerated().map { Int32(Int($0.element) * topK + $0.offset % topK) }
      var expected = [Float](repeating: 0, count: tokens * c.m)
      for i in 0..<c.count {
        for o in 0..<c.m { expected[Int(rows[i]) * c.m + o] += routeWeights[i] * y[i, o] }
      }
      var results: [[Float]] = []
      for _ in 0..<2 {
        let slotBuffer = try DeviceBuffer(context: context, byteCount: tokens * topK * c.m * 4)
        try slotBuffer.fill(byte: 0, on: stream)
        try launch(
          .scaleToSlots(
            routeWeights: try DeviceBuffer(context: context, copying: routeWeights),
            slots: try DeviceBuffer(context: context, copying: slots)), output: slotBuffer)
        let out = try DeviceBuffer(context: context, byteCount: tokens * c.m * 4)
        try out.fill(byte: 0xFF, on: stream)
        try PortableKernel.combine(
          slots: slotBuffer, into: out, tokens: tokens, topK: topK, hidden: c.m, library: session.library,
          stream: stream)
        try stream.synchronize()
        results.append(try out.download(Float.self, count: tokens * c.m))
      }
      let deterministic = results[0].elementsEqual(results[1]) { $0.bitPattern == $1.bitPattern }
      report(name + (deterministic ? " (bitwise repeatable)" : " (NOT repeatable)"),
             deterministic ? compare(results[0], expected) : .nan, 1e-2)
    }
  }

  /// One GPU MoE-layer case: `GPUMoELayer` against `CPUMoELayer.forward` on
  /// the same pruned weights (values stored in `dtype`, so both sides hold
  /// identical numbers) and the same hidden states rounded to `dtype`.
  struct LayerCase {
    var config: MoEConfig
    var tokens: Int
    var dtype: DType = .bf16
    /// Routing pushed onto expert 0 and away from the last expert (`skew`).
    var skewed = false
    /// Where the layer routes; `.device` runs on `ExactLogits` inputs.
    var router: RouterPlacement = .host
    /// One launch per projection for all experts (with the GPU router).
    var launch: ExpertLaunch = .perExpert
    /// Captured once as a CUDA graph (`captureDecode`) and replayed.
    var graph = false
    /// The grouped launches' kernel, forced (`GPUMoELayer.groupedTiling`).
    var groupedTiling: PortableKernel.Tiling? = nil

    /// "gpu moe layer mixtral-mini T=77", then " skewed" / " fp16" /
    /// " device-router" / " grouped" / " decode-graph".
    var description: String {
      "gpu moe layer \(config.name) T=\(tokens)\(skewed ? " skewed" : "")\(dtype == .bf16 ? "" : " \(dtype)")"
        + (router == .device ? " device-router" : "") + (launch == .grouped ? " grouped" : "")
        + (groupedTiling.map { " \($0.rawValue)" } ?? "") + (graph ? " decode-graph" : "")
    }
  }

  /// Per mini family: T = 1, 3, 77 (bf16), T = 77 skewed, T = 77 fp16; then
  /// per mini family with the GPU router, T = 77 and T = 77 skewed (last, so
  /// the earlier cases keep their seeds). Experts without tokens occur in
  /// every T = 1 case and every skewed case (the last expert); skewed OpenMoE
  /// also drops tokens by capacity.
  static func layerCases() -> [LayerCase] {
    let host = Presets.mini.flatMap { config in
      [1, 3, 77].map { LayerCase(config: config, tokens: $0) }
        + [LayerCase(config: config, tokens: 77, skewed: true), LayerCase(config: config, tokens: 77, dtype: .fp16)]
        // One expert takes all 600 tokens: on sm_90a its projections run the wgmma kernel.
        + [LayerCase(config: config, tokens: 600, skewed: true)]
    }
    let device = Presets.mini.flatMap { config in
      [false, true].map { LayerCase(config: config, tokens: 77, skewed: $0, router: .device) }
    }
    // Grouped launches (decode sizes, an expert without tokens at T = 1,
    // skew, fp16, and T = 77 for many tiles per expert).
    let grouped = Presets.mini.flatMap { config in
      [1, 3, 16].map { LayerCase(config: config, tokens: $0, router: .device, launch: .grouped) }
        + [
          LayerCase(config: config, tokens: 16, skewed: true, router: .device, launch: .grouped),
          LayerCase(config: config, tokens: 16, dtype: .fp16, router: .device, launch: .grouped),
          LayerCase(config: config, tokens: 77, router: .device, launch: .grouped),
        ]
    }
    // Decode graphs (Qwen2-MoE's shared sigmoid gate on the device).
    let graphs = Presets.mini.flatMap { config in
      [1, 3, 16].map { LayerCase(config: config, tokens: $0, router: .device, launch: .grouped, graph: true) }
    }
    // Grouped launches of the Hopper kernel (sm_90a; skipped elsewhere):
    // one entry (split-k summed in the launch), partial tiles, one expert
    // with 600 entries (five 128-token tiles), fp16, and a graph at T = 300.
    let wgmma = Presets.mini.flatMap { config in
      [1, 77].map { LayerCase(config: config, tokens: $0, router: .device, launch: .grouped, groupedTiling: .wgmma) }
        + [
          LayerCase(config: config, tokens: 600, skewed: true, router: .device, launch: .grouped, groupedTiling: .wgmma),
          LayerCase(config: config, tokens: 77, dtype: .fp16, router: .device, launch: .grouped, groupedTiling: .wgmma),
          LayerCase(
            config: config, tokens: 300, router: .device, launch: .grouped, graph: true, groupedTiling: .wgmma),
        ]
    }
    return host + device + grouped + graphs + wgmma
  }

  /// One GPU router case: `GPURouter`'s plan against `CPUMoELayer.route` on
  /// the same inputs, snapped to `ExactLogits`' grids so that both engines
  /// compute bitwise equal logits and must choose identically (no near-tie
  /// can flip a choice; exact ties are broken toward the lower expert on
  /// both sides).
  struct RouterCase {
    var config: MoEConfig
    var tokens: Int
    var dtype: DType = .bf16
    var skewed = false
    /// A forced k split of the logits (`GPURouter.logitSplits`): the
    /// general path even for T ≤ 16, which otherwise routes in one launch.
    var splits: Int? = nil

    /// "gpu router qwen3-moe-mini T=77", then " skewed" / " fp16" / " splits=2".
    var description: String {
      "gpu router \(config.name) T=\(tokens)\(skewed ? " skewed" : "")\(dtype == .bf16 ? "" : " \(dtype)")"
        + (splits.map { " splits=\($0)" } ?? "")
    }
  }

  /// Every mini family at T = 1, 3, 77, 1000, T = 77 skewed (one expert
  /// takes every token, the last none; OpenMoE drops by capacity) and T = 77
  /// fp16; every full preset at T = 1 (k-split logits) and T = 1000; Qwen3's
  /// 128 experts at T = 16384; OpenMoE-34B skewed at T = 1000. Router
  /// weights only: no expert is built.
  static func routerCases() -> [RouterCase] {
    let mini = Presets.mini.flatMap { config in
      [1, 3, 8, 77, 1000].map { RouterCase(config: config, tokens: $0) }
        + [RouterCase(config: config, tokens: 77, skewed: true), RouterCase(config: config, tokens: 77, dtype: .fp16)]
    }
    let full = Presets.full.flatMap { config in [1, 1000].map { RouterCase(config: config, tokens: $0) } }
    let large = Presets.full.compactMap { config -> RouterCase? in
      switch config.name {
      case "qwen3-30b-a3b": RouterCase(config: config, tokens: 16384)
      case "openmoe-34b": RouterCase(config: config, tokens: 1000, skewed: true)
      default: nil
      }
    }
    // Few tokens on the general path (forced splits), after the cases above
    // so that they keep their seeds: mini T = 1, 3, 16 skewed; full T = 1.
    let general =
      Presets.mini.flatMap { config in
        [RouterCase(config: config, tokens: 1, splits: 2), RouterCase(config: config, tokens: 3, splits: 1)]
          + [RouterCase(config: config, tokens: 16, skewed: true, splits: 2)]
      } + Presets.full.map { RouterCase(config: $0, tokens: 1, splits: 8) }
    return mini + full + large + general
  }

  /// Runs `c` twice on the GPU (the two plans must be bitwise equal) and
  /// reports the largest relative weight difference from the CPU's plan
  /// (NaN when the entries differ). Tolerance 1e-5.
  func runRouter(_ c: RouterCase, seed: UInt64) throws {
    let config = c.config
    let hidden = config.hiddenSize
    guard hidden <= ExactLogits.maxHidden else {
      report("\(c.description) seed=\(seed): hidden \(hidden) beyond exact logits", .nan, 1e-5)
      return
    }
    var rng = SeededGenerator(seed: seed)
    var router = rng.normalMatrix(rows: config.numExperts, columns: hidden, scale: 4 / Float(hidden).squareRoot())
    var x = rng.normalMatrix(rows: c.tokens, columns: hidden)
    if c.skewed { Self.skew(router: &router, x: &x, rng: &rng) }
    router = ExactLogits.router(router)
    x = ExactLogits.hiddenStates(x)
    let expected = try CPUMoELayer.route(x, config: config, router: router)
    let gpuRouter = try GPURouter(config: config, router: router, session: session, dtype: c.dtype)
    gpuRouter.logitSplits = c.splits
    let xBuffer = try DeviceBuffer(context: session.context, copying: HalfBits.encode(x.storage, c.dtype))
    var plans: [RoutingPlan] = []
    for _ in 0..<2 {
      plans.append(try gpuRouter.download(try gpuRouter.route(x: xBuffer, tokens: c.tokens), tokens: c.tokens))
    }
    let repeatable = plans[0] == plans[1] && plans[0].weights.map(\.bitPattern) == plans[1].weights.map(\.bitPattern)
    let difference = plans[0].weightDifference(to: expected)
    report(
      "\(c.description) seed=\(seed) (\(Self.notes(plans[0], expected: expected, repeatable: repeatable)))",
      repeatable ? Double(difference ?? .nan) : .nan, 1e-5)
  }

  /// "max 77 tokens/expert, 1 idle, 39 dropped, repeatable", naming the
  /// first expert whose entries differ from `expected`'s.
  static func notes(_ plan: RoutingPlan, expected: RoutingPlan, repeatable: Bool) -> String {
    let counts = (0..<plan.numExperts).map { plan.entries(ofExpert: $0).count }
    var notes = [
      "max \(counts.max() ?? 0) tokens/expert", "\(counts.filter { $0 == 0 }.count) idle",
      "\(plan.numTokens * plan.topK - plan.entryCount) dropped",
    ]
    if plan.weightDifference(to: expected) == nil {
      let differing = (0..<min(plan.numExperts, expected.numExperts)).first { e in
        plan.expertOffsets[e + 1] != expected.expertOffsets[e + 1]
          || plan.tokenIndices[plan.entries(ofExpert: e)] != expected.tokenIndices[expected.entries(ofExpert: e)]
          || plan.outputSlots[plan.entries(ofExpert: e)] != expected.outputSlots[expected.entries(ofExpert: e)]
      }
      notes.append("PLAN DIFFERS\(differing.map { " at expert \($0)" } ?? "")")
    }
    notes.append(repeatable ? "repeatable" : "NOT repeatable")
    return notes.joined(separator: ", ")
  }

  /// Skewed routing: a unit direction u is taken out of every token and put
  /// back with length 4, and ±8·u is added to the router rows of expert 0 and
  /// the last expert, so expert 0's logit leads every token's by about 32
  /// (it gets every token, up to a capacity) and the last expert's trails by
  /// as much (it gets none).
  static func skew(router: inout Matrix<Float>, x: inout Matrix<Float>, rng: inout SeededGenerator) {
    let hidden = x.columns
    var u = rng.normalMatrix(rows: 1, columns: hidden).storage
    let norm = u.reduce(0) { $0 + $1 * $1 }.squareRoot()
    u = u.map { $0 / norm }
    for t in 0..<x.rows {
      var along: Float = 0
      for c in 0..<hidden { along += x[t, c] * u[c] }
      for c in 0..<hidden { x[t, c] += (4 - along) * u[c] }
    }
    let last = router.rows - 1
    for c in 0..<hidden {
      router[0, c] += 8 * u[c]
      router[last, c] -= 8 * u[c]
    }
  }

  /// Runs `c` twice on the GPU (the two outputs and plans must be bitwise
  /// equal, the plan the CPU's: identical with the host router, entries
  /// identical and weights within 1e-5 with the GPU router) and reports the
  /// error against the CPU.
  func runLayer(_ c: LayerCase, seed: UInt64) throws {
    if c.groupedTiling == .wgmma && session.context.architecture != "sm_90a" {
      print("skip  \(c.description) seed=\(seed): the wgmma kernel needs sm_90a")
      return
    }
    var weights = DenseMoEWeights.random(config: c.config, seed: seed)
    var rng = SeededGenerator(seed: seed &+ 7)
    var x = rng.normalMatrix(rows: c.tokens, columns: c.config.hiddenSize)
    if c.skewed { Self.skew(router: &weights.router, x: &x, rng: &rng) }
    if c.router == .device {
      weights.router = ExactLogits.router(weights.router)
      x = ExactLogits.hiddenStates(x)
    }
    x = HalfBits.rounded(x, c.dtype)
    let (sparse, _) = try weights.pruned(pattern: .default, storage: c.dtype)
    let expected = try CPUMoELayer.forward(x, weights: sparse)
    let layer = try GPUMoELayer(weights: sparse, session: session, dtype: c.dtype, router: c.router)
    layer.expertLaunch = c.launch
    layer.groupedTiling = c.groupedTiling
    layer.poisonsUnwrittenSlots = true
    if c.graph {
      // Two replays on the same input must agree bitwise and match the CPU.
      let graph = try layer.captureDecode(tokens: c.tokens)
      try graph.setInput(x)
      try graph.replay()
      let first = try graph.readOutput()
      try graph.replay()
      let second = try graph.readOutput()
      let repeatable = first.storage.elementsEqual(second.storage) { $0.bitPattern == $1.bitPattern }
      report(
        "\(c.description) seed=\(seed) (\(repeatable ? "repeatable" : "NOT repeatable"))",
        repeatable ? relativeError(first, expected.output) : .nan, 1e-2)
      return
    }
    let first = try layer.forward(x)
    let second = try layer.forward(x)
    let repeatable =
      first.output.storage.elementsEqual(second.output.storage) { $0.bitPattern == $1.bitPattern }
      && first.plan == second.plan && first.plan.weights.map(\.bitPattern) == second.plan.weights.map(\.bitPattern)
    let planMatches =
      c.router == .host
      ? first.plan == expected.plan : (first.plan.weightDifference(to: expected.plan).map { $0 <= 1e-5 } ?? false)
    var notes = Self.notes(first.plan, expected: expected.plan, repeatable: repeatable)
    if !planMatches && first.plan.weightDifference(to: expected.plan) != nil { notes += ", PLAN WEIGHTS DIFFER" }
    report(
      "\(c.description) seed=\(seed) (\(notes))",
      repeatable && planMatches ? relativeError(first.output, expected.output) : .nan, 1e-2)
  }

  /// Relative Frobenius error; NaN if any element is NaN.
  func compare(_ got: [Float], _ expected: [Float]) -> Double {
    guard got.count == expected.count else { return .nan }
    if got.isEmpty { return 0 }
    do {
      return relativeError(
        try Matrix(rows: 1, columns: got.count, storage: got),
        try Matrix(rows: 1, columns: expected.count, storage: expected))
    } catch {
      return .nan
    }
  }
}
