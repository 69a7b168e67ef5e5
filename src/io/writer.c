/* punctum — crash-safe HDF5 writer: immutable segments on a grid of chunks, an atomically
 * replaced virtual-dataset view, a pool encoding chunks, background compaction and a final file
 * of copied chunks (see writer.h for the design; copies in writer_copy.c). */
#include "punctum/writer.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/h5util.h"
#include "io/outstate.h"
#include "io/writer_internal.h"

enum {
    STR_DEFLATE = 1,   /* strings in segments: HDF5's own gzip */
    DEFAULT_FANIN = 8, /* compaction: merge FANIN equal-level segments into one */
};
#define TRASH_GRACE_S 10.0 /* superseded segments outlive their last view this long */

/* ---- small helpers ----------------------------------------------------------------------- */

char *pt_wr_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = pt_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

hid_t pt_wr_file_type(const pt_writer *w, pt_ctype t) {
    switch (t) {
    case PT_I8:
        return H5T_STD_I8LE;
    case PT_I32:
        return H5T_STD_I32LE;
    case PT_I64:
        return H5T_STD_I64LE;
    case PT_F32:
        return w->store_f16 ? w->f16_type : H5T_IEEE_F32LE;
    case PT_STR:
        return w->str_type;
    }
    return -1;
}

/* A failure message naming the file, with the system's reason when there is one. */
int pt_wr_fail(pt_writer *w, const char *what, const char *file) {
    const int err = errno;
    const char *why = "";
    if (err == ENOSPC)
        why = ": no space left on device";
    else if (err == EFBIG)
        why = ": file too large (file size limit)";
    else if (err == EDQUOT)
        why = ": disk quota exceeded";
    else if (err == EIO)
        why = ": I/O error";
    else if (err == EROFS)
        why = ": read-only file system";
    else if (err == EACCES || err == EPERM)
        why = ": permission denied";
    return pt_fail(
        &w->err, "%s: %s %s failed%s; the last commit (%lld pairs) is intact (--resume continues)",
        w->path, what, file, why, (long long)w->committed_pairs);
}

/* VDS source file names are printf-like templates: a literal % is written %%. */
static char *vds_name(const pt_writer *w, const char *seg) {
    char *raw = pt_wr_printf("%s/%s", w->parts_rel, seg);
    size_t n = 0;
    for (const char *p = raw; *p; p++) n += *p == '%' ? 2 : 1;
    char *out = pt_xmalloc(n + 1), *q = out;
    for (const char *p = raw; *p; p++) {
        if (*p == '%') *q++ = '%';
        *q++ = *p;
    }
    *q = 0;
    free(raw);
    return out;
}

static void seg_push(pt_writer *w, seg_t s) {
    if (w->n_segs == w->cap_segs) {
        w->cap_segs = w->cap_segs ? 2 * w->cap_segs : 16;
        w->segs = pt_xrealloc(w->segs, (size_t)w->cap_segs * sizeof(seg_t));
    }
    w->segs[w->n_segs++] = s;
}

void pt_wr_seg_span(const seg_t *segs, int n, int k, int i, int64_t *lo, int64_t *hi) {
    *lo = segs[k].row0[i];
    *hi = segs[k].end[i];
    for (int j = k + 1; j < n; j++)
        if (segs[j].row0[i] < *hi) *hi = segs[j].row0[i];
    if (*hi < *lo) *hi = *lo;
}

void pt_wr_trash_add(pt_writer *w, const char *name) {
    if (w->n_trash == w->cap_trash) {
        w->cap_trash = w->cap_trash ? 2 * w->cap_trash : 16;
        w->trash = pt_xrealloc(w->trash, (size_t)w->cap_trash * sizeof(trash_t));
    }
    w->trash[w->n_trash++] = (trash_t){pt_xstrdup(name), w->n_commits, pt_now()};
}

/* Delete superseded segments once no recent view maps them (all = at the end). */
void pt_wr_trash_sweep(pt_writer *w, int all) {
    int k = 0;
    for (int i = 0; i < w->n_trash; i++) {
        trash_t *t = &w->trash[i];
        if (all || (w->n_commits >= t->commit_no + 2 && pt_now() - t->t >= TRASH_GRACE_S)) {
            char *p = pt_path_join(w->parts, t->name);
            unlink(p);
            free(p);
            free(t->name);
        } else {
            w->trash[k++] = *t;
        }
    }
    w->n_trash = k;
}

/* Test hooks: sleep for s seconds (s <= 0: not at all). */
static void test_sleep(double s) {
    if (s <= 0) return;
    const struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    nanosleep(&ts, NULL);
}

/* PUNCTUM_WRITER_DELAY (seconds): a pause before each dataset a compaction merges and each
 * step of finishing the final file, so that crash tests can kill the process there. */
void pt_wr_test_pause(const pt_writer *w) {
    test_sleep(w->test_delay);
}

/* fsync the file, rename it into place, fsync the directory. */
int pt_wr_publish(pt_writer *w, const char *tmp, const char *dest, const char *dir) {
    if (w->fsync && pt_fsync_path(tmp)) return pt_wr_fail(w, "fsync of", tmp);
    if (rename(tmp, dest)) return pt_wr_fail(w, "rename of", tmp);
    if (w->fsync && pt_fsync_dir(dir)) return pt_wr_fail(w, "fsync of directory", dir);
    return 0;
}

/* Read global rows [lo, hi) of dataset i from the committed segments. */
int pt_wr_read_rows(pt_writer *w, int i, hid_t mt, int64_t lo, int64_t hi, void *buf) {
    const size_t row_bytes = H5Tget_size(mt) *
                             (size_t)(w->specs[i].ntrail > 0 ? w->specs[i].trail[0] : 1) *
                             (size_t)(w->specs[i].ntrail > 1 ? w->specs[i].trail[1] : 1);
    for (int k = 0; k < w->n_segs && lo < hi; k++) {
        int64_t a, b;
        pt_wr_seg_span(w->segs, w->n_segs, k, i, &a, &b);
        if (b <= lo || a >= hi) continue;
        const int64_t from = lo > a ? lo : a, to = hi < b ? hi : b;
        char *p = pt_path_join(w->parts, w->segs[k].name);
        hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t d = f >= 0 ? H5Dopen2(f, w->specs[i].path, H5P_DEFAULT) : -1;
        int rc = d < 0 ? -1
                       : pt_h5_read_rows(d, mt, from - w->segs[k].row0[i], to - from,
                                         (char *)buf + (size_t)(from - lo) * row_bytes);
        if (d >= 0) H5Dclose(d);
        if (f >= 0) H5Fclose(f);
        if (rc) {
            pt_wr_fail(w, "reading", p);
            free(p);
            return -1;
        }
        free(p);
    }
    return 0;
}

/* ---- the view --------------------------------------------------------------------------- */

static int64_t saturated(const pt_writer *w) {
    return w->sat_base + w->sat_full + w->sat_partial;
}

int pt_wr_root_attrs(pt_writer *w, hid_t f, int complete, int with_segments) {
    for (int i = 0; i < w->n_attrs; i++)
        if (pt_h5_put_attr(f, &w->attrs[i])) return -1;
    if (with_segments) {
        size_t len = 1;
        for (int k = 0; k < w->n_segs; k++) len += strlen(w->segs[k].name) + 1;
        char *list = pt_xcalloc(1, len);
        for (int k = 0; k < w->n_segs; k++) {
            if (k) strcat(list, "\n");
            strcat(list, w->segs[k].name);
        }
        int rc = pt_h5_put_str(f, "parts", w->parts_rel) || pt_h5_put_str(f, "segments", list);
        free(list);
        if (rc) return -1;
    }
    if (w->store_f16 && pt_h5_put_i64(f, "f16_saturated", saturated(w))) return -1;
    const pt_inpos pos = w->committed_pos;
    if (pt_h5_put_i64(f, "input_offset", pos.offset) || pt_h5_put_i64(f, "input_line", pos.line) ||
        pt_h5_put_i64(f, "input_index", pos.index) || pt_h5_put_i64(f, "run_complete", complete))
        return -1;
    return pt_h5_put_i64(f, "committed_pairs", w->committed_pairs); /* last */
}

/* One virtual dataset: every segment's span of dataset i. */
static hid_t view_dataset(pt_writer *w, hid_t f, int i, char **src_names) {
    const pt_colspec *s = &w->specs[i];
    const int64_t total = w->committed_rows[i];
    if (total == 0) return pt_h5_create_col(f, s, pt_wr_file_type(w, s->type), 0);
    const int rank = 1 + s->ntrail;
    hsize_t dims[3] = {(hsize_t)total, 0, 0};
    for (int k = 0; k < s->ntrail; k++) dims[k + 1] = (hsize_t)s->trail[k];
    hid_t vspace = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int rc = 0;
    for (int k = 0; k < w->n_segs && !rc; k++) {
        int64_t lo, hi;
        pt_wr_seg_span(w->segs, w->n_segs, k, i, &lo, &hi);
        if (hi <= lo) continue;
        const seg_t *g = &w->segs[k];
        hsize_t start[3] = {(hsize_t)lo, 0, 0}, count[3] = {(hsize_t)(hi - lo), dims[1], dims[2]};
        hsize_t sdims[3] = {(hsize_t)(g->end[i] - g->row0[i]), dims[1], dims[2]}, zero[3] = {0};
        hid_t sspace = H5Screate_simple(rank, sdims, NULL);
        if (H5Sselect_hyperslab(sspace, H5S_SELECT_SET, zero, NULL, count, NULL) < 0 ||
            H5Sselect_hyperslab(vspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
            H5Pset_virtual(dcpl, vspace, src_names[k], s->path, sspace) < 0)
            rc = -1;
        H5Sclose(sspace);
    }
    H5Sselect_all(vspace);
    hid_t ds = rc || pt_h5_ensure_groups(f, s->path)
                   ? -1
                   : H5Dcreate2(f, s->path, pt_wr_file_type(w, s->type), vspace, H5P_DEFAULT, dcpl,
                                H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(vspace);
    return ds;
}

int pt_wr_view(pt_writer *w) {
    unlink(w->view_tmp);
    hid_t f = H5Fcreate(w->view_tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return pt_wr_fail(w, "creating", w->view_tmp);
    int rc = pt_wr_root_attrs(w, f, 0, 1);
    char **src_names = pt_xcalloc((size_t)w->n_segs + 1, sizeof(char *));
    for (int k = 0; k < w->n_segs; k++) src_names[k] = vds_name(w, w->segs[k].name);
    for (int i = 0; i < w->n_specs && !rc; i++) {
        hid_t ds = view_dataset(w, f, i, src_names);
        if (ds < 0)
            rc = -1;
        else
            H5Dclose(ds);
    }
    for (int k = 0; k < w->n_segs; k++) free(src_names[k]);
    free(src_names);
    if (H5Fclose(f) < 0) rc = -1;
    if (rc) {
        int err = errno;
        unlink(w->view_tmp);
        errno = err;
        return pt_wr_fail(w, "writing", w->view_tmp);
    }
    return pt_wr_publish(w, w->view_tmp, w->path, w->dir);
}

/* ---- the open segment ----------------------------------------------------------------------- */

/* Numeric datasets are created at once (chunks go to them from the pool); string datasets at
 * their first rows, with chunks of a few batches' rows (a full-size chunk for a handful of
 * rows would be compressed whole at every commit; strings are copied as values later). */
static int seg_dataset(pt_writer *w, int i, int64_t first_rows) {
    if (w->seg_dsets[i] >= 0) return 0;
    const pt_colspec *s = &w->specs[i];
    if (w->col[i] >= 0) {
        w->seg_dsets[i] = pt_h5_create_col(w->seg_file, s, pt_wr_file_type(w, s->type), 0);
    } else {
        int64_t cr = first_rows * 4;
        if (cr < 64) cr = 64;
        w->seg_dsets[i] =
            pt_h5_create_rows(w->seg_file, s, pt_wr_file_type(w, s->type), STR_DEFLATE, 0, cr);
    }
    if (w->seg_dsets[i] < 0 || pt_h5_put_i64(w->seg_dsets[i], "row0", w->seg_row0[i])) return -1;
    if (w->col[i] >= 0) pt_cwriter_target(w->cw, w->col[i], w->seg_dsets[i], w->seg_row0[i]);
    return 0;
}

static int seg_open(pt_writer *w) {
    w->seg_name = pt_wr_printf("seg-%06lld.h5", (long long)w->next_id++);
    w->seg_tmp = pt_wr_printf("%s/%s.tmp", w->parts, w->seg_name);
    w->seg_file = H5Fcreate(w->seg_tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->seg_file < 0) return pt_wr_fail(w, "creating", w->seg_tmp);
    for (int i = 0; i < w->n_specs; i++) {
        w->seg_dsets[i] = -1;
        /* numeric datasets start at their unfinished chunk: it is written again here */
        w->seg_row0[i] =
            w->col[i] >= 0 ? pt_cwriter_chunk_row0(w->cw, w->col[i]) : w->committed_rows[i];
        w->seg_end[i] = w->committed_rows[i];
        if (w->col[i] >= 0 && seg_dataset(w, i, 0)) return pt_wr_fail(w, "writing", w->seg_tmp);
    }
    w->seg_pairs = 0;
    return 0;
}

static void seg_discard(pt_writer *w) {
    for (int i = 0; i < w->n_specs; i++)
        if (w->col[i] >= 0) pt_cwriter_target(w->cw, w->col[i], -1, 0);
    if (w->seg_file >= 0) {
        for (int i = 0; i < w->n_specs; i++)
            if (w->seg_dsets[i] >= 0) H5Dclose(w->seg_dsets[i]);
        H5Fclose(w->seg_file);
    }
    if (w->seg_tmp) unlink(w->seg_tmp);
    for (int i = 0; i < w->n_specs; i++) w->seg_dsets[i] = -1;
    w->seg_file = -1;
    free(w->seg_tmp);
    free(w->seg_name);
    w->seg_tmp = w->seg_name = NULL;
}

/* Rows of strings at global row `row` of dataset d (holding the global rows from row0). */
static int put_strings(pt_writer *w, hid_t d, int64_t row0, int64_t row, const pt_col *c) {
    hsize_t dims[1] = {(hsize_t)(row - row0 + (int64_t)c->n_rows)};
    if (H5Dset_extent(d, dims) < 0) return -1;
    return pt_h5_write_rows(d, w->str_type, row - row0, (int64_t)c->n_rows, c->data);
}

/* Strings: written by HDF5 into the segment and the final file. */
static int append_strings(pt_writer *w, int i, const pt_col *c) {
    if (seg_dataset(w, i, (int64_t)c->n_rows)) return -1;
    return put_strings(w, w->seg_dsets[i], w->seg_row0[i], w->seg_end[i], c) ||
           put_strings(w, w->fin_dsets[i], 0, w->seg_end[i], c);
}

static int append_batch(pt_writer *w, pt_batch *b, pt_inpos pos) {
    if (w->seg_file < 0 && seg_open(w)) return -1;
    for (int i = 0; i < b->n_cols; i++) {
        const pt_col *c = &b->cols[i];
        if (c->n_rows == 0) continue;
        const int rc = w->col[i] >= 0 ? pt_cwriter_append(w->cw, w->col[i], c->data, c->n_rows)
                                      : append_strings(w, i, c);
        if (rc) return pt_wr_fail(w, "writing", w->seg_tmp);
        w->seg_end[i] += (int64_t)c->n_rows;
    }
    w->seg_pairs += b->n_pairs;
    w->seg_pos = pos;
    return 0;
}

/* ---- commits ------------------------------------------------------------------------------ */

/* Close the open segment: every chunk written, every dataset there. */
static int seg_close(pt_writer *w) {
    int rc = pt_cwriter_flush(w->cw, 0);
    pt_cwriter_stats(w->cw, NULL, &w->sat_full, &w->sat_partial);
    if (!rc && (pt_h5_put_i64(w->seg_file, "seg_pairs", w->seg_pairs) ||
                pt_h5_put_i64(w->seg_file, "seg_level", 0)))
        rc = -1;
    for (int i = 0; i < w->n_specs; i++) {
        if (!rc && seg_dataset(w, i, 0)) rc = -1;
        if (w->col[i] >= 0) pt_cwriter_target(w->cw, w->col[i], -1, 0);
        if (w->seg_dsets[i] >= 0 && H5Dclose(w->seg_dsets[i]) < 0) rc = -1;
        w->seg_dsets[i] = -1;
    }
    if (H5Fclose(w->seg_file) < 0) rc = -1;
    w->seg_file = -1;
    return rc ? pt_wr_fail(w, "writing", w->seg_tmp) : 0;
}

static int commit(pt_writer *w) {
    if (w->seg_file < 0) return 0;
    if (seg_close(w)) return -1;
    char *dest = pt_path_join(w->parts, w->seg_name);
    int rc = pt_wr_publish(w, w->seg_tmp, dest, w->parts);
    free(dest);
    if (rc) return -1;
    const size_t cells = (size_t)w->n_specs * sizeof(int64_t);
    seg_t s = {w->seg_name, 0, w->seg_pairs, pt_xmalloc(cells), pt_xmalloc(cells)};
    memcpy(s.row0, w->seg_row0, cells);
    memcpy(s.end, w->seg_end, cells);
    seg_push(w, s);
    free(w->seg_tmp);
    w->seg_tmp = w->seg_name = NULL;
    w->committed_pairs += w->seg_pairs;
    memcpy(w->committed_rows, w->seg_end, cells);
    w->committed_pos = w->seg_pos;
    if (pt_wr_view(w)) return -1;
    w->n_commits++;
    w->last_commit = pt_now();
    pt_wr_trash_sweep(w, 0);
    return pt_wr_maybe_start_merge(w);
}

/* ---- the final file -------------------------------------------------------------------------- */

/* Created at the start: the numeric columns' chunks go to it as they are written to segments. */
static int fin_open(pt_writer *w) {
    w->fin_tmp = pt_path_join(w->parts, "final.h5.tmp");
    unlink(w->fin_tmp);
    w->fin_file = H5Fcreate(w->fin_tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->fin_file < 0) return pt_wr_fail(w, "creating", w->fin_tmp);
    for (int i = 0; i < w->n_specs; i++) {
        const pt_colspec *s = &w->specs[i];
        w->fin_dsets[i] = pt_h5_create_col(w->fin_file, s, pt_wr_file_type(w, s->type), 0);
        if (w->fin_dsets[i] < 0) return pt_wr_fail(w, "creating a dataset in", w->fin_tmp);
        const int c = w->col[i];
        w->fin_row0[i] = c >= 0 ? pt_cwriter_chunk_row0(w->cw, c) : w->committed_rows[i];
        if (c >= 0) pt_cwriter_mirror(w->cw, c, w->fin_dsets[i], 0);
    }
    return 0;
}

static void fin_discard(pt_writer *w) {
    if (w->cw)
        for (int i = 0; i < w->n_specs; i++)
            if (w->col[i] >= 0) pt_cwriter_mirror(w->cw, w->col[i], -1, 0);
    for (int i = 0; i < w->n_specs && w->fin_dsets; i++)
        if (w->fin_dsets[i] >= 0) H5Dclose(w->fin_dsets[i]), w->fin_dsets[i] = -1;
    if (w->fin_file >= 0) H5Fclose(w->fin_file);
    w->fin_file = -1;
    if (w->fin_tmp) unlink(w->fin_tmp);
}

/* Everything is committed: the unfinished chunks, the rows from before a --resume, the
 * attributes, then the rename over the view. 0, 1 (aborted by a signal) or -1. */
static int fin_finish(pt_writer *w) {
    pt_wr_test_pause(w);
    int rc = pt_cwriter_flush(w->cw, 1) ? pt_wr_fail(w, "writing", w->fin_tmp) : 0;
    pt_wr_test_pause(w);
    for (int i = 0; i < w->n_specs && !rc; i++) {
        if (w->col[i] >= 0) continue;
        hsize_t dims[1] = {(hsize_t)w->committed_rows[i]}; /* strings of a resumed run */
        if (H5Dset_extent(w->fin_dsets[i], dims) < 0) rc = pt_wr_fail(w, "writing", w->fin_tmp);
    }
    if (!rc) rc = pt_wr_catch_up(w);
    if (rc == -2) return 1;
    pt_wr_test_pause(w);
    if (!rc && pt_wr_root_attrs(w, w->fin_file, 1, 0))
        rc = pt_wr_fail(w, "writing attributes of", w->fin_tmp);
    for (int i = 0; i < w->n_specs; i++) {
        if (w->col[i] >= 0) pt_cwriter_mirror(w->cw, w->col[i], -1, 0);
        if (H5Dclose(w->fin_dsets[i]) < 0 && !rc) rc = pt_wr_fail(w, "writing", w->fin_tmp);
        w->fin_dsets[i] = -1;
    }
    herr_t cr = H5Fclose(w->fin_file);
    w->fin_file = -1;
    if (cr < 0 && !rc) rc = pt_wr_fail(w, "closing", w->fin_tmp);
    if (rc) return rc;
    return pt_wr_publish(w, w->fin_tmp, w->path, w->dir);
}

/* ---- the writer thread ------------------------------------------------------------------- */

static int take_batch(pt_writer *w) {
    pt_batch *b = &w->queue[w->q_head];
    const pt_inpos pos = w->qpos[w->q_head];
    const int failed = w->failed;
    pthread_mutex_unlock(&w->mu);
    const double t0 = pt_now();
    int rc = failed ? -1 : append_batch(w, b, pos);
    if (!rc && pt_now() - w->last_commit >= w->commit_s) rc = commit(w);
    if (!rc && w->job.active) rc = pt_wr_merge_step(w);
    /* a safety valve: compaction fell behind (the writer is the bottleneck); catch up before
     * taking more batches so the view stays small */
    while (!rc && w->job.active && w->n_segs > 8 * w->fanin) rc = pt_wr_merge_step(w);
    const double dt = pt_now() - t0;
    pt_batch_clear(b);
    pthread_mutex_lock(&w->mu);
    w->busy += dt;
    if (rc && !failed) w->failed = 1;
    w->q_head = (w->q_head + 1) % QUEUE_SLOTS;
    w->q_len--;
    pthread_cond_broadcast(&w->cv);
    return rc;
}

/* Run f (commit, a compaction step or encoding) outside the lock, timed. 0: it did nothing. */
static int run_unlocked(pt_writer *w, int (*f)(pt_writer *)) {
    pthread_mutex_unlock(&w->mu);
    const double t0 = pt_now();
    const int rc = f(w);
    pthread_mutex_lock(&w->mu);
    if (rc) w->busy += pt_now() - t0;
    if (rc < 0) w->failed = 1;
    return rc;
}

static int do_commit(pt_writer *w) {
    return commit(w) ? -1 : 1;
}
static int do_merge(pt_writer *w) {
    return pt_wr_merge_step(w) ? -1 : 1;
}
static int do_encode(pt_writer *w) {
    const int rc = pt_cwriter_work(w->cw);
    if (!rc) test_sleep(w->test_idle_delay);
    return rc;
}

static void wait_until(pt_writer *w, double due) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double wait = due - pt_now();
    if (wait < 0.001) wait = 0.001;
    ts.tv_sec += (time_t)wait;
    ts.tv_nsec += (long)((wait - floor(wait)) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
}

static void *writer_main(void *arg) {
    pt_writer *w = arg;
    pt_h5_quiet(); /* HDF5's error printing is per thread */
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (w->q_len > 0) {
            take_batch(w);
            continue;
        }
        if (w->closing) break;
        /* between batches: encode queued chunks (this thread is one of the pool's). That
         * releases the lock even when there was nothing to encode: a batch or pt_writer_close
         * may have come meanwhile, their wake-up already sent, so look again before sleeping
         * (a close right after the open hung here, waiting for a wake-up that had passed). */
        if (!w->failed && run_unlocked(w, do_encode)) continue;
        if (w->q_len > 0 || w->closing) continue;
        const double due = w->last_commit + w->commit_s;
        if (!w->failed && w->seg_file >= 0 && pt_now() >= due) {
            run_unlocked(w, do_commit);
            continue;
        }
        if (!w->failed && w->job.active) {
            run_unlocked(w, do_merge);
            continue;
        }
        if (!w->failed && w->seg_file >= 0)
            wait_until(w, due);
        else
            pthread_cond_wait(&w->cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- opening -------------------------------------------------------------------------------- */

static void writer_free(pt_writer *w) {
    if (w->job.active || w->job.file >= 0) pt_wr_job_release(&w->job, 1);
    if (w->cw) seg_discard(w);
    fin_discard(w);
    pt_cwriter_free(w->cw);
    for (int k = 0; k < w->n_segs; k++) {
        free(w->segs[k].name);
        free(w->segs[k].row0);
        free(w->segs[k].end);
    }
    for (int k = 0; k < w->n_trash; k++) free(w->trash[k].name);
    free(w->trash);
    free(w->segs);
    for (int i = 0; i < w->n_specs; i++) free((char *)w->specs[i].path);
    for (int i = 0; i < w->n_attrs; i++) {
        free((char *)w->attrs[i].key);
        free((char *)w->attrs[i].str);
    }
    free(w->attrs);
    free(w->specs);
    free(w->col);
    free(w->seg_dsets);
    free(w->fin_dsets);
    free(w->fin_row0);
    free(w->fin_tmp);
    free(w->seg_row0);
    free(w->seg_end);
    free(w->committed_rows);
    if (w->str_type >= 0) H5Tclose(w->str_type);
    if (w->f16_type >= 0) H5Tclose(w->f16_type);
    free(w->path);
    free(w->dir);
    free(w->parts);
    free(w->parts_rel);
    free(w->view_tmp);
    free(w);
}

static double env_double(const char *name, double dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    double d = strtod(v, &end);
    return end != v && d >= 0 ? d : dflt;
}

/* Remove from the parts directory everything the view does not map (unfinished .tmp files,
 * segments superseded by a compaction, a commit that never reached the view). */
static int clean_parts(pt_writer *w) {
    DIR *d = opendir(w->parts);
    if (!d) return -1;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        int keep = 0;
        for (int k = 0; k < w->n_segs && !keep; k++) keep = !strcmp(de->d_name, w->segs[k].name);
        long long id;
        if (keep && sscanf(de->d_name, "seg-%lld.h5", &id) == 1 && id >= w->next_id)
            w->next_id = id + 1;
        if (!keep) {
            char *p = pt_path_join(w->parts, de->d_name);
            unlink(p);
            free(p);
        }
    }
    closedir(d);
    return 0;
}

static pt_writer *writer_new(const pt_writer_opts *o) {
    pt_writer *w = pt_xcalloc(1, sizeof *w);
    w->str_type = pt_h5_str_type();
    w->f16_type = pt_h5_f16_type();
    w->seg_file = -1;
    w->job.file = w->job.src_ds = w->job.dst_ds = -1;
    w->path = pt_xstrdup(o->path);
    w->dir = pt_dirname(o->path);
    w->parts = pt_wr_printf("%s.parts", o->path);
    w->parts_rel = pt_wr_printf("%s.parts", pt_basename(o->path));
    w->view_tmp = pt_wr_printf("%s.tmp", o->path);
    w->n_specs = o->n_specs;
    w->specs = pt_xmalloc((size_t)o->n_specs * sizeof(pt_colspec));
    for (int i = 0; i < o->n_specs; i++) {
        w->specs[i] = o->specs[i];
        w->specs[i].path = pt_xstrdup(o->specs[i].path);
    }
    w->n_attrs = o->n_attrs;
    w->attrs = pt_xcalloc((size_t)o->n_attrs + 1, sizeof(pt_attr));
    for (int i = 0; i < o->n_attrs; i++) {
        w->attrs[i].key = pt_xstrdup(o->attrs[i].key);
        w->attrs[i].str = o->attrs[i].str ? pt_xstrdup(o->attrs[i].str) : NULL;
        w->attrs[i].num = o->attrs[i].num;
    }
    w->store_f16 = o->store_f16;
    w->commit_s =
        o->commit_seconds >= 0 ? o->commit_seconds : env_double("PUNCTUM_COMMIT_SECONDS", 5.0);
    w->fanin = (int)env_double("PUNCTUM_COMPACT_FANIN", DEFAULT_FANIN);
    w->fsync = env_double("PUNCTUM_FSYNC", 1) != 0;
    w->test_delay = env_double("PUNCTUM_WRITER_DELAY", 0);
    w->test_idle_delay = env_double("PUNCTUM_TEST_WRITER_IDLE_DELAY", 0);
    w->abort_flag = o->abort_flag;
    const size_t n = (size_t)o->n_specs;
    w->col = pt_xmalloc(n * sizeof(int) + 1);
    w->seg_dsets = pt_xmalloc(n * sizeof(hid_t) + 1);
    w->fin_dsets = pt_xmalloc(n * sizeof(hid_t) + 1);
    for (size_t i = 0; i < n; i++) w->seg_dsets[i] = w->fin_dsets[i] = -1;
    w->fin_file = -1;
    w->fin_row0 = pt_xcalloc(n + 1, sizeof(int64_t));
    w->seg_row0 = pt_xcalloc(n + 1, sizeof(int64_t));
    w->seg_end = pt_xcalloc(n + 1, sizeof(int64_t));
    w->committed_rows = pt_xcalloc(n + 1, sizeof(int64_t));
    w->last_commit = w->t_open = pt_now();
    return w;
}

/* The chunk writer: one column per numeric dataset. */
static int cwriter_setup(pt_writer *w, int threads) {
    const pt_cwriter_opts co = {threads, 0};
    w->cw = pt_cwriter_new(&co);
    if (!w->cw) return pt_fail(&w->err, "%s: cannot start the writer's threads", w->path);
    for (int i = 0; i < w->n_specs; i++) {
        const pt_colspec *s = &w->specs[i];
        w->col[i] = s->type == PT_STR ? -1
                                      : pt_cwriter_add(w->cw, s, pt_ctype_size(s->type),
                                                       w->store_f16 && s->type == PT_F32);
    }
    return 0;
}

/* --resume: the committed segments, and every column's unfinished chunk back in memory. */
static int resume_state(pt_writer *w, const pt_outstate *st) {
    const size_t cells = (size_t)w->n_specs * sizeof(int64_t);
    for (int k = 0; k < st->n_segs; k++) {
        seg_t s = {pt_xstrdup(st->seg_names[k]), st->seg_levels[k], st->seg_pairs[k],
                   pt_xmalloc(cells), pt_xmalloc(cells)};
        memcpy(s.row0, st->seg_row0 + (size_t)k * w->n_specs, cells);
        memcpy(s.end, st->seg_end + (size_t)k * w->n_specs, cells);
        seg_push(w, s);
    }
    w->committed_pairs = st->committed_pairs;
    memcpy(w->committed_rows, st->rows, cells);
    w->committed_pos = st->pos;
    /* the unfinished chunks come back clamped: encoding them again clamps nothing */
    const char *sat = pt_outstate_attr(st, "f16_saturated");
    w->sat_base = sat ? atoll(sat) : 0;
    for (int i = 0; i < w->n_specs; i++) {
        const int c = w->col[i];
        if (c < 0) continue;
        const int64_t end = w->committed_rows[i], R = pt_cwriter_chunk_rows(w->cw, c);
        const int64_t lo = end / R * R;
        const pt_colspec *s = &w->specs[i];
        size_t bytes = pt_ctype_size(s->type) * (size_t)(end - lo);
        for (int k = 0; k < s->ntrail; k++) bytes *= (size_t)s->trail[k];
        void *carry = pt_xmalloc(bytes + 1);
        hid_t mt = s->type == PT_I8    ? H5T_NATIVE_INT8
                   : s->type == PT_I32 ? H5T_NATIVE_INT32
                   : s->type == PT_I64 ? H5T_NATIVE_INT64
                                       : H5T_NATIVE_FLOAT;
        const int rc = pt_wr_read_rows(w, i, mt, lo, end, carry);
        if (!rc) pt_cwriter_start(w->cw, c, end, carry);
        free(carry);
        if (rc) return -1;
    }
    return 0;
}

static int open_resume(pt_writer *w, const pt_outstate *st, pt_error *e) {
    if (resume_state(w, st)) return pt_fail(e, "%s", w->err.msg);
    if (mkdir(w->parts, 0777) && errno != EEXIST)
        return pt_fail(e, "%s: cannot create %s: %s", w->path, w->parts, strerror(errno));
    clean_parts(w);
    unlink(w->view_tmp);
    if (pt_wr_maybe_start_merge(w)) return pt_fail(e, "%s", w->err.msg);
    return 0;
}

/* A new output: stale parts of an earlier run go first, then an empty view. */
static int open_new(pt_writer *w, pt_error *e) {
    unlink(w->view_tmp);
    if (pt_remove_dir_files(w->parts))
        return pt_fail(e, "%s: cannot remove the old %s: %s", w->path, w->parts, strerror(errno));
    if (mkdir(w->parts, 0777))
        return pt_fail(e, "%s: cannot create %s: %s", w->path, w->parts, strerror(errno));
    if (pt_wr_view(w)) {
        pt_remove_dir_files(w->parts);
        return pt_fail(e, "%s", w->err.msg);
    }
    return 0;
}

pt_writer *pt_writer_open(const pt_writer_opts *o, pt_error *e) {
    pt_h5_quiet();
    pt_writer *w = writer_new(o);
    if (cwriter_setup(w, o->threads) ||
        (o->resume ? open_resume(w, o->resume, e) : open_new(w, e)) ||
        (fin_open(w) && pt_fail(e, "%s", w->err.msg))) {
        if (!w->cw) pt_fail(e, "%s", w->err.msg);
        writer_free(w);
        return NULL;
    }
    for (int k = 0; k < QUEUE_SLOTS; k++) pt_batch_init(&w->queue[k], w->specs, w->n_specs);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    /* the writer thread takes no signals: the main thread's handler sees them all */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_create(&w->thread, NULL, writer_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return w;
}

/* ---- public API ----------------------------------------------------------------------------- */

int pt_writer_auto_threads(int compute_threads, int local_ranks) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    cores /= local_ranks > 0 ? local_ranks : 1;
    const long compute = compute_threads > 0 ? compute_threads : compute_threads == 0 ? cores : 0;
    long t = cores - compute;
    return t < 1 ? 1 : t > 16 ? 16 : (int)t;
}

int pt_writer_ok(pt_writer *w) {
    pthread_mutex_lock(&w->mu);
    const int ok = !w->failed;
    pthread_mutex_unlock(&w->mu);
    return ok;
}

void pt_writer_set_input_pos(pt_writer *w, pt_inpos pos) {
    pthread_mutex_lock(&w->mu);
    w->next_pos = pos;
    pthread_mutex_unlock(&w->mu);
}

int pt_writer_submit(pt_writer *w, pt_batch *b, pt_error *e) {
    (void)e;
    pthread_mutex_lock(&w->mu);
    const double t0 = pt_now();
    while (w->q_len == QUEUE_SLOTS && !w->failed) pthread_cond_wait(&w->cv, &w->mu);
    w->stall_s += pt_now() - t0;
    if (w->failed) { /* dropped: the caller stops at pt_writer_ok, the close reports the error */
        pthread_mutex_unlock(&w->mu);
        pt_batch_clear(b);
        return 0;
    }
    const int slot = (w->q_head + w->q_len) % QUEUE_SLOTS;
    /* swap: the writer takes the filled batch, the producer gets the slot's empty buffers */
    pt_batch tmp = w->queue[slot];
    w->queue[slot] = *b;
    *b = tmp;
    w->qpos[slot] = w->next_pos;
    w->q_len++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* The final file goes into place; the parts go. 0, 1 (aborted) or -1. */
static int finish_file(pt_writer *w) {
    const int rc = fin_finish(w);
    if (rc == 0) {
        for (int k = 0; k < w->n_segs; k++) pt_wr_trash_add(w, w->segs[k].name);
        pt_wr_trash_sweep(w, 1);
        pt_remove_dir_files(w->parts);
        pt_fsync_dir(w->dir);
    }
    return rc;
}

/* The profile line; its share of wall time is of the writer's lifetime (open to close). */
static void print_profile(const pt_writer_stats *s, double lifetime) {
    const char *p = getenv("PUNCTUM_PROFILE");
    if (!p || !*p || !strcmp(p, "0")) return;
    char line[256];
    pt_writer_summary(s, lifetime, line, sizeof line);
    fprintf(stderr, "[punctum profile] %s; %lld commits, %.1f MB copied as chunks\n", line,
            (long long)s->commits, s->raw_copied / 1e6);
}

int pt_writer_close(pt_writer *w, int finish, pt_writer_stats *stats, pt_error *e) {
    pthread_mutex_lock(&w->mu);
    w->closing = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    int rc = w->failed ? -1 : 0;
    if (!rc) {
        const double t0 = pt_now();
        if (commit(w)) rc = -1;
        w->busy += pt_now() - t0;
    }
    if (w->job.active || w->job.file >= 0) pt_wr_job_release(&w->job, 1);
    if (!rc && finish) {
        const double t0 = pt_now();
        rc = finish_file(w);
        w->final_s = pt_now() - t0;
    }
    if (!(finish && rc == 0)) pt_wr_trash_sweep(w, 1);
    if (rc < 0 && e) *e = w->err;
    pt_writer_stats st = {w->busy, w->final_s, w->n_commits,  w->stall_s,  0, 0,
                          0,       0,          w->raw_copied, saturated(w)};
    pt_cpool_stats ps;
    pt_cwriter_stats(w->cw, &ps, NULL, NULL);
    st.encode_s = ps.busy_s;
    st.threads = ps.threads;
    st.bytes_in = ps.bytes_in;
    st.bytes_out = ps.bytes_out;
    print_profile(&st, pt_now() - w->t_open);
    if (stats) *stats = st;
    for (int k = 0; k < QUEUE_SLOTS; k++) pt_batch_free(&w->queue[k]);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    writer_free(w);
    return rc;
}

void pt_writer_summary(const pt_writer_stats *s, double wall_s, char *buf, size_t n) {
    const double rate = s->encode_s > 0 ? s->bytes_in / s->encode_s / 1e6 : 0;
    char share[64] = "";
    if (wall_s > 0)
        snprintf(share, sizeof share, " (%.1f%% of %.1f s)", 100 * s->busy_s / wall_s, wall_s);
    snprintf(buf, n,
             "writer: %d thread%s at %.0f MB/s each (%.1f MB -> %.1f MB), busy %.2f s%s, waited "
             "%.2f s, final file %.2f s",
             s->threads, s->threads == 1 ? "" : "s", rate, s->bytes_in / 1e6, s->bytes_out / 1e6,
             s->busy_s, share, s->stall_s, s->final_s);
}
