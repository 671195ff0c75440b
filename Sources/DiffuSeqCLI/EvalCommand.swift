import ArgumentParser
import DiffuSeqCore
import Foundation

/// `diffuseq eval PATH`: DiffuSeq's official evaluation (`scripts/eval_seq2seq.py`) of a sample
/// file or a folder of seed files: BLEU, ROUGE-L, dist-1, Len, and self-BLEU/div-4 or MBR.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Score sample files like DiffuSeq's scripts/eval_seq2seq.py (BLEU, ROUGE-L, dist-1, Len, self-BLEU/div-4, MBR).",
        discussion: """
        PATH is a sample file (any name, e.g. .jsonl) or a folder: a folder is read like the script's \
        sorted(glob(folder + "/*json")), so *.jsonl files in it are not picked up. With two or more \
        files the diversity block (self-BLEU, div-4) is added, or with --mbr the MBR selection's scores. \
        BERTScore is not computed.
        """)

    @Argument(help: "A sample file or a folder of seed files (*json).")
    var path: String

    @Flag(help: "With several files, pick one candidate per source by minimum Bayes risk (BLEU).")
    var mbr = false

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Flag(name: .customLong("per-line"), help: "Also print per-line scores (and per-source diversity / MBR picks).")
    var perLine = false

    @Flag(name: .customLong("custom-vocab"), help: "Use the custom-vocabulary tokens [START] [END] [END] [PAD].")
    var customVocab = false

    @Option(help: "Start-of-sequence token to delete (default [CLS], or [START] with --custom-vocab).")
    var sos: String?

    @Option(help: "End-of-sequence token to delete (default [SEP], or [END]).")
    var eos: String?

    @Option(help: "Separator token to delete (default [SEP], or [END]).")
    var sep: String?

    @Option(help: "Padding token to delete from hypotheses (default [PAD]).")
    var pad: String?

    func run() throws {
        var tokens: SpecialTokens = customVocab ? .custom : .bert
        if let sos { tokens.sos = sos }
        if let eos { tokens.eos = eos }
        if let sep { tokens.sep = sep }
        if let pad { tokens.pad = pad }

        let report: EvaluationReport
        do {
            report = try Evaluator.evaluate(path: path, mbr: mbr, tokens: tokens)
        } catch let error as EvaluationError {
            FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
            throw ExitCode.failure
        }

        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let data = try encoder.encode(perLine ? report : report.summary())
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(EvalTable.render(report, perLine: perLine), terminator: "")
        }
    }
}

/// Plain-text rendering of an `EvaluationReport`.
enum EvalTable {
    /// One aligned table per block: metric, value, and the label the official script prints.
    static func render(_ r: EvaluationReport, perLine: Bool) -> String {
        var out = ""
        func v(_ x: Double) -> String { EvaluationReport.pythonRepr(x) }
        func table(_ rows: [(String, String, String)]) {
            let header = ("metric", "value", "official label")
            let all = [header] + rows
            let w0 = all.map(\.0.count).max() ?? 0
            let w1 = all.map(\.1.count).max() ?? 0
            for row in all {
                out += "  " + row.0.padding(toLength: w0, withPad: " ", startingAt: 0) + "  "
                    + row.1.padding(toLength: w1, withPad: " ", startingAt: 0) + "  " + row.2 + "\n"
            }
        }
        let t = r.tokens
        out += "tokens removed: sos \(t.sos)  eos \(t.eos)  sep \(t.sep)  pad \(t.pad)\n"
        for f in r.files {
            out += "\n\(f.path)  (\(f.lineCount) lines)\n"
            table([
                ("BLEU", v(f.bleu), "avg BLEU score"),
                ("ROUGE-L", v(f.rougeL), "avg ROUGE-L score"),
                ("BERTScore", "not computed", "avg berscore"),
                ("dist-1", v(f.dist1), "avg dist1 score"),
                ("Len (official)", v(f.avgLenOfficial), "avg len"),
                ("words per line", v(f.avgWordCount), "(not printed: len(recover.split()))"),
                ("archaic / 100 words", String(format: "%.2f", Metrics.archaicPer100(f.lines.map(\.recover))), "(ours: thou, hath, unto, -eth …)"),
            ])
            if perLine {
                out += "  line  bleu                    rougeL               dist1                len  words  recover\n"
                for (i, l) in f.lines.enumerated() {
                    out += "  " + pad("\(i + 1)", 4) + "  " + pad(v(l.bleu), 22) + "  " + pad(v(l.rougeL), 19) + "  "
                        + pad(v(l.dist1), 19) + "  " + pad("\(l.officialLen)", 3) + "  " + pad("\(l.wordCount)", 5)
                        + "  " + l.recover.debugDescription + "\n"
                }
            }
        }
        if r.mbrRequested && r.files.count == 1 {
            out += "\n(--mbr needs at least two sample files; the script ignores it for one)\n"
        }
        if let d = r.diversity {
            out += "\ndiversity over \(r.files.count) files (per source, averaged)\n"
            table([
                ("self-BLEU", v(d.selfBLEU), "avg selfBleu score"),
                ("div-4", v(d.div4), "avg div4 score"),
            ])
            if perLine {
                out += "  line  selfBLEU                div4                  pairwise BLEU (i<j)\n"
                for (i, s) in d.perSource.enumerated() {
                    out += "  " + pad("\(i + 1)", 4) + "  " + pad(v(s.selfBLEU), 22) + "  " + pad(v(s.div4), 20)
                        + "  " + s.pairwiseBLEU.map(v).joined(separator: " ") + "\n"
                }
            }
        }
        if let m = r.mbr {
            out += "\nMBR selection over \(r.files.count) files\n"
            table([
                ("BLEU", v(m.bleu), "avg BLEU score"),
                ("ROUGE-L", v(m.rougeL), "avg ROUGE-l score"),
                ("BERTScore", "not computed", "avg berscore"),
                ("dist-1", v(m.dist1), "avg dist1 score"),
                ("Len (official)", v(m.avgLenOfficial), "(computed, not printed)"),
                ("words per line", v(m.avgWordCount), "(not printed)"),
                ("archaic / 100 words", String(format: "%.2f", Metrics.archaicPer100(m.perSource.map(\.selected))), "(ours: thou, hath, unto, -eth …)"),
            ])
            out += "  picks per file:\n"
            for (i, f) in r.files.enumerated() { out += "    \(f.path): \(m.picksPerFile[i])\n" }
            if perLine {
                out += "  line  pick  bleu                    rougeL               bleu sums\n"
                for (i, p) in m.perSource.enumerated() {
                    out += "  " + pad("\(i + 1)", 4) + "  " + pad("\(p.selectedIndex)", 4) + "  " + pad(v(p.bleu), 22)
                        + "  " + pad(v(p.rougeL), 19) + "  " + p.bleuSums.map(v).joined(separator: " ") + "\n"
                }
            }
        }
        return out
    }

    private static func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s : s + String(repeating: " ", count: n - s.count)
    }
}
