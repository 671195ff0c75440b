import Foundation

extension Metrics {
    /// torchmetrics' default ROUGE tokenisation: lower-case, every run of code points outside
    /// `[a-z0-9]` becomes a space, split, drop empty tokens.
    public static func rougeTokens(_ s: String) -> [String] {
        var out: [String] = []
        var current = String.UnicodeScalarView()
        for u in s.lowercased().unicodeScalars {
            let v = u.value
            if (v >= 0x61 && v <= 0x7A) || (v >= 0x30 && v <= 0x39) {
                current.append(u)
            } else if !current.isEmpty {
                out.append(String(current))
                current = String.UnicodeScalarView()
            }
        }
        if !current.isEmpty { out.append(String(current)) }
        return out
    }

    /// ROUGE-L F-measure as the script reads it: `ROUGEScore()(hypothesis, reference)["rougeL_fmeasure"].tolist()`.
    ///
    /// LCS over `rougeTokens`, P = LCS/|hyp|, R = LCS/|ref|, F = 2PR/(P+R) computed in double
    /// precision, 0 if either side has no token or nothing matches; the result is rounded to
    /// `Float` (the tensor is float32) and returned widened back to `Double`.
    public static func rougeL(hypothesis: String, reference: String) -> Double {
        var interner = TokenInterner()
        let h = interner.intern(rougeTokens(hypothesis))
        let r = interner.intern(rougeTokens(reference))
        if h.isEmpty || r.isEmpty { return 0 }
        let lcs = lcsLength(h, r)
        let precision = Double(lcs) / Double(h.count)
        let recall = Double(lcs) / Double(r.count)
        if precision == 0 && recall == 0 { return 0 }
        let f = 2 * precision * recall / (precision + recall)
        return Double(Float(f))
    }

    /// Length of the longest common subsequence of two id sequences (two-row DP).
    static func lcsLength(_ a: [Int], _ b: [Int]) -> Int {
        var prev = [Int](repeating: 0, count: b.count + 1)
        var cur = prev
        for i in 0..<a.count {
            for j in 0..<b.count {
                cur[j + 1] = a[i] == b[j] ? prev[j] + 1 : max(prev[j + 1], cur[j])
            }
            swap(&prev, &cur)
        }
        return prev[b.count]
    }
}
