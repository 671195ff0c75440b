import Foundation
import Testing

// `diffuseq bench train|sample --pytorch PYTHON` against a fake peer: a small Python script standing in for the
// venv's interpreter. It answers the torch probe (`-c …`), logs every bench.py command line it gets (with TMP
// and DIFFUSEQ_SRC) to $FAKE_PEER_LOG, and prints a RESULT line with fixed figures — or fails in the way
// $FAKE_PEER_MODE asks. Our side of the bench runs for real (small-b16, one repeat); nothing asserts a timing.

/// The fake interpreter, a harness file and a source folder laid out as setup.sh makes it.
struct FakePeer {
    let dir: URL
    var python: String { dir.appendingPathComponent("python").path }
    var harness: String { dir.appendingPathComponent("bench.py").path }
    var src: String { dir.appendingPathComponent("tmp").path }
    var log: URL { dir.appendingPathComponent("calls.jsonl") }

    static let script = #"""
        #!/usr/bin/env python3
        import json, os, sys, time
        mode = os.environ.get("FAKE_PEER_MODE", "ok")
        if sys.argv[1:2] == ["-c"]:
            if mode == "notorch":
                sys.exit("ModuleNotFoundError: No module named 'torch'")
            print("torch 9.9.9-fake, transformers 0.0-fake"); sys.exit(0)
        argv = sys.argv[1:]
        with open(os.environ["FAKE_PEER_LOG"], "a") as f:
            f.write(json.dumps({"argv": argv, "TMP": os.environ.get("TMP"), "DIFFUSEQ_SRC": os.environ.get("DIFFUSEQ_SRC")}) + "\n")
        print("Logging to /nowhere")
        if mode == "fail":
            print("Traceback (most recent call last):", file=sys.stderr)
            sys.exit("RuntimeError: fake peer failure")
        if mode == "hang":
            time.sleep(120)
        if mode == "noresult":
            sys.exit(0)
        if mode == "badjson":
            print("RESULT {not json"); sys.exit(0)
        pos = [a for a in argv[1:] if not a.startswith("--")]
        bf16 = "--bf16" in argv
        res = {"config": pos[0], "batch": int(pos[1]), "torch": "9.9.9-fake", "threads": 2, "bf16": bf16, "peak_mb": 1234.0}
        if int(pos[2]) > 0:
            res["train_step_ms_median"] = 400.0 if bf16 else 1000.0
        if int(pos[3]) > 0:
            sb = argv[argv.index("--sb") + 1]
            res["sample_b" + sb] = {"step_ms_median": 200.0 if bf16 else 300.0}
        print("RESULT " + json.dumps(res))
        """#

    init() throws {
        let fm = FileManager.default
        dir = fm.temporaryDirectory.appendingPathComponent("fake-peer-\(UUID().uuidString)")
        for sub in ["tmp/diffuseq-src/diffuseq", "tmp/dsq-shims", "tmp/dsq-configs/small", "tmp/dsq-configs/bert-base-uncased"] {
            try fm.createDirectory(at: dir.appendingPathComponent(sub), withIntermediateDirectories: true)
        }
        for f in ["tmp/diffuseq-src/train_util.py", "tmp/diffuseq-src/diffuseq/gaussian_diffusion.py",
                  "tmp/dsq-configs/small/config.json", "tmp/dsq-configs/bert-base-uncased/config.json", "bench.py"] {
            try "# placeholder\n".write(to: dir.appendingPathComponent(f), atomically: true, encoding: .utf8)
        }
        try Self.script.write(toFile: python, atomically: true, encoding: .utf8)
        try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: python)
    }

    func remove() { try? FileManager.default.removeItem(at: dir) }

    /// `diffuseq bench KIND … --pytorch FAKE` with the fake's folders and `mode`.
    func bench(_ args: [String], mode: String = "ok", timeout: Double = 300) throws -> CLI.Result {
        try CLI.run(["bench"] + args + ["--pytorch", python, "--pytorch-src", src, "--pytorch-harness", harness],
                    timeout: timeout, environment: ["FAKE_PEER_MODE": mode, "FAKE_PEER_LOG": log.path])
    }

    /// The logged calls: each one's bench.py arguments (after the script) and environment.
    func calls() throws -> [(args: [String], tmp: String, src: String)] {
        guard FileManager.default.fileExists(atPath: log.path) else { return [] }
        return try String(contentsOf: log, encoding: .utf8).split(separator: "\n").map { line in
            let o = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let argv = try #require(o["argv"] as? [String])
            #expect(argv.first == harness, "the harness comes first: \(argv)")
            return (Array(argv.dropFirst()), o["TMP"] as? String ?? "", o["DIFFUSEQ_SRC"] as? String ?? "")
        }
    }
}

@Suite("bench --pytorch (fake peer)")
struct BenchPyTorchCLITests {
    static func json(_ r: CLI.Result) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "stdout: \(r.stdout)")
    }

    @Test("bench sample: the peer runs small-b16 in fp32 and bf16 every round, its RESULTs parsed into medians and ratios")
    func sampleSideBySide() throws {
        let fake = try FakePeer()
        defer { fake.remove() }
        let r = try fake.bench(["sample", "--cases", "small-b16,builtin-b1", "--precision", "fp32,bf16", "--repeats", "1",
                                "--rounds", "2", "--json"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let calls = try fake.calls()
        let oneRound = [["small", "16", "0", "2", "--sb", "16"], ["small", "16", "0", "2", "--sb", "16", "--bf16"]]
        #expect(calls.map(\.args) == oneRound + oneRound)
        #expect(calls.allSatisfy { $0.tmp == fake.src && $0.src == fake.src + "/diffuseq-src" })
        let o = try Self.json(r)
        let pt = try #require(o["pytorch"] as? [String: Any])
        let runs = try #require(pt["runs"] as? [[String: Any]])
        #expect(runs.map { $0["precision"] as? String } == ["fp32", "bf16"])
        #expect(runs.map { $0["ms_per_step"] as? Double } == [300, 200])
        #expect(runs.map { ($0["ms_rounds"] as? [Double])?.count } == [2, 2])
        #expect(runs.allSatisfy { ($0["peak_mb"] as? Double) == 1234 })
        let ours = try #require(o["cases"] as? [[String: Any]])
        let comps = try #require(pt["comparisons"] as? [[String: Any]])
        #expect(comps.count == 2)
        for (c, peerMs) in zip(comps, [300.0, 200.0]) {
            let mine = try #require(ours.first { $0["case"] as? String == "small-b16" && $0["precision_requested"] as? String == c["precision"] as? String })
            let ms = try #require(mine["ms_per_step"] as? Double)
            #expect(c["pytorch_ms"] as? Double == peerMs && c["ours_ms"] as? Double == ms)
            // JSON prints a Double in its shortest round-trip form, which the parser need not read back to the
            // last bit of the quotient computed here: compare to 1e-12 relative.
            let ratio = try #require(c["ratio_ours_over_pytorch"] as? Double)
            #expect(abs(ratio - ms / peerMs) <= 1e-12 * ms / peerMs)
        }
        #expect(pt["no_peer_case"] as? [String] == ["builtin-b1"])
        #expect((pt["loadavg_start"] as? [Double])?.count == 3 && (pt["loadavg_end"] as? [Double])?.count == 3)
        #expect(pt["versions"] as? String == "torch 9.9.9-fake, transformers 0.0-fake")
        #expect(((pt["notes"] as? [String]) ?? []).joined().contains("rounds all B×T rows"))
    }

    @Test("bench train: ours and the peer alternate per case, --pytorch-skip-nll reaches bench.py, the table shows both ratios and the load")
    func trainTable() throws {
        let fake = try FakePeer()
        defer { fake.remove() }
        let r = try fake.bench(["train", "--cases", "small-b16", "--precision", "fp32,bf16", "--repeats", "1", "--pytorch-skip-nll"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(try fake.calls().map(\.args) == [["small", "16", "2", "0", "--skip-nll"], ["small", "16", "2", "0", "--skip-nll", "--bf16"]])
        let done = r.stderr.split(separator: "\n").filter { $0.contains("done: small-b16") }.map { String($0) }
        #expect(done.count == 4 && done[0].contains(" fp32:") && done[1].contains(" bf16:")
                && done[2].contains("PyTorch fp32: 1000.0 ms/step") && done[3].contains("PyTorch bf16: 400.0 ms/step"), "\(done)")
        let table = r.stdout.split(separator: "\n").map(String.init)
        let rows = table.filter { $0.hasPrefix("small-b16   fp32 ") || $0.hasPrefix("small-b16   bf16 ") }
        #expect(rows.count == 2 + 2, "the bench's own table and the side-by-side one: \(r.stdout)")
        #expect(rows.contains { $0.hasPrefix("small-b16   fp32") && $0.contains(" 1000.0 ") }, "\(r.stdout)")
        #expect(rows.contains { $0.hasPrefix("small-b16   bf16") && $0.contains(" 400.0 ") }, "\(r.stdout)")
        #expect(r.stdout.contains("Load (/proc/loadavg): at start ") && r.stdout.contains("PyTorch ran with --skip-nll"), "\(r.stdout)")
    }

    @Test("--precision auto: the peer runs in the precision ours chose")
    func autoFollowsOurChoice() throws {
        let fake = try FakePeer()
        defer { fake.remove() }
        let r = try fake.bench(["sample", "--cases", "small-b16", "--precision", "auto", "--repeats", "1", "--json"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let ours = try #require((try Self.json(r)["cases"] as? [[String: Any]])?.first)
        let chosen = try #require(ours["precision"] as? String)
        let bf16 = ["small", "16", "0", "2", "--sb", "16", "--bf16"]
        #expect(try fake.calls().map(\.args) == [chosen == "bf16" ? bf16 : Array(bf16.dropLast())])
    }

    @Test("a failing peer, one without a RESULT, a bad RESULT and a hung one give a clear error (exit 1)")
    func peerFailures() throws {
        let fake = try FakePeer()
        defer { fake.remove() }
        let base = ["sample", "--cases", "small-b16", "--precision", "fp32", "--repeats", "1"]
        let expected = ["fail": "PyTorch sample small-b16 fp32 failed (exit 1): Traceback (most recent call last): | RuntimeError: fake peer failure",
                        "noresult": "PyTorch sample small-b16 fp32 printed no RESULT line (stdout ends: Logging to /nowhere)",
                        "badjson": "PyTorch sample small-b16 fp32 printed a RESULT line that is not a JSON object: {not json",
                        "hang": "PyTorch sample small-b16 fp32 did not finish in 2 s (--pytorch-timeout) and was stopped"]
        for (mode, message) in expected.sorted(by: { $0.key < $1.key }) {
            let r = try fake.bench(base + ["--pytorch-timeout", "2"], mode: mode, timeout: 120)
            #expect(r.status == 1 && r.stderr.contains("error: " + message), "\(mode): \(r.stderr)")
        }
    }

    @Test("a missing interpreter, one without torch, a missing source folder or no peer case: an error naming it, before anything runs")
    func setupErrors() throws {
        let fake = try FakePeer()
        defer { fake.remove() }
        let sample = ["bench", "sample", "--cases", "small-b16", "--pytorch-harness", fake.harness]
        let missing = try CLI.run(sample + ["--pytorch", fake.dir.appendingPathComponent("nope/python").path, "--pytorch-src", fake.src])
        #expect(missing.status == 1 && missing.stderr.contains("error: --pytorch \(fake.dir.path)/nope/python: no such executable")
                && missing.stderr.contains("TMP=\(fake.src) bash \(fake.dir.path)/setup.sh OFFICIAL_GIT_DIR"), "\(missing.stderr)")
        let noTorch = try fake.bench(["sample", "--cases", "small-b16"], mode: "notorch")
        #expect(noTorch.status == 1 && noTorch.stderr.contains("cannot import torch and transformers (ModuleNotFoundError: No module named 'torch')"),
                "\(noTorch.stderr)")
        let empty = fake.dir.appendingPathComponent("empty").path
        let noSrc = try CLI.run(sample + ["--pytorch", fake.python, "--pytorch-src", empty])
        #expect(noSrc.status == 1 && noSrc.stderr.contains("the official code is not set up in \(empty) (--pytorch-src): missing diffuseq-src/train_util.py")
                && noSrc.stderr.contains("TMP=\(empty) bash "), "\(noSrc.stderr)")
        let noCase = try fake.bench(["train", "--cases", "builtin-b64"])
        #expect(noCase.status == 1 && noCase.stderr.contains("the official code has none of these cases (builtin-b64)"), "\(noCase.stderr)")
        let noPeer = try CLI.run(["bench", "train", "--pytorch-skip-nll"])
        #expect(noPeer.status == 1 && noPeer.stderr.contains("--pytorch-skip-nll goes with --pytorch"))
        #expect(try fake.calls().isEmpty, "no bench.py run may start")
        #expect(!missing.stderr.contains("done:") && !noSrc.stderr.contains("done:"), "ours must not run first")
    }
}
