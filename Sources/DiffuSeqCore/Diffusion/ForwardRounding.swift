// The forward process as the explorer shows it: noise clean embeddings to q(x_t | x₀) and round them back
// to the nearest vocabulary embeddings — what rounding recovers at t, the work the reverse run must undo.
// (The official `q_sample`: x_t = √ᾱ_t · x₀ + √(1−ᾱ_t) · ε.)

extension DiffusionSampler {
    /// Rounds q(x_t | x₀) for the embeddings of `ids` at the noise level `alphaBar` (ᾱ_t), with ε drawn from a
    /// generator seeded with `seed`; returns the nearest vocabulary id of every row (ids.count of them).
    public func forwardRound(ids: [Int], alphaBar: Double, seed: UInt64) -> [Int32] {
        let D = model.config.hiddenDim, n = ids.count
        guard n > 0 else { return [] }
        let x0 = embed(ids)
        var eps = [Float](repeating: 0, count: n * D)
        var rng = SeededRandom(seed: seed)
        eps.withUnsafeMutableBufferPointer { p in if let b = p.baseAddress { rng.fillNormal(b, n * D) } }
        let a = Float(max(0, alphaBar).squareRoot()), s = Float(max(0, 1 - alphaBar).squareRoot())
        var xt = [Float](repeating: 0, count: n * D)
        for i in 0..<(n * D) { xt[i] = a * x0[i] + s * eps[i] }
        var out = [Int32](repeating: 0, count: n), margins = [Float](repeating: 0, count: n)
        xt.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                margins.withUnsafeMutableBufferPointer { mp in
                    if let x = xp.baseAddress, let o = op.baseAddress, let m = mp.baseAddress { index.nearest(x, rows: n, ids: o, margins: m) }
                }
            }
        }
        return out
    }
}
