import Foundation
@testable import DiffuSeqCore

/// Golden tensors of `golden.safetensors` / `model.safetensors` (made by the official code).
final class Golden {
    private let tensors: [String: (dtype: String, shape: [Int], bytes: Data)]

    init(_ file: String) throws {
        let data = try Fixtures.data(file)
        let n = data.prefix(8).enumerated().reduce(0) { $0 | (Int($1.element) << (8 * $1.offset)) }
        let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + n))) as? [String: Any] ?? [:]
        var t: [String: (String, [Int], Data)] = [:]
        for (k, v) in header where k != "__metadata__" {
            guard let d = v as? [String: Any], let dt = d["dtype"] as? String, let sh = d["shape"] as? [Int],
                  let off = d["data_offsets"] as? [Int] else { continue }
            t[k] = (dt, sh, data.subdata(in: (8 + n + off[0])..<(8 + n + off[1])))
        }
        tensors = t
    }

    var names: [String] { Array(tensors.keys) }
    func shape(_ k: String) -> [Int] { tensors[k]?.shape ?? [] }

    func f32(_ k: String) -> [Float] {
        guard let t = tensors[k] else { return [] }
        if t.dtype == "F64" { return f64(k).map { Float($0) } }
        return t.bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }
    func f64(_ k: String) -> [Double] {
        guard let t = tensors[k] else { return [] }
        return t.bytes.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
    }
    func i64(_ k: String) -> [Int] {
        guard let t = tensors[k] else { return [] }
        return t.bytes.withUnsafeBytes { $0.bindMemory(to: Int64.self).map { Int($0) } }
    }
}

/// Largest absolute difference (and its index).
func maxAbsDiff(_ a: [Float], _ b: [Float]) -> (Float, Int) {
    guard a.count == b.count else { return (.infinity, -1) }
    var m: Float = 0, at = 0
    for i in 0..<a.count where abs(a[i] - b[i]) > m || (a[i] - b[i]).isNaN { m = abs(a[i] - b[i]); at = i }
    return (m, at)
}

/// The tiny fixture model's configuration (README "Configuration").
let tinyConfig = ModelConfig(vocabSize: 97, hiddenDim: 16, hiddenTDim: 16, width: 32, layers: 2, heads: 2,
                             ffn: 64, maxPositions: 512, seqLen: 16, dropout: 0, attentionDropout: 0,
                             diffusionSteps: 50)

/// The tiny official model, weights from `model.safetensors` with the tied matrix taken from
/// `lm_head.weight` as the official `load_state_dict` does (spec §1.7).
func loadTinyModel() throws -> TransformerNetModel {
    let g = try Golden("model.safetensors")
    let m = try TransformerNetModel(config: tinyConfig)
    for e in m.layout.entries {
        let key = e.key == "word_embedding.weight" ? "lm_head.weight" : e.key
        let v = g.f32(key)
        precondition(v.count == e.count, "\(key): \(v.count) vs \(e.count)")
        (m.params.ptr + e.offset).update(from: v, count: e.count)
    }
    return m
}
