/* punctum — model configuration (config.json), one struct for every supported architecture.
 * Architectures differ only by flags here; the forward pass is written once against them. */
#ifndef PUNCTUM_CONFIG_H
#define PUNCTUM_CONFIG_H

#include "punctum/common.h"

// clang-format off
typedef enum {
    PT_ARCH_GPT2 = 0, PT_ARCH_LLAMA, PT_ARCH_MISTRAL, PT_ARCH_QWEN2, PT_ARCH_QWEN3, PT_ARCH_GEMMA2,
    PT_ARCH_GEMMA3, PT_ARCH_OLMO2, PT_ARCH_PHI3, PT_ARCH_SMOLLM3
} pt_arch;
// clang-format on
typedef enum { PT_NORM_LAYERNORM = 0, PT_NORM_RMSNORM } pt_norm_kind;
/* gelu: h -> gelu_tanh(h); swiglu: [gate|up] -> silu(gate) * up; geglu: gelu_tanh(gate) * up */
typedef enum { PT_MLP_GELU_TANH = 0, PT_MLP_SWIGLU, PT_MLP_GEGLU } pt_mlp_kind;
typedef enum {
    PT_ROPE_NONE = 0,
    PT_ROPE_DEFAULT,
    PT_ROPE_LINEAR,
    PT_ROPE_LLAMA3,
    PT_ROPE_LONGROPE
} pt_rope_kind;
/* q/k norms before RoPE: none, per head (width head_dim: Qwen3, Gemma 3), over the whole q and k
 * projections (widths H*head_dim and KV*head_dim: OLMo 2) */
typedef enum { PT_QKNORM_NONE = 0, PT_QKNORM_HEAD, PT_QKNORM_PROJ } pt_qknorm_kind;

/* The families the engine reads (README, --help, error messages). */
#define PT_MODEL_TYPES                                                                             \
    "gpt2, llama, mistral, qwen2, qwen3, gemma2, gemma3_text, gemma3, olmo2, phi3, smollm3"

enum {
    PT_CFG_MAX_LAYERS = 1024,      /* per-layer kinds are kept in the config */
    PT_CFG_MAX_ROPE_FACTORS = 256, /* longrope short / long factors (rotary dims / 2) */
};
/* Per-layer flags (pt_config.layer_flags). */
enum {
    PT_LAYER_SLIDING = 1,    /* attention over the sliding window (sliding_window) */
    PT_LAYER_NO_ROPE = 2,    /* no positional encoding in this layer (SmolLM3) */
    PT_LAYER_LOCAL_ROPE = 4, /* the local RoPE table (Gemma 3's rope_local_base_freq) */
};

typedef struct {
    pt_arch arch;
    char model_type[16];   /* as written in config.json ("gemma3" for a gemma3 text_config) */

    int n_layers;          /* num_hidden_layers | n_layer */
    int d_model;           /* hidden_size | n_embd */
    int n_heads;           /* num_attention_heads | n_head */
    int n_kv_heads;        /* num_key_value_heads (default n_heads) */
    int head_dim;          /* head_dim where given, else d_model / n_heads */
    int d_ff;              /* intermediate_size | n_inner (gpt2 default 4*d_model) */
    int vocab_size;
    int max_positions;     /* max_position_embeddings | n_positions: longest prompt accepted */
    int bos_token_id;      /* -1 if absent */
    int eos_token_id;      /* -1 if absent (first one if a list) */

    pt_norm_kind norm;
    double norm_eps;       /* rms_norm_eps | layer_norm_epsilon */
    pt_mlp_kind mlp;
    int learned_positions; /* gpt2: wpe */
    int qkv_bias;          /* gpt2, qwen2: 1; llama/mistral: attention_bias */
    int o_bias;            /* gpt2: 1; llama: attention_bias */
    int mlp_bias;          /* gpt2: 1; llama: mlp_bias */
    int tied_embeddings;   /* tie_word_embeddings (gpt2 default 1, llama default 0 ... per HF defaults) */

    pt_rope_kind rope;
    double rope_theta;
    double rope_factor;              /* linear / llama3 */
    double rope_low_freq_factor;     /* llama3 */
    double rope_high_freq_factor;    /* llama3 */
    int rope_original_max_positions; /* llama3 */

    int sliding_window;    /* window of the layers flagged PT_LAYER_SLIDING; 0 = none */

    /* Norms: `pre_norms` before each sublayer (norm1, norm2; OLMo 2 has none), `post_norms` on
     * each sublayer's output before its residual add (Gemma, OLMo 2); RMSNorm weights applied as
     * (1 + w) when `norm_plus_one` (Gemma). q/k norms (q_norm, k_norm weights) per qk_norm. */
    int pre_norms, post_norms, norm_plus_one;
    pt_qknorm_kind qk_norm;
    double embed_scale;           /* embeddings x this (Gemma: sqrt(d_model)); 1 else */
    double attn_scale;            /* attention scores x this: query_pre_attn_scalar^-1/2 or
                                   * head_dim^-1/2 */
    double attn_softcap;          /* scores -> c tanh(s / c) (attn_logit_softcapping); 0 none */
    double final_softcap;         /* logits -> c tanh(z / c) (final_logit_softcapping); 0 none */
    int rotary_dim;               /* leading dims of each head that RoPE rotates (partial) */
    double rope_local_theta;      /* Gemma 3 local layers' base (rope_local_base_freq), or 0 */
    /* longrope (Phi-3): factors by rotary frequency; long ones when a sequence is longer than
     * rope_original_max_positions; cos and sin times rope_attn_factor */
    float rope_short[PT_CFG_MAX_ROPE_FACTORS], rope_long[PT_CFG_MAX_ROPE_FACTORS];
    double rope_attn_factor;
    unsigned char layer_flags[PT_CFG_MAX_LAYERS]; /* PT_LAYER_* of each layer */
} pt_config;

/* Rotated dims per head, attention score scale, embedding scale: the config's, with the plain
 * transformer's values where a hand-made config left them 0. */
static inline int pt_rotary_dim(const pt_config *c) {
    return c->rotary_dim > 0 ? c->rotary_dim : c->head_dim;
}
float pt_attn_scale(const pt_config *c);
static inline float pt_embed_scale(const pt_config *c) {
    return c->embed_scale > 0 ? (float)c->embed_scale : 1.0f;
}

/* Sliding window of layer l (0: global). */
static inline int pt_layer_window(const pt_config *c, int l) {
    return c->layer_flags[l] & PT_LAYER_SLIDING ? c->sliding_window : 0;
}
/* Does a sequence of `len` tokens rotate with longrope's long factors? (transformers: when the
 * longest position of the forward + 1 exceeds original_max_position_embeddings) */
static inline int pt_rope_long(const pt_config *c, int len) {
    return c->rope == PT_ROPE_LONGROPE && len > c->rope_original_max_positions;
}
/* Can a sequence of len_long tokens reuse the keys of its prefix of len_short (prefix sharing)?
 * Not when the two lengths choose different longrope factors. */
static inline int pt_rope_can_share(const pt_config *c, int len_short, int len_long) {
    return pt_rope_long(c, len_short) == pt_rope_long(c, len_long);
}

/* Parse and validate config.json. Every field is type-checked and range-checked
 * (positive sizes, heads dividing width where head_dim is absent, kv heads dividing heads,
 * supported model_type, supported rope_scaling type); errors name the file and the key. */
int pt_config_load(const char *path, pt_config *cfg, pt_error *e);
/* Same, from an in-memory JSON text (fuzzing, tests). `name` is used in messages. */
int pt_config_parse(const char *json, size_t len, const char *name, pt_config *cfg, pt_error *e);

#endif
