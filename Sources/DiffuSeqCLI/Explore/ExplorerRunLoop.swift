import DiffuSeqCore
import DiffuSeqTUI
import Foundation

/// Messages posted from the sampling thread, drained by the run loop (lock-protected). A push also
/// makes `wakeFD` readable, so the run loop can sleep in poll(2) on the terminal and this queue at once
/// instead of polling on a timer.
///
/// Sendable (unchecked): `items` and `signalled` are only touched under `lock`; the pipe fds are set in init.
final class MessageQueue: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [ExplorerMessage] = []
    private var signalled = false
    private var fds: [Int32] = [-1, -1]

    init() {
        if pipe(&fds) == 0 {
            for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        } else {
            fds = [-1, -1]  // no pipe: the run loop still wakes on its timeout
        }
    }

    deinit { for fd in fds where fd >= 0 { close(fd) } }

    /// Readable while messages are waiting (−1 when no pipe could be made).
    var wakeFD: Int32 { fds[0] }

    private var lastWake = ContinuousClock.now

    /// Appends a message (any thread). The reader is woken for messages `RedrawPolicy` wants shown at once,
    /// and otherwise at most once per redraw interval (its poll timeout picks up the rest): a wake-up per
    /// frame would take a core from the sampling run 100 times a second for frames that are not drawn.
    func push(_ m: ExplorerMessage) {
        let now = ContinuousClock.now
        lock.lock()
        items.append(m)
        let wake = !signalled && (RedrawPolicy.isUrgent(m) || now - lastWake >= RedrawPolicy.interval)
        if wake { signalled = true; lastWake = now }
        lock.unlock()
        if wake && fds[1] >= 0 {
            var byte: UInt8 = 1
            _ = write(fds[1], &byte, 1)
        }
    }

    /// Takes every queued message (run-loop thread).
    func drain() -> [ExplorerMessage] {
        lock.lock()
        defer { lock.unlock() }
        if signalled && fds[0] >= 0 {
            var sink = [UInt8](repeating: 0, count: 64)
            while read(fds[0], &sink, sink.count) > 0 {}
        }
        signalled = false
        let out = items
        items.removeAll(keepingCapacity: true)
        return out
    }

    /// Sleeps until a message is waiting or `timeoutMs` passes (for loops without a terminal).
    func wait(timeoutMs: Int) {
        guard fds[0] >= 0 else { usleep(useconds_t(max(0, timeoutMs)) * 1000); return }
        var p = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
        _ = poll(&p, 1, Int32(max(0, timeoutMs)))
    }
}

/// When the screen is redrawn while a run streams frames (shared by the run loop and `bench explore`):
/// a key, the first and the last frame of a run and its end are drawn at once; other frames are applied
/// as they arrive but drawn at most every `interval`, so drawing never takes a core from sampling.
enum RedrawPolicy {
    /// Minimum time between two draws caused by streaming frames alone.
    static let interval = Duration.milliseconds(33)

    /// Whether a message must be shown without waiting for `interval`.
    static func isUrgent(_ m: ExplorerMessage) -> Bool {
        switch m {
        case .frame(_, let f): return f.index == 0 || f.index == f.count - 1
        case .tick: return false
        default: return true
        }
    }
}

/// A cancellation flag shared with a sampling thread.
///
/// Sendable (unchecked): `value` is only read and written under `lock`.
final class CancelFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    /// Whether cancellation was requested.
    var isSet: Bool {
        lock.lock()
        defer { lock.unlock() }
        return value
    }
    /// Requests cancellation.
    func set() {
        lock.lock()
        value = true
        lock.unlock()
    }
}

/// One background sampling run.
///
/// Sendable (unchecked): all stored properties are `let`s of thread-safe types (CancelFlag, DispatchSemaphore).
final class SamplingWorker: @unchecked Sendable {
    let id: Int
    let cancel = CancelFlag()
    let finished = DispatchSemaphore(value: 0)

    init(request r: RunRequest, backend: any ExplorerBackend, queue: MessageQueue) {
        id = r.id
        let cancel = self.cancel
        let finished = self.finished
        let thread = Thread {
            do {
                try backend.sample(r.input, seeds: r.seeds, sampler: r.sampler, steps: r.steps,
                                   isCancelled: { cancel.isSet },
                                   onFrame: { queue.push(.frame(runID: r.id, $0)) })
                queue.push(cancel.isSet ? .runCancelled(runID: r.id) : .runFinished(runID: r.id))
            } catch {
                queue.push(.runFailed(runID: r.id, message: "\(error)"))
            }
            finished.signal()
        }
        thread.stackSize = 16 << 20
        thread.name = "diffuseq-sample-\(r.id)"
        thread.start()
    }
}

/// The interactive explorer: polls input with a timeout, applies frames arriving from the sampling thread,
/// ticks while playing and presents the view after every change.
final class ExplorerRunLoop {
    private let terminal: CursesTerminal
    private var model: ExplorerModel
    private let queue = MessageQueue()
    private var worker: SamplingWorker?
    private var retired: [SamplingWorker] = []
    private var dirty = true

    /// Creates the loop on an initialised terminal.
    init(terminal: CursesTerminal, backend: any ExplorerBackend, config: ExplorerConfig) {
        self.terminal = terminal
        let s = terminal.size
        model = ExplorerModel(backend: backend, config: config, width: s.width, height: s.height)
        model.deferDerived = true  // caches are filled by prepareForDraw, only for frames that are drawn
    }

    private func apply(_ msg: ExplorerMessage) {
        let effects = update(&model, msg)
        dirty = true
        for e in effects {
            switch e {
            case .cancelRun:
                if let w = worker { w.cancel.set(); retired.append(w); worker = nil }
            case .startRun(let r):
                if let w = worker { w.cancel.set(); retired.append(w) }
                worker = SamplingWorker(request: r, backend: model.backend, queue: queue)
            case .quit:
                break
            }
        }
    }

    /// Runs until `q`, Ctrl-C or SIGTERM. Returns the signal number that stopped it (0 for `q`).
    ///
    /// The loop sleeps in poll(2) on the terminal and the frame queue: a key or a frame wakes it at once,
    /// and the screen is redrawn following `RedrawPolicy`.
    func run() -> Int32 {
        apply(.start)
        let clock = ContinuousClock()
        let tickInterval = Duration.milliseconds(33)
        var nextTick = clock.now + tickInterval
        var lastDraw = clock.now - RedrawPolicy.interval
        var urgent = true, inputLeft = false
        func ms(_ d: Duration) -> Int { max(0, Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)) }
        while !model.quitRequested {
            if terminal.stopSignal != 0 { break }
            if dirty && (urgent || clock.now - lastDraw >= RedrawPolicy.interval) {
                prepareForDraw(&model)
                terminal.present(view(model))
                dirty = false
                urgent = false
                lastDraw = clock.now
            }
            var timeout = 40
            if model.wantsTicks { timeout = min(timeout, ms(nextTick - clock.now)) }
            if dirty { timeout = min(timeout, ms(lastDraw + RedrawPolicy.interval - clock.now)) }
            if inputLeft { timeout = 0 }
            terminal.waitForInput(timeoutMs: timeout, wakeFD: queue.wakeFD)
            // Every key ready (a burst of auto-repeat or a paste) is applied before one redraw.
            for ev in terminal.readReadyEvents(more: &inputLeft) {
                handle(ev)
                urgent = true
                if model.quitRequested { break }
            }
            for msg in queue.drain() {
                apply(msg)
                if RedrawPolicy.isUrgent(msg) { urgent = true }
            }
            if model.wantsTicks {
                if clock.now >= nextTick {
                    apply(.tick)
                    urgent = true
                    nextTick = clock.now + tickInterval
                }
            } else {
                nextTick = clock.now + tickInterval
            }
            retired.removeAll { $0.finished.wait(timeout: .now()) == .success }
        }
        // Stop sampling before the terminal is restored.
        worker?.cancel.set()
        for w in retired + (worker.map { [$0] } ?? []) { _ = w.finished.wait(timeout: .now() + 2) }
        return terminal.stopSignal
    }

    private func handle(_ ev: TerminalEvent) {
        switch ev {
        case .key(let k): apply(.key(k))
        case .mouse(let x, let y): apply(.mouse(x: x, y: y))
        case .resize(let w, let h):
            terminal.invalidate()
            apply(.resize(width: w, height: h))
        }
    }
}

/// Runs the interactive explorer on `backend` until the user quits; the terminal is always restored
/// (on `q`, Ctrl-C, SIGTERM, thrown errors, and crashes through the signal handlers).
/// Returns the process exit status to use (0, or 128 + signal when stopped by a signal).
func runExplorer(backend: any ExplorerBackend, config: ExplorerConfig, mouse: Bool = true) throws -> Int32 {
    let terminal = try CursesTerminal(mouse: mouse)
    defer { terminal.teardown() }
    let loop = ExplorerRunLoop(terminal: terminal, backend: backend, config: config)
    let sig = loop.run()
    return sig == 0 ? 0 : 128 + sig
}
