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
