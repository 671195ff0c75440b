import CDNNL
import CKernels
import COpenBLAS
import Foundation

/// The matrix products of one sampling or training step, timed one by one with this machine's
/// OpenBLAS: their sum is what a step would cost if nothing but the GEMMs ran (no LayerNorm,
/// softmax, GELU, rounding scan, memory traffic between them). `diffuseq bench gemm` prints it
/// next to the measured step times, so a speed target can be compared with the floor it implies.
public enum GEMMFloor {
    /// One distinct product: C (m×n) = A (m×k)·B(k×n), `count` times per step, `parallel` when
    /// OpenBLAS runs it on all threads, otherwise `count` copies are spread over the cores
    /// (attention heads).
    public struct Product: Sendable {
        public var what: String
        public var m: Int, n: Int, k: Int
        public var count: Int
        public var perCoreBatch: Bool
        /// The loss head's logits and the rounding/read-out scans: fp32 whatever the precision.
        public var fp32Only = false
        public var flops: Double { 2 * Double(m) * Double(n) * Double(k) * Double(count) }
    }

    /// One product's measured time.
    public struct Timing: Sendable {
        public var product: Product
        /// Median seconds of one call.
        public var seconds: Double
        /// Seconds per step for all `count` calls (divided over the cores when `perCoreBatch`).
        public var stepSeconds: Double
        public var gflops: Double { product.flops / stepSeconds / 1e9 }
    }

    /// The products of one step of `config` on `batch` sequences of `config.seqLen` positions.
    /// Training: forward, backward (input and weight gradients) and the decoder_nll vocabulary
    /// GEMM (its backward is sparse). Sampling: forward and the rounding GEMM over every row.
    /// `roundedRows`: rows the sampler rounds (default all; `diffuseq sample` rounds the target rows only);
    /// `readOut`: add the per-step `lm_head` read-out over all rows (the explorer's frames).
    public static func products(_ c: ModelConfig, batch: Int, training: Bool, roundedRows: Int? = nil,
                                readOut: Bool = false) -> [Product] {
        let T = c.seqLen, M = batch * T, C = c.width, F = c.ffn, D = c.hiddenDim, V = c.vocabSize
        let HS = c.headSize, heads = batch * c.heads, L = c.layers
        var p: [Product] = []
        func linear(_ what: String, _ o: Int, _ i: Int, _ times: Int) {
            p.append(Product(what: what, m: M, n: o, k: i, count: times, perCoreBatch: false))
            if training {
                p.append(Product(what: what + " dX", m: M, n: i, k: o, count: times, perCoreBatch: false))
                p.append(Product(what: what + " dW", m: o, n: i, k: M, count: times, perCoreBatch: false))
            }
        }
        if !training && DiffusionSampler.fusesProjections(c) {
            // The sampler stacks query/key/value into one product per layer for small models.
            linear("QKV (fused)", 3 * C, C, L)
            linear("attention output", C, C, L)
        } else {
            linear("QKV+O", C, C, 4 * L)
        }
        linear("FFN up", F, C, L)
        linear("FFN down", C, F, L)
        p.append(Product(what: "attention QKᵀ, PV", m: T, n: T, k: HS, count: 2 * heads * L, perCoreBatch: true))
        if training { p.append(Product(what: "attention backward", m: T, n: HS, k: T, count: 4 * heads * L, perCoreBatch: true)) }
        if c.hasProjections {
            linear("up/down projections (C×C)", C, C, 2)
            linear("up/down projections (C×D)", C, D, 2)
        }
        if training {
            p.append(Product(what: "decoder_nll logits", m: M, n: V, k: D, count: 1, perCoreBatch: false, fp32Only: true))
        } else {
            p.append(Product(what: "rounding", m: roundedRows ?? M, n: V, k: D, count: 1, perCoreBatch: false, fp32Only: true))
            if readOut { p.append(Product(what: "lm_head read-out", m: M, n: V, k: D, count: 1, perCoreBatch: false, fp32Only: true)) }
        }
        return p
    }

    /// Times every product (median of `repeats` calls after one warm-up) at the current thread count,
    /// with OpenBLAS, or with `packed` the packed engine's product (`dsq_linear_packed`, weights packed
    /// beforehand as a sampler does) on its pool, or with `matMul` that backend's Linear product (for bf16, the
    /// B operand converted beforehand as the prepared weights are, the activation as it enters the product).
    /// The attention heads' products run on OpenBLAS one per core whatever the backend, as in the engine.
    public static func measure(_ products: [Product], repeats: Int = 5, packed: Bool = false,
                               matMul: MatMulChoice? = nil) throws -> [Timing] {
        try BLAS.ensureLoaded()
        let cores = packed ? ComputeContext.bound.threads : max(1, Int(dsq_blas_get_threads()))
        var out: [Timing] = []
        for pr in products {
            let a = FloatBuffer(count: pr.m * pr.k), b = FloatBuffer(count: pr.n * pr.k), c = FloatBuffer(count: pr.m * pr.n)
            var rng = SeededRandom(seed: 5)
            rng.fillNormal(a.ptr, a.count); rng.fillNormal(b.ptr, b.count)
            let bp = FloatBuffer(count: packed ? dsq_packed_count(pr.n, pr.k) : 0)
            if packed { dsq_pack(bp.ptr, b.ptr, pr.k, pr.n, pr.k) }
            let mm = matMul.map { pr.fp32Only ? $0.mm.fp32 : $0.mm }
            let half = UnsafeMutablePointer<UInt16>.allocate(capacity: mm?.precision == .bf16 ? pr.n * pr.k : 1)
            defer { half.deallocate() }
            if mm?.precision == .bf16 { dsq_f32_to_bf16(half, b.ptr, pr.n * pr.k) }
            let w = WeightRef(f32: b.ptr, bf16: mm?.precision == .bf16 ? UnsafePointer(half) : nil, outputs: pr.n, inputs: pr.k)
            func once() -> Double {
                let t0 = DispatchTime.now().uptimeNanoseconds
                if packed {
                    // Attention heads (perCoreBatch) are under the pool's threading threshold: one thread each.
                    dsq_linear_packed(c.ptr, pr.n, a.ptr, pr.k, pr.m, pr.k, bp.ptr, pr.n, nil, nil, 0, DSQ_ACT_NONE, Int32(cores), 0)
                } else if let mm, !pr.perCoreBatch {
                    mm.linear(c.ptr, a.ptr, w, nil, n: pr.m)
                } else if pr.perCoreBatch {
                    // A core's share of the heads, single-threaded, as the engine runs them.
                    dsq_blas_enter_serial()
                    BLAS.gemm(transB: true, m: pr.m, n: pr.n, k: pr.k, a: a.ptr, lda: pr.k, b: b.ptr, ldb: pr.k, c: c.ptr, ldc: pr.n)
                    dsq_blas_leave_serial()
                } else {
                    BLAS.gemm(transB: true, m: pr.m, n: pr.n, k: pr.k, a: a.ptr, lda: pr.k, b: b.ptr, ldb: pr.k, c: c.ptr, ldc: pr.n)
                }
                return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            }
            _ = once()
            var ts: [Double] = []
            for _ in 0..<max(1, repeats) { ts.append(once()) }
            ts.sort()
            let med = ts[ts.count / 2]
            let step = pr.perCoreBatch ? med * Double(pr.count) / Double(cores) : med * Double(pr.count)
            out.append(Timing(product: pr, seconds: med, stepSeconds: step))
        }
        return out
    }
}
