import CDNNL
import CKernels
import Foundation

/// A Linear weight as a backend takes it: W (O, I) row-major (PyTorch's layout; y = x·Wᵀ), in fp32 and,
/// for a bf16 backend, the same matrix in bf16 (converted once per training step or once per model).
struct WeightRef {
    /// (O, I) fp32.
    let f32: CP
    /// (O, I) bf16, or nil (fp32 backends).
    let bf16: UnsafePointer<UInt16>?
    /// The packed engine's panels of W (`dsq_pack`), or nil.
    var packed: CP? = nil
    /// O and I.
    let outputs: Int, inputs: Int
}

/// An activation entering a product: fp32, or the bf16 copy a bf16 backend made of it (`MatMul.operand`).
enum Operand {
    case f32(CP)
    case bf16(UnsafePointer<UInt16>)
}

/// A matrix-product backend (issue 14): every product of the network's Linear layers, forward and
/// backward, goes through one, in the three forms y = x·Wᵀ (NT), dx += dy·W (NN) and dW += dyᵀ·x (TN).
///
/// - `OpenBLASMatMul`: fp32 `cblas_sgemm`, the reference (fixture parity) and the fallback.
/// - `OneDNNMatMul(bf16: false)`: oneDNN fp32.
/// - `OneDNNMatMul(bf16: true)`: bf16 inputs (activations converted as they enter a product, weights
///   converted once per step), fp32 accumulation and output.
///
/// Products that must stay fp32 whatever the precision (the loss head's logits, the rounding scan) use
/// `fp32`. The attention heads' small products run on OpenBLAS single-threaded per core (`parallelGEMMs`),
/// whatever the backend: oneDNN's OpenMP pool must not be entered from several of our threads at once.
protocol MatMul: AnyObject, Sendable {
    /// Which library runs the products.
    var library: MatMulLibrary { get }
    /// The arithmetic of the products.
    var precision: ComputeContext.Precision { get }
    /// The same library in fp32 (itself for fp32 backends).
    var fp32: any MatMul { get }
    /// Row-major C (m × n) = alpha·op(A)·op(B) + beta·C, fp32 operands, op(A) (m × k), op(B) (k × n).
    func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: CP, lda: Int, b: CP, ldb: Int,
              beta: Float, c: P, ldc: Int)
    /// out (N, O) = inp (N, I)·Wᵀ + bias (O).
    func linear(_ out: P, _ inp: Operand, _ w: WeightRef, _ bias: CP?, n: Int)
    /// Accumulates dinp (N, I) += dout (N, O)·W, dW (O, I) += doutᵀ·inp and db (O) += Σ_rows dout.
    /// `consumeDout`: dout is a temporary nothing reads afterwards, which a bf16 backend may convert in place
    /// (instead of into scratch of its size).
    func linearBackward(dinp: P?, dw: P, db: P?, dout: CP, inp: Operand, w: WeightRef, n: Int, consumeDout: Bool)
    /// out (N, O) = act((inp·Wᵀ + bias) + residual), act GELU or none: a Linear with its epilogue (the packed
    /// engine applies it as each tile is stored; others run the product, then the additions, in that order).
    func linear(_ out: P, _ inp: Operand, _ w: WeightRef, _ bias: CP?, n: Int, residual: CP?, gelu: Bool)
    /// Inference attention (no dropout, no probabilities kept for backward) into ctx (B, T, C) from q, k, v;
    /// `acts` lends scratch (its `probs`).
    func attention(ctx: P, q: CP, k: CP, v: CP, _ s: Attention.Shape, acts: Activations)
}

/// The library behind a `MatMul`.
public enum MatMulLibrary: String, Sendable, CaseIterable {
    /// OpenBLAS (fp32 only).
    case openblas
    /// oneDNN (fp32 and bf16), loaded at run time.
    case onednn
    /// The packed engine (fp32, inference; `PackedMatMul`): chosen by the sampling engine, never by DIFFUSEQ_MATMUL.
    case packed
}

extension MatMul {
    /// OpenBLAS `cblas_sgemm` (OpenBLAS's, and the packed engine's general products).
    func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: CP, lda: Int, b: CP, ldb: Int,
              beta: Float, c: P, ldc: Int) {
        BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                  beta: beta, c: c, ldc: ldc)
    }

    func linear(_ out: P, _ inp: Operand, _ w: WeightRef, _ bias: CP?, n: Int, residual: CP?, gelu: Bool) {
        linear(out, inp, w, bias, n: n)
        if let residual { Kernels.add(out, out, residual, n * w.outputs) }
        if gelu { Kernels.gelu(out, out, n * w.outputs) }
    }

    func attention(ctx: P, q: CP, k: CP, v: CP, _ s: Attention.Shape, acts: Activations) {
        var unused = SeededRandom(seed: 0)
        Attention.forward(ctx: ctx, probs: acts.layer(0).probs.ptr, q: q, k: k, v: v, s, dropout: nil, savedRNG: &unused)
    }

    /// out (N, O) = inp (N, I)·Wᵀ + bias (O), inp fp32.
    func linear(_ out: P, _ inp: CP, _ w: WeightRef, _ bias: CP?, n: Int) { linear(out, .f32(inp), w, bias, n: n) }

    /// `linearBackward` with an fp32 input.
    func linearBackward(dinp: P?, dw: P, db: P?, dout: CP, inp: CP, w: WeightRef, n: Int) {
        linearBackward(dinp: dinp, dw: dw, db: db, dout: dout, inp: .f32(inp), w: w, n: n, consumeDout: false)
    }

    /// `linearBackward` that leaves dout as it is.
    func linearBackward(dinp: P?, dw: P, db: P?, dout: CP, inp: Operand, w: WeightRef, n: Int) {
        linearBackward(dinp: dinp, dw: dw, db: db, dout: dout, inp: inp, w: w, n: n, consumeDout: false)
    }

    /// The operand of activation `x` (`count` floats) for this backend's products: `x` itself, or for bf16 its
    /// bf16 copy written into `cache` (which the caller keeps for the backward pass; without a cache the
    /// product converts `x` into scratch as it runs).
    func operand(_ x: CP, count: Int, cache: HalfBuffer?) -> Operand {
        guard precision == .bf16, let cache else { return .f32(x) }
        precondition(cache.count >= count)
        dsq_f32_to_bf16(cache.ptr, x, count)
        return .bf16(UnsafePointer(cache.ptr))
    }

    /// The operand of activation `x` (`count` floats) converted in place when `inPlace` and this backend is bf16
    /// (the fp32 values are gone: for a temporary read by this product only), else `x`.
    func operand(inPlace x: P, count: Int, _ inPlace: Bool) -> Operand {
        guard precision == .bf16, inPlace else { return .f32(x) }
        dsq_f32_to_bf16_inplace(x, count)
        return .bf16(UnsafeRawPointer(x).assumingMemoryBound(to: UInt16.self))
    }

    /// The operand of an activation that backward reads: its bf16 cache when the forward made one, else `x`.
    func cached(_ x: CP, _ cache: HalfBuffer?) -> Operand {
        if precision == .bf16, let cache { return .bf16(UnsafePointer(cache.ptr)) }
        return .f32(x)
    }

    /// "OpenBLAS fp32", "oneDNN bf16 (brg:avx512_core_bf16)".
    var summary: String {
        switch library {
        case .openblas: return "OpenBLAS fp32"
        case .packed: return "packed fp32"
        case .onednn:
            let impl = OneDNN.implementation(bf16: precision == .bf16)
            return "oneDNN \(precision.rawValue)" + (impl.isEmpty ? "" : " (\(impl))")
        }
    }

    /// db (O) += Σ_rows dout (N, O): column blocks in parallel, each column summing its rows in order
    /// (thread-count independent).
    func biasBackward(_ db: P, _ dout: CP, n: Int, o: Int) {
        parallelRows(o, minChunk: 64) { lo, hi in
            for r in 0..<n {
                let row = dout + r * o
                for j in lo..<hi { db[j] += row[j] }
            }
        }
    }
}

/// OpenBLAS fp32: the reference backend (the products the fixtures were checked with) and the fallback.
final class OpenBLASMatMul: MatMul {
    /// The one instance (it holds no state).
    static let shared = OpenBLASMatMul()
    var library: MatMulLibrary { .openblas }
    var precision: ComputeContext.Precision { .fp32 }
    var fp32: any MatMul { self }

    func linear(_ out: P, _ inp: Operand, _ w: WeightRef, _ bias: CP?, n: Int) {
        Kernels.linear(out, Self.f32(inp), w.f32, bias, n: n, i: w.inputs, o: w.outputs)
    }

    func linearBackward(dinp: P?, dw: P, db: P?, dout: CP, inp: Operand, w: WeightRef, n: Int, consumeDout: Bool) {
        Kernels.linearBackward(dinp: dinp, dw: dw, db: db, dout: dout, inp: Self.f32(inp), w: w.f32, n: n, i: w.inputs,
                               o: w.outputs)
    }

    /// fp32 backends never get bf16 operands (`operand` makes them only for bf16 backends).
    private static func f32(_ x: Operand) -> CP {
        guard case .f32(let p) = x else { preconditionFailure("an fp32 backend was given a bf16 operand") }
        return p
    }
}

/// oneDNN's matmul in fp32 or bf16 (bf16 inputs, fp32 accumulation and output). Made only through
/// `OneDNN.matMul(bf16:)`, which checks that the library loaded.
final class OneDNNMatMul: MatMul {
    let bf16: Bool
    var library: MatMulLibrary { .onednn }
    var precision: ComputeContext.Precision { bf16 ? .bf16 : .fp32 }
    /// The fp32 sibling of a bf16 backend (nil: this one is fp32).
    private let sibling: (any MatMul)?
    var fp32: any MatMul { sibling ?? self }

    fileprivate init(bf16: Bool, fp32: (any MatMul)?) {
        self.bf16 = bf16
        sibling = fp32
    }

    /// The threads of the bound context (oneDNN's OpenMP team for this product).
    private var threads: Int32 { Int32(ComputeContext.bound.threads) }

    /// One product; a oneDNN failure (none is expected once a shape has worked) is a programming error.
    @inline(__always)
    private func run(m: Int, n: Int, k: Int, a: UnsafeRawPointer, aType: Int32, aRS: Int, aCS: Int,
                     b: UnsafeRawPointer, bType: Int32, bRS: Int, bCS: Int, bias: CP?, c: P, ldc: Int,
                     alpha: Float = 1, beta: Float) {
        let rc = dsq_dnnl_gemm(m, n, k, a, aType, aRS, aCS, b, bType, bRS, bCS, bf16 ? 1 : 0, bias, c, ldc, alpha,
                               beta, threads)
        precondition(rc == 0, "oneDNN matmul \(m)×\(n)×\(k): \(String(cString: dsq_dnnl_error()))")
    }

    func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: CP, lda: Int, b: CP, ldb: Int,
              beta: Float, c: P, ldc: Int) {
        if m == 0 || n == 0 { return }
        run(m: m, n: n, k: k, a: a, aType: DSQ_F32, aRS: transA ? 1 : lda, aCS: transA ? lda : 1,
            b: b, bType: DSQ_F32, bRS: transB ? 1 : ldb, bCS: transB ? ldb : 1, bias: nil, c: c, ldc: ldc,
            alpha: alpha, beta: beta)
    }

    /// W as the (K, N) operand of the forward product (its transpose: element (p, j) = W[j·I + p]).
    private func weightOperand(_ w: WeightRef) -> (UnsafeRawPointer, Int32) {
        if bf16, let h = w.bf16 { return (UnsafeRawPointer(h), DSQ_BF16) }
        return (UnsafeRawPointer(w.f32), DSQ_F32)
    }

    /// An activation operand as the C shim takes it.
    private func raw(_ x: Operand) -> (UnsafeRawPointer, Int32) {
        switch x {
        case .f32(let p): return (UnsafeRawPointer(p), DSQ_F32)
        case .bf16(let h):
            precondition(bf16, "an fp32 backend was given a bf16 operand")
            return (UnsafeRawPointer(h), DSQ_BF16)
        }
    }

    func linear(_ out: P, _ inp: Operand, _ w: WeightRef, _ bias: CP?, n: Int) {
        let (wp, wt) = weightOperand(w), (xp, xt) = raw(inp)
        run(m: n, n: w.outputs, k: w.inputs, a: xp, aType: xt, aRS: w.inputs, aCS: 1,
            b: wp, bType: wt, bRS: 1, bCS: w.inputs, bias: bias, c: out, ldc: w.outputs, beta: 0)
    }

    func linearBackward(dinp: P?, dw: P, db: P?, dout: CP, inp: Operand, w: WeightRef, n: Int, consumeDout: Bool) {
        let (wp, wt) = weightOperand(w)
        let o = w.outputs, i = w.inputs
        // The bias gradient first, from the fp32 dout; then dout may become bf16 where it is.
        if let db { biasBackward(db, dout, n: n, o: o) }
        let (dp, dt) = bf16 && consumeDout ? raw(operand(inPlace: UnsafeMutablePointer(mutating: dout), count: n * o, true))
                                             : (UnsafeRawPointer(dout), DSQ_F32)
        if let dinp {  // NN: dinp (N, I) += dout (N, O)·W (O, I)
            run(m: n, n: i, k: o, a: dp, aType: dt, aRS: o, aCS: 1, b: wp, bType: wt, bRS: i, bCS: 1,
                bias: nil, c: dinp, ldc: i, beta: 1)
        }
        // TN: dW (O, I) += doutᵀ (O, N)·inp (N, I)
        let (xp, xt) = raw(inp)
        run(m: o, n: i, k: n, a: dp, aType: dt, aRS: 1, aCS: o, b: xp, bType: xt, bRS: i, bCS: 1,
            bias: nil, c: dw, ldc: i, beta: 1)
    }
}

/// The packed engine as a backend (batch-1 sampling, fp32, inference only): weights packed once into panels
/// of 32 output columns (`PreparedWeights` with this backend), products, their epilogues and attention on our
/// small thread pool (`Sources/CKernels/packed.c`; README, "Packed engine"). Threads and the portable code
/// come from the bound context, per call.
final class PackedMatMul: MatMul {
    /// The one instance (it holds no state).
    static let shared = PackedMatMul()
    var library: MatMulLibrary { .packed }
    var precision: ComputeContext.Precision { .fp32 }
    var fp32: any MatMul { self }

    func linear(_ out: P, _ inp: Operand, _ w: WeightRef, _ bias: CP?, n: Int) {
        linear(out, inp, w, bias, n: n, residual: nil, gelu: false)
    }

    func linear(_ out: P, _ inp: Operand, _ w: WeightRef, _ bias: CP?, n: Int, residual: CP?, gelu: Bool) {
        guard case .f32(let x) = inp, let panels = w.packed else { preconditionFailure("the packed engine takes fp32 inputs and packed weights") }
        let cx = ComputeContext.bound, o = w.outputs, i = w.inputs
        dsq_linear_packed(out, o, x, i, n, i, panels, o, bias, residual, o, gelu ? DSQ_ACT_GELU : DSQ_ACT_NONE,
                          Int32(cx.threads), cx.portableKernels ? 1 : 0)
    }

    func linearBackward(dinp: P?, dw: P, db: P?, dout: CP, inp: Operand, w: WeightRef, n: Int, consumeDout: Bool) {
        preconditionFailure("the packed engine is for inference")
    }

    func attention(ctx: P, q: CP, k: CP, v: CP, _ s: Attention.Shape, acts: Activations) {
        precondition(s.stride == 3 * s.C && k == q + s.C && v == q + 2 * s.C, "packed attention takes stacked q, k, v")
        let cx = ComputeContext.bound, workers = Int32(cx.threads)
        let scratch = acts.attentionScratch(count: dsq_attention_scratch_count(s.T, s.HS, workers))
        for b in 0..<s.B {
            dsq_attention_packed(ctx + b * s.T * s.C, s.C, q + b * s.T * s.stride, s.stride, s.T, s.NH, s.HS, s.scale,
                                 scratch, workers, cx.portableKernels ? 1 : 0)
        }
    }
}

/// oneDNN, loaded at run time (`Sources/CDNNL`): availability, version, the ISA it chose, and the backends.
public enum OneDNN {
    /// Loads oneDNN if needed; nil when it loaded, otherwise why not (one line).
    public static var loadError: String? {
        var buffer = [CChar](repeating: 0, count: 512)
        return dsq_dnnl_load(&buffer, Int32(buffer.count)) == 0 ? nil : String(cString: buffer)
    }

    /// "2.6.3", or nil when oneDNN is not available.
    public static var version: String? { loadError == nil ? String(cString: dsq_dnnl_version()) : nil }

    /// oneDNN's name for the implementation of the last product it set up, e.g. "brg:avx512_core_bf16".
    public static func implementation(bf16: Bool) -> String { String(cString: dsq_dnnl_impl(bf16 ? 1 : 0)) }

    /// Whether this CPU has AVX512-BF16.
    public static var cpuHasBF16: Bool { dsq_cpu_has_bf16() != 0 }

    /// bf16 dot-product throughput over fp32 FMA throughput on this CPU (0 without AVX512-BF16), measured
    /// once per process (≈ 2 ms).
    public static var bf16SpeedRatio: Double { dsq_bf16_speed_ratio() }

    /// oneDNN's implementation of a 64×256×256 product in fp32 and in bf16 (for `--version`: the ISA it chose),
    /// or nil when oneDNN is not available.
    public static func probe() -> (fp32: String, bf16: String)? {
        guard let f = matMul(bf16: false), let h = matMul(bf16: true) else { return nil }
        let a = FloatBuffer(count: 64 * 256), b = FloatBuffer(count: 256 * 256), c = FloatBuffer(count: 64 * 256)
        var out: [String] = []
        for mm in [f, h] {
            mm.gemm(transA: false, transB: true, m: 64, n: 256, k: 256, alpha: 1, a: a.ptr, lda: 256, b: b.ptr, ldb: 256,
                    beta: 0, c: c.ptr, ldc: 256)
            out.append(implementation(bf16: mm.precision == .bf16))
        }
        return (out[0], out[1])
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var instances: [Bool: OneDNNMatMul] = [:]

    /// The oneDNN backend (one per precision per process; they hold no per-run state), or nil with the reason.
    static func matMul(bf16: Bool) -> (any MatMul)? {
        guard loadError == nil else { return nil }
        lock.lock()
        defer { lock.unlock() }
        if let m = instances[bf16] { return m }
        let f32 = instances[false] ?? OneDNNMatMul(bf16: false, fp32: nil)
        instances[false] = f32
        if !bf16 { return f32 }
        let m = OneDNNMatMul(bf16: true, fp32: f32)
        instances[true] = m
        return m
    }
}

/// The backend a compute context gives for a run, with a one-line notice when it fell back (oneDNN
/// missing, no AVX512-BF16) or when `auto` decided (and why).
public struct MatMulChoice: Sendable {
    let mm: any MatMul
    /// Says what was asked and what runs instead, or what `auto` chose and why; nil when it is as asked.
    public let notice: String?
    /// "OpenBLAS fp32", "oneDNN bf16 (brg:avx512_core_bf16)" (the implementation once a product ran).
    public var summary: String { mm.summary }
    /// The precision that runs.
    public var precision: ComputeContext.Precision { mm.precision }
    /// The library that runs.
    public var library: MatMulLibrary { mm.library }
}

extension ComputeContext {
    /// The matrix-product backend of this context for `workload`: `precision` and `library` resolved
    /// against what this machine has. bf16 needs oneDNN and AVX512-BF16; without either it falls back to
    /// fp32 with a notice. `auto` is bf16 for training and batch sampling when the CPU's bf16 dot
    /// products are at least `autoBF16Ratio` times as fast as its fp32 FMAs (measured once, ≈ 2 ms) and
    /// fp32 otherwise; batch-1 runs (`interactive`) stay fp32.
    public func matMul(for workload: Workload) -> MatMulChoice {
        func fp32(_ why: String? = nil) -> MatMulChoice {
            if library == .onednn {
                if let m = OneDNN.matMul(bf16: false) { return MatMulChoice(mm: m, notice: why) }
                let reason = OneDNN.loadError ?? "unavailable"
                return MatMulChoice(mm: OpenBLASMatMul.shared,
                                    notice: (why.map { $0 + "; " } ?? "") + "DIFFUSEQ_MATMUL=onednn: \(reason); using OpenBLAS")
            }
            return MatMulChoice(mm: OpenBLASMatMul.shared, notice: why)
        }
        func bf16Blocker() -> String? {
            if let e = OneDNN.loadError { return e }
            if !OneDNN.cpuHasBF16 { return "this CPU has no AVX512-BF16" }
            return nil
        }
        switch precision {
        case .fp32:
            return fp32()
        case .bf16:
            if let why = bf16Blocker() { return fp32("bf16 is not available (\(why)); computing in fp32") }
            guard let m = OneDNN.matMul(bf16: true) else { return fp32("bf16 is not available; computing in fp32") }
            let r = OneDNN.bf16SpeedRatio
            let slow = String(format: "bf16 dot products run at %.2f× the fp32 FMA rate on this CPU: bf16 is slower than fp32 here", r)
            return MatMulChoice(mm: m, notice: r < 1 ? slow : nil)
        case .auto:
            if workload == .interactive { return fp32() }
            if let why = bf16Blocker() { return fp32("precision auto: fp32 (\(why))") }
            let r = OneDNN.bf16SpeedRatio
            let rate = String(format: "bf16 dot products run at %.2f× the fp32 FMA rate on this CPU", r)
            if r >= Self.autoBF16Ratio, let m = OneDNN.matMul(bf16: true) {
                return MatMulChoice(mm: m, notice: "precision auto: bf16 (\(rate))")
            }
            return fp32("precision auto: fp32 (\(rate))")
        }
    }
}
