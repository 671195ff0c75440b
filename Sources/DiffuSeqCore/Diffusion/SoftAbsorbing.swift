import Foundation

/// DiffuSeq-v2's soft absorbing state (`diffuseq-v2` branch of the official repository; README design note): a
/// learned vector m (`mean_embed`, D floats) that the target region's diffusion is centred on, plus discrete noise
/// that replaces target tokens of x_t by m.
///
/// - Training (v2 `q_sample`): x_t = √ᾱ(x₀ − m) + √(1−ᾱ)ε + m on target rows; then each target row is replaced by m
///   itself with probability γ·√(1 − ᾱ_t) (`denoise_rate` γ). The MSE target stays x₀ (replaced rows included), the
///   tT term stays uncentred, and the loss adds `reg_rate`·‖m‖₂. m gets gradients through x_t (no stop-gradient):
///   (1 − √ᾱ)·∂L/∂x_t from a kept row, ∂L/∂x_t from a replaced one.
/// - Sampling: see `AbsorbingSampling` — by default the exact reverse of that forward process (every sampler starts
///   at m + z and runs centred on m, the source prior's machinery with m broadcast to the target rows).
public enum SoftAbsorbing {
    /// The state-dict key of m (v2: `self.mean_embed = nn.Parameter(...)` on `TransformerNetModel`).
    public static let key = "mean_embed"
    /// γ when `--denoise-rate` is not given: v2's `scripts/train.sh` and README (its `config.json` says 0.2).
    public static let defaultDenoiseRate: Float = 0.5
    /// The weight of ‖m‖₂ in the loss: v2's `GaussianDiffusion` default, the value its code always uses
    /// (`create_model_and_diffusion` does not pass `--reg_rate` on).
    public static let defaultRegRate: Float = 0.01

    /// (B, T, D) m on the target rows (mask ≠ 0), 0 on the source rows: the centre of the target region's diffusion.
    static func centre(mask: [Int], dim D: Int, m: UnsafePointer<Float>) -> [Float] {
        var out = [Float](repeating: 0, count: mask.count * D)
        for r in mask.indices where mask[r] != 0 {
            for j in 0..<D { out[r * D + j] = m[j] }
        }
        return out
    }

    /// (B·T) whether each row of x_t is replaced by m: a target row (mask ≠ 0) whose uniform draw is below
    /// γ·√(1 − ᾱ_t) (v2: `bernoulli(sqrt_one_minus_alphas_cumprod[t] * denoise_rate)`).
    static func replaced(mask: [Int], t: [Int], uniforms: [Float], rate: Float, schedule: NoiseSchedule) -> [Bool] {
        guard rate > 0, !uniforms.isEmpty else { return [Bool](repeating: false, count: mask.count) }
        let T = mask.count / max(1, t.count)
        return mask.indices.map { r in
            mask[r] != 0 && uniforms[r] < rate * Float(schedule.sqrtOneMinusAlphasCumprod[t[r / T]])
        }
    }

    /// Accumulates ∂L/∂m into `dm` (D): through x_t, whose target rows are (1 − √ᾱ_t)·m + … when kept and m when
    /// replaced, from `dxt` (B, T, D) = ∂L/∂x_t; plus `regWeight`·m/‖m‖ (the regulariser, weighted as the examples).
    static func backward(dm: UnsafeMutablePointer<Float>, m: UnsafePointer<Float>, dxt: UnsafePointer<Float>, mask: [Int],
                         t: [Int], absorbed: [Bool], schedule: NoiseSchedule, dim D: Int, regWeight: Float) {
        let T = mask.count / max(1, t.count)
        for r in mask.indices where mask[r] != 0 {
            let k: Float = absorbed[r] ? 1 : 1 - Float(schedule.sqrtAlphasCumprod[t[r / T]])
            for j in 0..<D { dm[j] += k * dxt[r * D + j] }
        }
        let norm = norm(m, D)
        if regWeight != 0 && norm > 0 { for j in 0..<D { dm[j] += regWeight * m[j] / norm } }
    }

    /// ‖m‖₂ (the regulariser's value).
    static func norm(_ m: UnsafePointer<Float>, _ D: Int) -> Float {
        var s: Float = 0
        for j in 0..<D { s += m[j] * m[j] }
        return s.squareRoot()
    }
}

/// How a sampler uses a model's soft absorbing state (`SamplerOptions.absorbing`; CLI `--absorbing`).
public enum AbsorbingSampling: String, Sendable, CaseIterable {
    /// The reverse of the trained forward process: x_T = m + z on the target rows and every update centred on m
    /// (run on x − m, m added back), in every sampler, for SDEdit starts and forks too. No replacement draws, so the
    /// deterministic samplers stay deterministic. The default for a model with `mean_embed`.
    case centred
    /// DiffuSeq-v2's code as written: `p_sample_loop` starts at m + z but keeps the uncentred posterior mean
    /// c1·x̂₀ + c2·x_t, and after each noisy step replaces every target row by m with probability γ·σ_t (σ_t the
    /// step's fixed-large standard deviation); ddim/ddim-official (which v2 removed) start at m + z, uncentred;
    /// dpm-solver++ ignores m, as v2's `sample_seq2seq_dpmSolver.py` does. SDEdit starts are the official ones.
    case v2
    /// Ignore m (sample as the official process).
    case off
}

// MARK: training_args.json and the state dict

extension SoftAbsorbing {
    /// Reads v2's keys from training arguments: `learned_mean_embed`, `denoise` (with `denoise_rate`, default 0.2 as
    /// v2's `config.json`) and `reg_rate` (default 0.01, the value v2's code uses). v2 writes all of them for every
    /// run (false/0.2 when off), so an official v2 `training_args.json` is understood as it is.
    static func readArgs(_ args: [String: Any], into c: inout ModelConfig, file: String) throws {
        func bool(_ k: String) throws -> Bool {
            guard let v = args[k], !(v is NSNull) else { return false }
            guard let b = v as? Bool else { throw CheckpointError(file: file, "\(k) must be true or false, not \(v)") }
            return b
        }
        func number(_ k: String, _ fallback: Float) throws -> Float {
            guard let v = args[k], !(v is NSNull) else { return fallback }
            guard let x = v as? NSNumber else { throw CheckpointError(file: file, "\(k) must be a number, not \(v)") }
            return x.floatValue
        }
        c.learnedMeanEmbed = try bool("learned_mean_embed")
        let denoise = try bool("denoise")
        guard c.learnedMeanEmbed else {
            if denoise { throw CheckpointError(file: file, "denoise: true needs learned_mean_embed: true (tokens are replaced by the learned absorbing state)") }
            return
        }
        c.denoiseRate = denoise ? try number("denoise_rate", 0.2) : 0
        c.regRate = try number("reg_rate", defaultRegRate)
    }

    /// Writes v2's keys for a model with the absorbing state (nothing otherwise: absent = the official process).
    static func writeArgs(_ c: ModelConfig, into a: inout [String: Any]) {
        guard c.learnedMeanEmbed else { return }
        a["learned_mean_embed"] = true
        a["denoise"] = c.denoiseRate > 0
        a["denoise_rate"] = c.denoiseRate
        a["reg_rate"] = c.regRate
    }

    /// The state dict holds `mean_embed` exactly when the configuration asks for it; otherwise an error naming the key.
    static func checkKey(in archive: TensorArchive, model: TransformerNetModel, file: URL) throws {
        let has = archive[key] != nil, wants = model.config.learnedMeanEmbed
        if wants && !has {
            throw CheckpointError(file: file.path, "missing key \(key) [\(model.config.hiddenDim)]: training_args.json says learned_mean_embed: true (DiffuSeq-v2's soft absorbing state), but the weights have no learned absorbing vector")
        }
        if has && !wants {
            throw CheckpointError(file: file.path, "has \(key) (DiffuSeq-v2's soft absorbing state) but training_args.json does not say learned_mean_embed: true; add it, or the model would be sampled without the state it was trained with")
        }
    }
}

// MARK: Sampling as DiffuSeq-v2's code does

/// DiffuSeq-v2's sampling of the absorbing state inside a `ReverseRun` (`AbsorbingSampling.v2`): x_T's offset m and,
/// in ddpm, the replacement of target rows by m with probability γ·σ_t after each noisy step. The replacement
/// uniforms come from each row's generator right after the step's Gaussian noise (`ReverseRun.drawNoise`), so a
/// fork, which replays the draws of the steps it skips, stays bit-identical.
final class AbsorbingV2 {
    /// (B, T, D) m on the target rows: x_T = m + z (nil for dpm-solver++, whose v2 script starts from z).
    let start: FloatBuffer?
    /// (D) m.
    private let m: [Float]
    /// γ in ddpm (v2's `p_sample`), 0 in the other samplers.
    let rate: Float
    /// (B·T) the current step's replacement uniforms.
    private var uniforms: [Float]

    /// The mode a run uses (`SamplerOptions.absorbing`, else the model's), checked against the model and the prior.
    static func mode(_ o: SamplerOptions, sampler s: DiffusionSampler, sourcePrior: Bool) throws -> AbsorbingSampling {
        let mode = o.absorbing ?? (s.meanEmbed != nil ? .centred : .off)
        if mode != .off && s.meanEmbed == nil {
            throw EngineError.invalidInput("--absorbing \(mode.rawValue): this model has no soft absorbing state (\(SoftAbsorbing.key); train with --soft-absorbing)")
        }
        if mode != .off && sourcePrior {
            throw EngineError.invalidInput("the source prior and the soft absorbing state both centre the target region: pass --absorbing off to sample this model with the source prior")
        }
        return mode
    }

    init(_ o: SamplerOptions, sampler s: DiffusionSampler, centre: [Float], rows: Int, seeded: Bool) throws {
        start = o.kind == .dpmSolver ? nil : FloatBuffer(centre)
        m = s.meanEmbed ?? []
        rate = o.kind == .ddpm ? s.model.config.denoiseRate : 0
        if rate > 0 && !seeded {
            throw EngineError.invalidInput("--absorbing v2 draws its token replacements from the seeds: give one seed per row")
        }
        uniforms = [Float](repeating: 1, count: rows)
    }

    /// Draws the step's (B·T) uniforms, T from each row's generator.
    func draw(_ rngs: inout [SeededRandom], T: Int) {
        guard rate > 0 else { return }
        for b in rngs.indices { for p in 0..<T { uniforms[b * T + p] = rngs[b].uniform() } }
    }

    /// v2's `p_sample` discrete noise: each of `rows` (the target rows) becomes m with probability γ·σ.
    func replace(_ xt: FloatBuffer, rows: [Int], sigma: Float, dim D: Int) {
        guard rate > 0 else { return }
        let p = rate * sigma
        for r in rows where uniforms[r] < p { (xt.ptr + r * D).update(from: m, count: D) }
    }
}
