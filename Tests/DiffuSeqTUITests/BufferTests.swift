import DiffuSeqTUI
import Testing

@Suite("screen buffer, widths, key scripts")
struct BufferTests {
    @Test func widths() {
        #expect(TextWidth.width(of: "a" as Character) == 1)
        #expect(TextWidth.width(of: "漢" as Character) == 2)
        #expect(TextWidth.width(of: "👩‍👩‍👧" as Character) == 2)
        #expect(TextWidth.width(of: "e\u{301}" as Character) == 1)
        #expect(TextWidth.width(of: "\u{7}" as Character) == 0)
        #expect(TextWidth.width(of: "ｆ" as Character) == 2)
        #expect(TextWidth.sanitize("a\u{7}b") == ["a", "·", "b"])
        #expect(String(TextWidth.sanitize("\u{301}x")) == "◌\u{301}x")
        #expect(TextWidth.truncate("漢字漢字", to: 5) == "漢字…")
        #expect(TextWidth.width(of: TextWidth.pad("漢x", to: 6)) == 6)
    }

    @Test func wideCharactersAreNeverSplit() {
        var b = ScreenBuffer(width: 5, height: 2)
        #expect(b.put("ab漢字", x: 0, y: 0) == 5)
        #expect(b.lines[0] == "ab漢 ")
        b.put("x", x: 3, y: 0)                 // overwrite the right half of 漢
        #expect(b.lines[0] == "ab x ")
        b.put("字", x: 4, y: 1)                // does not fit at the edge
        #expect(b.lines[1] == "     ")
        b.put("漢", x: 1, y: 1)
        b.put("y", x: 1, y: 1)                 // overwrite the left half
        #expect(b.lines[1] == " y   ")
        b.put("🇫🇷!", x: -1, y: 1)               // negative x is clipped
        #expect(b.lines[1].count == 5)
    }

    @Test func diffReportsOnlyChangedRuns() {
        var a = ScreenBuffer(width: 10, height: 3)
        a.put("hello", x: 0, y: 0)
        var b = a
        b.put("J", x: 0, y: 0)
        b.put("漢", x: 6, y: 2)
        let runs = b.diff(from: a)
        #expect(runs.count == 2)
        #expect(runs[0] == CellRun(y: 0, x: 0, cells: [b[0, 0]]))
        #expect(runs[1].x == 6 && runs[1].cells.count == 2)
        #expect(b.diff(from: nil).count == 3)
        #expect(b.diff(from: ScreenBuffer(width: 9, height: 3)).count == 3)
        #expect(b.diff(from: b).isEmpty)
    }

    @Test func keyScriptSyntax() throws {
        let steps = try parseKeyScript("space,right,[,tab,e,text:Thou\\, shalt,enter,s,2,comma,tick:3,click:4:5,resize:100x30,q")
        #expect(steps.count == 1 + 1 + 1 + 1 + 1 + 11 + 1 + 1 + 1 + 1 + 3 + 1 + 1 + 1)
        #expect(throws: KeyScriptError.self) { try parseKeyScript("bogus") }
        #expect(throws: KeyScriptError.self) { try parseKeyScript("click:1") }
    }

    @Test func renderHeadlessRunsTheScript() throws {
        let out = try renderHeadless(backend: DemoExplorerBackend(), config: ExplorerConfig(source: demoSource, seeds: [1, 2], steps: 30),
                                     size: (100, 30), keys: "home,right,right,down,e,end,text: ye,enter,s,2,q,right")
        let lines = out.components(separatedBy: "\n")
        #expect(lines.count == 30)
        #expect(out.contains("Source thou shalt love thy neighbour as thyself ye"))
        #expect(out.contains("○ 2"))
        #expect(out.contains("step 30/30"))    // the re-run follows its last step; keys after q are ignored
    }

    /// The redraw benchmark runs and reports (its timing is measured by `diffuseq bench explore`,
    /// never asserted in a test).
    @Test func redrawBenchmarkRuns() {
        let b = benchmarkRedraw(backend: DemoExplorerBackend(), source: demoSource, size: (120, 40), iterations: 5)
        #expect(b.iterations == 5)
        #expect(b.meanMs.isFinite && b.meanRuns > 0)
    }

    @Test func formatting() {
        #expect(Fmt.fixed(0.12345, 3) == "0.123")
        #expect(Fmt.fixed(-1.5, 1) == "-1.5")
        #expect(Fmt.sci(0.000123, 2) == "1.23e-4")
        #expect(Fmt.grouped(8174) == "8,174")
        #expect(wrap("the lord is my shepherd", width: 10) == ["the lord", "is my", "shepherd"])
    }
}
