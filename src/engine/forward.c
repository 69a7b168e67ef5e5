/* punctum — the forward pass over a packed batch (see forward.h). Architecture differences
 * are flags in pt_config handled inside the backend ops; this file is the same for all. */
#include "punctum/forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Time one backend call when profiling (synchronising so device time is attributed). */
#define PROF(en, kind, call)                                                                       \
    do {                                                                                           \
        if (!(en)->profile) {                                                                      \
            call;                                                                                  \
        } else {                                                                                   \
            (en)->be->sync((en)->be);                                                              \
            const double t0_ = pt_now();                                                           \
            call;                                                                                  \
            (en)->be->sync((en)->be);                                                              \
            (en)->prof_s[kind] += pt_now() - t0_;                                                  \
        }                                                                                          \
    } while (0)

static const char *prof_names[PT_PROF_N] = {"embed", "norm", "gemm", "rope", "attention",
                                             "mlp_act", "residual", "capture", "lm_head"};

static void linear(pt_engine *en, const float *x, int n, const pt_linear *lin, float *y) {
    PROF(en, PT_PROF_GEMM, en->be->linear(en->be, x, n, lin, y));
    en->gemm_flops += 2.0 * n * lin->out * lin->in;
}

static void release(pt_engine *en) {
    pt_backend *be = en->be;
    float **bufs[] = {&en->x, &en->h, &en->qkv, &en->attn, &en->ff_in, &en->ff_act, &en->tmp,
                      &en->final_x, &en->final_h};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (*bufs[i]) be->free(be, *bufs[i]);
        *bufs[i] = NULL;
    }
    if (en->k_cache) {
        const int nbuf = en->kv_all_layers ? en->cfg->n_layers : 1;
        for (int l = 0; l < nbuf; l++) {
            be->free(be, en->k_cache[l]);
            be->free(be, en->v_cache[l]);
        }
        free(en->k_cache);
        free(en->v_cache);
        en->k_cache = en->v_cache = NULL;
    }
    en->cap_rows = en->cap_kv = en->cap_final = 0;
}

int pt_engine_init(pt_engine *en, pt_backend *be, const pt_config *cfg, const pt_weights *dev_w,
                   pt_error *e) {
    (void)e;
    memset(en, 0, sizeof *en);
    en->be = be;
    en->cfg = cfg;
    en->w = *dev_w;
    const char *p = getenv("PUNCTUM_PROFILE");
    en->profile = p && *p && strcmp(p, "0");
    return 0;
}

void pt_engine_free(pt_engine *en) {
    if (en->profile) {
        double total = 0;
        for (int k = 0; k < PT_PROF_N; k++) total += en->prof_s[k];
        fprintf(stderr, "[punctum profile] forward %.3f s:", total);
        for (int k = 0; k < PT_PROF_N; k++)
            if (en->prof_s[k] > 0) fprintf(stderr, " %s %.3f", prof_names[k], en->prof_s[k]);
        if (en->prof_s[PT_PROF_GEMM] > 0)
            fprintf(stderr, "; projections %.1f GFLOP/s", 1e-9 * en->gemm_flops / en->prof_s[PT_PROF_GEMM]);
        fprintf(stderr, "\n");
    }
    if (en->be) release(en);
    memset(en, 0, sizeof *en);
}

static float *dev_alloc(pt_backend *be, size_t rows, size_t cols, int *failed) {
    size_t bytes;
    if (pt_mul_size(rows, cols, &bytes) || pt_mul_size(bytes, sizeof(float), &bytes)) {
        *failed = 1;
        return NULL;
    }
    float *p = be->alloc(be, bytes);
    if (!p) *failed = 1;
    return p;
}

int pt_engine_reserve(pt_engine *en, int n_rows, int n_kv, int kv_all_layers, int n_final,
                      pt_error *e) {
    if (n_rows <= en->cap_rows && n_kv <= en->cap_kv && n_final <= en->cap_final &&
        (!kv_all_layers || en->kv_all_layers))
        return 0;
    const pt_config *c = en->cfg;
    /* grow geometrically so a sweep of slowly growing batches reallocates rarely */
    int rows = n_rows > en->cap_rows ? n_rows + n_rows / 4 : en->cap_rows;
    int kv = n_kv > en->cap_kv ? n_kv + n_kv / 4 : en->cap_kv;
    int fin = n_final > en->cap_final ? n_final + n_final / 4 + 8 : en->cap_final;
    int all = kv_all_layers || en->kv_all_layers;
    release(en);
    pt_backend *be = en->be;
    const size_t d = (size_t)c->d_model, hd = (size_t)c->head_dim;
    const size_t qkv_w = (size_t)(c->n_heads + 2 * c->n_kv_heads) * hd;
    const size_t ff_in_w = (size_t)c->d_ff * (c->mlp == PT_MLP_SWIGLU ? 2 : 1);
    const size_t kvd = (size_t)c->n_kv_heads * hd;
    int failed = 0;
    en->x = dev_alloc(be, rows, d, &failed);
    en->h = dev_alloc(be, rows, d, &failed);
    en->tmp = dev_alloc(be, rows, d, &failed);
    en->qkv = dev_alloc(be, rows, qkv_w, &failed);
    en->attn = dev_alloc(be, rows, (size_t)c->n_heads * hd, &failed);
    en->ff_in = dev_alloc(be, rows, ff_in_w, &failed);
    en->ff_act = dev_alloc(be, rows, (size_t)c->d_ff, &failed);
    en->final_x = dev_alloc(be, fin, d, &failed);
    en->final_h = dev_alloc(be, fin, d, &failed);
    const int nbuf = all ? c->n_layers : 1;
    en->k_cache = pt_xcalloc((size_t)c->n_layers, sizeof(float *));
    en->v_cache = pt_xcalloc((size_t)c->n_layers, sizeof(float *));
    en->kv_all_layers = all;
    for (int l = 0; l < nbuf; l++) {
        en->k_cache[l] = dev_alloc(be, kv, kvd, &failed);
        en->v_cache[l] = dev_alloc(be, kv, kvd, &failed);
    }
    for (int l = nbuf; l < c->n_layers; l++) {
        en->k_cache[l] = en->k_cache[0];
        en->v_cache[l] = en->v_cache[0];
    }
    en->cap_rows = rows;
    en->cap_kv = kv;
    en->cap_final = fin;
    if (failed) {
        release(en);
        return pt_fail(e, "%s backend: out of memory reserving %d rows x %d cache rows", be->name,
                       rows, kv);
    }
    return 0;
}

void pt_decode(pt_engine *en, const float *x, int m, float *logits) {
    pt_backend *be = en->be;
    const pt_config *c = en->cfg;
    for (int r0 = 0; r0 < m; r0 += en->cap_final) {
        const int k = m - r0 < en->cap_final ? m - r0 : en->cap_final;
        PROF(en, PT_PROF_HEAD, be->norm(be, c, x + (size_t)r0 * c->d_model, k, en->w.final_norm_w,
                                        en->w.final_norm_b, en->final_h));
        PROF(en, PT_PROF_HEAD,
             be->linear(be, en->final_h, k, &en->w.lm_head, logits + (size_t)r0 * c->vocab_size));
    }
}

/* Capture the residual entering layer l (l = L: the final residual before the final norm). */
static void capture(pt_engine *en, pt_fwd *f, int l) {
    pt_backend *be = en->be;
    const pt_config *c = en->cfg;
    const int d = c->d_model, L = c->n_layers;
    if (f->resid_norm)
        PROF(en, PT_PROF_CAPTURE,
             be->row_norms(be, en->x, f->n_rows, d, f->resid_norm + l, (size_t)L + 1));
    if (f->resid_all)
        PROF(en, PT_PROF_CAPTURE, be->copy(be, f->resid_all + (size_t)l * f->n_rows * d, en->x,
                                           (size_t)f->n_rows * d * sizeof(float)));
    if (f->tap_resid && f->n_tap > 0)
        PROF(en, PT_PROF_CAPTURE, be->gather_rows(be, en->x, f->tap_rows, f->n_tap, d,
                                                  f->tap_resid + (size_t)l * f->n_tap * d));
}

void pt_forward(pt_engine *en, pt_fwd *f) {
    pt_backend *be = en->be;
    const pt_config *c = en->cfg;
    const pt_weights *w = &en->w;
    const int n = f->n_rows, d = c->d_model, L = c->n_layers;
    const int q_stride = (c->n_heads + 2 * c->n_kv_heads) * c->head_dim;

    if (f->x_in)
        PROF(en, PT_PROF_EMBED, be->copy(be, en->x, f->x_in, (size_t)n * d * sizeof(float)));
    else
        PROF(en, PT_PROF_EMBED, be->embed(be, c, w, f->ids, f->pos, n, en->x));

    for (int l = f->start_layer; l < L; l++) {
        const pt_layer_weights *lw = &w->layers[l];
        capture(en, f, l);

        /* attention block */
        PROF(en, PT_PROF_NORM, be->norm(be, c, en->x, n, lw->norm1_w, lw->norm1_b, en->h));
        linear(en, en->h, n, &lw->qkv, en->qkv);
        if (c->rope != PT_ROPE_NONE)
            PROF(en, PT_PROF_ROPE, be->rope(be, c, w->rope_inv_freq, en->qkv, n, f->pos));
        PROF(en, PT_PROF_ATTN,
             be->store_kv(be, c, en->qkv, n, en->k_cache[l], en->v_cache[l], f->kv_rows));
        pt_attn_args a = {
            .layer = l, .q = en->qkv, .q_stride = q_stride,
            .k_cache = en->k_cache[l], .v_cache = en->v_cache[l], .out = en->attn,
            .segs = f->segs, .n_segs = f->n_segs,
            .mass = f->mass, .last = f->last, .pattern = f->pattern,
            .n_layers = L, .n_heads = c->n_heads, .n_kv_heads = c->n_kv_heads,
            .head_dim = c->head_dim, .window = c->sliding_window,
        };
        PROF(en, PT_PROF_ATTN, be->attention(be, &a));
        linear(en, en->attn, n, &lw->o, en->tmp);
        PROF(en, PT_PROF_RESID, be->add(be, en->x, en->tmp, (size_t)n * d));

        /* MLP block */
        PROF(en, PT_PROF_NORM, be->norm(be, c, en->x, n, lw->norm2_w, lw->norm2_b, en->h));
        linear(en, en->h, n, &lw->up, en->ff_in);
        PROF(en, PT_PROF_MLP_ACT, be->mlp_act(be, c, en->ff_in, n, en->ff_act));
        linear(en, en->ff_act, n, &lw->down, en->tmp);
        PROF(en, PT_PROF_RESID, be->add(be, en->x, en->tmp, (size_t)n * d));
    }
    capture(en, f, L);

    if (f->n_final > 0) {
        be->gather_rows(be, en->x, f->final_rows, f->n_final, d, en->final_x);
        pt_decode(en, en->final_x, f->n_final, f->logits);
    }
}
