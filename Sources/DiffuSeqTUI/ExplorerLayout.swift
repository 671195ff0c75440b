// Where each panel goes for a given terminal size. Shared by `view` and mouse hit-testing.

/// The smallest terminal the explorer draws in.
public let explorerMinimumSize = (width: 40, height: 12)

/// Panel rectangles for a model's terminal size.
public struct ExplorerLayout: Equatable {
    /// Whether the terminal is below `explorerMinimumSize`.
    public var tooSmall: Bool
    /// Whether the two-column layout is used (≥ 72×20).
    public var wide: Bool
    /// Title, source and settings rows.
    public var header: Rect
    /// Timeline rows (optional header line, scrubber, two sparklines).
    public var timeline: Rect?
    /// The scrubber bar (one row) inside the timeline.
    public var scrubber: Rect?
    /// Tokens panel (header, token grid, decoded sentence).
    public var tokens: Rect?
    /// Inspector panel.
    public var inspector: Rect?
    /// Noise panel.
    public var noise: Rect?
    /// Seeds panel (first row is its header).
    public var seeds: Rect?
    /// Reference panel.
    public var reference: Rect?
    /// Status line.
    public var status: Rect

    /// Computes the layout for `m.width`×`m.height`.
    public init(_ m: ExplorerModel) {
        let w = m.width, h = m.height
        tooSmall = w < explorerMinimumSize.width || h < explorerMinimumSize.height
        wide = !tooSmall && w >= 72 && h >= 20
        status = Rect(x: 0, y: max(0, h - 1), width: w, height: 1)
        header = Rect(x: 0, y: 0, width: w, height: 3)
        if tooSmall { return }
        let hasRef = (m.reference ?? "").isEmpty == false
        if wide {
            timeline = Rect(x: 0, y: 3, width: w, height: 4)
            let bodyTop = 7
            let bodyH = h - 1 - bodyTop
            let rightW = min(44, max(28, w / 3))
            let leftW = w - rightW - 1
            let refH = hasRef ? min(3, max(2, bodyH / 6)) : 0
            let seedH = min(m.seeds.count + m.companions.count + 2, max(3, bodyH - refH - 5))
            let tokH = bodyH - refH - seedH
            tokens = Rect(x: 0, y: bodyTop, width: leftW, height: tokH)
            seeds = Rect(x: 0, y: bodyTop + tokH, width: leftW, height: seedH)
            if hasRef { reference = Rect(x: 0, y: bodyTop + tokH + seedH, width: leftW, height: refH) }
            let noiseH = min(4, max(0, bodyH - 5))
            inspector = Rect(x: leftW + 1, y: bodyTop, width: rightW, height: bodyH - noiseH)
            noise = Rect(x: leftW + 1, y: bodyTop + bodyH - noiseH, width: rightW, height: noiseH)
        } else {
            timeline = Rect(x: 0, y: 3, width: w, height: 3)
            var y = 6
            let avail = h - 1 - y
            // Priorities: tokens ≥ 2 (+ decoded line), inspector 1, seeds ≥ 1, noise 1, reference 1.
            var tokH = 3, insH = 1, seedH = 1, noiseH = 0, refH = 0
            var spare = avail - (tokH + insH + seedH)
            if spare > 0 && hasRef { refH = 1; spare -= 1 }
            if spare > 0 { noiseH = 1; spare -= 1 }
            if spare > 0 { let add = min(spare, m.seeds.count + m.companions.count); seedH += add; spare -= add }
            if spare > 0 { let add = min(spare, 3); insH += add; spare -= add }
            if spare > 0 { tokH += spare; spare = 0 }
            if spare < 0 { tokH = max(1, tokH + spare) }
            tokens = Rect(x: 0, y: y, width: w, height: tokH); y += tokH
            inspector = Rect(x: 0, y: y, width: w, height: insH); y += insH
            if noiseH > 0 { noise = Rect(x: 0, y: y, width: w, height: noiseH); y += noiseH }
            seeds = Rect(x: 0, y: y, width: w, height: seedH); y += seedH
            if refH > 0 { reference = Rect(x: 0, y: y, width: w, height: refH); y += refH }
        }
        if let t = timeline {
            let lab = ExplorerLayout.labelWidth(wide: wide)
            let barY = wide ? t.y + 1 : t.y
            scrubber = Rect(x: lab, y: barY, width: max(1, t.width - lab - ExplorerLayout.valueWidth), height: 1)
        }
    }

    /// Width of the timeline's left labels.
    public static func labelWidth(wide: Bool) -> Int { wide ? 14 : 10 }
    /// Width of the timeline's right values.
    public static let valueWidth = 8

    /// The token grid inside the tokens panel (without header and decoded sentence).
    public var tokenGrid: Rect? {
        guard let r = tokens else { return nil }
        let top = wide ? 1 : 0
        let decodedRows = wide && r.height >= 6 ? 2 : 1
        return Rect(x: r.x + (wide ? 1 : 0), y: r.y + top, width: r.width - (wide ? 1 : 0), height: max(1, r.height - top - decodedRows))
    }
}

/// Maps frames of a run onto the columns of the timeline.
public struct TimelineScale: Equatable {
    /// Number of steps of the run.
    public var count: Int
    /// Number of columns.
    public var columns: Int

    /// Creates a scale.
    public init(count: Int, columns: Int) {
        self.count = max(1, count)
        self.columns = max(1, columns)
    }

    /// Column showing frame `f`.
    public func column(of f: Int) -> Int {
        if count <= 1 { return 0 }
        return min(columns - 1, max(0, Int((Double(f) / Double(count - 1) * Double(columns - 1)).rounded())))
    }

    /// Frames summarised by column `c` (never empty).
    public func frames(ofColumn c: Int) -> Range<Int> {
        if columns <= 1 { return 0..<count }
        let lo = Int((Double(c) - 0.5) / Double(columns - 1) * Double(count - 1) + 0.999_999)
        let hi = Int((Double(c) + 0.5) / Double(columns - 1) * Double(count - 1) + 0.999_999)
        let a = min(max(0, lo), count - 1)
        let b = min(max(a + 1, hi), count)
        return a..<b
    }

    /// The frame a click on column `c` selects.
    public func frame(atColumn c: Int) -> Int {
        if count <= 1 || columns <= 1 { return 0 }
        return min(count - 1, max(0, Int((Double(c) / Double(columns - 1) * Double(count - 1)).rounded())))
    }
}

/// One token placed in the token grid.
public struct TokenPlacement: Equatable {
    /// Sequence position.
    public var position: Int
    /// Column, row and width on screen.
    public var x: Int, y: Int, width: Int
    /// Text shown.
    public var text: String
}

/// Flows the current step's tokens into `rect`, scrolling so the selected position is visible.
public func tokenPlacements(_ m: ExplorerModel, in rect: Rect) -> [TokenPlacement] {
    guard rect.width > 0, rect.height > 0 else { return [] }
    let maxTok = max(3, min(14, rect.width - 1))
    var placed: [TokenPlacement] = []
    var x = 0, row = 0
    var selectedRow = 0
    for p in 0..<m.seqLen {
        guard let id = m.roundedID(position: p) else { break }
        let text: String
        if id == m.backend.padID {
            text = "·"
        } else {
            text = TextWidth.truncate(m.backend.token(id), to: maxTok)
        }
        let w = max(1, TextWidth.width(of: text))
        if x > 0 && x + w > rect.width { x = 0; row += 1 }
        placed.append(TokenPlacement(position: p, x: x, y: row, width: w, text: text))
        if p == m.selected { selectedRow = row }
        x += w + 1
    }
    let first = selectedRow >= rect.height ? selectedRow - rect.height + 1 : 0
    return placed.compactMap { t in
        guard t.y >= first, t.y < first + rect.height else { return nil }
        var t = t
        t.x += rect.x
        t.y = t.y - first + rect.y
        return t
    }
}
