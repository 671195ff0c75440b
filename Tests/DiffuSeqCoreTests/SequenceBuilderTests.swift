import Foundation
import Testing
@testable import DiffuSeqCore

@Suite struct SequenceBuilderTests {
    @Test(arguments: [16, 10])
    func customVocabBatches(seqLen: Int) throws {
        let t = try CustomVocabTokenizer(vocabFile: Fixtures.url("vocab.txt"))
        let e = try #require(try Fixtures.json("custom-vocab/expected.json") as? [String: Any])
        let examples = try #require(e["examples"] as? [[String: String]])
        let batches = try #require(e["batches"] as? [String: Any])
        let batch = try #require(batches["seq_len_\(seqLen)"] as? [String: Any])
        let ids = try #require(batch["input_ids"] as? [[Int]])
        let masks = try #require(batch["input_mask"] as? [[Int]])
        let sampler = try #require(batch["decode_token_as_sampler"] as? [[String: Any]])
        for (i, ex) in examples.enumerated() {
            let built = SequenceBuilder.build(source: t.encode(ex["src"] ?? ""), target: t.encode(ex["trg"] ?? ""),
                                              seqLen: seqLen, tokenizer: t)
            #expect(built.ids == ids[i], "example \(i)")
            #expect(built.mask == masks[i], "example \(i)")
            let split = SequenceBuilder.split(ids: built.ids, mask: built.mask)
            #expect(split.sourceLength == sampler[i]["len_x"] as? Int)
            #expect(t.decodeToken(split.source) == sampler[i]["source"] as? String)
            #expect(t.decodeToken(split.target) == sampler[i]["reference"] as? String)
        }
    }

    @Test func goldenBatchCustomVocab() throws {
        let t = try CustomVocabTokenizer(vocabFile: Fixtures.url("vocab.txt"))
        let g = try #require(try Fixtures.json("golden.json") as? [String: Any])
        let examples = try #require(g["examples"] as? [[String: String]])
        let batch = try #require(g["batch"] as? [String: Any])
        let ids = try #require(batch["input_ids"] as? [[Int]])
        let masks = try #require(batch["input_mask"] as? [[Int]])
        for (i, ex) in examples.enumerated() {
            let built = SequenceBuilder.build(source: ex["src"] ?? "", target: ex["trg"] ?? "", seqLen: 16, tokenizer: t)
            #expect(built.ids == ids[i])
            #expect(built.mask == masks[i])
        }
    }

    @Test func goldenBatchBertVocab() throws {
        let t = try TokFx.bert()
        let g = try #require(try Fixtures.json("golden.json") as? [String: Any])
        let examples = try #require(g["examples"] as? [[String: String]])
        let bb = try #require(g["bert_vocab_batch"] as? [String: Any])
        let pieces = try #require(bb["wordpiece_no_special"] as? [String: [[String]]])
        #expect(bb["sep_token_id"] as? Int == t.sepID && bb["pad_token_id"] as? Int == t.padID)
        for (i, ex) in examples.enumerated() {
            #expect(t.tokenize(ex["src"] ?? "") == pieces["src"]?[i])
            #expect(t.tokenize(ex["trg"] ?? "") == pieces["trg"]?[i])
        }
        for seqLen in [16, 32] {
            let batch = try #require(bb["seq_len_\(seqLen)"] as? [String: Any])
            let ids = try #require(batch["input_ids"] as? [[Int]])
            let masks = try #require(batch["input_mask"] as? [[Int]])
            for (i, ex) in examples.enumerated() {
                let built = SequenceBuilder.build(source: ex["src"] ?? "", target: ex["trg"] ?? "",
                                                  seqLen: seqLen, tokenizer: t)
                #expect(built.ids == ids[i], "seq_len \(seqLen) example \(i)")
                #expect(built.mask == masks[i], "seq_len \(seqLen) example \(i)")
            }
        }
    }

    @Test func truncationRules() throws {
        let t = try CustomVocabTokenizer(words: ["a", "b"])
        // seqLen 9 → src+trg (each with start) ≤ 6
        let r = SequenceBuilder.build(source: [4, 4, 4, 4, 4, 4], target: [5], seqLen: 9, tokenizer: t)
        #expect(r.ids == [0, 4, 4, 4, 1, 1, 0, 5, 1])
        #expect(r.mask == [0, 0, 0, 0, 0, 0, 1, 1, 1])
        let eq = SequenceBuilder.build(source: [4, 4, 4], target: [5, 5, 5], seqLen: 9, tokenizer: t)
        #expect(eq.ids == [0, 4, 4, 1, 1, 0, 5, 5, 1])
        let odd = SequenceBuilder.build(source: [4, 4, 4], target: [5, 5, 5], seqLen: 8, tokenizer: t)
        #expect(odd.ids == [0, 4, 1, 1, 0, 5, 1, 3])  // both cut together leaves one slot unused
        #expect(odd.mask == [0, 0, 0, 0, 1, 1, 1, 1])
        #expect(SequenceBuilder.sourceLength(mask: odd.mask) == 4)
    }
}
