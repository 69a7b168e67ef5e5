/* punctum — causal experiments (SPEC §3): attention knockout, residual patching, logit lens.
 *
 * Every experiment is a set of "variants" of a clean sequence that differ from it only from
 * some position p and layer l on. A variant is one segment: its queries are positions p..T-1,
 * it starts at layer l from the clean residual stream (resid_all), and reads keys 0..p-1 from
 * the clean run's key/value cache. Variants of one start layer are packed into sub-batches
 * and run through the same forward as the clean pass. */
#include "engine/experiments.h"

#include "engine/generate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_VARIANTS = 256 };

/* Variants per sub-batch, and residual rows the logit lens decodes at once: their logits take
 * (rows x vocabulary) floats, so they shrink with the forward budget when memory runs out. */
static int max_variants(const pt_sweep *S) {
    const int m = S->fwd_budget / 4;
    return m < 1 ? 1 : m > MAX_VARIANTS ? MAX_VARIANTS : m;
}

int pt_experiments_final_rows(const pt_sweep *S) {
    return max_variants(S);
}
enum { KIND_KNOCKOUT = 0, KIND_PATCH = 1 };

/* What a variant of the sub-batch is, for emitting its row. */
struct variant {
    int seq, pos, window, layer, pair;
    int64_t slot; /* its output row in the batch's knockout or patching rows */
};
/* Knockout results of the batch, by output row (sequence, window, position order). */
struct ko_row {
    float kl, dtop1, dtarget;
    int8_t changed;
};
typedef struct {
    struct ko_row *v;
    size_t cap;
} ko_buf;
/* Patching results of the batch, by output row (pair, layer, position order). */
struct pa_row {
    float kl_to_b, kl_from_a, dtop1_b;
};
typedef struct {
    struct pa_row *v;
    size_t cap;
} pa_buf;

struct pt_experiments {
    int n_windows;
    pt_i32buf windows; /* [n_windows][2]: lo, hi */
    /* one sub-batch under construction */
    int n_var, n_rows, start_layer;
    int kv_used; /* variant cache rows taken (with --generate: their tokens' rows too) */
    pt_segment segs[MAX_VARIANTS];
    pt_gen_variant gen[MAX_VARIANTS];
    struct variant vars[MAX_VARIANTS];
    int32_t fin[MAX_VARIANTS], top1[MAX_VARIANTS], ids_tmp[MAX_VARIANTS];
    /* one call's row indices and ids: the comparisons' reference rows of logp_dev (b's for
     * patching), a's rows, target ids; the lens' rows of resid_all, top-1 and target ids */
    int32_t ref_rows[MAX_VARIANTS], a_rows[MAX_VARIANTS], tgt_ids[MAX_VARIANTS];
    float lp_tmp[MAX_VARIANTS], lp_tmp2[MAX_VARIANTS], tq[MAX_VARIANTS];
    double kl_tmp[MAX_VARIANTS], kl_tmp2[MAX_VARIANTS];
    pt_i32buf pos, kvr, src_rows; /* per variant row */
    /* knockout position sets of the batch: sequence s has set_n[s] positions at set_off[s] */
    pt_i32buf sets, set_n;
    pt_i64buf set_off, first;
    ko_buf ko;
    pa_buf pa;
    pt_i64buf pa_first;   /* the batch's pair p has its patching rows from pa_first[p] */
    pt_chrbuf mark;       /* position_set scratch */
    pt_i32buf seq_ids;    /* patch_references' ids, by sequence */
    pt_f32buf lp_a_top1b; /* ... and log p_a(top-1 of b), by a's sequence */
    pt_i32buf lens_seq, lens_pos;     /* the lens' items (sequence, position) of the batch */
    pt_f32buf lens_top1, lens_target; /* their rows, [item][L + 1] */
    pt_devbuf d_xin, d_logits, d_lens_x;
};

/* ---- setup ------------------------------------------------------------------------------ */

static int add_window(pt_experiments *X, int lo, int hi, pt_error *e) {
    if (PT_BUF_FIT(&X->windows, 2 * (size_t)(X->n_windows + 1), e)) return -1;
    X->windows.v[2 * X->n_windows] = lo;
    X->windows.v[2 * X->n_windows + 1] = hi;
    X->n_windows++;
    return 0;
}

static int parse_windows(pt_experiments *X, const char *spec, int L, pt_error *e) {
    X->n_windows = 0;
    if (!spec || !strcmp(spec, "all")) return add_window(X, 0, L, e);
    if (!strcmp(spec, "each")) {
        for (int l = 0; l < L; l++)
            if (add_window(X, l, l + 1, e)) return -1;
        return 0;
    }
    const char *p = spec;
    while (*p) {
        char *end;
        long lo = strtol(p, &end, 10);
        if (end == p || *end != ':')
            return pt_fail(e, "--windows %s: expected LO:HI[,LO:HI...]", spec);
        p = end + 1;
        long hi = strtol(p, &end, 10);
        if (end == p || (*end && *end != ','))
            return pt_fail(e, "--windows %s: expected LO:HI[,LO:HI...]", spec);
        if (lo < 0 || hi > L || lo >= hi)
            return pt_fail(e, "--windows %s: window %ld:%ld is not within 0:%d with LO < HI", spec,
                           lo, hi, L);
        if (add_window(X, (int)lo, (int)hi, e)) return -1;
        p = *end ? end + 1 : end;
    }
    return 0;
}

int pt_experiments_setup(pt_sweep *S, pt_error *e) {
    const pt_run_opts *o = S->o;
    S->experiments = o->ablate_knockout || o->patch_resid || o->stat_lens;
    if (!S->experiments) return 0;
    pt_experiments *X = pt_try_calloc(1, sizeof *X, "the experiments", e);
    if (!(S->ex = X)) return -1;
    if (o->ablate_knockout && parse_windows(X, o->windows, S->cfg->n_layers, e)) return -1;
    return 0;
}

void pt_experiments_release(pt_sweep *S) {
    pt_experiments *X = S->ex;
    if (!X) return;
    pt_devbuf_free(S->be, &X->d_xin);
    pt_devbuf_free(S->be, &X->d_logits);
    pt_devbuf_free(S->be, &X->d_lens_x);
}

void pt_experiments_free(pt_sweep *S) {
    pt_experiments *X = S->ex;
    if (!X) return;
    if (S->be) pt_experiments_release(S);
    PT_BUF_FREE(&X->windows);
    PT_BUF_FREE(&X->pos);
    PT_BUF_FREE(&X->kvr);
    PT_BUF_FREE(&X->src_rows);
    PT_BUF_FREE(&X->sets);
    PT_BUF_FREE(&X->set_n);
    PT_BUF_FREE(&X->set_off);
    PT_BUF_FREE(&X->first);
    PT_BUF_FREE(&X->ko);
    PT_BUF_FREE(&X->pa);
    PT_BUF_FREE(&X->pa_first);
    PT_BUF_FREE(&X->mark);
    PT_BUF_FREE(&X->seq_ids);
    PT_BUF_FREE(&X->lp_a_top1b);
    PT_BUF_FREE(&X->lens_seq);
    PT_BUF_FREE(&X->lens_pos);
    PT_BUF_FREE(&X->lens_top1);
    PT_BUF_FREE(&X->lens_target);
    free(X);
    S->ex = NULL;
}

void pt_experiments_emit_windows(pt_sweep *S) {
    pt_experiments *X = S->ex;
    if (!X || S->col[C_WIN] < 0) return;
    int32_t *w = pt_sweep_rows(S, C_WIN, (size_t)X->n_windows);
    memcpy(w, X->windows.v, (size_t)X->n_windows * 2 * sizeof(int32_t));
}

/* ---- position sets ---------------------------------------------------------------------- */

/* The positions of sequence q selected by the record or --positions, ascending, into out
 * (capacity q->T). include_final: add T-1 (logit lens); otherwise T-1 is dropped (knockout).
 * -1: out of host memory. */
static int position_set(pt_sweep *S, const pt_bseq *q, int include_final, int32_t *out) {
    pt_experiments *X = S->ex;
    const pt_record *r = q->rec;
    const int T = q->T;
    if (PT_SWEEP_FIT(S, &X->mark, T)) return -1;
    char *mark = X->mark.v;
    memset(mark, 0, (size_t)T);
    if (r->positions) {
        for (int k = 0; k < r->n_positions; k++)
            if (r->positions[k] < T)
                mark[r->positions[k]] = 1;
            else if (!S->warned_positions) {
                S->warned_positions = 1;
                fprintf(stderr,
                        "punctum: warning: line %lld: position %d is beyond the prompt's %d "
                        "tokens and is ignored (said once; other records may have more)\n",
                        (long long)r->line, r->positions[k], T);
            }
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
    return n;
}

/* ---- sub-batches of variants ----------------------------------------------------------- */

static int flush_variants(pt_sweep *S, int kind);

/* Add a variant of clean sequence `seq`: queries p..T-1 from layer `layer`. For a patching
 * variant, row p's residual comes from `patch_row` instead of the sequence's own. */
static int add_variant(pt_sweep *S, int kind, int seq, int p, int layer, int ko_pos, int ko_lo,
                       int ko_hi, int patch_row, struct variant v) {
    pt_experiments *X = S->ex;
    const pt_bseq *q = &S->plan.seqs.v[seq];
    const int n_q = q->T - p, n_kv = n_q + (S->gen ? S->o->generate : 0);
    if (X->n_var > 0 &&
        (X->n_var == max_variants(S) || X->n_rows + n_q > S->variant_rows ||
         X->kv_used + n_kv > S->variant_kv || layer != X->start_layer) &&
        flush_variants(S, kind))
        return -1;
    X->start_layer = layer;
    const int row = X->n_rows, own_kv = S->plan.n_rows + X->kv_used;
    const size_t need = (size_t)row + (size_t)n_q;
    if (PT_SWEEP_FIT(S, &X->pos, need) || PT_SWEEP_FIT(S, &X->kvr, need) ||
        PT_SWEEP_FIT(S, &X->src_rows, need))
        return -1;
    for (int k = 0; k < n_q; k++) {
        X->pos.v[row + k] = p + k;
        X->kvr.v[row + k] = own_kv + k; /* variant keys live after the clean rows */
        X->src_rows.v[row + k] = q->kv0 + p + k;
    }
    if (patch_row >= 0) X->src_rows.v[row] = patch_row;
    X->segs[X->n_var] = (pt_segment){.row = row,
                                     .n_q = n_q,
                                     .pos0 = p,
                                     .prefix_kv = q->kv0,
                                     .own_kv = own_kv,
                                     .ko_pos = ko_pos,
                                     .ko_lo = ko_lo,
                                     .ko_hi = ko_hi,
                                     .mass_row = -1,
                                     .last_row = -1,
                                     .pattern_row = -1,
                                     .final_pos = q->T - 1};
    X->fin[X->n_var] = row + n_q - 1;
    X->gen[X->n_var] = (pt_gen_variant){
        .seq = seq,
        .kind = kind == KIND_KNOCKOUT ? 1 : 2,
        .variant = v.slot,
        .n_own = n_q,
        .own_kv = own_kv,
        .clean_kv = q->kv0 + p,
        .ko_pos = ko_pos,
        .ko_lo = ko_lo,
        .ko_hi = ko_hi,
    };
    X->kv_used += n_kv;
    X->vars[X->n_var] = v;
    X->n_var++;
    X->n_rows += n_q;
    return 0;
}

/* The comparisons make one call per quantity for the whole sub-batch, each variant's clean
 * reference addressed by row index: on a GPU every call is a launch, and their results come
 * back together in one copy and one wait (flush_variants defers them, compare_* syncs). */

/* Knockout rows of the sub-batch's variants (logits Q, one row each) against their clean runs. */
static void compare_knockout(pt_sweep *S, const float *Q) {
    pt_experiments *X = S->ex;
    pt_plan *P = &S->plan;
    pt_backend *be = S->be;
    const int V = S->cfg->vocab_size, K = S->topk, m = X->n_var;
    int any_target = 0;
    for (int v = 0; v < m; v++) {
        const pt_bseq *q = &P->seqs.v[X->vars[v].seq];
        X->ref_rows[v] = X->vars[v].seq;
        X->ids_tmp[v] = P->topk_id.v[(size_t)X->vars[v].seq * K];
        X->tgt_ids[v] = q->rec->target_id[q->side];
        any_target |= X->tgt_ids[v] >= 0;
    }
    be->divergence(be, S->logp_dev, (size_t)V, X->ref_rows, Q, (size_t)V, NULL, m, V, X->kl_tmp,
                   NULL, NULL);
    be->pick(be, Q, m, V, X->ids_tmp, X->lp_tmp2);
    if (any_target) be->pick(be, Q, m, V, X->tgt_ids, X->tq);
    be->sync(be); /* the deferred results (flush_variants) */
    for (int v = 0; v < m; v++) {
        const int s = X->vars[v].seq;
        X->ko.v[X->vars[v].slot] =
            (struct ko_row){.kl = (float)X->kl_tmp[v],
                            .dtop1 = X->lp_tmp2[v] - P->topk_lp.v[(size_t)s * K],
                            .dtarget = X->tgt_ids[v] >= 0 ? X->tq[v] - P->target_lp.v[s] : NAN,
                            .changed = (int8_t)(X->top1[v] != P->topk_id.v[(size_t)s * K])};
    }
}

/* log p_a(top-1 token of b) for the a side of every pair of the batch with patching rows
 * (pa_first), by sequence: one pick over the batch's clean log-probabilities. */
static int patch_references(pt_sweep *S, pt_record **recs, int n) {
    pt_experiments *X = S->ex;
    pt_plan *P = &S->plan;
    const int ns = P->n_seqs;
    if (X->pa_first.v[n] == 0) return 0;
    if (PT_SWEEP_FIT(S, &X->seq_ids, ns) || PT_SWEEP_FIT(S, &X->lp_a_top1b, ns)) return -1;
    for (int s = 0; s < ns; s++) X->seq_ids.v[s] = -1;
    for (int p = 0; p < n; p++)
        if (X->pa_first.v[p + 1] > X->pa_first.v[p])
            X->seq_ids.v[recs[p]->seq_local[0]] =
                P->topk_id.v[(size_t)recs[p]->seq_local[1] * S->topk];
    S->be->pick(S->be, S->logp_dev, ns, S->cfg->vocab_size, X->seq_ids.v, X->lp_a_top1b.v);
    return pt_backend_failed(S->be) ? -1 : 0;
}

/* Patching rows of the sub-batch's variants (each patches its pair's a side with b) against
 * the pair's clean b and a. */
static void compare_patch(pt_sweep *S, const float *Q) {
    pt_experiments *X = S->ex;
    pt_plan *P = &S->plan;
    pt_backend *be = S->be;
    const int V = S->cfg->vocab_size, m = X->n_var;
    for (int v = 0; v < m; v++) {
        const pt_record *r = P->seqs.v[X->vars[v].seq].rec;
        X->ref_rows[v] = r->seq_local[1];
        X->a_rows[v] = r->seq_local[0];
        X->ids_tmp[v] = P->topk_id.v[(size_t)r->seq_local[1] * S->topk];
    }
    be->divergence(be, S->logp_dev, (size_t)V, X->ref_rows, Q, (size_t)V, NULL, m, V, X->kl_tmp,
                   NULL, NULL);
    be->divergence(be, S->logp_dev, (size_t)V, X->a_rows, Q, (size_t)V, NULL, m, V, X->kl_tmp2,
                   NULL, NULL);
    be->pick(be, Q, m, V, X->ids_tmp, X->lp_tmp2);
    be->sync(be); /* the deferred results (flush_variants) */
    for (int v = 0; v < m; v++)
        X->pa.v[X->vars[v].slot] =
            (struct pa_row){.kl_to_b = (float)X->kl_tmp[v],
                            .kl_from_a = (float)X->kl_tmp2[v],
                            .dtop1_b = X->lp_tmp2[v] - X->lp_a_top1b.v[X->vars[v].seq]};
}

static int flush_variants(pt_sweep *S, int kind) {
    pt_experiments *X = S->ex;
    if (X->n_var == 0) return 0;
    pt_backend *be = S->be;
    const pt_config *c = S->cfg;
    const int d = c->d_model, V = c->vocab_size, m = X->n_var;
    const size_t rb = be->resid_bytes;
    pt_plan *P = &S->plan;

    void *xin = pt_sweep_dev(S, &X->d_xin, (size_t)X->n_rows * d * rb);
    float *logits = pt_sweep_dev(S, &X->d_logits, (size_t)m * V * sizeof(float));
    if (!xin || !logits) return -1;
    const char *layer_rows =
        (const char *)S->d.resid_all.p + (size_t)X->start_layer * P->n_rows * d * rb;
    be->gather_rows(be, layer_rows, X->src_rows.v, X->n_rows, d, xin);
    pt_fwd f = {.n_rows = X->n_rows,
                .pos = X->pos.v,
                .start_layer = X->start_layer,
                .x_in = xin,
                .segs = X->segs,
                .n_segs = m,
                .kv_rows = X->kvr.v,
                .final_rows = X->fin,
                .n_final = m,
                .logits = logits};
    if (pt_forward(&S->en, &f)) return -1;
    /* the top-1 and the comparisons' sums, read after compare_*'s sync: on a GPU one copy and
     * one wait for the sub-batch */
    be->defer_results(be);
    be->log_softmax(be, logits, m, V, NULL, 1, X->top1, X->lp_tmp);

    if (kind == KIND_KNOCKOUT)
        compare_knockout(S, logits);
    else
        compare_patch(S, logits);
    /* --generate: the variants go on, their interventions held */
    if (pt_generate_variants(S, X->gen, m, X->start_layer, X->top1, X->lp_tmp)) return -1;
    X->n_var = 0;
    X->n_rows = 0;
    X->kv_used = 0;
    return pt_backend_failed(be) ? -1 : 0;
}

/* ---- the experiments of one batch ------------------------------------------------------- */

/* The knockout position set of every sequence of the batch, and where its rows go. */
static int knockout_sets(pt_sweep *S) {
    pt_experiments *X = S->ex;
    pt_plan *P = &S->plan;
    const int ns = P->n_seqs;
    if (PT_SWEEP_FIT(S, &X->set_n, ns) || PT_SWEEP_FIT(S, &X->set_off, ns + 1) ||
        PT_SWEEP_FIT(S, &X->first, ns + 1))
        return -1;
    X->set_off.v[0] = X->first.v[0] = 0;
    for (int s = 0; s < ns; s++) {
        const int64_t off = X->set_off.v[s];
        if (PT_SWEEP_FIT(S, &X->sets, (size_t)off + (size_t)P->seqs.v[s].T)) return -1;
        const int n = position_set(S, &P->seqs.v[s], 0, X->sets.v + off);
        if (n < 0) return -1;
        X->set_n.v[s] = n;
        X->set_off.v[s + 1] = off + n;
        X->first.v[s + 1] = X->first.v[s] + (int64_t)n * X->n_windows;
    }
    return PT_SWEEP_FIT(S, &X->ko, (size_t)X->first.v[ns] + 1);
}

/* Variants are computed window by window (each window starts at its own layer), so that the
 * variants of every sequence of the batch that start at the same layer share sub-batches; the
 * rows are written in (sequence, window, position) order. */
static int knockout(pt_sweep *S) {
    pt_experiments *X = S->ex;
    pt_plan *P = &S->plan;
    if (knockout_sets(S)) return -1;
    for (int w = 0; w < X->n_windows; w++) {
        const int lo = X->windows.v[2 * w], hi = X->windows.v[2 * w + 1];
        for (int s = 0; s < P->n_seqs; s++)
            for (int k = 0; k < X->set_n.v[s]; k++) {
                const int j = X->sets.v[X->set_off.v[s] + k];
                struct variant v = {
                    s, j, w, lo, P->seqs.v[s].pair, X->first.v[s] + (int64_t)w * X->set_n.v[s] + k};
                if (add_variant(S, KIND_KNOCKOUT, s, j + 1, lo, j, lo, hi, -1, v)) return -1;
            }
    }
    if (flush_variants(S, KIND_KNOCKOUT)) return -1;
    P->n_ko_rows = X->first.v[P->n_seqs];
    for (int s = 0; s < P->n_seqs; s++)
        for (int w = 0; w < X->n_windows; w++)
            for (int k = 0; k < X->set_n.v[s]; k++) {
                const struct ko_row *row = &X->ko.v[X->first.v[s] + (int64_t)w * X->set_n.v[s] + k];
                *(int64_t *)pt_sweep_rows(S, C_KO_SEQ, 1) = S->rows.seqs + s;
                *(int32_t *)pt_sweep_rows(S, C_KO_POS, 1) = X->sets.v[X->set_off.v[s] + k];
                *(int32_t *)pt_sweep_rows(S, C_KO_WIN, 1) = w;
                *(float *)pt_sweep_rows(S, C_KO_KL, 1) = row->kl;
                *(float *)pt_sweep_rows(S, C_KO_DTOP1, 1) = row->dtop1;
                *(float *)pt_sweep_rows(S, C_KO_DTARGET, 1) = row->dtarget;
                *(int8_t *)pt_sweep_rows(S, C_KO_CHANGED, 1) = row->changed;
            }
    return 0;
}

/* The batch's /patching/resid rows, from the results compare_patch stored by row. */
static void emit_patch_rows(pt_sweep *S, int n) {
    pt_experiments *X = S->ex;
    const int L = S->cfg->n_layers;
    S->plan.n_patch_rows = X->pa_first.v[n];
    for (int p = 0; p < n; p++) {
        const int T = (int)((X->pa_first.v[p + 1] - X->pa_first.v[p]) / L);
        for (int64_t k = 0; k < (int64_t)L * T; k++) {
            const struct pa_row *row = &X->pa.v[X->pa_first.v[p] + k];
            *(int64_t *)pt_sweep_rows(S, C_PA_PAIR, 1) = S->rows.pairs + p;
            *(int32_t *)pt_sweep_rows(S, C_PA_LAYER, 1) = (int32_t)(k / T);
            *(int32_t *)pt_sweep_rows(S, C_PA_POS, 1) = (int32_t)(k % T);
            *(float *)pt_sweep_rows(S, C_PA_KL_TO_B, 1) = row->kl_to_b;
            *(float *)pt_sweep_rows(S, C_PA_KL_FROM_A, 1) = row->kl_from_a;
            *(float *)pt_sweep_rows(S, C_PA_DTOP1_B, 1) = row->dtop1_b;
        }
    }
}

/* Patching: run a with one residual position (layer, pos) taken from b, for every layer and
 * position of every pair of equal token counts. As for knockout, the variants are added layer
 * by layer (all the batch's pairs at layer l share sub-batches) and the rows written in (pair,
 * layer, position) order: a patchable pair's rows start at pa_first[p]. */
static int patching(pt_sweep *S, pt_record **recs, int n) {
    pt_experiments *X = S->ex;
    pt_plan *P = &S->plan;
    const int L = S->cfg->n_layers;
    if (PT_SWEEP_FIT(S, &X->pa_first, (size_t)n + 1)) return -1;
    X->pa_first.v[0] = 0;
    for (int p = 0; p < n; p++) {
        const pt_record *r = recs[p];
        const int ok = !r->status && r->seq_local[1] >= 0 &&
                       P->seqs.v[r->seq_local[0]].T == P->seqs.v[r->seq_local[1]].T;
        X->pa_first.v[p + 1] =
            X->pa_first.v[p] + (ok ? (int64_t)L * P->seqs.v[r->seq_local[0]].T : 0);
    }
    if (PT_SWEEP_FIT(S, &X->pa, (size_t)X->pa_first.v[n] + 1) || patch_references(S, recs, n))
        return -1;
    for (int l = 0; l < L; l++)
        for (int p = 0; p < n; p++) {
            const int T = (int)((X->pa_first.v[p + 1] - X->pa_first.v[p]) / L);
            const pt_record *r = recs[p];
            for (int pos = 0; pos < T; pos++) {
                const int64_t slot = X->pa_first.v[p] + (int64_t)l * T + pos;
                struct variant v = {r->seq_local[0], pos, 0, l, p, slot};
                const int b_row = P->seqs.v[r->seq_local[1]].kv0 + pos;
                if (add_variant(S, KIND_PATCH, r->seq_local[0], pos, l, -1, 0, 0, b_row, v))
                    return -1;
            }
        }
    if (flush_variants(S, KIND_PATCH)) return -1;
    emit_patch_rows(S, n);
    return 0;
}

/* ---- logit lens ------------------------------------------------------------------------- */

/* The lens decodes the residual entering every layer (and the final one) at each chosen
 * position: (L + 1) rows an item (sequence, position). The rows of all the batch's items are
 * decoded max_variants at a time, so a call serves many positions (on a GPU each is a wait;
 * on any device a larger product with the unembedding). */

/* The batch's items, into lens_seq / lens_pos; their count. */
static int64_t lens_items(pt_sweep *S) {
    pt_experiments *X = S->ex;
    pt_plan *P = &S->plan;
    int64_t n = 0;
    for (int s = 0; s < P->n_seqs; s++) {
        const int T = P->seqs.v[s].T;
        if (PT_SWEEP_FIT(S, &X->lens_pos, (size_t)n + (size_t)T) ||
            PT_SWEEP_FIT(S, &X->lens_seq, (size_t)n + (size_t)T))
            return -1;
        const int k = position_set(S, &P->seqs.v[s], 1, X->lens_pos.v + n);
        if (k < 0) return -1;
        for (int i = 0; i < k; i++) X->lens_seq.v[n + i] = s;
        n += k;
    }
    return n;
}

/* Lens rows r0 .. r0+m-1 (row r: item r / (L+1), layer r % (L+1)) into lens_top1/lens_target. */
static int lens_rows(pt_sweep *S, int64_t r0, int m, void *x, float *logits) {
    pt_experiments *X = S->ex;
    pt_plan *P = &S->plan;
    pt_backend *be = S->be;
    const int L1 = S->cfg->n_layers + 1, d = S->cfg->d_model, V = S->cfg->vocab_size;
    int any_target = 0;
    for (int i = 0; i < m; i++) {
        const int64_t item = (r0 + i) / L1;
        const int layer = (int)((r0 + i) % L1), s = X->lens_seq.v[item];
        const pt_bseq *q = &P->seqs.v[s];
        /* rows of resid_all viewed as [(L+1) * n_rows, d] */
        X->ref_rows[i] = layer * P->n_rows + q->kv0 + X->lens_pos.v[item];
        X->ids_tmp[i] = P->topk_id.v[(size_t)s * S->topk];
        X->tgt_ids[i] = q->rec->target_id[q->side];
        any_target |= X->tgt_ids[i] >= 0;
    }
    be->gather_rows(be, S->d.resid_all.p, X->ref_rows, m, d, x);
    if (pt_decode(&S->en, x, m, logits)) return -1;
    be->log_softmax(be, logits, m, V, NULL, 0, NULL, NULL);
    be->defer_results(be); /* the two picks: one copy and one wait on a GPU */
    be->pick(be, logits, m, V, X->ids_tmp, X->lens_top1.v + r0);
    if (any_target)
        be->pick(be, logits, m, V, X->tgt_ids, X->lens_target.v + r0);
    else
        for (int i = 0; i < m; i++) X->lens_target.v[r0 + i] = NAN;
    be->sync(be);
    return pt_backend_failed(be) ? -1 : 0;
}

static int lens(pt_sweep *S) {
    pt_experiments *X = S->ex;
    const pt_config *c = S->cfg;
    const int L1 = c->n_layers + 1, chunk = max_variants(S);
    void *x = pt_sweep_dev(S, &X->d_lens_x, (size_t)chunk * c->d_model * S->be->resid_bytes);
    float *logits = pt_sweep_dev(S, &X->d_logits, (size_t)chunk * c->vocab_size * sizeof(float));
    const int64_t n = lens_items(S);
    if (!x || !logits || n < 0) return -1;
    const int64_t rows = n * L1;
    if (PT_SWEEP_FIT(S, &X->lens_top1, (size_t)rows + 1) ||
        PT_SWEEP_FIT(S, &X->lens_target, (size_t)rows + 1))
        return -1;
    for (int64_t r0 = 0; r0 < rows; r0 += chunk)
        if (lens_rows(S, r0, rows - r0 < chunk ? (int)(rows - r0) : chunk, x, logits)) return -1;
    for (int64_t i = 0; i < n; i++) {
        *(int64_t *)pt_sweep_rows(S, C_LENS_SEQ, 1) = S->rows.seqs + X->lens_seq.v[i];
        *(int32_t *)pt_sweep_rows(S, C_LENS_POS, 1) = X->lens_pos.v[i];
        memcpy(pt_sweep_rows(S, C_LENS_TOP1, 1), X->lens_top1.v + i * L1, L1 * sizeof(float));
        memcpy(pt_sweep_rows(S, C_LENS_TARGET, 1), X->lens_target.v + i * L1, L1 * sizeof(float));
    }
    return 0;
}

int64_t pt_experiments_rows(pt_sweep *S, const pt_record *r) {
    if (!S->experiments || r->status) return 0;
    const pt_config *c = S->cfg;
    const int L = c->n_layers;
    int64_t rows = 0;
    for (int side = 0; side < 1 + r->has_b; side++) {
        const int64_t T = r->n_tok[side];
        if (!S->o->ablate_knockout) continue;
        pt_bseq q = {.rec = (pt_record *)r, .side = side, .T = (int)T, .ids = r->ids[side]};
        if (PT_SWEEP_FIT(S, &S->ex->sets, T)) return -1;
        const int n = position_set(S, &q, 0, S->ex->sets.v);
        if (n < 0) return -1;
        int64_t per_window = 0;
        for (int k = 0; k < n; k++) per_window += T - 1 - S->ex->sets.v[k];
        for (int w = 0; w < S->ex->n_windows; w++)
            rows += per_window * (L - S->ex->windows.v[2 * w]) / L;
    }
    if (S->o->patch_resid && r->has_b && r->n_tok[0] == r->n_tok[1]) {
        const int64_t T = r->n_tok[0];
        rows += T * (T + 1) / 2 * (L + 1) / 2; /* sum over layers l of (L - l) / L */
    }
    return rows;
}

int pt_experiments_run(pt_sweep *S, pt_record **recs, int n) {
    S->ex->n_var = S->ex->n_rows = S->ex->kv_used = 0; /* after a failed batch */
    if (S->o->stat_lens && lens(S)) return -1;
    if (S->o->ablate_knockout && knockout(S)) return -1;
    if (S->o->patch_resid && patching(S, recs, n)) return -1;
    return 0;
}
