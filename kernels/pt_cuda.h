/* punctum — what every CUDA source of the backend includes: the CUDA headers (or, in the
 * emulation build, tests/emu/cuda_emu.h, which supplies the same API on the CPU), the kernel-
 * launch and shared-memory macros both builds share, dtype helpers, warp/block reductions, the
 * tensor-core MMA wrapper, cp.async and ldmatrix.
 *
 * PT_CUDA_EMU   defined by the emulation build (punctum-emu, the cuda-emu tests).
 * PT_CUDA_MMA   1 (default): the attention kernels have a tensor-core path (mma.sync
 *               m16n8k16, f16 (default) or bf16 operands, f32 accumulation) used for the
 *               bf16/f16 compute dtypes; 0 compiles it out and every dtype takes the plain f32
 *               path. In the emulation build the same path runs through
 *               pt_emu::mma_m16n8k16, which implements the PTX fragment layouts. At run time
 *               PUNCTUM_CUDA_MMA=0 selects the plain path, PUNCTUM_CUDA_MMA=bf16 bf16 operands.
 *
 * Shared memory is declared with PT_SHARED (never a bare __shared__, which the emulation
 * refuses): the emulation places every array in a checked, poisoned per-block arena.
 *   PT_SHARED(float, Qs, [64][65]);     __shared__ __align__(16) float Qs[64][65];
 *   PT_SHARED(int, flag, );             __shared__ __align__(16) int flag;
 *   PT_SHARED_DYNAMIC(T, buf);          T *buf = the launch's dynamic shared memory
 * Launches: PT_LAUNCH(kern, grid, block, stream, args...) and, with dynamic shared memory,
 * PT_LAUNCH_SMEM(kern, grid, block, smem_bytes, stream, args...). */
#ifndef PUNCTUM_PT_CUDA_H
#define PUNCTUM_PT_CUDA_H

#ifndef PT_CUDA_MMA
#define PT_CUDA_MMA 1
#endif

#define PT_CAT_(a, b) a##b
#define PT_CAT(a, b) PT_CAT_(a, b)

#ifdef PT_CUDA_EMU
#include "cuda_emu.h"
/* Launch `kern` (a __global__ function or a pointer to one) over grid x block on `stream`. */
#define PT_LAUNCH(kern, grid, block, stream, ...)                                                 \
    PT_LAUNCH_SMEM(kern, grid, block, 0, stream, __VA_ARGS__)
#define PT_LAUNCH_SMEM(kern, grid, block, smem, stream, ...)                                      \
    pt_emu::launch((grid), (block), (smem), (stream), #kern, reinterpret_cast<const void *>(kern), \
                   [=]() { (kern)(__VA_ARGS__); })
/* One static object per declaration identifies it; every thread of a block gets the same
 * array (a reference to the block's instance in the emulated shared arena). */
#define PT_SHARED(T, name, dims) PT_SHARED_AT_(T, name, dims, PT_CAT(pt_smem_site_, __COUNTER__))
#define PT_SHARED_AT_(T, name, dims, site)                                                        \
    static const char site = 0;                                                                   \
    auto &name = *reinterpret_cast<T(*) dims>(pt_emu::shared_var(&site, sizeof(T dims), #name))
#define PT_SHARED_DYNAMIC(T, name) T *name = reinterpret_cast<T *>(pt_emu::shared_dynamic())
#else
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define PT_LAUNCH(kern, grid, block, stream, ...) (kern)<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#define PT_LAUNCH_SMEM(kern, grid, block, smem, stream, ...)                                      \
    (kern)<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define PT_SHARED(T, name, dims) __shared__ __align__(16) T name dims
/* one name and type for every kernel's dynamic shared memory (they must agree across a TU) */
#define PT_SHARED_DYNAMIC(T, name)                                                                \
    extern __shared__ __align__(16) unsigned char pt_dynamic_smem_[];                             \
    T *name = reinterpret_cast<T *>(pt_dynamic_smem_)
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

/* (The 16-bit types go through a register copy: with GCC, the emulation's access tracing does
 * not see a struct passed straight from memory to a call, nor a call's result stored straight
 * to memory; the copy costs nothing under nvcc.) */
PT_DEV float pt_ld(const float *p) { return *p; }
PT_DEV float pt_ld(const __nv_bfloat16 *p) {
    __nv_bfloat16 h;
    memcpy(&h, p, sizeof h);
    return __bfloat162float(h);
}
PT_DEV float pt_ld(const __half *p) {
    __half h;
    memcpy(&h, p, sizeof h);
    return __half2float(h);
}

PT_DEV void pt_st(float *p, float v) { *p = v; }
PT_DEV void pt_st(__nv_bfloat16 *p, float v) {
    const __nv_bfloat16 h = __float2bfloat16_rn(v);
    memcpy(p, &h, sizeof h);
}
PT_DEV void pt_st(__half *p, float v) {
    const __half h = __float2half_rn(v);
    memcpy(p, &h, sizeof h);
}

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

/* ---- asynchronous copies global -> shared (cp.async, sm_80+) ---------------------------------- */

/* Copy 16 bytes from global `src` to shared `dst` (both 16-byte aligned) without passing through
 * registers. The bytes become visible to this thread after the pt_cp_async_wait that covers its
 * group, and to the other threads of the block only after a __syncthreads that follows that
 * wait. _zfill: only the first src_bytes (0..16) are read, the rest of the 16 are zeros (the
 * tail of a tile; src is not read at all when src_bytes is 0). */
PT_DEV void pt_cp_async16(void *dst, const void *src) {
#ifdef PT_CUDA_EMU
    pt_emu::cp_async(dst, src, 16, 16);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src) : "memory");
#else
    *(uint4 *)dst = *(const uint4 *)src;
#endif
}
PT_DEV void pt_cp_async16_zfill(void *dst, const void *src, int src_bytes) {
#ifdef PT_CUDA_EMU
    pt_emu::cp_async(dst, src, 16, src_bytes);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src),
                 "r"(src_bytes)
                 : "memory");
#else
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *p = (const unsigned char *)src;
    for (int i = 0; i < 16; i++) d[i] = i < src_bytes ? p[i] : 0;
#endif
}
/* 4 or 8 bytes (cp.async.ca; both addresses aligned to the size). */
template <int BYTES> PT_DEV void pt_cp_async(void *dst, const void *src) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
#ifdef PT_CUDA_EMU
    pt_emu::cp_async(dst, src, BYTES, BYTES);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    if constexpr (BYTES == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src) : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(s), "l"(src), "n"(BYTES)
                     : "memory");
#else
    memcpy(dst, src, BYTES);
#endif
}
/* Close the group of the copies this thread issued since the last commit. */
PT_DEV void pt_cp_async_commit() {
#ifdef PT_CUDA_EMU
    pt_emu::cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
/* Wait until at most N of this thread's committed groups are still in flight (the newest N). */
template <int N> PT_DEV void pt_cp_async_wait() {
#ifdef PT_CUDA_EMU
    pt_emu::cp_async_wait(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
/* Commit, then wait for everything (cp.async.wait_all). */
PT_DEV void pt_cp_async_wait_all() {
    pt_cp_async_commit();
    pt_cp_async_wait<0>();
}

/* ---- ldmatrix (sm_75+) ------------------------------------------------------------------------ */

/* ldmatrix.sync.aligned.m8n8.x{N}[.trans].shared.b16, warp-collective (all 32 lanes): lanes
 * 8i .. 8i+7 pass the addresses of rows 0..7 of matrix i (16 bytes each, 16-byte aligned; the
 * other lanes' addresses are ignored), and lane l receives in r[i] the elements (l/4, 2(l%4))
 * and (l/4, 2(l%4)+1) of matrix i (TRANS: (2(l%4), l/4) and (2(l%4)+1, l/4)), lower column
 * (row) in the low half: exactly the mma.m16n8k16 A / B fragments. */
template <int N, bool TRANS = false> PT_DEV void pt_ldmatrix(uint32_t (&r)[N], const void *row) {
    static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
#ifdef PT_CUDA_EMU
    pt_emu::ldmatrix(r, row, N, TRANS);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
    const unsigned s = (unsigned)__cvta_generic_to_shared(row);
    if constexpr (N == 1 && !TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(s));
    else if constexpr (N == 1)
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
                     : "=r"(r[0])
                     : "r"(s));
    else if constexpr (N == 2 && !TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1]) : "r"(s));
    else if constexpr (N == 2)
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1]) : "r"(s));
    else if constexpr (!TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
#else
    (void)row;
    for (int i = 0; i < N; i++) r[i] = 0;
    __trap(); /* never reached: ldmatrix is used on sm_80+ paths only */
#endif
}

#endif
