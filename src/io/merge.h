/* punctum — merging shard outputs into one self-contained file (`punctum merge`, SPEC §4).
 *
 * Pairs come back in input order (by /pairs/line) and every index column is renumbered
 * (pairs/seq_a, seq_b; seqs/pair, tok_start, pattern_start; tokens/seq; ablation/knockout/seq;
 * patching/resid/pair; lens/seq). The parts must agree on the model, the input and every
 * option that changes the output; an unfinished part or a missing shard is refused unless
 * allow_partial. Rows are streamed in blocks: no part is ever loaded whole. */
#ifndef PUNCTUM_IO_MERGE_H
#define PUNCTUM_IO_MERGE_H

#include "punctum/common.h"

/* Returns the exit code (0; 1 runtime failure; 2 refusal) and prints nothing: e has the
 * one-line message. quiet = 0: a summary line on stderr. */
int pt_merge_files(const char *out, char *const *parts, int n_parts, int allow_partial, int force,
                   pt_error *e);

/* Index columns and the table their values point into ("" when not an index column). */
const char *pt_index_base(const char *path);
/* The table of a dataset path ("pairs", "seqs", "tokens", "patterns", "windows", "knockout",
 * "patching", "lens"), or NULL for a path outside the format. */
const char *pt_table_of(const char *path);

#endif
