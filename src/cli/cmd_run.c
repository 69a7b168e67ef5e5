/* punctum run — option parsing and validation; the sweep itself is engine/sweep.c. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "punctum/cli.h"
#include "punctum/model.h"
#include "punctum/sweep.h"

static void run_usage(FILE *f) {
    fprintf(f,
            "usage: punctum run --model DIR|ORG/NAME --pairs FILE.jsonl --out FILE.h5 [options]\n"
            "  --model DIR|ORG/NAME        a model directory, or a Hugging Face model id found in\n"
            "                              the local cache ($HF_HUB_CACHE, $HF_HOME/hub or\n"
            "                              ~/.cache/huggingface/hub; nothing is downloaded)\n"
            "  --backend auto|cpu|cuda     auto: cuda when a GPU is usable, else cpu (the start-up\n"
            "                              line says why)\n"
            "  --dtype f32|bf16|f16        compute dtype (cpu: f32; cuda default bf16; auto\n"
            "                              without a GPU: f32)\n"
            "  --stats LIST                from mass,last,resid,topk,lens,massive,patterns, or\n"
            "                              none (default mass,last,resid,topk). massive: per\n"
            "                              token and layer, over the d dimensions of the\n"
            "                              residual stream, the largest |h_d|, its d (ties: the\n"
            "                              lowest) and the median |h_d| (even d: the mean of the\n"
            "                              two middle values)\n"
            "  --topk K                    default 10\n"
            "  --ablate knockout|none      default none\n"
            "  --positions all|punct|last:K|none   default punct\n"
            "  --windows all|each|LO:HI[,LO:HI...]\n"
            "                              layer windows for knockout; default all\n"
            "  --patch resid|none          default none\n"
            "  --derive-b append:STR|strip-punct\n"
            "  --chat                      wrap prompts in the model's chat template (SPEC §2)\n"
            "  --generate N                greedy continuation of up to N tokens (SPEC §3)\n"
            "  --stop-at-newline           end each continuation after its first line break\n"
            "  --batch-tokens N            token budget of one forward batch (default: sized to\n"
            "                              the GPU's free or the host's available memory)\n"
            "  --shard I/N                 take the pairs whose 0-based index %% N == I\n"
            "  --resume                    continue an interrupted run into the same file\n"
            "  --force                     overwrite an existing output file\n"
            "  --store f32|f16             storage dtype of float statistics (default f32); f16\n"
            "                              stores values beyond its range (|x| > 65504) as +-65504\n"
            "                              and counts them (a warning, attribute f16_saturated)\n"
            "  --strict                    stop at the first bad record instead of recording it\n"
            "  --progress auto|always|never  auto: one rewritten line on a terminal, else a\n"
            "                              complete line every 30 s; always: complete lines even\n"
            "                              on a terminal; both end with a summary line\n"
            "  --patterns-limit SIZE|none  refuse to start when --stats patterns would write more\n"
            "                              than SIZE (bytes, or with K, M, G, T; default 4G)\n"
            "  --threads N                 cpu threads (default: all cores)\n"
            "  --device N                  cuda device\n"
            "  --writer-threads N          threads compressing the output (default: the cores the\n"
            "                              compute leaves, at least 1)\n");
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "punctum run: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see punctum run --help)\n");
    return 2;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* "4G", "512M", "1000" (bytes) or "none" (0: no limit). */
static int parse_size(const char *s, int64_t *out) {
    if (!strcmp(s, "none")) {
        *out = 0;
        return 0;
    }
    char *end;
    double v = strtod(s, &end);
    const char *units = "KMGT";
    const char *u = *end ? strchr(units, *end) : NULL;
    if (end == s || v <= 0 || (*end && (!u || end[1])) || v > 1e18) return -1;
    for (int k = u ? (int)(u - units) + 1 : 0; k > 0; k--) v *= 1024;
    *out = (int64_t)v;
    return 0;
}

static int parse_stats(pt_run_opts *o, const char *list) {
    o->stat_mass = o->stat_last = o->stat_resid = o->stat_topk = o->stat_lens = o->stat_patterns = 0;
    o->stat_massive = 0;
    if (!strcmp(list, "none")) return 0;
    char *copy = strdup(list), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "mass")) o->stat_mass = 1;
        else if (!strcmp(t, "last")) o->stat_last = 1;
        else if (!strcmp(t, "resid")) o->stat_resid = 1;
        else if (!strcmp(t, "topk")) o->stat_topk = 1;
        else if (!strcmp(t, "lens")) o->stat_lens = 1;
        else if (!strcmp(t, "patterns")) o->stat_patterns = 1;
        else if (!strcmp(t, "massive")) o->stat_massive = 1;
        else rc = -1;
    }
    free(copy);
    return rc;
}

int pt_cmd_run(int argc, char **argv) {
    pt_run_opts o;
    memset(&o, 0, sizeof o);
    o.backend = "auto";
    o.stat_mass = o.stat_last = o.stat_resid = o.stat_topk = 1;
    o.positions = PT_POS_PUNCT;
    o.progress = -1;
    o.shard_n = 1;
    o.patterns_limit = PT_PATTERNS_LIMIT_DEFAULT;
    char *model_dir = NULL;

    enum { O_MODEL = 256, O_PAIRS, O_OUT, O_BACKEND, O_DTYPE, O_STATS, O_TOPK, O_ABLATE, O_POSITIONS,
           O_WINDOWS, O_PATCH, O_DERIVE, O_BATCH, O_SHARD, O_RESUME, O_FORCE, O_STORE, O_STRICT,
           O_PROGRESS, O_THREADS, O_DEVICE, O_PATTERNS_LIMIT, O_CHAT, O_WRITER_THREADS,
           O_GENERATE, O_STOP_NL, O_HELP };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL}, {"pairs", required_argument, 0, O_PAIRS},
        {"out", required_argument, 0, O_OUT}, {"backend", required_argument, 0, O_BACKEND},
        {"dtype", required_argument, 0, O_DTYPE}, {"stats", required_argument, 0, O_STATS},
        {"topk", required_argument, 0, O_TOPK}, {"ablate", required_argument, 0, O_ABLATE},
        {"positions", required_argument, 0, O_POSITIONS},
        {"windows", required_argument, 0, O_WINDOWS}, {"patch", required_argument, 0, O_PATCH},
        {"derive-b", required_argument, 0, O_DERIVE}, {"chat", no_argument, 0, O_CHAT},
        {"batch-tokens", required_argument, 0, O_BATCH}, {"shard", required_argument, 0, O_SHARD},
        {"resume", no_argument, 0, O_RESUME}, {"force", no_argument, 0, O_FORCE},
        {"store", required_argument, 0, O_STORE}, {"strict", no_argument, 0, O_STRICT},
        {"progress", required_argument, 0, O_PROGRESS},
        {"threads", required_argument, 0, O_THREADS}, {"device", required_argument, 0, O_DEVICE},
        {"patterns-limit", required_argument, 0, O_PATTERNS_LIMIT},
        {"writer-threads", required_argument, 0, O_WRITER_THREADS},
        {"generate", required_argument, 0, O_GENERATE},
        {"stop-at-newline", no_argument, 0, O_STOP_NL},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};

    /* the command line is recorded in the output file */
    size_t cl_len = 1;
    for (int i = 0; i < argc; i++) cl_len += strlen(argv[i]) + 1;
    char *cl = pt_xcalloc(1, cl_len + 8);
    strcat(cl, "punctum");
    for (int i = 0; i < argc; i++) {
        strcat(cl, " ");
        strcat(cl, argv[i]);
    }
    o.command_line = cl;

    int c, rc = 2;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: o.model_dir = optarg; break;
        case O_PAIRS: o.pairs_path = optarg; break;
        case O_OUT: o.out_path = optarg; break;
        case O_BACKEND:
            if (strcmp(optarg, "auto") && strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) {
                rc = usage_error("--backend %s: expected auto, cpu or cuda", optarg);
                goto out;
            }
            o.backend = optarg;
            break;
        case O_DTYPE:
            if (strcmp(optarg, "f32") && strcmp(optarg, "bf16") && strcmp(optarg, "f16")) {
                rc = usage_error("--dtype %s: expected f32, bf16 or f16", optarg);
                goto out;
            }
            o.dtype = optarg;
            break;
        case O_STATS:
            if (parse_stats(&o, optarg)) {
                rc = usage_error("--stats %s: expected a list from mass,last,resid,topk,lens,massive,patterns or none", optarg);
                goto out;
            }
            break;
        case O_TOPK:
            if (parse_int(optarg, 1, 1000000, &o.topk)) {
                rc = usage_error("--topk %s: expected a positive integer", optarg);
                goto out;
            }
            break;
        case O_ABLATE:
            if (!strcmp(optarg, "knockout")) o.ablate_knockout = 1;
            else if (!strcmp(optarg, "none")) o.ablate_knockout = 0;
            else {
                rc = usage_error("--ablate %s: expected knockout or none", optarg);
                goto out;
            }
            break;
        case O_POSITIONS:
            o.positions_given = 1;
            if (!strcmp(optarg, "all")) o.positions = PT_POS_ALL;
            else if (!strcmp(optarg, "punct")) o.positions = PT_POS_PUNCT;
            else if (!strcmp(optarg, "none")) o.positions = PT_POS_NONE;
            else if (!strncmp(optarg, "last:", 5) && !parse_int(optarg + 5, 1, 1 << 30, &o.positions_k))
                o.positions = PT_POS_LAST;
            else {
                rc = usage_error("--positions %s: expected all, punct, last:K or none", optarg);
                goto out;
            }
            break;
        case O_WINDOWS: o.windows = optarg; break;
        case O_PATCH:
            if (!strcmp(optarg, "resid")) o.patch_resid = 1;
            else if (!strcmp(optarg, "none")) o.patch_resid = 0;
            else {
                rc = usage_error("--patch %s: expected resid or none", optarg);
                goto out;
            }
            break;
        case O_DERIVE:
            if (!strncmp(optarg, "append:", 7) && optarg[7]) {
                o.derive = PT_DERIVE_APPEND;
                o.derive_str = optarg + 7;
            } else if (!strcmp(optarg, "strip-punct")) {
                o.derive = PT_DERIVE_STRIP_PUNCT;
            } else {
                rc = usage_error("--derive-b %s: expected append:STR or strip-punct", optarg);
                goto out;
            }
            break;
        case O_BATCH:
            if (parse_int(optarg, 1, 1 << 28, &o.batch_tokens)) {
                rc = usage_error("--batch-tokens %s: expected a positive integer", optarg);
                goto out;
            }
            break;
        case O_SHARD: {
            int i, n, k = 0;
            if (sscanf(optarg, "%d/%d%n", &i, &n, &k) != 2 || optarg[k] || n < 1 || i < 0 || i >= n) {
                rc = usage_error("--shard %s: expected I/N with 0 <= I < N", optarg);
                goto out;
            }
            o.shard_i = i;
            o.shard_n = n;
            break;
        }
        case O_CHAT: o.chat = 1; break;
        case O_RESUME: o.resume = 1; break;
        case O_FORCE: o.force = 1; break;
        case O_STORE:
            if (!strcmp(optarg, "f16")) o.store_f16 = 1;
            else if (!strcmp(optarg, "f32")) o.store_f16 = 0;
            else {
                rc = usage_error("--store %s: expected f32 or f16", optarg);
                goto out;
            }
            break;
        case O_STRICT: o.strict = 1; break;
        case O_GENERATE:
            if (parse_int(optarg, 0, 1 << 16, &o.generate)) {
                rc = usage_error("--generate %s: expected a number of tokens in [0, 65536]", optarg);
                goto out;
            }
            break;
        case O_STOP_NL: o.stop_at_newline = 1; break;
        case O_PROGRESS:
            if (!strcmp(optarg, "auto")) o.progress = -1;
            else if (!strcmp(optarg, "always")) o.progress = 1;
            else if (!strcmp(optarg, "never")) o.progress = 0;
            else {
                rc = usage_error("--progress %s: expected auto, always or never", optarg);
                goto out;
            }
            break;
        case O_THREADS:
            if (parse_int(optarg, 1, 4096, &o.threads)) {
                rc = usage_error("--threads %s: expected a positive integer", optarg);
                goto out;
            }
            break;
        case O_DEVICE:
            if (parse_int(optarg, 0, 1024, &o.device)) {
                rc = usage_error("--device %s: expected a device index", optarg);
                goto out;
            }
            o.device_given = 1;
            break;
        case O_PATTERNS_LIMIT:
            if (parse_size(optarg, &o.patterns_limit)) {
                rc = usage_error("--patterns-limit %s: expected a size such as 4G, or none", optarg);
                goto out;
            }
            break;
        case O_WRITER_THREADS:
            if (parse_int(optarg, 1, 64, &o.writer_threads)) {
                rc = usage_error("--writer-threads %s: expected 1 to 64", optarg);
                goto out;
            }
            break;
        case O_HELP:
            run_usage(stdout);
            rc = 0;
            goto out;
        default:
            rc = usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
            goto out;
        }
    }
    if (optind < argc) {
        rc = usage_error("unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (!o.model_dir || !o.pairs_path || !o.out_path) {
        rc = usage_error("%s", "--model, --pairs and --out are required");
        goto out;
    }
    if (o.resume && o.force) {
        rc = usage_error("%s", "--resume and --force exclude each other");
        goto out;
    }
    pt_error e;
    if (!(model_dir = pt_model_resolve(o.model_dir, &e))) {
        fprintf(stderr, "punctum run: %s\n", e.msg);
        rc = 2;
        goto out;
    }
    o.model_dir = model_dir;
    rc = pt_sweep_run(&o);
out:
    free(model_dir);
    free(cl);
    return rc;
}
