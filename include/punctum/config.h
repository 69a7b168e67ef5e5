/* punctum — model configuration (config.json), one struct for every supported architecture.
 * Architectures differ only by flags here; the forward pass is written once against them. */
#ifndef PUNCTUM_CONFIG_H
#define PUNCTUM_CONFIG_H

#include "punctum/common.h"

typedef enum { PT_ARCH_GPT2 = 0, PT_ARCH_LLAMA, PT_ARCH_MISTRAL, PT_ARCH_QWEN2 } pt_arch;
typedef enum { PT_NORM_LAYERNORM = 0, PT_NORM_RMSNORM } pt_norm_kind;
typedef enum { PT_MLP_GELU_TANH = 0, PT_MLP_SWIGLU } pt_mlp_kind;
typedef enum { PT_ROPE_NONE = 0, PT_ROPE_DEFAULT, PT_ROPE_LINEAR, PT_ROPE_LLAMA3 } pt_rope_kind;

typedef struct {
    pt_arch arch;
    char model_type[16];   /* as written in config.json: "gpt2", "llama", "mistral", "qwen2" */

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

    int sliding_window;    /* mistral: 0 = none (qwen2 use_sliding_window is refused) */
} pt_config;

/* Parse and validate config.json. Every field is type-checked and range-checked
 * (positive sizes, heads dividing width where head_dim is absent, kv heads dividing heads,
 * supported model_type, supported rope_scaling type); errors name the file and the key. */
int pt_config_load(const char *path, pt_config *cfg, pt_error *e);
/* Same, from an in-memory JSON text (fuzzing, tests). `name` is used in messages. */
int pt_config_parse(const char *json, size_t len, const char *name, pt_config *cfg, pt_error *e);

#endif
