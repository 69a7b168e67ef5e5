/* punctum — CUDA emulation: what the scheduler (cuda_emu.cpp) and the memory checker
 * (cuda_emu_check.cpp) share. Not for kernels or tests (they use cuda_emu.h). */
#ifndef PUNCTUM_CUDA_EMU_INTERNAL_H
#define PUNCTUM_CUDA_EMU_INTERNAL_H

#include "cuda_emu.h"

#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__) || !defined(__x86_64__) || defined(PT_EMU_UCONTEXT)
#define PT_EMU_USE_UCONTEXT 1
#include <ucontext.h>
#else
#define PT_EMU_USE_UCONTEXT 0
#endif

namespace pt_emu {
namespace in {

enum { F_READY = 0, F_WAIT_BLOCK, F_WAIT_WARP, F_DONE };

/* A cp.async in flight: its bytes (read from global memory at issue) reach shared memory at
 * the issuing thread's wait_group that covers `group` (-1: not committed yet). */
struct CpAsyncCopy {
    unsigned char *dst;
    unsigned char data[16];
    int bytes, group;
    const void *pc;
};

struct Fiber {
#if PT_EMU_USE_UCONTEXT
    ucontext_t uc;
#else
    void *sp;
#endif
    char *stack; /* STACK_BYTES usable, guard page below */
    uint3 tid;
    int linear, lane, warp, state;
    unsigned mask;
    unsigned arrived;
    int nwords;
    bool orders_memory;
    const uint32_t *result;
    const char *what;
    const char *bar_file; /* the __syncthreads this thread waits at */
    int bar_line;
    int cp_committed;             /* cp.async groups committed by this thread */
    std::vector<CpAsyncCopy> *cp; /* its copies in flight (allocated once per fiber slot) */
};

/* A warp's collectives: every lane publishes its words in pub; when a group (the lanes of one
 * mask) is complete, the scheduler copies the group's words into a snapshot that the group's
 * lanes read when they resume, so lanes may publish again, and other groups of the same warp
 * (e.g. two half-warp shuffles in divergent branches) may be in flight meanwhile. Snapshots
 * are reused once every lane released with them has run (the next release phase).
 * gen counts the warp's __syncwarp releases; synced[a][b] is the gen of the last one that
 * both lanes a and b took part in (shared-memory accesses before it are ordered). */
struct Warp {
    unsigned existing; /* lanes present in the block */
    int nsnap;         /* snapshots taken in the current release phase */
    uint32_t gen;
    uint32_t synced[32][32];
    uint32_t pub[32 * 16];
    uint32_t snap[32][32 * 16];
};

struct Sched {
    std::vector<Fiber> fibers;
    std::vector<Warp> warps; /* (grows only: gen / synced stay monotonic) */
    int n_threads = 0, n_warps = 0;
#if PT_EMU_USE_UCONTEXT
    ucontext_t uc;
#else
    void *sp = nullptr;
#endif
    Fiber *cur = nullptr;
    const std::function<void()> *body = nullptr;
    const char *name = "";
    size_t dynamic_smem = 0;
    bool aborted = false;     /* a fatal violation under a Capture: the launch stops */
    int block_violations = 0; /* violations reported in the current block */

    Sched() = default;
    Sched(const Sched &) = delete;
    Sched &operator=(const Sched &) = delete;
    ~Sched() {
        for (auto &f : fibers) delete f.cp;
    }
};

extern __thread Sched *t_sched;

/* Return to the scheduler for good (the block was aborted). Only from a fiber. */
[[noreturn]] void abandon_fiber();
/* After a fatal report under a Capture, from a fiber: abandon it. Call it once the report's
 * temporaries are gone (a fiber's stack is never unwound). */
void abandon_if_aborted();

/* ---- the memory checker (cuda_emu_check.cpp) --------------------------------------------- */
void launch_begin(Sched *s); /* new kernel: shared-array table, dynamic region, report dedup */
void block_begin(Sched *s);  /* poison shared memory, forget writes, pending copies */
void block_end(Sched *s);    /* abort the process if the block had violations (no Capture) */
void barrier_released();     /* __syncthreads: a new hazard epoch */
void thread_exit(Fiber *f);  /* copies never waited for */

/* Report a violation. Fatal: the block cannot go on (abort now, or under a Capture mark the
 * launch aborted: the caller then leaves the fiber with abandon_if_aborted). */
void report(Check c, bool fatal, const std::string &text);
std::string thread_name(const Sched *s, int linear);
std::string describe_pc(const void *pc);
std::string strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool capturing();

/* Device memory (the arena with its validity shadow). */
cudaError_t dev_malloc(void **p, size_t bytes);
cudaError_t dev_free(void *p);
/* Is [p, p + n) inside one live allocation? Host pointers (outside the arena): true. */
bool dev_range_ok(const void *p, size_t n);
/* Check a host-side access to device memory by an API call; reports Check::global_oob. */
bool api_range_check(const char *api, const char *what, const void *p, size_t n);

extern Stats g_stats;
size_t dev_reserve_bytes(); /* the arena's span (device addresses are base + [0, span)) */
void dev_mem_info(size_t *free_bytes, size_t *total); /* cudaMemGetInfo: limit (8 GiB) - used */

/* Pinned host memory (cudaMallocHost) and the host->device copies that read it. On a GPU a
 * cudaMemcpyAsync from pinned memory may run long after it was enqueued: the host may write the
 * source again only once it has observed the copy complete. Streams are identified by their
 * handle (the default stream normalised), copies by a global sequence number. */
void pinned_alloc(void *p, size_t bytes);
/* cudaFreeHost: observes the copies reading the block, forgets it; false: not a pinned block */
bool pinned_free(void *p, const void *pc);
/* A cudaMemcpyAsync host->device of [src, src + n) on `stream`, enqueued at `pc`: remembered
 * (with the bytes) when the source lies in a pinned block */
void pinned_copy(const void *stream, const void *src, size_t n, const void *pc);
uint64_t pinned_mark(); /* the sequence number of the last copy enqueued (cudaEventRecord) */
/* The host observes the completion of the copies on `stream` (nullptr: every stream) up to
 * sequence number `upto`, by `how` at `pc`: each whose source bytes changed since it was
 * enqueued is reported (Check::pinned_reuse); all are forgotten */
void pinned_observe(const void *stream, uint64_t upto, const char *how, const void *pc);
/* a stream destroyed: its unobserved copies checked and forgotten */
void pinned_stream_gone(const void *stream, const void *pc);

/* Roofline counting (cuda_emu_roofline.cpp), only where g_roof_on. */
/* A launch of kernel `func` (launched as `name`): later accesses of this OS thread count for it */
void roof_launch_begin(const char *name, const void *func);
void roof_launch_end();
void roof_access(size_t arena_off, size_t n, bool write); /* a kernel's global access */
/* A library call (GEMM, copy) as a row of its own: bytes read / written once, its FLOPs. */
void roof_add(const std::string &name, unsigned long long calls, unsigned long long read,
              unsigned long long written, unsigned long long flops, bool tensor_core);

} // namespace in
} // namespace pt_emu

#endif
