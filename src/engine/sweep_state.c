/* punctum — helpers on the sweep's state (sweep_state.h): output rows and their rollback,
 * scratch buffers whose failure counts as out of memory. */
#include "engine/sweep_state.h"

#include <stdlib.h>

void *pt_sweep_rows(pt_sweep *S, int id, size_t rows) {
    return pt_col_append(&S->batch, S->col[id], rows);
}

void pt_sweep_str(pt_sweep *S, int id, const char *s) {
    pt_col_append_str(&S->batch, S->col[id], s);
}

void pt_sweep_mark_here(const pt_sweep *S, pt_sweep_mark *m) {
    for (int i = 0; i < S->batch.n_cols; i++) m->col_rows[i] = S->batch.cols[i].n_rows;
    m->counts = S->rows;
}

void pt_sweep_rollback(pt_sweep *S, const pt_sweep_mark *m) {
    for (int i = 0; i < S->batch.n_cols; i++) {
        pt_col *c = &S->batch.cols[i];
        if (c->n_rows <= m->col_rows[i]) continue;
        if (c->spec.type == PT_STR) { /* the rows own their strings */
            char **s = c->data;
            for (size_t k = m->col_rows[i] * c->row_elems; k < c->n_rows * c->row_elems; k++)
                free(s[k]);
        }
        c->n_rows = m->col_rows[i];
    }
    S->rows = m->counts;
}

int pt_sweep_fit_failed(pt_sweep *S, int rc) {
    if (rc) pt_backend_fail(S->be, 1, 0, "%s", S->fit_err.msg);
    return rc;
}

void *pt_sweep_dev(pt_sweep *S, pt_devbuf *b, size_t bytes) {
    return pt_devbuf_fit(S->be, b, bytes);
}
