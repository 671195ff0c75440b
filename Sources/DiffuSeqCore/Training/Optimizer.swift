import Foundation

/// `torch.optim.AdamW` (single-tensor CPU formula, torch 2.x), over the flat parameter buffer.
struct AdamW {
    /// β₁, β₂ are kept in Double like torch's Python floats: `1 − β` and the bias corrections must be
    /// computed from the exact decimal values (1 − Float(0.999) is 1.3e-5 off from torch's 1e-3).
    var beta1: Double = 0.9, beta2: Double = 0.999, eps: Float = 1e-8, weightDecay: Float = 0
    /// Number of updates done (Adam's `step`).
    var step = 0
    let m: FloatBuffer, v: FloatBuffer

    init(count: Int, weightDecay: Float) {
        m = FloatBuffer(count: count); v = FloatBuffer(count: count)
        self.weightDecay = weightDecay
    }

    /// One update of `params` with gradient `grads` at learning rate `lr`.
    mutating func update(params: FloatBuffer, grads: FloatBuffer, lr: Double) {
        step += 1
        let bc1 = 1 - pow(beta1, Double(step)), bc2 = 1 - pow(beta2, Double(step))
        let stepSize = Float(lr / bc1), bc2Sqrt = Float(bc2.squareRoot())
        let decay = Float(1 - lr * Double(weightDecay))
        let b1 = Float(1 - beta1), b2 = Float(beta2), ob2 = Float(1 - beta2), e = eps
        let p = params.ptr, g = grads.ptr, mp = m.ptr, vp = v.ptr
        let applyDecay = weightDecay != 0
        parallelRows(params.count, minChunk: 65536) { lo, hi in
            for i in lo..<hi {
                if applyDecay { p[i] *= decay }
                let gi = g[i]
                mp[i] += b1 * (gi - mp[i])
                vp[i] = b2 * vp[i] + ob2 * gi * gi
                let denom = vp[i].squareRoot() / bc2Sqrt + e
                p[i] -= stepSize * (mp[i] / denom)
            }
        }
    }
}

/// Exponential moving averages of the parameters (official `update_ema`), one per rate.
struct EMA {
    let rates: [Float]
    let buffers: [FloatBuffer]

    /// Starts every average at a copy of `params` (official: no warm-up).
    init(rates: [Float], params: FloatBuffer) {
        self.rates = rates
        buffers = rates.map { _ in params.copy() }
    }

    /// e ← r·e + (1 − r)·θ for each rate.
    func update(params: FloatBuffer) {
        for (r, e) in zip(rates, buffers) {
            let ep = e.ptr, p = params.ptr, one = 1 - r
            parallelRows(params.count, minChunk: 65536) { lo, hi in
                for i in lo..<hi { ep[i] = ep[i] * r + one * p[i] }
            }
        }
    }
}

/// Global L2 norm of a buffer (in Double).
func l2Norm(_ b: FloatBuffer) -> Double {
    var s = 0.0
    for i in 0..<b.count { let x = Double(b.ptr[i]); s += x * x }
    return s.squareRoot()
}

/// Official timestep samplers (`step_sample.py`): which t each example gets, and its weight 1/(T·p_t).
public struct TimestepSampler: Sendable, Codable, Equatable {
    /// `uniform` or `lossaware` (LossSecondMomentResampler).
    public enum Kind: String, Sendable, Codable, CaseIterable { case uniform, lossaware }
    public let kind: Kind
    public let steps: Int
    public let historyPerTerm: Int
    public let uniformProb: Double
    /// (steps, history) last losses per t (lossaware).
    var history: [Double]
    /// Number of recorded losses per t (≤ history).
    var counts: [Int]
    /// The noise floor (`TrainingOptions.noiseFloor`): t < floor is never drawn (nil = off, official).
    var floor: Int?

    /// Creates a sampler over `steps` timesteps.
    public init(kind: Kind, steps: Int, historyPerTerm: Int = 10, uniformProb: Double = 0.001) {
        self.kind = kind; self.steps = steps; self.historyPerTerm = historyPerTerm; self.uniformProb = uniformProb
        history = kind == .lossaware ? [Double](repeating: 0, count: steps * historyPerTerm) : []
        counts = kind == .lossaware ? [Int](repeating: 0, count: steps) : []
    }

    /// Whether every t has a full history (before that, lossaware is uniform).
    public var warmedUp: Bool { kind == .lossaware && !counts[min(floor ?? 0, steps - 1)...].contains { $0 < historyPerTerm } }

    /// Unnormalised weights per t.
    func weights() -> [Double] {
        guard warmedUp else { return [Double](repeating: 1, count: steps) }
        var w = (0..<steps).map { t -> Double in
            var s = 0.0
            for k in 0..<historyPerTerm { let x = history[t * historyPerTerm + k]; s += x * x }
            return (s / Double(historyPerTerm)).squareRoot()
        }
        let total = w.reduce(0, +)
        for i in 0..<steps { w[i] = w[i] / total * (1 - uniformProb) + uniformProb / Double(steps) }
        return w
    }

    /// `weights()` with t below the noise floor removed.
    func flooredWeights() -> [Double] {
        var w = weights()
        if let f = floor { for i in 0..<min(max(0, f), steps - 1) { w[i] = 0 } }
        return w
    }

    /// Draws `n` timesteps and their importance weights.
    func sample(_ n: Int, rng: inout SeededRandom) -> (t: [Int], weights: [Float]) {
        let w = flooredWeights()
        let total = w.reduce(0, +)
        let p = w.map { $0 / total }
        var cdf = [Double](repeating: 0, count: steps)
        var acc = 0.0
        for i in 0..<steps { acc += p[i]; cdf[i] = acc }
        var ts: [Int] = [], ws: [Float] = []
        for _ in 0..<n {
            let u = rng.uniformDouble() * acc
            var lo = 0, hi = steps - 1
            while lo < hi { let mid = (lo + hi) / 2; if cdf[mid] > u { hi = mid } else { lo = mid + 1 } }
            ts.append(lo)
            // Importance weight over the drawn range (t ≥ floor): 1 for every t when uniform, as official.
            ws.append(Float(1 / (Double(steps - min(max(0, floor ?? 0), steps - 1)) * p[lo])))
        }
        return (ts, ws)
    }

    /// Records per-example losses (official `update_with_all_losses`).
    mutating func update(t: [Int], losses: [Float]) {
        guard kind == .lossaware else { return }
        for (ti, l) in zip(t, losses) {
            let base = ti * historyPerTerm
            if counts[ti] == historyPerTerm {
                for k in 0..<(historyPerTerm - 1) { history[base + k] = history[base + k + 1] }
                history[base + historyPerTerm - 1] = Double(l)
            } else {
                history[base + counts[ti]] = Double(l)
                counts[ti] += 1
            }
        }
    }
}
