/* punctum — the HDF5 writer on a synthetic statistics stream (SPEC §8: >= 200 MB/s of
 * uncompressed statistics per core given to the writer, growing with cores).
 *
 * A producer thread plays the GPU: it hands the writer batches of rows with the layout of
 * `punctum run --stats mass,last,resid,topk` (pairs, seqs, tokens with attn_mass and attn_last
 * [T, L, H], resid_norm [T, L+1]) for pairs (a, a + "."), as fast as the writer takes them
 * (--rate 0) or at a fixed rate. Values look like the real ones where it matters for
 * compression: attention statistics are floats with full mantissas, b's residual norms repeat
 * a's over the shared prefix. For each writer thread count it reports the wall time from the
 * first batch to the closed, self-contained file, the statistics rate, the rate per writer
 * thread, the encoding rate per thread, how long the producer waited, and the final file's
 * assembly time.
 *
 *   bench_writer [--threads 1,2,4] [--tokens N] [--layers L] [--heads H] [--seq T]
 *                [--rate MB/s] [--store f32|f16] [--dir DIR] [--keep FILE] [--markdown]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "punctum/writer.h"

enum {
    P_ID,
    P_LINE,
    P_STATUS,
    P_MSG,
    P_SEQA,
    P_SEQB,
    P_KLAB,
    P_KLBA,
    P_JS,
    P_RCOS,
    S_PAIR,
    S_SIDE,
    S_TEXT,
    S_TSTART,
    S_NTOK,
    S_ENT,
    S_TOPK,
    S_TOPLP,
    S_TID,
    S_TLP,
    T_ID,
    T_SEQ,
    T_POS,
    T_TEXT,
    T_BS,
    T_BE,
    T_PUNCT,
    T_MASS,
    T_LAST,
    T_RESID,
    NCOL
};

typedef struct {
    int L, H, T, K;
    int64_t tokens;
    double rate; /* MB/s of statistics, 0: as fast as possible */
    int f16;
    const char *dir;
    const char *keep; /* keep the output here (a file for the reader benchmark) */
    int markdown;
} bench_opts;

typedef struct {
    pt_colspec specs[NCOL];
    float *pool; /* random attention values, reused */
    size_t pool_n;
    uint64_t rng;
} gen;

static uint32_t rnd(gen *g) {
    g->rng ^= g->rng << 13;
    g->rng ^= g->rng >> 7;
    g->rng ^= g->rng << 17;
    return (uint32_t)(g->rng >> 11);
}

static void schema(gen *g, const bench_opts *o) {
    const int L = o->L, H = o->H, K = o->K;
    const pt_colspec s[NCOL] = {
        {"/pairs/id", PT_STR, 0, {0, 0}},          {"/pairs/line", PT_I64, 0, {0, 0}},
        {"/pairs/status", PT_I8, 0, {0, 0}},       {"/pairs/message", PT_STR, 0, {0, 0}},
        {"/pairs/seq_a", PT_I64, 0, {0, 0}},       {"/pairs/seq_b", PT_I64, 0, {0, 0}},
        {"/pairs/kl_ab", PT_F32, 0, {0, 0}},       {"/pairs/kl_ba", PT_F32, 0, {0, 0}},
        {"/pairs/js", PT_F32, 0, {0, 0}},          {"/pairs/resid_cos", PT_F32, 1, {L + 1, 0}},
        {"/seqs/pair", PT_I64, 0, {0, 0}},         {"/seqs/side", PT_I8, 0, {0, 0}},
        {"/seqs/text", PT_STR, 0, {0, 0}},         {"/seqs/tok_start", PT_I64, 0, {0, 0}},
        {"/seqs/n_tok", PT_I32, 0, {0, 0}},        {"/seqs/entropy", PT_F32, 0, {0, 0}},
        {"/seqs/topk_id", PT_I32, 1, {K, 0}},      {"/seqs/topk_logprob", PT_F32, 1, {K, 0}},
        {"/seqs/target_id", PT_I32, 0, {0, 0}},    {"/seqs/target_logprob", PT_F32, 0, {0, 0}},
        {"/tokens/id", PT_I32, 0, {0, 0}},         {"/tokens/seq", PT_I64, 0, {0, 0}},
        {"/tokens/pos", PT_I32, 0, {0, 0}},        {"/tokens/text", PT_STR, 0, {0, 0}},
        {"/tokens/byte_start", PT_I32, 0, {0, 0}}, {"/tokens/byte_end", PT_I32, 0, {0, 0}},
        {"/tokens/is_punct", PT_I8, 0, {0, 0}},    {"/tokens/attn_mass", PT_F32, 2, {L, H}},
        {"/tokens/attn_last", PT_F32, 2, {L, H}},  {"/tokens/resid_norm", PT_F32, 1, {L + 1, 0}}};
    memcpy(g->specs, s, sizeof s);
}

/* Bytes of numeric statistics per token / per sequence / per pair (strings not counted). */
static double token_bytes(const bench_opts *o) {
    return 4.0 * (2.0 * o->L * o->H + o->L + 1) + 4 + 8 + 4 + 4 + 4 + 1;
}

static float pick(gen *g) {
    return g->pool[rnd(g) % g->pool_n];
}

/* One pair: a of T tokens, b = a + "." of T + 1 (resid_norm repeats a's over the prefix). */
static void add_pair(gen *g, const bench_opts *o, pt_batch *b, int64_t p, int64_t *seqs,
                     int64_t *toks) {
    const int L = o->L, H = o->H, T = o->T, K = o->K, LH = L * H;
    char s[48];
    snprintf(s, sizeof s, "pair-%lld", (long long)p);
    pt_col_append_str(b, P_ID, s);
    *(int64_t *)pt_col_append(b, P_LINE, 1) = p + 1;
    pt_col_append(b, P_STATUS, 1);
    pt_col_append_str(b, P_MSG, "");
    *(int64_t *)pt_col_append(b, P_SEQA, 1) = *seqs;
    *(int64_t *)pt_col_append(b, P_SEQB, 1) = *seqs + 1;
    *(float *)pt_col_append(b, P_KLAB, 1) = pick(g);
    *(float *)pt_col_append(b, P_KLBA, 1) = pick(g);
    *(float *)pt_col_append(b, P_JS, 1) = pick(g);
    float *rc = pt_col_append(b, P_RCOS, 1);
    for (int l = 0; l <= L; l++) rc[l] = 1.0f - pick(g) / 100.0f;
    float *resid = pt_col_append(b, T_RESID, (size_t)(2 * T + 1));
    for (int side = 0; side < 2; side++) {
        const int n = T + side;
        *(int64_t *)pt_col_append(b, S_PAIR, 1) = p;
        *(int8_t *)pt_col_append(b, S_SIDE, 1) = (int8_t)side;
        pt_col_append_str(b, S_TEXT, side ? "the cat sat on the mat." : "the cat sat on the mat");
        *(int64_t *)pt_col_append(b, S_TSTART, 1) = *toks;
        *(int32_t *)pt_col_append(b, S_NTOK, 1) = n;
        *(float *)pt_col_append(b, S_ENT, 1) = pick(g);
        int32_t *ti = pt_col_append(b, S_TOPK, 1);
        float *tl = pt_col_append(b, S_TOPLP, 1);
        for (int k = 0; k < K; k++) ti[k] = (int32_t)(rnd(g) % 49152), tl[k] = -pick(g);
        *(int32_t *)pt_col_append(b, S_TID, 1) = -1;
        *(float *)pt_col_append(b, S_TLP, 1) = 0.0f / 0.0f;
        float *mass = pt_col_append(b, T_MASS, (size_t)n);
        float *last = pt_col_append(b, T_LAST, (size_t)n);
        for (int t = 0; t < n; t++) {
            *(int32_t *)pt_col_append(b, T_ID, 1) = (int32_t)(rnd(g) % 49152);
            *(int64_t *)pt_col_append(b, T_SEQ, 1) = *seqs;
            *(int32_t *)pt_col_append(b, T_POS, 1) = t;
            pt_col_append_str(b, T_TEXT, t == T ? "." : " tok");
            *(int32_t *)pt_col_append(b, T_BS, 1) = 4 * t;
            *(int32_t *)pt_col_append(b, T_BE, 1) = 4 * t + 4;
            *(int8_t *)pt_col_append(b, T_PUNCT, 1) = t == T;
            const size_t at = rnd(g) % (g->pool_n - (size_t)LH);
            memcpy(mass + (size_t)t * LH, g->pool + at, (size_t)LH * sizeof(float));
            const size_t at2 = rnd(g) % (g->pool_n - (size_t)LH);
            for (int k = 0; k < LH; k++) last[(size_t)t * LH + k] = g->pool[at2 + k] / 4.0f;
            float *rn = resid + (size_t)(side * T + t) * (L + 1);
            if (side && t < T)
                memcpy(rn, resid + (size_t)t * (L + 1), (size_t)(L + 1) * sizeof(float));
            else
                for (int l = 0; l <= L; l++) rn[l] = 1.0f + 20.0f * pick(g);
        }
        ++*seqs;
        *toks += n;
    }
    b->n_pairs++;
}

static double cpu_s(int who) {
    if (who == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return ts.tv_sec + ts.tv_nsec * 1e-9;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int run_one(gen *g, const bench_opts *o, int threads, FILE *out) {
    char path[512];
    snprintf(path, sizeof path, "%s/bench-writer-%d.h5", o->dir, threads);
    const pt_attr attrs[] = {{"punctum_format", NULL, PUNCTUM_FORMAT},
                             {"punctum_version", PUNCTUM_VERSION, 0},
                             {"model_type", "synthetic", 0},
                             {"n_layers", NULL, o->L},
                             {"n_heads", NULL, o->H},
                             {"opt_stats", "mass,last,resid,topk", 0}};
    pt_writer_opts wo = {path, g->specs, NCOL, attrs, 6, o->f16, -1.0, NULL, NULL, threads};
    pt_error e = {{0}};
    pt_writer *w = pt_writer_open(&wo, &e);
    if (!w) {
        fprintf(stderr, "bench_writer: %s\n", e.msg);
        return 1;
    }
    pt_batch b;
    pt_batch_init(&b, g->specs, NCOL);
    const int pairs_per_batch = (int)(4096 / (2 * o->T + 1)) + 1;
    int64_t pairs = 0, seqs = 0, toks = 0;
    double stats_bytes = 0;
    const double t0 = pt_now(), cpu0 = cpu_s(1);
    double producer = 0; /* this thread's CPU making batches (the "GPU") */
    while (toks < o->tokens) {
        const double p0 = cpu_s(0);
        for (int k = 0; k < pairs_per_batch; k++) add_pair(g, o, &b, pairs++, &seqs, &toks);
        producer += cpu_s(0) - p0;
        stats_bytes += token_bytes(o) * (2 * o->T + 1) * pairs_per_batch;
        if (o->rate > 0) { /* a producer at a fixed rate: wait for its next batch */
            const double due = t0 + stats_bytes / (o->rate * 1e6);
            while (pt_now() < due) usleep(200);
        }
        pt_writer_set_input_pos(w, (pt_inpos){pairs, pairs, pairs});
        pt_writer_submit(w, &b, &e);
    }
    pt_batch_free(&b);
    const double t_last = pt_now();
    pt_writer_stats st;
    const int rc = pt_writer_close(w, 1, &st, &e);
    const double wall = pt_now() - t0;
    const double writer_cpu = cpu_s(1) - cpu0 - producer;
    if (rc) {
        fprintf(stderr, "bench_writer: %s\n", e.msg);
        return 1;
    }
    struct stat sb;
    stat(path, &sb);
    const double mbs = stats_bytes / wall / 1e6;
    fprintf(out,
            o->markdown
                ? "| %d | %.0f | %.2f | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f | %.2f | %.2f | "
                  "%.2f |\n"
                : "threads %d: %.0f MB of statistics in %.2f s: %.0f MB/s, %.0f MB/s per "
                  "thread; writer CPU %.2f s: %.0f MB per CPU-second (encoding %.0f MB/s per "
                  "thread); producer waited %.2f s, writer busy %.2f s, final file %.2f s; "
                  "compression %.2f\n",
            threads, stats_bytes / 1e6, wall, mbs, mbs / threads, writer_cpu,
            stats_bytes / writer_cpu / 1e6, st.encode_s > 0 ? st.bytes_in / st.encode_s / 1e6 : 0.0,
            st.stall_s, st.busy_s, st.final_s,
            (double)sb.st_size > 0 ? st.bytes_in / (double)sb.st_size : 0.0);
    (void)t_last;
    if (o->keep && rename(path, o->keep)) perror(o->keep);
    unlink(path);
    return 0;
}

static int parse(int argc, char **argv, bench_opts *o, char *threads, size_t n) {
    static const struct option opts[] = {
        {"threads", 1, 0, 't'},  {"tokens", 1, 0, 'n'}, {"layers", 1, 0, 'l'}, {"heads", 1, 0, 'h'},
        {"seq", 1, 0, 's'},      {"rate", 1, 0, 'r'},   {"store", 1, 0, 'f'},  {"dir", 1, 0, 'd'},
        {"markdown", 0, 0, 'm'}, {"keep", 1, 0, 'k'},   {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            snprintf(threads, n, "%s", optarg);
            break;
        case 'n':
            o->tokens = atoll(optarg);
            break;
        case 'l':
            o->L = atoi(optarg);
            break;
        case 'h':
            o->H = atoi(optarg);
            break;
        case 's':
            o->T = atoi(optarg);
            break;
        case 'r':
            o->rate = atof(optarg);
            break;
        case 'f':
            o->f16 = !strcmp(optarg, "f16");
            break;
        case 'd':
            o->dir = optarg;
            break;
        case 'm':
            o->markdown = 1;
            break;
        case 'k':
            o->keep = optarg;
            break;
        default:
            return -1;
        }
    }
    return o->L > 0 && o->H > 0 && o->T > 0 && o->tokens > 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    bench_opts o = {16, 32, 200, 10, 400000, 0.0, 0, "/tmp", NULL, 0};
    char threads[128] = "1,2";
    if (parse(argc, argv, &o, threads, sizeof threads)) {
        fprintf(stderr, "usage: bench_writer [--threads 1,2,4] [--tokens N] [--layers L] "
                        "[--heads H] [--seq T] [--rate MB/s] [--store f32|f16] [--dir DIR] "
                        "[--keep FILE] [--markdown]\n");
        return 2;
    }
    gen g = {0};
    g.rng = 88172645463325252ull;
    schema(&g, &o);
    g.pool_n = (size_t)1 << 22;
    g.pool = malloc(g.pool_n * sizeof(float));
    for (size_t i = 0; i < g.pool_n; i++) /* attention mass: a sum of probabilities, ~0..8 */
        g.pool[i] = (float)(rnd(&g) % 8000000) / 1e6f * (float)(rnd(&g) % 1000) / 1000.0f;
    if (o.markdown)
        printf(
            "| writer threads | statistics MB | wall s | MB/s | MB/s per thread | writer CPU s | "
            "MB per writer CPU-second | encoding MB/s per thread | producer waited s | writer "
            "busy s | final file s | compression |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    int rc = 0;
    for (char *save = NULL, *t = strtok_r(threads, ",", &save); t && !rc;
         t = strtok_r(NULL, ",", &save))
        rc = run_one(&g, &o, atoi(t), stdout);
    free(g.pool);
    return rc;
}
