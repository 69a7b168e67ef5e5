/* punctum — the cpu backend on weights in their checkpoint dtype (model.h, SPEC §1), and the
 * backends' error status (backend.h):
 *
 * - pt_tensor_to_f32 against pt_f16_to_f32 / pt_bf16_to_f32 for every 16-bit pattern, at an
 *   odd (unaligned) address, strided;
 * - linear (and linear_add, the same added into a residual) on F32 (aligned: in place;
 *   unaligned: converted), F16 and BF16 weights, stored
 *   [out, in] or transposed [in, out], as one part or q|k|v-like parts with biases, with more
 *   output rows than one conversion block, with few rows (the row-streaming kernels) and with
 *   more (the GEMM), the few-row kernels in both versions (AVX2 intrinsics and portable C):
 *   against a float64 loop over the same values;
 * - embed with BF16 token and F16 position embeddings, converted row by row;
 * - the sticky status: an allocation refused by PUNCTUM_TEST_ALLOC_LIMIT is out of memory with
 *   its size, later operations do nothing, taking the error clears it.
 *
 * Random inputs from a fixed seed (printed). Tolerance: 2e-5 relative to the row's largest
 * |term| sum (float32 accumulation of `in` products), NaN/Inf rejected first. */
#include "punctum/backend.h"

#include "backend/cpu_rows.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int g_fail;
static uint64_t g_rng = 20251206;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            g_fail++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static double rnd(void) { /* uniform in [-1, 1) */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) / 9007199254740992.0 * 2 - 1;
}

/* A matrix of n values in dtype dt at an address offset by `skew` bytes (unaligned for
 * skew 1..3); vals receives the values as float32 (what the backend must compute with). */
typedef struct {
    unsigned char *raw;
    pt_tensor t;
} tensor_buf;

static tensor_buf make_tensor(size_t n, pt_dtype dt, int skew, float *vals) {
    tensor_buf b;
    const size_t es = pt_tensor_esize(dt);
    b.raw = malloc(n * es + 8);
    unsigned char *p = b.raw + skew;
    for (size_t i = 0; i < n; i++) {
        const float v = (float)rnd();
        if (dt == PT_DT_F32) {
            memcpy(p + 4 * i, &v, 4);
            vals[i] = v;
        } else {
            const uint16_t h = dt == PT_DT_BF16 ? pt_f32_to_bf16(v) : pt_f32_to_f16(v);
            memcpy(p + 2 * i, &h, 2);
            vals[i] = dt == PT_DT_BF16 ? pt_bf16_to_f32(h) : pt_f16_to_f32(h);
        }
    }
    b.t = (pt_tensor){p, dt};
    return b;
}

static void test_conversion(void) {
    unsigned char *raw = malloc(2 * 65536 + 1);
    float *got = malloc(65536 * sizeof(float));
    for (uint32_t i = 0; i < 65536; i++) {
        const uint16_t h = (uint16_t)i;
        memcpy(raw + 1 + 2 * i, &h, 2);
    }
    for (int bf = 0; bf < 2; bf++) {
        const pt_tensor t = {raw + 1, bf ? PT_DT_BF16 : PT_DT_F16};
        pt_tensor_to_f32(&t, 0, 1, 65536, got);
        int bad = 0;
        for (uint32_t i = 0; i < 65536; i++) {
            const float want = bf ? pt_bf16_to_f32((uint16_t)i) : pt_f16_to_f32((uint16_t)i);
            bad += memcmp(&want, &got[i], 4) != 0; /* bit-exact, NaN payloads included */
        }
        CHECK(bad == 0, "%s conversion: %d of 65536 patterns differ", bf ? "bf16" : "f16", bad);
        pt_tensor_to_f32(&t, 5, 7, 100, got); /* strided: elements 5, 12, 19, ... */
        for (int k = 0; k < 100; k++) {
            const uint16_t h = (uint16_t)(5 + 7 * k);
            const float want = bf ? pt_bf16_to_f32(h) : pt_f16_to_f32(h);
            CHECK(memcmp(&want, &got[k], 4) == 0, "strided conversion at %d", k);
        }
    }
    free(raw);
    free(got);
}

/* y = x W^T + b in float64 for a projection given as float32 values per part. */
static void reference_linear(const double *x, int n, int in, const float **w, const int *rows,
                             const int *transposed, const float **b, int n_parts, int out,
                             double *y, double *scale) {
    for (int r = 0; r < n; r++) {
        int col = 0;
        for (int k = 0; k < n_parts; k++) {
            for (int o = 0; o < rows[k]; o++) {
                double s = b[k] ? b[k][o] : 0, a = fabs(s);
                for (int i = 0; i < in; i++) {
                    const double wv =
                        transposed[k] ? w[k][(size_t)i * rows[k] + o] : w[k][(size_t)o * in + i];
                    s += x[(size_t)r * in + i] * wv;
                    a += fabs(x[(size_t)r * in + i] * wv);
                }
                y[(size_t)r * out + col + o] = s;
                scale[(size_t)r * out + col + o] = a;
            }
            col += rows[k];
        }
    }
}

/* One linear case: parts with `rows` each (dtype dt, layout, skew), n rows of input. */
static void linear_case(pt_backend *be, const char *name, pt_dtype dt, int skew, int transposed,
                        int n, int in, const int *rows, int n_parts, int bias) {
    pt_linear lin;
    memset(&lin, 0, sizeof lin);
    lin.in = in;
    lin.n_parts = n_parts;
    tensor_buf bufs[PT_LINEAR_MAX_PARTS];
    float *vals[PT_LINEAR_MAX_PARTS], *bs[PT_LINEAR_MAX_PARTS];
    int tr[PT_LINEAR_MAX_PARTS];
    for (int k = 0; k < n_parts; k++) {
        const size_t m = (size_t)rows[k] * in;
        vals[k] = malloc(m * sizeof(float));
        bufs[k] = make_tensor(m, dt, skew, vals[k]);
        bs[k] = NULL;
        if (bias) {
            bs[k] = malloc((size_t)rows[k] * sizeof(float));
            for (int o = 0; o < rows[k]; o++) bs[k][o] = (float)rnd();
        }
        tr[k] = transposed;
        lin.part[k] = (pt_linear_part){bufs[k].t, bs[k], rows[k], transposed};
        lin.out += rows[k];
    }
    /* load_weights sizes the conversion block */
    pt_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1, cfg.d_model = in;
    pt_layer_weights lw;
    memset(&lw, 0, sizeof lw);
    lw.qkv = lw.o = lw.up = lw.down = lin;
    pt_weights host, dev;
    memset(&host, 0, sizeof host);
    host.layers = &lw;
    host.lm_head = lin;
    pt_error e;
    CHECK(be->load_weights(be, &cfg, &host, &dev, &e) == 0, "%s: load_weights: %s", name, e.msg);

    float *x = malloc((size_t)n * in * sizeof(float)),
          *y = malloc((size_t)n * lin.out * sizeof(float));
    double *xd = malloc((size_t)n * in * sizeof(double)),
           *yd = malloc((size_t)n * lin.out * sizeof(double));
    double *sc = malloc((size_t)n * lin.out * sizeof(double));
    for (size_t i = 0; i < (size_t)n * in; i++) xd[i] = x[i] = (float)rnd();
    be->linear(be, x, n, &lin, y);
    reference_linear(xd, n, in, (const float **)vals, rows, tr, (const float **)bs, n_parts,
                     lin.out, yd, sc);
    int bad = 0;
    double worst = 0;
    for (size_t i = 0; i < (size_t)n * lin.out; i++) {
        const double d = fabs(y[i] - yd[i]), tol = 2e-5 * sc[i] + 1e-6;
        if (!isfinite(y[i]) || d > tol) bad++;
        if (d / (sc[i] + 1e-30) > worst) worst = d / (sc[i] + 1e-30);
    }
    CHECK(bad == 0, "%s: %d of %d outputs off (worst %.3g of the term sum)", name, bad, n * lin.out,
          worst);
    printf("linear %-44s n=%-3d in=%-4d out=%-5d worst %.2e  %s\n", name, n, in, lin.out, worst,
           bad ? "FAIL" : "ok");
    /* linear_add: the same product added to a residual that holds values of its own size */
    double *r0 = malloc((size_t)n * lin.out * sizeof(double));
    for (size_t i = 0; i < (size_t)n * lin.out; i++) y[i] = (float)(r0[i] = 4 * rnd());
    be->linear_add(be, x, n, &lin, y);
    bad = 0, worst = 0;
    for (size_t i = 0; i < (size_t)n * lin.out; i++) {
        const double s = sc[i] + fabs(r0[i]), d = fabs(y[i] - (r0[i] + yd[i]));
        if (!isfinite(y[i]) || d > 2e-5 * s + 1e-6) bad++;
        if (d / (s + 1e-30) > worst) worst = d / (s + 1e-30);
    }
    CHECK(bad == 0, "%s (linear_add): %d of %d outputs off (worst %.3g)", name, bad, n * lin.out,
          worst);
    free(r0);
    be->free_weights(be, &cfg, &dev);
    for (int k = 0; k < n_parts; k++) free(bufs[k].raw), free(vals[k]), free(bs[k]);
    free(x), free(y), free(xd), free(yd), free(sc);
}

static void test_linear(pt_backend *be) {
    const int one[1] = {37}, qkv[3] = {64, 32, 32}, big[1] = {1100}, gu[2] = {96, 96};
    linear_case(be, "f32 aligned (in place)", PT_DT_F32, 0, 0, 5, 64, one, 1, 1);
    linear_case(be, "f32 unaligned (converted)", PT_DT_F32, 2, 0, 5, 64, one, 1, 1);
    linear_case(be, "f32 transposed (gpt2 Conv1D, in place)", PT_DT_F32, 0, 1, 7, 48, one, 1, 1);
    linear_case(be, "bf16 one part", PT_DT_BF16, 0, 0, 9, 64, one, 1, 0);
    linear_case(be, "bf16 unaligned transposed", PT_DT_BF16, 1, 1, 9, 48, one, 1, 1);
    linear_case(be, "f16 q|k|v parts with biases", PT_DT_F16, 0, 0, 11, 64, qkv, 3, 1);
    linear_case(be, "bf16 gate|up parts", PT_DT_BF16, 0, 0, 3, 64, gu, 2, 0);
    linear_case(be, "f16 transposed q|k|v parts", PT_DT_F16, 0, 1, 4, 64, qkv, 3, 1);
    /* 8 MiB blocks of float32 rows of 4096: 512 rows a block, so three blocks */
    linear_case(be, "bf16 several conversion blocks", PT_DT_BF16, 0, 0, 3, 4096, big, 1, 1);
    linear_case(be, "f16 several blocks, transposed", PT_DT_F16, 0, 1, 2, 4096, big, 1, 0);
    /* up to PT_CPU_FEW_ROWS rows take the row-streaming kernels (cpu_rows.c), more rows the
     * GEMM: both sides of the threshold, inputs that straddle its 256-input chunks and are no
     * multiple of the vector width, output counts that leave a short last group of 4 / block
     * of 64 */
    const int odd[1] = {71}, parts3[3] = {33, 2, 66};
    linear_case(be, "rows: f32 one row", PT_DT_F32, 0, 0, 1, 61, odd, 1, 1);
    linear_case(be, "rows: bf16 at the threshold", PT_DT_BF16, 0, 0, PT_CPU_FEW_ROWS, 601, odd, 1,
                0);
    linear_case(be, "gemm: bf16 one past the threshold", PT_DT_BF16, 0, 0, PT_CPU_FEW_ROWS + 1, 601,
                odd, 1, 0);
    linear_case(be, "rows: unaligned bf16 parts", PT_DT_BF16, 1, 0, 13, 517, parts3, 3, 1);
    linear_case(be, "rows: f16 parts", PT_DT_F16, 0, 0, 8, 300, parts3, 3, 1);
    /* 4 + 3 rows and 2 rows: every row count of the 4-row AVX-512 blocks; 1100 inputs: chunks */
    linear_case(be, "rows: f32 seven rows", PT_DT_F32, 0, 0, 7, 97, odd, 1, 1);
    linear_case(be, "rows: bf16 two rows, long", PT_DT_BF16, 0, 0, 2, 1100, odd, 1, 0);
    /* outputs enough that most groups request the one PREFETCH_AHEAD (32 KB) on */
    const int tall[1] = {403};
    linear_case(be, "rows: f32 8 rows, prefetching", PT_DT_F32, 0, 0, 8, 256, tall, 1, 1);
    linear_case(be, "rows: bf16 5 rows, prefetching", PT_DT_BF16, 0, 0, 5, 520, tall, 1, 0);
    linear_case(be, "rows: f32 transposed, short block", PT_DT_F32, 0, 1, 16, 77, odd, 1, 1);
    linear_case(be, "rows: bf16 transposed parts", PT_DT_BF16, 0, 1, 6, 77, parts3, 3, 0);
    linear_case(be, "gemm: f32 transposed, 40 rows", PT_DT_F32, 0, 1, 40, 77, odd, 1, 1);
    linear_case(be, "gemm: f16 parts, 33 rows", PT_DT_F16, 0, 0, 33, 300, parts3, 3, 1);
}

static void test_embed(pt_backend *be) {
    const int V = 50, P = 16, d = 24, n = 6;
    float *tv = malloc((size_t)V * d * sizeof(float)), *pv = malloc((size_t)P * d * sizeof(float));
    tensor_buf tok = make_tensor((size_t)V * d, PT_DT_BF16, 1, tv);
    tensor_buf pos = make_tensor((size_t)P * d, PT_DT_F16, 0, pv);
    pt_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1, cfg.d_model = d;
    pt_layer_weights lw;
    memset(&lw, 0, sizeof lw);
    lw.qkv = lw.o = lw.up = lw.down = pt_linear_one(tok.t, NULL, V, d, 0);
    pt_weights w, dev;
    memset(&w, 0, sizeof w);
    w.layers = &lw;
    w.tok_emb = tok.t;
    w.pos_emb = pos.t;
    w.lm_head = lw.qkv;
    pt_error e;
    CHECK(be->load_weights(be, &cfg, &w, &dev, &e) == 0, "embed: load_weights: %s", e.msg);
    const int32_t ids[6] = {0, 49, 7, 7, 23, 1}, ps[6] = {0, 1, 2, 15, 9, 3};
    float x[6 * 24];
    be->embed(be, &cfg, &dev, ids, ps, n, x);
    int bad = 0;
    for (int r = 0; r < n; r++)
        for (int i = 0; i < d; i++) bad += x[r * d + i] != tv[ids[r] * d + i] + pv[ps[r] * d + i];
    CHECK(bad == 0, "embed (bf16 tokens + f16 positions): %d values differ", bad);
    be->free_weights(be, &cfg, &dev);
    free(tok.raw), free(pos.raw), free(tv), free(pv);
}

/* In a child process: the test-only limit is read once per process. */
static void status_checks(void) {
    setenv("PUNCTUM_TEST_ALLOC_LIMIT", "1000000", 1);
    pt_error e;
    pt_backend *be = pt_backend_cpu_create(1, &e);
    float *ok = be->alloc(be, 4096);
    CHECK(ok && !pt_backend_failed(be), "a small allocation fails");
    be->fill(be, ok, 1.0f, 1024);
    CHECK(be->alloc(be, 2000000) == NULL, "an allocation above the limit succeeds");
    CHECK(pt_backend_failed(be) && be->status.out_of_memory && be->status.bytes == 2000000,
          "the refused allocation is not out of memory of 2000000 bytes (%d, %zu)",
          be->status.out_of_memory, be->status.bytes);
    be->fill(be, ok, 7.0f, 1024); /* after a failure: a no-op */
    CHECK(ok[0] == 1.0f && ok[1023] == 1.0f, "an operation ran after the failure");
    pt_backend_fail(be, 0, 0, "a later failure"); /* the first failure wins */
    pt_backend_status st;
    CHECK(pt_backend_take_error(be, &e, &st) == -1 && st.out_of_memory &&
              strstr(e.msg, "2000000") && strstr(e.msg, "PUNCTUM_TEST_ALLOC_LIMIT"),
          "take_error: %s", e.msg);
    CHECK(!pt_backend_failed(be) && pt_backend_take_error(be, &e, NULL) == 0, "status not cleared");
    be->fill(be, ok, 7.0f, 1024);
    CHECK(ok[0] == 7.0f, "operations do not run again after the error was taken");
    be->free(be, ok);
    be->destroy(be);
}

static void test_status(void) {
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        status_checks();
        _exit(g_fail ? 1 : 0);
    }
    int st = 0;
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "the status checks failed (see above)");
}

int main(void) {
    printf("test_cpu_weights: seed %llu\n", (unsigned long long)g_rng);
    test_status();
    test_conversion();
    pt_error e;
    pt_backend *be = pt_backend_cpu_create(0, &e); /* OMP_NUM_THREADS (valgrind.sh: 1) */
    test_linear(be);
    /* the few-row kernels again in their other versions (above: the best the CPU runs) */
    setenv("PUNCTUM_CPU_NO_AVX512", "1", 1);
    printf("-- AVX2 few-row kernels where the CPU has AVX-512 (PUNCTUM_CPU_NO_AVX512=1)\n");
    test_linear(be);
    unsetenv("PUNCTUM_CPU_NO_AVX512");
    setenv("PUNCTUM_CPU_NO_AVX2", "1", 1);
    printf("-- portable few-row kernels (PUNCTUM_CPU_NO_AVX2=1)\n");
    test_linear(be);
    unsetenv("PUNCTUM_CPU_NO_AVX2");
    test_embed(be);
    be->destroy(be);
    printf("test_cpu_weights: %s\n", g_fail ? "FAILED" : "ok");
    return g_fail ? 1 : 0;
}
