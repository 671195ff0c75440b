import DiffuSeqCore
import Foundation
import Testing

/// `diffuseq train --self-condition` end to end (the tiny model of `TrainCLI`): recorded in training_args.json, fixed on
/// --resume and bit-identical across it, `--init-from` a checkpoint without it starting at that model's behaviour, and
/// honoured by `sample` and the explorer.
@Suite
struct SelfConditionCLITests {
    @Test("--self-condition: 12 steps straight == 6, --resume, 6 more (log, weights and state bit-identical); recorded, fixed on --resume")
    func resume() throws {
        let (data, vocab) = try TrainCLI.data()
        let root = try TrainCLI.tempDir("sc-resume")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: root) }
        let a = root.appendingPathComponent("a"), b = root.appendingPathComponent("b")
        let common = ["--steps", "12", "--save-interval", "6", "--seed", "7", "--self-condition", "--self-condition-prob", "0.6",
                      "--dropout", "0.1"]
        let ra = try TrainCLI.train(data, vocab, out: a, common)
        #expect(ra.status == 0 && ra.stderr.contains("self-conditioned (first pass for 60 % of the examples)"), "stderr: \(ra.stderr)")
        let rb = try TrainCLI.train(data, vocab, out: b, common + ["--stop-after", "6"])
        #expect(rb.status == 0, "stderr: \(rb.stderr)")
        let fixed = try CLI.run(["train", "--resume", b.path, "--self-condition-prob", "0.2"], timeout: 60)
        #expect(fixed.status != 0 && fixed.stderr.contains("--self-condition-prob"), "stderr: \(fixed.stderr)")
        let rb2 = try CLI.run(["train", "--resume", b.path, "--threads", "1"], timeout: 120)
        #expect(rb2.status == 0, "stderr: \(rb2.stderr)")
        #expect(try TrainCLI.logLines(a) == TrainCLI.logLines(b))
        for file in ["model.safetensors", "state.safetensors"] {
            let fa = TrainCLI.bytes(a.appendingPathComponent("ckpt-000012/\(file)"))
            let fb = TrainCLI.bytes(b.appendingPathComponent("ckpt-000012/\(file)"))
            #expect(fa != nil && fa == fb, "ckpt-000012/\(file) differs")
        }
        // The resumable state, its coin stream included (all but the wall time).
        func state(_ out: URL) throws -> NSDictionary {
            let d = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("ckpt-000012/state.json")))
                as? [String: Any])
            #expect(d["selfConditionRNG"] != nil, "state.json keeps the coin stream")
            return d.filter { $0.key != "elapsedSeconds" } as NSDictionary
        }
        #expect(try state(a) == state(b))
        let args = try JSONSerialization.jsonObject(with: Data(contentsOf: a.appendingPathComponent("ckpt-000012/training_args.json")))
            as? [String: Any]
        #expect(args?["self_condition"] as? Bool == true && args?["self_condition_prob"] as? Double == 0.6, "\(args ?? [:])")
        let model = try ModelCheckpoint.load(a.appendingPathComponent("ckpt-000012")).model
        #expect(model.config.selfCondition && model.tensor("self_cond_proj.weight")?.contains { $0 != 0 } == true,
                "W_sc trained away from zero")
        // The explorer says so in its title bar.
        let shown = try CLI.run(["explore", "--checkpoint", a.path, "--render", "100x12", "--keys", "tick:3"], timeout: 60)
        #expect(shown.status == 0 && shown.stdout.contains("self-conditioned"), "stdout: \(shown.stdout)\nstderr: \(shown.stderr)")
    }

    @Test("--init-from a checkpoint without self-conditioning adds a zero self_cond_proj: the same samples; flags checked")
    func initFrom() throws {
        let (data, vocab) = try TrainCLI.data()
        let root = try TrainCLI.tempDir("sc-init")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: root) }
        let a = root.appendingPathComponent("a"), b = root.appendingPathComponent("b")
        #expect(try TrainCLI.train(data, vocab, out: a, ["--steps", "4", "--save-interval", "4", "--seed", "3"]).status == 0)
        let ckpt = a.appendingPathComponent("ckpt-000004")
        // A learning rate of 1e-30 keeps the weights (AdamW moves a zero by 1e-30 at most): b's model is a's plus a zero
        // self_cond_proj.
        let rb = try TrainCLI.train(data, vocab, out: b, ["--steps", "2", "--save-interval", "2", "--seed", "5", "--lr", "1e-30",
                                                          "--init-from", ckpt.path, "--self-condition"])
        #expect(rb.status == 0 && rb.stderr.contains("self_cond_proj.weight, self_cond_proj.bias added, zero-initialised"),
                "stderr: \(rb.stderr)")
        let ckptB = b.appendingPathComponent("ckpt-000002")
        let mb = try ModelCheckpoint.load(ckptB).model
        let projection = (mb.tensor("self_cond_proj.weight") ?? [1]) + (mb.tensor("self_cond_proj.bias") ?? [1])
        #expect(projection.allSatisfy { abs($0) <= 1e-29 }, "max |W_sc, b_sc| \(projection.map { abs($0) }.max() ?? 0)")
        func sample(_ c: URL) throws -> String {
            let r = try CLI.run(["sample", "--checkpoint", c.path, "--text", "the cat sat on the mat", "--steps", "5", "--seed", "3"],
                                timeout: 60)
            #expect(r.status == 0, "stderr: \(r.stderr)")
            return r.stdout
        }
        #expect(try sample(ckpt) == sample(ckptB), "a zero projection samples as the model without it")
        // Refusals: the probability without the flag; dropping a trained projection.
        let noFlag = try TrainCLI.train(data, vocab, out: root.appendingPathComponent("c"), ["--steps", "2", "--self-condition-prob", "0.3"])
        #expect(noFlag.status != 0 && noFlag.stderr.contains("add --self-condition"), "stderr: \(noFlag.stderr)")
        let drop = try TrainCLI.train(data, vocab, out: root.appendingPathComponent("d"), ["--steps", "2", "--init-from", ckptB.path])
        #expect(drop.status != 0 && drop.stderr.contains("pass --self-condition"), "stderr: \(drop.stderr)")
    }
}
