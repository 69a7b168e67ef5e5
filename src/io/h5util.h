/* punctum — small HDF5 and file-system helpers shared by the writer, resume, merge and the
 * MPI view (src/io/). Internal: not part of the public headers. */
#ifndef PUNCTUM_IO_H5UTIL_H
#define PUNCTUM_IO_H5UTIL_H

#include <hdf5.h>

#include "punctum/table.h"
#include "punctum/writer.h"

/* Datatypes (caller closes): UTF-8 variable-length string; IEEE binary16 little endian. */
hid_t pt_h5_str_type(void);
hid_t pt_h5_f16_type(void);

/* Root/group attributes: create or replace. */
int pt_h5_put_attr(hid_t loc, const pt_attr *a);
int pt_h5_put_str(hid_t loc, const char *key, const char *val);
int pt_h5_put_i64(hid_t loc, const char *key, int64_t val);

/* Create the groups above a dataset path ("/a/b/c" -> /a, /a/b). */
int pt_h5_ensure_groups(hid_t file, const char *path);

/* A dataset in punctum's layout (SPEC §5): chunked (~256 KiB chunks, or at most max_chunk_rows
 * rows when > 0), extendible along axis 0, shuffle + gzip(deflate). `rows` initial rows. */
hid_t pt_h5_create_rows(hid_t file, const pt_colspec *s, hid_t ftype, int deflate, int64_t rows,
                        int64_t max_chunk_rows);

/* Rows (extent of axis 0) of a dataset; -1 if absent. */
int64_t pt_h5_nrows(hid_t file, const char *path);

/* The dataset's element type for in-memory copies without conversion (caller closes): a
 * memory VL string type for strings, else a copy of the file type. */
hid_t pt_h5_copy_type(hid_t dset);

/* Read / write rows [r0, r0 + n) of a dataset with memory type mt (all trailing dims). */
int pt_h5_read_rows(hid_t dset, hid_t mt, int64_t r0, int64_t n, void *buf);
int pt_h5_write_rows(hid_t dset, hid_t mt, int64_t r0, int64_t n, const void *buf);
/* Elements per row of a dataset (product of trailing dims) and its rank. */
size_t pt_h5_row_elems(hid_t dset, int *rank);

/* Copy rows [s0, s0 + n) of src to rows [d0, d0 + n) of dst (dst already large enough), in
 * blocks of at most ~block_bytes. Strings are copied as strings. *abort: stop early (-2). */
int pt_h5_copy_rows(hid_t src, int64_t s0, hid_t dst, int64_t d0, int64_t n, size_t block_bytes,
                    volatile const int *abort_flag);

/* A list of all dataset paths under a file (sorted as HDF5 iterates: by name). */
typedef struct {
    char **paths;
    int n, cap;
} pt_h5_dsets;
int pt_h5_list_dsets(hid_t file, pt_h5_dsets *out);
void pt_h5_dsets_free(pt_h5_dsets *d);

/* Durability: fsync a file by path; fsync a directory (its entries). 0 ok, -1 errno set. */
int pt_fsync_path(const char *path);
int pt_fsync_dir(const char *dir);
/* The directory part of a path ("." when none); malloc'd. */
char *pt_dirname(const char *path);
/* The last component of a path; points into path. */
const char *pt_basename(const char *path);
/* Remove a directory and the regular files directly in it (parts directories). */
int pt_remove_dir_files(const char *dir);

/* Quiet HDF5's error stack printing (our messages, not HDF5's dumps). */
void pt_h5_quiet(void);

#endif
