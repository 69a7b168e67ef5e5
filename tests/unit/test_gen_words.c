/* Unit tests for gen_hit's whole-word rule (pt_text_has_word, SPEC §3): hand-checked cases of
 * case folding, word boundaries (ASCII and beyond), white space stripped from the target, a
 * target whose ends are punctuation, invalid UTF-8, and no target. */
#include <stdio.h>

#include "engine/generate.h"

static int n_pass, n_fail;

static void expect(const char *text, const char *word, int want) {
    const int got = pt_text_has_word(text, word);
    if (got == want) {
        n_pass++;
    } else {
        n_fail++;
        printf("FAIL has_word(\"%s\", \"%s\") = %d, expected %d\n", text, word ? word : "(null)",
               got, want);
    }
}

int main(void) {
    /* whole words, case-insensitive */
    expect("He chased the rabbit home", "rabbit", 1);
    expect("He chased the Rabbit.", " rabbit", 1);
    expect("RABBIT!", "rabbit", 1);
    expect("rabbits everywhere", "rabbit", 0);
    expect("a jackrabbit", "rabbit", 0);
    expect("rabbit_hole", "rabbit", 0); /* '_' is a word character */
    expect("rabbit2", "rabbit", 0);
    expect("(rabbit)", "rabbit", 1);
    expect("the rabbit's ears", "rabbit", 1);
    expect("\nrabbit\n", "  rabbit\n", 1); /* the target is stripped */
    expect("no match here", "rabbit", 0);
    expect("", "rabbit", 0);
    /* several words, and a target ending in punctuation: no boundary needed after '.' */
    expect("I saw the sun set.", "sun set", 1);
    expect("I saw the sunset.", "sun set", 0);
    expect("the end.Then", "end.", 1);
    /* beyond ASCII: Latin-1 and Cyrillic case folding; accented letters are word characters */
    expect("Un CAFÉ noir", "café", 1);
    expect("cafés", "café", 0);
    expect("éclair", "clair", 0);
    expect("Москва — столица", "москва", 1);
    expect("word\xe2\x80\x94rabbit\xe2\x80\x94word", "rabbit", 1); /* em dashes are not words */
    expect("\xe3\x80\x8crabbit\xe3\x80\x8d", "rabbit", 1);         /* CJK brackets */
    /* invalid UTF-8 in the text never matches a letter, never crashes */
    expect("\xff"
           "rabbit\xc3",
           "rabbit", 1);
    /* no target */
    expect("anything", NULL, -1);
    expect("anything", " \t\n", -1);
    expect("anything", "", -1);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
