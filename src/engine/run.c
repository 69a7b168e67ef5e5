/* punctum — the sweep's main loop (see sweep.h): validate everything, open the output, read
 * records, cut them into batches for sweep.c, report progress, handle signals. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/sweep_internal.h"
#include "punctum/writer.h"

static volatile sig_atomic_t g_signal = 0;
static void on_signal(int sig) { g_signal = sig; }

static void progress(pt_sweep *S, int final) {
    if (!S->show_progress) return;
    const double now = pt_now();
    if (!final && now - S->last_progress < 0.5) return;
    S->last_progress = now;
    const double dt = now - S->t_start;
    const double pps = dt > 0 ? S->pairs_seen / dt : 0, tps = dt > 0 ? S->tokens_done / dt : 0;
    char eta[32] = "?";
    if (S->total_records > 0 && pps > 0) {
        double left = (double)(S->total_records - S->pairs_seen) / pps;
        if (left < 0) left = 0;
        snprintf(eta, sizeof eta, "%dm%02ds", (int)(left / 60), (int)left % 60);
    }
    fprintf(stderr, "\r[punctum] %lld/%lld pairs  %.1f pairs/s  %.0f tok/s  ETA %s   ",
            (long long)S->pairs_seen, (long long)S->total_records, pps, tps, eta);
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

static int64_t count_records(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int64_t n = 0;
    int c, prev = '\n';
    while ((c = getc(f)) != EOF) {
        if (c == '\n' && prev != '\n') n++;
        prev = c;
    }
    if (prev != '\n') n++;
    fclose(f);
    return n;
}

static void add_attr_str(pt_attr *a, int *n, const char *k, const char *v) { a[(*n)++] = (pt_attr){k, v, 0}; }
static void add_attr_int(pt_attr *a, int *n, const char *k, int64_t v) { a[(*n)++] = (pt_attr){k, NULL, v}; }

int pt_sweep_run(const pt_run_opts *o) {
    pt_sweep S0, *S = &S0;
    memset(S, 0, sizeof *S);
    S->o = o;
    pt_error e;
    struct stat st;

    /* everything is validated before the output file is touched */
    if (!o->force && !o->resume && stat(o->out_path, &st) == 0) {
        fprintf(stderr, "punctum: %s already exists (use --force to overwrite or --resume to continue)\n",
                o->out_path);
        return 2;
    }
    if (o->resume) {
        fprintf(stderr, "punctum: --resume is not available yet in this build\n");
        return 2;
    }
    if (pt_model_load(o->model_dir, &S->model, &e)) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        return 1;
    }
    S->cfg = &S->model.cfg;
    char *tok_path = pt_path_join(o->model_dir, "tokenizer.json");
    if (stat(tok_path, &st) == 0) {
        S->tok = pt_tokenizer_load(tok_path, &e);
        if (!S->tok) {
            fprintf(stderr, "punctum: %s\n", e.msg);
            free(tok_path);
            pt_model_free(&S->model);
            return 1;
        }
    }
    free(tok_path);
    pt_jsonl in;
    if (pt_jsonl_open(&in, o->pairs_path, &e)) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        return 1;
    }
    if (pt_sweep_setup_experiments(S, &e)) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        return 2;
    }

    /* backend */
    const char *bname = o->backend ? o->backend : "auto";
    if (!strcmp(bname, "cuda") || (!strcmp(bname, "auto") && pt_backend_cuda_available())) {
        pt_compute_dtype dt = PT_DTYPE_BF16;
        if (o->dtype && !strcmp(o->dtype, "f32")) dt = PT_DTYPE_F32;
        if (o->dtype && !strcmp(o->dtype, "f16")) dt = PT_DTYPE_F16;
        S->be = pt_backend_cuda_create(o->device, dt, &e);
        if (!S->be) {
            fprintf(stderr, "punctum: %s\n", e.msg);
            return 2;
        }
    } else {
        if (o->dtype && strcmp(o->dtype, "f32")) {
            fprintf(stderr, "punctum: --dtype %s: the cpu backend computes in f32\n", o->dtype);
            return 2;
        }
        S->be = pt_backend_cpu_create(o->threads, &e);
    }
    pt_weights dev_w;
    if (S->be->load_weights(S->be, S->cfg, &S->model.host, &dev_w, &e)) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        return 1;
    }
    pt_engine_init(&S->en, S->be, S->cfg, &dev_w, &e);
    S->topk = o->stat_topk ? (o->topk > 0 ? o->topk : 10) : 1;
    if (S->topk > S->cfg->vocab_size) S->topk = S->cfg->vocab_size;
    S->prefix_sharing = 1;
    const int budget = o->batch_tokens > 0 ? o->batch_tokens : 4096;
    S->budget = budget;

    /* output */
    pt_sweep_build_schema(S);
    pt_attr attrs[24];
    int na = 0;
    char created[32], dtype_name[8];
    time_t now = time(NULL);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    snprintf(dtype_name, sizeof dtype_name, "%s",
             S->be->dtype == PT_DTYPE_F32 ? "f32" : S->be->dtype == PT_DTYPE_BF16 ? "bf16" : "f16");
    add_attr_int(attrs, &na, "punctum_format", PUNCTUM_FORMAT);
    add_attr_str(attrs, &na, "punctum_version", PUNCTUM_VERSION);
    add_attr_str(attrs, &na, "model_dir", o->model_dir);
    add_attr_str(attrs, &na, "model_type", S->cfg->model_type);
    add_attr_int(attrs, &na, "n_layers", S->cfg->n_layers);
    add_attr_int(attrs, &na, "n_heads", S->cfg->n_heads);
    add_attr_int(attrs, &na, "n_kv_heads", S->cfg->n_kv_heads);
    add_attr_int(attrs, &na, "d_model", S->cfg->d_model);
    add_attr_int(attrs, &na, "vocab_size", S->cfg->vocab_size);
    add_attr_str(attrs, &na, "backend", S->be->name);
    add_attr_str(attrs, &na, "device", S->be->device_name);
    add_attr_str(attrs, &na, "compute_dtype", dtype_name);
    add_attr_str(attrs, &na, "command_line", o->command_line ? o->command_line : "");
    add_attr_str(attrs, &na, "created", created);
    add_attr_str(attrs, &na, "pairs_file", o->pairs_path);
    add_attr_str(attrs, &na, "store_dtype", o->store_f16 ? "f16" : "f32");
    S->w = pt_writer_create(o->out_path, S->specs, S->n_specs, attrs, na, o->store_f16, &e);
    if (!S->w) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        return 1;
    }
    pt_batch_init(&S->batch, S->specs, S->n_specs);
    if (S->experiments) pt_sweep_emit_windows(S);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    S->show_progress = o->progress > 0 || (o->progress < 0 && isatty(2));
    S->total_records = S->show_progress ? count_records(o->pairs_path) : -1;
    if (S->total_records >= 0 && o->shard_n > 1)
        S->total_records = (S->total_records - o->shard_i + o->shard_n - 1) / o->shard_n;
    S->t_start = pt_now();

    pt_record_ctx rctx = {S->cfg->vocab_size, S->cfg->max_positions, S->tok, o->derive, o->derive_str};
    int cap = 64, n = 0, tokens = 0, rc = 0;
    pt_record *pending = pt_xcalloc((size_t)cap, sizeof(pt_record));
    pt_record **ptrs = NULL;
    int64_t index = 0;
    size_t len;
    const char *line;
    while (!g_signal && (line = pt_jsonl_next(&in, &len))) {
        const int64_t my_index = index++;
        if (o->shard_n > 1 && my_index % o->shard_n != o->shard_i) continue;
        if (n == cap) {
            cap *= 2;
            pending = pt_xrealloc(pending, (size_t)cap * sizeof(pt_record));
        }
        pt_record *r = &pending[n];
        pt_record_parse(&rctx, in.too_long ? "" : line, in.too_long ? 0 : len, in.line_no, my_index, r);
        if (r->status && o->strict) {
            fprintf(stderr, "punctum: %s: %s\n", o->pairs_path, r->message);
            pt_record_free(r);
            rc = 1;
            break;
        }
        n++;
        S->pairs_seen++;
        if (!r->status) tokens += r->n_tok[0] + (r->has_b ? r->n_tok[1] : 0);
        if (tokens >= budget || n >= 4096) {
            ptrs = pt_xrealloc(ptrs, (size_t)n * sizeof *ptrs);
            for (int k = 0; k < n; k++) ptrs[k] = &pending[k];
            pt_sweep_batch(S, ptrs, n);
            for (int k = 0; k < n; k++) pt_record_free(&pending[k]);
            n = 0;
            tokens = 0;
            progress(S, 0);
        }
    }
    if (n > 0 && rc == 0) { /* the last partial batch (also on a signal: finish what was read) */
        ptrs = pt_xrealloc(ptrs, (size_t)n * sizeof *ptrs);
        for (int k = 0; k < n; k++) ptrs[k] = &pending[k];
        pt_sweep_batch(S, ptrs, n);
    }
    for (int k = 0; k < n; k++) pt_record_free(&pending[k]);
    free(pending);
    free(ptrs);
    progress(S, 1);
    pt_jsonl_close(&in);

    if (pt_writer_close(S->w, &e)) {
        fprintf(stderr, "punctum: %s\n", e.msg);
        rc = 1;
    }
    const double wall = pt_now() - S->t_start;
    if (S->show_progress)
        fprintf(stderr, "[punctum] %lld pairs, %lld tokens in %.2f s (writer busy %.2f s) -> %s\n",
                (long long)S->n_pairs_total, (long long)S->tokens_done, wall, 0.0, o->out_path);

    pt_sweep_free_experiments(S);
    pt_batch_free(&S->batch);
    pt_devbuf *bufs[] = {&S->d_mass, &S->d_last, &S->d_pat, &S->d_rnorm, &S->d_tap, &S->d_resid_all, &S->d_logits};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++)
        if (bufs[k]->p) S->be->free(S->be, bufs[k]->p);
    pt_engine_free(&S->en);
    S->be->free_weights(S->be, S->cfg, &dev_w);
    S->be->destroy(S->be);
    if (S->tok) pt_tokenizer_free(S->tok);
    pt_model_free(&S->model);
    void *hbufs[] = {S->h_ids, S->h_pos, S->h_kvr, S->h_segs, S->h_fin, S->h_tgt, S->h_kl, S->h_tap,
                     S->h_rnorm, S->plan.seqs, S->plan.entropy, S->plan.topk_id, S->plan.topk_lp,
                     S->plan.target_lp};
    for (size_t k = 0; k < sizeof hbufs / sizeof hbufs[0]; k++) free(hbufs[k]);
    if (rc == 0 && g_signal) rc = g_signal == SIGINT ? 130 : 143;
    return rc;
}
