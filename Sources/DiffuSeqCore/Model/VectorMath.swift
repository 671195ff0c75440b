// Explicit SIMD versions of the hot row reductions: Swift does not reassociate float sums, so
// plain loops with an accumulator stay scalar. 16 lanes map onto AVX-512 / 2×AVX2 registers.

typealias F16 = SIMD16<Float>

extension Kernels {
    /// eˣ on 16 lanes, the same algorithm as `fexp`.
    @inline(__always)
    static func fexp16(_ x: F16) -> F16 {
        // pointwiseMin/Max and bit casts only: generic SIMD helpers (`clamped`, rounding
        // conversions) are not vectorised by the compiler and were 20× slower.
        let xc = pointwiseMax(pointwiseMin(x, F16(repeating: 88)), F16(repeating: -87))
        let big = xc * 1.442_695_04 + 12_582_912.0       // n sits in the low mantissa bits
        let n = big - 12_582_912.0
        let r = (xc - n * 0.693_145_75) - n * 1.428_606_8e-6
        var p = F16(repeating: 1.0 / 5040)
        p = p * r + 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        let bits = (unsafeBitCast(big, to: SIMD16<UInt32>.self) &- 0x4B3F_FF81) &<< 23   // (n + 127) << 23
        return p * unsafeBitCast(bits, to: F16.self)
    }

    /// max of n floats.
    @inline(__always)
    static func rowMax(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        var k = 0
        var acc = F16(repeating: -.infinity)
        let raw = UnsafeRawPointer(p)
        while k + 16 <= n {
            acc = pointwiseMax(acc, raw.loadUnaligned(fromByteOffset: k * 4, as: F16.self))
            k += 16
        }
        var m = acc.max()
        while k < n { m = Swift.max(m, p[k]); k += 1 }
        return m
    }

    /// p[k] ← exp(p[k] − shift) for k < n; returns Σ p[k].
    @inline(__always)
    static func expShiftSum(_ p: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
        var k = 0
        var acc = F16(repeating: 0)
        let raw = UnsafeMutableRawPointer(p)
        let s = F16(repeating: shift)
        while k + 16 <= n {
            let e = fexp16(raw.loadUnaligned(fromByteOffset: k * 4, as: F16.self) - s)
            raw.storeBytes(of: e, toByteOffset: k * 4, as: F16.self)
            acc += e
            k += 16
        }
        var sum = acc.sum()
        while k < n { let e = fexp(p[k] - shift); p[k] = e; sum += e; k += 1 }
        return sum
    }

    /// Σ exp(p[k] − shift), p unchanged.
    @inline(__always)
    static func expShiftSumReadOnly(_ p: UnsafePointer<Float>, _ n: Int, shift: Float) -> Float {
        var k = 0
        var acc = F16(repeating: 0)
        let raw = UnsafeRawPointer(p)
        let s = F16(repeating: shift)
        while k + 16 <= n {
            acc += fexp16(raw.loadUnaligned(fromByteOffset: k * 4, as: F16.self) - s)
            k += 16
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
