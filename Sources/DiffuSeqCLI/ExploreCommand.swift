import ArgumentParser
import DiffuSeqCore
import DiffuSeqResources
import DiffuSeqTUI
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `diffuseq explore`: the interactive terminal explorer of a reverse-diffusion run on the real engine.
struct ExploreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explore",
        abstract: "Watch a paraphrase emerge from noise, step by step, in the terminal.",
        discussion: """
        Samples the source with one batch row per seed and lets you play, pause, step and scrub through the \
        reverse diffusion; inspect any target position (rounded token, rounding margin, ‖x_t‖, ‖x̂₀‖, the nearest \
        vocabulary embeddings); edit the source and re-run (Enter); compare seeds (self-BLEU, div-4, MBR pick); \
        switch sampler (m), step count (< >) and edit strength (d: an SDEdit start from the source, as \
        --start-from-source). Press ? for all keys.

        Source: --text "…", or --data-dir DIR [--split test] --index i (its reference is shown with BLEU), \
        default the first test example of the built-in kjv2modern data (or "\(ExploreCommand.fallbackSource)").

        Without a terminal use --render WxH [--keys "…"]: the explorer runs headless (each run sampled to the end \
        at once), the keys are applied and the final screen is printed as text. Keys are comma-separated: key \
        names (space left right up down home end tab backtab enter esc backspace delete pgup pgdn comma), single \
        characters (q [ ] ? e s m < > 1 + …), ctrl-a … ctrl-z, alt-b, alt-f, text:WORDS (typed), paste:WORDS (a \
        bracketed paste), tick[:N], click:X:Y, resize:WxH. \
        Example: --render 80x24 --keys "home,],],down,down".
        """)

    static let fallbackSource = "Thou shalt not steal."

    @OptionGroup var model: ModelOptions
    @OptionGroup var precision: PrecisionOption

    @Option(name: .long, help: "The source sentence.") var text: String?
    @Option(name: .long, help: "Folder with train/valid/test.jsonl: explore one of its examples (see --index).") var dataDir: String?
    @Option(name: .long, help: "Split to read from --data-dir.") var split: String = "test"
    @Option(name: .long, help: "0-based example index in --data-dir's split.") var index: Int?
    @Option(name: .long, help: "Seeds sampled side by side, comma-separated (1–9 of them); SEED:SAMPLER:STEPS adds a comparison of that seed with another sampler on the same noise (e.g. 42,42:dpm-solver++:20).") var seeds: String = "42"
    @Option(name: .long, help: "Sampler: ddpm, ddim, dpm-solver++, ddim-official.") var sampler: String = "ddpm"
    @Option(name: .long, help: "Sampling steps (default 200, capped at the model's diffusion steps T).") var steps: Int?
    @Option(name: .long, help: ArgumentHelp("SDEdit edit strength F in (0, 1] of the first run: start at the fraction F of the steps from the noised source copy (1 = from pure noise); d cycles 1, 0.7, 0.5, 0.3.", valueName: "F"))
    var startFromSource: Double = 1
    @Option(name: .long, help: "Nearest embeddings listed by the inspector.") var neighbours: Int = 8
    @Option(name: .long, help: ArgumentHelp("Render headless at this size and print the final screen as text.", valueName: "WxH"))
    var render: String?
    @Option(name: .long, help: "Key script applied before printing (with --render).") var keys: String?
    @Flag(name: .customLong("no-mouse"), help: "Do not capture the mouse (lets the terminal select text).") var noMouse = false
    @Flag(name: .long, help: .hidden) var measure = false

    func run() throws {
        try runReporting {
            try precision.apply()
            installCompute(latencyForBatchOne: true)  // batch-1 products on OpenBLAS: keep its workers awake between them
            let kind = try parseSampler(sampler)
            let plain = seeds.split(separator: ",").filter { !$0.contains(":") }.joined(separator: ",")
            let comparisons = try parseComparisons(seeds)
            let seedList = try parseSeeds(plain.isEmpty ? comparisons.first.map { String($0.seed) } ?? "" : plain)
            guard seedList.count <= 9 else { throw CLIError("--seeds: at most 9 seeds (got \(seedList.count))") }
            if let s = steps, s < 1 { throw CLIError("--steps must be at least 1") }
            guard neighbours >= 1 else { throw CLIError("--neighbours must be at least 1") }
            guard startFromSource > 0 && startFromSource <= 1 else { throw CLIError("--start-from-source must be in (0, 1], not \(startFromSource)") }
            if text != nil && dataDir != nil { throw CLIError("pass either --text or --data-dir, not both") }
            if index != nil && dataDir == nil { throw CLIError("--index needs --data-dir") }
            if keys != nil && render == nil { throw CLIError("--keys needs --render WxH") }
            var size: (Int, Int)?
            if let r = render {
                size = try parseSize(r)
                _ = try parseKeyScriptReporting(keys ?? "")
            } else if !measure {
                guard isatty(STDOUT_FILENO) == 1, isatty(STDIN_FILENO) == 1 else {
                    throw CLIError("explore is interactive but \(isatty(STDOUT_FILENO) == 1 ? "stdin" : "stdout") is not a terminal; use --render WxH [--keys \"…\"] to print a screen as text")
                }
            }
            let (source, reference) = try chooseSource()
            let loaded = try model.load()
            let backend = try EngineBackend(loaded)
            if let s = steps, s > backend.diffusionSteps {
                eprint("note: --steps \(s) capped at the model's T = \(backend.diffusionSteps)")
            }
            let n = min(steps ?? 200, backend.diffusionSteps)
            var config = ExplorerConfig(source: source, reference: reference, seeds: seedList, sampler: kind,
                                        steps: n, neighbourCount: neighbours, startFraction: startFromSource)
            config.comparisons = comparisons.map { ($0.seed, $0.sampler, min($0.steps, backend.diffusionSteps)) }
            if let bad = comparisons.first(where: { !seedList.contains($0.seed) }) {
                throw CLIError("--seeds: the comparison \(bad.seed):\(bad.sampler.rawValue):\(bad.steps) needs seed \(bad.seed) among the seeds")
            }
            if measure {
                let m = measureExplorerDetailed(backend: backend, source: source, steps: n)
                print("\(backend.modelName): \(m.redraw)")
                print(String(format: "Enter→first frame %.1f ms · Enter→last frame %.1f ms (%ld steps, 1 seed, 120×40)",
                             m.firstFrameMs, m.lastFrameMs, m.frames))
                return
            }
            if let size {
                let screen: String
                do {
                    screen = try renderHeadless(backend: backend, config: config, size: size, keys: keys ?? "")
                } catch let e as KeyScriptError {
                    throw CLIError("--keys: \(e.description)")
                }
                print(screen)
                return
            }
            let status = try runExplorer(backend: backend, config: config, mouse: !noMouse)
            if status != 0 { throw ExitCode(status) }
        }
    }

    /// The source and reference to start with.
    func chooseSource() throws -> (String, String?) {
        if let t = text {
            guard !PythonText.strip(t).isEmpty else { throw CLIError("--text is empty") }
            return (t, nil)
        }
        if let d = dataDir {
            let file = URL(fileURLWithPath: d).appendingPathComponent(split + ".jsonl")
            let pairs = try Seq2SeqDataset.readPairs(file: file).pairs
            let i = index ?? 0
            guard i >= 0, i < pairs.count else {
                throw CLIError("--index \(i) is out of range: \(file.path) has \(pairs.count) examples (0…\(pairs.count - 1))")
            }
            return (pairs[i].src, pairs[i].trg)
        }
        if let url = BundledResources.url("data/kjv2modern/test.jsonl"),
           let first = try? Seq2SeqDataset.readPairs(file: url, skipBadLines: true).pairs.first {
            return (first.src, first.trg)
        }
        return (Self.fallbackSource, nil)
    }
}

/// Parses a sampler name.
func parseSampler(_ s: String) throws -> SamplerKind {
    guard let k = SamplerKind(rawValue: s) else {
        throw CLIError("--sampler must be one of \(SamplerKind.allCases.map(\.rawValue).joined(separator: ", ")), not \"\(s)\"")
    }
    return k
}

/// Parses "1,2,3" into distinct seeds.
func parseSeeds(_ s: String) throws -> [UInt64] {
    var out: [UInt64] = []
    for part in s.split(separator: ",", omittingEmptySubsequences: false) {
        let p = part.trimmingCharacters(in: .whitespaces)
        guard let v = UInt64(p) else { throw CLIError("--seeds: \"\(p)\" is not a non-negative integer") }
        guard !out.contains(v) else { throw CLIError("--seeds: \(v) is listed twice") }
        out.append(v)
    }
    guard !out.isEmpty else { throw CLIError("--seeds is empty") }
    return out
}

/// Parses the SEED:SAMPLER:STEPS entries of --seeds (plain seeds are skipped).
func parseComparisons(_ s: String) throws -> [(seed: UInt64, sampler: SamplerKind, steps: Int)] {
    var out: [(seed: UInt64, sampler: SamplerKind, steps: Int)] = []
    for part in s.split(separator: ",") where part.contains(":") {
        let f = part.split(separator: ":", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard f.count == 3, let seed = UInt64(f[0]), let n = Int(f[2]), n >= 1 else {
            throw CLIError("--seeds: \"\(part)\" is not SEED:SAMPLER:STEPS (e.g. 42:dpm-solver++:20)")
        }
        guard let k = SamplerKind(rawValue: f[1]) else {
            throw CLIError("--seeds: \"\(part)\": sampler must be one of \(SamplerKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        out.append((seed, k, n))
    }
    return out
}

/// Parses "WxH" for --render.
func parseSize(_ s: String) throws -> (Int, Int) {
    let parts = s.lowercased().split(separator: "x", omittingEmptySubsequences: false)
    guard parts.count == 2, let w = Int(parts[0]), let h = Int(parts[1]) else {
        throw CLIError("--render: \"\(s)\" is not a size like 80x24")
    }
    guard (1...1000).contains(w), (1...500).contains(h) else {
        throw CLIError("--render: \(w)x\(h) is out of range (width 1–1000, height 1–500)")
    }
    return (w, h)
}

/// Parses a key script, turning its error into a CLI error.
func parseKeyScriptReporting(_ s: String) throws -> [ScriptStep] {
    do { return try parseKeyScript(s) } catch let e as KeyScriptError { throw CLIError("--keys: \(e.description)") }
}

// MARK: - Measurements (called by `diffuseq bench explore`)

/// Explorer latencies on a backend (`explore --measure`, `bench explore`), in milliseconds: the mean key →
/// redraw (update + view + diff) at 120×40 with 4 seeds over a finished run (`benchmarkRedraw`, 400 keys),
/// and from pressing Enter on an edited source (a live paraphrase of `steps` steps, sampled on a background
/// thread exactly as the interactive run loop does) to the first / last frame being applied and the screen
/// rebuilt.
struct ExplorerMeasurement {
    var redraw: RedrawBenchmark
    /// Key → redraw with the trajectory map open over the whole run.
    var mapRedraw: RedrawBenchmark
    /// Positions and steps the map covers.
    var mapPositions = 0, mapSteps = 0
    var firstFrameMs: Double
    var lastFrameMs: Double
    var frames: Int
    /// Time the UI thread spent applying frames and drawing during the live run.
    var uiBusyMs: Double
    /// Every live run (the fields above are their medians).
    var runs: [LiveRunMeasurement] = []
}

func measureExplorerDetailed(backend: any ExplorerBackend, source: String? = nil, steps: Int = 200,
                             seeds: [UInt64] = [1, 2, 3, 4], liveSeeds: [UInt64] = [42], repeats: Int = 1) -> ExplorerMeasurement {
    let src = source ?? ExploreCommand.fallbackSource
    let n = min(max(1, steps), max(1, backend.diffusionSteps))
    let redraw = benchmarkRedraw(backend: backend, source: src, size: (120, 40), seeds: seeds, steps: n)
    let mapRedraw = benchmarkRedraw(backend: backend, source: src, size: (120, 40), seeds: seeds, steps: n, mapOpen: true)
    let mapPositions = (try? backend.prepare(source: src, reference: nil)).map { backend.seqLen - $0.sourceLength } ?? 0
    var runs: [LiveRunMeasurement] = []
    for r in 0..<max(1, repeats) {
        // A different edit each time, so no run repeats the previous source.
        runs.append(measureLiveRun(backend: backend, source: src, edit: " again" + String(repeating: "!", count: r),
                                   steps: n, seeds: liveSeeds))
    }
    func med(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        return s.isEmpty ? .nan : (s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2)
    }
    return ExplorerMeasurement(redraw: redraw, mapRedraw: mapRedraw, mapPositions: mapPositions, mapSteps: n, firstFrameMs: med(runs.map(\.firstFrameMs)), lastFrameMs: med(runs.map(\.lastFrameMs)),
                               frames: runs.last?.frames ?? 0, uiBusyMs: med(runs.map(\.uiBusyMs)), runs: runs)
}

/// One live paraphrase, timed from Enter.
struct LiveRunMeasurement {
    var firstFrameMs: Double
    var lastFrameMs: Double
    var frames: Int
    var uiBusyMs: Double
}

/// Times a live run through the explorer's run loop: no input, every screen built as the terminal would
/// get it; stops once the run has ended and its last screen is drawn.
final class MeasureIO: ExplorerIO {
    let clock = ContinuousClock()
    let t0: ContinuousClock.Instant
    var first: Double?, last: Double?
    init(t0: ContinuousClock.Instant) { self.t0 = t0 }
    func wait(timeoutMs: Int, wakeFD: Int32) {
        var p = pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)
        _ = poll(&p, wakeFD >= 0 ? 1 : 0, Int32(max(0, timeoutMs)))
    }
    func readMessages(more: inout Bool) -> [ExplorerMessage] { more = false; return [] }
    func present(_ screen: ScreenBuffer, driver: ExplorerDriver) {
        let d = clock.now - t0
        let now = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
        let m = driver.model
        if first == nil && !m.frames.isEmpty { first = now }
        if last == nil && m.expectedCount > 0 && m.frames.count >= m.expectedCount { last = now }
    }
    func shouldStop(_ driver: ExplorerDriver) -> Bool { driver.model.runState != .sampling && !driver.dirty }
    var timedTicks: Bool { true }
}

/// Opens the explorer without running, edits the source, presses Enter, and runs the explorer's run loop
/// (`runExplorerLoop`, as the terminal does; no keys are pressed) until the run ends.
func measureLiveRun(backend: any ExplorerBackend, source src: String, edit: String, steps n: Int, seeds liveSeeds: [UInt64]) -> LiveRunMeasurement {
    let model = ExplorerModel(backend: backend, config: ExplorerConfig(source: src, seeds: liveSeeds, steps: n),
                              width: 120, height: 40)
    let driver = ExplorerDriver(model: model, executor: ThreadedExecutor(), deriveEveryMessage: false)
    driver.send(.key(.char("e")))
    for ch in edit { driver.send(.key(.char(ch))) }
    _ = driver.render()
    let clock = ContinuousClock()
    let t0 = clock.now
    driver.send(.key(.enter))
    let io = MeasureIO(t0: t0)
    let stats = runExplorerLoop(driver, io: io)
    driver.shutdown(waitSeconds: 5)
    let busy = Double(stats.busy.components.seconds) * 1000 + Double(stats.busy.components.attoseconds) / 1e15
    return LiveRunMeasurement(firstFrameMs: io.first ?? .nan, lastFrameMs: io.last ?? .nan,
                              frames: driver.model.frames.count, uiBusyMs: busy)
}
