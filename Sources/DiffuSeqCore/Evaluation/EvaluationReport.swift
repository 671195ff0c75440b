import Foundation

/// Everything `diffuseq eval` computes for one file or a folder of seed files, mirroring what
/// DiffuSeq's `scripts/eval_seq2seq.py` prints (BERTScore is not computed).
public struct EvaluationReport: Codable, Sendable, Equatable {
    /// Scores of one line of one sample file.
    public struct LineScore: Codable, Sendable, Equatable {
        /// The cleaned hypothesis the script scores.
        public var recover: String
        /// The cleaned reference.
        public var reference: String
        /// The cleaned source.
        public var source: String
        /// Sentence BLEU (NLTK method4).
        public var bleu: Double
        /// ROUGE-L F-measure (float32-rounded, as the script receives it).
        public var rougeL: Double
        /// dist-1 of the hypothesis.
        public var dist1: Double
        /// The script's "len": `len(recover.split(' '))`.
        public var officialLen: Int
        /// The real number of words, `len(recover.split())`.
        public var wordCount: Int
    }

    /// Averages (and optionally per-line scores) of one sample file.
    public struct FileReport: Codable, Sendable, Equatable {
        /// The path as the script prints it (`folder + "/" + name`, or the file path given).
        public var path: String
        /// The number of lines.
        public var lineCount: Int
        /// "avg BLEU score".
        public var bleu: Double
        /// "avg ROUGE-L score".
        public var rougeL: Double
        /// "avg dist1 score".
        public var dist1: Double
        /// "avg len": mean of `len(recover.split(' '))` (counts empty strings; see `Metrics.officialLen`).
        public var avgLenOfficial: Double
        /// Mean true word count per line (not printed by the script).
        public var avgWordCount: Double
        /// Per-line scores (empty when dropped for brevity).
        public var lines: [LineScore]
    }

    /// Diversity of one source's candidates across the seed files.
    public struct SourceDiversity: Codable, Sendable, Equatable {
        /// Mean of the one-direction pairwise BLEUs.
        public var selfBLEU: Double
        /// Pooled distinct 4-gram ratio.
        public var div4: Double
        /// `BLEU(hyp: s_i, ref: s_j)` for i < j in visiting order.
        public var pairwiseBLEU: [Double]
    }

    /// The diversity block (several files, no MBR).
    public struct DiversityReport: Codable, Sendable, Equatable {
        /// "avg selfBleu score".
        public var selfBLEU: Double
        /// "avg div4 score".
        public var div4: Double
        /// Per source (line index).
        public var perSource: [SourceDiversity]
    }

    /// The MBR pick for one source.
    public struct MBRPick: Codable, Sendable, Equatable {
        /// Index of the chosen candidate in sorted file order.
        public var selectedIndex: Int
        /// Path of the file the pick came from.
        public var selectedFile: String
        /// Summed BLEU of each candidate against the others.
        public var bleuSums: [Double]
        /// The chosen (cleaned) candidate.
        public var selected: String
        /// The first file's cleaned reference, which the pick is scored against.
        public var reference: String
        /// BLEU of the pick.
        public var bleu: Double
        /// ROUGE-L of the pick.
        public var rougeL: Double
        /// dist-1 of the pick.
        public var dist1: Double
        /// `len(selected.split(' '))`.
        public var officialLen: Int
        /// True word count of the pick.
        public var wordCount: Int
    }

    /// The MBR block (several files, `mbr: true`).
    public struct MBRReport: Codable, Sendable, Equatable {
        /// "avg BLEU score" of the picks.
        public var bleu: Double
        /// "avg ROUGE-l score" of the picks.
        public var rougeL: Double
        /// "avg dist1 score" of the picks.
        public var dist1: Double
        /// Mean official len of the picks (computed but not printed by the script).
        public var avgLenOfficial: Double
        /// Mean true word count of the picks.
        public var avgWordCount: Double
        /// How many picks came from each file, in sorted file order.
        public var picksPerFile: [Int]
        /// Per source (line index).
        public var perSource: [MBRPick]
    }

    /// The special tokens that were deleted.
    public var tokens: SpecialTokens
    /// Whether MBR was requested.
    public var mbrRequested: Bool
    /// One entry per sample file, in sorted order.
    public var files: [FileReport]
    /// Present for ≥ 2 files without MBR.
    public var diversity: DiversityReport?
    /// Present for ≥ 2 files with MBR.
    public var mbr: MBRReport?

    /// The `(label, value)` pairs the official script prints, in order, with values formatted like
    /// Python's `repr(float)`. The BERTScore lines (`avg berscore`) are left out.
    public var officialPrintedValues: [(label: String, value: String)] {
        var out: [(String, String)] = []
        for f in files {
            out.append(("avg BLEU score", Self.pythonRepr(f.bleu)))
            out.append(("avg ROUGE-L score", Self.pythonRepr(f.rougeL)))
            out.append(("avg dist1 score", Self.pythonRepr(f.dist1)))
            out.append(("avg len", Self.pythonRepr(f.avgLenOfficial)))
        }
        if let d = diversity {
            out.append(("avg selfBleu score", Self.pythonRepr(d.selfBLEU)))
            out.append(("avg div4 score", Self.pythonRepr(d.div4)))
        }
        if let m = mbr {
            out.append(("avg BLEU score", Self.pythonRepr(m.bleu)))
            out.append(("avg ROUGE-l score", Self.pythonRepr(m.rougeL)))
            out.append(("avg dist1 score", Self.pythonRepr(m.dist1)))
        }
        return out
    }

    /// A copy without per-line and per-source detail (for compact JSON output).
    public func summary() -> EvaluationReport {
        var r = self
        for i in r.files.indices { r.files[i].lines = [] }
        r.diversity?.perSource = []
        r.mbr?.perSource = []
        return r
    }

    /// Formats a double like Python's `repr(float)` (shortest round-trip digits; exponent form
    /// below 1e-4 and from 1e16).
    public static func pythonRepr(_ x: Double) -> String {
        if x.isNaN { return "nan" }
        if x.isInfinite { return x < 0 ? "-inf" : "inf" }
        let a = abs(x)
        if a != 0 && (a < 1e-4 || a >= 1e16) {
            // Swift gives e.g. "3.059023205018258e-07"; Python writes the same digits and exponent.
            var s = "\(x)"
            if !s.contains("e") { s = String(format: "%.17g", x) }
            // Python drops a trailing ".0" in the mantissa ("1e-05", not "1.0e-05").
            if let eIdx = s.firstIndex(of: "e") {
                var mant = String(s[..<eIdx])
                var exp = String(s[s.index(after: eIdx)...])
                if mant.hasSuffix(".0") { mant.removeLast(2) }
                let sign = exp.hasPrefix("-") ? "-" : "+"
                exp = exp.trimmingCharacters(in: CharacterSet(charactersIn: "+-"))
                if exp.count < 2 { exp = "0" + exp }
                return mant + "e" + sign + exp
            }
            return s
        }
        return "\(x)"
    }
}
