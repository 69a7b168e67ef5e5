/* punctum — the CPU backend: the reference. float32, OpenBLAS GEMMs, OpenMP threads.
 *
 * Deterministic: our own reductions have a fixed order, independent of the thread count and
 * of how sequences are packed into a batch (attention work is split by (segment, head) and each
 * task owns its outputs: no atomics, no order-dependent sums). */
#include "punctum/backend.h"

#include "backend/cpu_math.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS extension (declared in its cblas.h in some builds, not all). */
void openblas_set_num_threads(int num_threads);

enum { ATTN_QBLOCK = 64 }; /* queries per score block: bounds scratch to 64 x T per thread */

typedef struct {
    int n_threads;
    /* per-thread attention scratch, grown on demand (outside the per-row loops) */
    float **scores;
    double **mass_acc;
    size_t *scratch_keys;
    /* RoPE cos/sin by position, shared by every layer: [rope_positions][head_dim/2] each */
    float *rope_cos, *rope_sin;
    const float *rope_freq_of; /* the inv_freq the table was built from */
    int rope_positions, rope_half;
} cpu_ctx;

static void cpu_destroy(pt_backend *be) {
    cpu_ctx *c = be->ctx;
    for (int t = 0; t < c->n_threads; t++) {
        free(c->scores[t]);
        free(c->mass_acc[t]);
    }
    free(c->scores);
    free(c->mass_acc);
    free(c->scratch_keys);
    free(c->rope_cos);
    free(c->rope_sin);
    free(c);
    free(be);
}

/* The CPU computes in float32 on the host weights directly. */
static int cpu_load_weights(pt_backend *be, const pt_config *cfg, const pt_weights *host,
                            pt_weights *dev, pt_error *e) {
    (void)be, (void)cfg, (void)e;
    *dev = *host;
    return 0;
}
static void cpu_free_weights(pt_backend *be, const pt_config *cfg, pt_weights *dev) {
    (void)be, (void)cfg;
    memset(dev, 0, sizeof *dev);
}

static void *cpu_alloc(pt_backend *be, size_t bytes) {
    (void)be;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) return NULL;
    return p;
}
static void cpu_free(pt_backend *be, void *p) { (void)be, free(p); }
static void cpu_memcpy(pt_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memmove(dst, src, bytes);
}
static void cpu_fill(pt_backend *be, float *dst, float v, size_t n) {
    (void)be;
    for (size_t i = 0; i < n; i++) dst[i] = v;
}
static void cpu_sync(pt_backend *be) { (void)be; }

static void cpu_embed(pt_backend *be, const pt_config *cfg, const pt_weights *w, const int32_t *ids,
                      const int32_t *pos, int n, float *x) {
    (void)be;
    const int d = cfg->d_model;
    const float *tok = w->tok_emb, *pe = w->pos_emb;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        float *xr = x + (size_t)r * d;
        memcpy(xr, tok + (size_t)ids[r] * d, (size_t)d * sizeof(float));
        if (pe) {
            const float *p = pe + (size_t)pos[r] * d;
            for (int i = 0; i < d; i++) xr[i] += p[i];
        }
    }
}

static void cpu_norm(pt_backend *be, const pt_config *cfg, const float *x, int n, const void *weight,
                     const void *bias, float *y) {
    (void)be;
    const int d = cfg->d_model;
    const float *g = weight, *b = bias;
    const double eps = cfg->norm_eps;
    const int rms = cfg->norm == PT_NORM_RMSNORM;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        if (rms) {
            /* HF LlamaRMSNorm: x * rsqrt(mean(x^2) + eps), in float32, then * weight. */
            double ss = 0;
            for (int i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
            const float inv = (float)(1.0 / sqrt(ss / d + eps));
            for (int i = 0; i < d; i++) yr[i] = g[i] * (xr[i] * inv);
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

static void cpu_linear(pt_backend *be, const float *x, int n, const pt_linear *lin, float *y) {
    (void)be;
    if (n <= 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, lin->out, lin->in, 1.0f, x, lin->in,
                lin->w, lin->in, 0.0f, y, lin->out);
    if (lin->b) {
        const float *b = lin->b;
        const int out = lin->out;
#pragma omp parallel for schedule(static)
        for (int r = 0; r < n; r++) {
            float *yr = y + (size_t)r * out;
            for (int i = 0; i < out; i++) yr[i] += b[i];
        }
    }
}

/* cos/sin of a float32 angle pos * inv_freq, as transformers computes them, tabulated once
 * per position (grown on demand) instead of once per layer and row. */
static void rope_table(cpu_ctx *c, const float *inv_freq, int half, int max_pos) {
    if (c->rope_freq_of == inv_freq && c->rope_half == half && max_pos < c->rope_positions) return;
    int n = max_pos + 1;
    if (n < 2 * c->rope_positions) n = 2 * c->rope_positions;
    if (n < 256) n = 256;
    c->rope_cos = pt_xrealloc(c->rope_cos, (size_t)n * half * sizeof(float));
    c->rope_sin = pt_xrealloc(c->rope_sin, (size_t)n * half * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int p = 0; p < n; p++)
        for (int i = 0; i < half; i++) {
            const float ang = (float)p * inv_freq[i];
            c->rope_cos[(size_t)p * half + i] = (float)cos((double)ang);
            c->rope_sin[(size_t)p * half + i] = (float)sin((double)ang);
        }
    c->rope_positions = n;
    c->rope_half = half;
    c->rope_freq_of = inv_freq;
}

static void cpu_rope(pt_backend *be, const pt_config *cfg, const float *inv_freq, float *qkv, int n,
                     const int32_t *pos) {
    cpu_ctx *c = be->ctx;
    const int hd = cfg->head_dim, half = hd / 2;
    const int heads = cfg->n_heads + cfg->n_kv_heads; /* q heads then k heads */
    const int stride = (cfg->n_heads + 2 * cfg->n_kv_heads) * hd;
    int max_pos = 0;
    for (int r = 0; r < n; r++)
        if (pos[r] > max_pos) max_pos = pos[r];
    rope_table(c, inv_freq, half, max_pos);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        const float *cs = c->rope_cos + (size_t)pos[r] * half, *sn = c->rope_sin + (size_t)pos[r] * half;
        float *row = qkv + (size_t)r * stride;
        for (int h = 0; h < heads; h++) {
            float *v = row + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                const float x1 = v[i], x2 = v[i + half];
                v[i] = x1 * cs[i] - x2 * sn[i];
                v[i + half] = x2 * cs[i] + x1 * sn[i];
            }
        }
    }
}

static void cpu_store_kv(pt_backend *be, const pt_config *cfg, const float *qkv, int n,
                         float *k_cache, float *v_cache, const int32_t *kv_rows) {
    (void)be;
    const int hd = cfg->head_dim, qd = cfg->n_heads * hd, kvd = cfg->n_kv_heads * hd;
    const int stride = qd + 2 * kvd;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        const float *row = qkv + (size_t)r * stride;
        memcpy(k_cache + (size_t)kv_rows[r] * kvd, row + qd, (size_t)kvd * sizeof(float));
        memcpy(v_cache + (size_t)kv_rows[r] * kvd, row + qd + kvd, (size_t)kvd * sizeof(float));
    }
}

/* Make sure thread t's scratch holds `keys` score columns. */
static void ensure_scratch(cpu_ctx *c, int t, size_t keys) {
    if (c->scratch_keys[t] >= keys) return;
    free(c->scores[t]);
    free(c->mass_acc[t]);
    c->scores[t] = pt_xmalloc((size_t)ATTN_QBLOCK * keys * sizeof(float));
    c->mass_acc[t] = pt_xmalloc(keys * sizeof(double));
    c->scratch_keys[t] = keys;
}

/* One (segment, head): all of the segment's queries in blocks of ATTN_QBLOCK. Scores for a
 * block against every visible key are formed with two GEMMs (prefix keys, own keys), masked,
 * softmaxed, column-summed into attn_mass, and multiplied by V with two GEMMs. */
static void attend_segment_head(cpu_ctx *c, const pt_attn_args *a, const pt_segment *s, int h) {
    const int t = omp_get_thread_num();
    const int hd = a->head_dim, kvd = a->n_kv_heads * hd;
    const int kvh = h / (a->n_heads / a->n_kv_heads);
    const int LH = a->n_layers * a->n_heads, lh = a->layer * a->n_heads + h;
    const int n_keys_total = s->pos0 + s->n_q;
    const float scale = 1.0f / sqrtf((float)hd);
    const int knock = s->ko_pos >= 0 && a->layer >= s->ko_lo && a->layer < s->ko_hi;
    ensure_scratch(c, t, (size_t)n_keys_total);
    float *S = c->scores[t];
    double *mass = c->mass_acc[t];
    if (a->mass) memset(mass, 0, (size_t)n_keys_total * sizeof(double));

    const float *kp = a->k_cache + (size_t)s->prefix_kv * kvd + (size_t)kvh * hd;
    const float *vp = a->v_cache + (size_t)s->prefix_kv * kvd + (size_t)kvh * hd;
    const float *ko = a->k_cache + (size_t)s->own_kv * kvd + (size_t)kvh * hd;
    const float *vo = a->v_cache + (size_t)s->own_kv * kvd + (size_t)kvh * hd;
    const int contiguous = s->pos0 == 0 || s->own_kv == s->prefix_kv + s->pos0;
    if (s->pos0 == 0) kp = ko, vp = vo;

    for (int q0 = 0; q0 < s->n_q; q0 += ATTN_QBLOCK) {
        const int bq = s->n_q - q0 < ATTN_QBLOCK ? s->n_q - q0 : ATTN_QBLOCK;
        const int nk = s->pos0 + q0 + bq; /* keys visible to the block's last query */
        const float *qb = a->q + (size_t)(s->row + q0) * a->q_stride + (size_t)h * hd;
        /* S[bq, nk] = scale * Q K^T: one span when the prefix's keys and the run's own keys are
         * adjacent in the cache (a clean or prefix-shared sequence: the same GEMM, so the same
         * rounding, as an independent pass), else prefix span then own span (variants) */
        if (contiguous)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, nk, hd, scale, qb,
                        a->q_stride, kp, kvd, 0.0f, S, nk);
        else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, s->pos0, hd, scale, qb,
                        a->q_stride, kp, kvd, 0.0f, S, nk);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, q0 + bq, hd, scale, qb,
                        a->q_stride, ko, kvd, 0.0f, S + s->pos0, nk);
        }
        for (int r = 0; r < bq; r++) {
            const int i = s->pos0 + q0 + r; /* query position */
            float *sr = S + (size_t)r * nk;
            const int lo = a->window > 0 && i - a->window + 1 > 0 ? i - a->window + 1 : 0;
            const int ko = knock && s->ko_pos >= lo && s->ko_pos < i ? s->ko_pos : -1;
            /* visible keys: lo .. i, minus the knocked-out one (its score is left out of the max
             * and its probability is zeroed); the loops are branch-free so they vectorise */
            if (ko >= 0) sr[ko] = -INFINITY;
            float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
            for (int j = lo; j <= i; j++) mx = sr[j] > mx ? sr[j] : mx;
            for (int j = lo; j <= i; j++) sr[j] = pt_expf(sr[j] - mx);
            if (ko >= 0) sr[ko] = 0.0f;
            double sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int j = lo; j <= i; j++) sum += (double)sr[j];
            const float inv = (float)(1.0 / sum);
            for (int j = 0; j < lo; j++) sr[j] = 0;
            for (int j = lo; j <= i; j++) sr[j] *= inv;
            for (int j = i + 1; j < nk; j++) sr[j] = 0;
            if (a->mass)
                for (int j = lo; j <= i; j++) mass[j] += sr[j];
            if (a->last && s->last_row >= 0 && i == s->final_pos)
                for (int j = 0; j <= i; j++) a->last[(size_t)(s->last_row + j) * LH + lh] = sr[j];
            if (a->pattern && s->pattern_row >= 0) {
                float *pr = a->pattern + (size_t)(s->pattern_row + (int64_t)i * (i + 1) / 2) * LH + lh;
                for (int j = 0; j <= i; j++) pr[(size_t)j * LH] = sr[j];
            }
        }
        /* out[block] = P V: prefix span then own span */
        float *ob = a->out + (size_t)(s->row + q0) * (a->n_heads * hd) + (size_t)h * hd;
        const int od = a->n_heads * hd;
        if (contiguous)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, hd, nk, 1.0f, S, nk, vp, kvd,
                        0.0f, ob, od);
        else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, hd, s->pos0, 1.0f, S, nk, vp,
                        kvd, 0.0f, ob, od);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, hd, q0 + bq, 1.0f,
                        S + s->pos0, nk, vo, kvd, 1.0f, ob, od);
        }
    }
    if (a->mass && s->mass_row >= 0)
        for (int j = 0; j < n_keys_total; j++) a->mass[(size_t)(s->mass_row + j) * LH + lh] += (float)mass[j];
}

static void cpu_attention(pt_backend *be, const pt_attn_args *a) {
    cpu_ctx *c = be->ctx;
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

static void cpu_mlp_act(pt_backend *be, const pt_config *cfg, const float *h, int n, float *out) {
    (void)be;
    const int ff = cfg->d_ff;
    if (cfg->mlp == PT_MLP_SWIGLU) {
#pragma omp parallel for schedule(static)
        for (int r = 0; r < n; r++) {
            const float *g = h + (size_t)r * 2 * ff, *u = g + ff;
            float *o = out + (size_t)r * ff;
            for (int i = 0; i < ff; i++) o[i] = (g[i] / (1.0f + pt_expf(-g[i]))) * u[i];
        }
    } else {
#pragma omp parallel for schedule(static)
        for (int r = 0; r < n; r++) {
            const float *x = h + (size_t)r * ff;
            float *o = out + (size_t)r * ff;
            for (int i = 0; i < ff; i++) o[i] = gelu_tanh(x[i]);
        }
    }
}

static void cpu_add(pt_backend *be, float *x, const float *y, size_t n) {
    (void)be;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static void cpu_row_norms(pt_backend *be, const float *x, int n, int d, float *out,
                          size_t out_stride) {
    (void)be;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
        out[(size_t)r * out_stride] = (float)sqrt(ss);
    }
}

static void cpu_gather_rows(pt_backend *be, const float *src, const int32_t *rows, int m, int d,
                            float *dst) {
    (void)be;
    for (int i = 0; i < m; i++)
        memcpy(dst + (size_t)i * d, src + (size_t)rows[i] * d, (size_t)d * sizeof(float));
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
    (void)be;
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
        double ent = 0;
        for (int v = 0; v < V; v++) {
            x[v] = (x[v] - mx) - lse;
            ent -= exp((double)x[v]) * x[v];
        }
        if (entropy) entropy[r] = ent;
        if (K > 0 && topk_id) row_topk(x, V, K, topk_id + (size_t)r * K, topk_logp + (size_t)r * K);
    }
}

/* KL sums in float64 over the vocabulary, in a fixed order. */
static void cpu_divergence(pt_backend *be, const float *lp_p, size_t sp, const float *lp_q,
                           size_t sq, int m, int V, double *kl_pq, double *kl_qp, double *js) {
    (void)be;
#pragma omp parallel for schedule(dynamic, 1)
    for (int r = 0; r < m; r++) {
        const float *p = lp_p + (size_t)r * sp, *q = lp_q + (size_t)r * sq;
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

static void cpu_pick(pt_backend *be, const float *logp, int m, int V, const int32_t *ids, float *out) {
    (void)be;
    for (int r = 0; r < m; r++) out[r] = ids[r] >= 0 && ids[r] < V ? logp[(size_t)r * V + ids[r]] : NAN;
}

pt_backend *pt_backend_cpu_create(int n_threads, pt_error *e) {
    (void)e;
    if (n_threads > 0) {
        omp_set_num_threads(n_threads);
        openblas_set_num_threads(n_threads);
    }
    pt_backend *be = pt_xcalloc(1, sizeof *be);
    cpu_ctx *c = pt_xcalloc(1, sizeof *c);
    c->n_threads = omp_get_max_threads();
    c->scores = pt_xcalloc((size_t)c->n_threads, sizeof(float *));
    c->mass_acc = pt_xcalloc((size_t)c->n_threads, sizeof(double *));
    c->scratch_keys = pt_xcalloc((size_t)c->n_threads, sizeof(size_t));
    be->name = "cpu";
    be->ctx = c;
    be->dtype = PT_DTYPE_F32;
    snprintf(be->device_name, sizeof be->device_name, "cpu (%d threads)", c->n_threads);
    be->destroy = cpu_destroy;
    be->load_weights = cpu_load_weights;
    be->free_weights = cpu_free_weights;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->to_device = cpu_memcpy;
    be->to_host = cpu_memcpy;
    be->copy = cpu_memcpy;
    be->fill = cpu_fill;
    be->sync = cpu_sync;
    be->embed = cpu_embed;
    be->norm = cpu_norm;
    be->linear = cpu_linear;
    be->rope = cpu_rope;
    be->store_kv = cpu_store_kv;
    be->attention = cpu_attention;
    be->mlp_act = cpu_mlp_act;
    be->add = cpu_add;
    be->row_norms = cpu_row_norms;
    be->gather_rows = cpu_gather_rows;
    be->log_softmax = cpu_log_softmax;
    be->divergence = cpu_divergence;
    be->pick = cpu_pick;
    return be;
}
