/* punctum — CUDA emulation layer (SPEC §6): compiles the CUDA backend's kernel sources as
 * host C++ and runs them on the CPU, checking what compute-sanitizer would.
 *
 * - The real CUDA headers supply every type, enum and API declaration (cuda_runtime_api.h,
 *   cuda_bf16.h, cuda_fp16.h, cublas_v2.h, cublasLt.h, all host-compilable); cuda_emu.cpp
 *   defines the runtime / cuBLAS / cuBLASLt functions the backend calls, so the backend is
 *   compiled against exactly the signatures and enum values it uses on a GPU.
 * - Device memory is one reserved host region (cuda_emu_check.cpp) with a validity shadow;
 *   streams are in-order and synchronous; events complete at once, but host->device copies
 *   from pinned memory are tracked until the host observes them (Check::pinned_reuse).
 * - A kernel launch runs its blocks one after another; the threads of a block run as fibers
 *   (cooperative user-level contexts) so that __syncthreads, __syncwarp, warp shuffles, votes,
 *   ldmatrix and the tensor-core MMA are honoured exactly.
 * - Shared memory is declared with PT_SHARED / PT_SHARED_DYNAMIC (kernels/pt_cuda.h; a bare
 *   __shared__ does not compile here): every block gets the arrays at the same offsets of a
 *   per-OS-thread arena, poisoned with 0xff bytes (NaN) at block start.
 * - Checks (cuda_emu_check.cpp): translation units compiled with -fsanitize=thread (the
 *   kernels; cmake/cuda.cmake) report every load and store to the emulation, which checks
 *   global accesses against the live allocations, shared accesses against the declared arrays,
 *   reads of shared bytes never written in the block, shared-memory hazards between barriers
 *   (independent of the fiber order), cp.async copies used before their wait; the scheduler
 *   checks barriers (divergent, not reached, reached at different places) and the masks of
 *   warp collectives. A violation prints a diagnostic and aborts at the end of the block
 *   (fatal ones at once); a pt_emu::Capture in scope records them instead (self-tests).
 *
 * Kernels are launched through PT_LAUNCH / PT_LAUNCH_SMEM (kernels/pt_cuda.h), which expand to
 * the triple-chevron launch under nvcc and to pt_emu::launch here. */
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
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <string>
#include <vector>

/* ---- CUDA C++ keywords that host compilation lacks --------------------------------------- */
/* Shared memory must be declared with PT_SHARED(type, name, dims) (kernels/pt_cuda.h), which
 * the emulation can place, poison and check. */
#undef __shared__
#define __shared__ use_PT_SHARED_instead_of___shared__
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __noinline__
#define __noinline__ __attribute__((noinline))
#endif

namespace pt_emu {

/* Index registers of the running fiber (set by the scheduler before it switches in). GNU
 * __thread rather than thread_local: plain TLS, no C++ TLS wrapper functions (whose inlined
 * null checks GCC 12 miscompiles under -fsanitize=undefined). t_tid is the linear thread index
 * in the block, -1 outside kernels. */
extern __thread uint3 t_thread_idx;
extern __thread uint3 t_block_idx;
extern __thread uint3 t_block_dim;
extern __thread uint3 t_grid_dim;
extern __thread int t_lane;
extern __thread int t_tid;

/* ---- what the checks find -------------------------------------------------------------- */
enum class Check {
    global_oob,        /* global access outside every live cudaMalloc allocation */
    shared_oob,        /* shared access outside the declared arrays (or across two) */
    shared_race,       /* two threads, one writing, between barriers (RAW / WAR / WAW) */
    shared_uninit,     /* read of shared bytes not written since the block started */
    cp_async_pending,  /* access to shared bytes a cp.async is still copying (no wait) */
    cp_async_unwaited, /* a thread exited with cp.async copies it never waited for */
    cp_async_misuse,   /* bad size, alignment or address of a cp.async */
    ldmatrix_misuse,   /* bad address of an ldmatrix row, or not every lane takes part */
    barrier_divergent, /* __syncthreads not reached by every thread / at different places */
    barrier_exited,    /* __syncthreads while some threads of the block have exited */
    warp_mask,         /* a warp collective whose mask does not match the lanes taking part */
    shared_limit,      /* more shared memory than the device allows */
    pinned_reuse,      /* host wrote pinned memory an unobserved cudaMemcpyAsync still reads */
    n_checks
};
const char *check_name(Check c);

struct Violation {
    Check kind;
    std::string text; /* the whole diagnostic */
};

/* While a Capture is alive (on this OS thread), violations are recorded in it instead of
 * aborting the process; a fatal one (a deadlock, a bad mask) ends the launch, which then
 * reports cudaErrorLaunchFailure. For the self-tests of the checks. */
class Capture {
  public:
    Capture();
    ~Capture();
    Capture(const Capture &) = delete;
    Capture &operator=(const Capture &) = delete;
    int count(Check c) const;
    int total() const;
    const std::vector<Violation> &all() const { return list_; }
    void clear();
    void add(Violation v);

  private:
    std::vector<Violation> list_;
    Capture *prev_;
};

/* Whether this build's kernels report their memory accesses (compiled with the access
 * tracing of cmake/cuda.cmake) and the checks are on (PUNCTUM_EMU_CHECKS=0 turns them off). */
bool access_checks_enabled();

/* ---- runtime entry points used by the device built-ins below --------------------------- */
void syncthreads(const char *file, int line);
/* Warp collective: this lane publishes n (<= 16) 32-bit words and waits until every lane of
 * `mask` has arrived at a collective of the same kind with the same mask; returns the group's
 * table [32][16] of published words (rows of the lanes in *arrived, the group), valid until
 * this lane's next collective. `orders_memory`: a __syncwarp (orders the shared-memory
 * accesses of its lanes). A mask that names an exited lane, leaves out a calling lane, or
 * lanes of one group at different kinds of collective are violations (Check::warp_mask). */
const uint32_t *warp_collective(unsigned mask, const uint32_t *words, int n, unsigned *arrived,
                                const char *what, bool orders_memory = false);
/* Report a violation found by inline code (fatal: end the block). */
void violation(Check c, bool fatal, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
[[noreturn]] void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Shared memory: the block's instance of the array declared at `site` (one static object per
 * declaration), `bytes` long; the dynamic shared memory of the launch. */
void *shared_var(const void *site, size_t bytes, const char *name);
void *shared_dynamic();

/* cp.async: copy cp_bytes (4, 8 or 16) from global src to shared dst, of which src_bytes are
 * read and the rest zero-filled; visible only after this thread's matching wait. */
void cp_async(void *dst, const void *src, int cp_bytes, int src_bytes);
void cp_async_commit();
void cp_async_wait(int newest_pending_allowed);
/* ldmatrix.sync.aligned.m8n8.x{nmat}[.trans].shared.b16: lanes 8i..8i+7 give the row
 * addresses of matrix i; r[i] receives this lane's fragment of matrix i. */
void ldmatrix(uint32_t *r, const void *row, int nmat, bool trans);

void launch(dim3 grid, dim3 block, size_t dynamic_smem, cudaStream_t stream, const char *name,
            const void *func, std::function<void()> body);

/* Order in which a block's threads run between barriers: "forward" (default), "reverse" or
 * "shuffle" (random each phase); PUNCTUM_EMU_SCHEDULE sets it at start. No check depends on it;
 * a result that does reads memory nothing orders. */
void set_schedule(const char *order);

/* Statistics of the emulation (for tests and benchmarks). */
struct Stats {
    unsigned long long launches, blocks, threads, switches, barriers, checked_accesses;
};
Stats stats();

/* Roofline counting (cuda_emu_roofline.cpp): on when PUNCTUM_EMU_ROOFLINE names a file, which
 * receives per kernel launches, global bytes read / written, FLOPs at exit. */
extern bool g_roof_on;
bool roofline_enabled();
void roofline_mma(); /* one warp-wide mma.sync.m16n8k16 of the running kernel */

enum { SHFL_XOR = 0, SHFL_DOWN, SHFL_UP, SHFL_IDX };

template <class T> static inline T shfl_from(unsigned mask, T v, int mode, int arg, int width) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    static const char *const what[4] = {"__shfl_xor_sync", "__shfl_down_sync", "__shfl_up_sync",
                                        "__shfl_sync"};
    uint32_t w[2] = {0, 0};
    memcpy(w, &v, sizeof(T));
    unsigned arrived = 0;
    const uint32_t *tab = warp_collective(mask, w, 2, &arrived, what[mode]);
    const int lane = t_lane;
    if (width <= 0 || width > 32 || (width & (width - 1)))
        fatal("warp shuffle: width %d is not a power of two <= 32", width);
    const int seg = lane / width * width;
    int src = lane;
    switch (mode) {
    case SHFL_XOR:
        src = lane ^ arg;
        if (src >= seg + width) src = lane;
        break;
    case SHFL_DOWN:
        src = (lane - seg) + arg < width ? lane + arg : lane;
        break;
    case SHFL_UP:
        src = (lane - seg) >= arg ? lane - arg : lane;
        break;
    default:
        src = seg + ((arg % width) + width) % width;
        break;
    }
    if (src < 0 || src > 31 || !(arrived >> src & 1u)) {
        violation(Check::warp_mask, true,
                  "%s: lane %d reads lane %d, which did not take part (mask %08x)", what[mode],
                  lane, src, mask);
        return v;
    }
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
    const uint32_t *tab =
        warp_collective(0xffffffffu, w, 10, &arrived, bf16 ? "mma.sync (bf16)" : "mma.sync (f16)");
    if (arrived != 0xffffffffu) {
        violation(Check::warp_mask, true, "mma.sync: lanes %08x of the warp take part, not all 32",
                  arrived);
        return;
    }
    const int lane = t_lane, g = lane >> 2, t = lane & 3;
    if (g_roof_on && lane == 0) roofline_mma();
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

/* __ballot_sync / __any_sync / __all_sync: the predicates of the group's lanes. */
static inline unsigned vote(unsigned mask, int pred, const char *what) {
    const uint32_t w = pred != 0;
    unsigned arrived = 0;
    const uint32_t *tab = warp_collective(mask, &w, 1, &arrived, what);
    unsigned bits = 0;
    for (int l = 0; l < 32; l++)
        if ((arrived >> l & 1u) && tab[l * 16]) bits |= 1u << l;
    return bits;
}

} // namespace pt_emu

/* ---- device built-ins -------------------------------------------------------------------- */
#define threadIdx (static_cast<const uint3 &>(pt_emu::t_thread_idx))
#define blockIdx (static_cast<const uint3 &>(pt_emu::t_block_idx))
#define blockDim (static_cast<const uint3 &>(pt_emu::t_block_dim))
#define gridDim (static_cast<const uint3 &>(pt_emu::t_grid_dim))

/* A macro, so that the place of each barrier is known (threads must meet at the same one). */
#define __syncthreads() pt_emu::syncthreads(__FILE__, __LINE__)
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    unsigned arrived = 0;
    pt_emu::warp_collective(mask, nullptr, 0, &arrived, "__syncwarp", true);
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return pt_emu::shfl_from(mask, v, pt_emu::SHFL_XOR, lane_mask, width);
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return pt_emu::shfl_from(mask, v, pt_emu::SHFL_DOWN, (int)delta, width);
}
template <class T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return pt_emu::shfl_from(mask, v, pt_emu::SHFL_UP, (int)delta, width);
}
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return pt_emu::shfl_from(mask, v, pt_emu::SHFL_IDX, src, width);
}
static inline unsigned __ballot_sync(unsigned mask, int pred) {
    return pt_emu::vote(mask, pred, "__ballot_sync");
}
static inline int __any_sync(unsigned mask, int pred) {
    return pt_emu::vote(mask, pred, "__any_sync") != 0;
}
static inline int __all_sync(unsigned mask, int pred) {
    unsigned arrived = 0;
    const uint32_t w = pred != 0;
    const uint32_t *tab = pt_emu::warp_collective(mask, &w, 1, &arrived, "__all_sync");
    for (int l = 0; l < 32; l++)
        if ((arrived >> l & 1u) && !tab[l * 16]) return 0;
    return 1;
}
template <class T> static inline T __ldg(const T *p) {
    return *p;
}
static inline float rsqrtf(float x) {
    return 1.0f / sqrtf(x);
}
static inline double rsqrt(double x) {
    return 1.0 / sqrt(x);
}

#endif
