/* punctum — rows on their way to the HDF5 file.
 *
 * The output is a set of datasets, each extendible along axis 0 (SPEC §5). A pt_colspec
 * describes one (path, element type, trailing dims); a pt_batch holds the rows that one
 * commit appends to every dataset. The sweep fills batches; the writer appends them. */
#ifndef PUNCTUM_TABLE_H
#define PUNCTUM_TABLE_H

#include "punctum/common.h"

typedef enum { PT_I8 = 0, PT_I32, PT_I64, PT_F32, PT_STR } pt_ctype;

typedef struct {
    const char *path;  /* "/pairs/kl_ab" */
    pt_ctype type;
    int ntrail;        /* number of trailing dims (0..2) */
    int trail[2];
} pt_colspec;

typedef struct {
    pt_colspec spec;
    size_t row_elems;  /* product of trailing dims */
    size_t n_rows, cap_rows;
    void *data;        /* n_rows * row_elems elements; PT_STR: char* (owned) */
} pt_col;

typedef struct {
    pt_col *cols;
    int n_cols;
    int64_t n_pairs;   /* pairs completed by this batch (committed_pairs advances by this) */
} pt_batch;

size_t pt_ctype_size(pt_ctype t);
void pt_batch_init(pt_batch *b, const pt_colspec *specs, int n);
void pt_batch_free(pt_batch *b);
/* Drop all rows (keeping capacity). */
void pt_batch_clear(pt_batch *b);
/* Append `rows` zeroed rows to column i; returns a pointer to the first new element. */
void *pt_col_append(pt_batch *b, int i, size_t rows);
/* Append one owned copy of a string to a PT_STR column. */
void pt_col_append_str(pt_batch *b, int i, const char *s);

#endif
