import COpenBLAS
import Foundation
import Testing
@testable import DiffuSeqCore

/// Issue 16: stale temporaries, the BLAS serial region, unreadable configurations, odd input.
@Suite("Reliability")
struct ReliabilityTests {
    static func tempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reliab-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test("removeStaleTemporaries removes a dead writer's temporaries and keeps a live (locked) one")
    func staleTemporaries() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        let dead = dir.appendingPathComponent(".ckpt-000004.tmp-99999")
        try fm.createDirectory(at: dead, withIntermediateDirectories: true)
        try Data(count: 100).write(to: dead.appendingPathComponent(".model.safetensors.tmp-X"))
        let deadFile = dir.appendingPathComponent(".train_log.jsonl.tmp-ABC")
        try Data("x".utf8).write(to: deadFile)
        let live = dir.appendingPathComponent(".ckpt-000006.tmp-1")
        try fm.createDirectory(at: live, withIntermediateDirectories: true)
        let keep = dir.appendingPathComponent("ckpt-000002")
        try fm.createDirectory(at: keep, withIntermediateDirectories: true)
        let fd = open(live.path, O_RDONLY)
        try #require(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0)
        let removed = AtomicFile.removeStaleTemporaries(in: dir)
        #expect(removed == [".ckpt-000004.tmp-99999", ".train_log.jsonl.tmp-ABC"])
        #expect(try fm.contentsOfDirectory(atPath: dir.path).sorted() == [".ckpt-000006.tmp-1", "ckpt-000002"])
        close(fd)  // the writer is gone
        #expect(AtomicFile.removeStaleTemporaries(in: dir) == [".ckpt-000006.tmp-1"])
        #expect(try fm.contentsOfDirectory(atPath: dir.path) == ["ckpt-000002"])
    }

    @Test("an AtomicFile being written holds its lock, so a concurrent cleanup leaves it alone")
    func atomicFileHoldsLock() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var removedDuringWrite: [String] = ["not run"]
        try AtomicFile.write(to: dir.appendingPathComponent("out.jsonl")) { w in
            try w.write(Data("a".utf8))
            removedDuringWrite = AtomicFile.removeStaleTemporaries(in: dir)
            try w.write(Data("b".utf8))
        }
        #expect(removedDuringWrite.isEmpty)
        #expect(try String(contentsOf: dir.appendingPathComponent("out.jsonl"), encoding: .utf8) == "ab")
    }

    @Test("a model is freed once its users let go: its own reference weights do not retain it (LeakSanitizer found every model leaking)")
    func modelIsFreed() throws {
        weak var freed: TransformerNetModel?
        weak var weights: PreparedWeights?
        do {
            let m = try loadTinyModel()
            let w = m.referenceWeights  // the lazily made OpenBLAS views that every pass without prepared weights uses
            let other = PreparedWeights(model: m, mm: OpenBLASMatMul.shared)  // a user's copy retains the model
            freed = m; weights = w
            withExtendedLifetime(other) { #expect(freed != nil) }
        }
        #expect(freed == nil, "the model outlived its last user")
        #expect(weights == nil, "its reference weights outlived it")
    }

    @Test("the BLAS serial region is a counter: overlapping regions on two threads end when the last leaves")
    func serialRegionCounts() {
        // The depth is process-wide and other suites' parallelGEMMs enter and leave it concurrently, so one attempt can
        // see their regions too. An attempt is clean when nobody else moved the depth during it; a flag instead of a
        // counter never reads base + 2 with both threads inside, nor base + 1 after A leaves while B is still inside.
        var clean = 0, passed = 0
        for _ in 0..<200 where passed == 0 {
            let base = dsq_blas_serial_depth()
            dsq_blas_enter_serial()  // thread A
            let entered = DispatchSemaphore(value: 0), leave = DispatchSemaphore(value: 0), left = DispatchSemaphore(value: 0)
            Thread.detachNewThread {  // thread B
                dsq_blas_enter_serial()
                entered.signal()
                leave.wait()
                dsq_blas_leave_serial()
                left.signal()
            }
            entered.wait()
            let both = dsq_blas_serial_depth()
            dsq_blas_leave_serial()  // A leaves first: B is still inside (a flag would have been cleared here)
            let middle = dsq_blas_serial_depth()
            leave.signal()
            left.wait()
            let end = dsq_blas_serial_depth()
            guard both == base + 2 && end == base else { continue }  // another suite entered or left meanwhile
            clean += 1
            if middle == base + 1 { passed += 1 }  // (a suite moving the depth between two reads spoils one attempt)
        }
        #expect(clean > 0, "no attempt saw both threads inside (base + 2): a flag, not a counter?")
        #expect(passed > 0, "after A left while B was inside, the depth was never base + 1 in \(clean) clean attempts")
    }

    @Test("training_args.json that exists but cannot be read, or is not an object, is an error (no metadata fallback)")
    func unreadableTrainingArgs() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let archive = try SafeTensors.read(Fixtures.url("model.safetensors"))
        try FileManager.default.copyItem(at: Fixtures.url("bert_config.json"), to: dir.appendingPathComponent("bert_config.json"))
        let args = dir.appendingPathComponent("training_args.json")
        let meta = try TensorArchive(tensors: archive.tensors, metadata: ["config": String(decoding: try Fixtures.data("training_args.json"), as: UTF8.self)])
        // Metadata alone (no file) is fine.
        _ = try ModelCheckpoint.readConfig(folder: dir, archive: meta, file: dir.appendingPathComponent("model.safetensors"))
        // A folder in its place cannot be read (even by root).
        try FileManager.default.createDirectory(at: args, withIntermediateDirectories: false)
        #expect {
            try ModelCheckpoint.readConfig(folder: dir, archive: meta, file: dir.appendingPathComponent("model.safetensors"))
        } throws: { "\($0)".contains(args.path) && "\($0)".contains("exists but cannot be read") }
        try FileManager.default.removeItem(at: args)
        try Data("{\"seq_len\": ".utf8).write(to: args)
        #expect {
            try ModelCheckpoint.readConfig(folder: dir, archive: meta, file: dir.appendingPathComponent("model.safetensors"))
        } throws: { "\($0)".contains(args.path) && "\($0)".contains("not valid JSON") }
        // A dangling symlink is not "missing" either.
        try FileManager.default.removeItem(at: args)
        try FileManager.default.createSymbolicLink(atPath: args.path, withDestinationPath: "/nonexistent/args.json")
        #expect {
            try ModelCheckpoint.readConfig(folder: dir, archive: meta, file: dir.appendingPathComponent("model.safetensors"))
        } throws: { "\($0)".contains("exists but cannot be read") }
    }

    @Test("config_name pointing at a device, FIFO or huge file is refused at once (found by reading the fuzz target)")
    func configNameNotRegularFile() throws {
        let t0 = Date()
        for name in ["/dev/zero", "/dev/urandom", "/proc/self/fd/0", "/"] {
            #expect {
                try ModelCheckpoint.config(args: ["config_name": name], folder: URL(fileURLWithPath: "/tmp"), lmHeadVocab: nil, file: "training_args.json")
            } throws: { "\($0)".contains("not a regular file") }
        }
        #expect(Date().timeIntervalSince(t0) < 2)
    }

    @Test("a source longer than seq_len is reported: wordpieces kept of how many, positions left for the output")
    func truncationReported() throws {
        let tok = try CustomVocabTokenizer(words: ["a", "b", "c"])
        let long = Array(repeating: 4, count: 30)
        let built = SequenceBuilder.build(source: long, target: [], seqLen: 12, tokenizer: tok)
        let fit = SequenceBuilder.fit(sourceWordpieces: 30, mask: built.mask)
        #expect(fit == SourceFit(wordpieces: 30, kept: 7, outputPositions: 2, seqLen: 12))
        #expect(fit.warning == "the source was truncated: 7 of 30 wordpieces kept (seq_len 12), 2 positions left for the output")
        let short = SequenceBuilder.build(source: [4, 5], target: [], seqLen: 12, tokenizer: tok)
        let ok = SequenceBuilder.fit(sourceWordpieces: 2, mask: short.mask)
        #expect(!ok.truncated && ok.warning == nil && ok.outputPositions == 7)
    }

    @Test("odd jsonl lines: BOM, CRLF, NUL, a 1 MB line — each a clear result or an error naming the line")
    func oddJSONL() throws {
        func read(_ s: [UInt8]) throws -> [(src: String, trg: String, line: Int)] {
            try Seq2SeqDataset.readPairs(data: Data(s), file: "odd.jsonl").pairs
        }
        // BOM on line 1 and CRLF endings are accepted.
        let bomCRLF = try read([0xEF, 0xBB, 0xBF] + Array("{\"src\": \"a\", \"trg\": \"b\"}\r\n{\"src\": \"c\", \"trg\": \"d\"}\r\n".utf8))
        #expect(bomCRLF.map(\.src) == ["a", "c"] && bomCRLF.map(\.trg) == ["b", "d"])
        // A raw NUL byte inside a string is not JSON: the error names the file and line.
        #expect {
            try read(Array("{\"src\": \"a\", \"trg\": \"b\"}\n{\"src\": \"x".utf8) + [0] + Array("y\", \"trg\": \"z\"}\n".utf8))
        } throws: { "\($0)" == "odd.jsonl:2: bad JSON" }
        // An escaped NUL is a character like any other.
        #expect(try read(Array("{\"src\": \"x\\u0000y\", \"trg\": \"z\"}\n".utf8)).first?.src == "x\u{0}y")
        // A BOM on a later line (files concatenated) is accepted too.
        #expect(try read(Array("{\"src\": \"a\", \"trg\": \"b\"}\n".utf8) + [0xEF, 0xBB, 0xBF]
                         + Array("{\"src\": \"c\", \"trg\": \"d\"}\n".utf8)).map(\.src) == ["a", "c"])
        // A 1 MB line reads (quickly) and is truncated to seq_len when built.
        let big = String(repeating: "word ", count: 200_000)
        let t0 = Date()
        let pairs = try read(Array("{\"src\": \"\(big)\", \"trg\": \"b\"}\n".utf8))
        #expect(pairs.first?.src.count == 999_999)
        #expect(Date().timeIntervalSince(t0) < 10)
    }
}
