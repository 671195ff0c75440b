import DiffuSeqTUI
@testable import DiffuSeqCore

/// A deterministic stand-in engine for tests, demos and the end-to-end script: a small vocabulary,
/// an archaic→modern "paraphrase", tokens that settle over the steps and D-dimensional embeddings.
/// Not final: test doubles subclass it and override one call (counting, truncating, wrong rounding).
public class DemoExplorerBackend: ExplorerBackend, @unchecked Sendable {
    /// Display name.
    public let modelName: String
    /// T.
    public let diffusionSteps: Int
    /// Sequence length.
    public let seqLen: Int
    /// Embedding dimension.
    public let dim: Int
    /// `[PAD]` id (0).
    public let padID = 0
    /// The vocabulary (ids are indices).
    public let vocabulary: [String]
    /// Called after each computed step (the scratch binary sleeps here to simulate a real model).
    public let onStep: (@Sendable () -> Void)?
    private let index: [String: Int]
    private let embeddings: [Float]

    /// Words of the built-in demo vocabulary.
    public static let defaultWords: [String] = [
        "the", "lord", "is", "my", "shepherd", ",", "i", "shall", "not", "want", "you", "will", "thou", "shalt",
        "thee", "thy", "your", "art", "are", "hath", "has", "doth", "does", "unto", "to", "ye", "saith", "says",
        "and", "god", "said", "let", "there", "be", "light", ".", "in", "beginning", "created", "heaven", "earth",
        "love", "neighbour", "as", "self", "kill", "go", "come", "forth", "with", "of", "a", "it", "was", "good",
        "he", "she", "they", "we", "me", "him", "them", "his", "her", "our", "their", "all", "people", "day",
        "night", "water", "land", "man", "son", "father", "king", "house", "word", "name", "hand", "heart", "life",
        "##s", "##ed", "##ing", "peace", "grace", "mercy", "truth", "way", "ever", "never", "also", "for", "from",
        "upon", "before", "after", "among", "against", "behold", "see", "hear", "speak", "know", "give", "take",
        "thyself", "yourself",
    ]

    /// Archaic → modern replacements used as the "paraphrase".
    static let modern: [String: String] = [
        "thou": "you", "shalt": "shall", "thee": "you", "thy": "your", "art": "are", "hath": "has",
        "doth": "does", "unto": "to", "ye": "you", "saith": "says", "behold": "see", "thyself": "yourself",
    ]

    /// Creates a demo backend. `extraWords` are appended to the vocabulary (e.g. CJK, emoji, odd Unicode for tests).
    public init(seqLen: Int = 64, dim: Int = 8, diffusionSteps: Int = 2000, extraWords: [String] = [],
                name: String? = nil, onStep: (@Sendable () -> Void)? = nil) {
        self.seqLen = max(8, seqLen)
        self.dim = max(1, dim)
        self.diffusionSteps = max(1, diffusionSteps)
        self.onStep = onStep
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + DemoExplorerBackend.defaultWords + extraWords
        vocabulary = vocab
        var idx: [String: Int] = [:]
        for (i, w) in vocab.enumerated() where idx[w] == nil { idx[w] = i }
        index = idx
        var rng = SplitMix64(seed: 0xD1FF_05E0)
        var e = [Float](repeating: 0, count: vocab.count * self.dim)
        for i in e.indices { e[i] = Float(rng.nextGaussian()) }
        embeddings = e
        modelName = name ?? "demo (fake engine, \(self.seqLen)×\(self.dim), V \(Fmt.grouped(vocab.count)))"
    }

    /// The vocabulary piece of `id`.
    public func token(_ id: Int) -> String { vocabulary.indices.contains(id) ? vocabulary[id] : "[UNK]" }

    /// Joins pieces (`##` continues a word), dropping special tokens.
    public func decode(_ ids: [Int]) -> String {
        var out = ""
        for id in ids {
            let t = token(id)
            if t == "[PAD]" || t == "[CLS]" || t == "[SEP]" { continue }
            if t.hasPrefix("##") { out += String(t.dropFirst(2)) } else { out += (out.isEmpty ? "" : " ") + t }
        }
        return out
    }

    /// Error thrown by `prepare`.
    public struct PrepareError: Error, CustomStringConvertible {
        /// Message.
        public var description: String
    }

    /// Splits on whitespace; unknown words become `[UNK]`.
    public func prepare(source: String, reference: String?) throws -> PreparedInput {
        let words = source.lowercased().split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init)
        if words.isEmpty { throw PrepareError(description: "the source is empty") }
        let maxWords = seqLen / 2 - 2
        if words.count > maxWords { throw PrepareError(description: "the source has \(words.count) words; at most \(maxWords) fit") }
        var ids = [2] + words.map { index[$0] ?? 1 } + [3]
        let len = ids.count
        ids += [Int](repeating: padID, count: seqLen - len)
        let mask = [Int](repeating: 0, count: len) + [Int](repeating: 1, count: seqLen - len)
        var p = PreparedInput(ids: ids, mask: mask, sourceLength: len, reference: reference)
        if let reference {
            let r = reference.lowercased().split(separator: " ").map { index[String($0)] ?? 1 } + [3]
            p.referenceIDs = Array((r + [Int](repeating: padID, count: seqLen)).prefix(seqLen - len))
        }
        return p
    }

    /// The target the demo converges to: modernised source words then `[SEP]`, padded.
    func truth(_ input: PreparedInput) -> [Int] {
        let src = input.ids[1..<max(1, input.sourceLength - 1)]
        var t = src.map { id -> Int in
            if let m = DemoExplorerBackend.modern[token(id)], let j = index[m] { return j }
            return id
        }
        t.append(3)
        let n = seqLen - input.sourceLength
        if t.count > n { t = Array(t.prefix(n)) }
        return t + [Int](repeating: padID, count: max(0, n - t.count))
    }

    /// ᾱ_t of the sqrt schedule (DiffuSeq's default).
    public func alphaBar(_ t: Int) -> Double {
        let s = Double(t + 1) / Double(diffusionSteps)
        return max(1e-5, 1 - (s + 0.0001).squareRoot())
    }

    /// The source copy an SDEdit start begins from: the source words then `[SEP]`, padded (not modernised).
    func sourceCopy(_ input: PreparedInput) -> [Int] {
        let n = seqLen - input.sourceLength
        let c = Array((Array(input.ids[1..<max(1, input.sourceLength - 1)]) + [3]).prefix(n))
        return c + [Int](repeating: padID, count: max(0, n - c.count))
    }

    /// Produces frames in which each target token settles at a seed-dependent step. With `startFraction` < 1 the
    /// run skips its first steps as the engine does (`SamplerOptions.sdeditFirstStep`: frames start at that
    /// index) and the unsettled tokens start as the source copy instead of noise.
    public func sample(_ input: PreparedInput, seeds: [UInt64], sampler: SamplerKind, steps: Int, startFraction: Double = 1,
                       isCancelled: @escaping @Sendable () -> Bool,
                       onFrame: @escaping @Sendable (DiffusionFrame) -> Void) throws {
        let count = max(1, min(steps, diffusionSteps))
        let first = SamplerOptions.sdeditFirstStep(fraction: startFraction, steps: count)
        let b = max(1, seeds.count), t = seqLen, d = dim
        let target = truth(input)
        let n = seqLen - input.sourceLength
        var rngs = seeds.map { SplitMix64(seed: $0 &* 0x9E37_79B9 &+ UInt64(sampler.rawValue.count)) }
        if rngs.isEmpty { rngs = [SplitMix64(seed: 1)] }
        // Per row: when each position settles (fraction of the run), and a seed-dependent synonym swap.
        var settle = [[Double]](repeating: [], count: b)
        var finals = [[Int]](repeating: target, count: b)
        for r in 0..<b {
            settle[r] = (0..<n).map { _ in 0.25 + 0.7 * rngs[r].nextDouble() }
            for p in 0..<n where finals[r][p] > 3 && rngs[r].nextDouble() < 0.07 {
                finals[r][p] = 4 + Int(rngs[r].next() % UInt64(DemoExplorerBackend.defaultWords.count))
            }
        }
        var current = [[Int]](repeating: first > 0 ? sourceCopy(input) : [Int](repeating: 1, count: n), count: b)
        for i in first..<count {
            if isCancelled() { return }
            let tt = count == 1 ? 0 : Int((Double(count - 1 - i) / Double(count - 1) * Double(diffusionSteps - 1)).rounded())
            let prevT = count == 1 ? 0 : Int((Double(count - i) / Double(count - 1) * Double(diffusionSteps - 1)).rounded())
            let ab = alphaBar(tt)
            _ = prevT
            let nextT = count == 1 ? -1 : Int((Double(count - 2 - i) / Double(count - 1) * Double(diffusionSteps - 1)).rounded())
            let abPrev = nextT < 0 ? 1.0 : alphaBar(nextT)
            let beta = min(0.999, max(1e-6, 1 - ab / max(abPrev, 1e-9)))
            let progress = Double(i + 1) / Double(count)
            var xt = [Float](repeating: 0, count: b * t * d)
            var x0 = [Float](repeating: 0, count: b * t * d)
            var rounded = [Int32](repeating: 0, count: b * t)
            var margin = [Float](repeating: 0, count: b * t)
            var decoded = [Int32](repeating: 0, count: b * t)
            for r in 0..<b {
                for p in 0..<t {
                    let id: Int
                    if p < input.sourceLength {
                        id = input.ids[p]
                    } else {
                        let q = p - input.sourceLength
                        if progress >= settle[r][q] {
                            id = finals[r][q]
                        } else if rngs[r].nextDouble() < 0.35 * (1 - progress) + 0.03 || current[r][q] == 1 {
                            id = 4 + Int(rngs[r].next() % UInt64(vocabulary.count - 4))
                        } else {
                            id = current[r][q]
                        }
                        current[r][q] = id
                    }
                    let noise = Float((1 - progress) * 1.5)
                    for k in 0..<d {
                        let e = embeddings[id * d + k]
                        let o = ((r * t + p) * d + k)
                        x0[o] = e + noise * Float(rngs[r].nextGaussian()) * 0.3
                        xt[o] = Float(ab.squareRoot()) * e + Float((1 - ab).squareRoot()) * Float(rngs[r].nextGaussian())
                    }
                    rounded[r * t + p] = Int32(id)
                    decoded[r * t + p] = Int32(id)
                    margin[r * t + p] = Float(progress * 1.8) * Float(0.5 + rngs[r].nextDouble())
                }
            }
            onFrame(DiffusionFrame(index: i, count: count, t: tt, diffusionSteps: diffusionSteps,
                                   noise: NoiseLevel(beta: beta, alphaBar: ab), batch: b, seqLen: t, dim: d,
                                   xt: xt, x0: x0, rounded: rounded, margin: margin, decoded: decoded))
            onStep?()
        }
    }

    /// The demo's fork: the seed's run replayed (it is deterministic per seed), frames from `fork.step` on,
    /// with the pinned positions showing their tokens (and, from the next step, their modernised neighbours).
    public func fork(_ input: PreparedInput, seed: UInt64, sampler: SamplerKind, steps: Int, startFraction: Double = 1,
                     from fork: ForkSpec,
                     isCancelled: @escaping @Sendable () -> Bool, onFrame: @escaping @Sendable (DiffusionFrame) -> Void) throws {
        try sample(input, seeds: [seed], sampler: sampler, steps: steps, startFraction: startFraction, isCancelled: isCancelled) { f in
            guard f.index >= fork.step else { return }
            var f = f
            for (row, id) in fork.pins where row < f.rounded.count {
                f.rounded[row] = Int32(id)
                f.decoded[row] = Int32(id)
            }
            onFrame(f)
        }
    }

    /// q(x_t | x₀) rounded: each id survives with probability ≈ ᾱ (a seeded coin), else a random word.
    public func forwardRound(_ ids: [Int], alphaBar: Double, seed: UInt64) -> [Int] {
        var rng = SplitMix64(seed: seed)
        return ids.map { rng.nextDouble() < alphaBar ? $0 : 4 + Int(rng.next() % UInt64(vocabulary.count - 4)) }
    }

    /// The id of a vocabulary word.
    public func tokenID(_ word: String) -> Int? { index[word.lowercased()] }

    /// Brute-force nearest embeddings by squared distance.
    public func neighbours(of vector: [Float], k: Int) -> [Neighbour] {
        guard vector.count == dim else { return [] }
        var all: [Neighbour] = []
        all.reserveCapacity(vocabulary.count)
        for i in 0..<vocabulary.count {
            var s: Float = 0
            for j in 0..<dim { let dd = embeddings[i * dim + j] - vector[j]; s += dd * dd }
            all.append(Neighbour(id: i, distance: s))
        }
        all.sort { $0.distance < $1.distance || ($0.distance == $1.distance && $0.id < $1.id) }
        return Array(all.prefix(max(0, k)))
    }

    /// A simple smoothed sentence BLEU-4 (stand-in for NLTK method4).
    public func bleu(hypothesis: String, reference: String) -> Double {
        let h = hypothesis.split(separator: " ").map(String.init)
        let r = reference.split(separator: " ").map(String.init)
        guard !h.isEmpty, !r.isEmpty else { return 0 }
        var logSum = 0.0
        for n in 1...4 {
            let hg = ngrams(h, n), rg = ngrams(r, n)
            var match = 0, total = 0
            for (g, c) in hg { total += c; match += min(c, rg[g] ?? 0) }
            let p = total == 0 ? 0 : (Double(match) + 0.1) / (Double(total) + 0.1)
            logSum += log(max(p, 1e-9)) / 4
        }
        let bp = h.count >= r.count ? 1 : exp(1 - Double(r.count) / Double(h.count))
        return bp * exp(logSum)
    }

    /// Self-BLEU, distinct 4-grams and the MBR pick (highest mean BLEU against the others).
    public func diversity(_ sentences: [String]) -> (selfBLEU: Double, div4: Double, mbrIndex: Int) {
        guard sentences.count >= 2 else { return (0, 1, 0) }
        var scores = [Double](repeating: 0, count: sentences.count)
        var total = 0.0, pairs = 0
        for i in sentences.indices {
            for j in sentences.indices where i != j {
                let b = bleu(hypothesis: sentences[i], reference: sentences[j])
                scores[i] += b
                total += b
                pairs += 1
            }
        }
        var distinct = Set<[String]>(), all = 0
        for s in sentences {
            let w = s.split(separator: " ").map(String.init)
            if w.count >= 4 { for i in 0...(w.count - 4) { distinct.insert(Array(w[i..<i + 4])); all += 1 } }
        }
        let mbr = scores.indices.max(by: { scores[$0] < scores[$1] }) ?? 0
        return (total / Double(max(1, pairs)), all == 0 ? 0 : Double(distinct.count) / Double(all), mbr)
    }

    private func ngrams(_ w: [String], _ n: Int) -> [[String]: Int] {
        var out: [[String]: Int] = [:]
        guard w.count >= n else { return out }
        for i in 0...(w.count - n) { out[Array(w[i..<i + n]), default: 0] += 1 }
        return out
    }

    private func log(_ x: Double) -> Double {
        // Natural log without Foundation: reduce to [1,2) and use atanh series.
        guard x > 0 else { return -.infinity }
        var m = x, e = 0.0
        while m >= 2 { m /= 2; e += 1 }
        while m < 1 { m *= 2; e -= 1 }
        let y = (m - 1) / (m + 1), y2 = y * y
        var term = y, sum = 0.0, k = 1.0
        for _ in 0..<30 { sum += term / k; term *= y2; k += 2 }
        return 2 * sum + e * 0.693_147_180_559_945_3
    }

    private func exp(_ x: Double) -> Double {
        if x < -700 { return 0 }
        let n = (x / 0.693_147_180_559_945_3).rounded(.down)
        let r = x - n * 0.693_147_180_559_945_3
        var term = 1.0, sum = 1.0
        for i in 1..<25 { term *= r / Double(i); sum += term }
        var out = sum
        if n > 0 { for _ in 0..<Int(n) { out *= 2 } } else { for _ in 0..<Int(-n) { out /= 2 } }
        return out
    }
}

/// A tiny deterministic random generator (SplitMix64).
public struct SplitMix64: Sendable {
    private var state: UInt64
    /// Seeds the generator.
    public init(seed: UInt64) { state = seed }
    /// Next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    public mutating func nextDouble() -> Double { Double(next() >> 11) / Double(1 << 53) }
    /// Approximately standard normal (sum of uniforms).
    public mutating func nextGaussian() -> Double {
        var s = 0.0
        for _ in 0..<6 { s += nextDouble() }
        return (s - 3) * 1.414_213_562
    }
}
