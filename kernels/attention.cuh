/* punctum — attention kernels of the CUDA backend. Semantics: cpu.c attend_segment_head.
 *
 * The T x T matrix is never materialised. Two passes over the packed segments:
 *
 * 1. k_attn_fwd*: query-major flash pass. A block owns (a tile of one segment's queries, one
 *    head) and streams the visible keys in tiles with an online softmax; it writes the output
 *    rows and each query's log-sum-exp (lse) of its scaled, masked scores. GQA-packed (the
 *    tensor-core forward, P.qrows = group): a block owns (a tile of queries, one K/V head), its
 *    tile rows (query, head of the group) pairs, so that each key / value tile in shared memory
 *    serves the whole group (decode steps: the cache is read once per K/V head, not per head).
 * 2. k_attn_stats*: key-major statistics pass (only when mass / last / patterns are wanted). A
 *    block owns (a tile of one segment's keys, one head), walks the segment's queries that can
 *    see them, recomputes p = exp(s - lse) with the same score arithmetic as pass 1 (the mma
 *    path: scores and lse in log2 units, p = exp2(s2 - lse2), one function for both), and
 *    accumulates attn_mass for its keys in registers: each (segment, key, head) has exactly one
 *    owner, so no atomics; it also writes attn_last (the final query's row) and patterns.
 *
 * Key position j of a segment lives in cache row prefix_kv + j (j < pos0) or own_kv + j - pos0;
 * query position i (qpos <= i < qpos + n_q) in activation row row + i - qpos.
 * Query i sees key j iff j <= i, i - j < window (window > 0), and not (j == ko && i > j).
 *
 * Two implementations of each pass:
 * - plain (every dtype; the only one for f32): float FMAs, one key per lane for scores and
 *   one head dimension per lane (strided) for the output; HD = head_dim rounded up to 32..256.
 * - mma (bf16/f16 compute dtypes, head_dim <= 256, PT_CUDA_MMA): tensor-core tiles
 *   (mma.sync m16n8k16; q, k, v and p rounded to f16, or bf16 with PUNCTUM_CUDA_MMA=bf16;
 *   float accumulation), FlashAttention-2 style register-resident softmax and output. The
 *   key/value cache is already in the operand type (k_rope_store_kv rounds once): key and value
 *   tiles arrive by 16-byte cp.async while the warps compute, fragments come by ldmatrix. */
#ifndef PUNCTUM_KERNELS_ATTENTION_CUH
#define PUNCTUM_KERNELS_ATTENTION_CUH

#include "pt_cuda.h"

#include <math.h>

enum { PT_SEG_MASS = 1, PT_SEG_LAST = 2, PT_SEG_PATTERN = 4 };

/* A segment as the kernels see it: one layer's knockout already resolved. Its queries are
 * positions qpos .. qpos+n_q-1 (qpos = pos0 + q_off: decode steps have own keys before their
 * query), at rows row .. row+n_q-1. */
struct pt_attn_seg {
    int row, n_q, pos0, qpos, prefix_kv, own_kv;
    int ko;        /* knocked-out key position in this layer, -1: none */
    int final_pos; /* query position whose row goes to attn_last (-1: none) */
    int flags;     /* PT_SEG_* wanted for this segment */
    long long mass_row, last_row, pattern_row;
};

/* One block's work: segment and first query (pass 1) or first key (pass 2). */
struct pt_attn_item {
    int seg, start;
};

/* Element type of the output (the activations): values of pt_compute_dtype. */
enum { PT_ACT_F32 = 0, PT_ACT_BF16 = 1, PT_ACT_F16 = 2 };

struct pt_attn_params {
    const float *q; /* query rows: the fused q|k|v rows (float32) */
    int q_stride;
    const void *k, *v; /* this layer's cache: float (plain path), T (tensor-core path) */
    void *out;         /* [rows, H * hd] (activations, element type act) */
    int act;           /* PT_ACT_* of out */
    float *lse;         /* [rows, H]: natural log (plain path), log2 (tensor-core path) */
    const pt_attn_seg *segs;
    const pt_attn_item *items;
    float *mass, *last, *pattern;
    int LH, layer_off; /* n_layers * H, layer * H */
    int H, group, hd, kvd, window;
    /* tile rows per query of the tensor-core forward: 1, or the group (GQA-packed: a block owns
     * one K/V head, tile row r is query r / group of head kvh * group + r % group) */
    int qrows;
    float scale;
    float softcap; /* > 0: scores -> softcap * tanh(s / softcap) */
    /* the tensor-core path's scores in log2 units (exp2 is one instruction, exp a multiply and
     * one), the constants folded once on the host: scale * log2(e) without soft-capping;
     * scale / softcap and softcap * log2(e) with it */
    float scale_log2, cap_in, cap_out_log2;
};

/* The score of a dot product q.k: scaled, then soft-capped, as cpu.c (both passes use it). */
PT_DEV float pt_score(const pt_attn_params &P, float dot) {
    const float s = dot * P.scale;
    return P.softcap > 0.0f ? P.softcap * tanhf(s / P.softcap) : s;
}

/* The same score in log2 units (x log2(e)): one multiply without soft-capping. Both tensor-core
 * passes use it, so that they agree bit for bit on every score. */
PT_DEV float pt_score_log2(const pt_attn_params &P, float dot) {
    return P.softcap > 0.0f ? P.cap_out_log2 * tanhf(dot * P.cap_in) : dot * P.scale_log2;
}

/* Element i of activations of type act = v rounded to nearest: a branch uniform across the
 * grid, taken once per output element. */
PT_DEV void pt_st_act(void *p, size_t i, float v, int act) {
    if (act == PT_ACT_BF16)
        pt_st((__nv_bfloat16 *)p + i, v);
    else if (act == PT_ACT_F16)
        pt_st((__half *)p + i, v);
    else
        ((float *)p)[i] = v;
}

PT_DEV int pt_kv_row(const pt_attn_seg &s, int j) {
    return j < s.pos0 ? s.prefix_kv + j : s.own_kv + (j - s.pos0);
}
PT_DEV bool pt_visible(int i, int j, int window, int ko) {
    return j <= i && (window <= 0 || i - j < window) && !(j == ko && i > j);
}

/* ============================================================================================
 * plain path
 * ========================================================================================== */

template <int HD> struct pt_plain_cfg {
    static constexpr int RW = HD <= 128 ? 8 : 2;    /* query rows per warp (pass 1) */
    static constexpr int BQ = 4 * RW;               /* query rows per block (pass 1) */
    static constexpr int BK = 32;                   /* keys per tile (pass 1): one per lane */
    static constexpr int KB = HD <= 128 ? 64 : 32;  /* keys per block (pass 2): one per thread */
    static constexpr int QB = HD <= 64 ? 32 : (HD <= 128 ? 16 : 8); /* queries per tile (pass 2) */
};

template <int HD>
__global__ void __launch_bounds__(128) k_attn_fwd(pt_attn_params P) {
    using C = pt_plain_cfg<HD>;
    constexpr int RW = C::RW, BQ = C::BQ, BK = C::BK, NC = HD / 32;
    PT_SHARED(float, Qs, [BQ][HD]);
    PT_SHARED(float, KVs, [BK][HD + 1]); /* keys, then values, of the current tile */
    PT_SHARED(float, Ps, [4][RW][BK]);

    const pt_attn_item it = P.items[blockIdx.x];
    const pt_attn_seg s = P.segs[it.seg];
    const int h = blockIdx.y, kvh = h / P.group, hd = P.hd;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const float *kc = (const float *)P.k, *vc = (const float *)P.v; /* the plain path's f32 cache */
    const int q0 = it.start, nq = s.n_q - q0 < BQ ? s.n_q - q0 : BQ;
    const int i_first = s.qpos + q0, i_last = i_first + nq - 1;

    for (int x = tid; x < BQ * HD; x += blockDim.x) {
        const int r = x / HD, d = x % HD;
        Qs[r][d] = r < nq && d < hd ? P.q[(size_t)(s.row + q0 + r) * P.q_stride + (size_t)h * hd + d] : 0.0f;
    }

    float m[RW], l[RW], o[RW][NC];
PT_UNROLL
    for (int r = 0; r < RW; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
PT_UNROLL
        for (int c = 0; c < NC; c++) o[r][c] = 0.0f;
    }
    /* this warp's queries: positions wi0 .. wi1 (none when w * RW >= nq) */
    const int wi0 = i_first + w * RW;
    const int wi1 = wi0 + RW - 1 < i_last ? wi0 + RW - 1 : i_last;
    const bool warp_live = w * RW < nq;
    const int j_lo = P.window > 0 && i_first - P.window + 1 > 0 ? i_first - P.window + 1 : 0;

    for (int j0 = j_lo; j0 <= i_last; j0 += BK) {
        const int nk = i_last - j0 + 1 < BK ? i_last - j0 + 1 : BK;
        __syncthreads(); /* Qs written / previous values consumed */
        for (int x = tid; x < BK * HD; x += blockDim.x) {
            const int jj = x / HD, d = x % HD;
            KVs[jj][d] = jj < nk && d < hd ? kc[(size_t)pt_kv_row(s, j0 + jj) * P.kvd + (size_t)kvh * hd + d] : 0.0f;
        }
        __syncthreads();
        /* does any query of this warp see any key of the tile? (warp-uniform) */
        const bool active = warp_live && j0 <= wi1 &&
                            (P.window <= 0 || j0 + nk - 1 > wi0 - P.window);
        float corr[RW];
        if (active) {
            const int j = j0 + lane;
            float sc[RW];
PT_UNROLL
            for (int r = 0; r < RW; r++) sc[r] = 0.0f;
            for (int d = 0; d < hd; d++) {
                const float kd = KVs[lane][d];
PT_UNROLL
                for (int r = 0; r < RW; r++) sc[r] += Qs[w * RW + r][d] * kd;
            }
PT_UNROLL
            for (int r = 0; r < RW; r++) {
                const int i = wi0 + r;
                const bool ok = i <= i_last && lane < nk && pt_visible(i, j, P.window, s.ko);
                const float x = ok ? pt_score(P, sc[r]) : -INFINITY;
                const float mt = pt_warp_max(x);
                const float mn = mt > m[r] ? mt : m[r];
                const float p = ok ? expf(x - mn) : 0.0f;
                corr[r] = m[r] == -INFINITY ? 0.0f : expf(m[r] - mn);
                l[r] = l[r] * corr[r] + pt_warp_sum(p);
                m[r] = mn;
                Ps[w][r][lane] = p;
            }
        }
        __syncthreads(); /* scores done: the tile's keys can be replaced by its values */
        for (int x = tid; x < BK * HD; x += blockDim.x) {
            const int jj = x / HD, d = x % HD;
            KVs[jj][d] = jj < nk && d < hd ? vc[(size_t)pt_kv_row(s, j0 + jj) * P.kvd + (size_t)kvh * hd + d] : 0.0f;
        }
        __syncthreads();
        if (active) {
PT_UNROLL
            for (int r = 0; r < RW; r++)
PT_UNROLL
                for (int c = 0; c < NC; c++) o[r][c] *= corr[r];
            for (int jj = 0; jj < nk; jj++) {
PT_UNROLL
                for (int c = 0; c < NC; c++) {
                    const float vv = KVs[jj][lane + 32 * c];
PT_UNROLL
                    for (int r = 0; r < RW; r++) o[r][c] += Ps[w][r][jj] * vv;
                }
            }
        }
    }
    if (warp_live) {
        const int od = P.H * hd;
PT_UNROLL
        for (int r = 0; r < RW; r++) {
            const int qr = w * RW + r;
            if (qr >= nq) continue;
            const size_t row = (size_t)s.row + q0 + qr;
            const float inv = 1.0f / l[r];
PT_UNROLL
            for (int c = 0; c < NC; c++) {
                const int d = lane + 32 * c;
                if (d < hd) pt_st_act(P.out, row * od + (size_t)h * hd + d, o[r][c] * inv, P.act);
            }
            if (lane == 0) P.lse[row * P.H + h] = m[r] + logf(l[r]);
        }
    }
}

template <int HD>
__global__ void __launch_bounds__(pt_plain_cfg<HD>::KB) k_attn_stats(pt_attn_params P) {
    using C = pt_plain_cfg<HD>;
    constexpr int KB = C::KB, QB = C::QB;
    PT_SHARED(float, Ks, [KB][HD + 1]);
    PT_SHARED(float, Qs, [QB][HD]);
    PT_SHARED(float, Ls, [QB]);

    const pt_attn_item it = P.items[blockIdx.x];
    const pt_attn_seg s = P.segs[it.seg];
    const int h = blockIdx.y, kvh = h / P.group, hd = P.hd, tid = threadIdx.x;
    const float *kc = (const float *)P.k; /* the plain path's f32 cache */
    const int lh = P.layer_off + h;
    const int n_keys = s.qpos + s.n_q;
    const int j0 = it.start, j = j0 + tid;
    const bool kvalid = j < n_keys;

    for (int x = tid; x < KB * HD; x += blockDim.x) {
        const int jj = x / HD, d = x % HD;
        Ks[jj][d] = j0 + jj < n_keys && d < hd
                        ? kc[(size_t)pt_kv_row(s, j0 + jj) * P.kvd + (size_t)kvh * hd + d] : 0.0f;
    }
    const bool want_mass = s.flags & PT_SEG_MASS, want_pat = s.flags & PT_SEG_PATTERN;
    const bool want_last = s.flags & PT_SEG_LAST;
    int i_begin = s.qpos > j0 ? s.qpos : j0, i_end = n_keys;
    if (!want_mass && !want_pat) { /* attn_last alone: the final query only */
        i_begin = s.final_pos;
        i_end = s.final_pos + 1;
    } else if (!want_pat && !want_last && P.window > 0 && j0 + KB - 1 + P.window < i_end) {
        i_end = j0 + KB - 1 + P.window; /* later queries see none of these keys */
    }
    float acc = 0.0f;
    for (int qt = i_begin; qt < i_end; qt += QB) {
        const int nq = i_end - qt < QB ? i_end - qt : QB;
        __syncthreads();
        for (int x = tid; x < QB * HD; x += blockDim.x) {
            const int r = x / HD, d = x % HD;
            Qs[r][d] = r < nq && d < hd
                           ? P.q[(size_t)(s.row + qt + r - s.qpos) * P.q_stride + (size_t)h * hd + d] : 0.0f;
        }
        for (int r = tid; r < QB; r += blockDim.x)
            Ls[r] = r < nq ? P.lse[(size_t)(s.row + qt + r - s.qpos) * P.H + h] : 0.0f;
        __syncthreads();
        if (!kvalid) continue;
        for (int r = 0; r < nq; r++) {
            const int i = qt + r;
            if (j > i) continue;
            float dot = 0.0f;
            for (int d = 0; d < hd; d++) dot += Qs[r][d] * Ks[tid][d];
            const float p = pt_visible(i, j, P.window, s.ko) ? expf(pt_score(P, dot) - Ls[r]) : 0.0f;
            acc += p;
            if (want_pat) P.pattern[(size_t)(s.pattern_row + (long long)i * (i + 1) / 2 + j) * P.LH + lh] = p;
            if (want_last && i == s.final_pos) P.last[(size_t)(s.last_row + j) * P.LH + lh] = p;
        }
    }
    if (want_mass && kvalid) P.mass[(size_t)(s.mass_row + j) * P.LH + lh] += acc;
}

/* ============================================================================================
 * tensor-core (mma.sync m16n8k16) path
 * ========================================================================================== */

template <int HDP> struct pt_mma_cfg {
    static constexpr int BQ = 64; /* queries per block (pass 1) on 4 warps (16 each); 128 on 8 */
    /* keys per tile (pass 1): head_dim 256 halves it (shared memory, registers) */
    static constexpr int BK = HDP > 128 ? 32 : 64;
    /* pass 1 at head_dim 256 keeps the Q tile resident in shared memory and loads its fragments
     * per k-step: held in registers (KS x 4 = 64) beside the 128 output accumulators they
     * spilled. Its rows Q, K, V then take 64 + 2 x 32 rows (66 KiB: dynamic shared memory, opted
     * in by the backend); otherwise the Q tile's rows become the key and value tiles'. */
    static constexpr bool QRES = HDP > 128;
    /* pass 1's shared rows */
    static constexpr int SROWS = QRES ? 64 + 2 * BK : 128;
    static constexpr int KB = 64;       /* keys per block (pass 2) on 4 warps (16 each); 128 on 8 */
    static constexpr int QB = 64;       /* queries per tile (pass 2) */
    static constexpr int LD = HDP + 8;  /* smem row stride in elements: conflict-free fragments */
    static constexpr int KS = HDP / 16; /* k-steps over the head dimension */
    static constexpr int ND = HDP / 8;  /* 8-wide n-blocks over the head dimension */
    /* pass 1's dynamic shared memory in bytes (16-bit operands), 0: static */
    static constexpr int FWD_DYN_SMEM = QRES ? SROWS * LD * 2 : 0;
};

/* Fill rows [0, ROWS) x [0, HDP) of a [ROWS][LD] T tile from query rows (P.q + row_off(r); zero
 * padding), rounded to the operand type. Synchronous stores. */
template <int HDP, int ROWS = 64, class T, class RowFn>
PT_DEV void pt_load_tile(T (*dst)[pt_mma_cfg<HDP>::LD], const pt_attn_params &P, int nrows, RowFn row_off) {
    for (int x = threadIdx.x; x < ROWS * HDP; x += blockDim.x) {
        const int r = x / HDP, d = x % HDP;
        float v = 0.0f;
        if (r < nrows && d < P.hd) v = P.q[row_off(r) + d];
        pt_st(&dst[r][d], v);
    }
}

/* Start bringing keys (or values) j0 .. j0+nrows-1 of one K/V head from the cache (T, already in
 * the operand type) into rows [0, nrows) of a [ROWS][LD] tile; rows nrows.. and columns hd..
 * zero. head_dim a multiple of 8: 16-byte cp.async chunks (cache rows and head offsets are then
 * 16-byte aligned), visible after the caller's commit + wait + __syncthreads. Otherwise (head_dim
 * 12, 20, ...) element copies, visible after the caller's __syncthreads. */
template <int HDP, int ROWS, class T>
PT_DEV void pt_load_kv_tile(T (*dst)[pt_mma_cfg<HDP>::LD], const T *head, const pt_attn_seg &s, int j0,
                            int nrows, int hd, int kvd) {
    if ((hd & 7) == 0) {
        constexpr int CH = HDP / 8; /* 16-byte chunks per row */
        for (int x = threadIdx.x; x < ROWS * CH; x += blockDim.x) {
            const int r = x / CH, c = x % CH, left = r < nrows ? 2 * (hd - 8 * c) : 0;
            const int bytes = left <= 0 ? 0 : left > 16 ? 16 : left;
            const T *src = bytes ? head + (size_t)pt_kv_row(s, j0 + r) * kvd + 8 * c : head;
            pt_cp_async16_zfill(&dst[r][8 * c], src, bytes);
        }
        return;
    }
    for (int x = threadIdx.x; x < ROWS * HDP; x += blockDim.x) {
        const int r = x / HDP, d = x % HDP;
        uint16_t u = 0;
        if (r < nrows && d < hd) memcpy(&u, head + (size_t)pt_kv_row(s, j0 + r) * kvd + d, 2);
        memcpy((void *)&dst[r][d], &u, 2); /* (the 16-bit type's bits as they are) */
    }
}

/* ---- mma fragments from shared memory (ldmatrix) ----------------------------------------------
 * A tile is row-major [rows][LD] of T. For S = A B^T both operands are such tiles (queries and
 * keys: the contraction runs along a row); for O = P V, V's tile is [keys][dims] (.trans). */

/* A fragments (m16 x k16) of rows m0 .. m0+15, k-step ks. */
template <int LD, class T> PT_DEV void pt_frag_a(uint32_t (&a)[4], T (*tile)[LD], int m0, int ks, int lane) {
    pt_ldmatrix<4>(a, &tile[m0 + (lane & 15)][ks * 16 + (lane >> 4) * 8]);
}

/* acc += A B^T for the 8 rows n0 .. n0+7 of a tile as B (k16 x n8 per k-step), over KS k-steps:
 * two k-steps per ldmatrix.x4 (one .x2 when KS is odd). */
template <int KS, int LD, class T>
PT_DEV void pt_mma_abt(float acc[4], const uint32_t (&a)[KS][4], T (*tile)[LD], int n0, int lane) {
    if constexpr (KS % 2 == 0 && KS < 16) {
PT_UNROLL
        for (int ks = 0; ks < KS; ks += 2) {
            uint32_t b[4];
            pt_ldmatrix<4>(b, &tile[n0 + (lane & 7)][ks * 16 + (lane >> 3) * 8]);
            pt_mma16816(acc, a[ks], b, acc, (T *)nullptr);
            pt_mma16816(acc, a[ks + 1], b + 2, acc, (T *)nullptr);
        }
    } else {
PT_UNROLL
        for (int ks = 0; ks < KS; ks++) {
            uint32_t b[2];
            pt_ldmatrix<2>(b, &tile[n0 + (lane & 7)][ks * 16 + ((lane >> 3) & 1) * 8]);
            pt_mma16816(acc, a[ks], b, acc, (T *)nullptr);
        }
    }
}

/* acc[nb] += A B^T for 16 rows m0.. of tile qt as A (fragments loaded per k-step: none held
 * across the k-steps) and the NB 8-row blocks of tile kt as B: two blocks per ldmatrix.x4. The
 * same k-step order per block as pt_mma_abt, so the same sums. */
template <int KS, int NB, int LD, class T>
PT_DEV void pt_mma_abt_smem(float (&acc)[NB][4], T (*qt)[LD], int m0, T (*kt)[LD], int lane) {
    static_assert(NB % 2 == 0, "blocks in pairs");
PT_UNROLL
    for (int ks = 0; ks < KS; ks++) {
        uint32_t a[4];
        pt_frag_a(a, qt, m0, ks, lane);
PT_UNROLL
        for (int nb = 0; nb < NB; nb += 2) {
            uint32_t b[4];
            const int row = nb * 8 + (lane & 7) + (lane >> 4) * 8; /* blocks nb, nb + 1 */
            pt_ldmatrix<4>(b, &kt[row][ks * 16 + ((lane >> 3) & 1) * 8]);
            pt_mma16816(acc[nb], a, b, acc[nb], (T *)nullptr);
            pt_mma16816(acc[nb + 1], a, b + 2, acc[nb + 1], (T *)nullptr);
        }
    }
}

/* o[n] += P V over the 16 keys of k-step kk for every 8-wide block n of the head dimension: V's
 * fragments for two blocks per ldmatrix.x4.trans. */
template <int ND, int LD, class T>
PT_DEV void pt_mma_pv(float (&o)[ND][4], const uint32_t (&p)[4], T (*vt)[LD], int kk, int lane) {
PT_UNROLL
    for (int n = 0; n < ND; n += 2) {
        uint32_t b[4];
        pt_ldmatrix<4, true>(b, &vt[kk * 16 + (lane & 15)][n * 8 + (lane >> 4) * 8]);
        pt_mma16816(o[n], p, b, o[n], (T *)nullptr);
        pt_mma16816(o[n + 1], p, b + 2, o[n + 1], (T *)nullptr);
    }
}

/* Pass 1 on tensor cores. Per key tile, FlashAttention-2's pipeline on one key and one value
 * buffer: the values' cp.async runs while the warps compute S = Q K^T and the softmax, the next
 * keys' while they compute O += P V; two barriers per tile. WARPS warps of 16 queries each: 8
 * (BQ = 128) share each key / value tile between twice the queries of 4 (half the tile loads
 * per query); the 128-row Q tile fits the 128 shared rows of head_dim <= 128 only (head_dim 256:
 * the Q tile stays resident, pt_mma_cfg::QRES, launched with FWD_DYN_SMEM bytes). At least one
 * block per SM for 8 warps: without it ptxas caps them at 128 registers (two blocks) and spills
 * at head_dim 64; 4 warps keep the unspecified minimum (0), whose register counts they had.
 * PACKED (GQA-packed, P.qrows = group): blockIdx.y is the K/V head and row r of the tile is query
 * r / group of head kvh * group + r % group (query-major: a warp's 16 rows are whole queries of
 * consecutive positions, so its causal / window range stays one interval of 16 / group queries,
 * and any group <= 16 fits, 7 included: BQ / group queries a tile, the rows past them padding).
 * Unpacked, qr = 1 at compile time makes the same arithmetic row = query, head = blockIdx.y, and
 * the code (registers) of before. Packed instances: 4 warps, at least one block per SM (without
 * it ptxas caps head_dim 64 at 128 registers and spills on sm_80). */
template <int HDP, class T, int WARPS, bool PACKED = false>
__global__ void __launch_bounds__(32 * WARPS, PACKED ? 1 : WARPS / 8) k_attn_fwd_mma(pt_attn_params P) {
    using C = pt_mma_cfg<HDP>;
    constexpr int BK = C::BK, LD = C::LD, KS = C::KS, ND = C::ND, NB = BK / 8, KK = BK / 16;
    constexpr int BQ = 16 * WARPS;
    static_assert((WARPS == 4 || WARPS == 8) && (C::QRES ? BQ + 2 * BK : BQ) <= C::SROWS,
                  "the tiles fit the shared rows");
    static_assert(!PACKED || WARPS == 4, "packed: 4 warps");
    constexpr bool QRES = C::QRES;
    T(*Sm)[LD]; /* QRES: Q, K, V tiles; otherwise the Q tile first, then the key and value tiles */
    if constexpr (QRES) {
        PT_SHARED_DYNAMIC(T, dyn);
        Sm = reinterpret_cast<T(*)[LD]>(dyn);
    } else {
        PT_SHARED(T, Ss, [C::SROWS][LD]);
        Sm = Ss;
    }
    T(*Qs)[LD] = Sm;
    T(*Ks)[LD] = QRES ? Sm + BQ : Sm;
    T(*Vs)[LD] = QRES ? Sm + BQ + BK : Sm + 64;

    const pt_attn_item it = P.items[blockIdx.x];
    const pt_attn_seg s = P.segs[it.seg];
    /* qr tile rows per query; row r is head h0 + r % qr */
    const int qr = PACKED ? P.qrows : 1, h0 = blockIdx.y * qr, kvh = h0 / P.group, hd = P.hd;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int BQQ = BQ / qr; /* queries per tile */
    const int q0 = it.start, nq = s.n_q - q0 < BQQ ? s.n_q - q0 : BQQ, nrows = nq * qr;
    const int i_first = s.qpos + q0, i_last = i_first + nq - 1;
    const T *khead = (const T *)P.k + (size_t)kvh * hd, *vhead = (const T *)P.v + (size_t)kvh * hd;

    pt_load_tile<HDP, BQ>(Qs, P, nrows, [&](int r) {
        return (size_t)(s.row + q0 + r / qr) * P.q_stride + (size_t)(h0 + r % qr) * hd;
    });
    __syncthreads();
    uint32_t qa[QRES ? 1 : KS][4]; /* (QRES: loaded per k-step, pt_mma_abt_smem) */
    if constexpr (!QRES) {
PT_UNROLL
        for (int ks = 0; ks < KS; ks++) pt_frag_a(qa[ks], Qs, 16 * w, ks, lane);
    }
    /* rows g and g + 8 of this warp's 16: their queries' positions (row r < nrows iff its query
     * r / qr < nq: padding rows are past i_last) */
    const int ia = i_first + (16 * w + g) / qr, ib = i_first + (16 * w + g + 8) / qr;
    const bool va = ia <= i_last, vb = ib <= i_last;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float o[ND][4];
PT_UNROLL
    for (int n = 0; n < ND; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    /* this warp's queries: wi0 .. wend, its first and last rows' (wend past i_last where the
     * warp's rows end in padding), wi1 the last in the tile */
    const int wi0 = i_first + 16 * w / qr, wend = i_first + (16 * w + 15) / qr;
    const int wi1 = wend < i_last ? wend : i_last;
    const bool warp_live = 16 * w < nrows;
    const int j_lo = P.window > 0 && i_first - P.window + 1 > 0 ? i_first - P.window + 1 : 0;

    /* every warp holds its Q fragments: the rows become the key tile (QRES: rows of their own) */
    if constexpr (!QRES) __syncthreads();
    pt_load_kv_tile<HDP, BK>(Ks, khead, s, j_lo, i_last - j_lo + 1 < BK ? i_last - j_lo + 1 : BK, hd, P.kvd);
    pt_cp_async_commit();
    for (int j0 = j_lo; j0 <= i_last; j0 += BK) {
        const int nk = i_last - j0 + 1 < BK ? i_last - j0 + 1 : BK;
        pt_cp_async_wait<0>();
        __syncthreads(); /* this tile's keys landed; every warp is done with the previous values */
        pt_load_kv_tile<HDP, BK>(Vs, vhead, s, j0, nk, hd, P.kvd);
        pt_cp_async_commit();
        const bool active = warp_live && j0 <= wi1 && (P.window <= 0 || j0 + nk - 1 > wi0 - P.window);
        /* every one of the warp's 16 rows is a query that sees every key of the tile (none past
         * the diagonal, the window's edge or the knocked-out key): no mask (warp-uniform) */
        const bool full = wend <= i_last && j0 + BK - 1 <= wi0 &&
                          (P.window <= 0 || wend - j0 < P.window) && (s.ko < j0 || s.ko >= j0 + BK);
        uint32_t pa[KK][4]; /* P as the A operand of KK k-steps of 16 keys */
        if (active) { /* warp-uniform */
            float corr[2];
            /* S = Q K^T for 16 rows x BK keys */
            float sc[NB][4];
PT_UNROLL
            for (int nb = 0; nb < NB; nb++) {
                sc[nb][0] = sc[nb][1] = sc[nb][2] = sc[nb][3] = 0.0f;
                if constexpr (!QRES) pt_mma_abt<KS>(sc[nb], qa, Ks, nb * 8, lane);
            }
            if constexpr (QRES) pt_mma_abt_smem<KS>(sc, Qs, 16 * w, Ks, lane);
            /* mask, scale, online softmax in log2 units (rows g: elements 0,1; g + 8: 2,3) */
            float mx[2] = {-INFINITY, -INFINITY};
PT_UNROLL
            for (int nb = 0; nb < NB; nb++)
PT_UNROLL
                for (int e = 0; e < 4; e++) {
                    const int jj = nb * 8 + 2 * t + (e & 1), j = j0 + jj;
                    const int i = e < 2 ? ia : ib;
                    const bool ok = full || ((e < 2 ? va : vb) && jj < nk && pt_visible(i, j, P.window, s.ko));
                    const float x = ok ? pt_score_log2(P, sc[nb][e]) : -INFINITY;
                    sc[nb][e] = x;
                    mx[e >> 1] = x > mx[e >> 1] ? x : mx[e >> 1];
                }
PT_UNROLL
            for (int rr = 0; rr < 2; rr++) {
                mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 1));
                mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 2));
                const float mn = mx[rr] > m[rr] ? mx[rr] : m[rr];
                corr[rr] = m[rr] == -INFINITY ? 0.0f : exp2f(m[rr] - mn);
                m[rr] = mn;
                l[rr] *= corr[rr];
            }
PT_UNROLL
            for (int nb = 0; nb < NB; nb++) {
                float p[4];
PT_UNROLL
                for (int e = 0; e < 4; e++) {
                    p[e] = sc[nb][e] == -INFINITY ? 0.0f : exp2f(sc[nb][e] - m[e >> 1]);
                    l[e >> 1] += p[e];
                }
                const int kk = nb >> 1, hi = nb & 1;
                pa[kk][0 + 2 * hi] = pt_pack2(p[0], p[1], (T *)nullptr);
                pa[kk][1 + 2 * hi] = pt_pack2(p[2], p[3], (T *)nullptr);
            }
PT_UNROLL
            for (int n = 0; n < ND; n++) { /* (here: corr need not live across the barrier) */
                o[n][0] *= corr[0], o[n][1] *= corr[0];
                o[n][2] *= corr[1], o[n][3] *= corr[1];
            }
        }
        pt_cp_async_wait<0>();
        __syncthreads(); /* this tile's values landed; every warp is done with its keys */
        if (j0 + BK <= i_last) {
            const int nk_next = i_last - j0 - BK + 1 < BK ? i_last - j0 - BK + 1 : BK;
            pt_load_kv_tile<HDP, BK>(Ks, khead, s, j0 + BK, nk_next, hd, P.kvd);
            pt_cp_async_commit();
        }
        if (active) {
PT_UNROLL
            for (int kk = 0; kk < KK; kk++) pt_mma_pv<ND>(o, pa[kk], Vs, kk, lane);
        }
    }
    /* row sums: each lane holds its columns' share */
PT_UNROLL
    for (int rr = 0; rr < 2; rr++) {
        l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 1);
        l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 2);
    }
    const int od = P.H * hd;
PT_UNROLL
    for (int rr = 0; rr < 2; rr++) {
        if (!(rr ? vb : va)) continue;
        const int r = 16 * w + g + 8 * rr, h = h0 + r % qr;
        const size_t row = (size_t)s.row + q0 + r / qr;
        const float inv = 1.0f / l[rr];
PT_UNROLL
        for (int n = 0; n < ND; n++)
PT_UNROLL
            for (int e = 0; e < 2; e++) {
                const int d = n * 8 + 2 * t + e;
                if (d < hd) pt_st_act(P.out, row * od + (size_t)h * hd + d, o[n][2 * rr + e] * inv, P.act);
            }
        if (t == 0) P.lse[row * P.H + h] = m[rr] + log2f(l[rr]); /* log2 units: pass 2's */
    }
}

/* Pass 2 on tensor cores. WARPS warps of 16 keys each (KB = 16 * WARPS keys a block): a warp
 * holds its keys as A fragments for the whole block and walks the query tiles (QB = 64 queries,
 * B operand) with S^T = K Q^T. 8 warps (KB = 128) share each query tile between twice the keys
 * of 4 (half the query tile and lse loads per key); the shared memory stays the 4-warp kernel's
 * 64 rows: the 128 keys come through them in two rounds of 64 (warps 0-3 take their fragments,
 * a barrier, then warps 4-7), before the rows become each query tile. At least one block per SM,
 * as the 4-warp kernel always had (8 warps: up to 255 registers a thread; ptxas uses 59-104 at
 * head_dim 16-128, about as many as on 4 warps, and spills none). */
template <int HDP, class T, int WARPS>
__global__ void __launch_bounds__(32 * WARPS, 1) k_attn_stats_mma(pt_attn_params P) {
    using C = pt_mma_cfg<HDP>;
    constexpr int QB = C::QB, LD = C::LD, KS = C::KS, KB = 16 * WARPS;
    static_assert(WARPS == 4 || WARPS == 8, "64-key rounds through the 64 shared rows");
    PT_SHARED(T, Qs, [64][LD]); /* this block's keys first (64 a round), then each query tile */
    PT_SHARED(float, Ls, [QB]);

    const pt_attn_item it = P.items[blockIdx.x];
    const pt_attn_seg s = P.segs[it.seg];
    const int h = blockIdx.y, kvh = h / P.group, hd = P.hd, lh = P.layer_off + h;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int n_keys = s.qpos + s.n_q, j0 = it.start;
    const int nkb = n_keys - j0 < KB ? n_keys - j0 : KB;
    const T *khead = (const T *)P.k + (size_t)kvh * hd;

    uint32_t ka[KS][4];
PT_UNROLL
    for (int rd = 0; rd < WARPS / 4; rd++) { /* round rd: keys j0 + 64 rd .., warps 4 rd .. 4 rd + 3 */
        if (rd > 0) __syncthreads(); /* the previous round's warps hold their fragments */
        const int left = nkb - 64 * rd;
        pt_load_kv_tile<HDP, 64>(Qs, khead, s, j0 + 64 * rd, left < 0 ? 0 : left, hd, P.kvd);
        pt_cp_async_wait_all();
        __syncthreads();
        if (WARPS == 4 || w >> 2 == rd) {
PT_UNROLL
            for (int ks = 0; ks < KS; ks++) pt_frag_a(ka[ks], Qs, 16 * (WARPS == 4 ? w : w & 3), ks, lane);
        }
    }
    /* this lane's keys: rows g and g + 8 of the warp's 16 */
    const int ja = j0 + 16 * w + g, jb = ja + 8;
    const bool ka_ok = ja < n_keys, kb_ok = jb < n_keys;
    const int wj0 = j0 + 16 * w;

    const bool want_mass = s.flags & PT_SEG_MASS, want_pat = s.flags & PT_SEG_PATTERN;
    const bool want_last = s.flags & PT_SEG_LAST;
    int i_begin = s.qpos > j0 ? s.qpos : j0, i_end = n_keys;
    if (!want_mass && !want_pat) {
        i_begin = s.final_pos;
        i_end = s.final_pos + 1;
    } else if (!want_pat && !want_last && P.window > 0 && j0 + KB - 1 + P.window < i_end) {
        i_end = j0 + KB - 1 + P.window; /* later queries see none of these keys */
    }
    float acc0 = 0.0f, acc1 = 0.0f;
    for (int qt = i_begin; qt < i_end; qt += QB) {
        const int nq = i_end - qt < QB ? i_end - qt : QB;
        __syncthreads(); /* key fragments loaded / previous queries consumed */
        pt_load_tile<HDP>(Qs, P, nq, [&](int r) {
            return (size_t)(s.row + qt + r - s.qpos) * P.q_stride + (size_t)h * hd;
        });
        for (int r = threadIdx.x; r < QB; r += blockDim.x)
            Ls[r] = r < nq ? P.lse[(size_t)(s.row + qt + r - s.qpos) * P.H + h] : 0.0f;
        __syncthreads();
        if (wj0 > qt + nq - 1 || wj0 >= n_keys) continue; /* warp-uniform: no query sees these keys */
PT_UNROLL
        for (int nb = 0; nb < 8; nb++) {
            if (qt + nb * 8 >= i_end) break; /* warp-uniform */
            float sc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            pt_mma_abt<KS>(sc, ka, Qs, nb * 8, lane);
PT_UNROLL
            for (int e = 0; e < 4; e++) {
                const int qq = nb * 8 + 2 * t + (e & 1), i = qt + qq;
                const int j = e < 2 ? ja : jb;
                const bool kok = e < 2 ? ka_ok : kb_ok;
                if (!kok || qq >= nq || j > i) continue;
                const float p = pt_visible(i, j, P.window, s.ko) ? exp2f(pt_score_log2(P, sc[e]) - Ls[qq]) : 0.0f;
                if (e < 2) /* (not acc[e >> 1]: keeps the accumulators in registers) */
                    acc0 += p;
                else
                    acc1 += p;
                if (want_pat) P.pattern[(size_t)(s.pattern_row + (long long)i * (i + 1) / 2 + j) * P.LH + lh] = p;
                if (want_last && i == s.final_pos) P.last[(size_t)(s.last_row + j) * P.LH + lh] = p;
            }
        }
    }
    acc0 += __shfl_xor_sync(0xffffffffu, acc0, 1);
    acc0 += __shfl_xor_sync(0xffffffffu, acc0, 2);
    acc1 += __shfl_xor_sync(0xffffffffu, acc1, 1);
    acc1 += __shfl_xor_sync(0xffffffffu, acc1, 2);
    if (want_mass && t == 0) {
        if (ka_ok) P.mass[(size_t)(s.mass_row + ja) * P.LH + lh] += acc0;
        if (kb_ok) P.mass[(size_t)(s.mass_row + jb) * P.LH + lh] += acc1;
    }
}

#endif
