/* punctum — a pool of threads that encode HDF5 chunks (shuffle + deflate, io/chunkenc.h).
 * Internal to src/io/.
 *
 * One thread (the owner: the writer thread, merge) pushes jobs, collects finished ones and
 * writes them to HDF5; HDF5 is only ever called by the owner. The pool's threads never touch
 * HDF5. A pool of `threads` threads runs threads - 1 workers: the owner is the last one, and
 * encodes queued jobs itself (pt_cpool_help) whenever it would otherwise wait. */
#ifndef PUNCTUM_IO_CHUNKPOOL_H
#define PUNCTUM_IO_CHUNKPOOL_H

#include "io/chunkenc.h"

typedef struct pt_cjob {
    /* in: the chunk (the owner keeps src alive until the job comes back) */
    pt_chunk_fmt fmt;
    const void *src;
    int stored_planes;
    int probe; /* also decide stored planes for later chunks (-> probed) */
    /* out: out[0, out_len) (out_cap >= pt_chunk_bound); out_len 0: the encode failed */
    unsigned char *out;
    size_t out_cap, out_len;
    int64_t saturated; /* f16 values clamped */
    int probed;
    /* the owner's */
    int col, group, flags;
    int64_t row0;
    void *buf; /* the owner's raw buffer, returned with the job */
    struct pt_cjob *next;
} pt_cjob;

typedef struct pt_cpool pt_cpool;

/* Statistics: every thread's encoding time and bytes together. */
typedef struct {
    double busy_s;               /* summed over threads */
    int64_t bytes_in, bytes_out; /* stored (uncompressed) and encoded bytes */
    int64_t chunks;
    int threads;
} pt_cpool_stats;

/* threads >= 1 (clamped to 64); deflate level for libdeflate. NULL if out of resources. */
pt_cpool *pt_cpool_new(int threads, int level);
void pt_cpool_free(pt_cpool *p);

void pt_cpool_push(pt_cpool *p, pt_cjob *j);
/* A finished job, or NULL when none is waiting. */
pt_cjob *pt_cpool_pop_done(pt_cpool *p);
/* Encode one queued job on the calling thread; 0 if none was queued. */
int pt_cpool_help(pt_cpool *p);
/* Block until a finished job waits or no job is queued or running. */
void pt_cpool_wait(pt_cpool *p);
/* Jobs pushed and not yet popped. */
int pt_cpool_in_flight(pt_cpool *p);
void pt_cpool_get_stats(pt_cpool *p, pt_cpool_stats *s);

#endif
