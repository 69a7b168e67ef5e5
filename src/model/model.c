/* punctum — model loading: config.json + safetensors -> canonical host float32 weights.
 *
 * Every tensor the architecture needs is looked up by name, its dtype and shape checked
 * against the config, and converted (F16/BF16) or used in place (F32, aligned, already in
 * [out, in] layout). q/k/v and gate/up are fused into single projections so a layer is four
 * GEMMs on every backend. GPT-2's Conv1D weights are stored [in, out] and are transposed. */
#include "punctum/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    pt_model *m;
    const char *prefix; /* gpt2: "" or "transformer." */
    pt_error *e;
} loader;

static void *own(pt_model *m, size_t bytes) {
    void *p = pt_xcalloc(1, bytes);
    m->owned = pt_xrealloc(m->owned, (m->n_owned + 1) * sizeof *m->owned);
    m->owned[m->n_owned++] = p;
    return p;
}

/* Find a tensor and check its shape (dims given by `shape`, n dims). */
static const pt_st_tensor *find_checked(loader *L, const char *name, int ndim, const int64_t *shape) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    const pt_st_tensor *t = pt_st_find(&L->m->files, full);
    if (!t) {
        pt_fail(L->e, "%s: tensor '%s' is missing", L->m->dir, full);
        return NULL;
    }
    if (t->dtype != PT_DT_F32 && t->dtype != PT_DT_F16 && t->dtype != PT_DT_BF16) {
        pt_fail(L->e, "%s: tensor '%s' has dtype %s (supported: F32, F16, BF16)", t->file, full,
                pt_dtype_name(t->dtype));
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char want[96] = "", got[96] = "";
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "",
                     (long long)shape[i]);
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "",
                     (long long)t->shape[i]);
        pt_fail(L->e, "%s: tensor '%s' has shape [%s], config.json implies [%s]", t->file, full,
                got, want);
        return NULL;
    }
    return t;
}

/* Float32 view of a tensor: the mapping itself when possible, else a converted copy. */
static const float *as_f32(loader *L, const pt_st_tensor *t) {
    if (t->dtype == PT_DT_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) return t->data;
    float *dst = own(L->m, t->nelem * sizeof(float));
    if (pt_st_to_f32(t, dst, L->e)) return NULL;
    return dst;
}

static const float *load1(loader *L, const char *name, int64_t n0) {
    const pt_st_tensor *t = find_checked(L, name, 1, (int64_t[]){n0});
    return t ? as_f32(L, t) : NULL;
}

static const float *load2(loader *L, const char *name, int64_t n0, int64_t n1) {
    const pt_st_tensor *t = find_checked(L, name, 2, (int64_t[]){n0, n1});
    return t ? as_f32(L, t) : NULL;
}

/* Copy `rows` x `cols` from src (row-major) into dst, transposing when src is [cols, rows]. */
static void put_rows(float *dst, const float *src, int rows, int cols, int transposed) {
    if (!transposed) {
        memcpy(dst, src, (size_t)rows * cols * sizeof(float));
        return;
    }
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) dst[(size_t)r * cols + c] = src[(size_t)c * rows + r];
}

static int load_gpt2(loader *L) {
    pt_model *m = L->m;
    const pt_config *c = &m->cfg;
    const int d = c->d_model, ff = c->d_ff;
    pt_weights *w = &m->host;
    /* The original GPT-2 checkpoints have no "transformer." prefix; HF-saved ones do. */
    L->prefix = pt_st_find(&m->files, "transformer.wte.weight") ? "transformer." : "";
    if (!(w->tok_emb = load2(L, "wte.weight", c->vocab_size, d))) return -1;
    if (!(w->pos_emb = load2(L, "wpe.weight", c->max_positions, d))) return -1;
    char name[128];
    for (int l = 0; l < c->n_layers; l++) {
        pt_layer_weights *lw = &w->layers[l];
        const float *t;
#define LOAD1(field, fmt, n)                                                                     \
    snprintf(name, sizeof name, fmt, l);                                                       \
    if (!(lw->field = load1(L, name, n))) return -1;
        LOAD1(norm1_w, "h.%d.ln_1.weight", d);
        LOAD1(norm1_b, "h.%d.ln_1.bias", d);
        LOAD1(norm2_w, "h.%d.ln_2.weight", d);
        LOAD1(norm2_b, "h.%d.ln_2.bias", d);
        LOAD1(qkv.b, "h.%d.attn.c_attn.bias", 3 * d);
        LOAD1(o.b, "h.%d.attn.c_proj.bias", d);
        LOAD1(up.b, "h.%d.mlp.c_fc.bias", ff);
        LOAD1(down.b, "h.%d.mlp.c_proj.bias", d);
#undef LOAD1
        /* Conv1D: stored [in, out]; transpose to [out, in]. */
        struct { pt_linear *lin; const char *fmt; int in, out; } conv[] = {
            {&lw->qkv, "h.%d.attn.c_attn.weight", d, 3 * d},
            {&lw->o, "h.%d.attn.c_proj.weight", d, d},
            {&lw->up, "h.%d.mlp.c_fc.weight", d, ff},
            {&lw->down, "h.%d.mlp.c_proj.weight", ff, d},
        };
        for (size_t k = 0; k < sizeof conv / sizeof conv[0]; k++) {
            snprintf(name, sizeof name, conv[k].fmt, l);
            if (!(t = load2(L, name, conv[k].in, conv[k].out))) return -1;
            float *dst = own(m, (size_t)conv[k].in * conv[k].out * sizeof(float));
            put_rows(dst, t, conv[k].out, conv[k].in, 1);
            conv[k].lin->w = dst;
            conv[k].lin->out = conv[k].out;
            conv[k].lin->in = conv[k].in;
        }
    }
    if (!(w->final_norm_w = load1(L, "ln_f.weight", d))) return -1;
    if (!(w->final_norm_b = load1(L, "ln_f.bias", d))) return -1;
    return 0;
}

static int load_llama_like(loader *L) {
    pt_model *m = L->m;
    const pt_config *c = &m->cfg;
    const int d = c->d_model, ff = c->d_ff, hd = c->head_dim;
    const int qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    pt_weights *w = &m->host;
    L->prefix = "";
    if (!(w->tok_emb = load2(L, "model.embed_tokens.weight", c->vocab_size, d))) return -1;
    char name[160];
    for (int l = 0; l < c->n_layers; l++) {
        pt_layer_weights *lw = &w->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        if (!(lw->norm1_w = load1(L, name, d))) return -1;
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        if (!(lw->norm2_w = load1(L, name, d))) return -1;

        /* Fuse q, k, v (and their biases) into one [q|k|v] projection. */
        const char *qkv_names[3] = {"q_proj", "k_proj", "v_proj"};
        const int qkv_rows[3] = {qd, kvd, kvd};
        float *qkv_w = own(m, (size_t)(qd + 2 * kvd) * d * sizeof(float));
        float *qkv_b = c->qkv_bias ? own(m, (size_t)(qd + 2 * kvd) * sizeof(float)) : NULL;
        size_t row = 0;
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.weight", l, qkv_names[k]);
            const float *t = load2(L, name, qkv_rows[k], d);
            if (!t) return -1;
            memcpy(qkv_w + row * d, t, (size_t)qkv_rows[k] * d * sizeof(float));
            if (qkv_b) {
                snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.bias", l, qkv_names[k]);
                const float *b = load1(L, name, qkv_rows[k]);
                if (!b) return -1;
                memcpy(qkv_b + row, b, (size_t)qkv_rows[k] * sizeof(float));
            }
            row += (size_t)qkv_rows[k];
        }
        lw->qkv = (pt_linear){qkv_w, qkv_b, qd + 2 * kvd, d};

        snprintf(name, sizeof name, "model.layers.%d.self_attn.o_proj.weight", l);
        if (!(lw->o.w = load2(L, name, d, qd))) return -1;
        lw->o.out = d;
        lw->o.in = qd;
        if (c->o_bias) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.o_proj.bias", l);
            if (!(lw->o.b = load1(L, name, d))) return -1;
        }

        /* Fuse gate and up into one [gate|up] projection. */
        float *gu_w = own(m, (size_t)2 * ff * d * sizeof(float));
        float *gu_b = c->mlp_bias ? own(m, (size_t)2 * ff * sizeof(float)) : NULL;
        const char *gu_names[2] = {"gate_proj", "up_proj"};
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "model.layers.%d.mlp.%s.weight", l, gu_names[k]);
            const float *t = load2(L, name, ff, d);
            if (!t) return -1;
            memcpy(gu_w + (size_t)k * ff * d, t, (size_t)ff * d * sizeof(float));
            if (gu_b) {
                snprintf(name, sizeof name, "model.layers.%d.mlp.%s.bias", l, gu_names[k]);
                const float *b = load1(L, name, ff);
                if (!b) return -1;
                memcpy(gu_b + (size_t)k * ff, b, (size_t)ff * sizeof(float));
            }
        }
        lw->up = (pt_linear){gu_w, gu_b, 2 * ff, d};

        snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj.weight", l);
        if (!(lw->down.w = load2(L, name, d, ff))) return -1;
        lw->down.out = d;
        lw->down.in = ff;
        if (c->mlp_bias) {
            snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj.bias", l);
            if (!(lw->down.b = load1(L, name, d))) return -1;
        }
    }
    if (!(w->final_norm_w = load1(L, "model.norm.weight", d))) return -1;
    return 0;
}

void pt_rope_inv_freq(const pt_config *c, float *out) {
    /* Float32 arithmetic in the order transformers uses, so positions rotate identically. */
    const int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)c->head_dim;
        float base_pow = powf((float)c->rope_theta, expo);
        float f = 1.0f / base_pow;
        if (c->rope == PT_ROPE_LINEAR) {
            f = f / (float)c->rope_factor;
        } else if (c->rope == PT_ROPE_LLAMA3) {
            const float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq_factor,
                        hi = (float)c->rope_high_freq_factor,
                        old_ctx = (float)c->rope_original_max_positions;
            const float low_freq_wavelen = old_ctx / lo, high_freq_wavelen = old_ctx / hi;
            const float wavelen = 2.0f * (float)M_PI / f;
            float scaled = wavelen > low_freq_wavelen ? f / factor : f;
            const float smooth = (old_ctx / wavelen - lo) / (hi - lo);
            const float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
            const int medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
            f = medium ? smoothed : scaled;
        }
        out[i] = f;
    }
}

int pt_model_load(const char *dir, pt_model *m, pt_error *e) {
    memset(m, 0, sizeof *m);
    m->dir = pt_xstrdup(dir);
    char *cfg_path = pt_path_join(dir, "config.json");
    int rc = pt_config_load(cfg_path, &m->cfg, e);
    free(cfg_path);
    if (rc) goto fail;
    if (pt_st_set_open(dir, &m->files, e)) goto fail;

    const pt_config *c = &m->cfg;
    m->host.layers = pt_xcalloc((size_t)c->n_layers, sizeof(pt_layer_weights));
    loader L = {m, "", e};
    rc = c->arch == PT_ARCH_GPT2 ? load_gpt2(&L) : load_llama_like(&L);
    if (rc) goto fail;

    pt_weights *w = &m->host;
    if (c->tied_embeddings) {
        w->lm_head = (pt_linear){w->tok_emb, NULL, c->vocab_size, c->d_model};
    } else {
        L.prefix = "";
        const float *t = load2(&L, "lm_head.weight", c->vocab_size, c->d_model);
        if (!t) goto fail;
        w->lm_head = (pt_linear){t, NULL, c->vocab_size, c->d_model};
    }
    if (c->rope != PT_ROPE_NONE) {
        float *inv = own(m, (size_t)(c->head_dim / 2) * sizeof(float));
        pt_rope_inv_freq(c, inv);
        w->rope_inv_freq = inv;
    }
    return 0;
fail:
    pt_model_free(m);
    return -1;
}

void pt_model_free(pt_model *m) {
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->host.layers);
    pt_st_set_close(&m->files);
    free(m->dir);
    memset(m, 0, sizeof *m);
}
