// Turns the raw characters a terminal sends into keys: control characters (Ctrl-A …), Alt-x as ESC x,
// and a bracketed paste (ESC [200~ … ESC [201~) into one `Key.paste`. Pure, so it is unit-tested; the
// ncurses layer feeds it the characters it reads (function keys it decodes itself).

/// Decodes raw terminal characters into keys, keeping state across reads (a paste can span several).
public struct InputDecoder: Sendable {
    private var pending: [Character] = []
    private var pasting = false
    private var paste = ""
    private static let pasteStart: [Character] = ["\u{1B}", "[", "2", "0", "0", "~"]
    private static let pasteEnd = "\u{1B}[201~"

    /// Creates a decoder.
    public init() {}

    /// Whether a paste is being collected (its end has not arrived yet).
    public var isPasting: Bool { pasting }

    /// Feeds one character (Unicode scalar value) read from the terminal; returns the keys it completes.
    public mutating func feed(_ code: UInt32) -> [Key] {
        guard let scalar = Unicode.Scalar(code) else { return [] }
        let ch = Character(scalar)
        if pasting {
            paste.append(ch)
            if paste.hasSuffix(Self.pasteEnd) {
                pasting = false
                let text = String(paste.dropLast(Self.pasteEnd.count))
                paste = ""
                return [.paste(text)]
            }
            return []
        }
        if !pending.isEmpty {
            pending.append(ch)
            if Self.pasteStart.starts(with: pending) {
                if pending.count == Self.pasteStart.count { pending = []; pasting = true; paste = "" }
                return []
            }
            if pending.count == 2, code >= 32, code != 0x5B {
                pending = []
                return [.alt(ch)]
            }
            // Not a sequence we know: an Escape, then the characters as typed.
            let chars = pending.dropFirst()
            pending = []
            var out: [Key] = [.escape]
            for c in chars { out += feed(c.unicodeScalars.first.map { $0.value } ?? 0) }
            return out
        }
        if code == 27 { pending = [ch]; return [] }
        return Self.plain(code).map { [$0] } ?? []
    }

    /// Ends a burst of input: a lone Escape (or an unfinished sequence) is reported as typed. A paste in
    /// progress is kept (its end may come with the next read).
    public mutating func flush() -> [Key] {
        guard !pending.isEmpty else { return [] }
        let chars = pending.dropFirst()
        pending = []
        return [.escape] + chars.compactMap { Self.plain($0.unicodeScalars.first.map { $0.value } ?? 0) }
    }

    /// A single character that is not part of an escape sequence.
    static func plain(_ code: UInt32) -> Key? {
        switch code {
        case 3: return .ctrlC
        case 9: return .tab
        case 10, 13: return .enter
        case 8, 127: return .backspace
        case 1...26: return Unicode.Scalar(code + 96).map { .ctrl(Character($0)) }
        default:
            guard code >= 32, let s = Unicode.Scalar(code) else { return nil }
            return .char(Character(s))
        }
    }
}
