import Foundation
import Testing
@testable import DiffuSeqCore

/// Replays the fuzz corpus (`Tests/Fuzz/corpus/<target>/`: the seeds and every input that once crashed
/// or hung a reader) through the fuzz targets' own bodies, and pins what the seeds must read as.
@Suite("Fuzz corpus")
struct FuzzCorpusTests {
    static let corpus = Fixtures.repoFile("Tests/Fuzz/corpus")

    static func files(_ target: String) throws -> [URL] {
        let dir = corpus.appendingPathComponent(target)
        return try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    @Test("every corpus file of every target replays without a crash or hang", arguments: FuzzTargets.names)
    func replay(_ target: String) throws {
        let files = try Self.files(target)
        #expect(files.count >= 2, "the \(target) corpus should hold its seeds")
        for f in files {
            let t0 = Date()
            #expect(FuzzTargets.run(target, try Data(contentsOf: f)))
            #expect(Date().timeIntervalSince(t0) < 5, "\(target)/\(f.lastPathComponent) took too long")
        }
    }

    @Test("the seeds are valid files of their kind (so the fuzzer starts from accepted inputs)")
    func seedsAreValid() throws {
        let dir = Self.corpus
        let pt = try TorchCheckpoint.read(data: Data(contentsOf: dir.appendingPathComponent("pt/seed-two-tensors.pt")))
        #expect(try pt.tensor("w").floats() == [0, 1, 2, 3, 4, 5])
        #expect(try pt.tensor("b").floats() == [1, 2, 3])
        let pt2 = try TorchCheckpoint.read(data: Data(contentsOf: dir.appendingPathComponent("pt/seed-strided-tied.pt")))
        #expect(try pt2.tensor("a").floats() == [1, 3, 2, 4])
        #expect(try pt2.tensor("ids").int64s() == [0, 1])
        let st = try SafeTensors.read(data: Data(contentsOf: dir.appendingPathComponent("safetensors/seed-mixed.safetensors")))
        #expect(try st.tensor("w").floats() == [1, 2, 3, 4])
        #expect(try st.tensor("bf").floats() == [1, 2])
        let jsonl = try Seq2SeqDataset.readPairs(data: Data(contentsOf: dir.appendingPathComponent("jsonl/seed-kjv.jsonl")),
                                                 file: "seed-kjv.jsonl")
        #expect(jsonl.pairs.count == 4)
        let args = try ModelCheckpoint.parseTrainingArgs(Data(contentsOf: dir.appendingPathComponent("args/seed-ours.json")),
                                                         file: "seed-ours.json")
        let c = try ModelCheckpoint.config(args: args, folder: Fixtures.url(""), lmHeadVocab: nil, file: "seed-ours.json")
        #expect(c.seqLen == 8 && c.vocabSize == 40)
    }
}
