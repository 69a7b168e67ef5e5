/* punctum — byte-pair encoding as tokenizers' BPE model does it: start from one symbol per
 * character (with byte fallback / unknown-token handling), then repeatedly apply the
 * lowest-ranked merge present, leftmost first, through a priority queue over a linked list of
 * symbols. Hash maps for vocab (string -> id) and merges ((a, b) -> rank, new id). */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

uint32_t tk_hash(const void *s, size_t n) {
    /* FNV-1a, then a final avalanche */
    const unsigned char *p = s;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return h;
}

int tk_strmap_build(tk_strmap *m, const char *pool, const uint32_t *off, const uint32_t *len,
                    const int32_t *ids, size_t n, int32_t *dup_id, pt_error *e) {
    memset(m, 0, sizeof *m);
    m->pool = pool;
    m->off = off;
    m->len = len;
    size_t cap = 16;
    while (cap < n * 2 + 16) cap *= 2;
    m->mask = cap - 1;
    m->slots = pt_try_calloc(cap, sizeof *m->slots, "the vocabulary's hash table", e);
    m->hashes =
        m->slots ? pt_try_calloc(cap, sizeof *m->hashes, "the vocabulary's hashes", e) : NULL;
    if (!m->hashes) return -1;
    for (size_t i = 0; i < cap; i++) m->slots[i] = -1;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        const char *k = pool + off[id];
        uint32_t h = tk_hash(k, len[id]);
        size_t j = h & m->mask;
        while (m->slots[j] >= 0) {
            int32_t o = m->slots[j];
            if (m->hashes[j] == h && len[o] == len[id] && memcmp(pool + off[o], k, len[id]) == 0) {
                if (dup_id) *dup_id = id;
                return 1;
            }
            j = (j + 1) & m->mask;
        }
        m->slots[j] = id;
        m->hashes[j] = h;
    }
    return 0;
}

int32_t tk_strmap_get(const tk_strmap *m, const char *s, size_t n) {
    if (!m->slots) return -1;
    uint32_t h = tk_hash(s, n);
    size_t j = h & m->mask;
    for (;;) {
        int32_t o = m->slots[j];
        if (o < 0) return -1;
        if (m->hashes[j] == h && m->len[o] == n && memcmp(m->pool + m->off[o], s, n) == 0) return o;
        j = (j + 1) & m->mask;
    }
}

void tk_strmap_free(tk_strmap *m) {
    free(m->slots);
    free(m->hashes);
    memset(m, 0, sizeof *m);
}

static inline size_t pair_slot(uint64_t key, size_t mask) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & mask;
}

int tk_pairmap_init(tk_pairmap *m, size_t expected, pt_error *e) {
    size_t cap = 16;
    while (cap < expected * 2 + 16) cap *= 2;
    m->mask = cap - 1;
    m->n = 0;
    m->keys = pt_try_calloc(cap, sizeof *m->keys, "the merges' hash table", e);
    if (!m->keys) return -1;
    m->rank = pt_try_calloc(cap, sizeof *m->rank, "the merges' ranks", e);
    if (!m->rank) return -1;
    m->newid = pt_try_calloc(cap, sizeof *m->newid, "the merges' results", e);
    return m->newid ? 0 : -1;
}

void tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t newid) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t j = pair_slot(key, m->mask);
    while (m->keys[j] && m->keys[j] != key) j = (j + 1) & m->mask;
    if (!m->keys[j]) {
        m->keys[j] = key;
        m->n++;
    }
    m->rank[j] = rank;
    m->newid[j] = newid;
}

int tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b, uint32_t *rank, int32_t *newid) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t j = pair_slot(key, m->mask);
    for (;;) {
        uint64_t k = m->keys[j];
        if (!k) return 0;
        if (k == key) {
            *rank = m->rank[j];
            *newid = m->newid[j];
            return 1;
        }
        j = (j + 1) & m->mask;
    }
}

void tk_pairmap_free(tk_pairmap *m) {
    free(m->keys);
    free(m->rank);
    free(m->newid);
    memset(m, 0, sizeof *m);
}

/* ---- the merge loop ---------------------------------------------------------------------- */

struct tk_sym {
    int32_t id;
    int32_t prev, next; /* indices, -1 at the ends */
    uint32_t len;       /* bytes; 0 = merged away */
};

struct tk_merge {
    uint32_t rank;
    uint32_t pos;
    int32_t newid;
};

static inline int merge_before(const struct tk_merge *a, const struct tk_merge *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(tk_bpe_scratch *sc, struct tk_merge m) {
    if (sc->nheap == sc->capheap) {
        sc->capheap = sc->capheap ? sc->capheap * 2 : 64;
        sc->heap = pt_xrealloc(sc->heap, sc->capheap * sizeof *sc->heap);
    }
    size_t i = sc->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_before(&m, &sc->heap[p])) break;
        sc->heap[i] = sc->heap[p];
        i = p;
    }
    sc->heap[i] = m;
}

static struct tk_merge heap_pop(tk_bpe_scratch *sc) {
    struct tk_merge top = sc->heap[0];
    struct tk_merge last = sc->heap[--sc->nheap];
    size_t n = sc->nheap, i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t c = l;
        if (l + 1 < n && merge_before(&sc->heap[l + 1], &sc->heap[l])) c = l + 1;
        if (!merge_before(&sc->heap[c], &last)) break;
        sc->heap[i] = sc->heap[c];
        i = c;
    }
    if (n) sc->heap[i] = last;
    return top;
}

static void sym_add(tk_bpe_scratch *sc, int32_t id, uint32_t len) {
    if (sc->nsym == sc->capsym) {
        sc->capsym = sc->capsym ? sc->capsym * 2 : 64;
        sc->sym = pt_xrealloc(sc->sym, sc->capsym * sizeof *sc->sym);
    }
    int32_t i = (int32_t)sc->nsym;
    if (i > 0) sc->sym[i - 1].next = i;
    sc->sym[i].id = id;
    sc->sym[i].prev = i - 1;
    sc->sym[i].next = -1;
    sc->sym[i].len = len;
    sc->nsym++;
}

static void wtok_push(tk_wtokvec *v, int32_t id, uint32_t s, uint32_t e) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->v = pt_xrealloc(v->v, v->cap * sizeof *v->v);
    }
    v->v[v->n].id = id;
    v->v[v->n].s = s;
    v->v[v->n].e = e;
    v->n++;
}

static inline int32_t char_id(const tk_bpe *m, const char *c, int l) {
    unsigned char b = (unsigned char)c[0];
    if (l == 1) return m->small_ids[b & 0x7F];
    if (l == 2 && m->cp2_ids) {
        uint32_t cp = ((uint32_t)(b & 0x1F) << 6) | ((unsigned char)c[1] & 0x3F);
        return m->cp2_ids[cp - 0x80];
    }
    return tk_strmap_get(&m->map, c, (size_t)l);
}

int tk_bpe_word(const tk_bpe *m, const char *w, size_t n, tk_bpe_scratch *sc, tk_wtokvec *out,
                pt_error *e) {
    (void)e;
    if (n == 0) return 0;
    if (m->ignore_merges) {
        int32_t id = tk_strmap_get(&m->map, w, n);
        if (id >= 0) {
            wtok_push(out, id, 0, (uint32_t)n);
            return 0;
        }
    }
    sc->nsym = 0;
    sc->nheap = 0;
    int have_unk = 0;
    int32_t unk_id = -1;
    uint32_t unk_len = 0;
    for (size_t i = 0; i < n;) {
        int l = tk_utf8_len((unsigned char)w[i]);
        if (i + (size_t)l > n) l = (int)(n - i);
        int32_t id = char_id(m, w + i, l);
        if (id >= 0) {
            if (have_unk) {
                sym_add(sc, unk_id, unk_len);
                have_unk = 0;
            }
            sym_add(sc, id, (uint32_t)l);
        } else {
            int done = 0;
            if (m->byte_fallback) {
                int ok = 1;
                for (int k = 0; k < l; k++)
                    if (m->byte_ids[(unsigned char)w[i + k]] < 0) ok = 0;
                if (ok) {
                    for (int k = 0; k < l; k++) sym_add(sc, m->byte_ids[(unsigned char)w[i + k]], 1);
                    done = 1;
                }
            }
            if (!done && m->unk_id >= 0) {
                if (have_unk && m->fuse_unk) {
                    unk_len += (uint32_t)l;
                } else {
                    if (have_unk) sym_add(sc, unk_id, unk_len);
                    have_unk = 1;
                    unk_id = m->unk_id;
                    unk_len = (uint32_t)l;
                }
            }
            /* no unk token: the char is dropped (as tokenizers does) */
        }
        i += (size_t)l;
    }
    if (have_unk) sym_add(sc, unk_id, unk_len);

    /* the merge loop */
    struct tk_sym *s = sc->sym;
    for (size_t i = 0; i + 1 < sc->nsym; i++) {
        uint32_t rank;
        int32_t nid;
        if (tk_pairmap_get(&m->merges, s[i].id, s[i + 1].id, &rank, &nid))
            heap_push(sc, (struct tk_merge){rank, (uint32_t)i, nid});
    }
    s = sc->sym;
    while (sc->nheap) {
        struct tk_merge top = heap_pop(sc);
        struct tk_sym *cur = &s[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        int32_t next_pos = cur->next;
        struct tk_sym right = s[next_pos];
        uint32_t rank;
        int32_t nid;
        if (!tk_pairmap_get(&m->merges, cur->id, right.id, &rank, &nid) || nid != top.newid) continue;
        cur->id = top.newid;
        cur->len += right.len;
        cur->next = right.next;
        s[next_pos].len = 0;
        if (right.next >= 0 && (size_t)right.next < sc->nsym) s[right.next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            struct tk_sym *p = &s[cur->prev];
            if (tk_pairmap_get(&m->merges, p->id, cur->id, &rank, &nid))
                heap_push(sc, (struct tk_merge){rank, (uint32_t)cur->prev, nid});
        }
        if (cur->next >= 0 && (size_t)cur->next < sc->nsym) {
            struct tk_sym *q = &s[cur->next];
            if (tk_pairmap_get(&m->merges, cur->id, q->id, &rank, &nid))
                heap_push(sc, (struct tk_merge){rank, top.pos, nid});
        }
    }
    uint32_t pos = 0;
    for (size_t i = 0; i < sc->nsym; i++) {
        if (s[i].len == 0) continue;
        wtok_push(out, s[i].id, pos, pos + s[i].len);
        pos += s[i].len;
    }
    return 0;
}

void tk_bpe_scratch_free(tk_bpe_scratch *sc) {
    free(sc->sym);
    free(sc->heap);
    memset(sc, 0, sizeof *sc);
}

void tk_bpe_free(tk_bpe *m) {
    free(m->pool);
    free(m->off);
    free(m->len);
    free(m->has);
    free(m->cp2_ids);
    tk_strmap_free(&m->map);
    tk_pairmap_free(&m->merges);
    memset(m, 0, sizeof *m);
}
