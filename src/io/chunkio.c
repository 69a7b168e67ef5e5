/* punctum — chunk-wise dataset writing and raw chunk copies (see chunkio.h). */
#include "io/chunkio.h"

#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"

/* A column's stored planes are decided on its chunks 0, 1, 2, 3, then every 64th: the kind of
 * data a column holds changes slowly, a probe costs about half an encode. */
#define PROBE_EVERY 64

/* ---- chunk shape ------------------------------------------------------------------------------
 */

static long env_long(const char *name, long dflt, long lo, long hi) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    long x = strtol(v, &end, 10);
    return end != v && !*end && x >= lo && x <= hi ? x : dflt;
}

/* The largest divisor of L that is <= want (a whole number of layer groups, no edge chunks
 * along the layer axis). */
static hsize_t layer_group(hsize_t L, long want) {
    hsize_t g = want < 1 ? 1 : (hsize_t)want > L ? L : (hsize_t)want;
    while (L % g) g--;
    return g;
}

/* Chunks of ~64 KiB; [rows, layers, heads] columns cut into groups of 4 layers. Measured with
 * benchmarks/bench_chunks.py (the punctum reader and h5py, 30x9 and 16x32 models): against
 * whole rows of 256 KiB, reading one layer across all tokens decompresses 4-9x less, one
 * sequence of 200 tokens costs 1.1-1.9x (1.4-2.1 ms), writing about the same. Knobs for that
 * benchmark: PUNCTUM_CHUNK_KIB, PUNCTUM_CHUNK_LAYERS. */
void pt_chunk_dims(const pt_colspec *s, size_t esz, hsize_t dims[3]) {
    const long kib = env_long("PUNCTUM_CHUNK_KIB", 64, 4, 1 << 16);
    const long layers = env_long("PUNCTUM_CHUNK_LAYERS", 4, 1, 1 << 20);
    dims[0] = dims[1] = dims[2] = 1;
    size_t row_bytes = esz ? esz : 1;
    for (int k = 0; k < s->ntrail; k++) {
        dims[k + 1] = (hsize_t)(s->trail[k] > 0 ? s->trail[k] : 1);
        if (s->ntrail == 2 && k == 0) dims[1] = layer_group(dims[1], layers);
        row_bytes *= dims[k + 1];
    }
    const hsize_t rows = (hsize_t)((size_t)kib * 1024 / row_bytes);
    dims[0] = rows < 1 ? 1 : rows > 65536 ? 65536 : rows;
}

hid_t pt_h5_create_col(hid_t file, const pt_colspec *s, hid_t ftype, int64_t rows) {
    if (pt_h5_ensure_groups(file, s->path)) return -1;
    size_t esz = H5Tget_size(ftype);
    if (H5Tis_variable_str(ftype) > 0) esz = 16; /* heap references in the chunk */
    const int rank = 1 + s->ntrail;
    hsize_t dims[3] = {(hsize_t)rows, 0, 0}, maxdims[3] = {H5S_UNLIMITED, 0, 0}, chunk[3];
    pt_chunk_dims(s, esz, chunk);
    for (int k = 0; k < s->ntrail; k++) dims[k + 1] = maxdims[k + 1] = (hsize_t)s->trail[k];
    hid_t space = H5Screate_simple(rank, dims, maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, PT_DEFLATE_LEVEL);
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, 521, 8u << 20, 1.0);
    hid_t ds = H5Dcreate2(file, s->path, ftype, space, H5P_DEFAULT, dcpl, dapl);
    H5Pclose(dapl);
    H5Pclose(dcpl);
    H5Sclose(space);
    return ds;
}

/* ---- the column writer ---------------------------------------------------------------------- */

/* Where a column's chunks go: a dataset holding the global rows from row0. */
typedef struct {
    hid_t ds;
    int64_t row0, extent;
} target;

typedef struct {
    pt_colspec spec;
    pt_chunk_fmt fmt; /* one chunk */
    int rank;
    hsize_t cdims[3];
    int64_t R;          /* chunk rows */
    size_t row_elems;   /* elements per row in memory */
    size_t gstride;     /* elements per row in a chunk (one layer group) */
    int n_groups;       /* chunks across the trailing dims (layer groups) */
    size_t chunk_bytes; /* src bytes of one chunk */
    int64_t row0, rows; /* the chunk being filled: its global row, rows in it */
    unsigned char **pend;
    target tgt[2]; /* [0] the target, [1] the mirror */
    int stored_planes;
    int64_t n_chunks;
    int64_t sat_partial; /* f16 clamps in the unfinished chunk as last written */
    pt_cjob *spare;
} ccol;

struct pt_cwriter {
    pt_cpool *pool;
    ccol *cols;
    int n_cols, cap_cols;
    int max_jobs;
    int failed;
    int64_t sat_full; /* f16 clamps in complete chunks */
    double write_s;
};

pt_cwriter *pt_cwriter_new(const pt_cwriter_opts *o) {
    pt_cwriter *cw = pt_xcalloc(1, sizeof *cw);
    const int threads = o->threads < 1 ? 1 : o->threads;
    cw->pool = pt_cpool_new(threads, PT_DEFLATE_LEVEL);
    if (!cw->pool) {
        free(cw);
        return NULL;
    }
    cw->max_jobs = o->max_jobs > 0 ? o->max_jobs : 4 * threads < 8 ? 8 : 4 * threads;
    return cw;
}

static void free_jobs(pt_cjob *j) {
    while (j) {
        pt_cjob *next = j->next;
        free(j->buf);
        free(j->out);
        free(j);
        j = next;
    }
}

static void write_job(pt_cwriter *cw, pt_cjob *j);

/* Write every finished job; with all = 1 wait for (and help with) every job in flight. */
static void drain(pt_cwriter *cw, int all) {
    for (;;) {
        pt_cjob *j;
        while ((j = pt_cpool_pop_done(cw->pool))) write_job(cw, j);
        const int n = pt_cpool_in_flight(cw->pool);
        if (all ? n == 0 : n < cw->max_jobs) return;
        if (!pt_cpool_help(cw->pool)) pt_cpool_wait(cw->pool);
    }
}

void pt_cwriter_free(pt_cwriter *cw) {
    if (!cw) return;
    drain(cw, 1);
    pt_cpool_free(cw->pool);
    for (int i = 0; i < cw->n_cols; i++) {
        ccol *c = &cw->cols[i];
        for (int g = 0; g < c->n_groups; g++) free(c->pend[g]);
        free(c->pend);
        free_jobs(c->spare);
        free((char *)c->spec.path);
    }
    free(cw->cols);
    free(cw);
}

int pt_cwriter_add(pt_cwriter *cw, const pt_colspec *s, size_t src_esz, int f32_to_f16) {
    if (cw->n_cols == cw->cap_cols) {
        cw->cap_cols = cw->cap_cols ? 2 * cw->cap_cols : 16;
        cw->cols = pt_xrealloc(cw->cols, (size_t)cw->cap_cols * sizeof(ccol));
    }
    ccol *c = &cw->cols[cw->n_cols];
    memset(c, 0, sizeof *c);
    c->spec = *s;
    c->spec.path = pt_xstrdup(s->path);
    c->rank = 1 + s->ntrail;
    c->fmt.src_esz = src_esz;
    c->fmt.f32_to_f16 = f32_to_f16 && src_esz == 4;
    c->fmt.store_esz = c->fmt.f32_to_f16 ? 2 : c->fmt.src_esz;
    pt_chunk_dims(s, c->fmt.store_esz, c->cdims);
    c->R = (int64_t)c->cdims[0];
    c->row_elems = 1;
    for (int k = 0; k < s->ntrail; k++) c->row_elems *= (size_t)s->trail[k];
    c->gstride = c->row_elems;
    c->n_groups = 1;
    if (s->ntrail == 2) {
        c->gstride = (size_t)c->cdims[1] * (size_t)c->cdims[2];
        c->n_groups = (int)(((hsize_t)s->trail[0] + c->cdims[1] - 1) / c->cdims[1]);
    }
    c->fmt.n_elems = (size_t)c->R * c->gstride;
    c->chunk_bytes = c->fmt.n_elems * c->fmt.src_esz;
    c->pend = pt_xcalloc((size_t)c->n_groups, sizeof *c->pend);
    for (int g = 0; g < c->n_groups; g++) c->pend[g] = pt_xcalloc(1, c->chunk_bytes);
    c->tgt[0].ds = c->tgt[1].ds = -1;
    return cw->n_cols++;
}

int64_t pt_cwriter_chunk_rows(const pt_cwriter *cw, int col) {
    return cw->cols[col].R;
}

int64_t pt_cwriter_chunk_row0(const pt_cwriter *cw, int col) {
    return cw->cols[col].row0;
}

int64_t pt_cwriter_end(const pt_cwriter *cw, int col) {
    return cw->cols[col].row0 + cw->cols[col].rows;
}

/* Rows [0, n) of src into the pending chunks at row `at`. */
static void put_rows(ccol *c, const unsigned char *src, int64_t at, int64_t n) {
    const size_t esz = c->fmt.src_esz;
    if (c->n_groups == 1 && c->gstride == c->row_elems) {
        memcpy(c->pend[0] + (size_t)at * c->gstride * esz, src, (size_t)n * c->row_elems * esz);
        return;
    }
    for (int g = 0; g < c->n_groups; g++) {
        const size_t first = (size_t)g * c->gstride;
        const size_t take = first + c->gstride > c->row_elems ? c->row_elems - first : c->gstride;
        unsigned char *d = c->pend[g] + (size_t)at * c->gstride * esz;
        const unsigned char *s = src + first * esz;
        for (int64_t r = 0; r < n; r++, d += c->gstride * esz, s += c->row_elems * esz)
            memcpy(d, s, take * esz);
    }
}

void pt_cwriter_start(pt_cwriter *cw, int col, int64_t row, const void *carry) {
    ccol *c = &cw->cols[col];
    c->row0 = row / c->R * c->R;
    c->rows = row - c->row0;
    if (c->rows > 0) put_rows(c, carry, 0, c->rows);
}

void pt_cwriter_target(pt_cwriter *cw, int col, hid_t ds, int64_t row0) {
    drain(cw, 1);
    cw->cols[col].tgt[0] = (target){ds, row0, 0};
}

void pt_cwriter_mirror(pt_cwriter *cw, int col, hid_t ds, int64_t row0) {
    drain(cw, 1);
    cw->cols[col].tgt[1] = (target){ds, row0, 0};
}

static pt_cjob *take_job(ccol *c) {
    pt_cjob *j = c->spare;
    if (j) {
        c->spare = j->next;
        return j;
    }
    j = pt_xcalloc(1, sizeof *j);
    j->buf = pt_xcalloc(1, c->chunk_bytes);
    j->out_cap = pt_chunk_bound(c->fmt.n_elems * c->fmt.store_esz);
    j->out = pt_xmalloc(j->out_cap);
    return j;
}

/* Encode group g of the pending chunk: a complete chunk (its buffer moves to the job) or the
 * unfinished one (copied, zero padded; it stays pending). */
static void emit(pt_cwriter *cw, int col, int g, int partial, int to_mirror) {
    ccol *c = &cw->cols[col];
    drain(cw, 0); /* room for one more */
    pt_cjob *j = take_job(c);
    if (partial) {
        const size_t used = (size_t)c->rows * c->gstride * c->fmt.src_esz;
        memcpy(j->buf, c->pend[g], used);
        memset((unsigned char *)j->buf + used, 0, c->chunk_bytes - used);
    } else {
        void *t = j->buf;
        j->buf = c->pend[g];
        c->pend[g] = t;
    }
    j->fmt = c->fmt;
    j->src = j->buf;
    j->stored_planes = c->stored_planes;
    j->probe = !partial && (c->n_chunks < 4 || c->n_chunks % PROBE_EVERY == 0);
    if (!partial && g == c->n_groups - 1) c->n_chunks++;
    j->col = col;
    j->group = g;
    j->row0 = partial ? -1 - c->row0 : c->row0; /* < 0 marks an unfinished chunk */
    j->flags = to_mirror;
    pt_cpool_push(cw->pool, j);
}

/* The target's extent: every row appended so far. */
static int set_extent(pt_cwriter *cw, ccol *c, target *t) {
    const int64_t rows = c->row0 + c->rows - t->row0;
    hsize_t dims[3] = {(hsize_t)rows, (hsize_t)c->spec.trail[0], (hsize_t)c->spec.trail[1]};
    if (H5Dset_extent(t->ds, dims) < 0) return cw->failed = -1;
    t->extent = rows;
    return 0;
}

static void put_chunk(pt_cwriter *cw, ccol *c, target *t, const pt_cjob *j, int64_t row0) {
    const int64_t local = row0 - t->row0;
    if (j->out_len == 0 || local < 0 || local % c->R) {
        cw->failed = -1;
        return;
    }
    if (t->extent < c->row0 + c->rows - t->row0 && set_extent(cw, c, t)) return;
    hsize_t off[3] = {(hsize_t)local, (hsize_t)j->group * c->cdims[1], 0};
    if (H5Dwrite_chunk(t->ds, H5P_DEFAULT, 0, off, j->out_len, j->out) < 0) cw->failed = -1;
}

/* A finished chunk to the target, and to the mirror unless it is an unfinished chunk that
 * will be written again. */
static void write_job(pt_cwriter *cw, pt_cjob *j) {
    ccol *c = &cw->cols[j->col];
    const int partial = j->row0 < 0;
    const int64_t row0 = partial ? -1 - j->row0 : j->row0;
    if (j->probe) c->stored_planes = j->probed;
    if (partial)
        c->sat_partial += j->saturated; /* reset by each flush */
    else
        cw->sat_full += j->saturated;
    const double t0 = pt_now();
    for (int k = 0; k < 2 && !cw->failed; k++)
        if (c->tgt[k].ds >= 0 && (k == 0 || !partial || j->flags))
            put_chunk(cw, c, &c->tgt[k], j, row0);
    cw->write_s += pt_now() - t0;
    j->next = c->spare;
    c->spare = j;
}

int pt_cwriter_append(pt_cwriter *cw, int col, const void *rows, size_t n) {
    ccol *c = &cw->cols[col];
    const unsigned char *src = rows;
    const size_t row_bytes = c->row_elems * c->fmt.src_esz;
    while (n > 0 && !cw->failed) {
        int64_t take = c->R - c->rows;
        if ((size_t)take > n) take = (int64_t)n;
        put_rows(c, src, c->rows, take);
        c->rows += take;
        src += (size_t)take * row_bytes;
        n -= (size_t)take;
        if (c->rows == c->R) {
            for (int g = 0; g < c->n_groups; g++) emit(cw, col, g, 0, 0);
            c->row0 += c->R;
            c->rows = 0;
        }
    }
    return cw->failed;
}

int pt_cwriter_flush(pt_cwriter *cw, int to_mirror) {
    for (int i = 0; i < cw->n_cols && !cw->failed; i++) {
        ccol *c = &cw->cols[i];
        if (c->tgt[0].ds < 0 && !(to_mirror && c->tgt[1].ds >= 0)) continue; /* rows wait */
        c->sat_partial = 0;
        if (c->rows > 0)
            for (int g = 0; g < c->n_groups; g++) emit(cw, i, g, 1, to_mirror);
    }
    drain(cw, 1);
    for (int i = 0; i < cw->n_cols && !cw->failed; i++) {
        ccol *c = &cw->cols[i];
        for (int k = 0; k < 1 + to_mirror; k++) {
            target *t = &c->tgt[k];
            if (t->ds >= 0 && t->extent != c->row0 + c->rows - t->row0) set_extent(cw, c, t);
        }
    }
    return cw->failed;
}

int pt_cwriter_work(pt_cwriter *cw) {
    int did = 0;
    pt_cjob *j;
    while ((j = pt_cpool_pop_done(cw->pool))) {
        write_job(cw, j);
        did = 1;
    }
    return pt_cpool_help(cw->pool) || did;
}

void pt_cwriter_stats(pt_cwriter *cw, pt_cpool_stats *s, int64_t *sat_full, int64_t *sat_partial) {
    if (s) pt_cpool_get_stats(cw->pool, s);
    if (sat_full) *sat_full = cw->sat_full;
    if (sat_partial) {
        int64_t n = 0;
        for (int i = 0; i < cw->n_cols; i++) n += cw->cols[i].sat_partial;
        *sat_partial = n;
    }
}

double pt_cwriter_write_s(const pt_cwriter *cw) {
    return cw->write_s;
}

/* ---- copies --------------------------------------------------------------------------------- */

typedef struct {
    int rank;
    hsize_t dims[3], chunk[3];
    size_t esz;
    int is_vlen;
    int n_filters;
    H5Z_filter_t filters[4];
} dshape;

static int get_shape(hid_t ds, dshape *d) {
    memset(d, 0, sizeof *d);
    hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds), pl = H5Dget_create_plist(ds);
    int rc = sp < 0 || ty < 0 || pl < 0 ? -1 : 0;
    if (!rc) {
        d->rank = H5Sget_simple_extent_ndims(sp);
        if (d->rank < 1 || d->rank > 3) rc = -1;
    }
    if (!rc) {
        H5Sget_simple_extent_dims(sp, d->dims, NULL);
        d->esz = H5Tget_size(ty);
        d->is_vlen = H5Tis_variable_str(ty) > 0 || H5Tget_class(ty) == H5T_VLEN;
        if (H5Pget_layout(pl) == H5D_CHUNKED && H5Pget_chunk(pl, d->rank, d->chunk) == d->rank) {
            d->n_filters = H5Pget_nfilters(pl);
            for (int k = 0; k < d->n_filters && k < 4; k++) {
                unsigned flags, cd[8];
                size_t ncd = 8;
                d->filters[k] = H5Pget_filter2(pl, (unsigned)k, &flags, &ncd, cd, 0, NULL, NULL);
            }
        } else {
            d->rank = 0; /* not chunked: no raw copy */
        }
    }
    if (sp >= 0) H5Sclose(sp);
    if (ty >= 0) H5Tclose(ty);
    if (pl >= 0) H5Pclose(pl);
    return rc;
}

static int same_layout(const dshape *a, const dshape *b) {
    if (!a->rank || a->rank != b->rank || a->esz != b->esz || a->is_vlen || b->is_vlen ||
        a->n_filters != b->n_filters || a->n_filters > 4)
        return 0;
    for (int k = 0; k < a->rank; k++)
        if (a->chunk[k] != b->chunk[k] || (k > 0 && a->dims[k] != b->dims[k])) return 0;
    for (int k = 0; k < a->n_filters; k++)
        if (a->filters[k] != b->filters[k]) return 0;
    return 1;
}

/* Whole chunks of src rows [s0, s0 + n) to dst rows [d0, ...) as they are. */
static int copy_chunks(hid_t src, hid_t dst, const dshape *sh, int64_t s0, int64_t d0, int64_t n,
                       volatile const int *abort_flag, int64_t *raw) {
    const int64_t R = (int64_t)sh->chunk[0];
    size_t cap = 0;
    unsigned char *buf = NULL;
    int rc = 0;
    for (int64_t r = 0; r < n && !rc; r += R) {
        if (abort_flag && *abort_flag) {
            rc = -2;
            break;
        }
        const hsize_t layers = sh->rank == 3 ? sh->dims[1] : 1,
                      step = sh->rank == 3 ? sh->chunk[1] : 1;
        for (hsize_t g = 0; g < layers && !rc; g += step) {
            hsize_t so[3] = {(hsize_t)(s0 + r), g, 0}, dof[3] = {(hsize_t)(d0 + r), g, 0};
            hsize_t bytes = 0;
            uint32_t mask = 0;
            if (H5Dget_chunk_storage_size(src, so, &bytes) < 0 || bytes == 0) {
                rc = -1;
                break;
            }
            if (bytes > cap) {
                free(buf);
                cap = (size_t)bytes;
                buf = pt_xmalloc(cap);
            }
            if (H5Dread_chunk(src, H5P_DEFAULT, so, &mask, buf) < 0 ||
                H5Dwrite_chunk(dst, H5P_DEFAULT, mask, dof, (size_t)bytes, buf) < 0)
                rc = -1;
            else if (raw)
                *raw += (int64_t)bytes;
        }
    }
    free(buf);
    return rc;
}

int pt_h5_copy_range(hid_t src, int64_t src_row0, hid_t dst, int64_t dst_row0, int64_t lo,
                     int64_t hi, volatile const int *abort_flag, int64_t *raw) {
    if (hi <= lo) return 0;
    dshape a, b;
    if (get_shape(src, &a) || get_shape(dst, &b)) return -1;
    const int64_t R = (int64_t)a.chunk[0];
    const int64_t s0 = lo - src_row0, d0 = lo - dst_row0, n = hi - lo;
    if (s0 < 0 || d0 < 0 || s0 + n > (int64_t)a.dims[0] || d0 + n > (int64_t)b.dims[0]) return -1;
    const int raw_ok = same_layout(&a, &b) && R > 0 && s0 % R == 0 && d0 % R == 0 &&
                       (n % R == 0 || d0 + n == (int64_t)b.dims[0]) &&
                       (n % R == 0 || s0 + n == (int64_t)a.dims[0]);
    if (raw_ok) return copy_chunks(src, dst, &a, s0, d0, n, abort_flag, raw);
    return pt_h5_copy_rows(src, s0, dst, d0, n, (size_t)4 << 20, abort_flag);
}
