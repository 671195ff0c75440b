// Derived view data (decoded sentences, nearest neighbours, BLEU, diversity) as an effect: `update` and
// `view` never call the engine for them. `pendingDerivations` (pure) lists what the current screen needs
// and is missing; the explorer's one interpreter (`ExplorerDriver`) computes it with `computeDerivations`
// and hands the result back as `ExplorerMessage.derived`, which `update` merges into the caches.
import DiffuSeqCore

/// One decoded sentence to compute: the target ids of `row` at frame `step`.
public struct SentenceJob: Equatable, Sendable {
    /// Frame index and batch row.
    public var step: Int, row: Int
    /// The ids to decode (the target part of the frame's read-out).
    public var ids: [Int]
}

/// One nearest-neighbour list to compute.
public struct NeighbourJob: Equatable, Sendable {
    /// Where it is cached.
    public var key: NeighbourKey
    /// (D) the vector (x̂₀ of the position).
    public var vector: [Float]
}

/// A companion run's frame to decode (and score against the reference).
public struct CompanionJob: Equatable, Sendable {
    /// The companion's run id and frame index.
    public var key: CompanionKey
    /// Target ids of the frame's read-out.
    public var ids: [Int]
    /// Whether BLEU against the reference is wanted too.
    public var bleu: Bool
}

/// A forward-view computation.
public struct ForwardJob: Equatable, Sendable {
    /// Frame index, reference target ids, ᾱ_t of the frame and the seed of the noise.
    public var step: Int, ids: [Int], alphaBar: Double, seed: UInt64
}

/// A frame of a companion run.
public struct CompanionKey: Hashable, Sendable {
    /// Run id and frame index.
    public var runID: Int, frame: Int
}

/// What the screen needs and the caches lack. Sentences are listed first: BLEU and diversity use them.
public struct DerivedRequest: Equatable, Sendable {
    /// The run the data belongs to (results of an older run are dropped).
    public var runID: Int
    /// Sentences to decode.
    public var sentences: [SentenceJob] = []
    /// Sentences already decoded that BLEU or diversity need, by (step, row).
    public var knownSentences: [NeighbourKey: String] = [:]
    /// Neighbour lists and their length.
    public var neighbours: [NeighbourJob] = []
    /// Number of neighbours per list.
    public var neighbourCount: Int = 8
    /// BLEU of the sentence at (step, row) (key position −1) against `reference`.
    public var bleu: [NeighbourKey] = []
    /// The reference BLEU is computed against.
    public var reference: String = ""
    /// Companion frames to decode.
    public var companions: [CompanionJob] = []
    /// The forward view at frame `step`: the reference ids noised to ᾱ and rounded with noise from `seed`.
    public var forward: ForwardJob?
    /// Diversity among the sentences of these rows at frame `step`.
    public var diversity: (step: Int, rows: [Int])? {
        get { diversityStep.map { ($0, diversityRows) } }
        set { diversityStep = newValue?.step; diversityRows = newValue?.rows ?? [] }
    }
    var diversityStep: Int?
    var diversityRows: [Int] = []

    /// Whether nothing is requested.
    public var isEmpty: Bool {
        sentences.isEmpty && neighbours.isEmpty && bleu.isEmpty && diversityStep == nil && companions.isEmpty && forward == nil
    }
}

/// The computed data, merged into the model's caches by `update(.derived)`.
public struct DerivedResult: Sendable {
    /// The run it belongs to.
    public var runID: Int
    /// Sentences by (step, row) (position −1).
    public var sentences: [NeighbourKey: String] = [:]
    /// Neighbour lists.
    public var neighbours: [NeighbourKey: [Neighbour]] = [:]
    /// BLEU values.
    public var bleu: [NeighbourKey: Double] = [:]
    /// Diversity of the requested rows.
    public var diversity: DiversityStats?
    /// The forward view's ids by frame index.
    public var forward: [Int: [Int]] = [:]
    /// Companion sentences and BLEU.
    public var companionSentences: [CompanionKey: String] = [:], companionBLEU: [CompanionKey: Double] = [:]

    /// Creates a result.
    public init(runID: Int, sentences: [NeighbourKey: String] = [:], neighbours: [NeighbourKey: [Neighbour]] = [:],
                bleu: [NeighbourKey: Double] = [:], diversity: DiversityStats? = nil) {
        self.runID = runID
        self.sentences = sentences
        self.neighbours = neighbours
        self.bleu = bleu
        self.diversity = diversity
    }
}

/// What the current screen needs that the caches lack (pure; nil when nothing is missing).
public func pendingDerivations(_ m: ExplorerModel) -> DerivedRequest? {
    guard m.frames.indices.contains(m.step) else { return nil }
    var req = DerivedRequest(runID: m.runID, neighbourCount: m.neighbourCount)
    let f = m.frames[m.step]
    if m.sentenceCache[m.step] == nil {
        for r in 0..<f.batch { req.sentences.append(SentenceJob(step: m.step, row: r, ids: m.targetIDs(step: m.step, row: r))) }
    }
    func need(_ step: Int, _ row: Int) {
        if let s = m.sentenceCache[step], s.indices.contains(row) {
            req.knownSentences[NeighbourKey(step: step, position: -1, row: row)] = s[row]
        } else if !req.sentences.contains(where: { $0.step == step && $0.row == row }) {
            req.sentences.append(SentenceJob(step: step, row: row, ids: m.targetIDs(step: step, row: row)))
        }
    }
    let row = m.primaryRow
    if m.targetRange.contains(m.selected), row < f.batch {
        let key = NeighbourKey(step: m.step, position: m.selected, row: row)
        if m.neighbourCache[key] == nil {
            let v = ExplorerModel.vector(f.x0, frame: f, row: row, position: m.selected)
            if !v.isEmpty { req.neighbours.append(NeighbourJob(key: key, vector: v)) }
        }
    }
    if m.mode == .map, m.frames.indices.contains(m.mapStep), m.targetRange.contains(m.mapPosition) {
        let mf = m.frames[m.mapStep]
        let key = NeighbourKey(step: m.mapStep, position: m.mapPosition, row: row)
        if row < mf.batch, m.neighbourCache[key] == nil, !req.neighbours.contains(where: { $0.key == key }) {
            let v = ExplorerModel.vector(mf.x0, frame: mf, row: row, position: m.mapPosition)
            if !v.isEmpty { req.neighbours.append(NeighbourJob(key: key, vector: v)) }
        }
    }
    if let reference = m.reference, !reference.isEmpty {
        let key = NeighbourKey(step: m.step, position: -1, row: row)
        if m.bleuCache[key] == nil {
            req.bleu.append(key)
            req.reference = reference
            need(m.step, row)
        }
    }
    if m.forwardOpen, m.forwardCache[m.step] == nil, let ids = m.input?.referenceIDs, !ids.isEmpty {
        req.forward = ForwardJob(step: m.step, ids: ids, alphaBar: f.noise.alphaBar, seed: m.primarySeed ?? 0)
    }
    for c in m.companions {
        guard let i = m.companionFrame(c), c.sentences[i] == nil else { continue }
        let f = c.frames[i], t = f.seqLen, lo = min(m.sourceLength, t)
        let ids = f.decoded.count >= t ? f.decoded[lo..<t].map { Int($0) } : []
        req.companions.append(CompanionJob(key: CompanionKey(runID: c.runID, frame: i), ids: ids, bleu: !(m.reference ?? "").isEmpty))
        req.reference = m.reference ?? ""
    }
    let rows = m.visibleRows
    if m.step == m.frames.count - 1, m.runState == .done, rows.count >= 2, m.diversity?.rows != rows {
        req.diversity = (m.step, rows)
        for r in rows { need(m.step, r) }
    }
    return req.isEmpty ? nil : req
}

/// Performs a derivation request on the engine (the effect's work; runs on the interpreter's thread).
public func computeDerivations(_ req: DerivedRequest, backend: any ExplorerBackend) -> DerivedResult {
    var out = DerivedResult(runID: req.runID)
    var sentences = req.knownSentences
    for job in req.sentences {
        let key = NeighbourKey(step: job.step, position: -1, row: job.row)
        let s = backend.decode(job.ids)
        sentences[key] = s
        out.sentences[key] = s
    }
    for job in req.neighbours { out.neighbours[job.key] = backend.neighbours(of: job.vector, k: req.neighbourCount) }
    for key in req.bleu {
        out.bleu[key] = backend.bleu(hypothesis: sentences[key] ?? "", reference: req.reference)
    }
    if let j = req.forward { out.forward[j.step] = backend.forwardRound(j.ids, alphaBar: j.alphaBar, seed: j.seed) }
    for job in req.companions {
        let text = backend.decode(job.ids)
        out.companionSentences[job.key] = text
        if job.bleu { out.companionBLEU[job.key] = backend.bleu(hypothesis: text, reference: req.reference) }
    }
    if let (step, rows) = req.diversity.map({ ($0.step, $0.rows) }) {
        let texts = rows.map { sentences[NeighbourKey(step: step, position: -1, row: $0)] ?? "" }
        let d = backend.diversity(texts)
        let pick = rows.indices.contains(d.mbrIndex) ? rows[d.mbrIndex] : rows[0]
        out.diversity = DiversityStats(rows: rows, selfBLEU: d.selfBLEU, div4: d.div4, mbrRow: pick)
    }
    return out
}

/// Computes and merges what the current screen needs (the interpreter's step before `view`; tests call it too).
public func prepareForDraw(_ m: inout ExplorerModel) {
    // Two rounds at most: diversity of the last frame can become due once its sentences are known.
    for _ in 0..<3 {
        guard let req = pendingDerivations(m) else { return }
        _ = update(&m, .derived(computeDerivations(req, backend: m.backend)))
    }
}

extension ExplorerModel {
    /// The target ids of `row` at frame `step` (the read-out of the step's result).
    func targetIDs(step: Int, row: Int) -> [Int] {
        guard frames.indices.contains(step) else { return [] }
        let f = frames[step]
        let t = f.seqLen
        guard row < f.batch, f.decoded.count >= (row + 1) * t else { return [] }
        let lo = row * t + min(sourceLength, t)
        return f.decoded[lo..<(row + 1) * t].map { Int($0) }
    }

    /// Merges derived data of the current run into the caches.
    mutating func merge(_ d: DerivedResult) {
        guard d.runID == runID else { return }
        for (key, s) in d.sentences {
            var row = sentenceCache[key.step] ?? []
            if row.count <= key.row { row += [String](repeating: "", count: key.row + 1 - row.count) }
            row[key.row] = s
            sentenceCache[key.step] = row
        }
        for (k, v) in d.neighbours { neighbourCache[k] = v }
        for (k, v) in d.bleu { bleuCache[k] = v }
        if let div = d.diversity { diversity = div }
        for (k, v) in d.forward { forwardCache[k] = v }
        for (k, v) in d.companionSentences { if let i = companionIndex(runID: k.runID) { companions[i].sentences[k.frame] = v } }
        for (k, v) in d.companionBLEU { if let i = companionIndex(runID: k.runID) { companions[i].bleu[k.frame] = v } }
    }

    /// The frame of a companion shown beside the current step: a fork's from its step on, another
    /// sampler's at the nearest t (nil before a fork's step, or before its first frame).
    public func companionFrame(_ c: Companion) -> Int? {
        guard let f = currentFrame else { return nil }
        if case .fork(let s, _, _) = c.kind, f.index < s { return nil }
        return c.frameIndex(alignedTo: f.t)
    }
}
