/* Command-line options as one table per command: each row names an option once (long name,
 * short letter, argument, help), and both the getopt_long arrays and the --help lines are
 * made from it. Included by cli/cli.h.
 *
 *	static const struct cli_opt opts[] = {
 *	    {"sigkey", OPT_SIGKEY, CLI_ARG_REQUIRED, "N", "the signature key to install"},
 *	    CLI_OPT_END};
 *	while ((opt = cli_getopt(argc, argv, opts, cli_common_opts)) != -1)
 *		switch (opt) {
 *		case 'h':
 *			cli_opts_help(stdout, usage, opts, cli_common_opts);
 *			return 0;
 *		...
 */
#ifndef KYOK_CLI_OPTS_H
#define KYOK_CLI_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct option;

enum cli_arg {
	CLI_ARG_NONE,
	CLI_ARG_REQUIRED,
};

/* One option. A row with neither name nor id is text (help printed as it is, e.g. a
 * paragraph between two groups of options); a row of all zeros (CLI_OPT_END) ends a table. */
struct cli_opt {
	const char *name;    /* long name without "--"; NULL: the short letter only */
	int id;              /* what cli_getopt returns: a short letter, which is then accepted
	                      * as -x too, or a value from CLI_OPT_LONG_ONLY up (--name only) */
	enum cli_arg arg;    /* whether the option takes a value */
	const char *argname; /* the value's name in help, e.g. "FILE"; NULL without a value */
	const char *help;    /* one or more sentences, wrapped when printed ('\n' breaks a line);
	                      * NULL: accepted but not listed (another spelling, an option
	                      * refused with a reason) */
};
#define CLI_OPT_LONG_ONLY 0x100
#define CLI_OPT_END                               \
	{                                         \
		NULL, 0, CLI_ARG_NONE, NULL, NULL \
	}
#define CLI_OPT_TEXT(text)                        \
	{                                         \
		NULL, 0, CLI_ARG_NONE, NULL, text \
	}

/* The layout of option lines: indent, the column help starts at, the width wrapped to. */
#define CLI_OPTS_INDENT    2
#define CLI_OPTS_HELP_COL  26
#define CLI_OPTS_WIDTH     86
#define CLI_OPTS_MAX       96 /* options of a command and its common table together */
#define CLI_OPTS_SHORT_MAX (2 * CLI_OPTS_MAX + 1)

/* The options every command accepts (cli/common.c: --output, --password-file, ...,
 * --help as 'h'); cli_common_opt takes them. */
extern const struct cli_opt cli_common_opts[];
enum cli_common_opt_id {
	CLI_OPT_OUTPUT = 0x1001,
	CLI_OPT_PASSWORD_FILE,
	CLI_OPT_PASSWORD_FD,
	CLI_OPT_YES,
	CLI_OPT_INSTANCE,
	CLI_OPT_TIMEOUT,
	CLI_OPT_CARD_PIN_FILE,
	CLI_OPT_CARD_PIN_FD,
	CLI_OPT_CARD_WAIT,
	CLI_OPT_CACERT,
};
/* Rows of cli_common_opts that 'kyok kp' lists in its own common table too. */
#define CLI_OPT_ROW_YES                                                               \
	{                                                                             \
		"yes", CLI_OPT_YES, CLI_ARG_NONE, NULL, "answer yes to confirmations" \
	}
#define CLI_OPT_ROW_INSTANCE                                                          \
	{                                                                             \
		"instance", CLI_OPT_INSTANCE, CLI_ARG_REQUIRED, "DIR",                \
		    "instance directory (default $KYOK_INSTANCE or ~/.kyok/instance)" \
	}
#define CLI_OPT_ROW_TIMEOUT                                                                        \
	{                                                                                          \
		"timeout", CLI_OPT_TIMEOUT, CLI_ARG_REQUIRED, "SECONDS",                           \
		    "wait at most this long for each crypto unit (default $KYOK_TIMEOUT, else 15)" \
	}
#define CLI_OPT_ROW_CACERT                                                               \
	{                                                                                \
		"cacert", CLI_OPT_CACERT, CLI_ARG_REQUIRED, "FILE",                      \
		    "CA certificates that crypto units on https must chain to (default " \
		    "$KYOK_CA_FILE, else the instance's ca.crt)"                         \
	}
#define CLI_OPT_ROW_HELP                                     \
	{                                                    \
		"help", 'h', CLI_ARG_NONE, NULL, "this text" \
	}

/* --imprint-credential FILE, for the commands that act on crypto units in imprint mode: a
 * row for their tables; cli_common_opt takes it. */
#define CLI_IMPRINT_OPT 0x1101
#define CLI_OPT_IMPRINT                                                                            \
	{                                                                                          \
		"imprint-credential", CLI_IMPRINT_OPT, CLI_ARG_REQUIRED, "FILE",                   \
		    "the instance's imprint credential, which a unit in imprint mode demands "     \
		    "(default: $KYOK_IMPRINT_CREDENTIAL_FILE, else imprint-credential.pem in the " \
		    "instance directory)"                                                          \
	}

/* Fills longs (ends with a row of zeros) and shorts ("h" "k:" ...) for getopt_long from opts
 * and then common (either may be NULL). Pure. KY_ERR_INTERNAL when they do not fit
 * (nlongs, nshorts), when a long name or a short letter is given twice with different
 * meanings, or when an id is neither a short letter nor from CLI_OPT_LONG_ONLY up. */
int cli_opts_build(const struct cli_opt *opts, const struct cli_opt *common, struct option *longs,
                   size_t nlongs, char *shorts, size_t nshorts);

/* getopt_long over the options of opts and then common: the row's id, '?' for an unknown
 * option or a missing value (cli_common_opt reports it), -1 at the end. The arrays are made
 * once per table (kept until another table is parsed). A table that does not build is
 * reported and parsed as if every option were unknown. */
int cli_getopt(int argc, char **argv, const struct cli_opt *opts, const struct cli_opt *common);

/* One option's lines: "  -x, --name ARG" and its help from column CLI_OPTS_HELP_COL,
 * wrapped to CLI_OPTS_WIDTH (the help starts a line of its own when the name reaches the
 * column). Text rows are printed as they are; unlisted rows print nothing. */
void cli_opt_print(FILE *f, const struct cli_opt *o);
/* The --help text: usage (the usage lines, the description and, when wanted, a heading such
 * as "options:"), the lines of opts, then a blank line, "common options:" and the lines of
 * common (either table may be NULL). */
void cli_opts_help(FILE *f, const char *usage, const struct cli_opt *opts,
                   const struct cli_opt *common);

#endif
