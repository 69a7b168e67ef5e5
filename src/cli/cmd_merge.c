/* punctum merge — one self-contained file from shard outputs (SPEC §4); the work is in
 * io/merge.c. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "io/merge.h"
#include "punctum/cli.h"

static void merge_usage(FILE *f) {
    fprintf(f,
            "usage: punctum merge --out OUT.h5 [--allow-partial] [--force] PART.h5...\n"
            "  One self-contained file from the outputs of `punctum run --shard I/N` (or the rank\n"
            "  files / view of an mpirun job): pairs back in input order, every index renumbered.\n"
            "  The parts must come from the same model, input and options.\n"
            "  --allow-partial   also merge unfinished runs and an incomplete set of shards\n"
            "  --force           overwrite an existing OUT.h5\n");
}

int pt_cmd_merge(int argc, char **argv) {
    enum { O_OUT = 256, O_PARTIAL, O_FORCE, O_HELP };
    static const struct option opts[] = {{"out", required_argument, 0, O_OUT},
                                         {"allow-partial", no_argument, 0, O_PARTIAL},
                                         {"force", no_argument, 0, O_FORCE},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    const char *out = NULL;
    int partial = 0, force = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_OUT:
            out = optarg;
            break;
        case O_PARTIAL:
            partial = 1;
            break;
        case O_FORCE:
            force = 1;
            break;
        case O_HELP:
            merge_usage(stdout);
            return 0;
        default:
            fprintf(stderr,
                    "punctum merge: unknown or incomplete option '%s' (see punctum merge --help)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (!out || optind >= argc) {
        fprintf(stderr, "punctum merge: --out and at least one PART.h5 are required (see punctum "
                        "merge --help)\n");
        return 2;
    }
    pt_error e = {{0}};
    int rc = pt_merge_files(out, argv + optind, argc - optind, partial, force, &e);
    if (rc) fprintf(stderr, "punctum merge: %s\n", e.msg);
    return rc;
}
