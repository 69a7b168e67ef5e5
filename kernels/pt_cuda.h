/* punctum — what every CUDA source of the backend includes: the CUDA headers (or, in the
 * emulation build, tests/emu/cuda_emu.h, which supplies the same API on the CPU), the one
 * kernel-launch macro both builds share, dtype helpers, warp/block reductions and the
 * tensor-core MMA wrapper.
 *
 * PT_CUDA_EMU   defined by the emulation build (punctum-emu, the cuda-emu tests).
 * PT_CUDA_MMA   1 (default): the attention kernels have a tensor-core path (mma.sync
 *               m16n8k16, f16 (default) or bf16 operands, f32 accumulation) used for the
 *               bf16/f16 compute dtypes; 0 compiles it out and every dtype takes the plain f32
 *               path. In the emulation build the same path runs through
 *               pt_emu::mma_m16n8k16, which implements the PTX fragment layouts. At run time
 *               PUNCTUM_CUDA_MMA=0 selects the plain path, PUNCTUM_CUDA_MMA=bf16 bf16 operands. */
#ifndef PUNCTUM_PT_CUDA_H
#define PUNCTUM_PT_CUDA_H

#ifndef PT_CUDA_MMA
#define PT_CUDA_MMA 1
#endif

#ifdef PT_CUDA_EMU
#include "cuda_emu.h"
/* Launch `kern` (a __global__ function or a pointer to one) over grid x block on `stream`. */
#define PT_LAUNCH(kern, grid, block, stream, ...)                                                 \
    pt_emu::launch((grid), (block), (stream), #kern, [=]() { (kern)(__VA_ARGS__); })
#else
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define PT_LAUNCH(kern, grid, block, stream, ...) (kern)<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

#include <stdint.h>

#define PT_DEV __device__ __forceinline__

/* Unroll a loop with a compile-time trip count (register arrays indexed by it stay registers). */
#ifdef PT_CUDA_EMU
#define PT_UNROLL _Pragma("GCC unroll 16")
#else
#define PT_UNROLL _Pragma("unroll")
#endif

/* ---- storage types ---------------------------------------------------------------------------- */

PT_DEV float pt_ld(const float *p) { return *p; }
PT_DEV float pt_ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
PT_DEV float pt_ld(const __half *p) { return __half2float(*p); }

PT_DEV void pt_st(float *p, float v) { *p = v; }
PT_DEV void pt_st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
PT_DEV void pt_st(__half *p, float v) { *p = __float2half_rn(v); }

/* Two floats as a packed pair of 16-bit values (lo in the low half), as mma operands want them. */
PT_DEV uint32_t pt_pack2(float lo, float hi, __nv_bfloat16 *) {
    __nv_bfloat16 a = __float2bfloat16_rn(lo), b = __float2bfloat16_rn(hi);
    uint16_t ua, ub;
    memcpy(&ua, &a, 2);
    memcpy(&ub, &b, 2);
    return (uint32_t)ua | ((uint32_t)ub << 16);
}
PT_DEV uint32_t pt_pack2(float lo, float hi, __half *) {
    __half a = __float2half_rn(lo), b = __float2half_rn(hi);
    uint16_t ua, ub;
    memcpy(&ua, &a, 2);
    memcpy(&ub, &b, 2);
    return (uint32_t)ua | ((uint32_t)ub << 16);
}

/* ---- reductions ------------------------------------------------------------------------------- */

template <class T> PT_DEV T pt_warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <class T> PT_DEV T pt_warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) {
        const T u = __shfl_xor_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
 * result. `red` is caller-provided shared scratch of 32 elements. Contains __syncthreads. */
template <class T> PT_DEV T pt_block_sum(T v, T *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = pt_warp_sum(v);
    __syncthreads(); /* red may still be read by a previous reduction */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    T r = lane < nw ? red[lane] : T(0);
    return pt_warp_sum(r);
}
template <class T> PT_DEV T pt_block_max(T v, T *red, T lowest) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = pt_warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    T r = lane < nw ? red[lane] : lowest;
    return pt_warp_max(r);
}

/* ---- tensor cores ----------------------------------------------------------------------------- */

/* d = a * b + c for one m16n8k16 tile, bf16 (T = __nv_bfloat16) or f16 (T = __half) inputs,
 * float accumulators; warp-collective (all 32 lanes). */
PT_DEV void pt_mma16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                        __nv_bfloat16 *) {
#ifdef PT_CUDA_EMU
    pt_emu::mma_m16n8k16(d, a, b, c, true);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
                   "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    (void)a, (void)b;
    d[0] = c[0], d[1] = c[1], d[2] = c[2], d[3] = c[3];
    __trap(); /* never reached: the host selects the mma path only on sm_80+ */
#endif
}
PT_DEV void pt_mma16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                        __half *) {
#ifdef PT_CUDA_EMU
    pt_emu::mma_m16n8k16(d, a, b, c, false);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
                   "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    (void)a, (void)b;
    d[0] = c[0], d[1] = c[1], d[2] = c[2], d[3] = c[3];
    __trap();
#endif
}

#endif
