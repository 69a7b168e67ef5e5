/* punctum — generation (SPEC §3 "Generation"): greedy continuation of every sequence of a
 * batch after its clean forward, reusing the prompt's key/value cache; the decode steps of all
 * sequences run as one batched forward per step over their ragged caches. Per pair it also
 * teacher-forces a's tokens after b's prompt in the same steps, for gen_kl_ab. */
#ifndef PUNCTUM_GENERATE_H
#define PUNCTUM_GENERATE_H

#include "engine/sweep_state.h"

/* --generate: read the stop tokens (generation_config.json, else config.json, in the model
 * directory) into S->gen; nothing without --generate. -1 with e set on a bad file. */
int pt_generate_setup(pt_sweep *S, pt_error *e);
void pt_generate_free(pt_sweep *S);
/* Drop the device buffers (after out of memory). */
void pt_generate_release(pt_sweep *S);
/* Decode lanes of a planned batch (a sequence each, plus one teacher-forced lane per pair with
 * both sides): activation and final rows one decode step needs, each lane also needing
 * S->o->generate key/value cache rows. 0 without --generate. */
int pt_generate_lanes(const pt_sweep *S);
/* Generate for the batch whose clean forward just ran (cache rows from `kv_base` on are free,
 * N per lane). Results are kept for pt_generate_emit. -1: the backend failed (its status). */
int pt_generate_run(pt_sweep *S, int kv_base);

/* A variant of an experiment (experiments.c) to continue with its intervention held. */
typedef struct {
    int seq;                  /* the clean sequence it varies (patching: the pair's a) */
    int kind;                 /* 1 knockout, 2 patching */
    int64_t variant;          /* batch-local row of its /ablation/knockout or /patching/resid row */
    int n_own;                /* positions T-n_own .. T-1 were recomputed by the variant ... */
    int own_kv;               /* ... their keys at cache rows own_kv ..., followed by N free rows */
    int clean_kv;             /* the clean run's cache row of position T-n_own */
    int ko_pos, ko_lo, ko_hi; /* its knockout (ko_pos -1: none) */
} pt_gen_variant;

/* Continue variants vs[0..m) whose prompt pass (from layer `layer` on) just ran: top1 /
 * top1_lp their next-token choice (ties to the lower id) and its log-probability. -1: the
 * backend failed. */
int pt_generate_variants(pt_sweep *S, const pt_gen_variant *vs, int m, int layer,
                         const int32_t *top1, const float *top1_lp);
/* The batch's /gen rows (clean and variants, grouped by sequence) and /pairs/gen_* columns of
 * records recs[0..n); -1: out of host memory (backend status). */
int pt_generate_emit(pt_sweep *S, pt_record **recs, int n);
/* 1 when text contains word as a whole word (SPEC §3 gen_hit): word stripped of white space,
 * compared case-insensitively (simple case folding of Latin, Greek and Cyrillic letters); an
 * end of the match that is a word character must not touch another word character in text
 * (word characters: letters and digits, ASCII '_', and every code point >= U+0080 outside the
 * Latin-1 punctuation, General Punctuation, CJK Symbols and fullwidth ASCII punctuation
 * blocks). -1 when word is NULL or only white space. */
int pt_text_has_word(const char *text, const char *word);

#endif
