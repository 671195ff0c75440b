import ArgumentParser
import Foundation

// `diffuseq bench train|sample --pytorch PYTHON`: the official PyTorch DiffuSeq code timed side by side with ours.
//
// The peer is Shark-NLP/DiffuSeq (branch main) run by the shared timing script `bench.py` of
// `shared/tools/pytorch-baseline` (its README): `PYTHON bench.py CONFIG BATCH NTRAIN NSAMPLE [--sb N] [--bf16]
// [--skip-nll]`, one `RESULT {json}` line per run. Its `setup.sh` unpacks the official code, the shims and the
// BERT configs into one folder ($TMP) and makes the venv; nothing of the official code is in this project, the
// bench only runs it from that folder. Every peer run is its own process with a timeout, alternating with ours
// (see `runCases`).

/// Where the official PyTorch code and its timing script are, and how long one run of it may take.
struct PyTorchOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Also time the official PyTorch DiffuSeq code with this Python (torch installed by shared/tools/pytorch-baseline/setup.sh), alternating with ours, in the precisions ours runs in (bf16 as torch.autocast); reports ours ÷ PyTorch for fp32 against fp32 and bf16 against bf16.", valueName: "python"))
    var pytorch: String?
    @Option(name: .customLong("pytorch-src"), help: ArgumentHelp("The folder setup.sh filled (diffuseq-src, dsq-shims, dsq-configs). Default: $DIFFUSEQ_PYTORCH_SRC, else $TMP, else $TMPDIR or /tmp, as setup.sh.", valueName: "dir"))
    var pytorchSrc: String?
    @Option(name: .customLong("pytorch-harness"), help: ArgumentHelp("The peer's timing script. Default: $DIFFUSEQ_PYTORCH_HARNESS, else the nearest shared/tools/pytorch-baseline/bench.py above the working directory or the diffuseq binary.", valueName: "bench.py"))
    var pytorchHarness: String?
    @Option(name: .customLong("pytorch-timeout"), help: ArgumentHelp("Seconds one PyTorch run (model set-up included) may take before it is stopped.", valueName: "seconds"))
    var pytorchTimeout: Double = 900
}

/// One of our benchmark cases as the peer's `bench.py` runs it: `CONFIG BATCH NTRAIN NSAMPLE [--sb BATCH]`.
struct PeerCase: Equatable {
    enum Kind: String { case train, sample }
    /// Our case name (`small-b16`).
    let name: String
    let kind: Kind
    /// bench.py's CONFIG: `base` (12×768) or `small` (6×256); both with V 30,522, T 128, hidden_dim 128.
    let config: String
    /// B of the training step or of the sampling batch.
    let batch: Int

    /// The peer's form of our case `name`, or nil when the peer has no such case (the built-in model's shapes).
    static func forCase(_ name: String, kind: Kind) -> PeerCase? {
        let known: [Kind: [String: (String, Int)]] = [
            .train: ["small-b16": ("small", 16), "base-b16": ("base", 16)],
            .sample: ["base-b1": ("base", 1), "base-b16": ("base", 16), "small-b16": ("small", 16)],
        ]
        guard let (config, batch) = known[kind]?[name] else { return nil }
        return PeerCase(name: name, kind: kind, config: config, batch: batch)
    }

    /// The folder of `dsq-configs` this case's CONFIG reads.
    var configFolder: String { config == "base" ? "bert-base-uncased" : config }

    /// bench.py's arguments (after the script): `steps` timed steps like ours' `--repeats`. Training runs
    /// `steps` steps after one warm-up; sampling runs `steps + 1` DDIM steps and bench.py drops the first.
    func arguments(steps: Int, bf16: Bool, skipNLL: Bool) -> [String] {
        var a = [config, String(batch)]
        switch kind {
        case .train: a += [String(max(2, steps)), "0"] + (skipNLL ? ["--skip-nll"] : [])
        case .sample: a += ["0", String(max(1, steps) + 1), "--sb", String(batch)]
        }
        return a + (bf16 ? ["--bf16"] : [])
    }

    /// The median step time (ms) in a RESULT object of this case.
    func medianMs(in result: [String: Any]) throws -> Double {
        let value: Any?
        switch kind {
        case .train: value = result["train_step_ms_median"]
        case .sample: value = (result["sample_b\(batch)"] as? [String: Any])?["step_ms_median"]
        }
        guard let ms = (value as? NSNumber)?.doubleValue, ms.isFinite else {
            let key = kind == .train ? "train_step_ms_median" : "sample_b\(batch).step_ms_median"
            throw CLIError("the PyTorch run of \(kind.rawValue) \(name) printed a RESULT without a number at \(key)")
        }
        return ms
    }
}

/// The peer's interpreter, code folder and timing script, checked before anything runs.
struct PyTorchPeer {
    let python: String
    /// The folder setup.sh filled ($TMP of setup.sh).
    let src: URL
    let harness: URL
    let timeout: Double
    /// `torch 2.15.0, transformers 4.57.6`, as the interpreter reported it.
    let versions: String

    /// The command that makes the peer's folder and venv, for error messages.
    static func setupCommand(src: String, harness: URL?) -> String {
        let dir = harness.map { $0.deletingLastPathComponent().path } ?? "shared/tools/pytorch-baseline"
        return "TMP=\(src) bash \(dir)/setup.sh OFFICIAL_GIT_DIR   (OFFICIAL_GIT_DIR: a git directory, e.g. a bare clone, of github.com/Shark-NLP/DiffuSeq; see \(dir)/README.md)"
    }

    /// Checks the interpreter, the timing script, the code folder (for `cases`) and that torch imports; every
    /// failure names what is missing and the set-up command.
    static func prepare(_ o: PyTorchOptions, cases: [PeerCase]) throws -> PyTorchPeer {
        guard let python = o.pytorch else { throw CLIError("--pytorch: no interpreter given") }
        guard o.pytorchTimeout > 0 else { throw CLIError("--pytorch-timeout must be positive") }
        let env = ProcessInfo.processInfo.environment
        let srcPath = o.pytorchSrc ?? env["DIFFUSEQ_PYTORCH_SRC"] ?? env["TMP"] ?? env["TMPDIR"] ?? "/tmp"
        let src = URL(fileURLWithPath: srcPath).standardizedFileURL
        let harness = try findHarness(o.pytorchHarness ?? env["DIFFUSEQ_PYTORCH_HARNESS"])
        let setup = setupCommand(src: src.path, harness: harness)
        guard let exe = resolveExecutable(python) else {
            throw CLIError("--pytorch \(python): no such executable. Make the peer's venv (its python is refenv/bin/python) with:\n  \(setup)")
        }
        let fm = FileManager.default
        var needed = ["diffuseq-src/train_util.py", "diffuseq-src/diffuseq/gaussian_diffusion.py", "dsq-shims"]
        for folder in Set(cases.map(\.configFolder)).sorted() { needed.append("dsq-configs/\(folder)/config.json") }
        let missing = needed.filter { !fm.fileExists(atPath: src.appendingPathComponent($0).path) }
        if !missing.isEmpty {
            throw CLIError("the official code is not set up in \(src.path) (--pytorch-src): missing \(missing.joined(separator: ", ")). Make it with:\n  \(setup)")
        }
        let probe = try runWithTimeout(exe, ["-c", "import torch, transformers; print('torch', torch.__version__ + ', transformers', transformers.__version__)"],
                                       environment: [:], timeout: 180)
        let said = probe.stdout.split(separator: "\n").last.map(String.init) ?? ""
        guard probe.status == 0, !probe.timedOut, said.hasPrefix("torch ") else {
            let why = probe.timedOut ? "timed out after 180 s" : lastLines(probe.stderr, 2)
            throw CLIError("--pytorch \(exe) cannot import torch and transformers (\(why)). Make the peer's venv with:\n  \(setup)")
        }
        return PyTorchPeer(python: exe, src: src, harness: harness, timeout: o.pytorchTimeout, versions: said)
    }

    /// The timing script: `explicit`, else the nearest `shared/tools/pytorch-baseline/bench.py` above the working
    /// directory or the binary.
    static func findHarness(_ explicit: String?) throws -> URL {
        let fm = FileManager.default
        if let e = explicit {
            guard fm.fileExists(atPath: e) else { throw CLIError("--pytorch-harness \(e): no such file (the peer's bench.py)") }
            return URL(fileURLWithPath: e).standardizedFileURL
        }
        let starts = [URL(fileURLWithPath: fm.currentDirectoryPath),
                      URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()]
        for start in starts {
            var dir = start.standardizedFileURL
            while true {
                let candidate = dir.appendingPathComponent("shared/tools/pytorch-baseline/bench.py")
                if fm.fileExists(atPath: candidate.path) { return candidate }
                let up = dir.deletingLastPathComponent()
                if up.path == dir.path { break }
                dir = up
            }
        }
        throw CLIError("cannot find the peer's timing script shared/tools/pytorch-baseline/bench.py above \(fm.currentDirectoryPath) or the binary; name it with --pytorch-harness or DIFFUSEQ_PYTORCH_HARNESS")
    }

    /// `name` if it is a path to an executable, else the first executable `name` on PATH.
    static func resolveExecutable(_ name: String) -> String? {
        let fm = FileManager.default
        if name.contains("/") { return fm.isExecutableFile(atPath: name) ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { fm.isExecutableFile(atPath: $0) }
    }

    /// One run of `c`: bench.py's RESULT object plus `ms_per_step` (its median), `args` and the load around it.
    func run(_ c: PeerCase, bf16: Bool, steps: Int, skipNLL: Bool) throws -> [String: Any] {
        let args = c.arguments(steps: steps, bf16: bf16, skipNLL: skipNLL)
        let what = "PyTorch \(c.kind.rawValue) \(c.name) \(bf16 ? "bf16" : "fp32")"
        let command = ([python, harness.path] + args).joined(separator: " ")
        let load = loadAverage()
        let r = try runWithTimeout(python, [harness.path] + args,
                                   environment: ["TMP": src.path, "DIFFUSEQ_SRC": src.appendingPathComponent("diffuseq-src").path,
                                                 "PYTHONUNBUFFERED": "1"],
                                   timeout: timeout)
        if r.timedOut {
            throw CLIError("\(what) did not finish in \(Int(timeout)) s (--pytorch-timeout) and was stopped; command: TMP=\(src.path) \(command)")
        }
        guard r.status == 0 else {
            throw CLIError("\(what) failed (exit \(r.status)): \(lastLines(r.stderr, 3))\n  command: TMP=\(src.path) \(command)")
        }
        var obj = try Self.parseResult(r.stdout, what: what)
        obj["ms_per_step"] = try c.medianMs(in: obj)
        obj["args"] = args
        obj["loadavg"] = (load + loadAverage()) / 2
        return obj
    }

    /// The object of the last `RESULT {json}` line of bench.py's standard output.
    static func parseResult(_ stdout: String, what: String) throws -> [String: Any] {
        guard let line = stdout.split(separator: "\n").last(where: { $0.hasPrefix("RESULT ") }) else {
            throw CLIError("\(what) printed no RESULT line (stdout ends: \(lastLines(stdout, 2)))")
        }
        let json = line.dropFirst("RESULT ".count)
        guard let obj = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else {
            throw CLIError("\(what) printed a RESULT line that is not a JSON object: \(json.prefix(200))")
        }
        return obj
    }
}

/// The last `n` non-empty lines of `s`, joined with " | " ("no output" when there are none).
func lastLines(_ s: String, _ n: Int) -> String {
    let lines = s.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    return lines.isEmpty ? "no output" : lines.suffix(n).joined(separator: " | ")
}

/// Runs `executable arguments` with `environment` added to ours. Output goes to temporary files, so no pipe
/// can fill up and block the child. After `timeout` seconds the child's process group (Foundation starts it in
/// one of its own) gets SIGTERM, then SIGKILL 5 s later.
func runWithTimeout(_ executable: String, _ arguments: [String], environment: [String: String], timeout: Double) throws
    -> (status: Int32, stdout: String, stderr: String, timedOut: Bool)
{
    let fm = FileManager.default
    let base = fm.temporaryDirectory.appendingPathComponent("diffuseq-peer-\(UUID().uuidString)")
    let outURL = base.appendingPathExtension("out"), errURL = base.appendingPathExtension("err")
    guard fm.createFile(atPath: outURL.path, contents: nil), fm.createFile(atPath: errURL.path, contents: nil),
          let out = FileHandle(forWritingAtPath: outURL.path), let err = FileHandle(forWritingAtPath: errURL.path) else {
        throw CLIError("cannot create temporary files in \(fm.temporaryDirectory.path)")
    }
    defer { try? fm.removeItem(at: outURL); try? fm.removeItem(at: errURL) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle(forReadingAtPath: "/dev/null")
    do { try p.run() } catch { throw CLIError("cannot start \(executable): \(error)") }
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(20_000) }
    var timedOut = false
    if p.isRunning {
        timedOut = true
        let pid = p.processIdentifier
        let target = getpgid(pid) == pid ? -pid : pid
        kill(target, SIGTERM)
        let grace = Date().addingTimeInterval(5)
        while p.isRunning && Date() < grace { usleep(20_000) }
        if p.isRunning { kill(target, SIGKILL) }
    }
    p.waitUntilExit()
    try? out.close(); try? err.close()
    let read = { (u: URL) in (try? String(contentsOf: u, encoding: .utf8)) ?? "" }
    return (p.terminationStatus, read(outURL), read(errURL), timedOut)
}

/// The three load averages of /proc/loadavg (1, 5 and 15 minutes).
func loadAverages() -> [Double] {
    guard let s = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return [] }
    return s.split(separator: " ").prefix(3).compactMap { Double($0) }
}

/// The peer's runs of one bench invocation, kept per (case, precision) over the rounds, and their comparison with ours.
final class PeerSession {
    let peer: PyTorchPeer
    let kind: PeerCase.Kind
    let skipNLL: Bool
    /// Timed steps per run (ours' `--repeats`).
    let steps: Int
    let quiet: Bool
    /// /proc/loadavg when the bench started.
    let loadStart = loadAverages()
    private var byKey: [String: [[String: Any]]] = [:]
    private var order: [String] = []
    /// Our cases the peer has no form of.
    private(set) var unsupported: [String] = []

    init(peer: PyTorchPeer, kind: PeerCase.Kind, skipNLL: Bool, steps: Int, quiet: Bool) {
        self.peer = peer; self.kind = kind; self.skipNLL = skipNLL; self.steps = steps; self.quiet = quiet
    }

    /// Checks the peer set-up for `names` (cases the peer lacks are only noted) and starts a session.
    static func start(_ o: PyTorchOptions, kind: PeerCase.Kind, names: [String], skipNLL: Bool, steps: Int, quiet: Bool) throws -> PeerSession {
        let cases = names.compactMap { PeerCase.forCase($0, kind: kind) }
        guard !cases.isEmpty else {
            throw CLIError("--pytorch: the official code has none of these cases (\(names.joined(separator: ", "))); it runs \(kind == .train ? "small-b16, base-b16" : "base-b1, base-b16, small-b16")")
        }
        let s = PeerSession(peer: try PyTorchPeer.prepare(o, cases: cases), kind: kind, skipNLL: skipNLL, steps: steps, quiet: quiet)
        s.unsupported = names.filter { PeerCase.forCase($0, kind: kind) == nil }
        if !quiet {
            eprint("PyTorch peer: \(s.peer.python) (\(s.peer.versions)), official code in \(s.peer.src.path), \(s.peer.harness.path)")
            for n in s.unsupported { eprint("  no PyTorch run for \(n) (the official code has no such case)") }
        }
        return s
    }

    /// The peer's precision for one of our result rows: the one asked for, or for `auto` the one it chose.
    static func peerPrecision(of ours: [String: Any]) -> String? {
        let asked = ours["precision_requested"] as? String
        return asked == "auto" ? ours["precision"] as? String : asked
    }

    /// Runs the peer on our case `name` once per precision the rows `ours` of this round ran in (fp32 before bf16).
    func runRound(_ name: String, ours: [[String: Any]]) throws {
        guard let c = PeerCase.forCase(name, kind: kind) else { return }
        let wanted = Set(ours.compactMap(Self.peerPrecision))
        for p in ["fp32", "bf16"] where wanted.contains(p) {
            var r = try peer.run(c, bf16: p == "bf16", steps: steps, skipNLL: skipNLL)
            r["case"] = name
            r["precision"] = p
            let key = name + "/" + p
            if byKey[key] == nil { order.append(key) }
            byKey[key, default: []].append(r)
            if !quiet {
                eprint(String(format: "  done: %@ PyTorch %@: %.1f ms/step (load %.2f)", name, p,
                              (r["ms_per_step"] as? Double) ?? .nan, (r["loadavg"] as? Double) ?? .nan))
            }
        }
    }

    /// One row per (case, precision): the median over the rounds of bench.py's per-run medians (`ms_rounds`).
    func rows() -> [[String: Any]] {
        order.map { key in
            let runs = byKey[key] ?? []
            let ms = runs.compactMap { $0["ms_per_step"] as? Double }
            var r: [String: Any] = ["case": runs[0]["case"] ?? "", "precision": runs[0]["precision"] ?? "",
                                    "ms_per_step": median(ms), "ms_rounds": ms, "args": runs[0]["args"] ?? [],
                                    "loadavg": median(runs.compactMap { $0["loadavg"] as? Double })]
            let peaks = runs.compactMap { ($0["peak_mb"] as? NSNumber)?.doubleValue }
            if !peaks.isEmpty { r["peak_mb"] = peaks.max() }
            for k in ["torch", "threads", "grad_dtypes", "mid_linear_out_dtypes"] { r[k] = runs[0][k] }
            return r
        }
    }

    /// Each of our rows beside the peer's row of its precision: `ratio` = our ms ÷ PyTorch's (below 1: ours is faster).
    func comparisons(_ ours: [[String: Any]]) -> [[String: Any]] {
        let peerRows = rows()
        return ours.compactMap { o in
            guard let name = o["case"] as? String, let p = Self.peerPrecision(of: o), let ms = o["ms_per_step"] as? Double,
                  let pr = peerRows.first(where: { ($0["case"] as? String) == name && ($0["precision"] as? String) == p }),
                  let pms = pr["ms_per_step"] as? Double else { return nil }
            return ["case": name, "precision": p, "ours_precision_requested": o["precision_requested"] ?? "",
                    "ours_products": o["matmul"] ?? "", "ours_ms": ms, "pytorch_ms": pms, "ratio_ours_over_pytorch": ms / pms,
                    "speedup_vs_pytorch": pms / ms, "pytorch_peak_mb": pr["peak_mb"] ?? NSNull()]
        }
    }

    /// What the comparison does not equalise, printed under the table and kept in the JSON.
    var notes: [String] {
        switch kind {
        case .sample:
            return ["The official sampler rounds all B×T rows to the nearest embedding at every step; ours rounds only "
                    + "the target rows (half of each sequence here): less work for the same output, part of the ratio."]
        case .train:
            return [skipNLL
                ? "PyTorch ran with --skip-nll: its logged-only terms[\"nll\"] (a full-vocabulary product every step) "
                    + "dropped, the same work as ours, which computes that logged value every 10th step only."
                : "PyTorch's step includes its logged-only terms[\"nll\"], a full-vocabulary product every step (ours "
                    + "computes it every 10th step); --pytorch-skip-nll drops it for a same-work comparison."]
        }
    }

    /// The `pytorch` object of `--json`.
    func report(_ ours: [[String: Any]]) -> [String: Any] {
        ["python": peer.python, "src": peer.src.path, "harness": peer.harness.path, "versions": peer.versions,
         "skip_nll": skipNLL, "loadavg_start": loadStart, "loadavg_end": loadAverages(), "runs": rows(),
         "comparisons": comparisons(ours), "no_peer_case": unsupported, "notes": notes]
    }

    /// The side-by-side table.
    func printTable(_ ours: [[String: Any]], rounds: Int) {
        let f3 = { (xs: [Double]) in xs.map { String(format: "%.2f", $0) }.joined(separator: " ") }
        print("")
        print("Side by side with the official PyTorch code (\(peer.versions); \(peer.src.path)/diffuseq-src), "
              + "medians over \(rounds) round\(rounds == 1 ? "" : "s"), ours and PyTorch alternating:")
        print("case        precision   ours ms/step   PyTorch ms/step   ours ÷ PyTorch   speed-up   PyTorch peak MB   PyTorch rounds ms    ours: products")
        for c in comparisons(ours) {
            let rounds = (rows().first { ($0["case"] as? String) == (c["case"] as? String) && ($0["precision"] as? String) == (c["precision"] as? String) }?["ms_rounds"] as? [Double]) ?? []
            let asked = (c["ours_precision_requested"] as? String) ?? ""
            let prec = ((c["precision"] as? String) ?? "?") + (asked == "auto" ? " (auto)" : "")
            print(((c["case"] as? String) ?? "?").padding(toLength: 11, withPad: " ", startingAt: 0) + " "
                  + prec.padding(toLength: 11, withPad: " ", startingAt: 0)
                  + String(format: " %12.1f %17.1f %16.2f %9.2f× %17.0f   ", (c["ours_ms"] as? Double) ?? .nan,
                           (c["pytorch_ms"] as? Double) ?? .nan, (c["ratio_ours_over_pytorch"] as? Double) ?? .nan,
                           (c["speedup_vs_pytorch"] as? Double) ?? .nan, (c["pytorch_peak_mb"] as? Double) ?? .nan)
                  + rounds.map { String(format: "%.0f", $0) }.joined(separator: ", ").padding(toLength: 18, withPad: " ", startingAt: 0)
                  + " " + ((c["ours_products"] as? String) ?? "?"))
        }
        print("PyTorch bf16 = torch.autocast(\"cpu\", dtype=torch.bfloat16) (training: forward, loss and backward; sampling: "
              + "the model, rounding in fp32); fp32 against fp32 and bf16 against bf16 is the fair pairing.")
        for n in notes { print("Note: " + n) }
        for n in unsupported { print("No PyTorch run for \(n): the official code has no such case.") }
        print("Load (/proc/loadavg): at start \(f3(loadStart)), at end \(f3(loadAverages())).")
    }
}
