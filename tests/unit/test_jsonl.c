/* Unit tests for the pairs JSONL reader (pt_jsonl_next) and record parser (pt_record_parse)
 * on hostile input: blank and CRLF lines, a last line without a newline, NUL bytes, a line
 * over the 16 MiB cap (recorded as a bad record, never buffered whole, the next line intact),
 * and each kind of bad record, whose message must be one line naming its line number. */
#include "punctum/records.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int n_pass, n_fail;

static void check(int ok, const char *what, const char *detail) {
    if (ok) {
        n_pass++;
        printf("ok   %s\n", what);
    } else {
        n_fail++;
        printf("FAIL %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    }
}

static char *write_tmp(const void *data, size_t n) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/test_jsonl_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
    return path;
}

static void test_lines(void) {
    const char text[] = "{\"a_ids\": [1]}\n\n   \n{\"a_ids\": [2]}\r\n\t\n{\"a_ids\": [3]}";
    char *path = write_tmp(text, sizeof text - 1);
    pt_jsonl in;
    pt_error e;
    check(pt_jsonl_open(&in, path, &e) == 0, "open", e.msg);
    size_t len;
    const char *l1 = pt_jsonl_next(&in, &len);
    check(l1 && in.line_no == 1 && !strcmp(l1, "{\"a_ids\": [1]}"), "first line", NULL);
    const char *l2 = pt_jsonl_next(&in, &len);
    check(l2 && in.line_no == 4 && len == strlen("{\"a_ids\": [2]}\r"),
          "blank lines skipped, CR kept", NULL);
    const char *l3 = pt_jsonl_next(&in, &len);
    check(l3 && in.line_no == 6 && !strcmp(l3, "{\"a_ids\": [3]}"), "last line without newline",
          NULL);
    check(pt_jsonl_next(&in, &len) == NULL, "end of file", NULL);
    pt_jsonl_close(&in);
    unlink(path);
}

/* A line over PT_MAX_LINE_BYTES: returned as "" with too_long; the reader's buffer stays
 * bounded and the following line is read whole. */
static void test_too_long(void) {
    const size_t big = (size_t)PT_MAX_LINE_BYTES + 1024 * 1024;
    char *buf = malloc(big + 64);
    size_t n = 0;
    n += (size_t)sprintf(buf + n, "{\"a_ids\": [1]}\n{\"a\": \"");
    memset(buf + n, 'x', big);
    n += big;
    n += (size_t)sprintf(buf + n, "\"}\n{\"a_ids\": [7]}\n");
    char *path = write_tmp(buf, n);
    free(buf);
    pt_jsonl in;
    pt_error e;
    pt_jsonl_open(&in, path, &e);
    size_t len;
    pt_jsonl_next(&in, &len);
    const char *l = pt_jsonl_next(&in, &len);
    check(l && in.too_long && len == 0 && in.line_no == 2, "oversized line flagged", NULL);
    check(in.cap <= (size_t)PT_MAX_LINE_BYTES, "reader buffer bounded by the cap", NULL);
    pt_record_ctx ctx = {100, 64, NULL, PT_DERIVE_NONE, NULL, NULL};
    pt_record r;
    pt_record_parse(&ctx, "", 0, in.line_no, 1, &r);
    check(r.status == 1 && strstr(r.message, "line 2") && strstr(r.message, "longer than"),
          "oversized line is a bad record", r.message);
    pt_record_free(&r);
    l = pt_jsonl_next(&in, &len);
    check(l && !in.too_long && in.line_no == 3 && !strcmp(l, "{\"a_ids\": [7]}"),
          "line after the oversized one intact", NULL);
    pt_jsonl_close(&in);
    unlink(path);
}

static void bad(const char *what, const char *json, const char *fragment) {
    pt_record_ctx ctx = {100, 8, NULL, PT_DERIVE_NONE, NULL, NULL};
    pt_record r;
    pt_record_parse(&ctx, json, strlen(json), 42, 0, &r);
    int ok = r.status == 1 && !strncmp(r.message, "line 42: ", 9) && !strchr(r.message, '\n') &&
             (!fragment || strstr(r.message, fragment)) && r.id;
    char d[400];
    snprintf(d, sizeof d, "status=%d msg=\"%s\"", r.status, r.message);
    check(ok, what, ok ? NULL : d);
    pt_record_free(&r);
}

static void test_bad_records(void) {
    bad("invalid JSON", "{bad", "invalid JSON");
    bad("not an object", "[1, 2]", "not a JSON object");
    bad("missing a", "{\"b\": \"x\"}", "missing 'a'");
    bad("a_ids not a list", "{\"a_ids\": 3}", "list of integers");
    bad("id out of vocabulary", "{\"a_ids\": [1, 100]}", "out of range");
    bad("negative id", "{\"a_ids\": [-1]}", "out of range");
    bad("float id", "{\"a_ids\": [1.5]}", "not an integer");
    bad("empty prompt", "{\"a_ids\": []}", "no tokens");
    bad("too long for the context", "{\"a_ids\": [1,2,3,4,5,6,7,8,9]}",
        "longer than the model's context");
    bad("text without a tokenizer", "{\"a\": \"hello\"}", "tokenizer");
    bad("both a and a_ids", "{\"a\": \"x\", \"a_ids\": [1]}", "either");
    bad("duplicate keys", "{\"a_ids\": [1], \"a_ids\": [2]}", "invalid JSON");
    bad("bad target_id", "{\"a_ids\": [1], \"target_id\": 100}", "target_id");
    bad("bad positions", "{\"a_ids\": [1], \"positions\": [9]}", "out of range");
    bad("id of a wrong type", "{\"id\": [1], \"a_ids\": [1]}", "'id'");
    /* a NUL byte in the JSON text: jansson refuses it unless escaped */
    const char nul[] = {'{', '"', 'a', '_', 'i', 'd', 's', '"', ':', '[', '1', ']', '}', 0, 'x'};
    pt_record_ctx ctx = {100, 8, NULL, PT_DERIVE_NONE, NULL, NULL};
    pt_record r;
    pt_record_parse(&ctx, nul, sizeof nul, 1, 0, &r);
    check(r.status == 1, "embedded NUL refused", r.message);
    pt_record_free(&r);
    const char *good =
        "{\"id\": \"ok\", \"a_ids\": [1, 2], \"b_ids\": [1, 2, 3], \"target_id\": 4}";
    pt_record_parse(&ctx, good, strlen(good), 5, 3, &r);
    check(r.status == 0 && r.has_b && r.n_tok[0] == 2 && r.n_tok[1] == 3 && r.target_id[0] == 4 &&
              !strcmp(r.id, "ok") && r.index == 3,
          "a good id record", r.message);
    pt_record_free(&r);
}

int main(void) {
    test_lines();
    test_too_long();
    test_bad_records();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
