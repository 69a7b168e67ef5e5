/* punctum — the writer's state, shared by writer.c (segments, view, commits, thread) and
 * writer_copy.c (compaction and the final file). Internal to src/io/. */
#ifndef PUNCTUM_IO_WRITER_INTERNAL_H
#define PUNCTUM_IO_WRITER_INTERNAL_H

#include <hdf5.h>
#include <pthread.h>

#include "io/chunkio.h"
#include "punctum/writer.h"

enum { QUEUE_SLOTS = 2 };

/* A committed segment: dataset i holds the global rows [row0[i], end[i]). */
typedef struct {
    char *name;
    int level;
    int64_t pairs;
    int64_t *row0, *end; /* [n_specs] */
} seg_t;

/* Merging segments [first, first + count) into one new segment (compaction, incremental,
 * between batches). */
typedef struct {
    int active;
    int first, count, level;
    char *tmp, *dest, *name;
    hid_t file;
    hid_t *src_files; /* [count] */
    int spec, src;    /* progress: dataset, source segment */
    int64_t next_row; /* progress in the source segment's rows (global) */
    hid_t src_ds, dst_ds;
    int64_t *row0, *end; /* [n_specs] the new file's rows */
} copyjob;

typedef struct {
    char *name;
    int64_t commit_no;
    double t;
} trash_t;

struct pt_writer {
    char *path, *dir, *parts, *parts_rel, *view_tmp;
    int n_specs;
    pt_colspec *specs;
    int *col; /* [n_specs] column in cw, -1 for strings */
    pt_attr *attrs;
    int n_attrs;
    int store_f16;
    hid_t str_type, f16_type;
    double commit_s;
    int fanin;
    int fsync; /* 0 (PUNCTUM_FSYNC=0): no fsync; a kill stays safe, a power cut may not */
    volatile const int *abort_flag;
    double test_delay; /* PUNCTUM_WRITER_DELAY: crash tests slow compaction and finishing */
    double test_idle_delay; /* PUNCTUM_TEST_WRITER_IDLE_DELAY: a pause when encoding found nothing
                               to do, the lock released (test_writer: close racing the thread) */
    pt_cwriter *cw;

    /* committed state */
    seg_t *segs;
    int n_segs, cap_segs;
    int64_t committed_pairs;
    int64_t *committed_rows;
    pt_inpos committed_pos;
    int64_t next_id, n_commits;
    double last_commit;
    int64_t sat_base;              /* f16 clamps before this process (resume) */
    int64_t sat_full, sat_partial; /* as of the last commit */

    /* the open (uncommitted) segment */
    hid_t seg_file;
    hid_t *seg_dsets;
    char *seg_tmp, *seg_name;
    int64_t seg_pairs;
    int64_t *seg_row0, *seg_end; /* [n_specs] global rows */
    pt_inpos seg_pos;

    copyjob job;
    int64_t raw_copied;

    /* the final file, built alongside the segments (OUT.h5.parts/final.h5.tmp): every complete
     * chunk and every string as it comes, so that finishing writes only the unfinished chunks,
     * the attributes and a rename. After a --resume it lacks the rows committed before (below
     * fin_row0): those are copied, as chunks, from the segments at the end. */
    char *fin_tmp;
    hid_t fin_file;
    hid_t *fin_dsets;
    int64_t *fin_row0;
    trash_t *trash;
    int n_trash, cap_trash;

    /* thread */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pt_batch queue[QUEUE_SLOTS];
    pt_inpos qpos[QUEUE_SLOTS];
    pt_inpos next_pos;
    int q_head, q_len;
    int closing;
    int failed;
    pt_error err;
    double busy, final_s, stall_s, t_open;
};

/* writer.c */
void pt_wr_test_pause(const pt_writer *w);
char *pt_wr_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
hid_t pt_wr_file_type(const pt_writer *w, pt_ctype t);
int pt_wr_fail(pt_writer *w, const char *what, const char *file);
int pt_wr_publish(pt_writer *w, const char *tmp, const char *dest, const char *dir);
int pt_wr_root_attrs(pt_writer *w, hid_t f, int complete, int with_segments);
int pt_wr_view(pt_writer *w);
void pt_wr_trash_add(pt_writer *w, const char *name);
void pt_wr_trash_sweep(pt_writer *w, int all);
/* The global rows [lo, hi) that segment k of segs[0, n) gives dataset i: its rows up to where a
 * later segment starts. */
void pt_wr_seg_span(const seg_t *segs, int n, int k, int i, int64_t *lo, int64_t *hi);
/* Read global rows [lo, hi) of dataset i from the committed segments (memory type mt). */
int pt_wr_read_rows(pt_writer *w, int i, hid_t mt, int64_t lo, int64_t hi, void *buf);

/* writer_copy.c */
int pt_wr_job_begin(pt_writer *w, copyjob *j, int first, int count);
/* Copy up to max_bytes (0: all). 1: done, 0: more to do, -1: error, -2: aborted. */
int pt_wr_job_step(pt_writer *w, copyjob *j, size_t max_bytes);
int pt_wr_job_finish(pt_writer *w, copyjob *j);
void pt_wr_job_release(copyjob *j, int remove_tmp);
int pt_wr_maybe_start_merge(pt_writer *w);
int pt_wr_merge_step(pt_writer *w);
/* The final file's rows below fin_row0, from the segments. 0, -1, or -2 (aborted). */
int pt_wr_catch_up(pt_writer *w);

#endif
