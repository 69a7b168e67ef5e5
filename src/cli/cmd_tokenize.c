/* punctum tokenize — show how a model's tokenizer.json splits text (SPEC §4).
 *
 *   punctum tokenize --model DIR [--json] [--no-special] [--jsonl] [--chat [--system S]] TEXT|-
 *   punctum tokenize --model DIR --vocab
 *
 * --chat wraps each text as the user message of the model's chat template (SPEC §2) and shows
 * the rendered text (text mode: a first line "# TEXT", escaped; JSON: "text") and each token's
 * role (5th column; JSON "role": 0 template, 1 the text's own bytes); the rendered text is
 * encoded without the post-processor's special tokens, as transformers does for chat.
 *
 * Text mode prints one line per token: id, byte_start, byte_end, piece (escaped), tab separated.
 * --json prints one JSON object per input text: {"ids":[...],"byte_start":[...],"byte_end":[...],
 * "pieces":[...]}. "-" reads stdin, one text per line; with --jsonl each line is a JSON string
 * (so texts may contain newlines). --vocab prints the decoded piece of every id 0 .. vocab size -
 * 1, one JSON string per line. --bench R (with '-') encodes the stdin texts R times and prints
 * {"texts", "bytes", "tokens", "seconds"} instead of tokens (used by benchmarks/). */
#include "punctum/chat.h"
#include "punctum/cli.h"
#include "punctum/common.h"
#include "punctum/model.h"
#include "punctum/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_FILE ((size_t)256 << 20)

typedef struct {
    char **s;
    size_t *n;
    size_t count, cap;
} text_list;

static void text_add(text_list *l, const char *s, size_t n) {
    if (l->count == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->s = pt_xrealloc(l->s, l->cap * sizeof *l->s);
        l->n = pt_xrealloc(l->n, l->cap * sizeof *l->n);
    }
    l->s[l->count] = pt_xmalloc(n + 1);
    memcpy(l->s[l->count], s, n);
    l->s[l->count][n] = 0;
    l->n[l->count++] = n;
}

/* encode every text `rounds` times; prints one JSON object with the totals and the time */
static int bench(const pt_tokenizer *t, const text_list *l, long rounds, int add_special,
                 pt_error *e) {
    pt_encoding enc = {0};
    size_t bytes = 0, tokens = 0;
    for (size_t i = 0; i < l->count; i++) bytes += l->n[i];
    double t0 = pt_now();
    for (long r = 0; r < rounds; r++)
        for (size_t i = 0; i < l->count; i++) {
            if (pt_tokenizer_encode(t, l->s[i], l->n[i], add_special, &enc, e) != 0) {
                pt_encoding_free(&enc);
                return -1;
            }
            if (r == 0) tokens += enc.n;
        }
    double dt = pt_now() - t0;
    pt_encoding_free(&enc);
    printf(
        "{\"texts\": %zu, \"bytes\": %zu, \"tokens\": %zu, \"rounds\": %ld, \"seconds\": %.6f}\n",
        l->count, bytes, tokens, rounds, dt);
    return 0;
}

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: punctum tokenize --model DIR [--json] [--no-special] [--jsonl] [--chat] TEXT|-\n"
        "       punctum tokenize --model DIR --vocab\n"
        "  --model DIR     directory holding tokenizer.json (or org/name in the Hugging Face "
        "cache)\n"
        "  --json          one JSON object per text (ids, byte_start, byte_end, pieces)\n"
        "  --no-special    no special tokens from the post-processor (no BOS)\n"
        "  --jsonl         with '-': each stdin line is a JSON string\n"
        "  --chat          wrap each text in the model's chat template (user message, generation\n"
        "                  prompt); show the rendered text and each token's role\n"
        "  --system TEXT   with --chat: a system message before the user message\n"
        "  --vocab         print the decoded piece of every token id, one JSON string per line\n"
        "  --bench R       with '-': encode all stdin texts R times, print timing as JSON\n"
        "  TEXT | -        the text, or '-' for one text per stdin line\n");
}

/* Piece escaped for the tab-separated output: \\ \t \n \r and other C0 controls / DEL as \xNN. */
static void print_escaped(FILE *f, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\')
            fputs("\\\\", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
}

/* --chat: the template and its system message (NULL: plain text) */
typedef struct {
    const pt_chat *chat;
    const char *system;
} chat_opts;

static void print_tokens(const pt_tokenizer *t, const pt_encoding *enc, const pt_chat_text *ct) {
    if (ct) {
        fputs("# ", stdout);
        print_escaped(stdout, ct->text, ct->len);
        putchar('\n');
    }
    for (size_t i = 0; i < enc->n; i++) {
        size_t pl;
        const char *piece = pt_tokenizer_piece_bytes(t, enc->ids[i], &pl);
        printf("%d\t%d\t%d\t", (int)enc->ids[i], (int)enc->byte_start[i], (int)enc->byte_end[i]);
        print_escaped(stdout, piece ? piece : "", piece ? pl : 0);
        if (ct) printf("\t%d", pt_chat_role(ct, enc->byte_start[i], enc->byte_end[i]));
        putchar('\n');
    }
}

static int emit(const pt_tokenizer *t, const char *text, size_t len, int add_special, int as_json,
                const chat_opts *co, pt_encoding *enc, const char *src, pt_error *e) {
    pt_chat_text ct = {0};
    if (co->chat) {
        if (memchr(text, 0, len)) return pt_fail(e, "%s: text with a NUL byte", src);
        if (pt_chat_render(co->chat, co->system, text, &ct, e) != 0)
            return pt_fail_prefix(e, "%s", src);
        text = ct.text;
        len = ct.len;
        add_special = 0;
    }
    if (pt_tokenizer_encode(t, text, len, add_special, enc, e) != 0) {
        pt_chat_text_free(&ct);
        return pt_fail_prefix(e, "%s", src);
    }
    if (!as_json) {
        print_tokens(t, enc, co->chat ? &ct : NULL);
        pt_chat_text_free(&ct);
        return 0;
    }
    json_t *o = json_object(), *ids = json_array(), *bs = json_array(), *be = json_array(),
           *pieces = json_array(), *roles = co->chat ? json_array() : NULL;
    for (size_t i = 0; i < enc->n; i++) {
        size_t pl;
        const char *piece = pt_tokenizer_piece_bytes(t, enc->ids[i], &pl);
        json_array_append_new(ids, json_integer(enc->ids[i]));
        json_array_append_new(bs, json_integer(enc->byte_start[i]));
        json_array_append_new(be, json_integer(enc->byte_end[i]));
        json_array_append_new(pieces, json_stringn(piece ? piece : "", piece ? pl : 0));
        if (roles)
            json_array_append_new(
                roles, json_integer(pt_chat_role(&ct, enc->byte_start[i], enc->byte_end[i])));
    }
    if (roles) {
        json_object_set_new(o, "text", json_stringn(ct.text, ct.len));
        json_object_set_new(o, "role", roles);
    }
    pt_chat_text_free(&ct);
    json_object_set_new(o, "ids", ids);
    json_object_set_new(o, "byte_start", bs);
    json_object_set_new(o, "byte_end", be);
    json_object_set_new(o, "pieces", pieces);
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!s) return pt_fail(e, "%s: cannot serialise output", src);
    puts(s);
    free(s);
    return 0;
}

int pt_cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL;
    int as_json = 0, add_special = 1, jsonl = 0, have_text = 0, vocab = 0, chat = 0;
    chat_opts co = {NULL, NULL};
    long rounds = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--model")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "punctum tokenize: --model needs a directory\n");
                return 2;
            }
            model = argv[++i];
        } else if (!strncmp(a, "--model=", 8)) {
            model = a + 8;
        } else if (!strcmp(a, "--json")) {
            as_json = 1;
        } else if (!strcmp(a, "--jsonl")) {
            jsonl = 1;
        } else if (!strcmp(a, "--bench")) {
            char *end = NULL;
            rounds = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
            if (rounds < 1 || !end || *end) {
                fprintf(stderr, "punctum tokenize: --bench needs a positive number of rounds\n");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--chat")) {
            chat = 1;
        } else if (!strcmp(a, "--system")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "punctum tokenize: --system needs a text\n");
                return 2;
            }
            co.system = argv[++i];
        } else if (!strcmp(a, "--vocab")) {
            vocab = 1;
        } else if (!strcmp(a, "--no-special")) {
            add_special = 0;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--")) {
            if (i + 1 < argc && !have_text) {
                text = argv[++i];
                have_text = 1;
            }
            if (i + 1 < argc) {
                fprintf(stderr, "punctum tokenize: more than one TEXT argument\n");
                return 2;
            }
        } else if (a[0] == '-' && a[1] != 0) {
            fprintf(stderr, "punctum tokenize: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else {
            if (have_text) {
                fprintf(stderr, "punctum tokenize: more than one TEXT argument\n");
                return 2;
            }
            text = a;
            have_text = 1;
        }
    }
    if (vocab && have_text) {
        fprintf(stderr, "punctum tokenize: --vocab takes no TEXT\n");
        return 2;
    }
    if (vocab) {
        have_text = 1;
        text = "";
    }
    if (!model || !have_text) {
        fprintf(stderr, "punctum tokenize: %s\n",
                !model ? "--model DIR is required" : "TEXT (or '-' for stdin) is required");
        usage(stderr);
        return 2;
    }
    int from_stdin = !strcmp(text, "-");
    if ((co.system && !chat) || (chat && (vocab || rounds))) {
        fprintf(stderr, "punctum tokenize: %s\n",
                co.system ? "--system needs --chat" : "--chat does not go with --vocab or --bench");
        return 2;
    }
    if ((jsonl || rounds) && !from_stdin) {
        fprintf(stderr, "punctum tokenize: --jsonl and --bench need '-' (texts on stdin)\n");
        return 2;
    }

    pt_error err = {{0}};
    char *model_dir = pt_model_resolve(model, &err); /* a directory, or org/name in the HF cache */
    if (!model_dir) {
        fprintf(stderr, "punctum tokenize: %s\n", err.msg);
        return 2;
    }
    model = model_dir;
    char *path = pt_path_join(model, "tokenizer.json");
    pt_tokenizer *t = pt_tokenizer_load(path, &err);
    if (!t) {
        fprintf(stderr, "punctum tokenize: %s\n", err.msg);
        free(path);
        free(model_dir);
        return 1;
    }
    pt_chat *ch = NULL;
    if (chat) {
        int absent;
        if (!(ch = pt_chat_load(model, &absent, &err))) {
            fprintf(stderr, "punctum tokenize: %s\n", err.msg);
            pt_tokenizer_free(t);
            free(path);
            free(model_dir);
            return 2;
        }
        co.chat = ch;
    }
    pt_encoding enc = {0};
    int rc = 0;
    if (vocab) {
        int n = pt_tokenizer_vocab_size(t);
        for (int id = 0; id < n; id++) {
            size_t pl;
            const char *piece = pt_tokenizer_piece_bytes(t, id, &pl);
            json_t *s = json_stringn(piece ? piece : "", piece ? pl : 0);
            char *d = s ? json_dumps(s, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : NULL;
            puts(d ? d : "\"\"");
            free(d);
            json_decref(s);
        }
    } else if (!from_stdin) {
        if (emit(t, text, strlen(text), add_special, as_json, &co, &enc, "argument", &err) != 0) {
            fprintf(stderr, "punctum tokenize: %s\n", err.msg);
            rc = 1;
        }
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t got;
        long lineno = 0;
        text_list texts = {0};
        while ((got = getline(&line, &cap, stdin)) >= 0) {
            lineno++;
            size_t n = (size_t)got;
            if (n && line[n - 1] == '\n') n--;
            if (n && line[n - 1] == '\r' && jsonl) n--;
            char where[64];
            snprintf(where, sizeof where, "stdin line %ld", lineno);
            if (jsonl) {
                json_error_t je;
                json_t *v = json_loadb(line, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
                if (!v || !json_is_string(v)) {
                    fprintf(stderr, "punctum tokenize: %s: not a JSON string%s%s\n", where,
                            v ? "" : ": ", v ? "" : je.text);
                    json_decref(v);
                    rc = 1;
                    break;
                }
                int r = rounds ? (text_add(&texts, json_string_value(v), json_string_length(v)), 0)
                               : emit(t, json_string_value(v), json_string_length(v), add_special,
                                      as_json, &co, &enc, where, &err);
                json_decref(v);
                if (r != 0) {
                    fprintf(stderr, "punctum tokenize: %s\n", err.msg);
                    rc = 1;
                    break;
                }
            } else if (rounds) {
                text_add(&texts, line, n);
            } else if (emit(t, line, n, add_special, as_json, &co, &enc, where, &err) != 0) {
                fprintf(stderr, "punctum tokenize: %s\n", err.msg);
                rc = 1;
                break;
            }
            fflush(stdout);
        }
        free(line);
        if (rc == 0 && rounds && bench(t, &texts, rounds, add_special, &err) != 0) {
            fprintf(stderr, "punctum tokenize: %s\n", err.msg);
            rc = 1;
        }
        for (size_t i = 0; i < texts.count; i++) free(texts.s[i]);
        free(texts.s);
        free(texts.n);
    }
    pt_encoding_free(&enc);
    pt_chat_free(ch);
    pt_tokenizer_free(t);
    free(path);
    free(model_dir);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "punctum tokenize: error writing output\n");
        rc = 1;
    }
    return rc;
}
