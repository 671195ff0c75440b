#include "CKernels.h"
#include <math.h>

#pragma clang fp contract(off)

#if !defined(__has_feature)
#define __has_feature(x) 0
#endif
/* Not under ThreadSanitizer: the ifunc resolvers that target_clones generates run while the dynamic
   loader relocates, before the TSan runtime is up, and TSan instruments them (SIGSEGV in
   __tsan_func_entry). The baseline variant gives the same bits (tested). */
#if defined(__x86_64__) && defined(__clang__) && !__has_feature(thread_sanitizer)
#define DSQ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DSQ_CLONES
#endif

/* The same operations as Kernels.ferf in Swift: clamp to [-4, 4], odd rational approximation. */
static inline float ferf(float a) {
    float x = a < -4.0f ? -4.0f : a;
    x = x > 4.0f ? 4.0f : x;
    float x2 = x * x;
    float p = -2.7261423e-10f;
    p = p * x2 + 2.7706814e-08f;
    p = p * x2 - 2.1010240e-06f;
    p = p * x2 - 5.6925064e-05f;
    p = p * x2 - 7.3499063e-04f;
    p = p * x2 - 2.9546000e-03f;
    p = p * x2 - 1.6096033e-02f;
    p = p * x;
    float q = -1.4566072e-05f;
    q = q * x2 - 2.1337406e-04f;
    q = q * x2 - 1.6828270e-03f;
    q = q * x2 - 7.3733292e-03f;
    q = q * x2 - 1.4264739e-02f;
    return p / q;
}

/* The same algorithm as Kernels.fexp in Swift: n = round(x/ln 2) by the 1.5·2^23 trick, Cody–Waite
   reduction, degree-7 Taylor polynomial, times 2^n. */
static inline float fexp(float x) {
    float xc = x < -87.0f ? -87.0f : x;
    xc = xc > 88.0f ? 88.0f : xc;
    float n = (xc * 1.44269504f + 12582912.0f) - 12582912.0f;
    float r = (xc - n * 0.69314575f) - n * 1.4286068e-6f;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { unsigned u; float f; } scale;
    scale.u = (unsigned)((int)n + 127) << 23;
    return p * scale.f;
}

DSQ_CLONES
void dsq_softmax_rows(float *restrict x, long rows, long cols) {
    for (long r = 0; r < rows; r++) {
        float *row = x + r * cols;
        float m = row[0];
        for (long j = 1; j < cols; j++) m = row[j] > m ? row[j] : m;
        float acc[16] = {0};
        long j = 0;
        for (; j + 16 <= cols; j += 16)
            for (int l = 0; l < 16; l++) { float e = fexp(row[j + l] - m); row[j + l] = e; acc[l] += e; }
        for (int w = 8; w > 0; w /= 2)
            for (int l = 0; l < w; l++) acc[l] += acc[l + w];
        float s = acc[0];
        for (; j < cols; j++) { float e = fexp(row[j] - m); row[j] = e; s += e; }
        float inv = 1.0f / s;
        for (j = 0; j < cols; j++) row[j] *= inv;
    }
}

DSQ_CLONES
void dsq_gelu(float *restrict out, const float *restrict in, long n) {
    for (long i = 0; i < n; i++) {
        float x = in[i];
        out[i] = 0.5f * x * (1.0f + ferf(x * 0.70710678f));
    }
}

/* Σ x[0..<c] as 16 interleaved partial sums reduced pairwise, then the tail: a fixed order. */
static inline float sum16(const float *x, long c) {
    float acc[16] = {0};
    long j = 0;
    for (; j + 16 <= c; j += 16)
        for (int l = 0; l < 16; l++) acc[l] += x[j + l];
    for (int w = 8; w > 0; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    float s = acc[0];
    for (; j < c; j++) s += x[j];
    return s;
}

/* Σ (x − m)² in the same order as sum16. */
static inline float sqdev16(const float *x, long c, float m) {
    float acc[16] = {0};
    long j = 0;
    for (; j + 16 <= c; j += 16)
        for (int l = 0; l < 16; l++) { float d = x[j + l] - m; acc[l] += d * d; }
    for (int w = 8; w > 0; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    float s = acc[0];
    for (; j < c; j++) { float d = x[j] - m; s += d * d; }
    return s;
}

DSQ_CLONES
void dsq_layernorm(float *out, float *mean, float *rstd, const float *in, const float *w, const float *b,
                   long n, long c, float eps) {
    for (long r = 0; r < n; r++) {
        const float *x = in + r * c;
        float *y = out + r * c;
        float m = sum16(x, c) / (float)c;
        float v = sqdev16(x, c, m);
        float rs = 1.0f / sqrtf(v / (float)c + eps);
        for (long j = 0; j < c; j++) y[j] = (x[j] - m) * rs * w[j] + b[j];
        if (mean) mean[r] = m;
        if (rstd) rstd[r] = rs;
    }
}

DSQ_CLONES
void dsq_matvec(float *restrict out, const float *restrict a, long rows, long cols, const float *restrict x) {
    for (long r = 0; r < rows; r++) {
        const float *row = a + r * cols;
        float acc[16] = {0};
        long j = 0;
        for (; j + 16 <= cols; j += 16)
            for (int l = 0; l < 16; l++) acc[l] += row[j + l] * x[j + l];
        for (int w = 8; w > 0; w /= 2)
            for (int l = 0; l < w; l++) acc[l] += acc[l + w];
        float s = acc[0];
        for (; j < cols; j++) s += row[j] * x[j];
        out[r] = s;
    }
}

DSQ_CLONES
void dsq_scan_nearest(const float *restrict scores, long rows, long n, const float *restrict norms,
                      const float *restrict xnorm, int start, float *restrict best, float *restrict second,
                      int *restrict arg) {
    for (long r = 0; r < rows; r++) {
        const float *row = scores + r * n;
        const float xn = xnorm[r];
        float b1 = best[r], b2 = second[r];
        int a = arg[r];
        long k = 0;
        for (; k + 16 <= n; k += 16) {
            float d[16];
            int hit = 0;
            for (int l = 0; l < 16; l++) {
                float t = (norms[k + l] + xn) - 2.0f * row[k + l];
                d[l] = t > 0.0f ? t : 0.0f;
                hit |= d[l] < b2;
            }
            if (hit) {
                for (int l = 0; l < 16; l++) {
                    if (d[l] < b1) { b2 = b1; b1 = d[l]; a = start + (int)(k + l); }
                    else if (d[l] < b2) { b2 = d[l]; }
                }
            }
        }
        for (; k < n; k++) {
            float t = (norms[k] + xn) - 2.0f * row[k];
            float dk = t > 0.0f ? t : 0.0f;
            if (dk < b1) { b2 = b1; b1 = dk; a = start + (int)k; }
            else if (dk < b2) { b2 = dk; }
        }
        best[r] = b1; second[r] = b2; arg[r] = a;
    }
}

DSQ_CLONES
void dsq_scan_argmax(const float *restrict scores, long rows, long n, const float *restrict bias, int start,
                     float *restrict best, int *restrict arg) {
    for (long r = 0; r < rows; r++) {
        const float *row = scores + r * n;
        float b = best[r];
        int a = arg[r];
        long k = 0;
        for (; k + 16 <= n; k += 16) {
            float v[16];
            int hit = 0;
            for (int l = 0; l < 16; l++) { v[l] = row[k + l] + bias[k + l]; hit |= v[l] > b; }
            if (hit) {
                for (int l = 0; l < 16; l++) if (v[l] > b) { b = v[l]; a = start + (int)(k + l); }
            }
        }
        for (; k < n; k++) { float v = row[k] + bias[k]; if (v > b) { b = v; a = start + (int)k; } }
        best[r] = b; arg[r] = a;
    }
}

const char *dsq_kernels_isa(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return "avx512f";
    if (__builtin_cpu_supports("avx2")) return "avx2";
#endif
    return "baseline";
}
