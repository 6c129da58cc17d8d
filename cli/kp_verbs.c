/* The verb table of 'kyok kp': lookup in either spelling, "did you mean", the listing. */
#include <stdint.h>
#include <string.h>

#include "cli/kp_verbs.h"

/* Splits words at spaces into w; returns how many (0 when a word is too long or there are
 * too many). */
static size_t kp_words_split(const char *words, char w[KP_VERB_WORDS_MAX][KP_VERB_WORD_MAX + 1])
{
	size_t n = 0;
	const char *p = words;

	while (*p != '\0') {
		size_t len = strcspn(p, " ");
		if (n == KP_VERB_WORDS_MAX || len == 0 || len > KP_VERB_WORD_MAX)
			return 0;
		memcpy(w[n], p, len);
		w[n][len] = '\0';
		n++;
		p += len;
		if (*p == ' ')
			p++;
	}
	return n;
}

const struct kp_verb *kp_verb_find(const struct kp_verb *tab, int argc, char *const *argv,
                                   int *used)
{
	char w[KP_VERB_WORDS_MAX][KP_VERB_WORD_MAX + 1];
	const struct kp_verb *best = NULL;
	size_t best_n = 0;

	*used = 0;
	if (argc < 1 || argv[0][0] == '-')
		return NULL;
	for (const struct kp_verb *t = tab; t->flat != NULL; t++)
		if (strcmp(t->flat, argv[0]) == 0) {
			*used = 1;
			return t;
		}
	for (const struct kp_verb *t = tab; t->flat != NULL; t++) {
		size_t n = kp_words_split(t->words, w), i;
		if (n == 0 || n > (size_t)argc || n <= best_n)
			continue;
		for (i = 0; i < n && argv[i][0] != '-' && strcmp(w[i], argv[i]) == 0; i++)
			;
		if (i == n) {
			best = t;
			best_n = n;
		}
	}
	*used = (int)best_n;
	return best;
}

bool kp_verb_is_group(const struct kp_verb *tab, const char *s)
{
	char w[KP_VERB_WORDS_MAX][KP_VERB_WORD_MAX + 1];

	for (const struct kp_verb *t = tab; t->flat != NULL; t++)
		if (kp_words_split(t->words, w) >= 2 && strcmp(w[0], s) == 0)
			return true;
	return false;
}

size_t kp_edit_distance(const char *a, const char *b)
{
	unsigned short d[KP_VERB_WORD_MAX + 1][KP_VERB_WORD_MAX + 1];
	size_t n = strlen(a), m = strlen(b);

	if (n > KP_VERB_WORD_MAX || m > KP_VERB_WORD_MAX)
		return SIZE_MAX;
	for (size_t i = 0; i <= n; i++)
		d[i][0] = (unsigned short)i;
	for (size_t j = 0; j <= m; j++)
		d[0][j] = (unsigned short)j;
	for (size_t i = 1; i <= n; i++)
		for (size_t j = 1; j <= m; j++) {
			unsigned short v =
			    (unsigned short)(d[i - 1][j - 1] + (a[i - 1] != b[j - 1]));
			if (d[i - 1][j] + 1 < v)
				v = (unsigned short)(d[i - 1][j] + 1);
			if (d[i][j - 1] + 1 < v)
				v = (unsigned short)(d[i][j - 1] + 1);
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1 < v)
				v = (unsigned short)(d[i - 2][j - 2] + 1);
			d[i][j] = v;
		}
	return d[n][m];
}

/* Keeps cand in best when it is nearer to typed than best so far. */
static void kp_nearer(const char *typed, const char *cand, char *best, size_t *bestd)
{
	size_t d = kp_edit_distance(typed, cand);

	if (d < *bestd) {
		*bestd = d;
		snprintf(best, KP_VERB_WORD_MAX + 1, "%s", cand);
	}
}

bool kp_verb_suggest(const struct kp_verb *tab, int argc, char *const *argv, char *out,
                     size_t outlen)
{
	char w[KP_VERB_WORDS_MAX][KP_VERB_WORD_MAX + 1], best[KP_VERB_WORD_MAX + 1] = "";
	size_t bestd = SIZE_MAX;
	bool group = argc >= 2 && argv[1][0] != '-' && kp_verb_is_group(tab, argv[0]);
	const char *typed;

	if (argc < 1 || outlen == 0)
		return false;
	typed = group ? argv[1] : argv[0];
	for (const struct kp_verb *t = tab; t->flat != NULL; t++) {
		size_t n = kp_words_split(t->words, w);
		if (group) {
			if (n >= 2 && strcmp(w[0], argv[0]) == 0)
				kp_nearer(typed, w[1], best, &bestd);
			continue;
		}
		kp_nearer(typed, t->flat, best, &bestd);
		if (n >= 1)
			kp_nearer(typed, w[0], best, &bestd);
	}
	if (bestd > 2 || bestd >= strlen(typed))
		return false;
	if (group) {
		snprintf(out, outlen, "%s %s", argv[0], best);
	} else if (argc >= 2 && argv[1][0] != '-' && kp_verb_is_group(tab, best)) {
		char *const try[2] = {best, argv[1]};
		int used = 0;
		if (kp_verb_find(tab, 2, try, &used) != NULL && used == 2)
			snprintf(out, outlen, "%s %s", best, argv[1]);
		else
			snprintf(out, outlen, "%s", best);
	} else {
		snprintf(out, outlen, "%s", best);
	}
	return true;
}

void kp_verbs_usage(FILE *f, const struct kp_verb *tab, const char *group)
{
	char w[KP_VERB_WORDS_MAX][KP_VERB_WORD_MAX + 1];
	int wflat = 0, wwords = 0;
	size_t glen = group != NULL ? strlen(group) : 0;

	for (const struct kp_verb *t = tab; t->flat != NULL; t++) {
		const char *shown = t->words;
		if (group != NULL) {
			if (kp_words_split(t->words, w) < 2 || strcmp(w[0], group) != 0)
				continue;
			shown = t->words + glen + 1;
		}
		if ((int)strlen(t->flat) > wflat)
			wflat = (int)strlen(t->flat);
		if ((int)strlen(shown) > wwords)
			wwords = (int)strlen(shown);
	}
	if (group == NULL) {
		fprintf(f,
		        "usage: kyok kp <command> [options]\n\n"
		        "commands, in kyok's spelling and in ibmcloud kp's (the same command):\n");
		for (const struct kp_verb *t = tab; t->flat != NULL; t++)
			fprintf(f, "  %-*s  %-*s  %s\n", wflat, t->flat, wwords, t->words, t->help);
		fprintf(f, "\n'kyok kp <command> --help' describes a command and its options.\n");
		return;
	}
	fprintf(f, "usage: kyok kp %s <command> [options]\n\ncommands (and kyok's spelling):\n",
	        group);
	for (const struct kp_verb *t = tab; t->flat != NULL; t++) {
		if (kp_words_split(t->words, w) < 2 || strcmp(w[0], group) != 0)
			continue;
		fprintf(f, "  %-*s  %-*s  %s\n", wwords, t->words + glen + 1, wflat, t->flat,
		        t->help);
	}
	fprintf(f, "\n'kyok kp %s <command> --help' describes a command and its options.\n", group);
}
