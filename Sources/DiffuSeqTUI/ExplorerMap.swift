// The trajectory map (`t`): a full-screen heat map of every target position (rows) over every step
// (columns, downsampled to the width), with a cursor, an inspector line for the cell under it, and
// Enter to jump the timeline there.
import DiffuSeqCore

/// Where the map's parts go for a terminal size.
public struct MapLayout: Equatable, Sendable {
    /// Label column width (position and token).
    public var labelWidth: Int
    /// The heat-map cells.
    public var grid: Rect
    /// Inspector rows under the grid.
    public var inspector: Rect

    /// Computes the layout for `width`×`height` (title and axis rows on top, three inspector rows and the
    /// status line below).
    public init(width: Int, height: Int) {
        labelWidth = width >= 72 ? 14 : 9
        let gridH = max(1, height - 2 - 3 - 1)
        grid = Rect(x: labelWidth, y: 2, width: max(1, width - labelWidth - 1), height: gridH)
        inspector = Rect(x: 0, y: 2 + gridH, width: width, height: max(0, height - 1 - (2 + gridH)))
    }
}

extension ExplorerModel {
    /// The map's step scale: the run's steps onto the grid's columns.
    var mapScale: TimelineScale {
        TimelineScale(count: max(1, expectedCount), columns: min(max(1, expectedCount), MapLayout(width: width, height: height).grid.width))
    }

    /// Opens the map on the shown step and the selected position.
    mutating func openMap() {
        guard !frames.isEmpty else { notice = "the map opens once the first step is computed"; return }
        mode = .map
        playing = false
        mapStep = step
        mapPosition = targetRange.contains(selected) ? selected : targetRange.lowerBound
    }

    /// Performs an action while the map has focus.
    mutating func performMap(_ action: ExplorerAction) -> [ExplorerEffect] {
        let scale = mapScale
        func column(_ delta: Int) {
            let c = min(max(0, scale.column(of: mapStep) + delta), scale.columns - 1)
            let r = scale.frames(ofColumn: c)
            mapStep = min(max(0, frames.count - 1), r.upperBound - 1)
        }
        switch action {
        case .stepBack: column(-1)
        case .stepForward: column(1)
        case .back10: column(-10)
        case .forward10: column(10)
        case .first: mapStep = 0
        case .last: mapStep = max(0, frames.count - 1)
        case .selectPrevious, .selectNext:
            let r = targetRange
            guard !r.isEmpty else { break }
            let d = action == .selectNext ? 1 : -1
            mapPosition = min(max(r.lowerBound, mapPosition + d), r.upperBound - 1)
        case .mapJump:
            go(to: mapStep)
            selected = mapPosition
            mode = .normal
        case .toggleMap:
            mode = .normal
        default:
            return perform(action)
        }
        return []
    }
}

/// Draws the trajectory map over the whole screen (the status line stays).
public func drawMap(_ m: ExplorerModel, _ buf: inout ScreenBuffer) {
    let layout = MapLayout(width: m.width, height: m.height)
    let g = layout.grid
    buf.fill(Rect(x: 0, y: 0, width: m.width, height: max(0, m.height - 1)))
    let row = m.primaryRow
    let range = m.targetRange
    let grid = TrajectoryGrid(frames: m.frames, row: row, positions: range, padID: m.backend.padID, expectedSteps: m.expectedCount)
    let scale = m.mapScale
    let perCol = Double(scale.count) / Double(scale.columns)
    // Title and axis.
    buf.fill(Rect(x: 0, y: 0, width: m.width, height: 1), style: Style(.title, reverse: true))
    let seed = m.primarySeed.map { "seed \($0)" } ?? ""
    let x = buf.put(" Trajectory map ", x: 0, y: 0, style: Style(.title, bold: true, reverse: true), maxX: m.width)
    var title = "│ \(seed) · positions × steps · \(m.runSampler.rawValue)"
    if m.firstStepIndex > 0 { title += " · \(ExplorerModel.strengthLabel(m.runStartFraction))" }
    buf.put(title, x: x, y: 0, style: Style(.title, reverse: true), maxX: m.width)
    let rowsShown = min(g.height, range.count)
    let cursorK = m.mapPosition - range.lowerBound
    let first = max(0, min(cursorK - rowsShown / 2, range.count - rowsShown))
    let wide = m.width >= 72
    // Steps as the timeline numbers them: an SDEdit run's map starts at its first step.
    let firstShown = m.stepNumber(0), lastShown = m.stepNumber(scale.count - 1)
    var axis = perCol > 1.000_001
        ? (wide ? "steps \(firstShown)–\(lastShown) in \(scale.columns) columns (\(Fmt.fixed(perCol, 1)) steps each)"
                : (firstShown > 1 ? "steps \(firstShown)–\(lastShown), " : "\(scale.count) steps, ") + "\(Fmt.fixed(perCol, 1))/col")
        : (wide ? "steps \(firstShown)–\(lastShown), one column each"
                : (firstShown > 1 ? "steps \(firstShown)–\(lastShown)" : "\(scale.count) steps"))
    if range.count > rowsShown { axis += wide ? " · positions \(first + 1)–\(first + rowsShown) of \(range.count)" : " · \(first + 1)–\(first + rowsShown)/\(range.count)" }
    let axisEnd = 1 + buf.put(TextWidth.truncate(axis, to: m.width - 1), x: 1, y: 1, style: Style(.dim), maxX: m.width)
    // Cells.
    let curCol = scale.column(of: m.mapStep)
    let received = m.frames.count
    for i in 0..<rowsShown {
        let k = first + i
        let p = range.lowerBound + k
        let y = g.y + i
        let isCursorRow = p == m.mapPosition
        let tokID = m.frames.indices.contains(m.mapStep) && grid.ids.indices.contains(m.mapStep) ? Int(grid.ids[m.mapStep][k]) : m.backend.padID
        let label = "\(p)" + " " + (tokID == m.backend.padID ? "·" : m.backend.token(tokID))
        buf.put(TextWidth.truncate(label, to: layout.labelWidth - 1), x: 0, y: y,
                style: Style(isCursorRow ? .accent : .dim, bold: isCursorRow), maxX: layout.labelWidth - 1)
        for c in 0..<scale.columns {
            let r = scale.frames(ofColumn: c)
            guard r.lowerBound < received else { break }
            let hi = min(r.upperBound, received) - 1
            let st = grid.state(k, steps: r)
            let glyph: Character = st == .pad ? "·" : grid.shade(grid.margins[hi][k])
            let isCursor = isCursorRow && c == curCol
            buf.put(glyph, x: g.x + c, y: y, style: Style(st.role, bold: st == .changed, reverse: isCursor))
        }
    }
    if received > 0 && g.x + curCol > axisEnd { buf.put("▼", x: g.x + curCol, y: 1, style: Style(.accent, bold: true)) }
    drawMapInspector(m, &buf, layout.inspector, grid: grid)
}

/// The map's inspector: the token at the cursor (position, step) with its neighbours, and the legend.
func drawMapInspector(_ m: ExplorerModel, _ buf: inout ScreenBuffer, _ r: Rect, grid: TrajectoryGrid) {
    guard r.height > 0 else { return }
    let k = m.mapPosition - m.targetRange.lowerBound
    var y = r.y
    if m.frames.indices.contains(m.mapStep), grid.ids.indices.contains(m.mapStep), grid.positions.indices.contains(k) {
        let f = m.frames[m.mapStep]
        let id = Int(grid.ids[m.mapStep][k])
        let head = "pos \(m.mapPosition) (\(k + 1) of \(m.targetRange.count)) · step \(m.stepNumber(m.mapStep))/\(m.runStepCount) t \(f.t) · "
        let x = 1 + buf.put(head, x: 1, y: y, style: Style(.dim), maxX: r.maxX)
        let x2 = x + buf.put(m.backend.token(id), x: x, y: y, style: Style(grid.state(k, steps: m.mapStep..<(m.mapStep + 1)).role, bold: true), maxX: r.maxX)
        buf.put(" margin \(Fmt.fixed(Double(grid.margins[m.mapStep][k]), 3))", x: x2, y: y, style: Style(.dim), maxX: r.maxX)
        y += 1
        guard y < r.maxY else { return }
        let key = NeighbourKey(step: m.mapStep, position: m.mapPosition, row: m.primaryRow)
        let nn = (m.neighbourCache[key] ?? []).map { "\(m.backend.token($0.id)) \(Fmt.fixed(Double($0.distance), 2))" }
        buf.put(" nn " + (nn.isEmpty ? "–" : nn.joined(separator: "  ")), x: 0, y: y, style: Style(.normal), maxX: r.maxX)
        y += 1
    }
    guard y < r.maxY else { return }
    var x = 1
    for (text, role) in [("■ new", Role.changing), ("■ recent", .settling), ("■ settled", .settled), ("· PAD", .quiet)] {
        x += buf.put(text + " ", x: x, y: y, style: Style(role, bold: role == .changing), maxX: r.maxX)
    }
    buf.put("░▒▓█ margin quartile", x: x, y: y, style: Style(.dim), maxX: r.maxX)
}
