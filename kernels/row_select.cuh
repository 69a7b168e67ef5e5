/* punctum — per-row order statistics of the residual stream: the stat `massive` (SPEC §3), the
 * largest |x| of each row, its index and the median |x|. Semantics: src/backend/cpu.c,
 * cpu_row_abs_stats; both select exactly over the bits of |x|, so the values agree bit for bit. */
#ifndef PUNCTUM_KERNELS_ROW_SELECT_CUH
#define PUNCTUM_KERNELS_ROW_SELECT_CUH

#include "pt_cuda.h"

/* |x| as its bits: non-negative floats are ordered as their bit patterns (a NaN above inf). */
PT_DEV uint32_t pt_abs_key(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & 0x7fffffffu;
}
PT_DEV float pt_key_value(uint32_t k) {
    float f;
    memcpy(&f, &k, sizeof f);
    return f;
}

/* Sum over the block with a single barrier (blockDim.x a multiple of 32): no thread may have
 * read `red` (32 elements of shared memory) since the last barrier, so callers alternate two. */
template <class T> PT_DEV T pt_block_sum_1sync(T v, T *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = pt_warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    T r = lane < nw ? red[lane] : T(0);
    return pt_warp_sum(r);
}

/* One row per block (blockDim.x a multiple of 32, d keys of dynamic shared memory).
 * max and argmax: one block reduction over key << 32 | ~index (the largest key, then the lowest
 * index). Median: the keys of ranks (d-1)/2 and d/2 (equal for odd d) by bisection over the 31
 * key bits from the top, no sort: bit b of the rank-k key is 0 iff at least k+1 keys are <= the
 * bits found so far followed by 0 1...1. Both ranks per step, their two counts packed into one
 * 64-bit block sum (31 barriers in all). */
__global__ void k_row_abs_stats(const float *x, int d, float *max_abs, int32_t *argmax,
                                float *median, size_t stride) {
    PT_SHARED_DYNAMIC(uint32_t, keys);
    PT_SHARED(unsigned long long, red, [2][32]);
    const int r = blockIdx.x;
    const float *xr = x + (size_t)r * d;
    unsigned long long best = 0;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const uint32_t k = pt_abs_key(xr[i]);
        keys[i] = k;
        const unsigned long long v = (unsigned long long)k << 32 | (uint32_t) ~(uint32_t)i;
        best = v > best ? v : best;
    }
    best = pt_block_max(best, red[0], 0ull); /* its barriers also publish the keys */
    const uint32_t rank_lo = (uint32_t)(d - 1) / 2, rank_hi = (uint32_t)d / 2;
    uint32_t lo = 0, hi = 0;
    for (int b = 30; b >= 0; b--) {
        const uint32_t ones = (1u << b) - 1, t_lo = lo | ones, t_hi = hi | ones;
        unsigned long long c = 0; /* keys <= t_lo in the low half, keys <= t_hi in the high */
        for (int i = threadIdx.x; i < d; i += blockDim.x) {
            const uint32_t k = keys[i];
            c += (unsigned long long)(k <= t_lo) | (unsigned long long)(k <= t_hi) << 32;
        }
        c = pt_block_sum_1sync(c, red[(b + 1) & 1]); /* red[1] first: pt_block_max read red[0] */
        if ((uint32_t)c <= rank_lo) lo |= 1u << b;
        if ((uint32_t)(c >> 32) <= rank_hi) hi |= 1u << b;
    }
    if (threadIdx.x == 0) {
        const size_t o = (size_t)r * stride;
        max_abs[o] = pt_key_value((uint32_t)(best >> 32));
        argmax[o] = (int32_t) ~(uint32_t)best;
        median[o] = (float)(0.5 * ((double)pt_key_value(lo) + (double)pt_key_value(hi)));
    }
}

#endif
