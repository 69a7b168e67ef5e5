/* libFuzzer harness: the pairs JSONL reader (pt_jsonl_next) and the record parser
 * (pt_record_parse) on arbitrary bytes. No tokenizer (ctx.tok == NULL): text records must be
 * refused cleanly, id records validated. The first byte picks the --derive-b mode and the
 * vocabulary size, so every path of the parser is reachable. Invariants checked on every
 * record: a status of 0 or 1, a one-line NUL-terminated message naming the line for status 1,
 * ids inside the vocabulary, token counts inside the context, positions inside the context. */
#include "punctum/records.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_record(const pt_record_ctx *ctx, const pt_record *r, int64_t line) {
    if (r->line != line || !r->id) abort();
    if (r->status != 0 && r->status != 1) abort();
    if (!memchr(r->message, '\0', sizeof r->message) || strchr(r->message, '\n')) abort();
    if (r->status) {
        if (strncmp(r->message, "line ", 5) != 0) abort();
        return;
    }
    if (r->message[0]) abort();
    for (int s = 0; s < 1 + r->has_b; s++) {
        if (r->n_tok[s] < 1 || r->n_tok[s] > ctx->max_positions || !r->ids[s]) abort();
        for (int i = 0; i < r->n_tok[s]; i++)
            if (r->ids[s][i] < 0 || r->ids[s][i] >= ctx->vocab_size) abort();
        if (r->target_id[s] < -1 || r->target_id[s] >= ctx->vocab_size) abort();
    }
    for (int k = 0; k < r->n_positions; k++)
        if (r->positions[k] < 0 || r->positions[k] >= ctx->max_positions) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const uint8_t mode = data[0];
    data++, size--;
    pt_record_ctx ctx = {.vocab_size = 1 + (mode & 0x3f) * 17,
                         .max_positions = 1 + (mode >> 4) * 5,
                         .tok = NULL,
                         .derive = (pt_derive_kind)((mode >> 6) % 3),
                         .derive_str = "."};

    /* 1. the record parser on the input's first line (the parser only ever sees one line:
     * the reader splits at newlines) */
    const uint8_t *nl = memchr(data, '\n', size);
    pt_record r;
    pt_record_parse(&ctx, (const char *)data, nl ? (size_t)(nl - data) : size, 1, 0, &r);
    check_record(&ctx, &r, 1);
    pt_record_free(&r);

    /* 2. the line reader over the input as a file, then each line through the parser */
    char path[] = "/tmp/fuzz_jsonl_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 0;
    FILE *f = fdopen(fd, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    pt_jsonl in;
    pt_error e;
    if (pt_jsonl_open(&in, path, &e) == 0) {
        size_t len;
        const char *line;
        int64_t index = 0, prev_line = 0;
        while ((line = pt_jsonl_next(&in, &len))) {
            if (in.line_no <= prev_line || line[len] != 0 || len >= PT_MAX_LINE_BYTES) abort();
            prev_line = in.line_no;
            pt_record_parse(&ctx, in.too_long ? "" : line, in.too_long ? 0 : len, in.line_no,
                            index++, &r);
            check_record(&ctx, &r, in.line_no);
            pt_record_free(&r);
        }
        pt_jsonl_close(&in);
    }
    unlink(path);
    return 0;
}
