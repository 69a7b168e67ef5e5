/* punctum — the forward pass, written once against the backend interface.
 *
 * One call runs layers start_layer .. L-1 over a packed batch of query rows, grouped into
 * segments (backend.h). A clean sequence is one segment starting at layer 0; a prefix-shared
 * extension, a knockout variant or a patching variant is a segment whose first query sits at
 * pos0 > 0 and that reads keys 0 .. pos0-1 from another segment's key/value cache rows. */
#ifndef PUNCTUM_FORWARD_H
#define PUNCTUM_FORWARD_H

#include "punctum/backend.h"

/* Where forward time goes (PUNCTUM_PROFILE=1 prints it when the engine is freed). */
typedef enum {
    PT_PROF_EMBED, PT_PROF_NORM, PT_PROF_GEMM, PT_PROF_ROPE, PT_PROF_ATTN, PT_PROF_MLP_ACT,
    PT_PROF_RESID, PT_PROF_CAPTURE, PT_PROF_HEAD, PT_PROF_N
} pt_prof_kind;

typedef struct {
    pt_backend *be;
    const pt_config *cfg;
    pt_weights w;            /* the backend's weights */
    int profile;
    double prof_s[PT_PROF_N];
    double gemm_flops;

    /* activation buffers (device), sized for `cap_rows` rows */
    int cap_rows;
    float *x, *h, *qkv, *attn, *ff_in, *ff_act, *tmp;
    /* key/value cache (device): per layer [cap_kv, kv_dim]; when keep_all_layers is 0 every
     * layer shares one buffer (a plain sweep needs only the current layer's keys) */
    int cap_kv;
    int kv_all_layers;
    float **k_cache, **v_cache;
    /* final-row scratch */
    int cap_final;
    float *final_x, *final_h;
} pt_engine;

typedef struct {
    int n_rows;
    const int32_t *ids;     /* host [n_rows] token ids (used when start_layer == 0) */
    const int32_t *pos;     /* host [n_rows] positions */
    int start_layer;        /* first layer to run */
    const float *x_in;      /* device [n_rows, d]: residual entering start_layer; NULL: embed
                             * the tokens (start_layer must then be 0) */
    pt_segment *segs;       /* host; own_kv / prefix_kv are cache rows */
    int n_segs;
    const int32_t *kv_rows; /* host [n_rows]: cache row receiving each row's key and value */

    float *mass, *last, *pattern;  /* device statistics outputs (see pt_segment), or NULL */
    float *resid_norm;      /* device [n_rows, L+1] or NULL */
    float *resid_all;       /* device [L+1, n_rows, d]: residual entering each layer, or NULL */

    const int32_t *tap_rows;/* host [n_tap]: rows whose residual is captured at every layer */
    int n_tap;
    float *tap_resid;       /* device [L+1, n_tap, d] or NULL */

    const int32_t *final_rows; /* host [n_final]: rows decoded to next-token logits */
    int n_final;
    float *logits;          /* device [n_final, vocab] */
} pt_fwd;

/* Allocate an engine over a backend and its loaded weights. */
int pt_engine_init(pt_engine *en, pt_backend *be, const pt_config *cfg, const pt_weights *dev_w,
                   pt_error *e);
void pt_engine_free(pt_engine *en);
/* Make room for n_rows activations and n_kv cache rows (all layers kept if kv_all_layers).
 * Returns -1 (e set) when the backend is out of memory. */
int pt_engine_reserve(pt_engine *en, int n_rows, int n_kv, int kv_all_layers, int n_final,
                      pt_error *e);
/* Run the forward described by f. */
void pt_forward(pt_engine *en, pt_fwd *f);
/* Decode residual rows through the final norm and the LM head: x [m, d] -> logits [m, V]. */
void pt_decode(pt_engine *en, const float *x, int m, float *logits);

#endif
