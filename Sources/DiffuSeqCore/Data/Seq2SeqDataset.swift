import Foundation

/// A problem with a data file: names the file, the 1-based line (when there is one) and the problem.
public struct DataError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Path of the file.
    public let file: String
    /// 1-based line number, or `nil` for whole-file problems (missing, empty, unreadable).
    public let line: Int?
    /// What is wrong, e.g. `missing "trg"`.
    public let problem: String

    /// Creates an error.
    public init(file: String, line: Int?, problem: String) {
        self.file = file
        self.line = line
        self.problem = problem
    }

    /// `"<file>:<line>: <problem>"` (or `"<file>: <problem>"`).
    public var description: String {
        if let line { return "\(file):\(line): \(problem)" }
        return "\(file): \(problem)"
    }
}

/// One training/evaluation pair after the official pipeline.
public struct Seq2SeqExample: Sendable, Equatable {
    /// The source text after Python `strip()`.
    public var src: String
    /// The target text after Python `strip()`.
    public var trg: String
    /// `input_ids` (length `seqLen`), see `SequenceBuilder.build`.
    public var ids: [Int]
    /// `input_mask` (0 = condition, 1 = generated incl. padding).
    public var mask: [Int]
    /// 1-based line number in the jsonl file.
    public var line: Int

    /// Creates an example.
    public init(src: String, trg: String, ids: [Int], mask: [Int], line: Int) {
        self.src = src
        self.trg = trg
        self.ids = ids
        self.mask = mask
        self.line = line
    }
}

/// Reader for the official data format: `<dir>/{train,valid,test}.jsonl`, one `{"src": str, "trg": str}`
/// object per line (other keys ignored), both strings `.strip()`ped, then `SequenceBuilder.build`.
public enum Seq2SeqDataset {
    /// Loads `<dataDir>/<split>.jsonl` (see `load(file:tokenizer:seqLen:skipBadLines:)`).
    public static func load(dataDir: URL, split: String, tokenizer: some TextTokenizer, seqLen: Int,
                            skipBadLines: Bool = false) throws -> (examples: [Seq2SeqExample], skipped: Int) {
        try load(file: dataDir.appendingPathComponent("\(split).jsonl"), tokenizer: tokenizer, seqLen: seqLen,
                 skipBadLines: skipBadLines)
    }

    /// Loads one jsonl file. Blank (whitespace-only) lines are ignored; a UTF-8 BOM at the start is
    /// accepted. A bad line (invalid UTF-8, bad JSON, not an object, missing `"src"`/`"trg"`, non-string
    /// value, empty after strip) throws a `DataError` naming file and line, or — with `skipBadLines` — is
    /// skipped and counted in `skipped`. A missing/unreadable file, `seqLen < 5` or a file without any
    /// example always throws.
    public static func load(file: URL, tokenizer: some TextTokenizer, seqLen: Int,
                            skipBadLines: Bool = false) throws -> (examples: [Seq2SeqExample], skipped: Int) {
        let path = file.path
        guard seqLen >= 5 else {
            throw DataError(file: path, line: nil, problem: "seqLen \(seqLen) is too small (need ≥ 5)")
        }
        let pairs = try readPairs(file: file, skipBadLines: skipBadLines)
        let examples = pairs.pairs.map { p -> Seq2SeqExample in
            let (ids, mask) = SequenceBuilder.build(source: tokenizer.encode(p.src), target: tokenizer.encode(p.trg),
                                                    seqLen: seqLen, tokenizer: tokenizer)
            return Seq2SeqExample(src: p.src, trg: p.trg, ids: ids, mask: mask, line: p.line)
        }
        return (examples, pairs.skipped)
    }

    /// Reads and validates the `(src, trg)` pairs of a jsonl file (stripped), without tokenising.
    public static func readPairs(file: URL, skipBadLines: Bool = false) throws
        -> (pairs: [(src: String, trg: String, line: Int)], skipped: Int) {
        let path = file.path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw DataError(file: path, line: nil, problem: "file not found")
        }
        guard !isDir.boolValue else { throw DataError(file: path, line: nil, problem: "is a directory") }
        let data: Data
        do { data = try Data(contentsOf: file) } catch {
            throw DataError(file: path, line: nil, problem: "cannot read file (\(error.localizedDescription))")
        }
        return try readPairs(data: data, file: path, skipBadLines: skipBadLines)
    }

    /// Parses the bytes of a jsonl file into `(src, trg)` pairs (stripped); `file` names it in errors.
    public static func readPairs(data: Data, file path: String, skipBadLines: Bool = false) throws
        -> (pairs: [(src: String, trg: String, line: Int)], skipped: Int) {
        var pairs: [(src: String, trg: String, line: Int)] = []
        var skipped = 0
        let bytes = [UInt8](data)
        var lineNo = 0
        var start = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            lineNo += 1
            var lineBytes = bytes[start..<end]
            start = end + 1
            if lineNo == 1 && lineBytes.starts(with: [0xEF, 0xBB, 0xBF]) { lineBytes = lineBytes.dropFirst(3) }
            do {
                if let pair = try parseLine(lineBytes, file: path, line: lineNo) {
                    pairs.append((pair.0, pair.1, lineNo))
                }
            } catch let error as DataError {
                if skipBadLines { skipped += 1 } else { throw error }
            }
        }
        if pairs.isEmpty {
            let why = skipped > 0 ? "no valid examples (\(skipped) bad line\(skipped == 1 ? "" : "s") skipped)"
                                  : "empty file (no examples)"
            throw DataError(file: path, line: nil, problem: why)
        }
        return (pairs, skipped)
    }

    /// Parses one line; `nil` for a blank line.
    private static func parseLine(_ bytes: ArraySlice<UInt8>, file: String, line: Int) throws -> (String, String)? {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw DataError(file: file, line: line, problem: "invalid UTF-8")
        }
        if text.unicodeScalars.allSatisfy({ PythonText.isSpace($0) }) { return nil }
        let obj: Any
        do {
            obj = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
        } catch {
            throw DataError(file: file, line: line, problem: "bad JSON")
        }
        guard let dict = obj as? [String: Any] else {
            throw DataError(file: file, line: line, problem: "not a JSON object")
        }
        func field(_ key: String) throws -> String {
            guard let value = dict[key] else {
                throw DataError(file: file, line: line, problem: "missing \"\(key)\"")
            }
            guard let s = value as? String, !(value is NSNull) else {
                throw DataError(file: file, line: line, problem: "\"\(key)\" is not a string")
            }
            let stripped = PythonText.strip(s)
            if stripped.isEmpty {
                throw DataError(file: file, line: line, problem: "\"\(key)\" is empty after strip")
            }
            return stripped
        }
        return (try field("src"), try field("trg"))
    }
}
