import CDNNL
import Foundation
import Testing
@testable import DiffuSeqCore

/// The matrix-product backend of a library and precision; oneDNN must load (CI installs libdnnl-dev).
func matMul(_ library: MatMulLibrary, bf16: Bool = false) throws -> any MatMul {
    if library == .openblas { return OpenBLASMatMul.shared }
    let m = OneDNN.matMul(bf16: bf16)
    try #require(m != nil, "oneDNN: \(OneDNN.loadError ?? "?")")
    return try #require(m)
}

/// ‖a − b‖ / ‖b‖ in Double.
func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    var num = 0.0, den = 0.0
    for i in 0..<min(a.count, b.count) {
        let d = Double(a[i]) - Double(b[i])
        num += d * d
        den += Double(b[i]) * Double(b[i])
    }
    return (num / max(den, 1e-300)).squareRoot()
}

@Suite("Matrix-product backends: OpenBLAS, oneDNN fp32 and bf16")
struct MatMulTests {
    static func random(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var rng = SeededRandom(seed: seed)
        var x = [Float](repeating: 0, count: n)
        x.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, n) }
        return x.map { $0 * scale }
    }

    @Test("bf16 conversion: the AVX512-BF16 instruction and the portable code give the same bits")
    func conversionBits() {
        var x = Self.random(4099, seed: 1)  // an odd tail past the 32-wide blocks
        let specials: [Float] = [0, -0, 1, -1, .infinity, -.infinity, .nan, 1.00390625, 1.01171875, 3.0e38, -3.4e38,
                                 Float.leastNonzeroMagnitude, -Float.leastNormalMagnitude / 2, Float.leastNormalMagnitude,
                                 Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), Float(bitPattern: 0x7F7F_FFFF)]
        x.replaceSubrange(0..<specials.count, with: specials)
        var fast = [UInt16](repeating: 0, count: x.count), portable = fast
        dsq_f32_to_bf16(&fast, x, x.count)
        dsq_f32_to_bf16_portable(&portable, x, x.count)
        #expect(fast == portable, "first difference at \(fast.indices.first { fast[$0] != portable[$0] } ?? -1)")
        // Ties go to even; the float of each bf16 is within half a bf16 ulp (2⁻⁹ relative).
        #expect(portable[14] == 0x3F80 && portable[15] == 0x3F82)
        var inPlace = x
        inPlace.withUnsafeMutableBufferPointer { dsq_f32_to_bf16_inplace($0.baseAddress!, x.count) }
        let halves = inPlace.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self).prefix(x.count)) }
        #expect(halves == portable, "in-place conversion differs")
        var back = [Float](repeating: 0, count: x.count)
        dsq_bf16_to_f32(&back, portable, x.count)
        #expect(back[6].isNaN && back[4] == .infinity && back[11] == 0 && back[12] == 0)
        for i in specials.count..<x.count { #expect(abs(back[i] - x[i]) <= abs(x[i]) / 256) }
    }

    /// C = alpha·op(A)·op(B) + beta·C in every form, on a backend and on OpenBLAS.
    static func forms(_ mm: any MatMul) -> [(String, [Float], [Float])] {
        var out: [(String, [Float], [Float])] = []
        let m = 37, n = 29, k = 45
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            for (alpha, beta) in [(Float(1), Float(0)), (0.5, 1), (1, 1)] {
                let a = Self.random(m * k, seed: 2), b = Self.random(k * n, seed: 3), c0 = Self.random(m * n, seed: 4)
                var c = c0, ref = c0
                let lda = ta ? m : k, ldb = tb ? k : n
                a.withUnsafeBufferPointer { ap in
                    b.withUnsafeBufferPointer { bp in
                        c.withUnsafeMutableBufferPointer { cp in
                            mm.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: alpha, a: ap.baseAddress!, lda: lda,
                                    b: bp.baseAddress!, ldb: ldb, beta: beta, c: cp.baseAddress!, ldc: n)
                        }
                        ref.withUnsafeMutableBufferPointer { cp in
                            BLAS.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: alpha, a: ap.baseAddress!, lda: lda,
                                      b: bp.baseAddress!, ldb: ldb, beta: beta, c: cp.baseAddress!, ldc: n)
                        }
                    }
                }
                out.append(("transA \(ta) transB \(tb) alpha \(alpha) beta \(beta)", c, ref))
            }
        }
        return out
    }

    @Test("oneDNN fp32 equals OpenBLAS in the NN, NT, TN and TT forms with alpha and beta (1e-6 relative)")
    func oneDNNfp32Forms() throws {
        for (name, got, want) in Self.forms(try matMul(.onednn)) {
            #expect(relativeError(got, want) <= 1e-6, "\(name): \(relativeError(got, want))")
        }
    }

    @Test("bf16 products are within bf16 rounding of fp32 (≤ 6e-3 relative), and are not fp32")
    func bf16Forms() throws {
        for (name, got, want) in Self.forms(try matMul(.onednn, bf16: true)) {
            let e = relativeError(got, want)
            // Each input rounds by ≤ 2⁻⁹ relative; over k = 45 random products the error is ≈ 2⁻⁹·√2/√… ≈ 3e-3.
            #expect(e <= 6e-3 && e >= 1e-4, "\(name): relative error \(e)")
        }
    }

    @Test("Linear forward and backward (NT, NN, TN, bias) on each backend agree with OpenBLAS",
          arguments: [(false, 1e-6), (true, 6e-3)])
    func linearForms(bf16: Bool, tolerance: Double) throws {
        let mm = try matMul(.onednn, bf16: bf16)
        let model = try loadTinyModel()
        let prepared = PreparedWeights(model: model, mm: mm), reference = model.referenceWeights
        let lin = prepared.layers[1].intermediate, ref = reference.layers[1].intermediate
        let n = 33, i = lin.weight.inputs, o = lin.weight.outputs
        let x = Self.random(n * i, seed: 7), dy = Self.random(n * o, seed: 8)
        func run(_ mm: any MatMul, _ l: PreparedWeights.Linear) -> [[Float]] {
            let y = FloatBuffer(count: n * o), dx = FloatBuffer(Self.random(n * i, seed: 9))
            let dw = FloatBuffer(Self.random(o * i, seed: 10)), db = FloatBuffer(Self.random(o, seed: 11))
            x.withUnsafeBufferPointer { xp in
                dy.withUnsafeBufferPointer { dp in
                    mm.linear(y.ptr, xp.baseAddress!, l.weight, l.bias, n: n)
                    mm.linearBackward(dinp: dx.ptr, dw: dw.ptr, db: db.ptr, dout: dp.baseAddress!, inp: xp.baseAddress!,
                                      w: l.weight, n: n)
                }
            }
            return [y.array, dx.array, dw.array, db.array]
        }
        let got = run(mm, lin), want = run(OpenBLASMatMul.shared, ref)
        for (name, (g, w)) in zip(["y", "dx", "dW", "db"], zip(got, want)) {
            let e = relativeError(g, w)
            #expect(e <= (name == "db" ? 1e-6 : tolerance), "\(name): relative error \(e)")
        }
    }

    @Test("oneDNN reuses its primitives: a repeated product creates none")
    func primitiveCache() throws {
        let mm = try matMul(.onednn)
        _ = Self.forms(mm)
        let before = dsq_dnnl_primitives_created()
        _ = Self.forms(mm)
        #expect(dsq_dnnl_primitives_created() == before)
    }

    @Test("bf16 prepared weights are the bf16 rounding of the fp32 weights, re-made by refresh()")
    func preparedCopies() throws {
        let model = try loadTinyModel()
        let prepared = PreparedWeights(model: model, mm: try matMul(.onednn, bf16: true))
        let w = prepared.layers[0].output.weight
        let count = w.outputs * w.inputs
        var want = [UInt16](repeating: 0, count: count)
        dsq_f32_to_bf16_portable(&want, w.f32, count)
        let bf16 = try #require(w.bf16)
        #expect(Array(UnsafeBufferPointer(start: bf16, count: count)) == want)
        model.params.ptr[model.weights.layers[0].output.weight.offset] = 1234
        prepared.refresh()
        #expect(bf16[0] == 0x449A)  // 1234 = 0x449A4000 in fp32
        #expect(prepared.copyBytes >= 2 * count)
    }
}

/// Mixed-precision training against fp32 from the same seed (same batches, timesteps, noise and dropout).
@Suite("bf16 training tracks fp32")
struct BF16TrainingTests {
    /// A trainer of the copy task of `TrainingLearnsTests` (dropout on), its products in bf16 or fp32.
    static func trainer(bf16: Bool, steps: Int) throws -> Trainer {
        let tok = try CustomVocabTokenizer(words: TrainingLearnsTests.words)
        let config = ModelConfig(vocabSize: tok.vocabSize, hiddenDim: 16, hiddenTDim: 16, width: 64, layers: 2, heads: 2,
                                 ffn: 128, maxPositions: 16, seqLen: 12, dropout: 0.1, attentionDropout: 0.1,
                                 diffusionSteps: 50, noiseSchedule: "sqrt")
        let model = try TransformerNetModel(config: config)
        model.initialise(seed: 11)
        var o = TrainingOptions()
        o.lr = 3e-3; o.batchSize = 32; o.microbatch = 32; o.steps = steps; o.scheduleSampler = .lossaware
        o.emaRates = [0.99]; o.seed = 5; o.nllEvery = 1_000_000; o.warmup = 10; o.clip = 1
        let context = ComputeContext(precision: bf16 ? .bf16 : .fp32, threads: 2)
        let trainer = try Trainer(model: model, examples: TrainingLearnsTests.examples(400, seed: 1, tokenizer: tok, seqLen: 12),
                                  options: o, context: context)
        if bf16 {
            _ = try matMul(.onednn, bf16: true)
            try #require(trainer.matMul.precision == .bf16, "\(trainer.matMul.notice ?? "")")
        }
        return trainer
    }

    @Test("120 steps of a tiny copy task: the bf16 loss curve stays within fp32's step-to-step noise; no gradient underflows")
    func lossTracksFP32() throws {
        let steps = 120
        let f = try Self.trainer(bf16: false, steps: steps), h = try Self.trainer(bf16: true, steps: steps)
        var lf: [Double] = [], lh: [Double] = [], underflows = 0
        let layout = f.model.layout
        for s in 0..<steps {
            let rf = f.trainStep(), rh = h.trainStep()
            lf.append(rf.loss); lh.append(rh.loss)
            // No loss scaling: bf16 has fp32's exponent range. Every step's gradient norm agrees with fp32's to 10 %
            // (5 % in the first 10 steps, before the runs drift apart), and no entry that fp32 finds above 10⁻⁶ of its
            // tensor's largest is exactly zero in bf16 (attention key biases, exactly zero in exact arithmetic, aside).
            let r = rh.gradNorm / rf.gradNorm
            #expect(abs(r - 1) <= (s < 10 ? 0.05 : 0.10), "step \(s + 1): gradient norm bf16 \(rh.gradNorm) vs fp32 \(rf.gradNorm)")
            for e in layout.entries where !e.key.hasSuffix("key.bias") {
                let gf = f.grads.ptr + e.offset, gh = h.grads.ptr + e.offset
                let big = (0..<e.count).reduce(Float(0)) { max($0, abs(gf[$1])) }
                underflows += (0..<e.count).filter { gh[$0] == 0 && abs(gf[$0]) > 1e-6 * big }.count
            }
        }
        #expect(underflows == 0, "\(underflows) gradient entries are zero in bf16 and not in fp32")
        // The measure: fp32's own step-to-step noise, the mean |loss_s − loss_{s−1}| over the run. The bf16 curve stays
        // closer to fp32's, on average, than one fp32 step is to the next, and its 20-step means agree to 5 %.
        let noise = (1..<steps).map { abs(lf[$0] - lf[$0 - 1]) }.reduce(0, +) / Double(steps - 1)
        let gap = (0..<steps).map { abs(lh[$0] - lf[$0]) }.reduce(0, +) / Double(steps)
        #expect(gap < noise, "mean |bf16 − fp32| \(gap) vs fp32 step-to-step noise \(noise)")
        for w in stride(from: 0, to: steps, by: 20) {
            let a = lh[w..<(w + 20)].reduce(0, +) / 20, b = lf[w..<(w + 20)].reduce(0, +) / 20
            #expect(abs(a / b - 1) <= 0.05, "steps \(w)..<\(w + 20): mean loss bf16 \(a) vs fp32 \(b)")
        }
        #expect(lf.last! < 0.5 * lf.first! && lh.last! < 0.5 * lh.first!)
        print("bf16 training: mean |bf16 − fp32| loss \(gap), fp32 step-to-step noise \(noise); last losses \(lh.last!) / \(lf.last!)")
    }
}

/// bf16 sampling: the network's products in bf16, the rounding to the nearest embedding exact in fp32.
@Suite("bf16 sampling rounds like fp32")
struct BF16SamplingTests {
    @Test("wherever fp32's rounding margin exceeds twice the bf16 change of any distance, bf16 picks fp32's token")
    func sameTokensAboveTheError() throws {
        let g = try Golden("golden.safetensors")
        let model = try loadTinyModel()
        _ = try matMul(.onednn, bf16: true)
        let f32 = try DiffusionSampler(model: model, context: ComputeContext(engine: .blas, precision: .fp32))
        let b16 = try DiffusionSampler(model: model, context: ComputeContext(engine: .blas, precision: .bf16))
        try #require(b16.matMul.precision == .bf16 && f32.matMul.precision == .fp32)
        let c = model.config, D = c.hiddenDim, V = c.vocabSize, rows = 2 * 16
        let x = g.f32("loss.x_t")
        var checked = 0, decided = 0
        for t: Float in [0, 200, 500, 980] {
            func predict(_ s: DiffusionSampler) -> [Float] {
                let acts = Activations(config: c, B: 2, T: 16, keepLayerCaches: false, dropout: false)
                let out = x.withUnsafeBufferPointer { model.forward(x: $0.baseAddress!, tModel: [t, t], acts: acts, dropout: nil,
                                                                    weights: s.prepared) }
                return Array(UnsafeBufferPointer(start: out, count: rows * D))
            }
            let a = predict(f32), h = predict(b16)
            #expect(a != h, "the bf16 products ran in fp32")
            var idsA = [Int32](repeating: 0, count: rows), idsH = idsA, marginA = [Float](repeating: 0, count: rows), marginH = marginA
            a.withUnsafeBufferPointer { f32.index.nearest($0.baseAddress!, rows: rows, ids: &idsA, margins: &marginA) }
            h.withUnsafeBufferPointer { f32.index.nearest($0.baseAddress!, rows: rows, ids: &idsH, margins: &marginH) }
            let E = model.tensor("word_embedding.weight")!
            for r in 0..<rows {
                // The largest change of any squared distance ‖x − E_k‖² between the fp32 and the bf16 prediction, in Double.
                var worst = 0.0
                for k in 0..<V {
                    var da = 0.0, dh = 0.0
                    for j in 0..<D {
                        let e = Double(E[k * D + j])
                        da += (Double(a[r * D + j]) - e) * (Double(a[r * D + j]) - e)
                        dh += (Double(h[r * D + j]) - e) * (Double(h[r * D + j]) - e)
                    }
                    worst = max(worst, abs(dh - da))
                }
                checked += 1
                if Double(marginA[r]) > 2 * worst + 1e-4 {
                    decided += 1
                    #expect(idsH[r] == idsA[r], "t \(t) row \(r): margin \(marginA[r]) > 2·\(worst) but bf16 picked \(idsH[r]), fp32 \(idsA[r])")
                }
            }
        }
        print("bf16 sampling: \(decided) of \(checked) rows decided by more than twice the bf16 error; all agree")
        // Most rows are decided by more than the bf16 error (otherwise the check would be empty).
        #expect(decided * 2 > checked, "\(decided) of \(checked) rows have a margin above the bf16 error")
    }
}
