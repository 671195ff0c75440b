import DiffuSeqCore
import Foundation
import Testing

// Crash consistency and full-disk behaviour of `diffuseq train` and `diffuseq sample` (issue 16), on the
// tiny model of TrainCLITests. `Tests/crash-train.sh` is the 20-kill version of the first test.

/// The files every complete checkpoint folder has.
private let checkpointFiles = ["model.safetensors", "training_args.json", "bert_config.json", "vocab.txt",
                               "state.safetensors", "state.json"]

/// Names in `dir` that are temporaries of a writer (`.<name>.tmp-…`).
private func temporaries(_ dir: URL) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).filter { $0.contains(".tmp-") }
}

/// Fails the test unless every visible `ckpt-*` folder of `out` is complete and readable.
private func expectCompleteCheckpoints(_ out: URL, sourceLocation: SourceLocation = #_sourceLocation) {
    for name in TrainCLI.checkpoints(out) {
        let dir = out.appendingPathComponent(name)
        for f in checkpointFiles {
            #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent(f).path),
                    "\(name) is visible but lacks \(f)", sourceLocation: sourceLocation)
        }
        #expect((try? SafeTensors.read(dir.appendingPathComponent("state.safetensors"))) != nil,
                "\(name)/state.safetensors does not read", sourceLocation: sourceLocation)
    }
}

/// The step of the newest `ckpt-*` folder (0 when there is none).
private func newestStep(_ out: URL) -> Int {
    TrainCLI.checkpoints(out).last.flatMap { Int($0.dropFirst("ckpt-".count)) } ?? 0
}

@Suite
struct CrashConsistencyTests {
    @Test("kill -9 inside checkpoint writes, then --resume: complete checkpoints only, temporaries removed, bit-identical end")
    func killNineDuringSaves() throws {
        let (data, vocab) = try TrainCLI.data()
        let root = try TrainCLI.tempDir("kill9")
        defer { try? FileManager.default.removeItem(at: root) }
        let steps = 16
        let common = ["--steps", "\(steps)", "--save-interval", "1", "--seed", "13"]
        let a = root.appendingPathComponent("straight"), b = root.appendingPathComponent("killed")
        let ra = try TrainCLI.train(data, vocab, out: a, common)
        try #require(ra.status == 0, "stderr: \(ra.stderr)")

        // Kill 1: a fresh run, as soon as its second checkpoint is being written (its temporary folder exists).
        var args = ["train", "--data-dir", data.path, "--output", b.path] + TrainCLI.tiny(vocab: vocab) + common
        var kills = 0
        var leaked: [String] = []
        for round in 0..<3 {
            let before = newestStep(b)
            let (r, signalled) = try TrainCLI.runAndTerminate(args, signal: SIGKILL) {
                newestStep(b) > before && temporaries(b).contains { $0.hasPrefix(".ckpt-") }
            }
            if signalled {
                kills += 1
                #expect(r.status != 0, "round \(round): killed, yet exit \(r.status)")
            }
            // What the previous kill left was removed by this resume, before it trained.
            for name in leaked {
                #expect(r.stderr.contains(name), "round \(round): the resume did not report removing \(name): \(r.stderr)")
            }
            expectCompleteCheckpoints(b)
            let logged = try TrainCLI.logLines(b).compactMap { l -> Int? in
                (try? JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any])?["step"] as? Int
            }.max() ?? 0
            #expect(logged - newestStep(b) <= 1, "round \(round): newest checkpoint \(newestStep(b)), logged step \(logged)")
            leaked = temporaries(b)
            args = ["train", "--resume", b.path, "--threads", "1"]
        }
        #expect(kills >= 2, "only \(kills) of 3 kills hit a running process")
        let rb = try CLI.run(args, timeout: 120)
        try #require(rb.status == 0, "stderr: \(rb.stderr)")
        for name in leaked { #expect(rb.stderr.contains(name), "the final resume did not report removing \(name)") }
        #expect(temporaries(b).isEmpty, "left behind: \(temporaries(b))")
        expectCompleteCheckpoints(b)
        let final = String(format: "ckpt-%06d", steps)
        for f in ["model.safetensors", "state.safetensors"] {
            let x = TrainCLI.bytes(a.appendingPathComponent(final).appendingPathComponent(f))
            let y = TrainCLI.bytes(b.appendingPathComponent(final).appendingPathComponent(f))
            #expect(x != nil && x == y, "\(final)/\(f) differs from the uninterrupted run")
        }
        #expect(try TrainCLI.logLines(a) == TrainCLI.logLines(b))
    }

    @Test("an unreadable train_log.jsonl refuses --resume (history kept); an unreadable training_args.json is an error")
    func unreadableLogAndArgs() throws {
        let (_, _, root, out) = try oneStepRun("unreadable")
        defer { try? FileManager.default.removeItem(at: root) }
        let log = out.appendingPathComponent("train_log.jsonl")
        let original = try Data(contentsOf: log)
        // Invalid UTF-8 stands in for an unreadable file (root reads files whatever their permissions).
        try (original + Data([0xFF, 0xFE, 0x0A])).write(to: log)
        let r = try CLI.run(["train", "--resume", out.path, "--steps", "4"], timeout: 60)
        #expect(r.status == 1 && r.stderr.contains("train_log.jsonl") && r.stderr.contains("refusing to resume"), "stderr: \(r.stderr)")
        #expect(try Data(contentsOf: log) == original + Data([0xFF, 0xFE, 0x0A]), "the log was rewritten")

        try original.write(to: log)
        let args = out.appendingPathComponent("ckpt-000001/training_args.json")
        try Data("[1, 2]".utf8).write(to: args)
        let r2 = try CLI.run(["train", "--resume", out.path, "--steps", "4"], timeout: 60)
        #expect(r2.status == 1 && r2.stderr.contains("training_args.json") && r2.stderr.contains("not a JSON object"), "stderr: \(r2.stderr)")
        let r3 = try CLI.run(["sample", "--checkpoint", out.appendingPathComponent("ckpt-000001").path, "--text", "the cat", "--steps", "2"])
        #expect(r3.status == 1 && r3.stderr.contains("training_args.json"), "stderr: \(r3.stderr)")
    }
}

/// A small tmpfs at a fresh mount point, or nil (with the reason) when this machine does not allow mounting.
private func mountTmpfs(bytes: Int) -> (URL, String?) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fulldisk-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/mount")
    p.arguments = ["-t", "tmpfs", "-o", "size=\(bytes)", "tmpfs", dir.path]
    p.standardError = FileHandle(forWritingAtPath: "/dev/null")
    guard (try? p.run()) != nil else { return (dir, "cannot run mount") }
    p.waitUntilExit()
    return (dir, p.terminationStatus == 0 ? nil : "mount -t tmpfs failed (not root, or no CAP_SYS_ADMIN)")
}

private func unmount(_ dir: URL) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/umount")
    p.arguments = [dir.path]
    try? p.run()
    p.waitUntilExit()
    try? FileManager.default.removeItem(at: dir)
}

/// Fills the file system of `dir` until a write fails (ENOSPC).
private func fill(_ dir: URL) {
    let fd = open(dir.appendingPathComponent("filler").path, O_WRONLY | O_CREAT, 0o644)
    guard fd >= 0 else { return }
    let block = [UInt8](repeating: 1, count: 4096)
    while block.withUnsafeBytes({ write(fd, $0.baseAddress, 4096) }) > 0 {}
    var one: UInt8 = 1
    while write(fd, &one, 1) > 0 {}
    close(fd)
}

private struct SetupFailed: Error { let message: String }

/// Tiny data and a one-step run in a fresh folder (removed by the caller): (data, vocab, root, run).
private func oneStepRun(_ tag: String) throws -> (URL, String, URL, URL) {
    let (data, vocab) = try TrainCLI.data()
    let root = try TrainCLI.tempDir(tag)
    let run = root.appendingPathComponent("run1")
    let r = try TrainCLI.train(data, vocab, out: run, ["--steps", "1", "--seed", "3"])
    guard r.status == 0 else { throw SetupFailed(message: "tiny training failed: \(r.stderr)") }
    return (data, vocab, root, run)
}

@Suite
struct FullDiskTests {
    @Test("train on a tmpfs that fills during a checkpoint: the error names the path, the previous checkpoint is intact, no temporaries")
    func trainFillsDisk() throws {
        // Size one checkpoint on a normal disk first.
        let (data, vocab, root, probe) = try oneStepRun("fulldisk")
        defer { try? FileManager.default.removeItem(at: root) }
        let ckpt = probe.appendingPathComponent("ckpt-000001")
        let size = try FileManager.default.contentsOfDirectory(atPath: ckpt.path).reduce(0) { s, f in
            s + ((try? FileManager.default.attributesOfItem(atPath: ckpt.appendingPathComponent(f).path)[.size] as? Int) ?? 0)
        }
        // Room for one checkpoint (each file rounded up to pages) and the log, not for a second one.
        let (mnt, why) = mountTmpfs(bytes: (size * 3 / 2 + 64 * 1024) / 4096 * 4096)
        defer { unmount(mnt) }
        if let why {
            print("FullDiskTests: tmpfs part skipped — \(why); the injected-failure tests in CheckpointIOTests still run")
            return
        }
        let out = mnt.appendingPathComponent("run")
        let r = try TrainCLI.train(data, vocab, out: out, ["--steps", "6", "--save-interval", "2", "--seed", "3"])
        #expect(r.status == 1, "exit \(r.status); stderr: \(r.stderr)")
        #expect(r.stderr.contains("No space left on device") && r.stderr.contains(out.path), "stderr: \(r.stderr)")
        #expect(!r.stderr.contains("Fatal error"), "stderr: \(r.stderr)")
        #expect(TrainCLI.checkpoints(out) == ["ckpt-000002"], "checkpoints: \(TrainCLI.checkpoints(out))")
        expectCompleteCheckpoints(out)
        #expect(temporaries(out).isEmpty, "left behind: \(temporaries(out))")
        let s = try CLI.run(["sample", "--checkpoint", out.path, "--text", "the cat sat", "--steps", "2"])
        #expect(s.status == 0, "the kept checkpoint does not load: \(s.stderr)")
    }

    @Test("sample --output on a full tmpfs: the error names the file, the previous output is intact, no temporary")
    func sampleFillsDisk() throws {
        let (data, _, root, run) = try oneStepRun("fulldisk-sample")
        defer { try? FileManager.default.removeItem(at: root) }
        let (mnt, why) = mountTmpfs(bytes: 256 * 1024)
        defer { unmount(mnt) }
        if let why {
            print("FullDiskTests: tmpfs part skipped — \(why)")
            return
        }
        let outFile = mnt.appendingPathComponent("out.jsonl")
        let common = ["sample", "--checkpoint", run.path, "--data-dir", data.path, "--split", "test", "--steps", "2",
                      "--output", outFile.path]
        try #require(try CLI.run(common + ["--limit", "1"]).status == 0)
        let before = try Data(contentsOf: outFile)
        fill(mnt)
        let r = try CLI.run(common)
        #expect(r.status == 1, "exit \(r.status); stderr: \(r.stderr)")
        #expect(r.stderr.contains("No space left on device") && r.stderr.contains(outFile.path), "stderr: \(r.stderr)")
        #expect(try Data(contentsOf: outFile) == before, "the previous output changed")
        #expect(temporaries(mnt).isEmpty, "left behind: \(temporaries(mnt))")
    }
}
