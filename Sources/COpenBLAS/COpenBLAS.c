#define _GNU_SOURCE
#include "COpenBLAS.h"
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xmmintrin.h>
#include <pmmintrin.h>

enum { RowMajor = 101, NoTrans = 111, Trans = 112 };

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *,
                         int, float, float *, int);
typedef char *(*str_fn)(void);
typedef int (*int_fn)(void);
typedef void (*setint_fn)(int);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static sgemm_fn p_sgemm;
static str_fn p_corename, p_config;
static int_fn p_get_threads;
static setint_fn p_set_threads;
static char load_error[512];
static int max_threads = 0;      /* the thread count for large products */
static _Atomic int current_threads = 0;  /* what OpenBLAS is set to now (any thread calls dsq_sgemm) */
/* How many threads are inside dsq_blas_enter_serial/leave (parallelGEMMs): while any is, the thread
   count never changes. A counter, not a flag: two threads in parallelGEMMs at once (the explorer's
   sampler and a test, training and the UI) must not let the first one out clear it for the other. */
static _Atomic int serial_depth = 0;
static char chosen[32];
static long parallel_min = 8L << 20; /* m·n·k below which a product runs on one thread */
static int latency_profile = 0;      /* dsq_blas_prefer_latency() called before loading */
static int loaded_latency = 0;       /* the profile the library was loaded with */

static const char *pick_coretype(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

/// Flush denormals to zero (FTZ) and treat denormal inputs as zero (DAZ) on this thread.
/// Tiny attention probabilities and decaying gradients otherwise hit x86's slow denormal path,
/// which made sgemm ~20x slower in training. OpenBLAS's worker threads inherit the mode because
/// they are created (at load) after this call.
void dsq_set_flush_denormals(void) {
    _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
    _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
}

static void do_load(void) {
    dsq_set_flush_denormals();
    /* glibc serves blocks above a dynamic threshold with mmap and returns freed heap tops to the
       kernel; per-step work buffers of a few MB were then page-faulted (and zeroed by the kernel)
       on every training step: 6 % of a step. Keep blocks below 64 MB in the heap and the heap's
       freed memory mapped, so repeated allocations reuse pages. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    const char *prof = getenv("DIFFUSEQ_BLAS_PROFILE");
    if (prof && strcmp(prof, "latency") == 0) latency_profile = 1;
    else if (prof && strcmp(prof, "throughput") == 0) latency_profile = 0;
    else if (prof && *prof)
        fprintf(stderr, "diffuseq: DIFFUSEQ_BLAS_PROFILE=%s is not latency or throughput; using %s\n", prof,
                latency_profile ? "latency" : "throughput");
    loaded_latency = latency_profile;
    /* With awake workers a 64×256×256 product (4.2M multiply-adds) takes 60 µs on two threads against
       97 µs on one, while 2.1M-MAC products are faster on one (52 against 66 µs): thread from 3M. */
    if (loaded_latency) parallel_min = 3L << 20;
    const char *pm = getenv("DIFFUSEQ_GEMM_PARALLEL_MIN");
    if (pm && *pm) parallel_min = atol(pm);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    const char *user = getenv("OPENBLAS_CORETYPE");
    if (user == NULL || user[0] == 0) {
        const char *core = pick_coretype();
        if (core != NULL) {
            setenv("OPENBLAS_CORETYPE", core, 1);
            snprintf(chosen, sizeof chosen, "%s", core);
        }
    }
    /* Idle OpenBLAS workers spin (sched_yield) for 2^28 cycles after each call by default, stealing
       the second core from our own parallel kernels between GEMMs; 2^4 makes them sleep at once.
       Measured: 10–20 % faster sampling and training here (throughput profile). The latency
       profile (batch-1 sampling: the explorer) keeps them spinning instead: waking a sleeping
       worker costs tens of microseconds on this VM, and a step makes ~40 products of ~0.1 ms each,
       so products from 3M multiply-adds run on all threads. A user-set value wins. */
    const char *timeout = getenv("OPENBLAS_THREAD_TIMEOUT");
    if (timeout == NULL || timeout[0] == 0) setenv("OPENBLAS_THREAD_TIMEOUT", loaded_latency ? "28" : "4", 1);
    const char *names[] = {"libopenblas.so.0", "libopenblas.so", "libopenblasp-r0.3.21.so", NULL};
    void *h = NULL;
    for (int i = 0; names[i] && !h; i++) h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(load_error, sizeof load_error,
                 "cannot load OpenBLAS (libopenblas.so.0): %s. Install it with "
                 "`apt-get install -y libopenblas-dev`.", e ? e : "unknown error");
        return;
    }
    p_sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
    p_corename = (str_fn)dlsym(h, "openblas_get_corename");
    p_config = (str_fn)dlsym(h, "openblas_get_config");
    p_get_threads = (int_fn)dlsym(h, "openblas_get_num_threads");
    p_set_threads = (setint_fn)dlsym(h, "openblas_set_num_threads");
    if (!p_sgemm) snprintf(load_error, sizeof load_error, "OpenBLAS has no cblas_sgemm symbol");
    if (p_get_threads) max_threads = current_threads = p_get_threads();
}

int dsq_blas_load(char *err, int errlen) {
    pthread_once(&once, do_load);
    if (p_sgemm) return 0;
    if (err && errlen > 0) snprintf(err, (size_t)errlen, "%s", load_error);
    return 1;
}

int dsq_blas_prefer_latency(void) {
    if (p_sgemm || load_error[0]) return loaded_latency;
    latency_profile = 1;
    return 1;
}

int dsq_blas_latency_profile(void) { return loaded_latency; }
long dsq_blas_parallel_min(void) { return parallel_min; }

const char *dsq_blas_chosen_coretype(void) { return chosen; }
const char *dsq_blas_corename(void) { return p_corename ? p_corename() : "unloaded"; }
const char *dsq_blas_config(void) { return p_config ? p_config() : ""; }
int dsq_blas_get_threads(void) { return p_get_threads ? p_get_threads() : 0; }
void dsq_blas_set_threads(int n) {
    if (p_set_threads) { p_set_threads(n); max_threads = current_threads = n; }
}

void dsq_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda,
               const float *b, int ldb, float beta, float *c, int ldc) {
    if (!p_sgemm) { dsq_blas_load(NULL, 0); if (!p_sgemm) abort(); }
    /* Small products (batch-1 sampling, attention heads) run faster on one thread: waking and
       joining OpenBLAS's workers costs more than the work (measured 3-4x on batch-1 sampling).
       The result does not depend on the thread count (OpenBLAS splits M/N, never K). */
    if (p_set_threads && max_threads > 1 && atomic_load(&serial_depth) == 0) {
        int want = (long)m * n * k < parallel_min ? 1 : max_threads;
        if (want != current_threads) { p_set_threads(want); current_threads = want; }
    }
    p_sgemm(RowMajor, transA ? Trans : NoTrans, transB ? Trans : NoTrans, m, n, k, alpha, a, lda,
            b, ldb, beta, c, ldc);
}

void dsq_blas_enter_serial(void) {
    if (!p_sgemm) dsq_blas_load(NULL, 0);
    atomic_fetch_add(&serial_depth, 1);
    if (p_set_threads && current_threads != 1) { p_set_threads(1); current_threads = 1; }
}

void dsq_blas_leave_serial(void) { atomic_fetch_sub(&serial_depth, 1); }

int dsq_blas_serial_depth(void) { return atomic_load(&serial_depth); }
