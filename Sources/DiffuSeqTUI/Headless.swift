import DiffuSeqCore

/// One step of a key script.
public enum ScriptStep: Sendable {
    /// A message for `update` (keys, ticks, clicks, resizes).
    case message(ExplorerMessage)
}

/// A key script that could not be parsed.
public struct KeyScriptError: Error, CustomStringConvertible, Equatable {
    /// What was wrong.
    public var description: String
}

/// Parses a key script: comma-separated items, each one of
/// - a key name: `space`, `left`, `right`, `up`, `down`, `home`, `end`, `tab`, `backtab`, `enter`, `esc`,
///   `backspace`, `delete`, `pgup`, `pgdn`, `ctrl-c`, `comma` (a literal `,`);
/// - a single character, typed as is: `q`, `[`, `]`, `?`, `1`, `+`, `<`…;
/// - `text:SOME WORDS` — types the characters (a `\,` inside is a comma, `\\` a backslash);
/// - `paste:SOME WORDS` — a bracketed paste of the text; `ctrl-a` … `ctrl-z`, `alt-b`, `alt-f` (any `alt-X`);
/// - `tick` or `tick:N` — N play ticks; `click:X:Y` — a mouse click at column X, row Y (0-based);
/// - `resize:WxH` — the terminal is resized.
/// Example: `"space,tick:20,space,right,right,[,tab,e,text:Thou shalt,enter,s,2,q"`.
public func parseKeyScript(_ script: String) throws -> [ScriptStep] {
    var items: [String] = []
    var cur = ""
    var escaped = false
    for ch in script {
        if escaped { cur.append(ch); escaped = false; continue }
        if ch == "\\" { escaped = true; continue }
        if ch == "," { items.append(cur); cur = ""; continue }
        cur.append(ch)
    }
    if escaped { cur.append("\\") }
    items.append(cur)
    var steps: [ScriptStep] = []
    for raw in items {
        if raw.isEmpty { continue }
        let lower = raw.lowercased()
        if lower.hasPrefix("text:") {
            for ch in raw.dropFirst(5) { steps.append(.message(.key(.char(ch)))) }
            continue
        }
        if lower.hasPrefix("paste:") {
            steps.append(.message(.key(.paste(String(raw.dropFirst(6))))))
            continue
        }
        if lower != "ctrl-c", lower.count == 6, lower.hasPrefix("ctrl-"), let c = lower.last, c.isLetter {
            steps.append(.message(.key(.ctrl(c))))
            continue
        }
        if lower.count == 5, lower.hasPrefix("alt-"), let c = raw.last {
            steps.append(.message(.key(.alt(c))))
            continue
        }
        if lower.hasPrefix("tick") {
            let n = lower == "tick" ? 1 : Int(lower.dropFirst(5)) ?? -1
            guard n >= 0, lower == "tick" || lower.hasPrefix("tick:") else { throw KeyScriptError(description: "bad tick item '\(raw)' (tick or tick:N)") }
            steps += Array(repeating: .message(.tick), count: n)
            continue
        }
        if lower.hasPrefix("click:") {
            let parts = lower.dropFirst(6).split(separator: ":").compactMap { Int($0) }
            guard parts.count == 2 else { throw KeyScriptError(description: "bad click item '\(raw)' (click:X:Y)") }
            steps.append(.message(.mouse(x: parts[0], y: parts[1])))
            continue
        }
        if lower.hasPrefix("resize:") {
            let parts = lower.dropFirst(7).split(separator: "x").compactMap { Int($0) }
            guard parts.count == 2 else { throw KeyScriptError(description: "bad resize item '\(raw)' (resize:WxH)") }
            steps.append(.message(.resize(width: parts[0], height: parts[1])))
            continue
        }
        let named: [String: Key] = [
            "space": .char(" "), "left": .left, "right": .right, "up": .up, "down": .down, "home": .home, "end": .end,
            "tab": .tab, "backtab": .backTab, "enter": .enter, "return": .enter, "esc": .escape, "escape": .escape,
            "backspace": .backspace, "bksp": .backspace, "delete": .delete, "del": .delete, "pgup": .pageUp,
            "pgdn": .pageDown, "ctrl-c": .ctrlC, "comma": .char(","),
        ]
        if let k = named[lower] { steps.append(.message(.key(k))); continue }
        if raw.count == 1, let c = raw.first { steps.append(.message(.key(.char(c)))); continue }
        throw KeyScriptError(description: "unknown key '\(raw)' in the key script")
    }
    return steps
}

/// The explorer driven synchronously (tests, `--render`, the redraw benchmark): the one interpreter
/// (`ExplorerDriver`) with runs sampled to the end on the calling thread and derived data computed after
/// every message.
public struct HeadlessExplorer {
    /// The interpreter.
    public let driver: ExplorerDriver
    /// The model.
    public var model: ExplorerModel { driver.model }
    /// Whether a `.quit` effect was seen.
    public var quit: Bool { driver.quit }

    /// Creates the driver and starts the first run.
    public init(backend: any ExplorerBackend, config: ExplorerConfig, size: (Int, Int)) {
        driver = ExplorerDriver(model: ExplorerModel(backend: backend, config: config, width: size.0, height: size.1),
                                executor: SynchronousExecutor(), deriveEveryMessage: true)
        driver.send(.start)
    }

    /// Applies a message and performs its effects synchronously.
    public mutating func send(_ msg: ExplorerMessage) { driver.send(msg) }
}

/// Feeds a key script to the run loop, one message per turn, and keeps the last screen.
final class ScriptIO: ExplorerIO {
    private var messages: [ExplorerMessage]
    private var next = 0
    var last: ScreenBuffer?
    init(_ steps: [ScriptStep]) { messages = steps.map { switch $0 { case .message(let m): return m } } }
    func wait(timeoutMs: Int, wakeFD: Int32) {}
    func readMessages(more: inout Bool) -> [ExplorerMessage] {
        more = false
        guard next < messages.count else { return [] }
        next += 1
        return [messages[next - 1]]
    }
    func present(_ screen: ScreenBuffer, driver: ExplorerDriver) { last = screen }
    func shouldStop(_ driver: ExplorerDriver) -> Bool { next >= messages.count && last != nil && !driver.dirty }
    var timedTicks: Bool { false }
}

/// Runs the explorer headlessly: samples synchronously (frames applied immediately), feeds the key script
/// (see `parseKeyScript` for its syntax; processing stops at `q`) and returns the final screen as text,
/// one line per row, trailing spaces trimmed. This is what `diffuseq explore --render WxH --keys "…"` prints.
public func renderHeadless(backend: any ExplorerBackend, config: ExplorerConfig, size: (Int, Int), keys: String) throws -> String {
    let steps = try parseKeyScript(keys)
    let h = HeadlessExplorer(backend: backend, config: config, size: size)
    let io = ScriptIO(steps)
    runExplorerLoop(h.driver, io: io)
    return (io.last ?? h.driver.render()).text
}

/// Timing of key → redraw (update + view + diff), in milliseconds.
public struct RedrawBenchmark: Sendable, CustomStringConvertible {
    /// Number of redraws timed.
    public var iterations: Int
    /// Mean, 95th percentile and worst time in ms.
    public var meanMs: Double, p95Ms: Double, maxMs: Double
    /// Average number of changed cell runs per redraw.
    public var meanRuns: Double
    /// One-line summary.
    public var description: String {
        "key→redraw over \(iterations) keys: mean \(Fmt.fixed(meanMs, 3)) ms, p95 \(Fmt.fixed(p95Ms, 3)) ms, max \(Fmt.fixed(maxMs, 3)) ms (\(Fmt.fixed(meanRuns, 1)) runs/redraw)"
    }
}

/// Measures key → redraw time at `size` for a run of `steps` steps over `seeds` seeds on `backend`
/// (sampled once, synchronously, before timing). Keys cycle through stepping, ±10, selection and play.
public func benchmarkRedraw(backend: any ExplorerBackend, source: String, size: (Int, Int) = (120, 40),
                            seeds: [UInt64] = [1, 2, 3, 4], steps: Int = 200, iterations: Int = 400,
                            mapOpen: Bool = false) -> RedrawBenchmark {
    var h = HeadlessExplorer(backend: backend, config: ExplorerConfig(source: source, seeds: seeds, steps: steps), size: size)
    var keys: [Key] = [.left, .left, .down, .char("["), .up, .right, .tab, .char("]"), .home, .end, .left, .down]
    if mapOpen {
        // The trajectory map over the whole run: the cursor moves over steps and positions.
        h.send(.key(.char("t")))
        keys = [.left, .left, .down, .char("["), .up, .right, .down, .char("]"), .home, .end, .left, .down]
    }
    var prev = view(h.model)
    var times: [Double] = []
    var runs = 0
    let clock = ContinuousClock()
    for i in 0..<max(1, iterations) {
        let k = keys[i % keys.count]
        let start = clock.now
        h.send(.key(k))
        let next = h.driver.render()
        runs += next.diff(from: prev).count
        prev = next
        let d = clock.now - start
        times.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
    }
    let sorted = times.sorted()
    let p95 = sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.95))]
    return RedrawBenchmark(iterations: times.count, meanMs: times.reduce(0, +) / Double(times.count), p95Ms: p95,
                           maxMs: sorted.last ?? 0, meanRuns: Double(runs) / Double(times.count))
}
