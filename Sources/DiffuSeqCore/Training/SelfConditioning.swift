// Self-conditioning in training (ours, issue 13 item 2): the first, no-gradient pass whose x̂₀ a self-conditioned
// model's graded pass takes as its previous estimate (`TransformerNetModel.selfConditionedInput`).

extension DiffusionLoss {
    /// The x̂₀_prev of a training batch: for each example of `examples` (B flags, or empty for none) the network's
    /// prediction for its x_t with x̂₀_prev = 0, in eval mode (no dropout, as the samplers' predictions that feed
    /// the next step); zeros for the others. The selected examples run as one smaller batch in `acts` (the graded
    /// pass overwrites it next), so the first pass costs the fraction of a forward that was selected. Nothing of it
    /// is differentiated (stop-gradient): the graded pass's gradient reaches `self_cond_proj` only through its input.
    ///
    /// - Parameters: xt: (B, T, D).  tModel: (B) the timesteps the network sees.
    /// - Returns: (B, T, D), or nil when the model is not self-conditioned or no example was selected (zeros).
    func selfConditionEstimate(xt: CP, tModel: [Float], examples: [Bool], acts: Activations) -> FloatBuffer? {
        let picked = examples.indices.filter { examples[$0] }
        guard model.config.selfCondition, !picked.isEmpty else { return nil }
        precondition(examples.count == acts.B, "one self-conditioning flag per example")
        let per = acts.T * model.config.hiddenDim
        let inputs = FloatBuffer(count: picked.count * per)
        for (q, b) in picked.enumerated() { (inputs.ptr + q * per).update(from: xt + b * per, count: per) }
        let out = acts.withRows(picked.count) {
            model.forward(x: inputs.ptr, tModel: picked.map { tModel[$0] }, acts: acts, dropout: nil, weights: prepared)
        }
        let estimate = FloatBuffer(count: acts.B * per)
        for (q, b) in picked.enumerated() { (estimate.ptr + b * per).update(from: out + q * per, count: per) }
        return estimate
    }
}
