/* punctum — merging shard outputs (see merge.h). */
#include "io/merge.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/chunkio.h"
#include "io/h5util.h"
#include "io/outstate.h"

// clang-format off
enum { T_PAIRS, T_SEQS, T_TOKENS, T_PATTERNS, T_WINDOWS, T_KO, T_PATCH, T_LENS, T_GEN, T_GENTOK,
       T_N };
// clang-format on
static const char *const TNAMES[T_N] = {"pairs",    "seqs",     "tokens", "patterns", "windows",
                                        "knockout", "patching", "lens",   "gen",      "gen_tokens"};
#define BUDGET_BYTES ((size_t)256 << 20) /* all block buffers together */

static int table_id(const char *p) {
    static const struct {
        const char *prefix;
        int t;
    } map[] = {{"/pairs/", T_PAIRS},
               {"/seqs/", T_SEQS},
               {"/tokens/", T_TOKENS},
               {"/patterns/", T_PATTERNS},
               {"/ablation/knockout/", T_KO},
               {"/patching/resid/", T_PATCH},
               {"/lens/", T_LENS},
               {"/gen/tokens/", T_GENTOK}, /* before /gen/: the first match wins */
               {"/gen/", T_GEN}};
    if (!strcmp(p, "/ablation/windows")) return T_WINDOWS;
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
        if (!strncmp(p, map[k].prefix, strlen(map[k].prefix))) return map[k].t;
    return -1;
}

static int index_base_id(const char *p) {
    static const struct {
        const char *path;
        int base;
    } map[] = {{"/pairs/seq_a", T_SEQS},
               {"/pairs/seq_b", T_SEQS},
               {"/seqs/pair", T_PAIRS},
               {"/seqs/tok_start", T_TOKENS},
               {"/seqs/pattern_start", T_PATTERNS},
               {"/tokens/seq", T_SEQS},
               {"/ablation/knockout/seq", T_SEQS},
               {"/patching/resid/pair", T_PAIRS},
               {"/lens/seq", T_SEQS},
               {"/gen/seq", T_SEQS},
               {"/gen/tok_start", T_GENTOK}};
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
        if (!strcmp(p, map[k].path)) return map[k].base;
    return -1;
}

const char *pt_table_of(const char *path) {
    int t = table_id(path);
    return t < 0 ? NULL : TNAMES[t];
}

const char *pt_index_base(const char *path) {
    int b = index_base_id(path);
    return b < 0 ? "" : TNAMES[b];
}

/* The column whose value says which row of the parent table a row belongs to. */
static const char *const OWNER[T_N] = {NULL,
                                       "/seqs/pair",
                                       "/tokens/seq",
                                       NULL,
                                       NULL,
                                       "/ablation/knockout/seq",
                                       "/patching/resid/pair",
                                       "/lens/seq",
                                       "/gen/seq",
                                       NULL};

/* ---- parts --------------------------------------------------------------------------------- */

typedef struct {
    hid_t ds, mt;
    size_t esz; /* bytes per row in memory */
    int is_str;
    char *buf;
    int64_t b0, bn;
} pcol;

typedef struct {
    const char *path;
    hid_t f;
    char **akeys, **avals;
    int n_attrs;
    int64_t pairs; /* committed pairs: the rows of /pairs this merge uses */
    int complete;
    int shard_i, shard_n, block;
    pcol *cols; /* [n_cols], same order as the output's */
    int64_t nrows[T_N], cur[T_N];
} part_t;

typedef struct {
    char *path;
    int table, base, nonneg;
    int gen_variant; /* /gen/variant: a knockout or patching row, by /gen/kind */
    hid_t ds, mt;
    size_t esz;
    int is_str;
    int rank;
    hsize_t trail[2];
    char *buf;
    int64_t n, written;
    int cw_col; /* numeric columns: chunks encoded by the pool (-1: strings, written by HDF5) */
} ocol;

typedef struct {
    part_t *parts;
    int n_parts;
    ocol *cols;
    int n_cols;
    int64_t block[T_N]; /* rows per block buffer of each table */
    int64_t out_cap[T_N];
    int has[T_N];
    int line_col, ntok_col, gen_ntok_col, gen_kind_col, owner_col[T_N];
    int64_t G[T_N]; /* rows emitted per table */
    hid_t out;
    pt_cwriter *cw;
    pt_error *e;
} merger;

static const char *attr(const part_t *p, const char *key) {
    for (int i = 0; i < p->n_attrs; i++)
        if (!strcmp(p->akeys[i], key)) return p->avals[i];
    return NULL;
}

static void free_strings(pcol *c, int64_t from, int64_t to) {
    if (!c->is_str || !c->buf) return;
    char **s = (char **)c->buf;
    for (int64_t k = from; k < to; k++)
        if (s[k]) {
            H5free_memory(s[k]);
            s[k] = NULL;
        }
}

/* Row r of column j of part p, reading a block when r is outside the buffered one. */
static char *row(merger *M, part_t *p, int j, int64_t r) {
    pcol *c = &p->cols[j];
    if (r >= c->b0 && r < c->b0 + c->bn) return c->buf + (size_t)(r - c->b0) * c->esz;
    const int t = M->cols[j].table;
    free_strings(c, 0, c->bn);
    int64_t n = p->nrows[t] - r;
    if (n > M->block[t]) n = M->block[t];
    if (n <= 0) return NULL;
    if (!c->buf) c->buf = pt_xcalloc((size_t)M->block[t], c->esz);
    if (c->is_str) memset(c->buf, 0, (size_t)n * c->esz);
    if (pt_h5_read_rows(c->ds, c->mt, r, n, c->buf)) {
        c->bn = 0;
        pt_fail(M->e, "%s: reading %s failed", p->path, M->cols[j].path);
        return NULL;
    }
    c->b0 = r;
    c->bn = n;
    return c->buf;
}

static int64_t row_i64(merger *M, part_t *p, int j, int64_t r, int *err) {
    char *x = row(M, p, j, r);
    if (!x) {
        *err = 1;
        return 0;
    }
    int64_t v;
    memcpy(&v, x, sizeof v);
    return v;
}

static int flush_table(merger *M, int t) {
    for (int j = 0; j < M->n_cols; j++) {
        ocol *o = &M->cols[j];
        if (o->table != t || o->n == 0) continue;
        hsize_t dims[3] = {(hsize_t)(o->written + o->n), o->trail[0], o->trail[1]};
        if (o->cw_col >= 0 ? pt_cwriter_append(M->cw, o->cw_col, o->buf, (size_t)o->n)
                           : H5Dset_extent(o->ds, dims) < 0 ||
                                 pt_h5_write_rows(o->ds, o->mt, o->written, o->n, o->buf))
            return pt_fail(M->e, "writing %s failed%s", o->path,
                           errno == ENOSPC ? ": no space left on device" : "");
        if (o->is_str) {
            char **s = (char **)o->buf;
            for (int64_t k = 0; k < o->n; k++) H5free_memory(s[k]);
        }
        o->written += o->n;
        o->n = 0;
    }
    return 0;
}

/* Emit rows [r0, r1) of table t of part p, renumbering index columns by delta[base]. */
static int emit(merger *M, part_t *p, int t, int64_t r0, int64_t r1, const int64_t *delta) {
    for (int64_t r = r0; r < r1; r++) {
        for (int j = 0; j < M->n_cols; j++) {
            ocol *o = &M->cols[j];
            if (o->table != t) continue;
            char *src = row(M, p, j, r);
            if (!src)
                return pt_fail(M->e, "%s: %s ends early (row %lld)", p->path, o->path,
                               (long long)r);
            char *dst = o->buf + (size_t)o->n * o->esz;
            memcpy(dst, src, o->esz);
            if (o->is_str) *(char **)src = NULL; /* moved */
            if (o->gen_variant) {
                const char *k = M->gen_kind_col < 0 ? NULL : row(M, p, M->gen_kind_col, r);
                int64_t v;
                memcpy(&v, dst, sizeof v);
                if (k && v >= 0) v += delta[*(const int8_t *)k == 1 ? T_KO : T_PATCH];
                memcpy(dst, &v, sizeof v);
            } else if (o->base >= 0) {
                int64_t v;
                memcpy(&v, dst, sizeof v);
                if (!(o->nonneg && v < 0)) v += delta[o->base];
                memcpy(dst, &v, sizeof v);
            }
        }
        for (int j = 0; j < M->n_cols; j++)
            if (M->cols[j].table == t) M->cols[j].n++;
        M->G[t]++;
        int64_t n = 0;
        for (int j = 0; j < M->n_cols; j++)
            if (M->cols[j].table == t) n = M->cols[j].n;
        if (n >= M->out_cap[t] && flush_table(M, t)) return -1;
    }
    p->cur[t] = r1;
    return 0;
}

/* All rows of local pair i of part p, in every table. */
static int emit_pair(merger *M, part_t *p) {
    const int64_t i = p->cur[T_PAIRS];
    int err = 0;
    int64_t end[T_N], delta[T_N];
    for (int t = 0; t < T_N; t++) end[t] = p->cur[t];
    end[T_PAIRS] = i + 1;
    /* its sequences */
    int64_t s1 = p->cur[T_SEQS];
    if (M->has[T_SEQS])
        while (s1 < p->nrows[T_SEQS] && row_i64(M, p, M->owner_col[T_SEQS], s1, &err) == i && !err)
            s1++;
    end[T_SEQS] = s1;
    /* rows owned by its sequences or by the pair */
    const int by_seq[] = {T_TOKENS, T_KO, T_LENS, T_GEN};
    for (size_t k = 0; k < 4; k++) {
        const int t = by_seq[k];
        if (!M->has[t]) continue;
        int64_t r = p->cur[t];
        while (r < p->nrows[t] && row_i64(M, p, M->owner_col[t], r, &err) < s1 && !err) r++;
        end[t] = r;
    }
    if (M->has[T_PATCH]) {
        int64_t r = p->cur[T_PATCH];
        while (r < p->nrows[T_PATCH] && row_i64(M, p, M->owner_col[T_PATCH], r, &err) <= i && !err)
            r++;
        end[T_PATCH] = r;
    }
    if (M->has[T_PATTERNS]) {
        int64_t rows = 0;
        for (int64_t s = p->cur[T_SEQS]; s < s1 && !err; s++) {
            char *x = row(M, p, M->ntok_col, s);
            if (!x)
                err = 1;
            else {
                int32_t T;
                memcpy(&T, x, sizeof T);
                rows += (int64_t)T * (T + 1) / 2;
            }
        }
        end[T_PATTERNS] = p->cur[T_PATTERNS] + rows;
        if (end[T_PATTERNS] > p->nrows[T_PATTERNS]) err = 1;
    }
    if (M->has[T_GENTOK]) { /* the generated tokens of its /gen rows */
        int64_t rows = 0;
        for (int64_t g = p->cur[T_GEN]; g < end[T_GEN] && !err; g++) {
            char *x = M->gen_ntok_col < 0 ? NULL : row(M, p, M->gen_ntok_col, g);
            int32_t n = 0;
            if (!x)
                err = 1;
            else
                memcpy(&n, x, sizeof n);
            rows += n;
        }
        end[T_GENTOK] = p->cur[T_GENTOK] + rows;
        if (end[T_GENTOK] > p->nrows[T_GENTOK]) err = 1;
    }
    if (err)
        return M->e->msg[0]
                   ? -1
                   : pt_fail(M->e, "%s: inconsistent rows for pair %lld", p->path, (long long)i);
    for (int t = 0; t < T_N; t++) delta[t] = M->G[t] - p->cur[t];
    for (int t = 0; t < T_N; t++) {
        if (t == T_WINDOWS || !M->has[t] || end[t] == p->cur[t]) continue;
        if (emit(M, p, t, p->cur[t], end[t], delta)) return -1;
    }
    return 0;
}

/* ---- checks ------------------------------------------------------------------------------- */

/* Options that change the output (writer attributes), with the option a user would name. */
static const struct {
    const char *attr, *option;
} AGREE[] = {{"punctum_format", "format"},     {"model_fingerprint", "--model"},
             {"input_fingerprint", "--pairs"}, {"backend", "--backend"},
             {"compute_dtype", "--dtype"},     {"opt_stats", "--stats"},
             {"opt_topk", "--topk"},           {"opt_ablate", "--ablate"},
             {"opt_positions", "--positions"}, {"opt_windows", "--windows"},
             {"opt_patch", "--patch"},         {"opt_derive_b", "--derive-b"},
             {"opt_chat", "--chat"},           {"opt_generate", "--generate"},
             {"store_dtype", "--store"}};

static int parse_shard(part_t *p) {
    const char *s = attr(p, "opt_shard");
    if (!s) return -1;
    p->block = !strncmp(s, "block ", 6);
    if (p->block) s += 6;
    return sscanf(s, "%d/%d", &p->shard_i, &p->shard_n) == 2 && p->shard_n >= 1 ? 0 : -1;
}

static void part_close(part_t *p, int n_cols) {
    if (p->cols)
        for (int j = 0; j < n_cols; j++) {
            free_strings(&p->cols[j], 0, p->cols[j].bn);
            free(p->cols[j].buf);
            if (p->cols[j].ds >= 0) H5Dclose(p->cols[j].ds);
            if (p->cols[j].mt >= 0) H5Tclose(p->cols[j].mt);
        }
    free(p->cols);
    for (int i = 0; i < p->n_attrs; i++) {
        free(p->akeys[i]);
        free(p->avals[i]);
    }
    free(p->akeys);
    free(p->avals);
    if (p->f >= 0) H5Fclose(p->f);
}

static int write_out_attrs(merger *M, int complete, const char *shard_desc) {
    part_t *p0 = &M->parts[0];
    static const char *const skip[] = {
        "committed_pairs", "run_complete", "parts",       "segments",     "opt_shard",
        "input_offset",    "input_line",   "input_index", "mpi_rank",     "mpi_size",
        "rank_files",      "mpi_view",     "created",     "f16_saturated"};
    for (int i = 0; i < p0->n_attrs; i++) {
        int s = 0;
        for (size_t k = 0; k < sizeof skip / sizeof skip[0] && !s; k++)
            s = !strcmp(p0->akeys[i], skip[k]);
        if (s) continue;
        /* integers stay integers */
        char *end;
        long long v = strtoll(p0->avals[i], &end, 10);
        int rc;
        hid_t at = H5Aopen(p0->f, p0->akeys[i], H5P_DEFAULT);
        hid_t ty = at >= 0 ? H5Aget_type(at) : -1;
        const int is_int =
            ty >= 0 && H5Tget_class(ty) == H5T_INTEGER && *end == 0 && end != p0->avals[i];
        if (ty >= 0) H5Tclose(ty);
        if (at >= 0) H5Aclose(at);
        rc = is_int ? pt_h5_put_i64(M->out, p0->akeys[i], v)
                    : pt_h5_put_str(M->out, p0->akeys[i], p0->avals[i]);
        if (rc) return -1;
    }
    int64_t off = 0, line = 0, index = 0;
    for (int k = 0; k < M->n_parts; k++) {
        const char *a;
        if ((a = attr(&M->parts[k], "input_offset")) && atoll(a) > off) off = atoll(a);
        if ((a = attr(&M->parts[k], "input_line")) && atoll(a) > line) line = atoll(a);
        if ((a = attr(&M->parts[k], "input_index")) && atoll(a) > index) index = atoll(a);
    }
    char created[32];
    time_t now = time(NULL);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    size_t len = 1;
    for (int k = 0; k < M->n_parts; k++) len += strlen(M->parts[k].path) + 1;
    char *from = pt_xcalloc(1, len);
    for (int k = 0; k < M->n_parts; k++) {
        if (k) strcat(from, "\n");
        strcat(from, M->parts[k].path);
    }
    int64_t sat = 0;
    int has_sat = 0;
    for (int k = 0; k < M->n_parts; k++) {
        const char *a = attr(&M->parts[k], "f16_saturated");
        if (a) sat += atoll(a), has_sat = 1;
    }
    int rc =
        (has_sat && pt_h5_put_i64(M->out, "f16_saturated", sat)) ||
        pt_h5_put_str(M->out, "created", created) ||
        pt_h5_put_str(M->out, "opt_shard", shard_desc) ||
        pt_h5_put_str(M->out, "merged_from", from) || pt_h5_put_i64(M->out, "input_offset", off) ||
        pt_h5_put_i64(M->out, "input_line", line) || pt_h5_put_i64(M->out, "input_index", index) ||
        pt_h5_put_i64(M->out, "run_complete", complete) ||
        pt_h5_put_i64(M->out, "committed_pairs", M->G[T_PAIRS]);
    free(from);
    return rc ? -1 : 0;
}

int pt_merge_files(const char *out, char *const *paths, int n_parts, int allow_partial, int force,
                   pt_error *e) {
    pt_h5_quiet();
    merger M0, *M = &M0;
    memset(M, 0, sizeof *M);
    M->e = e;
    M->out = -1;
    int rc = 0;
    struct stat st;
    char *tmp = NULL;
    pt_h5_dsets dl = {0};
    if (n_parts < 1) return pt_fail(e, "no parts to merge"), 2;
    if (!force && stat(out, &st) == 0)
        return pt_fail(e, "%s already exists (use --force to overwrite)", out), 2;
    for (int k = 0; k < n_parts; k++) {
        struct stat ps;
        if (stat(paths[k], &ps) == 0 && stat(out, &st) == 0 && ps.st_ino == st.st_ino &&
            ps.st_dev == st.st_dev)
            return pt_fail(e, "--out %s is also a part", out), 2;
    }
    M->parts = pt_xcalloc((size_t)n_parts, sizeof(part_t));
    M->n_parts = n_parts;
    for (int k = 0; k < n_parts; k++) M->parts[k].f = -1;

    /* ---- open the parts and check that they belong together ---- */
    for (int k = 0; k < n_parts && !rc; k++) {
        part_t *p = &M->parts[k];
        p->path = paths[k];
        p->f = H5Fopen(p->path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (p->f < 0) {
            rc = 2, pt_fail(e, "%s: cannot open as HDF5", p->path);
            break;
        }
        pt_h5_read_root_attrs(p->f, &p->akeys, &p->avals, &p->n_attrs);
        const char *cp = attr(p, "committed_pairs"), *done = attr(p, "run_complete");
        if (!attr(p, "punctum_format") || !cp) {
            rc = 2, pt_fail(e, "%s: not a punctum output", p->path);
            break;
        }
        p->pairs = atoll(cp);
        p->complete = done && !strcmp(done, "1");
        if (parse_shard(p)) {
            rc = 2, pt_fail(e, "%s: no shard recorded (written by an older punctum?)", p->path);
            break;
        }
        if (!p->complete && !allow_partial) {
            rc = 2,
            pt_fail(
                e,
                "%s: an unfinished run (%lld pairs committed; finish it with punctum run --resume, "
                "or merge what it has with --allow-partial)",
                p->path, (long long)p->pairs);
            break;
        }
        if (k == 0) continue;
        part_t *p0 = &M->parts[0];
        for (size_t a = 0; a < sizeof AGREE / sizeof AGREE[0]; a++) {
            const char *x = attr(p0, AGREE[a].attr), *y = attr(p, AGREE[a].attr);
            if (!x || !y || strcmp(x, y)) {
                rc = 2;
                if (!strcmp(AGREE[a].attr, "model_fingerprint"))
                    pt_fail(e, "%s and %s disagree on --model (%s vs %s)", p0->path, p->path,
                            attr(p0, "model_dir"), attr(p, "model_dir"));
                else if (!strcmp(AGREE[a].attr, "input_fingerprint"))
                    pt_fail(e, "%s and %s disagree on --pairs (different input files: %s vs %s)",
                            p0->path, p->path, attr(p0, "pairs_file"), attr(p, "pairs_file"));
                else
                    pt_fail(e, "%s and %s disagree on %s (%s vs %s)", p0->path, p->path,
                            AGREE[a].option, x ? x : "absent", y ? y : "absent");
                break;
            }
        }
        if (rc) break;
        if (p->shard_n != p0->shard_n || p->block != p0->block) {
            rc = 2, pt_fail(e, "%s and %s are shards of different splits (%s vs %s)", p0->path,
                            p->path, attr(p0, "opt_shard"), attr(p, "opt_shard"));
            break;
        }
        for (int q = 0; q < k; q++)
            if (M->parts[q].shard_i == p->shard_i) {
                rc = 2, pt_fail(e, "%s and %s are the same shard (%s)", M->parts[q].path, p->path,
                                attr(p, "opt_shard"));
                break;
            }
    }
    int complete = 1;
    char shard_desc[256] = "0/1";
    if (!rc) {
        const int N = M->parts[0].shard_n;
        int missing = -1, n_missing = 0;
        for (int i = 0; i < N; i++) {
            int found = 0;
            for (int k = 0; k < n_parts; k++) found |= M->parts[k].shard_i == i;
            if (!found) missing = missing < 0 ? i : missing, n_missing++;
        }
        for (int k = 0; k < n_parts; k++) complete &= M->parts[k].complete;
        if (n_missing) {
            complete = 0;
            if (!allow_partial)
                rc = 2,
                pt_fail(e, "shard %d/%d is missing%s (merge every shard, or use --allow-partial)",
                        missing, N, n_missing > 1 ? " (and others)" : "");
        }
        if (!complete) {
            size_t o = (size_t)snprintf(shard_desc, sizeof shard_desc, "partial:");
            for (int k = 0; k < n_parts && o < sizeof shard_desc; k++)
                o += (size_t)snprintf(shard_desc + o, sizeof shard_desc - o, "%s%d", k ? "," : "",
                                      M->parts[k].shard_i);
            if (o < sizeof shard_desc) snprintf(shard_desc + o, sizeof shard_desc - o, "/%d", N);
        }
    }

    /* ---- the datasets: every part has the same ---- */
    if (!rc && pt_h5_list_dsets(M->parts[0].f, &dl))
        rc = 1, pt_fail(e, "%s: cannot list datasets", M->parts[0].path);
    if (!rc) {
        M->n_cols = dl.n;
        M->cols = pt_xcalloc((size_t)dl.n, sizeof(ocol));
        for (int k = 0; k < n_parts; k++) {
            M->parts[k].cols = pt_xcalloc((size_t)dl.n, sizeof(pcol));
            for (int j = 0; j < dl.n; j++) M->parts[k].cols[j].ds = M->parts[k].cols[j].mt = -1;
        }
        for (int j = 0; j < dl.n; j++) M->cols[j].ds = M->cols[j].mt = M->cols[j].cw_col = -1;
    }
    for (int k = 0; k < n_parts; k++)
        for (int t = 0; t < T_N; t++) M->parts[k].nrows[t] = -1;
    M->line_col = M->ntok_col = M->gen_ntok_col = M->gen_kind_col = -1;
    for (int t = 0; t < T_N; t++) M->owner_col[t] = -1;
    for (int j = 0; j < M->n_cols && !rc; j++) {
        ocol *o = &M->cols[j];
        o->path = dl.paths[j];
        o->table = table_id(o->path);
        if (o->table < 0) {
            rc = 2,
            pt_fail(e, "%s: unknown dataset %s (a newer format?)", M->parts[0].path, o->path);
            break;
        }
        o->base = index_base_id(o->path);
        o->nonneg = !strcmp(o->path, "/pairs/seq_a") || !strcmp(o->path, "/pairs/seq_b");
        M->has[o->table] = 1;
        if (!strcmp(o->path, "/pairs/line")) M->line_col = j;
        if (!strcmp(o->path, "/seqs/n_tok")) M->ntok_col = j;
        if (!strcmp(o->path, "/gen/n_tok")) M->gen_ntok_col = j;
        if (!strcmp(o->path, "/gen/kind")) M->gen_kind_col = j;
        o->gen_variant = !strcmp(o->path, "/gen/variant");
        for (int t = 0; t < T_N; t++)
            if (OWNER[t] && !strcmp(o->path, OWNER[t])) M->owner_col[t] = j;
        for (int k = 0; k < n_parts && !rc; k++) {
            part_t *p = &M->parts[k];
            pcol *c = &p->cols[j];
            c->ds = H5Lexists(p->f, o->path, H5P_DEFAULT) > 0 ? H5Dopen2(p->f, o->path, H5P_DEFAULT)
                                                              : -1;
            if (c->ds < 0) {
                rc = 2, pt_fail(e, "%s lacks %s, which %s has (written with other options)",
                                p->path, o->path, M->parts[0].path);
                break;
            }
            c->mt = pt_h5_copy_type(c->ds);
            int rank;
            const size_t elems = pt_h5_row_elems(c->ds, &rank);
            c->esz = H5Tget_size(c->mt) * elems;
            c->is_str = H5Tget_class(c->mt) == H5T_STRING;
            if (c->is_str && elems != 1)
                rc = 2,
                pt_fail(e, "%s: %s: string arrays are not part of the format", p->path, o->path);
            hsize_t dims[8] = {0};
            hid_t sp = H5Dget_space(c->ds);
            H5Sget_simple_extent_dims(sp, dims, NULL);
            H5Sclose(sp);
            if (k == 0) {
                o->rank = rank;
                o->trail[0] = rank > 1 ? dims[1] : 0;
                o->trail[1] = rank > 2 ? dims[2] : 0;
                o->esz = c->esz;
                o->is_str = c->is_str;
                o->mt = H5Tcopy(c->mt);
            } else if (rank != o->rank || (rank > 1 && dims[1] != o->trail[0]) ||
                       (rank > 2 && dims[2] != o->trail[1]) || c->esz != o->esz) {
                rc = 2, pt_fail(e, "%s and %s disagree on the shape of %s", M->parts[0].path,
                                p->path, o->path);
            }
            int64_t n = (int64_t)dims[0];
            if (o->table == T_PAIRS && n > p->pairs) n = p->pairs; /* never past committed_pairs */
            if (p->nrows[o->table] < 0 || n < p->nrows[o->table]) p->nrows[o->table] = n;
        }
    }
    for (int k = 0; k < n_parts; k++)
        for (int t = 0; t < T_N; t++)
            if (M->parts[k].nrows[t] < 0) M->parts[k].nrows[t] = 0;
    if (!rc && (M->line_col < 0 || (M->has[T_SEQS] && M->owner_col[T_SEQS] < 0) ||
                (M->has[T_PATTERNS] && M->ntok_col < 0)))
        rc = 2, pt_fail(e, "%s: not a complete punctum layout (no /pairs/line or /seqs/pair)",
                        M->parts[0].path);
    for (int t = 0; t < T_N && !rc; t++)
        if (M->has[t] && OWNER[t] && M->owner_col[t] < 0)
            rc = 2, pt_fail(e, "%s: %s table without its index column %s", M->parts[0].path,
                            TNAMES[t], OWNER[t]);
    for (int k = 0; k < n_parts && !rc; k++)
        if (M->parts[k].nrows[T_PAIRS] < M->parts[k].pairs)
            rc = 1,
            pt_fail(e, "%s: committed_pairs is %lld but /pairs has %lld rows", M->parts[k].path,
                    (long long)M->parts[k].pairs, (long long)M->parts[k].nrows[T_PAIRS]);

    /* block sizes: the budget split over tables and buffers */
    if (!rc) {
        int n_tabs = 0;
        for (int t = 0; t < T_N; t++) n_tabs += M->has[t];
        for (int t = 0; t < T_N; t++) {
            size_t rb = 0;
            for (int j = 0; j < M->n_cols; j++)
                if (M->cols[j].table == t) rb += M->cols[j].esz;
            if (!rb) continue;
            int64_t b = (int64_t)(BUDGET_BYTES / (size_t)(n_tabs ? n_tabs : 1) /
                                  (size_t)(n_parts + 1) / rb);
            M->block[t] = b < 64 ? 64 : b > 65536 ? 65536 : b;
            M->out_cap[t] = M->block[t];
        }
    }

    /* ---- write OUT.tmp, rename ---- */
    if (!rc) {
        tmp = pt_xmalloc(strlen(out) + 8);
        sprintf(tmp, "%s.tmp", out);
        unlink(tmp);
        M->out = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        if (M->out < 0) rc = 1, pt_fail(e, "%s: cannot create", tmp);
        const pt_cwriter_opts co = {pt_writer_auto_threads(-1, 1), 0};
        if (!rc && !(M->cw = pt_cwriter_new(&co)))
            rc = 1, pt_fail(e, "%s: cannot start the encoding threads", tmp);
    }
    for (int j = 0; j < M->n_cols && !rc; j++) {
        ocol *o = &M->cols[j];
        pt_colspec spec = {o->path, PT_I8, o->rank - 1, {(int)o->trail[0], (int)o->trail[1]}};
        hid_t ft = H5Dget_type(M->parts[0].cols[j].ds);
        o->ds = pt_h5_create_col(M->out, &spec, ft, 0);
        H5Tclose(ft);
        if (o->ds < 0) rc = 1, pt_fail(e, "%s: cannot create %s", tmp, o->path);
        o->cw_col = -1;
        if (!o->is_str && o->ds >= 0) { /* chunks encoded in parallel, written directly */
            o->cw_col = pt_cwriter_add(M->cw, &spec, H5Tget_size(o->mt), 0);
            pt_cwriter_target(M->cw, o->cw_col, o->ds, 0);
        }
        o->buf = pt_xcalloc((size_t)(M->out_cap[o->table] ? M->out_cap[o->table] : 1), o->esz);
    }
    /* the knockout windows are the same in every part: the first part's */
    if (!rc && M->has[T_WINDOWS]) {
        int64_t zero[T_N] = {0};
        if (emit(M, &M->parts[0], T_WINDOWS, 0, M->parts[0].nrows[T_WINDOWS], zero) ||
            flush_table(M, T_WINDOWS))
            rc = 1;
    }
    /* pairs in input order: the part whose next pair has the smallest line */
    while (!rc) {
        int best = -1;
        int64_t best_line = 0;
        for (int k = 0; k < n_parts; k++) {
            part_t *p = &M->parts[k];
            if (p->cur[T_PAIRS] >= p->pairs) continue;
            int err = 0;
            int64_t line = row_i64(M, p, M->line_col, p->cur[T_PAIRS], &err);
            if (err) {
                rc = 1;
                break;
            }
            if (best >= 0 && line == best_line) {
                rc = 2, pt_fail(e, "%s and %s both hold input line %lld (overlapping shards)",
                                M->parts[best].path, p->path, (long long)line);
                break;
            }
            if (best < 0 || line < best_line) best = k, best_line = line;
        }
        if (rc || best < 0) break;
        if (emit_pair(M, &M->parts[best])) rc = 1;
    }
    for (int t = 0; t < T_N && !rc; t++)
        if (M->has[t] && flush_table(M, t)) rc = 1;
    if (!rc && M->cw && pt_cwriter_flush(M->cw, 0))
        rc = 1,
        pt_fail(e, "%s: writing failed%s", tmp, errno == ENOSPC ? ": no space left on device" : "");
    for (int k = 0; k < n_parts && !rc; k++)
        for (int t = 0; t < T_N && !rc; t++)
            if (M->has[t] && t != T_WINDOWS && M->parts[k].cur[t] != M->parts[k].nrows[t] &&
                M->parts[k].complete)
                rc = 1,
                pt_fail(e, "%s: %lld rows of its %s table belong to no pair", M->parts[k].path,
                        (long long)(M->parts[k].nrows[t] - M->parts[k].cur[t]), TNAMES[t]);
    if (!rc && write_out_attrs(M, complete, shard_desc))
        rc = 1, pt_fail(e, "%s: writing attributes failed", tmp);
    pt_cwriter_free(M->cw); /* before the datasets it writes to close */
    for (int j = 0; j < M->n_cols; j++) {
        ocol *o = &M->cols[j];
        if (o->is_str && o->buf) {
            char **s = (char **)o->buf;
            for (int64_t k = 0; k < o->n; k++) H5free_memory(s[k]);
        }
        free(o->buf);
        if (o->ds >= 0) H5Dclose(o->ds);
        if (o->mt >= 0) H5Tclose(o->mt);
    }
    if (M->out >= 0 && H5Fclose(M->out) < 0 && !rc)
        rc = 1, pt_fail(e, "%s: closing failed (disk full?)", tmp);
    if (!rc && (pt_fsync_path(tmp) || rename(tmp, out)))
        rc = 1, pt_fail(e, "%s: cannot move into place: %s", out, strerror(errno));
    if (rc && tmp) unlink(tmp);
    if (!rc) {
        char *dir = pt_dirname(out);
        pt_fsync_dir(dir);
        free(dir);
        fprintf(stderr, "punctum merge: %lld pairs from %d part%s -> %s%s\n",
                (long long)M->G[T_PAIRS], n_parts, n_parts == 1 ? "" : "s", out,
                complete ? "" : " (partial)");
    }
    for (int k = 0; k < n_parts; k++) part_close(&M->parts[k], M->n_cols);
    free(M->parts);
    free(M->cols);
    pt_h5_dsets_free(&dl);
    free(tmp);
    return rc;
}
