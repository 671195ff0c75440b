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
    private let chunk = 1024

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

    /// Vocabulary chunks are split between the cores (each GEMM single-threaded, every worker keeps
    /// its own running best per row), then merged by (value, id): the result is exactly the sequential
    /// scan's — lowest id on ties — whatever the number of workers.
    private func scanChunks(rows: Int, _ body: (_ worker: Int, _ start: Int, _ n: Int, _ tmp: UnsafeMutablePointer<Float>) -> Void) {
        let chunks = (V + chunk - 1) / chunk
        let workers = max(1, min(Kernels.workerCount, chunks))
        let tmp = FloatBuffer(count: workers * rows * chunk)
        parallelGEMMs(chunks, maxWorkers: workers, work: rows * V * D) { w, lo, hi in
            for c in lo..<hi {
                let start = c * chunk
                body(w, start, min(chunk, V - start), tmp.ptr + w * rows * chunk)
            }
        }
    }

    /// For each of `rows` vectors (rows, D): the nearest embedding id and the margin
    /// (2nd-nearest minus nearest squared distance), distances as the official
    /// ‖E‖² + ‖v‖² − 2E·v clamped at 0.
    func nearest(_ x: UnsafePointer<Float>, rows: Int, ids: UnsafeMutablePointer<Int32>, margins: UnsafeMutablePointer<Float>) {
        let W = max(1, Kernels.workerCount)
        let best = FloatBuffer(count: W * rows), second = FloatBuffer(count: W * rows)
        best.ptr.update(repeating: .infinity, count: W * rows); second.ptr.update(repeating: .infinity, count: W * rows)
        let arg = UnsafeMutablePointer<Int32>.allocate(capacity: W * rows)
        arg.initialize(repeating: Int32.max, count: W * rows)
        defer { arg.deallocate() }
        var xnorm = [Float](repeating: 0, count: rows)
        for r in 0..<rows {
            var s: Float = 0
            for j in 0..<D { s += x[r * D + j] * x[r * D + j] }
            xnorm[r] = s
        }
        xnorm.withUnsafeBufferPointer { xnP in
            scanChunks(rows: rows) { w, start, n, tmp in
                BLAS.gemm(transB: true, m: rows, n: n, k: D, a: x, lda: D, b: table.ptr + start * D, ldb: D, c: tmp, ldc: n)
                let nr = norms.ptr + start
                let bestP = best.ptr + w * rows, secP = second.ptr + w * rows, argP = arg + w * rows
                for r in 0..<rows {
                    let row = tmp + r * n
                    var b1 = bestP[r], b2 = secP[r], a = argP[r]
                    let xn = xnP[r]
                    // Four distances at a time (the same float operations as the scalar formula); only a
                    // group with a lane below the current 2nd-best goes through the sequential update.
                    let xv = FVec(repeating: xn), zero = FVec(repeating: 0)
                    let rowRaw = UnsafeRawPointer(row), nrRaw = UnsafeRawPointer(nr)
                    var k = 0
                    while k + lanes <= n {
                        let rv = rowRaw.loadUnaligned(fromByteOffset: k * 4, as: FVec.self)
                        let nv = nrRaw.loadUnaligned(fromByteOffset: k * 4, as: FVec.self)
                        let d = pointwiseMax((nv + xv) - 2 * rv, zero)
                        if any(d .< FVec(repeating: b2)) {
                            for l in 0..<lanes {
                                let dl = d[l]
                                if dl < b1 { b2 = b1; b1 = dl; a = Int32(start + k + l) } else if dl < b2 { b2 = dl }
                            }
                        }
                        k += lanes
                    }
                    while k < n {
                        let d = max((nr[k] + xn) - 2 * row[k], 0)
                        if d < b1 { b2 = b1; b1 = d; a = Int32(start + k) } else if d < b2 { b2 = d }
                        k += 1
                    }
                    bestP[r] = b1; secP[r] = b2; argP[r] = a
                }
            }
        }
        for r in 0..<rows {
            var b1 = best.ptr[r], b2 = second.ptr[r], a = arg[r]
            for w in 1..<W {
                let c1 = best.ptr[w * rows + r], c2 = second.ptr[w * rows + r], ca = arg[w * rows + r]
                if c1 < b1 || (c1 == b1 && ca < a) {
                    b2 = min(b1, c2); b1 = c1; a = ca
                } else {
                    b2 = min(b2, c1)
                }
            }
            ids[r] = a == Int32.max ? 0 : a; margins[r] = b2 - b1
        }
    }

    /// argmax_k (x·E_kᵀ + b_k) for each row (official `get_logits` + topk(1)).
    func argmaxLogits(_ x: UnsafePointer<Float>, rows: Int, ids: UnsafeMutablePointer<Int32>) {
        let W = max(1, Kernels.workerCount)
        let best = FloatBuffer(count: W * rows)
        best.ptr.update(repeating: -.infinity, count: W * rows)
        let arg = UnsafeMutablePointer<Int32>.allocate(capacity: W * rows)
        arg.initialize(repeating: Int32.max, count: W * rows)
        defer { arg.deallocate() }
        scanChunks(rows: rows) { w, start, n, tmp in
            for r in 0..<rows { (tmp + r * n).update(from: bias.ptr + start, count: n) }
            BLAS.gemm(transB: true, m: rows, n: n, k: D, a: x, lda: D, b: table.ptr + start * D, ldb: D, beta: 1, c: tmp, ldc: n)
            let bestP = best.ptr + w * rows, argP = arg + w * rows
            for r in 0..<rows {
                let row = tmp + r * n
                var b = bestP[r], a = argP[r]
                let raw = UnsafeRawPointer(row)
                var k = 0
                while k + lanes <= n {
                    let v = raw.loadUnaligned(fromByteOffset: k * 4, as: FVec.self)
                    if any(v .> FVec(repeating: b)) {
                        for l in 0..<lanes where v[l] > b { b = v[l]; a = Int32(start + k + l) }
                    }
                    k += lanes
                }
                while k < n { if row[k] > b { b = row[k]; a = Int32(start + k) }; k += 1 }
                bestP[r] = b; argP[r] = a
            }
        }
        for r in 0..<rows {
            var b = best.ptr[r], a = arg[r]
            for w in 1..<W {
                let c = best.ptr[w * rows + r], ca = arg[w * rows + r]
                if c > b || (c == b && ca < a) { b = c; a = ca }
            }
            ids[r] = a == Int32.max ? 0 : a
        }
    }

    /// The k embeddings nearest to `v` (D floats), nearest first.
    func neighbours(of v: [Float], k: Int) -> [Neighbour] {
        guard v.count == D, k > 0 else { return [] }
        var vn: Float = 0
        for x in v { vn += x * x }
        var heap: [(Float, Int)] = []
        heap.reserveCapacity(k + 1)
        let dots = FloatBuffer(count: V)
        v.withUnsafeBufferPointer { vp in
            if let base = vp.baseAddress {
                BLAS.gemm(transB: true, m: 1, n: V, k: D, a: base, lda: D, b: table.ptr, ldb: D, c: dots.ptr, ldc: V)
            }
        }
        for id in 0..<V {
            let d = max(norms.ptr[id] + vn - 2 * dots.ptr[id], 0)
            if heap.count < k || d < heap[heap.count - 1].0 {
                var i = heap.count
                heap.append((d, id))
                while i > 0 && heap[i - 1].0 > d { heap.swapAt(i, i - 1); i -= 1 }
                if heap.count > k { heap.removeLast() }
            }
        }
        return heap.map { Neighbour(id: $0.1, distance: $0.0) }
    }
}
