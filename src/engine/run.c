/* punctum — the sweep's main loop (see sweep.h): validate everything, open (or resume) the
 * output, read records, cut them into batches for sweep.c, report progress, handle signals,
 * and under mpirun coordinate the ranks (io/job.h). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/sweep_internal.h"
#include "io/h5util.h"
#include "io/job.h"
#include "io/outstate.h"
#include "punctum/writer.h"

static volatile sig_atomic_t g_signal = 0;
static void on_signal(int sig) {
    if (g_signal)
        _exit(sig == SIGINT ? 130 : 143); /* a second signal: stop now (commits are atomic) */
    g_signal = sig;
}

static int64_t g_pairs_at_start = 0;

static void progress(pt_sweep *S, pt_job *J, int final) {
    if (!S->show_progress) return;
    const double now = pt_now();
    if (!final && now - S->last_progress < 0.5) return;
    S->last_progress = now;
    int64_t seen = S->pairs_seen, toks = S->tokens_done, start = g_pairs_at_start;
    pt_job_progress(J, &seen, &toks, &start, final);
    if (J->rank != 0) return;
    const double dt = now - S->t_start;
    const double pps = dt > 0 ? (seen - start) / dt : 0, tps = dt > 0 ? toks / dt : 0;
    char eta[32] = "?";
    if (S->total_records > 0 && pps > 0) {
        double left = (double)(S->total_records - seen) / pps;
        if (left < 0) left = 0;
        snprintf(eta, sizeof eta, "%dm%02ds", (int)(left / 60), (int)left % 60);
    }
    fprintf(stderr, "\r[punctum] %lld/%lld pairs  %.1f pairs/s  %.0f tok/s  ETA %s   ",
            (long long)seen, (long long)S->total_records, pps, tps, eta);
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

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

static void add_attr_str(pt_attr *a, int *n, const char *k, const char *v) {
    a[(*n)++] = (pt_attr){k, v, 0};
}
static void add_attr_int(pt_attr *a, int *n, const char *k, int64_t v) {
    a[(*n)++] = (pt_attr){k, NULL, v};
}

/* Everything that changes the output, recorded as root attributes; --resume and merge refuse
 * a disagreement, naming the option. */
typedef struct {
    const char *attr, *option;
    char value[320];
} ident_t;

enum { N_IDENT = 15 };

static void build_identity(const pt_sweep *S, const pt_job *J, const char *model_fp,
                           const char *input_fp, ident_t id[N_IDENT]) {
    const pt_run_opts *o = S->o;
    int n = 0;
#define ID(a, opt, ...)                                                                            \
    (id[n].attr = a, id[n].option = opt, snprintf(id[n].value, sizeof id[n].value, __VA_ARGS__),   \
     n++)
    ID("model_fingerprint", "--model", "%s", model_fp);
    ID("input_fingerprint", "--pairs", "%s", input_fp);
    ID("backend", "--backend", "%s", S->be->name);
    ID("compute_dtype", "--dtype", "%s",
       S->be->dtype == PT_DTYPE_F32    ? "f32"
       : S->be->dtype == PT_DTYPE_BF16 ? "bf16"
                                       : "f16");
    char stats[64] = "";
    const char *names[] = {"mass", "last", "resid", "topk", "lens", "patterns"};
    const int on[] = {o->stat_mass, o->stat_last, o->stat_resid,
                      o->stat_topk, o->stat_lens, o->stat_patterns};
    for (int k = 0; k < 6; k++)
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
    ID("opt_windows", "--windows", "%s", o->ablate_knockout ? o->windows : "-");
    ID("opt_patch", "--patch", "%s", o->patch_resid ? "resid" : "none");
    if (o->derive == PT_DERIVE_APPEND)
        ID("opt_derive_b", "--derive-b", "append:%s", o->derive_str);
    else
        ID("opt_derive_b", "--derive-b", "%s",
           o->derive == PT_DERIVE_STRIP_PUNCT ? "strip-punct" : "none");
    ID("opt_batch_tokens", "--batch-tokens", "%d", S->budget);
    if (J->size > 1)
        ID("opt_shard", "mpirun -np", "block %d/%d", J->rank, J->size);
    else
        ID("opt_shard", "--shard", "%d/%d", o->shard_i, o->shard_n);
    ID("store_dtype", "--store", "%s", o->store_f16 ? "f16" : "f32");
    ID("punctum_format", "the punctum format", "%d", PUNCTUM_FORMAT);
#undef ID
}

/* 0: the output agrees with this run; else a one-line refusal in e. */
static int check_identity(const pt_outstate *st, const char *path, const ident_t *id, pt_error *e) {
    for (int k = 0; k < N_IDENT; k++) {
        const char *was = pt_outstate_attr(st, id[k].attr);
        if (!was)
            return pt_fail(
                e, "--resume: %s lacks the %s attribute (not written by this punctum version)",
                path, id[k].attr);
        if (strcmp(was, id[k].value)) {
            if (!strcmp(id[k].attr, "model_fingerprint")) {
                const char *dir = pt_outstate_attr(st, "model_dir");
                return pt_fail(
                    e, "--resume: --model is not the model that wrote %s (%s; its files differ)",
                    path, dir ? dir : "?");
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
    }
    return 0;
}

static int64_t col_rows(const pt_sweep *S, const pt_outstate *st, int id) {
    return S->col[id] >= 0 ? st->rows[S->col[id]] : 0;
}

/* Drop everything loaded (any path out of pt_sweep_run after the model was loaded). */
static void sweep_free(pt_sweep *S, pt_weights *dev_w, int have_weights) {
    pt_sweep_free_experiments(S);
    pt_batch_free(&S->batch);
    if (S->be) {
        pt_devbuf *bufs[] = {&S->d_mass, &S->d_last,      &S->d_pat,   &S->d_rnorm,
                             &S->d_tap,  &S->d_resid_all, &S->d_logits};
        for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++)
            if (bufs[k]->p) S->be->free(S->be, bufs[k]->p);
        if (have_weights) {
            pt_engine_free(&S->en);
            S->be->free_weights(S->be, S->cfg, dev_w);
        }
        S->be->destroy(S->be);
    }
    if (S->tok) pt_tokenizer_free(S->tok);
    if (S->cfg) pt_model_free(&S->model);
    void *hbufs[] = {S->h_ids,        S->h_pos,         S->h_kvr,        S->h_segs,
                     S->h_fin,        S->h_tgt,         S->h_kl,         S->h_tap,
                     S->h_rnorm,      S->plan.seqs,     S->plan.entropy, S->plan.topk_id,
                     S->plan.topk_lp, S->plan.target_lp};
    for (size_t k = 0; k < sizeof hbufs / sizeof hbufs[0]; k++) free(hbufs[k]);
}

int pt_sweep_run(const pt_run_opts *o) {
    pt_sweep S0, *S = &S0;
    memset(S, 0, sizeof *S);
    S->o = o;
    pt_error e = {{0}};
    struct stat st;
    pt_job J;
    pt_weights dev_w;
    int have_weights = 0, rc = 0, resume = 0;
    char *model_fp = NULL, *input_fp = NULL, *out_path = NULL;
    pt_outstate ost;
    memset(&ost, 0, sizeof ost);
    pt_jsonl in;
    memset(&in, 0, sizeof in);

    signal(SIGXFSZ,
           SIG_IGN); /* a file-size limit: the write fails with EFBIG, reported as an error */
    signal(SIGPIPE, SIG_IGN);

    /* mpirun: one rank per shard (io/job.c); a build without MPI refuses to run N copies */
    rc = pt_job_init(&J, o, &e);
    if (rc) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        return rc;
    }
    out_path = pt_job_out_path(&J, o->out_path);

    /* ---- validation: nothing below touches the output until it all passed ---- */
#define FAIL(code, ...)                                                                            \
    do {                                                                                           \
        rc = (code);                                                                               \
        pt_fail(&e, __VA_ARGS__);                                                                  \
        goto validated;                                                                            \
    } while (0)
    if (J.size > 1 && o->shard_n > 1)
        FAIL(2, "--shard cannot be combined with mpirun (each rank is a shard)");
    if (!o->force && !o->resume && pt_job_outputs_exist(&J, o->out_path, out_path))
        FAIL(2, "%s already exists (use --force to overwrite or --resume to continue)",
             stat(out_path, &st) == 0 ? out_path : o->out_path);
    /* (under mpirun a rank that died before it created its file simply starts it) */
    resume = o->resume && !(J.size > 1 && stat(out_path, &st) != 0);
    if (resume && stat(out_path, &st) != 0)
        FAIL(2, "--resume: %s does not exist (nothing to resume; run without --resume)", out_path);
    if (pt_model_load(o->model_dir, &S->model, &e)) {
        rc = 1;
        goto validated;
    }
    S->cfg = &S->model.cfg;
    {
        char *tok_path = pt_path_join(o->model_dir, "tokenizer.json");
        if (stat(tok_path, &st) == 0) {
            S->tok = pt_tokenizer_load(tok_path, &e);
            if (!S->tok) {
                free(tok_path);
                rc = 1;
                goto validated;
            }
        }
        free(tok_path);
    }
    if (pt_jsonl_open(&in, o->pairs_path, &e)) {
        rc = 1;
        goto validated;
    }
    if (pt_sweep_setup_experiments(S, &e)) {
        rc = 2;
        goto validated;
    }
    {
        const char *bname = o->backend ? o->backend : "auto";
        if (!strcmp(bname, "cuda") || (!strcmp(bname, "auto") && pt_backend_cuda_available())) {
            pt_compute_dtype dt = PT_DTYPE_BF16;
            if (o->dtype && !strcmp(o->dtype, "f32")) dt = PT_DTYPE_F32;
            if (o->dtype && !strcmp(o->dtype, "f16")) dt = PT_DTYPE_F16;
            S->be = pt_backend_cuda_create(pt_job_device(&J, o->device), dt, &e);
            if (!S->be) {
                rc = 2;
                goto validated;
            }
        } else {
            if (o->dtype && strcmp(o->dtype, "f32"))
                FAIL(2, "--dtype %s: the cpu backend computes in f32", o->dtype);
            S->be = pt_backend_cpu_create(pt_job_threads(&J, o->threads), &e);
            if (!S->be) {
                rc = 1;
                goto validated;
            }
        }
    }
    if (S->be->load_weights(S->be, S->cfg, &S->model.host, &dev_w, &e)) {
        rc = 1;
        goto validated;
    }
    have_weights = 1;
    pt_engine_init(&S->en, S->be, S->cfg, &dev_w, &e);
    S->topk = o->stat_topk ? (o->topk > 0 ? o->topk : 10) : 1;
    if (S->topk > S->cfg->vocab_size) S->topk = S->cfg->vocab_size;
    S->prefix_sharing = 1;
    S->budget = o->batch_tokens > 0 ? o->batch_tokens : 4096;
    pt_sweep_build_schema(S);
    if (!(model_fp = pt_model_fingerprint(o->model_dir, &e)) ||
        !(input_fp = pt_file_fingerprint(o->pairs_path, &e))) {
        rc = 1;
        goto validated;
    }
validated:
#undef FAIL
    /* all ranks agree before anything is written: the first failure is reported once */
    rc = pt_job_agree(&J, rc, &e);
    if (rc) {
        if (e.msg[0]) fprintf(stderr, "punctum: %s\n", e.msg);
        if (in.f) pt_jsonl_close(&in);
        sweep_free(S, &dev_w, have_weights);
        free(model_fp);
        free(input_fp);
        free(out_path);
        pt_job_finalize(&J);
        return rc;
    }

    ident_t ident[N_IDENT];
    build_identity(S, &J, model_fp, input_fp, ident);

    /* which records are ours: --shard I/N (round robin), or under mpirun a contiguous block */
    int64_t lo = 0, hi = INT64_MAX;
    S->show_progress = o->progress > 0 || (o->progress < 0 && isatty(2));
    const int64_t n_records = J.size > 1 || S->show_progress ? count_records(o->pairs_path) : -1;
    if (J.size > 1) pt_job_block(&J, n_records, &lo, &hi);

    /* ---- --resume: the committed state, checked against this run ---- */
    {
        int rrc = 0; /* > 0: refused; -1: already complete */
        if (resume) {
            if (pt_outstate_read(out_path, NULL, 0, &ost, &e) ||
                check_identity(&ost, out_path, ident, &e)) {
                rrc = 2;
            } else if (ost.complete) {
                rrc = -1; /* nothing to do */
            } else {
                pt_outstate_free(&ost);
                if (pt_outstate_read(out_path, S->specs, S->n_specs, &ost, &e)) rrc = 1;
            }
        }
        const int agreed =
            pt_job_agree(&J, rrc > 0 ? rrc : 0, &e); /* every rank, resuming or not */
        if (!agreed && o->resume) /* rank 0 says which ranks an earlier job left unfinished */
            pt_job_report_resume(&J, resume ? ost.committed_pairs : -1, rrc < 0);
        if (agreed || rrc < 0) {
            if (agreed && e.msg[0]) fprintf(stderr, "punctum: %s\n", e.msg);
            if (!agreed && J.size == 1)
                fprintf(stderr, "punctum: %s is already complete (%lld pairs); nothing to resume\n",
                        out_path, (long long)ost.committed_pairs);
            if (!agreed) { /* a consolidation that finished just before a crash left its parts */
                char stale[4096];
                snprintf(stale, sizeof stale, "%s.parts", out_path);
                if (stat(stale, &st) == 0) pt_remove_dir_files(stale);
            }
            pt_jsonl_close(&in);
            pt_outstate_free(&ost);
            sweep_free(S, &dev_w, have_weights);
            free(model_fp);
            free(input_fp);
            rc = agreed ? agreed : pt_job_finish(&J, o->out_path, 0, 0, &e);
            free(out_path);
            pt_job_finalize(&J);
            return rc;
        }
    }
    /* under mpirun the job's view OUT.h5 is rewritten at the end; an old one must not show
     * rank files that are being replaced */
    if (J.size > 1 && J.rank == 0 && !o->resume) unlink(o->out_path);

    /* ---- the output ---- */
    pt_attr attrs[48];
    int na = 0;
    char created[32];
    time_t now = time(NULL);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    add_attr_int(attrs, &na, "punctum_format", PUNCTUM_FORMAT);
    add_attr_str(attrs, &na, "punctum_version", PUNCTUM_VERSION);
    add_attr_str(attrs, &na, "model_dir", o->model_dir);
    add_attr_str(attrs, &na, "model_type", S->cfg->model_type);
    add_attr_int(attrs, &na, "n_layers", S->cfg->n_layers);
    add_attr_int(attrs, &na, "n_heads", S->cfg->n_heads);
    add_attr_int(attrs, &na, "n_kv_heads", S->cfg->n_kv_heads);
    add_attr_int(attrs, &na, "d_model", S->cfg->d_model);
    add_attr_int(attrs, &na, "vocab_size", S->cfg->vocab_size);
    add_attr_str(attrs, &na, "device", S->be->device_name);
    add_attr_str(attrs, &na, "command_line", o->command_line ? o->command_line : "");
    add_attr_str(attrs, &na, "created", created);
    add_attr_str(attrs, &na, "pairs_file", o->pairs_path);
    for (int k = 0; k < N_IDENT; k++)
        if (strcmp(ident[k].attr, "punctum_format"))
            add_attr_str(attrs, &na, ident[k].attr, ident[k].value);
    if (J.size > 1) {
        add_attr_int(attrs, &na, "mpi_rank", J.rank);
        add_attr_int(attrs, &na, "mpi_size", J.size);
    }
    if (resume) { /* keep the original run's record of when and how it started */
        for (int k = 0; k < na; k++)
            if (!strcmp(attrs[k].key, "created") || !strcmp(attrs[k].key, "command_line")) {
                const char *was = pt_outstate_attr(&ost, attrs[k].key);
                if (was) attrs[k].str = was;
            }
    }

    /* the writer's encoding threads: the cores the compute leaves (cuda: all but one) */
    const int compute_threads = strcmp(S->be->name, "cpu") ? 1 : pt_job_threads(&J, o->threads);
    const pt_writer_opts wo = {out_path,
                               S->specs,
                               S->n_specs,
                               attrs,
                               na,
                               o->store_f16,
                               -1.0,
                               resume ? &ost : NULL,
                               (volatile const int *)&g_signal,
                               o->writer_threads > 0
                                   ? o->writer_threads
                                   : pt_writer_auto_threads(compute_threads, J.local_size)};
    S->w = pt_writer_open(&wo, &e);
    if (!S->w) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        pt_jsonl_close(&in);
        pt_outstate_free(&ost);
        sweep_free(S, &dev_w, have_weights);
        free(model_fp);
        free(input_fp);
        free(out_path);
        pt_job_abort(&J, 1);
        return 1;
    }
    pt_batch_init(&S->batch, S->specs, S->n_specs);

    int64_t index = 0;
    if (resume) {
        S->n_pairs_total = ost.committed_pairs;
        S->n_seqs_total = col_rows(S, &ost, C_SEQ_PAIR);
        S->n_tok_total = col_rows(S, &ost, C_TOK_ID);
        S->n_pat_total = col_rows(S, &ost, C_PAT_VALUE);
        if (fseeko(in.f, (off_t)ost.pos.offset, SEEK_SET)) {
            fprintf(stderr, "punctum: %s: cannot seek to the resume position\n", o->pairs_path);
            rc = 1;
        }
        in.line_no = ost.pos.line;
        index = ost.pos.index;
        S->pairs_seen = g_pairs_at_start = ost.committed_pairs;
    }
    if (S->experiments && (!resume || col_rows(S, &ost, C_WIN) == 0)) pt_sweep_emit_windows(S);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    S->total_records = n_records;
    if (S->total_records >= 0 && o->shard_n > 1)
        S->total_records = (S->total_records - o->shard_i + o->shard_n - 1) / o->shard_n;
    S->t_start = pt_now();

    pt_record_ctx rctx = {S->cfg->vocab_size, S->cfg->max_positions, S->tok, o->derive,
                          o->derive_str};
    int cap = 64, n = 0, tokens = 0;
    int64_t exp_rows = 0; /* estimated experiment rows of the pending records */
    pt_record *pending = pt_xcalloc((size_t)cap, sizeof(pt_record));
    pt_record **ptrs = NULL;
    size_t len;
    const char *line;
    pt_inpos strict_pos = {0, 0, 0};
    while (rc == 0 && !g_signal && index < hi) {
        const pt_inpos before = {(int64_t)ftello(in.f), in.line_no, index};
        if (!(line = pt_jsonl_next(&in, &len))) break;
        const int64_t my_index = index++;
        if (my_index < lo) continue;
        if (o->shard_n > 1 && my_index % o->shard_n != o->shard_i) continue;
        if (n == cap) {
            cap *= 2;
            pending = pt_xrealloc(pending, (size_t)cap * sizeof(pt_record));
        }
        pt_record *r = &pending[n];
        pt_record_parse(&rctx, in.too_long ? "" : line, in.too_long ? 0 : len, in.line_no, my_index,
                        r);
        if (r->status && o->strict) {
            fprintf(stderr,
                    "punctum: %s: %s (--strict: stopped there; the records before it are committed "
                    "to %s)\n",
                    o->pairs_path, r->message, out_path);
            pt_record_free(r);
            strict_pos = before; /* a --resume would meet this record again */
            rc = 1;
            break;
        }
        n++;
        S->pairs_seen++;
        if (!r->status) tokens += r->n_tok[0] + (r->has_b ? r->n_tok[1] : 0);
        /* experiments multiply a batch's work: cut batches so that one commit holds at most
         * about 16 batches' worth of variant rows */
        exp_rows += pt_sweep_experiment_rows(S, r);
        if (tokens >= S->budget || exp_rows >= 16 * (int64_t)S->budget || n >= 4096) {
            ptrs = pt_xrealloc(ptrs, (size_t)n * sizeof *ptrs);
            for (int k = 0; k < n; k++) ptrs[k] = &pending[k];
            pt_writer_set_input_pos(S->w, (pt_inpos){(int64_t)ftello(in.f), in.line_no, index});
            pt_sweep_batch(S, ptrs, n);
            for (int k = 0; k < n; k++) pt_record_free(&pending[k]);
            n = 0;
            tokens = 0;
            exp_rows = 0;
            if (!pt_writer_ok(S->w)) { /* a write failed: pt_writer_close reports it */
                rc = 1;
                break;
            }
            progress(S, &J, 0);
        }
    }
    /* the last partial batch at the end of the input; on a signal it is dropped (uncommitted:
     * --resume reads those records again, with the same batch boundaries) */
    if (n > 0 && !g_signal) { /* (--strict: the good records before the bad one) */
        ptrs = pt_xrealloc(ptrs, (size_t)n * sizeof *ptrs);
        for (int k = 0; k < n; k++) ptrs[k] = &pending[k];
        pt_writer_set_input_pos(S->w, rc ? strict_pos
                                         : (pt_inpos){(int64_t)ftello(in.f), in.line_no, index});
        pt_sweep_batch(S, ptrs, n);
    } else if (n > 0) {
        S->pairs_seen -= n;
    }
    for (int k = 0; k < n; k++) pt_record_free(&pending[k]);
    free(pending);
    free(ptrs);
    if (J.size == 1) {
        progress(S, &J, 1);
    } else { /* under mpirun rank 0 reports the whole job at its end (pt_job_finish) */
        int64_t seen = S->pairs_seen, toks = S->tokens_done, start = g_pairs_at_start;
        pt_job_progress(&J, &seen, &toks, &start, 1);
    }
    pt_jsonl_close(&in);

    const int finish = rc == 0 && !g_signal;
    pt_writer_stats ws = {0};
    int wrc = pt_writer_close(S->w, finish, &ws, &e);
    S->w = NULL;
    if (wrc < 0) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        rc = 1;
    }
    const double wall = pt_now() - S->t_start;
    char wline[256];
    pt_writer_summary(&ws, wall, wline, sizeof wline);
    if (S->show_progress && J.size == 1)
        fprintf(stderr, "[punctum] %lld pairs, %lld tokens in %.2f s (%s) -> %s\n",
                (long long)S->n_pairs_total, (long long)S->tokens_done, wall, wline, out_path);
    if (ws.f16_saturated > 0)
        fprintf(stderr,
                "punctum: warning: --store f16: %lld values beyond float16's range were stored as "
                "+-65504 (attribute f16_saturated of %s)\n",
                (long long)ws.f16_saturated, out_path);
    pt_outstate_free(&ost);
    sweep_free(S, &dev_w, have_weights);
    free(model_fp);
    free(input_fp);
    if (rc == 0 && g_signal) rc = g_signal == SIGINT ? 130 : 143;
    /* under mpirun: gather every rank's outcome; rank 0 reports failures and writes the view */
    rc = pt_job_finish(&J, o->out_path, rc, S->show_progress, &e);
    free(out_path);
    pt_job_finalize(&J);
    return rc;
}
