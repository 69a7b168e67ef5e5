/* punctum — growable column buffers for one commit's rows. */
#include "punctum/table.h"

#include <stdlib.h>
#include <string.h>

size_t pt_ctype_size(pt_ctype t) {
    switch (t) {
    case PT_I8: return 1;
    case PT_I32: return 4;
    case PT_I64: return 8;
    case PT_F32: return 4;
    case PT_STR: return sizeof(char *);
    }
    return 0;
}

void pt_batch_init(pt_batch *b, const pt_colspec *specs, int n) {
    memset(b, 0, sizeof *b);
    b->cols = pt_xcalloc((size_t)n, sizeof(pt_col));
    b->n_cols = n;
    for (int i = 0; i < n; i++) {
        pt_col *c = &b->cols[i];
        c->spec = specs[i];
        c->row_elems = 1;
        for (int k = 0; k < specs[i].ntrail; k++) c->row_elems *= (size_t)specs[i].trail[k];
    }
}

void pt_batch_clear(pt_batch *b) {
    for (int i = 0; i < b->n_cols; i++) {
        pt_col *c = &b->cols[i];
        if (c->spec.type == PT_STR) {
            char **s = c->data;
            for (size_t k = 0; k < c->n_rows * c->row_elems; k++) free(s[k]);
        }
        c->n_rows = 0;
    }
    b->n_pairs = 0;
}

void pt_batch_free(pt_batch *b) {
    if (!b->cols) return;
    pt_batch_clear(b);
    for (int i = 0; i < b->n_cols; i++) free(b->cols[i].data);
    free(b->cols);
    memset(b, 0, sizeof *b);
}

void *pt_col_append(pt_batch *b, int i, size_t rows) {
    pt_col *c = &b->cols[i];
    const size_t esz = pt_ctype_size(c->spec.type) * c->row_elems;
    if (c->n_rows + rows > c->cap_rows || !c->data) { /* never hand out NULL, even for 0 rows */
        size_t cap = c->cap_rows ? c->cap_rows : 64;
        while (cap < c->n_rows + rows) cap *= 2;
        c->data = pt_xrealloc(c->data, cap * esz);
        c->cap_rows = cap;
    }
    char *p = (char *)c->data + c->n_rows * esz;
    memset(p, 0, rows * esz);
    c->n_rows += rows;
    return p;
}

void pt_col_append_str(pt_batch *b, int i, const char *s) {
    char **p = pt_col_append(b, i, 1);
    *p = pt_xstrdup(s ? s : "");
}
