/* punctum — the cpu backend's linear for a few rows (decode steps, small variant batches).
 *
 * At a handful of rows a GEMM library spends its time packing the weight matrix, not
 * multiplying: OpenBLAS sgemm reaches ~5-8 GFLOP/s at 8 rows on 2 cores where it reaches ~55 on
 * a prompt. These kernels stream each weight row once for all rows of x instead, converting
 * F16/BF16 weights chunk by chunk on the fly, so a decode step costs one pass over the weights. */
#ifndef PUNCTUM_CPU_ROWS_H
#define PUNCTUM_CPU_ROWS_H

#include "punctum/model.h"

/* At most this many rows take the row-streaming path. OpenBLAS sgemm (its own best kernels)
 * packs the weights on every call: at 16 rows the AVX-512 kernels here are 1.4-1.8x it with
 * float32 weights and 2.4-3.3x with BF16 (which the GEMM path converts first), at 32 rows
 * 0.96-1.2x with float32 and 1.3-2.2x with BF16; beyond, sgemm catches up (bench_linear on a
 * 2-core Xeon; the AVX2 kernel against OpenBLAS's Haswell kernels crosses over alike;
 * benchmarks/RESULTS.md "Decode steps of 17-32 rows"). */
#define PT_CPU_FEW_ROWS 32

/* y[r, 0 .. p->out) = x[r, 0 .. in) W_p^T for r < n (n <= PT_CPU_FEW_ROWS), ldy = row stride of
 * y, added to what y holds when accumulate is set; W_p [out, in], or [in, out] when
 * p->transposed, in any dtype and alignment. Threads over output rows with OpenMP. */
void pt_cpu_rows_linear(const float *x, int n, int in, const pt_linear_part *p, float *y, int ldy,
                        int accumulate);

#endif
