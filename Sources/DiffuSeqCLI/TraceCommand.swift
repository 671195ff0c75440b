import ArgumentParser
import DiffuSeqCore
import DiffuSeqTUI
import Foundation

/// `diffuseq trace`: every step of a reverse diffusion as JSON lines (what the explorer shows, for scripts).
struct TraceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Dump every step of a reverse-diffusion run as JSON lines (one line per step and seed).",
        discussion: """
        Inputs: --text "…" (repeatable) and/or --input FILE.jsonl ({"src","trg"} lines; the target only sets the \
        official truncation, it is never shown to the model). Each example is sampled with one batch row per seed, \
        row b seeded with seeds[b] exactly as `diffuseq explore` does, so `trace` and `explore` with the same \
        --text/--seeds/--sampler/--steps show the same frames. Defaults match explore: ddpm, 200 steps capped at \
        the model's T, seed 42.

        Output: one JSON object per line, for example e, seed s and step k (lines ordered by example, then \
        step, then seed), keys in this order:
          example                 0-based index of the input example
          origin                  "--text" or FILE:LINE
          seed                    the row's seed
          step                    0-based step index (0 = noisiest), and count: the number of steps
          count, t, diffusion_steps   timestep t in the model's original T-step process, and T
          sampler                 ddpm | ddim | dpm-solver++ | ddim-official
          noise                   {"beta", "alpha_bar", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "snr"} at t
          source_length           len_x: positions 0..<len_x are the condition ([start] src [end] [sep])
          sentence                official decode_token of the target part of `decoded` (special tokens kept,
                                  trailing pads dropped): what `diffuseq sample` would write as "recover" if the run
                                  stopped here
          sentence_clean          the same with the special tokens removed as the evaluation does
          positions               one object per position 0..<L:
            pos                     position
            source                  true on the condition part
            rounded, rounded_token  id and text of the vocabulary embedding nearest to x̂₀ (the rounded token)
            margin                  squared distance to the 2nd-nearest embedding minus the nearest
            decoded, decoded_token  argmax lm_head(x_{t−1}): the official read-out after this step
            xt_norm, x0_norm        ‖x_t‖ (the state fed to the model at this step) and ‖x̂₀‖ (its prediction)
            neighbours              only with --top-k-neighbours K > 0: the K nearest embeddings of x̂₀,
                                    [{"id", "token", "distance"}] nearest first, distance = squared Euclidean
        Numbers that are not finite are written as null. With --output the file is written atomically
        (a temporary file renamed at the end; nothing is written if the run fails or is interrupted).
        """)

    @OptionGroup var model: ModelOptions
    @OptionGroup var precision: PrecisionOption
    @OptionGroup var absorbingOption: AbsorbingOption

    @Option(name: .long, help: "A source sentence (repeatable).") var text: [String] = []
    @Option(name: .long, help: "A jsonl file of {\"src\",\"trg\"} lines.") var input: String?
    @Option(name: .long, help: "Only the first N examples.") var limit: Int?
    @Option(name: .long, help: "Sampling steps (default 200, capped at the model's diffusion steps T).") var steps: Int?
    @Option(name: .long, help: "Seeds, comma-separated: one batch row (and one line per step) each.") var seeds: String = "42"
    @Option(name: .long, help: "Sampler: ddpm, ddim, dpm-solver++, ddim-official.") var sampler: String = "ddpm"
    @Option(name: .long, help: ArgumentHelp("SDEdit edit strength F in (0, 1]: start at the fraction F of the steps from the noised source copy (1 = pure noise).", valueName: "F")) var startFromSource: Double = 1
    @Flag(name: .long, inversion: .prefixedNo, help: "Centre the sampler on the source copy (the source prior) or not, overriding the model's source_prior (default: the model's; on a model trained without it this is a zero-training variant).") var sourcePrior: Bool?
    @Option(name: .customLong("top-k-neighbours"), help: "Also list the K nearest embeddings of x̂₀ per position.") var topK: Int = 0
    @Option(name: .long, help: "Output file (written atomically). Default: stdout.") var output: String?
    @Option(name: .long, help: ArgumentHelp("Also write the trajectory map of the first example and seed as an SVG picture.",
                                            valueName: "FILE")) var svg: String?

    func run() throws {
        try runReporting {
            Interrupt.install()
            try precision.apply()
            installCompute(latencyForBatchOne: true)  // the explorer's profile, so trace and explore time alike
            let kind = try parseSampler(sampler)
            let seedList = try parseSeeds(seeds)
            if let s = steps, s < 1 { throw CLIError("--steps must be at least 1") }
            guard topK >= 0 else { throw CLIError("--top-k-neighbours must be 0 or more") }
            if let l = limit, l < 1 { throw CLIError("--limit must be at least 1") }
            guard !text.isEmpty || input != nil else { throw CLIError("nothing to trace: pass --text \"…\" or --input FILE.jsonl") }
            let loaded = try model.load()
            let backend = try EngineBackend(loaded)
            let gen = backend.generator
            var inputs: [GenerationInput] = []
            if let f = input {
                let url = URL(fileURLWithPath: f)
                let (examples, _) = try Seq2SeqDataset.load(file: url, tokenizer: gen.tokenizer, seqLen: backend.seqLen)
                inputs += examples.map { GenerationInput(ids: $0.ids, mask: $0.mask, origin: "\(url.lastPathComponent):\($0.line)") }
            }
            for t in text {
                guard !PythonText.strip(t).isEmpty else { throw CLIError("--text is empty") }
                let prepared = gen.prepare(source: t)
                if let w = prepared.fit?.warning { eprint("warning: --text: \(w)") }
                inputs.append(prepared)
            }
            if let l = limit { inputs = Array(inputs.prefix(l)) }
            if let s = steps, s > backend.diffusionSteps {
                eprint("note: --steps \(s) capped at the model's T = \(backend.diffusionSteps)")
            }
            guard startFromSource > 0 && startFromSource <= 1 else { throw CLIError("--start-from-source must be in (0, 1], not \(startFromSource)") }
            var opts = backend.options(sampler: kind, steps: steps ?? 200, startFraction: startFromSource)
            opts.sourcePrior = sourcePrior
            opts.absorbing = try absorbingOption.mode()
            eprint("trace: \(backend.modelName) — \(inputs.count) example(s), sampler \(kind.rawValue), \(opts.steps) steps, seeds \(seedList.map(String.init).joined(separator: ","))")

            var lines = 0
            let picture = FrameCollector()
            let body: (_ emit: (String) throws -> Void) throws -> Void = { emit in
                for (e, inp) in inputs.enumerated() {
                    try trace(backend: backend, example: e, input: inp, seeds: seedList, options: opts,
                              collect: e == 0 && svg != nil ? picture : nil, emit: emit)
                    lines += opts.steps * seedList.count
                }
            }
            if let out = output {
                try AtomicFile.write(to: URL(fileURLWithPath: out)) { w in
                    try body { try w.write(Data(($0 + "\n").utf8)) }
                }
                eprint("wrote \(out) (\(lines) lines)")
            } else {
                try body { print($0) }
            }
            if let svg, let first = inputs.first {
                let lenX = SequenceBuilder.sourceLength(mask: first.mask)
                let grid = TrajectoryGrid(frames: picture.frames, row: 0, positions: lenX..<backend.seqLen, padID: backend.padID,
                                          expectedSteps: opts.steps)
                var sentence = ""
                if let f = picture.frames.last, f.decoded.count >= f.seqLen {
                    sentence = backend.decode(f.decoded[min(lenX, f.seqLen)..<f.seqLen].map(Int.init))
                }
                let title = "\(backend.modelName) · seed \(seedList[0]) · \(kind.rawValue), \(opts.steps) steps · "
                    + PythonText.strip(first.origin == "--text" ? text.first ?? "" : first.origin)
                let doc = TrajectorySVG.render(grid: grid, token: { backend.token($0) }, title: title, sentence: sentence)
                try AtomicFile.write(to: URL(fileURLWithPath: svg)) { w in try w.write(Data(doc.utf8)) }
                eprint("wrote \(svg) (trajectory map: \(grid.positions.count) positions × \(grid.steps) steps)")
            }
        }
    }

    /// Keeps the frames of the run drawn by `--svg` (their x_t and x̂₀ dropped: the map needs tokens and margins).
    final class FrameCollector {
        var frames: [DiffusionFrame] = []
    }

    /// Samples one example and emits its lines.
    func trace(backend: EngineBackend, example: Int, input: GenerationInput, seeds: [UInt64], options: SamplerOptions,
               collect: FrameCollector? = nil, emit: (String) throws -> Void) throws {
        let b = seeds.count
        let lenX = SequenceBuilder.sourceLength(mask: input.mask)
        var ids: [Int] = [], mask: [Int] = []
        for _ in 0..<b { ids += input.ids; mask += input.mask }
        var failure: Error?
        let sampler = backend.generator.sampler
        let k = topK
        let origin = input.origin
        let kindName = options.kind.rawValue
        let result = try withoutActuallyEscaping(emit) { emit in
            try sampler.run(ids: ids, mask: mask, batch: b, seeds: seeds, options: options,
                            isCancelled: { Interrupt.requested || failure != nil }, onFrame: { f in
                guard failure == nil else { return }
                if let collect {
                    var slim = f
                    slim.xt = []
                    slim.x0 = []
                    collect.frames.append(slim)
                }
                do {
                    for r in 0..<b {
                        try emit(TraceLine.json(frame: f, row: r, example: example, origin: origin, seed: seeds[r],
                                                sampler: kindName, sourceLength: lenX, backend: backend, topK: k))
                    }
                } catch {
                    failure = error
                }
            })
        }
        if let failure { throw failure }
        if result.cancelled { throw CLIError("interrupted\(output.map { "; \($0) was not written" } ?? "")") }
    }
}

/// Builds trace lines (hand-written JSON: fixed key order, no Foundation encoder per frame).
enum TraceLine {
    static func json(frame f: DiffusionFrame, row r: Int, example: Int, origin: String, seed: UInt64, sampler: String,
                     sourceLength lenX: Int, backend: EngineBackend, topK: Int) -> String {
        let T = f.seqLen, D = f.dim
        var s = "{\"example\": \(example), \"origin\": \(str(origin)), \"seed\": \(seed), \"step\": \(f.index), "
        s += "\"count\": \(f.count), \"t\": \(f.t), \"diffusion_steps\": \(f.diffusionSteps), \"sampler\": \(str(sampler)), "
        let n = f.noise
        s += "\"noise\": {\"beta\": \(num(n.beta)), \"alpha_bar\": \(num(n.alphaBar)), \"sqrt_alpha_bar\": \(num(n.sqrtAlphaBar)), "
        s += "\"sqrt_one_minus_alpha_bar\": \(num(n.sqrtOneMinusAlphaBar)), \"snr\": \(num(n.snr))}, "
        s += "\"source_length\": \(lenX), "
        let hasDecoded = f.decoded.count >= (r + 1) * T
        let target = hasDecoded ? f.decoded[(r * T + min(lenX, T))..<((r + 1) * T)].map(Int.init) : []
        s += "\"sentence\": \(hasDecoded ? str(backend.officialDecode(target)) : "null"), "
        s += "\"sentence_clean\": \(hasDecoded ? str(backend.decode(target)) : "null"), "
        s += "\"positions\": ["
        for p in 0..<T {
            let i = r * T + p
            if p > 0 { s += ", " }
            let rid = Int(f.rounded[i])
            s += "{\"pos\": \(p), \"source\": \(p < lenX), \"rounded\": \(rid), \"rounded_token\": \(str(backend.token(rid))), "
            s += "\"margin\": \(num(f.margin[i])), "
            if hasDecoded {
                let did = Int(f.decoded[i])
                s += "\"decoded\": \(did), \"decoded_token\": \(str(backend.token(did))), "
            } else {
                s += "\"decoded\": null, \"decoded_token\": null, "
            }
            s += "\"xt_norm\": \(num(norm(f.xt, i * D, D))), \"x0_norm\": \(num(norm(f.x0, i * D, D)))"
            if topK > 0, f.x0.count >= (i + 1) * D {
                let nb = backend.neighbours(of: Array(f.x0[(i * D)..<((i + 1) * D)]), k: topK)
                s += ", \"neighbours\": ["
                s += nb.map { "{\"id\": \($0.id), \"token\": \(str(backend.token($0.id))), \"distance\": \(num($0.distance))}" }
                    .joined(separator: ", ")
                s += "]"
            }
            s += "}"
        }
        return s + "]}"
    }

    static func norm(_ a: [Float], _ lo: Int, _ d: Int) -> Float {
        guard lo + d <= a.count else { return .nan }
        var s: Float = 0
        for j in lo..<(lo + d) { s += a[j] * a[j] }
        return s.squareRoot()
    }

    static func num(_ v: Double) -> String { v.isFinite ? "\(v)" : "null" }
    static func num(_ v: Float) -> String { v.isFinite ? "\(v)" : "null" }

    /// A JSON string literal (UTF-8 kept).
    static func str(_ s: String) -> String { JSONText.quote(s) }
}
