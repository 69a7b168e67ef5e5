/* punctum — pt_arena (common.h): 16-byte alignment, growth of the blocks up to their cap, a
 * request larger than a block, contents kept across growth, the byte count, and reuse after
 * pt_arena_free. Runs under ASan and valgrind with the other unit tests (no overlap, no leak). */
#include "punctum/common.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int g_fail;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            g_fail++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

int main(void) {
    pt_arena a;
    pt_arena_init(&a, 64, 256);
    unsigned char *p[200];
    size_t want = 0;
    for (int i = 0; i < 200; i++) { /* sizes 1 .. 40, then one past a whole block */
        const size_t n = i == 150 ? 1000 : (size_t)(i % 40) + 1;
        p[i] = pt_arena_alloc(&a, n);
        CHECK(p[i] != NULL, "allocation %d of %zu bytes failed", i, n);
        if (!p[i]) return 1;
        CHECK((uintptr_t)p[i] % 16 == 0, "allocation %d not 16-byte aligned", i);
        memset(p[i], i & 0xff, n);
        want += (n + 15) & ~(size_t)15;
    }
    CHECK(a.total == want, "total %zu, expected %zu", a.total, want);
    for (int i = 0; i < 200; i++) { /* nothing overwritten by later allocations */
        const size_t n = i == 150 ? 1000 : (size_t)(i % 40) + 1;
        for (size_t k = 0; k < n; k++)
            if (p[i][k] != (unsigned char)(i & 0xff)) {
                CHECK(0, "allocation %d byte %zu overwritten", i, k);
                break;
            }
    }
    CHECK(pt_arena_alloc(&a, SIZE_MAX - 8) == NULL, "an overflowing request must fail");
    pt_arena_free(&a);
    CHECK(a.total == 0 && a.blk == NULL, "free leaves an empty arena");
    void *q = pt_arena_xalloc(&a, 10);
    CHECK(q != NULL && (uintptr_t)q % 16 == 0, "reuse after free");
    pt_arena_free(&a);
    printf("test_arena: %s\n", g_fail ? "FAILED" : "ok");
    return g_fail ? 1 : 0;
}
