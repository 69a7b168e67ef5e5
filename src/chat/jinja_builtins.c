/* punctum — Jinja interpreter: the filters, tests, string / dict methods and global functions
 * that chat templates use, with jinja2's and Python's semantics (transformers' tojson,
 * raise_exception, strftime_now, namespace). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "chat/jinja.h"

static int in_list(const char *name, const char *const *list) {
    for (int k = 0; list[k]; k++)
        if (!strcmp(list[k], name)) return 1;
    return 0;
}

static const char *const FILTERS[] = {
    "abs",    "count",      "d",       "default", "first", "float",  "int",
    "items",  "join",       "last",    "length",  "list",  "lower",  "map",
    "reject", "rejectattr", "replace", "reverse", "safe",  "select", "selectattr",
    "string", "tojson",     "trim",    "upper",   NULL};
static const char *const TESTS[] = {"boolean", "callable", "defined",   "divisibleby", "eq",
                                    "equalto", "==",       "even",      "false",       "float",
                                    "ge",      "gt",       ">",         ">=",          "in",
                                    "integer", "iterable", "le",        "lower",       "lt",
                                    "<",       "<=",       "mapping",   "ne",          "!=",
                                    "none",    "number",   "odd",       "sameas",      "sequence",
                                    "string",  "true",     "undefined", "upper",       NULL};
static const char *const METHODS[] = {"startswith", "endswith", "strip",   "lstrip", "rstrip",
                                      "split",      "rsplit",   "replace", "upper",  "lower",
                                      "find",       "count",    "join",    "items",  "keys",
                                      "values",     "get",      "cycle",   NULL};

int jn_known_filter(const char *name) {
    return in_list(name, FILTERS);
}
int jn_known_test(const char *name) {
    return in_list(name, TESTS);
}
int jn_known_method(const char *name) {
    return in_list(name, METHODS);
}

/* ---- arguments ----------------------------------------------------------------------------------
 */

/* argument i by position, else by keyword name; *given says whether it was passed */
static jv arg(const jn_args *a, uint32_t i, const char *name, jv dflt, int *given) {
    if (given) *given = 1;
    if (i < a->npos) return a->pos[i];
    for (uint32_t k = 0; k < a->nkw; k++)
        if (!strcmp(a->kwname[k], name)) return a->kw[k];
    if (given) *given = 0;
    return dflt;
}

static void max_args(jn_ctx *c, int line, const char *what, const jn_args *a, uint32_t n,
                     const char *const *kwnames) {
    if (a->npos > n) jn_fail(c, JE_RUNTIME, line, "%s takes at most %u argument(s)", what, n);
    for (uint32_t k = 0; k < a->nkw; k++) {
        int ok = 0;
        for (int q = 0; kwnames && kwnames[q]; q++) ok |= !strcmp(kwnames[q], a->kwname[k]);
        if (!ok)
            jn_fail(c, JE_UNSUPPORTED, line, "unsupported: keyword argument '%s' of %s",
                    a->kwname[k], what);
    }
}

static jv want_str(jn_ctx *c, int line, jv v, const char *what) {
    if (v.t != JV_STR)
        jn_fail(c, JE_RUNTIME, line, "%s needs a string, not %s", what, jv_type_name(v));
    return v;
}

static int64_t want_int(jn_ctx *c, int line, jv v, const char *what) {
    if (v.t != JV_INT && v.t != JV_BOOL)
        jn_fail(c, JE_RUNTIME, line, "%s needs an integer, not %s", what, jv_type_name(v));
    return v.u.i;
}

/* ---- string helpers ----------------------------------------------------------------------------
 */

static int in_chars(uint32_t cp, jv chars) {
    if (chars.t != JV_STR) return ju_is_space(cp);
    for (size_t i = 0; i < chars.u.s.n;) {
        size_t l;
        if (ju_get(chars.u.s.p + i, chars.u.s.n - i, &l) == cp) return 1;
        i += l;
    }
    return 0;
}

static jv substr(jv s, size_t a, size_t b) {
    jv r = jv_str(s.u.s.p + a, b - a);
    if (s.m0 >= 0) {
        int32_t m0 = s.m0 > (int32_t)a ? s.m0 : (int32_t)a,
                m1 = s.m1 < (int32_t)b ? s.m1 : (int32_t)b;
        if (m1 > m0) r.m0 = m0 - (int32_t)a, r.m1 = m1 - (int32_t)a;
    }
    return r;
}

jv js_strip(jn_ctx *c, jv s, jv chars, int left, int right) {
    (void)c;
    const char *p = s.u.s.p;
    size_t a = 0, b = s.u.s.n, l;
    while (left && a < b && in_chars(ju_get(p + a, b - a, &l), chars)) a += l;
    while (right && b > a) {
        size_t st = b - 1;
        while (st > a && ((unsigned char)p[st] & 0xC0) == 0x80) st--;
        if (!in_chars(ju_get(p + st, b - st, &l), chars)) break;
        b = st;
    }
    return substr(s, a, b);
}

/* characters whose full case mapping is not one character (Python's upper/lower use it) */
static int special_case(uint32_t cp, int upper) {
    if (!upper) return cp == 0x130;
    return cp == 0xDF || cp == 0x149 || cp == 0x1F0 || cp == 0x390 || cp == 0x3B0 || cp == 0x587 ||
           (cp >= 0x1E96 && cp <= 0x1E9A) || (cp >= 0x1F50 && cp <= 0x1F56) ||
           (cp >= 0x1F80 && cp <= 0x1FFC) || (cp >= 0xFB00 && cp <= 0xFB17);
}

jv js_upper_lower(jn_ctx *c, int line, jv s, int upper) {
    jn_buf b = {0};
    jb_put(c, &b, "", 0);
    for (size_t i = 0; i < s.u.s.n;) {
        size_t l;
        uint32_t cp = ju_get(s.u.s.p + i, s.u.s.n - i, &l);
        if (special_case(cp, upper) &&
            (utf8proc_int32_t)cp != (upper ? utf8proc_toupper((utf8proc_int32_t)cp)
                                           : utf8proc_tolower((utf8proc_int32_t)cp)))
            jn_fail(c, JE_UNSUPPORTED, line,
                    "unsupported: %s() of U+%04X (a multi-character case mapping)",
                    upper ? "upper" : "lower", cp);
        utf8proc_int32_t m =
            upper ? utf8proc_toupper((utf8proc_int32_t)cp) : utf8proc_tolower((utf8proc_int32_t)cp);
        utf8proc_uint8_t enc[4];
        jb_put(c, &b, (const char *)enc, (size_t)utf8proc_encode_char(m, enc));
        i += l;
    }
    return jv_str(b.p, b.n);
}

jv js_replace(jn_ctx *c, jv s, jv old, jv rep, int64_t count) {
    jn_buf b = {0};
    jb_put(c, &b, "", 0);
    size_t i = 0;
    int64_t done = 0;
    if (old.u.s.n == 0) { /* Python inserts rep between characters */
        for (;;) {
            if (count < 0 || done < count) jb_put(c, &b, rep.u.s.p, rep.u.s.n), done++;
            if (i >= s.u.s.n) break;
            size_t l;
            ju_get(s.u.s.p + i, s.u.s.n - i, &l);
            jb_put(c, &b, s.u.s.p + i, l);
            i += l;
        }
        return jv_str(b.p, b.n);
    }
    while (i < s.u.s.n && (count < 0 || done < count)) {
        const char *f = memmem(s.u.s.p + i, s.u.s.n - i, old.u.s.p, old.u.s.n);
        if (!f) break;
        jb_put(c, &b, s.u.s.p + i, (size_t)(f - (s.u.s.p + i)));
        jb_put(c, &b, rep.u.s.p, rep.u.s.n);
        i = (size_t)(f - s.u.s.p) + old.u.s.n;
        done++;
    }
    jb_put(c, &b, s.u.s.p + i, s.u.s.n - i);
    return jv_str(b.p, b.n);
}

/* str.split / rsplit (sep None: runs of white space, no empty pieces) */
static jv split(jn_ctx *c, jv s, jv sep, int64_t maxsplit, int from_right) {
    jlist *l = jl_new(c, 8);
    const char *p = s.u.s.p;
    size_t n = s.u.s.n;
    if (sep.t == JV_STR) {
        if (!from_right) {
            size_t i = 0;
            while (maxsplit < 0 || (int64_t)l->n < maxsplit) {
                const char *f = memmem(p + i, n - i, sep.u.s.p, sep.u.s.n);
                if (!f) break;
                jl_push(c, l, substr(s, i, (size_t)(f - p)));
                i = (size_t)(f - p) + sep.u.s.n;
            }
            jl_push(c, l, substr(s, i, n));
            return jv_list(l, 0);
        }
        jlist *r = jl_new(c, 8);
        size_t end = n;
        while (maxsplit < 0 || (int64_t)r->n < maxsplit) {
            size_t k = end;
            int found = 0;
            while (k >= sep.u.s.n) {
                k--;
                if (k + sep.u.s.n <= end && !memcmp(p + k, sep.u.s.p, sep.u.s.n)) {
                    found = 1;
                    break;
                }
                if (k == 0) break;
            }
            if (!found) break;
            jl_push(c, r, substr(s, k + sep.u.s.n, end));
            end = k;
        }
        jl_push(c, l, substr(s, 0, end));
        for (uint32_t i = r->n; i-- > 0;) jl_push(c, l, r->v[i]);
        return jv_list(l, 0);
    }
    if (from_right && maxsplit >= 0)
        jn_fail(c, JE_UNSUPPORTED, 0, "unsupported: rsplit() on white space with maxsplit");
    size_t i = 0, len;
    while (i < n) {
        while (i < n && ju_is_space(ju_get(p + i, n - i, &len))) i += len;
        if (i >= n) break;
        size_t st = i;
        if (maxsplit >= 0 && (int64_t)l->n >= maxsplit) {
            size_t e = n; /* the rest, trailing white space removed */
            jv rest = js_strip(c, substr(s, st, e), jv_none(), 0, 1);
            jl_push(c, l, rest);
            break;
        }
        while (i < n && !ju_is_space(ju_get(p + i, n - i, &len))) i += len;
        jl_push(c, l, substr(s, st, i));
    }
    return jv_list(l, 0);
}

static int starts_ends(jn_ctx *c, int line, jv s, jv x, int ends) {
    if (x.t == JV_LIST && x.tuple) {
        for (uint32_t i = 0; i < x.u.l->n; i++)
            if (starts_ends(c, line, s, x.u.l->v[i], ends)) return 1;
        return 0;
    }
    want_str(c, line, x, ends ? "endswith" : "startswith");
    if (x.u.s.n > s.u.s.n) return 0;
    return !memcmp(s.u.s.p + (ends ? s.u.s.n - x.u.s.n : 0), x.u.s.p, x.u.s.n);
}

static jv join(jn_ctx *c, int line, jv sep, const jlist *items) {
    jn_buf b = {0};
    jb_put(c, &b, "", 0);
    for (uint32_t i = 0; i < items->n; i++) {
        if (i) jb_put_str(c, &b, sep);
        jv_to_str(c, line, &b, items->v[i]);
    }
    return jb_value(&b);
}

/* ---- methods ------------------------------------------------------------------------------------
 */

static int str_method(jn_ctx *c, int line, jv s, const char *m, const jn_args *a, jv *out) {
    static const char *const none[] = {NULL};
    if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
        max_args(c, line, m, a, 1, none);
        *out = jv_bool(starts_ends(c, line, s, arg(a, 0, "", jv_undef(), NULL), m[0] == 'e'));
    } else if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        max_args(c, line, m, a, 1, none);
        jv chars = arg(a, 0, "", jv_none(), NULL);
        if (chars.t != JV_NONE) want_str(c, line, chars, m);
        *out = js_strip(c, s, chars, m[0] != 'r', m[0] != 'l');
    } else if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
        static const char *const kw[] = {"sep", "maxsplit", NULL};
        max_args(c, line, m, a, 2, kw);
        jv sep = arg(a, 0, "sep", jv_none(), NULL);
        if (sep.t != JV_NONE) want_str(c, line, sep, m);
        if (sep.t == JV_STR && sep.u.s.n == 0) jn_fail(c, JE_RUNTIME, line, "empty separator");
        int64_t maxs = want_int(c, line, arg(a, 1, "maxsplit", jv_int(-1), NULL), m);
        *out = split(c, s, sep, maxs, m[0] == 'r');
    } else if (!strcmp(m, "replace")) {
        max_args(c, line, m, a, 3, none);
        if (a->npos < 2) jn_fail(c, JE_RUNTIME, line, "replace() needs 2 arguments");
        *out = js_replace(c, s, want_str(c, line, a->pos[0], m), want_str(c, line, a->pos[1], m),
                          a->npos > 2 ? want_int(c, line, a->pos[2], m) : -1);
    } else if (!strcmp(m, "upper") || !strcmp(m, "lower")) {
        max_args(c, line, m, a, 0, none);
        *out = js_upper_lower(c, line, s, m[0] == 'u');
    } else if (!strcmp(m, "find") || !strcmp(m, "count")) {
        max_args(c, line, m, a, 1, none);
        jv x = want_str(c, line, arg(a, 0, "", jv_undef(), NULL), m);
        int64_t cnt = 0, at = -1;
        for (size_t i = 0; i + x.u.s.n <= s.u.s.n;) {
            if (!memcmp(s.u.s.p + i, x.u.s.p, x.u.s.n)) {
                if (at < 0) at = (int64_t)ju_count(s.u.s.p, i);
                cnt++;
                i += x.u.s.n ? x.u.s.n : 1;
            } else
                i++;
        }
        if (x.u.s.n == 0) cnt = (int64_t)ju_count(s.u.s.p, s.u.s.n) + 1;
        *out = jv_int(m[0] == 'f' ? at : cnt);
    } else if (!strcmp(m, "join")) {
        max_args(c, line, m, a, 1, none);
        *out = join(c, line, s, jn_iter(c, line, arg(a, 0, "", jv_undef(), NULL)));
    } else
        return 0;
    return 1;
}

static int dict_method(jn_ctx *c, int line, jv d, const char *m, const jn_args *a, jv *out) {
    static const char *const none[] = {NULL};
    if (!strcmp(m, "get")) {
        max_args(c, line, m, a, 2, none);
        if (a->npos < 1) jn_fail(c, JE_RUNTIME, line, "get() needs a key");
        if (!jd_get(d.u.d, a->pos[0], out)) *out = a->npos > 1 ? a->pos[1] : jv_none();
        return 1;
    }
    if (strcmp(m, "items") && strcmp(m, "keys") && strcmp(m, "values")) return 0;
    max_args(c, line, m, a, 0, none);
    jlist *l = jl_new(c, d.u.d->n + 1);
    for (uint32_t i = 0; i < d.u.d->n; i++) {
        if (m[0] == 'k')
            jl_push(c, l, d.u.d->k[i]);
        else if (m[0] == 'v')
            jl_push(c, l, d.u.d->v[i]);
        else {
            jlist *t = jl_new(c, 2);
            jl_push(c, t, d.u.d->k[i]);
            jl_push(c, t, d.u.d->v[i]);
            jl_push(c, l, jv_list(t, 1));
        }
    }
    *out = jv_list(l, 0);
    return 1;
}

int jn_method(jn_ctx *c, int line, jv obj, const char *name, const jn_args *a, jv *out) {
    if (obj.t == JV_STR) return str_method(c, line, obj, name, a, out);
    if (obj.t == JV_DICT) return dict_method(c, line, obj, name, a, out);
    if (obj.t == JV_LOOP && !strcmp(name, "cycle")) {
        if (a->npos == 0) jn_fail(c, JE_RUNTIME, line, "no items for cycling given");
        *out = a->pos[obj.u.loop->index0 % a->npos];
        return 1;
    }
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------------
 */

int jn_test(jn_ctx *c, int line, const char *name, jv v, const jn_args *a) {
    jv x = arg(a, 0, "", jv_undef(), NULL);
    if (!strcmp(name, "defined")) return v.t != JV_UNDEF;
    if (!strcmp(name, "undefined")) return v.t == JV_UNDEF;
    if (!strcmp(name, "none")) return v.t == JV_NONE;
    if (!strcmp(name, "boolean")) return v.t == JV_BOOL;
    if (!strcmp(name, "true")) return v.t == JV_BOOL && v.u.i;
    if (!strcmp(name, "false")) return v.t == JV_BOOL && !v.u.i;
    if (!strcmp(name, "string")) return v.t == JV_STR;
    if (!strcmp(name, "number")) return jv_is_num(v);
    if (!strcmp(name, "integer")) return v.t == JV_INT;
    if (!strcmp(name, "float")) return v.t == JV_FLOAT;
    if (!strcmp(name, "mapping")) return v.t == JV_DICT;
    if (!strcmp(name, "iterable"))
        return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF;
    if (!strcmp(name, "sequence"))
        return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF;
    if (!strcmp(name, "callable")) return v.t == JV_FUNC || v.t == JV_MACRO;
    if (!strcmp(name, "sameas"))
        return v.t == x.t &&
               (v.t == JV_NONE || v.t == JV_UNDEF || (v.t == JV_BOOL && jv_eq(v, x)) ||
                ((v.t == JV_LIST || v.t == JV_DICT || v.t == JV_NS) && v.u.l == x.u.l));
    if (!strcmp(name, "odd") || !strcmp(name, "even")) {
        int64_t k = want_int(c, line, v, name);
        return (k % 2 != 0) == (name[0] == 'o');
    }
    if (!strcmp(name, "divisibleby")) {
        int64_t d = want_int(c, line, x, name);
        if (d == 0) jn_fail(c, JE_RUNTIME, line, "integer division or modulo by zero");
        return want_int(c, line, v, name) % d == 0;
    }
    if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        if (v.t != JV_STR) return 0;
        jv u = js_upper_lower(c, line, v, name[0] != 'u'),
           w = js_upper_lower(c, line, v, name[0] == 'u');
        return !jv_eq(u, v) && jv_eq(w, v); /* has cased characters, all of this case */
    }
    if (!strcmp(name, "in")) {
        jn_args one = {&v, 1, NULL, NULL, 0};
        (void)one;
        if (x.t == JV_STR && v.t == JV_STR)
            return memmem(x.u.s.p, x.u.s.n, v.u.s.p, v.u.s.n) != NULL || !v.u.s.n;
        const jlist *l = jn_iter(c, line, x);
        for (uint32_t i = 0; i < l->n; i++)
            if (jv_eq(l->v[i], v)) return 1;
        return 0;
    }
    static const char *const cmp[] = {"eq", "equalto", "==", "ne", "!=", "lt", "<",
                                      "le", "<=",      "gt", ">",  "ge", ">=", NULL};
    static const int ops[] = {0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5};
    for (int k = 0; cmp[k]; k++)
        if (!strcmp(cmp[k], name)) {
            if (ops[k] <= 1) return jv_eq(v, x) == (ops[k] == 0);
            int r = jv_cmp(c, line, v, x);
            return ops[k] == 2 ? r < 0 : ops[k] == 3 ? r <= 0 : ops[k] == 4 ? r > 0 : r >= 0;
        }
    jn_fail(c, JE_UNSUPPORTED, line, "unsupported test '%s'", name);
}

/* ---- filters --------------------------------------------------------------------------------- */

/* environment.getitem with a dotted attribute path ("a.b", "0") */
static jv attr_path(jn_ctx *c, int line, jv v, jv path) {
    want_str(c, line, path, "attribute");
    const char *p = path.u.s.p, *end = p + path.u.s.n;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        if (!dot) dot = end;
        jv key = jv_str(p, (size_t)(dot - p));
        char *ep;
        char *tmp = jn_strdup(c, p, (size_t)(dot - p));
        long k = strtol(tmp, &ep, 10);
        if (*tmp && !*ep) key = jv_int(k);
        if (v.t == JV_UNDEF) return v;
        v = jn_getitem(c, line, v, key);
        p = dot + 1;
    }
    return v;
}

/* select / reject / selectattr / rejectattr */
static jv select_items(jn_ctx *c, int line, jv seq, const jn_args *a, int by_attr, int keep) {
    const jlist *items = jn_iter(c, line, seq);
    uint32_t first = (uint32_t)by_attr;
    jv test = arg(a, first, "", jv_undef(), NULL);
    jn_args rest = {a->pos + (a->npos > first + 1 ? first + 1 : a->npos),
                    a->npos > first + 1 ? a->npos - first - 1 : 0, NULL, NULL, 0};
    if (a->nkw)
        jn_fail(c, JE_UNSUPPORTED, line, "unsupported: keyword arguments of select filters");
    if (test.t != JV_UNDEF) {
        want_str(c, line, test, "the test name");
        const char *tn = jn_strdup(c, test.u.s.p, test.u.s.n);
        if (!jn_known_test(tn)) jn_fail(c, JE_UNSUPPORTED, line, "unsupported test '%s'", tn);
        test = jv_cstr(tn);
    }
    jlist *out = jl_new(c, items->n + 1);
    for (uint32_t i = 0; i < items->n; i++) {
        jn_step(c, line);
        jv x = by_attr ? attr_path(c, line, items->v[i], arg(a, 0, "", jv_undef(), NULL))
                       : items->v[i];
        int ok = test.t == JV_UNDEF ? jv_truthy(x) : jn_test(c, line, test.u.s.p, x, &rest);
        if (ok == keep) jl_push(c, out, items->v[i]);
    }
    return jv_list(out, 0);
}

static jv map_items(jn_ctx *c, int line, jv seq, const jn_args *a, jscope *s) {
    const jlist *items = jn_iter(c, line, seq);
    jlist *out = jl_new(c, items->n + 1);
    int by_attr = 0;
    jv attr = arg(a, 99, "attribute", jv_undef(), &by_attr),
       dflt = arg(a, 99, "default", jv_undef(), NULL);
    jv fname = by_attr ? jv_undef() : want_str(c, line, arg(a, 0, "", jv_undef(), NULL), "map");
    const char *fn = by_attr ? NULL : jn_strdup(c, fname.u.s.p, fname.u.s.n);
    if (fn && !jn_known_filter(fn)) jn_fail(c, JE_UNSUPPORTED, line, "unsupported filter '%s'", fn);
    jn_args rest = {a->pos + (a->npos ? 1 : 0), a->npos ? a->npos - 1 : 0, NULL, NULL, 0};
    for (uint32_t i = 0; i < items->n; i++) {
        jn_step(c, line);
        jv x = items->v[i];
        if (by_attr) {
            x = attr_path(c, line, x, attr);
            if (x.t == JV_UNDEF) x = dflt;
        } else
            x = jn_filter(c, line, fn, x, &rest, s);
        jl_push(c, out, x);
    }
    return jv_list(out, 0);
}

static jv tojson(jn_ctx *c, int line, jv v, const jn_args *a) {
    static const char *const kw[] = {"ensure_ascii", "indent", "separators", "sort_keys", NULL};
    max_args(c, line, "tojson", a, 4, kw);
    jn_json_opts o = {0, 0, NULL, 0, ", ", ": "};
    o.ensure_ascii = jv_truthy(arg(a, 0, "ensure_ascii", jv_bool(0), NULL));
    jv ind = arg(a, 1, "indent", jv_none(), NULL);
    if (ind.t == JV_INT) {
        int64_t k = ind.u.i < 0 ? 0 : ind.u.i > 64 ? 64 : ind.u.i;
        char *sp = jn_alloc(c, (size_t)k + 1);
        memset(sp, ' ', (size_t)k);
        o.indent = sp;
        o.indent_n = (size_t)k;
    } else if (ind.t == JV_STR) {
        o.indent = ind.u.s.p;
        o.indent_n = ind.u.s.n;
    } else if (ind.t != JV_NONE)
        jn_fail(c, JE_UNSUPPORTED, line, "unsupported: tojson indent of type %s",
                jv_type_name(ind));
    if (o.indent) o.item_sep = ",";
    jv sep = arg(a, 2, "separators", jv_none(), NULL);
    if (sep.t == JV_LIST && sep.u.l->n == 2 && sep.u.l->v[0].t == JV_STR &&
        sep.u.l->v[1].t == JV_STR) {
        o.item_sep = jn_strdup(c, sep.u.l->v[0].u.s.p, sep.u.l->v[0].u.s.n);
        o.key_sep = jn_strdup(c, sep.u.l->v[1].u.s.p, sep.u.l->v[1].u.s.n);
    } else if (sep.t != JV_NONE)
        jn_fail(c, JE_UNSUPPORTED, line, "unsupported: tojson separators");
    o.sort_keys = jv_truthy(arg(a, 3, "sort_keys", jv_bool(0), NULL));
    jn_buf b = {0};
    jb_put(c, &b, "", 0);
    jv_to_json(c, line, &b, v, &o, 0);
    return jv_str(b.p, b.n);
}

static jv to_number(jn_ctx *c, int line, jv v, const jn_args *a, int is_int) {
    static const char *const kw[] = {"default", "base", NULL};
    max_args(c, line, is_int ? "int" : "float", a, 2, kw);
    jv dflt = arg(a, 0, "default", is_int ? jv_int(0) : jv_float(0), NULL);
    if (jv_is_num(v))
        return is_int ? jv_int(v.t == JV_FLOAT ? (int64_t)v.u.f : v.u.i) : jv_float(jv_num(v));
    if (v.t != JV_STR) return dflt;
    char *s = jn_strdup(c, v.u.s.p, v.u.s.n), *end;
    while (*s == ' ' || *s == '\t' || *s == '\n') s++;
    if (is_int) {
        long long k = strtoll(s, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\n') end++;
        return *s && !*end ? jv_int(k) : dflt;
    }
    double f = strtod(s, &end);
    while (*end == ' ' || *end == '\t' || *end == '\n') end++;
    return *s && !*end ? jv_float(f) : dflt;
}

static jv first_last(jn_ctx *c, int line, jv v, int last) {
    if (v.t == JV_STR) {
        size_t n = ju_count(v.u.s.p, v.u.s.n);
        return n ? jn_getitem(c, line, v, jv_int(last ? -1 : 0)) : jv_undef();
    }
    const jlist *l = jn_iter(c, line, v);
    return l->n ? l->v[last ? l->n - 1 : 0] : jv_undef();
}

static jv reverse(jn_ctx *c, int line, jv v) {
    if (v.t == JV_STR) {
        const jlist *chars = jn_iter(c, line, v);
        jn_buf b = {0};
        jb_put(c, &b, "", 0);
        for (uint32_t i = chars->n; i-- > 0;) jb_put(c, &b, chars->v[i].u.s.p, chars->v[i].u.s.n);
        return jv_str(b.p, b.n);
    }
    const jlist *l = jn_iter(c, line, v);
    jlist *r = jl_new(c, l->n + 1);
    for (uint32_t i = l->n; i-- > 0;) jl_push(c, r, l->v[i]);
    return jv_list(r, 0);
}

jv jn_filter(jn_ctx *c, int line, const char *f, jv v, const jn_args *a, jscope *s) {
    static const char *const none[] = {NULL};
    if (!strcmp(f, "trim")) {
        max_args(c, line, f, a, 1, none);
        jv chars = arg(a, 0, "chars", jv_none(), NULL);
        return js_strip(c, jv_stringify(c, line, v), chars, 1, 1);
    }
    if (!strcmp(f, "length") || !strcmp(f, "count")) return jv_int(jn_length(c, line, v));
    if (!strcmp(f, "tojson")) return tojson(c, line, v, a);
    if (!strcmp(f, "upper") || !strcmp(f, "lower"))
        return js_upper_lower(c, line, jv_stringify(c, line, v), f[0] == 'u');
    if (!strcmp(f, "string")) return jv_stringify(c, line, v);
    if (!strcmp(f, "safe")) return v;
    if (!strcmp(f, "list")) {
        const jlist *l = jn_iter(c, line, v);
        jlist *r = jl_new(c, l->n + 1);
        for (uint32_t i = 0; i < l->n; i++) jl_push(c, r, l->v[i]);
        return jv_list(r, 0);
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) return first_last(c, line, v, f[0] == 'l');
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        jv dflt = arg(a, 0, "default_value", jv_str("", 0), NULL);
        int boolean = jv_truthy(arg(a, 1, "boolean", jv_bool(0), NULL));
        return v.t == JV_UNDEF || (boolean && !jv_truthy(v)) ? dflt : v;
    }
    if (!strcmp(f, "join")) {
        static const char *const kw[] = {"d", "attribute", NULL};
        max_args(c, line, f, a, 2, kw);
        jv sep = jv_stringify(c, line, arg(a, 0, "d", jv_str("", 0), NULL));
        int by_attr;
        jv attr = arg(a, 1, "attribute", jv_undef(), &by_attr);
        const jlist *items = jn_iter(c, line, v);
        if (by_attr) {
            jlist *l = jl_new(c, items->n + 1);
            for (uint32_t i = 0; i < items->n; i++)
                jl_push(c, l, attr_path(c, line, items->v[i], attr));
            items = l;
        }
        return join(c, line, sep, items);
    }
    if (!strcmp(f, "items")) {
        if (v.t == JV_UNDEF) return jv_list(jl_new(c, 1), 0);
        if (v.t != JV_DICT) jn_fail(c, JE_RUNTIME, line, "items filter of a %s", jv_type_name(v));
        jn_args no = {0};
        jv out;
        dict_method(c, line, v, "items", &no, &out);
        return out;
    }
    if (!strcmp(f, "selectattr") || !strcmp(f, "rejectattr"))
        return select_items(c, line, v, a, 1, f[0] == 's');
    if (!strcmp(f, "select") || !strcmp(f, "reject"))
        return select_items(c, line, v, a, 0, f[0] == 's');
    if (!strcmp(f, "map")) return map_items(c, line, v, a, s);
    if (!strcmp(f, "replace")) {
        max_args(c, line, f, a, 3, none);
        if (a->npos < 2) jn_fail(c, JE_RUNTIME, line, "replace needs 2 arguments");
        jv str = jv_stringify(c, line, v);
        return js_replace(c, str, jv_stringify(c, line, a->pos[0]),
                          jv_stringify(c, line, a->pos[1]),
                          a->npos > 2 ? want_int(c, line, a->pos[2], f) : -1);
    }
    if (!strcmp(f, "reverse")) return reverse(c, line, v);
    if (!strcmp(f, "int") || !strcmp(f, "float")) return to_number(c, line, v, a, f[0] == 'i');
    if (!strcmp(f, "abs")) {
        if (v.t == JV_FLOAT) return jv_float(v.u.f < 0 ? -v.u.f : v.u.f);
        int64_t k = want_int(c, line, v, "abs");
        if (k == INT64_MIN) jn_fail(c, JE_UNSUPPORTED, line, "unsupported: integer beyond 64 bits");
        return jv_int(k < 0 ? -k : k);
    }
    jn_fail(c, JE_UNSUPPORTED, line, "unsupported filter '%s'", f);
}

/* ---- global functions -------------------------------------------------------------------------
 */

static jv strftime_now(jn_ctx *c, int line, const jn_args *a) {
    jv fmt = want_str(c, line, arg(a, 0, "format", jv_undef(), NULL), "strftime_now");
    char *f = jn_strdup(c, fmt.u.s.p, fmt.u.s.n);
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char out[512];
    size_t n = fmt.u.s.n ? strftime(out, sizeof out, f, &tm) : 0;
    if (fmt.u.s.n && n == 0) jn_fail(c, JE_UNSUPPORTED, line, "unsupported: strftime_now format");
    return jv_str(jn_strdup(c, out, n), n);
}

static jv make_dict(jn_ctx *c, int line, const jn_args *a, int ns) {
    jdict *d = jd_new(c);
    if (a->npos > 1)
        jn_fail(c, JE_RUNTIME, line, "%s takes at most one positional argument",
                ns ? "namespace" : "dict");
    if (a->npos == 1) {
        if (a->pos[0].t != JV_DICT)
            jn_fail(c, JE_UNSUPPORTED, line, "unsupported: %s from a %s", ns ? "namespace" : "dict",
                    jv_type_name(a->pos[0]));
        for (uint32_t i = 0; i < a->pos[0].u.d->n; i++)
            jd_set(c, d, a->pos[0].u.d->k[i], a->pos[0].u.d->v[i]);
    }
    for (uint32_t k = 0; k < a->nkw; k++) {
        if (ns && a->kwname[k][0] == '_')
            jn_fail(c, JE_RUNTIME, line, "namespace attributes cannot start with '_'");
        jd_set(c, d, jv_cstr(a->kwname[k]), a->kw[k]);
    }
    return jv_dict(d, ns);
}

static jv range(jn_ctx *c, int line, const jn_args *a) {
    if (a->nkw || a->npos < 1 || a->npos > 3)
        jn_fail(c, JE_RUNTIME, line, "range() takes 1 to 3 integers");
    int64_t lo = 0, hi, step = 1;
    if (a->npos == 1)
        hi = want_int(c, line, a->pos[0], "range");
    else {
        lo = want_int(c, line, a->pos[0], "range");
        hi = want_int(c, line, a->pos[1], "range");
        if (a->npos == 3) step = want_int(c, line, a->pos[2], "range");
    }
    if (step == 0) jn_fail(c, JE_RUNTIME, line, "range() arg 3 must not be zero");
    jlist *l = jl_new(c, 8);
    for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) {
        if (l->n >= 100000) jn_fail(c, JE_LIMIT, line, "range() longer than 100000");
        jl_push(c, l, jv_int(i));
    }
    return jv_list(l, 0);
}

jv jn_call_builtin(jn_ctx *c, int line, int fn, const jn_args *a) {
    switch (fn) {
    case JF_RAISE: {
        jv msg = jv_stringify(c, line, arg(a, 0, "message", jv_undef(), NULL));
        jn_fail(c, JE_RAISE, line, "%.*s", (int)(msg.u.s.n > 300 ? 300 : msg.u.s.n), msg.u.s.p);
    }
    case JF_STRFTIME:
        return strftime_now(c, line, a);
    case JF_NAMESPACE:
        return make_dict(c, line, a, 1);
    case JF_DICT:
        return make_dict(c, line, a, 0);
    case JF_RANGE:
        return range(c, line, a);
    }
    jn_fail(c, JE_UNSUPPORTED, line, "unsupported global function (lipsum, cycler, joiner)");
}
