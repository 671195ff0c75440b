import CKernels
import Foundation

/// The core of HF `BertSelfAttention` without a mask: per (batch, head), probs = softmax(scale·Q_h·K_hᵀ)
/// (dropout in training), ctx_h = probs·V_h. Forward and backward, one pair of free functions (llm.c style).
///
/// The heads' products are small (T × T × HS): they run on OpenBLAS single-threaded, one block of heads per
/// core (`parallelGEMMs`), whatever the `MatMul` backend of the Linear layers — oneDNN's OpenMP pool must not be
/// entered from several of our threads at once, and at these sizes a call costs more than the product. A backend
/// may run inference attention its own way (`MatMul.attention`: the packed engine's fused kernel).
enum Attention {
    /// Shapes of one call: B sequences of T positions, NH heads of HS; q, k, v rows `stride` floats apart,
    /// ctx (B, T, C = NH·HS) dense.
    struct Shape {
        let B: Int, T: Int, NH: Int, HS: Int, stride: Int
        var C: Int { NH * HS }
        var scale: Float { 1 / Float(HS).squareRoot() }
    }

    /// Attention-probability dropout of a training forward: the dropped probabilities are written to `dropped`
    /// ((B, NH, T, T) scratch) from `rng`, whose state before the draws is saved in `saved` for backward.
    struct Dropout {
        let p: Float
        let rng: UnsafeMutablePointer<SeededRandom>
        let dropped: P
    }

    /// ctx (B, T, C) = softmax(scale·Q·Kᵀ)·V per head; probs (B, NH, T, T) keeps the softmax (before dropout).
    static func forward(ctx: P, probs: P, q: CP, k: CP, v: CP, _ s: Shape, dropout: Dropout?,
                        savedRNG: inout SeededRandom) {
        let B = s.B, T = s.T, NH = s.NH, HS = s.HS, qs = s.stride, C = s.C, TT = T * T, scale = s.scale
        // Heads are independent: one core per block of (batch, head) pairs, each GEMM single-threaded.
        parallelGEMMs(B * NH, work: B * NH * T * T * HS) { _, lo, hi in
            for bh in lo..<hi {
                let b = bh / NH, hd = bh % NH
                let o = b * T * qs + hd * HS
                BLAS.gemm(transB: true, m: T, n: T, k: HS, alpha: scale, a: q + o, lda: qs, b: k + o, ldb: qs,
                          c: probs + bh * TT, ldc: T)
                dsq_softmax_rows(probs + bh * TT, T, T)
            }
        }
        var pUse = CP(probs)
        if let d = dropout {
            savedRNG = d.rng.pointee
            TransformerNetModel.dropoutForward(d.dropped, mask: nil, probs, B * NH * TT, p: d.p, rng: d.rng)
            pUse = CP(d.dropped)
        }
        parallelGEMMs(B * NH, work: B * NH * T * T * HS) { _, lo, hi in
            for bh in lo..<hi {
                let b = bh / NH, hd = bh % NH
                BLAS.gemm(m: T, n: HS, k: T, a: pUse + bh * TT, lda: T, b: v + b * T * qs + hd * HS, ldb: qs,
                          c: ctx + b * T * C + hd * HS, ldc: C)
            }
        }
    }

    /// Accumulates dq, dk, dv ((B, T, C) each, dense) from dctx (B, T, C) through the last `forward`
    /// (q, k, v dense: stride C). With dropout, `mask` ((B, NH, T, T)) and `dropped` hold the regenerated mask
    /// and dropped probabilities. `dP`: per-worker (T, T) scratch, `workers` of them.
    static func backward(dq: P, dk: P, dv: P, dctx: CP, probs: CP, q: CP, k: CP, v: CP, _ s: Shape,
                         dropout: (mask: CP, dropped: CP)?, dP dPAll: P, workers: Int) {
        let B = s.B, T = s.T, NH = s.NH, HS = s.HS, C = s.C, TT = T * T, scale = s.scale
        precondition(s.stride == C, "backward takes dense q, k, v")
        parallelGEMMs(B * NH, maxWorkers: workers, work: 4 * B * NH * T * T * HS) { w, lo, hi in
            let dP = dPAll + w * TT  // per-worker scratch
            for bh in lo..<hi {
                let b = bh / NH, hd = bh % NH
                let o = b * T * C + hd * HS
                let pr0 = probs + bh * TT
                let pUse = dropout.map { $0.dropped + bh * TT } ?? pr0
                BLAS.gemm(transB: true, m: T, n: T, k: HS, a: dctx + o, lda: C, b: v + o, ldb: C, c: dP, ldc: T)
                BLAS.gemm(transA: true, m: T, n: HS, k: T, a: pUse, lda: T, b: dctx + o, ldb: C, beta: 1, c: dv + o, ldc: C)
                if let d = dropout {
                    let m = d.mask + bh * TT
                    for i in 0..<TT { dP[i] *= m[i] }
                }
                for r in 0..<T {
                    let pr = pr0 + r * T, dr = dP + r * T
                    var dot: Float = 0
                    for j in 0..<T { dot += pr[j] * dr[j] }
                    for j in 0..<T { dr[j] = pr[j] * (dr[j] - dot) }
                }
                BLAS.gemm(m: T, n: HS, k: T, alpha: scale, a: dP, lda: T, b: k + o, ldb: C, beta: 1, c: dq + o, ldc: C)
                BLAS.gemm(transA: true, m: T, n: HS, k: T, alpha: scale, a: dP, lda: T, b: q + o, ldb: C, beta: 1, c: dk + o, ldc: C)
            }
        }
    }
}
