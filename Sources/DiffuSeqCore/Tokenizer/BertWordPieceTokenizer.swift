import Foundation

/// The bert-base-uncased tokenizer as the official code uses it (`--vocab bert`), reimplemented to match
/// `BertTokenizerFast(vocab_file, do_lower_case=True)` of transformers 4.57.6 / tokenizers 0.22.2:
///
/// * literal special-token text (`[PAD] [UNK] [CLS] [SEP] [MASK]`, exact case, glued or not) is split off
///   first and maps to the special ids;
/// * BertNormalizer: drop NUL, U+FFFD and category C* (except `\t \n \r`), whitespace → space,
///   spaces around CJK ideographs, NFD + drop Mn, lowercase (per scalar, no NFKC);
/// * BertPreTokenizer: split on whitespace, isolate punctuation (Unicode P* and the ASCII symbol ranges);
/// * WordPiece: greedy longest match with `##` continuations, > 100 scalars or no match → `[UNK]`.
public struct BertWordPieceTokenizer: TextTokenizer {
    /// Maximum number of Unicode scalars in a word before it becomes one `[UNK]`.
    public static let maxInputCharsPerWord = 100
    /// The special tokens recognised literally in the input text (when present in the vocabulary).
    public static let specialTokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

    /// The vocabulary, id → token (the lines of `vocab.txt`).
    public let vocab: [String]
    private let lookup: [ExactKey: Int]
    /// Continuation pieces: `"##x"` stored under `"x"`.
    private let continuation: [ExactKey: Int]
    private let specials: [(bytes: [UInt8], id: Int)]

    /// `[PAD]` id (0 in bert-base-uncased).
    public let padID: Int
    /// `[UNK]` id (100).
    public let unkID: Int
    /// `[CLS]` id (101).
    public let startID: Int
    /// `[SEP]` id (102).
    public let endID: Int
    /// `[MASK]` id (103), if the vocabulary has it.
    public let maskID: Int?
    /// The id between source and target: `[SEP]`.
    public var sepID: Int { endID }
    /// Number of vocabulary lines.
    public var vocabSize: Int { vocab.count }

    /// Loads a `vocab.txt` (one token per line, id = 0-based line number).
    public init(vocabFile: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: vocabFile) } catch {
            throw TokenizerError(file: vocabFile.path, problems: ["cannot read file (\(error.localizedDescription))"])
        }
        try self.init(vocabData: data, source: vocabFile.path)
    }

    /// Reads the bytes of a `vocab.txt` (`source` names the file in errors).
    public init(vocabData data: Data, source: String) throws {
        guard let text = String(data: data, encoding: .utf8) else {
            throw TokenizerError(file: source, problems: ["not valid UTF-8"])
        }
        try self.init(lines: splitLines(text), source: source)
    }

    /// Builds the tokenizer from vocabulary lines (id = index). A repeated token keeps its last id for
    /// lookups, as HF `load_vocab` does. Throws if `[PAD]`, `[UNK]`, `[CLS]` or `[SEP]` is missing.
    public init(lines: [String], source: String = "<lines>") throws {
        var lookup: [ExactKey: Int] = [:]
        lookup.reserveCapacity(lines.count)
        for (i, t) in lines.enumerated() { lookup[ExactKey(t)] = i }
        var missing: [String] = []
        func need(_ t: String) -> Int {
            if let id = lookup[ExactKey(t)] { return id }
            missing.append("missing special token \(t)")
            return -1
        }
        padID = need("[PAD]"); unkID = need("[UNK]"); startID = need("[CLS]"); endID = need("[SEP]")
        if !missing.isEmpty { throw TokenizerError(file: source, problems: missing) }
        maskID = lookup[ExactKey("[MASK]")]
        vocab = lines
        self.lookup = lookup
        specials = Self.specialTokens.compactMap { t in
            lookup[ExactKey(t)].map { (Array(t.utf8), $0) }
        }
        var continuation: [ExactKey: Int] = [:]
        for (i, t) in lines.enumerated() where t.utf8.count > 2 && t.utf8.starts(with: [0x23, 0x23]) {
            continuation[ExactKey(String(decoding: t.utf8.dropFirst(2), as: UTF8.self))] = i
        }
        self.continuation = continuation
    }

    /// The token string of `id` (`[UNK]`'s string when out of range).
    public func token(for id: Int) -> String {
        id >= 0 && id < vocab.count ? vocab[id] : vocab[unkID]
    }

    /// The id of exactly `token` (byte-wise comparison), if in the vocabulary.
    public func id(for token: String) -> Int? { lookup[ExactKey(token)] }

    // MARK: - Encoding

    /// Token ids of `text`, without `[CLS]`/`[SEP]` (= `tokenizer(text, add_special_tokens=False)`).
    public func encode(_ text: String) -> [Int] {
        var out: [Int] = []
        var word: [UInt8] = []
        var text = text
        text.withUTF8 { utf8 in
            let n = utf8.count
            var segStart = 0
            var i = 0
            while i < n {
                if utf8[i] == 0x5B, let (len, id) = matchSpecial(utf8, at: i) {
                    encodeSegment(UnsafeBufferPointer(rebasing: utf8[segStart..<i]), into: &out, word: &word)
                    out.append(id)
                    i += len
                    segStart = i
                } else {
                    i += 1
                }
            }
            encodeSegment(UnsafeBufferPointer(rebasing: utf8[segStart..<n]), into: &out, word: &word)
        }
        return out
    }

    /// The word pieces of `text` (token strings of `encode(text)`).
    public func tokenize(_ text: String) -> [String] { encode(text).map { token(for: $0) } }

    /// Literal special token (all ASCII) starting at byte `i`: (byte length, id).
    private func matchSpecial(_ s: UnsafeBufferPointer<UInt8>, at i: Int) -> (Int, Int)? {
        for sp in specials where i + sp.bytes.count <= s.count {
            var ok = true
            for (k, c) in sp.bytes.enumerated() where s[i + k] != c { ok = false; break }
            if ok { return (sp.bytes.count, sp.id) }
        }
        return nil
    }

    /// Normalises, pre-tokenises and WordPiece-encodes one segment (text between special tokens).
    private func encodeSegment(_ seg: UnsafeBufferPointer<UInt8>, into out: inout [Int], word: inout [UInt8]) {
        if seg.isEmpty { return }
        word.removeAll(keepingCapacity: true)
        if !seg.contains(where: { $0 >= 0x80 }) {
            // ASCII fast path: clean (drop Cc), lowercase, split on whitespace, isolate punctuation.
            for b in seg {
                if b == 9 || b == 10 || b == 13 || b == 32 {
                    if !word.isEmpty { wordPiece(word, scalarCount: word.count, into: &out); word.removeAll(keepingCapacity: true) }
                } else if b < 0x20 || b == 0x7F {
                    continue
                } else if Self.isASCIIPunctuation(b) {
                    if !word.isEmpty { wordPiece(word, scalarCount: word.count, into: &out); word.removeAll(keepingCapacity: true) }
                    wordPiece([b], scalarCount: 1, into: &out)
                } else {
                    word.append(b >= 0x41 && b <= 0x5A ? b + 32 : b)
                }
            }
            if !word.isEmpty { wordPiece(word, scalarCount: word.count, into: &out) }
            return
        }
        // 1. clean text + CJK spacing
        var buf: [Unicode.Scalar] = []
        buf.reserveCapacity(seg.count + 4)
        for c in String(decoding: seg, as: UTF8.self).unicodeScalars {
            let v = c.value
            if v < 0x80 {
                if v == 9 || v == 10 || v == 13 || v == 32 { buf.append(" ") }
                else if v < 0x20 || v == 0x7F { continue }  // Cc (incl. NUL) deleted
                else { buf.append(c) }
            } else {
                if v == 0xFFFD || Self.isControl(c) { continue }
                if c.properties.isWhitespace { buf.append(" ") }
                else if Self.isCJK(v) { buf.append(" "); buf.append(c); buf.append(" ") }
                else { buf.append(c) }
            }
        }
        // 2. NFD, strip non-spacing marks, lowercase
        let nfd = String(String.UnicodeScalarView(buf)).decomposedStringWithCanonicalMapping
        buf.removeAll(keepingCapacity: true)
        for c in nfd.unicodeScalars {
            if c.value < 0x80 {
                if c.value >= 0x41 && c.value <= 0x5A { buf.append(Unicode.Scalar(UInt8(c.value + 32))) }
                else { buf.append(c) }
            } else {
                if c.properties.generalCategory == .nonspacingMark { continue }
                if c.properties.changesWhenLowercased {
                    buf.append(contentsOf: c.properties.lowercaseMapping.unicodeScalars)
                } else {
                    buf.append(c)
                }
            }
        }
        // 3. pre-tokenise (whitespace split, punctuation isolated) + WordPiece
        var count = 0
        for c in buf {
            if Self.isWhitespace(c) {
                if count > 0 { wordPiece(word, scalarCount: count, into: &out); word.removeAll(keepingCapacity: true); count = 0 }
            } else if Self.isPunctuation(c) {
                if count > 0 { wordPiece(word, scalarCount: count, into: &out); word.removeAll(keepingCapacity: true); count = 0 }
                wordPiece(Array(String(c).utf8), scalarCount: 1, into: &out)
            } else {
                word.append(contentsOf: String(c).utf8)
                count += 1
            }
        }
        if count > 0 { wordPiece(word, scalarCount: count, into: &out) }
    }

    /// Greedy longest-match WordPiece of one word given as UTF-8 bytes.
    private func wordPiece(_ word: [UInt8], scalarCount: Int, into out: inout [Int]) {
        if scalarCount > Self.maxInputCharsPerWord { out.append(unkID); return }
        let mark = out.count
        let ok: Bool = word.withUnsafeBufferPointer { p in
            let n = p.count
            var start = 0
            while start < n {
                var end = n
                var found = -1
                while end > start {
                    let key = ExactKey(String(decoding: UnsafeBufferPointer(rebasing: p[start..<end]), as: UTF8.self))
                    if let id = start == 0 ? lookup[key] : continuation[key] { found = id; break }
                    end -= 1
                    while end > start && (p[end] & 0xC0) == 0x80 { end -= 1 }
                }
                if found < 0 { return false }
                out.append(found)
                start = end
            }
            return true
        }
        if !ok {
            out.removeSubrange(mark..<out.count)
            out.append(unkID)
        }
    }

    @inline(__always)
    static func isASCIIPunctuation(_ v: UInt8) -> Bool {
        (v >= 33 && v <= 47) || (v >= 58 && v <= 64) || (v >= 91 && v <= 96) || (v >= 123 && v <= 126)
    }

    // MARK: - Character classes (as in HF tokenizers)

    /// `is_control`: category C* (Cc, Cf, Cn, Co, Cs); `\t \n \r` excluded by the caller.
    @inline(__always)
    static func isControl(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .control, .format, .unassigned, .privateUse, .surrogate: return true
        default: return false
        }
    }

    /// Rust `char::is_whitespace` (Unicode White_Space).
    @inline(__always)
    static func isWhitespace(_ c: Unicode.Scalar) -> Bool {
        c.value < 0x80 ? (c == " " || (c.value >= 9 && c.value <= 13)) : c.properties.isWhitespace
    }

    /// BERT punctuation: ASCII 33–47, 58–64, 91–96, 123–126, or Unicode category P*.
    @inline(__always)
    static func isPunctuation(_ c: Unicode.Scalar) -> Bool {
        let v = c.value
        if v < 0x80 {
            return (v >= 33 && v <= 47) || (v >= 58 && v <= 64) || (v >= 91 && v <= 96) || (v >= 123 && v <= 126)
        }
        switch c.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation: return true
        default: return false
        }
    }

    /// The CJK ideograph ranges of BERT's `_is_chinese_char`.
    @inline(__always)
    static func isCJK(_ v: UInt32) -> Bool {
        (v >= 0x4E00 && v <= 0x9FFF) || (v >= 0x3400 && v <= 0x4DBF) || (v >= 0x20000 && v <= 0x2A6DF)
            || (v >= 0x2A700 && v <= 0x2B73F) || (v >= 0x2B740 && v <= 0x2B81F) || (v >= 0x2B820 && v <= 0x2CEAF)
            || (v >= 0xF900 && v <= 0xFAFF) || (v >= 0x2F800 && v <= 0x2FA1F)
    }

    // MARK: - Decoding

    /// HF `decode(ids, clean_up_tokenization_spaces=True)` (transformers 4.57.6): tokens joined by spaces,
    /// `##` continuations glued, special tokens kept, then the Python `clean_up_tokenization` rules.
    public func decodePieces(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        for (i, id) in ids.enumerated() {
            let t = token(for: id).utf8
            if i != 0 {
                if t.starts(with: [0x23, 0x23]) { bytes.append(contentsOf: t.dropFirst(2)); continue }
                bytes.append(0x20)
            }
            bytes.append(contentsOf: t)
        }
        return String(decoding: ByteReplace.apply(ByteReplace.pythonCleanup, to: bytes), as: UTF8.self)
    }

    /// The decode of the official environment (transformers 4.22.2 + tokenizers < 0.13): joined string,
    /// `" ##"` removed, the Rust cleanup including `" do not"` → `" don't"`, then the Python cleanup.
    public func decodeLegacy(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        for (i, id) in ids.enumerated() {
            if i != 0 { bytes.append(0x20) }
            bytes.append(contentsOf: token(for: id).utf8)
        }
        bytes = ByteReplace.apply([(" ##", "")], to: bytes)
        bytes = ByteReplace.apply(ByteReplace.legacyRustCleanup, to: bytes)
        return String(decoding: ByteReplace.apply(ByteReplace.pythonCleanup, to: bytes), as: UTF8.self)
    }

    /// `decodeToken` with the legacy rules: trailing pads dropped, then `decodeLegacy`.
    public func decodeTokenLegacy(_ ids: [Int]) -> String {
        var end = ids.count
        while end > 0 && ids[end - 1] == padID { end -= 1 }
        return decodeLegacy(Array(ids[0..<end]))
    }

    // MARK: - Subset vocabulary

    /// The lines of `vocab` that are special tokens (`[PAD] [UNK] [CLS] [SEP] [MASK]`; `[unusedN]` are
    /// dropped) or are used when tokenising `texts`, in their original order. A tokenizer built from the
    /// result tokenises `texts` to the same piece strings (greedy longest match only ever picks pieces
    /// that are kept). Throws if `vocab` lacks a required special token.
    public static func buildSubsetVocabulary(vocab: [String], texts: [String]) throws -> [String] {
        try BertWordPieceTokenizer(lines: vocab).subsetVocabulary(texts: texts)
    }

    /// Instance form of `buildSubsetVocabulary(vocab:texts:)` using this tokenizer's vocabulary.
    public func subsetVocabulary(texts: [String]) -> [String] {
        var used = [Bool](repeating: false, count: vocab.count)
        for t in Self.specialTokens { if let id = id(for: t) { used[id] = true } }
        for text in texts { for id in encode(text) { used[id] = true } }
        return vocab.indices.filter { used[$0] }.map { vocab[$0] }
    }
}

/// Python-style `str.replace` chains on UTF-8 bytes (exact, non-overlapping, left to right).
enum ByteReplace {
    /// transformers `clean_up_tokenization`.
    static let pythonCleanup: [(String, String)] = [
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
        (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ]
    /// tokenizers 0.12.1 `decoders::wordpiece::cleanup` (applied to the whole string).
    static let legacyRustCleanup: [(String, String)] = [
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
        (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ]

    static func apply(_ rules: [(String, String)], to input: [UInt8]) -> [UInt8] {
        var s = input
        for (old, new) in rules { s = replace(s, Array(old.utf8), Array(new.utf8)) }
        return s
    }

    static func replace(_ s: [UInt8], _ old: [UInt8], _ new: [UInt8]) -> [UInt8] {
        let m = old.count
        guard m > 0, s.count >= m else { return s }
        var out: [UInt8] = []
        out.reserveCapacity(s.count)
        var i = 0
        let first = old[0]
        while i < s.count {
            if s[i] == first && i + m <= s.count {
                var ok = true
                var k = 1
                while k < m { if s[i + k] != old[k] { ok = false; break }; k += 1 }
                if ok { out.append(contentsOf: new); i += m; continue }
            }
            out.append(s[i])
            i += 1
        }
        return out
    }
}
