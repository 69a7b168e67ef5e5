/* punctum — model loading: config.json + safetensors -> weight views (model.h).
 *
 * Every tensor the architecture needs is looked up by name and its dtype and shape checked
 * against the config. Matrices become views on the mapping in their checkpoint dtype and layout
 * (q/k/v and gate/up as parts of one projection, GPT-2's Conv1D [in, out] as a transposed
 * part); vectors become float32 (the mapping itself when aligned F32, else a small copy). */
#include "punctum/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    pt_model *m;
    const char *prefix; /* gpt2: "" or "transformer." */
    pt_error *e;
} loader;

/* ---- element conversion ------------------------------------------------------------------- */

static float f32_of_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE half -> float32 bits without branches (so loops over it vectorise): the exponent and
 * mantissa shifted into place are a float32 that is too small by 2^112 (subnormal halves give
 * float32 denormals, which the multiply normalises exactly); inf / NaN keep their payload. */
static inline uint32_t f16_to_f32_bits(uint32_t h) {
    const uint32_t em = h & 0x7fffu;
    uint32_t u;
    const float f = f32_of_bits(em << 13) * 0x1p112f;
    memcpy(&u, &f, 4);
    u |= em >= 0x7c00u ? 0x7f800000u : 0u;
    return u | (h & 0x8000u) << 16;
}

void pt_tensor_to_f32(const pt_tensor *t, size_t i0, size_t stride, size_t n, float *dst) {
    const unsigned char *p = (const unsigned char *)t->data + i0 * pt_tensor_esize(t->dtype);
    if (t->dtype == PT_DT_F32) {
        if (stride == 1) {
            memcpy(dst, p, n * 4); /* the mapping may be unaligned for float */
            return;
        }
        for (size_t k = 0; k < n; k++) memcpy(&dst[k], p + k * stride * 4, 4);
        return;
    }
    const size_t step = 2 * stride;
    if (t->dtype == PT_DT_BF16) {
        for (size_t k = 0; k < n; k++) {
            uint16_t h;
            memcpy(&h, p + k * step, 2);
            dst[k] = f32_of_bits((uint32_t)h << 16);
        }
    } else {
        for (size_t k = 0; k < n; k++) {
            uint16_t h;
            memcpy(&h, p + k * step, 2);
            dst[k] = f32_of_bits(f16_to_f32_bits(h));
        }
    }
}

float pt_tensor_get(const pt_tensor *t, size_t i) {
    float v;
    pt_tensor_to_f32(t, i, 1, 1, &v);
    return v;
}

/* ---- lookup --------------------------------------------------------------------------------- */

/* Find a tensor and check its dtype and shape (dims given by `shape`, n dims). */
static const pt_st_tensor *find_checked(loader *L, const char *name, int ndim,
                                        const int64_t *shape) {
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

/* Keep a float32 vector the model converted (freed with it). */
static float *own_vector(pt_model *m, size_t n, pt_error *e) {
    if (m->n_owned == m->cap_owned) {
        const size_t cap = m->cap_owned ? 2 * m->cap_owned : 64;
        float **o = realloc(m->owned, cap * sizeof *o);
        if (!o) {
            pt_fail(e, "%s: out of memory loading the model", m->dir);
            return NULL;
        }
        m->owned = o;
        m->cap_owned = cap;
    }
    float *v = pt_try_alloc(n * sizeof(float), "a weight vector", e);
    if (v) m->owned[m->n_owned++] = v;
    return v;
}

/* A float32 vector of n elements: the mapping when aligned F32, else a converted copy. */
static const float *load1(loader *L, const char *name, int64_t n) {
    const pt_st_tensor *t = find_checked(L, name, 1, (int64_t[]){n});
    if (!t) return NULL;
    if (t->dtype == PT_DT_F32 && (uintptr_t)t->data % sizeof(float) == 0) return t->data;
    float *v = own_vector(L->m, (size_t)n, L->e);
    if (v) pt_tensor_to_f32(&(pt_tensor){t->data, t->dtype}, 0, 1, (size_t)n, v);
    return v;
}

/* A matrix view of shape [n0, n1]. */
static int load2(loader *L, const char *name, int64_t n0, int64_t n1, pt_tensor *out) {
    const pt_st_tensor *t = find_checked(L, name, 2, (int64_t[]){n0, n1});
    if (!t) return -1;
    *out = (pt_tensor){t->data, t->dtype};
    return 0;
}

/* Append a part (tensor `name` of out rows, optional bias `bias_name`) to a projection. */
static int add_part(loader *L, pt_linear *lin, const char *name, const char *bias_name, int out,
                    int in, int transposed) {
    pt_linear_part *p = &lin->part[lin->n_parts];
    if (transposed ? load2(L, name, in, out, &p->w) : load2(L, name, out, in, &p->w)) return -1;
    p->b = NULL;
    if (bias_name && !(p->b = load1(L, bias_name, out))) return -1;
    p->out = out;
    p->transposed = transposed;
    lin->in = in;
    lin->out += out;
    lin->n_parts++;
    return 0;
}

/* ---- architectures ------------------------------------------------------------------------ */

static int load_gpt2(loader *L) {
    pt_model *m = L->m;
    const pt_config *c = &m->cfg;
    const int d = c->d_model, ff = c->d_ff;
    pt_weights *w = &m->host;
    /* The original GPT-2 checkpoints have no "transformer." prefix; HF-saved ones do. */
    L->prefix = pt_st_find(&m->files, "transformer.wte.weight") ? "transformer." : "";
    if (load2(L, "wte.weight", c->vocab_size, d, &w->tok_emb)) return -1;
    if (load2(L, "wpe.weight", c->max_positions, d, &w->pos_emb)) return -1;
    char name[128], bias[128];
    for (int l = 0; l < c->n_layers; l++) {
        pt_layer_weights *lw = &w->layers[l];
        struct {
            const float **dst;
            const char *fmt;
        } vec[] = {
            {&lw->norm1_w, "h.%d.ln_1.weight"},
            {&lw->norm1_b, "h.%d.ln_1.bias"},
            {&lw->norm2_w, "h.%d.ln_2.weight"},
            {&lw->norm2_b, "h.%d.ln_2.bias"},
        };
        for (size_t k = 0; k < sizeof vec / sizeof vec[0]; k++) {
            snprintf(name, sizeof name, vec[k].fmt, l);
            if (!(*vec[k].dst = load1(L, name, d))) return -1;
        }
        /* Conv1D: stored [in, out], used through the GEMM's transpose flag */
        struct {
            pt_linear *lin;
            const char *fmt;
            int in, out;
        } conv[] = {
            {&lw->qkv, "h.%d.attn.c_attn", d, 3 * d},
            {&lw->o, "h.%d.attn.c_proj", d, d},
            {&lw->up, "h.%d.mlp.c_fc", d, ff},
            {&lw->down, "h.%d.mlp.c_proj", ff, d},
        };
        for (size_t k = 0; k < sizeof conv / sizeof conv[0]; k++) {
            char stem[96];
            snprintf(stem, sizeof stem, conv[k].fmt, l);
            snprintf(name, sizeof name, "%s.weight", stem);
            snprintf(bias, sizeof bias, "%s.bias", stem);
            if (add_part(L, conv[k].lin, name, bias, conv[k].out, conv[k].in, 1)) return -1;
        }
    }
    if (!(w->final_norm_w = load1(L, "ln_f.weight", d))) return -1;
    if (!(w->final_norm_b = load1(L, "ln_f.bias", d))) return -1;
    return 0;
}

/* Append layers.L.GROUP.NAME.weight (and .bias when `bias`) as a part of `lin`. */
static int add_layer_part(loader *L, pt_linear *lin, int l, const char *group, const char *proj,
                          int bias, int out, int in) {
    char name[160], bname[160];
    snprintf(name, sizeof name, "layers.%d.%s.%s.weight", l, group, proj);
    snprintf(bname, sizeof bname, "layers.%d.%s.%s.bias", l, group, proj);
    return add_part(L, lin, name, bias ? bname : NULL, out, in, 0);
}

/* layers.L.NAME.weight, a float32 vector of n (NULL with e set if missing). */
static const float *layer_vec(loader *L, int l, const char *name, int64_t n) {
    char full[160];
    snprintf(full, sizeof full, "layers.%d.%s.weight", l, name);
    return load1(L, full, n);
}

/* The norms of one layer under each family's names: Gemma's four (input, post-attention,
 * pre- and post-feedforward), OLMo 2's two post-norms, everyone else's two pre-norms. */
static int load_layer_norms(loader *L, int l, pt_layer_weights *lw) {
    const pt_config *c = &L->m->cfg;
    const int d = c->d_model;
    if (c->pre_norms && !(lw->norm1_w = layer_vec(L, l, "input_layernorm", d))) return -1;
    if (c->pre_norms && c->post_norms) { /* Gemma */
        return !(lw->post1_w = layer_vec(L, l, "post_attention_layernorm", d)) ||
                       !(lw->norm2_w = layer_vec(L, l, "pre_feedforward_layernorm", d)) ||
                       !(lw->post2_w = layer_vec(L, l, "post_feedforward_layernorm", d))
                   ? -1
                   : 0;
    }
    if (c->post_norms) /* OLMo 2 */
        return !(lw->post1_w = layer_vec(L, l, "post_attention_layernorm", d)) ||
                       !(lw->post2_w = layer_vec(L, l, "post_feedforward_layernorm", d))
                   ? -1
                   : 0;
    return (lw->norm2_w = layer_vec(L, l, "post_attention_layernorm", d)) ? 0 : -1;
}

static int load_layer(loader *L, int l, pt_layer_weights *lw) {
    const pt_config *c = &L->m->cfg;
    const int d = c->d_model, ff = c->d_ff, hd = c->head_dim;
    const int qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    if (load_layer_norms(L, l, lw)) return -1;
    if (c->qk_norm != PT_QKNORM_NONE) {
        const int per_head = c->qk_norm == PT_QKNORM_HEAD;
        if (!(lw->q_norm_w = layer_vec(L, l, "self_attn.q_norm", per_head ? hd : qd)) ||
            !(lw->k_norm_w = layer_vec(L, l, "self_attn.k_norm", per_head ? hd : kvd)))
            return -1;
    }
    if (c->arch == PT_ARCH_PHI3) { /* fused qkv_proj and gate_up_proj: one part each */
        if (add_layer_part(L, &lw->qkv, l, "self_attn", "qkv_proj", 0, qd + 2 * kvd, d) ||
            add_layer_part(L, &lw->up, l, "mlp", "gate_up_proj", 0, 2 * ff, d))
            return -1;
    } else if (add_layer_part(L, &lw->qkv, l, "self_attn", "q_proj", c->qkv_bias, qd, d) ||
               add_layer_part(L, &lw->qkv, l, "self_attn", "k_proj", c->qkv_bias, kvd, d) ||
               add_layer_part(L, &lw->qkv, l, "self_attn", "v_proj", c->qkv_bias, kvd, d) ||
               add_layer_part(L, &lw->up, l, "mlp", "gate_proj", c->mlp_bias, ff, d) ||
               add_layer_part(L, &lw->up, l, "mlp", "up_proj", c->mlp_bias, ff, d)) {
        return -1;
    }
    return add_layer_part(L, &lw->o, l, "self_attn", "o_proj", c->o_bias, d, qd) ||
                   add_layer_part(L, &lw->down, l, "mlp", "down_proj", c->mlp_bias, d, ff)
               ? -1
               : 0;
}

/* The text model's prefix: "model." (Gemma 3 multimodal checkpoints: the language model's,
 * as transformers 5 saves it or as the Hub's originals name it). */
static const char *text_prefix(pt_model *m) {
    if (strcmp(m->cfg.model_type, "gemma3") != 0) return "model.";
    if (pt_st_find(&m->files, "language_model.model.embed_tokens.weight"))
        return "language_model.model.";
    return "model.language_model.";
}

static int load_llama_like(loader *L) {
    pt_model *m = L->m;
    const pt_config *c = &m->cfg;
    pt_weights *w = &m->host;
    L->prefix = text_prefix(m);
    if (load2(L, "embed_tokens.weight", c->vocab_size, c->d_model, &w->tok_emb)) return -1;
    for (int l = 0; l < c->n_layers; l++)
        if (load_layer(L, l, &w->layers[l])) return -1;
    if (!(w->final_norm_w = load1(L, "norm.weight", c->d_model))) return -1;
    return 0;
}

void pt_rope_inv_freq_table(const pt_config *c, int table, float *out) {
    /* Float32 arithmetic in the order transformers uses, so positions rotate identically. */
    const int dim = pt_rotary_dim(c), half = dim / 2;
    const float theta = (float)(table == PT_ROPE_LOCAL ? c->rope_local_theta : c->rope_theta);
    const pt_rope_kind kind = table == PT_ROPE_LOCAL ? PT_ROPE_DEFAULT : c->rope;
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)dim;
        float base_pow = powf(theta, expo);
        float f = 1.0f / base_pow;
        if (kind == PT_ROPE_LONGROPE) {
            const float ext = table == PT_ROPE_LONG ? c->rope_long[i] : c->rope_short[i];
            f = 1.0f / (ext * base_pow);
        } else if (kind == PT_ROPE_LINEAR) {
            f = f / (float)c->rope_factor;
        } else if (kind == PT_ROPE_LLAMA3) {
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

void pt_rope_inv_freq(const pt_config *c, float *out) {
    pt_rope_inv_freq_table(c, PT_ROPE_GLOBAL, out);
}

/* The RoPE tables the config needs (model.h). */
static int load_rope(pt_model *m, pt_error *e) {
    const pt_config *c = &m->cfg;
    if (c->rope == PT_ROPE_NONE) return 0;
    const float **dst[3] = {&m->host.rope_inv_freq, &m->host.rope_long_inv_freq,
                            &m->host.rope_local_inv_freq};
    const int want[3] = {1, c->rope == PT_ROPE_LONGROPE, c->rope_local_theta > 0};
    for (int t = 0; t < 3; t++) {
        if (!want[t]) continue;
        float *inv = own_vector(m, (size_t)(pt_rotary_dim(c) / 2), e);
        if (!inv) return -1;
        pt_rope_inv_freq_table(c, t, inv);
        *dst[t] = inv;
    }
    return 0;
}

int pt_model_load(const char *dir, pt_model *m, pt_error *e) {
    memset(m, 0, sizeof *m);
    if (!(m->dir = strdup(dir))) return pt_fail(e, "%s: out of memory", dir);
    char *cfg_path = pt_path_join(dir, "config.json");
    int rc = pt_config_load(cfg_path, &m->cfg, e);
    free(cfg_path);
    if (rc) { /* a model the engine does not implement, or an invalid config: a usage error */
        pt_model_free(m);
        return 2;
    }
    if (pt_st_set_open(dir, &m->files, e)) goto fail;
    for (size_t i = 0; i < m->files.n_files; i++) m->file_bytes += m->files.files[i].map_len;

    const pt_config *c = &m->cfg;
    m->host.layers = pt_try_calloc((size_t)c->n_layers, sizeof(pt_layer_weights), dir, e);
    if (!m->host.layers) goto fail;
    loader L = {m, "", e};
    rc = c->arch == PT_ARCH_GPT2 ? load_gpt2(&L) : load_llama_like(&L);
    if (rc) goto fail;

    pt_weights *w = &m->host;
    pt_tensor head = w->tok_emb;
    /* Gemma 3's multimodal originals keep the head under language_model. */
    L.prefix = pt_st_find(&m->files, "language_model.lm_head.weight") ? "language_model." : "";
    if (!c->tied_embeddings && load2(&L, "lm_head.weight", c->vocab_size, c->d_model, &head))
        goto fail;
    w->lm_head = pt_linear_one(head, NULL, c->vocab_size, c->d_model, 0);
    m->weight_dtype = c->n_layers > 0 ? w->layers[0].qkv.part[0].w.dtype : head.dtype;
    if (load_rope(m, e)) goto fail;
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

/* ---- --model org/name: the local Hugging Face cache --------------------------------------- */

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* org/name: two non-empty parts of [A-Za-z0-9._-], neither starting with '.' */
static int looks_like_model_id(const char *s) {
    const char *slash = strchr(s, '/');
    if (!slash || strchr(slash + 1, '/') || slash == s || !slash[1] || s[0] == '.' ||
        slash[1] == '.')
        return 0;
    for (const char *p = s; *p; p++)
        if (p != slash && !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                            (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return strlen(s) < 200;
}

/* The hub cache directory and how it was chosen. */
static void hub_cache(char *out, size_t n, const char **how) {
    const char *v = getenv("HF_HUB_CACHE");
    if (v && *v) {
        snprintf(out, n, "%s", v);
        *how = "$HF_HUB_CACHE";
        return;
    }
    if ((v = getenv("HF_HOME")) && *v) {
        snprintf(out, n, "%s/hub", v);
        *how = "$HF_HOME/hub";
        return;
    }
    v = getenv("HOME");
    snprintf(out, n, "%s/.cache/huggingface/hub", v && *v ? v : "");
    *how = "~/.cache/huggingface/hub";
}

/* The commit hash in refs/main: hex (or at least a plain name), one line. */
static int read_ref(const char *path, char *hash, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[128] = "";
    const int got = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    buf[strcspn(buf, "\r\n")] = 0;
    if (!got || !buf[0] || strlen(buf) >= n) return -1;
    for (const char *p = buf; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            return -1;
    snprintf(hash, n, "%s", buf);
    return 0;
}

char *pt_model_resolve(const char *arg, pt_error *e) {
    if (is_dir(arg) || !looks_like_model_id(arg)) {
        char *d = strdup(arg);
        if (!d) pt_fail(e, "out of memory");
        return d;
    }
    char cache[4096], repo[4096 + 256], ref[sizeof repo + 16], hash[96], snap[sizeof repo + 128];
    const char *how;
    hub_cache(cache, sizeof cache, &how);
    const char *slash = strchr(arg, '/');
    snprintf(repo, sizeof repo, "%s/models--%.*s--%s", cache, (int)(slash - arg), arg, slash + 1);
    snprintf(ref, sizeof ref, "%s/refs/main", repo);
    if (read_ref(ref, hash, sizeof hash)) {
        pt_fail(e,
                "--model %s: not a directory, and not in the local Hugging Face cache (looked for "
                "%s, cache from %s; nothing is downloaded: fetch it with `huggingface-cli "
                "download %s` or pass a directory)",
                arg, ref, how, arg);
        return NULL;
    }
    snprintf(snap, sizeof snap, "%s/snapshots/%s", repo, hash);
    if (!is_dir(snap)) {
        pt_fail(e, "--model %s: %s names snapshot %s, which is missing (looked in %s)", arg, ref,
                hash, snap);
        return NULL;
    }
    char *d = strdup(snap);
    if (!d) pt_fail(e, "out of memory");
    return d;
}
