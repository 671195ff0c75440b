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

/// A snapshot of a model for batch-1 inference on the packed engine: its weights prepared for `PackedMatMul`
/// (every Linear weight packed once into the panels of `dsq_pack`, query/key/value stacked per layer) and the
/// embedding table packed likewise for rounding and the read-out. OpenBLAS packs a weight on every call, which
/// at 64 rows is a third of the product's time; here a product is only the multiply-adds. The forward pass is
/// the model's one (`TransformerNetModel.forward` with `weights`), as on every backend.
///
/// Sendable (unchecked): packed once in init and read-only afterwards; the C pool it runs on serialises
/// jobs itself (`pool.run` mutex, a second caller computes inline).
final class PackedModel: @unchecked Sendable {
    /// The weights as the packed engine takes them.
    let weights: PreparedWeights
    /// The tied embedding (V × D) packed for the rounding and read-out products.
    let table: FloatBuffer

    init(model: TransformerNetModel) {
        let c = model.config
        weights = PreparedWeights(model: model, mm: PackedMatMul.shared)
        table = FloatBuffer(count: dsq_packed_count(c.vocabSize, c.hiddenDim))
        dsq_pack(table.ptr, model.ptr(model.params, \.wordEmbedding), c.hiddenDim, c.vocabSize, c.hiddenDim)
    }
}
