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
#endif
