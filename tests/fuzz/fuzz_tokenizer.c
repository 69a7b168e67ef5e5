/* libFuzzer harness: tokenizer.json parsing on arbitrary bytes. A file that loads must encode a
 * fixed set of texts without crashing, and what it returns must respect the API's promises:
 * ids inside the vocabulary, byte spans inside the text, a piece for every id. A file that does
 * not load must leave a one-line message. */
#include "punctum/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const TEXTS[] = {
    "",
    "Hello world",
    " The capital of France is Paris. ",
    "I'm sure you're right, we'VE seen it's 12345 — ok?!\n\n\tend",
    "caf\xc3\xa9 e\xcc\x81 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80\xe2\x80\x8d\xf0\x9f\x91\xa9 \xd9\x85\xd8\xb1",
    "<s> hello </s><unk><|endoftext|>[MASK] a <sep> b",
    "\xe2\x96\x81\xe2\x96\x81  \r\n\xc2\xa0\xe3\x80\x80x",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pt_error e;
    memset(&e, 0, sizeof e);
    pt_tokenizer *t = pt_tokenizer_parse((const char *)data, size, "tokenizer.json", &e);
    if (!t) {
        if (!memchr(e.msg, '\0', sizeof e.msg) || strchr(e.msg, '\n') || !e.msg[0]) abort();
        return 0;
    }
    int nv = pt_tokenizer_vocab_size(t);
    if (nv < 0) abort();
    for (int32_t id = 0; id < nv && id < 4096; id++) {
        size_t len;
        const char *p = pt_tokenizer_piece_bytes(t, id, &len);
        if (!p || !pt_tokenizer_piece(t, id)) abort();
    }
    if (pt_tokenizer_piece(t, -1) || pt_tokenizer_piece(t, nv)) abort();
    pt_encoding enc = {0};
    for (size_t k = 0; k < sizeof TEXTS / sizeof TEXTS[0]; k++) {
        size_t n = strlen(TEXTS[k]);
        for (int special = 0; special < 2; special++) {
            if (pt_tokenizer_encode(t, TEXTS[k], n, special, &enc, &e) != 0) {
                if (!memchr(e.msg, '\0', sizeof e.msg) || strchr(e.msg, '\n')) abort();
                continue;
            }
            for (size_t i = 0; i < enc.n; i++) {
                if (enc.ids[i] < 0 || enc.ids[i] >= nv) abort();
                if (enc.byte_start[i] < 0 || (size_t)enc.byte_start[i] > n) abort();
                if (enc.byte_end[i] < 0 || (size_t)enc.byte_end[i] > n) abort();
                if (!pt_tokenizer_piece(t, enc.ids[i])) abort();
            }
        }
    }
    /* invalid UTF-8 is an error, never a crash */
    if (pt_tokenizer_encode(t, "a\xff", 2, 1, &enc, &e) == 0) abort();
    pt_encoding_free(&enc);
    pt_tokenizer_free(t);
    return 0;
}
