import Foundation

extension Metrics {
    /// For each candidate i, `Σ_{j≠i} BLEU(hypothesis: s_i, reference: s_j)`, summed like the
    /// script's `np.sum(selfBleu, -1)` (the zeroed diagonal included, NumPy pairwise order).
    public static func mbrSums(_ candidates: [[String]]) -> [Double] {
        var interner = TokenInterner()
        let counts = candidates.map { NGramCounts(interner.intern($0)) }
        return counts.indices.map { i in
            let row = counts.indices.map { j in i == j ? 0 : bleu(hyp: counts[i], ref: counts[j]) }
            return PyMath.pairwiseSum(row)
        }
    }

    /// Minimum-Bayes-risk selection (`selectBest`): the index of the candidate with the largest
    /// summed BLEU against the others; ties go to the first (lowest) index, like `np.argmax`.
    /// Returns 0 for an empty or one-element set. The reference is never used.
    public static func mbrIndex(_ candidates: [[String]]) -> Int {
        let sums = mbrSums(candidates)
        var best = 0
        for i in sums.indices where sums[i] > sums[best] {
            best = i
        }
        return best
    }
}
