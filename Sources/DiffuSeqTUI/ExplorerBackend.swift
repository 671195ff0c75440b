import DiffuSeqCore

/// A prepared input in the official layout `[CLS] src [SEP] [SEP] [CLS] trg [SEP] [PAD]…`.
public struct PreparedInput: Sendable, Equatable {
    /// (T) token ids; the target part is what gets generated.
    public var ids: [Int]
    /// (T) 0 on the source part, 1 on target and padding.
    public var mask: [Int]
    /// len_x = T − sum(mask).
    public var sourceLength: Int
    /// Decoded reference (dataset examples), if any.
    public var reference: String?
    /// A warning to show (the source was truncated to fit: wordpieces kept of how many, positions left), if any.
    public var warning: String?
    /// Source tokens that did not fit the model's sequence (the source was cut to fit; the explorer says so).
    public var droppedSourceTokens: Int
    /// (T − sourceLength) the reference's ids on the target part (empty without a reference): the x₀ of the
    /// forward view.
    public var referenceIDs: [Int] = []

    /// Creates a prepared input.
    public init(ids: [Int], mask: [Int], sourceLength: Int, reference: String?, warning: String? = nil,
                droppedSourceTokens: Int = 0) {
        self.ids = ids
        self.mask = mask
        self.sourceLength = sourceLength
        self.reference = reference
        self.warning = warning
        self.droppedSourceTokens = droppedSourceTokens
    }
}

/// What the explorer needs from the engine. Implementations must be thread-safe: `sample` runs on a background thread.
public protocol ExplorerBackend: AnyObject, Sendable {
    /// The model's display name, e.g. "built-in kjv2modern (6×256, V 8,174)".
    var modelName: String { get }
    /// T the model was trained with.
    var diffusionSteps: Int { get }
    /// Sequence length (positions per row).
    var seqLen: Int { get }
    /// Id of `[PAD]`.
    var padID: Int { get }
    /// The vocabulary piece of one id: "[PAD]", "##ing", "lord".
    func token(_ id: Int) -> String
    /// Official decode_token (strip trailing PAD, join pieces, clean-up).
    func decode(_ ids: [Int]) -> String
    /// Tokenises a source sentence into the official layout; throws with a readable message.
    func prepare(source: String, reference: String?) throws -> PreparedInput
    /// Runs a whole reverse diffusion synchronously on the calling thread, one batch row per seed
    /// (frame.batch == seeds.count, row b = seeds[b]); calls onFrame for each step as soon as it is computed;
    /// returns early (without throwing) when isCancelled() becomes true. `startFraction` is the SDEdit edit
    /// strength (`SamplerOptions.startFraction`): 1 starts from pure noise; F < 1 starts from the source copy
    /// noised to step `SamplerOptions.sdeditFirstStep(fraction: F, steps:)`, the index of the first frame.
    func sample(_ input: PreparedInput, seeds: [UInt64], sampler: SamplerKind, steps: Int, startFraction: Double,
                isCancelled: @escaping @Sendable () -> Bool,
                onFrame: @escaping @Sendable (DiffusionFrame) -> Void) throws
    /// Resumes the run of one seed at `fork.step` from `fork.xt` with the same noise stream, holding the pinned
    /// positions at their tokens' embeddings from that step on; frames have the original indices
    /// (`fork.step` … steps−1). With no pins the frames equal the original run's bit for bit. `sampler`, `steps`
    /// and `startFraction` are the forked run's (the real engine needs only x_t at `fork.step`; an engine that
    /// replays the run, like the tests' demo, needs the start too).
    func fork(_ input: PreparedInput, seed: UInt64, sampler: SamplerKind, steps: Int, startFraction: Double,
              from fork: ForkSpec,
              isCancelled: @escaping @Sendable () -> Bool, onFrame: @escaping @Sendable (DiffusionFrame) -> Void) throws
    /// Rounds q(x_t | x₀) of `ids` (the reference's target ids) at ᾱ = `alphaBar` with noise from `seed`:
    /// the ids rounding recovers at that noise level.
    func forwardRound(_ ids: [Int], alphaBar: Double, seed: UInt64) -> [Int]
    /// The vocabulary id of a typed word (nil when it is not one token).
    func tokenID(_ word: String) -> Int?
    /// The k vocabulary embeddings nearest to `vector` (D floats), nearest first.
    func neighbours(of vector: [Float], k: Int) -> [Neighbour]
    /// Official sentence BLEU of hypothesis vs reference (NLTK method4), on whitespace tokens.
    func bleu(hypothesis: String, reference: String) -> Double
    /// Diversity among sentences: self-BLEU, div-4 and the MBR pick's index.
    func diversity(_ sentences: [String]) -> (selfBLEU: Double, div4: Double, mbrIndex: Int)
}
