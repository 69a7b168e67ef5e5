/* Unit tests for the chat-template interpreter's C API (pt_chat_*): the prompt's spans in the
 * rendered text and the roles they give (hand-checked cases, including a template that trims
 * and one that repeats the prompt), errors as one line naming the template and line, the
 * kinds of failure (raise_exception at render; unsupported constructs and syntax at parse),
 * and the caps on hostile templates (steps, depth, output). The rendering itself is compared
 * with transformers in tests/python/test_chat.py. */
#include "punctum/chat.h"

#include <stdio.h>
#include <string.h>

static int n_pass, n_fail;

static void check(int ok, const char *what, const char *detail) {
    if (ok) {
        n_pass++;
        printf("ok   %s\n", what);
    } else {
        n_fail++;
        printf("FAIL %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    }
}

static pt_chat *parse(const char *src, pt_error *e) {
    memset(e, 0, sizeof *e);
    return pt_chat_parse(src, strlen(src), "t.jinja", e);
}

static void test_spans_and_roles(void) {
    pt_error e;
    pt_chat *c = parse("{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content|trim }}"
                       "</>{% endfor %}{% if add_generation_prompt %}<a>{% endif %}",
                       &e);
    check(c != NULL, "parse a small template", e.msg);
    if (!c) return;
    pt_chat_set_var(c, "bos_token", "<s>", NULL);
    pt_chat_text t;
    int rc = pt_chat_render(c, "sys", "  hi there ", &t, &e);
    const char *want = "<s><system>sys</><user>hi there</><a>";
    check(rc == 0 && !strcmp(t.text, want) && t.len == strlen(want), "rendered text",
          rc ? e.msg : t.text);
    int lo = (int)(strstr(want, "hi there") - want);
    check(rc == 0 && t.n_span == 1 && t.span[0] == lo && t.span[1] == lo + 8,
          "the prompt's span survives trim and concatenation", NULL);
    if (rc == 0) {
        check(pt_chat_role(&t, lo - 1, lo + 2) == 1 && pt_chat_role(&t, lo + 7, lo + 9) == 1,
              "a token straddling the boundary is the prompt's (role 1)", NULL);
        check(pt_chat_role(&t, 0, 3) == 0 && pt_chat_role(&t, lo + 8, lo + 11) == 0 &&
                  pt_chat_role(&t, lo, lo) == 0,
              "template tokens and empty spans are role 0", NULL);
        pt_chat_text_free(&t);
    }
    pt_chat_free(c);

    /* copies written by separate statements are separate spans; within one string value only
     * the first copy is tracked (a documented limit: templates copy the prompt once) */
    c = parse("{{ messages[-1].content }}|{{ messages[-1].content[1:] ~ messages[-1].content }}",
              &e);
    rc = c ? pt_chat_render(c, NULL, "abc", &t, &e) : -1;
    check(rc == 0 && !strcmp(t.text, "abc|bcabc") && t.n_span == 2 && t.span[0] == 0 &&
              t.span[1] == 3 && t.span[2] == 4 && t.span[3] == 9,
          "copies of the prompt are spans (adjacent ones merge)", rc ? e.msg : NULL);
    if (rc == 0) pt_chat_text_free(&t);
    pt_chat_free(c);

    c = parse("{{ messages[0].content.upper() }}", &e);
    rc = c ? pt_chat_render(c, NULL, "abc", &t, &e) : -1;
    check(rc == 0 && !strcmp(t.text, "ABC") && t.n_span == 0, "a transformed prompt has no span",
          NULL);
    if (rc == 0) pt_chat_text_free(&t);
    pt_chat_free(c);
}

static void test_errors(void) {
    pt_error e;
    pt_chat_text t;
    pt_chat *c = parse(
        "a\n{% if messages[0].role == 'system' %}{{ raise_exception('no system') }}{% endif %}ok",
        &e);
    int rc = c ? pt_chat_render(c, "s", "p", &t, &e) : 0;
    check(rc != 0 && !strcmp(e.msg, "t.jinja:2: no system"), "raise_exception: FILE:LINE: message",
          e.msg);
    rc = c ? pt_chat_render(c, NULL, "p", &t, &e) : -1;
    check(rc == 0 && !strcmp(t.text, "a\nok"), "the same template without a system message", e.msg);
    if (rc == 0) pt_chat_text_free(&t);
    pt_chat_free(c);

    static const struct {
        const char *src, *msg;
    } bad[] = {
        {"x\n\n{{ a|sort }}", "t.jinja:3: unsupported filter 'sort'"},
        {"{% extends 'b' %}", "t.jinja:1: unsupported tag 'extends'"},
        {"{% for x in y %}", "t.jinja:1: unexpected end of template, expected 'endfor'"},
        {"{{ 'unterminated }}", "t.jinja:1: unterminated string literal"},
        {"{{ a.b.format() }}", "t.jinja:1: unsupported method 'format'"},
        {"{# open", "t.jinja:1: missing end of comment tag"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        c = parse(bad[k].src, &e);
        check(!c && !strcmp(e.msg, bad[k].msg), bad[k].msg, e.msg);
        pt_chat_free(c);
    }
}

static void test_limits(void) {
    static const char *const hostile[] = {
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s "
        "~ ns.s %}{% endfor %}",
        "{{ "
        "(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((("
        "((((((("
        "(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((("
        "((((((((((("
        "(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((("
        "((((((((((1",
    };
    for (size_t k = 0; k < sizeof hostile / sizeof hostile[0]; k++) {
        pt_error e;
        pt_chat_text t;
        pt_chat *c = parse(hostile[k], &e);
        int rc = c ? pt_chat_render(c, NULL, "p", &t, &e) : -1;
        if (rc == 0) pt_chat_text_free(&t);
        check(rc != 0 && strstr(e.msg, "t.jinja") && !strchr(e.msg, '\n'),
              "a hostile template is stopped", e.msg);
        pt_chat_free(c);
    }
}

/* Out of memory at each allocation of the chat layer in turn (the template object, a special
 * token, the rendered text and its spans): an error naming the template, nothing leaked, until
 * the walk passes them all. (The template engine's own arena reports its limit separately.) */
static void test_out_of_memory(void) {
    int failed = 0, named = 0, done = 0;
    for (long k = 0; k < 50 && !done; k++) {
        pt_error e;
        pt_test_fail_alloc_after(k);
        pt_chat *c = parse("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}", &e);
        int rc = c ? pt_chat_set_var(c, "bos_token", "<s>", &e) : -1;
        pt_chat_text t = {0};
        if (rc == 0) rc = pt_chat_render(c, NULL, "hi", &t, &e);
        pt_test_fail_alloc_after(-1);
        if (rc == 0) {
            done = !strcmp(t.text, "<s>hi") && t.n_span == 1;
            pt_chat_text_free(&t);
        } else {
            failed++;
            named += strstr(e.msg, "t.jinja") && strstr(e.msg, "out of memory") && !t.text;
        }
        pt_chat_free(c);
    }
    char why[64];
    snprintf(why, sizeof why, "%d failures, %d named", failed, named);
    check(failed == 5 && named == failed,
          "out of memory at each allocation: an error naming the template", why);
    check(done, "out of memory walk ends with the rendered text", NULL);
}

int main(void) {
    test_spans_and_roles();
    test_errors();
    test_limits();
    test_out_of_memory();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
