import DiffuSeqCore

/// The explorer's transition function: applies one message to the model and returns the effects to run.
public func update(_ m: inout ExplorerModel, _ msg: ExplorerMessage) -> [ExplorerEffect] {
    var effects: [ExplorerEffect] = []
    switch msg {
    case .start:
        effects += m.prepareAndRun(source: m.source)
    case .key(let key):
        effects += m.handleKey(key)
    case .mouse(let x, let y):
        m.handleClick(x: x, y: y)
    case .tick:
        m.advancePlay()
    case .resize(let w, let h):
        m.width = max(0, w)
        m.height = max(0, h)
    case .frame(let id, let frame):
        if id == m.runID { m.receive(frame) } else if let i = m.companionIndex(runID: id) {
            var f = frame
            f.xt = []
            f.x0 = []
            m.companions[i].frames.append(f)
        }
    case .runFinished(let id):
        if id == m.runID {
            m.runState = .done
            if m.follow { m.step = max(0, m.frames.count - 1) }
        } else if let i = m.companionIndex(runID: id) { m.companions[i].state = .done }
    case .runCancelled(let id):
        if id == m.runID { m.runState = .cancelled } else if let i = m.companionIndex(runID: id) { m.companions[i].state = .cancelled }
    case .runFailed(let id, let message):
        if id == m.runID {
            m.runState = .failed(message)
            m.playing = false
        } else if let i = m.companionIndex(runID: id) {
            m.companions[i].state = .failed(message)
            m.notice = "\(m.companions[i].label) failed: \(message)"
        }
    case .derived(let d):
        m.merge(d)
    }
    return effects
}

extension ExplorerModel {
    /// Prepares `source` and starts a run; on a tokenizer error the state shows it.
    mutating func prepareAndRun(source text: String) -> [ExplorerEffect] {
        let ref = text == config.source ? config.reference : nil
        do {
            let prepared = try backend.prepare(source: text, reference: ref)
            source = text
            reference = prepared.reference ?? ref
            input = prepared
            if history.last != text { history.append(text) }
            if !targetRange.contains(selected) { selected = targetRange.lowerBound }
            let effects = startRun()
            if let w = prepared.warning {
                notice = w
            } else if prepared.droppedSourceTokens > 0 {
                notice = "source too long: its last \(prepared.droppedSourceTokens) tokens were cut to fit L = \(seqLen)"
            }
            return effects
        } catch {
            notice = "cannot prepare the source: \(error)"
            runState = .failed("\(error)")
            return []
        }
    }

    /// Cancels what is in flight and starts a new run with the current input, seeds, sampler and steps.
    mutating func startRun() -> [ExplorerEffect] {
        guard let input else { return [] }
        lastRunID += 1
        runID = lastRunID
        companions = []
        runSeeds = seeds.map(\.seed)
        runSampler = sampler
        runSteps = steps
        runStartFraction = startFraction
        runState = .sampling
        frames = []
        xtNorms = []
        x0Norms = []
        lastChange = []
        changeCounts = []
        outputChanged = []
        step = 0
        follow = true
        playing = false
        neighbourCache = [:]
        forwardCache = [:]
        sentenceCache = [:]
        bleuCache = [:]
        diversity = nil
        var effects: [ExplorerEffect] = [.cancelRun, .startRun(RunRequest(id: runID, input: input, seeds: runSeeds, sampler: sampler, steps: steps,
                                                                          startFraction: startFraction))]
        for c in companionRequests where runSeeds.contains(c.seed) {
            effects += startCompanion(.sampler(c.sampler, steps: min(c.steps, max(1, backend.diffusionSteps))), seed: c.seed)
        }
        return effects
    }

    /// Starts a companion run beside the main one (replacing a companion of the same kind: same sampler, or a fork).
    mutating func startCompanion(_ kind: CompanionKind, seed: UInt64, fork: ForkSpec? = nil) -> [ExplorerEffect] {
        guard let input else { return [] }
        lastRunID += 1
        let c = Companion(kind: kind, seed: seed, runID: lastRunID)
        let sameSlot = companions.firstIndex { old in
            switch (old.kind, kind) {
            case (.fork, .fork): return true
            case (.sampler, .sampler): return old.seed == seed
            default: return false
            }
        }
        var effects: [ExplorerEffect] = []
        if let i = sameSlot {
            effects.append(.cancelRunID(companions[i].runID))
            companions[i] = c
        } else {
            companions.append(c)
        }
        // The main run's start: a comparison starts at the same fraction of its own steps, a fork resumes the run.
        var r = RunRequest(id: c.runID, input: input, seeds: [seed], sampler: runSampler, steps: runSteps,
                           startFraction: runStartFraction, fork: fork)
        if case .sampler(let k, let n) = kind { r.sampler = k; r.steps = n }
        return effects + [.startRun(r)]
    }

    /// Stores a new frame and its derived per-step statistics.
    mutating func receive(_ frame: DiffusionFrame) {
        var f = frame
        let n = f.batch * f.seqLen
        func norms(_ a: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: n)
            guard f.dim > 0, a.count >= n * f.dim else { return out }
            for i in 0..<n {
                var s: Float = 0
                for d in 0..<f.dim { let v = a[i * f.dim + d]; s += v * v }
                out[i] = s.squareRoot()
            }
            return out
        }
        xtNorms.append(norms(f.xt))
        x0Norms.append(norms(f.x0))
        // x_t is kept: a fork (`p`) resumes from the input of the step it forks at.
        let idx = frames.count
        var lc = [Int32](repeating: Int32(idx), count: n)
        var counts = [Int](repeating: 0, count: f.batch)
        var outChanged = [Bool](repeating: true, count: f.batch)
        let lo = min(sourceLength, f.seqLen)
        if let prev = frames.last, prev.batch == f.batch, prev.seqLen == f.seqLen,
           prev.rounded.count >= n, f.rounded.count >= n, let prevLC = lastChange.last {
            for b in 0..<f.batch {
                var c = 0
                var changed = false
                for p in 0..<f.seqLen {
                    let i = b * f.seqLen + p
                    if prev.rounded[i] == f.rounded[i] { lc[i] = prevLC[i] } else if p >= lo { c += 1 }
                    if p >= lo, prev.decoded.count > i, f.decoded.count > i, prev.decoded[i] != f.decoded[i] { changed = true }
                }
                counts[b] = c
                outChanged[b] = changed
            }
        } else {
            for b in 0..<f.batch { counts[b] = f.seqLen - lo }
        }
        frames.append(f)
        lastChange.append(lc)
        changeCounts.append(counts)
        outputChanged.append(outChanged)
        if follow && !playing { step = frames.count - 1 }
    }

    /// Moves to frame `s` (clamped); leaves follow mode unless it is the last frame of a live run.
    mutating func go(to s: Int) {
        let last = max(0, frames.count - 1)
        step = min(max(0, s), last)
        follow = false
    }

    /// One play tick.
    mutating func advancePlay() {
        guard playing else { return }
        let stride = max(1, expectedCount / max(1, Int(config.playSeconds * 30)))
        let last = max(0, frames.count - 1)
        step = min(step + stride, last)
        follow = false
        if step >= last && runState != .sampling { playing = false }
    }

    mutating func handleKey(_ key: Key) -> [ExplorerEffect] {
        notice = nil
        switch mode {
        case .help:
            let pages = HelpLayout(width: width, height: height).pages.count
            switch key {
            case .pageDown, .down, .char(" "): helpPage = min(helpPage + 1, max(0, pages - 1)); return []
            case .pageUp, .up: helpPage = max(0, helpPage - 1); return []
            default: break
            }
            mode = modeBeforeHelp
            if key == .char("q") || key == .ctrlC { return perform(.quit) }
            return []
        case .editing:
            return handleEditKey(key)
        case .map:
            if key == .ctrlC { return perform(.quit) }
            if let a = explorerAction(for: key, in: .map) { return performMap(a) }
            return []
        case .pin:
            return handlePinKey(key)
        case .seeds:
            if key == .ctrlC { return perform(.quit) }
            if let a = explorerAction(for: key, in: .seeds) {
                if a == .toggleSeed, case .char(let c) = key, let n = c.wholeNumberValue { toggleSeed(n); return [] }
                return perform(a)
            }
            return []
        case .normal:
            if let a = explorerAction(for: key, in: .global) { return perform(a) }
            if case .char(let c) = key, c.wholeNumberValue != nil || c == "+" || c == "-" {
                notice = "press s to focus the seed panel first"
            }
            return []
        }
    }

    /// Performs a key-table action.
    mutating func perform(_ action: ExplorerAction) -> [ExplorerEffect] {
        switch action {
        case .playPause:
            if playing {
                playing = false
            } else {
                if step >= frames.count - 1 && runState != .sampling { step = 0 }
                playing = !frames.isEmpty
                follow = false
            }
        case .stepBack: playing = false; go(to: step - 1)
        case .stepForward: playing = false; go(to: step + 1)
        case .back10: playing = false; go(to: step - 10)
        case .forward10: playing = false; go(to: step + 10)
        case .first: playing = false; go(to: 0)
        case .last:
            playing = false
            go(to: frames.count - 1)
            follow = true
        case .selectPrevious, .selectNext:
            let r = targetRange
            guard !r.isEmpty else { break }
            var s = r.contains(selected) ? selected : r.lowerBound
            if action == .selectNext { s = s + 1 >= r.upperBound ? r.lowerBound : s + 1 } else { s = s - 1 < r.lowerBound ? r.upperBound - 1 : s - 1 }
            selected = s
        case .edit:
            mode = .editing
            playing = false
            editText = Array(source)
            editCursor = editText.count
            editPristine = true
            historyIndex = nil
        case .seedFocus:
            mode = mode == .seeds ? .normal : .seeds
        case .toggleSeed:
            break
        case .addSeed:
            guard seeds.count < 9 else { notice = "at most 9 seeds"; break }
            var next = (seeds.map(\.seed).max() ?? 0) &+ 1
            while seeds.contains(where: { $0.seed == next }) { next &+= 1 }
            seeds.append(SeedSlot(seed: next))
            return startRun()
        case .removeSeed:
            guard seeds.count > 1 else { notice = "at least one seed is needed"; break }
            seeds.removeLast()
            if !seeds.contains(where: \.visible), !seeds.isEmpty { seeds[0].visible = true }
            diversity = nil
        case .cycleSampler:
            let order: [SamplerKind] = [.ddpm, .ddim, .dpmSolver, .ddimOfficial]
            let i = order.firstIndex(of: sampler) ?? 0
            sampler = order[(i + 1) % order.count]
            return startRun()
        case .fewerSteps, .moreSteps:
            let choices = stepChoices
            let next = action == .fewerSteps ? choices.last(where: { $0 < steps }) : choices.first(where: { $0 > steps })
            guard let next, next != steps else {
                notice = action == .fewerSteps ? "fewest steps already" : "at most T = \(backend.diffusionSteps) steps"
                break
            }
            steps = next
            return startRun()
        case .cycleStrength:
            let choices = ExplorerModel.startFractionChoices
            startFraction = choices.first { $0 < startFraction - 1e-9 } ?? choices[0]
            let effects = startRun()
            let first = SamplerOptions.sdeditFirstStep(fraction: startFraction, steps: runSteps)
            notice = startFraction >= 1
                ? "edit strength 1: from pure noise, all \(runSteps) steps"
                : "edit strength \(ExplorerModel.fractionText(startFraction)): from the source, noised to step \(first + 1) of \(runSteps)"
            return effects
        case .toggleForward:
            guard let ids = input?.referenceIDs, !ids.isEmpty, reference != nil else {
                notice = "the forward view needs a reference (--data-dir … --index i)"
                break
            }
            forwardOpen.toggle()
        case .toggleMap:
            if mode == .map { mode = .normal } else { openMap() }
        case .pin:
            guard let f = currentFrame, targetRange.contains(selected), !f.xt.isEmpty else {
                notice = "pinning needs a computed step and a target position"
                break
            }
            mode = .pin
            playing = false
            pinText = []
        case .unpin:
            guard companions.contains(where: { if case .fork = $0.kind { return true } else { return false } }) else {
                notice = "nothing is pinned"
                break
            }
            let forks = companions.filter { if case .fork = $0.kind { return true } else { return false } }
            companions.removeAll { if case .fork = $0.kind { return true } else { return false } }
            return forks.map { .cancelRunID($0.runID) }
        case .compare:
            return cycleComparison()
        case .clearComparisons:
            companionRequests = []
            let gone = companions.filter { if case .sampler = $0.kind { return true } else { return false } }
            companions.removeAll { if case .sampler = $0.kind { return true } else { return false } }
            return gone.map { .cancelRunID($0.runID) }
        case .mapJump:
            break
        case .help:
            modeBeforeHelp = mode
            mode = .help
            helpPage = 0
        case .quit:
            quitRequested = true
            playing = false
            return [.cancelRun, .quit]
        }
        return []
    }

    /// Shows or hides seed `n` (1-based); at least one seed stays visible.
    mutating func toggleSeed(_ n: Int) {
        guard n >= 1, n <= seeds.count else { notice = "no seed \(n) (add one with +)"; return }
        if seeds[n - 1].visible && seeds.filter(\.visible).count == 1 {
            notice = "at least one seed stays visible"
            return
        }
        seeds[n - 1].visible.toggle()
        diversity = nil
    }

    /// The longest source the edit field holds (characters); longer input is cut with a notice.
    static let maxEditLength = 1000

    mutating func handleEditKey(_ key: Key) -> [ExplorerEffect] {
        let pristine = editPristine
        editPristine = false
        switch key {
        case .escape:
            mode = .normal
        case .ctrlC:
            return perform(.quit)
        case .enter:
            let text = String(editText)
            if text.trimmingSpaces.isEmpty { notice = "the source is empty"; return [] }
            let effects = prepareAndRun(source: text)
            if !effects.isEmpty { mode = .normal }
            return effects
        case .left: editCursor = max(0, editCursor - 1)
        case .right: editCursor = min(editText.count, editCursor + 1)
        case .home, .ctrl("a"): editCursor = 0
        case .end, .ctrl("e"): editCursor = editText.count
        case .backspace:
            if editCursor > 0 { editText.remove(at: editCursor - 1); editCursor -= 1 }
        case .delete, .ctrl("d"):
            if editCursor < editText.count { editText.remove(at: editCursor) }
        case .ctrl("u"):
            editText.removeSubrange(0..<editCursor)
            editCursor = 0
        case .ctrl("k"):
            editText.removeSubrange(editCursor..<editText.count)
        case .ctrl("w"):
            let start = wordStart(before: editCursor)
            editText.removeSubrange(start..<editCursor)
            editCursor = start
        case .alt("b"): editCursor = wordStart(before: editCursor)
        case .alt("f"): editCursor = wordEnd(after: editCursor)
        case .up, .down:
            browseHistory(older: key == .up)
        case .char(let c):
            insert([c], replacing: pristine)
        case .paste(let text):
            // Newlines and tabs of a pasted sentence become spaces (the source is one line).
            insert(text.map { $0.isNewline || $0 == "\t" ? " " : $0 }, replacing: pristine)
        default:
            editPristine = pristine
        }
        return []
    }

    /// Inserts characters at the cursor (replacing the whole field first when asked), up to `maxEditLength`.
    mutating func insert(_ chars: [Character], replacing: Bool) {
        if replacing { editText = []; editCursor = 0 }
        let room = ExplorerModel.maxEditLength - editText.count
        let taken = chars.prefix(max(0, room))
        if taken.count < chars.count {
            notice = "the source is limited to \(ExplorerModel.maxEditLength) characters; \(chars.count - taken.count) were not inserted"
        }
        editText.insert(contentsOf: taken, at: min(editCursor, editText.count))
        editCursor += taken.count
    }

    /// ↑ (older) / ↓ (newer) through the sentences run this session; below the newest is the draft.
    mutating func browseHistory(older: Bool) {
        guard !history.isEmpty else { notice = "no earlier sentences in this session"; return }
        var i: Int
        if let h = historyIndex { i = older ? h - 1 : h + 1 } else {
            guard older else { return }
            historyDraft = editText
            i = history.count - 1
        }
        i = max(0, i)
        if i >= history.count {
            historyIndex = nil
            editText = historyDraft
        } else {
            historyIndex = i
            editText = Array(history[i])
        }
        editCursor = editText.count
    }

    /// Start of the word before `i` (shell Ctrl-W / Alt-B: skip spaces, then the word).
    func wordStart(before i: Int) -> Int {
        var j = min(i, editText.count)
        while j > 0 && editText[j - 1].isWhitespace { j -= 1 }
        while j > 0 && !editText[j - 1].isWhitespace { j -= 1 }
        return j
    }

    /// End of the word after `i` (Alt-F: skip spaces, then the word).
    func wordEnd(after i: Int) -> Int {
        var j = max(0, i)
        while j < editText.count && editText[j].isWhitespace { j += 1 }
        while j < editText.count && !editText[j].isWhitespace { j += 1 }
        return j
    }

    /// Keys of the pin prompt: a digit picks that neighbour, a typed word + Enter picks its token, Esc cancels.
    mutating func handlePinKey(_ key: Key) -> [ExplorerEffect] {
        switch key {
        case .escape: mode = .normal
        case .ctrlC: return perform(.quit)
        case .backspace: if !pinText.isEmpty { pinText.removeLast() }
        case .char(let c) where pinText.isEmpty && c.wholeNumberValue != nil:
            let n = c.wholeNumberValue ?? 0
            let nn = neighbourCache[NeighbourKey(step: step, position: selected, row: primaryRow)] ?? []
            guard n >= 1, n <= nn.count else { notice = "no neighbour \(n) listed"; return [] }
            return pin(token: nn[n - 1].id)
        case .char(let c): if pinText.count < 100 { pinText.append(c) }
        case .paste(let t): pinText += Array(t.prefix(max(0, 100 - pinText.count)))
        case .enter:
            let word = String(pinText).trimmingSpaces
            guard !word.isEmpty else { notice = "type a word or press a neighbour's number"; return [] }
            guard let id = backend.tokenID(word) else { notice = "\"\(word)\" is not one token of the vocabulary"; return [] }
            return pin(token: id)
        default: break
        }
        return []
    }

    /// Forks the primary seed's run at the current step with the selected position pinned to `token`.
    mutating func pin(token: Int) -> [ExplorerEffect] {
        mode = .normal
        guard let f = currentFrame, let seed = primarySeed else { return [] }
        let row = primaryRow, t = f.seqLen, d = f.dim
        guard row < f.batch, f.xt.count >= (row + 1) * t * d else { notice = "this step has no x_t to fork from"; return [] }
        let xt = Array(f.xt[(row * t * d)..<((row + 1) * t * d)])
        // The engine's step is the frame's index (after an SDEdit start it is not the position in `frames`).
        let previous = step > 0 && frames.indices.contains(step - 1) ? frames[step - 1].row(row) : nil
        let spec = ForkSpec(step: f.index, xt: xt, pins: [selected: token], previous: previous)
        notice = "pinned \(backend.token(token)) at position \(selected) from step \(f.index + 1); forking…"
        return startCompanion(.fork(step: f.index, position: selected, token: token), seed: seed, fork: spec)
    }

    /// Adds, or moves to the next sampler, a comparison of the primary seed on the same noise.
    mutating func cycleComparison() -> [ExplorerEffect] {
        guard let seed = primarySeed, input != nil else { return [] }
        let order: [SamplerKind] = [.dpmSolver, .ddim, .ddpm, .ddimOfficial]
        let current = companionRequests.first { $0.seed == seed }?.sampler
        let candidates = order.filter { $0 != runSampler }
        let next = current.flatMap { c in candidates.firstIndex(of: c).map { candidates[($0 + 1) % candidates.count] } } ?? candidates[0]
        let defaults: [SamplerKind: Int] = [.dpmSolver: 20, .ddim: 50]
        let n = min(defaults[next] ?? runSteps, max(1, backend.diffusionSteps))
        companionRequests.removeAll { $0.seed == seed }
        companionRequests.append((seed, next, n))
        return startCompanion(.sampler(next, steps: n), seed: seed)
    }

    /// Index of the companion run with this id.
    func companionIndex(runID id: Int) -> Int? { companions.firstIndex { $0.runID == id } }

    mutating func handleClick(x: Int, y: Int) {
        guard mode != .help, mode != .editing else { return }
        if mode == .map {
            // A click on a cell moves the map cursor there.
            let g = MapLayout(width: width, height: height).grid
            let scale = mapScale
            guard x >= g.x, x < g.x + scale.columns, y >= g.y, y < g.maxY else { return }
            let r = targetRange
            let rowsShown = min(g.height, r.count)
            let first = max(0, min(mapPosition - r.lowerBound - rowsShown / 2, r.count - rowsShown))
            let k = first + y - g.y
            guard k < r.count else { return }
            mapPosition = r.lowerBound + k
            mapStep = min(max(0, frames.count - 1), scale.frames(ofColumn: x - g.x).upperBound - 1)
            return
        }
        let layout = ExplorerLayout(self)
        if let r = layout.scrubber, y == r.y, x >= r.x, x < r.maxX, r.width > 1 {
            let s = TimelineScale(count: expectedCount, columns: r.width).frame(atColumn: x - r.x)
            playing = false
            go(to: s)
            return
        }
        if let r = layout.tokenGrid {
            for t in tokenPlacements(self, in: r) where t.y == y && x >= t.x && x < t.x + t.width {
                if targetRange.contains(t.position) { selected = t.position }
                return
            }
        }
        if let r = layout.seeds, y > r.y, y < r.maxY {
            let n = y - r.y
            if n >= 1 && n <= seeds.count { toggleSeed(n) }
        }
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s = s.dropFirst() }
        while s.last?.isWhitespace == true { s = s.dropLast() }
        return String(s)
    }
}
