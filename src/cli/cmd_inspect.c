/* punctum inspect — a human summary of a sweep's HDF5 file: model, counts, failures, pair
 * divergences and the most-attended tokens per layer. Reads only committed rows, in chunks. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "punctum/cli.h"
#include "punctum/writer.h"

enum { CHUNK = 65536, TOP = 5 };

static int64_t dset_rows(hid_t f, const char *path) {
    if (H5Lexists(f, "/pairs", H5P_DEFAULT) <= 0) return -1;
    htri_t ok = H5Lexists(f, path, H5P_DEFAULT);
    if (ok <= 0) return -1;
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t s = H5Dget_space(d);
    hsize_t dims[4];
    H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    H5Dclose(d);
    return (int64_t)dims[0];
}

/* Read rows [r0, r0+n) of a dataset with trailing elements `row_elems` into buf (mem type t). */
static int read_rows(hid_t f, const char *path, hid_t t, int64_t r0, int64_t n, size_t row_elems,
                     void *buf) {
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t fs = H5Dget_space(d);
    int rank = H5Sget_simple_extent_ndims(fs);
    hsize_t dims[4];
    H5Sget_simple_extent_dims(fs, dims, NULL);
    hsize_t start[4] = {(hsize_t)r0, 0, 0, 0}, count[4] = {(hsize_t)n, 1, 1, 1};
    for (int k = 1; k < rank; k++) count[k] = dims[k];
    (void)row_elems;
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t ms = H5Screate_simple(rank, count, NULL);
    herr_t rc = H5Dread(d, t, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    return rc < 0 ? -1 : 0;
}

static hid_t str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

/* token text -> accumulated mean attention mass per layer */
typedef struct {
    char *text;
    double *sum;
    int64_t count;
} tok_acc;

typedef struct {
    tok_acc *slots;
    size_t cap, n;
    int L;
} tok_map;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static tok_acc *map_get(tok_map *m, const char *text) {
    if (m->n * 2 >= m->cap) {
        tok_map bigger = {pt_xcalloc(m->cap ? m->cap * 2 : 1024, sizeof(tok_acc)), m->cap ? m->cap * 2 : 1024, 0, m->L};
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->slots[i].text) continue;
            size_t k = hash_str(m->slots[i].text) & (bigger.cap - 1);
            while (bigger.slots[k].text) k = (k + 1) & (bigger.cap - 1);
            bigger.slots[k] = m->slots[i];
            bigger.n++;
        }
        free(m->slots);
        *m = bigger;
    }
    size_t k = hash_str(text) & (m->cap - 1);
    while (m->slots[k].text && strcmp(m->slots[k].text, text)) k = (k + 1) & (m->cap - 1);
    if (!m->slots[k].text) {
        m->slots[k].text = pt_xstrdup(text);
        m->slots[k].sum = pt_xcalloc((size_t)m->L, sizeof(double));
        m->n++;
    }
    return &m->slots[k];
}

static void print_escaped(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '\n') fputs("\\n", stdout);
        else if (*s == '\t') fputs("\\t", stdout);
        else if (*s == '"') fputs("\\\"", stdout);
        else putchar(*s);
    }
    putchar('"');
}

int pt_cmd_inspect(int argc, char **argv) {
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: punctum inspect FILE.h5\n");
        return argc == 2 && !strcmp(argv[1], "--help") ? 0 : 2;
    }
    const char *path = argv[1];
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "punctum inspect: %s: cannot open as HDF5\n", path);
        return 1;
    }
    int64_t fmt = 0, committed = 0, L = 0, H = 0;
    if (pt_h5_attr_i64(f, "punctum_format", &fmt) || pt_h5_attr_i64(f, "committed_pairs", &committed)) {
        fprintf(stderr, "punctum inspect: %s: not a punctum file (no punctum_format attribute)\n", path);
        H5Fclose(f);
        return 1;
    }
    pt_h5_attr_i64(f, "n_layers", &L);
    pt_h5_attr_i64(f, "n_heads", &H);
    const char *keys[] = {"model_dir", "model_type", "backend", "device", "compute_dtype", "created",
                          "punctum_version", "punctum_version_resumed", "command_line"};
    printf("%s  (punctum format %lld)\n", path, (long long)fmt);
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        char *v = pt_h5_attr_str(f, keys[k]);
        if (v) printf("  %-16s %s\n", keys[k], v);
        free(v);
    }
    printf("  %-16s %lld layers, %lld heads\n", "shape", (long long)L, (long long)H);

    const int64_t n_pairs_rows = dset_rows(f, "/pairs/status");
    const int64_t n = committed < n_pairs_rows ? committed : n_pairs_rows;
    int64_t n_bad = 0, n_with_b = 0;
    double kl_sum = 0;
    int8_t *st = pt_xmalloc(CHUNK);
    float *kl = pt_xmalloc(CHUNK * sizeof(float));
    hid_t stype = str_type();
    /* most divergent pairs */
    double top_kl[TOP];
    int64_t top_idx[TOP];
    for (int k = 0; k < TOP; k++) top_kl[k] = -1, top_idx[k] = -1;
    printf("\npairs: %lld committed", (long long)n);
    if (n_pairs_rows > n) printf(" (%lld uncommitted rows ignored)", (long long)(n_pairs_rows - n));
    printf("\n");
    int shown = 0;
    for (int64_t r0 = 0; r0 < n; r0 += CHUNK) {
        const int64_t m = n - r0 < CHUNK ? n - r0 : CHUNK;
        read_rows(f, "/pairs/status", H5T_NATIVE_INT8, r0, m, 1, st);
        read_rows(f, "/pairs/kl_ab", H5T_NATIVE_FLOAT, r0, m, 1, kl);
        for (int64_t i = 0; i < m; i++) {
            if (st[i]) {
                n_bad++;
                if (shown < 10) {
                    char **msg = pt_xcalloc(1, sizeof(char *));
                    if (!read_rows(f, "/pairs/message", stype, r0 + i, 1, 1, msg) && msg[0]) {
                        printf("  failed: %s\n", msg[0]);
                        H5free_memory(msg[0]);
                    }
                    free(msg);
                    shown++;
                }
                continue;
            }
            if (!isnan(kl[i])) {
                n_with_b++;
                kl_sum += kl[i];
                for (int k = 0; k < TOP; k++)
                    if (kl[i] > top_kl[k]) {
                        memmove(top_kl + k + 1, top_kl + k, (TOP - 1 - k) * sizeof(double));
                        memmove(top_idx + k + 1, top_idx + k, (TOP - 1 - k) * sizeof(int64_t));
                        top_kl[k] = kl[i];
                        top_idx[k] = r0 + i;
                        break;
                    }
            }
        }
    }
    if (n_bad > shown) printf("  ... and %lld more failed records\n", (long long)(n_bad - shown));
    printf("  ok %lld, failed %lld, with b %lld\n", (long long)(n - n_bad), (long long)n_bad,
           (long long)n_with_b);
    if (n_with_b > 0) {
        printf("  mean KL(a||b) %.4g nats; most different pairs:\n", kl_sum / n_with_b);
        for (int k = 0; k < TOP && top_idx[k] >= 0; k++) {
            char **id = pt_xcalloc(1, sizeof(char *));
            read_rows(f, "/pairs/id", stype, top_idx[k], 1, 1, id);
            printf("    %-24s KL %.4g\n", id[0] ? id[0] : "?", top_kl[k]);
            if (id[0]) H5free_memory(id[0]);
            free(id);
        }
    }
    free(st);
    free(kl);

    /* sequences and tokens that belong to committed pairs */
    int64_t n_seqs = 0, n_tok = 0;
    const int64_t seq_rows = dset_rows(f, "/seqs/pair");
    if (seq_rows > 0) {
        int64_t *pair = pt_xmalloc(CHUNK * sizeof(int64_t));
        for (int64_t r0 = 0; r0 < seq_rows; r0 += CHUNK) {
            const int64_t m = seq_rows - r0 < CHUNK ? seq_rows - r0 : CHUNK;
            read_rows(f, "/seqs/pair", H5T_NATIVE_INT64, r0, m, 1, pair);
            int64_t k = 0;
            while (k < m && pair[k] < n) k++;
            n_seqs += k;
            if (k < m) break;
        }
        free(pair);
        if (n_seqs > 0) {
            int64_t start;
            int32_t cnt;
            read_rows(f, "/seqs/tok_start", H5T_NATIVE_INT64, n_seqs - 1, 1, 1, &start);
            read_rows(f, "/seqs/n_tok", H5T_NATIVE_INT32, n_seqs - 1, 1, 1, &cnt);
            n_tok = start + cnt;
        }
    }
    printf("sequences: %lld, tokens: %lld\n", (long long)n_seqs, (long long)n_tok);
    const char *groups[] = {"/tokens/attn_mass",       "/tokens/attn_last", "/tokens/resid_norm",
                            "/tokens/resid_max",       "/patterns/value",   "/ablation/knockout/kl",
                            "/patching/resid/kl_to_b", "/lens/logp_top1"};
    printf("statistics:");
    for (size_t k = 0; k < sizeof groups / sizeof groups[0]; k++)
        if (dset_rows(f, groups[k]) >= 0) printf(" %s", groups[k]);
    printf("\n");
    int64_t ko = dset_rows(f, "/ablation/knockout/kl");
    if (ko > 0) printf("knockout rows: %lld\n", (long long)ko);
    int64_t pa = dset_rows(f, "/patching/resid/kl_to_b");
    if (pa > 0) printf("patching rows: %lld\n", (long long)pa);

    /* most-attended tokens per layer: attn_mass[j] / (T - j), the mean attention token j receives
     * from the queries that can see it (so early positions are not favoured), averaged over heads
     * and over the occurrences of the same token text; position 0 (the attention sink of most
     * models) and the final position (seen only by itself) are left out, and token texts seen
     * fewer than 3 times too when there are enough others */
    if (dset_rows(f, "/tokens/attn_mass") >= 0 && n_tok > 0 && L > 0 && H > 0) {
        tok_map map = {NULL, 0, 0, (int)L};
        const int64_t step = 4096;
        float *mass = pt_xmalloc((size_t)step * L * H * sizeof(float));
        int32_t *pos = pt_xmalloc((size_t)step * sizeof(int32_t));
        char **text = pt_xmalloc((size_t)step * sizeof(char *));
        int64_t *seq = pt_xmalloc((size_t)step * sizeof(int64_t));
        int32_t *seq_len = pt_xmalloc((size_t)(n_seqs > 0 ? n_seqs : 1) * sizeof(int32_t));
        if (read_rows(f, "/seqs/n_tok", H5T_NATIVE_INT32, 0, n_seqs, 1, seq_len)) n_seqs = 0;
        for (int64_t r0 = 0; r0 < n_tok && n_seqs > 0; r0 += step) {
            const int64_t m = n_tok - r0 < step ? n_tok - r0 : step;
            if (read_rows(f, "/tokens/attn_mass", H5T_NATIVE_FLOAT, r0, m, (size_t)(L * H), mass) ||
                read_rows(f, "/tokens/pos", H5T_NATIVE_INT32, r0, m, 1, pos) ||
                read_rows(f, "/tokens/seq", H5T_NATIVE_INT64, r0, m, 1, seq) ||
                read_rows(f, "/tokens/text", stype, r0, m, 1, text))
                break;
            for (int64_t i = 0; i < m; i++) {
                const int T = seq[i] >= 0 && seq[i] < n_seqs ? seq_len[seq[i]] : 0;
                if (pos[i] > 0 && pos[i] < T - 1) {
                    tok_acc *a = map_get(&map, text[i] ? text[i] : "");
                    a->count++;
                    for (int l = 0; l < L; l++) {
                        double s = 0;
                        for (int h = 0; h < H; h++) s += mass[((size_t)i * L + l) * H + h];
                        a->sum[l] += s / H / (T - pos[i]);
                    }
                }
                if (text[i]) H5free_memory(text[i]);
            }
        }
        size_t frequent = 0;
        for (size_t k = 0; k < map.cap; k++) frequent += map.slots[k].text && map.slots[k].count >= 3;
        const int64_t min_count = frequent >= 2 * TOP ? 3 : 1;
        printf("\nmost-attended tokens per layer (attention received per later query, mean over heads\n"
               "and occurrences; first and final positions left out%s):\n",
               min_count > 1 ? "; tokens seen at least 3 times" : "");
        for (int l = 0; l < L; l++) {
            const tok_acc *best[TOP] = {0};
            double bv[TOP];
            for (int k = 0; k < TOP; k++) bv[k] = -1;
            for (size_t s = 0; s < map.cap; s++) {
                const tok_acc *a = &map.slots[s];
                if (!a->text || a->count < min_count) continue;
                const double v = a->sum[l] / a->count;
                for (int k = 0; k < TOP; k++)
                    if (v > bv[k]) {
                        memmove(bv + k + 1, bv + k, (TOP - 1 - k) * sizeof(double));
                        memmove(best + k + 1, best + k, (TOP - 1 - k) * sizeof(best[0]));
                        bv[k] = v;
                        best[k] = a;
                        break;
                    }
            }
            printf("  layer %2d:", l);
            for (int k = 0; k < TOP && best[k]; k++) {
                putchar(' ');
                print_escaped(best[k]->text);
                printf(" %.3f", bv[k]);
            }
            putchar('\n');
        }
        for (size_t s = 0; s < map.cap; s++) {
            free(map.slots[s].text);
            free(map.slots[s].sum);
        }
        free(map.slots);
        free(mass);
        free(pos);
        free(text);
        free(seq);
        free(seq_len);
    }
    H5Tclose(stype);
    H5Fclose(f);
    return 0;
}
