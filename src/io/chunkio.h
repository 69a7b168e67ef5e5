/* punctum — writing punctum's datasets chunk by chunk: the chunk shape, a column writer that
 * cuts rows into chunks, encodes them on a thread pool (io/chunkpool.h) and writes them with
 * H5Dwrite_chunk, and the raw copy of chunks between files (H5Dread_chunk / H5Dwrite_chunk).
 * Used by the writer (segments, compaction, the final file), merge and the MPI view.
 * Internal to src/io/.
 *
 * Rows are numbered globally: a column's chunks start at global rows that are multiples of its
 * chunk rows, and a target dataset holds the global rows from its `row0` (a multiple of the
 * chunk rows) on. That is what lets the chunks of consecutive segments be copied unchanged into
 * one file: they sit on the same grid. */
#ifndef PUNCTUM_IO_CHUNKIO_H
#define PUNCTUM_IO_CHUNKIO_H

#include <hdf5.h>

#include "io/chunkpool.h"
#include "punctum/table.h"

/* Deflate level of every chunk punctum writes. Measured on attention statistics (see
 * benchmarks/RESULTS.md, "HDF5 writer"): level 1 keeps >= 99% of level 6's ratio on them at
 * several times its speed. */
#define PT_DEFLATE_LEVEL 1

/* Chunk shape of a column whose elements take esz bytes in the file: [rows, trailing dims],
 * with [rows, layers, heads] columns split into groups of layers (see chunkio.c). */
void pt_chunk_dims(const pt_colspec *s, size_t esz, hsize_t dims[3]);

/* A dataset in punctum's layout with pt_chunk_dims chunks: extendible along axis 0, shuffle +
 * deflate (PT_DEFLATE_LEVEL). `rows` initial rows. */
hid_t pt_h5_create_col(hid_t file, const pt_colspec *s, hid_t ftype, int64_t rows);

/* ---- the column writer ------------------------------------------------------------------- */

typedef struct pt_cwriter pt_cwriter;

typedef struct {
    int threads;  /* encoding threads, the owner included (>= 1) */
    int max_jobs; /* chunks in flight (0: 4 per thread, at least 8) */
} pt_cwriter_opts;

pt_cwriter *pt_cwriter_new(const pt_cwriter_opts *o);
void pt_cwriter_free(pt_cwriter *cw);

/* A column of s->path with s's trailing dims (s->type is not used): elements of src_esz bytes
 * in memory, stored as they are, or (f32_to_f16) float32 stored as binary16. Not for strings.
 * Returns its index. */
int pt_cwriter_add(pt_cwriter *cw, const pt_colspec *s, size_t src_esz, int f32_to_f16);
/* Chunk rows of a column. */
int64_t pt_cwriter_chunk_rows(const pt_cwriter *cw, int col);
/* Start the column at global row `row` (a new output: 0; a resumed one: its committed rows,
 * with the rows of the unfinished chunk, [aligned, row), passed in `carry`: src elements). */
void pt_cwriter_start(pt_cwriter *cw, int col, int64_t row, const void *carry);
/* The global row of the chunk being filled (a multiple of the chunk rows). */
int64_t pt_cwriter_chunk_row0(const pt_cwriter *cw, int col);
/* Rows appended so far (global: the column's end). */
int64_t pt_cwriter_end(const pt_cwriter *cw, int col);
/* Where encoded chunks go: dataset ds (owned by the caller), whose row 0 is global row row0
 * (a multiple of the chunk rows, <= pt_cwriter_chunk_row0). -1: nowhere (flushes skip the
 * column; its rows wait). Waits for the chunks in flight (they go to the old target). */
void pt_cwriter_target(pt_cwriter *cw, int col, hid_t ds, int64_t row0);
/* A second dataset that also receives every complete chunk (and the unfinished ones of a
 * pt_cwriter_flush(cw, 1)): the file being built while segments come and go. -1: none. */
void pt_cwriter_mirror(pt_cwriter *cw, int col, hid_t ds, int64_t row0);
/* Append n rows (src elements, row-major). Returns 0, or -1 after a write failure (sticky). */
int pt_cwriter_append(pt_cwriter *cw, int col, const void *rows, size_t n);
/* Every column's rows so far into its target: the unfinished chunk too (as an edge chunk; it
 * stays in memory and is written again, with more rows, into the next target); extents set.
 * to_mirror: also into the mirrors (the last flush). Returns 0 or -1. */
int pt_cwriter_flush(pt_cwriter *cw, int to_mirror);
/* Idle time: write the finished chunks and encode one queued chunk on this thread. Returns 1 if
 * it did anything (call again), 0 if there was nothing to do. */
int pt_cwriter_work(pt_cwriter *cw);
/* Encoding statistics (may be NULL); f16 values clamped at +-65504 in complete chunks and in
 * the unfinished chunks as last flushed (may be NULL). */
void pt_cwriter_stats(pt_cwriter *cw, pt_cpool_stats *s, int64_t *sat_full, int64_t *sat_partial);
/* Time the owner spent writing chunks with HDF5 (s). */
double pt_cwriter_write_s(const pt_cwriter *cw);

/* ---- copies ---------------------------------------------------------------------------------- */

/* Copy global rows [lo, hi) from src (holding global rows from src_row0) to dst (from dst_row0;
 * its extent already covers hi). Whole chunks are copied as they are, compressed, when both
 * datasets have the same chunk shape, type size and filters and [lo, hi) falls on whole chunks
 * of both (hi may end in an edge chunk when hi is the end of dst); otherwise values are copied
 * (strings always). Stops with -2 when *abort_flag is set; -1 on failure. *raw (may be NULL)
 * grows by the bytes copied compressed. */
int pt_h5_copy_range(hid_t src, int64_t src_row0, hid_t dst, int64_t dst_row0, int64_t lo,
                     int64_t hi, volatile const int *abort_flag, int64_t *raw);

#endif
