import DiffuSeqCore
import DiffuSeqTUI
import Testing

@Suite("trajectory map and its SVG")
struct MapTests {
    @Test func openMoveJumpAndClose() {
        var h = makeExplorer(steps: 200)
        h.send(.key(.char("[")))
        h.send(.key(.down))
        let (step0, sel0) = (h.model.step, h.model.selected)
        h.send(.key(.char("t")))
        #expect(h.model.mode == .map)
        #expect(h.model.mapStep == step0 && h.model.mapPosition == sel0)
        // 200 steps on the 80×24 map's 65 columns: ← moves one column (several steps).
        h.send(.key(.left))
        #expect(h.model.mapStep < step0)
        let col = TimelineScale(count: 200, columns: 65)
        #expect(col.column(of: h.model.mapStep) == col.column(of: step0) - 1)
        h.send(.key(.home))
        #expect(h.model.mapStep == 0)
        h.send(.key(.char("]")))
        #expect(h.model.mapStep > 10)
        h.send(.key(.end))
        #expect(h.model.mapStep == 199)
        h.send(.key(.char("[")))
        let target = h.model.mapStep
        for _ in 0..<3 { h.send(.key(.down)) }
        #expect(h.model.mapPosition == sel0 + 3)
        for _ in 0..<100 { h.send(.key(.up)) }
        #expect(h.model.mapPosition == h.model.targetRange.lowerBound)   // clamped, no wrap
        // The inspector's neighbours are those of the cursor cell.
        let key = NeighbourKey(step: target, position: h.model.mapPosition, row: h.model.primaryRow)
        #expect(h.model.neighbourCache[key]?.isEmpty == false)
        #expect(h.model.step == step0)              // moving the map cursor leaves the timeline alone
        h.send(.key(.enter))
        #expect(h.model.mode == .normal)
        #expect(h.model.step == target && h.model.selected == h.model.targetRange.lowerBound)
        h.send(.key(.char("t")))
        h.send(.key(.right))
        h.send(.key(.escape))                       // closing does not jump
        #expect(h.model.mode == .normal && h.model.step == target)
    }

    @Test func mapBeforeTheFirstFrameSaysWhy() {
        let backend = DemoExplorerBackend()
        var m = ExplorerModel(backend: backend, config: ExplorerConfig(source: demoSource, steps: 10))
        _ = update(&m, .start)
        _ = update(&m, .key(.char("t")))
        #expect(m.mode == .normal)
        #expect(m.notice?.contains("first step") == true)
    }

    @Test func clickingACellMovesTheCursor() {
        var h = makeExplorer(steps: 50)
        h.send(.key(.char("t")))
        let g = MapLayout(width: 80, height: 24).grid
        h.send(.mouse(x: g.x, y: g.y + 2))
        #expect(h.model.mapStep == 0)
        #expect(h.model.mapPosition == h.model.targetRange.lowerBound + 2)
    }

    @Test(arguments: [(80, 24), (40, 12)])
    func mapSnapshots(size: (Int, Int)) {
        var h = makeExplorer(size: size, steps: 200)
        h.send(.key(.char("[")))
        h.send(.key(.down))
        h.send(.key(.down))
        h.send(.key(.char("t")))
        h.send(.key(.left))
        let b = view(h.model)
        #expect(gridIsAligned(b))
        let text = b.text
        #expect(text.contains("Trajectory map"))
        #expect(text.contains(size.0 >= 72 ? "3.1 steps each" : "/col"))      // downsampled, and it says so
        #expect(text.contains("nn "))
        assertSnapshot(text, named: "map-\(size.0)x\(size.1)")
        // Colour roles: every state is drawn somewhere in a finished run of the demo.
        let grid = MapLayout(width: size.0, height: size.1).grid
        var roles = Set<Role>()
        for y in grid.y..<grid.maxY { for x in grid.x..<grid.maxX { roles.insert(b[x, y].role) } }
        #expect(roles.isSuperset(of: size.1 >= 24 ? [.changing, .settled, .quiet] : [.changing, .settled]))
    }

    @Test func gridStatesFromHandMadeFrames() {
        // Position 1 only: A A B B B B PAD over six steps.
        let seq: [Int32] = [5, 5, 6, 6, 6, 0]
        let frames = seq.enumerated().map { i, id in
            DiffusionFrame(index: i, count: 6, t: 5 - i, diffusionSteps: 6, noise: NoiseLevel(beta: 0.1, alphaBar: 0.5), batch: 1,
                           seqLen: 2, dim: 1, xt: [], x0: [], rounded: [1, id], margin: [0, Float(i)], decoded: [])
        }
        let g = TrajectoryGrid(frames: frames, row: 0, positions: 1..<2, padID: 0, expectedSteps: 6)
        #expect(g.lastChange.map { $0[0] } == [0, 0, 2, 2, 2, 5])
        #expect(g.state(0, steps: 0..<1) == .settled)       // the first step is not a change
        #expect(g.state(0, steps: 2..<3) == .changed)
        #expect(g.state(0, steps: 3..<4) == .recent)        // window 2
        #expect(g.state(0, steps: 4..<5) == .settled)
        #expect(g.state(0, steps: 1..<4) == .changed)       // a column of several steps: changed inside it
        #expect(g.state(0, steps: 5..<6) == .pad)
        #expect(g.marginLevel(0) == 0 && g.marginLevel(4) == 3)
    }

    @Test func svgHasACellPerPositionAndColumnAndEscapesText() {
        let h = makeExplorer(steps: 30)
        let m = h.model
        let grid = TrajectoryGrid(frames: m.frames, row: 0, positions: m.targetRange, padID: 0, expectedSteps: 30)
        let svg = TrajectorySVG.render(grid: grid, token: { m.backend.token($0) }, title: "a <b> & c", sentence: "x \"y\"")
        #expect(svg.hasPrefix("<?xml"))
        #expect(svg.hasSuffix("</svg>\n"))
        #expect(svg.contains("a &lt;b&gt; &amp; c"))
        #expect(svg.contains("final: x &quot;y&quot;"))
        let cells = svg.components(separatedBy: "fill-opacity").count - 1
        #expect(cells == m.targetRange.count * 30)
        #expect(svg.contains("#d62728") && svg.contains("#2ca02c"))
        // Downsampled to the column limit, and the axis says so.
        let small = TrajectorySVG.render(grid: grid, token: { m.backend.token($0) }, title: "", sentence: "", maxColumns: 10)
        #expect(small.components(separatedBy: "fill-opacity").count - 1 == m.targetRange.count * 10)
        #expect(small.contains("3.0 steps per column"))
    }
}
