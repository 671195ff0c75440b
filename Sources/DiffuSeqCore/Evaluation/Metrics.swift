import Foundation

/// Exact ports of the metrics in DiffuSeq's `scripts/eval_seq2seq.py`.
///
/// Every function reproduces the Python result bit for bit where the underlying libraries allow
/// it (NLTK 3.10 `sentence_bleu` with `SmoothingFunction().method4`, torchmetrics `ROUGEScore`
/// `rougeL_fmeasure`, the script's `distinct_n_gram` and `distinct_n_gram_inter_sent`). Tokens are
/// compared by code points, as Python does, never by Unicode canonical equivalence.
public enum Metrics {
    /// Whitespace tokenisation, Python's `s.split()`: runs of Unicode whitespace separate tokens.
    public static func words(_ s: String) -> [String] { EvalText.split(s) }

    /// The number of whitespace-separated words, `len(s.split())`.
    public static func wordCount(_ s: String) -> Int { EvalText.split(s).count }

    /// The script's "avg len" contribution of one line: `len(recover.split(' '))`.
    ///
    /// Splitting on single spaces counts the empty strings left by removed special tokens and
    /// double spaces: `" a b "` → 4, `""` → 1.
    public static func officialLen(_ recover: String) -> Int { EvalText.countSplitOnSpace(recover) }

    /// dist-1 of one sentence: distinct unigrams / unigrams, 0 when there is no token
    /// (`distinct_n_gram([hyp], 1)`).
    public static func dist1(_ tokens: [String]) -> Double {
        guard !tokens.isEmpty else { return 0 }
        let unique = Set(tokens.map { ExactToken(text: $0) }).count
        return Double(unique) / Double(tokens.count)
    }
}
