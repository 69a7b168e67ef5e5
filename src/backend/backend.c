/* punctum — what every backend shares: the sticky failure status (backend.h, "Errors"). */
#include "punctum/backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void pt_backend_fail(pt_backend *be, int out_of_memory, size_t bytes, const char *fmt, ...) {
    pt_backend_status *s = &be->status;
    if (s->failed) return; /* the first failure is the cause; later ones are consequences */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    va_end(ap);
    s->failed = 1;
    s->out_of_memory = out_of_memory;
    s->bytes = bytes;
}

int pt_backend_take_error(pt_backend *be, pt_error *e, pt_backend_status *st) {
    if (!be->status.failed) return 0;
    if (st) *st = be->status;
    pt_fail(e, "%s", be->status.msg);
    memset(&be->status, 0, sizeof be->status);
    return -1;
}

int pt_backend_refuse_alloc(pt_backend *be, size_t bytes, const char *what) {
    if (!pt_test_alloc_refused(bytes)) return 0;
    pt_backend_fail(be, 1, bytes,
                    "%s backend: out of memory allocating %zu bytes for %s "
                    "(PUNCTUM_TEST_ALLOC_LIMIT)",
                    be->name, bytes, what);
    return 1;
}
