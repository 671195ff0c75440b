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

    /// Creates options; defaults are the official sampler at the model's full step count.
    public init(kind: SamplerKind = .ddpm, steps: Int, clampStep: Int = 0, topP: Double = -1,
                clipDenoised: Bool = false, decodeEveryStep: Bool = false, rounding: Bool = true) {
        self.kind = kind; self.steps = steps; self.clampStep = clampStep; self.topP = topP
        self.clipDenoised = clipDenoised; self.decodeEveryStep = decodeEveryStep; self.rounding = rounding
    }
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
    /// Stacked query/key/value weights for models whose per-projection products are small (a batch-1
    /// run of the built-in model: 64×256×256), where one product per layer instead of three saves
    /// per-call overhead; nil for larger models (their products are efficient already, and the copy
    /// would cost 3·C²·layers floats).
    let fused: FusedQKV?

    /// Whether sampling stacks the query/key/value projections of a model of this shape (each of the three
    /// batch-1 products under 8M multiply-adds).
    public static func fusesProjections(_ c: ModelConfig) -> Bool { c.seqLen * c.width * c.width < (8 << 20) }

    /// Which code runs the products (see `SamplingEngine`).
    public let engine: SamplingEngine
    private let packedLock = NSLock()
    private var _packed: PackedModel?

    /// Wraps a model; the rounding table and the fused projections are a snapshot of its weights at this
    /// moment; the packed weights are made by the first run that uses them, or by `preparePackedEngine`.
    public init(model: TransformerNetModel, engine: SamplingEngine = .current) throws {
        self.model = model
        self.engine = engine
        let c = model.config
        schedule = try NoiseSchedule(named: c.noiseSchedule, steps: c.diffusionSteps)
        index = EmbeddingIndex(table: model.ptr(model.params, "word_embedding.weight"),
                               bias: model.ptr(model.params, "lm_head.bias"), V: c.vocabSize, D: c.hiddenDim)
        fused = Self.fusesProjections(c) ? model.makeFusedQKV() : nil
    }

    /// Packs the weights now if a batch-1 run will use the packed engine (the explorer calls this at load so
    /// that its first live run does not pay for the packing).
    public func preparePackedEngine() {
        if engine.usesPacked(rows: model.config.seqLen) { _ = packedModel() }
    }

    /// Whether a run of `batch` sequences of `seqLen` positions uses the packed engine.
    public func usesPackedEngine(batch: Int, seqLen: Int) -> Bool { engine.usesPacked(rows: batch * seqLen) }

    private func packedModel() -> PackedModel {
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
                if let xb = xp.baseAddress, let ib = ip.baseAddress { index.argmaxLogits(xb, rows: n, ids: ib) }
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

    /// Runs reverse diffusion on a batch.
    ///
    /// - Parameters:
    ///   - ids: (B, T) token ids in the official layout; the source part (mask 0) anchors the run.
    ///   - mask: (B, T) 0 on the source, 1 on target and padding.
    ///   - seeds: one per row; row b's noise comes only from seeds[b] (same seed → same frames,
    ///     whatever the batch or thread count).
    ///   - noise: overrides the seeded noise (tests inject the official noise this way).
    ///   - onFrame: called with each step's frame as soon as it is computed.
    public func run(ids: [Int], mask: [Int], batch B: Int, seeds: [UInt64], options o: SamplerOptions,
                    noise: NoiseProvider? = nil, isCancelled: () -> Bool = { false },
                    onFrame: ((DiffusionFrame) -> Void)? = nil) throws -> SampleResult {
        let c = model.config, D = c.hiddenDim
        guard B >= 1, ids.count % B == 0, mask.count == ids.count else {
            throw EngineError.invalidInput("ids (\(ids.count)) and mask (\(mask.count)) must both be B×T with B = \(B)")
        }
        let T = ids.count / B
        guard T <= c.maxPositions else {
            throw EngineError.invalidInput("sequence length \(T) exceeds max_position_embeddings \(c.maxPositions)")
        }
        guard seeds.count == B || noise != nil else {
            throw EngineError.invalidInput("need one seed per batch row (\(B)), got \(seeds.count)")
        }
        if let bad = ids.first(where: { $0 < 0 || $0 >= c.vocabSize }) {
            throw EngineError.invalidInput("token id \(bad) is outside the vocabulary (size \(c.vocabSize))")
        }
        let (process, indices) = try plan(o)
        let pm: PackedModel? = engine.usesPacked(rows: B * T) ? packedModel() : nil
        let n = B * T * D
        var rngs = seeds.map { SeededRandom(seed: $0) }
        let fill: NoiseProvider = noise ?? { _, out, count in
            let per = count / B
            for b in 0..<B { rngs[b].fillNormal(out + b * per, per) }
        }
        let xStart = FloatBuffer(embed(ids))                 // (B, T, D) clean source embeddings
        let xt = FloatBuffer(count: n), z = FloatBuffer(count: n), x0r = FloatBuffer(count: n)
        fill(-1, z.ptr, n)
        for i in 0..<n { xt.ptr[i] = mask[i / D] == 0 ? xStart.ptr[i] : z.ptr[i] }
        let acts = Activations(config: c, B: B, T: T, keepLayerCaches: false, dropout: false)
        var rounded = [Int32](repeating: 0, count: B * T), margins = [Float](repeating: 0, count: B * T)
        let variance = process.fixedLargeVariance
        let tScale = Float(1000.0 / Double(process.originalSteps))
        var cancelled = false
        let targetRows = (0..<(B * T)).filter { mask[$0] != 0 }
        let packed = FloatBuffer(count: onFrame == nil ? targetRows.count * D : 0)
        let packedIDs = UnsafeMutablePointer<Int32>.allocate(capacity: max(1, targetRows.count))
        let packedMargins = UnsafeMutablePointer<Float>.allocate(capacity: max(1, targetRows.count))
        defer { packedIDs.deallocate(); packedMargins.deallocate() }
        var dpmPrev: (x0: FloatBuffer, lambda: Double)? = nil
        // The first full read-out of a run with frames; later read-outs replace its target rows only.
        var decodedSource: [Int32]? = nil
        let packedDecode = FloatBuffer(count: onFrame != nil && o.decodeEveryStep ? targetRows.count * D : 0)
        // A frame waiting for its read-out (see the rounding above).
        var pending: DiffusionFrame? = nil
        // The read-out of the final x_0 when the last frame computed it.
        var lastDecoded: [Int32]? = nil
        // argmax lm_head of all B·T rows of x (the source rows' read-out is reused once known).
        func readOut(_ x: UnsafePointer<Float>) -> [Int32] {
            var d = [Int32](repeating: 0, count: B * T)
            if let base = decodedSource {
                d = base
                for (q, r) in targetRows.enumerated() { (packedDecode.ptr + q * D).update(from: x + r * D, count: D) }
                index.argmaxLogits(packedDecode.ptr, rows: targetRows.count, ids: packedIDs, packed: pm?.table)
                for (q, r) in targetRows.enumerated() { d[r] = packedIDs[q] }
            } else {
                d.withUnsafeMutableBufferPointer { dp in if let p = dp.baseAddress { index.argmaxLogits(x, rows: B * T, ids: p, packed: pm?.table) } }
            }
            lastDecoded = d
            return d
        }
        for (k, i) in indices.enumerated() {
            if isCancelled() { cancelled = true; break }
            let tOrig = process.timestepMap[i]
            let tModel = [Float](repeating: c.rescaleTimesteps ? Float(tOrig) * tScale : Float(tOrig), count: B)
            let out = pm.map { $0.forward(x: xt.ptr, tModel: tModel, acts: acts) }
                ?? model.forward(x: xt.ptr, tModel: tModel, acts: acts, dropout: nil, fused: fused)
            let x0Raw = Array(UnsafeBufferPointer(start: out, count: n))
            if onFrame == nil && !targetRows.isEmpty && targetRows.count < B * T {
                // Source rows are re-anchored after the step whatever their rounding is: when no frame wants
                // them, round the target rows only (exactly the same result; half the rounding GEMM for a
                // typical pair). Their `rounded` entries keep stale ids that nothing reads.
                for (q, r) in targetRows.enumerated() { (packed.ptr + q * D).update(from: out + r * D, count: D) }
                index.nearest(packed.ptr, rows: targetRows.count, ids: packedIDs, margins: packedMargins, packed: pm?.table)
                for (q, r) in targetRows.enumerated() { rounded[r] = packedIDs[q]; margins[r] = packedMargins[q] }
            } else if var frame = pending {
                // The previous frame's read-out is of x_t, this step's input: it shares this step's rounding
                // product (one pass over the embedding table instead of two), then the frame goes out.
                frame.decoded = decodedSource ?? [Int32](repeating: 0, count: B * T)
                rounded.withUnsafeMutableBufferPointer { rp in
                    margins.withUnsafeMutableBufferPointer { mp in
                        frame.decoded.withUnsafeMutableBufferPointer { dp in
                            guard let r = rp.baseAddress, let m = mp.baseAddress, let d = dp.baseAddress else { return }
                            if decodedSource != nil {
                                for (q, row) in targetRows.enumerated() { (packedDecode.ptr + q * D).update(from: xt.ptr + row * D, count: D) }
                                index.scan(nearest: out, rows: B * T, ids: r, margins: m,
                                           logits: packedDecode.ptr, rows: targetRows.count, ids: packedIDs, packed: pm?.table)
                                for (q, row) in targetRows.enumerated() { d[row] = packedIDs[q] }
                            } else {
                                index.scan(nearest: out, rows: B * T, ids: r, margins: m, logits: xt.ptr, rows: B * T, ids: d, packed: pm?.table)
                            }
                        }
                    }
                }
                if decodedSource == nil && !targetRows.isEmpty && targetRows.count < B * T { decodedSource = frame.decoded }
                pending = nil
                onFrame?(frame)
            } else {
                rounded.withUnsafeMutableBufferPointer { rp in
                    margins.withUnsafeMutableBufferPointer { mp in
                        if let r = rp.baseAddress, let m = mp.baseAddress { index.nearest(out, rows: B * T, ids: r, margins: m, packed: pm?.table) }
                    }
                }
            }
            // The official DDIM path rounds at every step; the others where i ≥ clamp_step.
            let roundNow = o.rounding && (o.kind == .ddimOfficial || process.timestepMap[i] >= o.clampStep)
            if roundNow {
                for r in 0..<(B * T) {
                    (x0r.ptr + r * D).update(from: index.table.ptr + Int(rounded[r]) * D, count: D)
                }
            } else {
                x0r.ptr.update(from: out, count: n)
            }
            if o.clipDenoised { for j in 0..<n { x0r.ptr[j] = min(max(x0r.ptr[j], -1), 1) } }
            let xtBefore = o.decodeEveryStep || onFrame != nil ? Array(UnsafeBufferPointer(start: xt.ptr, count: n)) : []
            switch o.kind {
            case .ddpm:
                let c1 = Float(process.posteriorMeanCoef1[i]), c2 = Float(process.posteriorMeanCoef2[i])
                if i != 0 {
                    fill(k, z.ptr, n)
                    if o.topP > 0 {
                        let p = Float(o.topP)
                        for j in 0..<n where abs(z.ptr[j]) > p {
                            let b = j / (T * D)
                            repeat { z.ptr[j] = rngs.isEmpty ? 0 : rngs[b].normal() } while abs(z.ptr[j]) > p
                        }
                    }
                }
                let sigma = Float(Foundation.exp(0.5 * Foundation.log(variance[i])))
                for j in 0..<n {
                    let mean = c1 * x0r.ptr[j] + c2 * xt.ptr[j]
                    xt.ptr[j] = i != 0 ? mean + sigma * z.ptr[j] : mean
                }
            case .ddim, .ddimOfficial:
                let rA = Float(process.sqrtRecipAlphasCumprod[i]), rAm1 = Float(process.sqrtRecipm1AlphasCumprod[i])
                let abPrev = Float(process.alphasCumprodPrev[i])
                let sPrev = abPrev.squareRoot(), sNoise = (1 - abPrev).squareRoot()
                for j in 0..<n {
                    let eps = (rA * xt.ptr[j] - x0r.ptr[j]) / rAm1
                    xt.ptr[j] = x0r.ptr[j] * sPrev + sNoise * eps
                }
            case .dpmSolver:
                dpmPrev = dpmStep(process: process, k: k, indices: indices, xt: xt, x0: x0r, prev: dpmPrev, n: n)
            }
            for j in 0..<n where mask[j / D] == 0 { xt.ptr[j] = xStart.ptr[j] }
            if let onFrame {
                let frame = DiffusionFrame(index: k, count: indices.count, t: tOrig, diffusionSteps: schedule.count,
                                           noise: schedule.noiseLevel(tOrig), batch: B, seqLen: T, dim: D,
                                           xt: xtBefore, x0: x0Raw, rounded: rounded, margin: margins, decoded: [])
                if o.decodeEveryStep && k < indices.count - 1 {
                    pending = frame  // read out with the next step's rounding
                } else {
                    var f = frame
                    if o.decodeEveryStep || k == indices.count - 1 { f.decoded = readOut(xt.ptr) }
                    onFrame(f)
                }
            }
        }
        if var frame = pending, let onFrame {
            // Cancelled between a step and its read-out.
            frame.decoded = readOut(xt.ptr)
            onFrame(frame)
        }
        let tokens = lastDecoded ?? readOut(xt.ptr)
        return SampleResult(sample: xt.array, tokens: tokens, cancelled: cancelled)
    }

    /// One DPM-Solver++(2M) update (data prediction, multistep, time-uniform grid over the
    /// respaced process, lower-order final step): x_{t_k} from x_{t_{k−1}} and the model's x̂₀.
    private func dpmStep(process: NoiseSchedule, k: Int, indices: [Int], xt: FloatBuffer, x0: FloatBuffer,
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
