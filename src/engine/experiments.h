/* punctum — the causal experiments of a sweep (SPEC §3): attention knockout, residual
 * patching, logit lens. They run after a batch's clean forward (sweep.c) on its plan, clean
 * log-probabilities and residual streams, and append their rows to the batch. */
#ifndef PUNCTUM_EXPERIMENTS_H
#define PUNCTUM_EXPERIMENTS_H

#include "engine/sweep_state.h"

/* Sets S->experiments; parses --windows (-1 with e set: a usage error). */
int pt_experiments_setup(pt_sweep *S, pt_error *e);
void pt_experiments_free(pt_sweep *S);
/* Drop the device buffers (after out of memory; they are made again as needed). */
void pt_experiments_release(pt_sweep *S);
/* Rows the experiments decode at once (variants, logit lens) at the current forward budget:
 * what the engine must reserve as final rows. */
int pt_experiments_final_rows(const pt_sweep *S);
/* The /ablation/windows rows (once per output). */
void pt_experiments_emit_windows(pt_sweep *S);
/* Run every experiment on the batch just computed; -1 when the backend failed (its status). */
int pt_experiments_run(pt_sweep *S, pt_record **recs, int n);
/* Rows the experiments of one record will run (each weighted by the share of layers it runs),
 * so the main loop can cut commits of comparable work. Deterministic in the record, so a
 * resumed run cuts the same commits. -1: out of host memory (backend status). */
int64_t pt_experiments_rows(pt_sweep *S, const pt_record *r);

#endif
