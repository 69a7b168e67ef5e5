/* libFuzzer harness: chat templates (src/chat's Jinja lexer, parser and interpreter) on
 * arbitrary bytes. A template that parses is rendered with and without a system message and
 * with prompts that look like template syntax; every result must keep the API's promises
 * (NUL-terminated text of the stated length, prompt spans inside it, in order) and every
 * failure must leave a one-line message. */
#include "punctum/chat.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_message(const pt_error *e) {
    if (!memchr(e->msg, '\0', sizeof e->msg) || strchr(e->msg, '\n') || !e->msg[0]) abort();
}

static void check_text(const pt_chat_text *t) {
    if (!t->text || strlen(t->text) > t->len || t->text[t->len] != 0) abort();
    int32_t prev = 0;
    for (int k = 0; k < t->n_span; k++) {
        int32_t s = t->span[2 * k], e = t->span[2 * k + 1];
        if (s < prev || e <= s || (size_t)e > t->len) abort();
        prev = e;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const prompts[] = {"Hello.", "{{ x }} {% if %} caf\xc3\xa9", ""};
    static const char *const systems[] = {NULL, "Be brief."};
    pt_error e;
    memset(&e, 0, sizeof e);
    pt_chat *c = pt_chat_parse((const char *)data, size, "fuzz.jinja", &e);
    if (!c) {
        check_message(&e);
        return 0;
    }
    pt_chat_set_var(c, "bos_token", "<s>", NULL);
    pt_chat_set_var(c, "eos_token", "</s>", NULL);
    for (size_t p = 0; p < sizeof prompts / sizeof prompts[0]; p++)
        for (size_t s = 0; s < 2; s++) {
            pt_chat_text t;
            memset(&e, 0, sizeof e);
            if (pt_chat_render(c, systems[s], prompts[p], &t, &e) == 0) {
                check_text(&t);
                pt_chat_text_free(&t);
            } else
                check_message(&e);
        }
    pt_chat_free(c);
    return 0;
}
