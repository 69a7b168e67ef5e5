/* punctum — state shared by the sweep (sweep.c) and its causal experiments (experiments.c). */
#ifndef PUNCTUM_SWEEP_INTERNAL_H
#define PUNCTUM_SWEEP_INTERNAL_H

#include "punctum/forward.h"
#include "punctum/sweep.h"
#include "punctum/table.h"
#include "punctum/writer.h"

/* Output columns (SPEC §5); absent ones have col[id] == -1. */
enum {
    C_PAIR_ID, C_PAIR_LINE, C_PAIR_STATUS, C_PAIR_MESSAGE, C_PAIR_SEQ_A, C_PAIR_SEQ_B,
    C_PAIR_KL_AB, C_PAIR_KL_BA, C_PAIR_JS, C_PAIR_RESID_COS,
    C_SEQ_PAIR, C_SEQ_SIDE, C_SEQ_TEXT, C_SEQ_TOK_START, C_SEQ_N_TOK, C_SEQ_ENTROPY,
    C_SEQ_TOPK_ID, C_SEQ_TOPK_LP, C_SEQ_TARGET_ID, C_SEQ_TARGET_LP, C_SEQ_PATTERN_START,
    C_TOK_ID, C_TOK_SEQ, C_TOK_POS, C_TOK_TEXT, C_TOK_BSTART, C_TOK_BEND, C_TOK_PUNCT, C_TOK_ROLE,
    C_TOK_MASS, C_TOK_LAST, C_TOK_RESID_NORM, C_PAT_VALUE,
    C_WIN, C_KO_SEQ, C_KO_POS, C_KO_WIN, C_KO_KL, C_KO_DTOP1, C_KO_DTARGET, C_KO_CHANGED,
    C_PA_PAIR, C_PA_LAYER, C_PA_POS, C_PA_KL_TO_B, C_PA_KL_FROM_A, C_PA_DTOP1_B,
    C_LENS_SEQ, C_LENS_POS, C_LENS_TOP1, C_LENS_TARGET,
    C_COUNT
};

/* One sequence of the batch being computed. Its position p lives in batch row (= key/value
 * cache row) kv0 + p; a prefix-shared extension has base >= 0 and computes only its last
 * n_comp positions, reading positions below from its base's rows. */
typedef struct {
    pt_record *rec;
    int pair, side, T;
    const int32_t *ids;
    int base;          /* index of the sequence it extends, -1 if computed in full */
    int n_comp;        /* positions computed by this sequence's own segment */
    int kv0;
    int final_row;
    int64_t tok_row;   /* batch-local rows in /tokens and /patterns */
    int64_t pat_row;
} pt_bseq;

typedef struct {
    pt_bseq *seqs;
    size_t seqs_cap;
    int n_seqs, n_rows;
    int64_t n_tok_rows, n_pat_rows;
    /* clean next-token distributions, per sequence */
    double *entropy;
    int32_t *topk_id;
    float *topk_lp, *target_lp;
    size_t entropy_cap, topk_id_cap, topk_lp_cap, target_lp_cap;
} pt_plan;

typedef struct {
    float *p;
    size_t cap; /* floats */
} pt_devbuf;

typedef struct pt_experiments pt_experiments;

typedef struct {
    const pt_run_opts *o;
    pt_model model;
    const pt_config *cfg;
    pt_tokenizer *tok;
    pt_chat *chat; /* --chat */
    pt_backend *be;
    pt_engine en;
    pt_writer *w;

    pt_colspec specs[C_COUNT];
    int n_specs;
    int col[C_COUNT];
    pt_batch batch;

    int topk;
    int prefix_sharing;
    int experiments;       /* knockout, patching or lens: keep every layer's cache and residuals */
    int budget;            /* --batch-tokens */
    int variant_rows;      /* cache rows reserved for experiment variants in this batch */
    pt_experiments *ex;

    pt_plan plan;
    float *logp_dev;       /* [n_seqs, V] clean log-probabilities of the batch */
    pt_devbuf d_mass, d_last, d_pat, d_rnorm, d_tap, d_resid_all, d_logits;

    /* host scratch, grown as needed */
    int32_t *h_ids, *h_pos, *h_kvr, *h_fin, *h_tgt;
    pt_segment *h_segs;
    double *h_kl;
    float *h_tap, *h_rnorm;
    size_t h_ids_cap, h_pos_cap, h_kvr_cap, h_fin_cap, h_tgt_cap, h_segs_cap, h_kl_cap, h_tap_cap,
        h_rnorm_cap;

    /* global row counters (rows already handed to the writer) */
    int64_t n_pairs_total, n_seqs_total, n_tok_total, n_pat_total;

    /* progress */
    int show_progress;
    int64_t total_records, pairs_seen, tokens_done;
    double t_start, last_progress;
} pt_sweep;

void *pt_sweep_rows(pt_sweep *S, int id, size_t rows);
void pt_sweep_str(pt_sweep *S, int id, const char *s);
float *pt_sweep_dev(pt_sweep *S, pt_devbuf *b, size_t floats);
void *pt_sweep_host(void **p, size_t *cap, size_t bytes);

/* sweep.c */
void pt_sweep_build_schema(pt_sweep *S);
void pt_sweep_batch(pt_sweep *S, pt_record **recs, int n);

/* experiments.c */
int pt_sweep_setup_experiments(pt_sweep *S, pt_error *e);
void pt_sweep_emit_windows(pt_sweep *S);
void pt_sweep_experiments(pt_sweep *S, pt_record **recs, int n);
int64_t pt_sweep_experiment_rows(pt_sweep *S, const pt_record *r);
void pt_sweep_free_experiments(pt_sweep *S);

#endif
