/* punctum — Jinja interpreter: the lexer, as jinja2's (3.1) with trim_blocks and lstrip_blocks:
 * data, {{ }}, {% %}, {# #} with "-" / "+" whitespace control, raw blocks, and the tokens inside
 * tags (names, strings with Python's unicode-escape decoding, numbers, operators). */
#include "chat/jinja_lex.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    jn_ctx *c;
    const char *s;
    size_t n, pos;
    int line;
    int line_starting; /* the last token ended with a newline */
    jn_toks *out;
} lexer;

static void push(lexer *L, int k, const char *p, size_t n, int line) {
    jn_toks *t = L->out;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        jn_tok *v = jn_alloc(L->c, cap * sizeof *v);
        if (t->n) memcpy(v, t->v, t->n * sizeof *v);
        t->v = v;
        t->cap = cap;
    }
    jn_tok *k0 = &t->v[t->n++];
    memset(k0, 0, sizeof *k0);
    k0->k = (uint8_t)k;
    k0->p = p;
    k0->n = (uint32_t)n;
    k0->line = line;
}

static int count_nl(const char *s, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

/* Python's \s (str.isspace for the characters a regex sees) at s[i]: its length, or 0 */
static size_t space_at(const char *s, size_t n, size_t i) {
    size_t l;
    uint32_t cp = ju_get(s + i, n - i, &l);
    return ju_is_space(cp) ? l : 0;
}

/* length of the whitespace run ending at s[n] */
static size_t trailing_space(const char *s, size_t n) {
    size_t end = n;
    while (end > 0) {
        size_t st = end - 1;
        while (st > 0 && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
        if (!space_at(s, n, st)) break;
        end = st;
    }
    return n - end;
}

static size_t skip_space(const char *s, size_t n, size_t i) {
    size_t l;
    while (i < n && (l = space_at(s, n, i)) > 0) i += l;
    return i;
}

/* text before a tag, with "-" (strip all whitespace) or lstrip_blocks applied */
static void emit_data(lexer *L, const char *text, size_t len, char sign, int is_var) {
    int line = L->line;
    L->line += count_nl(text, len);
    if (sign == '-') {
        len -= trailing_space(text, len);
    } else if (sign != '+' && !is_var) {
        size_t lpos = len;
        while (lpos > 0 && text[lpos - 1] != '\n') lpos--;
        if ((lpos > 0 || L->line_starting) && lpos < len && trailing_space(text, len) >= len - lpos)
            len = lpos;
    }
    if (len) push(L, JT_DATA, text, len, line);
}

/* the end of a block tag at i: "%}" (+ one newline: trim_blocks), "-%}" + whitespace, "+%}" */
static size_t block_end(const char *s, size_t n, size_t i, const char *close, int trim) {
    if (i < n && (s[i] == '-' || s[i] == '+') && i + 2 < n + 0 && !strncmp(s + i + 1, close, 2)) {
        size_t j = i + 3;
        return s[i] == '-' ? skip_space(s, n, j) : j;
    }
    if (i + 1 < n && !strncmp(s + i, close, 2)) {
        size_t j = i + 2;
        if (trim && j < n && s[j] == '\n') j++;
        return j;
    }
    return 0;
}

static void lex_comment(lexer *L, size_t i) {
    const char *s = L->s;
    for (size_t j = i; j + 1 < L->n; j++) {
        size_t end = block_end(s, L->n, j, "#}", 1);
        if (end) {
            L->line += count_nl(s + i, end - i);
            L->line_starting = s[end - 1] == '\n';
            L->pos = end;
            return;
        }
    }
    jn_fail(L->c, JE_SYNTAX, L->line, "missing end of comment tag");
}

/* {% raw %} ... {% endraw %}: the body is data */
static int lex_raw(lexer *L, size_t i) {
    const char *s = L->s;
    size_t n = L->n, j = skip_space(s, n, i);
    if (n - j < 3 || strncmp(s + j, "raw", 3)) return 0;
    j = skip_space(s, n, j + 3);
    size_t body;
    if (j + 2 < n + 1 && s[j] == '-' && j + 2 < n && !strncmp(s + j + 1, "%}", 2))
        body = skip_space(s, n, j + 3);
    else if (j + 1 < n && !strncmp(s + j, "%}", 2))
        body = j + 2;
    else
        return 0;
    for (size_t k = body; k + 1 < n; k++) {
        if (strncmp(s + k, "{%", 2)) continue;
        char sign = k + 2 < n && (s[k + 2] == '-' || s[k + 2] == '+') ? s[k + 2] : 0;
        size_t m = skip_space(s, n, k + 2 + (sign != 0));
        if (n - m < 6 || strncmp(s + m, "endraw", 6)) continue;
        size_t end = block_end(s, n, skip_space(s, n, m + 6), "%}", 1);
        if (!end) continue;
        L->line += count_nl(s + i, body - i);
        emit_data(L, s + body, k - body, sign, 0);
        L->line += count_nl(s + k, end - k);
        L->line_starting = s[end - 1] == '\n';
        L->pos = end;
        return 1;
    }
    jn_fail(L->c, JE_SYNTAX, L->line, "missing end of raw directive");
}

/* ---- tokens inside a tag --------------------------------------------------------------------- */

static int is_digit(char ch) {
    return ch >= '0' && ch <= '9';
}
static int is_name0(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static size_t digits(const char *s, size_t n, size_t i) { /* \d+(_\d+)* */
    size_t j = i;
    while (j < n && is_digit(s[j])) j++;
    while (j > i && j + 1 < n && s[j] == '_' && is_digit(s[j + 1])) {
        j++;
        while (j < n && is_digit(s[j])) j++;
    }
    return j;
}

static void number(lexer *L, size_t i) {
    const char *s = L->s;
    size_t n = L->n, j = digits(s, n, i), k = j;
    int is_float = 0;
    if (!(i > 0 && s[i - 1] == '.')) {
        if (k + 1 < n && s[k] == '.' && is_digit(s[k + 1])) {
            k = digits(s, n, k + 1);
            is_float = 1;
        }
        if (k < n && (s[k] == 'e' || s[k] == 'E')) {
            size_t m = k + 1;
            if (m < n && (s[m] == '+' || s[m] == '-')) m++;
            if (m < n && is_digit(s[m])) {
                k = digits(s, n, m);
                is_float = 1;
            }
        }
    }
    if (!is_float) k = j;
    if (!is_float && s[i] == '0' && k > i + 1)
        for (size_t q = i; q < k; q++)
            if (s[q] != '0' && s[q] != '_')
                jn_fail(L->c, JE_SYNTAX, L->line, "integer with a leading zero");
    char buf[64];
    size_t m = 0;
    for (size_t q = i; q < k && m + 1 < sizeof buf; q++)
        if (s[q] != '_') buf[m++] = s[q];
    buf[m] = 0;
    push(L, is_float ? JT_FLOAT : JT_INT, s + i, k - i, L->line);
    jn_tok *t = &L->out->v[L->out->n - 1];
    if (is_float)
        t->f = strtod(buf, NULL);
    else {
        char *end;
        unsigned long long v = strtoull(buf, &end, 10);
        if (m > 18 || v > (unsigned long long)INT64_MAX)
            jn_fail(L->c, JE_UNSUPPORTED, L->line, "unsupported: integer literal beyond 64 bits");
        t->i = (int64_t)v;
    }
    L->pos = k;
}

static int hexv(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static void put_cp(jn_ctx *c, int line, jn_buf *b, uint32_t cp) {
    char u[4];
    int l;
    if (cp >= 0xD800 && cp <= 0xDFFF)
        jn_fail(c, JE_UNSUPPORTED, line, "unsupported: surrogate escape in a string literal");
    if (cp < 0x80)
        u[0] = (char)cp, l = 1;
    else if (cp < 0x800)
        u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F)), l = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)),
        u[2] = (char)(0x80 | (cp & 0x3F)), l = 3;
    else
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), l = 4;
    jb_put(c, b, u, (size_t)l);
}

/* \x, \u, \U: exactly w hex digits */
static size_t hex_escape(jn_ctx *c, int line, const char *s, size_t n, size_t i, int w, jn_buf *b) {
    uint32_t cp = 0;
    for (int k = 0; k < w; k++) {
        int h = i + (size_t)k < n ? hexv(s[i + (size_t)k]) : -1;
        if (h < 0)
            jn_fail(c, JE_SYNTAX, line, "truncated \\x, \\u or \\U escape in a string literal");
        cp = cp * 16 + (uint32_t)h;
    }
    if (cp > 0x10FFFF) jn_fail(c, JE_SYNTAX, line, "escape beyond U+10FFFF in a string literal");
    put_cp(c, line, b, cp);
    return i + (size_t)w;
}

/* one escape after a backslash at s[i] (Python's unicode-escape codec) */
static size_t escape(jn_ctx *c, int line, const char *s, size_t n, size_t i, jn_buf *b) {
    static const char from[] = "\\'\"abfnrtv", to[] = "\\'\"\a\b\f\n\r\t\v";
    char ch = s[i];
    const char *f = memchr(from, ch, sizeof from - 1);
    if (f) {
        jb_putc(c, b, to[f - from]);
        return i + 1;
    }
    if (ch == '\n') return i + 1; /* line continuation */
    if (ch >= '0' && ch <= '7') {
        uint32_t v = 0;
        size_t k = i;
        while (k < n && k < i + 3 && s[k] >= '0' && s[k] <= '7')
            v = v * 8 + (uint32_t)(s[k++] - '0');
        put_cp(c, line, b, v);
        return k;
    }
    if (ch == 'x') return hex_escape(c, line, s, n, i + 1, 2, b);
    if (ch == 'u') return hex_escape(c, line, s, n, i + 1, 4, b);
    if (ch == 'U') return hex_escape(c, line, s, n, i + 1, 8, b);
    if (ch == 'N')
        jn_fail(c, JE_UNSUPPORTED, line, "unsupported: \\N{...} escape in a string literal");
    if ((unsigned char)ch >= 0x80) { /* backslashreplace made it \xNN / \uNNNN: "\" + that text */
        size_t l;
        uint32_t cp = ju_get(s + i, n - i, &l);
        jb_putc(c, b, '\\');
        if (cp < 0x100)
            jb_printf(c, b, "x%02x", cp);
        else if (cp < 0x10000)
            jb_printf(c, b, "u%04x", cp);
        else
            jb_printf(c, b, "U%08x", cp);
        return i + l;
    }
    jb_putc(c, b, '\\'); /* unknown escapes stay as written */
    jb_putc(c, b, ch);
    return i + 1;
}

static void string(lexer *L, size_t i) {
    const char *s = L->s;
    char q = s[i];
    size_t j = i + 1;
    jn_buf b = {0};
    jb_put(L->c, &b, "", 0);
    while (j < L->n && s[j] != q) {
        if (s[j] == '\\' && j + 1 < L->n)
            j = escape(L->c, L->line, s, L->n, j + 1, &b);
        else
            jb_putc(L->c, &b, s[j++]);
    }
    if (j >= L->n) jn_fail(L->c, JE_SYNTAX, L->line, "unterminated string literal");
    push(L, JT_STRING, b.p ? b.p : "", b.n, L->line);
    L->line += count_nl(s + i, j + 1 - i);
    L->pos = j + 1;
}

static const char *const OPS[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/",
                                  "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
                                  ">",  "<",  "=",  ".",  ":",  "|",  ",", ";"};

static void op(lexer *L, size_t i, char *stack, int *depth) {
    const char *s = L->s;
    for (size_t k = 0; k < sizeof OPS / sizeof OPS[0]; k++) {
        size_t l = strlen(OPS[k]);
        if (i + l > L->n || strncmp(s + i, OPS[k], l)) continue;
        char ch = s[i];
        if (l == 1 && (ch == '(' || ch == '[' || ch == '{')) {
            if (*depth >= JN_MAX_DEPTH) jn_fail(L->c, JE_LIMIT, L->line, "brackets nest too deep");
            stack[(*depth)++] = ch == '(' ? ')' : ch == '[' ? ']' : '}';
        } else if (l == 1 && (ch == ')' || ch == ']' || ch == '}')) {
            if (!*depth || stack[*depth - 1] != ch)
                jn_fail(L->c, JE_SYNTAX, L->line, "unexpected '%c'", ch);
            (*depth)--;
        }
        push(L, JT_OP, s + i, l, L->line);
        L->pos = i + l;
        return;
    }
    size_t l;
    uint32_t cp = ju_get(s + i, L->n - i, &l);
    if (cp >= 0x80)
        jn_fail(L->c, JE_UNSUPPORTED, L->line, "unsupported: non-ASCII character U+%04X in a tag",
                cp);
    jn_fail(L->c, JE_SYNTAX, L->line, "unexpected char '%c' in a tag", s[i]);
}

/* tokens of a {{ }} or {% %} tag starting at L->pos, up to and including its end */
static void lex_tag(lexer *L, int is_var) {
    const char *s = L->s;
    char stack[JN_MAX_DEPTH];
    int depth = 0;
    for (;;) {
        size_t i = L->pos;
        if (i >= L->n) jn_fail(L->c, JE_SYNTAX, L->line, "unexpected end of template inside a tag");
        if (!depth) {
            size_t end = is_var ? (i + 2 < L->n + 0 && s[i] == '-' && !strncmp(s + i + 1, "}}", 2)
                                       ? skip_space(s, L->n, i + 3)
                                   : i + 1 < L->n && !strncmp(s + i, "}}", 2) ? i + 2
                                                                              : 0)
                                : block_end(s, L->n, i, "%}", 1);
            if (end) {
                push(L, is_var ? JT_VAR_END : JT_BLOCK_END, s + i, end - i, L->line);
                L->line += count_nl(s + i, end - i);
                L->line_starting = s[end - 1] == '\n';
                L->pos = end;
                return;
            }
        }
        size_t sp = skip_space(s, L->n, i);
        if (sp > i) {
            L->line += count_nl(s + i, sp - i);
            L->pos = sp;
            continue;
        }
        if (is_digit(s[i]))
            number(L, i);
        else if (is_name0(s[i])) {
            size_t j = i;
            while (j < L->n && (is_name0(s[j]) || is_digit(s[j]))) j++;
            push(L, JT_NAME, s + i, j - i, L->line);
            L->pos = j;
        } else if (s[i] == '\'' || s[i] == '"')
            string(L, i);
        else
            op(L, i, stack, &depth);
    }
}

/* ---- the template ------------------------------------------------------------------------------
 */

/* next "{{", "{%" or "{#" at or after i; n if none */
static size_t next_tag(const char *s, size_t n, size_t i) {
    for (; i + 1 < n; i++) {
        const char *p = memchr(s + i, '{', n - i - 1);
        if (!p) return n;
        i = (size_t)(p - s);
        if (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#') return i;
    }
    return n;
}

static char *normalize_newlines(jn_ctx *c, const char *src, size_t len, size_t *out_len) {
    char *s = jn_alloc(c, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else
            s[n++] = src[i];
    }
    if (n && s[n - 1] == '\n') n--; /* keep_trailing_newline=False */
    s[n] = 0;
    *out_len = n;
    return s;
}

void jn_lex(jn_ctx *c, const char *src, size_t len, jn_toks *out) {
    lexer L = {c, NULL, 0, 0, 1, 1, out};
    L.s = normalize_newlines(c, src, len, &L.n);
    const char *s = L.s;
    while (L.pos < L.n) {
        size_t t = next_tag(s, L.n, L.pos);
        if (t >= L.n) {
            push(&L, JT_DATA, s + L.pos, L.n - L.pos, L.line);
            break;
        }
        char kind = s[t + 1];
        char sign = t + 2 < L.n && (s[t + 2] == '-' || s[t + 2] == '+') ? s[t + 2] : 0;
        size_t after = t + 2 + (sign != 0);
        emit_data(&L, s + L.pos, t - L.pos, sign, kind == '{');
        L.line_starting = 0;
        L.pos = after;
        if (kind == '#')
            lex_comment(&L, after);
        else if (kind == '%' && lex_raw(&L, after))
            continue;
        else {
            push(&L, kind == '{' ? JT_VAR_BEGIN : JT_BLOCK_BEGIN, s + t, after - t, L.line);
            lex_tag(&L, kind == '{');
        }
    }
    push(&L, JT_EOF, "", 0, L.line);
}
