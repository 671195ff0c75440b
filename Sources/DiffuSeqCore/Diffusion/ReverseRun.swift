import Foundation

/// The state of one `DiffusionSampler.run` and its named steps. Shapes: B rows of T positions of D dims,
/// n = B·T·D. "Target rows" are the B·T rows with mask ≠ 0 (target and padding); only they are denoised.
final class ReverseRun {
    let sampler: DiffusionSampler
    let o: SamplerOptions
    let B: Int, T: Int, D: Int, n: Int
    let mask: [Int]
    let process: NoiseSchedule
    let indices: [Int]
    /// The first step this run computes (0, or later for an SDEdit start or a fork).
    let firstStep: Int
    var packed: PackedModel?
    let usesPacked: Bool
    /// (B, T, D) x_t: the state the next step takes as input.
    let xt: FloatBuffer
    /// (B, T, D) x̂₀ after rounding / clipping: what the update uses.
    let x0r: FloatBuffer
    /// (B, T, D) the clean source embeddings (anchor of the mask-0 rows).
    let xStart: FloatBuffer
    /// (B, T, D) the prior mean m (`SamplerOptions.sourcePrior`, else `ModelConfig.sourcePrior`; or the soft absorbing
    /// state on the target rows, `AbsorbingSampling.centred`), nil for the official process (m = 0).
    let prior: FloatBuffer?
    /// The soft absorbing state as DiffuSeq-v2's code samples it (`AbsorbingSampling.v2`), else nil.
    let absorbingV2: AbsorbingV2?
    /// Rows held at a token's embedding: the source rows and the pinned ones, with their anchor values.
    let anchors: [(row: Int, value: UnsafePointer<Float>)]
    let pinTable: FloatBuffer
    /// Flat row indices with mask ≠ 0.
    let targetRows: [Int]
    private let z: FloatBuffer
    private var rngs: [SeededRandom]
    private let injected: NoiseProvider?
    let acts: Activations
    var rounded: [Int32], margins: [Float]
    var dpmPrev: (x0: FloatBuffer, lambda: Double)?
    /// (B, T, D) a self-conditioned model's previous estimate: the last step's raw x̂₀ (zeros before the first step,
    /// or a fork's `SamplerStart.previous` x̂₀), which `predict` feeds and then replaces; nil for other models.
    let previousX0: FloatBuffer?
    // The rounding of runs without frames works on the target rows only, gathered here.
    private let gathered: FloatBuffer
    private let gatheredIDs: UnsafeMutablePointer<Int32>, gatheredMargins: UnsafeMutablePointer<Float>
    // The frame pipeline: a frame waits for its read-out of x_{t−1}, which rides on the next step's rounding.
    private var pending: DiffusionFrame?
    private var decodedSource: [Int32]?
    private let readOutRows: FloatBuffer
    /// The read-out of the final x_0 when the last frame computed it.
    private(set) var lastDecoded: [Int32]?
    private let framed: Bool

    init(sampler s: DiffusionSampler, ids: [Int], mask: [Int], batch B: Int, seeds: [UInt64], options o: SamplerOptions,
         noise: NoiseProvider?, start: SamplerStart?, pins: [Int: Int], packed: PackedModel?, framed: Bool) throws {
        let c = s.model.config, D = c.hiddenDim
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
        guard o.startFraction > 0 && o.startFraction <= 1 else {
            throw EngineError.invalidInput("--start-from-source \(o.startFraction) must be in (0, 1] (1 = from pure noise)")
        }
        for (row, id) in pins {
            guard row >= 0 && row < B * T else { throw EngineError.invalidInput("pinned row \(row) is outside the batch (\(B)×\(T))") }
            guard id >= 0 && id < c.vocabSize else { throw EngineError.invalidInput("pinned token id \(id) is outside the vocabulary (size \(c.vocabSize))") }
        }
        let (process, indices) = try s.plan(o)
        let sdedit = SamplerOptions.sdeditFirstStep(fraction: o.startFraction, steps: indices.count)
        let firstStep = start?.step ?? sdedit
        guard firstStep >= 0 && firstStep < indices.count else {
            throw EngineError.invalidInput("start step \(firstStep) is outside the run's \(indices.count) steps")
        }
        if let start, start.xt.count != ids.count * D {
            throw EngineError.invalidInput("start x_t has \(start.xt.count) values, expected B·T·D = \(ids.count * D)")
        }
        let n = B * T * D
        self.process = process; self.indices = indices; self.firstStep = firstStep
        sampler = s; self.o = o; self.B = B; self.T = T; self.D = D; self.n = n; self.mask = mask
        self.framed = framed
        usesPacked = s.engine.usesPacked(rows: B * T)
        self.packed = packed
        rngs = seeds.map { SeededRandom(seed: $0) }
        injected = noise
        let xStart = FloatBuffer(s.embed(ids))
        self.xStart = xStart
        xt = FloatBuffer(count: n); x0r = FloatBuffer(count: n); z = FloatBuffer(count: n)
        let usesPrior = o.sourcePrior ?? c.sourcePrior
        let needsCopy = usesPrior || (start == nil && firstStep > 0)
        let copy = needsCopy ? SourceCopy.embeddings(ids: ids, mask: mask, batch: B, table: s.index.table.ptr, dim: D,
                                                     padID: s.padID) : []
        let absorbing = try AbsorbingV2.mode(o, sampler: s, sourcePrior: usesPrior)
        let absorbCentre = absorbing == .off ? nil : s.meanEmbed.map { m in
            m.withUnsafeBufferPointer { SoftAbsorbing.centre(mask: mask, dim: D, m: $0.baseAddress!) }
        }
        prior = usesPrior ? FloatBuffer(copy) : absorbing == .centred ? absorbCentre.map(FloatBuffer.init) : nil
        absorbingV2 = absorbing == .v2 ? try AbsorbingV2(o, sampler: s, centre: absorbCentre ?? [], rows: B * T,
                                                          seeded: seeds.count == B) : nil
        let pinTable = FloatBuffer(s.embed(pins.sorted { $0.key < $1.key }.map(\.value)))
        self.pinTable = pinTable
        var a: [(row: Int, value: UnsafePointer<Float>)] = (0..<(B * T)).filter { mask[$0] == 0 && pins[$0] == nil }
            .map { ($0, UnsafePointer(xStart.ptr + $0 * D)) }
        for (q, row) in pins.keys.sorted().enumerated() { a.append((row, UnsafePointer(pinTable.ptr + q * D))) }
        anchors = a
        let targetRows = (0..<(B * T)).filter { mask[$0] != 0 }
        self.targetRows = targetRows
        acts = Activations(config: c, B: B, T: T, keepLayerCaches: false, dropout: false)
        previousX0 = Self.selfConditionStart(c, start: start, n: n)
        rounded = [Int32](repeating: 0, count: B * T); margins = [Float](repeating: 0, count: B * T)
        gathered = FloatBuffer(count: framed ? 0 : targetRows.count * D)
        gatheredIDs = .allocate(capacity: max(1, targetRows.count)); gatheredMargins = .allocate(capacity: max(1, targetRows.count))
        readOutRows = FloatBuffer(count: framed && o.decodeEveryStep ? targetRows.count * D : 0)
        // x at the first step: pure noise (official), the noised source copy (SDEdit), or the fork's state. The noise
        // of the steps before it is drawn and dropped, so that the steps after see the original run's noise.
        drawNoise(-1, into: z.ptr)
        if firstStep > 0 {
            let skipped = FloatBuffer(count: n)
            for k in 0..<firstStep where o.kind == .ddpm && indices[k] != 0 { drawNoise(k, into: skipped.ptr) }
        }
        if let start {
            xt.ptr.update(from: start.xt, count: n)
            if o.kind == .dpmSolver, let prev = start.previous, start.step > 0, prev.index == start.step - 1,
               prev.x0.count == n, prev.rounded.count == B * T {
                // The multistep history: the previous step's x̂₀ as its update used it (on x − m) and its λ.
                rounded = prev.rounded
                prev.x0.withUnsafeBufferPointer { prepareX0($0.baseAddress!, indices[start.step - 1]) }
                if let m = prior { for j in 0..<n { x0r.ptr[j] -= m.ptr[j] } }
                let ab = process.alphasCumprod[indices[start.step - 1]]
                dpmPrev = (x0r.copy(), Foundation.log(ab.squareRoot()) - Foundation.log((1 - ab).squareRoot()))
            }
        } else if firstStep == 0 {
            let centre = prior ?? absorbingV2?.start
            for j in 0..<n { xt.ptr[j] = mask[j / D] == 0 ? xStart.ptr[j] : z.ptr[j] + (centre?.ptr[j] ?? 0) }
        } else {
            // q(x_t | x₀ = copy), centred on m: m + √ᾱ(copy − m) + √(1−ᾱ)·z.
            let ab = process.alphasCumprod[indices[firstStep]]
            let sa = Float(ab.squareRoot()), so = Float((1 - ab).squareRoot())
            for j in 0..<n {
                let m = prior?.ptr[j] ?? 0
                xt.ptr[j] = mask[j / D] == 0 ? xStart.ptr[j] : m + sa * (copy[j] - m) + so * z.ptr[j]
            }
        }
        anchor()
    }

    deinit { gatheredIDs.deallocate(); gatheredMargins.deallocate() }

    /// Fills `out` with the noise of step k (−1: x_T), with the official `--top_p` redraws.
    private func drawNoise(_ k: Int, into out: UnsafeMutablePointer<Float>) {
        if let injected { injected(k, out, n) } else {
            let per = n / B
            for b in 0..<B { rngs[b].fillNormal(out + b * per, per) }
        }
        guard k >= 0 else { return }
        if o.topP > 0 {
            let p = Float(o.topP)
            for j in 0..<n where abs(out[j]) > p {
                let b = j / (T * D)
                repeat { out[j] = rngs.isEmpty ? 0 : rngs[b].normal() } while abs(out[j]) > p
            }
        }
        absorbingV2?.draw(&rngs, T: T)
    }

    /// The network's x̂₀ for x_t at respaced index i: (B, T, D), valid until the next call.
    func predict(_ i: Int) -> UnsafePointer<Float> {
        let c = sampler.model.config
        let tOrig = process.timestepMap[i]
        let tScale = Float(1000.0 / Double(process.originalSteps))
        let tModel = [Float](repeating: c.rescaleTimesteps ? Float(tOrig) * tScale : Float(tOrig), count: B)
        let out = sampler.model.forward(x: xt.ptr, tModel: tModel, acts: acts, dropout: nil,
                                        weights: packed?.weights ?? sampler.prepared, previousX0: previousX0.map { CP($0.ptr) })
        previousX0?.ptr.update(from: out, count: n)  // the next step's x̂₀_prev (the forward has consumed this one)
        return out
    }

    /// Rounds x̂₀ (`out`) to the nearest embeddings into `rounded`/`margins`. A frame waiting for its read-out of
    /// this step's input gets it from the same pass over the embedding table and is returned, ready to go out.
    func round(_ out: UnsafePointer<Float>) -> DiffusionFrame? {
        let idx = sampler.index, table = packed?.table
        if !framed && !targetRows.isEmpty && targetRows.count < B * T {
            // Source rows are re-anchored after the step whatever their rounding is: without frames, round the
            // target rows only (the same result; their `rounded` entries stay stale, nothing reads them).
            for (q, r) in targetRows.enumerated() { (gathered.ptr + q * D).update(from: out + r * D, count: D) }
            idx.nearest(gathered.ptr, rows: targetRows.count, ids: gatheredIDs, margins: gatheredMargins, packed: table)
            for (q, r) in targetRows.enumerated() { rounded[r] = gatheredIDs[q]; margins[r] = gatheredMargins[q] }
            return nil
        }
        guard var frame = pending else {
            rounded.withUnsafeMutableBufferPointer { rp in
                margins.withUnsafeMutableBufferPointer { mp in
                    idx.nearest(out, rows: B * T, ids: rp.baseAddress!, margins: mp.baseAddress!, packed: table)
                }
            }
            return nil
        }
        frame.decoded = decodedSource ?? [Int32](repeating: 0, count: B * T)
        rounded.withUnsafeMutableBufferPointer { rp in
            margins.withUnsafeMutableBufferPointer { mp in
                frame.decoded.withUnsafeMutableBufferPointer { dp in
                    let r = rp.baseAddress!, m = mp.baseAddress!, d = dp.baseAddress!
                    if decodedSource != nil {
                        for (q, row) in targetRows.enumerated() { (readOutRows.ptr + q * D).update(from: xt.ptr + row * D, count: D) }
                        idx.scan(nearest: out, rows: B * T, ids: r, margins: m, logits: readOutRows.ptr, rows: targetRows.count,
                                 ids: gatheredIDs, packed: table)
                        for (q, row) in targetRows.enumerated() { d[row] = gatheredIDs[q] }
                    } else {
                        idx.scan(nearest: out, rows: B * T, ids: r, margins: m, logits: xt.ptr, rows: B * T, ids: d, packed: table)
                    }
                }
            }
        }
        if decodedSource == nil && !targetRows.isEmpty && targetRows.count < B * T { decodedSource = frame.decoded }
        pending = nil
        return frame
    }

    /// x̂₀ as the update uses it: the rounded embeddings where the options round at index i (the official DDIM
    /// path at every step, the others where t ≥ clamp_step), else the raw prediction; clipped if asked.
    func prepareX0(_ out: UnsafePointer<Float>, _ i: Int) {
        if o.rounding && (o.kind == .ddimOfficial || process.timestepMap[i] >= o.clampStep) {
            let table = sampler.index.table.ptr
            for r in 0..<(B * T) { (x0r.ptr + r * D).update(from: table + Int(rounded[r]) * D, count: D) }
        } else {
            x0r.ptr.update(from: out, count: n)
        }
        if o.clipDenoised { for j in 0..<n { x0r.ptr[j] = min(max(x0r.ptr[j], -1), 1) } }
    }

    /// Runs an update on y = x − m (the prior's mean moved to 0: every sampler's formula then holds as
    /// written), then adds m back. Without a prior it runs the update on x itself.
    func withPriorShift(_ update: () -> Void) {
        guard let m = prior else { update(); return }
        for j in 0..<n { xt.ptr[j] -= m.ptr[j]; x0r.ptr[j] -= m.ptr[j] }
        update()
        for j in 0..<n { xt.ptr[j] += m.ptr[j] }
    }

    /// `p_sample`: the posterior mean c1·x̂₀ + c2·x_t plus σ_t·z with the fixed-large variance (no noise at i = 0).
    func pSample(_ k: Int, _ i: Int) {
        let c1 = Float(process.posteriorMeanCoef1[i]), c2 = Float(process.posteriorMeanCoef2[i])
        if i != 0 { drawNoise(k, into: z.ptr) }
        let sigma = Float(Foundation.exp(0.5 * Foundation.log(process.fixedLargeVariance[i])))
        for j in 0..<n {
            let mean = c1 * x0r.ptr[j] + c2 * xt.ptr[j]
            xt.ptr[j] = i != 0 ? mean + sigma * z.ptr[j] : mean
        }
        if i != 0 { absorbingV2?.replace(xt, rows: targetRows, sigma: sigma, dim: D) }
    }

    /// `ddim_sample` with η = 0: ε from x_t and x̂₀, then x_{prev} = √ᾱ_prev·x̂₀ + √(1−ᾱ_prev)·ε.
    func ddimStep(_ i: Int) {
        let rA = Float(process.sqrtRecipAlphasCumprod[i]), rAm1 = Float(process.sqrtRecipm1AlphasCumprod[i])
        let abPrev = Float(process.alphasCumprodPrev[i])
        let sPrev = abPrev.squareRoot(), sNoise = (1 - abPrev).squareRoot()
        for j in 0..<n {
            let eps = (rA * xt.ptr[j] - x0r.ptr[j]) / rAm1
            xt.ptr[j] = x0r.ptr[j] * sPrev + sNoise * eps
        }
    }

    /// Source rows back to their clean embeddings, pinned rows to their token's.
    func anchor() {
        for (row, value) in anchors { (xt.ptr + row * D).update(from: value, count: D) }
    }

    /// argmax lm_head of all B·T rows of x (the source rows' read-out is reused once known).
    func readOut(_ x: UnsafePointer<Float>) -> [Int32] {
        var d = [Int32](repeating: 0, count: B * T)
        let table = packed?.table
        if let base = decodedSource {
            d = base
            for (q, r) in targetRows.enumerated() { (readOutRows.ptr + q * D).update(from: x + r * D, count: D) }
            sampler.index.argmaxLogits(readOutRows.ptr, rows: targetRows.count, ids: gatheredIDs, packed: table)
            for (q, r) in targetRows.enumerated() { d[r] = gatheredIDs[q] }
        } else {
            d.withUnsafeMutableBufferPointer { sampler.index.argmaxLogits(x, rows: B * T, ids: $0.baseAddress!, packed: table) }
        }
        lastDecoded = d
        return d
    }

    /// Step k's frame, or nil when it waits for its read-out (it rides on the next step's rounding).
    func frame(_ k: Int, _ i: Int, xt before: [Float], x0: [Float]) -> DiffusionFrame? {
        let tOrig = process.timestepMap[i], s = sampler.schedule
        var f = DiffusionFrame(index: k, count: indices.count, t: tOrig, diffusionSteps: s.count, noise: s.noiseLevel(tOrig),
                               batch: B, seqLen: T, dim: D, xt: before, x0: x0, rounded: rounded, margin: margins, decoded: [])
        let last = k == indices.count - 1
        if o.decodeEveryStep && !last { pending = f; return nil }
        if o.decodeEveryStep || last { f.decoded = readOut(xt.ptr) }
        return f
    }

    /// The frame still waiting for its read-out when a run is cancelled, read out now.
    func flushPending() -> DiffusionFrame? {
        guard var f = pending else { return nil }
        f.decoded = readOut(xt.ptr)
        pending = nil
        return f
    }
}
