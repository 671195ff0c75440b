import ArgumentParser
import DiffuSeqCore

/// `--absorbing centred|v2|off` (sample, trace): how the sampler uses a model's soft absorbing state.
struct AbsorbingOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "How the sampler uses a model's soft absorbing state (mean_embed; default: centred when the model has one): centred (start at m + noise, every update centred on m), v2 (DiffuSeq-v2's code: start at m + noise, uncentred updates, ddpm re-absorbs target tokens into m with probability γ·σ_t; dpm-solver++ ignores m) or off.",
        valueName: "mode"))
    var absorbing: String?

    /// The mode asked for, or nil (follow the model).
    func mode() throws -> AbsorbingSampling? {
        guard let a = absorbing else { return nil }
        guard let m = AbsorbingSampling(rawValue: a) else {
            throw CLIError("--absorbing must be one of \(AbsorbingSampling.allCases.map(\.rawValue).joined(separator: ", ")), not \"\(a)\"")
        }
        return m
    }
}
