/* punctum — the view an mpirun job leaves (SPEC §4 "Under mpirun"): OUT.h5, HDF5 virtual
 * datasets over the rank files OUT.rankR.h5, in input order. Written by rank 0 (io/job.c) when
 * every rank has finished. Internal to src/io/; depends on nothing of the job itself. */
#ifndef PUNCTUM_IO_MPIVIEW_H
#define PUNCTUM_IO_MPIVIEW_H

#include "punctum/common.h"

/* Rank r's output of a job of `size` ranks: OUT itself when size <= 1, else OUT.rankR.h5
 * (OUT.rankR when OUT has no .h5 suffix). malloc'd. */
char *pt_rank_file(const char *out, int rank, int size);

/* The view OUT over the complete rank files of a job of `size` ranks. 0, or -1 with e set. */
int pt_mpi_view_write(const char *out, int size, pt_error *e);

#endif
