/* punctum — the `cuda` backend: every operation of pt_backend (include/punctum/backend.h) with
 * the semantics of the CPU reference (src/backend/cpu.c).
 *
 * - GEMMs: cuBLASLt (bias fused as an epilogue; plans cached per shape and alignment), with
 *   cublasGemmEx + a bias kernel as the fallback (PUNCTUM_CUDA_GEMM=cublas forces it). Float32
 *   accumulation always; inputs in the activations' type (the compute dtype: produced so by the
 *   norm, attention and MLP-activation kernels, no conversion pass), outputs float32 (backend.h:
 *   q|k|v, gate|up, logits, a sublayer before its norm; linear_add's residual).
 * - Weights: load_weights uploads the host views (model.h) straight from the mapped checkpoint:
 *   a tensor already in the compute dtype is copied as is, any other is converted through one
 *   bounded pinned staging buffer (STAGE_BYTES; GPT-2's [in, out] Conv1D weights transposed on
 *   the way). q|k|v and gate|up are fused on the device. No host copy of a weight is kept.
 *   In backend memory: matrices (token / position embeddings, every linear's weight, the LM
 *   head) in the compute dtype, [out, in] row-major, one part per projection; vectors (norm
 *   weights and biases, linear biases, RoPE inverse frequencies) in float32.
 * - Own kernels for everything else: elementwise.cuh, attention.cuh, vocab.cuh, row_select.cuh.
 * - Activations that feed the GEMMs in the compute dtype (act_dtype: written so by k_norm, the
 *   attention and the MLP activation, read by the GEMMs as they are); float32 rows where
 *   backend.h says (q|k|v, gate|up, a sublayer before its norm) and the residual; the key/value
 *   cache in the tensor-core attention's operand type (kv_dtype f16 by default, bf16 with
 *   PUNCTUM_CUDA_MMA=bf16) where that path runs (bf16 / f16 compute dtypes), float32 otherwise.
 * - Index arrays arrive as host pointers and are copied into persistent device staging buffers
 *   that `reserve` sizes (grown, never allocated per call), through a pinned host ring whose
 *   chunks are reused only after an event says the copies from them completed: the host waits
 *   only when the ring laps onto a copy the GPU has not run yet (from pageable memory every
 *   copy would stall it). Small results come back through pinned scratch. Everything runs in
 *   order on one stream; calls with host outputs synchronise it.
 * - Errors (CUDA, cuBLAS, out of memory) go to the backend's sticky status (backend.h); after
 *   one, every operation returns at once, so no kernel ever runs on a pointer that failed.
 *
 * The same source is compiled by nvcc for `punctum` and, through tests/emu/cuda_emu.h, as host
 * C++ for `punctum-emu` (PT_CUDA_EMU). Kernel launches go through PT_LAUNCH only. */
#include "pt_cuda.h"

#include "attention.cuh"
#include "elementwise.cuh"
#include "row_select.cuh"
#include "vocab.cuh"

extern "C" {
#include "punctum/backend.h"
}

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <type_traits>

/* ---- context ---------------------------------------------------------------------------------- */

struct cu_buf {
    void *p;
    size_t cap;
    /* what the last upload put there (host copy, sent_bytes valid bytes; 0: unknown): a table
     * that every layer of a forward uploads again unchanged is sent once (upload_once) */
    void *sent;
    size_t sent_bytes, sent_cap;
};

struct cu_plan { /* a cached cuBLASLt matmul */
    int used, ok;
    int out, in, n, bias, align;
    unsigned long long stamp;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
};
/* index staging slots: one per kind of table, so that a table repeated by every layer
 * (positions, cache rows) stays in its slot and is uploaded once per forward */
enum { CU_PLANS = 64, CU_IDX_SLOTS = 8 };
enum { IDX_IDS = 0, IDX_POS_EMB = 1, IDX_GATHER = 2, IDX_ROPE_POS = 3, IDX_ROPE_ALT = 4, IDX_KV_ROWS = 5,
       IDX_DIV_P = 6, IDX_DIV_Q = 7 };
/* host staging for weight conversion: bounded, whatever the model's size */
static const size_t STAGE_BYTES = (size_t)4 << 20;

/* Pinned staging of index tables (upload_once): a ring of cudaMallocHost'd memory in
 * CU_RING_CHUNKS chunks. A copy from pinned memory runs whenever the GPU reaches it, so each
 * chunk has an event recorded after the last copy that read it, and the ring writes a chunk of
 * its previous lap only once that event completed. The ring holds at least RING_SPAN uploads of
 * the largest size seen (a lap, and the wait, comes every few forwards, not every upload). */
enum { CU_RING_CHUNKS = 8, RING_SPAN = 4 };
static const size_t RING_MIN = (size_t)64 << 10;
struct cu_ring {
    char *host;       /* pinned, cap bytes (NULL: not allocated yet) */
    size_t cap, head; /* bytes [0, head) are this lap's; the next region starts at head */
    cudaEvent_t done[CU_RING_CHUNKS]; /* recorded after the last copy from the chunk */
    bool armed[CU_RING_CHUNKS];       /* recorded and not waited for since */
    bool events;                      /* done[] created */
};

/* Results of the vocabulary operations headed for the host (log_softmax, divergence, pick). Each
 * call's results take a slot of cu_ctx::res and a pending entry. Without deferral a call fetches
 * its own at once (a copy and a wait); after defer_results they wait for the next sync, which
 * fetches every slot in one copy and one wait. */
enum { CU_PENDING = 8 };
enum res_kind { RES_LOG_SOFTMAX, RES_DIVERGENCE, RES_PICK };
struct res_pending {
    res_kind kind;
    size_t off; /* of the slot in cu_ctx::res */
    int m, k;
    double *entropy; /* log_softmax */
    int32_t *topk_id;
    float *topk_logp;
    double *kl_pq, *kl_qp, *js; /* divergence */
    float *picked;              /* pick */
};

struct cu_alloc_rec { /* one live device allocation, for the memory accounting */
    void *p;
    size_t bytes;
};

struct cu_ctx {
    pt_backend *be;
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    void *lt_ws;
    size_t lt_ws_bytes;
    int use_lt, use_mma, mma_bf16;
    int attn_warps; /* PUNCTUM_CUDA_ATTN_WARPS: 4 or 8 forces both attention passes'; 0 auto */
    int attn_pack;  /* PUNCTUM_CUDA_ATTN_PACK: 1 forces the GQA-packed forward, 0 forbids it; -1 auto */
    cu_buf idx[CU_IDX_SLOTS]; /* staged host index arrays */
    cu_buf lse;               /* attention log-sum-exp per (row, head) */
    cu_buf attn;              /* attention segments + work items */
    cu_buf res;               /* small results headed for the host */
    int defer;                /* defer_results: fetch them at the next sync */
    int n_pending;            /* slots of res in use, [0, res_used) bytes */
    size_t res_used;
    res_pending pending[CU_PENDING];
    void *h_attn, *h_res;     /* host scratch (h_res pinned: device results land there) */
    size_t h_attn_cap, h_res_cap;
    cu_ring ring;             /* pinned staging of the host -> device tables */
    void **wallocs;           /* weight allocations, freed by free_weights */
    size_t n_wallocs, cap_wallocs;
    cu_alloc_rec *allocs;     /* every live device allocation of this backend */
    size_t n_allocs, cap_allocs;
    size_t mem_used;          /* bytes of `allocs` (the peak: be->mem_peak) */
    cu_plan plans[CU_PLANS];
    unsigned long long stamp;
    size_t row_select_smem; /* dynamic shared memory k_row_abs_stats may use (opted in) */
    /* tensor-core forwards opted in to their dynamic shared memory (mma_fwd_smem) */
    const void *attn_optin[4];
};

static cu_ctx *ctx_of(pt_backend *be) { return (cu_ctx *)be->ctx; }

/* f(tag) with tag a null pointer of the activations' element type: kernels over activations
 * are instantiated per type (`using A = act_t<decltype(tag)>;`). */
template <class F> static void with_act(const pt_backend *be, F &&f) {
    if (be->act_dtype == PT_DTYPE_BF16)
        f((__nv_bfloat16 *)nullptr);
    else if (be->act_dtype == PT_DTYPE_F16)
        f((__half *)nullptr);
    else
        f((float *)nullptr);
}
template <class P> using act_t = typename std::remove_pointer<P>::type;
static_assert((int)PT_ACT_F32 == (int)PT_DTYPE_F32 && (int)PT_ACT_BF16 == (int)PT_DTYPE_BF16 &&
                  (int)PT_ACT_F16 == (int)PT_DTYPE_F16,
              "attention.cuh's activation types are pt_compute_dtype's");

/* ---- errors ----------------------------------------------------------------------------------- */

/* A failed CUDA / cuBLAS call: recorded in the status (the first failure wins). 0 if fine. */
static int cu_check(cu_ctx *c, cudaError_t e, const char *what) {
    if (e == cudaSuccess) return 0;
    (void)cudaGetLastError(); /* clear it: the status holds it now */
    pt_backend_fail(c->be, e == cudaErrorMemoryAllocation, 0, "cuda backend: %s: %s", what,
                    cudaGetErrorString(e));
    return -1;
}
static int blas_check(cu_ctx *c, cublasStatus_t s, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    pt_backend_fail(c->be, s == CUBLAS_STATUS_ALLOC_FAILED, 0, "cuda backend: %s: %s", what,
                    cublasGetStatusString(s));
    return -1;
}
#define CU(call) cu_check(c, (call), #call)
/* after every launch: a bad configuration shows up here, at the launch that caused it */
#define CU_LAUNCHED(name) cu_check(c, cudaGetLastError(), "launch of " name)

/* ---- device memory ---------------------------------------------------------------------------- */

static int track_alloc(cu_ctx *c, void *p, size_t bytes) {
    if (c->n_allocs == c->cap_allocs) {
        const size_t cap = c->cap_allocs ? 2 * c->cap_allocs : 64;
        cu_alloc_rec *a = (cu_alloc_rec *)realloc(c->allocs, cap * sizeof *a);
        if (!a) return -1;
        c->allocs = a;
        c->cap_allocs = cap;
    }
    c->allocs[c->n_allocs++] = cu_alloc_rec{p, bytes};
    c->mem_used += bytes;
    if (c->mem_used > c->be->mem_peak) c->be->mem_peak = c->mem_used;
    return 0;
}

/* Every device allocation: the test-only limit (common.h), out of memory into the status. */
static void *cu_malloc(cu_ctx *c, size_t bytes, const char *what) {
    if (pt_backend_refuse_alloc(c->be, bytes, what)) return NULL;
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 64) != cudaSuccess) {
        (void)cudaGetLastError();
        pt_backend_fail(c->be, 1, bytes, "cuda backend: out of GPU memory allocating %zu bytes for %s",
                        bytes, what);
        return NULL;
    }
    if (track_alloc(c, p, bytes)) {
        cudaFree(p);
        pt_backend_fail(c->be, 1, bytes, "cuda backend: out of host memory tracking %s", what);
        return NULL;
    }
    return p;
}

static void cu_release(cu_ctx *c, void *p) {
    if (!p) return;
    for (size_t i = c->n_allocs; i-- > 0;)
        if (c->allocs[i].p == p) {
            c->mem_used -= c->allocs[i].bytes;
            c->allocs[i] = c->allocs[--c->n_allocs];
            break;
        }
    CU(cudaFree(p));
}

/* Grow a device buffer to at least `bytes` (contents not kept); NULL on failure (status set). */
static void *cu_ensure(cu_ctx *c, cu_buf *b, size_t bytes, const char *what) {
    if (bytes <= b->cap && b->p) return b->p;
    const size_t want = bytes + bytes / 4 + 256;
    b->sent_bytes = 0; /* a new buffer holds nothing we sent */
    if (b->p) {
        CU(cudaStreamSynchronize(c->stream)); /* work in flight may still read it */
        cu_release(c, b->p);
        b->p = NULL;
        b->cap = 0;
    }
    if (!(b->p = cu_malloc(c, want, what))) return NULL;
    b->cap = want;
    return b->p;
}

/* Grow host scratch; NULL on failure (status set). */
static void *host_scratch(cu_ctx *c, void **p, size_t *cap, size_t bytes) {
    if (bytes > *cap) {
        void *q = realloc(*p, bytes);
        if (!q) {
            pt_backend_fail(c->be, 1, bytes, "cuda backend: out of host memory (%zu bytes of scratch)",
                            bytes);
            return NULL;
        }
        *p = q;
        *cap = bytes;
    }
    return *p;
}

/* Grow pinned result scratch (device results are copied there, then the stream synchronised);
 * NULL on failure (status set). */
static void *pinned_scratch(cu_ctx *c, void **p, size_t *cap, size_t bytes) {
    if (bytes <= *cap && *p) return *p;
    if (*p) CU(cudaFreeHost(*p)); /* (callers synchronise the stream before reading it) */
    *p = NULL;
    *cap = 0;
    if (cudaMallocHost(p, bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        *p = NULL;
        pt_backend_fail(c->be, 1, bytes,
                        "cuda backend: out of pinned host memory (%zu bytes of results)", bytes);
        return NULL;
    }
    *cap = bytes;
    return *p;
}

/* ---- pinned staging ring --------------------------------------------------------------------- */

static size_t ring_chunk(const cu_ring *r) {
    return r->cap / CU_RING_CHUNKS;
}

/* Wait until the copies that read chunk k completed. -1: failed (status set). */
static int ring_wait(cu_ctx *c, int k) {
    cu_ring *r = &c->ring;
    if (!r->armed[k]) return 0;
    if (CU(cudaEventSynchronize(r->done[k]))) return -1;
    r->armed[k] = false;
    return 0;
}

/* A ring of at least `bytes` (contents not kept). -1: failed (status set). */
static int ring_reserve(cu_ctx *c, size_t bytes) {
    cu_ring *r = &c->ring;
    if (bytes <= r->cap && r->host) return 0;
    if (!r->events) {
        for (int k = 0; k < CU_RING_CHUNKS; k++)
            if (CU(cudaEventCreateWithFlags(&r->done[k], cudaEventDisableTiming))) {
                while (k-- > 0) cudaEventDestroy(r->done[k]);
                return -1;
            }
        r->events = true;
    }
    for (int k = 0; k < CU_RING_CHUNKS; k++)
        if (ring_wait(c, k)) return -1; /* the old ring may still be read */
    if (r->host) CU(cudaFreeHost(r->host));
    r->host = NULL;
    r->cap = r->head = 0;
    const size_t unit = (size_t)CU_RING_CHUNKS * 4096;
    const size_t want = (bytes < RING_MIN ? RING_MIN : bytes) + unit - 1;
    if (cudaMallocHost((void **)&r->host, want / unit * unit) != cudaSuccess) {
        (void)cudaGetLastError();
        r->host = NULL;
        pt_backend_fail(c->be, 1, want,
                        "cuda backend: out of pinned host memory (%zu bytes of staging)", want);
        return -1;
    }
    r->cap = want / unit * unit;
    return 0;
}

/* n host bytes to device address dst through the ring: copied into a region no copy in flight
 * reads, sent from there, and the region's chunks marked with an event. -1: failed (status set). */
static int ring_upload(cu_ctx *c, void *dst, const void *host, size_t n) {
    cu_ring *r = &c->ring;
    if ((n > r->cap / RING_SPAN || !r->host) && ring_reserve(c, n * RING_SPAN)) return -1;
    if (r->head + n > r->cap) r->head = 0; /* a new lap */
    const size_t chunk = ring_chunk(r), off = r->head;
    const int first = (int)(off / chunk), last = (int)((off + n - 1) / chunk);
    /* chunks before `entered` were waited for earlier in this lap (they hold its regions) */
    const int entered = (int)((off + chunk - 1) / chunk);
    for (int k = first > entered ? first : entered; k <= last; k++)
        if (ring_wait(c, k)) return -1;
    memcpy(r->host + off, host, n);
    r->head = (off + n + 15) & ~(size_t)15;
    if (CU(cudaMemcpyAsync(dst, r->host + off, n, cudaMemcpyHostToDevice, c->stream))) return -1;
    for (int k = first; k <= last; k++) {
        if (CU(cudaEventRecord(r->done[k], c->stream))) return -1;
        r->armed[k] = true;
    }
    return 0;
}

/* Free the ring and its events (the stream synchronised, or being torn down). */
static void ring_free(cu_ring *r) {
    if (r->host) cudaFreeHost(r->host);
    if (r->events)
        for (int k = 0; k < CU_RING_CHUNKS; k++) cudaEventDestroy(r->done[k]);
    memset(r, 0, sizeof *r);
}

/* n host bytes into b->p (allocated, >= n bytes), unless b already holds exactly these bytes
 * from an earlier upload: the layers of a forward stage the same positions, cache rows and
 * attention segments one after another. Stream-ordered, so the kernels of the previous layer
 * have read the old contents before new ones land; sent through the pinned ring, so the host
 * does not wait for the copy. -1: failed (status set). */
static int upload_once(cu_ctx *c, cu_buf *b, const void *host, size_t n) {
    if (!n || (b->sent_bytes == n && !memcmp(b->sent, host, n))) return 0;
    b->sent_bytes = 0;
    if (ring_upload(c, b->p, host, n)) return -1;
    if (n > b->sent_cap) { /* no host copy: the next upload simply is not skipped */
        void *q = realloc(b->sent, n);
        if (!q) return 0;
        b->sent = q, b->sent_cap = n;
    }
    memcpy(b->sent, host, n);
    b->sent_bytes = n;
    return 0;
}

/* Copy n host int32 values into staging slot `slot`; returns the device copy (NULL: failed). */
static const int32_t *stage_idx(cu_ctx *c, int slot, const int32_t *host, size_t n) {
    int32_t *d = (int32_t *)cu_ensure(c, &c->idx[slot], n * sizeof(int32_t) + 4, "index staging");
    if (!d || upload_once(c, &c->idx[slot], host, n * sizeof(int32_t))) return NULL;
    return d;
}

/* The same for n host bytes (row flags). */
static const uint8_t *stage_bytes(cu_ctx *c, int slot, const uint8_t *host, size_t n) {
    uint8_t *d = (uint8_t *)cu_ensure(c, &c->idx[slot], n + 4, "index staging");
    if (!d || upload_once(c, &c->idx[slot], host, n)) return NULL;
    return d;
}

static unsigned grid_for(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    if (b > 65535u * 8u) b = 65535u * 8u;
    return b ? (unsigned)b : 1u;
}

static size_t esize(pt_compute_dtype t) { return t == PT_DTYPE_F32 ? 4 : 2; }
static cudaDataType cuda_type(pt_compute_dtype t) {
    return t == PT_DTYPE_F32 ? CUDA_R_32F : t == PT_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}
static pt_dtype weight_dtype(pt_compute_dtype t) {
    return t == PT_DTYPE_F32 ? PT_DT_F32 : t == PT_DTYPE_BF16 ? PT_DT_BF16 : PT_DT_F16;
}

/* ---- memory operations ------------------------------------------------------------------------ */

static void *cuda_alloc(pt_backend *be, size_t bytes) { return cu_malloc(ctx_of(be), bytes, "a buffer"); }
static void cuda_free(pt_backend *be, void *p) { cu_release(ctx_of(be), p); }
static void cuda_to_device(pt_backend *be, void *dst, const void *src, size_t bytes) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (bytes) CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
}
static void cuda_to_host(pt_backend *be, void *dst, const void *src, size_t bytes) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (bytes) CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CU(cudaStreamSynchronize(c->stream));
}
static void cuda_copy(pt_backend *be, void *dst, const void *src, size_t bytes) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (bytes) CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
}
static void cuda_fill(pt_backend *be, float *dst, float v, size_t n) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (!n) return;
    PT_LAUNCH(k_fill, grid_for(n, 256), 256, c->stream, dst, v, n);
    CU_LAUNCHED("k_fill");
}
static void res_flush(cu_ctx *c);

static void cuda_sync(pt_backend *be) {
    cu_ctx *c = ctx_of(be);
    c->defer = 0;
    if (c->n_pending)
        res_flush(c); /* its wait is the sync */
    else
        CU(cudaStreamSynchronize(c->stream));
}

static void cuda_defer_results(pt_backend *be) {
    ctx_of(be)->defer = 1;
}
static size_t cuda_mem_available(pt_backend *be) {
    cu_ctx *c = ctx_of(be);
    size_t free_b = 0, total = 0;
    if (CU(cudaMemGetInfo(&free_b, &total))) return 0;
    return free_b;
}
static void cuda_resid_to_host(pt_backend *be, float *dst, const void *src, size_t n) {
    cuda_to_host(be, dst, src, n * sizeof(float)); /* the residual stream is float32 */
}

/* ---- weights ---------------------------------------------------------------------------------- */

static const void *track_weight(cu_ctx *c, void *p) {
    if (!p) return NULL;
    if (c->n_wallocs == c->cap_wallocs) {
        const size_t cap = c->cap_wallocs ? 2 * c->cap_wallocs : 64;
        void **w = (void **)realloc(c->wallocs, cap * sizeof(void *));
        if (!w) {
            cu_release(c, p);
            pt_backend_fail(c->be, 1, cap * sizeof(void *), "cuda backend: out of host memory");
            return NULL;
        }
        c->wallocs = w;
        c->cap_wallocs = cap;
    }
    c->wallocs[c->n_wallocs++] = p;
    return p;
}

/* Upload n host floats as a float32 vector. NULL in, NULL out (and on failure: status set). */
static const float *up_vec(cu_ctx *c, const float *host, size_t n) {
    if (!host || c->be->status.failed) return NULL;
    void *p = (void *)track_weight(c, cu_malloc(c, n * sizeof(float) + 16, "a weight vector"));
    if (p && CU(cudaMemcpy(p, host, n * sizeof(float), cudaMemcpyHostToDevice))) return NULL;
    return (const float *)p;
}

/* Rows r0 .. r0+k-1 of a [rows, in] matrix (transposed: stored [in, rows]) as float32 [k, in]. */
static void rows_to_f32(const pt_tensor *t, int transposed, size_t rows, size_t in, size_t r0,
                        size_t k, float *dst) {
    if (!transposed) {
        pt_tensor_to_f32(t, r0 * in, 1, k * in, dst);
        return;
    }
    for (size_t r = 0; r < k; r++) pt_tensor_to_f32(t, r0 + r, rows, in, dst + r * in);
}

/* The staging buffer of one load_weights: `floats` float32 values (pinned host memory). */
struct cu_stage {
    float *host;
    size_t floats;
};

/* n float32 values narrowed in place to the compute dtype (round to nearest even, as the
 * device's conversions do): the 16-bit value i is written where float i was read, so a
 * forward pass never overwrites a float it still has to read. */
static void narrow_in_place(float *v, size_t n, pt_compute_dtype dt) {
    uint16_t *h = (uint16_t *)v;
    for (size_t i = 0; i < n; i++) {
        const float x = v[i];
        h[i] = dt == PT_DTYPE_BF16 ? pt_f32_to_bf16(x) : pt_f32_to_f16(x);
    }
}

/* Write a host matrix view of `rows` x `in` (stored [in, rows] when transposed) into dst, a
 * device matrix in the compute dtype: copied as is when the dtypes agree, else converted chunk
 * by chunk on the host in the staging buffer (no device memory beyond the weights). */
static int upload_rows(pt_backend *be, const pt_tensor *t, int transposed, size_t rows, size_t in,
                       void *dst, const cu_stage *st) {
    cu_ctx *c = ctx_of(be);
    const size_t es = esize(be->dtype);
    if (!transposed && t->dtype == weight_dtype(be->dtype))
        return CU(cudaMemcpy(dst, t->data, rows * in * es, cudaMemcpyHostToDevice));
    const size_t chunk = st->floats / in > 0 ? st->floats / in : 1;
    for (size_t r0 = 0; r0 < rows; r0 += chunk) {
        const size_t k = rows - r0 < chunk ? rows - r0 : chunk, n = k * in;
        rows_to_f32(t, transposed, rows, in, r0, k, st->host);
        if (be->dtype != PT_DTYPE_F32) narrow_in_place(st->host, n, be->dtype);
        if (CU(cudaMemcpy((char *)dst + r0 * in * es, st->host, n * es, cudaMemcpyHostToDevice)))
            return -1;
    }
    return 0;
}

/* Upload a [rows, in] matrix into a new device tensor in the compute dtype. */
static pt_tensor up_mat(pt_backend *be, const pt_tensor *t, size_t rows, size_t in, cu_stage *st) {
    cu_ctx *c = ctx_of(be);
    pt_tensor d = {NULL, weight_dtype(be->dtype)};
    if (!t->data || be->status.failed) return d;
    void *p = (void *)track_weight(c, cu_malloc(c, rows * in * esize(be->dtype) + 16, "weights"));
    if (p && !upload_rows(be, t, 0, rows, in, p, st)) d.data = p;
    return d;
}

/* Upload a projection: its parts fused into one [out, in] device matrix (and one bias). */
static pt_linear up_linear(pt_backend *be, const pt_linear *h, cu_stage *st) {
    cu_ctx *c = ctx_of(be);
    pt_linear d = {h->out, h->in, 1, {{{NULL, weight_dtype(be->dtype)}, NULL, h->out, 0}}};
    if (be->status.failed) return d;
    const size_t es = esize(be->dtype), in = (size_t)h->in;
    char *w = (char *)track_weight(c, cu_malloc(c, (size_t)h->out * in * es + 16, "weights"));
    int has_bias = 0;
    for (int k = 0; k < h->n_parts; k++) has_bias |= h->part[k].b != NULL;
    float *b = has_bias ? (float *)track_weight(c, cu_malloc(c, (size_t)h->out * 4 + 16, "biases")) : NULL;
    if (!w || (has_bias && !b)) return d;
    size_t row = 0;
    for (int k = 0; k < h->n_parts; k++) {
        const pt_linear_part *p = &h->part[k];
        if (upload_rows(be, &p->w, p->transposed, (size_t)p->out, in, w + row * in * es, st))
            return d;
        if (b && (p->b ? CU(cudaMemcpy(b + row, p->b, (size_t)p->out * 4, cudaMemcpyHostToDevice))
                       : CU(cudaMemset(b + row, 0, (size_t)p->out * 4))))
            return d;
        row += (size_t)p->out;
    }
    d.part[0].w.data = w;
    d.part[0].b = b;
    return d;
}

static void cuda_free_weights(pt_backend *be, const pt_config *cfg, pt_weights *dev) {
    (void)cfg;
    cu_ctx *c = ctx_of(be);
    CU(cudaStreamSynchronize(c->stream));
    for (size_t i = 0; i < c->n_wallocs; i++) cu_release(c, c->wallocs[i]);
    c->n_wallocs = 0;
    free(dev->layers);
    memset(dev, 0, sizeof *dev);
}

static void load_layers(pt_backend *be, const pt_config *cfg, const pt_weights *host,
                        pt_layer_weights *L, cu_stage *st) {
    cu_ctx *c = ctx_of(be);
    const size_t d = (size_t)cfg->d_model;
    for (int l = 0; l < cfg->n_layers && !be->status.failed; l++) {
        const pt_layer_weights *hl = &host->layers[l];
        L[l].norm1_w = up_vec(c, hl->norm1_w, d);
        L[l].norm1_b = up_vec(c, hl->norm1_b, d);
        L[l].norm2_w = up_vec(c, hl->norm2_w, d);
        L[l].norm2_b = up_vec(c, hl->norm2_b, d);
        L[l].post1_w = up_vec(c, hl->post1_w, d);
        L[l].post2_w = up_vec(c, hl->post2_w, d);
        const size_t qn = cfg->qk_norm == PT_QKNORM_PROJ ? (size_t)cfg->n_heads * cfg->head_dim : (size_t)cfg->head_dim;
        const size_t kn = cfg->qk_norm == PT_QKNORM_PROJ ? (size_t)cfg->n_kv_heads * cfg->head_dim : (size_t)cfg->head_dim;
        L[l].q_norm_w = up_vec(c, hl->q_norm_w, qn);
        L[l].k_norm_w = up_vec(c, hl->k_norm_w, kn);
        L[l].qkv = up_linear(be, &hl->qkv, st);
        L[l].o = up_linear(be, &hl->o, st);
        L[l].up = up_linear(be, &hl->up, st);
        L[l].down = up_linear(be, &hl->down, st);
    }
}

static int cuda_load_weights(pt_backend *be, const pt_config *cfg, const pt_weights *host,
                             pt_weights *dev, pt_error *e) {
    cu_ctx *c = ctx_of(be);
    memset(dev, 0, sizeof *dev);
    if (cfg->head_dim > 256 || cfg->head_dim < 1)
        return pt_fail(e, "cuda backend: head_dim %d is not supported (at most 256)", cfg->head_dim);
    if (pt_backend_take_error(be, e, NULL)) return -1;
    const size_t d = (size_t)cfg->d_model, V = (size_t)cfg->vocab_size;
    /* staging: STAGE_BYTES, or the largest matrix when that is smaller (one row at least) */
    size_t big = V * d > (size_t)cfg->max_positions * d ? V * d : (size_t)cfg->max_positions * d;
    const size_t ff = (size_t)cfg->d_ff * 2, qkv = (size_t)(cfg->n_heads + 2 * cfg->n_kv_heads) * cfg->head_dim;
    if (ff * d > big) big = ff * d;
    if (qkv * d > big) big = qkv * d;
    cu_stage st = {NULL, big < STAGE_BYTES / sizeof(float) ? big : STAGE_BYTES / sizeof(float)};
    const size_t widest[3] = {(size_t)cfg->d_ff, d, (size_t)cfg->n_heads * cfg->head_dim};
    for (int k = 0; k < 3; k++) /* one row of any matrix */
        if (st.floats < widest[k]) st.floats = widest[k];
    if (cudaMallocHost((void **)&st.host, st.floats * sizeof(float)) != cudaSuccess) {
        (void)cudaGetLastError();
        return pt_fail(e, "cuda backend: out of host memory (%zu bytes of pinned staging)",
                       st.floats * sizeof(float));
    }
    dev->layers = (pt_layer_weights *)calloc((size_t)cfg->n_layers, sizeof *dev->layers);
    if (!dev->layers) pt_backend_fail(be, 1, 0, "cuda backend: out of host memory");
    dev->tok_emb = up_mat(be, &host->tok_emb, V, d, &st);
    dev->pos_emb = up_mat(be, &host->pos_emb, (size_t)cfg->max_positions, d, &st);
    if (dev->layers) load_layers(be, cfg, host, dev->layers, &st);
    dev->final_norm_w = up_vec(c, host->final_norm_w, d);
    dev->final_norm_b = up_vec(c, host->final_norm_b, d);
    if (host->lm_head.n_parts == 1 && host->lm_head.part[0].w.data == host->tok_emb.data &&
        !host->lm_head.part[0].b && !host->lm_head.part[0].transposed) { /* tied */
        dev->lm_head = pt_linear_one(dev->tok_emb, NULL, host->lm_head.out, host->lm_head.in, 0);
    } else {
        dev->lm_head = up_linear(be, &host->lm_head, &st);
    }
    const size_t half = (size_t)pt_rotary_dim(cfg) / 2;
    dev->rope_inv_freq = up_vec(c, host->rope_inv_freq, half);
    dev->rope_long_inv_freq = up_vec(c, host->rope_long_inv_freq, half);
    dev->rope_local_inv_freq = up_vec(c, host->rope_local_inv_freq, half);
    CU(cudaStreamSynchronize(c->stream));
    cudaFreeHost(st.host); /* the staging is not needed any more */
    if (pt_backend_take_error(be, e, NULL)) {
        cuda_free_weights(be, cfg, dev);
        return pt_fail_prefix(e, "loading the weights");
    }
    return 0;
}

/* ---- embedding, norms, RoPE, cache, activations --------------------------------------------- */

static void cuda_embed(pt_backend *be, const pt_config *cfg, const pt_weights *w, const int32_t *ids,
                       const int32_t *pos, int n, void *xv) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (n <= 0) return;
    float *x = (float *)xv;
    const int32_t *di = stage_idx(c, IDX_IDS, ids, (size_t)n);
    const int32_t *dp = w->pos_emb.data ? stage_idx(c, IDX_POS_EMB, pos, (size_t)n) : NULL;
    if (!di || (w->pos_emb.data && !dp)) return;
    const int d = cfg->d_model;
    const float sc = pt_embed_scale(cfg);
    switch (be->dtype) {
    case PT_DTYPE_F32:
        PT_LAUNCH(k_embed<float>, n, 128, c->stream, x, (const float *)w->tok_emb.data,
                  (const float *)w->pos_emb.data, di, dp, d, sc);
        break;
    case PT_DTYPE_BF16:
        PT_LAUNCH(k_embed<__nv_bfloat16>, n, 128, c->stream, x, (const __nv_bfloat16 *)w->tok_emb.data,
                  (const __nv_bfloat16 *)w->pos_emb.data, di, dp, d, sc);
        break;
    default:
        PT_LAUNCH(k_embed<__half>, n, 128, c->stream, x, (const __half *)w->tok_emb.data,
                  (const __half *)w->pos_emb.data, di, dp, d, sc);
        break;
    }
    CU_LAUNCHED("k_embed");
}

static void cuda_norm(pt_backend *be, const pt_config *cfg, const void *x, int n, const float *weight,
                      const float *bias, void *y) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (n <= 0) return;
    const int rms = cfg->norm == PT_NORM_RMSNORM;
    with_act(be, [&](auto *tag) {
        using A = act_t<decltype(tag)>;
        PT_LAUNCH(k_norm<A>, n, 256, c->stream, (const float *)x, (A *)y, weight, bias, cfg->d_model,
                  cfg->norm_eps, rms, cfg->norm_plus_one);
    });
    CU_LAUNCHED("k_norm");
}

static void cuda_rms_norm(pt_backend *be, const pt_config *cfg, void *x, int n, int row_stride, int col0,
                          int groups, int width, const float *weight) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (n <= 0 || groups <= 0) return;
    PT_LAUNCH(k_rms_groups, (unsigned)n * (unsigned)groups, 128, c->stream, (float *)x, row_stride, col0,
              groups, width, weight, cfg->norm_eps, cfg->norm_plus_one); /* float32 rows (backend.h) */
    CU_LAUNCHED("k_rms_groups");
}

static void cuda_softcap(pt_backend *be, float *x, size_t n, float cap) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (!n) return;
    PT_LAUNCH(k_softcap, grid_for(n, 256), 256, c->stream, x, n, cap);
    CU_LAUNCHED("k_softcap");
}

static void cuda_rope_store_kv(pt_backend *be, const pt_config *cfg, void *qkv, int n, const pt_rope_args *rope,
                               void *k_cache, void *v_cache, const int32_t *kv_rows) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (n <= 0) return;
    const int32_t *dr = stage_idx(c, IDX_KV_ROWS, kv_rows, (size_t)n);
    const int32_t *dp = rope ? stage_idx(c, IDX_ROPE_POS, rope->pos, (size_t)n) : NULL;
    const bool alt = rope && rope->alt_freq && rope->alt_rows;
    const uint8_t *da = alt ? stage_bytes(c, IDX_ROPE_ALT, rope->alt_rows, (size_t)n) : NULL;
    if (!dr || (rope && !dp) || (alt && !da)) return;
    const float *f0 = rope ? rope->inv_freq : NULL, *f1 = alt ? rope->alt_freq : NULL;
    const float factor = cfg->rope_attn_factor > 0 ? (float)cfg->rope_attn_factor : 1.0f;
    const int half = pt_rotary_dim(cfg) / 2, hd = cfg->head_dim, H = cfg->n_heads, KV = cfg->n_kv_heads;
    float *x = (float *)qkv; /* float32 rows (backend.h) */
    if (be->kv_dtype == PT_DTYPE_F16)
        PT_LAUNCH(k_rope_store_kv<__half>, n, 128, c->stream, x, (__half *)k_cache, (__half *)v_cache, dr, f0, f1,
                  da, dp, half, hd, H, KV, factor);
    else if (be->kv_dtype == PT_DTYPE_BF16)
        PT_LAUNCH(k_rope_store_kv<__nv_bfloat16>, n, 128, c->stream, x, (__nv_bfloat16 *)k_cache,
                  (__nv_bfloat16 *)v_cache, dr, f0, f1, da, dp, half, hd, H, KV, factor);
    else
        PT_LAUNCH(k_rope_store_kv<float>, n, 128, c->stream, x, (float *)k_cache, (float *)v_cache, dr, f0, f1, da,
                  dp, half, hd, H, KV, factor);
    CU_LAUNCHED("k_rope_store_kv");
}

static void cuda_mlp_act(pt_backend *be, const pt_config *cfg, const void *hv, int n, void *outv) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (n <= 0) return;
    const size_t total = (size_t)n * cfg->d_ff;
    with_act(be, [&](auto *tag) {
        using A = act_t<decltype(tag)>;
        const float *h = (const float *)hv; /* gate|up: float32 rows (backend.h) */
        A *out = (A *)outv;
        const dim3 glu_grid((unsigned)n, (unsigned)((cfg->d_ff + 1023) / 1024));
        if (cfg->mlp == PT_MLP_SWIGLU)
            PT_LAUNCH((k_glu<A, false>), glu_grid, 256, c->stream, h, out, cfg->d_ff);
        else if (cfg->mlp == PT_MLP_GEGLU)
            PT_LAUNCH((k_glu<A, true>), glu_grid, 256, c->stream, h, out, cfg->d_ff);
        else
            PT_LAUNCH(k_gelu_tanh<A>, grid_for(total, 256), 256, c->stream, h, out, total);
    });
    CU_LAUNCHED("mlp activation");
}

static void cuda_add(pt_backend *be, void *x, const void *y, size_t n) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (!n) return;
    PT_LAUNCH(k_add, grid_for(n, 256), 256, c->stream, (float *)x, (const float *)y, n); /* float32 rows */
    CU_LAUNCHED("k_add");
}

static void cuda_row_norms(pt_backend *be, const void *x, int n, int d, float *out, size_t out_stride) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (n <= 0) return;
    PT_LAUNCH(k_row_norms, n, 256, c->stream, (const float *)x, d, out, out_stride);
    CU_LAUNCHED("k_row_norms");
}

static void cuda_row_abs_stats(pt_backend *be, const void *x, int n, int d, float *max_abs,
                               int32_t *argmax, float *median, size_t out_stride) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (n <= 0 || d <= 0) return;
    const size_t smem = (size_t)d * sizeof(uint32_t); /* the row's keys */
    /* 48 KiB of shared memory (static included) without opting in; ask for more early */
    if (smem > ((size_t)40 << 10) && smem > c->row_select_smem) {
        if (CU(cudaFuncSetAttribute((const void *)k_row_abs_stats,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)))
            return;
        c->row_select_smem = smem;
    }
    /* about 8 keys per thread, 1 to 16 warps */
    int threads = ((d + 7) / 8 + 31) / 32 * 32;
    threads = threads < 32 ? 32 : threads > 512 ? 512 : threads;
    PT_LAUNCH_SMEM(k_row_abs_stats, n, threads, smem, c->stream, (const float *)x, d, max_abs,
                   argmax, median, out_stride);
    CU_LAUNCHED("k_row_abs_stats");
}

static void cuda_gather_rows(pt_backend *be, const void *src, const int32_t *rows, int m, int d,
                             void *dst) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (m <= 0) return;
    const int32_t *dr = stage_idx(c, IDX_GATHER, rows, (size_t)m);
    if (!dr) return;
    PT_LAUNCH(k_gather_rows, m, 128, c->stream, (const float *)src, dr, d, (float *)dst);
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
    blas_check(c, cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const int32_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    blas_check(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "TRANSA");
    blas_check(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "TRANSB");
    if (bias) {
        const uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
        const int32_t bt = CUDA_R_32F;
        blas_check(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi), "EPILOGUE");
        blas_check(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt), "BIAS_DATA_TYPE");
    }
    blas_check(c, cublasLtMatrixLayoutCreate(&p->la, t, (uint64_t)in, (uint64_t)out, in), "layout A");
    blas_check(c, cublasLtMatrixLayoutCreate(&p->lb, t, (uint64_t)in, (uint64_t)n, in), "layout B");
    blas_check(c, cublasLtMatrixLayoutCreate(&p->lc, CUDA_R_32F, (uint64_t)out, (uint64_t)n, out), "layout C");
    cublasLtMatmulPreference_t pref;
    blas_check(c, cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    const uint64_t ws = c->lt_ws_bytes;
    const uint32_t al = (uint32_t)align;
    blas_check(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws), "MAX_WORKSPACE");
    const cublasLtMatmulPreferenceAttributes_t al_attrs[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (size_t i = 0; i < sizeof al_attrs / sizeof al_attrs[0]; i++)
        blas_check(c, cublasLtMatmulPreferenceSetAttribute(pref, al_attrs[i], &al, sizeof al), "MIN_ALIGNMENT");
    cublasLtMatmulHeuristicResult_t res;
    int got = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &got);
    cublasLtMatmulPreferenceDestroy(pref);
    p->ok = st == CUBLAS_STATUS_SUCCESS && got > 0 && res.state == CUBLAS_STATUS_SUCCESS;
    if (p->ok) p->algo = res.algo;
    return p->ok ? p : NULL;
}

/* y = x W^T + b on the device weights (one fused part, [out, in] in the compute dtype), x in the
 * activations' type (the compute dtype: no conversion pass), y float32; y += that when
 * accumulate (the GEMM's beta = 1: the residual add done in its epilogue). */
static void cuda_gemm(pt_backend *be, const void *x, int n, const pt_linear *lin, float *y, int accumulate) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (n <= 0) return;
    if (lin->n_parts != 1 || lin->part[0].transposed) {
        pt_backend_fail(be, 0, 0, "cuda backend: linear on weights not loaded by it (internal error)");
        return;
    }
    const void *w = lin->part[0].w.data;
    const float *bias = lin->part[0].b;
    const cudaDataType t = cuda_type(be->dtype);
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    if (c->use_lt) {
        int align = ptr_align(x);
        const int aw = ptr_align(w), ay = ptr_align(y), ab = bias ? ptr_align(bias) : 256;
        align = align < aw ? align : aw;
        align = align < ay ? align : ay;
        align = align < ab ? align : ab;
        cu_plan *p = lt_plan(be, lin->out, lin->in, n, bias != NULL, align);
        if (be->status.failed) return;
        if (p) {
            if (bias && blas_check(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                                    &bias, sizeof bias), "BIAS_POINTER"))
                return;
            blas_check(c, cublasLtMatmul(c->lt, p->desc, &one, w, p->la, x, p->lb, &beta, y, p->lc, y, p->lc,
                                         &p->algo, c->lt_ws, c->lt_ws_bytes, c->stream), "cublasLtMatmul");
            return;
        }
    }
    if (blas_check(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, lin->out, n, lin->in, &one, w, t, lin->in,
                                   x, t, lin->in, &beta, y, CUDA_R_32F, lin->out, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT),
                   "cublasGemmEx"))
        return;
    if (bias) {
        const size_t total = (size_t)n * lin->out;
        PT_LAUNCH(k_bias, grid_for(total, 256), 256, c->stream, y, bias, n, lin->out);
        CU_LAUNCHED("k_bias");
    }
}

/* activations in, float32 rows out (the logits, q|k|v, gate|up, a sublayer before its norm) */
static void cuda_linear(pt_backend *be, const void *x, int n, const pt_linear *lin, float *y) {
    cuda_gemm(be, x, n, lin, y, 0);
}
static void cuda_linear_add(pt_backend *be, const void *x, int n, const pt_linear *lin, void *resid) {
    cuda_gemm(be, x, n, lin, (float *)resid, 1); /* the residual: float32 */
}

/* ---- attention -------------------------------------------------------------------------------- */

/* Whether the tensor-core attention runs (sm_80+, bf16 / f16 compute dtypes, not switched off;
 * head_dim <= 256 is checked at load_weights): then the key/value cache is 16-bit. */
static bool kv16_cache(const cu_ctx *c, pt_compute_dtype dtype) {
    return PT_CUDA_MMA && c->use_mma && dtype != PT_DTYPE_F32;
}

static int plain_hd(int hd) { return hd <= 32 ? 32 : hd <= 64 ? 64 : hd <= 128 ? 128 : 256; }
static int mma_hd(int hd) { return hd <= 16 ? 16 : hd <= 32 ? 32 : hd <= 64 ? 64 : hd <= 128 ? 128 : 256; }

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
template <class T> static attn_kernel mma_fwd(int HDP, int warps, bool packed) {
    if (packed) switch (HDP) { /* (4 warps) */
        case 16: return k_attn_fwd_mma<16, T, 4, true>;
        case 32: return k_attn_fwd_mma<32, T, 4, true>;
        case 64: return k_attn_fwd_mma<64, T, 4, true>;
        case 128: return k_attn_fwd_mma<128, T, 4, true>;
        default: return k_attn_fwd_mma<256, T, 4, true>;
        }
    if (warps == 8) switch (HDP) { /* (head_dim > 128: 4 warps only, mma_fwd_warps) */
        case 16: return k_attn_fwd_mma<16, T, 8>;
        case 32: return k_attn_fwd_mma<32, T, 8>;
        case 64: return k_attn_fwd_mma<64, T, 8>;
        case 128: return k_attn_fwd_mma<128, T, 8>;
        }
    switch (HDP) {
    case 16: return k_attn_fwd_mma<16, T, 4>;
    case 32: return k_attn_fwd_mma<32, T, 4>;
    case 64: return k_attn_fwd_mma<64, T, 4>;
    case 128: return k_attn_fwd_mma<128, T, 4>;
    default: return k_attn_fwd_mma<256, T, 4>; /* Gemma */
    }
}
template <class T> static attn_kernel mma_stats(int HDP, int warps) {
    if (warps == 8) switch (HDP) { /* (head_dim > 128: 4 warps only, mma_stats_warps) */
        case 16: return k_attn_stats_mma<16, T, 8>;
        case 32: return k_attn_stats_mma<32, T, 8>;
        case 64: return k_attn_stats_mma<64, T, 8>;
        case 128: return k_attn_stats_mma<128, T, 8>;
        }
    switch (HDP) {
    case 16: return k_attn_stats_mma<16, T, 4>;
    case 32: return k_attn_stats_mma<32, T, 4>;
    case 64: return k_attn_stats_mma<64, T, 4>;
    case 128: return k_attn_stats_mma<128, T, 4>;
    default: return k_attn_stats_mma<256, T, 4>;
    }
}

/* The tensor-core forward's dynamic shared memory for head dimension HDP (head_dim 256: its
 * resident Q tile, pt_mma_cfg::QRES), the instance opted in once above 48 KiB. */
static int mma_fwd_smem(cu_ctx *c, attn_kernel fwd, int HDP, size_t *smem) {
    *smem = HDP > 128 ? (size_t)pt_mma_cfg<256>::FWD_DYN_SMEM : 0;
    if (*smem <= ((size_t)48 << 10)) return 0;
    int i = 0;
    for (; i < 4 && c->attn_optin[i]; i++)
        if (c->attn_optin[i] == (const void *)fwd) return 0;
    if (CU(cudaFuncSetAttribute((const void *)fwd, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)*smem)))
        return -1;
    if (i < 4) c->attn_optin[i] = (const void *)fwd;
    return 0;
}
#endif

/* Largest GQA group the tensor-core forward packs into one block (mma_fwd_qrows): BQ / 16 = 4
 * queries per 64-row tile at least. */
enum { PT_ATTN_PACK_MAX = 16 };

/* Which attention path runs for a head dimension, and its tile sizes (the tensor-core forward's
 * queries per tile on 4 warps, GQA-packed at the largest group, and the statistics pass's keys
 * per block on 4 warps: the smallest, which bound the work items of every choice; mma_fwd_warps,
 * mma_fwd_qrows, mma_stats_warps). */
struct attn_shape {
    bool mma;
    int HD, BQ, KB;
};
static attn_shape attn_shape_of(const pt_backend *be, int hd) {
    attn_shape s;
    s.mma = be->kv_dtype != PT_DTYPE_F32; /* the cache is in the tensor cores' operand type */
    s.HD = s.mma ? mma_hd(hd) : plain_hd(hd);
    s.BQ = s.mma ? pt_mma_cfg<16>::BQ / PT_ATTN_PACK_MAX : plain_bq(s.HD);
    s.KB = s.mma ? pt_mma_cfg<16>::KB : plain_kb(s.HD);
    return s;
}

/* The work of one block: the keys a query tile streams (pass 1), or the queries that see a key
 * tile (pass 2), as the kernels bound them. */
static long long attn_work(const pt_attn_item &it, const pt_attn_seg *segs, int window, int tile, int pass2) {
    const pt_attn_seg &s = segs[it.seg];
    if (!pass2) {
        const int first = s.qpos + it.start, last = s.qpos + std::min(it.start + tile, s.n_q) - 1;
        return last + 1 - (window > 0 ? std::max(0, first - window + 1) : 0);
    }
    if (!(s.flags & (PT_SEG_MASS | PT_SEG_PATTERN))) return 1; /* attn_last: the final query */
    int end = s.qpos + s.n_q;
    if (!(s.flags & (PT_SEG_PATTERN | PT_SEG_LAST)) && window > 0) end = std::min(end, it.start + tile - 1 + window);
    return end - std::max(s.qpos, it.start);
}

/* Launch order, heaviest blocks first (ties in table order: a total order, the same tables every
 * layer; std::sort allocates nothing): the long tiles start in the first wave instead of
 * trailing in the last one. */
static void heaviest_first(pt_attn_item *items, size_t n, const pt_attn_seg *segs, int window, int tile,
                           int pass2) {
    std::sort(items, items + n, [&](const pt_attn_item &a, const pt_attn_item &b) {
        const long long wa = attn_work(a, segs, window, tile, pass2), wb = attn_work(b, segs, window, tile, pass2);
        return wa != wb ? wa > wb : a.seg != b.seg ? a.seg < b.seg : a.start < b.start;
    });
}

/* Bytes of the attention staging (segments + work items of both passes) for `rows` query rows
 * in at most `rows` segments whose keys (prefix + own) total at most `keys`; BQ the smallest
 * query tile of pass 1, KB the smallest key tile of pass 2 (more items than any larger one). */
static size_t attn_stage_bytes(int rows, size_t keys, int BQ, int KB) {
    const size_t seg_bytes = ((size_t)rows * sizeof(pt_attn_seg) + 15) & ~(size_t)15;
    const size_t n1 = (size_t)rows + (size_t)rows / BQ + 1, n2 = (size_t)rows + keys / KB + 1;
    return seg_bytes + (n1 + n2) * sizeof(pt_attn_item);
}

/* The launch's queries (*queries) and the tile rows they take in tiles of `tile` queries (the
 * return value): what the forward's tile rules weigh. */
static long long padded_queries(const pt_attn_args *a, int tile, long long *queries) {
    long long padded = 0;
    *queries = 0;
    for (int i = 0; i < a->n_segs; i++) {
        const int n = a->segs[i].n_q;
        if (n <= 0) continue;
        *queries += n;
        padded += (long long)(n + tile - 1) / tile * tile;
    }
    return padded;
}

/* Warps of the tensor-core forward for a launch (BQ = 16 per warp; the statistics pass has its
 * own choice by the same rule on its keys, mma_stats_warps). 8 (128-query tiles) halve
 * the key / value tile loads per query, but a tile's rows past its segment's end are warps that
 * hold a block slot and do nothing, and a launch has half the blocks: 8 only where the launch's
 * queries fill at least 3/4 of the 128-query tiles they take (a prompt of 96+ queries, 300 in
 * three tiles); decode steps and short prompts stay on 4. Deterministic: the segments' query
 * counts alone. head_dim > 128: 4 (a 128-row Q tile of 256 + 8 columns exceeds 48 KiB of static
 * shared memory). PUNCTUM_CUDA_ATTN_WARPS=4|8 (read at backend creation) forces it, and the
 * statistics pass's: tests. */
static int mma_fwd_warps(const cu_ctx *c, const pt_attn_args *a, int HDP) {
    if (HDP > 128) return 4;
    if (c->attn_warps) return c->attn_warps;
    long long queries;
    const long long padded = padded_queries(a, 128, &queries);
    return 4 * queries >= 3 * padded ? 8 : 4;
}

/* The statistics a segment wants in this launch (PT_SEG_*): attn_last only where its final
 * query is one of the launch's. */
static int seg_stat_flags(const pt_attn_args *a, const pt_segment *s) {
    const int qpos = s->pos0 + s->q_off;
    int f = 0;
    if (a->mass && s->mass_row >= 0) f |= PT_SEG_MASS;
    if (a->last && s->last_row >= 0 && s->final_pos >= qpos && s->final_pos < qpos + s->n_q) f |= PT_SEG_LAST;
    if (a->pattern && s->pattern_row >= 0) f |= PT_SEG_PATTERN;
    return f;
}

/* First key of a segment's statistics work items: attn_mass alone under a window skips the keys
 * that none of the launch's queries (from qpos) sees. */
static int stats_key_lo(const pt_attn_args *a, int flags, int qpos) {
    const bool mass_only = !(flags & (PT_SEG_LAST | PT_SEG_PATTERN));
    return mass_only && a->window > 0 && qpos - a->window + 1 > 0 ? qpos - a->window + 1 : 0;
}

/* Warps of the tensor-core statistics pass for a launch (KB = 16 keys per warp), the forward's
 * rule (mma_fwd_warps) on the keys its work items cover (stats_key_lo .. the segment's last
 * query, in segments that want statistics): 8 (128-key blocks: each query tile and its lse
 * loaded once for twice the keys) where those keys fill at least 3/4 of the 128-key tiles they
 * take (96+ keys: a prompt), 4 otherwise (short variant suffixes under a window, ragged tails).
 * Deterministic: the segments alone. head_dim > 128: 4, as the forward (no 8-warp instance).
 * PUNCTUM_CUDA_ATTN_WARPS=4|8 forces it (both passes): tests. */
static int mma_stats_warps(const cu_ctx *c, const pt_attn_args *a, int HDP) {
    if (HDP > 128) return 4;
    if (c->attn_warps) return c->attn_warps;
    long long keys = 0, padded = 0;
    for (int i = 0; i < a->n_segs; i++) {
        const pt_segment *s = &a->segs[i];
        const int flags = seg_stat_flags(a, s), qpos = s->pos0 + s->q_off;
        if (s->n_q <= 0 || !flags) continue;
        const int n = qpos + s->n_q - stats_key_lo(a, flags, qpos);
        keys += n;
        padded += (n + 127) / 128 * 128;
    }
    return keys > 0 && 4 * keys >= 3 * padded ? 8 : 4;
}

/* Tile rows per query of the tensor-core forward: the group (GQA-packed: one block per K/V head
 * and query tile, each key / value tile read once for the group's heads) or 1. Packed where the
 * launch's queries fill less than half of the 64-query tiles they would take unpacked (decode
 * steps, short variant suffixes: a tile of one valid row, its K/V read once per head of the
 * group); prompts keep one head a block. Deterministic: the segments' query counts alone.
 * Groups 1 (nothing to share) and above PT_ATTN_PACK_MAX stay unpacked. Packed runs on 4 warps
 * (64 rows, 64 / group queries a tile): the rule never packs a launch that mma_fwd_warps puts on
 * 8 (3/4 of its 128-query tiles filled). PUNCTUM_CUDA_ATTN_PACK=1|0 (read at backend creation)
 * forces it (1: every group 2..PT_ATTN_PACK_MAX, before PUNCTUM_CUDA_ATTN_WARPS): tests. */
static int mma_fwd_qrows(const cu_ctx *c, const pt_attn_args *a) {
    const int group = a->n_heads / a->n_kv_heads;
    if (group < 2 || group > PT_ATTN_PACK_MAX || c->attn_pack == 0) return 1;
    if (c->attn_pack == 1) return group;
    long long queries;
    const long long padded = padded_queries(a, 64, &queries);
    return 2 * queries < padded ? group : 1;
}

static void cuda_attention(pt_backend *be, const pt_attn_args *a) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (a->n_segs <= 0) return;
    const int hd = a->head_dim, H = a->n_heads;
    const attn_shape sh = attn_shape_of(be, hd);
    const bool mma = sh.mma;
    const int HD = sh.HD;
    const int qrows = mma ? mma_fwd_qrows(c, a) : 1;
    const int fwd_warps = !mma || qrows > 1 ? 4 : mma_fwd_warps(c, a, HD);
    const int BQ = mma ? 16 * fwd_warps / qrows : sh.BQ; /* queries per forward tile */
    const int stats_warps = mma ? mma_stats_warps(c, a, HD) : 4;
    const int KB = mma ? 16 * stats_warps : sh.KB; /* keys per statistics block */

    /* segments (this layer's view) and the work items of both passes (the statistics pass only
     * for segments that want statistics: decode steps and variants want none) */
    size_t n1 = 0, n2 = 0;
    long long rows = 0;
    for (int i = 0; i < a->n_segs; i++) {
        const pt_segment *s = &a->segs[i];
        if (s->n_q <= 0) continue;
        n1 += (size_t)(s->n_q + BQ - 1) / BQ;
        if (seg_stat_flags(a, s)) n2 += (size_t)(s->pos0 + s->q_off + s->n_q + KB - 1) / KB;
        if (s->row + s->n_q > rows) rows = s->row + s->n_q;
    }
    if (!n1) return;
    const size_t seg_bytes = ((size_t)a->n_segs * sizeof(pt_attn_seg) + 15) & ~(size_t)15;
    const size_t bytes = seg_bytes + (n1 + n2) * sizeof(pt_attn_item);
    char *h = (char *)host_scratch(c, &c->h_attn, &c->h_attn_cap, bytes);
    if (!h) return;
    memset(h, 0, bytes); /* padding too: upload_once compares the bytes with the last upload */
    pt_attn_seg *hs = (pt_attn_seg *)h;
    pt_attn_item *it1 = (pt_attn_item *)(h + seg_bytes), *it2 = it1 + n1;
    size_t k1 = 0, k2 = 0;
    for (int i = 0; i < a->n_segs; i++) {
        const pt_segment *s = &a->segs[i];
        pt_attn_seg *d = &hs[i];
        d->row = s->row, d->n_q = s->n_q, d->pos0 = s->pos0, d->qpos = s->pos0 + s->q_off;
        d->prefix_kv = s->prefix_kv, d->own_kv = s->own_kv;
        d->ko = s->ko_pos >= 0 && a->layer >= s->ko_lo && a->layer < s->ko_hi ? s->ko_pos : -1;
        d->flags = seg_stat_flags(a, s);
        d->final_pos = d->flags & PT_SEG_LAST ? s->final_pos : -1;
        d->mass_row = s->mass_row, d->last_row = s->last_row, d->pattern_row = s->pattern_row;
        if (s->n_q <= 0) continue;
        for (int q0 = 0; q0 < s->n_q; q0 += BQ) it1[k1++] = pt_attn_item{i, q0};
        if (!d->flags) continue;
        for (int j0 = stats_key_lo(a, d->flags, d->qpos); j0 < d->qpos + s->n_q; j0 += KB)
            it2[k2++] = pt_attn_item{i, j0};
    }
    heaviest_first(it1, k1, hs, a->window, BQ, 0);
    heaviest_first(it2, k2, hs, a->window, KB, 1);
    char *dbuf = (char *)cu_ensure(c, &c->attn, bytes, "attention segments");
    float *lse = (float *)cu_ensure(c, &c->lse, (size_t)rows * H * sizeof(float), "attention lse");
    if (!dbuf || !lse || upload_once(c, &c->attn, h, seg_bytes + (n1 + k2) * sizeof(pt_attn_item)))
        return;

    pt_attn_params P;
    P.q = (const float *)a->q;
    P.act = be->act_dtype;
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
    P.qrows = qrows;
    P.hd = hd;
    P.kvd = a->n_kv_heads * hd;
    P.window = a->window;
    P.scale = a->scale > 0 ? a->scale : 1.0f / sqrtf((float)hd);
    P.softcap = a->softcap;
    const double log2e = 1.4426950408889634; /* the tensor-core path's log2 units */
    P.scale_log2 = (float)(P.scale * log2e);
    P.cap_in = P.softcap > 0 ? (float)((double)P.scale / P.softcap) : 0.0f;
    P.cap_out_log2 = (float)(P.softcap * log2e);

    attn_kernel fwd, stats;
    unsigned stats_threads;
    size_t fwd_smem = 0;
    if (mma) {
#if PT_CUDA_MMA
        /* tensor-core operands: f16 by default for both compute dtypes (three more mantissa bits
         * than bf16 where it matters most, the scores that exp() amplifies; +-65504 is ample for
         * query / key / value activations); PUNCTUM_CUDA_MMA=bf16 selects bf16 operands */
        const bool bf16_ops = c->mma_bf16;
        const bool packed = qrows > 1;
        fwd = bf16_ops ? mma_fwd<__nv_bfloat16>(HD, fwd_warps, packed) : mma_fwd<__half>(HD, fwd_warps, packed);
        stats = bf16_ops ? mma_stats<__nv_bfloat16>(HD, stats_warps) : mma_stats<__half>(HD, stats_warps);
        if (mma_fwd_smem(c, fwd, HD, &fwd_smem)) return;
#else
        fwd = stats = NULL;
#endif
        stats_threads = 32u * (unsigned)stats_warps;
    } else {
        fwd = plain_fwd(HD);
        stats = plain_stats(HD);
        stats_threads = (unsigned)KB;
    }
    PT_LAUNCH_SMEM(fwd, dim3((unsigned)n1, (unsigned)(H / qrows)), 32u * (unsigned)fwd_warps,
                   fwd_smem, c->stream, P);
    CU_LAUNCHED("attention forward");
    if (k2) {
        pt_attn_params P2 = P;
        P2.items = P.items + n1;
        PT_LAUNCH(stats, dim3((unsigned)k2, (unsigned)H), stats_threads, c->stream, P2);
        CU_LAUNCHED("attention statistics");
    }
}

/* ---- vocabulary ------------------------------------------------------------------------------- */

static size_t log_softmax_bytes(int m, int k, size_t *ent_b, size_t *id_b) {
    *ent_b = (size_t)m * sizeof(double);
    *id_b = (size_t)m * k * sizeof(int32_t);
    return *ent_b + *id_b + (size_t)m * k * sizeof(float);
}

/* Copy one call's results from their slot (h: its host copy) to the caller's arrays. */
static void res_unpack(const res_pending *q, const char *h) {
    switch (q->kind) {
    case RES_LOG_SOFTMAX: {
        size_t ent_b, id_b;
        const size_t all = log_softmax_bytes(q->m, q->k, &ent_b, &id_b);
        if (q->entropy) memcpy(q->entropy, h, ent_b);
        if (q->k && q->topk_id) memcpy(q->topk_id, h + ent_b, id_b);
        if (q->k && q->topk_logp) memcpy(q->topk_logp, h + ent_b + id_b, all - ent_b - id_b);
        break;
    }
    case RES_DIVERGENCE: {
        const double *d = (const double *)(const void *)h;
        for (int r = 0; r < q->m; r++) {
            if (q->kl_pq) q->kl_pq[r] = d[3 * r];
            if (q->kl_qp) q->kl_qp[r] = d[3 * r + 1];
            if (q->js) q->js[r] = d[3 * r + 2];
        }
        break;
    }
    case RES_PICK:
        memcpy(q->picked, h, (size_t)q->m * sizeof(float));
        break;
    }
}

/* Fetch every pending result: one copy of the slots in use, one wait. */
static void res_flush(cu_ctx *c) {
    const int n = c->n_pending;
    const size_t bytes = c->res_used;
    c->n_pending = 0;
    c->res_used = 0;
    if (n == 0 || c->be->status.failed) return;
    char *h = (char *)pinned_scratch(c, &c->h_res, &c->h_res_cap, bytes);
    if (!h || CU(cudaMemcpyAsync(h, c->res.p, bytes, cudaMemcpyDeviceToHost, c->stream)) ||
        CU(cudaStreamSynchronize(c->stream)))
        return;
    for (int i = 0; i < n; i++) res_unpack(&c->pending[i], h + c->pending[i].off);
}

/* A slot of `bytes` in res for one call's results (device pointer; *off its offset); NULL on
 * failure. Pending results that leave no room are fetched first. */
static char *res_slot(cu_ctx *c, size_t bytes, size_t *off) {
    size_t o = (c->res_used + 15) & ~(size_t)15;
    if (c->n_pending > 0 && (o + bytes > c->res.cap || c->n_pending == CU_PENDING)) res_flush(c);
    if (c->n_pending == 0) o = 0; /* res may grow now: nothing in it is waited for */
    char *d = (char *)cu_ensure(c, &c->res, o + bytes, "vocabulary results");
    *off = o;
    return d ? d + o : NULL;
}

/* The call's results are in their slot (once the stream gets there): fetch now, or at the next
 * sync when deferred. */
static void res_push(cu_ctx *c, const res_pending *q, size_t bytes) {
    c->pending[c->n_pending++] = *q;
    c->res_used = q->off + bytes;
    if (!c->defer) res_flush(c);
}

static void cuda_log_softmax(pt_backend *be, float *logits, int m, int V, double *entropy, int K,
                             int32_t *topk_id, float *topk_logp) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (m <= 0) return;
    const int k = K > 0 && (topk_id || topk_logp) ? K : 0;
    size_t ent_b, id_b, off;
    const size_t bytes = log_softmax_bytes(m, k, &ent_b, &id_b);
    char *d = res_slot(c, bytes, &off);
    if (!d) return;
    double *d_ent = (double *)(void *)d;
    int32_t *d_id = (int32_t *)(void *)(d + ent_b);
    float *d_lp = (float *)(void *)(d + ent_b + id_b);
    PT_LAUNCH(k_log_softmax, m, PT_VOCAB_THREADS, c->stream, logits, V, entropy ? d_ent : (double *)NULL,
              k, d_id, d_lp);
    if (CU_LAUNCHED("k_log_softmax") || (!entropy && !k)) return;
    res_pending q = {};
    q.kind = RES_LOG_SOFTMAX, q.off = off, q.m = m, q.k = k;
    q.entropy = entropy, q.topk_id = topk_id, q.topk_logp = topk_logp;
    res_push(c, &q, bytes);
}

static void cuda_divergence(pt_backend *be, const float *lp_p, size_t sp, const int32_t *rows_p,
                            const float *lp_q, size_t sq, const int32_t *rows_q, int m, int V,
                            double *kl_pq, double *kl_qp, double *js) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (m <= 0) return;
    const size_t b = (size_t)m * 3 * sizeof(double);
    size_t off;
    double *d = (double *)(void *)res_slot(c, b, &off);
    const int32_t *dp = rows_p ? stage_idx(c, IDX_DIV_P, rows_p, (size_t)m) : NULL;
    const int32_t *dq = rows_q ? stage_idx(c, IDX_DIV_Q, rows_q, (size_t)m) : NULL;
    if (!d || (rows_p && !dp) || (rows_q && !dq)) return;
    PT_LAUNCH(k_divergence, m, PT_VOCAB_THREADS, c->stream, lp_p, sp, dp, lp_q, sq, dq, V, d);
    if (CU_LAUNCHED("k_divergence")) return;
    res_pending q = {};
    q.kind = RES_DIVERGENCE, q.off = off, q.m = m;
    q.kl_pq = kl_pq, q.kl_qp = kl_qp, q.js = js;
    res_push(c, &q, b);
}

static void cuda_pick(pt_backend *be, const float *logp, int m, int V, const int32_t *ids, float *out) {
    PT_BE_GUARD(be);
    cu_ctx *c = ctx_of(be);
    if (m <= 0) return;
    const size_t b = (size_t)m * sizeof(float);
    size_t off;
    float *d = (float *)(void *)res_slot(c, b, &off);
    const int32_t *di = stage_idx(c, IDX_IDS, ids, (size_t)m);
    if (!di || !d) return;
    PT_LAUNCH(k_pick, (m + 127) / 128, 128, c->stream, logp, m, V, di, d);
    if (CU_LAUNCHED("k_pick")) return;
    res_pending q = {};
    q.kind = RES_PICK, q.off = off, q.m = m, q.picked = out;
    res_push(c, &q, b);
}

/* ---- reserve ---------------------------------------------------------------------------------- */

/* Every staging buffer the operations use, sized for r, so that no operation allocates. */
static int cuda_reserve(pt_backend *be, const pt_config *cfg, const pt_reserve *r) {
    cu_ctx *c = ctx_of(be);
    if (be->status.failed) return -1;
    const size_t rows = (size_t)(r->rows > r->logit_rows ? r->rows : r->logit_rows);
    const attn_shape sh = attn_shape_of(be, cfg->head_dim);
    /* keys over a batch's segments: every row's own key plus, for variants and extensions, a
     * prefix of at most max_keys; bounded by rows * 2 for the clean pass and a few hundred
     * variants of max_keys each (larger ones grow the buffer) */
    const size_t keys = rows * 2 + (size_t)256 * (size_t)r->max_keys;
    /* deferred together: a log_softmax's entropy and top-k, two divergences' three sums and two
     * picks (a patching sub-batch); 16-byte aligned slots */
    const size_t res = (size_t)r->logit_rows * (sizeof(double) * 7 + 8 + (size_t)r->topk * 8) + 128;
    const size_t ab = attn_stage_bytes((int)rows, keys, sh.BQ, sh.KB);
    for (int k = 0; k < CU_IDX_SLOTS; k++)
        if (!cu_ensure(c, &c->idx[k], rows * sizeof(int32_t) + 4, "index staging")) return -1;
    if (!cu_ensure(c, &c->lse, (size_t)r->rows * cfg->n_heads * sizeof(float), "attention lse") ||
        !cu_ensure(c, &c->attn, ab, "attention segments") ||
        !cu_ensure(c, &c->res, res, "vocabulary results") ||
        !host_scratch(c, &c->h_attn, &c->h_attn_cap, ab) ||
        !pinned_scratch(c, &c->h_res, &c->h_res_cap, res) ||
        ring_reserve(c, RING_SPAN * (ab > rows * sizeof(int32_t) ? ab : rows * sizeof(int32_t))))
        return -1;
    return 0;
}

static void cuda_release_scratch(pt_backend *be) {
    cu_ctx *c = ctx_of(be);
    CU(cudaStreamSynchronize(c->stream));
    cu_buf *bufs[CU_IDX_SLOTS + 3] = {&c->lse, &c->attn, &c->res};
    for (int k = 0; k < CU_IDX_SLOTS; k++) bufs[3 + k] = &c->idx[k];
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        cu_release(c, bufs[i]->p);
        free(bufs[i]->sent);
        memset(bufs[i], 0, sizeof *bufs[i]);
    }
    free(c->h_attn);
    if (c->h_res) CU(cudaFreeHost(c->h_res));
    c->h_attn = c->h_res = NULL;
    c->h_attn_cap = c->h_res_cap = 0;
    ring_free(&c->ring);
    c->defer = c->n_pending = 0; /* (nothing is deferred between batches) */
    c->res_used = 0;
}

/* ---- creation --------------------------------------------------------------------------------- */

static void cuda_destroy(pt_backend *be) {
    cu_ctx *c = ctx_of(be);
    cudaStreamSynchronize(c->stream);
    ring_free(&c->ring);
    if (c->h_res) cudaFreeHost(c->h_res);
    for (int i = 0; i < CU_PLANS; i++) plan_destroy(&c->plans[i]);
    for (size_t i = 0; i < c->n_allocs; i++) cudaFree(c->allocs[i].p); /* buffers, weights */
    free(c->allocs);
    free(c->wallocs);
    if (c->lt_ws) cudaFree(c->lt_ws);
    cublasLtDestroy(c->lt);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    for (int k = 0; k < CU_IDX_SLOTS; k++) free(c->idx[k].sent);
    cu_buf *more[] = {&c->lse, &c->attn, &c->res};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) free(more[i]->sent);
    free(c->h_attn);
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

extern "C" int pt_backend_cuda_available(const char **why) {
    static int cached = -1;
    static const char *cached_why = "";
    if (cached < 0) cached = device_usable(0, &cached_why);
    if (why) *why = cached ? "" : cached_why;
    return cached;
}

static int env_is(const char *name, const char *value) {
    const char *v = getenv(name);
    return v && !strcmp(v, value);
}

/* The handles of a new context; -1 with e set on failure. */
static int cu_init(cu_ctx *c, int device, pt_error *e) {
    if (cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking) != cudaSuccess ||
        cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS || cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(c->blas, c->stream) != CUBLAS_STATUS_SUCCESS) {
        (void)cudaGetLastError();
        return pt_fail(e, "--backend cuda: cannot initialise CUDA / cuBLAS on device %d", device);
    }
    /* cuBLASLt's workspace is optional: without it (no memory) it picks other algorithms */
    c->lt_ws_bytes = (size_t)32 << 20;
    if (pt_test_alloc_refused(c->lt_ws_bytes) || cudaMalloc(&c->lt_ws, c->lt_ws_bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        c->lt_ws = NULL;
        c->lt_ws_bytes = 0;
    }
    return 0;
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
    cu_ctx *c = (cu_ctx *)pt_try_calloc(1, sizeof *c, "the cuda backend", e);
    pt_backend *be = (pt_backend *)pt_try_calloc(1, sizeof *be, "the cuda backend", e);
    if (!c || !be || cu_init(c, device, e)) {
        free(c);
        free(be);
        return NULL;
    }
    c->be = be;
    c->device = device;
    c->use_lt = !env_is("PUNCTUM_CUDA_GEMM", "cublas");
    c->use_mma = PT_CUDA_MMA && !env_is("PUNCTUM_CUDA_MMA", "0") && prop.major >= 8;
    c->mma_bf16 = env_is("PUNCTUM_CUDA_MMA", "bf16");
    c->attn_warps = env_is("PUNCTUM_CUDA_ATTN_WARPS", "8") ? 8 : env_is("PUNCTUM_CUDA_ATTN_WARPS", "4") ? 4 : 0;
    c->attn_pack = env_is("PUNCTUM_CUDA_ATTN_PACK", "1") ? 1 : env_is("PUNCTUM_CUDA_ATTN_PACK", "0") ? 0 : -1;

    be->name = "cuda";
    be->ctx = c;
    be->dtype = dtype;
    /* the GEMMs' inputs in the compute dtype (backend.h: float32 rows where precision needs them);
     * the residual stream, which sums every layer's contributions, float32 (linear_add
     * accumulates into it in the GEMM) */
    be->resid_bytes = sizeof(float);
    be->act_dtype = dtype;
    be->act_bytes = dtype == PT_DTYPE_F32 ? sizeof(float) : 2;
    /* the tensor-core attention reads its keys and values as f16 / bf16 operands: the cache holds
     * them so (half the bytes of float32 to store and to stream through every attention tile) */
    be->kv_dtype = kv16_cache(c, dtype) ? (c->mma_bf16 ? PT_DTYPE_BF16 : PT_DTYPE_F16) : PT_DTYPE_F32;
    be->kv_bytes = be->kv_dtype == PT_DTYPE_F32 ? sizeof(float) : 2;
    snprintf(be->device_name, sizeof be->device_name, "%.120s", prop.name);
    char mem[32];
    snprintf(be->description, sizeof be->description, "device %d: %.120s, %s", device, prop.name,
             pt_fmt_bytes((double)prop.totalGlobalMem, mem));
    be->destroy = cuda_destroy;
    be->load_weights = cuda_load_weights;
    be->free_weights = cuda_free_weights;
    be->reserve = cuda_reserve;
    be->release_scratch = cuda_release_scratch;
    be->mem_available = cuda_mem_available;
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->to_device = cuda_to_device;
    be->to_host = cuda_to_host;
    be->copy = cuda_copy;
    be->fill = cuda_fill;
    be->sync = cuda_sync;
    be->defer_results = cuda_defer_results;
    be->embed = cuda_embed;
    be->norm = cuda_norm;
    be->rms_norm = cuda_rms_norm;
    be->softcap = cuda_softcap;
    be->linear = cuda_linear;
    be->linear_add = cuda_linear_add;
    be->rope_store_kv = cuda_rope_store_kv;
    be->attention = cuda_attention;
    be->mlp_act = cuda_mlp_act;
    be->add = cuda_add;
    be->row_norms = cuda_row_norms;
    be->row_abs_stats = cuda_row_abs_stats;
    be->gather_rows = cuda_gather_rows;
    be->resid_to_host = cuda_resid_to_host;
    be->log_softmax = cuda_log_softmax;
    be->divergence = cuda_divergence;
    be->pick = cuda_pick;
    return be;
}
