import Foundation

/// One generation input in the official layout, with the strings `sample_seq2seq.py` writes.
public struct GenerationInput: Sendable {
    /// (T) ids and mask in the official layout.
    public var ids: [Int], mask: [Int]
    /// Where it came from (file:line, or "--text").
    public var origin: String
    /// How the source fitted (set by `TextGenerator.prepare`; nil for dataset examples).
    public var fit: SourceFit?

    /// Creates an input.
    public init(ids: [Int], mask: [Int], origin: String, fit: SourceFit? = nil) {
        self.ids = ids; self.mask = mask; self.origin = origin; self.fit = fit
    }
}

/// One output line of the official sampler: `{"recover", "reference", "source"}`.
public struct GenerationOutput: Sendable, Equatable, Codable {
    public var recover: String
    public var reference: String
    public var source: String

    /// The line as Python's `json.dumps` writes it (keys in this order, non-ASCII escaped).
    public var jsonLine: String {
        "{\"recover\": \(JSONText.quote(recover, asciiOnly: true)), \"reference\": \(JSONText.quote(reference, asciiOnly: true)), \"source\": \(JSONText.quote(source, asciiOnly: true))}"
    }
}

/// Text in, text out: tokenisation, batching, seeds and decoding around `DiffusionSampler`.
///
/// Sendable (unchecked): two `let`s, a sampler (see DiffusionSampler) and an immutable tokenizer.
public final class TextGenerator: @unchecked Sendable {
    /// The sampler (model + process).
    public let sampler: DiffusionSampler
    /// The tokenizer.
    public let tokenizer: any TextTokenizer

    /// Wraps a loaded model (`workload`: batch sampling, or the explorer's batch-1 runs; it decides `auto`).
    public init(_ loaded: LoadedModel, workload: ComputeContext.Workload = .batchSampling) throws {
        sampler = try DiffusionSampler(model: loaded.model, padID: loaded.tokenizer.padID, workload: workload)
        tokenizer = loaded.tokenizer
    }

    /// Wraps a model and tokenizer.
    public init(sampler: DiffusionSampler, tokenizer: any TextTokenizer) {
        self.sampler = sampler; self.tokenizer = tokenizer
    }

    /// The official layout for a source (and optional target) sentence.
    public func prepare(source: String, target: String = "", origin: String = "--text") -> GenerationInput {
        let T = sampler.model.config.seqLen
        let sourceIDs = tokenizer.encode(PythonText.strip(source))
        let r = SequenceBuilder.build(source: sourceIDs, target: tokenizer.encode(PythonText.strip(target)), seqLen: T,
                                      tokenizer: tokenizer)
        return GenerationInput(ids: r.ids, mask: r.mask, origin: origin,
                               fit: SequenceBuilder.fit(sourceWordpieces: sourceIDs.count, mask: r.mask))
    }

    /// The seed of example `index` under run seed `seed` (independent of batching).
    public static func rowSeed(_ seed: UInt64, _ index: Int) -> UInt64 {
        var z = seed &+ UInt64(truncatingIfNeeded: index) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Decodes a sampled row as the official sampler: recover / reference / source strings.
    public func decode(input: GenerationInput, tokens: [Int32]) -> GenerationOutput {
        let lenX = SequenceBuilder.sourceLength(mask: input.mask)
        return GenerationOutput(recover: tokenizer.decodeToken(tokens[lenX...].map(Int.init)),
                                reference: tokenizer.decodeToken(Array(input.ids[lenX...])),
                                source: tokenizer.decodeToken(Array(input.ids[..<lenX])))
    }

    /// Generates outputs for `inputs` in batches of `batchSize`; `progress(done, total)` after each batch.
    public func generate(_ inputs: [GenerationInput], seed: UInt64, batchSize: Int, options: SamplerOptions,
                         isCancelled: () -> Bool = { false },
                         progress: (Int, Int) -> Void = { _, _ in }) throws -> [GenerationOutput] {
        var outputs: [GenerationOutput] = []
        var start = 0
        let bs = max(1, batchSize)
        while start < inputs.count {
            if isCancelled() { throw EngineError.cancelled }
            let chunk = Array(inputs[start..<min(start + bs, inputs.count)])
            let seeds = chunk.indices.map { Self.rowSeed(seed, start + $0 - chunk.startIndex) }
            let r = try sampler.run(ids: chunk.flatMap(\.ids), mask: chunk.flatMap(\.mask), batch: chunk.count,
                                    seeds: seeds, options: options, isCancelled: isCancelled)
            if r.cancelled { throw EngineError.cancelled }
            let T = chunk[0].ids.count
            for (i, inp) in chunk.enumerated() {
                outputs.append(decode(input: inp, tokens: Array(r.tokens[(i * T)..<((i + 1) * T)])))
            }
            start += chunk.count
            progress(start, inputs.count)
        }
        return outputs
    }
}
