/* punctum — the `cuda` backend: every operation of pt_backend (include/punctum/backend.h) with
 * the semantics of the CPU reference (src/backend/cpu.c).
 *
 * - GEMMs: cuBLASLt (bias fused as an epilogue; plans cached per shape and alignment), with
 *   cublasGemmEx + a bias kernel as the fallback (PUNCTUM_CUDA_GEMM=cublas forces it). Float32
 *   accumulation always; for bf16/f16 the weights are converted once in load_weights and the
 *   float32 activations are rounded to the compute dtype right before each GEMM.
 * - Weights in backend memory: matrices (token / position embeddings, every linear's weight,
 *   the LM head) in the compute dtype; vectors (norm weights and biases, linear biases, RoPE
 *   inverse frequencies) in float32.
 * - Own kernels for everything else: elementwise.cuh, attention.cuh, vocab.cuh.
 * - Index arrays arrive as host pointers and are copied into persistent device staging buffers
 *   (grown geometrically, never allocated per call). Everything runs in order on one stream;
 *   calls with host outputs synchronise it.
 *
 * The same source is compiled by nvcc for `punctum` and, through tests/emu/cuda_emu.h, as host
 * C++ for `punctum-emu` (PT_CUDA_EMU). Kernel launches go through PT_LAUNCH only. */
#include "pt_cuda.h"

#include "attention.cuh"
#include "elementwise.cuh"
#include "vocab.cuh"

extern "C" {
#include "punctum/backend.h"
}

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ----------------------------------------------------------------------------------- */

/* Errors inside an operation cannot be returned through the interface: they are fatal, with a
 * one-line message (a bug or a lost device, not bad input). */
static void cu_fatal_err(const char *what, const char *msg) {
    fprintf(stderr, "punctum: cuda backend: %s: %s\n", what, msg);
    exit(1);
}
static void cu_check(cudaError_t e, const char *what) {
    if (e != cudaSuccess) cu_fatal_err(what, cudaGetErrorString(e));
}
static void blas_check(cublasStatus_t s, const char *what) {
    if (s != CUBLAS_STATUS_SUCCESS) cu_fatal_err(what, cublasGetStatusString(s));
}
#define CU(call) cu_check((call), #call)
/* after every launch: a bad configuration shows up here, at the launch that caused it */
#define CU_LAUNCHED(name) cu_check(cudaGetLastError(), "launch of " name)

/* ---- context ---------------------------------------------------------------------------------- */

struct cu_buf {
    void *p;
    size_t cap;
};

struct cu_plan { /* a cached cuBLASLt matmul */
    int used, ok;
    int out, in, n, bias, align;
    unsigned long long stamp;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
};
enum { CU_PLANS = 64, CU_IDX_SLOTS = 3 };

struct cu_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    void *lt_ws;
    size_t lt_ws_bytes;
    int use_lt, use_mma, mma_bf16;
    cu_buf idx[CU_IDX_SLOTS]; /* staged host index arrays */
    cu_buf act;               /* activations in the compute dtype */
    cu_buf lse;               /* attention log-sum-exp per (row, head) */
    cu_buf attn;              /* attention segments + work items */
    cu_buf res;               /* small results headed for the host */
    cu_buf wstage;            /* float32 staging for weight conversion */
    void *h_attn, *h_res;     /* host scratch */
    size_t h_attn_cap, h_res_cap;
    void **wallocs;           /* weight allocations, freed by free_weights */
    size_t n_wallocs, cap_wallocs;
    cu_plan plans[CU_PLANS];
    unsigned long long stamp;
};

static cu_ctx *ctx_of(pt_backend *be) { return (cu_ctx *)be->ctx; }

static size_t esize(pt_compute_dtype t) { return t == PT_DTYPE_F32 ? 4 : 2; }
static cudaDataType cuda_type(pt_compute_dtype t) {
    return t == PT_DTYPE_F32 ? CUDA_R_32F : t == PT_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}

/* Grow a device buffer to at least `bytes` (contents not kept). */
static void *cu_ensure(cu_ctx *c, cu_buf *b, size_t bytes, const char *what) {
    if (bytes <= b->cap && b->p) return b->p;
    size_t want = bytes + bytes / 4 + 256;
    if (b->p) {
        CU(cudaStreamSynchronize(c->stream)); /* work in flight may still read it */
        CU(cudaFree(b->p));
        b->p = NULL;
        b->cap = 0;
    }
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, want);
    if (e != cudaSuccess) {
        char msg[160];
        snprintf(msg, sizeof msg, "out of GPU memory growing the %s buffer to %zu bytes", what, want);
        cu_fatal_err("allocation", msg);
    }
    b->p = p;
    b->cap = want;
    return p;
}

static void *host_scratch(void **p, size_t *cap, size_t bytes) {
    if (bytes > *cap) {
        *p = pt_xrealloc(*p, bytes);
        *cap = bytes;
    }
    return *p;
}

/* Copy n host int32 values into staging slot `slot`; returns the device copy. */
static const int32_t *stage_idx(cu_ctx *c, int slot, const int32_t *host, size_t n) {
    int32_t *d = (int32_t *)cu_ensure(c, &c->idx[slot], n * sizeof(int32_t) + 4, "index");
    if (n) CU(cudaMemcpyAsync(d, host, n * sizeof(int32_t), cudaMemcpyHostToDevice, c->stream));
    return d;
}

static unsigned grid_for(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    if (b > 65535u * 8u) b = 65535u * 8u;
    return b ? (unsigned)b : 1u;
}

/* ---- memory ----------------------------------------------------------------------------------- */

static void *cuda_alloc(pt_backend *be, size_t bytes) {
    (void)be;
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 64) != cudaSuccess) {
        (void)cudaGetLastError(); /* clear: out of memory is reported by returning NULL */
        return NULL;
    }
    return p;
}
static void cuda_free(pt_backend *be, void *p) {
    (void)be;
    if (p) CU(cudaFree(p));
}
static void cuda_to_device(pt_backend *be, void *dst, const void *src, size_t bytes) {
    cu_ctx *c = ctx_of(be);
    if (bytes) CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
}
static void cuda_to_host(pt_backend *be, void *dst, const void *src, size_t bytes) {
    cu_ctx *c = ctx_of(be);
    if (bytes) CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CU(cudaStreamSynchronize(c->stream));
}
static void cuda_copy(pt_backend *be, void *dst, const void *src, size_t bytes) {
    cu_ctx *c = ctx_of(be);
    if (bytes) CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
}
static void cuda_fill(pt_backend *be, float *dst, float v, size_t n) {
    cu_ctx *c = ctx_of(be);
    if (!n) return;
    PT_LAUNCH(k_fill, grid_for(n, 256), 256, c->stream, dst, v, n);
    CU_LAUNCHED("k_fill");
}
static void cuda_sync(pt_backend *be) { CU(cudaStreamSynchronize(ctx_of(be)->stream)); }

/* ---- weights ---------------------------------------------------------------------------------- */

static void track(cu_ctx *c, void *p) {
    if (c->n_wallocs == c->cap_wallocs) {
        c->cap_wallocs = c->cap_wallocs ? 2 * c->cap_wallocs : 64;
        c->wallocs = (void **)pt_xrealloc(c->wallocs, c->cap_wallocs * sizeof(void *));
    }
    c->wallocs[c->n_wallocs++] = p;
}

/* Upload n host floats as float32 (vectors). NULL in, NULL out; *oom set on failure. */
static const void *up_f32(cu_ctx *c, const float *host, size_t n, int *oom) {
    if (!host || *oom) return NULL;
    void *p = NULL;
    if (cudaMalloc(&p, n * sizeof(float) + 16) != cudaSuccess) {
        (void)cudaGetLastError();
        *oom = 1;
        return NULL;
    }
    track(c, p);
    CU(cudaMemcpyAsync(p, host, n * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    return p;
}

/* Upload n host floats converted to the compute dtype (matrices). */
static const void *up_mat(pt_backend *be, const float *host, size_t n, int *oom) {
    cu_ctx *c = ctx_of(be);
    if (!host || *oom) return NULL;
    if (be->dtype == PT_DTYPE_F32) return up_f32(c, host, n, oom);
    void *p = NULL;
    if (cudaMalloc(&p, n * esize(be->dtype) + 16) != cudaSuccess) {
        (void)cudaGetLastError();
        *oom = 1;
        return NULL;
    }
    track(c, p);
    const size_t chunk = (size_t)8 << 20; /* floats per conversion step: 32 MB of staging */
    float *st = (float *)cu_ensure(c, &c->wstage, (n < chunk ? n : chunk) * sizeof(float), "weight staging");
    for (size_t off = 0; off < n; off += chunk) {
        const size_t k = n - off < chunk ? n - off : chunk;
        CU(cudaMemcpyAsync(st, host + off, k * sizeof(float), cudaMemcpyHostToDevice, c->stream));
        if (be->dtype == PT_DTYPE_BF16) {
            __nv_bfloat16 *dst = (__nv_bfloat16 *)p + off;
            PT_LAUNCH(k_convert<__nv_bfloat16>, grid_for(k, 256), 256, c->stream, dst, (const float *)st, k);
        } else {
            __half *dst = (__half *)p + off;
            PT_LAUNCH(k_convert<__half>, grid_for(k, 256), 256, c->stream, dst, (const float *)st, k);
        }
        CU_LAUNCHED("k_convert");
    }
    return p;
}

static pt_linear up_linear(pt_backend *be, const pt_linear *h, int *oom) {
    pt_linear d;
    d.out = h->out;
    d.in = h->in;
    d.w = up_mat(be, (const float *)h->w, (size_t)h->out * h->in, oom);
    d.b = up_f32(ctx_of(be), (const float *)h->b, (size_t)h->out, oom);
    return d;
}

static void cuda_free_weights(pt_backend *be, const pt_config *cfg, pt_weights *dev) {
    (void)cfg;
    cu_ctx *c = ctx_of(be);
    CU(cudaStreamSynchronize(c->stream));
    for (size_t i = 0; i < c->n_wallocs; i++) CU(cudaFree(c->wallocs[i]));
    c->n_wallocs = 0;
    free(dev->layers);
    memset(dev, 0, sizeof *dev);
}

static int cuda_load_weights(pt_backend *be, const pt_config *cfg, const pt_weights *host,
                             pt_weights *dev, pt_error *e) {
    cu_ctx *c = ctx_of(be);
    memset(dev, 0, sizeof *dev);
    if (cfg->head_dim > 256 || cfg->head_dim < 1)
        return pt_fail(e, "cuda backend: head_dim %d is not supported (at most 256)", cfg->head_dim);
    if (cfg->head_dim / 2 > 256)
        return pt_fail(e, "cuda backend: head_dim %d is not supported", cfg->head_dim);
    const size_t d = (size_t)cfg->d_model, V = (size_t)cfg->vocab_size;
    int oom = 0;
    dev->tok_emb = up_mat(be, (const float *)host->tok_emb, V * d, &oom);
    dev->pos_emb = up_mat(be, (const float *)host->pos_emb, (size_t)cfg->max_positions * d, &oom);
    pt_layer_weights *L = (pt_layer_weights *)pt_xcalloc((size_t)cfg->n_layers, sizeof *L);
    dev->layers = L;
    for (int l = 0; l < cfg->n_layers && !oom; l++) {
        const pt_layer_weights *hl = &host->layers[l];
        L[l].norm1_w = up_f32(c, (const float *)hl->norm1_w, d, &oom);
        L[l].norm1_b = up_f32(c, (const float *)hl->norm1_b, d, &oom);
        L[l].norm2_w = up_f32(c, (const float *)hl->norm2_w, d, &oom);
        L[l].norm2_b = up_f32(c, (const float *)hl->norm2_b, d, &oom);
        L[l].qkv = up_linear(be, &hl->qkv, &oom);
        L[l].o = up_linear(be, &hl->o, &oom);
        L[l].up = up_linear(be, &hl->up, &oom);
        L[l].down = up_linear(be, &hl->down, &oom);
    }
    dev->final_norm_w = up_f32(c, (const float *)host->final_norm_w, d, &oom);
    dev->final_norm_b = up_f32(c, (const float *)host->final_norm_b, d, &oom);
    if (host->lm_head.w == host->tok_emb) { /* tied */
        dev->lm_head.out = host->lm_head.out;
        dev->lm_head.in = host->lm_head.in;
        dev->lm_head.w = dev->tok_emb;
        dev->lm_head.b = up_f32(c, (const float *)host->lm_head.b, (size_t)host->lm_head.out, &oom);
    } else {
        dev->lm_head = up_linear(be, &host->lm_head, &oom);
    }
    if (host->rope_inv_freq)
        dev->rope_inv_freq = (const float *)up_f32(c, host->rope_inv_freq, (size_t)cfg->head_dim / 2, &oom);
    CU(cudaStreamSynchronize(c->stream));
    if (c->wstage.p) { /* the conversion staging is not needed any more */
        CU(cudaFree(c->wstage.p));
        c->wstage.p = NULL;
        c->wstage.cap = 0;
    }
    if (oom) {
        cuda_free_weights(be, cfg, dev);
        return pt_fail(e, "cuda backend: out of GPU memory loading the weights");
    }
    return 0;
}

/* ---- embedding, norms, RoPE, cache, activations --------------------------------------------- */

static void cuda_embed(pt_backend *be, const pt_config *cfg, const pt_weights *w, const int32_t *ids,
                       const int32_t *pos, int n, float *x) {
    cu_ctx *c = ctx_of(be);
    if (n <= 0) return;
    const int32_t *di = stage_idx(c, 0, ids, (size_t)n);
    const int32_t *dp = w->pos_emb ? stage_idx(c, 1, pos, (size_t)n) : NULL;
    const int d = cfg->d_model;
    switch (be->dtype) {
    case PT_DTYPE_F32:
        PT_LAUNCH(k_embed<float>, n, 128, c->stream, x, (const float *)w->tok_emb,
                  (const float *)w->pos_emb, di, dp, d);
        break;
    case PT_DTYPE_BF16:
        PT_LAUNCH(k_embed<__nv_bfloat16>, n, 128, c->stream, x, (const __nv_bfloat16 *)w->tok_emb,
                  (const __nv_bfloat16 *)w->pos_emb, di, dp, d);
        break;
    default:
        PT_LAUNCH(k_embed<__half>, n, 128, c->stream, x, (const __half *)w->tok_emb,
                  (const __half *)w->pos_emb, di, dp, d);
        break;
    }
    CU_LAUNCHED("k_embed");
}

static void cuda_norm(pt_backend *be, const pt_config *cfg, const float *x, int n, const void *weight,
                      const void *bias, float *y) {
    cu_ctx *c = ctx_of(be);
    if (n <= 0) return;
    const int rms = cfg->norm == PT_NORM_RMSNORM;
    PT_LAUNCH(k_norm, n, 256, c->stream, x, y, (const float *)weight, (const float *)bias,
              cfg->d_model, cfg->norm_eps, rms);
    CU_LAUNCHED("k_norm");
}

static void cuda_rope(pt_backend *be, const pt_config *cfg, const float *inv_freq, float *qkv, int n,
                      const int32_t *pos) {
    cu_ctx *c = ctx_of(be);
    if (n <= 0) return;
    const int32_t *dp = stage_idx(c, 0, pos, (size_t)n);
    const int hd = cfg->head_dim;
    const int stride = (cfg->n_heads + 2 * cfg->n_kv_heads) * hd;
    PT_LAUNCH(k_rope, n, 128, c->stream, qkv, inv_freq, dp, hd / 2, cfg->n_heads + cfg->n_kv_heads, stride);
    CU_LAUNCHED("k_rope");
}

static void cuda_store_kv(pt_backend *be, const pt_config *cfg, const float *qkv, int n, float *k_cache,
                          float *v_cache, const int32_t *kv_rows) {
    cu_ctx *c = ctx_of(be);
    if (n <= 0) return;
    const int32_t *dr = stage_idx(c, 0, kv_rows, (size_t)n);
    const int hd = cfg->head_dim;
    PT_LAUNCH(k_store_kv, n, 128, c->stream, qkv, k_cache, v_cache, dr, cfg->n_heads * hd,
              cfg->n_kv_heads * hd);
    CU_LAUNCHED("k_store_kv");
}

static void cuda_mlp_act(pt_backend *be, const pt_config *cfg, const float *h, int n, float *out) {
    cu_ctx *c = ctx_of(be);
    if (n <= 0) return;
    const size_t total = (size_t)n * cfg->d_ff;
    if (cfg->mlp == PT_MLP_SWIGLU)
        PT_LAUNCH(k_swiglu, grid_for(total, 256), 256, c->stream, h, out, n, cfg->d_ff);
    else
        PT_LAUNCH(k_gelu_tanh, grid_for(total, 256), 256, c->stream, h, out, total);
    CU_LAUNCHED("mlp activation");
}

static void cuda_add(pt_backend *be, float *x, const float *y, size_t n) {
    cu_ctx *c = ctx_of(be);
    if (!n) return;
    PT_LAUNCH(k_add, grid_for(n, 256), 256, c->stream, x, y, n);
    CU_LAUNCHED("k_add");
}

static void cuda_row_norms(pt_backend *be, const float *x, int n, int d, float *out, size_t out_stride) {
    cu_ctx *c = ctx_of(be);
    if (n <= 0) return;
    PT_LAUNCH(k_row_norms, n, 256, c->stream, x, d, out, out_stride);
    CU_LAUNCHED("k_row_norms");
}

static void cuda_gather_rows(pt_backend *be, const float *src, const int32_t *rows, int m, int d,
                             float *dst) {
    cu_ctx *c = ctx_of(be);
    if (m <= 0) return;
    const int32_t *dr = stage_idx(c, 2, rows, (size_t)m);
    PT_LAUNCH(k_gather_rows, m, 128, c->stream, src, dr, d, dst);
    CU_LAUNCHED("k_gather_rows");
}

/* ---- linear ----------------------------------------------------------------------------------- */

static int ptr_align(const void *p) {
    uintptr_t u = (uintptr_t)p;
    int a = 256;
    while (a > 1 && (u % (uintptr_t)a)) a >>= 1;
    return a;
}

static void plan_destroy(cu_plan *p) {
    if (!p->used) return;
    cublasLtMatrixLayoutDestroy(p->la);
    cublasLtMatrixLayoutDestroy(p->lb);
    cublasLtMatrixLayoutDestroy(p->lc);
    cublasLtMatmulDescDestroy(p->desc);
    memset(p, 0, sizeof *p);
}

/* The cached cuBLASLt plan for y[n, out] = x[n, in] W^T (+ b), or NULL if cuBLASLt has no
 * algorithm for it. In column-major terms: D[out, n] = op(A) B with A = W stored [in, out]
 * (transposed), B = x stored [in, n], D = y stored [out, n]. */
static cu_plan *lt_plan(pt_backend *be, int out, int in, int n, int bias, int align) {
    cu_ctx *c = ctx_of(be);
    cu_plan *victim = &c->plans[0];
    for (int i = 0; i < CU_PLANS; i++) {
        cu_plan *p = &c->plans[i];
        if (p->used && p->out == out && p->in == in && p->n == n && p->bias == bias && p->align == align) {
            p->stamp = ++c->stamp;
            return p->ok ? p : NULL;
        }
        if (!p->used || (victim->used && p->stamp < victim->stamp)) victim = p;
    }
    cu_plan *p = victim;
    plan_destroy(p);
    p->used = 1;
    p->out = out, p->in = in, p->n = n, p->bias = bias, p->align = align;
    p->stamp = ++c->stamp;
    const cudaDataType t = cuda_type(be->dtype);
    blas_check(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const int32_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    blas_check(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "TRANSA");
    blas_check(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "TRANSB");
    if (bias) {
        const uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
        const int32_t bt = CUDA_R_32F;
        blas_check(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi), "EPILOGUE");
        blas_check(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt), "BIAS_DATA_TYPE");
    }
    blas_check(cublasLtMatrixLayoutCreate(&p->la, t, (uint64_t)in, (uint64_t)out, in), "layout A");
    blas_check(cublasLtMatrixLayoutCreate(&p->lb, t, (uint64_t)in, (uint64_t)n, in), "layout B");
    blas_check(cublasLtMatrixLayoutCreate(&p->lc, CUDA_R_32F, (uint64_t)out, (uint64_t)n, out), "layout C");
    cublasLtMatmulPreference_t pref;
    blas_check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    const uint64_t ws = c->lt_ws_bytes;
    const uint32_t al = (uint32_t)align;
    blas_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws), "MAX_WORKSPACE");
    const cublasLtMatmulPreferenceAttributes_t al_attrs[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (size_t i = 0; i < sizeof al_attrs / sizeof al_attrs[0]; i++)
        blas_check(cublasLtMatmulPreferenceSetAttribute(pref, al_attrs[i], &al, sizeof al), "MIN_ALIGNMENT");
    cublasLtMatmulHeuristicResult_t res;
    int got = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &got);
    cublasLtMatmulPreferenceDestroy(pref);
    p->ok = st == CUBLAS_STATUS_SUCCESS && got > 0 && res.state == CUBLAS_STATUS_SUCCESS;
    if (p->ok) p->algo = res.algo;
    return p->ok ? p : NULL;
}

static void cuda_linear(pt_backend *be, const float *x, int n, const pt_linear *lin, float *y) {
    cu_ctx *c = ctx_of(be);
    if (n <= 0) return;
    const void *xin = x;
    const cudaDataType t = cuda_type(be->dtype);
    const size_t nx = (size_t)n * lin->in;
    if (be->dtype == PT_DTYPE_BF16) {
        __nv_bfloat16 *a = (__nv_bfloat16 *)cu_ensure(c, &c->act, nx * 2, "activation");
        PT_LAUNCH(k_convert<__nv_bfloat16>, grid_for(nx, 256), 256, c->stream, a, x, nx);
        CU_LAUNCHED("k_convert");
        xin = a;
    } else if (be->dtype == PT_DTYPE_F16) {
        __half *a = (__half *)cu_ensure(c, &c->act, nx * 2, "activation");
        PT_LAUNCH(k_convert<__half>, grid_for(nx, 256), 256, c->stream, a, x, nx);
        CU_LAUNCHED("k_convert");
        xin = a;
    }
    const float one = 1.0f, zero = 0.0f;
    if (c->use_lt) {
        int align = ptr_align(xin);
        const int aw = ptr_align(lin->w), ay = ptr_align(y), ab = lin->b ? ptr_align(lin->b) : 256;
        align = align < aw ? align : aw;
        align = align < ay ? align : ay;
        align = align < ab ? align : ab;
        cu_plan *p = lt_plan(be, lin->out, lin->in, n, lin->b != NULL, align);
        if (p) {
            if (lin->b)
                blas_check(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &lin->b,
                                                          sizeof lin->b), "BIAS_POINTER");
            blas_check(cublasLtMatmul(c->lt, p->desc, &one, lin->w, p->la, xin, p->lb, &zero, y, p->lc, y, p->lc,
                                      &p->algo, c->lt_ws, c->lt_ws_bytes, c->stream), "cublasLtMatmul");
            return;
        }
    }
    blas_check(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, lin->out, n, lin->in, &one, lin->w, t, lin->in,
                            xin, t, lin->in, &zero, y, CUDA_R_32F, lin->out, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
    if (lin->b) {
        const size_t total = (size_t)n * lin->out;
        PT_LAUNCH(k_bias, grid_for(total, 256), 256, c->stream, y, (const float *)lin->b, n, lin->out);
        CU_LAUNCHED("k_bias");
    }
}

/* ---- attention -------------------------------------------------------------------------------- */

static int plain_hd(int hd) { return hd <= 32 ? 32 : hd <= 64 ? 64 : hd <= 128 ? 128 : 256; }
static int mma_hd(int hd) { return hd <= 16 ? 16 : hd <= 32 ? 32 : hd <= 64 ? 64 : 128; }

typedef void (*attn_kernel)(pt_attn_params);

static attn_kernel plain_fwd(int HD) {
    switch (HD) {
    case 32: return k_attn_fwd<32>;
    case 64: return k_attn_fwd<64>;
    case 128: return k_attn_fwd<128>;
    default: return k_attn_fwd<256>;
    }
}
static attn_kernel plain_stats(int HD) {
    switch (HD) {
    case 32: return k_attn_stats<32>;
    case 64: return k_attn_stats<64>;
    case 128: return k_attn_stats<128>;
    default: return k_attn_stats<256>;
    }
}
static int plain_bq(int HD) {
    switch (HD) {
    case 32: return pt_plain_cfg<32>::BQ;
    case 64: return pt_plain_cfg<64>::BQ;
    case 128: return pt_plain_cfg<128>::BQ;
    default: return pt_plain_cfg<256>::BQ;
    }
}
static int plain_kb(int HD) {
    switch (HD) {
    case 32: return pt_plain_cfg<32>::KB;
    case 64: return pt_plain_cfg<64>::KB;
    case 128: return pt_plain_cfg<128>::KB;
    default: return pt_plain_cfg<256>::KB;
    }
}
#if PT_CUDA_MMA
template <class T> static attn_kernel mma_fwd(int HDP) {
    switch (HDP) {
    case 16: return k_attn_fwd_mma<16, T>;
    case 32: return k_attn_fwd_mma<32, T>;
    case 64: return k_attn_fwd_mma<64, T>;
    default: return k_attn_fwd_mma<128, T>;
    }
}
template <class T> static attn_kernel mma_stats(int HDP) {
    switch (HDP) {
    case 16: return k_attn_stats_mma<16, T>;
    case 32: return k_attn_stats_mma<32, T>;
    case 64: return k_attn_stats_mma<64, T>;
    default: return k_attn_stats_mma<128, T>;
    }
}
#endif

static void cuda_attention(pt_backend *be, const pt_attn_args *a) {
    cu_ctx *c = ctx_of(be);
    if (a->n_segs <= 0) return;
    const int hd = a->head_dim, H = a->n_heads;
#if PT_CUDA_MMA
    const bool mma = c->use_mma && be->dtype != PT_DTYPE_F32 && hd <= 128;
#else
    const bool mma = false; /* tensor-core path compiled out */
#endif
    const int HD = mma ? mma_hd(hd) : plain_hd(hd);
    const int BQ = mma ? pt_mma_cfg<16>::BQ : plain_bq(HD);
    const int KB = mma ? pt_mma_cfg<16>::KB : plain_kb(HD);

    /* segments (this layer's view) and the work items of both passes */
    size_t n1 = 0, n2 = 0;
    long long rows = 0;
    for (int i = 0; i < a->n_segs; i++) {
        const pt_segment *s = &a->segs[i];
        if (s->n_q <= 0) continue;
        n1 += (size_t)(s->n_q + BQ - 1) / BQ;
        n2 += (size_t)(s->pos0 + s->n_q + KB - 1) / KB;
        if (s->row + s->n_q > rows) rows = s->row + s->n_q;
    }
    if (!n1) return;
    const size_t seg_bytes = ((size_t)a->n_segs * sizeof(pt_attn_seg) + 15) & ~(size_t)15;
    const size_t bytes = seg_bytes + (n1 + n2) * sizeof(pt_attn_item);
    char *h = (char *)host_scratch(&c->h_attn, &c->h_attn_cap, bytes);
    pt_attn_seg *hs = (pt_attn_seg *)h;
    pt_attn_item *it1 = (pt_attn_item *)(h + seg_bytes), *it2 = it1 + n1;
    size_t k1 = 0, k2 = 0;
    for (int i = 0; i < a->n_segs; i++) {
        const pt_segment *s = &a->segs[i];
        pt_attn_seg *d = &hs[i];
        d->row = s->row, d->n_q = s->n_q, d->pos0 = s->pos0;
        d->prefix_kv = s->prefix_kv, d->own_kv = s->own_kv;
        d->ko = s->ko_pos >= 0 && a->layer >= s->ko_lo && a->layer < s->ko_hi ? s->ko_pos : -1;
        d->flags = 0;
        if (a->mass && s->mass_row >= 0) d->flags |= PT_SEG_MASS;
        if (a->last && s->last_row >= 0 && s->final_pos >= s->pos0 && s->final_pos < s->pos0 + s->n_q)
            d->flags |= PT_SEG_LAST;
        if (a->pattern && s->pattern_row >= 0) d->flags |= PT_SEG_PATTERN;
        d->final_pos = d->flags & PT_SEG_LAST ? s->final_pos : -1;
        d->mass_row = s->mass_row, d->last_row = s->last_row, d->pattern_row = s->pattern_row;
        if (s->n_q <= 0) continue;
        for (int q0 = 0; q0 < s->n_q; q0 += BQ) it1[k1++] = pt_attn_item{i, q0};
        if (!d->flags) continue;
        int klo = 0;
        if (!(d->flags & (PT_SEG_LAST | PT_SEG_PATTERN)) && a->window > 0 && s->pos0 - a->window + 1 > 0)
            klo = s->pos0 - a->window + 1;
        for (int j0 = klo; j0 < s->pos0 + s->n_q; j0 += KB) it2[k2++] = pt_attn_item{i, j0};
    }
    char *dbuf = (char *)cu_ensure(c, &c->attn, bytes, "attention segment");
    CU(cudaMemcpyAsync(dbuf, h, seg_bytes + (n1 + k2) * sizeof(pt_attn_item), cudaMemcpyHostToDevice, c->stream));
    float *lse = (float *)cu_ensure(c, &c->lse, (size_t)rows * H * sizeof(float), "attention lse");

    pt_attn_params P;
    P.q = a->q;
    P.q_stride = a->q_stride;
    P.k = a->k_cache;
    P.v = a->v_cache;
    P.out = a->out;
    P.lse = lse;
    P.segs = (const pt_attn_seg *)dbuf;
    P.items = (const pt_attn_item *)(dbuf + seg_bytes);
    P.mass = a->mass;
    P.last = a->last;
    P.pattern = a->pattern;
    P.LH = a->n_layers * H;
    P.layer_off = a->layer * H;
    P.H = H;
    P.group = H / a->n_kv_heads;
    P.hd = hd;
    P.kvd = a->n_kv_heads * hd;
    P.window = a->window;
    P.scale = 1.0f / sqrtf((float)hd);

    attn_kernel fwd, stats;
    unsigned stats_threads;
    if (mma) {
#if PT_CUDA_MMA
        /* tensor-core operands: f16 by default for both compute dtypes (three more mantissa bits
         * than bf16 where it matters most, the scores that exp() amplifies; +-65504 is ample for
         * query / key / value activations); PUNCTUM_CUDA_MMA=bf16 selects bf16 operands */
        const bool bf16_ops = c->mma_bf16;
        fwd = bf16_ops ? mma_fwd<__nv_bfloat16>(HD) : mma_fwd<__half>(HD);
        stats = bf16_ops ? mma_stats<__nv_bfloat16>(HD) : mma_stats<__half>(HD);
#else
        fwd = stats = NULL;
#endif
        stats_threads = 128;
    } else {
        fwd = plain_fwd(HD);
        stats = plain_stats(HD);
        stats_threads = (unsigned)KB;
    }
    PT_LAUNCH(fwd, dim3((unsigned)n1, (unsigned)H), 128, c->stream, P);
    CU_LAUNCHED("attention forward");
    if (k2) {
        pt_attn_params P2 = P;
        P2.items = P.items + n1;
        PT_LAUNCH(stats, dim3((unsigned)k2, (unsigned)H), stats_threads, c->stream, P2);
        CU_LAUNCHED("attention statistics");
    }
}

/* ---- vocabulary ------------------------------------------------------------------------------- */

static void cuda_log_softmax(pt_backend *be, float *logits, int m, int V, double *entropy, int K,
                             int32_t *topk_id, float *topk_logp) {
    cu_ctx *c = ctx_of(be);
    if (m <= 0) return;
    const int k = K > 0 && (topk_id || topk_logp) ? K : 0;
    const size_t ent_b = (size_t)m * sizeof(double), id_b = (size_t)m * k * sizeof(int32_t);
    const size_t lp_b = (size_t)m * k * sizeof(float);
    char *d = (char *)cu_ensure(c, &c->res, ent_b + id_b + lp_b + 16, "result");
    double *d_ent = (double *)d;
    int32_t *d_id = (int32_t *)(d + ent_b);
    float *d_lp = (float *)(d + ent_b + id_b);
    PT_LAUNCH(k_log_softmax, m, PT_VOCAB_THREADS, c->stream, logits, V, entropy ? d_ent : (double *)NULL,
              k, d_id, d_lp);
    CU_LAUNCHED("k_log_softmax");
    if (!entropy && !k) return;
    char *h = (char *)host_scratch(&c->h_res, &c->h_res_cap, ent_b + id_b + lp_b + 16);
    CU(cudaMemcpyAsync(h, d, ent_b + id_b + lp_b, cudaMemcpyDeviceToHost, c->stream));
    CU(cudaStreamSynchronize(c->stream));
    if (entropy) memcpy(entropy, h, ent_b);
    if (k && topk_id) memcpy(topk_id, h + ent_b, id_b);
    if (k && topk_logp) memcpy(topk_logp, h + ent_b + id_b, lp_b);
}

static void cuda_divergence(pt_backend *be, const float *lp_p, size_t sp, const float *lp_q, size_t sq,
                            int m, int V, double *kl_pq, double *kl_qp, double *js) {
    cu_ctx *c = ctx_of(be);
    if (m <= 0) return;
    const size_t b = (size_t)m * 3 * sizeof(double);
    double *d = (double *)cu_ensure(c, &c->res, b, "result");
    PT_LAUNCH(k_divergence, m, PT_VOCAB_THREADS, c->stream, lp_p, sp, lp_q, sq, V, d);
    CU_LAUNCHED("k_divergence");
    double *h = (double *)host_scratch(&c->h_res, &c->h_res_cap, b);
    CU(cudaMemcpyAsync(h, d, b, cudaMemcpyDeviceToHost, c->stream));
    CU(cudaStreamSynchronize(c->stream));
    for (int r = 0; r < m; r++) {
        if (kl_pq) kl_pq[r] = h[3 * r];
        if (kl_qp) kl_qp[r] = h[3 * r + 1];
        if (js) js[r] = h[3 * r + 2];
    }
}

static void cuda_pick(pt_backend *be, const float *logp, int m, int V, const int32_t *ids, float *out) {
    cu_ctx *c = ctx_of(be);
    if (m <= 0) return;
    const int32_t *di = stage_idx(c, 0, ids, (size_t)m);
    float *d = (float *)cu_ensure(c, &c->res, (size_t)m * sizeof(float), "result");
    PT_LAUNCH(k_pick, (m + 127) / 128, 128, c->stream, logp, m, V, di, d);
    CU_LAUNCHED("k_pick");
    CU(cudaMemcpyAsync(out, d, (size_t)m * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CU(cudaStreamSynchronize(c->stream));
}

/* ---- creation --------------------------------------------------------------------------------- */

static void cuda_destroy(pt_backend *be) {
    cu_ctx *c = ctx_of(be);
    cudaStreamSynchronize(c->stream);
    for (int i = 0; i < CU_PLANS; i++) plan_destroy(&c->plans[i]);
    cu_buf *bufs[] = {&c->idx[0], &c->idx[1], &c->idx[2], &c->act, &c->lse, &c->attn, &c->res, &c->wstage};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]->p) cudaFree(bufs[i]->p);
    for (size_t i = 0; i < c->n_wallocs; i++) cudaFree(c->wallocs[i]);
    free(c->wallocs);
    if (c->lt_ws) cudaFree(c->lt_ws);
    cublasLtDestroy(c->lt);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    free(c->h_attn);
    free(c->h_res);
    free(c);
    free(be);
}

/* Can this process run our kernels on `device`? (a GPU exists, and the binary carries code for
 * its architecture). On failure, *why says which. */
static int device_usable(int device, const char **why) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n <= 0) {
        (void)cudaGetLastError();
        *why = e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device";
        return 0;
    }
    if (device < 0 || device >= n) {
        *why = "no such device";
        return 0;
    }
    e = cudaSetDevice(device);
    if (e == cudaSuccess) {
        cudaFuncAttributes fa;
        e = cudaFuncGetAttributes(&fa, (const void *)k_fill);
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *why = cudaGetErrorString(e);
        return 0;
    }
    return 1;
}

extern "C" int pt_backend_cuda_available(void) {
    static int cached = -1;
    if (cached < 0) {
        const char *why = NULL;
        cached = device_usable(0, &why);
    }
    return cached;
}

static int env_is(const char *name, const char *value) {
    const char *v = getenv(name);
    return v && !strcmp(v, value);
}

extern "C" pt_backend *pt_backend_cuda_create(int device, pt_compute_dtype dtype, pt_error *e) {
    const char *why = NULL;
    if (!device_usable(device, &why)) {
        int n = 0;
        if (cudaGetDeviceCount(&n) == cudaSuccess && n > 0 && (device < 0 || device >= n))
            pt_fail(e, "--device %d: this machine has %d CUDA device(s)", device, n);
        else
            pt_fail(e, "--backend cuda: no usable CUDA GPU (%s); use --backend cpu", why);
        (void)cudaGetLastError();
        return NULL;
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
        (void)cudaGetLastError();
        pt_fail(e, "--backend cuda: cannot query device %d", device);
        return NULL;
    }
    cu_ctx *c = (cu_ctx *)pt_xcalloc(1, sizeof *c);
    c->device = device;
    if (cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking) != cudaSuccess ||
        cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS || cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS) {
        (void)cudaGetLastError();
        free(c);
        pt_fail(e, "--backend cuda: cannot initialise CUDA / cuBLAS on device %d", device);
        return NULL;
    }
    blas_check(cublasSetStream(c->blas, c->stream), "cublasSetStream");
    c->lt_ws_bytes = (size_t)32 << 20;
    if (cudaMalloc(&c->lt_ws, c->lt_ws_bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        c->lt_ws = NULL;
        c->lt_ws_bytes = 0;
    }
    c->use_lt = !env_is("PUNCTUM_CUDA_GEMM", "cublas");
    c->use_mma = PT_CUDA_MMA && !env_is("PUNCTUM_CUDA_MMA", "0") && prop.major >= 8;
    c->mma_bf16 = env_is("PUNCTUM_CUDA_MMA", "bf16");

    pt_backend *be = (pt_backend *)pt_xcalloc(1, sizeof *be);
    be->name = "cuda";
    be->ctx = c;
    be->dtype = dtype;
    snprintf(be->device_name, sizeof be->device_name, "%.120s", prop.name);
    be->destroy = cuda_destroy;
    be->load_weights = cuda_load_weights;
    be->free_weights = cuda_free_weights;
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->to_device = cuda_to_device;
    be->to_host = cuda_to_host;
    be->copy = cuda_copy;
    be->fill = cuda_fill;
    be->sync = cuda_sync;
    be->embed = cuda_embed;
    be->norm = cuda_norm;
    be->linear = cuda_linear;
    be->rope = cuda_rope;
    be->store_kv = cuda_store_kv;
    be->attention = cuda_attention;
    be->mlp_act = cuda_mlp_act;
    be->add = cuda_add;
    be->row_norms = cuda_row_norms;
    be->gather_rows = cuda_gather_rows;
    be->log_softmax = cuda_log_softmax;
    be->divergence = cuda_divergence;
    be->pick = cuda_pick;
    return be;
}
