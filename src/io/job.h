/* punctum — one sweep as a job of one or more processes (SPEC §4 "Under mpirun").
 *
 * Without mpirun a job is the one process. Under `mpirun -np N` (a build with MPI, PT_HAVE_MPI)
 * rank R takes a contiguous block of the input's records (rank R of N: records
 * [R*n/N, (R+1)*n/N)), writes OUT.rankR.h5 with the same commit protocol as a plain run, and
 * when every rank has finished, rank 0 writes OUT.h5: a view (HDF5 virtual datasets) over the
 * rank files whose rows are in input order. Contiguous blocks (not round robin) are what lets
 * the view be one mapping per rank and dataset. A build without MPI that finds itself started
 * by mpirun (or srun) with more than one process refuses to run N identical sweeps. */
#ifndef PUNCTUM_IO_JOB_H
#define PUNCTUM_IO_JOB_H

#include "punctum/sweep.h"

typedef struct {
    int size, rank;             /* 1, 0 without MPI */
    int local_rank, local_size; /* ranks on this node */
    int mpi;                    /* MPI initialised by us */
    int64_t lo, hi;             /* this rank's block of records */
    int64_t n_records;
} pt_job;

/* 0, or an exit code with e set (2: launched by mpirun but built without MPI). */
int pt_job_init(pt_job *J, const pt_run_opts *o, pt_error *e);
/* This process's output: OUT itself, or OUT.rankR.h5 under mpirun (malloc'd). */
char *pt_job_out_path(const pt_job *J, const char *out);
/* Does any output of this job exist already (this rank's file, or OUT.h5 on rank 0)? */
int pt_job_outputs_exist(const pt_job *J, const char *out, const char *my_out);
/* cuda device for this rank (rank % GPUs on the node, offset by --device) and cpu threads
 * (--threads, else the node's cores split evenly among its ranks; 0: backend default). */
int pt_job_device(const pt_job *J, int device);
int pt_job_threads(const pt_job *J, int threads);
/* Agree on a validation outcome: the largest exit code of all ranks; only the lowest failing
 * rank keeps its message in e (so one rank prints it). */
int pt_job_agree(pt_job *J, int rc, pt_error *e);
/* This rank's block of records [lo, hi) out of n. */
void pt_job_block(pt_job *J, int64_t n, int64_t *lo, int64_t *hi);
/* Progress for the whole job: every rank reports, rank 0 gets the sums. */
void pt_job_progress(pt_job *J, int64_t *seen, int64_t *toks, int64_t *start, int final);
/* --resume: rank 0 reports every rank an earlier job left unfinished (committed pairs of its
 * file; -1: no file yet) with its block. */
void pt_job_report_resume(pt_job *J, int64_t committed, int complete);
/* The end of a rank's sweep (rc its exit code): rank 0 reports failed ranks with their
 * blocks and, when all succeeded, writes the view OUT (and a summary line with progress on).
 * Returns the job's exit code. */
int pt_job_finish(pt_job *J, const char *out, int rc, int show_progress, pt_error *e);
void pt_job_abort(pt_job *J, int rc);
void pt_job_finalize(pt_job *J);

#endif
