import ArgumentParser
import DiffuSeqCore
import Foundation

/// `diffuseq export`: any supported checkpoint → our safetensors folder (optionally float16).
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a checkpoint (ours, or an official ema_*.pt) as a model folder: model.safetensors (official keys), training_args.json, bert_config.json, vocabulary.")

    @OptionGroup var model: ModelOptions
    @Option(name: .long, help: "Output folder.") var output: String
    @Option(name: .long, help: "Weight dtype: f32 or f16 (half the size; sampling computes in f32).") var dtype: String = "f32"

    func run() throws {
        try runReporting {
            guard dtype == "f32" || dtype == "f16" else { throw CLIError("--dtype must be f32 or f16, not \"\(dtype)\"") }
            let loaded = try model.load()
            let out = URL(fileURLWithPath: output)
            let fm = FileManager.default
            try fm.createDirectory(at: out, withIntermediateDirectories: true)
            let c = loaded.model.config
            let configJSON = String(data: try JSONEncoder().encode(c), encoding: .utf8) ?? "{}"
            var dict = try ModelCheckpoint.stateDict(loaded.model, buffer: loaded.model.params,
                                                    metadata: ["format": "pt", "source": "diffuseq export of \(loaded.weightsFile.lastPathComponent)",
                                                               "config": configJSON])
            if dtype == "f16" {
                var converted: [NamedTensor] = []
                for t in dict.tensors {
                    guard t.dtype == .F32 else { converted.append(t); continue }
                    let halves = try t.floats().map { Float16($0) }
                    let data = halves.withUnsafeBufferPointer { Data(buffer: $0) }
                    converted.append(try NamedTensor(name: t.name, dtype: .F16, shape: t.shape, data: data))
                }
                dict = try TensorArchive(tensors: converted, metadata: dict.metadata)
            }
            try SafeTensors.write(dict, to: out.appendingPathComponent("model.safetensors"))
            let argsURL = loaded.folder.appendingPathComponent("training_args.json")
            var args = (try? JSONSerialization.jsonObject(with: Data(contentsOf: argsURL)) as? [String: Any]) ?? [:]
            args["config_name"] = "bert_config.json"
            args["vocab_size"] = c.vocabSize
            if loaded.tokenizer is BertWordPieceTokenizer {
                args["tokenizer"] = "wordpiece"; args["vocab"] = args["vocab"] as? String == "bert" ? "bert" : "vocab.txt"
            } else {
                args["tokenizer"] = "custom"; args["vocab"] = "vocab.txt"
            }
            try ModelCheckpoint.writeJSON(ModelCheckpoint.trainingArgs(c, extra: args), to: out.appendingPathComponent("training_args.json"))
            try ModelCheckpoint.writeJSON(ModelCheckpoint.bertConfig(c), to: out.appendingPathComponent("bert_config.json"))
            let lines: [String]
            if let w = loaded.tokenizer as? BertWordPieceTokenizer { lines = w.vocab }
            else if let cv = loaded.tokenizer as? CustomVocabTokenizer { lines = Array(cv.vocab.dropFirst(4)) }
            else { lines = [] }
            try AtomicFile.write((lines.joined(separator: "\n") + "\n").data(using: .utf8) ?? Data(), to: out.appendingPathComponent("vocab.txt"))
            eprint("wrote \(out.path) (\(dtype), \(c.layers)×\(c.width), V \(c.vocabSize))")
        }
    }
}
