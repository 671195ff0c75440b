import DiffuSeqCore
import DiffuSeqTUI
import Testing

/// A backend whose x̂₀ rounding on the source part is wrong (as an untrained real model's is): the demo engine
/// with every source position of every frame rounded to the same word.
final class WrongSourceRoundingBackend: ExplorerBackend, @unchecked Sendable {
    let base = DemoExplorerBackend()
    var modelName: String { base.modelName }
    var diffusionSteps: Int { base.diffusionSteps }
    var seqLen: Int { base.seqLen }
    var padID: Int { base.padID }
    func token(_ id: Int) -> String { base.token(id) }
    func decode(_ ids: [Int]) -> String { base.decode(ids) }
    func prepare(source: String, reference: String?) throws -> PreparedInput { try base.prepare(source: source, reference: reference) }
    func sample(_ input: PreparedInput, seeds: [UInt64], sampler: SamplerKind, steps: Int,
                isCancelled: @escaping @Sendable () -> Bool, onFrame: @escaping @Sendable (DiffusionFrame) -> Void) throws {
        let wrong = Int32(base.vocabulary.firstIndex(of: "water") ?? 4)
        try base.sample(input, seeds: seeds, sampler: sampler, steps: steps, isCancelled: isCancelled) { f in
            var f = f
            for b in 0..<f.batch { for p in 0..<input.sourceLength { f.rounded[b * f.seqLen + p] = wrong } }
            onFrame(f)
        }
    }
    func neighbours(of vector: [Float], k: Int) -> [Neighbour] { base.neighbours(of: vector, k: k) }
    func bleu(hypothesis: String, reference: String) -> Double { base.bleu(hypothesis: hypothesis, reference: reference) }
    func diversity(_ sentences: [String]) -> (selfBLEU: Double, div4: Double, mbrIndex: Int) { base.diversity(sentences) }
}

@Suite("source anchoring")
struct SourceAnchorTests {
    /// The source part of x_t is re-anchored to the source embeddings after every step, so the grid shows the
    /// input tokens there, whatever the model's x̂₀ rounds to.
    @Test func sourcePositionsShowTheInputTokens() throws {
        let backend = WrongSourceRoundingBackend()
        var h = HeadlessExplorer(backend: backend, config: ExplorerConfig(source: demoSource, seeds: [1], steps: 20), size: (80, 24))
        h.send(.key(.home))
        let input = try #require(h.model.input)
        for p in 0..<input.sourceLength { #expect(h.model.roundedID(position: p) == input.ids[p]) }
        let text = view(h.model).text
        #expect(text.contains("[CLS] thou shalt love thy neighbour"), "\(text)")
        #expect(!text.contains("[CLS] water"), "\(text)")
        // Target positions still show the model's rounding.
        let t = input.sourceLength
        #expect(h.model.roundedID(position: t) == Int(h.model.frames[0].rounded[t]))
    }
}
