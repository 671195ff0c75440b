/// The hyper-parameters of a DiffuSeq `TransformerNetModel` and its diffusion process.
///
/// JSON keys follow the official `training_args.json` / BERT config where one exists
/// (`hidden_dim`, `hidden_t_dim`, `seq_len`, `diffusion_steps`, `noise_schedule`, …).
public struct ModelConfig: Codable, Sendable, Equatable {
    /// V: vocabulary size.
    public var vocabSize: Int
    /// D: word-embedding dims (`hidden_dim`).
    public var hiddenDim: Int
    /// Dt: sinusoidal timestep-embedding dims (`hidden_t_dim`).
    public var hiddenTDim: Int
    /// C: encoder width (BERT `hidden_size`).
    public var width: Int
    /// NL: encoder layers.
    public var layers: Int
    /// NH: attention heads.
    public var heads: Int
    /// F: FFN size (BERT `intermediate_size`).
    public var ffn: Int
    /// Rows of the position-embedding table (BERT `max_position_embeddings`).
    public var maxPositions: Int
    /// T: sequence length (`seq_len`).
    public var seqLen: Int
    /// Hidden dropout (`dropout`, BERT `hidden_dropout_prob`).
    public var dropout: Float
    /// Attention-probability dropout (BERT `attention_probs_dropout_prob`, not overridden by DiffuSeq).
    public var attentionDropout: Float
    /// LayerNorm epsilon (1e-12 in BERT).
    public var layerNormEps: Float
    /// Number of diffusion steps the model is trained for.
    public var diffusionSteps: Int
    /// Noise schedule name (`sqrt`, `linear`, `cosine`, `trunc_cos`, `trunc_lin`, `pw_lin`).
    public var noiseSchedule: String
    /// Whether the network sees t·1000/T (official `rescale_timesteps`, always true).
    public var rescaleTimesteps: Bool
    /// Source prior (ours; `source_prior` in training_args.json, absent = false = official): the target region's
    /// diffusion is centred on m, the embedding of the source token at the same offset (`[CLS] src [SEP]`, then PAD),
    /// instead of 0: q(x_t | x₀) = N(m + √ᾱ(x₀ − m), (1 − ᾱ)I), so x_T ≈ m + ε and reverse diffusion edits a noised
    /// copy of the source. Every sampler runs on x − m (see `DiffusionSampler`).
    public var sourcePrior: Bool = false
    /// Whether training noised with the source prior (`source_prior_training`; absent = `source_prior`). A model
    /// trained on the official process may still be *sampled* with the prior (`sourcePrior` true, this false):
    /// the zero-training variant, which the built-in model uses.
    public var sourcePriorTraining: Bool = false
    /// Self-conditioning (ours; `self_condition` in training_args.json, absent = false = official): the network also
    /// takes the previous estimate x̂₀ through a zero-initialised projection added to x_t before `input_up_proj`,
    /// x_in = x_t + x̂₀_prev·W_scᵀ + b_sc (`self_cond_proj`, D × D). Samplers feed the previous step's x̂₀ (zeros at
    /// the first step); training feeds a no-gradient estimate with probability `self_condition_prob`.
    public var selfCondition: Bool = false
    /// Soft absorbing state (DiffuSeq-v2's `learned_mean_embed`; absent = false = official): a learned vector m
    /// (`mean_embed`, D floats, the last parameter) on which the target region's diffusion is centred,
    /// q(x_t | x₀) = N(m + √ᾱ(x₀ − m), (1 − ᾱ)I), so x_T ≈ m + ε. See `SoftAbsorbing`.
    public var learnedMeanEmbed: Bool = false
    /// γ of the discrete noise (DiffuSeq-v2's `denoise_rate` when its `denoise` is true, else 0): in training each
    /// target token of x_t is replaced by m with probability γ·√(1 − ᾱ_t). Needs `learnedMeanEmbed`.
    public var denoiseRate: Float = 0
    /// Weight of ‖m‖₂ in the training loss (v2's `reg_rate`; its code always uses 0.01). Needs `learnedMeanEmbed`.
    public var regRate: Float = 0

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenDim = "hidden_dim", hiddenTDim = "hidden_t_dim"
        case width = "hidden_size", layers = "num_hidden_layers", heads = "num_attention_heads"
        case ffn = "intermediate_size", maxPositions = "max_position_embeddings", seqLen = "seq_len"
        case dropout, attentionDropout = "attention_probs_dropout_prob", layerNormEps = "layer_norm_eps"
        case diffusionSteps = "diffusion_steps", noiseSchedule = "noise_schedule"
        case rescaleTimesteps = "rescale_timesteps", sourcePrior = "source_prior"
        case sourcePriorTraining = "source_prior_training", selfCondition = "self_condition"
        case learnedMeanEmbed = "learned_mean_embed", denoiseRate = "denoise_rate", regRate = "reg_rate"
    }

    /// Encodes every key; self-conditioning's and the soft absorbing state's only when they are on (so the configuration JSON of every
    /// other model, e.g. in a checkpoint's metadata, is byte for byte what it was before the option existed).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(vocabSize, forKey: .vocabSize); try c.encode(hiddenDim, forKey: .hiddenDim)
        try c.encode(hiddenTDim, forKey: .hiddenTDim); try c.encode(width, forKey: .width)
        try c.encode(layers, forKey: .layers); try c.encode(heads, forKey: .heads); try c.encode(ffn, forKey: .ffn)
        try c.encode(maxPositions, forKey: .maxPositions); try c.encode(seqLen, forKey: .seqLen)
        try c.encode(dropout, forKey: .dropout); try c.encode(attentionDropout, forKey: .attentionDropout)
        try c.encode(layerNormEps, forKey: .layerNormEps); try c.encode(diffusionSteps, forKey: .diffusionSteps)
        try c.encode(noiseSchedule, forKey: .noiseSchedule); try c.encode(rescaleTimesteps, forKey: .rescaleTimesteps)
        try c.encode(sourcePrior, forKey: .sourcePrior); try c.encode(sourcePriorTraining, forKey: .sourcePriorTraining)
        if selfCondition { try c.encode(selfCondition, forKey: .selfCondition) }
        if learnedMeanEmbed {
            try c.encode(learnedMeanEmbed, forKey: .learnedMeanEmbed); try c.encode(denoiseRate, forKey: .denoiseRate)
            try c.encode(regRate, forKey: .regRate)
        }
    }

    /// Decodes a configuration; `source_prior` and `self_condition` may be absent (configurations written before it existed).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize); hiddenDim = try c.decode(Int.self, forKey: .hiddenDim)
        hiddenTDim = try c.decode(Int.self, forKey: .hiddenTDim); width = try c.decode(Int.self, forKey: .width)
        layers = try c.decode(Int.self, forKey: .layers); heads = try c.decode(Int.self, forKey: .heads)
        ffn = try c.decode(Int.self, forKey: .ffn); maxPositions = try c.decode(Int.self, forKey: .maxPositions)
        seqLen = try c.decode(Int.self, forKey: .seqLen); dropout = try c.decode(Float.self, forKey: .dropout)
        attentionDropout = try c.decode(Float.self, forKey: .attentionDropout)
        layerNormEps = try c.decode(Float.self, forKey: .layerNormEps)
        diffusionSteps = try c.decode(Int.self, forKey: .diffusionSteps)
        noiseSchedule = try c.decode(String.self, forKey: .noiseSchedule)
        rescaleTimesteps = try c.decode(Bool.self, forKey: .rescaleTimesteps)
        sourcePrior = try c.decodeIfPresent(Bool.self, forKey: .sourcePrior) ?? false
        sourcePriorTraining = try c.decodeIfPresent(Bool.self, forKey: .sourcePriorTraining) ?? sourcePrior
        selfCondition = try c.decodeIfPresent(Bool.self, forKey: .selfCondition) ?? false
        learnedMeanEmbed = try c.decodeIfPresent(Bool.self, forKey: .learnedMeanEmbed) ?? false
        denoiseRate = try c.decodeIfPresent(Float.self, forKey: .denoiseRate) ?? 0
        regRate = try c.decodeIfPresent(Float.self, forKey: .regRate) ?? 0
    }

    /// Creates a configuration; defaults are the official base model (BERT-base encoder).
    public init(vocabSize: Int = 30522, hiddenDim: Int = 128, hiddenTDim: Int = 128, width: Int = 768,
                layers: Int = 12, heads: Int = 12, ffn: Int = 3072, maxPositions: Int = 512,
                seqLen: Int = 128, dropout: Float = 0.1, attentionDropout: Float = 0.1,
                layerNormEps: Float = 1e-12, diffusionSteps: Int = 2000, noiseSchedule: String = "sqrt",
                rescaleTimesteps: Bool = true) {
        self.vocabSize = vocabSize; self.hiddenDim = hiddenDim; self.hiddenTDim = hiddenTDim
        self.width = width; self.layers = layers; self.heads = heads; self.ffn = ffn
        self.maxPositions = maxPositions; self.seqLen = seqLen; self.dropout = dropout
        self.attentionDropout = attentionDropout; self.layerNormEps = layerNormEps
        self.diffusionSteps = diffusionSteps; self.noiseSchedule = noiseSchedule
        self.rescaleTimesteps = rescaleTimesteps
    }

    /// The official base model (91,225,274 parameters with V = 30,522).
    public static let base = ModelConfig()
    /// The benchmark's small shape: 6×256, 4 heads, FFN 1024.
    public static let small = ModelConfig(width: 256, layers: 6, heads: 4, ffn: 1024)

    /// Whether `input_up_proj` / `output_down_proj` exist (official: only when D ≠ C).
    public var hasProjections: Bool { hiddenDim != width }
    /// HS: head size.
    public var headSize: Int { width / max(1, heads) }

    /// Checks the sizes; throws a readable error naming the first bad value.
    public func validate() throws {
        func need(_ ok: Bool, _ m: String) throws { if !ok { throw EngineError.invalidConfig(m) } }
        try need(vocabSize >= 5, "vocab_size \(vocabSize) must be at least 5")
        try need(hiddenDim > 0 && width > 0 && ffn > 0 && layers >= 0, "sizes must be positive")
        try need(hiddenTDim > 0 && hiddenTDim % 2 == 0, "hidden_t_dim \(hiddenTDim) must be even and positive")
        try need(heads > 0 && width % heads == 0, "hidden_size \(width) must be divisible by heads \(heads)")
        try need(seqLen >= 4 && seqLen <= maxPositions,
                 "seq_len \(seqLen) must be in 4...\(maxPositions) (max_position_embeddings)")
        try need(diffusionSteps >= 2, "diffusion_steps \(diffusionSteps) must be at least 2")
        try need((0..<1).contains(dropout) && (0..<1).contains(attentionDropout), "dropout must be in [0, 1)")
        try need(NoiseSchedule.names.contains(noiseSchedule),
                 "unknown noise_schedule \"\(noiseSchedule)\" (expected one of \(NoiseSchedule.names.joined(separator: ", ")))")
        try need(learnedMeanEmbed || denoiseRate == 0, "denoise_rate \(denoiseRate) needs learned_mean_embed (the absorbing state m)")
        try need((0...1).contains(denoiseRate), "denoise_rate \(denoiseRate) must be in [0, 1]")
        try need(learnedMeanEmbed || regRate == 0, "reg_rate \(regRate) needs learned_mean_embed (the absorbing state m)")
        try need(regRate >= 0 && regRate.isFinite, "reg_rate \(regRate) must be ≥ 0")
        try need(!(learnedMeanEmbed && sourcePrior),
                 "the soft absorbing state (learned_mean_embed) and the source prior (source_prior) both centre the target region: use one")
    }
}
