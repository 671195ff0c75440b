import Foundation

extension Metrics {
    /// Sentence BLEU-4 exactly as the script's `get_bleu`:
    /// `sentence_bleu([reference], hypothesis, smoothing_function=SmoothingFunction().method4)`
    /// (NLTK ≥ 3.5; uniform weights 0.25, one reference).
    ///
    /// Edge cases follow NLTK: no matching unigram (including an empty hypothesis) → 0; a
    /// one-token hypothesis gets no smoothing, so only its unigram precision and the brevity
    /// penalty count; the brevity penalty uses the (only, hence closest) reference length.
    /// - Parameters:
    ///   - hypothesis: the candidate's tokens (whitespace split, case-sensitive).
    ///   - reference: the reference's tokens.
    public static func sentenceBLEU(hypothesis: [String], reference: [String]) -> Double {
        var interner = TokenInterner()
        let h = interner.intern(hypothesis)
        let r = interner.intern(reference)
        return bleu(hyp: h, ref: r)
    }

    /// n-gram counts of an id sequence, for n = 1…4.
    struct NGramCounts {
        /// `counts[n-1][ngram]`.
        var counts: [[NGram: Int]]
        /// The number of tokens.
        var length: Int

        init(_ ids: [Int]) {
            length = ids.count
            counts = (1...4).map { n in
                var c: [NGram: Int] = [:]
                if ids.count >= n {
                    c.reserveCapacity(ids.count - n + 1)
                    for i in 0...(ids.count - n) { c[NGram(ids, at: i, n: n), default: 0] += 1 }
                }
                return c
            }
        }
    }

    /// BLEU of interned token ids.
    static func bleu(hyp: [Int], ref: [Int]) -> Double {
        bleu(hyp: NGramCounts(hyp), ref: NGramCounts(ref))
    }

    /// BLEU of precomputed n-gram counts (NLTK `corpus_bleu` on one pair, method4 smoothing).
    static func bleu(hyp: NGramCounts, ref: NGramCounts) -> Double {
        let hypLen = hyp.length
        let refLen = ref.length
        var numerators = [Int](repeating: 0, count: 4)
        var denominators = [Int](repeating: 1, count: 4)
        for n in 0..<4 {
            var matched = 0
            var total = 0
            let refCounts = ref.counts[n]
            for (gram, count) in hyp.counts[n] {
                total += count
                if let rc = refCounts[gram] { matched += min(count, rc) }
            }
            numerators[n] = matched
            denominators[n] = max(1, total)
        }
        // NLTK: no unigram match at all → 0 (covers the empty hypothesis).
        if numerators[0] == 0 { return 0 }

        // brevity_penalty(closest_ref_len, hyp_len)
        let bp: Double
        if hypLen > refLen {
            bp = 1
        } else if hypLen == 0 {
            bp = 0
        } else {
            bp = exp(1 - Double(refLen) / Double(hypLen))
        }

        // SmoothingFunction(epsilon=0.1, alpha=5, k=5).method4
        var p = [Double](repeating: 0, count: 4)
        var incvnt = 1
        for n in 0..<4 {
            if numerators[n] == 0 && hypLen > 1 {
                let scaled = Double((1 << incvnt) * 5) / log(Double(hypLen))
                let numerator = 1 / scaled
                p[n] = numerator / Double(denominators[n])
                incvnt += 1
            } else {
                p[n] = Double(numerators[n]) / Double(denominators[n])
            }
        }
        // s = (w_i * log(p_i) for … if p_i > 0); bp * exp(fsum(s))
        var terms: [Double] = []
        terms.reserveCapacity(4)
        for n in 0..<4 where p[n] > 0 { terms.append(0.25 * log(p[n])) }
        return bp * exp(PyMath.fsum(terms))
    }
}
