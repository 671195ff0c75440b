#define _GNU_SOURCE
#include "CDNNL.h"
#include <cpuid.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// MARK: CPU features and the bf16 conversion (no oneDNN needed)

int dsq_cpu_has_bf16(void) {
    /* Tests and users can take the feature away (the fallback path on a bf16 CPU). */
    const char *off = getenv("DIFFUSEQ_NO_BF16");
    if (off && off[0] && strcmp(off, "0") != 0) return 0;
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(b & (1u << 16))) return 0;  /* AVX512F */
    __cpuid_count(7, 1, a, b, c, d);
    if (!(a & (1u << 5))) return 0;   /* AVX512_BF16 */
    /* The OS must save the ZMM state (XCR0 bits 1, 2, 5, 6, 7). */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xE6) == 0xE6;
#else
    return 0;
#endif
}

static inline uint16_t bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);    /* zero, denormal → signed zero */
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays (quiet) NaN */
    u += 0x7FFFu + ((u >> 16) & 1u);                                        /* round to nearest even */
    return (uint16_t)(u >> 16);
}

void dsq_f32_to_bf16_portable(uint16_t *dst, const float *src, long n) {
    for (long i = 0; i < n; i++) dst[i] = bf16_round(src[i]);
}

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bf16,avx512vl,avx512bw")))
static void f32_to_bf16_avx512(uint16_t *dst, const float *src, long n) {
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
        _mm512_storeu_si512((void *)(dst + i), (__m512i)h);
    }
    if (i < n) {
        __mmask16 m1 = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m1, src + i));
        _mm256_mask_storeu_epi16(dst + i, m1, (__m256i)h);
        i += 16;
        if (i < n) {
            __mmask16 m2 = (__mmask16)((1u << (n - i)) - 1);
            __m256bh h2 = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m2, src + i));
            _mm256_mask_storeu_epi16(dst + i, m2, (__m256i)h2);
        }
    }
}
#endif

static int has_bf16 = -1;

void dsq_f32_to_bf16(uint16_t *dst, const float *src, long n) {
#if defined(__x86_64__)
    if (has_bf16 < 0) has_bf16 = dsq_cpu_has_bf16();
    if (has_bf16) { f32_to_bf16_avx512(dst, src, n); return; }
#endif
    dsq_f32_to_bf16_portable(dst, src, n);
}

void dsq_f32_to_bf16_inplace(float *x, long n) {
    /* Blocks of 32 in increasing order: block b reads bytes [128b, 128b + 128) and writes [64b, 64b + 64), which
       is all read already (its own block or an earlier one). */
    uint16_t tmp[32];
    for (long i = 0; i < n; i += 32) {
        long m = n - i < 32 ? n - i : 32;
        dsq_f32_to_bf16(tmp, x + i, m);
        memcpy((char *)x + 2 * i, tmp, (size_t)m * 2);
    }
}

void dsq_bf16_to_f32(float *dst, const uint16_t *src, long n) {
    for (long i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(dst + i, &u, 4);
    }
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#if defined(__x86_64__)
/* 24 independent accumulators: enough to hide either instruction's latency at its full throughput. */
#define DSQ_ACC24(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) \
                     X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)
#define DECL(i) __m512 a##i = _mm512_setzero_ps();
#define KEEP(i) __asm__ volatile("" : "+v"(a##i));
#define SUM(i) s = _mm512_add_ps(s, a##i);
#define BF16_STEP(i) a##i = _mm512_dpbf16_ps(a##i, x, y);
#define FMA_STEP(i) a##i = _mm512_fmadd_ps(x, y, a##i);
/* Multiply-adds per second of `iters` rounds of 24 independent `STEP`s (`macs` multiply-adds each). */
#define DSQ_RATE(name, isa, setup, STEP, macs)                                  \
    __attribute__((target(isa), noinline)) static double name(long iters) {    \
        DSQ_ACC24(DECL)                                                         \
        setup;                                                                  \
        double t0 = now_s();                                                    \
        for (long i = 0; i < iters; i++) { DSQ_ACC24(STEP) DSQ_ACC24(KEEP) }    \
        double t = now_s() - t0;                                                \
        __m512 s = _mm512_setzero_ps();                                         \
        DSQ_ACC24(SUM)                                                          \
        volatile float sink = _mm512_reduce_add_ps(s);                          \
        (void)sink;                                                             \
        return 24.0 * (double)iters * (macs) / t;                               \
    }
DSQ_RATE(bf16_rate, "avx512f,avx512bf16",
         __m512bh x = (__m512bh)_mm512_set1_epi16(0x3F80); __m512bh y = (__m512bh)_mm512_set1_epi16(0), BF16_STEP, 32)
DSQ_RATE(fma_rate, "avx512f,fma", __m512 x = _mm512_set1_ps(1.0f); __m512 y = _mm512_setzero_ps(), FMA_STEP, 16)
#endif

static pthread_once_t ratio_once = PTHREAD_ONCE_INIT;
static double speed_ratio = 0;

static void measure_ratio(void) {
#if defined(__x86_64__)
    if (!dsq_cpu_has_bf16()) return;
    /* Interleaved, best of 5 each: a shared host steals time from either loop, rarely from every run. */
    double b = 0, f = 0;
    for (int r = 0; r < 5; r++) {
        double x = bf16_rate(4000);
        if (x > b) b = x;
        x = fma_rate(4000);
        if (x > f) f = x;
    }
    speed_ratio = f > 0 ? b / f : 0;
#endif
}

double dsq_bf16_speed_ratio(void) {
    pthread_once(&ratio_once, measure_ratio);
    return speed_ratio;
}

// MARK: oneDNN

#if __has_include(<oneapi/dnnl/dnnl.h>)
#include <oneapi/dnnl/dnnl.h>
#define DSQ_HAVE_DNNL_HEADER 1
#else
#define DSQ_HAVE_DNNL_HEADER 0
#endif

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[512];
static int loaded = 0;
static char version[32];
static char impl_name[2][64];
static char last_error[256];
static __thread long created = 0;  /* per thread: tests run in parallel */

#if DSQ_HAVE_DNNL_HEADER

#define FN(name) static __typeof__(&name) p_##name
FN(dnnl_engine_create);
FN(dnnl_stream_create);
FN(dnnl_stream_wait);
FN(dnnl_memory_desc_init_by_strides);
FN(dnnl_matmul_desc_init);
FN(dnnl_primitive_attr_create);
FN(dnnl_primitive_attr_destroy);
FN(dnnl_primitive_attr_set_output_scales);
FN(dnnl_primitive_attr_set_post_ops);
FN(dnnl_post_ops_create);
FN(dnnl_post_ops_destroy);
FN(dnnl_post_ops_append_sum);
FN(dnnl_primitive_desc_create);
FN(dnnl_primitive_desc_destroy);
FN(dnnl_primitive_desc_query);
FN(dnnl_primitive_create);
FN(dnnl_primitive_destroy);
FN(dnnl_primitive_execute);
FN(dnnl_memory_create);
FN(dnnl_memory_destroy);
FN(dnnl_version);
#undef FN
static void (*p_omp_set_num_threads)(int);

static dnnl_engine_t engine;
static dnnl_stream_t stream;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void do_load(void) {
    /* Idle OpenMP workers sleep at once (see the header); a user-set policy wins. */
    const char *wp = getenv("OMP_WAIT_POLICY");
    if (wp == NULL || wp[0] == 0) setenv("OMP_WAIT_POLICY", "passive", 1);
    const char *path = getenv("DIFFUSEQ_ONEDNN_LIBRARY");
    if (path == NULL || path[0] == 0) path = "libdnnl.so.2";
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(load_error, sizeof load_error,
                 "cannot load oneDNN (%s): %s. Install it with `apt-get install -y libdnnl-dev` "
                 "(Debian/Ubuntu: the libdnnl2 runtime suffices to run)", path, e ? e : "unknown error");
        return;
    }
#define LOAD(name)                                                                                 \
    p_##name = (__typeof__(p_##name))dlsym(h, #name);                                                \
    if (!p_##name) {                                                                               \
        snprintf(load_error, sizeof load_error, "oneDNN at %s lacks %s (need oneDNN 2.x)", path, #name); \
        return;                                                                                    \
    }
    LOAD(dnnl_engine_create) LOAD(dnnl_stream_create) LOAD(dnnl_stream_wait)
    LOAD(dnnl_memory_desc_init_by_strides) LOAD(dnnl_matmul_desc_init) LOAD(dnnl_primitive_attr_create)
    LOAD(dnnl_primitive_attr_destroy) LOAD(dnnl_primitive_attr_set_output_scales)
    LOAD(dnnl_primitive_attr_set_post_ops) LOAD(dnnl_post_ops_create) LOAD(dnnl_post_ops_destroy)
    LOAD(dnnl_post_ops_append_sum) LOAD(dnnl_primitive_desc_create) LOAD(dnnl_primitive_desc_destroy)
    LOAD(dnnl_primitive_desc_query) LOAD(dnnl_primitive_create) LOAD(dnnl_primitive_destroy)
    LOAD(dnnl_primitive_execute) LOAD(dnnl_memory_create) LOAD(dnnl_memory_destroy) LOAD(dnnl_version)
#undef LOAD
    p_omp_set_num_threads = (void (*)(int))dlsym(h, "omp_set_num_threads");
    const dnnl_version_t *v = p_dnnl_version();
    if (v->major != 2) {
        snprintf(load_error, sizeof load_error, "oneDNN at %s is version %d.%d; diffuseq needs 2.x", path, v->major,
                 v->minor);
        return;
    }
    snprintf(version, sizeof version, "%d.%d.%d", v->major, v->minor, v->patch);
    if (p_dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success ||
        p_dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) {
        snprintf(load_error, sizeof load_error, "oneDNN at %s: cannot create a CPU engine", path);
        return;
    }
    loaded = 1;
}

#else

static void do_load(void) {
    snprintf(load_error, sizeof load_error,
             "this diffuseq was built without oneDNN's header (install libdnnl-dev and rebuild)");
}

#endif

int dsq_dnnl_load(char *err, int errlen) {
    pthread_once(&load_once, do_load);
    if (loaded) return 0;
    if (err && errlen > 0) snprintf(err, (size_t)errlen, "%s", load_error);
    return 1;
}

const char *dsq_dnnl_version(void) { return version; }
const char *dsq_dnnl_impl(int bf16) { return impl_name[bf16 ? 1 : 0]; }
const char *dsq_dnnl_error(void) { return last_error; }
long dsq_dnnl_primitives_created(void) { return created; }

#if DSQ_HAVE_DNNL_HEADER

/* Per-thread conversion scratch for the two operands (freed when the thread exits). */
typedef struct { uint16_t *p[2]; size_t cap[2]; } scratch_t;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static void scratch_free(void *v) {
    scratch_t *s = v;
    free(s->p[0]);
    free(s->p[1]);
    free(s);
}
static void scratch_init(void) { pthread_key_create(&scratch_key, scratch_free); }
static uint16_t *scratch(int which, size_t count) {
    pthread_once(&scratch_once, scratch_init);
    scratch_t *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return NULL;
        pthread_setspecific(scratch_key, s);
    }
    if (s->cap[which] < count) {
        free(s->p[which]);
        s->p[which] = malloc(count * sizeof(uint16_t));
        s->cap[which] = s->p[which] ? count : 0;
    }
    return s->p[which];
}

/* Converts the fp32 operand (rows × cols, strides rs, cs) into dense bf16; returns the new strides. */
static const uint16_t *to_bf16(int which, const float *x, long rows, long cols, long *rs, long *cs) {
    uint16_t *d = scratch(which, (size_t)(rows * cols));
    if (!d) return NULL;
    if (*cs == 1 && *rs == cols) {
        dsq_f32_to_bf16(d, x, rows * cols);
    } else if (*cs == 1) {
        for (long i = 0; i < rows; i++) dsq_f32_to_bf16(d + i * cols, x + i * *rs, cols);
        *rs = cols;
    } else if (*rs == 1) {
        /* Column-major view: the storage is `cols` runs of `rows` elements, `cs` apart. */
        for (long j = 0; j < cols; j++) dsq_f32_to_bf16(d + j * rows, x + j * *cs, rows);
        *cs = rows;
    } else {
        for (long i = 0; i < rows; i++)
            for (long j = 0; j < cols; j++) d[i * cols + j] = bf16_round(x[i * *rs + j * *cs]);
        *rs = cols;
        *cs = 1;
    }
    return d;
}

typedef struct {
    long m, n, k, a_rs, a_cs, b_rs, b_cs, ldc;
    int a_type, b_type, bias, threads;
    float alpha, beta;
} mm_key_t;

typedef struct {
    mm_key_t key;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t a, b, c, bias;
} entry_t;

#define CACHE 256
static entry_t cache[CACHE];
static int cache_n = 0, cache_next = 0;

static void set_error(const char *what, dnnl_status_t s) {
    snprintf(last_error, sizeof last_error, "oneDNN %s failed (status %d)", what, (int)s);
}

static entry_t *primitive(const mm_key_t *key) {
    for (int i = 0; i < cache_n; i++)
        if (memcmp(&cache[i].key, key, sizeof *key) == 0) return &cache[i];
    entry_t e;
    memset(&e, 0, sizeof e);
    e.key = *key;
    dnnl_dims_t ad = {key->m, key->k}, bd = {key->k, key->n}, cd = {key->m, key->n}, biasd = {1, key->n};
    dnnl_dims_t as = {key->a_rs, key->a_cs}, bs = {key->b_rs, key->b_cs}, cs = {key->ldc, 1}, biass = {key->n, 1};
    dnnl_data_type_t at = key->a_type == DSQ_BF16 ? dnnl_bf16 : dnnl_f32;
    dnnl_data_type_t bt = key->b_type == DSQ_BF16 ? dnnl_bf16 : dnnl_f32;
    dnnl_status_t s;
    if ((s = p_dnnl_memory_desc_init_by_strides(&e.a, 2, ad, at, as)) ||
        (s = p_dnnl_memory_desc_init_by_strides(&e.b, 2, bd, bt, bs)) ||
        (s = p_dnnl_memory_desc_init_by_strides(&e.c, 2, cd, dnnl_f32, cs)) ||
        (s = p_dnnl_memory_desc_init_by_strides(&e.bias, 2, biasd, dnnl_f32, biass))) {
        set_error("memory descriptor", s);
        return NULL;
    }
    dnnl_matmul_desc_t d;
    if ((s = p_dnnl_matmul_desc_init(&d, &e.a, &e.b, key->bias ? &e.bias : NULL, &e.c))) {
        set_error("matmul descriptor", s);
        return NULL;
    }
    dnnl_primitive_attr_t attr;
    if ((s = p_dnnl_primitive_attr_create(&attr))) { set_error("attribute", s); return NULL; }
    if (key->alpha != 1.0f) p_dnnl_primitive_attr_set_output_scales(attr, 1, 0, &key->alpha);
    if (key->beta != 0.0f) {
        dnnl_post_ops_t po;
        p_dnnl_post_ops_create(&po);
        p_dnnl_post_ops_append_sum(po, key->beta);
        p_dnnl_primitive_attr_set_post_ops(attr, po);
        p_dnnl_post_ops_destroy(po);
    }
    dnnl_primitive_desc_t pd;
    s = p_dnnl_primitive_desc_create(&pd, &d, attr, engine, NULL);
    p_dnnl_primitive_attr_destroy(attr);
    if (s) { set_error("matmul primitive descriptor", s); return NULL; }
    const char *impl = NULL;
    if (p_dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        snprintf(impl_name[key->a_type == DSQ_BF16 ? 1 : 0], sizeof impl_name[0], "%s", impl);
    s = p_dnnl_primitive_create(&e.prim, pd);
    p_dnnl_primitive_desc_destroy(pd);
    if (s) { set_error("matmul primitive", s); return NULL; }
    created++;
    int slot;
    if (cache_n < CACHE) slot = cache_n++;
    else {
        slot = cache_next;
        cache_next = (cache_next + 1) % CACHE;
        p_dnnl_primitive_destroy(cache[slot].prim);
    }
    cache[slot] = e;
    return &cache[slot];
}

static __thread int thread_omp = 0;  /* the OpenMP thread count last set on this thread */

int dsq_dnnl_gemm(long m, long n, long k, const void *a, int a_type, long a_rs, long a_cs, const void *b,
                  int b_type, long b_rs, long b_cs, int bf16, const float *bias, float *c, long ldc, float alpha,
                  float beta, int threads) {
    if (m == 0 || n == 0) return 0;
    if (!loaded) {
        snprintf(last_error, sizeof last_error, "oneDNN is not loaded");
        return -1;
    }
    if (bf16 && a_type == DSQ_F32) {
        a = to_bf16(0, a, m, k, &a_rs, &a_cs);
        a_type = DSQ_BF16;
    }
    if (bf16 && b_type == DSQ_F32) {
        b = to_bf16(1, b, k, n, &b_rs, &b_cs);
        b_type = DSQ_BF16;
    }
    if (!a || !b) {
        snprintf(last_error, sizeof last_error, "out of memory converting to bf16");
        return -1;
    }
    if (threads < 1) threads = 1;
    if (p_omp_set_num_threads && thread_omp != threads) {
        p_omp_set_num_threads(threads);
        thread_omp = threads;
    }
    mm_key_t key;
    memset(&key, 0, sizeof key);  /* padding too: keys are compared with memcmp */
    key.m = m; key.n = n; key.k = k; key.a_rs = a_rs; key.a_cs = a_cs; key.b_rs = b_rs; key.b_cs = b_cs;
    key.ldc = ldc; key.a_type = a_type; key.b_type = b_type; key.bias = bias != NULL; key.threads = threads;
    key.alpha = alpha; key.beta = beta;
    pthread_mutex_lock(&lock);
    entry_t *e = primitive(&key);
    int rc = -1;
    if (e) {
        dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, mbias = NULL;
        dnnl_status_t s;
        if ((s = p_dnnl_memory_create(&ma, &e->a, engine, (void *)a)) ||
            (s = p_dnnl_memory_create(&mb, &e->b, engine, (void *)b)) ||
            (s = p_dnnl_memory_create(&mc, &e->c, engine, c)) ||
            (bias && (s = p_dnnl_memory_create(&mbias, &e->bias, engine, (void *)bias)))) {
            set_error("memory", s);
        } else {
            dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc},
                                       {DNNL_ARG_BIAS, mbias}};
            s = p_dnnl_primitive_execute(e->prim, stream, bias ? 4 : 3, args);
            if (s == dnnl_success) s = p_dnnl_stream_wait(stream);
            if (s) set_error("matmul", s); else rc = 0;
        }
        if (ma) p_dnnl_memory_destroy(ma);
        if (mb) p_dnnl_memory_destroy(mb);
        if (mc) p_dnnl_memory_destroy(mc);
        if (mbias) p_dnnl_memory_destroy(mbias);
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

#else

int dsq_dnnl_gemm(long m, long n, long k, const void *a, int a_type, long a_rs, long a_cs, const void *b,
                  int b_type, long b_rs, long b_cs, int bf16, const float *bias, float *c, long ldc, float alpha,
                  float beta, int threads) {
    (void)m; (void)n; (void)k; (void)a; (void)a_type; (void)a_rs; (void)a_cs; (void)b; (void)b_type; (void)b_rs;
    (void)b_cs; (void)bf16; (void)bias; (void)c; (void)ldc; (void)alpha; (void)beta; (void)threads;
    snprintf(last_error, sizeof last_error, "built without oneDNN");
    return -1;
}

#endif
