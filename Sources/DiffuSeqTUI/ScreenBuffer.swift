// A W×H grid of terminal cells that the pure view draws into and the terminal presents.

/// The semantic colour of a cell; the terminal maps each role to a colour pair.
public enum Role: Int, CaseIterable, Sendable {
    /// Ordinary text.
    case normal
    /// Less important text (labels, source positions).
    case dim
    /// Almost invisible ([PAD], pending parts of the timeline).
    case quiet
    /// Titles and section headers.
    case title
    /// Box and separator lines.
    case border
    /// Highlighted values (selected seed, current step).
    case accent
    /// A token that has not changed for a long time.
    case settled
    /// A token that changed recently.
    case settling
    /// A token that changed at this very step.
    case changing
    /// Sparklines.
    case spark
    /// The "output stopped changing" mark.
    case mark
    /// The status line background.
    case status
    /// Error messages.
    case error
    /// Good news (done, BLEU).
    case good
    /// Key names in hints and help.
    case key
}

/// One terminal cell: a grapheme (or "" for the right half of a wide grapheme) with its style.
public struct Cell: Equatable, Sendable {
    /// The grapheme drawn here; "" when this cell is the continuation of a wide grapheme on its left.
    public var text: String
    /// Display width of `text`: 1 or 2 (0 for a continuation cell).
    public var width: UInt8
    /// Semantic colour.
    public var role: Role
    /// Bold attribute.
    public var bold: Bool
    /// Reverse-video attribute.
    public var reverse: Bool

    /// A blank cell.
    public static let blank = Cell(text: " ", width: 1, role: .normal, bold: false, reverse: false)

    /// Creates a cell.
    public init(text: String, width: UInt8, role: Role, bold: Bool, reverse: Bool) {
        self.text = text
        self.width = width
        self.role = role
        self.bold = bold
        self.reverse = reverse
    }

    /// Whether this cell is the right half of a wide grapheme.
    public var isContinuation: Bool { width == 0 }
}

/// Text style used when writing into a `ScreenBuffer`.
public struct Style: Equatable, Sendable {
    /// Semantic colour.
    public var role: Role
    /// Bold attribute.
    public var bold: Bool
    /// Reverse-video attribute.
    public var reverse: Bool
    /// Creates a style.
    public init(_ role: Role = .normal, bold: Bool = false, reverse: Bool = false) {
        self.role = role
        self.bold = bold
        self.reverse = reverse
    }
}

/// A rectangle of cells.
public struct Rect: Equatable, Sendable {
    /// Left column.
    public var x: Int
    /// Top row.
    public var y: Int
    /// Width in columns.
    public var width: Int
    /// Height in rows.
    public var height: Int
    /// Creates a rectangle.
    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x
        self.y = y
        self.width = max(0, width)
        self.height = max(0, height)
    }
    /// One past the right column.
    public var maxX: Int { x + width }
    /// One past the bottom row.
    public var maxY: Int { y + height }
}

/// A run of changed cells on one row, as produced by `ScreenBuffer.diff(from:)`.
public struct CellRun: Equatable, Sendable {
    /// Row.
    public var y: Int
    /// First column of the run (always the start of a grapheme).
    public var x: Int
    /// The cells of the run, continuation cells included.
    public var cells: [Cell]
    /// Creates a run.
    public init(y: Int, x: Int, cells: [Cell]) {
        self.y = y
        self.x = x
        self.cells = cells
    }
}

/// A W×H grid of cells. Writing never crashes: out-of-range text is clipped, wide graphemes are never split.
public struct ScreenBuffer: Equatable, Sendable {
    /// Width in columns.
    public let width: Int
    /// Height in rows.
    public let height: Int
    /// Row-major cells.
    public private(set) var cells: [Cell]

    /// Creates a blank buffer.
    public init(width: Int, height: Int) {
        self.width = max(0, width)
        self.height = max(0, height)
        cells = Array(repeating: .blank, count: self.width * self.height)
    }

    /// The cell at (x, y); a blank cell when out of range.
    public subscript(x: Int, y: Int) -> Cell {
        guard x >= 0, y >= 0, x < width, y < height else { return .blank }
        return cells[y * width + x]
    }

    /// Clears the cell at (x, y) to a blank with `style`, repairing a wide grapheme it was half of.
    private mutating func clearCell(_ x: Int, _ y: Int, _ style: Style) {
        let i = y * width + x
        let old = cells[i]
        if old.width == 2, x + 1 < width { cells[i + 1] = Cell(text: " ", width: 1, role: style.role, bold: false, reverse: style.reverse) }
        if old.width == 0, x > 0 { cells[i - 1] = Cell(text: " ", width: 1, role: cells[i - 1].role, bold: false, reverse: cells[i - 1].reverse) }
        cells[i] = Cell(text: " ", width: 1, role: style.role, bold: style.bold, reverse: style.reverse)
    }

    /// Writes one grapheme at (x, y); returns the columns used (0 when it did not fit).
    @discardableResult
    public mutating func put(_ ch: Character, x: Int, y: Int, style: Style = Style(), maxX: Int? = nil) -> Int {
        let limit = min(width, maxX ?? width)
        guard y >= 0, y < height, x >= 0, x < limit else { return 0 }
        let w = TextWidth.width(of: ch)
        if w == 0 { return 0 }
        if x + w > limit {
            // A wide grapheme at the edge: fill with a blank instead of splitting it.
            clearCell(x, y, style)
            return 1
        }
        clearCell(x, y, style)
        if w == 2 { clearCell(x + 1, y, style) }
        cells[y * width + x] = Cell(text: String(ch), width: UInt8(w), role: style.role, bold: style.bold, reverse: style.reverse)
        if w == 2 {
            cells[y * width + x + 1] = Cell(text: "", width: 0, role: style.role, bold: style.bold, reverse: style.reverse)
        }
        return w
    }

    /// Writes text at (x, y), clipped at `maxX` (default: the right edge); returns the columns used.
    @discardableResult
    public mutating func put(_ text: String, x: Int, y: Int, style: Style = Style(), maxX: Int? = nil) -> Int {
        var cx = x
        let limit = min(width, maxX ?? width)
        for ch in TextWidth.sanitize(text) {
            if cx >= limit { break }
            if cx < 0 { cx += TextWidth.width(of: ch); continue }
            cx += put(ch, x: cx, y: y, style: style, maxX: limit)
        }
        return max(0, cx - x)
    }

    /// Fills a rectangle with a character (default blank) in `style`.
    public mutating func fill(_ rect: Rect, with ch: Character = " ", style: Style = Style()) {
        for yy in max(0, rect.y)..<min(height, rect.maxY) {
            var xx = max(0, rect.x)
            while xx < min(width, rect.maxX) {
                let used = put(ch, x: xx, y: yy, style: style, maxX: rect.maxX)
                xx += max(1, used)
            }
        }
    }

    /// Applies `style` to existing cells in a rectangle, keeping their text.
    public mutating func restyle(_ rect: Rect, style: Style) {
        for yy in max(0, rect.y)..<min(height, rect.maxY) {
            for xx in max(0, rect.x)..<min(width, rect.maxX) {
                cells[yy * width + xx].role = style.role
                cells[yy * width + xx].bold = style.bold
                cells[yy * width + xx].reverse = style.reverse
            }
        }
    }

    /// Copies another buffer into this one with its top-left corner at (x, y), clipped.
    public mutating func blit(_ other: ScreenBuffer, x: Int, y: Int) {
        for yy in 0..<other.height {
            var xx = 0
            while xx < other.width {
                let c = other[xx, yy]
                if c.isContinuation { xx += 1; continue }
                let ch = c.text.first ?? " "
                put(ch, x: x + xx, y: y + yy, style: Style(c.role, bold: c.bold, reverse: c.reverse), maxX: x + other.width)
                xx += Int(max(1, c.width))
            }
        }
    }

    /// The rows as plain text (continuation cells contribute nothing, so each line is `width` columns wide).
    public var lines: [String] {
        (0..<height).map { y in
            var s = ""
            for x in 0..<width {
                let c = cells[y * width + x]
                if !c.isContinuation { s += c.text }
            }
            return s
        }
    }

    /// The rows joined with newlines, trailing spaces removed from each line.
    public var text: String {
        lines.map { line in
            var l = Substring(line)
            while l.last == " " { l = l.dropLast() }
            return String(l)
        }.joined(separator: "\n")
    }

    /// The runs of cells that differ from `old`; every run starts on a grapheme boundary.
    /// When the sizes differ, every row is one run.
    public func diff(from old: ScreenBuffer?) -> [CellRun] {
        var runs: [CellRun] = []
        let full = old == nil || old?.width != width || old?.height != height
        for y in 0..<height {
            let base = y * width
            if full {
                runs.append(CellRun(y: y, x: 0, cells: Array(cells[base..<base + width])))
                continue
            }
            guard let old else { continue }
            var x = 0
            while x < width {
                if cells[base + x] == old.cells[base + x] { x += 1; continue }
                var start = x
                if cells[base + start].isContinuation && start > 0 { start -= 1 }
                var end = x
                while end < width && cells[base + end] != old.cells[base + end] { end += 1 }
                // Never end inside a wide grapheme.
                if end < width && cells[base + end].isContinuation { end += 1 }
                runs.append(CellRun(y: y, x: start, cells: Array(cells[base + start..<base + end])))
                x = end
            }
        }
        return runs
    }
}
