import CKernels
import Foundation

/// Which code runs a sampler's products.
public enum SamplingEngine: String, Sendable, CaseIterable {
    /// `packed` for small batches (≤ 512 rows per product) on CPUs with AVX-512, `blas` otherwise.
    case automatic
    /// OpenBLAS for every product (the packing of each weight is redone per call).
    case blas
    /// Weights packed once (`PackedModel`), products and attention on our two-thread pool.
    case packed

    /// The ISA of the packed kernels on this CPU: "avx512f", or "scalar" (portable, slow).
    public static var packedISA: String { String(cString: dsq_packed_isa()) }

    /// The engine named by DIFFUSEQ_ENGINE (automatic when unset; nil for an unknown value).
    public static var fromEnvironment: SamplingEngine? {
        guard let v = ProcessInfo.processInfo.environment["DIFFUSEQ_ENGINE"], !v.isEmpty else { return .automatic }
        return SamplingEngine(rawValue: v)
    }

    /// Threads of the packed engine's pool (the kernel thread count).
    public static var poolThreads: Int { Kernels.workerCount }

    /// The engine samplers use by default: DIFFUSEQ_ENGINE, or automatic.
    public static var current: SamplingEngine { fromEnvironment ?? .automatic }

    /// One line for `--version` and the benchmarks.
    public var summary: String {
        let isa = Self.packedISA, threads = Int(dsq_pool_threads() > 1 ? dsq_pool_threads() : Int32(Kernels.workerCount))
        switch self {
        case .blas: return "OpenBLAS for every product"
        case .packed: return "packed weights (\(isa) kernels, \(threads) threads) for every sampling run"
        case .automatic:
            return isa == "avx512f"
                ? "packed weights (avx512f kernels, \(threads) threads) for runs of ≤ 512 positions, OpenBLAS above"
                : "OpenBLAS (no AVX-512: the packed kernels would run their portable code)"
        }
    }

    /// Whether batch-1 runs (the explorer, `trace`) use OpenBLAS, and so want its latency profile; with the
    /// packed engine OpenBLAS stays idle during a run and its spinning workers would only take CPU.
    public var batchOneUsesBLAS: Bool { !usesPacked(rows: 128) }

    /// Whether a run of `rows` positions (batch × seq_len) uses the packed products.
    func usesPacked(rows: Int) -> Bool {
        switch self {
        case .blas: return false
        case .packed: return true
        case .automatic: return rows <= 512 && Self.packedISA == "avx512f"
        }
    }
}

/// A snapshot of a model for batch-1 inference: every Linear weight packed once into the panels of
/// `dsq_pack` (query/key/value stacked per layer), the embedding table likewise for rounding, and copies
/// of the small tensors (biases, LayerNorms, position embeddings). OpenBLAS packs a weight on every call, which at 64 rows is a third of
/// the product's time; here a product is only the multiply-adds.
///
/// Sendable (unchecked): packed once in init and read-only afterwards; the C pool it runs on serialises
/// jobs itself (`pool.run` mutex, a second caller computes inline).
final class PackedModel: @unchecked Sendable {
    let config: ModelConfig
    /// Copies of the tensors that are not packed (biases, LayerNorms, position embeddings), by key.
    private let small: [String: FloatBuffer]
    /// Packed weights by parameter key ("…query.weight" holds the stacked Q/K/V of the layer).
    private let packed: [String: FloatBuffer]
    /// Stacked Q/K/V biases per layer (3C).
    let qkvBias: [FloatBuffer]
    /// The tied embedding (V × D) packed for the rounding and read-out products.
    let table: FloatBuffer

    init(model: TransformerNetModel) {
        let c = model.config, C = c.width
        config = c
        func p(_ key: String) -> UnsafePointer<Float> { UnsafePointer(model.ptr(model.params, key)) }
        func pack(_ w: UnsafePointer<Float>, n: Int, k: Int) -> FloatBuffer {
            let b = FloatBuffer(count: dsq_packed_count(n, k))
            dsq_pack(b.ptr, w, k, n, k)
            return b
        }
        var packed: [String: FloatBuffer] = [:]
        var biases: [FloatBuffer] = []
        for (key, n, k) in [("time_embed.0.weight", 4 * c.hiddenTDim, c.hiddenTDim), ("time_embed.2.weight", C, 4 * c.hiddenTDim)] {
            packed[key] = pack(p(key), n: n, k: k)
        }
        if c.hasProjections {
            for (key, n, k) in [("input_up_proj.0.weight", C, c.hiddenDim), ("input_up_proj.2.weight", C, C),
                                ("output_down_proj.0.weight", C, C), ("output_down_proj.2.weight", c.hiddenDim, C)] {
                packed[key] = pack(p(key), n: n, k: k)
            }
        }
        var stacked: Set<String> = []
        for l in 0..<c.layers {
            let pre = "input_transformers.layer.\(l)."
            let w = FloatBuffer(count: 3 * C * C), b = FloatBuffer(count: 3 * C)
            for (j, name) in ["query", "key", "value"].enumerated() {
                (w.ptr + j * C * C).update(from: p(pre + "attention.self.\(name).weight"), count: C * C)
                (b.ptr + j * C).update(from: p(pre + "attention.self.\(name).bias"), count: C)
                stacked.insert(pre + "attention.self.\(name).weight")
                stacked.insert(pre + "attention.self.\(name).bias")
            }
            packed[pre + "attention.self.query.weight"] = pack(w.ptr, n: 3 * C, k: C)
            biases.append(b)
            packed[pre + "attention.output.dense.weight"] = pack(p(pre + "attention.output.dense.weight"), n: C, k: C)
            packed[pre + "intermediate.dense.weight"] = pack(p(pre + "intermediate.dense.weight"), n: c.ffn, k: C)
            packed[pre + "output.dense.weight"] = pack(p(pre + "output.dense.weight"), n: C, k: c.ffn)
        }
        table = pack(p("word_embedding.weight"), n: c.vocabSize, k: c.hiddenDim)
        var small: [String: FloatBuffer] = [:]
        for e in model.layout.entries where packed[e.key] == nil && !stacked.contains(e.key) && e.key != "word_embedding.weight" {
            let b = FloatBuffer(count: e.count)
            b.ptr.update(from: p(e.key), count: e.count)
            small[e.key] = b
        }
        self.small = small
        self.packed = packed
        qkvBias = biases
        PackedModel.configurePool()
    }

    /// Sizes the pool to the kernel thread count (`setKernelThreads`).
    static func configurePool() {
        if Int(dsq_pool_threads()) != Kernels.workerCount { dsq_pool_set_threads(Int32(Kernels.workerCount)) }
    }

    @inline(__always) func ptr(_ key: String) -> CP { CP(small[key]!.ptr) }
    @inline(__always) func weight(_ key: String) -> CP { CP(packed[key]!.ptr) }

    /// out (m × n) = act((x (m × k)·Wᵀ + bias) + res) with the packed weight `key`.
    @inline(__always)
    func linear(_ out: P, _ x: CP, _ key: String, bias: CP?, m: Int, k: Int, n: Int, res: CP? = nil, gelu: Bool = false) {
        dsq_linear_packed(out, n, x, k, m, k, weight(key), n, bias, res, n, gelu ? DSQ_ACT_GELU : DSQ_ACT_NONE)
    }

    /// The network's forward pass as `TransformerNetModel.forward` in eval mode, on the packed weights.
    /// Returns a pointer to `acts.out`.
    func forward(x: CP, tModel: [Float], acts: Activations) -> CP {
        let c = config, B = acts.B, T = acts.T, BT = B * T, C = c.width, D = c.hiddenDim, Dt = c.hiddenTDim
        let F = c.ffn, NH = c.heads, HS = c.headSize
        Kernels.timestepEmbedding(acts.te.ptr, tModel, dim: Dt)
        linear(acts.h1.ptr, acts.te.ptr, "time_embed.0.weight", bias: ptr("time_embed.0.bias"), m: B, k: Dt, n: 4 * Dt)
        Kernels.silu(acts.s1.ptr, acts.h1.ptr, B * 4 * Dt)
        linear(acts.embT.ptr, acts.s1.ptr, "time_embed.2.weight", bias: ptr("time_embed.2.bias"), m: B, k: 4 * Dt, n: C)
        let pre = acts.pre.ptr
        if c.hasProjections {
            linear(acts.u1.ptr, x, "input_up_proj.0.weight", bias: ptr("input_up_proj.0.bias"), m: BT, k: D, n: C)
            Kernels.tanh(acts.u1t.ptr, acts.u1.ptr, BT * C)
            linear(pre, acts.u1t.ptr, "input_up_proj.2.weight", bias: ptr("input_up_proj.2.bias"), m: BT, k: C, n: C)
        } else {
            pre.update(from: x, count: BT * C)
        }
        let pos = ptr("position_embeddings.weight")
        for b in 0..<B {
            let et = acts.embT.ptr + b * C
            for s in 0..<T {
                let row = pre + (b * T + s) * C, pr = pos + s * C
                for j in 0..<C { row[j] += pr[j] + et[j] }
            }
        }
        Kernels.layerNorm(acts.h0.ptr, mean: nil, rstd: nil, pre, ptr("LayerNorm.weight"), ptr("LayerNorm.bias"),
                          n: BT, c: C, eps: c.layerNormEps)
        let la = acts.layer(0)
        let workers = dsq_pool_threads()
        let scratch = acts.attentionScratch(count: dsq_attention_scratch_count(T, HS, workers))
        var h = CP(acts.h0.ptr)
        for l in 0..<c.layers {
            let p = "input_transformers.layer.\(l)."
            let qkv = acts.qkv.ptr
            linear(qkv, h, p + "attention.self.query.weight", bias: CP(qkvBias[l].ptr), m: BT, k: C, n: 3 * C)
            for b in 0..<B {
                dsq_attention_packed(la.ctx.ptr + b * T * C, C, qkv + b * T * 3 * C, 3 * C, T, NH, HS,
                                     1 / Float(HS).squareRoot(), scratch, workers)
            }
            // r1 = (ctx·W_oᵀ + b_o) + h, then LayerNorm.
            linear(la.r1.ptr, la.ctx.ptr, p + "attention.output.dense.weight", bias: ptr(p + "attention.output.dense.bias"),
                   m: BT, k: C, n: C, res: h)
            Kernels.layerNorm(la.a.ptr, mean: nil, rstd: nil, la.r1.ptr, ptr(p + "attention.output.LayerNorm.weight"),
                              ptr(p + "attention.output.LayerNorm.bias"), n: BT, c: C, eps: c.layerNormEps)
            linear(acts.g.ptr, la.a.ptr, p + "intermediate.dense.weight", bias: ptr(p + "intermediate.dense.bias"),
                   m: BT, k: C, n: F, gelu: true)
            linear(la.r2.ptr, acts.g.ptr, p + "output.dense.weight", bias: ptr(p + "output.dense.bias"),
                   m: BT, k: F, n: C, res: la.a.ptr)
            Kernels.layerNorm(la.out.ptr, mean: nil, rstd: nil, la.r2.ptr, ptr(p + "output.LayerNorm.weight"),
                              ptr(p + "output.LayerNorm.bias"), n: BT, c: C, eps: c.layerNormEps)
            h = CP(la.out.ptr)
        }
        if c.hasProjections {
            linear(acts.d1.ptr, h, "output_down_proj.0.weight", bias: ptr("output_down_proj.0.bias"), m: BT, k: C, n: C)
            Kernels.tanh(acts.d1t.ptr, acts.d1.ptr, BT * C)
            linear(acts.out.ptr, acts.d1t.ptr, "output_down_proj.2.weight", bias: ptr("output_down_proj.2.bias"), m: BT, k: C, n: D)
        } else {
            acts.out.ptr.update(from: h, count: BT * D)
        }
        return CP(acts.out.ptr)
    }
}
