/* punctum — the HDF5 writer (SPEC §5, §7): crash-safe commits.
 *
 * HDF5 does not survive a crash in the middle of a metadata write, so a running sweep never
 * modifies a file that a reader (or a resume) relies on:
 *
 *   OUT.h5.parts/seg-NNNNNN.h5   immutable segments: the rows of one or more commits, written
 *                                as seg-NNNNNN.h5.tmp, flushed, fsync'ed, closed, then renamed
 *   OUT.h5                       a view: one HDF5 virtual dataset per output dataset mapping
 *                                the segments' rows in order, plus the root attributes;
 *                                written as OUT.h5.tmp, fsync'ed and rename()d over OUT.h5
 *
 * A commit is that rename: OUT.h5 always opens and shows exactly the committed rows (its
 * `committed_pairs` attribute, written last, counts them). Rows arrive in batches (pt_batch)
 * on a writer thread that appends them to the open segment while the engine computes the next
 * batch; it commits at most every few seconds (PUNCTUM_COMMIT_SECONDS, default 5), and merges
 * runs of equal-sized segments into larger ones in the background (a log-structured
 * compaction), so the number of segments stays logarithmic in the run's length and a commit
 * costs the same after an hour as after a minute. When the run ends, the segments are copied
 * into one self-contained OUT.h5 (again via OUT.h5.tmp + rename) and the parts removed.
 *
 * A `kill -9` at any moment leaves the last view; --resume (pt_outstate) continues from it. */
#ifndef PUNCTUM_WRITER_H
#define PUNCTUM_WRITER_H

#include "punctum/table.h"

typedef struct {
    const char *key;
    const char *str; /* string attribute when non-NULL, else integer `num` */
    int64_t num;
} pt_attr;

/* Where in the input the rows of a commit end: the byte offset just after the last record
 * of the commit, its 1-based line number and the 0-based index of the next record. */
typedef struct {
    int64_t offset, line, index;
} pt_inpos;

/* The committed state of an existing output (read by pt_outstate_read, io/outstate.h). */
typedef struct pt_outstate pt_outstate;

typedef struct {
    const char *path; /* OUT.h5 */
    const pt_colspec *specs;
    int n_specs;
    const pt_attr *attrs; /* root attributes (committed_pairs and state added) */
    int n_attrs;
    int store_f16;                  /* float columns stored as IEEE half precision */
    double commit_seconds;          /* < 0: PUNCTUM_COMMIT_SECONDS or 5 */
    const pt_outstate *resume;      /* NULL: a new output (replacing any old one and its parts) */
    volatile const int *abort_flag; /* set (e.g. by a signal): the final copy stops early */
} pt_writer_opts;

typedef struct pt_writer pt_writer;

pt_writer *pt_writer_open(const pt_writer_opts *o, pt_error *e);
/* The input position after the last record of the batch submitted next. */
void pt_writer_set_input_pos(pt_writer *w, pt_inpos pos);
/* Hand a batch to the writer thread. The batch's rows are taken; *b is given back empty
 * (with another buffer's capacity), ready to fill. After a write failure the writer drops
 * what it is given (returns 0 all the same): the caller checks pt_writer_ok after a batch and
 * stops; pt_writer_close returns the error. The last commit is never affected. */
int pt_writer_submit(pt_writer *w, pt_batch *b, pt_error *e);
int pt_writer_ok(pt_writer *w);
/* Wait for the queued batches and commit them. finish = 1: the run is complete; consolidate
 * into one self-contained file and remove the parts (if the abort flag stops that, the
 * committed view stays and 1 is returned). finish = 0: leave the view (resumable).
 * Returns 0, 1 (consolidation interrupted) or -1 (write error: message in e; the last good
 * commit stays). */
typedef struct {
    double busy_s;  /* the writer thread writing and committing (overlapped with compute) */
    double final_s; /* the final consolidation (after the last batch, not overlapped) */
    int64_t commits;
} pt_writer_stats;
int pt_writer_close(pt_writer *w, int finish, pt_writer_stats *stats, pt_error *e);

/* Helpers shared with inspect/merge: HDF5 string attribute read (malloc'd) and int64 read. */
char *pt_h5_attr_str(long long loc_id, const char *name);
int pt_h5_attr_i64(long long loc_id, const char *name, int64_t *out);

#endif
