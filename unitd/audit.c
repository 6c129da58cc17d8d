/* The unit's audit trail: data_dir/audit/audit-NNNNNNNN.jsonl (include/kyok/audit.h has the
 * line format, docs/formats.md how to check it).
 *
 * One mutex orders the lines: a line takes the next seq and the hash of the line before
 * under it and is copied into the present file, which is written through a shared mapping
 * with room reserved on disk ahead (a line costs a copy and a hash, no system call); only
 * then is the request it records answered. Signing is the slow part (an ECDSA P-521
 * signature takes about a millisecond), so lines are not signed one by one: a thread
 * writes a checkpoint line, signed by the identity key, when lines have waited
 * audit_checkpoint_ms or UNITD_AUDIT_CKPT_LINES of them are waiting; one is also written
 * before a file is left and at stop. Through the chain a checkpoint covers every line
 * before it. Checkpoints and command lines are fsync'd; other lines reach the disk with the
 * next checkpoint (a crash of the process loses none of them: they are in the page cache;
 * a power loss may lose those after the last checkpoint).
 *
 * A file left is cut to its lines. A unit that was killed leaves the reserved zero tail and
 * maybe a line cut short mid-copy (never answered): the next start cuts both off.
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
#include <sys/mman.h>
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
/* The present file is written through a shared mapping, reserved on disk (fallocate) this
 * much at a time ahead of the lines: a line costs a copy, not a system call. */
#define AUDIT_CHUNK (1024u * 1024u)

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool open, thread_running, stop, broken;
	int fd;
	char *map;      /* the present file, mapped: map_len bytes, reserved on disk */
	size_t map_len; /* the file's length on disk: lines (size) then zeros */
	char *dir;
	unsigned long long fileno;
	uint64_t size, max;
	uint64_t seq;
	uint8_t hash[KY_AUDIT_HASH_LEN];
	uint64_t pending;   /* lines since the last checkpoint */
	size_t cut_partial; /* bytes of a line cut short, cut off at start */
	uint32_t ckpt_ms;
	EVP_PKEY *key;
	char *cert_b64;
	char instance[KY_ID_MAX + 1];
	char unit[KY_ID_MAX + 1];
	time_t tsec; /* the second tbase holds */
	char tbase[24];
} audit = {.lock = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

/* Room for n more bytes in the mapping: reserved on disk first, so that a full disk is an
 * error here and never a fault when the line is copied. */
static int audit_reserve_locked(size_t n)
{
	size_t want;
	void *m;
	int e;

	if (audit.size + n <= audit.map_len)
		return 0;
	want = (audit.size + n + AUDIT_CHUNK - 1) / AUDIT_CHUNK * AUDIT_CHUNK;
	if ((e = posix_fallocate(audit.fd, (off_t)audit.map_len, (off_t)(want - audit.map_len))) !=
	    0) {
		unitd_log("error: cannot reserve room in audit log file " AUDIT_NAME_FMT
		          " in '%s': %s",
		          audit.fileno, audit.dir, strerror(e));
		return KY_ERR_AUDIT_UNAVAILABLE;
	}
	m = audit.map == NULL ? mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_SHARED, audit.fd, 0)
	                      : mremap(audit.map, audit.map_len, want, MREMAP_MAYMOVE);
	if (m == MAP_FAILED) {
		unitd_log("error: cannot map audit log file " AUDIT_NAME_FMT " in '%s': %s",
		          audit.fileno, audit.dir, strerror(errno));
		return KY_ERR_AUDIT_UNAVAILABLE;
	}
	/* The new pages are made writable now, in one call, rather than one fault (zeroing,
	 * the file system's write check) for every few lines. Best effort: a kernel before 5.14
	 * faults them in one by one. */
	(void)madvise((uint8_t *)m + audit.map_len, want - audit.map_len, MADV_POPULATE_WRITE);
	audit.map = m;
	audit.map_len = want;
	return 0;
}

/* Leaves the present file: its reserved tail cut off, synced, closed. */
static int audit_file_close_locked(void)
{
	int r = 0;

	if (audit.fd < 0)
		return 0;
	if (audit.map != NULL)
		munmap(audit.map, audit.map_len);
	if (ftruncate(audit.fd, (off_t)audit.size) != 0 || fdatasync(audit.fd) != 0) {
		unitd_log("error: cannot cut audit log file " AUDIT_NAME_FMT
		          " in '%s' to its lines: %s",
		          audit.fileno, audit.dir, strerror(errno));
		r = KY_ERR_AUDIT_UNAVAILABLE;
	}
	close(audit.fd);
	audit.fd = -1;
	audit.map = NULL;
	audit.map_len = 0;
	return r;
}

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

/* Writes one closed line and its newline into the mapped file. */
static int audit_append_locked(struct ky_audit_line *l, bool sync)
{
	size_t n = l->len + 1;
	uint8_t h[KY_AUDIT_HASH_LEN];
	int r;

	if (audit.broken || audit.fd < 0)
		return KY_ERR_AUDIT_UNAVAILABLE;
	if (ky_audit_hash(l->s, l->len, h) != 0)
		return KY_ERR_CRYPTO;
	if ((r = audit_reserve_locked(n)) != 0)
		return r;
	memcpy(audit.map + audit.size, l->s, l->len);
	audit.map[audit.size + l->len] = '\n';
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
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
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
	if (audit_file_close_locked() != 0) {
		audit.broken = true; /* the old file keeps a zero tail: stop here */
		r = KY_ERR_AUDIT_UNAVAILABLE;
		goto fail;
	}
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

/* The end of the lines in fd (size bytes): lines hold no zero byte, the reserved tail
 * only zeros, so the first zero byte is found by bisection. */
static int audit_data_end(int fd, off_t size, off_t *end)
{
	off_t lo = 0, hi = size;
	char c;

	while (lo < hi) {
		off_t mid = lo + (hi - lo) / 2;
		if (pread(fd, &c, 1, mid) != 1)
			return KY_ERR_IO;
		if (c == '\0')
			hi = mid;
		else
			lo = mid + 1;
	}
	*end = lo;
	return 0;
}

/* Reads the last line of file number n: its seq and hash. A unit that did not stop
 * cleanly leaves the reserved zero tail, and maybe a line cut short while it was copied
 * (its request was not answered): both are cut off here, the cut line's length kept for
 * the start line. *empty when no line is left. */
static int audit_tail(const char *dir, unsigned long long n, bool *empty, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL, fd = -1;
	char path[4096], buf[KY_AUDIT_LINE_MAX + 2];
	struct stat sb;
	size_t want, start;
	off_t end;
	json_t *j = NULL, *jseq;

	*empty = false;
	snprintf(path, sizeof(path), "%s/" AUDIT_NAME_FMT, dir, n);
	if ((fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)) < 0 || fstat(fd, &sb) != 0 ||
	    audit_data_end(fd, sb.st_size, &end) != 0) {
		r = KY_ERR_IO;
		snprintf(err, errlen, "cannot read audit log file '%s': %s", path, strerror(errno));
		goto out;
	}
	want = end > (off_t)sizeof(buf) ? sizeof(buf) : (size_t)end;
	if (want > 0 && pread(fd, buf, want, end - (off_t)want) != (ssize_t)want) {
		r = KY_ERR_IO;
		snprintf(err, errlen, "cannot read audit log file '%s'", path);
		goto out;
	}
	if (want > 0 && buf[want - 1] != '\n') {
		size_t cut = 0;
		while (cut < want && buf[want - 1 - cut] != '\n')
			cut++;
		if (cut == want && want == sizeof(buf)) {
			r = KY_ERR_AUDIT_LINE;
			snprintf(err, errlen,
			         "audit log file '%s' does not end in audit lines: keep it for "
			         "inspection and move it out of '%s', then start the unit again",
			         path, dir);
			goto out;
		}
		audit.cut_partial = cut;
		end -= (off_t)cut;
		want -= cut;
	}
	if (end != sb.st_size && (ftruncate(fd, end) != 0 || fdatasync(fd) != 0)) {
		r = KY_ERR_IO;
		snprintf(err, errlen, "cannot cut audit log file '%s' to its lines: %s", path,
		         strerror(errno));
		goto out;
	}
	if (want == 0) {
		*empty = true;
		r = 0;
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
	if (audit_file_close_locked() != 0)
		unitd_log("error: audit log file " AUDIT_NAME_FMT " in '%s' keeps zero bytes "
		          "after its last line",
		          audit.fileno, audit.dir);
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
	audit.cut_partial = 0;
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
	if (audit.cut_partial > 0)
		ky_audit_add_uint(&m, "cut_partial_line", audit.cut_partial);
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

/* The signers of a verified command: the administrators whose signatures verified. */
static void audit_verified_signers(struct ky_audit_line *m, const struct ky_verified *v)
{
	char ski[2 * KY_SKI_LEN + 1];

	ky_audit_add_str(m, "op", ky_op_name(ky_verified_op(v)));
	ky_audit_add_uint(m, "counter", ky_verified_counter(v));
	ky_audit_add_json(m, "signers", "[");
	for (size_t i = 0; i < ky_verified_nsigners(v); i++) {
		ky_hex_encode(ky_verified_signer_ski(v, i), KY_SKI_LEN, ski);
		ky_audit_add_members(m, i ? ",{\"name\":\"" : "{\"name\":\"", i ? 10 : 9);
		ky_audit_add_escaped(m, ky_verified_signer_name(v, i));
		ky_audit_add_members(m, "\"", 1);
		ky_audit_add_str(m, "ski", ski);
		ky_audit_add_bool(m, "admin", true);
		ky_audit_add_members(m, "}", 1);
	}
	ky_audit_add_members(m, "]", 1);
}

void unitd_audit_admins_of(const struct ky_domain *d, struct unitd_audit_admins *out)
{
	memset(out, 0, sizeof(*out));
	for (size_t k = 0; d != NULL && k < d->nadmins && k < KY_MAX_ADMINS; k++) {
		snprintf(out->a[k].name, sizeof(out->a[k].name), "%s", d->admins[k].name);
		memcpy(out->a[k].ski, d->admins[k].ski, KY_SKI_LEN);
		out->n = k + 1;
	}
}

int unitd_audit_command(enum unitd_audit_phase phase, const struct unitd_audit_admins *adm,
                        const struct ky_verified *v, const uint8_t *cms, size_t n, const char *from,
                        int outcome, bool acted, char *detail, size_t detaillen)
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
	if (v != NULL) {
		/* Verified: the one decoded command, its verified signers; nothing parsed again. */
		audit_verified_signers(&m, v);
		goto outcome;
	}
	/* Refused before it verified: what the bytes claim, each signer marked as an
	 * administrator of d or not. */
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
		for (size_t k = 0; adm != NULL && k < adm->n; k++)
			if (CRYPTO_memcmp(adm->a[k].ski, signers[i].ski, KY_SKI_LEN) == 0) {
				name = adm->a[k].name;
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
outcome:
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
