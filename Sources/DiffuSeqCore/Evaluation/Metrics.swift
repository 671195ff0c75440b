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

    /// Archaic forms (ours, for the built-in KJV → modern task): thou, thee, thy, thine, ye, hath, doth, dost,
    /// hast, art, shalt, wilt, saith, begat, unto, spake, and -eth verb forms (a word of ≥ 5 letters ending in
    /// "eth", except ordinals in -ieth and the non-verbs of the kjv2modern references: names and "teeth").
    public static let archaicWords: Set<String> = ["thou", "thee", "thy", "thine", "ye", "hath", "doth", "dost", "hast",
                                                   "art", "shalt", "wilt", "saith", "begat", "unto", "spake"]
    static let ethNonVerbs: Set<String> = ["teeth", "nazareth", "elizabeth", "japheth", "azmaveth", "hazarmaveth", "zereth",
                                           "remeth", "chinnereth", "ishbosheth", "ashtoreth", "jetheth", "peleth",
                                           "hammolecheth", "topheth", "pibeseth", "hassophereth", "sophereth", "kenneth"]

    /// The number of archaic forms among the words of a sentence (case-insensitive, punctuation stripped).
    public static func archaicCount(_ words: [String]) -> Int {
        words.reduce(0) { n, raw in
            let w = raw.lowercased().filter(\.isLetter)
            let eth = w.count >= 5 && w.hasSuffix("eth") && !w.hasSuffix("ieth") && !ethNonVerbs.contains(w)
            return n + (archaicWords.contains(w) || eth ? 1 : 0)
        }
    }

    /// Archaic forms per 100 words over a set of cleaned sentences (0 when there are no words).
    public static func archaicPer100(_ sentences: [String]) -> Double {
        let words = sentences.map(Self.words)
        let total = words.reduce(0) { $0 + $1.count }
        return total == 0 ? 0 : 100 * Double(words.reduce(0) { $0 + archaicCount($1) }) / Double(total)
    }
}
