import CKernels
import Foundation
import Testing
@testable import DiffuSeqCore

/// The packed engine (`Sources/CKernels/packed.c`, `PackedModel`): products on weights packed once, its
/// attention and rounding scan, against float64 references and against the OpenBLAS path.
@Suite("Packed engine", .serialized)
struct PackedEngineTests {
    func random(_ n: Int, seed: UInt64) -> [Float] {
        var rng = SeededRandom(seed: seed)
        var a = [Float](repeating: 0, count: n)
        a.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, n) }
        return a
    }

    func pack(_ w: [Float], n: Int, k: Int) -> [Float] {
        var p = [Float](repeating: .nan, count: dsq_packed_count(n, k))
        dsq_pack(&p, w, k, n, k)
        return p
    }

    /// out = act((x·Wᵀ + bias) + res) through the packed product.
    func linear(_ x: [Float], _ w: [Float], m: Int, k: Int, n: Int, bias: [Float]?, res: [Float]?, gelu: Bool,
                threads: Int = 2, portable: Bool = false) -> [Float] {
        let p = pack(w, n: n, k: k)
        var out = [Float](repeating: .nan, count: m * n)
        dsq_linear_packed(&out, n, x, k, m, k, p, n, bias, res, n, gelu ? DSQ_ACT_GELU : DSQ_ACT_NONE, Int32(threads),
                          portable ? 1 : 0)
        return out
    }

    @Test("packed product = float64 reference for ragged shapes, with bias, residual and GELU")
    func linearReference() {
        for (m, k, n) in [(1, 5, 1), (13, 37, 45), (8, 64, 32), (9, 33, 65), (64, 256, 256), (3, 1, 70)] {
            let x = random(m * k, seed: 1), w = random(n * k, seed: 2), b = random(n, seed: 3), r = random(m * n, seed: 4)
            for (useBias, useRes, gelu) in [(false, false, false), (true, false, false), (true, true, false), (true, false, true)] {
                let out = linear(x, w, m: m, k: k, n: n, bias: useBias ? b : nil, res: useRes ? r : nil, gelu: gelu)
                for i in 0..<m {
                    for j in 0..<n {
                        var acc = 0.0, mag = 0.0
                        for q in 0..<k { acc += Double(x[i * k + q]) * Double(w[j * k + q]); mag += abs(Double(x[i * k + q]) * Double(w[j * k + q])) }
                        if useBias { acc += Double(b[j]) }
                        if useRes { acc += Double(r[i * n + j]) }
                        var want = acc
                        if gelu { want = 0.5 * acc * (1 + Foundation.erf(acc / 2.0.squareRoot())) }
                        let got = Double(out[i * n + j])
                        #expect(abs(got - want) <= 2e-6 * (mag + 3), "(\(m),\(k),\(n)) bias \(useBias) res \(useRes) gelu \(gelu) at \(i),\(j): \(got) vs \(want)")
                    }
                }
            }
        }
    }

    @Test("packed products give the same bits with the portable code and at 1, 2 and 3 threads")
    func sameBitsEverywhere() {
        let (m, k, n) = (64, 256, 1024)
        let x = random(m * k, seed: 5), w = random(n * k, seed: 6), b = random(n, seed: 7), r = random(m * n, seed: 8)
        var results: [[Float]] = []
        for threads in [1, 2, 3] {
            results.append(linear(x, w, m: m, k: k, n: n, bias: b, res: r, gelu: false, threads: threads))
            results.append(linear(x, w, m: m, k: k, n: n, bias: b, res: nil, gelu: true, threads: threads))
        }
        results.append(linear(x, w, m: m, k: k, n: n, bias: b, res: r, gelu: false, portable: true))
        results.append(linear(x, w, m: m, k: k, n: n, bias: b, res: nil, gelu: true, portable: true))
        for (i, res) in results.enumerated() {
            #expect(res.map(\.bitPattern) == results[i % 2].map(\.bitPattern), "variant \(i)")
        }
    }

    @Test("packed attention = softmax(scale·Q_h·K_hᵀ)·V_h in float64, ragged and built-in shapes, 1 and 2 threads")
    func attentionReference() {
        for (T, heads, hs) in [(19, 3, 8), (64, 4, 64), (5, 2, 40)] {
            let C = heads * hs
            let qkv = random(T * 3 * C, seed: 11)
            let scale = 1 / Float(hs).squareRoot()
            var outs: [[Float]] = []
            for workers in [1, 2] {
                var ctx = [Float](repeating: .nan, count: T * C)
                var scratch = [Float](repeating: 0, count: dsq_attention_scratch_count(T, hs, Int32(workers)))
                dsq_attention_packed(&ctx, C, qkv, 3 * C, T, heads, hs, scale, &scratch, Int32(workers), 0)
                outs.append(ctx)
            }
            #expect(outs[0].map(\.bitPattern) == outs[1].map(\.bitPattern), "T \(T): threads change the result")
            let ctx = outs[0]
            for h in 0..<heads {
                for i in 0..<T {
                    var s = [Double](repeating: 0, count: T)
                    for j in 0..<T {
                        var d = 0.0
                        for e in 0..<hs { d += Double(qkv[i * 3 * C + h * hs + e]) * Double(qkv[j * 3 * C + C + h * hs + e]) }
                        s[j] = d * Double(scale)
                    }
                    let mx = s.max()!
                    let ex = s.map { Foundation.exp($0 - mx) }, z = ex.reduce(0, +)
                    for e in 0..<hs {
                        var want = 0.0
                        for j in 0..<T { want += ex[j] / z * Double(qkv[j * 3 * C + 2 * C + h * hs + e]) }
                        let got = Double(ctx[i * C + h * hs + e])
                        #expect(abs(got - want) <= 2e-5, "T \(T) head \(h) row \(i) col \(e): \(got) vs \(want)")
                    }
                }
            }
        }
    }

    @Test("packed rounding scan: the BLAS scan's ids (lowest id on ties) and margins, 1 and 2 threads")
    func scanMatchesBLAS() throws {
        let V = 1000, D = 24, n1 = 9, n2 = 7
        var table = random(V * D, seed: 21)
        // Exact ties: rows 40 and 41 equal row 900, so the nearest of a query at row 900 is id 40.
        for j in 0..<D { table[40 * D + j] = table[900 * D + j]; table[41 * D + j] = table[900 * D + j] }
        let bias = random(V, seed: 22)
        var x = random(n1 * D, seed: 23), y = random(n2 * D, seed: 24)
        for j in 0..<D { x[j] = table[900 * D + j]; y[j] = table[41 * D + j] }
        let index = EmbeddingIndex(table: table, bias: bias, V: V, D: D)
        let packedTable = FloatBuffer(pack(table, n: V, k: D))
        func run(_ packed: FloatBuffer?) -> ([Int32], [Float], [Int32]) {
            var ids = [Int32](repeating: -1, count: n1), margins = [Float](repeating: .nan, count: n1)
            var arg = [Int32](repeating: -1, count: n2)
            index.scan(nearest: x, rows: n1, ids: &ids, margins: &margins, logits: y, rows: n2, ids: &arg, packed: packed)
            return (ids, margins, arg)
        }
        let want = run(nil)
        #expect(want.0[0] == 40)
        for threads in [1, 2] {
            let got = ComputeContext(threads: threads).run { run(packedTable) }
            #expect(got.0 == want.0, "nearest ids at \(threads) threads")
            #expect(got.2 == want.2, "argmax ids at \(threads) threads")
            for r in 0..<n1 { #expect(abs(got.1[r] - want.1[r]) <= 1e-4 * max(1, want.1[r]), "margin \(r)") }
        }
    }

    @Test("packed forward = OpenBLAS forward of the fixture model (batch 2) to 2e-5")
    func forwardMatchesBLAS() throws {
        let model = try loadTinyModel()
        let c = model.config
        let B = 2, T = c.seqLen, n = B * T * c.hiddenDim
        let x = random(n, seed: 31)
        let acts = Activations(config: c, B: B, T: T, keepLayerCaches: false, dropout: false)
        let plain = Array(UnsafeBufferPointer(start: model.forward(x: x, tModel: [3, 700], acts: acts, dropout: nil), count: n))
        let packed = PackedModel(model: model)
        let out = x.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: model.forward(x: $0.baseAddress!, tModel: [3, 700], acts: acts, dropout: nil, weights: packed.weights), count: n)) }
        let (d, at) = maxAbsDiff(plain, out)
        #expect(d <= 2e-5, "max |diff| \(d) at \(at)")
    }

    @Test("packed forward = OpenBLAS forward for ragged sizes, with and without the up/down projections",
          arguments: [40, 24])
    func raggedModels(hiddenDim: Int) throws {
        // width 40 (2 heads of 20), ffn 72, hidden_t 12, T 11, V 50: no size is a multiple of the 32-column panels;
        // hidden_dim 40 = width has no projections.
        let c = ModelConfig(vocabSize: 50, hiddenDim: hiddenDim, hiddenTDim: 12, width: 40, layers: 2, heads: 2, ffn: 72,
                            maxPositions: 16, seqLen: 11, dropout: 0, attentionDropout: 0, diffusionSteps: 10)
        #expect(c.hasProjections == (hiddenDim != 40))
        let model = try TransformerNetModel(config: c)
        model.initialise(seed: 4)
        let B = 3, T = c.seqLen, n = B * T * c.hiddenDim
        let x = random(n, seed: 41)
        let acts = Activations(config: c, B: B, T: T, keepLayerCaches: false, dropout: false)
        let plain = Array(UnsafeBufferPointer(start: model.forward(x: x, tModel: [1, 50, 999], acts: acts, dropout: nil), count: n))
        let packed = PackedModel(model: model)
        let out = x.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: model.forward(x: $0.baseAddress!, tModel: [1, 50, 999], acts: acts, dropout: nil, weights: packed.weights), count: n)) }
        let (d, at) = maxAbsDiff(plain, out)
        #expect(d <= 2e-5, "hidden_dim \(hiddenDim): max |diff| \(d) at \(at)")
        // And a short run on each engine gives the same ids.
        let ids = (0..<(B * T)).map { $0 % c.vocabSize }, mask = (0..<(B * T)).map { $0 % T < 4 ? 0 : 1 }
        let o = SamplerOptions(kind: .ddpm, steps: 5, decodeEveryStep: true)
        let a = try DiffusionSampler(model: model, engine: .blas).run(ids: ids, mask: mask, batch: B, seeds: [1, 2, 3], options: o)
        let b = try DiffusionSampler(model: model, engine: .packed).run(ids: ids, mask: mask, batch: B, seeds: [1, 2, 3], options: o)
        #expect(a.tokens == b.tokens)
    }

    @Test("runs on both engines agree (ids exact), and concurrent packed runs equal runs one at a time")
    func enginesAgreeAndConcurrency() throws {
        let model = try loadTinyModel()
        let g = try Golden("golden.safetensors")
        let ids = g.i64("batch.input_ids"), mask = g.i64("batch.input_mask")
        let o = SamplerOptions(kind: .ddpm, steps: 20, decodeEveryStep: true)
        let blas = try DiffusionSampler(model: model, engine: .blas)
        let packed = try DiffusionSampler(model: model, engine: .packed)
        #expect(!blas.usesPackedEngine(batch: 2, seqLen: 16) && packed.usesPackedEngine(batch: 2, seqLen: 16))
        var fa: [DiffusionFrame] = [], fb: [DiffusionFrame] = []
        let a = try blas.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o, onFrame: { fa.append($0) })
        let b = try packed.run(ids: ids, mask: mask, batch: 2, seeds: [5, 6], options: o, onFrame: { fb.append($0) })
        #expect(a.tokens == b.tokens)
        #expect(fa.map(\.rounded) == fb.map(\.rounded))
        #expect(fa.map(\.decoded) == fb.map(\.decoded))
        #expect(maxAbsDiff(a.sample, b.sample).0 <= 1e-4)
        // Two runs at once: one has the pool, the other runs on its own thread; same bits as alone.
        let alone = try packed.run(ids: ids, mask: mask, batch: 2, seeds: [9, 10], options: o)
        let results = UnsafeMutablePointer<SampleResult?>.allocate(capacity: 2)
        results.initialize(repeating: nil, count: 2)
        defer { results.deinitialize(count: 2); results.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            results[i] = try? packed.run(ids: ids, mask: mask, batch: 2, seeds: [9, 10], options: o)
        }
        #expect(results[0]?.sample == alone.sample && results[1]?.sample == alone.sample)
    }
}
