import DiffuSeqResources
import Foundation

/// Which stored matrix fills the tied embedding / lm_head when loading an official checkpoint.
public enum TiedEmbeddingSource: String, Sendable, CaseIterable {
    /// `lm_head.weight`, the live (non-EMA) matrix — what the official `load_state_dict` ends up with (spec §1.7).
    case lmHead = "lm-head"
    /// `word_embedding.weight`, the EMA matrix.
    case wordEmbedding = "word-embedding"
}

/// A model ready to sample: weights, configuration, tokenizer and where they came from.
///
/// Sendable (unchecked): only `let`s; the model is read-only once loaded and the tokenizers are immutable values.
public struct LoadedModel: @unchecked Sendable {
    /// The network.
    public let model: TransformerNetModel
    /// The tokenizer the model was trained with.
    public let tokenizer: any TextTokenizer
    /// The weights file.
    public let weightsFile: URL
    /// The folder of the checkpoint (training_args.json, vocab).
    public let folder: URL
    /// Notes for the user (unused keys, the tie choice).
    public let notes: [String]
    /// Short display name.
    public var name: String {
        let c = model.config
        return "\(folder.lastPathComponent) (\(c.layers)×\(c.width), V \(c.vocabSize), T \(c.seqLen)\(c.learnedMeanEmbed ? ", soft absorbing" : ""))"
    }
}

/// Loading and saving whole models in the official layout (safetensors or `.pt`), with
/// `training_args.json` and the vocabulary beside them.
public enum ModelCheckpoint {
    /// Resolves a user path to a weights file: a `.pt`/`.safetensors` file; a checkpoint folder
    /// with `model.safetensors`; a training output folder (newest `ckpt-*`); or an official model
    /// folder (newest `ema_*.pt`).
    public static func resolve(_ path: URL) throws -> URL {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path.path, isDirectory: &isDir) else {
            throw CheckpointError(file: path.path, "no such file or folder")
        }
        if !isDir.boolValue { return path }
        let model = path.appendingPathComponent("model.safetensors")
        if fm.fileExists(atPath: model.path) { return model }
        let items = (try? fm.contentsOfDirectory(atPath: path.path)) ?? []
        if let newest = items.filter({ $0.hasPrefix("ckpt-") }).sorted().last {
            return try resolve(path.appendingPathComponent(newest))
        }
        if let newest = items.filter({ $0.hasPrefix("ema_") && $0.hasSuffix(".pt") }).sorted().last {
            return path.appendingPathComponent(newest)
        }
        throw CheckpointError(file: path.path,
            "no model found (expected model.safetensors, a ckpt-* folder, or an official ema_*.pt)")
    }

    /// Reads the model configuration from `training_args.json` (and `config_name`'s BERT config
    /// when it is a file), or from the safetensors metadata key `config` when there is no
    /// `training_args.json`. A `training_args.json` that exists but cannot be read or parsed is an
    /// error (never a silent fallback to the metadata).
    public static func readConfig(folder: URL, archive: TensorArchive, file: URL) throws -> (ModelConfig, [String: Any]) {
        let argsURL = folder.appendingPathComponent("training_args.json")
        let fm = FileManager.default
        let args: [String: Any]
        if fm.fileExists(atPath: argsURL.path) || (try? fm.destinationOfSymbolicLink(atPath: argsURL.path)) != nil {
            let data: Data
            do { data = try Data(contentsOf: argsURL) } catch {
                throw CheckpointError(file: argsURL.path,
                    "exists but cannot be read (\(error.localizedDescription)); fix its permissions or remove it to use the configuration stored in the weights file")
            }
            args = try parseTrainingArgs(data, file: argsURL.path)
        } else if let meta = archive.metadata["config"], let d = meta.data(using: .utf8),
                  let obj = try? JSONSerialization.jsonObject(with: d) as? [String: Any] {
            args = obj
        } else {
            throw CheckpointError(file: argsURL.path,
                "missing: the official sampler reads the model's configuration from training_args.json beside the checkpoint")
        }
        let lmHead = archive["lm_head.bias"].flatMap { $0.shape.count == 1 ? $0.shape[0] : nil }
        return (try config(args: args, folder: folder, lmHeadVocab: lmHead, file: argsURL.path), args)
    }

    /// Parses the bytes of a `training_args.json`: a JSON object, or an error naming `file`.
    package static func parseTrainingArgs(_ data: Data, file: String) throws -> [String: Any] {
        let obj: Any
        do { obj = try JSONSerialization.jsonObject(with: data) } catch {
            throw CheckpointError(file: file, "is not valid JSON (expected an object of training arguments)")
        }
        guard let dict = obj as? [String: Any] else {
            throw CheckpointError(file: file, "is not a JSON object (expected an object of training arguments)")
        }
        return dict
    }

    /// The model configuration described by training arguments (`file` names them in errors);
    /// `lmHeadVocab` is the vocabulary size read from the weights, when known.
    package static func config(args: [String: Any], folder: URL, lmHeadVocab: Int?, file: String) throws -> ModelConfig {
        func int(_ k: String) -> Int? { (args[k] as? NSNumber)?.intValue }
        func dbl(_ k: String) -> Double? { (args[k] as? NSNumber)?.doubleValue }
        var c = ModelConfig()
        // BERT encoder config: an explicit file, our own keys, or bert-base-uncased.
        var bert: [String: Any] = args
        if let name = args["config_name"] as? String, name != "bert-base-uncased" {
            let u = name.hasPrefix("/") ? URL(fileURLWithPath: name) : folder.appendingPathComponent(name)
            // Only a regular file of sensible size: a hostile config_name such as /dev/zero or a FIFO
            // would otherwise block or exhaust memory in Data(contentsOf:).
            if let info = try? u.resourceValues(forKeys: [.isRegularFileKey, .fileSizeKey]),
               info.isRegularFile != true || (info.fileSize ?? .max) > 1 << 20 {
                throw CheckpointError(file: u.path, "config_name \"\(name)\": not a regular file of at most 1 MB (expected a BERT config JSON)")
            }
            guard let d = try? Data(contentsOf: u), let obj = try? JSONSerialization.jsonObject(with: d) as? [String: Any] else {
                throw CheckpointError(file: u.path, "config_name \"\(name)\": cannot read this BERT config (JSON with hidden_size, num_hidden_layers, …)")
            }
            bert = obj
        }
        func bint(_ k: String) -> Int? { (bert[k] as? NSNumber)?.intValue }
        c.width = bint("hidden_size") ?? 768
        c.layers = bint("num_hidden_layers") ?? 12
        c.heads = bint("num_attention_heads") ?? 12
        c.ffn = bint("intermediate_size") ?? 3072
        c.maxPositions = bint("max_position_embeddings") ?? 512
        c.layerNormEps = (bert["layer_norm_eps"] as? NSNumber)?.floatValue ?? 1e-12
        c.attentionDropout = (bert["attention_probs_dropout_prob"] as? NSNumber)?.floatValue ?? 0.1
        c.hiddenDim = int("hidden_dim") ?? 128
        c.hiddenTDim = int("hidden_t_dim") ?? 128
        c.seqLen = int("seq_len") ?? 128
        c.diffusionSteps = int("diffusion_steps") ?? 2000
        c.noiseSchedule = args["noise_schedule"] as? String ?? "sqrt"
        c.dropout = Float(dbl("dropout") ?? 0.1)
        c.rescaleTimesteps = (args["rescale_timesteps"] as? Bool) ?? true
        if let v = args["source_prior"], !(v is NSNull) {
            guard let b = v as? Bool else { throw CheckpointError(file: file, "source_prior must be true or false, not \(v)") }
            c.sourcePrior = b
            c.sourcePriorTraining = b
        }
        if let v = args["source_prior_training"], !(v is NSNull) {
            guard let b = v as? Bool else { throw CheckpointError(file: file, "source_prior_training must be true or false, not \(v)") }
            c.sourcePriorTraining = b
        }
        if let v = args["self_condition"], !(v is NSNull) {
            guard let b = v as? Bool else { throw CheckpointError(file: file, "self_condition must be true or false, not \(v)") }
            c.selfCondition = b
        }
        try SoftAbsorbing.readArgs(args, into: &c, file: file)
        if let bad = ["learn_sigma", "use_kl", "sigma_small"].first(where: { (args[$0] as? Bool) == true }) {
            throw CheckpointError(file: file, "\(bad)=true is not supported (the official v1 code never uses it)")
        }
        if let v = lmHeadVocab { c.vocabSize = v } else if let v = int("vocab_size") { c.vocabSize = v }
        do { try c.validate() } catch { throw CheckpointError(file: file, "\(error)") }
        return c
    }

    /// Loads a model for sampling from any supported path.
    public static func load(_ path: URL, tie: TiedEmbeddingSource = .lmHead) throws -> LoadedModel {
        let file = try resolve(path)
        let folder = file.deletingLastPathComponent()
        let archive = file.pathExtension == "pt" ? try TorchCheckpoint.read(file) : try SafeTensors.read(file)
        let (config, args) = try readConfig(folder: folder, archive: archive, file: file)
        let model = try TransformerNetModel(config: config)
        let notes = try fill(model, from: archive, file: file, tie: tie)
        let tokenizer = try loadTokenizer(folder: folder, args: args, vocabSize: config.vocabSize)
        return LoadedModel(model: model, tokenizer: tokenizer, weightsFile: file, folder: folder, notes: notes)
    }

    /// Copies an archive's tensors into a model, checking names and shapes. Missing keys are an
    /// error listing each with its expected shape; unused keys are returned as notes.
    @discardableResult
    public static func fill(_ model: TransformerNetModel, from archive: TensorArchive, file: URL,
                            tie: TiedEmbeddingSource = .lmHead) throws -> [String] {
        try SoftAbsorbing.checkKey(in: archive, model: model, file: file)
        var missing: [String] = [], wrong: [String] = []
        for e in model.layout.entries {
            var key = e.key
            if key == "word_embedding.weight" {
                let preferred = tie == .lmHead ? "lm_head.weight" : "word_embedding.weight"
                key = archive[preferred] != nil ? preferred : (archive["word_embedding.weight"] != nil ? "word_embedding.weight" : "lm_head.weight")
            }
            guard let t = archive[key] else { missing.append("\(e.key) \(e.shape)"); continue }
            guard t.shape == e.shape else { wrong.append("\(key): file has \(t.shape), model expects \(e.shape)"); continue }
            let v = try t.floats()
            (model.params.ptr + e.offset).update(from: v, count: e.count)
        }
        if !missing.isEmpty || !wrong.isEmpty {
            var msg = "does not fit the configured model"
            if !wrong.isEmpty { msg += "\n  wrong shapes:\n    " + wrong.joined(separator: "\n    ") }
            if !missing.isEmpty { msg += "\n  missing keys:\n    " + missing.joined(separator: "\n    ") }
            if model.config.selfCondition && missing.contains(where: { $0.hasPrefix("self_cond_proj.") }) {
                msg += "\n  (training_args.json says self_condition: true, so the weights must hold self_cond_proj; a model trained "
                    + "without self-conditioning has none: train --init-from it with --self-condition adds it, zero-initialised)"
            }
            msg += "\n  (the configuration comes from training_args.json and config_name beside the checkpoint)"
            throw CheckpointError(file: file.path, msg)
        }
        let known = Set(model.layout.entries.map(\.key)).union(["lm_head.weight"]).union(ParameterLayout.buffers)
        let unused = archive.tensors.filter { !known.contains($0.name) }.map { "\($0.name) \($0.shape)" }
        var notes: [String] = []
        if !unused.isEmpty { notes.append("unused keys in \(file.lastPathComponent): " + unused.joined(separator: ", ")) }
        return notes
    }

    /// The tokenizer of a checkpoint folder: WordPiece from `vocab.txt` for `vocab = "bert"` or
    /// our `tokenizer = "wordpiece"`; the official custom vocabulary (`vocab.json`, or the vocab
    /// file) otherwise. Falls back to the shipped BERT vocabulary for "bert".
    public static func loadTokenizer(folder: URL, args: [String: Any], vocabSize: Int) throws -> any TextTokenizer {
        let fm = FileManager.default
        let vocab = args["vocab"] as? String ?? "bert"
        let kind = args["tokenizer"] as? String ?? (vocab == "bert" ? "wordpiece" : "custom")
        let tok: any TextTokenizer
        if kind == "wordpiece" {
            var url = folder.appendingPathComponent("vocab.txt")
            if !fm.fileExists(atPath: url.path), vocab == "bert", let shipped = BundledResources.url("data/bert-base-uncased-vocab.txt") {
                url = shipped
            }
            guard fm.fileExists(atPath: url.path) else {
                throw CheckpointError(file: url.path, "missing: the WordPiece vocabulary of this checkpoint")
            }
            tok = try BertWordPieceTokenizer(vocabFile: url)
        } else {
            let json = folder.appendingPathComponent("vocab.json")
            if fm.fileExists(atPath: json.path) {
                tok = try CustomVocabTokenizer(vocabJSON: json)
            } else {
                let u = vocab.hasPrefix("/") ? URL(fileURLWithPath: vocab) : folder.appendingPathComponent(vocab)
                guard fm.fileExists(atPath: u.path) else {
                    throw CheckpointError(file: u.path, "missing: the custom vocabulary named by training_args.json (\"vocab\": \"\(vocab)\"), and no vocab.json beside the checkpoint")
                }
                tok = try CustomVocabTokenizer(vocabFile: u)
            }
        }
        guard tok.vocabSize == vocabSize else {
            throw CheckpointError(file: folder.path, "the vocabulary has \(tok.vocabSize) tokens but the model's lm_head has \(vocabSize)")
        }
        return tok
    }

    /// The model's weights as an official state dict: `position_ids`, every parameter, and
    /// `lm_head.weight` (= the tied matrix). Reads from `buffer` (params or an EMA copy).
    public static func stateDict(_ model: TransformerNetModel, buffer: FloatBuffer, metadata: [String: String]) throws -> TensorArchive {
        var tensors: [NamedTensor] = []
        let c = model.config
        tensors.append(try NamedTensor(name: "position_ids", shape: [1, c.maxPositions], int64s: (0..<c.maxPositions).map(Int64.init)))
        for e in model.layout.entries {
            tensors.append(try NamedTensor(name: e.key, shape: e.shape, floats: buffer.array(e.range)))
            if e.key == "word_embedding.weight" {
                tensors.append(try NamedTensor(name: "lm_head.weight", shape: e.shape, floats: buffer.array(e.range)))
            }
        }
        return try TensorArchive(tensors: tensors, metadata: metadata)
    }

    /// `training_args.json` content in the official key names (plus ours), for a configuration.
    public static func trainingArgs(_ c: ModelConfig, extra: [String: Any]) -> [String: Any] {
        var a: [String: Any] = [
            "hidden_dim": c.hiddenDim, "hidden_t_dim": c.hiddenTDim, "seq_len": c.seqLen,
            "diffusion_steps": c.diffusionSteps, "noise_schedule": c.noiseSchedule, "dropout": c.dropout,
            "vocab_size": c.vocabSize, "config_name": "bert_config.json", "predict_xstart": true,
            "rescale_timesteps": c.rescaleTimesteps, "learn_sigma": false, "use_kl": false, "sigma_small": false,
            "timestep_respacing": "", "use_plm_init": "no",
        ]
        if c.sourcePrior { a["source_prior"] = true }  // absent = the official process
        if c.sourcePrior != c.sourcePriorTraining { a["source_prior_training"] = c.sourcePriorTraining }
        if c.selfCondition { a["self_condition"] = true }  // absent = not self-conditioned
        SoftAbsorbing.writeArgs(c, into: &a)
        for (k, v) in extra { a[k] = v }
        return a
    }

    /// The BERT config file content for a configuration (official `config_name` file).
    public static func bertConfig(_ c: ModelConfig) -> [String: Any] {
        ["architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": c.attentionDropout, "hidden_act": "gelu",
         "hidden_dropout_prob": c.dropout, "hidden_size": c.width, "initializer_range": 0.02,
         "intermediate_size": c.ffn, "layer_norm_eps": c.layerNormEps, "max_position_embeddings": c.maxPositions,
         "model_type": "bert", "num_attention_heads": c.heads, "num_hidden_layers": c.layers, "pad_token_id": 0,
         "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": c.vocabSize]
    }

    /// Writes JSON atomically with sorted keys.
    public static func writeJSON(_ obj: Any, to url: URL) throws {
        let d = try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(d, to: url)
    }
}
