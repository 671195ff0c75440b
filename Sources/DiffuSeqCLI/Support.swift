import ArgumentParser
import CNCurses
import DiffuSeqCore
import DiffuSeqResources
import Foundation

/// Prints to stderr.
func eprint(_ s: String) { FileHandle.standardError.write((s + "\n").data(using: .utf8) ?? Data()) }

/// A user-facing failure: printed as "error: …" with exit code 1, never a crash.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Runs `body`, turning engine errors into a clean message and exit code 1.
func runReporting(_ body: () throws -> Void) throws {
    do { try body() } catch let e as CLIError {
        eprint("error: \(e.description)"); throw ExitCode(1)
    } catch let e as ExitCode { throw e
    } catch let e as CleanExit { throw e
    } catch {
        eprint("error: \(error)"); throw ExitCode(1)
    }
}

/// A flag set by SIGINT/SIGTERM so long runs can stop cleanly (save, restore the terminal).
enum Interrupt {
    /// Whether SIGINT or SIGTERM arrived.
    static var requested: Bool { cn_interrupted() != 0 }
    /// Installs handlers for SIGINT and SIGTERM that only set the flag; a second signal exits.
    static func install() { cn_install_interrupt() }
}

/// Progress on stderr: a redrawn bar on a terminal, plain lines otherwise.
final class ProgressReporter {
    let label: String
    let total: Int
    let unit: String
    let start = Date()
    let tty = isatty(2) != 0
    private var lastPrint = Date.distantPast

    /// Work already done before this run (a resumed training), excluded from the rate.
    let initial: Int

    init(_ label: String, total: Int, unit: String, initial: Int = 0) {
        self.label = label; self.total = total; self.unit = unit; self.initial = initial
    }

    func update(_ done: Int, extra: String = "", force: Bool = false) {
        let now = Date()
        if !force && now.timeIntervalSince(lastPrint) < (tty ? 0.1 : 5) && done < total { return }
        lastPrint = now
        let el = now.timeIntervalSince(start)
        let rate = el > 0 ? Double(done - initial) / el : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let pct = total > 0 ? Double(done) / Double(total) : 1
        let stats = String(format: "%d/%d %@  %.2f %@/s  ETA %@", done, total, label, rate, unit, Self.time(eta))
        if tty {
            let width = 24, filled = Int(pct * Double(width))
            let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
            FileHandle.standardError.write("\r\u{1B}[K\(bar) \(stats) \(extra)".data(using: .utf8) ?? Data())
            if done >= total { FileHandle.standardError.write("\n".data(using: .utf8) ?? Data()) }
        } else {
            eprint("progress: \(stats) \(extra)")
        }
    }

    static func time(_ s: Double) -> String {
        guard s.isFinite else { return "?" }
        let t = Int(s)
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
    }
}

/// Options shared by the commands that load a model.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("A checkpoint: our folder (model.safetensors), a training output folder (newest ckpt-*), or an official ema_*.pt with training_args.json and its vocabulary beside it. Default: the built-in model.", valueName: "path"))
    var checkpoint: String?

    @Option(name: .long, help: "Tied embedding of official checkpoints: lm-head (as the official loader) or word-embedding (the EMA copy).")
    var tiedEmbedding: String = "lm-head"

    @Option(name: .long, help: "Threads for BLAS and the Swift kernels (default: all cores).")
    var threads: Int?

    func load() throws -> LoadedModel {
        if let t = threads {
            guard t >= 1 else { throw CLIError("--threads must be at least 1") }
            try setComputeThreads(t)
        }
        guard let tie = TiedEmbeddingSource(rawValue: tiedEmbedding) else {
            throw CLIError("--tied-embedding must be lm-head or word-embedding, not \"\(tiedEmbedding)\"")
        }
        let url: URL
        if let c = checkpoint {
            url = URL(fileURLWithPath: c)
        } else if let builtin = BuiltinModel.url {
            url = builtin
        } else {
            throw CLIError("no built-in model is installed in Resources/model; pass --checkpoint PATH (a folder written by `diffuseq train`, or an official ema_*.pt with training_args.json beside it)")
        }
        let m = try ModelCheckpoint.load(url, tie: tie)
        for n in m.notes { eprint("note: \(n)") }
        return m
    }
}

/// Where the shipped model lives.
enum BuiltinModel {
    static var url: URL? {
        guard let u = BundledResources.url("model/kjv2modern") else { return nil }
        return FileManager.default.fileExists(atPath: u.appendingPathComponent("model.safetensors").path) ? u : nil
    }
}

/// `--precision`: the arithmetic of the network's matrix products, for the commands that compute.
struct PrecisionOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "fp32 | bf16 | auto. bf16: bf16 inputs with fp32 accumulation on oneDNN (falls back to fp32 with a notice without oneDNN or AVX512-BF16). auto (default): bf16 for training and batch sampling where this CPU runs bf16 products faster than fp32, fp32 otherwise (see diffuseq --version).",
        valueName: "precision"))
    var precision: String = "auto"

    /// Sets the process context's precision (before any model is made).
    func apply() throws {
        guard let p = ComputeContext.Precision(rawValue: precision) else {
            throw CLIError("--precision must be fp32, bf16 or auto, not \"\(precision)\"")
        }
        var context = ComputeContext.process
        context.precision = p
        ComputeContext.installForProcess(context)
    }
}

/// Prints the backend a trainer or sampler resolved, with its notice, on stderr (`what`: "training" adds the
/// backend's line; sampling prints only a notice, since small batches run on the packed fp32 engine anyway).
func reportMatMul(_ choice: MatMulChoice, _ what: String) {
    if let n = choice.notice { eprint("note: \(n)") }
    if what == "training" { eprint("\(what) products: \(choice.summary)") }
}

/// Installs the process's compute context (`ComputeContext.fromEnvironment`: the flags, then the documented
/// environment overrides); `latencyForBatchOne` for the commands that time batch-1 steps (the explorer,
/// `trace`, their benches). Call before the first model is made (OpenBLAS reads the profile when it loads).
func installCompute(latencyForBatchOne: Bool = false) {
    var (context, _) = ComputeContext.fromEnvironment(latencyForBatchOne: latencyForBatchOne)
    context.threads = ComputeContext.process.threads  // keep a --threads and a --precision already applied
    context.precision = ComputeContext.process.precision
    ComputeContext.installForProcess(context)
}

/// `--threads`: OpenBLAS's thread count and the process context's (our kernels, the packed pool).
func setComputeThreads(_ t: Int) throws {
    try BLAS.setThreads(t)
    var context = ComputeContext.process
    context.threads = t
    ComputeContext.installForProcess(context)
}
