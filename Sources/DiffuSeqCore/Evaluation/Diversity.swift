import Foundation

extension Metrics {
    /// Self-BLEU of a candidate set (the script's `diversityOfSet`): the mean of
    /// `BLEU(hypothesis: s_i, reference: s_j)` over pairs i < j (one direction only); 0 for fewer
    /// than two candidates. Lower is more diverse.
    public static func selfBLEU(_ candidates: [[String]]) -> Double {
        let scores = pairwiseBLEU(candidates)
        return scores.isEmpty ? 0 : PyMath.mean(scores)
    }

    /// The one-direction pairwise BLEUs `BLEU(hyp: s_i, ref: s_j)` for i < j, in the order
    /// (0,1), (0,2), …, (1,2), … that `diversityOfSet` visits them.
    public static func pairwiseBLEU(_ candidates: [[String]]) -> [Double] {
        var interner = TokenInterner()
        let counts = candidates.map { NGramCounts(interner.intern($0)) }
        var out: [Double] = []
        for i in 0..<counts.count {
            for j in (i + 1)..<max(i + 1, counts.count) {
                out.append(bleu(hyp: counts[i], ref: counts[j]))
            }
        }
        return out
    }

    /// div-4 of a candidate set (`distinct_n_gram_inter_sent(sentences, 4)`): distinct 4-grams /
    /// all 4-grams pooled over the candidates (4-grams never cross sentences); 0 when there is none.
    public static func div4(_ candidates: [[String]]) -> Double {
        var interner = TokenInterner()
        var seen = Set<NGram>()
        var total = 0
        for tokens in candidates {
            let ids = interner.intern(tokens)
            guard ids.count >= 4 else { continue }
            for i in 0...(ids.count - 4) {
                seen.insert(NGram(ids, at: i, n: 4))
                total += 1
            }
        }
        return total == 0 ? 0 : Double(seen.count) / Double(total)
    }
}
