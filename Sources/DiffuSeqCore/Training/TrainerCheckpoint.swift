import Foundation

/// Everything besides the tensors that an exact resume needs.
struct TrainerState: Codable {
    var step: Int
    var adamStep: Int
    var rng: SeededRandom
    var permutation: [Int]
    var cursor: Int
    var sampler: TimestepSampler
    var options: TrainingOptions
    var config: ModelConfig
    var elapsedSeconds: Double
    /// Self-conditioning's coin stream (absent in checkpoints of runs before it existed).
    var selfConditionRNG: SeededRandom?
}

extension Trainer {
    /// Writes `ckpt-<step>/` into `output` atomically (a temporary folder renamed into place):
    /// the EMA weights as an official state dict (`model.safetensors`), `training_args.json`,
    /// `bert_config.json`, the vocabulary, and the resumable state (`state.safetensors` + `state.json`).
    /// Older checkpoints beyond `keepCheckpoints` are removed only after the new one is in place.
    ///
    /// Crash consistency (`kill -9` at any moment): a `ckpt-*` name only ever appears by renaming a
    /// complete folder; the temporary folder holds a `flock` while it is written, so the temporaries of
    /// a killed writer are recognised and removed by the next save (and by `--resume`, see
    /// `AtomicFile.removeStaleTemporaries`); an old checkpoint is first renamed to a temporary name and
    /// then deleted, so a half-deleted folder is never visible as a checkpoint either.
    @discardableResult
    public func saveCheckpoint(to output: URL, vocabLines: [String], trainingArgs: [String: Any],
                               elapsedSeconds: Double) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: output, withIntermediateDirectories: true)
        AtomicFile.removeStaleTemporaries(in: output)
        let name = String(format: "ckpt-%06d", step)
        let final = output.appendingPathComponent(name)
        let pid = ProcessInfo.processInfo.processIdentifier
        let tmp = output.appendingPathComponent(".\(name).tmp-\(pid)")
        try? fm.removeItem(at: tmp)
        var lock: Int32 = -1
        defer { if lock >= 0 { _ = close(lock) } }
        do {
            try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
            lock = open(tmp.path, O_RDONLY | O_CLOEXEC)
            if lock >= 0 { _ = flock(lock, LOCK_EX | LOCK_NB) }
            let c = model.config
            // Sorted keys: JSONEncoder's key order varies between processes, which made identical training
            // runs write different model.safetensors bytes (the config is part of the metadata).
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let configJSON = String(data: try encoder.encode(c), encoding: .utf8) ?? "{}"
            let meta = ["format": "pt", "source": "diffuseq-swift \(DiffuSeqVersion.string)", "step": "\(step)",
                        "ema_rate": "\(options.emaRates[0])", "config": configJSON]
            try SafeTensors.write(try ModelCheckpoint.stateDict(model, buffer: ema.buffers[0], metadata: meta),
                                  to: tmp.appendingPathComponent("model.safetensors"))
            var args = trainingArgs
            args["learning_steps"] = options.steps
            args["ema_rate"] = options.emaRates.map { "\($0)" }.joined(separator: ",")
            args["seed"] = options.seed
            args["lr"] = options.lr
            args["batch_size"] = options.batchSize
            args["microbatch"] = options.microbatch
            args["schedule_sampler"] = options.scheduleSampler.rawValue
            args["step"] = step
            if c.selfCondition { args["self_condition_prob"] = options.selfConditionProb }
            try ModelCheckpoint.writeJSON(ModelCheckpoint.trainingArgs(c, extra: args), to: tmp.appendingPathComponent("training_args.json"))
            try ModelCheckpoint.writeJSON(ModelCheckpoint.bertConfig(c), to: tmp.appendingPathComponent("bert_config.json"))
            try AtomicFile.write((vocabLines.joined(separator: "\n") + "\n").data(using: .utf8) ?? Data(),
                                 to: tmp.appendingPathComponent("vocab.txt"))
            var tensors = [try NamedTensor(name: "params", shape: [model.params.count], floats: model.params.array),
                           try NamedTensor(name: "adam.m", shape: [adam.m.count], floats: adam.m.array),
                           try NamedTensor(name: "adam.v", shape: [adam.v.count], floats: adam.v.array)]
            for (i, e) in ema.buffers.enumerated() {
                tensors.append(try NamedTensor(name: "ema.\(i)", shape: [e.count], floats: e.array))
            }
            try SafeTensors.write(try TensorArchive(tensors: tensors, metadata: ["what": "diffuseq-swift resumable training state"]),
                                  to: tmp.appendingPathComponent("state.safetensors"))
            let state = TrainerState(step: step, adamStep: adam.step, rng: rng, permutation: permutation, cursor: cursor,
                                     sampler: sampler, options: options, config: c, elapsedSeconds: elapsedSeconds,
                                     selfConditionRNG: c.selfCondition ? selfConditionRNG : nil)
            try AtomicFile.write(try encoder.encode(state), to: tmp.appendingPathComponent("state.json"))
            if fm.fileExists(atPath: final.path) { try Self.removeCheckpointFolder(final) }
            try fm.moveItem(at: tmp, to: final)
            Self.syncFolder(output)
        } catch {
            try? fm.removeItem(at: tmp)
            throw EngineError.io("cannot write checkpoint \(final.path): \(AtomicFile.reason(error)) (previous checkpoints are intact)")
        }
        let all = ((try? fm.contentsOfDirectory(atPath: output.path)) ?? []).filter { $0.hasPrefix("ckpt-") }.sorted()
        if all.count > options.keepCheckpoints {
            for old in all.prefix(all.count - options.keepCheckpoints) {
                try? Self.removeCheckpointFolder(output.appendingPathComponent(old))
            }
        }
        return final
    }

    /// Deletes a checkpoint folder without ever leaving it half-deleted under its `ckpt-*` name: it is
    /// renamed to a hidden temporary first (which `removeStaleTemporaries` finishes if we are killed).
    static func removeCheckpointFolder(_ folder: URL) throws {
        let fm = FileManager.default
        let doomed = folder.deletingLastPathComponent()
            .appendingPathComponent(".\(folder.lastPathComponent).tmp-delete-\(ProcessInfo.processInfo.processIdentifier)")
        try? fm.removeItem(at: doomed)
        try fm.moveItem(at: folder, to: doomed)
        try? fm.removeItem(at: doomed)
    }

    /// fsyncs a folder so that a rename in it is durable (best effort).
    static func syncFolder(_ folder: URL) {
        let fd = open(folder.path, O_RDONLY | O_CLOEXEC)
        if fd >= 0 { _ = fsync(fd); _ = close(fd) }
    }

    /// Restores weights, optimiser moments, EMA, RNG, data order and sampler history from a
    /// checkpoint folder written by `saveCheckpoint`. Returns the elapsed training time so far.
    public func restore(from folder: URL) throws -> Double {
        let stateURL = folder.appendingPathComponent("state.json")
        guard let data = try? Data(contentsOf: stateURL) else {
            throw EngineError.io("\(stateURL.path): missing (not a resumable checkpoint written by diffuseq train)")
        }
        let state: TrainerState
        do { state = try JSONDecoder().decode(TrainerState.self, from: data) } catch {
            throw EngineError.io("\(stateURL.path): unreadable (\(error))")
        }
        guard state.config == model.config else {
            throw EngineError.invalidConfig("\(stateURL.path): the checkpoint's model configuration differs from the one requested")
        }
        let archive = try SafeTensors.read(folder.appendingPathComponent("state.safetensors"))
        func load(_ name: String, into b: FloatBuffer) throws {
            let t = try archive.tensor(name)
            let v = try t.floats()
            guard v.count == b.count else {
                throw EngineError.io("\(folder.path)/state.safetensors: \(name) has \(v.count) values, expected \(b.count)")
            }
            b.ptr.update(from: v, count: v.count)
        }
        try load("params", into: model.params)
        try load("adam.m", into: adam.m)
        try load("adam.v", into: adam.v)
        for (i, e) in ema.buffers.enumerated() { try load("ema.\(i)", into: e) }
        adam.step = state.adamStep
        rng = state.rng
        if let r = state.selfConditionRNG { selfConditionRNG = r }
        permutation = state.permutation
        cursor = state.cursor
        sampler = state.sampler
        step = state.step
        return state.elapsedSeconds
    }

    /// The configuration and options stored in a resumable checkpoint.
    public static func peekState(_ folder: URL) throws -> (ModelConfig, TrainingOptions, Int) {
        let stateURL = folder.appendingPathComponent("state.json")
        guard let data = try? Data(contentsOf: stateURL) else {
            throw EngineError.io("\(stateURL.path): missing (not a resumable checkpoint written by diffuseq train)")
        }
        let s: TrainerState
        do { s = try JSONDecoder().decode(TrainerState.self, from: data) } catch {
            throw EngineError.io("\(stateURL.path): unreadable (\(error))")
        }
        return (s.config, s.options, s.step)
    }
}
