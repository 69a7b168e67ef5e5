/* punctum — self-test of the CUDA emulation layer (cuda_emu.h / cuda_emu.cpp), independent of
 * the backend: barriers and shared memory per block, every warp shuffle (xor, down, up, idx,
 * sub-warp widths, partial masks), index registers for 3-D grids and blocks, and the cuBLAS /
 * cuBLASLt emulation against naive loops for every transpose combination, leading dimensions
 * larger than the rows, batched strided layouts, bias epilogue and f32/bf16/f16 types, plus the
 * argument validation a real library does. Label cuda-emu. */
#include "pt_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

static int g_fail;
int run_check_selftests(); /* test_emu_checks.cpp */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            g_fail++;                                                                              \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

/* ---- kernels --------------------------------------------------------------------------------- */

/* Reverse a block's values through shared memory (needs the barrier), then a block sum. */
__global__ void k_reverse_sum(const int *in, int *out, int *sums) {
    PT_SHARED(int, buf, [256]);
    PT_SHARED(int, red, [32]);
    const int t = threadIdx.x, n = blockDim.x, b = blockIdx.x;
    buf[t] = in[b * n + t];
    __syncthreads();
    out[b * n + t] = buf[n - 1 - t];
    const int s = pt_block_sum(buf[t], red);
    if (t == 0) sums[b] = s;
}

/* Block reductions one after another on the same scratch (each must wait until the previous
 * one's readers are done with it): out = sum, max, sum of 2v, max of -v. */
__global__ void k_reductions(const float *in, float *out) {
    PT_SHARED(float, red, [32]);
    const float v = in[blockIdx.x * blockDim.x + threadIdx.x];
    const float s1 = pt_block_sum(v, red);
    const float m1 = pt_block_max(v, red, -INFINITY);
    const float s2 = pt_block_sum(2.0f * v, red);
    const float m2 = pt_block_max(-v, red, -INFINITY);
    if (threadIdx.x == 0) {
        float *o = out + blockIdx.x * 4;
        o[0] = s1, o[1] = m1, o[2] = s2, o[3] = m2;
    }
}

/* Every shuffle flavour; results per lane into out[lane * 8 + k]. */
__global__ void k_shuffles(int *out) {
    const int lane = threadIdx.x & 31;
    int *o = out + (size_t)threadIdx.x * 8;
    o[0] = __shfl_xor_sync(0xffffffffu, lane * 10, 5);
    o[1] = __shfl_down_sync(0xffffffffu, lane * 10, 3);
    o[2] = __shfl_up_sync(0xffffffffu, lane * 10, 2);
    o[3] = __shfl_sync(0xffffffffu, lane * 10, 7);
    o[4] = __shfl_xor_sync(0xffffffffu, lane * 10, 4, 8);  /* within groups of 8 */
    o[5] = __shfl_down_sync(0xffffffffu, lane * 10, 5, 8); /* does not cross a group */
    o[6] = __shfl_sync(0xffffffffu, lane * 10, 3, 16);     /* lane 3 of each half */
    if (lane < 16)
        o[7] = __shfl_xor_sync(0x0000ffffu, lane * 10, 1); /* half the warp */
    else
        o[7] = -1;
    const double d = __shfl_xor_sync(0xffffffffu, (double)lane + 0.5, 1);
    if (d != (double)(lane ^ 1) + 0.5) o[7] = -999;
}

__global__ void k_indices(int *out) {
    const int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const int bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int nthr = blockDim.x * blockDim.y * blockDim.z;
    out[bid * nthr + tid] = bid * 1000 + tid;
}

/* ---- GEMM reference -------------------------------------------------------------------------- */

static float rnd(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}
static void store(void *p, size_t i, cudaDataType t, float v) {
    if (t == CUDA_R_32F)
        ((float *)p)[i] = v;
    else if (t == CUDA_R_16BF)
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    else
        ((__half *)p)[i] = __float2half_rn(v);
}
static float load(const void *p, size_t i, cudaDataType t) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    if (t == CUDA_R_16BF) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return __half2float(((const __half *)p)[i]);
}

static void test_gemm(cudaDataType ab, int ta, int tb, int batch, int bias) {
    const int m = 5, n = 7, k = 6;
    const int arows = ta ? k : m, acols = ta ? m : k, brows = tb ? n : k, bcols = tb ? k : n;
    const int lda = arows + 3, ldb = brows + 2, ldc = m + 1;
    const long long sa = (long long)lda * acols + 4, sb = (long long)ldb * bcols + 1,
                    sc = (long long)ldc * n + 2;
    const size_t es = ab == CUDA_R_32F ? 4 : 2;
    std::vector<char> A((size_t)sa * batch * es), B((size_t)sb * batch * es);
    std::vector<float> C((size_t)sc * batch), D((size_t)sc * batch, 12345.0f), bv(m);
    unsigned s = 7u + (unsigned)(ta * 2 + tb + 4 * batch);
    for (size_t i = 0; i < (size_t)sa * batch; i++) store(A.data(), i, ab, rnd(&s));
    for (size_t i = 0; i < (size_t)sb * batch; i++) store(B.data(), i, ab, rnd(&s));
    for (auto &x : C) x = rnd(&s);
    for (auto &x : bv) x = rnd(&s);
    const float alpha = 1.5f, beta = bias ? 0.0f : 0.25f;

    cublasLtHandle_t lt;
    cublasLtCreate(&lt);
    cublasLtMatmulDesc_t desc;
    cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    const int32_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb);
    if (bias) {
        const uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
        const void *bp = bv.data();
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp);
    }
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatrixLayoutCreate(&la, ab, (uint64_t)arows, (uint64_t)acols, lda);
    cublasLtMatrixLayoutCreate(&lb, ab, (uint64_t)brows, (uint64_t)bcols, ldb);
    cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, (uint64_t)m, (uint64_t)n, ldc);
    const int32_t bc = batch;
    cublasLtMatrixLayout_t ls[3] = {la, lb, lc};
    const long long strides[3] = {sa, sb, sc};
    for (int i = 0; i < 3; i++) {
        cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc);
        const int64_t st = strides[i];
        cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &st,
                                         sizeof st);
    }
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulHeuristicResult_t res;
    int got = 0;
    cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 1, &res, &got);
    CHECK(st == CUBLAS_STATUS_SUCCESS && got == 1, "heuristic");
    st = cublasLtMatmul(lt, desc, &alpha, A.data(), la, B.data(), lb, &beta, C.data(), lc, D.data(),
                        lc, &res.algo, nullptr, 0, nullptr);
    CHECK(st == CUBLAS_STATUS_SUCCESS, "cublasLtMatmul status %d", (int)st);
    double maxerr = 0;
    for (int bt = 0; bt < batch; bt++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double acc = 0;
                for (int l = 0; l < k; l++) {
                    const float a =
                        load(A.data(), (size_t)(bt * sa + (ta ? i * lda + l : l * lda + i)), ab);
                    const float b =
                        load(B.data(), (size_t)(bt * sb + (tb ? l * ldb + j : j * ldb + l)), ab);
                    acc += (double)a * b;
                }
                double want = alpha * acc + beta * C[(size_t)(bt * sc + j * ldc + i)] +
                              (bias ? bv[(size_t)i] : 0.0);
                maxerr = fmax(maxerr, fabs(want - D[(size_t)(bt * sc + j * ldc + i)]));
            }
    /* padding between columns and batches untouched */
    int untouched = 1;
    for (int bt = 0; bt < batch; bt++)
        for (int j = 0; j < n; j++) untouched &= D[(size_t)(bt * sc + j * ldc + m)] == 12345.0f;
    CHECK(maxerr < 1e-4, "cublasLtMatmul type %d ta %d tb %d batch %d bias %d: max err %g", (int)ab,
          ta, tb, batch, bias, maxerr);
    CHECK(untouched, "cublasLtMatmul wrote outside the m rows of a column");

    /* shape mismatch is refused, as cuBLASLt does */
    cublasLtMatrixLayout_t bad;
    cublasLtMatrixLayoutCreate(&bad, CUDA_R_32F, (uint64_t)m + 1, (uint64_t)n, ldc);
    cublasLtMatrixLayoutSetAttribute(bad, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc);
    st = cublasLtMatmul(lt, desc, &alpha, A.data(), la, B.data(), lb, &beta, C.data(), bad,
                        D.data(), bad, nullptr, nullptr, 0, nullptr);
    CHECK(st != CUBLAS_STATUS_SUCCESS, "mismatched D layout accepted");
    cublasLtMatrixLayoutDestroy(bad);
    cublasLtMatmulPreferenceDestroy(pref);
    for (auto l : ls) cublasLtMatrixLayoutDestroy(l);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(lt);

    /* the same product through cublasGemmEx (first batch, no bias) */
    if (!bias) {
        cublasHandle_t h;
        cublasCreate(&h);
        std::vector<float> E(C.begin(), C.begin() + sc);
        st = cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n,
                          k, &alpha, A.data(), ab, lda, B.data(), ab, ldb, &beta, E.data(),
                          CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        CHECK(st == CUBLAS_STATUS_SUCCESS, "cublasGemmEx status %d", (int)st);
        double e2 = 0;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++)
                e2 = fmax(e2, fabs(E[(size_t)(j * ldc + i)] - D[(size_t)(j * ldc + i)]));
        CHECK(e2 < 1e-5, "cublasGemmEx differs from cublasLtMatmul by %g", e2);
        st = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, A.data(), ab, m - 1,
                          B.data(), ab, ldb, &beta, E.data(), CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT);
        CHECK(st == CUBLAS_STATUS_INVALID_VALUE, "lda < m accepted");
        cublasDestroy(h);
    }
}

int main() {
    /* barriers, shared memory per block, block reduction */
    {
        const int nb = 3, nt = 96;
        std::vector<int> in((size_t)nb * nt), out((size_t)nb * nt), sums(nb);
        for (int i = 0; i < nb * nt; i++) in[(size_t)i] = i * 7 % 101;
        int *din, *dout, *dsum;
        cudaMalloc((void **)&din, in.size() * 4);
        cudaMalloc((void **)&dout, out.size() * 4);
        cudaMalloc((void **)&dsum, nb * 4);
        cudaMemcpy(din, in.data(), in.size() * 4, cudaMemcpyHostToDevice);
        PT_LAUNCH(k_reverse_sum, nb, nt, (cudaStream_t)0, (const int *)din, dout, dsum);
        CHECK(cudaGetLastError() == cudaSuccess, "launch");
        cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost);
        cudaMemcpy(sums.data(), dsum, nb * 4, cudaMemcpyDeviceToHost);
        for (int b = 0; b < nb; b++) {
            int s = 0;
            for (int t = 0; t < nt; t++) {
                s += in[(size_t)(b * nt + t)];
                CHECK(out[(size_t)(b * nt + t)] == in[(size_t)(b * nt + nt - 1 - t)],
                      "reverse b %d t %d", b, t);
            }
            CHECK(sums[(size_t)b] == s, "block sum %d: %d vs %d", b, sums[(size_t)b], s);
        }
        cudaFree(din), cudaFree(dout), cudaFree(dsum);
    }
    /* reductions reusing their scratch */
    {
        const int nb = 2, nt = 128;
        std::vector<float> in((size_t)nb * nt), out((size_t)nb * 4);
        for (int i = 0; i < nb * nt; i++) in[(size_t)i] = (float)(i * 37 % 101) - 50.0f;
        float *din, *dout;
        cudaMalloc((void **)&din, in.size() * 4);
        cudaMalloc((void **)&dout, out.size() * 4);
        cudaMemcpy(din, in.data(), in.size() * 4, cudaMemcpyHostToDevice);
        PT_LAUNCH(k_reductions, nb, nt, (cudaStream_t)0, (const float *)din, dout);
        cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost);
        for (int b = 0; b < nb; b++) {
            float s = 0, mx = -INFINITY, mn = INFINITY;
            for (int t = 0; t < nt; t++) {
                const float v = in[(size_t)(b * nt + t)];
                s += v, mx = fmaxf(mx, v), mn = fminf(mn, v);
            }
            const float *o = &out[(size_t)b * 4];
            CHECK(o[0] == s && o[1] == mx && o[2] == 2 * s && o[3] == -mn,
                  "block %d reductions: %g %g %g %g, want %g %g %g %g", b, o[0], o[1], o[2], o[3], s, mx,
                  2 * s, -mn);
        }
        cudaFree(din), cudaFree(dout);
    }
    /* shuffles */
    {
        int *d;
        cudaMalloc((void **)&d, 64 * 8 * 4);
        PT_LAUNCH(k_shuffles, 1, 64, (cudaStream_t)0, d);
        std::vector<int> o(64 * 8);
        cudaMemcpy(o.data(), d, o.size() * 4, cudaMemcpyDeviceToHost);
        for (int t = 0; t < 64; t++) {
            const int l = t & 31, *r = &o[(size_t)t * 8];
            CHECK(r[0] == (l ^ 5) * 10, "xor lane %d: %d", l, r[0]);
            CHECK(r[1] == (l + 3 < 32 ? l + 3 : l) * 10, "down lane %d: %d", l, r[1]);
            CHECK(r[2] == (l >= 2 ? l - 2 : l) * 10, "up lane %d: %d", l, r[2]);
            CHECK(r[3] == 70, "idx lane %d: %d", l, r[3]);
            CHECK(r[4] == (l ^ 4) * 10, "xor width 8 lane %d: %d", l, r[4]);
            CHECK(r[5] == ((l % 8) + 5 < 8 ? l + 5 : l) * 10, "down width 8 lane %d: %d", l, r[5]);
            CHECK(r[6] == (l / 16 * 16 + 3) * 10, "idx width 16 lane %d: %d", l, r[6]);
            CHECK(r[7] == (l < 16 ? (l ^ 1) * 10 : -1), "partial mask lane %d: %d", l, r[7]);
        }
        cudaFree(d);
    }
    /* 3-D grids and blocks */
    {
        const dim3 g(2, 3, 2), b(4, 2, 3);
        const int nthr = 24, nblk = 12;
        int *d;
        cudaMalloc((void **)&d, nthr * nblk * 4);
        PT_LAUNCH(k_indices, g, b, (cudaStream_t)0, d);
        std::vector<int> o((size_t)nthr * nblk);
        cudaMemcpy(o.data(), d, o.size() * 4, cudaMemcpyDeviceToHost);
        for (int i = 0; i < nthr * nblk; i++)
            CHECK(o[(size_t)i] == i / nthr * 1000 + i % nthr, "index %d: %d", i, o[(size_t)i]);
        cudaFree(d);
        /* an impossible configuration is an error, as on a GPU */
        PT_LAUNCH(k_indices, 0, 32, (cudaStream_t)0, d);
        CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "empty grid accepted");
        PT_LAUNCH(k_indices, 1, 2048, (cudaStream_t)0, d);
        CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "2048 threads accepted");
    }
    /* GEMMs */
    const cudaDataType types[3] = {CUDA_R_32F, CUDA_R_16BF, CUDA_R_16F};
    for (int t = 0; t < 3; t++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int batch = 1; batch <= 3; batch += 2)
                    for (int bias = 0; bias < 2; bias++) test_gemm(types[t], ta, tb, batch, bias);

    g_fail += run_check_selftests();

    const pt_emu::Stats s = pt_emu::stats();
    printf("test_emu_selftest: %s (%llu launches, %llu blocks, %llu context switches, %llu "
           "barriers, %llu checked "
           "accesses)\n",
           g_fail ? "FAILED" : "ok", s.launches, s.blocks, s.switches, s.barriers,
           s.checked_accesses);
    return g_fail ? 1 : 0;
}
