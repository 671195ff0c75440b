#ifndef COPENBLAS_H
#define COPENBLAS_H
/// OpenBLAS, loaded at run time with dlopen so that OPENBLAS_CORETYPE can be chosen first.
///
/// OpenBLAS 0.3.21 misdetects recent Xeons and falls back to its Prescott kernels (5x slower).
/// The variable is read when the library is loaded, so linking it would be too late: we pick
/// a core type from CPUID (unless the user set one), then dlopen libopenblas.so.0.

/// Loads OpenBLAS once (thread-safe). Returns 0 on success; on failure writes a message to err.
int dsq_blas_load(char *err, int errlen);
/// Asks for the latency profile (for batch-1 sampling): OpenBLAS workers keep spinning between
/// products (OPENBLAS_THREAD_TIMEOUT 28 unless the user set it) and products from 3M multiply-adds
/// (instead of 8M) run on all threads (unless DIFFUSEQ_GEMM_PARALLEL_MIN is set). Only effective before the library is loaded;
/// returns 1 when the profile is (or will be) in use, 0 when the library was already loaded without it.
int dsq_blas_prefer_latency(void);
/// 1 when the library was loaded with the latency profile.
int dsq_blas_latency_profile(void);
/// m·n·k below which `dsq_sgemm` runs a product on one thread.
long dsq_blas_parallel_min(void);
/// The core type we set before loading ("" when we left the choice to OpenBLAS or the user).
const char *dsq_blas_chosen_coretype(void);
/// openblas_get_corename(), or "unloaded".
const char *dsq_blas_corename(void);
/// openblas_get_config(), or "".
const char *dsq_blas_config(void);
int dsq_blas_get_threads(void);
/// Enables flush-to-zero and denormals-are-zero on the calling thread.
void dsq_set_flush_denormals(void);
void dsq_blas_set_threads(int n);

/// Row-major C = alpha * op(A) * op(B) + beta * C (cblas_sgemm with CblasRowMajor).
void dsq_sgemm(int transA, int transB, int m, int n, int k, float alpha,
               const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
/// Between enter and leave, OpenBLAS runs single-threaded and `dsq_sgemm` may be called from several
/// threads at once (each product on its caller's thread): for many small independent products such
/// as attention heads. Pairs may overlap on several threads (a counter, not a flag): the region ends
/// when the last one leaves.
void dsq_blas_enter_serial(void);
void dsq_blas_leave_serial(void);
/// How many enter_serial calls have not left yet (tests).
int dsq_blas_serial_depth(void);
#endif
