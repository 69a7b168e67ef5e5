/* punctum — the writer's copies: merging segments (compaction), and the rows that the final
 * file of a resumed run lacks. Numeric datasets are copied as compressed chunks (they share the
 * grid of global rows, writer.h); strings as values. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/h5util.h"
#include "io/writer_internal.h"

#define STEP_BYTES ((size_t)8 << 20) /* compaction work per slice between batches */

void pt_wr_job_release(copyjob *j, int remove_tmp) {
    if (j->src_ds >= 0) H5Dclose(j->src_ds);
    if (j->dst_ds >= 0) H5Dclose(j->dst_ds);
    if (j->src_files)
        for (int k = 0; k < j->count; k++)
            if (j->src_files[k] >= 0) H5Fclose(j->src_files[k]);
    if (j->file >= 0) H5Fclose(j->file);
    if (remove_tmp && j->tmp) unlink(j->tmp);
    free(j->src_files);
    free(j->row0);
    free(j->end);
    free(j->tmp);
    free(j->dest);
    free(j->name);
    memset(j, 0, sizeof *j);
    j->file = j->src_ds = j->dst_ds = -1;
}

/* The merged segment holds, per dataset, the rows its segments give the view. */
static void job_extent(pt_writer *w, copyjob *j) {
    const int last = j->first + j->count - 1;
    for (int i = 0; i < w->n_specs; i++) {
        j->row0[i] = INT64_MAX;
        j->end[i] = w->segs[last].end[i];
        for (int k = j->first; k <= last; k++) {
            int64_t lo, hi;
            pt_wr_seg_span(w->segs, last + 1, k, i, &lo, &hi);
            if (hi > lo && lo < j->row0[i]) j->row0[i] = lo;
        }
        if (j->row0[i] > j->end[i]) j->row0[i] = j->end[i]; /* no rows */
    }
}

int pt_wr_job_begin(pt_writer *w, copyjob *j, int first, int count) {
    memset(j, 0, sizeof *j);
    j->file = j->src_ds = j->dst_ds = -1;
    j->active = 1;
    j->first = first;
    j->count = count;
    j->level = w->segs[first].level + 1;
    j->row0 = pt_xcalloc((size_t)w->n_specs, sizeof(int64_t));
    j->end = pt_xcalloc((size_t)w->n_specs, sizeof(int64_t));
    job_extent(w, j);
    j->name = pt_wr_printf("seg-%06lld.h5", (long long)w->next_id++);
    j->dest = pt_path_join(w->parts, j->name);
    j->tmp = pt_wr_printf("%s.merge.tmp", j->dest); /* (a merge in progress, for a look) */
    unlink(j->tmp);
    j->file = H5Fcreate(j->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (j->file < 0) return pt_wr_fail(w, "creating", j->tmp);
    j->src_files = pt_xmalloc((size_t)count * sizeof(hid_t));
    for (int k = 0; k < count; k++) j->src_files[k] = -1;
    for (int k = 0; k < count; k++) {
        char *p = pt_path_join(w->parts, w->segs[first + k].name);
        j->src_files[k] = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (j->src_files[k] < 0) {
            pt_wr_fail(w, "opening segment", p);
            free(p);
            return -1;
        }
        free(p);
    }
    return 0;
}

/* The merged segment's dataset of spec j->spec: all its rows, from row0. */
static int open_dst(pt_writer *w, copyjob *j) {
    const pt_colspec *s = &w->specs[j->spec];
    const int i = j->spec;
    j->dst_ds = pt_h5_create_col(j->file, s, pt_wr_file_type(w, s->type), j->end[i] - j->row0[i]);
    if (j->dst_ds < 0) return pt_wr_fail(w, "creating a dataset in", j->tmp);
    if (pt_h5_put_i64(j->dst_ds, "row0", j->row0[i]))
        return pt_wr_fail(w, "writing attributes of", j->tmp);
    j->src = 0;
    j->next_row = -1;
    return 0;
}

/* Rows per step of a dataset: whole chunks, about max_bytes. */
static int64_t step_rows(pt_writer *w, int i, size_t max_bytes) {
    if (!max_bytes) return INT64_MAX;
    const pt_colspec *s = &w->specs[i];
    const size_t esz = s->type == PT_STR                   ? 16
                       : s->type == PT_F32 && w->store_f16 ? 2
                                                           : pt_ctype_size(s->type);
    size_t row_bytes = esz;
    for (int k = 0; k < s->ntrail; k++) row_bytes *= (size_t)s->trail[k];
    hsize_t dims[3];
    pt_chunk_dims(s, esz, dims);
    int64_t n = (int64_t)(max_bytes / row_bytes) / (int64_t)dims[0] * (int64_t)dims[0];
    return n > 0 ? n : (int64_t)dims[0];
}

/* Copy (part of) source segment j->src's rows of the current dataset. 1: that segment is done. */
static int copy_src(pt_writer *w, copyjob *j, size_t max_bytes, size_t *done) {
    const int i = j->spec, k = j->first + j->src;
    int64_t lo, hi;
    pt_wr_seg_span(w->segs, j->first + j->count, k, i, &lo, &hi);
    if (j->next_row < 0) j->next_row = lo;
    if (j->next_row >= hi) return 1;
    if (j->src_ds < 0) {
        j->src_ds = H5Dopen2(j->src_files[j->src], w->specs[i].path, H5P_DEFAULT);
        if (j->src_ds < 0) return pt_wr_fail(w, "reading", w->segs[k].name);
    }
    int64_t n = hi - j->next_row;
    const int64_t step = step_rows(w, i, max_bytes);
    if (n > step) n = step;
    int rc = pt_h5_copy_range(j->src_ds, w->segs[k].row0[i], j->dst_ds, j->row0[i], j->next_row,
                              j->next_row + n, NULL, &w->raw_copied);
    if (rc == -2) return -2;
    if (rc) return pt_wr_fail(w, "writing", j->tmp);
    j->next_row += n;
    *done += max_bytes ? max_bytes * (size_t)n / (size_t)step : 0;
    return j->next_row >= hi;
}

int pt_wr_job_step(pt_writer *w, copyjob *j, size_t max_bytes) {
    size_t done = 0;
    while (j->spec < w->n_specs) {
        if (j->dst_ds < 0) {
            pt_wr_test_pause(w);
            if (open_dst(w, j)) return -1;
        }
        while (j->src < j->count) {
            if (max_bytes && done >= max_bytes) return 0;
            const int rc = copy_src(w, j, max_bytes, &done);
            if (rc < 0) return rc;
            if (rc == 1) {
                if (j->src_ds >= 0) H5Dclose(j->src_ds);
                j->src_ds = -1;
                j->src++;
                j->next_row = -1;
            }
        }
        H5Dclose(j->dst_ds);
        j->dst_ds = -1;
        j->spec++;
    }
    return 1;
}

/* Swap segments [first, first + count) for the merged one. */
static void swap_in(pt_writer *w, copyjob *j) {
    seg_t merged = {pt_xstrdup(j->name), j->level, 0, j->row0, j->end};
    j->row0 = j->end = NULL;
    for (int k = 0; k < j->count; k++) {
        seg_t *s = &w->segs[j->first + k];
        merged.pairs += s->pairs;
        pt_wr_trash_add(w, s->name);
        free(s->name);
        free(s->row0);
        free(s->end);
    }
    w->segs[j->first] = merged;
    memmove(&w->segs[j->first + 1], &w->segs[j->first + j->count],
            (size_t)(w->n_segs - j->first - j->count) * sizeof(seg_t));
    w->n_segs -= j->count - 1;
}

int pt_wr_job_finish(pt_writer *w, copyjob *j) {
    int64_t pairs = 0;
    for (int k = 0; k < j->count; k++) pairs += w->segs[j->first + k].pairs;
    if (pt_h5_put_i64(j->file, "seg_pairs", pairs) || pt_h5_put_i64(j->file, "seg_level", j->level))
        return pt_wr_fail(w, "writing attributes of", j->tmp);
    for (int k = 0; k < j->count; k++) {
        H5Fclose(j->src_files[k]);
        j->src_files[k] = -1;
    }
    herr_t cr = H5Fclose(j->file);
    j->file = -1;
    if (cr < 0) return pt_wr_fail(w, "closing", j->tmp);
    if (pt_wr_publish(w, j->tmp, j->dest, w->parts)) return -1;
    swap_in(w, j);
    if (pt_wr_view(w)) return -1;
    w->n_commits++;
    return 0;
}

/* Start merging the oldest run of `fanin` consecutive segments of equal level, if any. */
int pt_wr_maybe_start_merge(pt_writer *w) {
    if (w->job.active || w->fanin < 2) return 0;
    for (int i = 0; i + w->fanin <= w->n_segs; i++) {
        int k = 1;
        while (k < w->fanin && w->segs[i + k].level == w->segs[i].level) k++;
        if (k == w->fanin) {
            if (pt_wr_job_begin(w, &w->job, i, w->fanin)) {
                pt_wr_job_release(&w->job, 1);
                return -1;
            }
            return 0;
        }
    }
    return 0;
}

int pt_wr_merge_step(pt_writer *w) {
    if (!w->job.active) return 0;
    int rc = pt_wr_job_step(w, &w->job, STEP_BYTES);
    if (rc == 0) return 0;
    if (rc == 1) rc = pt_wr_job_finish(w, &w->job);
    pt_wr_job_release(&w->job, rc != 0);
    if (rc) return -1;
    pt_wr_trash_sweep(w, 0);
    return pt_wr_maybe_start_merge(w);
}

/* Dataset i's rows [0, fin_row0[i]) from segment k (file f) into the final file. */
static int catch_up_one(pt_writer *w, hid_t f, int k, int i) {
    int64_t lo, hi;
    pt_wr_seg_span(w->segs, w->n_segs, k, i, &lo, &hi);
    if (hi > w->fin_row0[i]) hi = w->fin_row0[i];
    if (hi <= lo) return 0;
    pt_wr_test_pause(w);
    hid_t src = H5Dopen2(f, w->specs[i].path, H5P_DEFAULT);
    if (src < 0) return -1;
    const int rc = pt_h5_copy_range(src, w->segs[k].row0[i], w->fin_dsets[i], 0, lo, hi,
                                    w->abort_flag, &w->raw_copied);
    H5Dclose(src);
    return rc;
}

int pt_wr_catch_up(pt_writer *w) {
    int rc = 0;
    for (int k = 0; k < w->n_segs && !rc; k++) {
        int64_t need = 0;
        for (int i = 0; i < w->n_specs; i++) need |= w->segs[k].row0[i] < w->fin_row0[i];
        if (!need) continue;
        char *p = pt_path_join(w->parts, w->segs[k].name);
        hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f < 0) rc = -1;
        for (int i = 0; i < w->n_specs && !rc; i++) rc = catch_up_one(w, f, k, i);
        if (f >= 0) H5Fclose(f);
        if (rc == -1) pt_wr_fail(w, "copying the rows of", p);
        free(p);
    }
    return rc;
}
