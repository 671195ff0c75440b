import Foundation

/// The β schedules of DiffuSeq (`get_named_beta_schedule`, spec §2.1) and every derived array of
/// `GaussianDiffusion` (spec §2.2), in Double as the official numpy code.
public struct NoiseSchedule: Sendable, Equatable {
    /// Names accepted by `betas(named:steps:)`.
    public static let names = ["sqrt", "linear", "cosine", "trunc_cos", "trunc_lin", "pw_lin"]

    public let betas: [Double]
    public let alphasCumprod: [Double]
    public let alphasCumprodPrev: [Double]
    public let alphasCumprodNext: [Double]
    public let sqrtAlphasCumprod: [Double]
    public let sqrtOneMinusAlphasCumprod: [Double]
    public let logOneMinusAlphasCumprod: [Double]
    public let sqrtRecipAlphasCumprod: [Double]
    public let sqrtRecipm1AlphasCumprod: [Double]
    public let posteriorVariance: [Double]
    public let posteriorLogVarianceClipped: [Double]
    public let posteriorMeanCoef1: [Double]
    public let posteriorMeanCoef2: [Double]
    /// For each step of this (possibly respaced) process, its index in the original process.
    public let timestepMap: [Int]
    /// Number of steps of the original process (`original_num_steps`).
    public let originalSteps: Int

    /// Number of steps of this process.
    public var count: Int { betas.count }

    /// The official betas for a schedule name.
    public static func betas(named name: String, steps T: Int) throws -> [Double] {
        func linspace(_ a: Double, _ b: Double, _ n: Int) -> [Double] {
            if n == 1 { return [a] }
            let step = (b - a) / Double(n - 1)
            var y = (0..<n).map { Double($0) * step + a }
            y[n - 1] = b
            return y
        }
        func forAlphaBar(_ f: (Double) -> Double) -> [Double] {
            (0..<T).map { i in min(1 - f(Double(i + 1) / Double(T)) / f(Double(i) / Double(T)), 0.999) }
        }
        let scale = 1000 / Double(T)
        switch name {
        case "sqrt":
            return forAlphaBar { 1 - ($0 + 0.0001).squareRoot() }
        case "linear":
            return linspace(scale * 0.0001, scale * 0.02, T)
        case "cosine":
            return forAlphaBar { pow(cos(($0 + 0.008) / 1.008 * Double.pi / 2), 2) }
        case "trunc_cos":
            let f = { (t: Double) in pow(cos((t + 0.1) / 1.1 * Double.pi / 2), 2) }
            var b = [min(1 - f(0), 0.999)]
            for i in 0..<(T - 1) {
                b.append(min(1 - f(Double(i + 1) / Double(T)) / f(Double(i) / Double(T)), 0.999))
            }
            return b
        case "trunc_lin":
            return linspace(scale * 0.0001 + 0.01, scale * 0.02 + 0.01, T)
        case "pw_lin":
            guard T > 10 else { throw EngineError.invalidConfig("pw_lin needs more than 10 diffusion steps") }
            return linspace(scale * 0.0001 + 0.01, scale * 0.0001, 10) + linspace(scale * 0.0001, scale * 0.02, T - 10)
        default:
            throw EngineError.invalidConfig("unknown noise schedule \"\(name)\" (expected one of \(names.joined(separator: ", ")))")
        }
    }

    /// The process for a named schedule with `steps` steps.
    public init(named name: String, steps: Int) throws {
        self.init(betas: try Self.betas(named: name, steps: steps), timestepMap: Array(0..<steps), originalSteps: steps)
    }

    /// The process defined by `betas` (official `GaussianDiffusion.__init__`).
    public init(betas: [Double], timestepMap: [Int], originalSteps: Int) {
        self.betas = betas
        self.timestepMap = timestepMap
        self.originalSteps = originalSteps
        let n = betas.count
        var ac = [Double](repeating: 0, count: n)
        var acc = 1.0
        for i in 0..<n { acc *= (1 - betas[i]); ac[i] = acc }
        alphasCumprod = ac
        alphasCumprodPrev = [1.0] + ac.dropLast()
        alphasCumprodNext = Array(ac.dropFirst()) + [0.0]
        sqrtAlphasCumprod = ac.map { $0.squareRoot() }
        sqrtOneMinusAlphasCumprod = ac.map { (1 - $0).squareRoot() }
        logOneMinusAlphasCumprod = ac.map { log(1 - $0) }
        sqrtRecipAlphasCumprod = ac.map { (1 / $0).squareRoot() }
        sqrtRecipm1AlphasCumprod = ac.map { (1 / $0 - 1).squareRoot() }
        let prev = alphasCumprodPrev
        let pv = (0..<n).map { (i: Int) -> Double in betas[i] * (1 - prev[i]) / (1 - ac[i]) }
        posteriorVariance = pv
        posteriorLogVarianceClipped = (0..<n).map { (i: Int) -> Double in log(i == 0 ? pv[min(1, n - 1)] : pv[i]) }
        posteriorMeanCoef1 = (0..<n).map { (i: Int) -> Double in betas[i] * prev[i].squareRoot() / (1 - ac[i]) }
        posteriorMeanCoef2 = (0..<n).map { (i: Int) -> Double in
            let num: Double = (1 - prev[i]) * (1 - betas[i]).squareRoot()
            return num / (1 - ac[i])
        }
    }

    /// The official `space_timesteps(num_timesteps, section_counts)`: "ddimN" or comma-separated
    /// section counts ("10", "100,50"). Returns the kept steps, sorted.
    public static func spaceTimesteps(_ T: Int, _ sectionCounts: String) throws -> [Int] {
        if sectionCounts.hasPrefix("ddim") {
            guard let desired = Int(sectionCounts.dropFirst(4)) else {
                throw EngineError.invalidConfig("bad respacing \"\(sectionCounts)\"")
            }
            for i in 1..<T where (T + i - 1) / i == desired {
                return Array(stride(from: 0, to: T, by: i))
            }
            throw EngineError.invalidConfig("cannot create exactly \(desired) steps with an integer stride from \(T)")
        }
        let counts = try sectionCounts.split(separator: ",").map { s -> Int in
            guard let v = Int(s.trimmingCharacters(in: .whitespaces)), v > 0 else {
                throw EngineError.invalidConfig("bad respacing \"\(sectionCounts)\" (expected e.g. \"200\" or \"100,50\")")
            }
            return v
        }
        guard !counts.isEmpty else { throw EngineError.invalidConfig("empty respacing") }
        let sizePer = T / counts.count, extra = T % counts.count
        var start = 0
        var all = Set<Int>()
        for (i, count) in counts.enumerated() {
            let size = sizePer + (i < extra ? 1 : 0)
            guard size >= count else {
                throw EngineError.invalidConfig("cannot divide section of \(size) steps into \(count)")
            }
            let frac = count <= 1 ? 1.0 : Double(size - 1) / Double(count - 1)
            var cur = 0.0
            for _ in 0..<count {
                all.insert(start + Int(cur.rounded(.toNearestOrEven)))
                cur += frac
            }
            start += size
        }
        return all.sorted()
    }

    /// The official `SpacedDiffusion`: keeps `use` steps of this process and recomputes
    /// β'_k = 1 − ᾱ[i_k]/ᾱ[i_{k−1}].
    public func respaced(keeping use: [Int]) -> NoiseSchedule {
        let keep = Set(use)
        var last = 1.0
        var newBetas: [Double] = [], map: [Int] = []
        for (i, a) in alphasCumprod.enumerated() where keep.contains(i) {
            newBetas.append(1 - a / last)
            last = a
            map.append(timestepMap[i])
        }
        return NoiseSchedule(betas: newBetas, timestepMap: map, originalSteps: originalSteps)
    }

    /// The official respacing to `steps` evenly spaced steps (`timestep_respacing = "steps"`).
    public func respaced(steps: Int) throws -> NoiseSchedule {
        if steps >= count { return self }
        guard steps >= 1 else { throw EngineError.invalidConfig("steps must be at least 1") }
        return respaced(keeping: try Self.spaceTimesteps(count, String(steps)))
    }

    /// The fixed-large sampling variance [σ̃²_1, β_1, β_2, …] (spec §2.2).
    public var fixedLargeVariance: [Double] {
        guard count > 1 else { return posteriorVariance }
        return [posteriorVariance[1]] + betas.dropFirst()
    }

    /// The noise level at step `i` of this process.
    public func noiseLevel(_ i: Int) -> NoiseLevel { NoiseLevel(beta: betas[i], alphaBar: alphasCumprod[i]) }
}
