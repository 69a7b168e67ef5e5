/* punctum — row-wise and elementwise kernels of the CUDA backend: embedding, norms, RoPE,
 * key/value store, MLP activations, add, fill, row norms, row gather, bias.
 * Semantics: src/backend/cpu.c, op by op (same formulas, same float/double choices).
 * A is the activations' element type (float, or the bf16 / f16 compute dtype: read widened to
 * float, computed in float, written rounded to nearest); the residual stream is float. */
#ifndef PUNCTUM_KERNELS_ELEMENTWISE_CUH
#define PUNCTUM_KERNELS_ELEMENTWISE_CUH

#include "pt_cuda.h"

/* grid-stride loop over n elements */
#define PT_FOR_N(i, n)                                                                             \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                       \
         i += (size_t)gridDim.x * blockDim.x)

__global__ void k_fill(float *dst, float v, size_t n) {
    PT_FOR_N(i, n) dst[i] = v;
}

/* the residual x += float32 rows y */
__global__ void k_add(float *x, const float *y, size_t n) {
    PT_FOR_N(i, n) x[i] += y[i];
}

/* y[r, :] += b */
__global__ void k_bias(float *y, const float *b, int n, int out) {
    const size_t total = (size_t)n * out;
    PT_FOR_N(i, total) y[i] += b[i % (size_t)out];
}

/* x[r] = tok[ids[r]] (+ pos[pos[r]]); one block per row. */
template <class T>
__global__ void k_embed(float *x, const T *tok, const T *pos_emb, const int32_t *ids,
                        const int32_t *pos, int d, float scale) {
    const int r = blockIdx.x;
    const T *t = tok + (size_t)ids[r] * d;
    const T *p = pos_emb ? pos_emb + (size_t)pos[r] * d : nullptr;
    float *xr = x + (size_t)r * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float v = pt_ld(t + i);
        if (scale != 1.0f) v *= scale; /* Gemma: x float32(sqrt(d)) */
        if (p) v += pt_ld(p + i);
        xr[i] = v;
    }
}

/* RMSNorm of the block's group of n floats (xr -> yr of type Y, may alias): times g, or (1 + g). */
template <class Y>
PT_DEV void pt_rms_group(const float *xr, Y *yr, int n, const float *g, double eps, int plus_one, double *red) {
    double ss = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += (double)xr[i] * xr[i];
    ss = pt_block_sum(ss, red);
    const float inv = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = threadIdx.x; i < n; i += blockDim.x) pt_st(yr + i, (plus_one ? 1.0f + g[i] : g[i]) * (xr[i] * inv));
}

/* LayerNorm / RMSNorm of one row per block, sums in double as the CPU reference; g NULL: the
 * row copied as it is (no norm). */
template <class A>
__global__ void k_norm(const float *x, A *y, const float *g, const float *b, int d, double eps, int rms,
                       int plus_one) {
    PT_SHARED(double, red, [32]);
    const int r = blockIdx.x;
    const float *xr = x + (size_t)r * d;
    A *yr = y + (size_t)r * d;
    if (!g) {
        for (int i = threadIdx.x; i < d; i += blockDim.x) pt_st(yr + i, xr[i]);
    } else if (rms) {
        pt_rms_group(xr, yr, d, g, eps, plus_one, red);
    } else {
        double s = 0;
        for (int i = threadIdx.x; i < d; i += blockDim.x) s += xr[i];
        const double mean = pt_block_sum(s, red) / d;
        double v = 0;
        for (int i = threadIdx.x; i < d; i += blockDim.x) {
            const double t = xr[i] - mean;
            v += t * t;
        }
        const double var = pt_block_sum(v, red) / d;
        const double inv = 1.0 / sqrt(var + eps);
        for (int i = threadIdx.x; i < d; i += blockDim.x)
            pt_st(yr + i, (float)((xr[i] - mean) * inv) * g[i] + b[i]);
    }
}

/* RMSNorm in place of group g of row r: block (r * groups + g); see backend.h rms_norm. */
__global__ void k_rms_groups(float *x, int row_stride, int col0, int groups, int width,
                             const float *g, double eps, int plus_one) {
    PT_SHARED(double, red, [32]);
    const int r = blockIdx.x / groups, k = blockIdx.x % groups;
    float *v = x + (size_t)r * row_stride + col0 + (size_t)k * width;
    pt_rms_group(v, v, width, g, eps, plus_one, red);
}

/* x = cap * tanh(x / cap) (final-logit soft-capping) */
__global__ void k_softcap(float *x, size_t n, float cap) {
    PT_FOR_N(i, n) x[i] = cap * tanhf(x[i] / cap);
}

/* RoPE and the key/value store of fused qkv row r (one block per row; see backend.h
 * rope_store_kv): q heads rotated in place; k heads rotated into cache row kv_rows[r], v copied
 * there, in the cache's element type KV (float32, or the tensor-core attention's f16 / bf16
 * operand type: the float32 value rounded once, to nearest, as the attention would round it on
 * every load). Rotate-half over the first 2*half dims of each head (head_dim hd) with table
 * inv_freq, or alt_freq where alt[r] (longrope); inv_freq NULL: no rotation. cos/sin of the
 * float32 angle evaluated in double and times `factor`, as the CPU reference does. half <= 256. */
template <class KV>
__global__ void k_rope_store_kv(float *qkv, KV *k_cache, KV *v_cache, const int32_t *kv_rows, const float *inv_freq,
                                const float *alt_freq, const uint8_t *alt, const int32_t *pos, int half, int hd,
                                int n_heads, int n_kv_heads, float factor) {
    PT_SHARED(float, cs, [2][256]);
    const int r = blockIdx.x, qd = n_heads * hd, kvd = n_kv_heads * hd;
    float *row = qkv + (size_t)r * (qd + 2 * kvd);
    const float *k = row + qd, *v = row + qd + kvd;
    const size_t dst = (size_t)kv_rows[r] * kvd;
    if (!inv_freq) half = 0; /* every dim passes through: a plain store */
    if (half) {              /* uniform over the block: the barrier is reached by all threads */
        const float *f = alt && alt[r] ? alt_freq : inv_freq;
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            const float ang = (float)pos[r] * f[i];
            cs[0][i] = (float)cos((double)ang) * factor;
            cs[1][i] = (float)sin((double)ang) * factor;
        }
        __syncthreads();
        for (int j = threadIdx.x; j < n_heads * half; j += blockDim.x) {
            float *q = row + (size_t)(j / half) * hd;
            const int i = j % half;
            const float x1 = q[i], x2 = q[i + half];
            q[i] = x1 * cs[0][i] - x2 * cs[1][i];
            q[i + half] = x2 * cs[0][i] + x1 * cs[1][i];
        }
    }
    /* k element j = head * hd + i: the rotated value when i < 2*half (the partner i +- half in
     * the same head), else the value as it is */
    for (int j = threadIdx.x; j < kvd; j += blockDim.x) {
        const int i = j % hd;
        float y = k[j];
        if (i < half)
            y = k[j] * cs[0][i] - k[j + half] * cs[1][i];
        else if (i < 2 * half)
            y = k[j] * cs[0][i - half] + k[j - half] * cs[1][i - half];
        pt_st(&k_cache[dst + j], y);
        pt_st(&v_cache[dst + j], v[j]);
    }
}

PT_DEV float pt_gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

template <class A> __global__ void k_gelu_tanh(const float *h, A *out, size_t n) {
    PT_FOR_N(i, n) pt_st(out + i, pt_gelu_tanh(h[i]));
}

PT_DEV float pt_silu(float x) { return x / (1.0f + expf(-x)); }

/* Gated MLP activation: out[r, c] = act(gate) * up of row r of h = [gate | up] (float32 rows),
 * act silu (SwiGLU) or gelu_tanh (GeGLU). Block (r, y) serves columns y * 1024 .. + 1023 of row
 * r: the row comes from the grid, not from a 64-bit division of a flat index per element. */
template <class A, bool GELU> __global__ void k_glu(const float *h, A *out, int ff) {
    const float *gate = h + (size_t)blockIdx.x * 2 * ff, *up = gate + ff;
    A *o = out + (size_t)blockIdx.x * ff;
    const int c1 = ff < (int)(blockIdx.y + 1) * 1024 ? ff : (int)(blockIdx.y + 1) * 1024;
    for (int c = (int)blockIdx.y * 1024 + threadIdx.x; c < c1; c += blockDim.x)
        pt_st(o + c, (GELU ? pt_gelu_tanh(gate[c]) : pt_silu(gate[c])) * up[c]);
}

/* out[r * stride] = ||x[r]||_2 (one block per row, double sum). */
__global__ void k_row_norms(const float *x, int d, float *out, size_t stride) {
    PT_SHARED(double, red, [32]);
    const int r = blockIdx.x;
    const float *xr = x + (size_t)r * d;
    double ss = 0;
    for (int i = threadIdx.x; i < d; i += blockDim.x) ss += (double)xr[i] * xr[i];
    ss = pt_block_sum(ss, red);
    if (threadIdx.x == 0) out[(size_t)r * stride] = (float)sqrt(ss);
}

/* dst[i] = src[rows[i]] (one block per row). */
__global__ void k_gather_rows(const float *src, const int32_t *rows, int d, float *dst) {
    const int i = blockIdx.x;
    const float *s = src + (size_t)rows[i] * d;
    float *o = dst + (size_t)i * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) o[c] = s[c];
}

#endif
