import DiffuSeqCore
import DiffuSeqTUI
import Testing

/// A headless explorer on the demo backend whose first run starts at edit strength `fraction`.
func makeSDEditExplorer(_ fraction: Double, size: (Int, Int) = (80, 24), seeds: [UInt64] = [42], steps: Int = 50,
                        comparisons: [(seed: UInt64, sampler: SamplerKind, steps: Int)] = []) -> HeadlessExplorer {
    var config = ExplorerConfig(source: demoSource, reference: demoReference, seeds: seeds, steps: steps, startFraction: fraction)
    config.comparisons = comparisons
    return HeadlessExplorer(backend: DemoExplorerBackend(), config: config, size: size)
}

@Suite("edit strength (SDEdit start)")
struct StrengthTests {
    @Test func theKeyCyclesTheStartFractionAndReRuns() {
        let h = makeExplorer(steps: 50)
        var m = h.model
        #expect(m.startFraction == 1 && m.runStartFraction == 1)
        var seen: [Double] = []
        for _ in 0..<4 {
            let effects = update(&m, .key(.char("d")))
            guard effects.count == 2, effects[0] == .cancelRun, case .startRun(let r) = effects[1] else {
                Issue.record("d must cancel and start a run: \(effects)")
                return
            }
            #expect(r.startFraction == m.startFraction && r.steps == 50 && r.fork == nil)
            #expect(m.runStartFraction == m.startFraction && m.runState == .sampling && m.frames.isEmpty)
            seen.append(m.startFraction)
        }
        #expect(seen == [0.7, 0.5, 0.3, 1])
        // The notice says where the run starts.
        _ = update(&m, .key(.char("d")))
        #expect(m.notice == "edit strength 0.7: from the source, noised to step 16 of 50")
        _ = update(&m, .key(.char("d"))); _ = update(&m, .key(.char("d"))); _ = update(&m, .key(.char("d")))
        #expect(m.notice == "edit strength 1: from pure noise, all 50 steps")
        // A value from the command line that is not in the cycle goes to the next one below it.
        var off = makeSDEditExplorer(0.6).model
        _ = update(&off, .key(.char("d")))
        #expect(off.startFraction == 0.5)
        // One key table: the binding, its help row, and the seed panel and map fall back to it.
        #expect(explorerAction(for: .char("d"), in: .global) == .cycleStrength)
        #expect(explorerAction(for: .char("d"), in: .seeds) == .cycleStrength)
        #expect(helpSections().flatMap { $0 }.contains { $0.0 == "d" && $0.1.hasPrefix("edit strength") })
    }

    @Test func framesOfAnSDEditRunBeginAtTheStartStepAndScrubbingWorksThere() throws {
        var h = makeSDEditExplorer(0.5)
        let m = h.model
        #expect(m.frames.count == 25 && m.frames.first?.index == 25 && m.frames.last?.index == 49)
        #expect(m.firstStepIndex == 25 && m.runStepCount == 50 && m.expectedCount == 25)
        #expect(m.frames.enumerated().allSatisfy { $1.index == 25 + $0 && $1.count == 50 })
        // The run starts from the source copy: the first frame's unsettled target tokens are the source's words.
        let input = try #require(m.input)
        let copy = (h.model.backend as? DemoExplorerBackend)?.sourceCopy(input) ?? []
        let first = m.frames[0].rounded[input.sourceLength...].map(Int.init)
        #expect(zip(first, copy).filter { $0 == $1 }.count >= copy.count / 2)
        h.send(.key(.home))
        #expect(h.model.step == 0)
        var text = view(h.model).text
        #expect(text.contains("step 26/50") && text.contains("starts at step 26 (edit 0.5)"), "\(text)")
        #expect(text.contains("edit 0.5 · seed 42"))
        h.send(.key(.left))
        #expect(h.model.step == 0)
        h.send(.key(.char("]")))
        #expect(view(h.model).text.contains("step 36/50"))
        h.send(.key(.end))
        #expect(h.model.step == 24 && view(h.model).text.contains("step 50/50"))
        // The scrubber spans the frames run: its first column is the start step, its last the last step.
        let bar = try #require(ExplorerLayout(h.model).scrubber)
        h.send(.mouse(x: bar.x, y: bar.y))
        #expect(h.model.step == 0)
        h.send(.mouse(x: bar.maxX - 1, y: bar.y))
        #expect(h.model.step == 24)
        // The inspector's history (shown on tall screens) numbers steps as the timeline does.
        var tall = makeSDEditExplorer(0.5, size: (120, 40))
        tall.send(.key(.char("]")))
        text = view(tall.model).text
        #expect(text.contains("History") && text.contains("   26 "), "\(text)")
        h.send(.key(.home))
        // The map starts at the start step too, and Enter jumps the timeline there.
        h.send(.key(.char("t")))
        text = view(h.model).text
        #expect(text.contains("steps 26–50, one column each") && text.contains("step 26/50") && text.contains("edit 0.5"), "\(text)")
        h.send(.key(.right))
        h.send(.key(.enter))
        #expect(h.model.mode == .normal && h.model.step == 1 && view(h.model).text.contains("step 27/50"))
        // The forward view is at the frame's own t.
        h.send(.key(.char("f")))
        #expect(forwardLine(h.model).hasPrefix("forward t \(h.model.frames[1].t): "))
    }

    @Test func forksAndComparisonsOfAnSDEditRunStayAligned() throws {
        var h = makeSDEditExplorer(0.5, comparisons: [(42, .dpmSolver, 20)])
        // The comparison starts at the same fraction of its own steps.
        let c = try #require(h.model.companions.first)
        #expect(c.frames.count == 10 && c.frames.first?.index == 10 && c.state == .done)
        h.send(.key(.home))
        for _ in 0..<5 { h.send(.key(.right)) }
        let t = h.model.currentFrame?.t ?? -1
        let ci = try #require(h.model.companionFrame(h.model.companions[0]))
        #expect(c.frames.allSatisfy { abs($0.t - t) >= abs(c.frames[ci].t - t) })
        // A pin forks at the frame's engine step (30), not at its position in the array (5).
        h.send(.key(.down))
        let pos = h.model.selected
        h.send(.key(.char("p")))
        #expect(view(h.model).text.contains("pin pos \(pos) from step 31 to:"))
        let nn = h.model.neighbourCache[NeighbourKey(step: 5, position: pos, row: h.model.primaryRow)] ?? []
        h.send(.key(.char("1")))
        let fork = try #require(h.model.companions.first { if case .fork = $0.kind { return true } else { return false } })
        #expect(fork.kind == .fork(step: 30, position: pos, token: nn[0].id))
        #expect(fork.frames.count == 20 && fork.frames.first?.index == 30 && fork.state == .done)
        #expect(fork.frames.allSatisfy { Int($0.rounded[pos]) == nn[0].id })
        #expect(view(h.model).text.contains("fork@31"))
        h.send(.key(.left))                                   // step 30: before the fork
        #expect(h.model.companionFrame(fork) == nil && view(h.model).text.contains("(forks at step 31)"))
        h.send(.key(.right))
        #expect(h.model.companionFrame(fork) == 0)
        h.send(.key(.end))
        #expect(h.model.companionFrame(fork) == 19)
    }

    @Test func aForkOfAnSDEditRunWithoutPinsReproducesIt() throws {
        let backend = DemoExplorerBackend()
        let input = try backend.prepare(source: demoSource, reference: nil)
        let whole = Box(), forked = Box()
        try backend.sample(input, seeds: [42], sampler: .ddpm, steps: 30, startFraction: 0.7, isCancelled: { false }) {
            whole.frames.append($0)
        }
        #expect(whole.frames.map(\.index) == Array(9..<30))
        try backend.fork(input, seed: 42, sampler: .ddpm, steps: 30, startFraction: 0.7,
                         from: ForkSpec(step: 14, xt: whole.frames[5].xt, pins: [:]), isCancelled: { false }) {
            forked.frames.append($0)
        }
        #expect(forked.frames.map(\.index) == Array(14..<30))
        #expect(forked.frames.map(\.rounded) == whole.frames.dropFirst(5).map(\.rounded))
    }

    @Test func aRunsFirstFrameIsDrawnAtOnceWhateverItsIndex() {
        func frame(_ i: Int) -> DiffusionFrame {
            DiffusionFrame(index: i, count: 50, t: 0, diffusionSteps: 50, noise: NoiseLevel(beta: 0.1, alphaBar: 0.5), batch: 1,
                           seqLen: 1, dim: 1, xt: [], x0: [], rounded: [], margin: [], decoded: [])
        }
        #expect(RedrawPolicy.isUrgent(.frame(runID: 3, frame(25)), previousFrameRun: 2))
        #expect(!RedrawPolicy.isUrgent(.frame(runID: 3, frame(26)), previousFrameRun: 3))
        #expect(RedrawPolicy.isUrgent(.frame(runID: 3, frame(49)), previousFrameRun: 3))
        #expect(RedrawPolicy.isUrgent(.frame(runID: 1, frame(0)), previousFrameRun: nil))
    }

    @Test(arguments: [(80, 24), (40, 12)])
    func headerShowsTheStrength(size: (Int, Int)) {
        var h = makeSDEditExplorer(0.5, size: size, seeds: [42, 7])
        h.send(.key(.home))
        h.send(.key(.char("]")))
        let b = view(h.model)
        #expect(gridIsAligned(b))
        #expect(b.lines[2].contains("edit 0.5"), "\(b.lines[2])")
        #expect(b.text.contains("36/50"))
        assertSnapshot(b.text, named: "sdedit-\(size.0)x\(size.1)")
        // From noise, the header says so too.
        let plain = view(makeExplorer(size: size).model)
        #expect(plain.lines[2].contains("from noise"), "\(plain.lines[2])")
    }
}
