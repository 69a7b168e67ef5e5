/* punctum — one batch of the sweep: the output schema, planning a batch (rows, key/value
 * cache, prefix sharing), the clean forward and its statistics; the causal experiments are in
 * experiments.c and the main loop (input, output file, signals, progress) in run.c. */
#include "punctum/sweep.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sweep_internal.h"
#include "punctum/writer.h"

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
}

void *pt_sweep_rows(pt_sweep *S, int id, size_t rows) { return pt_col_append(&S->batch, S->col[id], rows); }
void pt_sweep_str(pt_sweep *S, int id, const char *s) { pt_col_append_str(&S->batch, S->col[id], s); }

/* ---- device buffers that persist across batches --------------------------------------------- */

float *pt_sweep_dev(pt_sweep *S, pt_devbuf *b, size_t floats) {
    if (floats <= b->cap) return b->p;
    if (b->p) S->be->free(S->be, b->p);
    size_t bytes;
    if (pt_mul_size(floats + floats / 4 + 16, sizeof(float), &bytes)) {
        fprintf(stderr, "punctum: buffer size overflow\n");
        exit(1);
    }
    b->p = S->be->alloc(S->be, bytes);
    if (!b->p) {
        fprintf(stderr, "punctum: %s backend out of memory (%zu bytes)\n", S->be->name, bytes);
        exit(1);
    }
    b->cap = bytes / sizeof(float);
    return b->p;
}

void *pt_sweep_host(void **p, size_t *cap, size_t bytes) {
    if (bytes > *cap) {
        *p = pt_xrealloc(*p, bytes);
        *cap = bytes;
    }
    return *p;
}

/* ---- planning a batch ------------------------------------------------------------------------ */

static int is_prefix(const int32_t *shortp, int ns, const int32_t *longp, int nl) {
    return ns <= nl && memcmp(shortp, longp, (size_t)ns * sizeof(int32_t)) == 0;
}

/* Lay out the batch: which sequence is computed in full, which extends another (prefix
 * sharing), their rows (batch row == key/value cache row), token and pattern rows. */
static void plan_batch(pt_sweep *S, pt_record **recs, int n) {
    pt_plan *P = &S->plan;
    P->n_seqs = 0;
    P->n_rows = 0;
    P->n_tok_rows = 0;
    P->n_pat_rows = 0;
    P->seqs = pt_sweep_host((void **)&P->seqs, &P->seqs_cap, (size_t)2 * n * sizeof(pt_bseq));
    for (int p = 0; p < n; p++) {
        pt_record *r = recs[p];
        r->seq_local[0] = r->seq_local[1] = -1;
        if (r->status) continue;
        const int nside = 1 + r->has_b;
        for (int s = 0; s < nside; s++) {
            pt_bseq *q = &P->seqs[P->n_seqs];
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
        /* prefix sharing: the longer side reuses the shorter side's cache */
        int ia = r->seq_local[0], ib = r->seq_local[1];
        int base = -1, ext = -1;
        if (ib >= 0 && S->prefix_sharing) {
            pt_bseq *A = &P->seqs[ia], *B = &P->seqs[ib];
            if (is_prefix(A->ids, A->T, B->ids, B->T))
                base = ia, ext = ib;
            else if (is_prefix(B->ids, B->T, A->ids, A->T))
                base = ib, ext = ia;
        }
        for (int k = 0; k < 1 + (ib >= 0); k++) {
            const int si = k ? ib : ia;
            if (si == ext) continue;
            pt_bseq *q = &P->seqs[si];
            q->kv0 = P->n_rows;
            q->n_comp = q->T;
            P->n_rows += q->T;
        }
        if (ext >= 0) {
            pt_bseq *E = &P->seqs[ext], *B = &P->seqs[base];
            E->base = base;
            E->kv0 = B->kv0;
            E->n_comp = E->T - B->T;
            /* the extension's rows follow its base's, so row (= cache row) of position p is kv0+p */
            if (E->n_comp > 0) {
                if (B->kv0 + B->T != P->n_rows) { /* base was not the last laid out: move ext */
                    fprintf(stderr, "punctum: internal error: prefix layout\n");
                    exit(1);
                }
                P->n_rows += E->n_comp;
            }
        }
    }
}

/* ---- the clean pass ------------------------------------------------------------------------- */

static void clean_forward(pt_sweep *S) {
    pt_plan *P = &S->plan;
    const pt_config *c = S->cfg;
    pt_backend *be = S->be;
    const int L = c->n_layers, H = c->n_heads, d = c->d_model, V = c->vocab_size;
    const size_t LH = (size_t)L * H;
    const int n = P->n_rows, ns = P->n_seqs;

    int32_t *ids = pt_sweep_host((void **)&S->h_ids, &S->h_ids_cap, (size_t)n * sizeof(int32_t));
    int32_t *pos = pt_sweep_host((void **)&S->h_pos, &S->h_pos_cap, (size_t)n * sizeof(int32_t));
    int32_t *kvr = pt_sweep_host((void **)&S->h_kvr, &S->h_kvr_cap, (size_t)n * sizeof(int32_t));
    pt_segment *segs = pt_sweep_host((void **)&S->h_segs, &S->h_segs_cap, (size_t)ns * sizeof(pt_segment));
    int32_t *fin = pt_sweep_host((void **)&S->h_fin, &S->h_fin_cap, (size_t)ns * sizeof(int32_t));
    int nseg = 0;
    for (int s = 0; s < ns; s++) {
        pt_bseq *q = &P->seqs[s];
        const int first = q->T - q->n_comp; /* first computed position */
        for (int k = 0; k < q->n_comp; k++) {
            const int r = q->kv0 + first + k;
            ids[r] = q->ids[first + k];
            pos[r] = first + k;
            kvr[r] = r;
        }
        q->final_row = q->kv0 + q->T - 1;
        fin[s] = q->final_row;
        if (q->n_comp == 0) continue;
        segs[nseg++] = (pt_segment){
            .row = q->kv0 + first, .n_q = q->n_comp, .pos0 = first, .prefix_kv = q->kv0,
            .own_kv = q->kv0 + first, .ko_pos = -1, .ko_lo = 0, .ko_hi = 0,
            .mass_row = q->tok_row, .last_row = q->tok_row,
            .pattern_row = S->o->stat_patterns ? q->pat_row : -1, .final_pos = q->T - 1};
    }

    /* experiments: variant sub-batches of up to batch_tokens rows (at least one whole sequence)
     * run after the clean pass, their keys in cache rows after the clean ones */
    const int keep_kv = S->o->ablate_knockout || S->o->patch_resid;
    int rows_needed = n, finals = ns;
    S->variant_rows = 0;
    if (S->experiments) {
        S->variant_rows = S->budget;
        for (int s = 0; s < ns; s++)
            if (P->seqs[s].T > S->variant_rows) S->variant_rows = P->seqs[s].T;
        if (S->variant_rows > rows_needed) rows_needed = S->variant_rows;
        if (finals < 256) finals = 256;
    }
    pt_error e;
    if (pt_engine_reserve(&S->en, rows_needed, n + S->variant_rows, keep_kv, finals, &e)) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        exit(1);
    }
    pt_fwd f = {.n_rows = n, .ids = ids, .pos = pos, .start_layer = 0, .x_in = NULL,
                .segs = segs, .n_segs = nseg, .kv_rows = kvr, .tap_rows = fin, .n_tap = ns,
                .final_rows = fin, .n_final = ns};
    const size_t tok_rows = (size_t)P->n_tok_rows;
    if (S->o->stat_mass) {
        f.mass = pt_sweep_dev(S, &S->d_mass, tok_rows * LH);
        be->fill(be, f.mass, 0.0f, tok_rows * LH);
    }
    if (S->o->stat_last) {
        f.last = pt_sweep_dev(S, &S->d_last, tok_rows * LH);
        be->fill(be, f.last, 0.0f, tok_rows * LH);
    }
    if (S->o->stat_patterns) {
        f.pattern = pt_sweep_dev(S, &S->d_pat, (size_t)P->n_pat_rows * LH + 1);
        be->fill(be, f.pattern, 0.0f, (size_t)P->n_pat_rows * LH + 1);
    }
    if (S->o->stat_resid) f.resid_norm = pt_sweep_dev(S, &S->d_rnorm, (size_t)n * (L + 1));
    f.tap_resid = pt_sweep_dev(S, &S->d_tap, (size_t)(L + 1) * ns * d);
    if (S->experiments) f.resid_all = pt_sweep_dev(S, &S->d_resid_all, (size_t)(L + 1) * n * d);
    f.logits = pt_sweep_dev(S, &S->d_logits, (size_t)ns * V);
    pt_forward(&S->en, &f);

    /* next-token distributions of every sequence */
    const int K = S->topk;
    P->entropy = pt_sweep_host((void **)&P->entropy, &P->entropy_cap, (size_t)ns * sizeof(double));
    P->topk_id = pt_sweep_host((void **)&P->topk_id, &P->topk_id_cap, (size_t)ns * K * sizeof(int32_t));
    P->topk_lp = pt_sweep_host((void **)&P->topk_lp, &P->topk_lp_cap, (size_t)ns * K * sizeof(float));
    P->target_lp = pt_sweep_host((void **)&P->target_lp, &P->target_lp_cap, (size_t)ns * sizeof(float));
    int32_t *tgt = pt_sweep_host((void **)&S->h_tgt, &S->h_tgt_cap, (size_t)ns * sizeof(int32_t));
    be->log_softmax(be, f.logits, ns, V, P->entropy, K, P->topk_id, P->topk_lp);
    for (int s = 0; s < ns; s++) tgt[s] = P->seqs[s].rec->target_id[P->seqs[s].side];
    be->pick(be, f.logits, ns, V, tgt, P->target_lp);
    S->logp_dev = f.logits; /* experiments compare against these rows */
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

static void emit_clean(pt_sweep *S, pt_record **recs, int n) {
    pt_plan *P = &S->plan;
    const pt_config *c = S->cfg;
    pt_backend *be = S->be;
    const int L = c->n_layers, H = c->n_heads, d = c->d_model, V = c->vocab_size, K = S->topk;
    const size_t LH = (size_t)L * H;
    const int ns = P->n_seqs;

    /* pair divergences */
    double *kl_ab = pt_sweep_host((void **)&S->h_kl, &S->h_kl_cap, (size_t)3 * n * sizeof(double));
    double *kl_ba = kl_ab + n, *js = kl_ab + 2 * n;
    for (int p = 0; p < n; p++) {
        kl_ab[p] = kl_ba[p] = js[p] = NAN;
        pt_record *r = recs[p];
        if (r->status || r->seq_local[1] < 0) continue;
        const float *la = S->logp_dev + (size_t)r->seq_local[0] * V;
        const float *lb = S->logp_dev + (size_t)r->seq_local[1] * V;
        be->divergence(be, la, 0, lb, 0, 1, V, &kl_ab[p], &kl_ba[p], &js[p]);
    }
    float *tap = pt_sweep_host((void **)&S->h_tap, &S->h_tap_cap, (size_t)(L + 1) * ns * d * sizeof(float) + 1);
    if (ns > 0) be->to_host(be, tap, S->d_tap.p, (size_t)(L + 1) * ns * d * sizeof(float));

    /* /pairs */
    for (int p = 0; p < n; p++) {
        pt_record *r = recs[p];
        pt_sweep_str(S, C_PAIR_ID, r->id);
        *(int64_t *)pt_sweep_rows(S, C_PAIR_LINE, 1) = r->line;
        *(int8_t *)pt_sweep_rows(S, C_PAIR_STATUS, 1) = (int8_t)r->status;
        pt_sweep_str(S, C_PAIR_MESSAGE, r->status ? r->message : "");
        for (int s = 0; s < 2; s++)
            *(int64_t *)pt_sweep_rows(S, s ? C_PAIR_SEQ_B : C_PAIR_SEQ_A, 1) =
                r->seq_local[s] >= 0 ? S->n_seqs_total + r->seq_local[s] : -1;
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

    /* /seqs and /tokens bookkeeping */
    for (int s = 0; s < ns; s++) {
        pt_bseq *q = &P->seqs[s];
        pt_record *r = q->rec;
        *(int64_t *)pt_sweep_rows(S, C_SEQ_PAIR, 1) = S->n_pairs_total + q->pair;
        *(int8_t *)pt_sweep_rows(S, C_SEQ_SIDE, 1) = (int8_t)q->side;
        pt_sweep_str(S, C_SEQ_TEXT, r->text[q->side] ? r->text[q->side] : "");
        *(int64_t *)pt_sweep_rows(S, C_SEQ_TOK_START, 1) = S->n_tok_total + q->tok_row;
        *(int32_t *)pt_sweep_rows(S, C_SEQ_N_TOK, 1) = q->T;
        *(float *)pt_sweep_rows(S, C_SEQ_ENTROPY, 1) = (float)P->entropy[s];
        memcpy(pt_sweep_rows(S, C_SEQ_TOPK_ID, 1), P->topk_id + (size_t)s * K, (size_t)K * 4);
        memcpy(pt_sweep_rows(S, C_SEQ_TOPK_LP, 1), P->topk_lp + (size_t)s * K, (size_t)K * 4);
        *(int32_t *)pt_sweep_rows(S, C_SEQ_TARGET_ID, 1) = r->target_id[q->side];
        *(float *)pt_sweep_rows(S, C_SEQ_TARGET_LP, 1) = P->target_lp[s];
        if (S->o->stat_patterns)
            *(int64_t *)pt_sweep_rows(S, C_SEQ_PATTERN_START, 1) = S->n_pat_total + q->pat_row;
        for (int t = 0; t < q->T; t++) {
            *(int32_t *)pt_sweep_rows(S, C_TOK_ID, 1) = q->ids[t];
            *(int64_t *)pt_sweep_rows(S, C_TOK_SEQ, 1) = S->n_seqs_total + s;
            *(int32_t *)pt_sweep_rows(S, C_TOK_POS, 1) = t;
            const char *piece = S->tok ? pt_tokenizer_piece(S->tok, q->ids[t]) : NULL;
            pt_sweep_str(S, C_TOK_TEXT, piece ? piece : "");
            *(int32_t *)pt_sweep_rows(S, C_TOK_BSTART, 1) = r->byte_start[q->side][t];
            *(int32_t *)pt_sweep_rows(S, C_TOK_BEND, 1) = r->byte_end[q->side][t];
            *(int8_t *)pt_sweep_rows(S, C_TOK_PUNCT, 1) = (int8_t)pt_is_punct_text(piece);
            *(int8_t *)pt_sweep_rows(S, C_TOK_ROLE, 1) = (int8_t)pt_record_role(r, q->side, t);
        }
    }

    /* per-token statistics: download, then complete prefix-shared sequences from their base */
    const size_t tok_rows = (size_t)P->n_tok_rows;
    if (S->o->stat_mass) {
        float *m = pt_sweep_rows(S, C_TOK_MASS, tok_rows);
        be->to_host(be, m, S->d_mass.p, tok_rows * LH * sizeof(float));
        for (int s = 0; s < ns; s++) {
            pt_bseq *q = &P->seqs[s];
            if (q->base < 0) continue;
            const pt_bseq *B = &P->seqs[q->base];
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
        be->to_host(be, m, S->d_last.p, tok_rows * LH * sizeof(float));
        for (int s = 0; s < ns; s++) {
            pt_bseq *q = &P->seqs[s];
            if (q->base >= 0 && q->n_comp == 0)
                memcpy(m + (size_t)q->tok_row * LH, m + (size_t)P->seqs[q->base].tok_row * LH,
                       (size_t)q->T * LH * sizeof(float));
        }
    }
    if (S->o->stat_resid) {
        const int n = P->n_rows;
        float *rn = pt_sweep_host((void **)&S->h_rnorm, &S->h_rnorm_cap, (size_t)n * (L + 1) * sizeof(float));
        be->to_host(be, rn, S->d_rnorm.p, (size_t)n * (L + 1) * sizeof(float));
        float *m = pt_sweep_rows(S, C_TOK_RESID_NORM, tok_rows);
        for (int s = 0; s < ns; s++) {
            pt_bseq *q = &P->seqs[s];
            memcpy(m + (size_t)q->tok_row * (L + 1), rn + (size_t)q->kv0 * (L + 1),
                   (size_t)q->T * (L + 1) * sizeof(float));
        }
    }
    if (S->o->stat_patterns) {
        float *m = pt_sweep_rows(S, C_PAT_VALUE, (size_t)P->n_pat_rows);
        be->to_host(be, m, S->d_pat.p, (size_t)P->n_pat_rows * LH * sizeof(float));
        for (int s = 0; s < ns; s++) {
            pt_bseq *q = &P->seqs[s];
            if (q->base < 0) continue;
            const pt_bseq *B = &P->seqs[q->base];
            const size_t rows = q->n_comp == 0 ? (size_t)q->T * (q->T + 1) / 2
                                               : (size_t)B->T * (B->T + 1) / 2;
            memcpy(m + (size_t)q->pat_row * LH, m + (size_t)B->pat_row * LH, rows * LH * sizeof(float));
        }
    }
}

/* ---- one batch ------------------------------------------------------------------------------ */

/* Compute one batch of records and hand its rows to the writer as one commit. */
void pt_sweep_batch(pt_sweep *S, pt_record **recs, int n) {
    plan_batch(S, recs, n);
    if (S->plan.n_seqs > 0) clean_forward(S);
    emit_clean(S, recs, n);
    if (S->plan.n_seqs > 0 && S->experiments) pt_sweep_experiments(S, recs, n);
    S->batch.n_pairs = n;
    S->n_pairs_total += n;
    S->n_seqs_total += S->plan.n_seqs;
    S->n_tok_total += S->plan.n_tok_rows;
    S->n_pat_total += S->plan.n_pat_rows;
    S->tokens_done += S->plan.n_tok_rows;
    pt_error e;
    if (pt_writer_submit(S->w, &S->batch, &e)) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        exit(1);
    }
}

