import ArgumentParser
import DiffuSeqCore
import DiffuSeqResources
import Foundation

/// `diffuseq train`: the official training loop on a DiffuSeq jsonl folder.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a DiffuSeq model (official loss, sampler, AdamW, EMA) and write checkpoints that sample/explore open.",
        discussion: """
        Every --save-interval steps (and at the end, and on Ctrl-C/SIGTERM) OUTPUT/ckpt-<step>/ is written
        atomically: model.safetensors (EMA weights, official keys), training_args.json, bert_config.json,
        vocab.txt, and the resumable state (state.safetensors, state.json). OUTPUT/train_log.jsonl has one
        line per step. --resume OUTPUT continues exactly where the newest checkpoint stopped.
        --vocab: bert (the 30,522 BERT-uncased pieces), build (only the BERT pieces that occur in the
        training data), wordpiece:PATH (a WordPiece vocab.txt), or PATH (an official custom vocabulary file).
        --preset kjv2modern: the recipe of the built-in model (see README, model card); flags given
        explicitly override the preset.
        """)

    @Option(name: .long, help: "Recipe preset: kjv2modern.") var preset: String?
    @Option(name: .long, help: "Folder with train.jsonl (DiffuSeq format). Default: the built-in kjv2modern data.") var dataDir: String?
    @Option(name: .long, help: "bert | build | wordpiece:PATH | PATH (official custom vocab).") var vocab: String?
    @Option(name: .long, help: "Sequence length (official seq_len).") var seqLen: Int?
    @Option(name: .long, help: "Word-embedding dims (official hidden_dim).") var hiddenDim: Int?
    @Option(name: .long, help: "Timestep-embedding dims (official hidden_t_dim).") var hiddenTDim: Int?
    @Option(name: .long, help: "Encoder layers.") var layers: Int?
    @Option(name: .long, help: "Encoder width (BERT hidden_size).") var width: Int?
    @Option(name: .long, help: "Attention heads.") var heads: Int?
    @Option(name: .long, help: "FFN size (BERT intermediate_size).") var ffn: Int?
    @Option(name: .long, help: "Diffusion steps T.") var diffusionSteps: Int?
    @Option(name: .long, help: "sqrt | linear | cosine | trunc_cos | trunc_lin | pw_lin.") var noiseSchedule: String?
    @Option(name: .long, help: "uniform | lossaware.") var scheduleSampler: String?
    @Option(name: .long, help: "Peak learning rate (linear decay to 0).") var lr: Double?
    @Option(name: .long, help: "Linear warm-up steps.") var warmup: Int?
    @Option(name: .long, help: "Examples per step.") var batchSize: Int?
    @Option(name: .long, help: "Examples per forward/backward chunk (gradients summed, as official).") var microbatch: Int?
    @Option(name: .long, help: "Training steps (official learning_steps).") var steps: Int?
    @Option(name: .long, help: "Checkpoint every N steps.") var saveInterval: Int?
    @Option(name: .long, help: "EMA rate(s), comma-separated; the first is saved for sampling.") var emaRate: String?
    @Option(name: .long, help: "Random seed.") var seed: UInt64?
    @Option(name: .long, help: "Hidden dropout (attention dropout stays 0.1 as official unless --attention-dropout).") var dropout: Float?
    @Option(name: .long, help: "Attention-probability dropout.") var attentionDropout: Float?
    @Option(name: .long, help: "AdamW weight decay.") var weightDecay: Float?
    @Option(name: .long, help: "Gradient clipping max norm (≤ 0 = off).") var clip: Double?
    @Option(name: .long, help: "official (MSE over all positions) | target-only (the paper's Eq. 2: target and its padding) | target-no-pad.") var loss: String?
    @Option(name: .long, help: ArgumentHelp("The MSE region: all (official) | target (= --loss target-only) | target-no-pad (the token loss then skips PAD too).", valueName: "region")) var lossMask: String?
    @Option(name: .long, help: ArgumentHelp("Weight of the token loss: CE of lm_head(x̂₀) against the target ids on the target positions (Difformer's anchor loss; 0 = off, official).", valueName: "weight")) var tokenLoss: Float?
    @Option(name: .long, help: "Label smoothing of the token loss, in [0, 1).") var labelSmoothing: Float?
    @Option(name: .long, help: ArgumentHelp("DINOISER's noise floor: draw only t whose noise-to-signal ratio reaches F × half the mean nearest-neighbour distance of the embeddings (0 = off, official).", valueName: "F")) var noiseFloor: Double?
    @Option(name: .long, help: ArgumentHelp("Steps between recomputations of the noise floor's t_min (default 200).", valueName: "N")) var noiseFloorInterval: Int?
    @Flag(name: .long, inversion: .prefixedNo, help: "Source prior: centre the target's diffusion on the source copy (x_T ≈ copy + noise) in training and sampling; recorded as source_prior in training_args.json and used by every sampler.") var sourcePrior: Bool?
    @Flag(name: .long, inversion: .prefixedNo, help: "Train on the official process but record source_prior: true (source_prior_training: false), so every sampler centres on the source copy (the zero-training variant; the kjv2modern preset's choice).") var sampleSourcePrior: Bool?
    @Flag(name: .long, inversion: .prefixedNo, help: "Self-conditioning: the network also takes its previous estimate x̂₀ through a zero-initialised projection added to x_t (self_cond_proj); training feeds a no-gradient first pass's x̂₀ to a fraction of the examples, every sampler the previous step's. Recorded as self_condition in training_args.json.") var selfCondition: Bool?
    @Option(name: .long, help: ArgumentHelp("Self-conditioning: probability that an example's graded pass takes the first pass's x̂₀ (default 0.5).", valueName: "P")) var selfConditionProb: Double?
    @Flag(name: .long, help: "DiffuSeq-v2's soft absorbing state: a learned vector m (mean_embed) the target region's diffusion is centred on, and target tokens of x_t replaced by m with probability γ·√(1−ᾱ_t) (v2's learned_mean_embed + denoise); every sampler then starts at m + noise and centres on m.") var softAbsorbing = false
    @Option(name: [.customLong("denoise-rate"), .customLong("absorb-gamma")], help: ArgumentHelp("With --soft-absorbing: γ of the token replacement (v2's denoise_rate; default 0.5 as v2's train.sh; 0 = the learned m without replacement).", valueName: "γ")) var denoiseRate: Float?
    @Option(name: .long, help: ArgumentHelp("With --soft-absorbing: weight of ‖m‖₂ in the loss (v2's reg_rate; default 0.01, the value v2's code uses).", valueName: "R")) var regRate: Float?
    @Option(name: .long, help: "Output folder.") var output: String?
    @Option(name: .long, help: "Resume from an output folder (newest ckpt-*) or a ckpt folder.") var resume: String?
    @Option(name: .long, help: ArgumentHelp("Start from the weights of a model (our folder or model.safetensors, a training output, an official ema_*.pt) instead of a random initialisation: a new run (fresh optimiser, schedule and EMA) whose shape and vocabulary must equal the checkpoint's.", valueName: "checkpoint")) var initFrom: String?
    @Flag(name: .long, help: "Skip malformed training lines (reporting a count).") var skipBadLines = false
    @Option(name: .long, help: "Threads for BLAS and the Swift kernels.") var threads: Int?
    @OptionGroup var precision: PrecisionOption
    @Option(name: .long, help: "Stop after this many steps in this run (the schedule still spans --steps).") var stopAfter: Int?

    struct Recipe {
        var vocab = "build", seqLen = 64, hiddenDim = 128, hiddenTDim = 128, layers = 6, width = 256, heads = 4, ffn = 1024
        var diffusionSteps = 2000, noiseSchedule = "sqrt", scheduleSampler = "lossaware", lr = 3e-4, warmup = 0
        var batchSize = 64, microbatch = 64, steps = 2000, saveInterval = 250, emaRate = "0.999", seed: UInt64 = 102
        var dropout: Float = 0.1, attentionDropout: Float = 0.1, weightDecay: Float = 0, clip = -1.0, loss = "official"
        var tokenLoss: Float = 0, labelSmoothing: Float = 0, sourcePrior = false, sampleSourcePrior = false, noiseFloor = 0.0, noiseFloorInterval = 200
        var selfCondition = false, selfConditionProb = 0.5
        var softAbsorbing = false, denoiseRate = SoftAbsorbing.defaultDenoiseRate, regRate = SoftAbsorbing.defaultRegRate
    }

    static func presetRecipe(_ name: String) throws -> Recipe {
        var r = Recipe()
        switch name {
        case "kjv2modern":
            r.vocab = "build"; r.seqLen = 64; r.hiddenDim = 128; r.hiddenTDim = 128
            r.layers = 6; r.width = 256; r.heads = 4; r.ffn = 1024
            r.diffusionSteps = 2000; r.scheduleSampler = "lossaware"; r.lr = 1e-3; r.warmup = 200
            r.batchSize = 64; r.microbatch = 64; r.steps = 3000; r.saveInterval = 250; r.emaRate = "0.995"
            r.dropout = 0.1; r.attentionDropout = 0.1; r.clip = 1.0
            // The recipe A/B's winner (README model card): DINOISER's noise floor at half the embeddings' mean
            // nearest-neighbour distance, and samplers centred on the source copy (trained on the official process).
            r.noiseFloor = 0.5; r.sampleSourcePrior = true
        default:
            throw CLIError("unknown --preset \"\(name)\" (available: kjv2modern)")
        }
        return r
    }

    func run() throws {
        try runReporting {
            Interrupt.install()  // also unblocks SIGINT/SIGTERM if a launcher handed them to us blocked
            try precision.apply()
            if let t = threads {
                guard t >= 1 else { throw CLIError("--threads must be at least 1") }
                try setComputeThreads(t)
            }
            if let r = resume {
                let fixed: [(String, Bool)] = [
                    ("--preset", preset != nil), ("--vocab", vocab != nil), ("--seq-len", seqLen != nil),
                    ("--hidden-dim", hiddenDim != nil), ("--hidden-t-dim", hiddenTDim != nil), ("--layers", layers != nil),
                    ("--width", width != nil), ("--heads", heads != nil), ("--ffn", ffn != nil),
                    ("--diffusion-steps", diffusionSteps != nil), ("--noise-schedule", noiseSchedule != nil),
                    ("--schedule-sampler", scheduleSampler != nil), ("--lr", lr != nil), ("--warmup", warmup != nil),
                    ("--batch-size", batchSize != nil), ("--microbatch", microbatch != nil), ("--ema-rate", emaRate != nil),
                    ("--seed", seed != nil), ("--dropout", dropout != nil), ("--attention-dropout", attentionDropout != nil),
                    ("--weight-decay", weightDecay != nil), ("--clip", clip != nil), ("--loss", loss != nil),
                    ("--loss-mask", lossMask != nil), ("--token-loss", tokenLoss != nil), ("--label-smoothing", labelSmoothing != nil),
                    ("--source-prior", sourcePrior != nil), ("--sample-source-prior", sampleSourcePrior != nil), ("--noise-floor", noiseFloor != nil),
                    ("--noise-floor-interval", noiseFloorInterval != nil), ("--self-condition", selfCondition != nil),
                    ("--self-condition-prob", selfConditionProb != nil),
                    ("--soft-absorbing", softAbsorbing),
                    ("--denoise-rate", denoiseRate != nil), ("--reg-rate", regRate != nil)]
                if initFrom != nil { throw CLIError("--init-from starts a new run; it cannot be combined with --resume") }
                let given = fixed.filter { $0.1 }.map { $0.0 }
                guard given.isEmpty else {
                    throw CLIError("\(given.joined(separator: ", ")): fixed by the checkpoint and cannot change on --resume " +
                                   "(only --steps, --save-interval, --stop-after, --threads, --precision, --data-dir and --output can)")
                }
                try runResume(URL(fileURLWithPath: r))
            } else { try runFresh() }
        }
    }

    func runFresh() throws {
        var r = try preset.map(Self.presetRecipe) ?? Recipe()
        if let v = vocab { r.vocab = v }; if let v = seqLen { r.seqLen = v }; if let v = hiddenDim { r.hiddenDim = v }
        if let v = hiddenTDim { r.hiddenTDim = v }; if let v = layers { r.layers = v }; if let v = width { r.width = v }
        if let v = heads { r.heads = v }; if let v = ffn { r.ffn = v }; if let v = diffusionSteps { r.diffusionSteps = v }
        if let v = noiseSchedule { r.noiseSchedule = v }; if let v = scheduleSampler { r.scheduleSampler = v }
        if let v = lr { r.lr = v }; if let v = warmup { r.warmup = v }; if let v = batchSize { r.batchSize = v }
        if let v = microbatch { r.microbatch = v } else if batchSize != nil { r.microbatch = min(r.microbatch, r.batchSize) }
        if let v = steps { r.steps = v }; if let v = saveInterval { r.saveInterval = v }; if let v = emaRate { r.emaRate = v }
        if let v = seed { r.seed = v }; if let v = dropout { r.dropout = v }; if let v = attentionDropout { r.attentionDropout = v }
        if let v = weightDecay { r.weightDecay = v }; if let v = clip { r.clip = v }; if let v = loss { r.loss = v }
        if let v = lossMask {
            guard loss == nil else { throw CLIError("--loss-mask and --loss name the same setting: pass one") }
            let map = ["all": "official", "target": "target-only", "target-no-pad": "target-no-pad"]
            guard let l = map[v] else { throw CLIError("--loss-mask must be all, target or target-no-pad, not \"\(v)\"") }
            r.loss = l
        }
        if let v = tokenLoss { r.tokenLoss = v }; if let v = labelSmoothing { r.labelSmoothing = v }
        if let v = sourcePrior { r.sourcePrior = v }
        if let v = sampleSourcePrior { r.sampleSourcePrior = v }
        if r.sourcePrior && sampleSourcePrior == true {
            throw CLIError("--source-prior already samples with the prior; --sample-source-prior is for training without it")
        }
        if let v = noiseFloor { r.noiseFloor = v }; if let v = noiseFloorInterval { r.noiseFloorInterval = v }
        if let v = selfCondition { r.selfCondition = v }
        if let v = selfConditionProb {
            guard r.selfCondition else { throw CLIError("--self-condition-prob applies to self-conditioned runs: add --self-condition") }
            r.selfConditionProb = v
        }
        try applySoftAbsorbing(&r)
        r.microbatch = min(r.microbatch, r.batchSize)

        guard let out = output else { throw CLIError("--output FOLDER is required (checkpoints and the log go there)") }
        let outURL = URL(fileURLWithPath: out)
        if FileManager.default.fileExists(atPath: outURL.path),
           ((try? FileManager.default.contentsOfDirectory(atPath: outURL.path)) ?? []).contains(where: { $0.hasPrefix("ckpt-") }) {
            throw CLIError("\(out) already holds checkpoints: pass --resume \(out) to continue, or choose another --output")
        }
        let dataURL = try dataFolder()
        let trainFile = dataURL.appendingPathComponent("train.jsonl")
        // Vocabulary
        let (tokenizer, vocabLines, tokKind, vocabArg) = try makeTokenizer(r.vocab, trainFile: trainFile)
        var opts = TrainingOptions()
        opts.lr = r.lr; opts.batchSize = r.batchSize; opts.microbatch = r.microbatch; opts.steps = r.steps
        opts.warmup = r.warmup; opts.saveInterval = r.saveInterval; opts.seed = r.seed; opts.weightDecay = r.weightDecay
        opts.clip = r.clip
        opts.emaRates = try r.emaRate.split(separator: ",").map {
            guard let v = Float($0.trimmingCharacters(in: .whitespaces)) else { throw CLIError("--ema-rate: \"\($0)\" is not a number") }
            return v
        }
        guard let ss = TimestepSampler.Kind(rawValue: r.scheduleSampler) else {
            throw CLIError("--schedule-sampler must be uniform or lossaware, not \"\(r.scheduleSampler)\"")
        }
        opts.scheduleSampler = ss
        guard let lv = LossVariant(rawValue: r.loss) else {
            throw CLIError("--loss must be official, target-only or target-no-pad, not \"\(r.loss)\"")
        }
        opts.loss = lv
        opts.tokenLoss = r.tokenLoss; opts.labelSmoothing = r.labelSmoothing
        opts.noiseFloor = r.noiseFloor; opts.noiseFloorInterval = r.noiseFloorInterval
        opts.selfConditionProb = r.selfConditionProb
        try opts.validate()
        var config = ModelConfig(vocabSize: tokenizer.vocabSize, hiddenDim: r.hiddenDim, hiddenTDim: r.hiddenTDim, width: r.width,
                                 layers: r.layers, heads: r.heads, ffn: r.ffn, maxPositions: max(512, r.seqLen), seqLen: r.seqLen,
                                 dropout: r.dropout, attentionDropout: r.attentionDropout, diffusionSteps: r.diffusionSteps,
                                 noiseSchedule: r.noiseSchedule)
        config.sourcePrior = r.sourcePrior || r.sampleSourcePrior
        config.sourcePriorTraining = r.sourcePrior
        config.selfCondition = r.selfCondition
        if r.softAbsorbing { config.learnedMeanEmbed = true; config.denoiseRate = r.denoiseRate; config.regRate = r.regRate }
        try config.validate()
        let model = try TransformerNetModel(config: config)
        model.initialise(seed: r.seed)
        if let from = initFrom { try Self.initialise(model, from: URL(fileURLWithPath: from), tokenizer: tokenizer) }
        let examples = try loadExamples(trainFile, tokenizer: tokenizer, seqLen: r.seqLen)
        let trainer = try Trainer(model: model, examples: examples, options: opts, padID: tokenizer.padID)
        let args: [String: Any] = ["vocab": vocabArg, "tokenizer": tokKind, "data_dir": dataURL.path,
                                   "dataset": dataURL.lastPathComponent, "notes": "diffuseq-swift", "loss": r.loss,
                                   "warmup": r.warmup, "gradient_clipping": r.clip, "weight_decay": r.weightDecay,
                                   "preset": preset ?? "", "checkpoint_path": outURL.path, "init_from": initFrom ?? "",
                                   "token_loss": r.tokenLoss, "label_smoothing": r.labelSmoothing,
                                   "noise_floor": r.noiseFloor, "noise_floor_interval": r.noiseFloorInterval]
        try Self.makeOutputFolder(outURL)
        eprint("model: \(config.layers)×\(config.width), \(config.heads) heads, FFN \(config.ffn), D \(config.hiddenDim), V \(config.vocabSize), T \(config.seqLen) — \(model.layout.parameterCount.formatted()) parameters"
               + (config.selfCondition ? "; self-conditioned (first pass for \(Int((opts.selfConditionProb * 100).rounded())) % of the examples)" : ""))
        if r.softAbsorbing {
            eprint("soft absorbing state: learned \(SoftAbsorbing.key) (\(config.hiddenDim) floats), token replacement γ = \(r.denoiseRate), reg_rate \(r.regRate)")
        }
        eprint("data: \(examples.count) training pairs from \(trainFile.path); \(opts.steps) steps of \(opts.batchSize) (microbatch \(opts.microbatch)), lr \(opts.lr), \(ss.rawValue) timesteps")
        reportMatMul(trainer.matMul, "training")
        try loop(trainer, output: outURL, vocabLines: vocabLines, args: args, elapsed: 0)
    }

    /// Copies the weights of the checkpoint at `url` into `model` (a fresh run's starting point), after checking
    /// that both have the same shape and the same vocabulary, id by id.
    static func initialise(_ model: TransformerNetModel, from url: URL, tokenizer: any TextTokenizer) throws {
        let src = try ModelCheckpoint.load(url)
        let a = src.model.config, b = model.config
        let shape: [(String, Int, Int)] = [("vocabulary size", a.vocabSize, b.vocabSize), ("hidden_dim", a.hiddenDim, b.hiddenDim),
                                           ("hidden_t_dim", a.hiddenTDim, b.hiddenTDim), ("width", a.width, b.width),
                                           ("layers", a.layers, b.layers), ("heads", a.heads, b.heads), ("ffn", a.ffn, b.ffn),
                                           ("max positions", a.maxPositions, b.maxPositions)]
        for (what, have, want) in shape where have != want {
            throw CLIError("--init-from \(url.path): \(what) is \(have) in the checkpoint but \(want) in this run")
        }
        if a.hasProjections != b.hasProjections {
            throw CLIError("--init-from \(url.path): the checkpoint \(a.hasProjections ? "has" : "has no") up/down projections, this run \(b.hasProjections ? "has" : "has none")")
        }
        for id in 0..<b.vocabSize where src.tokenizer.token(for: id) != tokenizer.token(for: id) {
            throw CLIError("--init-from \(url.path): vocabulary differs at id \(id) (\"\(src.tokenizer.token(for: id))\" in the checkpoint, \"\(tokenizer.token(for: id))\" here); pass the checkpoint's vocabulary with --vocab")
        }
        if a.selfCondition && !b.selfCondition {
            throw CLIError("--init-from \(url.path): the checkpoint is self-conditioned (self_cond_proj); pass --self-condition to keep it")
        }
        // Tensor by tensor: a self-conditioned run from a checkpoint without self-conditioning keeps its zero
        // self_cond_proj, so it starts exactly at the checkpoint's behaviour; a model with the soft absorbing state keeps
        // its own (seeded) mean_embed when the checkpoint has none; a checkpoint's mean_embed is dropped by a run without it.
        var fresh: [String] = []
        for e in model.layout.entries {
            guard let from = src.model.layout.entry(e.key), from.shape == e.shape else { fresh.append(e.key); continue }
            (model.params.ptr + e.offset).update(from: src.model.params.ptr + from.offset, count: e.count)
        }
        let dropped = src.model.layout.entries.map(\.key).filter { model.layout.entry($0) == nil }
        let zero = fresh.filter { $0.hasPrefix("self_cond_proj.") }, seeded = fresh.filter { !$0.hasPrefix("self_cond_proj.") }
        eprint("init: weights from \(src.name)" + (zero.isEmpty ? "" : "; \(zero.joined(separator: ", ")) added, zero-initialised")
               + (seeded.isEmpty ? "" : "; initialised here: \(seeded.joined(separator: ", "))")
               + (dropped.isEmpty ? "" : "; not used: \(dropped.joined(separator: ", "))"))
    }

    func runResume(_ path: URL) throws {
        let fm = FileManager.default
        var ckpt = path
        let items = (try? fm.contentsOfDirectory(atPath: path.path)) ?? []
        if !fm.fileExists(atPath: path.appendingPathComponent("state.json").path) {
            guard let newest = items.filter({ $0.hasPrefix("ckpt-") }).sorted().last else {
                throw CLIError("\(path.path): no ckpt-* folder to resume from")
            }
            ckpt = path.appendingPathComponent(newest)
        }
        let outURL = output.map { URL(fileURLWithPath: $0) } ?? ckpt.deletingLastPathComponent()
        // Temporaries of saves that a kill interrupted (a crash or kill -9 mid-checkpoint) are never complete.
        let stale = AtomicFile.removeStaleTemporaries(in: ckpt.deletingLastPathComponent())
        if !stale.isEmpty { eprint("removed \(stale.count) unfinished checkpoint temporar\(stale.count == 1 ? "y" : "ies") of an interrupted run: \(stale.joined(separator: ", "))") }
        var (config, opts, step) = try Trainer.peekState(ckpt)
        // Extending a run: --steps on resume lengthens the schedule (the linear decay is recomputed over the new
        // total, a warm restart of the learning rate); --save-interval may change too. Nothing else may.
        if let s = steps {
            guard s > step else { throw CLIError("--steps \(s): the checkpoint is already at step \(step); pass a larger total") }
            if s != opts.steps { eprint("extending the schedule from \(opts.steps) to \(s) steps (learning rate decays linearly to 0 over \(s))") }
            opts.steps = s
        }
        if let v = saveInterval { opts.saveInterval = v }
        let argsURL = ckpt.appendingPathComponent("training_args.json")
        let argsData: Data
        do { argsData = try Data(contentsOf: argsURL) } catch {
            throw CLIError("cannot read \(argsURL.path) (\(AtomicFile.reason(error))): it holds the run's data folder and vocabulary")
        }
        var args = try ModelCheckpoint.parseTrainingArgs(argsData, file: argsURL.path)
        let tokenizer = try ModelCheckpoint.loadTokenizer(folder: ckpt, args: args, vocabSize: config.vocabSize)
        let vocabLines = try String(contentsOf: ckpt.appendingPathComponent("vocab.txt"), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init).dropLast().map { $0 }
        let dataPath = dataDir ?? (args["data_dir"] as? String) ?? ""
        let trainFile = URL(fileURLWithPath: dataPath).appendingPathComponent("train.jsonl")
        let examples = try loadExamples(trainFile, tokenizer: tokenizer, seqLen: config.seqLen)
        let model = try TransformerNetModel(config: config)
        let trainer = try Trainer(model: model, examples: examples, options: opts, padID: tokenizer.padID)
        let elapsed = try trainer.restore(from: ckpt)
        for k in ["hidden_dim", "hidden_t_dim", "seq_len", "diffusion_steps", "noise_schedule", "dropout", "vocab_size",
                  "config_name", "predict_xstart", "rescale_timesteps", "learn_sigma", "use_kl", "sigma_small",
                  "timestep_respacing", "use_plm_init", "source_prior", "source_prior_training", "learned_mean_embed", "denoise",
                  "denoise_rate", "reg_rate", "self_condition"] { args.removeValue(forKey: k) }
        eprint("resuming \(ckpt.path) at step \(step) of \(opts.steps)")
        reportMatMul(trainer.matMul, "training")
        try loop(trainer, output: outURL, vocabLines: vocabLines, args: args, elapsed: elapsed,
                 previousLog: ckpt.deletingLastPathComponent().appendingPathComponent("train_log.jsonl"))
    }

    /// `--soft-absorbing` and its rates into the recipe. The state and the source prior both centre the target region,
    /// so they do not combine: an explicit --source-prior/--sample-source-prior is refused, a preset's sampling prior
    /// is dropped with a notice (the sampler centres on m instead).
    func applySoftAbsorbing(_ r: inout Recipe) throws {
        if let v = denoiseRate { r.denoiseRate = v }; if let v = regRate { r.regRate = v }
        guard softAbsorbing else {
            if denoiseRate != nil || regRate != nil { throw CLIError("--denoise-rate and --reg-rate belong to --soft-absorbing") }
            return
        }
        guard (0...1).contains(r.denoiseRate) else { throw CLIError("--denoise-rate must be in [0, 1], not \(r.denoiseRate)") }
        guard r.regRate >= 0 && r.regRate.isFinite else { throw CLIError("--reg-rate must be ≥ 0, not \(r.regRate)") }
        if sourcePrior == true || sampleSourcePrior == true {
            throw CLIError("--soft-absorbing centres the target region on the learned state m; it cannot be combined with --source-prior or --sample-source-prior (they centre it on the source copy)")
        }
        if r.sourcePrior || r.sampleSourcePrior {
            eprint("note: --soft-absorbing replaces the preset's source prior (the samplers centre on the learned absorbing state)")
            r.sourcePrior = false; r.sampleSourcePrior = false
        }
        r.softAbsorbing = true
    }

    func dataFolder() throws -> URL {
        if let d = dataDir { return URL(fileURLWithPath: d) }
        guard let u = BundledResources.url("data/kjv2modern") else {
            throw CLIError("pass --data-dir DIR (a folder with train.jsonl); the built-in data is not installed")
        }
        return u
    }

    func loadExamples(_ file: URL, tokenizer: any TextTokenizer, seqLen: Int) throws -> [Seq2SeqExample] {
        let (ex, skipped) = try Seq2SeqDataset.load(file: file, tokenizer: tokenizer, seqLen: seqLen, skipBadLines: skipBadLines)
        if skipped > 0 { eprint("warning: skipped \(skipped) malformed lines in \(file.path)") }
        return ex
    }

    func makeTokenizer(_ spec: String, trainFile: URL) throws -> (any TextTokenizer, [String], String, String) {
        func bertLines() throws -> [String] {
            guard let u = BundledResources.url("data/bert-base-uncased-vocab.txt") else {
                throw CLIError("the shipped BERT vocabulary (Resources/data/bert-base-uncased-vocab.txt) is missing")
            }
            return try BertWordPieceTokenizer(vocabFile: u).vocab
        }
        switch spec {
        case "bert":
            let lines = try bertLines()
            return (try BertWordPieceTokenizer(lines: lines), lines, "wordpiece", "bert")
        case "build":
            let (pairs, _) = try Seq2SeqDataset.readPairs(file: trainFile, skipBadLines: skipBadLines)
            let full = try BertWordPieceTokenizer(lines: try bertLines())
            let lines = full.subsetVocabulary(texts: pairs.flatMap { [$0.src, $0.trg] })
            eprint("vocab: built \(lines.count) WordPiece tokens from \(pairs.count) training pairs")
            return (try BertWordPieceTokenizer(lines: lines), lines, "wordpiece", "vocab.txt")
        default:
            if spec.hasPrefix("wordpiece:") {
                let u = URL(fileURLWithPath: String(spec.dropFirst("wordpiece:".count)))
                let t = try BertWordPieceTokenizer(vocabFile: u)
                return (t, t.vocab, "wordpiece", "vocab.txt")
            }
            let t = try CustomVocabTokenizer(vocabFile: URL(fileURLWithPath: spec))
            return (t, Array(t.vocab.dropFirst(4)), "custom", "vocab.txt")
        }
    }

    static func makeOutputFolder(_ url: URL) throws {
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        } catch {
            // Foundation's error text is an unreadable NSError dump; name the folder and the POSIX reason.
            throw CLIError("cannot create the output folder \(url.path): \(AtomicFile.reason(error, withPath: false))")
        }
    }

    func loop(_ trainer: Trainer, output: URL, vocabLines: [String], args: [String: Any], elapsed: Double,
              previousLog: URL? = nil) throws {
        let opts = trainer.options
        try Self.makeOutputFolder(output)
        let logURL = output.appendingPathComponent("train_log.jsonl")
        // Keep only log lines of steps already covered by the checkpoint we start from. Resuming into another
        // folder starts its log from the original run's log, so the new folder has the whole history.
        var kept = ""
        let source = FileManager.default.fileExists(atPath: logURL.path) ? logURL : (previousLog ?? logURL)
        if trainer.step > 0, FileManager.default.fileExists(atPath: source.path) {
            // An existing log that cannot be read is never rewritten empty: that would lose the run's history.
            let old: String
            do { old = try String(contentsOf: source, encoding: .utf8) } catch {
                throw CLIError("cannot read \(source.path) (\(AtomicFile.reason(error))); refusing to resume, because the log would be " +
                               "rewritten without its history. Fix the file's permissions, or move it away to start a new log.")
            }
            for line in old.split(separator: "\n") {
                if let d = line.data(using: .utf8), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any],
                   let s = (o["step"] as? NSNumber)?.intValue, s <= trainer.step { kept += line + "\n" }
            }
        }
        do {
            try AtomicFile.write(kept.data(using: .utf8) ?? Data(), to: logURL)
        } catch { throw CLIError("cannot write \(logURL.path): \(AtomicFile.reason(error))") }
        guard let log = FileHandle(forWritingAtPath: logURL.path) else { throw CLIError("cannot write \(logURL.path)") }
        _ = try? log.seekToEnd()
        defer { try? log.close() }
        let startStep = trainer.step
        let endStep = min(opts.steps, stopAfter.map { startStep + max(0, $0) } ?? opts.steps)
        let progress = ProgressReporter("steps", total: endStep, unit: "step", initial: startStep)
        let t0 = Date()
        var lastSaved = startStep
        var lossEMA: Double?
        var lastNLL = Double.nan
        func save() throws {
            let url = try trainer.saveCheckpoint(to: output, vocabLines: vocabLines, trainingArgs: args,
                                                 elapsedSeconds: elapsed + Date().timeIntervalSince(t0))
            lastSaved = trainer.step
            eprint("\ncheckpoint: \(url.path)")
        }
        while trainer.step < endStep {
            if Interrupt.requested {
                eprint("\ninterrupted at step \(trainer.step): saving a checkpoint")
                if trainer.step > lastSaved { try save() }
                throw ExitCode(130)
            }
            let rep = trainer.trainStep()
            guard rep.loss.isFinite else {
                eprint("\nerror: the loss became \(rep.loss) at step \(rep.step) (lr \(rep.lr)); stopping. The last good checkpoint (step \(lastSaved)) is kept in \(output.path). Try a lower --lr or --clip 1.")
                throw ExitCode(1)
            }
            let nllText = rep.nll.isNaN ? "null" : String(format: "%.7g", rep.nll)
            let tokenText = (rep.token.isNaN ? "" : String(format: ", \"token\": %.7g", rep.token))
                + (opts.noiseFloor > 0 ? ", \"t_min\": \(rep.noiseFloor)" : "")
            if !rep.nll.isNaN { lastNLL = rep.nll }
            let line = String(format: "{\"step\": %d, \"loss\": %.7g, \"mse\": %.7g, \"decoder_nll\": %.7g, \"tT\": %.7g, \"nll\": %@%@, \"lr\": %.7g, \"grad_norm\": %.7g, \"seconds\": %.4f, \"tokens\": %d}\n",
                              rep.step, rep.loss, rep.mse, rep.decoderNLL, rep.tT, nllText, tokenText, rep.lr, rep.gradNorm, rep.seconds, rep.tokens)
            // FileHandle.write(_:) traps on an I/O error (a full disk); the throwing variant reports it.
            do { try log.write(contentsOf: line.data(using: .utf8) ?? Data()) } catch {
                eprint("\nerror: cannot append to \(logURL.path): \(AtomicFile.reason(error)). The last checkpoint (step \(lastSaved)) is intact in \(output.path).")
                throw ExitCode(1)
            }
            lossEMA = lossEMA.map { 0.9 * $0 + 0.1 * rep.loss } ?? rep.loss
            let tps = Double(rep.tokens) / max(rep.seconds, 1e-9)
            progress.update(trainer.step, extra: String(format: " loss %.4f (mse %.4f nll %.3f dec %.4f) %.0f tok/s", lossEMA ?? rep.loss, rep.mse, lastNLL, rep.decoderNLL, tps))
            if trainer.step % opts.saveInterval == 0 || trainer.step == opts.steps { try save() }
        }
        if trainer.step > lastSaved { try save() }
        eprint(String(format: "done: %d steps in %@ (this run)", trainer.step - startStep, ProgressReporter.time(Date().timeIntervalSince(t0))))
    }
}
