/* punctum — Hugging Face tokenizer.json: loading, validation, encoding and single-token decoding,
 * equal to the `tokenizers` library (see tok_internal.h for the pipeline). Only BPE models and
 * the components listed in SUPPORTED below are implemented; anything else is refused at load
 * with a message naming the component. */
#include "tok_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TK_MAX_FILE ((size_t)256 << 20)
#define TK_MAX_IDS (1 << 24)

/* ------------------------------------------------------------------------------------------ */
/* components                                                                                   */

enum { N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWER, N_PREPEND, N_REPLACE, N_STRIP };
typedef struct {
    int kind;
    char *str; /* Prepend: text; Replace: content */
    size_t len;
    tk_regex re; /* Replace */
    int left, right; /* Strip */
} tk_norm;

enum { P_BYTELEVEL, P_SPLIT, P_DIGITS, P_METASPACE };
enum { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };
enum { PS_ALWAYS, PS_FIRST, PS_NEVER };
typedef struct {
    int kind;
    int add_prefix_space, use_regex; /* ByteLevel */
    tk_regex re;                     /* ByteLevel (GPT-2 regex) / Split */
    int behavior, invert;            /* Split */
    int individual;                  /* Digits */
    uint32_t repl;                   /* Metaspace */
    char repl_s[4];
    int repl_len, scheme, split;
} tk_pre;

enum { PP_TEMPLATE, PP_BYTELEVEL };
typedef struct {
    int is_seq;         /* 1: the input sequence ($A) */
    int32_t *ids;       /* special token ids */
    char **tokens;      /* their token strings */
    int n;
} tk_tpl_item;
typedef struct {
    int kind;
    int trim_offsets, add_prefix_space; /* ByteLevel */
    tk_tpl_item *items;                 /* Template (single) */
    int n_items;
} tk_post;

enum { D_BYTELEVEL, D_METASPACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_REPLACE };
typedef struct {
    int kind;
    uint32_t repl; /* Metaspace */
    int scheme;
    uint32_t content; /* Strip */
    size_t start, stop;
    tk_regex re; /* Replace */
    char *str;
    size_t len;
} tk_dec;

typedef struct {
    int32_t id;
    char *content;
    size_t len;
    int special, lstrip, rstrip, single_word, normalized;
} tk_added;

/* byte trie over added-token patterns (leftmost-longest matching) */
typedef struct {
    int32_t child, sibling; /* node indices, -1 none */
    int32_t term;           /* index into tokenizer.added, -1 none */
    unsigned char byte;
} tk_node;
typedef struct {
    tk_node *nodes;
    size_t n, cap;
    uint8_t first[256]; /* bytes that can start a pattern */
    int empty;
} tk_trie;

struct pt_tokenizer {
    char *name;
    tk_bpe bpe;
    int32_t n_ids; /* max id + 1 over vocab and added tokens */
    tk_added *added;
    size_t n_added;
    int32_t *added_of_id; /* id -> index in added, or -1 */
    tk_trie trie_raw, trie_norm;
    tk_norm *norm;
    size_t n_norm;
    tk_pre *pre;
    size_t n_pre;
    tk_post *post;
    size_t n_post;
    tk_dec *dec;
    size_t n_dec;
    int has_decoder;
    int unk_missing; /* unk_token set but not in the vocabulary */
    char *unk_name;
    /* per id: decoded piece (pool offsets) and leading/trailing space chars of the token string */
    char *piece_pool;
    uint32_t *piece_off;
    uint16_t *lead, *trail;
};

/* ------------------------------------------------------------------------------------------ */
/* byte-level alphabet: printable bytes map to themselves, the others to U+0100 + n            */

static inline uint32_t byte_to_cp(unsigned b) {
    if (b <= 0x20) return 256 + b;
    if (b >= 0x7F && b <= 0xA0) return 289 + (b - 0x7F);
    if (b == 0xAD) return 323;
    return b;
}

static inline int cp_to_byte(uint32_t c) {
    if (c < 256) return (c <= 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD) ? -1 : (int)c;
    if (c <= 288) return (int)(c - 256);
    if (c <= 322) return (int)(0x7F + c - 289);
    if (c == 323) return 0xAD;
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* JSON helpers                                                                                 */

typedef struct {
    const char *name;
    pt_error *e;
} lctx;

static int jbool(lctx *L, json_t *o, const char *key, int def, int *out, const char *what) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) return pt_fail(L->e, "%s: %s.%s must be a boolean", L->name, what, key);
    *out = json_is_true(v);
    return 0;
}

/* string field; *out points into the JSON (valid while it lives), NULL if absent/null */
static int jstr(lctx *L, json_t *o, const char *key, int required, const char **out, size_t *len,
                const char *what) {
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (len) *len = 0;
    if (!v || json_is_null(v)) {
        if (required) return pt_fail(L->e, "%s: %s.%s is missing", L->name, what, key);
        return 0;
    }
    if (!json_is_string(v)) return pt_fail(L->e, "%s: %s.%s must be a string", L->name, what, key);
    *out = json_string_value(v);
    if (len) *len = json_string_length(v);
    return 0;
}

static char *dupn(const char *s, size_t n) {
    char *d = pt_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* a one-char string field (Metaspace replacement, Strip content) */
static int jchar(lctx *L, json_t *o, const char *key, uint32_t def, uint32_t *out, const char *what) {
    const char *s;
    size_t n;
    if (jstr(L, o, key, 0, &s, &n, what)) return -1;
    if (!s) {
        *out = def;
        return 0;
    }
    uint32_t cp;
    int l = tk_utf8_decode((const unsigned char *)s, n, &cp);
    if (!l || (size_t)l != n)
        return pt_fail(L->e, "%s: %s.%s must be a single character", L->name, what, key);
    *out = cp;
    return 0;
}

static int jtype(lctx *L, json_t *o, const char *what, const char **type) {
    if (!json_is_object(o)) return pt_fail(L->e, "%s: %s must be an object", L->name, what);
    json_t *t = json_object_get(o, "type");
    if (!json_is_string(t)) return pt_fail(L->e, "%s: %s has no \"type\"", L->name, what);
    *type = json_string_value(t);
    return 0;
}

/* {"String": s} or {"Regex": r} */
static int jpattern(lctx *L, json_t *o, tk_regex *re, const char *what) {
    json_t *p = json_object_get(o, "pattern");
    if (!json_is_object(p)) return pt_fail(L->e, "%s: %s.pattern must be an object", L->name, what);
    json_t *s = json_object_get(p, "String"), *r = json_object_get(p, "Regex");
    if ((s && r) || (!s && !r))
        return pt_fail(L->e, "%s: %s.pattern must have one of \"String\" or \"Regex\"", L->name, what);
    json_t *v = s ? s : r;
    if (!json_is_string(v)) return pt_fail(L->e, "%s: %s.pattern value must be a string", L->name, what);
    if (json_string_length(v) == 0) return pt_fail(L->e, "%s: %s.pattern is empty", L->name, what);
    if (tk_regex_compile(re, json_string_value(v), json_string_length(v), s != NULL, L->e))
        return pt_fail_prefix(L->e, "%s: %s.pattern", L->name, what);
    return 0;
}

static int jscheme(lctx *L, json_t *o, int *scheme, const char *what) {
    const char *s;
    if (jstr(L, o, "prepend_scheme", 0, &s, NULL, what)) return -1;
    json_t *aps = json_object_get(o, "add_prefix_space");
    if (aps && !json_is_null(aps) && !json_is_boolean(aps))
        return pt_fail(L->e, "%s: %s.add_prefix_space must be a boolean", L->name, what);
    *scheme = PS_ALWAYS; /* tokenizers' default, also when only add_prefix_space is given */
    if (s) {
        if (!strcmp(s, "always")) *scheme = PS_ALWAYS;
        else if (!strcmp(s, "first")) *scheme = PS_FIRST;
        else if (!strcmp(s, "never")) *scheme = PS_NEVER;
        else return pt_fail(L->e, "%s: %s.prepend_scheme '%s' is not supported", L->name, what, s);
    }
    if (json_is_false(aps) && *scheme != PS_NEVER)
        return pt_fail(L->e, "%s: %s: add_prefix_space false does not match prepend_scheme '%s'",
                       L->name, what, s ? s : "always");
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* normalizers                                                                                  */

static int load_normalizer(lctx *L, pt_tokenizer *t, json_t *o) {
    const char *type = NULL;
    if (jtype(L, o, "normalizer", &type)) return -1;
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(o, "normalizers");
        if (!json_is_array(a)) return pt_fail(L->e, "%s: normalizer Sequence needs a \"normalizers\" list", L->name);
        size_t i;
        json_t *x;
        json_array_foreach(a, i, x) if (load_normalizer(L, t, x)) return -1;
        return 0;
    }
    tk_norm n;
    memset(&n, 0, sizeof n);
    if (!strcmp(type, "NFC")) n.kind = N_NFC;
    else if (!strcmp(type, "NFD")) n.kind = N_NFD;
    else if (!strcmp(type, "NFKC")) n.kind = N_NFKC;
    else if (!strcmp(type, "NFKD")) n.kind = N_NFKD;
    else if (!strcmp(type, "Lowercase")) n.kind = N_LOWER;
    else if (!strcmp(type, "Prepend")) {
        const char *s;
        size_t len;
        if (jstr(L, o, "prepend", 1, &s, &len, "normalizer Prepend")) return -1;
        n.kind = N_PREPEND;
        n.str = dupn(s, len);
        n.len = len;
    } else if (!strcmp(type, "Replace")) {
        const char *s;
        size_t len;
        if (jstr(L, o, "content", 1, &s, &len, "normalizer Replace")) return -1;
        if (jpattern(L, o, &n.re, "normalizer Replace")) return -1;
        n.kind = N_REPLACE;
        n.str = dupn(s, len);
        n.len = len;
    } else if (!strcmp(type, "Strip")) {
        n.kind = N_STRIP;
        if (jbool(L, o, "strip_left", 1, &n.left, "normalizer Strip") ||
            jbool(L, o, "strip_right", 1, &n.right, "normalizer Strip"))
            return -1;
    } else {
        return pt_fail(L->e, "%s: normalizer type '%s' is not supported", L->name, type);
    }
    t->norm = pt_xrealloc(t->norm, (t->n_norm + 1) * sizeof *t->norm);
    t->norm[t->n_norm++] = n;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* pre-tokenizers                                                                               */

static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int load_pre(lctx *L, pt_tokenizer *t, json_t *o) {
    const char *type = NULL;
    if (jtype(L, o, "pre_tokenizer", &type)) return -1;
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(o, "pretokenizers");
        if (!json_is_array(a)) return pt_fail(L->e, "%s: pre_tokenizer Sequence needs a \"pretokenizers\" list", L->name);
        size_t i;
        json_t *x;
        json_array_foreach(a, i, x) if (load_pre(L, t, x)) return -1;
        return 0;
    }
    tk_pre p;
    memset(&p, 0, sizeof p);
    if (!strcmp(type, "ByteLevel")) {
        p.kind = P_BYTELEVEL;
        int trim;
        if (jbool(L, o, "add_prefix_space", 1, &p.add_prefix_space, "pre_tokenizer ByteLevel") ||
            jbool(L, o, "use_regex", 1, &p.use_regex, "pre_tokenizer ByteLevel") ||
            jbool(L, o, "trim_offsets", 1, &trim, "pre_tokenizer ByteLevel"))
            return -1;
        if (p.use_regex && tk_regex_compile(&p.re, GPT2_REGEX, strlen(GPT2_REGEX), 0, L->e))
            return pt_fail_prefix(L->e, "%s: ByteLevel regex", L->name);
    } else if (!strcmp(type, "Split")) {
        p.kind = P_SPLIT;
        const char *b;
        if (jstr(L, o, "behavior", 1, &b, NULL, "pre_tokenizer Split")) return -1;
        if (!strcmp(b, "Removed")) p.behavior = B_REMOVED;
        else if (!strcmp(b, "Isolated")) p.behavior = B_ISOLATED;
        else if (!strcmp(b, "MergedWithPrevious")) p.behavior = B_MERGED_PREV;
        else if (!strcmp(b, "MergedWithNext")) p.behavior = B_MERGED_NEXT;
        else if (!strcmp(b, "Contiguous")) p.behavior = B_CONTIGUOUS;
        else return pt_fail(L->e, "%s: pre_tokenizer Split behavior '%s' is not supported", L->name, b);
        if (jbool(L, o, "invert", 0, &p.invert, "pre_tokenizer Split")) return -1;
        if (jpattern(L, o, &p.re, "pre_tokenizer Split")) return -1;
    } else if (!strcmp(type, "Digits")) {
        p.kind = P_DIGITS;
        if (jbool(L, o, "individual_digits", 0, &p.individual, "pre_tokenizer Digits")) return -1;
    } else if (!strcmp(type, "Metaspace")) {
        p.kind = P_METASPACE;
        if (jchar(L, o, "replacement", 0x2581, &p.repl, "pre_tokenizer Metaspace") ||
            jscheme(L, o, &p.scheme, "pre_tokenizer Metaspace") ||
            jbool(L, o, "split", 1, &p.split, "pre_tokenizer Metaspace"))
            return -1;
        p.repl_len = tk_utf8_encode(p.repl, p.repl_s);
    } else {
        return pt_fail(L->e, "%s: pre_tokenizer type '%s' is not supported", L->name, type);
    }
    t->pre = pt_xrealloc(t->pre, (t->n_pre + 1) * sizeof *t->pre);
    t->pre[t->n_pre++] = p;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* post-processors                                                                              */

static void free_post(tk_post *p) {
    for (int i = 0; i < p->n_items; i++) {
        for (int k = 0; k < p->items[i].n; k++) free(p->items[i].tokens[k]);
        free(p->items[i].ids);
        free(p->items[i].tokens);
    }
    free(p->items);
}

static int load_template_item(lctx *L, pt_tokenizer *t, json_t *special, json_t *x, tk_tpl_item *it) {
    memset(it, 0, sizeof *it);
    const char *name = NULL, *seq = NULL;
    if (json_is_string(x)) { /* "$A", "$A:1", "<s>", "<s>:0" */
        const char *s = json_string_value(x);
        if (s[0] == '$') seq = s + 1;
        else name = s;
    } else if (json_is_object(x)) {
        json_t *st = json_object_get(x, "SpecialToken"), *sq = json_object_get(x, "Sequence");
        if (st && json_is_object(st)) {
            json_t *id = json_object_get(st, "id");
            if (!json_is_string(id)) return pt_fail(L->e, "%s: TemplateProcessing: SpecialToken without id", L->name);
            name = json_string_value(id);
        } else if (sq && json_is_object(sq)) {
            json_t *id = json_object_get(sq, "id");
            if (!json_is_string(id)) return pt_fail(L->e, "%s: TemplateProcessing: Sequence without id", L->name);
            seq = json_string_value(id);
        }
    }
    if (!name && !seq) return pt_fail(L->e, "%s: TemplateProcessing: unrecognised template piece", L->name);
    if (seq) {
        if (seq[0] == 'B' || (seq[0] == '1' && (seq[1] == 0 || seq[1] == ':')))
            return pt_fail(L->e, "%s: TemplateProcessing single template uses sequence B", L->name);
        it->is_seq = 1;
        return 0;
    }
    char key[256];
    snprintf(key, sizeof key, "%s", name);
    if (json_is_string(x)) { /* strip a ":type_id" suffix */
        char *c = strrchr(key, ':');
        if (c && c != key) *c = 0;
    }
    json_t *sp = json_object_get(special, key);
    if (!json_is_object(sp))
        return pt_fail(L->e, "%s: TemplateProcessing: special token '%s' is not in special_tokens", L->name, key);
    json_t *ids = json_object_get(sp, "ids"), *toks = json_object_get(sp, "tokens");
    if (!json_is_array(ids) || !json_is_array(toks) || json_array_size(ids) != json_array_size(toks) ||
        json_array_size(ids) > 64)
        return pt_fail(L->e, "%s: TemplateProcessing: special token '%s' needs ids and tokens of equal length", L->name, key);
    it->n = (int)json_array_size(ids);
    it->ids = pt_xcalloc((size_t)it->n + 1, sizeof *it->ids);
    it->tokens = pt_xcalloc((size_t)it->n + 1, sizeof *it->tokens);
    for (int k = 0; k < it->n; k++) {
        json_t *a = json_array_get(ids, (size_t)k), *b = json_array_get(toks, (size_t)k);
        if (!json_is_integer(a) || json_integer_value(a) < 0 || json_integer_value(a) >= TK_MAX_IDS ||
            !json_is_string(b)) {
            it->n = k;
            return pt_fail(L->e, "%s: TemplateProcessing: special token '%s' has a bad id or token", L->name, key);
        }
        it->ids[k] = (int32_t)json_integer_value(a);
        it->tokens[k] = dupn(json_string_value(b), json_string_length(b));
    }
    (void)t;
    return 0;
}

static int load_post(lctx *L, pt_tokenizer *t, json_t *o) {
    const char *type = NULL;
    if (jtype(L, o, "post_processor", &type)) return -1;
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(o, "processors");
        if (!json_is_array(a)) return pt_fail(L->e, "%s: post_processor Sequence needs a \"processors\" list", L->name);
        size_t i;
        json_t *x;
        json_array_foreach(a, i, x) if (load_post(L, t, x)) return -1;
        return 0;
    }
    tk_post p;
    memset(&p, 0, sizeof p);
    if (!strcmp(type, "ByteLevel")) {
        p.kind = PP_BYTELEVEL;
        if (jbool(L, o, "trim_offsets", 1, &p.trim_offsets, "post_processor ByteLevel") ||
            jbool(L, o, "add_prefix_space", 1, &p.add_prefix_space, "post_processor ByteLevel"))
            return -1;
    } else if (!strcmp(type, "TemplateProcessing")) {
        p.kind = PP_TEMPLATE;
        json_t *single = json_object_get(o, "single"), *special = json_object_get(o, "special_tokens");
        if (!json_is_array(single) || json_array_size(single) > 256)
            return pt_fail(L->e, "%s: TemplateProcessing needs a \"single\" list", L->name);
        if (special && !json_is_object(special))
            return pt_fail(L->e, "%s: TemplateProcessing special_tokens must be an object", L->name);
        p.items = pt_xcalloc(json_array_size(single) + 1, sizeof *p.items);
        size_t i;
        json_t *x;
        json_array_foreach(single, i, x) {
            if (load_template_item(L, t, special, x, &p.items[i])) {
                p.n_items = (int)i + 1;
                free_post(&p);
                return -1;
            }
            p.n_items = (int)i + 1;
        }
    } else {
        return pt_fail(L->e, "%s: post_processor type '%s' is not supported", L->name, type);
    }
    t->post = pt_xrealloc(t->post, (t->n_post + 1) * sizeof *t->post);
    t->post[t->n_post++] = p;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* decoders                                                                                     */

static int load_decoder(lctx *L, pt_tokenizer *t, json_t *o) {
    const char *type = NULL;
    if (jtype(L, o, "decoder", &type)) return -1;
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(o, "decoders");
        if (!json_is_array(a)) return pt_fail(L->e, "%s: decoder Sequence needs a \"decoders\" list", L->name);
        size_t i;
        json_t *x;
        json_array_foreach(a, i, x) if (load_decoder(L, t, x)) return -1;
        return 0;
    }
    tk_dec d;
    memset(&d, 0, sizeof d);
    if (!strcmp(type, "ByteLevel")) d.kind = D_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback")) d.kind = D_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse")) d.kind = D_FUSE;
    else if (!strcmp(type, "Metaspace")) {
        d.kind = D_METASPACE;
        if (jchar(L, o, "replacement", 0x2581, &d.repl, "decoder Metaspace") ||
            jscheme(L, o, &d.scheme, "decoder Metaspace"))
            return -1;
    } else if (!strcmp(type, "Strip")) {
        d.kind = D_STRIP;
        if (jchar(L, o, "content", ' ', &d.content, "decoder Strip")) return -1;
        json_t *a = json_object_get(o, "start"), *b = json_object_get(o, "stop");
        if ((a && !json_is_integer(a)) || (b && !json_is_integer(b)) ||
            (a && json_integer_value(a) < 0) || (b && json_integer_value(b) < 0))
            return pt_fail(L->e, "%s: decoder Strip start/stop must be non-negative integers", L->name);
        d.start = a ? (size_t)json_integer_value(a) : 0;
        d.stop = b ? (size_t)json_integer_value(b) : 0;
    } else if (!strcmp(type, "Replace")) {
        d.kind = D_REPLACE;
        const char *s;
        size_t len;
        if (jstr(L, o, "content", 1, &s, &len, "decoder Replace")) return -1;
        if (jpattern(L, o, &d.re, "decoder Replace")) return -1;
        d.str = dupn(s, len);
        d.len = len;
    } else {
        return pt_fail(L->e, "%s: decoder type '%s' is not supported", L->name, type);
    }
    t->dec = pt_xrealloc(t->dec, (t->n_dec + 1) * sizeof *t->dec);
    t->dec[t->n_dec++] = d;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* BPE model                                                                                    */

static int load_model(lctx *L, pt_tokenizer *t, json_t *o) {
    if (!json_is_object(o)) return pt_fail(L->e, "%s: \"model\" must be an object", L->name);
    json_t *ty = json_object_get(o, "type");
    if (ty && !json_is_string(ty)) return pt_fail(L->e, "%s: model.type must be a string", L->name);
    const char *type = ty ? json_string_value(ty) : (json_object_get(o, "merges") ? "BPE" : "?");
    if (strcmp(type, "BPE") != 0) return pt_fail(L->e, "%s: model type '%s' is not supported (only BPE)", L->name, type);
    tk_bpe *m = &t->bpe;
    json_t *dropout = json_object_get(o, "dropout");
    if (dropout && !json_is_null(dropout) && !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return pt_fail(L->e, "%s: BPE dropout is not supported (must be null)", L->name);
    const char *s;
    size_t sl;
    if (jstr(L, o, "continuing_subword_prefix", 0, &s, &sl, "model") ) return -1;
    if (s && sl) return pt_fail(L->e, "%s: BPE continuing_subword_prefix is not supported (must be null)", L->name);
    if (jstr(L, o, "end_of_word_suffix", 0, &s, &sl, "model")) return -1;
    if (s && sl) return pt_fail(L->e, "%s: BPE end_of_word_suffix is not supported (must be null)", L->name);
    if (jbool(L, o, "byte_fallback", 0, &m->byte_fallback, "model") ||
        jbool(L, o, "fuse_unk", 0, &m->fuse_unk, "model") ||
        jbool(L, o, "ignore_merges", 0, &m->ignore_merges, "model"))
        return -1;

    json_t *vocab = json_object_get(o, "vocab");
    if (!json_is_object(vocab)) return pt_fail(L->e, "%s: model.vocab must be an object", L->name);
    size_t nv = json_object_size(vocab);
    if (nv > TK_MAX_IDS) return pt_fail(L->e, "%s: model.vocab is too large (%zu entries)", L->name, nv);
    int32_t max_id = -1;
    size_t pool_len = 0;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= TK_MAX_IDS)
            return pt_fail(L->e, "%s: model.vocab: id of '%.60s' is not an integer in [0, %d)", L->name, key, TK_MAX_IDS);
        int32_t id = (int32_t)json_integer_value(val);
        if (id > max_id) max_id = id;
        pool_len += strlen(key) + 1;
    }
    if ((size_t)max_id >= nv + 4096)
        return pt_fail(L->e, "%s: model.vocab ids are not dense (max id %d with %zu entries)", L->name,
                       (int)max_id, nv);
    m->n_ids = max_id + 1;
    m->pool = pt_xmalloc(pool_len + 1);
    m->off = pt_xcalloc((size_t)m->n_ids + 1, sizeof *m->off);
    m->len = pt_xcalloc((size_t)m->n_ids + 1, sizeof *m->len);
    m->has = pt_xcalloc((size_t)m->n_ids + 1, 1);
    int32_t *ids = pt_xmalloc((nv + 1) * sizeof *ids);
    size_t k = 0, pos = 0;
    json_object_foreach(vocab, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        if (m->has[id]) {
            free(ids);
            return pt_fail(L->e, "%s: model.vocab: id %d is used twice", L->name, (int)id);
        }
        size_t l = strlen(key);
        m->has[id] = 1;
        m->off[id] = (uint32_t)pos;
        m->len[id] = (uint32_t)l;
        memcpy(m->pool + pos, key, l + 1);
        pos += l + 1;
        ids[k++] = id;
    }
    int32_t dup;
    if (tk_strmap_build(&m->map, m->pool, m->off, m->len, ids, k, &dup) != 0) {
        free(ids);
        return pt_fail(L->e, "%s: model.vocab: duplicate token '%.60s'", L->name, m->pool + m->off[dup]);
    }
    free(ids);
    for (int b = 0; b < 256; b++) {
        char code[8];
        snprintf(code, sizeof code, "<0x%02X>", b);
        m->byte_ids[b] = tk_strmap_get(&m->map, code, 6);
    }
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        m->small_ids[c] = tk_strmap_get(&m->map, &ch, 1);
    }
    m->cp2_ids = pt_xmalloc(0x780 * sizeof *m->cp2_ids);
    for (uint32_t c = 0x80; c < 0x800; c++) {
        char u[4];
        int l = tk_utf8_encode(c, u);
        m->cp2_ids[c - 0x80] = tk_strmap_get(&m->map, u, (size_t)l);
    }
    m->unk_id = -1;
    const char *unk;
    size_t unk_len;
    if (jstr(L, o, "unk_token", 0, &unk, &unk_len, "model")) return -1;
    if (unk) {
        m->unk_id = tk_strmap_get(&m->map, unk, unk_len);
        if (m->unk_id < 0) {
            t->unk_missing = 1;
            t->unk_name = dupn(unk, unk_len);
        }
    }

    json_t *merges = json_object_get(o, "merges");
    if (!merges || json_is_null(merges)) merges = NULL;
    else if (!json_is_array(merges)) return pt_fail(L->e, "%s: model.merges must be a list", L->name);
    size_t nm = merges ? json_array_size(merges) : 0;
    tk_pairmap_init(&m->merges, nm);
    tk_buf cat = {0};
    uint32_t rank = 0;
    for (size_t i = 0; i < nm; i++) {
        json_t *x = json_array_get(merges, i);
        const char *a, *b;
        size_t la, lb;
        if (json_is_string(x)) {
            const char *line = json_string_value(x);
            size_t ll = json_string_length(x);
            if (ll >= 8 && !memcmp(line, "#version", 8)) continue;
            const char *sp = memchr(line, ' ', ll);
            if (!sp || memchr(sp + 1, ' ', ll - (size_t)(sp + 1 - line))) {
                free(cat.p);
                return pt_fail(L->e, "%s: model.merges[%zu] is not of the form \"a b\"", L->name, i);
            }
            a = line;
            la = (size_t)(sp - line);
            b = sp + 1;
            lb = ll - la - 1;
        } else if (json_is_array(x) && json_array_size(x) == 2 && json_is_string(json_array_get(x, 0)) &&
                   json_is_string(json_array_get(x, 1))) {
            a = json_string_value(json_array_get(x, 0));
            la = json_string_length(json_array_get(x, 0));
            b = json_string_value(json_array_get(x, 1));
            lb = json_string_length(json_array_get(x, 1));
        } else {
            free(cat.p);
            return pt_fail(L->e, "%s: model.merges[%zu] must be a string \"a b\" or a pair [a, b]", L->name, i);
        }
        int32_t ia = tk_strmap_get(&m->map, a, la), ib = tk_strmap_get(&m->map, b, lb);
        cat.n = 0;
        tk_buf_put(&cat, a, la);
        tk_buf_put(&cat, b, lb);
        int32_t in = tk_strmap_get(&m->map, cat.p, cat.n);
        if (ia < 0 || ib < 0 || in < 0) {
            const char *which = ia < 0 ? a : ib < 0 ? b : cat.p;
            int wl = (int)(ia < 0 ? la : ib < 0 ? lb : cat.n);
            if (wl > 60) wl = 60;
            int r = pt_fail(L->e, "%s: model.merges[%zu]: token '%.*s' is not in the vocabulary", L->name, i, wl, which);
            free(cat.p);
            return r;
        }
        tk_pairmap_put(&m->merges, ia, ib, rank, in);
        rank++;
    }
    free(cat.p);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* added tokens                                                                                 */

static void trie_init(tk_trie *tr) {
    memset(tr, 0, sizeof *tr);
    tr->cap = 16;
    tr->nodes = pt_xmalloc(tr->cap * sizeof *tr->nodes);
    tr->nodes[0] = (tk_node){-1, -1, -1, 0};
    tr->n = 1;
    tr->empty = 1;
}

static void trie_add(tk_trie *tr, const char *s, size_t n, int32_t term) {
    if (n == 0) return;
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        int32_t c = tr->nodes[cur].child;
        while (c >= 0 && tr->nodes[c].byte != b) c = tr->nodes[c].sibling;
        if (c < 0) {
            if (tr->n == tr->cap) {
                tr->cap *= 2;
                tr->nodes = pt_xrealloc(tr->nodes, tr->cap * sizeof *tr->nodes);
            }
            c = (int32_t)tr->n++;
            tr->nodes[c] = (tk_node){-1, tr->nodes[cur].child, -1, b};
            tr->nodes[cur].child = c;
        }
        cur = c;
    }
    if (tr->nodes[cur].term < 0) tr->nodes[cur].term = term;
    tr->first[(unsigned char)s[0]] = 1;
    tr->empty = 0;
}

/* longest pattern starting at s[0..n): its length, and *term; 0 if none */
static size_t trie_longest(const tk_trie *tr, const char *s, size_t n, int32_t *term) {
    int32_t cur = 0;
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        int32_t c = tr->nodes[cur].child;
        while (c >= 0 && tr->nodes[c].byte != b) c = tr->nodes[c].sibling;
        if (c < 0) break;
        cur = c;
        if (tr->nodes[cur].term >= 0) {
            best = i + 1;
            *term = tr->nodes[cur].term;
        }
    }
    return best;
}

/* ------------------------------------------------------------------------------------------ */
/* the normalized-string machinery                                                              */

typedef struct {
    uint32_t s, e;
} tk_al;

typedef struct {
    const char *s;
    const tk_al *al;
    uint32_t n;
    uint32_t orig_start; /* tokenizers' original_shift */
    int32_t tok;         /* -1: still to tokenize; else the index of the added token */
} tk_split;

typedef struct tk_blk {
    struct tk_blk *next;
    size_t used, cap;
} tk_blk;

typedef struct {
    int32_t id;
    uint32_t s, e;    /* byte offsets in the original, then char offsets after conversion */
    uint16_t lead, trail;
} tk_otok;

typedef struct {
    const pt_tokenizer *t;
    pt_error *e;
    tk_blk *blk;
    tk_split *cur, *nxt;
    size_t ncur, nnxt, capcur, capnxt;
    tk_piecevec pv;
    tk_chgvec cv;
    tk_wtokvec wv;
    tk_bpe_scratch bsc;
    pcre2_match_data *md;
    tk_otok *tok;
    size_t ntok, captok;
    uint32_t *range; /* pairs of kept ranges */
    size_t nrange, caprange;
} tk_ctx;

static void *ar_alloc(tk_ctx *c, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!c->blk || c->blk->used + n > c->blk->cap) {
        size_t cap = c->blk ? c->blk->cap * 2 : 1 << 16;
        if (cap < n) cap = n;
        if (cap > ((size_t)64 << 20) && n < ((size_t)64 << 20)) cap = (size_t)64 << 20;
        tk_blk *b = pt_xmalloc(sizeof(tk_blk) + 16 + cap);
        b->next = c->blk;
        b->used = 0;
        b->cap = cap;
        c->blk = b;
    }
    char *base = (char *)(c->blk + 1);
    base += (16 - ((uintptr_t)base & 15)) & 15;
    void *p = base + c->blk->used;
    c->blk->used += n;
    return p;
}

static void push_split(tk_ctx *c, tk_split sp) {
    if (c->nnxt == c->capnxt) {
        c->capnxt = c->capnxt ? c->capnxt * 2 : 64;
        c->nxt = pt_xrealloc(c->nxt, c->capnxt * sizeof *c->nxt);
    }
    c->nxt[c->nnxt++] = sp;
}

static void swap_splits(tk_ctx *c) {
    tk_split *t = c->cur;
    size_t cap = c->capcur;
    c->cur = c->nxt;
    c->capcur = c->capnxt;
    c->ncur = c->nnxt;
    c->nxt = t;
    c->capnxt = cap;
    c->nnxt = 0;
}

/* slice [a, b) of normalized bytes; empty slices are dropped (PreTokenizedString::split) */
static void push_slice(tk_ctx *c, const tk_split *p, uint32_t a, uint32_t b, int32_t tok) {
    if (b <= a) return;
    tk_split s = {p->s + a, p->al + a, b - a, p->al[a].s, tok};
    push_split(c, s);
}

/* tokenizers' NormalizedString::transform over the whole string: dest chars with changes.
 * initial: number of old chars removed at the start. */
static tk_split sp_transform(tk_ctx *c, const tk_split *p, const tk_chgvec *dest, size_t initial) {
    size_t cap = 0;
    for (size_t i = 0; i < dest->n; i++) cap += dest->v[i].cp < 0x80 ? 1 : 4;
    char *s = ar_alloc(c, cap + 1);
    tk_al *al = ar_alloc(c, (cap + 1) * sizeof *al);
    size_t off = 0, n = 0;
    for (size_t k = 0; k < initial && off < p->n; k++) off += (size_t)tk_utf8_len((unsigned char)p->s[off]);
    for (size_t i = 0; i < dest->n; i++) {
        int32_t ch = dest->v[i].change;
        tk_al a;
        if (ch > 0) {
            a = off < 1 ? (tk_al){0, 0} : p->al[off - 1 < p->n ? off - 1 : p->n - 1];
        } else {
            a = off < p->n ? p->al[off] : (p->n ? p->al[p->n - 1] : (tk_al){0, 0});
            if (off < p->n) off += (size_t)tk_utf8_len((unsigned char)p->s[off]);
            for (int32_t r = 0; r < -ch && off < p->n; r++) off += (size_t)tk_utf8_len((unsigned char)p->s[off]);
        }
        int l = tk_utf8_encode(dest->v[i].cp, s + n);
        for (int b = 0; b < l; b++) al[n + (size_t)b] = a;
        n += (size_t)l;
    }
    tk_split r = {s, al, (uint32_t)n, p->orig_start, -1};
    return r;
}

static tk_split sp_prepend(tk_ctx *c, const tk_split *p, const char *str, size_t len) {
    if (p->n == 0 || len == 0) return *p;
    char *s = ar_alloc(c, p->n + len + 1);
    tk_al *al = ar_alloc(c, (p->n + len) * sizeof *al);
    memcpy(s, str, len);
    memcpy(s + len, p->s, p->n);
    for (size_t i = 0; i < len; i++) al[i] = p->al[0];
    memcpy(al + len, p->al, p->n * sizeof *al);
    tk_split r = {s, al, (uint32_t)(p->n + len), p->orig_start, -1};
    return r;
}

/* replace every match piece by content; inserted chars align to the match's last byte */
static tk_split sp_replace(tk_ctx *c, const tk_split *p, const tk_piecevec *pv, const char *content,
                           size_t clen) {
    size_t nm = 0;
    for (size_t i = 0; i < pv->n; i++) nm += pv->v[i].is_match;
    if (!nm) return *p;
    size_t cap = p->n + nm * clen;
    char *s = ar_alloc(c, cap + 1);
    tk_al *al = ar_alloc(c, (cap + 1) * sizeof *al);
    size_t n = 0, last = 0;
    for (size_t i = 0; i < pv->n; i++) {
        if (!pv->v[i].is_match) continue;
        uint32_t a = pv->v[i].s, b = pv->v[i].e;
        memcpy(s + n, p->s + last, a - last);
        memcpy(al + n, p->al + last, (a - last) * sizeof *al);
        n += a - last;
        tk_al x = b == 0 ? (tk_al){0, 0} : p->al[b - 1];
        memcpy(s + n, content, clen);
        for (size_t k = 0; k < clen; k++) al[n + k] = x;
        n += clen;
        last = b;
    }
    memcpy(s + n, p->s + last, p->n - last);
    memcpy(al + n, p->al + last, (p->n - last) * sizeof *al);
    n += p->n - last;
    tk_split r = {s, al, (uint32_t)n, p->orig_start, -1};
    return r;
}

static tk_split sp_bytelevel(tk_ctx *c, const tk_split *p) {
    char *s = ar_alloc(c, (size_t)p->n * 2 + 1);
    tk_al *al = ar_alloc(c, ((size_t)p->n * 2 + 1) * sizeof *al);
    size_t n = 0;
    for (uint32_t i = 0; i < p->n; i++) {
        uint32_t cp = byte_to_cp((unsigned char)p->s[i]);
        int l = tk_utf8_encode(cp, s + n);
        for (int b = 0; b < l; b++) al[n + (size_t)b] = p->al[i];
        n += (size_t)l;
    }
    tk_split r = {s, al, (uint32_t)n, p->orig_start, -1};
    return r;
}

/* pieces of a char predicate (tokenizers' Pattern for Fn(char) -> bool) */
static void char_matches(const char *s, uint32_t n, int (*pred)(uint32_t, const void *), const void *arg,
                         tk_piecevec *out) {
    out->n = 0;
    if (n == 0) {
        tk_piece_push(out, 0, 0, 0);
        return;
    }
    uint32_t last = 0;
    for (uint32_t i = 0; i < n;) {
        int l;
        uint32_t cp = tk_utf8_get(s + i, &l);
        if (pred(cp, arg)) {
            if (last < i) tk_piece_push(out, last, i, 0);
            tk_piece_push(out, i, i + (uint32_t)l, 1);
            last = i + (uint32_t)l;
        }
        i += (uint32_t)l;
    }
    if (last < n) tk_piece_push(out, last, n, 0);
}

static int pred_numeric(uint32_t c, const void *a) {
    (void)a;
    return tk_is_numeric(c);
}
static int pred_eq(uint32_t c, const void *a) { return c == *(const uint32_t *)a; }

static void range_push(tk_ctx *c, uint32_t a, uint32_t b) {
    if (c->nrange + 2 > c->caprange) {
        c->caprange = c->caprange ? c->caprange * 2 : 64;
        c->range = pt_xrealloc(c->range, c->caprange * sizeof *c->range);
    }
    c->range[c->nrange++] = a;
    c->range[c->nrange++] = b;
}

/* tokenizers' NormalizedString::split: apply the delimiter behaviour, push the slices */
static void split_by(tk_ctx *c, const tk_split *p, tk_piecevec *pv, int behavior) {
    c->nrange = 0;
    size_t n = pv->n;
    tk_piece *v = pv->v;
    switch (behavior) {
    case B_ISOLATED:
        for (size_t i = 0; i < n; i++) range_push(c, v[i].s, v[i].e);
        break;
    case B_REMOVED:
        for (size_t i = 0; i < n; i++)
            if (!v[i].is_match) range_push(c, v[i].s, v[i].e);
        break;
    case B_CONTIGUOUS: {
        int prev = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i].is_match == prev && c->nrange) c->range[c->nrange - 1] = v[i].e;
            else range_push(c, v[i].s, v[i].e);
            prev = v[i].is_match;
        }
        break;
    }
    case B_MERGED_PREV: {
        int prev = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i].is_match && !prev && c->nrange) c->range[c->nrange - 1] = v[i].e;
            else range_push(c, v[i].s, v[i].e);
            prev = v[i].is_match;
        }
        break;
    }
    case B_MERGED_NEXT: {
        int prev = 0;
        for (size_t i = n; i-- > 0;) {
            if (v[i].is_match && !prev && c->nrange) c->range[c->nrange - 2] = v[i].s;
            else range_push(c, v[i].s, v[i].e);
            prev = v[i].is_match;
        }
        /* reverse the pairs */
        for (size_t a = 0, b = c->nrange / 2; a + 1 < b; a++, b--) {
            uint32_t s0 = c->range[2 * a], e0 = c->range[2 * a + 1];
            c->range[2 * a] = c->range[2 * (b - 1)];
            c->range[2 * a + 1] = c->range[2 * (b - 1) + 1];
            c->range[2 * (b - 1)] = s0;
            c->range[2 * (b - 1) + 1] = e0;
        }
        break;
    }
    }
    for (size_t i = 0; i < c->nrange; i += 2) push_slice(c, p, c->range[i], c->range[i + 1], -1);
}

/* ---- added tokens in a split ------------------------------------------------------------- */

static int ends_with_word(const char *s, uint32_t n) {
    if (!n) return 0;
    uint32_t i = n - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    int l;
    return tk_is_rust_word(tk_utf8_get(s + i, &l));
}

static int starts_with_word(const char *s, uint32_t n) {
    if (!n) return 0;
    int l;
    return tk_is_rust_word(tk_utf8_get(s, &l));
}

/* start of the run of white space ending the string */
static uint32_t space_leftmost_at_end(const char *s, uint32_t n) {
    uint32_t i = n;
    while (i > 0) {
        uint32_t j = i - 1;
        while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
        int l;
        if (!tk_is_white_space(tk_utf8_get(s + j, &l))) break;
        i = j;
    }
    return i;
}

static uint32_t space_rightmost_at_start(const char *s, uint32_t n) {
    uint32_t i = 0;
    while (i < n) {
        int l;
        if (!tk_is_white_space(tk_utf8_get(s + i, &l))) break;
        i += (uint32_t)l;
    }
    return i;
}

static void split_added(tk_ctx *c, const tk_split *p, const tk_trie *tr) {
    if (tr->empty || p->n == 0) {
        push_slice(c, p, 0, p->n, -1);
        return;
    }
    const pt_tokenizer *t = c->t;
    const char *s = p->s;
    uint32_t n = p->n, start_offset = 0;
    for (uint32_t i = 0; i < n;) {
        if (!tr->first[(unsigned char)s[i]]) {
            i++;
            continue;
        }
        int32_t term = -1;
        size_t ml = trie_longest(tr, s + i, n - i, &term);
        if (!ml) {
            i++;
            continue;
        }
        uint32_t start = i, stop = i + (uint32_t)ml;
        i = stop; /* the scan goes on after the match, whatever happens to it */
        const tk_added *a = &t->added[term];
        if (a->single_word) {
            int start_space = start == 0 || !ends_with_word(s, start);
            int stop_space = stop == n || !starts_with_word(s + stop, n - stop);
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            uint32_t ns = space_leftmost_at_end(s, start);
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) stop += space_rightmost_at_start(s + stop, n - stop);
        if (start_offset < start) push_slice(c, p, start_offset, start, -1);
        push_slice(c, p, start, stop, term);
        start_offset = stop;
    }
    if (start_offset < n) push_slice(c, p, start_offset, n, -1);
}

/* ---- normalizer ---------------------------------------------------------------------------- */

static int is_ascii(const char *s, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return 0;
    return 1;
}

static int normalize(tk_ctx *c, tk_split *sp) {
    const pt_tokenizer *t = c->t;
    for (size_t k = 0; k < t->n_norm; k++) {
        const tk_norm *nm = &t->norm[k];
        switch (nm->kind) {
        case N_NFC: case N_NFD: case N_NFKC: case N_NFKD:
            if (is_ascii(sp->s, sp->n)) break;
            tk_unicode_normalize(nm->kind == N_NFC ? TK_NFC : nm->kind == N_NFD ? TK_NFD
                                 : nm->kind == N_NFKC ? TK_NFKC : TK_NFKD,
                                 sp->s, sp->n, &c->cv);
            *sp = sp_transform(c, sp, &c->cv, 0);
            break;
        case N_LOWER:
            tk_unicode_lowercase(sp->s, sp->n, &c->cv);
            *sp = sp_transform(c, sp, &c->cv, 0);
            break;
        case N_PREPEND:
            *sp = sp_prepend(c, sp, nm->str, nm->len);
            break;
        case N_REPLACE:
            if (tk_regex_find_matches(&nm->re, sp->s, sp->n, c->md, &c->pv, c->e)) return -1;
            *sp = sp_replace(c, sp, &c->pv, nm->str, nm->len);
            break;
        case N_STRIP: {
            /* leading / trailing white space removed (NormalizedString::lrstrip) */
            size_t nch = 0, lead = 0, trail = 0;
            int in_lead = 1;
            for (uint32_t i = 0; i < sp->n;) {
                int l;
                uint32_t cp = tk_utf8_get(sp->s + i, &l);
                int ws = tk_is_white_space(cp);
                if (in_lead && ws) lead++;
                else in_lead = 0;
                trail = ws ? trail + 1 : 0;
                nch++;
                i += (uint32_t)l;
            }
            if (!nm->left) lead = 0;
            if (!nm->right) trail = 0;
            if (lead + trail > nch) trail = nch - lead;
            if (lead == 0 && trail == 0) break;
            c->cv.n = 0;
            size_t idx = 0;
            for (uint32_t i = 0; i < sp->n; idx++) {
                int l;
                uint32_t cp = tk_utf8_get(sp->s + i, &l);
                i += (uint32_t)l;
                if (idx < lead || idx >= nch - trail) continue;
                tk_chg_push(&c->cv, cp, idx == nch - trail - 1 ? -(int32_t)trail : 0);
            }
            *sp = sp_transform(c, sp, &c->cv, lead);
            break;
        }
        }
    }
    return 0;
}

/* ---- pre-tokenizers ------------------------------------------------------------------------ */

static int pre_tokenize(tk_ctx *c, const tk_pre *pt, const tk_split *sp) {
    switch (pt->kind) {
    case P_BYTELEVEL: {
        tk_split x = *sp;
        if (pt->add_prefix_space && !(x.n > 0 && x.s[0] == ' ')) x = sp_prepend(c, &x, " ", 1);
        size_t first = c->nnxt;
        if (pt->use_regex) {
            if (tk_regex_find_matches(&pt->re, x.s, x.n, c->md, &c->pv, c->e)) return -1;
            split_by(c, &x, &c->pv, B_ISOLATED);
        } else {
            push_slice(c, &x, 0, x.n, -1);
        }
        for (size_t i = first; i < c->nnxt; i++) c->nxt[i] = sp_bytelevel(c, &c->nxt[i]);
        return 0;
    }
    case P_SPLIT:
        if (tk_regex_find_matches(&pt->re, sp->s, sp->n, c->md, &c->pv, c->e)) return -1;
        if (pt->invert)
            for (size_t i = 0; i < c->pv.n; i++) c->pv.v[i].is_match = !c->pv.v[i].is_match;
        split_by(c, sp, &c->pv, pt->behavior);
        return 0;
    case P_DIGITS:
        char_matches(sp->s, sp->n, pred_numeric, NULL, &c->pv);
        split_by(c, sp, &c->pv, pt->individual ? B_ISOLATED : B_CONTIGUOUS);
        return 0;
    case P_METASPACE: {
        uint32_t space = ' ';
        char_matches(sp->s, sp->n, pred_eq, &space, &c->pv);
        tk_split x = sp_replace(c, sp, &c->pv, pt->repl_s, (size_t)pt->repl_len);
        int starts = x.n >= (uint32_t)pt->repl_len && !memcmp(x.s, pt->repl_s, (size_t)pt->repl_len);
        if (!starts && (pt->scheme == PS_ALWAYS || (pt->scheme == PS_FIRST && x.orig_start == 0)))
            x = sp_prepend(c, &x, pt->repl_s, (size_t)pt->repl_len);
        if (pt->split) {
            char_matches(x.s, x.n, pred_eq, &pt->repl, &c->pv);
            split_by(c, &x, &c->pv, B_MERGED_NEXT);
        } else {
            push_slice(c, &x, 0, x.n, -1);
        }
        return 0;
    }
    }
    return 0;
}

/* ---- output tokens ------------------------------------------------------------------------- */

static void otok_push(tk_ctx *c, int32_t id, uint32_t s, uint32_t e, uint16_t lead, uint16_t trail) {
    if (c->ntok == c->captok) {
        c->captok = c->captok ? c->captok * 2 : 64;
        c->tok = pt_xrealloc(c->tok, c->captok * sizeof *c->tok);
    }
    c->tok[c->ntok++] = (tk_otok){id, s, e, lead, trail};
}

static int is_trim_char(uint32_t cp) { return cp == 0x120 || tk_is_white_space(cp); }

/* leading / trailing chars that are 'Ġ' or white space (ByteLevel post-processor) */
static void lead_trail(const char *s, size_t n, uint16_t *lead, uint16_t *trail) {
    size_t ld = 0, tr = 0, nch = 0;
    int in_lead = 1;
    for (size_t i = 0; i < n;) {
        int l;
        uint32_t cp = tk_utf8_get(s + i, &l);
        int w = is_trim_char(cp);
        if (in_lead && w) ld++;
        else in_lead = 0;
        tr = w ? tr + 1 : 0;
        nch++;
        i += (size_t)l;
    }
    *lead = (uint16_t)(ld > 65535 ? 65535 : ld);
    *trail = (uint16_t)(tr > 65535 ? 65535 : tr);
}

static int model_tokens(tk_ctx *c, const tk_split *sp) {
    const pt_tokenizer *t = c->t;
    if (sp->tok >= 0) {
        const tk_added *a = &t->added[sp->tok];
        uint16_t ld, tr;
        lead_trail(sp->s, sp->n, &ld, &tr);
        otok_push(c, a->id, sp->al[0].s, sp->al[sp->n - 1].e, ld, tr);
        return 0;
    }
    c->wv.n = 0;
    if (tk_bpe_word(&t->bpe, sp->s, sp->n, &c->bsc, &c->wv, c->e)) return -1;
    if (t->unk_missing) {
        /* tokenizers fails when it needs the unknown token and the vocabulary lacks it;
         * detect a dropped char: total token bytes shorter than the word */
        uint32_t tot = c->wv.n ? c->wv.v[c->wv.n - 1].e : 0;
        if (tot != sp->n)
            return pt_fail(c->e, "%s: unk_token '%s' is not in the vocabulary", t->name, t->unk_name);
    }
    for (size_t i = 0; i < c->wv.n; i++) {
        tk_wtok *w = &c->wv.v[i];
        uint32_t s, e;
        if (w->e <= w->s) { /* empty token range: tokenizers keeps it relative */
            s = w->s;
            e = w->e;
        } else if (w->e > sp->n) {
            s = w->s;
            e = w->e;
        } else {
            s = sp->al[w->s].s;
            e = sp->al[w->e - 1].e;
        }
        otok_push(c, w->id, s, e, t->lead[w->id], t->trail[w->id]);
    }
    return 0;
}

/* ---- post-processing ------------------------------------------------------------------------ */

static void post_bytelevel(tk_ctx *c, const tk_post *pp) {
    if (!pp->trim_offsets) return;
    for (size_t i = 0; i < c->ntok; i++) {
        tk_otok *k = &c->tok[i];
        uint32_t ld = k->lead, tr = k->trail;
        if (!ld && !tr) continue;
        if (ld) {
            int is_first = i == 0 || k->s == 0;
            if (is_first && pp->add_prefix_space && ld == 1) ld = 0;
            uint32_t ns = k->s + ld;
            k->s = ns < k->e ? ns : k->e;
        }
        if (tr && k->e >= tr) {
            uint32_t ne = k->e - tr;
            k->e = ne > k->s ? ne : k->s;
        }
    }
}

static void post_template(tk_ctx *c, const tk_post *pp, int add_special) {
    if (!add_special) return;
    size_t extra = 0;
    for (int i = 0; i < pp->n_items; i++)
        if (!pp->items[i].is_seq) extra += (size_t)pp->items[i].n;
    if (!extra) return;
    size_t n = c->ntok;
    tk_otok *old = pt_xmalloc((n + 1) * sizeof *old);
    if (n) memcpy(old, c->tok, n * sizeof *old);
    c->ntok = 0;
    for (int i = 0; i < pp->n_items; i++) {
        const tk_tpl_item *it = &pp->items[i];
        if (it->is_seq) {
            for (size_t k = 0; k < n; k++) otok_push(c, old[k].id, old[k].s, old[k].e, old[k].lead, old[k].trail);
        } else {
            for (int k = 0; k < it->n; k++) {
                uint16_t ld, tr;
                lead_trail(it->tokens[k], strlen(it->tokens[k]), &ld, &tr);
                otok_push(c, it->ids[k], 0, 0, ld, tr);
            }
        }
    }
    free(old);
}

/* ---- encode ----------------------------------------------------------------------------------- */

static void one_line(pt_error *e);

static void ctx_free(tk_ctx *c) {
    while (c->blk) {
        tk_blk *n = c->blk->next;
        free(c->blk);
        c->blk = n;
    }
    free(c->cur);
    free(c->nxt);
    free(c->pv.v);
    free(c->cv.v);
    free(c->wv.v);
    tk_bpe_scratch_free(&c->bsc);
    if (c->md) pcre2_match_data_free(c->md);
    free(c->tok);
    free(c->range);
}

static void enc_reserve(pt_encoding *o, size_t n) {
    if (n <= o->cap) return;
    size_t cap = o->cap ? o->cap : 16;
    while (cap < n) cap *= 2;
    o->ids = pt_xrealloc(o->ids, cap * sizeof *o->ids);
    o->byte_start = pt_xrealloc(o->byte_start, cap * sizeof *o->byte_start);
    o->byte_end = pt_xrealloc(o->byte_end, cap * sizeof *o->byte_end);
    o->cap = cap;
}

int pt_tokenizer_encode(const pt_tokenizer *t, const char *text, size_t len, int add_special,
                        pt_encoding *out, pt_error *e) {
    out->n = 0;
    if (!t || (!text && len)) return pt_fail(e, "tokenizer: no text");
    if (len > (size_t)INT32_MAX / 4) return pt_fail(e, "%s: text too long (%zu bytes)", t->name, len);
    size_t bad;
    if (!tk_utf8_valid(text, len, &bad))
        return pt_fail(e, "%s: text is not valid UTF-8 (byte %zu)", t->name, bad);
    tk_ctx c;
    memset(&c, 0, sizeof c);
    c.t = t;
    c.e = e;
    c.md = pcre2_match_data_create(16, NULL);
    if (!c.md) return pt_fail(e, "%s: out of memory", t->name);
    int rc = -1;

    /* the whole text as one split; each byte aligned to its char */
    if (len) {
        tk_al *al = ar_alloc(&c, len * sizeof *al);
        for (size_t i = 0; i < len;) {
            int l = tk_utf8_len((unsigned char)text[i]);
            for (int b = 0; b < l; b++) al[i + (size_t)b] = (tk_al){(uint32_t)i, (uint32_t)(i + (size_t)l)};
            i += (size_t)l;
        }
        tk_split whole = {text, al, (uint32_t)len, 0, -1};
        split_added(&c, &whole, &t->trie_raw);
    }
    swap_splits(&c);
    /* normalizer, then the added tokens that match normalized text */
    for (size_t i = 0; i < c.ncur; i++) {
        tk_split sp = c.cur[i];
        if (sp.tok >= 0) {
            push_split(&c, sp);
            continue;
        }
        if (normalize(&c, &sp)) goto done;
        split_added(&c, &sp, &t->trie_norm);
    }
    swap_splits(&c);
    for (size_t k = 0; k < t->n_pre; k++) {
        for (size_t i = 0; i < c.ncur; i++) {
            if (c.cur[i].tok >= 0) {
                push_split(&c, c.cur[i]);
                continue;
            }
            if (pre_tokenize(&c, &t->pre[k], &c.cur[i])) goto done;
        }
        swap_splits(&c);
    }
    for (size_t i = 0; i < c.ncur; i++)
        if (model_tokens(&c, &c.cur[i])) goto done;

    /* byte offsets -> char offsets, as tokenizers' BytesToCharOffsetConverter */
    {
        uint32_t nch = 0;
        uint32_t *b2c = pt_xmalloc((len + 1) * sizeof *b2c);
        uint32_t *c2b = pt_xmalloc((len + 2) * sizeof *c2b);
        for (size_t i = 0; i < len;) {
            int l = tk_utf8_len((unsigned char)text[i]);
            c2b[nch] = (uint32_t)i;
            for (int b = 0; b < l; b++) b2c[i + (size_t)b] = nch;
            nch++;
            i += (size_t)l;
        }
        c2b[nch] = (uint32_t)len;
        for (size_t i = 0; i < c.ntok; i++) {
            tk_otok *k = &c.tok[i];
            if (k->s >= len) continue; /* not convertible: kept as is */
            uint32_t cs = b2c[k->s], ce;
            if (k->e < len) ce = b2c[k->e];
            else {
                uint32_t last = (k->e >= 1 && k->e - 1 < len) ? b2c[k->e - 1] : cs + 1;
                ce = last + 1;
            }
            k->s = cs;
            k->e = ce;
        }
        for (size_t p = 0; p < t->n_post; p++) {
            if (t->post[p].kind == PP_BYTELEVEL) post_bytelevel(&c, &t->post[p]);
            else post_template(&c, &t->post[p], add_special);
        }
        enc_reserve(out, c.ntok);
        for (size_t i = 0; i < c.ntok; i++) {
            tk_otok *k = &c.tok[i];
            out->ids[i] = k->id;
            out->byte_start[i] = (int32_t)(k->s <= nch ? c2b[k->s] : len);
            out->byte_end[i] = (int32_t)(k->e <= nch ? c2b[k->e] : len);
        }
        out->n = c.ntok;
        free(b2c);
        free(c2b);
    }
    rc = 0;
done:
    ctx_free(&c);
    if (rc) one_line(e);
    return rc;
}

void pt_encoding_free(pt_encoding *enc) {
    if (!enc) return;
    free(enc->ids);
    free(enc->byte_start);
    free(enc->byte_end);
    enc->ids = enc->byte_start = enc->byte_end = NULL;
    enc->n = enc->cap = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* decoding one token                                                                           */

typedef struct {
    tk_buf *v;
    size_t n, cap;
} tk_strs;

static void strs_push(tk_strs *a, const char *s, size_t n) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 8;
        a->v = pt_xrealloc(a->v, a->cap * sizeof *a->v);
    }
    memset(&a->v[a->n], 0, sizeof a->v[a->n]);
    tk_buf_put(&a->v[a->n], s, n);
    a->n++;
}

static void strs_free(tk_strs *a) {
    for (size_t i = 0; i < a->n; i++) free(a->v[i].p);
    free(a->v);
    memset(a, 0, sizeof *a);
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* "<0xXX>" (Rust u8::from_str_radix on the two chars: a leading '+' is accepted) */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int a = hexval(s[3]), b = hexval(s[4]);
    if (s[3] == '+' && b >= 0) return b;
    if (a < 0 || b < 0) return -1;
    return a * 16 + b;
}

static int decode_chain(const pt_tokenizer *t, tk_strs *in, pcre2_match_data *md, pt_error *e) {
    for (size_t k = 0; k < t->n_dec; k++) {
        const tk_dec *d = &t->dec[k];
        tk_strs out = {0};
        switch (d->kind) {
        case D_BYTELEVEL: {
            tk_buf raw = {0};
            for (size_t i = 0; i < in->n; i++) {
                const char *s = in->v[i].p;
                size_t n = in->v[i].n, start = raw.n;
                int ok = 1;
                for (size_t j = 0; j < n;) {
                    int l;
                    int b = cp_to_byte(tk_utf8_get(s + j, &l));
                    j += (size_t)l;
                    if (b < 0) {
                        ok = 0;
                        break;
                    }
                    tk_buf_putc(&raw, (char)b);
                }
                if (!ok) {
                    raw.n = start;
                    tk_buf_put(&raw, s, n);
                }
            }
            strs_push(&out, "", 0);
            tk_buf_put_lossy(&out.v[0], raw.p ? raw.p : "", raw.n);
            free(raw.p);
            break;
        }
        case D_METASPACE:
            for (size_t i = 0; i < in->n; i++) {
                strs_push(&out, "", 0);
                const char *s = in->v[i].p;
                for (size_t j = 0; j < in->v[i].n;) {
                    int l;
                    uint32_t cp = tk_utf8_get(s + j, &l);
                    if (cp == d->repl) {
                        if (!(i == 0 && d->scheme != PS_NEVER)) tk_buf_putc(&out.v[out.n - 1], ' ');
                    } else {
                        tk_buf_put(&out.v[out.n - 1], s + j, (size_t)l);
                    }
                    j += (size_t)l;
                }
            }
            break;
        case D_BYTEFALLBACK: {
            tk_buf bytes = {0};
            for (size_t i = 0; i <= in->n; i++) {
                int b = i < in->n ? byte_token(in->v[i].p, in->v[i].n) : -1;
                if (b >= 0) {
                    tk_buf_putc(&bytes, (char)b);
                    continue;
                }
                if (bytes.n) {
                    if (tk_utf8_valid(bytes.p, bytes.n, NULL)) strs_push(&out, bytes.p, bytes.n);
                    else
                        for (size_t q = 0; q < bytes.n; q++) strs_push(&out, "\xEF\xBF\xBD", 3);
                    bytes.n = 0;
                }
                if (i < in->n) strs_push(&out, in->v[i].p, in->v[i].n);
            }
            free(bytes.p);
            break;
        }
        case D_FUSE: {
            strs_push(&out, "", 0);
            for (size_t i = 0; i < in->n; i++) tk_buf_put(&out.v[0], in->v[i].p, in->v[i].n);
            break;
        }
        case D_STRIP:
            for (size_t i = 0; i < in->n; i++) {
                const char *s = in->v[i].p;
                size_t n = in->v[i].n, nch = 0;
                for (size_t j = 0; j < n; j += (size_t)tk_utf8_len((unsigned char)s[j])) nch++;
                /* char index -> byte offset walk */
                size_t start_cut = 0, stop_cut = nch;
                size_t j = 0, ci = 0;
                while (ci < d->start && j < n) {
                    int l;
                    uint32_t cp = tk_utf8_get(s + j, &l);
                    if (cp != d->content) break;
                    start_cut = ci + 1;
                    j += (size_t)l;
                    ci++;
                }
                /* from the end */
                size_t jb = n;
                for (size_t q = 0; q < d->stop && q < nch; q++) {
                    size_t p = jb - 1;
                    while (p > 0 && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
                    int l;
                    uint32_t cp = tk_utf8_get(s + p, &l);
                    if (cp != d->content) break;
                    stop_cut = nch - q - 1;
                    jb = p;
                }
                strs_push(&out, "", 0);
                if (start_cut < stop_cut) {
                    /* bytes of chars [start_cut, stop_cut) */
                    size_t b0 = 0, cidx = 0;
                    while (cidx < start_cut) {
                        b0 += (size_t)tk_utf8_len((unsigned char)s[b0]);
                        cidx++;
                    }
                    size_t b1 = b0;
                    while (cidx < stop_cut) {
                        b1 += (size_t)tk_utf8_len((unsigned char)s[b1]);
                        cidx++;
                    }
                    tk_buf_put(&out.v[out.n - 1], s + b0, b1 - b0);
                }
            }
            break;
        case D_REPLACE: {
            tk_piecevec pv = {0};
            for (size_t i = 0; i < in->n; i++) {
                if (tk_regex_find_matches(&d->re, in->v[i].p, in->v[i].n, md, &pv, e)) {
                    free(pv.v);
                    strs_free(&out);
                    return -1;
                }
                strs_push(&out, "", 0);
                for (size_t q = 0; q < pv.n; q++) {
                    if (pv.v[q].is_match) tk_buf_put(&out.v[out.n - 1], d->str, d->len);
                    else tk_buf_put(&out.v[out.n - 1], in->v[i].p + pv.v[q].s, pv.v[q].e - pv.v[q].s);
                }
            }
            free(pv.v);
            break;
        }
        }
        strs_free(in);
        *in = out;
    }
    return 0;
}

/* token string of an id as decode sees it: added content first, then the model vocab */
static int id_token(const pt_tokenizer *t, int32_t id, const char **s, size_t *n) {
    if (id < 0 || id >= t->n_ids) return 0;
    int32_t a = t->added_of_id[id];
    if (a >= 0) {
        *s = t->added[a].content;
        *n = t->added[a].len;
        return 1;
    }
    if (id < t->bpe.n_ids && t->bpe.has[id]) {
        *s = t->bpe.pool + t->bpe.off[id];
        *n = t->bpe.len[id];
        return 1;
    }
    return 0;
}

static int build_pieces(pt_tokenizer *t, pt_error *e) {
    tk_buf pool = {0};
    t->piece_off = pt_xmalloc(((size_t)t->n_ids + 1) * sizeof *t->piece_off);
    pcre2_match_data *md = pcre2_match_data_create(16, NULL);
    if (!md) return pt_fail(e, "%s: out of memory", t->name);
    for (int32_t id = 0; id < t->n_ids; id++) {
        const char *s;
        size_t n;
        tk_strs v = {0};
        if (id_token(t, id, &s, &n)) strs_push(&v, s, n);
        if (t->has_decoder) {
            if (decode_chain(t, &v, md, e)) {
                strs_free(&v);
                pcre2_match_data_free(md);
                free(pool.p);
                return pt_fail_prefix(e, "%s: decoding token %d", t->name, (int)id);
            }
        }
        t->piece_off[id] = (uint32_t)pool.n;
        size_t start = pool.n;
        for (size_t i = 0; i < v.n; i++) {
            if (i && !t->has_decoder) tk_buf_putc(&pool, ' ');
            tk_buf_put(&pool, v.v[i].p ? v.v[i].p : "", v.v[i].n);
        }
        /* replace ill-formed UTF-8 */
        if (!tk_utf8_valid(pool.p + start, pool.n - start, NULL)) {
            tk_buf tmp = {0};
            tk_buf_put_lossy(&tmp, pool.p + start, pool.n - start);
            pool.n = start;
            tk_buf_put(&pool, tmp.p, tmp.n);
            free(tmp.p);
        }
        tk_buf_putc(&pool, 0);
        strs_free(&v);
        if (pool.n > UINT32_MAX - 1024) {
            pcre2_match_data_free(md);
            free(pool.p);
            return pt_fail(e, "%s: decoded pieces too large", t->name);
        }
    }
    t->piece_off[t->n_ids] = (uint32_t)pool.n;
    pcre2_match_data_free(md);
    t->piece_pool = pool.p ? pool.p : pt_xcalloc(1, 1);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* loading                                                                                      */

void pt_tokenizer_free(pt_tokenizer *t) {
    if (!t) return;
    tk_bpe_free(&t->bpe);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t->added_of_id);
    free(t->trie_raw.nodes);
    free(t->trie_norm.nodes);
    for (size_t i = 0; i < t->n_norm; i++) {
        free(t->norm[i].str);
        tk_regex_free(&t->norm[i].re);
    }
    free(t->norm);
    for (size_t i = 0; i < t->n_pre; i++) tk_regex_free(&t->pre[i].re);
    free(t->pre);
    for (size_t i = 0; i < t->n_post; i++) free_post(&t->post[i]);
    free(t->post);
    for (size_t i = 0; i < t->n_dec; i++) {
        free(t->dec[i].str);
        tk_regex_free(&t->dec[i].re);
    }
    free(t->dec);
    free(t->piece_pool);
    free(t->piece_off);
    free(t->lead);
    free(t->trail);
    free(t->unk_name);
    free(t->name);
    free(t);
}

/* normalize an added token's content with the tokenizer's normalizer (for the normalized trie) */
static int normalize_string(pt_tokenizer *t, const char *s, size_t n, tk_buf *out, pt_error *e) {
    tk_ctx c;
    memset(&c, 0, sizeof c);
    c.t = t;
    c.e = e;
    c.md = pcre2_match_data_create(16, NULL);
    if (!c.md) return pt_fail(e, "%s: out of memory", t->name);
    tk_al *al = ar_alloc(&c, (n + 1) * sizeof *al);
    for (size_t i = 0; i < n; i++) al[i] = (tk_al){(uint32_t)i, (uint32_t)i + 1};
    tk_split sp = {s, al, (uint32_t)n, 0, -1};
    int rc = normalize(&c, &sp);
    if (!rc) {
        out->n = 0;
        tk_buf_put(out, sp.s, sp.n);
    }
    ctx_free(&c);
    return rc;
}

static int load_added(lctx *L, pt_tokenizer *t, json_t *arr) {
    if (!arr || json_is_null(arr)) return 0;
    if (!json_is_array(arr)) return pt_fail(L->e, "%s: \"added_tokens\" must be a list", L->name);
    size_t n = json_array_size(arr);
    if (n > TK_MAX_IDS) return pt_fail(L->e, "%s: too many added tokens", L->name);
    t->added = pt_xcalloc(n + 1, sizeof *t->added);
    int32_t vocab_size = 0; /* tokenizers' model.get_vocab_size(): number of vocab entries */
    for (int32_t i = 0; i < t->bpe.n_ids; i++) vocab_size += t->bpe.has[i];
    int32_t max_added = -1;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(arr, i);
        if (!json_is_object(x)) return pt_fail(L->e, "%s: added_tokens[%zu] must be an object", L->name, i);
        tk_added a;
        memset(&a, 0, sizeof a);
        const char *content;
        size_t clen;
        char what[48];
        snprintf(what, sizeof what, "added_tokens[%zu]", i);
        if (jstr(L, x, "content", 1, &content, &clen, what)) return -1;
        json_t *idv = json_object_get(x, "id");
        if (!json_is_integer(idv) || json_integer_value(idv) < 0 || json_integer_value(idv) >= TK_MAX_IDS)
            return pt_fail(L->e, "%s: %s.id must be an integer in [0, %d)", L->name, what, TK_MAX_IDS);
        if (jbool(L, x, "special", 0, &a.special, what) || jbool(L, x, "lstrip", 0, &a.lstrip, what) ||
            jbool(L, x, "rstrip", 0, &a.rstrip, what) ||
            jbool(L, x, "single_word", 0, &a.single_word, what) ||
            jbool(L, x, "normalized", !a.special, &a.normalized, what))
            return -1;
        if (clen == 0) continue; /* tokenizers ignores empty added tokens */
        for (size_t k = 0; k < t->n_added; k++)
            if (t->added[k].len == clen && !memcmp(t->added[k].content, content, clen))
                return pt_fail(L->e, "%s: added token '%.60s' is listed twice", L->name, content);
        /* the id tokenizers gives it: the vocab id if the content is in the vocab, else the next
         * id after the model vocabulary and the added tokens so far */
        int32_t want = tk_strmap_get(&t->bpe.map, content, clen);
        if (want < 0) {
            if (max_added < 0) want = vocab_size;
            else want = (max_added >= vocab_size || vocab_size == 0) ? max_added + 1 : vocab_size;
        }
        int32_t id = (int32_t)json_integer_value(idv);
        if (id != want)
            return pt_fail(L->e, "%s: added token '%.60s' has id %d but tokenizers would give it id %d",
                           L->name, content, (int)id, (int)want);
        if (want > max_added) max_added = want;
        a.id = id;
        a.content = dupn(content, clen);
        a.len = clen;
        t->added[t->n_added++] = a;
    }
    return 0;
}

static int finish(lctx *L, pt_tokenizer *t) {
    /* ids */
    t->n_ids = t->bpe.n_ids;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id + 1 > t->n_ids) t->n_ids = t->added[i].id + 1;
    for (size_t p = 0; p < t->n_post; p++)
        for (int i = 0; i < t->post[p].n_items; i++)
            for (int k = 0; k < t->post[p].items[i].n; k++)
                if (t->post[p].items[i].ids[k] >= t->n_ids)
                    return pt_fail(L->e, "%s: TemplateProcessing special token id %d is outside the vocabulary",
                                   L->name, (int)t->post[p].items[i].ids[k]);
    t->added_of_id = pt_xmalloc(((size_t)t->n_ids + 1) * sizeof *t->added_of_id);
    for (int32_t i = 0; i < t->n_ids; i++) t->added_of_id[i] = -1;
    for (size_t i = 0; i < t->n_added; i++) t->added_of_id[t->added[i].id] = (int32_t)i;
    /* tries: special tokens first, then the others (order does not change leftmost-longest) */
    trie_init(&t->trie_raw);
    trie_init(&t->trie_norm);
    tk_buf nb = {0};
    for (size_t i = 0; i < t->n_added; i++) {
        tk_added *a = &t->added[i];
        if (!a->normalized) {
            trie_add(&t->trie_raw, a->content, a->len, (int32_t)i);
        } else {
            if (normalize_string(t, a->content, a->len, &nb, L->e)) {
                free(nb.p);
                return pt_fail_prefix(L->e, "%s: normalizing added token", L->name);
            }
            trie_add(&t->trie_norm, nb.p, nb.n, (int32_t)i);
        }
    }
    free(nb.p);
    /* leading/trailing trim chars of model tokens (ByteLevel post-processor) */
    t->lead = pt_xcalloc((size_t)t->n_ids + 1, sizeof *t->lead);
    t->trail = pt_xcalloc((size_t)t->n_ids + 1, sizeof *t->trail);
    for (int32_t id = 0; id < t->bpe.n_ids; id++)
        if (t->bpe.has[id]) lead_trail(t->bpe.pool + t->bpe.off[id], t->bpe.len[id], &t->lead[id], &t->trail[id]);
    return build_pieces(t, L->e);
}

/* messages quote strings from the file: keep them on one line */
static void one_line(pt_error *e) {
    if (!e) return;
    for (char *p = e->msg; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
}

static pt_tokenizer *parse(const char *json, size_t len, const char *name, pt_error *e);

pt_tokenizer *pt_tokenizer_parse(const char *json, size_t len, const char *name, pt_error *e) {
    pt_tokenizer *t = parse(json, len, name, e);
    if (!t) one_line(e);
    return t;
}

static pt_tokenizer *parse(const char *json, size_t len, const char *name, pt_error *e) {
    if (!name) name = "tokenizer.json";
    if (len > TK_MAX_FILE) {
        pt_fail(e, "%s: file too large (%zu bytes)", name, len);
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) {
        pt_fail(e, "%s: invalid JSON at line %d column %d: %s", name, je.line, je.column, je.text);
        return NULL;
    }
    pt_tokenizer *t = pt_xcalloc(1, sizeof *t);
    t->name = pt_xstrdup(name);
    lctx L = {t->name, e};
    json_t *x;
    if (!json_is_object(root)) {
        pt_fail(e, "%s: top level must be an object", name);
        goto fail;
    }
    x = json_object_get(root, "truncation");
    if (x && !json_is_null(x)) {
        pt_fail(e, "%s: truncation is not supported (must be null)", name);
        goto fail;
    }
    x = json_object_get(root, "padding");
    if (x && !json_is_null(x)) {
        pt_fail(e, "%s: padding is not supported (must be null)", name);
        goto fail;
    }
    if (!json_object_get(root, "model")) {
        pt_fail(e, "%s: no \"model\"", name);
        goto fail;
    }
    if (load_model(&L, t, json_object_get(root, "model"))) goto fail;
    x = json_object_get(root, "normalizer");
    if (x && !json_is_null(x) && load_normalizer(&L, t, x)) goto fail;
    x = json_object_get(root, "pre_tokenizer");
    if (x && !json_is_null(x) && load_pre(&L, t, x)) goto fail;
    x = json_object_get(root, "post_processor");
    if (x && !json_is_null(x) && load_post(&L, t, x)) goto fail;
    x = json_object_get(root, "decoder");
    if (x && !json_is_null(x)) {
        t->has_decoder = 1;
        if (load_decoder(&L, t, x)) goto fail;
    }
    if (load_added(&L, t, json_object_get(root, "added_tokens"))) goto fail;
    if (finish(&L, t)) goto fail;
    json_decref(root);
    return t;
fail:
    json_decref(root);
    pt_tokenizer_free(t);
    return NULL;
}

pt_tokenizer *pt_tokenizer_load(const char *path, pt_error *e) {
    size_t len;
    char *buf = pt_read_file(path, TK_MAX_FILE, &len, e);
    if (!buf) return NULL;
    pt_tokenizer *t = pt_tokenizer_parse(buf, len, path, e);
    free(buf);
    return t;
}

const char *pt_tokenizer_piece(const pt_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_ids) return NULL;
    return t->piece_pool + t->piece_off[id];
}

const char *pt_tokenizer_piece_bytes(const pt_tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || id >= t->n_ids) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->piece_off[id + 1] - t->piece_off[id] - 1;
    return t->piece_pool + t->piece_off[id];
}

int pt_tokenizer_vocab_size(const pt_tokenizer *t) { return t ? (int)t->n_ids : 0; }
