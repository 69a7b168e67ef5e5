/* punctum — float32 exp for the CPU backend's hot loops (softmax, SiLU).
 *
 * libm's expf is a call per element and keeps loops scalar; this branch-free version (range
 * reduction by ln 2 with magic-number rounding, degree-6 polynomial, exponent by bit shift)
 * lets the compiler vectorise the loops at -O3 without -ffast-math. Accuracy: within 2 ulp of
 * the correctly rounded result over [-87, 88] (tests/unit/test_cpu_math.c checks it). */
#ifndef PUNCTUM_CPU_MATH_H
#define PUNCTUM_CPU_MATH_H

/* Hot loops compiled three times, for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the
 * baseline the build targets, the version chosen once at load time (GCC target_clones): Debian's
 * binaries run on any x86-64. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PT_CLONES
#endif

#include <stdint.h>
#include <string.h>

static inline float pt_expf(float x) {
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    /* clamp to [-87, 88] with compare masks (a ternary here stops the vectoriser at -O3) */
    uint32_t xb, lo_b = 0xc2ae0000u /* -87.0f */, hi_b = 0x42b00000u /* 88.0f */;
    memcpy(&xb, &x, sizeof xb);
    const uint32_t below = 0u - (uint32_t)(x < -87.0f), above = 0u - (uint32_t)(x > 88.0f);
    xb = (xb & ~below & ~above) | (lo_b & below) | (hi_b & above);
    memcpy(&x, &xb, sizeof x);
    const float kf = (x * log2e + magic) - magic;
    const float r = (x - kf * ln2_hi) - kf * ln2_lo;
    /* exp(r) on |r| <= ln2/2: Taylor-like minimax coefficients (Cephes) */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t k = (int32_t)kf;
    const uint32_t bits = (uint32_t)(k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#endif
