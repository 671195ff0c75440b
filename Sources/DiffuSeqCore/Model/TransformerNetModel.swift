import CKernels
import Foundation

/// DiffuSeq's `TransformerNetModel` (official `diffuseq/transformer_model.py`): time-embedding MLP,
/// up-projection, position embeddings, LayerNorm, a post-LN BERT encoder with no attention mask,
/// down-projection, and the tied `lm_head`. Forward and backward, on one flat parameter buffer.
///
/// Sendable (unchecked): `params` is written only by loading and training (one thread at a time, before the
/// model is shared); samplers read it (they snapshot what they need) and keep activations of their own.
public final class TransformerNetModel: @unchecked Sendable {
    /// Sizes.
    public let config: ModelConfig
    /// Parameter table (official key order).
    public let layout: ParameterLayout
    /// All parameters, laid out by `layout`.
    public let params: FloatBuffer

    /// Creates a model with zero weights (load or initialise them afterwards).
    public init(config: ModelConfig) throws {
        try config.validate()
        try BLAS.ensureLoaded()
        self.config = config
        self.layout = ParameterLayout(config)
        self.params = FloatBuffer(count: layout.totalCount)
    }

    /// The tensors by role (`ParameterLayout.parameters`).
    public var weights: ModelParameters { layout.parameters }

    /// Pointer to tensor `id` in `buffer` (params, grads or moments).
    @inline(__always)
    func ptr(_ buffer: FloatBuffer, _ id: ParameterID) -> P { buffer.ptr + id.offset }

    /// Pointer to the tensor `role` names in `buffer` (params, grads or moments), e.g. `\.wordEmbedding`.
    @inline(__always)
    func ptr(_ buffer: FloatBuffer, _ role: KeyPath<ModelParameters, ParameterID>) -> P {
        buffer.ptr + layout.parameters[keyPath: role].offset
    }

    /// The parameter tensor `key` as an array (for tests and checkpoints).
    public func tensor(_ key: String) -> [Float]? {
        layout.entry(key).map { params.array($0.range) }
    }

    // MARK: Initialisation (PyTorch defaults, spec §1.8)

    /// PyTorch default initialisation: Linear U(±1/√fan_in) for weights and biases, embeddings
    /// N(0,1), LayerNorm (1, 0), `lm_head.bias` U(±1/√D); v2's `mean_embed` N(0, 1/D) (drawn last, so the other
    /// tensors get the same values with or without it).
    public func initialise(seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        for e in layout.entries {
            let p = params.ptr + e.offset
            switch e.initialisation {
            case .constant(let v):
                p.update(repeating: v, count: e.count)
            case .normal:
                rng.fillNormal(p, e.count)
            case .scaledNormal(let std):
                rng.fillNormal(p, e.count)
                for i in 0..<e.count { p[i] *= std }
            case .uniform(let fanIn):
                let bound = 1 / Float(fanIn).squareRoot()
                for i in 0..<e.count { p[i] = (rng.uniform() * 2 - 1) * bound }
            }
        }
    }

    // MARK: Forward

    /// The weights as OpenBLAS fp32 takes them: views into `params` (no copy), so always current.
    private(set) lazy var referenceWeights = PreparedWeights(model: self, mm: OpenBLASMatMul.shared, ownedByModel: true)

    /// Runs the network: out (B, T, D) = f(x (B, T, D), tModel (B)).
    ///
    /// - Parameters:
    ///   - tModel: the timestep the network sees (official: index·1000/T when rescaling).
    ///   - dropout: a random source when training with dropout; nil in eval mode.
    ///   - weights: the weights as a backend prepared them (default: OpenBLAS fp32 on `params`); every
    ///     product goes through `weights.mm`.
    ///   - previousX0: (B, T, D) the previous estimate x̂₀ of a self-conditioned model (nil: zeros; ignored by
    ///     other models), see `selfConditionedInput`.
    /// - Returns: a pointer to `acts.out`, valid until the next call with `acts`.
    @discardableResult
    func forward(x: CP, tModel: [Float], acts: Activations, dropout: UnsafeMutablePointer<SeededRandom>?,
                 weights: PreparedWeights? = nil, previousX0: CP? = nil) -> CP {
        let c = config, B = acts.B, T = acts.T, BT = B * T, C = c.width, D = c.hiddenDim, Dt = c.hiddenTDim
        let W = weights ?? referenceWeights, mm = W.mm
        let x = selfConditionedInput(x, previousX0: previousX0, acts: acts, weights: W)
        precondition(!(acts.keepsLayerCaches && W.fusedQKV), "training runs three query/key/value products")
        // time_embed: Linear(Dt→4Dt) → SiLU → Linear(4Dt→C)
        Kernels.timestepEmbedding(acts.te.ptr, tModel, dim: Dt)
        mm.linear(acts.h1.ptr, acts.te.ptr, W.timeEmbedIn.weight, W.timeEmbedIn.bias, n: B)
        Kernels.silu(acts.s1.ptr, acts.h1.ptr, B * 4 * Dt)
        mm.linear(acts.embT.ptr, acts.s1.ptr, W.timeEmbedOut.weight, W.timeEmbedOut.bias, n: B)
        // input_up_proj: Linear(D→C) → tanh → Linear(C→C)
        let pre = acts.pre.ptr
        if let up = W.inputUp {
            mm.linear(acts.u1.ptr, x, up.first.weight, up.first.bias, n: BT)
            Kernels.tanh(acts.u1t.ptr, acts.u1.ptr, BT * C)
            mm.linear(pre, acts.u1t.ptr, up.second.weight, up.second.bias, n: BT)
        } else {
            pre.update(from: x, count: BT * C)
        }
        // + position_embeddings[0..<T] + emb_t (broadcast over T)
        let pos = ptr(params, \.positionEmbeddings), M = self.weights
        for b in 0..<B {
            let et = acts.embT.ptr + b * C
            for s in 0..<T {
                let row = pre + (b * T + s) * C, pr = pos + s * C
                for j in 0..<C { row[j] += pr[j] + et[j] }
            }
        }
        Kernels.layerNorm(acts.h0.ptr, mean: acts.m0.ptr, rstd: acts.s0.ptr, pre, ptr(params, M.embeddingNorm.weight),
                          ptr(params, M.embeddingNorm.bias), n: BT, c: C, eps: c.layerNormEps)
        var h: CP = CP(acts.h0.ptr)
        if let rng = dropout, c.dropout > 0 {
            Self.dropoutForward(acts.h0d.ptr, mask: acts.mask0.ptr, h, BT * C, p: c.dropout, rng: rng)
            h = CP(acts.h0d.ptr)
        }
        for l in 0..<c.layers {
            let la = acts.layer(l)
            layerForward(l, input: h, la: la, acts: acts, dropout: dropout, weights: W)
            h = CP(la.out.ptr)
        }
        // output_down_proj: Linear(C→C) → tanh → Linear(C→D)
        if let down = W.outputDown {
            mm.linear(acts.d1.ptr, h, down.first.weight, down.first.bias, n: BT)
            Kernels.tanh(acts.d1t.ptr, acts.d1.ptr, BT * C)
            mm.linear(acts.out.ptr, acts.d1t.ptr, down.second.weight, down.second.bias, n: BT)
        } else {
            acts.out.ptr.update(from: h, count: BT * D)
        }
        acts.lastInput = h
        return CP(acts.out.ptr)
    }

    /// One BERT layer (HF `BertLayer`): self-attention → BertSelfOutput (dense + dropout +
    /// LayerNorm(x + input)) → intermediate (dense + GELU) → BertOutput (dense + dropout + LayerNorm).
    private func layerForward(_ l: Int, input: CP, la: LayerActivations, acts: Activations,
                              dropout: UnsafeMutablePointer<SeededRandom>?, weights W: PreparedWeights) {
        let c = config, B = acts.B, T = acts.T, BT = B * T, C = c.width
        let NH = c.heads, HS = c.headSize
        let L = self.weights.layers[l], PL = W.layers[l], mm = W.mm
        // BertSelfAttention: query, key, value (one stacked product or three, as the weights were prepared).
        let lay = W.qkvLayout(rows: BT), qkv = la.qkv.ptr
        let x = mm.operand(input, count: BT * C, cache: la.inputHalf)  // bf16 caches: the copy backward reads
        for (part, offset) in zip(PL.qkv, lay.outputs) { mm.linear(qkv + offset, x, part.weight, part.bias, n: BT) }
        let q = qkv + lay.q, k = qkv + lay.k, v = qkv + lay.v
        let shape = Attention.Shape(B: B, T: T, NH: NH, HS: HS, stride: lay.stride)
        if acts.keepsLayerCaches || dropout != nil {
            // Training: the probabilities stay for backward, attention dropout.
            let d = dropout.flatMap { rng in
                c.attentionDropout > 0 ? Attention.Dropout(p: c.attentionDropout, rng: rng, dropped: acts.probsDrop.ptr) : nil
            }
            Attention.forward(ctx: la.ctx.ptr, probs: la.probs.ptr, q: q, k: k, v: v, shape, dropout: d, savedRNG: &la.rngProbs)
        } else {
            mm.attention(ctx: la.ctx.ptr, q: q, k: k, v: v, shape, acts: acts)
        }
        // BertSelfOutput: dense + dropout + LayerNorm(x + input); without dropout the residual is the product's epilogue.
        let xctx = mm.operand(la.ctx.ptr, count: BT * C, cache: la.ctxHalf), r1 = la.r1.ptr
        let AO = PL.attentionOutput
        if let rng = dropout, c.dropout > 0 {
            let ao = acts.ao.ptr
            mm.linear(ao, xctx, AO.weight, AO.bias, n: BT)
            la.rngAO = rng.pointee
            Self.dropoutForward(ao, mask: nil, ao, BT * C, p: c.dropout, rng: rng)
            Kernels.add(r1, ao, input, BT * C)
        } else {
            mm.linear(r1, xctx, AO.weight, AO.bias, n: BT, residual: input, gelu: false)
        }
        Kernels.layerNorm(la.a.ptr, mean: la.m1.ptr, rstd: la.s1.ptr, r1, ptr(params, L.attentionNorm.weight),
                          ptr(params, L.attentionNorm.bias), n: BT, c: C, eps: c.layerNormEps)
        // BertIntermediate: dense + GELU (training keeps the pre-GELU f1 for backward; inference fuses the GELU).
        let xa = mm.operand(la.a.ptr, count: BT * C, cache: la.aHalf)
        if acts.keepsLayerCaches {
            mm.linear(la.f1.ptr, xa, PL.intermediate.weight, PL.intermediate.bias, n: BT)
            Kernels.gelu(acts.g.ptr, la.f1.ptr, BT * c.ffn)
        } else {
            mm.linear(acts.g.ptr, xa, PL.intermediate.weight, PL.intermediate.bias, n: BT, residual: nil, gelu: true)
        }
        // BertOutput: dense + dropout + LayerNorm(x + a). g is a temporary only this product reads: with bf16
        // caches it becomes bf16 where it is.
        let xg = mm.operand(inPlace: acts.g.ptr, count: BT * c.ffn, la.aHalf != nil), r2 = la.r2.ptr
        if let rng = dropout, c.dropout > 0 {
            let f2 = acts.f2.ptr
            mm.linear(f2, xg, PL.output.weight, PL.output.bias, n: BT)
            la.rngF2 = rng.pointee
            Self.dropoutForward(f2, mask: nil, f2, BT * C, p: c.dropout, rng: rng)
            Kernels.add(r2, f2, la.a.ptr, BT * C)
        } else {
            mm.linear(r2, xg, PL.output.weight, PL.output.bias, n: BT, residual: la.a.ptr, gelu: false)
        }
        Kernels.layerNorm(la.out.ptr, mean: la.m2.ptr, rstd: la.s2.ptr, r2, ptr(params, L.outputNorm.weight),
                          ptr(params, L.outputNorm.bias), n: BT, c: C, eps: c.layerNormEps)
    }

    /// out = inp·mask, mask ∈ {0, 1/(1−p)} drawn from `rng` (inverted dropout, as torch); the mask is
    /// stored when `mask` is given (otherwise `dropoutRegenerate` recreates it from the saved state).
    static func dropoutForward(_ out: P, mask: P?, _ inp: CP, _ n: Int, p: Float, rng: UnsafeMutablePointer<SeededRandom>) {
        let keep = 1 / (1 - p)
        var r = rng.pointee
        for i in 0..<n {
            let m: Float = r.uniform() < p ? 0 : keep
            mask?[i] = m
            out[i] = inp[i] * m
        }
        rng.pointee = r
    }

    /// Replays the draws of a `dropoutForward` that started from state `rng`: x[i] ·= mask[i], and
    /// the mask into `maskOut` when given.
    static func dropoutRegenerate(_ x: P?, maskOut: P?, _ n: Int, p: Float, rng: SeededRandom) {
        let keep = 1 / (1 - p)
        var r = rng
        for i in 0..<n {
            let m: Float = r.uniform() < p ? 0 : keep
            maskOut?[i] = m
            x?[i] *= m
        }
    }

    // MARK: Backward

    /// Backpropagates dout (B, T, D) through the last `forward` on `acts` (which must have kept
    /// per-layer caches), accumulating parameter gradients into `grads` and the input gradient
    /// into `dx` (B, T, D). `weights`: those the forward used (every product goes through `weights.mm`).
    func backward(dout: CP, x: CP, acts: Activations, grads: FloatBuffer, dx: P, weights: PreparedWeights? = nil) {
        let c = config, B = acts.B, T = acts.T, BT = B * T, C = c.width, Dt = c.hiddenTDim
        let W = weights ?? referenceWeights, mm = W.mm
        let G = grads, s = acts.scratch, M = self.weights
        precondition(acts.keepsLayerCaches, "backward needs the per-layer caches")
        // A self-conditioned model's input is x_in (the forward made it from x): its gradient goes to scratch first,
        // then into dx and the projection's gradients (`selfConditionBackward`).
        let sc = W.selfCondition != nil
        let x = sc ? CP(acts.selfCondInput.ptr) : x, dxIn = sc ? acts.selfCondGrad.ptr : dx
        if sc { dxIn.update(repeating: 0, count: BT * c.hiddenDim) }
        defer { if sc { selfConditionBackward(dx: dx, acts: acts, grads: G, weights: W) } }
        // output_down_proj
        let dh = s.dhA.ptr
        dh.update(repeating: 0, count: BT * C)
        let hLast = acts.lastInput
        if let down = M.outputDown, let pdown = W.outputDown {
            let dd1 = s.dC1.ptr
            dd1.update(repeating: 0, count: BT * C)
            mm.linearBackward(dinp: dd1, dw: ptr(G, down.second.weight), db: ptr(G, down.second.bias),
                              dout: dout, inp: acts.d1t.ptr, w: pdown.second.weight, n: BT)
            Kernels.tanhBackwardInPlace(dd1, acts.d1t.ptr, BT * C)
            mm.linearBackward(dinp: dh, dw: ptr(G, down.first.weight), db: ptr(G, down.first.bias),
                              dout: dd1, inp: hLast, w: pdown.first.weight, n: BT)
        } else {
            dh.update(from: dout, count: BT * C)
        }
        var dCur = s.dhA, dNext = s.dhB
        for l in stride(from: c.layers - 1, through: 0, by: -1) {
            let input: CP = l == 0 ? (c.dropout > 0 && acts.usedDropout ? CP(acts.h0d.ptr) : CP(acts.h0.ptr))
                                   : CP(acts.layer(l - 1).out.ptr)
            dNext.zero()
            layerBackward(l, dout: dCur.ptr, dinp: dNext.ptr, input: input, la: acts.layer(l), acts: acts, grads: G,
                          weights: W)
            swap(&dCur, &dNext)
        }
        // embedding LayerNorm (+ dropout)
        let dh0 = dCur.ptr
        if c.dropout > 0 && acts.usedDropout {
            let m = acts.mask0.ptr
            for i in 0..<(BT * C) { dh0[i] *= m[i] }
        }
        let dpre = s.dC1.ptr
        dpre.update(repeating: 0, count: BT * C)
        Kernels.layerNormBackward(dinp: dpre, dw: ptr(G, M.embeddingNorm.weight), db: ptr(G, M.embeddingNorm.bias), dout: dh0,
                                  inp: acts.pre.ptr, w: ptr(params, M.embeddingNorm.weight), mean: acts.m0.ptr,
                                  rstd: acts.s0.ptr, n: BT, c: C)
        // position embeddings and emb_t
        let dpos = ptr(G, M.positionEmbeddings)
        let dembT = s.dEmbT.ptr
        dembT.update(repeating: 0, count: B * C)
        for b in 0..<B {
            for t in 0..<T {
                let row = dpre + (b * T + t) * C, pr = dpos + t * C, et = dembT + b * C
                for j in 0..<C { pr[j] += row[j]; et[j] += row[j] }
            }
        }
        // input_up_proj
        if let up = M.inputUp, let pup = W.inputUp {
            let du1 = s.dC2.ptr
            du1.update(repeating: 0, count: BT * C)
            mm.linearBackward(dinp: du1, dw: ptr(G, up.second.weight), db: ptr(G, up.second.bias),
                              dout: dpre, inp: acts.u1t.ptr, w: pup.second.weight, n: BT)
            Kernels.tanhBackwardInPlace(du1, acts.u1t.ptr, BT * C)
            mm.linearBackward(dinp: dxIn, dw: ptr(G, up.first.weight), db: ptr(G, up.first.bias),
                              dout: du1, inp: x, w: pup.first.weight, n: BT)
        } else {
            for i in 0..<(BT * C) { dxIn[i] += dpre[i] }
        }
        // time_embed
        let ds1 = s.dT1.ptr
        ds1.update(repeating: 0, count: B * 4 * Dt)
        mm.linearBackward(dinp: ds1, dw: ptr(G, M.timeEmbedOut.weight), db: ptr(G, M.timeEmbedOut.bias),
                          dout: dembT, inp: acts.s1.ptr, w: W.timeEmbedOut.weight, n: B)
        let dh1 = s.dT2.ptr
        dh1.update(repeating: 0, count: B * 4 * Dt)
        Kernels.siluBackward(dh1, ds1, acts.h1.ptr, B * 4 * Dt)
        mm.linearBackward(dinp: nil, dw: ptr(G, M.timeEmbedIn.weight), db: ptr(G, M.timeEmbedIn.bias),
                          dout: dh1, inp: acts.te.ptr, w: W.timeEmbedIn.weight, n: B)
    }

    private func layerBackward(_ l: Int, dout: P, dinp: P, input: CP, la: LayerActivations, acts: Activations,
                               grads G: FloatBuffer, weights W: PreparedWeights) {
        let c = config, B = acts.B, T = acts.T, BT = B * T, C = c.width, F = c.ffn
        let NH = c.heads, HS = c.headSize, TT = T * T
        let L = self.weights.layers[l], PL = W.layers[l], mm = W.mm, s = acts.scratch
        let drop = acts.usedDropout && c.dropout > 0
        // With bf16 caches (a bf16 training step) the temporaries below that only one product reads (the recomputed
        // GELU output, each Linear's dout) become bf16 where they are, instead of in scratch of their size.
        let consume = la.aHalf != nil
        // BertOutput LayerNorm
        let dr2 = s.dC1.ptr
        dr2.update(repeating: 0, count: BT * C)
        Kernels.layerNormBackward(dinp: dr2, dw: ptr(G, L.outputNorm.weight), db: ptr(G, L.outputNorm.bias),
                                  dout: dout, inp: la.r2.ptr, w: ptr(params, L.outputNorm.weight), mean: la.m2.ptr,
                                  rstd: la.s2.ptr, n: BT, c: C)
        let da = s.dC2.ptr
        da.update(from: dr2, count: BT * C)
        if drop { Self.dropoutRegenerate(dr2, maskOut: nil, BT * C, p: c.dropout, rng: la.rngF2) }
        let dg = s.dF.ptr
        dg.update(repeating: 0, count: BT * F)
        Kernels.gelu(acts.g.ptr, la.f1.ptr, BT * F)  // recompute the GELU output instead of keeping it per layer
        mm.linearBackward(dinp: dg, dw: ptr(G, L.output.weight), db: ptr(G, L.output.bias), dout: dr2,
                          inp: mm.operand(inPlace: acts.g.ptr, count: BT * F, consume), w: PL.output.weight, n: BT,
                          consumeDout: consume)
        let df1 = dg
        Kernels.geluBackwardInPlace(df1, la.f1.ptr, BT * F)
        mm.linearBackward(dinp: da, dw: ptr(G, L.intermediate.weight), db: ptr(G, L.intermediate.bias),
                          dout: df1, inp: mm.cached(la.a.ptr, la.aHalf), w: PL.intermediate.weight, n: BT, consumeDout: consume)
        // BertSelfOutput LayerNorm
        let dr1 = s.dC3.ptr
        dr1.update(repeating: 0, count: BT * C)
        Kernels.layerNormBackward(dinp: dr1, dw: ptr(G, L.attentionNorm.weight), db: ptr(G, L.attentionNorm.bias),
                                  dout: da, inp: la.r1.ptr, w: ptr(params, L.attentionNorm.weight), mean: la.m1.ptr,
                                  rstd: la.s1.ptr, n: BT, c: C)
        for i in 0..<(BT * C) { dinp[i] += dr1[i] }
        if drop { Self.dropoutRegenerate(dr1, maskOut: nil, BT * C, p: c.dropout, rng: la.rngAO) }
        let dctx = s.dC2.ptr
        dctx.update(repeating: 0, count: BT * C)
        mm.linearBackward(dinp: dctx, dw: ptr(G, L.attentionOutput.weight), db: ptr(G, L.attentionOutput.bias),
                          dout: dr1, inp: mm.cached(la.ctx.ptr, la.ctxHalf), w: PL.attentionOutput.weight, n: BT,
                          consumeDout: consume)
        // attention core (q, k, v: three (B·T, C) blocks of the layer's buffer; training never stacks them)
        let dq = s.dQ.ptr, dk = s.dK.ptr, dv = s.dV.ptr
        dq.update(repeating: 0, count: BT * C); dk.update(repeating: 0, count: BT * C); dv.update(repeating: 0, count: BT * C)
        let attnDrop = acts.usedDropout && c.attentionDropout > 0
        let probsDrop = acts.probsDrop.ptr, probsMask = s.probsMask.ptr
        if attnDrop {
            // Regenerate this layer's mask and dropped probabilities (forward kept neither).
            Self.dropoutRegenerate(nil, maskOut: probsMask, B * NH * TT, p: c.attentionDropout, rng: la.rngProbs)
            let pr = la.probs.ptr
            parallelRows(B * NH * TT, minChunk: 1 << 16) { lo, hi in
                for i in lo..<hi { probsDrop[i] = pr[i] * probsMask[i] }
            }
        }
        let lay = W.qkvLayout(rows: BT)
        Attention.backward(dq: dq, dk: dk, dv: dv, dctx: dctx, probs: la.probs.ptr, q: la.qkv.ptr + lay.q,
                           k: la.qkv.ptr + lay.k, v: la.qkv.ptr + lay.v,
                           Attention.Shape(B: B, T: T, NH: NH, HS: HS, stride: lay.stride),
                           dropout: attnDrop ? (CP(probsMask), CP(probsDrop)) : nil, dP: s.dP.ptr, workers: s.dP.count / TT)
        // With bf16 caches the fp32 input of layers after the first is gone (its buffer is shared): its bf16 copy is not.
        let x = mm.cached(input, la.inputHalf)
        for (j, (lin, d)) in [(L.query, dq), (L.key, dk), (L.value, dv)].enumerated() {
            mm.linearBackward(dinp: dinp, dw: ptr(G, lin.weight), db: ptr(G, lin.bias), dout: d, inp: x, w: PL.qkv[j].weight, n: BT,
                              consumeDout: consume)
        }
    }
}
