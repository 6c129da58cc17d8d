/* The verb table of 'kyok kp'. Each command has two spellings: kyok's hyphenated one
 * ("key-create", "wrap") and ibmcloud kp's in words ("key create", "key wrap"); both run one
 * handler. The one table drives parsing, the help listing and "did you mean". Pure but for
 * kp_verbs_usage, which prints. Private to cli/kp*.c.
 */
#ifndef KYOK_CLI_KP_VERBS_H
#define KYOK_CLI_KP_VERBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define KP_VERB_WORDS_MAX 3  /* words in an ibmcloud spelling */
#define KP_VERB_WORD_MAX  64 /* bytes in one word or name; longer never matches */

struct kp_verb {
	const char *flat;  /* kyok's spelling, one argument: "key-create" */
	const char *words; /* ibmcloud kp's, 1 to 3 words: "key create" */
	int (*fn)(int argc, char **argv);
	const char *help; /* one line */
};

/* The row that argv[0..argc) names in either spelling (a table ends with a row of NULLs);
 * *used is how many arguments the name took (1 for the flat name, else its words). An
 * argument that starts with '-' ends the words. NULL when no row matches. */
const struct kp_verb *kp_verb_find(const struct kp_verb *tab, int argc, char *const *argv,
                                   int *used);

/* True when w is the first word of an ibmcloud spelling of 2 or more words ("key"). */
bool kp_verb_is_group(const struct kp_verb *tab, const char *w);

/* Levenshtein distance with adjacent transpositions counted as one edit (optimal string
 * alignment): "craete" is 1 from "create". SIZE_MAX when either is longer than
 * KP_VERB_WORD_MAX. */
size_t kp_edit_distance(const char *a, const char *b);

/* "Did you mean" for argv[0..argc), which kp_verb_find did not match. When argv[0] is a
 * group and argv[1] a word, the nearest verb of that group ("key create" for "key craete");
 * otherwise the nearest flat name or first word, completed with argv[1] when that makes a
 * command ("key create" for "kye create"). A suggestion is at most 2 edits away and fewer
 * than the typed word's length. Writes it to out and returns true, or false for none. */
bool kp_verb_suggest(const struct kp_verb *tab, int argc, char *const *argv, char *out,
                     size_t outlen);

/* The command listing: every row (group NULL), or the rows of one group ("key"), with
 * their two spellings and help, on f. */
void kp_verbs_usage(FILE *f, const struct kp_verb *tab, const char *group);

#endif
