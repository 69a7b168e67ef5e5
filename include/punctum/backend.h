/* punctum — the backend interface. The forward pass (engine/forward.c) is written once against
 * these operations; `cpu` (the reference) and `cuda` implement them.
 *
 * Conventions:
 * - Activations live in the backend's memory ("device") as opaque row-major buffers of three
 *   kinds: the residual stream (resid_bytes: embed's output, add's target, row_norms /
 *   gather_rows / resid_to_host inputs); float32 rows where precision needs them, on every
 *   backend, all written by linear: the fused q|k|v rows (the q/k norms, rope_store_kv and
 *   the attention's queries read them: the scores that exp() amplifies come from them), the
 *   MLP's gate|up rows (mlp_act's input: silu(gate) * up multiplies two of them) and a
 *   sublayer's output before its norm (rms_norm's rows, add's input: Gemma, OLMo 2) — rounding
 *   q|k|v or gate|up to bf16 moves the tiny test models' attention statistics beyond SPEC §6's
 *   2e-2 of the cpu reference (measured: 0.023 with bf16 gate|up, 0.016 without);
 *   act_bytes (act_dtype) for the other activations, the inputs of every projection (normed
 *   rows, the attention output, the MLP activation's output: the cuda backend writes them in its
 *   compute dtype, so its GEMMs read them as they are); kv_bytes (kv_dtype) for the key/value
 *   cache (the cuda backend's tensor-core attention: its f16 / bf16 operand type). The cpu
 *   backend uses float32 throughout; callers must not assume it. The host reads activations
 *   only through operations that produce float32 (row_norms, resid_to_host, linear).
 * - Statistics outputs (attention mass / last / pattern, residual norms) and logits /
 *   log-probabilities are float32 device buffers.
 * - Index arrays (token ids, positions, row lists, segments) are passed as HOST pointers; a
 *   device backend copies what it needs.
 * - Outputs documented as "host" are written to host memory when the call returns (after
 *   `defer_results`: at the next `sync`).
 * - All operations are ordered; `sync` waits for everything issued so far.
 *
 * Errors: operations do not return them. The first failure (out of memory included) is kept in
 * the backend's status (sticky: later failures do not overwrite it), every later operation is a
 * no-op, and the caller checks pt_backend_failed / pt_backend_take_error at well-defined points
 * (after a forward, after a batch). `alloc` returns NULL when out of memory (and records it).
 * Scratch the operations need is set up by `reserve` before a batch, so that running out of
 * memory shows up there, not inside an operation, and the hot loop allocates nothing. */
#ifndef PUNCTUM_BACKEND_H
#define PUNCTUM_BACKEND_H

#include "punctum/model.h"

/* One run of consecutive query rows of one sequence (or one variant of it) in a packed batch.
 * It attends to keys 0 .. pos0-1 read from the layer's key/value cache at rows prefix_kv ..
 * prefix_kv+pos0-1 (an earlier or shared run), and to its own keys, positions pos0 ..
 * pos0+q_off+n_q-1 at rows own_kv ... Its queries are the last n_q of its own key span:
 * positions pos0+q_off .. pos0+q_off+n_q-1. q_off = 0 for a prompt run (every own key is one
 * of its queries); q_off > 0 for a decode step, whose earlier own keys (the prompt's rows of a
 * variant, generated tokens) are already in the cache. */
typedef struct {
    int row;          /* first query row in the batch's activations */
    int n_q;          /* number of query rows */
    int pos0;         /* position of the first own key = number of prefix keys */
    int prefix_kv;    /* cache row of key position 0 (ignored when pos0 == 0) */
    int own_kv;       /* cache row of key position pos0 */
    int q_off;        /* own keys before the first query (0: the queries start at pos0) */
    int ko_pos;       /* knocked-out key position (-1: none) ... */
    int ko_lo, ko_hi; /* ... in layers ko_lo <= l < ko_hi, for queries i > ko_pos */
    /* Statistics outputs, rows of [rows, n_layers, n_heads] arrays (-1: not wanted):
     * mass_row + j   receives += sum over this run's queries i of A[i, j], for j < pos0 +
     *                q_off + n_q;
     * last_row + j   receives A[final, j] when the run contains the final position final_pos;
     * pattern_row + i*(i+1)/2 + j  receives A[i, j] for this run's queries i. */
    int64_t mass_row, last_row, pattern_row;
    int final_pos; /* T-1 of the sequence, -1 if unknown */
} pt_segment;

typedef struct {
    int layer;
    const void *q; /* activations [n_rows, q_stride]: head h at columns h*head_dim ... */
    int q_stride;
    const void *k_cache;    /* this layer's keys  [cache rows, kv_dim] (kv_bytes elements) */
    const void *v_cache;    /* this layer's values [cache rows, kv_dim] */
    void *out;              /* activations [n_rows, n_heads*head_dim] */
    const pt_segment *segs; /* host */
    int n_segs;
    float *mass, *last, *pattern; /* device, [rows, n_layers, n_heads]; NULL: not wanted */
    int n_layers, n_heads, n_kv_heads, head_dim;
    int window; /* this layer's sliding window (key j visible from i iff i - j < window); 0: none */
    float scale;   /* scores s = scale * q.k (pt_attn_scale: head_dim^-1/2 or
                      query_pre_attn_scalar^-1/2) */
    float softcap; /* > 0: s -> softcap * tanh(s / softcap) before the mask (Gemma 2); 0: none */
} pt_attn_args;

typedef enum { PT_DTYPE_F32 = 0, PT_DTYPE_BF16, PT_DTYPE_F16 } pt_compute_dtype;

static inline const char *pt_compute_dtype_name(pt_compute_dtype t) {
    return t == PT_DTYPE_F32 ? "f32" : t == PT_DTYPE_BF16 ? "bf16" : "f16";
}

/* RoPE of one layer's rows (rope_store_kv): row r at position pos[r] (host), with the table
 * inv_freq (backend memory, pt_rotary_dim / 2 entries), or alt_freq where alt_rows[r] is set
 * (host; either NULL: none): longrope's long factors for the rows of long sequences. */
typedef struct {
    const float *inv_freq;
    const int32_t *pos;
    const float *alt_freq;
    const uint8_t *alt_rows;
} pt_rope_args;

/* The largest work the next batches will give the operations (see reserve). */
typedef struct {
    int rows;                   /* activation rows of one forward */
    int kv_rows;                /* key/value cache rows */
    int max_keys;               /* longest sequence (keys one query can see, positions + 1) */
    int logit_rows;             /* rows of log_softmax / divergence / pick / logits at once */
    int topk;                   /* K of log_softmax */
    const float *rope_inv_freq; /* the backend weights' tables RoPE will be called with ... */
    const float *rope_long_inv_freq, *rope_local_inv_freq; /* ... (NULL: none) */
} pt_reserve;

/* The first failure since the status was last taken (see "Errors" above). */
typedef struct {
    int failed;
    int out_of_memory; /* the failure was an allocation */
    size_t bytes;      /* ... of this many bytes */
    char msg[400];     /* one line, no "punctum:" prefix */
} pt_backend_status;

typedef struct pt_backend pt_backend;
struct pt_backend {
    const char *name;      /* "cpu", "cuda" */
    char device_name[128]; /* e.g. CPU model or GPU name */
    char description[192]; /* for the start-up line, e.g. "2 threads, AMD EPYC" */
    pt_compute_dtype dtype;
    size_t resid_bytes, act_bytes, kv_bytes; /* element sizes of the activation buffers */
    pt_compute_dtype act_dtype;              /* element type of the other activations (act_bytes) */
    pt_compute_dtype kv_dtype;               /* element type of the key/value cache (kv_bytes) */
    pt_backend_status status;
    size_t mem_peak; /* device backends: most bytes held in device memory at once */
    void *ctx;

    void (*destroy)(pt_backend *be);
    /* Make the backend's weights from host views (model.h): the cpu backend uses the views;
     * the cuda backend uploads them (fused, converted to its compute dtype) and keeps no host
     * copy. Returns -1 with e set on failure (out of memory: also in the status). */
    int (*load_weights)(pt_backend *be, const pt_config *cfg, const pt_weights *host,
                        pt_weights *dev, pt_error *e);
    void (*free_weights)(pt_backend *be, const pt_config *cfg, pt_weights *dev);
    /* Set up the scratch for work up to r (grows, never shrinks). -1 on failure (status set). */
    int (*reserve)(pt_backend *be, const pt_config *cfg, const pt_reserve *r);
    /* Free what reserve set up (after out of memory: the next reserve makes it again, smaller). */
    void (*release_scratch)(pt_backend *be);
    /* Bytes the backend could still allocate (device: free memory; cpu: available host
     * memory), for sizing --batch-tokens. */
    size_t (*mem_available)(pt_backend *be);

    void *(*alloc)(pt_backend *be, size_t bytes); /* NULL when out of memory (status set) */
    void (*free)(pt_backend *be, void *p);
    void (*to_device)(pt_backend *be, void *dst, const void *src, size_t bytes);
    void (*to_host)(pt_backend *be, void *dst, const void *src, size_t bytes);
    void (*copy)(pt_backend *be, void *dst, const void *src, size_t bytes);
    void (*fill)(pt_backend *be, float *dst, float value, size_t n);
    void (*sync)(pt_backend *be);
    /* The host outputs of the vocabulary operations that follow (log_softmax, divergence, pick)
     * may be written only at the next `sync`, which a device backend then fetches in one copy
     * and one wait instead of one each (a decode step's top-1 and divergences). The caller
     * reads them after that sync. The cpu backend writes them at once. */
    void (*defer_results)(pt_backend *be);

    /* x[r] = tok_emb[ids[r]] * pt_embed_scale(cfg) (+ pos_emb[pos[r]]) into the residual stream. */
    void (*embed)(pt_backend *be, const pt_config *cfg, const pt_weights *w, const int32_t *ids,
                  const int32_t *pos, int n, void *x);
    /* LayerNorm or RMSNorm of residual rows of width d_model into activations (bias NULL for
     * RMSNorm; RMSNorm scales by (1 + w) when cfg->norm_plus_one); weight and bias are float32
     * vectors in the backend's memory. weight NULL: no norm, the rows are copied into the
     * activations as they are (OLMo 2 has no norm before its sublayers). */
    void (*norm)(pt_backend *be, const pt_config *cfg, const void *x, int n, const float *weight,
                 const float *bias, void *y);
    /* y[n, out] = x[n, in] W^T + b: activations in, float32 rows out (the LM head's logits, the
     * fused q|k|v rows, the MLP's gate|up rows, a sublayer's output before its norm). */
    void (*linear)(pt_backend *be, const void *x, int n, const pt_linear *lin, float *y);
    /* resid[n, out] += x[n, in] W^T + b: a projection whose output goes straight into the
     * residual stream (the attention output and down projections when no norm follows them),
     * the add done by the GEMM itself (beta = 1) instead of a pass of its own. */
    void (*linear_add)(pt_backend *be, const void *x, int n, const pt_linear *lin, void *resid);
    /* In place on float32 rows x[r * row_stride + col0 + g * width + i], i < width, for the
     * `groups` groups of each of the n rows: RMSNorm over each group, times the float32 weight
     * [width] shared by the groups ((1 + w) when cfg->norm_plus_one), eps cfg->norm_eps. The q/k
     * norms (per head: groups = heads, width = head_dim; OLMo 2: one group over the whole
     * projection) and the norms after a sublayer (Gemma, OLMo 2: one group of d_model). */
    void (*rms_norm)(pt_backend *be, const pt_config *cfg, void *x, int n, int row_stride, int col0,
                     int groups, int width, const float *weight);
    /* RoPE and the key/value store of one layer, in one pass over the fused q|k|v rows
     * (float32, n rows). With rope (NULL: no RoPE, e.g. GPT-2 or PT_LAYER_NO_ROPE layers), row
     * r is rotated at position rope->pos[r]: rotate-half over the first pt_rotary_dim(cfg) dims
     * of each head (the rest pass through), with cos and sin of the float32 angle pos[r] * f[i]
     * (f: rope->inv_freq, or rope->alt_freq where rope->alt_rows[r]) evaluated in double,
     * rounded to float32, times cfg->rope_attn_factor when it is set. The q heads are rotated in
     * place in qkv (the attention's queries); the rotated k heads go straight into cache row
     * kv_rows[r] of k_cache, and the v part into the same row of v_cache, in the cache's element
     * type be->kv_dtype: the float32 (rotated) value rounded once, to nearest. The k and v parts of
     * qkv are left as they were (unrotated). Host arrays: kv_rows, rope->pos, rope->alt_rows. */
    void (*rope_store_kv)(pt_backend *be, const pt_config *cfg, void *qkv, int n,
                          const pt_rope_args *rope, void *k_cache, void *v_cache,
                          const int32_t *kv_rows);
    /* Causal (windowed, knocked-out) softmax attention with statistics; see pt_attn_args. */
    void (*attention)(pt_backend *be, const pt_attn_args *a);
    /* swiglu: h[n, 2*d_ff] = [gate|up] (float32 rows) -> out[n, d_ff] = silu(gate) * up
     * (activations); geglu: the same with gelu (tanh approximation) for silu; gelu: out =
     * gelu_tanh(h[n, d_ff]). */
    void (*mlp_act)(pt_backend *be, const pt_config *cfg, const void *h, int n, void *out);
    /* Residual stream x += float32 rows y (n elements): a sublayer's normed output. */
    void (*add)(pt_backend *be, void *x, const void *y, size_t n);
    /* out[r * out_stride] = ||x[r]||_2 for residual rows of width d (out: float32, device). */
    void (*row_norms)(pt_backend *be, const void *x, int n, int d, float *out, size_t out_stride);
    /* The stat `massive` (SPEC §3) of residual rows of width d, each output at r * out_stride
     * (device; max_abs and median float32, argmax int32): max_abs = the largest |x[r, i]|,
     * argmax = its i (ties: the lowest i), median = the median of |x[r, :]| (even d: the mean
     * of the two middle values, rounded once to float32). Exact selections, ordered by the bits
     * of |x| (a NaN counts as the largest): both backends give identical values. */
    void (*row_abs_stats)(pt_backend *be, const void *x, int n, int d, float *max_abs,
                          int32_t *argmax, float *median, size_t out_stride);
    /* dst[i] = src[rows[i]] for residual rows of width d (rows: host). */
    void (*gather_rows)(pt_backend *be, const void *src, const int32_t *rows, int m, int d,
                        void *dst);
    /* n residual-stream elements at src as float32 into host dst. */
    void (*resid_to_host)(pt_backend *be, float *dst, const void *src, size_t n);
    /* In place on float32 x[n]: x = cap * tanh(x / cap) (final-logit soft-capping). */
    void (*softcap)(pt_backend *be, float *x, size_t n, float cap);
    /* In place: logits[m, V] -> log-softmax. Host outputs (any may be NULL): entropy[m];
     * top-k ids/log-probs [m, K], ties broken by lower id. Sums in float64. */
    void (*log_softmax)(pt_backend *be, float *logits, int m, int V, double *entropy, int K,
                        int32_t *topk_id, float *topk_logp);
    /* For r < m: P = logp_p + i*stride_p with i = rows_p[r] (rows_p NULL: i = r; stride 0
     * broadcasts one row), Q likewise: kl_pq[r] = KL(P||Q), kl_qp[r] = KL(Q||P), js[r] =
     * Jensen-Shannon (host, NULL to skip; rows_p / rows_q host). One call serves every pair of a
     * batch or every lane of a decode step: on a GPU each call is a launch and, unless
     * deferred (defer_results), a wait. */
    void (*divergence)(pt_backend *be, const float *logp_p, size_t stride_p, const int32_t *rows_p,
                       const float *logp_q, size_t stride_q, const int32_t *rows_q, int m, int V,
                       double *kl_pq, double *kl_qp, double *js);
    /* out[r] = logp[r*V + ids[r]] (host out; ids host; id < 0 gives NaN). */
    void (*pick)(pt_backend *be, const float *logp, int m, int V, const int32_t *ids, float *out);
};

/* Record a failure in be->status unless one is already there (first failure wins). */
void pt_backend_fail(pt_backend *be, int out_of_memory, size_t bytes, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int pt_backend_failed(const pt_backend *be) {
    return be->status.failed;
}
/* 0 when nothing failed; else -1 with e set to the message, *st (may be NULL) to the status,
 * and the status cleared (the backend is usable again). */
int pt_backend_take_error(pt_backend *be, pt_error *e, pt_backend_status *st);
/* An allocation of `bytes` the backend should refuse (the test-only limit, common.h), recorded
 * as out of memory in the status. */
int pt_backend_refuse_alloc(pt_backend *be, size_t bytes, const char *what);

/* Operations start with this: after a failure they do nothing. */
#define PT_BE_GUARD(be)                                                                            \
    do {                                                                                           \
        if ((be)->status.failed) return;                                                           \
    } while (0)

pt_backend *pt_backend_cpu_create(int n_threads, pt_error *e);
/* The OpenBLAS kernel set the cpu backend's GEMMs run on (its name, e.g. "SkylakeX"), and the
 * name of a faster set this CPU supports, or NULL when the loaded one is as good. OpenBLAS picks
 * its set from the CPU's model number when it loads and falls back to SSE3 ("Prescott") on
 * models newer than itself; OPENBLAS_CORETYPE (read at load time only) overrides it. */
const char *pt_blas_kernels(void);
const char *pt_blas_better_kernels(void);
/* For a program's main(), first thing: where pt_blas_better_kernels names a set, start the
 * program again (execv of /proc/self/exe with argv) with OPENBLAS_CORETYPE set to it. Once only
 * (the variable is then set), never against the user's own OPENBLAS_CORETYPE, and not under
 * valgrind, whose CPU lacks AVX-512 and which would not follow the exec. Returns when nothing is
 * to be done or the exec failed (the loaded kernels are kept). */
void pt_blas_restart_with_better_kernels(char **argv);
/* NULL with e set when the build has no CUDA backend or no GPU is usable. */
pt_backend *pt_backend_cuda_create(int device, pt_compute_dtype dtype, pt_error *e);
/* 1 when device 0 is a usable CUDA GPU; else 0 and *why (may be NULL) says why not. */
int pt_backend_cuda_available(const char **why);

#endif
