/* punctum — the sweep (see sweep.h). Reading order: schema of the output, planning a batch
 * (rows, key/value cache, prefix sharing), the clean forward and its statistics, the causal
 * experiments (experiments.c), then the main loop. */
#include "punctum/sweep.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/sweep_internal.h"
#include "punctum/writer.h"

/* ---- output schema (SPEC §5) ---------------------------------------------------------------- */

static void add_col(pt_sweep *S, int id, const char *path, pt_ctype t, int ntrail, int d0, int d1) {
    S->specs[S->n_specs] = (pt_colspec){path, t, ntrail, {d0, d1}};
    S->col[id] = S->n_specs++;
}

static void build_schema(pt_sweep *S) {
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
    if (o->stat_resid) add_col(S, C_PAIR_RESID_COS, "/pairs/resid_cos", PT_F32, 1, L + 1, 0);

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
    if (S->o->stat_resid || S->o->stat_lens)
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
    float *tap = NULL;
    if (S->o->stat_resid) {
        tap = pt_sweep_host((void **)&S->h_tap, &S->h_tap_cap, (size_t)(L + 1) * ns * d * sizeof(float));
        be->to_host(be, tap, S->d_tap.p, (size_t)(L + 1) * ns * d * sizeof(float));
    }

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
        if (S->o->stat_resid) {
            float *rc = pt_sweep_rows(S, C_PAIR_RESID_COS, 1);
            for (int l = 0; l <= L; l++) {
                const int a = r->seq_local[0], b = r->seq_local[1];
                rc[l] = a >= 0 && b >= 0 ? (float)cosine(tap + ((size_t)l * ns + a) * d,
                                                         tap + ((size_t)l * ns + b) * d, d)
                                         : NAN;
            }
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

/* ---- batches and the main loop ----------------------------------------------------------- */

static volatile sig_atomic_t g_signal = 0;
static void on_signal(int sig) { g_signal = sig; }

static void process_batch(pt_sweep *S, pt_record **recs, int n) {
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

static void progress(pt_sweep *S, int final) {
    if (!S->show_progress) return;
    const double now = pt_now();
    if (!final && now - S->last_progress < 0.5) return;
    S->last_progress = now;
    const double dt = now - S->t_start;
    const double pps = dt > 0 ? S->pairs_seen / dt : 0, tps = dt > 0 ? S->tokens_done / dt : 0;
    char eta[32] = "?";
    if (S->total_records > 0 && pps > 0) {
        double left = (double)(S->total_records - S->pairs_seen) / pps;
        if (left < 0) left = 0;
        snprintf(eta, sizeof eta, "%dm%02ds", (int)(left / 60), (int)left % 60);
    }
    fprintf(stderr, "\r[punctum] %lld/%lld pairs  %.1f pairs/s  %.0f tok/s  ETA %s   ",
            (long long)S->pairs_seen, (long long)S->total_records, pps, tps, eta);
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

static int64_t count_records(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int64_t n = 0;
    int c, prev = '\n';
    while ((c = getc(f)) != EOF) {
        if (c == '\n' && prev != '\n') n++;
        prev = c;
    }
    if (prev != '\n') n++;
    fclose(f);
    return n;
}

static void add_attr_str(pt_attr *a, int *n, const char *k, const char *v) { a[(*n)++] = (pt_attr){k, v, 0}; }
static void add_attr_int(pt_attr *a, int *n, const char *k, int64_t v) { a[(*n)++] = (pt_attr){k, NULL, v}; }

int pt_sweep_run(const pt_run_opts *o) {
    pt_sweep S0, *S = &S0;
    memset(S, 0, sizeof *S);
    S->o = o;
    pt_error e;
    struct stat st;

    /* everything is validated before the output file is touched */
    if (!o->force && !o->resume && stat(o->out_path, &st) == 0) {
        fprintf(stderr, "punctum: %s already exists (use --force to overwrite or --resume to continue)\n",
                o->out_path);
        return 2;
    }
    if (o->resume) {
        fprintf(stderr, "punctum: --resume is not available yet in this build\n");
        return 2;
    }
    if (pt_model_load(o->model_dir, &S->model, &e)) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        return 1;
    }
    S->cfg = &S->model.cfg;
    char *tok_path = pt_path_join(o->model_dir, "tokenizer.json");
    if (stat(tok_path, &st) == 0) {
        S->tok = pt_tokenizer_load(tok_path, &e);
        if (!S->tok) {
            fprintf(stderr, "punctum: %s\n", e.msg);
            free(tok_path);
            pt_model_free(&S->model);
            return 1;
        }
    }
    free(tok_path);
    pt_jsonl in;
    if (pt_jsonl_open(&in, o->pairs_path, &e)) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        return 1;
    }
    if (pt_sweep_setup_experiments(S, &e)) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        return 2;
    }

    /* backend */
    const char *bname = o->backend ? o->backend : "auto";
    if (!strcmp(bname, "cuda") || (!strcmp(bname, "auto") && pt_backend_cuda_available())) {
        pt_compute_dtype dt = PT_DTYPE_BF16;
        if (o->dtype && !strcmp(o->dtype, "f32")) dt = PT_DTYPE_F32;
        if (o->dtype && !strcmp(o->dtype, "f16")) dt = PT_DTYPE_F16;
        S->be = pt_backend_cuda_create(o->device, dt, &e);
        if (!S->be) {
            fprintf(stderr, "punctum: %s\n", e.msg);
            return 2;
        }
    } else {
        if (o->dtype && strcmp(o->dtype, "f32")) {
            fprintf(stderr, "punctum: --dtype %s: the cpu backend computes in f32\n", o->dtype);
            return 2;
        }
        S->be = pt_backend_cpu_create(o->threads, &e);
    }
    pt_weights dev_w;
    if (S->be->load_weights(S->be, S->cfg, &S->model.host, &dev_w, &e)) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        return 1;
    }
    pt_engine_init(&S->en, S->be, S->cfg, &dev_w, &e);
    S->topk = o->stat_topk ? (o->topk > 0 ? o->topk : 10) : 1;
    if (S->topk > S->cfg->vocab_size) S->topk = S->cfg->vocab_size;
    S->prefix_sharing = 1;
    const int budget = o->batch_tokens > 0 ? o->batch_tokens : 4096;
    S->budget = budget;

    /* output */
    build_schema(S);
    pt_attr attrs[24];
    int na = 0;
    char created[32], dtype_name[8];
    time_t now = time(NULL);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    snprintf(dtype_name, sizeof dtype_name, "%s",
             S->be->dtype == PT_DTYPE_F32 ? "f32" : S->be->dtype == PT_DTYPE_BF16 ? "bf16" : "f16");
    add_attr_int(attrs, &na, "punctum_format", PUNCTUM_FORMAT);
    add_attr_str(attrs, &na, "punctum_version", PUNCTUM_VERSION);
    add_attr_str(attrs, &na, "model_dir", o->model_dir);
    add_attr_str(attrs, &na, "model_type", S->cfg->model_type);
    add_attr_int(attrs, &na, "n_layers", S->cfg->n_layers);
    add_attr_int(attrs, &na, "n_heads", S->cfg->n_heads);
    add_attr_int(attrs, &na, "n_kv_heads", S->cfg->n_kv_heads);
    add_attr_int(attrs, &na, "d_model", S->cfg->d_model);
    add_attr_int(attrs, &na, "vocab_size", S->cfg->vocab_size);
    add_attr_str(attrs, &na, "backend", S->be->name);
    add_attr_str(attrs, &na, "device", S->be->device_name);
    add_attr_str(attrs, &na, "compute_dtype", dtype_name);
    add_attr_str(attrs, &na, "command_line", o->command_line ? o->command_line : "");
    add_attr_str(attrs, &na, "created", created);
    add_attr_str(attrs, &na, "pairs_file", o->pairs_path);
    add_attr_str(attrs, &na, "store_dtype", o->store_f16 ? "f16" : "f32");
    S->w = pt_writer_create(o->out_path, S->specs, S->n_specs, attrs, na, o->store_f16, &e);
    if (!S->w) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        return 1;
    }
    pt_batch_init(&S->batch, S->specs, S->n_specs);
    if (S->experiments) pt_sweep_emit_windows(S);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    S->show_progress = o->progress > 0 || (o->progress < 0 && isatty(2));
    S->total_records = S->show_progress ? count_records(o->pairs_path) : -1;
    if (S->total_records >= 0 && o->shard_n > 1)
        S->total_records = (S->total_records - o->shard_i + o->shard_n - 1) / o->shard_n;
    S->t_start = pt_now();

    pt_record_ctx rctx = {S->cfg->vocab_size, S->cfg->max_positions, S->tok, o->derive, o->derive_str};
    int cap = 64, n = 0, tokens = 0, rc = 0;
    pt_record *pending = pt_xcalloc((size_t)cap, sizeof(pt_record));
    pt_record **ptrs = NULL;
    int64_t index = 0;
    size_t len;
    const char *line;
    while (!g_signal && (line = pt_jsonl_next(&in, &len))) {
        const int64_t my_index = index++;
        if (o->shard_n > 1 && my_index % o->shard_n != o->shard_i) continue;
        if (n == cap) {
            cap *= 2;
            pending = pt_xrealloc(pending, (size_t)cap * sizeof(pt_record));
        }
        pt_record *r = &pending[n];
        pt_record_parse(&rctx, in.too_long ? "" : line, in.too_long ? 0 : len, in.line_no, my_index, r);
        if (r->status && o->strict) {
            fprintf(stderr, "punctum: %s: %s\n", o->pairs_path, r->message);
            pt_record_free(r);
            rc = 1;
            break;
        }
        n++;
        S->pairs_seen++;
        if (!r->status) tokens += r->n_tok[0] + (r->has_b ? r->n_tok[1] : 0);
        if (tokens >= budget || n >= 4096) {
            ptrs = pt_xrealloc(ptrs, (size_t)n * sizeof *ptrs);
            for (int k = 0; k < n; k++) ptrs[k] = &pending[k];
            process_batch(S, ptrs, n);
            for (int k = 0; k < n; k++) pt_record_free(&pending[k]);
            n = 0;
            tokens = 0;
            progress(S, 0);
        }
    }
    if (n > 0 && rc == 0) { /* the last partial batch (also on a signal: finish what was read) */
        ptrs = pt_xrealloc(ptrs, (size_t)n * sizeof *ptrs);
        for (int k = 0; k < n; k++) ptrs[k] = &pending[k];
        process_batch(S, ptrs, n);
    }
    for (int k = 0; k < n; k++) pt_record_free(&pending[k]);
    free(pending);
    free(ptrs);
    progress(S, 1);
    pt_jsonl_close(&in);

    if (pt_writer_close(S->w, &e)) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        rc = 1;
    }
    const double wall = pt_now() - S->t_start;
    if (S->show_progress)
        fprintf(stderr, "[punctum] %lld pairs, %lld tokens in %.2f s (writer busy %.2f s) -> %s\n",
                (long long)S->n_pairs_total, (long long)S->tokens_done, wall, 0.0, o->out_path);

    pt_sweep_free_experiments(S);
    pt_batch_free(&S->batch);
    pt_devbuf *bufs[] = {&S->d_mass, &S->d_last, &S->d_pat, &S->d_rnorm, &S->d_tap, &S->d_resid_all, &S->d_logits};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++)
        if (bufs[k]->p) S->be->free(S->be, bufs[k]->p);
    pt_engine_free(&S->en);
    S->be->free_weights(S->be, S->cfg, &dev_w);
    S->be->destroy(S->be);
    if (S->tok) pt_tokenizer_free(S->tok);
    pt_model_free(&S->model);
    void *hbufs[] = {S->h_ids, S->h_pos, S->h_kvr, S->h_segs, S->h_fin, S->h_tgt, S->h_kl, S->h_tap,
                     S->h_rnorm, S->plan.seqs, S->plan.entropy, S->plan.topk_id, S->plan.topk_lp,
                     S->plan.target_lp};
    for (size_t k = 0; k < sizeof hbufs / sizeof hbufs[0]; k++) free(hbufs[k]);
    if (rc == 0 && g_signal) rc = g_signal == SIGINT ? 130 : 143;
    return rc;
}
