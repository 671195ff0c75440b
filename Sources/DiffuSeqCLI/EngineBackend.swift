import DiffuSeqCore
import DiffuSeqTUI
import Foundation

/// Why a source could not be prepared.
struct PrepareError: Error, CustomStringConvertible {
    let description: String
}

/// The real engine behind the explorer: a loaded model's `TextGenerator` (tokenizer + `DiffusionSampler`).
///
/// Thread safety: everything it holds is immutable after `init` except the sampling lock. `sample` runs on the
/// explorer's background thread and is serialised by `runLock` (a cancelled run returns at its next step, so a new
/// run waits at most one step); `neighbours`, `token`, `decode`, `bleu` and `diversity` only read immutable state
/// (the sampler's embedding snapshot, the tokenizer) and may run concurrently with a sample.
///
/// Sendable (unchecked): see "Thread safety" above (immutable after init; sampling serialised by `runLock`).
final class EngineBackend: ExplorerBackend, @unchecked Sendable {
    let generator: TextGenerator
    let modelName: String
    let diffusionSteps: Int
    let seqLen: Int
    let padID: Int
    /// The tokenizer's special tokens, as the evaluation removes them.
    let specials: SpecialTokens
    private let runLock = NSLock()

    /// Wraps a loaded model (`name` overrides the display name).
    init(_ loaded: LoadedModel, name: String? = nil) throws {
        generator = try TextGenerator(loaded, workload: .interactive)
        generator.sampler.preparePackedEngine()
        let c = loaded.model.config
        let builtin = BuiltinModel.url.map { $0.standardizedFileURL.path == loaded.folder.standardizedFileURL.path } ?? false
        // A self-conditioned model says so in the title bar: each step's x̂₀ (the inspector's) is also the next step's input;
        // an absorbing one is sampled centred on the learned absorbing state.
        let traits = (c.selfCondition ? ", self-conditioned" : "") + (c.learnedMeanEmbed ? ", absorbing" : "")
        modelName = name ?? "\(builtin ? "built-in " : "")\(loaded.folder.lastPathComponent) (\(c.layers)×\(c.width), V \(Fmt.grouped(c.vocabSize)), L \(c.seqLen)\(traits))"
        diffusionSteps = c.diffusionSteps
        seqLen = c.seqLen
        let tok = loaded.tokenizer
        padID = tok.padID
        specials = SpecialTokens(sos: tok.token(for: tok.startID), eos: tok.token(for: tok.endID),
                                 sep: tok.token(for: tok.sepID), pad: tok.token(for: tok.padID))
    }

    var tokenizer: any TextTokenizer { generator.tokenizer }

    func token(_ id: Int) -> String { tokenizer.token(for: id) }

    /// The official `decode_token` of the ids with the special tokens removed as the evaluation does
    /// (`[CLS]`/`[SEP]`/`[PAD]`, or `[START]`/`[END]`/`[PAD]`), spaces collapsed: what is read and scored.
    func decode(_ ids: [Int]) -> String {
        Metrics.words(Metrics.cleanRecover(tokenizer.decodeToken(ids), tokens: specials)).joined(separator: " ")
    }

    /// The official `decode_token` (trailing PADs stripped, special tokens kept), as `diffuseq sample` writes `recover`.
    func officialDecode(_ ids: [Int]) -> String { tokenizer.decodeToken(ids) }

    /// The official layout with the reference as target (so truncation matches `sample_seq2seq.py`); the target ids
    /// are then replaced by `[PAD]` — they are noise from the first step anyway (mask 1) and must not be shown.
    func prepare(source: String, reference: String?) throws -> PreparedInput {
        let src = PythonText.strip(source)
        guard !src.isEmpty else { throw PrepareError(description: "the source is empty; type a sentence") }
        let g = generator.prepare(source: src, target: reference ?? "")
        let lenX = SequenceBuilder.sourceLength(mask: g.mask)
        let referenceIDs = reference == nil ? [] : Array(g.ids[lenX...])
        var ids = g.ids
        for i in lenX..<ids.count { ids[i] = padID }
        if let fit = g.fit, fit.truncated, fit.kept == 0 {
            throw PrepareError(description: "the source does not fit in L = \(seqLen) positions")
        }
        var p = PreparedInput(ids: ids, mask: g.mask, sourceLength: lenX, reference: reference, warning: g.fit?.warning,
                              droppedSourceTokens: g.fit.map { max(0, $0.wordpieces - $0.kept) } ?? 0)
        p.referenceIDs = referenceIDs
        return p
    }

    /// Sampler options of an explorer run: every step decoded, steps capped at T, the SDEdit start fraction.
    func options(sampler: SamplerKind, steps: Int, startFraction: Double) -> SamplerOptions {
        var o = SamplerOptions(kind: sampler, steps: min(max(1, steps), diffusionSteps), decodeEveryStep: true)
        o.startFraction = startFraction
        return o
    }

    func sample(_ input: PreparedInput, seeds: [UInt64], sampler: SamplerKind, steps: Int, startFraction: Double,
                isCancelled: @escaping @Sendable () -> Bool,
                onFrame: @escaping @Sendable (DiffusionFrame) -> Void) throws {
        guard !seeds.isEmpty else { throw PrepareError(description: "no seeds") }
        guard input.ids.count == seqLen, input.mask.count == seqLen else {
            throw PrepareError(description: "the input has \(input.ids.count) positions, the model \(seqLen)")
        }
        runLock.lock()
        defer { runLock.unlock() }
        if isCancelled() { return }
        let b = seeds.count
        var ids: [Int] = [], mask: [Int] = []
        ids.reserveCapacity(b * seqLen)
        mask.reserveCapacity(b * seqLen)
        for _ in 0..<b { ids += input.ids; mask += input.mask }
        _ = try generator.sampler.run(ids: ids, mask: mask, batch: b, seeds: seeds,
                                      options: options(sampler: sampler, steps: steps, startFraction: startFraction),
                                      isCancelled: isCancelled, onFrame: onFrame)
    }

    /// One seed's run resumed at `fork.step` from that step's x_t (one row), with `fork.pins` (positions of
    /// that row) held at their tokens' embeddings; the noise stream is the seed's, so with no pins the frames
    /// equal the original run's from that step on (`DiffusionSampler.run(start:pins:)`). The start fraction of the
    /// forked run goes into the options too, though a start at `fork.step` from its x_t makes it moot: the state
    /// there already is what the SDEdit start led to, and the noise of the steps before it is drawn and dropped
    /// either way.
    func fork(_ input: PreparedInput, seed: UInt64, sampler: SamplerKind, steps: Int, startFraction: Double,
              from fork: ForkSpec, isCancelled: @escaping @Sendable () -> Bool, onFrame: @escaping @Sendable (DiffusionFrame) -> Void) throws {
        guard input.ids.count == seqLen, input.mask.count == seqLen else {
            throw PrepareError(description: "the input has \(input.ids.count) positions, the model \(seqLen)")
        }
        let d = generator.sampler.model.config.hiddenDim
        guard fork.xt.count == seqLen * d else {
            throw PrepareError(description: "the fork's x_t has \(fork.xt.count) values, expected T·D = \(seqLen * d)")
        }
        runLock.lock()
        defer { runLock.unlock() }
        if isCancelled() { return }
        let previous = fork.previous.flatMap { $0.batch == 1 && $0.x0.count == seqLen * d ? $0 : nil }
        _ = try generator.sampler.run(ids: input.ids, mask: input.mask, batch: 1, seeds: [seed],
                                      options: options(sampler: sampler, steps: steps, startFraction: startFraction),
                                      start: SamplerStart(step: fork.step, xt: fork.xt, previous: previous),
                                      pins: fork.pins, isCancelled: isCancelled, onFrame: onFrame)
    }

    func forwardRound(_ ids: [Int], alphaBar: Double, seed: UInt64) -> [Int] {
        generator.sampler.forwardRound(ids: ids, alphaBar: alphaBar, seed: seed).map { Int($0) }
    }

    func tokenID(_ word: String) -> Int? {
        let w = PythonText.strip(word)
        if let id = tokenizer.id(for: w) { return id }
        let pieces = tokenizer.encode(w)
        return pieces.count == 1 ? pieces[0] : nil
    }

    func neighbours(of vector: [Float], k: Int) -> [Neighbour] { generator.sampler.neighbours(of: vector, k: k) }

    private func words(_ s: String) -> [String] { Metrics.words(Metrics.cleanRecover(s, tokens: specials)) }

    func bleu(hypothesis: String, reference: String) -> Double {
        let h = words(hypothesis)
        let r = Metrics.words(Metrics.cleanReference(reference, tokens: specials))
        guard !h.isEmpty, !r.isEmpty else { return 0 }
        return Metrics.sentenceBLEU(hypothesis: h, reference: r)
    }

    func diversity(_ sentences: [String]) -> (selfBLEU: Double, div4: Double, mbrIndex: Int) {
        let c = sentences.map(words)
        guard c.count >= 2 else { return (0, 0, 0) }
        return (Metrics.selfBLEU(c), Metrics.div4(c), Metrics.mbrIndex(c))
    }
}
