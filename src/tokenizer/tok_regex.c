/* punctum — the tokenizer's regular expressions. tokenizer.json patterns are written for
 * Oniguruma (Ruby syntax, Unicode semantics); we run them with PCRE2 (UTF + UCP, JIT) after
 * rewriting the constructs whose meaning differs:
 *   \s \S   Oniguruma: White_Space           -> \p{White_Space} / \P{White_Space}
 *   \w \W   Oniguruma: L, M, N, Pc           -> explicit property classes
 *   \b \B   word boundary on that \w         -> look-arounds
 *   \h \H   Oniguruma: hexadecimal digit     -> [0-9a-fA-F]
 *   \uHHHH  Ruby escape                      -> \x{HHHH}
 *   (?m)    Ruby: dot matches newline        -> (?s)
 *   ^ $     Ruby: line anchors               -> PCRE2_MULTILINE
 * Constructs PCRE2 cannot express the same way (nested classes, class intersection &&) are
 * refused with a clear error rather than run with another meaning. */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define W_CLASS_BODY "\\p{L}\\p{M}\\p{N}\\p{Pc}"

static void put(tk_buf *b, const char *s) { tk_buf_put(b, s, strlen(s)); }

/* categories (bit per tk_cat_names index) a property name stands for, 0 if none of ours */
static uint32_t category_mask(const char *name, size_t n) {
    char k[32];
    size_t m = 0;
    for (size_t i = 0; i < n && m + 1 < sizeof k; i++) {
        char c = name[i];
        if (c == ' ' || c == '_' || c == '-') continue;
        k[m++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    k[m] = 0;
    static const struct {
        const char *name;
        const char *cats;
    } groups[] = {{"l", "Lu Ll Lt Lm Lo"}, {"letter", "Lu Ll Lt Lm Lo"}, {"l&", "Lu Ll Lt"},
                  {"lc", "Lu Ll Lt"}, {"casedletter", "Lu Ll Lt"}, {"m", "Mn Mc Me"},
                  {"mark", "Mn Mc Me"}, {"n", "Nd Nl No"}, {"number", "Nd Nl No"},
                  {"p", "Pc Pd Ps Pe Pi Pf Po"}, {"punctuation", "Pc Pd Ps Pe Pi Pf Po"},
                  {"s", "Sm Sc Sk So"}, {"symbol", "Sm Sc Sk So"}, {"z", "Zs Zl Zp"},
                  {"separator", "Zs Zl Zp"}};
    const char *cats = NULL;
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (!strcmp(k, groups[i].name)) cats = groups[i].cats;
    uint32_t mask = 0;
    for (int c = 0; c < TK_NCAT; c++) {
        char lc[3] = {(char)(tk_cat_names[c][0] + 32), tk_cat_names[c][1], 0};
        if (lc[0] == 'c') continue; /* C* would need removals, not additions */
        if (cats ? strstr(cats, tk_cat_names[c]) != NULL : !strcmp(k, lc)) mask |= 1u << c;
    }
    return mask;
}

/* \x{lo}-\x{hi}... of the code points assigned after Unicode 14.0 in those categories */
static void put_new_ranges(tk_buf *o, uint32_t mask) {
    for (size_t i = 0; i < tk_new_cat_n; i++) {
        if (!(mask & (1u << tk_new_cat[i].cat))) continue;
        char t[48];
        if (tk_new_cat[i].lo == tk_new_cat[i].hi) snprintf(t, sizeof t, "\\x{%X}", (unsigned)tk_new_cat[i].lo);
        else snprintf(t, sizeof t, "\\x{%X}-\\x{%X}", (unsigned)tk_new_cat[i].lo, (unsigned)tk_new_cat[i].hi);
        put(o, t);
    }
}

/* Oniguruma's \w: letters, marks, numbers, connector punctuation (Unicode 16) */
static void put_word_body(tk_buf *o) {
    put(o, W_CLASS_BODY);
    uint32_t mask = 0;
    for (int c = 0; c < TK_NCAT; c++) {
        char k = tk_cat_names[c][0];
        if (k == 'L' || k == 'M' || k == 'N' || !strcmp(tk_cat_names[c], "Pc")) mask |= 1u << c;
    }
    put_new_ranges(o, mask);
}

/* \p{X} / \P{X} / \pX at p[i] (after the backslash and p/P): widened to Unicode 16. Returns
 * the number of pattern bytes consumed after "\p", or 0 to copy it unchanged. */
static size_t property(const char *p, size_t n, size_t i, int upper, int in_class, tk_buf *o) {
    const char *name;
    size_t nl, used;
    if (i < n && p[i] == '{') {
        const char *end = memchr(p + i, '}', n - i);
        if (!end) return 0;
        name = p + i + 1;
        nl = (size_t)(end - name);
        used = nl + 2;
    } else if (i < n) {
        name = p + i;
        nl = 1;
        used = 1;
    } else {
        return 0;
    }
    int neg = upper;
    const char *bare = name;
    size_t bl = nl;
    if (bl && bare[0] == '^') {
        neg = !neg;
        bare++;
        bl--;
    }
    uint32_t mask = category_mask(bare, bl);
    if (!mask || (neg && in_class)) return 0;
    if (!in_class) put(o, neg ? "[^" : "[");
    put(o, "\\p{");
    tk_buf_put(o, bare, bl);
    put(o, "}");
    put_new_ranges(o, mask);
    if (!in_class) put(o, "]");
    return used;
}

static int translate(const char *p, size_t n, tk_buf *o, pt_error *e) {
    int in_class = 0;
    size_t class_start = 0;
    for (size_t i = 0; i < n;) {
        char c = p[i];
        if (c == '\\') {
            if (i + 1 >= n) return pt_fail(e, "pattern ends with a backslash");
            char d = p[i + 1];
            i += 2;
            switch (d) {
            case 's': put(o, "\\p{White_Space}"); break;
            case 'S': put(o, "\\P{White_Space}"); break;
            case 'w':
                if (!in_class) put(o, "[");
                put_word_body(o);
                if (!in_class) put(o, "]");
                break;
            case 'W':
                if (in_class) return pt_fail(e, "\\W inside a character class is not supported");
                put(o, "[^");
                put_word_body(o);
                put(o, "]");
                break;
            case 'd':
            case 'D':
                if (in_class && d == 'D') {
                    put(o, "\\D");
                    break;
                }
                if (!in_class) put(o, d == 'D' ? "[^" : "[");
                put(o, "\\p{Nd}");
                put_new_ranges(o, 1u << 8);
                if (!in_class) put(o, "]");
                break;
            case 'h': put(o, in_class ? "0-9a-fA-F" : "[0-9a-fA-F]"); break;
            case 'H':
                if (in_class) return pt_fail(e, "\\H inside a character class is not supported");
                put(o, "[^0-9a-fA-F]");
                break;
            case 'b':
            case 'B':
                if (in_class) {
                    if (d == 'B') return pt_fail(e, "\\B inside a character class is not supported");
                    put(o, "\\x{08}");
                    break;
                }
                /* (?<=W)(?!W)|(?<!W)(?=W) for \b; (?<=W)(?=W)|(?<!W)(?!W) for \B */
                put(o, "(?:(?<=[");
                put_word_body(o);
                put(o, d == 'b' ? "])(?![" : "])(?=[");
                put_word_body(o);
                put(o, "])|(?<![");
                put_word_body(o);
                put(o, d == 'b' ? "])(?=[" : "])(?![");
                put_word_body(o);
                put(o, "]))");
                break;
            case 'p':
            case 'P': {
                size_t used = property(p, n, i, d == 'P', in_class, o);
                if (used) {
                    i += used;
                } else {
                    tk_buf_putc(o, '\\');
                    tk_buf_putc(o, d);
                }
                break;
            }
            case 'u': {
                size_t k = 0;
                while (k < 4 && i + k < n &&
                       ((p[i + k] >= '0' && p[i + k] <= '9') || (p[i + k] >= 'a' && p[i + k] <= 'f') ||
                        (p[i + k] >= 'A' && p[i + k] <= 'F')))
                    k++;
                if (k != 4) return pt_fail(e, "malformed \\u escape");
                put(o, "\\x{");
                tk_buf_put(o, p + i, 4);
                put(o, "}");
                i += 4;
                break;
            }
            default: {
                tk_buf_putc(o, '\\');
                /* copy the whole escaped char (may be multi-byte) */
                int l = tk_utf8_len((unsigned char)d);
                tk_buf_put(o, p + i - 1, (size_t)l);
                i += (size_t)l - 1;
                break;
            }
            }
            continue;
        }
        if (in_class) {
            if (c == ']' && i > class_start) {
                in_class = 0;
                tk_buf_putc(o, c);
                i++;
                continue;
            }
            if (c == '[') {
                if (i + 1 < n && p[i + 1] == ':') { /* POSIX bracket [:name:] */
                    const char *end = NULL;
                    for (size_t k = i + 2; k + 1 < n; k++)
                        if (p[k] == ':' && p[k + 1] == ']') {
                            end = p + k + 2;
                            break;
                        }
                    if (!end) return pt_fail(e, "malformed POSIX bracket expression");
                    tk_buf_put(o, p + i, (size_t)(end - (p + i)));
                    i = (size_t)(end - p);
                    continue;
                }
                return pt_fail(e, "nested character classes are not supported");
            }
            if (c == '&' && i + 1 < n && p[i + 1] == '&')
                return pt_fail(e, "character class intersection (&&) is not supported");
            tk_buf_putc(o, c);
            i++;
            continue;
        }
        if (c == '[') {
            in_class = 1;
            tk_buf_putc(o, c);
            i++;
            if (i < n && p[i] == '^') {
                tk_buf_putc(o, '^');
                i++;
            }
            class_start = i; /* a ']' right here is a literal */
            if (i < n && p[i] == ']') {
                tk_buf_put(o, "\\]", 2);
                i++;
            }
            continue;
        }
        if (c == '(' && i + 2 < n && p[i + 1] == '?') {
            /* option group (?imx-imx) or (?imx-imx:...) : Ruby's m is PCRE2's s */
            size_t k = i + 2;
            while (k < n && (p[k] == 'i' || p[k] == 'm' || p[k] == 'x' || p[k] == '-')) k++;
            if (k > i + 2 && k < n && (p[k] == ')' || p[k] == ':')) {
                tk_buf_put(o, "(?", 2);
                for (size_t q = i + 2; q < k; q++) tk_buf_putc(o, p[q] == 'm' ? 's' : p[q]);
                i = k;
                continue;
            }
        }
        tk_buf_putc(o, c);
        i++;
    }
    if (in_class) return pt_fail(e, "unterminated character class");
    return 0;
}

int tk_regex_compile(tk_regex *re, const char *pat, size_t len, int literal, pt_error *e) {
    memset(re, 0, sizeof *re);
    tk_buf o = {0};
    if (literal) {
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)pat[i];
            if (c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
                if (c < 0x20 || c == 0x7f) {
                    char t[16];
                    snprintf(t, sizeof t, "\\x{%02x}", c);
                    tk_buf_put(&o, t, strlen(t));
                } else {
                    tk_buf_putc(&o, '\\');
                    tk_buf_putc(&o, (char)c);
                }
            } else {
                tk_buf_putc(&o, (char)c);
            }
        }
    } else if (translate(pat, len, &o, e) != 0) {
        free(o.p);
        return -1;
    }
    if (!o.p) tk_buf_put(&o, "", 0);
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) {
        free(o.p);
        return pt_fail(e, "out of memory compiling a regex");
    }
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int errcode;
    PCRE2_SIZE erroff;
    re->code = pcre2_compile((PCRE2_SPTR)o.p, o.n,
                             PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_NEVER_BACKSLASH_C, &errcode,
                             &erroff, cc);
    pcre2_compile_context_free(cc);
    if (!re->code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(errcode, msg, sizeof msg);
        free(o.p);
        return pt_fail(e, "invalid regex (%s at offset %zu)", (const char *)msg, (size_t)erroff);
    }
    free(o.p);
    /* JIT-compiled matching is several times faster; PUNCTUM_PCRE2_JIT=0 turns it off (the
     * interpreter gives the same matches), e.g. under valgrind, which cannot see into JIT code */
    const char *jit = getenv("PUNCTUM_PCRE2_JIT");
    re->jit = !(jit && !strcmp(jit, "0")) && pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

void tk_regex_free(tk_regex *re) {
    if (re->code) pcre2_code_free(re->code);
    re->code = NULL;
}

void tk_piece_push(tk_piecevec *v, uint32_t s, uint32_t e, int m) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 32;
        v->v = pt_xrealloc(v->v, v->cap * sizeof *v->v);
    }
    v->v[v->n].s = s;
    v->v[v->n].e = e;
    v->v[v->n].is_match = m;
    v->n++;
}

/* One search from `start`; returns 1 with [*ms, *me) on a match, 0 for none, -1 on error. */
static int search(const tk_regex *re, const char *s, size_t n, size_t start, pcre2_match_data *md,
                  size_t *ms, size_t *me, pt_error *e) {
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return pt_fail(e, "regex match failed: %s", (const char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    *ms = ov[0];
    *me = ov[1];
    if (*me < *ms) *me = *ms; /* \K could do this; keep spans sane */
    return 1;
}

int tk_regex_find_matches(const tk_regex *re, const char *s, size_t n, pcre2_match_data *md,
                          tk_piecevec *out, pt_error *e) {
    out->n = 0;
    if (n == 0) {
        tk_piece_push(out, 0, 0, 0);
        return 0;
    }
    size_t prev = 0, last_end = 0;
    int have_last_match = 0;
    size_t last_match_end = 0;
    while (last_end <= n) {
        size_t ms = 0, me = 0;
        int r = search(re, s, n, last_end, md, &ms, &me, e);
        if (r < 0) return -1;
        if (r == 0) break;
        if (me == ms && have_last_match && last_end == last_match_end) {
            /* no empty match right after the previous match: skip one char and retry */
            if (last_end >= n) break;
            last_end += (size_t)tk_utf8_len((unsigned char)s[last_end]);
            continue;
        }
        last_end = me;
        have_last_match = 1;
        last_match_end = me;
        if (prev != ms) tk_piece_push(out, (uint32_t)prev, (uint32_t)ms, 0);
        tk_piece_push(out, (uint32_t)ms, (uint32_t)me, 1);
        prev = me;
    }
    if (prev != n) tk_piece_push(out, (uint32_t)prev, (uint32_t)n, 0);
    return 0;
}
