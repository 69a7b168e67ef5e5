/* punctum — shared small utilities. */
#include "punctum/common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int pt_fail(pt_error *e, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int pt_fail_prefix(pt_error *e, const char *fmt, ...) {
    if (e) {
        char prefix[256], joined[sizeof prefix + sizeof e->msg + 2];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        snprintf(joined, sizeof joined, "%s: %s", prefix, e->msg);
        snprintf(e->msg, sizeof e->msg, "%.*s", (int)sizeof e->msg - 1, joined);
    }
    return -1;
}

static void oom(size_t n) {
    fprintf(stderr, "punctum: out of memory (allocating %zu bytes)\n", n);
    exit(1);
}

void *pt_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *pt_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    return p;
}

void *pt_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *pt_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = pt_xmalloc(n);
    memcpy(d, s, n);
    return d;
}

static long g_fail_alloc_after = -1; /* pt_test_fail_alloc_after */

void pt_test_fail_alloc_after(long k) {
    g_fail_alloc_after = k;
}

/* 1 when the test hook says this allocation fails (then disarms it) */
static int test_alloc_fails(void) {
    return g_fail_alloc_after >= 0 && g_fail_alloc_after-- == 0;
}

void *pt_try_alloc(size_t n, const char *what, pt_error *e) {
    void *p = test_alloc_fails() ? NULL : malloc(n ? n : 1);
    if (!p) pt_fail(e, "out of memory allocating %zu bytes for %s", n, what);
    return p;
}

void *pt_try_realloc(void *p, size_t n, const char *what, pt_error *e) {
    void *q = test_alloc_fails() ? NULL : realloc(p, n ? n : 1);
    if (!q) pt_fail(e, "out of memory allocating %zu bytes for %s", n, what);
    return q;
}

char *pt_try_strdup(const char *s, const char *what, pt_error *e) {
    const size_t n = strlen(s) + 1;
    char *d = pt_try_alloc(n, what, e);
    if (d) memcpy(d, s, n);
    return d;
}

struct pt_arena_blk {
    struct pt_arena_blk *next;
    size_t used, cap;
};

void pt_arena_init(pt_arena *a, size_t first_block, size_t max_block) {
    memset(a, 0, sizeof *a);
    a->first_block = first_block;
    a->max_block = max_block;
}

void *pt_arena_alloc(pt_arena *a, size_t n) {
    if (n > SIZE_MAX - 64) return NULL;
    n = (n + 15) & ~(size_t)15;
    if (!a->blk || a->blk->used + n > a->blk->cap) {
        size_t cap = a->blk ? a->blk->cap * 2 : a->first_block;
        if (cap > a->max_block) cap = a->max_block;
        if (cap < n) cap = n;
        pt_arena_blk *b = malloc(sizeof *b + 16 + cap); /* + 16: room to align the start */
        if (!b) return NULL;
        b->next = a->blk, b->used = 0, b->cap = cap;
        a->blk = b;
    }
    char *base = (char *)(a->blk + 1);
    base += (16 - ((uintptr_t)base & 15)) & 15;
    void *p = base + a->blk->used;
    a->blk->used += n;
    a->total += n;
    return p;
}

void *pt_arena_xalloc(pt_arena *a, size_t n) {
    void *p = pt_arena_alloc(a, n);
    if (!p) oom(n);
    return p;
}

void pt_arena_free(pt_arena *a) {
    while (a->blk) {
        pt_arena_blk *next = a->blk->next;
        free(a->blk);
        a->blk = next;
    }
    a->total = 0;
}

void *pt_try_calloc(size_t n, size_t size, const char *what, pt_error *e) {
    size_t bytes;
    if (pt_mul_size(n, size, &bytes)) {
        pt_fail(e, "%s: size overflow (%zu x %zu bytes)", what, n, size);
        return NULL;
    }
    void *p = test_alloc_fails() ? NULL : calloc(bytes ? bytes : 1, 1);
    if (!p) pt_fail(e, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

int pt_test_alloc_refused(size_t bytes) {
    static size_t limit;
    static int read;
    if (!read) { /* read once; the tests set it for the whole process */
        const char *s = getenv("PUNCTUM_TEST_ALLOC_LIMIT");
        char *end;
        unsigned long long v = s && *s ? strtoull(s, &end, 10) : 0;
        limit = s && *s && !*end && v > 0 ? (size_t)v : SIZE_MAX;
        read = 1;
    }
    return bytes > limit;
}

/* One "Key: N kB" value of /proc/meminfo, in bytes (0 if absent). */
static uint64_t meminfo_value(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    uint64_t v = 0;
    const size_t klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            v = strtoull(line + klen + 1, NULL, 10) * 1024;
            break;
        }
    fclose(f);
    return v;
}

/* A number from a one-line file ("max" and missing files: 0). */
static uint64_t file_number(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char buf[64] = "";
    uint64_t v = 0;
    if (fgets(buf, sizeof buf, f) && buf[0] >= '0' && buf[0] <= '9') v = strtoull(buf, NULL, 10);
    fclose(f);
    return v;
}

size_t pt_host_mem_available(void) {
    uint64_t avail = meminfo_value("MemAvailable");
    /* cgroup v2 (memory.max), else v1 (memory.limit_in_bytes): a batch job's real limit */
    uint64_t lim = file_number("/sys/fs/cgroup/memory.max"), used = 0;
    if (lim)
        used = file_number("/sys/fs/cgroup/memory.current");
    else if ((lim = file_number("/sys/fs/cgroup/memory/memory.limit_in_bytes")))
        used = file_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    if (lim && lim < ((uint64_t)1 << 60)) {
        const uint64_t left = lim > used ? lim - used : 0;
        if (!avail || left < avail) avail = left;
    }
    return avail > SIZE_MAX ? SIZE_MAX : (size_t)avail;
}

const char *pt_fmt_bytes(double bytes, char buf[32]) {
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    while (bytes >= 1024 && u < 5) bytes /= 1024, u++;
    snprintf(buf, 32, u == 0 ? "%.0f %s" : bytes < 10 ? "%.1f %s" : "%.0f %s", bytes, unit[u]);
    return buf;
}

char *pt_read_file(const char *path, size_t max_bytes, size_t *len_out, pt_error *e) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        pt_fail(e, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        pt_fail(e, "%s: not a regular file", path);
        return NULL;
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        pt_fail(e, "%s: file too large (%lld bytes, limit %zu)", path, (long long)st.st_size,
                max_bytes);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    char *buf = pt_try_alloc(n + 1, "its contents", e);
    if (!buf) {
        fclose(f);
        pt_fail_prefix(e, "%s", path); /* "PATH: problem", as the other errors here */
        return NULL;
    }
    if (n && fread(buf, 1, n, f) != n) {
        fclose(f);
        free(buf);
        pt_fail(e, "%s: read error", path);
        return NULL;
    }
    fclose(f);
    buf[n] = 0;
    if (len_out) *len_out = n;
    return buf;
}

char *pt_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = pt_xmalloc(a + b + 2);
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

double pt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float pt_bf16_to_f32(uint16_t h) {
    return bits_to_f32((uint32_t)h << 16);
}

float pt_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    return bits_to_f32(u);
}

uint16_t pt_f32_to_bf16(float f) {
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

uint16_t pt_f32_to_f16(float f) {
    uint32_t u = f32_to_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t au = u & 0x7fffffffu;
    if (au > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (au >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* overflow (incl. rounding) -> inf */
    if (au < 0x38800000u) {                                   /* subnormal or zero in f16 */
        if (au < 0x33000000u) return (uint16_t)sign;
        uint32_t exp = au >> 23, mant = (au & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - exp; /* 14..24 */
        uint32_t r = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((au >> 13) - ((127 - 15) << 10));
    uint32_t rem = au & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
    return (uint16_t)(sign | r);
}
