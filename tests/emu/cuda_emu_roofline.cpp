/* punctum — CUDA emulation: roofline counting (PUNCTUM_EMU_ROOFLINE=<file>; off otherwise, at the
 * cost of one flag check per traced access).
 *
 * Per kernel (by name) the emulation counts, as it runs:
 * - launches;
 * - bytes_read / bytes_written: every global-memory load and store the kernel's threads issue
 *   (the __tsan_* hooks and cp.async sources, addresses inside the device arena only: shared
 *   memory is not DRAM traffic). This is what the threads request, before any cache.
 * - dram_read / dram_written: distinct 32-byte sectors touched per launch, times 32: the
 *   compulsory traffic, what DRAM moves if L2 holds a launch's working set (H100: 50 MB).
 * - flops / tensor_core_flops: mma.sync.m16n8k16 (2*16*8*16 per warp-wide instruction, tensor
 *   core) and every cuBLAS / cuBLASLt GEMM (2*m*n*k per batch entry; tensor core when its inputs
 *   are 16-bit, CUDA cores for f32). Other kernels' arithmetic is not counted (0).
 * cuBLAS / cuBLASLt calls are rows of their own ("cublasLtMatmul bf16 MxNxK"), with A, B, C
 * read and D written once; cudaMemcpy / cudaMemset are rows too ("cudaMemcpy HtoD"...).
 * At exit the rows go to the file as TSV (header line first). */
#include "cuda_emu_internal.h"

#include <atomic>
#include <dlfcn.h>
#include <elf.h>
#include <map>
#include <mutex>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

namespace pt_emu {

namespace {

struct RoofRow {
    std::atomic<unsigned long long> launches{0}, bytes_read{0}, bytes_written{0}, dram_read{0},
        dram_written{0}, flops{0}, tc_flops{0};
};

const char *roof_path() {
    const char *p = getenv("PUNCTUM_EMU_ROOFLINE");
    return p && *p ? p : nullptr;
}

std::mutex g_roof_mu;
std::map<std::string, RoofRow> *g_roof_rows; /* (never freed: read at exit) */

RoofRow &row_of(const std::string &name) {
    std::lock_guard<std::mutex> lk(g_roof_mu);
    if (!g_roof_rows) g_roof_rows = new std::map<std::string, RoofRow>();
    return (*g_roof_rows)[name];
}

/* Distinct sectors of the current launch (per OS thread: launches on one thread are serial). */
const size_t SECTOR = 32;
struct SectorSet {
    uint8_t *bits[2] = {nullptr, nullptr}; /* read, written: one bit per sector of the arena */
    std::vector<uint32_t> touched[2];
};
__thread SectorSet *t_sectors;
__thread RoofRow *t_row; /* the running kernel's row */

void write_rows() {
    const char *path = roof_path();
    if (!path || !g_roof_rows) return;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "cuda-emu: %s: cannot write the roofline counts\n", path);
        return;
    }
    fprintf(f, "kernel\tlaunches\tbytes_read\tbytes_written\tdram_read\tdram_written\tflops\t"
               "tensor_core_flops\n");
    for (const auto &kv : *g_roof_rows) {
        const RoofRow &r = kv.second;
        fprintf(f, "%s\t%llu\t%llu\t%llu\t%llu\t%llu\t%llu\t%llu\n", kv.first.c_str(),
                r.launches.load(), r.bytes_read.load(), r.bytes_written.load(), r.dram_read.load(),
                r.dram_written.load(), r.flops.load(), r.tc_flops.load());
    }
    if (fclose(f) != 0) fprintf(stderr, "cuda-emu: %s: write failed\n", path);
}

bool roof_init() {
    if (!roof_path()) return false;
    atexit(write_rows);
    return true;
}

} // namespace

bool g_roof_on = roof_init();

bool roofline_enabled() {
    return g_roof_on;
}

namespace in {

/* The kernel's own name where the launch names a variable (`PT_LAUNCH(fwd, ...)` with
 * `fwd = mma_fwd<__half>(64)`): its symbol, from addr2line, once per kernel. */
std::string kernel_name(const char *name, const void *func) {
    static std::mutex mu;
    static std::map<const void *, std::string> cache;
    std::lock_guard<std::mutex> lk(mu);
    auto it = cache.find(func);
    if (it != cache.end()) return it->second;
    std::string out = name;
    Dl_info di;
    const char *sym = getenv("PUNCTUM_EMU_SYMBOLIZE");
    if (func && !(sym && !strcmp(sym, "0")) && dladdr(func, &di) && di.dli_fname &&
        !strchr(di.dli_fname, '\'')) {
        uintptr_t addr = (uintptr_t)func;
        if (FILE *f = fopen(di.dli_fname, "rb")) { /* ET_EXEC: absolute addresses */
            Elf64_Ehdr eh;
            if (!(fread(&eh, sizeof eh, 1, f) == 1 && eh.e_type == ET_EXEC))
                addr -= (uintptr_t)di.dli_fbase;
            fclose(f);
        }
        const std::string cmd =
            strf("addr2line -C -f -e '%s' 0x%lx 2>/dev/null", di.dli_fname, (unsigned long)addr);
        if (FILE *p = popen(cmd.c_str(), "r")) {
            char fn[512] = "";
            if (fgets(fn, sizeof fn, p) && fn[0] && fn[0] != '?') {
                std::string s(fn, strcspn(fn, "(\n")); /* without the parameter list */
                if (s.compare(0, 5, "void ") == 0) s.erase(0, 5);
                if (!s.empty()) out = s;
            }
            pclose(p);
        }
    }
    cache[func] = out;
    return out;
}

void roof_launch_begin(const char *name, const void *func) {
    t_row = &row_of(kernel_name(name, func));
    t_row->launches.fetch_add(1, std::memory_order_relaxed);
    if (!t_sectors) {
        t_sectors = new SectorSet();
        for (auto &b : t_sectors->bits) {
            void *p = mmap(nullptr, in::dev_reserve_bytes() / SECTOR / 8, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (p == MAP_FAILED) fatal("roofline: cannot reserve the sector bitmap");
            b = (uint8_t *)p;
        }
    }
}

void roof_launch_end() {
    if (!t_sectors) return;
    for (int w = 0; w < 2; w++) {
        for (uint32_t s : t_sectors->touched[w]) t_sectors->bits[w][s / 8] = 0;
        t_sectors->touched[w].clear();
    }
    t_row = nullptr;
}

/* arena_off: byte offset inside the device arena */
void roof_access(size_t arena_off, size_t n, bool write) {
    RoofRow *r = t_row;
    const size_t span = in::dev_reserve_bytes();
    if (!r || !n) return;
    if (n > span - arena_off) n = span - arena_off; /* (an access past the arena's end) */
    (write ? r->bytes_written : r->bytes_read).fetch_add(n, std::memory_order_relaxed);
    const int w = write;
    uint8_t *bits = t_sectors->bits[w];
    unsigned long long fresh = 0;
    for (size_t s = arena_off / SECTOR; s <= (arena_off + n - 1) / SECTOR; s++) {
        const uint8_t m = (uint8_t)(1u << (s % 8));
        if (bits[s / 8] & m) continue;
        bits[s / 8] |= m;
        t_sectors->touched[w].push_back((uint32_t)s);
        fresh += SECTOR;
    }
    if (fresh) (write ? r->dram_written : r->dram_read).fetch_add(fresh, std::memory_order_relaxed);
}

void roof_add(const std::string &name, unsigned long long calls, unsigned long long read,
              unsigned long long written, unsigned long long flops, bool tensor_core) {
    RoofRow &r = row_of(name);
    r.launches.fetch_add(calls, std::memory_order_relaxed);
    r.bytes_read.fetch_add(read, std::memory_order_relaxed);
    r.dram_read.fetch_add(read, std::memory_order_relaxed);
    r.bytes_written.fetch_add(written, std::memory_order_relaxed);
    r.dram_written.fetch_add(written, std::memory_order_relaxed);
    r.flops.fetch_add(flops, std::memory_order_relaxed);
    if (tensor_core) r.tc_flops.fetch_add(flops, std::memory_order_relaxed);
}

} // namespace in

void roofline_mma() {
    RoofRow *r = t_row;
    if (!r) return;
    r->flops.fetch_add(2 * 16 * 8 * 16, std::memory_order_relaxed);
    r->tc_flops.fetch_add(2 * 16 * 8 * 16, std::memory_order_relaxed);
}

} // namespace pt_emu
