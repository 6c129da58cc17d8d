/* kyok up, down: the units' processes. kyok-unitd found and recognised (its pid file and
 * /proc), started detached, waited for (its port file), stopped (SIGTERM, then SIGKILL);
 * 'kyok down'. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/failover.h"
#include "cli/up_internal.h"

#define UP_START_WAIT_MS 30000 /* more than a unit waits for storage (10 s) */
#define UP_POLL_MS       50

/* ---- small helpers ---- */

static void up_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Reads a small file holding one positive number ("1234\n"). 0 when absent or malformed. */
long up_read_number(const char *path)
{
	struct ky_buf b = {0};
	char text[32];
	char *end;
	long v;

	if (ky_file_read(path, sizeof(text) - 1, &b) != 0)
		return 0;
	if (b.len == 0) {
		ky_buf_free(&b);
		return 0;
	}
	memcpy(text, b.data, b.len);
	text[b.len] = '\0';
	ky_buf_free(&b);
	if (text[0] == '\0' || text[strlen(text) - 1] != '\n')
		return 0; /* every writer ends the line: no newline means not complete */
	errno = 0;
	v = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\n' || v <= 0)
		return 0;
	return v;
}

/* The last lines of a unit's log, on stderr, to explain a failed start. */
void up_log_tail(const char *log)
{
	struct ky_buf b = {0};
	int fd = open(log, O_RDONLY | O_CLOEXEC);
	off_t size;
	char chunk[2048];
	ssize_t got;
	int lines = 0;
	size_t start;

	if (fd < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	if (size > (off_t)sizeof(chunk))
		lseek(fd, size - (off_t)sizeof(chunk), SEEK_SET);
	else
		lseek(fd, 0, SEEK_SET);
	got = read(fd, chunk, sizeof(chunk));
	close(fd);
	if (got <= 0)
		return;
	start = (size_t)got;
	while (start > 0) {
		if (chunk[start - 1] == '\n' && start != (size_t)got && ++lines == 6)
			break;
		start--;
	}
	if (ky_buf_append(&b, chunk + start, (size_t)got - start) == 0 &&
	    ky_buf_append(&b, "", 1) == 0) {
		fprintf(stderr, "last lines of %s:\n", log);
		for (char *line = (char *)b.data, *nl; *line != '\0'; line = nl + 1) {
			nl = strchr(line, '\n');
			if (nl == NULL) {
				fprintf(stderr, "  | %s\n", line);
				break;
			}
			fprintf(stderr, "  | %.*s\n", (int)(nl - line), line);
		}
	}
	ky_buf_free(&b);
}

/* ---- finding and recognising kyok-unitd ---- */

static bool up_executable(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* $KYOK_UNITD, next to this program, ../unitd/ from it (build tree), else $PATH. */
int up_find_unitd(char *out, size_t n)
{
	char self[PATH_MAX], *slash;
	const char *env = getenv("KYOK_UNITD"), *path;
	ssize_t len;

	if (env != NULL && env[0] != '\0') {
		if (!up_executable(env)) {
			cli_fail(KY_ERR_CONFIG, "KYOK_UNITD", "'%s' is not an executable file",
			         env);
			return KY_ERR_CONFIG;
		}
		snprintf(out, n, "%s", env);
		return 0;
	}
	len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (len > 0) {
		self[len] = '\0';
		if ((slash = strrchr(self, '/')) != NULL) {
			*slash = '\0';
			if (snprintf(out, n, "%s/kyok-unitd", self) < (int)n && up_executable(out))
				return 0;
			if (snprintf(out, n, "%s/../unitd/kyok-unitd", self) < (int)n &&
			    up_executable(out))
				return 0;
		}
	}
	path = getenv("PATH");
	if (path != NULL) {
		char *copy = strdup(path), *save = NULL;
		for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d != NULL;
		     d = strtok_r(NULL, ":", &save)) {
			if (snprintf(out, n, "%s/kyok-unitd", d[0] ? d : ".") < (int)n &&
			    up_executable(out)) {
				free(copy);
				return 0;
			}
		}
		free(copy);
	}
	cli_fail(KY_ERR_CONFIG, "kyok-unitd",
	         "not found next to kyok, in ../unitd, or on PATH: set KYOK_UNITD to its path");
	return KY_ERR_CONFIG;
}

/* True when pid runs kyok-unitd with this config file. */
static bool up_pid_is_unit(pid_t pid, const char *conf)
{
	char link[64], exe[PATH_MAX], *base, *del;
	char cmdline[4096];
	ssize_t len;
	int fd;
	bool found = false;

	if (pid <= 1)
		return false;
	snprintf(link, sizeof(link), "/proc/%ld/exe", (long)pid);
	len = readlink(link, exe, sizeof(exe) - 1);
	if (len <= 0)
		return false;
	exe[len] = '\0';
	if ((del = strstr(exe, " (deleted)")) != NULL && del[10] == '\0')
		*del = '\0'; /* rebuilt while running */
	base = strrchr(exe, '/');
	base = base != NULL ? base + 1 : exe;
	if (strcmp(base, "kyok-unitd") != 0)
		return false;
	snprintf(link, sizeof(link), "/proc/%ld/cmdline", (long)pid);
	if ((fd = open(link, O_RDONLY | O_CLOEXEC)) < 0)
		return false;
	len = read(fd, cmdline, sizeof(cmdline) - 1);
	close(fd);
	if (len <= 0)
		return false;
	cmdline[len] = '\0';
	for (ssize_t i = 0; i < len; i += (ssize_t)strlen(cmdline + i) + 1)
		if (strcmp(cmdline + i, conf) == 0)
			found = true;
	return found;
}

/* Alive and not a zombie. */
static bool up_pid_alive(pid_t pid)
{
	char path[64], stat_line[256], *rp;
	int fd;
	ssize_t len;

	if (kill(pid, 0) != 0 && errno == ESRCH)
		return false;
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return false;
	len = read(fd, stat_line, sizeof(stat_line) - 1);
	close(fd);
	if (len <= 0)
		return false;
	stat_line[len] = '\0';
	rp = strrchr(stat_line, ')');
	return rp == NULL || rp[1] == '\0' || rp[2] != 'Z';
}

/* ---- starting, waiting, stopping ---- */

/* A running unit of this config: its pid, else 0. */
pid_t up_unit_running(const struct up_unit *u)
{
	long pid = up_read_number(u->pidf);

	if (pid > 0 && pid <= INT_MAX && up_pid_alive((pid_t)pid) &&
	    up_pid_is_unit((pid_t)pid, u->conf))
		return (pid_t)pid;
	return 0;
}

/* Starts kyok-unitd detached: own session, stdin /dev/null, stdout and stderr to the log. */
int up_spawn(const char *unitd, struct up_unit *u)
{
	char pidtext[32];
	pid_t pid;
	int r;

	unlink(u->portf);
	pid = fork();
	if (pid < 0) {
		cli_fail(KY_ERR_INTERNAL, u->dir, "cannot fork: %s", strerror(errno));
		return KY_ERR_INTERNAL;
	}
	if (pid == 0) {
		char *const args[] = {(char *)"kyok-unitd", (char *)"--config", u->conf, NULL};
		int in = open("/dev/null", O_RDONLY);
		int out = open(u->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		sigset_t none;

		if (setsid() < 0 || in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 ||
		    dup2(out, 2) < 0)
			_exit(127);
		closefrom(3);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execv(unitd, args);
		dprintf(2, "kyok up: cannot run %s: %s\n", unitd, strerror(errno));
		_exit(127);
	}
	u->pid = pid;
	u->started = true;
	snprintf(pidtext, sizeof(pidtext), "%ld\n", (long)pid);
	if ((r = up_write_text(u->pidf, pidtext)) != 0) {
		cli_fail(r, u->pidf, "cannot write the pid file");
		return r;
	}
	return 0;
}

/* Waits for the port file of a unit started by this run. On failure, u->why says why (the
 * caller reports it, with the unit's log). */
int up_wait_port_quiet(struct up_unit *u)
{
	for (long waited = 0; waited <= UP_START_WAIT_MS; waited += UP_POLL_MS) {
		long port = up_read_number(u->portf);
		int st;
		if (port > 0 && port <= 65535) {
			u->port = (int)port;
			return 0;
		}
		if (waitpid(u->pid, &st, WNOHANG) == u->pid) {
			u->pid = 0;
			if (WIFEXITED(st))
				snprintf(u->why, sizeof(u->why),
				         "crypto unit %d exited at start with status %d", u->number,
				         WEXITSTATUS(st));
			else
				snprintf(u->why, sizeof(u->why),
				         "crypto unit %d was killed at start by signal %d",
				         u->number, WTERMSIG(st));
			return KY_ERR_UNREACHABLE;
		}
		up_sleep_ms(UP_POLL_MS);
	}
	snprintf(u->why, sizeof(u->why), "crypto unit %d wrote no port file in %d seconds",
	         u->number, UP_START_WAIT_MS / 1000);
	return KY_ERR_UNREACHABLE;
}

/* The same, the failure reported as an error. */
int up_wait_port(struct up_unit *u)
{
	int r = up_wait_port_quiet(u);

	if (r != 0) {
		cli_fail(r, u->dir, "%s", u->why);
		up_log_tail(u->log);
	}
	return r;
}

/* How long a unit gets to stop before SIGKILL: --timeout, $KYOK_TIMEOUT, else 15 s. A unit
 * with millions of keys cached takes seconds to wipe and free them. */
static long up_stop_wait_ms(void)
{
	long connect_s, total_s;
	char why[160];

	/* A bad $KYOK_TIMEOUT: kyok down refuses it before this; an undo of kyok up takes the
	 * default. */
	if (cli_timeouts(&connect_s, &total_s, why, sizeof(why)) != 0)
		total_s = CLI_TIMEOUT_DEFAULT;
	return total_s * 1000;
}

/* SIGTERM, then SIGKILL after up_stop_wait_ms. Returns the number still alive. */
static size_t up_stop_pids(const pid_t *pids, size_t n)
{
	size_t alive = 0;
	long wait_ms = up_stop_wait_ms();

	for (size_t i = 0; i < n; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGTERM);
	for (long waited = 0;; waited += UP_POLL_MS) {
		alive = 0;
		for (size_t i = 0; i < n; i++) {
			if (pids[i] <= 0)
				continue;
			waitpid(pids[i], NULL, WNOHANG); /* reaps only our own children */
			if (up_pid_alive(pids[i]))
				alive++;
		}
		if (alive == 0)
			return 0;
		if (waited >= wait_ms)
			break;
		up_sleep_ms(UP_POLL_MS);
	}
	for (size_t i = 0; i < n; i++)
		if (pids[i] > 0 && up_pid_alive(pids[i])) {
			fprintf(
			    stderr,
			    "warning: pid %ld did not stop in %ld seconds: killing it (--timeout "
			    "gives a unit longer)\n",
			    (long)pids[i], wait_ms / 1000);
			kill(pids[i], SIGKILL);
		}
	for (long waited = 0; waited <= 5000; waited += UP_POLL_MS) { /* a large heap to unmap */
		alive = 0;
		for (size_t i = 0; i < n; i++) {
			if (pids[i] <= 0)
				continue;
			waitpid(pids[i], NULL, WNOHANG);
			if (up_pid_alive(pids[i]))
				alive++;
		}
		if (alive == 0)
			break;
		up_sleep_ms(UP_POLL_MS);
	}
	return alive;
}

/* Stops the units this run started (after a failure). */
void up_undo_started(struct up_unit *units, size_t n)
{
	pid_t pids[UP_MAX_UNITS];

	for (size_t i = 0; i < n; i++) {
		pids[i] = units[i].started ? units[i].pid : 0;
		if (units[i].started) {
			unlink(units[i].pidf);
			unlink(units[i].portf);
		}
	}
	up_stop_pids(pids, n);
}

/* ---- kyok down ---- */

static const char down_usage[] =
    "usage: kyok down [--dir DIR] [--purge] [options]\n"
    "\n"
    "Stops the crypto units of a local instance (SIGTERM; SIGKILL when a unit has not\n"
    "stopped within --timeout seconds, default 15).\n"
    "Their state stays in DIR: 'kyok up' brings the same units back.\n"
    "\n";

/* Unit directories "unit-<n>" of dir, by number. */
static int up_scan_units(const char *dir, struct up_unit *units, size_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t count = 0;

	*n = 0;
	if (d == NULL)
		return errno == ENOENT ? KY_ERR_NOT_FOUND : KY_ERR_IO;
	while ((e = readdir(d)) != NULL && count < UP_MAX_UNITS) {
		char *end;
		long num;
		if (strncmp(e->d_name, "unit-", 5) != 0)
			continue;
		num = strtol(e->d_name + 5, &end, 10);
		if (end == e->d_name + 5 || *end != '\0' || num < 1 || num > UP_MAX_UNITS)
			continue;
		memset(&units[count], 0, sizeof(units[count]));
		units[count].number = (int)num;
		up_unit_paths(&units[count], dir);
		count++;
	}
	closedir(d);
	for (size_t i = 1; i < count; i++)
		for (size_t k = i; k > 0 && units[k - 1].number > units[k].number; k--) {
			struct up_unit tmp = units[k];
			units[k] = units[k - 1];
			units[k - 1] = tmp;
		}
	*n = count;
	return 0;
}

int up_running_units(const char *dir, int *numbers, long *pids, size_t cap, size_t *n)
{
	struct up_unit units[UP_MAX_UNITS];
	size_t count = 0, found = 0;
	int r = KY_ERR_INTERNAL;

	*n = 0;
	if ((r = up_scan_units(dir, units, &count)) != 0 && r != KY_ERR_NOT_FOUND)
		return r;
	for (size_t i = 0; i < count && found < cap; i++) {
		pid_t pid = up_unit_running(&units[i]);
		if (pid <= 0)
			continue;
		numbers[found] = units[i].number;
		pids[found] = (long)pid;
		found++;
	}
	*n = found;
	return 0;
}

int down_main(int argc, char **argv)
{
	enum { OPT_DIR = 0x2001, OPT_PURGE };
	static const struct cli_opt opts[] = {
	    {"dir", OPT_DIR, CLI_ARG_REQUIRED, "DIR",
	     "instance directory (default: --instance, $KYOK_INSTANCE, else ~/.kyok/instance)"},
	    {"purge", OPT_PURGE, CLI_ARG_NONE, NULL,
	     "also delete DIR with every unit's state, after confirmation (--yes): administrators "
	     "and master keys in it are lost for good"},
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, c;
	const char *dir_arg = NULL;
	bool purge = false;
	char dir[PATH_MAX / 2 - 64], path[PATH_MAX], question[PATH_MAX + 128];
	struct up_unit *units = NULL;
	pid_t pids[UP_MAX_UNITS];
	size_t n = 0;
	json_t *arr = NULL;

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, down_usage, opts, cli_common_opts);
			return 0;
		}
		if (c == OPT_DIR)
			dir_arg = optarg;
		else if (c == OPT_PURGE)
			purge = true;
		else if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
	{ /* the stop timeout: refused before anything is stopped */
		long connect_s, total_s;
		char why[160];
		if ((r = cli_timeouts(&connect_s, &total_s, why, sizeof(why))) != 0)
			return cli_fail(r, NULL, "%s", why);
	}
	if ((r = up_abs_dir(dir_arg != NULL ? dir_arg : cli_instance_dir(), dir, sizeof(dir))) != 0)
		return cli_fail(r, dir_arg != NULL ? dir_arg : cli_instance_dir(),
		                "cannot use this directory path");
	if ((units = calloc(UP_MAX_UNITS, sizeof(*units))) == NULL)
		return cli_fail(KY_ERR_NOMEM, NULL, NULL);
	if ((r = up_scan_units(dir, units, &n)) != 0) {
		cli_fail(r == KY_ERR_NOT_FOUND ? KY_ERR_INSTANCE_DOWN : r, dir,
		         r == KY_ERR_NOT_FOUND ? "no such directory" : "cannot read the directory");
		r = r == KY_ERR_NOT_FOUND ? KY_ERR_INSTANCE_DOWN : r;
		goto out;
	}
	snprintf(path, sizeof(path), "%s/instance.json", dir);
	if (n == 0 && !up_exists(path)) {
		r = KY_ERR_INSTANCE_DOWN;
		cli_fail(r, dir, "no kyok instance in this directory");
		goto out;
	}
	if (purge) {
		bool looks_like_instance = up_exists(path);
		for (size_t i = 0; i < n; i++)
			looks_like_instance = looks_like_instance || up_exists(units[i].conf);
		if (!looks_like_instance) {
			r = KY_ERR_INSTANCE_DOWN;
			cli_fail(r, dir, "no kyok instance in this directory: not deleting it");
			goto out;
		}
		/* Asked before anything is stopped: a "no" changes nothing. */
		snprintf(question, sizeof(question),
		         "delete %s and the state of its %zu crypto units? their administrators "
		         "and master keys are lost for good",
		         dir, n);
		if ((r = cli_confirm(question)) != 0)
			goto out;
	}
	for (size_t i = 0; i < n; i++)
		pids[i] = up_unit_running(&units[i]);
	if (up_stop_pids(pids, n) != 0) {
		r = KY_ERR_INTERNAL;
		cli_fail(r, dir, "some crypto units did not stop");
		goto out;
	}
	if (cli_g.json && (arr = json_array()) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		unlink(units[i].pidf);
		unlink(units[i].portf);
		if (arr != NULL)
			json_array_append_new(arr, json_pack("{s:i, s:b, s:i}", "number",
			                                     units[i].number, "was_running",
			                                     pids[i] > 0, "pid", (int)pids[i]));
		else if (pids[i] > 0)
			printf("stopped crypto unit %d (pid %ld)\n", units[i].number,
			       (long)pids[i]);
		else
			printf("crypto unit %d was not running\n", units[i].number);
	}
	if (purge) {
		if ((r = up_rm_rf(dir)) != 0) {
			cli_fail(r, dir, "cannot delete: %s", strerror(errno));
			goto out;
		}
		if (arr == NULL)
			printf("deleted %s\n", dir);
	} else if (arr == NULL) {
		printf("state kept in %s: 'kyok up%s%s' starts the units again\n", dir,
		       dir_arg != NULL ? " --dir " : "", dir_arg != NULL ? dir : "");
	}
	if (arr != NULL) {
		cli_print_json(
		    json_pack("{s:s, s:o, s:b}", "dir", dir, "units", arr, "purged", purge));
		arr = NULL; /* transferred */
	}
	r = 0;
out:
	json_decref(arr);
	free(units);
	return ky_err_exit(r);
}
