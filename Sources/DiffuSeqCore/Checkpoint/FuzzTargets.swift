import Foundation

/// The bodies of the libFuzzer targets (`Tests/Fuzz`, README "Tests and CI"): each feeds raw bytes to
/// one reader exactly as a user's file reaches it, then uses what the reader accepted. A reader may
/// refuse the bytes (throw); a crash, a hang or an unbounded allocation is a bug. The regression test
/// replays the committed corpus (`Tests/Fuzz/corpus`) through these same functions.
package enum FuzzTargets {
    /// Target names, one per reader: the `.pt` zip + pickle VM, safetensors, the vocabulary readers,
    /// the jsonl data reader and `training_args.json`.
    package static let names = ["pt", "safetensors", "vocab", "jsonl", "args"]

    /// Runs target `name` on `data`; returns false for an unknown target name.
    @discardableResult
    package static func run(_ name: String, _ data: Data) -> Bool {
        switch name {
        case "pt": if let a = try? TorchCheckpoint.read(data: data, file: "fuzz.pt") { use(a) }
        case "safetensors": if let a = try? SafeTensors.read(data: data, file: "fuzz.safetensors") { use(a) }
        case "vocab": vocab(data)
        case "jsonl": jsonl(data)
        case "args": args(data)
        default: return false
        }
        return true
    }

    /// Reads every accepted tensor's values (the sizes were checked against the file by the reader).
    static func use(_ archive: TensorArchive) {
        for t in archive.tensors {
            if t.dtype.isFloatingPoint { _ = try? t.floats() } else { _ = try? t.int64s() }
        }
    }

    /// The BERT `vocab.txt` reader, the custom vocabulary file and the official `vocab.json`; an accepted
    /// vocabulary then encodes a fixed sentence and the input itself (as hostile text) and decodes the ids.
    static func vocab(_ data: Data) {
        var tokenizers: [any TextTokenizer] = []
        if let t = try? BertWordPieceTokenizer(vocabData: data, source: "vocab.txt") { tokenizers.append(t) }
        if let t = try? CustomVocabTokenizer(vocabData: data, source: "vocab") { tokenizers.append(t) }
        if let t = try? CustomVocabTokenizer(vocabJSONData: data, source: "vocab.json") { tokenizers.append(t) }
        let text = String(decoding: data.prefix(4096), as: UTF8.self)
        for t in tokenizers {
            for s in ["Thou shalt not steal. [SEP] héllo 世界 ##x", text] {
                let ids = t.encodeWithSpecials(s)
                _ = t.decodePieces(ids)
                _ = t.decodeToken(ids + [-1, t.vocabSize, Int.max])
            }
        }
    }

    /// The jsonl reader, strict and skipping bad lines; accepted pairs are tokenised into sequences.
    static func jsonl(_ data: Data) {
        _ = try? Seq2SeqDataset.readPairs(data: data, file: "train.jsonl")
        guard let (pairs, _) = try? Seq2SeqDataset.readPairs(data: data, file: "train.jsonl", skipBadLines: true),
              let tok = try? CustomVocabTokenizer(words: ["thou", "shalt", "not", "steal", "."]) else { return }
        for p in pairs.prefix(64) {
            _ = SequenceBuilder.build(source: tok.encode(p.src), target: tok.encode(p.trg), seqLen: 16, tokenizer: tok)
        }
    }

    /// `training_args.json`: parsed, then turned into a validated model configuration (a `config_name`
    /// is looked up in an empty folder, or at its absolute path).
    static func args(_ data: Data) {
        guard let a = try? ModelCheckpoint.parseTrainingArgs(data, file: "training_args.json") else { return }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("diffuseq-fuzz-empty")
        _ = try? ModelCheckpoint.config(args: a, folder: folder, lmHeadVocab: nil, file: "training_args.json")
    }
}
