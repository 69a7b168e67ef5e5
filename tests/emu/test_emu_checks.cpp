/* punctum — self-tests of the emulation's checks (SPEC §6, issue 17): for every check a
 * deliberately broken kernel that it must catch, in every fiber order (forward, reverse,
 * shuffled), and a correct twin that it must pass; that a violation outside a Capture aborts
 * the process with a diagnostic naming the kernel, block, threads and array; and the ldmatrix
 * fragments and cp.async semantics against naive references (ldmatrix -> mma.sync against a
 * plain matrix product). Part of test_emu_selftest (label cuda-emu). */
#include "pt_cuda.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

using pt_emu::Capture;
using pt_emu::Check;

int g_check_fail;
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            g_check_fail++;                                                                        \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

static const cudaStream_t S0 = (cudaStream_t)0;
static unsigned g_seed = 12345; /* printed; the random data and permutations derive from it */

static unsigned rnd_u32() {
    g_seed = g_seed * 1664525u + 1013904223u;
    return g_seed >> 8;
}

template <class T> static T *dalloc(size_t n) {
    void *p = nullptr;
    if (cudaMalloc(&p, n * sizeof(T)) != cudaSuccess) {
        printf("FAIL: cudaMalloc of %zu bytes\n", n * sizeof(T));
        exit(1);
    }
    return (T *)p;
}

/* Run `body` under a Capture; the check `want` must have fired (want == n_checks: none may). */
template <class F> static void expect_check(const char *what, Check want, F body) {
    Capture cap;
    body();
    (void)cudaGetLastError();
    if (want == Check::n_checks) {
        EXPECT(cap.total() == 0, "%s: the correct kernel got %d violation(s), the first: %s", what,
               cap.total(), cap.total() ? cap.all()[0].text.c_str() : "");
        return;
    }
    EXPECT(cap.count(want) > 0, "%s: the %s check did not fire (%d other violation(s)%s%s)", what,
           pt_emu::check_name(want), cap.total(), cap.total() ? ", the first: " : "",
           cap.total() ? cap.all()[0].text.c_str() : "");
    static bool shown[(int)Check::n_checks];
    if (cap.count(want) > 0 && !shown[(int)want]) { /* one example diagnostic per check */
        shown[(int)want] = true;
        for (const auto &v : cap.all())
            if (v.kind == want) {
                printf("  e.g. %s\n", v.text.c_str());
                break;
            }
    }
}
#define CLEAN Check::n_checks

/* ============================================================================================
 * broken kernels (and their correct twins)
 * ========================================================================================== */

__global__ void k_global_read(const float *in, float *out, int shift) {
    out[threadIdx.x] = in[(int)threadIdx.x + shift];
}
__global__ void k_global_write(float *out, int shift) {
    out[(int)threadIdx.x + shift] = 1.0f;
}

/* a[idx] with a[32] (the other arrays around it) */
__global__ void k_shared_index(int *out, int idx) {
    PT_SHARED(int, before, [32]);
    PT_SHARED(int, a, [32]);
    PT_SHARED(int, after, [32]);
    before[threadIdx.x] = 1, a[threadIdx.x] = 2, after[threadIdx.x] = 3;
    __syncthreads();
    const int *base = a; /* (an index the compiler cannot see: past the bounds on purpose) */
    if (threadIdx.x == 0) out[0] = base[idx];
}

/* an aligned 8-byte read of a[30] and the 4 bytes after the array */
__global__ void k_shared_straddle(int *out) {
    PT_SHARED(int, a, [31]);
    if (threadIdx.x < 31) a[threadIdx.x] = 2;
    __syncthreads();
    if (threadIdx.x == 0) {
        const volatile uint64_t *p =
            reinterpret_cast<const volatile uint64_t *>(reinterpret_cast<const char *>(a) + 120);
        const uint64_t v = *p;
        out[0] = (int)(v ^ v >> 32);
    }
}

/* thread `writer` writes s[5] and thread `reader` reads it; `barrier`: a __syncthreads between */
__global__ void k_race(int *out, int writer, int reader, int barrier) {
    PT_SHARED(int, s, [64]);
    s[threadIdx.x] = (int)threadIdx.x;
    __syncthreads();
    if ((int)threadIdx.x == writer) s[5] = 99;
    if (barrier) __syncthreads();
    if ((int)threadIdx.x == reader) out[0] = s[5];
}

/* two threads write s[7] between the same barriers */
__global__ void k_race_waw(int *out, int second) {
    PT_SHARED(int, s, [64]);
    if (threadIdx.x == 3 || (int)threadIdx.x == second) s[7] = (int)threadIdx.x;
    __syncthreads();
    if (threadIdx.x == 0) out[0] = s[7];
}

/* lane 0 of each warp writes, lane 1 reads, ordered by a __syncwarp of `mode`:
 * 0 none, 1 full mask, 2 separate groups (lane 0 alone, the others together) */
__global__ void k_syncwarp(int *out, int mode) {
    PT_SHARED(int, s, [64]);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) s[w * 32] = 7 + w;
    if (mode == 1) __syncwarp();
    if (mode == 2) __syncwarp(lane == 0 ? 0x1u : 0xfffffffeu);
    if (lane == 1) out[w] = s[w * 32];
    /* write-after-read across the __syncwarp: lane 0 rewrites what lane 1 read */
    if (mode == 1) __syncwarp();
    if (mode == 1 && lane == 0) s[w * 32] = 0;
}

/* the classic: reverse through shared memory without the barrier */
__global__ void k_reverse(const int *in, int *out, int barrier) {
    PT_SHARED(int, buf, [128]);
    const int t = threadIdx.x, n = blockDim.x;
    buf[t] = in[t];
    if (barrier) __syncthreads();
    out[t] = buf[n - 1 - t];
}

/* reads s[0..63] where only s[0..n_written) was written */
__global__ void k_uninit(float *out, int n_written) {
    PT_SHARED(float, s, [64]);
    if ((int)threadIdx.x < n_written) s[threadIdx.x] = 1.0f;
    __syncthreads();
    if (threadIdx.x == 0) {
        float acc = 0.0f;
        for (int i = 0; i < 64; i++) acc += s[i];
        out[0] = acc;
    }
}

/* block 0 writes its shared array, every block reads it: a block must not see another's */
__global__ void k_per_block(float *out, int all_write) {
    PT_SHARED(float, s, [32]);
    if (blockIdx.x == 0 || all_write) s[threadIdx.x] = 1.0f + (float)blockIdx.x;
    __syncthreads();
    out[blockIdx.x * 32 + threadIdx.x] = s[threadIdx.x];
}

/* cp.async, 32 threads, two stages of 128 floats; thread t copies floats 4t..4t+3 of a stage.
 * (t * 4 + 5) % 128 is a float another thread copied. */
enum {
    CP_OK,         /* commit, commit, wait<1>, barrier, read stage 0; wait<0>, barrier, stage 1 */
    CP_NO_WAIT,    /* commit, barrier, read */
    CP_NO_BARRIER, /* commit, wait, read another thread's bytes */
    CP_OWN_EARLY,  /* read its own bytes before the wait */
    CP_NEWEST_PENDING, /* wait<1> and read the newest stage */
    CP_NEVER_WAITED,   /* commit and exit */
    CP_MISALIGNED,     /* destination not 16-byte aligned */
    CP_SRC_OOB,        /* source past the end of its allocation */
    CP_ZFILL,          /* 8 of 16 bytes from the source, the rest zeros */
    CP_SMALL,          /* 4- and 8-byte copies */
};
__global__ void k_cp_async(const float *g, float *out, int mode) {
    PT_SHARED(float, s, [2][128]);
    const int t = threadIdx.x, o = (t * 4 + 5) % 128;
    switch (mode) {
    case CP_OK:
        pt_cp_async16(&s[0][4 * t], g + 4 * t);
        pt_cp_async_commit();
        pt_cp_async16(&s[1][4 * t], g + 128 + 4 * t);
        pt_cp_async_commit();
        pt_cp_async_wait<1>();
        __syncthreads();
        out[t] = s[0][o];
        pt_cp_async_wait<0>();
        __syncthreads();
        out[32 + t] = s[1][o];
        break;
    case CP_NO_WAIT:
        pt_cp_async16(&s[0][4 * t], g + 4 * t);
        pt_cp_async_commit();
        __syncthreads();
        out[t] = s[0][o];
        pt_cp_async_wait<0>(); /* (late) */
        break;
    case CP_NO_BARRIER:
        pt_cp_async16(&s[0][4 * t], g + 4 * t);
        pt_cp_async_wait_all();
        out[t] = s[0][o];
        break;
    case CP_OWN_EARLY:
        pt_cp_async16(&s[0][4 * t], g + 4 * t);
        pt_cp_async_commit();
        out[t] = s[0][4 * t];
        pt_cp_async_wait<0>();
        break;
    case CP_NEWEST_PENDING:
        pt_cp_async16(&s[0][4 * t], g + 4 * t);
        pt_cp_async_commit();
        pt_cp_async16(&s[1][4 * t], g + 128 + 4 * t);
        pt_cp_async_commit();
        pt_cp_async_wait<1>();
        __syncthreads();
        out[t] = s[1][o];
        pt_cp_async_wait<0>();
        break;
    case CP_NEVER_WAITED:
        pt_cp_async16(&s[0][4 * t], g + 4 * t);
        pt_cp_async_commit();
        break;
    case CP_MISALIGNED:
        pt_cp_async16(&s[0][4 * t + 1], g + 4 * t);
        pt_cp_async_wait_all();
        break;
    case CP_SRC_OOB:
        pt_cp_async16(&s[0][4 * t], g + 256 + 4 * t); /* g has 256 floats */
        pt_cp_async_wait_all();
        break;
    case CP_ZFILL:
        pt_cp_async16_zfill(&s[0][4 * t], g + 4 * t, 8);
        pt_cp_async_wait_all();
        __syncthreads();
        out[t] = s[0][o] + 1000.0f * s[0][o + 1]; /* element 1 from the source, 2 zero-filled */
        break;
    case CP_SMALL:
        pt_cp_async<8>(&s[0][4 * t], g + 4 * t);
        pt_cp_async<4>(&s[0][4 * t + 2], g + 4 * t + 2);
        pt_cp_async<4>(&s[0][4 * t + 3], g + 4 * t + 3);
        pt_cp_async_wait_all();
        __syncthreads();
        out[t] = s[0][o];
        break;
    }
}

/* ldmatrix.x{N}[.trans] from rows scattered over s (row slot rowslot[lane], 8 halves each) */
template <int N, bool TRANS>
__global__ void k_ldmatrix(const uint16_t *g, const int *rowslot, uint32_t *out) {
    PT_SHARED(uint16_t, s, [64 * 8]);
    for (int i = threadIdx.x; i < 64 * 8; i += blockDim.x) s[i] = g[i];
    __syncthreads();
    uint32_t r[N];
    pt_ldmatrix<N, TRANS>(r, &s[rowslot[threadIdx.x] * 8]);
    for (int i = 0; i < N; i++) out[threadIdx.x * 4 + i] = r[i];
}

/* ldmatrix misuse: `mode` 0 misaligned row address, 1 a global address, 2 half the warp exits */
__global__ void k_ldmatrix_bad(const uint16_t *g, uint32_t *out, int mode) {
    PT_SHARED(uint16_t, s, [64 * 8]);
    for (int i = threadIdx.x; i < 64 * 8; i += blockDim.x) s[i] = g[i];
    __syncthreads();
    if (mode == 2 && threadIdx.x >= 16) return;
    uint32_t r[1];
    const void *row = mode == 0   ? (const void *)&s[threadIdx.x * 8 + 1]
                      : mode == 1 ? (const void *)g
                                  : &s[threadIdx.x * 8];
    pt_ldmatrix<1>(r, row);
    out[threadIdx.x] = r[0];
}

/* D = A B for one m16n8k16 tile through ldmatrix: A [16][16] row-major (x4), B given as
 * Bt [8 n][16 k] (x2, the "col" operand as stored by a K tile) and as B [16 k][8 n] (x2.trans,
 * as stored by a V tile). D1 from Bt, D2 from B. */
template <class T>
__global__ void k_ldsm_mma(const T *A, const T *Bt, const T *B, float *D1, float *D2) {
    PT_SHARED(T, As, [16][24]);
    PT_SHARED(T, Bts, [8][24]);
    PT_SHARED(T, Bs, [16][16]);
    const int lane = threadIdx.x;
    for (int i = lane; i < 256; i += 32) As[i / 16][i % 16] = A[i];
    for (int i = lane; i < 128; i += 32) Bts[i / 16][i % 16] = Bt[i], Bs[i / 8][i % 8] = B[i];
    __syncthreads();
    uint32_t a[4], b1[2], b2[2];
    pt_ldmatrix<4>(a, &As[lane % 16][8 * (lane / 16)]);
    pt_ldmatrix<2>(b1, &Bts[lane % 8][8 * ((lane / 8) % 2)]);
    pt_ldmatrix<2, true>(b2, &Bs[lane % 16][0]);
    const float z[4] = {0, 0, 0, 0};
    float d1[4], d2[4];
    pt_mma16816(d1, a, b1, z, (T *)nullptr);
    pt_mma16816(d2, a, b2, z, (T *)nullptr);
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; i++) {
        const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        D1[row * 8 + col] = d1[i];
        D2[row * 8 + col] = d2[i];
    }
}

/* barriers: 0 correct, 1 threads >= 32 exit first, 2 two different __syncthreads, 3 deadlock
 * (lanes 0-15 of warp 0 at __syncthreads, lanes 16-31 at a __syncwarp that needs them) */
__global__ void k_barrier(int *out, int mode) {
    const int t = threadIdx.x;
    if (mode == 1 && t >= 32) return;
    if (mode == 2) {
        if (t < 32)
            __syncthreads();
        else
            __syncthreads();
    } else if (mode == 3 && t < 32) {
        if (t < 16)
            __syncthreads();
        else
            __syncwarp();
    } else {
        __syncthreads();
    }
    out[t] = t;
}

/* warp masks: 0 correct half-warp shuffle, 1 mask leaves out the calling lane, 2 mask names
 * lanes that exited, 3 source lane outside the group, 4 one group at two kinds of shuffle,
 * 5 mma.sync by half a warp, 6 full mask in a 16-thread block, 7 vote with a mask that names
 * exited lanes, 8 correct votes */
__global__ void k_mask(int *out, int mode) {
    const int lane = threadIdx.x & 31;
    int v = lane;
    switch (mode) {
    case 0:
        if (lane < 16) v = __shfl_xor_sync(0x0000ffffu, v, 1);
        break;
    case 1:
        v = __shfl_xor_sync(0x0000ffffu, v, 1); /* lanes 16..31 are not in the mask */
        break;
    case 2:
        if (lane >= 16) return;
        v = __shfl_xor_sync(0xffffffffu, v, 1);
        break;
    case 3:
        if (lane < 16) v = __shfl_sync(0x0000ffffu, v, 20);
        break;
    case 4:
        if (lane < 16)
            v = __shfl_xor_sync(0xffffffffu, v, 1);
        else
            v = __shfl_down_sync(0xffffffffu, v, 1);
        break;
    case 5: {
        if (lane >= 16) return;
        const uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
        const float c[4] = {0, 0, 0, 0};
        float d[4];
        pt_mma16816(d, a, b, c, (__half *)nullptr);
        v = (int)d[0];
        break;
    }
    case 6:
        v = pt_warp_sum(v);
        break;
    case 7:
        if (lane >= 8) return;
        v = (int)__ballot_sync(0xffffffffu, lane & 1);
        break;
    case 8:
        v = (int)__ballot_sync(0xffffffffu, lane & 1) + __any_sync(0xffffffffu, lane == 3) * 2 +
            __all_sync(0xffffffffu, lane < 40) * 4;
        break;
    }
    out[threadIdx.x] = v;
}

/* more than 48 KiB of static shared memory */
__global__ void k_too_much_static(float *out) {
    PT_SHARED(float, big, [16384]);
    big[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = big[threadIdx.x];
}

/* dynamic shared memory: every thread writes then reads 4 bytes at offset `stride` * t */
__global__ void k_dynamic(int *out, int stride) {
    PT_SHARED_DYNAMIC(int, dyn);
    dyn[threadIdx.x * stride] = (int)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = dyn[threadIdx.x * stride];
}

/* ============================================================================================
 * the tests
 * ========================================================================================== */

static void test_global() {
    float *in = dalloc<float>(32), *out = dalloc<float>(64);
    cudaMemset(in, 0, 32 * sizeof(float));
    expect_check("global read in bounds", CLEAN,
                 [&] { PT_LAUNCH(k_global_read, 1, 32, S0, in, out, 0); });
    expect_check("global read one past the end", Check::global_oob,
                 [&] { PT_LAUNCH(k_global_read, 1, 32, S0, in, out, 1); });
    expect_check("global write past the end", Check::global_oob,
                 [&] { PT_LAUNCH(k_global_write, 1, 32, S0, out, 40); });
    expect_check("global write before the start", Check::global_oob,
                 [&] { PT_LAUNCH(k_global_write, 1, 32, S0, out, -1); });
    float *gone = dalloc<float>(32);
    cudaFree(gone);
    expect_check("global read after cudaFree", Check::global_oob,
                 [&] { PT_LAUNCH(k_global_read, 1, 32, S0, gone, out, 0); });
    {
        Capture cap;
        EXPECT(cudaMemcpy(out, in, 33 * sizeof(float), cudaMemcpyDeviceToDevice) ==
                   cudaErrorInvalidValue,
               "cudaMemcpy past the end of the source accepted");
        EXPECT(cap.count(Check::global_oob) == 1, "cudaMemcpy past the end not reported");
        (void)cudaGetLastError();
    }
    cudaFree(in), cudaFree(out);
}

static void test_shared_bounds() {
    int *out = dalloc<int>(4);
    expect_check("shared a[31]", CLEAN, [&] { PT_LAUNCH(k_shared_index, 1, 32, S0, out, 31); });
    expect_check("shared a[32] (one past the end)", Check::shared_oob,
                 [&] { PT_LAUNCH(k_shared_index, 1, 32, S0, out, 32); });
    expect_check("shared a[-1]", Check::shared_oob,
                 [&] { PT_LAUNCH(k_shared_index, 1, 32, S0, out, -1); });
    expect_check("shared a[34] (the redzone before the next array)", Check::shared_oob,
                 [&] { PT_LAUNCH(k_shared_index, 1, 32, S0, out, 34); });
    expect_check("shared 8-byte read running past the end", Check::shared_oob,
                 [&] { PT_LAUNCH(k_shared_straddle, 1, 32, S0, out); });
    cudaFree(out);
}

static void test_races() {
    int *out = dalloc<int>(128), *in = dalloc<int>(128);
    std::vector<int> h(128);
    for (int i = 0; i < 128; i++) h[(size_t)i] = i * 3;
    cudaMemcpy(in, h.data(), 128 * sizeof(int), cudaMemcpyHostToDevice);
    const char *orders[3] = {"forward", "reverse", "shuffle"};
    for (const char *order : orders) {
        pt_emu::set_schedule(order);
        printf("  fiber order %s\n", order);
        expect_check("write then read, other warp, barrier between", CLEAN,
                     [&] { PT_LAUNCH(k_race, 1, 64, S0, out, 0, 40, 1); });
        expect_check("write and read by the same thread", CLEAN,
                     [&] { PT_LAUNCH(k_race, 1, 64, S0, out, 9, 9, 0); });
        expect_check("write / read, threads of two warps, no barrier", Check::shared_race,
                     [&] { PT_LAUNCH(k_race, 1, 64, S0, out, 0, 40, 0); });
        expect_check("write / read, two lanes of one warp, no barrier", Check::shared_race,
                     [&] { PT_LAUNCH(k_race, 1, 64, S0, out, 0, 1, 0); });
        expect_check("two writers, no barrier", Check::shared_race,
                     [&] { PT_LAUNCH(k_race_waw, 1, 64, S0, out, 50); });
        expect_check("one writer twice", CLEAN, [&] { PT_LAUNCH(k_race_waw, 1, 64, S0, out, 3); });
        expect_check("lanes ordered by __syncwarp", CLEAN,
                     [&] { PT_LAUNCH(k_syncwarp, 1, 64, S0, out, 1); });
        expect_check("lanes without __syncwarp", Check::shared_race,
                     [&] { PT_LAUNCH(k_syncwarp, 1, 64, S0, out, 0); });
        expect_check("__syncwarp groups that separate writer and reader", Check::shared_race,
                     [&] { PT_LAUNCH(k_syncwarp, 1, 64, S0, out, 2); });
        expect_check("reverse with its barrier", CLEAN,
                     [&] { PT_LAUNCH(k_reverse, 1, 128, S0, in, out, 1); });
        expect_check("reverse without its barrier", Check::shared_race,
                     [&] { PT_LAUNCH(k_reverse, 1, 128, S0, in, out, 0); });
    }
    pt_emu::set_schedule("forward");
    cudaFree(out), cudaFree(in);
}

static void test_uninit() {
    float *out = dalloc<float>(64);
    expect_check("every element written", CLEAN, [&] { PT_LAUNCH(k_uninit, 1, 64, S0, out, 64); });
    expect_check("one element never written", Check::shared_uninit,
                 [&] { PT_LAUNCH(k_uninit, 1, 64, S0, out, 63); });
    float h = 0;
    cudaMemcpy(&h, out, sizeof h, cudaMemcpyDeviceToHost);
    EXPECT(isnan(h), "an unwritten shared float is not poisoned with NaN (sum %g)", h);
    /* blocks see fresh, poisoned shared memory: block 1 must not read block 0's values */
    expect_check("every block writes its own", CLEAN,
                 [&] { PT_LAUNCH(k_per_block, 2, 32, S0, out, 1); });
    expect_check("block 1 reads what only block 0 wrote", Check::shared_uninit,
                 [&] { PT_LAUNCH(k_per_block, 2, 32, S0, out, 0); });
    std::vector<float> v(64);
    cudaMemcpy(v.data(), out, 64 * sizeof(float), cudaMemcpyDeviceToHost);
    EXPECT(v[0] == 1.0f && isnan(v[32]) && isnan(v[63]),
           "shared memory not poisoned at block start (%g %g)", v[32], v[63]);
    cudaFree(out);
}

static void test_cp_async() {
    float *g = dalloc<float>(256), *out = dalloc<float>(64);
    std::vector<float> h(256);
    for (int i = 0; i < 256; i++) h[(size_t)i] = (float)(rnd_u32() % 1000) + 0.5f;
    cudaMemcpy(g, h.data(), 256 * sizeof(float), cudaMemcpyHostToDevice);
    const char *orders[3] = {"forward", "reverse", "shuffle"};
    for (const char *order : orders) {
        pt_emu::set_schedule(order);
        expect_check("cp.async, wait, barrier, read", CLEAN,
                     [&] { PT_LAUNCH(k_cp_async, 1, 32, S0, g, out, CP_OK); });
        std::vector<float> o(64);
        cudaMemcpy(o.data(), out, 64 * sizeof(float), cudaMemcpyDeviceToHost);
        int bad = 0;
        for (int t = 0; t < 32; t++) {
            const int k = (t * 4 + 5) % 128;
            bad += o[(size_t)t] != h[(size_t)k] || o[32 + (size_t)t] != h[128 + (size_t)k];
        }
        EXPECT(!bad, "cp.async (%s): %d wrong values", order, bad);
        expect_check("cp.async without its wait", Check::cp_async_pending,
                     [&] { PT_LAUNCH(k_cp_async, 1, 32, S0, g, out, CP_NO_WAIT); });
        expect_check("cp.async wait without the barrier", Check::shared_race,
                     [&] { PT_LAUNCH(k_cp_async, 1, 32, S0, g, out, CP_NO_BARRIER); });
        expect_check("cp.async read by its thread before the wait", Check::cp_async_pending,
                     [&] { PT_LAUNCH(k_cp_async, 1, 32, S0, g, out, CP_OWN_EARLY); });
        expect_check("cp.async wait_group 1 leaves the newest group in flight",
                     Check::cp_async_pending,
                     [&] { PT_LAUNCH(k_cp_async, 1, 32, S0, g, out, CP_NEWEST_PENDING); });
        expect_check("cp.async never waited for", Check::cp_async_unwaited,
                     [&] { PT_LAUNCH(k_cp_async, 1, 32, S0, g, out, CP_NEVER_WAITED); });
    }
    pt_emu::set_schedule("forward");
    expect_check("cp.async to a misaligned address", Check::cp_async_misuse,
                 [&] { PT_LAUNCH(k_cp_async, 1, 32, S0, g, out, CP_MISALIGNED); });
    expect_check("cp.async from past the end of the source", Check::global_oob,
                 [&] { PT_LAUNCH(k_cp_async, 1, 32, S0, g, out, CP_SRC_OOB); });
    expect_check("cp.async zero-fill", CLEAN,
                 [&] { PT_LAUNCH(k_cp_async, 1, 32, S0, g, out, CP_ZFILL); });
    std::vector<float> o(32);
    cudaMemcpy(o.data(), out, 32 * sizeof(float), cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int t = 0; t < 32; t++) {
        const int k = (t * 4 + 5) % 128; /* element 1 of a 4-float copy: from the source */
        bad += o[(size_t)t] != h[(size_t)k];
    }
    EXPECT(!bad, "cp.async zero-fill: %d wrong values", bad);
    expect_check("cp.async of 4 and 8 bytes", CLEAN,
                 [&] { PT_LAUNCH(k_cp_async, 1, 32, S0, g, out, CP_SMALL); });
    cudaMemcpy(o.data(), out, 32 * sizeof(float), cudaMemcpyDeviceToHost);
    bad = 0;
    for (int t = 0; t < 32; t++) bad += o[(size_t)t] != h[(size_t)((t * 4 + 5) % 128)];
    EXPECT(!bad, "cp.async 4/8 bytes: %d wrong values", bad);
    cudaFree(g), cudaFree(out);
}

/* ldmatrix against the PTX definition, computed directly from the row addresses. */
template <int N, bool TRANS>
static void test_ldmatrix_variant(const uint16_t *dg, const std::vector<uint16_t> &h) {
    std::vector<int> slot(64);
    for (int i = 0; i < 64; i++) slot[(size_t)i] = i;
    for (int i = 63; i > 0; i--) std::swap(slot[(size_t)i], slot[rnd_u32() % (unsigned)(i + 1)]);
    int *dslot = dalloc<int>(32);
    uint32_t *dout = dalloc<uint32_t>(128);
    cudaMemcpy(dslot, slot.data(), 32 * sizeof(int), cudaMemcpyHostToDevice);
    expect_check("ldmatrix", CLEAN,
                 [&] { PT_LAUNCH((k_ldmatrix<N, TRANS>), 1, 32, S0, dg, dslot, dout); });
    std::vector<uint32_t> o(128);
    cudaMemcpy(o.data(), dout, o.size() * 4, cudaMemcpyDeviceToHost);
    /* matrix i, element (row, col) = the col-th half of the row whose address lane 8i + row gave */
    auto el = [&](int i, int row, int col) -> uint32_t {
        return h[(size_t)(slot[(size_t)(8 * i + row)] * 8 + col)];
    };
    int bad = 0;
    for (int l = 0; l < 32; l++)
        for (int i = 0; i < N; i++) {
            const int g = l / 4, t = l % 4;
            const uint32_t lo = TRANS ? el(i, 2 * t, g) : el(i, g, 2 * t);
            const uint32_t hi = TRANS ? el(i, 2 * t + 1, g) : el(i, g, 2 * t + 1);
            bad += o[(size_t)(l * 4 + i)] != (lo | hi << 16);
        }
    EXPECT(!bad, "ldmatrix.x%d%s: %d wrong fragments (seed %u)", N, TRANS ? ".trans" : "", bad,
           g_seed);
    cudaFree(dslot), cudaFree(dout);
}

template <class T> static float to_f(T x);
template <> float to_f(__nv_bfloat16 x) {
    return __bfloat162float(x);
}
template <> float to_f(__half x) {
    return __half2float(x);
}
template <class T> static T from_f(float x);
template <> __nv_bfloat16 from_f(float x) {
    return __float2bfloat16_rn(x);
}
template <> __half from_f(float x) {
    return __float2half_rn(x);
}

template <class T> static void test_ldsm_mma(const char *type) {
    std::vector<T> A(256), Bt(128), B(128);
    std::vector<float> Af(256), Bf(128); /* B(k, n) */
    for (int i = 0; i < 256; i++) {
        A[(size_t)i] = from_f<T>((float)((int)(rnd_u32() % 2001) - 1000) / 256.0f);
        Af[(size_t)i] = to_f(A[(size_t)i]);
    }
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 8; n++) {
            const T v = from_f<T>((float)((int)(rnd_u32() % 2001) - 1000) / 512.0f);
            B[(size_t)(k * 8 + n)] = v;
            Bt[(size_t)(n * 16 + k)] = v;
            Bf[(size_t)(k * 8 + n)] = to_f(v);
        }
    T *dA = dalloc<T>(256), *dBt = dalloc<T>(128), *dB = dalloc<T>(128);
    float *d1 = dalloc<float>(128), *d2 = dalloc<float>(128);
    cudaMemcpy(dA, A.data(), 256 * sizeof(T), cudaMemcpyHostToDevice);
    cudaMemcpy(dBt, Bt.data(), 128 * sizeof(T), cudaMemcpyHostToDevice);
    cudaMemcpy(dB, B.data(), 128 * sizeof(T), cudaMemcpyHostToDevice);
    expect_check("ldmatrix -> mma.sync", CLEAN,
                 [&] { PT_LAUNCH(k_ldsm_mma<T>, 1, 32, S0, dA, dBt, dB, d1, d2); });
    std::vector<float> o1(128), o2(128);
    cudaMemcpy(o1.data(), d1, 512, cudaMemcpyDeviceToHost);
    cudaMemcpy(o2.data(), d2, 512, cudaMemcpyDeviceToHost);
    double worst = 0;
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 8; n++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < 16; k++) {
                ref += (double)Af[(size_t)(m * 16 + k)] * Bf[(size_t)(k * 8 + n)];
                mag += fabs((double)Af[(size_t)(m * 16 + k)] * Bf[(size_t)(k * 8 + n)]);
            }
            const double tol = 1e-6 * mag + 1e-6;
            for (const float got : {o1[(size_t)(m * 8 + n)], o2[(size_t)(m * 8 + n)]}) {
                EXPECT(!isnan(got) && fabs(got - ref) <= tol,
                       "ldmatrix -> mma (%s) D[%d][%d] = %g, want %g (seed %u)", type, m, n, got,
                       ref, g_seed);
                worst = fmax(worst, fabs(got - ref));
            }
        }
    printf(
        "  ldmatrix x4 / x2 / x2.trans -> mma.sync m16n8k16 (%s) = plain matmul: max |err| %.2g\n",
        type, worst);
    cudaFree(dA), cudaFree(dBt), cudaFree(dB), cudaFree(d1), cudaFree(d2);
}

static void test_ldmatrix() {
    std::vector<uint16_t> h(512);
    for (auto &x : h) x = (uint16_t)rnd_u32();
    uint16_t *dg = dalloc<uint16_t>(512);
    cudaMemcpy(dg, h.data(), 1024, cudaMemcpyHostToDevice);
    test_ldmatrix_variant<1, false>(dg, h);
    test_ldmatrix_variant<2, false>(dg, h);
    test_ldmatrix_variant<4, false>(dg, h);
    test_ldmatrix_variant<1, true>(dg, h);
    test_ldmatrix_variant<2, true>(dg, h);
    test_ldmatrix_variant<4, true>(dg, h);
    test_ldsm_mma<__nv_bfloat16>("bf16");
    test_ldsm_mma<__half>("f16");
    uint32_t *out = dalloc<uint32_t>(32);
    expect_check("ldmatrix, misaligned row", Check::ldmatrix_misuse,
                 [&] { PT_LAUNCH(k_ldmatrix_bad, 1, 32, S0, dg, out, 0); });
    expect_check("ldmatrix, global address", Check::ldmatrix_misuse,
                 [&] { PT_LAUNCH(k_ldmatrix_bad, 1, 32, S0, dg, out, 1); });
    expect_check("ldmatrix by half a warp", Check::warp_mask,
                 [&] { PT_LAUNCH(k_ldmatrix_bad, 1, 32, S0, dg, out, 2); });
    cudaFree(dg), cudaFree(out);
}

static void test_barriers() {
    int *out = dalloc<int>(64);
    expect_check("__syncthreads", CLEAN, [&] { PT_LAUNCH(k_barrier, 1, 64, S0, out, 0); });
    expect_check("__syncthreads after half the block exited", Check::barrier_exited,
                 [&] { PT_LAUNCH(k_barrier, 1, 64, S0, out, 1); });
    expect_check("two different __syncthreads", Check::barrier_divergent,
                 [&] { PT_LAUNCH(k_barrier, 1, 64, S0, out, 2); });
    expect_check("deadlock", Check::barrier_divergent,
                 [&] { PT_LAUNCH(k_barrier, 1, 64, S0, out, 3); });
    {
        Capture cap;
        PT_LAUNCH(k_barrier, 1, 64, S0, out, 3);
        EXPECT(cudaGetLastError() == cudaErrorLaunchFailure,
               "a deadlocked launch does not report a launch failure");
    }
    cudaFree(out);
}

static void test_masks() {
    int *out = dalloc<int>(64);
    expect_check("half-warp shuffle", CLEAN, [&] { PT_LAUNCH(k_mask, 1, 64, S0, out, 0); });
    expect_check("votes", CLEAN, [&] { PT_LAUNCH(k_mask, 1, 32, S0, out, 8); });
    std::vector<int> o(32);
    cudaMemcpy(o.data(), out, 32 * sizeof(int), cudaMemcpyDeviceToHost);
    EXPECT(o[0] == (int)0xaaaaaaaau + 2 + 4, "votes: %d", o[0]);
    expect_check("shuffle mask without the calling lane", Check::warp_mask,
                 [&] { PT_LAUNCH(k_mask, 1, 64, S0, out, 1); });
    expect_check("shuffle mask naming exited lanes", Check::warp_mask,
                 [&] { PT_LAUNCH(k_mask, 1, 64, S0, out, 2); });
    expect_check("shuffle from a lane outside the group", Check::warp_mask,
                 [&] { PT_LAUNCH(k_mask, 1, 64, S0, out, 3); });
    expect_check("one group at two kinds of shuffle", Check::warp_mask,
                 [&] { PT_LAUNCH(k_mask, 1, 64, S0, out, 4); });
    expect_check("mma.sync by half a warp", Check::warp_mask,
                 [&] { PT_LAUNCH(k_mask, 1, 64, S0, out, 5); });
    expect_check("full mask in a 16-thread block", Check::warp_mask,
                 [&] { PT_LAUNCH(k_mask, 1, 16, S0, out, 6); });
    expect_check("vote naming exited lanes", Check::warp_mask,
                 [&] { PT_LAUNCH(k_mask, 1, 32, S0, out, 7); });
    cudaFree(out);
}

static void test_limits() {
    float *out = dalloc<float>(64);
    int *iout = dalloc<int>(64);
    expect_check("64 KiB of static shared memory", Check::shared_limit,
                 [&] { PT_LAUNCH(k_too_much_static, 1, 32, S0, out); });
    const void *kd = reinterpret_cast<const void *>(k_dynamic);
    PT_LAUNCH_SMEM(k_dynamic, 1, 32, 100 * 1024, S0, iout, 800);
    EXPECT(cudaGetLastError() == cudaErrorInvalidValue,
           "100 KiB of dynamic shared memory accepted without the attribute");
    EXPECT(cudaFuncSetAttribute(kd, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024) ==
               cudaSuccess,
           "cudaFuncSetAttribute 100 KiB refused");
    expect_check("dynamic shared memory within the launch's size", CLEAN,
                 [&] { PT_LAUNCH_SMEM(k_dynamic, 1, 32, 100 * 1024, S0, iout, 800); });
    std::vector<int> o(32);
    cudaMemcpy(o.data(), iout, 32 * sizeof(int), cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int t = 0; t < 32; t++) bad += o[(size_t)t] != t;
    EXPECT(!bad, "dynamic shared memory: %d wrong values", bad);
    expect_check("dynamic shared memory past the launch's size", Check::shared_oob,
                 [&] { PT_LAUNCH_SMEM(k_dynamic, 1, 32, 64 * 1024, S0, iout, 800); });
    cudaFree(out), cudaFree(iout);
}

/* Host staging: a cudaMemcpyAsync from pinned memory may still be reading its source until the
 * host observes it complete; writing the source before that is pinned-reuse, whichever way the
 * completion is then observed. `how`: 0 cudaEventSynchronize, 1 cudaEventQuery,
 * 2 cudaStreamSynchronize, 3 cudaDeviceSynchronize, 4 cudaFreeHost, 5 cudaStreamDestroy. */
static void pinned_case(const char *what, Check want, int how, bool wait_first, bool touch_copied) {
    expect_check(what, want, [&] {
        cudaStream_t s;
        cudaEvent_t ev;
        unsigned char *h = nullptr;
        int *d = dalloc<int>(64);
        cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
        cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
        cudaMallocHost((void **)&h, 512);
        for (int i = 0; i < 512; i++) h[i] = (unsigned char)rnd_u32();
        const unsigned char sent = h[300];
        cudaMemcpyAsync(d, h + 256, 256, cudaMemcpyHostToDevice, s);
        cudaEventRecord(ev, s);
        if (wait_first) cudaEventSynchronize(ev);
        h[touch_copied ? 300 : 100] ^= 0x5a; /* inside the copied range, or outside it */
        switch (how) {
        case 0:
            cudaEventSynchronize(ev);
            break;
        case 1:
            EXPECT(cudaEventQuery(ev) == cudaSuccess, "%s: cudaEventQuery not complete", what);
            break;
        case 2:
            cudaStreamSynchronize(s);
            break;
        case 3:
            cudaDeviceSynchronize();
            break;
        }
        unsigned char back[256];
        cudaMemcpy(back, d, 256, cudaMemcpyDeviceToHost);
        EXPECT(back[44] == sent, "%s: the device did not get the bytes sent", what);
        if (how == 5) cudaStreamDestroy(s);
        cudaFreeHost(h);
        if (how != 5) cudaStreamDestroy(s);
        cudaEventDestroy(ev);
        cudaFree(d);
    });
}

static void test_pinned() {
    static const char *const hows[] = {"cudaEventSynchronize",  "cudaEventQuery",
                                       "cudaStreamSynchronize", "cudaDeviceSynchronize",
                                       "cudaFreeHost",          "cudaStreamDestroy"};
    char what[160];
    for (int how = 0; how < 6; how++) {
        snprintf(what, sizeof what, "pinned source written before the wait, seen at %s", hows[how]);
        pinned_case(what, Check::pinned_reuse, how, false, true);
    }
    pinned_case("pinned source written after cudaEventSynchronize", CLEAN, 2, true, true);
    pinned_case("pinned bytes outside the copied range written before the wait", CLEAN, 0, false,
                false);
    /* the event must come after the copy: an earlier one does not cover it */
    expect_check("pinned source written after waiting for an event recorded before the copy",
                 Check::pinned_reuse, [&] {
                     cudaEvent_t ev;
                     unsigned char *h = nullptr;
                     int *d = dalloc<int>(16);
                     cudaEventCreate(&ev);
                     cudaMallocHost((void **)&h, 64);
                     memset(h, 1, 64);
                     cudaEventRecord(ev, S0);
                     cudaMemcpyAsync(d, h, 64, cudaMemcpyHostToDevice, S0);
                     cudaEventSynchronize(ev);
                     h[0] = 2;
                     cudaFreeHost(h);
                     cudaEventDestroy(ev);
                     cudaFree(d);
                 });
    /* an event of another stream does not cover it either */
    expect_check("pinned source written after waiting for another stream's event",
                 Check::pinned_reuse, [&] {
                     cudaStream_t s1, s2;
                     cudaEvent_t ev;
                     unsigned char *h = nullptr;
                     int *d = dalloc<int>(16);
                     cudaStreamCreate(&s1), cudaStreamCreate(&s2);
                     cudaEventCreate(&ev);
                     cudaMallocHost((void **)&h, 64);
                     memset(h, 1, 64);
                     cudaMemcpyAsync(d, h, 64, cudaMemcpyHostToDevice, s1);
                     cudaEventRecord(ev, s2);
                     cudaEventSynchronize(ev);
                     h[63] = 2;
                     cudaStreamSynchronize(s1);
                     cudaFreeHost(h);
                     cudaEventDestroy(ev);
                     cudaStreamDestroy(s1), cudaStreamDestroy(s2);
                     cudaFree(d);
                 });
    /* pageable memory: the driver stages it before cudaMemcpyAsync returns */
    expect_check("pageable source written at once", CLEAN, [&] {
        std::vector<unsigned char> h(64, 1);
        int *d = dalloc<int>(16);
        cudaMemcpyAsync(d, h.data(), 64, cudaMemcpyHostToDevice, S0);
        h[0] = 2;
        cudaStreamSynchronize(S0);
        cudaFree(d);
    });
    /* a ring of two slots, each reused only after the event of its previous copy: clean */
    expect_check("two-slot ring with an event wait before each reuse", CLEAN, [&] {
        cudaEvent_t ev[2];
        unsigned char *h = nullptr;
        int *d = dalloc<int>(16 * 8);
        cudaMallocHost((void **)&h, 128);
        cudaEventCreate(&ev[0]), cudaEventCreate(&ev[1]);
        for (int i = 0; i < 8; i++) {
            unsigned char *slot = h + 64 * (i % 2);
            if (i >= 2) cudaEventSynchronize(ev[i % 2]);
            memset(slot, i, 64);
            cudaMemcpyAsync(d + 16 * i, slot, 64, cudaMemcpyHostToDevice, S0);
            cudaEventRecord(ev[i % 2], S0);
        }
        cudaDeviceSynchronize();
        cudaFreeHost(h);
        cudaEventDestroy(ev[0]), cudaEventDestroy(ev[1]);
        cudaFree(d);
    });
    EXPECT(cudaFreeHost((void *)&g_seed) == cudaErrorInvalidValue,
           "cudaFreeHost of memory not from cudaMallocHost accepted");
    (void)cudaGetLastError();
}

/* Outside a Capture a violation aborts the process with a diagnostic: run a racy kernel in a
 * child process and read what it says. */
static void test_default_aborts() {
    int *out = dalloc<int>(128), *in = dalloc<int>(128);
    cudaMemset(in, 0, 128 * sizeof(int));
    int fds[2];
    if (pipe(fds)) {
        EXPECT(0, "pipe");
        return;
    }
    fflush(stdout), fflush(stderr);
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        setenv("PUNCTUM_EMU_SYMBOLIZE", "1", 1);
        PT_LAUNCH(k_reverse, 1, 128, S0, in, out, 0);
        _exit(0); /* not reached when the check works */
    }
    close(fds[1]);
    std::string err;
    char buf[4096];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0) err.append(buf, (size_t)n);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
           "a racy kernel outside a Capture did not abort (status %d)", status);
    EXPECT(err.find("shared-race") != std::string::npos &&
               err.find("k_reverse") != std::string::npos &&
               err.find("block (0,0,0)") != std::string::npos &&
               err.find("thread ") != std::string::npos && err.find("buf + ") != std::string::npos,
           "the abort's diagnostic does not name the check, kernel, block, threads and array:\n%s",
           err.c_str());
    const size_t nl = err.find('\n');
    printf("  a violation outside a Capture aborts; its first line:\n  %s\n",
           err.substr(0, nl).c_str());
    cudaFree(out), cudaFree(in);
}

int run_check_selftests() {
    if (!pt_emu::access_checks_enabled()) {
        printf("test_emu_checks: memory access checks are not compiled in (PT_CUDA_EMU_CHECKS=OFF, "
               "or a "
               "compiler without -fsanitize=thread) or PUNCTUM_EMU_CHECKS=0: only the scheduler "
               "checks run\n");
        test_barriers();
        test_masks();
        test_pinned(); /* (host-side: needs no tracing) */
        return g_check_fail;
    }
    if (const char *s = getenv("PUNCTUM_EMU_SEED")) g_seed = (unsigned)strtoul(s, nullptr, 10);
    printf("test_emu_checks: seed %u (PUNCTUM_EMU_SEED to change)\n", g_seed);
    test_global();
    test_shared_bounds();
    test_races();
    test_uninit();
    test_cp_async();
    test_ldmatrix();
    test_barriers();
    test_masks();
    test_limits();
    test_pinned();
    test_default_aborts();
    printf("test_emu_checks: %s\n",
           g_check_fail ? "FAILED" : "ok (every check caught its broken kernel)");
    return g_check_fail;
}
