/* punctum — the HDF5 writer (SPEC §5).
 *
 * Every dataset is chunked, extendible along axis 0, gzip + shuffle compressed. Rows arrive
 * in commits (pt_batch); a writer thread appends them while the engine computes the next
 * batch, and each commit ends by writing the root attribute `committed_pairs` and flushing,
 * so a reader never trusts rows past it. */
#ifndef PUNCTUM_WRITER_H
#define PUNCTUM_WRITER_H

#include "punctum/table.h"

typedef struct {
    const char *key;
    const char *str;  /* string attribute when non-NULL, else integer `num` */
    int64_t num;
} pt_attr;

typedef struct pt_writer pt_writer;

/* Create the file (truncating an existing one) with empty datasets and the root attributes.
 * store_f16: float columns are stored as IEEE half precision. */
pt_writer *pt_writer_create(const char *path, const pt_colspec *specs, int n_specs,
                            const pt_attr *attrs, int n_attrs, int store_f16, pt_error *e);
/* Hand a batch to the writer thread. The batch's rows are taken; *b is given back empty
 * (with another buffer's capacity), ready to fill. Fails if an earlier write failed. */
int pt_writer_submit(pt_writer *w, pt_batch *b, pt_error *e);
/* Wait for all commits, close the file. Returns the first write error, if any. */
int pt_writer_close(pt_writer *w, pt_error *e);
/* Seconds the writer thread spent writing (for the <= 5% overlap check). */
double pt_writer_busy_seconds(const pt_writer *w);

/* Helpers shared with inspect/merge: HDF5 string attribute read (malloc'd) and int64 read. */
char *pt_h5_attr_str(long long loc_id, const char *name);
int pt_h5_attr_i64(long long loc_id, const char *name, int64_t *out);

#endif
