/* punctum — shared small utilities: error reporting, checked arithmetic, allocation. */
#ifndef PUNCTUM_COMMON_H
#define PUNCTUM_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* "<semver>+g<commit>[-dirty]" (e.g. 0.1.0+g1a2b3c4d5e6f): the VERSION file plus the commit the
 * build came from, generated at every build (cmake/gen-version.cmake). A variable, not a string
 * literal: only one file recompiles when the commit changes. */
extern const char pt_version[];
#define PUNCTUM_VERSION pt_version
#define PUNCTUM_FORMAT 1

/* An error is a one-line, human-readable message that names the file and the problem.
 * Functions that can fail take a pt_error* and return 0 on success, non-zero on failure. */
typedef struct {
    char msg[512];
} pt_error;

/* printf-style; sets e->msg (e may be NULL). Always returns -1 so callers can `return
 * pt_fail(...)`. */
int pt_fail(pt_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix an existing message: "PREFIX: old message". Returns -1. */
int pt_fail_prefix(pt_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Overflow-checked size arithmetic: return 0 on success, -1 on overflow (result untouched). */
static inline int pt_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}
static inline int pt_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}

/* Allocation that aborts with a message on out-of-memory: only for small bounded sizes whose
 * failure cannot be handled (parsers' bookkeeping). The engine uses pt_try_alloc. */
void *pt_xmalloc(size_t n);
void *pt_xcalloc(size_t n, size_t size);
void *pt_xrealloc(void *p, size_t n);
char *pt_xstrdup(const char *s);

/* Allocation that reports failure: NULL with e set to "out of memory allocating N bytes for
 * WHAT" (e may be NULL). Zero bytes allocate one byte, so NULL always means failure. */
void *pt_try_alloc(size_t n, const char *what, pt_error *e);
void *pt_try_calloc(size_t n, size_t size, const char *what, pt_error *e);
char *pt_try_strdup(const char *s, const char *what, pt_error *e);
/* The same for realloc: on failure NULL, and p is left as it was (still the caller's to free). */
void *pt_try_realloc(void *p, size_t n, const char *what, pt_error *e);

/* A bump allocator for many small objects freed together (a template's values, a text's
 * pieces): 16-byte aligned allocations from blocks that double from first_block up to
 * max_block bytes (a larger request gets a block of its own). */
typedef struct pt_arena_blk pt_arena_blk;
typedef struct {
    pt_arena_blk *blk;
    size_t total; /* bytes handed out since init / the last free */
    size_t first_block, max_block;
} pt_arena;

void pt_arena_init(pt_arena *a, size_t first_block, size_t max_block);
/* n bytes, NULL when out of memory (or n overflows). Not zeroed. */
void *pt_arena_alloc(pt_arena *a, size_t n);
/* The same, ending the process on out of memory as pt_xmalloc does (parsers' bookkeeping). */
void *pt_arena_xalloc(pt_arena *a, size_t n);
void pt_arena_free(pt_arena *a);

/* Test-only: PUNCTUM_TEST_ALLOC_LIMIT=N makes the engine's large allocations (backend memory,
 * the cpu backend's buffers) above N bytes fail as if memory were exhausted, so that the
 * out-of-memory path (halve the batch and retry, SPEC §7) can be tested. 1: refuse `bytes`. */
int pt_test_alloc_refused(size_t bytes);
/* Test-only: make the (k+1)-th pt_try_alloc / pt_try_calloc / pt_try_strdup / pt_try_realloc
 * from now fail as if memory were exhausted (once; k < 0 disarms), so that tests can walk every
 * allocation of a parser's error paths. Not thread-safe: for single-threaded unit tests. */
void pt_test_fail_alloc_after(long k);

/* Host memory this process may still use: MemAvailable (/proc/meminfo), or the cgroup's limit
 * minus its usage where that is lower. 0 when unknown. */
size_t pt_host_mem_available(void);

/* "11.2 GiB", "512 KiB", "37 B" into buf (returned). */
const char *pt_fmt_bytes(double bytes, char buf[32]);

/* Read a whole (small) file into memory, NUL-terminated. Refuses files larger than max_bytes. */
char *pt_read_file(const char *path, size_t max_bytes, size_t *len_out, pt_error *e);

/* Join a directory and a file name into a newly allocated path. */
char *pt_path_join(const char *dir, const char *name);

/* Monotonic wall clock in seconds. */
double pt_now(void);

/* float16 / bfloat16 <-> float32 conversion (round-to-nearest-even for the narrowing direction). */
float pt_f16_to_f32(uint16_t h);
float pt_bf16_to_f32(uint16_t h);
uint16_t pt_f32_to_f16(float f);
uint16_t pt_f32_to_bf16(float f);

#endif
