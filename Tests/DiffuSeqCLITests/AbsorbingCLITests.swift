import DiffuSeqCore
import Foundation
import Testing

// End-to-end tests of `train --soft-absorbing` (DiffuSeq-v2's learned absorbing state) and of the commands that
// sample such a model, on the tiny model of TrainCLITests.
@Suite
struct AbsorbingCLITests {
    @Test("train --soft-absorbing: v2's keys in training_args.json, mean_embed in the weights, exact --resume, fixed flags")
    func trainAndResume() throws {
        let (data, vocab) = try TrainCLI.data()
        let root = try TrainCLI.tempDir("absorb")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: root) }
        let a = root.appendingPathComponent("a"), b = root.appendingPathComponent("b")
        let common = ["--steps", "8", "--save-interval", "4", "--seed", "3", "--soft-absorbing", "--denoise-rate", "0.7"]
        let ra = try TrainCLI.train(data, vocab, out: a, common)
        #expect(ra.status == 0 && ra.stderr.contains("soft absorbing state"), "stderr: \(ra.stderr)")
        let ckpt = a.appendingPathComponent("ckpt-000008")
        let args = try JSONSerialization.jsonObject(with: Data(contentsOf: ckpt.appendingPathComponent("training_args.json"))) as? [String: Any]
        #expect(args?["learned_mean_embed"] as? Bool == true && args?["denoise"] as? Bool == true)
        #expect((args?["denoise_rate"] as? NSNumber)?.floatValue == 0.7 && (args?["reg_rate"] as? NSNumber)?.floatValue == 0.01)
        let loaded = try ModelCheckpoint.load(ckpt)
        #expect(loaded.model.config.learnedMeanEmbed && loaded.model.layout.entries.last?.key == "mean_embed")
        // Resume: 4 steps, --resume, 4 more == 8 straight, bit for bit.
        let rb = try TrainCLI.train(data, vocab, out: b, common + ["--stop-after", "4"])
        #expect(rb.status == 0, "stderr: \(rb.stderr)")
        let rb2 = try CLI.run(["train", "--resume", b.path, "--threads", "1"], timeout: 120)
        #expect(rb2.status == 0, "stderr: \(rb2.stderr)")
        #expect(try TrainCLI.logLines(a) == TrainCLI.logLines(b))
        for file in ["model.safetensors", "state.safetensors"] {
            let fa = TrainCLI.bytes(ckpt.appendingPathComponent(file)), fb = TrainCLI.bytes(b.appendingPathComponent("ckpt-000008/\(file)"))
            #expect(fa != nil && fa == fb, "\(file) differs after --resume")
        }
        for flag in [["--soft-absorbing"], ["--denoise-rate", "0.1"], ["--reg-rate", "0"]] {
            let bad = try CLI.run(["train", "--resume", b.path] + flag, timeout: 60)
            #expect(bad.status != 0 && bad.stderr.contains("cannot change on --resume"), "stderr: \(bad.stderr)")
        }
        // Refusals at the start of a run.
        let c = root.appendingPathComponent("c")
        let prior = try TrainCLI.train(data, vocab, out: c, ["--steps", "2", "--soft-absorbing", "--source-prior"])
        #expect(prior.status != 0 && prior.stderr.contains("cannot be combined with --source-prior"), "stderr: \(prior.stderr)")
        let orphan = try TrainCLI.train(data, vocab, out: c, ["--steps", "2", "--denoise-rate", "0.3"])
        #expect(orphan.status != 0 && orphan.stderr.contains("belong to --soft-absorbing"), "stderr: \(orphan.stderr)")
    }

    @Test("sample, trace and bench quality follow the model; --absorbing v2|off; f16 export and --init-from keep or make m")
    func sampleExportInit() throws {
        let (data, vocab) = try TrainCLI.data()
        let root = try TrainCLI.tempDir("absorb-sample")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: root) }
        let a = root.appendingPathComponent("a"), plain = root.appendingPathComponent("plain")
        #expect(try TrainCLI.train(data, vocab, out: a, ["--steps", "4", "--save-interval", "4", "--soft-absorbing"]).status == 0)
        #expect(try TrainCLI.train(data, vocab, out: plain, ["--steps", "4", "--save-interval", "4"]).status == 0)
        func sample(_ ckpt: URL, _ extra: [String]) throws -> CLI.Result {
            try CLI.run(["sample", "--checkpoint", ckpt.path, "--data-dir", data.path, "--steps", "6", "--limit", "3", "--threads", "1"] + extra)
        }
        let centred = try sample(a, []), again = try sample(a, ["--absorbing", "centred"])
        #expect(centred.status == 0 && centred.stdout == again.stdout, "stderr: \(centred.stderr)")
        #expect(centred.stderr.contains("soft absorbing"), "the model line says so: \(centred.stderr)")
        for mode in ["v2", "off"] {
            let r = try sample(a, ["--absorbing", mode])
            #expect(r.status == 0 && r.stdout.split(separator: "\n").count == 3, "\(mode): \(r.stderr)")
        }
        let prior = try sample(a, ["--source-prior"])
        #expect(prior.status != 0 && prior.stderr.contains("--absorbing off"), "stderr: \(prior.stderr)")
        #expect(try sample(a, ["--source-prior", "--absorbing", "off"]).status == 0)
        let none = try sample(plain, ["--absorbing", "centred"])
        #expect(none.status != 0 && none.stderr.contains("no soft absorbing state"), "stderr: \(none.stderr)")
        let bad = try sample(a, ["--absorbing", "sideways"])
        #expect(bad.status != 0 && bad.stderr.contains("--absorbing must be one of"), "stderr: \(bad.stderr)")
        let trace = try CLI.run(["trace", "--checkpoint", a.path, "--text", "the cat sat", "--steps", "4", "--absorbing", "v2"])
        #expect(trace.status == 0 && trace.stderr.contains("absorbing"), "stderr: \(trace.stderr)")
        let bench = try CLI.run(["bench", "quality", "--checkpoint", a.path, "--data-dir", data.path, "--limit", "2", "--runs", "ddpm:4", "--json"])
        #expect(bench.status == 0 && bench.stdout.contains("soft absorbing"), "stderr: \(bench.stderr)")
        // f16 export keeps m (as f16) and samples.
        let exported = root.appendingPathComponent("f16")
        let ex = try CLI.run(["export", "--checkpoint", a.path, "--output", exported.path, "--dtype", "f16"])
        #expect(ex.status == 0, "stderr: \(ex.stderr)")
        let m32 = try ModelCheckpoint.load(a).model.tensor("mean_embed") ?? []
        let m16 = try ModelCheckpoint.load(exported).model.tensor("mean_embed") ?? []
        #expect(m32.count == 8 && m16.count == 8 && zip(m32, m16).allSatisfy { abs($0 - $1) <= 1e-3 * max(1, abs($0)) })
        #expect(try sample(exported, []).status == 0)
        // --init-from a model without m: the state is initialised (seeded), the rest copied; and the reverse drops it.
        let i1 = root.appendingPathComponent("i1"), i2 = root.appendingPathComponent("i2")
        let r1 = try TrainCLI.train(data, vocab, out: i1, ["--steps", "1", "--soft-absorbing", "--lr", "1e-30", "--init-from", plain.path])
        #expect(r1.status == 0 && r1.stderr.contains("initialised here: mean_embed"), "stderr: \(r1.stderr)")
        let r2 = try TrainCLI.train(data, vocab, out: i2, ["--steps", "1", "--init-from", a.path])
        #expect(r2.status == 0 && r2.stderr.contains("not used: mean_embed"), "stderr: \(r2.stderr)")
    }
}
