/* punctum — the backend interface. The forward pass (engine/forward.c) is written once
 * against these operations; `cpu` (the reference) and `cuda` implement them.
 *
 * Conventions:
 * - Activations are float32 row-major [rows, width] in the backend's memory ("device").
 * - Index arrays (token ids, positions, row lists, segments) are passed as HOST pointers; a
 *   device backend copies what it needs.
 * - Outputs documented as "host" are written to host memory when the call returns.
 * - All operations are ordered; `sync` waits for everything issued so far. */
#ifndef PUNCTUM_BACKEND_H
#define PUNCTUM_BACKEND_H

#include "punctum/model.h"

/* One run of consecutive query rows of one sequence (or one variant of it) in a packed batch.
 * Its queries are positions pos0 .. pos0+n_q-1; it attends to keys 0 .. pos0-1 read from the
 * layer's key/value cache at rows prefix_kv .. prefix_kv+pos0-1 (an earlier or shared run),
 * and to its own keys at rows own_kv .. own_kv+n_q-1. */
typedef struct {
    int row;          /* first query row in the batch's activations */
    int n_q;          /* number of query rows */
    int pos0;         /* position of the first query = number of prefix keys */
    int prefix_kv;    /* cache row of key position 0 (ignored when pos0 == 0) */
    int own_kv;       /* cache row of key position pos0 */
    int ko_pos;       /* knocked-out key position (-1: none) ... */
    int ko_lo, ko_hi; /* ... in layers ko_lo <= l < ko_hi, for queries i > ko_pos */
    /* Statistics outputs, rows of [rows, n_layers, n_heads] arrays (-1: not wanted):
     * mass_row + j   receives += sum over this run's queries i of A[i, j], for j < pos0 + n_q;
     * last_row + j   receives A[final, j] when the run contains the final position final_pos;
     * pattern_row + i*(i+1)/2 + j  receives A[i, j] for this run's queries i. */
    int64_t mass_row, last_row, pattern_row;
    int final_pos;    /* T-1 of the sequence, -1 if unknown */
} pt_segment;

typedef struct {
    int layer;
    const float *q;         /* [n_rows, q_stride]: head h at columns h*head_dim ... */
    int q_stride;
    const float *k_cache;   /* this layer's keys  [cache rows, kv_dim] */
    const float *v_cache;   /* this layer's values [cache rows, kv_dim] */
    float *out;             /* [n_rows, n_heads*head_dim] */
    const pt_segment *segs; /* host */
    int n_segs;
    float *mass, *last, *pattern; /* device, [rows, n_layers, n_heads]; NULL: not wanted */
    int n_layers, n_heads, n_kv_heads, head_dim;
    int window;             /* sliding window (key j visible from i iff i - j < window); 0: none */
} pt_attn_args;

typedef enum { PT_DTYPE_F32 = 0, PT_DTYPE_BF16, PT_DTYPE_F16 } pt_compute_dtype;

typedef struct pt_backend pt_backend;
struct pt_backend {
    const char *name;            /* "cpu", "cuda" */
    char device_name[128];       /* e.g. CPU model or GPU name */
    pt_compute_dtype dtype;
    void *ctx;

    void (*destroy)(pt_backend *be);
    /* Make the backend's copy of the weights (converted to its compute dtype). */
    int (*load_weights)(pt_backend *be, const pt_config *cfg, const pt_weights *host,
                        pt_weights *dev, pt_error *e);
    void (*free_weights)(pt_backend *be, const pt_config *cfg, pt_weights *dev);

    void *(*alloc)(pt_backend *be, size_t bytes); /* NULL when out of memory */
    void (*free)(pt_backend *be, void *p);
    void (*to_device)(pt_backend *be, void *dst, const void *src, size_t bytes);
    void (*to_host)(pt_backend *be, void *dst, const void *src, size_t bytes);
    void (*copy)(pt_backend *be, void *dst, const void *src, size_t bytes);
    void (*fill)(pt_backend *be, float *dst, float value, size_t n);
    void (*sync)(pt_backend *be);

    /* x[r] = tok_emb[ids[r]] (+ pos_emb[pos[r]]). */
    void (*embed)(pt_backend *be, const pt_config *cfg, const pt_weights *w, const int32_t *ids,
                  const int32_t *pos, int n, float *x);
    /* LayerNorm or RMSNorm over rows of width d_model (weight, bias NULL for RMSNorm). */
    void (*norm)(pt_backend *be, const pt_config *cfg, const float *x, int n, const void *weight,
                 const void *bias, float *y);
    /* y[n, out] = x[n, in] W^T + b. */
    void (*linear)(pt_backend *be, const float *x, int n, const pt_linear *lin, float *y);
    /* Rotate q and k heads of fused qkv rows in place (rotate-half), row r at position pos[r]. */
    void (*rope)(pt_backend *be, const pt_config *cfg, const float *inv_freq, float *qkv, int n,
                 const int32_t *pos);
    /* Copy the k and v parts of fused qkv row r into cache row kv_rows[r] (host). */
    void (*store_kv)(pt_backend *be, const pt_config *cfg, const float *qkv, int n, float *k_cache,
                     float *v_cache, const int32_t *kv_rows);
    /* Causal (windowed, knocked-out) softmax attention with statistics; see pt_attn_args. */
    void (*attention)(pt_backend *be, const pt_attn_args *a);
    /* swiglu: h[n, 2*d_ff] = [gate|up] -> out[n, d_ff] = silu(gate) * up; gelu: tanh approx. */
    void (*mlp_act)(pt_backend *be, const pt_config *cfg, const float *h, int n, float *out);
    /* x += y (n floats). */
    void (*add)(pt_backend *be, float *x, const float *y, size_t n);
    /* out[r * out_stride] = ||x[r]||_2 for rows of width d. */
    void (*row_norms)(pt_backend *be, const float *x, int n, int d, float *out, size_t out_stride);
    /* dst[i] = src[rows[i]] for rows of width d (rows: host). */
    void (*gather_rows)(pt_backend *be, const float *src, const int32_t *rows, int m, int d,
                        float *dst);
    /* In place: logits[m, V] -> log-softmax. Host outputs (any may be NULL): entropy[m];
     * top-k ids/log-probs [m, K], ties broken by lower id. Sums in float64. */
    void (*log_softmax)(pt_backend *be, float *logits, int m, int V, double *entropy, int K,
                        int32_t *topk_id, float *topk_logp);
    /* For r < m: P = logp_p + r*stride_p (stride 0 broadcasts one row), Q likewise:
     * kl_pq[r] = KL(P||Q), kl_qp[r] = KL(Q||P), js[r] = Jensen-Shannon (host, NULL to skip). */
    void (*divergence)(pt_backend *be, const float *logp_p, size_t stride_p, const float *logp_q,
                       size_t stride_q, int m, int V, double *kl_pq, double *kl_qp, double *js);
    /* out[r] = logp[r*V + ids[r]] (host out; ids host; id < 0 gives NaN). */
    void (*pick)(pt_backend *be, const float *logp, int m, int V, const int32_t *ids, float *out);
};

pt_backend *pt_backend_cpu_create(int n_threads, pt_error *e);
/* NULL with e set when the build has no CUDA backend or no GPU is usable. */
pt_backend *pt_backend_cuda_create(int device, pt_compute_dtype dtype, pt_error *e);
int pt_backend_cuda_available(void);

#endif
