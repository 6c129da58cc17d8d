/* Option tables: the getopt_long arrays and the --help lines made from one table per command
 * (cli/opts.h). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static bool cli_opt_is_end(const struct cli_opt *o)
{
	return o->name == NULL && o->id == 0 && o->help == NULL;
}

static bool cli_opt_is_text(const struct cli_opt *o)
{
	return o->name == NULL && o->id == 0 && o->help != NULL;
}

static bool cli_opt_short(int id)
{
	return id > ' ' && id < 0x7f && id != '-' && id != ':' && id != '?' && id != ';';
}

/* Adds one row's entries. n and k count what longs and shorts hold so far. */
static int cli_opts_add(const struct cli_opt *o, struct option *longs, size_t nlongs, size_t *n,
                        char *shorts, size_t nshorts, size_t *k)
{
	int has_arg = o->arg == CLI_ARG_REQUIRED ? required_argument : no_argument;

	if (!cli_opt_short(o->id) && o->id < CLI_OPT_LONG_ONLY)
		return KY_ERR_INTERNAL;
	if (o->name == NULL && !cli_opt_short(o->id))
		return KY_ERR_INTERNAL;
	if (o->name != NULL) {
		if (o->name[0] == '\0' || *n + 1 >= nlongs)
			return KY_ERR_INTERNAL;
		for (size_t i = 0; i < *n; i++)
			if (strcmp(longs[i].name, o->name) == 0)
				return KY_ERR_INTERNAL;
		longs[*n] = (struct option){o->name, has_arg, NULL, o->id};
		(*n)++;
	}
	if (cli_opt_short(o->id)) {
		const char *p = memchr(shorts, o->id, *k);
		if (p != NULL) { /* another spelling of the same option: the same argument */
			bool takes = p[1] == ':';
			if (takes != (o->arg == CLI_ARG_REQUIRED))
				return KY_ERR_INTERNAL;
			return 0;
		}
		if (*k + 3 > nshorts)
			return KY_ERR_INTERNAL;
		shorts[(*k)++] = (char)o->id;
		if (o->arg == CLI_ARG_REQUIRED)
			shorts[(*k)++] = ':';
		shorts[*k] = '\0';
	}
	return 0;
}

int cli_opts_build(const struct cli_opt *opts, const struct cli_opt *common, struct option *longs,
                   size_t nlongs, char *shorts, size_t nshorts)
{
	const struct cli_opt *tables[2] = {opts, common};
	size_t n = 0, k = 0;
	int r = KY_ERR_INTERNAL;

	if (nlongs < 1 || nshorts < 1)
		return KY_ERR_INTERNAL;
	shorts[0] = '\0';
	for (size_t t = 0; t < 2; t++)
		for (const struct cli_opt *o = tables[t]; o != NULL && !cli_opt_is_end(o); o++) {
			if (cli_opt_is_text(o))
				continue;
			if ((r = cli_opts_add(o, longs, nlongs, &n, shorts, nshorts, &k)) != 0) {
				longs[0] = (struct option){0};
				shorts[0] = '\0';
				return r;
			}
		}
	longs[n] = (struct option){0};
	return 0;
}

int cli_getopt(int argc, char **argv, const struct cli_opt *opts, const struct cli_opt *common)
{
	static struct option longs[CLI_OPTS_MAX + 1];
	static char shorts[CLI_OPTS_SHORT_MAX];
	static const struct cli_opt *built_opts, *built_common;
	static bool built;

	if (!built || built_opts != opts || built_common != common) {
		built_opts = opts;
		built_common = common;
		built = true;
		if (cli_opts_build(opts, common, longs, CLI_OPTS_MAX + 1, shorts, sizeof(shorts)) !=
		    0)
			cli_err(KY_ERR_INTERNAL, cli_cmd_name(), "its option table does not build");
	}
	return getopt_long(argc, argv, shorts, longs, NULL);
}

/* "-x, --name ARG" into out. */
static void cli_opt_label(const struct cli_opt *o, char *out, size_t outlen)
{
	const char *arg = o->arg == CLI_ARG_REQUIRED && o->argname != NULL ? o->argname : NULL;

	if (o->name != NULL && cli_opt_short(o->id))
		snprintf(out, outlen, "-%c, --%s%s%s", o->id, o->name, arg ? " " : "",
		         arg ? arg : "");
	else if (o->name != NULL)
		snprintf(out, outlen, "--%s%s%s", o->name, arg ? " " : "", arg ? arg : "");
	else
		snprintf(out, outlen, "-%c%s%s", o->id, arg ? " " : "", arg ? arg : "");
}

void cli_opt_print(FILE *f, const struct cli_opt *o)
{
	char label[128];
	const char *p;
	int col;

	if (cli_opt_is_end(o) || o->help == NULL)
		return;
	if (cli_opt_is_text(o)) {
		fputs(o->help, f);
		return;
	}
	cli_opt_label(o, label, sizeof(label));
	col = fprintf(f, "%*s%s", CLI_OPTS_INDENT, "", label);
	if (col + 1 > CLI_OPTS_HELP_COL) {
		fputc('\n', f);
		col = 0;
	}
	fprintf(f, "%*s", CLI_OPTS_HELP_COL - col, "");
	col = CLI_OPTS_HELP_COL;
	/* Greedy wrapping, word by word; a word longer than a line gets a line of its own. */
	p = o->help;
	while (*p != '\0') {
		size_t w;

		if (*p == ' ') {
			p++;
			continue;
		}
		if (*p == '\n') {
			fprintf(f, "\n%*s", CLI_OPTS_HELP_COL, "");
			col = CLI_OPTS_HELP_COL;
			p++;
			while (*p == ' ')
				p++;
			continue;
		}
		w = strcspn(p, " \n");
		if (col > CLI_OPTS_HELP_COL && col + 1 + (int)w > CLI_OPTS_WIDTH) {
			fprintf(f, "\n%*s", CLI_OPTS_HELP_COL, "");
			col = CLI_OPTS_HELP_COL;
		} else if (col > CLI_OPTS_HELP_COL) {
			fputc(' ', f);
			col++;
		}
		fwrite(p, 1, w, f);
		col += (int)w;
		p += w;
	}
	fputc('\n', f);
}

void cli_opts_help(FILE *f, const char *usage, const struct cli_opt *opts,
                   const struct cli_opt *common)
{
	fputs(usage, f);
	for (const struct cli_opt *o = opts; o != NULL && !cli_opt_is_end(o); o++)
		cli_opt_print(f, o);
	if (common == NULL)
		return;
	fputs("\ncommon options:\n", f);
	for (const struct cli_opt *o = common; !cli_opt_is_end(o); o++)
		cli_opt_print(f, o);
}
