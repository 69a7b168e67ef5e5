/* punctum — UTF-8 and Unicode helpers for the tokenizer: validation, lossy decoding, character
 * predicates with Rust's semantics, and normalization forms that report, per output character,
 * how it lines up with the input (the convention tokenizers' NormalizedString uses). */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

int tk_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    uint32_t v;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        v = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
        v = (v << 6) | (b & 0x3F);
    }
    *cp = v;
    return len;
}

int tk_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

int tk_utf8_valid(const char *s, size_t n, size_t *bad) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        int l = tk_utf8_decode(u + i, n - i, &cp);
        if (!l) {
            if (bad) *bad = i;
            return 0;
        }
        i += (size_t)l;
    }
    return 1;
}

void tk_buf_put(tk_buf *b, const void *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 64;
        while (c < b->n + n + 1) c *= 2;
        b->p = pt_xrealloc(b->p, c);
        b->cap = c;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void tk_buf_putc(tk_buf *b, char c) { tk_buf_put(b, &c, 1); }

void tk_buf_put_cp(tk_buf *b, uint32_t cp) {
    char t[4];
    tk_buf_put(b, t, (size_t)tk_utf8_encode(cp, t));
}

/* Length of the maximal prefix of a well-formed sequence at s (at least 1): the number of bytes
 * one U+FFFD replaces (Unicode "substitution of maximal subparts", as Rust does). */
static size_t maximal_subpart(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 1;
    size_t k = 1;
    for (int i = 1; i < len && k < n; i++) {
        unsigned b = s[k];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
        k++;
    }
    return k;
}

void tk_buf_put_lossy(tk_buf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        uint32_t cp;
        int l = u[i] < 0x80 ? 1 : tk_utf8_decode(u + i, n - i, &cp);
        if (l) {
            i += (size_t)l;
            continue;
        }
        tk_buf_put(b, s + run, i - run);
        tk_buf_put(b, "\xEF\xBF\xBD", 3);
        i += maximal_subpart(u + i, n - i);
        run = i;
    }
    tk_buf_put(b, s + run, n - run);
}

int tk_is_white_space(uint32_t c) {
    if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
    if (c < 0x85) return 0;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static const tk_cprange *range_find(const tk_cprange *v, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < v[mid].lo) hi = mid;
        else if (cp > v[mid].hi) lo = mid + 1;
        else return &v[mid];
    }
    return NULL;
}

int tk_new_category(uint32_t cp) {
    const tk_cprange *r = range_find(tk_new_cat, tk_new_cat_n, cp);
    return r ? r->cat : -1;
}

int tk_is_numeric(uint32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    if (k == UTF8PROC_CATEGORY_CN) return range_find(tk_new_numeric, tk_new_numeric_n, c) != NULL;
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

int tk_is_rust_word(uint32_t c) {
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D) return 1; /* Join_Control */
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    if (k == UTF8PROC_CATEGORY_CN) {
        int n = tk_new_category(c); /* Lu Ll Lt Lm Lo Mn Mc Me Nd Nl ... Pc */
        return (n >= 0 && n <= 9) || n == 11;
    }
    switch (k) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        break;
    }
    /* Other_Alphabetic symbols (circled / squared Latin letters) */
    return (c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) ||
           (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189);
}

void tk_chg_push(tk_chgvec *v, uint32_t cp, int32_t change) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->v = pt_xrealloc(v->v, v->cap * sizeof *v->v);
    }
    v->v[v->n].cp = cp;
    v->v[v->n].change = change;
    v->n++;
}

static int ccc(uint32_t c) {
    if (c < 0x300) return 0;
    return utf8proc_get_property((utf8proc_int32_t)c)->combining_class;
}

/* Canonical composition of the pair (a, b), or 0. */
static uint32_t compose_pair(uint32_t a, uint32_t b) {
    /* Hangul: L + V -> LV, LV + T -> LVT */
    if (a >= 0x1100 && a < 0x1100 + 19 && b >= 0x1161 && b < 0x1161 + 21)
        return 0xAC00 + ((a - 0x1100) * 21 + (b - 0x1161)) * 28;
    if (a >= 0xAC00 && a < 0xAC00 + 11172 && (a - 0xAC00) % 28 == 0 && b > 0x11A7 && b < 0x11A7 + 28)
        return a + (b - 0x11A7);
    utf8proc_int32_t buf[2] = {(utf8proc_int32_t)a, (utf8proc_int32_t)b};
    utf8proc_ssize_t n = utf8proc_normalize_utf32(buf, 2, UTF8PROC_COMPOSE | UTF8PROC_STABLE);
    if (n == 1) return (uint32_t)buf[0];
    return 0;
}

typedef struct {
    uint8_t cls;
    uint32_t cp;
    int32_t change;
} dec_item;

void tk_unicode_normalize(int form, const char *s, size_t n, tk_chgvec *out) {
    out->n = 0;
    int compat = form == TK_NFKC || form == TK_NFKD;
    int comp = form == TK_NFC || form == TK_NFKC;
    /* 1. decompose every char; the first char of each decomposition replaces the input char
     *    (change 0), the others are inserted (change 1). */
    dec_item *d = pt_xmalloc((n * 4 + 16) * sizeof *d);
    size_t nd = 0, capd = n * 4 + 16;
    for (size_t i = 0; i < n;) {
        int l;
        uint32_t c = tk_utf8_get(s + i, &l);
        i += (size_t)l;
        utf8proc_int32_t tmp[64];
        utf8proc_ssize_t k;
        if (c < 0xA0) {
            tmp[0] = (utf8proc_int32_t)c;
            k = 1;
        } else {
            int bc = 0;
            k = utf8proc_decompose_char((utf8proc_int32_t)c, tmp, 64,
                                        UTF8PROC_DECOMPOSE | (compat ? UTF8PROC_COMPAT : 0), &bc);
            if (k < 1 || k > 64) {
                tmp[0] = (utf8proc_int32_t)c;
                k = 1;
            }
        }
        if (nd + (size_t)k > capd) {
            capd = (nd + (size_t)k) * 2;
            d = pt_xrealloc(d, capd * sizeof *d);
        }
        for (utf8proc_ssize_t j = 0; j < k; j++) {
            d[nd].cp = (uint32_t)tmp[j];
            d[nd].cls = (uint8_t)ccc((uint32_t)tmp[j]);
            d[nd].change = j == 0 ? 0 : 1;
            nd++;
        }
    }
    /* 2. canonical ordering: stable sort of every run of non-starters by combining class */
    for (size_t i = 0; i < nd;) {
        if (d[i].cls == 0) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < nd && d[j].cls != 0) j++;
        for (size_t a = i + 1; a < j; a++) { /* insertion sort: stable */
            dec_item x = d[a];
            size_t b = a;
            while (b > i && d[b - 1].cls > x.cls) {
                d[b] = d[b - 1];
                b--;
            }
            d[b] = x;
        }
        i = j;
    }
    if (!comp) {
        for (size_t i = 0; i < nd; i++) tk_chg_push(out, d[i].cp, d[i].change);
        free(d);
        return;
    }
    /* 3. recomposition, following the crate's state machine: a starter ("composee") absorbs
     *    the following chars it composes with; blocked chars wait in a buffer. */
    int have = 0, have_last = 0;
    uint32_t kcp = 0;
    int32_t kch = 0;
    int last_ccc = 0;
    dec_item *buf = pt_xmalloc((nd + 1) * sizeof *buf);
    size_t nb = 0;
    for (size_t i = 0; i < nd; i++) {
        uint32_t ch = d[i].cp;
        int32_t change = d[i].change;
        int cls = d[i].cls;
        if (!have) {
            if (cls != 0) {
                tk_chg_push(out, ch, change);
                continue;
            }
            have = 1;
            kcp = ch;
            kch = change;
            continue;
        }
        if (!have_last) {
            uint32_t r = compose_pair(kcp, ch);
            if (r) {
                kcp = r;
                kch = kch + change - 1;
                continue;
            }
            if (cls == 0) {
                tk_chg_push(out, kcp, kch);
                kcp = ch;
                kch = change;
                continue;
            }
            buf[nb++] = d[i];
            have_last = 1;
            last_ccc = cls;
            continue;
        }
        if (last_ccc >= cls) {
            if (cls == 0) {
                tk_chg_push(out, kcp, kch);
                for (size_t b = 0; b < nb; b++) tk_chg_push(out, buf[b].cp, buf[b].change);
                nb = 0;
                kcp = ch;
                kch = change;
                have_last = 0;
                continue;
            }
            buf[nb++] = d[i];
            last_ccc = cls;
            continue;
        }
        uint32_t r = compose_pair(kcp, ch);
        if (r) {
            kcp = r;
            kch = kch + change - 1;
            continue;
        }
        buf[nb++] = d[i];
        last_ccc = cls;
    }
    if (have) tk_chg_push(out, kcp, kch);
    for (size_t b = 0; b < nb; b++) tk_chg_push(out, buf[b].cp, buf[b].change);
    free(buf);
    free(d);
}

void tk_unicode_lowercase(const char *s, size_t n, tk_chgvec *out) {
    out->n = 0;
    for (size_t i = 0; i < n;) {
        int l;
        uint32_t c = tk_utf8_get(s + i, &l);
        i += (size_t)l;
        if (c == 0x130) { /* the one unconditional multi-char lowercase mapping */
            tk_chg_push(out, 'i', 0);
            tk_chg_push(out, 0x307, 1);
            continue;
        }
        uint32_t lc = c < 0x80 ? ((c >= 'A' && c <= 'Z') ? c + 32 : c)
                               : (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
        tk_chg_push(out, lc, 0);
    }
}
