/* punctum — one commit of a sweep (sweep.c): its records computed in forward batches (planning,
 * the clean forward and its statistics, then the experiments), their rows appended to the
 * output batch; on out of memory the forward batch is halved and retried (SPEC §7). */
#ifndef PUNCTUM_ENGINE_BATCH_H
#define PUNCTUM_ENGINE_BATCH_H

#include "engine/sweep_state.h"

/* The output columns for the run's options (S->specs, S->col). */
void pt_sweep_build_schema(pt_sweep *S);
/* Compute records recs[0..n) and append all their rows to S->batch (the caller commits it).
 * Forward batches hold at most S->fwd_budget tokens; out of memory halves S->fwd_budget (a
 * warning on stderr each time) down to one record. Returns 0, or -1 with e set (the rows of
 * these records are dropped from S->batch; *oom says whether memory ran out). */
int pt_sweep_compute(pt_sweep *S, pt_record **recs, int n, int *oom, pt_error *e);
/* Device bytes of the sweep's own buffers (statistics, captured residuals, logits) per token
 * and per sequence of a forward batch, for sizing --batch-tokens. */
void pt_sweep_buffer_bytes(const pt_sweep *S, size_t *per_token, size_t *per_seq);
/* Free every buffer of the sweep and the engine (out of memory; and at the end). */
void pt_sweep_release(pt_sweep *S);
void pt_sweep_free_buffers(pt_sweep *S);

#endif
