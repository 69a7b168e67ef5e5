/* punctum — the engine's growable buffers: typed host arrays with one growth helper, and
 * device buffers; every failure is returned, never fatal. */
#ifndef PUNCTUM_ENGINE_BUF_H
#define PUNCTUM_ENGINE_BUF_H

#include "punctum/backend.h"

/* Host arrays with room for `cap` elements (contents kept when they grow). */
typedef struct {
    int32_t *v;
    size_t cap;
} pt_i32buf;
typedef struct {
    int64_t *v;
    size_t cap;
} pt_i64buf;
typedef struct {
    float *v;
    size_t cap;
} pt_f32buf;
typedef struct {
    double *v;
    size_t cap;
} pt_f64buf;
typedef struct {
    char *v;
    size_t cap;
} pt_chrbuf;
typedef struct {
    pt_segment *v;
    size_t cap;
} pt_segbuf;

/* The array v (capacity *cap elements of elem bytes) reallocated for at least `want` elements
 * (with headroom); on failure v is freed, *cap = 0, NULL returned and e set. */
void *pt_buf_grow(void *v, size_t *cap, size_t want, size_t elem, pt_error *e);

/* Make typed buffer b hold n elements: 0, or -1 with e set (b then empty). */
#define PT_BUF_FIT(b, n, e)                                                                        \
    ((size_t)(n) <= (b)->cap && (b)->v                                             ? 0             \
     : ((b)->v = pt_buf_grow((b)->v, &(b)->cap, (size_t)(n), sizeof *(b)->v, (e))) ? 0             \
                                                                                   : -1)

#define PT_BUF_FREE(b) (free((b)->v), (b)->v = NULL, (b)->cap = 0)

/* A buffer in the backend's memory. */
typedef struct {
    void *p;
    size_t bytes;
} pt_devbuf;

/* b->p with room for `bytes` (contents not kept); NULL when the backend is out of memory (its
 * status says so). */
void *pt_devbuf_fit(pt_backend *be, pt_devbuf *b, size_t bytes);
void pt_devbuf_free(pt_backend *be, pt_devbuf *b);

#endif
