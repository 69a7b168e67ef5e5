/* punctum — pairs JSONL: bounded line reader and record parsing/validation (SPEC §2, §7). */
#include "punctum/records.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int pt_jsonl_open(pt_jsonl *r, const char *path, pt_error *e) {
    memset(r, 0, sizeof *r);
    r->f = fopen(path, "rb");
    if (!r->f) return pt_fail(e, "%s: cannot open: %s", path, strerror(errno));
    r->path = pt_xstrdup(path);
    r->cap = 4096;
    r->buf = pt_xmalloc(r->cap);
    return 0;
}

void pt_jsonl_close(pt_jsonl *r) {
    if (r->f) fclose(r->f);
    free(r->buf);
    free(r->path);
    memset(r, 0, sizeof *r);
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}

const char *pt_jsonl_next(pt_jsonl *r, size_t *len) {
    for (;;) {
        size_t n = 0;
        int c, any = 0;
        r->too_long = 0;
        while ((c = getc(r->f)) != EOF) {
            any = 1;
            if (c == '\n') break;
            if (r->too_long) continue; /* drain an oversized line without keeping it */
            if (n + 1 >= PT_MAX_LINE_BYTES) {
                r->too_long = 1;
                continue;
            }
            if (n + 1 >= r->cap) {
                r->cap *= 2;
                r->buf = pt_xrealloc(r->buf, r->cap);
            }
            r->buf[n++] = (char)c;
        }
        if (!any) return NULL;
        r->line_no++;
        if (r->too_long) n = 0;
        r->buf[n] = 0;
        if (!r->too_long && is_blank(r->buf, n)) {
            if (c == EOF) return NULL;
            continue;
        }
        *len = n;
        return r->buf;
    }
}

static void bad(pt_record *rec, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(pt_record *rec, const char *fmt, ...) {
    if (rec->status) return; /* keep the first problem */
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    rec->status = 1;
    snprintf(rec->message, sizeof rec->message, "line %lld: %s", (long long)rec->line, what);
}

void pt_record_free(pt_record *rec) {
    free(rec->id);
    for (int s = 0; s < 2; s++) {
        free(rec->text[s]);
        free(rec->ids[s]);
        free(rec->byte_start[s]);
        free(rec->byte_end[s]);
        free(rec->role[s]);
    }
    free(rec->system);
    free(rec->target_text);
    free(rec->target_b_text);
    free(rec->positions);
    memset(rec, 0, sizeof *rec);
}

/* An array of integers in [0, limit) -> newly allocated int32 array. */
static int int_array(pt_record *rec, json_t *v, const char *key, int64_t limit, int32_t **out,
                     int *n_out) {
    if (!json_is_array(v)) {
        bad(rec, "'%s' must be a list of integers", key);
        return -1;
    }
    size_t n = json_array_size(v);
    int32_t *ids = pt_xmalloc((n ? n : 1) * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(v, i);
        if (!json_is_integer(x)) {
            free(ids);
            bad(rec, "'%s'[%zu] is not an integer", key, i);
            return -1;
        }
        json_int_t k = json_integer_value(x);
        if (k < 0 || k >= limit) {
            free(ids);
            bad(rec, "'%s'[%zu] = %lld is out of range [0, %lld)", key, i, (long long)k,
                (long long)limit);
            return -1;
        }
        ids[i] = (int32_t)k;
    }
    *out = ids;
    *n_out = (int)n;
    return 0;
}

static int is_sentence_punct_tail(const char *s, size_t n, size_t *cut) {
    /* ASCII . , ; : ! ? and the ellipsis / CJK marks, as UTF-8 suffixes */
    static const char *marks[] = {".", ",", ";", ":", "!", "?", "\xe2\x80\xa6", "\xe3\x80\x82",
                                  "\xe3\x80\x81", "\xef\xbc\x8c", "\xef\xbc\x8e", "\xef\xbc\x81",
                                  "\xef\xbc\x9f"};
    for (size_t k = 0; k < sizeof marks / sizeof marks[0]; k++) {
        size_t m = strlen(marks[k]);
        if (n >= m && memcmp(s + n - m, marks[k], m) == 0) {
            *cut = m;
            return 1;
        }
    }
    return 0;
}

/* Byte length of the white-space character (Unicode White_Space, PropList.txt) ending
 * s[0..n), 0 if none. line_breaks = 0: the line breaks of has_line_break() do not count. */
static size_t trailing_space(const char *s, size_t n, int line_breaks) {
    static const char *ws[] = {"\xc2\xa0",     "\xe1\x9a\x80", "\xe2\x80\xaf", "\xe2\x81\x9f",
                               "\xe3\x80\x80", "\xc2\x85",     "\xe2\x80\xa8", "\xe2\x80\xa9"};
    const size_t n_ws = line_breaks ? 8 : 5; /* the last three are line breaks */
    if (n == 0) return 0;
    const unsigned char c = (unsigned char)s[n - 1];
    if (c == ' ' || c == '\t') return 1;
    if (c >= 0x0a && c <= 0x0d) return line_breaks ? 1 : 0;
    /* U+2000 ... U+200A: e2 80 80 ... e2 80 8a */
    if (n >= 3 && (unsigned char)s[n - 3] == 0xe2 && (unsigned char)s[n - 2] == 0x80 && c >= 0x80 &&
        c <= 0x8a)
        return 3;
    for (size_t k = 0; k < n_ws; k++) {
        size_t m = strlen(ws[k]);
        if (n >= m && memcmp(s + n - m, ws[k], m) == 0) return m;
    }
    return 0;
}

/* A mandatory line break of UAX #14 (LF, VT, FF, CR, NEL, LINE / PARAGRAPH SEPARATOR). */
static int has_line_break(const char *s) {
    return strpbrk(s, "\n\v\f\r") || strstr(s, "\xc2\x85") || strstr(s, "\xe2\x80\xa8") ||
           strstr(s, "\xe2\x80\xa9");
}

int pt_is_punct_text(const char *s) {
    if (!s) return 0;
    if (has_line_break(s)) return 1;
    size_t n = strlen(s), w;
    while ((w = trailing_space(s, n, 1)) > 0) n -= w;
    size_t cut;
    return is_sentence_punct_tail(s, n, &cut);
}

/* --derive-b strip-punct: drop the final run of sentence punctuation and the white space
 * between and after its marks (line breaks excepted); a is copied unchanged when it does not
 * end in punctuation. */
static char *strip_trailing_punct(const char *a) {
    size_t n = strlen(a), cut, w;
    int any = 0;
    for (;;) {
        while ((w = trailing_space(a, n, 0)) > 0) n -= w;
        if (!is_sentence_punct_tail(a, n, &cut)) break;
        n -= cut;
        any = 1;
    }
    if (!any) n = strlen(a);
    char *b = pt_xmalloc(n + 1);
    memcpy(b, a, n);
    b[n] = 0;
    return b;
}

/* First token of `target` tokenized in context: the first token of encode(prompt + target)
 * that ends beyond the prompt's bytes. */
static int32_t target_in_context(const pt_record_ctx *ctx, pt_record *rec, const char *prompt,
                                 const char *target) {
    size_t lp = strlen(prompt), lt = strlen(target);
    char *joined = pt_xmalloc(lp + lt + 1);
    memcpy(joined, prompt, lp);
    memcpy(joined + lp, target, lt + 1);
    pt_encoding enc = {0};
    pt_error e;
    int32_t id = -1;
    if (pt_tokenizer_encode(ctx->tok, joined, lp + lt, !ctx->chat, &enc, &e))
        bad(rec, "cannot tokenize target: %s", e.msg);
    else
        for (size_t i = 0; i < enc.n; i++)
            if (enc.byte_end[i] > (int32_t)lp) {
                id = enc.ids[i];
                break;
            }
    if (id < 0 && !rec->status) bad(rec, "'target' gives no token after the prompt");
    pt_encoding_free(&enc);
    free(joined);
    return id;
}

/* --chat: the side's text becomes the rendered conversation; roles from the prompt's spans */
static int wrap_side(const pt_record_ctx *ctx, pt_record *rec, int side, pt_chat_text *ct) {
    pt_error e;
    if (pt_chat_render(ctx->chat, rec->system, rec->text[side], ct, &e)) {
        bad(rec, "chat template: %s", e.msg);
        return -1;
    }
    free(rec->text[side]);
    rec->text[side] = pt_xstrdup(ct->text);
    return 0;
}

static void encode_side(const pt_record_ctx *ctx, pt_record *rec, int side) {
    pt_encoding enc = {0};
    pt_error e;
    pt_chat_text ct = {0};
    if (ctx->chat && wrap_side(ctx, rec, side, &ct)) return;
    const char *t = rec->text[side];
    if (pt_tokenizer_encode(ctx->tok, t, strlen(t), !ctx->chat, &enc, &e)) {
        pt_chat_text_free(&ct);
        bad(rec, "cannot tokenize '%s': %s", side ? "b" : "a", e.msg);
        pt_encoding_free(&enc);
        return;
    }
    rec->n_tok[side] = (int)enc.n;
    rec->ids[side] = enc.ids;
    rec->byte_start[side] = enc.byte_start;
    rec->byte_end[side] = enc.byte_end;
    if (ctx->chat) {
        rec->role[side] = pt_xmalloc(enc.n + 1);
        for (size_t i = 0; i < enc.n; i++)
            rec->role[side][i] = (int8_t)pt_chat_role(&ct, enc.byte_start[i], enc.byte_end[i]);
    }
    pt_chat_text_free(&ct);
}

int pt_record_role(const pt_record *rec, int side, int t) {
    if (rec->role[side]) return rec->role[side][t];
    if (rec->byte_start[side][t] < 0) return 1; /* given as ids */
    return rec->byte_end[side][t] > rec->byte_start[side][t];
}

static char *get_text(pt_record *rec, json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return NULL;
    if (!json_is_string(v)) {
        bad(rec, "'%s' must be a string", key);
        return NULL;
    }
    return pt_xstrdup(json_string_value(v));
}

void pt_record_parse(const pt_record_ctx *ctx, const char *json, size_t len, int64_t line,
                     int64_t index, pt_record *rec) {
    memset(rec, 0, sizeof *rec);
    rec->line = line;
    rec->index = index;
    rec->target_id[0] = rec->target_id[1] = -1;
    char idbuf[32];
    snprintf(idbuf, sizeof idbuf, "%lld", (long long)line);

    json_error_t jerr;
    json_t *obj = len ? json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!obj || !json_is_object(obj)) {
        rec->id = pt_xstrdup(idbuf);
        if (len == 0)
            bad(rec, "record longer than %u bytes", PT_MAX_LINE_BYTES);
        else if (!obj)
            bad(rec, "invalid JSON: %s (column %d)", jerr.text, jerr.column);
        else
            bad(rec, "record is not a JSON object");
        json_decref(obj);
        return;
    }
    json_t *id = json_object_get(obj, "id");
    if (id && json_is_string(id))
        rec->id = pt_xstrdup(json_string_value(id));
    else if (id && json_is_integer(id)) {
        snprintf(idbuf, sizeof idbuf, "%lld", (long long)json_integer_value(id));
        rec->id = pt_xstrdup(idbuf);
    } else {
        rec->id = pt_xstrdup(idbuf);
        if (id && !json_is_null(id)) bad(rec, "'id' must be a string");
    }

    const char *keys_ids[2] = {"a_ids", "b_ids"}, *keys_txt[2] = {"a", "b"};
    for (int s = 0; s < 2; s++) {
        json_t *ids = json_object_get(obj, keys_ids[s]);
        json_t *txt = json_object_get(obj, keys_txt[s]);
        if (ids && !json_is_null(ids) && txt && !json_is_null(txt)) {
            bad(rec, "give either '%s' or '%s', not both", keys_txt[s], keys_ids[s]);
            continue;
        }
        if (ids && !json_is_null(ids)) {
            if (int_array(rec, ids, keys_ids[s], ctx->vocab_size, &rec->ids[s], &rec->n_tok[s]))
                continue;
            rec->byte_start[s] = pt_xmalloc(((size_t)rec->n_tok[s] + 1) * sizeof(int32_t));
            rec->byte_end[s] = pt_xmalloc(((size_t)rec->n_tok[s] + 1) * sizeof(int32_t));
            for (int i = 0; i < rec->n_tok[s]; i++) rec->byte_start[s][i] = rec->byte_end[s][i] = -1;
            if (s == 1) rec->has_b = 1;
        } else if (txt && !json_is_null(txt)) {
            rec->text[s] = get_text(rec, obj, keys_txt[s]);
            if (s == 1 && rec->text[s]) rec->has_b = 1;
        }
    }
    if (!rec->ids[0] && !rec->text[0]) bad(rec, "missing 'a' (or 'a_ids')");
    if (ctx->chat && (rec->ids[0] || rec->ids[1]))
        bad(rec,
            "--chat wraps text prompts in the chat template: a record given as ids is skipped");
    json_t *sys = json_object_get(obj, "system");
    if (sys && !json_is_null(sys)) rec->system = get_text(rec, obj, "system");

    /* --derive-b for records without b */
    if (!rec->status && !rec->has_b && ctx->derive != PT_DERIVE_NONE) {
        if (!rec->text[0]) {
            bad(rec, "--derive-b needs a text prompt 'a'");
        } else if (ctx->derive == PT_DERIVE_APPEND) {
            size_t la = strlen(rec->text[0]), ls = strlen(ctx->derive_str);
            rec->text[1] = pt_xmalloc(la + ls + 1);
            memcpy(rec->text[1], rec->text[0], la);
            memcpy(rec->text[1] + la, ctx->derive_str, ls + 1);
            rec->has_b = 1;
        } else {
            rec->text[1] = strip_trailing_punct(rec->text[0]);
            rec->has_b = 1;
        }
    }

    /* text -> tokens */
    for (int s = 0; s < 2 && !rec->status; s++) {
        if (!rec->text[s]) continue;
        if (!ctx->tok) {
            bad(rec, "text record but the model has no tokenizer.json (give 'a_ids')");
            break;
        }
        encode_side(ctx, rec, s);
    }

    /* targets */
    json_t *tid = json_object_get(obj, "target_id");
    json_t *ttxt = json_object_get(obj, "target");
    if (!rec->status && tid && !json_is_null(tid)) {
        if (!json_is_integer(tid) || json_integer_value(tid) < 0 ||
            json_integer_value(tid) >= ctx->vocab_size)
            bad(rec, "'target_id' must be an integer in [0, %d)", ctx->vocab_size);
        else
            rec->target_id[0] = rec->target_id[1] = (int32_t)json_integer_value(tid);
    } else if (!rec->status && ttxt && !json_is_null(ttxt)) {
        rec->target_text = get_text(rec, obj, "target");
        if (rec->target_text && !ctx->tok)
            bad(rec, "'target' needs the model's tokenizer.json (give 'target_id')");
        else if (rec->target_text && (!rec->text[0] || (rec->has_b && !rec->text[1])))
            bad(rec, "'target' needs text prompts (give 'target_id' with ids)");
        else if (rec->target_text)
            for (int s = 0; s < 1 + rec->has_b && !rec->status; s++)
                rec->target_id[s] = target_in_context(ctx, rec, rec->text[s], rec->target_text);
    }

    /* the continuation b leads to (only matched against generated text) */
    json_t *ttb = json_object_get(obj, "target_b");
    if (!rec->status && ttb && !json_is_null(ttb))
        rec->target_b_text = get_text(rec, obj, "target_b");

    /* per-record positions */
    json_t *pos = json_object_get(obj, "positions");
    if (!rec->status && pos && !json_is_null(pos))
        int_array(rec, pos, "positions", ctx->max_positions, &rec->positions, &rec->n_positions);

    for (int s = 0; s < 1 + rec->has_b && !rec->status; s++) {
        const char *side = s ? "b" : "a";
        if (rec->n_tok[s] == 0)
            bad(rec, "prompt '%s' has no tokens", side);
        else if (rec->n_tok[s] > ctx->max_positions)
            bad(rec, "prompt '%s' has %d tokens, longer than the model's context of %d", side,
                rec->n_tok[s], ctx->max_positions);
    }
    json_decref(obj);
}
