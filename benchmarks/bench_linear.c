/* punctum — micro-benchmark of the cpu backend's linear at few rows: the row-streaming kernels
 * (src/backend/cpu_rows.c) against the GEMM path (OpenBLAS sgemm, F16/BF16 converted in blocks)
 * at the same row counts, on the projections of SmolLM2-135M and Llama-3.2-1B, F32 and BF16
 * weights (random values; the time does not depend on them).
 *
 * usage: bench_linear [--threads N] [--rows 1,4,8,16,32] [--seconds S] [--markdown]
 * Each cell: GFLOP/s (2 n in out / time), best of 3 runs of >= S seconds each. The GEMM column is
 * the backend with PUNCTUM_CPU_FEW_ROWS=0; the rows column only exists for n <= PT_CPU_FEW_ROWS.
 * Like the command, it restarts itself with OPENBLAS_CORETYPE set where OpenBLAS loaded kernels
 * slower than the CPU runs (cpu_blas.c), so the GEMM column is OpenBLAS at its best. */
#include "punctum/backend.h"

#include "backend/cpu_rows.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_ROWS = 256 }; /* rows of x at most */

typedef struct {
    const char *name;
    int in, out;
} shape;

static const shape SHAPES[] = {
    {"135M qkv 576->960", 576, 960},    {"135M gate+up 576->3072", 576, 3072},
    {"135M down 1536->576", 1536, 576}, {"135M lm_head 576->49152", 576, 49152},
    {"1B qkv 2048->3072", 2048, 3072},  {"1B gate+up 2048->16384", 2048, 16384},
    {"1B down 8192->2048", 8192, 2048},
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Best GFLOP/s of be->linear over 3 runs of >= seconds each. */
static double gflops(pt_backend *be, const float *x, int n, const pt_linear *lin, float *y,
                     double seconds) {
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        long calls = 0;
        const double t0 = now();
        double t;
        do {
            be->linear(be, x, n, lin, y);
            calls++;
        } while ((t = now() - t0) < seconds);
        const double g = 2.0 * n * lin->in * lin->out * (double)calls / t * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

static pt_backend *make_backend(int threads, const char *few_rows) {
    setenv("PUNCTUM_CPU_FEW_ROWS", few_rows, 1);
    pt_error e;
    pt_backend *be = pt_backend_cpu_create(threads, &e);
    if (!be) fprintf(stderr, "bench_linear: %s\n", e.msg);
    return be;
}

int main(int argc, char **argv) {
    pt_blas_restart_with_better_kernels(argv);
    printf("OpenBLAS kernels: %s\n", pt_blas_kernels());
    int threads = 0, markdown = 0, rows[16], n_rows = 0;
    double seconds = 0.2;
    const char *rows_arg = "1,4,8,16,32";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            rows_arg = argv[++i];
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--markdown"))
            markdown = 1;
        else {
            fprintf(stderr, "usage: bench_linear [--threads N] [--rows 1,4,8] [--seconds S] "
                            "[--markdown]\n");
            return 2;
        }
    }
    for (const char *s = rows_arg; *s && n_rows < 16; s = strchr(s, ',') ? strchr(s, ',') + 1 : "")
        if (atoi(s) > 0) rows[n_rows++] = atoi(s);
    pt_backend *gemm = make_backend(threads, "0"), *fast = make_backend(threads, "");
    if (!gemm || !fast) return 1;
    if (markdown) {
        printf("| projection | dtype | rows | GEMM GFLOP/s | row-streaming GFLOP/s | ratio |\n");
        printf("|---|---|---:|---:|---:|---:|\n");
    }
    for (size_t s = 0; s < sizeof SHAPES / sizeof *SHAPES; s++) {
        const shape *sh = &SHAPES[s];
        const size_t nw = (size_t)sh->in * sh->out;
        float *w32 = malloc(nw * sizeof(float)),
              *x = malloc((size_t)MAX_ROWS * sh->in * sizeof(float));
        float *y = malloc((size_t)MAX_ROWS * sh->out * sizeof(float));
        uint16_t *w16 = malloc(nw * sizeof(uint16_t));
        if (!w32 || !x || !y || !w16) return 1;
        for (size_t i = 0; i < nw; i++) w32[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
        for (size_t i = 0; i < nw; i++) memcpy(&w16[i], (char *)&w32[i] + 2, 2); /* bf16 bits */
        for (size_t i = 0; i < (size_t)MAX_ROWS * sh->in; i++) x[i] = (float)(i % 17) * 0.1f;
        for (int dt = 0; dt < 2; dt++) {
            pt_linear lin;
            memset(&lin, 0, sizeof lin);
            lin.in = sh->in, lin.out = sh->out, lin.n_parts = 1;
            lin.part[0].out = sh->out;
            lin.part[0].w.dtype = dt ? PT_DT_BF16 : PT_DT_F32;
            lin.part[0].w.data = dt ? (void *)w16 : (void *)w32;
            pt_config cfg;
            memset(&cfg, 0, sizeof cfg);
            cfg.n_layers = 0, cfg.d_model = sh->in;
            pt_weights host, dev;
            memset(&host, 0, sizeof host);
            host.lm_head = lin;
            pt_error e;
            if (gemm->load_weights(gemm, &cfg, &host, &dev, &e) ||
                fast->load_weights(fast, &cfg, &host, &dev, &e)) {
                fprintf(stderr, "bench_linear: %s\n", e.msg);
                return 1;
            }
            for (int r = 0; r < n_rows; r++) {
                const int n = rows[r] > MAX_ROWS ? MAX_ROWS : rows[r];
                const double g = gflops(gemm, x, n, &lin, y, seconds);
                const double f = n <= PT_CPU_FEW_ROWS ? gflops(fast, x, n, &lin, y, seconds) : 0;
                if (markdown && f > 0)
                    printf("| %s | %s | %d | %.1f | %.1f | %.2fx |\n", sh->name,
                           dt ? "bf16" : "f32", n, g, f, f / g);
                else if (markdown)
                    printf("| %s | %s | %d | %.1f | (GEMM) | |\n", sh->name, dt ? "bf16" : "f32", n,
                           g);
                else
                    printf("%-26s %-4s n=%-3d gemm %6.1f  rows %6.1f GFLOP/s\n", sh->name,
                           dt ? "bf16" : "f32", n, g, f);
                fflush(stdout);
            }
            gemm->free_weights(gemm, &cfg, &dev);
            fast->free_weights(fast, &cfg, &dev);
        }
        free(w32), free(x), free(y), free(w16);
    }
    gemm->destroy(gemm);
    fast->destroy(fast);
    return 0;
}
