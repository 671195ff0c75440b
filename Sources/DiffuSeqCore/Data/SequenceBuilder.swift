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

    /// Splits a built sequence as `sample_seq2seq.py` does: `sourceLength = seqLen − sum(mask)`,
    /// `source = ids[..<sourceLength]`, `target = ids[sourceLength...]`.
    public static func split(ids: [Int], mask: [Int]) -> (sourceLength: Int, source: [Int], target: [Int]) {
        let lenX = min(max(sourceLength(mask: mask), 0), ids.count)
        return (lenX, Array(ids[..<lenX]), Array(ids[lenX...]))
    }
}
