import Foundation
import Testing
@testable import DiffuSeqCore

/// The recipe options (issue 13): token loss, loss masks, the source prior, and the sampler paths they and the
/// explorer use (SDEdit starts, forks, pins).
@Suite("Recipe: token loss, source prior, sampler starts and pins")
struct RecipeTests {
    /// The tiny fixture model with `sourcePrior` set as asked (same weights).
    func tinyModel(sourcePrior: Bool) throws -> TransformerNetModel {
        let src = try loadTinyModel()
        var c = src.config
        c.sourcePrior = sourcePrior
        c.sourcePriorTraining = sourcePrior
        let m = try TransformerNetModel(config: c)
        m.params.ptr.update(from: src.params.ptr, count: m.layout.totalCount)
        return m
    }

    @Test("finite differences: token loss (weight, label smoothing) with each loss mask, with and without the source prior",
          arguments: [(LossVariant.official, false), (.targetOnly, true), (.targetNoPad, true), (.targetNoPad, false)])
    func tokenLossGradient(variant: LossVariant, prior: Bool) throws {
        let m = try tinyModel(sourcePrior: prior)
        let g = try Golden("golden.safetensors")
        let loss = DiffusionLoss(model: m, schedule: try NoiseSchedule(named: "sqrt", steps: 50), variant: variant)
        loss.tokenWeight = 0.7; loss.labelSmoothing = 0.1; loss.padID = 0
        let acts = Activations(config: m.config, B: 2, T: 16, keepLayerCaches: true, dropout: false)
        let ids = g.i64("batch.input_ids"), mask = g.i64("batch.input_mask")
        #expect(ids.contains(0), "the fixture batch has PAD positions (target-no-pad must differ)")
        let n1 = g.f32("loss.noise_xstart"), n2 = g.f32("loss.noise_q")
        let weights: [Float] = [1.3, 0.6]
        let t = [12, 41]
        func run(_ grads: FloatBuffer?, _ objective: LossObjective = .all) -> (Double, LossTerms) {
            let terms = n1.withUnsafeBufferPointer { a in
                n2.withUnsafeBufferPointer { b in
                    loss.compute(ids: ids, mask: mask, t: t, noiseXStart: a.baseAddress!, noiseQ: b.baseAddress!,
                                 weights: weights, acts: acts, grads: grads, objective: objective, dropout: nil, computeNLL: true)
                }
            }
            return (zip(terms.loss, weights).map { Double($0) * Double($1) }.reduce(0, +) / 2, terms)
        }
        // The token term alone: its gradient must be nonzero and match finite differences of the weighted token loss.
        let tokenOnly = FloatBuffer(count: m.layout.totalCount)
        let (_, terms) = run(tokenOnly, .token)
        #expect(terms.token.count == 2 && terms.token.allSatisfy { $0 > 0 })
        for b in 0..<2 {
            #expect(abs(terms.loss[b] - (terms.mse[b] + terms.decoderNLL[b] + terms.tT[b] + 0.7 * terms.token[b])) < 1e-5)
        }
        func tokenObjective() -> Double {
            let (_, tt) = run(nil)
            return zip(tt.token, weights).map { 0.7 * Double($0) * Double($1) }.reduce(0, +) / 2
        }
        var checked = 0
        for e in m.layout.entries {
            if FiniteDifferenceTests.directional("token \(variant) prior \(prior) \(e.key)", grad: tokenOnly.array(e.range),
                                                x: m.params.ptr + e.offset, targetChange: 2e-3, noise: 2e-6, tokenObjective) {
                checked += 1
            }
        }
        #expect(checked >= 30, "only \(checked) tensors checkable for the token loss")
        // The whole objective (MSE on the mask, decoder_nll, tT and the token loss).
        let grads = FloatBuffer(count: m.layout.totalCount)
        _ = run(grads)
        checked = 0
        for e in m.layout.entries {
            if FiniteDifferenceTests.directional("all \(variant) prior \(prior) \(e.key)", grad: grads.array(e.range),
                                                x: m.params.ptr + e.offset, targetChange: 2e-3, noise: 2e-6, { run(nil).0 }) {
                checked += 1
            }
        }
        #expect(checked >= 40, "only \(checked) tensors checkable")
    }

    @Test("loss masks: target-no-pad averages the MSE over non-PAD target positions; the source prior changes x_t of target rows only")
    func masksAndPrior() throws {
        let g = try Golden("golden.safetensors")
        let ids = g.i64("batch.input_ids"), mask = g.i64("batch.input_mask")
        let n1 = g.f32("loss.noise_xstart"), n2 = g.f32("loss.noise_q")
        func terms(_ v: LossVariant, prior: Bool) throws -> (LossTerms, [Float]) {
            let m = try tinyModel(sourcePrior: prior)
            let acts = Activations(config: m.config, B: 2, T: 16, keepLayerCaches: false, dropout: false)
            let loss = DiffusionLoss(model: m, schedule: try NoiseSchedule(named: "sqrt", steps: 50), variant: v)
            let t = n1.withUnsafeBufferPointer { a in n2.withUnsafeBufferPointer { b in
                loss.compute(ids: ids, mask: mask, t: [5, 37], noiseXStart: a.baseAddress!, noiseQ: b.baseAddress!,
                             weights: [1, 1], acts: acts, grads: nil, dropout: nil, computeNLL: false) } }
            return (t, acts.out.array)
        }
        let (noPad, out) = try terms(.targetNoPad, prior: false)
        let (withPad, _) = try terms(.targetOnly, prior: false)
        let m = try loadTinyModel()
        let E = m.tensor("word_embedding.weight")!, std0 = Float(try NoiseSchedule(named: "sqrt", steps: 50).sqrtOneMinusAlphasCumprod[0])
        for b in 0..<2 {
            var sum: Float = 0, count = 0
            for p in 0..<16 where mask[b * 16 + p] == 1 && ids[b * 16 + p] != 0 {
                count += 1
                for j in 0..<16 {
                    let i = (b * 16 + p) * 16 + j
                    let xs = E[ids[b * 16 + p] * 16 + j] + std0 * n1[i]
                    sum += (xs - out[i]) * (xs - out[i])
                }
            }
            #expect(abs(noPad.mse[b] - sum / Float(count * 16)) < 1e-5)
            #expect(abs(noPad.mse[b] - withPad.mse[b]) > 1e-5)
        }
        let (official, _) = try terms(.official, prior: false)
        let (prior, _) = try terms(.official, prior: true)
        #expect(official.mse != prior.mse, "the prior changes x_t, so the prediction")
        // The copy: [CLS] src [SEP] laid into the target region, then PAD.
        let row = Array(ids[0..<16]), rmask = Array(mask[0..<16])
        let s = SequenceBuilder.sourceLength(mask: rmask)
        for (p, id) in SourceCopy.tokens(ids: row, mask: rmask, padID: 0) {
            if p < s { #expect(id == -1) } else if p - s < s - 1 { #expect(id == row[p - s]) } else { #expect(id == 0) }
        }
    }

    func sampler(prior: Bool = false) throws -> (DiffusionSampler, [Int], [Int]) {
        let g = try Golden("golden.safetensors")
        return (try DiffusionSampler(model: try tinyModel(sourcePrior: prior), engine: .blas),
                g.i64("batch.input_ids"), g.i64("batch.input_mask"))
    }

    @Test("a fork with no pins reproduces the original frames bit for bit, from any step, every sampler",
          arguments: [SamplerKind.ddpm, .ddim, .dpmSolver, .ddimOfficial], [false, true])
    func forkReproduces(kind: SamplerKind, prior: Bool) throws {
        let (s, ids, mask) = try sampler(prior: prior)
        var o = SamplerOptions(kind: kind, steps: 10, decodeEveryStep: true)
        o.topP = kind == .ddpm ? 1.5 : -1  // redraws must be replayed too
        try expectForksReproduce(s, ids: ids, mask: mask, options: o, "\(kind) prior \(prior)")
    }

    @Test("a fork of an SDEdit run (no pins) reproduces it bit for bit from its first step on, every sampler",
          arguments: [SamplerKind.ddpm, .ddim, .dpmSolver, .ddimOfficial])
    func forkOfAnSDEditRun(kind: SamplerKind) throws {
        let (s, ids, mask) = try sampler()
        var o = SamplerOptions(kind: kind, steps: 10, decodeEveryStep: true)
        o.startFraction = 0.5
        #expect(SamplerOptions.sdeditFirstStep(fraction: 0.5, steps: 10) == 5)
        var frames: [DiffusionFrame] = []
        let full = try s.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o, onFrame: { frames.append($0) })
        #expect(frames.map(\.index) == Array(5..<10))
        // Forks address steps by frame index (5…9), not by position in the frames (0…4).
        for k in [5, 7] {
            let at = k - 5
            var forked: [DiffusionFrame] = []
            let f = try s.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o,
                              start: SamplerStart(step: k, xt: frames[at].xt, previous: at > 0 ? frames[at - 1] : nil),
                              onFrame: { forked.append($0) })
            #expect(forked.map(\.index) == Array(k..<10))
            #expect(f.sample == full.sample && f.tokens == full.tokens, "\(kind) fork at \(k)")
            for (a, b) in zip(forked, frames[at...]) {
                #expect(a.xt == b.xt && a.x0 == b.x0 && a.rounded == b.rounded && a.decoded == b.decoded, "\(kind) fork at \(k) step \(a.index)")
            }
        }
    }

    @Test("pins hold a position at its token's embedding from the fork's step on; the fork differs from the original")
    func pins() throws {
        let (s, ids, mask) = try sampler()
        let o = SamplerOptions(kind: .ddpm, steps: 10, decodeEveryStep: true)
        var frames: [DiffusionFrame] = []
        let full = try s.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o, onFrame: { frames.append($0) })
        let row = 16 + 12, token = 42, D = 16
        var forked: [DiffusionFrame] = []
        let f = try s.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o,
                          start: SamplerStart(step: 3, xt: frames[3].xt), pins: [row: token], onFrame: { forked.append($0) })
        let e = s.embed([token])
        for fr in forked { #expect(Array(fr.xt[(row * D)..<((row + 1) * D)]) == e) }
        #expect(Array(f.sample[(row * D)..<((row + 1) * D)]) == e)
        #expect(f.sample != full.sample)
        #expect(throws: EngineError.self) {
            try s.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o, pins: [999: 1])
        }
        #expect(throws: EngineError.self) {
            try s.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o, start: SamplerStart(step: 10, xt: frames[0].xt))
        }
    }

    @Test("SDEdit start: frames cover the last F of the steps, the start is the noised source copy, runs are deterministic")
    func sdedit() throws {
        for prior in [false, true] {
            let (s, ids, mask) = try sampler(prior: prior)
            var o = SamplerOptions(kind: .ddpm, steps: 10, decodeEveryStep: true)
            o.startFraction = 0.3
            var a: [DiffusionFrame] = [], b: [DiffusionFrame] = []
            let ra = try s.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o, onFrame: { a.append($0) })
            let rb = try s.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o, onFrame: { b.append($0) })
            #expect(a.map(\.index) == [7, 8, 9])
            #expect(ra.sample == rb.sample && zip(a, b).allSatisfy { $0.xt == $1.xt })
            // The first state is the copy noised to that step's level with the run's first draw (centred on m with the prior).
            var z = [Float](repeating: 0, count: 2 * 16 * 16)
            var r = [SeededRandom(seed: 5), SeededRandom(seed: 6)]
            z.withUnsafeMutableBufferPointer { p in r[0].fillNormal(p.baseAddress!, 256); r[1].fillNormal(p.baseAddress! + 256, 256) }
            let copy = SourceCopy.embeddings(ids: ids, mask: mask, batch: 2, table: s.index.table.ptr, dim: 16, padID: 0)
            let (process, indices) = try s.plan(o)
            let ab = process.alphasCumprod[indices[7]]
            let sa = Float(ab.squareRoot()), so = Float((1 - ab).squareRoot())
            for j in 0..<(2 * 16 * 16) where mask[j / 16] == 1 {
                let m: Float = prior ? copy[j] : 0
                #expect(a[0].xt[j] == m + sa * (copy[j] - m) + so * z[j])
            }
            o.startFraction = 0
            #expect(throws: EngineError.self) { try s.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o) }
        }
    }

    @Test("the source prior: x_T is centred on the copy, runs are deterministic and differ from the official process")
    func priorRuns() throws {
        let (s, ids, mask) = try sampler(prior: true)
        let (s0, _, _) = try sampler(prior: false)
        for kind in [SamplerKind.ddpm, .ddim, .dpmSolver] {
            let o = SamplerOptions(kind: kind, steps: 8)
            let a = try s.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o)
            let b = try s.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o)
            let c = try s0.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o)
            #expect(a.sample == b.sample)
            #expect(a.sample != c.sample)
            // The sampler option overrides the model's source_prior both ways (the zero-training variant).
            var on = o; on.sourcePrior = true
            var off = o; off.sourcePrior = false
            #expect(try s0.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: on).sample == a.sample)
            #expect(try s.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: off).sample == c.sample)
        }
        var first: [Float] = []
        _ = try s.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: SamplerOptions(kind: .ddpm, steps: 4),
                      onFrame: { if first.isEmpty { first = $0.xt } })
        var z = [Float](repeating: 0, count: 2 * 16 * 16)
        var r = [SeededRandom(seed: 5), SeededRandom(seed: 6)]
        z.withUnsafeMutableBufferPointer { p in r[0].fillNormal(p.baseAddress!, 256); r[1].fillNormal(p.baseAddress! + 256, 256) }
        let copy = SourceCopy.embeddings(ids: ids, mask: mask, batch: 2, table: s.index.table.ptr, dim: 16, padID: 0)
        for j in 0..<(2 * 16 * 16) where mask[j / 16] == 1 { #expect(first[j] == z[j] + copy[j]) }
    }

    @Test("noise floor: t_min is the first t whose noise-to-signal ratio reaches F·d̄/2; no t below it is drawn; uniform weights stay 1")
    func noiseFloor() throws {
        let model = try loadTinyModel()
        var o = TrainingOptions()
        o.batchSize = 2; o.microbatch = 2; o.steps = 10; o.scheduleSampler = .uniform; o.noiseFloor = 1; o.noiseFloorInterval = 3
        let trainer = try Trainer(model: model, examples: try OptimizerTests.goldenBatch(), options: o)
        // d̄ by brute force over the tied table.
        let c = model.config, V = c.vocabSize, D = c.hiddenDim, E = model.ptr(model.params, \.wordEmbedding)
        var sum = 0.0
        for a in 0..<V {
            var best = Double.infinity
            for b in 0..<V where b != a {
                var d = 0.0
                for j in 0..<D { let x = Double(E[a * D + j] - E[b * D + j]); d += x * x }
                best = min(best, d)
            }
            sum += best.squareRoot()
        }
        let dbar = sum / Double(V)
        #expect(abs(trainer.meanNearestNeighbourDistance() - dbar) < 1e-3 * dbar)
        let tmin = trainer.noiseFloorStep()
        let ab = trainer.schedule.alphasCumprod
        func ratio(_ t: Int) -> Double { ((1 - ab[t]) / ab[t]).squareRoot() }
        #expect(tmin > 0, "the tiny model's floor is above t = 0 (d̄ = \(dbar))")
        #expect(ratio(tmin) >= dbar / 2 * (1 - 1e-3))
        #expect(ratio(tmin - 1) < dbar / 2 * (1 + 1e-3))
        var sampler = TimestepSampler(kind: .uniform, steps: ab.count)
        sampler.floor = tmin
        var rng = SeededRandom(seed: 3)
        let (ts, ws) = sampler.sample(2_000, rng: &rng)
        #expect(ts.allSatisfy { $0 >= tmin } && Set(ts).count > (ab.count - tmin) / 2)
        #expect(ws.allSatisfy { abs($0 - 1) < 1e-5 })
        for _ in 0..<4 {
            let r = trainer.trainStep()
            #expect(r.noiseFloor > 0 && r.loss.isFinite)
        }
        // Off: the official sampler (floor nil, every t).
        var off = o; off.noiseFloor = 0
        let t0 = try Trainer(model: try loadTinyModel(), examples: try OptimizerTests.goldenBatch(), options: off)
        #expect(t0.noiseFloorStep() == 0 && t0.trainStep().noiseFloor == 0)
    }

    @Test("sampling-only source prior: the loss is the official one; training_args round-trips both keys")
    func samplingOnlyPrior() throws {
        let off = try tinyModel(sourcePrior: false)
        var c0 = off.config
        c0.sourcePrior = true; c0.sourcePriorTraining = false
        let sampleOnly = try TransformerNetModel(config: c0)
        sampleOnly.params.ptr.update(from: off.params.ptr, count: off.layout.totalCount)
        let g = try Golden("golden.safetensors")
        let ids = g.i64("batch.input_ids"), mask = g.i64("batch.input_mask")
        let n1 = g.f32("loss.noise_xstart"), n2 = g.f32("loss.noise_q")
        func loss(_ m: TransformerNetModel) -> [Float] {
            let l = DiffusionLoss(model: m, schedule: try! NoiseSchedule(named: "sqrt", steps: 50), variant: .official)
            let acts = Activations(config: m.config, B: 2, T: 16, keepLayerCaches: true, dropout: false)
            return n1.withUnsafeBufferPointer { a in n2.withUnsafeBufferPointer { b in
                l.compute(ids: ids, mask: mask, t: [12, 41], noiseXStart: a.baseAddress!, noiseQ: b.baseAddress!,
                          weights: [1, 1], acts: acts, grads: nil, dropout: nil, computeNLL: false).loss
            } }
        }
        #expect(loss(off) == loss(sampleOnly))
        let folder = URL(fileURLWithPath: "/")
        var args: [String: Any] = ["source_prior": true]
        var c = try ModelCheckpoint.config(args: args, folder: folder, lmHeadVocab: nil, file: "training_args.json")
        #expect(c.sourcePrior && c.sourcePriorTraining)
        args["source_prior_training"] = false
        c = try ModelCheckpoint.config(args: args, folder: folder, lmHeadVocab: nil, file: "training_args.json")
        #expect(c.sourcePrior && !c.sourcePriorTraining)
        args["source_prior_training"] = "no"
        #expect(throws: CheckpointError.self) { _ = try ModelCheckpoint.config(args: args, folder: folder, lmHeadVocab: nil, file: "training_args.json") }
    }
}
