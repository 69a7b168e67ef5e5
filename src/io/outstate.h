/* punctum — the committed state of an existing output file, for --resume (SPEC §4, §7) and
 * for merge: its root attributes, whether it is complete, and (for an interrupted run) the
 * segments its view maps and the input position to continue from. */
#ifndef PUNCTUM_IO_OUTSTATE_H
#define PUNCTUM_IO_OUTSTATE_H

#include "punctum/writer.h"

struct pt_outstate {
    int complete; /* run_complete == 1: a finished, self-contained file */
    int64_t committed_pairs;
    pt_inpos pos; /* where the input continues */
    /* root attributes, ints rendered as decimal strings (all malloc'd) */
    char **attr_keys, **attr_vals;
    int n_attrs;
    /* an interrupted run: its segments (names inside the parts directory), in row order */
    int n_segs;
    char **seg_names;
    int *seg_levels;
    int64_t *seg_pairs;
    /* [n_segs][n_specs]: the global rows [row0, end) a segment's dataset holds (its `row0`
     * attribute; without one, the previous segment's end). A row belongs to the last segment
     * that holds it. */
    int64_t *seg_row0, *seg_end;
    int64_t *rows; /* [n_specs] committed rows per dataset */
    int n_specs;
};

/* Read the state of `path` against the schema `specs`. Returns 0, or -1 with a one-line
 * message (missing file, not a punctum file, a segment missing, schema mismatch). */
int pt_outstate_read(const char *path, const pt_colspec *specs, int n_specs, pt_outstate *st,
                     pt_error *e);
void pt_outstate_free(pt_outstate *st);
/* A root attribute's value as read (NULL if absent). */
const char *pt_outstate_attr(const pt_outstate *st, const char *key);

/* Fingerprints: "size:HEAD:TAIL" of a file (FNV-1a 64 of its first and last MiB); of a model
 * directory, over its *.json and *.safetensors files. malloc'd; NULL + e on error. */
char *pt_file_fingerprint(const char *path, pt_error *e);
char *pt_model_fingerprint(const char *dir, pt_error *e);

/* All root attributes of an open HDF5 file as strings (for agreement checks). */
int pt_h5_read_root_attrs(long long file, char ***keys, char ***vals, int *n);

#endif
