import Testing
@testable import DiffuSeqCore

/// Runs `options` (10 steps, frames decoded) on rows with seeds 3 and 4, then forks it with no pins at steps 1, 4
/// and 9 (x_t and the previous frame, as the explorer does) and expects every forked frame and the final sample to
/// equal the original run's bit for bit. `label` names the case in failures.
func expectForksReproduce(_ s: DiffusionSampler, ids: [Int], mask: [Int], options o: SamplerOptions, _ label: String,
                          sourceLocation: SourceLocation = #_sourceLocation) throws {
    var frames: [DiffusionFrame] = []
    let full = try s.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o, onFrame: { frames.append($0) })
    for k in [1, 4, 9] {
        var forked: [DiffusionFrame] = []
        let f = try s.run(ids: ids, mask: mask, batch: 2, seeds: [3, 4], options: o,
                          start: SamplerStart(step: k, xt: frames[k].xt, previous: frames[k - 1]), onFrame: { forked.append($0) })
        #expect(forked.map(\.index) == Array(k..<o.steps), sourceLocation: sourceLocation)
        #expect(f.sample == full.sample && f.tokens == full.tokens, "\(label) fork at \(k): final x", sourceLocation: sourceLocation)
        for (a, b) in zip(forked, frames[k...]) {
            #expect(a.xt == b.xt && a.x0 == b.x0 && a.rounded == b.rounded && a.decoded == b.decoded,
                    "\(label) fork at \(k) step \(a.index)", sourceLocation: sourceLocation)
        }
    }
}
