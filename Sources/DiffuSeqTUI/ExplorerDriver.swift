// The explorer's one effect interpreter and run loop, shared by the terminal (`diffuseq explore`), the
// headless renderer (`--render`, the tests) and `diffuseq bench explore`. They differ only in where input
// comes from and where screens go (`ExplorerIO`) and in how a sampling run executes (`RunExecutor`:
// synchronously on the calling thread, or on a background thread that streams frames).
import DiffuSeqCore
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Messages posted from a sampling thread, drained by the interpreter (lock-protected). A push also
/// makes `wakeFD` readable, so the loop can sleep in poll(2) on the terminal and this queue at once.
///
/// Sendable (unchecked): its mutable state is only touched under `lock`; the pipe fds are set in init.
public final class MessageQueue: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [ExplorerMessage] = []
    private var signalled = false
    private var fds: [Int32] = [-1, -1]
    private var lastWake = ContinuousClock.now
    private var lastFrameRun: Int?

    /// Creates a queue with its wake-up pipe (without one the loop still wakes on its timeout).
    public init() {
        if pipe(&fds) == 0 {
            for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        } else {
            fds = [-1, -1]
        }
    }

    deinit { for fd in fds where fd >= 0 { close(fd) } }

    /// Readable while messages are waiting (−1 when no pipe could be made).
    public var wakeFD: Int32 { fds[0] }

    /// Appends a message (any thread). The reader is woken for messages `RedrawPolicy` wants shown at once,
    /// and otherwise at most once per redraw interval (its poll timeout picks up the rest): a wake-up per
    /// frame would take a core from the sampling run 100 times a second for frames that are not drawn.
    public func push(_ m: ExplorerMessage) {
        let now = ContinuousClock.now
        lock.lock()
        items.append(m)
        let urgent = RedrawPolicy.isUrgent(m, previousFrameRun: lastFrameRun)
        if case .frame(let id, _) = m { lastFrameRun = id }
        let wake = !signalled && (urgent || now - lastWake >= RedrawPolicy.interval)
        if wake { signalled = true; lastWake = now }
        lock.unlock()
        if wake && fds[1] >= 0 {
            var byte: UInt8 = 1
            _ = write(fds[1], &byte, 1)
        }
    }

    /// Takes every queued message (interpreter thread).
    public func drain() -> [ExplorerMessage] {
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
    public func wait(timeoutMs: Int) {
        guard fds[0] >= 0 else { usleep(useconds_t(max(0, timeoutMs)) * 1000); return }
        var p = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
        _ = poll(&p, 1, Int32(max(0, timeoutMs)))
    }
}

/// When the screen is redrawn while a run streams frames: a key, the first and the last frame of a run
/// and its end are drawn at once; other frames are applied as they arrive but drawn at most every
/// `interval`, so drawing never takes a core from sampling.
public enum RedrawPolicy {
    /// Minimum time between two draws caused by streaming frames alone.
    public static let interval = Duration.milliseconds(33)

    /// Whether a message must be shown without waiting for `interval`. `previousFrameRun` is the run id of
    /// the frame seen before this message: a run's first frame is urgent whatever its index (an SDEdit run
    /// or a fork starts after step 0), and runs stream one after another (the engine serialises them).
    public static func isUrgent(_ m: ExplorerMessage, previousFrameRun: Int?) -> Bool {
        switch m {
        case .frame(let id, let f): return id != previousFrameRun || f.index == f.count - 1
        case .tick, .derived: return false
        default: return true
        }
    }
}

/// Executes `ExplorerEffect.startRun` / `.cancelRun`; results come back as messages posted to `post`.
public protocol RunExecutor: AnyObject {
    /// Starts `request` on `backend` (runs already in flight go on unless cancelled).
    func start(_ request: RunRequest, backend: any ExplorerBackend, post: @escaping @Sendable (ExplorerMessage) -> Void)
    /// Cancels every run in flight.
    func cancel()
    /// Cancels the run with this id, if it is in flight.
    func cancel(id: Int)
    /// Cancels everything and waits (at most `seconds`) for background work to stop.
    func shutdown(waitSeconds: Double)
}

/// Runs each sampling request to the end on the calling thread (headless rendering and tests: deterministic).
public final class SynchronousExecutor: RunExecutor {
    /// Creates the executor.
    public init() {}
    /// Samples `request` now, posting every frame and the outcome before returning.
    public func start(_ r: RunRequest, backend: any ExplorerBackend, post: @escaping @Sendable (ExplorerMessage) -> Void) {
        do {
            try execute(r, backend: backend, isCancelled: { false }, post: post)
            post(.runFinished(runID: r.id))
        } catch {
            post(.runFailed(runID: r.id, message: "\(error)"))
        }
    }
    /// Nothing runs in the background.
    public func cancel() {}
    /// Nothing runs in the background.
    public func cancel(id: Int) {}
    /// Nothing runs in the background.
    public func shutdown(waitSeconds: Double) {}
}

/// Runs one request on the engine: a whole run, or a fork of one seed's run (frames posted as they come).
func execute(_ r: RunRequest, backend: any ExplorerBackend, isCancelled: @escaping @Sendable () -> Bool,
             post: @escaping @Sendable (ExplorerMessage) -> Void) throws {
    if let fork = r.fork {
        try backend.fork(r.input, seed: r.seeds.first ?? 0, sampler: r.sampler, steps: r.steps, startFraction: r.startFraction,
                         from: fork, isCancelled: isCancelled, onFrame: { post(.frame(runID: r.id, $0)) })
    } else {
        try backend.sample(r.input, seeds: r.seeds, sampler: r.sampler, steps: r.steps, startFraction: r.startFraction,
                           isCancelled: isCancelled, onFrame: { post(.frame(runID: r.id, $0)) })
    }
}

/// A cancellation flag shared with a sampling thread.
///
/// Sendable (unchecked): `value` is only read and written under `lock`.
final class CancelFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool {
        lock.lock()
        defer { lock.unlock() }
        return value
    }
    func set() {
        lock.lock()
        value = true
        lock.unlock()
    }
}

/// Runs the requests one after another on one long-lived background thread (a cancelled run stops at its
/// next step and the next request starts; the engine serialises runs anyway, so nothing ran side by side
/// before either).
///
/// Why one thread and not one per run: glibc gives a thread that starts while other threads are allocating
/// its own malloc arena (up to 8 per core), and every arena keeps the high-water mark of what was allocated in
/// it. A thread per run — a new one starting while the cancelled run finished its step — spread the frames
/// (x_t and x̂₀ of every step) over 16 arenas, and the explorer's RSS grew by tens of MB per 10,000 random keys
/// although the live data stayed flat (`Tests/explore-abuse.sh`; measured with `malloc_info`). On one thread
/// every run's frames come from one arena, and the next run reuses what the previous one freed.
public final class ThreadedExecutor: RunExecutor {
    /// A request waiting or running, with its cancellation flag.
    private final class Job: Sendable {
        let request: RunRequest
        let backend: any ExplorerBackend
        let post: @Sendable (ExplorerMessage) -> Void
        let cancel = CancelFlag()
        init(_ r: RunRequest, _ b: any ExplorerBackend, _ p: @escaping @Sendable (ExplorerMessage) -> Void) {
            request = r
            backend = b
            post = p
        }
    }

    /// The queue shared with the sampling thread (the thread holds this, not the executor, so an executor
    /// dropped without `shutdown` still stops it).
    ///
    /// Sendable (unchecked): `jobs`, `current`, `stopping` and `thread` are only touched with `condition` locked.
    private final class Queue: @unchecked Sendable {
        let condition = NSCondition()
        var jobs: [Job] = []
        var current: Job?
        var stopping = false
        var thread: Thread?
        let exited = DispatchSemaphore(value: 0)

        /// The sampling thread's loop: runs jobs in order until stopped and drained.
        func loop() {
            while true {
                condition.lock()
                while jobs.isEmpty && !stopping { condition.wait() }
                if jobs.isEmpty {
                    condition.unlock()
                    break
                }
                let job = jobs.removeFirst()
                current = job
                condition.unlock()
                let r = job.request, cancel = job.cancel
                do {
                    try execute(r, backend: job.backend, isCancelled: { cancel.isSet }, post: job.post)
                    job.post(cancel.isSet ? .runCancelled(runID: r.id) : .runFinished(runID: r.id))
                } catch {
                    job.post(.runFailed(runID: r.id, message: "\(error)"))
                }
                condition.lock()
                current = nil
                condition.unlock()
            }
            exited.signal()
        }

        /// Sets the cancellation flag of the running and waiting jobs that `matching` selects.
        func cancel(_ matching: (Job) -> Bool) {
            condition.lock()
            if let c = current, matching(c) { c.cancel.set() }
            for j in jobs where matching(j) { j.cancel.set() }
            condition.unlock()
        }
    }

    private let queue = Queue()

    /// Creates the executor (its thread starts with the first request).
    public init() {}

    deinit {
        queue.cancel { _ in true }
        queue.condition.lock()
        queue.stopping = true
        queue.condition.broadcast()
        queue.condition.unlock()
    }

    /// Queues `r` for the sampling thread (starting the thread the first time).
    public func start(_ r: RunRequest, backend: any ExplorerBackend, post: @escaping @Sendable (ExplorerMessage) -> Void) {
        let q = queue
        q.condition.lock()
        defer { q.condition.unlock() }
        guard !q.stopping else { return }
        q.jobs.append(Job(r, backend, post))
        if q.thread == nil {
            let thread = Thread { q.loop() }
            thread.stackSize = 16 << 20
            thread.name = "diffuseq-sample"
            q.thread = thread
            thread.start()
        }
        q.condition.signal()
    }

    /// Cancels every run in flight (the running one stops at its next step, waiting ones at once).
    public func cancel() { queue.cancel { _ in true } }

    /// Cancels one run.
    public func cancel(id: Int) { queue.cancel { $0.request.id == id } }

    /// Cancels everything and waits (at most `waitSeconds`) for the sampling thread to finish.
    public func shutdown(waitSeconds: Double) {
        cancel()
        let q = queue
        q.condition.lock()
        q.stopping = true
        let running = q.thread != nil
        q.condition.broadcast()
        q.condition.unlock()
        guard running, q.exited.wait(timeout: .now() + waitSeconds) == .success else { return }
        q.condition.lock()
        q.thread = nil  // exited: a second shutdown has nothing to wait for
        q.condition.unlock()
    }
}

/// The one interpreter: applies messages with `update`, performs their effects (runs through a
/// `RunExecutor`, derived data through `computeDerivations`) and builds screens with `view`.
public final class ExplorerDriver {
    /// The explorer state.
    public private(set) var model: ExplorerModel
    /// Messages posted by sampling runs.
    public let inbox = MessageQueue()
    private let executor: any RunExecutor
    /// Whether derived data is computed after every message (headless, tests) or only before a draw (live
    /// runs, where most streamed frames are never drawn).
    public var deriveEveryMessage: Bool
    /// Whether the screen changed since the last `render`.
    public private(set) var dirty = true
    /// Whether the change must be shown at once (`RedrawPolicy`).
    public private(set) var urgent = true
    /// Whether a `.quit` effect was seen.
    public private(set) var quit = false
    /// The run id of the last frame applied (`RedrawPolicy`: a run's first frame is drawn at once).
    private var lastFrameRun: Int?

    /// Creates the interpreter for a model.
    public init(model: ExplorerModel, executor: any RunExecutor, deriveEveryMessage: Bool) {
        self.model = model
        self.executor = executor
        self.deriveEveryMessage = deriveEveryMessage
    }

    /// Applies a message, performs its effects, then applies whatever a synchronous run posted.
    public func send(_ msg: ExplorerMessage) {
        apply(msg)
        pump()
    }

    /// Applies every message waiting in the inbox; returns whether there were any.
    @discardableResult
    public func pump() -> Bool {
        var any = false
        while true {
            let batch = inbox.drain()
            if batch.isEmpty { return any }
            any = true
            for m in batch { apply(m) }
        }
    }

    private func apply(_ msg: ExplorerMessage) {
        let effects = update(&model, msg)
        dirty = true
        if RedrawPolicy.isUrgent(msg, previousFrameRun: lastFrameRun) { urgent = true }
        if case .frame(let id, _) = msg { lastFrameRun = id }
        if case .tick = msg { urgent = true }  // playing: every tick is a new step to show
        let inbox = self.inbox
        for e in effects {
            switch e {
            case .cancelRun: executor.cancel()
            case .cancelRunID(let id): executor.cancel(id: id)
            case .startRun(let r): executor.start(r, backend: model.backend, post: { inbox.push($0) })
            case .quit: quit = true
            }
        }
        if deriveEveryMessage { prepareForDraw(&model) }
    }

    /// Whether a draw is due: something changed and it is urgent or `interval` passed since `lastDraw`.
    public func drawDue(now: ContinuousClock.Instant, lastDraw: ContinuousClock.Instant) -> Bool {
        dirty && (urgent || now - lastDraw >= RedrawPolicy.interval)
    }

    /// Fills the derived data the screen needs and returns the screen.
    public func render() -> ScreenBuffer {
        prepareForDraw(&model)
        dirty = false
        urgent = false
        return view(model)
    }

    /// Stops background runs.
    public func shutdown(waitSeconds: Double = 2) { executor.shutdown(waitSeconds: waitSeconds) }
}

/// Where the run loop gets input and puts screens.
public protocol ExplorerIO: AnyObject {
    /// Sleeps until input is ready, `wakeFD` is readable, or `timeoutMs` passes.
    func wait(timeoutMs: Int, wakeFD: Int32)
    /// The messages ready now (keys, clicks, resizes); `more` tells that input is still buffered.
    func readMessages(more: inout Bool) -> [ExplorerMessage]
    /// Shows a screen.
    func present(_ screen: ScreenBuffer, driver: ExplorerDriver)
    /// Whether the loop should stop (signal, script exhausted, measurement over).
    func shouldStop(_ driver: ExplorerDriver) -> Bool
    /// Whether the loop sends timed play ticks (false for scripts, which send `tick` themselves).
    var timedTicks: Bool { get }
}

/// What the loop spent: time busy (applying messages and drawing) between waits.
public struct LoopStats: Sendable {
    /// Busy time of the interpreter thread.
    public var busy: Duration = .zero
    /// Screens presented.
    public var draws = 0
}

/// The explorer's run loop: sleeps in `io.wait` on input and the sampling queue, applies input (a burst of
/// keys before one redraw), streamed frames and play ticks, and presents screens following `RedrawPolicy`.
@discardableResult
public func runExplorerLoop(_ d: ExplorerDriver, io: any ExplorerIO) -> LoopStats {
    let clock = ContinuousClock()
    let tickInterval = Duration.milliseconds(33)
    var nextTick = clock.now + tickInterval
    var lastDraw = clock.now - RedrawPolicy.interval
    var inputLeft = false
    var stats = LoopStats()
    func ms(_ x: Duration) -> Int { max(0, Int(x.components.seconds * 1000 + x.components.attoseconds / 1_000_000_000_000_000)) }
    while !d.quit && !io.shouldStop(d) {
        let busyStart = clock.now
        if d.drawDue(now: clock.now, lastDraw: lastDraw) {
            io.present(d.render(), driver: d)
            stats.draws += 1
            lastDraw = clock.now
            if io.shouldStop(d) { stats.busy += clock.now - busyStart; break }
        }
        stats.busy += clock.now - busyStart
        var timeout = 40
        if d.model.wantsTicks && io.timedTicks { timeout = min(timeout, ms(nextTick - clock.now)) }
        if d.dirty { timeout = min(timeout, ms(lastDraw + RedrawPolicy.interval - clock.now)) }
        if inputLeft { timeout = 0 }
        io.wait(timeoutMs: timeout, wakeFD: d.inbox.wakeFD)
        let applyStart = clock.now
        for msg in io.readMessages(more: &inputLeft) {
            d.send(msg)
            if d.quit { break }
        }
        d.pump()
        if d.model.wantsTicks && io.timedTicks {
            if clock.now >= nextTick {
                d.send(.tick)
                nextTick = clock.now + tickInterval
            }
        } else {
            nextTick = clock.now + tickInterval
        }
        stats.busy += clock.now - applyStart
    }
    return stats
}
