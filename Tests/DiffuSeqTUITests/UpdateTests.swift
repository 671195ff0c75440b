import DiffuSeqCore
import DiffuSeqTUI
import Testing

@Suite("update transitions")
struct UpdateTests {
    @Test func startRunsToCompletionAndFollowsTheLastStep() {
        let h = makeExplorer()
        #expect(h.model.runState == .done)
        #expect(h.model.frames.count == 50)
        #expect(h.model.step == 49)
        #expect(h.model.frames[0].batch == 2)
        #expect(h.model.targetRange.lowerBound == h.model.input?.sourceLength)
    }

    @Test func startEmitsStartRunWithSeedsSamplerAndSteps() {
        let backend = DemoExplorerBackend()
        var m = ExplorerModel(backend: backend, config: ExplorerConfig(source: demoSource, seeds: [3, 4], sampler: .dpmSolver, steps: 20))
        let effects = update(&m, .start)
        guard case .startRun(let r)? = effects.last else { Issue.record("no startRun"); return }
        #expect(r.seeds == [3, 4])
        #expect(r.sampler == .dpmSolver)
        #expect(r.steps == 20)
        #expect(m.runState == .sampling)
    }

    @Test func stepClampsAtBothEnds() {
        var h = makeExplorer()
        h.send(.key(.right))
        #expect(h.model.step == 49)
        h.send(.key(.home))
        #expect(h.model.step == 0)
        h.send(.key(.left))
        #expect(h.model.step == 0)
        h.send(.key(.char("[")))
        #expect(h.model.step == 0)
        h.send(.key(.right))
        #expect(h.model.step == 1)
        h.send(.key(.char("]")))
        #expect(h.model.step == 11)
        h.send(.key(.char("[")))
        #expect(h.model.step == 1)
        h.send(.key(.end))
        #expect(h.model.step == 49)
        h.send(.key(.char("]")))
        #expect(h.model.step == 49)
        h.send(.key(.char("[")))
        #expect(h.model.step == 39)
    }

    @Test func playPauseAndTicks() {
        var h = makeExplorer()
        h.send(.key(.char(" ")))            // at the end: restarts from the first step
        #expect(h.model.playing)
        #expect(h.model.step == 0)
        #expect(h.model.wantsTicks)
        h.send(.tick)
        h.send(.tick)
        #expect(h.model.step == 2)
        h.send(.key(.char(" ")))
        #expect(!h.model.playing)
        h.send(.tick)
        #expect(h.model.step == 2)
        h.send(.key(.char(" ")))
        for _ in 0..<100 { h.send(.tick) }
        #expect(h.model.step == 49)
        #expect(!h.model.playing)          // stops at the end of a finished run
    }

    @Test func scrubbingWithTheMouse() {
        var h = makeExplorer(size: (80, 24))
        let layout = ExplorerLayout(h.model)
        guard let bar = layout.scrubber else { Issue.record("no scrubber"); return }
        h.send(.mouse(x: bar.x, y: bar.y))
        #expect(h.model.step == 0)
        h.send(.mouse(x: bar.maxX - 1, y: bar.y))
        #expect(h.model.step == 49)
        h.send(.mouse(x: bar.x + bar.width / 2, y: bar.y))
        #expect(h.model.step > 15 && h.model.step < 35)
    }

    @Test func selectionWrapsOverTheTargetPositions() {
        var h = makeExplorer()
        let r = h.model.targetRange
        #expect(h.model.selected == r.lowerBound)
        h.send(.key(.up))
        #expect(h.model.selected == r.upperBound - 1)
        h.send(.key(.down))
        #expect(h.model.selected == r.lowerBound)
        h.send(.key(.tab))
        #expect(h.model.selected == r.lowerBound + 1)
        h.send(.key(.backTab))
        #expect(h.model.selected == r.lowerBound)
    }

    @Test func clickingATokenSelectsIt() {
        var h = makeExplorer(size: (80, 24))
        let grid = ExplorerLayout(h.model).tokenGrid ?? Rect(x: 0, y: 0, width: 0, height: 0)
        let target = tokenPlacements(h.model, in: grid).filter { h.model.targetRange.contains($0.position) }
        guard target.count > 2 else { Issue.record("no target tokens placed"); return }
        h.send(.mouse(x: target[2].x, y: target[2].y))
        #expect(h.model.selected == target[2].position)
    }

    @Test func editThenEnterCancelsAndStartsANewRun() {
        let backend = DemoExplorerBackend()
        var m = ExplorerModel(backend: backend, config: ExplorerConfig(source: demoSource, reference: demoReference, steps: 20))
        _ = update(&m, .start)
        #expect(m.runState == .sampling)
        _ = update(&m, .key(.char("e")))
        #expect(m.mode == .editing)
        for _ in 0..<7 { _ = update(&m, .key(.backspace)) }  // drop "thyself"
        for ch in "ye 漢字" { _ = update(&m, .key(.char(ch))) }
        _ = update(&m, .key(.left))
        _ = update(&m, .key(.char("x")))
        #expect(String(m.editText) == "thou shalt love thy neighbour as ye 漢x字")
        let effects = update(&m, .key(.enter))
        #expect(effects.count == 2)
        #expect(effects.first == .cancelRun)
        guard case .startRun(let r)? = effects.last else { Issue.record("no startRun"); return }
        #expect(r.id == 2)
        #expect(m.source == "thou shalt love thy neighbour as ye 漢x字")
        #expect(m.reference == nil)        // edited away from the dataset example
        #expect(m.mode == .normal)
        #expect(m.frames.isEmpty)
        // Frames of the old run are ignored.
        _ = update(&m, .runFinished(runID: 1))
        #expect(m.runState == .sampling)
    }

    @Test func escapeCancelsTheEditAndEmptySourceIsRefused() {
        var h = makeExplorer()
        h.send(.key(.char("e")))
        h.send(.key(.char("z")))
        h.send(.key(.escape))
        #expect(h.model.mode == .normal)
        #expect(h.model.source == demoSource)
        h.send(.key(.char("e")))
        for _ in 0..<60 { h.send(.key(.backspace)) }
        h.send(.key(.enter))
        #expect(h.model.mode == .editing)
        #expect(h.model.notice != nil)
    }

    @Test func prepareErrorsAreShown() {
        var h = makeExplorer()
        h.send(.key(.char("e")))
        for _ in 0..<40 { h.send(.key(.char("a"))); h.send(.key(.char(" "))) }
        h.send(.key(.enter))
        if case .failed(let msg) = h.model.runState { #expect(msg.contains("at most")) } else { Issue.record("expected failure") }
    }

    @Test func seedToggleAddRemove() {
        var h = makeExplorer(seeds: [42, 7, 9])
        h.send(.key(.char("2")))                 // not focused: ignored with a hint
        #expect(h.model.seeds[1].visible)
        #expect(h.model.notice != nil)
        h.send(.key(.char("s")))
        #expect(h.model.mode == .seeds)
        h.send(.key(.char("2")))
        #expect(!h.model.seeds[1].visible)
        #expect(h.model.visibleRows == [0, 2])
        h.send(.key(.char("1")))
        #expect(h.model.primaryRow == 2)
        h.send(.key(.char("3")))                 // the last visible seed stays visible
        #expect(h.model.seeds[2].visible)
        h.send(.key(.char("+")))
        #expect(h.model.seeds.map(\.seed) == [42, 7, 9, 43])
        #expect(h.model.runSeeds == [42, 7, 9, 43])
        #expect(h.model.frames.first?.batch == 4)
        h.send(.key(.char("-")))
        #expect(h.model.seeds.count == 3)
        h.send(.key(.escape))
        #expect(h.model.mode == .normal)
    }

    @Test func diversityAtTheLastStepAmongVisibleSeeds() {
        var h = makeExplorer(seeds: [1, 2, 3])
        #expect(h.model.diversity?.rows == [0, 1, 2])
        h.send(.key(.char("s")))
        h.send(.key(.char("3")))
        #expect(h.model.diversity?.rows == [0, 1])
    }

    @Test func samplerCyclesAndReruns() {
        var h = makeExplorer()
        var seen: [SamplerKind] = []
        for _ in 0..<4 {
            h.send(.key(.char("m")))
            seen.append(h.model.sampler)
            #expect(h.model.runSampler == h.model.sampler)
        }
        #expect(seen == [.dpmSolver, .ddimOfficial, .ddpm, .ddim])
    }

    @Test func stepCountChoicesCappedAtT() {
        var h = makeExplorer(steps: 50, backend: DemoExplorerBackend(diffusionSteps: 300))
        #expect(h.model.stepChoices == [10, 20, 50, 100, 200, 300])
        h.send(.key(.char(">")))
        #expect(h.model.steps == 100)
        #expect(h.model.frames.count == 100)
        h.send(.key(.char(">")))
        h.send(.key(.char(">")))
        #expect(h.model.steps == 300)
        h.send(.key(.char(">")))
        #expect(h.model.steps == 300)
        #expect(h.model.notice != nil)
        h.send(.key(.char("<")))
        #expect(h.model.steps == 200)
    }

    @Test func resizeAndHelpAndQuit() {
        var h = makeExplorer()
        h.send(.resize(width: 100, height: 30))
        #expect(h.model.width == 100 && h.model.height == 30)
        #expect(view(h.model).width == 100)
        h.send(.key(.char("?")))
        #expect(h.model.mode == .help)
        h.send(.key(.right))
        #expect(h.model.mode == .normal)
        #expect(h.model.step == 49)              // the closing key is swallowed
        var m = h.model
        let effects = update(&m, .key(.char("q")))
        #expect(effects == [.cancelRun, .quit])
    }

    @Test func liveRunFollowsUnlessTheUserMoves() {
        let backend = DemoExplorerBackend()
        var m = ExplorerModel(backend: backend, config: ExplorerConfig(source: demoSource, steps: 10))
        guard case .startRun(let r)? = update(&m, .start).last else { Issue.record("no run"); return }
        let box = Box()
        try? backend.sample(r.input, seeds: r.seeds, sampler: r.sampler, steps: r.steps, isCancelled: { false }, onFrame: { box.frames.append($0) })
        for f in box.frames.prefix(4) { _ = update(&m, .frame(runID: r.id, f)) }
        #expect(m.step == 3)
        _ = update(&m, .key(.left))
        for f in box.frames.dropFirst(4).prefix(3) { _ = update(&m, .frame(runID: r.id, f)) }
        #expect(m.step == 2)
        _ = update(&m, .key(.end))
        for f in box.frames.dropFirst(7) { _ = update(&m, .frame(runID: r.id, f)) }
        #expect(m.step == 9)
        _ = update(&m, .runCancelled(runID: r.id))
        #expect(m.runState == .cancelled)
        _ = update(&m, .runFailed(runID: 99, message: "stale"))
        #expect(m.runState == .cancelled)
    }

    @Test func updateAndViewNeverCallTheEngineAndDerivedDataGivesTheSameScreen() {
        let backend = CountingBackend()
        var lazy = ExplorerModel(backend: backend, config: ExplorerConfig(source: demoSource, reference: demoReference, steps: 10),
                                 width: 100, height: 30)
        guard case .startRun(let r)? = update(&lazy, .start).last else { Issue.record("no run"); return }
        let box = Box()
        try? backend.sample(r.input, seeds: r.seeds, sampler: r.sampler, steps: r.steps, isCancelled: { false }, onFrame: { box.frames.append($0) })
        backend.calls = 0
        for f in box.frames { _ = update(&lazy, .frame(runID: r.id, f)) }
        _ = update(&lazy, .runFinished(runID: r.id))
        for k: Key in [.left, .down, .char("["), .end, .up] { _ = update(&lazy, .key(k)) }
        _ = view(lazy)
        #expect(backend.calls == 0)            // neighbours, decoding and BLEU are effects
        #expect(lazy.sentenceCache.isEmpty)
        guard let req = pendingDerivations(lazy) else { Issue.record("nothing pending"); return }
        #expect(!req.sentences.isEmpty && !req.neighbours.isEmpty && req.bleu.count == 1)
        prepareForDraw(&lazy)
        #expect(pendingDerivations(lazy) == nil)
        #expect(backend.calls > 0)
        // The same state reached through the interpreter with derivation after every message.
        let h = HeadlessExplorer(backend: DemoExplorerBackend(), config: ExplorerConfig(source: demoSource, reference: demoReference, steps: 10),
                                 size: (100, 30))
        var eager = h.model
        for k: Key in [.left, .down, .char("["), .end, .up] { _ = update(&eager, .key(k)) }
        prepareForDraw(&eager)
        // Derived data of an older run is dropped.
        var stale = lazy
        _ = update(&stale, .derived(DerivedResult(runID: 99, sentences: [NeighbourKey(step: 0, position: -1, row: 0): "x"])))
        #expect(stale.sentenceCache == lazy.sentenceCache)
        #expect(view(lazy).lines == view(eager).lines)
    }

    @Test func cancellationStopsTheDemoSamplerEarly() throws {
        let backend = DemoExplorerBackend()
        let input = try backend.prepare(source: demoSource, reference: nil)
        let box = Box()
        try backend.sample(input, seeds: [1], sampler: .ddim, steps: 100, isCancelled: { box.frames.count >= 5 },
                           onFrame: { box.frames.append($0) })
        #expect(box.frames.count == 5)
    }
}

final class Box: @unchecked Sendable {
    var frames: [DiffusionFrame] = []
}

/// The demo engine, counting the calls `update`/`view` must never make.
final class CountingBackend: DemoExplorerBackend, @unchecked Sendable {
    var calls = 0
    init() { super.init() }
    override func decode(_ ids: [Int]) -> String { calls += 1; return super.decode(ids) }
    override func sample(_ input: PreparedInput, seeds: [UInt64], sampler: SamplerKind, steps: Int, startFraction: Double = 1,
                         isCancelled: @escaping @Sendable () -> Bool, onFrame: @escaping @Sendable (DiffusionFrame) -> Void) throws {
        calls += 1
        try super.sample(input, seeds: seeds, sampler: sampler, steps: steps, startFraction: startFraction, isCancelled: isCancelled,
                         onFrame: onFrame)
    }
    override func neighbours(of vector: [Float], k: Int) -> [Neighbour] { calls += 1; return super.neighbours(of: vector, k: k) }
    override func bleu(hypothesis: String, reference: String) -> Double { calls += 1; return super.bleu(hypothesis: hypothesis, reference: reference) }
    override func diversity(_ sentences: [String]) -> (selfBLEU: Double, div4: Double, mbrIndex: Int) {
        calls += 1
        return super.diversity(sentences)
    }
}
