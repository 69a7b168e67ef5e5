/* punctum — Jinja interpreter: evaluation of expressions and execution of statements, with
 * jinja2's scoping (a for loop and a macro call open a scope; if does not), Python arithmetic,
 * and sandboxed attribute / item lookup. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"

enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };

static jv eval(jn_ctx *c, const jnode *n, jscope *s);
static int exec(jn_ctx *c, const jnode *n, jscope *s, jn_buf *out);

/* ---- scopes -----------------------------------------------------------------------------------
 */

jscope *js_new(jn_ctx *c, jscope *parent) {
    jscope *s = jn_alloc(c, sizeof *s);
    s->parent = parent;
    return s;
}

void js_set(jn_ctx *c, jscope *s, const char *name, jv v) {
    for (uint32_t i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) {
            s->vals[i] = v;
            return;
        }
    if (s->n == s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : 8;
        const char **nn = jn_alloc(c, cap * sizeof *nn);
        jv *nv = jn_alloc(c, cap * sizeof *nv);
        if (s->n) {
            memcpy(nn, s->names, s->n * sizeof *nn);
            memcpy(nv, s->vals, s->n * sizeof *nv);
        }
        s->names = nn;
        s->vals = nv;
        s->cap = cap;
    }
    s->names[s->n] = name;
    s->vals[s->n++] = v;
}

int js_get(const jscope *s, const char *name, jv *out) {
    for (; s; s = s->parent)
        for (uint32_t i = s->n; i-- > 0;)
            if (!strcmp(s->names[i], name)) {
                *out = s->vals[i];
                return 1;
            }
    return 0;
}

static jv global(const char *name) {
    static const struct {
        const char *name;
        int fn;
    } G[] = {{"raise_exception", JF_RAISE}, {"strftime_now", JF_STRFTIME},
             {"namespace", JF_NAMESPACE},   {"dict", JF_DICT},
             {"range", JF_RANGE},           {"lipsum", JF_OTHER},
             {"cycler", JF_OTHER},          {"joiner", JF_OTHER}};
    for (size_t k = 0; k < sizeof G / sizeof G[0]; k++)
        if (!strcmp(G[k].name, name)) {
            jv v = jv_int(G[k].fn);
            v.t = JV_FUNC;
            return v;
        }
    return jv_undef();
}

/* ---- lookup -----------------------------------------------------------------------------------
 */

static jv loop_attr(jn_ctx *c, int line, const jloop *l, const char *name) {
    int64_t len = l->items->n, i = l->index0;
    if (!strcmp(name, "index")) return jv_int(i + 1);
    if (!strcmp(name, "index0")) return jv_int(i);
    if (!strcmp(name, "revindex")) return jv_int(len - i);
    if (!strcmp(name, "revindex0")) return jv_int(len - i - 1);
    if (!strcmp(name, "first")) return jv_bool(i == 0);
    if (!strcmp(name, "last")) return jv_bool(i == len - 1);
    if (!strcmp(name, "length")) return jv_int(len);
    if (!strcmp(name, "depth")) return jv_int(1);
    if (!strcmp(name, "depth0")) return jv_int(0);
    if (!strcmp(name, "previtem")) return i > 0 ? l->items->v[i - 1] : jv_undef();
    if (!strcmp(name, "nextitem")) return i + 1 < len ? l->items->v[i + 1] : jv_undef();
    if (!strcmp(name, "changed") || !strcmp(name, "cycle"))
        jn_fail(c, JE_UNSUPPORTED, line, "unsupported: loop.%s outside a call", name);
    return jv_undef();
}

jv jn_getattr(jn_ctx *c, int line, jv obj, const char *name) {
    jv out;
    switch (obj.t) {
    case JV_DICT:
    case JV_NS:
        return jd_get(obj.u.d, jv_cstr(name), &out) ? out : jv_undef();
    case JV_LOOP:
        return loop_attr(c, line, obj.u.loop, name);
    case JV_UNDEF:
        jn_fail(c, JE_RUNTIME, line, "an undefined value has no attribute '%s'", name);
    default:
        return jv_undef();
    }
}

/* Python index k of a sequence of length n (negative from the end); -1 when out of range */
static int64_t seq_index(jv key, int64_t n) {
    if (key.t != JV_INT && key.t != JV_BOOL) return -1;
    int64_t k = key.u.i < 0 ? key.u.i + n : key.u.i;
    return k >= 0 && k < n ? k : -1;
}

jv jn_getitem(jn_ctx *c, int line, jv obj, jv key) {
    jv out;
    switch (obj.t) {
    case JV_DICT:
        return jd_get(obj.u.d, key, &out) ? out : jv_undef();
    case JV_LIST: {
        int64_t k = seq_index(key, obj.u.l->n);
        return k >= 0 ? obj.u.l->v[k] : jv_undef();
    }
    case JV_STR: {
        int64_t k = seq_index(key, (int64_t)ju_count(obj.u.s.p, obj.u.s.n));
        if (k < 0) return jv_undef();
        size_t a = ju_offset(obj.u.s.p, obj.u.s.n, (size_t)k);
        size_t b = ju_offset(obj.u.s.p, obj.u.s.n, (size_t)k + 1);
        jv r = jv_str(obj.u.s.p + a, b - a);
        if (obj.m0 >= 0 && (int32_t)a >= obj.m0 && (int32_t)b <= obj.m1)
            r.m0 = 0, r.m1 = (int32_t)(b - a);
        return r;
    }
    case JV_NS:
    case JV_LOOP:
        return key.t == JV_STR ? jn_getattr(c, line, obj, jn_strdup(c, key.u.s.p, key.u.s.n))
                               : jv_undef();
    case JV_UNDEF:
        jn_fail(c, JE_RUNTIME, line, "an undefined value has no item");
    default:
        return jv_undef();
    }
}

const jlist *jn_iter(jn_ctx *c, int line, jv v) {
    jlist *l;
    switch (v.t) {
    case JV_LIST:
        return v.u.l;
    case JV_UNDEF:
        return jl_new(c, 1);
    case JV_DICT:
        l = jl_new(c, v.u.d->n + 1);
        for (uint32_t i = 0; i < v.u.d->n; i++) jl_push(c, l, v.u.d->k[i]);
        return l;
    case JV_STR:
        l = jl_new(c, v.u.s.n + 1);
        for (size_t i = 0; i < v.u.s.n;) {
            size_t len;
            ju_get(v.u.s.p + i, v.u.s.n - i, &len);
            jl_push(c, l, jv_str(v.u.s.p + i, len));
            i += len;
        }
        return l;
    default:
        jn_fail(c, JE_RUNTIME, line, "'%s' object is not iterable", jv_type_name(v));
    }
}

int64_t jn_length(jn_ctx *c, int line, jv v) {
    switch (v.t) {
    case JV_STR:
        return (int64_t)ju_count(v.u.s.p, v.u.s.n);
    case JV_LIST:
        return v.u.l->n;
    case JV_DICT:
        return v.u.d->n;
    case JV_UNDEF:
        return 0;
    default:
        jn_fail(c, JE_RUNTIME, line, "object of type '%s' has no len()", jv_type_name(v));
    }
}

/* ---- slices -----------------------------------------------------------------------------------
 */

static int64_t slice_bound(jn_ctx *c, int line, jv v, int64_t n, int64_t step, int is_start) {
    if (v.t == JV_UNDEF || v.t == JV_NONE)
        return is_start ? (step > 0 ? 0 : n - 1) : (step > 0 ? n : -1);
    if (v.t != JV_INT && v.t != JV_BOOL)
        jn_fail(c, JE_RUNTIME, line, "slice indices must be integers or None");
    int64_t k = v.u.i;
    if (k < 0) {
        k += n;
        if (k < 0) k = step < 0 ? -1 : 0;
    } else if (k >= n)
        k = step < 0 ? n - 1 : n;
    return k;
}

static jv slice(jn_ctx *c, const jnode *n, jscope *s) {
    jv obj = eval(c, n->a, s);
    jv a = n->b ? eval(c, n->b, s) : jv_none(), b = n->c ? eval(c, n->c, s) : jv_none();
    jv st = n->d ? eval(c, n->d, s) : jv_none();
    int64_t step = 1;
    if (st.t == JV_INT || st.t == JV_BOOL)
        step = st.u.i;
    else if (st.t != JV_NONE)
        jn_fail(c, JE_RUNTIME, n->line, "slice indices must be integers or None");
    if (step == 0) jn_fail(c, JE_RUNTIME, n->line, "slice step cannot be zero");
    if (obj.t != JV_LIST && obj.t != JV_STR) {
        if (obj.t == JV_UNDEF) jn_fail(c, JE_RUNTIME, n->line, "an undefined value has no item");
        return jv_undef();
    }
    int is_str = obj.t == JV_STR;
    int64_t len = is_str ? (int64_t)ju_count(obj.u.s.p, obj.u.s.n) : obj.u.l->n;
    int64_t i0 = slice_bound(c, n->line, a, len, step, 1),
            i1 = slice_bound(c, n->line, b, len, step, 0);
    if (is_str && step == 1) { /* a substring: keeps the prompt mark */
        if (i1 < i0) i1 = i0;
        size_t x = ju_offset(obj.u.s.p, obj.u.s.n, (size_t)i0),
               y = ju_offset(obj.u.s.p, obj.u.s.n, (size_t)i1);
        jv r = jv_str(obj.u.s.p + x, y - x);
        if (obj.m0 >= 0) {
            int32_t m0 = obj.m0 > (int32_t)x ? obj.m0 : (int32_t)x,
                    m1 = obj.m1 < (int32_t)y ? obj.m1 : (int32_t)y;
            if (m1 > m0) r.m0 = m0 - (int32_t)x, r.m1 = m1 - (int32_t)x;
        }
        return r;
    }
    jlist *l = jl_new(c, 8);
    jn_buf sb = {0};
    jb_put(c, &sb, "", 0);
    for (int64_t i = i0; step > 0 ? i < i1 : i > i1; i += step) {
        jn_step(c, n->line);
        if (!is_str)
            jl_push(c, l, obj.u.l->v[i]);
        else {
            size_t x = ju_offset(obj.u.s.p, obj.u.s.n, (size_t)i);
            size_t y = ju_offset(obj.u.s.p, obj.u.s.n, (size_t)i + 1);
            jb_put(c, &sb, obj.u.s.p + x, y - x);
        }
    }
    return is_str ? jv_str(sb.p, sb.n) : jv_list(l, obj.tuple);
}

/* ---- operators --------------------------------------------------------------------------------
 */

static jv concat(jn_ctx *c, jv a, jv b) {
    char *p = jn_alloc(c, (size_t)a.u.s.n + b.u.s.n + 1);
    memcpy(p, a.u.s.p, a.u.s.n);
    memcpy(p + a.u.s.n, b.u.s.p, b.u.s.n);
    if ((size_t)a.u.s.n + b.u.s.n > JN_MAX_OUTPUT)
        jn_fail(c, JE_LIMIT, 0, "a string longer than %zu MiB", JN_MAX_OUTPUT >> 20);
    jv r = jv_str(p, (size_t)a.u.s.n + b.u.s.n);
    if (a.m0 >= 0)
        r.m0 = a.m0, r.m1 = a.m1;
    else if (b.m0 >= 0)
        r.m0 = b.m0 + (int32_t)a.u.s.n, r.m1 = b.m1 + (int32_t)a.u.s.n;
    return r;
}

static _Noreturn void bad_operands(jn_ctx *c, int line, const char *op, jv a, jv b) {
    if (a.t == JV_UNDEF || b.t == JV_UNDEF)
        jn_fail(c, JE_RUNTIME, line, "an undefined value in '%s'", op);
    jn_fail(c, JE_RUNTIME, line, "unsupported operand type(s) for %s: '%s' and '%s'", op,
            jv_type_name(a), jv_type_name(b));
}

static jv repeat(jn_ctx *c, int line, jv seq, int64_t k) {
    if (k < 0) k = 0;
    size_t unit = seq.t == JV_STR ? seq.u.s.n : seq.u.l->n;
    if (unit && (uint64_t)k > JN_MAX_OUTPUT / unit)
        jn_fail(c, JE_LIMIT, line, "a repetition too large");
    if (seq.t == JV_STR) {
        jn_buf b = {0};
        jb_put(c, &b, "", 0);
        for (int64_t i = 0; i < k; i++) jb_put(c, &b, seq.u.s.p, seq.u.s.n);
        return jv_str(b.p, b.n);
    }
    jlist *l = jl_new(c, (uint32_t)(unit * (size_t)k + 1));
    for (int64_t i = 0; i < k; i++)
        for (size_t j = 0; j < unit; j++) jl_push(c, l, seq.u.l->v[j]);
    return jv_list(l, seq.tuple);
}

static jv int_op(jn_ctx *c, int line, int op, int64_t x, int64_t y) {
    int64_t r;
    int ovf = 0;
    switch (op) {
    case OP_ADD:
        ovf = __builtin_add_overflow(x, y, &r);
        break;
    case OP_SUB:
        ovf = __builtin_sub_overflow(x, y, &r);
        break;
    case OP_MUL:
        ovf = __builtin_mul_overflow(x, y, &r);
        break;
    case OP_FLOORDIV:
    case OP_MOD:
        if (y == 0) jn_fail(c, JE_RUNTIME, line, "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1)
            ovf = 1, r = 0;
        else {
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) q--, m += y;
            r = op == OP_FLOORDIV ? q : m;
        }
        break;
    case OP_POW:
        if (y < 0) return jv_float(pow((double)x, (double)y));
        r = 1;
        for (int64_t i = 0; i < y && !ovf; i++) ovf = __builtin_mul_overflow(r, x, &r);
        break;
    default:
        r = 0;
    }
    if (ovf) jn_fail(c, JE_UNSUPPORTED, line, "unsupported: integer arithmetic beyond 64 bits");
    return jv_int(r);
}

static jv float_op(jn_ctx *c, int line, int op, double x, double y) {
    switch (op) {
    case OP_ADD:
        return jv_float(x + y);
    case OP_SUB:
        return jv_float(x - y);
    case OP_MUL:
        return jv_float(x * y);
    case OP_DIV:
        if (y == 0) jn_fail(c, JE_RUNTIME, line, "division by zero");
        return jv_float(x / y);
    case OP_FLOORDIV:
        if (y == 0) jn_fail(c, JE_RUNTIME, line, "float floor division by zero");
        return jv_float(floor(x / y));
    case OP_MOD: {
        if (y == 0) jn_fail(c, JE_RUNTIME, line, "float modulo");
        double m = fmod(x, y);
        if (m != 0 && ((m < 0) != (y < 0))) m += y;
        return jv_float(m);
    }
    default:
        return jv_float(pow(x, y));
    }
}

static jv binop(jn_ctx *c, int line, int op, jv a, jv b) {
    static const char *names[] = {"+", "-", "*", "/", "//", "%", "**"};
    if (jv_is_num(a) && jv_is_num(b)) {
        if (op != OP_DIV && a.t != JV_FLOAT && b.t != JV_FLOAT)
            return int_op(c, line, op, a.u.i, b.u.i);
        return float_op(c, line, op, jv_num(a), jv_num(b));
    }
    if (op == OP_ADD && a.t == JV_STR && b.t == JV_STR) return concat(c, a, b);
    if (op == OP_ADD && a.t == JV_LIST && b.t == JV_LIST && a.tuple == b.tuple) {
        jlist *l = jl_new(c, a.u.l->n + b.u.l->n + 1);
        for (uint32_t i = 0; i < a.u.l->n; i++) jl_push(c, l, a.u.l->v[i]);
        for (uint32_t i = 0; i < b.u.l->n; i++) jl_push(c, l, b.u.l->v[i]);
        return jv_list(l, a.tuple);
    }
    if (op == OP_MUL && (a.t == JV_STR || a.t == JV_LIST) && (b.t == JV_INT || b.t == JV_BOOL))
        return repeat(c, line, a, b.u.i);
    if (op == OP_MUL && (b.t == JV_STR || b.t == JV_LIST) && (a.t == JV_INT || a.t == JV_BOOL))
        return repeat(c, line, b, a.u.i);
    if (op == OP_MOD && a.t == JV_STR)
        jn_fail(c, JE_UNSUPPORTED, line, "unsupported: '%%' string formatting");
    bad_operands(c, line, names[op], a, b);
}

static int contains(jn_ctx *c, int line, jv item, jv seq) {
    switch (seq.t) {
    case JV_STR:
        if (item.t != JV_STR)
            jn_fail(c, JE_RUNTIME, line, "'in <string>' requires string as left operand");
        if (item.u.s.n == 0) return 1;
        return memmem(seq.u.s.p, seq.u.s.n, item.u.s.p, item.u.s.n) != NULL;
    case JV_LIST:
        for (uint32_t i = 0; i < seq.u.l->n; i++)
            if (jv_eq(seq.u.l->v[i], item)) return 1;
        return 0;
    case JV_DICT: {
        jv out;
        return jd_get(seq.u.d, item, &out);
    }
    case JV_UNDEF:
        return 0;
    default:
        jn_fail(c, JE_RUNTIME, line, "argument of type '%s' is not iterable", jv_type_name(seq));
    }
}

static int compare(jn_ctx *c, int line, int op, jv a, jv b) {
    switch (op) {
    case CMP_EQ:
        return jv_eq(a, b);
    case CMP_NE:
        return !jv_eq(a, b);
    case CMP_IN:
        return contains(c, line, a, b);
    case CMP_NOTIN:
        return !contains(c, line, a, b);
    }
    int r = jv_cmp(c, line, a, b);
    return op == CMP_LT ? r < 0 : op == CMP_LE ? r <= 0 : op == CMP_GT ? r > 0 : r >= 0;
}

static jv compare_chain(jn_ctx *c, const jnode *n, jscope *s) {
    jv left = eval(c, n->a, s);
    for (uint32_t i = 0; i < n->n; i++) {
        jv right = eval(c, n->v[i], s);
        if (!compare(c, n->line, n->ops[i], left, right)) return jv_bool(0);
        left = right;
    }
    return jv_bool(1);
}

static jv concat_all(jn_ctx *c, const jnode *n, jscope *s) {
    jn_buf b = {0};
    jb_put(c, &b, "", 0);
    for (uint32_t i = 0; i < n->n; i++) jv_to_str(c, n->line, &b, eval(c, n->v[i], s));
    return jb_value(&b);
}

/* ---- calls --------------------------------------------------------------------------------------
 */

static void eval_args(jn_ctx *c, const jnode *n, jscope *s, jn_args *a) {
    memset(a, 0, sizeof *a);
    a->npos = n->n;
    a->pos = jn_alloc(c, (n->n + 1) * sizeof *a->pos);
    for (uint32_t i = 0; i < n->n; i++) a->pos[i] = eval(c, n->v[i], s);
    a->nkw = n->nkw;
    a->kw = jn_alloc(c, (n->nkw + 1) * sizeof *a->kw);
    a->kwname = jn_alloc(c, (n->nkw + 1) * sizeof *a->kwname);
    for (uint32_t i = 0; i < n->nkw; i++) {
        a->kw[i] = eval(c, n->kw[i]->a, s);
        a->kwname[i] = n->kw[i]->name;
    }
}

static jv call_macro(jn_ctx *c, int line, const jmacro *m, const jn_args *a) {
    const jnode *def = m->n;
    jscope *s = js_new(c, m->scope);
    if (a->npos > def->nnames)
        jn_fail(c, JE_RUNTIME, line, "macro '%s' takes not more than %u argument(s)", def->name,
                def->nnames);
    for (uint32_t k = 0; k < a->nkw; k++) {
        uint32_t i = 0;
        while (i < def->nnames && strcmp(def->names[i], a->kwname[k])) i++;
        if (i == def->nnames)
            jn_fail(c, JE_RUNTIME, line, "macro '%s' has no argument '%s'", def->name,
                    a->kwname[k]);
    }
    for (uint32_t i = 0; i < def->nnames; i++) {
        jv v = jv_undef();
        int given = 0;
        if (i < a->npos) v = a->pos[i], given = 1;
        for (uint32_t k = 0; k < a->nkw && !given; k++)
            if (!strcmp(def->names[i], a->kwname[k])) v = a->kw[k], given = 1;
        if (!given && i < def->n && def->v[i]) v = eval(c, def->v[i], s);
        js_set(c, s, def->names[i], v);
    }
    jn_buf out = {0};
    jb_put(c, &out, "", 0);
    if (exec(c, def->b, s, &out) != FLOW_NEXT)
        jn_fail(c, JE_RUNTIME, line, "'break' or 'continue' outside a loop");
    return jb_value(&out);
}

static jv call(jn_ctx *c, const jnode *n, jscope *s) {
    jn_args a;
    if (n->a->k == E_ATTR) {
        jv obj = eval(c, n->a->a, s), out;
        eval_args(c, n, s, &a);
        if (jn_method(c, n->line, obj, n->a->name, &a, &out)) return out;
        if (obj.t == JV_UNDEF)
            jn_fail(c, JE_RUNTIME, n->line, "an undefined value has no attribute '%s'", n->a->name);
        jv f = jn_getattr(c, n->line, obj, n->a->name);
        if (f.t != JV_MACRO)
            jn_fail(c, JE_RUNTIME, n->line, "'%s' object has no method '%s'", jv_type_name(obj),
                    n->a->name);
        return call_macro(c, n->line, f.u.mac, &a);
    }
    jv f = eval(c, n->a, s);
    eval_args(c, n, s, &a);
    if (f.t == JV_FUNC) return jn_call_builtin(c, n->line, (int)f.u.i, &a);
    if (f.t == JV_MACRO) return call_macro(c, n->line, f.u.mac, &a);
    if (f.t == JV_UNDEF)
        jn_fail(c, JE_RUNTIME, n->line, "'%s' is undefined",
                n->a->k == E_NAME ? n->a->name : "callee");
    jn_fail(c, JE_RUNTIME, n->line, "'%s' object is not callable", jv_type_name(f));
}

/* ---- expressions -------------------------------------------------------------------------------
 */

static jv build(jn_ctx *c, const jnode *n, jscope *s) {
    if (n->k == E_DICT) {
        jdict *d = jd_new(c);
        for (uint32_t i = 0; i + 1 < n->n; i += 2)
            jd_set(c, d, eval(c, n->v[i], s), eval(c, n->v[i + 1], s));
        return jv_dict(d, 0);
    }
    jlist *l = jl_new(c, n->n + 1);
    for (uint32_t i = 0; i < n->n; i++) jl_push(c, l, eval(c, n->v[i], s));
    return jv_list(l, n->k == E_TUPLE);
}

static jv eval_inner(jn_ctx *c, const jnode *n, jscope *s) {
    jv v;
    jn_args a;
    switch (n->k) {
    case E_LIT:
        return n->lit;
    case E_NAME:
        return js_get(s, n->name, &v) ? v : global(n->name);
    case E_ATTR:
        return jn_getattr(c, n->line, eval(c, n->a, s), n->name);
    case E_ITEM:
        return jn_getitem(c, n->line, eval(c, n->a, s), eval(c, n->b, s));
    case E_SLICE:
        return slice(c, n, s);
    case E_CALL:
        return call(c, n, s);
    case E_FILTER:
        v = eval(c, n->a, s);
        eval_args(c, n, s, &a);
        return jn_filter(c, n->line, n->name, v, &a, s);
    case E_TEST:
        v = eval(c, n->a, s);
        eval_args(c, n, s, &a);
        return jv_bool(jn_test(c, n->line, n->name, v, &a) != n->neg);
    case E_BIN:
        return binop(c, n->line, n->op, eval(c, n->a, s), eval(c, n->b, s));
    case E_NEG:
    case E_POS:
        v = eval(c, n->a, s);
        if (!jv_is_num(v))
            jn_fail(c, JE_RUNTIME, n->line, "bad operand type for unary %c: '%s'",
                    n->k == E_NEG ? '-' : '+', jv_type_name(v));
        if (n->k == E_POS) return v.t == JV_BOOL ? jv_int(v.u.i) : v;
        if (v.t == JV_FLOAT) return jv_float(-v.u.f);
        return int_op(c, n->line, OP_SUB, 0, v.u.i);
    case E_NOT:
        return jv_bool(!jv_truthy(eval(c, n->a, s)));
    case E_AND:
        v = eval(c, n->a, s);
        return jv_truthy(v) ? eval(c, n->b, s) : v;
    case E_OR:
        v = eval(c, n->a, s);
        return jv_truthy(v) ? v : eval(c, n->b, s);
    case E_COND:
        if (jv_truthy(eval(c, n->b, s))) return eval(c, n->a, s);
        return n->c ? eval(c, n->c, s) : jv_undef();
    case E_LIST:
    case E_TUPLE:
    case E_DICT:
        return build(c, n, s);
    case E_CMP:
        return compare_chain(c, n, s);
    case E_CONCAT:
        return concat_all(c, n, s);
    }
    jn_fail(c, JE_RUNTIME, n->line, "internal: not an expression");
}

static jv eval(jn_ctx *c, const jnode *n, jscope *s) {
    jn_enter(c, n->line);
    jv v = eval_inner(c, n, s);
    jn_leave(c);
    return v;
}

/* ---- statements --------------------------------------------------------------------------------
 */

static void assign(jn_ctx *c, const jnode *n, jscope *s, jv v) {
    if (n->nnames == 1) return js_set(c, s, n->names[0], v);
    if (v.t != JV_LIST || v.u.l->n != n->nnames)
        jn_fail(c, JE_RUNTIME, n->line, "cannot unpack %s into %u names", jv_type_name(v),
                n->nnames);
    for (uint32_t i = 0; i < n->nnames; i++) js_set(c, s, n->names[i], v.u.l->v[i]);
}

static void exec_set(jn_ctx *c, const jnode *n, jscope *s) {
    jv v;
    if (n->a)
        v = eval(c, n->a, s);
    else {
        jn_buf b = {0};
        jb_put(c, &b, "", 0);
        if (exec(c, n->b, s, &b) != FLOW_NEXT)
            jn_fail(c, JE_RUNTIME, n->line, "'break' or 'continue' in a set block");
        v = jb_value(&b);
    }
    if (!n->attr) return assign(c, n, s, v);
    jv ns;
    if (!js_get(s, n->name, &ns) || ns.t != JV_NS)
        jn_fail(c, JE_RUNTIME, n->line, "cannot assign attribute on non-namespace object");
    if (n->attr[0] == '_')
        jn_fail(c, JE_RUNTIME, n->line, "namespace attributes cannot start with '_'");
    jd_set(c, ns.u.d, jv_cstr(n->attr), v);
}

static int exec_for(jn_ctx *c, const jnode *n, jscope *s, jn_buf *out) {
    const jlist *items = jn_iter(c, n->line, eval(c, n->a, s));
    jscope *ls = js_new(c, s);
    if (n->d) { /* for x in xs if cond: the loop runs over the filtered items */
        jlist *f = jl_new(c, items->n + 1);
        for (uint32_t i = 0; i < items->n; i++) {
            jn_step(c, n->line);
            assign(c, n, ls, items->v[i]);
            if (jv_truthy(eval(c, n->d, ls))) jl_push(c, f, items->v[i]);
        }
        items = f;
    }
    jloop *lp = jn_alloc(c, sizeof *lp);
    lp->items = items;
    jv loopv = jv_none();
    loopv.t = JV_LOOP;
    loopv.u.loop = lp;
    for (uint32_t i = 0; i < items->n; i++) {
        jn_step(c, n->line);
        lp->index0 = i;
        assign(c, n, ls, items->v[i]);
        js_set(c, ls, "loop", loopv);
        int r = exec(c, n->b, ls, out);
        if (r == FLOW_BREAK) break;
    }
    if (items->n == 0 && n->c) return exec(c, n->c, s, out);
    return FLOW_NEXT;
}

static int exec_inner(jn_ctx *c, const jnode *n, jscope *s, jn_buf *out) {
    switch (n->k) {
    case S_BODY:
        for (uint32_t i = 0; i < n->n; i++) {
            int r = exec(c, n->v[i], s, out);
            if (r != FLOW_NEXT) return r;
        }
        return FLOW_NEXT;
    case S_TEXT:
        jb_put(c, out, n->lit.u.s.p, n->lit.u.s.n);
        return FLOW_NEXT;
    case S_OUT:
        jv_to_str(c, n->line, out, eval(c, n->a, s));
        return FLOW_NEXT;
    case S_IF:
        if (jv_truthy(eval(c, n->a, s))) return exec(c, n->b, s, out);
        return n->c ? exec(c, n->c, s, out) : FLOW_NEXT;
    case S_FOR:
        return exec_for(c, n, s, out);
    case S_SET:
        exec_set(c, n, s);
        return FLOW_NEXT;
    case S_MACRO: {
        jmacro *m = jn_alloc(c, sizeof *m);
        m->n = n;
        m->scope = s;
        jv v = jv_none();
        v.t = JV_MACRO;
        v.u.mac = m;
        js_set(c, s, n->name, v);
        return FLOW_NEXT;
    }
    case S_BREAK:
        return FLOW_BREAK;
    case S_CONTINUE:
        return FLOW_CONTINUE;
    case S_GEN:
        return exec(c, n->b, s, out);
    }
    jn_fail(c, JE_RUNTIME, n->line, "internal: not a statement");
}

static int exec(jn_ctx *c, const jnode *n, jscope *s, jn_buf *out) {
    jn_enter(c, n->line);
    jn_step(c, n->line);
    int r = exec_inner(c, n, s, out);
    jn_leave(c);
    return r;
}

void jn_render(jn_ctx *c, const jnode *body, jscope *root, jn_buf *out) {
    jb_put(c, out, "", 0);
    if (exec(c, body, root, out) != FLOW_NEXT)
        jn_fail(c, JE_RUNTIME, 0, "'break' or 'continue' outside a loop");
}
