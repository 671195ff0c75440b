import DiffuSeqCore
import DiffuSeqTUI
import Testing

@Suite("line editing, paste, history, key decoding")
struct EditingTests {
    /// An explorer with the edit field open on `text` and the cursor at `cursor` (moving it, so typing inserts).
    func editing(_ text: String, cursor: Int? = nil) -> HeadlessExplorer {
        var h = makeExplorer()
        h.send(.key(.char("e")))
        h.send(.key(.ctrl("u")))
        h.send(.key(.paste(text)))
        if let cursor {
            h.send(.key(.home))
            for _ in 0..<cursor { h.send(.key(.right)) }
        }
        return h
    }

    @Test func firstPrintableKeyReplacesTheOldTextUnlessTheCursorMoved() {
        var h = makeExplorer()
        h.send(.key(.char("e")))
        #expect(h.model.editPristine)
        #expect(view(h.model).text.contains("type replaces"))
        h.send(.key(.char("n")))
        #expect(String(h.model.editText) == "n")
        h.send(.key(.char("o")))
        #expect(String(h.model.editText) == "no")
        h.send(.key(.escape))
        h.send(.key(.char("e")))
        h.send(.key(.left))                          // moving keeps the text
        h.send(.key(.char("X")))
        #expect(String(h.model.editText) == String(demoSource.dropLast()) + "X" + String(demoSource.last ?? " "))
        h.send(.key(.escape))
        h.send(.key(.char("e")))
        h.send(.key(.paste("a new verse")))          // a paste replaces too
        #expect(String(h.model.editText) == "a new verse")
    }

    @Test func shellKeys() {
        var h = editing("thou shalt not kill", cursor: 10)   // after "shalt"
        h.send(.key(.ctrl("w")))
        #expect(String(h.model.editText) == "thou  not kill")
        #expect(h.model.editCursor == 5)
        h.send(.key(.ctrl("k")))
        #expect(String(h.model.editText) == "thou ")
        h.send(.key(.ctrl("a")))
        #expect(h.model.editCursor == 0)
        h.send(.key(.ctrl("e")))
        #expect(h.model.editCursor == 5)
        h.send(.key(.ctrl("u")))
        #expect(h.model.editText.isEmpty)
        h = editing("go and see the land", cursor: 19)
        h.send(.key(.alt("b")))
        #expect(h.model.editCursor == 15)
        h.send(.key(.alt("b")))
        h.send(.key(.alt("b")))
        #expect(h.model.editCursor == 7)
        h.send(.key(.alt("f")))
        #expect(h.model.editCursor == 10)
        h.send(.key(.ctrl("u")))
        #expect(String(h.model.editText) == " the land")
    }

    @Test func ctrlUThenTypeANewSentenceAndRunIt() {
        var h = makeExplorer()
        h.send(.key(.char("e")))
        h.send(.key(.left))
        h.send(.key(.end))
        h.send(.key(.ctrl("u")))
        for ch in "the lord is my shepherd" { h.send(.key(.char(ch))) }
        h.send(.key(.enter))
        #expect(h.model.source == "the lord is my shepherd")
        #expect(h.model.mode == .normal)
        #expect(h.model.runState == .done)
    }

    @Test func historyOfTheSentencesRun() {
        var h = makeExplorer()
        h.send(.key(.char("e")))
        h.send(.key(.paste("the lord is my shepherd")))
        h.send(.key(.enter))
        h.send(.key(.char("e")))
        h.send(.key(.paste("go and see")))            // the draft
        h.send(.key(.up))
        #expect(String(h.model.editText) == "the lord is my shepherd")
        h.send(.key(.up))
        #expect(String(h.model.editText) == demoSource)
        h.send(.key(.up))                            // the oldest stays
        #expect(String(h.model.editText) == demoSource)
        h.send(.key(.down))
        h.send(.key(.down))
        #expect(String(h.model.editText) == "go and see")
        #expect(h.model.history == [demoSource, "the lord is my shepherd"])
    }

    @Test func pasteNewlinesBecomeSpacesAndOverlongInputIsCutWithANotice() {
        var h = editing("a\nb\tc")
        #expect(String(h.model.editText) == "a b c")
        h.send(.key(.paste(String(repeating: "x", count: 1200))))
        #expect(h.model.editText.count == 1000)
        #expect(h.model.notice?.contains("limited to 1000 characters; 205 were not inserted") == true)
        #expect(view(h.model).text.contains("limited to 1000"))
    }

    @Test func aSourceCutToFitTheSequenceSaysSo() {
        var h = makeExplorer(backend: TruncatingBackend())
        h.send(.key(.char("e")))
        h.send(.key(.paste("go and see the land")))
        h.send(.key(.enter))
        #expect(h.model.notice == "source too long: its last 2 tokens were cut to fit L = 64")
        #expect(view(h.model).lines[23].contains("its last 2 tokens were cut"))
    }

    @Test func decoderControlAltEscapeAndBracketedPaste() {
        var d = InputDecoder()
        func feed(_ s: String) -> [Key] { s.unicodeScalars.flatMap { d.feed($0.value) } }
        #expect(feed("\u{01}\u{05}\u{15}\u{0B}\u{17}") == [.ctrl("a"), .ctrl("e"), .ctrl("u"), .ctrl("k"), .ctrl("w")])
        #expect(feed("\u{03}\r\t\u{7F}x") == [.ctrlC, .enter, .tab, .backspace, .char("x")])
        #expect(feed("\u{1B}b\u{1B}f") == [.alt("b"), .alt("f")])
        #expect(feed("\u{1B}").isEmpty)
        #expect(d.flush() == [.escape])              // a lone Escape at the end of a read
        #expect(feed("\u{1B}[200~thou shalt\nnot") == [])
        #expect(d.isPasting)
        #expect(d.flush().isEmpty)                   // a paste spans reads
        #expect(feed(" kill\u{1B}[201~q") == [.paste("thou shalt\nnot kill"), .char("q")])
        #expect(feed("\u{1B}[x") == [.escape, .char("["), .char("x")])
    }

    @Test func keyScriptNamesForEditingKeys() throws {
        let steps = try parseKeyScript("ctrl-u,ctrl-a,alt-b,alt-f,paste:a\\, b,ctrl-c")
        let keys = steps.map { step -> Key? in
            if case .message(.key(let k)) = step { return k }
            return nil
        }
        #expect(keys == [.ctrl("u"), .ctrl("a"), .alt("b"), .alt("f"), .paste("a, b"), .ctrlC])
    }
}

/// The demo engine, but sources longer than three words are cut to three (as the real engine cuts to L).
final class TruncatingBackend: DemoExplorerBackend, @unchecked Sendable {
    init() { super.init() }
    override func prepare(source: String, reference: String?) throws -> PreparedInput {
        let words = source.split(separator: " ")
        var p = try super.prepare(source: words.prefix(3).joined(separator: " "), reference: reference)
        p.droppedSourceTokens = max(0, words.count - 3)
        return p
    }
}
