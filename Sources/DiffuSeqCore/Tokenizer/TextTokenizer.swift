import Foundation

/// A tokenizer as used by the official DiffuSeq data pipeline (`myTokenizer`):
/// text → ids without special tokens, ids → text, plus the special ids the sequence builder needs.
public protocol TextTokenizer: Sendable {
    /// Number of ids (rows of the embedding matrix).
    var vocabSize: Int { get }
    /// Padding id (`[PAD]`: 0 for BERT, 3 for a custom vocabulary).
    var padID: Int { get }
    /// Unknown-token id (`[UNK]`: 100 for BERT, 2 for a custom vocabulary).
    var unkID: Int { get }
    /// Start id put in front of source and target (`[CLS]`=101 or `[START]`=0).
    var startID: Int { get }
    /// End id appended to source and target (`[SEP]`=102 or `[END]`=1).
    var endID: Int { get }
    /// Id put between source and target (`[SEP]`=102 for BERT, `[END]`=1 for a custom vocabulary).
    var sepID: Int { get }
    /// Encodes `text` to ids **without** special start/end tokens.
    func encode(_ text: String) -> [Int]
    /// The vocabulary string of `id` (the unknown token's string for ids out of range).
    func token(for id: Int) -> String
    /// The id of the exact (scalar-by-scalar) vocabulary string `token`, if present.
    func id(for token: String) -> Int?
    /// The official `decode_token`: drops trailing `padID`s, then decodes keeping special tokens.
    func decodeToken(_ ids: [Int]) -> String
    /// Plain decode of all ids (no pad stripping), special tokens kept.
    func decodePieces(_ ids: [Int]) -> String
}

extension TextTokenizer {
    /// The official `decode_token`: drops trailing `padID`s, then `decodePieces`.
    public func decodeToken(_ ids: [Int]) -> String {
        var end = ids.count
        while end > 0 && ids[end - 1] == padID { end -= 1 }
        return decodePieces(Array(ids[0..<end]))
    }

    /// The official `encode_token` output: `[start] + encode(text) + [end]`.
    public func encodeWithSpecials(_ text: String) -> [Int] {
        [startID] + encode(text) + [endID]
    }
}

/// An error while reading or validating a vocabulary file.
public struct TokenizerError: Error, CustomStringConvertible, Sendable {
    /// The file concerned (path or a description such as `"<lines>"`).
    public let file: String
    /// Human-readable problems, each naming its 1-based line number when it has one.
    public let problems: [String]

    /// Creates an error for `file` with the given problems.
    public init(file: String, problems: [String]) {
        self.file = file
        self.problems = problems
    }

    /// `"<file>: <problem>; <problem>…"`.
    public var description: String {
        "vocabulary \(file): " + problems.joined(separator: "; ")
    }
}

/// Python `str` helpers (`isspace`, `strip()`, `split()`), used where the official code calls them.
public enum PythonText {
    /// Python's `str.isspace()` for one scalar (bidi class WS/B/S or category Zs).
    @inline(__always)
    public static func isSpace(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if v < 0x80 { return v == 0x20 || (v >= 0x09 && v <= 0x0D) || (v >= 0x1C && v <= 0x1F) }
        switch v {
        case 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: return true
        default: return false
        }
    }

    /// Python `s.strip()` (no argument).
    public static func strip(_ s: String) -> String {
        let scalars = s.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isSpace($0) }),
              let last = scalars.lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(scalars[first...last])
    }

    /// Python `s.split()` (no argument): runs of whitespace separate, no empty fields.
    public static func split(_ s: String) -> [String] {
        var out: [String] = []
        var cur = String.UnicodeScalarView()
        for c in s.unicodeScalars {
            if isSpace(c) {
                if !cur.isEmpty { out.append(String(cur)); cur = String.UnicodeScalarView() }
            } else {
                cur.append(c)
            }
        }
        if !cur.isEmpty { out.append(String(cur)) }
        return out
    }
}

/// A dictionary key comparing strings byte-for-byte (UTF-8), unlike `String`'s canonical equivalence
/// (which would, e.g., make a decomposed Hangul syllable equal a precomposed vocabulary entry).
struct ExactKey: Hashable, Sendable {
    let string: String
    init(_ s: String) { string = s }
    static func == (a: ExactKey, b: ExactKey) -> Bool { a.string.utf8.elementsEqual(b.string.utf8) }
    func hash(into hasher: inout Hasher) {
        var s = string
        s.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}

/// Splits file text into lines like Python's `for line in f` followed by `rstrip("\n")`
/// (a final newline does not produce an extra empty line; `\r\n` endings are accepted).
func splitLines(_ text: String) -> [String] {
    var lines = text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
        var l = String.UnicodeScalarView(line)
        if l.last == "\r" { l.removeLast() }
        return String(l)
    }
    if let last = lines.last, last.isEmpty { lines.removeLast() }
    return lines
}
