import Foundation
import Testing
@testable import DiffuSeqCore

/// Parity with `Fixtures/eval/expected.json`, made by running DiffuSeq's `scripts/eval_seq2seq.py`
/// unmodified (`--folder single`, `--folder multi`, `--folder multi --mbr`) plus the script's own
/// `get_bleu`, `ROUGEScore()`, `distinct_n_gram`, `diversityOfSet` and `selectBest` per line.
@Suite struct EvaluationTests {
    // MARK: - Fixture model
    // Decoded with `JSONDecoder`: on Linux, `JSONSerialization` mis-rounds some doubles in the last
    // place (e.g. 0.8275862068965517 → …519), which would hide or fake a parity failure.

    struct FixtureLine: Decodable {
        let recover_clean: String, reference_clean: String, source_clean: String
        let bleu: Double, rougeL_f: Double, dist1: Double, len: Int
        let note: String?
        enum CodingKeys: String, CodingKey {
            case recover_clean, reference_clean, source_clean, bleu, rougeL_f, dist1, len
            case note = "case"
        }
    }

    struct FixtureFile: Decodable {
        let averages: [String: String]
        let per_line: [FixtureLine]
    }

    struct FixtureDiversitySource: Decodable {
        let recovers_clean: [String]
        let selfBleu: Double, div4: Double
        let pairwise_bleu_i_lt_j: [Double]
        let note: String?
        enum CodingKeys: String, CodingKey {
            case recovers_clean, selfBleu, div4, pairwise_bleu_i_lt_j
            case note = "case"
        }
    }

    struct FixtureDiversity: Decodable {
        let averages: [String: String]
        let per_source: [FixtureDiversitySource]
    }

    struct FixtureMBRSource: Decodable {
        let candidates_clean: [String]
        let bleu_sum_vs_others: [Double]
        let selected: String, selected_index: Int, reference_clean: String
        let bleu: Double, rougeL_f: Double, dist1: Double, len: Int
        let note: String?
        enum CodingKeys: String, CodingKey {
            case candidates_clean, bleu_sum_vs_others, selected, selected_index, reference_clean
            case bleu, rougeL_f, dist1, len
            case note = "case"
        }
    }

    struct FixtureMBR: Decodable {
        let averages: [String: String]
        let per_source: [FixtureMBRSource]
    }

    struct FixtureRun: Decodable {
        let printed_values: [[String]]
        let files: [String: FixtureFile]
        let diversity: FixtureDiversity?
    }

    struct FixtureMBRRun: Decodable {
        let printed_values: [[String]]
        let mbr: FixtureMBR
    }

    struct FixtureRuns: Decodable {
        let single: FixtureRun
        let multi: FixtureRun
        let multi_mbr: FixtureMBRRun
    }

    struct FixtureRoot: Decodable { let runs: FixtureRuns }

    private static func runs() throws -> FixtureRuns {
        try JSONDecoder().decode(FixtureRoot.self, from: Fixtures.data("eval/expected.json")).runs
    }

    private static func fileName(_ path: String) -> String {
        String(path.split(separator: "/").last ?? Substring(path))
    }

    /// `printed_values` without the BERTScore lines (not computed here; the fixture reads `tensor(nan)`),
    /// compared as the exact strings Python printed.
    private static func checkPrinted(_ report: EvaluationReport, _ printed: [[String]]) {
        let want = printed.filter { $0.first != "avg berscore" }
        let got = report.officialPrintedValues.map { [$0.label, $0.value] }
        #expect(got == want)
    }

    /// Checks one file's per-line scores and averages against `runs.<run>.files[key]`.
    private static func checkFile(_ report: EvaluationReport.FileReport, _ fixture: FixtureFile) {
        #expect(report.lines.count == fixture.per_line.count)
        for (i, (got, want)) in zip(report.lines, fixture.per_line).enumerated() {
            let note = "line \(i + 1): \(want.note ?? "")"
            #expect(got.recover == want.recover_clean, "\(note)")
            #expect(got.reference == want.reference_clean, "\(note)")
            #expect(got.source == want.source_clean, "\(note)")
            #expect(got.bleu == want.bleu, "\(note)")
            #expect(got.rougeL == want.rougeL_f, "\(note)")
            #expect(got.dist1 == want.dist1, "\(note)")
            #expect(got.officialLen == want.len, "\(note)")
        }
        #expect(EvaluationReport.pythonRepr(report.bleu) == fixture.averages["avg BLEU score"])
        #expect(EvaluationReport.pythonRepr(report.rougeL) == fixture.averages["avg ROUGE-L score"])
        #expect(EvaluationReport.pythonRepr(report.dist1) == fixture.averages["avg dist1 score"])
        #expect(EvaluationReport.pythonRepr(report.avgLenOfficial) == fixture.averages["avg len"])
    }

    // MARK: - Runs of the official script

    @Test func singleFileRunMatchesScript() throws {
        let run = try Self.runs().single
        let report = try Evaluator.evaluate(path: Fixtures.url("eval/single").path)
        #expect(report.files.count == 1)
        #expect(report.diversity == nil && report.mbr == nil)
        Self.checkPrinted(report, run.printed_values)
        let fixture = try #require(run.files["single/seed105_step0.json"])
        Self.checkFile(try #require(report.files.first), fixture)
        #expect(Self.fileName(report.files[0].path) == "seed105_step0.json")
    }

    @Test func multiFileRunMatchesScript() throws {
        let run = try Self.runs().multi
        let report = try Evaluator.evaluate(path: Fixtures.url("eval/multi").path)
        #expect(report.files.map { Self.fileName($0.path) }
            == ["seed101_step0.json", "seed102_step0.json", "seed103_step0.json"])
        Self.checkPrinted(report, run.printed_values)
        for f in report.files {
            Self.checkFile(f, try #require(run.files["multi/" + Self.fileName(f.path)]))
        }
        let diversity = try #require(report.diversity)
        #expect(report.mbr == nil)
        let fixture = try #require(run.diversity)
        #expect(EvaluationReport.pythonRepr(diversity.selfBLEU) == fixture.averages["avg selfBleu score"])
        #expect(EvaluationReport.pythonRepr(diversity.div4) == fixture.averages["avg div4 score"])
        #expect(diversity.perSource.count == fixture.per_source.count)
        for (k, (got, want)) in zip(diversity.perSource, fixture.per_source).enumerated() {
            let note = "source \(k + 1): \(want.note ?? "")"
            #expect(report.files.map { $0.lines[k].recover } == want.recovers_clean, "\(note)")
            #expect(got.selfBLEU == want.selfBleu, "\(note)")
            #expect(got.div4 == want.div4, "\(note)")
            #expect(got.pairwiseBLEU == want.pairwise_bleu_i_lt_j, "\(note)")
            // The public entry points agree with the report.
            let words = want.recovers_clean.map(Metrics.words)
            #expect(Metrics.selfBLEU(words) == want.selfBleu, "\(note)")
            #expect(Metrics.div4(words) == want.div4, "\(note)")
        }
    }

    @Test func mbrRunMatchesScript() throws {
        let run = try Self.runs().multi_mbr
        let report = try Evaluator.evaluate(path: Fixtures.url("eval/multi").path, mbr: true)
        #expect(report.diversity == nil)
        Self.checkPrinted(report, run.printed_values)
        let mbr = try #require(report.mbr)
        let fixture = run.mbr
        #expect(EvaluationReport.pythonRepr(mbr.bleu) == fixture.averages["avg BLEU score"])
        #expect(EvaluationReport.pythonRepr(mbr.rougeL) == fixture.averages["avg ROUGE-l score"])
        #expect(EvaluationReport.pythonRepr(mbr.dist1) == fixture.averages["avg dist1 score"])
        #expect(EvaluationReport.pythonRepr(mbr.avgLenOfficial) == fixture.averages["avg len (computed, not printed)"])
        #expect(mbr.perSource.count == fixture.per_source.count)
        #expect(mbr.picksPerFile.reduce(0, +) == fixture.per_source.count)
        for (k, (got, want)) in zip(mbr.perSource, fixture.per_source).enumerated() {
            let note = "source \(k + 1): \(want.note ?? "")"
            #expect(got.selectedIndex == want.selected_index, "\(note)")
            #expect(Metrics.mbrIndex(want.candidates_clean.map(Metrics.words)) == want.selected_index, "\(note)")
            #expect(Metrics.mbrSums(want.candidates_clean.map(Metrics.words)) == want.bleu_sum_vs_others, "\(note)")
            #expect(got.selected == want.selected, "\(note)")
            #expect(got.reference == want.reference_clean, "\(note)")
            #expect(got.bleuSums == want.bleu_sum_vs_others, "\(note)")
            #expect(got.bleu == want.bleu, "\(note)")
            #expect(got.rougeL == want.rougeL_f, "\(note)")
            #expect(got.dist1 == want.dist1, "\(note)")
            #expect(got.officialLen == want.len, "\(note)")
            #expect(Self.fileName(got.selectedFile) == "seed10\(got.selectedIndex + 1)_step0.json")
        }
    }

    // MARK: - Metric edge cases (NLTK / torchmetrics / script behaviour)

    @Test func bleuEdgeCases() {
        let ref = Metrics.words("a b c d e f")
        #expect(Metrics.sentenceBLEU(hypothesis: ref, reference: ref) == 1)
        #expect(Metrics.sentenceBLEU(hypothesis: [], reference: ref) == 0)
        #expect(Metrics.sentenceBLEU(hypothesis: ["x", "y"], reference: ref) == 0)
        // One matching token: no smoothing for hyp_len 1, only the brevity penalty exp(1 - 6/1).
        #expect(Metrics.sentenceBLEU(hypothesis: ["c"], reference: ref) == exp(1.0 - 6.0))
        // Longer hypothesis than reference: brevity penalty 1.
        let long = Metrics.sentenceBLEU(hypothesis: ref + ["g"], reference: ref)
        #expect(long > 0 && long < 1)
        // Case-sensitive.
        #expect(Metrics.sentenceBLEU(hypothesis: ["A"], reference: ["a"]) == 0)
        // method4 on a two-token hypothesis with one unigram match:
        // p1 = 1/2, p2 = (1 / (2*5/ln 2)) / 1, p3 = (1 / (4*5/ln 2)) / 1, p4 = (1 / (8*5/ln 2)) / 1.
        let l2 = log(2.0)
        let p = [0.5, 1 / (10 / l2), 1 / (20 / l2), 1 / (40 / l2)]
        let want = exp(1 - 6.0 / 2) * exp(PyMath.fsum(p.map { 0.25 * log($0) }))
        #expect(Metrics.sentenceBLEU(hypothesis: ["a", "x"], reference: ref) == want)
    }

    @Test func rougeLEdgeCases() {
        #expect(Metrics.rougeL(hypothesis: "", reference: "a b") == 0)
        #expect(Metrics.rougeL(hypothesis: " ,. ", reference: "a b") == 0)
        #expect(Metrics.rougeL(hypothesis: "The CAT's hat", reference: "the cat s hat") == 1)
        #expect(Metrics.rougeTokens("Don't stop-2 café") == ["don", "t", "stop", "2", "caf"])
        // F of LCS 2 over 3 and 4 tokens, rounded to float32.
        let f = 2 * (2.0 / 3) * (2.0 / 4) / (2.0 / 3 + 2.0 / 4)
        #expect(Metrics.rougeL(hypothesis: "a b x", reference: "a y b z") == Double(Float(f)))
        #expect(Metrics.rougeL(hypothesis: "a b x", reference: "a y b z") != f)
    }

    @Test func lengthAndDistinctQuirks() {
        #expect(Metrics.officialLen(" a b ") == 4)
        #expect(Metrics.officialLen("") == 1)
        #expect(Metrics.officialLen("[PAD] [PAD] [PAD] [PAD] [SEP]") == 5)
        #expect(Metrics.wordCount(" a  b ") == 2)
        #expect(Metrics.words(" a\tb\u{00A0}c\n") == ["a", "b", "c"])
        #expect(Metrics.dist1([]) == 0)
        #expect(Metrics.dist1(["a", "b", "a", "c"]) == 0.75)
        #expect(Metrics.div4([["a", "b", "c"], ["d"]]) == 0)
        #expect(Metrics.div4([["a", "b", "c", "d"], ["a", "b", "c", "d", "e"]]) == 2.0 / 3.0)
        #expect(Metrics.selfBLEU([["a"]]) == 0)
        #expect(Metrics.mbrIndex([]) == 0)
        // Tie → first; the odd one out loses.
        #expect(Metrics.mbrIndex([["x", "y"], ["a", "b", "c"], ["a", "b", "c"]]) == 1)
        // Code-point identity, not canonical equivalence: é (U+00E9) ≠ e + U+0301.
        #expect(Metrics.dist1(["\u{00E9}", "e\u{0301}"]) == 1)
    }

    @Test func cleaningKeepsSpacesLikeTheScript() {
        #expect(Metrics.cleanRecover("  [CLS] a [PAD] b [SEP] [PAD] ") == " a  b  ")
        #expect(Metrics.cleanReference("[CLS] a [PAD] b [SEP]") == " a [PAD] b ")
        #expect(Metrics.cleanSource("[CLS] a [SEP] [SEP]") == " a  ")
        #expect(Metrics.cleanRecover("") == "")
        let custom = SpecialTokens.custom
        #expect(custom == SpecialTokens(sos: "[START]", eos: "[END]", sep: "[END]", pad: "[PAD]"))
        #expect(Metrics.cleanRecover("[START] a [END] [PAD]", tokens: custom) == " a  ")
        #expect(Metrics.cleanRecover("[CLS] a [SEP]", tokens: custom) == "[CLS] a [SEP]")
    }

    @Test func pythonNumerics() {
        #expect(PyMath.fsum([1e100, 1.0, -1e100]) == 1.0)
        #expect(PyMath.fsum([0.1, 0.2, 0.3]) == 0.6)
        #expect(EvaluationReport.pythonRepr(3.059023205018258e-07) == "3.059023205018258e-07")
        #expect(EvaluationReport.pythonRepr(1e-05) == "1e-05")
        #expect(EvaluationReport.pythonRepr(22.4) == "22.4")
        #expect(EvaluationReport.pythonRepr(1.0) == "1.0")
    }

    // MARK: - Files, folders and errors

    private static func tempDir() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("diffuseq-eval-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    private static let goodLine = #"{"recover": "[CLS] a b c d [SEP]", "reference": "[CLS] a b c d [SEP]", "source": "[CLS] x [SEP] [SEP]"}"#

    @Test func jsonlFileIsAcceptedButNotGlobbed() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("out.jsonl")
        try Data((Self.goodLine + "\r\n" + Self.goodLine).utf8).write(to: file)
        let report = try Evaluator.evaluate(path: file.path)
        #expect(report.files.count == 1 && report.files[0].lineCount == 2)
        #expect(report.files[0].bleu == 1)
        #expect(throws: EvaluationError.noSampleFiles(folder: dir.path)) { try Evaluator.evaluate(path: dir.path) }
        // A .json file beside it is found; hidden files and the .jsonl are not.
        try Data(Self.goodLine.utf8).write(to: dir.appendingPathComponent("b.json"))
        try Data(Self.goodLine.utf8).write(to: dir.appendingPathComponent(".hidden.json"))
        #expect(try Evaluator.sampleFiles(at: dir.path) == [dir.path + "/b.json"])
    }

    @Test func errorsNameFileAndLine() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        func write(_ name: String, _ bytes: [UInt8]) throws -> String {
            let url = dir.appendingPathComponent(name)
            try Data(bytes).write(to: url)
            return url.path
        }
        let good = Array((Self.goodLine + "\n").utf8)
        let badJSON = try write("bad.jsonl", good + Array("{\"recover\": \n".utf8))
        #expect(throws: EvaluationError.malformedLine(file: badJSON, line: 2, reason: "invalid JSON")) {
            try Evaluator.evaluate(path: badJSON)
        }
        let missing = try write("missing.jsonl", good + good + Array(#"{"recover": "a", "reference": "b"}"#.utf8))
        #expect(throws: EvaluationError.malformedLine(file: missing, line: 3, reason: "missing key \"source\"")) {
            try Evaluator.evaluate(path: missing)
        }
        let utf8 = try write("utf8.jsonl", Array(#"{"recover": "a"#.utf8) + [0xFF] + Array(#"", "reference": "b", "source": "c"}"#.utf8))
        #expect(throws: EvaluationError.malformedLine(file: utf8, line: 1, reason: "invalid UTF-8")) {
            try Evaluator.evaluate(path: utf8)
        }
        let empty = try write("empty.jsonl", [])
        #expect(throws: EvaluationError.emptyFile(file: empty)) { try Evaluator.evaluate(path: empty) }
        let nowhere = dir.appendingPathComponent("nowhere").path
        #expect(throws: EvaluationError.pathNotFound(nowhere)) { try Evaluator.evaluate(path: nowhere) }

        // Seed files with different line counts.
        let seeds = dir.appendingPathComponent("seeds")
        try FileManager.default.createDirectory(at: seeds, withIntermediateDirectories: true)
        try Data(good + good).write(to: seeds.appendingPathComponent("seed1.json"))
        try Data(good + good + good).write(to: seeds.appendingPathComponent("seed2.json"))
        let mismatch = EvaluationError.lineCountMismatch(file: seeds.path + "/seed2.json", expected: 2, found: 3,
                                                         firstFile: seeds.path + "/seed1.json")
        #expect(throws: mismatch) { try Evaluator.evaluate(path: seeds.path, mbr: true) }
        #expect(mismatch.description.contains("seed2.json"))
    }

    // MARK: - Candidate-set metrics used by the explorer

    @Test func candidateSetMetricsAgree() {
        let a = ["the", "lord", "is", "my", "shepherd"], b = ["the", "lord", "is", "my", "guide"]
        let c = ["a", "b", "c", "d", "e"]
        #expect(Metrics.mbrIndex([a, b, c]) != 2)
        #expect(Metrics.selfBLEU([a, a]) == 1)
        #expect(Metrics.div4([a, a]) == 0.5)
    }
}
