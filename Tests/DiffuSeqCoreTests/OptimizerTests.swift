import Foundation
import Testing
@testable import DiffuSeqCore

/// Fixture: make_fixtures_extra.py — `adamw.safetensors` / `adamw.json` (README "Optimizer steps"):
/// 5 steps of the official `TrainLoop` (lr 1e-3 decaying over learning_steps 10, AdamW with weight decay 0,
/// EMA 0.9999 and 0.9, no clipping, batch = microbatch = 2) on the golden batch with injected t / noise.
@Suite("AdamW, EMA and the timestep sampler vs the official TrainLoop")
struct OptimizerTests {
    static let tensors = ["word_embedding.weight", "lm_head.bias", "time_embed.0.weight",
                          "input_transformers.layer.1.output.dense.weight"]

    /// The golden batch as two examples (ids/mask of golden.safetensors `batch.*`).
    static func goldenBatch() throws -> [Seq2SeqExample] {
        let g = try Golden("golden.safetensors")
        let ids = g.i64("batch.input_ids"), mask = g.i64("batch.input_mask")
        let L = tinyConfig.seqLen
        return (0..<2).map { b in
            Seq2SeqExample(src: "ex\(b)", trg: "ex\(b)", ids: Array(ids[(b * L)..<((b + 1) * L)]),
                           mask: Array(mask[(b * L)..<((b + 1) * L)]), line: b + 1)
        }
    }

    /// Replays the 5 official steps; returns the trainer, the step reports and the per-step gradients
    /// of the 4 stored tensors (the trainer's gradient buffer right after each step).
    static func replay(library: MatMulLibrary = .openblas) throws -> (Trainer, [StepReport], [[String: [Float]]]) {
        let a = try Golden("adamw.safetensors")
        let model = try loadTinyModel()
        var o = TrainingOptions()
        o.lr = 1e-3; o.steps = 10; o.emaRates = [0.9999, 0.9]; o.weightDecay = 0; o.clip = -1
        o.batchSize = 2; o.microbatch = 2; o.warmup = 0
        var context = ComputeContext()
        context.library = library
        let trainer = try Trainer(model: model, examples: try goldenBatch(), options: o, context: context)
        #expect(trainer.matMul.library == library && trainer.matMul.notice == nil, "\(trainer.matMul.notice ?? "")")
        let batch = try goldenBatch()
        let ts = a.i64("step.t"), n1 = a.f32("step.noise_xstart"), n2 = a.f32("step.noise_q")
        let per = 2 * tinyConfig.seqLen * tinyConfig.hiddenDim
        #expect(ts.count == 10 && n1.count == 5 * per && n2.count == 5 * per)
        var reports: [StepReport] = [], grads: [[String: [Float]]] = []
        for k in 0..<5 {
            let draw = MicrobatchDraw(t: Array(ts[(2 * k)..<(2 * k + 2)]), weights: [1, 1],
                                      noiseXStart: Array(n1[(k * per)..<((k + 1) * per)]),
                                      noiseQ: Array(n2[(k * per)..<((k + 1) * per)]))
            reports.append(trainer.trainStep(batch: batch, draws: [draw], dropout: false))
            var g: [String: [Float]] = [:]
            for key in tensors { g[key] = trainer.grads.array(model.layout.entry(key)!.range) }
            grads.append(g)
        }
        return (trainer, reports, grads)
    }

    @Test("5 TrainLoop steps: losses, lr, gradients, weights, both EMAs and the Adam moments (OpenBLAS, oneDNN fp32)",
          arguments: [MatMulLibrary.openblas, .onednn])
    func fiveOfficialSteps(library: MatMulLibrary) throws {
        let a = try Golden("adamw.safetensors")
        let (trainer, reports, grads) = try Self.replay(library: library)
        let m = trainer.model
        // Per-step numbers.
        let lossMean = a.f32("step.loss_mean"), perExample = a.f32("step.loss_per_example"), lr = a.f64("step.lr")
        let ts = a.i64("step.t")
        #expect(lossMean.count == 5 && perExample.count == 10 && lr.count == 5)
        for k in 0..<5 {
            #expect(abs(reports[k].loss - Double(lossMean[k])) <= 1e-5, "step \(k): loss \(reports[k].loss) vs \(lossMean[k])")
            #expect(abs(reports[k].lr - lr[k]) <= 1e-15 * lr[k], "step \(k): lr \(reports[k].lr) vs \(lr[k])")
            #expect(reports[k].step == k + 1)
        }
        // Per-example losses: the trainer feeds them to the loss-aware sampler, whose per-t history
        // keeps them in order (t = 0 occurs twice: step 0 example 0, step 2 example 1).
        var seen: [Int: Int] = [:]
        for k in 0..<5 {
            for b in 0..<2 {
                let t = ts[2 * k + b], j = seen[t, default: 0]
                seen[t] = j + 1
                let got = trainer.sampler.history[t * trainer.sampler.historyPerTerm + j]
                let want = Double(perExample[2 * k + b])
                #expect(abs(got - want) <= 1e-5, "step \(k) example \(b) (t \(t)): loss \(got) vs \(want)")
            }
        }
        #expect(trainer.adam.step == 5 && trainer.step == 5)
        // Gradients of every step (same relative criterion as GradientTests).
        for k in 0..<5 {
            for key in Self.tensors {
                let want = Array(a.f32("step.grad." + key).chunked(count: 5)[k])
                let got = grads[k][key]!
                let scale = max(want.map { abs($0) }.max() ?? 0, 1e-12)
                let (d, at) = maxAbsDiff(got, want)
                #expect(d <= 1e-4 * scale, "step \(k) grad \(key): max |diff| \(d) at \(at), largest |g| \(scale)")
            }
        }
        // After 5 steps. Tolerance 1e-5 absolute: the fixture README ("Optimizer steps", last paragraph)
        // suggests "losses 1e-5, weights 1e-5 (the 5 updates amplify last-bit differences of the gradients)".
        for key in Self.tensors {
            let r = m.layout.entry(key)!.range
            for (name, got) in [("final", m.params.array(r)), ("ema_9999", trainer.emaWeights(0).array(r)),
                                ("ema_9", trainer.emaWeights(1).array(r)), ("adam_exp_avg", trainer.adam.m.array(r)),
                                ("adam_exp_avg_sq", trainer.adam.v.array(r))] {
                let want = a.f32(name + "." + key)
                #expect(want.count == r.count, "\(name).\(key) missing")
                let (d, at) = maxAbsDiff(got, want)
                #expect(d <= 1e-5, "\(name).\(key): max |diff| \(d) at \(at)")
            }
        }
        // The weights did move (a no-op optimiser would otherwise pass the EMA-0.9999 check).
        let r = m.layout.entry("lm_head.bias")!.range
        let (moved, _) = maxAbsDiff(a.f32("init.lm_head.bias"), m.params.array(r))
        #expect(moved > 1e-4)
    }

    // MARK: AdamW and EMA formulas on a toy vector

    @Test("AdamW: bias-corrected update and decoupled weight decay, by hand")
    func adamByHand() {
        let p = FloatBuffer([1, -2]), g = FloatBuffer([0.5, -0.25])
        var adam = AdamW(count: 2, weightDecay: 0.1)
        adam.update(params: p, grads: g, lr: 0.01)
        adam.update(params: p, grads: g, lr: 0.01)
        // Reference in Double: torch AdamW (decay first, then m, v, bias-corrected step).
        var pp: [Double] = [1, -2], mm: [Double] = [0, 0], vv: [Double] = [0, 0]
        let gg: [Double] = [0.5, -0.25]
        for n in 1...2 {
            for i in 0..<2 {
                pp[i] *= 1 - 0.01 * 0.1
                mm[i] = 0.9 * mm[i] + 0.1 * gg[i]
                vv[i] = 0.999 * vv[i] + 0.001 * gg[i] * gg[i]
                let bc1 = 1 - pow(0.9, Double(n)), bc2 = 1 - pow(0.999, Double(n))
                pp[i] -= 0.01 / bc1 * mm[i] / (vv[i].squareRoot() / bc2.squareRoot() + 1e-8)
            }
        }
        for i in 0..<2 {
            #expect(abs(Double(p.ptr[i]) - pp[i]) < 1e-6, "p[\(i)] \(p.ptr[i]) vs \(pp[i])")
            #expect(abs(Double(adam.m.ptr[i]) - mm[i]) < 1e-7)
            #expect(abs(Double(adam.v.ptr[i]) - vv[i]) < 1e-9)
        }
        #expect(adam.step == 2)
    }

    @Test("EMA: e ← r·e + (1 − r)·θ from a copy of the initial weights")
    func emaByHand() {
        let p = FloatBuffer([1, 2])
        let ema = EMA(rates: [0.5, 0.9], params: p)
        p.ptr[0] = 3; p.ptr[1] = 4
        ema.update(params: p)
        #expect(ema.buffers[0].array == [2, 3])
        #expect(abs(ema.buffers[1].ptr[0] - 1.2) < 1e-6 && abs(ema.buffers[1].ptr[1] - 2.2) < 1e-6)
    }

    @Test("learning rate: linear decay to 0 over the steps, optional warm-up")
    func learningRate() {
        var o = TrainingOptions()
        o.lr = 1e-3; o.steps = 10
        #expect(o.learningRate(at: 0) == 1e-3)
        #expect(abs(o.learningRate(at: 5) - 5e-4) < 1e-18)
        #expect(abs(o.learningRate(at: 9) - 1e-4) < 1e-18)
        o.warmup = 4
        #expect(abs(o.learningRate(at: 0) - 1e-3 * 0.25) < 1e-18)
        #expect(abs(o.learningRate(at: 3) - 1e-3 * 0.7) < 1e-18)
    }

    // MARK: Timestep sampler (spec §3.3)

    @Test("uniform sampler: weights 1, every t drawn")
    func uniformSampler() {
        let s = TimestepSampler(kind: .uniform, steps: 5)
        var rng = SeededRandom(seed: 3)
        let (t, w) = s.sample(2000, rng: &rng)
        #expect(w.allSatisfy { $0 == 1 })
        #expect(Set(t) == Set(0..<5))
    }

    @Test("lossaware sampler: uniform until every t has 10 losses, then √mean(hist²) with 0.001 uniform mix; FIFO of 10")
    func lossAwareSampler() {
        let T = 5
        var s = TimestepSampler(kind: .lossaware, steps: T)
        // losses for t: (t+1)·0.1·(k+1), k = 0..<10; t = 4 gets only 9 at first.
        func loss(_ t: Int, _ k: Int) -> Float { Float(t + 1) * 0.1 * Float(k + 1) }
        for k in 0..<10 {
            for t in 0..<T where !(t == 4 && k == 9) { s.update(t: [t], losses: [loss(t, k)]) }
        }
        #expect(!s.warmedUp)
        #expect(s.weights() == [1, 1, 1, 1, 1])
        var rng = SeededRandom(seed: 7)
        #expect(s.sample(50, rng: &rng).weights.allSatisfy { $0 == 1 })
        s.update(t: [4], losses: [loss(4, 9)])
        #expect(s.warmedUp)
        // Expected p by hand.
        func expected(_ hist: [[Double]]) -> [Double] {
            let w = hist.map { h in (h.map { $0 * $0 }.reduce(0, +) / Double(h.count)).squareRoot() }
            let sum = w.reduce(0, +)
            return w.map { 0.999 * $0 / sum + 0.001 / Double(T) }
        }
        var hist = (0..<T).map { t in (0..<10).map { Double(loss(t, $0)) } }
        var p = expected(hist)
        for (a, b) in zip(s.weights(), p) { #expect(abs(a - b) < 1e-12, "\(s.weights()) vs \(p)") }
        // FIFO: an 11th loss for t = 2 drops the oldest.
        s.update(t: [2], losses: [10])
        hist[2] = Array(hist[2].dropFirst()) + [10]
        #expect(s.counts[2] == 10)
        #expect(Array(s.history[20..<30]) == hist[2])
        p = expected(hist)
        for (a, b) in zip(s.weights(), p) { #expect(abs(a - b) < 1e-12, "\(s.weights()) vs \(p)") }
        // Draws: weight 1/(T·p_t), frequencies ≈ p.
        let n = 40_000
        let (ts, ws) = s.sample(n, rng: &rng)
        var freq = [Double](repeating: 0, count: T)
        for (t, w) in zip(ts, ws) {
            freq[t] += 1
            #expect(abs(Double(w) - 1 / (Double(T) * p[t])) <= 1e-6 * Double(w))
        }
        for t in 0..<T { #expect(abs(freq[t] / Double(n) - p[t]) < 0.01, "t \(t): \(freq[t] / Double(n)) vs \(p[t])") }
        // The uniform part: a t whose losses are all 0 still gets p = 0.001/T.
        var z = TimestepSampler(kind: .lossaware, steps: 2)
        for _ in 0..<10 { z.update(t: [0, 1], losses: [0, 1]) }
        let pz = z.weights()
        #expect(abs(pz[0] - 0.0005) < 1e-15 && abs(pz[1] - (0.999 + 0.0005)) < 1e-12)
    }
}

extension Array {
    /// Splits into `count` equal consecutive chunks.
    func chunked(count: Int) -> [ArraySlice<Element>] {
        let n = self.count / count
        return (0..<count).map { self[($0 * n)..<(($0 + 1) * n)] }
    }
}
