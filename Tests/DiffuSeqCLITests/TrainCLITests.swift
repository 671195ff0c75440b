import DiffuSeqCore
import Foundation
import Testing

// End-to-end tests of `diffuseq train` (and train → sample → eval), running the built binary as a
// subprocess on tiny data written to a temporary folder, with a tiny model (1 layer × 16, V ≈ 30, L 12,
// T 20). They fail (CLIUnavailable) when no `diffuseq` binary is found (see ExploreCLITests / `CLI.binary`).

/// Helpers for the training tests.
enum TrainCLI {
    static let words = ["the", "cat", "dog", "sat", "ran", "on", "mat", "a", "big", "small", "red", "blue", "house",
                        "tree", "saw", "bird", "fish", "sun", "moon", "is", "was", "here", "there", "we", "you", "go"]

    /// A fresh temporary folder.
    static func tempDir(_ tag: String) throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("train-cli-\(tag)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    /// `n` jsonl lines of short random sentences (deterministic).
    static func lines(_ n: Int, seed: Int) -> [String] {
        var x = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 &+ 1
        func next(_ k: Int) -> Int { x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407; return Int((x >> 33) % UInt64(k)) }
        return (0..<n).map { _ in
            let src = (0..<(2 + next(3))).map { _ in words[next(words.count)] }.joined(separator: " ")
            let trg = (0..<(2 + next(3))).map { _ in words[next(words.count)] }.joined(separator: " ")
            return #"{"src": "\#(src)", "trg": "\#(trg)"}"#
        }
    }

    /// A data folder (train/valid/test.jsonl) and a custom vocabulary file; returns (folder, vocab path).
    static func data(trainLines: [String]? = nil) throws -> (URL, String) {
        let d = try tempDir("data")
        func write(_ name: String, _ ls: [String]) throws {
            try (ls.joined(separator: "\n") + "\n").write(to: d.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        try write("train.jsonl", trainLines ?? lines(24, seed: 1))
        try write("valid.jsonl", lines(4, seed: 2))
        try write("test.jsonl", lines(6, seed: 3))
        let vocab = d.appendingPathComponent("vocab.txt")
        try (words.joined(separator: "\n") + "\n").write(to: vocab, atomically: true, encoding: .utf8)
        return (d, vocab.path)
    }

    /// The tiny model flags (with a custom vocabulary file).
    static func tiny(vocab: String) -> [String] {
        ["--vocab", vocab, "--layers", "1", "--width", "16", "--heads", "2", "--ffn", "32", "--hidden-dim", "8",
         "--hidden-t-dim", "8", "--seq-len", "12", "--diffusion-steps", "20", "--batch-size", "4", "--threads", "1"]
    }

    /// `diffuseq train` with the tiny model on `data` into `out`, plus `extra`.
    static func train(_ data: URL, _ vocab: String, out: URL, _ extra: [String]) throws -> CLI.Result {
        try CLI.run(["train", "--data-dir", data.path, "--output", out.path] + tiny(vocab: vocab) + extra, timeout: 120)
    }

    /// Starts the binary, calls `until` every 5 ms while it runs; when it returns true, sends `signal`.
    /// Returns the result and whether the signal was sent while the process was still running.
    static func runAndTerminate(_ args: [String], timeout: Double = 120, signal: Int32 = SIGTERM,
                                until: () -> Bool) throws -> (CLI.Result, Bool) {
        guard let binary = CLI.binary else { throw CLIUnavailable() }
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        final class Box: @unchecked Sendable { var data = Data() }
        let o = Box(), e = Box()
        let group = DispatchGroup()
        try p.run()
        DispatchQueue.global().async(group: group) { o.data = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { e.data = err.fileHandleForReading.readDataToEndOfFile() }
        let deadline = Date().addingTimeInterval(timeout)
        var signalled = false
        while p.isRunning && Date() < deadline {
            if !signalled && until() {
                signalled = p.isRunning
                kill(p.processIdentifier, signal)
            }
            usleep(5_000)
        }
        // SIGKILL, not terminate(): a run that ignores SIGTERM must not hang the test.
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        group.wait()
        return (CLI.Result(status: p.terminationStatus, stdout: String(decoding: o.data, as: UTF8.self),
                           stderr: String(decoding: e.data, as: UTF8.self)), signalled)
    }

    /// `ckpt-*` folder names in `out`, sorted.
    static func checkpoints(_ out: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: out.path)) ?? []).filter { $0.hasPrefix("ckpt-") }.sorted()
    }

    /// The log lines without the wall-clock field: every number exactly as printed.
    static func logLines(_ out: URL) throws -> [String] {
        let text = try String(contentsOf: out.appendingPathComponent("train_log.jsonl"), encoding: .utf8)
        return text.split(separator: "\n").map { line in
            line.split(separator: ",").filter { !$0.contains("\"seconds\"") }.joined(separator: ",")
        }
    }

    /// The printed "loss" value of every log line, as a string.
    static func losses(_ out: URL) throws -> [String] {
        try logLines(out).map { l in
            let part = l.split(separator: ",").first { $0.contains("\"loss\"") } ?? ""
            return String(part.split(separator: ":").last ?? "").trimmingCharacters(in: .whitespaces)
        }
    }

    static func bytes(_ url: URL) -> Data? { try? Data(contentsOf: url) }
}

@Suite
struct TrainCLITests {
    // MARK: Resume

    @Test("20 steps straight == 10 steps, --resume, 10 more (log and final weights bit-identical)")
    func resumeEquivalence() throws {
        let (data, vocab) = try TrainCLI.data()
        let root = try TrainCLI.tempDir("resume")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: root) }
        let a = root.appendingPathComponent("a"), b = root.appendingPathComponent("b")
        let common = ["--steps", "20", "--save-interval", "5", "--seed", "7"]
        let ra = try TrainCLI.train(data, vocab, out: a, common)
        #expect(ra.status == 0, "stderr: \(ra.stderr)")
        let rb1 = try TrainCLI.train(data, vocab, out: b, common + ["--stop-after", "10"])
        #expect(rb1.status == 0, "stderr: \(rb1.stderr)")
        #expect(TrainCLI.checkpoints(b).last == "ckpt-000010")
        #expect(try TrainCLI.losses(b).count == 10)
        let rb2 = try CLI.run(["train", "--resume", b.path, "--threads", "1"], timeout: 120)
        #expect(rb2.status == 0, "stderr: \(rb2.stderr)")
        #expect(rb2.stderr.contains("resuming"), "stderr: \(rb2.stderr)")

        let la = try TrainCLI.losses(a), lb = try TrainCLI.losses(b)
        #expect(la.count == 20 && la == lb, "straight \(la)\nresumed  \(lb)")
        #expect(try TrainCLI.logLines(a) == TrainCLI.logLines(b))
        for file in ["model.safetensors", "state.safetensors", "vocab.txt"] {
            let fa = TrainCLI.bytes(a.appendingPathComponent("ckpt-000020/\(file)"))
            let fb = TrainCLI.bytes(b.appendingPathComponent("ckpt-000020/\(file)"))
            #expect(fa != nil && fa == fb, "ckpt-000020/\(file) differs")
        }
        // keep-checkpoints 3 (default): only the newest three remain.
        #expect(TrainCLI.checkpoints(a) == ["ckpt-000010", "ckpt-000015", "ckpt-000020"])
    }

    @Test("--resume --steps N extends a finished run into another folder (whole log kept); fixed flags are refused")
    func extendRun() throws {
        let (data, vocab) = try TrainCLI.data()
        let root = try TrainCLI.tempDir("extend")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: root) }
        let a = root.appendingPathComponent("a"), b = root.appendingPathComponent("b")
        let ra = try TrainCLI.train(data, vocab, out: a, ["--steps", "6", "--save-interval", "3", "--seed", "4"])
        #expect(ra.status == 0, "stderr: \(ra.stderr)")
        let ckpt = a.appendingPathComponent("ckpt-000006")
        let bad = try CLI.run(["train", "--resume", ckpt.path, "--lr", "0.1", "--steps", "9"], timeout: 60)
        #expect(bad.status != 0 && bad.stderr.contains("--lr") && bad.stderr.contains("cannot change on --resume"), "stderr: \(bad.stderr)")
        let short = try CLI.run(["train", "--resume", ckpt.path, "--steps", "6", "--output", b.path], timeout: 60)
        #expect(short.status != 0 && short.stderr.contains("already at step 6"), "stderr: \(short.stderr)")
        let rb = try CLI.run(["train", "--resume", ckpt.path, "--steps", "9", "--output", b.path], timeout: 120)
        #expect(rb.status == 0, "stderr: \(rb.stderr)")
        #expect(rb.stderr.contains("extending the schedule from 6 to 9 steps"), "stderr: \(rb.stderr)")
        #expect(TrainCLI.checkpoints(b).last == "ckpt-000009")
        let la = try TrainCLI.logLines(a), lb = try TrainCLI.logLines(b)
        #expect(lb.count == 9 && Array(lb.prefix(6)) == la, "the new folder's log starts with the original run's 6 steps")
        #expect(TrainCLI.checkpoints(a).last == "ckpt-000006", "the original folder is untouched")
    }

    @Test("--init-from starts a new run from a checkpoint's weights; other shapes, --resume and missing files are refused")
    func initFrom() throws {
        let (data, vocab) = try TrainCLI.data()
        let root = try TrainCLI.tempDir("initfrom")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: root) }
        let a = root.appendingPathComponent("a"), b = root.appendingPathComponent("b"), c = root.appendingPathComponent("c")
        let ra = try TrainCLI.train(data, vocab, out: a, ["--steps", "3", "--save-interval", "3", "--seed", "4"])
        #expect(ra.status == 0, "stderr: \(ra.stderr)")
        let ckpt = a.appendingPathComponent("ckpt-000003")
        // A learning rate of 1e-30 leaves the weights where they start: the checkpoint's, not a random draw.
        let rb = try TrainCLI.train(data, vocab, out: b, ["--steps", "2", "--save-interval", "2", "--seed", "5", "--lr", "1e-30",
                                                          "--init-from", ckpt.path])
        #expect(rb.status == 0 && rb.stderr.contains("init: weights from"), "stderr: \(rb.stderr)")
        let wa = try ModelCheckpoint.load(ckpt).model.params.array
        let wb = try ModelCheckpoint.load(b.appendingPathComponent("ckpt-000002")).model.params.array
        var worst: Float = 0
        for i in 0..<wa.count { worst = max(worst, abs(wa[i] - wb[i]) / max(1, abs(wa[i]))) }
        #expect(wa.count == wb.count && worst <= 1e-6, "max relative difference \(worst)")
        let rc = try TrainCLI.train(data, vocab, out: c, ["--steps", "2", "--save-interval", "2", "--seed", "5", "--lr", "1e-30"])
        #expect(rc.status == 0)
        let wc = try ModelCheckpoint.load(c.appendingPathComponent("ckpt-000002")).model.params.array
        #expect(wc != wb, "without --init-from the run starts from its own random weights")
        // Refusals: another width, --resume, a missing checkpoint.
        var wide = TrainCLI.tiny(vocab: vocab)
        wide[wide.firstIndex(of: "--width")! + 1] = "32"
        let bad = try CLI.run(["train", "--data-dir", data.path, "--output", root.appendingPathComponent("d").path, "--steps", "2",
                               "--init-from", ckpt.path] + wide, timeout: 60)
        #expect(bad.status != 0 && bad.stderr.contains("width is 16 in the checkpoint but 32 in this run"), "stderr: \(bad.stderr)")
        let both = try CLI.run(["train", "--resume", ckpt.path, "--init-from", ckpt.path], timeout: 60)
        #expect(both.status != 0 && both.stderr.contains("cannot be combined with --resume"), "stderr: \(both.stderr)")
        let missing = try TrainCLI.train(data, vocab, out: root.appendingPathComponent("e"),
                                         ["--steps", "2", "--init-from", root.appendingPathComponent("nope").path])
        #expect(missing.status != 0 && missing.stderr.contains("nope"), "stderr: \(missing.stderr)")
    }

    @Test("SIGTERM mid-run: exit 130 with a checkpoint of the interrupted step; --resume ends like a straight run")
    func sigtermThenResume() throws {
        let (data, vocab) = try TrainCLI.data()
        let root = try TrainCLI.tempDir("sigterm")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: root) }
        let a = root.appendingPathComponent("a"), b = root.appendingPathComponent("b")
        // ≈0.5 ms per step: 4000 steps leave time to interrupt after the first checkpoint (step 200).
        let steps = 4000
        let common = ["--steps", "\(steps)", "--save-interval", "200", "--seed", "9"]
        let ra = try TrainCLI.train(data, vocab, out: a, common)
        #expect(ra.status == 0, "stderr: \(ra.stderr)")

        let args = ["train", "--data-dir", data.path, "--output", b.path] + TrainCLI.tiny(vocab: vocab) + common
        let (rb, signalled) = try TrainCLI.runAndTerminate(args, timeout: 60) { !TrainCLI.checkpoints(b).isEmpty }
        try #require(signalled, "the run finished before it could be interrupted; stderr: \(rb.stderr)")
        #expect(rb.status == 130, "exit \(rb.status); stderr: \(rb.stderr)")
        #expect(rb.stderr.contains("interrupted at step"), "stderr: \(rb.stderr)")
        #expect(!rb.stderr.contains("Fatal error"))
        // The newest checkpoint is the step the log stops at, and it is complete.
        let logged = try TrainCLI.losses(b).count
        let newest = try #require(TrainCLI.checkpoints(b).last)
        #expect(newest == String(format: "ckpt-%06d", logged), "\(newest) vs \(logged) log lines")
        #expect(logged < steps)
        for f in ["model.safetensors", "state.safetensors", "state.json", "training_args.json", "vocab.txt"] {
            #expect(FileManager.default.fileExists(atPath: b.appendingPathComponent("\(newest)/\(f)").path), "\(f) missing")
        }
        #expect(!((try? FileManager.default.contentsOfDirectory(atPath: b.path)) ?? []).contains { $0.contains(".tmp") })

        let rb2 = try CLI.run(["train", "--resume", b.path, "--threads", "1"], timeout: 120)
        #expect(rb2.status == 0, "stderr: \(rb2.stderr)")
        let la = try TrainCLI.losses(a), lb = try TrainCLI.losses(b)
        #expect(la.count == steps && la == lb, "first difference at line \(la.indices.first { $0 >= lb.count || la[$0] != lb[$0] } ?? -1)")
        let final = String(format: "ckpt-%06d/model.safetensors", steps)
        #expect(TrainCLI.bytes(a.appendingPathComponent(final)) == TrainCLI.bytes(b.appendingPathComponent(final)))
    }

    // MARK: Bad input

    @Test("bad training lines name the file and line; --skip-bad-lines skips and counts them",
          arguments: [
              (#"{"src": "the cat", "trg": "a dog"#, "bad JSON"),
              (#"{"src": "the cat"}"#, #"missing "trg""#),
              (#"{"src": "the cat", "trg": "   "}"#, "empty"),
              ("INVALID-UTF8", "invalid UTF-8"),
          ])
    func badLine(line: String, problem: String) throws {
        var ls = TrainCLI.lines(12, seed: 4)
        ls[2] = line == "INVALID-UTF8" ? "PLACEHOLDER" : line
        let (data, vocab) = try TrainCLI.data(trainLines: ls)
        let root = try TrainCLI.tempDir("bad")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: root) }
        let trainFile = data.appendingPathComponent("train.jsonl")
        if line == "INVALID-UTF8" {
            var bytes = try Data(contentsOf: trainFile)
            let r = try #require(bytes.range(of: Data("PLACEHOLDER".utf8)))
            bytes.replaceSubrange(r, with: Data(#"{"src": "the "#.utf8) + Data([0xC3, 0x28, 0xFF]) + Data(#"", "trg": "a"}"#.utf8))
            try bytes.write(to: trainFile)
        }
        let out = root.appendingPathComponent("out")
        let r = try TrainCLI.train(data, vocab, out: out, ["--steps", "3"])
        #expect(r.status == 1, "exit \(r.status); stderr: \(r.stderr)")
        #expect(r.stderr.contains("train.jsonl:3"), "stderr: \(r.stderr)")
        #expect(r.stderr.contains(problem), "stderr: \(r.stderr)")
        #expect(TrainCLI.checkpoints(out).isEmpty)

        let r2 = try TrainCLI.train(data, vocab, out: out, ["--steps", "3", "--skip-bad-lines"])
        #expect(r2.status == 0, "stderr: \(r2.stderr)")
        #expect(r2.stderr.contains("skipped 1 malformed line"), "stderr: \(r2.stderr)")
        #expect(r2.stderr.contains("11 training pairs"), "stderr: \(r2.stderr)")
        #expect(TrainCLI.checkpoints(out) == ["ckpt-000003"])
    }

    @Test("usage errors: unknown flag, missing --output, an output path under a regular file, an existing run")
    func usageErrors() throws {
        let (data, vocab) = try TrainCLI.data()
        let root = try TrainCLI.tempDir("usage")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: root) }
        let unknown = try TrainCLI.train(data, vocab, out: root.appendingPathComponent("o1"), ["--no-such-flag", "3"])
        #expect(unknown.status != 0 && unknown.status != 130)
        #expect(unknown.stderr.contains("--no-such-flag"), "stderr: \(unknown.stderr)")

        let noOut = try CLI.run(["train", "--data-dir", data.path, "--steps", "2"] + TrainCLI.tiny(vocab: vocab))
        #expect(noOut.status == 1, "stderr: \(noOut.stderr)")
        #expect(noOut.stderr.contains("--output"), "stderr: \(noOut.stderr)")

        let file = root.appendingPathComponent("plain-file")
        try Data("x".utf8).write(to: file)
        let bad = try TrainCLI.train(data, vocab, out: file.appendingPathComponent("out"), ["--steps", "2"])
        #expect(bad.status == 1, "exit \(bad.status); stderr: \(bad.stderr)")
        #expect(bad.stderr.contains("error:") && bad.stderr.contains(file.appendingPathComponent("out").path),
                "stderr: \(bad.stderr)")
        #expect(!bad.stderr.contains("Fatal error"))

        let out = root.appendingPathComponent("o2")
        #expect(try TrainCLI.train(data, vocab, out: out, ["--steps", "2"]).status == 0)
        let again = try TrainCLI.train(data, vocab, out: out, ["--steps", "2"])
        #expect(again.status == 1 && again.stderr.contains("--resume"), "stderr: \(again.stderr)")
    }

    // MARK: Divergence, interruption

    @Test("a diverging run (--lr 1e30) stops with exit 1 naming the step; the last checkpoint is intact")
    func nanStops() throws {
        let (data, vocab) = try TrainCLI.data()
        let root = try TrainCLI.tempDir("nan")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: root) }
        let out = root.appendingPathComponent("out")
        let r = try TrainCLI.train(data, vocab, out: out, ["--steps", "50", "--save-interval", "1", "--lr", "1e30"])
        #expect(r.status == 1, "exit \(r.status); stderr: \(r.stderr)")
        let logged = try TrainCLI.losses(out).count
        #expect(logged >= 1 && logged < 50)
        #expect(r.stderr.contains("at step \(logged + 1)"), "stderr: \(r.stderr)")
        #expect(r.stderr.contains("last good checkpoint (step \(logged))"), "stderr: \(r.stderr)")
        let newest = try #require(TrainCLI.checkpoints(out).last)
        #expect(newest == String(format: "ckpt-%06d", logged))
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("\(newest)/state.json")))
        #expect((state as? [String: Any])?["step"] as? Int == logged)
        #expect(!((try? FileManager.default.contentsOfDirectory(atPath: out.path)) ?? []).contains { $0.contains(".tmp") })
    }

    @Test("SIGTERM: clean exit 130 after writing a checkpoint")
    func sigterm() throws {
        let (data, vocab) = try TrainCLI.data()
        let root = try TrainCLI.tempDir("term")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: root) }
        let out = root.appendingPathComponent("out")
        let logURL = out.appendingPathComponent("train_log.jsonl")
        let args = ["train", "--data-dir", data.path, "--output", out.path] + TrainCLI.tiny(vocab: vocab)
            + ["--steps", "1000000", "--save-interval", "1000000"]
        // Interrupt once a few steps are logged (no periodic checkpoint can exist yet). The test process spawns
        // the child with SIGTERM blocked in its signal mask: this also checks that train unblocks it.
        let (r, signalled) = try TrainCLI.runAndTerminate(args, timeout: 30) {
            ((try? Data(contentsOf: logURL))?.filter { $0 == 0x0A }.count ?? 0) >= 3
        }
        #expect(signalled)
        #expect(r.status == 130, "exit \(r.status); stderr: \(r.stderr)")
        let logged = try TrainCLI.losses(out).count
        #expect(TrainCLI.checkpoints(out) == [String(format: "ckpt-%06d", logged)], "\(TrainCLI.checkpoints(out))")
    }

    // MARK: End to end

    @Test("train → sample --checkpoint OUT → eval --json has a BLEU")
    func trainSampleEval() throws {
        let (data, vocab) = try TrainCLI.data()
        let root = try TrainCLI.tempDir("e2e")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: root) }
        let out = root.appendingPathComponent("out"), samples = root.appendingPathComponent("S.jsonl")
        let t = try TrainCLI.train(data, vocab, out: out, ["--steps", "30", "--save-interval", "10"])
        #expect(t.status == 0, "stderr: \(t.stderr)")
        let s = try CLI.run(["sample", "--checkpoint", out.path, "--data-dir", data.path, "--split", "test", "--steps", "10",
                             "--output", samples.path, "--threads", "1"])
        #expect(s.status == 0, "stderr: \(s.stderr)")
        let lines = try String(contentsOf: samples, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 6)
        for l in lines {
            let o = try JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any]
            #expect(o?["recover"] is String && o?["reference"] is String && o?["source"] is String)
        }
        let e = try CLI.run(["eval", samples.path, "--json", "--custom-vocab"])
        #expect(e.status == 0, "stderr: \(e.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(e.stdout.utf8))
        let text = e.stdout.lowercased()
        #expect(json is [String: Any] && text.contains("bleu"), "stdout: \(e.stdout)")
    }
}
