import Foundation
import Testing
@testable import DiffuSeqCore

/// Fixture: make_fixtures_extra.py — `grads.safetensors` (gradient of the official loss and of each
/// term wrt every parameter; tiny model, eval mode, t = [0, 37], injected noise).
@Suite("Loss and gradients vs the official code")
struct GradientTests {
    /// `sparseCap`: nil = the default choice, 0 = dense CE backward, 1_000_000 = sparse on every row.
    /// `mm`: the matrix-product backend of the passes (nil: OpenBLAS); `bf16Caches`: keep the bf16 copies of the
    /// product inputs for backward, as a bf16 training step does.
    func run(_ objective: LossObjective, sparseCap: Int? = nil, mm: (any MatMul)? = nil, bf16Caches: Bool = false,
             bf16Copies: Bool = true) throws -> (LossTerms, TransformerNetModel, FloatBuffer) {
        let g = try Golden("golden.safetensors")
        let m = try loadTinyModel()
        let loss = DiffusionLoss(model: m, schedule: try NoiseSchedule(named: "sqrt", steps: 50))
        loss.sparseCap = sparseCap
        if let mm { loss.prepared = PreparedWeights(model: m, mm: mm, bf16Copies: bf16Copies) }
        let acts = Activations(config: m.config, B: 2, T: 16, keepLayerCaches: true, dropout: false, bf16Caches: bf16Caches)
        let grads = FloatBuffer(count: m.layout.totalCount)
        let n1 = g.f32("loss.noise_xstart"), n2 = g.f32("loss.noise_q")
        let terms = n1.withUnsafeBufferPointer { a in
            n2.withUnsafeBufferPointer { b in
                loss.compute(ids: g.i64("batch.input_ids"), mask: g.i64("batch.input_mask"), t: g.i64("loss.t"),
                             noiseXStart: a.baseAddress!, noiseQ: b.baseAddress!, weights: [1, 1], acts: acts,
                             grads: grads, objective: objective, dropout: nil)
            }
        }
        if sparseCap == 0 { #expect(loss.lastSparseRows == 0) }
        if sparseCap == 1_000_000 && objective.contains(.decoderNLL) { #expect(loss.lastSparseRows == 32) }
        return (terms, m, grads)
    }

    @Test("loss terms equal golden loss.* (1e-5)")
    func lossTerms() throws {
        let g = try Golden("golden.safetensors")
        let (t, _, _) = try run(.all)
        for (name, got) in [("mse", t.mse), ("decoder_nll", t.decoderNLL), ("tT", t.tT), ("loss", t.loss), ("nll", t.nll)] {
            let (d, _) = maxAbsDiff(got, g.f32("loss." + name))
            #expect(d <= 1e-5, "loss.\(name): \(got) vs \(g.f32("loss." + name))")
        }
    }

    @Test("gradient of the loss and of each term matches grads.safetensors for every parameter",
          arguments: [("grad", 7), ("grad_mse", 1), ("grad_decoder_nll", 2), ("grad_tT", 4)], [-1, 0, 1_000_000])
    func gradients(term: (String, Int), sparseCap: Int) throws { try checkGradients(term: term, sparseCap: sparseCap) }

    @Test("the same gradients, unchanged tolerances, with every product on oneDNN fp32",
          arguments: [("grad", 7), ("grad_mse", 1), ("grad_decoder_nll", 2), ("grad_tT", 4)])
    func gradientsOneDNN(term: (String, Int)) throws {
        try checkGradients(term: term, sparseCap: 0, mm: try matMul(.onednn))
    }

    @Test("bf16 products: every gradient of the fixture model within 2e-2 of fp32 (relative L2 per tensor), the norm within 0.5 %")
    func gradientsBF16() throws {
        let (t32, m, g32) = try run(.all, sparseCap: 0)
        let (t16, _, g16) = try run(.all, sparseCap: 0, mm: try matMul(.onednn, bf16: true))
        var worst = (0.0, ""), n32 = 0.0, n16 = 0.0
        for e in m.layout.entries {
            let a = g16.array(e.range), b = g32.array(e.range)
            n32 += b.reduce(0) { $0 + Double($1) * Double($1) }
            n16 += a.reduce(0) { $0 + Double($1) * Double($1) }
            // Attention key biases have an exactly zero gradient in exact arithmetic: only rounding is left.
            if e.key.hasSuffix("key.bias") { continue }
            let r = relativeError(a, b)
            if r > worst.0 { worst = (r, e.key) }
            #expect(r <= 2e-2, "\(e.key): relative error \(r)")
        }
        #expect(abs(n16.squareRoot() / n32.squareRoot() - 1) <= 5e-3, "norms \(n16.squareRoot()) vs \(n32.squareRoot())")
        #expect(abs(t16.loss[0] - t32.loss[0]) <= 1e-3 * abs(t32.loss[0]) + 1e-4, "loss \(t16.loss) vs \(t32.loss)")
        // A training step's preparation (the product inputs backward reads kept as bf16, their fp32 buffers shared
        // by the layers; no weight copies, each weight converted as it enters a product) changes nothing: the same
        // bf16 values enter the same products.
        let (_, _, gc) = try run(.all, sparseCap: 0, mm: try matMul(.onednn, bf16: true), bf16Caches: true, bf16Copies: false)
        #expect(gc.array == g16.array, "bf16 caches changed the gradients")
        print("bf16 vs fp32 gradients (fixture model): worst tensor \(worst.1) \(worst.0); norm ratio \(n16.squareRoot() / n32.squareRoot())")
    }

    func checkGradients(term: (String, Int), sparseCap: Int, mm: (any MatMul)? = nil) throws {
        // sparseCap −1: default CE-gradient path choice, 0: dense GEMMs, 1,000,000: sparse gather/scatter on every row.
        let (prefix, objectiveRaw) = term
        let gg = try Golden("grads.safetensors")
        let (_, m, grads) = try run(LossObjective(rawValue: objectiveRaw), sparseCap: sparseCap < 0 ? nil : sparseCap, mm: mm)
        var checked = 0
        for e in m.layout.entries {
            let want = gg.f32(prefix + "." + e.key)
            #expect(want.count == e.count, "\(prefix).\(e.key) missing or wrong size")
            let got = grads.array(e.range)
            let scale = max(want.map { abs($0) }.max() ?? 0, 1e-12)
            let (d, at) = maxAbsDiff(got, want)
            // Attention key biases are exactly zero in exact arithmetic: compare absolutely.
            let ok = e.key.hasSuffix("key.bias") ? d <= 1e-8 : d <= 1e-4 * scale
            #expect(ok, "\(prefix).\(e.key): max |diff| \(d) at \(at), largest |g| \(scale)")
            checked += 1
        }
        #expect(checked == 49)
    }
}

@Suite("Paper loss variant")
struct LossVariantTests {
    @Test("target-only MSE averages over the target positions only (differs from the official mean over all)")
    func targetOnly() throws {
        let g = try Golden("golden.safetensors")
        let m = try loadTinyModel()
        let schedule = try NoiseSchedule(named: "sqrt", steps: 50)
        let ids = g.i64("batch.input_ids"), mask = g.i64("batch.input_mask")
        let n1 = g.f32("loss.noise_xstart"), n2 = g.f32("loss.noise_q")
        func terms(_ v: LossVariant) -> (LossTerms, [Float]) {
            let acts = Activations(config: m.config, B: 2, T: 16, keepLayerCaches: false, dropout: false)
            let t = n1.withUnsafeBufferPointer { a in n2.withUnsafeBufferPointer { b in
                DiffusionLoss(model: m, schedule: schedule, variant: v).compute(
                    ids: ids, mask: mask, t: [5, 37], noiseXStart: a.baseAddress!, noiseQ: b.baseAddress!, weights: [1, 1],
                    acts: acts, grads: nil, dropout: nil, computeNLL: false) } }
            return (t, acts.out.array)
        }
        let (official, out) = terms(.official)
        let (paper, _) = terms(.targetOnly)
        // Recompute the target-only MSE by hand from x_start and the network output.
        let E = m.tensor("word_embedding.weight")!, std0 = Float(schedule.sqrtOneMinusAlphasCumprod[0])
        for b in 0..<2 {
            var sum: Float = 0, count = 0
            for p in 0..<16 where mask[b * 16 + p] == 1 {
                count += 1
                for j in 0..<16 {
                    let i = (b * 16 + p) * 16 + j
                    let xs = E[ids[b * 16 + p] * 16 + j] + std0 * n1[i]
                    sum += (xs - out[i]) * (xs - out[i])
                }
            }
            #expect(abs(paper.mse[b] - sum / Float(count * 16)) < 1e-5)
            #expect(abs(paper.mse[b] - official.mse[b]) > 1e-4)
            #expect(paper.decoderNLL == official.decoderNLL)
        }
    }
}
