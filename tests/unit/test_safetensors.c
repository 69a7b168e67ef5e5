/* Unit tests for the safetensors reader: a valid file round-trips; every validation rule
 * rejects its bad case with a one-line message naming the file (and the tensor). */
#include "punctum/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int n_pass, n_fail;
static char g_dir[256];

static void check(int ok, const char *what, const char *detail) {
    if (ok) {
        n_pass++;
        printf("ok   %s\n", what);
    } else {
        n_fail++;
        printf("FAIL %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    }
}

/* ---- building files ------------------------------------------------------------------------- */

typedef struct {
    unsigned char *p;
    size_t n;
} buf;

/* An image: u64 LE header length, the header, the data. */
static buf image(const char *header, const void *data, size_t dlen) {
    size_t hl = strlen(header);
    buf b;
    b.n = 8 + hl + dlen;
    b.p = malloc(b.n ? b.n : 1);
    for (int i = 0; i < 8; i++) b.p[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b.p + 8, header, hl);
    if (dlen) memcpy(b.p + 8 + hl, data, dlen);
    return b;
}

static char *path_in(const char *sub, const char *name) {
    static char p[1024];
    if (sub)
        snprintf(p, sizeof p, "%s/%s/%s", g_dir, sub, name);
    else
        snprintf(p, sizeof p, "%s/%s", g_dir, name);
    return p;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    if (n && fwrite(p, 1, n, f) != n) exit(2);
    fclose(f);
}

static void write_text(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

static void write_image(const char *path, const char *header, const void *data, size_t dlen) {
    buf b = image(header, data, dlen);
    write_bytes(path, b.p, b.n);
    free(b.p);
}

static void mkdir_sub(const char *sub) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", g_dir, sub);
    mkdir(p, 0755);
}

/* ---- checking failures ---------------------------------------------------------------------- */

/* Expect failure whose message contains every given fragment and is one line. */
static void expect_fail(const char *what, int rc, const pt_error *e, const char *a, const char *b,
                        const char *c) {
    char detail[700];
    int ok = rc != 0 && strchr(e->msg, '\n') == NULL && (!a || strstr(e->msg, a)) &&
             (!b || strstr(e->msg, b)) && (!c || strstr(e->msg, c));
    snprintf(detail, sizeof detail, "rc=%d msg=\"%s\"", rc, e->msg);
    check(ok, what, ok ? NULL : detail);
    if (ok) printf("       -> %s\n", e->msg);
}

/* Parse a header + data as file "bad.safetensors" both from a buffer and from disk; both must
 * fail with the fragments. */
static void bad(const char *what, const char *header, size_t dlen, const char *frag1,
                const char *frag2) {
    unsigned char *data = calloc(dlen ? dlen : 1, 1);
    buf b = image(header, data, dlen);
    pt_st_file f;
    pt_error e = {{0}};
    int rc = pt_st_parse_buffer(b.p, b.n, "bad.safetensors", &f, &e);
    char w[300];
    snprintf(w, sizeof w, "%s (buffer)", what);
    expect_fail(w, rc, &e, "bad.safetensors: ", frag1, frag2);
    check(f.tensors == NULL && f.n_tensors == 0 && f.path == NULL, "  ... file left empty", NULL);

    const char *p = path_in(NULL, "bad.safetensors");
    write_bytes(p, b.p, b.n);
    memset(&e, 0, sizeof e);
    rc = pt_st_open(p, &f, &e);
    snprintf(w, sizeof w, "%s (file)", what);
    expect_fail(w, rc, &e, p, frag1, frag2);
    free(b.p);
    free(data);
}

/* ---- the valid file ------------------------------------------------------------------------- */

static const float A_VALS[6] = {1.0f, -2.5f, 3.14159274f, 0.0f, -0.0f, 1e-30f};
static const uint16_t F16_BITS[8] = {0x3c00, 0x0001, 0x03ff, 0x7c00, 0xfc00, 0x8000, 0x7bff, 0xc000};
static const uint16_t BF16_BITS[4] = {0x3f80, 0xc049, 0x7f80, 0x0001};
static const int64_t I64_VALS[2] = {42, -7};

/* data section layout (offsets relative to data start):
 *   [0,16)  f16 "h" [8]
 *   [16,40) f32 "a" [2,3]
 *   [40,40) f32 "z" [0,4]
 *   [40,48) bf16 "b" [2,2]
 *   [48,64) i64 "i" [2]           */
static const char *VALID_HDR =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[16,40]},"
    "\"h\":{\"dtype\":\"F16\",\"shape\":[8],\"data_offsets\":[0,16]},"
    "\"z\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[40,40]},"
    "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[40,48]},"
    "\"i\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[48,64]}}  ";

static void put_le(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void valid_data(unsigned char d[64]) {
    for (int i = 0; i < 8; i++) put_le(d + 2 * i, F16_BITS[i], 2);
    for (int i = 0; i < 6; i++) {
        uint32_t u;
        memcpy(&u, &A_VALS[i], 4);
        put_le(d + 16 + 4 * i, u, 4);
    }
    for (int i = 0; i < 4; i++) put_le(d + 40 + 2 * i, BF16_BITS[i], 2);
    for (int i = 0; i < 2; i++) put_le(d + 48 + 8 * i, (uint64_t)I64_VALS[i], 8);
}

static int same_bits(float a, float b) { return memcmp(&a, &b, 4) == 0; }

static void check_valid_file(const pt_st_file *f, const char *label) {
    char w[200];
    snprintf(w, sizeof w, "%s: 5 tensors", label);
    check(f->n_tensors == 5, w, NULL);
    pt_st_set s = {(pt_st_file *)f, 1};
    const pt_st_tensor *a = pt_st_find(&s, "a"), *h = pt_st_find(&s, "h"), *b = pt_st_find(&s, "b"),
                       *z = pt_st_find(&s, "z"), *i = pt_st_find(&s, "i");
    snprintf(w, sizeof w, "%s: find all", label);
    check(a && h && b && z && i, w, NULL);
    snprintf(w, sizeof w, "%s: find absent -> NULL", label);
    check(pt_st_find(&s, "nope") == NULL && pt_st_find(&s, "__metadata__") == NULL, w, NULL);
    if (!(a && h && b && z && i)) return;
    snprintf(w, sizeof w, "%s: shapes and sizes", label);
    check(a->dtype == PT_DT_F32 && a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 3 &&
              a->nelem == 6 && a->nbytes == 24 && h->nelem == 8 && h->dtype == PT_DT_F16 &&
              b->dtype == PT_DT_BF16 && b->nelem == 4 && z->nelem == 0 && z->nbytes == 0 &&
              z->ndim == 2 && i->dtype == PT_DT_I64 && a->file == f->path,
          w, NULL);
    float out[8];
    pt_error e = {{0}};
    snprintf(w, sizeof w, "%s: F32 values exact (unaligned source)", label);
    int ok = pt_st_to_f32(a, out, &e) == 0;
    for (int k = 0; k < 6 && ok; k++) ok = same_bits(out[k], A_VALS[k]);
    check(ok, w, e.msg);
    snprintf(w, sizeof w, "%s: F16 values exact (subnormals, inf, -0)", label);
    ok = pt_st_to_f32(h, out, &e) == 0;
    const float f16_expect[8] = {1.0f, 5.9604644775390625e-08f, 6.09755516052246094e-05f, INFINITY,
                                 -INFINITY, -0.0f, 65504.0f, -2.0f};
    for (int k = 0; k < 8 && ok; k++) ok = same_bits(out[k], f16_expect[k]);
    check(ok, w, e.msg);
    snprintf(w, sizeof w, "%s: BF16 values exact", label);
    ok = pt_st_to_f32(b, out, &e) == 0;
    const float bf_expect[4] = {1.0f, -3.140625f, INFINITY, 9.18354961579912115600575419705e-41f};
    for (int k = 0; k < 4 && ok; k++) ok = same_bits(out[k], bf_expect[k]);
    check(ok, w, e.msg);
    snprintf(w, sizeof w, "%s: zero-element tensor converts", label);
    check(pt_st_to_f32(z, out, &e) == 0, w, e.msg);
    snprintf(w, sizeof w, "%s: I64 data readable in place", label);
    int64_t iv[2];
    memcpy(iv, i->data, 16);
    check(iv[0] == 42 && iv[1] == -7, w, NULL);
    memset(&e, 0, sizeof e);
    int rc = pt_st_to_f32(i, out, &e);
    snprintf(w, sizeof w, "%s: pt_st_to_f32 rejects I64", label);
    expect_fail(w, rc, &e, f->path, "'i'", "I64");
}

static void test_valid(void) {
    unsigned char d[64];
    valid_data(d);
    buf b = image(VALID_HDR, d, sizeof d);
    check((8 + strlen(VALID_HDR)) % 4 != 0, "data section is unaligned for float (test setup)", NULL);

    pt_st_file f;
    pt_error e = {{0}};
    int rc = pt_st_parse_buffer(b.p, b.n, "mem.safetensors", &f, &e);
    check(rc == 0, "valid buffer parses", e.msg);
    if (rc == 0) {
        check_valid_file(&f, "buffer");
        check(f.map == NULL && strcmp(f.path, "mem.safetensors") == 0, "buffer: no map, name kept", NULL);
        pt_st_close(&f);
    }

    mkdir_sub("single");
    write_bytes(path_in("single", "model.safetensors"), b.p, b.n);
    rc = pt_st_open(path_in("single", "model.safetensors"), &f, &e);
    check(rc == 0, "valid file opens", e.msg);
    if (rc == 0) {
        check_valid_file(&f, "file");
        check(f.map != NULL && f.map_len == b.n, "file: mapped whole file", NULL);
        pt_st_close(&f);
        pt_st_close(&f); /* idempotent */
    }

    char dir[1024];
    snprintf(dir, sizeof dir, "%s/single", g_dir);
    pt_st_set s;
    rc = pt_st_set_open(dir, &s, &e);
    check(rc == 0 && s.n_files == 1, "set: DIR/model.safetensors", e.msg);
    if (rc == 0) {
        const pt_st_tensor *a = pt_st_find(&s, "a");
        check(a && a->nelem == 6 && strstr(a->file, "single/model.safetensors"), "set: find + file", NULL);
        pt_st_set_close(&s);
    }
    free(b.p);

    /* empty header object, empty data; header padded with spaces */
    b = image("{}", NULL, 0);
    rc = pt_st_parse_buffer(b.p, b.n, "empty.safetensors", &f, &e);
    check(rc == 0 && f.n_tensors == 0, "empty header {} with no data is valid", e.msg);
    if (rc == 0) pt_st_close(&f);
    free(b.p);
    /* "__metadata__": null is accepted, as by the reference reader */
    b = image("{\"__metadata__\":null}", NULL, 0);
    rc = pt_st_parse_buffer(b.p, b.n, "meta.safetensors", &f, &e);
    check(rc == 0 && f.n_tensors == 0, "__metadata__ null is accepted", e.msg);
    if (rc == 0) pt_st_close(&f);
    free(b.p);
    /* scalar tensor (shape []) */
    float one = 1.0f;
    b = image("{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", &one, 4);
    rc = pt_st_parse_buffer(b.p, b.n, "scalar.safetensors", &f, &e);
    check(rc == 0 && f.n_tensors == 1 && f.tensors[0].nelem == 1 && f.tensors[0].ndim == 0,
          "scalar tensor (shape []) is valid", e.msg);
    if (rc == 0) pt_st_close(&f);
    free(b.p);
    /* every standard dtype name is accepted */
    static const char *names[] = {"BOOL", "U8",  "I8",  "I16", "U16", "F16",     "BF16",   "I32",
                                  "U32",  "F32", "F64", "I64", "U64", "F8_E4M3", "F8_E5M2"};
    int all = 1;
    for (int k = 0; k < 15; k++) {
        char hdr[200];
        size_t sz = pt_dtype_size((pt_dtype)k);
        snprintf(hdr, sizeof hdr, "{\"t\":{\"dtype\":\"%s\",\"shape\":[3],\"data_offsets\":[0,%zu]}}",
                 names[k], 3 * sz);
        unsigned char z[24] = {0};
        b = image(hdr, z, 3 * sz);
        rc = pt_st_parse_buffer(b.p, b.n, "dt.safetensors", &f, &e);
        if (rc != 0 || f.tensors[0].dtype != (pt_dtype)k || strcmp(pt_dtype_name((pt_dtype)k), names[k]))
            all = 0;
        if (rc == 0) pt_st_close(&f);
        free(b.p);
    }
    check(all, "all 15 standard dtypes accepted with the right sizes", NULL);
}

/* ---- every validation rule ------------------------------------------------------------------ */

static void test_bad_files(void) {
    /* raw-byte cases */
    {
        pt_st_file f;
        pt_error e = {{0}};
        unsigned char five[5] = {1, 2, 3, 4, 5};
        int rc = pt_st_parse_buffer(five, 5, "short.safetensors", &f, &e);
        expect_fail("file shorter than 8 bytes (buffer)", rc, &e, "short.safetensors: ", "too short",
                    NULL);
        const char *p = path_in(NULL, "short.safetensors");
        write_bytes(p, five, 5);
        rc = pt_st_open(p, &f, &e);
        expect_fail("file shorter than 8 bytes (file)", rc, &e, p, "too short", NULL);
        write_bytes(p, five, 0);
        rc = pt_st_open(p, &f, &e);
        expect_fail("empty file", rc, &e, p, "too short", NULL);
        rc = pt_st_open(path_in(NULL, "does-not-exist.safetensors"), &f, &e);
        expect_fail("missing file", rc, &e, "does-not-exist.safetensors: ", "cannot open", NULL);
        rc = pt_st_open(g_dir, &f, &e);
        expect_fail("directory instead of file", rc, &e, g_dir, "not a regular file", NULL);

        unsigned char b[24] = {0};
        put_le(b, 100, 8); /* header claims 100 bytes, file has 16 after the length */
        memcpy(b + 8, "{}", 2);
        rc = pt_st_parse_buffer(b, sizeof b, "long.safetensors", &f, &e);
        expect_fail("header length beyond the file", rc, &e, "long.safetensors: ", "header length 100",
                    NULL);
        put_le(b, (uint64_t)PT_ST_MAX_HEADER + 1, 8);
        rc = pt_st_parse_buffer(b, sizeof b, "huge.safetensors", &f, &e);
        expect_fail("header length above PT_ST_MAX_HEADER", rc, &e, "huge.safetensors: ", "limit", NULL);
        put_le(b, UINT64_MAX, 8);
        rc = pt_st_parse_buffer(b, sizeof b, "huge.safetensors", &f, &e);
        expect_fail("header length 2^64-1", rc, &e, "huge.safetensors: ", "header length", NULL);
        put_le(b, 0, 8);
        rc = pt_st_parse_buffer(b, 8, "zero.safetensors", &f, &e);
        expect_fail("header length 0", rc, &e, "zero.safetensors: ", "empty", NULL);

        static const char nul_hdr[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},\"x\0y\":1}";
        unsigned char nb[128];
        size_t hl = sizeof nul_hdr - 1;
        put_le(nb, hl, 8);
        memcpy(nb + 8, nul_hdr, hl);
        rc = pt_st_parse_buffer(nb, 8 + hl, "nul.safetensors", &f, &e);
        expect_fail("embedded NUL in header", rc, &e, "nul.safetensors: ", "NUL", NULL);
    }

    bad("header not JSON", "{\"a\": [1, 2", 0, "not valid JSON", NULL);
    bad("header trailing garbage", "{} xyz", 0, "not valid JSON", NULL);
    bad("header invalid UTF-8", "{\"\xff\xfe\":{}}", 0, "not valid JSON", NULL);
    bad("header is an array", "[1,2,3]", 0, "not a JSON object", NULL);
    bad("header is a string", "\"hello\"", 0, NULL, NULL);
    bad("entry not an object", "{\"w\":[1,2]}", 0, "'w'", "must be an object");
    bad("missing dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w'", "missing 'dtype'");
    bad("dtype not a string", "{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w'",
        "'dtype' must be a string");
    bad("unknown dtype", "{\"w\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w'",
        "unknown dtype 'F31'");
    bad("lower-case dtype", "{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w'",
        "unknown dtype");
    bad("missing shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "'w'", "missing 'shape'");
    bad("shape not an array", "{\"w\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}", 4, "'w'",
        "'shape' must be an array");
    bad("negative dimension", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
        "'w'", "non-negative integers");
    bad("fractional dimension", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4,
        "'w'", "non-negative integers");
    bad("string dimension", "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
        "'w'", "non-negative integers");
    bad("too many dimensions",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "'w'",
        "9 dimensions");
    bad("missing data_offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "'w'",
        "missing 'data_offsets'");
    bad("data_offsets with 3 elements",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, "'w'", "[begin, end]");
    bad("data_offsets not integers",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4, "'w'", "[begin, end]");
    bad("data_offsets negative", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
        "'w'", "[begin, end]");
    bad("data_offsets begin > end", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4,
        "'w'", "begin > end");
    bad("shape x dtype != span",
        "{\"model.layers.0.mlp.up_proj.weight\":{\"dtype\":\"F32\",\"shape\":[4,8],"
        "\"data_offsets\":[0,120]}}",
        120, "tensor 'model.layers.0.mlp.up_proj.weight': shape [4,8] x F32 is 128 bytes",
        "data_offsets span 120");
    bad("shape product overflows",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],"
        "\"data_offsets\":[0,0]}}",
        0, "'w'", "overflow");
    bad("shape x dtype size overflows",
        "{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", 0, "'w'",
        "overflow");
    bad("zero dimension with huge others is 0 bytes, span mismatch",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[0,4611686018427387904,8],\"data_offsets\":[0,4]}}", 4, "'w'",
        "is 0 bytes");
    bad("span beyond data section", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
        "'w'", "past the end");
    bad("span far beyond (offset near 2^63)",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[9223372036854775800,"
        "9223372036854775804]}}",
        4, "'w'", "past the end");
    bad("integer too big for JSON parser",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}", 4,
        "not valid JSON", NULL);
    bad("duplicate tensor name",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
        8, "tensor 'w' appears twice", NULL);
    bad("overlapping spans",
        "{\"w1\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"w2\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
        12, "'w2'", "overlap tensor 'w1'");
    bad("identical spans",
        "{\"w1\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"w2\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        8, "overlap", NULL);
    bad("gap between spans",
        "{\"w1\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"w2\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
        12, "'w2'", "gap");
    bad("first span not at 0", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "'w'",
        "gap");
    bad("data section longer than the tensors",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12, "cover 4 bytes",
        "12 bytes");
    bad("data but no tensors", "{}", 4, "cover 0 bytes", NULL);
    bad("__metadata__ not an object", "{\"__metadata__\":[\"a\"]}", 0, "'__metadata__' must be an object",
        NULL);
    bad("__metadata__ value not a string", "{\"__metadata__\":{\"format\":1}}", 0, "'__metadata__'",
        "'format' must be a string");
    bad("tensor name with control characters is escaped",
        "{\"a\\nb\":{\"dtype\":\"X\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'a\\x0ab'", NULL);
}

/* ---- sharded models ------------------------------------------------------------------------- */

static const char *SHARD1_HDR =
    "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"y.weight\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]}}";
static const char *SHARD2_HDR = "{\"z.weight\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}";

static void make_shards(const char *sub) {
    mkdir_sub(sub);
    unsigned char d1[12] = {0}, d2[4] = {0};
    float v[2] = {1.5f, -2.0f};
    memcpy(d1, v, 8);
    put_le(d1 + 8, 0x3f80, 2);
    put_le(d1 + 10, 0x4000, 2);
    put_le(d2, 0x3c00, 2);
    put_le(d2 + 2, 0xc000, 2);
    write_image(path_in(sub, "model-00001-of-00002.safetensors"), SHARD1_HDR, d1, sizeof d1);
    write_image(path_in(sub, "model-00002-of-00002.safetensors"), SHARD2_HDR, d2, sizeof d2);
}

static int set_open_sub(const char *sub, pt_st_set *s, pt_error *e) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", g_dir, sub);
    return pt_st_set_open(dir, s, e);
}

static void bad_index(const char *what, const char *sub, const char *index, const char *f1,
                      const char *f2) {
    make_shards(sub);
    write_text(path_in(sub, "model.safetensors.index.json"), index);
    pt_st_set s;
    pt_error e = {{0}};
    int rc = set_open_sub(sub, &s, &e);
    expect_fail(what, rc, &e, f1, f2, NULL);
    check(s.files == NULL && s.n_files == 0, "  ... set left empty", NULL);
}

#define GOOD_MAP                                                                                   \
    "\"x.weight\":\"model-00001-of-00002.safetensors\","                                           \
    "\"y.weight\":\"model-00001-of-00002.safetensors\","                                           \
    "\"z.weight\":\"model-00002-of-00002.safetensors\""

static void test_sharded(void) {
    make_shards("sharded");
    write_text(path_in("sharded", "model.safetensors.index.json"),
               "{\"metadata\":{\"total_size\":16},\"weight_map\":{" GOOD_MAP "}}");
    pt_st_set s;
    pt_error e = {{0}};
    int rc = set_open_sub("sharded", &s, &e);
    check(rc == 0 && s.n_files == 2, "sharded: opens 2 distinct shards", e.msg);
    if (rc == 0) {
        const pt_st_tensor *x = pt_st_find(&s, "x.weight"), *y = pt_st_find(&s, "y.weight"),
                           *z = pt_st_find(&s, "z.weight");
        check(x && y && z && strstr(x->file, "model-00001-of-00002") && strstr(y->file, "model-00001") &&
                  strstr(z->file, "model-00002-of-00002"),
              "sharded: every tensor found in its shard", NULL);
        float o[2];
        int ok = x && z && pt_st_to_f32(x, o, &e) == 0 && o[0] == 1.5f && o[1] == -2.0f &&
                 pt_st_to_f32(z, o, &e) == 0 && o[0] == 1.0f && o[1] == -2.0f && y &&
                 pt_st_to_f32(y, o, &e) == 0 && o[0] == 1.0f && o[1] == 2.0f;
        check(ok, "sharded: values", e.msg);
        check(pt_st_find(&s, "w.weight") == NULL, "sharded: absent -> NULL", NULL);
        pt_st_set_close(&s);
        check(s.files == NULL && s.n_files == 0, "sharded: close empties the set", NULL);
    }

    /* model.safetensors wins over the index when both exist */
    mkdir_sub("both");
    write_image(path_in("both", "model.safetensors"), SHARD2_HDR, "\0\0\0\0", 4);
    write_text(path_in("both", "model.safetensors.index.json"), "garbage");
    rc = set_open_sub("both", &s, &e);
    check(rc == 0 && s.n_files == 1 && pt_st_find(&s, "z.weight"), "model.safetensors preferred", e.msg);
    if (rc == 0) pt_st_set_close(&s);

    mkdir_sub("empty");
    rc = set_open_sub("empty", &s, &e);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/empty: no model.safetensors or model.safetensors.index.json", g_dir);
    expect_fail("neither file exists", rc, &e, dir, NULL, NULL);
    check(strcmp(e.msg, dir) == 0, "  ... exact message", e.msg);

    mkdir_sub("badsingle");
    write_bytes(path_in("badsingle", "model.safetensors"), "\x02\0\0\0\0\0\0\0[]", 10);
    rc = set_open_sub("badsingle", &s, &e);
    expect_fail("corrupt model.safetensors", rc, &e, "badsingle/model.safetensors: ", "not a JSON object",
                NULL);

    const char *ip = "model.safetensors.index.json: ";
    bad_index("index: not JSON", "i1", "{\"weight_map\":", ip, "not valid JSON");
    bad_index("index: not an object", "i2", "[]", ip, "not a JSON object");
    bad_index("index: missing weight_map", "i3", "{\"metadata\":{}}", ip, "missing 'weight_map'");
    bad_index("index: weight_map not an object", "i4", "{\"weight_map\":[\"a\"]}", ip,
              "'weight_map' must be an object");
    bad_index("index: weight_map empty", "i5", "{\"weight_map\":{}}", ip, "empty");
    bad_index("index: value not a string", "i6",
              "{\"weight_map\":{" GOOD_MAP ",\"q\":3}}", ip, "'q' must be a string");
    bad_index("index: shard path with '/'", "i7",
              "{\"weight_map\":{\"x.weight\":\"../i1/model-00001-of-00002.safetensors\"}}", ip,
              "not a plain file name");
    bad_index("index: shard '..'", "i8", "{\"weight_map\":{\"x.weight\":\"..\"}}", ip,
              "not a plain file name");
    bad_index("index: absolute shard path", "i9",
              "{\"weight_map\":{\"x.weight\":\"/etc/passwd\"}}", ip, "not a plain file name");
    bad_index("index: empty shard name", "i10", "{\"weight_map\":{\"x.weight\":\"\"}}", ip,
              "not a plain file name");
    bad_index("index: shard file missing", "i11",
              "{\"weight_map\":{" GOOD_MAP ",\"w\":\"model-00003-of-00002.safetensors\"}}",
              ip, "shard 'model-00003-of-00002.safetensors' does not exist");
    bad_index("index: tensor not in its shard", "i12",
              "{\"weight_map\":{\"x.weight\":\"model-00002-of-00002.safetensors\"}}", ip,
              "tensor 'x.weight' is listed in shard 'model-00002-of-00002.safetensors'");
    bad_index("index: duplicate key", "i13",
              "{\"weight_map\":{" GOOD_MAP ",\"x.weight\":\"model-00001-of-00002.safetensors\"}}", ip,
              "key 'x.weight' appears twice");

    /* the same tensor in two shards */
    make_shards("i14");
    write_image(path_in("i14", "model-00002-of-00002.safetensors"),
                "{\"z.weight\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                "\"x.weight\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[4,8]}}",
                "\0\0\0\0\0\0\0\0", 8);
    write_text(path_in("i14", "model.safetensors.index.json"), "{\"weight_map\":{" GOOD_MAP "}}");
    rc = set_open_sub("i14", &s, &e);
    expect_fail("index: tensor in two shards", rc, &e, ip, "'x.weight' appears in two shards", NULL);

    /* a corrupt shard */
    make_shards("i15");
    write_image(path_in("i15", "model-00002-of-00002.safetensors"),
                "{\"z.weight\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,4]}}", "\0\0\0\0", 4);
    write_text(path_in("i15", "model.safetensors.index.json"), "{\"weight_map\":{" GOOD_MAP "}}");
    rc = set_open_sub("i15", &s, &e);
    expect_fail("index: corrupt shard", rc, &e, "i15/model-00002-of-00002.safetensors: ",
                "tensor 'z.weight': shape [3] x F16 is 6 bytes", NULL);
}

/* Out of memory at each allocation in turn while opening a sharded model (the index, both
 * shards' headers): every one is an error naming the file, with nothing leaked (the sanitizer
 * and valgrind runs check that), until the walk passes every allocation and the open succeeds. */
static void test_out_of_memory(void) {
    make_shards("oom");
    write_text(path_in("oom", "model.safetensors.index.json"), "{\"weight_map\":{" GOOD_MAP "}}");
    int failed = 0, named = 0, opened = 0;
    for (long k = 0; k < 200 && !opened; k++) {
        pt_st_set s;
        pt_error e = {{0}};
        pt_test_fail_alloc_after(k);
        const int rc = set_open_sub("oom", &s, &e);
        pt_test_fail_alloc_after(-1);
        if (rc == 0) {
            opened = pt_st_find(&s, "z.weight") != NULL;
            pt_st_set_close(&s);
            break;
        }
        failed++;
        named += strstr(e.msg, "out of memory") && strstr(e.msg, ".safetensors") && s.files == NULL;
    }
    char why[64];
    snprintf(why, sizeof why, "%d failures, %d named", failed, named);
    printf("     out of memory walk: %s\n", why);
    check(failed >= 5 && named == failed,
          "out of memory at every allocation: an error naming the file", why);
    check(opened, "out of memory walk ends with a successful open", NULL);
}

static void rm_rf(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/pt_st_test_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_valid();
    test_bad_files();
    test_sharded();
    test_out_of_memory();
    check(strcmp(pt_dtype_name((pt_dtype)99), "?") == 0 && pt_dtype_size((pt_dtype)99) == 0,
          "dtype helpers reject out-of-range values", NULL);
    rm_rf(g_dir);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
