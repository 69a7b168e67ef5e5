/* punctum — a sweep as a job of one or more MPI ranks (see job.h). */
#include "io/job.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef PT_HAVE_MPI
#include <mpi.h>
#endif

#include "io/mpiview.h"
#include "io/outstate.h"

enum { TAG_PROGRESS = 17, TAG_DONE = 18 };

/* The number of processes a launcher started, from its environment (1 if none). */
static int launcher_size(const char **which) {
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS",
                                 NULL};
    for (int k = 0; vars[k]; k++) {
        const char *v = getenv(vars[k]);
        if (v && atoi(v) > 1) {
            *which = vars[k];
            return atoi(v);
        }
    }
    /* PMIx (e.g. srun --mpi=pmix) publishes a rank, the size comes from Slurm */
    if (getenv("PMIX_RANK") || getenv("PMI_RANK")) {
        const char *v = getenv("SLURM_STEP_NUM_TASKS");
        if (!v) v = getenv("SLURM_NTASKS");
        if (v && atoi(v) > 1) {
            *which = "PMIX_RANK/SLURM_STEP_NUM_TASKS";
            return atoi(v);
        }
    }
    return 1;
}

int pt_job_init(pt_job *J, const pt_run_opts *o, pt_error *e) {
    (void)o;
    memset(J, 0, sizeof *J);
    J->size = J->local_size = 1;
    J->hi = INT64_MAX;
    const char *which = NULL;
    const int n = launcher_size(&which);
    if (n <= 1) return 0;
#ifdef PT_HAVE_MPI
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        pt_fail(e, "MPI_Init failed (started by a launcher with %d processes)", n);
        return 1;
    }
    J->mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &J->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &J->size);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, J->rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &J->local_rank);
    MPI_Comm_size(node, &J->local_size);
    MPI_Comm_free(&node);
    return 0;
#else
    pt_fail(
        e,
        "started by mpirun/srun with %d processes (%s), but this punctum was built without MPI: "
        "it would run %d identical sweeps. Rebuild with MPI (libopenmpi-dev) or use --shard I/N",
        n, which, n);
    return 2;
#endif
}

char *pt_job_out_path(const pt_job *J, const char *out) {
    return pt_rank_file(out, J->rank, J->size);
}

int pt_job_outputs_exist(const pt_job *J, const char *out, const char *my_out) {
    struct stat st;
    if (stat(my_out, &st) == 0) return 1;
    return J->size > 1 && J->rank == 0 && stat(out, &st) == 0;
}

static int gpus_on_node(void) {
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    if (v && *v) {
        int n = 1;
        for (const char *p = v; *p; p++) n += *p == ',';
        return n;
    }
    int n = 0;
    DIR *d = opendir("/dev");
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (!strncmp(de->d_name, "nvidia", 6) && de->d_name[6] >= '0' && de->d_name[6] <= '9')
                n++;
        closedir(d);
    }
    return n > 0 ? n : 1;
}

int pt_job_device(const pt_job *J, int device) {
    if (J->size <= 1) return device;
    return (device + J->local_rank) % gpus_on_node();
}

int pt_job_threads(const pt_job *J, int threads) {
    if (threads > 0 || J->size <= 1) return threads;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    long t = cores / (J->local_size > 0 ? J->local_size : 1);
    return t < 1 ? 1 : (int)t;
}

int pt_job_agree(pt_job *J, int rc, pt_error *e) {
    if (!J->mpi) return rc;
#ifdef PT_HAVE_MPI
    int worst = 0, first = J->size, mine = rc ? J->rank : J->size;
    MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (worst && J->rank != first && e) e->msg[0] = 0;
    if (worst && J->rank == first && e && J->rank != 0 && e->msg[0]) {
        char tmp[sizeof e->msg + 32];
        snprintf(tmp, sizeof tmp, "rank %d: %.480s", J->rank, e->msg);
        snprintf(e->msg, sizeof e->msg, "%.500s", tmp);
    }
    return worst;
#else
    (void)e;
    return rc;
#endif
}

void pt_job_block(pt_job *J, int64_t n, int64_t *lo, int64_t *hi) {
    if (n < 0) n = 0;
    J->n_records = n;
    J->lo = *lo = n * J->rank / J->size;
    J->hi = *hi = n * (J->rank + 1) / J->size;
}

#ifdef PT_HAVE_MPI
static int64_t *g_prog; /* rank 0: [size][3] latest reports */
static int64_t g_sendbuf[3];
static MPI_Request g_req = MPI_REQUEST_NULL;

static int g_done; /* DONE messages received (they may arrive while rank 0 still computes) */

static void drain(pt_job *J, int until_all_done) {
    for (;;) {
        int flag = 0;
        MPI_Status s;
        if (until_all_done) {
            if (g_done >= J->size - 1) return;
            MPI_Probe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &s);
            flag = 1;
        } else {
            MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &s);
        }
        if (!flag) return;
        if (s.MPI_TAG != TAG_PROGRESS && s.MPI_TAG != TAG_DONE) return; /* not ours */
        int64_t v[3];
        MPI_Recv(v, 3, MPI_INT64_T, s.MPI_SOURCE, s.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        memcpy(g_prog + 3 * s.MPI_SOURCE, v, sizeof v);
        if (s.MPI_TAG == TAG_DONE) g_done++;
    }
}
#endif

#ifdef PT_HAVE_MPI
static int64_t g_final[3]; /* this rank's final numbers (sent with DONE) */
#endif

void pt_job_progress(pt_job *J, int64_t *seen, int64_t *toks, int64_t *start, int final) {
    if (!J->mpi) return;
#ifdef PT_HAVE_MPI
    if (final) {
        g_final[0] = *seen, g_final[1] = *toks, g_final[2] = *start;
        if (J->rank != 0) return;
    }
    if (J->rank != 0) {
        int flag = 1;
        if (g_req != MPI_REQUEST_NULL) MPI_Test(&g_req, &flag, MPI_STATUS_IGNORE);
        if (!flag) return;
        g_sendbuf[0] = *seen, g_sendbuf[1] = *toks, g_sendbuf[2] = *start;
        MPI_Isend(g_sendbuf, 3, MPI_INT64_T, 0, TAG_PROGRESS, MPI_COMM_WORLD, &g_req);
        return;
    }
    if (!g_prog) g_prog = pt_xcalloc((size_t)J->size * 3, sizeof(int64_t));
    drain(J, 0);
    g_prog[0] = *seen, g_prog[1] = *toks, g_prog[2] = *start;
    int64_t a = 0, b = 0, c = 0;
    for (int r = 0; r < J->size; r++)
        a += g_prog[3 * r], b += g_prog[3 * r + 1], c += g_prog[3 * r + 2];
    *seen = a, *toks = b, *start = c;
#else
    (void)seen, (void)toks, (void)start, (void) final;
#endif
}

void pt_job_report_resume(pt_job *J, int64_t committed, int complete) {
    if (!J->mpi) return;
#ifdef PT_HAVE_MPI
    int64_t mine[4] = {committed, complete, J->lo, J->hi};
    int64_t *all = J->rank == 0 ? pt_xmalloc((size_t)J->size * 4 * sizeof(int64_t)) : NULL;
    MPI_Gather(mine, 4, MPI_INT64_T, all, 4, MPI_INT64_T, 0, MPI_COMM_WORLD);
    if (J->rank == 0) {
        for (int r = 0; r < J->size; r++) {
            const int64_t *a = all + 4 * r;
            if (a[1]) continue;
            if (a[0] < 0)
                fprintf(stderr,
                        "punctum: rank %d (shard %d/%d: records %lld..%lld) left no output; "
                        "starting it\n",
                        r, r, J->size, (long long)a[2], (long long)a[3] - 1);
            else
                fprintf(stderr,
                        "punctum: rank %d (shard %d/%d: records %lld..%lld) was unfinished; "
                        "resuming it from "
                        "%lld committed pairs\n",
                        r, r, J->size, (long long)a[2], (long long)a[3] - 1, (long long)a[0]);
        }
        free(all);
    }
#else
    (void)committed, (void)complete;
#endif
}

int pt_job_finish(pt_job *J, const char *out, int rc, int show_progress, pt_error *e) {
    if (!J->mpi) return rc;
#ifdef PT_HAVE_MPI
    /* progress messages end with one DONE per rank */
    if (J->rank != 0) {
        if (g_req != MPI_REQUEST_NULL) MPI_Wait(&g_req, MPI_STATUS_IGNORE);
        MPI_Send(g_final, 3, MPI_INT64_T, 0, TAG_DONE, MPI_COMM_WORLD);
    } else {
        if (!g_prog) g_prog = pt_xcalloc((size_t)J->size * 3, sizeof(int64_t));
        memcpy(g_prog, g_final, sizeof g_final);
        drain(J, 1);
    }
    int64_t mine[4] = {rc, J->lo, J->hi, J->n_records};
    int64_t *all = J->rank == 0 ? pt_xmalloc((size_t)J->size * 4 * sizeof(int64_t)) : NULL;
    MPI_Gather(mine, 4, MPI_INT64_T, all, 4, MPI_INT64_T, 0, MPI_COMM_WORLD);
    int final = rc;
    if (J->rank == 0) {
        int failed = 0;
        for (int r = 0; r < J->size; r++) {
            const int64_t *a = all + 4 * r;
            if (a[0] == 0) continue;
            failed++;
            char *rp = NULL;
            pt_job tmp = *J;
            tmp.rank = r;
            rp = pt_job_out_path(&tmp, out);
            const char *how = a[0] == 130   ? "was interrupted (SIGINT)"
                              : a[0] == 143 ? "was terminated (SIGTERM)"
                                            : "failed";
            fprintf(stderr,
                    "punctum: rank %d (shard %d/%d: records %lld..%lld) %s with exit %lld; its "
                    "committed "
                    "work is in %s; re-run the same command with --resume to finish it\n",
                    r, r, J->size, (long long)a[1], (long long)a[2] - 1, how, (long long)a[0], rp);
            free(rp);
            if (a[0] > final) final = (int)a[0];
        }
        if (!failed) {
            pt_error ve;
            if (pt_mpi_view_write(out, J->size, &ve)) {
                fprintf(stderr, "punctum: %s\n", ve.msg);
                final = 1;
            } else if (show_progress) {
                int64_t pairs = 0;
                for (int r = 0; r < J->size; r++) pairs += g_prog[3 * r];
                fprintf(stderr,
                        "\n[punctum] %d ranks: %lld pairs -> %s (a view over its rank files)\n",
                        J->size, (long long)pairs, out);
            }
        } else if (final == 0) {
            final = 1;
        }
        free(all);
    }
    MPI_Bcast(&final, 1, MPI_INT, 0, MPI_COMM_WORLD);
    (void)e;
    return final;
#else
    (void)out, (void)e, (void)show_progress;
    return rc;
#endif
}

void pt_job_abort(pt_job *J, int rc) {
#ifdef PT_HAVE_MPI
    if (J->mpi) MPI_Abort(MPI_COMM_WORLD, rc);
#else
    (void)J, (void)rc;
#endif
}

void pt_job_finalize(pt_job *J) {
#ifdef PT_HAVE_MPI
    if (J->mpi) {
        free(g_prog);
        g_prog = NULL;
        MPI_Finalize();
        J->mpi = 0;
    }
#else
    (void)J;
#endif
}
