import DiffuSeqCore
import DiffuSeqTUI
import Testing

@Suite("pin and fork, samplers on the same noise")
struct ForkTests {
    /// The first companion that is a fork.
    func fork(_ m: ExplorerModel) -> Companion? {
        m.companions.first { if case .fork = $0.kind { return true } else { return false } }
    }

    @Test func pinANeighbourForksBesideTheOriginalAndUnpinRemovesIt() {
        var h = makeExplorer(steps: 50)
        h.send(.key(.home))
        for _ in 0..<20 { h.send(.key(.right)) }
        h.send(.key(.down))
        let pos = h.model.selected
        h.send(.key(.char("p")))
        #expect(h.model.mode == .pin)
        #expect(view(h.model).text.contains("pin pos \(pos) from step 21 to:"))
        let nn = h.model.neighbourCache[NeighbourKey(step: 20, position: pos, row: h.model.primaryRow)] ?? []
        h.send(.key(.char("2")))
        #expect(h.model.mode == .normal)
        guard let f = fork(h.model) else { Issue.record("no fork"); return }
        #expect(f.kind == .fork(step: 20, position: pos, token: nn[1].id))
        #expect(f.state == .done)
        #expect(f.frames.count == 30 && f.frames.first?.index == 20)        // frames from the fork step on
        #expect(f.frames.allSatisfy { Int($0.rounded[pos]) == nn[1].id })  // the pin holds
        let text = view(h.model).text
        #expect(text.contains("fork@21 \(pos)=\(h.model.backend.token(nn[1].id))"))
        #expect(text.contains("BLEU"))
        h.send(.key(.home))                                                 // before the fork step
        #expect(view(h.model).text.contains("(forks at step 21)"))
        h.send(.key(.char("u")))
        #expect(fork(h.model) == nil)
        h.send(.key(.char("u")))
        #expect(h.model.notice == "nothing is pinned")
    }

    @Test func pinATypedWordAndUnknownWords() {
        var h = makeExplorer(steps: 20)
        h.send(.key(.char("p")))
        for ch in "zzz" { h.send(.key(.char(ch))) }
        h.send(.key(.enter))
        #expect(h.model.mode == .pin)
        #expect(h.model.notice?.contains("not one token") == true)
        for _ in 0..<3 { h.send(.key(.backspace)) }
        for ch in "shepherd" { h.send(.key(.char(ch))) }
        h.send(.key(.enter))
        let shepherd = (h.model.backend as? DemoExplorerBackend)?.tokenID("shepherd")
        #expect(fork(h.model)?.frames.last.map { Int($0.rounded[h.model.selected]) } == shepherd)
        h.send(.key(.char("p")))
        h.send(.key(.escape))
        #expect(h.model.mode == .normal)
    }

    @Test func aForkWithoutPinsReproducesTheOriginalFrames() throws {
        let backend = DemoExplorerBackend()
        let input = try backend.prepare(source: demoSource, reference: nil)
        let whole = Box(), forked = Box()
        try backend.sample(input, seeds: [42], sampler: .ddpm, steps: 30, isCancelled: { false }) { whole.frames.append($0) }
        try backend.fork(input, seed: 42, sampler: .ddpm, steps: 30, from: ForkSpec(step: 12, xt: whole.frames[12].xt, pins: [:]),
                         isCancelled: { false }) { forked.frames.append($0) }
        #expect(forked.frames.map(\.rounded) == whole.frames.dropFirst(12).map(\.rounded))
        #expect(forked.frames.map(\.x0) == whole.frames.dropFirst(12).map(\.x0))
    }

    @Test func comparisonsRunTheSameSeedWithAnotherSamplerAlignedByT() {
        var config = ExplorerConfig(source: demoSource, reference: demoReference, seeds: [42], sampler: .ddpm, steps: 50)
        config.comparisons = [(42, .dpmSolver, 20)]
        var h = HeadlessExplorer(backend: DemoExplorerBackend(), config: config, size: (80, 24))
        guard let c = h.model.companions.first else { Issue.record("no comparison"); return }
        #expect(c.kind == .sampler(.dpmSolver, steps: 20) && c.seed == 42 && c.frames.count == 20)
        h.send(.key(.home))
        for _ in 0..<25 { h.send(.key(.right)) }
        let t = h.model.currentFrame?.t ?? -1
        let i = h.model.companionFrame(c) ?? -1
        // The nearest t of the 20-step run to the 50-step run's step 26.
        #expect(c.frames.allSatisfy { abs($0.t - t) >= abs(c.frames[i].t - t) })
        #expect(view(h.model).text.contains("dpm-solver++·20 t \(c.frames[i].t)"))
        // In the seed panel: c cycles the comparison's sampler, x removes them; a new run re-creates them.
        h.send(.key(.char("s")))
        h.send(.key(.char("c")))
        #expect(h.model.companions.count == 1 && h.model.companions[0].kind == .sampler(.ddim, steps: 50))
        h.send(.key(.char("x")))
        #expect(h.model.companions.isEmpty && h.model.companionRequests.isEmpty)
        h.send(.key(.char("c")))
        h.send(.key(.char("+")))                  // a new main run keeps the comparison
        #expect(h.model.companions.count == 1 && h.model.companions[0].state == .done)
    }

    @Test func forwardViewBesideTheReverseRun() {
        var h = makeExplorer(size: (100, 30), steps: 50)
        h.send(.key(.char("f")))
        #expect(h.model.forwardOpen)
        let last = h.model.forwardCache[49] ?? []
        #expect(last.count == h.model.input?.referenceIDs.count)
        #expect(view(h.model).text.contains("forward t 0: "))
        h.send(.key(.home))                                   // the noisiest step: little survives
        #expect(h.model.forwardCache[0] != nil)
        let line = forwardLine(h.model)
        #expect(line.hasPrefix("forward t \(h.model.frames[0].t): ") && line.contains("% survive"))
        h.send(.key(.char("f")))
        #expect(!forwardLine(h.model).isEmpty && !view(h.model).text.contains("% survive"))
        var plain = makeExplorer(reference: nil)
        plain.send(.key(.char("f")))
        #expect(!plain.model.forwardOpen && plain.model.notice?.contains("needs a reference") == true)
    }

    @Test(arguments: [(80, 24), (40, 12)])
    func forkViewSnapshots(size: (Int, Int)) {
        var h = makeExplorer(size: size, steps: 50)
        h.send(.key(.home))
        for _ in 0..<2 { h.send(.key(.char("]"))) }
        h.send(.key(.down))
        h.send(.key(.char("p")))
        h.send(.key(.char("1")))
        h.send(.key(.end))
        let b = view(h.model)
        #expect(gridIsAligned(b))
        #expect(b.text.contains("fork@21"))
        assertSnapshot(b.text, named: "fork-\(size.0)x\(size.1)")
    }
}
