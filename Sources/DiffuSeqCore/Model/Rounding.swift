import Foundation

/// Nearest-embedding rounding (official `denoised_fn_round`) and the `lm_head` read-out, as one
/// GEMM per vocabulary chunk with a fused row-argmin/argmax — no (V × B·T) distance matrix.
final class EmbeddingIndex: @unchecked Sendable {
    let V: Int, D: Int
    /// (V, D) the tied embedding (a copy, so sampling is unaffected by later training).
    let table: FloatBuffer
    /// (V) lm_head bias.
    let bias: FloatBuffer
    /// (V) ‖E_k‖².
    let norms: FloatBuffer
    private let chunk = 2048

    init(table: UnsafePointer<Float>, bias: UnsafePointer<Float>, V: Int, D: Int) {
        self.V = V; self.D = D
        self.table = FloatBuffer(count: V * D)
        self.table.ptr.update(from: table, count: V * D)
        self.bias = FloatBuffer(count: V)
        self.bias.ptr.update(from: bias, count: V)
        norms = FloatBuffer(count: V)
        for k in 0..<V {
            var s: Float = 0
            let r = table + k * D
            for j in 0..<D { s += r[j] * r[j] }
            norms.ptr[k] = s
        }
    }

    /// For each of `rows` vectors (rows, D): the nearest embedding id and the margin
    /// (2nd-nearest minus nearest squared distance), distances as the official
    /// ‖E‖² + ‖v‖² − 2E·v clamped at 0.
    func nearest(_ x: UnsafePointer<Float>, rows: Int, ids: UnsafeMutablePointer<Int32>, margins: UnsafeMutablePointer<Float>) {
        var best = [Float](repeating: .infinity, count: rows)
        var second = [Float](repeating: .infinity, count: rows)
        var arg = [Int32](repeating: 0, count: rows)
        var xnorm = [Float](repeating: 0, count: rows)
        for r in 0..<rows {
            var s: Float = 0
            for j in 0..<D { s += x[r * D + j] * x[r * D + j] }
            xnorm[r] = s
        }
        let tmp = FloatBuffer(count: rows * chunk)
        var start = 0
        while start < V {
            let n = min(chunk, V - start)
            BLAS.gemm(transB: true, m: rows, n: n, k: D, a: x, lda: D, b: table.ptr + start * D, ldb: D, c: tmp.ptr, ldc: n)
            let nr = norms.ptr + start
            best.withUnsafeMutableBufferPointer { bestP in
                second.withUnsafeMutableBufferPointer { secP in
                    arg.withUnsafeMutableBufferPointer { argP in
                        parallelRows(rows, minChunk: 16) { lo, hi in
                            for r in lo..<hi {
                                let row = tmp.ptr + r * n
                                var b1 = bestP[r], b2 = secP[r], a = argP[r]
                                let xn = xnorm[r]
                                for k in 0..<n {
                                    let d = max((nr[k] + xn) - 2 * row[k], 0)
                                    if d < b1 { b2 = b1; b1 = d; a = Int32(start + k) } else if d < b2 { b2 = d }
                                }
                                bestP[r] = b1; secP[r] = b2; argP[r] = a
                            }
                        }
                    }
                }
            }
            start += n
        }
        for r in 0..<rows { ids[r] = arg[r]; margins[r] = second[r] - best[r] }
    }

    /// argmax_k (x·E_kᵀ + b_k) for each row (official `get_logits` + topk(1)).
    func argmaxLogits(_ x: UnsafePointer<Float>, rows: Int, ids: UnsafeMutablePointer<Int32>) {
        var best = [Float](repeating: -.infinity, count: rows)
        var arg = [Int32](repeating: 0, count: rows)
        let tmp = FloatBuffer(count: rows * chunk)
        var start = 0
        while start < V {
            let n = min(chunk, V - start)
            for r in 0..<rows { (tmp.ptr + r * n).update(from: bias.ptr + start, count: n) }
            BLAS.gemm(transB: true, m: rows, n: n, k: D, a: x, lda: D, b: table.ptr + start * D, ldb: D, beta: 1, c: tmp.ptr, ldc: n)
            best.withUnsafeMutableBufferPointer { bestP in
                arg.withUnsafeMutableBufferPointer { argP in
                    parallelRows(rows, minChunk: 16) { lo, hi in
                        for r in lo..<hi {
                            let row = tmp.ptr + r * n
                            var b = bestP[r], a = argP[r]
                            for k in 0..<n where row[k] > b { b = row[k]; a = Int32(start + k) }
                            bestP[r] = b; argP[r] = a
                        }
                    }
                }
            }
            start += n
        }
        for r in 0..<rows { ids[r] = arg[r] }
    }

    /// The k embeddings nearest to `v` (D floats), nearest first.
    func neighbours(of v: [Float], k: Int) -> [Neighbour] {
        guard v.count == D, k > 0 else { return [] }
        var vn: Float = 0
        for x in v { vn += x * x }
        var heap: [(Float, Int)] = []
        heap.reserveCapacity(k + 1)
        v.withUnsafeBufferPointer { vp in
            for id in 0..<V {
                let row = table.ptr + id * D
                var dot: Float = 0
                for j in 0..<D { dot += row[j] * vp[j] }
                let d = max(norms.ptr[id] + vn - 2 * dot, 0)
                if heap.count < k || d < heap[heap.count - 1].0 {
                    var i = heap.count
                    heap.append((d, id))
                    while i > 0 && heap[i - 1].0 > d { heap.swapAt(i, i - 1); i -= 1 }
                    if heap.count > k { heap.removeLast() }
                }
            }
        }
        return heap.map { Neighbour(id: $0.1, distance: $0.0) }
    }
}
