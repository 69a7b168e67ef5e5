/* punctum — the device wrappers of kernels/pt_cuda.h against naive references, one source for
 * both builds: `test_wrappers_cuda` (nvcc, real PTX on a GPU: label gpu, exit 77 without one)
 * and `test_wrappers_emu` (test_wrappers_emu.cpp: the emulation's models, label cuda-emu). The
 * same expectations on both is what makes the emulation's ldmatrix / cp.async / mma.sync
 * models trustworthy.
 *
 * - ldmatrix .x1/.x2/.x4, with and without .trans, rows at scattered 16-byte slots: every
 *   lane's registers against the PTX definition computed from the row addresses;
 * - cp.async 16 (with and without zero-fill), 8 and 4 bytes in two groups, wait_group 1 / 0,
 *   barrier: the staged values;
 * - ldmatrix -> mma.sync m16n8k16 (A via .x4, B via .x2 from an [n][k] tile and via .x2.trans
 *   from a [k][n] tile), f16 and bf16: against a float64 matrix product.
 *
 *   test_wrappers_{cuda,emu} [--seed N] */
#include "pt_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utility>
#include <vector>

static int g_fail;
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            g_fail++;                                                                              \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

static unsigned g_seed = 4242;
static unsigned rnd() {
    g_seed = g_seed * 1664525u + 1013904223u;
    return g_seed >> 8;
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        const cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                                   \
            printf("FAIL %s: %s\n", #call, cudaGetErrorString(e_));                                \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

template <class T> static T *dev(const std::vector<T> &h) {
    void *p = nullptr;
    CK(cudaMalloc(&p, h.size() * sizeof(T)));
    CK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return (T *)p;
}
template <class T> static std::vector<T> host(const T *d, size_t n) {
    std::vector<T> h(n);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}

/* ---- kernels ---------------------------------------------------------------------------------- */

template <int N, bool TRANS>
__global__ void k_ldmatrix(const uint16_t *g, const int *slot, uint32_t *out) {
    PT_SHARED(uint16_t, s, [64 * 8]);
    for (int i = threadIdx.x; i < 64 * 8; i += blockDim.x) s[i] = g[i];
    __syncthreads();
    uint32_t r[N];
    pt_ldmatrix<N, TRANS>(r, &s[slot[threadIdx.x] * 8]);
    for (int i = 0; i < N; i++) out[threadIdx.x * 4 + i] = r[i];
}

/* thread t stages floats 4t..4t+3 of two 128-float stages; out: another thread's floats */
__global__ void k_cp_async(const float *g, float *out) {
    PT_SHARED(float, s, [3][128]);
    const int t = threadIdx.x, o = (4 * t + 5) % 128;
    pt_cp_async16(&s[0][4 * t], g + 4 * t);
    pt_cp_async_commit();
    pt_cp_async16_zfill(&s[1][4 * t], g + 128 + 4 * t, 4 * (t % 5)); /* 0..16 bytes */
    pt_cp_async<8>(&s[2][4 * t], g + 256 + 4 * t);
    pt_cp_async<4>(&s[2][4 * t + 2], g + 256 + 4 * t + 2);
    pt_cp_async<4>(&s[2][4 * t + 3], g + 256 + 4 * t + 3);
    pt_cp_async_commit();
    pt_cp_async_wait<1>();
    __syncthreads();
    out[t] = s[0][o];
    pt_cp_async_wait<0>();
    __syncthreads();
    for (int k = 0; k < 4; k++) out[32 + 4 * t + k] = s[1][(4 * t + 4 + k) % 128];
    out[160 + t] = s[2][o];
}

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

/* ---- tests ------------------------------------------------------------------------------------ */

template <int N, bool TRANS> static void test_ldmatrix() {
    std::vector<uint16_t> h(512);
    for (auto &x : h) x = (uint16_t)rnd();
    std::vector<int> slot(64);
    for (int i = 0; i < 64; i++) slot[(size_t)i] = i;
    for (int i = 63; i > 0; i--) std::swap(slot[(size_t)i], slot[rnd() % (unsigned)(i + 1)]);
    uint16_t *dg = dev(h);
    int *ds = dev(slot);
    uint32_t *dout = dev(std::vector<uint32_t>(128, 0));
    PT_LAUNCH((k_ldmatrix<N, TRANS>), 1, 32, (cudaStream_t)0, (const uint16_t *)dg, (const int *)ds, dout);
    CK(cudaGetLastError());
    const std::vector<uint32_t> o = host(dout, 128);
    /* matrix i, element (row, col): half `col` of the row whose address lane 8i + row gave */
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
    EXPECT(!bad, "ldmatrix.x%d%s: %d wrong registers", N, TRANS ? ".trans" : "", bad);
    printf("ldmatrix.x%d%-6s %s\n", N, TRANS ? ".trans" : "", bad ? "FAIL" : "ok");
    cudaFree(dg), cudaFree(ds), cudaFree(dout);
}

static void test_cp_async() {
    std::vector<float> h(384);
    for (auto &x : h) x = (float)(rnd() % 100000) / 7.0f;
    float *dg = dev(h);
    float *dout = dev(std::vector<float>(192, -1.0f));
    PT_LAUNCH(k_cp_async, 1, 32, (cudaStream_t)0, (const float *)dg, dout);
    CK(cudaGetLastError());
    const std::vector<float> o = host(dout, 192);
    int bad = 0;
    for (int t = 0; t < 32; t++) {
        const int k = (4 * t + 5) % 128;
        bad += o[(size_t)t] != h[(size_t)k];
        bad += o[160 + (size_t)t] != h[256 + (size_t)k];
        const int u = (t + 1) % 32; /* the thread that staged floats 4u..4u+3 of stage 1 */
        for (int j = 0; j < 4; j++) {
            const float want = 4 * j < 4 * (u % 5) ? h[128 + (size_t)(4 * u + j)] : 0.0f;
            bad += o[32 + (size_t)(4 * t + j)] != want;
        }
    }
    EXPECT(!bad, "cp.async: %d wrong values", bad);
    printf("cp.async 16/zfill/8/4  %s\n", bad ? "FAIL" : "ok");
    cudaFree(dg), cudaFree(dout);
}

static float to_f(__half x) { return __half2float(x); }
static float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
static void from_f(float v, __half *x) { *x = __float2half_rn(v); }
static void from_f(float v, __nv_bfloat16 *x) { *x = __float2bfloat16_rn(v); }

template <class T> static void test_ldsm_mma(const char *type) {
    std::vector<T> A(256), Bt(128), B(128);
    for (auto &x : A) from_f((float)((int)(rnd() % 2001) - 1000) / 256.0f, &x);
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 8; n++) {
            T v;
            from_f((float)((int)(rnd() % 2001) - 1000) / 512.0f, &v);
            B[(size_t)(k * 8 + n)] = v, Bt[(size_t)(n * 16 + k)] = v;
        }
    T *dA = dev(A), *dBt = dev(Bt), *dB = dev(B);
    float *d1 = dev(std::vector<float>(128, NAN)), *d2 = dev(std::vector<float>(128, NAN));
    PT_LAUNCH(k_ldsm_mma<T>, 1, 32, (cudaStream_t)0, (const T *)dA, (const T *)dBt, (const T *)dB, d1, d2);
    CK(cudaGetLastError());
    const std::vector<float> o1 = host(d1, 128), o2 = host(d2, 128);
    double worst = 0;
    int bad = 0;
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 8; n++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < 16; k++) {
                const double p = (double)to_f(A[(size_t)(m * 16 + k)]) * to_f(B[(size_t)(k * 8 + n)]);
                ref += p, mag += fabs(p);
            }
            for (const float got : {o1[(size_t)(m * 8 + n)], o2[(size_t)(m * 8 + n)]}) {
                const double err = fabs(got - ref);
                bad += !(err <= 1e-5 * mag + 1e-6); /* (NaN fails) */
                worst = err > worst ? err : worst;
            }
        }
    EXPECT(!bad, "ldmatrix -> mma.sync (%s): %d wrong elements, max |err| %g", type, bad, worst);
    printf("ldmatrix -> mma (%s) %s (max |err| %.2g)\n", type, bad ? "FAIL" : "ok", worst);
    cudaFree(dA), cudaFree(dBt), cudaFree(dB), cudaFree(d1), cudaFree(d2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) g_seed = (unsigned)strtoul(argv[++i], NULL, 10);
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("test_wrappers: skipped: no CUDA device\n");
        return 77;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    if (prop.major < 8) {
        printf("test_wrappers: skipped: %s is sm_%d%d, the wrappers need sm_80+\n", prop.name, prop.major,
               prop.minor);
        return 77;
    }
    printf("test_wrappers: %s, seed %u (--seed to change)\n", prop.name, g_seed);
    test_ldmatrix<1, false>();
    test_ldmatrix<2, false>();
    test_ldmatrix<4, false>();
    test_ldmatrix<1, true>();
    test_ldmatrix<2, true>();
    test_ldmatrix<4, true>();
    test_cp_async();
    test_ldsm_mma<__half>("f16");
    test_ldsm_mma<__nv_bfloat16>("bf16");
    printf("test_wrappers: %s\n", g_fail ? "FAILED" : "ok");
    return g_fail ? 1 : 0;
}
