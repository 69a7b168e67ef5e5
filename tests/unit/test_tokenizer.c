/* Unit tests of the tokenizer's C API that need no Python: loading the seed tokenizers of
 * tests/fuzz/corpus/tokenizer (one per family), encoding from several threads at once with
 * results identical to a single-threaded run, empty and invalid input, the API's edge cases, and
 * out of memory at each allocation of loading in turn (an error naming the file, nothing leaked).
 * Conformance with Hugging Face tokenizers is tests/python/test_tokenizer.py. */
#include "punctum/tokenizer.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0, checks = 0;
#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(c)) {                                                                                \
            failures++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static const char *const TEXTS[] = {
    "",
    "Hello world",
    "Create a sign with a message on it that describes your situation.",
    "He saw a carrot and had to grab it,\nHis hunger was like a starving",
    "I'm sure you're right, WE'VE seen 12345 of them!!! ...",
    "caf\xc3\xa9 e\xcc\x81 \xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x82 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xd0\x9f\xd1\x80\xd0\xb8",
    "<s> special <|endoftext|> tokens [MASK] inside <sep> text",
    "  \t\n\r\n   many   spaces\n\n",
};
#define NT (sizeof TEXTS / sizeof TEXTS[0])

typedef struct {
    const pt_tokenizer *t;
    pt_encoding ref[NT];
    int bad;
} job;

static int same(const pt_encoding *a, const pt_encoding *b) {
    if (a->n != b->n) return 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->ids[i] != b->ids[i] || a->byte_start[i] != b->byte_start[i] || a->byte_end[i] != b->byte_end[i])
            return 0;
    return 1;
}

static void *worker(void *arg) {
    job *j = arg;
    pt_encoding enc = {0};
    pt_error e;
    for (int round = 0; round < 200; round++) {
        size_t k = (size_t)round % NT;
        if (pt_tokenizer_encode(j->t, TEXTS[k], strlen(TEXTS[k]), 1, &enc, &e) != 0 || !same(&enc, &j->ref[k]))
            j->bad++;
    }
    pt_encoding_free(&enc);
    return NULL;
}

static void test_file(const char *path) {
    pt_error e;
    pt_tokenizer *t = pt_tokenizer_load(path, &e);
    CHECK(t != NULL, "%s: load failed: %s", path, e.msg);
    if (!t) return;
    int nv = pt_tokenizer_vocab_size(t);
    CHECK(nv > 0, "%s: empty vocabulary", path);
    CHECK(pt_tokenizer_piece(t, -1) == NULL && pt_tokenizer_piece(t, nv) == NULL, "%s: piece out of range", path);
    for (int id = 0; id < nv; id++) {
        size_t len = 0;
        const char *p = pt_tokenizer_piece_bytes(t, id, &len);
        CHECK(p && pt_tokenizer_piece(t, id) == p, "%s: no piece for id %d", path, id);
    }

    job j;
    memset(&j, 0, sizeof j);
    j.t = t;
    for (size_t k = 0; k < NT; k++) {
        size_t n = strlen(TEXTS[k]);
        int rc = pt_tokenizer_encode(t, TEXTS[k], n, 1, &j.ref[k], &e);
        CHECK(rc == 0, "%s: encode failed: %s", path, e.msg);
        for (size_t i = 0; i < j.ref[k].n; i++) {
            CHECK(j.ref[k].ids[i] >= 0 && j.ref[k].ids[i] < nv, "%s: id out of range", path);
            CHECK(j.ref[k].byte_start[i] >= 0 && (size_t)j.ref[k].byte_end[i] <= n, "%s: span outside text", path);
        }
        /* encoding twice into the same buffer clears it first */
        pt_encoding again = {0};
        pt_tokenizer_encode(t, "xyz", 3, 1, &again, &e);
        pt_tokenizer_encode(t, TEXTS[k], n, 1, &again, &e);
        CHECK(same(&again, &j.ref[k]), "%s: re-encoding into a used buffer differs", path);
        pt_encoding_free(&again);
    }
    /* without special tokens, never more tokens than with them */
    pt_encoding ns = {0};
    CHECK(pt_tokenizer_encode(t, TEXTS[1], strlen(TEXTS[1]), 0, &ns, &e) == 0, "%s: no-special encode", path);
    CHECK(ns.n <= j.ref[1].n, "%s: no-special longer than special", path);
    pt_encoding_free(&ns);
    /* invalid UTF-8 is an error with a message */
    pt_encoding bad = {0};
    e.msg[0] = 0;
    CHECK(pt_tokenizer_encode(t, "ok\xc3(", 4, 1, &bad, &e) != 0 && strstr(e.msg, "UTF-8"),
          "%s: invalid UTF-8 accepted", path);
    CHECK(pt_tokenizer_encode(t, "\xed\xa0\x80", 3, 1, &bad, &e) != 0, "%s: surrogate accepted", path);
    pt_encoding_free(&bad);

    pthread_t th[4];
    job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = j;
        jobs[i].bad = 0;
        pthread_create(&th[i], NULL, worker, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].bad == 0, "%s: thread %d got %d different encodings", path, i, jobs[i].bad);
    }
    for (size_t k = 0; k < NT; k++) pt_encoding_free(&j.ref[k]);
    pt_tokenizer_free(t);
}

/* Load from the file, or from `json` (named `path`) when given, with the (k+1)-th allocation
 * failing (k < 0: none). */
static pt_tokenizer *load_failing_at(long k, const char *path, const char *json, pt_error *e) {
    e->msg[0] = 0;
    pt_test_fail_alloc_after(k);
    pt_tokenizer *t =
        json ? pt_tokenizer_parse(json, strlen(json), path, e) : pt_tokenizer_load(path, e);
    pt_test_fail_alloc_after(-1);
    return t;
}

/* Out of memory at each allocation of loading in turn: every failure an error naming the file
 * and saying so (nothing leaked: valgrind, ASan), until a load passes every allocation. Returns
 * that tokenizer (NULL if none) and the number of failures. */
static pt_tokenizer *walk_out_of_memory(const char *path, const char *json, int *failed) {
    pt_error e;
    pt_tokenizer *t = NULL;
    *failed = 0;
    for (long k = 0; k < 10000 && !t; k++) {
        t = load_failing_at(k, path, json, &e);
        if (t) break;
        ++*failed;
        CHECK(strstr(e.msg, path) == e.msg && strstr(e.msg, ": out of memory allocating "),
              "%s: allocation %ld failing: %s", path, k + 1, e.msg);
    }
    CHECK(t != NULL, "%s: no load succeeded in the out of memory walk", path);
    printf("     %s: out of memory at each of %d allocations, then loaded\n", path, *failed);
    return t;
}

/* The walk over a seed tokenizer: the tokenizer that finally loads encodes TEXTS and decodes
 * every id as one loaded without the hook does. */
static void test_out_of_memory_file(const char *path) {
    pt_error e;
    pt_tokenizer *ref = pt_tokenizer_load(path, &e);
    CHECK(ref != NULL, "%s: load failed: %s", path, e.msg);
    if (!ref) return;
    int failed;
    pt_tokenizer *t = walk_out_of_memory(path, NULL, &failed);
    /* at least (a tokenizer without components): the file, the tokenizer and its name, 5
     * vocabulary arrays, 2 vocabulary hash arrays, the 2-byte characters, 3 merge arrays, the
     * added tokens and their ids, 2 tries, lead and trail, the pieces' offsets */
    CHECK(failed >= 21, "%s: only %d allocations failed in turn", path, failed);
    if (t) {
        const int nv = pt_tokenizer_vocab_size(ref);
        CHECK(pt_tokenizer_vocab_size(t) == nv, "%s: vocabulary size after the walk", path);
        for (int id = 0; id < nv && pt_tokenizer_vocab_size(t) == nv; id++) {
            size_t la, lb;
            const char *a = pt_tokenizer_piece_bytes(ref, id, &la),
                       *b = pt_tokenizer_piece_bytes(t, id, &lb);
            CHECK(la == lb && !memcmp(a, b, la), "%s: piece of id %d after the walk", path, id);
        }
        pt_encoding want = {0}, got = {0};
        for (size_t k = 0; k < NT; k++) {
            const size_t n = strlen(TEXTS[k]);
            CHECK(pt_tokenizer_encode(ref, TEXTS[k], n, 1, &want, &e) == 0 &&
                      pt_tokenizer_encode(t, TEXTS[k], n, 1, &got, &e) == 0 && same(&got, &want),
                  "%s: text %zu encodes differently after the walk", path, k);
        }
        pt_encoding_free(&want);
        pt_encoding_free(&got);
    }
    pt_tokenizer_free(t);
    pt_tokenizer_free(ref);
}

static void test_errors(void) {
    pt_error e;
    pt_tokenizer *t = pt_tokenizer_parse("{", 1, "x.json", &e);
    CHECK(!t && strstr(e.msg, "x.json"), "bad JSON accepted or message lacks the name: %s", e.msg);
    t = pt_tokenizer_load("/nonexistent/tokenizer.json", &e);
    CHECK(!t && strstr(e.msg, "/nonexistent/tokenizer.json"), "missing file: %s", e.msg);
    const char *ws = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
                     "\"pre_tokenizer\":{\"type\":\"Whitespace\"}}";
    t = pt_tokenizer_parse(ws, strlen(ws), "tokenizer.json", &e);
    CHECK(!t && strstr(e.msg, "pre_tokenizer type 'Whitespace' is not supported"), "Whitespace: %s", e.msg);
    const char *nl = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a\\nb c\"]}}";
    t = pt_tokenizer_parse(nl, strlen(nl), "tokenizer.json", &e);
    CHECK(!t && !strchr(e.msg, '\n'), "message not on one line: %s", e.msg);
    const char *ok = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[[\"a\",\"b\"]]}}";
    t = pt_tokenizer_parse(ok, strlen(ok), "tokenizer.json", &e);
    CHECK(t != NULL, "minimal tokenizer: %s", e.msg);
    if (t) {
        pt_encoding enc = {0};
        CHECK(pt_tokenizer_encode(t, "abxa", 4, 1, &enc, &e) == 0, "encode: %s", e.msg);
        /* 'x' is not in the vocabulary and there is no unk token: dropped, as tokenizers does */
        CHECK(enc.n == 2 && enc.ids[0] == 2 && enc.ids[1] == 0, "abxa -> %zu tokens", enc.n);
        CHECK(pt_tokenizer_encode(t, "", 0, 1, &enc, &e) == 0 && enc.n == 0, "empty text");
        pt_encoding_free(&enc);
        pt_encoding_free(&enc); /* twice is harmless */
        CHECK(strcmp(pt_tokenizer_piece(t, 2), "ab") == 0, "piece of 2");
        pt_tokenizer_free(t);
    }
    pt_tokenizer_free(NULL);

    /* the walk from memory, with the ids known: the name is the one given; 2 allocations fewer
     * than from a file (no file, no added tokens) */
    int failed;
    t = walk_out_of_memory("tok.json", ok, &failed);
    CHECK(failed >= 19, "tok.json: only %d allocations failed in turn", failed);
    if (t) {
        pt_encoding enc = {0};
        CHECK(pt_tokenizer_encode(t, "abxa", 4, 1, &enc, &e) == 0 && enc.n == 2 &&
                  enc.ids[0] == 2 && enc.ids[1] == 0,
              "abxa after the walk: %zu tokens", enc.n);
        pt_encoding_free(&enc);
        pt_tokenizer_free(t);
    }
}

int main(void) {
    const char *dir = "tests/fuzz/corpus/tokenizer";
    DIR *d = opendir(dir);
    int files = 0;
    CHECK(d != NULL, "cannot open %s (run from the repository root)", dir);
    if (d) {
        struct dirent *ent;
        while ((ent = readdir(d))) {
            size_t l = strlen(ent->d_name);
            if (l < 6 || strcmp(ent->d_name + l - 5, ".json")) continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
            test_file(path);
            test_out_of_memory_file(path);
            files++;
        }
        closedir(d);
    }
    CHECK(files >= 5, "only %d seed tokenizers found", files);
    test_errors();
    printf("test_tokenizer: %d checks, %d failures (%d tokenizers)\n", checks, failures, files);
    return failures ? 1 : 0;
}
