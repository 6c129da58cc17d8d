/* kyok up, down, status: a local instance of crypto units on loopback.
 *
 * Layout of an instance directory (0700):
 *   instance.json          what 'kyok tke' reads: instance id, units, URLs
 *   anchor.key, anchor.crt the unit trust anchor (cli/anchor.c): certifies every unit
 *   unit-<n>/unit.conf     the unit's configuration (kept across down/up), with the port
 *                          picked when the unit was made: its URL never changes
 *   unit-<n>/identity.crt  the unit's identity certificate, issued by the anchor
 *   unit-<n>/data/         the unit's sealed state
 *   unit-<n>/pid           pid of the running kyok-unitd
 *   unit-<n>/port          port it listens on (written by the unit once it listens)
 *   unit-<n>/unit.log      its log
 *   keys.db                key storage shared by the units (SQLite, WAL)
 *   ca.key, ca.crt         with --tls: the instance's TLS CA (cli/up_tls.c); each unit then
 *                          has unit-<n>/tls.key and tls.crt, and serves HTTPS
 *   store.uri              instead, when made with --store: the PostgreSQL URI of the key
 *                          storage the units share (every unit.conf's store =)
 *   imprint-credential.pem the instance's imprint credential (0600): units in imprint mode
 *                          take commands only with a claim made with it; each unit.conf
 *                          holds its public key (imprint_verifier)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/anchor.h"
#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/up.h"
#include "cli/up_tls.h"
#include "kyok/crypto.h"
#include "kyok/imprint.h"

#define UP_START_WAIT_MS 30000 /* more than a unit waits for storage (10 s) */
#define UP_STOP_WAIT_MS  5000
#define UP_POLL_MS       50
#define UP_SHORT_HEX     16

/* ---- small helpers ---- */

static void up_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Absolute form of dir (not resolved: it may not exist yet). */
static int up_abs_dir(const char *dir, char *out, size_t n)
{
	char cwd[PATH_MAX];
	size_t len;

	if (dir[0] == '/') {
		if (snprintf(out, n, "%s", dir) >= (int)n)
			return KY_ERR_USAGE;
	} else {
		if (getcwd(cwd, sizeof(cwd)) == NULL)
			return KY_ERR_IO;
		if (snprintf(out, n, "%s/%s", cwd, dir) >= (int)n)
			return KY_ERR_USAGE;
	}
	len = strlen(out);
	while (len > 1 && out[len - 1] == '/')
		out[--len] = '\0';
	return 0;
}

static bool up_exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static int up_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

int up_rm_rf(const char *path)
{
	if (nftw(path, up_rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
		return KY_ERR_IO;
	return 0;
}

static int up_write_text(const char *path, const char *text)
{
	return ky_file_write_atomic(path, text, strlen(text), 0600);
}

/* n distinct free TCP ports of host (an IPv4 address), picked by the kernel: all bound at
 * once, then released for the units to take. */
int up_free_ports(const char *host, int *ports, size_t n)
{
	int r = KY_ERR_INTERNAL, fds[UP_MAX_UNITS];
	size_t made = 0;

	for (; made < n && made < UP_MAX_UNITS; made++) {
		struct sockaddr_in a = {.sin_family = AF_INET};
		socklen_t len = sizeof(a);
		fds[made] = -1;
		if (inet_pton(AF_INET, host, &a.sin_addr) != 1 ||
		    (fds[made] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
		    bind(fds[made], (struct sockaddr *)&a, sizeof(a)) != 0 ||
		    getsockname(fds[made], (struct sockaddr *)&a, &len) != 0) {
			r = KY_ERR_IO;
			cli_fail(r, host, "cannot find a free port: %s", strerror(errno));
			if (fds[made] >= 0)
				close(fds[made]);
			goto out;
		}
		ports[made] = ntohs(a.sin_port);
	}
	r = 0;
out:
	for (size_t i = 0; i < made; i++)
		close(fds[i]);
	return r;
}

/* Port of the 'listen' line of a unit.conf: 0 when it is 0 (any free port, as older kyok
 * wrote it), -1 when the file has no readable listen line. */
static int up_conf_port(const char *conf)
{
	struct ky_buf b = {0};
	int port = -1;

	if (ky_file_read(conf, 64 * 1024, &b) != 0 || ky_buf_append(&b, "", 1) != 0) {
		ky_buf_free(&b);
		return -1;
	}
	for (char *line = (char *)b.data, *nl; line != NULL; line = nl != NULL ? nl + 1 : NULL) {
		char value[128], *colon, *end;
		long v;
		nl = strchr(line, '\n');
		if (nl != NULL)
			*nl = '\0';
		if (sscanf(line, " listen = %127s", value) != 1 ||
		    (colon = strrchr(value, ':')) == NULL)
			continue;
		errno = 0;
		v = strtol(colon + 1, &end, 10);
		if (errno == 0 && end != colon + 1 && *end == '\0' && v >= 0 && v <= 65535)
			port = (int)v;
		break;
	}
	ky_buf_free(&b);
	return port;
}

/* Host of the 'listen' line of a unit.conf into out: "127.0.0.1" when it has none. */
static void up_conf_host(const char *conf, char *out, size_t n)
{
	struct ky_buf b = {0};

	snprintf(out, n, "127.0.0.1");
	if (ky_file_read(conf, 64 * 1024, &b) != 0 || ky_buf_append(&b, "", 1) != 0) {
		ky_buf_free(&b);
		return;
	}
	for (char *line = (char *)b.data, *nl; line != NULL; line = nl != NULL ? nl + 1 : NULL) {
		char value[128], *colon;
		nl = strchr(line, '\n');
		if (nl != NULL)
			*nl = '\0';
		if (sscanf(line, " listen = %127s", value) != 1 ||
		    (colon = strrchr(value, ':')) == NULL || colon == value)
			continue;
		*colon = '\0';
		if ((size_t)(colon - value) < n)
			memcpy(out, value, (size_t)(colon - value) + 1);
		break;
	}
	ky_buf_free(&b);
}

/* Rewrites the 'listen' line of a unit.conf (atomically) to HOST:port, its host kept. */
static int up_conf_set_port(const char *conf, int port)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf in = {0}, out = {0};
	char listen[128], host[64];

	up_conf_host(conf, host, sizeof(host));
	snprintf(listen, sizeof(listen), "listen = %s:%d\n", host, port);
	if ((r = ky_file_read(conf, 64 * 1024, &in)) != 0 || (r = ky_buf_append(&in, "", 1)) != 0) {
		cli_fail(r, conf, "cannot read the unit configuration");
		goto out;
	}
	for (char *line = (char *)in.data, *nl; *line != '\0'; line = nl + 1) {
		char key[16];
		nl = strchr(line, '\n');
		if (nl == NULL)
			nl = line + strlen(line) - 1;
		if (sscanf(line, " %15[a-z_] =", key) == 1 && strcmp(key, "listen") == 0)
			r = ky_buf_append_str(&out, listen);
		else
			r = ky_buf_append(&out, line, (size_t)(nl - line) + 1);
		if (r != 0) {
			cli_fail(r, NULL, NULL);
			goto out;
		}
	}
	if ((r = ky_file_write_atomic(conf, out.data, out.len, 0600)) != 0) {
		cli_fail(r, conf, "cannot write the unit configuration");
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&in);
	ky_buf_free(&out);
	return r;
}

/* Reads a small file holding one positive number ("1234\n"). 0 when absent or malformed. */
static long up_read_number(const char *path)
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
static void up_log_tail(const char *log)
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

/* ---- one unit's files ---- */

void up_unit_paths(struct up_unit *u, const char *dir)
{
	snprintf(u->dir, sizeof(u->dir), "%s/unit-%d", dir, u->number);
	snprintf(u->conf, sizeof(u->conf), "%s/unit.conf", u->dir);
	snprintf(u->pidf, sizeof(u->pidf), "%s/pid", u->dir);
	snprintf(u->portf, sizeof(u->portf), "%s/port", u->dir);
	snprintf(u->log, sizeof(u->log), "%s/unit.log", u->dir);
}

#define UP_SEAL_CONF_MAX 4096 /* --seal-config file */
#define UP_STORE_MAX     1024 /* --store URI */
#define UP_STORE_FILE    "store.uri"

/* The key storage of the instance in dir: DIR/store.uri when there is one (made with --store),
 * else DIR/keys.db. */
static int up_store(const char *dir, char *out, size_t cap)
{
	char path[PATH_MAX];
	struct ky_buf b = {0};
	int r;

	snprintf(path, sizeof(path), "%s/%s", dir, UP_STORE_FILE);
	if (access(path, F_OK) != 0) {
		if ((size_t)snprintf(out, cap, "sqlite:%s/keys.db", dir) >= cap)
			return KY_ERR_USAGE;
		return 0;
	}
	if ((r = ky_file_read(path, UP_STORE_MAX, &b)) != 0)
		return r;
	if (b.len < 2 || b.len >= cap || b.data[b.len - 1] != '\n' ||
	    memchr(b.data, '\0', b.len) != NULL || memchr(b.data, '\n', b.len - 1) != NULL) {
		ky_buf_free(&b);
		return KY_ERR_CONFIG;
	}
	memcpy(out, b.data, b.len - 1);
	out[b.len - 1] = '\0';
	ky_buf_free(&b);
	return 0;
}

/* --store: a PostgreSQL URI without a password (the units refuse one too; see
 * docs/storage.md), without spaces or control characters (one unit.conf line). */
int up_store_check(const char *uri)
{
	const char *at, *rest;

	if (strncmp(uri, "postgresql://", 13) == 0)
		rest = uri + 13;
	else if (strncmp(uri, "postgres://", 11) == 0)
		rest = uri + 11;
	else {
		(void)cli_fail(KY_ERR_USAGE, "--store",
		               "'%.40s': give a PostgreSQL URI, postgresql://USER@HOST/DB", uri);
		return KY_ERR_USAGE;
	}
	if (strlen(uri) >= UP_STORE_MAX) {
		(void)cli_fail(KY_ERR_USAGE, "--store", "URI longer than %d characters",
		               UP_STORE_MAX - 1);
		return KY_ERR_USAGE;
	}
	for (const char *c = uri; *c; c++)
		if ((unsigned char)*c <= ' ' || *c == 0x7f) {
			(void)cli_fail(KY_ERR_USAGE, "--store",
			               "the URI has a space or control character");
			return KY_ERR_USAGE;
		}
	at = strchr(rest, '@');
	if ((at != NULL && memchr(rest, ':', (size_t)(at - rest)) != NULL) ||
	    strstr(uri, "password=") != NULL) {
		(void)cli_fail(KY_ERR_STORE_PASSWORD, "--store", NULL);
		return KY_ERR_STORE_PASSWORD;
	}
	/* As libpq reads it: a parameter name may be percent-encoded (%70assword). */
	{
		char *err = NULL;
		PQconninfoOption *opts = PQconninfoParse(uri, &err);
		bool pw = false;

		if (opts == NULL) {
			(void)cli_fail(KY_ERR_USAGE, "--store", "not a PostgreSQL URI: %s",
			               err != NULL ? err : "out of memory");
			PQfreemem(err);
			return KY_ERR_USAGE;
		}
		for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
			if (o->val != NULL && strcmp(o->keyword, "password") == 0)
				pw = true;
		PQconninfoFree(opts);
		if (pw) {
			(void)cli_fail(KY_ERR_STORE_PASSWORD, "--store", NULL);
			return KY_ERR_STORE_PASSWORD;
		}
	}
	return 0;
}

/* dir: the instance directory, whose key storage (up_store) all its units share.
 * seal_conf: sealing settings to add (NULL: none, the file backend). */
int up_write_conf(const char *dir, const char *instance, const struct up_unit *u,
                  const char *seal_conf)
{
	char text[4096 + UP_SEAL_CONF_MAX + UP_STORE_MAX], store[UP_STORE_MAX + PATH_MAX];
	char tls[PATH_MAX + 128] = "", ca[PATH_MAX], own[PATH_MAX];
	int n, r;

	if ((r = up_store(dir, store, sizeof(store))) != 0)
		return r;

	/* An instance with its own TLS CA (kyok up --tls): each unit serves HTTPS. So does a unit
	 * whose TLS key is in its directory already: the operator's (--tls-cert), or one made on
	 * another host than the CA's (kyok host join-request). */
	snprintf(ca, sizeof(ca), "%s/ca.key", dir);
	snprintf(own, sizeof(own), "%s/tls.key", u->dir);
	if (access(ca, F_OK) == 0)
		snprintf(tls, sizeof(tls),
		         "# HTTPS, certificate issued by the instance's TLS CA (%s/ca.crt)\n"
		         "api_tls_cert = %s/tls.crt\napi_tls_key = %s/tls.key\n",
		         dir, u->dir, u->dir);
	else if (access(own, F_OK) == 0)
		snprintf(tls, sizeof(tls),
		         "# HTTPS, with the certificate and key in the unit's directory\n"
		         "api_tls_cert = %s/tls.crt\napi_tls_key = %s/tls.key\n",
		         u->dir, u->dir);

	n = snprintf(text, sizeof(text),
	             "# crypto unit %d of a local kyok instance, written by 'kyok up'\n"
	             "instance = %s\n"
	             "unit = %s\n"
	             "zone = %s\n"
	             "listen = %s:%d\n"
	             "data_dir = %s/data\n"
	             "port_file = %s\n"
	             "log_file = %s\n"
	             "store = %s\n"
	             "anchor_cert = %s/anchor.crt\n"
	             "identity_cert = %s/identity.crt\n"
	             "%s%s",
	             u->number, instance, u->id, u->zone, u->host, u->port, u->dir, u->portf,
	             u->log, store, dir, u->dir, tls, seal_conf != NULL ? seal_conf : "");
	if (n < 0 || n >= (int)sizeof(text))
		return KY_ERR_USAGE;
	return up_write_text(u->conf, text);
}

/* The unit's identity request, certified by the instance's anchor into identity.crt. */
static int up_certify(const char *dir, const char *unitd, const char *instance,
                      const struct up_unit *u)
{
	char csr[PATH_MAX / 2 + 16], crt[PATH_MAX / 2 + 16];

	char ca[PATH_MAX];
	int r;

	snprintf(csr, sizeof(csr), "%s/identity.csr", u->dir);
	snprintf(crt, sizeof(crt), "%s/identity.crt", u->dir);
	if ((r = cli_anchor_certify(dir, unitd, u->conf, u->log, csr, crt, instance, u->id)) != 0)
		return r;
	snprintf(ca, sizeof(ca), "%s/ca.key", dir);
	if (access(ca, F_OK) == 0)
		return up_tls_unit(dir, u->dir, u->id, u->host);
	return 0;
}

/* A running unit of this config: its pid, else 0. */
static pid_t up_unit_running(const struct up_unit *u)
{
	long pid = up_read_number(u->pidf);

	if (pid > 0 && pid <= INT_MAX && up_pid_alive((pid_t)pid) &&
	    up_pid_is_unit((pid_t)pid, u->conf))
		return (pid_t)pid;
	return 0;
}

/* Starts kyok-unitd detached: own session, stdin /dev/null, stdout and stderr to the log. */
static int up_spawn(const char *unitd, struct up_unit *u)
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
static int up_wait_port_quiet(struct up_unit *u)
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
static int up_wait_port(struct up_unit *u)
{
	int r = up_wait_port_quiet(u);

	if (r != 0) {
		cli_fail(r, u->dir, "%s", u->why);
		up_log_tail(u->log);
	}
	return r;
}

/* SIGTERM, then SIGKILL after UP_STOP_WAIT_MS. Returns the number still alive. */
static size_t up_stop_pids(const pid_t *pids, size_t n)
{
	size_t alive = 0;

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
		if (waited >= UP_STOP_WAIT_MS)
			break;
		up_sleep_ms(UP_POLL_MS);
	}
	for (size_t i = 0; i < n; i++)
		if (pids[i] > 0 && up_pid_alive(pids[i])) {
			fprintf(stderr, "warning: pid %ld did not stop in %d seconds: killing it\n",
			        (long)pids[i], UP_STOP_WAIT_MS / 1000);
			kill(pids[i], SIGKILL);
		}
	for (long waited = 0; waited <= 2000; waited += UP_POLL_MS) {
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
static void up_undo_started(struct up_unit *units, size_t n)
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

/* True when a unit.conf sets key (a "key = value" line). */
static bool up_conf_has(const char *conf, const char *key)
{
	struct ky_buf b = {0};
	bool found = false;

	if (ky_file_read(conf, 64 * 1024, &b) != 0 || ky_buf_append(&b, "", 1) != 0) {
		ky_buf_free(&b);
		return false;
	}
	for (char *line = (char *)b.data, *nl; line != NULL; line = nl != NULL ? nl + 1 : NULL) {
		char k[32];
		nl = strchr(line, '\n');
		if (nl != NULL)
			*nl = '\0';
		if (sscanf(line, " %31[a-z0-9_] =", k) == 1 && strcmp(k, key) == 0)
			found = true;
	}
	ky_buf_free(&b);
	return found;
}

/* The unit's URL: https when its unit.conf gives it a TLS certificate, on the host of its
 * listen line. A remote unit's URL is the one instance.json has. */
static void up_unit_url(const struct up_unit *u, char *out, size_t n)
{
	char host[64];

	if (u->url[0] != '\0') {
		snprintf(out, n, "%s", u->url);
		return;
	}
	up_conf_host(u->conf, host, sizeof(host));
	snprintf(out, n, "%s://%s:%d", up_conf_has(u->conf, "api_tls_cert") ? "https" : "http",
	         host, u->port);
}

int up_write_instance(const char *dir, const char *instance, const struct up_unit *units, size_t n)
{
	int r = KY_ERR_NOMEM;
	json_t *arr = json_array(), *j = NULL;
	char path[PATH_MAX], *text = NULL;

	if (arr == NULL)
		goto out;
	for (size_t i = 0; i < n; i++) {
		char url[256];
		json_t *e;
		up_unit_url(&units[i], url, sizeof(url));
		if ((e = json_pack("{s:i, s:s, s:s, s:s}", "number", units[i].number, "id",
		                   units[i].id, "zone", units[i].zone, "url", url)) == NULL)
			goto out;
		if (units[i].remote && json_object_set_new(e, "remote", json_true()) != 0) {
			json_decref(e);
			goto out;
		}
		if (json_array_append_new(arr, e) != 0)
			goto out;
	}
	if ((j = json_pack("{s:s, s:O}", "instance", instance, "units", arr)) == NULL ||
	    (text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS)) == NULL)
		goto out;
	snprintf(path, sizeof(path), "%s/instance.json", dir);
	if ((r = up_write_text(path, text)) != 0)
		cli_fail(r, path, "%s", strerror(errno));
out:
	if (r == KY_ERR_NOMEM)
		cli_fail(r, NULL, NULL);
	free(text);
	json_decref(j);
	json_decref(arr);
	return r;
}

static void up_report(const char *dir, const char *instance, struct up_unit *units, size_t n)
{
	static const char *const hdr[] = {"NUMBER", "ID", "ZONE", "URL", "PID", "STATUS"};
	struct cli_table *t;
	char def[PATH_MAX];
	const char *home = getenv("HOME"), *env = getenv("KYOK_INSTANCE");

	for (size_t i = 0; i < n; i++) {
		char url[256];
		if (units[i].failed || units[i].remote)
			continue;
		up_unit_url(&units[i], url, sizeof(url));
		struct cli_unit cu = {.number = units[i].number};
		snprintf(cu.url, sizeof(cu.url), "%s", url);
		char why[256];
		if (unit_health(&cu, why, sizeof(why)) != 0)
			fprintf(stderr,
			        "warning: crypto unit %d does not answer its health check: %s\n",
			        units[i].number, why);
	}
	if (cli_g.json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++) {
			char url[256];
			up_unit_url(&units[i], url, sizeof(url));
			json_array_append_new(arr, json_pack("{s:i, s:s, s:s, s:s, s:i, s:s}",
			                                     "number", units[i].number, "id",
			                                     units[i].id, "zone", units[i].zone,
			                                     "url", url, "pid", (int)units[i].pid,
			                                     "status", units[i].status));
		}
		cli_print_json(
		    json_pack("{s:s, s:s, s:o}", "instance", instance, "dir", dir, "units", arr));
		return;
	}
	if ((t = cli_table_new(6, hdr)) == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		char num[16], url[256], pid[24];
		snprintf(num, sizeof(num), "%d", units[i].number);
		up_unit_url(&units[i], url, sizeof(url));
		if (units[i].pid > 0)
			snprintf(pid, sizeof(pid), "%ld", (long)units[i].pid);
		else
			snprintf(pid, sizeof(pid), "-");
		const char *row[] = {num, units[i].id, units[i].zone, url, pid, units[i].status};
		if (cli_table_add(t, row) != 0)
			break;
	}
	printf("instance %s in %s\n\n", instance, dir);
	cli_table_print(t, stdout);
	cli_table_free(t);
	snprintf(def, sizeof(def), "%s/.kyok/instance", home ? home : "");
	printf("\n");
	if (strcmp(def, dir) != 0 && (env == NULL || strcmp(env, dir) != 0))
		printf("to use it from this shell:  export KYOK_INSTANCE=%s\n", dir);
	printf("next: 'kyok tke cryptounits', then 'kyok tke cryptounit-add'; "
	       "'kyok down' stops the units\n");
}

/* ---- the imprint credential ---- */

/* The imprint_verifier value in a unit.conf: 1 and hex filled, 0 when the file has none. */
int up_imprint_conf_verifier(const char *conf, char *hex)
{
	struct ky_buf b = {0};
	int found = 0;

	if (ky_file_read(conf, 64 * 1024, &b) != 0 || ky_buf_append(&b, "", 1) != 0) {
		ky_buf_free(&b);
		return 0;
	}
	for (char *line = (char *)b.data, *nl; line != NULL; line = nl != NULL ? nl + 1 : NULL) {
		nl = strchr(line, '\n');
		if (nl != NULL)
			*nl = '\0';
		if (sscanf(line, " imprint_verifier = %64[0-9a-f]", hex) == 1 &&
		    strlen(hex) == 2 * KY_IMPRINT_PUB_LEN) {
			found = 1;
			break;
		}
	}
	ky_buf_free(&b);
	return found;
}

/* Appends "imprint_verifier = HEX" to a unit.conf (rewritten atomically). */
int up_imprint_conf_add(const char *conf, const char *hex)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	char line[256];

	snprintf(line, sizeof(line),
	         "# public key of the instance's imprint credential: in imprint mode the unit\n"
	         "# takes commands only with a claim made with it\nimprint_verifier = %s\n",
	         hex);
	if ((r = ky_file_read(conf, 64 * 1024, &b)) != 0 ||
	    (b.len > 0 && b.data[b.len - 1] != '\n' && (r = ky_buf_append(&b, "\n", 1)) != 0) ||
	    (r = ky_buf_append_str(&b, line)) != 0 ||
	    (r = ky_file_write_atomic(conf, b.data, b.len, 0600)) != 0) {
		cli_fail(r, conf, "cannot add the imprint verifier");
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&b);
	return r;
}

/* Creates DIR/imprint-credential.pem (0600, refused when it exists) and gives its public key
 * as hex. */
static int up_imprint_create(const char *dir, char hex[2 * KY_IMPRINT_PUB_LEN + 1])
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf pem = {0};
	uint8_t pub[KY_IMPRINT_PUB_LEN];
	char path[PATH_MAX];
	int fd = -1;

	snprintf(path, sizeof(path), "%s/%s", dir, KY_IMPRINT_CREDENTIAL_FILE);
	if ((r = ky_imprint_credential_new(&pem, pub)) != 0) {
		cli_fail(r, path, "cannot make the imprint credential");
		goto out;
	}
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0) {
		r = errno == EEXIST ? KY_ERR_EXISTS : KY_ERR_IO;
		cli_fail(r, path, "cannot create: %s", strerror(errno));
		goto out;
	}
	if (write(fd, pem.data, pem.len) != (ssize_t)pem.len || fsync(fd) != 0) {
		r = KY_ERR_IO;
		cli_fail(r, path, "cannot write: %s", strerror(errno));
		close(fd);
		fd = -1;
		unlink(path);
		goto out;
	}
	ky_hex_encode(pub, sizeof(pub), hex);
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	ky_buf_free(&pem);
	return r;
}

/* Public key of an existing DIR/imprint-credential.pem: 1 and hex filled, 0 when there is
 * no such file, or an error (printed). */
static int up_imprint_existing(const char *dir, char hex[2 * KY_IMPRINT_PUB_LEN + 1])
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf pem = {0};
	EVP_PKEY *k = NULL;
	uint8_t pub[KY_IMPRINT_PUB_LEN];
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", dir, KY_IMPRINT_CREDENTIAL_FILE);
	if ((r = ky_file_read(path, KY_IMPRINT_CREDENTIAL_MAX, &pem)) == KY_ERR_NOT_FOUND)
		return 0;
	if (r != 0 || (r = ky_imprint_credential_parse(pem.data, pem.len, &k)) != 0 ||
	    (r = ky_imprint_public(k, pub)) != 0) {
		cli_fail(r, path, "not an imprint credential");
		goto out;
	}
	ky_hex_encode(pub, sizeof(pub), hex);
	r = 1;
out:
	EVP_PKEY_free(k);
	ky_buf_free(&pem);
	return r;
}

/* Before an instance made by an older kyok starts again: a unit.conf without an
 * imprint_verifier gets the one of the instance's credential, made now when there is none.
 * A unit.conf that has one is left alone (the credential may have been deleted on purpose
 * once the units left imprint mode). */
static int up_imprint_upgrade(const char *dir, struct up_unit *units, size_t n)
{
	int r = KY_ERR_INTERNAL, have;
	char hex[2 * KY_IMPRINT_PUB_LEN + 1], cur[2 * KY_IMPRINT_PUB_LEN + 1];
	bool missing = false;

	for (size_t i = 0; i < n; i++)
		if (!units[i].remote && !up_imprint_conf_verifier(units[i].conf, cur))
			missing = true;
	if (!missing)
		return 0;
	if ((have = up_imprint_existing(dir, hex)) < 0)
		return have;
	if (have == 0) {
		if ((r = up_imprint_create(dir, hex)) != 0)
			return r;
		fprintf(stderr, "note: made the instance's imprint credential %s/%s\n", dir,
		        KY_IMPRINT_CREDENTIAL_FILE);
	}
	for (size_t i = 0; i < n; i++) {
		if (units[i].remote || up_imprint_conf_verifier(units[i].conf, cur))
			continue;
		if ((r = up_imprint_conf_add(units[i].conf, hex)) != 0)
			return r;
		fprintf(stderr,
		        "note: %s: added imprint_verifier (takes effect when the unit starts)\n",
		        units[i].conf);
	}
	return 0;
}

static void up_imprint_note(const char *dir)
{
	if (cli_g.json)
		return;
	printf("imprint credential: %s/%s (mode 0600). Units in imprint mode take commands\n"
	       "only with it: hand it to the administrators over a secure channel; it can be\n"
	       "deleted once the units left imprint mode (zeroize needs it again)\n",
	       dir, KY_IMPRINT_CREDENTIAL_FILE);
}

/* ---- kyok up ---- */

static const char up_usage[] =
    "usage: kyok up [--dir DIR] [--units N] [--zones Z1,Z2,...] [--port BASE] [--tls]\n"
    "               [--listen ADDR] [--tls-cert FILE --tls-key FILE] [--seal-config FILE]\n"
    "               [options]\n"
    "\n"
    "Starts a local instance: N crypto units (kyok-unitd) on 127.0.0.1 (or --listen),\n"
    "each in its own zone, with state kept in DIR. Run again after 'kyok down', it\n"
    "restarts the same units with their state; units that are running are left alone.\n"
    "Each unit's port is fixed when the unit is made (its unit.conf 'listen' line), so\n"
    "its URL in instance.json never changes; a unit whose port is taken does not start\n"
    "and names what holds it. A unit that cannot start is reported with its cause while\n"
    "the others start; 'kyok up' then says which units serve and exits non-zero only\n"
    "when none does.\n"
    "\n"
    "  --dir DIR               instance directory (default: --instance, $KYOK_INSTANCE,\n"
    "                          else ~/.kyok/instance); created 0700\n"
    "  --units N               number of crypto units, 1 to 16 (default 2)\n"
    "  --zones LIST            zone names, one per unit (default zone-1, zone-2, ...)\n"
    "  --port BASE             ports of the new units: BASE, BASE+1, ... (default: free\n"
    "                          ports picked once); only when the instance is made\n"
    "  --tls                   serve HTTPS: make the instance's TLS CA (DIR/ca.crt, its\n"
    "                          key DIR/ca.key 0600) and a certificate for each unit\n"
    "                          (unit-N/tls.crt, for 127.0.0.1); commands that talk to\n"
    "                          the units trust DIR/ca.crt; only when the instance is made\n"
    "  --seal-config FILE      sealing settings for every new unit's unit.conf: 'seal =\n"
    "                          tpm2' or 'seal = pkcs11' and that backend's tpm2_* or\n"
    "                          pkcs11_* lines, paths absolute (default: seal = file; see\n"
    "                          docs/sealing.md); only when the instance is made\n"
    "  --store URI             key storage the units share: a PostgreSQL URI,\n"
    "                          postgresql://USER@HOST/DB?sslmode=verify-full, its password\n"
    "                          in a password file (PGPASSFILE), never in the URI (default:\n"
    "                          $KYOK_STORE, else DIR/keys.db, SQLite; see docs/storage.md);\n"
    "                          only when the instance is made\n"
    "  --listen ADDR           the IPv4 address of this host the new units listen on\n"
    "                          (default 127.0.0.1); one outside loopback needs --tls or\n"
    "                          --tls-cert: plain HTTP is served on loopback only; only\n"
    "                          when the instance is made\n"
    "  --tls-cert FILE         serve HTTPS with your own certificate (PEM, with its chain;\n"
    "  --tls-key FILE          it must name ADDR) and its key (PEM, no passphrase),\n"
    "                          copied into each new unit's directory; commands that talk\n"
    "                          to the units then need --cacert with its CA; only when the\n"
    "                          instance is made\n"
    "\n"
    "Units on other hosts join the instance with 'kyok host' (docs/operations.md, \"Units\n"
    "on several hosts\"); instance.json lists them with \"remote\": true, and 'kyok up'\n"
    "leaves them alone.\n"
    "\n"
    "A new instance gets its imprint credential, DIR/imprint-credential.pem (mode 0600):\n"
    "its units in imprint mode run commands only with a claim made with it, and each\n"
    "unit.conf holds its public key (imprint_verifier). Hand it to the administrators\n"
    "over a secure channel; delete it once the units left imprint mode if you like\n"
    "(zeroize needs it again). An instance whose unit.conf files have no\n"
    "imprint_verifier gets one (and a credential when there is none) when it starts.\n"
    "\n"
    "kyok-unitd is found through $KYOK_UNITD, next to kyok, in ../unitd (build tree),\n"
    "else on PATH.\n"
    "\n" CLI_COMMON_HELP;

int up_parse_zones(const char *list, char zones[][KY_ID_MAX + 1], size_t cap, size_t *n)
{
	char copy[2048], *save = NULL;
	size_t count = 0;

	if (snprintf(copy, sizeof(copy), "%s", list) >= (int)sizeof(copy))
		return KY_ERR_USAGE;
	if (list[0] == ',' || list[0] == '\0' || list[strlen(list) - 1] == ',' ||
	    strstr(list, ",,") != NULL)
		return KY_ERR_USAGE;
	for (char *z = strtok_r(copy, ",", &save); z != NULL; z = strtok_r(NULL, ",", &save)) {
		if (count == cap || !ky_id_valid(z))
			return KY_ERR_USAGE;
		snprintf(zones[count++], KY_ID_MAX + 1, "%s", z);
	}
	*n = count;
	return 0;
}

/* Reads --seal-config: only sealing settings ("key = value" with a key below), comments and
 * blank lines; paths absolute. *out is the text to add to each unit.conf. */
static int up_seal_conf(const char *path, char **out)
{
	static const char *const keys[] = {"seal",
	                                   "tpm2_tcti",
	                                   "pkcs11_module",
	                                   "pkcs11_token",
	                                   "pkcs11_key_label",
	                                   "pkcs11_pin_file",
	                                   NULL};
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	size_t lineno = 0, pos = 0;

	*out = NULL;
	if ((r = ky_file_read(path, UP_SEAL_CONF_MAX, &b)) != 0) {
		if (r == KY_ERR_TOO_LARGE)
			r = KY_ERR_USAGE;
		cli_fail(r, path, "--seal-config: cannot read the file (at most %d bytes of text)",
		         UP_SEAL_CONF_MAX);
		goto out;
	}
	if ((r = ky_buf_append(&b, "", 1)) != 0) { /* NUL-terminated */
		cli_fail(r, NULL, NULL);
		goto out;
	}
	if (strlen((const char *)b.data) != b.len - 1) {
		r = KY_ERR_USAGE;
		cli_fail(r, path, "--seal-config: not a text file");
		goto out;
	}
	while (pos < b.len - 1) {
		char *k = (char *)b.data + pos, *nl = strchr(k, '\n'), *eq, *v;
		size_t klen;
		bool known = false;

		lineno++;
		pos += nl != NULL ? (size_t)(nl - k) + 1 : strlen(k);
		if (nl != NULL)
			*nl = '\0';
		while (*k == ' ' || *k == '\t')
			k++;
		if (*k == '\0' || *k == '#')
			goto next;
		if ((eq = strchr(k, '=')) == NULL) {
			r = KY_ERR_USAGE;
			cli_fail(r, path, "--seal-config line %zu: expected 'key = value'", lineno);
			goto out;
		}
		for (klen = (size_t)(eq - k);
		     klen > 0 && (k[klen - 1] == ' ' || k[klen - 1] == '\t'); klen--)
			;
		for (size_t i = 0; keys[i] != NULL; i++)
			if (strlen(keys[i]) == klen && strncmp(keys[i], k, klen) == 0)
				known = true;
		if (!known) {
			r = KY_ERR_USAGE;
			cli_fail(r, path,
			         "--seal-config line %zu: '%.*s' is not a sealing setting (seal, "
			         "tpm2_tcti, pkcs11_module, pkcs11_token, pkcs11_key_label, "
			         "pkcs11_pin_file)",
			         lineno, (int)(klen > 64 ? 64 : klen), k);
			goto out;
		}
		for (v = eq + 1; *v == ' ' || *v == '\t'; v++)
			;
		if ((strncmp(k, "pkcs11_module", klen) == 0 ||
		     strncmp(k, "pkcs11_pin_file", klen) == 0) &&
		    *v != '/') {
			r = KY_ERR_USAGE;
			cli_fail(r, path, "--seal-config line %zu: '%.*s' must be an absolute path",
			         lineno, (int)klen, k);
			goto out;
		}
	next:
		if (nl != NULL)
			*nl = '\n';
	}
	if (asprintf(out, "# sealing, from --seal-config\n%s%s", (const char *)b.data,
	             b.len > 1 && b.data[b.len - 2] != '\n' ? "\n" : "") < 0) {
		*out = NULL;
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	r = 0;
out:
	ky_buf_free(&b);
	return r;
}

static int up_create(const char *dir, const char *unitd, int nunits, const char *zones_arg,
                     int base_port, bool tls, const char *seal_conf, const char *store,
                     const char *listen, const char *tls_cert, const char *tls_key,
                     struct up_unit *units)
{
	int r = KY_ERR_INTERNAL, ports[UP_MAX_UNITS];
	char instance[37], zones[UP_MAX_UNITS][KY_ID_MAX + 1];
	char imprint_hex[2 * KY_IMPRINT_PUB_LEN + 1];
	size_t nzones = 0;
	bool created_dir = false;
	DIR *d;

	if (zones_arg != NULL) {
		if (up_parse_zones(zones_arg, zones, UP_MAX_UNITS, &nzones) != 0) {
			cli_fail(KY_ERR_USAGE, "--zones",
			         "'%s': give comma separated zone names of A-Z a-z 0-9 . _ -",
			         zones_arg);
			return KY_ERR_USAGE;
		}
		if ((int)nzones != nunits) {
			cli_fail(KY_ERR_USAGE, "--zones", "%zu zones for %d units", nzones, nunits);
			return KY_ERR_USAGE;
		}
	}
	if ((d = opendir(dir)) != NULL) {
		struct dirent *e;
		bool empty = true;
		while ((e = readdir(d)) != NULL)
			if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
				empty = false;
		closedir(d);
		if (!empty) {
			cli_fail(
			    KY_ERR_EXISTS, dir,
			    "directory is not empty and holds no instance.json: choose another "
			    "--dir");
			return KY_ERR_EXISTS;
		}
	} else if (errno == ENOENT) {
		if ((r = ky_mkdir_p(dir, 0700, NULL, 0)) != 0) {
			cli_fail(r, dir, "cannot create directory: %s",
			         r == KY_ERR_USAGE ? "path too long" : strerror(errno));
			return r;
		}
		created_dir = true;
	} else {
		cli_fail(KY_ERR_IO, dir, "%s", strerror(errno));
		return KY_ERR_IO;
	}
	if ((r = ky_uuid_new(instance)) != 0) {
		cli_fail(r, NULL, "no random bytes");
		goto fail;
	}
	/* Each unit's port is fixed now, in its unit.conf: its URL stays the same for good. */
	for (int i = 0; i < nunits; i++)
		ports[i] = base_port + i;
	if (base_port == 0 && (r = up_free_ports(listen, ports, (size_t)nunits)) != 0)
		goto fail;
	if ((r = cli_anchor_create(dir, instance)) != 0 ||
	    (r = up_imprint_create(dir, imprint_hex)) != 0 ||
	    (tls && (r = up_tls_ca_create(dir, instance)) != 0))
		goto fail;
	if (store != NULL) {
		char sp[PATH_MAX], line[UP_STORE_MAX + 2];
		snprintf(sp, sizeof(sp), "%s/%s", dir, UP_STORE_FILE);
		snprintf(line, sizeof(line), "%s\n", store);
		if ((r = up_write_text(sp, line)) != 0) {
			cli_fail(r, sp, "cannot write the key storage URI");
			goto fail;
		}
	}
	for (int i = 0; i < nunits; i++) {
		struct up_unit *u = &units[i];
		u->number = i + 1;
		u->port = ports[i];
		snprintf(u->host, sizeof(u->host), "%s", listen);
		up_unit_paths(u, dir);
		if ((r = ky_uuid_new(u->id)) != 0) {
			cli_fail(r, NULL, "no random bytes");
			goto fail;
		}
		if (zones_arg != NULL)
			memcpy(u->zone, zones[i], sizeof(u->zone));
		else
			snprintf(u->zone, sizeof(u->zone), "zone-%d", u->number);
		if (mkdir(u->dir, 0700) != 0) {
			r = KY_ERR_IO;
			cli_fail(r, u->dir, "cannot create directory: %s", strerror(errno));
			goto fail;
		}
		if (tls_cert != NULL && (r = up_tls_own(tls_cert, tls_key, u->dir, u->host)) != 0)
			goto fail;
		if ((r = up_write_conf(dir, instance, u, seal_conf)) != 0) {
			cli_fail(r, u->conf, "cannot write the unit configuration");
			goto fail;
		}
		if ((r = up_imprint_conf_add(u->conf, imprint_hex)) != 0 ||
		    (r = up_certify(dir, unitd, instance, u)) != 0)
			goto fail;
	}
	for (int i = 0; i < nunits; i++)
		if ((r = up_spawn(unitd, &units[i])) != 0)
			goto fail;
	for (int i = 0; i < nunits; i++) {
		if ((r = up_wait_port(&units[i])) != 0)
			goto fail;
		units[i].status = "started";
	}
	if ((r = up_write_instance(dir, instance, units, (size_t)nunits)) != 0)
		goto fail;
	up_report(dir, instance, units, (size_t)nunits);
	up_imprint_note(dir);
	return 0;
fail:
	up_undo_started(units, (size_t)nunits);
	/* Nothing half-made stays behind. */
	if (created_dir) {
		up_rm_rf(dir);
	} else {
		char keyp[PATH_MAX], crtp[PATH_MAX], cred[PATH_MAX];
		for (int i = 0; i < nunits; i++)
			if (units[i].dir[0] != '\0')
				up_rm_rf(units[i].dir);
		cli_anchor_paths(dir, keyp, sizeof(keyp), crtp, sizeof(crtp));
		(void)unlink(keyp);
		(void)unlink(crtp);
		snprintf(cred, sizeof(cred), "%s/%s", dir, UP_STORE_FILE);
		(void)unlink(cred);
		snprintf(cred, sizeof(cred), "%s/%s", dir, KY_IMPRINT_CREDENTIAL_FILE);
		(void)unlink(cred);
		if (tls) {
			snprintf(cred, sizeof(cred), "%s/ca.key", dir);
			(void)unlink(cred);
			snprintf(cred, sizeof(cred), "%s/ca.crt", dir);
			(void)unlink(cred);
		}
	}
	fprintf(stderr, "nothing was kept in %s\n", dir);
	return r;
}

/* A unit whose state is gone starts afresh: a new identity key, certified by the anchor
 * (its old pin in known_units then no longer matches, as it should). */
static int up_recertify(const char *dir, const char *unitd, const char *instance,
                        const struct up_unit *u)
{
	char state[PATH_MAX], crt[PATH_MAX];
	int r;

	snprintf(state, sizeof(state), "%s/data/state.sealed", u->dir);
	if (up_exists(state))
		return 0;
	/* Certified but never started (a unit joined from another host): its first start makes
	 * the state from its pending identity key and identity.crt. */
	snprintf(state, sizeof(state), "%s/data/identity.pending", u->dir);
	snprintf(crt, sizeof(crt), "%s/identity.crt", u->dir);
	if (up_exists(state) && up_exists(crt))
		return 0;
	if ((r = up_certify(dir, unitd, instance, u)) != 0)
		return r;
	fprintf(stderr,
	        "note: crypto unit %d had no state: it starts afresh, in imprint mode, with a new "
	        "identity certified by the instance's anchor\n",
	        u->number);
	return 0;
}

/* Port of a unit URL "http://127.0.0.1:PORT", 0 when none. */
static int up_url_port(const char *url)
{
	const char *colon = strrchr(url, ':');
	char *end;
	long v;

	if (colon == NULL)
		return 0;
	v = strtol(colon + 1, &end, 10);
	return (*end == '\0' && v > 0 && v <= 65535) ? (int)v : 0;
}

/* Before an instance made by an older kyok starts again: a unit.conf with 'listen =
 * 127.0.0.1:0' (a new port at every start) gets the port of the unit's URL in instance.json,
 * or a free one, written into it: from now on its URL stays. */
static int up_ports_upgrade(const struct cli_instance *inst, struct up_unit *units, size_t n)
{
	int r = KY_ERR_INTERNAL;
	char host[64];

	for (size_t i = 0; i < n; i++) {
		struct up_unit *u = &units[i];
		int port;
		if (u->remote)
			continue;
		port = up_conf_port(u->conf);
		if (port < 0) {
			r = KY_ERR_CONFIG;
			cli_fail(r, u->conf,
			         "no 'listen = HOST:PORT' line: the instance directory is "
			         "damaged");
			return r;
		}
		if (port > 0 || up_unit_running(u) > 0)
			continue;
		port = up_url_port(inst->units[i].url);
		up_conf_host(u->conf, host, sizeof(host));
		if (port == 0 && (r = up_free_ports(host, &port, 1)) != 0)
			return r;
		if ((r = up_conf_set_port(u->conf, port)) != 0)
			return r;
		fprintf(stderr, "note: %s: crypto unit %d keeps port %d from now on\n", u->conf,
		        u->number, port);
	}
	return 0;
}

static int up_restart(const char *dir, const char *unitd, int nunits_arg, const char *zones_arg,
                      struct up_unit *units)
{
	int r = KY_ERR_INTERNAL;
	struct cli_instance inst;
	size_t n, serving = 0, nfailed = 0;

	if ((r = cli_instance_load(&inst)) != 0)
		return r;
	n = inst.nunits;
	if (nunits_arg > 0 && (size_t)nunits_arg != n) {
		cli_fail(KY_ERR_USAGE, dir,
		         "the instance there has %zu crypto units, not %d: 'kyok down --purge' "
		         "deletes it",
		         n, nunits_arg);
		return KY_ERR_USAGE;
	}
	if (zones_arg != NULL)
		fprintf(stderr, "note: instance exists: --zones ignored, zones stay as they are\n");
	for (size_t i = 0; i < n; i++) {
		struct up_unit *u = &units[i];
		u->number = inst.units[i].number;
		snprintf(u->id, sizeof(u->id), "%s", inst.units[i].id);
		snprintf(u->zone, sizeof(u->zone), "%s", inst.units[i].zone);
		up_unit_paths(u, dir);
		if (inst.units[i].remote) {
			u->remote = true;
			snprintf(u->url, sizeof(u->url), "%s", inst.units[i].url);
			u->status = "remote";
			continue;
		}
		if (!up_exists(u->conf)) {
			cli_fail(KY_ERR_CONFIG, u->conf,
			         "missing: the instance directory is damaged");
			return KY_ERR_CONFIG;
		}
	}
	if ((r = up_imprint_upgrade(dir, units, n)) != 0 ||
	    (r = up_ports_upgrade(&inst, units, n)) != 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		struct up_unit *u = &units[i];
		if (u->remote)
			continue;
		if ((u->pid = up_unit_running(u)) > 0) {
			long port = up_read_number(u->portf);
			if (port <= 0 || port > 65535) {
				cli_fail(KY_ERR_UNREACHABLE, u->dir,
				         "crypto unit %d runs (pid %ld) but has no port file",
				         u->number, (long)u->pid);
				return KY_ERR_UNREACHABLE;
			}
			u->port = (int)port;
			u->status = "already running";
			continue;
		}
		unlink(u->pidf);
		u->port = up_conf_port(u->conf);
		up_conf_host(u->conf, u->host, sizeof(u->host));
		/* A unit that cannot start is reported; the others start all the same. */
		if ((r = up_recertify(dir, unitd, inst.id, u)) != 0 ||
		    (r = up_spawn(unitd, u)) != 0) {
			u->failed = true;
			snprintf(u->why, sizeof(u->why), "crypto unit %d cannot be started (%s)",
			         u->number, ky_err_message(r));
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (units[i].failed || !units[i].started)
			continue;
		if (up_wait_port_quiet(&units[i]) != 0) {
			units[i].failed = true;
			continue;
		}
		units[i].status = "started";
	}
	for (size_t i = 0; i < n; i++) {
		if (units[i].remote)
			continue;
		if (!units[i].failed) {
			serving++;
			continue;
		}
		units[i].status = "failed";
		units[i].pid = 0;
		nfailed++;
	}
	/* Every failure is reported, as a warning while another unit serves. */
	for (size_t i = 0; i < n; i++) {
		if (!units[i].failed)
			continue;
		if (serving > 0)
			fprintf(stderr, "warning: %s: %s\n", units[i].dir, units[i].why);
		else
			cli_fail(KY_ERR_UNREACHABLE, units[i].dir, "%s", units[i].why);
		up_log_tail(units[i].log);
	}
	if (serving == 0) {
		r = KY_ERR_UNREACHABLE;
		cli_fail(r, dir,
		         "no crypto unit of the instance serves: fix the causes above, then "
		         "'kyok up' again");
		return r;
	}
	if ((r = up_write_instance(dir, inst.id, units, n)) != 0)
		goto fail;
	up_report(dir, inst.id, units, n);
	if (nfailed > 0) {
		char list[256] = "";
		size_t len = 0;
		for (size_t i = 0; i < n && len < sizeof(list); i++)
			if (!units[i].failed && !units[i].remote)
				len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%d",
				                        len > 0 ? ", " : "", units[i].number);
		fprintf(
		    stderr,
		    "warning: %zu of %zu crypto units do not serve (see above); serving: crypto "
		    "unit%s %s\n",
		    nfailed, n, serving > 1 ? "s" : "", list);
	}
	return 0;
fail:
	up_undo_started(units, n);
	return r;
}

/* --listen ADDR: an IPv4 address of this host; one outside loopback needs TLS (the unit
 * refuses it too). --tls-cert and --tls-key go together, without --tls. */
static int up_listen_check(const char *listen, bool tls, const char *cert, const char *key)
{
	struct in_addr a;

	if ((cert == NULL) != (key == NULL)) {
		cli_fail(KY_ERR_USAGE, cert == NULL ? "--tls-key" : "--tls-cert",
		         "give both --tls-cert FILE and --tls-key FILE");
		return KY_ERR_USAGE;
	}
	if (cert != NULL && tls) {
		cli_fail(KY_ERR_USAGE, "--tls",
		         "--tls makes the units' certificates, --tls-cert gives yours: choose one");
		return KY_ERR_USAGE;
	}
	if (listen == NULL)
		return 0;
	if (inet_pton(AF_INET, listen, &a) != 1) {
		cli_fail(KY_ERR_USAGE, "--listen", "'%.64s': give an IPv4 address of this host",
		         listen);
		return KY_ERR_USAGE;
	}
	if (a.s_addr == htonl(INADDR_ANY)) {
		cli_fail(KY_ERR_USAGE, "--listen",
		         "'%s' is no address a client can reach: give this host's own address",
		         listen);
		return KY_ERR_USAGE;
	}
	if ((ntohl(a.s_addr) >> 24) != 127 && !tls && cert == NULL) {
		cli_fail(KY_ERR_LISTEN_NEEDS_TLS, "--listen", "'%s' is not a loopback address",
		         listen);
		return KY_ERR_LISTEN_NEEDS_TLS;
	}
	return 0;
}

int up_main(int argc, char **argv)
{
	static const struct option opts[] = {{"dir", required_argument, NULL, 'd'},
	                                     {"units", required_argument, NULL, 'n'},
	                                     {"zones", required_argument, NULL, 'z'},
	                                     {"seal-config", required_argument, NULL, 'S'},
	                                     {"port", required_argument, NULL, 'P'},
	                                     {"tls", no_argument, NULL, 'T'},
	                                     {"store", required_argument, NULL, 'R'},
	                                     {"listen", required_argument, NULL, 'L'},
	                                     {"tls-cert", required_argument, NULL, 'C'},
	                                     {"tls-key", required_argument, NULL, 'K'},
	                                     CLI_COMMON_LONGOPTS,
	                                     {NULL, 0, NULL, 0}};
	int r = KY_ERR_INTERNAL, c, nunits = 0, base_port = 0;
	bool tls = false;
	const char *dir_arg = NULL, *zones = NULL, *seal_path = NULL, *store = NULL;
	const char *listen = NULL, *tls_cert = NULL, *tls_key = NULL;
	const char *store_env = getenv("KYOK_STORE");
	char dir[PATH_MAX / 2 - 64], path[PATH_MAX], unitd[PATH_MAX], *end, *seal_conf = NULL;
	struct up_unit *units = NULL;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(up_usage, stdout);
			return 0;
		case 'd':
			dir_arg = optarg;
			break;
		case 'n': {
			long v;
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno != 0 || end == optarg || *end != '\0' || v < 1 ||
			    v > UP_MAX_UNITS)
				return cli_fail(KY_ERR_USAGE, "--units",
				                "'%s': give a number of units from 1 to %d", optarg,
				                UP_MAX_UNITS);
			nunits = (int)v;
			break;
		}
		case 'z':
			zones = optarg;
			break;
		case 'S':
			seal_path = optarg;
			break;
		case 'T':
			tls = true;
			break;
		case 'P': {
			long v;
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno != 0 || end == optarg || *end != '\0' || v < 1 || v > 65535)
				return cli_fail(KY_ERR_USAGE, "--port",
				                "'%s': give a port number from 1 to 65535", optarg);
			base_port = (int)v;
			break;
		}
		case 'R':
			store = optarg;
			break;
		case 'L':
			listen = optarg;
			break;
		case 'C':
			tls_cert = optarg;
			break;
		case 'K':
			tls_key = optarg;
			break;
		default:
			if (cli_common_opt(c, optarg) != 0)
				return ky_err_exit(KY_ERR_USAGE);
			break;
		}
	}
	if (store != NULL && (r = up_store_check(store)) != 0)
		return ky_err_exit(r);
	if ((r = cli_no_operands(argc, argv)) != 0 ||
	    (r = up_listen_check(listen, tls, tls_cert, tls_key)) != 0)
		return ky_err_exit(r);
	if (base_port > 0 && base_port + (nunits > 0 ? nunits : 2) - 1 > 65535)
		return cli_fail(KY_ERR_USAGE, "--port",
		                "%d: the units' ports %d and up go past 65535: give a lower BASE",
		                base_port, base_port);
	if ((r = up_abs_dir(dir_arg != NULL ? dir_arg : cli_instance_dir(), dir, sizeof(dir))) != 0)
		return cli_fail(r, dir_arg != NULL ? dir_arg : cli_instance_dir(),
		                "cannot use this directory path");
	cli_g.instance_dir = dir;
	if ((r = up_find_unitd(unitd, sizeof(unitd))) != 0)
		return ky_err_exit(r);
	if ((units = calloc(UP_MAX_UNITS, sizeof(*units))) == NULL)
		return cli_fail(KY_ERR_NOMEM, NULL, NULL);
	snprintf(path, sizeof(path), "%s/instance.json", dir);
	if (up_exists(path) && store != NULL)
		cli_fail(r = KY_ERR_USAGE, "--store",
		         "the instance in %s exists: its units keep the key storage they were "
		         "made with",
		         dir);
	else if (!up_exists(path) && store == NULL && store_env != NULL && store_env[0] != '\0' &&
	         (r = up_store_check(store_env)) != 0)
		;
	else if (up_exists(path) && seal_path != NULL)
		cli_fail(r = KY_ERR_USAGE, "--seal-config",
		         "the instance in %s exists: its units keep the sealing they were made "
		         "with (a unit cannot change its sealing backend)",
		         dir);
	else if (up_exists(path) && tls)
		cli_fail(r = KY_ERR_USAGE, "--tls",
		         "the instance in %s exists: --tls makes a TLS CA only for a new instance; "
		         "give existing units api_tls_cert and api_tls_key in their unit.conf "
		         "(docs/operations.md)",
		         dir);
	else if (up_exists(path) && (listen != NULL || tls_cert != NULL))
		cli_fail(r = KY_ERR_USAGE, listen != NULL ? "--listen" : "--tls-cert",
		         "the instance in %s exists: its units keep the address and certificate "
		         "they were made with; to move a unit, stop it and edit 'listen' and "
		         "'api_tls_cert' in its unit.conf",
		         dir);
	else if (tls_cert != NULL && (r = up_tls_own(tls_cert, tls_key, NULL,
	                                             listen != NULL ? listen : "127.0.0.1")) != 0)
		;
	else if (up_exists(path) && base_port > 0)
		cli_fail(r = KY_ERR_USAGE, "--port",
		         "the instance in %s exists: its units keep the ports they were made "
		         "with; to move a unit, stop it and edit 'listen' in its unit.conf",
		         dir);
	else if (seal_path != NULL && (r = up_seal_conf(seal_path, &seal_conf)) != 0)
		;
	else if (up_exists(path))
		r = up_restart(dir, unitd, nunits, zones, units);
	else
		r = up_create(dir, unitd, nunits > 0 ? nunits : 2, zones, base_port, tls, seal_conf,
		              store != NULL                               ? store
		              : store_env != NULL && store_env[0] != '\0' ? store_env
		                                                          : NULL,
		              listen != NULL ? listen : "127.0.0.1", tls_cert, tls_key, units);
	free(seal_conf);
	free(units);
	return ky_err_exit(r);
}

/* ---- kyok unit-add ---- */

static const char unit_add_usage[] =
    "usage: kyok unit-add [--replace N] [--zone ZONE] [options]\n"
    "\n"
    "Adds a crypto unit to the local instance, or re-creates unit N in place of a lost\n"
    "one. The new unit makes its own identity key; the instance's unit trust anchor\n"
    "(DIR/anchor.key, held by whoever runs 'kyok up', never by the administrators)\n"
    "certifies it. The unit gets a new unit id and starts in imprint mode: select it\n"
    "('kyok tke cryptounit-add') and run 'kyok tke auto-recover' to give it the\n"
    "administrators, thresholds and master key of the live units.\n"
    "\n"
    "  --replace N             re-create unit N: it must not be running; what is left\n"
    "                          of its state is deleted, after confirmation (--yes)\n"
    "  --zone ZONE             zone of the new unit (default zone-N, or the zone of the\n"
    "                          unit replaced)\n"
    "\n" CLI_COMMON_HELP;

static int up_add_parse(int argc, char **argv, int *replace, const char **zone)
{
	static const struct option opts[] = {{"replace", required_argument, NULL, 'r'},
	                                     {"zone", required_argument, NULL, 'z'},
	                                     CLI_COMMON_LONGOPTS,
	                                     {NULL, 0, NULL, 0}};
	int c;
	char *end;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(unit_add_usage, stdout);
			return -1;
		case 'r': {
			long v;
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno != 0 || end == optarg || *end != '\0' || v < 1 ||
			    v > UP_MAX_UNITS) {
				cli_fail(KY_ERR_USAGE, "--replace",
				         "'%s': give the number of a crypto unit, 1 to %d", optarg,
				         UP_MAX_UNITS);
				return KY_ERR_USAGE;
			}
			*replace = (int)v;
			break;
		}
		case 'z':
			if (!ky_id_valid(optarg)) {
				cli_fail(KY_ERR_USAGE, "--zone",
				         "'%s': use 1 to 64 of A-Z a-z 0-9 . _ -", optarg);
				return KY_ERR_USAGE;
			}
			*zone = optarg;
			break;
		default:
			if (cli_common_opt(c, optarg) != 0)
				return KY_ERR_USAGE;
			break;
		}
	}
	return cli_no_operands(argc, argv);
}

int unit_add_main(int argc, char **argv)
{
	int r = KY_ERR_INTERNAL, replace = 0, maxnum = 0;
	const char *zone = NULL;
	char dir[PATH_MAX / 2 - 64], unitd[PATH_MAX], keyp[PATH_MAX], crtp[PATH_MAX];
	char moved[PATH_MAX] = "", state[PATH_MAX], host[64] = "";
	struct cli_instance inst;
	struct up_unit *units = NULL, *u = NULL;
	size_t n, idx;
	bool made_dir = false;

	if ((r = up_add_parse(argc, argv, &replace, &zone)) != 0)
		return r < 0 ? 0 : ky_err_exit(r);
	if ((r = up_abs_dir(cli_instance_dir(), dir, sizeof(dir))) != 0)
		return cli_fail(r, cli_instance_dir(), "cannot use this directory path");
	cli_g.instance_dir = dir;
	if ((r = up_find_unitd(unitd, sizeof(unitd))) != 0 || (r = cli_instance_load(&inst)) != 0)
		return ky_err_exit(r);
	cli_anchor_paths(dir, keyp, sizeof(keyp), crtp, sizeof(crtp));
	if (!up_exists(keyp) || !up_exists(crtp))
		return cli_fail(KY_ERR_NOT_FOUND, keyp,
		                "this instance has no unit trust anchor: only the holder of its "
		                "anchor can add a crypto unit");
	if ((units = calloc(UP_MAX_UNITS, sizeof(*units))) == NULL)
		return cli_fail(KY_ERR_NOMEM, NULL, NULL);
	n = inst.nunits;
	for (size_t i = 0; i < n; i++) {
		units[i].number = inst.units[i].number;
		snprintf(units[i].id, sizeof(units[i].id), "%s", inst.units[i].id);
		snprintf(units[i].zone, sizeof(units[i].zone), "%s", inst.units[i].zone);
		up_unit_paths(&units[i], dir);
		units[i].port = up_url_port(inst.units[i].url);
		if (units[i].number > maxnum)
			maxnum = units[i].number;
		if (inst.units[i].remote) {
			units[i].remote = true;
			snprintf(units[i].url, sizeof(units[i].url), "%s", inst.units[i].url);
			units[i].status = "remote";
			continue;
		}
		units[i].pid = up_unit_running(&units[i]);
		units[i].status = units[i].pid > 0 ? "running" : "stopped";
		up_conf_host(units[i].conf, units[i].host, sizeof(units[i].host));
		if (host[0] == '\0')
			snprintf(host, sizeof(host), "%s", units[i].host);
	}
	if (replace > 0) {
		for (idx = 0; idx < n && units[idx].number != replace; idx++)
			;
		if (idx == n) {
			r = KY_ERR_NOT_FOUND;
			cli_fail(r, "--replace", "the instance has no crypto unit %d", replace);
			goto out;
		}
		u = &units[idx];
		if (u->remote) {
			r = KY_ERR_USAGE;
			cli_fail(r, "--replace",
			         "crypto unit %d runs on another host (%s): replace it there, with "
			         "'kyok host join-request' (docs/operations.md)",
			         replace, u->url);
			u = NULL;
			goto out;
		}
		if (u->pid > 0) {
			r = KY_ERR_EXISTS;
			cli_fail(
			    r, u->dir,
			    "crypto unit %d runs (pid %ld): a live unit is not replaced; stop it "
			    "first if it is really lost",
			    replace, (long)u->pid);
			goto out;
		}
		snprintf(state, sizeof(state), "%s/data/state.sealed", u->dir);
		if (up_exists(state)) {
			char question[PATH_MAX + 160];
			snprintf(
			    question, sizeof(question),
			    "delete the state of crypto unit %d (%s) in %s? its administrators "
			    "and master key registers are lost for good",
			    replace, u->id, u->dir);
			if ((r = cli_confirm(question)) != 0)
				goto out;
		}
		/* Kept aside until the new unit runs, put back if it does not. */
		snprintf(moved, sizeof(moved), "%s.replaced", u->dir);
		if ((r = up_rm_rf(moved)) != 0 ||
		    (up_exists(u->dir) && rename(u->dir, moved) != 0)) {
			r = KY_ERR_IO;
			cli_fail(r, u->dir, "cannot move aside: %s", strerror(errno));
			moved[0] = '\0';
			goto out;
		}
		if (zone != NULL)
			snprintf(u->zone, sizeof(u->zone), "%s", zone);
		u->status = "re-created";
	} else {
		if (n >= UP_MAX_UNITS || n >= sizeof(inst.units) / sizeof(inst.units[0])) {
			r = KY_ERR_USAGE;
			cli_fail(r, dir, "the instance has %zu crypto units, the most there can be",
			         n);
			goto out;
		}
		idx = n++;
		u = &units[idx];
		u->number = maxnum + 1;
		up_unit_paths(u, dir);
		snprintf(u->host, sizeof(u->host), "%s", host[0] != '\0' ? host : "127.0.0.1");
		if (zone != NULL)
			snprintf(u->zone, sizeof(u->zone), "%s", zone);
		else
			snprintf(u->zone, sizeof(u->zone), "zone-%d", u->number);
		u->status = "added";
	}
	u->pid = 0;
	/* A re-created unit keeps its port (and URL); a new one gets a free one. */
	if (u->port == 0 && (r = up_free_ports(u->host, &u->port, 1)) != 0)
		goto out;
	if ((r = ky_uuid_new(u->id)) != 0) {
		cli_fail(r, NULL, "no random bytes");
		goto out;
	}
	if (mkdir(u->dir, 0700) != 0) {
		r = KY_ERR_IO;
		cli_fail(r, u->dir, "cannot create directory: %s", strerror(errno));
		goto out;
	}
	made_dir = true;
	/* The instance's imprint verifier, as its other units have it (the new unit starts in
	 * imprint mode): from their unit.conf, else from the credential, else a new one. */
	{
		char ihex[2 * KY_IMPRINT_PUB_LEN + 1] = "";
		bool have = false;
		for (size_t i = 0; i < n && !have; i++)
			if (&units[i] != u && up_imprint_conf_verifier(units[i].conf, ihex))
				have = true;
		if (!have) {
			int e = up_imprint_existing(dir, ihex);
			if (e == 0)
				e = up_imprint_create(dir, ihex) == 0 ? 1 : -1;
			if (e != 1) {
				r = KY_ERR_CONFIG;
				goto out;
			}
		}
		if ((r = up_write_conf(dir, inst.id, u, NULL)) != 0) {
			cli_fail(r, u->conf, "cannot write the unit configuration");
			goto out;
		}
		if ((r = up_imprint_conf_add(u->conf, ihex)) != 0)
			goto out;
	}
	if ((r = up_certify(dir, unitd, inst.id, u)) != 0 || (r = up_spawn(unitd, u)) != 0 ||
	    (r = up_wait_port(u)) != 0)
		goto out;
	if ((r = up_write_instance(dir, inst.id, units, n)) != 0)
		goto out;
	if (moved[0] != '\0' && up_rm_rf(moved) != 0)
		fprintf(stderr, "warning: cannot delete %s: delete it by hand\n", moved);
	moved[0] = '\0';
	made_dir = false;
	up_report(dir, inst.id, units, n);
	if (!cli_g.json)
		printf("crypto unit %d (%s) is in imprint mode: 'kyok tke cryptounit-add --units "
		       "%d', then 'kyok tke auto-recover'\n",
		       u->number, u->id, u->number);
	r = 0;
out:
	if (r != 0 && u != NULL) {
		if (u->started)
			up_undo_started(u, 1);
		if (made_dir)
			up_rm_rf(u->dir);
		if (moved[0] != '\0' && rename(moved, u->dir) != 0)
			fprintf(stderr, "warning: the old state of crypto unit %d is in %s\n",
			        u->number, moved);
	}
	free(units);
	return ky_err_exit(r);
}

/* ---- kyok down ---- */

static const char down_usage[] =
    "usage: kyok down [--dir DIR] [--purge] [options]\n"
    "\n"
    "Stops the crypto units of a local instance (SIGTERM, SIGKILL after 5 seconds).\n"
    "Their state stays in DIR: 'kyok up' brings the same units back.\n"
    "\n"
    "  --dir DIR               instance directory (default: --instance, $KYOK_INSTANCE,\n"
    "                          else ~/.kyok/instance)\n"
    "  --purge                 also delete DIR with every unit's state, after\n"
    "                          confirmation (--yes): administrators and master keys in\n"
    "                          it are lost for good\n"
    "\n" CLI_COMMON_HELP;

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
	static const struct option opts[] = {{"dir", required_argument, NULL, 'd'},
	                                     {"purge", no_argument, NULL, 'p'},
	                                     CLI_COMMON_LONGOPTS,
	                                     {NULL, 0, NULL, 0}};
	int r = KY_ERR_INTERNAL, c;
	const char *dir_arg = NULL;
	bool purge = false;
	char dir[PATH_MAX / 2 - 64], path[PATH_MAX], question[PATH_MAX + 128];
	struct up_unit *units = NULL;
	pid_t pids[UP_MAX_UNITS];
	size_t n = 0;
	json_t *arr = NULL;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(down_usage, stdout);
			return 0;
		}
		if (c == 'd')
			dir_arg = optarg;
		else if (c == 'p')
			purge = true;
		else if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if ((r = cli_no_operands(argc, argv)) != 0)
		return ky_err_exit(r);
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

/* ---- kyok status ---- */

static const char status_usage[] =
    "usage: kyok status [options]\n"
    "\n"
    "Shows every crypto unit of the instance: zone, whether it answers, mode (imprint or\n"
    "secure), administrators, signature/revocation thresholds and both master key\n"
    "registers (state and the first 16 hex digits of the verification pattern).\n"
    "Below the table, each unit's readiness: 'ready' when it can serve keys, else\n"
    "'not ready' and every reason (docs/operations.md, Monitoring), as its GET /ready\n"
    "answers. --output json gives each unit's full public state (readiness in\n"
    "\"ready\"). Exits non-zero when a unit does not answer; a unit not ready does not\n"
    "change the exit status.\n";

/* "ready", "not ready: code, code", or why it is not known. */
static void status_ready(const json_t *st, char *out, size_t n)
{
	const json_t *o = json_object_get(st, "ready"), *reasons = json_object_get(o, "reasons"),
	             *e;
	size_t k, len;

	if (st == NULL) {
		snprintf(out, n, "unknown (does not answer)");
		return;
	}
	if (!json_is_boolean(json_object_get(o, "ready")) || !json_is_array(reasons)) {
		snprintf(out, n, "unknown (the unit does not report it)");
		return;
	}
	if (json_is_true(json_object_get(o, "ready"))) {
		snprintf(out, n, "ready");
		return;
	}
	len = (size_t)snprintf(out, n, "not ready:");
	json_array_foreach(reasons, k, e)
	{
		const char *code = json_string_value(json_object_get(e, "code"));
		if (len >= n)
			break;
		len += (size_t)snprintf(out + len, n - len, "%s %s", k == 0 ? "" : ",",
		                        code ? code : "?");
	}
}

static void status_register(const json_t *st, const char *reg, char *out, size_t n)
{
	const json_t *o = json_object_get(st, reg);
	const char *state = json_string_value(json_object_get(o, "state"));
	const char *vp = json_string_value(json_object_get(o, "vp"));

	if (vp != NULL && vp[0] != '\0')
		snprintf(out, n, "%s %.*s", state ? state : "?", UP_SHORT_HEX, vp);
	else
		snprintf(out, n, "%s", state ? state : "?");
}

int status_main(int argc, char **argv)
{
	static const char *const hdr[] = {"UNIT",   "ZONE",    "REACHABLE", "MODE",
	                                  "ADMINS", "SIG/REV", "NEW MK",    "CURRENT MK"};
	int r = KY_ERR_INTERNAL, first = 0;
	struct cli_instance inst;
	struct cli_table *t = NULL;
	json_t *arr = NULL;
	char(*ready)[256] = NULL;

	if ((r = cli_opts_common_only(argc, argv, status_usage)) >= 0)
		return r;
	if ((r = cli_instance_load(&inst)) != 0)
		return ky_err_exit(r);
	r = KY_ERR_NOMEM;
	if ((ready = calloc(inst.nunits ? inst.nunits : 1, sizeof(*ready))) == NULL ||
	    (cli_g.json ? (arr = json_array()) == NULL : (t = cli_table_new(8, hdr)) == NULL)) {
		cli_fail(r, NULL, NULL);
		goto out;
	}
	for (size_t i = 0; i < inst.nunits; i++) {
		const struct cli_unit *u = &inst.units[i];
		json_t *st = NULL;
		int e = unit_state(&inst, u, &st);
		char num[16], admins[512], thr[32], newmk[128], curmk[128];

		if (e != 0 && first == 0)
			first = e;
		status_ready(e == 0 ? st : NULL, ready[i], sizeof(ready[i]));
		if (arr != NULL) {
			json_array_append_new(
			    arr,
			    json_pack("{s:i, s:s, s:s, s:s, s:b, s:o?, s:s*}", "number", u->number,
			              "id", u->id, "zone", u->zone, "url", u->url, "reachable",
			              e == 0, "state", st, "error", e ? ky_err_slug(e) : NULL));
			continue;
		}
		snprintf(num, sizeof(num), "%d", u->number);
		if (e != 0) {
			const char *row[] = {num, u->zone, "no", "-", "-", "-", "-", "-"};
			if (cli_table_add(t, row) != 0)
				goto nomem;
			continue;
		}
		const json_t *list = json_object_get(st, "admins"), *a;
		size_t k;
		int len = snprintf(admins, sizeof(admins), "%zu", json_array_size(list));
		json_array_foreach(list, k, a)
		{
			const char *name = json_string_value(json_object_get(a, "name"));
			if (len < 0 || (size_t)len >= sizeof(admins))
				break;
			len += snprintf(admins + len, sizeof(admins) - (size_t)len, "%s%s",
			                k == 0 ? " (" : ", ", name ? name : "?");
		}
		if (json_array_size(list) > 0 && len >= 0 && (size_t)len < sizeof(admins) - 1)
			strcat(admins, ")");
		snprintf(thr, sizeof(thr), "%d/%d",
		         (int)json_integer_value(json_object_get(st, "signature_threshold")),
		         (int)json_integer_value(json_object_get(st, "revocation_threshold")));
		status_register(st, "new_mk", newmk, sizeof(newmk));
		status_register(st, "current_mk", curmk, sizeof(curmk));
		const char *row[] = {
		    num,    u->zone,
		    "yes",  json_is_true(json_object_get(st, "imprint")) ? "imprint" : "secure",
		    admins, thr,
		    newmk,  curmk};
		e = cli_table_add(t, row);
		json_decref(st);
		if (e != 0)
			goto nomem;
	}
	if (arr != NULL) {
		cli_print_json(json_pack("{s:s, s:s, s:o}", "instance", inst.id, "dir", inst.dir,
		                         "units", arr));
		arr = NULL; /* transferred */
	} else {
		printf("instance %s (%s)\n\n", inst.id, inst.dir);
		cli_table_print(t, stdout);
		printf("\n");
		for (size_t i = 0; i < inst.nunits; i++)
			printf("unit %d: %s\n", inst.units[i].number, ready[i]);
	}
	r = first;
	goto out;
nomem:
	r = KY_ERR_NOMEM;
	cli_fail(r, NULL, NULL);
out:
	json_decref(arr);
	cli_table_free(t);
	free(ready);
	return ky_err_exit(r);
}
