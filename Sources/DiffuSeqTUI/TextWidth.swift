// Display width of graphemes in a terminal, and sanitising odd text before it reaches the grid.

/// Terminal display-width helpers (a small, dependency-free wcwidth for graphemes).
public enum TextWidth {
    /// Columns a grapheme occupies: 0 (invisible), 1, or 2 (CJK, fullwidth, emoji).
    public static func width(of ch: Character) -> Int {
        guard let first = ch.unicodeScalars.first else { return 0 }
        let v = first.value
        if v < 0x20 || (v >= 0x7F && v < 0xA0) { return 0 }
        switch first.properties.generalCategory {
        case .nonspacingMark, .enclosingMark, .spacingMark, .format, .lineSeparator, .paragraphSeparator,
             .control, .surrogate:
            // Variation selectors, ZWJ, ZWSP, lone combining marks: no column of their own.
            return 0
        default: break
        }
        if ch.unicodeScalars.contains(where: { $0.value == 0xFE0F }) && first.properties.isEmoji { return 2 }
        if first.properties.isEmojiPresentation { return 2 }
        if isWide(v) { return 2 }
        return 1
    }

    /// East Asian Wide / Fullwidth ranges (coarse but safe).
    static func isWide(_ v: UInt32) -> Bool {
        switch v {
        case 0x1100...0x115F, 0x231A...0x231B, 0x2329...0x232A, 0x2E80...0x303E, 0x3041...0x33FF,
             0x3400...0x4DBF, 0x4E00...0x9FFF, 0xA000...0xA4CF, 0xA960...0xA97F, 0xAC00...0xD7A3,
             0xF900...0xFAFF, 0xFE10...0xFE19, 0xFE30...0xFE6F, 0xFF00...0xFF60, 0xFFE0...0xFFE6,
             0x1F300...0x1F64F, 0x1F900...0x1F9FF, 0x1FA70...0x1FAFF, 0x20000...0x2FFFD, 0x30000...0x3FFFD:
            return true
        default:
            return false
        }
    }

    /// Replaces what a terminal cannot show in one grapheme per cell: control characters become `·`,
    /// a grapheme starting with a combining mark gets a dotted circle base `◌`, invisible format
    /// characters are dropped, and newlines/tabs become spaces.
    public static func sanitize(_ s: String) -> [Character] {
        var out: [Character] = []
        out.reserveCapacity(s.count)
        for ch in s {
            guard let first = ch.unicodeScalars.first else { continue }
            let v = first.value
            if ch == "\n" || ch == "\t" || ch == "\r\n" || ch == "\r" { out.append(" "); continue }
            if v < 0x20 || (v >= 0x7F && v < 0xA0) { out.append("·"); continue }
            switch first.properties.generalCategory {
            case .nonspacingMark, .enclosingMark, .spacingMark:
                var t = "◌"
                t.unicodeScalars.append(contentsOf: ch.unicodeScalars)
                out.append(Character(t))
            case .format, .lineSeparator, .paragraphSeparator, .surrogate, .control:
                continue
            default:
                // Strip controls hidden inside a cluster (e.g. "a\u{0301}\u{0007}" cannot be one, but be safe).
                if ch.unicodeScalars.count > 1,
                   ch.unicodeScalars.contains(where: { $0.value < 0x20 || ($0.value >= 0x7F && $0.value < 0xA0) }) {
                    out.append("·")
                } else if width(of: ch) == 0 {
                    continue
                } else {
                    out.append(ch)
                }
            }
        }
        return out
    }

    /// Display width of a string after sanitising.
    public static func width(of s: String) -> Int {
        sanitize(s).reduce(0) { $0 + width(of: $1) }
    }

    /// Truncates a string to at most `maxWidth` columns, ending in `…` when cut.
    public static func truncate(_ s: String, to maxWidth: Int) -> String {
        if maxWidth <= 0 { return "" }
        let chars = sanitize(s)
        var total = 0
        for ch in chars { total += width(of: ch) }
        if total <= maxWidth { return String(chars) }
        var out = ""
        var used = 0
        for ch in chars {
            let w = width(of: ch)
            if used + w > maxWidth - 1 { break }
            out.append(ch)
            used += w
        }
        return out + "…"
    }

    /// Pads (or truncates) a string to exactly `width` columns.
    public static func pad(_ s: String, to width: Int, alignRight: Bool = false) -> String {
        let t = truncate(s, to: width)
        let w = self.width(of: t)
        let fill = String(repeating: " ", count: max(0, width - w))
        return alignRight ? fill + t : t + fill
    }
}
