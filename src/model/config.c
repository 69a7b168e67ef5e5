/* punctum — config.json parsing.
 *
 * Missing keys take the default of the corresponding Hugging Face transformers config class
 * (GPT2Config, LlamaConfig, MistralConfig, Qwen2Config), so a config loads as transformers
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
        return pt_fail(c->e, "%s: '%s' must be an integer%s", c->name, disp, null_ok ? " or null" : "");
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
        return pt_fail(c->e, "%s: '%s' must be between %lld and %lld (got %lld)", c->name, key, lo, hi,
                       v);
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
                return pt_fail(c->e, "%s: '%s' must be an integer, a list of integers, or null", c->name,
                               key);
        }
        id = json_array_size(v) ? (long long)json_integer_value(json_array_get(v, 0)) : -1;
    } else if (v) {
        return pt_fail(c->e, "%s: '%s' must be an integer, a list of integers, or null", c->name, key);
    }
    *out = (id >= 0 && id < vocab) ? (int)id : -1;
    return 0;
}

/* ---- rope ------------------------------------------------------------------------------------- */

static int parse_rope(const ctx *c, json_t *root, pt_config *cfg) {
    /* transformers: `rope_scaling or rope_parameters`; theta from the dict, else top level,
     * else 10000 */
    json_t *rs = json_object_get(root, "rope_scaling");
    json_t *rp = json_object_get(root, "rope_parameters");
    json_t *params = NULL;
    const char *pname = NULL;
    if (rs && !json_is_null(rs)) {
        if (!json_is_object(rs)) return pt_fail(c->e, "%s: 'rope_scaling' must be an object or null", c->name);
        if (json_object_size(rs) > 0) params = rs, pname = "rope_scaling";
    }
    if (!params && rp && !json_is_null(rp)) {
        if (!json_is_object(rp))
            return pt_fail(c->e, "%s: 'rope_parameters' must be an object or null", c->name);
        params = rp, pname = "rope_parameters";
    }
    json_t *empty = json_object();
    if (!params) params = empty, pname = "rope_parameters";

    char k[96];
    int rc = -1;
    const char *key;
    json_t *val;
    json_object_foreach(params, key, val) {
        if (json_is_object(val)) {
            char pk[64];
            printable(pk, sizeof pk, key);
            pt_fail(c->e, "%s: '%s' nested by layer type ('%s') is not supported", c->name, pname, pk);
            goto out;
        }
    }

    double theta = 10000.0;
    if (json_object_get(params, "rope_theta")) {
        snprintf(k, sizeof k, "%s.rope_theta", pname);
        if (get_num(c, params, "rope_theta", k, 10000.0, &theta)) goto out;
    } else if (get_num(c, root, "rope_theta", "rope_theta", 10000.0, &theta)) {
        goto out;
    }
    if (!(theta > 0)) {
        pt_fail(c->e, "%s: 'rope_theta' must be positive (got %g)", c->name, theta);
        goto out;
    }
    cfg->rope_theta = theta;

    /* partial rotary embeddings are refused: only 1.0 (or absent) is accepted */
    {
        json_t *src = json_object_get(params, "partial_rotary_factor") ? params : root;
        json_t *pv = json_object_get(src, "partial_rotary_factor");
        if (pv && !json_is_null(pv)) {
            if (!json_is_number(pv)) {
                pt_fail(c->e, "%s: 'partial_rotary_factor' must be a number", c->name);
                goto out;
            }
            if (json_number_value(pv) != 1.0) {
                pt_fail(c->e, "%s: 'partial_rotary_factor' %g is not supported (only 1.0)", c->name,
                        json_number_value(pv));
                goto out;
            }
        }
    }

    const char *type = "default";
    if (json_object_get(params, "rope_type")) {
        snprintf(k, sizeof k, "%s.rope_type", pname);
        if (get_str(c, params, "rope_type", k, "default", &type)) goto out;
    } else {
        snprintf(k, sizeof k, "%s.type", pname);
        if (get_str(c, params, "type", k, "default", &type)) goto out;
    }

    cfg->rope_factor = 1.0;
    cfg->rope_low_freq_factor = 0.0;
    cfg->rope_high_freq_factor = 0.0;
    cfg->rope_original_max_positions = 0;
    if (strcmp(type, "default") == 0) {
        cfg->rope = PT_ROPE_DEFAULT;
    } else if (strcmp(type, "linear") == 0 || strcmp(type, "llama3") == 0) {
        int llama3 = type[1] == 'l';
        cfg->rope = llama3 ? PT_ROPE_LLAMA3 : PT_ROPE_LINEAR;
        const char *need[] = {"factor", "low_freq_factor", "high_freq_factor"};
        double got[3] = {1.0, 0.0, 0.0};
        for (int i = 0; i < (llama3 ? 3 : 1); i++) {
            snprintf(k, sizeof k, "%s.%s", pname, need[i]);
            if (!json_object_get(params, need[i])) {
                pt_fail(c->e, "%s: '%s' is required for rope type '%s'", c->name, k, type);
                goto out;
            }
            if (get_num(c, params, need[i], k, 0.0, &got[i])) goto out;
            if (!(got[i] > 0)) {
                pt_fail(c->e, "%s: '%s' must be positive (got %g)", c->name, k, got[i]);
                goto out;
            }
        }
        cfg->rope_factor = got[0];
        if (llama3) {
            if (!(got[2] > got[1])) {
                pt_fail(c->e, "%s: '%s.high_freq_factor' (%g) must be greater than 'low_freq_factor' (%g)",
                        c->name, pname, got[2], got[1]);
                goto out;
            }
            cfg->rope_low_freq_factor = got[1];
            cfg->rope_high_freq_factor = got[2];
            /* absent: max_position_embeddings (transformers 5 ignores a top-level key here) */
            long long omp = 0;
            snprintf(k, sizeof k, "%s.original_max_position_embeddings", pname);
            if (get_int(c, params, "original_max_position_embeddings", k, cfg->max_positions, 0, &omp))
                goto out;
            if (omp < 1 || omp > PT_CFG_MAX_POSITIONS) {
                pt_fail(c->e, "%s: '%s' must be between 1 and %d (got %lld)", c->name, k,
                        PT_CFG_MAX_POSITIONS, omp);
                goto out;
            }
            cfg->rope_original_max_positions = (int)omp;
        }
    } else {
        char t[64];
        printable(t, sizeof t, type);
        pt_fail(c->e, "%s: rope type '%s' is not supported (default, linear, llama3)", c->name, t);
        goto out;
    }
    rc = 0;
out:
    json_decref(empty);
    return rc;
}

/* ---- per architecture ------------------------------------------------------------------------- */

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
    long long d_ff = 0;
    if (get_int(c, r, "n_inner", "n_inner", 4LL * cfg->d_model, 1, &d_ff)) return -1;
    if (d_ff < 1 || d_ff > M)
        return pt_fail(c->e, "%s: 'n_inner' must be between 1 and %d (got %lld)", c->name, M, d_ff);
    cfg->d_ff = (int)d_ff;
    if (cfg->d_model % cfg->n_heads != 0)
        return pt_fail(c->e, "%s: 'n_embd' (%d) is not divisible by 'n_head' (%d)", c->name, cfg->d_model,
                       cfg->n_heads);
    cfg->n_kv_heads = cfg->n_heads;
    cfg->head_dim = cfg->d_model / cfg->n_heads;
    if (get_num(c, r, "layer_norm_epsilon", "layer_norm_epsilon", 1e-5, &cfg->norm_eps)) return -1;
    if (!(cfg->norm_eps > 0))
        return pt_fail(c->e, "%s: 'layer_norm_epsilon' must be positive (got %g)", c->name, cfg->norm_eps);

    const char *act = "";
    if (get_str(c, r, "activation_function", "activation_function", "gelu_new", &act)) return -1;
    if (strcmp(act, "gelu_new") && strcmp(act, "gelu_pytorch_tanh") && strcmp(act, "gelu_fast")) {
        char a[64];
        printable(a, sizeof a, act);
        return pt_fail(c->e,
                       "%s: activation_function '%s' is not supported (gelu_new, gelu_pytorch_tanh, "
                       "gelu_fast)",
                       c->name, a);
    }
    int b = 0;
    if (get_bool(c, r, "scale_attn_weights", 1, &b)) return -1;
    if (!b) return pt_fail(c->e, "%s: 'scale_attn_weights' false is not supported", c->name);
    if (get_bool(c, r, "scale_attn_by_inverse_layer_idx", 0, &b)) return -1;
    if (b) return pt_fail(c->e, "%s: 'scale_attn_by_inverse_layer_idx' true is not supported", c->name);
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
    return 0;
}

typedef struct {
    long long vocab, hidden, inter, layers, heads, kv, maxpos, bos, eos;
} llama_defaults;

static int parse_llama_family(const ctx *c, json_t *r, pt_config *cfg) {
    static const llama_defaults D_LLAMA = {32000, 4096, 11008, 32, 32, -1, 2048, 1, 2};
    static const llama_defaults D_MISTRAL = {32000, 4096, 14336, 32, 32, 8, 4096 * 32, 1, 2};
    static const llama_defaults D_QWEN2 = {151936, 4096, 22016, 32, 32, 32, 32768, -1, -1};
    const llama_defaults *d = cfg->arch == PT_ARCH_LLAMA     ? &D_LLAMA
                              : cfg->arch == PT_ARCH_MISTRAL ? &D_MISTRAL
                                                             : &D_QWEN2;
    const int M = PT_CFG_MAX_SIZE - 1;
    if (get_range(c, r, "num_hidden_layers", d->layers, 0, 1, M, &cfg->n_layers) ||
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
        return pt_fail(c->e, "%s: 'num_key_value_heads' (%d) does not divide 'num_attention_heads' (%d)",
                       c->name, cfg->n_kv_heads, cfg->n_heads);
    long long hd = 0;
    json_t *hdj = json_object_get(r, "head_dim");
    int hd_given = hdj && !json_is_null(hdj);
    if (get_int(c, r, "head_dim", "head_dim", 0, 1, &hd)) return -1;
    if (!hd_given) {
        if (cfg->d_model % cfg->n_heads != 0)
            return pt_fail(c->e, "%s: 'hidden_size' (%d) is not divisible by 'num_attention_heads' (%d)",
                           c->name, cfg->d_model, cfg->n_heads);
        cfg->head_dim = cfg->d_model / cfg->n_heads;
    } else {
        if (hd < 1 || hd > M)
            return pt_fail(c->e, "%s: 'head_dim' must be between 1 and %d (got %lld)", c->name, M, hd);
        cfg->head_dim = (int)hd;
    }
    if (cfg->head_dim % 2 != 0)
        return pt_fail(c->e, "%s: head dimension %d must be even for rotary embeddings", c->name,
                       cfg->head_dim);
    if ((long long)cfg->n_heads * cfg->head_dim > M)
        return pt_fail(c->e, "%s: 'num_attention_heads' x head dimension (%d x %d) is too large", c->name,
                       cfg->n_heads, cfg->head_dim);

    if (get_num(c, r, "rms_norm_eps", "rms_norm_eps", 1e-6, &cfg->norm_eps)) return -1;
    if (!(cfg->norm_eps > 0))
        return pt_fail(c->e, "%s: 'rms_norm_eps' must be positive (got %g)", c->name, cfg->norm_eps);

    const char *act = "";
    if (get_str(c, r, "hidden_act", "hidden_act", "silu", &act)) return -1;
    if (strcmp(act, "silu") != 0) {
        char a[64];
        printable(a, sizeof a, act);
        return pt_fail(c->e, "%s: hidden_act '%s' is not supported (silu)", c->name, a);
    }
    if (get_bool(c, r, "tie_word_embeddings", 0, &cfg->tied_embeddings)) return -1;
    if (get_token_id(c, r, "bos_token_id", d->bos, cfg->vocab_size, &cfg->bos_token_id) ||
        get_token_id(c, r, "eos_token_id", d->eos, cfg->vocab_size, &cfg->eos_token_id))
        return -1;

    cfg->norm = PT_NORM_RMSNORM;
    cfg->mlp = PT_MLP_SWIGLU;
    cfg->learned_positions = 0;
    cfg->sliding_window = 0;
    if (cfg->arch == PT_ARCH_LLAMA) {
        int ab = 0, mb = 0;
        if (get_bool(c, r, "attention_bias", 0, &ab) || get_bool(c, r, "mlp_bias", 0, &mb)) return -1;
        cfg->qkv_bias = cfg->o_bias = ab;
        cfg->mlp_bias = mb;
    } else if (cfg->arch == PT_ARCH_MISTRAL) {
        cfg->qkv_bias = cfg->o_bias = cfg->mlp_bias = 0;
        if (get_range(c, r, "sliding_window", 4096, 1, 0, PT_CFG_MAX_POSITIONS, &cfg->sliding_window))
            return -1;
        json_t *sw = json_object_get(r, "sliding_window");
        if (sw && json_is_null(sw)) cfg->sliding_window = 0;
        else if (cfg->sliding_window < 1)
            return pt_fail(c->e, "%s: 'sliding_window' must be a positive integer or null (got %d)",
                           c->name, cfg->sliding_window);
    } else { /* qwen2 */
        cfg->qkv_bias = 1;
        cfg->o_bias = 0;
        cfg->mlp_bias = 0;
        int usw = 0;
        if (get_bool(c, r, "use_sliding_window", 0, &usw)) return -1;
        if (usw) return pt_fail(c->e, "%s: 'use_sliding_window' true is not supported", c->name);
        json_t *lt = json_object_get(r, "layer_types");
        if (lt && !json_is_null(lt)) {
            size_t i;
            json_t *x;
            if (!json_is_array(lt))
                return pt_fail(c->e, "%s: 'layer_types' must be a list of strings", c->name);
            if (json_array_size(lt) != (size_t)cfg->n_layers)
                return pt_fail(c->e, "%s: 'layer_types' has %zu entries but 'num_hidden_layers' is %d",
                               c->name, json_array_size(lt), cfg->n_layers);
            json_array_foreach(lt, i, x) {
                if (!json_is_string(x))
                    return pt_fail(c->e, "%s: 'layer_types' must be a list of strings", c->name);
                if (strcmp(json_string_value(x), "full_attention") != 0) {
                    char t[64];
                    printable(t, sizeof t, json_string_value(x));
                    return pt_fail(c->e, "%s: layer_types[%zu] '%s' is not supported (full_attention)",
                                   c->name, i, t);
                }
            }
        }
    }
    return parse_rope(c, r, cfg);
}

/* ---- entry points ----------------------------------------------------------------------------- */

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
        if (json_error_code(&je) == json_error_duplicate_key && !strncmp(je.text, dup, sizeof dup - 1)) {
            char k[JSON_ERROR_TEXT_LENGTH], kp[JSON_ERROR_TEXT_LENGTH + 8];
            snprintf(k, sizeof k, "%s", je.text + sizeof dup - 1);
            char *q = strrchr(k, '"');
            if (q) *q = '\0';
            printable(kp, sizeof kp, k);
            return pt_fail(e, "%s: key '%s' appears twice (line %d)", name, kp, je.line);
        }
        char why[192];
        printable(why, sizeof why, je.text);
        return pt_fail(e, "%s: not valid JSON (line %d, column %d): %s", name, je.line, je.column, why);
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
    const char *t = json_string_value(mt);
    if (strcmp(t, "gpt2") == 0) cfg->arch = PT_ARCH_GPT2;
    else if (strcmp(t, "llama") == 0) cfg->arch = PT_ARCH_LLAMA;
    else if (strcmp(t, "mistral") == 0) cfg->arch = PT_ARCH_MISTRAL;
    else if (strcmp(t, "qwen2") == 0) cfg->arch = PT_ARCH_QWEN2;
    else {
        char tt[64];
        printable(tt, sizeof tt, t);
        pt_fail(e, "%s: model_type '%s' is not supported (gpt2, llama, mistral, qwen2)", name, tt);
        goto out;
    }
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", t);
    rc = cfg->arch == PT_ARCH_GPT2 ? parse_gpt2(&c, r, cfg) : parse_llama_family(&c, r, cfg);
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
