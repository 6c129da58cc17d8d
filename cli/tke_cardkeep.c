/* kyok tke card-keep: keeps the card in reader 1 powered between kyok commands, so that
 * the PIN of an administrator's signature card is asked once per insertion. pcscd powers
 * off a card that no program holds (about a second after the last session on Debian's
 * pcscd), and a card powered off forgets its verified PIN. This command holds the card
 * (a PC/SC connection that sends nothing) from its insertion to its removal, then waits
 * for the next card; stopped (Ctrl-C, SIGTERM), it resets the card it holds, which forgets
 * its PIN. While it runs, its pid is in the workspace (card-keep-N.pid): kyok commands leave
 * a card they verified powered only then, and reset it otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "kyok/card.h"
#include "kyok/err.h"

#define CARDKEEP_ERR     512
#define CARDKEEP_TICK_MS 500 /* how often a wait looks at a stop request */

static const char cardkeep_usage[] =
    "usage: kyok tke card-keep [--reader N] [options]\n"
    "\n"
    "Keeps the smart card in reader 1 powered between kyok commands, so that the\n"
    "PIN of a signature card is asked once per insertion: once entered, it stays\n"
    "verified while the card stays in the reader. pcscd powers off a card no\n"
    "program holds, which forgets its PIN; this command holds each card inserted\n"
    "(it sends the card nothing) until it is removed, then waits for the next. Run\n"
    "it beside the commands, in the workstation's session, and stop it (Ctrl-C)\n"
    "when the ceremony ends: it then resets the card it holds, which forgets its\n"
    "PIN. Without card-keep, every kyok command resets the card it verified when it\n"
    "ends. Whoever can run programs on this workstation while the PIN is verified\n"
    "can use the card as if they had the PIN (sign, change the PIN): run it only on a\n"
    "workstation nobody else uses, with the same workspace as the commands\n"
    "($KYOK_TKE_FILES), and keep the card in your sight.\n"
    "\n";

static volatile sig_atomic_t cardkeep_stop;

static void cardkeep_on_signal(int sig)
{
	(void)sig;
	cardkeep_stop = 1;
}

/* Waits for the reader to hold a card (present) or to be empty, until a stop request:
 * 0 when it does, -1 when stopped, an error code (printed) when pcscd fails. */
static int cardkeep_wait(struct ky_pcsc *p, const char *reader, bool present)
{
	char err[CARDKEEP_ERR];

	while (!cardkeep_stop) {
		int r = ky_pcsc_wait(p, reader, present, CARDKEEP_TICK_MS, err, sizeof(err));
		if (r == 0)
			return 0;
		if (r != KY_ERR_CARD_ABSENT && r != KY_ERR_CARD_REMOVED) {
			return cli_err(r, NULL, "%s", err);
		}
	}
	return -1;
}

/* Writes this process's pid file; refuses when another card-keep of the reader runs. */
static int cardkeep_pid_write(unsigned reader)
{
	char path[600], buf[32];
	int fd, r = KY_ERR_INTERNAL, n;

	if ((r = cli_workspace_ensure()) != 0)
		return r;
	if (cli_card_keep_running(reader)) {
		r = KY_ERR_CARD_BUSY;
		cli_fail(r, NULL, "another 'kyok tke card-keep' holds reader %u for this workspace",
		         reader);
		return r;
	}
	cli_card_keep_pid_path(reader, path, sizeof(path));
	(void)unlink(path); /* a stale one */
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
		r = KY_ERR_IO;
		cli_fail(r, path, "%s", strerror(errno));
		return r;
	}
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (write(fd, buf, (size_t)n) != n) {
		r = KY_ERR_IO;
		cli_fail(r, path, "%s", strerror(errno));
		close(fd);
		(void)unlink(path);
		return r;
	}
	close(fd);
	return 0;
}

int tke_card_keep_main(int argc, char **argv)
{
	enum { OPT_READER = 0x2001 };
	static const struct cli_opt opts[] = {
	    {"reader", OPT_READER, CLI_ARG_REQUIRED, "N", "the reader to watch (default 1)"},
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, c;
	unsigned number = 1;
	struct ky_pcsc *p = NULL;
	struct ky_card *held = NULL;
	char reader[KY_CARD_READER_MAX], err[CARDKEEP_ERR];
	struct sigaction sa;
	bool pid_written = false;

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, cardkeep_usage, opts, cli_common_opts);
			return 0;
		}
		if (c == OPT_READER) {
			char *end = NULL;
			unsigned long v = strtoul(optarg, &end, 10);
			if (end == optarg || *end != '\0' || v < 1 || v > 16) {
				cli_fail(KY_ERR_USAGE, "--reader",
				         "not a reader number 1 to 16: '%s'", optarg);
				return ky_err_exit(KY_ERR_USAGE);
			}
			number = (unsigned)v;
			continue;
		}
		if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = cardkeep_on_signal;
	sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGINT, &sa, NULL);
	(void)sigaction(SIGTERM, &sa, NULL);
	if ((r = ky_pcsc_open(&p, err, sizeof(err))) != 0 ||
	    (r = ky_pcsc_reader(p, number, reader, err, sizeof(err))) != 0) {
		cli_fail(r, NULL, "%s", err);
		goto out;
	}
	if ((r = cardkeep_pid_write(number)) != 0)
		goto out;
	pid_written = true;
	printf("keeping the card in reader %u '%s' powered; stop with Ctrl-C\n", number, reader);
	fflush(stdout);
	for (;;) {
		if ((r = cardkeep_wait(p, reader, true)) != 0)
			break;
		r = ky_card_keep(p, reader, &held, err, sizeof(err));
		if (r == KY_ERR_CARD_ABSENT)
			continue; /* pulled out again at once */
		if (r != 0) {
			cli_fail(r, NULL, "%s", err);
			break;
		}
		printf("card inserted in reader %u: held; its PIN, once entered, stays verified "
		       "until it is removed\n",
		       number);
		fflush(stdout);
		if ((r = cardkeep_wait(p, reader, false)) != 0)
			break;
		ky_card_free_keep(held);
		held = NULL;
		printf("card removed from reader %u: its PIN is forgotten\n", number);
		fflush(stdout);
	}
	if (r == -1) {
		/* Printed before the reset: another program's PC/SC transaction makes it wait. */
		if (held != NULL)
			printf("stopped: the card in reader %u is reset, its PIN forgotten (when "
			       "another program holds the card, the reset waits for it: remove the "
			       "card to make it forget its PIN at once)\n",
			       number);
		else
			printf("stopped\n");
		fflush(stdout);
		r = 0;
	}
out:
	if (held != NULL) {
		/* Another program's PC/SC transaction would make the reset wait: say so first. */
		printf("resetting the card in reader %u (if another program holds it, this waits "
		       "for it: remove the card to make it forget its PIN now)\n",
		       number);
		fflush(stdout);
	}
	ky_card_free(held); /* resets the card: its PIN forgotten */
	ky_pcsc_free(p);
	if (pid_written) {
		char path[600];

		cli_card_keep_pid_path(number, path, sizeof(path));
		(void)unlink(path);
	}
	return ky_err_exit(r);
}
