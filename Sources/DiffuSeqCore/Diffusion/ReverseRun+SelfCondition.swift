// Self-conditioning in the samplers (ours, issue 13 item 2): every sampler feeds the network the previous step's
// x̂₀ — the raw prediction, as `DiffusionFrame.x0` stores it, before rounding, clamping or the prior's shift — and
// zeros at a run's first step (from noise, or an SDEdit start). The estimate is part of a run's state, so a fork
// (`SamplerStart`) resumes it from the previous frame's x̂₀ and reproduces the original run bit for bit.

extension ReverseRun {
    /// The x̂₀_prev a run of a self-conditioned model starts with (nil for other models): zeros, or for a fork at
    /// step k the x̂₀ of `start.previous` when that is the frame of step k − 1 (of the same B·T·D shape). A fork
    /// without it starts from zeros, as at a run's first step.
    static func selfConditionStart(_ c: ModelConfig, start: SamplerStart?, n: Int) -> FloatBuffer? {
        guard c.selfCondition else { return nil }
        let x0 = FloatBuffer(count: n)
        if let start, let prev = start.previous, start.step > 0, prev.index == start.step - 1, prev.x0.count == n {
            x0.ptr.update(from: prev.x0, count: n)
        }
        return x0
    }
}
