/* Passwords, secret lines, visible prompts and confirmations.
 *
 * Secrets are read into ky_secret_alloc'd buffers of one fixed size, so that
 * cli_secret_free knows how much to cleanse. A secret never reaches argv, the
 * environment or an error message.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cli/cli.h"
#include "kyok/crypto.h"

#define CLI_SECRET_MAX    1024 /* bytes of a secret, NUL excluded */
#define CLI_CONFIRM_TRIES 3

static int cli_next_password_file;

static char *cli_secret_new(void)
{
	char *s = ky_secret_alloc(CLI_SECRET_MAX + 1);

	if (s != NULL)
		memset(s, 0, CLI_SECRET_MAX + 1);
	return s;
}

void cli_secret_free(char *s)
{
	ky_secret_free(s, CLI_SECRET_MAX + 1);
}

/* ---- sources ---- */

/* Reads a secret from a file (what names it in messages): private to its owner, one
 * trailing newline stripped, not empty, one line. */
static int cli_secret_from_file(const char *what, const char *path, char **out)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	char *s = NULL;
	size_t n;

	if ((r = cli_check_private(what, path)) != 0)
		goto out;
	if ((r = ky_file_read(path, CLI_SECRET_MAX + 1, &b)) != 0) {
		if (r == KY_ERR_TOO_LARGE)
			cli_fail(r, path, "a secret file holds at most %d bytes", CLI_SECRET_MAX);
		else if (r == KY_ERR_NOT_FOUND)
			cli_fail(r, path, "no such file");
		else
			cli_fail(r, path, "%s", strerror(errno));
		goto out;
	}
	n = b.len;
	if (n > 0 && b.data[n - 1] == '\n')
		n--;
	r = KY_ERR_USAGE;
	if (n == 0) {
		cli_fail(r, path, "file is empty: it must hold the secret on one line");
		goto out;
	}
	if (n > CLI_SECRET_MAX) {
		cli_fail(KY_ERR_TOO_LARGE, path, "a secret file holds at most %d bytes",
		         CLI_SECRET_MAX);
		r = KY_ERR_TOO_LARGE;
		goto out;
	}
	if (memchr(b.data, '\n', n) != NULL || memchr(b.data, '\0', n) != NULL) {
		cli_fail(r, path, "file must hold the secret on one line, without NUL bytes");
		goto out;
	}
	r = KY_ERR_NOMEM;
	if ((s = cli_secret_new()) == NULL) {
		cli_fail(r, path, NULL);
		goto out;
	}
	memcpy(s, b.data, n);
	*out = s;
	s = NULL; /* transferred */
	r = 0;
out:
	cli_secret_free(s);
	ky_buf_free(&b);
	return r;
}

/* Reads one line from fd, byte by byte so that the next line stays for the next call.
 * Returns 0, KY_ERR_IO, KY_ERR_TOO_LARGE, or KY_ERR_CANCELLED at end of input with nothing
 * read. */
static int cli_read_line(int fd, char *s, size_t cap, size_t *len)
{
	size_t n = 0;

	for (;;) {
		char c;
		ssize_t got = read(fd, &c, 1);
		if (got < 0) {
			if (errno == EINTR)
				return KY_ERR_CANCELLED;
			return KY_ERR_IO;
		}
		if (got == 0) {
			if (n == 0)
				return KY_ERR_CANCELLED;
			break;
		}
		if (c == '\n')
			break;
		if (n + 1 >= cap) {
			OPENSSL_cleanse(&c, 1);
			return KY_ERR_TOO_LARGE;
		}
		s[n++] = c;
		OPENSSL_cleanse(&c, 1);
	}
	s[n] = '\0';
	*len = n;
	return 0;
}

static int cli_secret_from_fd(int fd, char **out)
{
	int r = KY_ERR_NOMEM;
	char *s = NULL;
	char subject[32];
	size_t n = 0;

	snprintf(subject, sizeof(subject), "descriptor %d", fd);
	if ((s = cli_secret_new()) == NULL) {
		cli_fail(r, subject, NULL);
		goto out;
	}
	r = cli_read_line(fd, s, CLI_SECRET_MAX + 1, &n);
	switch (r) {
	case 0:
		break;
	case KY_ERR_CANCELLED:
		r = KY_ERR_USAGE;
		cli_fail(r, subject, "no more lines to read a secret from");
		goto out;
	case KY_ERR_TOO_LARGE:
		cli_fail(r, subject, "line longer than %d bytes", CLI_SECRET_MAX);
		goto out;
	default:
		cli_fail(r, subject, "%s", strerror(errno));
		goto out;
	}
	r = KY_ERR_USAGE;
	if (n == 0) {
		cli_fail(r, subject, "empty line where a secret was expected");
		goto out;
	}
	if (memchr(s, '\0', n) != NULL) {
		cli_fail(r, subject, "NUL byte in a secret line");
		goto out;
	}
	*out = s;
	s = NULL; /* transferred */
	r = 0;
out:
	cli_secret_free(s);
	return r;
}

/* ---- the terminal ---- */

static volatile sig_atomic_t cli_tty_signal;

static void cli_tty_on_signal(int sig)
{
	cli_tty_signal = sig;
}

static const int cli_tty_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP};
#define CLI_TTY_NSIGNALS (sizeof(cli_tty_signals) / sizeof(cli_tty_signals[0]))

/* Asks prompt on the terminal and reads one line into s (cap bytes with NUL), echo off
 * when secret. KY_ERR_USAGE when there is no terminal (nothing printed), KY_ERR_CANCELLED
 * on end of input or a signal (the signal is delivered again after the terminal is
 * restored). */
static int cli_tty_ask(const char *prompt, bool secret, char *s, size_t cap)
{
	int r = KY_ERR_INTERNAL;
	int fd;
	struct termios saved, quiet;
	struct sigaction sa, old[CLI_TTY_NSIGNALS];
	bool restore = false;
	size_t n = 0;

	fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return KY_ERR_USAGE;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = cli_tty_on_signal; /* no SA_RESTART: read returns EINTR */
	sigemptyset(&sa.sa_mask);
	cli_tty_signal = 0;
	for (size_t i = 0; i < CLI_TTY_NSIGNALS; i++)
		sigaction(cli_tty_signals[i], &sa, &old[i]);
	if (secret) {
		if (tcgetattr(fd, &saved) != 0) {
			r = KY_ERR_USAGE;
			goto out;
		}
		quiet = saved;
		quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK);
		quiet.c_lflag |= ECHONL;
		if (tcsetattr(fd, TCSAFLUSH, &quiet) != 0) {
			r = KY_ERR_USAGE;
			goto out;
		}
		restore = true;
	}
	if (dprintf(fd, "%s: ", prompt) < 0) {
		r = KY_ERR_IO;
		goto out;
	}
	r = cli_read_line(fd, s, cap, &n);
	if (r == KY_ERR_CANCELLED && !cli_tty_signal)
		(void)!write(fd, "\n", 1); /* end of input: end the prompt's line */
out:
	if (restore)
		tcsetattr(fd, TCSAFLUSH, &saved);
	for (size_t i = 0; i < CLI_TTY_NSIGNALS; i++)
		sigaction(cli_tty_signals[i], &old[i], NULL);
	close(fd);
	if (cli_tty_signal) {
		if (restore)
			fputc('\n', stderr);
		raise(cli_tty_signal);
		r = KY_ERR_CANCELLED;
	}
	return r;
}

static int cli_tty_fail(int r, const char *prompt, const char *hint)
{
	switch (r) {
	case KY_ERR_USAGE:
		cli_fail(r, NULL, "no terminal to ask for %s: use %s", prompt, hint);
		break;
	case KY_ERR_TOO_LARGE:
		cli_fail(r, prompt, "at most %d characters", CLI_SECRET_MAX);
		break;
	case KY_ERR_CANCELLED:
		cli_fail(r, prompt, NULL);
		break;
	default:
		cli_fail(r, prompt, "cannot read the terminal");
		break;
	}
	return r;
}

static int cli_secret_from_tty(const char *prompt, bool confirm, const char *hint, char **out)
{
	int r = KY_ERR_NOMEM;
	char *first = NULL, *again = NULL;
	char again_prompt[256];

	snprintf(again_prompt, sizeof(again_prompt), "repeat %s", prompt);
	if ((first = cli_secret_new()) == NULL || (again = cli_secret_new()) == NULL) {
		cli_fail(r, prompt, NULL);
		goto out;
	}
	for (int tries = 0;; tries++) {
		size_t n;
		if ((r = cli_tty_ask(prompt, true, first, CLI_SECRET_MAX + 1)) != 0) {
			cli_tty_fail(r, prompt, hint);
			goto out;
		}
		if ((n = strlen(first)) == 0) {
			fprintf(stderr, "empty, try again\n");
			if (tries + 1 >= CLI_CONFIRM_TRIES) {
				r = KY_ERR_CANCELLED;
				cli_fail(r, prompt, "nothing entered");
				goto out;
			}
			continue;
		}
		if (!confirm)
			break;
		if ((r = cli_tty_ask(again_prompt, true, again, CLI_SECRET_MAX + 1)) != 0) {
			cli_tty_fail(r, again_prompt, hint);
			goto out;
		}
		if (strlen(again) == n && CRYPTO_memcmp(first, again, n) == 0)
			break;
		OPENSSL_cleanse(first, CLI_SECRET_MAX + 1);
		OPENSSL_cleanse(again, CLI_SECRET_MAX + 1);
		if (tries + 1 >= CLI_CONFIRM_TRIES) {
			r = KY_ERR_CANCELLED;
			cli_fail(r, prompt, "the two entries differed %d times", CLI_CONFIRM_TRIES);
			goto out;
		}
		fprintf(stderr, "the two entries differ, try again\n");
	}
	*out = first;
	first = NULL; /* transferred */
	r = 0;
out:
	cli_secret_free(first);
	cli_secret_free(again);
	return r;
}

int cli_password(const char *prompt, bool confirm, char **out)
{
	*out = NULL;
	if (cli_next_password_file < cli_g.npassword_files)
		return cli_secret_from_file("password file",
		                            cli_g.password_files[cli_next_password_file++], out);
	if (cli_g.password_fd >= 0)
		return cli_secret_from_fd(cli_g.password_fd, out);
	return cli_secret_from_tty(prompt, confirm, "--password-file or --password-fd", out);
}

int cli_card_pin(const char *prompt, char **out)
{
	*out = NULL;
	if (cli_g.card_pin_files_read < cli_g.ncard_pin_files)
		return cli_secret_from_file("card PIN file",
		                            cli_g.card_pin_files[cli_g.card_pin_files_read++], out);
	if (cli_g.card_pin_fd >= 0)
		return cli_secret_from_fd(cli_g.card_pin_fd, out);
	return cli_secret_from_tty(prompt, false, "--card-pin-file or --card-pin-fd", out);
}

int cli_secret_read(const char *prompt, const char *file, int fd, char **out)
{
	*out = NULL;
	if (file != NULL)
		return cli_secret_from_file("secret file", file, out);
	if (fd >= 0)
		return cli_secret_from_fd(fd, out);
	return cli_secret_from_tty(prompt, false, "a file or descriptor option", out);
}

int cli_prompt_line(const char *prompt, const char *flag_hint, char **out)
{
	int r = KY_ERR_NOMEM;
	char line[1024];

	*out = NULL;
	if ((r = cli_tty_ask(prompt, false, line, sizeof(line))) != 0)
		return cli_tty_fail(r, prompt, flag_hint);
	if ((*out = strdup(line)) == NULL) {
		cli_fail(KY_ERR_NOMEM, prompt, NULL);
		return KY_ERR_NOMEM;
	}
	return 0;
}

int cli_confirm(const char *question)
{
	int r;
	char line[64], prompt[512];

	if (cli_g.yes)
		return 0;
	snprintf(prompt, sizeof(prompt), "%s [y/N]", question);
	r = cli_tty_ask(prompt, false, line, sizeof(line));
	if (r == KY_ERR_USAGE) {
		cli_fail(KY_ERR_CANCELLED, NULL, "no terminal to ask for confirmation: use --yes");
		return KY_ERR_CANCELLED;
	}
	if (r != 0) {
		cli_fail(KY_ERR_CANCELLED, NULL, NULL);
		return KY_ERR_CANCELLED;
	}
	if (strcmp(line, "y") == 0 || strcmp(line, "Y") == 0 || strcmp(line, "yes") == 0 ||
	    strcmp(line, "YES") == 0 || strcmp(line, "Yes") == 0)
		return 0;
	cli_fail(KY_ERR_CANCELLED, NULL, NULL);
	return KY_ERR_CANCELLED;
}
