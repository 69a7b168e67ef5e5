/* punctum — which OpenBLAS kernels the cpu backend's GEMMs run on.
 *
 * Debian's OpenBLAS (a DYNAMIC_ARCH build) picks its kernel set from the CPU's model number once,
 * when the library loads. A CPU newer than the library (Emerald Rapids, model 207, under
 * Debian 12's OpenBLAS 0.3.21) is not in its table and gets "Prescott": SSE3 kernels, a quarter
 * of the AVX-512 ones' speed on the same cores. OPENBLAS_CORETYPE overrides the choice, but only
 * before the library loads, so the command re-executes itself with it set (main() calls
 * pt_blas_restart_with_better_kernels, below; so does bench_linear); here is
 * the part that decides, from the CPU's instruction sets rather than its model number. */
#include "punctum/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif

/* OpenBLAS extension, exported by every build (declared in its cblas.h only in some). */
char *openblas_get_corename(void);

enum { KERNELS_OTHER = 0, KERNELS_AVX2 = 1, KERNELS_AVX512 = 2 };

/* The instruction-set level of one of OpenBLAS's x86-64 kernel sets, by name. Sets not named
 * here (older CPUs, AMD's own pre-AVX2 sets) count as "other": replaced only where the CPU has
 * AVX2 or AVX-512, which their kernels do not use. */
static int kernels_level(const char *core) {
    static const char *const avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
    static const char *const avx2[] = {"Haswell", "Zen", "Excavator"};
    for (size_t i = 0; i < sizeof avx512 / sizeof avx512[0]; i++)
        if (!strcasecmp(core, avx512[i])) return KERNELS_AVX512;
    for (size_t i = 0; i < sizeof avx2 / sizeof avx2[0]; i++)
        if (!strcasecmp(core, avx2[i])) return KERNELS_AVX2;
    return KERNELS_OTHER;
}

/* What this CPU (and its OS: GCC's checks include the XSAVE state) can run. */
static int cpu_level(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512cd"))
        return KERNELS_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return KERNELS_AVX2;
#endif
    return KERNELS_OTHER;
}

const char *pt_blas_kernels(void) {
    const char *core = openblas_get_corename();
    return core && *core ? core : "unknown";
}

const char *pt_blas_better_kernels(void) {
    const int have = kernels_level(pt_blas_kernels()), can = cpu_level();
    if (can <= have) return NULL;
    return can == KERNELS_AVX512 ? "SkylakeX" : "Haswell";
}

void pt_blas_restart_with_better_kernels(char **argv) {
#ifdef RUNNING_ON_VALGRIND
    if (RUNNING_ON_VALGRIND) return;
#endif
    const char *better = getenv("OPENBLAS_CORETYPE") ? NULL : pt_blas_better_kernels();
    if (!better || setenv("OPENBLAS_CORETYPE", better, 1)) return;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE");
}
