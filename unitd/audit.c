/* The unit's audit trail: data_dir/audit/audit-NNNNNNNN.jsonl (include/kyok/audit.h has the
 * line format, docs/formats.md how to check it).
 *
 * One mutex orders the lines: a line takes the next seq and the hash of the line before
 * under it, is written with one write(2) on an O_APPEND descriptor, and only then is the
 * request it records answered. Signing is the slow part (an ECDSA P-521 signature takes
 * about a millisecond), so lines are not signed one by one: a thread writes a checkpoint
 * line, signed by the identity key, when lines have waited audit_checkpoint_ms or
 * UNITD_AUDIT_CKPT_LINES of them are waiting; one is also written before a file is closed
 * and at stop. Through the chain a checkpoint covers every line before it. Checkpoints
 * and command lines are fsync'd; other lines reach the disk with the next checkpoint (a
 * crash of the process loses none of them; a power loss may lose those after the last
 * checkpoint).
 *
 * A write that fails is undone (the file truncated back to its last whole line) and the
 * caller refuses what it was recording. When it cannot be undone, every later write fails
 * until the unit is restarted: a torn line must not be followed by more lines.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kyok/audit.h"
#include "kyok/crypto.h"
#include "kyok/err.h"
#include "unitd/unitd.h"

#ifndef KYOK_VERSION
#define KYOK_VERSION "0.1.0"
#endif

#define AUDIT_SUBDIR     "audit"
#define AUDIT_NAME_FMT   "audit-%08llu.jsonl"
#define AUDIT_NAME_MAX   32
#define AUDIT_FILE_LIMIT 99999999ull
/* Room kept at the end of a file for the lines that close it (a checkpoint, or a stop line
 * and a checkpoint: each under 600 bytes), so that no file grows past audit_max_bytes. */
#define AUDIT_CLOSE_RESERVE 1024u

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool open, thread_running, stop, broken;
	int fd;
	char *dir;
	unsigned long long fileno;
	uint64_t size, max;
	uint64_t seq;
	uint8_t hash[KY_AUDIT_HASH_LEN];
	uint64_t pending; /* lines since the last checkpoint */
	uint32_t ckpt_ms;
	EVP_PKEY *key;
	char *cert_b64;
	char instance[KY_ID_MAX + 1];
	char unit[KY_ID_MAX + 1];
	time_t tsec; /* the second tbase holds */
	char tbase[24];
} audit = {.lock = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

static void audit_time_locked(char *out, size_t outlen)
{
	struct timespec now;
	struct tm tm;

	if (clock_gettime(CLOCK_REALTIME, &now) != 0)
		now.tv_sec = 0, now.tv_nsec = 0;
	if (now.tv_sec != audit.tsec || audit.tbase[0] == '\0') {
		if (gmtime_r(&now.tv_sec, &tm) == NULL ||
		    strftime(audit.tbase, sizeof(audit.tbase), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
			snprintf(audit.tbase, sizeof(audit.tbase), "1970-01-01T00:00:00");
		audit.tsec = now.tv_sec;
	}
	snprintf(out, outlen, "%s.%03ldZ", audit.tbase, now.tv_nsec / 1000000);
}

/* Writes one closed line and its newline; on failure undoes it. */
static int audit_append_locked(struct ky_audit_line *l, bool sync)
{
	ssize_t w;
	size_t n = l->len + 1;
	uint8_t h[KY_AUDIT_HASH_LEN];

	if (audit.broken || audit.fd < 0)
		return KY_ERR_AUDIT_UNAVAILABLE;
	if (ky_audit_hash(l->s, l->len, h) != 0)
		return KY_ERR_CRYPTO;
	l->s[l->len] = '\n';
	w = write(audit.fd, l->s, n);
	l->s[l->len] = '\0';
	if (w != (ssize_t)n) {
		int saved = w < 0 ? errno : ENOSPC;
		if (w > 0 && ftruncate(audit.fd, (off_t)audit.size) != 0)
			audit.broken = true;
		unitd_log("error: cannot write audit log file " AUDIT_NAME_FMT " in '%s': %s%s",
		          audit.fileno, audit.dir, strerror(saved),
		          audit.broken ? " (a partial line stays: no more lines until restart)"
		                       : "");
		return KY_ERR_AUDIT_UNAVAILABLE;
	}
	audit.size += n;
	audit.seq++;
	memcpy(audit.hash, h, sizeof(h));
	audit.pending++;
	if (sync && fdatasync(audit.fd) != 0) {
		unitd_log("error: cannot sync audit log file " AUDIT_NAME_FMT " in '%s': %s",
		          audit.fileno, audit.dir, strerror(errno));
		return KY_ERR_AUDIT_UNAVAILABLE;
	}
	return 0;
}

static void audit_begin_locked(struct ky_audit_line *l, const char *event)
{
	char t[40];

	audit_time_locked(t, sizeof(t));
	ky_audit_begin(l, audit.seq + 1, audit.hash, t, event);
}

static int audit_checkpoint_locked(void)
{
	int r = KY_ERR_INTERNAL;
	struct ky_audit_line l;

	audit_begin_locked(&l, "checkpoint");
	ky_audit_add_str(&l, "instance", audit.instance);
	ky_audit_add_str(&l, "unit", audit.unit);
	if ((r = ky_audit_end(&l)) != 0 || (r = ky_audit_sign(&l, audit.key)) != 0) {
		unitd_log("error: cannot sign an audit checkpoint: %s", ky_err_message(r));
		return KY_ERR_AUDIT_UNAVAILABLE;
	}
	if ((r = audit_append_locked(&l, true)) != 0)
		return r;
	audit.pending = 0;
	return 0;
}

static int audit_fsync_dir(void)
{
	int fd = open(audit.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = fd >= 0 && fsync(fd) == 0 ? 0 : KY_ERR_IO;

	if (fd >= 0)
		close(fd);
	return r;
}

/* Closes the present file (after a checkpoint when lines wait) and begins the next one
 * with its file line, linked to the last line of the one before. */
static int audit_next_file_locked(void)
{
	int r = KY_ERR_INTERNAL, fd = -1;
	char name[AUDIT_NAME_MAX], path[4096];
	struct ky_audit_line l;

	if (audit.fd >= 0 && audit.pending > 0 && (r = audit_checkpoint_locked()) != 0)
		return r;
	if (audit.fileno >= AUDIT_FILE_LIMIT) {
		unitd_log("error: audit log directory '%s' holds its last file number", audit.dir);
		return KY_ERR_AUDIT_UNAVAILABLE;
	}
	snprintf(name, sizeof(name), AUDIT_NAME_FMT, audit.fileno + 1);
	snprintf(path, sizeof(path), "%s/%s", audit.dir, name);
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		unitd_log("error: cannot create audit log file '%s': %s", path, strerror(errno));
		return KY_ERR_AUDIT_UNAVAILABLE;
	}
	if (audit_fsync_dir() != 0) {
		unitd_log("error: cannot sync audit log directory '%s': %s", audit.dir,
		          strerror(errno));
		r = KY_ERR_AUDIT_UNAVAILABLE;
		goto fail;
	}
	if (audit.fd >= 0)
		close(audit.fd);
	audit.fd = fd;
	fd = -1; /* transferred */
	audit.fileno++;
	audit.size = 0;
	audit_begin_locked(&l, "file");
	ky_audit_add_str(&l, "instance", audit.instance);
	ky_audit_add_str(&l, "unit", audit.unit);
	ky_audit_add_str(&l, "file", name);
	ky_audit_add_str(&l, "cert", audit.cert_b64);
	if ((r = ky_audit_end(&l)) != 0 || (r = audit_append_locked(&l, false)) != 0) {
		/* An empty file is skipped (and removed) at the next start. */
		r = KY_ERR_AUDIT_UNAVAILABLE;
		return r;
	}
	return 0;
fail:
	close(fd);
	(void)unlink(path);
	return r;
}

/* Writes one event: members come ready (",\"a\":..."). A new file begins first when this
 * line would leave the present one less than AUDIT_CLOSE_RESERVE below its size (a line
 * longer than a whole file then goes alone into the new one). */
static int audit_event(const char *event, const struct ky_audit_line *members, bool sync)
{
	int r = KY_ERR_INTERNAL;
	struct ky_audit_line l;

	if (members->over)
		return KY_ERR_TOO_LARGE;
	pthread_mutex_lock(&audit.lock);
	if (!audit.open) {
		r = 0;
		goto out;
	}
	for (int round = 0; round < 2; round++) {
		audit_begin_locked(&l, event);
		ky_audit_add_members(&l, members->s, members->len);
		if ((r = ky_audit_end(&l)) != 0)
			goto out;
		if (round == 1 || audit.size + l.len + 1 + AUDIT_CLOSE_RESERVE <= audit.max)
			break;
		if ((r = audit_next_file_locked()) != 0)
			goto out;
	}
	if ((r = audit_append_locked(&l, sync)) != 0)
		goto out;
	if (audit.pending >= UNITD_AUDIT_CKPT_LINES && audit.thread_running)
		pthread_cond_signal(&audit.cond);
	r = 0;
out:
	pthread_mutex_unlock(&audit.lock);
	return r;
}

static void *audit_thread(void *arg)
{
	struct timespec until;

	(void)arg;
	pthread_mutex_lock(&audit.lock);
	while (!audit.stop) {
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += audit.ckpt_ms / 1000;
		until.tv_nsec += (long)(audit.ckpt_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (!audit.stop && audit.pending < UNITD_AUDIT_CKPT_LINES &&
		       pthread_cond_timedwait(&audit.cond, &audit.lock, &until) != ETIMEDOUT)
			;
		if (!audit.stop && audit.pending > 0 && !audit.broken)
			(void)audit_checkpoint_locked(); /* logged; tried again next time */
	}
	pthread_mutex_unlock(&audit.lock);
	return NULL;
}

/* ---- start ---- */

static bool audit_name_number(const char *name, unsigned long long *n)
{
	unsigned long long v = 0;
	size_t len = strlen(name);

	if (len != strlen("audit-00000000.jsonl") || strncmp(name, "audit-", 6) != 0 ||
	    strcmp(name + 14, ".jsonl") != 0)
		return false;
	for (size_t i = 6; i < 14; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		v = v * 10 + (unsigned long long)(name[i] - '0');
	}
	*n = v;
	return v > 0;
}

static int audit_newest(const char *dir, unsigned long long *newest, char *err, size_t errlen)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	unsigned long long n, max = 0;

	if (d == NULL) {
		snprintf(err, errlen, "cannot read audit log directory '%s': %s", dir,
		         strerror(errno));
		return KY_ERR_IO;
	}
	while ((e = readdir(d)) != NULL)
		if (audit_name_number(e->d_name, &n) && n > max)
			max = n;
	closedir(d);
	*newest = max;
	return 0;
}

/* Reads the last line of file number n: its seq and hash. *empty when the file has no
 * byte (a start that crashed right after creating it). */
static int audit_tail(const char *dir, unsigned long long n, bool *empty, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL, fd = -1;
	char path[4096], buf[KY_AUDIT_LINE_MAX + 2];
	struct stat sb;
	size_t want, start;
	ssize_t got;
	json_t *j = NULL, *jseq;

	*empty = false;
	snprintf(path, sizeof(path), "%s/" AUDIT_NAME_FMT, dir, n);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0 || fstat(fd, &sb) != 0) {
		r = KY_ERR_IO;
		snprintf(err, errlen, "cannot read audit log file '%s': %s", path, strerror(errno));
		goto out;
	}
	if (sb.st_size == 0) {
		*empty = true;
		r = 0;
		goto out;
	}
	want = sb.st_size > (off_t)sizeof(buf) ? sizeof(buf) : (size_t)sb.st_size;
	got = pread(fd, buf, want, sb.st_size - (off_t)want);
	if (got != (ssize_t)want) {
		r = KY_ERR_IO;
		snprintf(err, errlen, "cannot read audit log file '%s'", path);
		goto out;
	}
	if (buf[want - 1] != '\n') {
		r = KY_ERR_AUDIT_LINE;
		snprintf(err, errlen,
		         "audit log file '%s' ends in a partial line (a power loss?): keep it for "
		         "inspection and move it out of '%s', then start the unit again",
		         path, dir);
		goto out;
	}
	start = want - 1;
	while (start > 0 && buf[start - 1] != '\n')
		start--;
	if ((start == 0 && want == sizeof(buf)) ||
	    (j = json_loadb(buf + start, want - 1 - start, 0, NULL)) == NULL ||
	    !json_is_integer(jseq = json_object_get(j, "seq")) || json_integer_value(jseq) < 1) {
		r = KY_ERR_AUDIT_LINE;
		snprintf(err, errlen,
		         "the last line of audit log file '%s' is not an audit line: keep the file "
		         "for inspection and move it out of '%s', then start the unit again",
		         path, dir);
		goto out;
	}
	audit.seq = (uint64_t)json_integer_value(jseq);
	if ((r = ky_audit_hash(buf + start, want - 1 - start, audit.hash)) != 0) {
		snprintf(err, errlen, "cannot hash the last audit line");
		goto out;
	}
	r = 0;
out:
	json_decref(j);
	if (fd >= 0)
		close(fd);
	return r;
}

static int audit_cert_b64(X509 *cert, char **out)
{
	unsigned char *der = NULL;
	int n = i2d_X509(cert, &der);
	int r;

	if (n <= 0)
		return KY_ERR_CRYPTO;
	r = ky_b64_encode(der, (size_t)n, out);
	OPENSSL_free(der);
	return r;
}

static void audit_release_locked(void)
{
	if (audit.fd >= 0)
		close(audit.fd);
	audit.fd = -1;
	free(audit.dir);
	audit.dir = NULL;
	free(audit.cert_b64);
	audit.cert_b64 = NULL;
	EVP_PKEY_free(audit.key);
	audit.key = NULL;
	audit.open = false;
	audit.broken = false;
	audit.stop = false;
	audit.seq = 0;
	audit.pending = 0;
	memset(audit.hash, 0, sizeof(audit.hash));
}

int unitd_audit_open(const struct unitd_config *cfg, const struct unitd_store *st,
                     const struct ky_domain *d, bool created, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	unsigned long long newest = 0;
	bool empty = false;
	struct stat sb;
	struct ky_audit_line m;
	pthread_condattr_t ca;
	char state[64];

	pthread_mutex_lock(&audit.lock);
	if (asprintf(&audit.dir, "%s/" AUDIT_SUBDIR, st->dir) < 0) {
		audit.dir = NULL;
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (mkdir(audit.dir, 0700) != 0 && errno != EEXIST) {
		r = KY_ERR_IO;
		snprintf(err, errlen, "cannot create audit log directory '%s': %s", audit.dir,
		         strerror(errno));
		goto fail;
	}
	if (lstat(audit.dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		r = KY_ERR_IO;
		snprintf(err, errlen, "'%s' is not a directory: the audit log needs it", audit.dir);
		goto fail;
	}
	/* The newest file with a line in it holds the chain's head. */
	for (;;) {
		if ((r = audit_newest(audit.dir, &newest, err, errlen)) != 0)
			goto fail;
		if (newest == 0)
			break;
		if ((r = audit_tail(audit.dir, newest, &empty, err, errlen)) != 0)
			goto fail;
		if (!empty)
			break;
		{
			char path[4096];
			snprintf(path, sizeof(path), "%s/" AUDIT_NAME_FMT, audit.dir, newest);
			if (unlink(path) != 0) {
				r = KY_ERR_IO;
				snprintf(err, errlen, "cannot remove empty audit log file '%s': %s",
				         path, strerror(errno));
				goto fail;
			}
		}
	}
	audit.fileno = newest;
	audit.max = cfg->audit_max_bytes ? cfg->audit_max_bytes : UNITD_AUDIT_BYTES_DEFAULT;
	audit.ckpt_ms =
	    cfg->audit_checkpoint_ms ? cfg->audit_checkpoint_ms : UNITD_AUDIT_CKPT_DEFAULT;
	snprintf(audit.instance, sizeof(audit.instance), "%s", d->instance);
	snprintf(audit.unit, sizeof(audit.unit), "%s", d->unit);
	if (d->identity_key == NULL || EVP_PKEY_up_ref(d->identity_key) != 1) {
		r = KY_ERR_INTERNAL;
		snprintf(err, errlen, "the unit state has no identity key");
		goto fail;
	}
	audit.key = d->identity_key;
	if ((r = audit_cert_b64(d->identity_cert, &audit.cert_b64)) != 0) {
		snprintf(err, errlen, "cannot encode the identity certificate");
		goto fail;
	}
	audit.open = true;
	if ((r = audit_next_file_locked()) != 0) {
		snprintf(err, errlen, "cannot write the audit log in '%s' (see the log above)",
		         audit.dir);
		goto fail;
	}
	pthread_mutex_unlock(&audit.lock);

	ky_audit_members(&m);
	ky_audit_add_str(&m, "instance", d->instance);
	ky_audit_add_str(&m, "unit", d->unit);
	ky_audit_add_str(&m, "zone", cfg->zone);
	ky_audit_add_str(&m, "version", KYOK_VERSION);
	ky_audit_add_uint(&m, "pid", (uint64_t)getpid());
	if ((r = audit_event("start", &m, false)) != 0)
		goto fail_unlocked;
	ky_audit_members(&m);
	ky_audit_add_str(&m, "backend", st->seal->ops->name);
	ky_audit_add_str(&m, "state", st->state_path);
	snprintf(state, sizeof(state), "%s", created ? "created" : "opened");
	ky_audit_add_str(&m, "outcome", state);
	ky_audit_add_uint(&m, "next_counter", d->next_counter);
	if ((r = audit_event("unseal", &m, true)) != 0)
		goto fail_unlocked;

	pthread_mutex_lock(&audit.lock);
	if (pthread_condattr_init(&ca) != 0 ||
	    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
	    pthread_cond_init(&audit.cond, &ca) != 0) {
		r = KY_ERR_INTERNAL;
		snprintf(err, errlen, "cannot create a condition variable");
		goto fail;
	}
	pthread_condattr_destroy(&ca);
	if (pthread_create(&audit.thread, NULL, audit_thread, NULL) != 0) {
		pthread_cond_destroy(&audit.cond);
		r = KY_ERR_INTERNAL;
		snprintf(err, errlen, "cannot start the audit checkpoint thread");
		goto fail;
	}
	audit.thread_running = true;
	pthread_mutex_unlock(&audit.lock);
	return 0;
fail_unlocked:
	snprintf(err, errlen, "cannot write the audit log in '%s': %s", audit.dir,
	         ky_err_message(r));
	pthread_mutex_lock(&audit.lock);
fail:
	audit_release_locked();
	pthread_mutex_unlock(&audit.lock);
	return r;
}

void unitd_audit_close(void)
{
	struct ky_audit_line m;
	bool running;

	pthread_mutex_lock(&audit.lock);
	running = audit.thread_running;
	audit.stop = true;
	if (running)
		pthread_cond_signal(&audit.cond);
	pthread_mutex_unlock(&audit.lock);
	if (running) {
		pthread_join(audit.thread, NULL);
		pthread_cond_destroy(&audit.cond);
	}
	ky_audit_members(&m);
	ky_audit_add_str(&m, "unit", audit.unit);
	if (audit_event("stop", &m, false) != 0)
		unitd_log("error: cannot write the audit stop line");
	pthread_mutex_lock(&audit.lock);
	if (audit.open && audit.pending > 0 && audit_checkpoint_locked() != 0)
		unitd_log("error: cannot write the final audit checkpoint: the last audit lines "
		          "stay unsigned");
	audit.thread_running = false;
	audit_release_locked();
	pthread_mutex_unlock(&audit.lock);
}

/* ---- events ---- */

static const char *audit_phase(enum unitd_audit_phase phase)
{
	return phase == UNITD_AUDIT_INTENT ? "intent" : "done";
}

int unitd_audit_command(enum unitd_audit_phase phase, const struct ky_domain *d, const uint8_t *cms,
                        size_t n, const char *from, int outcome, bool acted, char *detail,
                        size_t detaillen)
{
	struct ky_audit_line m;
	struct ky_buf content = {0};
	struct ky_cms_signer *signers = NULL;
	size_t nsigners = 0;
	struct ky_command *cmd = NULL;
	char ski[2 * KY_SKI_LEN + 1];
	int r;

	ky_audit_members(&m);
	ky_audit_add_str(&m, "phase", audit_phase(phase));
	ky_audit_add_str(&m, "from", from);
	if (ky_cms_parse(cms, n, &content, &signers, &nsigners) == 0 &&
	    ky_command_parse(content.data, content.len, &cmd) == 0) {
		ky_audit_add_str(&m, "op", ky_op_name(cmd->op));
		ky_audit_add_uint(&m, "counter", cmd->counter);
	} else {
		ky_audit_add_str(&m, "op", "-");
	}
	ky_audit_add_json(&m, "signers", "[");
	for (size_t i = 0; i < nsigners; i++) {
		const char *name = signers[i].name;
		bool admin = false;
		for (size_t k = 0; d != NULL && k < d->nadmins; k++)
			if (CRYPTO_memcmp(d->admins[k].ski, signers[i].ski, KY_SKI_LEN) == 0) {
				name = d->admins[k].name;
				admin = true;
			}
		ky_hex_encode(signers[i].ski, KY_SKI_LEN, ski);
		ky_audit_add_members(&m, i ? ",{\"name\":\"" : "{\"name\":\"", i ? 10 : 9);
		ky_audit_add_escaped(&m, name);
		ky_audit_add_members(&m, "\"", 1);
		ky_audit_add_str(&m, "ski", ski);
		ky_audit_add_bool(&m, "admin", admin);
		ky_audit_add_members(&m, "}", 1);
	}
	ky_audit_add_members(&m, "]", 1);
	if (phase == UNITD_AUDIT_DONE) {
		ky_audit_add_str(&m, "outcome", ky_err_slug(outcome));
		if (outcome != 0 && detail[0] != '\0')
			ky_audit_add_str(&m, "reason", detail);
	}
	r = audit_event("admin-command", &m, true);
	ky_command_free(cmd);
	free(signers);
	ky_buf_free(&content);
	if (r == 0)
		return phase == UNITD_AUDIT_DONE ? outcome : 0;
	if (phase == UNITD_AUDIT_DONE && acted) {
		unitd_log(
		    "error: an admin command was carried out but its audit outcome line could "
		    "not be written (its intent line was)");
		return outcome;
	}
	snprintf(detail, detaillen,
	         "the crypto unit cannot write its audit log: the command was not carried out");
	return KY_ERR_AUDIT_UNAVAILABLE;
}

int unitd_audit_api(enum unitd_audit_phase phase, const char *method, const char *route,
                    const char *action, const char *apikey, const char *key, unsigned status,
                    int err)
{
	struct ky_audit_line m;

	ky_audit_members(&m);
	ky_audit_add_str(&m, "phase", audit_phase(phase));
	ky_audit_add_str(&m, "method", method);
	ky_audit_add_str(&m, "route", route);
	if (action != NULL && action[0] != '\0')
		ky_audit_add_str(&m, "action", action);
	ky_audit_add_str(&m, "apikey", apikey);
	if (key != NULL && key[0] != '\0')
		ky_audit_add_str(&m, "key", key);
	if (phase == UNITD_AUDIT_DONE) {
		ky_audit_add_uint(&m, "status", status);
		ky_audit_add_str(&m, "code", ky_err_slug(err));
	}
	return audit_event("key-api", &m, false);
}

void unitd_audit_seal(const struct ky_domain *d)
{
	struct ky_audit_line m;

	ky_audit_members(&m);
	ky_audit_add_uint(&m, "next_counter", d->next_counter);
	ky_audit_add_uint(&m, "admins", d->nadmins);
	ky_audit_add_str(&m, "new_mk", ky_new_state_name(d->new_state));
	ky_audit_add_str(&m, "current_mk", ky_cur_state_name(d->cur_state));
	if (audit_event("seal", &m, false) != 0)
		unitd_log("error: the sealed state was written but the audit log could not say so");
}
