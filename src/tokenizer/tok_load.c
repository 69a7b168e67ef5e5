/* punctum — Hugging Face tokenizer.json: parsing and validation, construction of the components
 * (normalizers, pre-tokenizers, model, post-processors, decoders, added tokens). Only BPE models
 * and the components named below are implemented; anything else is refused at load with a
 * message naming the component. Encoding is tok_encode.c, single-token decoding tok_decode.c. */
#include "tok_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TK_MAX_FILE ((size_t)256 << 20)
#define TK_MAX_IDS (1 << 24)

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
    if (!json_is_boolean(v))
        return pt_fail(L->e, "%s: %s.%s must be a boolean", L->name, what, key);
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

/* Out of memory while loading is an error naming the file: "NAME: out of memory allocating N
 * bytes for WHAT". Zeroed n x size bytes, or NULL. */
static void *lalloc(lctx *L, size_t n, size_t size, const char *what) {
    void *p = pt_try_calloc(n, size, what, L->e);
    if (!p) pt_fail_prefix(L->e, "%s", L->name);
    return p;
}

/* arr resized to n elements, or NULL with arr untouched (still the caller's) */
static void *lgrow(lctx *L, void *arr, size_t n, size_t size, const char *what) {
    size_t bytes;
    if (pt_mul_size(n, size, &bytes)) {
        pt_fail(L->e, "%s: %s: size overflow", L->name, what);
        return NULL;
    }
    void *p = pt_try_realloc(arr, bytes, what, L->e);
    if (!p) pt_fail_prefix(L->e, "%s", L->name);
    return p;
}

static char *dupn(lctx *L, const char *s, size_t n, const char *what) {
    char *d = lalloc(L, n + 1, 1, what);
    if (d) memcpy(d, s, n);
    return d;
}

/* a one-char string field (Metaspace replacement, Strip content) */
static int jchar(lctx *L, json_t *o, const char *key, uint32_t def, uint32_t *out,
                 const char *what) {
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
        return pt_fail(L->e, "%s: %s.pattern must have one of \"String\" or \"Regex\"", L->name,
                       what);
    json_t *v = s ? s : r;
    if (!json_is_string(v))
        return pt_fail(L->e, "%s: %s.pattern value must be a string", L->name, what);
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
        if (!strcmp(s, "always"))
            *scheme = PS_ALWAYS;
        else if (!strcmp(s, "first"))
            *scheme = PS_FIRST;
        else if (!strcmp(s, "never"))
            *scheme = PS_NEVER;
        else
            return pt_fail(L->e, "%s: %s.prepend_scheme '%s' is not supported", L->name, what, s);
    }
    if (json_is_false(aps) && *scheme != PS_NEVER)
        return pt_fail(L->e, "%s: %s: add_prefix_space false does not match prepend_scheme '%s'",
                       L->name, what, s ? s : "always");
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Sequence: the one composite every component kind has (a list of components of that kind,   */
/* applied in order), loaded by flattening it into the tokenizer's list of that kind           */

typedef int (*component_loader)(lctx *L, pt_tokenizer *t, json_t *o);

static int load_sequence(lctx *L, pt_tokenizer *t, json_t *o, const char *kind,
                         const char *list_key, component_loader load) {
    json_t *a = json_object_get(o, list_key);
    if (!json_is_array(a))
        return pt_fail(L->e, "%s: %s Sequence needs a \"%s\" list", L->name, kind, list_key);
    size_t i;
    json_t *x;
    json_array_foreach(a, i, x) if (load(L, t, x)) return -1;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* normalizers                                                                                  */

static int load_normalizer(lctx *L, pt_tokenizer *t, json_t *o) {
    const char *type = NULL;
    if (jtype(L, o, "normalizer", &type)) return -1;
    if (!strcmp(type, "Sequence"))
        return load_sequence(L, t, o, "normalizer", "normalizers", load_normalizer);
    tk_norm n;
    memset(&n, 0, sizeof n);
    if (!strcmp(type, "NFC"))
        n.kind = N_NFC;
    else if (!strcmp(type, "NFD"))
        n.kind = N_NFD;
    else if (!strcmp(type, "NFKC"))
        n.kind = N_NFKC;
    else if (!strcmp(type, "NFKD"))
        n.kind = N_NFKD;
    else if (!strcmp(type, "Lowercase"))
        n.kind = N_LOWER;
    else if (!strcmp(type, "Prepend")) {
        const char *s;
        size_t len;
        if (jstr(L, o, "prepend", 1, &s, &len, "normalizer Prepend")) return -1;
        n.kind = N_PREPEND;
        n.str = dupn(L, s, len, "normalizer Prepend");
        if (!n.str) return -1;
        n.len = len;
    } else if (!strcmp(type, "Replace")) {
        const char *s;
        size_t len;
        if (jstr(L, o, "content", 1, &s, &len, "normalizer Replace")) return -1;
        if (jpattern(L, o, &n.re, "normalizer Replace")) return -1;
        n.kind = N_REPLACE;
        n.str = dupn(L, s, len, "normalizer Replace");
        if (!n.str) {
            tk_regex_free(&n.re);
            return -1;
        }
        n.len = len;
    } else if (!strcmp(type, "Strip")) {
        n.kind = N_STRIP;
        if (jbool(L, o, "strip_left", 1, &n.left, "normalizer Strip") ||
            jbool(L, o, "strip_right", 1, &n.right, "normalizer Strip"))
            return -1;
    } else {
        return pt_fail(L->e, "%s: normalizer type '%s' is not supported", L->name, type);
    }
    tk_norm *grown = lgrow(L, t->norm, t->n_norm + 1, sizeof *t->norm, "normalizers");
    if (!grown) {
        free(n.str);
        tk_regex_free(&n.re);
        return -1;
    }
    t->norm = grown;
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
    if (!strcmp(type, "Sequence"))
        return load_sequence(L, t, o, "pre_tokenizer", "pretokenizers", load_pre);
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
        if (!strcmp(b, "Removed"))
            p.behavior = B_REMOVED;
        else if (!strcmp(b, "Isolated"))
            p.behavior = B_ISOLATED;
        else if (!strcmp(b, "MergedWithPrevious"))
            p.behavior = B_MERGED_PREV;
        else if (!strcmp(b, "MergedWithNext"))
            p.behavior = B_MERGED_NEXT;
        else if (!strcmp(b, "Contiguous"))
            p.behavior = B_CONTIGUOUS;
        else
            return pt_fail(L->e, "%s: pre_tokenizer Split behavior '%s' is not supported", L->name,
                           b);
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
    tk_pre *grown = lgrow(L, t->pre, t->n_pre + 1, sizeof *t->pre, "pre-tokenizers");
    if (!grown) {
        tk_regex_free(&p.re);
        return -1;
    }
    t->pre = grown;
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

static int load_template_item(lctx *L, pt_tokenizer *t, json_t *special, json_t *x,
                              tk_tpl_item *it) {
    memset(it, 0, sizeof *it);
    const char *name = NULL, *seq = NULL;
    if (json_is_string(x)) { /* "$A", "$A:1", "<s>", "<s>:0" */
        const char *s = json_string_value(x);
        if (s[0] == '$')
            seq = s + 1;
        else
            name = s;
    } else if (json_is_object(x)) {
        json_t *st = json_object_get(x, "SpecialToken"), *sq = json_object_get(x, "Sequence");
        if (st && json_is_object(st)) {
            json_t *id = json_object_get(st, "id");
            if (!json_is_string(id))
                return pt_fail(L->e, "%s: TemplateProcessing: SpecialToken without id", L->name);
            name = json_string_value(id);
        } else if (sq && json_is_object(sq)) {
            json_t *id = json_object_get(sq, "id");
            if (!json_is_string(id))
                return pt_fail(L->e, "%s: TemplateProcessing: Sequence without id", L->name);
            seq = json_string_value(id);
        }
    }
    if (!name && !seq)
        return pt_fail(L->e, "%s: TemplateProcessing: unrecognised template piece", L->name);
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
        return pt_fail(L->e, "%s: TemplateProcessing: special token '%s' is not in special_tokens",
                       L->name, key);
    json_t *ids = json_object_get(sp, "ids"), *toks = json_object_get(sp, "tokens");
    if (!json_is_array(ids) || !json_is_array(toks) ||
        json_array_size(ids) != json_array_size(toks) || json_array_size(ids) > 64)
        return pt_fail(
            L->e, "%s: TemplateProcessing: special token '%s' needs ids and tokens of equal length",
            L->name, key);
    const int n = (int)json_array_size(ids);
    it->ids = lalloc(L, (size_t)n + 1, sizeof *it->ids, "TemplateProcessing ids");
    if (!it->ids) return -1;
    it->tokens = lalloc(L, (size_t)n + 1, sizeof *it->tokens, "TemplateProcessing tokens");
    if (!it->tokens) return -1;
    it->n = n; /* the tokens are NULL until set: free_post may free them all */
    for (int k = 0; k < it->n; k++) {
        json_t *a = json_array_get(ids, (size_t)k), *b = json_array_get(toks, (size_t)k);
        if (!json_is_integer(a) || json_integer_value(a) < 0 ||
            json_integer_value(a) >= TK_MAX_IDS || !json_is_string(b)) {
            it->n = k;
            return pt_fail(L->e, "%s: TemplateProcessing: special token '%s' has a bad id or token",
                           L->name, key);
        }
        it->ids[k] = (int32_t)json_integer_value(a);
        it->tokens[k] = dupn(L, json_string_value(b), json_string_length(b), "TemplateProcessing");
        if (!it->tokens[k]) return -1;
    }
    (void)t;
    return 0;
}

static int load_post(lctx *L, pt_tokenizer *t, json_t *o) {
    const char *type = NULL;
    if (jtype(L, o, "post_processor", &type)) return -1;
    if (!strcmp(type, "Sequence"))
        return load_sequence(L, t, o, "post_processor", "processors", load_post);
    tk_post p;
    memset(&p, 0, sizeof p);
    if (!strcmp(type, "ByteLevel")) {
        p.kind = PP_BYTELEVEL;
        if (jbool(L, o, "trim_offsets", 1, &p.trim_offsets, "post_processor ByteLevel") ||
            jbool(L, o, "add_prefix_space", 1, &p.add_prefix_space, "post_processor ByteLevel"))
            return -1;
    } else if (!strcmp(type, "TemplateProcessing")) {
        p.kind = PP_TEMPLATE;
        json_t *single = json_object_get(o, "single"),
               *special = json_object_get(o, "special_tokens");
        if (!json_is_array(single) || json_array_size(single) > 256)
            return pt_fail(L->e, "%s: TemplateProcessing needs a \"single\" list", L->name);
        if (special && !json_is_object(special))
            return pt_fail(L->e, "%s: TemplateProcessing special_tokens must be an object",
                           L->name);
        p.items = lalloc(L, json_array_size(single) + 1, sizeof *p.items, "TemplateProcessing");
        if (!p.items) return -1;
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
    tk_post *grown = lgrow(L, t->post, t->n_post + 1, sizeof *t->post, "post-processors");
    if (!grown) {
        free_post(&p);
        return -1;
    }
    t->post = grown;
    t->post[t->n_post++] = p;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* decoders                                                                                     */

static int load_decoder(lctx *L, pt_tokenizer *t, json_t *o) {
    const char *type = NULL;
    if (jtype(L, o, "decoder", &type)) return -1;
    if (!strcmp(type, "Sequence"))
        return load_sequence(L, t, o, "decoder", "decoders", load_decoder);
    tk_dec d;
    memset(&d, 0, sizeof d);
    if (!strcmp(type, "ByteLevel"))
        d.kind = D_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback"))
        d.kind = D_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse"))
        d.kind = D_FUSE;
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
            return pt_fail(L->e, "%s: decoder Strip start/stop must be non-negative integers",
                           L->name);
        d.start = a ? (size_t)json_integer_value(a) : 0;
        d.stop = b ? (size_t)json_integer_value(b) : 0;
    } else if (!strcmp(type, "Replace")) {
        d.kind = D_REPLACE;
        const char *s;
        size_t len;
        if (jstr(L, o, "content", 1, &s, &len, "decoder Replace")) return -1;
        if (jpattern(L, o, &d.re, "decoder Replace")) return -1;
        d.str = dupn(L, s, len, "decoder Replace");
        if (!d.str) {
            tk_regex_free(&d.re);
            return -1;
        }
        d.len = len;
    } else {
        return pt_fail(L->e, "%s: decoder type '%s' is not supported", L->name, type);
    }
    tk_dec *grown = lgrow(L, t->dec, t->n_dec + 1, sizeof *t->dec, "decoders");
    if (!grown) {
        free(d.str);
        tk_regex_free(&d.re);
        return -1;
    }
    t->dec = grown;
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
    if (strcmp(type, "BPE") != 0)
        return pt_fail(L->e, "%s: model type '%s' is not supported (only BPE)", L->name, type);
    tk_bpe *m = &t->bpe;
    json_t *dropout = json_object_get(o, "dropout");
    if (dropout && !json_is_null(dropout) &&
        !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return pt_fail(L->e, "%s: BPE dropout is not supported (must be null)", L->name);
    const char *s;
    size_t sl;
    if (jstr(L, o, "continuing_subword_prefix", 0, &s, &sl, "model")) return -1;
    if (s && sl)
        return pt_fail(L->e, "%s: BPE continuing_subword_prefix is not supported (must be null)",
                       L->name);
    if (jstr(L, o, "end_of_word_suffix", 0, &s, &sl, "model")) return -1;
    if (s && sl)
        return pt_fail(L->e, "%s: BPE end_of_word_suffix is not supported (must be null)", L->name);
    if (jbool(L, o, "byte_fallback", 0, &m->byte_fallback, "model") ||
        jbool(L, o, "fuse_unk", 0, &m->fuse_unk, "model") ||
        jbool(L, o, "ignore_merges", 0, &m->ignore_merges, "model"))
        return -1;

    json_t *vocab = json_object_get(o, "vocab");
    if (!json_is_object(vocab)) return pt_fail(L->e, "%s: model.vocab must be an object", L->name);
    size_t nv = json_object_size(vocab);
    if (nv > TK_MAX_IDS)
        return pt_fail(L->e, "%s: model.vocab is too large (%zu entries)", L->name, nv);
    int32_t max_id = -1;
    size_t pool_len = 0;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= TK_MAX_IDS)
            return pt_fail(L->e, "%s: model.vocab: id of '%.60s' is not an integer in [0, %d)",
                           L->name, key, TK_MAX_IDS);
        int32_t id = (int32_t)json_integer_value(val);
        if (id > max_id) max_id = id;
        pool_len += strlen(key) + 1;
    }
    if ((size_t)max_id >= nv + 4096)
        return pt_fail(L->e, "%s: model.vocab ids are not dense (max id %d with %zu entries)",
                       L->name, (int)max_id, nv);
    m->n_ids = max_id + 1;
    /* freed with the tokenizer (tk_bpe_free) when a later step fails */
    const size_t n_ids = (size_t)m->n_ids + 1;
    if (!(m->pool = lalloc(L, pool_len + 1, 1, "the vocabulary")) ||
        !(m->off = lalloc(L, n_ids, sizeof *m->off, "the vocabulary's offsets")) ||
        !(m->len = lalloc(L, n_ids, sizeof *m->len, "the vocabulary's lengths")) ||
        !(m->has = lalloc(L, n_ids, 1, "the vocabulary's id flags")))
        return -1;
    int32_t *ids = lalloc(L, nv + 1, sizeof *ids, "the vocabulary's ids");
    if (!ids) return -1;
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
    const int built = tk_strmap_build(&m->map, m->pool, m->off, m->len, ids, k, &dup, L->e);
    free(ids);
    if (built < 0) return pt_fail_prefix(L->e, "%s", L->name);
    if (built > 0)
        return pt_fail(L->e, "%s: model.vocab: duplicate token '%.60s'", L->name,
                       m->pool + m->off[dup]);
    for (int b = 0; b < 256; b++) {
        char code[8];
        snprintf(code, sizeof code, "<0x%02X>", b);
        m->byte_ids[b] = tk_strmap_get(&m->map, code, 6);
    }
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        m->small_ids[c] = tk_strmap_get(&m->map, &ch, 1);
    }
    m->cp2_ids = lalloc(L, 0x780, sizeof *m->cp2_ids, "the vocabulary's 2-byte characters");
    if (!m->cp2_ids) return -1;
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
            t->unk_name = dupn(L, unk, unk_len, "model.unk_token");
            if (!t->unk_name) return -1;
        }
    }

    json_t *merges = json_object_get(o, "merges");
    if (!merges || json_is_null(merges))
        merges = NULL;
    else if (!json_is_array(merges))
        return pt_fail(L->e, "%s: model.merges must be a list", L->name);
    size_t nm = merges ? json_array_size(merges) : 0;
    if (tk_pairmap_init(&m->merges, nm, L->e)) return pt_fail_prefix(L->e, "%s", L->name);
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
                return pt_fail(L->e, "%s: model.merges[%zu] is not of the form \"a b\"", L->name,
                               i);
            }
            a = line;
            la = (size_t)(sp - line);
            b = sp + 1;
            lb = ll - la - 1;
        } else if (json_is_array(x) && json_array_size(x) == 2 &&
                   json_is_string(json_array_get(x, 0)) && json_is_string(json_array_get(x, 1))) {
            a = json_string_value(json_array_get(x, 0));
            la = json_string_length(json_array_get(x, 0));
            b = json_string_value(json_array_get(x, 1));
            lb = json_string_length(json_array_get(x, 1));
        } else {
            free(cat.p);
            return pt_fail(L->e, "%s: model.merges[%zu] must be a string \"a b\" or a pair [a, b]",
                           L->name, i);
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
            int r = pt_fail(L->e, "%s: model.merges[%zu]: token '%.*s' is not in the vocabulary",
                            L->name, i, wl, which);
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

static int trie_init(lctx *L, tk_trie *tr) {
    memset(tr, 0, sizeof *tr);
    tr->nodes = lalloc(L, 16, sizeof *tr->nodes, "the added tokens' trie");
    if (!tr->nodes) return -1;
    tr->cap = 16;
    tr->nodes[0] = (tk_node){-1, -1, -1, 0};
    tr->n = 1;
    tr->empty = 1;
    return 0;
}

static int trie_add(lctx *L, tk_trie *tr, const char *s, size_t n, int32_t term) {
    if (n == 0) return 0;
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        int32_t c = tr->nodes[cur].child;
        while (c >= 0 && tr->nodes[c].byte != b) c = tr->nodes[c].sibling;
        if (c < 0) {
            if (tr->n == tr->cap) {
                tk_node *grown =
                    lgrow(L, tr->nodes, tr->cap * 2, sizeof *tr->nodes, "the added tokens' trie");
                if (!grown) return -1;
                tr->nodes = grown;
                tr->cap *= 2;
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

static int load_added(lctx *L, pt_tokenizer *t, json_t *arr) {
    if (!arr || json_is_null(arr)) return 0;
    if (!json_is_array(arr)) return pt_fail(L->e, "%s: \"added_tokens\" must be a list", L->name);
    size_t n = json_array_size(arr);
    if (n > TK_MAX_IDS) return pt_fail(L->e, "%s: too many added tokens", L->name);
    t->added = lalloc(L, n + 1, sizeof *t->added, "the added tokens");
    if (!t->added) return -1;
    int32_t vocab_size = 0; /* tokenizers' model.get_vocab_size(): number of vocab entries */
    for (int32_t i = 0; i < t->bpe.n_ids; i++) vocab_size += t->bpe.has[i];
    int32_t max_added = -1;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(arr, i);
        if (!json_is_object(x))
            return pt_fail(L->e, "%s: added_tokens[%zu] must be an object", L->name, i);
        tk_added a;
        memset(&a, 0, sizeof a);
        const char *content;
        size_t clen;
        char what[48];
        snprintf(what, sizeof what, "added_tokens[%zu]", i);
        if (jstr(L, x, "content", 1, &content, &clen, what)) return -1;
        json_t *idv = json_object_get(x, "id");
        if (!json_is_integer(idv) || json_integer_value(idv) < 0 ||
            json_integer_value(idv) >= TK_MAX_IDS)
            return pt_fail(L->e, "%s: %s.id must be an integer in [0, %d)", L->name, what,
                           TK_MAX_IDS);
        if (jbool(L, x, "special", 0, &a.special, what) ||
            jbool(L, x, "lstrip", 0, &a.lstrip, what) ||
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
            if (max_added < 0)
                want = vocab_size;
            else
                want = (max_added >= vocab_size || vocab_size == 0) ? max_added + 1 : vocab_size;
        }
        int32_t id = (int32_t)json_integer_value(idv);
        if (id != want)
            return pt_fail(L->e,
                           "%s: added token '%.60s' has id %d but tokenizers would give it id %d",
                           L->name, content, (int)id, (int)want);
        if (want > max_added) max_added = want;
        a.id = id;
        a.content = dupn(L, content, clen, "an added token");
        if (!a.content) return -1;
        a.len = clen;
        t->added[t->n_added++] = a;
    }
    return 0;
}

/* The added tokens' tries: special tokens first, then the others (order does not change
 * leftmost-longest). */
static int build_tries(lctx *L, pt_tokenizer *t) {
    if (trie_init(L, &t->trie_raw) || trie_init(L, &t->trie_norm)) return -1;
    tk_buf nb = {0};
    int rc = 0;
    for (size_t i = 0; i < t->n_added && !rc; i++) {
        const tk_added *a = &t->added[i];
        if (!a->normalized)
            rc = trie_add(L, &t->trie_raw, a->content, a->len, (int32_t)i);
        else if (tk_normalize_string(t, a->content, a->len, &nb, L->e))
            rc = pt_fail_prefix(L->e, "%s: normalizing added token", L->name);
        else
            rc = trie_add(L, &t->trie_norm, nb.p, nb.n, (int32_t)i);
    }
    free(nb.p);
    return rc;
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
                    return pt_fail(
                        L->e,
                        "%s: TemplateProcessing special token id %d is outside the vocabulary",
                        L->name, (int)t->post[p].items[i].ids[k]);
    t->added_of_id =
        lalloc(L, (size_t)t->n_ids + 1, sizeof *t->added_of_id, "the added tokens' ids");
    if (!t->added_of_id) return -1;
    for (int32_t i = 0; i < t->n_ids; i++) t->added_of_id[i] = -1;
    for (size_t i = 0; i < t->n_added; i++) t->added_of_id[t->added[i].id] = (int32_t)i;
    if (build_tries(L, t)) return -1;
    /* leading/trailing trim chars of model tokens (ByteLevel post-processor) */
    t->lead =
        lalloc(L, (size_t)t->n_ids + 1, sizeof *t->lead, "the tokens' leading trim characters");
    if (!t->lead) return -1;
    t->trail =
        lalloc(L, (size_t)t->n_ids + 1, sizeof *t->trail, "the tokens' trailing trim characters");
    if (!t->trail) return -1;
    for (int32_t id = 0; id < t->bpe.n_ids; id++)
        if (t->bpe.has[id])
            tk_lead_trail(t->bpe.pool + t->bpe.off[id], t->bpe.len[id], &t->lead[id],
                          &t->trail[id]);
    return tk_build_pieces(t, L->e);
}

void tk_one_line(pt_error *e) {
    if (!e) return;
    for (char *p = e->msg; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
}

static pt_tokenizer *parse(const char *json, size_t len, const char *name, pt_error *e);

pt_tokenizer *pt_tokenizer_parse(const char *json, size_t len, const char *name, pt_error *e) {
    pt_tokenizer *t = parse(json, len, name, e);
    if (!t) tk_one_line(e);
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
    pt_tokenizer *t = pt_try_calloc(1, sizeof *t, "the tokenizer", e);
    if (t) t->name = pt_try_strdup(name, "the tokenizer's name", e);
    if (!t || !t->name) {
        pt_fail_prefix(e, "%s", name);
        json_decref(root);
        pt_tokenizer_free(t);
        return NULL;
    }
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
