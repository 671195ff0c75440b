import Foundation

/// Training hyper-parameters (official `TrainLoop` flags and ours).
public struct TrainingOptions: Codable, Sendable, Equatable {
    /// Peak learning rate (official `--lr`).
    public var lr: Double = 3e-4
    /// Examples per step (official `--bsz`, per process).
    public var batchSize: Int = 64
    /// Examples per forward/backward chunk; gradients of the chunks are summed (official).
    public var microbatch: Int = 64
    /// Total optimisation steps; the learning rate decays linearly to 0 over them (`--learning_steps`).
    public var steps: Int = 2000
    /// Linear warm-up steps (0 = none, as official).
    public var warmup: Int = 0
    /// Save a checkpoint every N steps (and at the end).
    public var saveInterval: Int = 500
    /// EMA rates; the first one is written as the sampling weights.
    public var emaRates: [Float] = [0.9999]
    /// Seed of the initialisation, data order, timesteps, noise and dropout.
    public var seed: UInt64 = 102
    /// AdamW weight decay.
    public var weightDecay: Float = 0
    /// Gradient clipping max L2 norm (≤ 0 = off, official default).
    public var clip: Double = -1
    /// Timestep sampler.
    public var scheduleSampler: TimestepSampler.Kind = .lossaware
    /// The MSE region.
    public var loss: LossVariant = .official
    /// Keep this many checkpoints (older ones are removed).
    public var keepCheckpoints: Int = 3
    /// Compute the logged-only `nll` term every N steps (it costs a full vocabulary GEMM).
    public var nllEvery: Int = 10
    /// Weight of the token loss (CE of lm_head(x̂₀) on the target positions; 0 = off, official).
    public var tokenLoss: Float = 0
    /// Label smoothing of the token loss.
    public var labelSmoothing: Float = 0
    /// DINOISER's noise floor (0 = off, official): timesteps are drawn only from t ≥ t_min, the first t whose
    /// noise-to-signal ratio √((1−ᾱ_t)/ᾱ_t) reaches this factor × half the mean nearest-neighbour distance of
    /// the embeddings (below it, rounding x_t/√ᾱ_t already recovers almost every token: steps there teach
    /// little). t_min is recomputed every `noiseFloorInterval` steps as the embeddings move.
    public var noiseFloor: Double = 0
    /// Steps between two recomputations of the noise floor's t_min.
    public var noiseFloorInterval: Int = 200
    /// Self-conditioning (models with `ModelConfig.selfCondition`): the probability that an example's graded pass
    /// takes a first, no-gradient pass's x̂₀ as its previous estimate (zeros otherwise), drawn per example.
    public var selfConditionProb: Double = 0.5

    /// Default options.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case lr, batchSize, microbatch, steps, warmup, saveInterval, emaRates, seed, weightDecay, clip
        case scheduleSampler, loss, keepCheckpoints, nllEvery, tokenLoss, labelSmoothing, noiseFloor, noiseFloorInterval
        case selfConditionProb
    }

    /// Decodes options, taking the default for any key an older checkpoint did not write.
    public init(from decoder: Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        lr = try c.decodeIfPresent(Double.self, forKey: .lr) ?? lr
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? batchSize
        microbatch = try c.decodeIfPresent(Int.self, forKey: .microbatch) ?? microbatch
        steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? steps
        warmup = try c.decodeIfPresent(Int.self, forKey: .warmup) ?? warmup
        saveInterval = try c.decodeIfPresent(Int.self, forKey: .saveInterval) ?? saveInterval
        emaRates = try c.decodeIfPresent([Float].self, forKey: .emaRates) ?? emaRates
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? seed
        weightDecay = try c.decodeIfPresent(Float.self, forKey: .weightDecay) ?? weightDecay
        clip = try c.decodeIfPresent(Double.self, forKey: .clip) ?? clip
        scheduleSampler = try c.decodeIfPresent(TimestepSampler.Kind.self, forKey: .scheduleSampler) ?? scheduleSampler
        loss = try c.decodeIfPresent(LossVariant.self, forKey: .loss) ?? loss
        keepCheckpoints = try c.decodeIfPresent(Int.self, forKey: .keepCheckpoints) ?? keepCheckpoints
        nllEvery = try c.decodeIfPresent(Int.self, forKey: .nllEvery) ?? nllEvery
        tokenLoss = try c.decodeIfPresent(Float.self, forKey: .tokenLoss) ?? tokenLoss
        labelSmoothing = try c.decodeIfPresent(Float.self, forKey: .labelSmoothing) ?? labelSmoothing
        noiseFloor = try c.decodeIfPresent(Double.self, forKey: .noiseFloor) ?? noiseFloor
        noiseFloorInterval = try c.decodeIfPresent(Int.self, forKey: .noiseFloorInterval) ?? noiseFloorInterval
        selfConditionProb = try c.decodeIfPresent(Double.self, forKey: .selfConditionProb) ?? selfConditionProb
    }

    /// Checks the values; throws naming the bad flag.
    public func validate() throws {
        func need(_ ok: Bool, _ m: String) throws { if !ok { throw EngineError.invalidConfig(m) } }
        try need(lr > 0 && lr.isFinite, "--lr must be positive")
        try need(batchSize >= 1, "--batch-size must be at least 1")
        try need(microbatch >= 1 && microbatch <= batchSize, "--microbatch must be in 1...batch-size (\(batchSize))")
        try need(steps >= 1, "--steps must be at least 1")
        try need(warmup >= 0, "--warmup must be ≥ 0")
        try need(saveInterval >= 1, "--save-interval must be at least 1")
        try need(!emaRates.isEmpty && emaRates.allSatisfy { $0 >= 0 && $0 < 1 }, "--ema-rate values must be in [0, 1)")
        try need(weightDecay >= 0, "--weight-decay must be ≥ 0")
        try need(tokenLoss >= 0 && tokenLoss.isFinite, "--token-loss must be a weight ≥ 0")
        try need(labelSmoothing >= 0 && labelSmoothing < 1, "--label-smoothing must be in [0, 1)")
        try need(noiseFloor >= 0 && noiseFloor.isFinite, "--noise-floor must be a factor ≥ 0 (0 = off)")
        try need(noiseFloorInterval >= 1, "--noise-floor-interval must be at least 1")
        try need((0...1).contains(selfConditionProb), "--self-condition-prob must be a probability in [0, 1]")
    }

    /// lr at (0-based) step k: official linear decay, optionally with linear warm-up.
    public func learningRate(at k: Int) -> Double {
        let decay = 1 - Double(k) / Double(steps)
        let warm = warmup > 0 ? min(1, Double(k + 1) / Double(warmup)) : 1
        return lr * decay * warm
    }
}

/// What one training step did.
public struct StepReport: Sendable, Codable {
    public var step: Int
    public var loss: Double, mse: Double, decoderNLL: Double, tT: Double, nll: Double
    /// The token loss (NaN when off).
    public var token: Double = .nan
    /// The noise floor's t_min in force for this step (0 when off).
    public var noiseFloor: Int = 0
    public var lr: Double
    public var gradNorm: Double
    public var seconds: Double
    public var tokens: Int
}

/// Injected randomness for one microbatch (tests): timesteps, weights, the two noises and the soft absorbing
/// state's (B, T) replacement uniforms (empty without its discrete noise).
struct MicrobatchDraw {
    var t: [Int]
    var weights: [Float]
    var noiseXStart: [Float]
    var noiseQ: [Float]
    /// Self-conditioned models: which examples take a first pass's x̂₀ (empty: none).
    var selfCondition: [Bool] = []
    var absorb: [Float] = []
}

/// The official training loop (`train_util.py` `TrainLoop`): microbatches with summed gradients,
/// timestep sampler, AdamW with linear decay, EMA — on the flat parameter buffer.
public final class Trainer {
    public let model: TransformerNetModel
    public let options: TrainingOptions
    public let schedule: NoiseSchedule
    let loss: DiffusionLoss
    let grads: FloatBuffer
    var adam: AdamW
    let ema: EMA
    var sampler: TimestepSampler
    var rng: SeededRandom
    /// Self-conditioning's per-example coins: a stream of their own, so that they leave every other draw (data order,
    /// timesteps, noise, dropout) as in a run without self-conditioning.
    var selfConditionRNG: SeededRandom
    /// Completed steps.
    public internal(set) var step = 0
    var permutation: [Int] = []
    var cursor = 0
    private var acts: Activations?
    /// Threads and profile of the steps (bound to the training thread during a step).
    public let context: ComputeContext
    /// The matrix-product backend of the steps (`context.precision` resolved on this machine).
    public let matMul: MatMulChoice
    /// The weights as that backend takes them (views: a bf16 backend converts each weight as it enters a product).
    let prepared: PreparedWeights
    let examples: [Seq2SeqExample]

    /// A trainer over `examples` for `model` (already initialised or loaded).
    /// `padID`: the tokenizer's PAD (the `target-no-pad` loss mask and the source prior's filler).
    public init(model: TransformerNetModel, examples: [Seq2SeqExample], options: TrainingOptions, padID: Int = 0,
                context: ComputeContext = .process) throws {
        self.context = context
        try options.validate()
        guard !examples.isEmpty else { throw EngineError.invalidInput("no training examples") }
        if let bad = examples.first(where: { $0.ids.count != model.config.seqLen }) {
            throw EngineError.invalidInput("example at line \(bad.line) has length \(bad.ids.count), expected seq_len \(model.config.seqLen)")
        }
        self.model = model
        self.options = options
        self.examples = examples
        schedule = try NoiseSchedule(named: model.config.noiseSchedule, steps: model.config.diffusionSteps)
        loss = DiffusionLoss(model: model, schedule: schedule, variant: options.loss)
        matMul = context.matMul(for: .training)
        // No bf16 weight copies in training: memory (see PreparedWeights).
        prepared = PreparedWeights(model: model, mm: matMul.mm, bf16Copies: false)
        loss.prepared = prepared
        loss.tokenWeight = options.tokenLoss; loss.labelSmoothing = options.labelSmoothing; loss.padID = padID
        grads = FloatBuffer(count: model.layout.totalCount)
        adam = AdamW(count: model.layout.totalCount, weightDecay: options.weightDecay)
        ema = EMA(rates: options.emaRates, params: model.params)
        sampler = TimestepSampler(kind: options.scheduleSampler, steps: model.config.diffusionSteps)
        rng = SeededRandom(seed: options.seed &+ 1)
        selfConditionRNG = SeededRandom(seed: options.seed &+ 0x5C)
    }

    /// The EMA weights for rate index `i`.
    public func emaWeights(_ i: Int = 0) -> FloatBuffer { ema.buffers[i] }

    /// The next batch of examples (reshuffled every epoch).
    func nextBatch() -> [Seq2SeqExample] {
        var batch: [Seq2SeqExample] = []
        while batch.count < options.batchSize {
            if cursor >= permutation.count {
                permutation = Array(examples.indices)
                for i in stride(from: permutation.count - 1, to: 0, by: -1) {
                    permutation.swapAt(i, rng.int(below: i + 1))
                }
                cursor = 0
            }
            batch.append(examples[permutation[cursor]])
            cursor += 1
        }
        return batch
    }

    /// One optimisation step on the next batch.
    public func trainStep() -> StepReport { trainStep(batch: nextBatch(), draws: nil) }

    /// Mean distance from each embedding (the tied table) to its nearest other embedding.
    public func meanNearestNeighbourDistance() -> Double {
        let c = model.config, V = c.vocabSize, D = c.hiddenDim
        let index = EmbeddingIndex(table: model.ptr(model.params, \.wordEmbedding), bias: model.ptr(model.params, \.lmHeadBias),
                                   V: V, D: D)
        let ids = UnsafeMutablePointer<Int32>.allocate(capacity: V), margins = UnsafeMutablePointer<Float>.allocate(capacity: V)
        defer { ids.deallocate(); margins.deallocate() }
        // Row k of the table is its own nearest (distance 0), so the margin is the squared distance to the next.
        index.nearest(index.table.ptr, rows: V, ids: ids, margins: margins)
        var s = 0.0
        for k in 0..<V { s += Double(max(0, margins[k])).squareRoot() }
        return s / Double(V)
    }

    /// The noise floor's t_min for the current embeddings (`TrainingOptions.noiseFloor`; 0 when off).
    public func noiseFloorStep() -> Int {
        guard options.noiseFloor > 0 else { return 0 }
        let want = options.noiseFloor * meanNearestNeighbourDistance() / 2
        let ab = schedule.alphasCumprod
        for t in 0..<ab.count where ((1 - ab[t]) / ab[t]).squareRoot() >= want { return t }
        return ab.count - 1
    }

    /// Wall seconds per phase ("forward", "head", "backward", "optimizer") accumulated over the steps
    /// since the last `resetPhases()` (benchmarks: where a step's time goes).
    public var phaseSeconds: [String: Double] { loss.phaseSeconds }
    public func resetPhases() { loss.phaseSeconds = [:] }

    /// One optimisation step; `draws` (tests) replaces the sampled t, weights and noise per microbatch.
    func trainStep(batch: [Seq2SeqExample], draws: [MicrobatchDraw]?, dropout: Bool = true) -> StepReport {
        let t0 = Date()
        let binding = context.bindToThread()
        defer { ComputeContext.restoreBinding(binding) }
        let c = model.config, T = c.seqLen, D = c.hiddenDim
        prepared.refresh()  // copies of the weights, if the preparation keeps any (the parameters change every step)
        grads.zero()
        var sums = (loss: 0.0, mse: 0.0, dn: 0.0, tT: 0.0, nll: 0.0, token: 0.0)
        if options.noiseFloor > 0 && (step % options.noiseFloorInterval == 0 || sampler.floor == nil) {
            sampler.floor = noiseFloorStep()
        }
        let mb = options.microbatch
        var chunkIndex = 0
        var start = 0
        while start < batch.count {
            let chunk = Array(batch[start..<min(start + mb, batch.count)])
            let B = chunk.count
            if acts == nil || acts?.B != B {
                acts = Activations(config: c, B: B, T: T, keepLayerCaches: true, dropout: c.dropout > 0 || c.attentionDropout > 0,
                                   bf16Caches: matMul.precision == .bf16)
            }
            let draw: MicrobatchDraw
            if let d = draws?[chunkIndex] { draw = d } else {
                let (ts, ws) = sampler.sample(B, rng: &rng)
                var n1 = [Float](repeating: 0, count: B * T * D), n2 = n1
                n1.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, B * T * D) }
                n2.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, B * T * D) }
                let sc = c.selfCondition ? (0..<B).map { _ in selfConditionRNG.uniformDouble() < options.selfConditionProb } : []
                // Drawn only when the model replaces tokens by m, so every other run's stream is unchanged.
                let absorb = c.denoiseRate > 0 ? (0..<(B * T)).map { _ in rng.uniform() } : []
                draw = MicrobatchDraw(t: ts, weights: ws, noiseXStart: n1, noiseQ: n2, selfCondition: sc, absorb: absorb)
            }
            let useDropout = dropout && (c.dropout > 0 || c.attentionDropout > 0)
            let terms: LossTerms = withUnsafeMutablePointer(to: &rng) { rp in
                draw.noiseXStart.withUnsafeBufferPointer { a in
                    draw.noiseQ.withUnsafeBufferPointer { b in
                        loss.compute(ids: chunk.flatMap(\.ids), mask: chunk.flatMap(\.mask), t: draw.t,
                                     noiseXStart: a.baseAddress!, noiseQ: b.baseAddress!, weights: draw.weights,
                                     acts: acts!, grads: grads, dropout: useDropout ? rp : nil,
                                     computeNLL: (step + 1) % max(1, options.nllEvery) == 0 || step == 0 || options.tokenLoss > 0,
                                     selfCondition: draw.selfCondition,
                                     absorbDraws: draw.absorb)
                    }
                }
            }
            sampler.update(t: draw.t, losses: terms.loss)
            for b in 0..<B {
                sums.loss += Double(terms.loss[b]); sums.mse += Double(terms.mse[b]); sums.dn += Double(terms.decoderNLL[b])
                sums.tT += Double(terms.tT[b]); sums.nll += Double(terms.nll[b])
                if !terms.token.isEmpty { sums.token += Double(terms.token[b]) }
            }
            start += B
            chunkIndex += 1
        }
        let tOpt = DispatchTime.now().uptimeNanoseconds
        defer { loss.phaseSeconds["optimizer", default: 0] += Double(DispatchTime.now().uptimeNanoseconds - tOpt) / 1e9 }
        var norm = l2Norm(grads)
        if options.clip > 0 && norm > options.clip {
            let s = Float(options.clip / (norm + 1e-6))
            for i in 0..<grads.count { grads.ptr[i] *= s }
            norm = l2Norm(grads)
        }
        let lr = options.learningRate(at: step)
        let n = Double(batch.count)
        let lossMean = sums.loss / n
        if lossMean.isFinite {
            adam.update(params: model.params, grads: grads, lr: lr)
            ema.update(params: model.params)
        }
        step += 1
        let nllComputed = step % max(1, options.nllEvery) == 0 || step == 1
        return StepReport(step: step, loss: lossMean, mse: sums.mse / n, decoderNLL: sums.dn / n, tT: sums.tT / n,
                          nll: nllComputed || options.tokenLoss > 0 ? sums.nll / n : .nan,
                          token: options.tokenLoss > 0 ? sums.token / n : .nan, noiseFloor: sampler.floor ?? 0,
                          lr: lr, gradNorm: norm,
                          seconds: Date().timeIntervalSince(t0), tokens: batch.count * T)
    }
}
