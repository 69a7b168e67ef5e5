/* punctum — the forward pass over a packed batch (see forward.h). Architecture differences
 * are flags in pt_config and the presence of weights (a norm without weights is not run), handled
 * inside the backend ops; this file is the same for every family. */
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

static const char *prof_names[PT_PROF_N] = {
    "embed", "norm", "gemm", "rope_kv", "attention", "mlp_act", "residual", "capture", "lm_head"};

static void linear(pt_engine *en, const void *x, int n, const pt_linear *lin, void *y) {
    PROF(en, PT_PROF_GEMM, en->be->linear(en->be, x, n, lin, (float *)y));
    en->gemm_flops += 2.0 * n * lin->out * lin->in;
}

/* resid += x W^T + b: a projection added straight into the residual stream (the GEMM's own
 * accumulate, no pass of its own). */
static void linear_add(pt_engine *en, const void *x, int n, const pt_linear *lin, void *resid) {
    PROF(en, PT_PROF_GEMM, en->be->linear_add(en->be, x, n, lin, resid));
    en->gemm_flops += 2.0 * n * lin->out * lin->in;
}

/* Byte offset of row r of a buffer with rows of `width` elements of `esize` bytes. */
static size_t row_off(size_t r, size_t width, size_t esize) {
    return r * width * esize;
}

/* The engine's own buffers (not the backend's scratch). */
static void free_buffers(pt_engine *en) {
    pt_backend *be = en->be;
    void **bufs[] = {&en->x,      &en->h,   &en->qkv,     &en->attn,   &en->ff_in,
                     &en->ff_act, &en->tmp, &en->final_x, &en->final_h};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (*bufs[i]) be->free(be, *bufs[i]);
        *bufs[i] = NULL;
    }
    if (en->k_cache) {
        const int nbuf = en->cap.kv_all_layers ? en->cfg->n_layers : 1;
        for (int l = 0; l < nbuf; l++) {
            if (en->k_cache[l]) be->free(be, en->k_cache[l]);
            if (en->v_cache[l]) be->free(be, en->v_cache[l]);
        }
        memset(en->k_cache, 0, (size_t)en->cfg->n_layers * sizeof *en->k_cache);
        memset(en->v_cache, 0, (size_t)en->cfg->n_layers * sizeof *en->v_cache);
    }
    free(en->rope_long_rows);
    en->rope_long_rows = NULL;
    memset(&en->cap, 0, sizeof en->cap);
}

void pt_engine_release(pt_engine *en) {
    free_buffers(en);
    en->be->release_scratch(en->be);
}

int pt_engine_init(pt_engine *en, pt_backend *be, const pt_config *cfg, const pt_weights *dev_w,
                   pt_error *e) {
    memset(en, 0, sizeof *en);
    en->be = be;
    en->cfg = cfg;
    en->w = *dev_w;
    const char *p = getenv("PUNCTUM_PROFILE");
    en->profile = p && *p && strcmp(p, "0");
    en->k_cache = pt_try_calloc((size_t)cfg->n_layers, sizeof(void *), "the engine", e);
    en->v_cache = pt_try_calloc((size_t)cfg->n_layers, sizeof(void *), "the engine", e);
    if (!en->k_cache || !en->v_cache) {
        pt_engine_free(en);
        return -1;
    }
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
            fprintf(stderr, "; projections %.1f GFLOP/s",
                    1e-9 * en->gemm_flops / en->prof_s[PT_PROF_GEMM]);
        fprintf(stderr, "\n");
    }
    if (en->be) pt_engine_release(en);
    free(en->k_cache);
    free(en->v_cache);
    memset(en, 0, sizeof *en);
}

/* rows x cols elements of esize bytes; NULL (and the backend's status set) on failure. */
static void *dev_alloc(pt_backend *be, size_t rows, size_t cols, size_t esize) {
    size_t bytes;
    if (pt_mul_size(rows, cols, &bytes) || pt_mul_size(bytes, esize, &bytes)) {
        pt_backend_fail(be, 1, SIZE_MAX, "%s backend: buffer size overflow (%zu x %zu)", be->name,
                        rows, cols);
        return NULL;
    }
    return be->alloc(be, bytes);
}

/* Widths of the activation buffers. */
typedef struct {
    size_t d, qkv, attn, ff_in, ff, kvd;
} widths;

static widths widths_of(const pt_config *c) {
    const size_t hd = (size_t)c->head_dim;
    return (widths){(size_t)c->d_model,      (size_t)(c->n_heads + 2 * c->n_kv_heads) * hd,
                    (size_t)c->n_heads * hd, (size_t)c->d_ff * (c->mlp == PT_MLP_GELU_TANH ? 1 : 2),
                    (size_t)c->d_ff,         (size_t)c->n_kv_heads * hd};
}

size_t pt_engine_row_bytes(const pt_backend *be, const pt_config *cfg, int kv_all_layers) {
    const widths w = widths_of(cfg);
    const size_t act = w.d + w.attn + w.ff,
                 f32 = w.qkv + w.ff_in + w.d; /* h ...; qkv, ff_in, tmp */
    const size_t kv = 2 * w.kvd * (kv_all_layers ? (size_t)cfg->n_layers : 1);
    return w.d * be->resid_bytes + act * be->act_bytes + f32 * sizeof(float) + kv * be->kv_bytes;
}

size_t pt_engine_final_row_bytes(const pt_backend *be, const pt_config *cfg) {
    return (size_t)cfg->d_model * (be->resid_bytes + be->act_bytes);
}

static int fits(const pt_engine_size *have, const pt_engine_size *want) {
    return want->rows <= have->rows && want->kv_rows <= have->kv_rows &&
           want->final_rows <= have->final_rows && (!want->kv_all_layers || have->kv_all_layers);
}

/* Grow one dimension geometrically, so a sweep of slowly growing batches reallocates rarely. */
static int grow(int want, int have, int extra) {
    return want > have ? want + want / 4 + extra : have;
}

int pt_engine_reserve(pt_engine *en, const pt_engine_size *sz) {
    pt_backend *be = en->be;
    const pt_config *c = en->cfg;
    if (be->status.failed) return -1;
    const pt_reserve r = {sz->rows,
                          sz->kv_rows,
                          sz->max_keys,
                          sz->final_rows,
                          sz->topk,
                          en->w.rope_inv_freq,
                          en->w.rope_long_inv_freq,
                          en->w.rope_local_inv_freq};
    if (be->reserve(be, c, &r)) return -1;
    if (en->x && fits(&en->cap, sz)) return 0;
    pt_engine_size cap = {grow(sz->rows, en->cap.rows, 0),
                          grow(sz->kv_rows, en->cap.kv_rows, 0),
                          sz->kv_all_layers || en->cap.kv_all_layers,
                          grow(sz->final_rows, en->cap.final_rows, 8),
                          0,
                          0};
    free_buffers(en);
    const widths w = widths_of(c);
    const size_t rows = (size_t)cap.rows, ra = be->resid_bytes, ea = be->act_bytes;
    en->cap = cap; /* before the allocations: release() frees by it */
    if (!(en->x = dev_alloc(be, rows, w.d, ra)) || !(en->h = dev_alloc(be, rows, w.d, ea)) ||
        !(en->tmp = dev_alloc(be, rows, w.d, sizeof(float))) ||
        !(en->qkv = dev_alloc(be, rows, w.qkv, sizeof(float))) ||
        !(en->attn = dev_alloc(be, rows, w.attn, ea)) ||
        !(en->ff_in = dev_alloc(be, rows, w.ff_in, sizeof(float))) ||
        !(en->ff_act = dev_alloc(be, rows, w.ff, ea)) ||
        !(en->final_x = dev_alloc(be, (size_t)cap.final_rows, w.d, ra)) ||
        !(en->final_h = dev_alloc(be, (size_t)cap.final_rows, w.d, ea)))
        goto oom;
    if (en->w.rope_long_inv_freq && !(en->rope_long_rows = malloc(rows ? rows : 1))) {
        pt_backend_fail(be, 1, rows, "out of host memory (%zu bytes of RoPE row flags)", rows);
        goto oom;
    }
    const int nbuf = cap.kv_all_layers ? c->n_layers : 1;
    for (int l = 0; l < nbuf; l++)
        if (!(en->k_cache[l] = dev_alloc(be, (size_t)cap.kv_rows, w.kvd, be->kv_bytes)) ||
            !(en->v_cache[l] = dev_alloc(be, (size_t)cap.kv_rows, w.kvd, be->kv_bytes)))
            goto oom;
    for (int l = nbuf; l < c->n_layers; l++) {
        en->k_cache[l] = en->k_cache[0];
        en->v_cache[l] = en->v_cache[0];
    }
    return 0;
oom:
    free_buffers(en);
    return -1;
}

int pt_decode(pt_engine *en, const void *x, int m, float *logits) {
    pt_backend *be = en->be;
    const pt_config *c = en->cfg;
    const int fr = en->cap.final_rows;
    for (int r0 = 0; r0 < m && fr > 0; r0 += fr) {
        const int k = m - r0 < fr ? m - r0 : fr;
        const void *xr = (const char *)x + row_off((size_t)r0, (size_t)c->d_model, be->resid_bytes);
        PROF(en, PT_PROF_HEAD,
             be->norm(be, c, xr, k, en->w.final_norm_w, en->w.final_norm_b, en->final_h));
        float *lr = logits + (size_t)r0 * c->vocab_size;
        PROF(en, PT_PROF_HEAD, be->linear(be, en->final_h, k, &en->w.lm_head, lr));
        if (c->final_softcap > 0) /* before every vocabulary statistic (Gemma 2) */
            PROF(en, PT_PROF_HEAD,
                 be->softcap(be, lr, (size_t)k * c->vocab_size, (float)c->final_softcap));
    }
    return be->status.failed ? -1 : 0;
}

/* Capture the residual entering layer l (l = L: the final residual before the final norm). */
static void capture(pt_engine *en, pt_fwd *f, int l) {
    pt_backend *be = en->be;
    const pt_config *c = en->cfg;
    const int d = c->d_model, L = c->n_layers;
    const size_t rb = be->resid_bytes;
    if (f->resid_norm)
        PROF(en, PT_PROF_CAPTURE,
             be->row_norms(be, en->x, f->n_rows, d, f->resid_norm + l, (size_t)L + 1));
    if (f->resid_max)
        PROF(en, PT_PROF_CAPTURE,
             be->row_abs_stats(be, en->x, f->n_rows, d, f->resid_max + l, f->resid_argmax + l,
                               f->resid_median + l, (size_t)L + 1));
    if (f->resid_all)
        PROF(en, PT_PROF_CAPTURE,
             be->copy(be, (char *)f->resid_all + row_off((size_t)l * f->n_rows, (size_t)d, rb),
                      en->x, row_off((size_t)f->n_rows, (size_t)d, rb)));
    if (f->tap_resid && f->n_tap > 0)
        PROF(en, PT_PROF_CAPTURE,
             be->gather_rows(be, en->x, f->tap_rows, f->n_tap, d,
                             (char *)f->tap_resid + row_off((size_t)l * f->n_tap, (size_t)d, rb)));
}

/* The q and k norms of the fused qkv rows: per head (Qwen3, Gemma 3) or over each whole
 * projection (OLMo 2). */
static void qk_norms(pt_engine *en, const pt_layer_weights *lw, int n) {
    pt_backend *be = en->be;
    const pt_config *c = en->cfg;
    const int hd = c->head_dim, H = c->n_heads, KV = c->n_kv_heads, stride = (H + 2 * KV) * hd;
    const int head = c->qk_norm == PT_QKNORM_HEAD;
    be->rms_norm(be, c, en->qkv, n, stride, 0, head ? H : 1, head ? hd : H * hd, lw->q_norm_w);
    be->rms_norm(be, c, en->qkv, n, stride, H * hd, head ? KV : 1, head ? hd : KV * hd,
                 lw->k_norm_w);
}

/* longrope: which rows rotate with the long factors. A row belongs to a segment whose queries
 * end at position pos0 + n_q - 1, the longest position of its sequence in this forward (a
 * clean sequence, a variant, an extension, a decode step); as transformers chooses by
 * max(position_ids) + 1 of the forward. NULL: no longrope. */
static const uint8_t *rope_long_rows(pt_engine *en, const pt_fwd *f) {
    if (!en->w.rope_long_inv_freq || !en->rope_long_rows) return NULL;
    memset(en->rope_long_rows, 0, (size_t)f->n_rows);
    for (int i = 0; i < f->n_segs; i++) {
        const pt_segment *s = &f->segs[i];
        if (pt_rope_long(en->cfg, s->pos0 + s->n_q) && s->row >= 0 && s->row + s->n_q <= f->n_rows)
            memset(en->rope_long_rows + s->row, 1, (size_t)s->n_q);
    }
    return en->rope_long_rows;
}

int pt_forward(pt_engine *en, pt_fwd *f) {
    pt_backend *be = en->be;
    const pt_config *c = en->cfg;
    const pt_weights *w = &en->w;
    const int n = f->n_rows, d = c->d_model, L = c->n_layers;
    const int q_stride = (c->n_heads + 2 * c->n_kv_heads) * c->head_dim;
    if (n > en->cap.rows || f->n_final > en->cap.final_rows) {
        pt_backend_fail(be, 0, 0,
                        "forward of %d rows (%d final) beyond the %d (%d) reserved "
                        "(internal error)",
                        n, f->n_final, en->cap.rows, en->cap.final_rows);
        return -1;
    }

    if (f->x_in)
        PROF(en, PT_PROF_EMBED,
             be->copy(be, en->x, f->x_in, row_off((size_t)n, (size_t)d, be->resid_bytes)));
    else
        PROF(en, PT_PROF_EMBED, be->embed(be, c, w, f->ids, f->pos, n, en->x));

    const uint8_t *long_rows = rope_long_rows(en, f);
    for (int l = f->start_layer; l < L; l++) {
        const pt_layer_weights *lw = &w->layers[l];
        const int local = c->layer_flags[l] & PT_LAYER_LOCAL_ROPE;
        capture(en, f, l);

        /* attention: [norm] -> q|k|v -> [q/k norms] -> [RoPE] + K/V -> attention -> o -> [norm] */
        PROF(en, PT_PROF_NORM, be->norm(be, c, en->x, n, lw->norm1_w, lw->norm1_b, en->h));
        linear(en, en->h, n, &lw->qkv, en->qkv);
        if (lw->q_norm_w) PROF(en, PT_PROF_NORM, qk_norms(en, lw, n));
        const pt_rope_args rope = {local ? w->rope_local_inv_freq : w->rope_inv_freq, f->pos,
                                   local ? NULL : w->rope_long_inv_freq, local ? NULL : long_rows};
        const int rotate = c->rope != PT_ROPE_NONE && !(c->layer_flags[l] & PT_LAYER_NO_ROPE);
        PROF(en, PT_PROF_ROPE,
             be->rope_store_kv(be, c, en->qkv, n, rotate ? &rope : NULL, en->k_cache[l],
                               en->v_cache[l], f->kv_rows));
        pt_attn_args a = {
            .layer = l,
            .q = en->qkv,
            .q_stride = q_stride,
            .k_cache = en->k_cache[l],
            .v_cache = en->v_cache[l],
            .out = en->attn,
            .segs = f->segs,
            .n_segs = f->n_segs,
            .mass = f->mass,
            .last = f->last,
            .pattern = f->pattern,
            .n_layers = L,
            .n_heads = c->n_heads,
            .n_kv_heads = c->n_kv_heads,
            .head_dim = c->head_dim,
            .window = pt_layer_window(c, l),
            .scale = pt_attn_scale(c),
            .softcap = (float)c->attn_softcap,
        };
        PROF(en, PT_PROF_ATTN, be->attention(be, &a));
        if (lw->post1_w) { /* a norm after the sublayer (Gemma, OLMo 2): project, norm, add */
            linear(en, en->attn, n, &lw->o, en->tmp);
            PROF(en, PT_PROF_NORM, be->rms_norm(be, c, en->tmp, n, d, 0, 1, d, lw->post1_w));
            PROF(en, PT_PROF_RESID, be->add(be, en->x, en->tmp, (size_t)n * d));
        } else
            linear_add(en, en->attn, n, &lw->o, en->x);

        /* MLP block: [norm] -> gate|up -> activation -> down -> [norm] */
        PROF(en, PT_PROF_NORM, be->norm(be, c, en->x, n, lw->norm2_w, lw->norm2_b, en->h));
        linear(en, en->h, n, &lw->up, en->ff_in);
        PROF(en, PT_PROF_MLP_ACT, be->mlp_act(be, c, en->ff_in, n, en->ff_act));
        if (lw->post2_w) {
            linear(en, en->ff_act, n, &lw->down, en->tmp);
            PROF(en, PT_PROF_NORM, be->rms_norm(be, c, en->tmp, n, d, 0, 1, d, lw->post2_w));
            PROF(en, PT_PROF_RESID, be->add(be, en->x, en->tmp, (size_t)n * d));
        } else
            linear_add(en, en->ff_act, n, &lw->down, en->x);
        if (be->status.failed) return -1; /* stop at the layer that failed */
    }
    capture(en, f, L);

    if (f->n_final > 0) {
        be->gather_rows(be, en->x, f->final_rows, f->n_final, d, en->final_x);
        return pt_decode(en, en->final_x, f->n_final, f->logits);
    }
    return be->status.failed ? -1 : 0;
}
