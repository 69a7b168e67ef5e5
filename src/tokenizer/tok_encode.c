/* punctum — encoding with a loaded tokenizer.json, equal to the `tokenizers` library (see
 * tok_internal.h for the pipeline): added tokens, normalizer, pre-tokenizers, BPE model,
 * offsets, post-processors. */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

typedef struct {
    int32_t id;
    uint32_t s, e; /* byte offsets in the original, then char offsets after conversion */
    uint16_t lead, trail;
} tk_otok;

typedef struct {
    const pt_tokenizer *t;
    pt_error *e;
    pt_arena arena; /* the pieces' text and alignment, freed with the context */
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
    return pt_arena_xalloc(&c->arena, n);
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
    for (size_t k = 0; k < initial && off < p->n; k++)
        off += (size_t)tk_utf8_len((unsigned char)p->s[off]);
    for (size_t i = 0; i < dest->n; i++) {
        int32_t ch = dest->v[i].change;
        tk_al a;
        if (ch > 0) {
            a = off < 1 ? (tk_al){0, 0} : p->al[off - 1 < p->n ? off - 1 : p->n - 1];
        } else {
            a = off < p->n ? p->al[off] : (p->n ? p->al[p->n - 1] : (tk_al){0, 0});
            if (off < p->n) off += (size_t)tk_utf8_len((unsigned char)p->s[off]);
            for (int32_t r = 0; r < -ch && off < p->n; r++)
                off += (size_t)tk_utf8_len((unsigned char)p->s[off]);
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
static void char_matches(const char *s, uint32_t n, int (*pred)(uint32_t, const void *),
                         const void *arg, tk_piecevec *out) {
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
static int pred_eq(uint32_t c, const void *a) {
    return c == *(const uint32_t *)a;
}

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
            if (v[i].is_match == prev && c->nrange)
                c->range[c->nrange - 1] = v[i].e;
            else
                range_push(c, v[i].s, v[i].e);
            prev = v[i].is_match;
        }
        break;
    }
    case B_MERGED_PREV: {
        int prev = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i].is_match && !prev && c->nrange)
                c->range[c->nrange - 1] = v[i].e;
            else
                range_push(c, v[i].s, v[i].e);
            prev = v[i].is_match;
        }
        break;
    }
    case B_MERGED_NEXT: {
        int prev = 0;
        for (size_t i = n; i-- > 0;) {
            if (v[i].is_match && !prev && c->nrange)
                c->range[c->nrange - 2] = v[i].s;
            else
                range_push(c, v[i].s, v[i].e);
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
        case N_NFC:
        case N_NFD:
        case N_NFKC:
        case N_NFKD:
            if (is_ascii(sp->s, sp->n)) break;
            tk_unicode_normalize(nm->kind == N_NFC    ? TK_NFC
                                 : nm->kind == N_NFD  ? TK_NFD
                                 : nm->kind == N_NFKC ? TK_NFKC
                                                      : TK_NFKD,
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
                if (in_lead && ws)
                    lead++;
                else
                    in_lead = 0;
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
        int starts =
            x.n >= (uint32_t)pt->repl_len && !memcmp(x.s, pt->repl_s, (size_t)pt->repl_len);
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

static void otok_push(tk_ctx *c, int32_t id, uint32_t s, uint32_t e, uint16_t lead,
                      uint16_t trail) {
    if (c->ntok == c->captok) {
        c->captok = c->captok ? c->captok * 2 : 64;
        c->tok = pt_xrealloc(c->tok, c->captok * sizeof *c->tok);
    }
    c->tok[c->ntok++] = (tk_otok){id, s, e, lead, trail};
}

static int is_trim_char(uint32_t cp) {
    return cp == 0x120 || tk_is_white_space(cp);
}

/* leading / trailing chars that are 'Ġ' or white space (ByteLevel post-processor) */
void tk_lead_trail(const char *s, size_t n, uint16_t *lead, uint16_t *trail) {
    size_t ld = 0, tr = 0, nch = 0;
    int in_lead = 1;
    for (size_t i = 0; i < n;) {
        int l;
        uint32_t cp = tk_utf8_get(s + i, &l);
        int w = is_trim_char(cp);
        if (in_lead && w)
            ld++;
        else
            in_lead = 0;
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
        tk_lead_trail(sp->s, sp->n, &ld, &tr);
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
            return pt_fail(c->e, "%s: unk_token '%s' is not in the vocabulary", t->name,
                           t->unk_name);
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
            for (size_t k = 0; k < n; k++)
                otok_push(c, old[k].id, old[k].s, old[k].e, old[k].lead, old[k].trail);
        } else {
            for (int k = 0; k < it->n; k++) {
                uint16_t ld, tr;
                tk_lead_trail(it->tokens[k], strlen(it->tokens[k]), &ld, &tr);
                otok_push(c, it->ids[k], 0, 0, ld, tr);
            }
        }
    }
    free(old);
}

static void ctx_free(tk_ctx *c) {
    pt_arena_free(&c->arena);
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
    if (len > (size_t)INT32_MAX / 4)
        return pt_fail(e, "%s: text too long (%zu bytes)", t->name, len);
    size_t bad;
    if (!tk_utf8_valid(text, len, &bad))
        return pt_fail(e, "%s: text is not valid UTF-8 (byte %zu)", t->name, bad);
    tk_ctx c;
    memset(&c, 0, sizeof c);
    pt_arena_init(&c.arena, (size_t)64 << 10, (size_t)64 << 20);
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
            for (int b = 0; b < l; b++)
                al[i + (size_t)b] = (tk_al){(uint32_t)i, (uint32_t)(i + (size_t)l)};
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
            if (k->e < len)
                ce = b2c[k->e];
            else {
                uint32_t last = (k->e >= 1 && k->e - 1 < len) ? b2c[k->e - 1] : cs + 1;
                ce = last + 1;
            }
            k->s = cs;
            k->e = ce;
        }
        for (size_t p = 0; p < t->n_post; p++) {
            if (t->post[p].kind == PP_BYTELEVEL)
                post_bytelevel(&c, &t->post[p]);
            else
                post_template(&c, &t->post[p], add_special);
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
    if (rc) tk_one_line(e);
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
int tk_normalize_string(const pt_tokenizer *t, const char *s, size_t n, tk_buf *out, pt_error *e) {
    tk_ctx c;
    memset(&c, 0, sizeof c);
    pt_arena_init(&c.arena, (size_t)64 << 10, (size_t)64 << 20);
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
