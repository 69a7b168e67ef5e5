/* punctum — the sweep's main loop (see sweep.h), in the order a run goes through it:
 *
 *   run_open     validate everything (model, tokenizer, input, backend, weights, the batch
 *                budget, the output's absence, `patterns`' size) before the output is touched
 *   run_resume   --resume: the committed state, checked against this run
 *   run_output   the start-up line, the warnings, the output file
 *   run_loop     read records, cut them into commits for sweep.c, progress, signals
 *   run_close    the one clean-up path: close the output, the summary, the job's end
 *
 * Under mpirun the ranks coordinate through io/job.h. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/batch.h"
#include "engine/experiments.h"
#include "engine/generate.h"
#include "io/h5util.h"
#include "io/job.h"
#include "io/outstate.h"

static volatile sig_atomic_t g_signal = 0;
static void on_signal(int sig) {
    if (g_signal)
        _exit(sig == SIGINT ? 130 : 143); /* a second signal: stop now (commits are atomic) */
    g_signal = sig;
}

/* Everything that changes the output, recorded as root attributes; --resume and merge refuse
 * a disagreement, naming the option. */
typedef struct {
    const char *attr, *option;
    char value[320];
} ident_t;

enum { N_IDENT = 17 };

typedef enum { PROGRESS_OFF = 0, PROGRESS_TERMINAL, PROGRESS_LINES } progress_mode;

typedef struct {
    progress_mode mode;
    double interval;       /* seconds between updates */
    int64_t total_records; /* this process's records (-1: unknown) */
    int64_t pairs_seen, tokens_done, pairs_at_start;
    double t_start, last;
} progress_state;

typedef struct {
    pt_record *v;
    size_t cap;
} record_buf;
typedef struct {
    pt_record **v;
    size_t cap;
} record_ptr_buf;

/* One run: the sweep and what the main loop keeps around it. */
typedef struct {
    pt_sweep S;
    const pt_run_opts *o;
    pt_job J;
    pt_jsonl in;
    pt_outstate ost;
    char *out_path, *model_fp, *input_fp;
    int resume;        /* an existing output is continued */
    int64_t lo, hi;    /* this process's records (index range) */
    int64_t n_records; /* records in the input (-1: not counted) */
    ident_t ident[N_IDENT];
    char backend_note[320]; /* why --backend auto chose the cpu (empty: it did not fall back) */
    char dtype_note[160];   /* why the compute dtype is not the one asked for */
    char budget_note[96];   /* where the batch budget comes from */
    int64_t patterns_bytes; /* what `patterns` will write (-1: not asked for) */
    char resumed_by[1024];  /* punctum_version_resumed (resume by another build) */
    progress_state P;
    record_buf pending;
    record_ptr_buf ptrs;
    int n_pending;
    int warned_positions; /* a record's "positions" without an experiment: said once */
    pt_writer_stats ws;
} pt_run;

/* ---- progress ------------------------------------------------------------------------------ */

static void progress_init(pt_run *R) {
    const pt_run_opts *o = R->o;
    progress_state *P = &R->P;
    const int tty = isatty(2);
    P->mode = o->progress == 0         ? PROGRESS_OFF
              : o->progress < 0 && tty ? PROGRESS_TERMINAL
                                       : PROGRESS_LINES;
    P->interval = P->mode == PROGRESS_TERMINAL ? 0.5 : 30.0;
    const char *s = getenv("PUNCTUM_PROGRESS_SECONDS"); /* tests shorten the interval */
    if (s && *s && P->mode == PROGRESS_LINES) P->interval = atof(s);
    P->t_start = P->last = pt_now();
}

static void progress(pt_run *R, int final) {
    progress_state *P = &R->P;
    if (P->mode == PROGRESS_OFF) return;
    const double now = pt_now();
    if (!final && now - P->last < P->interval) return;
    P->last = now;
    int64_t seen = P->pairs_seen, toks = P->tokens_done, start = P->pairs_at_start;
    pt_job_progress(&R->J, &seen, &toks, &start, final);
    if (R->J.rank != 0) return;
    const double dt = now - P->t_start;
    const double pps = dt > 0 ? (seen - start) / dt : 0, tps = dt > 0 ? toks / dt : 0;
    char eta[32] = "?", total[32] = "?";
    if (P->total_records >= 0) snprintf(total, sizeof total, "%lld", (long long)P->total_records);
    if (P->total_records > 0 && pps > 0) {
        double left = (double)(P->total_records - seen) / pps;
        if (left < 0) left = 0;
        snprintf(eta, sizeof eta, "%dm%02ds", (int)(left / 60), (int)left % 60);
    }
    if (P->mode == PROGRESS_TERMINAL) {
        fprintf(stderr, "\r[punctum] %lld/%s pairs  %.1f pairs/s  %.0f tok/s  ETA %s   ",
                (long long)seen, total, pps, tps, eta);
        if (final) fputc('\n', stderr);
    } else if (!final) { /* a log file: complete lines (the summary ends the run) */
        fprintf(stderr, "punctum: %lld/%s pairs, %.1f pairs/s, %.0f tok/s, ETA %s\n",
                (long long)seen, total, pps, tps, eta);
    }
    fflush(stderr);
}

/* Peak resident memory of this process (VmHWM), bytes; 0 if unknown. */
static size_t peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = (size_t)strtoull(line + 6, NULL, 10);
    fclose(f);
    return kb * 1024;
}

static void summary(pt_run *R, int rc) {
    pt_sweep *S = &R->S;
    if (R->P.mode == PROGRESS_OFF || R->J.size != 1) return;
    const double wall = pt_now() - R->P.t_start;
    char host[32], dev[32], mapped[32];
    /* "in T s (writer busy ...)" is what benchmarks/bench_mpi.sh reads */
    fprintf(stderr,
            "punctum: %s: %lld pairs, %lld tokens in %.2f s (writer busy %.2f s, final copy "
            "%.2f s), %.0f tok/s; peak memory: host %s (%s of it mapped weights)",
            rc ? "stopped" : "done", (long long)S->rows.pairs, (long long)R->P.tokens_done, wall,
            R->ws.busy_s, R->ws.final_s, wall > 0 ? R->P.tokens_done / wall : 0.0,
            pt_fmt_bytes((double)peak_rss(), host),
            pt_fmt_bytes((double)S->model.file_bytes, mapped));
    if (S->be && S->be->mem_peak)
        fprintf(stderr, ", %s %s (%zu bytes)", S->be->name,
                pt_fmt_bytes((double)S->be->mem_peak, dev), S->be->mem_peak);
    fprintf(stderr, " -> %s\n", R->out_path);
}

/* ---- input ------------------------------------------------------------------------------- */

static int64_t count_records(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int64_t n = 0;
    int c, blank = 1;
    /* a record is a line with a non-blank character (pt_jsonl_next's rule) */
    while ((c = getc_unlocked(f)) != EOF) {
        if (c == '\n') {
            if (!blank) n++;
            blank = 1;
        } else if (c != ' ' && c != '\t' && c != '\r') {
            blank = 0;
        }
    }
    if (!blank) n++;
    fclose(f);
    return n;
}

/* Is the record with 0-based index i one of this process's (--shard, mpirun block)? */
static int mine(const pt_run *R, int64_t i) {
    const pt_run_opts *o = R->o;
    return i >= R->lo && i < R->hi && (o->shard_n <= 1 || i % o->shard_n == o->shard_i);
}

static pt_record_ctx record_ctx(const pt_run *R) {
    const pt_run_opts *o = R->o;
    return (pt_record_ctx){R->S.cfg->vocab_size, R->S.cfg->max_positions, R->S.tok, o->derive,
                           o->derive_str, R->S.chat};
}

/* `patterns`: the bytes its values will take (this process's records, tokenized once here),
 * stopping early above the limit. -1: the input cannot be read. */
static int64_t patterns_bytes(pt_run *R, int *longest) {
    const pt_config *c = R->S.cfg;
    const int64_t LH = (int64_t)c->n_layers * c->n_heads, es = R->o->store_f16 ? 2 : 4;
    const int64_t limit = R->o->patterns_limit;
    pt_jsonl in;
    pt_error e;
    if (pt_jsonl_open(&in, R->o->pairs_path, &e)) return -1;
    const pt_record_ctx rctx = record_ctx(R);
    int64_t bytes = 0, index = 0;
    const char *line;
    size_t len;
    *longest = 1;
    while ((line = pt_jsonl_next(&in, &len)) && (limit <= 0 || bytes <= limit)) {
        const int64_t i = index++;
        if (!mine(R, i)) continue;
        pt_record r;
        pt_record_parse(&rctx, in.too_long ? "" : line, in.too_long ? 0 : len, in.line_no, i, &r);
        for (int s = 0; !r.status && s < 1 + r.has_b; s++) {
            const int64_t T = r.n_tok[s];
            bytes += T * (T + 1) / 2 * LH * es;
            if (T > *longest) *longest = (int)T;
        }
        pt_record_free(&r);
    }
    pt_jsonl_close(&in);
    return bytes;
}

/* ---- the batch budget -------------------------------------------------------------------- */

/* Bytes one token of a forward batch costs (the engine's rows, the sweep's buffers, and on the
 * cpu backend the output rows the writer holds), and the fixed cost of the experiments. */
static void budget_costs(const pt_sweep *S, int longest_pattern, double *per_token, double *fixed) {
    const pt_backend *be = S->be;
    const pt_config *c = S->cfg;
    const int keep_kv = S->o->ablate_knockout || S->o->patch_resid || S->o->generate > 0;
    /* sequences are assumed at least this long on average when sizing per-sequence buffers
     * (shorter ones make a batch run out of memory and be halved) */
    const double min_seq = 16;
    size_t tok, seq;
    pt_sweep_buffer_bytes(S, &tok, &seq);
    double t = (double)pt_engine_row_bytes(be, c, keep_kv) + (double)tok;
    t += ((double)seq + (double)pt_engine_final_row_bytes(be, c)) / min_seq;
    if (S->experiments) t += (double)pt_engine_row_bytes(be, c, keep_kv); /* variant rows */
    if (S->o->generate > 0) { /* each sequence's continuation: key/value rows in every layer */
        const double kv_row = 2.0 * c->n_kv_heads * c->head_dim * c->n_layers * be->kv_bytes;
        t += (double)S->o->generate * kv_row / min_seq;
    }
    const double LH = (double)c->n_layers * c->n_heads;
    if (S->o->stat_patterns) t += (longest_pattern + 1) / 2.0 * LH * 4;
    if (!strcmp(be->name, "cpu")) { /* output rows in the batch being filled, queued, written */
        double host = 96 + (S->o->stat_mass + S->o->stat_last) * LH * 4 +
                      (S->o->stat_resid + 3 * S->o->stat_massive) * (c->n_layers + 1) * 4.0;
        if (S->o->stat_patterns) host += (longest_pattern + 1) / 2.0 * LH * 4;
        t += 3 * host;
    }
    *per_token = t;
    /* the experiments' sub-batches: up to 256 variants' (or lens rows') logits */
    *fixed = S->experiments ? 2.0 * 256 * ((double)c->vocab_size * 4 + c->d_model * 8.0) : 0;
}

/* --batch-tokens by default: what the backend's available memory holds (SPEC §4). */
static void size_budget(pt_run *R, int longest_pattern) {
    pt_sweep *S = &R->S;
    const int is_cpu = !strcmp(S->be->name, "cpu");
    const int lo = 256, hi = is_cpu ? 8192 : 65536;
    const size_t avail = S->be->mem_available(S->be);
    char b[32];
    if (!avail) {
        S->commit_budget = 4096;
        snprintf(R->budget_note, sizeof R->budget_note, "available memory unknown");
        return;
    }
    double per_token, fixed;
    budget_costs(S, longest_pattern, &per_token, &fixed);
    /* a margin: the cpu shares its memory with everything else (the mapped weights, the
     * writer); a GPU's free memory is ours */
    const double usable = (double)avail * (is_cpu ? 0.5 : 0.8) - fixed;
    double t = usable > 0 ? usable / per_token : 0;
    t = t < lo ? lo : t > hi ? hi : t;
    S->commit_budget = (int)t / 256 * 256;
    snprintf(R->budget_note, sizeof R->budget_note, "sized to %s available",
             pt_fmt_bytes((double)avail, b));
}

/* ---- validation ---------------------------------------------------------------------------- */

static int backend_open(pt_run *R, pt_error *e) {
    const pt_run_opts *o = R->o;
    pt_sweep *S = &R->S;
    const char *bname = o->backend ? o->backend : "auto";
    const char *why = "";
    const int want_cuda =
        !strcmp(bname, "cuda") || (!strcmp(bname, "auto") && pt_backend_cuda_available(&why));
    if (want_cuda) {
        pt_compute_dtype dt = PT_DTYPE_BF16;
        if (o->dtype && !strcmp(o->dtype, "f32")) dt = PT_DTYPE_F32;
        if (o->dtype && !strcmp(o->dtype, "f16")) dt = PT_DTYPE_F16;
        if (!(S->be = pt_backend_cuda_create(pt_job_device(&R->J, o->device), dt, e))) return 2;
        return 0;
    }
    if (!strcmp(bname, "auto")) {
        snprintf(R->backend_note, sizeof R->backend_note, "auto: no usable CUDA GPU: %s", why);
        if (o->dtype && strcmp(o->dtype, "f32"))
            snprintf(R->dtype_note, sizeof R->dtype_note, "--dtype %s needs a GPU", o->dtype);
    } else if (o->dtype && strcmp(o->dtype, "f32")) {
        pt_fail(e, "--dtype %s: the cpu backend computes in f32", o->dtype);
        return 2;
    }
    return (S->be = pt_backend_cpu_create(pt_job_threads(&R->J, o->threads), e)) ? 0 : 1;
}

/* The model, its tokenizer and weights on the backend, the engine. 0 or an exit code. */
static int model_open(pt_run *R, pt_error *e) {
    const pt_run_opts *o = R->o;
    pt_sweep *S = &R->S;
    struct stat st;
    const int mrc = pt_model_load(o->model_dir, &S->model, e);
    if (mrc) return mrc == 2 ? 2 : 1; /* 2: config.json names an unsupported model */
    S->cfg = &S->model.cfg;
    char *tok_path = pt_path_join(o->model_dir, "tokenizer.json");
    if (stat(tok_path, &st) == 0 && !(S->tok = pt_tokenizer_load(tok_path, e))) {
        free(tok_path);
        return 1;
    }
    free(tok_path);
    if (o->chat && !(S->chat = pt_chat_load(o->model_dir, &(int){0}, e)))
        return 2; /* no template, or one the interpreter cannot run */
    if (pt_jsonl_open(&R->in, o->pairs_path, e)) return 1;
    if (pt_experiments_setup(S, e)) return 2;
    if (pt_generate_setup(S, e)) return 1;
    int rc = backend_open(R, e);
    if (rc) return rc;
    if (S->be->load_weights(S->be, S->cfg, &S->model.host, &S->dev_w, e)) return 1;
    S->have_weights = 1;
    if (pt_engine_init(&S->en, S->be, S->cfg, &S->dev_w, e)) return 1;
    S->have_engine = 1;
    return 0;
}

/* Everything before the output is touched: 0, or an exit code with e set. */
static int run_open(pt_run *R, pt_error *e) {
    const pt_run_opts *o = R->o;
    pt_sweep *S = &R->S;
    struct stat st;
    if (o->shard_n > 1 && R->J.size > 1) {
        pt_fail(e, "--shard cannot be combined with mpirun (each rank is a shard)");
        return 2;
    }
    if (!o->force && !o->resume && pt_job_outputs_exist(&R->J, o->out_path, R->out_path)) {
        pt_fail(e, "%s already exists (use --force to overwrite or --resume to continue)",
                stat(R->out_path, &st) == 0 ? R->out_path : o->out_path);
        return 2;
    }
    /* (under mpirun a rank that died before it created its file simply starts it) */
    R->resume = o->resume && !(R->J.size > 1 && stat(R->out_path, &st) != 0);
    if (R->resume && stat(R->out_path, &st) != 0) {
        pt_fail(e, "--resume: %s does not exist (nothing to resume; run without --resume)",
                R->out_path);
        return 2;
    }
    int rc = model_open(R, e);
    if (rc) return rc;
    S->topk = o->stat_topk ? (o->topk > 0 ? o->topk : 10) : 1;
    if (S->topk > S->cfg->vocab_size) S->topk = S->cfg->vocab_size;
    S->prefix_sharing = 1;
    pt_sweep_build_schema(S);

    /* which records are ours: --shard I/N (round robin), or under mpirun a contiguous block */
    R->lo = 0, R->hi = INT64_MAX;
    R->n_records = R->J.size > 1 || o->progress != 0 ? count_records(o->pairs_path) : -1;
    if (R->J.size > 1) pt_job_block(&R->J, R->n_records, &R->lo, &R->hi);

    int longest_pattern = 1;
    R->patterns_bytes = -1;
    if (o->stat_patterns) {
        R->patterns_bytes = patterns_bytes(R, &longest_pattern);
        char b[32], l[32];
        if (o->patterns_limit > 0 && R->patterns_bytes > o->patterns_limit) {
            pt_fail(
                e,
                "--stats patterns would write more than %s (%s so far, of attention "
                "patterns alone); raise --patterns-limit (now %s) or pass --patterns-limit none",
                pt_fmt_bytes((double)o->patterns_limit, l),
                pt_fmt_bytes((double)R->patterns_bytes, b),
                pt_fmt_bytes((double)o->patterns_limit, l));
            return 2;
        }
    }
    if (o->batch_tokens > 0) {
        S->commit_budget = o->batch_tokens;
        snprintf(R->budget_note, sizeof R->budget_note, "--batch-tokens");
    } else {
        size_budget(R, longest_pattern);
    }
    if (!(R->model_fp = pt_model_fingerprint(o->model_dir, e)) ||
        !(R->input_fp = pt_file_fingerprint(o->pairs_path, e)))
        return 1;
    return 0;
}

/* ---- identity and --resume ------------------------------------------------------------------ */

static void build_identity(pt_run *R) {
    const pt_run_opts *o = R->o;
    const pt_sweep *S = &R->S;
    ident_t *id = R->ident;
    int n = 0;
#define ID(a, opt, ...)                                                                            \
    (id[n].attr = a, id[n].option = opt, snprintf(id[n].value, sizeof id[n].value, __VA_ARGS__),   \
     n++)
    ID("model_fingerprint", "--model", "%s", R->model_fp);
    ID("input_fingerprint", "--pairs", "%s", R->input_fp);
    ID("backend", "--backend", "%s", S->be->name);
    ID("compute_dtype", "--dtype", "%s", pt_compute_dtype_name(S->be->dtype));
    char stats[64] = "";
    const char *names[] = {"mass", "last", "resid", "topk", "lens", "massive", "patterns"};
    const int on[] = {o->stat_mass, o->stat_last,    o->stat_resid,   o->stat_topk,
                      o->stat_lens, o->stat_massive, o->stat_patterns};
    for (int k = 0; k < 7; k++)
        if (on[k]) {
            if (*stats) strcat(stats, ",");
            strcat(stats, names[k]);
        }
    ID("opt_stats", "--stats", "%s", *stats ? stats : "none");
    ID("opt_topk", "--topk", "%d", S->topk);
    ID("opt_ablate", "--ablate", "%s", o->ablate_knockout ? "knockout" : "none");
    if (!o->ablate_knockout && !o->stat_lens)
        ID("opt_positions", "--positions", "-");
    else if (o->positions == PT_POS_LAST)
        ID("opt_positions", "--positions", "last:%d", o->positions_k);
    else
        ID("opt_positions", "--positions", "%s",
           o->positions == PT_POS_ALL    ? "all"
           : o->positions == PT_POS_NONE ? "none"
                                         : "punct");
    ID("opt_windows", "--windows", "%s",
       o->ablate_knockout ? (o->windows ? o->windows : "all") : "-");
    ID("opt_patch", "--patch", "%s", o->patch_resid ? "resid" : "none");
    if (o->derive == PT_DERIVE_APPEND)
        ID("opt_derive_b", "--derive-b", "append:%s", o->derive_str);
    else
        ID("opt_derive_b", "--derive-b", "%s",
           o->derive == PT_DERIVE_STRIP_PUNCT ? "strip-punct" : "none");
    ID("opt_generate", "--generate", "%d%s", o->generate,
       o->generate > 0 && o->stop_at_newline ? ",newline" : "");
    ID("opt_chat", "--chat", "%s", S->chat ? pt_chat_fingerprint(S->chat) : "none");
    ID("opt_batch_tokens", "--batch-tokens", "%d", S->commit_budget);
    if (R->J.size > 1)
        ID("opt_shard", "mpirun -np", "block %d/%d", R->J.rank, R->J.size);
    else
        ID("opt_shard", "--shard", "%d/%d", o->shard_i, o->shard_n);
    ID("store_dtype", "--store", "%s", o->store_f16 ? "f16" : "f32");
    ID("punctum_format", "the punctum format", "%d", PUNCTUM_FORMAT);
#undef ID
}

/* punctum_version names the build that started a file; a resume by another build (a rebuilt
 * binary may resume its own files: the version is not part of the identity) appends its version
 * to punctum_version_resumed, so the rows it adds keep their provenance. 0: nothing to record. */
static int resumed_versions(const pt_outstate *st, char *buf, size_t n) {
    const char *started = pt_outstate_attr(st, "punctum_version");
    const char *was = pt_outstate_attr(st, "punctum_version_resumed");
    const char *last = was ? strrchr(was, ',') : NULL;
    last = last ? last + 1 : was ? was : started;
    if (!was && (!started || !strcmp(started, PUNCTUM_VERSION))) return 0;
    if (last && !strcmp(last, PUNCTUM_VERSION))
        snprintf(buf, n, "%s", was);
    else
        snprintf(buf, n, "%s%s%s", was ? was : "", was ? "," : "", PUNCTUM_VERSION);
    return 1;
}

/* 0: the output agrees with this run; else a one-line refusal in e. */
static int check_identity(const pt_outstate *st, const char *path, const ident_t *id, pt_error *e) {
    for (int k = 0; k < N_IDENT; k++) {
        const char *was = pt_outstate_attr(st, id[k].attr);
        if (!was)
            return pt_fail(
                e, "--resume: %s lacks the %s attribute (not written by this punctum version)",
                path, id[k].attr);
        if (!strcmp(was, id[k].value)) continue;
        if (!strcmp(id[k].attr, "model_fingerprint")) {
            const char *dir = pt_outstate_attr(st, "model_dir");
            return pt_fail(
                e, "--resume: --model is not the model that wrote %s (%s; its files differ)", path,
                dir ? dir : "?");
        }
        if (!strcmp(id[k].attr, "input_fingerprint")) {
            const char *in = pt_outstate_attr(st, "pairs_file");
            return pt_fail(e,
                           "--resume: --pairs is not the input that %s was written from (%s; "
                           "size or content differs)",
                           path, in ? in : "?");
        }
        return pt_fail(e, "--resume: %s differs from the run that wrote %s (%s here, %s there)",
                       id[k].option, path, id[k].value, was);
    }
    return 0;
}

/* A resumed run without --batch-tokens cuts its commits as the run it continues did. */
static void adopt_budget(pt_run *R) {
    const char *was = pt_outstate_attr(&R->ost, "opt_batch_tokens");
    const int v = was ? atoi(was) : 0;
    if (R->o->batch_tokens > 0 || v <= 0) return;
    R->S.commit_budget = v;
    snprintf(R->budget_note, sizeof R->budget_note, "as in the run being resumed");
}

/* --resume: > 0 refused (exit code), -1 already complete, 0 continue (or a new output). */
static int resume_state(pt_run *R, pt_error *e) {
    if (!R->resume) return 0;
    if (pt_outstate_read(R->out_path, NULL, 0, &R->ost, e)) return 2;
    adopt_budget(R);
    build_identity(R);
    if (check_identity(&R->ost, R->out_path, R->ident, e)) return 2;
    if (R->ost.complete) return -1;
    pt_outstate_free(&R->ost);
    return pt_outstate_read(R->out_path, R->S.specs, R->S.n_specs, &R->ost, e) ? 1 : 0;
}

/* 0 to go on; > 0 refused (an exit code, e set); -1 nothing to do (already complete). */
static int run_resume(pt_run *R, pt_error *e) {
    const int rrc = resume_state(R, e);
    if (!R->resume) build_identity(R);
    const int agreed = pt_job_agree(&R->J, rrc > 0 ? rrc : 0, e); /* every rank */
    if (!agreed && R->o->resume) /* rank 0 says which ranks an earlier job left unfinished */
        pt_job_report_resume(&R->J, R->resume ? R->ost.committed_pairs : -1, rrc < 0);
    if (!agreed && rrc >= 0) return 0;
    if (agreed) return agreed;
    if (R->J.size == 1)
        fprintf(stderr, "punctum: %s is already complete (%lld pairs); nothing to resume\n",
                R->out_path, (long long)R->ost.committed_pairs);
    /* a consolidation that finished just before a crash left its parts */
    char stale[4096];
    struct stat st;
    snprintf(stale, sizeof stale, "%s.parts", R->out_path);
    if (stat(stale, &st) == 0) pt_remove_dir_files(stale);
    return -1;
}

/* ---- the output ---------------------------------------------------------------------------- */

/* One line on stderr, always (SPEC §4): backend, device, compute dtype, model, batch budget.
 * e.g. "punctum: cpu backend (2 threads, AMD EPYC), f32 compute (weights bf16), model DIR
 * (llama, 30 layers), batch 8192 tokens (sized to 11.2 GiB available)". */
static void startup_line(pt_run *R) {
    const pt_sweep *S = &R->S;
    const pt_config *c = S->cfg;
    char note[400] = "", dtype[200], patterns[96] = "", rank[32] = "", wdt[8];
    if (R->backend_note[0]) snprintf(note, sizeof note, "%s; ", R->backend_note);
    snprintf(wdt, sizeof wdt, "%s", pt_dtype_name(S->model.weight_dtype));
    for (char *p = wdt; *p; p++) /* "BF16" -> "bf16", as --dtype spells it */
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    snprintf(dtype, sizeof dtype, "%s compute (weights %s%s%s)",
             pt_compute_dtype_name(S->be->dtype), wdt, R->dtype_note[0] ? "; " : "", R->dtype_note);
    if (R->patterns_bytes >= 0) {
        char b[32];
        snprintf(patterns, sizeof patterns, ", patterns %s",
                 pt_fmt_bytes((double)R->patterns_bytes, b));
    }
    if (R->J.size > 1) snprintf(rank, sizeof rank, "rank %d: ", R->J.rank);
    fprintf(stderr,
            "punctum: %s%s backend (%s%s), %s, model %s (%s, %d layers), batch %d tokens (%s)%s\n",
            rank, S->be->name, note, S->be->description, dtype, R->o->model_dir, c->model_type,
            c->n_layers, S->commit_budget, R->budget_note, patterns);
}

/* Options that do nothing in this combination: said once, at the start. */
static void option_warnings(pt_run *R) {
    const pt_run_opts *o = R->o;
    const int is_cpu = !strcmp(R->S.be->name, "cpu");
    if (o->topk > 0 && !o->stat_topk)
        fprintf(stderr, "punctum: warning: --topk does nothing without topk in --stats\n");
    if (o->windows && !o->ablate_knockout)
        fprintf(stderr, "punctum: warning: --windows does nothing without --ablate knockout\n");
    if (o->positions_given && !o->ablate_knockout && !o->stat_lens)
        fprintf(stderr,
                "punctum: warning: --positions does nothing without --ablate knockout or lens in "
                "--stats\n");
    if (o->device_given && is_cpu)
        fprintf(stderr, "punctum: warning: --device does nothing on the cpu backend\n");
    if (o->threads > 0 && !is_cpu)
        fprintf(stderr, "punctum: warning: --threads does nothing on the %s backend\n",
                R->S.be->name);
}

static void add_attr_str(pt_attr *a, int *n, const char *k, const char *v) {
    a[(*n)++] = (pt_attr){k, v, 0};
}
static void add_attr_int(pt_attr *a, int *n, const char *k, int64_t v) {
    a[(*n)++] = (pt_attr){k, NULL, v};
}

/* The root attributes (SPEC §5) into attrs (at least 48). */
static int output_attrs(pt_run *R, pt_attr *attrs, char *created) {
    const pt_run_opts *o = R->o;
    const pt_config *c = R->S.cfg;
    int na = 0;
    time_t now = time(NULL);
    strftime(created, 32, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    add_attr_int(attrs, &na, "punctum_format", PUNCTUM_FORMAT);
    add_attr_str(attrs, &na, "punctum_version", PUNCTUM_VERSION);
    add_attr_str(attrs, &na, "model_dir", o->model_dir);
    add_attr_str(attrs, &na, "model_type", c->model_type);
    add_attr_int(attrs, &na, "n_layers", c->n_layers);
    add_attr_int(attrs, &na, "n_heads", c->n_heads);
    add_attr_int(attrs, &na, "n_kv_heads", c->n_kv_heads);
    add_attr_int(attrs, &na, "d_model", c->d_model);
    add_attr_int(attrs, &na, "vocab_size", c->vocab_size);
    add_attr_str(attrs, &na, "device", R->S.be->device_name);
    add_attr_str(attrs, &na, "command_line", o->command_line ? o->command_line : "");
    add_attr_str(attrs, &na, "created", created);
    add_attr_str(attrs, &na, "pairs_file", o->pairs_path);
    for (int k = 0; k < N_IDENT; k++)
        if (strcmp(R->ident[k].attr, "punctum_format"))
            add_attr_str(attrs, &na, R->ident[k].attr, R->ident[k].value);
    if (R->J.size > 1) {
        add_attr_int(attrs, &na, "mpi_rank", R->J.rank);
        add_attr_int(attrs, &na, "mpi_size", R->J.size);
    }
    if (R->resume) { /* keep the original run's record of when, how and by what it started */
        for (int k = 0; k < na; k++)
            if (!strcmp(attrs[k].key, "created") || !strcmp(attrs[k].key, "command_line") ||
                !strcmp(attrs[k].key, "punctum_version")) {
                const char *was = pt_outstate_attr(&R->ost, attrs[k].key);
                if (was) attrs[k].str = was;
            }
        if (resumed_versions(&R->ost, R->resumed_by, sizeof R->resumed_by))
            add_attr_str(attrs, &na, "punctum_version_resumed", R->resumed_by);
    }
    return na;
}

static int64_t col_rows(const pt_sweep *S, const pt_outstate *st, int id) {
    return S->col[id] >= 0 ? st->rows[S->col[id]] : 0;
}

/* The start-up line, the output file, the resume position. 0 or 1 (e set). */
static int run_output(pt_run *R, pt_error *e) {
    const pt_run_opts *o = R->o;
    pt_sweep *S = &R->S;
    /* under mpirun the job's view OUT.h5 is rewritten at the end; an old one must not show
     * rank files that are being replaced */
    if (R->J.size > 1 && R->J.rank == 0 && !o->resume) unlink(o->out_path);
    startup_line(R);
    option_warnings(R);
    S->fwd_budget = S->commit_budget;

    pt_attr attrs[48];
    char created[32];
    const int na = output_attrs(R, attrs, created);
    /* the writer's encoding threads: the cores the compute leaves (cuda: all but one) */
    const int compute_threads =
        strcmp(S->be->name, "cpu") ? 1 : pt_job_threads(&R->J, o->threads);
    const pt_writer_opts wo = {R->out_path,
                               S->specs,
                               S->n_specs,
                               attrs,
                               na,
                               o->store_f16,
                               -1.0,
                               R->resume ? &R->ost : NULL,
                               (volatile const int *)&g_signal,
                               o->writer_threads > 0
                                   ? o->writer_threads
                                   : pt_writer_auto_threads(compute_threads, R->J.local_size)};
    if (!(S->w = pt_writer_open(&wo, e))) return 1;
    pt_batch_init(&S->batch, S->specs, S->n_specs);
    progress_init(R);
    R->P.total_records = R->n_records;
    if (R->P.total_records >= 0 && R->J.size > 1) R->P.total_records = R->hi - R->lo;
    if (R->P.total_records >= 0 && o->shard_n > 1)
        R->P.total_records = (R->P.total_records - o->shard_i + o->shard_n - 1) / o->shard_n;
    if (R->resume) {
        S->rows.pairs = R->ost.committed_pairs;
        S->rows.seqs = col_rows(S, &R->ost, C_SEQ_PAIR);
        S->rows.tok = col_rows(S, &R->ost, C_TOK_ID);
        S->rows.pat = col_rows(S, &R->ost, C_PAT_VALUE);
        S->rows.gen = col_rows(S, &R->ost, C_GEN_SEQ);
        S->rows.gen_tok = col_rows(S, &R->ost, C_GENTOK_ID);
        S->rows.ko = col_rows(S, &R->ost, C_KO_SEQ);
        S->rows.patch = col_rows(S, &R->ost, C_PA_PAIR);
        R->P.pairs_seen = R->P.pairs_at_start = R->ost.committed_pairs;
    }
    if (S->experiments && (!R->resume || col_rows(S, &R->ost, C_WIN) == 0))
        pt_experiments_emit_windows(S);
    return 0;
}

/* ---- the loop ------------------------------------------------------------------------------ */

static int record_tokens(const pt_record *r) {
    return r->status ? 0 : r->n_tok[0] + (r->has_b ? r->n_tok[1] : 0);
}

/* Compute the pending records and commit them (input position `pos` after them). 0 or 1. */
static int commit_pending(pt_run *R, pt_inpos pos, pt_error *e) {
    pt_sweep *S = &R->S;
    const int n = R->n_pending;
    if (PT_BUF_FIT(&R->ptrs, n, e)) return 1;
    int64_t tokens = 0;
    for (int k = 0; k < n; k++) {
        R->ptrs.v[k] = &R->pending.v[k];
        tokens += record_tokens(&R->pending.v[k]);
    }
    int oom = 0;
    if (pt_sweep_compute(S, R->ptrs.v, n, &oom, e)) return 1;
    S->batch.n_pairs = n;
    pt_writer_set_input_pos(S->w, pos);
    if (pt_writer_submit(S->w, &S->batch, e)) return 1;
    R->P.tokens_done += tokens;
    return 0;
}

static void drop_pending(pt_run *R) {
    for (int k = 0; k < R->n_pending; k++) pt_record_free(&R->pending.v[k]);
    R->n_pending = 0;
}

/* Read the next record of this process into the pending ones: 1 read, 0 end of input (or the
 * last of this process's records), -1 stop (*rc set: 1 error in e, 2 --strict). */
static int read_record(pt_run *R, int64_t *index, pt_inpos *strict_pos, int *rc, pt_error *e) {
    const pt_run_opts *o = R->o;
    const pt_record_ctx rctx = record_ctx(R);
    size_t len;
    const char *line;
    for (;;) {
        if (*index >= R->hi) return 0;
        const pt_inpos before = {(int64_t)ftello(R->in.f), R->in.line_no, *index};
        if (!(line = pt_jsonl_next(&R->in, &len))) return 0;
        const int64_t my_index = (*index)++;
        if (!mine(R, my_index)) continue;
        if (PT_BUF_FIT(&R->pending, (size_t)R->n_pending + 1, e)) return *rc = 1, -1;
        pt_record *r = &R->pending.v[R->n_pending];
        pt_record_parse(&rctx, R->in.too_long ? "" : line, R->in.too_long ? 0 : len, R->in.line_no,
                        my_index, r);
        if (r->status && o->strict) {
            fprintf(stderr,
                    "punctum: %s: %s (--strict: stopped there; the records before it are committed "
                    "to %s)\n",
                    o->pairs_path, r->message, R->out_path);
            pt_record_free(r);
            *strict_pos = before; /* a --resume would meet this record again */
            return *rc = 2, -1;
        }
        if (r->positions && !o->ablate_knockout && !o->stat_lens && !R->warned_positions) {
            R->warned_positions = 1;
            fprintf(stderr,
                    "punctum: warning: line %lld: \"positions\" does nothing without "
                    "--ablate knockout or lens in --stats (said once)\n",
                    (long long)r->line);
        }
        R->n_pending++;
        R->P.pairs_seen++;
        return 1;
    }
}

/* Read records and commit them in batches; 0, or 1 with the reason printed. */
static int run_loop(pt_run *R) {
    pt_sweep *S = &R->S;
    pt_error e = {{0}};
    int64_t index = R->resume ? R->ost.pos.index : 0, exp_rows = 0;
    int tokens = 0, rc = 0;
    pt_inpos strict_pos = {0, 0, 0};
    if (R->resume) {
        if (fseeko(R->in.f, (off_t)R->ost.pos.offset, SEEK_SET)) {
            pt_fail(&e, "%s: cannot seek to the resume position", R->o->pairs_path);
            rc = 1;
        }
        R->in.line_no = R->ost.pos.line;
    }
    while (rc == 0 && !g_signal && read_record(R, &index, &strict_pos, &rc, &e) > 0) {
        const pt_record *r = &R->pending.v[R->n_pending - 1];
        tokens += record_tokens(r);
        /* experiments multiply a batch's work: cut commits so that one holds at most about 16
         * batches' worth of variant rows */
        const int64_t er = pt_experiments_rows(S, r);
        if (er < 0) {
            pt_backend_take_error(S->be, &e, NULL);
            rc = 1;
            break;
        }
        exp_rows += er;
        if (tokens < S->commit_budget && exp_rows < 16 * (int64_t)S->commit_budget &&
            R->n_pending < 4096)
            continue;
        rc = commit_pending(R, (pt_inpos){(int64_t)ftello(R->in.f), R->in.line_no, index}, &e);
        drop_pending(R);
        tokens = 0;
        exp_rows = 0;
        if (!rc && !pt_writer_ok(S->w)) rc = 3; /* a write failed: pt_writer_close reports it */
        if (!rc) progress(R, 0);
    }
    /* the last partial batch at the end of the input; on a signal it is dropped (uncommitted:
     * --resume reads those records again, with the same batch boundaries); after --strict the
     * good records before the bad one */
    const pt_inpos end =
        rc == 2 ? strict_pos : (pt_inpos){(int64_t)ftello(R->in.f), R->in.line_no, index};
    if (R->n_pending > 0 && !g_signal && (rc == 0 || rc == 2))
        rc = commit_pending(R, end, &e) ? 1 : rc;
    else if (R->n_pending > 0)
        R->P.pairs_seen -= R->n_pending;
    drop_pending(R);
    if (rc == 1 && e.msg[0])
        fprintf(stderr,
                "punctum: %s; the records before this batch are committed to %s "
                "(--resume continues)\n",
                e.msg, R->out_path);
    return rc ? 1 : 0;
}

/* ---- the end ------------------------------------------------------------------------------- */

/* Drop everything loaded (every path out of pt_sweep_run goes through here). */
static void run_free(pt_run *R) {
    pt_sweep *S = &R->S;
    if (R->in.f) pt_jsonl_close(&R->in);
    pt_outstate_free(&R->ost);
    pt_experiments_free(S);
    pt_generate_free(S);
    pt_batch_free(&S->batch);
    pt_sweep_free_buffers(S);
    if (S->be) {
        if (S->have_engine) pt_engine_free(&S->en);
        if (S->have_weights) S->be->free_weights(S->be, S->cfg, &S->dev_w);
        S->be->destroy(S->be);
    }
    if (S->tok) pt_tokenizer_free(S->tok);
    pt_chat_free(S->chat);
    if (S->cfg) pt_model_free(&S->model);
    PT_BUF_FREE(&R->pending);
    PT_BUF_FREE(&R->ptrs);
    free(R->model_fp);
    free(R->input_fp);
}

/* Close the output (finishing it when rc is 0 and no signal came), report, end the job. */
static int run_close(pt_run *R, int rc) {
    pt_error e = {{0}};
    const int finish = rc == 0 && !g_signal;
    if (R->J.size == 1) {
        progress(R, 1);
    } else { /* under mpirun rank 0 reports the whole job at its end (pt_job_finish) */
        int64_t seen = R->P.pairs_seen, toks = R->P.tokens_done, start = R->P.pairs_at_start;
        pt_job_progress(&R->J, &seen, &toks, &start, 1);
    }
    if (pt_writer_close(R->S.w, finish, &R->ws, &e) < 0) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        rc = 1;
    }
    R->S.w = NULL;
    summary(R, rc || g_signal);
    if (R->ws.f16_saturated > 0)
        fprintf(stderr,
                "punctum: warning: --store f16: %lld values beyond float16's range were stored as "
                "+-65504 (attribute f16_saturated of %s)\n",
                (long long)R->ws.f16_saturated, R->out_path);
    if (rc == 0 && g_signal) rc = g_signal == SIGINT ? 130 : 143;
    return rc;
}

int pt_sweep_run(const pt_run_opts *o) {
    pt_run *R = calloc(1, sizeof *R);
    if (!R) {
        fprintf(stderr, "punctum: out of memory\n");
        return 1;
    }
    R->o = o;
    R->S.o = o;
    pt_error e = {{0}};
    signal(SIGXFSZ, SIG_IGN); /* a file-size limit: the write fails with EFBIG, reported */
    signal(SIGPIPE, SIG_IGN);

    /* mpirun: one rank per shard (io/job.c); a build without MPI refuses to run N copies */
    int rc = pt_job_init(&R->J, o, &e);
    if (rc) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        free(R);
        return rc;
    }
    R->out_path = pt_job_out_path(&R->J, o->out_path);
    rc = pt_job_agree(&R->J, run_open(R, &e), &e); /* all ranks agree before anything is written */
    if (!rc) rc = run_resume(R, &e);
    if (rc > 0 && e.msg[0]) fprintf(stderr, "punctum: %s\n", e.msg);
    if (rc == -1) { /* nothing to resume: the job's end (the MPI view) all the same */
        run_free(R);
        rc = pt_job_finish(&R->J, o->out_path, 0, 0, &e);
    } else if (rc) {
        run_free(R);
    } else if (run_output(R, &e)) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        run_free(R);
        pt_job_abort(&R->J, 1);
        free(R->out_path);
        free(R);
        return 1;
    } else {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        rc = run_close(R, run_loop(R));
        const int show = R->P.mode != PROGRESS_OFF;
        run_free(R);
        /* under mpirun: every rank's outcome; rank 0 reports failures and writes the view */
        rc = pt_job_finish(&R->J, o->out_path, rc, show, &e);
    }
    free(R->out_path);
    pt_job_finalize(&R->J);
    free(R);
    return rc;
}
