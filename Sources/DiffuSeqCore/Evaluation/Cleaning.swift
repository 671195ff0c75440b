import Foundation

/// The special-token strings the script deletes (`--sos`, `--eos`, `--sep`, `--pad`).
public struct SpecialTokens: Sendable, Equatable, Codable {
    /// Start of sequence, `--sos` (default `[CLS]`).
    public var sos: String
    /// End of sequence, `--eos` (default `[SEP]`).
    public var eos: String
    /// Separator, `--sep` (default `[SEP]`).
    public var sep: String
    /// Padding, `--pad` (default `[PAD]`).
    public var pad: String

    /// Creates a token set; the defaults are the script's (BERT vocabulary).
    public init(sos: String = "[CLS]", eos: String = "[SEP]", sep: String = "[SEP]", pad: String = "[PAD]") {
        self.sos = sos
        self.eos = eos
        self.sep = sep
        self.pad = pad
    }

    /// The script's defaults for the BERT vocabulary: `[CLS]`, `[SEP]`, `[SEP]`, `[PAD]`.
    public static let bert = SpecialTokens()
    /// The tokens a custom vocabulary uses: `[START]`, `[END]`, `[END]`, `[PAD]`.
    public static let custom = SpecialTokens(sos: "[START]", eos: "[END]", sep: "[END]", pad: "[PAD]")
}

extension Metrics {
    /// `recover.strip()` then plain deletion of eos, sos, sep and pad, in that order. No second
    /// strip: the spaces around removed tokens stay.
    public static func cleanRecover(_ s: String, tokens: SpecialTokens = .bert) -> String {
        var t = EvalText.strip(s)
        for tok in [tokens.eos, tokens.sos, tokens.sep, tokens.pad] { t = EvalText.remove(tok, from: t) }
        return t
    }

    /// `reference.strip()` then deletion of eos, sos and sep (not pad).
    public static func cleanReference(_ s: String, tokens: SpecialTokens = .bert) -> String {
        var t = EvalText.strip(s)
        for tok in [tokens.eos, tokens.sos, tokens.sep] { t = EvalText.remove(tok, from: t) }
        return t
    }

    /// `source.strip()` then deletion of eos and sos.
    public static func cleanSource(_ s: String, tokens: SpecialTokens = .bert) -> String {
        var t = EvalText.strip(s)
        for tok in [tokens.eos, tokens.sos] { t = EvalText.remove(tok, from: t) }
        return t
    }
}
