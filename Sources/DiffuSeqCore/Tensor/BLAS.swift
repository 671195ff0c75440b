import COpenBLAS
import Foundation

/// OpenBLAS, loaded at run time with a CPU-appropriate kernel (see `COpenBLAS.h`).
public enum BLAS {
    /// Facts about the loaded library, for `--version` and the benchmarks.
    public struct Info: Sendable, Codable, Equatable {
        /// `openblas_get_corename()`, e.g. "SkylakeX".
        public var coreName: String
        /// The OPENBLAS_CORETYPE we set before loading, or nil when the user (or nobody) chose it.
        public var chosenCoreType: String?
        /// OpenBLAS thread count.
        public var threads: Int
        /// `openblas_get_config()`.
        public var config: String
        /// "latency" (workers spin, products from 3M multiply-adds threaded) or "throughput" (see `preferLatencyProfile`).
        public var profile: String = "throughput"
    }

    /// Chooses the latency profile for this process, for batch-1 sampling (the explorer, `trace`):
    /// OpenBLAS's workers keep spinning between products instead of sleeping, products from 3M
    /// multiply-adds run on all threads, and the Swift kernels run on the caller's thread. The default (throughput) profile suits batches and training, where our own
    /// parallel kernels need the second core between products. Only effective before the library is
    /// first loaded; returns whether the latency profile is in effect.
    @discardableResult
    public static func preferLatencyProfile() -> Bool { dsq_blas_prefer_latency() != 0 }

    /// Whether the library was loaded with the latency profile.
    public static var isLatencyProfile: Bool { dsq_blas_latency_profile() != 0 }

    /// Loads OpenBLAS if needed. Throws a readable error when the library cannot be found.
    public static func ensureLoaded() throws {
        var buffer = [CChar](repeating: 0, count: 512)
        if dsq_blas_load(&buffer, Int32(buffer.count)) != 0 {
            throw EngineError.blasUnavailable(String(cString: buffer))
        }
    }

    /// The loaded library's kernel, thread count and build string (loads it first).
    public static func info() throws -> Info {
        try ensureLoaded()
        let chosen = String(cString: dsq_blas_chosen_coretype())
        return Info(coreName: String(cString: dsq_blas_corename()),
                    chosenCoreType: chosen.isEmpty ? nil : chosen,
                    threads: Int(dsq_blas_get_threads()),
                    config: String(cString: dsq_blas_config()),
                    profile: isLatencyProfile ? "latency" : "throughput")
    }

    /// Sets the OpenBLAS thread count (loads the library first).
    public static func setThreads(_ n: Int) throws {
        try ensureLoaded()
        dsq_blas_set_threads(Int32(max(1, n)))
    }

    /// Row-major `C = alpha·op(A)·op(B) + beta·C` with op(A) (m×k), op(B) (k×n), C (m×n).
    @inline(__always)
    static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                     alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                     b: UnsafePointer<Float>, ldb: Int, beta: Float = 0,
                     c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        dsq_sgemm(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda),
                  b, Int32(ldb), beta, c, Int32(ldc))
    }
}

/// Errors of the engine that are not about a particular file format.
public enum EngineError: Error, CustomStringConvertible, Equatable {
    case blasUnavailable(String)
    case invalidConfig(String)
    case invalidInput(String)
    case io(String)
    case cancelled

    public var description: String {
        switch self {
        case .blasUnavailable(let m): return m
        case .invalidConfig(let m): return "invalid model configuration: \(m)"
        case .invalidInput(let m): return "invalid input: \(m)"
        case .io(let m): return m
        case .cancelled: return "cancelled"
        }
    }
}
