import DiffuSeqCore
import DiffuSeqTUI
import Foundation
import Testing

@Suite("whole screens and widgets")
struct ScreenTests {
    @Test func snapshot80x24() {
        var h = makeExplorer(size: (80, 24))
        h.send(.key(.char("[")))
        h.send(.key(.down))
        let b = view(h.model)
        #expect(gridIsAligned(b))
        assertSnapshot(b.text, named: "screen-80x24")
    }

    @Test func snapshot120x40() {
        var h = makeExplorer(size: (120, 40), seeds: [42, 7, 9, 11])
        h.send(.key(.home))
        h.send(.key(.char("]")))
        h.send(.key(.char("]")))
        let b = view(h.model)
        #expect(gridIsAligned(b))
        assertSnapshot(b.text, named: "screen-120x40")
    }

    @Test func snapshot40x12() {
        let h = makeExplorer(size: (40, 12))
        let b = view(h.model)
        #expect(gridIsAligned(b))
        assertSnapshot(b.text, named: "screen-40x12")
    }

    @Test func tooSmall30x8() {
        let h = makeExplorer(size: (30, 8))
        let text = view(h.model).text
        #expect(text.contains("terminal too small"))
        #expect(text.contains("40×12"))
        assertSnapshot(text, named: "screen-30x8-too-small")
    }

    @Test(arguments: [(80, 24), (40, 12), (120, 40)])
    func helpFitsWrapsAtWordsAndPages(size: (Int, Int)) {
        var h = makeExplorer(size: size)
        h.send(.key(.char("?")))
        let layout = HelpLayout(width: size.0, height: size.1)
        var shown: [HelpLine] = []
        for page in layout.pages.indices {
            #expect(h.model.helpPage == page)
            let b = view(h.model)
            #expect(gridIsAligned(b))
            let text = b.text
            for line in layout.pages[page].flatMap({ $0 }) where !line.text.isEmpty {
                // Every line is drawn whole (nothing cut at the box edge).
                #expect(text.contains(line.text), "line cut: \(line.text)")
                shown.append(line)
            }
            if size == (80, 24) || size == (40, 12) {
                assertSnapshot(text, named: "screen-\(size.0)x\(size.1)-help-page\(page + 1)")
            }
            h.send(.key(.pageDown))
        }
        #expect(h.model.mode == .help)               // paging past the end stays on the last page
        // Wrapped pieces joined again give every help text of the key table: no word was cut.
        var entries: [String] = []
        for l in shown where !l.heading && !l.text.isEmpty {
            if l.key.isEmpty, !entries.isEmpty { entries[entries.count - 1] += " " + l.text } else { entries.append(l.text) }
        }
        for binding in explorerKeyTable { #expect(entries.contains(binding.help), "help lacks \(binding.help)") }
        h.send(.key(.pageUp))
        #expect(h.model.helpPage == max(0, layout.pages.count - 2))
        h.send(.key(.char("x")))
        #expect(h.model.mode == .normal)
    }

    @Test func editingShowsTheFieldAndHints() {
        var h = makeExplorer(size: (80, 24))
        h.send(.key(.char("e")))
        h.send(.key(.end))
        for ch in " ye" { h.send(.key(.char(ch))) }
        let text = view(h.model).text
        #expect(text.contains("thyself ye"))
        #expect(text.contains("Enter run"))
    }

    @Test func statusShowsRunStates() {
        let backend = DemoExplorerBackend()
        var m = ExplorerModel(backend: backend, config: ExplorerConfig(source: demoSource, steps: 10))
        _ = update(&m, .start)
        #expect(view(m).lines[23].contains("sampling 0/10"))
        _ = update(&m, .runFailed(runID: 1, message: "out of memory"))
        #expect(view(m).lines[23].contains("error: out of memory"))
        #expect(view(m).lines[23].contains("q quit"))
    }

    @Test func widgetsDrawIntoSmallBuffers() {
        var h = makeExplorer(seeds: [1, 2])
        h.send(.key(.char("[")))
        let m = h.model
        var b = ScreenBuffer(width: 40, height: 4)
        drawTimeline(m, &b, Rect(x: 0, y: 0, width: 40, height: 4), wide: true)
        #expect(b.lines[0].hasPrefix("─ Timeline"))
        #expect(b.lines[1].contains("step 40/50"))
        #expect(b.lines[2].contains("█") || b.lines[2].contains("▇"))
        #expect(gridIsAligned(b))

        b = ScreenBuffer(width: 36, height: 6)
        drawTokens(m, &b, Rect(x: 0, y: 0, width: 36, height: 6), wide: true)
        #expect(b.lines[1].contains("[CLS] thou"))
        #expect(b.lines[5].hasPrefix("→") || b.lines[5].hasPrefix(" →"))

        b = ScreenBuffer(width: 30, height: 12)
        drawInspector(m, &b, Rect(x: 0, y: 0, width: 30, height: 12), wide: true)
        #expect(b.lines[0].contains("Position \(m.selected)"))
        #expect(b.lines[2].hasPrefix(" 1 "))
        #expect(b.text.contains("margin"))
        #expect(b.text.contains("‖x̂₀‖"))

        b = ScreenBuffer(width: 30, height: 4)
        drawNoise(m, &b, Rect(x: 0, y: 0, width: 30, height: 4), wide: true)
        #expect(b.text.contains("β_t"))
        #expect(b.text.contains("SNR"))

        b = ScreenBuffer(width: 50, height: 4)
        drawSeeds(m, &b, Rect(x: 0, y: 0, width: 50, height: 4), wide: true)
        #expect(b.lines[1].contains("● 1"))
        #expect(b.lines[2].contains("● 2"))

        b = ScreenBuffer(width: 50, height: 3)
        drawReference(m, &b, Rect(x: 0, y: 0, width: 50, height: 3), wide: true)
        #expect(b.lines[0].contains("BLEU"))
        #expect(b.lines[1].contains("you shall love"))

        b = ScreenBuffer(width: 60, height: 3)
        drawHeader(m, &b, Rect(x: 0, y: 0, width: 60, height: 3))
        #expect(b.lines[0].contains("DiffuSeq explorer"))
        #expect(b.lines[1].contains(demoSource))
        #expect(b.lines[2].contains("sampler ddim"))

        b = ScreenBuffer(width: 60, height: 1)
        drawStatus(m, &b, Rect(x: 0, y: 0, width: 60, height: 1))
        #expect(b.lines[0].contains("done"))
        #expect(b.lines[0].trimmingCharacters(in: .whitespaces).hasSuffix("? help q quit"))
    }

    @Test func seedPanelMarksTheMBRPickAtTheLastStep() {
        let h = makeExplorer(size: (100, 30), seeds: [1, 2, 3])
        let text = view(h.model).text
        #expect(text.contains("self-BLEU"))
        #expect(text.contains("div-4"))
        #expect(text.contains("★"))
    }

    @Test func sparklineMarksWhereTheOutputSettled() {
        let h = makeExplorer(size: (100, 30))
        #expect(h.model.outputSettledAt != nil)
        #expect(view(h.model).text.contains("┃"))
    }

    @Test(arguments: [(80, 24), (120, 40), (40, 12), (41, 13), (57, 19), (72, 20), (200, 60), (39, 30), (1, 1), (0, 0)])
    func oddUnicodeNeverCrashesAndKeepsTheGridAligned(size: (Int, Int)) {
        let odd = ["漢字", "👩‍👩‍👧", "e\u{301}", "\u{7}bell", "\u{301}", "zw\u{200B}sp", "שלום", "ｆｕｌｌ", "🇫🇷", "a\u{0}b", "tab\there", "x\u{FE0F}"]
        let backend = DemoExplorerBackend(extraWords: odd)
        let source = "thou 漢字 👩‍👩‍👧 e\u{301} \u{7}bell \u{301} zw\u{200B}sp שלום ｆｕｌｌ 🇫🇷 a\u{0}b x\u{FE0F}"
        var h = HeadlessExplorer(backend: backend, config: ExplorerConfig(source: source, reference: "漢字 ok 👩‍👩‍👧", seeds: [1, 2], steps: 20),
                                 size: size)
        let keys: [ExplorerMessage] = [.key(.home), .key(.down), .key(.down), .key(.char("]")), .key(.char("e")),
                                        .key(.char("字")), .key(.char("\u{301}")), .key(.left), .key(.escape), .key(.char("?"))]
        for k in keys {
            h.send(k)
            let b = view(h.model)
            #expect(b.width == max(0, size.0) && b.height == max(0, size.1))
            if size.0 > 0 { #expect(gridIsAligned(b)) }
        }
        #expect(h.model.frames.count == 20)
    }
}
