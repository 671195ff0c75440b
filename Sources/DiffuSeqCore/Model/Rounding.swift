import CKernels
import Foundation

/// Nearest-embedding rounding (official `denoised_fn_round`) and the `lm_head` read-out, as one
/// GEMM per vocabulary chunk with a fused row-argmin/argmax — no (V × B·T) distance matrix.
///
/// Sendable (unchecked): the table, bias and norms are copied in init and never written again; every scan
/// allocates its own scratch, so concurrent scans (the explorer's k-NN during a run) only share reads.
final class EmbeddingIndex: @unchecked Sendable {
    let V: Int, D: Int
    /// (V, D) the tied embedding (a copy, so sampling is unaffected by later training).
    let table: FloatBuffer
    /// (V) lm_head bias.
    let bias: FloatBuffer
    /// (V) ‖E_k‖².
    let norms: FloatBuffer
    // Columns per product (a chunk's scores stay in cache while they are scanned): 1,024 when the cores
    // split the chunks, 8,192 when OpenBLAS threads each product (latency profile), 512 on the packed
    // engine (its workers claim chunks one at a time). See `scan`.

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

    /// Vocabulary chunks are split between `workers` threads (each GEMM single-threaded, every worker keeps
    /// its own running best per row), then merged by (value, id): the result is exactly the sequential
    /// scan's — lowest id on ties — whatever the number of workers. With the latency profile there is one
    /// worker and OpenBLAS threads each chunk's product itself.
    private func scanChunks(rows: Int, workers W: Int, chunk: Int,
                            _ body: (_ worker: Int, _ start: Int, _ n: Int, _ tmp: UnsafeMutablePointer<Float>) -> Void) {
        let chunks = (V + chunk - 1) / chunk
        let workers = max(1, min(W, chunks))
        let tmp = FloatBuffer(count: workers * rows * chunk)
        defer { withExtendedLifetime(tmp) {} }  // its raw pointer is used by the workers below
        if W == 1 {
            // Serial over chunks on this thread, each product threaded as OpenBLAS sees fit.
            for c in 0..<chunks { body(0, c * chunk, min(chunk, V - c * chunk), tmp.ptr) }
            return
        }
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
    func nearest(_ x: UnsafePointer<Float>, rows: Int, ids: UnsafeMutablePointer<Int32>, margins: UnsafeMutablePointer<Float>,
                 packed: FloatBuffer? = nil) {
        scan(nearest: x, rows: rows, ids: ids, margins: margins, logits: nil, rows: 0, ids: nil, packed: packed)
    }

    /// argmax_k (x·E_kᵀ + b_k) for each row (official `get_logits` + topk(1)).
    func argmaxLogits(_ x: UnsafePointer<Float>, rows: Int, ids: UnsafeMutablePointer<Int32>, packed: FloatBuffer? = nil) {
        scan(nearest: nil, rows: 0, ids: nil, margins: nil, logits: x, rows: rows, ids: ids, packed: packed)
    }

    /// `nearest` for the n1 rows of `x` and `argmaxLogits` for the n2 rows of `y`, with one product per
    /// vocabulary chunk for both (the embedding table is streamed once): the explorer rounds a step's x̂₀
    /// and reads out the previous step's x_{t−1} together. Each row's result is exactly what the
    /// separate calls give (a row's scores do not depend on the other rows of the product).
    /// With `packed` (this table packed by `dsq_pack`, e.g. `PackedModel.table`) the products run on the
    /// packed engine's pool.
    func scan(nearest x: UnsafePointer<Float>?, rows n1: Int, ids: UnsafeMutablePointer<Int32>?,
              margins: UnsafeMutablePointer<Float>?, logits y: UnsafePointer<Float>?, rows n2: Int,
              ids argIDs: UnsafeMutablePointer<Int32>?, packed pm: FloatBuffer? = nil) {
        let rows = n1 + n2
        guard rows > 0 else { return }
        let cx = ComputeContext.bound, inline = cx.inlineKernels
        let W = pm != nil || !inline ? cx.threads : 1
        let chunk = pm != nil ? 512 : inline ? 8192 : 1024
        // Rows 0..<n1 find the nearest embedding, rows n1..<rows the largest logit.
        let a: UnsafePointer<Float>
        var stacked: FloatBuffer? = nil
        if n2 == 0, let x { a = x } else if n1 == 0, let y { a = y } else {
            let p = FloatBuffer(count: rows * D)
            if let x { p.ptr.update(from: x, count: n1 * D) }
            if let y { (p.ptr + n1 * D).update(from: y, count: n2 * D) }
            stacked = p
            a = UnsafePointer(p.ptr)
        }
        let best = FloatBuffer(count: W * rows), second = FloatBuffer(count: W * rows)
        for w in 0..<W {
            (best.ptr + w * rows).update(repeating: .infinity, count: n1)
            (best.ptr + w * rows + n1).update(repeating: -.infinity, count: n2)
        }
        second.ptr.update(repeating: .infinity, count: W * rows)
        let arg = UnsafeMutablePointer<Int32>.allocate(capacity: W * rows)
        arg.initialize(repeating: Int32.max, count: W * rows)
        defer { arg.deallocate() }
        var xnorm = [Float](repeating: 0, count: n1)
        for r in 0..<n1 {
            var s: Float = 0
            for j in 0..<D { s += a[r * D + j] * a[r * D + j] }
            xnorm[r] = s
        }
        xnorm.withUnsafeBufferPointer { xnP in
            if let pm {
                let scratch = FloatBuffer(count: W * rows * chunk)
                // The raw pointers below outlive the last use of their owners as far as Swift can see:
                // keep the owners alive until C has returned.
                withExtendedLifetime((scratch, pm, best, second)) {
                    dsq_scan_packed(a, n1, n2, D, pm.ptr, V, norms.ptr, xnP.baseAddress, bias.ptr, best.ptr, second.ptr,
                                    arg, scratch.ptr, chunk, Int32(W), cx.portableKernels ? 1 : 0)
                }
                return
            }
            scanChunks(rows: rows, workers: W, chunk: chunk) { w, start, n, tmp in
                BLAS.gemm(transB: true, m: rows, n: n, k: D, a: a, lda: D, b: table.ptr + start * D, ldb: D, c: tmp, ldc: n)
                let nr = norms.ptr + start, bs = bias.ptr + start
                let bestP = best.ptr + w * rows, secP = second.ptr + w * rows, argP = arg + w * rows
                dsq_scan_nearest(tmp, n1, n, nr, xnP.baseAddress, Int32(start), bestP, secP, argP)
                dsq_scan_argmax(tmp + n1 * n, n2, n, bs, Int32(start), bestP + n1, argP + n1)
            }
        }
        withExtendedLifetime(stacked) {}
        for r in 0..<n1 {
            var b1 = best.ptr[r], b2 = second.ptr[r], am = arg[r]
            for w in 1..<W {
                let c1 = best.ptr[w * rows + r], c2 = second.ptr[w * rows + r], ca = arg[w * rows + r]
                if c1 < b1 || (c1 == b1 && ca < am) {
                    b2 = min(b1, c2); b1 = c1; am = ca
                } else {
                    b2 = min(b2, c1)
                }
            }
            ids?[r] = am == Int32.max ? 0 : am; margins?[r] = b2 - b1
        }
        for r in n1..<rows {
            var b = best.ptr[r], am = arg[r]
            for w in 1..<W {
                let c = best.ptr[w * rows + r], ca = arg[w * rows + r]
                if c > b || (c == b && ca < am) { b = c; am = ca }
            }
            argIDs?[r - n1] = am == Int32.max ? 0 : am
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
        // On the calling thread (no BLAS): the explorer asks from its UI thread while a run may be using
        // both cores through OpenBLAS.
        withExtendedLifetime(dots) {
            v.withUnsafeBufferPointer { vp in
                if let base = vp.baseAddress { dsq_matvec(dots.ptr, table.ptr, V, D, base) }
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
