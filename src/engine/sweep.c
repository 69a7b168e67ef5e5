/* punctum — one commit of the sweep (batch.h): the output schema, planning a forward batch
 * (rows, key/value cache, prefix sharing), the clean forward and its statistics, the rows for
 * the writer, and halving the batch when memory runs out; the causal experiments are in
 * experiments.c and the main loop (input, output file, signals, progress) in run.c. */
#include "engine/batch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/experiments.h"
#include "engine/generate.h"

/* ---- output schema (SPEC §5) ---------------------------------------------------------------- */

static void add_col(pt_sweep *S, int id, const char *path, pt_ctype t, int ntrail, int d0, int d1) {
    S->specs[S->n_specs] = (pt_colspec){path, t, ntrail, {d0, d1}};
    S->col[id] = S->n_specs++;
}

void pt_sweep_build_schema(pt_sweep *S) {
    const pt_run_opts *o = S->o;
    const int L = S->cfg->n_layers, H = S->cfg->n_heads, K = S->topk;
    for (int i = 0; i < C_COUNT; i++) S->col[i] = -1;
    add_col(S, C_PAIR_ID, "/pairs/id", PT_STR, 0, 0, 0);
    add_col(S, C_PAIR_LINE, "/pairs/line", PT_I64, 0, 0, 0);
    add_col(S, C_PAIR_STATUS, "/pairs/status", PT_I8, 0, 0, 0);
    add_col(S, C_PAIR_MESSAGE, "/pairs/message", PT_STR, 0, 0, 0);
    add_col(S, C_PAIR_SEQ_A, "/pairs/seq_a", PT_I64, 0, 0, 0);
    add_col(S, C_PAIR_SEQ_B, "/pairs/seq_b", PT_I64, 0, 0, 0);
    add_col(S, C_PAIR_KL_AB, "/pairs/kl_ab", PT_F32, 0, 0, 0);
    add_col(S, C_PAIR_KL_BA, "/pairs/kl_ba", PT_F32, 0, 0, 0);
    add_col(S, C_PAIR_JS, "/pairs/js", PT_F32, 0, 0, 0);
    /* pair statistics are always recorded: they cost a few final-position rows */
    add_col(S, C_PAIR_RESID_COS, "/pairs/resid_cos", PT_F32, 1, L + 1, 0);

    add_col(S, C_SEQ_PAIR, "/seqs/pair", PT_I64, 0, 0, 0);
    add_col(S, C_SEQ_SIDE, "/seqs/side", PT_I8, 0, 0, 0);
    add_col(S, C_SEQ_TEXT, "/seqs/text", PT_STR, 0, 0, 0);
    add_col(S, C_SEQ_TOK_START, "/seqs/tok_start", PT_I64, 0, 0, 0);
    add_col(S, C_SEQ_N_TOK, "/seqs/n_tok", PT_I32, 0, 0, 0);
    add_col(S, C_SEQ_ENTROPY, "/seqs/entropy", PT_F32, 0, 0, 0);
    add_col(S, C_SEQ_TOPK_ID, "/seqs/topk_id", PT_I32, 1, K, 0);
    add_col(S, C_SEQ_TOPK_LP, "/seqs/topk_logprob", PT_F32, 1, K, 0);
    add_col(S, C_SEQ_TARGET_ID, "/seqs/target_id", PT_I32, 0, 0, 0);
    add_col(S, C_SEQ_TARGET_LP, "/seqs/target_logprob", PT_F32, 0, 0, 0);
    if (o->stat_patterns) add_col(S, C_SEQ_PATTERN_START, "/seqs/pattern_start", PT_I64, 0, 0, 0);

    add_col(S, C_TOK_ID, "/tokens/id", PT_I32, 0, 0, 0);
    add_col(S, C_TOK_SEQ, "/tokens/seq", PT_I64, 0, 0, 0);
    add_col(S, C_TOK_POS, "/tokens/pos", PT_I32, 0, 0, 0);
    add_col(S, C_TOK_TEXT, "/tokens/text", PT_STR, 0, 0, 0);
    add_col(S, C_TOK_BSTART, "/tokens/byte_start", PT_I32, 0, 0, 0);
    add_col(S, C_TOK_BEND, "/tokens/byte_end", PT_I32, 0, 0, 0);
    add_col(S, C_TOK_PUNCT, "/tokens/is_punct", PT_I8, 0, 0, 0);
    add_col(S, C_TOK_ROLE, "/tokens/role", PT_I8, 0, 0, 0);
    if (o->stat_mass) add_col(S, C_TOK_MASS, "/tokens/attn_mass", PT_F32, 2, L, H);
    if (o->stat_last) add_col(S, C_TOK_LAST, "/tokens/attn_last", PT_F32, 2, L, H);
    if (o->stat_resid) add_col(S, C_TOK_RESID_NORM, "/tokens/resid_norm", PT_F32, 1, L + 1, 0);
    if (o->stat_patterns) add_col(S, C_PAT_VALUE, "/patterns/value", PT_F32, 2, L, H);
    if (o->stat_massive) {
        add_col(S, C_TOK_RESID_MAX, "/tokens/resid_max", PT_F32, 1, L + 1, 0);
        add_col(S, C_TOK_RESID_ARGMAX, "/tokens/resid_argmax", PT_I32, 1, L + 1, 0);
        add_col(S, C_TOK_RESID_MEDIAN, "/tokens/resid_median", PT_F32, 1, L + 1, 0);
    }

    if (o->ablate_knockout) {
        add_col(S, C_WIN, "/ablation/windows", PT_I32, 1, 2, 0);
        add_col(S, C_KO_SEQ, "/ablation/knockout/seq", PT_I64, 0, 0, 0);
        add_col(S, C_KO_POS, "/ablation/knockout/pos", PT_I32, 0, 0, 0);
        add_col(S, C_KO_WIN, "/ablation/knockout/window", PT_I32, 0, 0, 0);
        add_col(S, C_KO_KL, "/ablation/knockout/kl", PT_F32, 0, 0, 0);
        add_col(S, C_KO_DTOP1, "/ablation/knockout/dlogp_top1", PT_F32, 0, 0, 0);
        add_col(S, C_KO_DTARGET, "/ablation/knockout/dlogp_target", PT_F32, 0, 0, 0);
        add_col(S, C_KO_CHANGED, "/ablation/knockout/top1_changed", PT_I8, 0, 0, 0);
    }
    if (o->patch_resid) {
        add_col(S, C_PA_PAIR, "/patching/resid/pair", PT_I64, 0, 0, 0);
        add_col(S, C_PA_LAYER, "/patching/resid/layer", PT_I32, 0, 0, 0);
        add_col(S, C_PA_POS, "/patching/resid/pos", PT_I32, 0, 0, 0);
        add_col(S, C_PA_KL_TO_B, "/patching/resid/kl_to_b", PT_F32, 0, 0, 0);
        add_col(S, C_PA_KL_FROM_A, "/patching/resid/kl_from_a", PT_F32, 0, 0, 0);
        add_col(S, C_PA_DTOP1_B, "/patching/resid/dlogp_top1_b", PT_F32, 0, 0, 0);
    }
    if (o->stat_lens) {
        add_col(S, C_LENS_SEQ, "/lens/seq", PT_I64, 0, 0, 0);
        add_col(S, C_LENS_POS, "/lens/pos", PT_I32, 0, 0, 0);
        add_col(S, C_LENS_TOP1, "/lens/logp_top1", PT_F32, 1, L + 1, 0);
        add_col(S, C_LENS_TARGET, "/lens/logp_target", PT_F32, 1, L + 1, 0);
    }
    if (o->generate > 0) {
        add_col(S, C_PAIR_GEN_DIVERGE, "/pairs/gen_diverge", PT_I32, 0, 0, 0);
        add_col(S, C_PAIR_GEN_KL, "/pairs/gen_kl_ab", PT_F32, 0, 0, 0);
        add_col(S, C_GEN_SEQ, "/gen/seq", PT_I64, 0, 0, 0);
        add_col(S, C_GEN_KIND, "/gen/kind", PT_I8, 0, 0, 0);
        add_col(S, C_GEN_VARIANT, "/gen/variant", PT_I64, 0, 0, 0);
        add_col(S, C_GEN_TOK_START, "/gen/tok_start", PT_I64, 0, 0, 0);
        add_col(S, C_GEN_N_TOK, "/gen/n_tok", PT_I32, 0, 0, 0);
        add_col(S, C_GEN_TEXT, "/gen/text", PT_STR, 0, 0, 0);
        add_col(S, C_GEN_STOP, "/gen/stop", PT_I8, 0, 0, 0);
        add_col(S, C_GEN_DIVERGE, "/gen/diverge", PT_I32, 0, 0, 0);
        add_col(S, C_GEN_HIT, "/gen/hit", PT_I8, 0, 0, 0);
        add_col(S, C_GEN_HIT_B, "/gen/hit_b", PT_I8, 0, 0, 0);
        add_col(S, C_GENTOK_ID, "/gen/tokens/id", PT_I32, 0, 0, 0);
        add_col(S, C_GENTOK_LP, "/gen/tokens/logprob", PT_F32, 0, 0, 0);
    }
}

/* ---- planning a batch ------------------------------------------------------------------------ */

static int is_prefix(const int32_t *shortp, int ns, const int32_t *longp, int nl) {
    return ns <= nl && memcmp(shortp, longp, (size_t)ns * sizeof(int32_t)) == 0;
}

/* The sequences of record p (a, and b if any) appended to the plan. */
static void plan_record(pt_sweep *S, pt_record *r, int p) {
    pt_plan *P = &S->plan;
    const int nside = 1 + r->has_b;
    for (int s = 0; s < nside; s++) {
        pt_bseq *q = &P->seqs.v[P->n_seqs];
        memset(q, 0, sizeof *q);
        q->rec = r;
        q->pair = p;
        q->side = s;
        q->T = r->n_tok[s];
        q->ids = r->ids[s];
        q->base = -1;
        q->tok_row = P->n_tok_rows;
        P->n_tok_rows += q->T;
        q->pat_row = P->n_pat_rows;
        if (S->o->stat_patterns) P->n_pat_rows += (int64_t)q->T * (q->T + 1) / 2;
        r->seq_local[s] = P->n_seqs++;
    }
}

/* Rows of record r's sequences: the shorter side computed in full, the longer one (when the
 * shorter is its prefix) only its extra positions, in the rows right after its base's. */
static void plan_rows(pt_sweep *S, pt_record *r) {
    pt_plan *P = &S->plan;
    const int ia = r->seq_local[0], ib = r->seq_local[1];
    int base = -1, ext = -1;
    if (ib >= 0 && S->prefix_sharing) {
        pt_bseq *A = &P->seqs.v[ia], *B = &P->seqs.v[ib];
        /* not across longrope's short / long factors: the keys would rotate differently */
        const int share = pt_rope_can_share(S->cfg, A->T, B->T);
        if (share && is_prefix(A->ids, A->T, B->ids, B->T))
            base = ia, ext = ib;
        else if (share && is_prefix(B->ids, B->T, A->ids, A->T))
            base = ib, ext = ia;
    }
    for (int k = 0; k < 1 + (ib >= 0); k++) {
        const int si = k ? ib : ia;
        if (si == ext) continue;
        pt_bseq *q = &P->seqs.v[si];
        q->kv0 = P->n_rows;
        q->n_comp = q->T;
        P->n_rows += q->T;
    }
    if (ext >= 0) { /* the base is laid out last, so row (= cache row) of position p is kv0+p */
        pt_bseq *E = &P->seqs.v[ext], *B = &P->seqs.v[base];
        E->base = base;
        E->kv0 = B->kv0;
        E->n_comp = E->T - B->T;
        P->n_rows += E->n_comp;
    }
}

/* Lay out the batch: which sequence is computed in full, which extends another (prefix
 * sharing), their rows (batch row == key/value cache row), token and pattern rows. */
static int plan_batch(pt_sweep *S, pt_record **recs, int n) {
    pt_plan *P = &S->plan;
    P->n_seqs = P->n_rows = 0;
    P->n_tok_rows = P->n_pat_rows = 0;
    P->n_ko_rows = P->n_patch_rows = 0;
    if (PT_SWEEP_FIT(S, &P->seqs, 2 * (size_t)n)) return -1;
    for (int p = 0; p < n; p++) {
        pt_record *r = recs[p];
        r->seq_local[0] = r->seq_local[1] = -1;
        if (r->status) continue;
        plan_record(S, r, p);
        plan_rows(S, r);
    }
    return 0;
}

/* ---- the clean pass ------------------------------------------------------------------------- */

/* Host index arrays of the clean forward: ids, positions, cache rows, segments, final rows. */
static int clean_inputs(pt_sweep *S, int *n_segs) {
    pt_plan *P = &S->plan;
    const int n = P->n_rows, ns = P->n_seqs;
    if (PT_SWEEP_FIT(S, &S->h.ids, n) || PT_SWEEP_FIT(S, &S->h.pos, n) ||
        PT_SWEEP_FIT(S, &S->h.kvr, n) || PT_SWEEP_FIT(S, &S->h.segs, ns) ||
        PT_SWEEP_FIT(S, &S->h.fin, ns) || PT_SWEEP_FIT(S, &S->h.tgt, ns))
        return -1;
    int nseg = 0;
    for (int s = 0; s < ns; s++) {
        pt_bseq *q = &P->seqs.v[s];
        const int first = q->T - q->n_comp; /* first computed position */
        for (int k = 0; k < q->n_comp; k++) {
            const int r = q->kv0 + first + k;
            S->h.ids.v[r] = q->ids[first + k];
            S->h.pos.v[r] = first + k;
            S->h.kvr.v[r] = r;
        }
        q->final_row = q->kv0 + q->T - 1;
        S->h.fin.v[s] = q->final_row;
        S->h.tgt.v[s] = q->rec->target_id[q->side];
        if (q->n_comp == 0) continue;
        S->h.segs.v[nseg++] = (pt_segment){.row = q->kv0 + first,
                                           .n_q = q->n_comp,
                                           .pos0 = first,
                                           .prefix_kv = q->kv0,
                                           .own_kv = q->kv0 + first,
                                           .ko_pos = -1,
                                           .ko_lo = 0,
                                           .ko_hi = 0,
                                           .mass_row = q->tok_row,
                                           .last_row = q->tok_row,
                                           .pattern_row = S->o->stat_patterns ? q->pat_row : -1,
                                           .final_pos = q->T - 1};
    }
    *n_segs = nseg;
    return 0;
}

/* Room in the engine for the clean pass and, after it, the experiments' variant sub-batches
 * (up to fwd_budget rows, at least one whole sequence, their keys after the clean ones). */
static int reserve_engine(pt_sweep *S) {
    const pt_plan *P = &S->plan;
    int longest = 1;
    for (int s = 0; s < P->n_seqs; s++)
        if (P->seqs.v[s].T > longest) longest = P->seqs.v[s].T;
    const int lanes = pt_generate_lanes(S), N = S->o->generate;
    pt_engine_size sz = {
        P->n_rows, P->n_rows,   S->o->ablate_knockout || S->o->patch_resid || lanes > 0,
        P->n_seqs, longest + N, S->topk};
    S->variant_rows = S->variant_kv = 0;
    if (S->experiments) {
        S->variant_rows = S->fwd_budget > longest ? S->fwd_budget : longest;
        if (S->variant_rows > sz.rows) sz.rows = S->variant_rows;
        /* with --generate a variant's tokens follow its own rows: room for as many again */
        S->variant_kv = lanes > 0 ? 2 * S->variant_rows + N : S->variant_rows;
        sz.kv_rows += S->variant_kv;
        const int fr = pt_experiments_final_rows(S); /* variant and lens sub-batches */
        if (sz.final_rows < fr) sz.final_rows = fr;
    }
    if (lanes > 0) { /* decode steps: a query row per lane; N cache rows each after the rest */
        if (sz.rows < lanes) sz.rows = lanes;
        if (sz.final_rows < lanes) sz.final_rows = lanes;
        sz.kv_rows += lanes * N;
    }
    return pt_engine_reserve(&S->en, &sz);
}

/* The device outputs of the clean forward (statistics zeroed); -1: out of memory. */
static int clean_outputs(pt_sweep *S, pt_fwd *f) {
    const pt_plan *P = &S->plan;
    const pt_config *c = S->cfg;
    pt_backend *be = S->be;
    const size_t LH = (size_t)c->n_layers * c->n_heads, L1 = (size_t)c->n_layers + 1;
    const size_t n = (size_t)P->n_rows, ns = (size_t)P->n_seqs, d = (size_t)c->d_model;
    const size_t tok_rows = (size_t)P->n_tok_rows, pat = (size_t)P->n_pat_rows * LH + 1;
    if ((S->o->stat_mass && !(f->mass = pt_sweep_dev(S, &S->d.mass, tok_rows * LH * 4))) ||
        (S->o->stat_last && !(f->last = pt_sweep_dev(S, &S->d.last, tok_rows * LH * 4))) ||
        (S->o->stat_patterns && !(f->pattern = pt_sweep_dev(S, &S->d.pat, pat * 4))) ||
        (S->o->stat_resid && !(f->resid_norm = pt_sweep_dev(S, &S->d.rnorm, n * L1 * 4))) ||
        !(f->tap_resid = pt_sweep_dev(S, &S->d.tap, L1 * ns * d * be->resid_bytes)) ||
        (S->experiments &&
         !(f->resid_all = pt_sweep_dev(S, &S->d.resid_all, L1 * n * d * be->resid_bytes))) ||
        !(f->logits = pt_sweep_dev(S, &S->d.logits, ns * (size_t)c->vocab_size * 4)))
        return -1;
    if (S->o->stat_massive) {
        float *m = pt_sweep_dev(S, &S->d.massive, 3 * n * L1 * 4);
        if (!m) return -1;
        f->resid_max = m;
        f->resid_argmax = (int32_t *)(m + n * L1);
        f->resid_median = m + 2 * n * L1;
    }
    if (f->mass) be->fill(be, f->mass, 0.0f, tok_rows * LH);
    if (f->last) be->fill(be, f->last, 0.0f, tok_rows * LH);
    if (f->pattern) be->fill(be, f->pattern, 0.0f, pat);
    return 0;
}

static int clean_forward(pt_sweep *S) {
    pt_plan *P = &S->plan;
    pt_backend *be = S->be;
    const int V = S->cfg->vocab_size, ns = P->n_seqs, K = S->topk;
    int nseg = 0;
    if (clean_inputs(S, &nseg) || reserve_engine(S)) return -1;
    pt_fwd f = {.n_rows = P->n_rows,
                .ids = S->h.ids.v,
                .pos = S->h.pos.v,
                .start_layer = 0,
                .segs = S->h.segs.v,
                .n_segs = nseg,
                .kv_rows = S->h.kvr.v,
                .tap_rows = S->h.fin.v,
                .n_tap = ns,
                .final_rows = S->h.fin.v,
                .n_final = ns};
    if (clean_outputs(S, &f) || pt_forward(&S->en, &f)) return -1;
    /* A side identical to its base (a == b) has the base's final row; the head's GEMM may still
     * round the two copies differently by their place in its tiling, so give it the base's
     * logits: identical prompts then have identical predictions (kl_ab exactly 0). */
    for (int s = 0; s < ns; s++) {
        const pt_bseq *q = &P->seqs.v[s];
        if (q->base >= 0 && q->n_comp == 0)
            be->copy(be, f.logits + (size_t)s * V, f.logits + (size_t)q->base * V,
                     (size_t)V * sizeof(float));
    }

    /* next-token distributions of every sequence */
    if (PT_SWEEP_FIT(S, &P->entropy, ns) || PT_SWEEP_FIT(S, &P->topk_id, (size_t)ns * K) ||
        PT_SWEEP_FIT(S, &P->topk_lp, (size_t)ns * K) || PT_SWEEP_FIT(S, &P->target_lp, ns))
        return -1;
    be->defer_results(be); /* entropy, top-k and target: one copy and one wait on a GPU */
    be->log_softmax(be, f.logits, ns, V, P->entropy.v, K, P->topk_id.v, P->topk_lp.v);
    be->pick(be, f.logits, ns, V, S->h.tgt.v, P->target_lp.v);
    be->sync(be);
    S->logp_dev = f.logits; /* experiments compare against these rows */
    return pt_backend_failed(be) ? -1 : 0;
}

/* ---- rows for the writer ---------------------------------------------------------------- */

static double cosine(const float *x, const float *y, int d) {
    double xy = 0, xx = 0, yy = 0;
    for (int i = 0; i < d; i++) {
        xy += (double)x[i] * y[i];
        xx += (double)x[i] * x[i];
        yy += (double)y[i] * y[i];
    }
    return xx > 0 && yy > 0 ? xy / sqrt(xx * yy) : NAN;
}

/* /pairs rows: divergences between the sides, residual cosines from the captured rows. */
static int emit_pairs(pt_sweep *S, pt_record **recs, int n) {
    pt_plan *P = &S->plan;
    const pt_config *c = S->cfg;
    pt_backend *be = S->be;
    const int L = c->n_layers, d = c->d_model, V = c->vocab_size, ns = P->n_seqs;
    const size_t tap_n = (size_t)(L + 1) * ns * d;
    if (PT_SWEEP_FIT(S, &S->h.kl, 6 * (size_t)n) ||
        PT_SWEEP_FIT(S, &S->h.div_rows, 2 * (size_t)n) || PT_SWEEP_FIT(S, &S->h.tap, tap_n))
        return -1;
    double *kl_ab = S->h.kl.v, *kl_ba = kl_ab + n, *js = kl_ab + 2 * n, *got = kl_ab + 3 * n;
    int32_t *rows_a = S->h.div_rows.v, *rows_b = rows_a + n;
    int m = 0; /* pairs with both sides */
    for (int p = 0; p < n; p++) {
        const pt_record *r = recs[p];
        if (r->status || r->seq_local[1] < 0) continue;
        rows_a[m] = r->seq_local[0], rows_b[m] = r->seq_local[1], m++;
    }
    /* one call for all of them: on a GPU a call per pair was a launch and a wait each */
    if (m > 0)
        be->divergence(be, S->logp_dev, (size_t)V, rows_a, S->logp_dev, (size_t)V, rows_b, m, V,
                       got, got + m, got + 2 * m);
    for (int p = 0, k = 0; p < n; p++) {
        const pt_record *r = recs[p];
        kl_ab[p] = kl_ba[p] = js[p] = NAN;
        if (r->status || r->seq_local[1] < 0) continue;
        kl_ab[p] = got[k], kl_ba[p] = got[m + k], js[p] = got[2 * m + k];
        k++;
    }
    const float *tap = S->h.tap.v;
    if (ns > 0) be->resid_to_host(be, S->h.tap.v, S->d.tap.p, tap_n);
    if (pt_backend_failed(be)) return -1;
    for (int p = 0; p < n; p++) {
        pt_record *r = recs[p];
        pt_sweep_str(S, C_PAIR_ID, r->id);
        *(int64_t *)pt_sweep_rows(S, C_PAIR_LINE, 1) = r->line;
        *(int8_t *)pt_sweep_rows(S, C_PAIR_STATUS, 1) = (int8_t)r->status;
        pt_sweep_str(S, C_PAIR_MESSAGE, r->status ? r->message : "");
        for (int s = 0; s < 2; s++)
            *(int64_t *)pt_sweep_rows(S, s ? C_PAIR_SEQ_B : C_PAIR_SEQ_A, 1) =
                r->seq_local[s] >= 0 ? S->rows.seqs + r->seq_local[s] : -1;
        *(float *)pt_sweep_rows(S, C_PAIR_KL_AB, 1) = (float)kl_ab[p];
        *(float *)pt_sweep_rows(S, C_PAIR_KL_BA, 1) = (float)kl_ba[p];
        *(float *)pt_sweep_rows(S, C_PAIR_JS, 1) = (float)js[p];
        float *rc = pt_sweep_rows(S, C_PAIR_RESID_COS, 1);
        for (int l = 0; l <= L; l++) {
            const int a = r->seq_local[0], b = r->seq_local[1];
            rc[l] = a >= 0 && b >= 0 ? (float)cosine(tap + ((size_t)l * ns + a) * d,
                                                     tap + ((size_t)l * ns + b) * d, d)
                                     : NAN;
        }
    }
    return 0;
}

/* /seqs rows and the /tokens bookkeeping. */
static void emit_seqs(pt_sweep *S) {
    pt_plan *P = &S->plan;
    const int K = S->topk;
    for (int s = 0; s < P->n_seqs; s++) {
        pt_bseq *q = &P->seqs.v[s];
        pt_record *r = q->rec;
        *(int64_t *)pt_sweep_rows(S, C_SEQ_PAIR, 1) = S->rows.pairs + q->pair;
        *(int8_t *)pt_sweep_rows(S, C_SEQ_SIDE, 1) = (int8_t)q->side;
        pt_sweep_str(S, C_SEQ_TEXT, r->text[q->side] ? r->text[q->side] : "");
        *(int64_t *)pt_sweep_rows(S, C_SEQ_TOK_START, 1) = S->rows.tok + q->tok_row;
        *(int32_t *)pt_sweep_rows(S, C_SEQ_N_TOK, 1) = q->T;
        *(float *)pt_sweep_rows(S, C_SEQ_ENTROPY, 1) = (float)P->entropy.v[s];
        memcpy(pt_sweep_rows(S, C_SEQ_TOPK_ID, 1), P->topk_id.v + (size_t)s * K, (size_t)K * 4);
        memcpy(pt_sweep_rows(S, C_SEQ_TOPK_LP, 1), P->topk_lp.v + (size_t)s * K, (size_t)K * 4);
        *(int32_t *)pt_sweep_rows(S, C_SEQ_TARGET_ID, 1) = r->target_id[q->side];
        *(float *)pt_sweep_rows(S, C_SEQ_TARGET_LP, 1) = P->target_lp.v[s];
        if (S->o->stat_patterns)
            *(int64_t *)pt_sweep_rows(S, C_SEQ_PATTERN_START, 1) = S->rows.pat + q->pat_row;
        for (int t = 0; t < q->T; t++) {
            *(int32_t *)pt_sweep_rows(S, C_TOK_ID, 1) = q->ids[t];
            *(int64_t *)pt_sweep_rows(S, C_TOK_SEQ, 1) = S->rows.seqs + s;
            *(int32_t *)pt_sweep_rows(S, C_TOK_POS, 1) = t;
            const char *piece = S->tok ? pt_tokenizer_piece(S->tok, q->ids[t]) : NULL;
            pt_sweep_str(S, C_TOK_TEXT, piece ? piece : "");
            *(int32_t *)pt_sweep_rows(S, C_TOK_BSTART, 1) = r->byte_start[q->side][t];
            *(int32_t *)pt_sweep_rows(S, C_TOK_BEND, 1) = r->byte_end[q->side][t];
            *(int8_t *)pt_sweep_rows(S, C_TOK_PUNCT, 1) = (int8_t)pt_is_punct_text(piece);
            *(int8_t *)pt_sweep_rows(S, C_TOK_ROLE, 1) = (int8_t)pt_record_role(r, q->side, t);
        }
    }
}

/* A per-row statistic of the clean forward, [n_rows, L+1] 4-byte elements at device src, into
 * output column id: sequence by sequence, position p from batch row kv0 + p (for a prefix-shared
 * sequence, its base's rows first). */
static int emit_layer_rows(pt_sweep *S, int id, const void *src) {
    const pt_plan *P = &S->plan;
    const size_t L1 = (size_t)S->cfg->n_layers + 1, n = (size_t)P->n_rows * L1;
    if (PT_SWEEP_FIT(S, &S->h.layer_rows, n)) return -1;
    S->be->to_host(S->be, S->h.layer_rows.v, src, n * 4);
    char *m = pt_sweep_rows(S, id, (size_t)P->n_tok_rows);
    for (int s = 0; s < P->n_seqs; s++) {
        const pt_bseq *q = &P->seqs.v[s];
        memcpy(m + (size_t)q->tok_row * L1 * 4, S->h.layer_rows.v + (size_t)q->kv0 * L1,
               (size_t)q->T * L1 * 4);
    }
    return 0;
}

/* Per-token statistics: download, then complete prefix-shared sequences from their base. */
static int emit_token_stats(pt_sweep *S) {
    pt_plan *P = &S->plan;
    const pt_config *c = S->cfg;
    pt_backend *be = S->be;
    const int L = c->n_layers, ns = P->n_seqs;
    const size_t LH = (size_t)L * c->n_heads, tok_rows = (size_t)P->n_tok_rows;
    if (S->o->stat_mass) {
        float *m = pt_sweep_rows(S, C_TOK_MASS, tok_rows);
        be->to_host(be, m, S->d.mass.p, tok_rows * LH * sizeof(float));
        for (int s = 0; s < ns; s++) {
            pt_bseq *q = &P->seqs.v[s];
            if (q->base < 0) continue;
            const pt_bseq *B = &P->seqs.v[q->base];
            float *dst = m + (size_t)q->tok_row * LH;
            const float *src = m + (size_t)B->tok_row * LH;
            if (q->n_comp == 0)
                memcpy(dst, src, (size_t)q->T * LH * sizeof(float));
            else
                for (size_t k = 0; k < (size_t)B->T * LH; k++) dst[k] += src[k];
        }
    }
    if (S->o->stat_last) {
        float *m = pt_sweep_rows(S, C_TOK_LAST, tok_rows);
        be->to_host(be, m, S->d.last.p, tok_rows * LH * sizeof(float));
        for (int s = 0; s < ns; s++) {
            pt_bseq *q = &P->seqs.v[s];
            if (q->base >= 0 && q->n_comp == 0)
                memcpy(m + (size_t)q->tok_row * LH, m + (size_t)P->seqs.v[q->base].tok_row * LH,
                       (size_t)q->T * LH * sizeof(float));
        }
    }
    if (S->o->stat_resid && emit_layer_rows(S, C_TOK_RESID_NORM, S->d.rnorm.p)) return -1;
    if (S->o->stat_massive && P->n_rows > 0) {
        const size_t part = (size_t)P->n_rows * (L + 1) * 4; /* bytes of each of the three */
        const char *m = S->d.massive.p;
        if (emit_layer_rows(S, C_TOK_RESID_MAX, m) ||
            emit_layer_rows(S, C_TOK_RESID_ARGMAX, m + part) ||
            emit_layer_rows(S, C_TOK_RESID_MEDIAN, m + 2 * part))
            return -1;
    }
    if (S->o->stat_patterns) {
        float *m = pt_sweep_rows(S, C_PAT_VALUE, (size_t)P->n_pat_rows);
        be->to_host(be, m, S->d.pat.p, (size_t)P->n_pat_rows * LH * sizeof(float));
        for (int s = 0; s < ns; s++) {
            pt_bseq *q = &P->seqs.v[s];
            if (q->base < 0) continue;
            const pt_bseq *B = &P->seqs.v[q->base];
            const size_t rows =
                q->n_comp == 0 ? (size_t)q->T * (q->T + 1) / 2 : (size_t)B->T * (B->T + 1) / 2;
            memcpy(m + (size_t)q->pat_row * LH, m + (size_t)B->pat_row * LH,
                   rows * LH * sizeof(float));
        }
    }
    return pt_backend_failed(be) ? -1 : 0;
}

/* ---- one forward batch, one commit --------------------------------------------------------- */

/* Compute records recs[0..n) as one forward batch and append their rows; -1: the backend
 * failed (its status says why; the rows appended may be partial). */
static int forward_batch(pt_sweep *S, pt_record **recs, int n) {
    if (plan_batch(S, recs, n)) return -1;
    if (S->plan.n_seqs > 0 && clean_forward(S)) return -1;
    if (emit_pairs(S, recs, n)) return -1;
    emit_seqs(S);
    if (emit_token_stats(S)) return -1;
    if (pt_generate_run(S, S->plan.n_rows + S->variant_kv)) return -1;
    if (S->plan.n_seqs > 0 && S->experiments && pt_experiments_run(S, recs, n)) return -1;
    if (pt_generate_emit(S, recs, n) || pt_backend_failed(S->be)) return -1;
    S->rows.pairs += n;
    S->rows.ko += S->plan.n_ko_rows;
    S->rows.patch += S->plan.n_patch_rows;
    S->rows.seqs += S->plan.n_seqs;
    S->rows.tok += S->plan.n_tok_rows;
    S->rows.pat += S->plan.n_pat_rows;
    return 0;
}

static int record_tokens(const pt_record *r) {
    return r->status ? 0 : r->n_tok[0] + (r->has_b ? r->n_tok[1] : 0);
}
static int record_longest(const pt_record *r) {
    return r->status ? 0 : r->has_b && r->n_tok[1] > r->n_tok[0] ? r->n_tok[1] : r->n_tok[0];
}

/* Records of the next forward batch: up to the one that reaches `budget` tokens (the rule the
 * main loop cuts commits with), at least one. */
static int batch_records(pt_record **recs, int n, int budget, int *tokens) {
    int k = 0, t = 0;
    while (k < n && (k == 0 || t < budget)) t += record_tokens(recs[k++]);
    *tokens = t;
    return k;
}

/* After out of memory on a forward batch of k records and `tokens` tokens: a smaller budget
 * (1), or 0 when it cannot get smaller (one record, and nothing left to split). */
static int halve(pt_sweep *S, pt_record **recs, int k, int tokens, const pt_backend_status *st) {
    const int longest = record_longest(recs[0]);
    int nb;
    if (k == 1) { /* only the experiments' sub-batches can still shrink, down to one sequence */
        if (!S->experiments || S->fwd_budget <= longest) return 0;
        nb = S->fwd_budget / 2 > longest ? S->fwd_budget / 2 : longest;
    } else {
        nb = (tokens < S->fwd_budget ? tokens : S->fwd_budget) / 2;
        if (nb < 1) nb = 1;
    }
    S->fwd_budget = nb;
    fprintf(stderr, "punctum: warning: %s; retrying with forward batches of %d tokens\n", st->msg,
            nb);
    return 1;
}

int pt_sweep_compute(pt_sweep *S, pt_record **recs, int n, int *oom, pt_error *e) {
    pt_sweep_mark start, m;
    pt_sweep_mark_here(S, &start);
    *oom = 0;
    for (int i = 0; i < n;) {
        int tokens;
        const int k = batch_records(recs + i, n - i, S->fwd_budget, &tokens);
        pt_sweep_mark_here(S, &m);
        if (!forward_batch(S, recs + i, k)) {
            i += k;
            continue;
        }
        pt_backend_status st = {0};
        if (!pt_backend_take_error(S->be, e, &st))
            pt_fail(e, "internal error: a batch failed without a reason");
        pt_sweep_rollback(S, &m);
        pt_sweep_release(S); /* every buffer goes: the retry makes them at the new size */
        if (st.out_of_memory && halve(S, recs + i, k, tokens, &st)) continue;
        pt_sweep_rollback(S, &start);
        if ((*oom = st.out_of_memory)) {
            char b[32];
            pt_fail(e,
                    "out of memory computing line %lld (%d tokens) even alone: %s (%s asked for; "
                    "--batch-tokens %d, forward batches of %d tokens)",
                    (long long)recs[i]->line, record_tokens(recs[i]), st.msg,
                    st.bytes ? pt_fmt_bytes((double)st.bytes, b) : "a buffer", S->commit_budget,
                    S->fwd_budget);
        }
        return -1;
    }
    return 0;
}

/* ---- buffers ----------------------------------------------------------------------------------
 */

void pt_sweep_buffer_bytes(const pt_sweep *S, size_t *per_token, size_t *per_seq) {
    const pt_config *c = S->cfg;
    const size_t LH = (size_t)c->n_layers * c->n_heads, L1 = (size_t)c->n_layers + 1;
    const size_t rb = S->be->resid_bytes, d = (size_t)c->d_model;
    size_t t = 0;
    if (S->o->stat_mass) t += LH * 4;
    if (S->o->stat_last) t += LH * 4;
    if (S->o->stat_resid) t += L1 * 4;
    if (S->o->stat_massive) t += 3 * L1 * 4;
    if (S->experiments) t += L1 * d * rb; /* resid_all */
    *per_token = t;
    *per_seq = L1 * d * rb + (size_t)c->vocab_size * 4; /* tap, logits */
}

void pt_sweep_release(pt_sweep *S) {
    pt_devbuf *bufs[] = {&S->d.mass, &S->d.last,      &S->d.pat,    &S->d.rnorm,
                         &S->d.tap,  &S->d.resid_all, &S->d.logits, &S->d.massive};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++) pt_devbuf_free(S->be, bufs[k]);
    pt_experiments_release(S);
    pt_generate_release(S);
    if (S->have_engine) pt_engine_release(&S->en);
}

void pt_sweep_free_buffers(pt_sweep *S) {
    if (S->be) pt_sweep_release(S);
    pt_plan *P = &S->plan;
    PT_BUF_FREE(&P->seqs);
    PT_BUF_FREE(&P->entropy);
    PT_BUF_FREE(&P->topk_id);
    PT_BUF_FREE(&P->topk_lp);
    PT_BUF_FREE(&P->target_lp);
    PT_BUF_FREE(&S->h.ids);
    PT_BUF_FREE(&S->h.pos);
    PT_BUF_FREE(&S->h.kvr);
    PT_BUF_FREE(&S->h.fin);
    PT_BUF_FREE(&S->h.tgt);
    PT_BUF_FREE(&S->h.div_rows);
    PT_BUF_FREE(&S->h.segs);
    PT_BUF_FREE(&S->h.kl);
    PT_BUF_FREE(&S->h.tap);
    PT_BUF_FREE(&S->h.layer_rows);
}
