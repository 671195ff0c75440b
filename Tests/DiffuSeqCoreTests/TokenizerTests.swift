import Foundation
import Testing
@testable import DiffuSeqCore

/// Shared helpers of the tokenizer / sequence-builder / dataset tests.
enum TokFx {
    /// Exact (scalar-by-scalar) string comparison; Swift `==` uses canonical equivalence.
    static func sameScalars(_ a: String, _ b: String) -> Bool { a.unicodeScalars.elementsEqual(b.unicodeScalars) }

    /// The shared bert-base-uncased tokenizer of the fixtures.
    static let bertTokenizer: BertWordPieceTokenizer? = try? BertWordPieceTokenizer(
        vocabFile: Fixtures.url("bert-base-uncased-vocab.txt"))

    static func bert() throws -> BertWordPieceTokenizer { try #require(bertTokenizer) }

    struct BertLine {
        let index: Int
        let text: String
        let ids: [Int]
        let decoded: String
        let legacy: String?
    }

    static func bertLines() throws -> [BertLine] {
        let text = try #require(String(data: try Fixtures.data("tokenizer/bert_uncased.jsonl"), encoding: .utf8))
        return try text.split(separator: "\n").enumerated().map { i, line in
            let obj = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return BertLine(index: i, text: try #require(obj["text"] as? String), ids: try #require(obj["ids"] as? [Int]),
                            decoded: try #require(obj["decoded"] as? String), legacy: obj["decoded_legacy"] as? String)
        }
    }

    /// A fresh temporary directory for one test.
    static func makeTempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("diffuseq-dataset-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}

@Suite struct TokenizerTests {
    @Test func bertVocabBasics() throws {
        let t = try TokFx.bert()
        #expect(t.vocabSize == 30522)
        #expect(t.padID == 0 && t.unkID == 100 && t.startID == 101 && t.endID == 102 && t.sepID == 102)
        #expect(t.maskID == 103)
        #expect(t.token(for: 2129) == "how")
        #expect(t.id(for: "##bel") == 8671)
        #expect(t.id(for: "no-such-token") == nil)
    }

    @Test func bertFixtureAllLines() throws {
        let t = try TokFx.bert()
        let lines = try TokFx.bertLines()
        #expect(lines.count == 1702)
        var idMismatch: [String] = []
        var decMismatch: [String] = []
        for l in lines {
            let ids = t.encode(l.text)
            if ids != l.ids { idMismatch.append("line \(l.index) \(l.text.debugDescription): \(ids) vs \(l.ids)") }
            let dec = t.decodePieces(l.ids)
            if !TokFx.sameScalars(dec, l.decoded) {
                decMismatch.append("line \(l.index): \(dec.debugDescription) vs \(l.decoded.debugDescription)")
            }
        }
        #expect(idMismatch.isEmpty, "\(idMismatch.count) id mismatches:\n\(idMismatch.prefix(10).joined(separator: "\n"))")
        #expect(decMismatch.isEmpty, "\(decMismatch.count) decode mismatches:\n\(decMismatch.prefix(10).joined(separator: "\n"))")
    }

    @Test func bertLegacyDecode() throws {
        let t = try TokFx.bert()
        let legacy = try TokFx.bertLines().filter { $0.legacy != nil }
        #expect(legacy.map(\.index) == [436, 744, 1699])
        for l in legacy {
            #expect(TokFx.sameScalars(t.decodeLegacy(l.ids), l.legacy ?? ""), "line \(l.index)")
            #expect(TokFx.sameScalars(t.decodeTokenLegacy(l.ids + [0, 0]), l.legacy ?? ""))
        }
        // Elsewhere the legacy decode equals the modern one unless " do not" occurs.
        #expect(t.decodeLegacy(t.encode("i do not know")) == "i don't know")
        #expect(t.decodeLegacy(t.encode("do not go")) == "do not go")
    }

    @Test func bertFacts() throws {
        let t = try TokFx.bert()
        #expect(t.tokenize("Café İstanbul") == ["cafe", "istanbul"])
        #expect(t.tokenize(String(repeating: "a", count: 101)) == ["[UNK]"])
        #expect(t.tokenize("smile😀smile") == ["[UNK]"])
        #expect(t.tokenize("hello[SEP]world [cls]") == ["hello", "[SEP]", "world", "[", "cl", "##s", "]"])
        #expect(t.tokenize("a\u{200B}b\u{00AD}c") == t.tokenize("abc"))
        #expect(t.tokenize("unbelievably") == ["un", "##bel", "##ie", "##va", "##bly"])
        // decodeToken strips trailing pads only; decodePieces keeps them.
        #expect(t.decodeToken([101, 7592, 0, 102, 0, 0]) == "[CLS] hello [PAD] [SEP]")
        #expect(t.decodePieces([7592, 0]) == "hello [PAD]")
        #expect(t.decodeToken([0, 0]) == "")
        #expect(t.encodeWithSpecials("hello") == [101, 7592, 102])
    }

    @Test func bertSubsetVocabularyOnTestSplit() throws {
        let full = try TokFx.bert()
        let url = Fixtures.repoFile("Resources/data/kjv2modern/test.jsonl")
        let pairs = try Seq2SeqDataset.readPairs(file: url).pairs
        let texts = pairs.flatMap { [$0.src, $0.trg] }
        let subset = try BertWordPieceTokenizer.buildSubsetVocabulary(vocab: full.vocab, texts: texts)
        #expect(subset.count < full.vocabSize / 3)
        #expect(!subset.contains { $0.hasPrefix("[unused") })
        let small = try BertWordPieceTokenizer(lines: subset)
        #expect(small.token(for: small.padID) == "[PAD]" && small.token(for: small.endID) == "[SEP]")
        #expect(small.maskID != nil)
        for text in texts {
            #expect(small.tokenize(text) == full.tokenize(text))
        }
        // original order is kept
        let positions = subset.compactMap { full.id(for: $0) }
        #expect(positions == positions.sorted())
    }

    @Test func bertMissingSpecialsRejected() {
        #expect(throws: TokenizerError.self) { try BertWordPieceTokenizer(lines: ["[PAD]", "a"]) }
    }

    // MARK: - custom vocabulary

    @Test func customVocabFromFile() throws {
        let t = try CustomVocabTokenizer(vocabFile: Fixtures.url("vocab.txt"))
        let g = try #require(try Fixtures.json("golden.json") as? [String: Any])
        let vocab = try #require(g["vocab"] as? [String])
        #expect(t.vocab == vocab)
        #expect(t.vocabSize == 97 && t.padID == 3 && t.unkID == 2 && t.startID == 0 && t.endID == 1 && t.sepID == 1)
        #expect(t.encode("how do i cook ?") == [17, 22, 25, 54, 93])
        #expect(t.encode("  Music \t music\n") == [2, 90])
    }

    @Test func customVocabExpectedEncode() throws {
        let t = try CustomVocabTokenizer(vocabFile: Fixtures.url("vocab.txt"))
        let e = try #require(try Fixtures.json("custom-vocab/expected.json") as? [String: Any])
        let examples = try #require(e["examples"] as? [[String: String]])
        let enc = try #require(e["encode_token"] as? [String: [[Int]]])
        #expect(e["vocab_size"] as? Int == t.vocabSize)
        for (i, ex) in examples.enumerated() {
            #expect(t.encodeWithSpecials(ex["src"] ?? "") == enc["src"]?[i])
            #expect(t.encodeWithSpecials(ex["trg"] ?? "") == enc["trg"]?[i])
        }
    }

    @Test func customVocabJSON() throws {
        let fromJSON = try CustomVocabTokenizer(vocabJSON: Fixtures.url("custom-vocab/vocab.json"))
        let fromTxt = try CustomVocabTokenizer(vocabFile: Fixtures.url("vocab.txt"))
        #expect(fromJSON.vocab == fromTxt.vocab)
        #expect(fromJSON.padID == 3)
        #expect(fromTxt.dictionary.count == 97)
        #expect(throws: TokenizerError.self) { try CustomVocabTokenizer(dictionary: ["[START]": 0, "[END]": 1]) }
        #expect(throws: TokenizerError.self) {
            try CustomVocabTokenizer(dictionary: ["[START]": 0, "[END]": 1, "[UNK]": 2, "[PAD]": 3, "a": 3])
        }
    }

    @Test func customVocabQuirksRejected() throws {
        let url = Fixtures.url("custom-vocab/vocab_quirks.txt")
        do {
            _ = try CustomVocabTokenizer(vocabFile: url)
            Issue.record("malformed vocabulary accepted")
        } catch let error as TokenizerError {
            let text = error.description
            #expect(text.contains("vocab_quirks.txt"))
            #expect(error.problems.count == 4)
            #expect(error.problems[0].hasPrefix("line 2:") && error.problems[0].contains("tab"))
            #expect(error.problems[1].hasPrefix("line 3:") && error.problems[1].contains("duplicate"))
            #expect(error.problems[1].contains("line 1"))
            #expect(error.problems[2].hasPrefix("line 4:") && error.problems[2].contains("empty"))
            #expect(error.problems[3].hasPrefix("line 5:") && error.problems[3].contains("[PAD]"))
        }
    }

    @Test func customVocabDecodeMarkers() throws {
        // The well-formed part of vocab_quirks.txt: same decode rules as the official code.
        let t = try CustomVocabTokenizer(words: ["hello 120", "again", "cook@@", "ing", "new__", "word"])
        #expect(t.id(for: "hello") == 4)
        let ids = [0] + t.encode("hello again cook@@ ing new__ word Hello") + [1]
        #expect(t.decodeToken(ids) == "[START] hello again cooking newword [UNK] [END]")
        #expect(t.decodeToken([0, 6, 7, 3, 3]) == "[START] cooking")
        #expect(t.decodePieces([0, 3]) == "[START] [PAD]")
    }

    @Test func pythonTextHelpers() {
        #expect(PythonText.strip(" \t\u{A0}a b\u{3000}\n") == "a b")
        #expect(PythonText.split(" a\u{1C}b  c\u{85}") == ["a", "b", "c"])
        #expect(PythonText.strip("\u{200B}x") == "\u{200B}x")
    }
}
