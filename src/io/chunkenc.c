/* punctum — HDF5 shuffle + deflate chunks with libdeflate (see chunkenc.h). */
#include "io/chunkenc.h"

#include <libdeflate.h>
#include <stdlib.h>
#include <string.h>

#include "punctum/common.h"

#define STORED_MAX 65535u /* bytes in one deflate stored block */
#define PROBE_MAX 32768u  /* bytes of a plane probed: deflate's window */
#define PROBE_MIN_PLANE 2048u

struct pt_chunk_coder {
    struct libdeflate_compressor *z;
    unsigned char *shuf; /* the shuffled chunk of the last encode */
    size_t shuf_cap, shuf_len, n_elems, esz;
    unsigned char probe_out[PROBE_MAX + 64];
};

pt_chunk_coder *pt_chunk_coder_new(int level) {
    struct libdeflate_compressor *z = libdeflate_alloc_compressor(level);
    if (!z) return NULL;
    pt_chunk_coder *c = pt_xcalloc(1, sizeof *c);
    c->z = z;
    return c;
}

void pt_chunk_coder_free(pt_chunk_coder *c) {
    if (!c) return;
    libdeflate_free_compressor(c->z);
    free(c->shuf);
    free(c);
}

static size_t stored_size(size_t n) {
    return n + 5 * (n / STORED_MAX + 1);
}

size_t pt_chunk_bound(size_t bytes) {
    return 2 + stored_size(bytes) + 5 + 4; /* header, stored prefix and rest, Adler-32 */
}

uint16_t pt_f32_to_f16_sat(float f, int64_t *saturated) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t au = u & 0x7fffffffu;
    /* finite and at or above 65520 (rounds to inf): clamp to the largest half, 65504 */
    if (au >= 0x477ff000u && au < 0x7f800000u) {
        if (saturated) (*saturated)++;
        return (uint16_t)(((u >> 16) & 0x8000u) | 0x7bffu);
    }
    return pt_f32_to_f16(f);
}

/* HDF5's shuffle: byte k of element i goes to k * n + i. */
static void shuffle(const unsigned char *src, unsigned char *dst, size_t n, size_t esz) {
    if (esz == 4) {
        unsigned char *p0 = dst, *p1 = dst + n, *p2 = dst + 2 * n, *p3 = dst + 3 * n;
        for (size_t i = 0; i < n; i++, src += 4) {
            p0[i] = src[0];
            p1[i] = src[1];
            p2[i] = src[2];
            p3[i] = src[3];
        }
        return;
    }
    for (size_t k = 0; k < esz; k++) {
        unsigned char *p = dst + k * n;
        const unsigned char *s = src + k;
        for (size_t i = 0; i < n; i++, s += esz) p[i] = *s;
    }
}

/* float32 -> binary16 (saturating), shuffled into two planes. */
static int64_t shuffle_f16(const float *src, unsigned char *dst, size_t n) {
    int64_t sat = 0;
    unsigned char *lo = dst, *hi = dst + n;
    for (size_t i = 0; i < n; i++) {
        const uint16_t h = pt_f32_to_f16_sat(src[i], &sat);
        lo[i] = (unsigned char)(h & 0xff);
        hi[i] = (unsigned char)(h >> 8);
    }
    return sat;
}

/* The chunk's stored bytes, shuffled as HDF5 would, in c->shuf. */
static int prepare(pt_chunk_coder *c, const pt_chunk_fmt *fmt, const void *src,
                   int64_t *saturated) {
    size_t bytes;
    if (pt_mul_size(fmt->n_elems, fmt->store_esz, &bytes)) return -1;
    if (bytes > c->shuf_cap) {
        free(c->shuf);
        c->shuf = malloc(bytes);
        c->shuf_cap = c->shuf ? bytes : 0;
        if (!c->shuf) return -1;
    }
    c->shuf_len = bytes;
    c->n_elems = fmt->n_elems;
    c->esz = fmt->store_esz;
    if (fmt->f32_to_f16) {
        const int64_t sat = shuffle_f16(src, c->shuf, fmt->n_elems);
        if (saturated) *saturated += sat;
    } else if (fmt->store_esz > 1 && fmt->n_elems > 1) {
        shuffle(src, c->shuf, fmt->n_elems, fmt->store_esz);
    } else {
        memcpy(c->shuf, src, bytes); /* HDF5 leaves 1-byte or single elements as they are */
    }
    return 0;
}

static unsigned char *put_stored(unsigned char *o, const unsigned char *p, size_t n, int final) {
    do {
        const size_t m = n < STORED_MAX ? n : STORED_MAX;
        const int last = final && m == n;
        *o++ = (unsigned char)(last ? 1 : 0); /* BFINAL, BTYPE 00, padding to the byte */
        o[0] = (unsigned char)(m & 0xff);
        o[1] = (unsigned char)(m >> 8);
        o[2] = (unsigned char)(~m & 0xff);
        o[3] = (unsigned char)((~m >> 8) & 0xff);
        o += 4;
        memcpy(o, p, m);
        o += m, p += m, n -= m;
    } while (n > 0);
    return o;
}

size_t pt_chunk_encode(pt_chunk_coder *c, const pt_chunk_fmt *fmt, const void *src,
                       int stored_planes, void *out, size_t out_cap, int64_t *saturated) {
    if (prepare(c, fmt, src, saturated)) return 0;
    const size_t n = c->shuf_len;
    if (out_cap < pt_chunk_bound(n)) return 0;
    const int shuffled = fmt->store_esz > 1 && fmt->n_elems > 1;
    if (!shuffled || stored_planes < 0) stored_planes = 0;
    if (shuffled && (size_t)stored_planes > fmt->store_esz - 1)
        stored_planes = (int)fmt->store_esz - 1;
    const size_t prefix = (size_t)stored_planes * fmt->n_elems;
    unsigned char *o = out;
    *o++ = 0x78; /* zlib: deflate, 32 KiB window; (0x78 << 8 | 0x01) % 31 == 0 */
    *o++ = 0x01;
    if (prefix > 0) o = put_stored(o, c->shuf, prefix, 0);
    const size_t room = (size_t)((unsigned char *)out + out_cap - o) - 4;
    size_t z = libdeflate_deflate_compress(c->z, c->shuf + prefix, n - prefix, o, room);
    if (z == 0 || z > stored_size(n - prefix)) /* incompressible: all stored */
        o = put_stored(o, c->shuf + prefix, n - prefix, 1);
    else
        o += z;
    const uint32_t a = libdeflate_adler32(1, c->shuf, n);
    o[0] = (unsigned char)(a >> 24);
    o[1] = (unsigned char)(a >> 16);
    o[2] = (unsigned char)(a >> 8);
    o[3] = (unsigned char)a;
    return (size_t)(o + 4 - (unsigned char *)out);
}

/* Compressed size of a plane's first PROBE_MAX bytes (repeats within deflate's window count). */
static size_t probe_plane(pt_chunk_coder *c, const unsigned char *p, size_t n, size_t *sampled) {
    *sampled = n < PROBE_MAX ? n : PROBE_MAX;
    const size_t z =
        libdeflate_deflate_compress(c->z, p, *sampled, c->probe_out, sizeof c->probe_out);
    return z ? z : *sampled;
}

int pt_chunk_probe(pt_chunk_coder *c, const pt_chunk_fmt *fmt) {
    if (fmt->store_esz < 2 || c->n_elems < PROBE_MIN_PLANE || c->esz != fmt->store_esz) return 0;
    int planes = 0;
    for (size_t k = 0; k + 1 < c->esz; k++) {
        size_t sampled;
        const size_t z = probe_plane(c, c->shuf + k * c->n_elems, c->n_elems, &sampled);
        if (z * 100 < sampled * 97) break; /* deflate saves >= 3%: compress from here on */
        planes++;
    }
    return planes;
}
