/* punctum — HDF5 and file-system helpers (see h5util.h). */
#include "io/h5util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void pt_h5_quiet(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

hid_t pt_h5_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

hid_t pt_h5_f16_type(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    return t;
}

int pt_h5_put_attr(hid_t loc, const pt_attr *a) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t st = pt_h5_str_type();
    hid_t type = a->str ? st : H5T_STD_I64LE;
    if (H5Aexists(loc, a->key) > 0) H5Adelete(loc, a->key);
    hid_t at = H5Acreate2(loc, a->key, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = -1;
    if (at >= 0) {
        if (a->str)
            rc = H5Awrite(at, st, &a->str);
        else
            rc = H5Awrite(at, H5T_NATIVE_INT64, &a->num);
        H5Aclose(at);
    }
    H5Tclose(st);
    H5Sclose(space);
    return rc < 0 ? -1 : 0;
}

int pt_h5_put_str(hid_t loc, const char *key, const char *val) {
    pt_attr a = {key, val ? val : "", 0};
    return pt_h5_put_attr(loc, &a);
}

int pt_h5_put_i64(hid_t loc, const char *key, int64_t val) {
    pt_attr a = {key, NULL, val};
    return pt_h5_put_attr(loc, &a);
}

int pt_h5_ensure_groups(hid_t file, const char *path) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; (p = strchr(p, '/')); p++) {
        *p = 0;
        htri_t ex = H5Lexists(file, buf, H5P_DEFAULT);
        if (ex < 0) return -1;
        if (!ex) {
            hid_t g = H5Gcreate2(file, buf, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (g < 0) return -1;
            H5Gclose(g);
        }
        *p = '/';
    }
    return 0;
}

hid_t pt_h5_create_rows(hid_t file, const pt_colspec *s, hid_t ftype, int deflate, int64_t rows,
                        int64_t max_chunk_rows) {
    if (pt_h5_ensure_groups(file, s->path)) return -1;
    const int rank = 1 + s->ntrail;
    hsize_t dims[3] = {(hsize_t)rows, 0, 0}, maxdims[3] = {H5S_UNLIMITED, 0, 0},
            chunk[3] = {1, 1, 1};
    size_t row_bytes = H5Tget_size(ftype);
    if (H5Tis_variable_str(ftype) > 0) row_bytes = 16; /* heap references in the chunk */
    for (int k = 0; k < s->ntrail; k++) {
        dims[k + 1] = maxdims[k + 1] = chunk[k + 1] = (hsize_t)s->trail[k];
        row_bytes *= (size_t)s->trail[k];
    }
    /* ~256 KiB chunks: large enough to compress well, small enough for partial reads */
    hsize_t crow = (hsize_t)(262144 / (row_bytes ? row_bytes : 1));
    chunk[0] = crow < 1 ? 1 : crow > 65536 ? 65536 : crow;
    if (max_chunk_rows > 0 && chunk[0] > (hsize_t)max_chunk_rows)
        chunk[0] = (hsize_t)max_chunk_rows;
    hid_t space = H5Screate_simple(rank, dims, maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, (unsigned)deflate);
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, 521, 8u << 20, 0.75);
    hid_t ds = H5Dcreate2(file, s->path, ftype, space, H5P_DEFAULT, dcpl, dapl);
    H5Pclose(dapl);
    H5Pclose(dcpl);
    H5Sclose(space);
    return ds;
}

int64_t pt_h5_nrows(hid_t file, const char *path) {
    /* every component must exist before H5Lexists on the full path */
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; (p = strchr(p, '/')); p++) {
        *p = 0;
        htri_t ex = H5Lexists(file, buf, H5P_DEFAULT);
        *p = '/';
        if (ex <= 0) return -1;
    }
    if (H5Lexists(file, path, H5P_DEFAULT) <= 0) return -1;
    hid_t d = H5Dopen2(file, path, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t s = H5Dget_space(d);
    hsize_t dims[8] = {0};
    int rank = H5Sget_simple_extent_ndims(s);
    if (rank >= 1 && rank <= 8) H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    H5Dclose(d);
    return rank >= 1 && rank <= 8 ? (int64_t)dims[0] : -1;
}

hid_t pt_h5_copy_type(hid_t dset) {
    hid_t ft = H5Dget_type(dset);
    if (ft < 0) return -1;
    if (H5Tget_class(ft) == H5T_STRING && H5Tis_variable_str(ft) > 0) {
        H5Tclose(ft);
        return pt_h5_str_type();
    }
    hid_t mt = H5Tget_native_type(ft, H5T_DIR_ASCEND);
    /* keep non-native floats (binary16) as they are: no conversion on copy */
    if (mt < 0 || H5Tget_size(mt) != H5Tget_size(ft)) {
        if (mt >= 0) H5Tclose(mt);
        mt = H5Tcopy(ft);
    }
    H5Tclose(ft);
    return mt;
}

size_t pt_h5_row_elems(hid_t dset, int *rank_out) {
    hid_t s = H5Dget_space(dset);
    hsize_t dims[8] = {0};
    int rank = H5Sget_simple_extent_ndims(s);
    if (rank < 1 || rank > 8) rank = 1;
    H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    size_t n = 1;
    for (int k = 1; k < rank; k++) n *= (size_t)dims[k];
    if (rank_out) *rank_out = rank;
    return n;
}

static int rows_io(hid_t dset, hid_t mt, int64_t r0, int64_t n, void *buf, int write) {
    if (n <= 0) return 0;
    hid_t fs = H5Dget_space(dset);
    hsize_t dims[8] = {0};
    int rank = H5Sget_simple_extent_ndims(fs);
    if (rank < 1 || rank > 8) {
        H5Sclose(fs);
        return -1;
    }
    H5Sget_simple_extent_dims(fs, dims, NULL);
    hsize_t start[8] = {(hsize_t)r0}, count[8] = {(hsize_t)n};
    for (int k = 1; k < rank; k++) start[k] = 0, count[k] = dims[k];
    herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t ms = H5Screate_simple(rank, count, NULL);
    if (rc >= 0)
        rc = write ? H5Dwrite(dset, mt, ms, fs, H5P_DEFAULT, buf)
                   : H5Dread(dset, mt, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return rc < 0 ? -1 : 0;
}

int pt_h5_read_rows(hid_t dset, hid_t mt, int64_t r0, int64_t n, void *buf) {
    return rows_io(dset, mt, r0, n, buf, 0);
}

int pt_h5_write_rows(hid_t dset, hid_t mt, int64_t r0, int64_t n, const void *buf) {
    return rows_io(dset, mt, r0, n, (void *)buf, 1);
}

int pt_h5_copy_rows(hid_t src, int64_t s0, hid_t dst, int64_t d0, int64_t n, size_t block_bytes,
                    volatile const int *abort_flag) {
    if (n <= 0) return 0;
    hid_t mt = pt_h5_copy_type(src);
    if (mt < 0) return -1;
    const int is_str = H5Tget_class(mt) == H5T_STRING;
    const size_t row_bytes = H5Tget_size(mt) * pt_h5_row_elems(src, NULL);
    int64_t block = (int64_t)(block_bytes / (row_bytes ? row_bytes : 1));
    if (is_str && block > 65536) block = 65536;
    if (block < 1) block = 1;
    if (block > n) block = n;
    void *buf = malloc((size_t)block * row_bytes);
    int rc = buf ? 0 : -1;
    for (int64_t r = 0; r < n && rc == 0; r += block) {
        if (abort_flag && *abort_flag) {
            rc = -2;
            break;
        }
        const int64_t m = n - r < block ? n - r : block;
        if (is_str) memset(buf, 0, (size_t)m * row_bytes);
        if (pt_h5_read_rows(src, mt, s0 + r, m, buf)) {
            rc = -1;
            break;
        }
        if (pt_h5_write_rows(dst, mt, d0 + r, m, buf)) rc = -1;
        if (is_str) {
            char **s = buf;
            for (int64_t k = 0; k < m; k++) H5free_memory(s[k]);
        }
    }
    free(buf);
    H5Tclose(mt);
    return rc;
}

/* ---- attribute readers (writer.h: inspect, merge, resume) ------------------------------------ */

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

/* ---- listing datasets ---------------------------------------------------------------------- */

static void dsets_add(pt_h5_dsets *d, const char *p) {
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->paths = pt_xrealloc(d->paths, (size_t)d->cap * sizeof(char *));
    }
    d->paths[d->n++] = pt_xstrdup(p);
}

static herr_t visit_cb(hid_t obj, const char *name, const H5O_info_t *info, void *op) {
    (void)obj;
    if (info->type == H5O_TYPE_DATASET) {
        char buf[512];
        snprintf(buf, sizeof buf, "/%s", name);
        dsets_add(op, buf);
    }
    return 0;
}

int pt_h5_list_dsets(hid_t file, pt_h5_dsets *out) {
    memset(out, 0, sizeof *out);
    return H5Ovisit(file, H5_INDEX_NAME, H5_ITER_INC, visit_cb, out) < 0 ? -1 : 0;
}

void pt_h5_dsets_free(pt_h5_dsets *d) {
    for (int i = 0; i < d->n; i++) free(d->paths[i]);
    free(d->paths);
    memset(d, 0, sizeof *d);
}

/* ---- file system ----------------------------------------------------------------------------- */

int pt_fsync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    errno = err;
    return rc;
}

int pt_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    if (rc && (errno == EINVAL || errno == EROFS)) rc = 0; /* file systems without dir fsync */
    close(fd);
    return rc;
}

char *pt_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return pt_xstrdup(".");
    if (slash == path) return pt_xstrdup("/");
    size_t n = (size_t)(slash - path);
    char *d = pt_xmalloc(n + 1);
    memcpy(d, path, n);
    d[n] = 0;
    return d;
}

const char *pt_basename(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

int pt_remove_dir_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -1;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *p = pt_path_join(dir, de->d_name);
        if (unlink(p) && errno != ENOENT) rc = -1;
        free(p);
    }
    closedir(d);
    if (rmdir(dir) && errno != ENOENT) rc = -1;
    return rc;
}
