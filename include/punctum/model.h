/* punctum — a loaded model: config + weights, architecture differences expressed as flags.
 *
 * Weights stay in their checkpoint dtype (SPEC §1). The loader builds `pt_weights` as views on
 * the memory-mapped safetensors files: every matrix is a pointer into the mapping plus its
 * dtype (F32, F16 or BF16), in the layout the checkpoint stores it ([out, in], or [in, out] for
 * GPT-2's Conv1D: a flag, never a transposed copy). Projections the forward pass runs as one
 * (q|k|v, gate|up) are one pt_linear of up to PT_LINEAR_MAX_PARTS column blocks, each with its
 * own tensor: no fused copy exists on the host. Vectors (norm weights, biases, RoPE inverse
 * frequencies) are float32: the mapping itself when the file stores them as aligned F32, else a
 * small converted copy the model owns.
 *
 * A backend turns these host views into its own weights once (backend.h, load_weights): the
 * cpu backend computes from the views directly; the cuda backend uploads them (fusing parts and
 * converting to its compute dtype on the way) and keeps no host copy. The same structs then
 * describe the backend's weights, in its memory. */
#ifndef PUNCTUM_MODEL_H
#define PUNCTUM_MODEL_H

#include "punctum/config.h"
#include "punctum/safetensors.h"

/* A weight matrix: row-major elements of `dtype` (PT_DT_F32, PT_DT_F16 or PT_DT_BF16) at
 * `data` (host views: inside the mapping, any alignment; backend copies: the backend's memory).
 * data NULL: absent. */
typedef struct {
    const void *data;
    pt_dtype dtype;
} pt_tensor;

enum { PT_LINEAR_MAX_PARTS = 3 };

/* One column block of a projection: output columns col .. col+out-1 of y are x W^T (+ b), with
 * W stored [out, in], or [in, out] when `transposed` (GPT-2 Conv1D: the GEMM's transpose flag
 * is flipped instead of copying). */
typedef struct {
    pt_tensor w;
    const float *b; /* [out] float32, or NULL: no bias */
    int out;
    int transposed;
} pt_linear_part;

/* y[n, out] = x[n, in] W^T + b, W the row-wise concatenation of the parts (q|k|v: three parts,
 * gate|up: two, others one). out is the sum of the parts' out. */
typedef struct {
    int out, in;
    int n_parts;
    pt_linear_part part[PT_LINEAR_MAX_PARTS];
} pt_linear;

/* A one-part projection. */
static inline pt_linear pt_linear_one(pt_tensor w, const float *b, int out, int in,
                                      int transposed) {
    pt_linear l = {out, in, 1, {{w, b, out, transposed}}};
    return l;
}

typedef struct {
    const float *norm1_w, *norm1_b;   /* attention input norm (b NULL for RMSNorm; w NULL: none) */
    const float *norm2_w, *norm2_b;   /* MLP input norm */
    const float *post1_w, *post2_w;   /* norms of the attention / MLP output (cfg->post_norms) */
    const float *q_norm_w, *k_norm_w; /* q / k RMSNorm weights (cfg->qk_norm), else NULL */
    pt_linear qkv;                    /* [ (H + 2*KV) * head_dim, d ]: parts q, k, v (or one) */
    pt_linear o;                      /* [ d, H * head_dim ] */
    pt_linear up;                     /* swiglu: [2*d_ff, d], parts gate, up; gelu: [d_ff, d] */
    pt_linear down;                   /* [ d, d_ff ] */
} pt_layer_weights;

typedef struct {
    pt_tensor tok_emb;        /* [vocab, d] */
    pt_tensor pos_emb;        /* [max_positions, d] (learned positions), data NULL else */
    pt_layer_weights *layers; /* [n_layers] */
    const float *final_norm_w, *final_norm_b;
    pt_linear lm_head; /* [vocab, d]; its tensor is tok_emb when tied */
    /* RoPE inverse frequencies [rotary_dim / 2], scaling applied (NULL without RoPE): the global
     * table; longrope's long factors (rows of sequences beyond the pretraining length); Gemma 3's
     * local layers (rope_local_base_freq) */
    const float *rope_inv_freq, *rope_long_inv_freq, *rope_local_inv_freq;
} pt_weights;

typedef struct {
    char *dir;
    pt_config cfg;
    pt_weights host; /* views on the mapping (see above) */
    pt_st_set files; /* the mapped safetensors files */
    float **owned;   /* float32 vectors this model converted */
    size_t n_owned, cap_owned;
    pt_dtype weight_dtype; /* dtype of the projection matrices (the start-up line) */
    size_t file_bytes;     /* sum of the safetensors files' sizes */
} pt_model;

/* Load DIR/config.json and the safetensors weights, validate every tensor's presence, dtype
 * and shape against the config, and build the weight views. Errors name file and tensor.
 * Returns 0; 2 when config.json is invalid or describes a model the engine does not implement
 * (a usage error: exit 2); -1 on any other failure. */
int pt_model_load(const char *dir, pt_model *m, pt_error *e);
void pt_model_free(pt_model *m);

/* RoPE inverse frequencies exactly as Hugging Face computes them (float32), with linear /
 * llama3 / longrope (short factors) scaling applied. out has rotary_dim/2 entries. */
void pt_rope_inv_freq(const pt_config *cfg, float *out);
/* The same for one table: PT_ROPE_GLOBAL (as above), PT_ROPE_LONG (longrope's long factors),
 * PT_ROPE_LOCAL (Gemma 3's local layers: rope_local_theta, no scaling). */
enum { PT_ROPE_GLOBAL = 0, PT_ROPE_LONG, PT_ROPE_LOCAL };
void pt_rope_inv_freq_table(const pt_config *cfg, int table, float *out);

/* `--model` (SPEC §4): an existing directory is used as is; an argument shaped like a Hugging
 * Face model id (`org/name`) that is not a directory is looked up in the local Hugging Face
 * cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub): the snapshot named
 * by models--org--name/refs/main. Nothing is downloaded. Returns a newly allocated directory,
 * or NULL with e naming every place it looked. */
char *pt_model_resolve(const char *arg, pt_error *e);

/* Bytes of one row of elements of a weight dtype (F32 4, F16/BF16 2). */
static inline size_t pt_tensor_esize(pt_dtype dt) {
    return dt == PT_DT_F32 ? 4 : 2;
}

/* Element i of a weight tensor as float32 (any alignment). */
float pt_tensor_get(const pt_tensor *t, size_t i);

/* dst[k] = float32 of elements src[i0 + k*stride] for k < n (any alignment): the conversion
 * every backend uses when it reads weights. */
void pt_tensor_to_f32(const pt_tensor *t, size_t i0, size_t stride, size_t n, float *dst);

#endif
