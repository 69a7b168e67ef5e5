/* punctum — chat templates from a model directory, rendered by the Jinja interpreter of this
 * directory (jinja*.c) with the variables transformers passes (see punctum/chat.h). */
#include "punctum/chat.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chat/jinja.h"

#define CHAT_MAX_CONFIG ((size_t)256 << 20)
#define N_SPECIAL 7

static const char *const SPECIAL[N_SPECIAL] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                               "pad_token", "cls_token", "mask_token"};

struct pt_chat {
    char *name;
    jn_ctx parse; /* owns the syntax tree */
    jnode *body;
    char *var[N_SPECIAL]; /* NULL: not set (undefined in the template) */
    uint64_t src_hash;
    char fingerprint[40];
};

static uint64_t fnv1a(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int utf8_ok(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t l;
        if (ju_get(s + i, n - i, &l) == 0xFFFD &&
            !(n - i >= 3 && !memcmp(s + i, "\xEF\xBF\xBD", 3)))
            return 0;
        i += l;
    }
    return 1;
}

pt_chat *pt_chat_parse(const char *src, size_t len, const char *name, pt_error *e) {
    pt_chat *c = pt_try_calloc(1, sizeof *c, "a chat template", e);
    if (c && !(c->name = pt_try_strdup(name ? name : "chat template", "a chat template", e))) {
        free(c);
        c = NULL;
    }
    if (!c) {
        pt_fail_prefix(e, "%s", name ? name : "chat template");
        return NULL;
    }
    if (!utf8_ok(src, len) || memchr(src, 0, len)) {
        pt_fail(e, "%s: the template is not valid UTF-8 text", c->name);
        pt_chat_free(c);
        return NULL;
    }
    jn_init(&c->parse, c->name, e);
    if (setjmp(c->parse.jmp)) {
        pt_chat_free(c);
        return NULL;
    }
    c->body = jn_parse(&c->parse, src, len);
    c->src_hash = fnv1a(1469598103934665603ull, src, len);
    return c;
}

int pt_chat_set_var(pt_chat *c, const char *name, const char *value, pt_error *e) {
    for (int k = 0; k < N_SPECIAL; k++)
        if (!strcmp(SPECIAL[k], name)) {
            char *v = value ? pt_try_strdup(value, name, e) : NULL;
            if (value && !v) return pt_fail_prefix(e, "%s", c->name);
            free(c->var[k]);
            c->var[k] = v;
        }
    return 0;
}

void pt_chat_free(pt_chat *c) {
    if (!c) return;
    jn_release(&c->parse);
    for (int k = 0; k < N_SPECIAL; k++) free(c->var[k]);
    free(c->name);
    free(c);
}

const char *pt_chat_name(const pt_chat *c) {
    return c->name;
}

const char *pt_chat_fingerprint(pt_chat *c) {
    uint64_t h = c->src_hash;
    for (int k = 0; k < N_SPECIAL; k++)
        h = fnv1a(h, c->var[k] ? c->var[k] : "", c->var[k] ? strlen(c->var[k]) + 1 : 0);
    snprintf(c->fingerprint, sizeof c->fingerprint, "%016llx", (unsigned long long)h);
    return c->fingerprint;
}

/* ---- rendering --------------------------------------------------------------------------------
 */

static jv message(jn_ctx *j, const char *role, const char *content, int marked) {
    jdict *d = jd_new(j);
    jv text = jv_cstr(content);
    if (marked && text.u.s.n) text.m0 = 0, text.m1 = (int32_t)text.u.s.n;
    jd_set(j, d, jv_cstr("role"), jv_cstr(role));
    jd_set(j, d, jv_cstr("content"), text);
    return jv_dict(d, 0);
}

static jscope *variables(const pt_chat *c, jn_ctx *j, const char *system, const char *prompt) {
    jscope *s = js_new(j, NULL);
    jlist *msgs = jl_new(j, 2);
    if (system) jl_push(j, msgs, message(j, "system", system, 0));
    jl_push(j, msgs, message(j, "user", prompt, 1));
    js_set(j, s, "messages", jv_list(msgs, 0));
    js_set(j, s, "tools", jv_none());
    js_set(j, s, "documents", jv_none());
    js_set(j, s, "add_generation_prompt", jv_bool(1));
    for (int k = 0; k < N_SPECIAL; k++)
        if (c->var[k]) js_set(j, s, SPECIAL[k], jv_cstr(c->var[k]));
    return s;
}

static int render(const pt_chat *c, const char *system, const char *prompt, pt_chat_text *out,
                  jn_errkind *kind, pt_error *e) {
    memset(out, 0, sizeof *out);
    if (strlen(prompt) > JN_MAX_OUTPUT || (system && strlen(system) > JN_MAX_OUTPUT))
        return pt_fail(e, "%s: prompt longer than %zu MiB", c->name, JN_MAX_OUTPUT >> 20);
    jn_ctx j;
    jn_init(&j, c->name, e);
    if (setjmp(j.jmp)) {
        if (kind) *kind = j.kind;
        jn_release(&j);
        return -1;
    }
    jn_buf b = {0};
    jn_render(&j, c->body, variables(c, &j, system, prompt), &b);
    out->text = pt_try_alloc(b.n + 1, "the rendered prompt", e);
    out->span = out->text ? pt_try_calloc((size_t)b.n_marks * 2 + 1, sizeof *out->span,
                                          "the rendered prompt", e)
                          : NULL;
    if (!out->span) {
        free(out->text);
        memset(out, 0, sizeof *out);
        jn_release(&j);
        return pt_fail_prefix(e, "%s", c->name);
    }
    memcpy(out->text, b.p, b.n + 1);
    out->len = b.n;
    out->n_span = b.n_marks;
    memcpy(out->span, b.marks, (size_t)b.n_marks * 2 * sizeof *out->span);
    jn_release(&j);
    return 0;
}

int pt_chat_render(const pt_chat *c, const char *system, const char *prompt, pt_chat_text *out,
                   pt_error *e) {
    return render(c, system, prompt, out, NULL, e);
}

void pt_chat_text_free(pt_chat_text *t) {
    if (!t) return;
    free(t->text);
    free(t->span);
    memset(t, 0, sizeof *t);
}

int pt_chat_role(const pt_chat_text *t, int32_t start, int32_t end) {
    if (end <= start) return 0;
    for (int k = 0; k < t->n_span; k++)
        if (start < t->span[2 * k + 1] && end > t->span[2 * k]) return 1;
    return 0;
}

/* ---- loading from a model directory -----------------------------------------------------------
 */

static json_t *load_json(const char *path, int *missing, pt_error *e) {
    struct stat st;
    *missing = stat(path, &st) != 0;
    if (*missing) return NULL;
    size_t len;
    char *buf = pt_read_file(path, CHAT_MAX_CONFIG, &len, e);
    if (!buf) return NULL;
    json_error_t je;
    json_t *j = json_loadb(buf, len, JSON_DECODE_INT_AS_REAL, &je); /* model_max_length: 1e30 */
    free(buf);
    if (!j || !json_is_object(j)) {
        pt_fail(e, "%s: %s (line %d)", path, j ? "not a JSON object" : je.text, je.line);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* a special token: a string, or an AddedToken object with "content" */
static const char *token_value(json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v) && json_is_string(json_object_get(v, "content")))
        return json_string_value(json_object_get(v, "content"));
    return NULL;
}

static int set_specials(pt_chat *c, json_t *cfg, json_t *map, pt_error *e) {
    for (int k = 0; k < N_SPECIAL; k++) {
        json_t *v = cfg ? json_object_get(cfg, SPECIAL[k]) : NULL;
        if (!v && map) v = json_object_get(map, SPECIAL[k]);
        const char *s = token_value(v);
        if (s && pt_chat_set_var(c, SPECIAL[k], s, e)) return -1;
    }
    return 0;
}

/* tokenizer_config.json's chat_template: the string, or "default" of a list of named ones */
static const char *config_template(json_t *cfg, const char *path, char *name, size_t name_cap,
                                   pt_error *e, int *absent) {
    json_t *t = cfg ? json_object_get(cfg, "chat_template") : NULL;
    snprintf(name, name_cap, "%s[chat_template]", path);
    if (!t || json_is_null(t)) {
        *absent = 1;
        return NULL;
    }
    if (json_is_string(t)) return json_string_value(t);
    if (!json_is_array(t)) {
        pt_fail(e, "%s: chat_template must be a string or a list of named templates", path);
        return NULL;
    }
    size_t i;
    json_t *x;
    json_array_foreach(t, i, x) {
        json_t *nm = json_object_get(x, "name"), *tp = json_object_get(x, "template");
        if (json_is_string(nm) && !strcmp(json_string_value(nm), "default") && json_is_string(tp)) {
            snprintf(name, name_cap, "%s[chat_template default]", path);
            return json_string_value(tp);
        }
    }
    pt_fail(e, "%s: chat_template is a list of named templates without a \"default\" one", path);
    return NULL;
}

/* Render probe conversations: a construct the interpreter lacks shows up now, not mid-sweep. */
static int probe(pt_chat *c, pt_error *e) {
    const char *systems[] = {NULL, "You are a probe."};
    for (int k = 0; k < 2; k++) {
        pt_chat_text t;
        jn_errkind kind = 0;
        pt_error pe;
        if (render(c, systems[k], "Hello.", &t, &kind, &pe) == 0)
            pt_chat_text_free(&t);
        else if (kind == JE_UNSUPPORTED || kind == JE_LIMIT) {
            *e = pe;
            return -1;
        }
    }
    return 0;
}

pt_chat *pt_chat_load(const char *dir, int *absent, pt_error *e) {
    *absent = 0;
    char *jpath = pt_path_join(dir, "chat_template.jinja");
    char *cpath = pt_path_join(dir, "tokenizer_config.json");
    char *mpath = pt_path_join(dir, "special_tokens_map.json");
    int miss_cfg = 1, miss_map = 1, miss_jinja;
    json_t *cfg = load_json(cpath, &miss_cfg, e), *map = NULL;
    pt_chat *c = NULL;
    struct stat st;
    miss_jinja = stat(jpath, &st) != 0;
    if (!miss_cfg && !cfg) goto done;
    map = load_json(mpath, &miss_map, e);
    if (!miss_map && !map) goto done;
    if (!miss_jinja) {
        size_t len;
        char *src = pt_read_file(jpath, JN_MAX_SOURCE, &len, e);
        if (!src) goto done;
        c = pt_chat_parse(src, len, jpath, e);
        free(src);
    } else {
        char name[1200];
        const char *src = config_template(cfg, cpath, name, sizeof name, e, absent);
        if (*absent)
            pt_fail(
                e,
                "%s: the model has no chat template (no chat_template.jinja, no chat_template in "
                "tokenizer_config.json): --chat needs one",
                dir);
        if (src) c = pt_chat_parse(src, strlen(src), name, e);
    }
    if (c) {
        if (set_specials(c, cfg, map, e) || probe(c, e)) {
            pt_chat_free(c);
            c = NULL;
        }
    }
done:
    json_decref(cfg);
    json_decref(map);
    free(jpath);
    free(cpath);
    free(mpath);
    return c;
}
