/* punctum — crash-safe HDF5 writer: immutable segments, an atomically replaced virtual-dataset
 * view, background compaction and a final consolidation (see writer.h for the design). */
#include "punctum/writer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <pthread.h>
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

enum {
    QUEUE_SLOTS = 2,
    SEG_DEFLATE = 1,   /* level-0 segments (short-lived): fast gzip */
    FINAL_DEFLATE = 4, /* merged segments and the final file */
    DEFAULT_FANIN = 8, /* compaction: merge FANIN equal-level segments into one */
};
#define STEP_BYTES ((size_t)4 << 20) /* compaction work per slice between batches */
#define TRASH_GRACE_S 10.0           /* superseded segments outlive their last view this long */

typedef struct {
    char *name;
    int level;
    int64_t pairs;
    int64_t *rows; /* [n_specs] */
} seg_t;

/* Copying rows of segments [first, first+count) into one new file: compaction (incremental,
 * between batches) and the final consolidation (to completion). */
typedef struct {
    int active;
    int first, count, level;
    int final; /* the consolidated OUT.h5 (attributes, final compression) */
    char *tmp, *dest, *name;
    hid_t file;
    hid_t *src_files; /* [count] */
    int spec, src;    /* progress: dataset, source segment */
    int64_t src_row, dst_row;
    hid_t src_ds, dst_ds;
    int64_t *totals; /* [n_specs] */
    int64_t *base;   /* [n_specs] rows already in the destination (a copied first segment) */
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
    pt_attr *attrs;
    int n_attrs;
    int store_f16;
    hid_t str_type, f16_type;
    double commit_s;
    int fanin;
    int fsync; /* 0 (PUNCTUM_FSYNC=0): no fsync; a kill stays safe, a power cut may not */
    volatile const int *abort_flag;

    /* committed state */
    seg_t *segs;
    int n_segs, cap_segs;
    int64_t committed_pairs;
    int64_t *committed_rows;
    pt_inpos committed_pos;
    int64_t next_id, n_commits;
    double last_commit;

    /* the open (uncommitted) segment */
    hid_t seg_file;
    hid_t *seg_dsets;
    char *seg_tmp, *seg_name;
    int64_t seg_pairs;
    int64_t *seg_rows;
    pt_inpos seg_pos;

    copyjob job;
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
    double busy, final_s;
};

/* ---- small helpers ----------------------------------------------------------------------- */

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...) {
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

static hid_t file_type(const pt_writer *w, pt_ctype t) {
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

static hid_t mem_type(const pt_writer *w, pt_ctype t) {
    switch (t) {
    case PT_I8:
        return H5T_NATIVE_INT8;
    case PT_I32:
        return H5T_NATIVE_INT32;
    case PT_I64:
        return H5T_NATIVE_INT64;
    case PT_F32:
        return w->store_f16 ? w->f16_type : H5T_NATIVE_FLOAT;
    case PT_STR:
        return w->str_type;
    }
    return -1;
}

/* A failure message naming the file, with the system's reason when there is one. */
static int wfail(pt_writer *w, const char *what, const char *file) {
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
    char *raw = xprintf("%s/%s", w->parts_rel, seg);
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

static void trash_add(pt_writer *w, const char *name) {
    if (w->n_trash == w->cap_trash) {
        w->cap_trash = w->cap_trash ? 2 * w->cap_trash : 16;
        w->trash = pt_xrealloc(w->trash, (size_t)w->cap_trash * sizeof(trash_t));
    }
    w->trash[w->n_trash++] = (trash_t){pt_xstrdup(name), w->n_commits, pt_now()};
}

/* Delete superseded segments once no recent view maps them (all = at the end). */
static void trash_sweep(pt_writer *w, int all) {
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

/* fsync the file, rename it into place, fsync the directory. */
static int publish(pt_writer *w, const char *tmp, const char *dest, const char *dir) {
    if (w->fsync && pt_fsync_path(tmp)) return wfail(w, "fsync of", tmp);
    if (rename(tmp, dest)) return wfail(w, "rename of", tmp);
    if (w->fsync && pt_fsync_dir(dir)) return wfail(w, "fsync of directory", dir);
    return 0;
}

/* ---- the view --------------------------------------------------------------------------- */

static int write_root_attrs(pt_writer *w, hid_t f, int complete, int64_t pairs, pt_inpos pos,
                            int with_segments) {
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
    if (pt_h5_put_i64(f, "input_offset", pos.offset) || pt_h5_put_i64(f, "input_line", pos.line) ||
        pt_h5_put_i64(f, "input_index", pos.index) || pt_h5_put_i64(f, "run_complete", complete))
        return -1;
    return pt_h5_put_i64(f, "committed_pairs", pairs); /* last */
}

static int write_view(pt_writer *w) {
    unlink(w->view_tmp);
    hid_t f = H5Fcreate(w->view_tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return wfail(w, "creating", w->view_tmp);
    int rc = write_root_attrs(w, f, 0, w->committed_pairs, w->committed_pos, 1);
    char **src_names = pt_xcalloc((size_t)w->n_segs + 1, sizeof(char *));
    for (int k = 0; k < w->n_segs; k++) src_names[k] = vds_name(w, w->segs[k].name);
    for (int i = 0; i < w->n_specs && !rc; i++) {
        const pt_colspec *s = &w->specs[i];
        const int64_t total = w->committed_rows[i];
        hid_t ds;
        if (total == 0) {
            ds = pt_h5_create_rows(f, s, file_type(w, s->type), SEG_DEFLATE, 0, 0);
        } else {
            const int rank = 1 + s->ntrail;
            hsize_t dims[3] = {(hsize_t)total, 0, 0};
            for (int k = 0; k < s->ntrail; k++) dims[k + 1] = (hsize_t)s->trail[k];
            hid_t vspace = H5Screate_simple(rank, dims, NULL);
            hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
            hsize_t off = 0;
            for (int k = 0; k < w->n_segs && !rc; k++) {
                const int64_t r = w->segs[k].rows[i];
                if (r == 0) continue;
                hsize_t start[3] = {off, 0, 0}, count[3] = {(hsize_t)r, dims[1], dims[2]};
                hid_t sspace = H5Screate_simple(rank, count, NULL);
                if (H5Sselect_hyperslab(vspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
                    H5Pset_virtual(dcpl, vspace, src_names[k], s->path, sspace) < 0)
                    rc = -1;
                H5Sclose(sspace);
                off += (hsize_t)r;
            }
            H5Sselect_all(vspace);
            ds = rc ? -1
                 : pt_h5_ensure_groups(f, s->path)
                     ? -1
                     : H5Dcreate2(f, s->path, file_type(w, s->type), vspace, H5P_DEFAULT, dcpl,
                                  H5P_DEFAULT);
            H5Pclose(dcpl);
            H5Sclose(vspace);
        }
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
        return wfail(w, "writing", w->view_tmp);
    }
    return publish(w, w->view_tmp, w->path, w->dir);
}

/* ---- the open segment ----------------------------------------------------------------------- */

static int seg_open(pt_writer *w) {
    w->seg_name = xprintf("seg-%06lld.h5", (long long)w->next_id++);
    w->seg_tmp = xprintf("%s/%s.tmp", w->parts, w->seg_name);
    w->seg_file = H5Fcreate(w->seg_tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->seg_file < 0) return wfail(w, "creating", w->seg_tmp);
    for (int i = 0; i < w->n_specs; i++) {
        w->seg_dsets[i] = -1; /* created at the column's first rows (chunks sized to them) */
        w->seg_rows[i] = 0;
    }
    w->seg_pairs = 0;
    return 0;
}

/* A level-0 segment's dataset; its chunks hold a few batches' rows: a full-size chunk for a
 * handful of rows would be compressed whole at every commit. */
static int seg_dataset(pt_writer *w, int i, int64_t first_rows) {
    if (w->seg_dsets[i] >= 0) return 0;
    int64_t cr = first_rows * 4;
    if (cr < 64) cr = 64;
    w->seg_dsets[i] = pt_h5_create_rows(w->seg_file, &w->specs[i], file_type(w, w->specs[i].type),
                                        SEG_DEFLATE, 0, cr);
    return w->seg_dsets[i] < 0 ? -1 : 0;
}

static void seg_discard(pt_writer *w) {
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

static int append_rows(pt_writer *w, int i, const pt_col *c) {
    if (c->n_rows == 0) return 0;
    if (seg_dataset(w, i, (int64_t)c->n_rows)) return -1;
    hid_t ds = w->seg_dsets[i];
    const int rank = 1 + c->spec.ntrail;
    hsize_t dims[3] = {(hsize_t)(w->seg_rows[i] + (int64_t)c->n_rows), 0, 0};
    for (int k = 0; k < c->spec.ntrail; k++) dims[k + 1] = (hsize_t)c->spec.trail[k];
    (void)rank;
    if (H5Dset_extent(ds, dims) < 0) return -1;
    const void *buf = c->data;
    uint16_t *half = NULL;
    if (c->spec.type == PT_F32 && w->store_f16) {
        const size_t n = c->n_rows * c->row_elems;
        half = pt_xmalloc(n * sizeof(uint16_t));
        const float *f = c->data;
        for (size_t k = 0; k < n; k++) half[k] = pt_f32_to_f16(f[k]);
        buf = half;
    }
    int rc =
        pt_h5_write_rows(ds, mem_type(w, c->spec.type), w->seg_rows[i], (int64_t)c->n_rows, buf);
    free(half);
    if (!rc) w->seg_rows[i] += (int64_t)c->n_rows;
    return rc;
}

static int append_batch(pt_writer *w, pt_batch *b, pt_inpos pos) {
    if (w->seg_file < 0 && seg_open(w)) return -1;
    for (int i = 0; i < b->n_cols; i++)
        if (append_rows(w, i, &b->cols[i])) return wfail(w, "writing", w->seg_tmp);
    w->seg_pairs += b->n_pairs;
    w->seg_pos = pos;
    return 0;
}

/* ---- compaction / consolidation ----------------------------------------------------------- */

static void job_release(pt_writer *w, copyjob *j, int remove_tmp) {
    if (j->src_ds >= 0) H5Dclose(j->src_ds);
    if (j->dst_ds >= 0) H5Dclose(j->dst_ds);
    if (j->src_files)
        for (int k = 0; k < j->count; k++)
            if (j->src_files[k] >= 0) H5Fclose(j->src_files[k]);
    if (j->file >= 0) H5Fclose(j->file);
    if (remove_tmp && j->tmp) unlink(j->tmp);
    free(j->src_files);
    free(j->totals);
    free(j->base);
    free(j->tmp);
    free(j->dest);
    free(j->name);
    (void)w;
    memset(j, 0, sizeof *j);
    j->file = j->src_ds = j->dst_ds = -1;
}

/* Copy a file's bytes (the final file starts as a copy of the first segment). */
static int copy_file(const char *src, const char *dst) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return -1;
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (out < 0) {
        close(in);
        return -1;
    }
    struct stat st;
    int rc = fstat(in, &st);
    off_t left = rc ? 0 : st.st_size;
    while (!rc && left > 0) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);
        if (n < 0 &&
            (errno == ENOSYS || errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP)) {
            char buf[1 << 16]; /* fall back to read/write */
            ssize_t r = read(in, buf, sizeof buf);
            n = r > 0 ? write(out, buf, (size_t)r) : r;
            if (r > 0 && n != r) n = -1;
        }
        if (n <= 0)
            rc = -1;
        else
            left -= n;
    }
    const int err = errno;
    close(in);
    if (close(out)) rc = -1;
    errno = err;
    return rc;
}

/* A compaction writes segments [first, first+count) into a new segment; the final copy starts
 * from a byte copy of segment 0 (compressed data not touched again) and appends the others. */
static int job_begin(pt_writer *w, copyjob *j, int first, int count, int final) {
    memset(j, 0, sizeof *j);
    j->file = j->src_ds = j->dst_ds = -1;
    j->active = 1;
    j->final = final;
    j->level = final ? 0 : w->segs[first].level + 1;
    j->totals = pt_xcalloc((size_t)w->n_specs, sizeof(int64_t));
    j->base = pt_xcalloc((size_t)w->n_specs, sizeof(int64_t));
    for (int k = 0; k < count; k++)
        for (int i = 0; i < w->n_specs; i++) j->totals[i] += w->segs[first + k].rows[i];
    if (final) {
        j->dest = pt_xstrdup(w->path);
        j->tmp = pt_xstrdup(w->view_tmp);
    } else {
        j->name = xprintf("seg-%06lld.h5", (long long)w->next_id++);
        j->dest = pt_path_join(w->parts, j->name);
        j->tmp = xprintf("%s.tmp", j->dest);
    }
    unlink(j->tmp);
    if (final && count > 0) {
        char *p0 = pt_path_join(w->parts, w->segs[first].name);
        int rc = copy_file(p0, j->tmp);
        free(p0);
        if (rc) return wfail(w, "copying the first segment to", j->tmp);
        j->file = H5Fopen(j->tmp, H5F_ACC_RDWR, H5P_DEFAULT);
        if (j->file < 0) return wfail(w, "opening", j->tmp);
        H5Adelete(j->file, "seg_pairs");
        H5Adelete(j->file, "seg_level");
        memcpy(j->base, w->segs[first].rows, (size_t)w->n_specs * sizeof(int64_t));
        first++, count--;
    } else {
        j->file = H5Fcreate(j->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        if (j->file < 0) return wfail(w, "creating", j->tmp);
    }
    j->first = first;
    j->count = count;
    j->src_files = pt_xmalloc((size_t)(count > 0 ? count : 1) * sizeof(hid_t));
    for (int k = 0; k < count; k++) j->src_files[k] = -1;
    for (int k = 0; k < count; k++) {
        char *p = pt_path_join(w->parts, w->segs[first + k].name);
        j->src_files[k] = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (j->src_files[k] < 0) {
            wfail(w, "opening segment", p);
            free(p);
            return -1;
        }
        free(p);
    }
    return 0;
}

/* Copy up to max_bytes (0: everything). 1: done, 0: more to do, -1: error, -2: aborted. */
static int job_step(pt_writer *w, copyjob *j, size_t max_bytes) {
    size_t done = 0;
    while (j->spec < w->n_specs) {
        const pt_colspec *s = &w->specs[j->spec];
        if (j->dst_ds < 0) {
            if (j->base[j->spec] > 0 ||
                (j->final && H5Lexists(j->file, s->path, H5P_DEFAULT) > 0)) {
                /* appending to the copied first segment's dataset */
                hsize_t dims[3] = {(hsize_t)j->totals[j->spec], 0, 0};
                for (int k = 0; k < s->ntrail; k++) dims[k + 1] = (hsize_t)s->trail[k];
                j->dst_ds = H5Dopen2(j->file, s->path, H5P_DEFAULT);
                if (j->dst_ds >= 0 && H5Dset_extent(j->dst_ds, dims) < 0) {
                    H5Dclose(j->dst_ds);
                    j->dst_ds = -1;
                }
            } else {
                j->dst_ds = pt_h5_create_rows(j->file, s, file_type(w, s->type), FINAL_DEFLATE,
                                              j->totals[j->spec], 0);
            }
            if (j->dst_ds < 0) return wfail(w, "creating a dataset in", j->tmp);
            j->src = 0;
            j->src_row = 0;
            j->dst_row = j->base[j->spec];
        }
        while (j->src < j->count) {
            const int64_t rows = w->segs[j->first + j->src].rows[j->spec];
            if (j->src_row >= rows) {
                if (j->src_ds >= 0) H5Dclose(j->src_ds);
                j->src_ds = -1;
                j->src++;
                j->src_row = 0;
                continue;
            }
            if (j->src_ds < 0) {
                j->src_ds = H5Dopen2(j->src_files[j->src], s->path, H5P_DEFAULT);
                if (j->src_ds < 0) return wfail(w, "reading", w->segs[j->first + j->src].name);
            }
            if (max_bytes && done >= max_bytes) return 0;
            const size_t elem = s->type == PT_F32 && w->store_f16 ? 2 : pt_ctype_size(s->type);
            const size_t row_bytes = elem * (size_t)(s->ntrail > 0 ? s->trail[0] : 1) *
                                     (size_t)(s->ntrail > 1 ? s->trail[1] : 1);
            int64_t n = rows - j->src_row;
            if (max_bytes) {
                int64_t cap = (int64_t)((max_bytes - done) / (row_bytes ? row_bytes : 1));
                if (cap < 1) cap = 1;
                if (n > cap) n = cap;
            }
            int rc = pt_h5_copy_rows(j->src_ds, j->src_row, j->dst_ds, j->dst_row, n, STEP_BYTES,
                                     j->final ? w->abort_flag : NULL);
            if (rc == -2) return -2;
            if (rc) return wfail(w, "writing", j->tmp);
            j->src_row += n;
            j->dst_row += n;
            done += (size_t)n * row_bytes;
        }
        H5Dclose(j->dst_ds);
        j->dst_ds = -1;
        j->spec++;
    }
    return 1;
}

/* The copy is complete: close it, publish it and (compaction) swap it into the segment list. */
static int job_finish(pt_writer *w, copyjob *j) {
    if (j->final) {
        if (write_root_attrs(w, j->file, 1, w->committed_pairs, w->committed_pos, 0))
            return wfail(w, "writing attributes of", j->tmp);
    } else {
        int64_t pairs = 0;
        for (int k = 0; k < j->count; k++) pairs += w->segs[j->first + k].pairs;
        if (pt_h5_put_i64(j->file, "seg_pairs", pairs) ||
            pt_h5_put_i64(j->file, "seg_level", j->level))
            return wfail(w, "writing attributes of", j->tmp);
    }
    for (int k = 0; k < j->count; k++) {
        H5Fclose(j->src_files[k]);
        j->src_files[k] = -1;
    }
    herr_t cr = H5Fclose(j->file);
    j->file = -1;
    if (cr < 0) return wfail(w, "closing", j->tmp);
    if (j->final) return publish(w, j->tmp, j->dest, w->dir);
    if (publish(w, j->tmp, j->dest, w->parts)) return -1;
    /* swap segments [first, first+count) for the merged one, then commit the new view */
    seg_t merged = {pt_xstrdup(j->name), j->level, 0,
                    pt_xcalloc((size_t)w->n_specs, sizeof(int64_t))};
    for (int k = 0; k < j->count; k++) {
        seg_t *s = &w->segs[j->first + k];
        merged.pairs += s->pairs;
        for (int i = 0; i < w->n_specs; i++) merged.rows[i] += s->rows[i];
        trash_add(w, s->name);
        free(s->name);
        free(s->rows);
    }
    w->segs[j->first] = merged;
    memmove(&w->segs[j->first + 1], &w->segs[j->first + j->count],
            (size_t)(w->n_segs - j->first - j->count) * sizeof(seg_t));
    w->n_segs -= j->count - 1;
    if (write_view(w)) return -1;
    w->n_commits++;
    return 0;
}

/* Start merging the oldest run of `fanin` consecutive segments of equal level, if any. */
static int maybe_start_merge(pt_writer *w) {
    if (w->job.active || w->fanin < 2) return 0;
    for (int i = 0; i + w->fanin <= w->n_segs; i++) {
        int k = 1;
        while (k < w->fanin && w->segs[i + k].level == w->segs[i].level) k++;
        if (k == w->fanin) {
            if (job_begin(w, &w->job, i, w->fanin, 0)) {
                job_release(w, &w->job, 1);
                return -1;
            }
            return 0;
        }
    }
    return 0;
}

static int merge_step(pt_writer *w) {
    if (!w->job.active) return 0;
    int rc = job_step(w, &w->job, STEP_BYTES);
    if (rc == 0) return 0;
    if (rc == 1) rc = job_finish(w, &w->job);
    job_release(w, &w->job, rc != 0);
    if (rc) return -1;
    trash_sweep(w, 0);
    return maybe_start_merge(w);
}

/* ---- commits ------------------------------------------------------------------------------ */

static int commit(pt_writer *w) {
    if (w->seg_file < 0) return 0;
    if (pt_h5_put_i64(w->seg_file, "seg_pairs", w->seg_pairs) ||
        pt_h5_put_i64(w->seg_file, "seg_level", 0))
        return wfail(w, "writing attributes of", w->seg_tmp);
    int rc = 0;
    for (int i = 0; i < w->n_specs; i++) {
        if (seg_dataset(w, i, 0) || H5Dclose(w->seg_dsets[i]) < 0) rc = -1;
        w->seg_dsets[i] = -1;
    }
    if (H5Fclose(w->seg_file) < 0) rc = -1;
    w->seg_file = -1;
    if (rc) return wfail(w, "writing", w->seg_tmp);
    char *dest = pt_path_join(w->parts, w->seg_name);
    rc = publish(w, w->seg_tmp, dest, w->parts);
    free(dest);
    if (rc) return -1;
    seg_t s = {w->seg_name, 0, w->seg_pairs, pt_xmalloc((size_t)w->n_specs * sizeof(int64_t))};
    memcpy(s.rows, w->seg_rows, (size_t)w->n_specs * sizeof(int64_t));
    seg_push(w, s);
    free(w->seg_tmp);
    w->seg_tmp = w->seg_name = NULL;
    w->committed_pairs += w->seg_pairs;
    for (int i = 0; i < w->n_specs; i++) w->committed_rows[i] += w->seg_rows[i];
    w->committed_pos = w->seg_pos;
    if (write_view(w)) return -1;
    w->n_commits++;
    w->last_commit = pt_now();
    trash_sweep(w, 0);
    return maybe_start_merge(w);
}

static void *writer_main(void *arg) {
    pt_writer *w = arg;
    pt_h5_quiet(); /* HDF5's error printing is per thread */
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (w->q_len > 0) {
            pt_batch *b = &w->queue[w->q_head];
            const pt_inpos pos = w->qpos[w->q_head];
            const int failed = w->failed;
            pthread_mutex_unlock(&w->mu);
            const double t0 = pt_now();
            int rc = failed ? -1 : append_batch(w, b, pos);
            if (!rc && pt_now() - w->last_commit >= w->commit_s) rc = commit(w);
            if (!rc && w->job.active) rc = merge_step(w);
            /* a safety valve: compaction fell behind (the writer is the bottleneck); catch up
             * before taking more batches so the view stays small */
            while (!rc && w->job.active && w->n_segs > 8 * w->fanin) rc = merge_step(w);
            const double dt = pt_now() - t0;
            pt_batch_clear(b);
            pthread_mutex_lock(&w->mu);
            w->busy += dt;
            if (rc && !failed) w->failed = 1;
            w->q_head = (w->q_head + 1) % QUEUE_SLOTS;
            w->q_len--;
            pthread_cond_broadcast(&w->cv);
            continue;
        }
        if (w->closing) break;
        const double due = w->last_commit + w->commit_s;
        if (!w->failed && w->seg_file >= 0 && pt_now() >= due) {
            pthread_mutex_unlock(&w->mu);
            const double t0 = pt_now();
            int rc = commit(w);
            pthread_mutex_lock(&w->mu);
            w->busy += pt_now() - t0;
            if (rc) w->failed = 1;
            continue;
        }
        if (!w->failed && w->job.active) {
            pthread_mutex_unlock(&w->mu);
            const double t0 = pt_now();
            int rc = merge_step(w);
            pthread_mutex_lock(&w->mu);
            w->busy += pt_now() - t0;
            if (rc) w->failed = 1;
            continue;
        }
        if (!w->failed && w->seg_file >= 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double wait = due - pt_now();
            if (wait < 0.001) wait = 0.001;
            ts.tv_sec += (time_t)wait;
            ts.tv_nsec += (long)((wait - floor(wait)) * 1e9);
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        } else {
            pthread_cond_wait(&w->cv, &w->mu);
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- public API ----------------------------------------------------------------------------- */

static void writer_free(pt_writer *w) {
    if (w->job.active || w->job.file >= 0) job_release(w, &w->job, 1);
    seg_discard(w);
    for (int k = 0; k < w->n_segs; k++) {
        free(w->segs[k].name);
        free(w->segs[k].rows);
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
    free(w->seg_dsets);
    free(w->seg_rows);
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

pt_writer *pt_writer_open(const pt_writer_opts *o, pt_error *e) {
    pt_h5_quiet();
    pt_writer *w = pt_xcalloc(1, sizeof *w);
    w->str_type = pt_h5_str_type();
    w->f16_type = pt_h5_f16_type();
    w->seg_file = -1;
    w->job.file = w->job.src_ds = w->job.dst_ds = -1;
    w->path = pt_xstrdup(o->path);
    w->dir = pt_dirname(o->path);
    w->parts = xprintf("%s.parts", o->path);
    w->parts_rel = xprintf("%s.parts", pt_basename(o->path));
    w->view_tmp = xprintf("%s.tmp", o->path);
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
    w->abort_flag = o->abort_flag;
    w->seg_dsets = pt_xmalloc((size_t)o->n_specs * sizeof(hid_t));
    for (int i = 0; i < o->n_specs; i++) w->seg_dsets[i] = -1;
    w->seg_rows = pt_xcalloc((size_t)o->n_specs, sizeof(int64_t));
    w->committed_rows = pt_xcalloc((size_t)o->n_specs, sizeof(int64_t));
    w->last_commit = pt_now();

    if (o->resume) {
        const pt_outstate *st = o->resume;
        for (int k = 0; k < st->n_segs; k++) {
            seg_t s = {pt_xstrdup(st->seg_names[k]), st->seg_levels[k], st->seg_pairs[k],
                       pt_xmalloc((size_t)w->n_specs * sizeof(int64_t))};
            memcpy(s.rows, st->seg_rows + (size_t)k * w->n_specs,
                   (size_t)w->n_specs * sizeof(int64_t));
            seg_push(w, s);
        }
        w->committed_pairs = st->committed_pairs;
        memcpy(w->committed_rows, st->rows, (size_t)w->n_specs * sizeof(int64_t));
        w->committed_pos = st->pos;
        if (mkdir(w->parts, 0777) && errno != EEXIST) {
            pt_fail(e, "%s: cannot create %s: %s", o->path, w->parts, strerror(errno));
            writer_free(w);
            return NULL;
        }
        clean_parts(w);
        unlink(w->view_tmp);
        if (maybe_start_merge(w)) {
            if (e) *e = w->err;
            writer_free(w);
            return NULL;
        }
    } else {
        /* a new output: stale parts of an earlier run go first, then an empty view */
        unlink(w->view_tmp);
        if (pt_remove_dir_files(w->parts)) {
            pt_fail(e, "%s: cannot remove the old %s: %s", o->path, w->parts, strerror(errno));
            writer_free(w);
            return NULL;
        }
        if (mkdir(w->parts, 0777)) {
            pt_fail(e, "%s: cannot create %s: %s", o->path, w->parts, strerror(errno));
            writer_free(w);
            return NULL;
        }
        if (write_view(w)) {
            if (e) *e = w->err;
            pt_remove_dir_files(w->parts);
            writer_free(w);
            return NULL;
        }
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
    while (w->q_len == QUEUE_SLOTS && !w->failed) pthread_cond_wait(&w->cv, &w->mu);
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
    if (w->job.active || w->job.file >= 0) job_release(w, &w->job, 1);
    if (!rc && finish) {
        const double t0 = pt_now();
        if (job_begin(w, &w->job, 0, w->n_segs, 1)) {
            rc = -1;
        } else {
            int s = job_step(w, &w->job, 0);
            if (s == 1) s = job_finish(w, &w->job);
            if (s == -2)
                rc = 1;
            else if (s)
                rc = -1;
        }
        job_release(w, &w->job, rc != 0);
        if (rc == 0) {
            for (int k = 0; k < w->n_segs; k++) trash_add(w, w->segs[k].name);
            trash_sweep(w, 1);
            pt_remove_dir_files(w->parts);
            pt_fsync_dir(w->dir);
        }
        w->final_s = pt_now() - t0;
    }
    if (!(finish && rc == 0)) trash_sweep(w, 1);
    if (rc < 0 && e) *e = w->err;
    if (stats) *stats = (pt_writer_stats){w->busy, w->final_s, w->n_commits};
    for (int k = 0; k < QUEUE_SLOTS; k++) pt_batch_free(&w->queue[k]);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    writer_free(w);
    return rc;
}

/* ---- attribute readers (inspect, merge, resume) ---------------------------------------------- */

char *pt_h5_attr_str(long long loc_id, const char *name) {
    hid_t loc = (hid_t)loc_id;
    if (H5Aexists(loc, name) <= 0) return NULL;
    hid_t at = H5Aopen(loc, name, H5P_DEFAULT);
    if (at < 0) return NULL;
    hid_t ft = H5Aget_type(at);
    char *out = NULL;
    if (H5Tget_class(ft) == H5T_STRING) {
        if (H5Tis_variable_str(ft) > 0) {
            char *s = NULL;
            hid_t mt = pt_h5_str_type();
            if (H5Aread(at, mt, &s) >= 0 && s) {
                out = pt_xstrdup(s);
                H5free_memory(s);
            }
            H5Tclose(mt);
        } else {
            size_t n = H5Tget_size(ft);
            out = pt_xcalloc(1, n + 1);
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, n);
            if (H5Aread(at, mt, out) < 0) out[0] = 0;
            H5Tclose(mt);
        }
    }
    H5Tclose(ft);
    H5Aclose(at);
    return out;
}

int pt_h5_attr_i64(long long loc_id, const char *name, int64_t *out) {
    hid_t loc = (hid_t)loc_id;
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t at = H5Aopen(loc, name, H5P_DEFAULT);
    if (at < 0) return -1;
    hid_t ft = H5Aget_type(at);
    const int is_int = H5Tget_class(ft) == H5T_INTEGER;
    H5Tclose(ft);
    herr_t rc = is_int ? H5Aread(at, H5T_NATIVE_INT64, out) : -1;
    H5Aclose(at);
    return rc < 0 ? -1 : 0;
}
