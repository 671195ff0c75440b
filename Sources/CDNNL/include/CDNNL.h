#ifndef CDNNL_H
#define CDNNL_H
/// oneDNN (libdnnl.so.2), loaded at run time with dlopen, for the engine's matrix products in fp32 and in
/// bf16 (bf16 inputs, fp32 accumulation and output). Neither the build nor the binary needs oneDNN: the
/// shim compiles against its header when the header is there (`libdnnl-dev`) and to stubs otherwise, and
/// a missing library is reported by `dsq_dnnl_load` so the caller can fall back to OpenBLAS fp32.
///
/// oneDNN 2.x keeps its ABI within the major version (the soname is libdnnl.so.2); Debian's build runs
/// its products on an OpenMP (libgomp) pool. Before loading, unless the user set them, the shim sets
/// OMP_WAIT_POLICY=passive (idle OpenMP workers sleep at once instead of spinning for ~300,000 rounds,
/// which took the second core from our own kernels and OpenBLAS between products) and the OpenMP thread
/// count is set per calling thread (`threads` of `dsq_dnnl_gemm`).

#include <stdint.h>

/// Loads oneDNN once (thread-safe). Returns 0 on success; otherwise writes why to `err` (a missing
/// library, a build without the oneDNN header, or DIFFUSEQ_ONEDNN_LIBRARY naming a file that does not load).
int dsq_dnnl_load(char *err, int errlen);
/// "2.6.3" (or "" before a successful load).
const char *dsq_dnnl_version(void);
/// oneDNN's implementation name for the last product of each kind it created, e.g. "brg:avx512_core_bf16"
/// (`bf16` = 1) or "brg:avx512_core" (0); "" when none was made yet.
const char *dsq_dnnl_impl(int bf16);
/// Whether the CPU has AVX512-BF16 (`vdpbf16ps`, `vcvtneps2bf16`), from CPUID; 0 when DIFFUSEQ_NO_BF16 is set
/// (to 1 or anything but 0): the fallback of a CPU without it, on one that has it.
int dsq_cpu_has_bf16(void);
/// Single-thread throughput of bf16 dot products (`vdpbf16ps`) divided by fp32 FMA (`vfmadd231ps`), both
/// 512 bits wide, in multiply-adds per second: measured once (about 2 ms) on first call. 0 without
/// AVX512-BF16. Some CPUs with the instruction run it at a fraction of the FMA rate, so bf16 products are
/// slower there than fp32; `auto` uses this ratio to decide.
double dsq_bf16_speed_ratio(void);

/// dst[i] = bf16(src[i]) for i < n, rounded to nearest even; NaN stays NaN; denormals become signed zero
/// (as `vcvtneps2bf16`, which the AVX512-BF16 path uses; the portable path gives the same bits).
void dsq_f32_to_bf16(uint16_t *dst, const float *src, long n);
/// `dsq_f32_to_bf16` in place: the n bf16 values end up in the first 2n bytes of `x` (each block is read
/// before anything is written over it, in increasing order).
void dsq_f32_to_bf16_inplace(float *x, long n);
/// The portable conversion (tests compare it with the instruction).
void dsq_f32_to_bf16_portable(uint16_t *dst, const float *src, long n);
/// dst[i] = the float of bf16 src[i].
void dsq_bf16_to_f32(float *dst, const uint16_t *src, long n);

/// Element type of a `dsq_dnnl_gemm` operand.
#define DSQ_F32 0
#define DSQ_BF16 1

/// C (m × n, row stride ldc, fp32) = alpha·A·B + bias + beta·C with A (m × k) element (i, p) at
/// a[i·a_rs + p·a_cs] and B (k × n) element (p, j) at b[p·b_rs + j·b_cs] (so a transposed operand is only a
/// pair of strides). Operands are fp32 or bf16 (`a_type`, `b_type`); with `bf16` set, fp32 operands are
/// converted to bf16 first (into per-thread scratch) and the product runs in bf16 with fp32 accumulation;
/// without it both must be fp32. `bias` (n floats, may be NULL) is added to every row; a bias and alpha ≠ 1
/// are not combined. `threads`: OpenMP threads of the product (≥ 1). Primitives are cached by shape,
/// strides, types, alpha, beta and threads. Returns 0, or a oneDNN status (the error text is then in
/// `dsq_dnnl_error`). Calls from several threads are serialised.
int dsq_dnnl_gemm(long m, long n, long k, const void *a, int a_type, long a_rs, long a_cs, const void *b,
                  int b_type, long b_rs, long b_cs, int bf16, const float *bias, float *c, long ldc, float alpha,
                  float beta, int threads);
/// The last error of `dsq_dnnl_gemm`.
const char *dsq_dnnl_error(void);
/// Primitives the calling thread has created so far (tests: the cache is reused).
long dsq_dnnl_primitives_created(void);
#endif
