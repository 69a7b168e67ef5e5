/* punctum — the forward pass, written once against the backend interface.
 *
 * One call runs layers start_layer .. L-1 over a packed batch of query rows, grouped into
 * segments (backend.h). A clean sequence is one segment starting at layer 0; a prefix-shared
 * extension, a knockout variant or a patching variant is a segment whose first query sits at
 * pos0 > 0 and that reads keys 0 .. pos0-1 from another segment's key/value cache rows.
 *
 * Activation buffers are opaque (backend.h): the engine sizes them with the backend's element
 * sizes and never reads them on the host. Failures (out of memory included) are the backend's
 * status: pt_engine_reserve, pt_forward and pt_decode return -1 when it is set, and the caller
 * takes it with pt_backend_take_error. */
#ifndef PUNCTUM_FORWARD_H
#define PUNCTUM_FORWARD_H

#include "punctum/backend.h"

/* Where forward time goes (PUNCTUM_PROFILE=1 prints it when the engine is freed). */
// clang-format off
typedef enum {
    PT_PROF_EMBED, PT_PROF_NORM, PT_PROF_GEMM, PT_PROF_ROPE, PT_PROF_ATTN, PT_PROF_MLP_ACT,
    PT_PROF_RESID, PT_PROF_CAPTURE, PT_PROF_HEAD, PT_PROF_N
} pt_prof_kind;
// clang-format on

/* What pt_engine_reserve makes room for. */
typedef struct {
    int rows;          /* activation rows of one forward */
    int kv_rows;       /* key/value cache rows */
    int kv_all_layers; /* keep every layer's cache (experiments reuse them); else one shared */
    int final_rows;    /* rows decoded at once by pt_decode (and compared by the vocabulary ops) */
    int max_keys;      /* longest sequence */
    int topk;          /* K of the log-softmax top-k */
} pt_engine_size;

typedef struct {
    pt_backend *be;
    const pt_config *cfg;
    pt_weights w; /* the backend's weights */
    int profile;
    double prof_s[PT_PROF_N];
    double gemm_flops;

    pt_engine_size cap; /* what is reserved */
    /* activations (device), cap.rows rows: x is the residual stream (be->resid_bytes), qkv,
     * ff_in and tmp float32 (backend.h: linear_f32's outputs), the others be->act_bytes elements */
    void *x, *h, *qkv, *attn, *ff_in, *ff_act, *tmp;
    /* key/value cache (device): per layer [cap.kv_rows, kv_dim]; unless cap.kv_all_layers every
     * layer shares one buffer (a plain sweep needs only the current layer's keys) */
    void **k_cache, **v_cache;
    /* final rows: residual (final_x) and normed (final_h), cap.final_rows rows */
    void *final_x, *final_h;
    /* host, cap.rows: rows rotated with longrope's long factors in the current forward */
    uint8_t *rope_long_rows;
} pt_engine;

typedef struct {
    int n_rows;
    const int32_t *ids; /* host [n_rows] token ids (used when start_layer == 0) */
    const int32_t *pos; /* host [n_rows] positions */
    int start_layer;    /* first layer to run */
    const void *x_in;   /* device residual rows [n_rows, d] entering start_layer; NULL:
                         * embed the tokens (start_layer must then be 0) */
    pt_segment *segs;   /* host; own_kv / prefix_kv are cache rows */
    int n_segs;
    const int32_t *kv_rows; /* host [n_rows]: cache row receiving each row's key and value */

    float *mass, *last, *pattern; /* device statistics outputs (see pt_segment), or NULL */
    float *resid_norm;            /* device [n_rows, L+1] or NULL */
    /* stat massive (backend row_abs_stats): device [n_rows, L+1] each, or resid_max NULL */
    float *resid_max, *resid_median;
    int32_t *resid_argmax;
    void *resid_all; /* device residual rows [L+1, n_rows, d] entering each layer, or NULL */

    const int32_t *tap_rows; /* host [n_tap]: rows whose residual is captured at every layer */
    int n_tap;
    void *tap_resid; /* device residual rows [L+1, n_tap, d] or NULL */

    const int32_t *final_rows; /* host [n_final]: rows decoded to next-token logits */
    int n_final;
    float *logits; /* device [n_final, vocab] */
} pt_fwd;

/* An engine over a backend and its loaded weights (nothing allocated yet). */
int pt_engine_init(pt_engine *en, pt_backend *be, const pt_config *cfg, const pt_weights *dev_w,
                   pt_error *e);
void pt_engine_free(pt_engine *en);
/* Make room for the work described by sz (buffers and the backend's scratch; grows, keeps what
 * is big enough). -1 when the backend ran out of memory (its status says how much). */
int pt_engine_reserve(pt_engine *en, const pt_engine_size *sz);
/* Drop every buffer and the backend's scratch (pt_engine_reserve makes them again): after an
 * out-of-memory failure. */
void pt_engine_release(pt_engine *en);
/* Device bytes pt_engine_reserve needs per activation row (cache rows counted alongside) and
 * per final row: for sizing --batch-tokens. */
size_t pt_engine_row_bytes(const pt_backend *be, const pt_config *cfg, int kv_all_layers);
size_t pt_engine_final_row_bytes(const pt_backend *be, const pt_config *cfg);
/* Run the forward described by f; -1 if the backend failed. */
int pt_forward(pt_engine *en, pt_fwd *f);
/* Decode residual rows through the final norm and the LM head: x [m, d] -> logits [m, V];
 * -1 if the backend failed. */
int pt_decode(pt_engine *en, const void *x, int m, float *logits);

#endif
