/* punctum — decoding single tokens (tokenizers' decoder chain) into the per-id pieces that
 * pt_tokenizer_piece hands out; built once at load. */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

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
                    if (tk_utf8_valid(bytes.p, bytes.n, NULL))
                        strs_push(&out, bytes.p, bytes.n);
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
                    if (pv.v[q].is_match)
                        tk_buf_put(&out.v[out.n - 1], d->str, d->len);
                    else
                        tk_buf_put(&out.v[out.n - 1], in->v[i].p + pv.v[q].s,
                                   pv.v[q].e - pv.v[q].s);
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

int tk_build_pieces(pt_tokenizer *t, pt_error *e) {
    tk_buf pool = {0};
    t->piece_off = pt_try_calloc((size_t)t->n_ids + 1, sizeof *t->piece_off, "token pieces", e);
    if (!t->piece_off) return pt_fail_prefix(e, "%s", t->name);
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
        /* replace ill-formed UTF-8 (an empty piece has nothing to check: pool.p may be NULL) */
        if (pool.n > start && !tk_utf8_valid(pool.p + start, pool.n - start, NULL)) {
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
    t->piece_pool = pool.p ? pool.p : pt_try_calloc(1, 1, "token pieces", e);
    return t->piece_pool ? 0 : pt_fail_prefix(e, "%s", t->name);
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

int pt_tokenizer_vocab_size(const pt_tokenizer *t) {
    return t ? (int)t->n_ids : 0;
}
