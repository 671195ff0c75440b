/// One parameter tensor: its PyTorch key, shape, and place in the flat buffer.
public struct ParameterEntry: Sendable, Equatable {
    /// The official state-dict key, e.g. `input_transformers.layer.0.attention.self.query.weight`.
    public var key: String
    /// Shape as PyTorch stores it ([out, in] for Linear weights).
    public var shape: [Int]
    /// First Float of this tensor in the flat buffer.
    public var offset: Int
    /// Number of Floats.
    public var count: Int { shape.reduce(1, *) }
    /// Range in the flat buffer.
    public var range: Range<Int> { offset..<(offset + count) }
}

/// The ordered parameter table of a `TransformerNetModel`, in `named_parameters()` order.
///
/// This table *is* the checkpoint-key mapping: loading and saving both walk it. The tied
/// matrix appears once, as `word_embedding.weight`; `lm_head.weight` is an alias of it.
public struct ParameterLayout: Sendable {
    /// Every parameter, in order.
    public let entries: [ParameterEntry]
    /// Total Floats.
    public let totalCount: Int
    private let index: [String: Int]

    /// Key aliases: a checkpoint key that names the same tensor as a layout key.
    public static let aliases = ["lm_head.weight": "word_embedding.weight"]
    /// Buffers in the official state dict that are not parameters.
    public static let buffers = ["position_ids"]

    /// Builds the layout for a configuration.
    public init(_ c: ModelConfig) {
        var list: [(String, [Int])] = []
        let C = c.width, D = c.hiddenDim, Dt = c.hiddenTDim
        list.append(("word_embedding.weight", [c.vocabSize, D]))
        list.append(("lm_head.bias", [c.vocabSize]))
        list.append(("time_embed.0.weight", [4 * Dt, Dt])); list.append(("time_embed.0.bias", [4 * Dt]))
        list.append(("time_embed.2.weight", [C, 4 * Dt])); list.append(("time_embed.2.bias", [C]))
        if c.hasProjections {
            list.append(("input_up_proj.0.weight", [C, D])); list.append(("input_up_proj.0.bias", [C]))
            list.append(("input_up_proj.2.weight", [C, C])); list.append(("input_up_proj.2.bias", [C]))
        }
        for l in 0..<c.layers {
            let p = "input_transformers.layer.\(l)."
            for name in ["attention.self.query", "attention.self.key", "attention.self.value",
                         "attention.output.dense"] {
                list.append((p + name + ".weight", [C, C])); list.append((p + name + ".bias", [C]))
            }
            list.append((p + "attention.output.LayerNorm.weight", [C]))
            list.append((p + "attention.output.LayerNorm.bias", [C]))
            list.append((p + "intermediate.dense.weight", [c.ffn, C]))
            list.append((p + "intermediate.dense.bias", [c.ffn]))
            list.append((p + "output.dense.weight", [C, c.ffn])); list.append((p + "output.dense.bias", [C]))
            list.append((p + "output.LayerNorm.weight", [C])); list.append((p + "output.LayerNorm.bias", [C]))
        }
        list.append(("position_embeddings.weight", [c.maxPositions, C]))
        list.append(("LayerNorm.weight", [C])); list.append(("LayerNorm.bias", [C]))
        if c.hasProjections {
            list.append(("output_down_proj.0.weight", [C, C])); list.append(("output_down_proj.0.bias", [C]))
            list.append(("output_down_proj.2.weight", [D, C])); list.append(("output_down_proj.2.bias", [D]))
        }
        var entries: [ParameterEntry] = []
        var offset = 0
        var index: [String: Int] = [:]
        for (key, shape) in list {
            index[key] = entries.count
            entries.append(ParameterEntry(key: key, shape: shape, offset: offset))
            offset += shape.reduce(1, *)
            offset = (offset + 15) / 16 * 16  // keep every tensor 64-byte aligned
        }
        self.entries = entries
        self.totalCount = offset
        self.index = index
    }

    /// The entry for a key (aliases resolved), or nil.
    public func entry(_ key: String) -> ParameterEntry? {
        let k = Self.aliases[key] ?? key
        return index[k].map { entries[$0] }
    }

    /// The offset of a key known to exist in this layout.
    @inline(__always)
    func off(_ key: String) -> Int { index[key].map { entries[$0].offset } ?? -1 }

    /// Number of parameters, counted once (no alignment padding).
    public var parameterCount: Int { entries.reduce(0) { $0 + $1.count } }
}
