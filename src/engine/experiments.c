/* punctum — causal experiments (SPEC §3): attention knockout, residual patching, logit lens.
 *
 * Every experiment is a set of "variants" of a clean sequence that differ from it only from
 * some position p and layer l on. A variant is one segment: its queries are positions p..T-1,
 * it starts at layer l from the clean residual stream (resid_all), and reads keys 0..p-1 from
 * the clean run's key/value cache. Variants of one start layer are packed into sub-batches
 * and run through the same forward as the clean pass. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sweep_internal.h"

enum { MAX_VARIANTS = 256, LENS_CHUNK = 256 };

struct pt_experiments {
    int n_windows;
    int (*windows)[2];
    /* one sub-batch under construction */
    int n_var, n_rows;
    pt_segment *segs;
    int32_t *pos, *kvr, *fin, *src_rows;
    size_t rows_cap;
    int32_t *top1, *ids_tmp;
    float *lp_tmp, *lp_tmp2;
    double *kl_tmp, *kl_tmp2;
    /* what each variant of the sub-batch is, for emitting its row */
    struct variant { int seq, pos, window, layer, pair; int64_t slot; } *vars;
    /* knockout results of the batch, by output row (sequence, window, position order) */
    struct ko_row { float kl, dtop1, dtarget; int8_t changed; } *ko;
    pt_devbuf d_xin, d_logits, d_lens_x;
    int start_layer;
};

/* ---- setup ------------------------------------------------------------------------------ */

static int parse_windows(pt_experiments *X, const char *spec, int L, pt_error *e) {
    X->n_windows = 0;
    if (!spec || !strcmp(spec, "all")) {
        X->windows = pt_xmalloc(sizeof *X->windows);
        X->windows[0][0] = 0;
        X->windows[0][1] = L;
        X->n_windows = 1;
        return 0;
    }
    if (!strcmp(spec, "each")) {
        X->windows = pt_xmalloc((size_t)L * sizeof *X->windows);
        for (int l = 0; l < L; l++) X->windows[l][0] = l, X->windows[l][1] = l + 1;
        X->n_windows = L;
        return 0;
    }
    size_t n = 1;
    for (const char *p = spec; *p; p++) n += *p == ',';
    X->windows = pt_xmalloc(n * sizeof *X->windows);
    const char *p = spec;
    while (*p) {
        char *end;
        long lo = strtol(p, &end, 10);
        if (end == p || *end != ':') return pt_fail(e, "--windows %s: expected LO:HI[,LO:HI...]", spec);
        p = end + 1;
        long hi = strtol(p, &end, 10);
        if (end == p || (*end && *end != ','))
            return pt_fail(e, "--windows %s: expected LO:HI[,LO:HI...]", spec);
        if (lo < 0 || hi > L || lo >= hi)
            return pt_fail(e, "--windows %s: window %ld:%ld is not within 0:%d with LO < HI", spec,
                           lo, hi, L);
        X->windows[X->n_windows][0] = (int)lo;
        X->windows[X->n_windows][1] = (int)hi;
        X->n_windows++;
        p = *end ? end + 1 : end;
    }
    return 0;
}

int pt_sweep_setup_experiments(pt_sweep *S, pt_error *e) {
    const pt_run_opts *o = S->o;
    S->experiments = o->ablate_knockout || o->patch_resid || o->stat_lens;
    if (!S->experiments) return 0;
    pt_experiments *X = pt_xcalloc(1, sizeof *X);
    S->ex = X;
    if (o->ablate_knockout && parse_windows(X, o->windows, S->cfg->n_layers, e)) return -1;
    X->segs = pt_xmalloc(MAX_VARIANTS * sizeof *X->segs);
    X->vars = pt_xmalloc(MAX_VARIANTS * sizeof *X->vars);
    X->fin = pt_xmalloc(MAX_VARIANTS * sizeof(int32_t));
    X->top1 = pt_xmalloc(MAX_VARIANTS * sizeof(int32_t));
    X->ids_tmp = pt_xmalloc((MAX_VARIANTS > LENS_CHUNK ? MAX_VARIANTS : LENS_CHUNK) * sizeof(int32_t));
    X->lp_tmp = pt_xmalloc(MAX_VARIANTS * sizeof(float));
    X->lp_tmp2 = pt_xmalloc(MAX_VARIANTS * sizeof(float));
    X->kl_tmp = pt_xmalloc(MAX_VARIANTS * sizeof(double));
    X->kl_tmp2 = pt_xmalloc(MAX_VARIANTS * sizeof(double));
    return 0;
}

void pt_sweep_free_experiments(pt_sweep *S) {
    pt_experiments *X = S->ex;
    if (!X) return;
    pt_devbuf *bufs[] = {&X->d_xin, &X->d_logits, &X->d_lens_x};
    for (size_t k = 0; k < 3; k++)
        if (bufs[k]->p) S->be->free(S->be, bufs[k]->p);
    free(X->windows);
    free(X->ko);
    free(X->segs);
    free(X->vars);
    free(X->fin);
    free(X->top1);
    free(X->ids_tmp);
    free(X->lp_tmp);
    free(X->lp_tmp2);
    free(X->kl_tmp);
    free(X->kl_tmp2);
    free(X->pos);
    free(X->kvr);
    free(X->src_rows);
    free(X);
    S->ex = NULL;
}

void pt_sweep_emit_windows(pt_sweep *S) {
    pt_experiments *X = S->ex;
    if (!X || S->col[C_WIN] < 0) return;
    int32_t *w = pt_sweep_rows(S, C_WIN, (size_t)X->n_windows);
    for (int k = 0; k < X->n_windows; k++) w[2 * k] = X->windows[k][0], w[2 * k + 1] = X->windows[k][1];
}

/* ---- position sets ---------------------------------------------------------------------- */

/* The positions of sequence q selected by the record or --positions, ascending, into out
 * (capacity q->T). include_final: add T-1 (logit lens); otherwise T-1 is dropped (knockout). */
static int position_set(pt_sweep *S, const pt_bseq *q, int include_final, int32_t *out) {
    const pt_record *r = q->rec;
    const int T = q->T;
    char *mark = pt_xcalloc((size_t)T, 1);
    if (r->positions) {
        for (int k = 0; k < r->n_positions; k++)
            if (r->positions[k] < T) mark[r->positions[k]] = 1;
    } else {
        switch (S->o->positions) {
        case PT_POS_ALL:
            for (int p = 0; p < T - 1; p++) mark[p] = 1;
            break;
        case PT_POS_LAST:
            for (int p = T - 1 - S->o->positions_k; p < T - 1; p++)
                if (p >= 0) mark[p] = 1;
            break;
        case PT_POS_PUNCT:
            for (int p = 0; p < T; p++) {
                const char *piece = S->tok ? pt_tokenizer_piece(S->tok, q->ids[p]) : NULL;
                if (pt_is_punct_text(piece)) mark[p] = 1;
            }
            break;
        case PT_POS_NONE:
            break;
        }
    }
    mark[T - 1] = (char)(include_final ? 1 : 0);
    int n = 0;
    for (int p = 0; p < T; p++)
        if (mark[p]) out[n++] = p;
    free(mark);
    return n;
}

/* ---- sub-batches of variants ----------------------------------------------------------- */

static void flush_variants(pt_sweep *S, int kind);

/* Add a variant of clean sequence `seq`: queries p..T-1 from layer `layer`. For a patching
 * variant, row p's residual comes from `patch_row` instead of the sequence's own. */
static void add_variant(pt_sweep *S, int kind, int seq, int p, int layer, int ko_pos, int ko_lo,
                        int ko_hi, int patch_row, struct variant v) {
    pt_experiments *X = S->ex;
    const pt_bseq *q = &S->plan.seqs[seq];
    const int n_q = q->T - p;
    if (X->n_var > 0 && (X->n_var == MAX_VARIANTS || X->n_rows + n_q > S->variant_rows ||
                         layer != X->start_layer))
        flush_variants(S, kind);
    X->start_layer = layer;
    const int row = X->n_rows;
    if ((size_t)(row + n_q) > X->rows_cap) {
        X->rows_cap = (size_t)(row + n_q) * 2;
        X->pos = pt_xrealloc(X->pos, X->rows_cap * sizeof(int32_t));
        X->kvr = pt_xrealloc(X->kvr, X->rows_cap * sizeof(int32_t));
        X->src_rows = pt_xrealloc(X->src_rows, X->rows_cap * sizeof(int32_t));
    }
    for (int k = 0; k < n_q; k++) {
        X->pos[row + k] = p + k;
        X->kvr[row + k] = S->plan.n_rows + row + k; /* variant keys live after the clean rows */
        X->src_rows[row + k] = q->kv0 + p + k;
    }
    if (patch_row >= 0) X->src_rows[row] = patch_row;
    X->segs[X->n_var] = (pt_segment){
        .row = row, .n_q = n_q, .pos0 = p, .prefix_kv = q->kv0, .own_kv = S->plan.n_rows + row,
        .ko_pos = ko_pos, .ko_lo = ko_lo, .ko_hi = ko_hi, .mass_row = -1, .last_row = -1,
        .pattern_row = -1, .final_pos = q->T - 1};
    X->fin[X->n_var] = row + n_q - 1;
    X->vars[X->n_var] = v;
    X->n_var++;
    X->n_rows += n_q;
}

enum { KIND_KNOCKOUT = 0, KIND_PATCH = 1 };

static void flush_variants(pt_sweep *S, int kind) {
    pt_experiments *X = S->ex;
    if (X->n_var == 0) return;
    pt_backend *be = S->be;
    const pt_config *c = S->cfg;
    const int d = c->d_model, V = c->vocab_size, m = X->n_var;
    pt_plan *P = &S->plan;

    float *xin = pt_sweep_dev(S, &X->d_xin, (size_t)X->n_rows * d);
    be->gather_rows(be, S->d_resid_all.p + (size_t)X->start_layer * P->n_rows * d, X->src_rows,
                    X->n_rows, d, xin);
    float *logits = pt_sweep_dev(S, &X->d_logits, (size_t)m * V);
    pt_fwd f = {.n_rows = X->n_rows, .pos = X->pos, .start_layer = X->start_layer, .x_in = xin,
                .segs = X->segs, .n_segs = m, .kv_rows = X->kvr, .final_rows = X->fin,
                .n_final = m, .logits = logits};
    pt_forward(&S->en, &f);
    be->log_softmax(be, logits, m, V, NULL, 1, X->top1, X->lp_tmp);

    /* compare each variant with its clean reference, one run of same-reference variants at a time */
    for (int v0 = 0; v0 < m;) {
        const int ref = kind == KIND_KNOCKOUT ? X->vars[v0].seq : X->vars[v0].pair;
        int v1 = v0 + 1;
        while (v1 < m && (kind == KIND_KNOCKOUT ? X->vars[v1].seq : X->vars[v1].pair) == ref) v1++;
        const float *Q = logits + (size_t)v0 * V;
        if (kind == KIND_KNOCKOUT) {
            const int s = X->vars[v0].seq;
            const float *Pc = S->logp_dev + (size_t)s * V;
            be->divergence(be, Pc, 0, Q, (size_t)V, v1 - v0, V, X->kl_tmp + v0, NULL, NULL);
            for (int v = v0; v < v1; v++) X->ids_tmp[v - v0] = P->topk_id[(size_t)s * S->topk];
            be->pick(be, Q, v1 - v0, V, X->ids_tmp, X->lp_tmp2 + v0);
            const int32_t tgt = P->seqs[s].rec->target_id[P->seqs[s].side];
            float *tq = pt_xmalloc((size_t)(v1 - v0) * sizeof(float));
            for (int v = v0; v < v1; v++) X->ids_tmp[v - v0] = tgt;
            be->pick(be, Q, v1 - v0, V, X->ids_tmp, tq);
            for (int v = v0; v < v1; v++)
                X->ko[X->vars[v].slot] = (struct ko_row){
                    .kl = (float)X->kl_tmp[v],
                    .dtop1 = X->lp_tmp2[v] - P->topk_lp[(size_t)s * S->topk],
                    .dtarget = tgt >= 0 ? tq[v - v0] - P->target_lp[s] : NAN,
                    .changed = (int8_t)(X->top1[v] != P->topk_id[(size_t)s * S->topk])};
            free(tq);
        } else {
            const pt_record *r = P->seqs[X->vars[v0].seq].rec;
            const int sa = r->seq_local[0], sb = r->seq_local[1];
            const float *Pa = S->logp_dev + (size_t)sa * V, *Pb = S->logp_dev + (size_t)sb * V;
            be->divergence(be, Pb, 0, Q, (size_t)V, v1 - v0, V, X->kl_tmp + v0, NULL, NULL);
            be->divergence(be, Pa, 0, Q, (size_t)V, v1 - v0, V, X->kl_tmp2 + v0, NULL, NULL);
            const int32_t top1_b = P->topk_id[(size_t)sb * S->topk];
            for (int v = v0; v < v1; v++) X->ids_tmp[v - v0] = top1_b;
            be->pick(be, Q, v1 - v0, V, X->ids_tmp, X->lp_tmp2 + v0);
            float lp_a_top1b;
            be->pick(be, Pa, 1, V, &top1_b, &lp_a_top1b);
            for (int v = v0; v < v1; v++) {
                *(int64_t *)pt_sweep_rows(S, C_PA_PAIR, 1) = S->n_pairs_total + X->vars[v].pair;
                *(int32_t *)pt_sweep_rows(S, C_PA_LAYER, 1) = X->vars[v].layer;
                *(int32_t *)pt_sweep_rows(S, C_PA_POS, 1) = X->vars[v].pos;
                *(float *)pt_sweep_rows(S, C_PA_KL_TO_B, 1) = (float)X->kl_tmp[v];
                *(float *)pt_sweep_rows(S, C_PA_KL_FROM_A, 1) = (float)X->kl_tmp2[v];
                *(float *)pt_sweep_rows(S, C_PA_DTOP1_B, 1) = X->lp_tmp2[v] - lp_a_top1b;
            }
        }
        v0 = v1;
    }
    X->n_var = 0;
    X->n_rows = 0;
}

/* ---- the experiments of one batch ------------------------------------------------------- */

/* Variants are computed window by window (each window starts at its own layer), so that the
 * variants of every sequence of the batch that start at the same layer share sub-batches; the
 * rows are written in (sequence, window, position) order. */
static void knockout(pt_sweep *S) {
    pt_experiments *X = S->ex;
    pt_plan *P = &S->plan;
    int32_t **sets = pt_xcalloc((size_t)P->n_seqs, sizeof *sets);
    int64_t *first = pt_xcalloc((size_t)P->n_seqs + 1, sizeof *first);
    int *n_set = pt_xcalloc((size_t)P->n_seqs, sizeof *n_set);
    for (int s = 0; s < P->n_seqs; s++) {
        sets[s] = pt_xmalloc((size_t)P->seqs[s].T * sizeof(int32_t));
        n_set[s] = position_set(S, &P->seqs[s], 0, sets[s]);
        first[s + 1] = first[s] + (int64_t)n_set[s] * X->n_windows;
    }
    X->ko = pt_xrealloc(X->ko, (size_t)(first[P->n_seqs] + 1) * sizeof *X->ko);
    for (int w = 0; w < X->n_windows; w++)
        for (int s = 0; s < P->n_seqs; s++)
            for (int k = 0; k < n_set[s]; k++) {
                const int j = sets[s][k];
                struct variant v = {s, j, w, X->windows[w][0], P->seqs[s].pair,
                                    first[s] + (int64_t)w * n_set[s] + k};
                add_variant(S, KIND_KNOCKOUT, s, j + 1, X->windows[w][0], j, X->windows[w][0],
                            X->windows[w][1], -1, v);
            }
    flush_variants(S, KIND_KNOCKOUT);
    for (int s = 0; s < P->n_seqs; s++)
        for (int w = 0; w < X->n_windows; w++)
            for (int k = 0; k < n_set[s]; k++) {
                const struct ko_row *row = &X->ko[first[s] + (int64_t)w * n_set[s] + k];
                *(int64_t *)pt_sweep_rows(S, C_KO_SEQ, 1) = S->n_seqs_total + s;
                *(int32_t *)pt_sweep_rows(S, C_KO_POS, 1) = sets[s][k];
                *(int32_t *)pt_sweep_rows(S, C_KO_WIN, 1) = w;
                *(float *)pt_sweep_rows(S, C_KO_KL, 1) = row->kl;
                *(float *)pt_sweep_rows(S, C_KO_DTOP1, 1) = row->dtop1;
                *(float *)pt_sweep_rows(S, C_KO_DTARGET, 1) = row->dtarget;
                *(int8_t *)pt_sweep_rows(S, C_KO_CHANGED, 1) = row->changed;
            }
    for (int s = 0; s < P->n_seqs; s++) free(sets[s]);
    free(sets);
    free(first);
    free(n_set);
}

static void patching(pt_sweep *S, pt_record **recs, int n) {
    pt_plan *P = &S->plan;
    const int L = S->cfg->n_layers;
    for (int p = 0; p < n; p++) {
        const pt_record *r = recs[p];
        if (r->status || r->seq_local[1] < 0) continue;
        const pt_bseq *A = &P->seqs[r->seq_local[0]], *B = &P->seqs[r->seq_local[1]];
        if (A->T != B->T) continue; /* patching needs equal token counts */
        for (int l = 0; l < L; l++)
            for (int pos = 0; pos < A->T; pos++) {
                struct variant v = {r->seq_local[0], pos, 0, l, p, -1};
                add_variant(S, KIND_PATCH, r->seq_local[0], pos, l, -1, 0, 0, B->kv0 + pos, v);
            }
    }
    flush_variants(S, KIND_PATCH);
}

static void lens(pt_sweep *S) {
    pt_experiments *X = S->ex;
    pt_plan *P = &S->plan;
    pt_backend *be = S->be;
    const pt_config *c = S->cfg;
    const int L = c->n_layers, d = c->d_model, V = c->vocab_size;
    float *x = pt_sweep_dev(S, &X->d_lens_x, (size_t)LENS_CHUNK * d);
    float *logits = pt_sweep_dev(S, &X->d_logits, (size_t)LENS_CHUNK * V);
    float *top1 = pt_xmalloc(LENS_CHUNK * sizeof(float)), *tgt = pt_xmalloc(LENS_CHUNK * sizeof(float));
    int32_t *rows = pt_xmalloc(LENS_CHUNK * sizeof(int32_t));
    for (int s = 0; s < P->n_seqs; s++) {
        const pt_bseq *q = &P->seqs[s];
        int32_t *set = pt_xmalloc((size_t)q->T * sizeof(int32_t));
        const int n = position_set(S, q, 1, set);
        const int32_t top1_id = P->topk_id[(size_t)s * S->topk];
        const int32_t tgt_id = q->rec->target_id[q->side];
        for (int k = 0; k < n; k++) {
            float *o_top1 = NULL, *o_tgt = NULL;
            *(int64_t *)pt_sweep_rows(S, C_LENS_SEQ, 1) = S->n_seqs_total + s;
            *(int32_t *)pt_sweep_rows(S, C_LENS_POS, 1) = set[k];
            o_top1 = pt_sweep_rows(S, C_LENS_TOP1, 1);
            o_tgt = pt_sweep_rows(S, C_LENS_TARGET, 1);
            /* the residual entering every layer at this position, decoded in chunks */
            for (int l0 = 0; l0 <= L; l0 += LENS_CHUNK) {
                const int m = L + 1 - l0 < LENS_CHUNK ? L + 1 - l0 : LENS_CHUNK;
                for (int i = 0; i < m; i++) {
                    /* rows of resid_all viewed as [(L+1) * n_rows, d] */
                    rows[i] = (l0 + i) * P->n_rows + q->kv0 + set[k];
                }
                be->gather_rows(be, S->d_resid_all.p, rows, m, d, x);
                pt_decode(&S->en, x, m, logits);
                be->log_softmax(be, logits, m, V, NULL, 0, NULL, NULL);
                for (int i = 0; i < m; i++) X->ids_tmp[i] = top1_id;
                be->pick(be, logits, m, V, X->ids_tmp, top1);
                for (int i = 0; i < m; i++) X->ids_tmp[i] = tgt_id;
                be->pick(be, logits, m, V, X->ids_tmp, tgt);
                for (int i = 0; i < m; i++) {
                    o_top1[l0 + i] = top1[i];
                    o_tgt[l0 + i] = tgt_id >= 0 ? tgt[i] : NAN;
                }
            }
        }
        free(set);
    }
    free(top1);
    free(tgt);
    free(rows);
}

/* Rows the experiments of one record will run (each weighted by the share of layers it runs),
 * so the main loop can cut batches of comparable work and commit regularly. Deterministic in
 * the record, so a resumed run cuts the same batches. */
int64_t pt_sweep_experiment_rows(pt_sweep *S, const pt_record *r) {
    if (!S->experiments || r->status) return 0;
    const pt_config *c = S->cfg;
    const int L = c->n_layers;
    int64_t rows = 0;
    for (int side = 0; side < 1 + r->has_b; side++) {
        const int64_t T = r->n_tok[side];
        if (S->o->ablate_knockout) {
            pt_bseq q = {.rec = (pt_record *)r, .side = side, .T = (int)T, .ids = r->ids[side]};
            int32_t *set = pt_xmalloc((size_t)T * sizeof(int32_t));
            const int n = position_set(S, &q, 0, set);
            int64_t per_window = 0;
            for (int k = 0; k < n; k++) per_window += T - 1 - set[k];
            free(set);
            for (int w = 0; w < S->ex->n_windows; w++)
                rows += per_window * (L - S->ex->windows[w][0]) / L;
        }
    }
    if (S->o->patch_resid && r->has_b && r->n_tok[0] == r->n_tok[1]) {
        const int64_t T = r->n_tok[0];
        rows += T * (T + 1) / 2 * (L + 1) / 2; /* sum over layers l of (L - l) / L */
    }
    return rows;
}

void pt_sweep_experiments(pt_sweep *S, pt_record **recs, int n) {
    if (S->o->stat_lens) lens(S);
    if (S->o->ablate_knockout) knockout(S);
    if (S->o->patch_resid) patching(S, recs, n);
}
