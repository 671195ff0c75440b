import DiffuSeqCore

/// Renders the whole screen for the model (pure: reads only the model and the backend's pure look-ups).
public func view(_ m: ExplorerModel) -> ScreenBuffer {
    var buf = ScreenBuffer(width: m.width, height: m.height)
    let layout = ExplorerLayout(m)
    if layout.tooSmall {
        drawTooSmall(m, &buf)
        return buf
    }
    if m.mode == .map || (m.mode == .help && m.modeBeforeHelp == .map) {
        drawMap(m, &buf)
        drawStatus(m, &buf, layout.status)
        if m.mode == .help { drawHelp(m, &buf) }
        return buf
    }
    drawHeader(m, &buf, layout.header)
    if let r = layout.timeline { drawTimeline(m, &buf, r, wide: layout.wide) }
    if let r = layout.tokens { drawTokens(m, &buf, r, wide: layout.wide) }
    if let r = layout.seeds { drawSeeds(m, &buf, r, wide: layout.wide) }
    if let r = layout.reference { drawReference(m, &buf, r, wide: layout.wide) }
    if let r = layout.inspector { drawInspector(m, &buf, r, wide: layout.wide) }
    if let r = layout.noise { drawNoise(m, &buf, r, wide: layout.wide) }
    if layout.wide, let r = layout.inspector {
        for y in r.y..<(layout.noise?.maxY ?? r.maxY) { buf.put("│", x: r.x - 1, y: y, style: Style(.border)) }
        buf.put("┬", x: r.x - 1, y: r.y, style: Style(.border))
        if let s = layout.seeds { buf.put("┤", x: r.x - 1, y: s.y, style: Style(.border)) }
        if let n = layout.noise, n.height > 0 { buf.put("├", x: r.x - 1, y: n.y, style: Style(.border)) }
    }
    drawStatus(m, &buf, layout.status)
    if m.mode == .help { drawHelp(m, &buf) }
    return buf
}

/// The "terminal too small" message.
public func drawTooSmall(_ m: ExplorerModel, _ buf: inout ScreenBuffer) {
    let need = "terminal too small (need \(explorerMinimumSize.width)×\(explorerMinimumSize.height))"
    let now = "now \(m.width)×\(m.height) · q quits"
    let lines = wrap(need, width: max(1, m.width)) + wrap(now, width: max(1, m.width))
    let top = max(0, (m.height - lines.count) / 2)
    for (i, l) in lines.enumerated() {
        let x = max(0, (m.width - TextWidth.width(of: l)) / 2)
        buf.put(l, x: x, y: top + i, style: Style(i == 0 ? .error : .dim, bold: i == 0))
    }
}

/// A section header line "─ Title ─────".
@discardableResult
func drawSectionHeader(_ buf: inout ScreenBuffer, _ title: String, x: Int, y: Int, width: Int, focused: Bool = false, extra: String = "") -> Int {
    buf.fill(Rect(x: x, y: y, width: width, height: 1), with: "─", style: Style(.border))
    var cx = x + 1
    cx += buf.put(" " + title + " ", x: cx, y: y, style: Style(focused ? .accent : .title, bold: true, reverse: focused), maxX: x + width)
    if !extra.isEmpty {
        cx += 1
        cx += buf.put(" " + extra + " ", x: cx, y: y, style: Style(.dim), maxX: x + width)
    }
    return cx
}

/// Title bar, source sentence (or edit field) and run settings.
public func drawHeader(_ m: ExplorerModel, _ buf: inout ScreenBuffer, _ r: Rect) {
    guard r.height > 0 else { return }
    buf.fill(Rect(x: r.x, y: r.y, width: r.width, height: 1), style: Style(.title, reverse: true))
    var x = r.x + buf.put(" DiffuSeq explorer ", x: r.x, y: r.y, style: Style(.title, bold: true, reverse: true), maxX: r.maxX)
    x += buf.put("│ " + m.backend.modelName, x: x, y: r.y, style: Style(.title, reverse: true), maxX: r.maxX)
    guard r.height > 1 else { return }
    let y = r.y + 1
    let label = "Source "
    let lx = r.x + buf.put(label, x: r.x + 1, y: y, style: Style(m.mode == .editing ? .accent : .dim, bold: m.mode == .editing), maxX: r.maxX) + 1
    let avail = r.maxX - lx - 1
    if m.mode == .pin {
        let prompt = "pin pos \(m.selected) from step \(m.stepNumber(m.step)) to: "
        let px = lx + buf.put(prompt, x: lx, y: y, style: Style(.accent, bold: true), maxX: lx + avail)
        let w = String(m.pinText)
        let tx = px + buf.put(TextWidth.truncate(w, to: max(0, lx + avail - px - 1)), x: px, y: y, style: Style(.normal, bold: true), maxX: lx + avail)
        buf.put(" ", x: tx, y: y, style: Style(.normal, reverse: true), maxX: lx + avail)
    } else if m.mode == .editing {
        // A horizontally scrolling edit field with a reverse-video cursor.
        let chars = m.editText.flatMap { TextWidth.sanitize(String($0)) }
        let cursor = min(m.editCursor, chars.count)
        var widths = chars.map { TextWidth.width(of: $0) }
        widths.append(1)
        var start = 0
        var used = widths[start...cursor].reduce(0, +)
        while used > avail && start < cursor { used -= widths[start]; start += 1 }
        var cx = lx
        for i in start...chars.count {
            let isCursor = i == cursor
            let ch: Character = i < chars.count ? chars[i] : " "
            let w = i < chars.count ? widths[i] : 1
            if cx + w > lx + avail { break }
            cx += buf.put(ch, x: cx, y: y, style: Style(.normal, bold: true, reverse: isCursor), maxX: lx + avail)
        }
    } else {
        buf.put(m.source, x: lx, y: y, style: Style(.normal, bold: true), maxX: lx + avail)
    }
    guard r.height > 2 else { return }
    let strength = ExplorerModel.strengthLabel(m.startFraction)
    var parts = ["sampler \(m.sampler.rawValue)", "\(m.steps) steps of T \(Fmt.grouped(m.backend.diffusionSteps))", strength]
    let staleStrength = m.startFraction != m.runStartFraction ? ", " + ExplorerModel.strengthLabel(m.runStartFraction) : ""
    let stale = (m.sampler != m.runSampler || m.steps != m.runSteps || !staleStrength.isEmpty) && m.runState != .idle
    if stale { parts.append("(showing \(m.runSampler.rawValue), \(m.runSteps)\(staleStrength))") }
    let vis = m.seeds.filter(\.visible).map { String($0.seed) }
    parts.append((vis.count == 1 ? "seed " : "seeds ") + vis.joined(separator: " "))
    parts.append("L \(m.seqLen)")
    if TextWidth.width(of: parts.prefix(3).joined(separator: " · ")) > r.width - 1 {
        // Too narrow to show the edit strength in full: the settings in short form (what follows may be cut).
        parts = ["\(m.sampler.rawValue) \(m.steps)/\(Fmt.grouped(m.backend.diffusionSteps))", strength]
        if stale { parts.append("(showing \(m.runSampler.rawValue) \(m.runSteps)\(staleStrength))") }
        parts += [(vis.count == 1 ? "seed " : "seeds ") + vis.joined(separator: " "), "L \(m.seqLen)"]
    }
    // An SDEdit start stands out: the run does not begin from noise.
    var px = r.x + 1
    for (i, p) in parts.enumerated() {
        if i > 0 { px += buf.put(" · ", x: px, y: r.y + 2, style: Style(.dim), maxX: r.maxX) }
        let edit = p == strength && m.startFraction < 1
        px += buf.put(p, x: px, y: r.y + 2, style: Style(edit ? .accent : .dim, bold: edit), maxX: r.maxX)
    }
}

/// Eight-level sparkline glyph for a value in 0…1.
func sparkGlyph(_ v: Double) -> Character {
    let glyphs: [Character] = ["▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"]
    guard v.isFinite else { return "▁" }
    let i = Int((min(1, max(0, v)) * 7).rounded())
    return glyphs[i]
}

/// Timeline: step counter and scrubber, the noise-level sparkline and the tokens-changed sparkline.
public func drawTimeline(_ m: ExplorerModel, _ buf: inout ScreenBuffer, _ r: Rect, wide: Bool) {
    guard r.height > 0 else { return }
    var y = r.y
    // Where the output stopped changing (shown once at least one later step kept it, or the run is over).
    let settled = m.outputSettledAt.flatMap { $0 < m.frames.count - 1 || m.runState != .sampling ? $0 : nil }
    // An SDEdit run's timeline starts at its first step (the steps before it are not run).
    let first = m.firstStepIndex
    if wide && r.height >= 4 {
        var extra: [String] = []
        if first > 0 { extra.append("starts at step \(first + 1) (\(ExplorerModel.strengthLabel(m.runStartFraction)))") }
        if let s = settled, m.frames.count > 1 {
            extra.append(m.runState == .sampling ? "output unchanged since step \(m.stepNumber(s))"
                                                 : "output settled at step \(m.stepNumber(s)) ┃")
        }
        drawSectionHeader(&buf, "Timeline", x: r.x, y: y, width: r.width, extra: extra.joined(separator: " · "))
        y += 1
    }
    let lab = ExplorerLayout.labelWidth(wide: wide)
    let barX = r.x + lab
    let barW = max(1, r.width - lab - ExplorerLayout.valueWidth)
    let count = max(1, m.expectedCount)
    let scale = TimelineScale(count: count, columns: barW)
    let received = m.frames.count
    let f = m.currentFrame
    // Row 1: step (of all the run's steps) and scrubber (over the frames).
    let total = m.runStepCount
    let stepText = received == 0 ? (first > 0 ? "from \(first + 1)/\(total)" : "step –/\(total)")
                                 : (wide ? "step " : "") + "\(m.stepNumber(m.step))/\(total)"
    buf.put(wide ? " " + stepText : stepText, x: r.x, y: y, style: Style(.accent, bold: true), maxX: barX - 1)
    let cur = scale.column(of: m.step)
    for c in 0..<barW {
        let range = scale.frames(ofColumn: c)
        let have = range.lowerBound < received
        buf.put(have ? "━" : "─", x: barX + c, y: y, style: Style(have ? .spark : .quiet))
    }
    if received > 0 { buf.put(m.playing ? "▶" : "●", x: barX + cur, y: y, style: Style(.accent, bold: true)) }
    if let f { buf.put(" t " + String(f.t), x: barX + barW, y: y, style: Style(.dim), maxX: r.maxX) }
    y += 1
    guard y < r.maxY else { return }
    // Row 2: noise level √(1−ᾱ_t).
    buf.put(wide ? " noise √(1−ᾱ)" : "noise", x: r.x, y: y, style: Style(.dim), maxX: barX - 1)
    for c in 0..<barW {
        let range = scale.frames(ofColumn: c)
        guard range.lowerBound < received else { continue }
        let hi = min(range.upperBound, received)
        var s = 0.0
        for i in range.lowerBound..<hi { s += m.frames[i].noise.sqrtOneMinusAlphaBar }
        let v = s / Double(hi - range.lowerBound)
        buf.put(sparkGlyph(v), x: barX + c, y: y, style: Style(.spark, reverse: c == cur))
    }
    if let f { buf.put(" " + Fmt.fixed(f.noise.sqrtOneMinusAlphaBar, 3), x: barX + barW, y: y, style: Style(.dim), maxX: r.maxX) }
    y += 1
    guard y < r.maxY else { return }
    // Row 3: tokens changed per step (primary row), with the settle mark.
    buf.put(wide ? " changed" : "Δtok", x: r.x, y: y, style: Style(.dim), maxX: barX - 1)
    let row = m.primaryRow
    let counts = m.changeCounts.map { $0.indices.contains(row) ? $0[row] : 0 }
    let maxCount = max(1, counts.max() ?? 1)
    let markCol = settled.map { scale.column(of: $0) }
    for c in 0..<barW {
        let range = scale.frames(ofColumn: c)
        guard range.lowerBound < received else { continue }
        let hi = min(range.upperBound, received)
        let v = counts[range.lowerBound..<hi].max() ?? 0
        if c == markCol && m.frames.count > 1 {
            buf.put("┃", x: barX + c, y: y, style: Style(.mark, bold: true, reverse: c == cur))
        } else {
            let g: Character = v == 0 ? " " : sparkGlyph(Double(v) / Double(maxCount))
            buf.put(g == " " && c == cur ? "·" : g, x: barX + c, y: y, style: Style(.spark, reverse: c == cur))
        }
    }
    if m.frames.indices.contains(m.step), counts.indices.contains(m.step) {
        let v = wide || settled == nil ? " " + String(counts[m.step]) : " ✓" + String(m.stepNumber(settled ?? 0))
        buf.put(v, x: barX + barW, y: y, style: Style(.dim), maxX: r.maxX)
    }
}

/// The role of a token at the current step: source dim, PAD quiet, otherwise by steps since it last changed.
public func tokenRole(_ m: ExplorerModel, position p: Int) -> Role {
    if p < m.sourceLength { return .dim }
    guard let id = m.roundedID(position: p) else { return .quiet }
    guard m.frames.indices.contains(m.step), m.lastChange.indices.contains(m.step) else { return .normal }
    let f = m.frames[m.step]
    let i = m.primaryRow * f.seqLen + p
    guard m.lastChange[m.step].indices.contains(i) else { return .normal }
    let age = m.step - Int(m.lastChange[m.step][i])
    if id == m.backend.padID { return age == 0 && m.step > 0 ? .changing : .quiet }
    let window = max(2, m.expectedCount / 20)
    if age == 0 && m.step > 0 { return .changing }
    if age < window { return .settling }
    return .settled
}

/// Tokens: the rounded token of every position at this step, coloured by how settled it is, and the decoded sentence.
public func drawTokens(_ m: ExplorerModel, _ buf: inout ScreenBuffer, _ r: Rect, wide: Bool) {
    guard r.height > 0 else { return }
    let layout = ExplorerLayout(m)
    var grid = layout.tokenGrid ?? r
    if layout.tokens != r {
        // Drawn into a rectangle of the caller's choosing (widget tests).
        let top = r.height >= 4 ? 1 : 0
        grid = Rect(x: r.x, y: r.y + top, width: r.width, height: max(1, r.height - top - 1))
    }
    if grid.y > r.y {
        let seed = m.primarySeed.map { "seed \($0)" } ?? ""
        var x = drawSectionHeader(&buf, "Tokens", x: r.x, y: r.y, width: r.width, extra: seed)
        let legend: [(String, Role)] = [("▪new", .changing), ("▪recent", .settling), ("▪settled", .settled), ("·=PAD", .quiet)]
        if x + legend.reduce(0, { $0 + 1 + TextWidth.width(of: $1.0) }) + 2 <= r.maxX {
            for (text, role) in legend {
                x += buf.put(" " + text, x: x, y: r.y, style: Style(role, bold: role != .quiet), maxX: r.maxX)
            }
            buf.put(" ", x: x, y: r.y, style: Style(.border), maxX: r.maxX)
        }
    }
    if m.input == nil && m.frames.isEmpty {
        buf.put(m.runState == .idle ? "preparing…" : "no input", x: grid.x, y: grid.y, style: Style(.dim), maxX: grid.maxX)
    } else {
        for t in tokenPlacements(m, in: grid) {
            let sel = t.position == m.selected
            let role = tokenRole(m, position: t.position)
            buf.put(t.text, x: t.x, y: t.y, style: Style(role, bold: sel || role == .changing, reverse: sel), maxX: grid.maxX)
        }
    }
    // Decoded sentence below the grid.
    let dy = grid.maxY
    guard dy < r.maxY else { return }
    let sentence = m.frames.isEmpty ? "" : m.sentence(step: m.step, row: m.primaryRow)
    let lines = wrap(sentence.isEmpty ? (m.frames.isEmpty ? "waiting for the first step…" : "(empty)") : sentence,
                     width: max(1, r.width - 3))
    for (i, l) in lines.prefix(r.maxY - dy).enumerated() {
        if i == 0 { buf.put("→", x: r.x + (wide ? 1 : 0), y: dy, style: Style(.accent, bold: true)) }
        let last = i == r.maxY - dy - 1 && lines.count > r.maxY - dy
        buf.put(last ? TextWidth.truncate(l + " …", to: r.width - 3) : l, x: r.x + (wide ? 3 : 2), y: dy + i,
                style: Style(sentence.isEmpty ? .dim : .normal, bold: true), maxX: r.maxX)
    }
}

/// Inspector: the selected position's nearest vocabulary embeddings at this step, its norms and margin.
public func drawInspector(_ m: ExplorerModel, _ buf: inout ScreenBuffer, _ r: Rect, wide: Bool) {
    guard r.height > 0 else { return }
    let p = m.selected
    let row = m.primaryRow
    let tokID = m.roundedID(position: p)
    let tok = tokID.map { m.backend.token($0) } ?? "–"
    let key = NeighbourKey(step: m.step, position: p, row: row)
    let neighbours = m.neighbourCache[key] ?? []
    var margin: Float?, xt: Float?, x0: Float?
    if let f = m.currentFrame {
        let i = row * f.seqLen + p
        if f.margin.indices.contains(i) { margin = f.margin[i] }
        if m.xtNorms.indices.contains(m.step), m.xtNorms[m.step].indices.contains(i) { xt = m.xtNorms[m.step][i] }
        if m.x0Norms.indices.contains(m.step), m.x0Norms[m.step].indices.contains(i) { x0 = m.x0Norms[m.step][i] }
    }
    func f3(_ v: Float?) -> String { v.map { Fmt.fixed(Double($0), 3) } ?? "–" }
    let pos = "pos \(p) (\(p - m.sourceLength + 1) of \(m.targetRange.count))"
    if !wide || r.height < 4 {
        // Compact: one line per item, as many as fit.
        var items = neighbours.map { "\(TextWidth.truncate(m.backend.token($0.id), to: 10)) \(Fmt.fixed(Double($0.distance), 2))" }
        let head = "#\(p) \(TextWidth.truncate(tok, to: 10)) m \(f3(margin)) ‖x̂₀‖ \(f3(x0)) ‖x_t‖ \(f3(xt))"
        if items.isEmpty { items = ["neighbours appear once the step is computed"] }
        var lines = [head]
        var cur = "nn"
        for it in items {
            if TextWidth.width(of: cur + "  " + it) > r.width - 1 { lines.append(cur); cur = "  " + it } else { cur += "  " + it }
        }
        lines.append(cur)
        if r.height == 1 { lines = [head + " · " + lines.dropFirst().joined(separator: " ")] }
        for (i, l) in lines.prefix(r.height).enumerated() {
            buf.put(l, x: r.x, y: r.y + i, style: Style(i == 0 ? .accent : .dim), maxX: r.maxX)
        }
        return
    }
    drawSectionHeader(&buf, "Position \(p)", x: r.x, y: r.y, width: r.width, extra: "seed \(m.primarySeed.map(String.init) ?? "–")")
    var y = r.y + 1
    buf.put(" " + TextWidth.truncate(tok, to: r.width - 14), x: r.x, y: y, style: Style(tokenRole(m, position: p), bold: true))
    buf.put(pos, x: max(r.x, r.maxX - TextWidth.width(of: pos) - 1), y: y, style: Style(.dim), maxX: r.maxX)
    y += 1
    let statsRows = 2
    let listRows = max(0, r.maxY - y - statsRows)
    if neighbours.isEmpty && listRows > 0 {
        buf.put(" nearest embeddings: –", x: r.x, y: y, style: Style(.quiet), maxX: r.maxX)
    }
    let nameW = max(4, r.width - 16)
    for (i, n) in neighbours.prefix(listRows).enumerated() {
        let isTok = n.id == tokID
        let name = TextWidth.pad(m.backend.token(n.id), to: nameW)
        buf.put(String(i + 1), x: r.x + 1, y: y + i, style: Style(.dim))
        buf.put(name, x: r.x + 3, y: y + i, style: Style(isTok ? .accent : (n.id == m.backend.padID ? .quiet : .normal), bold: isTok))
        buf.put(TextWidth.pad(Fmt.fixed(Double(n.distance), 3), to: 10, alignRight: true), x: r.maxX - 11, y: y + i, style: Style(.dim), maxX: r.maxX)
    }
    y = min(r.maxY - statsRows, y + max(1, min(listRows, neighbours.count)))
    guard y > r.y + 1 else { return }
    buf.put(" ‖x_t‖ \(f3(xt))   ‖x̂₀‖ \(f3(x0))", x: r.x, y: y, style: Style(.normal), maxX: r.maxX)
    buf.put(" margin \(f3(margin))", x: r.x, y: y + 1, style: Style(.normal), maxX: r.maxX)
    if let mg = margin {
        let barW = max(0, r.width - 18)
        let fillN = Int((min(1, max(0, Double(mg) / 2)) * Double(barW)).rounded())
        buf.put(String(repeating: "■", count: fillN), x: r.x + 16, y: y + 1, style: Style(mg < 0.1 ? .changing : (mg < 0.5 ? .settling : .settled)), maxX: r.maxX)
    }
    // With room to spare: the position's token history up to this step.
    y += 2
    guard y + 1 < r.maxY else { return }
    drawSectionHeader(&buf, "History", x: r.x, y: y, width: r.width, extra: "pos \(p), steps it changed")
    var changes: [(Int, Int)] = []
    for i in 0..<max(0, min(m.step + 1, m.frames.count)) {
        let f = m.frames[i]
        let idx = row * f.seqLen + p
        guard f.rounded.indices.contains(idx) else { break }
        let id = Int(f.rounded[idx])
        if changes.last?.1 != id { changes.append((i, id)) }
    }
    let room = r.maxY - y - 1
    for (j, c) in changes.suffix(room).enumerated() {
        let isLast = j == min(room, changes.count) - 1
        buf.put(" " + TextWidth.pad(String(m.stepNumber(c.0)), to: 5, alignRight: true), x: r.x, y: y + 1 + j, style: Style(.dim))
        buf.put(m.backend.token(c.1), x: r.x + 8, y: y + 1 + j, style: Style(isLast ? tokenRole(m, position: p) : .normal, bold: isLast), maxX: r.maxX)
    }
}

/// Noise: β_t, ᾱ_t, √ᾱ_t, √(1−ᾱ_t) and SNR at this step.
public func drawNoise(_ m: ExplorerModel, _ buf: inout ScreenBuffer, _ r: Rect, wide: Bool) {
    guard r.height > 0 else { return }
    guard let f = m.currentFrame else {
        buf.put(wide ? "" : "noise –", x: r.x, y: r.y, style: Style(.quiet), maxX: r.maxX)
        if wide { drawSectionHeader(&buf, "Noise", x: r.x, y: r.y, width: r.width) }
        return
    }
    let n = f.noise
    let items = [("β_t", Fmt.short(n.beta)), ("ᾱ_t", Fmt.short(n.alphaBar)), ("√ᾱ", Fmt.short(n.sqrtAlphaBar)),
                 ("√(1−ᾱ)", Fmt.short(n.sqrtOneMinusAlphaBar)), ("SNR", Fmt.short(n.snr))]
    if !wide || r.height < 3 {
        let s = "noise t \(f.t) " + items.map { "\($0.0) \($0.1)" }.joined(separator: " ")
        buf.put(s, x: r.x, y: r.y, style: Style(.dim), maxX: r.maxX)
        return
    }
    drawSectionHeader(&buf, "Noise", x: r.x, y: r.y, width: r.width, extra: "t \(f.t) of \(f.diffusionSteps)")
    let colW = r.width / 2
    for (i, it) in items.enumerated() {
        let y = r.y + 1 + i / 2
        guard y < r.maxY else { break }
        let x = r.x + (i % 2) * colW
        buf.put(" " + it.0, x: x, y: y, style: Style(.dim), maxX: x + colW)
        buf.put(it.1, x: x + 8, y: y, style: Style(.normal), maxX: x + colW)
    }
}

/// Seeds: each seed's sentence at this step side by side, and diversity with the MBR pick at the last step.
public func drawSeeds(_ m: ExplorerModel, _ buf: inout ScreenBuffer, _ r: Rect, wide: Bool) {
    guard r.height > 0 else { return }
    let focused = m.mode == .seeds
    let atEnd = !m.frames.isEmpty && m.step == m.frames.count - 1 && m.runState == .done
    var summary = ""
    if let d = m.diversity, atEnd {
        summary = "self-BLEU \(Fmt.fixed(d.selfBLEU, 3)) · div-4 \(Fmt.fixed(d.div4, 3)) · MBR ★"
    } else if m.seeds.filter(\.visible).count >= 2 {
        summary = "diversity at the last step"
    }
    if r.height == 1 || !wide && r.height <= m.seeds.count {
        // Compact: one line of seeds, then as many sentences as fit.
        var s = focused ? "Seeds[1-9 +-]" : "Seeds"
        for (i, slot) in m.seeds.enumerated() {
            let row = m.row(ofSeed: slot.seed)
            let star = (m.diversity?.mbrRow == row && atEnd && row != nil) ? "★" : ""
            s += " \(i + 1)\(slot.visible ? "●" : "○")\(slot.seed)\(star)"
        }
        if !summary.isEmpty && m.diversity != nil && atEnd { s += " sB \(Fmt.fixed(m.diversity?.selfBLEU ?? 0, 2)) d4 \(Fmt.fixed(m.diversity?.div4 ?? 0, 2))" }
        if r.height == 1 {
            // No room for their lines: name the companions, and the fork's sentence at this step.
            for c in m.companions {
                s += " ↳" + c.label
                if let i = m.companionFrame(c), let text = c.sentences[i] { s += ": " + text }
            }
        }
        buf.put(s, x: r.x, y: r.y, style: Style(focused ? .accent : .dim, bold: focused), maxX: r.maxX)
        var y = r.y + 1
        for slot in m.seeds where slot.visible {
            guard y < r.maxY, let row = m.row(ofSeed: slot.seed), !m.frames.isEmpty else { break }
            buf.put("\(slot.seed): " + m.sentence(step: m.step, row: row), x: r.x, y: y, style: Style(.normal), maxX: r.maxX)
            y += 1
        }
        for c in m.companions where y < r.maxY {
            drawCompanion(m, c, &buf, x: r.x, y: y, maxX: r.maxX)
            y += 1
        }
        return
    }
    drawSectionHeader(&buf, focused ? "Seeds · 1–9 toggle · + add · - remove · s done" : "Seeds (s)", x: r.x, y: r.y, width: r.width, focused: focused)
    var y = r.y + 1
    let footer = summary.isEmpty ? 0 : 1
    let seedW = max(2, m.seeds.map { String($0.seed).count }.max() ?? 2)
    for (i, slot) in m.seeds.enumerated() {
        guard y < r.maxY - footer else { break }
        let row = m.row(ofSeed: slot.seed)
        let isMBR = atEnd && m.diversity?.mbrRow == row && row != nil && slot.visible
        var x = r.x + 1
        x += buf.put("\(i + 1)", x: x, y: y, style: Style(focused ? .key : .dim, bold: focused))
        x += 1
        x += buf.put(slot.visible ? "●" : "○", x: x, y: y, style: Style(slot.visible ? .accent : .quiet))
        x += 1
        x += buf.put(TextWidth.pad(String(slot.seed), to: seedW), x: x, y: y, style: Style(slot.visible ? .normal : .quiet))
        x += buf.put(isMBR ? " ★ " : "   ", x: x, y: y, style: Style(.good, bold: true))
        let text: String
        if !slot.visible { text = "(hidden)" } else if row == nil || m.frames.isEmpty { text = m.runState == .sampling ? "…" : "–" } else if let row {
            text = m.sentence(step: m.step, row: row)
        } else { text = "–" }
        buf.put(text, x: x, y: y, style: Style(slot.visible ? (row == m.primaryRow ? .normal : .normal) : .quiet, bold: row == m.primaryRow && slot.visible), maxX: r.maxX)
        y += 1
    }
    for c in m.companions where y < r.maxY - footer {
        drawCompanion(m, c, &buf, x: r.x + 1, y: y, maxX: r.maxX)
        y += 1
    }
    if footer == 1 && r.height >= 2 {
        var sy = r.maxY - 1
        if sy < r.y + 1 { sy = r.y + 1 }
        buf.fill(Rect(x: r.x, y: sy, width: r.width, height: 1))
        buf.put(" " + summary, x: r.x, y: sy, style: Style(m.diversity != nil && atEnd ? .good : .quiet), maxX: r.maxX)
    }
}

/// One companion run's line in the seed panel: what it is, its sentence at the aligned step, BLEU.
func drawCompanion(_ m: ExplorerModel, _ c: Companion, _ buf: inout ScreenBuffer, x x0: Int, y: Int, maxX: Int) {
    var label = "↳ \(c.seed) \(c.label)"
    if case .fork(_, let p, let tok) = c.kind { label += " \(p)=\(m.backend.token(tok))" }
    var x = x0 + buf.put(label + " ", x: x0, y: y, style: Style(.accent, bold: true), maxX: maxX)
    let idx = m.companionFrame(c)
    if let i = idx, let f = c.frames.indices.contains(i) ? c.frames[i] : nil {
        if case .sampler = c.kind { x += buf.put("t \(f.t) ", x: x, y: y, style: Style(.dim), maxX: maxX) }
        if let b = c.bleu[i] { x += buf.put("BLEU \(Fmt.fixed(b, 3)) ", x: x, y: y, style: Style(.good, bold: true), maxX: maxX) }
        buf.put(c.sentences[i] ?? "…", x: x, y: y, style: Style(.normal), maxX: maxX)
    } else {
        let why: String
        switch c.state {
        case .failed(let e): why = "failed: " + e
        case .cancelled: why = "cancelled"
        default:
            if case .fork(let s, _, _) = c.kind, m.currentStepIndex < s { why = "(forks at step \(s + 1))" } else { why = "…" }
        }
        buf.put(why, x: x, y: y, style: Style(.dim), maxX: maxX)
    }
}

/// Reference: the dataset example's reference and BLEU of this step's sentence against it.
public func drawReference(_ m: ExplorerModel, _ buf: inout ScreenBuffer, _ r: Rect, wide: Bool) {
    guard r.height > 0, let ref = m.reference, !ref.isEmpty else { return }
    let bleu = m.bleuCache[NeighbourKey(step: m.step, position: -1, row: m.primaryRow)]
    let b = bleu.map { "BLEU \(Fmt.fixed($0, 3))" } ?? "BLEU –"
    let fwd = m.forwardOpen ? forwardLine(m) : nil
    if !wide || r.height == 1 {
        if let fwd, r.height == 1 {
            buf.put(fwd, x: r.x, y: r.y, style: Style(.accent), maxX: r.maxX)
            return
        }
        let x = r.x + buf.put("ref ", x: r.x, y: r.y, style: Style(.dim), maxX: r.maxX)
        let bx = x + buf.put(b, x: x, y: r.y, style: Style(bleu == nil ? .dim : .good, bold: true), maxX: r.maxX)
        buf.put(": " + ref, x: bx, y: r.y, style: Style(.dim), maxX: r.maxX)
        if let fwd, r.height > 1 { buf.put(fwd, x: r.x, y: r.y + 1, style: Style(.accent), maxX: r.maxX) }
        return
    }
    drawSectionHeader(&buf, "Reference", x: r.x, y: r.y, width: r.width, extra: b + " at this step")
    var lines = wrap(ref, width: max(1, r.width - 2))
    if let fwd { lines = Array(lines.prefix(max(0, r.height - 2))) + [fwd] }
    for (i, l) in lines.prefix(r.height - 1).enumerated() {
        buf.put(l, x: r.x + 1, y: r.y + 1 + i, style: Style(fwd != nil && l == fwd ? .accent : .normal), maxX: r.maxX)
    }
}

/// The forward view's line: the reference's tokens as rounding recovers them from q(x_t | x₀) at this
/// step's t, and the fraction that survive.
public func forwardLine(_ m: ExplorerModel) -> String {
    guard let f = m.currentFrame else { return "forward: –" }
    guard let fwd = m.forwardCache[m.step], let ref = m.input?.referenceIDs, fwd.count == ref.count else {
        return "forward q(x_t|x₀) t \(f.t): …"
    }
    var kept = 0, total = 0
    for (a, b) in zip(fwd, ref) where b != m.backend.padID {
        total += 1
        if a == b { kept += 1 }
    }
    let pct = total == 0 ? 0 : Int((Double(kept) / Double(total) * 100).rounded())
    let toks = zip(fwd, ref).compactMap { a, b in b == m.backend.padID ? nil : m.backend.token(a) }
    return "forward t \(f.t): \(pct)% survive · " + toks.joined(separator: " ")
}

/// The status line: run state and key hints (from the key table) or a notice.
public func drawStatus(_ m: ExplorerModel, _ buf: inout ScreenBuffer, _ r: Rect) {
    guard r.height > 0, r.width > 0 else { return }
    buf.fill(r, style: Style(.status, reverse: true))
    let state: (String, Role)
    switch m.runState {
    case .idle: state = ("idle", .status)
    case .sampling: state = ("● sampling \(m.frames.count)/\(max(1, m.expectedCount))…", .accent)
    case .done: state = (m.playing ? "▶ playing" : "✓ done", .good)
    case .cancelled: state = ("✗ cancelled at \(m.frames.count)/\(m.expectedCount)", .error)
    case .failed(let e): state = ("error: " + e, .error)
    }
    var x = r.x + buf.put(" " + state.0 + " ", x: r.x, y: r.y, style: Style(state.1, bold: true, reverse: true), maxX: r.maxX)
    if m.playing, m.runState == .sampling { x += buf.put("▶ ", x: x, y: r.y, style: Style(.status, bold: true, reverse: true), maxX: r.maxX) }
    if let n = m.notice {
        buf.put("│ " + n, x: x, y: r.y, style: Style(.error, bold: true, reverse: true), maxX: r.maxX)
        return
    }
    let ctx: KeyContext
    switch m.mode {
    case .editing: ctx = .editing
    case .seeds: ctx = .seeds
    case .map: ctx = .map
    case .pin: ctx = .pin
    case .normal, .help: ctx = .global
    }
    var hints = explorerKeyTable.filter { $0.context == ctx && !$0.hint.isEmpty }.map { ($0.keyLabel, $0.hint) }
    if m.mode == .help { hints = [("↓↑", "page"), ("other keys", "close help")] }
    if m.mode == .editing && m.editPristine { hints = [("type", "replaces"), ("←→", "keep it")] + hints }
    if ctx == .global {
        // The most useful pairs, shown compactly.
        hints = hints.map { h in
            switch h.1 {
            case "step": return ("←→", "step")
            case "±10": return ("[]", "±10")
            case "pos": return ("↑↓", "pos")
            case "steps": return ("<>", "steps")
            case "play": return ("space", m.playing ? "pause" : "play")
            default: return h
            }
        }
    }
    x += buf.put("│", x: x, y: r.y, style: Style(.status, reverse: true), maxX: r.maxX)
    // Help and quit are always shown, at the right end.
    let pinned = hints.filter { $0.1 == "help" || $0.1 == "quit" }
    let pinnedW = pinned.reduce(0) { $0 + TextWidth.width(of: " \($1.0) \($1.1)") } + 1
    let limit = r.maxX - pinnedW
    for (k, h) in hints where !(pinned.contains { $0 == (k, h) }) {
        let piece = " \(k) \(h)"
        if x + TextWidth.width(of: piece) > limit { break }
        x += buf.put(" " + k, x: x, y: r.y, style: Style(.key, bold: true, reverse: true), maxX: r.maxX)
        x += buf.put(" " + h, x: x, y: r.y, style: Style(.status, reverse: true), maxX: r.maxX)
    }
    x = max(x, limit)
    for (k, h) in pinned {
        x += buf.put(" " + k, x: x, y: r.y, style: Style(.key, bold: true, reverse: true), maxX: r.maxX)
        x += buf.put(" " + h, x: x, y: r.y, style: Style(.status, reverse: true), maxX: r.maxX)
    }
}

/// The help text, generated from `explorerKeyTable`: (keys, text, isHeading) rows grouped by context.
public func helpSections() -> [[(String, String, Bool)]] {
    var out: [[(String, String, Bool)]] = []
    for ctx in KeyContext.allCases {
        var sec: [(String, String, Bool)] = [(ctx.rawValue, "", true)]
        for b in explorerKeyTable where b.context == ctx { sec.append((b.keyLabel, b.help, false)) }
        out.append(sec)
    }
    out.append([("Legend", "", true), ("red", "token changed at this step", false), ("yellow", "changed recently", false),
                ("green", "settled", false), ("·", "[PAD]", false), ("mouse", "click a token, the scrubber, a seed", false)])
    return out
}

/// One line of the help screen: a heading, or a key label with (a wrapped piece of) its text.
public struct HelpLine: Equatable, Sendable {
    /// Key label ("" on continuation lines and headings).
    public var key: String
    /// Text (the heading's title on headings).
    public var text: String
    /// Whether this is a section heading.
    public var heading: Bool
}

/// Where the help screen goes and how its lines are paged (pure, from the terminal size: `update` uses it to
/// page, `view` to draw).
public struct HelpLayout: Equatable, Sendable {
    /// The box (border included).
    public var box: Rect
    /// Width of the key label column.
    public var keyWidth: Int
    /// Columns per page and their width.
    public var columns: Int, columnWidth: Int
    /// Text rows per column.
    public var rows: Int
    /// Pages → columns → lines.
    public var pages: [[[HelpLine]]]

    /// Lays the help out in a `width`×`height` terminal: the box fills the screen between the title and
    /// status rows, texts wrap at word boundaries in their column, and what does not fit goes on further pages.
    public init(width: Int, height: Int) {
        box = Rect(x: 0, y: 1, width: max(0, width), height: max(0, height - 2))
        rows = max(1, box.height - 2)
        let inner = max(1, box.width - 2)
        columns = max(1, min(3, inner / 38))
        columnWidth = inner / columns
        keyWidth = min(12, max(6, columnWidth / 4))
        let textWidth = max(1, columnWidth - keyWidth - 3)
        var flat: [HelpLine] = []
        for sec in helpSections() {
            if !flat.isEmpty { flat.append(HelpLine(key: "", text: "", heading: false)) }
            for (key, text, heading) in sec {
                if heading { flat.append(HelpLine(key: "", text: key, heading: true)); continue }
                for (i, piece) in wrap(text, width: textWidth).enumerated() {
                    flat.append(HelpLine(key: i == 0 ? key : "", text: piece, heading: false))
                }
            }
        }
        // Flow into columns; a column never starts with a blank line nor ends with a heading.
        var cols: [[HelpLine]] = [[]]
        for line in flat {
            if cols[cols.count - 1].count >= rows {
                var carry: [HelpLine] = []
                if let last = cols[cols.count - 1].last, last.heading { carry = [last]; cols[cols.count - 1].removeLast() }
                cols.append(carry)
            }
            if cols[cols.count - 1].isEmpty && line.text.isEmpty && !line.heading { continue }
            cols[cols.count - 1].append(line)
        }
        let per = columns
        pages = stride(from: 0, to: cols.count, by: per).map { Array(cols[$0..<min(cols.count, $0 + per)]) }
    }
}

/// Draws the help screen: a box over the panels with the current page of the key table.
public func drawHelp(_ m: ExplorerModel, _ buf: inout ScreenBuffer) {
    let layout = HelpLayout(width: buf.width, height: buf.height)
    let b = layout.box
    guard b.width >= 12, b.height >= 4 else { return }
    buf.fill(b)
    buf.fill(Rect(x: b.x, y: b.y, width: b.width, height: 1), with: "─", style: Style(.border))
    buf.fill(Rect(x: b.x, y: b.maxY - 1, width: b.width, height: 1), with: "─", style: Style(.border))
    for y in b.y..<b.maxY {
        buf.put("│", x: b.x, y: y, style: Style(.border))
        buf.put("│", x: b.maxX - 1, y: y, style: Style(.border))
    }
    buf.put("┌", x: b.x, y: b.y, style: Style(.border)); buf.put("┐", x: b.maxX - 1, y: b.y, style: Style(.border))
    buf.put("└", x: b.x, y: b.maxY - 1, style: Style(.border)); buf.put("┘", x: b.maxX - 1, y: b.maxY - 1, style: Style(.border))
    let page = min(max(0, m.helpPage), max(0, layout.pages.count - 1))
    buf.put(" Help ", x: b.x + 2, y: b.y, style: Style(.title, bold: true))
    let footer = layout.pages.count > 1
        ? (b.width >= 60 ? " page \(page + 1)/\(layout.pages.count) · ↓ PgDn space: more · ↑ PgUp: back · other keys close "
                         : " \(page + 1)/\(layout.pages.count) ↓↑ page · other: close ")
        : " any key closes "
    let fw = TextWidth.width(of: footer)
    buf.put(footer, x: max(b.x + 1, b.maxX - 1 - fw), y: b.maxY - 1, style: Style(.dim), maxX: b.maxX - 1)
    guard layout.pages.indices.contains(page) else { return }
    for (ci, col) in layout.pages[page].enumerated() {
        let cx = b.x + 1 + ci * layout.columnWidth
        let maxX = min(b.maxX - 1, cx + layout.columnWidth)
        for (i, l) in col.enumerated() {
            let y = b.y + 1 + i
            if l.heading {
                buf.put(" " + l.text, x: cx, y: y, style: Style(.title, bold: true), maxX: maxX)
            } else {
                buf.put(" " + l.key, x: cx, y: y, style: Style(.key, bold: true), maxX: cx + layout.keyWidth + 1)
                buf.put(l.text, x: cx + layout.keyWidth + 2, y: y, style: Style(.normal), maxX: maxX)
            }
        }
    }
}

/// Wraps text at spaces into lines of at most `width` columns (long words are cut).
public func wrap(_ text: String, width: Int) -> [String] {
    guard width > 0 else { return [] }
    var lines: [String] = []
    var cur = ""
    var curW = 0
    for word in text.split(separator: " ", omittingEmptySubsequences: true) {
        var w = String(word)
        var ww = TextWidth.width(of: w)
        while ww > width {
            if curW > 0 { lines.append(cur); cur = ""; curW = 0 }
            let head = TextWidth.truncate(w, to: width)
            let headChars = TextWidth.sanitize(head).dropLast()
            let taken = String(headChars)
            lines.append(taken + "…")
            w = String(TextWidth.sanitize(w).dropFirst(headChars.count))
            ww = TextWidth.width(of: w)
            if headChars.isEmpty { w = ""; ww = 0 }
        }
        if ww == 0 { continue }
        if curW == 0 { cur = w; curW = ww } else if curW + 1 + ww <= width { cur += " " + w; curW += 1 + ww } else {
            lines.append(cur); cur = w; curW = ww
        }
    }
    if curW > 0 || lines.isEmpty { lines.append(cur) }
    return lines
}
