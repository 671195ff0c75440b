import Foundation

/// The official custom-vocabulary tokenizer (`--vocab <file>`): ids `[START]`=0, `[END]`=1, `[UNK]`=2,
/// `[PAD]`=3, then the file's tokens in order from 4 (first space-separated field of each line).
/// Encoding = Python `text.split()` + exact lookup (unknown → `[UNK]`); no subword splitting.
/// Decoding joins with spaces, then deletes `"__ "` and `"@@ "`.
///
/// Malformed files (empty lines, tabs or other whitespace inside the key, duplicate or reserved tokens)
/// are rejected with a `TokenizerError` naming every bad line (the official parser silently assigns
/// colliding ids; see `Fixtures/custom-vocab/expected.json → quirks`).
public struct CustomVocabTokenizer: TextTokenizer {
    /// The four reserved tokens, in id order.
    public static let reservedTokens = ["[START]", "[END]", "[UNK]", "[PAD]"]

    /// id → token.
    public let vocab: [String]
    private let lookup: [ExactKey: Int]
    /// `[PAD]` id (3 when built from a text file).
    public let padID: Int
    /// `[UNK]` = 2.
    public let unkID: Int = 2
    /// `[START]` = 0.
    public let startID: Int = 0
    /// `[END]` = 1.
    public let endID: Int = 1
    /// The id between source and target: `[END]` = 1.
    public var sepID: Int { endID }
    /// Number of ids (4 reserved + file tokens).
    public var vocabSize: Int { vocab.count }

    /// Reads an official vocabulary text file (one token per line; only the first space-separated field
    /// counts, so `word 123` count columns are fine).
    public init(vocabFile: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: vocabFile) } catch {
            throw TokenizerError(file: vocabFile.path, problems: ["cannot read file (\(error.localizedDescription))"])
        }
        try self.init(vocabData: data, source: vocabFile.path)
    }

    /// Reads the bytes of a vocabulary text file (`source` names the file in errors).
    public init(vocabData data: Data, source: String) throws {
        guard let text = String(data: data, encoding: .utf8) else {
            throw TokenizerError(file: source, problems: ["not valid UTF-8"])
        }
        try self.init(lines: splitLines(text), source: source)
    }

    /// Builds the vocabulary from the lines of a vocabulary file (`source` names it in errors).
    public init(lines: [String], source: String = "<lines>") throws {
        var problems: [String] = []
        var words: [String] = []
        var seen: [ExactKey: Int] = [:]
        for (i, raw) in lines.enumerated() {
            let n = i + 1
            let stripped = PythonText.strip(raw)
            if stripped.isEmpty { problems.append("line \(n): empty line"); continue }
            let key = String(stripped.unicodeScalars.split(separator: " ", maxSplits: 1,
                                                           omittingEmptySubsequences: false)[0])
            if key.unicodeScalars.contains(where: { PythonText.isSpace($0) }) {
                let what = key.unicodeScalars.contains("\t") ? "a tab" : "whitespace other than a space"
                problems.append("line \(n): token contains \(what) (only spaces separate fields; the official code would use \(key.debugDescription) as the token)")
                continue
            }
            if Self.reservedTokens.contains(where: { $0.utf8.elementsEqual(key.utf8) }) {
                problems.append("line \(n): reserved token \(key) (ids 0-3 are fixed; the official code would move its id)")
                continue
            }
            if let prev = seen[ExactKey(key)] {
                problems.append("line \(n): duplicate token \(key.debugDescription) (first on line \(prev); the official code would give colliding ids)")
                continue
            }
            seen[ExactKey(key)] = n
            words.append(key)
        }
        if !problems.isEmpty { throw TokenizerError(file: source, problems: problems) }
        self.init(validatedVocab: Self.reservedTokens + words, padID: 3)
    }

    /// Builds the vocabulary from the file tokens (without the 4 reserved ones), which must be distinct,
    /// non-empty, whitespace-free and not reserved.
    public init(words: [String]) throws {
        try self.init(lines: words, source: "<words>")
    }

    /// Reads the official `vocab.json` (word → id dict written next to a checkpoint).
    public init(vocabJSON url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TokenizerError(file: url.path, problems: ["cannot read file (\(error.localizedDescription))"])
        }
        try self.init(vocabJSONData: data, source: url.path)
    }

    /// Reads the bytes of an official `vocab.json` (`source` names the file in errors).
    public init(vocabJSONData data: Data, source: String) throws {
        let obj: Any
        do {
            obj = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw TokenizerError(file: source, problems: ["cannot read JSON (\(error.localizedDescription))"])
        }
        guard let dict = obj as? [String: Any] else {
            throw TokenizerError(file: source, problems: ["not a JSON object"])
        }
        var pairs: [String: Int] = [:]
        var problems: [String] = []
        for (k, v) in dict {
            if let i = v as? Int {
                pairs[k] = i
            } else {
                problems.append("value of \(k.debugDescription) is not an integer id")
            }
        }
        if !problems.isEmpty { throw TokenizerError(file: source, problems: problems.sorted()) }
        try self.init(dictionary: pairs, source: source)
    }

    /// Builds the vocabulary from a word → id dictionary: ids must be exactly 0..<count, with
    /// `[START]`=0, `[END]`=1, `[UNK]`=2 and a `[PAD]` entry.
    public init(dictionary: [String: Int], source: String = "<dictionary>") throws {
        var problems: [String] = []
        var vocab = [String?](repeating: nil, count: dictionary.count)
        for (k, id) in dictionary.sorted(by: { $0.value < $1.value }) {
            if id < 0 || id >= dictionary.count {
                problems.append("id \(id) of \(k.debugDescription) is outside 0..<\(dictionary.count)")
            } else if let other = vocab[id] {
                problems.append("id \(id) used by both \(other.debugDescription) and \(k.debugDescription)")
            } else {
                vocab[id] = k
            }
        }
        for (i, t) in ["[START]", "[END]", "[UNK]"].enumerated() where dictionary[t] != i {
            problems.append("\(t) must have id \(i)")
        }
        if dictionary["[PAD]"] == nil { problems.append("missing [PAD]") }
        if !problems.isEmpty { throw TokenizerError(file: source, problems: problems) }
        self.init(validatedVocab: vocab.map { $0 ?? "" }, padID: dictionary["[PAD]"] ?? 3)
    }

    private init(validatedVocab: [String], padID: Int) {
        vocab = validatedVocab
        var lookup: [ExactKey: Int] = [:]
        for (i, t) in validatedVocab.enumerated() { lookup[ExactKey(t)] = i }
        self.lookup = lookup
        self.padID = padID
    }

    /// The word → id dictionary (what the official code writes to `vocab.json`).
    public var dictionary: [String: Int] {
        var d: [String: Int] = [:]
        for (i, t) in vocab.enumerated() { d[t] = i }
        return d
    }

    /// Ids of the whitespace-separated words of `text` (unknown → 2), without `[START]`/`[END]`.
    public func encode(_ text: String) -> [Int] {
        PythonText.split(text).map { lookup[ExactKey($0)] ?? unkID }
    }

    /// The token of `id` (`[UNK]` when out of range).
    public func token(for id: Int) -> String {
        id >= 0 && id < vocab.count ? vocab[id] : vocab[unkID]
    }

    /// The id of exactly `token`, if present.
    public func id(for token: String) -> Int? { lookup[ExactKey(token)] }

    /// Tokens joined by single spaces, then `"__ "` and `"@@ "` deleted (official `decode_token` body).
    public func decodePieces(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        for (i, id) in ids.enumerated() {
            if i != 0 { bytes.append(0x20) }
            bytes.append(contentsOf: token(for: id).utf8)
        }
        bytes = ByteReplace.apply([("__ ", ""), ("@@ ", "")], to: bytes)
        return String(decoding: bytes, as: UTF8.self)
    }
}
