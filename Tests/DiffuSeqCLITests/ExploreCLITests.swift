import Foundation
import Testing

// End-to-end tests of `diffuseq explore --render` and `diffuseq trace`, running the built binary on the tiny
// official fixture checkpoint (Tests/DiffuSeqCoreTests/Fixtures: 2 layers, V 97, L 16, T 50).
//
// They need the `diffuseq` executable: `swift test` builds it next to the test bundle (e.g. .build/release/diffuseq);
// the README's `swift build -c release && swift test -c release` does too. DIFFUSEQ_BIN overrides the path.
// When no binary is found the tests fail (CLIUnavailable): CI must not pass without running them.

/// Locating the binary and the fixtures.
enum CLI {
    /// The package root (three levels above this file).
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The fixture checkpoint (`model.safetensors` with training_args.json and vocab.txt beside it).
    static let checkpoint = packageRoot.appendingPathComponent("Tests/DiffuSeqCoreTests/Fixtures/model.safetensors").path

    /// The `diffuseq` executable: $DIFFUSEQ_BIN, next to the test bundle / runner, or in the package's .build.
    static let binary: URL? = {
        let fm = FileManager.default
        var candidates: [URL] = []
        if let e = ProcessInfo.processInfo.environment["DIFFUSEQ_BIN"], !e.isEmpty { candidates.append(URL(fileURLWithPath: e)) }
        candidates.append(Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("diffuseq"))
        candidates.append(Bundle.main.bundleURL.appendingPathComponent("diffuseq"))
        for b in Bundle.allBundles where b.bundlePath.hasSuffix(".xctest") {
            candidates.append(b.bundleURL.deletingLastPathComponent().appendingPathComponent("diffuseq"))
        }
        if let arg0 = CommandLine.arguments.first {
            candidates.append(URL(fileURLWithPath: arg0).deletingLastPathComponent().appendingPathComponent("diffuseq"))
        }
        for d in [".build/release", ".build/debug"] {
            candidates.append(packageRoot.appendingPathComponent(d).appendingPathComponent("diffuseq"))
        }
        return candidates.first { fm.isExecutableFile(atPath: $0.path) && !$0.hasDirectoryPath }
    }()

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs the binary with `args` (stdin /dev/null), killing it after `timeout` seconds.
    static func run(_ args: [String], timeout: Double = 60, environment extra: [String: String] = [:]) throws -> Result {
        guard let binary else { throw CLIUnavailable() }
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["DIFFUSEQ_RESOURCES"] = nil
        env["DIFFUSEQ_BLAS_PROFILE"] = nil
        env["DIFFUSEQ_ENGINE"] = nil
        for (k, v) in extra { env[k] = v }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        // Read both pipes concurrently so a large output cannot block the child.
        let group = DispatchGroup()
        final class Box: @unchecked Sendable { var data = Data() }
        let o = Box(), e = Box()
        try p.run()
        DispatchQueue.global().async(group: group) { o.data = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { e.data = err.fileHandleForReading.readDataToEndOfFile() }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        group.wait()
        return Result(status: p.terminationStatus, stdout: String(decoding: o.data, as: UTF8.self),
                      stderr: String(decoding: e.data, as: UTF8.self))
    }

    /// A temporary data folder with a test.jsonl of two examples.
    static func dataDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("explore-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        let lines = [#"{"src": "how do i cook ?", "trg": "what is good ?"}"#,
                     #"{"src": "what music do you like ?", "trg": "what is good music ?"}"#]
        try (lines.joined(separator: "\n") + "\n").write(to: d.appendingPathComponent("test.jsonl"), atomically: true, encoding: .utf8)
        return d
    }

    static let model = ["--checkpoint", checkpoint, "--threads", "1"]
}

/// No `diffuseq` binary: the CLI suites fail (never skip), so CI cannot pass without running them.
struct CLIUnavailable: Error, CustomStringConvertible {
    var description: String { "no diffuseq binary found (run `swift build -c release` first, or set DIFFUSEQ_BIN)" }
}

@Suite
struct ExploreCLITests {
    @Test func renderShowsEveryPanelOfADatasetExample() throws {
        let dir = try CLI.dataDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try CLI.run(["explore"] + CLI.model + ["--data-dir", dir.path, "--index", "0", "--render", "80x24",
                                                     "--keys", "home,],down,down"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let screen = r.stdout
        for needle in ["DiffuSeq explorer", "Source how do i cook ?", "sampler ddpm · 50 steps of T 50", "Timeline",
                       "step 11/50", "Tokens", "[START] how do i cook ? [END] [END]", "Position 10", "pos 10 (3 of 8)",
                       "‖x_t‖", "‖x̂₀‖", "margin", "Noise", "Seeds", "Reference", "what is good ?", "BLEU", "✓ done"] {
            #expect(screen.contains(needle), "missing \(needle.debugDescription) in:\n\(screen)")
        }
        // 24 rows (the last line break ends the print), none wider than 80 columns.
        #expect(lines.count == 25 && lines.last == "", "\(lines.count) lines")
        for l in lines { #expect(l.count <= 80, "line wider than 80: \(l)") }
    }

    @Test func renderAtTheLastStepMatchesTheTrace() throws {
        let src = "what do you like ?"
        let r = try CLI.run(["explore"] + CLI.model + ["--text", src, "--steps", "10", "--seeds", "7", "--sampler", "ddpm",
                                                     "--render", "100x30", "--keys", "end"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let t = try CLI.run(["trace"] + CLI.model + ["--text", src, "--steps", "10", "--seeds", "7", "--sampler", "ddpm"])
        #expect(t.status == 0, "stderr: \(t.stderr)")
        let last = try #require(t.stdout.split(separator: "\n").last)
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        let sentence = try #require(obj["sentence_clean"] as? String)
        let arrow = try #require(r.stdout.split(separator: "\n").first { $0.contains("→ ") })
        let shown = arrow.components(separatedBy: "→ ")[1].components(separatedBy: "│")[0].trimmingCharacters(in: .whitespaces)
        #expect(!sentence.isEmpty)
        #expect(shown == sentence, "explore shows \(shown.debugDescription), trace says \(sentence.debugDescription)")
        #expect(r.stdout.contains("step 10/10"))
    }

    @Test func fourSeedsShowDiversityAtTheLastStep() throws {
        let r = try CLI.run(["explore"] + CLI.model + ["--text", "how do i cook ?", "--seeds", "1,2,3,4", "--sampler", "ddpm",
                                                     "--steps", "20", "--render", "80x24", "--keys", "end"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        for needle in ["seeds 1 2 3 4", " 1 ● 1", " 4 ● 4", "self-BLEU", "div-4", "★"] {
            #expect(r.stdout.contains(needle), "missing \(needle.debugDescription) in:\n\(r.stdout)")
        }
    }

    @Test func versionPrintsTheBLASProfileAndWarnsOnAnUnknownOne() throws {
        let plain = try CLI.run(["--version"])
        #expect(plain.status == 0 && plain.stdout.contains("throughput profile"), "\(plain.stdout)")
        let latency = try CLI.run(["--version"], environment: ["DIFFUSEQ_BLAS_PROFILE": "latency"])
        #expect(latency.status == 0 && latency.stdout.contains("latency profile"), "\(latency.stdout)")
        let bogus = try CLI.run(["--version"], environment: ["DIFFUSEQ_BLAS_PROFILE": "fast"])
        #expect(bogus.status == 0 && bogus.stderr.contains("DIFFUSEQ_BLAS_PROFILE=fast is not latency or throughput"), "\(bogus.stderr)")
        #expect(bogus.stdout.contains("throughput profile"))
    }

    @Test func versionPrintsTheSamplingEngineAndWarnsOnAnUnknownOne() throws {
        let plain = try CLI.run(["--version"])
        #expect(plain.status == 0 && plain.stdout.contains("Sampling engine: automatic"), "\(plain.stdout)")
        let blas = try CLI.run(["--version"], environment: ["DIFFUSEQ_ENGINE": "blas"])
        #expect(blas.stdout.contains("Sampling engine: blas — OpenBLAS for every product"), "\(blas.stdout)")
        let bogus = try CLI.run(["--version"], environment: ["DIFFUSEQ_ENGINE": "gpu"])
        #expect(bogus.status == 0 && bogus.stderr.contains("DIFFUSEQ_ENGINE=gpu is not automatic, blas or packed"), "\(bogus.stderr)")
        #expect(bogus.stdout.contains("Sampling engine: automatic"))
        // The same trace on both engines: identical tokens at every step.
        let args = ["trace"] + CLI.model + ["--text", "how are you", "--steps", "12"]
        let a = try CLI.run(args, environment: ["DIFFUSEQ_ENGINE": "blas"]), b = try CLI.run(args, environment: ["DIFFUSEQ_ENGINE": "packed"])
        #expect(a.status == 0 && b.status == 0, "\(a.stderr) \(b.stderr)")
        func tokens(_ s: String) -> [String] {
            s.split(separator: "\n").compactMap { line in
                (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
            }.map { "\($0["sentence"] ?? "")" }
        }
        #expect(tokens(a.stdout).count == 12 && tokens(a.stdout) == tokens(b.stdout))
    }

    @Test func forwardViewOfTheReferenceOnTheRealEngine() throws {
        let dir = try CLI.dataDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        // At the last step (t 0, ᾱ ≈ 1) rounding recovers the whole reference from q(x_t | x₀).
        let r = try CLI.run(["explore"] + CLI.model + ["--data-dir", dir.path, "--index", "0", "--render", "100x30", "--keys", "f,end"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("forward t 0: 100% survive · [START] what is good ? [END]"), "\(r.stdout)")
        let noisy = try CLI.run(["explore"] + CLI.model + ["--data-dir", dir.path, "--index", "0", "--render", "100x30", "--keys", "f,home"])
        #expect(noisy.stdout.contains("% survive"), "\(noisy.stdout)")
    }

    @Test func editStrengthOnTheRealEngine() throws {
        // --start-from-source 0.5 of the fixture's 50 steps: the run starts at step 26, and its last sentence is trace's.
        let src = "what do you like ?"
        let r = try CLI.run(["explore"] + CLI.model + ["--text", src, "--seeds", "7", "--sampler", "ddpm", "--start-from-source", "0.5",
                                                     "--render", "100x30", "--keys", "home"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        for needle in ["50 steps of T 50 · edit 0.5 · seed 7", "starts at step 26 (edit 0.5)", "step 26/50"] {
            #expect(r.stdout.contains(needle), "missing \(needle.debugDescription) in:\n\(r.stdout)")
        }
        let end = try CLI.run(["explore"] + CLI.model + ["--text", src, "--seeds", "7", "--sampler", "ddpm", "--start-from-source", "0.5",
                                                       "--render", "100x30", "--keys", "end"])
        let t = try CLI.run(["trace"] + CLI.model + ["--text", src, "--seeds", "7", "--sampler", "ddpm", "--steps", "50",
                                                   "--start-from-source", "0.5"])
        #expect(t.status == 0 && end.status == 0, "stderr: \(t.stderr) \(end.stderr)")
        let lines = t.stdout.split(separator: "\n")
        #expect(lines.count == 25, "trace: one line per step run")
        let last = try #require(lines.last)
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        let sentence = try #require(obj["sentence_clean"] as? String)
        let arrow = try #require(end.stdout.split(separator: "\n").first { $0.contains("→ ") })
        let shown = arrow.components(separatedBy: "→ ")[1].components(separatedBy: "│")[0].trimmingCharacters(in: .whitespaces)
        #expect(shown == sentence, "explore shows \(shown.debugDescription), trace says \(sentence.debugDescription)")
        // d cycles the strength from the command line's value and re-runs; a pin forks at the step shown.
        let d = try CLI.run(["explore"] + CLI.model + ["--text", src, "--sampler", "ddpm", "--render", "100x30",
                                                     "--keys", "d,home,right,right,down,p,1"])
        #expect(d.status == 0, "stderr: \(d.stderr)")
        for needle in ["edit 0.7", "starts at step 16 (edit 0.7)", "step 18/50", "fork@18"] {
            #expect(d.stdout.contains(needle), "missing \(needle.debugDescription) in:\n\(d.stdout)")
        }
        #expect(!d.stdout.contains("failed"), "\(d.stdout)")
    }

    @Test func traceWritesTheTrajectoryMapAsSVG() throws {
        let dir = try TrainCLI.tempDir("svg")
        let svg = dir.appendingPathComponent("map.svg")
        let r = try CLI.run(["trace"] + CLI.model + ["--text", "how are you", "--steps", "12", "--svg", svg.path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("trajectory map:") && r.stderr.contains("× 12 steps"), "\(r.stderr)")
        let text = try String(contentsOf: svg, encoding: .utf8)
        #expect(text.hasPrefix("<?xml") && text.contains("<svg") && text.hasSuffix("</svg>\n"))
        #expect(text.contains("final: "))
        // An unwritable path is an error naming it; nothing is left behind.
        let bad = try CLI.run(["trace"] + CLI.model + ["--text", "how", "--steps", "2", "--svg", "/nonexistent-dir/m.svg"])
        #expect(bad.status != 0 && bad.stderr.contains("/nonexistent-dir/m.svg"), "\(bad.stderr)")
    }

    @Test func badKeyScriptFailsWithAMessage() throws {
        let r = try CLI.run(["explore"] + CLI.model + ["--text", "how", "--render", "80x24", "--keys", "home,bogus"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("unknown key 'bogus'"), "stderr: \(r.stderr)")
        #expect(r.stdout.isEmpty)
    }

    @Test(arguments: [["--render", "80by24"], ["--render", "0x24"], ["--keys", "home"], ["--seeds", "1,x", "--render", "80x24"],
                      ["--sampler", "euler", "--render", "80x24"], ["--text", " ", "--render", "80x24"],
                      ["--start-from-source", "0", "--render", "80x24"], ["--start-from-source", "1.5", "--render", "80x24"]])
    func badArgumentsFailWithAMessage(_ extra: [String]) throws {
        var args = ["explore"] + CLI.model
        if !extra.contains("--text") { args += ["--text", "how"] }
        let r = try CLI.run(args + extra)
        #expect(r.status != 0, "\(extra) should fail")
        #expect(r.stderr.contains("error: "), "stderr: \(r.stderr)")
    }

    @Test func interactiveWithoutATerminalSuggestsRender() throws {
        let r = try CLI.run(["explore"] + CLI.model + ["--text", "how"], timeout: 20)
        #expect(r.status != 0)
        #expect(r.stderr.contains("--render"), "stderr: \(r.stderr)")
    }

    @Test func traceEmitsOneValidLinePerStepAndSeed() throws {
        let r = try CLI.run(["trace"] + CLI.model + ["--text", "how do i cook ?", "--steps", "5", "--seeds", "1,2",
                                                   "--top-k-neighbours", "3"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 10)
        var seen: [(Int, Int)] = []
        for l in lines {
            let o = try #require(try JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any])
            for k in ["example", "origin", "seed", "step", "count", "t", "diffusion_steps", "sampler", "noise", "source_length",
                      "sentence", "sentence_clean", "positions"] {
                #expect(o[k] != nil, "missing \(k)")
            }
            #expect(o["example"] as? Int == 0)
            #expect(o["count"] as? Int == 5)
            #expect(o["diffusion_steps"] as? Int == 50)
            #expect(o["source_length"] as? Int == 8)
            let noise = try #require(o["noise"] as? [String: Any])
            for k in ["beta", "alpha_bar", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "snr"] { #expect(noise[k] is Double, "noise.\(k)") }
            let pos = try #require(o["positions"] as? [[String: Any]])
            #expect(pos.count == 16)
            for (i, p) in pos.enumerated() {
                #expect(p["pos"] as? Int == i)
                #expect(p["source"] as? Bool == (i < 8))
                for k in ["rounded", "decoded"] { #expect(p[k] is Int, "\(k)") }
                for k in ["rounded_token", "decoded_token"] { #expect(p[k] is String, "\(k)") }
                for k in ["margin", "xt_norm", "x0_norm"] { #expect(p[k] is Double, "\(k)") }
                let nb = try #require(p["neighbours"] as? [[String: Any]])
                #expect(nb.count == 3)
                if let m = p["margin"] as? Double, m > 1e-3 {
                    #expect(nb.first?["id"] as? Int == p["rounded"] as? Int, "nearest neighbour is the rounded token")
                }
                let d = nb.compactMap { $0["distance"] as? Double }
                #expect(d == d.sorted())
            }
            seen.append((o["step"] as? Int ?? -1, o["seed"] as? Int ?? -1))
        }
        #expect(seen.map(\.0) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
        #expect(seen.map(\.1) == [1, 2, 1, 2, 1, 2, 1, 2, 1, 2])
    }

    @Test func traceWritesAnOutputFileFromAJsonlInput() throws {
        let dir = try CLI.dataDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("trace.jsonl")
        let r = try CLI.run(["trace"] + CLI.model + ["--input", dir.appendingPathComponent("test.jsonl").path, "--steps", "3",
                                                   "--output", out.path])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(r.stdout.isEmpty)
        let lines = try String(contentsOf: out, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 6)
        let examples = try lines.map { l -> Int in
            let o = try #require(try JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any])
            #expect(o["positions"].map { (($0 as? [[String: Any]])?.first?["neighbours"]) == nil } == true, "no neighbours by default")
            return o["example"] as? Int ?? -1
        }
        #expect(examples == [0, 0, 0, 1, 1, 1])
        // Nothing but the output file is left in the folder (the temporary file was renamed).
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(names == ["test.jsonl", "trace.jsonl"])
    }

    @Test func traceWithoutInputFails() throws {
        let r = try CLI.run(["trace"] + CLI.model)
        #expect(r.status != 0)
        #expect(r.stderr.contains("--text"), "stderr: \(r.stderr)")
    }
}
