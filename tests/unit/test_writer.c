/* Unit tests for the HDF5 writer's chunk path (SPEC §5, §8):
 *  - a chunk encoded by pt_chunk_encode and stored with H5Dwrite_chunk reads back through HDF5's
 *    own filter pipeline (zlib inflate + unshuffle) as the values written, for element sizes
 *    1/2/4/8, odd and tiny chunks, every number of stored planes; and its shuffled bytes are
 *    exactly the ones HDF5's shuffle filter produces for the same data (HDF5 encodes the same
 *    values with H5Dwrite; both chunks are inflated and compared byte for byte);
 *  - --store f16 saturates at +-65504 and counts, NaN and infinities pass;
 *  - the column writer (1 and 4 threads): rows in ragged batches, flushes leaving unfinished
 *    chunks, a new target starting at the unfinished chunk, and raw chunk copies of the spans
 *    into one file give back exactly the rows appended;
 *  - the writer itself: commits, compaction (fan-in 2), a view, --resume from the view, and the
 *    final file, with strings, int and f16 columns, compared with the rows submitted;
 *  - a close while the writer thread is between its encode step and its sleep returns (it hung:
 *    the thread missed the close's wake-up; PUNCTUM_TEST_WRITER_IDLE_DELAY widens the window).
 * Seeds are printed. Also built with -fsanitize=thread by scripts/tsan.sh. */
#include <libdeflate.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/chunkenc.h"
#include "io/chunkio.h"
#include "io/h5util.h"
#include "io/outstate.h"
#include "punctum/writer.h"

static int n_pass, n_fail;
static char g_dir[64];

static void check(int ok, const char *what, const char *detail) {
    if (ok) {
        n_pass++;
    } else {
        n_fail++;
        printf("FAIL %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    }
}

static uint64_t g_rng;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}
static float rndf(void) {
    return (float)(rnd() % 1000000) / 250000.0f;
}

static char *tmp_path(const char *name) {
    return pt_path_join(g_dir, name);
}

/* ---- encoder vs HDF5 ---------------------------------------------------------------------- */

static hid_t int_type(size_t esz) {
    return esz == 1   ? H5T_STD_U8LE
           : esz == 2 ? H5T_STD_U16LE
           : esz == 4 ? H5T_STD_U32LE
                      : H5T_STD_U64LE;
}

static hid_t make_dset(hid_t f, const char *name, size_t esz, hsize_t n) {
    hsize_t dims[1] = {n}, chunk[1] = {n};
    hid_t sp = H5Screate_simple(1, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, chunk);
    H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, 6);
    hid_t d = H5Dcreate2(f, name, int_type(esz), sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

/* The inflated (still shuffled) bytes of a dataset's only chunk. */
static unsigned char *raw_inflated(hid_t d, size_t bytes, uint32_t *mask) {
    hsize_t off[1] = {0}, csize = 0;
    H5Dget_chunk_storage_size(d, off, &csize);
    unsigned char *z = malloc(csize + 1), *out = malloc(bytes + 1);
    size_t got = 0;
    struct libdeflate_decompressor *dz = libdeflate_alloc_decompressor();
    if (H5Dread_chunk(d, H5P_DEFAULT, off, mask, z) < 0 ||
        libdeflate_zlib_decompress(dz, z, csize, out, bytes, &got) != LIBDEFLATE_SUCCESS ||
        got != bytes) {
        free(out);
        out = NULL;
    }
    libdeflate_free_decompressor(dz);
    free(z);
    return out;
}

static void encode_case(hid_t f, size_t esz, size_t n, int pattern, int planes) {
    char what[96];
    snprintf(what, sizeof what, "encode esz %zu n %zu pattern %d stored planes %d", esz, n, pattern,
             planes);
    unsigned char *src = malloc(esz * n + 1);
    for (size_t i = 0; i < n * esz; i++)
        src[i] = pattern == 0   ? (unsigned char)rnd()
                 : pattern == 1 ? (unsigned char)(i / esz % 7)
                                : 0;
    if (pattern == 3 && esz == 4)
        for (size_t i = 0; i < n; i++) {
            float x = rndf();
            memcpy(src + 4 * i, &x, 4);
        }
    pt_chunk_coder *c = pt_chunk_coder_new(1);
    pt_chunk_fmt fmt = {n, esz, esz, 0};
    const size_t cap = pt_chunk_bound(n * esz);
    unsigned char *enc = malloc(cap);
    const size_t len = pt_chunk_encode(c, &fmt, src, planes, enc, cap, NULL);
    check(len > 0 && len <= cap, what, "encode failed");
    hid_t ours = make_dset(f, "ours", esz, n), theirs = make_dset(f, "theirs", esz, n);
    hsize_t off[1] = {0};
    check(H5Dwrite_chunk(ours, H5P_DEFAULT, 0, off, len, enc) >= 0, what, "H5Dwrite_chunk");
    check(H5Dwrite(theirs, int_type(esz), H5S_ALL, H5S_ALL, H5P_DEFAULT, src) >= 0, what,
          "H5Dwrite");
    H5Fflush(f, H5F_SCOPE_LOCAL);
    unsigned char *back = malloc(esz * n + 1);
    check(H5Dread(ours, int_type(esz), H5S_ALL, H5S_ALL, H5P_DEFAULT, back) >= 0 &&
              !memcmp(back, src, esz * n),
          what, "HDF5 reads other values");
    uint32_t m1 = 9, m2 = 9;
    unsigned char *a = raw_inflated(ours, esz * n, &m1), *b = raw_inflated(theirs, esz * n, &m2);
    check(a && b && !memcmp(a, b, esz * n) && m1 == 0 && m2 == 0, what,
          "shuffled bytes or filter mask differ from HDF5's");
    free(a);
    free(b);
    free(back);
    H5Dclose(ours);
    H5Dclose(theirs);
    H5Ldelete(f, "ours", H5P_DEFAULT);
    H5Ldelete(f, "theirs", H5P_DEFAULT);
    free(enc);
    free(src);
    pt_chunk_coder_free(c);
}

static void test_encode(void) {
    char *p = tmp_path("enc.h5");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const size_t sizes[] = {1, 2, 4, 8}, counts[] = {1, 2, 7, 1000, 70001};
    for (int s = 0; s < 4; s++)
        for (int k = 0; k < 5; k++)
            for (int pat = 0; pat < 4; pat++)
                for (int planes = 0; planes < (int)sizes[s] + 1; planes++)
                    encode_case(f, sizes[s], counts[k], pat, planes);
    H5Fclose(f);
    unlink(p);
    free(p);
    printf("ok   encoder: chunks read back through HDF5, shuffled exactly as HDF5\n");
}

/* Probing keeps random low planes stored and compresses structured ones. */
static void test_probe(void) {
    const size_t n = 65536;
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = rndf();
    pt_chunk_coder *c = pt_chunk_coder_new(1);
    pt_chunk_fmt fmt = {n, 4, 4, 0};
    const size_t cap = pt_chunk_bound(n * 4);
    unsigned char *enc = malloc(cap);
    pt_chunk_encode(c, &fmt, x, 0, enc, cap, NULL);
    const int random_planes = pt_chunk_probe(c, &fmt);
    for (size_t i = 0; i < n; i++) x[i] = (float)(i % 100); /* repeating: every plane shrinks */
    pt_chunk_encode(c, &fmt, x, 0, enc, cap, NULL);
    const int repeat_planes = pt_chunk_probe(c, &fmt);
    char msg[64];
    snprintf(msg, sizeof msg, "random %d, repeating %d", random_planes, repeat_planes);
    check(random_planes >= 2 && random_planes <= 3 && repeat_planes == 0, "probe", msg);
    free(enc);
    free(x);
    pt_chunk_coder_free(c);
    printf("ok   probe (%s)\n", msg);
}

/* ---- f16 saturation ------------------------------------------------------------------------ */

static void test_f16(void) {
    const float in[] = {1.0f,      65504.0f, 65519.0f,  65520.0f, 1e6f,  -1e6f,
                        -65535.0f, INFINITY, -INFINITY, NAN,      1e-8f, -0.0f};
    const float want[] = {1.0f,      65504.0f, 65504.0f,  65504.0f, 65504.0f, -65504.0f,
                          -65504.0f, INFINITY, -INFINITY, NAN,      1e-8f,    -0.0f};
    const size_t n = sizeof in / sizeof in[0];
    int64_t sat = 0;
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        const float got = pt_f16_to_f32(pt_f32_to_f16_sat(in[i], &sat));
        const float ref = i == 10 ? pt_f16_to_f32(pt_f32_to_f16(in[i])) : want[i];
        ok &= isnan(ref) ? isnan(got) : got == ref && signbit(got) == signbit(ref);
    }
    check(ok && sat == 4, "f16 saturation (4 of 12 clamped, NaN/inf kept)", NULL);
    printf("ok   f16 saturation\n");
}

/* ---- the column writer ------------------------------------------------------------------------
 */

static hid_t col_dataset(hid_t f, const char *name, const pt_colspec *s, int f16) {
    hid_t t = f16 ? pt_h5_f16_type() : H5Tcopy(H5T_IEEE_F32LE);
    pt_colspec c = *s;
    c.path = name;
    hid_t d = pt_h5_create_col(f, &c, t, 0);
    H5Tclose(t);
    return d;
}

static void cwriter_case(int threads, int f16) {
    char what[64];
    snprintf(what, sizeof what, "column writer, %d threads%s", threads, f16 ? ", f16" : "");
    const int L = 6, H = 5;
    pt_colspec s = {"/x", PT_F32, 2, {L, H}};
    const size_t row = (size_t)L * H;
    const int64_t total = 9000;
    float *data = malloc((size_t)total * row * sizeof(float));
    for (size_t i = 0; i < (size_t)total * row; i++) data[i] = rndf();
    char *p = tmp_path("cw.h5");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    pt_cwriter_opts o = {threads, 0};
    pt_cwriter *cw = pt_cwriter_new(&o);
    const int col = pt_cwriter_add(cw, &s, 4, f16);
    /* three "segments": each starts at the unfinished chunk of the one before */
    hid_t seg[3];
    int64_t row0[3], end[3], at = 0;
    const int64_t cut[3] = {2345, 6001, total};
    for (int k = 0; k < 3; k++) {
        char name[16];
        snprintf(name, sizeof name, "/seg%d", k);
        seg[k] = col_dataset(f, name, &s, f16);
        row0[k] = pt_cwriter_chunk_row0(cw, col);
        pt_cwriter_target(cw, col, seg[k], row0[k]);
        while (at < cut[k]) {
            int64_t n = 1 + rnd() % 700;
            if (at + n > cut[k]) n = cut[k] - at;
            check(pt_cwriter_append(cw, col, data + (size_t)at * row, (size_t)n) == 0, what,
                  "append");
            at += n;
        }
        check(pt_cwriter_flush(cw, 0) == 0, what, "flush");
        end[k] = at;
    }
    hid_t fin = col_dataset(f, "/final", &s, f16);
    hsize_t dims[3] = {(hsize_t)total, (hsize_t)L, (hsize_t)H};
    H5Dset_extent(fin, dims);
    int64_t raw = 0;
    for (int k = 0; k < 3; k++) {
        const int64_t hi = k < 2 ? row0[k + 1] : end[k];
        check(pt_h5_copy_range(seg[k], row0[k], fin, 0, row0[k], hi, NULL, &raw) == 0, what,
              "copy");
    }
    float *back = malloc((size_t)total * row * sizeof(float));
    int ok = pt_h5_read_rows(fin, H5T_NATIVE_FLOAT, 0, total, back) == 0;
    for (size_t i = 0; ok && i < (size_t)total * row; i++)
        ok = back[i] == (f16 ? pt_f16_to_f32(pt_f32_to_f16(data[i])) : data[i]);
    check(ok, what, "final rows differ");
    check(raw > 0, what, "nothing copied as chunks");
    pt_cpool_stats st;
    pt_cwriter_stats(cw, &st, NULL, NULL);
    check(st.threads == threads && st.bytes_in > 0, what, "stats");
    pt_cwriter_free(cw);
    for (int k = 0; k < 3; k++) H5Dclose(seg[k]);
    H5Dclose(fin);
    H5Fclose(f);
    unlink(p);
    free(p);
    free(back);
    free(data);
    printf("ok   %s (%lld bytes copied as chunks)\n", what, (long long)raw);
}

/* ---- the writer ---------------------------------------------------------------------------- */

enum { C_ID, C_SEQ, C_VAL, C_MASS, NCOL };
static const pt_colspec SPECS[NCOL] = {{"/pairs/id", PT_STR, 0, {0, 0}},
                                       {"/pairs/seq", PT_I64, 0, {0, 0}},
                                       {"/tokens/val", PT_F32, 0, {0, 0}},
                                       {"/tokens/mass", PT_F32, 2, {4, 3}}};

/* Row r of each column (pairs table: r; tokens table: 3 rows per pair). */
static float mass_value(int64_t r, int k) {
    return (float)((r * 131 + k * 7) % 1000) / 8.0f + (r % 97 == 5 ? 1e5f : 0.0f);
}

static void fill_batch(pt_batch *b, int64_t p0, int64_t np) {
    for (int64_t p = p0; p < p0 + np; p++) {
        char id[32];
        snprintf(id, sizeof id, "pair-%lld", (long long)p);
        pt_col_append_str(b, C_ID, id);
        *(int64_t *)pt_col_append(b, C_SEQ, 1) = p * 2;
        for (int t = 0; t < 3; t++) {
            const int64_t r = 3 * p + t;
            *(float *)pt_col_append(b, C_VAL, 1) = (float)r / 3.0f;
            float *m = pt_col_append(b, C_MASS, 1);
            for (int k = 0; k < 12; k++) m[k] = mass_value(r, k);
        }
    }
    b->n_pairs = np;
}

/* commit_s: seconds between commits (0: at every chance) */
static pt_writer *open_writer_every(const char *path, const pt_outstate *st, int threads, int f16,
                                    double commit_s) {
    const pt_attr attrs[] = {{"punctum_format", NULL, PUNCTUM_FORMAT}, {"note", "unit", 0}};
    pt_writer_opts o = {path, SPECS, NCOL, attrs, 2, f16, commit_s, st, NULL, threads};
    pt_error e = {{0}};
    pt_writer *w = pt_writer_open(&o, &e);
    check(w != NULL, "writer open", e.msg);
    return w;
}

static pt_writer *open_writer(const char *path, const pt_outstate *st, int threads, int f16) {
    return open_writer_every(path, st, threads, f16, 0.0);
}

static int64_t submit(pt_writer *w, int64_t p0, int64_t p1) {
    pt_batch b;
    pt_batch_init(&b, SPECS, NCOL);
    while (p0 < p1) {
        int64_t n = 1 + rnd() % 40;
        if (p0 + n > p1) n = p1 - p0;
        fill_batch(&b, p0, n);
        pt_writer_set_input_pos(w, (pt_inpos){p0 + n, p0 + n, p0 + n});
        pt_writer_submit(w, &b, NULL);
        p0 += n;
    }
    pt_batch_free(&b);
    return p0;
}

/* The file shows exactly pairs [0, n). */
static void check_file(const char *path, int64_t n, int f16, const char *what) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    int64_t committed = -1, sat = -1;
    pt_h5_attr_i64(f, "committed_pairs", &committed);
    check(f >= 0 && committed == n, what, "committed_pairs");
    hid_t d = H5Dopen2(f, "/tokens/mass", H5P_DEFAULT), s = H5Dopen2(f, "/pairs/seq", H5P_DEFAULT);
    hid_t id = H5Dopen2(f, "/pairs/id", H5P_DEFAULT);
    float *m = malloc((size_t)(3 * n) * 12 * sizeof(float) + 4);
    int64_t *q = malloc((size_t)n * sizeof(int64_t) + 8);
    char **ids = calloc((size_t)n + 1, sizeof(char *));
    hid_t st = pt_h5_str_type();
    int ok = pt_h5_read_rows(d, H5T_NATIVE_FLOAT, 0, 3 * n, m) == 0 &&
             pt_h5_read_rows(s, H5T_NATIVE_INT64, 0, n, q) == 0 &&
             pt_h5_read_rows(id, st, 0, n, ids) == 0 && pt_h5_nrows(f, "/tokens/val") == 3 * n;
    int64_t want_sat = 0;
    for (int64_t r = 0; ok && r < 3 * n; r++)
        for (int k = 0; ok && k < 12; k++) {
            const float v = mass_value(r, k);
            want_sat += f16 && v > 65504.0f;
            ok = m[r * 12 + k] == (f16 ? pt_f16_to_f32(pt_f32_to_f16_sat(v, NULL)) : v);
        }
    for (int64_t p = 0; ok && p < n; p++) {
        char want[32];
        snprintf(want, sizeof want, "pair-%lld", (long long)p);
        ok = q[p] == 2 * p && ids[p] && !strcmp(ids[p], want);
    }
    check(ok, what, "rows differ");
    if (f16) {
        pt_h5_attr_i64(f, "f16_saturated", &sat);
        char msg[64];
        snprintf(msg, sizeof msg, "f16_saturated %lld, expected %lld", (long long)sat,
                 (long long)want_sat);
        check(sat == want_sat && want_sat > 0, what, msg);
    }
    for (int64_t p = 0; p < n; p++) H5free_memory(ids[p]);
    H5Tclose(st);
    free(ids);
    free(q);
    free(m);
    H5Dclose(d);
    H5Dclose(s);
    H5Dclose(id);
    H5Fclose(f);
}

static void writer_case(int threads, int f16) {
    char what[64];
    snprintf(what, sizeof what, "writer, %d threads%s", threads, f16 ? ", f16" : "");
    char *path = tmp_path("out.h5");
    setenv("PUNCTUM_COMPACT_FANIN", "2", 1);
    setenv("PUNCTUM_FSYNC", "0", 1);
    setenv("PUNCTUM_CHUNK_KIB", "16", 1); /* many chunks: the resumed final file copies some */
    pt_writer *w = open_writer(path, NULL, threads, f16);
    if (!w) return;
    const int64_t n1 = submit(w, 0, 1500);
    pt_writer_stats st;
    pt_error e = {{0}};
    check(pt_writer_close(w, 0, &st, &e) == 0, what, e.msg);
    check(st.commits >= 4, what, "commits");
    check_file(path, n1, f16, "view before resume");
    pt_outstate os;
    check(pt_outstate_read(path, SPECS, NCOL, &os, &e) == 0, what, e.msg);
    w = open_writer(path, &os, threads, f16);
    const int64_t n2 = submit(w, n1, 4000);
    check(pt_writer_close(w, 1, &st, &e) == 0, what, e.msg);
    check(st.raw_copied > 0 && st.bytes_in > 0, what, "no chunks copied");
    pt_outstate_free(&os);
    unsetenv("PUNCTUM_CHUNK_KIB");
    check_file(path, n2, f16, what);
    char parts[128];
    snprintf(parts, sizeof parts, "%s.parts", path);
    struct stat sb;
    check(stat(parts, &sb) != 0, what, "parts left behind");
    if (getenv("PT_TEST_KEEP")) { /* for a look at a failure */
        char keep[160];
        snprintf(keep, sizeof keep, "%s.%d%s.h5", path, threads, f16 ? "f16" : "");
        rename(path, keep);
        printf("kept %s\n", keep);
    }
    unlink(path);
    free(path);
    printf("ok   %s (%lld commits)\n", what, (long long)st.commits);
}

static void close_hung(int sig) {
    (void)sig;
    static const char msg[] = "FAIL writer: pt_writer_close right after the open hung (120 s)\n";
    if (write(1, msg, sizeof msg - 1) < 0) _exit(1);
    _exit(1);
}

/* pt_writer_close while the writer thread has released its lock to encode, with nothing to
 * encode: the thread must see `closing` before it sleeps (it used to wait for a wake-up that had
 * already been sent, and the close waited for the thread forever). The test hook pauses the
 * thread inside that window so the close lands there every time. */
static void writer_close_race(void) {
    char *path = tmp_path("race.h5");
    setenv("PUNCTUM_TEST_WRITER_IDLE_DELAY", "0.2", 1);
    signal(SIGALRM, close_hung);
    for (int i = 0; i < 3; i++) {
        alarm(120); /* generous: valgrind and TSan run this too */
        pt_writer *w =
            open_writer_every(path, NULL, 1, 0, 60.0); /* as the command: no commit due */
        if (!w) break;
        usleep(50000); /* the thread is in its 0.2 s pause by now */
        pt_error e = {{0}};
        check(pt_writer_close(w, 0, NULL, &e) == 0, "writer close right after open", e.msg);
        alarm(0);
    }
    unsetenv("PUNCTUM_TEST_WRITER_IDLE_DELAY");
    unlink(path);
    free(path);
    printf("ok   writer close right after open (3 times)\n");
}

int main(void) {
    const char *s = getenv("PT_TEST_SEED");
    const uint64_t seed = s ? strtoull(s, NULL, 10) : 20261206u;
    g_rng = seed * 2654435761u + 1;
    printf("seed %llu (PT_TEST_SEED)\n", (unsigned long long)seed);
    snprintf(g_dir, sizeof g_dir, "/tmp/test_writer_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    pt_h5_quiet();
    test_encode();
    test_probe();
    test_f16();
    for (int f16 = 0; f16 < 2; f16++) {
        cwriter_case(1, f16);
        cwriter_case(4, f16);
    }
    writer_case(1, 0);
    writer_case(3, 0);
    writer_case(2, 1);
    writer_close_race();
    rmdir(g_dir);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
