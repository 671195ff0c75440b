/// Cached activations of one encoder layer, each (B·T, ·) unless noted. Used by `layerBackward`.
///
/// With bf16 caches (a bf16 training step) the three activations that backward reads only as inputs of
/// weight-gradient products — the layer's input, `a` and `ctx` — are kept as the bf16 copies their forward
/// products took (`inputHalf`, `aHalf`, `ctxHalf`), and their fp32 buffers (`a`, `ctx`, `out`) are shared
/// by all layers (`out` alternating between two): fp32 for everything else, half the bytes for those three.
final class LayerActivations {
    /// (B·T·3C) query, key and value, laid out as the weights say (`PreparedWeights.qkvLayout`): three
    /// (B, T, C) blocks, or one (B, T, 3C) matrix when the projections are stacked.
    let qkv: FloatBuffer
    let ctx: FloatBuffer                   // (B, T, C)
    let probs: FloatBuffer                 // (B, NH, T, T) softmax output
    let r1, a: FloatBuffer                 // (B, T, C): residual sum, LN1 out
    let m1, s1, m2, s2: FloatBuffer        // (B, T) LayerNorm mean / rstd
    let f1: FloatBuffer                    // (B, T, F) intermediate pre-GELU (backward recomputes GELU from it)
    let r2, out: FloatBuffer               // (B, T, C)
    /// (B, T, C) bf16 copies of the layer's input, `a` and `ctx` (bf16 caches only), made by the forward
    /// products that read them first, read by the weight-gradient products of backward.
    let inputHalf, aHalf, ctxHalf: HalfBuffer?
    // Dropout masks are not stored: backward regenerates them from the generator state saved here
    // before each draw (bit-identical masks; saves 3 mask tensors and the dropped probabilities per layer).
    var rngProbs = SeededRandom(seed: 0), rngAO = SeededRandom(seed: 0), rngF2 = SeededRandom(seed: 0)

    /// `shared`: the fp32 (a, ctx, out) to use instead of buffers of its own, with bf16 caches.
    init(B: Int, T: Int, c: ModelConfig, dropout: Bool, shared: (a: FloatBuffer, ctx: FloatBuffer, out: FloatBuffer)? = nil) {
        let n = B * T * c.width, tt = B * c.heads * T * T
        qkv = FloatBuffer(count: 3 * n); ctx = shared?.ctx ?? FloatBuffer(count: n)
        probs = FloatBuffer(count: tt)
        r1 = FloatBuffer(count: n); a = shared?.a ?? FloatBuffer(count: n)
        m1 = FloatBuffer(count: B * T); s1 = FloatBuffer(count: B * T)
        m2 = FloatBuffer(count: B * T); s2 = FloatBuffer(count: B * T)
        f1 = FloatBuffer(count: B * T * c.ffn)
        r2 = FloatBuffer(count: n); out = shared?.out ?? FloatBuffer(count: n)
        inputHalf = shared.map { _ in HalfBuffer(count: n) }
        aHalf = shared.map { _ in HalfBuffer(count: n) }
        ctxHalf = shared.map { _ in HalfBuffer(count: n) }
    }
}

/// Gradient scratch for backward, allocated once per `Activations`.
final class BackwardScratch {
    let dhA, dhB, dC1, dC2, dC3, dQ, dK, dV: FloatBuffer  // (B, T, C)
    let dF: FloatBuffer                                   // (B, T, F)
    let dP: FloatBuffer                                   // (workers, T, T)
    let probsMask: FloatBuffer                            // (B, NH, T, T) regenerated attention-dropout mask
    let dEmbT: FloatBuffer                                // (B, C)
    let dT1, dT2: FloatBuffer                             // (B, 4·Dt)

    init(B: Int, T: Int, c: ModelConfig, dropout: Bool) {
        let n = B * T * c.width
        probsMask = FloatBuffer(count: dropout && c.attentionDropout > 0 ? B * c.heads * T * T : 0)
        dhA = FloatBuffer(count: n); dhB = FloatBuffer(count: n); dC1 = FloatBuffer(count: n)
        dC2 = FloatBuffer(count: n); dC3 = FloatBuffer(count: n)
        dQ = FloatBuffer(count: n); dK = FloatBuffer(count: n); dV = FloatBuffer(count: n)
        dF = FloatBuffer(count: B * T * c.ffn)
        dP = FloatBuffer(count: ComputeContext.bound.threads * T * T); dEmbT = FloatBuffer(count: B * c.width)
        dT1 = FloatBuffer(count: B * 4 * c.hiddenTDim); dT2 = FloatBuffer(count: B * 4 * c.hiddenTDim)
    }
}

/// Every activation of one forward pass for a (B, T) batch, allocated once and reused.
///
/// With `keepLayerCaches` (training) each layer has its own caches for backward; without it
/// (sampling) one set is reused by all layers, which keeps inference memory small.
final class Activations {
    /// Batch rows of the passes (the allocated rows, `capacity`, except inside `withRows`), and positions.
    private(set) var B: Int
    let T: Int
    /// Batch rows the buffers hold.
    let capacity: Int
    let keepsLayerCaches: Bool
    /// Whether the last forward used dropout (set by the training step).
    var usedDropout = false
    let te: FloatBuffer                    // (B, Dt) sinusoidal features
    let h1, s1: FloatBuffer                // (B, 4·Dt) time MLP hidden, SiLU out
    let embT: FloatBuffer                  // (B, C)
    let u1, u1t: FloatBuffer               // (B, T, C) up-projection hidden, tanh out
    let pre: FloatBuffer                   // (B, T, C) pos + emb_x + emb_t (LayerNorm input)
    let m0, s0: FloatBuffer                // (B, T)
    let h0, h0d, mask0: FloatBuffer        // (B, T, C) LN out, after input dropout, mask
    let d1, d1t: FloatBuffer               // (B, T, C) down-projection hidden, tanh out
    let out: FloatBuffer                   // (B, T, D) predicted x̂₀
    let ao, f2: FloatBuffer                // (B, T, C) dense outputs before the residual add (temporaries)
    let g: FloatBuffer                     // (B, T, F) GELU output (temporary; recomputed in backward)
    let probsDrop: FloatBuffer             // (B, NH, T, T) attention probabilities after dropout (temporary)
    /// Self-conditioned models only (`ModelConfig.selfCondition`; empty otherwise), each (B, T, D): the network's
    /// input x_in = x_t + x̂₀_prev·W_scᵀ + b_sc, the x̂₀_prev it was made from (backward's weight-gradient input),
    /// and the gradient of x_in (backward scratch; training only).
    let selfCondInput, selfCondPrevious, selfCondGrad: FloatBuffer
    let dropout: Bool
    private let layers: [LayerActivations]
    /// Input of the down-projection in the last forward (the encoder output).
    var lastInput: CP
    private var _scratch: BackwardScratch?
    private let config: ModelConfig
    private var _attentionScratch: FloatBuffer?
    /// Per-worker scratch of `dsq_attention_packed` (grown on demand).
    func attentionScratch(count: Int) -> P {
        if let s = _attentionScratch, s.count >= count { return s.ptr }
        let s = FloatBuffer(count: count)
        _attentionScratch = s
        return s.ptr
    }

    /// `bf16Caches` (training with a bf16 backend): see `LayerActivations`.
    init(config c: ModelConfig, B: Int, T: Int, keepLayerCaches: Bool, dropout: Bool, bf16Caches: Bool = false) {
        self.B = B; self.T = T; self.config = c; capacity = B
        keepsLayerCaches = keepLayerCaches
        let n = B * T * c.width
        te = FloatBuffer(count: B * c.hiddenTDim)
        h1 = FloatBuffer(count: B * 4 * c.hiddenTDim); s1 = FloatBuffer(count: B * 4 * c.hiddenTDim)
        embT = FloatBuffer(count: B * c.width)
        u1 = FloatBuffer(count: c.hasProjections ? n : 0); u1t = FloatBuffer(count: c.hasProjections ? n : 0)
        pre = FloatBuffer(count: n); m0 = FloatBuffer(count: B * T); s0 = FloatBuffer(count: B * T)
        h0 = FloatBuffer(count: n); h0d = FloatBuffer(count: dropout ? n : 0); mask0 = FloatBuffer(count: dropout ? n : 0)
        d1 = FloatBuffer(count: c.hasProjections ? n : 0); d1t = FloatBuffer(count: c.hasProjections ? n : 0)
        out = FloatBuffer(count: B * T * c.hiddenDim)
        ao = FloatBuffer(count: n); f2 = FloatBuffer(count: n); g = FloatBuffer(count: B * T * c.ffn)
        probsDrop = FloatBuffer(count: dropout && c.attentionDropout > 0 ? B * c.heads * T * T : 0)
        self.dropout = dropout
        let sc = c.selfCondition ? B * T * c.hiddenDim : 0
        selfCondInput = FloatBuffer(count: sc); selfCondPrevious = FloatBuffer(count: sc)
        selfCondGrad = FloatBuffer(count: keepLayerCaches ? sc : 0)
        let count = keepLayerCaches ? max(1, c.layers) : 1
        if bf16Caches && keepLayerCaches {
            let a = FloatBuffer(count: n), ctx = FloatBuffer(count: n), outs = [FloatBuffer(count: n), FloatBuffer(count: n)]
            layers = (0..<count).map { LayerActivations(B: B, T: T, c: c, dropout: dropout, shared: (a, ctx, outs[$0 % 2])) }
        } else {
            layers = (0..<count).map { _ in LayerActivations(B: B, T: T, c: c, dropout: dropout) }
        }
        lastInput = CP(h0.ptr)
    }

    /// Runs `body` with passes over the first `rows` batch rows only (1 ≤ rows ≤ `capacity`): every buffer is used
    /// from its start. Self-conditioning's no-gradient estimate runs the selected examples this way, in the
    /// training activations that the graded pass overwrites next (no second set of activations).
    func withRows<R>(_ rows: Int, _ body: () throws -> R) rethrows -> R {
        precondition(rows >= 1 && rows <= capacity, "rows \(rows) outside 1...\(capacity)")
        let all = B
        B = rows
        defer { B = all }
        return try body()
    }

    @inline(__always) func layer(_ l: Int) -> LayerActivations { keepsLayerCaches ? layers[l] : layers[0] }

    var scratch: BackwardScratch {
        if let s = _scratch { return s }
        let s = BackwardScratch(B: B, T: T, c: config, dropout: dropout)
        _scratch = s
        return s
    }
}
