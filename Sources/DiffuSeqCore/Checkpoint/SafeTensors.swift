import Foundation

/// Maps `url` into memory (`.alwaysMapped`); errors become `CheckpointError`s naming the file.
func checkpointMapFile(_ url: URL) throws -> Data {
    do {
        return try Data(contentsOf: url, options: .alwaysMapped)
    } catch {
        throw CheckpointError(file: url.path, "cannot open file: \(error.localizedDescription)")
    }
}

/// Reads and writes the safetensors format: an 8-byte little-endian header length N, N bytes of
/// JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`,
/// then the tensor data (offsets relative to the end of the header).
public enum SafeTensors {
    /// The largest header accepted by `read` (the reference implementation uses the same limit).
    public static let maxHeaderSize = 100_000_000

    /// Reads a safetensors file. The file is memory-mapped and each tensor is copied once.
    /// Every size and offset is checked against the file size before use; any inconsistency
    /// throws a `CheckpointError` naming the file and the offending key.
    public static func read(_ url: URL) throws -> TensorArchive {
        let data = try checkpointMapFile(url)
        return try read(data: data, file: url.path)
    }

    /// Reads safetensors bytes held in memory; `file` is used in error messages.
    public static func read(data: Data, file: String = "<memory>") throws -> TensorArchive {
        let size = data.count
        if size == 0 { throw CheckpointError(file: file, "file is empty (expected an 8-byte safetensors header length)") }
        guard size >= 8 else {
            throw CheckpointError(file: file, "file is \(size) bytes, shorter than the 8-byte safetensors header length")
        }
        let headerLen: UInt64 = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self)) }
        guard headerLen <= UInt64(size - 8) else {
            throw CheckpointError(file: file,
                "header length field at offset 0 claims \(headerLen) bytes but only \(size - 8) bytes follow (file truncated or not safetensors)")
        }
        guard headerLen <= UInt64(maxHeaderSize) else {
            throw CheckpointError(file: file, "header length \(headerLen) exceeds the limit of \(maxHeaderSize) bytes")
        }
        let n = Int(headerLen)
        let dataStart = 8 + n
        let dataSize = size - dataStart

        let root: CheckpointJSON
        do {
            root = try data.withUnsafeBytes { raw in
                var p = CheckpointJSONParser(bytes: UnsafeRawBufferPointer(rebasing: raw[8..<dataStart]))
                return try p.parseDocument()
            }
        } catch let e as CheckpointJSONParser.Failure {
            throw CheckpointError(file: file, "header JSON invalid at file offset \(8 + e.offset): \(e.message)")
        }
        guard case .object(let members) = root else {
            throw CheckpointError(file: file, "header JSON is not an object")
        }

        struct Entry { var name: String; var dtype: TensorDType; var shape: [Int]; var begin: Int; var end: Int }
        var entries: [Entry] = []
        var metadata: [String: String] = [:]
        var seen = Set<String>()
        for (key, value) in members {
            guard seen.insert(key).inserted else {
                throw CheckpointError(file: file, "duplicate key '\(key)' in header")
            }
            if key == "__metadata__" {
                guard case .object(let kv) = value else {
                    throw CheckpointError(file: file, "__metadata__ is not an object of strings")
                }
                for (k, v) in kv {
                    guard case .string(let s) = v else {
                        throw CheckpointError(file: file, "__metadata__ value for key '\(k)' is not a string")
                    }
                    guard metadata[k] == nil else {
                        throw CheckpointError(file: file, "duplicate key '\(k)' in __metadata__")
                    }
                    metadata[k] = s
                }
                continue
            }
            guard case .object(let fields) = value else {
                throw CheckpointError(file: file, "tensor '\(key)': header entry is not an object")
            }
            func field(_ f: String) throws -> CheckpointJSON {
                guard let v = fields.first(where: { $0.0 == f })?.1 else {
                    throw CheckpointError(file: file, "tensor '\(key)': header entry has no \"\(f)\"")
                }
                return v
            }
            guard case .string(let dt) = try field("dtype") else {
                throw CheckpointError(file: file, "tensor '\(key)': \"dtype\" is not a string")
            }
            guard let dtype = TensorDType(rawValue: dt) else {
                throw CheckpointError(file: file,
                    "tensor '\(key)': unknown dtype '\(dt)' (expected one of \(TensorDType.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            func ints(_ f: String) throws -> [Int] {
                guard case .array(let a) = try field(f) else {
                    throw CheckpointError(file: file, "tensor '\(key)': \"\(f)\" is not an array")
                }
                return try a.map { v in
                    guard case .number(let s) = v, let i = Int(s), i >= 0 else {
                        throw CheckpointError(file: file, "tensor '\(key)': \"\(f)\" holds \(v), expected a non-negative integer")
                    }
                    return i
                }
            }
            let shape = try ints("shape")
            let offs = try ints("data_offsets")
            guard offs.count == 2 else {
                throw CheckpointError(file: file, "tensor '\(key)': \"data_offsets\" has \(offs.count) entries, expected [begin, end]")
            }
            let (b, e) = (offs[0], offs[1])
            guard b <= e, e <= dataSize else {
                throw CheckpointError(file: file,
                    "tensor '\(key)': data_offsets [\(b), \(e)] lie outside the data section of \(dataSize) bytes")
            }
            guard let count = checkpointElementCount(shape) else {
                throw CheckpointError(file: file, "tensor '\(key)': shape \(shape) overflows")
            }
            let (need, o) = count.multipliedReportingOverflow(by: dtype.byteSize)
            guard !o, need == e - b else {
                throw CheckpointError(file: file,
                    "tensor '\(key)': data_offsets [\(b), \(e)] hold \(e - b) bytes but \(dtype.rawValue) \(shape) needs \(o ? "more than Int.max" : String(need))")
            }
            entries.append(Entry(name: key, dtype: dtype, shape: shape, begin: b, end: e))
        }
        // Overlap check on the ranges sorted by begin.
        let sorted = entries.indices.sorted { (entries[$0].begin, entries[$0].end) < (entries[$1].begin, entries[$1].end) }
        var prev: Int? = nil
        for i in sorted {
            let cur = entries[i]
            if cur.begin == cur.end { continue }
            if let p = prev, cur.begin < entries[p].end {
                throw CheckpointError(file: file,
                    "tensor '\(cur.name)': data_offsets [\(cur.begin), \(cur.end)] overlap tensor '\(entries[p].name)' [\(entries[p].begin), \(entries[p].end)]")
            }
            prev = i
        }

        var tensors: [NamedTensor] = []
        tensors.reserveCapacity(entries.count)
        let base = data.startIndex + dataStart
        for e in entries {
            let bytes = data.subdata(in: (base + e.begin)..<(base + e.end))
            try tensors.append(NamedTensor(name: e.name, dtype: e.dtype, shape: e.shape, data: bytes))
        }
        return try TensorArchive(tensors: tensors, metadata: metadata)
    }

    /// The canonical header bytes (JSON padded with spaces to a multiple of 8) for `archive`.
    static func header(for archive: TensorArchive, file: String) throws -> Data {
        var json = "{"
        var first = true
        if !archive.metadata.isEmpty {
            json += "\"__metadata__\":{"
            json += archive.metadata.keys.sorted().map { "\(JSONText.quote($0)):\(JSONText.quote(archive.metadata[$0] ?? ""))" }
                .joined(separator: ",")
            json += "}"
            first = false
        }
        var offset = 0
        for t in archive.tensors {
            guard t.name != "__metadata__" else {
                throw CheckpointError(file: file, "tensor name '__metadata__' is reserved")
            }
            guard let n = checkpointElementCount(t.shape) else {
                throw CheckpointError(file: file, "tensor '\(t.name)': invalid shape \(t.shape)")
            }
            let (bytes, o1) = n.multipliedReportingOverflow(by: t.dtype.byteSize)
            let (end, o2) = offset.addingReportingOverflow(bytes)
            guard !o1, !o2 else { throw CheckpointError(file: file, "tensor '\(t.name)': size overflows") }
            if !first { json += "," }
            first = false
            json += "\(JSONText.quote(t.name)):{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        json += "}"
        var h = Data(json.utf8)
        let pad = (8 - h.count % 8) % 8
        h.append(contentsOf: [UInt8](repeating: 0x20, count: pad))
        return h
    }

    /// Writes `archive` to `url` in the canonical layout (header padded with spaces to a multiple of
    /// 8, tensors contiguous in the given order), atomically: temporary file in the same folder,
    /// fsync, rename. On any error (e.g. a tensor whose data size does not match its shape) the
    /// previous file at `url` is intact and the temporary file is removed.
    public static func write(_ archive: TensorArchive, to url: URL) throws {
        let file = url.path
        let header = try header(for: archive, file: file)
        try AtomicFile.write(to: url) { w in
            var len = UInt64(header.count).littleEndian
            try withUnsafeBytes(of: &len) { try w.write($0) }
            try w.write(header)
            for t in archive.tensors {
                try t.checkSize(file: file)
                try w.write(t.data)
            }
        }
    }
}


/// A parsed JSON value; objects keep member order and duplicates (so they can be reported).
indirect enum CheckpointJSON: CustomStringConvertible {
    case object([(String, CheckpointJSON)])
    case array([CheckpointJSON])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    var description: String {
        switch self {
        case .object: return "an object"
        case .array: return "an array"
        case .string(let s): return "\"\(s.prefix(40))\""
        case .number(let s): return s
        case .bool(let b): return String(b)
        case .null: return "null"
        }
    }
}

/// A small strict JSON parser with a nesting limit, used for safetensors headers.
struct CheckpointJSONParser {
    struct Failure: Error { var offset: Int; var message: String }
    let bytes: UnsafeRawBufferPointer
    var pos = 0
    var depth = 0
    static let maxDepth = 64

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    mutating func parseDocument() throws -> CheckpointJSON {
        skipSpace()
        let v = try parseValue()
        skipSpace()
        guard pos == bytes.count else { throw Failure(offset: pos, message: "unexpected data after the JSON value") }
        return v
    }

    mutating func skipSpace() {
        while pos < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[pos]) { pos += 1 }
    }

    func fail(_ m: String) -> Failure { Failure(offset: pos, message: m) }

    mutating func parseValue() throws -> CheckpointJSON {
        guard pos < bytes.count else { throw fail("unexpected end of header") }
        switch bytes[pos] {
        case UInt8(ascii: "{"):
            depth += 1
            defer { depth -= 1 }
            guard depth <= Self.maxDepth else { throw fail("nesting deeper than \(Self.maxDepth)") }
            pos += 1
            var members: [(String, CheckpointJSON)] = []
            skipSpace()
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
            while true {
                skipSpace()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                let k = try parseString()
                skipSpace()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                pos += 1
                skipSpace()
                members.append((k, try parseValue()))
                skipSpace()
                guard pos < bytes.count else { throw fail("unexpected end of header in object") }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
                throw fail("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            depth += 1
            defer { depth -= 1 }
            guard depth <= Self.maxDepth else { throw fail("nesting deeper than \(Self.maxDepth)") }
            pos += 1
            var items: [CheckpointJSON] = []
            skipSpace()
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
            while true {
                skipSpace()
                items.append(try parseValue())
                skipSpace()
                guard pos < bytes.count else { throw fail("unexpected end of header in array") }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
                throw fail("expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            let start = pos
            while pos < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[pos])
                || [UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[pos]) {
                pos += 1
            }
            guard pos - start <= 64 else { throw fail("number too long") }
            return .number(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self))
        default:
            throw fail("unexpected byte 0x\(String(bytes[pos], radix: 16))")
        }
    }

    mutating func literal(_ word: String) throws {
        for c in word.utf8 {
            guard pos < bytes.count, bytes[pos] == c else { throw fail("invalid literal (expected \(word))") }
            pos += 1
        }
    }

    mutating func hex4() throws -> UInt32 {
        guard pos + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw fail("invalid \\u escape")
            }
            v = v * 16 + d
            pos += 1
        }
        return v
    }

    mutating func parseString() throws -> String {
        pos += 1  // opening quote
        var out: [UInt8] = []
        while true {
            guard pos < bytes.count else { throw fail("unterminated string") }
            let c = bytes[pos]
            pos += 1
            if c == UInt8(ascii: "\"") { break }
            if c < 0x20 { throw fail("control character in string") }
            if c != UInt8(ascii: "\\") { out.append(c); continue }
            guard pos < bytes.count else { throw fail("unterminated escape") }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var u = try hex4()
                if (0xD800..<0xDC00).contains(u) {
                    guard pos + 2 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                        throw fail("unpaired surrogate")
                    }
                    pos += 2
                    let lo = try hex4()
                    guard (0xDC00..<0xE000).contains(lo) else { throw fail("invalid low surrogate") }
                    u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)
                } else if (0xDC00..<0xE000).contains(u) {
                    throw fail("unpaired surrogate")
                }
                guard let scalar = Unicode.Scalar(u) else { throw fail("invalid code point") }
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            default:
                throw fail("invalid escape")
            }
        }
        guard let s = String(bytes: out, encoding: .utf8) else { throw fail("string is not valid UTF-8") }
        return s
    }
}
