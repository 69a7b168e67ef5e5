/* punctum — a sweep: pairs JSONL in, HDF5 out (SPEC §3-§5). The one place that follows a pair
 * from its record through tokenization, batching, the forward pass and its statistics, to the
 * rows handed to the writer. */
#ifndef PUNCTUM_SWEEP_H
#define PUNCTUM_SWEEP_H

#include "punctum/records.h"

typedef enum { PT_POS_PUNCT = 0, PT_POS_ALL, PT_POS_LAST, PT_POS_NONE } pt_pos_mode;

/* Default of --patterns-limit: `patterns` refuses to start above it. */
#define PT_PATTERNS_LIMIT_DEFAULT ((int64_t)4 << 30)

typedef struct {
    const char *model_dir, *pairs_path, *out_path;
    const char *backend; /* auto | cpu | cuda */
    const char *dtype;   /* f32 | bf16 | f16 (NULL: backend default) */
    int device;
    int stat_mass, stat_last, stat_resid, stat_topk, stat_lens, stat_patterns;
    int stat_massive; /* resid_max, resid_argmax, resid_median (SPEC §3) */
    int topk;         /* 0: not given (10) */
    int ablate_knockout;
    pt_pos_mode positions;
    int positions_k;     /* last:K */
    int positions_given; /* --positions was on the command line */
    const char *windows; /* "all" | "each" | "LO:HI,..."; NULL: not given ("all") */
    int patch_resid;
    pt_derive_kind derive;
    const char *derive_str;
    int chat;         /* --chat: wrap prompts in the model's chat template */
    int generate;        /* --generate N: greedy continuation of up to N tokens (0: none) */
    int stop_at_newline; /* --stop-at-newline */
    int batch_tokens; /* 0: sized to memory */
    int shard_i, shard_n;
    int resume, force, store_f16, strict;
    int progress;           /* 0 never, 1 always, -1 auto (stderr is a terminal) */
    int threads;            /* 0: not given */
    int device_given;       /* --device was on the command line */
    int64_t patterns_limit; /* bytes; <= 0: no limit */
    int writer_threads;     /* chunk-encoding threads of the writer (0: the cores left over) */
    char *command_line;
} pt_run_opts;

/* Run a sweep; returns the process exit code (0, 1, 2, 130, 143) and prints errors. */
int pt_sweep_run(const pt_run_opts *o);

#endif
