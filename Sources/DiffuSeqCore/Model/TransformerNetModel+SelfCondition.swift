// Self-conditioning's input projection (ours, issue 13 item 2; after Chen et al.'s "Analog Bits" self-conditioning
// as SeqDiffuSeq, CDCD and Plaid use it for text): the network also sees its previous estimate x̂₀ through
// `self_cond_proj`, a D × D Linear added to x_t before `input_up_proj`:
//
//     x_in = x_t + x̂₀_prev·W_scᵀ + b_sc
//
// W_sc and b_sc start at zero, so a model given the projection (`--init-from` a checkpoint without it) computes
// exactly what it computed before, bit for bit: the product is 0, and (0 + 0) + x = x. Adding instead of
// concatenating [x_t, x̂₀] keeps `input_up_proj` (and its checkpoint keys and shapes) unchanged.

extension TransformerNetModel {
    /// The network's input for `x` (B, T, D): `x` itself, or for a self-conditioned model x_in = x + x̂₀_prev·W_scᵀ
    /// + b_sc written to `acts.selfCondInput` (one Linear with the residual epilogue, on the weights' backend), with
    /// x̂₀_prev = `previousX0` or zeros, kept in `acts.selfCondPrevious` for backward.
    func selfConditionedInput(_ x: CP, previousX0: CP?, acts: Activations, weights W: PreparedWeights) -> CP {
        guard let sc = W.selfCondition else { return x }
        let rows = acts.B * acts.T, prev = acts.selfCondPrevious.ptr
        if let previousX0 { prev.update(from: previousX0, count: rows * config.hiddenDim) } else {
            prev.update(repeating: 0, count: rows * config.hiddenDim)
        }
        W.mm.linear(acts.selfCondInput.ptr, .f32(CP(prev)), sc.weight, sc.bias, n: rows, residual: x, gelu: false)
        return CP(acts.selfCondInput.ptr)
    }

    /// Backward of `selfConditionedInput`, given dx_in in `acts.selfCondGrad`: accumulates dW_sc += dx_inᵀ·x̂₀_prev,
    /// db_sc += Σ dx_in and dx += dx_in. x̂₀_prev is a constant (stop-gradient): nothing flows into it.
    func selfConditionBackward(dx: P, acts: Activations, grads: FloatBuffer, weights W: PreparedWeights) {
        guard let sc = weights.selfCondition, let psc = W.selfCondition else { return }
        let rows = acts.B * acts.T, dxIn = acts.selfCondGrad.ptr
        W.mm.linearBackward(dinp: nil, dw: ptr(grads, sc.weight), db: ptr(grads, sc.bias), dout: CP(dxIn),
                            inp: CP(acts.selfCondPrevious.ptr), w: psc.weight, n: rows)
        for i in 0..<(rows * config.hiddenDim) { dx[i] += dxIn[i] }
    }
}
