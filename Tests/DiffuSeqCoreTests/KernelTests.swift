import CKernels
import Foundation
import Testing
@testable import DiffuSeqCore

/// Hand-checkable kernel facts and finite-difference checks of every layer's backward.
@Suite("Kernels")
struct KernelTests {
    @Test("ftanh equals libm tanh to 5e-7 (absolute) and 1e-6 (relative) over ±12")
    func fastTanh() {
        var worstAbs: Double = 0, worstRel: Double = 0
        var x: Float = -12
        while x <= 12 {
            let want = Double(Foundation.tanh(Double(x))), got = Double(Kernels.ftanh(x))
            worstAbs = max(worstAbs, abs(got - want))
            if want != 0 { worstRel = max(worstRel, abs(got - want) / abs(want)) }
            x = x.nextUp.isFinite ? x + 0.000_731 : 13
        }
        #expect(worstAbs < 5e-7, "max abs error \(worstAbs)")
        #expect(worstRel < 1e-6, "max relative error \(worstRel)")
        #expect(Kernels.ftanh(0) == 0 && Kernels.ftanh(-0.01) < 0 && Kernels.ftanh(100) == 1 && Kernels.ftanh(-100) == -1)
    }

    @Test("fast exp and erf are accurate over the ranges used")
    func fastMath() {
        var worstExp: Float = 0, worstErf: Float = 0
        var x: Float = -80
        while x < 80 {
            worstExp = max(worstExp, abs(Kernels.fexp(x) - Foundation.exp(x)) / Foundation.exp(x))
            x += 0.0137
        }
        x = -6
        while x < 6 { worstErf = max(worstErf, abs(Kernels.ferf(x) - Foundation.erf(x))); x += 0.001 }
        #expect(worstExp < 5e-7, "exp rel err \(worstExp)")
        #expect(worstErf < 5e-7, "erf abs err \(worstErf)")
    }

    @Test("LayerNorm of [1,2,3] is [-1.2247, 0, 1.2247]")
    func layerNormHand() {
        var out = [Float](repeating: 0, count: 3)
        let inp: [Float] = [1, 2, 3], w: [Float] = [1, 1, 1], b: [Float] = [0, 0, 0]
        out.withUnsafeMutableBufferPointer { o in
            Kernels.layerNorm(o.baseAddress!, mean: nil, rstd: nil, inp, w, b, n: 1, c: 3, eps: 1e-12)
        }
        #expect(abs(out[0] + 1.2247449) < 1e-5 && abs(out[1]) < 1e-6 && abs(out[2] - 1.2247449) < 1e-5)
    }
}

@Suite("C kernels (AVX-512 / AVX2 / baseline, chosen at load)")
struct CKernelTests {
    @Test("GELU in C equals the Swift formula with Kernels.ferf bit for bit, tails included")
    func geluBitwise() {
        var xs: [Float] = [0, -0.0, 1e-30, -1e-30, 4, -4, 5.7, -5.7, 100, -100]
        var x: Float = -9
        while x < 9 { xs.append(x); x += 0.000_913 }
        var out = [Float](repeating: .nan, count: xs.count)
        dsq_gelu(&out, xs, xs.count)  // odd count: the vector loop and its scalar tail
        var bad = 0
        for (i, v) in xs.enumerated() where out[i].bitPattern != (0.5 * v * (1 + Kernels.ferf(v * 0.707_106_78))).bitPattern { bad += 1 }
        #expect(bad == 0, "\(bad) of \(xs.count) differ (variant \(String(cString: dsq_kernels_isa())))")
    }

    @Test("LayerNorm in C matches a float64 reference to 2e-6 with mean and rstd, for widths 3, 37 and 256")
    func layerNormReference() {
        var rng = SeededRandom(seed: 5)
        for c in [3, 37, 256] {
            let n = 5
            var x = [Float](repeating: 0, count: n * c), w = [Float](repeating: 0, count: c), b = [Float](repeating: 0, count: c)
            x.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, n * c) }
            w.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, c) }
            b.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, c) }
            for i in 0..<c { x[i] += 3 }  // a row with a large mean
            var out = [Float](repeating: 0, count: n * c), mean = [Float](repeating: 0, count: n), rstd = [Float](repeating: 0, count: n)
            dsq_layernorm(&out, &mean, &rstd, x, w, b, n, c, 1e-12)
            for r in 0..<n {
                let row = x[(r * c)..<((r + 1) * c)].map(Double.init)
                let m = row.reduce(0, +) / Double(c)
                let v = row.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(c)
                let rs = 1 / (v + 1e-12).squareRoot()
                #expect(abs(Double(mean[r]) - m) <= 2e-6 * max(1, abs(m)), "c \(c) row \(r) mean")
                #expect(abs(Double(rstd[r]) - rs) <= 2e-6 * rs, "c \(c) row \(r) rstd")
                for j in 0..<c {
                    let want = (row[j] - m) * rs * Double(w[j]) + Double(b[j])
                    #expect(abs(Double(out[r * c + j]) - want) <= 2e-5 * max(1, abs(want)), "c \(c) row \(r) col \(j)")
                }
            }
        }
    }

    @Test("row softmax in C matches the Swift softmax to 1e-6 and sums to 1 (widths 5, 64, 77)")
    func softmaxRows() {
        var rng = SeededRandom(seed: 21)
        for c in [5, 64, 77] {
            let rows = 4
            var x = [Float](repeating: 0, count: rows * c)
            x.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, rows * c) }
            for j in 0..<c { x[j] *= 30 }  // a peaked row
            var want = x
            want.withUnsafeMutableBufferPointer { p in for r in 0..<rows { Kernels.softmaxRow(p.baseAddress! + r * c, c) } }
            dsq_softmax_rows(&x, rows, c)
            for r in 0..<rows {
                var s: Double = 0
                for j in 0..<c {
                    s += Double(x[r * c + j])
                    #expect(abs(x[r * c + j] - want[r * c + j]) <= 1e-6, "c \(c) row \(r) col \(j)")
                }
                #expect(abs(s - 1) < 1e-5)
            }
        }
    }

    @Test("matvec in C matches a float64 reference (tail columns included)")
    func matvecReference() {
        var rng = SeededRandom(seed: 9)
        let rows = 11, cols = 37
        var a = [Float](repeating: 0, count: rows * cols), x = [Float](repeating: 0, count: cols)
        a.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, rows * cols) }
        x.withUnsafeMutableBufferPointer { rng.fillNormal($0.baseAddress!, cols) }
        var out = [Float](repeating: 0, count: rows)
        dsq_matvec(&out, a, rows, cols, x)
        for r in 0..<rows {
            let want = (0..<cols).map { Double(a[r * cols + $0]) * Double(x[$0]) }.reduce(0, +)
            #expect(abs(Double(out[r]) - want) <= 1e-5 * max(1, abs(want)), "row \(r)")
        }
        #expect(["avx512f", "avx2", "baseline"].contains(String(cString: dsq_kernels_isa())))
    }
}

@Suite("Vector math")
struct VectorMathTests {
    @Test("16-lane exp equals the scalar exp, and row softmax sums to 1")
    func simdExp() {
        var xs = (0..<160).map { Float($0) - 80.5 }
        let want = xs.map { Kernels.fexp($0) }
        let sum = xs.withUnsafeMutableBufferPointer { Kernels.expShiftSum($0.baseAddress!, 160, shift: 0) }
        for i in 0..<160 { #expect(abs(xs[i] - want[i]) <= 1e-6 * want[i], "lane \(i)") }
        #expect(abs(sum - want.reduce(0, +)) <= 1e-5 * sum)
        var row: [Float] = (0..<37).map { Float($0 % 7) - 3 }
        row.withUnsafeMutableBufferPointer { Kernels.softmaxRow($0.baseAddress!, 37) }
        #expect(abs(row.reduce(0, +) - 1) < 1e-6)
    }
}
