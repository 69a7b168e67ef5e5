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
/* Generate for the batch whose clean forward just ran (cache rows from `kv_base` on are free)
 * and append the /gen rows and /pairs/gen_* columns of records recs[0..n). -1: the backend
 * failed (its status). */
int pt_generate_run(pt_sweep *S, pt_record **recs, int n, int kv_base);
/* 1 when text contains word as a whole word (SPEC §3 gen_hit): word stripped of white space,
 * compared case-insensitively (simple case folding of Latin, Greek and Cyrillic letters); an
 * end of the match that is a word character must not touch another word character in text
 * (word characters: letters and digits, ASCII '_', and every code point >= U+0080 outside the
 * Latin-1 punctuation, General Punctuation, CJK Symbols and fullwidth ASCII punctuation
 * blocks). -1 when word is NULL or only white space. */
int pt_text_has_word(const char *text, const char *word);

#endif
