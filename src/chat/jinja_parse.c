/* punctum — Jinja interpreter: the parser (jinja2's grammar and precedence) from tokens to the
 * syntax tree. Tags, filters, tests and methods outside the supported subset are refused here,
 * naming the construct and its line, so that a template either renders as transformers renders
 * it or is rejected before anything runs. */
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_lex.h"

typedef struct {
    jn_ctx *c;
    jn_toks t;
    size_t i;
} parser;

static jn_tok *cur(parser *P) {
    return &P->t.v[P->i];
}
static jn_tok *peek(parser *P, size_t k) {
    size_t j = P->i + k;
    return &P->t.v[j < P->t.n ? j : P->t.n - 1];
}
static void next(parser *P) {
    if (P->i + 1 < P->t.n) P->i++;
}

static int is_op(const jn_tok *t, const char *op) {
    return t->k == JT_OP && t->n == strlen(op) && !memcmp(t->p, op, t->n);
}
static int is_name(const jn_tok *t, const char *name) {
    return t->k == JT_NAME && t->n == strlen(name) && !memcmp(t->p, name, t->n);
}
static int skip_op(parser *P, const char *op) {
    if (!is_op(cur(P), op)) return 0;
    next(P);
    return 1;
}
static int skip_name(parser *P, const char *name) {
    if (!is_name(cur(P), name)) return 0;
    next(P);
    return 1;
}

static _Noreturn void unexpected(parser *P, const char *want) {
    jn_tok *t = cur(P);
    if (t->k == JT_EOF)
        jn_fail(P->c, JE_SYNTAX, t->line, "unexpected end of template, expected %s", want);
    jn_fail(P->c, JE_SYNTAX, t->line, "unexpected '%.*s', expected %s",
            (int)(t->n > 40 ? 40 : t->n), t->k == JT_STRING ? "string" : t->p, want);
}

static void expect_op(parser *P, const char *op) {
    if (!skip_op(P, op)) unexpected(P, op);
}

static const char *take_name(parser *P) {
    jn_tok *t = cur(P);
    if (t->k != JT_NAME) unexpected(P, "a name");
    next(P);
    return jn_strdup(P->c, t->p, t->n);
}

static jnode *node(parser *P, int k, int line) {
    jnode *n = jn_alloc(P->c, sizeof *n);
    n->k = (uint8_t)k;
    n->line = line;
    return n;
}

/* growable node lists */
typedef struct {
    jnode **v;
    uint32_t n, cap;
} nlist;

static void nl_push(parser *P, nlist *l, jnode *x) {
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 4;
        jnode **v = jn_alloc(P->c, cap * sizeof *v);
        if (l->n) memcpy(v, l->v, l->n * sizeof *v);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = x;
}

static jnode *parse_expr(parser *P, int with_cond);
static jnode *parse_tuple(parser *P, int with_cond, const char *extra_end);
static jnode *parse_unary(parser *P, int with_filter);
static jnode *parse_primary(parser *P);
static jnode *parse_postfix(parser *P, jnode *n);

/* ---- expressions --------------------------------------------------------------------------- */

/* (args, kw=...) after "(" */
static void parse_args(parser *P, jnode *n) {
    nlist args = {0}, kw = {0};
    expect_op(P, "(");
    while (!is_op(cur(P), ")")) {
        if (args.n || kw.n) expect_op(P, ",");
        if (is_op(cur(P), ")")) break;
        if (is_op(cur(P), "*") || is_op(cur(P), "**"))
            jn_fail(P->c, JE_UNSUPPORTED, cur(P)->line, "unsupported: *args / **kwargs in a call");
        if (cur(P)->k == JT_NAME && is_op(peek(P, 1), "=")) {
            int line = cur(P)->line;
            const char *name = take_name(P);
            next(P);
            jnode *k = node(P, E_LIT, line);
            k->name = name;
            k->a = parse_expr(P, 1);
            nl_push(P, &kw, k);
        } else {
            if (kw.n)
                jn_fail(P->c, JE_SYNTAX, cur(P)->line,
                        "positional argument after keyword argument");
            nl_push(P, &args, parse_expr(P, 1));
        }
    }
    next(P);
    n->v = args.v;
    n->n = args.n;
    n->kw = kw.v;
    n->nkw = kw.n;
}

static const char *dotted_name(parser *P) {
    const char *name = take_name(P);
    if (is_op(cur(P), "."))
        jn_fail(P->c, JE_UNSUPPORTED, cur(P)->line, "unsupported: dotted filter or test name '%s.'",
                name);
    return name;
}

static jnode *parse_filter(parser *P, jnode *operand) {
    int line = cur(P)->line;
    jnode *f = node(P, E_FILTER, line);
    f->a = operand;
    f->name = dotted_name(P);
    if (!jn_known_filter(f->name))
        jn_fail(P->c, JE_UNSUPPORTED, line, "unsupported filter '%s'", f->name);
    if (is_op(cur(P), "(")) parse_args(P, f);
    return f;
}

static jnode *parse_test(parser *P, jnode *operand) {
    int line = cur(P)->line;
    jnode *t = node(P, E_TEST, line);
    t->a = operand;
    t->neg = (uint8_t)skip_name(P, "not");
    t->name = dotted_name(P);
    if (!jn_known_test(t->name))
        jn_fail(P->c, JE_UNSUPPORTED, line, "unsupported test '%s'", t->name);
    jn_tok *k = cur(P);
    if (is_op(k, "(")) {
        parse_args(P, t);
    } else if ((k->k == JT_NAME || k->k == JT_STRING || k->k == JT_INT || k->k == JT_FLOAT ||
                is_op(k, "[") || is_op(k, "{")) &&
               !is_name(k, "else") && !is_name(k, "or") && !is_name(k, "and")) {
        if (is_name(k, "is"))
            jn_fail(P->c, JE_SYNTAX, k->line, "you cannot chain multiple tests with is");
        jnode *arg = parse_postfix(P, parse_primary(P));
        t->v = jn_alloc(P->c, sizeof *t->v);
        t->v[0] = arg;
        t->n = 1;
    }
    return t;
}

static jnode *parse_filter_expr(parser *P, jnode *n) {
    for (;;) {
        if (skip_op(P, "|"))
            n = parse_filter(P, n);
        else if (skip_name(P, "is"))
            n = parse_test(P, n);
        else if (is_op(cur(P), "(")) {
            jnode *call = node(P, E_CALL, cur(P)->line);
            call->a = n;
            parse_args(P, call);
            n = call;
        } else
            return n;
    }
}

/* inside [ ]: an index or a slice */
static jnode *parse_subscribed(parser *P) {
    int line = cur(P)->line;
    jnode *parts[3] = {NULL, NULL, NULL};
    if (!is_op(cur(P), ":")) {
        jnode *e = parse_expr(P, 1);
        if (!is_op(cur(P), ":")) return e;
        parts[0] = e;
    }
    next(P);
    if (!is_op(cur(P), "]") && !is_op(cur(P), ",") && !is_op(cur(P), ":"))
        parts[1] = parse_expr(P, 1);
    if (skip_op(P, ":") && !is_op(cur(P), "]") && !is_op(cur(P), ",")) parts[2] = parse_expr(P, 1);
    jnode *s = node(P, E_SLICE, line);
    s->b = parts[0];
    s->c = parts[1];
    s->d = parts[2];
    return s;
}

static jnode *parse_postfix(parser *P, jnode *n) {
    for (;;) {
        int line = cur(P)->line;
        if (skip_op(P, ".")) {
            jn_tok *t = cur(P);
            jnode *x;
            if (t->k == JT_NAME) {
                x = node(P, E_ATTR, line);
                x->name = take_name(P);
            } else if (t->k == JT_INT) {
                x = node(P, E_ITEM, line);
                x->b = node(P, E_LIT, line);
                x->b->lit = jv_int(t->i);
                next(P);
            } else
                unexpected(P, "an attribute name");
            x->a = n;
            n = x;
        } else if (skip_op(P, "[")) {
            jnode *idx = parse_subscribed(P);
            if (is_op(cur(P), ","))
                jn_fail(P->c, JE_UNSUPPORTED, line, "unsupported: tuple subscript");
            expect_op(P, "]");
            if (idx->k == E_SLICE) {
                idx->a = n;
                n = idx;
            } else {
                jnode *x = node(P, E_ITEM, line);
                x->a = n;
                x->b = idx;
                n = x;
            }
        } else if (is_op(cur(P), "(")) {
            jnode *call = node(P, E_CALL, line);
            call->a = n;
            if (n->k == E_ATTR && !jn_known_method(n->name))
                jn_fail(P->c, JE_UNSUPPORTED, line, "unsupported method '%s'", n->name);
            parse_args(P, call);
            n = call;
        } else
            return n;
    }
}

static jnode *literal(parser *P, jv v, int line) {
    jnode *n = node(P, E_LIT, line);
    n->lit = v;
    return n;
}

static jnode *parse_seq_literal(parser *P, int kind, const char *close) {
    jnode *n = node(P, kind, cur(P)->line);
    nlist items = {0};
    next(P);
    while (!is_op(cur(P), close)) {
        if (items.n) expect_op(P, ",");
        if (is_op(cur(P), close)) break;
        nl_push(P, &items, parse_expr(P, 1));
        if (kind == E_DICT) {
            expect_op(P, ":");
            nl_push(P, &items, parse_expr(P, 1));
        }
    }
    next(P);
    n->v = items.v;
    n->n = items.n;
    return n;
}

static jnode *parse_primary(parser *P) {
    jn_tok *t = cur(P);
    int line = t->line;
    if (t->k == JT_NAME) {
        next(P);
        if (is_name(t, "true") || is_name(t, "True")) return literal(P, jv_bool(1), line);
        if (is_name(t, "false") || is_name(t, "False")) return literal(P, jv_bool(0), line);
        if (is_name(t, "none") || is_name(t, "None")) return literal(P, jv_none(), line);
        jnode *n = node(P, E_NAME, line);
        n->name = jn_strdup(P->c, t->p, t->n);
        return n;
    }
    if (t->k == JT_STRING) { /* adjacent literals concatenate */
        jn_buf b = {0};
        jb_put(P->c, &b, "", 0);
        while (cur(P)->k == JT_STRING) {
            jb_put(P->c, &b, cur(P)->p, cur(P)->n);
            next(P);
        }
        return literal(P, jv_str(b.p, b.n), line);
    }
    if (t->k == JT_INT || t->k == JT_FLOAT) {
        next(P);
        return literal(P, t->k == JT_INT ? jv_int(t->i) : jv_float(t->f), line);
    }
    if (skip_op(P, "(")) {
        jnode *n = parse_tuple(P, 1, NULL);
        if (n == NULL) n = node(P, E_TUPLE, line); /* () */
        expect_op(P, ")");
        return n;
    }
    if (is_op(t, "[")) return parse_seq_literal(P, E_LIST, "]");
    if (is_op(t, "{")) return parse_seq_literal(P, E_DICT, "}");
    unexpected(P, "an expression");
}

static jnode *parse_unary(parser *P, int with_filter) {
    int line = cur(P)->line;
    jnode *n;
    jn_enter(P->c, line);
    if (is_op(cur(P), "-") || is_op(cur(P), "+")) {
        int neg = is_op(cur(P), "-");
        next(P);
        n = node(P, neg ? E_NEG : E_POS, line);
        n->a = parse_unary(P, 0);
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    if (with_filter) n = parse_filter_expr(P, n);
    jn_leave(P->c);
    return n;
}

static jnode *binary(parser *P, int op, jnode *a, jnode *b, int line) {
    jnode *n = node(P, E_BIN, line);
    n->op = (uint8_t)op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *parse_pow(parser *P) {
    jnode *n = parse_unary(P, 1);
    while (is_op(cur(P), "**")) {
        int line = cur(P)->line;
        next(P);
        n = binary(P, OP_POW, n, parse_unary(P, 1), line);
    }
    return n;
}

static jnode *parse_math2(parser *P) {
    jnode *n = parse_pow(P);
    for (;;) {
        int line = cur(P)->line, op;
        if (is_op(cur(P), "*"))
            op = OP_MUL;
        else if (is_op(cur(P), "/"))
            op = OP_DIV;
        else if (is_op(cur(P), "//"))
            op = OP_FLOORDIV;
        else if (is_op(cur(P), "%"))
            op = OP_MOD;
        else
            return n;
        next(P);
        n = binary(P, op, n, parse_pow(P), line);
    }
}

static jnode *parse_concat(parser *P) {
    jnode *first = parse_math2(P);
    if (!is_op(cur(P), "~")) return first;
    jnode *n = node(P, E_CONCAT, cur(P)->line);
    nlist l = {0};
    nl_push(P, &l, first);
    while (skip_op(P, "~")) nl_push(P, &l, parse_math2(P));
    n->v = l.v;
    n->n = l.n;
    return n;
}

static jnode *parse_math1(parser *P) {
    jnode *n = parse_concat(P);
    for (;;) {
        int line = cur(P)->line, op;
        if (is_op(cur(P), "+"))
            op = OP_ADD;
        else if (is_op(cur(P), "-"))
            op = OP_SUB;
        else
            return n;
        next(P);
        n = binary(P, op, n, parse_concat(P), line);
    }
}

static int cmp_op(parser *P) {
    static const char *ops[] = {"==", "!=", "<", "<=", ">", ">="};
    static const int codes[] = {CMP_EQ, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE};
    for (int k = 0; k < 6; k++)
        if (skip_op(P, ops[k])) return codes[k];
    if (skip_name(P, "in")) return CMP_IN;
    if (is_name(cur(P), "not") && is_name(peek(P, 1), "in")) {
        next(P);
        next(P);
        return CMP_NOTIN;
    }
    return -1;
}

static jnode *parse_compare(parser *P) {
    int line = cur(P)->line;
    jnode *first = parse_math1(P);
    int op = cmp_op(P);
    if (op < 0) return first;
    jnode *n = node(P, E_CMP, line);
    nlist l = {0};
    uint8_t ops[64];
    uint32_t nops = 0;
    n->a = first;
    while (op >= 0) {
        if (nops == 64) jn_fail(P->c, JE_LIMIT, line, "too many chained comparisons");
        ops[nops++] = (uint8_t)op;
        nl_push(P, &l, parse_math1(P));
        op = cmp_op(P);
    }
    n->ops = jn_alloc(P->c, nops);
    memcpy(n->ops, ops, nops);
    n->v = l.v;
    n->n = l.n;
    return n;
}

static jnode *parse_not(parser *P) {
    int line = cur(P)->line;
    if (!skip_name(P, "not")) return parse_compare(P);
    jn_enter(P->c, line);
    jnode *n = node(P, E_NOT, line);
    n->a = parse_not(P);
    jn_leave(P->c);
    return n;
}

static jnode *parse_and(parser *P) {
    jnode *n = parse_not(P);
    while (is_name(cur(P), "and")) {
        jnode *x = node(P, E_AND, cur(P)->line);
        next(P);
        x->a = n;
        x->b = parse_not(P);
        n = x;
    }
    return n;
}

static jnode *parse_or(parser *P) {
    jnode *n = parse_and(P);
    while (is_name(cur(P), "or")) {
        jnode *x = node(P, E_OR, cur(P)->line);
        next(P);
        x->a = n;
        x->b = parse_and(P);
        n = x;
    }
    return n;
}

static jnode *parse_condexpr(parser *P) {
    jnode *n = parse_or(P);
    while (is_name(cur(P), "if")) {
        int line = cur(P)->line;
        next(P);
        jn_enter(P->c, line);
        jnode *x = node(P, E_COND, line);
        x->a = n;
        x->b = parse_or(P);
        if (skip_name(P, "else")) x->c = parse_condexpr(P);
        jn_leave(P->c);
        n = x;
    }
    return n;
}

static jnode *parse_expr(parser *P, int with_cond) {
    jn_enter(P->c, cur(P)->line);
    jnode *n = with_cond ? parse_condexpr(P) : parse_or(P);
    jn_leave(P->c);
    return n;
}

static int tuple_end(parser *P, const char *extra_end) {
    jn_tok *t = cur(P);
    return t->k == JT_VAR_END || t->k == JT_BLOCK_END || is_op(t, ")") || t->k == JT_EOF ||
           (extra_end && is_name(t, extra_end));
}

/* a, b, c (a tuple when there is a comma); NULL for an empty "()" */
static jnode *parse_tuple(parser *P, int with_cond, const char *extra_end) {
    int line = cur(P)->line, comma = 0;
    nlist l = {0};
    while (!tuple_end(P, extra_end)) {
        if (l.n) {
            if (!skip_op(P, ",")) break;
            comma = 1;
            if (tuple_end(P, extra_end)) break;
        }
        nl_push(P, &l, parse_expr(P, with_cond));
    }
    if (!comma && l.n == 1) return l.v[0];
    if (!l.n && !is_op(cur(P), ")")) unexpected(P, "an expression");
    if (!l.n) return NULL;
    jnode *n = node(P, E_TUPLE, line);
    n->v = l.v;
    n->n = l.n;
    return n;
}

/* ---- statements ------------------------------------------------------------------------------ */

static jnode *parse_body(parser *P, const char *const *ends);

static void expect_block_end(parser *P) {
    if (cur(P)->k != JT_BLOCK_END) unexpected(P, "end of statement block");
    next(P);
}

/* a, b (names) as assignment targets */
static void parse_targets(parser *P, jnode *n, const char *stop) {
    const char *names[16];
    uint32_t k = 0;
    int paren = skip_op(P, "(");
    do {
        if (k == 16)
            jn_fail(P->c, JE_UNSUPPORTED, cur(P)->line, "unsupported: more than 16 targets");
        names[k++] = take_name(P);
    } while (skip_op(P, ",") && !(stop && is_name(cur(P), stop)));
    if (paren) expect_op(P, ")");
    n->names = jn_alloc(P->c, k * sizeof *n->names);
    memcpy(n->names, names, k * sizeof *names);
    n->nnames = k;
}

static jnode *parse_if(parser *P, int line) {
    jnode *n = node(P, S_IF, line);
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    n->a = parse_tuple(P, 0, NULL);
    if (!n->a) unexpected(P, "a condition");
    expect_block_end(P);
    n->b = parse_body(P, ends);
    int eline = cur(P)->line;
    if (skip_name(P, "elif")) {
        n->c = parse_if(P, eline);
        return n;
    }
    if (skip_name(P, "else")) {
        static const char *const end[] = {"endif", NULL};
        expect_block_end(P);
        n->c = parse_body(P, end);
    }
    if (!skip_name(P, "endif")) unexpected(P, "endif");
    expect_block_end(P);
    return n;
}

static jnode *parse_for(parser *P, int line) {
    jnode *n = node(P, S_FOR, line);
    static const char *const ends[] = {"else", "endfor", NULL};
    parse_targets(P, n, "in");
    if (!skip_name(P, "in")) unexpected(P, "'in'");
    n->a = parse_tuple(P, 0, "recursive");
    if (!n->a) unexpected(P, "an expression");
    if (is_name(cur(P), "recursive"))
        jn_fail(P->c, JE_UNSUPPORTED, line, "unsupported: recursive for loops");
    if (skip_name(P, "if")) n->d = parse_expr(P, 1);
    expect_block_end(P);
    n->b = parse_body(P, ends);
    if (skip_name(P, "else")) {
        static const char *const end[] = {"endfor", NULL};
        expect_block_end(P);
        n->c = parse_body(P, end);
    }
    if (!skip_name(P, "endfor")) unexpected(P, "endfor");
    expect_block_end(P);
    return n;
}

static jnode *parse_set(parser *P, int line) {
    jnode *n = node(P, S_SET, line);
    if (cur(P)->k == JT_NAME && is_op(peek(P, 1), ".")) { /* ns.attr = ... */
        n->name = take_name(P);
        next(P);
        n->attr = take_name(P);
    } else {
        parse_targets(P, n, NULL);
        n->name = n->names[0];
    }
    if (skip_op(P, "=")) {
        n->a = parse_tuple(P, 1, NULL);
        if (!n->a) unexpected(P, "an expression");
        expect_block_end(P);
        return n;
    }
    if (n->attr || n->nnames != 1) unexpected(P, "'='");
    if (is_op(cur(P), "|")) jn_fail(P->c, JE_UNSUPPORTED, line, "unsupported: filtered set block");
    static const char *const end[] = {"endset", NULL};
    expect_block_end(P);
    n->b = parse_body(P, end);
    next(P);
    expect_block_end(P);
    return n;
}

static jnode *parse_macro(parser *P, int line) {
    jnode *n = node(P, S_MACRO, line);
    nlist dflt = {0};
    const char *names[64];
    uint32_t k = 0;
    n->name = take_name(P);
    expect_op(P, "(");
    while (!is_op(cur(P), ")")) {
        if (k) expect_op(P, ",");
        if (is_op(cur(P), ")")) break;
        if (k == 64)
            jn_fail(P->c, JE_UNSUPPORTED, line, "unsupported: more than 64 macro parameters");
        names[k++] = take_name(P);
        if (skip_op(P, "="))
            nl_push(P, &dflt, parse_expr(P, 1));
        else if (dflt.n)
            jn_fail(P->c, JE_SYNTAX, line, "non-default argument follows default argument");
        else
            nl_push(P, &dflt, NULL);
    }
    next(P);
    n->names = jn_alloc(P->c, (k ? k : 1) * sizeof *n->names);
    memcpy(n->names, names, k * sizeof *names);
    n->nnames = k;
    n->v = dflt.v; /* default per parameter (NULL: none) */
    n->n = dflt.n;
    static const char *const end[] = {"endmacro", NULL};
    expect_block_end(P);
    n->b = parse_body(P, end);
    next(P);
    if (cur(P)->k == JT_NAME) next(P); /* {% endmacro name %} */
    expect_block_end(P);
    return n;
}

static jnode *parse_statement(parser *P) {
    jn_tok *t = cur(P);
    int line = t->line;
    if (t->k != JT_NAME) unexpected(P, "a tag name");
    const char *tag = take_name(P);
    jn_enter(P->c, line);
    jnode *n;
    if (!strcmp(tag, "if"))
        n = parse_if(P, line);
    else if (!strcmp(tag, "for"))
        n = parse_for(P, line);
    else if (!strcmp(tag, "set"))
        n = parse_set(P, line);
    else if (!strcmp(tag, "macro"))
        n = parse_macro(P, line);
    else if (!strcmp(tag, "break") || !strcmp(tag, "continue")) {
        n = node(P, tag[0] == 'b' ? S_BREAK : S_CONTINUE, line);
        expect_block_end(P);
    } else if (!strcmp(tag, "generation")) { /* transformers' AssistantTracker: renders its body */
        static const char *const end[] = {"endgeneration", NULL};
        n = node(P, S_GEN, line);
        expect_block_end(P);
        n->b = parse_body(P, end);
        next(P);
        expect_block_end(P);
    } else {
        static const char *const known[] = {"call", "filter",     "include", "import",
                                            "from", "extends",    "block",   "with",
                                            "do",   "autoescape", "print",   "trans"};
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            if (!strcmp(tag, known[k]))
                jn_fail(P->c, JE_UNSUPPORTED, line, "unsupported tag '%s'", tag);
        jn_fail(P->c, JE_SYNTAX, line, "unknown tag '%s'", tag);
    }
    jn_leave(P->c);
    return n;
}

static int at_end(parser *P, const char *const *ends) {
    if (!ends) return 0;
    for (int k = 0; ends[k]; k++)
        if (is_name(cur(P), ends[k])) return 1;
    return 0;
}

/* statements up to a {% <one of ends> ...: stops with that name as the current token */
static jnode *parse_body(parser *P, const char *const *ends) {
    jnode *body = node(P, S_BODY, cur(P)->line);
    nlist l = {0};
    for (;;) {
        jn_tok *t = cur(P);
        if (t->k == JT_EOF) {
            if (ends) { /* name the closing tag: the last of ends */
                const char *last = ends[0];
                for (int k = 1; ends[k]; k++) last = ends[k];
                jn_fail(P->c, JE_SYNTAX, t->line, "unexpected end of template, expected '%s'",
                        last);
            }
            break;
        }
        if (t->k == JT_DATA) {
            jnode *x = node(P, S_TEXT, t->line);
            x->lit = jv_str(t->p, t->n);
            nl_push(P, &l, x);
            next(P);
        } else if (t->k == JT_VAR_BEGIN) {
            jnode *x = node(P, S_OUT, t->line);
            next(P);
            x->a = parse_tuple(P, 1, NULL);
            if (!x->a) unexpected(P, "an expression");
            if (cur(P)->k != JT_VAR_END) unexpected(P, "end of print statement");
            next(P);
            nl_push(P, &l, x);
        } else if (t->k == JT_BLOCK_BEGIN) {
            next(P);
            if (at_end(P, ends)) break;
            nl_push(P, &l, parse_statement(P));
        } else {
            unexpected(P, "template data or a tag");
        }
    }
    body->v = l.v;
    body->n = l.n;
    return body;
}

jnode *jn_parse(jn_ctx *c, const char *src, size_t len) {
    parser P = {c, {0}, 0};
    if (len > JN_MAX_SOURCE)
        jn_fail(c, JE_LIMIT, 0, "template too large (%zu bytes, at most %zu)", len, JN_MAX_SOURCE);
    jn_lex(c, src, len, &P.t);
    return parse_body(&P, NULL);
}
