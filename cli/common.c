/* Command dispatch, error lines and the options every command accepts. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "kyok/crypto.h"
#include "cli/failover.h"

struct cli_global cli_g = {.password_fd = -1, .card_pin_fd = -1, .card_wait = -1};

const struct cli_opt cli_common_opts[] = {
    {"output", CLI_OPT_OUTPUT, CLI_ARG_REQUIRED, "table|json", "listing format (default table)"},
    {"password-file", CLI_OPT_PASSWORD_FILE, CLI_ARG_REQUIRED, "PATH",
     "read the next password asked from PATH (repeatable)"},
    {"password-fd", CLI_OPT_PASSWORD_FD, CLI_ARG_REQUIRED, "N",
     "read passwords, one per line, from descriptor N"},
    CLI_OPT_ROW_YES,
    CLI_OPT_ROW_INSTANCE,
    CLI_OPT_ROW_TIMEOUT,
    {"card-pin-file", CLI_OPT_CARD_PIN_FILE, CLI_ARG_REQUIRED, "PATH",
     "the PIN of a signature card, read only when the card asks for it (repeatable: the next "
     "file for the next card asking)"},
    {"card-pin-fd", CLI_OPT_CARD_PIN_FD, CLI_ARG_REQUIRED, "N",
     "card PINs, one per line, from descriptor N, when asked"},
    {"card-wait", CLI_OPT_CARD_WAIT, CLI_ARG_REQUIRED, "SECONDS",
     "wait at most this long for a signature card to be inserted into reader 1 (default 300; "
     "0: do not wait)"},
    CLI_OPT_ROW_CACERT,
    CLI_OPT_ROW_HELP,
    CLI_OPT_END};

/* The running command, for messages: "kyok tke sigkeys", and its argv for getopt errors. */
static char cli_cmd_full[128] = "kyok";
static char **cli_cmd_argv;

const char *cli_cmd_name(void)
{
	return cli_cmd_full;
}

static void cli_fail_v(int err, const char *subject, const char *detail_fmt, va_list ap)
{
	char detail[1024] = "";

	if (detail_fmt != NULL)
		vsnprintf(detail, sizeof(detail), detail_fmt, ap);
	fputs("error: ", stderr);
	if (subject != NULL && subject[0] != '\0')
		fprintf(stderr, "%s: ", subject);
	fputs(ky_err_message(err), stderr);
	if (detail[0] != '\0')
		fprintf(stderr, ": %s", detail);
	fputc('\n', stderr);
}

int cli_fail(int err, const char *subject, const char *detail_fmt, ...)
{
	va_list ap;

	va_start(ap, detail_fmt);
	cli_fail_v(err, subject, detail_fmt, ap);
	va_end(ap);
	return ky_err_exit(err);
}

int cli_err(int err, const char *subject, const char *detail_fmt, ...)
{
	va_list ap;

	va_start(ap, detail_fmt);
	cli_fail_v(err, subject, detail_fmt, ap);
	va_end(ap);
	return err;
}

int cli_check_private(const char *what, const char *path)
{
	char why[800], subject[700];
	int r = ky_path_check_private(path, why, sizeof(why));

	if (r == 0)
		return 0;
	snprintf(subject, sizeof(subject), "%s '%s'", what, path);
	cli_fail(r, subject, "%s", r == KY_ERR_NOT_FOUND ? "no such file" : why);
	return r;
}

int cli_harden(void)
{
	char err[256];
	int r = ky_process_harden(err, sizeof(err));

	if (r != 0) {
		cli_fail(r, "kyok", "%s", err);
		return r;
	}
	if ((r = ky_crypto_init()) != 0) {
		cli_fail(r, "kyok", "cannot initialise the crypto library");
		return r;
	}
	return 0;
}

void cli_usage_table(FILE *f, const char *prog, const struct cli_cmd *cmds)
{
	int width = 0;

	for (const struct cli_cmd *c = cmds; c->name != NULL; c++)
		if ((int)strlen(c->name) > width)
			width = (int)strlen(c->name);
	fprintf(f, "usage: %s <command> [options]\n\ncommands:\n", prog);
	for (const struct cli_cmd *c = cmds; c->name != NULL; c++)
		fprintf(f, "  %-*s  %s\n", width, c->name, c->help);
	fprintf(f, "\n'%s <command> --help' describes a command and its options.\n", prog);
}

static const struct cli_cmd *cli_cmd_find(const struct cli_cmd *cmds, const char *name)
{
	for (const struct cli_cmd *c = cmds; c->name != NULL; c++)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

void cli_card_pins_unread(void)
{
	for (; cli_g.card_pin_files_read < cli_g.ncard_pin_files; cli_g.card_pin_files_read++)
		fprintf(stderr, "note: --card-pin-file '%s' not read: no card asked for its PIN\n",
		        cli_g.card_pin_files[cli_g.card_pin_files_read]);
}

static int cli_run(const char *prog, const struct cli_cmd *c, int argc, char **argv)
{
	char saved[sizeof(cli_cmd_full)];
	char **saved_argv = cli_cmd_argv;
	int status;

	memcpy(saved, cli_cmd_full, sizeof(saved));
	snprintf(cli_cmd_full, sizeof(cli_cmd_full), "%s %s", prog, c->name);
	cli_cmd_argv = argv;
	optind = 0; /* full getopt reset for the command's own parsing */
	opterr = 0; /* cli_common_opt prints unknown options itself */
	status = c->fn(argc, argv);
	cli_card_pins_unread();
	memcpy(cli_cmd_full, saved, sizeof(saved));
	cli_cmd_argv = saved_argv;
	return status;
}

int cli_dispatch(const char *prog, const struct cli_cmd *cmds, int argc, char **argv)
{
	const struct cli_cmd *c;

	if (argc < 2) {
		cli_usage_table(stderr, prog, cmds);
		return KY_EXIT_USAGE;
	}
	if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		if (argc > 2 && strcmp(argv[1], "help") == 0) {
			char help[] = "--help";
			char *hargv[3] = {argv[2], help, NULL};
			if ((c = cli_cmd_find(cmds, argv[2])) == NULL)
				return cli_fail(KY_ERR_USAGE, prog,
				                "unknown command '%s': see '%s --help'", argv[2],
				                prog);
			return cli_run(prog, c, 2, hargv);
		}
		cli_usage_table(stdout, prog, cmds);
		return 0;
	}
	if ((c = cli_cmd_find(cmds, argv[1])) == NULL)
		return cli_fail(KY_ERR_USAGE, prog, "unknown command '%s': see '%s --help'",
		                argv[1], prog);
	return cli_run(prog, c, argc - 1, argv + 1);
}

static int cli_parse_fd(const char *arg, int *fd)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v < 0 || v > INT_MAX)
		return KY_ERR_USAGE;
	*fd = (int)v;
	return 0;
}

int cli_common_opt(int opt, const char *arg)
{
	const char *word = NULL;

	switch (opt) {
	case CLI_OPT_OUTPUT:
		if (strcmp(arg, "json") == 0)
			cli_g.json = true;
		else if (strcmp(arg, "table") == 0)
			cli_g.json = false;
		else {
			cli_fail(KY_ERR_USAGE, cli_cmd_full,
			         "--output takes 'table' or 'json', not '%s'", arg);
			return KY_ERR_USAGE;
		}
		return 0;
	case CLI_OPT_PASSWORD_FILE:
		if (cli_g.npassword_files >=
		    (int)(sizeof(cli_g.password_files) / sizeof(cli_g.password_files[0]))) {
			cli_fail(KY_ERR_USAGE, cli_cmd_full, "too many --password-file options");
			return KY_ERR_USAGE;
		}
		if (arg[0] == '\0') {
			cli_fail(KY_ERR_USAGE, cli_cmd_full, "--password-file needs a path");
			return KY_ERR_USAGE;
		}
		cli_g.password_files[cli_g.npassword_files++] = arg;
		return 0;
	case CLI_OPT_PASSWORD_FD:
		if (cli_parse_fd(arg, &cli_g.password_fd) != 0) {
			cli_fail(KY_ERR_USAGE, cli_cmd_full,
			         "--password-fd takes a descriptor number, not '%s'", arg);
			return KY_ERR_USAGE;
		}
		return 0;
	case CLI_OPT_YES:
		cli_g.yes = true;
		return 0;
	case CLI_OPT_INSTANCE:
		if (arg[0] == '\0') {
			cli_fail(KY_ERR_USAGE, cli_cmd_full, "--instance needs a directory");
			return KY_ERR_USAGE;
		}
		cli_g.instance_dir = arg;
		return 0;
	case CLI_OPT_TIMEOUT:
		if (cli_parse_timeout(arg, &cli_g.timeout) != 0) {
			cli_fail(KY_ERR_USAGE, cli_cmd_full,
			         "--timeout takes a whole number of seconds from 1 to %d, not '%s'",
			         CLI_TIMEOUT_MAX, arg);
			return KY_ERR_USAGE;
		}
		return 0;
	case CLI_OPT_CARD_PIN_FILE:
		if (cli_g.ncard_pin_files >=
		    (int)(sizeof(cli_g.card_pin_files) / sizeof(cli_g.card_pin_files[0]))) {
			cli_fail(KY_ERR_USAGE, cli_cmd_full, "too many --card-pin-file options");
			return KY_ERR_USAGE;
		}
		if (arg[0] == '\0') {
			cli_fail(KY_ERR_USAGE, cli_cmd_full, "--card-pin-file needs a path");
			return KY_ERR_USAGE;
		}
		cli_g.card_pin_files[cli_g.ncard_pin_files++] = arg;
		return 0;
	case CLI_OPT_CARD_PIN_FD:
		if (cli_parse_fd(arg, &cli_g.card_pin_fd) != 0) {
			cli_fail(KY_ERR_USAGE, cli_cmd_full,
			         "--card-pin-fd takes a descriptor number, not '%s'", arg);
			return KY_ERR_USAGE;
		}
		return 0;
	case CLI_OPT_CARD_WAIT: {
		char *end;
		long v;

		errno = 0;
		v = strtol(arg, &end, 10);
		if (errno != 0 || end == arg || *end != '\0' || v < 0 || v > CLI_CARD_WAIT_MAX) {
			cli_fail(
			    KY_ERR_USAGE, cli_cmd_full,
			    "--card-wait takes a whole number of seconds from 0 to %d, not '%s'",
			    CLI_CARD_WAIT_MAX, arg);
			return KY_ERR_USAGE;
		}
		cli_g.card_wait = v;
		return 0;
	}
	case CLI_OPT_CACERT:
		if (arg[0] == '\0') {
			cli_fail(KY_ERR_USAGE, cli_cmd_full, "--cacert needs a file");
			return KY_ERR_USAGE;
		}
		cli_g.cacert = arg;
		return 0;
	case CLI_IMPRINT_OPT:
		if (arg[0] == '\0') {
			cli_fail(KY_ERR_USAGE, cli_cmd_full, "--imprint-credential needs a file");
			return KY_ERR_USAGE;
		}
		cli_imprint_set_file(arg);
		return 0;
	case '?':
	case ':':
		if (cli_cmd_argv != NULL && optind > 0)
			word = cli_cmd_argv[optind - 1];
		if (word != NULL && word[0] == '-')
			cli_fail(KY_ERR_USAGE, cli_cmd_full,
			         "unknown option or missing value: '%s': see '%s --help'", word,
			         cli_cmd_full);
		else
			cli_fail(KY_ERR_USAGE, cli_cmd_full, "unknown option: see '%s --help'",
			         cli_cmd_full);
		return KY_ERR_USAGE;
	default:
		cli_fail(KY_ERR_USAGE, cli_cmd_full, "unexpected option: see '%s --help'",
		         cli_cmd_full);
		return KY_ERR_USAGE;
	}
}

int cli_parse_numbers(const char *s, int max, int *out, size_t cap, size_t *n, char *why,
                      size_t whylen)
{
	const char *p = s;
	size_t count = 0;

	*n = 0;
	if (s == NULL) {
		snprintf(why, whylen, "no numbers given");
		return KY_ERR_USAGE;
	}
	for (;;) {
		const char *start, *end;
		long v = 0;

		while (*p == ' ' || *p == '\t')
			p++;
		start = p;
		while (*p >= '0' && *p <= '9') {
			if (v <= INT_MAX / 10)
				v = v * 10 + (*p - '0');
			else
				v = (long)INT_MAX + 1;
			p++;
		}
		if (p == start) {
			if (*p == ',' || *p == '\0')
				snprintf(why, whylen, "empty item in number list '%s'", s);
			else
				snprintf(why, whylen, "'%s' is not a list of numbers like 1,2", s);
			return KY_ERR_USAGE;
		}
		end = p;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != ',' && *p != '\0') {
			snprintf(why, whylen, "'%s' is not a list of numbers like 1,2", s);
			return KY_ERR_USAGE;
		}
		if (v < 1 || v > max) {
			snprintf(why, whylen, "number %.*s out of range: use 1 to %d",
			         (int)(end - start > 12 ? 12 : end - start), start, max);
			return KY_ERR_USAGE;
		}
		for (size_t i = 0; i < count; i++)
			if (out[i] == (int)v) {
				snprintf(why, whylen, "number %ld given twice", v);
				return KY_ERR_USAGE;
			}
		if (count == cap) {
			snprintf(why, whylen, "too many numbers: at most %zu", cap);
			return KY_ERR_USAGE;
		}
		out[count++] = (int)v;
		if (*p == '\0')
			break;
		p++; /* the comma */
	}
	*n = count;
	return 0;
}

int cli_opts_common_only(int argc, char **argv, const char *usage)
{
	int c;

	while ((c = cli_getopt(argc, argv, NULL, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, usage, NULL, cli_common_opts);
			return -1;
		}
		if (cli_common_opt(c, optarg) != 0)
			return KY_ERR_USAGE;
	}
	return cli_no_operands(argc, argv);
}

int cli_no_operands(int argc, char **argv)
{
	if (optind < argc) {
		cli_fail(KY_ERR_USAGE, cli_cmd_full, "unexpected argument '%s': see '%s --help'",
		         argv[optind], cli_cmd_full);
		return KY_ERR_USAGE;
	}
	return 0;
}
