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

    /// One line for `--version` and the benchmarks (`threads`: the context's).
    public func summary(threads: Int) -> String {
        let isa = Self.packedISA
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
    /// Copies of the tensors that are not packed (biases, LayerNorms, position embeddings).
    private let small: [ParameterID: FloatBuffer]
    /// Packed Linear weights (a layer's query weight holds the stacked Q/K/V of the layer).
    private let packed: [ParameterID: FloatBuffer]
    /// The model's tensors by role.
    let weights: ModelParameters
    /// Stacked Q/K/V biases per layer (3C).
    let qkvBias: [FloatBuffer]
    /// The tied embedding (V × D) packed for the rounding and read-out products.
    let table: FloatBuffer

    init(model: TransformerNetModel) {
        let c = model.config, C = c.width, M = model.weights
        config = c
        func p(_ id: ParameterID) -> UnsafePointer<Float> { UnsafePointer(model.ptr(model.params, id)) }
        func pack(_ w: UnsafePointer<Float>, n: Int, k: Int) -> FloatBuffer {
            let b = FloatBuffer(count: dsq_packed_count(n, k))
            dsq_pack(b.ptr, w, k, n, k)
            return b
        }
        func pack(_ l: LinearParameters) -> FloatBuffer { pack(p(l.weight), n: l.outputs, k: l.inputs) }
        var packed: [ParameterID: FloatBuffer] = [:]
        var biases: [FloatBuffer] = []
        var linears = [M.timeEmbedIn, M.timeEmbedOut]
        for proj in [M.inputUp, M.outputDown].compactMap({ $0 }) { linears += [proj.first, proj.second] }
        var stacked: Set<ParameterID> = []
        for layer in M.layers {
            let w = FloatBuffer(count: 3 * C * C), b = FloatBuffer(count: 3 * C)
            for (j, lin) in [layer.query, layer.key, layer.value].enumerated() {
                (w.ptr + j * C * C).update(from: p(lin.weight), count: C * C)
                (b.ptr + j * C).update(from: p(lin.bias), count: C)
                stacked.formUnion([lin.weight, lin.bias])
            }
            packed[layer.query.weight] = pack(w.ptr, n: 3 * C, k: C)
            biases.append(b)
            linears += [layer.attentionOutput, layer.intermediate, layer.output]
        }
        for lin in linears { packed[lin.weight] = pack(lin) }
        table = pack(p(M.wordEmbedding), n: c.vocabSize, k: c.hiddenDim)
        var small: [ParameterID: FloatBuffer] = [:]
        for e in model.layout.entries where packed[e.id] == nil && !stacked.contains(e.id) && e.id != M.wordEmbedding {
            let b = FloatBuffer(count: e.count)
            b.ptr.update(from: p(e.id), count: e.count)
            small[e.id] = b
        }
        self.small = small
        self.packed = packed
        self.weights = M
        qkvBias = biases
    }

    @inline(__always) func ptr(_ id: ParameterID) -> CP { CP(small[id]!.ptr) }
    @inline(__always) func weight(_ id: ParameterID) -> CP { CP(packed[id]!.ptr) }

    /// out (m × n) = act((x (m × k)·Wᵀ + bias) + res) with the packed weight `id`.
    @inline(__always)
    func linear(_ out: P, _ x: CP, _ id: ParameterID, bias: CP?, m: Int, k: Int, n: Int, res: CP? = nil, gelu: Bool = false,
                cx: ComputeContext) {
        dsq_linear_packed(out, n, x, k, m, k, weight(id), n, bias, res, n, gelu ? DSQ_ACT_GELU : DSQ_ACT_NONE,
                          Int32(cx.threads), cx.portableKernels ? 1 : 0)
    }

    /// The network's forward pass as `TransformerNetModel.forward` in eval mode, on the packed weights.
    /// Returns a pointer to `acts.out`.
    func forward(x: CP, tModel: [Float], acts: Activations) -> CP {
        let c = config, B = acts.B, T = acts.T, BT = B * T, C = c.width, D = c.hiddenDim, Dt = c.hiddenTDim
        let F = c.ffn, NH = c.heads, HS = c.headSize, M = weights, cx = ComputeContext.bound
        Kernels.timestepEmbedding(acts.te.ptr, tModel, dim: Dt)
        linear(acts.h1.ptr, acts.te.ptr, M.timeEmbedIn.weight, bias: ptr(M.timeEmbedIn.bias), m: B, k: Dt, n: 4 * Dt, cx: cx)
        Kernels.silu(acts.s1.ptr, acts.h1.ptr, B * 4 * Dt)
        linear(acts.embT.ptr, acts.s1.ptr, M.timeEmbedOut.weight, bias: ptr(M.timeEmbedOut.bias), m: B, k: 4 * Dt, n: C, cx: cx)
        let pre = acts.pre.ptr
        if let up = M.inputUp {
            linear(acts.u1.ptr, x, up.first.weight, bias: ptr(up.first.bias), m: BT, k: D, n: C, cx: cx)
            Kernels.tanh(acts.u1t.ptr, acts.u1.ptr, BT * C)
            linear(pre, acts.u1t.ptr, up.second.weight, bias: ptr(up.second.bias), m: BT, k: C, n: C, cx: cx)
        } else {
            pre.update(from: x, count: BT * C)
        }
        let pos = ptr(M.positionEmbeddings)
        for b in 0..<B {
            let et = acts.embT.ptr + b * C
            for s in 0..<T {
                let row = pre + (b * T + s) * C, pr = pos + s * C
                for j in 0..<C { row[j] += pr[j] + et[j] }
            }
        }
        Kernels.layerNorm(acts.h0.ptr, mean: nil, rstd: nil, pre, ptr(M.embeddingNorm.weight), ptr(M.embeddingNorm.bias),
                          n: BT, c: C, eps: c.layerNormEps)
        let la = acts.layer(0)
        let workers = Int32(cx.threads)
        let scratch = acts.attentionScratch(count: dsq_attention_scratch_count(T, HS, workers))
        var h = CP(acts.h0.ptr)
        for l in 0..<c.layers {
            let L = M.layers[l]
            let qkv = la.qkv.ptr
            linear(qkv, h, L.query.weight, bias: CP(qkvBias[l].ptr), m: BT, k: C, n: 3 * C, cx: cx)
            for b in 0..<B {
                dsq_attention_packed(la.ctx.ptr + b * T * C, C, qkv + b * T * 3 * C, 3 * C, T, NH, HS,
                                     1 / Float(HS).squareRoot(), scratch, workers, cx.portableKernels ? 1 : 0)
            }
            // r1 = (ctx·W_oᵀ + b_o) + h, then LayerNorm.
            linear(la.r1.ptr, la.ctx.ptr, L.attentionOutput.weight, bias: ptr(L.attentionOutput.bias),
                   m: BT, k: C, n: C, res: h, cx: cx)
            Kernels.layerNorm(la.a.ptr, mean: nil, rstd: nil, la.r1.ptr, ptr(L.attentionNorm.weight),
                              ptr(L.attentionNorm.bias), n: BT, c: C, eps: c.layerNormEps)
            linear(acts.g.ptr, la.a.ptr, L.intermediate.weight, bias: ptr(L.intermediate.bias),
                   m: BT, k: C, n: F, gelu: true, cx: cx)
            linear(la.r2.ptr, acts.g.ptr, L.output.weight, bias: ptr(L.output.bias),
                   m: BT, k: F, n: C, res: la.a.ptr, cx: cx)
            Kernels.layerNorm(la.out.ptr, mean: nil, rstd: nil, la.r2.ptr, ptr(L.outputNorm.weight),
                              ptr(L.outputNorm.bias), n: BT, c: C, eps: c.layerNormEps)
            h = CP(la.out.ptr)
        }
        if let down = M.outputDown {
            linear(acts.d1.ptr, h, down.first.weight, bias: ptr(down.first.bias), m: BT, k: C, n: C, cx: cx)
            Kernels.tanh(acts.d1t.ptr, acts.d1.ptr, BT * C)
            linear(acts.out.ptr, acts.d1t.ptr, down.second.weight, bias: ptr(down.second.bias), m: BT, k: C, n: D, cx: cx)
        } else {
            acts.out.ptr.update(from: h, count: BT * D)
        }
        return CP(acts.out.ptr)
    }
}
