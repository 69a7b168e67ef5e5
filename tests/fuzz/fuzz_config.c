/* libFuzzer harness: config.json parsing on arbitrary bytes. An accepted config must satisfy
 * every invariant the rest of the engine relies on. */
#include "punctum/config.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    pt_config c;
    pt_error e;
    if (pt_config_parse(copy, size, "config.json", &c, &e) == 0) {
        if (c.n_layers < 1 || c.d_model < 1 || c.n_heads < 1 || c.n_kv_heads < 1 || c.head_dim < 1 ||
            c.d_ff < 1 || c.vocab_size < 1 || c.max_positions < 1)
            abort();
        if (c.n_heads % c.n_kv_heads != 0) abort();
        if (!(c.norm_eps > 0) || !isfinite(c.norm_eps)) abort();
        if (c.bos_token_id < -1 || c.bos_token_id >= c.vocab_size) abort();
        if (c.eos_token_id < -1 || c.eos_token_id >= c.vocab_size) abort();
        if (!memchr(c.model_type, '\0', sizeof c.model_type)) abort();
        if (c.rope != PT_ROPE_NONE) {
            if (c.head_dim % 2 || !(c.rope_theta > 0) || !isfinite(c.rope_theta)) abort();
            if (!(c.rope_factor > 0) || !isfinite(c.rope_factor)) abort();
        }
        if (c.rope == PT_ROPE_LLAMA3 &&
            (!(c.rope_high_freq_factor > c.rope_low_freq_factor) || !(c.rope_low_freq_factor > 0) ||
             c.rope_original_max_positions < 1))
            abort();
        if (c.sliding_window < 0) abort();
    } else if (!memchr(e.msg, '\0', sizeof e.msg) || strchr(e.msg, '\n')) {
        abort();
    }
    free(copy);
    return 0;
}
