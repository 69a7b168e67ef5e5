/* punctum — safetensors reader.
 *
 * Layout of a .safetensors file: an 8-byte little-endian header length N, N bytes of JSON
 * (an object mapping tensor names to {"dtype", "shape", "data_offsets"}, plus an optional
 * "__metadata__" object of strings), then the data section. data_offsets are relative to the
 * start of the data section.
 *
 * Everything in the header is validated before any tensor is handed out; the file may be
 * hostile. Tensors are kept sorted by name so that lookups are a binary search. */
#include "punctum/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(sizeof(size_t) >= sizeof(json_int_t), "size_t must hold any JSON integer");

/* ---- dtypes ----------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} DTYPES[] = {
    [PT_DT_BOOL] = {"BOOL", 1},       [PT_DT_U8] = {"U8", 1},     [PT_DT_I8] = {"I8", 1},
    [PT_DT_I16] = {"I16", 2},         [PT_DT_U16] = {"U16", 2},   [PT_DT_F16] = {"F16", 2},
    [PT_DT_BF16] = {"BF16", 2},       [PT_DT_I32] = {"I32", 4},   [PT_DT_U32] = {"U32", 4},
    [PT_DT_F32] = {"F32", 4},         [PT_DT_F64] = {"F64", 8},   [PT_DT_I64] = {"I64", 8},
    [PT_DT_U64] = {"U64", 8},         [PT_DT_F8_E4M3] = {"F8_E4M3", 1},
    [PT_DT_F8_E5M2] = {"F8_E5M2", 1},
};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])

size_t pt_dtype_size(pt_dtype dt) {
    if ((unsigned)dt >= N_DTYPES) return 0;
    return DTYPES[dt].size;
}

const char *pt_dtype_name(pt_dtype dt) {
    if ((unsigned)dt >= N_DTYPES) return "?";
    return DTYPES[dt].name;
}

static int dtype_from_name(const char *s, pt_dtype *out) {
    for (size_t i = 0; i < N_DTYPES; i++) {
        if (strcmp(s, DTYPES[i].name) == 0) {
            *out = (pt_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* ---- messages --------------------------------------------------------------------------------- */

/* A printable, one-line, bounded rendering of an untrusted string (tensor or shard name) for
 * error messages: control bytes, quotes and backslashes escaped, long names shortened. */
typedef struct {
    char s[160];
} safe_name;

static safe_name sn(const char *in) {
    safe_name r;
    size_t o = 0, cap = sizeof r.s;
    const unsigned char *p = (const unsigned char *)in;
    for (; *p; p++) {
        if (o + 8 >= cap) { /* room for "..." and NUL */
            memcpy(r.s + o, "...", 4);
            return r;
        }
        if (*p < 0x20 || *p == 0x7f || *p == '\\') {
            o += (size_t)snprintf(r.s + o, cap - o, "\\x%02x", *p);
        } else {
            r.s[o++] = (char)*p;
        }
    }
    r.s[o] = '\0';
    return r;
}

/* jansson reports a duplicate key (JSON_REJECT_DUPLICATES) as `duplicate object key near
 * '"KEY"'`; recover KEY (still JSON-escaped) so the message can name the tensor. */
static int duplicate_key(const json_error_t *je, char *out, size_t cap) {
    static const char prefix[] = "duplicate object key near '\"";
    if (json_error_code(je) != json_error_duplicate_key) return 0;
    if (strncmp(je->text, prefix, sizeof prefix - 1) != 0) return 0;
    const char *k = je->text + sizeof prefix - 1;
    const char *end = strrchr(k, '"');
    if (!end || (size_t)(end - k) >= cap) return 0;
    memcpy(out, k, (size_t)(end - k));
    out[end - k] = '\0';
    return 1;
}

/* ---- header parsing --------------------------------------------------------------------------- */

static void free_tensors(pt_st_tensor *ts, size_t n) {
    if (!ts) return;
    for (size_t i = 0; i < n; i++) free(ts[i].name);
    free(ts);
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(((const pt_st_tensor *)a)->name, ((const pt_st_tensor *)b)->name);
}

typedef struct {
    size_t begin, end;
    size_t idx;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

static void fmt_shape(char *buf, size_t cap, const pt_st_tensor *t) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int d = 0; d < t->ndim && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

static int parse_metadata(json_t *v, const char *name, pt_error *e) {
    if (json_is_null(v)) return 0; /* the reference reader accepts null (an absent Option) */
    if (!json_is_object(v)) return pt_fail(e, "%s: '__metadata__' must be an object", name);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        if (!json_is_string(x))
            return pt_fail(e, "%s: '__metadata__' value for '%s' must be a string", name, sn(k).s);
    }
    return 0;
}

/* Validate one tensor entry (everything that does not need the other entries). */
static int parse_entry(const char *tname, json_t *v, size_t data_len, const char *name,
                       pt_st_tensor *t, size_t *begin_out, size_t *end_out, pt_error *e) {
    safe_name nm = sn(tname);
    if (!json_is_object(v)) return pt_fail(e, "%s: tensor '%s': entry must be an object", name, nm.s);

    json_t *jd = json_object_get(v, "dtype");
    if (!jd) return pt_fail(e, "%s: tensor '%s': missing 'dtype'", name, nm.s);
    if (!json_is_string(jd)) return pt_fail(e, "%s: tensor '%s': 'dtype' must be a string", name, nm.s);
    if (dtype_from_name(json_string_value(jd), &t->dtype) != 0)
        return pt_fail(e, "%s: tensor '%s': unknown dtype '%s'", name, nm.s,
                       sn(json_string_value(jd)).s);

    json_t *js = json_object_get(v, "shape");
    if (!js) return pt_fail(e, "%s: tensor '%s': missing 'shape'", name, nm.s);
    if (!json_is_array(js)) return pt_fail(e, "%s: tensor '%s': 'shape' must be an array", name, nm.s);
    size_t ndim = json_array_size(js);
    if (ndim > PT_ST_MAX_DIMS)
        return pt_fail(e, "%s: tensor '%s': shape has %zu dimensions (at most %d supported)", name,
                       nm.s, ndim, PT_ST_MAX_DIMS);
    t->ndim = (int)ndim;
    size_t nelem = 1;
    int overflow = 0;
    for (size_t d = 0; d < ndim; d++) {
        json_t *x = json_array_get(js, d);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return pt_fail(e, "%s: tensor '%s': shape must be an array of non-negative integers",
                           name, nm.s);
        json_int_t dim = json_integer_value(x);
        t->shape[d] = (int64_t)dim;
        if (pt_mul_size(nelem, (size_t)dim, &nelem) != 0) overflow = 1;
    }
    /* A zero dimension makes the element count 0 whatever the other dimensions are. */
    for (size_t d = 0; d < ndim; d++)
        if (t->shape[d] == 0) overflow = 0, nelem = 0;

    json_t *jo = json_object_get(v, "data_offsets");
    if (!jo) return pt_fail(e, "%s: tensor '%s': missing 'data_offsets'", name, nm.s);
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !json_is_integer(json_array_get(jo, 0)) || !json_is_integer(json_array_get(jo, 1)) ||
        json_integer_value(json_array_get(jo, 0)) < 0 || json_integer_value(json_array_get(jo, 1)) < 0)
        return pt_fail(e, "%s: tensor '%s': 'data_offsets' must be [begin, end] non-negative integers",
                       name, nm.s);
    unsigned long long b = (unsigned long long)json_integer_value(json_array_get(jo, 0));
    unsigned long long en = (unsigned long long)json_integer_value(json_array_get(jo, 1));
    if (b > en)
        return pt_fail(e, "%s: tensor '%s': data_offsets [%llu, %llu] has begin > end", name, nm.s, b,
                       en);

    char shp[128];
    fmt_shape(shp, sizeof shp, t);
    size_t nbytes = 0;
    if (overflow || pt_mul_size(nelem, pt_dtype_size(t->dtype), &nbytes) != 0)
        return pt_fail(e, "%s: tensor '%s': shape %s x %s overflows the addressable size", name, nm.s,
                       shp, pt_dtype_name(t->dtype));
    if ((unsigned long long)nbytes != en - b)
        return pt_fail(e, "%s: tensor '%s': shape %s x %s is %zu bytes but data_offsets span %llu",
                       name, nm.s, shp, pt_dtype_name(t->dtype), nbytes, en - b);
    if (en > (unsigned long long)data_len)
        return pt_fail(e,
                       "%s: tensor '%s': data_offsets [%llu, %llu] extend past the end of the "
                       "%zu-byte data section",
                       name, nm.s, b, en, data_len);
    t->nelem = nelem;
    t->nbytes = nbytes;
    *begin_out = (size_t)b;
    *end_out = (size_t)en;
    return 0;
}

int pt_st_parse_buffer(const void *buf, size_t len, const char *name, pt_st_file *f, pt_error *e) {
    memset(f, 0, sizeof *f);
    const unsigned char *base = buf;
    if (!name) name = "(buffer)";
    if (len < 8)
        return pt_fail(e, "%s: file is %zu bytes, too short for the 8-byte header length", name, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | base[i];
    if (hlen > PT_ST_MAX_HEADER)
        return pt_fail(e, "%s: header length %llu exceeds the limit of %u bytes", name,
                       (unsigned long long)hlen, PT_ST_MAX_HEADER);
    if (hlen > len - 8)
        return pt_fail(e, "%s: header length %llu extends past the end of the %zu-byte file", name,
                       (unsigned long long)hlen, len);
    if (hlen == 0) return pt_fail(e, "%s: header is empty", name);
    const char *hdr = (const char *)base + 8;
    if (memchr(hdr, '\0', (size_t)hlen))
        return pt_fail(e, "%s: header contains a NUL byte", name);
    size_t data_off = 8 + (size_t)hlen;
    size_t data_len = len - data_off;

    json_error_t je;
    json_t *root = json_loadb(hdr, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        char dup[JSON_ERROR_TEXT_LENGTH];
        if (duplicate_key(&je, dup, sizeof dup))
            return pt_fail(e, "%s: tensor '%s' appears twice in the header", name, sn(dup).s);
        /* je.text is bounded (160 bytes) and comes from jansson; keep it on one line */
        safe_name why = sn(je.text);
        return pt_fail(e, "%s: header is not valid JSON (byte %d): %s", name, je.position, why.s);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return pt_fail(e, "%s: header is not a JSON object", name);
    }

    size_t cap = json_object_size(root);
    pt_st_tensor *ts = pt_try_calloc(cap ? cap : 1, sizeof *ts, "the tensor table", e);
    span *spans = ts ? pt_try_calloc(cap ? cap : 1, sizeof *spans, "the tensor table", e) : NULL;
    if (!spans) {
        free(ts);
        json_decref(root);
        return pt_fail_prefix(e, "%s", name);
    }
    size_t n = 0;
    int rc = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((rc = parse_metadata(v, name, e)) != 0) break;
            continue;
        }
        pt_st_tensor *t = &ts[n];
        size_t b = 0, en = 0;
        if ((rc = parse_entry(key, v, data_len, name, t, &b, &en, e)) != 0) break;
        if (!(t->name = pt_try_strdup(key, "a tensor name", e))) {
            rc = pt_fail_prefix(e, "%s", name);
            break;
        }
        spans[n].begin = b;
        spans[n].end = en;
        spans[n].idx = n;
        n++;
    }
    json_decref(root);

    if (rc == 0) {
        /* The spans, sorted by begin, must tile [0, data_len) exactly. */
        qsort(spans, n, sizeof *spans, cmp_span);
        size_t pos = 0;
        for (size_t i = 0; i < n && rc == 0; i++) {
            const span *s = &spans[i];
            const char *tn = ts[s->idx].name;
            if (s->begin < pos) {
                /* find who we overlap: the previous non-empty span */
                const char *other = i ? ts[spans[i - 1].idx].name : "?";
                rc = pt_fail(e, "%s: tensor '%s': data_offsets [%zu, %zu] overlap tensor '%s' (ends at %zu)",
                             name, sn(tn).s, s->begin, s->end, sn(other).s, pos);
            } else if (s->begin > pos) {
                rc = pt_fail(e,
                             "%s: tensor '%s': data_offsets [%zu, %zu] leave a gap: bytes [%zu, %zu) of "
                             "the data section belong to no tensor",
                             name, sn(tn).s, s->begin, s->end, pos, s->begin);
            }
            pos = s->end;
        }
        if (rc == 0 && pos != data_len)
            rc = pt_fail(e, "%s: tensors cover %zu bytes but the data section has %zu bytes", name, pos,
                         data_len);
        if (rc == 0) {
            for (size_t i = 0; i < n; i++) {
                ts[spans[i].idx].data = base + data_off + spans[i].begin;
            }
        }
    }
    free(spans);
    if (rc == 0) {
        qsort(ts, n, sizeof *ts, cmp_by_name);
        for (size_t i = 1; i < n; i++) {
            if (strcmp(ts[i - 1].name, ts[i].name) == 0) { /* cannot happen after JSON_REJECT_DUPLICATES */
                rc = pt_fail(e, "%s: tensor '%s' appears twice in the header", name, sn(ts[i].name).s);
                break;
            }
        }
    }
    if (rc != 0) {
        free_tensors(ts, n);
        return -1;
    }
    if (!(f->path = pt_try_strdup(name, "the file name", e))) {
        free_tensors(ts, n);
        return pt_fail_prefix(e, "%s", name);
    }
    for (size_t i = 0; i < n; i++) ts[i].file = f->path;
    f->tensors = ts;
    f->n_tensors = n;
    return 0;
}

int pt_st_open(const char *path, pt_st_file *f, pt_error *e) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return pt_fail(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return pt_fail(e, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return pt_fail(e, "%s: not a regular file", path);
    }
    if (st.st_size < 8) {
        close(fd);
        return pt_fail(e, "%s: file is %lld bytes, too short for the 8-byte header length", path,
                       (long long)st.st_size);
    }
    if ((unsigned long long)st.st_size > SIZE_MAX) {
        close(fd);
        return pt_fail(e, "%s: file too large to map", path);
    }
    size_t len = (size_t)st.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (map == MAP_FAILED) return pt_fail(e, "%s: cannot mmap: %s", path, strerror(err));
    if (pt_st_parse_buffer(map, len, path, f, e) != 0) {
        munmap(map, len);
        memset(f, 0, sizeof *f);
        return -1;
    }
    f->map = map;
    f->map_len = len;
    return 0;
}

void pt_st_close(pt_st_file *f) {
    if (!f) return;
    free_tensors(f->tensors, f->n_tensors);
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* ---- a model's weights: one file or shards -------------------------------------------------- */

#define PT_ST_INDEX_MAX_BYTES (64u * 1024u * 1024u)

static const pt_st_tensor *find_in_file(const pt_st_file *f, const char *name) {
    if (f->n_tensors == 0) return NULL;
    pt_st_tensor key;
    memset(&key, 0, sizeof key);
    key.name = (char *)name;
    return bsearch(&key, f->tensors, f->n_tensors, sizeof *f->tensors, cmp_by_name);
}

const pt_st_tensor *pt_st_find(const pt_st_set *s, const char *name) {
    if (!s || !name) return NULL;
    for (size_t i = 0; i < s->n_files; i++) {
        const pt_st_tensor *t = find_in_file(&s->files[i], name);
        if (t) return t;
    }
    return NULL;
}

void pt_st_set_close(pt_st_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_files; i++) pt_st_close(&s->files[i]);
    free(s->files);
    s->files = NULL;
    s->n_files = 0;
}

static int path_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int shard_name_ok(const char *s) {
    if (!*s) return 0;
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return 0;
    if (strchr(s, '/') || strchr(s, '\\')) return 0;
    return 1;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct {
    const char *name;
    size_t file;
} name_ref;

static int cmp_name_ref(const void *a, const void *b) {
    const name_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    return x->file < y->file ? -1 : (x->file > y->file);
}

static int open_index(const char *dir, const char *ipath, pt_st_set *s, pt_error *e) {
    size_t len = 0;
    char *text = pt_read_file(ipath, PT_ST_INDEX_MAX_BYTES, &len, e);
    if (!text) return -1;
    if (memchr(text, '\0', len)) {
        free(text);
        return pt_fail(e, "%s: contains a NUL byte", ipath);
    }
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root) {
        char dup[JSON_ERROR_TEXT_LENGTH];
        if (duplicate_key(&je, dup, sizeof dup))
            return pt_fail(e, "%s: key '%s' appears twice (line %d)", ipath, sn(dup).s, je.line);
        return pt_fail(e, "%s: not valid JSON (line %d): %s", ipath, je.line, sn(je.text).s);
    }
    int rc = 0;
    const char **shards = NULL;
    size_t n_shards = 0;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(root)) {
        rc = pt_fail(e, "%s: not a JSON object", ipath);
        goto done;
    }
    if (!wm) {
        rc = pt_fail(e, "%s: missing 'weight_map'", ipath);
        goto done;
    }
    if (!json_is_object(wm)) {
        rc = pt_fail(e, "%s: 'weight_map' must be an object", ipath);
        goto done;
    }
    if (json_object_size(wm) == 0) {
        rc = pt_fail(e, "%s: 'weight_map' is empty", ipath);
        goto done;
    }
    const char *tname;
    json_t *v;
    size_t cap = json_object_size(wm);
    if (!(shards = pt_try_calloc(cap, sizeof *shards, "the weight map", e))) {
        rc = pt_fail_prefix(e, "%s", ipath);
        goto done;
    }
    json_object_foreach(wm, tname, v) {
        if (!json_is_string(v)) {
            rc = pt_fail(e, "%s: weight_map entry for tensor '%s' must be a string", ipath, sn(tname).s);
            goto done;
        }
        const char *sh = json_string_value(v);
        if (!shard_name_ok(sh)) {
            rc = pt_fail(e, "%s: tensor '%s': shard '%s' is not a plain file name", ipath, sn(tname).s,
                         sn(sh).s);
            goto done;
        }
        shards[n_shards++] = sh;
    }
    qsort(shards, n_shards, sizeof *shards, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n_shards; i++)
        if (u == 0 || strcmp(shards[u - 1], shards[i]) != 0) shards[u++] = shards[i];
    n_shards = u;

    if (!(s->files = pt_try_calloc(n_shards, sizeof *s->files, "the shard table", e))) {
        rc = pt_fail_prefix(e, "%s", ipath);
        goto done;
    }
    for (size_t i = 0; i < n_shards; i++) {
        char *p = pt_path_join(dir, shards[i]);
        if (!path_exists(p)) {
            free(p);
            rc = pt_fail(e, "%s: shard '%s' does not exist", ipath, sn(shards[i]).s);
            goto done;
        }
        int r = pt_st_open(p, &s->files[i], e);
        free(p);
        if (r != 0) { /* the message names the shard file */
            rc = -1;
            goto done;
        }
        s->n_files = i + 1;
    }

    /* every tensor in the weight_map must be in the shard it names */
    json_object_foreach(wm, tname, v) {
        const char *sh = json_string_value(v);
        const char **hit = bsearch(&sh, shards, n_shards, sizeof *shards, cmp_str);
        size_t fi = (size_t)(hit - shards);
        if (!find_in_file(&s->files[fi], tname)) {
            rc = pt_fail(e, "%s: tensor '%s' is listed in shard '%s' but that file does not contain it",
                         ipath, sn(tname).s, sn(sh).s);
            goto done;
        }
    }

    /* tensor names unique across shards */
    size_t total = 0;
    for (size_t i = 0; i < s->n_files; i++) total += s->files[i].n_tensors;
    if (total > 1) {
        name_ref *refs = pt_try_calloc(total, sizeof *refs, "the tensor names", e);
        if (!refs) {
            rc = pt_fail_prefix(e, "%s", ipath);
            goto done;
        }
        size_t k = 0;
        for (size_t i = 0; i < s->n_files; i++)
            for (size_t j = 0; j < s->files[i].n_tensors; j++) {
                refs[k].name = s->files[i].tensors[j].name;
                refs[k].file = i;
                k++;
            }
        qsort(refs, total, sizeof *refs, cmp_name_ref);
        for (size_t i = 1; i < total; i++) {
            if (strcmp(refs[i - 1].name, refs[i].name) == 0) {
                rc = pt_fail(e, "%s: tensor '%s' appears in two shards, '%s' and '%s'", ipath,
                             sn(refs[i].name).s, sn(s->files[refs[i - 1].file].path).s,
                             sn(s->files[refs[i].file].path).s);
                break;
            }
        }
        free(refs);
    }

done:
    free(shards); /* the strings belong to root */
    json_decref(root);
    if (rc != 0) pt_st_set_close(s);
    return rc;
}

int pt_st_set_open(const char *model_dir, pt_st_set *s, pt_error *e) {
    memset(s, 0, sizeof *s);
    char *single = pt_path_join(model_dir, "model.safetensors");
    if (path_exists(single)) {
        s->files = pt_try_calloc(1, sizeof *s->files, "the shard table", e);
        int rc = s->files ? pt_st_open(single, &s->files[0], e) : pt_fail_prefix(e, "%s", single);
        free(single);
        if (rc != 0) {
            free(s->files);
            s->files = NULL;
            return -1;
        }
        s->n_files = 1;
        return 0;
    }
    free(single);
    char *ipath = pt_path_join(model_dir, "model.safetensors.index.json");
    if (!path_exists(ipath)) {
        free(ipath);
        return pt_fail(e, "%s: no model.safetensors or model.safetensors.index.json", model_dir);
    }
    int rc = open_index(model_dir, ipath, s, e);
    free(ipath);
    return rc;
}

/* ---- conversion ------------------------------------------------------------------------------- */

int pt_st_to_f32(const pt_st_tensor *t, float *dst, pt_error *e) {
    const unsigned char *p = t->data;
    size_t n = t->nelem;
    int convertible = t->dtype == PT_DT_F32 || t->dtype == PT_DT_F16 || t->dtype == PT_DT_BF16;
    if (convertible && n == 0) return 0; /* data and dst may both be empty */
    switch (t->dtype) {
    case PT_DT_F32:
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(dst, p, n * 4); /* the mapping may be unaligned for float */
        return 0;
#endif
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                         (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
            memcpy(&dst[i], &u, 4);
        }
        return 0;
    case PT_DT_F16:
        for (size_t i = 0; i < n; i++) dst[i] = pt_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return 0;
    case PT_DT_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = pt_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return 0;
    default:
        return pt_fail(e, "%s: tensor '%s': dtype %s cannot be converted to float32 (F32, F16, BF16 only)",
                       t->file ? t->file : "?", sn(t->name ? t->name : "?").s, pt_dtype_name(t->dtype));
    }
}
