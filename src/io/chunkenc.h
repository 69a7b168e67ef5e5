/* punctum — one HDF5 chunk encoded as HDF5's own filter pipeline would (shuffle, then deflate),
 * but with libdeflate and without HDF5, so that chunks can be encoded on any thread and written
 * with H5Dwrite_chunk. Internal to src/io/.
 *
 * The output is what a dataset declared with H5Pset_shuffle + H5Pset_deflate stores: the
 * chunk's bytes byte-shuffled (byte k of every element, then byte k + 1, ...: HDF5's
 * H5Z_filter_shuffle), then one zlib stream (RFC 1950: header, deflate, Adler-32), so any
 * HDF5 reader (stock h5py, h5dump) decodes it with filter mask 0.
 *
 * Speed: float statistics have nearly random low-order bytes. After shuffling, those bytes are
 * whole leading planes of the chunk that deflate cannot shrink but spends most of its time on.
 * A coder may keep a leading run of such planes as deflate "stored" blocks (byte-aligned,
 * non-final) and compress only the rest; the result is still one valid zlib stream. Which
 * planes are stored is decided by pt_chunk_probe (each plane's start compressed alone). */
#ifndef PUNCTUM_IO_CHUNKENC_H
#define PUNCTUM_IO_CHUNKENC_H

#include <stddef.h>
#include <stdint.h>

/* What a chunk holds and how it is stored. */
typedef struct {
    size_t n_elems;   /* elements in the chunk (edge chunks: the full chunk, zero padded) */
    size_t src_esz;   /* bytes per element in memory */
    size_t store_esz; /* bytes per element in the file (2 when f32 is stored as f16) */
    int f32_to_f16;   /* src float32 stored as IEEE binary16, saturating at +-65504 */
} pt_chunk_fmt;

typedef struct pt_chunk_coder pt_chunk_coder;

/* A coder for one thread: a libdeflate compressor at `level` (1..12) and scratch space. */
pt_chunk_coder *pt_chunk_coder_new(int level);
void pt_chunk_coder_free(pt_chunk_coder *c);

/* The largest encoding of a chunk of `bytes` stored bytes. */
size_t pt_chunk_bound(size_t bytes);

/* Encode src (fmt->n_elems elements) into out (capacity pt_chunk_bound(stored bytes)).
 * stored_planes: leading shuffled byte planes kept as stored blocks (0: compress all; capped at
 * store_esz - 1). *saturated (may be NULL) grows by the number of finite values beyond f16's
 * range clamped to +-65504. Returns the encoded size, 0 on failure. */
size_t pt_chunk_encode(pt_chunk_coder *c, const pt_chunk_fmt *fmt, const void *src,
                       int stored_planes, void *out, size_t out_cap, int64_t *saturated);

/* After an encode, the number of leading planes that deflate would barely shrink (saves < 3% of
 * each plane's first 32 KiB): a stored_planes value for the chunks that follow. */
int pt_chunk_probe(pt_chunk_coder *c, const pt_chunk_fmt *fmt);

/* IEEE binary16 of a float, round to nearest even; finite values beyond the range saturate at
 * +-65504 (*saturated incremented) instead of becoming infinities. NaN and inf stay. */
uint16_t pt_f32_to_f16_sat(float f, int64_t *saturated);

#endif
