/* punctum — the CPU backend: the reference. float32, OpenBLAS GEMMs, OpenMP threads.
 *
 * Deterministic: our own reductions have a fixed order, independent of the thread count and
 * of how sequences are packed into a batch (attention work is split by (segment, head) and each
 * task owns its outputs: no atomics, no order-dependent sums). */
#include "punctum/backend.h"

#include "backend/cpu_math.h"
#include "backend/cpu_rows.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS extension (declared in its cblas.h in some builds, not all). */
void openblas_set_num_threads(int num_threads);

enum { ATTN_QBLOCK = 64 }; /* queries per score block: bounds scratch to 64 x T per thread */

/* Weights not usable in place (F16, BF16, unaligned F32) are converted a block of output rows
 * at a time (about WBLOCK_BYTES of float32, at least WBLOCK_MIN_ROWS rows) into one reused
 * buffer right before the GEMM that uses it: no float32 copy of the model exists. Blocks are
 * large because every GEMM call repacks the activations: with 8 MiB blocks a BF16 projection
 * costs what the F32 one does (benchmarks/bench_bf16.py; blocks of 0.5 MiB cost 10-30% more). */
enum { WBLOCK_BYTES = 8 << 20, WBLOCK_MIN_ROWS = 16 };

/* cos/sin of one RoPE table by position: [positions][half] each */
typedef struct {
    float *cos, *sin;
    const float *freq_of; /* the inv_freq it was built from */
    int positions, half;
    float factor; /* the attention factor they include */
} rope_table;
enum { ROPE_TABLES = 3 };

typedef struct {
    int n_threads;
    /* per-thread scratch (reserve / load_weights): attention scores and mass sums ... */
    float **scores;
    double **mass_acc;
    size_t scratch_keys;
    /* ... and rows of a converted position embedding */
    float **rowbuf;
    size_t rowbuf_floats;
    /* linears of at most this many rows stream the weights (cpu_rows.h); more use the GEMM */
    int few_rows;
    /* converted weight blocks (shared: the threads convert a block together) */
    float *wblock;
    size_t wblock_floats;
    /* RoPE cos/sin by position for each inv_freq table (model.h: global, long, local), shared
     * by the layers */
    rope_table rope[ROPE_TABLES];
} cpu_ctx;

static void *cpu_alloc(pt_backend *be, size_t bytes);

/* Per-thread arrays of `bytes` each (the old ones freed). -1: out of memory (status set). */
static int thread_bufs(pt_backend *be, void **bufs, size_t bytes) {
    cpu_ctx *c = be->ctx;
    for (int t = 0; t < c->n_threads; t++) {
        free(bufs[t]);
        bufs[t] = NULL;
    }
    for (int t = 0; t < c->n_threads; t++)
        if (!(bufs[t] = cpu_alloc(be, bytes))) return -1;
    return 0;
}

static void cpu_destroy(pt_backend *be) {
    cpu_ctx *c = be->ctx;
    for (int t = 0; t < c->n_threads; t++) {
        free(c->scores[t]);
        free(c->mass_acc[t]);
        free(c->rowbuf[t]);
    }
    free(c->scores);
    free(c->mass_acc);
    free(c->rowbuf);
    free(c->wblock);
    for (int k = 0; k < ROPE_TABLES; k++) free(c->rope[k].cos), free(c->rope[k].sin);
    free(c);
    free(be);
}

/* The per-thread rows (embedding rows, row_abs_stats' keys) hold at least d floats. */
static int rowbuf_fit(pt_backend *be, int d) {
    cpu_ctx *c = be->ctx;
    if ((size_t)d <= c->rowbuf_floats) return 0;
    c->rowbuf_floats = 0;
    if (thread_bufs(be, (void **)c->rowbuf, (size_t)d * sizeof(float))) return -1;
    c->rowbuf_floats = (size_t)d;
    return 0;
}

/* A part's weights are used in place by sgemm when they are aligned float32. */
static int in_place(const pt_linear_part *p) {
    return p->w.dtype == PT_DT_F32 && (uintptr_t)p->w.data % sizeof(float) == 0;
}

/* Rows of one converted block of a projection with `in` inputs. */
static int block_rows(int in) {
    const size_t rb = WBLOCK_BYTES / (sizeof(float) * (size_t)(in > 0 ? in : 1));
    return rb < WBLOCK_MIN_ROWS ? WBLOCK_MIN_ROWS : (int)rb;
}

/* Floats of the largest block of a projection's parts. */
static size_t block_floats(const pt_linear *l) {
    size_t rows = 0;
    for (int k = 0; k < l->n_parts; k++) {
        const size_t r = (size_t)block_rows(l->in) < (size_t)l->part[k].out
                             ? (size_t)block_rows(l->in)
                             : (size_t)l->part[k].out;
        if (r > rows) rows = r;
    }
    return rows * (size_t)l->in;
}

/* The cpu backend computes from the host views themselves (model.h); it only sizes the block
 * that F16 / BF16 weights are converted into, and the embedding row buffers. */
static int cpu_load_weights(pt_backend *be, const pt_config *cfg, const pt_weights *host,
                            pt_weights *dev, pt_error *e) {
    cpu_ctx *c = be->ctx;
    *dev = *host;
    if (rowbuf_fit(be, cfg->d_model)) return pt_backend_take_error(be, e, NULL);
    size_t need = 0;
    for (int l = -1; l < cfg->n_layers; l++) {
        const pt_layer_weights *lw = l >= 0 ? &host->layers[l] : NULL;
        const pt_linear *ls[] = {lw ? &lw->qkv : &host->lm_head, lw ? &lw->o : NULL,
                                 lw ? &lw->up : NULL, lw ? &lw->down : NULL};
        for (size_t k = 0; k < 4; k++)
            for (int i = 0; ls[k] && i < ls[k]->n_parts; i++)
                if (!in_place(&ls[k]->part[i]) && block_floats(ls[k]) > need)
                    need = block_floats(ls[k]);
    }
    if (need > c->wblock_floats) {
        free(c->wblock);
        c->wblock_floats = 0;
        if (!(c->wblock = cpu_alloc(be, need * sizeof(float))))
            return pt_backend_take_error(be, e, NULL);
        c->wblock_floats = need;
    }
    return 0;
}
static void cpu_free_weights(pt_backend *be, const pt_config *cfg, pt_weights *dev) {
    (void)be, (void)cfg;
    memset(dev, 0, sizeof *dev);
}

static void *cpu_alloc(pt_backend *be, size_t bytes) {
    if (pt_backend_refuse_alloc(be, bytes, "a buffer")) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) {
        pt_backend_fail(be, 1, bytes, "cpu backend: out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    return p;
}
static void cpu_free(pt_backend *be, void *p) {
    (void)be, free(p);
}
static void cpu_memcpy(pt_backend *be, void *dst, const void *src, size_t bytes) {
    PT_BE_GUARD(be);
    if (bytes) memmove(dst, src, bytes);
}
static void cpu_fill(pt_backend *be, float *dst, float v, size_t n) {
    PT_BE_GUARD(be);
    for (size_t i = 0; i < n; i++) dst[i] = v;
}
static void cpu_sync(pt_backend *be) {
    (void)be;
}
static size_t cpu_mem_available(pt_backend *be) {
    (void)be;
    return pt_host_mem_available();
}

/* cos/sin of a float32 angle pos * inv_freq, as transformers computes them (times the attention
 * factor of longrope), tabulated once per position instead of once per layer and row. */
static int rope_table_build(pt_backend *be, rope_table *t, const float *inv_freq, int half,
                            int positions, float factor) {
    if (t->freq_of == inv_freq && t->half == half && t->factor == factor &&
        positions <= t->positions)
        return 0;
    const int n = positions < 256 ? 256 : positions;
    free(t->cos);
    free(t->sin);
    t->positions = 0;
    t->freq_of = NULL;
    t->cos = cpu_alloc(be, (size_t)n * half * sizeof(float));
    t->sin = cpu_alloc(be, (size_t)n * half * sizeof(float));
    if (!t->cos || !t->sin) return -1;
    float *cs = t->cos, *sn = t->sin;
#pragma omp parallel for schedule(static)
    for (int p = 0; p < n; p++)
        for (int i = 0; i < half; i++) {
            const float ang = (float)p * inv_freq[i];
            cs[(size_t)p * half + i] = (float)cos((double)ang) * factor;
            sn[(size_t)p * half + i] = (float)sin((double)ang) * factor;
        }
    t->positions = n;
    t->half = half;
    t->factor = factor;
    t->freq_of = inv_freq;
    return 0;
}

/* The table built from inv_freq, NULL if none covers position max_pos. */
static const rope_table *rope_table_of(const cpu_ctx *c, const float *inv_freq, int half,
                                       int max_pos) {
    for (int k = 0; k < ROPE_TABLES; k++)
        if (c->rope[k].freq_of == inv_freq && c->rope[k].half == half &&
            max_pos < c->rope[k].positions)
            return &c->rope[k];
    return NULL;
}

static float rope_factor(const pt_config *cfg) {
    return cfg->rope_attn_factor > 0 ? (float)cfg->rope_attn_factor : 1.0f;
}

static int cpu_reserve(pt_backend *be, const pt_config *cfg, const pt_reserve *r) {
    cpu_ctx *c = be->ctx;
    if (be->status.failed) return -1;
    const size_t keys = (size_t)(r->max_keys > 0 ? r->max_keys : 1);
    if (keys > c->scratch_keys) {
        c->scratch_keys = 0;
        if (thread_bufs(be, (void **)c->scores, (size_t)ATTN_QBLOCK * keys * sizeof(float)) ||
            thread_bufs(be, (void **)c->mass_acc, keys * sizeof(double)))
            return -1;
        c->scratch_keys = keys;
    }
    const float *tabs[ROPE_TABLES] = {r->rope_inv_freq, r->rope_long_inv_freq,
                                      r->rope_local_inv_freq};
    const float factor[ROPE_TABLES] = {rope_factor(cfg), rope_factor(cfg), 1.0f};
    for (int k = 0; k < ROPE_TABLES; k++)
        if (tabs[k] && rope_table_build(be, &c->rope[k], tabs[k], pt_rotary_dim(cfg) / 2, (int)keys,
                                        factor[k]))
            return -1;
    return rowbuf_fit(be, cfg->d_model);
}

static void cpu_release_scratch(pt_backend *be) {
    cpu_ctx *c = be->ctx;
    for (int t = 0; t < c->n_threads; t++) {
        free(c->scores[t]);
        free(c->mass_acc[t]);
        c->scores[t] = NULL;
        c->mass_acc[t] = NULL;
    }
    c->scratch_keys = 0;
    for (int k = 0; k < ROPE_TABLES; k++) {
        free(c->rope[k].cos);
        free(c->rope[k].sin);
        memset(&c->rope[k], 0, sizeof c->rope[k]);
    }
}

static void cpu_embed(pt_backend *be, const pt_config *cfg, const pt_weights *w, const int32_t *ids,
                      const int32_t *pos, int n, void *xv) {
    PT_BE_GUARD(be);
    cpu_ctx *c = be->ctx;
    const int d = cfg->d_model;
    float *x = xv;
    const pt_tensor *tok = &w->tok_emb, *pe = &w->pos_emb;
    const float scale = pt_embed_scale(cfg);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        float *xr = x + (size_t)r * d;
        pt_tensor_to_f32(tok, (size_t)ids[r] * d, 1, (size_t)d, xr); /* rows converted on gather */
        if (scale != 1.0f) /* Gemma: embedding x float32(sqrt(d)), as transformers */
            for (int i = 0; i < d; i++) xr[i] *= scale;
        if (pe->data) {
            float *p = c->rowbuf[omp_get_thread_num()];
            pt_tensor_to_f32(pe, (size_t)pos[r] * d, 1, (size_t)d, p);
            for (int i = 0; i < d; i++) xr[i] += p[i];
        }
    }
}

/* RMSNorm of one group of n floats in place or into y (transformers: x * rsqrt(mean(x^2) + eps)
 * in float32, then * w, or * (1 + w) for Gemma). */
static void rms_group(const float *x, float *y, int n, const float *g, double eps, int plus_one) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float inv = (float)(1.0 / sqrt(ss / n + eps));
    if (plus_one)
        for (int i = 0; i < n; i++) y[i] = (1.0f + g[i]) * (x[i] * inv);
    else
        for (int i = 0; i < n; i++) y[i] = g[i] * (x[i] * inv);
}

static void cpu_norm(pt_backend *be, const pt_config *cfg, const void *xv, int n, const float *g,
                     const float *b, void *yv) {
    PT_BE_GUARD(be);
    const int d = cfg->d_model;
    const float *x = xv;
    float *y = yv;
    const double eps = cfg->norm_eps;
    const int rms = cfg->norm == PT_NORM_RMSNORM;
    if (!g) { /* no norm (OLMo 2): the rows as they are */
        if (n > 0) memcpy(y, x, (size_t)n * d * sizeof(float));
        return;
    }
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        if (rms) {
            rms_group(xr, yr, d, g, eps, cfg->norm_plus_one);
        } else {
            double mean = 0, var = 0;
            for (int i = 0; i < d; i++) mean += xr[i];
            mean /= d;
            for (int i = 0; i < d; i++) {
                const double t = xr[i] - mean;
                var += t * t;
            }
            var /= d;
            const double inv = 1.0 / sqrt(var + eps);
            for (int i = 0; i < d; i++) yr[i] = (float)((xr[i] - mean) * inv) * g[i] + b[i];
        }
    }
}

static void cpu_rms_norm(pt_backend *be, const pt_config *cfg, void *xv, int n, int row_stride,
                         int col0, int groups, int width, const float *g) {
    PT_BE_GUARD(be);
    float *x = xv;
    const int tasks = n * groups;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < tasks; t++) {
        float *v = x + (size_t)(t / groups) * row_stride + col0 + (size_t)(t % groups) * width;
        rms_group(v, v, width, g, cfg->norm_eps, cfg->norm_plus_one);
    }
}

/* Output rows r0 .. r0+rb-1 of part p (W [out, in], or [in, out] transposed) as float32
 * [rb, in] (not transposed) or [in, rb] (transposed) into buf, rows over the threads. */
static void convert_block(const pt_linear_part *p, int in, int r0, int rb, float *buf) {
    if (!p->transposed) {
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rb; r++)
            pt_tensor_to_f32(&p->w, (size_t)(r0 + r) * in, 1, (size_t)in, buf + (size_t)r * in);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int k = 0; k < in; k++)
        pt_tensor_to_f32(&p->w, (size_t)k * p->out + r0, 1, (size_t)rb, buf + (size_t)k * rb);
}

/* y[:, col .. col+p->out) = x W_p^T (+= when accumulate), ldy = row stride of y. */
static void part_gemm(cpu_ctx *c, const float *x, int n, int in, const pt_linear_part *p, float *y,
                      int ldy, int accumulate) {
    const float beta = accumulate ? 1.0f : 0.0f;
    /* decode steps: one pass over the weights, no packing (the crossover: cpu_rows.h) */
    if (n <= c->few_rows) {
        pt_cpu_rows_linear(x, n, in, p, y, ldy, accumulate);
        return;
    }
    if (in_place(p)) { /* one call: OpenBLAS threads it */
        const float *w = p->w.data;
        if (p->transposed)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, p->out, in, 1.0f, x, in, w,
                        p->out, beta, y, ldy);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, p->out, in, 1.0f, x, in, w, in,
                        beta, y, ldy);
        return;
    }
    /* blocks of output rows, each converted (by all threads) and multiplied (OpenBLAS threads
     * it); blocks of several MB keep the cost of repacking x per GEMM call negligible */
    const int rb = block_rows(in);
    for (int r0 = 0; r0 < p->out; r0 += rb) {
        const int m = p->out - r0 < rb ? p->out - r0 : rb;
        convert_block(p, in, r0, m, c->wblock);
        if (p->transposed)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, m, in, 1.0f, x, in, c->wblock,
                        m, beta, y + r0, ldy);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, in, 1.0f, x, in, c->wblock,
                        in, beta, y + r0, ldy);
    }
}

static void cpu_linear_f32(pt_backend *be, const float *x, int n, const pt_linear *lin, float *y,
                           int accumulate) {
    cpu_ctx *c = be->ctx;
    if (n <= 0) return;
    int col = 0;
    for (int k = 0; k < lin->n_parts; k++) {
        const pt_linear_part *p = &lin->part[k];
        part_gemm(c, x, n, lin->in, p, y + col, lin->out, accumulate);
        if (p->b) {
            const float *b = p->b;
            const int out = lin->out, m = p->out, c0 = col;
#pragma omp parallel for schedule(static)
            for (int r = 0; r < n; r++) {
                float *yr = y + (size_t)r * out + c0;
                for (int i = 0; i < m; i++) yr[i] += b[i];
            }
        }
        col += p->out;
    }
}

static void cpu_linear(pt_backend *be, const void *x, int n, const pt_linear *lin, float *y) {
    PT_BE_GUARD(be);
    cpu_linear_f32(be, x, n, lin, y, 0);
}
static void cpu_linear_add(pt_backend *be, const void *x, int n, const pt_linear *lin,
                           void *resid) {
    PT_BE_GUARD(be);
    cpu_linear_f32(be, x, n, lin, resid, 1);
}

/* Rotate-half of one head of width hd over its first 2*half dims by (cs, sn): src into dst (the
 * same pointer rotates in place); dims 2*half .. hd-1 pass through (partial rotary). */
static void rope_head(float *dst, const float *src, int hd, int half, const float *cs,
                      const float *sn) {
    for (int i = 0; i < half; i++) {
        const float x1 = src[i], x2 = src[i + half];
        dst[i] = x1 * cs[i] - x2 * sn[i];
        dst[i + half] = x2 * cs[i] + x1 * sn[i];
    }
    if (dst != src) memcpy(dst + 2 * half, src + 2 * half, (size_t)(hd - 2 * half) * sizeof(float));
}

/* The tables of rope's positions (NULL args: none needed; -1: not reserved, status set). */
static int rope_tables(pt_backend *be, const pt_config *cfg, const pt_rope_args *rope, int n,
                       const rope_table **t0, const rope_table **t1) {
    *t0 = *t1 = NULL;
    if (!rope) return 0;
    const cpu_ctx *c = be->ctx;
    const int half = pt_rotary_dim(cfg) / 2;
    const int alt = rope->alt_freq && rope->alt_rows;
    int max_pos = 0;
    for (int r = 0; r < n; r++)
        if (rope->pos[r] > max_pos) max_pos = rope->pos[r];
    *t0 = rope_table_of(c, rope->inv_freq, half, max_pos);
    *t1 = alt ? rope_table_of(c, rope->alt_freq, half, max_pos) : NULL;
    if (*t0 && (!alt || *t1)) return 0;
    pt_backend_fail(be, 0, 0,
                    "cpu backend: rope at position %d without a reserved table (internal error)",
                    max_pos);
    return -1;
}

static void cpu_rope_store_kv(pt_backend *be, const pt_config *cfg, void *qkvv, int n,
                              const pt_rope_args *rope, void *k_cachev, void *v_cachev,
                              const int32_t *kv_rows) {
    PT_BE_GUARD(be);
    const int hd = cfg->head_dim, half = pt_rotary_dim(cfg) / 2;
    const int H = cfg->n_heads, KV = cfg->n_kv_heads, qd = H * hd, kvd = KV * hd;
    const rope_table *t0, *t1;
    if (rope_tables(be, cfg, rope, n, &t0, &t1)) return;
    float *qkv = qkvv, *k_cache = k_cachev, *v_cache = v_cachev;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        float *row = qkv + (size_t)r * (qd + 2 * kvd);
        float *k = k_cache + (size_t)kv_rows[r] * kvd, *v = v_cache + (size_t)kv_rows[r] * kvd;
        memcpy(v, row + qd + kvd, (size_t)kvd * sizeof(float));
        if (!t0) {
            memcpy(k, row + qd, (size_t)kvd * sizeof(float));
            continue;
        }
        const rope_table *t = t1 && rope->alt_rows[r] ? t1 : t0;
        const float *cs = t->cos + (size_t)rope->pos[r] * half;
        const float *sn = t->sin + (size_t)rope->pos[r] * half;
        for (int h = 0; h < H; h++)
            rope_head(row + (size_t)h * hd, row + (size_t)h * hd, hd, half, cs, sn);
        for (int h = 0; h < KV; h++)
            rope_head(k + (size_t)h * hd, row + qd + (size_t)h * hd, hd, half, cs, sn);
    }
}

/* The attention's products. At a decode step's one or few queries per (segment, head) the
 * GEMM library's per-call cost exceeds the work, so few query rows take plain loops. */
enum { ATTN_LOOP_ROWS = 4 };

/* C[m, n] (ldc) = alpha A[m, k] (lda) B[n, k]^T (ldb) */
PT_CLONES static void attn_gemm_nt(int m, int n, int k, float alpha, const float *A, int lda,
                                   const float *B, int ldb, float *C, int ldc) {
    if (m > ATTN_LOOP_ROWS) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, alpha, A, lda, B, ldb, 0.0f,
                    C, ldc);
        return;
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            const float *a = A + (size_t)i * lda, *b = B + (size_t)j * ldb;
            float d = 0;
#pragma omp simd reduction(+ : d)
            for (int p = 0; p < k; p++) d += a[p] * b[p];
            C[(size_t)i * ldc + j] = alpha * d;
        }
}

/* C[m, n] (ldc) = A[m, k] (lda) B[k, n] (ldb), + C when accumulate */
PT_CLONES static void attn_gemm_nn(int m, int n, int k, const float *A, int lda, const float *B,
                                   int ldb, float *C, int ldc, int accumulate) {
    if (m > ATTN_LOOP_ROWS) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, A, lda, B, ldb,
                    accumulate ? 1.0f : 0.0f, C, ldc);
        return;
    }
    for (int i = 0; i < m; i++) {
        float *c = C + (size_t)i * ldc;
        if (!accumulate) memset(c, 0, (size_t)n * sizeof(float));
        for (int p = 0; p < k; p++) {
            const float a = A[(size_t)i * lda + p], *b = B + (size_t)p * ldb;
#pragma omp simd
            for (int j = 0; j < n; j++) c[j] += a * b[j];
        }
    }
}

/* One row of scores in place: soft-capped (cap > 0: Gemma 2's c tanh(s / c), before the mask),
 * then the softmax over the visible keys lo .. i minus the knocked-out one (ko >= 0: left out of
 * the max, probability 0), and zeros elsewhere up to nk. Branch-free loops, so they vectorise;
 * compiled per instruction set (the exp is most of the attention's time outside the GEMMs). */
PT_CLONES static void softmax_row(float *sr, int lo, int i, int nk, int ko, float cap) {
    if (cap > 0)
        for (int j = lo; j <= i; j++) sr[j] = cap * tanhf(sr[j] / cap);
    if (ko >= 0) sr[ko] = -INFINITY;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = lo; j <= i; j++) mx = sr[j] > mx ? sr[j] : mx;
#pragma omp simd
    for (int j = lo; j <= i; j++) sr[j] = pt_expf(sr[j] - mx);
    if (ko >= 0) sr[ko] = 0.0f;
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = lo; j <= i; j++) sum += (double)sr[j];
    const float inv = (float)(1.0 / sum);
    memset(sr, 0, (size_t)lo * sizeof(float));
#pragma omp simd
    for (int j = lo; j <= i; j++) sr[j] *= inv;
    memset(sr + i + 1, 0, (size_t)(nk - i - 1) * sizeof(float));
}

/* mass[lo .. i] += p[lo .. i], in double (attn_mass sums up to T probabilities per key). */
PT_CLONES static void add_row(double *mass, const float *p, int lo, int i) {
#pragma omp simd
    for (int j = lo; j <= i; j++) mass[j] += p[j];
}

/* One (segment, head): all of the segment's queries in blocks of ATTN_QBLOCK. Scores for a
 * block against every visible key are formed with two GEMMs (prefix keys, own keys), masked,
 * softmaxed, column-summed into attn_mass, and multiplied by V with two GEMMs. The queries sit
 * q_off positions into the own keys (decode steps); qp = pos0 + q_off is the first query's
 * position. */
static void attend_segment_head(cpu_ctx *c, const pt_attn_args *a, const pt_segment *s, int h) {
    const int t = omp_get_thread_num();
    const int hd = a->head_dim, kvd = a->n_kv_heads * hd;
    const int kvh = h / (a->n_heads / a->n_kv_heads);
    const int LH = a->n_layers * a->n_heads, lh = a->layer * a->n_heads + h;
    const int qp = s->pos0 + s->q_off, n_keys_total = qp + s->n_q;
    const float scale = a->scale > 0 ? a->scale : 1.0f / sqrtf((float)hd), cap = a->softcap;
    const int knock = s->ko_pos >= 0 && a->layer >= s->ko_lo && a->layer < s->ko_hi;
    float *S = c->scores[t];
    double *mass = c->mass_acc[t];
    if (a->mass) memset(mass, 0, (size_t)n_keys_total * sizeof(double));

    const float *kc = a->k_cache, *vc = a->v_cache;
    const float *kp = kc + (size_t)s->prefix_kv * kvd + (size_t)kvh * hd;
    const float *vp = vc + (size_t)s->prefix_kv * kvd + (size_t)kvh * hd;
    const float *ko = kc + (size_t)s->own_kv * kvd + (size_t)kvh * hd;
    const float *vo = vc + (size_t)s->own_kv * kvd + (size_t)kvh * hd;
    const int contiguous = s->pos0 == 0 || s->own_kv == s->prefix_kv + s->pos0;
    if (s->pos0 == 0) kp = ko, vp = vo;

    for (int q0 = 0; q0 < s->n_q; q0 += ATTN_QBLOCK) {
        const int bq = s->n_q - q0 < ATTN_QBLOCK ? s->n_q - q0 : ATTN_QBLOCK;
        const int nk = qp + q0 + bq; /* keys visible to the block's last query */
        const float *qb =
            (const float *)a->q + (size_t)(s->row + q0) * a->q_stride + (size_t)h * hd;
        /* S[bq, nk] = scale * Q K^T: one span when the prefix's keys and the run's own keys are
         * adjacent in the cache (a clean or prefix-shared sequence: the same GEMM, so the same
         * rounding, as an independent pass), else prefix span then own span (variants) */
        if (contiguous)
            attn_gemm_nt(bq, nk, hd, scale, qb, a->q_stride, kp, kvd, S, nk);
        else {
            attn_gemm_nt(bq, s->pos0, hd, scale, qb, a->q_stride, kp, kvd, S, nk);
            attn_gemm_nt(bq, s->q_off + q0 + bq, hd, scale, qb, a->q_stride, ko, kvd, S + s->pos0,
                         nk);
        }
        for (int r = 0; r < bq; r++) {
            const int i = qp + q0 + r; /* query position */
            float *sr = S + (size_t)r * nk;
            const int lo = a->window > 0 && i - a->window + 1 > 0 ? i - a->window + 1 : 0;
            const int ko = knock && s->ko_pos >= lo && s->ko_pos < i ? s->ko_pos : -1;
            softmax_row(sr, lo, i, nk, ko, cap);
            if (a->mass) add_row(mass, sr, lo, i);
            if (a->last && s->last_row >= 0 && i == s->final_pos)
                for (int j = 0; j <= i; j++) a->last[(size_t)(s->last_row + j) * LH + lh] = sr[j];
            if (a->pattern && s->pattern_row >= 0) {
                float *pr =
                    a->pattern + (size_t)(s->pattern_row + (int64_t)i * (i + 1) / 2) * LH + lh;
                for (int j = 0; j <= i; j++) pr[(size_t)j * LH] = sr[j];
            }
        }
        /* out[block] = P V: prefix span then own span */
        float *ob = (float *)a->out + (size_t)(s->row + q0) * (a->n_heads * hd) + (size_t)h * hd;
        const int od = a->n_heads * hd;
        if (contiguous)
            attn_gemm_nn(bq, hd, nk, S, nk, vp, kvd, ob, od, 0);
        else {
            attn_gemm_nn(bq, hd, s->pos0, S, nk, vp, kvd, ob, od, 0);
            attn_gemm_nn(bq, hd, s->q_off + q0 + bq, S + s->pos0, nk, vo, kvd, ob, od, 1);
        }
    }
    if (a->mass && s->mass_row >= 0)
        for (int j = 0; j < n_keys_total; j++)
            a->mass[(size_t)(s->mass_row + j) * LH + lh] += (float)mass[j];
}

static void cpu_attention(pt_backend *be, const pt_attn_args *a) {
    PT_BE_GUARD(be);
    cpu_ctx *c = be->ctx;
    for (int i = 0; i < a->n_segs; i++)
        if ((size_t)a->segs[i].pos0 + a->segs[i].q_off + a->segs[i].n_q > c->scratch_keys ||
            a->segs[i].q_off < 0) {
            pt_backend_fail(be, 0, 0,
                            "cpu backend: attention over %d keys beyond the reserved "
                            "%zu (internal error)",
                            a->segs[i].pos0 + a->segs[i].q_off + a->segs[i].n_q, c->scratch_keys);
            return;
        }
    const int tasks = a->n_segs * a->n_heads;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < tasks; task++)
        attend_segment_head(c, a, &a->segs[task / a->n_heads], task % a->n_heads);
}

static inline float gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    const float y = k * (x + 0.044715f * x * x * x);
    /* 1 + tanh(y) = 2 - 2 / (exp(2y) + 1), branch-free */
    return 0.5f * x * (2.0f - 2.0f / (pt_expf(2.0f * y) + 1.0f));
}

/* One row of the MLP's activation: SwiGLU silu(g) u, GeGLU gelu(g) u, or gelu(x) (u NULL, g = x).
 * Compiled per instruction set: the exp is most of its time. */
PT_CLONES static void act_row(pt_mlp_kind kind, const float *g, const float *u, float *o, int ff) {
    if (kind == PT_MLP_SWIGLU) {
#pragma omp simd
        for (int i = 0; i < ff; i++) o[i] = (g[i] / (1.0f + pt_expf(-g[i]))) * u[i];
    } else if (u) {
#pragma omp simd
        for (int i = 0; i < ff; i++) o[i] = gelu_tanh(g[i]) * u[i];
    } else {
#pragma omp simd
        for (int i = 0; i < ff; i++) o[i] = gelu_tanh(g[i]);
    }
}

static void cpu_mlp_act(pt_backend *be, const pt_config *cfg, const void *hv, int n, void *outv) {
    PT_BE_GUARD(be);
    const float *h = hv;
    float *out = outv;
    const int ff = cfg->d_ff;
    const int glu = cfg->mlp == PT_MLP_SWIGLU || cfg->mlp == PT_MLP_GEGLU;
    const size_t in_width = (size_t)(glu ? 2 : 1) * ff;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        const float *g = h + (size_t)r * in_width;
        act_row(cfg->mlp, g, glu ? g + ff : NULL, out + (size_t)r * ff, ff);
    }
}

static void cpu_softcap(pt_backend *be, float *x, size_t n, float cap) {
    PT_BE_GUARD(be);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] / cap);
}

static void cpu_add(pt_backend *be, void *xv, const void *yv, size_t n) {
    PT_BE_GUARD(be);
    float *x = xv;
    const float *y = yv;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static void cpu_row_norms(pt_backend *be, const void *xv, int n, int d, float *out,
                          size_t out_stride) {
    PT_BE_GUARD(be);
    const float *x = xv;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
        out[(size_t)r * out_stride] = (float)sqrt(ss);
    }
}

static inline uint32_t abs_key(float x) { /* |x| as bits: ordered as the values (NaN last) */
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & 0x7fffffffu;
}
static inline float key_value(uint32_t k) {
    float f;
    memcpy(&f, &k, sizeof f);
    return f;
}

/* The k-th smallest (0-based) of a[0..n), reordering a so that a[i] <= a[k] for i < k and
 * a[i] >= a[k] for i > k (Hoare's selection with median-of-three pivots). */
static uint32_t select_kth(uint32_t *a, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        uint32_t p0 = a[lo], p1 = a[lo + (hi - lo) / 2], p2 = a[hi], t;
        if (p0 > p1) t = p0, p0 = p1, p1 = t;
        if (p1 > p2) p1 = p2;
        const uint32_t pivot = p0 > p1 ? p0 : p1; /* the median of the three */
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) t = a[i], a[i++] = a[j], a[j--] = t;
        }
        /* a[lo..j] <= pivot, a[i..hi] >= pivot, a[j+1..i-1] == pivot */
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break;
    }
    return a[k];
}

static void cpu_row_abs_stats(pt_backend *be, const void *xv, int n, int d, float *max_abs,
                              int32_t *argmax, float *median, size_t out_stride) {
    PT_BE_GUARD(be);
    cpu_ctx *c = be->ctx;
    if (d <= 0 || (size_t)d > c->rowbuf_floats) {
        pt_backend_fail(be, 0, 0,
                        "cpu backend: row_abs_stats of rows of %d beyond the %zu "
                        "reserved (internal error)",
                        d, c->rowbuf_floats);
        return;
    }
    const float *x = xv;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        uint32_t *keys = (uint32_t *)c->rowbuf[omp_get_thread_num()], best = 0;
        int arg = 0;
        for (int i = 0; i < d; i++) {
            keys[i] = abs_key(xr[i]);
            if (keys[i] > best) best = keys[i], arg = i; /* strictly larger: ties keep the lowest */
        }
        const int k = (d - 1) / 2; /* the lower middle; the upper one is k + 1 for even d */
        const uint32_t lo = select_kth(keys, d, k);
        uint32_t hi = lo;
        if (d % 2 == 0) { /* the smallest of the keys above position k */
            hi = keys[k + 1];
            for (int i = k + 2; i < d; i++) hi = keys[i] < hi ? keys[i] : hi;
        }
        const size_t o = (size_t)r * out_stride;
        max_abs[o] = key_value(best);
        argmax[o] = arg;
        median[o] = (float)(0.5 * ((double)key_value(lo) + (double)key_value(hi)));
    }
}

static void cpu_gather_rows(pt_backend *be, const void *srcv, const int32_t *rows, int m, int d,
                            void *dstv) {
    PT_BE_GUARD(be);
    const float *src = srcv;
    float *dst = dstv;
    for (int i = 0; i < m; i++)
        memcpy(dst + (size_t)i * d, src + (size_t)rows[i] * d, (size_t)d * sizeof(float));
}

static void cpu_resid_to_host(pt_backend *be, float *dst, const void *src, size_t n) {
    PT_BE_GUARD(be);
    if (n) memcpy(dst, src, n * sizeof(float));
}

/* Top-k of one row by a bounded insertion into a sorted list (K is small). */
static void row_topk(const float *lp, int V, int K, int32_t *ids, float *vals) {
    int n = 0;
    for (int v = 0; v < V; v++) {
        const float x = lp[v];
        if (n == K && !(x > vals[K - 1])) continue; /* ties keep the lower id */
        int pos = n < K ? n++ : K - 1;
        while (pos > 0 && x > vals[pos - 1]) {
            vals[pos] = vals[pos - 1];
            ids[pos] = ids[pos - 1];
            pos--;
        }
        vals[pos] = x;
        ids[pos] = v;
    }
}

static void cpu_log_softmax(pt_backend *be, float *logits, int m, int V, double *entropy, int K,
                            int32_t *topk_id, float *topk_logp) {
    PT_BE_GUARD(be);
    /* Rows in parallel, each row's sums in one fixed order: independent of the thread count. */
#pragma omp parallel for schedule(dynamic, 1)
    for (int r = 0; r < m; r++) {
        float *x = logits + (size_t)r * V;
        float mx = -INFINITY;
        for (int v = 0; v < V; v++)
            if (x[v] > mx) mx = x[v];
        double sum = 0;
        for (int v = 0; v < V; v++) sum += exp((double)(x[v] - mx));
        const float lse = (float)log(sum);
        if (entropy) {
            double ent = 0;
            for (int v = 0; v < V; v++) {
                x[v] = (x[v] - mx) - lse;
                ent -= exp((double)x[v]) * x[v];
            }
            entropy[r] = ent;
        } else
            for (int v = 0; v < V; v++) x[v] = (x[v] - mx) - lse;
        if (K > 0 && topk_id) row_topk(x, V, K, topk_id + (size_t)r * K, topk_logp + (size_t)r * K);
    }
}

/* KL sums in float64 over the vocabulary, in a fixed order. */
static void cpu_divergence(pt_backend *be, const float *lp_p, size_t sp, const int32_t *rows_p,
                           const float *lp_q, size_t sq, const int32_t *rows_q, int m, int V,
                           double *kl_pq, double *kl_qp, double *js) {
    PT_BE_GUARD(be);
#pragma omp parallel for schedule(dynamic, 1)
    for (int r = 0; r < m; r++) {
        const float *p = lp_p + (size_t)(rows_p ? rows_p[r] : r) * sp;
        const float *q = lp_q + (size_t)(rows_q ? rows_q[r] : r) * sq;
        double a = 0, b = 0, jsd = 0;
        for (int v = 0; v < V; v++) {
            const double lp = p[v], lq = q[v], pp = exp(lp), pq = exp(lq);
            if (pp > 0) a += pp * (lp - lq);
            if (pq > 0) b += pq * (lq - lp);
            const double mid = 0.5 * (pp + pq);
            if (mid > 0) {
                const double lm = log(mid);
                if (pp > 0) jsd += 0.5 * pp * (lp - lm);
                if (pq > 0) jsd += 0.5 * pq * (lq - lm);
            }
        }
        if (kl_pq) kl_pq[r] = a;
        if (kl_qp) kl_qp[r] = b;
        if (js) js[r] = jsd;
    }
}

static void cpu_pick(pt_backend *be, const float *logp, int m, int V, const int32_t *ids,
                     float *out) {
    PT_BE_GUARD(be);
    for (int r = 0; r < m; r++)
        out[r] = ids[r] >= 0 && ids[r] < V ? logp[(size_t)r * V + ids[r]] : NAN;
}

/* "AMD EPYC 7B13" from /proc/cpuinfo, else the machine name. */
static void cpu_model_name(char *out, size_t n) {
    snprintf(out, n, "cpu");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            const char *v = strchr(line, ':') + 1;
            while (*v == ' ' || *v == '\t') v++;
            snprintf(out, n, "%.*s", (int)strcspn(v, "\n"), v);
            break;
        }
    fclose(f);
}

/* PT_CPU_FEW_ROWS, or PUNCTUM_CPU_FEW_ROWS (0 .. PT_CPU_FEW_ROWS: for benchmarks and tests
 * that compare the two paths at the same row count). */
static int few_rows_limit(void) {
    const char *s = getenv("PUNCTUM_CPU_FEW_ROWS");
    if (!s || !*s) return PT_CPU_FEW_ROWS;
    char *end;
    const long v = strtol(s, &end, 10);
    return *end || v < 0 || v > PT_CPU_FEW_ROWS ? PT_CPU_FEW_ROWS : (int)v;
}

pt_backend *pt_backend_cpu_create(int n_threads, pt_error *e) {
    if (n_threads > 0) {
        omp_set_num_threads(n_threads);
        openblas_set_num_threads(n_threads);
    }
    pt_backend *be = pt_try_calloc(1, sizeof *be, "the cpu backend", e);
    cpu_ctx *c = pt_try_calloc(1, sizeof *c, "the cpu backend", e);
    const int nt = omp_get_max_threads();
    if (c) {
        c->n_threads = nt;
        c->few_rows = few_rows_limit();
        c->scores = pt_try_calloc((size_t)nt, sizeof(float *), "the cpu backend", e);
        c->mass_acc = pt_try_calloc((size_t)nt, sizeof(double *), "the cpu backend", e);
        c->rowbuf = pt_try_calloc((size_t)nt, sizeof(float *), "the cpu backend", e);
    }
    if (!be || !c || !c->scores || !c->mass_acc || !c->rowbuf) {
        if (c) free(c->scores), free(c->mass_acc), free(c->rowbuf);
        free(c);
        free(be);
        return NULL;
    }
    be->name = "cpu";
    be->ctx = c;
    be->dtype = PT_DTYPE_F32;
    be->resid_bytes = be->act_bytes = be->kv_bytes = sizeof(float);
    be->act_dtype = be->kv_dtype = PT_DTYPE_F32;
    char model[96];
    cpu_model_name(model, sizeof model);
    snprintf(be->device_name, sizeof be->device_name, "cpu (%d threads)", nt);
    snprintf(be->description, sizeof be->description, "%d thread%s, %s, OpenBLAS %s kernels", nt,
             nt == 1 ? "" : "s", model, pt_blas_kernels());
    be->destroy = cpu_destroy;
    be->load_weights = cpu_load_weights;
    be->free_weights = cpu_free_weights;
    be->reserve = cpu_reserve;
    be->release_scratch = cpu_release_scratch;
    be->mem_available = cpu_mem_available;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->to_device = cpu_memcpy;
    be->to_host = cpu_memcpy;
    be->copy = cpu_memcpy;
    be->fill = cpu_fill;
    be->sync = cpu_sync;
    be->defer_results = cpu_sync; /* results are written when each call returns */
    be->embed = cpu_embed;
    be->norm = cpu_norm;
    be->rms_norm = cpu_rms_norm;
    be->softcap = cpu_softcap;
    be->linear = cpu_linear;
    be->linear_add = cpu_linear_add;
    be->rope_store_kv = cpu_rope_store_kv;
    be->attention = cpu_attention;
    be->mlp_act = cpu_mlp_act;
    be->add = cpu_add;
    be->row_norms = cpu_row_norms;
    be->row_abs_stats = cpu_row_abs_stats;
    be->gather_rows = cpu_gather_rows;
    be->resid_to_host = cpu_resid_to_host;
    be->log_softmax = cpu_log_softmax;
    be->divergence = cpu_divergence;
    be->pick = cpu_pick;
    return be;
}
