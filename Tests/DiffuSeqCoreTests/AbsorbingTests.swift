import Foundation
import Testing
@testable import DiffuSeqCore

/// The fixture model's word-embedding dims and sequence length.
private let D = 16, T = 16

/// DiffuSeq-v2's soft absorbing state (issue 13 item 3, `SoftAbsorbing`): the learned m in the layout and the
/// checkpoints, the noising and token replacement of training with its gradients, and every sampler centred on m
/// (or as v2's code samples). The fixture suites (GradientTests, OptimizerTests, SamplerReferenceTests) run with the
/// option off and pin that path to the official code.
@Suite("Soft absorbing state: layout, loss, gradients, samplers, checkpoints")
struct AbsorbingTests {

    /// The tiny fixture model with the absorbing state (its fixture weights; m drawn by `initialise(seed: 9)`, or `m`).
    static func model(rate: Float = 0.5, reg: Float = 0.01, m: [Float]? = nil) throws -> TransformerNetModel {
        let src = try loadTinyModel()
        var c = src.config
        c.learnedMeanEmbed = true; c.denoiseRate = rate; c.regRate = reg
        let model = try TransformerNetModel(config: c)
        model.initialise(seed: 9)
        for e in src.layout.entries { (model.params.ptr + e.offset).update(from: src.params.ptr + e.offset, count: e.count) }
        if let m, let id = model.weights.meanEmbed { model.ptr(model.params, id).update(from: m, count: id.count) }
        return model
    }

    static func m(of model: TransformerNetModel) -> [Float] {
        guard let id = model.weights.meanEmbed else { return [] }
        return model.params.array(id.offset..<(id.offset + id.count))
    }

    // MARK: Layout and initialisation

    @Test("mean_embed is the last tensor, (D), N(0, 1/D); every other tensor keeps its offset and its initial values")
    func layout() throws {
        let off = ParameterLayout(tinyConfig)
        var c = tinyConfig
        c.learnedMeanEmbed = true
        let on = ParameterLayout(c)
        #expect(on.entries.last?.key == "mean_embed" && on.entries.last?.shape == [16])
        #expect(Array(on.entries.dropLast()) == off.entries)
        #expect(on.parameters.all == on.entries.map(\.id) && on.parameters.meanEmbed == on.entries.last?.id)
        #expect(off.parameters.meanEmbed == nil && off.entry("mean_embed") == nil)
        let a = try TransformerNetModel(config: tinyConfig), b = try TransformerNetModel(config: c)
        a.initialise(seed: 3); b.initialise(seed: 3)
        #expect(a.params.array == b.params.array(0..<a.params.count))
        // Statistically: a wide model's m has variance 1/D.
        let w = try TransformerNetModel(config: ModelConfig(vocabSize: 5, hiddenDim: 4096, hiddenTDim: 4, width: 8, layers: 0, heads: 1,
                                                             ffn: 8, maxPositions: 8, seqLen: 4, diffusionSteps: 4).with { $0.learnedMeanEmbed = true })
        w.initialise(seed: 1)
        let m = Self.m(of: w)
        let variance = m.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(m.count)
        #expect(abs(variance * 4096 - 1) < 0.1, "D·var(m) = \(variance * 4096)")
    }

    @Test("configuration: JSON keys only when on; v2's training_args keys; invalid combinations refused")
    func configuration() throws {
        let json = String(decoding: try JSONEncoder().encode(tinyConfig), as: UTF8.self)
        #expect(!json.contains("learned_mean_embed") && !json.contains("denoise_rate") && !json.contains("reg_rate"))
        var c = tinyConfig
        c.learnedMeanEmbed = true; c.denoiseRate = 0.5; c.regRate = 0.01
        let back = try JSONDecoder().decode(ModelConfig.self, from: try JSONEncoder().encode(c))
        #expect(back == c)
        let folder = URL(fileURLWithPath: "/")
        func parse(_ a: [String: Any]) throws -> ModelConfig {
            try ModelCheckpoint.config(args: a, folder: folder, lmHeadVocab: nil, file: "training_args.json")
        }
        // An official v2 run (its train.sh): learned_mean_embed and denoise true, denoise_rate 0.5, reg_rate not applied.
        let v2 = try parse(["learned_mean_embed": true, "denoise": true, "denoise_rate": 0.5, "reg_rate": 0.0])
        #expect(v2.learnedMeanEmbed && v2.denoiseRate == 0.5 && v2.regRate == 0)
        let defaults = try parse(["learned_mean_embed": true, "denoise": true])
        #expect(defaults.denoiseRate == 0.2 && defaults.regRate == 0.01)
        let noDenoise = try parse(["learned_mean_embed": true, "denoise": false, "denoise_rate": 0.5])
        #expect(noDenoise.learnedMeanEmbed && noDenoise.denoiseRate == 0)
        // v2 writes every key for every run: its official (off) runs are the official process.
        let official = try parse(["learned_mean_embed": false, "denoise": false, "denoise_rate": 0.2, "reg_rate": 0.01])
        #expect(!official.learnedMeanEmbed && official.denoiseRate == 0 && official.regRate == 0)
        #expect(throws: CheckpointError.self) { _ = try parse(["denoise": true]) }
        #expect(throws: CheckpointError.self) { _ = try parse(["learned_mean_embed": "yes"]) }
        #expect(throws: CheckpointError.self) { _ = try parse(["learned_mean_embed": true, "source_prior": true]) }
        // Round trip through training_args.json's keys.
        var args = ModelCheckpoint.trainingArgs(c, extra: [:])
        #expect(args["learned_mean_embed"] as? Bool == true && args["denoise"] as? Bool == true)
        args["config_name"] = "bert-base-uncased"
        let r = try parse(args)
        #expect(r.learnedMeanEmbed && r.denoiseRate == 0.5 && r.regRate == 0.01)
        #expect(ModelCheckpoint.trainingArgs(tinyConfig, extra: [:])["learned_mean_embed"] == nil)
        var bad = c
        bad.sourcePrior = true
        #expect(throws: EngineError.self) { try bad.validate() }
        bad = tinyConfig
        bad.denoiseRate = 0.5
        #expect(throws: EngineError.self) { try bad.validate() }
    }

    @Test("checkpoints: save → load round trip keeps m; a missing or unexpected mean_embed is an error naming the key")
    func checkpoints() throws {
        let model = try Self.model()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("absorb-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("model.safetensors")
        try SafeTensors.write(try ModelCheckpoint.stateDict(model, buffer: model.params, metadata: [:]), to: file)
        let archive = try SafeTensors.read(file)
        #expect(archive["mean_embed"]?.shape == [16])
        let back = try TransformerNetModel(config: model.config)
        try ModelCheckpoint.fill(back, from: archive, file: file)
        #expect(back.params.array == model.params.array)
        #expect(!Self.m(of: back).isEmpty && Self.m(of: back).allSatisfy { $0 != 0 })
        // Missing: the configuration asks for m, the weights lack it.
        let plain = try loadTinyModel()
        let plainFile = dir.appendingPathComponent("plain.safetensors")
        try SafeTensors.write(try ModelCheckpoint.stateDict(plain, buffer: plain.params, metadata: [:]), to: plainFile)
        func message(_ f: () throws -> Void) -> String {
            do { try f(); return "no error" } catch { return "\(error)" }
        }
        let e1 = message { try ModelCheckpoint.fill(back, from: try SafeTensors.read(plainFile), file: plainFile) }
        #expect(e1.contains("missing key mean_embed [16]") && e1.contains("learned_mean_embed: true"), "\(e1)")
        // Unexpected: the weights have m, the configuration does not say so.
        let e2 = message { try ModelCheckpoint.fill(plain, from: archive, file: file) }
        #expect(e2.contains("has mean_embed"), "\(e2)")
        // A whole folder (training_args.json beside the weights) loads with the state.
        var args = ModelCheckpoint.trainingArgs(model.config, extra: ["vocab": "vocab.txt", "tokenizer": "wordpiece"])
        args["config_name"] = "bert_config.json"
        try ModelCheckpoint.writeJSON(args, to: dir.appendingPathComponent("training_args.json"))
        try ModelCheckpoint.writeJSON(ModelCheckpoint.bertConfig(model.config), to: dir.appendingPathComponent("bert_config.json"))
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (5..<97).map { "w\($0)" }
        try (vocab.joined(separator: "\n") + "\n").write(to: dir.appendingPathComponent("vocab.txt"), atomically: true, encoding: .utf8)
        let loaded = try ModelCheckpoint.load(dir)
        #expect(loaded.model.config.learnedMeanEmbed && loaded.model.config.denoiseRate == 0.5)
        #expect(loaded.model.params.array == model.params.array && loaded.name.contains("soft absorbing"))
    }

    // MARK: Training

    /// The loss on the fixture batch at t = [12, 41], with the replacement uniforms `u` (B·T).
    static func loss(_ model: TransformerNetModel, variant: LossVariant = .official, token: Float = 0, u: [Float],
                     grads: FloatBuffer?, mm: (any MatMul)? = nil) throws -> (Double, LossTerms, Activations) {
        let g = try Golden("golden.safetensors")
        let loss = DiffusionLoss(model: model, schedule: try NoiseSchedule(named: "sqrt", steps: 50), variant: variant)
        loss.tokenWeight = token; loss.labelSmoothing = token > 0 ? 0.1 : 0; loss.padID = 0
        if let mm { loss.prepared = PreparedWeights(model: model, mm: mm, bf16Copies: false) }
        let acts = Activations(config: model.config, B: 2, T: T, keepLayerCaches: true, dropout: false, bf16Caches: mm?.precision == .bf16)
        let n1 = g.f32("loss.noise_xstart"), n2 = g.f32("loss.noise_q"), weights: [Float] = [1.3, 0.6]
        let terms = n1.withUnsafeBufferPointer { a in
            n2.withUnsafeBufferPointer { b in
                loss.compute(ids: g.i64("batch.input_ids"), mask: g.i64("batch.input_mask"), t: [12, 41], noiseXStart: a.baseAddress!,
                             noiseQ: b.baseAddress!, weights: weights, acts: acts, grads: grads, dropout: nil, computeNLL: true,
                             absorbDraws: u)
            }
        }
        return (zip(terms.loss, weights).map { Double($0) * Double($1) }.reduce(0, +) / 2, terms, acts)
    }

    /// Every third row drawn 0 (replaced where it is a target row), the others 0.999 (kept).
    static let someReplaced: [Float] = (0..<32).map { $0 % 3 == 0 ? 0 : 0.999 }

    @Test("noising vs brute force: target rows √ᾱ(x₀ − m) + √(1−ᾱ)ε + m or exactly m where replaced, source rows x₀")
    func noising() throws {
        let model = try Self.model()
        let (_, _, acts) = try Self.loss(model, u: Self.someReplaced, grads: nil)
        let g = try Golden("golden.safetensors")
        let ids = g.i64("batch.input_ids"), mask = g.i64("batch.input_mask")
        let n1 = g.f32("loss.noise_xstart"), n2 = g.f32("loss.noise_q")
        let s = try NoiseSchedule(named: "sqrt", steps: 50), m = Self.m(of: model), E = model.tensor("word_embedding.weight")!
        let std0 = Float(s.sqrtOneMinusAlphasCumprod[0])
        var xt = [Float](repeating: 0, count: 2 * T * D), replaced = 0
        for b in 0..<2 {
            let t = [12, 41][b]
            let sa = Float(s.sqrtAlphasCumprod[t]), so = Float(s.sqrtOneMinusAlphasCumprod[t])
            let p = 0.5 * so
            for q in 0..<T {
                let r = b * T + q
                let absorbed = mask[r] == 1 && Self.someReplaced[r] < p
                if absorbed { replaced += 1 }
                for j in 0..<D {
                    let i = r * D + j, x0 = E[ids[r] * D + j] + std0 * n1[i]
                    xt[i] = mask[r] == 0 ? x0 : absorbed ? m[j] : sa * (x0 - m[j]) + so * n2[i] + m[j]
                }
            }
        }
        #expect(replaced >= 4, "the draws replace some target rows (\(replaced))")
        // The network saw exactly that x_t: its output on the brute-force x_t is the same, bit for bit.
        let check = Activations(config: model.config, B: 2, T: T, keepLayerCaches: false, dropout: false)
        let out = xt.withUnsafeBufferPointer { model.forward(x: $0.baseAddress!, tModel: [12 * 20, 41 * 20], acts: check, dropout: nil) }
        #expect(Array(UnsafeBufferPointer(start: out, count: 2 * T * D)) == acts.out.array)
        // Without draws nothing is replaced (and with m = 0 the loss is the official one).
        let zero = try Self.model(m: [Float](repeating: 0, count: D))
        let (_, official, _) = try Self.loss(try loadTinyModel(), u: [], grads: nil)
        let (_, centredOnZero, _) = try Self.loss(zero, u: [], grads: nil)
        #expect(centredOnZero.mse == official.mse && centredOnZero.decoderNLL == official.decoderNLL && centredOnZero.tT == official.tT)
        #expect(zip(centredOnZero.loss, official.loss).allSatisfy { $0 == $1 }, "‖0‖ adds nothing")
    }

    @Test("replacement rate ≈ γ·√(1−ᾱ_t) on the target rows of the fixture batch, never on the source rows",
          arguments: [(Float(0.5), 12), (0.5, 41), (1.0, 30)])
    func replacementRate(gamma: Float, t: Int) throws {
        let g = try Golden("golden.safetensors")
        let mask = g.i64("batch.input_mask"), s = try NoiseSchedule(named: "sqrt", steps: 50)
        var rng = SeededRandom(seed: 11)
        let draws = 4_000
        var hits = 0, targets = 0
        for _ in 0..<draws {
            let u = (0..<32).map { _ in rng.uniform() }
            let r = SoftAbsorbing.replaced(mask: mask, t: [t, t], uniforms: u, rate: gamma, schedule: s)
            for q in 0..<32 {
                if mask[q] == 0 { #expect(!r[q]) } else { targets += 1; if r[q] { hits += 1 } }
            }
        }
        let p = Double(gamma) * s.sqrtOneMinusAlphasCumprod[t], rate = Double(hits) / Double(targets)
        let sigma = (p * (1 - p) / Double(targets)).squareRoot()
        #expect(abs(rate - p) < 5 * sigma, "rate \(rate) vs γ·√(1−ᾱ) = \(p) (σ \(sigma))")
    }

    @Test("finite differences: the loss gradient reaches m and every parameter, with replacement, token loss and loss masks",
          arguments: [(LossVariant.official, Float(0)), (.targetNoPad, 0.7), (.targetOnly, 0)])
    func gradient(variant: LossVariant, token: Float) throws {
        let model = try Self.model()
        let grads = FloatBuffer(count: model.layout.totalCount)
        _ = try Self.loss(model, variant: variant, token: token, u: Self.someReplaced, grads: grads)
        let id = try #require(model.weights.meanEmbed)
        let dm = grads.array(id.offset..<(id.offset + id.count))
        #expect(dm.contains { abs($0) > 1e-4 }, "m gets a gradient")
        var checked = 0, checkedM = false
        for e in model.layout.entries {
            if FiniteDifferenceTests.directional("absorbing \(variant) \(e.key)", grad: grads.array(e.range), x: model.params.ptr + e.offset,
                                                targetChange: 2e-3, noise: 2e-6, { (try? Self.loss(model, variant: variant, token: token,
                                                                                                 u: Self.someReplaced, grads: nil).0) ?? .nan }) {
                checked += 1
                if e.key == "mean_embed" { checkedM = true }
            }
        }
        #expect(checkedM, "mean_embed's gradient is large enough to check")
        #expect(checked >= 40, "only \(checked) tensors checkable")
        // Coordinate by coordinate on m (it is small: every coordinate).
        let m = model.ptr(model.params, id)
        var rng = SeededRandom(seed: 5)
        FiniteDifferenceTests.check("d/dm", analytic: dm, x: m, coords: FiniteDifferenceTests.coordinates(dm, count: 4, &rng),
                                    eps: 1e-2, rtol: 1e-2, atol: 2e-5) {
            (try? Self.loss(model, variant: variant, token: token, u: Self.someReplaced, grads: nil).0) ?? .nan
        }
    }

    @Test("the regulariser: reg_rate·‖m‖₂ in every example's loss, its gradient reg_rate·m/‖m‖ weighted like the examples")
    func regulariser() throws {
        let a = try Self.model(reg: 0), b = try Self.model(reg: 0.25)
        let ga = FloatBuffer(count: a.layout.totalCount), gb = FloatBuffer(count: b.layout.totalCount)
        let (_, ta, _) = try Self.loss(a, u: Self.someReplaced, grads: ga)
        let (_, tb, _) = try Self.loss(b, u: Self.someReplaced, grads: gb)
        let m = Self.m(of: a), norm = m.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot()
        for k in 0..<2 { #expect(abs(tb.loss[k] - ta.loss[k] - 0.25 * norm) < 1e-5) }
        let id = try #require(a.weights.meanEmbed)
        let w: Float = (1.3 + 0.6) / 2
        for j in 0..<D {
            let want = 0.25 * w * m[j] / norm
            #expect(abs(gb.ptr[id.offset + j] - ga.ptr[id.offset + j] - want) < 1e-5)
        }
        #expect(ga.array(0..<id.offset) == gb.array(0..<id.offset), "the regulariser touches only m")
    }

    @Test("bf16 products: the gradient of m within 2e-2 of fp32")
    func bf16() throws {
        let model = try Self.model()
        let g32 = FloatBuffer(count: model.layout.totalCount), g16 = FloatBuffer(count: model.layout.totalCount)
        _ = try Self.loss(model, u: Self.someReplaced, grads: g32)
        _ = try Self.loss(model, u: Self.someReplaced, grads: g16, mm: try matMul(.onednn, bf16: true))
        let id = try #require(model.weights.meanEmbed)
        let r = id.offset..<(id.offset + id.count)
        #expect(relativeError(g16.array(r), g32.array(r)) <= 2e-2)
    }

    @Test("training: m moves, runs are deterministic, and save → restore → continue equals an uninterrupted run bit for bit")
    func training() throws {
        var o = TrainingOptions()
        o.batchSize = 2; o.microbatch = 1; o.steps = 6; o.scheduleSampler = .lossaware; o.lr = 1e-3; o.emaRates = [0.9]
        func trainer() throws -> Trainer {
            try Trainer(model: try Self.model(rate: 0.9), examples: try OptimizerTests.goldenBatch(), options: o)
        }
        let a = try trainer()
        let m0 = Self.m(of: a.model)
        for _ in 0..<4 { #expect(a.trainStep().loss.isFinite) }
        #expect(Self.m(of: a.model) != m0, "gradients reach m")
        let b = try trainer()
        for _ in 0..<2 { _ = b.trainStep() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("absorb-train-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = try b.saveCheckpoint(to: dir, vocabLines: ["a"], trainingArgs: [:], elapsedSeconds: 0)
        let c = try trainer()
        _ = try c.restore(from: ckpt)
        for _ in 0..<2 { _ = c.trainStep() }
        #expect(c.model.params.array == a.model.params.array)
        #expect(c.emaWeights().array == a.emaWeights().array)
        let args = try JSONSerialization.jsonObject(with: Data(contentsOf: ckpt.appendingPathComponent("training_args.json"))) as? [String: Any]
        #expect(args?["learned_mean_embed"] as? Bool == true && (args?["denoise_rate"] as? NSNumber)?.floatValue == 0.9)
        // The trainer draws the replacement uniforms only when the model replaces tokens: γ = 0 keeps the stream of
        // a model without the option, so with m = 0 and no regulariser a step equals the official one (m then moves).
        let zeroM = [Float](repeating: 0, count: D)
        let off = try Trainer(model: try loadTinyModel(), examples: try OptimizerTests.goldenBatch(), options: o)
        let on = try Trainer(model: try Self.model(rate: 0, reg: 0, m: zeroM), examples: try OptimizerTests.goldenBatch(), options: o)
        #expect(off.trainStep().loss == on.trainStep().loss)
        #expect(off.model.params.array == on.model.params.array(0..<off.model.params.count))
        #expect(Self.m(of: on.model) != zeroM)
    }

    // MARK: Sampling

    func sampler(_ model: TransformerNetModel) throws -> (DiffusionSampler, [Int], [Int]) {
        let g = try Golden("golden.safetensors")
        return (try DiffusionSampler(model: model, engine: .blas), g.i64("batch.input_ids"), g.i64("batch.input_mask"))
    }

    @Test("a fork with no pins reproduces the original frames bit for bit, every sampler, centred and v2",
          arguments: [SamplerKind.ddpm, .ddim, .dpmSolver, .ddimOfficial], [AbsorbingSampling.centred, .v2])
    func forkReproduces(kind: SamplerKind, mode: AbsorbingSampling) throws {
        let (s, ids, mask) = try sampler(try Self.model(rate: 1))
        var o = SamplerOptions(kind: kind, steps: 10, decodeEveryStep: true)
        o.topP = kind == .ddpm ? 1.5 : -1
        o.absorbing = mode
        try expectForksReproduce(s, ids: ids, mask: mask, options: o, "\(kind) \(mode)")
    }

    @Test("starts: x_T = m + z on the target rows (dpm-solver++ in v2 mode: z); SDEdit centred on m")
    func starts() throws {
        let model = try Self.model()
        let (s, ids, mask) = try sampler(model)
        let m = Self.m(of: model)
        var z = [Float](repeating: 0, count: 2 * T * D)
        var r = [SeededRandom(seed: 5), SeededRandom(seed: 6)]
        z.withUnsafeMutableBufferPointer { p in r[0].fillNormal(p.baseAddress!, 256); r[1].fillNormal(p.baseAddress! + 256, 256) }
        for (kind, mode, shifted) in [(SamplerKind.ddpm, AbsorbingSampling.centred, true), (.dpmSolver, .centred, true), (.ddim, .v2, true),
                                      (.ddpm, .v2, true), (.dpmSolver, .v2, false), (.ddpm, .off, false)] {
            var o = SamplerOptions(kind: kind, steps: 4)
            o.absorbing = mode
            var first: [Float] = []
            _ = try s.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o, onFrame: { if first.isEmpty { first = $0.xt } })
            for j in 0..<(2 * T * D) where mask[j / D] == 1 {
                #expect(first[j] == z[j] + (shifted ? m[j % D] : 0), "\(kind) \(mode) at \(j)")
            }
        }
        var o = SamplerOptions(kind: .ddpm, steps: 10)
        o.startFraction = 0.3
        var first: [Float] = []
        _ = try s.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o, onFrame: { if first.isEmpty { first = $0.xt } })
        let copy = SourceCopy.embeddings(ids: ids, mask: mask, batch: 2, table: s.index.table.ptr, dim: D, padID: 0)
        let (process, indices) = try s.plan(o)
        let ab = process.alphasCumprod[indices[7]]
        let sa = Float(ab.squareRoot()), so = Float((1 - ab).squareRoot())
        for j in 0..<(2 * T * D) where mask[j / D] == 1 {
            #expect(first[j] == m[j % D] + sa * (copy[j] - m[j % D]) + so * z[j])
        }
    }

    @Test("option off and m = 0 reproduce the official process bit for bit; centred and v2 differ from it")
    func equivalences() throws {
        let plain = try sampler(try loadTinyModel()).0
        let (zero, ids, mask) = try sampler(try Self.model(rate: 0, m: [Float](repeating: 0, count: D)))
        let withM = try sampler(try Self.model()).0
        for kind in [SamplerKind.ddpm, .ddim, .dpmSolver, .ddimOfficial] {
            let o = SamplerOptions(kind: kind, steps: 8)
            let official = try plain.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o)
            #expect(try zero.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o).sample == official.sample, "\(kind): centred on m = 0")
            var v2 = o; v2.absorbing = .v2
            #expect(try zero.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: v2).sample == official.sample, "\(kind): v2 with m = 0, γ = 0")
            var off = o; off.absorbing = .off
            #expect(try withM.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: off).sample == official.sample, "\(kind): off")
            let centred = try withM.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o)
            let again = try withM.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o)
            #expect(centred.sample != official.sample && centred.sample == again.sample)
            if kind != .dpmSolver {
                #expect(try withM.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: v2).sample != centred.sample, "\(kind): v2 is not centred")
            }
        }
    }

    @Test("v2 mode re-absorbs target rows into m during ddpm (γ = 1); centred never does; errors are explicit")
    func v2Replacement() throws {
        let model = try Self.model(rate: 1)
        let (s, ids, mask) = try sampler(model)
        let m = Self.m(of: model)
        func absorbedRows(_ mode: AbsorbingSampling) throws -> Int {
            var o = SamplerOptions(kind: .ddpm, steps: 20, decodeEveryStep: true)
            o.absorbing = mode
            var count = 0
            _ = try s.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o, onFrame: { f in
                guard f.index > 0 else { return }
                for r in 0..<(2 * T) where mask[r] == 1 && Array(f.xt[(r * D)..<((r + 1) * D)]) == m { count += 1 }
            })
            return count
        }
        #expect(try absorbedRows(.v2) > 0)
        #expect(try absorbedRows(.centred) == 0)
        let (plain, _, _) = try sampler(try loadTinyModel())
        var o = SamplerOptions(kind: .ddpm, steps: 4)
        o.absorbing = .centred
        #expect(throws: EngineError.self) { try plain.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o) }
        o.absorbing = nil; o.sourcePrior = true
        #expect(throws: EngineError.self) { try s.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o) }
        o.absorbing = .off
        #expect(try s.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o).sample.count == 2 * T * D)
        o.sourcePrior = nil; o.absorbing = .v2
        let zeros: NoiseProvider = { _, out, n in out.update(repeating: 0, count: n) }
        #expect(throws: EngineError.self) { try s.run(ids: ids, mask: mask, batch: 2, seeds: [], options: o, noise: zeros) }
    }
}

extension ModelConfig {
    /// A copy changed by `f` (tests).
    func with(_ f: (inout ModelConfig) -> Void) -> ModelConfig {
        var c = self
        f(&c)
        return c
    }
}
