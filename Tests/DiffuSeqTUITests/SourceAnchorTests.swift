import DiffuSeqCore
import DiffuSeqTUI
import Testing

/// A backend whose x̂₀ rounding on the source part is wrong (as an untrained real model's is): the demo engine
/// with every source position of every frame rounded to the same word.
final class WrongSourceRoundingBackend: DemoExplorerBackend, @unchecked Sendable {
    init() { super.init() }
    override func sample(_ input: PreparedInput, seeds: [UInt64], sampler: SamplerKind, steps: Int, startFraction: Double = 1,
                         isCancelled: @escaping @Sendable () -> Bool, onFrame: @escaping @Sendable (DiffusionFrame) -> Void) throws {
        let wrong = Int32(vocabulary.firstIndex(of: "water") ?? 4)
        try super.sample(input, seeds: seeds, sampler: sampler, steps: steps, startFraction: startFraction, isCancelled: isCancelled) { f in
            var f = f
            for b in 0..<f.batch { for p in 0..<input.sourceLength { f.rounded[b * f.seqLen + p] = wrong } }
            onFrame(f)
        }
    }
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
