/* punctum — the emulation's roofline counting (PUNCTUM_EMU_ROOFLINE, cuda_emu_roofline.cpp) on
 * hand-checkable cases: an elementwise kernel over N floats, a stencil that loads each element
 * twice (requested bytes twice the distinct sectors), one warp issuing three mma.sync, two
 * cublasGemmEx of known m, n, k (bf16 -> f32 with beta 0, f32 with beta 1) and the copies; every
 * count against the figure worked out by hand below. And: with the variable unset (or empty)
 * the counting is off and no file appears. The work runs in a child process (this binary with
 * --child), since the variable is read once at start and the file is written at exit.
 * Label cuda-emu. */
#include "pt_cuda.h"

#include <dirent.h>
#include <map>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

static int g_fail;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            g_fail++;                                                                              \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

enum { N = 1000, THREADS = 256 }; /* N * 4 = 4000 bytes = 125 sectors of 32 */

__global__ void k_twice(const float *in, float *out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = 2.0f * in[i];
}

/* two loads per element: 2 N * 4 bytes requested, N * 4 distinct */
__global__ void k_pairsum(const float *in, float *out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i] + in[(i + 1) % n];
}

/* one warp, three m16n8k16 (from registers), 4 floats stored per lane */
__global__ void k_mma3(float *out) {
    uint32_t a[4] = {0x3f803f80u, 0x3f803f80u, 0x3f803f80u, 0x3f803f80u}; /* bf16 1.0 pairs */
    uint32_t b[2] = {0x3f803f80u, 0x3f803f80u};
    float c[4] = {0, 0, 0, 0}, d[4];
    for (int r = 0; r < 3; r++) {
        pt_mma16816(d, a, b, c, (__nv_bfloat16 *)nullptr);
        for (int i = 0; i < 4; i++) c[i] = d[i];
    }
    for (int i = 0; i < 4; i++) out[threadIdx.x * 4 + i] = d[i];
}

/* one warp: a 16 x 16 16-bit tile stored to shared memory and read back by ldmatrix.x4; the
 * lanes' 4 words stored (512 bytes). Also run with PUNCTUM_EMU_CHECKS=0 (as roofline.py does):
 * ldmatrix must not then report bytes as never written (plain stores leave no records). */
__global__ void k_ldsm(uint32_t *out) {
    PT_SHARED(uint16_t, tile, [16][16]);
    for (int i = threadIdx.x; i < 256; i += 32) tile[i / 16][i % 16] = (uint16_t)i;
    __syncthreads();
    uint32_t r[4];
    pt_ldmatrix<4>(r, &tile[threadIdx.x & 15][(threadIdx.x >> 4) * 8]);
    for (int i = 0; i < 4; i++) out[threadIdx.x * 4 + i] = r[i];
}

static int child() {
    float *din, *dout, *dmma;
    uint32_t *dldsm;
    std::vector<float> h(N, 1.0f);
    cudaMalloc((void **)&din, N * 4);
    cudaMalloc((void **)&dout, N * 4);
    cudaMalloc((void **)&dmma, 32 * 4 * 4);
    cudaMalloc((void **)&dldsm, 32 * 4 * 4);
    cudaMemcpy(din, h.data(), N * 4, cudaMemcpyHostToDevice);
    const unsigned blocks = (N + THREADS - 1) / THREADS;
    PT_LAUNCH(k_twice, blocks, THREADS, (cudaStream_t)0, (const float *)din, dout, (int)N);
    PT_LAUNCH(k_twice, blocks, THREADS, (cudaStream_t)0, (const float *)dout, din, (int)N);
    PT_LAUNCH(k_pairsum, blocks, THREADS, (cudaStream_t)0, (const float *)din, dout, (int)N);
    PT_LAUNCH(k_mma3, 1, 32, (cudaStream_t)0, dmma);
    PT_LAUNCH(k_ldsm, 1, 32, (cudaStream_t)0, dldsm);
    cudaMemcpy(h.data(), dout, N * 4, cudaMemcpyDeviceToHost);

    /* bf16 A (64 x 32), B (32 x 48), f32 D (64 x 48), beta 0 */
    const int m = 64, n = 48, k = 32;
    __nv_bfloat16 *A, *B;
    float *C;
    cudaMalloc((void **)&A, (size_t)m * k * 2);
    cudaMalloc((void **)&B, (size_t)k * n * 2);
    cudaMalloc((void **)&C, (size_t)m * n * 4);
    cudaMemset(A, 0, (size_t)m * k * 2);
    cudaMemset(B, 0, (size_t)k * n * 2);
    cublasHandle_t hb;
    cublasCreate(&hb);
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st =
        cublasGemmEx(hb, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A, CUDA_R_16BF, m, B, CUDA_R_16BF,
                     k, &zero, C, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    /* f32 A (8 x 16) transposed in memory, B (16 x 4), C (8 x 4) read and written: beta 1 */
    float *Af, *Bf, *Cf;
    cudaMalloc((void **)&Af, 8 * 16 * 4);
    cudaMalloc((void **)&Bf, 16 * 4 * 4);
    cudaMalloc((void **)&Cf, 8 * 4 * 4);
    cudaMemset(Af, 0, 8 * 16 * 4);
    cudaMemset(Bf, 0, 16 * 4 * 4);
    cudaMemset(Cf, 0, 8 * 4 * 4);
    cublasStatus_t st2 = cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, 8, 4, 16, &one, Af, CUDA_R_32F,
                                      16, Bf, CUDA_R_32F, 16, &one, Cf, CUDA_R_32F, 8,
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    cublasDestroy(hb);
    if (st != CUBLAS_STATUS_SUCCESS || st2 != CUBLAS_STATUS_SUCCESS ||
        cudaGetLastError() != cudaSuccess) {
        printf("child: a call failed\n");
        return 1;
    }
    printf("child: roofline %s, accesses traced %d\n", pt_emu::roofline_enabled() ? "on" : "off",
           (int)pt_emu::access_checks_enabled());
    return pt_emu::access_checks_enabled() ? 0 : 3; /* 3: this build does not trace accesses */
}

/* Run this binary with --child in `dir`, PUNCTUM_EMU_ROOFLINE = value (NULL: unset), the checks
 * off (PUNCTUM_EMU_CHECKS=0) if asked. */
static int run_child(const char *self, const char *dir, const char *value,
                     bool checks_off = false) {
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        if (checks_off) setenv("PUNCTUM_EMU_CHECKS", "0", 1);
        if (value)
            setenv("PUNCTUM_EMU_ROOFLINE", value, 1);
        else
            unsetenv("PUNCTUM_EMU_ROOFLINE");
        if (chdir(dir) != 0) _exit(126);
        execl(self, self, "--child", (char *)nullptr);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

typedef std::map<std::string, std::vector<unsigned long long>> Rows;

static Rows read_rows(const char *path) {
    Rows rows;
    FILE *f = fopen(path, "r");
    if (!f) return rows;
    char line[1024];
    bool header = true;
    while (fgets(line, sizeof line, f)) {
        if (header) {
            CHECK(!strcmp(line, "kernel\tlaunches\tbytes_read\tbytes_written\tdram_read\tdram_"
                                "written\tflops\ttensor_core_flops\n"),
                  "header %s", line);
            header = false;
            continue;
        }
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        std::vector<unsigned long long> v;
        for (char *p = tab; *p == '\t';) v.push_back(strtoull(p + 1, &p, 10));
        rows[std::string(line, (size_t)(tab - line))] = v;
    }
    fclose(f);
    return rows;
}

/* launches, bytes_read, bytes_written, dram_read, dram_written, flops, tensor_core_flops */
static void expect(const Rows &rows, const char *name, std::vector<unsigned long long> want) {
    auto it = rows.find(name);
    if (it == rows.end()) {
        CHECK(false, "no row %s", name);
        return;
    }
    static const char *const f[] = {"launches",     "bytes_read", "bytes_written",    "dram_read",
                                    "dram_written", "flops",      "tensor_core_flops"};
    CHECK(it->second.size() == want.size(), "%s: %zu fields", name, it->second.size());
    for (size_t i = 0; i < want.size() && i < it->second.size(); i++)
        CHECK(it->second[i] == want[i], "%s %s: %llu, by hand %llu", name, f[i], it->second[i],
              want[i]);
}

static bool dir_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    int n = 0;
    while (struct dirent *e = readdir(d)) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n == 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--child")) return child();
    if (getenv("PUNCTUM_EMU_ROOFLINE")) {
        printf("unset PUNCTUM_EMU_ROOFLINE to run this test\n");
        return 1;
    }
    CHECK(!pt_emu::roofline_enabled(), "counting on with the variable unset");
    char self[4096];
    const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return 1;
    self[len] = 0;
    char dir[] = "/tmp/pt-roofline-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    const std::string out = std::string(dir) + "/counts.tsv";

    const int rc = run_child(self, dir, out.c_str());
    if (rc == 3) {
        printf("SKIP: this build does not trace the kernels' accesses (PT_CUDA_EMU_CHECKS)\n");
        remove(out.c_str()), rmdir(dir);
        return 77;
    }
    CHECK(rc == 0, "child exit %d", rc);
    const Rows rows = read_rows(out.c_str());
    const unsigned long long B = N * 4; /* 4000: 125 whole sectors (allocations 256-aligned) */
    /* two launches, each N loads and N stores of 4 bytes */
    expect(rows, "k_twice", {2, 2 * B, 2 * B, 2 * B, 2 * B, 0, 0});
    /* 2 N loads requested, the N floats' 125 sectors once */
    expect(rows, "k_pairsum", {1, 2 * B, B, B, B, 0, 0});
    /* 3 x 2*16*8*16 on tensor cores; 32 lanes x 4 floats stored = 512 bytes, 16 sectors */
    expect(rows, "k_mma3", {1, 0, 512, 0, 512, 3 * 4096, 3 * 4096});
    expect(rows, "k_ldsm", {1, 0, 512, 0, 512, 0, 0}); /* shared memory is not DRAM */
    /* A 64x32 bf16 (4096 B) + B 32x48 bf16 (3072 B) read, D 64x48 f32 (12288 B) written;
     * 2*64*48*32 = 196608 FLOPs on tensor cores (16-bit inputs) */
    expect(rows, "cublasGemmEx bf16->f32 64x48x32", {1, 7168, 12288, 7168, 12288, 196608, 196608});
    /* A 8x16 + B 16x4 + C 8x4 f32 read (512 + 256 + 128), D 8x4 written (128);
     * 2*8*4*16 = 1024 FLOPs, f32: not tensor core */
    expect(rows, "cublasGemmEx f32->f32 8x4x16", {1, 896, 128, 896, 128, 1024, 0});
    expect(rows, "cudaMemcpy HtoD", {1, B, B, B, B, 0, 0});
    expect(rows, "cudaMemcpy DtoH", {1, B, B, B, B, 0, 0});
    /* 4096 + 3072 + 512 + 256 + 128 bytes of memset */
    expect(rows, "cudaMemset", {5, 0, 8064, 0, 8064, 0, 0});
    CHECK(rows.size() == 9, "%zu rows, 9 expected", rows.size());
    remove(out.c_str());
    /* counting with the checks off, as roofline.py runs: the kernels run to the end (exit 3: no
     * access tracing) and count as before */
    CHECK(run_child(self, dir, out.c_str(), true) == 3, "child with the checks off did not finish");
    CHECK(read_rows(out.c_str()).size() == 9, "counts with the checks off");
    remove(out.c_str());

    /* off: unset, and set but empty; the child works in an empty directory */
    CHECK(run_child(self, dir, nullptr) == 0, "child without the variable");
    CHECK(run_child(self, dir, "") == 0, "child with an empty variable");
    CHECK(dir_empty(dir), "a file appeared in %s with the counting off", dir);
    rmdir(dir);
    printf("%s\n", g_fail ? "FAILED" : "roofline counting: all counts as by hand; off when unset");
    return g_fail ? 1 : 0;
}
