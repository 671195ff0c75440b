import ArgumentParser
import DiffuSeqCore
import Foundation

/// The `diffuseq` command.
struct DiffuSeqCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diffuseq",
        abstract: "DiffuSeq in Swift: train, sample, evaluate and explore text diffusion models.",
        subcommands: [TrainCommand.self, SampleCommand.self, EvalCommand.self, ExploreCommand.self, TraceCommand.self, BenchCommand.self, ExportCommand.self])

    @Flag(name: .long, help: "Print the version, the BLAS kernel in use and the thread count.")
    var version = false

    func run() throws {
        if version {
            print(versionString())
        } else {
            print(DiffuSeqCommand.helpMessage())
        }
    }
}

/// Version, BLAS kernel and threads, as `diffuseq --version` prints them.
func versionString() -> String {
    var s = "diffuseq \(DiffuSeqVersion.string)\n"
    do {
        let info = try BLAS.info()
        s += "BLAS: OpenBLAS, kernel \(info.coreName)"
        s += info.chosenCoreType.map { " (OPENBLAS_CORETYPE=\($0) set by diffuseq)" } ?? " (chosen by OpenBLAS/user)"
        s += ", \(info.threads) threads, \(info.profile) profile\n"
        s += "OpenBLAS build: \(info.config)\n"
        let cx = ComputeContext.process
        s += "Sampling engine: \(cx.engine.rawValue) — \(cx.engine.summary(threads: cx.threads))\n"
        if let p = OneDNN.probe(), let v = OneDNN.version {
            s += "oneDNN \(v) (loaded at run time): fp32 \(p.fp32), bf16 \(p.bf16)\n"
        } else {
            s += "oneDNN: not available — \(OneDNN.loadError ?? "?")\n"
        }
        let ratio = OneDNN.bf16SpeedRatio
        s += "AVX512-BF16: " + (OneDNN.cpuHasBF16 ? String(format: "yes, bf16 dot products at %.2f× the fp32 FMA rate", ratio) : "no") + "\n"
        let training = cx.matMul(for: .training)
        s += "Matrix products: precision \(cx.precision.rawValue) — training and batch sampling on \(training.summary)"
        if let n = training.notice { s += " (\(n))" }
    } catch {
        s += "BLAS: \(error)"
    }
    return s
}
