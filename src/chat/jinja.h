/* punctum — a Jinja interpreter for the subset that chat templates use (internal header of
 * src/chat). It renders as transformers does: jinja2's ImmutableSandboxedEnvironment with
 * trim_blocks and lstrip_blocks, Python semantics for values, strings and their methods.
 *
 * Everything a parse or a render allocates lives in one arena, freed at once; errors unwind to
 * the entry point with longjmp (jn_fail), which returns -1 with a one-line message "NAME:LINE:
 * ...". Untrusted input: the source size, the arena, the output, the nesting depth and the
 * number of evaluation steps are all capped. */
#ifndef PT_CHAT_JINJA_H
#define PT_CHAT_JINJA_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

#include "punctum/common.h"

#define JN_MAX_SOURCE ((size_t)1 << 20)  /* template source bytes */
#define JN_MAX_ARENA ((size_t)256 << 20) /* bytes one parse or render may allocate */
#define JN_MAX_OUTPUT ((size_t)32 << 20) /* rendered bytes */
#define JN_MAX_DEPTH 200                 /* nesting of expressions, statements, calls */
#define JN_MAX_STEPS 5000000             /* statements + loop iterations + calls */
#define JN_MAX_MARKS 64                  /* prompt spans tracked in one output */

/* ---- errors and the arena ------------------------------------------------------------------ */

typedef enum { JE_SYNTAX = 1, JE_UNSUPPORTED, JE_RUNTIME, JE_RAISE, JE_LIMIT } jn_errkind;

typedef struct {
    const char *name; /* template name in messages (a file, or file[key]) */
    jmp_buf jmp;
    jn_errkind kind;
    pt_error *e;
    pt_arena arena; /* every value of a rendering, freed by jn_release */
    int depth;
    long steps;
} jn_ctx;

void jn_init(jn_ctx *c, const char *name, pt_error *e);
void jn_release(jn_ctx *c); /* frees the arena */
void *jn_alloc(jn_ctx *c, size_t n);
char *jn_strdup(jn_ctx *c, const char *s, size_t n);
_Noreturn void jn_fail(jn_ctx *c, jn_errkind kind, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void jn_enter(jn_ctx *c, int line); /* depth + step accounting */
static inline void jn_leave(jn_ctx *c) {
    c->depth--;
}
void jn_step(jn_ctx *c, int line);

/* ---- values ------------------------------------------------------------------------------------
 */

typedef enum {
    JV_UNDEF,
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,
    JV_LIST,
    JV_DICT,
    JV_NS,
    JV_FUNC,
    JV_MACRO,
    JV_LOOP
} jv_type;

/* built-in functions (JV_FUNC) */
enum { JF_RAISE, JF_STRFTIME, JF_NAMESPACE, JF_DICT, JF_RANGE, JF_OTHER };

struct jlist;
struct jdict;
struct jnode;
struct jloop;
struct jmacro;

typedef struct jv {
    uint8_t t;
    uint8_t tuple;  /* JV_LIST: a Python tuple */
    int32_t m0, m1; /* JV_STR: bytes [m0, m1) are the prompt's own text (m0 < 0: none) */
    union {
        int64_t i; /* JV_BOOL, JV_INT, JV_FUNC */
        double f;
        struct {
            const char *p;
            uint32_t n;
        } s;
        struct jlist *l;
        struct jdict *d; /* JV_DICT, JV_NS */
        struct jmacro *mac;
        struct jloop *loop;
    } u;
} jv;

typedef struct jlist {
    uint32_t n, cap;
    jv *v;
} jlist;

typedef struct jdict {
    uint32_t n, cap;
    jv *k, *v;
} jdict;

typedef struct jloop {
    const jlist *items;
    int64_t index0;
} jloop;

struct jscope;
typedef struct jmacro {
    const struct jnode *n;
    struct jscope *scope; /* where it was defined */
} jmacro;

jv jv_undef(void);
jv jv_none(void);
jv jv_bool(int b);
jv jv_int(int64_t i);
jv jv_float(double f);
jv jv_str(const char *p, size_t n);
jv jv_cstr(const char *p);
jlist *jl_new(jn_ctx *c, uint32_t cap);
void jl_push(jn_ctx *c, jlist *l, jv v);
jv jv_list(jlist *l, int tuple);
jdict *jd_new(jn_ctx *c);
void jd_set(jn_ctx *c, jdict *d, jv k, jv v); /* insert or overwrite */
int jd_get(const jdict *d, jv k, jv *out);
jv jv_dict(jdict *d, int ns);

int jv_truthy(jv v);
int jv_eq(jv a, jv b);
/* -1, 0, 1; unordered types fail */
int jv_cmp(jn_ctx *c, int line, jv a, jv b);
const char *jv_type_name(jv v);
int jv_is_num(jv v); /* bool, int, float */
double jv_num(jv v);

/* Growable output buffer in the arena, with the prompt spans it holds. */
typedef struct {
    char *p;
    size_t n, cap;
    int32_t marks[2 * JN_MAX_MARKS];
    int n_marks;
} jn_buf;

void jb_put(jn_ctx *c, jn_buf *b, const char *s, size_t n);
void jb_putc(jn_ctx *c, jn_buf *b, char ch);
void jb_printf(jn_ctx *c, jn_buf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* append a string value and its mark */
void jb_put_str(jn_ctx *c, jn_buf *b, jv s);
/* the buffer as a string value (marked with its first span) */
jv jb_value(jn_buf *b);

/* Python str(v) appended to b (as Jinja's output and `~` do; undefined is ""). */
void jv_to_str(jn_ctx *c, int line, jn_buf *b, jv v);
jv jv_stringify(jn_ctx *c, int line, jv v); /* str(v) as a value (strings pass through) */
/* json.dumps(v, ensure_ascii, indent (NULL: none), separators, sort_keys) */
typedef struct {
    int ensure_ascii, sort_keys;
    const char *indent; /* NULL: no indentation */
    size_t indent_n;
    const char *item_sep, *key_sep;
} jn_json_opts;
void jv_to_json(jn_ctx *c, int line, jn_buf *b, jv v, const jn_json_opts *o, int level);

/* UTF-8 code point helpers for Python string indexing */
size_t ju_count(const char *s, size_t n);            /* code points */
size_t ju_offset(const char *s, size_t n, size_t k); /* byte offset of code point k (<= count) */
int ju_is_space(uint32_t cp);                        /* Python str.isspace */
uint32_t ju_get(const char *s, size_t n, size_t *len);

/* ---- the syntax tree ----------------------------------------------------------------------- */

typedef enum {
    /* expressions */
    E_LIT,
    E_NAME,
    E_ATTR,
    E_ITEM,
    E_SLICE,
    E_CALL,
    E_FILTER,
    E_TEST,
    E_BIN,
    E_NEG,
    E_POS,
    E_NOT,
    E_AND,
    E_OR,
    E_COND,
    E_LIST,
    E_TUPLE,
    E_DICT,
    E_CMP,
    E_CONCAT,
    /* statements */
    S_BODY,
    S_TEXT,
    S_OUT,
    S_IF,
    S_FOR,
    S_SET,
    S_MACRO,
    S_BREAK,
    S_CONTINUE,
    S_GEN
} jn_kind;

enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW };
enum { CMP_EQ, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE, CMP_IN, CMP_NOTIN };

typedef struct jnode {
    uint8_t k, op, neg;
    int line;
    const char *name; /* E_NAME, E_ATTR (attribute), E_FILTER, E_TEST, S_SET/S_MACRO names */
    const char *attr; /* S_SET: namespace attribute target */
    struct jnode *a, *b, *c, *d;
    struct jnode **v; /* arguments, items, statements */
    uint32_t n;
    struct jnode **kw; /* keyword arguments: E_LIT nodes whose name is the keyword */
    uint32_t nkw;
    const char **names; /* S_FOR / S_SET targets, S_MACRO parameters */
    uint32_t nnames;
    uint8_t *ops; /* E_CMP */
    jv lit;
} jnode;

/* Parse a template (UTF-8, at most JN_MAX_SOURCE bytes) into its body (S_BODY). */
jnode *jn_parse(jn_ctx *c, const char *src, size_t len);

/* ---- rendering ------------------------------------------------------------------------------- */

typedef struct jscope {
    struct jscope *parent;
    uint32_t n, cap;
    const char **names;
    jv *vals;
} jscope;

jscope *js_new(jn_ctx *c, jscope *parent);
void js_set(jn_ctx *c, jscope *s, const char *name, jv v);
int js_get(const jscope *s, const char *name, jv *out);

/* Render body with the variables of root into out. */
void jn_render(jn_ctx *c, const jnode *body, jscope *root, jn_buf *out);

/* builtins (jinja_builtins.c): names known at parse time, applied at run time */
int jn_known_filter(const char *name);
int jn_known_test(const char *name);
int jn_known_method(const char *name);
/* Evaluated arguments of a call: positional then keyword (names[i] for kw[i]). */
typedef struct {
    jv *pos;
    uint32_t npos;
    jv *kw;
    const char **kwname;
    uint32_t nkw;
} jn_args;
jv jn_filter(jn_ctx *c, int line, const char *name, jv v, const jn_args *a, jscope *s);
int jn_test(jn_ctx *c, int line, const char *name, jv v, const jn_args *a);
/* obj.name(args): 1 and *out when obj has that method, else 0 */
int jn_method(jn_ctx *c, int line, jv obj, const char *name, const jn_args *a, jv *out);
jv jn_call_builtin(jn_ctx *c, int line, int fn, const jn_args *a);
/* Attribute / item lookup as Jinja's sandboxed getattr / getitem (undefined when absent). */
jv jn_getattr(jn_ctx *c, int line, jv obj, const char *name);
jv jn_getitem(jn_ctx *c, int line, jv obj, jv key);
/* Iterate: the items of v as a list (strings: chars, dicts: keys, undefined: empty). */
const jlist *jn_iter(jn_ctx *c, int line, jv v);
int64_t jn_length(jn_ctx *c, int line, jv v);
/* Python string methods used by filters too */
jv js_strip(jn_ctx *c, jv s, jv chars, int left, int right);
jv js_upper_lower(jn_ctx *c, int line, jv s, int upper);
jv js_replace(jn_ctx *c, jv s, jv old, jv rep, int64_t count);

#endif
