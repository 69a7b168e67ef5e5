/* punctum — Jinja interpreter: arena and errors, values with Python semantics (truth, equality,
 * ordering), str() / repr() / json.dumps() of values, the output buffer. */
#include "chat/jinja.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- arena and errors ------------------------------------------------------------------------ */

void jn_init(jn_ctx *c, const char *name, pt_error *e) {
    memset(c, 0, sizeof *c);
    c->name = name;
    c->e = e;
    pt_arena_init(&c->arena, (size_t)1 << 14, (size_t)16 << 20);
}

void jn_release(jn_ctx *c) {
    pt_arena_free(&c->arena);
}

/* Zeroed; a template past JN_MAX_ARENA bytes, or out of memory, fails the rendering. */
void *jn_alloc(jn_ctx *c, size_t n) {
    if (n > JN_MAX_ARENA || c->arena.total > JN_MAX_ARENA - n)
        jn_fail(c, JE_LIMIT, 0, "the template needs more than %zu MiB of memory",
                JN_MAX_ARENA >> 20);
    void *p = pt_arena_alloc(&c->arena, n);
    if (!p) jn_fail(c, JE_LIMIT, 0, "out of memory (%zu bytes)", n);
    memset(p, 0, n);
    return p;
}

char *jn_strdup(jn_ctx *c, const char *s, size_t n) {
    char *d = jn_alloc(c, n + 1);
    if (n) memcpy(d, s, n);
    d[n] = 0;
    return d;
}

void jn_fail(jn_ctx *c, jn_errkind kind, int line, const char *fmt, ...) {
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    for (char *p = what; *p; p++) /* one line */
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = ' ';
    if (line > 0)
        pt_fail(c->e, "%s:%d: %s", c->name, line, what);
    else
        pt_fail(c->e, "%s: %s", c->name, what);
    c->kind = kind;
    longjmp(c->jmp, 1);
}

void jn_step(jn_ctx *c, int line) {
    if (++c->steps > JN_MAX_STEPS)
        jn_fail(c, JE_LIMIT, line, "the template runs more than %d steps", JN_MAX_STEPS);
}

void jn_enter(jn_ctx *c, int line) {
    if (++c->depth > JN_MAX_DEPTH)
        jn_fail(c, JE_LIMIT, line, "the template nests deeper than %d levels", JN_MAX_DEPTH);
}

/* ---- constructors ------------------------------------------------------------------------------
 */

static jv mk(uint8_t t) {
    jv v;
    memset(&v, 0, sizeof v);
    v.t = t;
    v.m0 = v.m1 = -1;
    return v;
}
jv jv_undef(void) {
    return mk(JV_UNDEF);
}
jv jv_none(void) {
    return mk(JV_NONE);
}
jv jv_bool(int b) {
    jv v = mk(JV_BOOL);
    v.u.i = b != 0;
    return v;
}
jv jv_int(int64_t i) {
    jv v = mk(JV_INT);
    v.u.i = i;
    return v;
}
jv jv_float(double f) {
    jv v = mk(JV_FLOAT);
    v.u.f = f;
    return v;
}
jv jv_str(const char *p, size_t n) {
    jv v = mk(JV_STR);
    v.u.s.p = p ? p : "";
    v.u.s.n = (uint32_t)n;
    return v;
}
jv jv_cstr(const char *p) {
    return jv_str(p, strlen(p));
}

jlist *jl_new(jn_ctx *c, uint32_t cap) {
    jlist *l = jn_alloc(c, sizeof *l);
    l->cap = cap ? cap : 4;
    l->v = jn_alloc(c, l->cap * sizeof *l->v);
    return l;
}

void jl_push(jn_ctx *c, jlist *l, jv v) {
    if (l->n == l->cap) {
        jv *nv = jn_alloc(c, (size_t)l->cap * 2 * sizeof *nv);
        memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap *= 2;
    }
    l->v[l->n++] = v;
}

jv jv_list(jlist *l, int tuple) {
    jv v = mk(JV_LIST);
    v.u.l = l;
    v.tuple = (uint8_t)(tuple != 0);
    return v;
}

jdict *jd_new(jn_ctx *c) {
    jdict *d = jn_alloc(c, sizeof *d);
    d->cap = 4;
    d->k = jn_alloc(c, d->cap * sizeof *d->k);
    d->v = jn_alloc(c, d->cap * sizeof *d->v);
    return d;
}

void jd_set(jn_ctx *c, jdict *d, jv k, jv v) {
    for (uint32_t i = 0; i < d->n; i++)
        if (jv_eq(d->k[i], k)) {
            d->v[i] = v;
            return;
        }
    if (d->n == d->cap) {
        jv *nk = jn_alloc(c, (size_t)d->cap * 2 * sizeof *nk);
        jv *nv = jn_alloc(c, (size_t)d->cap * 2 * sizeof *nv);
        memcpy(nk, d->k, d->n * sizeof *nk);
        memcpy(nv, d->v, d->n * sizeof *nv);
        d->k = nk;
        d->v = nv;
        d->cap *= 2;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

int jd_get(const jdict *d, jv k, jv *out) {
    for (uint32_t i = 0; i < d->n; i++)
        if (jv_eq(d->k[i], k)) {
            *out = d->v[i];
            return 1;
        }
    return 0;
}

jv jv_dict(jdict *d, int ns) {
    jv v = mk(ns ? JV_NS : JV_DICT);
    v.u.d = d;
    return v;
}

/* ---- Python semantics -------------------------------------------------------------------------
 */

int jv_truthy(jv v) {
    switch (v.t) {
    case JV_UNDEF:
    case JV_NONE:
        return 0;
    case JV_BOOL:
    case JV_INT:
        return v.u.i != 0;
    case JV_FLOAT:
        return v.u.f != 0.0;
    case JV_STR:
        return v.u.s.n != 0;
    case JV_LIST:
        return v.u.l->n != 0;
    case JV_DICT:
        return v.u.d->n != 0;
    default:
        return 1;
    }
}

int jv_is_num(jv v) {
    return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT;
}
double jv_num(jv v) {
    return v.t == JV_FLOAT ? v.u.f : (double)v.u.i;
}

static int num_eq(jv a, jv b) {
    if (a.t != JV_FLOAT && b.t != JV_FLOAT) return a.u.i == b.u.i;
    return jv_num(a) == jv_num(b);
}

int jv_eq(jv a, jv b) {
    if (jv_is_num(a) && jv_is_num(b)) return num_eq(a, b);
    if (a.t != b.t) return 0;
    switch (a.t) {
    case JV_UNDEF:
    case JV_NONE:
        return 1;
    case JV_STR:
        return a.u.s.n == b.u.s.n && !memcmp(a.u.s.p, b.u.s.p, a.u.s.n);
    case JV_LIST:
        if (a.tuple != b.tuple || a.u.l->n != b.u.l->n) return 0;
        for (uint32_t i = 0; i < a.u.l->n; i++)
            if (!jv_eq(a.u.l->v[i], b.u.l->v[i])) return 0;
        return 1;
    case JV_DICT:
        if (a.u.d->n != b.u.d->n) return 0;
        for (uint32_t i = 0; i < a.u.d->n; i++) {
            jv x;
            if (!jd_get(b.u.d, a.u.d->k[i], &x) || !jv_eq(a.u.d->v[i], x)) return 0;
        }
        return 1;
    case JV_NS:
        return a.u.d == b.u.d;
    case JV_FUNC:
        return a.u.i == b.u.i;
    case JV_MACRO:
        return a.u.mac == b.u.mac;
    case JV_LOOP:
        return a.u.loop == b.u.loop;
    }
    return 0;
}

const char *jv_type_name(jv v) {
    static const char *n[] = {"Undefined", "NoneType", "bool",  "int",
                              "float",     "str",      "list",  "dict",
                              "Namespace", "function", "Macro", "LoopContext"};
    if (v.t == JV_LIST && v.tuple) return "tuple";
    return n[v.t];
}

int jv_cmp(jn_ctx *c, int line, jv a, jv b) {
    if (jv_is_num(a) && jv_is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT) return (a.u.i > b.u.i) - (a.u.i < b.u.i);
        double x = jv_num(a), y = jv_num(b);
        return (x > y) - (x < y);
    }
    if (a.t == JV_STR && b.t == JV_STR) { /* code point order is UTF-8 byte order */
        size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        int r = n ? memcmp(a.u.s.p, b.u.s.p, n) : 0;
        if (r) return r < 0 ? -1 : 1;
        return (a.u.s.n > b.u.s.n) - (a.u.s.n < b.u.s.n);
    }
    if (a.t == JV_LIST && b.t == JV_LIST && a.tuple == b.tuple) {
        for (uint32_t i = 0; i < a.u.l->n && i < b.u.l->n; i++)
            if (!jv_eq(a.u.l->v[i], b.u.l->v[i])) return jv_cmp(c, line, a.u.l->v[i], b.u.l->v[i]);
        return (a.u.l->n > b.u.l->n) - (a.u.l->n < b.u.l->n);
    }
    jn_fail(c, JE_RUNTIME, line, "'<' not supported between instances of '%s' and '%s'",
            jv_type_name(a), jv_type_name(b));
}

/* ---- UTF-8 --------------------------------------------------------------------------------------
 */

uint32_t ju_get(const char *s, size_t n, size_t *len) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    if (l <= 0) { /* the interpreter only sees valid UTF-8; be safe anyway */
        *len = 1;
        return 0xFFFD;
    }
    *len = (size_t)l;
    return (uint32_t)cp;
}

size_t ju_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

size_t ju_offset(const char *s, size_t n, size_t k) {
    size_t i = 0;
    while (k > 0 && i < n) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
        k--;
    }
    return i;
}

int ju_is_space(uint32_t c) {
    if ((c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20)) return 1;
    if (c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A)) return 1;
    return c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ---- output buffer ------------------------------------------------------------------------------
 */

void jb_put(jn_ctx *c, jn_buf *b, const char *s, size_t n) {
    if (n > JN_MAX_OUTPUT || b->n > JN_MAX_OUTPUT - n)
        jn_fail(c, JE_LIMIT, 0, "the output is longer than %zu MiB", JN_MAX_OUTPUT >> 20);
    if (b->n + n + 1 > b->cap) { /* also gives an empty buffer its (NUL-terminated) storage */
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = jn_alloc(c, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void jb_putc(jn_ctx *c, jn_buf *b, char ch) {
    jb_put(c, b, &ch, 1);
}

void jb_printf(jn_ctx *c, jn_buf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    jb_put(c, b, tmp, n < 0 ? 0 : (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void add_mark(jn_buf *b, int32_t s, int32_t e) {
    if (e <= s) return;
    if (b->n_marks && b->marks[2 * b->n_marks - 1] == s) { /* adjacent: extend */
        b->marks[2 * b->n_marks - 1] = e;
        return;
    }
    if (b->n_marks == JN_MAX_MARKS) return;
    b->marks[2 * b->n_marks] = s;
    b->marks[2 * b->n_marks + 1] = e;
    b->n_marks++;
}

void jb_put_str(jn_ctx *c, jn_buf *b, jv s) {
    size_t at = b->n;
    jb_put(c, b, s.u.s.p, s.u.s.n);
    if (s.m0 >= 0) add_mark(b, (int32_t)at + s.m0, (int32_t)at + s.m1);
}

jv jb_value(jn_buf *b) {
    jv v = jv_str(b->p ? b->p : "", b->n);
    if (b->n_marks) {
        v.m0 = b->marks[0];
        v.m1 = b->marks[1];
    }
    return v;
}

/* ---- str(), repr() ------------------------------------------------------------------------------
 */

/* Python float repr: the shortest digits that round-trip, fixed notation for 1e-4 <= |x| < 1e16 */
static void float_repr(jn_ctx *c, jn_buf *b, double x, int json) {
    if (isnan(x)) return jb_put(c, b, json ? "NaN" : "nan", json ? 3 : 3);
    if (isinf(x)) {
        if (x < 0) jb_putc(c, b, '-');
        return jb_put(c, b, json ? "Infinity" : "inf", json ? 8 : 3);
    }
    char tmp[40];
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, x);
        if (strtod(tmp, NULL) == x) break;
    }
    /* tmp: [-]d[.ddd]e[+-]XX */
    char digits[24];
    int nd = 0, neg = tmp[0] == '-';
    const char *p = tmp + neg;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    if (neg) jb_putc(c, b, '-');
    if (exp >= -5 + 1 && exp < 16) {
        if (exp < 0) {
            jb_put(c, b, "0.", 2);
            for (int i = 0; i < -exp - 1; i++) jb_putc(c, b, '0');
            jb_put(c, b, digits, (size_t)nd);
        } else {
            for (int i = 0; i <= exp; i++) jb_putc(c, b, i < nd ? digits[i] : '0');
            jb_putc(c, b, '.');
            if (nd > exp + 1)
                jb_put(c, b, digits + exp + 1, (size_t)(nd - exp - 1));
            else
                jb_putc(c, b, '0');
        }
        return;
    }
    jb_putc(c, b, digits[0]);
    if (nd > 1) {
        jb_putc(c, b, '.');
        jb_put(c, b, digits + 1, (size_t)(nd - 1));
    }
    jb_printf(c, b, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
}

static int printable(uint32_t cp) {
    if (cp == ' ') return 1;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
    switch (k) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS:
        return 0;
    default:
        return 1;
    }
}

static void str_repr(jn_ctx *c, jn_buf *b, const char *s, size_t n) {
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jb_putc(c, b, q);
    for (size_t i = 0; i < n;) {
        size_t l;
        uint32_t cp = ju_get(s + i, n - i, &l);
        if (cp == '\\' || cp == (uint32_t)q) {
            jb_putc(c, b, '\\');
            jb_putc(c, b, (char)cp);
        } else if (cp == '\n')
            jb_put(c, b, "\\n", 2);
        else if (cp == '\r')
            jb_put(c, b, "\\r", 2);
        else if (cp == '\t')
            jb_put(c, b, "\\t", 2);
        else if (!printable(cp)) {
            if (cp < 0x100)
                jb_printf(c, b, "\\x%02x", cp);
            else if (cp < 0x10000)
                jb_printf(c, b, "\\u%04x", cp);
            else
                jb_printf(c, b, "\\U%08x", cp);
        } else
            jb_put(c, b, s + i, l);
        i += l;
    }
    jb_putc(c, b, q);
}

static void repr(jn_ctx *c, int line, jn_buf *b, jv v);

static void seq_repr(jn_ctx *c, int line, jn_buf *b, jv v) {
    const jlist *l = v.u.l;
    jb_putc(c, b, v.tuple ? '(' : '[');
    for (uint32_t i = 0; i < l->n; i++) {
        if (i) jb_put(c, b, ", ", 2);
        repr(c, line, b, l->v[i]);
    }
    if (v.tuple && l->n == 1) jb_putc(c, b, ',');
    jb_putc(c, b, v.tuple ? ')' : ']');
}

static void repr(jn_ctx *c, int line, jn_buf *b, jv v) {
    jn_enter(c, line);
    switch (v.t) {
    case JV_STR:
        str_repr(c, b, v.u.s.p, v.u.s.n);
        break;
    case JV_LIST:
        seq_repr(c, line, b, v);
        break;
    case JV_DICT:
        jb_putc(c, b, '{');
        for (uint32_t i = 0; i < v.u.d->n; i++) {
            if (i) jb_put(c, b, ", ", 2);
            repr(c, line, b, v.u.d->k[i]);
            jb_put(c, b, ": ", 2);
            repr(c, line, b, v.u.d->v[i]);
        }
        jb_putc(c, b, '}');
        break;
    case JV_UNDEF:
        break; /* str(Undefined) */
    default:
        jv_to_str(c, line, b, v);
    }
    jn_leave(c);
}

void jv_to_str(jn_ctx *c, int line, jn_buf *b, jv v) {
    switch (v.t) {
    case JV_UNDEF:
        return;
    case JV_NONE:
        return jb_put(c, b, "None", 4);
    case JV_BOOL:
        return v.u.i ? jb_put(c, b, "True", 4) : jb_put(c, b, "False", 5);
    case JV_INT:
        return jb_printf(c, b, "%lld", (long long)v.u.i);
    case JV_FLOAT:
        return float_repr(c, b, v.u.f, 0);
    case JV_STR:
        return jb_put_str(c, b, v);
    case JV_LIST:
    case JV_DICT:
        return repr(c, line, b, v);
    default:
        jn_fail(c, JE_UNSUPPORTED, line, "unsupported: printing a %s object", jv_type_name(v));
    }
}

jv jv_stringify(jn_ctx *c, int line, jv v) {
    if (v.t == JV_STR) return v;
    jn_buf b = {0};
    jv_to_str(c, line, &b, v);
    return jb_value(&b);
}

/* ---- json.dumps ----------------------------------------------------------------------------- */

static void json_str(jn_ctx *c, jn_buf *b, const char *s, size_t n, int ascii) {
    jb_putc(c, b, '"');
    for (size_t i = 0; i < n;) {
        size_t l;
        uint32_t cp = ju_get(s + i, n - i, &l);
        switch (cp) {
        case '"':
            jb_put(c, b, "\\\"", 2);
            break;
        case '\\':
            jb_put(c, b, "\\\\", 2);
            break;
        case '\n':
            jb_put(c, b, "\\n", 2);
            break;
        case '\r':
            jb_put(c, b, "\\r", 2);
            break;
        case '\t':
            jb_put(c, b, "\\t", 2);
            break;
        case '\b':
            jb_put(c, b, "\\b", 2);
            break;
        case '\f':
            jb_put(c, b, "\\f", 2);
            break;
        default:
            if (cp < 0x20 || (ascii && cp > 0x7E)) {
                if (cp >= 0x10000) {
                    uint32_t u = cp - 0x10000;
                    jb_printf(c, b, "\\u%04x\\u%04x", 0xD800 + (u >> 10), 0xDC00 + (u & 0x3FF));
                } else
                    jb_printf(c, b, "\\u%04x", cp);
            } else
                jb_put(c, b, s + i, l);
        }
        i += l;
    }
    jb_putc(c, b, '"');
}

static void json_newline(jn_ctx *c, jn_buf *b, const jn_json_opts *o, int level) {
    if (!o->indent) return;
    jb_putc(c, b, '\n');
    for (int i = 0; i < level; i++) jb_put(c, b, o->indent, o->indent_n);
}

/* json's key conversion: str as is; int, float, bool, None as their JSON text */
static void json_key(jn_ctx *c, int line, jn_buf *b, jv k, const jn_json_opts *o) {
    if (k.t == JV_STR) return json_str(c, b, k.u.s.p, k.u.s.n, o->ensure_ascii);
    jn_buf t = {0};
    if (k.t == JV_BOOL)
        jb_put(c, &t, k.u.i ? "true" : "false", k.u.i ? 4 : 5);
    else if (k.t == JV_NONE)
        jb_put(c, &t, "null", 4);
    else if (k.t == JV_INT)
        jb_printf(c, &t, "%lld", (long long)k.u.i);
    else if (k.t == JV_FLOAT)
        float_repr(c, &t, k.u.f, 1);
    else
        jn_fail(c, JE_RUNTIME, line, "tojson: keys must be str, int, float, bool or None, not %s",
                jv_type_name(k));
    json_str(c, b, t.p, t.n, 0);
}

static int key_order(const void *x, const void *y) {
    const jv *a = x, *b = y;
    size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
    int r = n ? memcmp(a->u.s.p, b->u.s.p, n) : 0;
    return r ? r : (a->u.s.n > b->u.s.n) - (a->u.s.n < b->u.s.n);
}

static void json_dict(jn_ctx *c, int line, jn_buf *b, const jdict *d, const jn_json_opts *o,
                      int level) {
    if (d->n == 0) return jb_put(c, b, "{}", 2);
    uint32_t *order = jn_alloc(c, d->n * sizeof *order);
    for (uint32_t i = 0; i < d->n; i++) order[i] = i;
    if (o->sort_keys) { /* insertion sort by key (keys must all be strings) */
        for (uint32_t i = 0; i < d->n; i++)
            if (d->k[i].t != JV_STR)
                jn_fail(c, JE_UNSUPPORTED, line,
                        "unsupported: tojson sort_keys with non-string keys");
        for (uint32_t i = 1; i < d->n; i++)
            for (uint32_t j = i; j > 0 && key_order(&d->k[order[j - 1]], &d->k[order[j]]) > 0;
                 j--) {
                uint32_t t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
    }
    jb_putc(c, b, '{');
    for (uint32_t i = 0; i < d->n; i++) {
        if (i) jb_put(c, b, o->item_sep, strlen(o->item_sep));
        json_newline(c, b, o, level + 1);
        json_key(c, line, b, d->k[order[i]], o);
        jb_put(c, b, o->key_sep, strlen(o->key_sep));
        jv_to_json(c, line, b, d->v[order[i]], o, level + 1);
    }
    json_newline(c, b, o, level);
    jb_putc(c, b, '}');
}

void jv_to_json(jn_ctx *c, int line, jn_buf *b, jv v, const jn_json_opts *o, int level) {
    jn_enter(c, line);
    switch (v.t) {
    case JV_NONE:
        jb_put(c, b, "null", 4);
        break;
    case JV_BOOL:
        jb_put(c, b, v.u.i ? "true" : "false", v.u.i ? 4 : 5);
        break;
    case JV_INT:
        jb_printf(c, b, "%lld", (long long)v.u.i);
        break;
    case JV_FLOAT:
        float_repr(c, b, v.u.f, 1);
        break;
    case JV_STR:
        json_str(c, b, v.u.s.p, v.u.s.n, o->ensure_ascii);
        break;
    case JV_LIST:
        if (v.u.l->n == 0) {
            jb_put(c, b, "[]", 2);
            break;
        }
        jb_putc(c, b, '[');
        for (uint32_t i = 0; i < v.u.l->n; i++) {
            if (i) jb_put(c, b, o->item_sep, strlen(o->item_sep));
            json_newline(c, b, o, level + 1);
            jv_to_json(c, line, b, v.u.l->v[i], o, level + 1);
        }
        json_newline(c, b, o, level);
        jb_putc(c, b, ']');
        break;
    case JV_DICT:
        json_dict(c, line, b, v.u.d, o, level);
        break;
    default:
        jn_fail(c, JE_RUNTIME, line, "tojson: Object of type %s is not JSON serializable",
                jv_type_name(v));
    }
    jn_leave(c);
}
