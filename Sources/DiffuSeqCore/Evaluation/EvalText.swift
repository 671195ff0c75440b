import Foundation

/// Python `str` semantics the official evaluation script relies on, implemented on Unicode scalars
/// (Python strings are sequences of code points; Swift `Character`s and `String ==` are not).
enum EvalText {
    /// Python's `str.isspace()` for one code point (bidi class WS/B/S or category Zs).
    @inline(__always)
    static func isSpace(_ v: UInt32) -> Bool {
        switch v {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F,
             0x205F, 0x3000:
            return true
        default:
            return false
        }
    }

    /// Python `s.split()` (no argument): runs of whitespace separate tokens, no empty tokens.
    static func split(_ s: String) -> [String] {
        var out: [String] = []
        var current = String.UnicodeScalarView()
        for u in s.unicodeScalars {
            if isSpace(u.value) {
                if !current.isEmpty {
                    out.append(String(current))
                    current = String.UnicodeScalarView()
                }
            } else {
                current.append(u)
            }
        }
        if !current.isEmpty { out.append(String(current)) }
        return out
    }

    /// Python `s.strip()` (no argument).
    static func strip(_ s: String) -> String {
        let scalars = Array(s.unicodeScalars)
        var lo = 0
        var hi = scalars.count
        while lo < hi, isSpace(scalars[lo].value) { lo += 1 }
        while hi > lo, isSpace(scalars[hi - 1].value) { hi -= 1 }
        if lo == 0 && hi == scalars.count { return s }
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars[lo..<hi])
        return String(view)
    }

    /// Python `s.replace(old, "")`: non-overlapping, left-to-right, code-point-exact deletion.
    /// An empty `old` leaves `s` unchanged (Python would insert the replacement between every
    /// code point, which for an empty replacement is also the identity).
    static func remove(_ old: String, from s: String) -> String {
        let needle = Array(old.unicodeScalars)
        if needle.isEmpty { return s }
        let hay = Array(s.unicodeScalars)
        if hay.count < needle.count { return s }
        var view = String.UnicodeScalarView()
        var i = 0
        var changed = false
        while i < hay.count {
            if i + needle.count <= hay.count && hay[i] == needle[0] {
                var match = true
                var k = 1
                while k < needle.count {
                    if hay[i + k] != needle[k] { match = false; break }
                    k += 1
                }
                if match {
                    i += needle.count
                    changed = true
                    continue
                }
            }
            view.append(hay[i])
            i += 1
        }
        return changed ? String(view) : s
    }

    /// `len(s.split(' '))`: one more than the number of U+0020 code points.
    static func countSplitOnSpace(_ s: String) -> Int {
        var n = 1
        for u in s.utf8 where u == 0x20 { n += 1 }
        return n
    }
}

/// A token compared by its exact code points (Python equality), not by canonical equivalence.
struct ExactToken: Hashable {
    let text: String

    static func == (a: ExactToken, b: ExactToken) -> Bool {
        a.text.utf8.elementsEqual(b.text.utf8)
    }

    func hash(into hasher: inout Hasher) {
        var s = text
        s.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        hasher.combine(0xFF as UInt8)
    }
}

/// Maps tokens to small integers by exact code points, so that n-gram work happens on `Int`s.
struct TokenInterner {
    private var ids: [ExactToken: Int] = [:]

    /// The id of every token of `tokens`, assigning new ids as needed.
    mutating func intern(_ tokens: [String]) -> [Int] {
        tokens.map { t in
            let key = ExactToken(text: t)
            if let id = ids[key] { return id }
            let id = ids.count
            ids[key] = id
            return id
        }
    }
}

/// An n-gram of up to four token ids (unused slots are -1), hashable as one value.
struct NGram: Hashable {
    var a: Int, b: Int, c: Int, d: Int

    @inline(__always)
    init(_ ids: [Int], at i: Int, n: Int) {
        a = ids[i]
        b = n > 1 ? ids[i + 1] : -1
        c = n > 2 ? ids[i + 2] : -1
        d = n > 3 ? ids[i + 3] : -1
    }
}

/// Numeric helpers that reproduce NumPy / Python summation exactly.
enum PyMath {
    /// `math.fsum`: the correctly rounded sum (Shewchuk partials, CPython's final rounding step).
    static func fsum(_ values: [Double]) -> Double {
        var partials: [Double] = []
        for value in values {
            var x = value
            var i = 0
            for j in 0..<partials.count {
                var y = partials[j]
                if abs(x) < abs(y) { swap(&x, &y) }
                let hi = x + y
                let lo = y - (hi - x)
                if lo != 0 {
                    partials[i] = lo
                    i += 1
                }
                x = hi
            }
            partials.removeSubrange(i..<partials.count)
            partials.append(x)
        }
        var n = partials.count
        guard n > 0 else { return 0 }
        n -= 1
        var hi = partials[n]
        var lo = 0.0
        while n > 0 {
            let x = hi
            n -= 1
            let y = partials[n]
            hi = x + y
            let yr = hi - x
            lo = y - yr
            if lo != 0 { break }
        }
        if n > 0 && ((lo < 0 && partials[n - 1] < 0) || (lo > 0 && partials[n - 1] > 0)) {
            let y = lo * 2
            let x = hi + y
            let yr = x - hi
            if y == yr { hi = x }
        }
        return hi
    }

    /// NumPy's pairwise summation of a contiguous float64 array (`np.add.reduce`, PW_BLOCKSIZE 128).
    static func pairwiseSum(_ a: [Double]) -> Double {
        a.withUnsafeBufferPointer { pairwise($0.baseAddress, $0.count) }
    }

    private static func pairwise(_ p: UnsafePointer<Double>?, _ n: Int) -> Double {
        guard let p, n > 0 else { return 0 }
        if n < 8 {
            var res = 0.0
            for i in 0..<n { res += p[i] }
            return res
        } else if n <= 128 {
            var r = (0..<8).map { p[$0] }
            var i = 8
            while i < n - (n % 8) {
                for j in 0..<8 { r[j] += p[i + j] }
                i += 8
            }
            var res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
            while i < n {
                res += p[i]
                i += 1
            }
            return res
        } else {
            var n2 = n / 2
            n2 -= n2 % 8
            return pairwise(p, n2) + pairwise(p + n2, n - n2)
        }
    }

    /// `np.mean` of a float64 list (pairwise sum, then one division); NaN for an empty list.
    static func mean(_ a: [Double]) -> Double {
        guard !a.isEmpty else { return .nan }
        return pairwiseSum(a) / Double(a.count)
    }
}
