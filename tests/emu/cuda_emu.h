/* punctum — CUDA emulation layer (SPEC §6): compiles the CUDA backend's kernel sources as
 * host C++ and runs them on the CPU.
 *
 * - The real CUDA headers supply every type, enum and API declaration (cuda_runtime_api.h,
 *   cuda_bf16.h, cuda_fp16.h, cublas_v2.h, cublasLt.h, all host-compilable); cuda_emu.cpp
 *   defines the runtime / cuBLAS / cuBLASLt functions the backend calls, so the backend is
 *   compiled against exactly the signatures and enum values it uses on a GPU.
 * - Device memory is host memory; streams are in-order and synchronous.
 * - A kernel launch runs its blocks one after another; the threads of a block run as fibers
 *   (cooperative user-level contexts) so that __syncthreads, __syncwarp, warp shuffles and the
 *   warp-collective tensor-core MMA are honoured exactly: a barrier releases only when every
 *   participating thread has arrived, shuffles read the value the source lane published at the
 *   same collective, and a collective whose mask names an exited lane, or a deadlock (e.g. a
 *   __syncthreads inside divergent code), aborts with a diagnostic.
 * - __shared__ variables become `static thread_local`: one instance per OS thread, and blocks
 *   run one at a time per OS thread, so shared memory is per block (and, as on a GPU, not
 *   initialised at block start: it holds whatever the previous block left).
 *
 * Kernels are launched through PT_LAUNCH (kernels/pt_cuda.h), which expands to the triple-
 * chevron launch under nvcc and to pt_emu::launch here. */
#ifndef PUNCTUM_CUDA_EMU_H
#define PUNCTUM_CUDA_EMU_H

#ifndef __cplusplus
#error "cuda_emu.h is C++"
#endif

#include <cuda_runtime_api.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cublas_v2.h>
#include <cublasLt.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <functional>

/* ---- CUDA C++ keywords that host compilation lacks --------------------------------------- */
#undef __shared__
#define __shared__ static thread_local
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __noinline__
#define __noinline__ __attribute__((noinline))
#endif

namespace pt_emu {

/* Index registers of the running fiber (set by the scheduler before it switches in). GNU
 * __thread rather than thread_local: plain TLS, no C++ TLS wrapper functions (whose inlined
 * null checks GCC 12 miscompiles under -fsanitize=undefined). */
extern __thread uint3 t_thread_idx;
extern __thread uint3 t_block_idx;
extern __thread uint3 t_block_dim;
extern __thread uint3 t_grid_dim;
extern __thread int t_lane;

void syncthreads();
/* Warp collective: this lane publishes n (<= 16) 32-bit words and waits until every lane of
 * `mask` has arrived at a collective with the same mask; returns the group's table [32][16] of
 * published words (rows of the lanes in *arrived, the group), valid until this lane's next
 * collective. Aborts when the mask names a lane that exited or leaves out a calling lane. */
const uint32_t *warp_collective(unsigned mask, const uint32_t *words, int n, unsigned *arrived,
                                const char *what);
[[noreturn]] void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void launch(dim3 grid, dim3 block, cudaStream_t stream, const char *name,
            std::function<void()> body);

/* Statistics of the emulation (for tests and benchmarks). */
struct Stats {
    unsigned long long launches, blocks, threads, switches, barriers;
};
Stats stats();

template <class T>
static inline T shfl_from(unsigned mask, T v, int mode, int arg, int width) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    uint32_t w[2] = {0, 0};
    memcpy(w, &v, sizeof(T));
    unsigned arrived = 0;
    const uint32_t *tab = warp_collective(mask, w, 2, &arrived, "warp shuffle");
    const int lane = t_lane;
    if (width <= 0 || width > 32 || (width & (width - 1)))
        fatal("warp shuffle: width %d is not a power of two <= 32", width);
    const int seg = lane / width * width;
    int src = lane;
    switch (mode) {
    case 0: /* xor */
        src = lane ^ arg;
        if (src >= seg + width) src = lane;
        break;
    case 1: /* down */
        src = (lane - seg) + arg < width ? lane + arg : lane;
        break;
    case 2: /* up */
        src = (lane - seg) >= arg ? lane - arg : lane;
        break;
    default: /* idx */
        src = seg + ((arg % width) + width) % width;
        break;
    }
    if (src < 0 || src > 31 || !(arrived >> src & 1u))
        fatal("warp shuffle: lane %d reads lane %d, which did not take part (mask %08x)", lane,
              src, mask);
    T r;
    memcpy(&r, tab + src * 16, sizeof(T));
    return r;
}

/* mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32, with the fragment layouts
 * of the PTX ISA (groupID = lane >> 2, threadID_in_group = lane % 4):
 *   A (16x16): reg r holds two elements, row = g + 8*(r & 1), cols 2t + 8*(r >> 1) + {0, 1}
 *   B (16x8):  reg r holds two elements, rows 2t + 8*r + {0, 1}, col = g
 *   C/D (16x8): c[i], row = g + 8*(i >> 1), col = 2t + (i & 1)
 * (the low 16 bits hold the element with the lower index). Products are accumulated in float
 * in k order. */
static inline float half_bits_to_float(uint32_t h, bool bf16) {
    const uint16_t b = (uint16_t)h;
    if (bf16) {
        const uint32_t u = (uint32_t)b << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    __half_raw r;
    r.x = b;
    return __half2float(__half(r));
}
static inline void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                const float c[4], bool bf16) {
    uint32_t w[10];
    memcpy(w, a, 16);
    memcpy(w + 4, b, 8);
    memcpy(w + 6, c, 16);
    unsigned arrived = 0;
    const uint32_t *tab = warp_collective(0xffffffffu, w, 10, &arrived, "mma.sync");
    if (arrived != 0xffffffffu) fatal("mma.sync: not all 32 lanes of the warp take part");
    const int lane = t_lane, g = lane >> 2, t = lane & 3;
    float out[4];
    for (int i = 0; i < 4; i++) {
        const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        float acc;
        memcpy(&acc, tab + lane * 16 + 6 + i, 4);
        for (int k = 0; k < 16; k++) {
            /* A(row, k) */
            const int la = (row & 7) * 4 + ((k & 7) >> 1);
            const int ra = (row >> 3) + 2 * (k >> 3);
            const uint32_t wa = tab[la * 16 + ra];
            const float av = half_bits_to_float((k & 1) ? wa >> 16 : wa & 0xffffu, bf16);
            /* B(k, col) */
            const int lb = col * 4 + ((k & 7) >> 1);
            const int rb = k >> 3;
            const uint32_t wb = tab[lb * 16 + 4 + rb];
            const float bv = half_bits_to_float((k & 1) ? wb >> 16 : wb & 0xffffu, bf16);
            acc += av * bv;
        }
        out[i] = acc;
    }
    memcpy(d, out, 16);
}

} // namespace pt_emu

/* ---- device built-ins -------------------------------------------------------------------- */
#define threadIdx (static_cast<const uint3 &>(pt_emu::t_thread_idx))
#define blockIdx (static_cast<const uint3 &>(pt_emu::t_block_idx))
#define blockDim (static_cast<const uint3 &>(pt_emu::t_block_dim))
#define gridDim (static_cast<const uint3 &>(pt_emu::t_grid_dim))

static inline void __syncthreads() { pt_emu::syncthreads(); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    unsigned arrived = 0;
    pt_emu::warp_collective(mask, nullptr, 0, &arrived, "__syncwarp");
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return pt_emu::shfl_from(mask, v, 0, lane_mask, width);
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return pt_emu::shfl_from(mask, v, 1, (int)delta, width);
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return pt_emu::shfl_from(mask, v, 2, (int)delta, width);
}
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return pt_emu::shfl_from(mask, v, 3, src, width);
}
template <class T> static inline T __ldg(const T *p) { return *p; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }

#endif
