import Foundation
import Testing
@testable import DiffuSeqCore

// MARK: - Helpers

/// A fresh empty folder under the temporary directory.
private func makeTempDir() throws -> URL {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("checkpoint-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// Writes `bytes` to `name` in a fresh folder and returns its URL.
private func tempFile(_ name: String, _ bytes: Data) throws -> URL {
    let url = try makeTempDir().appendingPathComponent(name)
    try bytes.write(to: url)
    return url
}

/// Runs `body`, which must throw a `CheckpointError` whose description contains every string of `needles`.
private func expectCheckpointError(_ needles: [String], sourceLocation: SourceLocation = #_sourceLocation,
                                   _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected a CheckpointError containing \(needles), but nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as CheckpointError {
        for n in needles {
            #expect(e.description.contains(n), "error \"\(e.description)\" does not contain \"\(n)\"", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected a CheckpointError, got \(error)", sourceLocation: sourceLocation)
    }
}

private func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

/// Builds pickle bytes opcode by opcode.
private struct PickleBuilder {
    var b: [UInt8] = []
    mutating func proto(_ p: UInt8) { b += [0x80, p] }
    mutating func global(_ m: String, _ n: String) { b += [0x63] + Array("\(m)\n\(n)\n".utf8) }
    mutating func str(_ s: String) { let u = Array(s.utf8); b += [0x58] + le(UInt32(u.count)) + u }
    mutating func shortStr(_ s: String) { let u = Array(s.utf8); b += [0x8C, UInt8(u.count)] + u }
    mutating func int(_ i: Int) { b += [0x4A] + le(Int32(i)) }
    mutating func mark() { b.append(0x28) }
    mutating func tuple() { b.append(0x74) }
    mutating func intTuple(_ xs: [Int]) { mark(); for x in xs { int(x) }; tuple() }
    mutating func op(_ o: UInt8) { b.append(o) }
    /// `_rebuild_tensor_v2(('storage', <type>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())`
    mutating func tensor(storage: String = "FloatStorage", key: String, numel: Int, offset: Int, size: [Int], stride: [Int],
                         parameter: Bool = false) {
        if parameter { global("torch._utils", "_rebuild_parameter"); mark() }
        global("torch._utils", "_rebuild_tensor_v2")
        mark()
        mark(); str("storage"); global("torch", storage); str(key); str("cpu"); int(numel); tuple()
        op(0x51)  // BINPERSID
        int(offset); intTuple(size); intTuple(stride); op(0x89)  // NEWFALSE
        global("collections", "OrderedDict"); op(0x29); op(0x52)  // OrderedDict()
        tuple()
        op(0x52)  // REDUCE
        if parameter { op(0x88); global("collections", "OrderedDict"); op(0x29); op(0x52); tuple(); op(0x52) }
    }
}

/// A zip entry for `makeZip`.
private struct ZipItem {
    var name: String
    var data: Data
    var method: UInt16 = 0
    var claimedSize: UInt32? = nil
}

/// Builds a zip archive (no CRCs; the reader does not check them).
private func makeZip(_ items: [ZipItem], zip64: Bool = false) -> Data {
    var out: [UInt8] = []
    var central: [UInt8] = []
    for it in items {
        let name = Array(it.name.utf8)
        let offset = UInt32(out.count)
        let comp = UInt32(it.data.count)
        let size = it.claimedSize ?? comp
        out += le(UInt32(0x0403_4B50)) + le(UInt16(20)) + le(UInt16(0)) + le(it.method) + le(UInt32(0)) + le(UInt32(0))
        out += le(comp) + le(size) + le(UInt16(name.count)) + le(UInt16(0)) + name
        out += Array(it.data)
        central += le(UInt32(0x0201_4B50)) + le(UInt16(20)) + le(UInt16(20)) + le(UInt16(0)) + le(it.method)
        if zip64 {
            // sizes and offset moved to the zip64 extra field
            central += le(UInt32(0)) + le(UInt32(0)) + le(UInt32.max) + le(UInt32.max) + le(UInt16(name.count))
            central += le(UInt16(28)) + le(UInt16(0)) + le(UInt16(0)) + le(UInt16(0)) + le(UInt32(0)) + le(UInt32.max) + name
            central += le(UInt16(1)) + le(UInt16(24)) + le(UInt64(size)) + le(UInt64(comp)) + le(UInt64(offset))
        } else {
            central += le(UInt32(0)) + le(UInt32(0)) + le(comp) + le(size) + le(UInt16(name.count))
            central += le(UInt16(0)) + le(UInt16(0)) + le(UInt16(0)) + le(UInt16(0)) + le(UInt32(0)) + le(offset) + name
        }
    }
    let cdOffset = UInt32(out.count)
    out += central
    if zip64 {
        let z64 = UInt64(out.count)
        out += le(UInt32(0x0606_4B50)) + le(UInt64(44)) + le(UInt16(45)) + le(UInt16(45)) + le(UInt32(0)) + le(UInt32(0))
        out += le(UInt64(items.count)) + le(UInt64(items.count)) + le(UInt64(central.count)) + le(UInt64(cdOffset))
        out += le(UInt32(0x0706_4B50)) + le(UInt32(0)) + le(z64) + le(UInt32(1))
        out += le(UInt32(0x0605_4B50)) + le(UInt16(0)) + le(UInt16(0)) + le(UInt16.max) + le(UInt16.max)
        out += le(UInt32.max) + le(UInt32.max) + le(UInt16(0))
        return Data(out)
    }
    out += le(UInt32(0x0605_4B50)) + le(UInt16(0)) + le(UInt16(0)) + le(UInt16(items.count)) + le(UInt16(items.count))
    out += le(UInt32(central.count)) + le(cdOffset) + le(UInt16(0))
    return Data(out)
}

/// A torch.save-like zip: `archive/data.pkl` plus `archive/data/<key>` storages.
private func makeTorchZip(_ pickle: [UInt8], storages: [(String, Data)] = [], prefix: String = "archive",
                          zip64: Bool = false) -> Data {
    var items = [ZipItem(name: "\(prefix)/data.pkl", data: Data(pickle))]
    for (k, d) in storages { items.append(ZipItem(name: "\(prefix)/data/\(k)", data: d)) }
    items.append(ZipItem(name: "\(prefix)/byteorder", data: Data("little".utf8)))
    return makeZip(items, zip64: zip64)
}

private func floatData(_ xs: [Float]) -> Data { xs.withUnsafeBytes { Data($0) } }

/// A safetensors file from a raw header string and data bytes.
private func rawSafetensors(_ header: String, _ data: Data) -> Data {
    var h = Array(header.utf8)
    while h.count % 8 != 0 { h.append(0x20) }
    return Data(le(UInt64(h.count)) + h) + data
}

// MARK: - (a) Official fixture

@Suite("Checkpoint I/O")
struct CheckpointIOTests {
    @Test("ema .pt equals model.safetensors: 51 names, dtypes, shapes, bit-identical values")
    func fixturePtMatchesSafetensors() throws {
        let pt = try TorchCheckpoint.read(Fixtures.url("ema_0.9999_000005.pt"))
        let st = try SafeTensors.read(Fixtures.url("model.safetensors"))
        #expect(pt.count == 51)
        #expect(st.count == 51)
        #expect(Set(pt.names) == Set(st.names))
        #expect(st.metadata["format"] == "pt")
        #expect(st.metadata["source"] == "ema_0.9999_000005.pt")
        #expect(pt.metadata.isEmpty)

        // State-dict order, as in manifest.json (parsed with the order-preserving header parser).
        let manifest = try Fixtures.data("manifest.json")
        let parsed = try manifest.withUnsafeBytes { raw -> CheckpointJSON in
            var p = CheckpointJSONParser(bytes: raw)
            return try p.parseDocument()
        }
        guard case .object(let files) = parsed,
              case .object(let model)? = files.first(where: { $0.0 == "model.safetensors" })?.1 else {
            Issue.record("manifest.json has no model.safetensors object")
            return
        }
        #expect(pt.names == model.map(\.0))
        #expect(pt.names.prefix(4) == ["position_ids", "word_embedding.weight", "lm_head.weight", "lm_head.bias"])

        for t in pt.tensors {
            let s = try #require(st[t.name], "missing \(t.name) in model.safetensors")
            #expect(t.dtype == s.dtype, "\(t.name)")
            #expect(t.shape == s.shape, "\(t.name)")
            #expect(t.data == s.data, "\(t.name): bytes differ")
            if case .object(let m)? = model.first(where: { $0.0 == t.name })?.1,
               case .array(let shape)? = m.first(where: { $0.0 == "shape" })?.1 {
                #expect(shape.map(\.description) == t.shape.map(String.init), "\(t.name)")
            }
            if t.dtype == .F32 {
                let a = try t.floats(), b = try s.floats()
                #expect(a.count == t.elementCount)
                #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "\(t.name)")
            }
        }
        let pos = try pt.tensor("position_ids")
        #expect(pos.dtype == .I64)
        #expect(pos.shape == [1, 512])
        #expect(try pos.int64s() == (0..<512).map(Int64.init))
        #expect(try st.tensor("position_ids").int64s() == (0..<512).map(Int64.init))
        // The tie quirk: the two embedding matrices are stored separately and differ.
        #expect(try pt.tensor("word_embedding.weight").data != pt.tensor("lm_head.weight").data)
        #expect(try pt.tensor("word_embedding.weight").shape == [97, 16])
    }

    @Test("synthetic .pt: offsets, transposed strides, parameters, wrapper dict, any prefix")
    func syntheticPt() throws {
        // storage 0: 0..<12 as float; storage 1: int64 7,8,9
        let s0 = floatData((0..<12).map(Float.init))
        let s1 = Data((Int64(7)...9).flatMap { le($0) })
        var p = PickleBuilder()
        p.proto(2)
        p.op(0x7D)  // EMPTY_DICT (outer)
        p.mark()
        p.str("epoch"); p.int(3)
        p.str("state_dict")
        p.global("collections", "OrderedDict"); p.op(0x29); p.op(0x52)
        p.mark()
        p.str("t"); p.tensor(key: "0", numel: 12, offset: 1, size: [3, 2], stride: [1, 3])  // transposed view at offset 1
        p.str("p"); p.tensor(key: "0", numel: 12, offset: 6, size: [2, 3], stride: [3, 1], parameter: true)
        p.str("i"); p.tensor(storage: "LongStorage", key: "1", numel: 3, offset: 0, size: [3], stride: [1])
        p.str("b"); p.tensor(key: "0", numel: 12, offset: 2, size: [2, 2], stride: [0, 2])  // broadcast rows
        p.op(0x75)  // SETITEMS (inner)
        p.op(0x75)  // SETITEMS (outer)
        p.op(0x2E)
        let url = try tempFile("synthetic.pt", makeTorchZip(p.b, storages: [("0", s0), ("1", s1)], prefix: "my_model"))
        let a = try TorchCheckpoint.read(url)
        let url64 = try tempFile("synthetic64.pt", makeTorchZip(p.b, storages: [("0", s0), ("1", s1)], zip64: true))
        let a64 = try TorchCheckpoint.read(url64)
        #expect(a64.names == a.names)
        #expect(a64.tensors.map(\.data) == a.tensors.map(\.data))
        #expect(a.names == ["t", "p", "i", "b"])
        // t[r][c] = storage[1 + r*1 + c*3]
        #expect(try a.tensor("t").floats() == [1, 4, 2, 5, 3, 6])
        #expect(try a.tensor("t").shape == [3, 2])
        #expect(try a.tensor("p").floats() == [6, 7, 8, 9, 10, 11])
        #expect(try a.tensor("i").int64s() == [7, 8, 9])
        #expect(try a.tensor("b").floats() == [2, 4, 2, 4])
        expectCheckpointError(["dtype I64", "floats()"]) { _ = try a.tensor("i").floats() }
        expectCheckpointError(["no tensor named 'missing'"]) { _ = try a.tensor("missing") }
    }

    @Test("F16, BF16, F64 and small integer conversions")
    func conversions() throws {
        let half: [UInt16] = [0x3C00, 0xC000, 0x0001, 0x7C00, 0x3555, 0x0000, 0x8000]
        let h = try NamedTensor(name: "h", dtype: .F16, shape: [7], data: Data(half.flatMap { le($0) }))
        let hf = try h.floats()
        #expect(hf[0] == 1 && hf[1] == -2 && hf[2] == Float(5.9604645e-08) && hf[3] == .infinity)
        #expect(hf[4] == Float(0.33325195) && hf[5] == 0 && hf[6].sign == .minus)
        let bf = try NamedTensor(name: "b", dtype: .BF16, shape: [2], data: Data(le(UInt16(0x3F80)) + le(UInt16(0xC0A0))))
        #expect(try bf.floats() == [1, -5])
        let d = try NamedTensor(name: "d", dtype: .F64, shape: [2], data: Data(le((0.5).bitPattern) + le((-3.0).bitPattern)))
        #expect(try d.floats() == [0.5, -3])
        let i8 = try NamedTensor(name: "i8", dtype: .I8, shape: [2], data: Data([0xFF, 0x05]))
        #expect(try i8.int64s() == [-1, 5])
        let i32 = try NamedTensor(name: "i32", dtype: .I32, shape: [1], data: Data(le(Int32(-7))))
        #expect(try i32.int64s() == [-7])
        #expect(TensorDType.allCases.map(\.byteSize) == [4, 2, 2, 8, 8, 4, 2, 1, 1, 1])
        #expect(throws: CheckpointError.self) { _ = try NamedTensor(name: "bad", dtype: .F32, shape: [3], data: Data(count: 8)) }
    }

    // MARK: - (b) Safetensors round trip and atomic write

    private func sampleArchive() throws -> TensorArchive {
        try TensorArchive(tensors: [
            NamedTensor(name: "w", shape: [2, 3], floats: [1, -2, 3.5, .pi, -0.0, 1e-30]),
            NamedTensor(name: "ids", shape: [1, 4], int64s: [0, -1, .max, .min]),
            NamedTensor(name: "h", dtype: .F16, shape: [3], data: Data([0, 0x3C, 0, 0xC0, 0x55, 0x35])),
            NamedTensor(name: "bf", dtype: .BF16, shape: [1], data: Data([0x80, 0x3F])),
            NamedTensor(name: "mask", dtype: .BOOL, shape: [3], data: Data([1, 0, 1])),
            NamedTensor(name: "u8", dtype: .U8, shape: [], data: Data([200])),
            NamedTensor(name: "empty", dtype: .F32, shape: [0, 3], data: Data()),
            NamedTensor(name: "名前 \"quoted\"\\", shape: [1], floats: [42]),
        ], metadata: ["format": "pt", "config": "{\"a\": [1, 2]}\n\tü"])
    }

    @Test("safetensors write → read round trip, canonical layout")
    func roundTrip() throws {
        let archive = try sampleArchive()
        let url = try makeTempDir().appendingPathComponent("rt.safetensors")
        try SafeTensors.write(archive, to: url)
        let back = try SafeTensors.read(url)
        #expect(back.names == archive.names)
        #expect(back.metadata == archive.metadata)
        for (a, b) in zip(archive.tensors, back.tensors) {
            #expect(a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.data == b.data, "\(a.name)")
        }
        #expect(try back.tensor("h").floats() == [1, -2, Float(0.33325195)])
        let bytes = try Data(contentsOf: url)
        let n = Int(bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
        #expect(n % 8 == 0)
        let dataBytes = archive.tensors.reduce(0) { $0 + $1.data.count }
        #expect(bytes.count == 8 + n + dataBytes)  // contiguous, nothing else
        // A second write replaces the file.
        var two = try TensorArchive(tensors: [NamedTensor(name: "x", shape: [1], floats: [9])])
        two.metadata["k"] = "v"
        try SafeTensors.write(two, to: url)
        let again = try SafeTensors.read(url)
        #expect(again.names == ["x"] && again.metadata == ["k": "v"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path) == ["rt.safetensors"])
    }

    @Test("a failed write leaves the previous file intact and no temporary file")
    func atomicWrite() throws {
        let dir = try makeTempDir()
        let url = dir.appendingPathComponent("model.safetensors")
        try SafeTensors.write(try sampleArchive(), to: url)
        let before = try Data(contentsOf: url)

        // A tensor whose data no longer matches its shape fails in the middle of the write
        // (after the header and the first tensor went to the temporary file).
        var good = try NamedTensor(name: "a", shape: [4], floats: [1, 2, 3, 4])
        var bad = try NamedTensor(name: "b", shape: [1000], floats: [Float](repeating: 1, count: 1000))
        bad.data = Data(count: 12)
        good.data = floatData([5, 6, 7, 8])
        let broken = try TensorArchive(tensors: [good, bad])
        expectCheckpointError([url.path, "tensor 'b'", "needs 4000 bytes but holds 12"]) {
            try SafeTensors.write(broken, to: url)
        }
        #expect(try Data(contentsOf: url) == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["model.safetensors"])
        #expect(try SafeTensors.read(url).names == sampleArchive().names)

        // The rename fails because the target is a non-empty folder: the temporary file is removed.
        let folder = dir.appendingPathComponent("taken")
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("inner"), withIntermediateDirectories: true)
        expectCheckpointError([folder.path, "rename"]) { try SafeTensors.write(try sampleArchive(), to: folder) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["model.safetensors", "taken"])

        // The folder does not exist: clear error, nothing created.
        let nowhere = dir.appendingPathComponent("missing/x.safetensors")
        expectCheckpointError([nowhere.path, "cannot create temporary file"]) { try SafeTensors.write(try sampleArchive(), to: nowhere) }
        #expect(try Data(contentsOf: url) == before)
    }

    // MARK: - (c) Hostile and corrupt inputs

    @Test("pickle GLOBAL os.system is refused")
    func refusesOsSystem() throws {
        var p = PickleBuilder()
        p.proto(2)
        p.global("os", "system"); p.str("echo pwned"); p.op(0x85); p.op(0x52); p.op(0x2E)
        let url = try tempFile("evil.pt", makeTorchZip(p.b))
        expectCheckpointError(["\(url.path): refusing pickle global os.system at offset 2 (only tensors, tuples and dicts are read)"]) {
            _ = try TorchCheckpoint.read(url)
        }
        // The same after a legitimate tensor, deep inside the dict (posix.system).
        var q = PickleBuilder()
        q.proto(2)
        q.global("collections", "OrderedDict"); q.op(0x29); q.op(0x52)
        q.mark()
        q.str("w"); q.tensor(key: "0", numel: 2, offset: 0, size: [2], stride: [1])
        let at = q.b.count
        q.str("x"); q.global("posix", "system"); q.str("id"); q.op(0x85); q.op(0x52)
        q.op(0x75); q.op(0x2E)
        let url2 = try tempFile("evil2.pt", makeTorchZip(q.b, storages: [("0", floatData([1, 2]))]))
        let globalAt = at + 6  // after X + 4-byte length + "x"
        expectCheckpointError([url2.path, "refusing pickle global posix.system at offset \(globalAt)"]) {
            _ = try TorchCheckpoint.read(url2)
        }
    }

    @Test("STACK_GLOBAL builtins.eval and subprocess.Popen are refused")
    func refusesStackGlobal() throws {
        var p = PickleBuilder()
        p.proto(4)
        p.op(0x95); p.b += le(UInt64(40))  // FRAME
        p.shortStr("builtins"); p.op(0x94); p.shortStr("eval"); p.op(0x94)
        let at = p.b.count
        p.op(0x93)  // STACK_GLOBAL
        p.shortStr("__import__('os').system('id')"); p.op(0x85); p.op(0x52); p.op(0x2E)
        let url = try tempFile("eval.pt", makeTorchZip(p.b))
        expectCheckpointError([url.path, "refusing pickle global builtins.eval at offset \(at)", "only tensors, tuples and dicts"]) {
            _ = try TorchCheckpoint.read(url)
        }
        var q = PickleBuilder()
        q.proto(2); q.global("subprocess", "Popen"); q.op(0x2E)
        let url2 = try tempFile("popen.pt", makeTorchZip(q.b))
        expectCheckpointError([url2.path, "subprocess.Popen at offset 2"]) { _ = try TorchCheckpoint.read(url2) }
        // Allowed names are matched exactly (no prefix tricks) and storages cannot be called.
        // A broadcast view (stride 0) of one element cannot make the reader allocate gigabytes.
        var b = PickleBuilder()
        b.proto(2)
        b.global("collections", "OrderedDict"); b.op(0x29); b.op(0x52)
        b.mark(); b.str("big"); b.tensor(key: "0", numel: 1, offset: 0, size: [1_000_000_000], stride: [0]); b.op(0x75); b.op(0x2E)
        let urlB = try tempFile("broadcast.pt", makeTorchZip(b.b, storages: [("0", floatData([1]))]))
        expectCheckpointError([urlB.path, "tensor 'big'", "would need 4000000000 bytes"]) { _ = try TorchCheckpoint.read(urlB) }
        var r = PickleBuilder()
        r.proto(2); r.global("torch._utils", "_rebuild_tensor_v2.__globals__"); r.op(0x2E)
        let url3 = try tempFile("trick.pt", makeTorchZip(r.b))
        expectCheckpointError(["refusing pickle global torch._utils._rebuild_tensor_v2.__globals__"]) { _ = try TorchCheckpoint.read(url3) }
        var s = PickleBuilder()
        s.proto(2); s.global("torch", "FloatStorage"); s.op(0x29); s.op(0x52); s.op(0x2E)
        let url4 = try tempFile("callstorage.pt", makeTorchZip(s.b))
        expectCheckpointError([url4.path, "calling a storage type is not supported", "offset 23"]) { _ = try TorchCheckpoint.read(url4) }
    }

    @Test("zip bomb: deflate-compressed data.pkl with a huge size is refused without inflating")
    func zipBomb() throws {
        let bomb = makeZip([ZipItem(name: "archive/data.pkl", data: Data(repeating: 0x03, count: 64), method: 8,
                                    claimedSize: 0xFFFF_FFF0)])
        let url = try tempFile("bomb.pt", bomb)
        expectCheckpointError([url.path, "zip entry 'archive/data.pkl' is compressed (deflate", "4294967280", "only stored entries"]) {
            _ = try TorchCheckpoint.read(url)
        }
        // A stored entry whose size runs past the end of the file.
        var z = [UInt8](makeTorchZip([0x80, 0x02, 0x7D, 0x2E]))
        // patch the central directory sizes of the first entry (comp + uncomp) to 10^9
        let cd = z.count - 22
        let cdOffset = Int(z[cd + 16]) | Int(z[cd + 17]) << 8 | Int(z[cd + 18]) << 16 | Int(z[cd + 19]) << 24
        for (i, b) in le(UInt32(1_000_000_000)).enumerated() { z[cdOffset + 20 + i] = b; z[cdOffset + 24 + i] = b }
        let url2 = try tempFile("oversize.pt", Data(z))
        expectCheckpointError([url2.path, "zip entry 'archive/data.pkl'", "1000000000 bytes of data at offset", "extend past the end"]) {
            _ = try TorchCheckpoint.read(url2)
        }
    }

    @Test("truncated, garbage and empty .pt files")
    func corruptPt() throws {
        let full = try Fixtures.data("ema_0.9999_000005.pt")
        let cut = try tempFile("cut.pt", full.prefix(full.count / 2))
        expectCheckpointError([cut.path, "end-of-central-directory", "offset \(full.count / 2)", "truncated"]) {
            _ = try TorchCheckpoint.read(cut)
        }
        // Cut inside the central directory (the EOCD is kept by re-appending it): names the entry offset.
        let eocd = full.suffix(22)
        let chopped = try tempFile("chopped.pt", full.prefix(full.count - 22 - 300) + eocd)
        expectCheckpointError([chopped.path, "offset"]) { _ = try TorchCheckpoint.read(chopped) }

        var g: UInt64 = 0x9E37_79B9_7F4A_7C15
        let garbageBytes = Data((0..<4096).map { _ -> UInt8 in g = g &* 6364136223846793005 &+ 1442695040888963407; return UInt8(g >> 56) })
        let garbage = try tempFile("garbage.pt", garbageBytes)
        expectCheckpointError([garbage.path, "end-of-central-directory"]) { _ = try TorchCheckpoint.read(garbage) }
        let empty = try tempFile("empty.pt", Data())
        expectCheckpointError([empty.path, "file is empty"]) { _ = try TorchCheckpoint.read(empty) }
        let legacy = try tempFile("legacy.pt", Data([0x80, 0x02, 0x8A, 0x0A] + [UInt8](repeating: 0, count: 40)))
        expectCheckpointError([legacy.path, "legacy torch.save format"]) { _ = try TorchCheckpoint.read(legacy) }
        let missing = URL(fileURLWithPath: "/nonexistent/dir/x.pt")
        expectCheckpointError(["/nonexistent/dir/x.pt", "cannot open"]) { _ = try TorchCheckpoint.read(missing) }

        // A zip without data.pkl, and a pickle cut before STOP.
        let noPkl = try tempFile("nopkl.pt", makeZip([ZipItem(name: "archive/other", data: Data([1]))]))
        expectCheckpointError([noPkl.path, "data.pkl"]) { _ = try TorchCheckpoint.read(noPkl) }
        let realPkl: [UInt8] = {
            var p = PickleBuilder(); p.proto(2)
            p.global("collections", "OrderedDict"); p.op(0x29); p.op(0x52); p.mark(); p.str("w")
            p.tensor(key: "0", numel: 2, offset: 0, size: [2], stride: [1]); p.op(0x75); p.op(0x2E)
            return p.b
        }()
        let noStop = try tempFile("nostop.pt", makeTorchZip(Array(realPkl.dropLast(3)), storages: [("0", floatData([1, 2]))]))
        expectCheckpointError([noStop.path, "without STOP"]) { _ = try TorchCheckpoint.read(noStop) }
        let midString = try tempFile("midstring.pt", makeTorchZip(Array(realPkl.prefix(40)), storages: [("0", floatData([1, 2]))]))
        expectCheckpointError([midString.path, "truncated", "offset"]) { _ = try TorchCheckpoint.read(midString) }
        // The intact version reads fine (so the failures above come from the damage).
        let ok = try tempFile("ok.pt", makeTorchZip(realPkl, storages: [("0", floatData([1, 2]))]))
        #expect(try TorchCheckpoint.read(ok).tensor("w").floats() == [1, 2])
    }

    @Test("storage shorter than size × stride needs, and storage numel larger than its entry")
    func shortStorage() throws {
        var p = PickleBuilder()
        p.proto(2)
        p.global("collections", "OrderedDict"); p.op(0x29); p.op(0x52)
        p.mark(); p.str("w"); p.tensor(key: "0", numel: 4, offset: 0, size: [3, 3], stride: [3, 1]); p.op(0x75); p.op(0x2E)
        let url = try tempFile("short.pt", makeTorchZip(p.b, storages: [("0", floatData([1, 2, 3, 4]))]))
        expectCheckpointError([url.path, "size [3, 3], stride [3, 1]", "needs 9 elements but storage '0' holds 4"]) {
            _ = try TorchCheckpoint.read(url)
        }
        var q = PickleBuilder()
        q.proto(2)
        q.global("collections", "OrderedDict"); q.op(0x29); q.op(0x52)
        q.mark(); q.str("w"); q.tensor(key: "0", numel: 1_000_000, offset: 0, size: [4], stride: [1]); q.op(0x75); q.op(0x2E)
        let url2 = try tempFile("numel.pt", makeTorchZip(q.b, storages: [("0", floatData([1, 2, 3, 4]))]))
        expectCheckpointError([url2.path, "storage '0' claims 1000000 F32 elements", "'archive/data/0' holds 16 bytes"]) {
            _ = try TorchCheckpoint.read(url2)
        }
        // A broadcast view (stride 0) of one element cannot make the reader allocate gigabytes.
        var b = PickleBuilder()
        b.proto(2)
        b.global("collections", "OrderedDict"); b.op(0x29); b.op(0x52)
        b.mark(); b.str("big"); b.tensor(key: "0", numel: 1, offset: 0, size: [1_000_000_000], stride: [0]); b.op(0x75); b.op(0x2E)
        let urlB = try tempFile("broadcast.pt", makeTorchZip(b.b, storages: [("0", floatData([1]))]))
        expectCheckpointError([urlB.path, "tensor 'big'", "would need 4000000000 bytes"]) { _ = try TorchCheckpoint.read(urlB) }
        var r = PickleBuilder()
        r.proto(2)
        r.global("collections", "OrderedDict"); r.op(0x29); r.op(0x52)
        r.mark(); r.str("w"); r.tensor(key: "7", numel: 4, offset: 0, size: [4], stride: [1]); r.op(0x75); r.op(0x2E)
        let url3 = try tempFile("nostorage.pt", makeTorchZip(r.b, storages: [("0", floatData([1, 2, 3, 4]))]))
        expectCheckpointError([url3.path, "zip entry 'archive/data/7' not found"]) { _ = try TorchCheckpoint.read(url3) }
    }

    @Test("pickle limits: nesting depth, unknown opcodes, stack underflow, bad memo")
    func pickleLimits() throws {
        var p = PickleBuilder()
        p.proto(2); p.op(0x29)
        for _ in 0..<1000 { p.op(0x85) }  // TUPLE1 nested 1000 deep
        p.op(0x2E)
        let deep = try tempFile("deep.pt", makeTorchZip(p.b))
        expectCheckpointError([deep.path, "nested deeper than 200"]) { _ = try TorchCheckpoint.read(deep) }
        let newobj = try tempFile("newobj.pt", makeTorchZip([0x80, 0x02, 0x29, 0x29, 0x81, 0x2E]))
        expectCheckpointError([newobj.path, "unsupported pickle opcode 0x81 at offset 4"]) { _ = try TorchCheckpoint.read(newobj) }
        let under = try tempFile("under.pt", makeTorchZip([0x80, 0x02, 0x52, 0x2E]))
        expectCheckpointError([under.path, "stack underflow at offset 2"]) { _ = try TorchCheckpoint.read(under) }
        let memo = try tempFile("memo.pt", makeTorchZip([0x80, 0x02, 0x68, 0x05, 0x2E]))
        expectCheckpointError([memo.path, "memo key 5 not defined at offset 2"]) { _ = try TorchCheckpoint.read(memo) }
        let proto = try tempFile("proto.pt", makeTorchZip([0x80, 0x09, 0x7D, 0x2E]))
        expectCheckpointError([proto.path, "unsupported pickle protocol 9"]) { _ = try TorchCheckpoint.read(proto) }
        // A self-referencing list (cycle) is harmless: it is broken up after the run.
        let cycle = try tempFile("cycle.pt", makeTorchZip([0x80, 0x02, 0x5D, 0x71, 0x00, 0x68, 0x00, 0x61, 0x30, 0x7D, 0x2E]))
        #expect(try TorchCheckpoint.read(cycle).count == 0)
        // A top-level list is not a state dict.
        let list = try tempFile("list.pt", makeTorchZip([0x80, 0x02, 0x5D, 0x2E]))
        expectCheckpointError([list.path, "top-level object is a list"]) { _ = try TorchCheckpoint.read(list) }
    }

    @Test("safetensors: header claiming 10^12 bytes, truncated, garbage, empty")
    func corruptSafetensorsSizes() throws {
        let huge = try tempFile("huge.safetensors", Data(le(UInt64(1_000_000_000_000)) + Array("{}      ".utf8)))
        expectCheckpointError([huge.path, "claims 1000000000000 bytes but only 8 bytes follow"]) { _ = try SafeTensors.read(huge) }

        let full = try Fixtures.data("model.safetensors")
        let cut = try tempFile("cut.safetensors", full.prefix(full.count / 2))
        expectCheckpointError([cut.path, "tensor '", "lie outside the data section of"]) { _ = try SafeTensors.read(cut) }
        let cutHeader = try tempFile("cuthdr.safetensors", full.prefix(100))
        expectCheckpointError([cutHeader.path, "only 92 bytes follow"]) { _ = try SafeTensors.read(cutHeader) }

        var g: UInt64 = 12345
        let garbageBytes = Data((0..<4096).map { _ -> UInt8 in g = g &* 6364136223846793005 &+ 1442695040888963407; return UInt8(g >> 56) })
        let garbage = try tempFile("garbage.safetensors", garbageBytes)
        expectCheckpointError([garbage.path, "header length field at offset 0"]) { _ = try SafeTensors.read(garbage) }
        // Garbage whose length field happens to fit: the JSON parser reports the offset.
        let garbage2 = try tempFile("garbage2.safetensors", Data(le(UInt64(16))) + garbageBytes.prefix(16))
        expectCheckpointError([garbage2.path, "header JSON invalid at file offset 8"]) { _ = try SafeTensors.read(garbage2) }
        let empty = try tempFile("empty.safetensors", Data())
        expectCheckpointError([empty.path, "file is empty"]) { _ = try SafeTensors.read(empty) }
        let tiny = try tempFile("tiny.safetensors", Data([1, 2, 3]))
        expectCheckpointError([tiny.path, "3 bytes"]) { _ = try SafeTensors.read(tiny) }
    }

    @Test("safetensors: wrong data_offsets, overlap, unknown dtype, duplicates, bad JSON")
    func corruptSafetensorsHeader() throws {
        let d = Data(count: 24)
        func check(_ name: String, _ header: String, _ needles: [String]) throws {
            let url = try tempFile(name, rawSafetensors(header, d))
            expectCheckpointError([url.path] + needles) { _ = try SafeTensors.read(url) }
        }
        try check("size.safetensors", #"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                  ["tensor 'w'", "data_offsets [0, 8] hold 8 bytes but F32 [3] needs 12"])
        try check("range.safetensors", #"{"w":{"dtype":"F32","shape":[10],"data_offsets":[0,40]}}"#,
                  ["tensor 'w'", "data_offsets [0, 40] lie outside the data section of 24 bytes"])
        try check("reversed.safetensors", #"{"w":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}}"#,
                  ["tensor 'w'", "[8, 4]"])
        try check("overlap.safetensors",
                  #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                  ["tensor 'b'", "overlap tensor 'a' [0, 8]"])
        try check("dtype.safetensors", #"{"w":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[0,3]}}"#,
                  ["tensor 'w'", "unknown dtype 'F8_E4M3'"])
        try check("dup.safetensors",
                  #"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
                  ["duplicate key 'w'"])
        try check("json.safetensors", #"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}"#,
                  ["header JSON invalid at file offset"])
        try check("neg.safetensors", #"{"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#,
                  ["tensor 'w'", "\"shape\" holds -1"])
        try check("overflow.safetensors", #"{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
                  ["tensor 'w'", "shape [4294967296, 4294967296] overflows"])
        try check("bytes.safetensors", #"{"w":{"dtype":"F64","shape":[1152921504606846976,4],"data_offsets":[0,8]}}"#,
                  ["tensor 'w'", "needs more than Int.max"])
        try check("meta.safetensors", #"{"__metadata__":{"k":1}}"#, ["__metadata__ value for key 'k' is not a string"])
        try check("nooffsets.safetensors", #"{"w":{"dtype":"U8","shape":[1]}}"#, ["tensor 'w'", "no \"data_offsets\""])
        try check("deep.safetensors", String(repeating: "[", count: 100) + String(repeating: "]", count: 100),
                  ["nesting deeper than 64"])
        // A valid header with the same data reads (so the failures above come from the header).
        let ok = try tempFile("ok.safetensors",
                              rawSafetensors(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[2],"data_offsets":[8,24]}}"#, d))
        let a = try SafeTensors.read(ok)
        #expect(a.names == ["a", "b"])
        #expect(try a.tensor("b").int64s() == [0, 0])
    }

    /// Writes files for the Python `safetensors` cross-check (opt-in: CHECKPOINT_EXPORT=<folder>).
    @Test("export files for the Python safetensors check", .enabled(if: ProcessInfo.processInfo.environment["CHECKPOINT_EXPORT"] != nil))
    func exportForPython() throws {
        let dir = URL(fileURLWithPath: ProcessInfo.processInfo.environment["CHECKPOINT_EXPORT"] ?? "/tmp")
        try SafeTensors.write(try sampleArchive(), to: dir.appendingPathComponent("sample.safetensors"))
        let pt = try TorchCheckpoint.read(Fixtures.url("ema_0.9999_000005.pt"))
        var withMeta = pt
        withMeta.metadata = ["format": "pt"]
        try SafeTensors.write(withMeta, to: dir.appendingPathComponent("from_pt.safetensors"))
    }

    // MARK: - Speed (opt-in: CHECKPOINT_BENCH=1 swift test -c release --filter bench)

    @Test("bench: read ~370 MB safetensors and .pt", .enabled(if: ProcessInfo.processInfo.environment["CHECKPOINT_BENCH"] != nil))
    func bench() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let perTensor = 1 << 20  // 4 MB of F32
        var tensors: [NamedTensor] = []
        var storages: [(String, Data)] = []
        var p = PickleBuilder()
        p.proto(2)
        p.global("collections", "OrderedDict"); p.op(0x29); p.op(0x52); p.mark()
        for i in 0..<92 {
            var data = Data(count: perTensor * 4)
            data.withUnsafeMutableBytes { raw in
                let f = raw.bindMemory(to: Float.self)
                for j in stride(from: 0, to: perTensor, by: 4096) { f[j] = Float(i * perTensor + j) }
            }
            tensors.append(try NamedTensor(name: "layer.\(i).weight", dtype: .F32, shape: [1024, 1024], data: data))
            storages.append(("\(i)", data))
            p.str("layer.\(i).weight")
            p.tensor(key: "\(i)", numel: perTensor, offset: 0, size: [1024, 1024], stride: [1024, 1], parameter: true)
        }
        p.op(0x75); p.op(0x2E)
        let st = dir.appendingPathComponent("big.safetensors")
        try SafeTensors.write(try TensorArchive(tensors: tensors), to: st)
        let pt = dir.appendingPathComponent("big.pt")
        try makeTorchZip(p.b, storages: storages).write(to: pt)
        tensors.removeAll()
        storages.removeAll()
        let size = try FileManager.default.attributesOfItem(atPath: st.path)[.size] as? Int ?? 0
        let clock = ContinuousClock()
        var a: TensorArchive? = nil
        let t1 = try clock.measure { a = try SafeTensors.read(st) }
        var b: TensorArchive? = nil
        let t2 = try clock.measure { b = try TorchCheckpoint.read(pt) }
        b = nil
        let t3 = try clock.measure { b = try TorchCheckpoint.read(pt) }
        a = nil
        let t4 = try clock.measure { a = try SafeTensors.read(st) }
        print("BENCH safetensors \(size / 1_000_000) MB read in \(t1) (again: \(t4)); .pt read in \(t2) (again: \(t3))")
        #expect(a?.count == 92 && b?.count == 92)
        #expect(a?["layer.91.weight"]?.data == b?["layer.91.weight"]?.data)
        #expect(try a?.tensor("layer.3.weight").floats()[4096] == Float(3 * perTensor + 4096))
    }
}
