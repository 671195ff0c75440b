import Foundation

/// The official sequence construction (`helper_tokenize` → `merge_and_mask` → `_collate_batch_helper`).
public enum SequenceBuilder {
    /// Builds `input_ids` / `input_mask` of length `seqLen` from `source`/`target` ids (outputs of
    /// `encode`, **without** special tokens), exactly as the official code:
    ///
    /// `src = [start] + source`, `trg = [start] + target`; while `src.count + trg.count > seqLen − 3`, pop
    /// the last token of the longer one (of both when equal); then
    /// `ids = src + [end] + [sep] + trg + [end]`, right-padded with `padID` (truncated to `seqLen` as a
    /// safety net), and `mask = 0` on the first `src.count + 2` positions (start token, source, its end
    /// token and the separator), `1` on the target **and on the padding**.
    ///
    /// `seqLen` should be ≥ 5; smaller values behave as the official code would (start tokens popped).
    public static func build(source: [Int], target: [Int], seqLen: Int,
                             tokenizer: some TextTokenizer) -> (ids: [Int], mask: [Int]) {
        var src = [tokenizer.startID] + source
        var trg = [tokenizer.startID] + target
        let limit = seqLen - 3
        while src.count + trg.count > limit && !(src.isEmpty && trg.isEmpty) {
            if src.count > trg.count {
                src.removeLast()
            } else if src.count < trg.count {
                trg.removeLast()
            } else {
                src.removeLast()
                trg.removeLast()
            }
        }
        src.append(tokenizer.endID)
        trg.append(tokenizer.endID)
        var ids = src + [tokenizer.sepID] + trg
        let zeros = min(src.count + 1, max(seqLen, 0))
        var mask = [Int](repeating: 0, count: zeros)
        if ids.count > seqLen { ids.removeLast(ids.count - max(seqLen, 0)) }
        ids += [Int](repeating: tokenizer.padID, count: max(seqLen, 0) - ids.count)
        mask += [Int](repeating: 1, count: max(seqLen, 0) - zeros)
        return (ids, mask)
    }

    /// Encodes both texts with `tokenizer.encode` and calls `build(source:target:seqLen:tokenizer:)`.
    public static func build(source: String, target: String, seqLen: Int,
                             tokenizer: some TextTokenizer) -> (ids: [Int], mask: [Int]) {
        build(source: tokenizer.encode(source), target: tokenizer.encode(target), seqLen: seqLen,
              tokenizer: tokenizer)
    }

    /// `len_x = seqLen − sum(mask)`: the number of condition positions (`[start] src [end] [sep]`).
    public static func sourceLength(mask: [Int]) -> Int {
        mask.count - mask.reduce(0, +)
    }

    /// How `source` (wordpieces, without special tokens) fared in a built sequence: how many were kept
    /// and how many positions (mask 1) are left for the output.
    public static func fit(sourceWordpieces: Int, mask: [Int]) -> SourceFit {
        let lenX = sourceLength(mask: mask)
        return SourceFit(wordpieces: sourceWordpieces, kept: min(sourceWordpieces, max(0, lenX - 3)),  // [start] src… [end] [sep]
                         outputPositions: mask.count - lenX, seqLen: mask.count)
    }

    /// Splits a built sequence as `sample_seq2seq.py` does: `sourceLength = seqLen − sum(mask)`,
    /// `source = ids[..<sourceLength]`, `target = ids[sourceLength...]`.
    public static func split(ids: [Int], mask: [Int]) -> (sourceLength: Int, source: [Int], target: [Int]) {
        let lenX = min(max(sourceLength(mask: mask), 0), ids.count)
        return (lenX, Array(ids[..<lenX]), Array(ids[lenX...]))
    }
}

/// How a source sentence fits in `seqLen` positions. The official `merge_and_mask` silently drops the
/// end of a long source (and then leaves almost nothing for the output); `warning` says so.
public struct SourceFit: Sendable, Equatable {
    /// Wordpieces of the source text.
    public var wordpieces: Int
    /// Wordpieces kept in the sequence.
    public var kept: Int
    /// Positions left for the output (mask 1, the target's start and end tokens included).
    public var outputPositions: Int
    /// The sequence length.
    public var seqLen: Int

    /// Whether the end of the source was cut off.
    public var truncated: Bool { kept < wordpieces }

    /// A one-line warning when the source was cut, e.g. "the source was truncated: 59 of 187
    /// wordpieces kept (seq_len 64), 2 positions left for the output"; nil when it fits.
    public var warning: String? {
        guard truncated else { return nil }
        return "the source was truncated: \(kept) of \(wordpieces) wordpieces kept (seq_len \(seqLen)), " +
            "\(outputPositions) position\(outputPositions == 1 ? "" : "s") left for the output"
    }
}
