/* punctum — config.json parsing.
 *
 * Missing keys take the default of the corresponding Hugging Face transformers config class
 * (GPT2Config, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config, Gemma2Config,
 * Gemma3TextConfig, Olmo2Config, Phi3Config, SmolLM3Config), so a config loads as transformers
 * would load it. Every key that is read is type-checked; sizes are range-checked; anything that
 * would change the forward pass in a way the engine does not implement (another activation,
 * another rope type, per-layer sliding windows ...) is an error naming the key. */
#include "punctum/config.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT_CONFIG_MAX_BYTES (16u * 1024u * 1024u)
#define PT_CFG_MAX_SIZE (1 << 20)      /* layers, heads, widths, vocabulary */
#define PT_CFG_MAX_POSITIONS (1 << 30) /* context length */

typedef struct {
    const char *name; /* file name for messages */
    pt_error *e;
} ctx;

/* Bounded, printable copy of an untrusted string for messages. */
static void printable(char *dst, size_t cap, const char *s) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (o + 8 >= cap) {
            memcpy(dst + o, "...", 4);
            return;
        }
        if (*p < 0x20 || *p == 0x7f || *p == '\\')
            o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", *p);
        else
            dst[o++] = (char)*p;
    }
    dst[o] = '\0';
}

/* ---- typed getters: absent -> default; null -> default where null_ok ---------------------- */

static int get_int(const ctx *c, json_t *obj, const char *key, const char *disp, long long def,
                   int null_ok, long long *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || (null_ok && json_is_null(v))) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return pt_fail(c->e, "%s: '%s' must be an integer%s", c->name, disp,
                       null_ok ? " or null" : "");
    *out = (long long)json_integer_value(v);
    return 0;
}

static int get_num(const ctx *c, json_t *obj, const char *key, const char *disp, double def,
                   double *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v)) return pt_fail(c->e, "%s: '%s' must be a number", c->name, disp);
    *out = json_number_value(v);
    if (!isfinite(*out)) return pt_fail(c->e, "%s: '%s' must be finite", c->name, disp);
    return 0;
}

static int get_bool(const ctx *c, json_t *obj, const char *key, int def, int *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) return pt_fail(c->e, "%s: '%s' must be true or false", c->name, key);
    *out = json_is_true(v);
    return 0;
}

static int get_str(const ctx *c, json_t *obj, const char *key, const char *disp, const char *def,
                   const char **out) {
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_string(v)) return pt_fail(c->e, "%s: '%s' must be a string", c->name, disp);
    *out = json_string_value(v);
    return 0;
}

/* An integer in [lo, hi] stored into an int. */
static int get_range(const ctx *c, json_t *obj, const char *key, long long def, int null_ok,
                     long long lo, long long hi, int *out) {
    long long v = 0;
    if (get_int(c, obj, key, key, def, null_ok, &v)) return -1;
    if (v < lo || v > hi)
        return pt_fail(c->e, "%s: '%s' must be between %lld and %lld (got %lld)", c->name, key, lo,
                       hi, v);
    *out = (int)v;
    return 0;
}

/* First present key among aliases (GPT-2's attribute_map), else the first name. */
static const char *alias(json_t *obj, const char *a, const char *b) {
    if (json_object_get(obj, a)) return a;
    if (b && json_object_get(obj, b)) return b;
    return a;
}

/* bos/eos: an integer, null, or a list of integers (the first is taken). Ids outside the
 * vocabulary (transformers only warns about them) read as -1. */
static int get_token_id(const ctx *c, json_t *obj, const char *key, long long def, int vocab,
                        int *out) {
    json_t *v = json_object_get(obj, key);
    long long id = def;
    if (v && json_is_null(v)) {
        id = -1;
    } else if (v && json_is_integer(v)) {
        id = (long long)json_integer_value(v);
    } else if (v && json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (!json_is_integer(x))
                return pt_fail(c->e, "%s: '%s' must be an integer, a list of integers, or null",
                               c->name, key);
        }
        id = json_array_size(v) ? (long long)json_integer_value(json_array_get(v, 0)) : -1;
    } else if (v) {
        return pt_fail(c->e, "%s: '%s' must be an integer, a list of integers, or null", c->name,
                       key);
    }
    *out = (id >= 0 && id < vocab) ? (int)id : -1;
    return 0;
}

/* ---- rope -------------------------------------------------------------------------------------
 */

/* A list of `n` numbers (longrope factors) into out. */
static int get_factors(const ctx *c, json_t *params, const char *key, const char *pname, int n,
                       float *out) {
    json_t *v = json_object_get(params, key);
    if (!v)
        return pt_fail(c->e, "%s: '%s.%s' is required for rope type 'longrope'", c->name, pname,
                       key);
    if (!json_is_array(v) || json_array_size(v) != (size_t)n)
        return pt_fail(c->e, "%s: '%s.%s' must be a list of %d numbers (rotary dimensions / 2)",
                       c->name, pname, key, n);
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        if (!json_is_number(x) || !(json_number_value(x) > 0) || !isfinite(json_number_value(x)))
            return pt_fail(c->e, "%s: '%s.%s[%zu]' must be a positive number", c->name, pname, key,
                           i);
        out[i] = (float)json_number_value(x);
    }
    return 0;
}

/* longrope's fields (transformers _compute_longrope_parameters). Phi-3 keeps the pretraining
 * length at the top level (its config class always has it: it wins). */
static int parse_longrope(const ctx *c, json_t *root, json_t *params, const char *pname,
                          pt_config *cfg) {
    char k[96];
    long long omp = cfg->max_positions;
    json_t *src = params;
    if (cfg->arch == PT_ARCH_PHI3)
        src = root, omp = 4096;
    else if (!json_object_get(params, "original_max_position_embeddings") &&
             json_object_get(root, "original_max_position_embeddings"))
        src = root;
    snprintf(k, sizeof k, "%s%soriginal_max_position_embeddings", src == root ? "" : pname,
             src == root ? "" : ".");
    if (get_int(c, src, "original_max_position_embeddings", k, omp, 0, &omp)) return -1;
    if (omp < 1 || omp > PT_CFG_MAX_POSITIONS)
        return pt_fail(c->e, "%s: '%s' must be between 1 and %d (got %lld)", c->name, k,
                       PT_CFG_MAX_POSITIONS, omp);
    cfg->rope_original_max_positions = (int)omp;
    const int nf = cfg->rotary_dim / 2;
    if (nf > PT_CFG_MAX_ROPE_FACTORS)
        return pt_fail(c->e, "%s: longrope over %d rotary dimensions is not supported (at most %d)",
                       c->name, cfg->rotary_dim, 2 * PT_CFG_MAX_ROPE_FACTORS);
    if (get_factors(c, params, "short_factor", pname, nf, cfg->rope_short) ||
        get_factors(c, params, "long_factor", pname, nf, cfg->rope_long))
        return -1;
    double factor = (double)cfg->max_positions / (double)omp, af = 0;
    snprintf(k, sizeof k, "%s.factor", pname);
    if (json_object_get(params, "factor") && !json_is_null(json_object_get(params, "factor")) &&
        get_num(c, params, "factor", k, factor, &factor))
        return -1;
    json_t *afj = json_object_get(params, "attention_factor");
    if (afj && !json_is_null(afj)) {
        snprintf(k, sizeof k, "%s.attention_factor", pname);
        if (get_num(c, params, "attention_factor", k, 1.0, &af)) return -1;
        if (!(af > 0)) return pt_fail(c->e, "%s: '%s' must be positive (got %g)", c->name, k, af);
    } else {
        af = factor <= 1.0 ? 1.0 : sqrt(1.0 + log(factor) / log((double)omp));
    }
    cfg->rope_attn_factor = af;
    return 0;
}

/* One rope dictionary (not nested): its type and parameters into cfg; theta_def where neither the
 * dictionary nor the top level names rope_theta. */
static int parse_rope_dict(const ctx *c, json_t *root, json_t *params, const char *pname,
                           double theta_def, pt_config *cfg) {
    char k[96];
    double theta = theta_def;
    if (json_object_get(params, "rope_theta")) {
        snprintf(k, sizeof k, "%s.rope_theta", pname);
        if (get_num(c, params, "rope_theta", k, theta_def, &theta)) return -1;
    } else if (get_num(c, root, "rope_theta", "rope_theta", theta_def, &theta)) {
        return -1;
    }
    if (!(theta > 0))
        return pt_fail(c->e, "%s: 'rope_theta' must be positive (got %g)", c->name, theta);
    cfg->rope_theta = theta;

    const char *type = "default";
    const char *tk = json_object_get(params, "rope_type") ? "rope_type" : "type";
    snprintf(k, sizeof k, "%s.%s", pname, tk);
    if (get_str(c, params, tk, k, "default", &type)) return -1;
    /* Phi-3 reads its older names for longrope */
    if (cfg->arch == PT_ARCH_PHI3 && (!strcmp(type, "su") || !strcmp(type, "yarn")))
        type = "longrope";

    cfg->rope_factor = 1.0;
    cfg->rope_low_freq_factor = 0.0;
    cfg->rope_high_freq_factor = 0.0;
    cfg->rope_original_max_positions = 0;
    cfg->rope_attn_factor = 1.0;
    if (strcmp(type, "default") == 0) {
        cfg->rope = PT_ROPE_DEFAULT;
        return 0;
    }
    if (strcmp(type, "longrope") == 0) {
        cfg->rope = PT_ROPE_LONGROPE;
        return parse_longrope(c, root, params, pname, cfg);
    }
    if (strcmp(type, "linear") && strcmp(type, "llama3")) {
        char t[64];
        printable(t, sizeof t, type);
        return pt_fail(
            c->e, "%s: '%s': rope type '%s' is not supported (default, linear, llama3, longrope)",
            c->name, k, t);
    }
    const int llama3 = type[1] == 'l';
    cfg->rope = llama3 ? PT_ROPE_LLAMA3 : PT_ROPE_LINEAR;
    const char *need[] = {"factor", "low_freq_factor", "high_freq_factor"};
    double got[3] = {1.0, 0.0, 0.0};
    for (int i = 0; i < (llama3 ? 3 : 1); i++) {
        snprintf(k, sizeof k, "%s.%s", pname, need[i]);
        if (!json_object_get(params, need[i]))
            return pt_fail(c->e, "%s: '%s' is required for rope type '%s'", c->name, k, type);
        if (get_num(c, params, need[i], k, 0.0, &got[i])) return -1;
        if (!(got[i] > 0))
            return pt_fail(c->e, "%s: '%s' must be positive (got %g)", c->name, k, got[i]);
    }
    cfg->rope_factor = got[0];
    if (!llama3) return 0;
    if (!(got[2] > got[1]))
        return pt_fail(c->e,
                       "%s: '%s.high_freq_factor' (%g) must be greater than 'low_freq_factor' (%g)",
                       c->name, pname, got[2], got[1]);
    cfg->rope_low_freq_factor = got[1];
    cfg->rope_high_freq_factor = got[2];
    /* absent: max_position_embeddings (transformers 5 ignores a top-level key here) */
    long long omp = 0;
    snprintf(k, sizeof k, "%s.original_max_position_embeddings", pname);
    if (get_int(c, params, "original_max_position_embeddings", k, cfg->max_positions, 0, &omp))
        return -1;
    if (omp < 1 || omp > PT_CFG_MAX_POSITIONS)
        return pt_fail(c->e, "%s: '%s' must be between 1 and %d (got %lld)", c->name, k,
                       PT_CFG_MAX_POSITIONS, omp);
    cfg->rope_original_max_positions = (int)omp;
    return 0;
}

/* partial_rotary_factor (Phi-3: the dict's, else the top level's): rotary_dim = head_dim x it. */
static int parse_rotary_dim(const ctx *c, json_t *root, json_t *params, pt_config *cfg) {
    cfg->rotary_dim = cfg->head_dim;
    json_t *src = params && json_object_get(params, "partial_rotary_factor") ? params : root;
    json_t *pv = json_object_get(src, "partial_rotary_factor");
    if (!pv || json_is_null(pv)) return 0;
    if (!json_is_number(pv))
        return pt_fail(c->e, "%s: 'partial_rotary_factor' must be a number", c->name);
    const double f = json_number_value(pv);
    if (f == 1.0) return 0;
    if (cfg->arch != PT_ARCH_PHI3)
        return pt_fail(c->e, "%s: 'partial_rotary_factor' %g is not supported (only 1.0)", c->name,
                       f);
    const int dim = (int)(cfg->head_dim * f); /* int(head_dim * factor), as transformers */
    if (!(f > 0 && f <= 1) || dim < 2 || dim % 2)
        return pt_fail(
            c->e,
            "%s: 'partial_rotary_factor' %g gives %d rotary dimensions of %d (must be even, "
            "at least 2)",
            c->name, f, dim, cfg->head_dim);
    cfg->rotary_dim = dim;
    return 0;
}

/* Gemma 3's local layers: `rope_parameters.sliding_attention` (default type only), else
 * rope_local_base_freq. */
static int parse_rope_local(const ctx *c, json_t *root, json_t *local, pt_config *cfg) {
    double theta = 10000.0;
    if (get_num(c, root, "rope_local_base_freq", "rope_local_base_freq", theta, &theta)) return -1;
    if (local) {
        const char *type = "default";
        if (get_str(c, local, "rope_type", "rope_parameters.sliding_attention.rope_type", "default",
                    &type) ||
            get_num(c, local, "rope_theta", "rope_parameters.sliding_attention.rope_theta", theta,
                    &theta))
            return -1;
        if (strcmp(type, "default")) {
            char t[64];
            printable(t, sizeof t, type);
            return pt_fail(
                c->e,
                "%s: 'rope_parameters.sliding_attention.rope_type' '%s' is not supported "
                "(default)",
                c->name, t);
        }
    }
    if (!(theta > 0))
        return pt_fail(c->e, "%s: the local rope_theta must be positive (got %g)", c->name, theta);
    cfg->rope_local_theta = theta;
    return 0;
}

static int parse_rope(const ctx *c, json_t *root, double theta_def, pt_config *cfg) {
    /* transformers: `rope_scaling or rope_parameters`; theta from the dict, else top level,
     * else the family's default */
    json_t *rs = json_object_get(root, "rope_scaling");
    json_t *rp = json_object_get(root, "rope_parameters");
    json_t *params = NULL, *local = NULL;
    const char *pname = NULL;
    if (rs && !json_is_null(rs)) {
        if (!json_is_object(rs))
            return pt_fail(c->e, "%s: 'rope_scaling' must be an object or null", c->name);
        if (json_object_size(rs) > 0) params = rs, pname = "rope_scaling";
    }
    if (rp && !json_is_null(rp) && !json_is_object(rp))
        return pt_fail(c->e, "%s: 'rope_parameters' must be an object or null", c->name);
    const int gemma3 = cfg->arch == PT_ARCH_GEMMA3;
    json_t *full = rp && json_is_object(rp) ? json_object_get(rp, "full_attention") : NULL;
    local = rp && json_is_object(rp) ? json_object_get(rp, "sliding_attention") : NULL;
    if (gemma3 && (full || local)) { /* nested by layer type (transformers 5) */
        if ((full && !json_is_object(full)) ||
            (local && !json_is_null(local) && !json_is_object(local)))
            return pt_fail(c->e, "%s: 'rope_parameters' by layer type must hold objects", c->name);
        if (local && json_is_null(local)) local = NULL;
        if (!params && full) params = full, pname = "rope_parameters.full_attention";
    } else {
        local = NULL;
        if (!params && rp && !json_is_null(rp)) params = rp, pname = "rope_parameters";
    }
    json_t *empty = json_object();
    if (!params) params = empty, pname = "rope_parameters";
    int rc = -1;
    const char *key;
    json_t *val;
    json_object_foreach(params, key, val) {
        if (json_is_object(val)) {
            char pk[64];
            printable(pk, sizeof pk, key);
            pt_fail(c->e, "%s: '%s' nested by layer type ('%s') is not supported", c->name, pname,
                    pk);
            goto out;
        }
    }
    if (parse_rotary_dim(c, root, params, cfg) ||
        parse_rope_dict(c, root, params, pname, theta_def, cfg))
        goto out;
    if (gemma3 && parse_rope_local(c, root, local, cfg)) goto out;
    rc = 0;
out:
    json_decref(empty);
    return rc;
}

/* ---- per architecture -------------------------------------------------------------------------
 */

static int parse_gpt2(const ctx *c, json_t *r, pt_config *cfg) {
    cfg->arch = PT_ARCH_GPT2;
    const int M = PT_CFG_MAX_SIZE - 1;
    if (get_range(c, r, alias(r, "n_layer", "num_hidden_layers"), 12, 0, 1, M, &cfg->n_layers) ||
        get_range(c, r, alias(r, "n_embd", "hidden_size"), 768, 0, 1, M, &cfg->d_model) ||
        get_range(c, r, alias(r, "n_head", "num_attention_heads"), 12, 0, 1, M, &cfg->n_heads) ||
        get_range(c, r, alias(r, "n_positions", "max_position_embeddings"), 1024, 0, 1,
                  PT_CFG_MAX_POSITIONS, &cfg->max_positions) ||
        get_range(c, r, "vocab_size", 50257, 0, 1, M, &cfg->vocab_size))
        return -1;
    if (cfg->n_layers > PT_CFG_MAX_LAYERS)
        return pt_fail(c->e, "%s: '%s' must be between 1 and %d (got %d)", c->name,
                       alias(r, "n_layer", "num_hidden_layers"), PT_CFG_MAX_LAYERS, cfg->n_layers);
    long long d_ff = 0;
    if (get_int(c, r, "n_inner", "n_inner", 4LL * cfg->d_model, 1, &d_ff)) return -1;
    if (d_ff < 1 || d_ff > M)
        return pt_fail(c->e, "%s: 'n_inner' must be between 1 and %d (got %lld)", c->name, M, d_ff);
    cfg->d_ff = (int)d_ff;
    if (cfg->d_model % cfg->n_heads != 0)
        return pt_fail(c->e, "%s: 'n_embd' (%d) is not divisible by 'n_head' (%d)", c->name,
                       cfg->d_model, cfg->n_heads);
    cfg->n_kv_heads = cfg->n_heads;
    cfg->head_dim = cfg->d_model / cfg->n_heads;
    if (get_num(c, r, "layer_norm_epsilon", "layer_norm_epsilon", 1e-5, &cfg->norm_eps)) return -1;
    if (!(cfg->norm_eps > 0))
        return pt_fail(c->e, "%s: 'layer_norm_epsilon' must be positive (got %g)", c->name,
                       cfg->norm_eps);

    const char *act = "";
    if (get_str(c, r, "activation_function", "activation_function", "gelu_new", &act)) return -1;
    if (strcmp(act, "gelu_new") && strcmp(act, "gelu_pytorch_tanh") && strcmp(act, "gelu_fast")) {
        char a[64];
        printable(a, sizeof a, act);
        return pt_fail(
            c->e,
            "%s: activation_function '%s' is not supported (gelu_new, gelu_pytorch_tanh, "
            "gelu_fast)",
            c->name, a);
    }
    int b = 0;
    if (get_bool(c, r, "scale_attn_weights", 1, &b)) return -1;
    if (!b) return pt_fail(c->e, "%s: 'scale_attn_weights' false is not supported", c->name);
    if (get_bool(c, r, "scale_attn_by_inverse_layer_idx", 0, &b)) return -1;
    if (b)
        return pt_fail(c->e, "%s: 'scale_attn_by_inverse_layer_idx' true is not supported",
                       c->name);
    if (get_bool(c, r, "tie_word_embeddings", 1, &cfg->tied_embeddings)) return -1;
    if (get_token_id(c, r, "bos_token_id", 50256, cfg->vocab_size, &cfg->bos_token_id) ||
        get_token_id(c, r, "eos_token_id", 50256, cfg->vocab_size, &cfg->eos_token_id))
        return -1;

    cfg->norm = PT_NORM_LAYERNORM;
    cfg->mlp = PT_MLP_GELU_TANH;
    cfg->learned_positions = 1;
    cfg->qkv_bias = cfg->o_bias = cfg->mlp_bias = 1;
    cfg->rope = PT_ROPE_NONE;
    cfg->rope_theta = 0.0;
    cfg->rope_factor = 1.0;
    cfg->sliding_window = 0;
    cfg->pre_norms = 1;
    cfg->embed_scale = 1.0;
    cfg->attn_scale = pow((double)cfg->head_dim, -0.5);
    return 0;
}

/* ---- the decoder families (everything but gpt2) --------------------------------------------- */

typedef struct {
    long long vocab, hidden, inter, layers, heads, kv, maxpos, bos, eos;
    int head_dim; /* class default head_dim (0: hidden / heads) */
    double eps;   /* rms_norm_eps default */
    int tied;     /* tie_word_embeddings default */
} family_defaults;

/* The transformers config classes' defaults (kv -1: num_attention_heads). */
static const family_defaults *defaults_of(pt_arch a) {
    static const family_defaults D[] = {
        [PT_ARCH_LLAMA] = {32000, 4096, 11008, 32, 32, -1, 2048, 1, 2, 0, 1e-6, 0},
        [PT_ARCH_MISTRAL] = {32000, 4096, 14336, 32, 32, 8, 4096 * 32, 1, 2, 0, 1e-6, 0},
        [PT_ARCH_QWEN2] = {151936, 4096, 22016, 32, 32, 32, 32768, -1, -1, 0, 1e-6, 0},
        [PT_ARCH_QWEN3] = {151936, 4096, 22016, 32, 32, 32, 32768, -1, -1, 128, 1e-6, 0},
        [PT_ARCH_GEMMA2] = {256000, 2304, 9216, 26, 8, 4, 8192, 2, 1, 256, 1e-6, 1},
        [PT_ARCH_GEMMA3] = {262208, 2304, 9216, 26, 8, 4, 131072, 2, 1, 256, 1e-6, 1},
        [PT_ARCH_OLMO2] = {50304, 4096, 11008, 32, 32, -1, 2048, -1, 50279, 0, 1e-5, 0},
        [PT_ARCH_PHI3] = {32064, 3072, 8192, 32, 32, -1, 4096, 1, 32000, 0, 1e-5, 0},
        [PT_ARCH_SMOLLM3] = {128256, 2048, 11008, 36, 16, 4, 32768, 128000, 128001, 0, 1e-6, 1},
    };
    return &D[a];
}

static int is_gemma(const pt_config *cfg) {
    return cfg->arch == PT_ARCH_GEMMA2 || cfg->arch == PT_ARCH_GEMMA3;
}

/* Sizes, heads, head_dim, eps, tying and token ids. */
static int parse_shapes(const ctx *c, json_t *r, pt_config *cfg) {
    const family_defaults *d = defaults_of(cfg->arch);
    const int M = PT_CFG_MAX_SIZE - 1;
    if (get_range(c, r, "num_hidden_layers", d->layers, 0, 1, PT_CFG_MAX_LAYERS, &cfg->n_layers) ||
        get_range(c, r, "hidden_size", d->hidden, 0, 1, M, &cfg->d_model) ||
        get_range(c, r, "num_attention_heads", d->heads, 0, 1, M, &cfg->n_heads) ||
        get_range(c, r, "intermediate_size", d->inter, 0, 1, M, &cfg->d_ff) ||
        get_range(c, r, "max_position_embeddings", d->maxpos, 0, 1, PT_CFG_MAX_POSITIONS,
                  &cfg->max_positions) ||
        get_range(c, r, "vocab_size", d->vocab, 0, 1, M, &cfg->vocab_size))
        return -1;
    /* num_key_value_heads: null means n_heads; absent, the class default (llama: n_heads) */
    json_t *kvj = json_object_get(r, "num_key_value_heads");
    long long kv_def = (d->kv < 0 || (kvj && json_is_null(kvj))) ? cfg->n_heads : d->kv;
    if (get_range(c, r, "num_key_value_heads", kv_def, 1, 1, M, &cfg->n_kv_heads)) return -1;
    if (cfg->n_kv_heads > cfg->n_heads || cfg->n_heads % cfg->n_kv_heads != 0)
        return pt_fail(c->e,
                       "%s: 'num_key_value_heads' (%d) does not divide 'num_attention_heads' (%d)",
                       c->name, cfg->n_kv_heads, cfg->n_heads);
    long long hd = 0;
    json_t *hdj = json_object_get(r, "head_dim");
    int hd_given = hdj && !json_is_null(hdj);
    if (get_int(c, r, "head_dim", "head_dim", 0, 1, &hd)) return -1;
    if (!hd_given && d->head_dim > 0 && !(hdj && json_is_null(hdj))) {
        cfg->head_dim = d->head_dim;
    } else if (!hd_given) {
        if (cfg->d_model % cfg->n_heads != 0)
            return pt_fail(c->e,
                           "%s: 'hidden_size' (%d) is not divisible by 'num_attention_heads' (%d)",
                           c->name, cfg->d_model, cfg->n_heads);
        cfg->head_dim = cfg->d_model / cfg->n_heads;
    } else {
        if (hd < 1 || hd > M)
            return pt_fail(c->e, "%s: 'head_dim' must be between 1 and %d (got %lld)", c->name, M,
                           hd);
        cfg->head_dim = (int)hd;
    }
    if (cfg->head_dim % 2 != 0)
        return pt_fail(c->e, "%s: head dimension %d must be even for rotary embeddings", c->name,
                       cfg->head_dim);
    if ((long long)cfg->n_heads * cfg->head_dim > M)
        return pt_fail(c->e, "%s: 'num_attention_heads' x head dimension (%d x %d) is too large",
                       c->name, cfg->n_heads, cfg->head_dim);
    if (get_num(c, r, "rms_norm_eps", "rms_norm_eps", d->eps, &cfg->norm_eps)) return -1;
    if (!(cfg->norm_eps > 0))
        return pt_fail(c->e, "%s: 'rms_norm_eps' must be positive (got %g)", c->name,
                       cfg->norm_eps);
    if (get_bool(c, r, "tie_word_embeddings", d->tied, &cfg->tied_embeddings)) return -1;
    if (get_token_id(c, r, "bos_token_id", d->bos, cfg->vocab_size, &cfg->bos_token_id) ||
        get_token_id(c, r, "eos_token_id", d->eos, cfg->vocab_size, &cfg->eos_token_id))
        return -1;
    return 0;
}

/* The MLP activation: silu (SwiGLU), or Gemma's hidden_activation gelu_pytorch_tanh (GeGLU). */
static int parse_activation(const ctx *c, json_t *r, pt_config *cfg) {
    const int gemma = is_gemma(cfg);
    const char *key = gemma ? "hidden_activation" : "hidden_act", *act = "";
    if (get_str(c, r, key, key, gemma ? "gelu_pytorch_tanh" : "silu", &act)) return -1;
    const int ok = gemma ? !strcmp(act, "gelu_pytorch_tanh") || !strcmp(act, "gelu_new")
                         : !strcmp(act, "silu");
    if (!ok) {
        char a[64];
        printable(a, sizeof a, act);
        return pt_fail(c->e, "%s: %s '%s' is not supported (%s)", c->name, key, a,
                       gemma ? "gelu_pytorch_tanh, gelu_new" : "silu");
    }
    cfg->mlp = gemma ? PT_MLP_GEGLU : PT_MLP_SWIGLU;
    return 0;
}

/* A positive number or null (0) under `key`, default def. */
static int get_pos_or_null(const ctx *c, json_t *r, const char *key, double def, double *out) {
    json_t *v = json_object_get(r, key);
    if (v && json_is_null(v)) {
        *out = 0;
        return 0;
    }
    if (get_num(c, r, key, key, def, out)) return -1;
    if (def != 0 || v) {
        if (!(*out > 0))
            return pt_fail(c->e, "%s: '%s' must be positive or null (got %g)", c->name, key, *out);
    }
    return 0;
}

/* The sliding window's size: an integer >= 1, or null / absent (def 0) for none. */
static int get_window(const ctx *c, json_t *r, long long def, int *out) {
    json_t *sw = json_object_get(r, "sliding_window");
    if (sw && json_is_null(sw)) {
        *out = 0;
        return 0;
    }
    if (get_range(c, r, "sliding_window", def, 1, 0, PT_CFG_MAX_POSITIONS, out)) return -1;
    if (sw && *out < 1)
        return pt_fail(c->e, "%s: 'sliding_window' must be a positive integer or null (got %d)",
                       c->name, *out);
    return 0;
}

/* layer_types (a list of "full_attention" / "sliding_attention" per layer) into the
 * PT_LAYER_SLIDING flags; 0 and nothing set when absent. `allow_sliding` 0: only full layers. */
static int parse_layer_types(const ctx *c, json_t *r, pt_config *cfg, int allow_sliding,
                             int *given) {
    json_t *lt = json_object_get(r, "layer_types");
    *given = 0;
    if (!lt || json_is_null(lt)) return 0;
    size_t i;
    json_t *x;
    if (!json_is_array(lt))
        return pt_fail(c->e, "%s: 'layer_types' must be a list of strings", c->name);
    if (json_array_size(lt) != (size_t)cfg->n_layers)
        return pt_fail(c->e, "%s: 'layer_types' has %zu entries but 'num_hidden_layers' is %d",
                       c->name, json_array_size(lt), cfg->n_layers);
    json_array_foreach(lt, i, x) {
        const char *t = json_is_string(x) ? json_string_value(x) : NULL;
        if (!t) return pt_fail(c->e, "%s: 'layer_types' must be a list of strings", c->name);
        const int sliding = !strcmp(t, "sliding_attention");
        if (strcmp(t, "full_attention") && !(sliding && allow_sliding)) {
            char tt[64];
            printable(tt, sizeof tt, t);
            return pt_fail(c->e, "%s: layer_types[%zu] '%s' is not supported (%s)", c->name, i, tt,
                           allow_sliding ? "full_attention, sliding_attention" : "full_attention");
        }
        if (sliding) cfg->layer_flags[i] |= PT_LAYER_SLIDING;
    }
    *given = 1;
    return 0;
}

/* Every layer sliding (Mistral, Phi-3 with a window). */
static void all_sliding(pt_config *cfg) {
    for (int l = 0; l < cfg->n_layers; l++) cfg->layer_flags[l] |= PT_LAYER_SLIDING;
}

/* SmolLM3: no_rope_layers (1 = RoPE) or one layer in no_rope_layer_interval without; windows
 * only with use_sliding_window, on layer_types' sliding layers (default: those without RoPE). */
static int parse_smollm3_layers(const ctx *c, json_t *r, pt_config *cfg) {
    json_t *nr = json_object_get(r, "no_rope_layers");
    if (nr && !json_is_null(nr)) {
        size_t i;
        json_t *x;
        if (!json_is_array(nr) || json_array_size(nr) != (size_t)cfg->n_layers)
            return pt_fail(c->e,
                           "%s: 'no_rope_layers' must be a list of %d integers (1: RoPE, 0: none)",
                           c->name, cfg->n_layers);
        json_array_foreach(nr, i, x) {
            if (!json_is_integer(x) || (json_integer_value(x) != 0 && json_integer_value(x) != 1))
                return pt_fail(c->e, "%s: 'no_rope_layers[%zu]' must be 0 or 1", c->name, i);
            if (!json_integer_value(x)) cfg->layer_flags[i] |= PT_LAYER_NO_ROPE;
        }
    } else {
        int every = 4;
        if (get_range(c, r, "no_rope_layer_interval", 4, 0, 1, PT_CFG_MAX_LAYERS, &every))
            return -1;
        for (int l = 0; l < cfg->n_layers; l++)
            if ((l + 1) % every == 0) cfg->layer_flags[l] |= PT_LAYER_NO_ROPE;
    }
    int usw = 0, given = 0;
    if (get_bool(c, r, "use_sliding_window", 0, &usw) || parse_layer_types(c, r, cfg, 1, &given) ||
        get_window(c, r, 0, &cfg->sliding_window))
        return -1;
    if (!usw) cfg->sliding_window = 0;
    for (int l = 0; !given && cfg->sliding_window && l < cfg->n_layers; l++)
        if (cfg->layer_flags[l] & PT_LAYER_NO_ROPE) cfg->layer_flags[l] |= PT_LAYER_SLIDING;
    return 0;
}

/* The attention layout of each family: sliding windows by layer, layers without RoPE. */
static int parse_layers(const ctx *c, json_t *r, pt_config *cfg) {
    int given = 0, usw = 0;
    switch (cfg->arch) {
    case PT_ARCH_MISTRAL:
    case PT_ARCH_PHI3:
        if (get_window(c, r, cfg->arch == PT_ARCH_MISTRAL ? 4096 : 0, &cfg->sliding_window))
            return -1;
        all_sliding(cfg);
        return 0;
    case PT_ARCH_QWEN2:
        if (get_bool(c, r, "use_sliding_window", 0, &usw)) return -1;
        if (usw) return pt_fail(c->e, "%s: 'use_sliding_window' true is not supported", c->name);
        return parse_layer_types(c, r, cfg, 0, &given);
    case PT_ARCH_QWEN3: {
        if (get_bool(c, r, "use_sliding_window", 0, &usw) ||
            parse_layer_types(c, r, cfg, 1, &given))
            return -1;
        int mwl = 28;
        if (usw && (get_window(c, r, 4096, &cfg->sliding_window) ||
                    get_range(c, r, "max_window_layers", 28, 0, 0, PT_CFG_MAX_LAYERS, &mwl)))
            return -1;
        for (int l = 0; usw && !given && cfg->sliding_window && l < cfg->n_layers; l++)
            if (l >= mwl) cfg->layer_flags[l] |= PT_LAYER_SLIDING;
        return 0;
    }
    case PT_ARCH_GEMMA2:
    case PT_ARCH_GEMMA3: {
        int bidir = 0, pattern = cfg->arch == PT_ARCH_GEMMA2 ? 2 : 6;
        json_t *bj = json_object_get(r, "use_bidirectional_attention");
        if (bj && !json_is_null(bj) && get_bool(c, r, "use_bidirectional_attention", 0, &bidir))
            return -1;
        if (bidir)
            return pt_fail(c->e, "%s: 'use_bidirectional_attention' true is not supported",
                           c->name);
        if (get_window(c, r, 4096, &cfg->sliding_window) ||
            parse_layer_types(c, r, cfg, 1, &given) ||
            (cfg->arch == PT_ARCH_GEMMA3 &&
             get_range(c, r, "sliding_window_pattern", 6, 0, 1, PT_CFG_MAX_LAYERS, &pattern)))
            return -1;
        for (int l = 0; !given && l < cfg->n_layers; l++) /* Gemma 2: even layers local */
            if ((l + 1) % pattern) cfg->layer_flags[l] |= PT_LAYER_SLIDING;
        if (cfg->arch == PT_ARCH_GEMMA3)
            for (int l = 0; l < cfg->n_layers; l++)
                if (cfg->layer_flags[l] & PT_LAYER_SLIDING)
                    cfg->layer_flags[l] |= PT_LAYER_LOCAL_ROPE;
        return 0;
    }
    case PT_ARCH_SMOLLM3:
        return parse_smollm3_layers(c, r, cfg);
    default:
        return 0;
    }
}

/* Biases, norms, scales and soft-caps of each family. */
static int parse_flags(const ctx *c, json_t *r, pt_config *cfg) {
    cfg->norm = PT_NORM_RMSNORM;
    cfg->learned_positions = 0;
    cfg->pre_norms = 1;
    cfg->embed_scale = 1.0;
    cfg->attn_scale = pow((double)cfg->head_dim, -0.5);
    int ab = 0, mb = 0;
    switch (cfg->arch) {
    case PT_ARCH_QWEN2:
        cfg->qkv_bias = 1;
        return 0;
    case PT_ARCH_MISTRAL:
    case PT_ARCH_PHI3:
        return 0;
    case PT_ARCH_OLMO2:
        cfg->pre_norms = 0;
        cfg->post_norms = 1;
        cfg->qk_norm = PT_QKNORM_PROJ;
        break;
    case PT_ARCH_QWEN3:
        cfg->qk_norm = PT_QKNORM_HEAD;
        break;
    case PT_ARCH_GEMMA2:
    case PT_ARCH_GEMMA3: {
        double qs = 256;
        cfg->post_norms = cfg->norm_plus_one = 1;
        cfg->qk_norm = cfg->arch == PT_ARCH_GEMMA3 ? PT_QKNORM_HEAD : PT_QKNORM_NONE;
        cfg->embed_scale = sqrt((double)cfg->d_model);
        if (get_num(c, r, "query_pre_attn_scalar", "query_pre_attn_scalar", 256, &qs) ||
            get_pos_or_null(c, r, "attn_logit_softcapping", cfg->arch == PT_ARCH_GEMMA2 ? 50.0 : 0,
                            &cfg->attn_softcap) ||
            get_pos_or_null(c, r, "final_logit_softcapping", cfg->arch == PT_ARCH_GEMMA2 ? 30.0 : 0,
                            &cfg->final_softcap))
            return -1;
        if (!(qs > 0))
            return pt_fail(c->e, "%s: 'query_pre_attn_scalar' must be positive (got %g)", c->name,
                           qs);
        cfg->attn_scale = pow(qs, -0.5);
        break;
    }
    default:
        break;
    }
    if (get_bool(c, r, "attention_bias", 0, &ab)) return -1;
    if (cfg->arch == PT_ARCH_LLAMA || cfg->arch == PT_ARCH_SMOLLM3)
        if (get_bool(c, r, "mlp_bias", 0, &mb)) return -1;
    cfg->qkv_bias = cfg->o_bias = ab;
    cfg->mlp_bias = mb;
    return 0;
}

static int parse_decoder(const ctx *c, json_t *r, pt_config *cfg) {
    const int gemma3 = cfg->arch == PT_ARCH_GEMMA3;
    if (parse_shapes(c, r, cfg) || parse_activation(c, r, cfg) || parse_flags(c, r, cfg) ||
        parse_layers(c, r, cfg) || parse_rope(c, r, gemma3 ? 1000000.0 : 10000.0, cfg))
        return -1;
    if (cfg->rope == PT_ROPE_LONGROPE && cfg->rope_local_theta > 0)
        return pt_fail(c->e, "%s: longrope on Gemma 3's global layers is not supported", c->name);
    return 0;
}

float pt_attn_scale(const pt_config *c) {
    return (float)(c->attn_scale > 0 ? c->attn_scale : pow((double)c->head_dim, -0.5));
}

/* ---- entry points -----------------------------------------------------------------------------
 */

int pt_config_parse(const char *json, size_t len, const char *name, pt_config *cfg, pt_error *e) {
    memset(cfg, 0, sizeof *cfg);
    if (!name) name = "config.json";
    ctx c = {name, e};
    if (!json) return pt_fail(e, "%s: no data", name);
    if (memchr(json, '\0', len)) return pt_fail(e, "%s: contains a NUL byte", name);
    json_error_t je;
    json_t *r = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!r) {
        static const char dup[] = "duplicate object key near '\"";
        if (json_error_code(&je) == json_error_duplicate_key &&
            !strncmp(je.text, dup, sizeof dup - 1)) {
            char k[JSON_ERROR_TEXT_LENGTH], kp[JSON_ERROR_TEXT_LENGTH + 8];
            snprintf(k, sizeof k, "%s", je.text + sizeof dup - 1);
            char *q = strrchr(k, '"');
            if (q) *q = '\0';
            printable(kp, sizeof kp, k);
            return pt_fail(e, "%s: key '%s' appears twice (line %d)", name, kp, je.line);
        }
        char why[192];
        printable(why, sizeof why, je.text);
        return pt_fail(e, "%s: not valid JSON (line %d, column %d): %s", name, je.line, je.column,
                       why);
    }
    int rc = -1;
    if (!json_is_object(r)) {
        pt_fail(e, "%s: not a JSON object", name);
        goto out;
    }
    json_t *mt = json_object_get(r, "model_type");
    if (!mt) {
        pt_fail(e, "%s: missing 'model_type'", name);
        goto out;
    }
    if (!json_is_string(mt)) {
        pt_fail(e, "%s: 'model_type' must be a string", name);
        goto out;
    }
    static const struct {
        const char *name;
        pt_arch arch;
    } types[] = {
        {"gpt2", PT_ARCH_GPT2},          {"llama", PT_ARCH_LLAMA},    {"mistral", PT_ARCH_MISTRAL},
        {"qwen2", PT_ARCH_QWEN2},        {"qwen3", PT_ARCH_QWEN3},    {"gemma2", PT_ARCH_GEMMA2},
        {"gemma3_text", PT_ARCH_GEMMA3}, {"gemma3", PT_ARCH_GEMMA3},  {"olmo2", PT_ARCH_OLMO2},
        {"phi3", PT_ARCH_PHI3},          {"smollm3", PT_ARCH_SMOLLM3}};
    const char *t = json_string_value(mt);
    size_t k = 0;
    while (k < sizeof types / sizeof types[0] && strcmp(t, types[k].name)) k++;
    if (k == sizeof types / sizeof types[0]) {
        char tt[64];
        printable(tt, sizeof tt, t);
        pt_fail(e, "%s: model_type '%s' is not supported (%s)", name, tt, PT_MODEL_TYPES);
        goto out;
    }
    cfg->arch = types[k].arch;
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", t);
    json_t *body = r;
    if (!strcmp(t, "gemma3")) { /* the multimodal config: its text model only */
        body = json_object_get(r, "text_config");
        if (!body || !json_is_object(body)) {
            pt_fail(e, "%s: model_type 'gemma3' needs a 'text_config' object", name);
            goto out;
        }
        const char *keys[] = {"bos_token_id", "eos_token_id", "tie_word_embeddings"};
        for (size_t i = 0; i < 3; i++) /* the outer config's, where the text config has none */
            if (!json_object_get(body, keys[i]) && json_object_get(r, keys[i]))
                json_object_set(body, keys[i], json_object_get(r, keys[i]));
    }
    rc = cfg->arch == PT_ARCH_GPT2 ? parse_gpt2(&c, body, cfg) : parse_decoder(&c, body, cfg);
out:
    json_decref(r);
    if (rc != 0) {
        memset(cfg, 0, sizeof *cfg);
        return -1;
    }
    return 0;
}

int pt_config_load(const char *path, pt_config *cfg, pt_error *e) {
    memset(cfg, 0, sizeof *cfg);
    size_t len = 0;
    char *text = pt_read_file(path, PT_CONFIG_MAX_BYTES, &len, e);
    if (!text) return -1;
    int rc = pt_config_parse(text, len, path, cfg, e);
    free(text);
    return rc;
}
