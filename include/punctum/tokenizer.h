/* punctum — Hugging Face tokenizer.json in C. Encodings equal those of the `tokenizers` library:
 * same ids, and byte spans equal to its character offsets converted to UTF-8 byte offsets.
 * An unsupported component is an error naming it, never a silent wrong encoding. */
#ifndef PUNCTUM_TOKENIZER_H
#define PUNCTUM_TOKENIZER_H

#include "punctum/common.h"

typedef struct pt_tokenizer pt_tokenizer;

typedef struct {
    int32_t *ids;
    int32_t *byte_start;   /* span of each token in the UTF-8 input; special tokens added by the */
    int32_t *byte_end;     /* post-processor (BOS) get start == end == 0 (as HF's offsets (0,0)) */
    size_t n, cap;
} pt_encoding;

pt_tokenizer *pt_tokenizer_load(const char *path, pt_error *e);
/* From memory (fuzzing, tests); `name` used in messages. */
pt_tokenizer *pt_tokenizer_parse(const char *json, size_t len, const char *name, pt_error *e);
void pt_tokenizer_free(pt_tokenizer *t);

/* Encode UTF-8 text (invalid UTF-8 is an error). add_special: apply the post-processor
 * (e.g. prepend BOS), as tokenizers' encode(text, add_special_tokens=True). Appends to out
 * after clearing it. */
int pt_tokenizer_encode(const pt_tokenizer *t, const char *text, size_t len, int add_special,
                        pt_encoding *out, pt_error *e);
void pt_encoding_free(pt_encoding *enc);

/* Decoded text of a single token (as tokenizers' decode([id], skip_special_tokens=False)),
 * invalid UTF-8 replaced by U+FFFD. Returns a pointer to a NUL-terminated string owned by the
 * tokenizer (valid until it is freed) or NULL if id is out of range. */
const char *pt_tokenizer_piece(const pt_tokenizer *t, int32_t id);
/* The same piece with its length in bytes (a piece may contain NUL, e.g. "<0x00>" decoded). */
const char *pt_tokenizer_piece_bytes(const pt_tokenizer *t, int32_t id, size_t *len);
int pt_tokenizer_vocab_size(const pt_tokenizer *t);

#endif
