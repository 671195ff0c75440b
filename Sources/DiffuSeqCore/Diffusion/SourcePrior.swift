import Foundation

/// The source copy laid into the target region, used by the source prior (`ModelConfig.sourcePrior`: the
/// diffusion of the target region is centred on it) and by SDEdit starts (`SamplerOptions.startFraction`:
/// reverse diffusion begins from a noised copy of it).
///
/// In the official layout a row is `[CLS] src [SEP] [SEP] [CLS] trg [SEP] PAD…` with mask 0 on the first
/// `s = sourceLength` positions. Target position `s + j` gets the embedding of `ids[j]` while `j < s − 1` (the
/// `[CLS] src [SEP]` part, without the separator), then that of PAD. Source rows get 0 (they are anchored to
/// their clean embeddings anyway).
public enum SourceCopy {
    /// (B, T, D) the copy for `ids`/`mask` (B rows of T) over the embedding `table` (V, D).
    static func embeddings(ids: [Int], mask: [Int], batch B: Int, table: UnsafePointer<Float>, dim D: Int,
                           padID: Int) -> [Float] {
        let T = ids.count / max(B, 1)
        var out = [Float](repeating: 0, count: ids.count * D)
        for b in 0..<B {
            let row = Array(ids[(b * T)..<((b + 1) * T)]), m = Array(mask[(b * T)..<((b + 1) * T)])
            for (p, id) in tokens(ids: row, mask: m, padID: padID) where id >= 0 {
                for j in 0..<D { out[(b * T + p) * D + j] = table[id * D + j] }
            }
        }
        return out
    }

    /// For one row of T: (position, token id) of the copy at each target position (−1 on source positions).
    public static func tokens(ids: [Int], mask: [Int], padID: Int) -> [(Int, Int)] {
        let s = SequenceBuilder.sourceLength(mask: mask)
        return ids.indices.map { p in
            guard mask[p] != 0 else { return (p, -1) }
            let j = p - s
            return (p, j >= 0 && j < s - 1 ? ids[j] : padID)
        }
    }
}
