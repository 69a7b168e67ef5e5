/* punctum — backend op test (in the spirit of ggml's test-backend-ops): every operation of
 * pt_backend runs on the `cuda` backend and on the `cpu` reference with the same random inputs
 * (fixed, printed seeds), and the outputs are compared with absolute + relative tolerances
 * after NaN/Inf mismatches are rejected. Every device output sits between sentinel guards to
 * catch out-of-bounds writes; every output buffer starts filled with random values (identical
 * on both backends), so writes to the wrong place, or missing writes, show up as mismatches.
 *
 * Linked against the emulated cuda backend it is the `cuda-emu` test (cuda_emu_backend_ops);
 * linked against the real one it runs on a GPU (cuda_backend_ops, label gpu).
 *
 *   test_backend_ops [--seed N] [--skip-without-gpu] [--filter SUBSTR] [--quick] [--sample]
 *
 * --quick drops the largest shapes; --sample (valgrind's run) tests each attention case on the
 * two applicable variants that have run least, instead of on all of them, so every case and
 * every variant still runs.
 *
 * One table row per (op, shape, dtype): max abs error, max rel error, tolerance, verdict.
 * Tolerances (SPEC §6): f32 1e-4 relative; bf16/f16 attention statistics 2e-2 absolute. For
 * bf16/f16 GEMMs and embeddings the reference gets the same rounded weights and activations,
 * so they are held to the f32 tolerance. */
#include "punctum/backend.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- random numbers --------------------------------------------------------------------------- */

static uint64_t g_rng;
static uint64_t rnd_u64(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rnd_normal(void) {
    double u1 = ((rnd_u64() >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (rnd_u64() >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
static int rnd_int(int n) { return (int)(rnd_u64() % (uint64_t)n); }
static float *rnd_vec(size_t n, float scale) {
    float *v = pt_xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = rnd_normal() * scale;
    return v;
}

/* Round to the storage precision of a compute dtype (what the cuda backend does to weights and
 * GEMM activations), so the reference can be given the same values. */
static float round_dt(float x, pt_compute_dtype dt) {
    if (dt == PT_DTYPE_BF16) return pt_bf16_to_f32(pt_f32_to_bf16(x));
    if (dt == PT_DTYPE_F16) return pt_f16_to_f32(pt_f32_to_f16(x));
    return x;
}
static void round_vec(float *v, size_t n, pt_compute_dtype dt) {
    for (size_t i = 0; i < n; i++) v[i] = round_dt(v[i], dt);
}

/* ---- device buffers with sentinels ------------------------------------------------------------ */

enum { GUARD = 64 }; /* floats on each side */
static const uint32_t GUARD_BITS = 0x7fa5a5a5u;

typedef struct {
    pt_backend *be;
    void *base;
    size_t n;            /* floats (or 4-byte units) the op may touch */
    pt_compute_dtype dt; /* element type (dfrom_as / dnew_as): 16-bit ones are read back widened */
    size_t elems;        /* elements of dt */
} dbuf;

static float *dnew(pt_backend *be, dbuf *b, size_t n) {
    b->be = be;
    b->n = n;
    b->dt = PT_DTYPE_F32, b->elems = n;
    const size_t tot = n + 2 * GUARD;
    b->base = be->alloc(be, tot * sizeof(float));
    if (!b->base) {
        fprintf(stderr, "test_backend_ops: %s: alloc of %zu floats failed\n", be->name, tot);
        exit(1);
    }
    uint32_t *h = pt_xmalloc(tot * sizeof(uint32_t));
    for (size_t i = 0; i < tot; i++) h[i] = GUARD_BITS;
    be->to_device(be, b->base, h, tot * sizeof(uint32_t));
    free(h);
    return (float *)b->base + GUARD;
}
static float *dfrom(pt_backend *be, dbuf *b, const float *host, size_t n) {
    float *d = dnew(be, b, n);
    if (n) be->to_device(be, d, host, n * sizeof(float));
    return d;
}
/* A buffer of n elements of dt (the element types a backend declares: act_dtype, kv_dtype). */
static void *dnew_as(pt_backend *be, dbuf *b, size_t n, pt_compute_dtype dt) {
    void *d = dnew(be, b, dt == PT_DTYPE_F32 ? n : (n + 1) / 2);
    b->dt = dt, b->elems = n;
    return d;
}
/* ... holding host[0..n) converted to nearest */
static void *dfrom_as(pt_backend *be, dbuf *b, const float *host, size_t n, pt_compute_dtype dt) {
    if (dt == PT_DTYPE_F32) return dfrom(be, b, host, n);
    uint16_t *h = pt_xmalloc((n + 1) * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++)
        h[i] = dt == PT_DTYPE_BF16 ? pt_f32_to_bf16(host[i]) : pt_f32_to_f16(host[i]);
    void *d = dnew_as(be, b, n, dt);
    if (n) be->to_device(be, d, h, n * sizeof(uint16_t));
    free(h);
    return d;
}
/* The buffer's contents (16-bit elements widened to float). */
static void dget(const dbuf *b, void *host) {
    if (b->dt == PT_DTYPE_F32) {
        b->be->to_host(b->be, host, (float *)b->base + GUARD, b->n * sizeof(float));
        return;
    }
    uint16_t *h = pt_xmalloc((b->elems + 1) * sizeof(uint16_t));
    b->be->to_host(b->be, h, (float *)b->base + GUARD, b->elems * sizeof(uint16_t));
    for (size_t i = 0; i < b->elems; i++)
        ((float *)host)[i] = b->dt == PT_DTYPE_BF16 ? pt_bf16_to_f32(h[i]) : pt_f16_to_f32(h[i]);
    free(h);
}
/* number of guard words overwritten */
static int dguards(const dbuf *b) {
    const size_t tot = b->n + 2 * GUARD;
    uint32_t *h = pt_xmalloc(tot * sizeof(uint32_t));
    b->be->to_host(b->be, h, b->base, tot * sizeof(uint32_t));
    int bad = 0;
    for (size_t i = 0; i < GUARD; i++) bad += h[i] != GUARD_BITS;
    for (size_t i = GUARD + b->n; i < tot; i++) bad += h[i] != GUARD_BITS;
    free(h);
    return bad;
}
/* Activation buffers of a backend (act_dtype: the cuda backend keeps bf16 / f16 ones). */
#define dact_new(be, b, n) dnew_as((be), (b), (n), (be)->act_dtype)
#define dact_from(be, b, host, n) dfrom_as((be), (b), (host), (n), (be)->act_dtype)
/* The relative error of rounding a float to a backend's activations (half an ulp), for
 * tolerances of outputs the backend writes as activations. */
static double act_rt(const pt_backend *be) {
    return be->act_dtype == PT_DTYPE_BF16  ? 1.0 / 256
           : be->act_dtype == PT_DTYPE_F16 ? 1.0 / 2048
                                           : 0;
}
static void dfree(dbuf *b) {
    if (b->base) b->be->free(b->be, b->base);
    b->base = NULL;
}

/* ---- comparison and the table ----------------------------------------------------------------- */

typedef struct {
    double max_abs, max_rel;
    size_t n, bad, nan_mismatch;
    size_t first_bad;
} cmp_t;

static void cmp_init(cmp_t *c) { memset(c, 0, sizeof *c), c->first_bad = (size_t)-1; }

/* got vs ref: |got - ref| <= atol + rtol * |ref|, NaN / Inf must match exactly */
static void cmp_f(cmp_t *c, const float *got, const float *ref, size_t n, double atol, double rtol) {
    for (size_t i = 0; i < n; i++) {
        const double g = got[i], r = ref[i];
        c->n++;
        if (isnan(g) || isnan(r) || isinf(g) || isinf(r)) {
            const int same = (isnan(g) && isnan(r)) || (isinf(g) && isinf(r) && (g > 0) == (r > 0));
            if (!same) {
                c->nan_mismatch++, c->bad++;
                if (c->first_bad == (size_t)-1) c->first_bad = c->n - 1;
            }
            continue;
        }
        const double d = fabs(g - r);
        if (d > c->max_abs) c->max_abs = d;
        if (fabs(r) > 1e-30 && d / fabs(r) > c->max_rel) c->max_rel = d / fabs(r);
        if (d > atol + rtol * fabs(r)) {
            c->bad++;
            if (c->first_bad == (size_t)-1) c->first_bad = c->n - 1;
        }
    }
}
static void cmp_d(cmp_t *c, const double *got, const double *ref, size_t n, double atol, double rtol) {
    for (size_t i = 0; i < n; i++) {
        const float g = (float)got[i], r = (float)ref[i];
        if (isnan(got[i]) != isnan(ref[i])) {
            c->n++, c->bad++, c->nan_mismatch++;
            continue;
        }
        (void)g, (void)r;
        const double d = fabs(got[i] - ref[i]);
        c->n++;
        if (d > c->max_abs) c->max_abs = d;
        if (fabs(ref[i]) > 1e-300 && d / fabs(ref[i]) > c->max_rel) c->max_rel = d / fabs(ref[i]);
        if (d > atol + rtol * fabs(ref[i])) c->bad++;
    }
}
static void cmp_i(cmp_t *c, const int32_t *got, const int32_t *ref, size_t n) {
    for (size_t i = 0; i < n; i++) {
        c->n++;
        if (got[i] != ref[i]) {
            c->bad++;
            if (c->first_bad == (size_t)-1) c->first_bad = c->n - 1;
        }
    }
}

static int g_rows, g_failed;
static const char *g_filter;

static int want(const char *op) { return !g_filter || strstr(op, g_filter); }

static void report(const char *op, const char *shape, const char *dt, const cmp_t *c, double atol,
                   double rtol, int guards) {
    const int ok = c->bad == 0 && guards == 0 && c->n > 0;
    char tol[48];
    snprintf(tol, sizeof tol, "%.0e+%.0e*|r|", atol, rtol);
    printf("%-22s %-60s %-11s %7zu %10.3e %10.3e %-14s %s", op, shape, dt, c->n, c->max_abs, c->max_rel, tol,
           ok ? "ok" : "FAIL");
    if (!ok) {
        printf("  (%zu bad", c->bad);
        if (c->nan_mismatch) printf(", %zu nan/inf mismatches", c->nan_mismatch);
        if (c->first_bad != (size_t)-1) printf(", first at %zu", c->first_bad);
        if (guards) printf(", %d sentinel words overwritten", guards);
        if (!c->n) printf(", nothing compared");
        printf(")");
        g_failed++;
    }
    printf("\n");
    fflush(stdout);
    g_rows++;
}

/* ---- synthetic models ------------------------------------------------------------------------- */

/* The operations' scratch (backend.h, reserve) for `rows` rows and `keys` positions. */
static void reserve_for(pt_backend *be, const pt_config *cfg, int rows, int keys, const float *inv_freq) {
    const pt_reserve r = {rows, keys, keys, rows, 32, inv_freq, NULL, NULL};
    pt_error e;
    if (be->reserve(be, cfg, &r) || pt_backend_take_error(be, &e, NULL)) {
        fprintf(stderr, "test_backend_ops: %s: reserve failed: %s\n", be->name, be->status.msg);
        exit(1);
    }
}

typedef struct {
    const char *name;
    pt_config cfg;
    pt_weights host;
    float **owned;
    int n_owned;
} synth;

static float *own(synth *s, float *p) {
    s->owned = pt_xrealloc(s->owned, (size_t)(s->n_owned + 1) * sizeof(float *));
    s->owned[s->n_owned++] = p;
    return p;
}
static float *wmat(synth *s, size_t n, float scale, pt_compute_dtype dt) {
    float *v = own(s, rnd_vec(n, scale));
    round_vec(v, n, dt);
    return v;
}
static float *wvec_around(synth *s, size_t n, float center, float scale) {
    float *v = own(s, rnd_vec(n, scale));
    for (size_t i = 0; i < n; i++) v[i] += center;
    return v;
}
/* A weight matrix as the checkpoint would hold it: float32, or (dt bf16 / f16) the rounded
 * values stored in that dtype, so both backends convert the same file contents. */
static pt_tensor wtensor(synth *s, const float *v, size_t n, pt_compute_dtype dt) {
    if (dt == PT_DTYPE_F32) return (pt_tensor){v, PT_DT_F32};
    uint16_t *h = (uint16_t *)own(s, pt_xmalloc((n ? n : 1) * sizeof(uint16_t)));
    for (size_t i = 0; i < n; i++) h[i] = dt == PT_DTYPE_BF16 ? pt_f32_to_bf16(v[i]) : pt_f32_to_f16(v[i]);
    return (pt_tensor){h, dt == PT_DTYPE_BF16 ? PT_DT_BF16 : PT_DT_F16};
}
/* A projection of parts with the given row counts (summing to out), each [rows, in] or, when
 * `transposed`, stored [in, rows] as GPT-2's Conv1D does. */
static pt_linear wlin_parts(synth *s, const int *rows, int n_parts, int in, int bias, int transposed,
                            pt_compute_dtype dt) {
    pt_linear l;
    memset(&l, 0, sizeof l);
    l.in = in;
    l.n_parts = n_parts;
    for (int k = 0; k < n_parts; k++) {
        const size_t n = (size_t)rows[k] * in;
        float *w = wmat(s, n, 0.2f, dt);
        if (transposed) { /* the same matrix stored [in, rows] */
            float *t = own(s, pt_xmalloc(n * sizeof(float)));
            for (int r = 0; r < rows[k]; r++)
                for (int c = 0; c < in; c++) t[(size_t)c * rows[k] + r] = w[(size_t)r * in + c];
            w = t;
        }
        l.part[k] = (pt_linear_part){wtensor(s, w, n, dt), bias ? wvec_around(s, (size_t)rows[k], 0.0f, 0.1f) : NULL,
                                     rows[k], transposed};
        l.out += rows[k];
    }
    return l;
}
static pt_linear wlin(synth *s, int out, int in, int bias, int transposed, pt_compute_dtype dt) {
    return wlin_parts(s, &out, 1, in, bias, transposed, dt);
}

/* llama-like (RMSNorm, SwiGLU, RoPE, GQA) or gpt2-like (LayerNorm, GELU, learned positions,
 * biases, tied head); weights rounded to dt so that both backends see the same values. */
static void synth_make(synth *s, const char *name, int gpt2, int d, int H, int KV, int hd, int ff, int V,
                       pt_compute_dtype dt) {
    memset(s, 0, sizeof *s);
    s->name = name;
    pt_config *c = &s->cfg;
    c->arch = gpt2 ? PT_ARCH_GPT2 : PT_ARCH_LLAMA;
    snprintf(c->model_type, sizeof c->model_type, "%s", gpt2 ? "gpt2" : "llama");
    c->n_layers = 1;
    c->d_model = d;
    c->n_heads = H;
    c->n_kv_heads = KV;
    c->head_dim = hd;
    c->d_ff = ff;
    c->vocab_size = V;
    c->max_positions = 128;
    c->bos_token_id = c->eos_token_id = -1;
    c->norm = gpt2 ? PT_NORM_LAYERNORM : PT_NORM_RMSNORM;
    c->norm_eps = 1e-5;
    c->mlp = gpt2 ? PT_MLP_GELU_TANH : PT_MLP_SWIGLU;
    c->learned_positions = gpt2;
    c->qkv_bias = c->o_bias = c->mlp_bias = gpt2;
    c->tied_embeddings = gpt2;
    c->rope = gpt2 ? PT_ROPE_NONE : PT_ROPE_DEFAULT;
    c->rope_theta = 10000.0;
    pt_weights *w = &s->host;
    w->tok_emb = wtensor(s, wmat(s, (size_t)V * d, 0.5f, dt), (size_t)V * d, dt);
    if (gpt2) {
        const size_t np = (size_t)c->max_positions * d;
        w->pos_emb = wtensor(s, wmat(s, np, 0.2f, dt), np, dt);
    }
    w->layers = pt_xcalloc(1, sizeof(pt_layer_weights));
    pt_layer_weights *L = w->layers;
    L->norm1_w = wvec_around(s, (size_t)d, 1.0f, 0.1f);
    L->norm1_b = gpt2 ? wvec_around(s, (size_t)d, 0.0f, 0.1f) : NULL;
    L->norm2_w = wvec_around(s, (size_t)d, 1.0f, 0.1f);
    L->norm2_b = gpt2 ? wvec_around(s, (size_t)d, 0.0f, 0.1f) : NULL;
    /* gpt2: fused c_attn, Conv1D [in, out] storage; llama: q|k|v and gate|up as parts */
    const int qkv_rows[3] = {H * hd, KV * hd, KV * hd}, gu_rows[2] = {ff, ff};
    if (gpt2) {
        L->qkv = wlin(s, (H + 2 * KV) * hd, d, 1, 1, dt);
        L->up = wlin(s, ff, d, 1, 1, dt);
    } else {
        L->qkv = wlin_parts(s, qkv_rows, 3, d, 0, 0, dt);
        L->up = wlin_parts(s, gu_rows, 2, d, 0, 0, dt);
    }
    L->o = wlin(s, d, H * hd, gpt2, gpt2, dt);
    L->down = wlin(s, d, ff, gpt2, gpt2, dt);
    w->final_norm_w = wvec_around(s, (size_t)d, 1.0f, 0.1f);
    w->final_norm_b = gpt2 ? wvec_around(s, (size_t)d, 0.0f, 0.1f) : NULL;
    if (gpt2) {
        w->lm_head = pt_linear_one(w->tok_emb, NULL, V, d, 0);
    } else {
        w->lm_head = wlin(s, V, d, 0, 0, dt);
    }
    if (!gpt2) {
        float *inv = own(s, pt_xmalloc((size_t)hd / 2 * sizeof(float)));
        pt_rope_inv_freq(c, inv);
        w->rope_inv_freq = inv;
    }
}
static void synth_free(synth *s) {
    for (int i = 0; i < s->n_owned; i++) free(s->owned[i]);
    free(s->owned);
    free(s->host.layers);
}

/* ---- the backends ----------------------------------------------------------------------------- */

typedef struct {
    pt_backend *cpu, *gpu; /* gpu: the cuda backend under test */
    pt_compute_dtype dt;
    const char *tag;       /* dtype name, or dtype + variant (e.g. "bf16/plain") */
} pair_t;

/* ---- simple ops ------------------------------------------------------------------------------- */

static void test_fill_add(pair_t *P) {
    const size_t n = 1237;
    if (want("fill")) {
        dbuf a, b;
        float *da = dnew(P->cpu, &a, n), *db = dnew(P->gpu, &b, n);
        P->cpu->fill(P->cpu, da, -3.25f, n);
        P->gpu->fill(P->gpu, db, -3.25f, n);
        float *ha = pt_xmalloc(n * 4), *hb = pt_xmalloc(n * 4);
        dget(&a, ha), dget(&b, hb);
        cmp_t c;
        cmp_init(&c);
        cmp_f(&c, hb, ha, n, 0, 0);
        report("fill", "n=1237", P->tag, &c, 0, 0, dguards(&b));
        dfree(&a), dfree(&b), free(ha), free(hb);
    }
    if (want("add")) {
        float *x = rnd_vec(n, 1), *y = rnd_vec(n, 1);
        dbuf xa, ya, xb, yb;
        float *dxa = dfrom(P->cpu, &xa, x, n), *dya = dfrom(P->cpu, &ya, y, n);
        float *dxb = dfrom(P->gpu, &xb, x, n), *dyb = dfrom(P->gpu, &yb, y, n);
        P->cpu->add(P->cpu, dxa, dya, n);
        P->gpu->add(P->gpu, dxb, dyb, n);
        float *ha = pt_xmalloc(n * 4), *hb = pt_xmalloc(n * 4);
        dget(&xa, ha), dget(&xb, hb);
        cmp_t c;
        cmp_init(&c);
        cmp_f(&c, hb, ha, n, 0, 0);
        report("add", "n=1237", P->tag, &c, 0, 0, dguards(&xb) + dguards(&yb));
        dfree(&xa), dfree(&ya), dfree(&xb), dfree(&yb), free(x), free(y), free(ha), free(hb);
    }
}

/* The pinned staging ring of the cuda backend (upload_once): 64 gathers with distinct 4 KiB row
 * tables, back to back with no synchronisation, lap a fresh backend's 64 KiB ring four times.
 * The one host table is rewritten between the calls (the backend must have taken its copy);
 * every output is checked against the rows it names. Emulated, a ring chunk written again
 * before the event of its last copy completed is a pinned-reuse violation at the final
 * synchronisation (the copy may not have run yet on a GPU). */
static void test_staging_ring(pt_backend *gpu) {
    enum { N = 4096, D = 4, M = 1024, K = 64 };
    float *x = rnd_vec((size_t)N * D, 1.0f);
    int32_t *rows = pt_xmalloc((size_t)K * M * sizeof(int32_t)),
            *table = pt_xmalloc(M * sizeof(int32_t));
    for (size_t i = 0; i < (size_t)K * M; i++) rows[i] = rnd_int(N);
    dbuf xb, ob;
    const float *dx = dfrom(gpu, &xb, x, (size_t)N * D);
    float *dout = dnew(gpu, &ob, (size_t)K * M * D);
    for (int k = 0; k < K; k++) {
        memcpy(table, rows + (size_t)k * M, M * sizeof(int32_t));
        gpu->gather_rows(gpu, dx, table, M, D, dout + (size_t)k * M * D);
    }
    float *got = pt_xmalloc((size_t)K * M * D * 4), *ref = pt_xmalloc((size_t)K * M * D * 4);
    dget(&ob, got);
    for (size_t r = 0; r < (size_t)K * M; r++) memcpy(ref + r * D, x + (size_t)rows[r] * D, D * 4);
    cmp_t c;
    cmp_init(&c);
    cmp_f(&c, got, ref, (size_t)K * M * D, 0, 0);
    report("staging_ring", "64 gather_rows of m=1024, no sync between", "f32", &c, 0, 0,
           dguards(&ob));
    dfree(&xb), dfree(&ob), free(x), free(rows), free(table), free(got), free(ref);
}

/* ops that need a model: embed, norm, linear, mlp_act, row_norms, gather_rows */
static void test_model_ops(pair_t *P, synth *S, pt_backend *gpu_alt, const char *alt_tag) {
    const pt_config *cfg = &S->cfg;
    const int d = cfg->d_model, V = cfg->vocab_size;
    pt_error e;
    pt_weights wa, wb, wc;
    memset(&wc, 0, sizeof wc);
    if (P->cpu->load_weights(P->cpu, cfg, &S->host, &wa, &e) || P->gpu->load_weights(P->gpu, cfg, &S->host, &wb, &e)) {
        fprintf(stderr, "load_weights: %s\n", e.msg);
        exit(1);
    }
    if (gpu_alt && gpu_alt->load_weights(gpu_alt, cfg, &S->host, &wc, &e)) {
        fprintf(stderr, "load_weights: %s\n", e.msg);
        exit(1);
    }
    /* scratch for up to 64 rows */
    reserve_for(P->cpu, cfg, 64, 64, wa.rope_inv_freq);
    reserve_for(P->gpu, cfg, 64, 64, wb.rope_inv_freq);
    if (gpu_alt) reserve_for(gpu_alt, cfg, 64, 64, wc.rope_inv_freq);
    char shape[96];
    const double rt = 1e-4;

    /* embed */
    if (want("embed")) {
        const int n = 29;
        int32_t ids[29], pos[29];
        for (int i = 0; i < n; i++) ids[i] = i == 0 ? V - 1 : rnd_int(V), pos[i] = rnd_int(cfg->max_positions);
        dbuf xa, xb;
        float *dxa = dnew(P->cpu, &xa, (size_t)n * d), *dxb = dnew(P->gpu, &xb, (size_t)n * d);
        P->cpu->embed(P->cpu, cfg, &wa, ids, pos, n, dxa);
        P->gpu->embed(P->gpu, cfg, &wb, ids, pos, n, dxb);
        float *ha = pt_xmalloc((size_t)n * d * 4), *hb = pt_xmalloc((size_t)n * d * 4);
        dget(&xa, ha), dget(&xb, hb);
        cmp_t c;
        cmp_init(&c);
        cmp_f(&c, hb, ha, (size_t)n * d, 1e-7, 1e-6);
        snprintf(shape, sizeof shape, "%s n=%d d=%d V=%d%s", S->name, n, d, V, wa.pos_emb.data ? " +pos" : "");
        report("embed", shape, P->tag, &c, 1e-7, 1e-6, dguards(&xb));
        dfree(&xa), dfree(&xb), free(ha), free(hb);
    }

    /* norms: the model's own kind, two widths of rows */
    if (want("norm")) {
        const int n = 37;
        float *x = rnd_vec((size_t)n * d, 2.0f);
        for (int i = 0; i < d; i++) x[i] += 5.0f; /* a row with a large mean */
        dbuf xa, xb, ya, yb;
        float *dxa = dfrom(P->cpu, &xa, x, (size_t)n * d), *dxb = dfrom(P->gpu, &xb, x, (size_t)n * d);
        float *dya = dnew(P->cpu, &ya, (size_t)n * d);
        void *dyb = dact_new(P->gpu, &yb, (size_t)n * d); /* residual in, activations out */
        const pt_layer_weights *la = &wa.layers[0], *lb = &wb.layers[0];
        P->cpu->norm(P->cpu, cfg, dxa, n, la->norm1_w, la->norm1_b, dya);
        P->gpu->norm(P->gpu, cfg, dxb, n, lb->norm1_w, lb->norm1_b, dyb);
        float *ha = pt_xmalloc((size_t)n * d * 4), *hb = pt_xmalloc((size_t)n * d * 4);
        dget(&ya, ha), dget(&yb, hb);
        const double nrt = rt + act_rt(P->gpu);
        cmp_t c;
        cmp_init(&c);
        cmp_f(&c, hb, ha, (size_t)n * d, 1e-6, nrt);
        snprintf(shape, sizeof shape, "%s %s n=%d d=%d", S->name, cfg->norm == PT_NORM_RMSNORM ? "rms" : "layer", n, d);
        report("norm", shape, P->tag, &c, 1e-6, nrt, dguards(&yb));
        dfree(&xa), dfree(&xb), dfree(&ya), dfree(&yb), free(ha), free(hb), free(x);
    }

    /* linear: every projection of the layer and the LM head, a few row counts */
    if (want("linear")) {
        const pt_linear *la[] = {&wa.layers[0].qkv, &wa.layers[0].o, &wa.layers[0].up, &wa.layers[0].down, &wa.lm_head};
        const pt_linear *lb[] = {&wb.layers[0].qkv, &wb.layers[0].o, &wb.layers[0].up, &wb.layers[0].down, &wb.lm_head};
        const pt_linear *lc[5] = {NULL, NULL, NULL, NULL, NULL};
        if (gpu_alt) lc[0] = &wc.layers[0].qkv, lc[1] = &wc.layers[0].o, lc[2] = &wc.layers[0].up,
                     lc[3] = &wc.layers[0].down, lc[4] = &wc.lm_head;
        const char *names[] = {"qkv", "o", "up", "down", "lm_head"};
        const int rows[] = {1, 7, 33};
        for (int k = 0; k < 5; k++)
            for (int ri = 0; ri < 3; ri++) {
                const int n = rows[ri], in = la[k]->in, out = la[k]->out;
                float *x = rnd_vec((size_t)n * in, 1.0f);
                round_vec(x, (size_t)n * in, P->dt); /* the cuda backend rounds GEMM inputs */
                dbuf xa, xb, ya, yb, yc, xc;
                float *dxa = dfrom(P->cpu, &xa, x, (size_t)n * in),
                      *dya = dnew(P->cpu, &ya, (size_t)n * out);
                void *dxb =
                    dact_from(P->gpu, &xb, x, (size_t)n * in); /* activations in, float32 out */
                float *dyb = dnew(P->gpu, &yb, (size_t)n * out);
                P->cpu->linear(P->cpu, dxa, n, la[k], dya);
                P->gpu->linear(P->gpu, dxb, n, lb[k], dyb);
                float *ha = pt_xmalloc((size_t)n * out * 4), *hb = pt_xmalloc((size_t)n * out * 4);
                dget(&ya, ha), dget(&yb, hb);
                double amax = 0;
                for (size_t i = 0; i < (size_t)n * out; i++) amax = fabs(ha[i]) > amax ? fabs(ha[i]) : amax;
                const double at = 1e-5 * (amax > 1 ? amax : 1);
                cmp_t c;
                cmp_init(&c);
                cmp_f(&c, hb, ha, (size_t)n * out, at, rt);
                snprintf(shape, sizeof shape, "%s %s n=%d %dx%d%s", S->name, names[k], n, out, in, la[k]->part[0].b ? " +b" : "");
                report("linear", shape, P->tag, &c, at, rt, dguards(&yb));
                /* linear_add: the same product added into a residual (GEMM beta = 1) */
                if (k == 1 || k == 3) {
                    float *r = rnd_vec((size_t)n * out, 4.0f);
                    dbuf ra, rb;
                    float *dra = dfrom(P->cpu, &ra, r, (size_t)n * out), *drb = dfrom(P->gpu, &rb, r, (size_t)n * out);
                    P->cpu->linear_add(P->cpu, dxa, n, la[k], dra);
                    P->gpu->linear_add(P->gpu, dxb, n, lb[k], drb);
                    float *hra = pt_xmalloc((size_t)n * out * 4), *hrb = pt_xmalloc((size_t)n * out * 4);
                    dget(&ra, hra), dget(&rb, hrb);
                    cmp_t cr;
                    cmp_init(&cr);
                    cmp_f(&cr, hrb, hra, (size_t)n * out, at + 4e-6, rt);
                    report("linear_add", shape, P->tag, &cr, at + 4e-6, rt, dguards(&rb));
                    dfree(&ra), dfree(&rb), free(r), free(hra), free(hrb);
                }
                if (gpu_alt) {
                    void *dxc = dact_from(gpu_alt, &xc, x, (size_t)n * in);
                    float *dyc = dnew(gpu_alt, &yc, (size_t)n * out);
                    gpu_alt->linear(gpu_alt, dxc, n, lc[k], dyc);
                    dget(&yc, hb);
                    cmp_init(&c);
                    cmp_f(&c, hb, ha, (size_t)n * out, at, rt);
                    report("linear", shape, alt_tag, &c, at, rt, dguards(&yc));
                    dfree(&xc), dfree(&yc);
                }
                dfree(&xa), dfree(&xb), dfree(&ya), dfree(&yb), free(ha), free(hb), free(x);
            }
    }

    /* mlp_act */
    if (want("mlp_act")) {
        const int n = 13, ff = cfg->d_ff, w_in = cfg->mlp == PT_MLP_SWIGLU ? 2 * ff : ff;
        float *h = rnd_vec((size_t)n * w_in, 3.0f);
        h[0] = 30.0f, h[1] = -30.0f, h[2] = 0.0f;
        dbuf ha_, hb_, oa, ob; /* gate|up float32 rows in, activations out */
        float *dha = dfrom(P->cpu, &ha_, h, (size_t)n * w_in),
              *doa = dnew(P->cpu, &oa, (size_t)n * ff);
        float *dhb = dfrom(P->gpu, &hb_, h, (size_t)n * w_in);
        void *dob = dact_new(P->gpu, &ob, (size_t)n * ff);
        P->cpu->mlp_act(P->cpu, cfg, dha, n, doa);
        P->gpu->mlp_act(P->gpu, cfg, dhb, n, dob);
        float *ra = pt_xmalloc((size_t)n * ff * 4), *rb = pt_xmalloc((size_t)n * ff * 4);
        dget(&oa, ra), dget(&ob, rb);
        const double mrt = rt + act_rt(P->gpu);
        cmp_t c;
        cmp_init(&c);
        cmp_f(&c, rb, ra, (size_t)n * ff, 1e-6, mrt);
        snprintf(shape, sizeof shape, "%s %s n=%d ff=%d", S->name, cfg->mlp == PT_MLP_SWIGLU ? "swiglu" : "gelu_tanh", n, ff);
        report("mlp_act", shape, P->tag, &c, 1e-6, mrt, dguards(&ob));
        dfree(&ha_), dfree(&hb_), dfree(&oa), dfree(&ob), free(ra), free(rb), free(h);
    }

    /* row_norms into a strided column of a prefilled buffer */
    if (want("row_norms")) {
        const int n = 9, stride = 3;
        float *x = rnd_vec((size_t)n * d, 1.0f), *o0 = rnd_vec((size_t)n * stride, 1.0f);
        dbuf xa, xb, oa, ob;
        float *dxa = dfrom(P->cpu, &xa, x, (size_t)n * d), *dxb = dfrom(P->gpu, &xb, x, (size_t)n * d);
        float *doa = dfrom(P->cpu, &oa, o0, (size_t)n * stride), *dob = dfrom(P->gpu, &ob, o0, (size_t)n * stride);
        P->cpu->row_norms(P->cpu, dxa, n, d, doa + 1, stride);
        P->gpu->row_norms(P->gpu, dxb, n, d, dob + 1, stride);
        float ra[27], rb[27];
        dget(&oa, ra), dget(&ob, rb);
        cmp_t c;
        cmp_init(&c);
        cmp_f(&c, rb, ra, (size_t)n * stride, 1e-6, rt);
        snprintf(shape, sizeof shape, "%s n=%d d=%d stride=%d", S->name, n, d, stride);
        report("row_norms", shape, P->tag, &c, 1e-6, rt, dguards(&ob));
        dfree(&xa), dfree(&xb), dfree(&oa), dfree(&ob), free(x), free(o0);
    }

    /* gather_rows */
    if (want("gather_rows")) {
        const int n = 20, m = 6;
        int32_t rows[6] = {19, 0, 7, 7, 3, 12};
        float *x = rnd_vec((size_t)n * d, 1.0f);
        dbuf xa, xb, oa, ob;
        float *dxa = dfrom(P->cpu, &xa, x, (size_t)n * d), *dxb = dfrom(P->gpu, &xb, x, (size_t)n * d);
        float *doa = dnew(P->cpu, &oa, (size_t)m * d), *dob = dnew(P->gpu, &ob, (size_t)m * d);
        P->cpu->gather_rows(P->cpu, dxa, rows, m, d, doa);
        P->gpu->gather_rows(P->gpu, dxb, rows, m, d, dob);
        float *ra = pt_xmalloc((size_t)m * d * 4), *rb = pt_xmalloc((size_t)m * d * 4);
        dget(&oa, ra), dget(&ob, rb);
        cmp_t c;
        cmp_init(&c);
        cmp_f(&c, rb, ra, (size_t)m * d, 0, 0);
        snprintf(shape, sizeof shape, "%s m=%d of %d d=%d", S->name, m, n, d);
        report("gather_rows", shape, P->tag, &c, 0, 0, dguards(&ob));
        dfree(&xa), dfree(&xb), dfree(&oa), dfree(&ob), free(ra), free(rb), free(x);
    }

    P->cpu->free_weights(P->cpu, cfg, &wa);
    P->gpu->free_weights(P->gpu, cfg, &wb);
    if (gpu_alt) gpu_alt->free_weights(gpu_alt, cfg, &wc);
}

/* ---- the families' operations (Qwen3, Gemma 2/3, OLMo 2, Phi-3, SmolLM3) --------------------- */

/* Run an in-place op on both backends from the same input x[n] and compare (atol, rtol). */
typedef void (*inplace_fn)(pt_backend *be, const pt_config *cfg, float *x, const float *w, void *arg);
static void cmp_inplace(pair_t *P, const char *op, const char *shape, const pt_config *cfg, const float *x, size_t n,
                        const float *w, size_t nw, inplace_fn fn, void *arg, double at, double rt) {
    dbuf xa, xb, wa, wb;
    memset(&wa, 0, sizeof wa), memset(&wb, 0, sizeof wb);
    float *dxa = dfrom(P->cpu, &xa, x, n), *dxb = dfrom(P->gpu, &xb, x, n); /* float32 rows */
    const float *dwa = w ? dfrom(P->cpu, &wa, w, nw) : NULL, *dwb = w ? dfrom(P->gpu, &wb, w, nw) : NULL;
    fn(P->cpu, cfg, dxa, dwa, arg);
    fn(P->gpu, cfg, dxb, dwb, arg);
    float *ha = pt_xmalloc(n * 4), *hb = pt_xmalloc(n * 4);
    dget(&xa, ha), dget(&xb, hb);
    cmp_t c;
    cmp_init(&c);
    cmp_f(&c, hb, ha, n, at, rt);
    report(op, shape, P->tag, &c, at, rt, dguards(&xb) + (w ? dguards(&wb) : 0));
    dfree(&xa), dfree(&xb), free(ha), free(hb);
    if (w) dfree(&wa), dfree(&wb);
}

/* rms_norm's geometry: n rows of row_stride, groups of width from col0 */
typedef struct {
    int n, stride, col0, groups, width;
} rms_geom;
static void do_rms(pt_backend *be, const pt_config *cfg, float *x, const float *w, void *arg) {
    const rms_geom *g = arg;
    be->rms_norm(be, cfg, x, g->n, g->stride, g->col0, g->groups, g->width, w);
}
static void do_softcap(pt_backend *be, const pt_config *cfg, float *x, const float *w, void *arg) {
    (void)cfg, (void)w;
    be->softcap(be, x, *(const size_t *)arg, 30.0f);
}

static void family_cfg(pt_config *c, int H, int KV, int hd, int ff) {
    memset(c, 0, sizeof *c);
    c->arch = PT_ARCH_LLAMA;
    c->n_layers = 1, c->n_heads = H, c->n_kv_heads = KV, c->head_dim = hd;
    c->d_model = 64, c->d_ff = ff, c->vocab_size = 320, c->max_positions = 128;
    c->norm = PT_NORM_RMSNORM, c->norm_eps = 1e-6, c->mlp = PT_MLP_SWIGLU, c->pre_norms = 1;
    c->rope = PT_ROPE_DEFAULT, c->rope_theta = 10000.0;
}

/* mlp_act of a gated MLP (SwiGLU / GeGLU) on 13 rows of width ff, large and zero gates included */
static void glu_case(pair_t *P, pt_mlp_kind mlp, int ff, double rt) {
    const int n = 13;
    pt_config cfg;
    family_cfg(&cfg, 4, 2, 16, ff);
    cfg.mlp = mlp;
    float *h = rnd_vec((size_t)n * 2 * ff, 3.0f);
    h[0] = 30.0f, h[1] = -30.0f, h[2] = 0.0f;
    dbuf ha_, hb_, oa, ob;
    float *dha = dfrom(P->cpu, &ha_, h, (size_t)n * 2 * ff),
          *doa = dnew(P->cpu, &oa, (size_t)n * ff);
    float *dhb = dfrom(P->gpu, &hb_, h, (size_t)n * 2 * ff);
    void *dob = dact_new(P->gpu, &ob, (size_t)n * ff);
    P->cpu->mlp_act(P->cpu, &cfg, dha, n, doa);
    P->gpu->mlp_act(P->gpu, &cfg, dhb, n, dob);
    float *ra = pt_xmalloc((size_t)n * ff * 4), *rb = pt_xmalloc((size_t)n * ff * 4);
    dget(&oa, ra), dget(&ob, rb);
    cmp_t c;
    cmp_init(&c);
    /* gelu's float rounding (1e-6 near 0, where tanh formulations differ) times |up| <~ 10 */
    cmp_f(&c, rb, ra, (size_t)n * ff, 1e-5, rt + act_rt(P->gpu));
    char shape[96];
    snprintf(shape, sizeof shape, "%s n=%d ff=%d", mlp == PT_MLP_GEGLU ? "geglu" : "swiglu", n, ff);
    report("mlp_act", shape, P->tag, &c, 1e-5, rt + act_rt(P->gpu), dguards(&ob));
    dfree(&ha_), dfree(&hb_), dfree(&oa), dfree(&ob), free(ra), free(rb), free(h);
}

/* ---- RoPE + the key/value store ------------------------------------------------------- */

/* got (values of type dt) vs float32 ref rounded once to dt, where ref itself is known to
 * within atol + rtol * |ref|: got must be the rounding of some value in that interval, i.e. lie
 * in [round(ref - t), round(ref + t)] (rounding is monotonic). max_abs: |got - round(ref)|. */
static void cmp_rounded(cmp_t *c, const float *got, const float *ref, size_t n, double atol,
                        double rtol, pt_compute_dtype dt) {
    for (size_t i = 0; i < n; i++) {
        const float r = round_dt(ref[i], dt);
        if (!isfinite(got[i]) || !isfinite(ref[i])) {
            cmp_f(c, got + i, &r, 1, 0, 0);
            continue;
        }
        const double t = atol + rtol * fabs(ref[i]), d = fabs((double)got[i] - r);
        const float lo = round_dt((float)(ref[i] - t), dt), hi = round_dt((float)(ref[i] + t), dt);
        c->n++;
        if (d > c->max_abs) c->max_abs = d;
        if (fabs(r) > 1e-30 && d / fabs(r) > c->max_rel) c->max_rel = d / fabs(r);
        if (got[i] < lo || got[i] > hi) {
            c->bad++;
            if (c->first_bad == (size_t)-1) c->first_bad = c->n - 1;
        }
    }
}

/* The RoPE of a rope_store_kv case: none (GPT-2, PT_LAYER_NO_ROPE layers), the default table,
 * partial rotary with longrope's two tables per row and attention factor (Phi-3), a table of its
 * own over head_dim 256 (Gemma 3's local layers). */
typedef enum { RSK_NONE, RSK_DEFAULT, RSK_LONGROPE, RSK_LOCAL } rsk_rope;
typedef struct {
    rsk_rope rope;
    int H, KV, hd;
} rsk_case;

static void rsk_cfg(pt_config *cfg, const rsk_case *k) {
    family_cfg(cfg, k->H, k->KV, k->hd, 96);
    if (k->rope == RSK_NONE) cfg->rope = PT_ROPE_NONE;
    if (k->rope == RSK_LONGROPE) {
        cfg->rotary_dim = 8;
        cfg->rope = PT_ROPE_LONGROPE;
        cfg->rope_attn_factor = 1.19;
        cfg->rope_original_max_positions = 16;
        for (int i = 0; i < 4; i++)
            cfg->rope_short[i] = 1.0f + 0.5f * i, cfg->rope_long[i] = 2.0f + 3.0f * i;
    }
    if (k->rope == RSK_LOCAL) cfg->rope_local_theta = 10000.0, cfg->rope_theta = 1e6;
}

/* One backend's run of a case: its tables uploaded and reserved, then three calls A, B, A on the
 * same q|k|v rows and cache (positions, longrope rows and cache rows differ between A and B: the
 * cuda backend uploads an index table only when it differs from the last one in its slot, so a
 * stale one would show). */
typedef struct {
    int n;
    const int32_t *pos[2], *kv_rows[2];
    const uint8_t *alt[2];
    const float *tab[2]; /* host inv_freq tables: the row's own, longrope's long one (or NULL) */
} rsk_calls;
static void rsk_run(pt_backend *be, const pt_config *cfg, const rsk_calls *R, float *qkv, void *kc,
                    void *vc) {
    const int half = pt_rotary_dim(cfg) / 2;
    dbuf t0, t1;
    memset(&t0, 0, sizeof t0), memset(&t1, 0, sizeof t1);
    const float *d0 = R->tab[0] ? dfrom(be, &t0, R->tab[0], (size_t)half) : NULL;
    const float *d1 = R->tab[1] ? dfrom(be, &t1, R->tab[1], (size_t)half) : NULL;
    const pt_reserve rs = {R->n, 20001, 20001, R->n, 32, d0, d1, NULL};
    pt_error e;
    if (be->reserve(be, cfg, &rs) || pt_backend_take_error(be, &e, NULL)) {
        fprintf(stderr, "test_backend_ops: %s: reserve failed: %s\n", be->name, be->status.msg);
        exit(1);
    }
    for (int k = 0; k < 3; k++) {
        const int ab = k == 1;
        const pt_rope_args rope = {d0, R->pos[ab], d1, d1 ? R->alt[ab] : NULL};
        be->rope_store_kv(be, cfg, qkv, R->n, d0 ? &rope : NULL, kc, vc, R->kv_rows[ab]);
    }
    be->sync(be);
    if (d0) dfree(&t0);
    if (d1) dfree(&t1);
}

/* rope_store_kv on both backends from the same q|k|v rows and cache. q: the cpu's (rope's
 * tolerance); the k and v parts of q|k|v: unchanged, exactly; v in the cache, and k without
 * RoPE: the cpu's float32 value rounded to the cache type, exactly; k with RoPE: the rounding,
 * once, of a float32 value within rope's tolerance of the cpu's (cmp_rounded: the GPU may
 * contract the rotation into FMAs and its double cos may differ in the last place, so its
 * float32 key can differ from the cpu's in the last bits, and rounding can then flip the 16-bit
 * result by one ulp; anything else, e.g. rounding twice, is an error); the cache rows no call
 * names: untouched (exactly the random values they started with). */
static void test_rope_store_kv_case(pair_t *P, const rsk_case *K) {
    pt_config cfg;
    rsk_cfg(&cfg, K);
    const int n = 19, rows_c = 50, H = K->H, KV = K->KV, hd = K->hd, kvd = KV * hd, qd = H * hd;
    const int w = qd + 2 * kvd, half = pt_rotary_dim(&cfg) / 2;
    const pt_compute_dtype kdt = P->gpu->kv_dtype;
    int32_t pos[2][19], kvr[2][19];
    uint8_t alt[2][19];
    int perm[50];
    for (int i = 0; i < rows_c; i++) perm[i] = i;
    for (int i = rows_c - 1; i > 0; i--) {
        int j = rnd_int(i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int i = 0; i < n; i++) {
        pos[0][i] = i < 9 ? i : rnd_int(20000), pos[1][i] = rnd_int(20000);
        kvr[0][i] = perm[i], kvr[1][i] = perm[n + i]; /* perm[2n ..]: rows no call names */
        alt[0][i] = (uint8_t)(i % 3 == 1), alt[1][i] = (uint8_t)(i % 3 == 2);
    }
    float *t0 = pt_xmalloc((size_t)(half ? half : 1) * 4),
          *t1 = pt_xmalloc((size_t)(half ? half : 1) * 4);
    if (K->rope != RSK_NONE)
        pt_rope_inv_freq_table(&cfg, K->rope == RSK_LOCAL ? PT_ROPE_LOCAL : PT_ROPE_GLOBAL, t0);
    if (K->rope == RSK_LONGROPE) pt_rope_inv_freq_table(&cfg, PT_ROPE_LONG, t1);
    const rsk_calls R = {n,
                         {pos[0], pos[1]},
                         {kvr[0], kvr[1]},
                         {alt[0], alt[1]},
                         {K->rope != RSK_NONE ? t0 : NULL, K->rope == RSK_LONGROPE ? t1 : NULL}};
    /* inputs; the cache starts with values the cache type holds, the same on both backends */
    const size_t tot = (size_t)rows_c * kvd;
    float *x = rnd_vec((size_t)n * w, 1.0f), *k0 = rnd_vec(tot, 1.0f), *v0 = rnd_vec(tot, 1.0f);
    round_vec(k0, tot, kdt), round_vec(v0, tot, kdt);
    dbuf xa, xb, ka, kb, va, vb;
    float *dxa = dfrom(P->cpu, &xa, x, (size_t)n * w), *dxb = dfrom(P->gpu, &xb, x, (size_t)n * w);
    float *dka = dfrom(P->cpu, &ka, k0, tot), *dva = dfrom(P->cpu, &va, v0, tot);
    void *dkb = dfrom_as(P->gpu, &kb, k0, tot, kdt), *dvb = dfrom_as(P->gpu, &vb, v0, tot, kdt);
    rsk_run(P->cpu, &cfg, &R, dxa, dka, dva);
    rsk_run(P->gpu, &cfg, &R, dxb, dkb, dvb);

    static const char *what[] = {"none", "default", "longrope rows", "local table"};
    char shape[96], sh[128];
    snprintf(shape, sizeof shape, "%s n=%d heads=%d+%d hd=%d rotary=%d kv=%s", what[K->rope], n, H,
             KV, hd, 2 * half, pt_compute_dtype_name(kdt));
    const double rt = 1e-4;
    float *ha = pt_xmalloc((size_t)n * w * 4), *hb = pt_xmalloc((size_t)n * w * 4);
    dget(&xa, ha), dget(&xb, hb);
    cmp_t c;
    cmp_init(&c); /* q rotated in place; k and v of q|k|v left as they were, on both backends */
    for (int r = 0; r < n; r++) {
        const size_t o = (size_t)r * w;
        cmp_f(&c, hb + o, ha + o, (size_t)qd, 1e-6, rt);
        cmp_f(&c, hb + o + qd, x + o + qd, (size_t)2 * kvd, 0, 0);
        cmp_f(&c, ha + o + qd, x + o + qd, (size_t)2 * kvd, 0, 0);
    }
    snprintf(sh, sizeof sh, "%s q|k|v", shape);
    report("rope_store_kv", sh, P->tag, &c, 1e-6, rt, dguards(&xb));
    free(ha), free(hb);

    /* the caches: rows A and B named, the others untouched */
    float *ca = pt_xmalloc(tot * 4), *cb = pt_xmalloc(tot * 4);
    for (int kv = 0; kv < 2; kv++) {
        dget(kv ? &va : &ka, ca), dget(kv ? &vb : &kb, cb);
        const float *start = kv ? v0 : k0;
        const int rotated = !kv && K->rope != RSK_NONE;
        const double at = rotated ? 1e-6 : 0, rtol = rotated ? rt : 0;
        cmp_t cn, cu;
        cmp_init(&cn), cmp_init(&cu);
        for (int i = 0; i < rows_c; i++) {
            const size_t o = (size_t)perm[i] * kvd;
            if (i < 2 * n) {
                cmp_rounded(&cn, cb + o, ca + o, (size_t)kvd, at, rtol, kdt);
            } else {
                cmp_f(&cu, cb + o, start + o, (size_t)kvd, 0, 0);
                cmp_f(&cu, ca + o, start + o, (size_t)kvd, 0, 0);
            }
        }
        snprintf(sh, sizeof sh, "%s %s cache", shape, kv ? "v" : "k");
        report("rope_store_kv", sh, P->tag, &cn, at, rtol, dguards(kv ? &vb : &kb));
        snprintf(sh, sizeof sh, "%s %s cache, other rows", shape, kv ? "v" : "k");
        report("rope_store_kv", sh, P->tag, &cu, 0, 0, 0);
    }
    dfree(&xa), dfree(&xb), dfree(&ka), dfree(&kb), dfree(&va), dfree(&vb);
    free(ca), free(cb), free(x), free(k0), free(v0), free(t0), free(t1);
}

/* Every RoPE kind, with and without GQA, head_dim 12 .. 256. */
static void test_rope_store_kv(pair_t *P) {
    static const rsk_case cases[] = {
        {RSK_NONE, 4, 4, 12},    {RSK_NONE, 4, 2, 16},     {RSK_DEFAULT, 4, 2, 16},
        {RSK_DEFAULT, 4, 4, 16}, {RSK_DEFAULT, 2, 1, 128}, {RSK_LONGROPE, 4, 2, 16},
        {RSK_LOCAL, 2, 1, 256},
    };
    if (!want("rope_store_kv")) return;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        test_rope_store_kv_case(P, &cases[i]);
}

static void test_family_ops(pair_t *P) {
    char shape[96];
    const double rt = 1e-4;
    pt_config cfg;
    /* rms_norm: per-head q and k norms of fused qkv rows (Qwen3; Gemma 3 with 1 + w), whole
     * projections (OLMo 2), a d_model post-norm; head_dim 256 (Gemma) */
    if (want("rms_norm")) {
        const int hds[] = {16, 256};
        for (int k = 0; k < 2; k++)
            for (int plus = 0; plus < 2; plus++) {
                const int H = 3, KV = 1, hd = hds[k], n = 11, stride = (H + 2 * KV) * hd;
                family_cfg(&cfg, H, KV, hd, 96);
                cfg.norm_plus_one = plus;
                float *x = rnd_vec((size_t)n * stride, 2.0f), *w = rnd_vec((size_t)H * hd, 0.5f);
                const rms_geom geo[] = {{n, stride, 0, H, hd}, {n, stride, H * hd, KV, hd},
                                        {n, stride, 0, 1, H * hd}, {n, stride, H * hd, 1, KV * hd}};
                const char *what[] = {"q per head", "k per head", "q whole", "k whole"};
                for (int g = 0; g < 4; g++) {
                    snprintf(shape, sizeof shape, "%s n=%d hd=%d stride=%d%s", what[g], n, hd, stride,
                             plus ? " (1+w)" : "");
                    cmp_inplace(P, "rms_norm", shape, &cfg, x, (size_t)n * stride, w,
                                (size_t)geo[g].width, do_rms, (void *)&geo[g], 1e-6, rt);
                }
                free(x), free(w);
            }
        family_cfg(&cfg, 4, 2, 16, 96);
        cfg.norm_plus_one = 1;
        const int n = 9, d = 200;
        float *x = rnd_vec((size_t)n * d, 3.0f), *w = rnd_vec((size_t)d, 0.5f);
        const rms_geom g = {n, d, 0, 1, d};
        cmp_inplace(P, "rms_norm", "post-norm n=9 d=200 (1+w)", &cfg, x, (size_t)n * d, w, (size_t)d, do_rms,
                    (void *)&g, 1e-6, rt);
        free(x), free(w);
    }
    /* final-logit soft-capping */
    if (want("softcap")) {
        size_t n = 3 * 1000 + 7;
        float *x = rnd_vec(n, 40.0f);
        family_cfg(&cfg, 4, 2, 16, 96);
        cmp_inplace(P, "softcap", "n=3007 cap=30", &cfg, x, n, NULL, 0, do_softcap, &n, 1e-6, rt);
        free(x);
    }
    /* GeGLU (Gemma); both gated activations at a width of several 1024-column chunks with a
     * partial last one (the kernel's second grid dimension) */
    if (want("mlp_act")) {
        glu_case(P, PT_MLP_GEGLU, 96, rt);
        glu_case(P, PT_MLP_GEGLU, 2500, rt);
        glu_case(P, PT_MLP_SWIGLU, 2500, rt);
    }
}

/* embed with Gemma's scale, norm with (1 + w) and without weights (OLMo 2) on a model */
static void test_family_model_ops(pair_t *P, synth *S) {
    pt_config *cfg = &S->cfg;
    const int d = cfg->d_model, V = cfg->vocab_size;
    pt_error e;
    pt_weights wa, wb;
    cfg->embed_scale = 8.0, cfg->norm_plus_one = 1;
    if (P->cpu->load_weights(P->cpu, cfg, &S->host, &wa, &e) || P->gpu->load_weights(P->gpu, cfg, &S->host, &wb, &e)) {
        fprintf(stderr, "load_weights: %s\n", e.msg);
        exit(1);
    }
    reserve_for(P->cpu, cfg, 64, 64, wa.rope_inv_freq);
    reserve_for(P->gpu, cfg, 64, 64, wb.rope_inv_freq);
    const int n = 21;
    if (want("embed")) {
        int32_t ids[21], pos[21];
        for (int i = 0; i < n; i++) ids[i] = rnd_int(V), pos[i] = i;
        dbuf xa, xb;
        float *dxa = dnew(P->cpu, &xa, (size_t)n * d), *dxb = dnew(P->gpu, &xb, (size_t)n * d);
        P->cpu->embed(P->cpu, cfg, &wa, ids, pos, n, dxa);
        P->gpu->embed(P->gpu, cfg, &wb, ids, pos, n, dxb);
        float *ha = pt_xmalloc((size_t)n * d * 4), *hb = pt_xmalloc((size_t)n * d * 4);
        dget(&xa, ha), dget(&xb, hb);
        cmp_t c;
        cmp_init(&c);
        cmp_f(&c, hb, ha, (size_t)n * d, 1e-6, 1e-6);
        report("embed", "x8 (Gemma) n=21", P->tag, &c, 1e-6, 1e-6, dguards(&xb));
        dfree(&xa), dfree(&xb), free(ha), free(hb);
    }
    if (want("norm")) {
        float *x = rnd_vec((size_t)n * d, 2.0f);
        for (int k = 0; k < 2; k++) {
            dbuf xa, xb, ya, yb;
            float *dxa = dfrom(P->cpu, &xa, x, (size_t)n * d), *dxb = dfrom(P->gpu, &xb, x, (size_t)n * d);
            float *dya = dnew(P->cpu, &ya, (size_t)n * d);
            void *dyb = dact_new(P->gpu, &yb, (size_t)n * d);
            P->cpu->norm(P->cpu, cfg, dxa, n, k ? NULL : wa.layers[0].norm1_w, NULL, dya);
            P->gpu->norm(P->gpu, cfg, dxb, n, k ? NULL : wb.layers[0].norm1_w, NULL, dyb);
            float *ha = pt_xmalloc((size_t)n * d * 4), *hb = pt_xmalloc((size_t)n * d * 4);
            dget(&ya, ha), dget(&yb, hb);
            cmp_t c;
            cmp_init(&c);
            const double nrt = 1e-4 + act_rt(P->gpu);
            cmp_f(&c, hb, ha, (size_t)n * d, 1e-6, nrt);
            report("norm", k ? "no weights: copy (OLMo 2)" : "rms (1+w) (Gemma)", P->tag, &c, 1e-6,
                   nrt, dguards(&yb));
            dfree(&xa), dfree(&xb), dfree(&ya), dfree(&yb), free(ha), free(hb);
        }
        free(x);
    }
    P->cpu->free_weights(P->cpu, cfg, &wa);
    P->gpu->free_weights(P->gpu, cfg, &wb);
}

/* ---- row_abs_stats (the stat `massive`) --------------------------------------------------- */

static int cmp_abs_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Independent reference: sort |x| (qsort), median = the mean of the two middle values for even
 * d, argmax = the first index holding the maximum. */
static void abs_stats_ref(const float *x, int n, int d, float *mx, int32_t *arg, float *med) {
    float *s = pt_xmalloc((size_t)d * sizeof(float));
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        for (int i = 0; i < d; i++) s[i] = fabsf(xr[i]);
        qsort(s, (size_t)d, sizeof(float), cmp_abs_float);
        mx[r] = s[d - 1];
        arg[r] = 0;
        while (fabsf(xr[arg[r]]) != s[d - 1]) arg[r]++;
        med[r] = (float)(0.5 * ((double)s[(d - 1) / 2] + (double)s[d / 2]));
    }
    free(s);
}

/* Rows of one kind: 0 normal, 1 ties (a few magnitudes of either sign, the maximum repeated),
 * 2 large outliers planted in a few dimensions, 3 all zeros but one row. */
static float *abs_stats_input(int n, int d, int kind) {
    float *x = rnd_vec((size_t)n * d, 1.0f);
    for (int r = 0; r < n; r++) {
        float *xr = x + (size_t)r * d;
        if (kind == 1)
            for (int i = 0; i < d; i++) xr[i] = (float)(rnd_int(4) - 2 + (xr[i] > 0 ? 0.5 : -0.5));
        if (kind == 2)
            for (int k = 0; k < 1 + rnd_int(3); k++)
                xr[rnd_int(d)] = (rnd_int(2) ? 1 : -1) * 3000.0f * (1 + rnd_int(3));
        if (kind == 3 && r > 0) memset(xr, 0, (size_t)d * sizeof(float));
    }
    return x;
}

/* Exact on both backends (selections over the bits of |x|), into strided, prefilled columns. */
static void test_row_abs_stats(pair_t *P, int n, int d, int kind) {
    if (!want("row_abs_stats")) return;
    pt_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.d_model = d, cfg.n_heads = 1, cfg.head_dim = 2;
    reserve_for(P->cpu, &cfg, n, 1, NULL); /* the cpu op's per-thread row of d keys */
    const int stride = 3;
    const size_t no = (size_t)n * stride, nx = (size_t)n * d;
    float *x = abs_stats_input(n, d, kind), *o0 = rnd_vec(3 * no, 1.0f);
    dbuf xa, xb, oa, ob;
    float *dxa = dfrom(P->cpu, &xa, x, nx), *dxb = dfrom(P->gpu, &xb, x, nx);
    float *doa = dfrom(P->cpu, &oa, o0, 3 * no), *dob = dfrom(P->gpu, &ob, o0, 3 * no);
    P->cpu->row_abs_stats(P->cpu, dxa, n, d, doa + 1, (int32_t *)(doa + no + 1), doa + 2 * no + 1,
                          stride);
    P->gpu->row_abs_stats(P->gpu, dxb, n, d, dob + 1, (int32_t *)(dob + no + 1), dob + 2 * no + 1,
                          stride);
    float *ra = pt_xmalloc(3 * no * 4), *rb = pt_xmalloc(3 * no * 4),
          *want_o = pt_xmalloc(3 * no * 4);
    float *mx = pt_xmalloc((size_t)n * 4), *med = pt_xmalloc((size_t)n * 4);
    int32_t *arg = pt_xmalloc((size_t)n * 4);
    dget(&oa, ra), dget(&ob, rb);
    abs_stats_ref(x, n, d, mx, arg, med);
    memcpy(want_o, o0, 3 * no * 4); /* untouched columns keep their fill */
    for (int r = 0; r < n; r++) {
        const size_t o = (size_t)r * stride + 1;
        want_o[o] = mx[r], want_o[2 * no + o] = med[r];
        memcpy(want_o + no + o, &arg[r], 4);
    }
    const char *kinds[] = {"normal", "ties", "outliers", "zero rows"};
    char shape[96];
    snprintf(shape, sizeof shape, "n=%d d=%d stride=%d %s", n, d, stride, kinds[kind]);
    const float *got[2] = {rb, ra};
    const char *tags[2] = {"f32", "cpu"};
    for (int b = 0; b < 2; b++) { /* the cuda backend, then the cpu one, against the sort */
        cmp_t c;
        cmp_init(&c);
        cmp_f(&c, got[b], want_o, no, 0, 0);
        cmp_i(&c, (const int32_t *)(got[b] + no), (const int32_t *)(want_o + no), no);
        cmp_f(&c, got[b] + 2 * no, want_o + 2 * no, no, 0, 0);
        report("row_abs_stats", shape, tags[b], &c, 0, 0, dguards(b ? &oa : &ob));
    }
    dfree(&xa), dfree(&xb), dfree(&oa), dfree(&ob);
    free(x), free(o0), free(ra), free(rb), free(want_o), free(mx), free(med), free(arg);
}

/* ---- vocabulary ops --------------------------------------------------------------------------- */

/* A decode step's results after defer_results: log_softmax (entropy, top-k), a divergence and
 * PICKS picks (more calls than a device backend keeps pending, so it fetches part of them before
 * the sync), read after one sync, against the cpu's results of the same calls (ea, ia, pa: the
 * cpu's log_softmax of x; dla: its log-probs). */
static void deferred_case(const pair_t *P, const float *x, int m, int V, int K, const double *ea,
                          const int32_t *ia, const float *pa, const float *dla, double rt) {
    enum { PICKS = 10 };
    const size_t n = (size_t)m * V;
    const int mm = m < 8 ? m : 8;
    dbuf lc;
    float *dlc = dfrom(P->gpu, &lc, x, n);
    double *ed = pt_xmalloc((size_t)m * 8), *a3 = pt_xmalloc((size_t)3 * m * 8);
    double *d3 = pt_xmalloc((size_t)3 * m * 8);
    int32_t *id = pt_xcalloc((size_t)m * K, 4), ids[8];
    float *pd = pt_xcalloc((size_t)m * K, 4), oa[8], od[PICKS][8];
    for (int r = 0; r < mm; r++) ids[r] = rnd_int(V);
    P->cpu->divergence(P->cpu, dla, 0, NULL, dla, (size_t)V, NULL, m, V, a3, a3 + m, a3 + 2 * m);
    P->cpu->pick(P->cpu, dla, mm, V, ids, oa);
    P->gpu->defer_results(P->gpu);
    P->gpu->log_softmax(P->gpu, dlc, m, V, ed, K, id, pd);
    P->gpu->divergence(P->gpu, dlc, 0, NULL, dlc, (size_t)V, NULL, m, V, d3, d3 + m, d3 + 2 * m);
    for (int k = 0; k < PICKS; k++) P->gpu->pick(P->gpu, dlc, mm, V, ids, od[k]);
    P->gpu->sync(P->gpu);
    char shape[96];
    snprintf(shape, sizeof shape, "m=%d V=%d K=%d: log_softmax, divergence, %d picks", m, V, K,
             PICKS);
    cmp_t c;
    cmp_init(&c);
    cmp_d(&c, ed, ea, (size_t)m, 1e-9, 1e-6);
    cmp_f(&c, pd, pa, (size_t)m * K, 1e-6, rt);
    cmp_d(&c, d3, a3, (size_t)3 * m, 1e-7, 1e-5);
    for (int k = 0; k < PICKS; k++) cmp_f(&c, od[k], oa, (size_t)mm, 1e-6, rt);
    cmp_t ci;
    cmp_init(&ci);
    cmp_i(&ci, id, ia, (size_t)m * K);
    report("deferred", shape, P->tag, &c, 1e-6, rt, ci.bad != 0 || dguards(&lc));
    dfree(&lc);
    free(ed), free(a3), free(d3), free(id), free(pd);
}

static void test_vocab(pair_t *P, int V, int m, int K) {
    char shape[96];
    const double rt = 1e-4;
    float *x = rnd_vec((size_t)m * V, 3.0f);
    /* ties: row 0 has its maximum at ids 9 and 4 (and 3 equal runners-up); row 1 is constant */
    x[9] = x[4] = 20.0f;
    x[11] = x[2] = x[V - 1] = 15.0f;
    if (m > 1)
        for (int v = 0; v < V; v++) x[(size_t)V + v] = 0.5f;
    const size_t n = (size_t)m * V;
    dbuf la, lb;
    float *dla = dfrom(P->cpu, &la, x, n), *dlb = dfrom(P->gpu, &lb, x, n);
    double *ea = pt_xmalloc((size_t)m * 8), *eb = pt_xmalloc((size_t)m * 8);
    int32_t *ia = pt_xcalloc((size_t)m * K + 1, 4), *ib = pt_xcalloc((size_t)m * K + 1, 4);
    float *pa = pt_xcalloc((size_t)m * K + 1, 4), *pb = pt_xcalloc((size_t)m * K + 1, 4);
    ib[(size_t)m * K] = 0x5a5a5a5a; /* host sentinel after the top-k output */
    P->cpu->log_softmax(P->cpu, dla, m, V, ea, K, ia, pa);
    P->gpu->log_softmax(P->gpu, dlb, m, V, eb, K, ib, pb);
    float *ha = pt_xmalloc(n * 4), *hb = pt_xmalloc(n * 4);
    dget(&la, ha), dget(&lb, hb);
    if (want("log_softmax")) {
        cmp_t c;
        cmp_init(&c);
        cmp_f(&c, hb, ha, n, 1e-6, rt);
        snprintf(shape, sizeof shape, "m=%d V=%d (ties)", m, V);
        report("log_softmax", shape, P->tag, &c, 1e-6, rt, dguards(&lb));
        cmp_init(&c);
        cmp_d(&c, eb, ea, (size_t)m, 1e-9, 1e-6);
        report("log_softmax.entropy", shape, P->tag, &c, 1e-9, 1e-6, 0);
        cmp_init(&c);
        cmp_i(&c, ib, ia, (size_t)m * K);
        snprintf(shape, sizeof shape, "m=%d V=%d K=%d (ties -> lower id)", m, V, K);
        report("log_softmax.topk_id", shape, P->tag, &c, 0, 0, ib[(size_t)m * K] != 0x5a5a5a5a);
        cmp_init(&c);
        cmp_f(&c, pb, pa, (size_t)m * K, 1e-6, rt);
        report("log_softmax.topk_logp", shape, P->tag, &c, 1e-6, rt, 0);
    }
    /* entropy / top-k not wanted: NULL outputs, logits still transformed */
    if (want("log_softmax")) {
        dbuf lc;
        float *dlc = dfrom(P->gpu, &lc, x, n);
        P->gpu->log_softmax(P->gpu, dlc, m, V, NULL, 0, NULL, NULL);
        dget(&lc, hb);
        cmp_t c;
        cmp_init(&c);
        cmp_f(&c, hb, ha, n, 1e-6, rt);
        snprintf(shape, sizeof shape, "m=%d V=%d no entropy/topk", m, V);
        report("log_softmax", shape, P->tag, &c, 1e-6, rt, dguards(&lc));
        dfree(&lc);
    }
    /* divergence between rows of the log-probs: broadcast P (stride 0) against all rows */
    if (want("divergence")) {
        double *a3 = pt_xmalloc((size_t)3 * m * 8), *b3 = pt_xmalloc((size_t)3 * m * 8);
        P->cpu->divergence(P->cpu, dla, 0, NULL, dla, (size_t)V, NULL, m, V, a3, a3 + m,
                           a3 + 2 * m);
        P->gpu->divergence(P->gpu, dlb, 0, NULL, dlb, (size_t)V, NULL, m, V, b3, b3 + m,
                           b3 + 2 * m);
        cmp_t c;
        cmp_init(&c);
        cmp_d(&c, b3, a3, (size_t)3 * m, 1e-7, 1e-5);
        snprintf(shape, sizeof shape, "m=%d V=%d p broadcast, kl_pq kl_qp js", m, V);
        report("divergence", shape, P->tag, &c, 1e-7, 1e-5, 0);
        /* kl_qp / js skipped (NULL) */
        P->gpu->divergence(P->gpu, dlb, (size_t)V, NULL, dlb + V * (m > 1), (size_t)V * (m > 1),
                           NULL, m - (m > 1), V, b3, NULL, NULL);
        P->cpu->divergence(P->cpu, dla, (size_t)V, NULL, dla + V * (m > 1), (size_t)V * (m > 1),
                           NULL, m - (m > 1), V, a3, NULL, NULL);
        cmp_init(&c);
        cmp_d(&c, b3, a3, (size_t)(m - (m > 1)), 1e-7, 1e-5);
        snprintf(shape, sizeof shape, "m=%d V=%d row vs next row, kl only", m - (m > 1), V);
        report("divergence", shape, P->tag, &c, 1e-7, 1e-5, 0);
        /* rows by index (the batch's pairs, a decode step's lanes): permuted and repeated rows,
         * against one unindexed call per row at the pointers computed here; both backends */
        const int mi = m + 3; /* more pairs than rows: rows repeat */
        int32_t *rp = pt_xmalloc((size_t)mi * 4), *rq = pt_xmalloc((size_t)mi * 4);
        double *r3 = pt_xmalloc((size_t)3 * mi * 8), *c3 = pt_xmalloc((size_t)3 * mi * 8);
        double *g3 = pt_xmalloc((size_t)3 * mi * 8);
        for (int r = 0; r < mi; r++) {
            rp[r] = (r * 7 + 3) % m, rq[r] = (m - 1 - r % m + m) % m;
            P->cpu->divergence(P->cpu, dla + (size_t)rp[r] * V, 0, NULL, dla + (size_t)rq[r] * V, 0,
                               NULL, 1, V, r3 + r, r3 + mi + r, r3 + 2 * mi + r);
        }
        P->cpu->divergence(P->cpu, dla, (size_t)V, rp, dla, (size_t)V, rq, mi, V, c3, c3 + mi,
                           c3 + 2 * mi);
        P->gpu->divergence(P->gpu, dlb, (size_t)V, rp, dlb, (size_t)V, rq, mi, V, g3, g3 + mi,
                           g3 + 2 * mi);
        cmp_init(&c);
        cmp_d(&c, c3, r3, (size_t)3 * mi, 0, 0); /* the same arithmetic: bitwise */
        snprintf(shape, sizeof shape, "m=%d V=%d rows by index, cpu vs a call per row", mi, V);
        report("divergence", shape, "cpu", &c, 0, 0, 0);
        cmp_init(&c);
        cmp_d(&c, g3, r3, (size_t)3 * mi, 1e-7, 1e-5);
        snprintf(shape, sizeof shape, "m=%d V=%d rows by index", mi, V);
        report("divergence", shape, P->tag, &c, 1e-7, 1e-5, 0);
        free(rp), free(rq), free(r3), free(c3), free(g3);
        free(a3), free(b3);
    }
    if (want("pick")) {
        int32_t ids[8];
        float oa[9], ob[9];
        const int mm = m < 8 ? m : 8;
        for (int r = 0; r < mm; r++) ids[r] = r == 0 ? -1 : r == 1 ? V : rnd_int(V);
        ob[mm] = 12345.0f;
        P->cpu->pick(P->cpu, dla, mm, V, ids, oa);
        P->gpu->pick(P->gpu, dlb, mm, V, ids, ob);
        cmp_t c;
        cmp_init(&c);
        cmp_f(&c, ob, oa, (size_t)mm, 0, 0);
        snprintf(shape, sizeof shape, "m=%d V=%d ids -1, V, random", mm, V);
        report("pick", shape, P->tag, &c, 0, 0, ob[mm] != 12345.0f);
    }
    if (want("deferred")) deferred_case(P, x, m, V, K, ea, ia, pa, dla, rt);
    dfree(&la), dfree(&lb);
    free(x), free(ea), free(eb), free(ia), free(ib), free(pa), free(pb), free(ha), free(hb);
}

/* ---- attention -------------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int H, KV, hd, window, layer, n_layers;
    int stats; /* 1 mass, 2 last, 4 pattern */
    float scale, softcap; /* score scale (0: head_dim^-1/2) and soft-capping (0: none) */
    int n_segs;
    pt_segment segs[12];
    int n_rows, n_cache, n_tok_rows;
    int64_t n_pat_rows;
} attn_case;

/* Append a clean sequence of length T: own rows and cache rows at the end of the batch, its own
 * token rows and pattern rows. */
static void add_clean(attn_case *A, int T) {
    pt_segment *s = &A->segs[A->n_segs++];
    memset(s, 0, sizeof *s);
    s->row = A->n_rows;
    s->n_q = T;
    s->pos0 = 0;
    s->prefix_kv = 0;
    s->own_kv = A->n_rows;
    s->ko_pos = -1;
    s->mass_row = s->last_row = A->n_tok_rows;
    s->pattern_row = A->n_pat_rows;
    s->final_pos = T - 1;
    A->n_rows += T;
    A->n_tok_rows += T;
    A->n_pat_rows += (int64_t)T * (T + 1) / 2;
    if (A->n_rows > A->n_cache) A->n_cache = A->n_rows;
}
/* Append a segment continuing the segment `base` (its keys 0..pos0-1 from base's cache rows):
 * n_q new queries at positions pos0.. (pos0 <= base's length), own cache rows fresh, knockout
 * optional. stats_rows: give it its own token/pattern rows (as prefix sharing does) or none (as
 * knockout variants do). */
static void add_ext(attn_case *A, int base, int pos0, int n_q, int ko, int ko_lo, int ko_hi, int stats_rows) {
    const pt_segment *b = &A->segs[base];
    pt_segment *s = &A->segs[A->n_segs++];
    memset(s, 0, sizeof *s);
    s->row = A->n_rows;
    s->n_q = n_q;
    s->pos0 = pos0;
    s->prefix_kv = b->own_kv - b->pos0 > 0 ? b->own_kv - b->pos0 : b->own_kv; /* base position 0 */
    if (b->pos0 > 0) s->prefix_kv = b->prefix_kv;
    s->own_kv = A->n_cache > A->n_rows ? A->n_cache : A->n_rows;
    s->ko_pos = ko;
    s->ko_lo = ko_lo;
    s->ko_hi = ko_hi;
    const int T = pos0 + n_q;
    if (stats_rows) {
        s->mass_row = s->last_row = A->n_tok_rows;
        s->pattern_row = A->n_pat_rows;
        A->n_tok_rows += T;
        A->n_pat_rows += (int64_t)T * (T + 1) / 2;
    } else {
        s->mass_row = s->last_row = s->pattern_row = -1;
    }
    s->final_pos = T - 1;
    A->n_rows += n_q;
    A->n_cache = s->own_kv + n_q;
    if (A->n_rows > A->n_cache) A->n_cache = A->n_rows;
}

/* Append a decode-like segment after the segment `base`: keys 0..pos0-1 from base's cache rows,
 * own keys pos0 .. pos0+q_off+n_q-1 in fresh cache rows (the first q_off of them already there,
 * as a variant's prompt rows or earlier generated tokens are), queries the last n_q of them. */
static void add_decode(attn_case *A, int base, int pos0, int q_off, int n_q, int ko, int stats_rows) {
    add_ext(A, base, pos0, q_off + n_q, ko, 0, ko >= 0 ? A->n_layers : 0, stats_rows);
    pt_segment *s = &A->segs[A->n_segs - 1];
    s->q_off = q_off;
    s->n_q = n_q;
    A->n_rows -= q_off; /* only the queries take activation rows */
}

static void attn_init(attn_case *A, const char *name, int H, int KV, int hd, int window, int stats) {
    memset(A, 0, sizeof *A);
    A->name = name;
    A->H = H, A->KV = KV, A->hd = hd, A->window = window, A->stats = stats;
    A->layer = 1, A->n_layers = 3;
}

static void run_attn(pt_backend *be, const attn_case *A, const float *q, const float *kc, const float *vc,
                     const float *o0, const float *m0, const float *l0, const float *p0, float *out, float *mass,
                     float *last, float *pat, int *guards) {
    const int q_stride = (A->H + 2 * A->KV) * A->hd, od = A->H * A->hd, kvd = A->KV * A->hd;
    const size_t LH = (size_t)A->n_layers * A->H;
    dbuf bq, bk, bv, bo, bm, bl, bp;
    memset(&bm, 0, sizeof bm), memset(&bl, 0, sizeof bl), memset(&bp, 0, sizeof bp);
    float *dq = dfrom(be, &bq, q, (size_t)A->n_rows * q_stride); /* fused q|k|v rows: float32 */
    void *dk = dfrom_as(be, &bk, kc, (size_t)A->n_cache * kvd, be->kv_dtype);
    void *dv = dfrom_as(be, &bv, vc, (size_t)A->n_cache * kvd, be->kv_dtype);
    void *dout = dact_from(be, &bo, o0, (size_t)A->n_rows * od);
    float *dm = A->stats & 1 ? dfrom(be, &bm, m0, (size_t)A->n_tok_rows * LH) : NULL;
    float *dl = A->stats & 2 ? dfrom(be, &bl, l0, (size_t)A->n_tok_rows * LH) : NULL;
    float *dp = A->stats & 4 ? dfrom(be, &bp, p0, (size_t)A->n_pat_rows * LH) : NULL;
    pt_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_heads = A->H, cfg.n_kv_heads = A->KV, cfg.head_dim = A->hd, cfg.d_model = A->H * A->hd;
    cfg.d_ff = cfg.d_model, cfg.n_layers = A->n_layers, cfg.vocab_size = 1;
    reserve_for(be, &cfg, A->n_rows, A->n_cache + 1, NULL);
    pt_attn_args a = {.layer = A->layer, .q = dq, .q_stride = q_stride, .k_cache = dk, .v_cache = dv, .out = dout,
                      .segs = A->segs, .n_segs = A->n_segs, .mass = dm, .last = dl, .pattern = dp,
                      .n_layers = A->n_layers, .n_heads = A->H, .n_kv_heads = A->KV, .head_dim = A->hd,
                      .window = A->window, .scale = A->scale > 0 ? A->scale : 1.0f / sqrtf((float)A->hd),
                      .softcap = A->softcap};
    be->attention(be, &a);
    dget(&bo, out);
    *guards = dguards(&bo) + dguards(&bq) + dguards(&bk) + dguards(&bv);
    if (dm) dget(&bm, mass), *guards += dguards(&bm);
    if (dl) dget(&bl, last), *guards += dguards(&bl);
    if (dp) dget(&bp, pat), *guards += dguards(&bp);
    dfree(&bq), dfree(&bk), dfree(&bv), dfree(&bo), dfree(&bm), dfree(&bl), dfree(&bp);
}

static void test_attn_case(pair_t *P, const attn_case *A, uint64_t seed) {
    if (!want("attention")) return;
    g_rng = seed;
    const int q_stride = (A->H + 2 * A->KV) * A->hd, od = A->H * A->hd, kvd = A->KV * A->hd;
    const size_t LH = (size_t)A->n_layers * A->H;
    const size_t nq = (size_t)A->n_rows * q_stride, nk = (size_t)A->n_cache * kvd, no = (size_t)A->n_rows * od;
    const size_t nm = (size_t)A->n_tok_rows * LH, np = (size_t)A->n_pat_rows * LH;
    /* q, k ~ N(0, amp^2): scaled scores q.k / sqrt(hd) have standard deviation amp^2 = 2.56
     * whatever the head dimension: peaked but not saturated patterns */
    const float amp = 1.6f;
    float *q = rnd_vec(nq, amp), *kc = rnd_vec(nk, amp), *vc = rnd_vec(nk, 1.0f);
    float *o0 = rnd_vec(no, 1.0f), *m0 = rnd_vec(nm, 1.0f), *l0 = rnd_vec(nm, 1.0f), *p0 = rnd_vec(np, 1.0f);
    /* the (prefilled) output is an activation buffer: both backends get it rounded */
    round_vec(o0, no, P->gpu->act_dtype);
    float *oa = pt_xmalloc((no + 1) * 4), *ob = pt_xmalloc((no + 1) * 4);
    float *ma = pt_xmalloc((nm + 1) * 4), *mb = pt_xmalloc((nm + 1) * 4);
    float *la = pt_xmalloc((nm + 1) * 4), *lb = pt_xmalloc((nm + 1) * 4);
    float *pa = pt_xmalloc((np + 1) * 4), *pb = pt_xmalloc((np + 1) * 4);
    int ga = 0, gb = 0;
    run_attn(P->cpu, A, q, kc, vc, o0, m0, l0, p0, oa, ma, la, pa, &ga);
    run_attn(P->gpu, A, q, kc, vc, o0, m0, l0, p0, ob, mb, lb, pb, &gb);
    /* Tolerances: f32 (and the plain path, which computes in f32 whatever the dtype) 1e-4
     * relative. Tensor-core path (q, k, v and the probabilities rounded to bf16 / f16): the
     * statistics 2e-2 absolute (SPEC §6), plus 2e-2 relative for attn_mass, a sum over up to T
     * queries; the output, whose error grows with the rounding of v and p, 1e-2 absolute with
     * f16 operands (the default for both dtypes), 5e-2 with bf16 operands (bf16/mmabf). */
    const int low = P->dt != PT_DTYPE_F32 && !strstr(P->tag, "plain");
    const int bf16_ops = strstr(P->tag, "mmabf") != NULL;
    const double out_at = low ? (bf16_ops ? 5e-2 : 1e-2) : 1e-5,
                 out_rt = low ? 2e-2 : 1e-4 + act_rt(P->gpu);
    const double st_at = low ? 2e-2 : 1e-6, st_rt = low ? 0 : 1e-4, mass_rt = low ? 2e-2 : 1e-4;
    char shape[128], segdesc[64] = "";
    int pos = 0;
    for (int i = 0; i < A->n_segs && pos < 26; i++) /* pos0 + n_q per segment, k: knockout */
        pos += snprintf(segdesc + pos, sizeof segdesc - (size_t)pos, "%s%d%s%d%s", i ? "," : "",
                        A->segs[i].pos0 + A->segs[i].q_off, A->segs[i].ko_pos >= 0 ? "k" : "+",
                        A->segs[i].n_q, i + 1 < A->n_segs && pos >= 22 ? ",..." : "");
    snprintf(shape, sizeof shape, "%s H%d/%d hd%d w%d%s [%s]", A->name, A->H, A->KV, A->hd, A->window,
             A->softcap > 0 ? " cap" : "", segdesc);
    cmp_t c;
    cmp_init(&c);
    cmp_f(&c, ob, oa, no, out_at, out_rt);
    report("attention.out", shape, P->tag, &c, out_at, out_rt, gb);
    if (A->stats & 1) {
        cmp_init(&c);
        cmp_f(&c, mb, ma, nm, st_at, mass_rt);
        report("attention.mass", shape, P->tag, &c, st_at, mass_rt, 0);
    }
    if (A->stats & 2) {
        cmp_init(&c);
        cmp_f(&c, lb, la, nm, st_at, st_rt);
        report("attention.last", shape, P->tag, &c, st_at, st_rt, 0);
    }
    if (A->stats & 4) {
        cmp_init(&c);
        cmp_f(&c, pb, pa, np, st_at, st_rt);
        report("attention.pattern", shape, P->tag, &c, st_at, st_rt, 0);
    }
    (void)ga;
    free(q), free(kc), free(vc), free(o0), free(m0), free(l0), free(p0);
    free(oa), free(ob), free(ma), free(mb), free(la), free(lb), free(pa), free(pb);
}

static int build_attn_cases(attn_case *C, int quick) {
    int n = 0;
    attn_case *A;
    /* ragged clean segments of mixed lengths, every statistic */
    A = &C[n++];
    attn_init(A, "ragged", 4, 4, 16, 0, 7);
    add_clean(A, 1), add_clean(A, 5), add_clean(A, 17), add_clean(A, 40), add_clean(A, 70);
    /* GQA, head_dim 64, tile boundaries */
    A = &C[n++];
    attn_init(A, "gqa", 8, 2, 64, 0, 7);
    add_clean(A, 33), add_clean(A, 64), add_clean(A, 65), add_clean(A, 3);
    /* prefix sharing: b = a + 3 tokens (own token / pattern rows), a 1-token extension */
    A = &C[n++];
    attn_init(A, "prefix", 4, 2, 16, 0, 7);
    add_clean(A, 20);
    add_ext(A, 0, 20, 3, -1, 0, 0, 1);
    add_clean(A, 9);
    add_ext(A, 2, 9, 1, -1, 0, 0, 1);
    /* knockout variants (keys 0..pos0-1 from the clean rows, key ko removed in layers [lo,hi)),
     * as the experiments lay them out: no statistics rows; one whose window excludes the layer */
    A = &C[n++];
    attn_init(A, "knockout", 4, 2, 16, 0, 7);
    add_clean(A, 30);
    add_ext(A, 0, 7, 23, 6, 0, 3, 0);
    add_ext(A, 0, 1, 29, 0, 1, 2, 0);
    add_ext(A, 0, 29, 1, 28, 0, 3, 0);
    add_ext(A, 0, 12, 18, 11, 2, 3, 0); /* layer 1 outside [2,3): plain continuation */
    add_ext(A, 0, 16, 14, 15, 0, 3, 1); /* with statistics rows */
    add_clean(A, 12);                   /* queries on both sides of the knocked-out key */
    A->segs[A->n_segs - 1].ko_pos = 5, A->segs[A->n_segs - 1].ko_hi = 3;
    /* sliding windows, with a prefix segment */
    A = &C[n++];
    attn_init(A, "window4", 4, 2, 16, 4, 7);
    add_clean(A, 50), add_clean(A, 9), add_clean(A, 1);
    add_ext(A, 0, 30, 20, -1, 0, 0, 1);
    A = &C[n++];
    attn_init(A, "window7-mass", 4, 2, 16, 7, 1);
    add_clean(A, 100), add_clean(A, 6);
    add_ext(A, 0, 80, 20, -1, 0, 0, 1);
    add_ext(A, 0, 41, 59, 40, 0, 3, 0);
    /* statistics subsets */
    A = &C[n++];
    attn_init(A, "last-only", 4, 2, 16, 0, 2);
    add_clean(A, 45), add_clean(A, 2);
    add_ext(A, 0, 45, 2, -1, 0, 0, 1);
    A = &C[n++];
    attn_init(A, "no-stats", 4, 2, 16, 0, 0);
    add_clean(A, 45), add_clean(A, 7);
    /* head dims: gpt2-tiny 12, 80, 96 (padded), 128, 256 */
    const int hds[] = {12, 80, 128, 256, 96};
    for (int i = 0; i < (quick ? 2 : 5); i++) {
        A = &C[n++];
        attn_init(A, "headdim", hds[i] >= 128 ? 2 : 4, hds[i] >= 128 ? 1 : 2, hds[i], 0, 7);
        add_clean(A, 37), add_clean(A, hds[i] >= 128 ? 19 : 70);
        add_ext(A, 0, 20, 17, 19, 0, 3, 0);
    }
    /* Gemma: query_pre_attn_scalar's scale, soft-capping (small, so it bites), local window,
     * knockout, head_dim 256 (Gemma 2 / 3) */
    A = &C[n++];
    attn_init(A, "gemma-cap", 4, 1, 24, 5, 7);
    A->scale = 1.0f / sqrtf(20.0f), A->softcap = 3.0f;
    add_clean(A, 30), add_clean(A, 4);
    add_ext(A, 0, 20, 10, 19, 0, 3, 0);
    add_ext(A, 0, 30, 2, -1, 0, 0, 1);
    A = &C[n++];
    attn_init(A, "gemma-hd256", 2, 1, 256, quick ? 0 : 9, 7);
    A->scale = 1.0f / sqrtf(224.0f), A->softcap = 50.0f;
    add_clean(A, 21), add_clean(A, 6);
    add_ext(A, 0, 12, 9, 11, 0, 3, 0);
    if (!quick) { /* several query tiles (64) and key tiles (32 at head_dim 256) */
        A = &C[n++];
        attn_init(A, "gemma-hd256-long", 2, 1, 256, 0, 7);
        A->scale = 1.0f / sqrtf(256.0f);
        add_clean(A, 75);
        add_ext(A, 0, 75, 1, -1, 0, 0, 1);
    }
    /* decode steps (queries after own keys already in the cache): a clean sequence's first and
     * sixth generated token, a knockout variant's generated token (the key stays hidden), a
     * teacher-forced run of 6 tokens, a query past a key tile, one with statistics rows */
    A = &C[n++];
    attn_init(A, "decode", 4, 2, 16, 0, 7);
    add_clean(A, 30);
    add_decode(A, 0, 30, 0, 1, -1, 0);
    add_decode(A, 0, 30, 5, 1, -1, 0);
    add_decode(A, 0, 7, 27, 1, 6, 0);
    add_decode(A, 0, 30, 0, 6, -1, 0);
    add_decode(A, 0, 12, 70, 1, 11, 0);
    add_decode(A, 0, 20, 9, 3, 4, 1);
    A = &C[n++];
    attn_init(A, "decode-window5", 4, 2, 16, 5, 7);
    add_clean(A, 40);
    add_decode(A, 0, 40, 3, 1, -1, 0);
    add_decode(A, 0, 9, 35, 1, 8, 0);
    add_decode(A, 0, 38, 4, 2, 36, 1);
    A = &C[n++];
    attn_init(A, "decode-gqa", 8, 2, 64, 0, 1);
    add_clean(A, 66);
    add_decode(A, 0, 66, 65, 1, -1, 0);
    add_decode(A, 0, 3, 90, 1, 2, 0);
    add_decode(A, 0, 66, 1, 33, -1, 1);
    /* decode steps on Gemma's attention: soft-capping, scale, head_dim 256 */
    A = &C[n++];
    attn_init(A, "decode-gemma-hd256", 2, 1, 256, 0, 7);
    A->scale = 1.0f / sqrtf(224.0f), A->softcap = 5.0f;
    add_clean(A, 40);
    add_decode(A, 0, 40, 0, 1, -1, 0);
    add_decode(A, 0, 33, 12, 1, 20, 0);
    add_decode(A, 0, 40, 3, 2, -1, 1);
    /* a window wider than a key tile and a knocked-out key early in a long variant: key tiles
     * wholly before a warp's queries that still need the window's or the knockout's mask */
    A = &C[n++];
    attn_init(A, "long-window-ko", 4, 2, 64, 100, 7);
    add_clean(A, 200);
    add_ext(A, 0, 20, 150, 9, 0, 3, 0);
    /* 128-query tiles (8 warps, bf16/w8): segments shorter and longer than a tile, a ~300-query
     * knockout variant with a window wider than a key tile (tiles straddling segment ends) */
    A = &C[n++];
    attn_init(A, "w8-window-ko", 4, 2, 64, 70, 7);
    add_clean(A, 300);
    add_ext(A, 0, 9, 291, 8, 0, 3, 0);
    add_clean(A, 50), add_clean(A, 140);
    /* 128-key blocks of the statistics pass (8 warps: bf16/w8, f16/pack): attn_mass alone under
     * a window narrower than a block, so that blocks end their queries at the window's edge (key
     * + 127 + window) and a variant's blocks start at its window's first key (140 - 49 = 91:
     * blocks straddle its prefix / own rows boundary at 140 and end 71 keys into a tile), a
     * knocked-out key inside a block, ragged last blocks (260 = 2 * 128 + 4, 129) */
    A = &C[n++];
    attn_init(A, "w8-stats-window-mass", 4, 2, 32, 50, 1);
    add_clean(A, 260);
    add_ext(A, 0, 140, 150, 150, 0, 3, 1);
    add_clean(A, 129);
    /* GQA-packed forward (bf16/pack, and bf16 / f16 by the launch rule where the queries are
     * short): decode steps of 1-3 queries after a long prefix, a run longer than a packed tile
     * (64 / group queries), groups 2, 4, 7 (rows past 9 queries padding), 8, 16 and 1 (MHA: not
     * packed), windows, knocked-out keys, head_dim 64 / 128 / 256 */
    A = &C[n++];
    attn_init(A, "pack-decode-g4", 8, 2, 64, 0, 7);
    add_clean(A, 100);
    add_decode(A, 0, 100, 0, 1, -1, 0);
    add_decode(A, 0, 100, 5, 1, -1, 0);
    add_decode(A, 0, 40, 61, 2, 20, 0);
    add_decode(A, 0, 100, 2, 3, -1, 1);
    add_decode(A, 0, 64, 6, 30, 63, 0);
    A = &C[n++];
    attn_init(A, "pack-decode-g8-window", 16, 2, 128, 70, 1);
    add_clean(A, 90);
    add_decode(A, 0, 90, 0, 1, -1, 0);
    add_decode(A, 0, 70, 21, 2, 60, 0);
    add_decode(A, 0, 90, 4, 3, -1, 1);
    add_decode(A, 0, 30, 50, 20, 29, 0);
    A = &C[n++];
    attn_init(A, "pack-decode-g2-hd256", 4, 2, 256, 9, 7);
    A->scale = 1.0f / sqrtf(224.0f), A->softcap = 5.0f;
    add_clean(A, 70);
    add_decode(A, 0, 70, 0, 1, -1, 0);
    add_decode(A, 0, 65, 3, 3, 66, 1);
    add_decode(A, 0, 50, 10, 40, -1, 0);
    A = &C[n++];
    attn_init(A, "pack-decode-g7", 14, 2, 64, 0, 7);
    add_clean(A, 75);
    add_decode(A, 0, 75, 0, 1, -1, 0);
    add_decode(A, 0, 20, 54, 3, 19, 0);
    add_decode(A, 0, 75, 1, 12, -1, 1);
    A = &C[n++];
    attn_init(A, "pack-decode-g16", 16, 1, 16, 6, 7);
    add_clean(A, 40);
    add_decode(A, 0, 40, 0, 1, -1, 0);
    add_decode(A, 0, 30, 10, 2, 35, 1);
    add_decode(A, 0, 40, 0, 9, -1, 0);
    A = &C[n++];
    attn_init(A, "pack-decode-mha", 4, 4, 64, 0, 7);
    add_clean(A, 80);
    add_decode(A, 0, 80, 0, 1, -1, 0);
    add_decode(A, 0, 50, 30, 2, 49, 1);
    /* long: several query and key tiles on both paths, decode-like single query */
    A = &C[n++];
    attn_init(A, "long", 2, 1, 64, 0, 7);
    add_clean(A, quick ? 130 : 200);
    add_ext(A, 0, quick ? 130 : 200, 1, -1, 0, 0, 1);
    return n;
}

/* ---- main ------------------------------------------------------------------------------------- */

static pt_backend *make_gpu(pt_compute_dtype dt, const char *env_name, const char *env_value, int skip_ok) {
    if (env_name) setenv(env_name, env_value, 1);
    pt_error e;
    pt_backend *be = pt_backend_cuda_create(0, dt, &e);
    if (env_name) unsetenv(env_name);
    if (!be) {
        fprintf(stderr, "test_backend_ops: %s\n", e.msg);
        exit(skip_ok ? 77 : 1);
    }
    return be;
}

/* the attention variants main() builds, in the table's order, and which cases each runs */
enum {
    AV_F32,
    AV_BF16,
    AV_F16,
    AV_BF16_PLAIN,
    AV_MBF,
    AV_MBF_NOPACK,
    AV_W8,
    AV_PACK,
    AV_NOPACK,
    AV_PACK16,
    N_ATTN_VARIANTS
};

static int attn_variant_applies(int v, const attn_case *A, int i, int nc) {
    switch (v) {
    case AV_F16:
        return i % 3 == 0;
    case AV_BF16_PLAIN:
        return i % 4 == 1;
    case AV_MBF:
        return i % 4 == 2 || i == nc - 1 || A->hd == 256;
    case AV_MBF_NOPACK: /* head_dim 256: bf16 operands on the forward's resident-Q instance
                           unpacked too; AV_MBF packs those cases by the launch rule */
        return A->hd == 256;
    case AV_PACK16:
        return i % 2 == 0 || strncmp(A->name, "pack", 4) == 0;
    default:
        return 1;
    }
}

/* --sample (valgrind's run): of the variants a case applies to, keep the `keep` that have run
 * on the fewest cases so far, so every case and every variant still runs, each a few times. */
static void sample_attn_variants(int *chosen, const int *runs, int keep) {
    int kept[N_ATTN_VARIANTS] = {0};
    for (int k = 0; k < keep; k++) {
        int best = -1;
        for (int v = 0; v < N_ATTN_VARIANTS; v++)
            if (chosen[v] && !kept[v] && (best < 0 || runs[v] < runs[best])) best = v;
        if (best >= 0) kept[best] = 1;
    }
    for (int v = 0; v < N_ATTN_VARIANTS; v++) chosen[v] = kept[v];
}

int main(int argc, char **argv) {
    uint64_t seed = 20250611;
    int skip_ok = 0, quick = 0, sample = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--skip-without-gpu")) skip_ok = 1;
        else if (!strcmp(argv[i], "--filter") && i + 1 < argc) g_filter = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--sample"))
            sample = 1;
        else {
            fprintf(
                stderr,
                "usage: %s [--seed N] [--skip-without-gpu] [--filter OP] [--quick] [--sample]\n",
                argv[0]);
            return 2;
        }
    }
    if (!skip_ok && getenv("PUNCTUM_TEST_SKIP_WITHOUT_GPU")) skip_ok = 1;
    if (!pt_backend_cuda_available(NULL)) {
        fprintf(stderr, "test_backend_ops: no usable CUDA device\n");
        return skip_ok ? 77 : 1;
    }
    pt_error e;
    pt_backend *cpu = pt_backend_cpu_create(1, &e);
    pt_backend *g32 = make_gpu(PT_DTYPE_F32, NULL, NULL, skip_ok);
    printf("test_backend_ops: cuda device \"%s\" vs %s, seed %llu (--seed to change)\n", g32->device_name,
           cpu->device_name, (unsigned long long)seed);
    printf("%-22s %-60s %-11s %7s %10s %10s %-14s %s\n", "op", "shape", "dtype", "n", "max_abs", "max_rel", "tolerance",
           "result");

    pt_backend *gb16 = make_gpu(PT_DTYPE_BF16, NULL, NULL, skip_ok);
    pt_backend *gf16 = make_gpu(PT_DTYPE_F16, NULL, NULL, skip_ok);
    pt_backend *gb16_plain = make_gpu(PT_DTYPE_BF16, "PUNCTUM_CUDA_MMA", "0", skip_ok);
    pt_backend *gb16_mbf = make_gpu(PT_DTYPE_BF16, "PUNCTUM_CUDA_MMA", "bf16", skip_ok);
    /* the attention forward on 8 warps (128-query tiles), one head a block, and the statistics
     * pass on 8 warps (128-key blocks; f16/pack's too), whatever the launch: the other backends
     * choose per launch, 4 warps for most of the table's short segments, GQA-packed for its
     * decode steps */
    setenv("PUNCTUM_CUDA_ATTN_PACK", "0", 1);
    pt_backend *gb16_w8 = make_gpu(PT_DTYPE_BF16, "PUNCTUM_CUDA_ATTN_WARPS", "8", skip_ok);
    /* one head a block on 4 warps for short launches too (the unpacked decode step) */
    pt_backend *gf16_nopack = make_gpu(PT_DTYPE_F16, NULL, NULL, skip_ok);
    /* bf16 operands one head a block (head_dim 256: the launch rule packs the table's cases) */
    pt_backend *gb16_mbf_nopack = make_gpu(PT_DTYPE_BF16, "PUNCTUM_CUDA_MMA", "bf16", skip_ok);
    unsetenv("PUNCTUM_CUDA_ATTN_PACK");
    /* GQA-packed whatever the launch (long segments too; 4 warps, before ATTN_WARPS=8) */
    pt_backend *gb16_pack = make_gpu(PT_DTYPE_BF16, "PUNCTUM_CUDA_ATTN_PACK", "1", skip_ok);
    setenv("PUNCTUM_CUDA_ATTN_PACK", "1", 1);
    pt_backend *gf16_pack = make_gpu(PT_DTYPE_F16, "PUNCTUM_CUDA_ATTN_WARPS", "8", skip_ok);
    unsetenv("PUNCTUM_CUDA_ATTN_PACK");
    pt_backend *g32_cublas = make_gpu(PT_DTYPE_F32, "PUNCTUM_CUDA_GEMM", "cublas", skip_ok);
    pt_backend *gb16_cublas = make_gpu(PT_DTYPE_BF16, "PUNCTUM_CUDA_GEMM", "cublas", skip_ok);

    pair_t pairs[3] = {{cpu, g32, PT_DTYPE_F32, "f32"}, {cpu, gb16, PT_DTYPE_BF16, "bf16"}, {cpu, gf16, PT_DTYPE_F16, "f16"}};
    pt_backend *alts[3] = {g32_cublas, gb16_cublas, NULL};
    const char *alt_tags[3] = {"f32/cublas", "bf16/cublas", NULL};

    /* elementwise */
    g_rng = seed;
    test_fill_add(&pairs[0]);

    /* host -> device staging, on a backend of its own (its ring not sized by a reserve) */
    if (want("staging_ring")) {
        pt_backend *fresh = make_gpu(PT_DTYPE_F32, NULL, NULL, skip_ok);
        g_rng = seed + 50;
        test_staging_ring(fresh);
        fresh->destroy(fresh);
    }

    /* model ops, per dtype (weights rounded to the dtype for both backends) */
    for (int p = 0; p < 3; p++) {
        synth S;
        g_rng = seed + 100 + (uint64_t)p;
        synth_make(&S, "llama", 0, 64, 4, 2, 16, 96, 320, pairs[p].dt);
        test_model_ops(&pairs[p], &S, alts[p], alt_tags[p]);
        synth_free(&S);
        g_rng = seed + 200 + (uint64_t)p;
        synth_make(&S, "gpt2", 1, 48, 4, 4, 12, 192, 300, pairs[p].dt);
        test_model_ops(&pairs[p], &S, alts[p], alt_tags[p]);
        synth_free(&S);
        if (p == 0 && !quick) {
            g_rng = seed + 300;
            synth_make(&S, "wide", 0, 256, 2, 1, 128, 160, 1000, pairs[p].dt);
            test_model_ops(&pairs[p], &S, NULL, NULL);
            synth_free(&S);
        }
    }

    /* RoPE + the key/value store: each cache type (f32; f16 by default on the 16-bit compute
     * dtypes' tensor-core path, bf16 with PUNCTUM_CUDA_MMA=bf16; f32 again on the plain path) */
    pair_t plain = {cpu, gb16_plain, PT_DTYPE_BF16, "bf16/plain"};
    pair_t mbf = {cpu, gb16_mbf, PT_DTYPE_BF16, "bf16/mmabf"};
    pair_t *rsk_pairs[5] = {&pairs[0], &pairs[1], &pairs[2], &plain, &mbf};
    for (int p = 0; p < 5; p++) {
        g_rng = seed + 600 + (uint64_t)p;
        test_rope_store_kv(rsk_pairs[p]);
    }

    /* the families' operations, per dtype */
    for (int p = 0; p < 3; p++) {
        synth S;
        g_rng = seed + 500 + (uint64_t)p;
        test_family_ops(&pairs[p]);
        synth_make(&S, "gemma-like", 0, 64, 4, 2, 16, 96, 320, pairs[p].dt);
        test_family_model_ops(&pairs[p], &S);
        synth_free(&S);
    }

    /* the stat massive: ragged row counts, d odd and even, across the block's thread counts,
     * and one row of 48 KiB of keys (the kernel opts in to more shared memory) */
    static const int abs_shapes[][3] = {{1, 1, 0},   {2, 2, 1},    {7, 3, 0},    {5, 48, 1},
                                        {9, 63, 2},  {33, 64, 0},  {4, 257, 1},  {3, 576, 2},
                                        {6, 577, 3}, {2, 4099, 1}, {1, 12288, 2}};
    for (size_t i = 0; i < sizeof abs_shapes / sizeof abs_shapes[0]; i++) {
        g_rng = seed + 500 + i;
        if (!quick || abs_shapes[i][1] < 4096)
            test_row_abs_stats(&pairs[0], abs_shapes[i][0], abs_shapes[i][1], abs_shapes[i][2]);
    }

    /* vocabulary */
    g_rng = seed + 400;
    test_vocab(&pairs[0], 320, 4, 10);
    if (!quick) {
        g_rng = seed + 401;
        test_vocab(&pairs[0], 50257, 3, 25);
    }

    /* attention: every case on f32 (plain path), bf16 and f16 (tensor-core path where it
     * applies), and bf16 forced onto the plain path for a few; on the tensor-core forward's
     * forced variants: 8 warps one head a block (bf16/w8; its statistics pass on 8 warps too),
     * 4 warps one head a block (f16/nopack: the decode steps the launch rule packs), GQA-packed
     * (bf16/pack, f16/pack: the latter with PUNCTUM_CUDA_ATTN_WARPS=8 too, which packing
     * overrides for the forward; its statistics pass runs on 8 warps) */
    static attn_case C[40];
    const int nc = build_attn_cases(C, quick);
    pair_t w8 = {cpu, gb16_w8, PT_DTYPE_BF16, "bf16/w8"};
    pair_t nopack = {cpu, gf16_nopack, PT_DTYPE_F16, "f16/nopack"};
    pair_t mbf_nopack = {cpu, gb16_mbf_nopack, PT_DTYPE_BF16, "bf16/mmabf-nopack"};
    pair_t pack = {cpu, gb16_pack, PT_DTYPE_BF16, "bf16/pack"};
    pair_t pack16 = {cpu, gf16_pack, PT_DTYPE_F16, "f16/pack"};
    pair_t *variants[N_ATTN_VARIANTS] = {[AV_F32] = &pairs[0],  [AV_BF16] = &pairs[1],
                                         [AV_F16] = &pairs[2],  [AV_BF16_PLAIN] = &plain,
                                         [AV_MBF] = &mbf,       [AV_MBF_NOPACK] = &mbf_nopack,
                                         [AV_W8] = &w8,         [AV_PACK] = &pack,
                                         [AV_NOPACK] = &nopack, [AV_PACK16] = &pack16};
    int variant_runs[N_ATTN_VARIANTS] = {0};
    for (int i = 0; i < nc; i++) {
        const uint64_t s = seed + 1000 + (uint64_t)i;
        int chosen[N_ATTN_VARIANTS] = {0};
        for (int v = 0; v < N_ATTN_VARIANTS; v++) chosen[v] = attn_variant_applies(v, &C[i], i, nc);
        if (sample) sample_attn_variants(chosen, variant_runs, 2);
        for (int v = 0; v < N_ATTN_VARIANTS; v++) {
            if (!chosen[v]) continue;
            test_attn_case(variants[v], &C[i], s);
            variant_runs[v]++;
        }
    }
    for (int v = 0; v < N_ATTN_VARIANTS; v++)
        if (!variant_runs[v] && !g_filter) {
            printf("attention variant %s ran on no case\n", variants[v]->tag);
            g_failed++;
        }

    printf("test_backend_ops: %d rows, %d failed\n", g_rows, g_failed);
    gb16_cublas->destroy(gb16_cublas);
    g32_cublas->destroy(g32_cublas);
    gb16_plain->destroy(gb16_plain);
    gb16_mbf->destroy(gb16_mbf);
    gb16_w8->destroy(gb16_w8);
    gf16_nopack->destroy(gf16_nopack);
    gb16_mbf_nopack->destroy(gb16_mbf_nopack);
    gb16_pack->destroy(gb16_pack);
    gf16_pack->destroy(gf16_pack);
    gf16->destroy(gf16);
    gb16->destroy(gb16);
    g32->destroy(g32);
    cpu->destroy(cpu);
    return g_failed ? 1 : 0;
}
