import DiffuSeqCore

/// How the explorer starts: the source sentence, its reference (for dataset examples) and the run settings.
public struct ExplorerConfig: Sendable {
    /// The source sentence sampled first.
    public var source: String
    /// The reference paraphrase when the source is a dataset example; BLEU is shown against it.
    public var reference: String?
    /// Seeds sampled side by side (the first visible one is the primary seed). 1–9 seeds.
    public var seeds: [UInt64]
    /// (seed, sampler, steps) runs beside the main run on the same noise (`--seeds 42:dpm-solver++:20`).
    public var comparisons: [(seed: UInt64, sampler: SamplerKind, steps: Int)] = []
    /// The reverse process.
    public var sampler: SamplerKind
    /// Number of sampling steps (capped at the model's T).
    public var steps: Int
    /// How many nearest vocabulary embeddings the inspector lists.
    public var neighbourCount: Int
    /// Steps advanced per second while playing (the stride adapts so a run plays in about `playSeconds`).
    public var playSeconds: Double
    /// The SDEdit edit strength of the first run, in (0, 1] (`--start-from-source`): 1 starts from pure noise.
    public var startFraction: Double = 1

    /// Creates a configuration.
    public init(source: String, reference: String? = nil, seeds: [UInt64] = [42], sampler: SamplerKind = .ddim,
                steps: Int = 200, neighbourCount: Int = 8, playSeconds: Double = 5, startFraction: Double = 1) {
        self.source = source
        self.reference = reference
        self.seeds = seeds.isEmpty ? [42] : Array(seeds.prefix(9))
        self.sampler = sampler
        self.steps = max(1, steps)
        self.neighbourCount = max(1, neighbourCount)
        self.playSeconds = playSeconds
        self.startFraction = startFraction > 0 ? min(1, startFraction) : 1
    }
}

/// The state of the background sampling run.
public enum RunState: Equatable, Sendable {
    /// Nothing has run yet.
    case idle
    /// Frames are arriving.
    case sampling
    /// The run finished.
    case done
    /// The run was cancelled before it finished.
    case cancelled
    /// The run (or preparing its input) failed with this message.
    case failed(String)
}

/// What has keyboard focus.
public enum ExplorerMode: Equatable, Sendable {
    /// Stepping through the run.
    case normal
    /// The seed panel has focus (`1`–`9`, `+`, `-`).
    case seeds
    /// The source sentence is being edited.
    case editing
    /// The help overlay is open.
    case help
    /// The trajectory map fills the screen (`t`).
    case map
    /// Choosing the token to pin at the selected position (`p`): a neighbour's number or a typed word.
    case pin
}

/// One seed of the seed panel.
public struct SeedSlot: Equatable, Sendable {
    /// The seed value.
    public var seed: UInt64
    /// Whether its sentence is shown (and counts for diversity).
    public var visible: Bool
    /// Creates a slot.
    public init(seed: UInt64, visible: Bool = true) {
        self.seed = seed
        self.visible = visible
    }
}

/// A request to sample, emitted as `ExplorerEffect.startRun`.
public struct RunRequest: Equatable, Sendable {
    /// Run id; frames and completions carry it back so stale runs are ignored.
    public var id: Int
    /// The prepared input.
    public var input: PreparedInput
    /// One batch row per seed.
    public var seeds: [UInt64]
    /// The reverse process.
    public var sampler: SamplerKind
    /// Number of steps.
    public var steps: Int
    /// SDEdit edit strength (`SamplerOptions.startFraction`): 1 from pure noise, F < 1 from the noised source copy
    /// at step `SamplerOptions.sdeditFirstStep(fraction: F, steps:)`. A companion run has the main run's.
    public var startFraction: Double = 1
    /// When set, the run is a fork of an earlier one: it resumes at a step from that step's x_t with pins.
    public var fork: ForkSpec? = nil

    /// Creates a request.
    public init(id: Int, input: PreparedInput, seeds: [UInt64], sampler: SamplerKind, steps: Int, startFraction: Double = 1,
                fork: ForkSpec? = nil) {
        self.id = id
        self.input = input
        self.seeds = seeds
        self.sampler = sampler
        self.steps = steps
        self.startFraction = startFraction
        self.fork = fork
    }
}

/// Where a fork resumes: the step index, that step's input x_t and the pinned positions.
public struct ForkSpec: Equatable, Sendable {
    /// 0-based step index into the run's steps (as `DiffusionFrame.index`).
    public var step: Int
    /// (B, T, D) the x_t that frame `step` had as input.
    public var xt: [Float]
    /// Flat row (b·T + position) → token id held at that token's embedding from `step` on.
    public var pins: [Int: Int]
    /// The frame of step − 1 of the same row, when known: DPM-Solver++(2M) is multistep, and its second-order
    /// update at `step` needs the previous x̂₀ (without it the fork's first update is first order).
    public var previous: DiffusionFrame?
    /// Creates a fork specification.
    public init(step: Int, xt: [Float], pins: [Int: Int], previous: DiffusionFrame? = nil) {
        self.step = step
        self.xt = xt
        self.pins = pins
        self.previous = previous
    }

    public static func == (a: ForkSpec, b: ForkSpec) -> Bool {
        a.step == b.step && a.xt == b.xt && a.pins == b.pins && a.previous?.index == b.previous?.index
            && a.previous?.x0 == b.previous?.x0
    }
}

/// What a companion run compares with the main run.
public enum CompanionKind: Equatable, Sendable {
    /// The same seed (the same x_T noise) with another sampler and step count.
    case sampler(SamplerKind, steps: Int)
    /// The main run forked at `step` (an index into the run's steps, `DiffusionFrame.index`) with `position`
    /// pinned to token `token`.
    case fork(step: Int, position: Int, token: Int)
}

/// A run shown beside the main run on one of its seeds: another sampler on the same noise, or a fork.
public struct Companion: Sendable {
    /// What it compares.
    public var kind: CompanionKind
    /// The seed (its noise stream is the main run's row of that seed).
    public var seed: UInt64
    /// The run id of its frames.
    public var runID: Int
    /// Frames received (x_t and x̂₀ dropped: only tokens and the read-out are shown).
    public var frames: [DiffusionFrame] = []
    /// Run state.
    public var state: RunState = .sampling
    /// Decoded sentences by frame index.
    public var sentences: [Int: String] = [:]
    /// BLEU against the reference by frame index.
    public var bleu: [Int: Double] = [:]

    /// The frame whose t is the nearest to `t` (steps of two samplers aligned by the diffusion time).
    public func frameIndex(alignedTo t: Int) -> Int? {
        guard !frames.isEmpty else { return nil }
        var best = 0
        for (i, f) in frames.enumerated() where abs(f.t - t) < abs(frames[best].t - t) { best = i }
        return best
    }

    /// A short label: "dpm-solver++·20" or "fork@57".
    public var label: String {
        switch kind {
        case .sampler(let k, let n): return "\(k.rawValue)·\(n)"
        case .fork(let step, _, _): return "fork@\(step + 1)"
        }
    }
}

/// Side effects `update` asks the run loop to perform.
public enum ExplorerEffect: Equatable, Sendable {
    /// Start sampling in the background (after cancelling any run in flight).
    case startRun(RunRequest)
    /// Cancel every run in flight.
    case cancelRun
    /// Cancel the run with this id (a companion that was replaced or removed).
    case cancelRunID(Int)
    /// Leave the explorer (the run loop restores the terminal).
    case quit
}

/// Everything that can happen to the explorer.
public enum ExplorerMessage: Sendable {
    /// The explorer opened: prepare the configured source and start the first run.
    case start
    /// A key was pressed.
    case key(Key)
    /// A mouse click at a cell.
    case mouse(x: Int, y: Int)
    /// A play tick (sent periodically while `wantsTicks`).
    case tick
    /// The terminal was resized.
    case resize(width: Int, height: Int)
    /// A frame of run `runID` was computed.
    case frame(runID: Int, DiffusionFrame)
    /// Run `runID` finished.
    case runFinished(runID: Int)
    /// Run `runID` stopped because it was cancelled.
    case runCancelled(runID: Int)
    /// Run `runID` failed.
    case runFailed(runID: Int, message: String)
    /// Derived view data computed by the interpreter (see `pendingDerivations`).
    case derived(DerivedResult)
}

/// Cache key for nearest neighbours.
public struct NeighbourKey: Hashable, Sendable {
    /// Frame index.
    public var step: Int
    /// Sequence position.
    public var position: Int
    /// Batch row.
    public var row: Int
    /// Creates a key.
    public init(step: Int, position: Int, row: Int) {
        self.step = step
        self.position = position
        self.row = row
    }
}

/// Diversity among the visible seeds at the last step.
public struct DiversityStats: Equatable, Sendable {
    /// The batch rows compared, in seed-panel order.
    public var rows: [Int]
    /// Self-BLEU (lower is more diverse).
    public var selfBLEU: Double
    /// Distinct 4-grams ratio.
    public var div4: Double
    /// Batch row of the MBR pick.
    public var mbrRow: Int
}

/// The explorer's whole state (Elm-style model). Derived caches (sentences, neighbours, BLEU, diversity) are
/// filled by the interpreter through `pendingDerivations` → `ExplorerMessage.derived`, so `update` and `view`
/// stay pure: neither calls the engine (only the backend's constant look-ups: token text, PAD id, sizes).
public struct ExplorerModel {
    /// The engine.
    public let backend: any ExplorerBackend
    /// The starting configuration (its source is what "reference" belongs to).
    public let config: ExplorerConfig
    /// Terminal size.
    public var width: Int, height: Int
    /// The current source sentence.
    public var source: String
    /// The reference, while the source is still the dataset example's.
    public var reference: String?
    /// The prepared input of the current run.
    public var input: PreparedInput?
    /// Seed panel.
    public var seeds: [SeedSlot]
    /// Selected sampler and step count (used by the next run).
    public var sampler: SamplerKind
    /// Selected number of steps.
    public var steps: Int
    /// Selected SDEdit edit strength (used by the next run; `d` cycles `startFractionChoices`).
    public var startFraction: Double
    /// Inspector size.
    public var neighbourCount: Int
    /// Keyboard focus.
    public var mode: ExplorerMode = .normal
    /// The map cursor: frame index and sequence position.
    public var mapStep = 0, mapPosition = 0
    /// The help page shown.
    public var helpPage = 0
    /// The mode to return to when help closes.
    public var modeBeforeHelp: ExplorerMode = .normal
    /// Edit buffer (graphemes) and cursor while editing.
    public var editText: [Character] = []
    /// Cursor position in `editText`.
    public var editCursor: Int = 0
    /// True while the field shows the old sentence untouched: the first printable key (or a paste)
    /// replaces it; moving the cursor or editing first keeps it.
    public var editPristine = false
    /// The sentences run in this session, oldest first (↑/↓ in the edit field).
    public var history: [String] = []
    /// Position in `history` while browsing it (nil: the text being typed).
    public var historyIndex: Int?
    /// The text being typed, kept while browsing the history.
    public var historyDraft: [Character] = []
    /// Current run id.
    public var runID: Int = 0
    /// The last run id handed out (main and companion runs share the counter).
    public var lastRunID: Int = 0
    /// The word typed in the pin prompt.
    public var pinText: [Character] = []
    /// Seeds, sampler and steps of the current run.
    public var runSeeds: [UInt64] = []
    /// Sampler of the current run.
    public var runSampler: SamplerKind
    /// Step count of the current run.
    public var runSteps: Int = 0
    /// SDEdit edit strength of the current run (1: from pure noise).
    public var runStartFraction: Double = 1
    /// Run state.
    public var runState: RunState = .idle
    /// Frames received so far. `frames[k]` is the run's step `frames[k].index` = `firstStepIndex + k`: an SDEdit
    /// run starts after step 0. Every frame position in the model (`step`, `mapStep`, the caches' keys, a fork
    /// companion's alignment) is a position in this array; `stepNumber(_:)` gives the step shown to the user and
    /// `frames[k].index` the step the engine knows (a fork's `ForkSpec.step`).
    public var frames: [DiffusionFrame] = []
    /// Per frame, (B·T) ‖x_t‖ and ‖x̂₀‖.
    public var xtNorms: [[Float]] = []
    /// Per frame, (B·T) ‖x̂₀‖.
    public var x0Norms: [[Float]] = []
    /// Per frame, (B·T) the frame index at which each rounded token last changed.
    public var lastChange: [[Int32]] = []
    /// Per frame, per row, how many target tokens changed from the previous frame.
    public var changeCounts: [[Int]] = []
    /// Per frame, per row, whether the decoded target part changed from the previous frame.
    public var outputChanged: [[Bool]] = []
    /// The frame shown.
    public var step: Int = 0
    /// Whether the view follows new frames of a live run.
    public var follow: Bool = true
    /// Whether playing.
    public var playing: Bool = false
    /// Fractional play position (ticks advance it).
    public var playStride: Int = 1
    /// Selected sequence position (absolute index, in the target part).
    public var selected: Int = 0
    /// A transient message for the status line.
    public var notice: String?
    /// Lazily computed neighbours.
    public var neighbourCache: [NeighbourKey: [Neighbour]] = [:]
    /// Decoded sentences per frame, per row.
    public var sentenceCache: [Int: [String]] = [:]
    /// BLEU against the reference per (frame, row).
    public var bleuCache: [NeighbourKey: Double] = [:]
    /// Whether the forward view (`f`) is shown: the reference noised to the current t and rounded.
    public var forwardOpen = false
    /// Forward-view ids (target positions) by frame index.
    public var forwardCache: [Int: [Int]] = [:]
    /// Runs shown beside the main run (another sampler on the same noise, forks with a pinned token).
    public var companions: [Companion] = []
    /// Companion runs asked for with `--seeds SEED:SAMPLER:STEPS` (re-created for every new main run).
    public var companionRequests: [(seed: UInt64, sampler: SamplerKind, steps: Int)] = []
    /// Diversity at the last step for the visible seeds.
    public var diversity: DiversityStats?
    /// Whether `quit` was requested.
    public var quitRequested = false

    /// Creates the model for a backend and configuration in a terminal of `width`×`height`.
    public init(backend: any ExplorerBackend, config: ExplorerConfig, width: Int = 80, height: Int = 24) {
        self.backend = backend
        self.config = config
        self.width = width
        self.height = height
        source = config.source
        reference = config.reference
        seeds = config.seeds.map { SeedSlot(seed: $0) }
        sampler = config.sampler
        runSampler = config.sampler
        startFraction = config.startFraction
        runStartFraction = config.startFraction
        steps = min(config.steps, max(1, backend.diffusionSteps))
        neighbourCount = config.neighbourCount
        companionRequests = config.comparisons
    }

    /// Sequence length T.
    public var seqLen: Int { backend.seqLen }
    /// Length of the source part of the current input.
    public var sourceLength: Int { input?.sourceLength ?? 0 }
    /// The target positions (what the model generates).
    public var targetRange: Range<Int> {
        let lo = min(max(0, sourceLength), seqLen)
        return lo..<max(lo, seqLen)
    }
    /// The frame shown, if any.
    public var currentFrame: DiffusionFrame? { frames.indices.contains(step) ? frames[step] : nil }
    /// All steps of the current run's process (frames' `count`; the step count asked for until a frame arrived).
    public var runStepCount: Int { max(1, frames.last?.count ?? runSteps) }
    /// The run's step (0-based `DiffusionFrame.index`) of the first frame: 0 from pure noise, the SDEdit start
    /// otherwise (known from the first frame; predicted from the run's settings until it arrives).
    public var firstStepIndex: Int {
        frames.first?.index ?? SamplerOptions.sdeditFirstStep(fraction: runStartFraction, steps: runStepCount)
    }
    /// Number of frames of the current run (expected, even before all frames arrived): the steps from
    /// `firstStepIndex` to the last.
    public var expectedCount: Int { max(runStepCount - firstStepIndex, frames.count) }
    /// The 1-based step number shown for frame position `k` (of `runStepCount`).
    public func stepNumber(_ k: Int) -> Int { firstStepIndex + k + 1 }
    /// The run's step index (`DiffusionFrame.index`) of the frame shown (0 before the first frame).
    public var currentStepIndex: Int { currentFrame?.index ?? firstStepIndex }
    /// The edit strengths `d` cycles through: from pure noise, then SDEdit starts at 0.7, 0.5 and 0.3 of the steps.
    public static let startFractionChoices: [Double] = [1.0, 0.7, 0.5, 0.3]
    /// How a start fraction is shown: "from noise" (1) or "edit 0.5".
    public static func strengthLabel(_ f: Double) -> String { f >= 1 ? "from noise" : "edit " + fractionText(f) }
    /// A start fraction without trailing zeros: "0.5", "0.35", "1".
    public static func fractionText(_ f: Double) -> String {
        var s = Fmt.fixed(f, 3)
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return s
    }
    /// Whether the run loop should send ticks.
    public var wantsTicks: Bool { playing }

    /// Batch row of a seed in the current run.
    public func row(ofSeed seed: UInt64) -> Int? { runSeeds.firstIndex(of: seed) }

    /// The batch row shown in the tokens and inspector panels: the first visible seed's.
    public var primaryRow: Int {
        for slot in seeds where slot.visible {
            if let r = row(ofSeed: slot.seed) { return r }
        }
        return 0
    }

    /// The primary seed value.
    public var primarySeed: UInt64? {
        runSeeds.indices.contains(primaryRow) ? runSeeds[primaryRow] : seeds.first?.seed
    }

    /// Batch rows of the visible seeds, in seed-panel order.
    public var visibleRows: [Int] {
        seeds.filter(\.visible).compactMap { row(ofSeed: $0.seed) }
    }

    /// Step counts offered by `<`/`>`: 10, 20, 50 … 2000 capped at T (T itself included).
    public var stepChoices: [Int] {
        let t = max(1, backend.diffusionSteps)
        var c = [10, 20, 50, 100, 200, 500, 1000, 2000].filter { $0 < t }
        c.append(t)
        return c
    }

    /// The frame index where the decoded output of the primary row stopped changing, if it has.
    public var outputSettledAt: Int? {
        guard !frames.isEmpty else { return nil }
        let r = primaryRow
        var last = 0
        for i in outputChanged.indices where outputChanged[i].indices.contains(r) && outputChanged[i][r] { last = i }
        return last
    }

    /// The decoded target sentence of row `row` at frame `step` ("" until the interpreter has decoded it).
    public func sentence(step: Int, row: Int) -> String {
        if let s = sentenceCache[step], s.indices.contains(row) { return s[row] }
        return ""
    }

    /// The rounded token id at `position` of `row` at the current step.
    /// On the source part this is the input id: those positions of x_t are re-anchored to the source
    /// embeddings after every step, so the model's x̂₀ there (which an untrained model gets wrong) is not shown.
    public func roundedID(position: Int, row: Int? = nil) -> Int? {
        if let input, position >= 0, position < min(input.sourceLength, input.ids.count) { return input.ids[position] }
        guard let f = currentFrame else { return input.map { $0.ids.indices.contains(position) ? $0.ids[position] : backend.padID } }
        let r = row ?? primaryRow
        let i = r * f.seqLen + position
        guard position < f.seqLen, r < f.batch, f.rounded.indices.contains(i) else { return nil }
        return Int(f.rounded[i])
    }

    /// The D-vector of `array` (x̂₀ or x_t) at (row, position) of a frame.
    public static func vector(_ array: [Float], frame f: DiffusionFrame, row: Int, position: Int) -> [Float] {
        let lo = (row * f.seqLen + position) * f.dim
        guard lo >= 0, lo + f.dim <= array.count else { return [] }
        return Array(array[lo..<lo + f.dim])
    }
}
