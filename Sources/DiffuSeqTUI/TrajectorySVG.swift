// `diffuseq trace --svg FILE`: the trajectory map as a standalone SVG (no dependency; plain text). One
// row per target position, one column per step; cells coloured like the explorer's tokens (red changed
// at this step, yellow recent, green settled, grey PAD), lighter where the rounding margin is small;
// each run of an unchanged token is labelled with the token where it fits; the final sentence below.

/// Writes the trajectory map of a run as SVG text.
public enum TrajectorySVG {
    /// Fill colours of the cell states (the explorer's terminal colours).
    static func colour(_ s: CellState) -> String {
        switch s {
        case .changed: return "#d62728"
        case .recent: return "#e6b000"
        case .settled: return "#2ca02c"
        case .pad: return "#d9d9d9"
        }
    }

    /// Escapes text for XML.
    static func escape(_ s: String) -> String {
        var out = ""
        for ch in s {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default:
                // Control characters are not allowed in XML 1.0.
                if let a = ch.asciiValue, a < 32 { out += " " } else { out.append(ch) }
            }
        }
        return out
    }

    /// The SVG of `grid`: `token` names ids, `title` goes on top, `sentence` under the map.
    /// Steps are downsampled to at most `maxColumns` columns (the title says so).
    public static func render(grid: TrajectoryGrid, token: (Int) -> String, title: String, sentence: String,
                              maxColumns: Int = 400) -> String {
        let scale = TimelineScale(count: max(1, grid.steps), columns: min(max(1, grid.steps), max(1, maxColumns)))
        let cols = scale.columns
        let cellW = max(3.0, min(12.0, 900.0 / Double(cols)))
        let cellH = 16.0, labelW = 130.0, top = 46.0
        let mapW = Double(cols) * cellW
        let width = labelW + mapW + 20
        let height = top + Double(grid.positions.count) * cellH + 70
        func f(_ v: Double) -> String { Fmt.fixed(v, 1) }
        var s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(f(width))\" height=\"\(f(height))\" "
        s += "viewBox=\"0 0 \(f(width)) \(f(height))\" font-family=\"DejaVu Sans Mono, monospace\" font-size=\"11\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
        s += "<text x=\"8\" y=\"18\" font-size=\"13\" font-weight=\"bold\">\(escape(title))</text>\n"
        let perCol = Double(scale.count) / Double(cols)
        let axis = perCol > 1.000_001 ? "steps 1–\(scale.count) → (\(Fmt.fixed(perCol, 1)) steps per column)" : "steps 1–\(scale.count) →"
        s += "<text x=\"\(f(labelW))\" y=\"36\" fill=\"#555\">\(escape(axis))</text>\n"
        let last = grid.steps - 1
        for (k, p) in grid.positions.enumerated() {
            let y = top + Double(k) * cellH
            let finalID = last >= 0 ? Int(grid.ids[last][k]) : grid.padID
            let label = "\(p) " + (finalID == grid.padID ? "·" : token(finalID))
            s += "<text x=\"4\" y=\"\(f(y + 12))\" fill=\"#333\">\(escape(String(label.prefix(18))))</text>\n"
            var c = 0
            while c < cols {
                let r = scale.frames(ofColumn: c)
                guard r.lowerBound < grid.steps else { break }
                let st = grid.state(k, steps: r)
                let hi = min(r.upperBound, grid.steps) - 1
                let m = grid.margins[hi][k]
                let opacity = st == .pad ? 1.0 : [0.35, 0.55, 0.8, 1.0][min(3, grid.marginLevel(m))]
                let x = labelW + Double(c) * cellW
                s += "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(cellW))\" height=\"\(f(cellH - 1))\" fill=\"\(colour(st))\" "
                s += "fill-opacity=\"\(Fmt.fixed(opacity, 2))\"/>\n"
                c += 1
            }
            // Label each run of one token with the token, where the run is wide enough for it.
            var start = 0
            while start < cols {
                let r0 = scale.frames(ofColumn: start)
                guard r0.lowerBound < grid.steps else { break }
                let id = grid.ids[min(r0.upperBound, grid.steps) - 1][k]
                var end = start + 1
                while end < cols {
                    let r = scale.frames(ofColumn: end)
                    guard r.lowerBound < grid.steps, grid.ids[min(r.upperBound, grid.steps) - 1][k] == id else { break }
                    end += 1
                }
                let text = Int(id) == grid.padID ? "" : token(Int(id))
                let runW = Double(end - start) * cellW
                if !text.isEmpty && Double(text.count) * 6.8 + 4 <= runW {
                    s += "<text x=\"\(f(labelW + Double(start) * cellW + 2))\" y=\"\(f(y + 12))\" fill=\"#000\">\(escape(text))</text>\n"
                }
                start = end
            }
        }
        let legendY = top + Double(grid.positions.count) * cellH + 18
        var lx = labelW
        for (name, st) in [("changed at this step", CellState.changed), ("recent", .recent), ("settled", .settled), ("PAD", .pad)] {
            s += "<rect x=\"\(f(lx))\" y=\"\(f(legendY - 10))\" width=\"10\" height=\"10\" fill=\"\(colour(st))\"/>"
            s += "<text x=\"\(f(lx + 14))\" y=\"\(f(legendY))\">\(escape(name))</text>\n"
            lx += 14 + Double(name.count) * 6.8 + 16
        }
        s += "<text x=\"\(f(lx))\" y=\"\(f(legendY))\" fill=\"#555\">lighter = smaller rounding margin (quartiles of the run)</text>\n"
        s += "<text x=\"8\" y=\"\(f(legendY + 26))\" font-size=\"13\">final: \(escape(sentence))</text>\n"
        s += "</svg>\n"
        return s
    }
}
