import DiffuSeqCore
import Foundation
import Testing

// `--precision` end to end: the tiny training of TrainCLITests with bf16 products, and the fallbacks to fp32
// when oneDNN cannot be loaded or the CPU lacks AVX512-BF16 (simulated on this machine with
// DIFFUSEQ_ONEDNN_LIBRARY and DIFFUSEQ_NO_BF16, which the oneDNN shim reads).

@Suite("--precision and its fallbacks")
struct PrecisionCLITests {
    /// A 6-step tiny training with `extra` flags and environment; returns the result and the logged losses.
    static func train(_ extra: [String], environment: [String: String] = [:]) throws -> (CLI.Result, [String]) {
        let (data, vocab) = try TrainCLI.data()
        let out = try TrainCLI.tempDir("precision")
        defer { try? FileManager.default.removeItem(at: data); try? FileManager.default.removeItem(at: out) }
        let r = try CLI.run(["train", "--data-dir", data.path, "--output", out.path] + TrainCLI.tiny(vocab: vocab)
                            + ["--steps", "6", "--save-interval", "6", "--seed", "3"] + extra, timeout: 120, environment: environment)
        return (r, r.status == 0 ? try TrainCLI.losses(out) : [])
    }

    @Test("train --precision bf16 runs on oneDNN bf16 and logs finite losses close to fp32's")
    func bf16Training() throws {
        let (h, lh) = try Self.train(["--precision", "bf16"])
        #expect(h.status == 0, "stderr: \(h.stderr)")
        #expect(h.stderr.contains("training products: oneDNN bf16"), "stderr: \(h.stderr)")
        let (f, lf) = try Self.train(["--precision", "fp32"])
        #expect(f.stderr.contains("training products: OpenBLAS fp32"), "stderr: \(f.stderr)")
        #expect(lh.count == 6 && lf.count == 6)
        for (a, b) in zip(lh, lf) {
            let x = Double(a) ?? .nan, y = Double(b) ?? .nan
            #expect(x.isFinite && abs(x - y) <= 0.02 * abs(y), "bf16 \(a) vs fp32 \(b)")
        }
    }

    @Test("without oneDNN (DIFFUSEQ_ONEDNN_LIBRARY names a missing file), bf16 falls back to fp32 with a one-line notice")
    func missingLibrary() throws {
        let (r, losses) = try Self.train(["--precision", "bf16"], environment: ["DIFFUSEQ_ONEDNN_LIBRARY": "/nonexistent/libdnnl.so.2"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let notes = r.stderr.split(separator: "\n").filter { $0.hasPrefix("note: bf16 is not available") }
        #expect(notes.count == 1 && notes[0].contains("cannot load oneDNN (/nonexistent/libdnnl.so.2)")
                && notes[0].contains("computing in fp32"), "stderr: \(r.stderr)")
        #expect(r.stderr.contains("training products: OpenBLAS fp32"))
        #expect(losses.count == 6)
        let v = try CLI.run(["--version"], environment: ["DIFFUSEQ_ONEDNN_LIBRARY": "/nonexistent/libdnnl.so.2"])
        #expect(v.stdout.contains("oneDNN: not available — cannot load oneDNN"), "\(v.stdout)")
    }

    @Test("on a CPU without AVX512-BF16 (DIFFUSEQ_NO_BF16=1) bf16 falls back to fp32 and auto picks fp32")
    func noBF16() throws {
        let (r, _) = try Self.train(["--precision", "bf16"], environment: ["DIFFUSEQ_NO_BF16": "1"])
        #expect(r.status == 0 && r.stderr.contains("note: bf16 is not available (this CPU has no AVX512-BF16); computing in fp32"),
                "stderr: \(r.stderr)")
        let (a, _) = try Self.train([], environment: ["DIFFUSEQ_NO_BF16": "1"])
        #expect(a.status == 0 && a.stderr.contains("note: precision auto: fp32 (this CPU has no AVX512-BF16)"), "stderr: \(a.stderr)")
    }

    @Test("--version names the backend, oneDNN's ISA and the precision; a bad --precision is refused")
    func versionAndErrors() throws {
        let v = try CLI.run(["--version"])
        #expect(v.status == 0)
        #expect(v.stdout.contains("Matrix products: precision auto"), "\(v.stdout)")
        #expect(v.stdout.contains("oneDNN 2.") && v.stdout.contains("bf16 brg:") || v.stdout.contains("oneDNN: not available"), "\(v.stdout)")
        let bad = try CLI.run(["sample", "--text", "hello", "--precision", "fp16"])
        #expect(bad.status != 0 && bad.stderr.contains("--precision must be fp32, bf16 or auto"), "stderr: \(bad.stderr)")
    }
}
