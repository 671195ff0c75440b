import CKernels
import COpenBLAS
import Foundation
import Synchronization

// Elementwise and row kernels, forward and backward, over raw pointers (llm.c style).
// Backward functions accumulate (+=) into their gradient outputs.

typealias P = UnsafeMutablePointer<Float>
typealias CP = UnsafePointer<Float>

/// Runs `body(chunkStart, chunkEnd)` over 0..<n split into contiguous chunks on all cores.
/// Results never depend on the number of chunks: every kernel using this is elementwise or per row.
@inline(__always)
func parallelRows(_ n: Int, minChunk: Int = 64, _ body: (Int, Int) -> Void) {
    let cx = ComputeContext.bound
    let workers = cx.inlineKernels ? 1 : min(cx.threads, max(1, n / max(1, minChunk)))
    if workers <= 1 { body(0, n); return }
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        dsq_set_flush_denormals()  // MXCSR is per thread: make sure pool threads flush denormals too
        let lo = n * w / workers, hi = n * (w + 1) / workers
        if lo < hi { body(lo, hi) }
    }
}

/// Runs `body(worker, start, end)` over 0..<n split into one contiguous chunk per core, with OpenBLAS
/// single-threaded so that every chunk can run its own small `BLAS.gemm`s (attention heads) in parallel.
/// `worker` indexes per-worker scratch (< the bound context's `threads`). Results never depend on the split.
func parallelGEMMs(_ n: Int, maxWorkers: Int = .max, work: Int = .max, _ body: (Int, Int, Int) -> Void) {
    let cx = ComputeContext.bound
    // Latency profile: everything on the caller's thread, each product threaded by OpenBLAS (whose
    // workers are awake) as it sees fit.
    if cx.inlineKernels { body(0, 0, n); return }
    // Under ~2M multiply-adds in all, waking a second thread costs more than the work (batch-1 attention).
    let workers = work < (2 << 20) ? 1 : max(1, min(cx.threads, n, maxWorkers))
    dsq_blas_enter_serial()
    defer { dsq_blas_leave_serial() }
    if workers <= 1 { body(0, 0, n); return }
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        dsq_set_flush_denormals()
        let lo = n * w / workers, hi = n * (w + 1) / workers
        if lo < hi { body(w, lo, hi) }
    }
}

/// Kernels over raw pointers. Their parallelism (threads, inline in the latency profile) comes from the
/// `ComputeContext` bound to the calling thread; results do not depend on it (the kernels are per
/// element, per row, or merged by (value, id)).
enum Kernels {
    // MARK: Fast exp and erf (vectorisable, ~1 ulp-level accuracy for our ranges)

    /// exp(x) in float32 without a libm call (so loops vectorise): n = round(x/ln 2) by the
    /// 1.5·2²³ trick, Cody–Waite reduction r = x − n·ln 2 (two-part ln 2), a degree-7 Taylor
    /// polynomial for eʳ on [−½ln 2, ½ln 2], times 2ⁿ; |rel err| < 3e-7.
    @inline(__always)
    static func fexp(_ x: Float) -> Float {
        let xc = min(max(x, -87.0), 88.0)
        let n = (xc * 1.442_695_04 + 12_582_912.0) - 12_582_912.0
        let r = (xc - n * 0.693_145_75) - n * 1.428_606_8e-6
        var p: Float = 1.0 / 5040
        p = p * r + 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        // A NaN input stays NaN (through p); the exponent must not convert NaN to Int32 (a trap with checks on).
        let bits = UInt32(bitPattern: Int32(n.isNaN ? 0 : n) &+ 127) << 23
        return p * Float(bitPattern: bits)
    }

    /// erf(x) in float32, rational approximation (as in Eigen's fast erf), |err| < 2e-7.
    @inline(__always)
    static func ferf(_ a: Float) -> Float {
        let x = min(max(a, -4), 4)
        let x2 = x * x
        var p: Float = -2.726_142_3e-10
        p = p * x2 + 2.770_681_4e-08
        p = p * x2 - 2.101_024_0e-06
        p = p * x2 - 5.692_506_4e-05
        p = p * x2 - 7.349_906_3e-04
        p = p * x2 - 2.954_600_0e-03
        p = p * x2 - 1.609_603_3e-02
        p = p * x
        var q: Float = -1.456_607_2e-05
        q = q * x2 - 2.133_740_6e-04
        q = q * x2 - 1.682_827_0e-03
        q = q * x2 - 7.373_329_2e-03
        q = q * x2 - 1.426_473_9e-02
        return p / q
    }

    // MARK: Linear (y = x·Wᵀ + b), through BLAS

    /// out (N, O) = inp (N, I) · Wᵀ (W: (O, I)) + b (O).
    static func linear(_ out: P, _ inp: CP, _ w: CP, _ b: CP?, n: Int, i: Int, o: Int) {
        if let b {
            for r in 0..<n { (out + r * o).update(from: b, count: o) }
            BLAS.gemm(transB: true, m: n, n: o, k: i, a: inp, lda: i, b: w, ldb: i, beta: 1, c: out, ldc: o)
        } else {
            BLAS.gemm(transB: true, m: n, n: o, k: i, a: inp, lda: i, b: w, ldb: i, beta: 0, c: out, ldc: o)
        }
    }

    /// Accumulates dinp (N, I) += dout·W, dW (O, I) += doutᵀ·inp, db (O) += Σ_rows dout.
    static func linearBackward(dinp: P?, dw: P, db: P?, dout: CP, inp: CP, w: CP, n: Int, i: Int, o: Int) {
        if let dinp {
            BLAS.gemm(m: n, n: i, k: o, a: dout, lda: o, b: w, ldb: i, beta: 1, c: dinp, ldc: i)
        }
        BLAS.gemm(transA: true, m: o, n: i, k: n, a: dout, lda: o, b: inp, ldb: i, beta: 1, c: dw, ldc: i)
        if let db {
            // Column blocks in parallel; each column still sums its rows in order (thread-count independent).
            parallelRows(o, minChunk: 64) { lo, hi in
                for r in 0..<n {
                    let row = dout + r * o
                    for j in lo..<hi { db[j] += row[j] }
                }
            }
        }
    }

    /// out = a + b, elementwise (out may alias a or b).
    static func add(_ out: P, _ a: CP, _ b: CP, _ n: Int) {
        parallelRows(n, minChunk: 1 << 15) { lo, hi in
            for i in lo..<hi { out[i] = a[i] + b[i] }
        }
    }

    // MARK: LayerNorm over the last axis (biased variance, like torch)

    /// out (N, C) = (inp − mean)·rstd·weight + bias; caches mean, rstd (N).
    static func layerNorm(_ out: P, mean: P?, rstd: P?, _ inp: CP, _ w: CP, _ b: CP, n: Int, c: Int, eps: Float) {
        // Rows in C (CKernels: wide vectors, a fixed summation order).
        parallelRows(n, minChunk: max(32, 16384 / max(1, c))) { lo, hi in
            dsq_layernorm(out + lo * c, mean.map { $0 + lo }, rstd.map { $0 + lo }, inp + lo * c, w, b, lo < hi ? hi - lo : 0, c, eps)
        }
    }

    /// Accumulates dinp, dw, db for `layerNorm`.
    static func layerNormBackward(dinp: P, dw: P, db: P, dout: CP, inp: CP, w: CP, mean: CP, rstd: CP, n: Int, c: Int) {
        for r in 0..<n {
            let x = inp + r * c, dy = dout + r * c, dx = dinp + r * c
            let m = mean[r], rs = rstd[r]
            var dnormMean: Float = 0, dnormDotNorm: Float = 0
            for j in 0..<c {
                let norm = (x[j] - m) * rs
                let dnorm = w[j] * dy[j]
                dnormMean += dnorm
                dnormDotNorm += dnorm * norm
                db[j] += dy[j]
                dw[j] += norm * dy[j]
            }
            dnormMean /= Float(c); dnormDotNorm /= Float(c)
            for j in 0..<c {
                let norm = (x[j] - m) * rs
                dx[j] += (w[j] * dy[j] - dnormMean - norm * dnormDotNorm) * rs
            }
        }
    }

    // MARK: Activations

    /// GELU with the exact erf: 0.5·x·(1 + erf(x/√2)).
    static func gelu(_ out: P, _ inp: CP, _ n: Int) {
        parallelRows(n, minChunk: 32768) { lo, hi in dsq_gelu(out + lo, inp + lo, hi - lo) }
    }

    /// d ← d · GELU'(inp): the gradient through GELU, in place (the backward pass's form).
    static func geluBackwardInPlace(_ d: P, _ inp: CP, _ n: Int) {
        parallelRows(n, minChunk: 4096) { lo, hi in
            for i in lo..<hi {
                let x = inp[i]
                let cdf = 0.5 * (1 + ferf(x * 0.707_106_78))
                let pdf = fexp(-0.5 * x * x) * 0.398_942_28
                d[i] = d[i] * (cdf + x * pdf)
            }
        }
    }

    /// tanh, in place allowed: x·p(x²) near 0 (no cancellation), 1 − 2/(e^{2x} + 1) elsewhere, with the
    /// vectorisable `fexp` instead of libm (tanhf was 4 % of a sampling step); |err| < 3e-7.
    static func tanh(_ out: P, _ inp: CP, _ n: Int) {
        parallelRows(n, minChunk: 32768) { lo, hi in
            for i in lo..<hi { out[i] = ftanh(inp[i]) }
        }
    }

    @inline(__always)
    static func ftanh(_ x: Float) -> Float {
        let ax = abs(x)
        if ax < 0.25 {
            // Taylor to x⁹ (the next term is under 1e-8 relative here).
            let x2 = x * x
            return x * (1 + x2 * (-1.0 / 3 + x2 * (2.0 / 15 + x2 * (-17.0 / 315 + x2 * (62.0 / 2835)))))
        }
        let e = fexp(2 * min(ax, 10))
        let t = 1 - 2 / (e + 1)
        return x < 0 ? -t : t
    }

    /// d ← d · (1 − y²) with y = tanh output: the gradient through tanh, in place.
    static func tanhBackwardInPlace(_ d: P, _ y: CP, _ n: Int) {
        for i in 0..<n { d[i] *= (1 - y[i] * y[i]) }
    }

    /// SiLU x·σ(x).
    static func silu(_ out: P, _ inp: CP, _ n: Int) {
        for i in 0..<n { let x = inp[i]; out[i] = x / (1 + Foundation.exp(-x)) }
    }

    /// dinp += dout · σ(x)(1 + x(1 − σ(x))).
    static func siluBackward(_ dinp: P, _ dout: CP, _ inp: CP, _ n: Int) {
        for i in 0..<n {
            let x = inp[i], s = 1 / (1 + Foundation.exp(-x))
            dinp[i] += dout[i] * s * (1 + x * (1 - s))
        }
    }

    /// In-place row softmax with max subtraction; rows of length `c`.
    @inline(__always)
    static func softmaxRow(_ x: P, _ c: Int) {
        let m = rowMax(x, c)
        let s = expShiftSum(x, c, shift: m)
        scale(x, c, by: 1 / s)
    }

    /// Sinusoidal timestep features as the official `timestep_embedding`: [cos(t·f), sin(t·f)],
    /// f_i = exp(−ln(10000)·i/half), all in float32. out: (B, dim).
    static func timestepEmbedding(_ out: P, _ t: [Float], dim: Int) {
        let half = dim / 2
        let c = -Float(Foundation.log(10000.0))
        for (b, tb) in t.enumerated() {
            for i in 0..<half {
                let f = Foundation.exp(c * Float(i) / Float(half))
                let a = tb * f
                out[b * dim + i] = Foundation.cos(a)
                out[b * dim + half + i] = Foundation.sin(a)
            }
        }
    }
}
