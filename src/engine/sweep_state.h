/* punctum — the state of a sweep, shared by its parts: run.c (the main loop: input, output,
 * progress), sweep.c (one batch: planning, the clean forward, its rows) and experiments.c
 * (knockout, patching, logit lens). Helpers to append output rows and to roll them back live in
 * sweep_state.c; sweep.c and experiments.c include this header, not each other's. */
#ifndef PUNCTUM_SWEEP_STATE_H
#define PUNCTUM_SWEEP_STATE_H

#include "engine/buf.h"
#include "punctum/forward.h"
#include "punctum/sweep.h"
#include "punctum/table.h"
#include "punctum/writer.h"

/* Output columns (SPEC §5); absent ones have col[id] == -1. */
// clang-format off
enum {
    C_PAIR_ID, C_PAIR_LINE, C_PAIR_STATUS, C_PAIR_MESSAGE, C_PAIR_SEQ_A, C_PAIR_SEQ_B,
    C_PAIR_KL_AB, C_PAIR_KL_BA, C_PAIR_JS, C_PAIR_RESID_COS,
    C_SEQ_PAIR, C_SEQ_SIDE, C_SEQ_TEXT, C_SEQ_TOK_START, C_SEQ_N_TOK, C_SEQ_ENTROPY,
    C_SEQ_TOPK_ID, C_SEQ_TOPK_LP, C_SEQ_TARGET_ID, C_SEQ_TARGET_LP, C_SEQ_PATTERN_START,
    C_TOK_ID, C_TOK_SEQ, C_TOK_POS, C_TOK_TEXT, C_TOK_BSTART, C_TOK_BEND, C_TOK_PUNCT, C_TOK_ROLE,
    C_TOK_MASS, C_TOK_LAST, C_TOK_RESID_NORM, C_PAT_VALUE,
    C_TOK_RESID_MAX, C_TOK_RESID_ARGMAX, C_TOK_RESID_MEDIAN,
    C_WIN, C_KO_SEQ, C_KO_POS, C_KO_WIN, C_KO_KL, C_KO_DTOP1, C_KO_DTARGET, C_KO_CHANGED,
    C_PA_PAIR, C_PA_LAYER, C_PA_POS, C_PA_KL_TO_B, C_PA_KL_FROM_A, C_PA_DTOP1_B,
    C_LENS_SEQ, C_LENS_POS, C_LENS_TOP1, C_LENS_TARGET,
    C_PAIR_GEN_DIVERGE, C_PAIR_GEN_KL,
    C_GEN_SEQ, C_GEN_KIND, C_GEN_VARIANT, C_GEN_TOK_START, C_GEN_N_TOK, C_GEN_TEXT, C_GEN_STOP,
    C_GEN_DIVERGE, C_GEN_HIT, C_GEN_HIT_B, C_GENTOK_ID, C_GENTOK_LP,
    C_COUNT
};
// clang-format on

/* One sequence of the batch being computed. Its position p lives in batch row (= key/value
 * cache row) kv0 + p; a prefix-shared extension has base >= 0 and computes only its last
 * n_comp positions, reading positions below from its base's rows. */
typedef struct {
    pt_record *rec;
    int pair, side, T;
    const int32_t *ids;
    int base;   /* index of the sequence it extends, -1 if computed in full */
    int n_comp; /* positions computed by this sequence's own segment */
    int kv0;
    int final_row;
    int64_t tok_row; /* batch-local rows in /tokens and /patterns */
    int64_t pat_row;
} pt_bseq;

typedef struct {
    pt_bseq *v;
    size_t cap;
} pt_bseqbuf;

/* A forward batch laid out (sweep.c) and its clean next-token distributions. */
typedef struct {
    pt_bseqbuf seqs;
    int n_seqs, n_rows;
    int64_t n_tok_rows, n_pat_rows;
    int64_t n_ko_rows, n_patch_rows; /* rows the experiments wrote */
    pt_f64buf entropy;   /* [n_seqs] */
    pt_i32buf topk_id;   /* [n_seqs, K] */
    pt_f32buf topk_lp;   /* [n_seqs, K] */
    pt_f32buf target_lp; /* [n_seqs] */
} pt_plan;

/* Rows already in the output (or in the batch being filled): the global index of the next. */
typedef struct {
    int64_t pairs, seqs, tok, pat;
    int64_t gen, gen_tok; /* /gen and /gen/tokens */
    int64_t ko, patch;    /* /ablation/knockout and /patching/resid */
} pt_row_counts;

/* Where a batch's rows start, to drop them again (pt_sweep_rollback). */
typedef struct {
    size_t col_rows[C_COUNT];
    pt_row_counts counts;
} pt_sweep_mark;

typedef struct pt_experiments pt_experiments;
typedef struct pt_generation pt_generation;

typedef struct {
    const pt_run_opts *o;
    pt_model model;
    const pt_config *cfg;
    pt_tokenizer *tok;
    pt_chat *chat; /* --chat: the model's chat template */
    pt_backend *be;
    pt_weights dev_w;
    int have_weights;
    pt_engine en;
    int have_engine;
    pt_writer *w;

    pt_colspec specs[C_COUNT];
    int n_specs;
    int col[C_COUNT];
    pt_batch batch;

    int topk;
    int prefix_sharing;
    int experiments;   /* knockout, patching or lens: keep every layer's cache and residuals */
    int commit_budget; /* --batch-tokens: cuts the input into commits (fixed for a run) */
    int fwd_budget;    /* tokens of one forward: commit_budget, halved on out of memory */
    int variant_rows;  /* activation rows of an experiment sub-batch in this batch */
    int variant_kv;    /* cache rows reserved for them (with --generate: their tokens' too) */
    pt_experiments *ex;
    pt_generation *gen; /* --generate (generate.h) */

    pt_plan plan;
    float *logp_dev; /* [n_seqs, V] clean log-probabilities of the batch */
    struct {
        pt_devbuf mass, last, pat, rnorm, tap, resid_all, logits;
        pt_devbuf massive; /* [3][rows][L+1]: resid_max, resid_argmax (int32), resid_median */
    } d;
    struct {
        pt_i32buf ids, pos, kvr, fin, tgt;
        pt_i32buf div_rows; /* the batch's pairs' rows of the clean log-probs, a's then b's */
        pt_segbuf segs;
        pt_f64buf kl;
        pt_f32buf tap;
        pt_f32buf layer_rows; /* a [rows, L+1] statistic (4-byte elements) on its way out */
    } h;

    pt_row_counts rows;   /* global row counters */
    int warned_positions; /* a record's positions beyond its length: said once */
    pt_error fit_err;     /* scratch for PT_SWEEP_FIT */
} pt_sweep;

/* Append rows to output column `id` of the batch being filled (pt_col_append). */
void *pt_sweep_rows(pt_sweep *S, int id, size_t rows);
void pt_sweep_str(pt_sweep *S, int id, const char *s);
/* Remember where the batch's rows end now / drop every row appended since (and restore the
 * row counters). */
void pt_sweep_mark_here(const pt_sweep *S, pt_sweep_mark *m);
void pt_sweep_rollback(pt_sweep *S, const pt_sweep_mark *m);
/* Host scratch for the sweep: PT_BUF_FIT, with a failure recorded as the backend's out of
 * memory (so the batch is halved and retried like any other). 0 or -1. */
#define PT_SWEEP_FIT(S, b, n) pt_sweep_fit_failed((S), PT_BUF_FIT((b), (n), &(S)->fit_err))
int pt_sweep_fit_failed(pt_sweep *S, int rc);
/* A device buffer of the sweep (pt_devbuf_fit); NULL when out of memory (backend status). */
void *pt_sweep_dev(pt_sweep *S, pt_devbuf *b, size_t bytes);

#endif
