// Number formatting without Foundation.

/// Small number formatters for the explorer (no Foundation, deterministic output for snapshots).
public enum Fmt {
    /// `x` with `digits` decimals ("0.0123").
    public static func fixed(_ x: Double, _ digits: Int) -> String {
        guard x.isFinite else { return x.isNaN ? "nan" : (x < 0 ? "-inf" : "inf") }
        var scale = 1.0
        for _ in 0..<max(0, digits) { scale *= 10 }
        let r = (abs(x) * scale).rounded()
        if r > 9e15 { return sci(x, 2) }
        let n = Int64(r)
        let intPart = n / Int64(scale)
        var frac = String(n % Int64(scale))
        while frac.count < digits { frac = "0" + frac }
        let sign = x < 0 && n != 0 ? "-" : ""
        return digits > 0 ? "\(sign)\(intPart).\(frac)" : "\(sign)\(intPart)"
    }

    /// Scientific notation ("1.23e-4").
    public static func sci(_ x: Double, _ digits: Int) -> String {
        guard x.isFinite else { return fixed(x, 0) }
        if x == 0 { return fixed(0, digits) }
        var e = 0
        var m = abs(x)
        while m >= 10 { m /= 10; e += 1 }
        while m < 1 { m *= 10; e -= 1 }
        var mant = fixed(m, digits)
        if mant.hasPrefix("10") { mant = fixed(1, digits); e += 1 }
        return (x < 0 ? "-" : "") + mant + "e" + String(e)
    }

    /// Four significant-ish characters: fixed for 0.001…9999, scientific otherwise.
    public static func short(_ x: Double) -> String {
        let a = abs(x)
        if a == 0 { return "0" }
        if a >= 0.001 && a < 10 { return fixed(x, 4) }
        if a >= 10 && a < 100_000 { return fixed(x, 1) }
        return sci(x, 1)
    }

    /// Integer with thin grouping ("8,174").
    public static func grouped(_ n: Int) -> String {
        let s = String(abs(n))
        var out = ""
        for (i, c) in s.enumerated() {
            if i > 0 && (s.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (n < 0 ? "-" : "") + out
    }
}
