/* punctum — the cpu backend's linear for a few rows (cpu_rows.h).
 *
 * Weights [out, in]: output rows in groups of ROW_GROUP, threads over groups; a group walks the
 * inputs in chunks, takes the chunk of its 4 weight rows and multiplies it with the same chunk
 * of every row of x, 2 rows of x at a time, so each weight is read from memory once per call
 * and the chunk stays in L1 while the rows of x pass over it. Float32 accumulation: vector
 * partial sums per chunk, added into a float per output.
 *
 * Two versions of the group: the portable one (C, the compiler's vectoriser; weights as float32
 * in place for aligned F32, else converted chunk by chunk into a stack buffer) and, on x86-64
 * with AVX2 + FMA + F16C, intrinsics reading weights in their dtype, 8 wide, or 16 wide where the
 * CPU has AVX-512 (chosen at run time; for tests PUNCTUM_CPU_NO_AVX512=1 forces the AVX2 one,
 * PUNCTUM_CPU_NO_AVX2=1 the portable one); these request the weights PREFETCH_AHEAD bytes on
 * as they go, since a decode step is bound by reading them from memory. Transposed weights [in,
 * out] (GPT-2's Conv1D): columns in blocks of COL_BLOCK, threads over blocks, one weight row
 * segment per input. */
#include "backend/cpu_rows.h"

#include "backend/cpu_math.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define PT_HAVE_AVX2_PATH 1
#else
#define PT_HAVE_AVX2_PATH 0
#endif

enum { ROW_GROUP = 4, IN_CHUNK = 1024, AVX2_CHUNK = 512, COL_BLOCK = 64 };

/* How far ahead the vector kernels request weights (into L2), in bytes, rounded up to whole
 * groups. A decode step streams every weight from memory once; the groups' rows are too short
 * for the hardware prefetcher to ramp up, so without requests of our own a 2-core Xeon read
 * weights at 12-16 GB/s of its 23 (greedy decode 1.22-1.27 -> 0.95-0.97 s, RESULTS.md). */
enum { PREFETCH_AHEAD = 32768 };

typedef union {
    uint32_t bits[IN_CHUNK];
    float f[IN_CHUNK];
} chunk_buf;

/* Weight row o, inputs k0 .. k0+kc, as float32: into the mapping when it can be read in place,
 * else converted into buf (BF16 inline: it is the common case and the shift vectorizes). */
static inline const float *row_chunk(const pt_linear_part *p, int in, int o, int k0, int kc,
                                     chunk_buf *buf) {
    const size_t i0 = (size_t)o * in + (size_t)k0;
    const pt_tensor *t = &p->w;
    if (t->dtype == PT_DT_F32 && (uintptr_t)t->data % sizeof(float) == 0)
        return (const float *)t->data + i0;
    if (t->dtype == PT_DT_BF16) {
        uint16_t h[IN_CHUNK];
        memcpy(h, (const unsigned char *)t->data + 2 * i0, 2 * (size_t)kc);
        for (int k = 0; k < kc; k++) buf->bits[k] = (uint32_t)h[k] << 16;
        return buf->f;
    }
    pt_tensor_to_f32(t, i0, 1, (size_t)kc, buf->f);
    return buf->f;
}

/* y[r, 0 .. g) = acc[r] (+= when accumulate) for r < n. */
static inline void store_group(const float acc[][ROW_GROUP], int n, int g, float *y, int ldy,
                               int accumulate) {
    for (int r = 0; r < n; r++)
        for (int j = 0; j < g; j++) {
            float *d = y + (size_t)r * ldy + j;
            *d = accumulate ? *d + acc[r][j] : acc[r][j];
        }
}

/* acc[i][j] += x_i . w_j over kc inputs, for rows x_i = x + i*ldx of x: 2 rows of x x 4 weight
 * rows, 8 independent sums to cover the FMA latency; the 1-row form finishes an odd count. */
static inline __attribute__((always_inline)) void
dot_2x4(const float *x, int ldx, const float *const w[ROW_GROUP], int kc, float acc[][ROW_GROUP]) {
    const float *xa = x, *xb = x + ldx;
    const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3, b0, b1, b2, b3)
    for (int k = 0; k < kc; k++) {
        const float u = xa[k], v = xb[k];
        a0 += u * w0[k], a1 += u * w1[k], a2 += u * w2[k], a3 += u * w3[k];
        b0 += v * w0[k], b1 += v * w1[k], b2 += v * w2[k], b3 += v * w3[k];
    }
    acc[0][0] += a0, acc[0][1] += a1, acc[0][2] += a2, acc[0][3] += a3;
    acc[1][0] += b0, acc[1][1] += b1, acc[1][2] += b2, acc[1][3] += b3;
}

static inline __attribute__((always_inline)) void
dot_1x4(const float *x, const float *const w[ROW_GROUP], int kc, float acc[ROW_GROUP]) {
    const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int k = 0; k < kc; k++) {
        const float u = x[k];
        a0 += u * w0[k], a1 += u * w1[k], a2 += u * w2[k], a3 += u * w3[k];
    }
    acc[0] += a0, acc[1] += a1, acc[2] += a2, acc[3] += a3;
}

/* y[r, o .. o+g) for all r < n; g <= ROW_GROUP (a short last group repeats its first row). */
static void row_group(const float *x, int n, int in, const pt_linear_part *p, int o, int g,
                      float *y, int ldy, int accumulate) {
    float acc[PT_CPU_FEW_ROWS][ROW_GROUP];
    memset(acc, 0, sizeof acc);
    chunk_buf buf[ROW_GROUP];
    for (int k0 = 0; k0 < in; k0 += IN_CHUNK) {
        const int kc = in - k0 < IN_CHUNK ? in - k0 : IN_CHUNK;
        const float *w[ROW_GROUP];
        for (int j = 0; j < ROW_GROUP; j++)
            w[j] = j < g ? row_chunk(p, in, o + j, k0, kc, &buf[j]) : w[0];
        int r = 0;
        for (; r + 1 < n; r += 2) dot_2x4(x + (size_t)r * in + k0, in, w, kc, &acc[r]);
        if (r < n) dot_1x4(x + (size_t)r * in + k0, w, kc, acc[r]);
    }
    store_group(acc, n, g, y + o, ldy, accumulate);
}

#if PT_HAVE_AVX2_PATH
/* ---- x86-64 with AVX2 + FMA + F16C: register-blocked 2 x 4 kernels, weights read in their
 * dtype (BF16 widened by a shift, F16 by vcvtph2ps), so a BF16 model streams 2 bytes a weight.
 * 2 rows of x x 4 weight rows = 8 sums + 6 loads in 14 of the 16 ymm registers; left to
 * itself GCC folds each weight load into the FMAs (loading it once per row of x: 10 loads per
 * 8 FMAs, load-bound), so an empty asm pins the weight vectors in registers. */
#include <cpuid.h>
#include <immintrin.h>

#define PT_AVX2 __attribute__((target("avx2,fma,f16c")))

/* The group's weight rows o .. o+g (a short last group repeats its first row): element offsets
 * and byte pointers. Returns the distance in bytes from each row to the same element of the
 * group PREFETCH_AHEAD bytes on (whole groups), 0 when that group is past the last. */
static inline size_t group_weight_rows(const pt_linear_part *p, int in, int o, int g, pt_dtype dt,
                                       const unsigned char *w[ROW_GROUP], size_t i_row[ROW_GROUP]) {
    const size_t es = pt_tensor_esize(dt), group_bytes = (size_t)ROW_GROUP * in * es;
    for (int j = 0; j < ROW_GROUP; j++) {
        i_row[j] = (size_t)(o + (j < g ? j : 0)) * (size_t)in;
        w[j] = (const unsigned char *)p->w.data + i_row[j] * es;
    }
    const size_t groups = (PREFETCH_AHEAD + group_bytes - 1) / group_bytes;
    return (size_t)o + (groups + 1) * ROW_GROUP <= (size_t)p->out ? groups * group_bytes : 0;
}

/* What one pass over a chunk requests: the weight rows' bytes `ahead` on (0: none) of the
 * chunk's inputs [lo, hi). The passes of a chunk (one per block of rows of x) share its inputs,
 * so that the requests are spread over the time the chunk is in use, not issued in a burst by
 * the first pass (measured: up to 8% on bench_linear at 16-32 rows). */
typedef struct {
    size_t ahead;
    int lo, hi;
} pf_share;

/* Pass `pass` of `passes` over a chunk of kc inputs; shares start at multiples of 32 inputs,
 * whole cache lines in every dtype. */
static inline pf_share pass_share(size_t ahead, int kc, int pass, int passes) {
    const int lo = (int)((int64_t)kc * pass / passes) & ~31;
    const int hi = pass == passes - 1 ? kc : (int)((int64_t)kc * (pass + 1) / passes) & ~31;
    return (pf_share){ahead, pass ? lo : 0, hi};
}

/* Request the cache lines of inputs [k, k + n) of each weight row (k relative to the chunk at
 * k0), if the pass's share holds them. */
static inline __attribute__((always_inline)) void
prefetch_rows(const unsigned char *const w[ROW_GROUP], const pf_share *pf, int k, int k0, int n,
              size_t es) {
    if (!pf->ahead || k < pf->lo || k >= pf->hi) return;
    const size_t b0 = (size_t)(k0 + k) * es, b1 = b0 + (size_t)n * es;
    for (size_t b = (b0 + 63) & ~(size_t)63; b < b1; b += 64) /* each line once */
        for (int j = 0; j < ROW_GROUP; j++)
            _mm_prefetch((const char *)w[j] + pf->ahead + b, _MM_HINT_T1);
}

static inline PT_AVX2 __attribute__((always_inline)) __m256 load8(const unsigned char *row, int k,
                                                                  pt_dtype dt) {
    if (dt == PT_DT_F32) return _mm256_loadu_ps((const float *)(const void *)(row + 4 * (size_t)k));
    const __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(row + 2 * (size_t)k));
    if (dt == PT_DT_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline PT_AVX2 float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Eight horizontal sums at once: lane 4i + j of the result is the sum of the lanes of
 * a[i][j] (6 hadds, 1 lane swap, 1 add, instead of 8 reductions of 3 shuffles and 3 adds). */
static inline PT_AVX2 __m256 hsum8x8(const __m256 a[2][ROW_GROUP]) {
    const __m256 r0 =
        _mm256_hadd_ps(_mm256_hadd_ps(a[0][0], a[0][1]), _mm256_hadd_ps(a[0][2], a[0][3]));
    const __m256 r1 =
        _mm256_hadd_ps(_mm256_hadd_ps(a[1][0], a[1][1]), _mm256_hadd_ps(a[1][2], a[1][3]));
    /* r_i: each 128-bit half holds that half's sums of a[i][0 .. 3] */
    return _mm256_add_ps(_mm256_permute2f128_ps(r0, r1, 0x20),
                         _mm256_permute2f128_ps(r0, r1, 0x31));
}

/* acc[i][j] += x_i . w_j over inputs k0 .. k0+kc for the rows x_i (i < rows <= 2) of x. */
static inline PT_AVX2 __attribute__((always_inline)) void
block_avx2(const float *x, int ldx, int rows, const pt_linear_part *p,
           const unsigned char *const w[ROW_GROUP], size_t i_row[ROW_GROUP], int k0, int kc,
           pt_dtype dt, pf_share pf, float acc[][ROW_GROUP]) {
    const int kv = kc & ~7;
    const size_t es = pt_tensor_esize(dt);
    if (rows == 2) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0,
               b3 = a0;
        const float *xa = x + k0, *xb = xa + ldx;
        for (int k = 0; k < kv; k += 8) {
            prefetch_rows(w, &pf, k, k0, 8, es);
            __m256 w0 = load8(w[0], k0 + k, dt), w1 = load8(w[1], k0 + k, dt);
            __m256 w2 = load8(w[2], k0 + k, dt), w3 = load8(w[3], k0 + k, dt);
            /* keep each weight vector in a register: folded into the FMAs it is loaded twice */
            __asm__("" : "+x"(w0), "+x"(w1), "+x"(w2), "+x"(w3));
            const __m256 u = _mm256_loadu_ps(xa + k), v = _mm256_loadu_ps(xb + k);
            a0 = _mm256_fmadd_ps(u, w0, a0), a1 = _mm256_fmadd_ps(u, w1, a1);
            a2 = _mm256_fmadd_ps(u, w2, a2), a3 = _mm256_fmadd_ps(u, w3, a3);
            b0 = _mm256_fmadd_ps(v, w0, b0), b1 = _mm256_fmadd_ps(v, w1, b1);
            b2 = _mm256_fmadd_ps(v, w2, b2), b3 = _mm256_fmadd_ps(v, w3, b3);
        }
        const __m256 sums[2][ROW_GROUP] = {{a0, a1, a2, a3}, {b0, b1, b2, b3}};
        _mm256_storeu_ps(acc[0], _mm256_add_ps(_mm256_loadu_ps(acc[0]), hsum8x8(sums)));
    } else {
        /* one row: two sums per weight row (even and odd vectors), again 8 in flight */
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0,
               b3 = a0;
        const float *xa = x + k0;
        int k = 0;
        for (; k + 16 <= kv; k += 16) {
            prefetch_rows(w, &pf, k, k0, 16, es);
            const __m256 u = _mm256_loadu_ps(xa + k), v = _mm256_loadu_ps(xa + k + 8);
            a0 = _mm256_fmadd_ps(u, load8(w[0], k0 + k, dt), a0);
            a1 = _mm256_fmadd_ps(u, load8(w[1], k0 + k, dt), a1);
            a2 = _mm256_fmadd_ps(u, load8(w[2], k0 + k, dt), a2);
            a3 = _mm256_fmadd_ps(u, load8(w[3], k0 + k, dt), a3);
            b0 = _mm256_fmadd_ps(v, load8(w[0], k0 + k + 8, dt), b0);
            b1 = _mm256_fmadd_ps(v, load8(w[1], k0 + k + 8, dt), b1);
            b2 = _mm256_fmadd_ps(v, load8(w[2], k0 + k + 8, dt), b2);
            b3 = _mm256_fmadd_ps(v, load8(w[3], k0 + k + 8, dt), b3);
        }
        if (k < kv) {
            const __m256 u = _mm256_loadu_ps(xa + k);
            a0 = _mm256_fmadd_ps(u, load8(w[0], k0 + k, dt), a0);
            a1 = _mm256_fmadd_ps(u, load8(w[1], k0 + k, dt), a1);
            a2 = _mm256_fmadd_ps(u, load8(w[2], k0 + k, dt), a2);
            a3 = _mm256_fmadd_ps(u, load8(w[3], k0 + k, dt), a3);
        }
        acc[0][0] += hsum8(_mm256_add_ps(a0, b0)), acc[0][1] += hsum8(_mm256_add_ps(a1, b1));
        acc[0][2] += hsum8(_mm256_add_ps(a2, b2)), acc[0][3] += hsum8(_mm256_add_ps(a3, b3));
    }
    for (int k = k0 + kv; k < k0 + kc; k++) /* the last inputs of a row that no vector covers */
        for (int j = 0; j < ROW_GROUP; j++) {
            const float wv = pt_tensor_get(&p->w, i_row[j] + (size_t)k);
            for (int i = 0; i < rows; i++) acc[i][j] += x[(size_t)i * ldx + k] * wv;
        }
}

static inline PT_AVX2 __attribute__((always_inline)) void group_avx2(const float *x, int n, int in,
                                                                     const pt_linear_part *p, int o,
                                                                     int g, pt_dtype dt,
                                                                     float acc[][ROW_GROUP]) {
    const unsigned char *w[ROW_GROUP];
    size_t i_row[ROW_GROUP];
    const size_t ahead = group_weight_rows(p, in, o, g, dt, w, i_row);
    for (int k0 = 0; k0 < in; k0 += AVX2_CHUNK) {
        const int kc = in - k0 < AVX2_CHUNK ? in - k0 : AVX2_CHUNK;
        for (int r = 0; r < n; r += 2)
            block_avx2(x + (size_t)r * in, in, n - r >= 2 ? 2 : 1, p, w, i_row, k0, kc, dt,
                       pass_share(ahead, kc, r / 2, (n + 1) / 2), &acc[r]);
    }
}

/* y[r, o .. o+g) for all r < n, as row_group. */
static PT_AVX2 void row_group_avx2(const float *x, int n, int in, const pt_linear_part *p, int o,
                                   int g, float *y, int ldy, int accumulate) {
    float acc[PT_CPU_FEW_ROWS][ROW_GROUP];
    memset(acc, 0, (size_t)n * sizeof acc[0]);
    switch (p->w.dtype) { /* one specialised loop per dtype */
    case PT_DT_F32:
        group_avx2(x, n, in, p, o, g, PT_DT_F32, acc);
        break;
    case PT_DT_F16:
        group_avx2(x, n, in, p, o, g, PT_DT_F16, acc);
        break;
    default:
        group_avx2(x, n, in, p, o, g, PT_DT_BF16, acc);
        break;
    }
    store_group(acc, n, g, y + o, ldy, accumulate);
}

/* ---- x86-64 with AVX-512 (F, BW, DQ, VL) + F16C: the same kernel 16 wide, 4 rows of x x 4
 * weight rows = 16 sums in 32 zmm registers, so each weight vector loaded from L1 serves 4 rows
 * of x (the AVX2 kernel: 2), and 8 rows of a decode batch take 2 passes over a chunk, not 4. */
#define PT_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))

static inline PT_AVX512 __attribute__((always_inline)) __m512 load16(const unsigned char *row,
                                                                     int k, pt_dtype dt) {
    if (dt == PT_DT_F32) return _mm512_loadu_ps((const void *)(row + 4 * (size_t)k));
    const __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(row + 2 * (size_t)k));
    if (dt == PT_DT_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Sixteen horizontal sums at once: lane 4i + j of the result is the sum of the lanes of
 * s[i][j]. A transposing tree (30 shuffles, 15 adds) instead of 16 reductions (64 + 64): at a
 * few rows the kernel is bound by arithmetic, and these sums come once per chunk and block. */
static inline PT_AVX512 __attribute__((always_inline)) __m512 hsum16x16(__m512 s[4][ROW_GROUP]) {
    __m512 t[8], u[4], w[2];
    for (int m = 0; m < 8; m++) { /* vectors v[4j + i] = s[i][j], in pairs (v[2m], v[2m + 1]) */
        const __m512 a = s[(2 * m) % 4][(2 * m) / 4], b = s[(2 * m + 1) % 4][(2 * m + 1) / 4];
        t[m] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    } /* t[m]: v[2m] in its low 256 bits, v[2m + 1] in its high 256 (each as 8 partial sums) */
    for (int m = 0; m < 4; m++)
        u[m] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * m], t[2 * m + 1], 0x88),
                             _mm512_shuffle_f32x4(t[2 * m], t[2 * m + 1], 0xDD));
    /* u[m]: 128-bit lane q holds v[4m + q] as 4 partial sums */
    for (int m = 0; m < 2; m++)
        w[m] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * m], u[2 * m + 1], 0x44),
                             _mm512_shuffle_ps(u[2 * m], u[2 * m + 1], 0xEE));
    /* w[m], lane q: v[8m + q] as 2 sums, then v[8m + 4 + q] as 2 */
    return _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xDD));
    /* lane q: v[q], v[4 + q], v[8 + q], v[12 + q] = s[q][0 .. 3]: element 4q + j */
}

/* acc[i][j] += x_i . w_j over inputs k0 .. k0+kc for the rows x_i (i < R <= 4) of x; R is a
 * constant at every call, so the sums stay in registers. One row keeps two sums per weight row
 * (even and odd vectors): 8 chains cover the FMA latency as 16 do for 4 rows. */
static inline PT_AVX512 __attribute__((always_inline)) void
block_avx512(const float *x, int ldx, const int R, const pt_linear_part *p,
             const unsigned char *const w[ROW_GROUP], const size_t i_row[ROW_GROUP], int k0, int kc,
             pt_dtype dt, pf_share pf, float acc[][ROW_GROUP]) {
    const int step = R == 1 ? 32 : 16, kv = kc / step * step;
    const size_t es = pt_tensor_esize(dt);
    __m512 s[4][ROW_GROUP];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < ROW_GROUP; j++) s[i][j] = _mm512_setzero_ps();
    for (int k = 0; k < kv; k += step) {
        prefetch_rows(w, &pf, k, k0, step, es);
        __m512 w0 = load16(w[0], k0 + k, dt), w1 = load16(w[1], k0 + k, dt);
        __m512 w2 = load16(w[2], k0 + k, dt), w3 = load16(w[3], k0 + k, dt);
        __asm__("" : "+v"(w0), "+v"(w1), "+v"(w2), "+v"(w3)); /* see block_avx2 */
        for (int i = 0; i < R; i++) {
            const __m512 u = _mm512_loadu_ps(x + (size_t)i * ldx + k0 + k);
            s[i][0] = _mm512_fmadd_ps(u, w0, s[i][0]), s[i][1] = _mm512_fmadd_ps(u, w1, s[i][1]);
            s[i][2] = _mm512_fmadd_ps(u, w2, s[i][2]), s[i][3] = _mm512_fmadd_ps(u, w3, s[i][3]);
        }
        if (R == 1) {
            const __m512 v = _mm512_loadu_ps(x + k0 + k + 16);
            for (int j = 0; j < ROW_GROUP; j++)
                s[1][j] = _mm512_fmadd_ps(v, load16(w[j], k0 + k + 16, dt), s[1][j]);
        }
    }
    if (R == 1)
        for (int j = 0; j < ROW_GROUP; j++) s[0][j] = _mm512_add_ps(s[0][j], s[1][j]);
    if (R == 4) { /* acc[0 .. 4) are 16 consecutive floats */
        _mm512_storeu_ps(acc[0], _mm512_add_ps(_mm512_loadu_ps(acc[0]), hsum16x16(s)));
    } else {
        for (int i = 0; i < R; i++)
            for (int j = 0; j < ROW_GROUP; j++) acc[i][j] += _mm512_reduce_add_ps(s[i][j]);
    }
    for (int k = k0 + kv; k < k0 + kc; k++) /* the last inputs of a row that no vector covers */
        for (int j = 0; j < ROW_GROUP; j++) {
            const float wv = pt_tensor_get(&p->w, i_row[j] + (size_t)k);
            for (int i = 0; i < R; i++) acc[i][j] += x[(size_t)i * ldx + k] * wv;
        }
}

static inline PT_AVX512 __attribute__((always_inline)) void
group_avx512(const float *x, int n, int in, const pt_linear_part *p, int o, int g, pt_dtype dt,
             float acc[][ROW_GROUP]) {
    const unsigned char *w[ROW_GROUP];
    size_t i_row[ROW_GROUP];
    const size_t ahead = group_weight_rows(p, in, o, g, dt, w, i_row);
    for (int k0 = 0; k0 < in; k0 += AVX2_CHUNK) {
        const int kc = in - k0 < AVX2_CHUNK ? in - k0 : AVX2_CHUNK;
        for (int r = 0; r < n; r += 4) {
            const float *xr = x + (size_t)r * in;
            const pf_share pf = pass_share(ahead, kc, r / 4, (n + 3) / 4);
            switch (n - r) { /* a constant row count in each call */
            case 1:
                block_avx512(xr, in, 1, p, w, i_row, k0, kc, dt, pf, &acc[r]);
                break;
            case 2:
                block_avx512(xr, in, 2, p, w, i_row, k0, kc, dt, pf, &acc[r]);
                break;
            case 3:
                block_avx512(xr, in, 3, p, w, i_row, k0, kc, dt, pf, &acc[r]);
                break;
            default:
                block_avx512(xr, in, 4, p, w, i_row, k0, kc, dt, pf, &acc[r]);
                break;
            }
        }
    }
}

/* y[r, o .. o+g) for all r < n, as row_group. */
static PT_AVX512 void row_group_avx512(const float *x, int n, int in, const pt_linear_part *p,
                                       int o, int g, float *y, int ldy, int accumulate) {
    float acc[PT_CPU_FEW_ROWS][ROW_GROUP];
    memset(acc, 0, (size_t)n * sizeof acc[0]);
    switch (p->w.dtype) { /* one specialised loop per dtype */
    case PT_DT_F32:
        group_avx512(x, n, in, p, o, g, PT_DT_F32, acc);
        break;
    case PT_DT_F16:
        group_avx512(x, n, in, p, o, g, PT_DT_F16, acc);
        break;
    default:
        group_avx512(x, n, in, p, o, g, PT_DT_BF16, acc);
        break;
    }
    store_group(acc, n, g, y + o, ldy, accumulate);
}

static int use_avx512(void) {
    static int have = -1; /* a benign race: every thread computes the same value */
    if (have < 0)
        have = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    return have;
}

static int use_avx2(void) {
    static int have = -1; /* a benign race: every thread computes the same value */
    if (have < 0) {
        /* F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports has no "f16c" */
        unsigned a, b, c = 0, d;
        const int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    }
    return have;
}
#endif

/* Transposed weights: y[r, c0 .. c0+cb) for all r < n, cb <= COL_BLOCK. */
PT_CLONES static void col_block(const float *x, int n, int in, const pt_linear_part *p, int c0,
                                int cb, float *y, int ldy, int accumulate) {
    float acc[PT_CPU_FEW_ROWS][COL_BLOCK];
    memset(acc, 0, sizeof acc);
    const int in_place = p->w.dtype == PT_DT_F32 && (uintptr_t)p->w.data % sizeof(float) == 0;
    float seg[COL_BLOCK];
    for (int k = 0; k < in; k++) {
        const size_t i0 = (size_t)k * p->out + (size_t)c0;
        const float *w = seg;
        if (in_place)
            w = (const float *)p->w.data + i0;
        else
            pt_tensor_to_f32(&p->w, i0, 1, (size_t)cb, seg);
        for (int r = 0; r < n; r++) {
            const float xv = x[(size_t)r * in + k];
            float *a = acc[r];
#pragma omp simd
            for (int j = 0; j < cb; j++) a[j] += xv * w[j];
        }
    }
    for (int r = 0; r < n; r++) {
        float *d = y + (size_t)r * ldy + c0;
        for (int j = 0; j < cb; j++) d[j] = accumulate ? d[j] + acc[r][j] : acc[r][j];
    }
}

void pt_cpu_rows_linear(const float *x, int n, int in, const pt_linear_part *p, float *y, int ldy,
                        int accumulate) {
    const int out = p->out;
    if (p->transposed) {
        const int blocks = (out + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
        for (int b = 0; b < blocks; b++) {
            const int c0 = b * COL_BLOCK;
            col_block(x, n, in, p, c0, out - c0 < COL_BLOCK ? out - c0 : COL_BLOCK, y, ldy,
                      accumulate);
        }
        return;
    }
    const int groups = (out + ROW_GROUP - 1) / ROW_GROUP;
    void (*group)(const float *, int, int, const pt_linear_part *, int, int, float *, int, int) =
        row_group;
#if PT_HAVE_AVX2_PATH
    if (use_avx2() && !getenv("PUNCTUM_CPU_NO_AVX2"))
        group =
            use_avx512() && !getenv("PUNCTUM_CPU_NO_AVX512") ? row_group_avx512 : row_group_avx2;
#endif
#pragma omp parallel for schedule(static)
    for (int gi = 0; gi < groups; gi++) {
        const int o = gi * ROW_GROUP;
        group(x, n, in, p, o, out - o < ROW_GROUP ? out - o : ROW_GROUP, y, ldy, accumulate);
    }
}
