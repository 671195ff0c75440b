import Foundation

/// Which MSE the loss uses.
public enum LossVariant: String, Sendable, Codable, CaseIterable {
    /// Official code: MSE over every position (source, target and padding), spec §3.1.
    case official
    /// The paper's Eq. 2: MSE over the target part (mask = 1: the target and its padding) only.
    case targetOnly = "target-only"
    /// MSE over the target tokens only (mask = 1 and not PAD).
    case targetNoPad = "target-no-pad"
}

/// Per-example loss terms of `training_losses_seq2seq` (spec §3.1).
public struct LossTerms: Sendable, Equatable {
    /// mean((x_start − x̂₀)²), or against the clean embedding when t = 0.
    public var mse: [Float]
    /// CE of lm_head(x_start) over all positions (the rounding term).
    public var decoderNLL: [Float]
    /// mean((√ᾱ_{T−1}·x_start)²).
    public var tT: [Float]
    /// mse + decoder_nll + tT.
    public var loss: [Float]
    /// Masked CE of lm_head(x̂₀) over target positions: logged; optimised only as `token`.
    public var nll: [Float]
    /// The token loss (Difformer's anchor loss, ours): label-smoothed CE of lm_head(x̂₀) against the target ids over
    /// the target positions of the loss mask, weighted into `loss` by `DiffusionLoss.tokenWeight` (empty when 0).
    public var token: [Float] = []
}

/// Which terms a backward pass differentiates (all three for training; one at a time in tests).
struct LossObjective: OptionSet {
    let rawValue: Int
    static let mse = LossObjective(rawValue: 1), decoderNLL = LossObjective(rawValue: 2), tT = LossObjective(rawValue: 4)
    static let token = LossObjective(rawValue: 8)
    /// The soft absorbing state's `reg_rate`·‖m‖₂.
    static let absorbingReg = LossObjective(rawValue: 16)
    static let all: LossObjective = [.mse, .decoderNLL, .tT, .token, .absorbingReg]
}

/// The official seq2seq training loss and its exact gradient.
final class DiffusionLoss {
    let model: TransformerNetModel
    let schedule: NoiseSchedule
    let variant: LossVariant
    /// Weight of the token loss in `loss` (0 = off, official).
    var tokenWeight: Float = 0
    /// Label smoothing ε of the token loss: the target distribution is (1 − ε)·onehot + ε/V.
    var labelSmoothing: Float = 0
    /// PAD's id: excluded by the `target-no-pad` loss mask, and the source copy's filler (`SourceCopy`).
    var padID = 0
    private let chunkRows = 256
    private var logitsCache: FloatBuffer?
    /// Most nonzero CE-gradient entries a row may keep on the sparse path (nil: V/64, at least 16;
    /// 0 forces the dense path — tests compare the two).
    var sparseCap: Int?
    /// Rows of the last `compute` whose decoder_nll gradient took the sparse path (tests, benchmarks).
    private(set) var lastSparseRows = 0
    /// Wall seconds of the phases of the calls since the last reset (benchmarks): "forward" (the network),
    /// "head" (loss terms, decoder_nll and nll), "backward" (the network and the embedding scatter).
    var phaseSeconds: [String: Double] = [:]
    private func lap(_ name: String, _ since: inout UInt64) {
        let now = DispatchTime.now().uptimeNanoseconds
        phaseSeconds[name, default: 0] += Double(now - since) / 1e9
        since = now
    }

    /// The weights the network's passes use (their backend runs every product); nil: OpenBLAS fp32 on the
    /// parameters. The loss head's logits products run on the same library in fp32 (`MatMul.fp32`): the
    /// cross-entropies are computed from them directly.
    var prepared: PreparedWeights?

    init(model: TransformerNetModel, schedule: NoiseSchedule, variant: LossVariant = .official) {
        self.model = model; self.schedule = schedule; self.variant = variant
    }

    /// Computes the loss terms for a batch and, when `grads` is given, accumulates
    /// d mean_b(weight_b·objective_b) / dθ into it.
    ///
    /// - Parameters:
    ///   - ids, mask: (B, T).  - t: (B) timestep indices.  - noiseXStart, noiseQ: (B, T, D) the two
    ///     Gaussian draws (`_get_x_start` and `q_sample`).  - weights: (B) importance weights.
    ///   - selfCondition: (B, or empty) the examples of a self-conditioned model whose graded pass takes a first,
    ///     no-gradient pass's x̂₀ (`selfConditionEstimate`); the others take zeros.
    ///   - previousX0: (B, T, D) a given x̂₀_prev instead (tests: a fixed estimate); overrides `selfCondition`.
    ///   - absorbDraws: (B, T) uniforms of the soft absorbing state's token replacement (empty: none replaced).
    func compute(ids: [Int], mask: [Int], t: [Int], noiseXStart: CP, noiseQ: CP, weights: [Float],
                 acts: Activations, grads: FloatBuffer?, objective: LossObjective = .all,
                 dropout: UnsafeMutablePointer<SeededRandom>?, computeNLL: Bool = true,
                 selfCondition: [Bool] = [], previousX0: CP? = nil, absorbDraws: [Float] = []) -> LossTerms {
        let c = model.config, B = acts.B, T = acts.T, D = c.hiddenDim, V = c.vocabSize
        let n = B * T * D, TD = Float(T * D)
        let E = model.ptr(model.params, \.wordEmbedding), bias = model.ptr(model.params, \.lmHeadBias)
        let xMean = FloatBuffer(count: n), xStart = FloatBuffer(count: n), xt = FloatBuffer(count: n)
        for r in 0..<(B * T) { (xMean.ptr + r * D).update(from: E + ids[r] * D, count: D) }
        let std0 = Float(schedule.sqrtOneMinusAlphasCumprod[0])
        for i in 0..<n { xStart.ptr[i] = xMean.ptr[i] + std0 * noiseXStart[i] }
        // The source prior centres the target's diffusion on the source copy m (a constant: no gradient flows into
        // it): x_t = m + √ᾱ(x_start − m) + √(1−ᾱ)ε. m = 0 on source rows and without the prior. The soft absorbing
        // state centres it on the learned m (`SoftAbsorbing`: gradients flow into m) and replaces rows by m.
        let meanEmbed = model.weights.meanEmbed
        let prior = c.sourcePriorTraining
            ? SourceCopy.embeddings(ids: ids, mask: mask, batch: B, table: E, dim: D, padID: padID)
            : meanEmbed.map { SoftAbsorbing.centre(mask: mask, dim: D, m: model.ptr(model.params, $0)) }
            ?? [Float](repeating: 0, count: n)
        let absorbed = SoftAbsorbing.replaced(mask: mask, t: t, uniforms: absorbDraws, rate: c.denoiseRate, schedule: schedule)
        for b in 0..<B {
            let sa = Float(schedule.sqrtAlphasCumprod[t[b]]), so = Float(schedule.sqrtOneMinusAlphasCumprod[t[b]])
            for s in 0..<T {
                let r = b * T + s
                for j in 0..<D {
                    let i = r * D + j
                    xt.ptr[i] = mask[r] == 0 ? xStart.ptr[i]
                        : absorbed[r] ? prior[i] : sa * (xStart.ptr[i] - prior[i]) + so * noiseQ[i] + prior[i]
                }
            }
        }
        // Positions of the MSE (by variant) and of the token loss (target positions, PAD excluded by target-no-pad).
        let inMSE: (Int) -> Bool = { [variant, padID] r in
            switch variant {
            case .official: return true
            case .targetOnly: return mask[r] == 1
            case .targetNoPad: return mask[r] == 1 && ids[r] != padID
            }
        }
        let inToken: (Int) -> Bool = { [variant, padID] r in mask[r] == 1 && (variant != .targetNoPad || ids[r] != padID) }
        let scaleT = Float(1000.0 / Double(schedule.count))
        let tModel = t.map { c.rescaleTimesteps ? Float($0) * scaleT : Float($0) }
        acts.usedDropout = dropout != nil
        var clock = DispatchTime.now().uptimeNanoseconds
        let estimate = previousX0 == nil ? selfConditionEstimate(xt: xt.ptr, tModel: tModel, examples: selfCondition, acts: acts) : nil
        let out = model.forward(x: xt.ptr, tModel: tModel, acts: acts, dropout: dropout, weights: prepared,
                                previousX0: previousX0 ?? estimate.map { CP($0.ptr) })
        let head = (prepared?.mm ?? OpenBLASMatMul.shared).fp32, table = WeightRef(f32: E, bf16: nil, outputs: V, inputs: D)
        lap("forward", &clock)
        var terms = LossTerms(mse: [], decoderNLL: [], tT: [], loss: [], nll: [])
        // mse (and its gradient wrt the output and the target)
        let dout = FloatBuffer(count: grads != nil ? n : 0)
        let dxStart = FloatBuffer(count: grads != nil ? n : 0)
        let cT = Float(schedule.sqrtAlphasCumprod[schedule.count - 1])
        for b in 0..<B {
            let s = weights[b] / Float(B)
            let target = t[b] == 0 ? xMean.ptr : xStart.ptr
            var sum: Float = 0, count = 0
            for p in 0..<T where inMSE(b * T + p) {
                count += 1
                for j in 0..<D {
                    let i = (b * T + p) * D + j
                    let d = target[i] - out[i]
                    sum += d * d
                    if grads != nil && objective.contains(.mse) {
                        // d/dout and d/dtarget of mean_flat((target − out)²)
                        dout.ptr[i] = -2 * d * s
                        dxStart.ptr[i] += 2 * d * s
                    }
                }
            }
            let denom = variant == .official ? TD : Float(max(1, count) * D)
            if grads != nil && objective.contains(.mse) {
                let f = TD / denom  // rescale the TD-normalised gradient for the target-only mean
                for p in 0..<T {
                    for j in 0..<D {
                        let i = (b * T + p) * D + j
                        dout.ptr[i] *= f / TD; dxStart.ptr[i] *= f / TD
                    }
                }
            }
            terms.mse.append(sum / denom)
            // tT (of x_start − m: the prior's x_T is centred on m; uncentred with the absorbing state, as v2)
            var tt: Float = 0
            for i in (b * T * D)..<((b + 1) * T * D) {
                let m = cT * (xStart.ptr[i] - (c.sourcePriorTraining ? prior[i] : 0))
                tt += m * m
                if grads != nil && objective.contains(.tT) { dxStart.ptr[i] += s * 2 * cT * m / TD }
            }
            terms.tT.append(tt / TD)
        }
        // decoder_nll: CE(lm_head(x_start), ids), mean over positions; nll: masked CE of lm_head(x̂₀)
        var dnll = [Float](repeating: 0, count: B)
        var nll = [Float](repeating: 0, count: B), tok = [Float](repeating: 0, count: B)
        // Token loss: mean over each example's token-loss positions, times the weight and its importance weight / B.
        let tokenCount = (0..<B).map { b in ((b * T)..<((b + 1) * T)).filter(inToken).count }
        let tokenScale = (0..<B).map { tokenWeight * weights[$0] / Float(B) / Float(max(1, tokenCount[$0])) }
        let rows = B * T
        // The logits chunk is reused across calls (31 MB at V = 30,522: page-faulting it in every step cost 3 %).
        if logitsCache.map({ $0.count < min(rows, chunkRows) * V }) ?? true { logitsCache = FloatBuffer(count: min(rows, chunkRows) * V) }
        let logits = logitsCache!
        let wantGrad = grads != nil && objective.contains(.decoderNLL)
        // The CE gradient softmax − onehot is sparse once embeddings are apart (and at initialisation):
        // only entries within `Kernels.softmaxCutoff` of a row's max logit matter in float32. Rows keep at
        // most `cap` of them, and the backward is a gather/scatter instead of two vocabulary-sized GEMMs;
        // a chunk with a denser row (e.g. collapsed embeddings) takes the dense GEMM path.
        let cap = min(V, sparseCap ?? max(16, V / 64)), stride = cap + 1  // cap = V: never dense
        lastSparseRows = 0
        let chunk = min(rows, chunkRows)
        let spIdx = UnsafeMutablePointer<Int32>.allocate(capacity: chunk * stride)
        defer { spIdx.deallocate() }
        let spVal = FloatBuffer(count: wantGrad ? chunk * stride : 0)
        var spCount = [Int](repeating: 0, count: chunk)
        var start = 0
        while start < rows {
            let nr = min(chunkRows, rows - start)
            // decoder_nll on x_start
            head.linear(logits.ptr, xStart.ptr + start * D, table, bias, n: nr)
            var rowLoss = [Float](repeating: 0, count: nr)
            rowLoss.withUnsafeMutableBufferPointer { rl in
                spCount.withUnsafeMutableBufferPointer { sc in
                    parallelRows(nr, minChunk: 8) { lo, hi in
                        for r in lo..<hi {
                            let row = logits.ptr + r * V
                            let id = ids[start + r]
                            let m = Kernels.rowMax(row, V)
                            let logit = row[id]
                            guard wantGrad else {
                                rl[r] = Foundation.log(Kernels.expShiftSumReadOnly(row, V, shift: m)) + m - logit
                                continue
                            }
                            let s = weights[(start + r) / T] / Float(B) / Float(T)
                            let ri = spIdx + r * stride, rv = spVal.ptr + r * stride
                            if let (sum, cnt) = Kernels.sparseExpShift(row, V, shift: m, idx: ri, val: rv, cap: cap) {
                                rl[r] = Foundation.log(sum) + m - logit
                                let f = s / sum
                                var hasID = false
                                for q in 0..<cnt {
                                    rv[q] *= f
                                    if Int(ri[q]) == id { rv[q] -= s; hasID = true }
                                }
                                var c = cnt
                                if !hasID { ri[c] = Int32(id); rv[c] = -s; c += 1 }
                                sc[r] = c
                            } else {
                                sc[r] = -1
                                let sum = Kernels.expShiftSum(row, V, shift: m)
                                rl[r] = Foundation.log(sum) + m - logit
                                Kernels.scale(row, V, by: s / sum)
                                row[id] -= s
                            }
                        }
                    }
                }
            }
            for r in 0..<nr { dnll[(start + r) / T] += rowLoss[r] }
            if wantGrad, let g = grads {
                let dE = model.ptr(g, \.wordEmbedding), db = model.ptr(g, \.lmHeadBias)
                let counts = spCount
                if counts[0..<nr].contains(-1) {
                    // Dense: expand the sparse rows, then two GEMMs and a column-parallel bias sum.
                    parallelRows(nr, minChunk: 8) { lo, hi in
                        for r in lo..<hi where counts[r] >= 0 {
                            let row = logits.ptr + r * V, ri = spIdx + r * stride, rv = spVal.ptr + r * stride
                            row.update(repeating: 0, count: V)
                            for q in 0..<counts[r] { row[Int(ri[q])] = rv[q] }
                        }
                    }
                    head.gemm(transA: false, transB: false, m: nr, n: D, k: V, alpha: 1, a: logits.ptr, lda: V, b: E, ldb: D,
                              beta: 1, c: dxStart.ptr + start * D, ldc: D)
                    head.gemm(transA: true, transB: false, m: V, n: D, k: nr, alpha: 1, a: logits.ptr, lda: V,
                              b: xStart.ptr + start * D, ldb: D, beta: 1, c: dE, ldc: D)
                    parallelRows(V, minChunk: 2048) { lo, hi in
                        for r in 0..<nr { let row = logits.ptr + r * V; for k in lo..<hi { db[k] += row[k] } }
                    }
                } else {
                    lastSparseRows += nr
                    // Sparse: dx_r += Σ g·E_j (rows independent), then dE_j += g·x_r and db_j += g in row order.
                    parallelRows(nr, minChunk: 16) { lo, hi in
                        for r in lo..<hi {
                            let dx = dxStart.ptr + (start + r) * D, ri = spIdx + r * stride, rv = spVal.ptr + r * stride
                            for q in 0..<counts[r] {
                                let e = E + Int(ri[q]) * D, gv = rv[q]
                                for j in 0..<D { dx[j] += gv * e[j] }
                            }
                        }
                    }
                    for r in 0..<nr {
                        let x = xStart.ptr + (start + r) * D, ri = spIdx + r * stride, rv = spVal.ptr + r * stride
                        for q in 0..<counts[r] {
                            let k = Int(ri[q]), gv = rv[q], de = dE + k * D
                            for j in 0..<D { de[j] += gv * x[j] }
                            db[k] += gv
                        }
                    }
                }
            }
            if computeNLL || tokenWeight > 0 {
                // lm_head(x̂₀): the logged nll over mask = 1, and the token loss with its gradient (in place of the
                // logits: s·(softmax − (1 − ε)·onehot − ε/V), zero on rows outside the token loss).
                head.linear(logits.ptr, out + start * D, table, bias, n: nr)
                let tokenGrad = grads != nil && tokenWeight > 0 && objective.contains(.token)
                let eps = labelSmoothing
                var rowNLL = [Float](repeating: 0, count: nr), rowTok = [Float](repeating: 0, count: nr)
                rowNLL.withUnsafeMutableBufferPointer { rn in
                    rowTok.withUnsafeMutableBufferPointer { rt in
                        parallelRows(nr, minChunk: 8) { lo, hi in
                            for r in lo..<hi {
                                let g = start + r, row = logits.ptr + r * V, id = ids[g]
                                guard mask[g] == 1 else { if tokenGrad { row.update(repeating: 0, count: V) }; continue }
                                let m = Kernels.rowMax(row, V), logit = row[id]
                                var mean: Float = 0
                                if eps > 0 { for k in 0..<V { mean += row[k] }; mean /= Float(V) }
                                let counted = inToken(g)
                                guard tokenGrad && counted else {
                                    let lse = Foundation.log(Kernels.expShiftSumReadOnly(row, V, shift: m)) + m
                                    rn[r] = lse - logit
                                    rt[r] = counted ? (1 - eps) * (lse - logit) + eps * (lse - mean) : 0
                                    if tokenGrad { row.update(repeating: 0, count: V) }
                                    continue
                                }
                                let sum = Kernels.expShiftSum(row, V, shift: m)
                                let lse = Foundation.log(sum) + m
                                rn[r] = lse - logit
                                rt[r] = (1 - eps) * (lse - logit) + eps * (lse - mean)
                                let sc = tokenScale[g / T]
                                Kernels.scale(row, V, by: sc / sum)
                                if eps > 0 { let u = sc * eps / Float(V); for k in 0..<V { row[k] -= u } }
                                row[id] -= sc * (1 - eps)
                            }
                        }
                    }
                }
                for r in 0..<nr { nll[(start + r) / T] += rowNLL[r]; tok[(start + r) / T] += rowTok[r] }
                if tokenGrad, let g = grads {
                    let dE = model.ptr(g, \.wordEmbedding), db = model.ptr(g, \.lmHeadBias)
                    head.gemm(transA: false, transB: false, m: nr, n: D, k: V, alpha: 1, a: logits.ptr, lda: V, b: E, ldb: D,
                              beta: 1, c: dout.ptr + start * D, ldc: D)
                    head.gemm(transA: true, transB: false, m: V, n: D, k: nr, alpha: 1, a: logits.ptr, lda: V,
                              b: out + start * D, ldb: D, beta: 1, c: dE, ldc: D)
                    parallelRows(V, minChunk: 2048) { lo, hi in
                        for r in 0..<nr { let row = logits.ptr + r * V; for k in lo..<hi { db[k] += row[k] } }
                    }
                }
            }
            start += nr
        }
        // v2 adds reg_rate·‖m‖₂ to every example's loss.
        let reg = meanEmbed.map { c.regRate * SoftAbsorbing.norm(model.ptr(model.params, $0), D) } ?? 0
        for b in 0..<B {
            let dn = dnll[b] / Float(T)
            terms.decoderNLL.append(dn)
            let tk = tokenWeight > 0 ? tok[b] / Float(max(1, tokenCount[b])) : 0
            if tokenWeight > 0 { terms.token.append(tk) }
            terms.loss.append(terms.mse[b] + dn + terms.tT[b] + tokenWeight * tk + reg)
            let cnt = mask[(b * T)..<((b + 1) * T)].reduce(0, +)
            terms.nll.append(cnt > 0 ? nll[b] / Float(cnt) : 0)
        }
        lap("head", &clock)
        guard let g = grads else { return terms }
        defer { lap("backward", &clock) }
        // backward through the network: dx_t
        let dxt = FloatBuffer(count: n)
        if objective.contains(.mse) || (tokenWeight > 0 && objective.contains(.token)) {
            model.backward(dout: dout.ptr, x: xt.ptr, acts: acts, grads: g, dx: dxt.ptr, weights: prepared)
        }
        // x_t → x_start (q_sample and the source anchoring; a row replaced by m does not depend on x_start)
        for b in 0..<B {
            let sa = Float(schedule.sqrtAlphasCumprod[t[b]])
            for s in 0..<T {
                let r = b * T + s
                let f: Float = mask[r] == 0 ? 1 : absorbed[r] ? 0 : sa
                for j in 0..<D { dxStart.ptr[r * D + j] += f * dxt.ptr[r * D + j] }
            }
        }
        if let id = meanEmbed {
            let regWeight = objective.contains(.absorbingReg) ? c.regRate * weights.reduce(0, +) / Float(B) : 0
            SoftAbsorbing.backward(dm: model.ptr(g, id), m: model.ptr(model.params, id), dxt: dxt.ptr, mask: mask, t: t,
                                   absorbed: absorbed, schedule: schedule, dim: D, regWeight: regWeight)
        }
        // x_start = x_start_mean + const → scatter into the embedding rows
        let dE = model.ptr(g, \.wordEmbedding)
        for r in 0..<(B * T) {
            let row = dE + ids[r] * D, src = dxStart.ptr + r * D
            for j in 0..<D { row[j] += src[j] }
        }
        return terms
    }
}
