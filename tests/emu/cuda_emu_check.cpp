/* punctum — CUDA emulation: the memory checker (SPEC §6 "what compute-sanitizer would").
 *
 * Translation units compiled with -fsanitize=thread (cmake/cuda.cmake: the kernels and the
 * self-test) call __tsan_read4(addr) & co. before every load and store; this file defines
 * those hooks (no TSan runtime is linked) and checks each access a kernel thread makes:
 *
 * - global: device memory is one reserved region; every cudaMalloc gets a 256-byte aligned
 *   block followed by a redzone, and a shadow byte per 64-byte granule holds how many of its
 *   bytes are allocated. An access outside the live allocations is Check::global_oob.
 * - shared: PT_SHARED arrays live in a per-OS-thread arena, 32-byte redzones between them;
 *   per byte the arena keeps which array owns it (an access outside one array is
 *   Check::shared_oob), whether it was written since the block started (reads of unwritten
 *   bytes: Check::shared_uninit; the bytes themselves are poisoned with 0xff), a cp.async in
 *   flight to it (Check::cp_async_pending), and a hazard record for the current barrier
 *   interval (epoch): the last writer, the readers (one thread, the lanes of one warp, or
 *   several warps) and the warp's __syncwarp generation at the access. Two accesses of
 *   different threads in one epoch, one a write, are a hazard (Check::shared_race) unless both
 *   threads are in one warp and a __syncwarp with both came between. This is a property of the
 *   set of accesses, not of the order the fibers ran them in.
 *
 * Host-side API calls (cudaMemcpy, cuBLAS) check their device ranges too (api_range_check), and
 * host->device copies from pinned memory are checked against the host writing their source
 * before it observed them complete (Check::pinned_reuse). */
#include "cuda_emu_internal.h"

#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace pt_emu {
namespace in {

std::string strf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

namespace {

bool checks_on() {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("PUNCTUM_EMU_CHECKS");
        on = !(e && !strcmp(e, "0"));
    }
    return on;
}

/* ================================================================================================
 * Device memory
 * ============================================================================================== */

const size_t DEV_RESERVE = (size_t)8 << 30; /* the emulated card's memory */
const size_t GRANULE = 64, DEV_ALIGN = 256, DEV_REDZONE = 256;

struct DevAlloc {
    size_t bytes, span;
    unsigned long long id;
};

struct DevArena {
    std::mutex mu;
    unsigned char *base = nullptr;
    uint8_t *shadow = nullptr;            /* valid bytes per granule */
    std::map<size_t, size_t> free_blocks; /* offset -> length */
    std::map<size_t, DevAlloc> live;      /* offset -> allocation */
    size_t used = 0, limit = (size_t)-1;
    unsigned long long next_id = 1;
};
DevArena g_dev;
uintptr_t g_dev_lo = 0, g_dev_span = 0; /* read without the lock by the access hooks */

void *map_reserve(size_t bytes) {
    void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
}

bool dev_init_locked() {
    if (g_dev.base) return true;
    g_dev.base = (unsigned char *)map_reserve(DEV_RESERVE);
    g_dev.shadow = (uint8_t *)map_reserve(DEV_RESERVE / GRANULE);
    if (!g_dev.base || !g_dev.shadow)
        fatal("cannot reserve %zu bytes for the emulated device memory", DEV_RESERVE);
    g_dev.free_blocks[0] = DEV_RESERVE;
    const char *s = getenv("PUNCTUM_EMU_MEM_LIMIT");
    if (s && *s) g_dev.limit = (size_t)strtoull(s, nullptr, 10);
    g_dev_lo = (uintptr_t)g_dev.base;
    g_dev_span = DEV_RESERVE;
    return true;
}

void shadow_set(size_t off, size_t bytes, size_t span) {
    uint8_t *sh = g_dev.shadow;
    size_t g = off / GRANULE;
    for (size_t b = 0; b < bytes; b += GRANULE, g++)
        sh[g] = (uint8_t)(bytes - b >= GRANULE ? GRANULE : bytes - b);
    for (; g < (off + span) / GRANULE; g++) sh[g] = 0;
}

bool dev_valid(size_t off, size_t n) {
    const uint8_t *sh = g_dev.shadow;
    if (n == 0) n = 1;
    const size_t last = off + n - 1;
    if (last >= DEV_RESERVE) return false;
    const size_t g0 = off / GRANULE, g1 = last / GRANULE;
    if (g0 == g1) return (off % GRANULE) + n <= sh[g0];
    for (size_t g = g0; g < g1; g++)
        if (sh[g] != GRANULE) return false;
    return (last % GRANULE) + 1 <= sh[g1];
}

std::string past(size_t by) {
    return by ? strf("%zu bytes after", by) : std::string("right after");
}

/* Where an invalid device access of n bytes at offset off lies, in words. */
std::string dev_where(size_t off, size_t n) {
    std::lock_guard<std::mutex> lk(g_dev.mu);
    auto it = g_dev.live.upper_bound(off);
    std::string near;
    if (it != g_dev.live.begin()) {
        auto a = std::prev(it);
        const size_t end = a->first + a->second.bytes;
        if (off < end)
            near = strf("bytes %zu..%zu of allocation #%llu, which has %zu", off - a->first,
                        off - a->first + n - 1, a->second.id, a->second.bytes);
        else
            near = strf("%s the end of allocation #%llu (%zu bytes)", past(off - end).c_str(),
                        a->second.id, a->second.bytes);
    }
    if (it != g_dev.live.end()) {
        const std::string before = strf("%zu bytes before allocation #%llu (%zu bytes)",
                                        it->first - off, it->second.id, it->second.bytes);
        near = near.empty() ? before : near + "; " + before;
    }
    return near.empty() ? "in no live allocation (none exists)" : near;
}

} // namespace

cudaError_t dev_malloc(void **p, size_t bytes) {
    std::lock_guard<std::mutex> lk(g_dev.mu);
    *p = nullptr;
    dev_init_locked();
    if (bytes > g_dev.limit || g_dev.used > g_dev.limit - bytes) return cudaErrorMemoryAllocation;
    if (bytes > DEV_RESERVE) return cudaErrorMemoryAllocation;
    const size_t span = (bytes + DEV_ALIGN - 1) / DEV_ALIGN * DEV_ALIGN + DEV_REDZONE;
    for (auto it = g_dev.free_blocks.begin(); it != g_dev.free_blocks.end(); ++it) {
        if (it->second < span) continue;
        const size_t off = it->first, len = it->second;
        g_dev.free_blocks.erase(it);
        if (len > span) g_dev.free_blocks[off + span] = len - span;
        g_dev.live[off] = DevAlloc{bytes, span, g_dev.next_id++};
        g_dev.used += bytes;
        shadow_set(off, bytes, span);
        /* uninitialised device memory: poisoned, so reads of unwritten memory show up */
        memset(g_dev.base + off, 0xff, bytes);
        *p = g_dev.base + off;
        return cudaSuccess;
    }
    return cudaErrorMemoryAllocation;
}

cudaError_t dev_free(void *p) {
    if (!p) return cudaSuccess;
    std::lock_guard<std::mutex> lk(g_dev.mu);
    const uintptr_t a = (uintptr_t)p;
    if (!g_dev.base || a - g_dev_lo >= g_dev_span) return cudaErrorInvalidValue;
    const size_t off = a - g_dev_lo;
    auto it = g_dev.live.find(off);
    if (it == g_dev.live.end()) return cudaErrorInvalidValue;
    size_t start = off, len = it->second.span;
    g_dev.used -= it->second.bytes;
    g_dev.live.erase(it);
    shadow_set(start, 0, len);
    /* return the pages (reads of freed memory are reported through the shadow anyway) */
    const size_t page = 4096, lo = (start + page - 1) / page * page,
                 hi = (start + len) / page * page;
    if (hi > lo + 16 * page) madvise(g_dev.base + lo, hi - lo, MADV_DONTNEED);
    auto next = g_dev.free_blocks.lower_bound(start);
    if (next != g_dev.free_blocks.end() && next->first == start + len) {
        len += next->second;
        g_dev.free_blocks.erase(next);
    }
    auto prev = g_dev.free_blocks.lower_bound(start);
    if (prev != g_dev.free_blocks.begin()) {
        --prev;
        if (prev->first + prev->second == start) {
            start = prev->first;
            len += prev->second;
            g_dev.free_blocks.erase(prev);
        }
    }
    g_dev.free_blocks[start] = len;
    return cudaSuccess;
}

size_t dev_reserve_bytes() {
    return DEV_RESERVE;
}

void dev_mem_info(size_t *free_bytes, size_t *total) {
    std::lock_guard<std::mutex> lk(g_dev.mu);
    dev_init_locked();
    /* an 8 GiB card, or PUNCTUM_EMU_MEM_LIMIT's: what the engine sizes its batches from */
    const size_t cap = g_dev.limit != (size_t)-1 ? g_dev.limit : (size_t)8 << 30;
    *total = cap;
    *free_bytes = g_dev.used < cap ? cap - g_dev.used : 0;
}

bool dev_range_ok(const void *p, size_t n) {
    const uintptr_t a = (uintptr_t)p;
    if (!g_dev_span || a - g_dev_lo >= g_dev_span) return true;
    return dev_valid(a - g_dev_lo, n);
}

bool api_range_check(const char *api, const char *what, const void *p, size_t n) {
    if (!n || dev_range_ok(p, n)) return true;
    report(Check::global_oob, false,
           strf("%s: the %s (%zu bytes of device memory) lies outside the live allocations: %s",
                api, what, n, dev_where((uintptr_t)p - g_dev_lo, n).c_str()));
    return false;
}

/* ================================================================================================
 * Violations: reports, Capture, symbolisation
 * ============================================================================================== */

namespace {

__thread Capture *t_capture;

struct LaunchReports {
    std::set<std::tuple<int, const void *, const void *>> seen; /* (check, pc, other pc) */
    int printed = 0, total = 0;
};
__thread LaunchReports *t_reports;
const int MAX_PRINTED = 8;

LaunchReports &reports() {
    if (!t_reports) t_reports = new LaunchReports();
    return *t_reports;
}

const char *const g_check_names[] = {
    "global-oob",        "shared-oob",        "shared-race",     "shared-uninit",
    "cp-async-pending",  "cp-async-unwaited", "cp-async-misuse", "ldmatrix-misuse",
    "barrier-divergent", "barrier-exited",    "warp-mask",       "shared-limit",
    "pinned-reuse",
};
static_assert(sizeof g_check_names / sizeof g_check_names[0] == (size_t)Check::n_checks, "names");

std::string where_now() {
    Sched *s = t_sched;
    if (!s) return "host code";
    return strf("kernel %s, block (%u,%u,%u)", s->name, t_block_idx.x, t_block_idx.y,
                t_block_idx.z);
}

/* Once per (check, pc, other pc) and launch: the same bug in every block is one report. */
bool first_time(Check c, const void *pc, const void *other) {
    return reports().seen.insert(std::make_tuple((int)c, pc, other)).second;
}

} // namespace

const char *check_name_of(Check c) {
    return g_check_names[(int)c];
}

bool capturing() {
    return t_capture != nullptr;
}

void report(Check c, bool fatal_, const std::string &text) {
    const std::string msg =
        strf("cuda-emu: %s in %s: %s", g_check_names[(int)c], where_now().c_str(), text.c_str());
    Sched *s = t_sched;
    if (s) s->block_violations++;
    if (t_capture) {
        t_capture->add(Violation{c, msg});
        if (fatal_ && s) s->aborted = true; /* (the caller leaves the fiber: abandon_if_aborted) */
        return;
    }
    LaunchReports &r = reports();
    r.total++;
    if (r.printed < MAX_PRINTED || fatal_) {
        fprintf(stderr, "%s\n", msg.c_str());
        r.printed++;
    }
    if (fatal_ || !s) {
        fprintf(stderr,
                "cuda-emu: aborting (SPEC §6: a violation fails the test that ran the kernel)\n");
        abort();
    }
}

void abandon_if_aborted() {
    if (t_sched && t_sched->aborted && t_tid >= 0) abandon_fiber();
}

void block_end(Sched *s) {
    if (!s->block_violations || t_capture) return;
    const LaunchReports &r = reports();
    fprintf(stderr, "cuda-emu: %d violation(s) in kernel %s (%d printed); aborting (SPEC §6)\n",
            r.total, s->name, r.printed);
    abort();
}

std::string thread_name(const Sched *s, int linear) {
    if (linear < 0 || linear >= s->n_threads) return "thread ?";
    const Fiber &f = s->fibers[(size_t)linear];
    return strf("thread %d (%u,%u,%u) [warp %d lane %d]", linear, f.tid.x, f.tid.y, f.tid.z, f.warp,
                f.lane);
}

/* "file:line (function)" of a code address, through addr2line (PUNCTUM_EMU_SYMBOLIZE=0: the
 * binary and offset only, for addr2line by hand). Only for reports, so slow is fine. */
std::string describe_pc(const void *pc) {
    if (!pc) return "?";
    static std::mutex mu;
    static std::map<const void *, std::string> cache;
    std::lock_guard<std::mutex> lk(mu);
    auto it = cache.find(pc);
    if (it != cache.end()) return it->second;
    Dl_info di;
    std::string out = strf("%p", pc);
    if (dladdr(pc, &di) && di.dli_fname) {
        uintptr_t addr = (uintptr_t)pc - 1; /* inside the call instruction */
        bool exec = false;                  /* ET_EXEC: addresses are absolute */
        if (FILE *f = fopen(di.dli_fname, "rb")) {
            Elf64_Ehdr eh;
            if (fread(&eh, sizeof eh, 1, f) == 1) exec = eh.e_type == ET_EXEC;
            fclose(f);
        }
        if (!exec) addr -= (uintptr_t)di.dli_fbase;
        out = strf("%s+0x%lx", di.dli_fname, (unsigned long)addr);
        const char *sym = getenv("PUNCTUM_EMU_SYMBOLIZE");
        if (!(sym && !strcmp(sym, "0")) && !strchr(di.dli_fname, '\'')) {
            const std::string cmd = strf("addr2line -C -f -e '%s' 0x%lx 2>/dev/null", di.dli_fname,
                                         (unsigned long)addr);
            if (FILE *p = popen(cmd.c_str(), "r")) {
                char fn[512] = "", loc[512] = "";
                if (fgets(fn, sizeof fn, p) && fgets(loc, sizeof loc, p)) {
                    fn[strcspn(fn, "\n")] = 0;
                    loc[strcspn(loc, "\n")] = 0;
                    /* (the function is the launch's lambda when the kernel is inlined: the line
                     * says more) */
                    const char *colon = strrchr(loc, ':');
                    if (loc[0] && loc[0] != '?' && colon && colon[1] != '?')
                        out = loc;
                    else if (fn[0] && fn[0] != '?')
                        out = strf("%s (%.200s)", out.c_str(), fn);
                }
                pclose(p);
            }
        }
    }
    cache[pc] = out;
    return out;
}

/* ================================================================================================
 * Shared memory
 * ============================================================================================== */

namespace {

const size_t SMEM_CAP = 227 * 1024 + 4096; /* the opt-in limit, plus the redzones between arrays */
const size_t SMEM_RZ = 64 * 1024;          /* unmapped-for-use space on both sides of the arena */
const size_t SMEM_STATIC_LIMIT = 48 * 1024;
const size_t ARRAY_GAP = 32;
enum : uint16_t { NONE = 0xffff, MULTI = 0xfffe, WARP_READERS = 0x8000 };
enum : uint16_t { ARR_NONE = 0, ARR_DYNAMIC = 1, ARR_FIRST_STATIC = 2 };

/* Hazard record of one shared byte for the barrier interval `epoch` (stale otherwise). */
struct RaceEnt {
    uint32_t epoch;
    uint16_t w_tid; /* last writer, NONE */
    uint16_t r_tid; /* one reader, WARP_READERS | warp (the lanes in r_mask), MULTI, NONE */
    uint32_t w_gen, r_gen, r_mask;
    const void *w_pc, *r_pc;
};

struct Site {
    const void *key;
    size_t off, bytes;
    const char *name;
};

struct Smem {
    unsigned char *map = nullptr; /* SMEM_RZ | data: SMEM_CAP | SMEM_RZ */
    unsigned char *data = nullptr;
    RaceEnt *race = nullptr;
    uint16_t *arr = nullptr;  /* owner array per byte */
    uint8_t *init = nullptr;  /* written since the block started */
    uint16_t *pend = nullptr; /* 1 + thread of a cp.async in flight to the byte, 0: none */
    std::vector<Site> sites;
    size_t top = 0, static_bytes = 0, dyn_bytes = 0;
    uint32_t epoch = 1;
};

__thread Smem *t_smem;
__thread uintptr_t t_smem_lo, t_smem_span; /* the whole mapping, redzones included */

Smem &smem() {
    if (!t_smem) {
        Smem *m = new Smem();
        m->map = (unsigned char *)map_reserve(SMEM_CAP + 2 * SMEM_RZ);
        m->race = (RaceEnt *)map_reserve(SMEM_CAP * sizeof(RaceEnt));
        m->arr = (uint16_t *)map_reserve(SMEM_CAP * sizeof(uint16_t));
        m->init = (uint8_t *)map_reserve(SMEM_CAP);
        m->pend = (uint16_t *)map_reserve(SMEM_CAP * sizeof(uint16_t));
        if (!m->map || !m->race || !m->arr || !m->init || !m->pend)
            fatal("cannot map the emulated shared memory");
        m->data = m->map + SMEM_RZ;
        t_smem = m;
        t_smem_lo = (uintptr_t)m->map;
        t_smem_span = SMEM_CAP + 2 * SMEM_RZ;
    }
    return *t_smem;
}

const char *array_name(const Smem &m, uint16_t id) {
    if (id == ARR_DYNAMIC) return "dynamic shared memory";
    if (id >= ARR_FIRST_STATIC && (size_t)(id - ARR_FIRST_STATIC) < m.sites.size())
        return m.sites[id - ARR_FIRST_STATIC].name;
    return "?";
}
size_t array_start(const Smem &m, uint16_t id) {
    if (id >= ARR_FIRST_STATIC && (size_t)(id - ARR_FIRST_STATIC) < m.sites.size())
        return m.sites[id - ARR_FIRST_STATIC].off;
    return 0;
}
/* "Ks + 132" for a byte offset of the arena */
std::string smem_ref(const Smem &m, size_t off) {
    const uint16_t id = off < SMEM_CAP ? m.arr[off] : (uint16_t)ARR_NONE;
    if (id == ARR_NONE) return strf("shared offset %zu", off);
    return strf("%s + %zu bytes", array_name(m, id), off - array_start(m, id));
}

std::string smem_oob_where(const Smem &m, intptr_t off, size_t n) {
    if (off < 0) return strf("%zd bytes before the shared arena", -off);
    if ((size_t)off >= m.top) {
        if (m.sites.empty() && !m.dyn_bytes) return "the kernel declares no shared memory";
        return strf("%s the end of the block's shared memory (%zu bytes)",
                    past((size_t)off - m.top).c_str(), m.top);
    }
    /* the array the access starts in, or the one before the gap it starts in */
    const uint16_t id0 = m.arr[off];
    if (id0 != ARR_NONE) {
        const size_t start = array_start(m, id0);
        size_t end = start;
        while (end < m.top && m.arr[end] == id0) end++;
        return strf("bytes %zu..%zu of %s, which has %zu", (size_t)off - start,
                    (size_t)off - start + n - 1, array_name(m, id0), end - start);
    }
    size_t b = (size_t)off;
    while (b > 0 && m.arr[b] == ARR_NONE) b--;
    const uint16_t prev = m.arr[b];
    if (prev == ARR_NONE) return strf("%zu bytes before the first shared array", m.top);
    const size_t start = array_start(m, prev);
    return strf("%s the end of %s (%zu bytes)", past((size_t)off - b - 1).c_str(),
                array_name(m, prev), b + 1 - start);
}

inline bool synced_after(const Sched *s, int a, int b, uint32_t gen) {
    if (a >> 5 != b >> 5) return false;
    return s->warps[(size_t)(a >> 5)].synced[a & 31][b & 31] > gen;
}

/* The readers of a byte other than thread t, not ordered before t's write. */
bool unordered_readers(const Sched *s, const RaceEnt &e, int t) {
    if (e.r_tid == NONE || e.r_tid == t) return false;
    if (e.r_tid < 1024) return !synced_after(s, e.r_tid, t, e.r_gen);
    if (e.r_tid == MULTI) return true;
    const int w = e.r_tid & 0x7fff;
    if (w != t >> 5) return true;
    for (int l = 0; l < 32; l++)
        if ((e.r_mask >> l & 1u) && w * 32 + l != t && !synced_after(s, w * 32 + l, t, e.r_gen))
            return true;
    return false;
}

std::string readers_name(const Sched *s, const RaceEnt &e) {
    if (e.r_tid < 1024) return thread_name(s, e.r_tid);
    if (e.r_tid == MULTI) return "threads of several warps";
    return strf("lanes %08x of warp %d", e.r_mask, e.r_tid & 0x7fff);
}

void race_report(const Sched *s, const Smem &m, size_t off, size_t n, int t, bool write,
                 const char *kind, const std::string &other, const void *pc, const void *other_pc) {
    if (!first_time(Check::shared_race, pc, other_pc)) return;
    report(
        Check::shared_race, false,
        strf("%s hazard on %s (access of %zu bytes): %s %s it at %s, and %s %s it at %s, with no "
             "__syncthreads (or __syncwarp of both lanes) in between",
             kind, smem_ref(m, off).c_str(), n, thread_name(s, t).c_str(),
             write ? "writes" : "reads", describe_pc(pc).c_str(), other.c_str(),
             !strcmp(kind, "read-after-write") || !strcmp(kind, "write-after-write") ? "wrote"
                                                                                     : "read",
             describe_pc(other_pc).c_str()));
}

/* One shared-memory access [off, off + n) of the arena's data by thread t; false when it is
 * outside the declared arrays (reported). */
bool shared_access(intptr_t off, size_t n, bool write, const void *pc, bool from_cp_async = false) {
    Smem &m = *t_smem;
    Sched *s = t_sched;
    const int t = t_tid;
    if (off < 0 || (size_t)off + n > m.top || m.arr[off] == ARR_NONE ||
        m.arr[off + n - 1] != m.arr[off]) {
        if (first_time(Check::shared_oob, pc, nullptr))
            report(Check::shared_oob, false,
                   strf("%s %s %zu bytes of shared memory at %s: %s", thread_name(s, t).c_str(),
                        write ? "writes" : "reads", n, describe_pc(pc).c_str(),
                        smem_oob_where(m, off, n).c_str()));
        return false;
    }
    const Warp &W = s->warps[(size_t)(t >> 5)];
    const uint32_t gen = W.gen, epoch = m.epoch;
    bool pending_seen = false, uninit_seen = false, race_seen = false;
    for (size_t i = 0; i < n; i++) {
        const size_t b = (size_t)off + i;
        if (m.pend[b] && !pending_seen && !from_cp_async) {
            pending_seen = true;
            const int owner = m.pend[b] - 1;
            if (first_time(Check::cp_async_pending, pc, nullptr))
                report(Check::cp_async_pending, false,
                       strf("%s %s %s while a cp.async of %s is still copying to it (no "
                            "cp.async.wait_group covers the copy%s) at %s",
                            thread_name(s, t).c_str(), write ? "writes" : "reads",
                            smem_ref(m, b).c_str(),
                            owner == t ? "this thread" : thread_name(s, owner).c_str(),
                            owner == t ? "" : ", or no __syncthreads after the wait",
                            describe_pc(pc).c_str()));
        }
        if (!write && !m.init[b] && !uninit_seen) {
            uninit_seen = true;
            if (first_time(Check::shared_uninit, pc, nullptr))
                report(
                    Check::shared_uninit, false,
                    strf("%s reads %s (%zu bytes) at %s, which no thread of the block has written",
                         thread_name(s, t).c_str(), smem_ref(m, b).c_str(), n,
                         describe_pc(pc).c_str()));
        }
        RaceEnt &e = m.race[b];
        if (e.epoch != epoch) {
            e.epoch = epoch;
            e.w_tid = e.r_tid = NONE;
            e.r_mask = 0;
        }
        if (write) {
            if (!race_seen && e.w_tid != NONE && e.w_tid != t &&
                !synced_after(s, e.w_tid, t, e.w_gen)) {
                race_seen = true;
                race_report(s, m, b, n, t, true, "write-after-write", thread_name(s, e.w_tid), pc,
                            e.w_pc);
            }
            if (!race_seen && unordered_readers(s, e, t)) {
                race_seen = true;
                race_report(s, m, b, n, t, true, "write-after-read", readers_name(s, e), pc,
                            e.r_pc);
            }
            e.w_tid = (uint16_t)t;
            e.w_gen = gen;
            e.w_pc = pc;
            e.r_tid = NONE;
            e.r_mask = 0;
            if (!from_cp_async) m.init[b] = 1;
        } else {
            if (!race_seen && e.w_tid != NONE && e.w_tid != t &&
                !synced_after(s, e.w_tid, t, e.w_gen)) {
                race_seen = true;
                race_report(s, m, b, n, t, false, "read-after-write", thread_name(s, e.w_tid), pc,
                            e.w_pc);
            }
            const int w = t >> 5;
            if (e.r_tid == NONE || e.r_tid == t) {
                e.r_tid = (uint16_t)t;
                e.r_mask = 1u << (t & 31);
                e.r_gen = gen;
            } else if (e.r_tid != MULTI) {
                const int rw = e.r_tid < 1024 ? e.r_tid >> 5 : (int)(e.r_tid & 0x7fffu);
                if (rw == w) {
                    e.r_tid = (uint16_t)(WARP_READERS | w);
                    e.r_mask |= 1u << (t & 31);
                } else {
                    e.r_tid = MULTI;
                }
                e.r_gen = gen > e.r_gen ? gen : e.r_gen;
            } else {
                e.r_gen = gen > e.r_gen ? gen : e.r_gen;
            }
            e.r_pc = pc;
        }
    }
    return true;
}

void global_access(uintptr_t a, size_t n, bool write, const void *pc) {
    const size_t off = a - g_dev_lo;
    if (dev_valid(off, n)) return;
    if (!first_time(Check::global_oob, pc, nullptr)) return;
    report(Check::global_oob, false,
           strf("%s %s %zu bytes of global memory at %s: %s", thread_name(t_sched, t_tid).c_str(),
                write ? "writes" : "reads", n, describe_pc(pc).c_str(), dev_where(off, n).c_str()));
}

} // namespace

/* Every traced load / store of an instrumented translation unit. */
static inline void on_access(const void *p, size_t n, bool write, const void *pc) {
    if (t_tid < 0) return;
    const uintptr_t a = (uintptr_t)p;
    if (g_roof_on && a - g_dev_lo < g_dev_span) roof_access(a - g_dev_lo, n, write);
    if (!checks_on()) return;
    if (a - t_smem_lo < t_smem_span) {
        g_stats.checked_accesses++;
        shared_access((intptr_t)(a - (uintptr_t)t_smem->data), n, write, pc);
    } else if (a - g_dev_lo < g_dev_span) {
        g_stats.checked_accesses++;
        global_access(a, n, write, pc);
    }
}

/* ---- scheduler hooks ----------------------------------------------------------------------- */

void launch_begin(Sched *s) {
    Smem &m = smem();
    if (m.top) memset(m.arr, 0, m.top * sizeof(uint16_t));
    m.sites.clear();
    m.top = m.static_bytes = 0;
    m.dyn_bytes = s->dynamic_smem;
    if (m.dyn_bytes) {
        for (size_t i = 0; i < m.dyn_bytes; i++) m.arr[i] = ARR_DYNAMIC;
        m.top = (m.dyn_bytes + 15) / 16 * 16;
    }
    delete t_reports;
    t_reports = nullptr;
}

void block_begin(Sched *s) {
    Smem &m = smem();
    s->block_violations = 0;
    if (m.top) {
        memset(m.data, 0xff, m.top); /* poison: NaN in every float type, -1 in every integer */
        memset(m.init, 0, m.top);
        memset(m.pend, 0, m.top * sizeof(uint16_t));
    }
    barrier_released();
}

void barrier_released() {
    Smem &m = *t_smem;
    if (++m.epoch == 0) { /* wrapped: forget every record */
        memset((void *)m.race, 0, SMEM_CAP * sizeof(RaceEnt));
        m.epoch = 1;
    }
}

void thread_exit(Fiber *f) {
    if (f->cp->empty()) return;
    Smem &m = *t_smem;
    const CpAsyncCopy &c = f->cp->front();
    if (first_time(Check::cp_async_unwaited, c.pc, nullptr))
        report(Check::cp_async_unwaited, false,
               strf("%s exits with %zu cp.async copies it never waited for (the first, to %s, "
                    "issued at "
                    "%s): a missing cp.async.wait_group",
                    thread_name(t_sched, f->linear).c_str(), f->cp->size(),
                    smem_ref(m, (size_t)(c.dst - m.data)).c_str(), describe_pc(c.pc).c_str()));
    for (const auto &x : *f->cp)
        for (int i = 0; i < x.bytes; i++) m.pend[(size_t)(x.dst - m.data) + (size_t)i] = 0;
    f->cp->clear();
}

/* ================================================================================================
 * Pinned host memory and the copies that read it (Check::pinned_reuse)
 *
 * The emulation copies at once, but on a GPU a cudaMemcpyAsync from pinned memory is a DMA that
 * may run long after the call returned: until the host has observed the copy complete (an event
 * recorded after it synchronised or successfully queried, its stream or the device
 * synchronised, the block freed), writing the source races with the copy. Every such copy keeps
 * the bytes it sent; at the observation they are compared with the source, and bytes that
 * changed in between are a write the program made too early.
 * ============================================================================================== */

namespace {

struct PinnedCopy {
    const void *stream;
    uint64_t seq;
    const unsigned char *src;
    std::vector<unsigned char> sent;
    const void *pc; /* the cudaMemcpyAsync call */
};

struct Pinned {
    std::mutex mu;
    std::map<uintptr_t, size_t> blocks; /* cudaMallocHost'd: start -> bytes */
    std::vector<PinnedCopy> copies;     /* enqueued, not yet observed complete */
    uint64_t seq = 0;
};
Pinned &pinned() {
    static Pinned *p = new Pinned(); /* (never destroyed: streams may sync during exit) */
    return *p;
}

/* The block holding [p, p + n), or blocks.end(). */
std::map<uintptr_t, size_t>::iterator pinned_block(Pinned &g, const void *p, size_t n) {
    const uintptr_t a = (uintptr_t)p;
    auto it = g.blocks.upper_bound(a);
    if (it == g.blocks.begin()) return g.blocks.end();
    --it;
    return a - it->first <= it->second && n <= it->second - (a - it->first) ? it : g.blocks.end();
}

/* The diagnostic for a copy whose source changed (empty if it did not). Under g.mu. */
std::string changed_source(Pinned &g, const PinnedCopy &c, const char *how, const void *pc) {
    const size_t n = c.sent.size();
    size_t first = n, last = 0, count = 0;
    for (size_t i = 0; i < n; i++)
        if (c.src[i] != c.sent[i]) {
            if (first == n) first = i;
            last = i, count++;
        }
    if (!count) return "";
    auto b = pinned_block(g, c.src, n);
    const size_t off = b != g.blocks.end() ? (size_t)((uintptr_t)c.src - b->first) : 0;
    return strf("%zu byte(s) (offsets %zu..%zu) of the %zu-byte source of a host->device "
                "cudaMemcpyAsync (at offset %zu of a pinned block of %zu bytes) changed before the "
                "host observed the copy complete (the GPU may still be reading them): copy "
                "enqueued at %s; first observed by %s at %s. Wait for an event recorded after the "
                "copy (cudaEventSynchronize / cudaEventQuery) before writing the source again",
                count, first, last, n, off, b != g.blocks.end() ? b->second : (size_t)0,
                describe_pc(c.pc).c_str(), how, describe_pc(pc).c_str());
}

/* Check and forget the copies that `observed` selects; then report (outside the lock). */
template <class F> void observe_if(F observed, const char *how, const void *pc) {
    Pinned &g = pinned();
    std::vector<std::string> bad;
    {
        std::lock_guard<std::mutex> lk(g.mu);
        size_t keep = 0;
        for (size_t i = 0; i < g.copies.size(); i++) {
            PinnedCopy &c = g.copies[i];
            if (!observed(c)) {
                if (keep != i) g.copies[keep] = std::move(c);
                keep++;
                continue;
            }
            std::string msg = changed_source(g, c, how, pc);
            if (!msg.empty()) bad.push_back(std::move(msg));
        }
        g.copies.resize(keep);
    }
    for (const auto &m : bad) report(Check::pinned_reuse, false, m);
}

} // namespace

void pinned_alloc(void *p, size_t bytes) {
    Pinned &g = pinned();
    std::lock_guard<std::mutex> lk(g.mu);
    g.blocks[(uintptr_t)p] = bytes;
}

bool pinned_free(void *p, const void *pc) {
    Pinned &g = pinned();
    size_t bytes;
    {
        std::lock_guard<std::mutex> lk(g.mu);
        auto it = g.blocks.find((uintptr_t)p);
        if (it == g.blocks.end()) return false;
        bytes = it->second;
    }
    const uintptr_t lo = (uintptr_t)p;
    observe_if([&](const PinnedCopy &c) { return (uintptr_t)c.src - lo < bytes; }, "cudaFreeHost",
               pc);
    std::lock_guard<std::mutex> lk(g.mu);
    g.blocks.erase(lo);
    return true;
}

void pinned_copy(const void *stream, const void *src, size_t n, const void *pc) {
    Pinned &g = pinned();
    std::lock_guard<std::mutex> lk(g.mu);
    if (!n || pinned_block(g, src, n) == g.blocks.end())
        return; /* pageable: staged by the driver */
    const unsigned char *s = (const unsigned char *)src;
    g.copies.push_back(PinnedCopy{stream, ++g.seq, s, std::vector<unsigned char>(s, s + n), pc});
}

uint64_t pinned_mark() {
    Pinned &g = pinned();
    std::lock_guard<std::mutex> lk(g.mu);
    return g.seq;
}

void pinned_observe(const void *stream, uint64_t upto, const char *how, const void *pc) {
    observe_if(
        [&](const PinnedCopy &c) { return (!stream || c.stream == stream) && c.seq <= upto; }, how,
        pc);
}

void pinned_stream_gone(const void *stream, const void *pc) {
    /* nothing observed these copies: a write since they were enqueued raced with them */
    observe_if([&](const PinnedCopy &c) { return c.stream == stream; }, "cudaStreamDestroy", pc);
}

} // namespace in

using namespace in;

const char *check_name(Check c) {
    return check_name_of(c);
}

static bool g_traced; /* some translation unit reports its accesses (its constructor said so) */

bool access_checks_enabled() {
    return g_traced && checks_on();
}

Capture::Capture() : prev_(t_capture) {
    t_capture = this;
}
Capture::~Capture() {
    t_capture = prev_;
}
int Capture::count(Check c) const {
    int n = 0;
    for (const auto &v : list_) n += v.kind == c;
    return n;
}
int Capture::total() const {
    return (int)list_.size();
}
void Capture::clear() {
    list_.clear();
}
void Capture::add(Violation v) {
    list_.push_back(std::move(v));
}

/* ---- PT_SHARED ----------------------------------------------------------------------------- */

void *shared_var(const void *site, size_t bytes, const char *name) {
    Sched *s = t_sched;
    if (!s || !s->cur) fatal("shared array %s declared outside a kernel", name);
    Smem &m = *t_smem;
    for (const Site &x : m.sites)
        if (x.key == site) return m.data + x.off;
    /* first declaration in this launch: place it (same offset in every block) */
    const size_t off = m.top ? (m.top + ARRAY_GAP + 15) / 16 * 16 : 0; /* a redzone before it */
    if (m.static_bytes + bytes > SMEM_STATIC_LIMIT || off + bytes > SMEM_CAP) {
        report(Check::shared_limit, true,
               strf("shared array %s (%zu bytes) takes the kernel's static shared memory to %zu "
                    "bytes, over "
                    "the 48 KiB a kernel may declare statically (larger tiles need "
                    "PT_SHARED_DYNAMIC and "
                    "cudaFuncAttributeMaxDynamicSharedMemorySize)",
                    name, bytes, m.static_bytes + bytes));
        abandon_if_aborted();
    }
    if (m.sites.size() + ARR_FIRST_STATIC >= 0xffff) fatal("too many shared arrays");
    const uint16_t id = (uint16_t)(ARR_FIRST_STATIC + m.sites.size());
    m.sites.push_back(Site{site, off, bytes, name});
    for (size_t i = 0; i < bytes; i++) m.arr[off + i] = id;
    memset(m.data + off, 0xff, bytes);
    memset(m.init + off, 0, bytes);
    memset(m.pend + off, 0, bytes * sizeof(uint16_t));
    m.top = off + bytes;
    m.static_bytes += bytes;
    return m.data + off;
}

void *shared_dynamic() {
    Sched *s = t_sched;
    if (!s || !s->cur) fatal("dynamic shared memory used outside a kernel");
    return t_smem->data;
}

/* ---- cp.async ------------------------------------------------------------------------------ */

void cp_async(void *dst, const void *src, int cp_bytes, int src_bytes) {
    Sched *s = t_sched;
    if (!s || !s->cur) fatal("cp.async outside a kernel");
    Fiber *f = s->cur;
    Smem &m = *t_smem;
    const void *pc = __builtin_return_address(0);
    const uintptr_t d = (uintptr_t)dst, a = (uintptr_t)src;
    const char *bad = nullptr;
    if (cp_bytes != 4 && cp_bytes != 8 && cp_bytes != 16)
        bad = "the copy size must be 4, 8 or 16 bytes";
    else if (src_bytes < 0 || src_bytes > cp_bytes)
        bad = "the source size must be between 0 and the copy size";
    else if (d - t_smem_lo >= t_smem_span)
        bad = "the destination is not shared memory";
    else if (d % (uintptr_t)cp_bytes)
        bad = "the destination is not aligned to the copy size";
    else if (src_bytes > 0 && a % (uintptr_t)cp_bytes)
        bad = "the source is not aligned to the copy size";
    else if (src_bytes > 0 && a - g_dev_lo >= g_dev_span)
        bad = "the source is not device (global) memory";
    if (bad) {
        if (first_time(Check::cp_async_misuse, pc, nullptr))
            report(Check::cp_async_misuse, false,
                   strf("%s: cp.async of %d bytes (%d from %p to %p) at %s: %s",
                        thread_name(s, f->linear).c_str(), cp_bytes, src_bytes, src, dst,
                        describe_pc(pc).c_str(), bad));
        return;
    }
    CpAsyncCopy c;
    c.dst = (unsigned char *)dst;
    c.bytes = cp_bytes;
    c.group = -1;
    c.pc = pc;
    memset(c.data, 0, sizeof c.data);
    if (src_bytes > 0) {
        if (g_roof_on) roof_access(a - g_dev_lo, (size_t)src_bytes, false);
        global_access(a, (size_t)src_bytes, false, pc);
        if (dev_valid(a - g_dev_lo, (size_t)src_bytes)) memcpy(c.data, src, (size_t)src_bytes);
    }
    const intptr_t off = (intptr_t)(d - (uintptr_t)m.data);
    /* the copy may land at any moment until the wait: a write now, for the hazard records */
    if (!shared_access(off, (size_t)cp_bytes, true, pc, true)) return; /* (reported) */
    for (int i = 0; i < cp_bytes; i++) {
        uint16_t &p = m.pend[(size_t)off + (size_t)i];
        if (p && first_time(Check::cp_async_pending, pc, nullptr))
            report(Check::cp_async_pending, false,
                   strf("%s issues a cp.async to %s at %s while an earlier cp.async (of %s) to it "
                        "is still in "
                        "flight",
                        thread_name(s, f->linear).c_str(), smem_ref(m, (size_t)off).c_str(),
                        describe_pc(pc).c_str(), thread_name(s, p - 1).c_str()));
        p = (uint16_t)(f->linear + 1);
    }
    f->cp->push_back(c);
}

void cp_async_wait(int newest_pending_allowed) {
    Sched *s = t_sched;
    if (!s || !s->cur) fatal("cp.async.wait_group outside a kernel");
    Fiber *f = s->cur;
    Smem &m = *t_smem;
    const int limit = f->cp_committed - newest_pending_allowed;
    auto &v = *f->cp;
    size_t keep = 0;
    for (size_t i = 0; i < v.size(); i++) {
        CpAsyncCopy &c = v[i];
        if (c.group < 0 || c.group >= limit) {
            v[keep++] = c;
            continue;
        }
        const size_t off = (size_t)(c.dst - m.data);
        for (int k = 0; k < c.bytes; k++) m.pend[off + (size_t)k] = 0;
        shared_access((intptr_t)off, (size_t)c.bytes, true, c.pc, true);
        memcpy(c.dst, c.data, (size_t)c.bytes);
        for (int k = 0; k < c.bytes; k++) m.init[off + (size_t)k] = 1;
    }
    v.resize(keep);
}

/* ---- ldmatrix ------------------------------------------------------------------------------ */

void ldmatrix(uint32_t *r, const void *row, int nmat, bool trans) {
    static const char *const what[2][5] = {
        {"", "ldmatrix.x1", "ldmatrix.x2", "", "ldmatrix.x4"},
        {"", "ldmatrix.x1.trans", "ldmatrix.x2.trans", "", "ldmatrix.x4.trans"}};
    Sched *s = t_sched;
    if (!s || !s->cur) fatal("ldmatrix outside a kernel");
    const void *pc = __builtin_return_address(0);
    const int lane = t_lane;
    uint32_t w[4] = {0, 0, 0, 0};
    if (lane < 8 * nmat) { /* this lane gives a row address: it reads those 16 bytes */
        const uintptr_t a = (uintptr_t)row;
        const char *bad = a - t_smem_lo >= t_smem_span ? "is not shared memory"
                          : a % 16                     ? "is not 16-byte aligned"
                                                       : nullptr;
        if (bad) {
            if (first_time(Check::ldmatrix_misuse, pc, nullptr))
                report(Check::ldmatrix_misuse, false,
                       strf("%s: %s row address %p at %s %s", thread_name(s, t_tid).c_str(),
                            what[trans][nmat], row, describe_pc(pc).c_str(), bad));
        } else {
            /* only where stores leave records too: the checks on, in a build that traces
             * accesses (not the sanitizer build's, nor with PUNCTUM_EMU_CHECKS=0) */
            if (access_checks_enabled()) {
                g_stats.checked_accesses++;
                shared_access((intptr_t)(a - (uintptr_t)t_smem->data), 16, false, pc);
            }
            memcpy(w, row, 16);
        }
    }
    unsigned arrived = 0;
    const uint32_t *tab = warp_collective(0xffffffffu, w, 4, &arrived, what[trans][nmat]);
    if (arrived != 0xffffffffu) {
        report(Check::warp_mask, true,
               strf("%s: lanes %08x of the warp take part, not all 32 (.aligned)",
                    what[trans][nmat], arrived));
        abandon_if_aborted();
        for (int i = 0; i < nmat; i++) r[i] = 0;
        return;
    }
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < nmat; i++) {
        if (!trans) { /* row g of matrix i, elements 2t, 2t + 1: word t of that row */
            r[i] = tab[(8 * i + g) * 16 + t];
        } else { /* element g of rows 2t and 2t + 1 */
            const uint32_t lo = tab[(8 * i + 2 * t) * 16 + g / 2],
                           hi = tab[(8 * i + 2 * t + 1) * 16 + g / 2];
            const uint32_t l16 = g & 1 ? lo >> 16 : lo & 0xffffu,
                           h16 = g & 1 ? hi >> 16 : hi & 0xffffu;
            r[i] = l16 | h16 << 16;
        }
    }
}

} // namespace pt_emu

/* ================================================================================================
 * The hooks of -fsanitize=thread instrumentation (GCC and clang), without the TSan runtime
 * ============================================================================================== */

extern "C" {
#define PT_EMU_HOOKS(n)                                                                            \
    void __tsan_read##n(void *p) {                                                                 \
        pt_emu::in::on_access(p, n, false, __builtin_return_address(0));                           \
    }                                                                                              \
    void __tsan_write##n(void *p) {                                                                \
        pt_emu::in::on_access(p, n, true, __builtin_return_address(0));                            \
    }                                                                                              \
    void __tsan_unaligned_read##n(void *p) {                                                       \
        pt_emu::in::on_access(p, n, false, __builtin_return_address(0));                           \
    }                                                                                              \
    void __tsan_unaligned_write##n(void *p) {                                                      \
        pt_emu::in::on_access(p, n, true, __builtin_return_address(0));                            \
    }                                                                                              \
    void __tsan_volatile_read##n(void *p) {                                                        \
        pt_emu::in::on_access(p, n, false, __builtin_return_address(0));                           \
    }                                                                                              \
    void __tsan_volatile_write##n(void *p) {                                                       \
        pt_emu::in::on_access(p, n, true, __builtin_return_address(0));                            \
    }
PT_EMU_HOOKS(1)
PT_EMU_HOOKS(2)
PT_EMU_HOOKS(4)
PT_EMU_HOOKS(8)
PT_EMU_HOOKS(16)
#undef PT_EMU_HOOKS
/* (signatures as GCC declares its sanitizer built-ins, which it does in every sanitizer build) */
void __tsan_read_range(void *p, long n) {
    pt_emu::in::on_access(p, (size_t)n, false, __builtin_return_address(0));
}
void __tsan_write_range(void *p, long n) {
    pt_emu::in::on_access(p, (size_t)n, true, __builtin_return_address(0));
}
void __tsan_init(void) {
    pt_emu::g_traced = true;
}
void __tsan_func_entry(void *) {}
void __tsan_func_exit(void *) {}
void __tsan_vptr_update(void *, void *) {}
void __tsan_vptr_read(void **) {}
/* clang instruments memory intrinsics as calls to these */
void *__tsan_memcpy(void *d, const void *s, size_t n) {
    pt_emu::in::on_access(s, n, false, __builtin_return_address(0));
    pt_emu::in::on_access(d, n, true, __builtin_return_address(0));
    return memcpy(d, s, n);
}
void *__tsan_memmove(void *d, const void *s, size_t n) {
    pt_emu::in::on_access(s, n, false, __builtin_return_address(0));
    pt_emu::in::on_access(d, n, true, __builtin_return_address(0));
    return memmove(d, s, n);
}
void *__tsan_memset(void *d, int c, size_t n) {
    pt_emu::in::on_access(d, n, true, __builtin_return_address(0));
    return memset(d, c, n);
}
}
