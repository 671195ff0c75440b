import ArgumentParser
import DiffuSeqCore
import Foundation

/// `diffuseq sample`: the official sampler's workflow and output.
struct SampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample",
        abstract: "Generate targets with a model; writes the official {\"recover\",\"reference\",\"source\"} jsonl.",
        discussion: """
        Inputs: --data-dir DIR --split test (DiffuSeq jsonl), --input FILE.jsonl, or --text "…" (repeatable).
        Samplers: ddpm (official p_sample loop, respaced to --steps), ddim-official (the official --step
        path with its off-by-gap quirk), ddim (η=0, correct respacing), dpm-solver++ (2M).
        With --seeds 101,102,… one file per seed is written into --output (a folder) as seed<N>_step<clamp>.json,
        and --mbr adds the MBR selection (mbr.jsonl, not matched by eval's *json glob).
        """)

    @OptionGroup var model: ModelOptions
    @OptionGroup var precision: PrecisionOption
    @OptionGroup var absorbingOption: AbsorbingOption

    @Option(name: .long, help: "Folder with train/valid/test.jsonl.") var dataDir: String?
    @Option(name: .long, help: "Split to read from --data-dir.") var split: String = "test"
    @Option(name: .long, help: "A jsonl file of {\"src\",\"trg\"} lines.") var input: String?
    @Option(name: .long, help: "A source sentence (repeatable).") var text: [String] = []
    @Option(name: .long, help: "Only the first N examples.") var limit: Int?
    @Option(name: .long, help: "Denoising steps (default: the model's diffusion steps).") var steps: Int?
    @Option(name: .long, help: "Random seed.") var seed: UInt64 = 101
    @Option(name: .long, help: "Several seeds, comma-separated: one output file per seed.") var seeds: String?
    @Flag(name: .long, help: "With --seeds: also write the MBR selection (mbr.jsonl, not matched by eval's *json glob).") var mbr = false
    @Option(name: .long, help: "Sequences per batch.") var batchSize: Int = 50
    @Option(name: .long, help: "Sampler: ddpm, ddim-official, ddim, dpm-solver++.") var sampler: String = "ddpm"
    @Option(name: .long, help: "Round x̂₀ to the nearest embedding at steps i ≥ K (official --clamp_step; 0 = every step).") var clampStep: Int = 0
    @Flag(name: .long, help: "Do not round x̂₀ to the nearest embedding (DiffuSeq-v2's DPM-Solver++ did not).") var noRounding = false
    @Option(name: .long, help: "Truncate the sampling noise to |z| ≤ P (official --top_p; ≤ 0 = off).") var topP: Double = -1
    @Option(name: .long, help: ArgumentHelp("SDEdit edit strength F in (0, 1]: start the reverse process at the fraction F of the steps from the noised source copy (1 = from pure noise, official).", valueName: "F")) var startFromSource: Double = 1
    @Flag(name: .long, inversion: .prefixedNo, help: "Centre the sampler on the source copy (the source prior) or not, overriding the model's source_prior (default: the model's; on a model trained without it this is a zero-training variant).") var sourcePrior: Bool?
    @Flag(name: .long, help: "Skip malformed input lines (reporting a count) instead of stopping.") var skipBadLines = false
    @Option(name: .long, help: "Output jsonl file (or folder with --seeds). Default: stdout.") var output: String?

    func run() throws {
        try runReporting {
            Interrupt.install()
            try precision.apply()
            guard let kind = SamplerKind(rawValue: sampler) else {
                throw CLIError("--sampler must be one of \(SamplerKind.allCases.map(\.rawValue).joined(separator: ", ")), not \"\(sampler)\"")
            }
            guard batchSize >= 1 else { throw CLIError("--batch-size must be at least 1") }
            let seedList: [UInt64]
            if let s = seeds {
                seedList = try s.split(separator: ",").map {
                    guard let v = UInt64($0.trimmingCharacters(in: .whitespaces)) else { throw CLIError("--seeds: \"\($0)\" is not a non-negative integer") }
                    return v
                }
                guard !seedList.isEmpty else { throw CLIError("--seeds is empty") }
                guard output != nil else { throw CLIError("--seeds writes one file per seed: pass --output FOLDER") }
            } else {
                if mbr { throw CLIError("--mbr needs several --seeds") }
                seedList = [seed]
            }
            let loaded = try model.load()
            let gen = try TextGenerator(loaded)
            reportMatMul(gen.sampler.matMul, "sampling")
            let inputs = try readInputs(gen)
            guard !inputs.isEmpty else { throw CLIError("no input examples (pass --data-dir, --input or --text)") }
            let T = loaded.model.config.diffusionSteps
            guard startFromSource > 0 && startFromSource <= 1 else { throw CLIError("--start-from-source must be in (0, 1], not \(startFromSource)") }
            var opts = SamplerOptions(kind: kind, steps: steps ?? T, clampStep: clampStep, topP: topP, rounding: !noRounding)
            opts.startFraction = startFromSource
            opts.sourcePrior = sourcePrior
            opts.absorbing = try absorbingOption.mode()
            eprint("model: \(loaded.name) — \(inputs.count) examples, sampler \(kind.rawValue), \(opts.steps) steps, seeds \(seedList.map(String.init).joined(separator: ","))")
            var all: [[GenerationOutput]] = []
            for s in seedList {
                let progress = ProgressReporter("examples", total: inputs.count, unit: "ex")
                let t0 = Date()
                let outs = try gen.generate(inputs, seed: s, batchSize: batchSize, options: opts,
                                            isCancelled: { Interrupt.requested },
                                            progress: { done, total in
                                                let el = Date().timeIntervalSince(t0)
                                                let stepsPerSec = Double(done) / Double(min(batchSize, total)) * Double(opts.steps) / max(el, 1e-9)
                                                progress.update(done, extra: String(format: " %.1f steps/s", stepsPerSec))
                                            })
                all.append(outs)
                try write(outs, seed: s, multi: seeds != nil)
            }
            if mbr, let out = output {
                let sets = all.map { $0.map { EvaluationSample(recover: $0.recover, reference: $0.reference, source: $0.source) } }
                let specials: SpecialTokens = loaded.tokenizer is CustomVocabTokenizer ? .custom : .bert
                var lines: [String] = []
                for i in 0..<inputs.count {
                    let cands = sets.map { Metrics.words(Metrics.cleanRecover($0[i].recover, tokens: specials)) }
                    let pick = Metrics.mbrIndex(cands)
                    lines.append(all[pick][i].jsonLine)
                }
                let url = URL(fileURLWithPath: out).appendingPathComponent("mbr.jsonl")
                try AtomicFile.write((lines.joined(separator: "\n") + "\n").data(using: .utf8) ?? Data(), to: url)
                eprint("wrote \(url.path) (MBR over \(seedList.count) seeds)")
            }
        }
    }

    func readInputs(_ gen: TextGenerator) throws -> [GenerationInput] {
        var inputs: [GenerationInput] = []
        let T = gen.sampler.model.config.seqLen
        var files: [URL] = []
        if let d = dataDir { files.append(URL(fileURLWithPath: d).appendingPathComponent(split + ".jsonl")) }
        if let f = input { files.append(URL(fileURLWithPath: f)) }
        for f in files {
            let (examples, skipped) = try Seq2SeqDataset.load(file: f, tokenizer: gen.tokenizer, seqLen: T, skipBadLines: skipBadLines)
            if skipped > 0 { eprint("warning: skipped \(skipped) malformed lines in \(f.path)") }
            inputs += examples.map { GenerationInput(ids: $0.ids, mask: $0.mask, origin: "\(f.lastPathComponent):\($0.line)") }
        }
        for t in text {
            guard !PythonText.strip(t).isEmpty else { throw CLIError("--text is empty") }
            let prepared = gen.prepare(source: t)
            if let w = prepared.fit?.warning { eprint("warning: --text: \(w)") }
            inputs.append(prepared)
        }
        if let l = limit { inputs = Array(inputs.prefix(max(0, l))) }
        return inputs
    }

    func write(_ outs: [GenerationOutput], seed: UInt64, multi: Bool) throws {
        let body = outs.map(\.jsonLine).joined(separator: "\n") + "\n"
        guard let out = output else { print(body, terminator: ""); return }
        var url = URL(fileURLWithPath: out)
        if multi {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            url = url.appendingPathComponent("seed\(seed)_step\(clampStep).json")
        }
        try AtomicFile.write(body.data(using: .utf8) ?? Data(), to: url)
        eprint("wrote \(url.path) (\(outs.count) lines)")
    }
}
