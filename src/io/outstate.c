/* punctum — the committed state of an existing output (see outstate.h). */
#include "io/outstate.h"

#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/h5util.h"

/* ---- fingerprints -----------------------------------------------------------------------------
 */

#define FP_SPAN ((size_t)1 << 20)

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}
#define FNV_INIT 1469598103934665603ull

char *pt_file_fingerprint(const char *path, pt_error *e) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        pt_fail(e, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st)) {
        fclose(f);
        pt_fail(e, "%s: cannot stat", path);
        return NULL;
    }
    unsigned char *buf = pt_xmalloc(FP_SPAN);
    size_t n = fread(buf, 1, FP_SPAN, f);
    const uint64_t head = fnv1a(FNV_INIT, buf, n);
    uint64_t tail = head;
    if ((uint64_t)st.st_size > FP_SPAN) {
        fseeko(f, st.st_size - (off_t)FP_SPAN, SEEK_SET);
        n = fread(buf, 1, FP_SPAN, f);
        tail = fnv1a(FNV_INIT, buf, n);
    }
    free(buf);
    fclose(f);
    char *out = pt_xmalloc(64);
    snprintf(out, 64, "%lld:%016llx:%016llx", (long long)st.st_size, (unsigned long long)head,
             (unsigned long long)tail);
    return out;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

char *pt_model_fingerprint(const char *dir, pt_error *e) {
    DIR *d = opendir(dir);
    if (!d) {
        pt_fail(e, "%s: cannot open the model directory: %s", dir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        if (!ends_with(de->d_name, ".json") && !ends_with(de->d_name, ".safetensors")) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = pt_xrealloc(names, (size_t)cap * sizeof(char *));
        }
        names[n++] = pt_xstrdup(de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof(char *), cmp_str);
    uint64_t h = FNV_INIT;
    int ok = 1;
    for (int i = 0; i < n; i++) {
        char *p = pt_path_join(dir, names[i]);
        char *fp = ok ? pt_file_fingerprint(p, e) : NULL;
        if (!fp)
            ok = 0;
        else {
            h = fnv1a(h, (const unsigned char *)names[i], strlen(names[i]) + 1);
            h = fnv1a(h, (const unsigned char *)fp, strlen(fp) + 1);
        }
        free(fp);
        free(p);
        free(names[i]);
    }
    free(names);
    if (!ok) return NULL;
    char *out = pt_xmalloc(40);
    snprintf(out, 40, "%d:%016llx", n, (unsigned long long)h);
    return out;
}

/* ---- root attributes ------------------------------------------------------------------------ */

typedef struct {
    char **keys, **vals;
    int n, cap;
} attr_list;

static herr_t attr_cb(hid_t loc, const char *name, const H5A_info_t *info, void *op) {
    (void)info;
    attr_list *L = op;
    char *val = NULL;
    int64_t v;
    if (pt_h5_attr_i64(loc, name, &v) == 0) {
        val = pt_xmalloc(32);
        snprintf(val, 32, "%lld", (long long)v);
    } else {
        val = pt_h5_attr_str(loc, name);
        if (!val) val = pt_xstrdup("?");
    }
    if (L->n == L->cap) {
        L->cap = L->cap ? L->cap * 2 : 32;
        L->keys = pt_xrealloc(L->keys, (size_t)L->cap * sizeof(char *));
        L->vals = pt_xrealloc(L->vals, (size_t)L->cap * sizeof(char *));
    }
    L->keys[L->n] = pt_xstrdup(name);
    L->vals[L->n++] = val;
    return 0;
}

int pt_h5_read_root_attrs(long long file, char ***keys, char ***vals, int *n) {
    attr_list L = {0};
    hsize_t idx = 0;
    herr_t rc = H5Aiterate2((hid_t)file, H5_INDEX_NAME, H5_ITER_INC, &idx, attr_cb, &L);
    *keys = L.keys;
    *vals = L.vals;
    *n = L.n;
    return rc < 0 ? -1 : 0;
}

const char *pt_outstate_attr(const pt_outstate *st, const char *key) {
    for (int i = 0; i < st->n_attrs; i++)
        if (!strcmp(st->attr_keys[i], key)) return st->attr_vals[i];
    return NULL;
}

static int attr_i64(const pt_outstate *st, const char *key, int64_t *out) {
    const char *v = pt_outstate_attr(st, key);
    if (!v) return -1;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end) return -1;
    *out = x;
    return 0;
}

/* ---- the state --------------------------------------------------------------------------------
 */

/* Rows of dataset i in segment k: [row0, end) in global rows. */
static int seg_dataset_rows(pt_outstate *st, int k, int i, hid_t sf, const char *dpath,
                            const char *path, const char *sp, pt_error *e) {
    const size_t at = (size_t)k * (size_t)st->n_specs + (size_t)i;
    const int64_t r = pt_h5_nrows(sf, dpath);
    if (r < 0)
        return pt_fail(e, "%s: segment %s lacks %s (written with other options?)", path, sp, dpath);
    int64_t row0 = k ? st->seg_end[at - (size_t)st->n_specs] : 0;
    hid_t d = H5Dopen2(sf, dpath, H5P_DEFAULT);
    if (d >= 0 && H5Aexists(d, "row0") > 0 && pt_h5_attr_i64(d, "row0", &row0)) row0 = -1;
    if (d >= 0) H5Dclose(d);
    const int64_t prev_end = k ? st->seg_end[at - (size_t)st->n_specs] : 0;
    if (row0 < 0 || row0 > prev_end || (k == 0 && row0 != 0))
        return pt_fail(e, "%s: segment %s: %s starts at row %lld, after the rows before it", path,
                       sp, dpath, (long long)row0);
    st->seg_row0[at] = row0;
    st->seg_end[at] = row0 + r;
    if (st->seg_end[at] < prev_end)
        return pt_fail(e, "%s: segment %s: %s ends before the segment before it", path, sp, dpath);
    st->rows[i] = st->seg_end[at];
    return 0;
}

void pt_outstate_free(pt_outstate *st) {
    for (int i = 0; i < st->n_attrs; i++) {
        free(st->attr_keys[i]);
        free(st->attr_vals[i]);
    }
    free(st->attr_keys);
    free(st->attr_vals);
    for (int k = 0; k < st->n_segs; k++) free(st->seg_names[k]);
    free(st->seg_names);
    free(st->seg_levels);
    free(st->seg_pairs);
    free(st->seg_row0);
    free(st->seg_end);
    free(st->rows);
    memset(st, 0, sizeof *st);
}

int pt_outstate_read(const char *path, const pt_colspec *specs, int n_specs, pt_outstate *st,
                     pt_error *e) {
    memset(st, 0, sizeof *st);
    pt_h5_quiet();
    struct stat sb;
    if (stat(path, &sb)) return pt_fail(e, "%s: %s", path, strerror(errno));
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return pt_fail(e, "%s: cannot open as HDF5", path);
    pt_h5_read_root_attrs(f, &st->attr_keys, &st->attr_vals, &st->n_attrs);
    H5Fclose(f);
    int64_t v;
    if (attr_i64(st, "punctum_format", &v))
        return pt_fail(e, "%s: not a punctum output (no punctum_format)", path);
    if (v != PUNCTUM_FORMAT)
        return pt_fail(e, "%s: punctum format %lld, this build writes format %d", path,
                       (long long)v, PUNCTUM_FORMAT);
    if (attr_i64(st, "committed_pairs", &st->committed_pairs) || attr_i64(st, "run_complete", &v))
        return pt_fail(e, "%s: not written by a resumable punctum run (no run_complete)", path);
    st->complete = v == 1;
    if (attr_i64(st, "input_offset", &st->pos.offset) ||
        attr_i64(st, "input_line", &st->pos.line) || attr_i64(st, "input_index", &st->pos.index))
        return pt_fail(e, "%s: no input position recorded", path);
    if (st->complete || !specs) return 0;

    /* an interrupted run: the segments its view maps */
    const char *parts = pt_outstate_attr(st, "parts");
    const char *list = pt_outstate_attr(st, "segments");
    if (!parts || !list) return pt_fail(e, "%s: an unfinished run without its segment list", path);
    char *dir = pt_dirname(path);
    char *pdir = pt_path_join(dir, parts);
    free(dir);
    st->n_specs = n_specs;
    st->rows = pt_xcalloc((size_t)n_specs, sizeof(int64_t));
    int rc = 0;
    char *copy = pt_xstrdup(list), *save = NULL;
    for (char *name = strtok_r(copy, "\n", &save); name && !rc;
         name = strtok_r(NULL, "\n", &save)) {
        const int k = st->n_segs++;
        st->seg_names = pt_xrealloc(st->seg_names, (size_t)st->n_segs * sizeof(char *));
        st->seg_levels = pt_xrealloc(st->seg_levels, (size_t)st->n_segs * sizeof(int));
        st->seg_pairs = pt_xrealloc(st->seg_pairs, (size_t)st->n_segs * sizeof(int64_t));
        const size_t cells = (size_t)st->n_segs * (size_t)n_specs * sizeof(int64_t);
        st->seg_row0 = pt_xrealloc(st->seg_row0, cells);
        st->seg_end = pt_xrealloc(st->seg_end, cells);
        st->seg_names[k] = pt_xstrdup(name);
        char *sp = pt_path_join(pdir, name);
        hid_t sf = H5Fopen(sp, H5F_ACC_RDONLY, H5P_DEFAULT);
        int64_t lv = 0, pr = 0;
        if (sf < 0 || pt_h5_attr_i64(sf, "seg_level", &lv) ||
            pt_h5_attr_i64(sf, "seg_pairs", &pr)) {
            rc = pt_fail(e, "%s: segment %s is missing or unreadable; the run cannot be resumed",
                         path, sp);
        } else {
            st->seg_levels[k] = (int)lv;
            st->seg_pairs[k] = pr;
            for (int i = 0; i < n_specs && !rc; i++)
                rc = seg_dataset_rows(st, k, i, sf, specs[i].path, path, sp, e);
        }
        if (sf >= 0) H5Fclose(sf);
        free(sp);
    }
    free(copy);
    free(pdir);
    if (rc) return rc;
    int64_t pairs = 0;
    for (int k = 0; k < st->n_segs; k++) pairs += st->seg_pairs[k];
    if (pairs != st->committed_pairs)
        return pt_fail(e, "%s: its segments hold %lld pairs but committed_pairs is %lld", path,
                       (long long)pairs, (long long)st->committed_pairs);
    return 0;
}
