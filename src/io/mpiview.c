/* punctum — the view an mpirun job leaves: OUT.h5 over the rank files OUT.rankR.h5 (job.h).
 *
 * Rank R's file holds a contiguous block of the input's records, so the job's rows in input
 * order are rank 0's rows, then rank 1's, ...: every dataset is an HDF5 virtual dataset with one
 * mapping per rank. Index columns (pairs/seq_a, seqs/tok_start, tokens/seq, ...) point into
 * their own rank's rows, so they are the one thing a mapping cannot express: they are stored in
 * OUT.h5 itself, renumbered (8 bytes per row of their table; the statistics stay in the rank
 * files). The knockout windows table is the same in every rank file: rank 0's. */
#include "io/mpiview.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/chunkio.h"
#include "io/h5util.h"
#include "io/merge.h"
#include "io/outstate.h"

#define BLOCK_ROWS 65536

char *pt_rank_file(const char *out, int rank, int size) {
    if (size <= 1) return pt_xstrdup(out);
    size_t n = strlen(out);
    char *p = pt_xmalloc(n + 32);
    if (n > 3 && !strcmp(out + n - 3, ".h5"))
        snprintf(p, n + 32, "%.*s.rank%d.h5", (int)(n - 3), out, rank);
    else
        snprintf(p, n + 32, "%s.rank%d.h5", out, rank);
    return p;
}

/* printf-escaped (VDS source names are templates) basename */
static char *vds_src(const char *path) {
    const char *b = pt_basename(path);
    char *o = pt_xmalloc(2 * strlen(b) + 1), *q = o;
    for (; *b; b++) {
        if (*b == '%') *q++ = '%';
        *q++ = *b;
    }
    *q = 0;
    return o;
}

/* A table's row count in a rank file: the rows of one of its datasets. */
static int64_t table_rows(hid_t f, const char *table, const pt_h5_dsets *dl) {
    for (int j = 0; j < dl->n; j++) {
        const char *t = pt_table_of(dl->paths[j]);
        if (t && !strcmp(t, table)) return pt_h5_nrows(f, dl->paths[j]);
    }
    return 0;
}

int pt_mpi_view_write(const char *out, int size, pt_error *e) {
    pt_h5_quiet();
    static const char *const tables[] = {"pairs",   "seqs",      "tokens",   "patterns",
                                         "windows", "knockout",  "patching", "lens",
                                         "gen",     "gen_tokens"};
    enum { NT = 10 };
    hid_t *rf = pt_xcalloc((size_t)size, sizeof(hid_t));
    char **paths = pt_xcalloc((size_t)size, sizeof(char *));
    int64_t *rows = pt_xcalloc((size_t)size * NT, sizeof(int64_t)); /* [rank][table] */
    int64_t *off = pt_xcalloc((size_t)size * NT, sizeof(int64_t));  /* first global row */
    pt_h5_dsets dl = {0};
    char *tmp = NULL;
    hid_t vf = -1;
    int rc = 0;
    for (int r = 0; r < size; r++) rf[r] = -1;
    for (int r = 0; r < size && !rc; r++) {
        paths[r] = pt_rank_file(out, r, size);
        rf[r] = H5Fopen(paths[r], H5F_ACC_RDONLY, H5P_DEFAULT);
        int64_t done = 0;
        if (rf[r] < 0)
            rc = pt_fail(e, "%s: cannot open", paths[r]);
        else if (pt_h5_attr_i64(rf[r], "run_complete", &done) || done != 1)
            rc = pt_fail(e, "%s: rank %d has not finished (re-run the same command with --resume)",
                         paths[r], r);
    }
    if (!rc && pt_h5_list_dsets(rf[0], &dl)) rc = pt_fail(e, "%s: cannot list datasets", paths[0]);
    for (int r = 0; r < size && !rc; r++)
        for (int t = 0; t < NT; t++) {
            int64_t n = table_rows(rf[r], tables[t], &dl);
            rows[r * NT + t] = n < 0 ? 0 : n;
            off[r * NT + t] = r ? off[(r - 1) * NT + t] + rows[(r - 1) * NT + t] : 0;
        }
    if (!rc) {
        tmp = pt_xmalloc(strlen(out) + 8);
        sprintf(tmp, "%s.tmp", out);
        unlink(tmp);
        vf = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        if (vf < 0) rc = pt_fail(e, "%s: cannot create", tmp);
    }
    int64_t *buf = pt_xmalloc(BLOCK_ROWS * sizeof(int64_t));
    int64_t *kbuf = pt_xmalloc(BLOCK_ROWS * sizeof(int64_t)); /* /gen/kind */
    const pt_cwriter_opts co = {pt_writer_auto_threads(-1, 1), 0};
    pt_cwriter *cw = rc ? NULL : pt_cwriter_new(&co);
    if (!rc && !cw) rc = pt_fail(e, "%s: cannot start the encoding threads", tmp);
    for (int j = 0; j < dl.n && !rc; j++) {
        const char *path = dl.paths[j];
        const char *table = pt_table_of(path);
        if (!table) {
            rc = pt_fail(e, "%s: unknown dataset %s", paths[0], path);
            break;
        }
        int t = 0;
        while (t < NT && strcmp(tables[t], table)) t++;
        const int windows = t == 4;
        const char *base = pt_index_base(path);
        int b = -1;
        for (int k = 0; k < NT && *base; k++)
            if (!strcmp(tables[k], base)) b = k;
        hid_t d0 = H5Dopen2(rf[0], path, H5P_DEFAULT);
        hid_t ft = d0 >= 0 ? H5Dget_type(d0) : -1;
        int rank;
        hsize_t dims[3] = {0, 0, 0};
        if (d0 >= 0) {
            pt_h5_row_elems(d0, &rank);
            hid_t sp = H5Dget_space(d0);
            H5Sget_simple_extent_dims(sp, dims, NULL);
            H5Sclose(sp);
            H5Dclose(d0);
        }
        if (ft < 0) {
            rc = pt_fail(e, "%s: cannot open %s", paths[0], path);
            break;
        }
        int64_t total = 0, *n = pt_xmalloc((size_t)size * sizeof(int64_t));
        for (int r = 0; r < size; r++) {
            n[r] = windows && r ? 0 : pt_h5_nrows(rf[r], path);
            if (n[r] < 0) rc = pt_fail(e, "%s lacks %s", paths[r], path);
            total += n[r] > 0 ? n[r] : 0;
        }
        pt_colspec spec = {path, PT_I8, rank - 1, {(int)dims[1], (int)dims[2]}};
        /* /gen/variant is a row of /ablation/knockout or /patching/resid, by /gen/kind */
        const int gen_variant = !strcmp(path, "/gen/variant");
        if (!rc && (b >= 0 || gen_variant || total == 0)) {
            /* stored: the renumbered index column (or an empty dataset), chunks encoded by the
             * pool and written directly */
            hid_t ds = pt_h5_create_col(vf, &spec, ft, 0);
            if (ds < 0) rc = pt_fail(e, "%s: cannot create %s", tmp, path);
            int col = -1;
            if (ds >= 0 && (b >= 0 || gen_variant)) {
                col = pt_cwriter_add(cw, &spec, sizeof(int64_t), 0);
                pt_cwriter_target(cw, col, ds, 0);
            }
            const int nonneg = !strcmp(path, "/pairs/seq_a") || !strcmp(path, "/pairs/seq_b");
            for (int r = 0; r < size && !rc; r++) {
                hid_t sd = H5Dopen2(rf[r], path, H5P_DEFAULT);
                hid_t kd = gen_variant ? H5Dopen2(rf[r], "/gen/kind", H5P_DEFAULT) : -1;
                for (int64_t r0 = 0; r0 < n[r] && !rc; r0 += BLOCK_ROWS) {
                    const int64_t m = n[r] - r0 < BLOCK_ROWS ? n[r] - r0 : BLOCK_ROWS;
                    if (pt_h5_read_rows(sd, H5T_NATIVE_INT64, r0, m, buf)) {
                        rc = pt_fail(e, "%s: reading %s failed", paths[r], path);
                        break;
                    }
                    if (gen_variant) {
                        if (pt_h5_read_rows(kd, H5T_NATIVE_INT64, r0, m, kbuf)) {
                            rc = pt_fail(e, "%s: reading /gen/kind failed", paths[r]);
                            break;
                        }
                        for (int64_t k = 0; k < m; k++) /* tables[5] knockout, [6] patching */
                            if (buf[k] >= 0) buf[k] += off[r * NT + (kbuf[k] == 1 ? 5 : 6)];
                    } else {
                        const int64_t d = off[r * NT + b];
                        for (int64_t k = 0; k < m; k++)
                            if (!(nonneg && buf[k] < 0)) buf[k] += d;
                    }
                    if (pt_cwriter_append(cw, col, buf, (size_t)m))
                        rc = pt_fail(e, "%s: writing %s failed%s", tmp, path,
                                     errno == ENOSPC ? ": no space left on device" : "");
                }
                if (sd >= 0) H5Dclose(sd);
                if (kd >= 0) H5Dclose(kd);
            }
            if (col >= 0 && pt_cwriter_flush(cw, 0) && !rc)
                rc = pt_fail(e, "%s: writing %s failed%s", tmp, path,
                             errno == ENOSPC ? ": no space left on device" : "");
            if (col >= 0) pt_cwriter_target(cw, col, -1, 0);
            if (ds >= 0) H5Dclose(ds);
        } else if (!rc) {
            /* mapped: one mapping per rank */
            hsize_t vd[3] = {(hsize_t)total, dims[1], dims[2]};
            hid_t vspace = H5Screate_simple(rank, vd, NULL);
            hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
            hsize_t at = 0;
            for (int r = 0; r < size && !rc; r++) {
                if (n[r] <= 0) continue;
                hsize_t start[3] = {at, 0, 0}, count[3] = {(hsize_t)n[r], dims[1], dims[2]};
                hid_t sspace = H5Screate_simple(rank, count, NULL);
                char *src = vds_src(paths[r]);
                if (H5Sselect_hyperslab(vspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
                    H5Pset_virtual(dcpl, vspace, src, path, sspace) < 0)
                    rc = pt_fail(e, "%s: mapping %s failed", tmp, path);
                free(src);
                H5Sclose(sspace);
                at += (hsize_t)n[r];
            }
            H5Sselect_all(vspace);
            hid_t ds = -1;
            if (!rc && !pt_h5_ensure_groups(vf, path))
                ds = H5Dcreate2(vf, path, ft, vspace, H5P_DEFAULT, dcpl, H5P_DEFAULT);
            if (!rc && ds < 0) rc = pt_fail(e, "%s: cannot create the view of %s", tmp, path);
            if (ds >= 0) H5Dclose(ds);
            H5Pclose(dcpl);
            H5Sclose(vspace);
        }
        free(n);
        H5Tclose(ft);
    }
    free(buf);
    free(kbuf);
    pt_cwriter_free(cw);
    /* root attributes: rank 0's, with the job's totals */
    if (!rc) {
        char **keys = NULL, **vals = NULL;
        int na = 0;
        pt_h5_read_root_attrs(rf[0], &keys, &vals, &na);
        static const char *const skip[] = {"committed_pairs", "run_complete", "mpi_rank",
                                           "opt_shard",       "input_offset", "input_line",
                                           "input_index",     "f16_saturated"};
        for (int i = 0; i < na && !rc; i++) {
            int s = 0;
            for (size_t k = 0; k < sizeof skip / sizeof skip[0] && !s; k++)
                s = !strcmp(keys[i], skip[k]);
            if (!s) {
                int64_t v;
                if (pt_h5_attr_i64(rf[0], keys[i], &v) == 0)
                    rc = pt_h5_put_i64(vf, keys[i], v);
                else
                    rc = pt_h5_put_str(vf, keys[i], vals[i]);
            }
        }
        for (int i = 0; i < na; i++) free(keys[i]), free(vals[i]);
        free(keys);
        free(vals);
        size_t len = 1;
        for (int r = 0; r < size; r++) len += strlen(pt_basename(paths[r])) + 1;
        char *list = pt_xcalloc(1, len);
        for (int r = 0; r < size; r++) {
            if (r) strcat(list, "\n");
            strcat(list, pt_basename(paths[r]));
        }
        int64_t io = 0, il = 0, ii = 0;
        pt_h5_attr_i64(rf[size - 1], "input_offset", &io);
        pt_h5_attr_i64(rf[size - 1], "input_line", &il);
        pt_h5_attr_i64(rf[size - 1], "input_index", &ii);
        int64_t pairs = off[(size - 1) * NT] + rows[(size - 1) * NT];
        int64_t sat = 0, v = 0;
        int has_sat = 0;
        for (int r = 0; r < size; r++)
            if (pt_h5_attr_i64(rf[r], "f16_saturated", &v) == 0) sat += v, has_sat = 1;
        if (!rc && has_sat && pt_h5_put_i64(vf, "f16_saturated", sat)) rc = -1;
        if (rc || pt_h5_put_str(vf, "opt_shard", "0/1") || pt_h5_put_i64(vf, "mpi_size", size) ||
            pt_h5_put_i64(vf, "mpi_view", 1) || pt_h5_put_str(vf, "rank_files", list) ||
            pt_h5_put_i64(vf, "input_offset", io) || pt_h5_put_i64(vf, "input_line", il) ||
            pt_h5_put_i64(vf, "input_index", ii) || pt_h5_put_i64(vf, "run_complete", 1) ||
            pt_h5_put_i64(vf, "committed_pairs", pairs))
            rc = pt_fail(e, "%s: writing attributes failed", tmp);
        free(list);
    }
    if (vf >= 0 && H5Fclose(vf) < 0 && !rc) rc = pt_fail(e, "%s: closing failed (disk full?)", tmp);
    if (!rc && (pt_fsync_path(tmp) || rename(tmp, out)))
        rc = pt_fail(e, "%s: cannot move into place: %s", out, strerror(errno));
    if (!rc) {
        char *dir = pt_dirname(out);
        pt_fsync_dir(dir);
        free(dir);
    } else if (tmp) {
        unlink(tmp);
    }
    for (int r = 0; r < size; r++) {
        if (rf[r] >= 0) H5Fclose(rf[r]);
        free(paths[r]);
    }
    free(rf);
    free(paths);
    free(rows);
    free(off);
    free(tmp);
    pt_h5_dsets_free(&dl);
    return rc ? -1 : 0;
}
