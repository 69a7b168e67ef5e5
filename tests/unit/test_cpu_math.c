/* pt_expf against double-precision exp over the range the softmax and SiLU use. */
#include <math.h>
#include <stdio.h>

#include "backend/cpu_math.h"

int main(void) {
    int failed = 0, passed = 0;
    double worst = 0;
    float worst_x = 0;
    for (float x = -87.0f; x <= 88.0f; x = nextafterf(x, 100.0f) + (fabsf(x) > 1 ? 1e-4f * fabsf(x) : 1e-5f)) {
        const double want = exp((double)x);
        const double got = pt_expf(x);
        const double ulp = nextafterf((float)want, INFINITY) - (float)want;
        const double err = fabs(got - want) / ulp;
        if (err > worst) worst = err, worst_x = x;
    }
    if (worst <= 2.0) passed++; else failed++;
    printf("pt_expf: worst error %.3f ulp at x = %.9g (limit 2)\n", worst, worst_x);
    /* exact values the softmax relies on */
    if (pt_expf(0.0f) == 1.0f) passed++; else failed++, printf("pt_expf(0) != 1\n");
    if (pt_expf(-1000.0f) < 1e-37f && pt_expf(-1000.0f) >= 0) passed++; else failed++, printf("pt_expf(-1000) not ~0\n");
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
