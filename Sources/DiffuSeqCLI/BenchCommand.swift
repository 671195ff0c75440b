import ArgumentParser
import DiffuSeqCore
import DiffuSeqResources
import Foundation

/// `diffuseq bench …`: performance figures (benchmarks, not tests).
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks: sampling and training speed, explorer responsiveness, quality vs steps.",
        subcommands: [BenchSample.self, BenchTrain.self, BenchGEMM.self, BenchExplore.self, BenchQuality.self])
}

/// Options common to the speed benchmarks.
struct BenchOptions: ParsableArguments {
    @Flag(name: .long, help: "Print one JSON object instead of a table.") var json = false
    @Option(name: .long, help: "Timed repetitions per case (the median is reported).") var repeats: Int = 5
    @Option(name: .long, help: "Only these cases (comma-separated names).") var cases: String?
    @Option(name: .long, help: ArgumentHelp("Precisions to compare, comma-separated (fp32, bf16, auto): every case runs once per precision, in its own process.", valueName: "list"))
    var precision: String = "auto"
    @Option(name: .long, help: "Run the whole list of cases and precisions this many times, alternating (medians over the rounds are reported).")
    var rounds: Int = 1
    @Option(name: .long, help: ArgumentHelp(visibility: .private)) var child: String?

    /// The precisions of `--precision`, checked.
    func precisions() throws -> [ComputeContext.Precision] {
        try precision.split(separator: ",").map {
            guard let p = ComputeContext.Precision(rawValue: String($0)) else {
                throw CLIError("--precision: \"\($0)\" is not fp32, bf16 or auto")
            }
            return p
        }
    }

    /// In a child: sets the process's precision (one value) and returns the backend a run of `workload` gets.
    func applyChildPrecision(_ workload: ComputeContext.Workload) throws -> MatMulChoice {
        let ps = try precisions()
        guard ps.count == 1 else { throw CLIError("a benchmark child takes one precision") }
        var context = ComputeContext.process
        context.precision = ps[0]
        ComputeContext.installForProcess(context)
        return context.matMul(for: workload)
    }
}

/// Peak resident memory of this process in MB (getrusage ru_maxrss).
func peakMemoryMB() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_maxrss) / 1024
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return .nan }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Runs each case in a fresh child process (so peak memory is per case) once per precision, `--rounds` times
/// (alternating), and gathers JSON results: one per (case, precision), its `ms_per_step` the median over the
/// rounds (`ms_rounds` lists them). With `peer`, the official PyTorch code runs the case after ours in every
/// round, in the precisions ours ran in.
func runCases(_ names: [String], subcommand: [String], opts: BenchOptions, peer: PeerSession? = nil) throws -> [[String: Any]] {
    let precisions = try opts.precisions()
    var byKey: [String: [[String: Any]]] = [:], order: [String] = []
    for _ in 0..<max(1, opts.rounds) {
        for name in names {
            var round: [[String: Any]] = []
            for p in precisions {
                var r = try runCase(name, precision: p, subcommand: subcommand, opts: opts)
                r["precision_requested"] = p.rawValue
                let key = name + "/" + p.rawValue
                if byKey[key] == nil { order.append(key) }
                byKey[key, default: []].append(r)
                round.append(r)
            }
            try peer?.runRound(name, ours: round)
        }
    }
    return order.map { key in
        let runs = byKey[key] ?? []
        var r = runs[0]
        let ms = runs.compactMap { $0["ms_per_step"] as? Double }
        r["ms_per_step"] = median(ms)
        r["ms_rounds"] = ms
        if let fl = Optional(runs.compactMap { $0["gemm_floor_ms"] as? Double }), !fl.isEmpty { r["gemm_floor_ms"] = median(fl) }
        if let loads = Optional(runs.compactMap { $0["loadavg"] as? Double }), !loads.isEmpty { r["loadavg"] = median(loads) }
        return r
    }
}

/// The 1-minute load average (the host is shared: every figure is quoted with it).
func loadAverage() -> Double {
    guard let s = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8), let f = s.split(separator: " ").first else { return .nan }
    return Double(f) ?? .nan
}

/// One benchmark case in a child process.
func runCase(_ name: String, precision: ComputeContext.Precision, subcommand: [String], opts: BenchOptions) throws -> [String: Any] {
    do {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
        if !FileManager.default.isExecutableFile(atPath: p.executableURL?.path ?? "") {
            p.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        }
        p.arguments = subcommand + ["--child", name, "--repeats", String(opts.repeats), "--precision", precision.rawValue]
        let pipe = Pipe()
        p.standardOutput = pipe
        let load = loadAverage()
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0, var obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw CLIError("benchmark case \(name) (\(precision.rawValue)) failed (exit \(p.terminationStatus))")
        }
        obj["loadavg"] = (load + loadAverage()) / 2
        if !opts.json {
            eprint(String(format: "  done: %@ %@: %.1f ms/step (load %.2f)", name, precision.rawValue,
                          (obj["ms_per_step"] as? Double) ?? .nan, (obj["loadavg"] as? Double) ?? .nan))
        }
        return obj
    }
}

/// "1.00×" against the fp32 row of the same case in `results`, or "".
func ratioToFP32(_ r: [String: Any], in results: [[String: Any]]) -> String {
    guard let name = r["case"] as? String, let ms = r["ms_per_step"] as? Double,
          let base = results.first(where: { ($0["case"] as? String) == name && ($0["precision_requested"] as? String) == "fp32" }),
          let b = base["ms_per_step"] as? Double else { return "" }
    return String(format: "%.2f×", b / ms)
}

func blasLine() -> [String: Any] {
    guard let i = try? BLAS.info() else { return ["kernel": "unavailable"] }
    return ["kernel": i.coreName, "threads": i.threads, "coretype_set_by_diffuseq": i.chosenCoreType ?? "", "profile": i.profile]
}

func printJSON(_ obj: Any) {
    if let d = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), let s = String(data: d, encoding: .utf8) { print(s) }
}

/// Shape of a benchmark case.
struct BenchShape {
    var name: String, config: ModelConfig, batch: Int
    static func all() -> [BenchShape] {
        [BenchShape(name: "base-b1", config: .base, batch: 1),
         BenchShape(name: "base-b16", config: .base, batch: 16),
         BenchShape(name: "small-b16", config: .small, batch: 16)]
    }
    /// The built-in model's training step: its shape and recipe batch, 64 sequences of 64 (`bench train --cases builtin-b64`).
    static let builtinTraining = BenchShape(name: "builtin-b64", config: builtin.config, batch: 64)
    /// The explorer's live-paraphrase workload: the built-in model's shape, one seed (`bench sample --cases builtin-b1`).
    static let builtin = BenchShape(name: "builtin-b1",
                                    config: ModelConfig(vocabSize: 7971, width: 256, layers: 6, heads: 4, ffn: 1024, seqLen: 64), batch: 1)
    /// Multiply-adds of one forward pass per token (encoder, projections, attention).
    var forwardMACsPerToken: Double {
        let c = config, C = Double(c.width), F = Double(c.ffn), D = Double(c.hiddenDim), T = Double(c.seqLen)
        let layer = 4 * C * C + 2 * C * F + 2 * T * C
        let proj = c.hasProjections ? (D * C + C * C + C * C + C * D) : 0
        return Double(c.layers) * layer + proj
    }
}

struct BenchSample: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sample",
        abstract: "ms per denoising step (model + rounding) and peak memory, random weights: base b1/b16, small b16.")
    @OptionGroup var opts: BenchOptions
    @OptionGroup var peer: PyTorchOptions

    func run() throws {
        try runReporting {
            if let c = opts.child { try child(c); return }
            let targets = ["base-b1": 100.0, "base-b16": 1300.0, "small-b16": 150.0, "builtin-b1": 10.0]
            let pytorch = ["base-b1": 194.0, "base-b16": 2340.0, "small-b16": 1020.0]
            let names = opts.cases.map { $0.split(separator: ",").map(String.init) } ?? BenchShape.all().map(\.name)
            if !opts.json { eprint("bench sample: \(names.joined(separator: ", ")) (each in its own process)") }
            let session = try peer.pytorch.map { _ in
                try PeerSession.start(peer, kind: .sample, names: names, skipNLL: false, steps: opts.repeats, quiet: opts.json)
            }
            let res = try runCases(names, subcommand: ["bench", "sample"], opts: opts, peer: session)
            if opts.json { printJSON(["blas": blasLine(), "cases": res].merging(session.map { ["pytorch": $0.report(res)] } ?? [:]) { $1 }); return }
            let b = blasLine()
            print("BLAS kernel \(b["kernel"] ?? "?"), \(b["threads"] ?? "?") threads; profile per case (builtin-b1 runs as the explorer does)")
            print("case        precision  ms/step (median)   target   PyTorch   vs PyTorch   peak MB   GEMM floor   ÷ floor   speed-up vs fp32   load   engine, BLAS profile; products")
            for r in res {
                let n = r["case"] as? String ?? "?", ms = (r["ms_per_step"] as? Double) ?? .nan
                let fl = (r["gemm_floor_ms"] as? Double) ?? .nan
                print(n.padding(toLength: 11, withPad: " ", startingAt: 0) + " " + ((r["precision_requested"] as? String) ?? "?").padding(toLength: 9, withPad: " ", startingAt: 0)
                      + String(format: " %12.1f %12.0f %9.0f %11.2fx %9.0f %12.1f %8.2f", ms, targets[n] ?? .nan,
                               pytorch[n] ?? .nan, (pytorch[n] ?? .nan) / ms, (r["peak_mb"] as? Double) ?? .nan, fl, ms / fl)
                      + "   " + ratioToFP32(r, in: res).padding(toLength: 16, withPad: " ", startingAt: 0)
                      + String(format: " %6.2f   ", (r["loadavg"] as? Double) ?? .nan)
                      + ((r["engine"] as? String) ?? "?") + ", " + ((r["blas_profile"] as? String) ?? "?") + "; " + ((r["matmul"] as? String) ?? "?"))
            }
            print("GEMM floor: the step's matrix products timed one by one in the same process, on the case's engine (bench gemm --verbose lists them).")
            print("Engines: packed = weights packed once, our \(SamplingEngine.packedISA) kernels on a pool of \(ComputeContext.process.threads) threads (runs of ≤ 512 positions); blas = OpenBLAS.")
            if session != nil { print("The PyTorch column above is the stored figure of 2026-12-02; the measured one follows.") }
            session?.printTable(res, rounds: opts.rounds)
        }
    }

    func child(_ name: String) throws {
        guard let shape = (BenchShape.all() + [BenchShape.builtin]).first(where: { $0.name == name }) else {
            throw CLIError("unknown case \(name) (cases: base-b1, base-b16, small-b16, builtin-b1)")
        }
        // The explorer's shape is timed with the explorer's BLAS profile (latency only when its products run on OpenBLAS).
        installCompute(latencyForBatchOne: name == BenchShape.builtin.name)
        let choice = try opts.applyChildPrecision(name == BenchShape.builtin.name ? .interactive : .batchSampling)
        let model = try TransformerNetModel(config: shape.config)
        model.initialise(seed: 1)
        let sampler = try DiffusionSampler(model: model, workload: name == BenchShape.builtin.name ? .interactive : .batchSampling)
        let T = shape.config.seqLen, B = shape.batch
        var ids = [Int](repeating: 0, count: B * T), mask = [Int](repeating: 1, count: B * T)
        for b in 0..<B { for t in 0..<(T / 2) { ids[b * T + t] = 1000 + t; mask[b * T + t] = 0 } }
        // Timed as `diffuseq sample` runs (no frames: only target rows are rounded): one warm-up run, then
        // `repeats` runs of 3 steps, each timed whole and divided by 3.
        let o = SamplerOptions(kind: .ddpm, steps: 3, decodeEveryStep: false)
        let seeds = (0..<B).map { UInt64($0) }
        _ = try sampler.run(ids: ids, mask: mask, batch: B, seeds: seeds, options: SamplerOptions(kind: .ddpm, steps: 1))
        var times: [Double] = []
        for _ in 0..<max(1, opts.repeats) {
            let t0 = Date()
            _ = try sampler.run(ids: ids, mask: mask, batch: B, seeds: seeds, options: o)
            times.append(Date().timeIntervalSince(t0) * 1000 / 3)
        }
        let peak = peakMemoryMB()
        let packed = sampler.usesPackedEngine(batch: B, seqLen: T)
        let floor = try GEMMFloor.measure(GEMMFloor.products(shape.config, batch: B, training: false,
                                                             roundedRows: mask.filter { $0 != 0 }.count), repeats: 3, packed: packed,
                                          matMul: packed ? nil : choice)
        printJSON(["case": name, "blas_profile": BLAS.isLatencyProfile ? "latency" : "throughput", "ms_per_step": median(Array(times)), "runs_timed": times.count,
                   "precision": choice.precision.rawValue,
                   "engine": packed ? "packed" : "blas", "matmul": packed ? "packed fp32" : sampler.matMul.summary,
                   "gemm_floor_ms": floor.reduce(0) { $0 + $1.stepSeconds } * 1000, "steps_per_run": 3, "batch": B,
                   "peak_mb": peak, "gflops_per_step": 2 * shape.forwardMACsPerToken * Double(B * T) / 1e9])
    }
}

struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "train",
        abstract: "ms per training step, tokens/s, GFLOP/s and peak memory: base and small, batch 16, seq 128, V 30,522.")
    @OptionGroup var opts: BenchOptions
    @OptionGroup var peer: PyTorchOptions
    @Flag(name: .customLong("pytorch-skip-nll"), help: "Run the PyTorch step without its logged-only terms[\"nll\"] (a full-vocabulary product every step; ours computes it every 10th step): the same work as ours.")
    var pytorchSkipNLL = false

    func run() throws {
        try runReporting {
            if let c = opts.child { try child(c); return }
            if pytorchSkipNLL && peer.pytorch == nil { throw CLIError("--pytorch-skip-nll goes with --pytorch") }
            let names = opts.cases.map { $0.split(separator: ",").map(String.init) } ?? ["small-b16", "base-b16"]
            let pytorch: [String: (Double, Double)] = ["base-b16": (11400, 6100), "small-b16": (2330, 2600)]
            let targets = ["base-b16": 5000.0, "small-b16": 800.0]
            if !opts.json { eprint("bench train: \(names.joined(separator: ", ")) (each in its own process)") }
            let session = try peer.pytorch.map { _ in
                try PeerSession.start(peer, kind: .train, names: names, skipNLL: pytorchSkipNLL, steps: max(2, opts.repeats), quiet: opts.json)
            }
            let res = try runCases(names, subcommand: ["bench", "train"], opts: opts, peer: session)
            if opts.json { printJSON(["blas": blasLine(), "cases": res].merging(session.map { ["pytorch": $0.report(res)] } ?? [:]) { $1 }); return }
            let b = blasLine()
            print("BLAS kernel \(b["kernel"] ?? "?"), \(b["threads"] ?? "?") threads, \(b["profile"] ?? "?") profile")
            print("case        precision  ms/step   target  PyTorch  speed-up   tokens/s   GFLOP/s   peak MB (PyTorch)   GEMM floor  ÷ floor  vs fp32   load   products")
            for r in res {
                let n = r["case"] as? String ?? "?", ms = (r["ms_per_step"] as? Double) ?? .nan
                let pt = pytorch[n] ?? (.nan, .nan)
                let fl = (r["gemm_floor_ms"] as? Double) ?? .nan
                print(n.padding(toLength: 11, withPad: " ", startingAt: 0) + " " + ((r["precision_requested"] as? String) ?? "?").padding(toLength: 9, withPad: " ", startingAt: 0)
                      + String(format: " %8.0f %8.0f %8.0f %8.2fx %10.0f %9.1f %9.0f (%.0f) %12.0f %8.2f", ms, targets[n] ?? .nan, pt.0,
                               pt.0 / ms, (r["tokens_per_s"] as? Double) ?? .nan, (r["gflops"] as? Double) ?? .nan,
                               (r["peak_mb"] as? Double) ?? .nan, pt.1, fl, ms / fl)
                      + "  " + ratioToFP32(r, in: res).padding(toLength: 7, withPad: " ", startingAt: 0)
                      + String(format: " %6.2f   ", (r["loadavg"] as? Double) ?? .nan) + ((r["matmul"] as? String) ?? "?"))
            }
            print("mean ms per step by phase (forward = network, head = loss terms + decoder_nll/nll, backward = network):")
            for r in res {
                let ph = (r["phases_ms"] as? [String: Double]) ?? [:]
                let parts = ["forward", "head", "backward", "optimizer"].map { String(format: "%@ %.0f", $0, ph[$0] ?? .nan) }
                print("  " + (r["case"] as? String ?? "?").padding(toLength: 11, withPad: " ", startingAt: 0) + " "
                      + ((r["precision_requested"] as? String) ?? "?").padding(toLength: 5, withPad: " ", startingAt: 0) + parts.joined(separator: " · "))
            }
            if session != nil { print("The PyTorch column above is the stored figure of 2026-12-02; the measured one follows.") }
            session?.printTable(res, rounds: opts.rounds)
        }
    }

    func child(_ name: String) throws {
        guard let shape = (BenchShape.all() + [BenchShape.builtinTraining]).first(where: { $0.name == name }) else {
            throw CLIError("unknown case \(name) (cases: small-b16, base-b16, builtin-b64)")
        }
        let choice = try opts.applyChildPrecision(.training)
        let c = shape.config, T = c.seqLen, B = shape.batch
        let model = try TransformerNetModel(config: c)
        model.initialise(seed: 1)
        var rng = SeededRandom(seed: 3)
        let examples = (0..<(B * 2)).map { i -> Seq2SeqExample in
            var ids = [Int](repeating: 0, count: T), mask = [Int](repeating: 1, count: T)
            for t in 0..<T { ids[t] = 1000 + rng.int(below: min(20000, c.vocabSize - 1000)); if t < T / 2 { mask[t] = 0 } }
            return Seq2SeqExample(src: "", trg: "", ids: ids, mask: mask, line: i + 1)
        }
        var o = TrainingOptions()
        o.batchSize = B; o.microbatch = B; o.steps = 1000; o.scheduleSampler = .uniform
        let trainer = try Trainer(model: model, examples: examples, options: o)
        _ = trainer.trainStep()  // warm-up
        trainer.resetPhases()
        var times: [Double] = []
        for _ in 0..<max(2, opts.repeats) { times.append(trainer.trainStep().seconds * 1000) }
        let phases = trainer.phaseSeconds.mapValues { $0 * 1000 / Double(times.count) }
        let ms = median(times)
        let V = Double(c.vocabSize), D = Double(c.hiddenDim), tokens = Double(B * T)
        // forward + backward of the network (3× forward) + decoder_nll's vocabulary GEMM (its backward is a sparse
        // gather/scatter, not counted) + the logged nll's one GEMM every nllEvery steps, averaged.
        let flops = 2 * (3 * shape.forwardMACsPerToken * tokens + tokens * V * D + tokens * V * D / Double(o.nllEvery))
        let peak = peakMemoryMB()
        let floor = try GEMMFloor.measure(GEMMFloor.products(c, batch: B, training: true), repeats: 3, matMul: choice)
        printJSON(["case": name, "ms_per_step": ms, "matmul": trainer.matMul.summary, "precision": choice.precision.rawValue, "tokens_per_s": tokens / (ms / 1000), "gflops": flops / (ms / 1000) / 1e9,
                   "peak_mb": peak, "batch": B, "seq_len": T, "phases_ms": phases,
                   "gemm_floor_ms": floor.reduce(0) { $0 + $1.stepSeconds } * 1000])
    }
}

struct BenchGEMM: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gemm",
        abstract: "The GEMM floor of each benchmark case: every matrix product of one step timed alone with this machine's OpenBLAS, summed.",
        discussion: """
        A step cannot be faster than its matrix products. Compare the floor with the targets of `bench sample` \
        and `bench train` (and with their measured ms/step): the difference is everything else (LayerNorm, \
        softmax, GELU, the rounding scan, memory traffic). --verbose lists every product.
        """)
    @Flag(name: .long, help: "Print one JSON object instead of a table.") var json = false
    @Flag(name: .long, help: "List every product with its time and GFLOP/s.") var verbose = false
    @Option(name: .long, help: "Timed calls per product (the median is used).") var repeats: Int = 5

    func run() throws {
        try runReporting {
            // The sample cases mirror `bench sample`: half of every sequence is source, so `diffuseq sample` rounds
            // half the rows; the explorer's frames round every row and add the lm_head read-out.
            let builtin = BenchShape.builtin.config
            let cases: [(String, [GEMMFloor.Product], Double)] = [
                ("sample base-b1", GEMMFloor.products(.base, batch: 1, training: false, roundedRows: 64), 100),
                ("sample base-b16", GEMMFloor.products(.base, batch: 16, training: false, roundedRows: 16 * 64), 1300),
                ("sample small-b16", GEMMFloor.products(.small, batch: 16, training: false, roundedRows: 16 * 64), 150),
                ("explore builtin-b1", GEMMFloor.products(builtin, batch: 1, training: false, readOut: true), 10),
                ("train small-b16", GEMMFloor.products(.small, batch: 16, training: true), 800),
                ("train base-b16", GEMMFloor.products(.base, batch: 16, training: true), 5000)]
            var rows: [[String: Any]] = []
            let b = blasLine()
            if !json {
                print("BLAS kernel \(b["kernel"] ?? "?"), \(b["threads"] ?? "?") threads; median of \(repeats) calls per product")
                print("case               GEMM floor ms   target ms   GFLOP/step   floor GFLOP/s")
            }
            for (name, products, target) in cases {
                let t = try GEMMFloor.measure(products, repeats: repeats)
                let ms = t.reduce(0) { $0 + $1.stepSeconds } * 1000
                let gf = t.reduce(0) { $0 + $1.product.flops } / 1e9
                rows.append(["case": name, "floor_ms": ms, "target_ms": target, "gflop_per_step": gf,
                             "products": t.map { ["what": $0.product.what, "m": $0.product.m, "n": $0.product.n, "k": $0.product.k,
                                                  "count": $0.product.count, "ms_per_step": $0.stepSeconds * 1000, "gflops": $0.gflops] }])
                if json { continue }
                print(name.padding(toLength: 18, withPad: " ", startingAt: 0) +
                      String(format: " %13.1f %11.0f %12.1f %15.0f", ms, target, gf, gf / (ms / 1000)))
                if verbose {
                    for x in t {
                        print(String(format: "    %-28@ %5d×%5d×%5d ×%-5d %9.2f ms %7.0f GFLOP/s", x.product.what as NSString,
                                     x.product.m, x.product.n, x.product.k, x.product.count, x.stepSeconds * 1000, x.gflops))
                    }
                }
            }
            if json { printJSON(["blas": b, "repeats": repeats, "cases": rows]) }
        }
    }
}

struct BenchExplore: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "explore",
        abstract: "Explorer responsiveness: key → redraw, Enter → first and last frame of a live 200-step paraphrase.")
    @OptionGroup var model: ModelOptions
    @Flag(name: .long, help: "Print one JSON object.") var json = false
    @Option(name: .long, help: "Steps of the live run.") var steps: Int = 200
    @Option(name: .long, help: "Live runs (the median is reported).") var repeats: Int = 5

    func run() throws {
        try runReporting {
            guard repeats >= 1 else { throw CLIError("--repeats must be at least 1") }
            guard steps >= 1 else { throw CLIError("--steps must be at least 1") }
            installCompute(latencyForBatchOne: true)  // as `diffuseq explore`
            let loaded = try model.load()
            let backend = try EngineBackend(loaded)
            let m = measureExplorerDetailed(backend: backend, steps: steps, repeats: repeats)
            let c = loaded.model.config
            let packed = backend.generator.sampler.usesPackedEngine(batch: 1, seqLen: c.seqLen)
            let floor = try GEMMFloor.measure(GEMMFloor.products(c, batch: 1, training: false, readOut: true), repeats: 3,
                                              packed: packed)
            let floorMs = floor.reduce(0) { $0 + $1.stepSeconds } * 1000
            let engine = packed ? "packed (\(SamplingEngine.packedISA), \(ComputeContext.process.threads) threads)" : "OpenBLAS"
            let last = m.runs.map(\.lastFrameMs)
            let obj: [String: Any] = ["model": loaded.name, "redraw_ms_mean": m.redraw.meanMs, "redraw_ms_p95": m.redraw.p95Ms,
                                      "map_redraw_ms_mean": m.mapRedraw.meanMs, "map_redraw_ms_p95": m.mapRedraw.p95Ms,
                                      "map_positions": m.mapPositions, "map_steps": m.mapSteps,
                                      "first_frame_ms": m.firstFrameMs, "last_frame_ms": m.lastFrameMs, "frames": m.frames,
                                      "ui_busy_ms": m.uiBusyMs, "runs": m.runs.count, "last_frame_ms_all": last,
                                      "first_frame_ms_all": m.runs.map(\.firstFrameMs), "gemm_floor_ms_per_step": floorMs,
                                      "engine": packed ? "packed" : "blas", "blas": blasLine()]
            if json { printJSON(obj); return }
            let b = blasLine()
            print("model \(loaded.name); sampling engine \(engine); BLAS kernel \(b["kernel"] ?? "?"), \(b["threads"] ?? "?") threads, \(b["profile"] ?? "?") profile")
            print(String(format: "key → redraw (120×40, 4 seeds): mean %.2f ms, p95 %.2f ms   (target ≤ 16 ms)", m.redraw.meanMs, m.redraw.p95Ms))
            print(String(format: "key → redraw, trajectory map open (120×40, %d steps × %d positions): mean %.2f ms, p95 %.2f ms   (target ≤ 16 ms)",
                         m.mapSteps, m.mapPositions, m.mapRedraw.meanMs, m.mapRedraw.p95Ms))
            print(String(format: "Enter → first frame: median %.1f ms of %d runs   (target ≤ 100 ms)", m.firstFrameMs, m.runs.count))
            print(String(format: "Enter → last frame (%d steps): median %.0f ms of %d runs, range %.0f–%.0f   (target ≤ 2000 ms)",
                         m.frames, m.lastFrameMs, m.runs.count, last.min() ?? .nan, last.max() ?? .nan))
            print(String(format: "  = %.2f ms per step; the step's matrix products alone (GEMM floor, %@ products, this process): %.2f ms → ÷ floor %.2f",
                         m.lastFrameMs / Double(max(1, m.frames)), (packed ? "packed" : "OpenBLAS") as NSString, floorMs,
                         m.lastFrameMs / Double(max(1, m.frames)) / floorMs))
            print(String(format: "UI thread busy during a run (applying frames, drawing): median %.0f ms", m.uiBusyMs))
        }
    }
}

struct BenchQuality: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "quality",
        abstract: "BLEU, ROUGE-L and wall time per sampler and step count, so you can choose.")
    @OptionGroup var model: ModelOptions
    @OptionGroup var absorbingOption: AbsorbingOption
    @Option(name: .long, help: "Folder with the split's jsonl (default: the built-in kjv2modern data).") var dataDir: String?
    @Option(name: .long, help: "Split.") var split: String = "test"
    @Option(name: .long, help: "Examples (the first N of the split).") var limit: Int = 50
    @Option(name: .long, help: "Seed.") var seed: UInt64 = 101
    @Option(name: .long, help: "Batch size.") var batchSize: Int = 50
    @Option(name: .long, help: "Runs as sampler:steps or sampler:steps:noround, comma-separated.") var runs: String = "ddpm:2000,ddpm:200,ddpm:50,ddim:50,dpm-solver++:20,dpm-solver++:10"
    @Flag(name: .long, help: "Print one JSON object.") var json = false

    func run() throws {
        try runReporting {
            Interrupt.install()
            let loaded = try model.load()
            let gen = try TextGenerator(loaded)
            let dir = try dataDir.map { URL(fileURLWithPath: $0) } ?? {
                guard let u = BuiltinData.url else { throw CLIError("pass --data-dir") }
                return u
            }()
            let (ex, _) = try Seq2SeqDataset.load(dataDir: dir, split: split, tokenizer: gen.tokenizer, seqLen: loaded.model.config.seqLen)
            let inputs = ex.prefix(limit).map { GenerationInput(ids: $0.ids, mask: $0.mask, origin: "\($0.line)") }
            var rows: [[String: Any]] = []
            for spec in runs.split(separator: ",") {
                let parts = spec.split(separator: ":")
                guard parts.count == 2 || (parts.count == 3 && parts[2] == "noround"),
                      let kind = SamplerKind(rawValue: String(parts[0])), let n = Int(parts[1]) else {
                    throw CLIError("--runs: \"\(spec)\" is not sampler:steps or sampler:steps:noround")
                }
                let rounding = parts.count == 2
                let steps = min(n, loaded.model.config.diffusionSteps)
                let t0 = Date()
                var options = SamplerOptions(kind: kind, steps: steps, rounding: rounding)
                options.absorbing = try absorbingOption.mode()
                let outs = try gen.generate(Array(inputs), seed: seed, batchSize: batchSize, options: options,
                                            isCancelled: { Interrupt.requested })
                let secs = Date().timeIntervalSince(t0)
                let samples = outs.map { EvaluationSample(recover: $0.recover, reference: $0.reference, source: $0.source) }
                let rep = try Evaluator.evaluate(sets: [(path: "run", samples: samples)], mbr: false, tokens: .bert)
                let f = rep.files[0]
                rows.append(["sampler": kind.rawValue + (rounding ? "" : " (no rounding)"), "steps": steps, "bleu": f.bleu, "rouge_l": f.rougeL, "seconds": secs])
                if !json { eprint(String(format: "  %@ %d: BLEU %.4f ROUGE-L %.4f  %.1f s", (kind.rawValue + (rounding ? "" : " no-round")) as NSString, steps, f.bleu, f.rougeL, secs)) }
            }
            if json { printJSON(["model": loaded.name, "examples": inputs.count, "runs": rows]); return }
            print("model \(loaded.name), \(inputs.count) examples of \(split), seed \(seed)")
            print("sampler                      steps     BLEU   ROUGE-L   wall s")
            for r in rows {
                let name = (r["sampler"] as? String ?? "").padding(toLength: 27, withPad: " ", startingAt: 0)
                print(name + String(format: " %6d %8.4f %9.4f %8.1f", r["steps"] as? Int ?? 0,
                                    r["bleu"] as? Double ?? .nan, r["rouge_l"] as? Double ?? .nan, r["seconds"] as? Double ?? .nan))
            }
        }
    }
}

/// The shipped kjv2modern data folder.
enum BuiltinData {
    static var url: URL? { BundledResources.url("data/kjv2modern") }
}
