/* punctum — the engine's growable buffers (buf.h). */
#include "engine/buf.h"

#include <stdlib.h>

void *pt_buf_grow(void *v, size_t *cap, size_t want, size_t elem, pt_error *e) {
    size_t n, bytes;
    if (pt_add_size(want, want / 4 + 16, &n) || pt_mul_size(n, elem, &bytes)) {
        free(v);
        *cap = 0;
        pt_fail(e, "buffer size overflow (%zu elements)", want);
        return NULL;
    }
    void *p = realloc(v, bytes);
    if (!p) {
        free(v);
        *cap = 0;
        pt_fail(e, "out of host memory allocating %zu bytes", bytes);
        return NULL;
    }
    *cap = n;
    return p;
}

void *pt_devbuf_fit(pt_backend *be, pt_devbuf *b, size_t bytes) {
    if (b->p && bytes <= b->bytes) return b->p;
    pt_devbuf_free(be, b);
    size_t want;
    if (pt_add_size(bytes, bytes / 4 + 64, &want)) {
        pt_backend_fail(be, 1, bytes, "%s backend: buffer size overflow", be->name);
        return NULL;
    }
    if ((b->p = be->alloc(be, want))) b->bytes = want;
    return b->p;
}

void pt_devbuf_free(pt_backend *be, pt_devbuf *b) {
    if (b->p) be->free(be, b->p);
    b->p = NULL;
    b->bytes = 0;
}
