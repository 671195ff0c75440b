import DiffuSeqCore
import DiffuSeqTUI
import Foundation

/// Messages posted from the sampling thread, drained by the run loop (lock-protected).
final class MessageQueue: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [ExplorerMessage] = []

    /// Appends a message (any thread).
    func push(_ m: ExplorerMessage) {
        lock.lock()
        items.append(m)
        lock.unlock()
    }

    /// Takes every queued message (run-loop thread).
    func drain() -> [ExplorerMessage] {
        lock.lock()
        defer { lock.unlock() }
        let out = items
        items.removeAll(keepingCapacity: true)
        return out
    }
}

/// A cancellation flag shared with a sampling thread.
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
    func run() -> Int32 {
        apply(.start)
        let clock = ContinuousClock()
        let tickInterval = Duration.milliseconds(33)
        var nextTick = clock.now + tickInterval
        while !model.quitRequested {
            if terminal.stopSignal != 0 { break }
            if dirty {
                terminal.present(view(model))
                dirty = false
            }
            var timeout = 40
            if model.wantsTicks {
                let left = nextTick - clock.now
                timeout = max(0, min(40, Int(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)))
            }
            if let ev = terminal.readEvent(timeoutMs: timeout) {
                handle(ev)
                // Coalesce a burst of keys (auto-repeat, paste) into one redraw.
                var n = 0
                while n < 256, !model.quitRequested, let more = terminal.readEvent(timeoutMs: 0) {
                    handle(more)
                    n += 1
                }
            }
            for msg in queue.drain() { apply(msg) }
            if model.wantsTicks {
                if clock.now >= nextTick {
                    apply(.tick)
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
