/* Batch-1 inference products on pre-packed weights, and the two-thread pool that runs them.
 *
 * A batch-1 step of a small model is a chain of products with 64 rows: OpenBLAS re-packs the whole
 * weight matrix on every call (a third of its time at this shape) and wakes its worker per call. Here
 * the weights are packed once, when a sampler is made, into panels of 32 output columns
 * (panel p, step k: W[32p + j][k] for j < 32, zero past the last column), and each output element is
 *     acc = Σ_k x[k]·w[k]   (one fused multiply-add per k, in k order, from 0)
 *     out = act(((acc·alpha) + bias) + residual)
 * — the same operations in the same order whatever the CPU (AVX-512 or the scalar fallback, which uses
 * fmaf) and whatever the number of threads (threads split the panels, never k).
 */
#include "CKernels.h"
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#pragma clang fp contract(off)

#define NR 32
#define MR 8

long dsq_packed_count(long n, long k) { return ((n + NR - 1) / NR) * NR * k; }

void dsq_pack(float *restrict dst, const float *restrict w, long ldw, long n, long k) {
    long panels = (n + NR - 1) / NR;
    for (long p = 0; p < panels; p++) {
        float *panel = dst + p * NR * k;
        for (long kk = 0; kk < k; kk++) {
            for (long j = 0; j < NR; j++) {
                long col = p * NR + j;
                panel[kk * NR + j] = col < n ? w[col * ldw + kk] : 0.0f;
            }
        }
    }
}

static int has_avx512 = -1;
static _Atomic int force_scalar = 0;

static int use_avx512(void) {
    if (has_avx512 < 0) {
#if defined(__x86_64__)
        __builtin_cpu_init();
        int ok = __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
        int ok = 0;
#endif
        has_avx512 = ok;
    }
    return has_avx512 && !force_scalar;
}

const char *dsq_packed_isa(void) { return use_avx512() ? "avx512f" : "scalar"; }

void dsq_packed_force_scalar(int on) { force_scalar = on; }

/* The epilogue of one output row segment of `ncols` columns. */
static inline float epilogue1(float acc, float alpha, const float *bias, const float *res, long j) {
    float v = alpha == 1.0f ? acc : acc * alpha;
    if (bias) v = v + bias[j];
    if (res) v = v + res[j];
    return v;
}

/* Scalar tile: rows × ncols outputs, B steps of 32 floats `bs` apart. */
static void tile_scalar(int rows, long K, const float *a, long lda, const float *b, long bs, int ncols,
                        float *c, long ldc, float alpha, const float *bias, const float *res, long ldr) {
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < ncols; j++) {
            float acc = 0.0f;
            for (long k = 0; k < K; k++) acc = fmaf(a[i * lda + k], b[k * bs + j], acc);
            c[i * ldc + j] = epilogue1(acc, alpha, bias, res ? res + i * ldr : NULL, j);
        }
    }
}

#if defined(__x86_64__)
#define AVX512 __attribute__((target("avx512f")))

static inline __attribute__((always_inline)) AVX512 void
tile_avx512_n(const int rows, long K, const float *a, long lda, const float *b, long bs, int ncols,
              float *c, long ldc, float alpha, const float *bias, const float *res, long ldr) {
    __mmask16 m0 = ncols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << ncols) - 1);
    __mmask16 m1 = ncols >= 32 ? (__mmask16)0xFFFF : ncols > 16 ? (__mmask16)((1u << (ncols - 16)) - 1) : 0;
    __m512 c0[MR], c1[MR];
    for (int i = 0; i < rows; i++) { c0[i] = _mm512_setzero_ps(); c1[i] = _mm512_setzero_ps(); }
    for (long k = 0; k < K; k++) {
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b + k * bs);
        __m512 b1 = _mm512_maskz_loadu_ps(m1, b + k * bs + 16);
        for (int i = 0; i < rows; i++) {
            __m512 ai = _mm512_set1_ps(a[i * lda + k]);
            c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
        }
    }
    __m512 va = _mm512_set1_ps(alpha);
    __m512 bi0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 bi1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    for (int i = 0; i < rows; i++) {
        __m512 v0 = c0[i], v1 = c1[i];
        if (alpha != 1.0f) { v0 = _mm512_mul_ps(v0, va); v1 = _mm512_mul_ps(v1, va); }
        if (bias) { v0 = _mm512_add_ps(v0, bi0); v1 = _mm512_add_ps(v1, bi1); }
        if (res) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, res + i * ldr));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, res + i * ldr + 16));
        }
        _mm512_mask_storeu_ps(c + i * ldc, m0, v0);
        if (m1) _mm512_mask_storeu_ps(c + i * ldc + 16, m1, v1);
    }
}

#define TILE_N(R)                                                                                      \
    static AVX512 void tile_avx512_##R(long K, const float *a, long lda, const float *b, long bs,       \
                                       int ncols, float *c, long ldc, float alpha, const float *bias,  \
                                       const float *res, long ldr) {                                   \
        tile_avx512_n(R, K, a, lda, b, bs, ncols, c, ldc, alpha, bias, res, ldr);                      \
    }
TILE_N(1) TILE_N(2) TILE_N(3) TILE_N(4) TILE_N(5) TILE_N(6) TILE_N(7) TILE_N(8)

typedef void (*tile_fn)(long, const float *, long, const float *, long, int, float *, long, float,
                        const float *, const float *, long);
static const tile_fn avx512_tiles[MR + 1] = {0, tile_avx512_1, tile_avx512_2, tile_avx512_3, tile_avx512_4,
                                             tile_avx512_5, tile_avx512_6, tile_avx512_7, tile_avx512_8};
#endif

/* Columns [p0·32, p1·32) ∩ [0, n) of out (m × n) = alpha·a (m × K)·B + bias + res. Panel p of B starts
   at b + p·pstride; its step k is 32 floats at + k·bs. Column col is stored at c + r·ldc + (col − c0)
   (bias and res are indexed by col). */
static void gemm_panels(long m, long n, long K, const float *a, long lda, const float *b, long pstride, long bs,
                        long p0, long p1, float *c, long ldc, long c0, float alpha, const float *bias,
                        const float *res, long ldr) {
    int wide = use_avx512();
    for (long p = p0; p < p1; p++) {
        long col = p * NR;
        int ncols = (int)(n - col < NR ? n - col : NR);
        const float *bp = b + p * pstride;
        const float *biasp = bias ? bias + col : NULL;
        for (long r = 0; r < m; r += MR) {
            int rows = (int)(m - r < MR ? m - r : MR);
            const float *ap = a + r * lda;
            float *cp = c + r * ldc + (col - c0);
            const float *rp = res ? res + r * ldr + col : NULL;
#if defined(__x86_64__)
            if (wide) { avx512_tiles[rows](K, ap, lda, bp, bs, ncols, cp, ldc, alpha, biasp, rp, ldr); continue; }
#endif
            tile_scalar(rows, K, ap, lda, bp, bs, ncols, cp, ldc, alpha, biasp, rp, ldr);
        }
    }
}

/* MARK: - Pool: the caller is worker 0; workers 1..<n spin for a while after each job, then sleep. */

#define MAXW 16
typedef void (*job_fn)(void *ctx, int worker, int workers);

static struct {
    pthread_mutex_t run;          /* one job at a time; a second caller runs its job alone */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic unsigned long gen;
    _Atomic unsigned long done[MAXW];
    _Atomic int sleeping;
    job_fn fn;
    void *ctx;
    int workers;                  /* threads taking part in the current job */
    int started;                  /* helper threads created */
    _Atomic int wanted;           /* dsq_pool_set_threads; set from any thread while jobs run */
    long spin_ns;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}, 0,
          0, 0, 1, 0, 1, 20000000L};

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void cpu_relax(void) {
#if defined(__x86_64__)
    _mm_pause();
#endif
}

static unsigned long start_gen[MAXW];

static void *pool_main(void *arg) {
    int me = (int)(long)arg;
#if defined(__x86_64__)
    _mm_setcsr(_mm_getcsr() | 0x8040);  /* flush denormals to zero, as every engine thread */
#endif
    unsigned long seen = start_gen[me];
    for (;;) {
        long start = now_ns();
        unsigned long g;
        int spins = 0;
        while ((g = atomic_load(&pool.gen)) == seen) {
            if (++spins < 2000) { cpu_relax(); continue; }
            if ((spins & 63) == 0 && now_ns() - start > pool.spin_ns) {
                pthread_mutex_lock(&pool.mu);
                atomic_fetch_add(&pool.sleeping, 1);
                while ((g = atomic_load(&pool.gen)) == seen) pthread_cond_wait(&pool.cv, &pool.mu);
                atomic_fetch_sub(&pool.sleeping, 1);
                pthread_mutex_unlock(&pool.mu);
                break;
            }
            sched_yield();
        }
        seen = g;
        if (me < pool.workers) pool.fn(pool.ctx, me, pool.workers);
        atomic_store(&pool.done[me], g);
    }
    return NULL;
}

void dsq_pool_set_threads(int n) { atomic_store_explicit(&pool.wanted, n < 1 ? 1 : n > MAXW ? MAXW : n, memory_order_relaxed); }

int dsq_pool_threads(void) { return atomic_load_explicit(&pool.wanted, memory_order_relaxed); }

static void pool_run(job_fn fn, void *ctx, long work, int max_workers) {
    int wanted = dsq_pool_threads();  /* read once: another thread may change it meanwhile */
    int want = wanted < max_workers ? wanted : max_workers;
    /* Under ~1M multiply-adds a second thread costs more than it saves. */
    if (want <= 1 || work < (1L << 20) || pthread_mutex_trylock(&pool.run) != 0) { fn(ctx, 0, 1); return; }
    while (pool.started < want - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        start_gen[pool.started + 1] = atomic_load(&pool.gen);
        if (pthread_create(&t, &attr, pool_main, (void *)(long)(pool.started + 1)) != 0) { pthread_attr_destroy(&attr); break; }
        pthread_attr_destroy(&attr);
        pool.started++;
    }
    int workers = pool.started + 1 < want ? pool.started + 1 : want;
    pool.fn = fn; pool.ctx = ctx; pool.workers = workers;
    unsigned long g = atomic_fetch_add(&pool.gen, 1) + 1;
    if (atomic_load(&pool.sleeping) > 0) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_broadcast(&pool.cv);
        pthread_mutex_unlock(&pool.mu);
    }
    fn(ctx, 0, workers);
    /* Every started helper acknowledges the generation (also those without a share). */
    for (int w = 1; w <= pool.started; w++) {
        int spins = 0;
        while (atomic_load(&pool.done[w]) != g) { if (++spins < 4000) cpu_relax(); else sched_yield(); }
    }
    pthread_mutex_unlock(&pool.run);
}

/* MARK: - Jobs */

typedef struct {
    float *out; long ldo; const float *x; long ldx; long m, k; const float *packed; long n;
    const float *bias; const float *res; long ldr; int act;
    _Atomic long next;  /* the next unclaimed panel */
} linear_job;

/* Workers claim panels one at a time (not a fixed half each): when the other core is taken for a
   moment (the explorer's UI thread), the running thread does more of the product instead of waiting. */
static void linear_run(void *ctx, int w, int W) {
    (void)w; (void)W;
    linear_job *j = ctx;
    long panels = (j->n + NR - 1) / NR;
    for (long p; (p = atomic_fetch_add(&j->next, 1)) < panels;) {
        gemm_panels(j->m, j->n, j->k, j->x, j->ldx, j->packed, NR * j->k, NR, p, p + 1, j->out, j->ldo, 0, 1.0f,
                    j->bias, j->res, j->ldr);
        if (j->act == DSQ_ACT_GELU) {
            long c0 = p * NR, c1 = c0 + NR < j->n ? c0 + NR : j->n;
            for (long r = 0; r < j->m; r++) dsq_gelu(j->out + r * j->ldo + c0, j->out + r * j->ldo + c0, c1 - c0);
        }
    }
}

void dsq_linear_packed(float *out, long ldo, const float *x, long ldx, long m, long k, const float *packed, long n,
                       const float *bias, const float *res, long ldr, int act) {
    if (m <= 0 || n <= 0) return;
    linear_job j = {out, ldo, x, ldx, m, k, packed, n, bias, res, ldr, act, 0};
    pool_run(linear_run, &j, m * n * k, MAXW);
}

typedef struct {
    float *ctx; long ldc; const float *qkv; long ldq; long T, heads, hs, width; float scale; float *scratch;
    _Atomic long next;  /* the next unclaimed head */
} attention_job;

static void attention_run(void *ctx, int w, int W) {
    attention_job *j = ctx;
    (void)W;
    long T = j->T, hs = j->hs, Tp = (T + NR - 1) / NR * NR;
    float *kp = j->scratch + (long)w * (hs * Tp + T * T), *s = kp + hs * Tp;
    for (long h; (h = atomic_fetch_add(&j->next, 1)) < j->heads;) {
        const float *q = j->qkv + h * hs, *kk = j->qkv + j->width + h * hs, *v = j->qkv + 2 * j->width + h * hs;
        dsq_pack(kp, kk, j->ldq, T, hs);                  /* Kᵀ in panels of 32 positions */
        gemm_panels(T, T, hs, q, j->ldq, kp, NR * hs, NR, 0, Tp / NR, s, T, 0, j->scale, NULL, NULL, 0);
        dsq_softmax_rows(s, T, T);
        /* ctx_h (T × hs) = P (T × T)·V_h: step j of "panel" d is V[j][d..d+32], read in place. */
        gemm_panels(T, hs, T, s, T, v, NR, j->ldq, 0, (hs + NR - 1) / NR, j->ctx + h * hs, j->ldc, 0, 1.0f, NULL,
                    NULL, 0);
    }
}

long dsq_attention_scratch_count(long T, long hs, int workers) {
    long Tp = (T + NR - 1) / NR * NR;
    return (long)workers * (hs * Tp + T * T);
}

void dsq_attention_packed(float *ctx, long ldc, const float *qkv, long ldq, long T, long heads, long hs, float scale,
                          float *scratch, int workers) {
    attention_job j = {ctx, ldc, qkv, ldq, T, heads, hs, heads * hs, scale, scratch, 0};
    pool_run(attention_run, &j, 2 * heads * T * T * hs, workers);
}

typedef struct {
    const float *a; long n1, n2, D; const float *packed; long V; const float *norms, *xnorm, *bias;
    float *best, *second; int *arg; float *scratch; long chunk;
    _Atomic long next;  /* the next unclaimed chunk */
} scan_job;

static void scan_run(void *ctx, int w, int W) {
    scan_job *j = ctx;
    (void)W;
    long rows = j->n1 + j->n2, panels = (j->V + NR - 1) / NR, per = j->chunk / NR, chunks = (panels + per - 1) / per;
    float *tmp = j->scratch + (long)w * rows * j->chunk;
    float *best = j->best + (long)w * rows, *second = j->second + (long)w * rows;
    int *arg = j->arg + (long)w * rows;
    /* A worker's chunks come in increasing id order, so its running state is a sequential scan of them;
       the caller merges the workers by (value, id), which is exact for any partition. */
    for (long c; (c = atomic_fetch_add(&j->next, 1)) < chunks;) {
        long p = c * per, pe = p + per < panels ? p + per : panels;
        long start = p * NR, end = pe * NR < j->V ? pe * NR : j->V, n = end - start;
        /* Scores of this chunk, row-major (rows × n), then the running scans over them. */
        gemm_panels(rows, end, j->D, j->a, j->D, j->packed, NR * j->D, NR, p, pe, tmp, n, start, 1.0f, NULL, NULL, 0);
        if (j->n1) dsq_scan_nearest(tmp, j->n1, n, j->norms + start, j->xnorm, (int)start, best, second, arg);
        if (j->n2) dsq_scan_argmax(tmp + j->n1 * n, j->n2, n, j->bias + start, (int)start, best + j->n1, arg + j->n1);
    }
}

void dsq_scan_packed(const float *a, long n1, long n2, long D, const float *packed, long V, const float *norms,
                     const float *xnorm, const float *bias, float *best, float *second, int *arg, float *scratch,
                     long chunk, int workers) {
    scan_job j = {a, n1, n2, D, packed, V, norms, xnorm, bias, best, second, arg, scratch, chunk, 0};
    pool_run(scan_run, &j, (n1 + n2) * V * D, workers);
}
