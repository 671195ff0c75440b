import Foundation
import Testing
@testable import DiffuSeqCore

/// Fixture: make_fixtures.py — `p_sample10.*` (official p_sample_loop on the respaced 10-step
/// process, clamping every step) and `ddim10.*` (official `--step 10` DDIM path), with the
/// official noise injected.
@Suite("Sampling trajectories vs the official code")
struct SamplerTests {
    func runTrajectory(_ kind: SamplerKind, prefix: String, engine: SamplingEngine, library: MatMulLibrary = .openblas) throws
        -> (frames: [DiffusionFrame], result: SampleResult, g: Golden) {
        let g = try Golden("golden.safetensors")
        var context = ComputeContext(engine: engine)
        context.library = library
        let sampler = try DiffusionSampler(model: try loadTinyModel(), context: context)
        #expect(sampler.matMul.library == library)
        let ids = g.i64("batch.input_ids"), mask = g.i64("batch.input_mask")
        let initNoise = g.f32("sample.noise_init")
        let stepNoise = g.f32("p_sample10.step_noise")
        let n = 2 * 16 * 16
        var frames: [DiffusionFrame] = []
        let result = try sampler.run(
            ids: ids, mask: mask, batch: 2, seeds: [1, 2],
            options: SamplerOptions(kind: kind, steps: 10, decodeEveryStep: true),
            noise: { step, out, count in
                precondition(count == n)
                let src = step < 0 ? initNoise : Array(stepNoise[(step * n)..<((step + 1) * n)])
                out.update(from: src, count: n)
            },
            onFrame: { frames.append($0) })
        return (frames, result, g)
    }

    func check(_ kind: SamplerKind, prefix: String, engine: SamplingEngine, library: MatMulLibrary = .openblas) throws {
        let (frames, result, g) = try runTrajectory(kind, prefix: prefix, engine: engine, library: library)
        #expect(frames.count == 10)
        let n = 512
        let xs = g.f32(prefix + ".x"), rounded = g.i64(prefix + ".rounded_ids")
        let decoded = g.i64(prefix + ".logits_argmax_ids"), ts = g.i64(prefix + ".t")
        let tModel = g.f32(prefix + ".t_model")
        for (k, f) in frames.enumerated() {
            let (d, at) = maxAbsDiff(f.xt, Array(xs[(k * n)..<((k + 1) * n)]))
            #expect(d <= 1e-4, "\(prefix) step \(k): x max |diff| \(d) at \(at)")
            #expect(f.rounded.map(Int.init) == Array(rounded[(k * 32)..<((k + 1) * 32)]), "\(prefix) step \(k): rounded ids")
            #expect(f.decoded.map(Int.init) == Array(decoded[(k * 32)..<((k + 1) * 32)]), "\(prefix) step \(k): decoded ids")
            #expect(Float(f.t) * 20 == tModel[k], "\(prefix) step \(k): t \(f.t) vs t_model \(tModel[k]) (index \(ts[k]))")
        }
        let (d, at) = maxAbsDiff(result.sample, Array(xs[(10 * n)...]))
        #expect(d <= 1e-4, "\(prefix) final x max |diff| \(d) at \(at)")
        #expect(result.tokens.map(Int.init) == Array(decoded[(9 * 32)...]))
    }

    @Test("p_sample loop, respaced to 10 steps: x at every step ≤1e-4, ids exact (OpenBLAS and packed engines)",
          arguments: [SamplingEngine.blas, .packed])
    func pSampleTrajectory(engine: SamplingEngine) throws { try check(.ddpm, prefix: "p_sample10", engine: engine) }

    @Test("official --step 10 DDIM path (off-by-gap quirk): x ≤1e-4, ids exact (OpenBLAS and packed engines)",
          arguments: [SamplingEngine.blas, .packed])
    func ddimOfficialTrajectory(engine: SamplingEngine) throws { try check(.ddimOfficial, prefix: "ddim10", engine: engine) }

    @Test("both official trajectories with the network's products on oneDNN fp32: x ≤1e-4, ids exact",
          arguments: [(SamplerKind.ddpm, "p_sample10"), (.ddimOfficial, "ddim10")])
    func trajectoriesOneDNN(kind: SamplerKind, prefix: String) throws {
        _ = try matMul(.onednn)
        try check(kind, prefix: prefix, engine: .blas, library: .onednn)
    }

    @Test("same seed gives identical frames at any batch composition and thread count", arguments: [SamplingEngine.blas, .packed])
    func deterministicSeeds(engine: SamplingEngine) throws {
        let model = try loadTinyModel()
        let sampler = try DiffusionSampler(model: model, context: ComputeContext(engine: engine, threads: 1))
        let g = try Golden("golden.safetensors")
        let ids = g.i64("batch.input_ids"), mask = g.i64("batch.input_mask")
        let o = SamplerOptions(kind: .ddpm, steps: 5, decodeEveryStep: true)
        let a = try sampler.run(ids: ids, mask: mask, batch: 2, seeds: [7, 8], options: o)
        let two = try DiffusionSampler(model: model, context: ComputeContext(engine: engine, threads: 2))
        let b = try two.run(ids: ids, mask: mask, batch: 2, seeds: [7, 8], options: o)
        #expect(a.sample == b.sample)
        // Row 1 alone with seed 8 equals row 1 of the batch.
        let c = try sampler.run(ids: Array(ids[16...]), mask: Array(mask[16...]), batch: 1, seeds: [8], options: o)
        #expect(Array(a.sample[256...]) == c.sample)
        let d = try sampler.run(ids: ids, mask: mask, batch: 2, seeds: [7, 9], options: o)
        #expect(Array(a.sample[256...]) != Array(d.sample[256...]))
    }

    @Test("a cancelled run that reads out every step still delivers every computed frame, in order, decoded")
    func cancellationWithReadOut() throws {
        let sampler = try DiffusionSampler(model: try loadTinyModel())
        let g = try Golden("golden.safetensors")
        var frames: [DiffusionFrame] = []
        let r = try sampler.run(ids: g.i64("batch.input_ids"), mask: g.i64("batch.input_mask"), batch: 2, seeds: [1, 2],
                                options: SamplerOptions(steps: 50, decodeEveryStep: true), isCancelled: { frames.count >= 3 },
                                onFrame: { frames.append($0) })
        #expect(r.cancelled)
        #expect(frames.count >= 3 && frames.count < 50)
        #expect(frames.map(\.index) == Array(0..<frames.count))
        #expect(frames.allSatisfy { $0.decoded.count == 32 })
        // The last delivered frame's read-out is of the run's final state.
        #expect(frames.last?.decoded == r.tokens)
        // Every read-out is argmax lm_head of the state the step produced (the next frame's input).
        for k in 0..<(frames.count - 1) {
            let next = frames[k + 1].xt
            #expect(frames[k].decoded == sampler.readOut(next), "frame \(k)")
        }
    }

    @Test("fused query/key/value projections give the separate projections' output")
    func fusedProjections() throws {
        let model = try loadTinyModel()
        let c = model.config
        let B = 2, T = c.seqLen, n = B * T * c.hiddenDim
        var rng = SeededRandom(seed: 3)
        var x = [Float](repeating: 0, count: n)
        x.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, n) }
        let acts = Activations(config: c, B: B, T: T, keepLayerCaches: false, dropout: false)
        let plain = Array(UnsafeBufferPointer(start: model.forward(x: x, tModel: [3, 700], acts: acts, dropout: nil), count: n))
        let fused = Array(UnsafeBufferPointer(start: model.forward(x: x, tModel: [3, 700], acts: acts, dropout: nil,
                                                                   weights: PreparedWeights(model: model, mm: OpenBLASMatMul.shared, fuseQKV: true)), count: n))
        let (d, at) = maxAbsDiff(plain, fused)
        #expect(d <= 1e-6, "max |diff| \(d) at \(at)")
    }

    @Test("a cancelled run stops early")
    func cancellation() throws {
        let sampler = try DiffusionSampler(model: try loadTinyModel())
        let g = try Golden("golden.safetensors")
        var seen = 0
        let r = try sampler.run(ids: g.i64("batch.input_ids"), mask: g.i64("batch.input_mask"), batch: 2, seeds: [1, 2],
                                options: SamplerOptions(steps: 50), isCancelled: { seen >= 3 }, onFrame: { _ in seen += 1 })
        #expect(r.cancelled)
        #expect(seen == 3)
    }
}

@Suite("Noise schedules")
struct ScheduleTests {
    func rel(_ a: Double, _ b: Double) -> Double { abs(a - b) / max(abs(b), 1e-300) }

    @Test("sqrt schedule (50 steps) and its 10-step respacing equal the fixtures to 1e-6 relative")
    func sqrtMatchesFixture() throws {
        let g = try Golden("golden.safetensors")
        let s = try NoiseSchedule(named: "sqrt", steps: 50)
        let r = try s.respaced(steps: 10)
        #expect(r.timestepMap == g.i64("schedule10.timestep_map"))
        for (sched, prefix) in [(s, "schedule50"), (r, "schedule10")] {
            let arrays: [(String, [Double])] = [
                ("betas", sched.betas), ("alphas_cumprod", sched.alphasCumprod),
                ("alphas_cumprod_prev", sched.alphasCumprodPrev), ("posterior_variance", sched.posteriorVariance),
                ("posterior_log_variance_clipped", sched.posteriorLogVarianceClipped),
                ("posterior_mean_coef1", sched.posteriorMeanCoef1), ("posterior_mean_coef2", sched.posteriorMeanCoef2),
            ] + (prefix == "schedule50" ? [
                ("alphas_cumprod_next", sched.alphasCumprodNext), ("sqrt_alphas_cumprod", sched.sqrtAlphasCumprod),
                ("sqrt_one_minus_alphas_cumprod", sched.sqrtOneMinusAlphasCumprod),
                ("log_one_minus_alphas_cumprod", sched.logOneMinusAlphasCumprod),
                ("sqrt_recip_alphas_cumprod", sched.sqrtRecipAlphasCumprod),
                ("sqrt_recipm1_alphas_cumprod", sched.sqrtRecipm1AlphasCumprod),
            ] : [])
            for (name, got) in arrays {
                let want = g.f64(prefix + "." + name)
                #expect(want.count == got.count, "\(prefix).\(name) count")
                let worst = zip(got, want).map { rel($0, $1) }.max() ?? 0
                #expect(worst <= 1e-6, "\(prefix).\(name): max relative diff \(worst)")
            }
        }
    }

    @Test("sqrt at T=2000 equals the spec's reference table (§2.2)")
    func sqrtReferenceTable() throws {
        let s = try NoiseSchedule(named: "sqrt", steps: 2000)
        let v = s.fixedLargeVariance
        let rows: [(Int, Double, Double, Double)] = [
            (0, 0.0146413, 0.985359, 0.00556182), (1, 0.00888909, 0.9766, 0.00888909),
            (10, 0.0036818, 0.934512, 0.0036818), (500, 0.000999501, 0.504445, 0.000999501),
            (1000, 0.00120698, 0.295423, 0.00120698), (1998, 0.555611, 2.0204e-4, 0.555611),
            (1999, 0.999, 2.0204e-7, 0.999),
        ]
        for (i, beta, ab, variance) in rows {
            #expect(rel(s.betas[i], beta) < 1e-4, "beta[\(i)] \(s.betas[i])")
            #expect(rel(s.alphasCumprod[i], ab) < 1e-4, "alphabar[\(i)] \(s.alphasCumprod[i])")
            #expect(rel(v[i], variance) < 1e-4, "var[\(i)] \(v[i])")
        }
        #expect(rel(s.posteriorMeanCoef1[1], 0.37708) < 1e-4)
        #expect(rel(s.posteriorMeanCoef2[500], 0.998482) < 1e-5)
    }

    @Test("linear, cosine, trunc_cos, trunc_lin, pw_lin follow the spec's formulas")
    func otherSchedules() throws {
        let T = 100
        let lin = try NoiseSchedule.betas(named: "linear", steps: T)
        #expect(abs(lin[0] - 0.001) < 1e-15 && abs(lin[T - 1] - 0.2) < 1e-15)
        #expect(abs(lin[50] - (0.001 + 50 * (0.199 / 99))) < 1e-12)
        let cosF = { (t: Double) in pow(cos((t + 0.008) / 1.008 * Double.pi / 2), 2) }
        let cosB = try NoiseSchedule.betas(named: "cosine", steps: T)
        #expect(abs(cosB[10] - (1 - cosF(0.11) / cosF(0.10))) < 1e-15)
        #expect(cosB[T - 1] == 0.999)
        let tc = try NoiseSchedule.betas(named: "trunc_cos", steps: T)
        let tcF = { (t: Double) in pow(cos((t + 0.1) / 1.1 * Double.pi / 2), 2) }
        #expect(abs(tc[0] - (1 - tcF(0))) < 1e-15)
        #expect(abs(tc[5] - (1 - tcF(0.05) / tcF(0.04))) < 1e-15)
        let tl = try NoiseSchedule.betas(named: "trunc_lin", steps: T)
        #expect(abs(tl[0] - 0.011) < 1e-15 && abs(tl[T - 1] - 0.21) < 1e-15)
        let pw = try NoiseSchedule.betas(named: "pw_lin", steps: T)
        #expect(pw.count == T)
        #expect(abs(pw[0] - 0.011) < 1e-15 && abs(pw[9] - 0.001) < 1e-15 && abs(pw[10] - 0.001) < 1e-15 && abs(pw[T - 1] - 0.2) < 1e-15)
        #expect(throws: EngineError.self) { try NoiseSchedule.betas(named: "nope", steps: T) }
    }

    @Test("space_timesteps: sections, ddimN, errors")
    func spaceTimesteps() throws {
        #expect(try NoiseSchedule.spaceTimesteps(50, "10") == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49])
        #expect(try NoiseSchedule.spaceTimesteps(2000, "ddim100") == Array(stride(from: 0, to: 2000, by: 20)))
        #expect(try NoiseSchedule.spaceTimesteps(10, "3,2") == [0, 2, 4, 5, 9])
        #expect(throws: EngineError.self) { try NoiseSchedule.spaceTimesteps(10, "20") }
        #expect(throws: EngineError.self) { try NoiseSchedule.spaceTimesteps(10, "abc") }
    }
}

@Suite("Fast samplers")
struct FastSamplerTests {
    func run(_ kind: SamplerKind, steps: Int, rounding: Bool = true) throws -> SampleResult {
        let g = try Golden("golden.safetensors")
        let sampler = try DiffusionSampler(model: try loadTinyModel())
        return try sampler.run(ids: g.i64("batch.input_ids"), mask: g.i64("batch.input_mask"), batch: 2, seeds: [5, 6],
                               options: SamplerOptions(kind: kind, steps: steps, rounding: rounding))
    }

    @Test("DDIM on the full process equals the official DDIM path at steps = T")
    func ddimFullEqualsOfficial() throws {
        let a = try run(.ddim, steps: 50), b = try run(.ddimOfficial, steps: 50)
        #expect(maxAbsDiff(a.sample, b.sample).0 <= 1e-6)
        #expect(a.tokens == b.tokens)
    }

    @Test("DPM-Solver++ with 2 steps is first order, i.e. DDIM η=0 (with and without rounding)")
    func dpmFirstOrderIsDDIM() throws {
        for r in [true, false] {
            let a = try run(.dpmSolver, steps: 2, rounding: r), b = try run(.ddim, steps: 2, rounding: r)
            let (d, _) = maxAbsDiff(a.sample, b.sample)
            #expect(d <= 1e-5, "rounding \(r): max |diff| \(d)")
        }
    }

    @Test("DPM-Solver++ second-order steps differ from DDIM and stay finite")
    func dpmSecondOrder() throws {
        let a = try run(.dpmSolver, steps: 10, rounding: false), b = try run(.ddim, steps: 10, rounding: false)
        #expect(a.sample.allSatisfy { $0.isFinite })
        #expect(maxAbsDiff(a.sample, b.sample).0 > 1e-4)
    }

    @Test("steps beyond T and zero steps are clear errors")
    func badSteps() throws {
        #expect(throws: EngineError.self) { try run(.ddpm, steps: 51) }
        #expect(throws: EngineError.self) { try run(.ddpm, steps: 0) }
    }
}

@Suite("Rounding over vocabulary chunks")
struct RoundingChunkTests {
    /// A random table of 3,000 embeddings (3 chunks) with deliberate exact ties.
    func index() -> (EmbeddingIndex, [Float], Int) {
        let V = 3000, D = 8
        var rng = SeededRandom(seed: 11)
        var table = [Float](repeating: 0, count: V * D), bias = [Float](repeating: 0, count: V)
        table.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, V * D) }
        bias.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, V) }
        for j in 0..<D { table[2500 * D + j] = table[17 * D + j] }  // id 2500 ties with id 17
        bias[2500] = bias[17]
        let idx = table.withUnsafeBufferPointer { t in
            bias.withUnsafeBufferPointer { b in EmbeddingIndex(table: t.baseAddress!, bias: b.baseAddress!, V: V, D: D) }
        }
        var x = [Float](repeating: 0, count: 40 * D)
        x.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, 40 * D) }
        for j in 0..<D { x[3 * D + j] = table[17 * D + j] }  // row 3 sits exactly on the tie
        return (idx, x, D)
    }

    @Test("nearest and argmax equal a one-by-one scan (lowest id on ties) at 1, 2 and 3 workers")
    func chunksAgree() throws {
        let (idx, x, D) = index()
        let rows = x.count / D
        // Reference: brute force with the same distance formula, first minimum wins.
        var want = [Int32](repeating: 0, count: rows), wantArg = [Int32](repeating: 0, count: rows)
        var wantMargin = [Float](repeating: 0, count: rows)
        for r in 0..<rows {
            var xn: Float = 0
            for j in 0..<D { xn += x[r * D + j] * x[r * D + j] }
            var b1 = Float.infinity, b2 = Float.infinity, a: Int32 = 0, bl = -Float.infinity, al: Int32 = 0
            for k in 0..<idx.V {
                var dot: Float = 0
                for j in 0..<D { dot += x[r * D + j] * idx.table.ptr[k * D + j] }
                let d = max((idx.norms.ptr[k] + xn) - 2 * dot, 0)
                if d < b1 { b2 = b1; b1 = d; a = Int32(k) } else if d < b2 { b2 = d }
                let l = dot + idx.bias.ptr[k]
                if l > bl { bl = l; al = Int32(k) }
            }
            want[r] = a; wantMargin[r] = b2 - b1; wantArg[r] = al
        }
        #expect(want[3] == 17, "row 3 sits on the tie between ids 17 and 2500")
        var first: ([Int32], [Float])?
        for w in [1, 2, 3] {
            let binding = ComputeContext(threads: w).bindToThread()
            defer { ComputeContext.restoreBinding(binding) }
            var ids = [Int32](repeating: -1, count: rows), margins = [Float](repeating: -1, count: rows)
            var arg = [Int32](repeating: -1, count: rows)
            x.withUnsafeBufferPointer { xp in
                ids.withUnsafeMutableBufferPointer { ip in
                    margins.withUnsafeMutableBufferPointer { mp in
                        idx.nearest(xp.baseAddress!, rows: rows, ids: ip.baseAddress!, margins: mp.baseAddress!)
                    }
                }
                arg.withUnsafeMutableBufferPointer { idx.argmaxLogits(xp.baseAddress!, rows: rows, ids: $0.baseAddress!) }
            }
            #expect(ids == want, "nearest at \(w) workers")
            #expect(arg == wantArg, "argmax at \(w) workers")
            #expect(ids[3] == 17 && margins[3] == 0, "an exact tie keeps the lower id and a zero margin")
            if let f = first { #expect(f.0 == ids && f.1 == margins, "identical at \(w) workers") } else { first = (ids, margins) }
            // Distances come from BLAS in a different order than the scalar loop: margins agree closely.
            for r in 0..<rows { #expect(abs(margins[r] - wantMargin[r]) <= 1e-3 * max(1, wantMargin[r])) }
        }
    }

    @Test("one product for nearest and argmax rows gives the separate calls' results, in both BLAS profiles' layouts")
    func mergedScan() throws {
        let (idx, x, D) = index()
        let rows = x.count / D, n1 = 25, n2 = rows - n1
        func separate() -> ([Int32], [Float], [Int32]) {
            var ids = [Int32](repeating: -1, count: n1), margins = [Float](repeating: -1, count: n1)
            var arg = [Int32](repeating: -1, count: n2)
            x.withUnsafeBufferPointer { xp in
                idx.nearest(xp.baseAddress!, rows: n1, ids: &ids, margins: &margins)
                idx.argmaxLogits(xp.baseAddress! + n1 * D, rows: n2, ids: &arg)
            }
            return (ids, margins, arg)
        }
        func merged() -> ([Int32], [Float], [Int32]) {
            var ids = [Int32](repeating: -1, count: n1), margins = [Float](repeating: -1, count: n1)
            var arg = [Int32](repeating: -1, count: n2)
            x.withUnsafeBufferPointer { xp in
                idx.scan(nearest: xp.baseAddress!, rows: n1, ids: &ids, margins: &margins,
                         logits: xp.baseAddress! + n1 * D, rows: n2, ids: &arg)
            }
            return (ids, margins, arg)
        }
        let a = separate(), b = merged()
        #expect(a.0 == b.0 && a.1 == b.1 && a.2 == b.2)
        // Latency profile layout: one worker, 2,048-column chunks, products threaded by OpenBLAS.
        let c = ComputeContext(profile: .latency).run { merged() }
        #expect(a.0 == c.0 && a.2 == c.2)
        for r in 0..<n1 { #expect(abs(a.1[r] - c.1[r]) <= 1e-4 * max(1, a.1[r]), "margin \(r)") }
    }

    @Test("sampling without frames (target rows rounded only) gives the run with frames, for every sampler")
    func framesDoNotChangeTheRun() throws {
        let sampler = try DiffusionSampler(model: try loadTinyModel())
        let g = try Golden("golden.safetensors")
        let ids = g.i64("batch.input_ids"), mask = g.i64("batch.input_mask")
        #expect(mask.contains(0) && mask.contains(1))
        for kind in SamplerKind.allCases {
            let o = SamplerOptions(kind: kind, steps: 6)
            let a = try sampler.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o)
            var frames = 0
            let b = try sampler.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o, onFrame: { _ in frames += 1 })
            #expect(frames >= 6)
            #expect(a.sample == b.sample, "\(kind.rawValue)")
            #expect(a.tokens == b.tokens, "\(kind.rawValue)")
        }
    }
}
