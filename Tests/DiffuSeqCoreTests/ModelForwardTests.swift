import Foundation
import Testing
@testable import DiffuSeqCore

/// Fixture: make_fixtures.py — `fwd.*` of golden.safetensors (official TransformerNetModel, eval mode).
@Suite("Model forward vs the official code")
struct ModelForwardTests {
    @Test("every fwd.* tensor and the logits match to 1e-5 (OpenBLAS and oneDNN fp32)", arguments: [MatMulLibrary.openblas, .onednn])
    func forwardMatches(library: MatMulLibrary) throws {
        let g = try Golden("golden.safetensors")
        let m = try loadTinyModel()
        let weights = PreparedWeights(model: m, mm: try matMul(library))
        let acts = Activations(config: m.config, B: 2, T: 16, keepLayerCaches: true, dropout: false)
        let x = g.f32("loss.x_t"), t = g.f32("loss.t_model")
        let out = x.withUnsafeBufferPointer { m.forward(x: $0.baseAddress!, tModel: t, acts: acts, dropout: nil, weights: weights) }
        let checks: [(String, [Float])] = [
            ("fwd.timestep_embedding", acts.te.array),
            ("fwd.emb_t", acts.embT.array),
            ("fwd.emb_inputs_ln", acts.h0.array),
            ("fwd.layer0_out", acts.layer(0).out.array),
            ("fwd.layer1_out", acts.layer(1).out.array),
            ("fwd.model_output", Array(UnsafeBufferPointer(start: out, count: 2 * 16 * 16))),
        ]
        for (name, got) in checks {
            let (d, at) = maxAbsDiff(got, g.f32(name))
            #expect(d <= 1e-5, "\(name): max |diff| \(d) at \(at)")
        }
        // logits = model_output · Eᵀ + b
        let sampler = try DiffusionSampler(model: m)
        let mo = g.f32("fwd.model_output")
        var logits = [Float](repeating: 0, count: 32 * 97)
        let E = sampler.index.table.ptr, bias = sampler.index.bias.ptr
        mo.withUnsafeBufferPointer { mp in
            logits.withUnsafeMutableBufferPointer { lp in
                Kernels.linear(lp.baseAddress!, mp.baseAddress!, E, bias, n: 32, i: 16, o: 97)
            }
        }
        let (d, at) = maxAbsDiff(logits, g.f32("fwd.logits"))
        #expect(d <= 1e-5, "logits: max |diff| \(d) at \(at)")
    }

    @Test("a second timestep pair (t = 1, 49) matches")
    func forwardSecondTimesteps() throws {
        let g = try Golden("golden.safetensors")
        let m = try loadTinyModel()
        let acts = Activations(config: m.config, B: 2, T: 16, keepLayerCaches: false, dropout: false)
        let x = g.f32("loss.x_t"), t = g.i64("fwd2.t").map { Float($0) * 20 }
        let out = x.withUnsafeBufferPointer { m.forward(x: $0.baseAddress!, tModel: t, acts: acts, dropout: nil) }
        let (d, at) = maxAbsDiff(Array(UnsafeBufferPointer(start: out, count: 512)), g.f32("fwd2.model_output"))
        #expect(d <= 1e-5, "fwd2.model_output: max |diff| \(d) at \(at)")
    }
}
