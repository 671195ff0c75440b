// Explicit SIMD versions of the hot row reductions: Swift does not reassociate float sums, so
// plain loops with an accumulator stay scalar. The package targets baseline x86-64 (SSE2), so
// vectors are 4 lanes: with 16 lanes every constant of `fexpVec` took 4 registers and the loop
// spilled to the stack (measured: the CE pass was 40 % of a training step).

typealias FVec = SIMD4<Float>
let lanes = FVec.scalarCount

extension Kernels {
    /// eˣ on every lane, the same algorithm as `fexp`.
    @inline(__always)
    static func fexpVec(_ x: FVec) -> FVec {
        // pointwiseMin/Max and bit casts only: generic SIMD helpers (`clamped`, rounding
        // conversions) are not vectorised by the compiler and were 20× slower.
        let xc = pointwiseMax(pointwiseMin(x, FVec(repeating: 88)), FVec(repeating: -87))
        let big = xc * 1.442_695_04 + 12_582_912.0       // n sits in the low mantissa bits
        let n = big - 12_582_912.0
        let r = (xc - n * 0.693_145_75) - n * 1.428_606_8e-6
        var p = FVec(repeating: 1.0 / 5040)
        p = p * r + 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        let bits = (unsafeBitCast(big, to: SIMD4<UInt32>.self) &- 0x4B3F_FF81) &<< 23   // (n + 127) << 23
        return p * unsafeBitCast(bits, to: FVec.self)
    }

    /// max of n floats.
    @inline(__always)
    static func rowMax(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        var k = 0
        var acc = FVec(repeating: -.infinity)
        let raw = UnsafeRawPointer(p)
        while k + lanes <= n {
            acc = pointwiseMax(acc, raw.loadUnaligned(fromByteOffset: k * 4, as: FVec.self))
            k += lanes
        }
        var m = acc.max()
        while k < n { m = Swift.max(m, p[k]); k += 1 }
        return m
    }

    /// p[k] ← exp(p[k] − shift) for k < n; returns Σ p[k].
    @inline(__always)
    static func expShiftSum(_ p: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
        var k = 0
        var acc = FVec(repeating: 0)
        let raw = UnsafeMutableRawPointer(p)
        let s = FVec(repeating: shift)
        while k + lanes <= n {
            let e = fexpVec(raw.loadUnaligned(fromByteOffset: k * 4, as: FVec.self) - s)
            raw.storeBytes(of: e, toByteOffset: k * 4, as: FVec.self)
            acc += e
            k += lanes
        }
        var sum = acc.sum()
        while k < n { let e = fexp(p[k] - shift); p[k] = e; sum += e; k += 1 }
        return sum
    }

    /// Σ exp(p[k] − shift), p unchanged.
    @inline(__always)
    static func expShiftSumReadOnly(_ p: UnsafePointer<Float>, _ n: Int, shift: Float) -> Float {
        var k = 0
        var acc = FVec(repeating: 0)
        let raw = UnsafeRawPointer(p)
        let s = FVec(repeating: shift)
        while k + lanes <= n {
            acc += fexpVec(raw.loadUnaligned(fromByteOffset: k * 4, as: FVec.self) - s)
            k += lanes
        }
        var sum = acc.sum()
        while k < n { sum += fexp(p[k] - shift); k += 1 }
        return sum
    }

    /// p[k] ← p[k]·a for k < n.
    @inline(__always)
    static func scale(_ p: UnsafeMutablePointer<Float>, _ n: Int, by a: Float) {
        for k in 0..<n { p[k] *= a }
    }
}

extension Kernels {
    /// Logits more than this below a row's maximum are left out of the sparse softmax: their
    /// probabilities are under e⁻³⁰ ≈ 10⁻¹³ of the largest, so all of them together (V·e⁻³⁰ ≤ 3·10⁻⁹
    /// for V = 30,522) change the normaliser by less than float32 resolution, and their gradient
    /// entries are 10⁻¹³ of the row's scale. (PyTorch's float32 softmax itself underflows below
    /// about e⁻⁸⁷ of the maximum.) A row with more than `cap` entries above the cut takes the dense path.
    static let softmaxCutoff: Float = 30

    /// Sparse softmax numerator of one row: for every k with p[k] ≥ shift − `softmaxCutoff`
    /// (in index order) writes k to `idx` and exp(p[k] − shift) to `val`, returning (Σ val, count),
    /// or nil when more than `cap` entries qualify (the caller falls back to the dense path).
    @inline(__always)
    static func sparseExpShift(_ p: UnsafePointer<Float>, _ n: Int, shift: Float,
                               idx: UnsafeMutablePointer<Int32>, val: UnsafeMutablePointer<Float>, cap: Int) -> (Float, Int)? {
        let threshold = shift - softmaxCutoff
        let tv = FVec(repeating: threshold)
        let raw = UnsafeRawPointer(p)
        var count = 0, sum: Float = 0, k = 0
        while k + lanes <= n {
            let v = raw.loadUnaligned(fromByteOffset: k * 4, as: FVec.self)
            if any(v .>= tv) {
                for l in 0..<lanes where v[l] >= threshold {
                    if count == cap { return nil }
                    let e = fexp(v[l] - shift)
                    idx[count] = Int32(k + l); val[count] = e; sum += e; count += 1
                }
            }
            k += lanes
        }
        while k < n {
            if p[k] >= threshold {
                if count == cap { return nil }
                let e = fexp(p[k] - shift)
                idx[count] = Int32(k); val[count] = e; sum += e; count += 1
            }
            k += 1
        }
        return (sum, count)
    }
}
