import Foundation

/// Options of a reverse-diffusion run (official `sample_seq2seq.py` flags and ours).
public struct SamplerOptions: Sendable, Equatable {
    /// Which reverse process.
    public var kind: SamplerKind
    /// Number of denoising steps (≤ the model's diffusion steps).
    public var steps: Int
    /// Official `--clamp_step`: round x̂₀ at steps i ≥ clampStep (0 = every step).
    public var clampStep: Int
    /// Official `--top_p`: when > 0, noise elements with |z| > topP are redrawn (truncated normal).
    /// The official flag parses only integers; any positive value is accepted here.
    public var topP: Double
    /// Official `--clip_denoised` (default false): clamp x̂₀ to [−1, 1].
    public var clipDenoised: Bool
    /// Compute the lm_head read-out after every step (the explorer) or only after the last.
    public var decodeEveryStep: Bool
    /// Round x̂₀ to the nearest embedding (official `denoised_fn_round`) where `clampStep` allows.
    /// DiffuSeq-v2's DPM-Solver++ did not round; here every sampler rounds unless this is false.
    public var rounding: Bool
    /// SDEdit edit strength: 1 starts from pure noise (official); F < 1 skips the first (1 − F) of the steps and
    /// starts from the source copy laid into the target region (`SourceCopy`), noised to that step's level.
    public var startFraction: Double = 1
    /// The source prior (`SourceCopy`: every sampler centred on the source copy laid into the target region):
    /// nil follows the model (`ModelConfig.sourcePrior`, from training_args.json); true/false overrides it,
    /// e.g. the zero-training variant on a model trained without it.
    public var sourcePrior: Bool? = nil
    /// How the run uses the model's soft absorbing state (`mean_embed`, `SoftAbsorbing`): nil follows the model
    /// (`.centred` when it has one, else `.off`); `.centred`/`.v2` on a model without one is an error.
    public var absorbing: AbsorbingSampling? = nil

    /// Creates options; defaults are the official sampler at the model's full step count.
    public init(kind: SamplerKind = .ddpm, steps: Int, clampStep: Int = 0, topP: Double = -1,
                clipDenoised: Bool = false, decodeEveryStep: Bool = false, rounding: Bool = true) {
        self.kind = kind; self.steps = steps; self.clampStep = clampStep; self.topP = topP
        self.clipDenoised = clipDenoised; self.decodeEveryStep = decodeEveryStep; self.rounding = rounding
    }

    /// The step index (0-based, into a run's `n` steps) an SDEdit start with fraction `f` begins at: the last
    /// round(f·n) steps are run, at least one (1 → 0, 0.5 of 200 → 100). Frames of such a run have indices
    /// from this one to n − 1.
    public static func sdeditFirstStep(fraction f: Double, steps n: Int) -> Int {
        guard n > 1 else { return 0 }
        return max(0, min(n - 1, n - Int((f * Double(n)).rounded())))
    }
}

/// Where a run resumes (a fork): at step `step` (an index into the run's steps, as `DiffusionFrame.index`) from
/// `xt`, the (B, T, D) state that step takes as input (`DiffusionFrame.xt` of the frame with that index).
/// DPM-Solver++(2M) is multistep: its fork also needs the previous step's frame (`previous`), whose x̂₀ the
/// second-order update uses; without it the fork's first update is first order. A self-conditioned model needs it
/// with every sampler: that x̂₀ is the network's input at `step` (without it, zeros).
public struct SamplerStart: Sendable {
    public var step: Int
    public var xt: [Float]
    public var previous: DiffusionFrame?
    public init(step: Int, xt: [Float], previous: DiffusionFrame? = nil) { self.step = step; self.xt = xt; self.previous = previous }
}

/// Where a run's Gaussian noise comes from: `(step, out, count)` fills `count` floats, step −1
/// being the initial x_T noise. The default draws row b from a generator seeded with seeds[b].
public typealias NoiseProvider = (_ step: Int, _ out: UnsafeMutablePointer<Float>, _ count: Int) -> Void

/// The outcome of a run.
public struct SampleResult: Sendable {
    /// (B, T, D) the final sample.
    public var sample: [Float]
    /// (B, T) argmax lm_head(sample): the official output tokens.
    public var tokens: [Int32]
    /// Whether the run stopped early because it was cancelled.
    public var cancelled: Bool
}

/// A loaded model with its diffusion process: runs reverse diffusion and yields frames.
///
/// Sendable (unchecked): every stored property is a `let` set in init (snapshots of the weights); each run
/// allocates its own activations and generator state.
public final class DiffusionSampler: @unchecked Sendable {
    /// The network.
    public let model: TransformerNetModel
    /// The model's full (unrespaced) process.
    public let schedule: NoiseSchedule
    let index: EmbeddingIndex
    /// The weights as the sampler's matrix-product backend takes them (runs that do not use the packed
    /// engine). On OpenBLAS, models whose per-projection batch-1 products are small (the built-in model:
    /// 64×256×256) get their query/key/value weights stacked into one product per layer, which saves
    /// per-call overhead; larger models keep three (their products are efficient already, and the copy
    /// would cost 3·C²·layers floats). A snapshot, like the rounding table; bf16 copies are made by the first
    /// run that needs them (like the packed panels: a run on the packed engine never does).
    var prepared: PreparedWeights {
        packedLock.lock()
        defer { packedLock.unlock() }
        if let p = _prepared { return p }
        let p = makePrepared()
        _prepared = p
        return p
    }
    private var _prepared: PreparedWeights?
    /// The matrix-product backend of runs that do not use the packed engine (`context.precision` resolved).
    public let matMul: MatMulChoice

    /// Whether sampling stacks the query/key/value projections of a model of this shape (each of the three
    /// batch-1 products under 8M multiply-adds).
    public static func fusesProjections(_ c: ModelConfig) -> Bool { c.seqLen * c.width * c.width < (8 << 20) }

    /// Which code runs the products (see `SamplingEngine`): `context.engine`.
    public let engine: SamplingEngine
    /// Engine, threads and profile of this sampler's runs (bound to the running thread during a run).
    public let context: ComputeContext
    private let packedLock = NSLock()
    /// PAD's id: the source copy (`SourceCopy`) continues with PAD after the source.
    public let padID: Int
    /// (D) the model's soft absorbing state m (`mean_embed`), a snapshot like the rounding table; nil without one.
    public let meanEmbed: [Float]?
    private var _packed: PackedModel?

    /// Wraps a model; the rounding table and the fused projections are a snapshot of its weights at this
    /// moment; the packed weights are made by the first run that uses them, or by `preparePackedEngine`.
    public init(model: TransformerNetModel, engine: SamplingEngine? = nil, padID: Int = 0,
                context: ComputeContext = .process, workload: ComputeContext.Workload = .batchSampling) throws {
        self.model = model
        self.padID = padID
        var context = context
        if let engine { context.engine = engine }
        self.context = context
        self.engine = context.engine
        let c = model.config
        schedule = try NoiseSchedule(named: c.noiseSchedule, steps: c.diffusionSteps)
        index = EmbeddingIndex(table: model.ptr(model.params, \.wordEmbedding),
                               bias: model.ptr(model.params, \.lmHeadBias), V: c.vocabSize, D: c.hiddenDim)
        matMul = context.matMul(for: workload)
        meanEmbed = model.weights.meanEmbed.map { Array(UnsafeBufferPointer(start: model.ptr(model.params, $0), count: $0.count)) }
        if matMul.precision != .bf16 { _prepared = makePrepared() }
    }

    private func makePrepared() -> PreparedWeights {
        PreparedWeights(model: model, mm: matMul.mm,
                        fuseQKV: matMul.library == .openblas && Self.fusesProjections(model.config))
    }

    /// Packs the weights now if a batch-1 run will use the packed engine (the explorer calls this at load so
    /// that its first live run does not pay for the packing).
    public func preparePackedEngine() {
        if engine.usesPacked(rows: model.config.seqLen) { _ = packedModel() }
    }

    /// Whether a run of `batch` sequences of `seqLen` positions uses the packed engine.
    public func usesPackedEngine(batch: Int, seqLen: Int) -> Bool { engine.usesPacked(rows: batch * seqLen) }

    func packedModel() -> PackedModel {
        packedLock.lock()
        defer { packedLock.unlock() }
        if let p = _packed { return p }
        let p = PackedModel(model: model)
        _packed = p
        return p
    }

    /// The k vocabulary embeddings nearest to `vector` (D floats), nearest first.
    public func neighbours(of vector: [Float], k: Int) -> [Neighbour] { index.neighbours(of: vector, k: k) }

    /// The embedding rows of `ids`: (n, D).
    public func embed(_ ids: [Int]) -> [Float] {
        let D = model.config.hiddenDim
        var out = [Float](repeating: 0, count: ids.count * D)
        for (i, id) in ids.enumerated() where id >= 0 && id < index.V {
            for j in 0..<D { out[i * D + j] = index.table.ptr[id * D + j] }
        }
        return out
    }

    /// argmax lm_head for each row of x (n, D).
    public func readOut(_ x: [Float]) -> [Int32] {
        let D = model.config.hiddenDim, n = x.count / D
        var ids = [Int32](repeating: 0, count: n)
        x.withUnsafeBufferPointer { xp in
            ids.withUnsafeMutableBufferPointer { ip in
                if let xb = xp.baseAddress, let ib = ip.baseAddress { context.run { index.argmaxLogits(xb, rows: n, ids: ib) } }
            }
        }
        return ids
    }

    /// The steps a run visits: for each, the index into `process` and the original timestep.
    func plan(_ o: SamplerOptions) throws -> (process: NoiseSchedule, indices: [Int]) {
        let T = schedule.count
        guard o.steps >= 1 else { throw EngineError.invalidInput("--steps must be at least 1") }
        guard o.steps <= T else {
            throw EngineError.invalidInput("--steps \(o.steps) exceeds the model's \(T) diffusion steps")
        }
        switch o.kind {
        case .ddimOfficial:
            // sample_seq2seq.py: gap = T // step; indices T−1, T−1−gap, … on the full process.
            if o.steps == T { return (schedule, Array((0..<T).reversed())) }
            let gap = T / o.steps
            return (schedule, Array(stride(from: T - 1, through: 0, by: -gap)))
        case .ddpm, .ddim, .dpmSolver:
            let p = try schedule.respaced(steps: o.steps)
            return (p, Array((0..<p.count).reversed()))
        }
    }

    /// Runs reverse diffusion on a batch: a loop over the steps of `plan(_:)`, each one `ReverseRun.predict`
    /// (the network's x̂₀), `round` (nearest embedding, with the frame pipeline's read-out riding on it),
    /// the sampler's update (`pSample`, `ddimStep` or `dpmSolverStep`, as in `gaussian_diffusion.py` and
    /// DPM-Solver++) and `anchor` (source and pinned rows back to their embeddings).
    ///
    /// - Parameters:
    ///   - ids: (B, T) token ids in the official layout; the source part (mask 0) anchors the run.
    ///   - mask: (B, T) 0 on the source, 1 on target and padding.
    ///   - seeds: one per row; row b's noise comes only from seeds[b] (same seed → same frames,
    ///     whatever the batch or thread count).
    ///   - noise: overrides the seeded noise (tests inject the official noise this way).
    ///   - start: resume at a step from a given x_t (a fork); the noise of the skipped steps is drawn and
    ///     discarded, so the rest of the run sees the same noise stream as the original.
    ///   - pins: flat row (b·T + position) → token id held at that token's embedding, like the source.
    ///   - onFrame: called with each step's frame as soon as it is computed.
    public func run(ids: [Int], mask: [Int], batch B: Int, seeds: [UInt64], options o: SamplerOptions,
                    noise: NoiseProvider? = nil, start: SamplerStart? = nil, pins: [Int: Int] = [:],
                    isCancelled: () -> Bool = { false },
                    onFrame: ((DiffusionFrame) -> Void)? = nil) throws -> SampleResult {
        let binding = context.bindToThread()
        defer { ComputeContext.restoreBinding(binding) }
        let r = try ReverseRun(sampler: self, ids: ids, mask: mask, batch: B, seeds: seeds, options: o, noise: noise,
                               start: start, pins: pins, packed: nil, framed: onFrame != nil)
        if r.usesPacked { r.packed = packedModel() }
        var cancelled = false
        for k in r.firstStep..<r.indices.count {
            if isCancelled() { cancelled = true; break }
            let i = r.indices[k]
            let out = r.predict(i)
            let x0Raw = onFrame != nil ? Array(UnsafeBufferPointer(start: out, count: r.n)) : []
            if let ready = r.round(out) { onFrame?(ready) }
            r.prepareX0(out, i)
            let xtBefore = o.decodeEveryStep || onFrame != nil ? r.xt.array : []
            r.withPriorShift {
                switch o.kind {
                case .ddpm: r.pSample(k, i)
                case .ddim, .ddimOfficial: r.ddimStep(i)
                case .dpmSolver: r.dpmPrev = dpmStep(process: r.process, k: k, indices: r.indices, xt: r.xt, x0: r.x0r,
                                                     prev: r.dpmPrev, n: r.n)
                }
            }
            r.anchor()
            if onFrame != nil, let f = r.frame(k, i, xt: xtBefore, x0: x0Raw) { onFrame?(f) }
        }
        if let f = r.flushPending() { onFrame?(f) }  // cancelled between a step and its read-out
        return SampleResult(sample: r.xt.array, tokens: r.lastDecoded ?? r.readOut(r.xt.ptr), cancelled: cancelled)
    }

    /// One DPM-Solver++(2M) update (data prediction, multistep, time-uniform grid over the
    /// respaced process, lower-order final step): x_{t_k} from x_{t_{k−1}} and the model's x̂₀.
    func dpmStep(process: NoiseSchedule, k: Int, indices: [Int], xt: FloatBuffer, x0: FloatBuffer,
                         prev: (x0: FloatBuffer, lambda: Double)?, n: Int) -> (x0: FloatBuffer, lambda: Double) {
        // Current time s = indices[k] (respaced index), next t = indices[k+1] or the clean end.
        let i = indices[k]
        let abS = process.alphasCumprod[i]
        let alphaS = abS.squareRoot(), sigmaS = (1 - abS).squareRoot()
        let lambdaS = Foundation.log(alphaS) - Foundation.log(sigmaS)
        let d0 = x0.copy()
        let isLast = k == indices.count - 1
        if isLast {
            // The final step lands on x̂₀ (denoise to zero).
            xt.ptr.update(from: x0.ptr, count: n)
            return (d0, lambdaS)
        }
        let j = indices[k + 1]
        let abT = process.alphasCumprod[j]
        let alphaT = abT.squareRoot(), sigmaT = (1 - abT).squareRoot()
        let lambdaT = Foundation.log(alphaT) - Foundation.log(sigmaT)
        let h = lambdaT - lambdaS
        let phi = Foundation.expm1(-h)  // e^{−h} − 1
        let ratio = Float(sigmaT / sigmaS), aPhi = Float(alphaT * phi)
        let lowerOrderFinal = k == indices.count - 2 && indices.count < 10
        if let prev, !lowerOrderFinal {
            let hPrev = lambdaS - prev.lambda
            let r = Float(hPrev / h)
            for q in 0..<n {
                let D1 = (d0.ptr[q] - prev.x0.ptr[q]) / r
                xt.ptr[q] = ratio * xt.ptr[q] - aPhi * d0.ptr[q] - 0.5 * aPhi * D1
            }
        } else {
            for q in 0..<n { xt.ptr[q] = ratio * xt.ptr[q] - aPhi * d0.ptr[q] }
        }
        return (d0, lambdaS)
    }
}
