import Foundation
import Testing
@testable import DiffuSeqCore

@Suite struct DatasetTests {
    let tok: CustomVocabTokenizer

    init() throws { tok = try CustomVocabTokenizer(vocabFile: Fixtures.url("vocab.txt")) }

    private func write(_ bytes: [UInt8], name: String = "train.jsonl") throws -> URL {
        let url = try TokFx.makeTempDir().appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    private func write(_ text: String, name: String = "train.jsonl") throws -> URL {
        try write(Array(text.utf8), name: name)
    }

    private func expectError(_ text: String, line: Int?, contains problem: String,
                             sourceLocation: SourceLocation = #_sourceLocation) throws {
        let url = try write(text)
        do {
            _ = try Seq2SeqDataset.load(file: url, tokenizer: tok, seqLen: 16, skipBadLines: false)
            Issue.record("no error for \(text.debugDescription)", sourceLocation: sourceLocation)
        } catch let e as DataError {
            #expect(e.line == line, "\(e)", sourceLocation: sourceLocation)
            #expect(e.problem.contains(problem), "\(e)", sourceLocation: sourceLocation)
            #expect(e.description.contains(url.path), sourceLocation: sourceLocation)
            if let line { #expect(e.description.contains(":\(line): "), sourceLocation: sourceLocation) }
        }
    }

    static let good = #"{"src": " how do i cook ? ", "trg": "what is good ?"}"#

    @Test func goodFileWithBlankLinesAndCRLF() throws {
        let text = "\n" + Self.good + "\r\n   \t\n" + #"{"trg": "i like cooking ?", "src": "why do people", "x": 1}"# + "\n\n"
        let url = try write(text)
        let r = try Seq2SeqDataset.load(file: url, tokenizer: tok, seqLen: 16)
        #expect(r.skipped == 0)
        #expect(r.examples.count == 2)
        let e0 = r.examples[0]
        #expect(e0.src == "how do i cook ?" && e0.trg == "what is good ?" && e0.line == 2)
        #expect(e0.ids == [0, 17, 22, 25, 54, 93, 1, 1, 0, 18, 7, 49, 93, 1, 3, 3])
        #expect(e0.mask == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
        #expect(r.examples[1].line == 4 && r.examples[1].src == "why do people")
    }

    @Test func lastLineWithoutNewlineAndBOM() throws {
        let url = try write([0xEF, 0xBB, 0xBF] + Array(Self.good.utf8))
        let r = try Seq2SeqDataset.load(file: url, tokenizer: tok, seqLen: 16)
        #expect(r.examples.count == 1 && r.examples[0].line == 1)
    }

    @Test func dataDirAndSplit() throws {
        let url = try write(Self.good + "\n", name: "valid.jsonl")
        let r = try Seq2SeqDataset.load(dataDir: url.deletingLastPathComponent(), split: "valid", tokenizer: tok, seqLen: 10)
        #expect(r.examples.count == 1 && r.examples[0].ids.count == 10)
        #expect(throws: DataError.self) {
            try Seq2SeqDataset.load(dataDir: url.deletingLastPathComponent(), split: "test", tokenizer: tok, seqLen: 10)
        }
    }

    @Test func badLines() throws {
        let g = Self.good + "\n"
        try expectError(g + "{\"src\": \"a\", \"trg\": \n", line: 2, contains: "bad JSON")
        try expectError(g + "[1, 2]\n", line: 2, contains: "not a JSON object")
        try expectError(g + "\"just a string\"\n", line: 2, contains: "not a JSON object")
        try expectError(g + g + #"{"src": "a"}"# + "\n", line: 3, contains: "missing \"trg\"")
        try expectError(#"{"trg": "a"}"#, line: 1, contains: "missing \"src\"")
        try expectError(#"{"src": 3, "trg": "a"}"#, line: 1, contains: "\"src\" is not a string")
        try expectError(#"{"src": "a", "trg": null}"#, line: 1, contains: "\"trg\" is not a string")
        try expectError(#"{"src": "a", "trg": ["b"]}"#, line: 1, contains: "\"trg\" is not a string")
        try expectError(#"{"src": " \t ", "trg": "b"}"#, line: 1, contains: "\"src\" is empty after strip")
        try expectError(#"{"src": "a", "trg": ""}"#, line: 1, contains: "\"trg\" is empty after strip")
    }

    @Test func invalidUTF8() throws {
        let url = try write(Array((Self.good + "\n").utf8) + [0x7B, 0xFF, 0xFE, 0x7D, 0x0A])
        do {
            _ = try Seq2SeqDataset.load(file: url, tokenizer: tok, seqLen: 16)
            Issue.record("invalid UTF-8 accepted")
        } catch let e as DataError {
            #expect(e.line == 2 && e.problem == "invalid UTF-8")
        }
        let r = try Seq2SeqDataset.load(file: url, tokenizer: tok, seqLen: 16, skipBadLines: true)
        #expect(r.examples.count == 1 && r.skipped == 1)
    }

    @Test func skipBadLines() throws {
        let g = Self.good + "\n"
        let text = g + "nope\n" + #"{"src": "", "trg": "a"}"# + "\n\n" + g + "[]\n"
        let url = try write(text)
        let r = try Seq2SeqDataset.load(file: url, tokenizer: tok, seqLen: 16, skipBadLines: true)
        #expect(r.skipped == 3)
        #expect(r.examples.map(\.line) == [1, 5])
    }

    @Test func wholeFileProblems() throws {
        let dir = try TokFx.makeTempDir()
        let missing = dir.appendingPathComponent("absent.jsonl")
        do {
            _ = try Seq2SeqDataset.load(file: missing, tokenizer: tok, seqLen: 16)
            Issue.record("missing file accepted")
        } catch let e as DataError {
            #expect(e.line == nil && e.problem == "file not found" && e.description.contains("absent.jsonl"))
        }
        for text in ["", "\n  \n\t\n"] {
            let url = try write(text)
            do {
                _ = try Seq2SeqDataset.load(file: url, tokenizer: tok, seqLen: 16)
                Issue.record("empty file accepted")
            } catch let e as DataError {
                #expect(e.line == nil && e.problem.contains("empty file"))
            }
        }
        let allBad = try write("x\ny\n")
        do {
            _ = try Seq2SeqDataset.load(file: allBad, tokenizer: tok, seqLen: 16, skipBadLines: true)
            Issue.record("file without valid examples accepted")
        } catch let e as DataError {
            #expect(e.problem.contains("no valid examples") && e.problem.contains("2 bad lines"))
        }
        #expect(throws: DataError.self) {
            try Seq2SeqDataset.load(file: try write(Self.good), tokenizer: tok, seqLen: 4)
        }
    }

    /// The kjv2modern test split through the BERT tokenizer agrees with the fixture ids
    /// (the fixture's first 792 lines are the sources, the next 792 the targets).
    @Test func kjvTestSplitMatchesFixtureIDs() throws {
        let t = try TokFx.bert()
        let url = Fixtures.repoFile("Resources/data/kjv2modern/test.jsonl")
        let r = try Seq2SeqDataset.load(file: url, tokenizer: t, seqLen: 128)
        #expect(r.examples.count == 792 && r.skipped == 0)
        let lines = try TokFx.bertLines()
        for (i, ex) in r.examples.enumerated() {
            let expected = SequenceBuilder.build(source: lines[i].ids, target: lines[792 + i].ids, seqLen: 128, tokenizer: t)
            #expect(ex.ids == expected.ids && ex.mask == expected.mask, "line \(ex.line)")
        }
    }
}
