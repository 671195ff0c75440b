/// One parameter tensor: its PyTorch key, shape, and place in the flat buffer.
public struct ParameterEntry: Sendable, Equatable {
    /// The official state-dict key, e.g. `input_transformers.layer.0.attention.self.query.weight`.
    public var key: String
    /// Shape as PyTorch stores it ([out, in] for Linear weights).
    public var shape: [Int]
    /// First Float of this tensor in the flat buffer.
    public var offset: Int
    /// How PyTorch initialises it (`TransformerNetModel.initialise`).
    public var initialisation: ParameterInit = .uniform(fanIn: 1)
    /// Number of Floats.
    public var count: Int { shape.reduce(1, *) }
    /// Range in the flat buffer.
    public var range: Range<Int> { offset..<(offset + count) }
    /// The typed handle of this tensor.
    public var id: ParameterID { ParameterID(offset: offset, count: count) }
}

/// PyTorch's default initialisation of a parameter (spec §1.8).
public enum ParameterInit: Sendable, Equatable {
    /// U(±1/√fanIn): Linear weights and biases, `lm_head.bias` (fanIn = D).
    case uniform(fanIn: Int)
    /// N(0, 1): embeddings.
    case normal
    /// N(0, std²): DiffuSeq-v2's `mean_embed` (std = D^−½, `nn.init.normal_`).
    case scaledNormal(std: Float)
    /// LayerNorm weight (1) or bias (0).
    case constant(Float)
}

/// A parameter tensor's place in the flat buffer: the same in the parameters, the gradients and the
/// AdamW moments. Made only by `ParameterLayout`, so a handle always names a tensor of its model.
public struct ParameterID: Sendable, Hashable {
    /// First Float in the flat buffer.
    public let offset: Int
    /// Number of Floats.
    public let count: Int
    /// The tensor in `buffer` (parameters, gradients or moments of the same layout).
    @inline(__always) func ptr(_ buffer: FloatBuffer) -> UnsafeMutablePointer<Float> { buffer.ptr + offset }
}

/// A `Linear(inputs → outputs)`: weight (outputs, inputs) and bias (outputs).
public struct LinearParameters: Sendable, Hashable {
    public let weight: ParameterID, bias: ParameterID
    public let inputs: Int, outputs: Int
}

/// A `LayerNorm` over the last axis: weight and bias.
public struct LayerNormParameters: Sendable, Hashable {
    public let weight: ParameterID, bias: ParameterID
}

/// One HF `BertLayer`: self-attention (query, key, value, output dense + LayerNorm), then the
/// intermediate dense (GELU) and the output dense + LayerNorm.
public struct BertLayerParameters: Sendable, Hashable {
    public let query: LinearParameters, key: LinearParameters, value: LinearParameters
    public let attentionOutput: LinearParameters, attentionNorm: LayerNormParameters
    public let intermediate: LinearParameters, output: LinearParameters, outputNorm: LayerNormParameters
}

/// `Linear → tanh → Linear` (`input_up_proj`, `output_down_proj`).
public struct ProjectionParameters: Sendable, Hashable {
    public let first: LinearParameters, second: LinearParameters
}

/// Every tensor of a `TransformerNetModel` by role: the per-layer weight views the forward and
/// backward passes use instead of string keys. Built once, with the layout.
public struct ModelParameters: Sendable {
    /// (V, D) the tied embedding (`word_embedding.weight` = `lm_head.weight`).
    public let wordEmbedding: ParameterID
    /// (V) `lm_head.bias`.
    public let lmHeadBias: ParameterID
    /// `time_embed`: Linear(Dt → 4Dt), SiLU, Linear(4Dt → C).
    public let timeEmbedIn: LinearParameters, timeEmbedOut: LinearParameters
    /// `input_up_proj` (nil when D = C and the model has no projections).
    public let inputUp: ProjectionParameters?
    /// `input_transformers.layer.*`.
    public let layers: [BertLayerParameters]
    /// (maxPositions, C) `position_embeddings.weight`.
    public let positionEmbeddings: ParameterID
    /// The LayerNorm before the encoder.
    public let embeddingNorm: LayerNormParameters
    /// `output_down_proj` (nil without projections).
    public let outputDown: ProjectionParameters?
    /// (D) `mean_embed`, the soft absorbing state m (DiffuSeq-v2; nil unless `ModelConfig.learnedMeanEmbed`).
    public let meanEmbed: ParameterID?
    /// `self_cond_proj`: Linear(D → D), zero-initialised, applied to the previous x̂₀ and added to x_t
    /// (nil unless the model is self-conditioned, `ModelConfig.selfCondition`).
    public let selfCondition: LinearParameters?

    /// Every tensor, in `named_parameters()` order (the layout's `entries` order).
    public var all: [ParameterID] {
        func lin(_ l: LinearParameters) -> [ParameterID] { [l.weight, l.bias] }
        func norm(_ n: LayerNormParameters) -> [ParameterID] { [n.weight, n.bias] }
        func proj(_ p: ProjectionParameters?) -> [ParameterID] { p.map { lin($0.first) + lin($0.second) } ?? [] }
        var ids = [wordEmbedding, lmHeadBias] + lin(timeEmbedIn) + lin(timeEmbedOut) + proj(inputUp)
        for l in layers {
            ids += lin(l.query) + lin(l.key) + lin(l.value) + lin(l.attentionOutput) + norm(l.attentionNorm)
            ids += lin(l.intermediate) + lin(l.output) + norm(l.outputNorm)
        }
        return ids + [positionEmbeddings] + norm(embeddingNorm) + proj(outputDown) + (meanEmbed.map { [$0] } ?? [])
            + (selfCondition.map(lin) ?? [])
    }
}

/// The ordered parameter table of a `TransformerNetModel`, in `named_parameters()` order.
///
/// This table *is* the checkpoint-key mapping, and the one place where parameter names live: loading
/// and saving walk `entries`, the model's passes use the typed views in `parameters`.
/// The tied matrix appears once, as `word_embedding.weight`; `lm_head.weight` is an alias of it.
public struct ParameterLayout: Sendable {
    /// Every parameter, in order.
    public let entries: [ParameterEntry]
    /// Total Floats.
    public let totalCount: Int
    /// The same tensors by role.
    public let parameters: ModelParameters
    private let index: [String: Int]

    /// Key aliases: a checkpoint key that names the same tensor as a layout key.
    public static let aliases = ["lm_head.weight": "word_embedding.weight"]
    /// Buffers in the official state dict that are not parameters.
    public static let buffers = ["position_ids"]

    /// Builds the layout for a configuration.
    public init(_ c: ModelConfig) {
        var entries: [ParameterEntry] = []
        var offset = 0
        func add(_ key: String, _ shape: [Int], _ initialisation: ParameterInit) -> ParameterID {
            let e = ParameterEntry(key: key, shape: shape, offset: offset, initialisation: initialisation)
            entries.append(e)
            offset += e.count
            offset = (offset + 15) / 16 * 16  // keep every tensor 64-byte aligned
            return e.id
        }
        func linear(_ name: String, _ inputs: Int, _ outputs: Int) -> LinearParameters {
            LinearParameters(weight: add(name + ".weight", [outputs, inputs], .uniform(fanIn: inputs)),
                             bias: add(name + ".bias", [outputs], .uniform(fanIn: inputs)), inputs: inputs, outputs: outputs)
        }
        func norm(_ name: String, _ width: Int) -> LayerNormParameters {
            LayerNormParameters(weight: add(name + ".weight", [width], .constant(1)), bias: add(name + ".bias", [width], .constant(0)))
        }
        func projection(_ name: String, _ inputs: Int, _ middle: Int, _ outputs: Int) -> ProjectionParameters {
            ProjectionParameters(first: linear(name + ".0", inputs, middle), second: linear(name + ".2", middle, outputs))
        }
        let C = c.width, D = c.hiddenDim, Dt = c.hiddenTDim
        let wordEmbedding = add("word_embedding.weight", [c.vocabSize, D], .normal)
        let lmHeadBias = add("lm_head.bias", [c.vocabSize], .uniform(fanIn: D))
        let timeEmbedIn = linear("time_embed.0", Dt, 4 * Dt), timeEmbedOut = linear("time_embed.2", 4 * Dt, C)
        let inputUp = c.hasProjections ? projection("input_up_proj", D, C, C) : nil
        var layers: [BertLayerParameters] = []
        for l in 0..<c.layers {
            let p = "input_transformers.layer.\(l)."
            let q = linear(p + "attention.self.query", C, C), k = linear(p + "attention.self.key", C, C)
            let v = linear(p + "attention.self.value", C, C), ao = linear(p + "attention.output.dense", C, C)
            let an = norm(p + "attention.output.LayerNorm", C)
            let inter = linear(p + "intermediate.dense", C, c.ffn), out = linear(p + "output.dense", c.ffn, C)
            layers.append(BertLayerParameters(query: q, key: k, value: v, attentionOutput: ao, attentionNorm: an,
                                              intermediate: inter, output: out, outputNorm: norm(p + "output.LayerNorm", C)))
        }
        let positions = add("position_embeddings.weight", [c.maxPositions, C], .normal)
        let embeddingNorm = norm("LayerNorm", C)
        let outputDown = c.hasProjections ? projection("output_down_proj", C, C, D) : nil
        // v2 registers `mean_embed` last in `__init__` (after `output_down_proj`), so it follows it here too (only our
        // self-conditioning comes after it): every other tensor keeps its offset and initial values.
        let meanEmbed = c.learnedMeanEmbed ? add(SoftAbsorbing.key, [D], .scaledNormal(std: 1 / Float(D).squareRoot())) : nil
        // Self-conditioning's projection comes last (after v2's mean_embed), so every other tensor keeps its offset (a
        // checkpoint without it is a prefix of this layout) and its zero initialisation draws nothing from the generator.
        let selfCondition = c.selfCondition
            ? LinearParameters(weight: add("self_cond_proj.weight", [D, D], .constant(0)),
                               bias: add("self_cond_proj.bias", [D], .constant(0)), inputs: D, outputs: D)
            : nil
        parameters = ModelParameters(wordEmbedding: wordEmbedding, lmHeadBias: lmHeadBias, timeEmbedIn: timeEmbedIn,
                                     timeEmbedOut: timeEmbedOut, inputUp: inputUp, layers: layers,
                                     positionEmbeddings: positions, embeddingNorm: embeddingNorm, outputDown: outputDown,
                                     meanEmbed: meanEmbed, selfCondition: selfCondition)
        self.entries = entries
        self.totalCount = offset
        self.index = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.key, $0) })
    }

    /// The entry for a key (aliases resolved), or nil.
    public func entry(_ key: String) -> ParameterEntry? {
        let k = Self.aliases[key] ?? key
        return index[k].map { entries[$0] }
    }

    /// Number of parameters, counted once (no alignment padding).
    public var parameterCount: Int { entries.reduce(0) { $0 + $1.count } }
}
