import CDNNL
import CKernels
import Foundation

/// The weights of a `TransformerNetModel` as one `MatMul` backend takes them, for the model's one forward
/// and one backward pass.
///
/// - OpenBLAS and oneDNN fp32: views into the model's fp32 parameters (no copy).
/// - bf16, for sampling: the same views plus a bf16 copy of every Linear weight, made once when the sampler
///   is made (`refresh()`). Biases, LayerNorms and the embeddings stay fp32.
/// - bf16, for training (`bf16Copies: false`): no copies; each weight is converted as it enters a product
///   (the same bf16 values a copy would hold, twice per step instead of once). A copy per step would add half
///   the Linear weights' bytes to the step's memory (170 MB for the base model) while one more conversion
///   costs well under 1 % of a step; issue 14 asks both for a copy made once per step and for no growth in
///   memory, and memory wins (README, "Matrix products").
/// - Fused query/key/value (`fuseQKV`): each layer's three projections stacked into one (3C × C) product,
///   a copy made by `refresh()`. The sampler asks for it on OpenBLAS when a model's batch-1 projections are
///   small (`DiffusionSampler.fusesProjections`); training keeps three products (backward needs the three
///   gradients), and so do larger models (the copy would cost 3·C²·L floats).
///
/// The layer code does not branch on any of this: it runs the products of `qkv` (one or three) into the
/// layout `qkvLayout` gives, and every product goes through `mm`.
///
/// Sendable (unchecked): `refresh()` writes the copies only between passes (the trainer's step, or the
/// sampler's init before it is shared); passes only read.
final class PreparedWeights: @unchecked Sendable {
    /// One Linear: its weight as the backend takes it, and its fp32 bias.
    struct Linear {
        let weight: WeightRef
        let bias: CP
    }

    /// One encoder layer's products.
    struct Layer {
        /// The query/key/value products: one stacked (3C outputs) or three (C each), in that order.
        let qkv: [Linear]
        let attentionOutput: Linear, intermediate: Linear, output: Linear
    }

    /// The backend every product of the passes goes through.
    let mm: any MatMul
    let timeEmbedIn: Linear, timeEmbedOut: Linear
    let inputUp: (first: Linear, second: Linear)?
    let layers: [Layer]
    let outputDown: (first: Linear, second: Linear)?
    /// `self_cond_proj` (self-conditioned models only).
    let selfCondition: Linear?
    /// Whether each layer's query/key/value weights are stacked into one product.
    let fusedQKV: Bool

    /// The model whose parameters the views point into. Held strongly (the views must not outlive the buffer),
    /// except by the model's own `referenceWeights`, which would otherwise form a retain cycle (LeakSanitizer found
    /// every model leaking): there the model owns this object, so it always outlives it.
    private var model: TransformerNetModel { owner ?? borrowed }
    private let owner: TransformerNetModel?
    private unowned(unsafe) let borrowed: TransformerNetModel
    /// bf16 copies of the Linear weights, one block after another (`bf16Blocks`), or nil for fp32 backends.
    private let half: UnsafeMutablePointer<UInt16>?
    private let halfCount: Int
    /// (source in the parameters, offset in `half`, count) of each bf16 copy.
    private let bf16Blocks: [(source: Int, offset: Int, count: Int)]
    /// Stacked (3C, C) weights per layer (`fusedQKV`, unless packed: then only their panels are kept).
    private let stackedWeight: [FloatBuffer]
    /// Stacked (3C) biases per layer (`fusedQKV`).
    private let stackedBias: [FloatBuffer]
    /// The packed engine's panels (`dsq_pack`) of every Linear weight, and of each layer's stacked QKV weight.
    private let panels: [(linear: LinearParameters, panel: FloatBuffer)]
    private let qkvPanels: [FloatBuffer]

    /// Prepares `model`'s weights for `mm` and makes the copies: bf16 unless `bf16Copies` is false, stacked
    /// QKV with `fuseQKV`, packed panels for the packed engine (which always stacks QKV).
    /// `ownedByModel`: only for the model's own `referenceWeights` (the model is then not retained).
    init(model: TransformerNetModel, mm: any MatMul, fuseQKV: Bool = false, bf16Copies: Bool = true, ownedByModel: Bool = false) {
        owner = ownedByModel ? nil : model
        borrowed = model
        self.mm = mm
        let packs = mm.library == .packed, fuseQKV = fuseQKV || packs
        fusedQKV = fuseQKV
        let M = model.weights, C = model.config.width, L = model.config.layers
        // Every Linear weight the passes use, in parameter order; their bf16 copies are laid out the same way.
        var linears = [M.timeEmbedIn, M.timeEmbedOut]
        if let up = M.inputUp { linears += [up.first, up.second] }
        for l in M.layers { linears += [l.query, l.key, l.value, l.attentionOutput, l.intermediate, l.output] }
        if let down = M.outputDown { linears += [down.first, down.second] }
        if let sc = M.selfCondition { linears.append(sc) }
        var blocks: [(source: Int, offset: Int, count: Int)] = []
        var halfOffset: [ParameterID: Int] = [:]
        if mm.precision == .bf16 && bf16Copies {
            var off = 0
            for lin in linears {
                blocks.append((lin.weight.offset, off, lin.weight.count))
                halfOffset[lin.weight] = off
                off += (lin.weight.count + 31) / 32 * 32  // 64-byte aligned blocks
            }
            halfCount = off
            half = UnsafeMutablePointer<UInt16>.allocate(capacity: max(1, off))
        } else {
            halfCount = 0
            half = nil
        }
        bf16Blocks = blocks
        stackedWeight = fuseQKV && !packs ? (0..<L).map { _ in FloatBuffer(count: 3 * C * C) } : []
        stackedBias = fuseQKV ? (0..<L).map { _ in FloatBuffer(count: 3 * C) } : []
        var panels: [(linear: LinearParameters, panel: FloatBuffer)] = []
        if packs {
            for lin in linears where !M.layers.contains(where: { [$0.query, $0.key, $0.value].contains(lin) }) {
                panels.append((lin, FloatBuffer(count: dsq_packed_count(lin.outputs, lin.inputs))))
            }
        }
        self.panels = panels
        let panel = Dictionary(uniqueKeysWithValues: panels.map { ($0.linear.weight, $0.panel) })
        qkvPanels = packs ? (0..<L).map { _ in FloatBuffer(count: dsq_packed_count(3 * C, C)) } : []
        let params = model.params, half = self.half
        func prep(_ l: LinearParameters) -> Linear {
            let h = halfOffset[l.weight].flatMap { off in half.map { UnsafePointer($0 + off) } }
            return Linear(weight: WeightRef(f32: CP(params.ptr + l.weight.offset), bf16: h,
                                            packed: panel[l.weight].map { CP($0.ptr) }, outputs: l.outputs, inputs: l.inputs),
                          bias: CP(params.ptr + l.bias.offset))
        }
        timeEmbedIn = prep(M.timeEmbedIn)
        timeEmbedOut = prep(M.timeEmbedOut)
        inputUp = M.inputUp.map { (prep($0.first), prep($0.second)) }
        outputDown = M.outputDown.map { (prep($0.first), prep($0.second)) }
        selfCondition = M.selfCondition.map(prep)
        let (stackedWeight, stackedBias, qkvPanels) = (self.stackedWeight, self.stackedBias, self.qkvPanels)
        layers = M.layers.enumerated().map { l, layer in
            let qkv: [Linear]
            if fuseQKV {
                // The packed engine keeps only the panels of the stacked weight (`f32` is then never read).
                let w = packs ? CP(params.ptr + layer.query.weight.offset) : CP(stackedWeight[l].ptr)
                qkv = [Linear(weight: WeightRef(f32: w, bf16: nil, packed: packs ? CP(qkvPanels[l].ptr) : nil,
                                                outputs: 3 * C, inputs: C),
                              bias: CP(stackedBias[l].ptr))]
            } else {
                qkv = [prep(layer.query), prep(layer.key), prep(layer.value)]
            }
            return Layer(qkv: qkv, attentionOutput: prep(layer.attentionOutput), intermediate: prep(layer.intermediate),
                         output: prep(layer.output))
        }
        precondition(!(fuseQKV && mm.precision == .bf16), "stacked query/key/value weights are fp32 only")
        refresh()
    }

    deinit { half?.deallocate() }

    /// Re-makes the copies (bf16, stacked query/key/value, packed panels) from the model's current parameters.
    func refresh() {
        let params = model.params
        if let half {
            for b in bf16Blocks { dsq_f32_to_bf16(half + b.offset, params.ptr + b.source, b.count) }
        }
        for (l, panel) in panels { dsq_pack(panel.ptr, params.ptr + l.weight.offset, l.inputs, l.outputs, l.inputs) }
        guard fusedQKV else { return }
        let C = model.config.width
        // The packed engine stacks into a temporary and keeps the panels only.
        let temp = qkvPanels.isEmpty ? nil : FloatBuffer(count: 3 * C * C)
        for (l, layer) in model.weights.layers.enumerated() {
            let w = temp ?? stackedWeight[l]
            for (j, lin) in [layer.query, layer.key, layer.value].enumerated() {
                (w.ptr + j * C * C).update(from: params.ptr + lin.weight.offset, count: C * C)
                (stackedBias[l].ptr + j * C).update(from: params.ptr + lin.bias.offset, count: C)
            }
            if !qkvPanels.isEmpty { dsq_pack(qkvPanels[l].ptr, w.ptr, C, 3 * C, C) }
        }
    }

    /// Bytes of the copies (bf16 weights, stacked projections) this preparation holds.
    var copyBytes: Int {
        halfCount * 2 + (stackedWeight + stackedBias + qkvPanels + panels.map(\.panel)).reduce(0) { $0 + $1.count * 4 }
    }

    /// Where a layer's query, key and value projections go in its (B·T·3C)-float buffer: with one stacked
    /// product they are column blocks of one (B·T, 3C) matrix (row stride 3C); with three, three (B·T, C)
    /// matrices one after another (row stride C). Offsets in floats; `outputs[i]` is where product
    /// `qkv[i]` writes its (B·T, outputs) result.
    func qkvLayout(rows: Int) -> (q: Int, k: Int, v: Int, stride: Int, outputs: [Int]) {
        let C = model.config.width
        return fusedQKV ? (0, C, 2 * C, 3 * C, [0]) : (0, rows * C, 2 * rows * C, C, [0, rows * C, 2 * rows * C])
    }
}
