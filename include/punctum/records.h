/* punctum — pairs JSONL input (SPEC §2): bounded line reading, record parsing, validation.
 * A bad record never stops the sweep (unless --strict): it is kept with status 1 and a
 * one-line message naming its line. */
#ifndef PUNCTUM_RECORDS_H
#define PUNCTUM_RECORDS_H

#include <stdio.h>

#include "punctum/chat.h"
#include "punctum/common.h"
#include "punctum/tokenizer.h"

#define PT_MAX_LINE_BYTES (16u * 1024u * 1024u)

typedef struct {
    FILE *f;
    char *path;
    char *buf;
    size_t cap;
    int64_t line_no;   /* 1-based number of the line last returned */
    int too_long;      /* the line last returned exceeded PT_MAX_LINE_BYTES (its text dropped) */
} pt_jsonl;

int pt_jsonl_open(pt_jsonl *r, const char *path, pt_error *e);
/* Next non-blank line (NUL-terminated, without the newline) or NULL at end of file. A line
 * longer than PT_MAX_LINE_BYTES is returned as "" with too_long set, never buffered whole. */
const char *pt_jsonl_next(pt_jsonl *r, size_t *len);
void pt_jsonl_close(pt_jsonl *r);

typedef enum { PT_DERIVE_NONE = 0, PT_DERIVE_APPEND, PT_DERIVE_STRIP_PUNCT } pt_derive_kind;

typedef struct {
    int64_t line;
    int64_t index;        /* 0-based index among the file's records (for --shard) */
    char *id;
    int status;           /* 0 ok, 1 skipped */
    char message[256];

    char *text[2];        /* a, b prompts (NULL: given as ids / absent) */
    int has_b;
    int32_t *ids[2];      /* token ids of a and b */
    int32_t *byte_start[2], *byte_end[2]; /* spans in text (-1 when given as ids) */
    int8_t *role[2];      /* --chat: per token 0 template, 1 prompt text (NULL: pt_record_role) */
    char *system;         /* the record's system message (--chat) */
    int n_tok[2];
    char *target_text;
    char *target_b_text;  /* `target_b` (generation's gen_hit_b; NULL: none) */
    int32_t target_id[2]; /* per side; -1: none */
    int32_t *positions;   /* per-record positions override (NULL: --positions) */
    int n_positions;
    int seq_local[2];     /* the sweep's batch-local sequence indices (-1: none) */
} pt_record;

typedef struct {
    int vocab_size;
    int max_positions;
    const pt_tokenizer *tok;  /* NULL: text records are an error */
    pt_derive_kind derive;
    const char *derive_str;
    const pt_chat *chat;      /* --chat: prompts wrapped in this template (NULL: raw text) */
} pt_record_ctx;

/* Parse one JSONL line into rec (always fills line/index/id; sets status=1 + message on any
 * problem: invalid JSON, missing a/a_ids, wrong types, ids out of vocabulary, empty prompt,
 * longer than max_positions, text without a tokenizer). */
void pt_record_parse(const pt_record_ctx *ctx, const char *json, size_t len, int64_t line,
                     int64_t index, pt_record *rec);
void pt_record_free(pt_record *rec);

/* /tokens/role of token t of a side (SPEC §5): with --chat, 1 for tokens sharing a byte with
 * the prompt's own text and 0 for the template's; without, 1 for the text's tokens and 0 for
 * the special tokens the tokenizer adds (empty byte span); 1 for records given as ids. */
int pt_record_role(const pt_record *rec, int side, int t);

/* SPEC §3 punctuation rule on a decoded token text. */
int pt_is_punct_text(const char *s);

#endif
