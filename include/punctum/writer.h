/* punctum — the HDF5 writer (SPEC §5, §7, §8): crash-safe commits at the speed of a GPU.
 *
 * HDF5 does not survive a crash in the middle of a metadata write, so a running sweep never
 * modifies a file that a reader (or a resume) relies on:
 *
 *   OUT.h5.parts/seg-NNNNNN.h5   immutable segments: the rows of one or more commits, written
 *                                as seg-NNNNNN.h5.tmp, flushed, fsync'ed, closed, then renamed
 *   OUT.h5                       a view: one HDF5 virtual dataset per output dataset mapping
 *                                the segments' rows in order, plus the root attributes;
 *                                written as OUT.h5.tmp, fsync'ed and rename()d over OUT.h5
 *   OUT.h5.parts/final.h5.tmp    the self-contained file, written alongside; nobody reads it
 *                                until the run is complete and it is renamed over OUT.h5
 *
 * A commit is that rename: OUT.h5 always opens and shows exactly the committed rows (its
 * `committed_pairs` attribute, written last, counts them). Rows arrive in batches (pt_batch)
 * on a writer thread while the engine computes the next batch; it commits at most every few
 * seconds (PUNCTUM_COMMIT_SECONDS, default 5).
 *
 * Speed (SPEC §8): the writer thread cuts every numeric column into chunks of the final file's
 * shape (io/chunkio.h), a pool of threads encodes them exactly as HDF5's shuffle + deflate
 * filters would (libdeflate; io/chunkenc.h), and the writer thread stores them with
 * H5Dwrite_chunk. Chunks sit on one grid of global rows: each segment's datasets start at a
 * chunk boundary (attribute `row0`), and the unfinished chunk at a commit is written as an edge
 * chunk and again, with more rows, into the next segment (the view maps every row from the
 * last segment that holds it). So merging segments (a log-structured compaction in the
 * background, keeping the number of segments logarithmic in the run's length) copies compressed
 * chunks as they are (H5Dread_chunk / H5Dwrite_chunk). Every complete chunk (and every string)
 * also goes to the final file as it is written: finishing a run writes the unfinished chunks and
 * the attributes and renames the file into place; a resumed run first copies, as chunks, the
 * rows committed before it. Nothing is decompressed or compressed again (strings, variable
 * length, are copied as values). While a run lasts, its output takes about twice its size.
 *
 * --store f16: finite values beyond binary16's range are stored as +-65504 and counted (root
 * attribute `f16_saturated`, and pt_writer_stats), never as infinities.
 *
 * A `kill -9` at any moment leaves the last view; --resume (pt_outstate) continues from it.
 *
 * Environment: PUNCTUM_COMMIT_SECONDS (5), PUNCTUM_FSYNC=0 (no fsync), PUNCTUM_COMPACT_FANIN (8);
 * for benchmarks and tests: PUNCTUM_CHUNK_KIB, PUNCTUM_CHUNK_LAYERS (chunk shape, io/chunkio.c),
 * PUNCTUM_WRITER_DELAY (seconds paused before each compaction dataset and finishing step). */
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
    int threads;                    /* chunk-encoding threads, the writer thread included
                                       (<= 0: 1); see pt_writer_auto_threads */
} pt_writer_opts;

/* Encoding threads for a process whose compute keeps `compute_threads` cores busy (0: all of
 * them; < 0: none, e.g. merge) out of this node's cores shared by `local_ranks` processes: the
 * cores left over, at least 1 and at most 16. */
int pt_writer_auto_threads(int compute_threads, int local_ranks);

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
/* Wait for the queued batches and commit them. finish = 1: the run is complete; finish the
 * self-contained file, put it in place of the view and remove the parts (if the abort flag
 * stops that, the committed view stays and 1 is returned). finish = 0: leave the view
 * (resumable). Returns 0, 1 (finishing interrupted) or -1 (write error: message in e; the last
 * good commit stays). */
typedef struct {
    double busy_s;  /* the writer thread writing and committing (overlapped with compute) */
    double final_s; /* finishing the final file (after the last batch, not overlapped) */
    int64_t commits;
    double stall_s;        /* the caller blocked in pt_writer_submit (the writer was behind) */
    double encode_s;       /* chunk encoding, summed over threads */
    int threads;           /* encoding threads */
    int64_t bytes_in;      /* uncompressed bytes of the encoded chunks */
    int64_t bytes_out;     /* their encoded size */
    int64_t raw_copied;    /* compressed bytes copied as chunks (compaction, a resumed run's
                              final file) */
    int64_t f16_saturated; /* --store f16: values stored as +-65504 */
} pt_writer_stats;
int pt_writer_close(pt_writer *w, int finish, pt_writer_stats *stats, pt_error *e);

/* "writer: 2 threads at 410 MB/s each (312 MB -> 251 MB), busy 0.8 s (4.1% of 19.2 s), waited
 * 0.0 s, final file 0.3 s" for the end-of-run line. */
void pt_writer_summary(const pt_writer_stats *s, double wall_s, char *buf, size_t n);

/* Helpers shared with inspect/merge/resume: HDF5 string attribute read (malloc'd) and int64
 * read (io/h5util.c). */
char *pt_h5_attr_str(long long loc_id, const char *name);
int pt_h5_attr_i64(long long loc_id, const char *name, int64_t *out);

#endif
