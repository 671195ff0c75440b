#ifndef CKERNELS_H
#define CKERNELS_H
/// Elementwise kernels that need the CPU's wide vectors. The Swift targets are built for baseline
/// x86-64 (4-lane SSE2); these functions are compiled for AVX-512, AVX2 and the baseline, and the
/// loader picks the widest the CPU has (GCC/Clang `target_clones`). Floating-point contraction is
/// off, so every variant performs the same float operations in the same order as the Swift code
/// (`Kernels.ferf`): results are bitwise identical on every CPU.

/// out[i] = GELU(in[i]) = 0.5·x·(1 + erf(x/√2)) with the rational erf of `Kernels.ferf`.
void dsq_gelu(float *out, const float *in, long n);
/// LayerNorm of `n` rows of `c` floats: out = (x − mean)·rstd·w + b, rstd = 1/√(var + eps) with the
/// biased variance; writes each row's mean and rstd when the pointers are not NULL. Row sums use 16
/// interleaved partial sums added in a fixed tree, so the result is the same on every CPU.
void dsq_layernorm(float *out, float *mean, float *rstd, const float *in, const float *w, const float *b,
                   long n, long c, float eps);
/// out[r] = Σ_j a[r·cols + j]·x[j] for r < rows, on the calling thread only (16 partial sums, fixed
/// order). For the explorer's UI thread, which must not take OpenBLAS's workers from a sampling run.
void dsq_matvec(float *out, const float *a, long rows, long cols, const float *x);
/// Nearest-embedding scan of one vocabulary chunk (ids start ..< start+n) for `rows` rows of scores
/// (row r at scores + r·n, the dot products x_r·E_k): d = max(‖E_k‖² + ‖x_r‖² − 2·score, 0) in id
/// order, keeping per row the best and second-best distance and the best id (strictly smaller wins,
/// so the lowest id on ties). `best`, `second`, `arg` hold the running state of each row.
void dsq_scan_nearest(const float *scores, long rows, long n, const float *norms, const float *xnorm,
                      int start, float *best, float *second, int *arg);
/// Largest-logit scan of one chunk: logit = score + bias[k], in id order, strictly larger wins.
void dsq_scan_argmax(const float *scores, long rows, long n, const float *bias, int start, float *best, int *arg);
/// Softmax of each of `rows` rows of `cols` floats, in place: exp(x − max) with the polynomial exp of
/// `Kernels.fexp`, divided by the row sum (16 partial sums, fixed order).
void dsq_softmax_rows(float *x, long rows, long cols);
/// Which variant `dsq_gelu` runs on this CPU: "avx512f", "avx2" or "baseline".
const char *dsq_kernels_isa(void);

// MARK: Packed products (packed.c): batch-1 inference on weights packed once, on a small thread pool.

/// Activation applied after bias and residual by `dsq_linear_packed`.
#define DSQ_ACT_NONE 0
#define DSQ_ACT_GELU 1
/// Floats `dsq_pack` writes for an (n × k) weight: ceil(n/32)·32·k.
long dsq_packed_count(long n, long k);
/// Packs W (n × k, row stride ldw; y = x·Wᵀ) into panels of 32 output columns: panel p, step k holds
/// W[32p + j][k] for j < 32 (zero past column n).
void dsq_pack(float *dst, const float *w, long ldw, long n, long k);
/// out (m × n, row stride ldo) = act((x (m × k, stride ldx)·Wᵀ + bias) + res (stride ldr)), W packed by
/// `dsq_pack`; bias, res may be NULL. Each output is one fused multiply-add per k in k order from 0, then
/// + bias, then + res: the same bits on every CPU and thread count. Runs on the pool.
void dsq_linear_packed(float *out, long ldo, const float *x, long ldx, long m, long k, const float *packed, long n,
                       const float *bias, const float *res, long ldr, int act, int workers, int portable);
/// Self-attention without a mask for one sequence: qkv (T × ldq) holds Q, K, V as column blocks of
/// heads·hs; ctx (T × ldc) receives softmax(scale·Q_h·K_hᵀ)·V_h per head. Heads are split over the pool.
/// `scratch` holds `dsq_attention_scratch_count(T, hs, workers)` floats; at most `workers` threads run.
void dsq_attention_packed(float *ctx, long ldc, const float *qkv, long ldq, long T, long heads, long hs, float scale,
                          float *scratch, int workers, int portable);
long dsq_attention_scratch_count(long T, long hs, int workers);
/// `dsq_scan_nearest` over rows 0..<n1 and `dsq_scan_argmax` over rows n1..<n1+n2 of a (rows × D) against
/// the packed (V × D) table, in chunks of `chunk` columns (a multiple of 32) that the pool's workers (at
/// most `workers`) claim in increasing id order: worker w keeps its running state in best/second/arg +
/// w·rows (initialised by the caller for `workers` workers; a worker that claims nothing leaves its slots
/// as they were), to be merged by (value, id). scratch: workers·rows·chunk floats.
void dsq_scan_packed(const float *a, long n1, long n2, long D, const float *packed, long V, const float *norms,
                     const float *xnorm, const float *bias, float *best, float *second, int *arg, float *scratch,
                     long chunk, int workers, int portable);
/// Every job runs on at most `workers` threads of the pool (the caller counts as one; 1 runs it on the
/// caller), which grows to the largest count asked for. `portable` (tests) runs the portable code even
/// on an AVX-512 CPU: the same bits, slower. Threads the pool has started (the caller counts as one):
int dsq_pool_threads(void);
/// "avx512f" or "scalar": which code the packed products run on this CPU.
const char *dsq_packed_isa(void);
#endif
