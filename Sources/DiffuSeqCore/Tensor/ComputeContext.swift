import CKernels
import Foundation

/// How the engine computes: which code runs the products, at what precision, on how many threads, and
/// whether to favour the latency of a batch-1 step or the throughput of batches.
///
/// A value, built once: the CLI builds it from its flags (`--threads`) and the command (the explorer and
/// `trace` want the latency profile), with the environment variables of *Compute settings* in the README
/// as documented overrides, and installs it for the process before the first product
/// (`installForProcess`). `Trainer` and `DiffusionSampler` take one (defaulting to the process's), and
/// bind it to the calling thread while they compute, so the kernels below them read it without any
/// process-wide switch. Tests build their own contexts and never install one.
public struct ComputeContext: Sendable, Equatable {
    /// Arithmetic of the network's matrix products (see `MatMul`).
    public enum Precision: String, Sendable, CaseIterable {
        /// fp32 products (OpenBLAS, or oneDNN with `library` .onednn).
        case fp32
        /// bf16 inputs, fp32 accumulation and output, on oneDNN (falls back to fp32 with a notice).
        case bf16
        /// bf16 for training and batch sampling where the CPU runs bf16 products faster than fp32
        /// (`OneDNN.bf16SpeedRatio` ≥ `autoBF16Ratio`) and oneDNN loads; fp32 otherwise.
        case auto
    }

    /// What a run computes, for `auto` (batch-1 runs use the packed fp32 engine, or OpenBLAS).
    public enum Workload: String, Sendable { case training, batchSampling, interactive }

    /// `auto` takes bf16 when bf16 dot products run at least this much faster than fp32 FMAs.
    public static let autoBF16Ratio = 1.3

    /// What a run is tuned for. *Latency* (batch-1 steps on OpenBLAS: the explorer, `trace`): OpenBLAS's
    /// workers spin between products and every kernel of ours runs on the caller's thread. *Throughput*
    /// (training, batches, the packed engine): our kernels split rows over `threads` cores.
    public enum Profile: String, Sendable, CaseIterable { case latency, throughput }

    /// Which code runs a sampler's products (`SamplingEngine`).
    public var engine: SamplingEngine
    /// Arithmetic of the network's products.
    public var precision: Precision
    /// The library of fp32 products (`DIFFUSEQ_MATMUL`; bf16 always runs on oneDNN).
    public var library: MatMulLibrary = .openblas
    /// Threads of our kernels and of the packed engine's pool (OpenBLAS's own count is set with the
    /// process context, `installForProcess`).
    public var threads: Int
    /// Latency or throughput (see `Profile`).
    public var profile: Profile
    /// Tests: run the packed engine's portable code even on an AVX-512 CPU (same bits, slower).
    var portableKernels = false

    /// A context; `threads` defaults to every core.
    public init(engine: SamplingEngine = .automatic, precision: Precision = .fp32, threads: Int? = nil,
                profile: Profile = .throughput) {
        self.engine = engine
        self.precision = precision
        self.threads = max(1, min(threads ?? Self.cores, 64))
        self.profile = profile
    }

    /// The cores this process may use.
    public static var cores: Int { max(1, ProcessInfo.processInfo.activeProcessorCount) }

    /// Whether our kernels run on the caller's thread only (the latency profile: a second thread of ours
    /// would fight OpenBLAS's spinning worker for the other core). Results do not depend on it.
    var inlineKernels: Bool { profile == .latency || threads == 1 }

    /// The CLI's context: `threads` (nil: every core) and, when `latencyForBatchOne`, the latency profile
    /// if batch-1 runs use OpenBLAS; then the documented overrides DIFFUSEQ_ENGINE
    /// (`automatic|blas|packed`) and DIFFUSEQ_BLAS_PROFILE (`latency|throughput`). An unknown engine is
    /// ignored with a warning naming the variable and the values it takes (the BLAS shim warns about an
    /// unknown profile when it loads).
    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment,
                                       threads: Int? = nil, latencyForBatchOne: Bool = false)
        -> (context: ComputeContext, warnings: [String]) {
        var warnings: [String] = []
        var engine = SamplingEngine.automatic
        if let v = env["DIFFUSEQ_ENGINE"], !v.isEmpty {
            if let e = SamplingEngine(rawValue: v) { engine = e } else {
                warnings.append("DIFFUSEQ_ENGINE=\(v) is not automatic, blas or packed; using automatic")
            }
        }
        var profile: Profile = latencyForBatchOne && engine.batchOneUsesBLAS ? .latency : .throughput
        if let v = env["DIFFUSEQ_BLAS_PROFILE"], !v.isEmpty {
            if let p = Profile(rawValue: v) { profile = p }
        }
        var context = ComputeContext(engine: engine, threads: threads, profile: profile)
        if let v = env["DIFFUSEQ_MATMUL"], !v.isEmpty {
            if let l = MatMulLibrary(rawValue: v), l != .packed { context.library = l } else {
                warnings.append("DIFFUSEQ_MATMUL=\(v) is not openblas or onednn; using openblas")
            }
        }
        return (context, warnings)
    }

    // MARK: The process's context (installed once by the CLI)

    private static let processLock = NSLock()
    nonisolated(unsafe) private static var installed: ComputeContext?

    /// The context of this process: what the CLI installed, or the defaults (automatic engine, every
    /// core, throughput). `Trainer` and `DiffusionSampler` use it when they are given none.
    public static var process: ComputeContext {
        processLock.lock()
        defer { processLock.unlock() }
        return installed ?? ComputeContext()
    }

    /// Makes `context` the process's context. The latency profile is also asked of OpenBLAS, which reads
    /// it when it loads: when the library is loaded already, the installed profile is the loaded one.
    /// OpenBLAS's own thread count is `BLAS.setThreads`. For the CLI (start-up and its `--threads`) only;
    /// the engine and the tests pass contexts instead.
    public static func installForProcess(_ context: ComputeContext) {
        var context = context
        if context.profile == .latency && !BLAS.preferLatencyProfile() { context.profile = .throughput }
        processLock.lock()
        installed = context
        processLock.unlock()
    }

    // MARK: The context bound to the current thread

    /// The context the kernels on this thread run under: bound by `Trainer`, `DiffusionSampler` and the
    /// model's passes for their duration; the process's context elsewhere.
    static var bound: ComputeContext {
        if let box = pthread_getspecific(boundKey) { return Unmanaged<Box>.fromOpaque(box).takeUnretainedValue().value }
        return process
    }

    /// Runs `body` with this context bound to the current thread (restoring the previous binding after).
    public func run<R>(_ body: () throws -> R) rethrows -> R {
        let previous = bindToThread()
        defer { ComputeContext.restoreBinding(previous) }
        return try body()
    }

    /// Binds this context to the current thread until `restoreBinding(_:)` is called with the result.
    public func bindToThread() -> BindingToken {
        let previous = pthread_getspecific(Self.boundKey)
        pthread_setspecific(Self.boundKey, Unmanaged.passRetained(Box(self)).toOpaque())
        return BindingToken(previous: previous)
    }

    /// Undoes a `bindToThread()` (bindings nest).
    public static func restoreBinding(_ token: BindingToken) {
        if let current = pthread_getspecific(boundKey) { Unmanaged<Box>.fromOpaque(current).release() }
        pthread_setspecific(boundKey, token.previous)
    }

    /// What `bindToThread` replaced.
    public struct BindingToken { fileprivate let previous: UnsafeMutableRawPointer? }

    private final class Box {
        let value: ComputeContext
        init(_ v: ComputeContext) { value = v }
    }

    private static let boundKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { p in
            if let p { Unmanaged<AnyObject>.fromOpaque(p).release() }
        }
        return key
    }()
}
