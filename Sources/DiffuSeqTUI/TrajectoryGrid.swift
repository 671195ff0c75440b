// The trajectory of one batch row: for every target position and every step, the rounded token, when it
// last changed and its rounding margin. The explorer's map (`drawMap`) and `diffuseq trace --svg`
// (`TrajectorySVG`) both read it, so the picture and the screen agree.
import DiffuSeqCore

/// The state of one (position, step) cell, as the explorer colours tokens.
public enum CellState: Equatable, Sendable {
    /// The token changed at this step (or within the steps a map column summarises).
    case changed
    /// It changed recently (within `TrajectoryGrid.window` steps).
    case recent
    /// It has not changed for a while.
    case settled
    /// The token is `[PAD]`.
    case pad

    /// The colour role of the state (the token grid's colours).
    public var role: Role {
        switch self {
        case .changed: return .changing
        case .recent: return .settling
        case .settled: return .settled
        case .pad: return .quiet
        }
    }
}

/// The rounded tokens of one row over all steps, for the target positions.
public struct TrajectoryGrid: Sendable {
    /// The target positions (rows of the map), in order.
    public let positions: [Int]
    /// Number of steps received.
    public let steps: Int
    /// Steps since a change under which a token counts as recent (the explorer's: count / 20, at least 2).
    public let window: Int
    /// (steps, positions) rounded token ids.
    public let ids: [[Int32]]
    /// (steps, positions) the step at which each token last changed.
    public let lastChange: [[Int32]]
    /// (steps, positions) rounding margins.
    public let margins: [[Float]]
    /// `[PAD]`'s id.
    public let padID: Int
    /// Quartiles of the non-PAD margins of the run: the shade of a margin is its quartile, so the map shows
    /// where rounding was close within this run whatever the model's distance scale.
    public let marginQuartiles: [Float]

    /// Builds the grid of batch row `row` over `frames`, for `positions`; `expectedSteps` sets the recency
    /// window (the run's step count, even before every frame arrived).
    public init(frames: [DiffusionFrame], row: Int, positions: Range<Int>, padID: Int, expectedSteps: Int) {
        let ps = Array(positions)
        self.positions = ps
        self.padID = padID
        window = max(2, max(expectedSteps, frames.count) / 20)
        var ids: [[Int32]] = [], last: [[Int32]] = [], margins: [[Float]] = []
        ids.reserveCapacity(frames.count)
        for (i, f) in frames.enumerated() {
            let base = row * f.seqLen
            var rowIDs = [Int32](repeating: Int32(padID), count: ps.count)
            var rowLast = [Int32](repeating: Int32(i), count: ps.count)
            var rowMargin = [Float](repeating: 0, count: ps.count)
            for (k, p) in ps.enumerated() where row < f.batch && p < f.seqLen && base + p < f.rounded.count {
                rowIDs[k] = f.rounded[base + p]
                if base + p < f.margin.count { rowMargin[k] = f.margin[base + p] }
                if i > 0, ids[i - 1][k] == rowIDs[k] { rowLast[k] = last[i - 1][k] }
            }
            ids.append(rowIDs)
            last.append(rowLast)
            margins.append(rowMargin)
        }
        self.ids = ids
        self.lastChange = last
        self.margins = margins
        steps = frames.count
        var sample: [Float] = []
        let stride = max(1, frames.count * ps.count / 4096)
        var n = 0
        for i in ids.indices {
            for k in ps.indices where Int(ids[i][k]) != padID && margins[i][k].isFinite {
                if n % stride == 0 { sample.append(margins[i][k]) }
                n += 1
            }
        }
        sample.sort()
        marginQuartiles = sample.isEmpty ? [0, 0, 0] : [1, 2, 3].map { sample[min(sample.count - 1, sample.count * $0 / 4)] }
    }

    /// The state of position index `k` over the steps `range` (shown as one cell): the state at the range's
    /// last step, but `changed` when the token changed anywhere inside it.
    public func state(_ k: Int, steps range: Range<Int>) -> CellState {
        let hi = min(range.upperBound, steps) - 1
        guard hi >= 0, positions.indices.contains(k) else { return .pad }
        if Int(ids[hi][k]) == padID { return .pad }
        let changedAt = Int(lastChange[hi][k])
        if changedAt > 0 && changedAt >= range.lowerBound { return .changed }
        return hi - changedAt < window && changedAt > 0 ? .recent : .settled
    }

    /// The quartile (0–3) of a rounding margin within this run: 0 near a tie between two tokens, 3 clearly one token.
    public func marginLevel(_ margin: Float) -> Int {
        guard margin.isFinite else { return 0 }
        return marginQuartiles.filter { margin >= $0 }.count
    }

    /// The shade glyph of a margin's quartile: ░ (lowest quarter of the run) to █ (highest).
    public func shade(_ margin: Float) -> Character {
        let glyphs: [Character] = ["░", "▒", "▓", "█"]
        return glyphs[min(3, marginLevel(margin))]
    }
}
