/* punctum — kernels over the vocabulary: log-softmax with entropy and top-k, divergences,
 * picking one log-probability per row. One block per row; sums in double, as the CPU
 * reference (src/backend/cpu.c). */
#ifndef PUNCTUM_KERNELS_VOCAB_CUH
#define PUNCTUM_KERNELS_VOCAB_CUH

#include "pt_cuda.h"

#include <math.h>

enum { PT_VOCAB_THREADS = 256 };

/* (value, id) ordered by value descending, then id ascending: a precedes b. */
PT_DEV bool pt_before(float va, int ia, float vb, int ib) {
    return va > vb || (va == vb && ia < ib);
}

/* In place: row r of logits -> log-softmax; entropy[r] (double); top-k ids / log-probs, ties
 * broken by the lower id, found in K rounds: round k takes the first element, in that order,
 * that comes after round k-1's. */
__global__ void __launch_bounds__(PT_VOCAB_THREADS)
k_log_softmax(float *logits, int V, double *entropy, int K, int32_t *topk_id, float *topk_lp) {
    PT_SHARED(float, redf, [32]);
    PT_SHARED(double, redd, [32]);
    PT_SHARED(float, rv, [32]);
    PT_SHARED(int, ri, [32]);
    PT_SHARED(float, prev_v, );
    PT_SHARED(int, prev_i, );
    const int r = blockIdx.x;
    float *x = logits + (size_t)r * V;

    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) mx = x[v] > mx ? x[v] : mx;
    mx = pt_block_max(mx, redf, -INFINITY);
    double sum = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) sum += exp((double)(x[v] - mx));
    sum = pt_block_sum(sum, redd);
    const float lse = (float)log(sum);
    double ent = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        const float lp = (x[v] - mx) - lse;
        x[v] = lp;
        ent -= exp((double)lp) * lp;
    }
    ent = pt_block_sum(ent, redd); /* its barriers also order the writes above before top-k */
    if (threadIdx.x == 0 && entropy) entropy[r] = ent;

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int k = 0; k < K; k++) {
        const bool first = k == 0;
        const float pv = first ? 0.0f : prev_v;
        const int pi = first ? -1 : prev_i;
        float bv = -INFINITY;
        int bi = -1;
        for (int v = threadIdx.x; v < V; v += blockDim.x) {
            const float xv = x[v];
            if (!first && !pt_before(pv, pi, xv, v)) continue; /* not after the previous */
            if (bi < 0 || pt_before(xv, v, bv, bi)) bv = xv, bi = v;
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (oi >= 0 && (bi < 0 || pt_before(ov, oi, bv, bi))) bv = ov, bi = oi;
        }
        /* no barrier before this write: the previous round's reads of rv / ri (warp 0) and of
         * prev_v / prev_i (everyone, before the scan) are ordered by the barriers below */
        if (lane == 0) rv[warp] = bv, ri[warp] = bi;
        __syncthreads();
        if (warp == 0) {
            bv = lane < nw ? rv[lane] : -INFINITY;
            bi = lane < nw ? ri[lane] : -1;
            for (int o = 16; o > 0; o >>= 1) {
                const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
                const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
                if (oi >= 0 && (bi < 0 || pt_before(ov, oi, bv, bi))) bv = ov, bi = oi;
            }
            if (lane == 0) {
                prev_v = bv, prev_i = bi;
                topk_id[(size_t)r * K + k] = bi;
                topk_lp[(size_t)r * K + k] = bi >= 0 ? bv : -INFINITY;
            }
        }
        __syncthreads();
    }
}

/* out[3r .. 3r+2] = KL(P||Q), KL(Q||P), JS for row r: P = lp_p + i sp, i = rows_p ? rows_p[r] :
 * r, Q likewise. */
__global__ void __launch_bounds__(PT_VOCAB_THREADS)
k_divergence(const float *lp_p, size_t sp, const int32_t *rows_p, const float *lp_q, size_t sq,
             const int32_t *rows_q, int V, double *out) {
    PT_SHARED(double, red, [32]);
    const int r = blockIdx.x;
    const float *p = lp_p + (size_t)(rows_p ? rows_p[r] : r) * sp;
    const float *q = lp_q + (size_t)(rows_q ? rows_q[r] : r) * sq;
    double a = 0, b = 0, jsd = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        const double lp = p[v], lq = q[v], pp = exp(lp), pq = exp(lq);
        if (pp > 0) a += pp * (lp - lq);
        if (pq > 0) b += pq * (lq - lp);
        const double mid = 0.5 * (pp + pq);
        if (mid > 0) {
            const double lm = log(mid);
            if (pp > 0) jsd += 0.5 * pp * (lp - lm);
            if (pq > 0) jsd += 0.5 * pq * (lq - lm);
        }
    }
    a = pt_block_sum(a, red);
    b = pt_block_sum(b, red);
    jsd = pt_block_sum(jsd, red);
    if (threadIdx.x == 0) {
        out[3 * (size_t)r] = a;
        out[3 * (size_t)r + 1] = b;
        out[3 * (size_t)r + 2] = jsd;
    }
}

__global__ void k_pick(const float *logp, int m, int V, const int32_t *ids, float *out) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r < m) out[r] = ids[r] >= 0 && ids[r] < V ? logp[(size_t)r * V + ids[r]] : NAN;
}

#endif
