import DiffuSeqCore
import DiffuSeqTUI
import Foundation
import Testing

/// The demo engine recording which thread ran each request and how many ran at once.
final class ThreadRecordingBackend: DemoExplorerBackend, @unchecked Sendable {
    // Sendable (unchecked): the recorded state is only touched under `lock`.
    private let lock = NSLock()
    private var running = 0
    private(set) var maxRunning = 0
    private(set) var threads: [String] = []

    init() { super.init(onStep: { usleep(1000) }) }

    override func sample(_ input: PreparedInput, seeds: [UInt64], sampler: SamplerKind, steps: Int, startFraction: Double = 1,
                         isCancelled: @escaping @Sendable () -> Bool, onFrame: @escaping @Sendable (DiffusionFrame) -> Void) throws {
        lock.lock()
        running += 1
        maxRunning = max(maxRunning, running)
        threads.append("\(pthread_self()) \(Thread.current.name ?? "")")
        lock.unlock()
        defer { lock.lock(); running -= 1; lock.unlock() }
        try super.sample(input, seeds: seeds, sampler: sampler, steps: steps, startFraction: startFraction,
                         isCancelled: isCancelled, onFrame: onFrame)
    }

    /// What was recorded.
    var recorded: (threads: [String], maxRunning: Int) {
        lock.lock()
        defer { lock.unlock() }
        return (threads, maxRunning)
    }
}

/// Messages posted by an executor (any thread).
final class PostedMessages: @unchecked Sendable {
    // Sendable (unchecked): `outcomes` is only touched under `lock`.
    private let lock = NSLock()
    private var outcomes: [Int: String] = [:]

    func post(_ m: ExplorerMessage) {
        lock.lock()
        defer { lock.unlock() }
        switch m {
        case .runFinished(let id): outcomes[id] = "finished"
        case .runCancelled(let id): outcomes[id] = "cancelled"
        case .runFailed(let id, let e): outcomes[id] = "failed: " + e
        default: break
        }
    }

    func outcome(_ id: Int) -> String? {
        lock.lock()
        defer { lock.unlock() }
        return outcomes[id]
    }

    /// Waits (at most 20 s) until every id has an outcome.
    func wait(for ids: [Int]) {
        for _ in 0..<2000 where ids.contains(where: { outcome($0) == nil }) { usleep(10_000) }
    }
}

@Suite("the sampling thread")
struct ExecutorTests {
    /// Runs go one after another on one long-lived thread (one malloc arena for every run's frames: with a
    /// thread per run the explorer's RSS grew under random keys), and cancelling works for the running and the
    /// waiting requests alike.
    @Test func runsGoOneAfterAnotherOnOneThreadAndCancelStopsThem() throws {
        let backend = ThreadRecordingBackend()
        let input = try backend.prepare(source: demoSource, reference: nil)
        let posted = PostedMessages()
        let executor = ThreadedExecutor()
        func request(_ id: Int, steps: Int) -> RunRequest {
            RunRequest(id: id, input: input, seeds: [UInt64(id)], sampler: .ddim, steps: steps)
        }
        executor.start(request(1, steps: 2000), backend: backend, post: { posted.post($0) })   // ~2 s: cancelled below
        executor.start(request(2, steps: 20), backend: backend, post: { posted.post($0) })
        executor.start(request(3, steps: 20), backend: backend, post: { posted.post($0) })
        usleep(50_000)
        executor.cancel(id: 1)
        posted.wait(for: [1, 2, 3])
        #expect(posted.outcome(1) == "cancelled" && posted.outcome(2) == "finished" && posted.outcome(3) == "finished")
        executor.start(request(4, steps: 2000), backend: backend, post: { posted.post($0) })
        executor.start(request(5, steps: 2000), backend: backend, post: { posted.post($0) })
        usleep(50_000)
        executor.cancel()                                     // the running one and the waiting one
        posted.wait(for: [4, 5])
        #expect(posted.outcome(4) == "cancelled" && posted.outcome(5) == "cancelled")
        executor.shutdown(waitSeconds: 5)
        executor.shutdown(waitSeconds: 5)                     // a second shutdown returns at once
        let r = backend.recorded
        #expect(r.maxRunning == 1)
        #expect(r.threads.count == 5 && Set(r.threads).count == 1, "one sampling thread for every run")
        #expect(r.threads.first?.hasPrefix("\(pthread_self()) ") == false, "\(r.threads)")
    }
}
