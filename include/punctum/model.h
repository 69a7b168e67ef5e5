/* punctum — a loaded model: config + weights, architecture differences expressed as flags.
 *
 * Weights are held per backend: the loader produces host float32 weights in one canonical
 * layout (every linear is [out, in] row-major, q/k/v fused into one [q|k|v] projection,
 * SwiGLU gate and up fused into one [gate|up] projection), and a backend converts them once
 * into its own memory and compute dtype (backend.h, load_weights). */
#ifndef PUNCTUM_MODEL_H
#define PUNCTUM_MODEL_H

#include "punctum/config.h"
#include "punctum/safetensors.h"

/* y = x W^T + b for W [out, in]. `w` and `b` are in the owning backend's memory. */
typedef struct {
    const void *w;
    const void *b; /* NULL: no bias */
    int out, in;
} pt_linear;

typedef struct {
    const void *norm1_w, *norm1_b; /* attention input norm (b NULL for RMSNorm) */
    const void *norm2_w, *norm2_b; /* MLP input norm */
    pt_linear qkv;                 /* [ (H + 2*KV) * head_dim, d ] */
    pt_linear o;                   /* [ d, H * head_dim ] */
    pt_linear up;                  /* swiglu: [2*d_ff, d] = [gate; up]; gelu: [d_ff, d] */
    pt_linear down;                /* [ d, d_ff ] */
} pt_layer_weights;

typedef struct {
    const void *tok_emb;           /* [vocab, d] */
    const void *pos_emb;           /* [max_positions, d] (learned positions) or NULL */
    pt_layer_weights *layers;      /* [n_layers] */
    const void *final_norm_w, *final_norm_b;
    pt_linear lm_head;             /* [vocab, d]; aliases tok_emb when tied */
    const float *rope_inv_freq;    /* [head_dim / 2], scaling applied; NULL without RoPE */
} pt_weights;

typedef struct {
    char *dir;
    pt_config cfg;
    pt_weights host;               /* host float32 weights (see above) */
    pt_st_set files;               /* the mapped safetensors files */
    void **owned;                  /* host buffers this model allocated */
    size_t n_owned;
} pt_model;

/* Load DIR/config.json and the safetensors weights, validate every tensor's presence, dtype
 * and shape against the config, and build host float32 weights. Errors name file and tensor. */
int pt_model_load(const char *dir, pt_model *m, pt_error *e);
void pt_model_free(pt_model *m);

/* RoPE inverse frequencies exactly as Hugging Face computes them (float32), with linear /
 * llama3 scaling applied. out has head_dim/2 entries. */
void pt_rope_inv_freq(const pt_config *cfg, float *out);

#endif
