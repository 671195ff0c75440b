import Foundation
import Testing
@testable import DiffuSeqCore

/// Self-conditioning (issue 13 item 2): `self_cond_proj` adds W_sc·x̂₀_prev + b_sc to x_t. Zero-initialised it changes
/// nothing (bit for bit, every backend and sampler); its gradients and the rest's match finite differences with a
/// first pass feeding the graded one; samplers feed each step's x̂₀ to the next and forks resume that state.
@Suite("Self-conditioning")
struct SelfConditionTests {
    /// The tiny fixture model's weights in a self-conditioned model (shared tensors copied by key); `projection`:
    /// W_sc, b_sc drawn at random (scaled so x̂₀_prev matters) instead of left at zero.
    static func selfConditioned(_ src: TransformerNetModel, projection: Bool, sourcePrior: Bool = false,
                                dropout: Float? = nil) throws -> TransformerNetModel {
        var c = src.config
        c.selfCondition = true
        c.sourcePrior = sourcePrior; c.sourcePriorTraining = sourcePrior
        if let dropout { c.dropout = dropout }
        let m = try TransformerNetModel(config: c)
        for e in src.layout.entries {
            let to = try #require(m.layout.entry(e.key))
            #expect(to.offset == e.offset, "\(e.key) keeps its offset")
            (m.params.ptr + to.offset).update(from: src.params.ptr + e.offset, count: e.count)
        }
        if projection, let sc = m.weights.selfCondition {
            var rng = SeededRandom(seed: 77)
            rng.fillNormal(sc.weight.ptr(m.params), sc.weight.count)
            for i in 0..<sc.weight.count { sc.weight.ptr(m.params)[i] *= 0.4 }
            rng.fillNormal(sc.bias.ptr(m.params), sc.bias.count)
            for i in 0..<sc.bias.count { sc.bias.ptr(m.params)[i] *= 0.1 }
        }
        return m
    }

    /// The tiny model without self-conditioning (with the source prior or dropout as asked).
    static func plain(sourcePrior: Bool = false, dropout: Float? = nil) throws -> TransformerNetModel {
        let src = try loadTinyModel()
        var c = src.config
        c.sourcePrior = sourcePrior; c.sourcePriorTraining = sourcePrior
        if let dropout { c.dropout = dropout }
        let m = try TransformerNetModel(config: c)
        m.params.ptr.update(from: src.params.ptr, count: m.layout.totalCount)
        return m
    }

    /// A self-conditioned tiny model with a random projection, and the fixture batch's ids and mask.
    static func fixture(sourcePrior: Bool) throws -> (TransformerNetModel, [Int], [Int]) {
        let g = try Golden("golden.safetensors")
        return (try selfConditioned(try loadTinyModel(), projection: true, sourcePrior: sourcePrior),
                g.i64("batch.input_ids"), g.i64("batch.input_mask"))
    }

    static func random(_ n: Int, seed: UInt64) -> [Float] {
        var rng = SeededRandom(seed: seed)
        var x = [Float](repeating: 0, count: n)
        x.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, n) }
        return x
    }

    // MARK: Layout and checkpoints

    @Test("layout: self_cond_proj (D × D, D) comes last, zero-initialised; every other tensor keeps its offset")
    func layout() throws {
        var c = tinyConfig
        let plain = ParameterLayout(c)
        c.selfCondition = true
        let sc = ParameterLayout(c)
        #expect(Array(sc.entries.prefix(plain.entries.count)) == plain.entries)
        #expect(sc.entries.suffix(2).map(\.key) == ["self_cond_proj.weight", "self_cond_proj.bias"])
        #expect(sc.entries.suffix(2).map(\.shape) == [[16, 16], [16]])
        #expect(sc.parameters.all == sc.entries.map(\.id) && plain.parameters.selfCondition == nil)
        let m = try TransformerNetModel(config: c)
        m.initialise(seed: 3)
        let p = try TransformerNetModel(config: tinyConfig)
        p.initialise(seed: 3)
        #expect(m.params.array(0..<plain.totalCount) == p.params.array, "the zero initialisation draws nothing")
        #expect(m.tensor("self_cond_proj.weight")!.allSatisfy { $0 == 0 } && m.tensor("self_cond_proj.bias")!.allSatisfy { $0 == 0 })
    }

    @Test("checkpoints: save → load round trip of self_cond_proj; the flag without the keys names them; keys without the flag are unused")
    func checkpoints() throws {
        let plain = try loadTinyModel()
        let sc = try Self.selfConditioned(plain, projection: true)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sc-ckpt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("model.safetensors")
        try SafeTensors.write(try ModelCheckpoint.stateDict(sc, buffer: sc.params, metadata: [:]), to: file)
        let args = ModelCheckpoint.trainingArgs(sc.config, extra: [:])
        #expect(args["self_condition"] as? Bool == true)
        #expect(ModelCheckpoint.trainingArgs(plain.config, extra: [:])["self_condition"] == nil, "absent for other models")
        var bert = ModelCheckpoint.bertConfig(sc.config)
        bert["vocab_size"] = sc.config.vocabSize
        try ModelCheckpoint.writeJSON(bert, to: dir.appendingPathComponent("bert_config.json"))
        let config = try ModelCheckpoint.config(args: args, folder: dir, lmHeadVocab: nil, file: "training_args.json")
        #expect(config == sc.config)
        let loaded = try TransformerNetModel(config: config)
        try ModelCheckpoint.fill(loaded, from: try SafeTensors.read(file), file: file)
        #expect(loaded.params.array == sc.params.array)
        // The flag without the keys: an error naming the key and the flag.
        let plainFile = dir.appendingPathComponent("plain.safetensors")
        try SafeTensors.write(try ModelCheckpoint.stateDict(plain, buffer: plain.params, metadata: [:]), to: plainFile)
        let err = #expect(throws: CheckpointError.self) {
            try ModelCheckpoint.fill(try TransformerNetModel(config: config), from: try SafeTensors.read(plainFile), file: plainFile)
        }
        let text = err.map { "\($0)" } ?? ""
        #expect(text.contains("self_cond_proj.weight [16, 16]") && text.contains("self_cond_proj.bias [16]")
                && text.contains("self_condition: true"), "\(text)")
        // The keys without the flag: loaded as the plain model, the keys reported unused.
        let other = try TransformerNetModel(config: plain.config)
        let notes = try ModelCheckpoint.fill(other, from: try SafeTensors.read(file), file: file)
        #expect(other.params.array == plain.params.array)
        #expect(notes.contains { $0.contains("self_cond_proj.weight") }, "\(notes)")
        #expect(throws: CheckpointError.self) {
            _ = try ModelCheckpoint.config(args: ["self_condition": "yes"], folder: dir, lmHeadVocab: nil, file: "training_args.json")
        }
    }

    // MARK: Zero projection = the model without it

    @Test("zero self_cond_proj: the network on every backend equals the model without it, bit for bit, whatever x̂₀_prev")
    func zeroProjectionNetwork() throws {
        let plain = try loadTinyModel()
        let sc = try Self.selfConditioned(plain, projection: false)
        let c = plain.config, B = 2, T = c.seqLen, n = B * T * c.hiddenDim
        let x = Self.random(n, seed: 1), prev = Self.random(n, seed: 2)
        let backends: [(String, (TransformerNetModel) throws -> PreparedWeights)] = [
            ("OpenBLAS", { $0.referenceWeights }),
            ("OpenBLAS fused QKV", { PreparedWeights(model: $0, mm: OpenBLASMatMul.shared, fuseQKV: true) }),
            ("packed", { PackedModel(model: $0).weights }),
            ("oneDNN fp32", { PreparedWeights(model: $0, mm: try matMul(.onednn)) }),
            ("oneDNN bf16", { PreparedWeights(model: $0, mm: try matMul(.onednn, bf16: true)) }),
        ]
        for (name, prepare) in backends {
            let a = Activations(config: c, B: B, T: T, keepLayerCaches: false, dropout: false)
            let b = Activations(config: sc.config, B: B, T: T, keepLayerCaches: false, dropout: false)
            let want = Array(UnsafeBufferPointer(start: plain.forward(x: x, tModel: [3, 700], acts: a, dropout: nil,
                                                                      weights: try prepare(plain)), count: n))
            let weights = try prepare(sc)
            for p in [[], prev] {
                let got = p.withUnsafeBufferPointer { pp in
                    Array(UnsafeBufferPointer(start: sc.forward(x: x, tModel: [3, 700], acts: b, dropout: nil, weights: weights,
                                                                previousX0: p.isEmpty ? nil : pp.baseAddress), count: n))
                }
                let same = got == want
                #expect(same, "\(name), x̂₀_prev \(p.isEmpty ? "none" : "random")")
            }
        }
    }

    @Test("zero self_cond_proj: the loss with a first pass, its gradients and every sampler equal the model without it, bit for bit")
    func zeroProjectionLossAndSamplers() throws {
        let plain = try loadTinyModel()
        let sc = try Self.selfConditioned(plain, projection: false)
        let g = try Golden("golden.safetensors")
        let ids = g.i64("batch.input_ids"), mask = g.i64("batch.input_mask")
        let n1 = g.f32("loss.noise_xstart"), n2 = g.f32("loss.noise_q")
        func run(_ m: TransformerNetModel, _ rows: [Bool]) throws -> (LossTerms, FloatBuffer) {
            let loss = DiffusionLoss(model: m, schedule: try NoiseSchedule(named: "sqrt", steps: 50), variant: .official)
            loss.tokenWeight = 0.3
            let acts = Activations(config: m.config, B: 2, T: 16, keepLayerCaches: true, dropout: false)
            let grads = FloatBuffer(count: m.layout.totalCount)
            let terms = n1.withUnsafeBufferPointer { a in n2.withUnsafeBufferPointer { b in
                loss.compute(ids: ids, mask: mask, t: [12, 41], noiseXStart: a.baseAddress!, noiseQ: b.baseAddress!,
                             weights: [1.3, 0.6], acts: acts, grads: grads, dropout: nil, selfCondition: rows) } }
            return (terms, grads)
        }
        let (want, wantGrads) = try run(plain, [])
        let (got, gotGrads) = try run(sc, [true, false])
        #expect(got == want)
        let changed = plain.layout.entries.filter { gotGrads.array($0.range) != wantGrads.array($0.range) }.map(\.key)
        #expect(changed.isEmpty, "gradients that differ: \(changed)")
        #expect(gotGrads.array(sc.layout.entry("self_cond_proj.bias")!.range).contains { $0 != 0 }, "b_sc has a gradient")
        let (ps, ss) = (try DiffusionSampler(model: plain, engine: .blas), try DiffusionSampler(model: sc, engine: .blas))
        for kind in SamplerKind.allCases {
            let o = SamplerOptions(kind: kind, steps: 6, decodeEveryStep: true)
            var fa: [DiffusionFrame] = [], fb: [DiffusionFrame] = []
            let a = try ps.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o, onFrame: { fa.append($0) })
            let b = try ss.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o, onFrame: { fb.append($0) })
            let same = a.sample == b.sample && a.tokens == b.tokens && fa.map(\.x0) == fb.map(\.x0) && fa.map(\.xt) == fb.map(\.xt)
            #expect(same, "\(kind)")
        }
    }

    // MARK: Gradients

    @Test("finite differences: the network with self-conditioning (W_sc, b_sc, every other tensor, dx) at a fixed x̂₀_prev")
    func networkGradient() throws {
        let m = try Self.selfConditioned(try loadTinyModel(), projection: true)
        let c = m.config, B = 2, T = c.seqLen, D = c.hiddenDim
        var rng = SeededRandom(seed: 15)
        let x = FiniteDifferenceTests.randomBuffer(B * T * D, &rng), prev = FiniteDifferenceTests.randomBuffer(B * T * D, &rng)
        let dout = FiniteDifferenceTests.randomBuffer(B * T * D, &rng)
        let acts = Activations(config: c, B: B, T: T, keepLayerCaches: true, dropout: false)
        func f() -> Double {
            FiniteDifferenceTests.dot(m.forward(x: x.ptr, tModel: [140, 760], acts: acts, dropout: nil, previousX0: prev.ptr), dout)
        }
        _ = f()
        let grads = FloatBuffer(count: m.layout.totalCount), dx = FloatBuffer(count: B * T * D)
        m.backward(dout: dout.ptr, x: x.ptr, acts: acts, grads: grads, dx: dx.ptr)
        try FiniteDifferenceTests.checkNetwork(m, keys: ["self_cond_proj.weight", "self_cond_proj.bias", "input_up_proj.0.weight",
                                                        "time_embed.0.weight"], coordinates: 4, grads: grads, x: x, dx: dx, &rng, f)
        // x̂₀_prev is a constant: the gradient wrt W_sc is dx_inᵀ·x̂₀_prev, so it vanishes with x̂₀_prev.
        prev.zero()
        _ = f()
        grads.zero()
        m.backward(dout: dout.ptr, x: x.ptr, acts: acts, grads: grads, dx: dx.ptr)
        #expect(grads.array(m.layout.entry("self_cond_proj.weight")!.range).allSatisfy { $0 == 0 })
    }

    @Test("finite differences: the training loss with a first pass (stop-gradient x̂₀) composes with the loss mask, token loss and source prior",
          arguments: [(LossVariant.official, false, Float(0)), (.targetNoPad, true, 0.7), (.targetOnly, false, 0.2)])
    func lossGradient(variant: LossVariant, prior: Bool, tokenWeight: Float) throws {
        let m = try Self.selfConditioned(try loadTinyModel(), projection: true, sourcePrior: prior)
        let g = try Golden("golden.safetensors")
        let loss = DiffusionLoss(model: m, schedule: try NoiseSchedule(named: "sqrt", steps: 50), variant: variant)
        loss.tokenWeight = tokenWeight; loss.labelSmoothing = 0.1
        let acts = Activations(config: m.config, B: 2, T: 16, keepLayerCaches: true, dropout: false)
        let ids = g.i64("batch.input_ids"), mask = g.i64("batch.input_mask")
        let n1 = g.f32("loss.noise_xstart"), n2 = g.f32("loss.noise_q")
        let weights: [Float] = [1.3, 0.6], per = 16 * 16
        func run(_ grads: FloatBuffer?, rows: [Bool] = [], previous: [Float]? = nil) -> (Double, LossTerms) {
            let terms = n1.withUnsafeBufferPointer { a in n2.withUnsafeBufferPointer { b in
                (previous ?? []).withUnsafeBufferPointer { p in
                    loss.compute(ids: ids, mask: mask, t: [12, 41], noiseXStart: a.baseAddress!, noiseQ: b.baseAddress!, weights: weights,
                                 acts: acts, grads: grads, dropout: nil, computeNLL: true, selfCondition: rows,
                                 previousX0: previous == nil ? nil : p.baseAddress)
                } } }
            return (zip(terms.loss, weights).map { Double($0) * Double($1) }.reduce(0, +) / 2, terms)
        }
        // Example 0 takes the first pass's x̂₀, example 1 zeros.
        let grads = FloatBuffer(count: m.layout.totalCount)
        let (value, terms) = run(grads, rows: [true, false])
        let estimate = acts.selfCondPrevious.array
        #expect(estimate[0..<per].contains { $0 != 0 } && estimate[per...].allSatisfy { $0 == 0 })
        // The estimate is the prediction for that example alone with x̂₀_prev = 0 (its batch of one, in eval mode).
        _ = run(nil, rows: [true, true])
        let both = acts.selfCondPrevious.array
        #expect(maxAbsDiff(Array(both[0..<per]), Array(estimate[0..<per])).0 <= 1e-6)
        // The same x̂₀_prev given directly gives the same loss (the first pass computes nothing else).
        #expect(run(nil, previous: estimate).1 == terms)
        #expect(value.isFinite)
        // Finite differences with x̂₀_prev held fixed: the analytic gradient is the stop-gradient one.
        var checked = 0
        for e in m.layout.entries {
            if FiniteDifferenceTests.directional("sc \(variant) prior \(prior) \(e.key)", grad: grads.array(e.range),
                                                 x: m.params.ptr + e.offset, targetChange: 2e-3, noise: 2e-6, { run(nil, previous: estimate).0 }) {
                checked += 1
            }
        }
        #expect(checked >= 40, "only \(checked) of \(m.layout.entries.count) tensors checkable")
        for key in ["self_cond_proj.weight", "self_cond_proj.bias"] {
            let e = try #require(m.layout.entry(key))
            #expect(FiniteDifferenceTests.directional("sc \(key)", grad: grads.array(e.range), x: m.params.ptr + e.offset,
                                                      targetChange: 2e-3, noise: 2e-6, { run(nil, previous: estimate).0 }),
                    "\(key) has a gradient large enough to check")
        }
        // Letting the estimate follow θ (no stop-gradient) would change the objective's slope: the check above can fail.
        let e = try #require(m.layout.entry("input_up_proj.0.weight"))
        let gUp = grads.array(e.range)
        let follow = FiniteDifferenceTests.centralDirectional(gUp, x: m.params.ptr + e.offset, eps: 2e-3) { run(nil, rows: [true, false]).0 }
        let fixed = FiniteDifferenceTests.centralDirectional(gUp, x: m.params.ptr + e.offset, eps: 2e-3) { run(nil, previous: estimate).0 }
        #expect(abs(follow - fixed) > 1e-3 * abs(fixed), "the first pass depends on θ (follow \(follow), fixed \(fixed))")
    }

    // MARK: Training

    @Test("a training step with dropout: zero self_cond_proj leaves the loss and every shared parameter's update bit-identical; coins per example")
    func trainerStep() throws {
        var o = TrainingOptions()
        o.batchSize = 2; o.microbatch = 2; o.steps = 10; o.seed = 9
        let plain = try Self.plain(dropout: 0.1)
        let sc = try Self.selfConditioned(plain, projection: false, dropout: 0.1)
        let a = try Trainer(model: plain, examples: try OptimizerTests.goldenBatch(), options: o)
        let b = try Trainer(model: sc, examples: try OptimizerTests.goldenBatch(), options: o)
        let ra = a.trainStep(), rb = b.trainStep()
        #expect(ra.loss == rb.loss && ra.mse == rb.mse)
        let same = sc.params.array(0..<plain.layout.totalCount) == plain.params.array
        #expect(same, "every shared parameter's update")
        #expect(b.grads.array(sc.layout.entry("self_cond_proj.bias")!.range).contains { $0 != 0 })
        // P = 0 and P = 1 with a projection: different first passes, so different losses; each is deterministic.
        func losses(_ p: Double) throws -> [Double] {
            var q = o
            q.selfConditionProb = p
            let t = try Trainer(model: try Self.selfConditioned(plain, projection: true, dropout: 0.1), examples: try OptimizerTests.goldenBatch(),
                                options: q)
            return (0..<3).map { _ in t.trainStep().loss }
        }
        let never = try losses(0), always = try losses(1)
        let (never2, always2) = (try losses(0), try losses(1))
        #expect(never == never2 && always == always2)
        #expect(never[0] != always[0])
        #expect(throws: EngineError.self) { var q = o; q.selfConditionProb = 1.5; try q.validate() }
    }

    @Test("bf16 mixed-precision training with self-conditioning: the gradients track fp32's")
    func bf16Training() throws {
        _ = try matMul(.onednn, bf16: true)
        var o = TrainingOptions()
        o.batchSize = 2; o.microbatch = 2; o.steps = 10; o.seed = 9; o.selfConditionProb = 1
        var grads: [[Float]] = []
        for bf16 in [false, true] {
            let m = try Self.selfConditioned(try Self.plain(dropout: 0.1), projection: true, dropout: 0.1)
            let t = try Trainer(model: m, examples: try OptimizerTests.goldenBatch(), options: o,
                                context: ComputeContext(precision: bf16 ? .bf16 : .fp32, threads: 2))
            try #require(t.matMul.precision == (bf16 ? .bf16 : .fp32))
            #expect(t.trainStep().loss.isFinite)
            grads.append(t.grads.array)
        }
        var c = tinyConfig
        c.selfCondition = true
        let sc = ParameterLayout(c)
        for key in ["self_cond_proj.weight", "self_cond_proj.bias", "input_up_proj.0.weight"] {
            let r = sc.entry(key)!.range
            let e = relativeError(Array(grads[1][r]), Array(grads[0][r]))
            #expect(e <= 3e-2, "\(key): bf16 vs fp32 gradient relative error \(e)")
        }
    }

    // MARK: Sampling

    @Test("every sampler feeds the previous step's x̂₀ (zeros at the first step), with and without the source prior",
          arguments: [SamplerKind.ddpm, .ddim, .dpmSolver, .ddimOfficial], [false, true])
    func feedingRule(kind: SamplerKind, prior: Bool) throws {
        let (m, ids, mask) = try Self.fixture(sourcePrior: prior)
        let s = try DiffusionSampler(model: m, engine: .blas)
        var frames: [DiffusionFrame] = []
        _ = try s.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: SamplerOptions(kind: kind, steps: 6, decodeEveryStep: true),
                      onFrame: { frames.append($0) })
        let acts = Activations(config: m.config, B: 2, T: 16, keepLayerCaches: false, dropout: false)
        let scale = Float(1000.0 / 50.0)
        for (k, f) in frames.enumerated() {
            let prev = k == 0 ? [Float](repeating: 0, count: f.x0.count) : frames[k - 1].x0
            let out = f.xt.withUnsafeBufferPointer { x in prev.withUnsafeBufferPointer { p in
                Array(UnsafeBufferPointer(start: m.forward(x: x.baseAddress!, tModel: [Float(f.t) * scale, Float(f.t) * scale], acts: acts,
                                                           dropout: nil, weights: s.prepared, previousX0: p.baseAddress), count: f.x0.count))
            } }
            let same = out == f.x0
            #expect(same, "\(kind) step \(k)")
        }
        // The projection matters: with it zeroed every step's x̂₀ differs.
        let zeroed = try Self.selfConditioned(try loadTinyModel(), projection: false, sourcePrior: prior)
        var zeroFrames: [DiffusionFrame] = []
        _ = try DiffusionSampler(model: zeroed, engine: .blas).run(ids: ids, mask: mask, batch: 2, seeds: [3, 4],
                                                                   options: SamplerOptions(kind: kind, steps: 6, decodeEveryStep: true),
                                                                   onFrame: { zeroFrames.append($0) })
        let differs = zip(zeroFrames, frames).allSatisfy { $0.x0 != $1.x0 }
        #expect(differs)
    }

    @Test("forks resume self-conditioning bit for bit (every sampler, ± prior, full and SDEdit runs, both engines); without the previous frame they differ",
          arguments: [SamplerKind.ddpm, .ddim, .dpmSolver, .ddimOfficial], [false, true])
    func forks(kind: SamplerKind, prior: Bool) throws {
        let (m, ids, mask) = try Self.fixture(sourcePrior: prior)
        for engine in [SamplingEngine.blas, .packed] {
            let s = try DiffusionSampler(model: m, engine: engine)
            for fraction in [1.0, 0.5] {
                var o = SamplerOptions(kind: kind, steps: 10, decodeEveryStep: true)
                o.topP = kind == .ddpm ? 1.5 : -1
                o.startFraction = fraction
                var frames: [DiffusionFrame] = []
                let full = try s.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o, onFrame: { frames.append($0) })
                let first = frames[0].index
                for at in [1, 3, frames.count - 1] {
                    let k = first + at
                    var forked: [DiffusionFrame] = []
                    let f = try s.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o,
                                      start: SamplerStart(step: k, xt: frames[at].xt, previous: frames[at - 1]), onFrame: { forked.append($0) })
                    let same = f.sample == full.sample && f.tokens == full.tokens && forked.count == frames.count - at
                        && zip(forked, frames[at...]).allSatisfy { $0.xt == $1.xt && $0.x0 == $1.x0 && $0.decoded == $1.decoded }
                    #expect(same, "\(engine) \(kind) F \(fraction) fork at \(k)")
                }
                // One row of a batch-2 frame (the explorer's fork of one seed).
                var row: [DiffusionFrame] = []
                let one = try s.run(ids: Array(ids[16...]), mask: Array(mask[16...]), batch: 1, seeds: [4], options: o,
                                    start: SamplerStart(step: first + 2, xt: frames[2].row(1)!.xt, previous: frames[1].row(1)),
                                    onFrame: { row.append($0) })
                // Bit for bit on the packed engine; OpenBLAS's products of 16 and 32 rows differ in the last bits of x̂₀
                // (as without self-conditioning), which the rounding absorbs: the same sample, x̂₀ within 1e-6.
                let x0Gap = maxAbsDiff(row.first?.x0 ?? [], frames[2].row(1)?.x0 ?? []).0
                let sameRow = one.sample == Array(full.sample[(16 * 16)...]) && row.first?.index == first + 2
                    && x0Gap <= (engine == .packed ? 0 : 1e-6)
                #expect(sameRow, "\(engine) \(kind) F \(fraction): a fork of row 1 (x̂₀ gap \(x0Gap))")
                var cold: [DiffusionFrame] = []
                _ = try s.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o,
                              start: SamplerStart(step: first + 3, xt: frames[3].xt), onFrame: { cold.append($0) })
                let differs = cold.first.map { $0.x0 != frames[3].x0 } ?? false
                #expect(differs, "\(engine) \(kind) F \(fraction): without x̂₀_prev the fork's first x̂₀ is another")
            }
        }
    }
}

extension FiniteDifferenceTests {
    /// (f(θ + ε·g/|g|) − f(θ − ε·g/|g|)) / 2ε, θ restored afterwards.
    static func centralDirectional(_ g: [Float], x: UnsafeMutablePointer<Float>, eps: Double, _ f: () -> Double) -> Double {
        let norm = g.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        let old = Array(UnsafeBufferPointer(start: x, count: g.count))
        x.update(from: g.indices.map { Float(Double(old[$0]) + eps * Double(g[$0]) / norm) }, count: g.count)
        let up = f()
        x.update(from: g.indices.map { Float(Double(old[$0]) - eps * Double(g[$0]) / norm) }, count: g.count)
        let down = f()
        x.update(from: old, count: g.count)
        return (up - down) / (2 * eps)
    }
}
