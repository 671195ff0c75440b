// The frames of a reverse-diffusion run: what the explorer, `diffuseq trace` and tests look at.

/// The noise level of one step of the diffusion process (spec §2.2), at timestep index `t`.
public struct NoiseLevel: Sendable, Equatable, Codable {
    /// β_t of the process being sampled (respaced when steps were skipped).
    public var beta: Double
    /// ᾱ_t.
    public var alphaBar: Double
    /// √ᾱ_t.
    public var sqrtAlphaBar: Double { alphaBar.squareRoot() }
    /// √(1 − ᾱ_t), the standard deviation of the noise in x_t.
    public var sqrtOneMinusAlphaBar: Double { (1 - alphaBar).squareRoot() }
    /// Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t).
    public var snr: Double { alphaBar / (1 - alphaBar) }

    /// Creates a noise level from β_t and ᾱ_t.
    public init(beta: Double, alphaBar: Double) {
        self.beta = beta
        self.alphaBar = alphaBar
    }
}

/// One vocabulary embedding close to a position's vector.
public struct Neighbour: Sendable, Equatable, Codable {
    /// Token id.
    public var id: Int
    /// Squared Euclidean distance ‖E_id − v‖² (the official rounding metric).
    public var distance: Float

    /// Creates a neighbour.
    public init(id: Int, distance: Float) {
        self.id = id
        self.distance = distance
    }
}

/// Which reverse process a run uses.
public enum SamplerKind: String, Sendable, Equatable, Codable, CaseIterable {
    /// Official `p_sample_loop` (ancestral DDPM, fixed-large variance), respaced with `space_timesteps`.
    case ddpm
    /// The official `--step N < diffusion_steps` path: DDIM η=0 with its off-by-gap quirk (spec §4.4).
    case ddimOfficial = "ddim-official"
    /// DDIM η=0 on a correctly respaced process.
    case ddim
    /// DPM-Solver++(2M), standard form (data prediction, multistep, time-uniform grid).
    case dpmSolver = "dpm-solver++"
}

/// One step of a reverse-diffusion run over a batch of B sequences of T positions of D dims.
///
/// Frame `index` 0 is the first denoising step (the noisiest timestep); frame `count − 1` is the
/// last, whose `decoded` row is the run's output.
public struct DiffusionFrame: Sendable {
    /// Position of this step in the run, 0 ..< count.
    public var index: Int
    /// Number of steps in the run.
    public var count: Int
    /// Timestep index of this step in the original T-step process (after `timestep_map`).
    public var t: Int
    /// Number of diffusion steps the model was trained with.
    public var diffusionSteps: Int
    /// The noise level at `t` in the original process.
    public var noise: NoiseLevel
    /// B, T, D.
    public var batch: Int, seqLen: Int, dim: Int
    /// (B, T, D) the state x_t fed to the model at this step.
    public var xt: [Float]
    /// (B, T, D) the model's prediction x̂₀ at this step (before rounding).
    public var x0: [Float]
    /// (B, T) id of the vocabulary embedding nearest to x̂₀ (the rounded token).
    public var rounded: [Int32]
    /// (B, T) rounding margin: squared distance to the 2nd-nearest embedding minus the nearest.
    public var margin: [Float]
    /// (B, T) argmax of lm_head(x_{t−1}), the official read-out applied to this step's result
    /// (empty unless requested for every step, except on the last frame).
    public var decoded: [Int32]

    /// Creates a frame.
    public init(index: Int, count: Int, t: Int, diffusionSteps: Int, noise: NoiseLevel, batch: Int, seqLen: Int,
                dim: Int, xt: [Float], x0: [Float], rounded: [Int32], margin: [Float], decoded: [Int32]) {
        self.index = index; self.count = count; self.t = t; self.diffusionSteps = diffusionSteps; self.noise = noise
        self.batch = batch; self.seqLen = seqLen; self.dim = dim; self.xt = xt; self.x0 = x0
        self.rounded = rounded; self.margin = margin; self.decoded = decoded
    }

    /// Batch row `b` alone, as a frame of batch 1 (a fork of one seed's run starts from it).
    public func row(_ b: Int) -> DiffusionFrame? {
        guard b >= 0 && b < batch else { return nil }
        let t = seqLen, td = seqLen * dim
        func slice<E>(_ a: [E], _ per: Int) -> [E] { a.count >= (b + 1) * per ? Array(a[(b * per)..<((b + 1) * per)]) : [] }
        return DiffusionFrame(index: index, count: count, t: self.t, diffusionSteps: diffusionSteps, noise: noise, batch: 1,
                              seqLen: t, dim: dim, xt: slice(xt, td), x0: slice(x0, td), rounded: slice(rounded, t),
                              margin: slice(margin, t), decoded: slice(decoded, t))
    }
}
