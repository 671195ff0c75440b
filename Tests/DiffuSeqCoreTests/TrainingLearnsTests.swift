import Foundation
import Testing
@testable import DiffuSeqCore

/// End-to-end learning check: a tiny model trained from scratch on a synthetic copy task
/// (target = source, 3 random words of a 12-word vocabulary) must drive the loss down and then
/// reproduce held-out sources when sampled. Deterministic (fixed seeds, fixed step count).
@Suite("Training learns a copy task")
struct TrainingLearnsTests {
    static let words = ["red", "green", "blue", "cat", "dog", "fish", "one", "two", "three", "sun", "moon", "star"]
    static let steps = Int(ProcessInfo.processInfo.environment["DIFFUSEQ_LEARN_STEPS"] ?? "") ?? 800

    static func examples(_ n: Int, seed: UInt64, excluding: Set<String> = [], tokenizer: CustomVocabTokenizer,
                         seqLen: Int) -> [Seq2SeqExample] {
        var rng = SeededRandom(seed: seed)
        var out: [Seq2SeqExample] = [], seen = excluding
        while out.count < n {
            let s = (0..<3).map { _ in words[rng.int(below: words.count)] }.joined(separator: " ")
            if seen.contains(s) { continue }
            seen.insert(s)
            let (ids, mask) = SequenceBuilder.build(source: s, target: s, seqLen: seqLen, tokenizer: tokenizer)
            out.append(Seq2SeqExample(src: s, trg: s, ids: ids, mask: mask, line: out.count + 1))
        }
        return out
    }

    /// How many held-out sources DDIM-20 sampling copies exactly (the 3 target words).
    static func exactCopies(_ model: TransformerNetModel, _ heldOut: [Seq2SeqExample], seqLen: Int) throws -> Int {
        let sampler = try DiffusionSampler(model: model)
        let res = try sampler.run(ids: heldOut.flatMap(\.ids), mask: heldOut.flatMap(\.mask), batch: heldOut.count,
                                  seeds: heldOut.indices.map { UInt64(1000 + $0) },
                                  options: SamplerOptions(kind: .ddim, steps: 20))
        var exact = 0
        for (b, ex) in heldOut.enumerated() {
            let lenX = SequenceBuilder.sourceLength(mask: ex.mask)
            let got = (0..<3).map { Int(res.tokens[b * seqLen + lenX + 1 + $0]) }
            if got == Array(ex.ids[(lenX + 1)..<(lenX + 4)]) { exact += 1 }
        }
        return exact
    }

    @Test("copy task: loss falls and DDIM-20 sampling reproduces held-out sources")
    func copyTask() throws {
        let tok = try CustomVocabTokenizer(words: Self.words)
        let seqLen = 12
        let config = ModelConfig(vocabSize: tok.vocabSize, hiddenDim: 16, hiddenTDim: 16, width: 32, layers: 2, heads: 2,
                                 ffn: 64, maxPositions: 16, seqLen: seqLen, dropout: 0, attentionDropout: 0,
                                 diffusionSteps: 50, noiseSchedule: "sqrt")
        let model = try TransformerNetModel(config: config)
        model.initialise(seed: 11)
        let train = Self.examples(600, seed: 1, tokenizer: tok, seqLen: seqLen)
        let heldOut = Self.examples(40, seed: 2, excluding: Set(train.map(\.src)), tokenizer: tok, seqLen: seqLen)
        // Layout: [START] a b c [END] [END] [START] a b c [END] [PAD]; mask 0 on the first 6.
        #expect(train[0].ids.count == seqLen && SequenceBuilder.sourceLength(mask: train[0].mask) == 6)
        var o = TrainingOptions()
        o.lr = 3e-3; o.batchSize = 32; o.microbatch = 32; o.steps = Self.steps; o.scheduleSampler = .uniform
        o.emaRates = [0.99]; o.seed = 5; o.nllEvery = 1_000_000
        let trainer = try Trainer(model: model, examples: train, options: o)
        let untrained = try Self.exactCopies(model, heldOut, seqLen: seqLen)
        let t0 = Date()
        var first: [Double] = [], last: [Double] = []
        for k in 0..<o.steps {
            let r = trainer.trainStep()
            #expect(r.loss.isFinite)
            if k < 20 { first.append(r.loss) }
            if k >= o.steps - 100 { last.append(r.loss) }
        }
        let seconds = Date().timeIntervalSince(t0)
        let before = first.reduce(0, +) / Double(first.count), after = last.reduce(0, +) / Double(last.count)

        // Sample the held-out sources with the trained weights (DDIM, 20 of the 50 steps).
        let exact = try Self.exactCopies(model, heldOut, seqLen: seqLen)
        let rate = Double(exact) / Double(heldOut.count)
        print(String(format: "TrainingLearnsTests: %d steps in %.1f s; loss %.4f → %.4f; held-out exact copies %d/%d (untrained %d)",
                     o.steps, seconds, before, after, exact, heldOut.count, untrained))
        // Measured (800 steps, ≈3 s in release): loss 0.877 → 0.09, 40/40 copies (untrained: 0/40); at 300 steps
        // already 0.12 and 40/40. The thresholds leave that margin but fail if training stops learning.
        #expect(untrained <= heldOut.count / 5, "the untrained model already copies \(untrained)/\(heldOut.count)")
        #expect(after < 0.2 && after < 0.3 * before, "final loss \(after) (initial \(before))")
        #expect(rate >= 0.9, "only \(exact)/\(heldOut.count) held-out sources copied")
    }
}
