/* punctum — greedy generation after a batch's clean forward (generate.h).
 *
 * Every sequence of the batch is a decode lane: its prompt's keys stay in the cache rows of the
 * clean forward (position p at row kv0 + p, prefix-shared extensions included), and its
 * generated tokens get N rows of their own from kv_base on. A decode step is one forward of
 * one query row per running lane: a segment whose prefix is the prompt's rows and whose own
 * keys are the lane's generated rows, the query being the newest (pt_segment.q_off). Each pair
 * with both sides adds a teacher-forced lane: b's prompt followed by a's tokens, run in the same
 * steps, so that KL(P_a,t || P_b,t) is summed as a goes (gen_kl_ab). */
#include "engine/generate.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_CONFIG_BYTES ((size_t)1 << 20)
#define MAX_STOP_IDS 64

/* One decode lane: a greedy continuation (of a clean sequence or of a variant), or a
 * teacher-forced one (b's prompt fed a's tokens). Its decode-step segment reads keys 0 ..
 * pos0-1 at prefix_kv and its own keys from own_kv: q0 of them from the prompt pass (a
 * variant's recomputed positions), then its generated tokens. */
typedef struct {
    int seq;         /* batch-local sequence it continues (patching: the pair's a) */
    int partner;     /* teacher-forced lanes: the greedy lane whose tokens it is fed; else -1 */
    int kind;        /* /gen/kind: 0 clean, 1 knockout, 2 patching */
    int64_t variant; /* batch-local row of its knockout / patching row (-1: clean) */
    int T;           /* prompt length: generated token t sits at position T + t */
    int pos0, prefix_kv, own_kv, q0;
    int ko_pos, ko_lo, ko_hi; /* a knockout held at every step */
    int64_t tok_off;          /* its tokens in G->tok / G->logp */
    int n;                    /* tokens chosen so far (greedy lanes) */
    int stop;                 /* -1 running; else 0 length limit, 1 end of sequence, 2 line break */
    int row;                  /* its query row in the current step (-1: not running) */
    double kl;                /* teacher-forced lanes: sum of KL(P_a,t || P_b,t) so far */
} gen_lane;

typedef struct {
    gen_lane *v;
    size_t cap;
} lane_buf;

struct pt_generation {
    int32_t stop_ids[MAX_STOP_IDS];
    int n_stop;
    lane_buf lanes; /* the batch's clean lanes (pt_generate_lanes), then its variants' */
    int n_lanes;
    int64_t n_tok;  /* token slots used in tok / logp */
    pt_i32buf tok;  /* chosen ids, N slots per greedy lane */
    pt_f32buf logp; /* their log-probabilities */
    pt_i32buf ids, pos, kvr, fin, top;
    pt_f32buf top_lp;
    pt_i32buf div_p, div_q; /* teacher-forced lanes of a step: their partners' rows, theirs */
    pt_f64buf div_kl;       /* ... and KL(P_a || P_b) of each */
    pt_segbuf segs;
    pt_chrbuf text;
    pt_devbuf logits;
};

/* ---- stop tokens ---------------------------------------------------------------------------- */

/* eos_token_id of one JSON file (an integer or a list; absent or null: none). 1 found, 0 not
 * there, -1 error (e set). */
static int read_eos(const char *path, int vocab, pt_generation *G, pt_error *e) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    size_t len;
    char *txt = pt_read_file(path, MAX_CONFIG_BYTES, &len, e);
    if (!txt) return -1;
    json_error_t je;
    json_t *root = json_loadb(txt, len, 0, &je);
    free(txt);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return pt_fail(e, "%s: not a JSON object (%s)", path, root ? "" : je.text);
    }
    json_t *v = json_object_get(root, "eos_token_id");
    int rc = v && !json_is_null(v) ? 1 : 0;
    if (rc) G->n_stop = 0;
    if (v && json_is_integer(v)) {
        const json_int_t id = json_integer_value(v);
        if (id >= 0 && id < vocab) G->stop_ids[G->n_stop++] = (int32_t)id;
    } else if (v && json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            const json_int_t id = json_is_integer(x) ? json_integer_value(x) : -1;
            if (!json_is_integer(x)) rc = -1;
            if (id >= 0 && id < vocab && G->n_stop < MAX_STOP_IDS)
                G->stop_ids[G->n_stop++] = (int32_t)id;
        }
    } else if (rc) {
        rc = -1;
    }
    if (rc < 0) pt_fail(e, "%s: 'eos_token_id' must be an integer or a list of integers", path);
    json_decref(root);
    return rc;
}

int pt_generate_setup(pt_sweep *S, pt_error *e) {
    if (S->o->generate <= 0) return 0;
    pt_generation *G = pt_try_calloc(1, sizeof *G, "generation", e);
    if (!G) return -1;
    S->gen = G;
    const int V = S->cfg->vocab_size;
    char path[4096];
    snprintf(path, sizeof path, "%s/generation_config.json", S->o->model_dir);
    int rc = read_eos(path, V, G, e); /* generation_config.json wins */
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/config.json", S->o->model_dir);
        rc = read_eos(path, V, G, e);
    }
    return rc < 0 ? -1 : 0;
}

void pt_generate_release(pt_sweep *S) {
    if (S->gen) pt_devbuf_free(S->be, &S->gen->logits);
}

void pt_generate_free(pt_sweep *S) {
    pt_generation *G = S->gen;
    if (!G) return;
    pt_generate_release(S);
    PT_BUF_FREE(&G->lanes);
    PT_BUF_FREE(&G->tok);
    PT_BUF_FREE(&G->logp);
    PT_BUF_FREE(&G->ids);
    PT_BUF_FREE(&G->pos);
    PT_BUF_FREE(&G->kvr);
    PT_BUF_FREE(&G->fin);
    PT_BUF_FREE(&G->top);
    PT_BUF_FREE(&G->top_lp);
    PT_BUF_FREE(&G->div_p);
    PT_BUF_FREE(&G->div_q);
    PT_BUF_FREE(&G->div_kl);
    PT_BUF_FREE(&G->segs);
    PT_BUF_FREE(&G->text);
    free(G);
    S->gen = NULL;
}

/* ---- lanes ---------------------------------------------------------------------------------- */

int pt_generate_lanes(const pt_sweep *S) {
    if (!S->gen) return 0;
    const pt_plan *P = &S->plan;
    int n = P->n_seqs;
    for (int s = 0; s < P->n_seqs; s++) n += P->seqs.v[s].side == 1; /* b has an a */
    return n;
}

static int is_stop_id(const pt_generation *G, int32_t id) {
    for (int k = 0; k < G->n_stop; k++)
        if (G->stop_ids[k] == id) return 1;
    return 0;
}

/* The lane chose token id with log-probability lp: record it, and whether the lane stops. */
static void choose(pt_sweep *S, gen_lane *L, int32_t id, float lp) {
    pt_generation *G = S->gen;
    const int N = S->o->generate;
    G->tok.v[L->tok_off + L->n] = id;
    G->logp.v[L->tok_off + L->n] = lp;
    L->n++;
    size_t len = 0;
    const char *piece = S->tok ? pt_tokenizer_piece_bytes(S->tok, id, &len) : NULL;
    if (is_stop_id(G, id))
        L->stop = 1;
    else if (S->o->stop_at_newline && piece && memchr(piece, '\n', len))
        L->stop = 2;
    else if (L->n == N || L->T + L->n >= S->cfg->max_positions)
        L->stop = 0; /* the next token would sit beyond the model's positions */
}

/* Room for lanes [0, n) with `greedy` more greedy lanes' tokens, and a decode step of up to
 * `rows` lanes; -1: out of host memory (backend status). */
static int fit_lanes(pt_sweep *S, int n, int greedy, int rows) {
    pt_generation *G = S->gen;
    const size_t tok = (size_t)G->n_tok + (size_t)greedy * S->o->generate;
    return PT_SWEEP_FIT(S, &G->lanes, n) || PT_SWEEP_FIT(S, &G->tok, tok) ||
           PT_SWEEP_FIT(S, &G->logp, tok) || PT_SWEEP_FIT(S, &G->ids, rows) ||
           PT_SWEEP_FIT(S, &G->pos, rows) || PT_SWEEP_FIT(S, &G->kvr, rows) ||
           PT_SWEEP_FIT(S, &G->fin, rows) || PT_SWEEP_FIT(S, &G->top, rows) ||
           PT_SWEEP_FIT(S, &G->top_lp, rows) || PT_SWEEP_FIT(S, &G->segs, rows) ||
           PT_SWEEP_FIT(S, &G->div_p, rows) || PT_SWEEP_FIT(S, &G->div_q, rows) ||
           PT_SWEEP_FIT(S, &G->div_kl, rows);
}

/* A lane continuing a prompt whose keys are all at kv0 + p, its tokens' keys at gen_kv. */
static gen_lane prompt_lane(int seq, int partner, int T, int kv0, int gen_kv) {
    return (gen_lane){.seq = seq,
                      .partner = partner,
                      .kind = 0,
                      .variant = -1,
                      .T = T,
                      .pos0 = T,
                      .prefix_kv = kv0,
                      .own_kv = gen_kv,
                      .q0 = 0,
                      .ko_pos = -1,
                      .stop = -1,
                      .row = -1};
}

/* The clean lanes of the batch: greedy lane s for sequence s, then one teacher-forced lane per
 * pair; their generated keys from kv_base on, N rows each. */
static int make_lanes(pt_sweep *S, int kv_base) {
    pt_generation *G = S->gen;
    const pt_plan *P = &S->plan;
    const int N = S->o->generate, ns = P->n_seqs, nl = pt_generate_lanes(S);
    G->n_lanes = 0;
    G->n_tok = 0;
    if (fit_lanes(S, nl, ns, nl)) return -1;
    int k = 0;
    for (int s = 0; s < ns; s++) {
        const pt_bseq *q = &P->seqs.v[s];
        G->lanes.v[k] = prompt_lane(s, -1, q->T, q->kv0, kv_base + k * N);
        G->lanes.v[k++].tok_off = (int64_t)s * N;
    }
    for (int s = 0; s < ns; s++) {
        const pt_bseq *q = &P->seqs.v[s];
        if (q->side != 1) continue;
        G->lanes.v[k] = prompt_lane(s, q->rec->seq_local[0], q->T, q->kv0, kv_base + k * N);
        k++;
    }
    G->n_lanes = nl;
    G->n_tok = (int64_t)ns * N;
    return 0;
}

/* Step 0 of the clean lanes: the clean forward's distributions (greedy: its top-1, ties to the
 * lower id). */
static void first_step(pt_sweep *S) {
    pt_generation *G = S->gen;
    const pt_plan *P = &S->plan;
    const int V = S->cfg->vocab_size, K = S->topk, nl = pt_generate_lanes(S);
    for (int i = 0; i < P->n_seqs; i++)
        choose(S, &G->lanes.v[i], P->topk_id.v[(size_t)i * K], P->topk_lp.v[(size_t)i * K]);
    int m = 0;
    for (int i = P->n_seqs; i < nl; i++, m++)
        G->div_p.v[m] = G->lanes.v[i].partner, G->div_q.v[m] = G->lanes.v[i].seq;
    if (m > 0) /* one call for every teacher-forced lane (on a GPU: one launch, one wait) */
        S->be->divergence(S->be, S->logp_dev, (size_t)V, G->div_p.v, S->logp_dev, (size_t)V,
                          G->div_q.v, m, V, G->div_kl.v, NULL, NULL);
    for (int i = P->n_seqs, k = 0; i < nl; i++, k++) G->lanes.v[i].kl = G->div_kl.v[k];
}

/* The query rows of step t (t >= 1) among lanes [l0, l1): every greedy lane still running, and
 * the teacher-forced lanes of those. Returns their number. */
static int step_rows(pt_sweep *S, int l0, int l1, int t) {
    pt_generation *G = S->gen;
    int m = 0;
    for (int i = l0; i < l1; i++) {
        gen_lane *L = &G->lanes.v[i];
        const gen_lane *src = L->partner >= 0 ? &G->lanes.v[L->partner] : L; /* fed its tokens */
        L->row = -1;
        if (src->stop >= 0) continue; /* a lane runs while the lane it follows does */
        if (L->T + t - 1 >= S->cfg->max_positions) { /* b's prompt is longer than a's */
            L->kl = NAN;
            continue;
        }
        L->row = m;
        G->ids.v[m] = G->tok.v[src->tok_off + t - 1];
        G->pos.v[m] = L->T + t - 1;
        G->kvr.v[m] = L->own_kv + L->q0 + t - 1;
        G->fin.v[m] = m;
        G->segs.v[m] = (pt_segment){.row = m,
                                    .n_q = 1,
                                    .pos0 = L->pos0,
                                    .prefix_kv = L->prefix_kv,
                                    .own_kv = L->own_kv,
                                    .q_off = L->q0 + t - 1,
                                    .ko_pos = L->ko_pos,
                                    .ko_lo = L->ko_lo,
                                    .ko_hi = L->ko_hi,
                                    .mass_row = -1,
                                    .last_row = -1,
                                    .pattern_row = -1,
                                    .final_pos = -1};
        m++;
    }
    return m;
}

/* Decode steps 1 .. N-1 of lanes [l0, l1), one batched forward each. */
static int decode_steps(pt_sweep *S, int l0, int l1) {
    pt_generation *G = S->gen;
    pt_backend *be = S->be;
    const int N = S->o->generate, V = S->cfg->vocab_size;
    float *logits = pt_sweep_dev(S, &G->logits, (size_t)(l1 - l0) * V * sizeof(float));
    if (!logits) return -1;
    for (int t = 1; t < N; t++) {
        const int m = step_rows(S, l0, l1, t);
        if (m == 0) break;
        pt_fwd f = {.n_rows = m,
                    .ids = G->ids.v,
                    .pos = G->pos.v,
                    .segs = G->segs.v,
                    .n_segs = m,
                    .kv_rows = G->kvr.v,
                    .final_rows = G->fin.v,
                    .n_final = m,
                    .logits = logits};
        if (pt_forward(&S->en, &f)) return -1;
        be->defer_results(be); /* the greedy top-1 and the KL: one copy and one wait on a GPU */
        be->log_softmax(be, logits, m, V, NULL, 1, G->top.v, G->top_lp.v);
        int nd = 0; /* teacher-forced lanes: KL against their partners, all in one call */
        for (int i = l0; i < l1; i++) {
            const gen_lane *L = &G->lanes.v[i];
            if (L->row < 0 || L->partner < 0) continue;
            G->div_p.v[nd] = G->lanes.v[L->partner].row, G->div_q.v[nd] = L->row, nd++;
        }
        if (nd > 0)
            be->divergence(be, logits, (size_t)V, G->div_p.v, logits, (size_t)V, G->div_q.v, nd, V,
                           G->div_kl.v, NULL, NULL);
        be->sync(be);
        for (int i = l0, k = 0; i < l1; i++) {
            gen_lane *L = &G->lanes.v[i];
            if (L->row < 0) continue;
            if (L->partner < 0)
                choose(S, L, G->top.v[L->row], G->top_lp.v[L->row]);
            else
                L->kl += G->div_kl.v[k++];
        }
        if (pt_backend_failed(be)) return -1;
    }
    return pt_backend_failed(be) ? -1 : 0;
}

/* Layers below `layer` were not run by a variant's prompt pass: its recomputed positions'
 * keys there are the clean run's, copied into its own rows for the decode steps to read. */
static void copy_clean_keys(pt_sweep *S, const pt_gen_variant *v, int layer) {
    pt_backend *be = S->be;
    pt_engine *en = &S->en;
    const size_t row = (size_t)S->cfg->n_kv_heads * S->cfg->head_dim * be->kv_bytes;
    const size_t n = (size_t)v->n_own * row;
    for (int l = 0; l < layer; l++) {
        be->copy(be, (char *)en->k_cache[l] + (size_t)v->own_kv * row,
                 (const char *)en->k_cache[l] + (size_t)v->clean_kv * row, n);
        be->copy(be, (char *)en->v_cache[l] + (size_t)v->own_kv * row,
                 (const char *)en->v_cache[l] + (size_t)v->clean_kv * row, n);
    }
}

int pt_generate_variants(pt_sweep *S, const pt_gen_variant *vs, int m, int layer,
                         const int32_t *top1, const float *top1_lp) {
    pt_generation *G = S->gen;
    if (!G || m == 0) return 0;
    const int N = S->o->generate, l0 = G->n_lanes;
    if (fit_lanes(S, l0 + m, m, m)) return -1;
    for (int k = 0; k < m; k++) {
        const pt_gen_variant *v = &vs[k];
        const pt_bseq *q = &S->plan.seqs.v[v->seq];
        gen_lane *L = &G->lanes.v[l0 + k];
        *L = prompt_lane(v->seq, -1, q->T, q->kv0, v->own_kv);
        L->kind = v->kind;
        L->variant = v->variant;
        L->pos0 = q->T - v->n_own;
        L->q0 = v->n_own;
        L->ko_pos = v->ko_pos;
        L->ko_lo = v->ko_lo;
        L->ko_hi = v->ko_hi;
        L->tok_off = G->n_tok;
        G->n_tok += N;
        copy_clean_keys(S, v, layer);
        choose(S, L, top1[k], top1_lp[k]);
    }
    G->n_lanes = l0 + m;
    return decode_steps(S, l0, l0 + m);
}

/* ---- rows ----------------------------------------------------------------------------------- */

/* First step at which lanes x and y chose different tokens; -1 if none. */
static int diverge(const pt_sweep *S, int x, int y) {
    const pt_generation *G = S->gen;
    const gen_lane *X = &G->lanes.v[x], *Y = &G->lanes.v[y];
    const int n = X->n < Y->n ? X->n : Y->n;
    for (int t = 0; t < n; t++)
        if (G->tok.v[X->tok_off + t] != G->tok.v[Y->tok_off + t]) return t;
    return X->n == Y->n ? -1 : n;
}

/* The decoded continuation of lane i (without a final end-of-sequence token). */
static const char *lane_text(pt_sweep *S, int i) {
    pt_generation *G = S->gen;
    const gen_lane *L = &G->lanes.v[i];
    const int n = L->n - (L->stop == 1);
    size_t len = 0;
    if (PT_SWEEP_FIT(S, &G->text, 1)) return NULL;
    for (int t = 0; t < n && S->tok; t++) {
        size_t pl = 0;
        const char *p = pt_tokenizer_piece_bytes(S->tok, G->tok.v[L->tok_off + t], &pl);
        if (!p) continue;
        if (PT_SWEEP_FIT(S, &G->text, len + pl + 1)) return NULL;
        for (size_t k = 0; k < pl; k++) /* a NUL byte would end the stored string */
            G->text.v[len++] = p[k] ? p[k] : ' ';
    }
    G->text.v[len] = 0;
    return G->text.v;
}

static void emit_pair_cols(pt_sweep *S, pt_record **recs, int n) {
    const pt_generation *G = S->gen;
    const int ns = S->plan.n_seqs, nl = pt_generate_lanes(S);
    for (int p = 0; p < n; p++) {
        const pt_record *r = recs[p];
        int dv = -1;
        double kl = NAN;
        if (!r->status && r->seq_local[1] >= 0) {
            dv = diverge(S, r->seq_local[0], r->seq_local[1]);
            for (int i = ns; i < nl; i++)
                if (G->lanes.v[i].seq == r->seq_local[1]) kl = G->lanes.v[i].kl;
        }
        *(int32_t *)pt_sweep_rows(S, C_PAIR_GEN_DIVERGE, 1) = dv;
        *(float *)pt_sweep_rows(S, C_PAIR_GEN_KL, 1) = (float)kl;
    }
}

/* One /gen row: greedy lane i; `ref` the lane its diverge is measured from (-1: none). */
static int emit_gen_row(pt_sweep *S, int i, int ref) {
    pt_generation *G = S->gen;
    const gen_lane *L = &G->lanes.v[i];
    const pt_record *r = S->plan.seqs.v[L->seq].rec;
    const char *text = lane_text(S, i);
    if (!text) return -1;
    const int64_t base = L->kind == 1 ? S->rows.ko : S->rows.patch;
    *(int64_t *)pt_sweep_rows(S, C_GEN_SEQ, 1) = S->rows.seqs + L->seq;
    *(int8_t *)pt_sweep_rows(S, C_GEN_KIND, 1) = (int8_t)L->kind;
    *(int64_t *)pt_sweep_rows(S, C_GEN_VARIANT, 1) = L->kind ? base + L->variant : -1;
    *(int64_t *)pt_sweep_rows(S, C_GEN_TOK_START, 1) = S->rows.gen_tok;
    *(int32_t *)pt_sweep_rows(S, C_GEN_N_TOK, 1) = L->n;
    pt_sweep_str(S, C_GEN_TEXT, text);
    *(int8_t *)pt_sweep_rows(S, C_GEN_STOP, 1) = (int8_t)L->stop;
    *(int32_t *)pt_sweep_rows(S, C_GEN_DIVERGE, 1) = ref >= 0 ? diverge(S, i, ref) : -1;
    *(int8_t *)pt_sweep_rows(S, C_GEN_HIT, 1) = (int8_t)pt_text_has_word(text, r->target_text);
    *(int8_t *)pt_sweep_rows(S, C_GEN_HIT_B, 1) = (int8_t)pt_text_has_word(text, r->target_b_text);
    memcpy(pt_sweep_rows(S, C_GENTOK_ID, (size_t)L->n), G->tok.v + L->tok_off,
           (size_t)L->n * sizeof(int32_t));
    memcpy(pt_sweep_rows(S, C_GENTOK_LP, (size_t)L->n), G->logp.v + L->tok_off,
           (size_t)L->n * sizeof(float));
    S->rows.gen++;
    S->rows.gen_tok += L->n;
    return 0;
}

int pt_generate_run(pt_sweep *S, int kv_base) {
    pt_generation *G = S->gen;
    if (!G) return 0;
    G->n_lanes = 0;
    G->n_tok = 0;
    if (S->plan.n_seqs == 0) return 0;
    if (make_lanes(S, kv_base)) return -1;
    first_step(S);
    return decode_steps(S, 0, G->n_lanes);
}

int pt_generate_emit(pt_sweep *S, pt_record **recs, int n) {
    pt_generation *G = S->gen;
    if (!G) return 0;
    emit_pair_cols(S, recs, n);
    if (G->n_lanes == 0) return 0;
    const int ns = S->plan.n_seqs, nl = pt_generate_lanes(S);
    /* rows by sequence (merge needs them grouped by pair): clean, then its variants */
    for (int s = 0; s < ns; s++) {
        const pt_bseq *q = &S->plan.seqs.v[s];
        if (emit_gen_row(S, s, q->rec->seq_local[1 - q->side])) return -1;
        for (int i = nl; i < G->n_lanes; i++)
            if (G->lanes.v[i].seq == s && emit_gen_row(S, i, s)) return -1;
    }
    return 0;
}

/* ---- whole words ---------------------------------------------------------------------------- */

/* The code point at s[*i] (invalid UTF-8: U+FFFD, one byte), *i advanced past it. */
static uint32_t next_cp(const char *s, size_t n, size_t *i) {
    const unsigned char *u = (const unsigned char *)s + *i;
    const size_t left = n - *i;
    int len = u[0] < 0x80         ? 1
              : (u[0] >> 5) == 6  ? 2
              : (u[0] >> 4) == 14 ? 3
              : (u[0] >> 3) == 30 ? 4
                                  : 0;
    if (len == 0 || (size_t)len > left) {
        *i += 1;
        return 0xFFFD;
    }
    uint32_t c = len == 1 ? u[0] : u[0] & (0x7F >> len);
    for (int k = 1; k < len; k++) {
        if ((u[k] & 0xC0) != 0x80) {
            *i += 1;
            return 0xFFFD;
        }
        c = (c << 6) | (u[k] & 0x3F);
    }
    *i += (size_t)len;
    return c;
}

/* The code point ending just before byte i. */
static uint32_t prev_cp(const char *s, size_t i) {
    size_t j = i - 1;
    while (j > 0 && i - j < 4 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
    size_t k = j;
    const uint32_t c = next_cp(s, i, &k);
    return k == i ? c : 0xFFFD;
}

static uint32_t fold(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c < 0x80) return c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) return c | 1;
    if (c >= 0x139 && c <= 0x148 && (c & 1)) return c + 1;
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    return c;
}

static int is_space(uint32_t c) {
    return c == ' ' || (c >= 9 && c <= 13) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

static int is_word(uint32_t c) {
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
    if (c <= 0xBF) return c == 0xAA || c == 0xB5 || c == 0xBA;
    if (c == 0xD7 || c == 0xF7 || c == 0xFFFD) return 0;
    if ((c >= 0x2000 && c <= 0x206F) || (c >= 0x2190 && c <= 0x2BFF) ||
        (c >= 0x3000 && c <= 0x303F) || (c >= 0x1F000 && c <= 0x1FAFF))
        return 0;
    if ((c >= 0xFF00 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) ||
        (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFF65))
        return 0;
    return 1;
}

/* Does word[w0, w1) match text at byte i (case-insensitively)? *end: the byte after it. */
static int match_at(const char *text, size_t n, size_t i, const char *word, size_t w0, size_t w1,
                    size_t *end) {
    size_t w = w0;
    while (w < w1) {
        if (i >= n) return 0;
        if (fold(next_cp(text, n, &i)) != fold(next_cp(word, w1, &w))) return 0;
    }
    *end = i;
    return 1;
}

int pt_text_has_word(const char *text, const char *word) {
    if (!word) return -1;
    size_t w0 = 0, w1 = strlen(word), k;
    while (w0 < w1 && (k = w0, is_space(next_cp(word, w1, &k)))) w0 = k;
    while (w1 > w0 && is_space(prev_cp(word, w1))) {
        size_t j = w1 - 1;
        while (j > w0 && ((unsigned char)word[j] & 0xC0) == 0x80) j--;
        w1 = j;
    }
    if (w0 == w1) return -1;
    k = w0;
    const int word_start = is_word(next_cp(word, w1, &k)), word_end = is_word(prev_cp(word, w1));
    const size_t n = strlen(text);
    for (size_t i = 0; i < n;) {
        size_t end;
        if (match_at(text, n, i, word, w0, w1, &end) &&
            !(word_start && i > 0 && is_word(prev_cp(text, i))) &&
            !(word_end && end < n && (k = end, is_word(next_cp(text, n, &k)))))
            return 1;
        next_cp(text, n, &i);
    }
    return 0;
}
