/* punctum — a model's chat template, rendered as transformers' apply_chat_template(
 * [system?, user], add_generation_prompt=True, tokenize=False) renders it (SPEC §2, --chat).
 * The template comes from the model directory: chat_template.jinja, else the chat_template of
 * tokenizer_config.json (a string, or the list of named templates: "default"); bos_token,
 * eos_token, unk_token, sep_token, pad_token, cls_token and mask_token from tokenizer_config.json
 * (special_tokens_map.json for those it lacks) are its variables, as in transformers. A template
 * that uses a construct outside the interpreter's subset is refused when loaded, with
 * "FILE:LINE: unsupported ...", never rendered differently. */
#ifndef PUNCTUM_CHAT_H
#define PUNCTUM_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "punctum/common.h"

typedef struct pt_chat pt_chat;

/* A rendered conversation: the text, and the byte ranges of it copied from the prompt. */
typedef struct {
    char *text; /* NUL-terminated UTF-8 */
    size_t len;
    int32_t *span; /* n_span pairs [start, end) */
    int n_span;
} pt_chat_text;

/* The model directory's template. No template: NULL, *absent = 1, e says so. */
pt_chat *pt_chat_load(const char *model_dir, int *absent, pt_error *e);
/* A template from memory; name is used in messages. Special tokens are set with
 * pt_chat_set_var. */
pt_chat *pt_chat_parse(const char *src, size_t len, const char *name, pt_error *e);
/* Set a special token variable (bos_token, ...); -1 (e set) when out of memory. */
int pt_chat_set_var(pt_chat *c, const char *name, const char *value, pt_error *e);
void pt_chat_free(pt_chat *c);
const char *pt_chat_name(const pt_chat *c);
/* a hash of the template and its variables (for the run's identity) */
const char *pt_chat_fingerprint(pt_chat *c);

/* Render [{"role": "system", "content": system} (if system), {"role": "user", "content":
 * prompt}] with add_generation_prompt. Errors (raise_exception in the template, a type error,
 * a limit) return -1 with "FILE:LINE: ..." in e. */
int pt_chat_render(const pt_chat *c, const char *system, const char *prompt, pt_chat_text *out,
                   pt_error *e);
void pt_chat_text_free(pt_chat_text *t);

/* /tokens/role of a token spanning bytes [start, end) of the rendered text: 1 when it shares a
 * byte with the prompt's own text, else 0 (template text; an empty span). */
int pt_chat_role(const pt_chat_text *t, int32_t start, int32_t end);

#endif
