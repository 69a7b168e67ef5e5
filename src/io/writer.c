/* punctum — HDF5 writer with a writer thread (see writer.h). */
#include "punctum/writer.h"

#include <hdf5.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { QUEUE_SLOTS = 2 };

struct pt_writer {
    char *path;
    hid_t file;
    int n_specs;
    pt_colspec *specs;
    hid_t *dsets;
    hid_t str_type, f16_type;
    int store_f16;
    int64_t committed_pairs;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pt_batch queue[QUEUE_SLOTS]; /* ring of pending commits */
    int q_head, q_len;
    pt_batch spare;              /* an empty batch handed back to the producer */
    int have_spare;
    int closing;
    int failed;
    pt_error err;
    double busy;
};

static hid_t make_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

/* IEEE 754 binary16, little endian (h5py reads it as numpy float16). */
static hid_t make_f16_type(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    return t;
}

static hid_t file_type(const pt_writer *w, pt_ctype t) {
    switch (t) {
    case PT_I8: return H5T_STD_I8LE;
    case PT_I32: return H5T_STD_I32LE;
    case PT_I64: return H5T_STD_I64LE;
    case PT_F32: return w->store_f16 ? w->f16_type : H5T_IEEE_F32LE;
    case PT_STR: return w->str_type;
    }
    return -1;
}

static hid_t mem_type(const pt_writer *w, pt_ctype t) {
    switch (t) {
    case PT_I8: return H5T_NATIVE_INT8;
    case PT_I32: return H5T_NATIVE_INT32;
    case PT_I64: return H5T_NATIVE_INT64;
    case PT_F32: return w->store_f16 ? w->f16_type : H5T_NATIVE_FLOAT;
    case PT_STR: return w->str_type;
    }
    return -1;
}

/* Create intermediate groups of a dataset path ("/a/b/c" -> groups /a, /a/b). */
static int ensure_groups(hid_t file, const char *path) {
    char buf[256];
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

static int write_attr(hid_t loc, const pt_attr *a, hid_t str_type) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t type = a->str ? str_type : H5T_STD_I64LE;
    if (H5Aexists(loc, a->key) > 0) H5Adelete(loc, a->key);
    hid_t at = H5Acreate2(loc, a->key, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = -1;
    if (at >= 0) {
        if (a->str)
            rc = H5Awrite(at, str_type, &a->str);
        else
            rc = H5Awrite(at, H5T_NATIVE_INT64, &a->num);
        H5Aclose(at);
    }
    H5Sclose(space);
    return rc < 0 ? -1 : 0;
}

/* Update an existing int64 attribute in place (committed_pairs: the last write of a commit). */
static int update_i64_attr(hid_t loc, const char *key, int64_t v) {
    hid_t at = H5Aopen(loc, key, H5P_DEFAULT);
    if (at < 0) return -1;
    herr_t rc = H5Awrite(at, H5T_NATIVE_INT64, &v);
    H5Aclose(at);
    return rc < 0 ? -1 : 0;
}

static int create_dataset(pt_writer *w, int i) {
    const pt_colspec *s = &w->specs[i];
    if (ensure_groups(w->file, s->path)) return -1;
    const int rank = 1 + s->ntrail;
    hsize_t dims[3] = {0, 0, 0}, maxdims[3] = {H5S_UNLIMITED, 0, 0}, chunk[3] = {1, 1, 1};
    size_t row_bytes = pt_ctype_size(s->type);
    for (int k = 0; k < s->ntrail; k++) {
        dims[k + 1] = maxdims[k + 1] = chunk[k + 1] = (hsize_t)s->trail[k];
        row_bytes *= (size_t)s->trail[k];
    }
    /* ~256 KiB chunks: large enough to compress well, small enough for partial reads */
    hsize_t rows = (hsize_t)(262144 / (row_bytes ? row_bytes : 1));
    chunk[0] = rows < 1 ? 1 : rows > 65536 ? 65536 : rows;
    hid_t space = H5Screate_simple(rank, dims, maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, 4);
    hid_t ds = H5Dcreate2(w->file, s->path, file_type(w, s->type), space, H5P_DEFAULT, dcpl,
                          H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(space);
    if (ds < 0) return -1;
    w->dsets[i] = ds;
    return 0;
}

/* Append the rows of one column. */
static int append_rows(pt_writer *w, int i, const pt_col *c) {
    if (c->n_rows == 0) return 0;
    hid_t ds = w->dsets[i];
    hid_t fs = H5Dget_space(ds);
    hsize_t dims[3], maxd[3];
    int rank = H5Sget_simple_extent_dims(fs, dims, maxd);
    H5Sclose(fs);
    if (rank < 1) return -1;
    hsize_t start[3] = {dims[0], 0, 0}, count[3] = {c->n_rows, dims[1], dims[2]};
    dims[0] += c->n_rows;
    if (H5Dset_extent(ds, dims) < 0) return -1;
    fs = H5Dget_space(ds);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t ms = H5Screate_simple(rank, count, NULL);
    const void *buf = c->data;
    uint16_t *half = NULL;
    if (c->spec.type == PT_F32 && w->store_f16) {
        const size_t n = c->n_rows * c->row_elems;
        half = pt_xmalloc(n * sizeof(uint16_t));
        const float *f = c->data;
        for (size_t k = 0; k < n; k++) half[k] = pt_f32_to_f16(f[k]);
        buf = half;
    }
    herr_t rc = H5Dwrite(ds, mem_type(w, c->spec.type), ms, fs, H5P_DEFAULT, buf);
    free(half);
    H5Sclose(ms);
    H5Sclose(fs);
    return rc < 0 ? -1 : 0;
}

static int write_commit(pt_writer *w, pt_batch *b) {
    for (int i = 0; i < b->n_cols; i++)
        if (append_rows(w, i, &b->cols[i]))
            return pt_fail(&w->err, "%s: HDF5 write of %s failed (disk full?)", w->path,
                           b->cols[i].spec.path);
    /* Rows first, flushed; then the commit marker, flushed. */
    if (H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0)
        return pt_fail(&w->err, "%s: HDF5 flush failed (disk full?)", w->path);
    w->committed_pairs += b->n_pairs;
    if (update_i64_attr(w->file, "committed_pairs", w->committed_pairs) ||
        H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0)
        return pt_fail(&w->err, "%s: writing committed_pairs failed (disk full?)", w->path);
    return 0;
}

static void *writer_main(void *arg) {
    pt_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->q_len == 0 && !w->closing) pthread_cond_wait(&w->cv, &w->mu);
        if (w->q_len == 0 && w->closing) break;
        pt_batch *b = &w->queue[w->q_head];
        pthread_mutex_unlock(&w->mu);
        double t0 = pt_now();
        int rc = w->failed ? -1 : write_commit(w, b);
        double dt = pt_now() - t0;
        pt_batch_clear(b);
        pthread_mutex_lock(&w->mu);
        w->busy += dt;
        if (rc) w->failed = 1;
        w->q_head = (w->q_head + 1) % QUEUE_SLOTS;
        w->q_len--;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

pt_writer *pt_writer_create(const char *path, const pt_colspec *specs, int n_specs,
                            const pt_attr *attrs, int n_attrs, int store_f16, pt_error *e) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* our messages, not HDF5's stack dumps */
    pt_writer *w = pt_xcalloc(1, sizeof *w);
    w->path = pt_xstrdup(path);
    w->n_specs = n_specs;
    w->specs = pt_xmalloc((size_t)n_specs * sizeof *specs);
    memcpy(w->specs, specs, (size_t)n_specs * sizeof *specs);
    w->dsets = pt_xcalloc((size_t)n_specs, sizeof(hid_t));
    w->store_f16 = store_f16;
    w->str_type = make_str_type();
    w->f16_type = make_f16_type();
    w->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0) {
        pt_fail(e, "%s: cannot create HDF5 file", path);
        goto fail;
    }
    for (int i = 0; i < n_attrs; i++)
        if (write_attr(w->file, &attrs[i], w->str_type)) {
            pt_fail(e, "%s: cannot write attribute %s", path, attrs[i].key);
            goto fail;
        }
    pt_attr cp = {"committed_pairs", NULL, 0};
    if (write_attr(w->file, &cp, w->str_type)) {
        pt_fail(e, "%s: cannot write attribute committed_pairs", path);
        goto fail;
    }
    for (int i = 0; i < n_specs; i++)
        if (create_dataset(w, i)) {
            pt_fail(e, "%s: cannot create dataset %s", path, specs[i].path);
            goto fail;
        }
    if (H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0) {
        pt_fail(e, "%s: flush failed", path);
        goto fail;
    }
    for (int k = 0; k < QUEUE_SLOTS; k++) pt_batch_init(&w->queue[k], specs, n_specs);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    pthread_create(&w->thread, NULL, writer_main, w);
    return w;
fail:
    for (int i = 0; i < n_specs; i++)
        if (w->dsets[i] > 0) H5Dclose(w->dsets[i]);
    if (w->file >= 0) H5Fclose(w->file);
    H5Tclose(w->str_type);
    H5Tclose(w->f16_type);
    free(w->dsets);
    free(w->specs);
    free(w->path);
    free(w);
    return NULL;
}

int pt_writer_submit(pt_writer *w, pt_batch *b, pt_error *e) {
    pthread_mutex_lock(&w->mu);
    while (w->q_len == QUEUE_SLOTS && !w->failed) pthread_cond_wait(&w->cv, &w->mu);
    if (w->failed) {
        if (e) *e = w->err;
        pthread_mutex_unlock(&w->mu);
        return -1;
    }
    const int slot = (w->q_head + w->q_len) % QUEUE_SLOTS;
    /* swap: the writer takes the filled batch, the producer gets the slot's empty buffers */
    pt_batch tmp = w->queue[slot];
    w->queue[slot] = *b;
    *b = tmp;
    w->q_len++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

int pt_writer_close(pt_writer *w, pt_error *e) {
    pthread_mutex_lock(&w->mu);
    w->closing = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    int rc = w->failed ? -1 : 0;
    if (rc && e) *e = w->err;
    for (int i = 0; i < w->n_specs; i++) H5Dclose(w->dsets[i]);
    if (H5Fclose(w->file) < 0 && !rc) rc = pt_fail(e, "%s: closing the HDF5 file failed", w->path);
    H5Tclose(w->str_type);
    H5Tclose(w->f16_type);
    for (int k = 0; k < QUEUE_SLOTS; k++) pt_batch_free(&w->queue[k]);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->dsets);
    free(w->specs);
    free(w->path);
    free(w);
    return rc;
}

double pt_writer_busy_seconds(const pt_writer *w) { return w->busy; }

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
            hid_t mt = make_str_type();
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
    herr_t rc = H5Aread(at, H5T_NATIVE_INT64, out);
    H5Aclose(at);
    return rc < 0 ? -1 : 0;
}
