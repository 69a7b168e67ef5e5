/* punctum — safetensors reader: memory-mapped, every header validated before use.
 *
 * Validation (all before any tensor is used): 8-byte little-endian header length that fits in
 * the file and is at most PT_ST_MAX_HEADER; the header is a JSON object; every entry other than
 * "__metadata__" has a known dtype string, a shape of non-negative integers, and data_offsets
 * [begin, end] with end - begin == product(shape) * dtype size (overflow-checked); names are
 * unique; sorted by begin, the spans are contiguous, non-overlapping, start at 0 and end exactly
 * at the end of the file's data section. */
#ifndef PUNCTUM_SAFETENSORS_H
#define PUNCTUM_SAFETENSORS_H

#include "punctum/common.h"

#define PT_ST_MAX_HEADER (100u * 1024u * 1024u)
#define PT_ST_MAX_DIMS 8

typedef enum {
    PT_DT_BOOL = 0, PT_DT_U8, PT_DT_I8, PT_DT_I16, PT_DT_U16, PT_DT_F16, PT_DT_BF16, PT_DT_I32,
    PT_DT_U32, PT_DT_F32, PT_DT_F64, PT_DT_I64, PT_DT_U64, PT_DT_F8_E4M3, PT_DT_F8_E5M2
} pt_dtype;

size_t pt_dtype_size(pt_dtype dt);
const char *pt_dtype_name(pt_dtype dt);

typedef struct {
    char *name;
    pt_dtype dtype;
    int ndim;
    int64_t shape[PT_ST_MAX_DIMS];
    size_t nelem;
    const void *data;      /* points into the mapping (or the caller's buffer for parse_buffer) */
    size_t nbytes;
    const char *file;      /* path of the shard it lives in (owned by the pt_st_file) */
} pt_st_tensor;

typedef struct {
    char *path;
    void *map;             /* mmap of the whole file (NULL for a buffer parse) */
    size_t map_len;
    pt_st_tensor *tensors;
    size_t n_tensors;
} pt_st_file;

/* Map and validate one .safetensors file. On error, *f is left empty and e names the file. */
int pt_st_open(const char *path, pt_st_file *f, pt_error *e);
/* Validate a file image already in memory (fuzzing, tests); tensors point into buf. */
int pt_st_parse_buffer(const void *buf, size_t len, const char *name, pt_st_file *f, pt_error *e);
void pt_st_close(pt_st_file *f);

/* A model's weights: one file, or the shards listed by model.safetensors.index.json. */
typedef struct {
    pt_st_file *files;
    size_t n_files;
} pt_st_set;

/* Open DIR/model.safetensors, or DIR/model.safetensors.index.json and every shard it names
 * (validating that the index's weight_map points at existing shards that contain the tensor).
 * Tensor names must be unique across shards. */
int pt_st_set_open(const char *model_dir, pt_st_set *s, pt_error *e);
void pt_st_set_close(pt_st_set *s);
/* NULL if absent. */
const pt_st_tensor *pt_st_find(const pt_st_set *s, const char *name);

/* Copy a tensor into float32 (F32, F16, BF16 only; others are an error naming the tensor). */
int pt_st_to_f32(const pt_st_tensor *t, float *dst, pt_error *e);

#endif
