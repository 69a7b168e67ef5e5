/* libFuzzer harness: the safetensors header validator on arbitrary bytes.
 * Anything accepted must be safe to use: every tensor's bytes are read (and converted to float
 * where the dtype allows), and every name is found again by lookup. */
#include "punctum/safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* a private copy, exactly `size` bytes long, so ASan catches any read past the end */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    pt_st_file f;
    pt_error e;
    if (pt_st_parse_buffer(copy, size, "fuzz.safetensors", &f, &e) == 0) {
        pt_st_set s = {&f, 1};
        size_t total = 0;
        for (size_t i = 0; i < f.n_tensors; i++) {
            const pt_st_tensor *t = &f.tensors[i];
            if (pt_st_find(&s, t->name) != t) abort();
            if (t->nbytes != t->nelem * pt_dtype_size(t->dtype)) abort();
            if ((const uint8_t *)t->data < copy || (const uint8_t *)t->data + t->nbytes > copy + size)
                abort();
            total += t->nbytes;
            volatile uint8_t sink = 0;
            for (size_t k = 0; k < t->nbytes; k++) sink ^= ((const uint8_t *)t->data)[k];
            (void)sink;
            if (t->dtype == PT_DT_F32 || t->dtype == PT_DT_F16 || t->dtype == PT_DT_BF16) {
                float *out = malloc(t->nelem ? t->nelem * sizeof(float) : 1);
                if (out) {
                    if (pt_st_to_f32(t, out, &e) != 0) abort();
                    free(out);
                }
            } else if (pt_st_to_f32(t, NULL, &e) == 0) {
                abort(); /* other dtypes must be refused (without touching dst) */
            }
        }
        if (total > size) abort();
        pt_st_close(&f);
    } else if (f.tensors || f.n_tensors || f.path || !memchr(e.msg, '\0', sizeof e.msg) ||
               strchr(e.msg, '\n')) {
        abort(); /* a failure leaves the file empty and gives a one-line message */
    }
    free(copy);
    return 0;
}
