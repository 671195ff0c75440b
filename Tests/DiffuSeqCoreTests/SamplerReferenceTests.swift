import Foundation
import Testing
@testable import DiffuSeqCore

/// Respaced DDIM (η = 0) and DPM-Solver++(2M) against a small float64 implementation written here from the
/// published formulas: the official `space_timesteps` (even fractional stride), DDIM eq. 12 (Song et al. 2021),
/// and DPM-Solver++ Algorithm 2 (Lu et al. 2022: data prediction, multistep, first-order first step, last step
/// onto x̂₀, lower-order second-to-last step below 10 steps). The network's x̂₀ of each step is taken from the
/// run's frames (rounding off), so the test checks the update rules and the step plan, not the network.
@Suite("Samplers vs a float64 reference")
struct SamplerReferenceTests {
    /// Official `space_timesteps(T, [n])` for a single section.
    static func spaceTimesteps(_ T: Int, _ n: Int) -> [Int] {
        if n == 1 { return [0] }
        let stride = Double(T - 1) / Double(n - 1)
        var cur = 0.0, out: [Int] = []
        for _ in 0..<n {
            out.append(Int(cur.rounded(.toNearestOrEven)))  // Python's round()
            cur += stride
        }
        return out
    }

    func frames(_ kind: SamplerKind, steps: Int) throws -> (frames: [DiffusionFrame], result: SampleResult, mask: [Int],
                                                           alphaBar: [Double]) {
        let g = try Golden("golden.safetensors")
        let sampler = try DiffusionSampler(model: try loadTinyModel(), context: ComputeContext(engine: .blas, threads: 1))
        let ids = g.i64("batch.input_ids"), mask = g.i64("batch.input_mask")
        var frames: [DiffusionFrame] = []
        let result = try sampler.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4],
                                     options: SamplerOptions(kind: kind, steps: steps, rounding: false),
                                     onFrame: { frames.append($0) })
        return (frames, result, mask, sampler.schedule.alphasCumprod)
    }

    @Test("respaced DDIM (η = 0) follows x_{t−1} = √ᾱ_{t−1}·x̂₀ + √(1−ᾱ_{t−1})·ε̂", arguments: [4, 7])
    func ddim(steps: Int) throws {
        let (frames, result, mask, ab) = try frames(.ddim, steps: steps)
        let T = ab.count
        #expect(frames.map(\.t) == Self.spaceTimesteps(T, steps).reversed())
        var worst = 0.0
        for (k, f) in frames.enumerated() {
            let next = k + 1 < frames.count ? frames[k + 1].xt : result.sample
            let a = ab[f.t], aPrev = k + 1 < frames.count ? ab[frames[k + 1].t] : 1.0
            for j in 0..<f.xt.count where mask[j / f.dim] != 0 {
                let x0 = Double(f.x0[j]), xt = Double(f.xt[j])
                let eps = (xt - a.squareRoot() * x0) / (1 - a).squareRoot()
                let want = aPrev.squareRoot() * x0 + (1 - aPrev).squareRoot() * eps
                worst = max(worst, abs(want - Double(next[j])) / max(1, abs(want)))
            }
        }
        #expect(worst < 2e-5, "max relative error \(worst)")
    }

    @Test("DPM-Solver++(2M) follows Algorithm 2 of Lu et al. (data prediction, multistep)", arguments: [5, 12])
    func dpmSolver(steps: Int) throws {
        let (frames, result, mask, ab) = try frames(.dpmSolver, steps: steps)
        let T = ab.count
        #expect(frames.map(\.t) == Self.spaceTimesteps(T, steps).reversed())
        func lambda(_ a: Double) -> Double { log(a.squareRoot()) - log((1 - a).squareRoot()) }
        var worst = 0.0
        for (k, f) in frames.enumerated() {
            let next = k + 1 < frames.count ? frames[k + 1].xt : result.sample
            let last = k == frames.count - 1
            for j in 0..<f.xt.count where mask[j / f.dim] != 0 {
                let x0 = Double(f.x0[j]), xs = Double(f.xt[j])
                let want: Double
                if last {
                    want = x0
                } else {
                    let aS = ab[f.t], aT = ab[frames[k + 1].t]
                    let h = lambda(aT) - lambda(aS)
                    let base = ((1 - aT) / (1 - aS)).squareRoot() * xs
                    let phi = aT.squareRoot() * expm1(-h)
                    let secondOrder = k > 0 && !(k == frames.count - 2 && frames.count < 10)
                    if secondOrder {
                        let hPrev = lambda(aS) - lambda(ab[frames[k - 1].t])
                        let r = hPrev / h, prev = Double(frames[k - 1].x0[j])
                        let D = (1 + 1 / (2 * r)) * x0 - prev / (2 * r)
                        want = base - phi * D
                    } else {
                        want = base - phi * x0
                    }
                }
                worst = max(worst, abs(want - Double(next[j])) / max(1, abs(want)))
            }
        }
        #expect(worst < 2e-5, "max relative error \(worst)")
    }
}
