/* punctum — Jinja interpreter: tokens of a template (jinja_lex.c), read by jinja_parse.c. */
#ifndef PT_CHAT_JINJA_LEX_H
#define PT_CHAT_JINJA_LEX_H

#include "chat/jinja.h"

enum {
    JT_DATA,
    JT_VAR_BEGIN,
    JT_VAR_END,
    JT_BLOCK_BEGIN,
    JT_BLOCK_END,
    JT_NAME,
    JT_STRING,
    JT_INT,
    JT_FLOAT,
    JT_OP,
    JT_EOF
};

typedef struct {
    uint8_t k;
    int line;
    const char *p; /* text (JT_STRING: decoded, in the arena) */
    uint32_t n;
    int64_t i;
    double f;
} jn_tok;

typedef struct {
    jn_tok *v;
    size_t n, cap;
} jn_toks;

/* Tokenize src (newlines normalized, one trailing newline dropped, as jinja2 does). */
void jn_lex(jn_ctx *c, const char *src, size_t len, jn_toks *out);

#endif
