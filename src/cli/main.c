/* punctum — command-line entry point: dispatch to the subcommands (SPEC §4). */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "punctum/backend.h"
#include "punctum/cli.h"
#include "punctum/config.h"
#include "punctum/common.h"

static void usage(FILE *f) {
    fprintf(f,
            "punctum %s — attention and ablation statistics for transformer LMs over prompt pairs\n"
            "\n"
            "usage:\n"
            "  punctum run --model DIR --pairs FILE.jsonl --out FILE.h5 [options]\n"
            "  punctum inspect FILE.h5\n"
            "  punctum merge --out OUT.h5 [--allow-partial] PART.h5...\n"
            "  punctum tokenize --model DIR [--json] TEXT|-\n"
            "  punctum --help | --version\n"
            "\n"
            "`punctum run --help` lists the sweep's options.\n"
            "\n"
            "models (config.json model_type): " PT_MODEL_TYPES "\n"
            "\n"
            "exit status:\n"
            "  0        success\n"
            "  1        runtime failure (the work done so far is committed)\n"
            "  2        usage error, or --resume with different options\n"
            "  130/143  stopped by SIGINT/SIGTERM after a commit; repeat with --resume\n"
            "\n"
            "environment:\n"
            "  PUNCTUM_COMMIT_SECONDS  seconds between commits of a run (default 5)\n"
            "  PUNCTUM_FSYNC=0         skip fsync: a kill stays safe, a power cut may not\n"
            "  PUNCTUM_COMPACT_FANIN   segment files compacted at a time (default 8)\n"
            "  OPENBLAS_CORETYPE       cpu GEMM kernels (default: the best the CPU runs)\n",
            PUNCTUM_VERSION);
}

int main(int argc, char **argv) {
    /* OpenBLAS chose its kernels by CPU model when it loaded: a model newer than the library
     * gets SSE3 kernels on an AVX-512 CPU, 4x slower */
    pt_blas_restart_with_better_kernels(argv);
    /* HDF5's own exit-time cleanup can crash on a file whose close failed (a full disk); every
     * file is closed explicitly, so it is not needed */
    H5dont_atexit();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
#ifdef PT_HAVE_MPI
        printf("punctum %s (HDF5 format %d; MPI)\n", PUNCTUM_VERSION, PUNCTUM_FORMAT);
#else
        printf("punctum %s (HDF5 format %d)\n", PUNCTUM_VERSION, PUNCTUM_FORMAT);
#endif
        return 0;
    }
    if (!strcmp(cmd, "run")) return pt_cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "inspect")) return pt_cmd_inspect(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return pt_cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "merge")) return pt_cmd_merge(argc - 1, argv + 1);
    fprintf(stderr, "punctum: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
