/* The unit's audit trail: data_dir/audit/audit-NNNNNNNN.jsonl (include/kyok/audit.h has the
 * line format, docs/formats.md how to check it).
 *
 * Size: the writer, its thread, its checkpoints, the start (a file left by a crash cut to
 * its lines) and the events share the two locks and the file state described below; they
 * stay in one file so that the lock order is checked in one place.
 *
 * Two mutexes. `lock` orders the lines: a line takes the next seq and the hash of the line
 * before under it, with its room on disk reserved ahead (fallocate: a full disk refuses the
 * line, never loses it later), and is copied to the lines waiting to be written. `wlock` is
 * held by whoever writes waiting lines to the present file (one pwrite for all of them),
 * and is taken before `lock` when both are held. A line reaches one of three points before
 * its caller goes on (enum audit_reach): taken (the outcome of a key API request: written
 * by the log's thread about every AUDIT_WRITE_PAUSE_US, at once after a quiet spell),
 * written (a key API intent, a seal line: in the file, so that a crash of the process
 * cannot lose it) or synced (admin commands, unseal: on disk; the sync runs after wlock is
 * let go, on a duplicate of the descriptor, so that other lines are written meanwhile).
 *
 * Signing is the slow part (an ECDSA P-521 signature takes about a millisecond), so lines
 * are not signed one by one: the log's thread writes a checkpoint line, signed by the
 * identity key, when lines have waited audit_checkpoint_ms or UNITD_AUDIT_CKPT_LINES of them
 * are waiting, and syncs it; one is also written before a file is left and at stop. Through
 * the chain a checkpoint covers every line before it.
 *
 * A failed write or sync breaks the log: every later line is refused (so every request,
 * with audit-unavailable) until the unit is restarted. A sync is never retried: the kernel
 * reports a failed writeback once, and the next sync would succeed without the lost lines.
 *
 * Why not a shared mapping of the file (as before): on ext4 every page of it written after
 * a writeback faults again, and each writeback shoots down the mapping on every CPU; that
 * cost 18% of unwrap throughput (docs/performance.md).
 *
 * A file left is cut to its lines. A unit that was killed leaves the reserved zero tail and
 * maybe a line cut short mid-write: the next start cuts both off.
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
#include "unitd/audit.h"
#include "unitd/config.h"
#include "unitd/log.h"
#include "unitd/metrics.h"
#include "unitd/seal.h"

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
/* Room on disk is reserved (fallocate) this much at a time ahead of the lines. */
#define AUDIT_CHUNK (4u * 1024u * 1024u)
/* Lines waiting to be written: at most this many bytes (a disk that stalls makes requests
 * wait for it, rather than memory grow). */
#define AUDIT_PEND_MAX (8u * 1024u * 1024u)
/* The writer thread's pause between two writes, while lines keep coming: batches. */
#define AUDIT_WRITE_PAUSE_US 1000

struct audit_buf {
	char *p;
	size_t len, cap;
};

static struct {
	pthread_mutex_t lock;  /* the chain and the lines waiting */
	pthread_mutex_t wlock; /* writing to the present file; taken before lock */
	pthread_mutex_t slock; /* one sync at a time (a failure is reported once); no lock held */
	pthread_cond_t cond;   /* wakes the writer thread */
	pthread_t thread;
	bool open, thread_running, stop, broken, writer_idle;
	int fd; /* the present file: changes only under both locks */
	char *dir;
	unsigned long long fileno;
	uint64_t size;     /* the present file's lines, written or waiting */
	uint64_t written;  /* the bytes of them written to it */
	uint64_t reserved; /* its length on disk: lines then zeros */
	uint64_t max;
	struct audit_buf pend;  /* lines waiting (under lock): they end the file at size */
	struct audit_buf spare; /* the writer's buffer (under wlock) */
	uint64_t seq;
	uint8_t hash[KY_AUDIT_HASH_LEN];
	uint64_t pending;   /* lines since the last checkpoint */
	size_t cut_partial; /* bytes of a line cut short, cut off at start */
	uint32_t ckpt_ms;
	EVP_MD_CTX *md; /* hashes the lines, under lock */
	EVP_PKEY *key;
	char *cert_b64;
	char instance[KY_ID_MAX + 1];
	char unit[KY_ID_MAX + 1];
} audit = {.lock = PTHREAD_MUTEX_INITIALIZER,
           .wlock = PTHREAD_MUTEX_INITIALIZER,
           .slock = PTHREAD_MUTEX_INITIALIZER,
           .fd = -1};

/* Room for n more bytes in the present file: reserved on disk first, so that a full disk is
 * an error here, before the line is taken, and never when it is written. */
static int audit_reserve_locked(size_t n)
{
	uint64_t want;
	int e;

	if (audit.size + n <= audit.reserved)
		return 0;
	/* a chunk, but never past the file's size limit (a line longer than a file excepted) */
	want = (audit.size + n + AUDIT_CHUNK - 1) / AUDIT_CHUNK * AUDIT_CHUNK;
	if (want > audit.max)
		want = audit.max > audit.size + n ? audit.max : audit.size + n;
	e = posix_fallocate(audit.fd, (off_t)audit.reserved, (off_t)(want - audit.reserved));
	if (e == ENOSPC && want > audit.size + n) { /* a nearly full disk: this line's room only */
		want = audit.size + n;
		e = posix_fallocate(audit.fd, (off_t)audit.reserved,
		                    (off_t)(want - audit.reserved));
	}
	if (e != 0) {
		unitd_log("error: cannot reserve room in audit log file " AUDIT_NAME_FMT
		          " in '%s': %s",
		          audit.fileno, audit.dir, strerror(e));
		return KY_ERR_AUDIT_UNAVAILABLE;
	}
	audit.reserved = want;
	return 0;
}

static int audit_pwrite(int fd, const char *p, size_t n, uint64_t off)
{
	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? errno : EIO;
		p += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

/* A write failed: the lines waiting are lost, every later line is refused (the unit answers
 * audit-unavailable) until it is restarted. */
static void audit_write_failed_locked(int e)
{
	if (!audit.broken)
		unitd_log("error: cannot write audit log file " AUDIT_NAME_FMT " in '%s': %s: the "
		          "unit refuses every request until it is restarted",
		          audit.fileno, audit.dir, strerror(e));
	audit.broken = true;
	audit.pend.len = 0;
}

/* Writes the lines waiting, both locks held. */
static int audit_flush_both(void)
{
	int e;

	if (audit.broken)
		return KY_ERR_AUDIT_UNAVAILABLE;
	if (audit.pend.len == 0)
		return 0;
	if ((e = audit_pwrite(audit.fd, audit.pend.p, audit.pend.len, audit.written)) != 0) {
		audit_write_failed_locked(e);
		return KY_ERR_AUDIT_UNAVAILABLE;
	}
	audit.written += audit.pend.len;
	audit.pend.len = 0;
	return 0;
}

/* Writes the lines waiting, wlock held (not lock): they are taken under lock, written
 * without it, so that lines keep coming meanwhile. */
static int audit_flush_w(void)
{
	struct audit_buf b;
	uint64_t off;
	int fd, e;

	pthread_mutex_lock(&audit.lock);
	if (audit.broken) {
		pthread_mutex_unlock(&audit.lock);
		return KY_ERR_AUDIT_UNAVAILABLE;
	}
	b = audit.pend;
	audit.pend = audit.spare;
	audit.spare = b;
	off = audit.written;
	fd = audit.fd;
	pthread_mutex_unlock(&audit.lock);
	if (b.len == 0)
		return 0;
	e = audit_pwrite(fd, b.p, b.len, off);
	audit.spare.len = 0;
	pthread_mutex_lock(&audit.lock);
	if (e != 0)
		audit_write_failed_locked(e);
	else
		audit.written += b.len;
	pthread_mutex_unlock(&audit.lock);
	return e != 0 ? KY_ERR_AUDIT_UNAVAILABLE : 0;
}

/* A sync failed: what it was to put on disk may be lost, and a later sync of the same file
 * may well succeed without it (the kernel reports a failed writeback once). So the log is
 * broken from here on. */
static void audit_sync_failed(int e)
{
	pthread_mutex_lock(&audit.lock);
	if (!audit.broken)
		unitd_log("error: cannot sync audit log file " AUDIT_NAME_FMT " in '%s': %s: the "
		          "unit refuses every request until it is restarted",
		          audit.fileno, audit.dir, strerror(e));
	audit.broken = true;
	audit.pend.len = 0;
	pthread_mutex_unlock(&audit.lock);
}

/* Every line taken so far written (wlock held, not lock), then on disk: wlock is let go
 * before the sync, which runs on a duplicate of the file's descriptor (a new file may begin
 * meanwhile), so that other lines are written while the disk syncs. Syncs take slock: a
 * failed write-back is reported to one sync only, so two at once could tell one of them
 * all is well; and after a sync that succeeded the log is checked again (a file closed
 * meanwhile may have had the failure reported to it, and broken the log). */
static int audit_sync_unlock_w(void)
{
	int r = audit_flush_w(), fd = -1, e = 0;

	if (r != 0 || audit.fd < 0) {
		/* no present file: the last one was synced when it was left */
		pthread_mutex_unlock(&audit.wlock);
		return r;
	}
	if ((fd = fcntl(audit.fd, F_DUPFD_CLOEXEC, 0)) < 0) {
		/* no descriptor to spare (a burst of connections): sync holding wlock */
		pthread_mutex_lock(&audit.slock);
		e = fdatasync(audit.fd) != 0 ? errno : 0;
		pthread_mutex_unlock(&audit.wlock);
	} else {
		pthread_mutex_unlock(&audit.wlock);
		pthread_mutex_lock(&audit.slock);
		e = fdatasync(fd) != 0 ? errno : 0;
		close(fd);
	}
	if (e != 0)
		audit_sync_failed(e);
	pthread_mutex_lock(&audit.lock);
	r = audit.broken ? KY_ERR_AUDIT_UNAVAILABLE : 0;
	pthread_mutex_unlock(&audit.lock);
	pthread_mutex_unlock(&audit.slock);
	return r;
}

/* Leaves the present file (both locks held): its lines written, its reserved tail cut off,
 * synced, closed. */
static int audit_file_close_locked(void)
{
	int r = 0;

	if (audit.fd < 0)
		return 0;
	(void)audit_flush_both(); /* on failure, the lines written are kept: cut to them */
	if (ftruncate(audit.fd, (off_t)audit.written) != 0) {
		unitd_log("error: cannot cut audit log file " AUDIT_NAME_FMT
		          " in '%s' to its lines (it keeps zero bytes after them): %s",
		          audit.fileno, audit.dir, strerror(errno));
		r = KY_ERR_AUDIT_UNAVAILABLE;
	} else if (fdatasync(audit.fd) != 0) {
		if (!audit.broken)
			unitd_log("error: cannot sync audit log file " AUDIT_NAME_FMT
			          " in '%s': %s",
			          audit.fileno, audit.dir, strerror(errno));
		audit.broken = true;
		r = KY_ERR_AUDIT_UNAVAILABLE;
	}
	if (audit.broken)
		r = KY_ERR_AUDIT_UNAVAILABLE;
	close(audit.fd);
	audit.fd = -1;
	audit.reserved = 0;
	return r;
}

/* The time a line carries (taken before its seq: lines a millisecond apart may come in
 * either order). The formatted second is kept per thread. */
static void audit_now(char *out, size_t outlen)
{
	static __thread time_t tsec;
	static __thread char tbase[24];
	struct timespec now;
	struct tm tm;

	if (clock_gettime(CLOCK_REALTIME, &now) != 0)
		now.tv_sec = 0, now.tv_nsec = 0;
	if (now.tv_sec != tsec || tbase[0] == '\0') {
		if (gmtime_r(&now.tv_sec, &tm) == NULL ||
		    strftime(tbase, sizeof(tbase), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
			snprintf(tbase, sizeof(tbase), "1970-01-01T00:00:00");
		tsec = now.tv_sec;
	}
	snprintf(out, outlen, "%s.%03ldZ", tbase, now.tv_nsec / 1000000);
}

/* Takes one line, given as its head and body (kyok/audit.h; head NULL: body is the whole
 * line): chained, room reserved, copied to the lines waiting (the caller made sure they
 * have room for it: at most AUDIT_PEND_MAX). */
static int audit_take_locked(const char *head, size_t hl, const char *body, size_t bl, size_t extra)
{
	size_t n = hl + bl + 1;
	char *line;
	int r;

	if (audit.broken || audit.fd < 0)
		return KY_ERR_AUDIT_UNAVAILABLE;
	if ((r = audit_reserve_locked(n + extra)) != 0)
		return r;
	if (audit.pend.len + n > audit.pend.cap) {
		size_t cap = audit.pend.cap ? audit.pend.cap : 64u * 1024u;
		char *p;
		while (cap < audit.pend.len + n)
			cap *= 2;
		if ((p = realloc(audit.pend.p, cap)) == NULL)
			return KY_ERR_NOMEM;
		audit.pend.p = p;
		audit.pend.cap = cap;
	}
	line = audit.pend.p + audit.pend.len;
	if (hl > 0)
		memcpy(line, head, hl);
	memcpy(line + hl, body, bl);
	line[hl + bl] = '\n';
	if (ky_audit_hash_in(audit.md, line, hl + bl, audit.hash) != 0) {
		/* the chain's head is lost with the line: no line can follow */
		unitd_log("error: cannot hash an audit line: the unit refuses every request until "
		          "it is restarted");
		audit.broken = true;
		return KY_ERR_AUDIT_UNAVAILABLE;
	}
	audit.pend.len += n;
	audit.size += n;
	audit.seq++;
	unitd_metrics_audit_line();
	audit.pending++;
	return 0;
}

static int audit_append_locked(const struct ky_audit_line *l)
{
	return audit_take_locked(NULL, 0, l->s, l->len, 0);
}

static void audit_begin_locked(struct ky_audit_line *l, const char *event)
{
	char t[40];

	audit_now(t, sizeof(t));
	ky_audit_begin(l, audit.seq + 1, audit.hash, t, event);
}

/* Takes a signed checkpoint line (the caller syncs it). */
static int audit_checkpoint_locked(void)
{
	int r = KY_ERR_INTERNAL;
	struct ky_audit_line l;

	if (audit.broken || audit.fd < 0)
		return KY_ERR_AUDIT_UNAVAILABLE;
	/* room first: a full disk fails here, before a signature is spent on the line */
	if ((r = audit_reserve_locked(AUDIT_CLOSE_RESERVE)) != 0)
		return r;
	audit_begin_locked(&l, "checkpoint");
	ky_audit_add_str(&l, "instance", audit.instance);
	ky_audit_add_str(&l, "unit", audit.unit);
	if ((r = ky_audit_end(&l)) != 0 || (r = ky_audit_sign(&l, audit.key)) != 0) {
		unitd_log("error: cannot sign an audit checkpoint: %s", ky_err_message(r));
		return KY_ERR_AUDIT_UNAVAILABLE;
	}
	if ((r = audit_append_locked(&l)) != 0)
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

/* Closes the present file (after a checkpoint when lines wait: both synced) and begins the
 * next one with its file line, linked to the last line of the one before. Both locks held,
 * the lines waiting written (so that the file line has room). */
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
	audit.written = 0;
	audit_begin_locked(&l, "file");
	ky_audit_add_str(&l, "instance", audit.instance);
	ky_audit_add_str(&l, "unit", audit.unit);
	ky_audit_add_str(&l, "file", name);
	ky_audit_add_str(&l, "cert", audit.cert_b64);
	/* The file line is written at once: a unit killed now leaves a file that begins with
	 * it, not one of reserved zeros. */
	if ((r = ky_audit_end(&l)) != 0 || (r = audit_append_locked(&l)) != 0 ||
	    (r = audit_flush_both()) != 0) {
		/* No file may begin without its file line: this one goes, and the next line
		 * tries again (audit_event, no present file). */
		r = KY_ERR_AUDIT_UNAVAILABLE;
		close(audit.fd);
		audit.fd = -1;
		audit.reserved = 0;
		audit.fileno--;
		if (unlink(path) != 0) { /* a retry could not create it again */
			unitd_log(
			    "error: cannot remove audit log file '%s', left without its first "
			    "line: %s: the unit refuses every request until it is restarted",
			    path, strerror(errno));
			audit.broken = true;
		}
		return r;
	}
	return 0;
fail:
	close(fd);
	(void)unlink(path);
	return r;
}

/* How far a line has gone when audit_event returns. */
enum audit_reach {
	AUDIT_TAKEN,   /* in the chain, room reserved: written within about a millisecond */
	AUDIT_WRITTEN, /* in the file (a crash of the process cannot lose it) */
	AUDIT_SYNCED,  /* on disk */
};

/* Writes one event: members come ready (",\"a\":..."), reach says how far.
 * The line's body is made first, outside the lock; under it only its head (seq, prev) is
 * made and the line hashed and copied. A new file begins first when this line would leave
 * the present one less than AUDIT_CLOSE_RESERVE below its size (a line longer than a whole
 * file then goes alone into the new one). That, and lines waiting with no room left, need
 * wlock: taken (before lock), then looked at again. */
static int audit_event(const char *event, const struct ky_audit_line *members,
                       enum audit_reach reach)
{
	int r = KY_ERR_INTERNAL;
	struct ky_audit_line body;
	char t[40], head[KY_AUDIT_HEAD_MAX];
	size_t hl;
	bool wl = false, new_file = false;

	if (members->over)
		return KY_ERR_TOO_LARGE;
	audit_now(t, sizeof(t));
	ky_audit_body(&body, t, event);
	ky_audit_add_members(&body, members->s, members->len);
	if ((r = ky_audit_end(&body)) != 0)
		return KY_ERR_TOO_LARGE;
	pthread_mutex_lock(&audit.lock);
	for (;;) {
		bool need_file, need_room;
		size_t n;
		if (!audit.open) {
			r = 0;
			reach = AUDIT_TAKEN;
			goto out;
		}
		if (audit.broken) {
			r = KY_ERR_AUDIT_UNAVAILABLE;
			goto out;
		}
		hl = ky_audit_head(head, audit.seq + 1, audit.hash);
		if (hl + body.len > KY_AUDIT_LINE_MAX) {
			r = KY_ERR_TOO_LARGE;
			goto out;
		}
		n = hl + body.len + 1;
		/* no present file: the last one's successor could not be begun; try again */
		need_file =
		    !new_file && (audit.fd < 0 || audit.size + n + AUDIT_CLOSE_RESERVE > audit.max);
		need_room = audit.pend.len + n > AUDIT_PEND_MAX;
		if (!need_file && !need_room)
			break;
		if (!wl) {
			pthread_mutex_unlock(&audit.lock);
			pthread_mutex_lock(&audit.wlock);
			pthread_mutex_lock(&audit.lock);
			wl = true;
			continue;
		}
		if ((r = audit_flush_both()) != 0)
			goto out;
		if (need_file) {
			if ((r = audit_next_file_locked()) != 0)
				goto out;
			new_file = true;
		}
	}
	/* with room for the lines that close the file: any line taken can be signed */
	if ((r = audit_take_locked(head, hl, body.s, body.len, AUDIT_CLOSE_RESERVE)) != 0)
		goto out;
	if (audit.thread_running &&
	    (audit.writer_idle || audit.pending >= UNITD_AUDIT_CKPT_LINES)) {
		audit.writer_idle = false;
		pthread_cond_signal(&audit.cond);
	}
out:
	pthread_mutex_unlock(&audit.lock);
	if (r == 0 && reach != AUDIT_TAKEN) {
		if (!wl)
			pthread_mutex_lock(&audit.wlock);
		wl = false; /* let go here */
		if (reach == AUDIT_SYNCED) {
			r = audit_sync_unlock_w();
		} else {
			r = audit_flush_w();
			pthread_mutex_unlock(&audit.wlock);
		}
	}
	if (wl)
		pthread_mutex_unlock(&audit.wlock);
	return r;
}

static void audit_ts_add_ms(struct timespec *t, uint32_t ms)
{
	t->tv_sec += ms / 1000;
	t->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t->tv_nsec >= 1000000000L) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000L;
	}
}

static bool audit_ts_reached(const struct timespec *now, const struct timespec *t)
{
	return now->tv_sec > t->tv_sec || (now->tv_sec == t->tv_sec && now->tv_nsec >= t->tv_nsec);
}

/* The writer: writes the lines waiting, pausing AUDIT_WRITE_PAUSE_US between two writes
 * (it sleeps on cond while none wait), and takes a checkpoint every audit_checkpoint_ms
 * when lines wait for one (or as soon as UNITD_AUDIT_CKPT_LINES do), synced. */
static void *audit_thread(void *arg)
{
	struct timespec now, due;
	const struct timespec pause = {0, AUDIT_WRITE_PAUSE_US * 1000L};
	bool backoff = false; /* a checkpoint failed: the next one waits for due */

	(void)arg;
	clock_gettime(CLOCK_MONOTONIC, &due);
	audit_ts_add_ms(&due, audit.ckpt_ms);
	pthread_mutex_lock(&audit.lock);
	while (!audit.stop) {
		bool ckpt = false;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (audit_ts_reached(&now, &due)) {
			ckpt = audit.pending > 0;
			backoff = false;
			due = now;
			audit_ts_add_ms(&due, audit.ckpt_ms);
		}
		ckpt = (ckpt || (!backoff && audit.pending >= UNITD_AUDIT_CKPT_LINES)) &&
		       !audit.broken && audit.fd >= 0;
		if (!ckpt && (audit.pend.len == 0 || audit.broken)) {
			audit.writer_idle = true;
			(void)pthread_cond_timedwait(&audit.cond, &audit.lock, &due);
			audit.writer_idle = false;
			continue;
		}
		if (ckpt && audit_checkpoint_locked() != 0) {
			ckpt = false; /* logged; tried again at due */
			backoff = true;
		}
		pthread_mutex_unlock(&audit.lock);
		pthread_mutex_lock(&audit.wlock);
		if (ckpt) { /* failures logged, and the log broken */
			(void)audit_sync_unlock_w();
		} else {
			(void)audit_flush_w();
			pthread_mutex_unlock(&audit.wlock);
		}
		nanosleep(&pause, NULL);
		pthread_mutex_lock(&audit.lock);
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
 * cleanly leaves the reserved zero tail, and maybe a line cut short while it was written:
 * both are cut off here, the cut line's length kept for
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

/* Both locks held. */
static void audit_release_locked(void)
{
	(void)audit_file_close_locked(); /* failures logged */
	free(audit.dir);
	audit.dir = NULL;
	free(audit.cert_b64);
	audit.cert_b64 = NULL;
	EVP_PKEY_free(audit.key);
	audit.key = NULL;
	free(audit.pend.p);
	free(audit.spare.p);
	EVP_MD_CTX_free(audit.md);
	audit.md = NULL;
	memset(&audit.pend, 0, sizeof(audit.pend));
	memset(&audit.spare, 0, sizeof(audit.spare));
	audit.open = false;
	audit.broken = false;
	audit.stop = false;
	audit.seq = 0;
	audit.size = audit.written = 0;
	audit.pending = 0;
	audit.cut_partial = 0;
	memset(audit.hash, 0, sizeof(audit.hash));
}

int unitd_audit_open(const struct unitd_config *cfg, const struct unitd_datadir *dd,
                     const struct ky_domain *d, bool created, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	unsigned long long newest = 0;
	bool empty = false;
	struct stat sb;
	struct ky_audit_line m;
	pthread_condattr_t ca;
	char state[64];

	pthread_mutex_lock(&audit.wlock);
	pthread_mutex_lock(&audit.lock);
	if (asprintf(&audit.dir, "%s/" AUDIT_SUBDIR, dd->dir) < 0) {
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
	if ((audit.md = EVP_MD_CTX_new()) == NULL) {
		r = KY_ERR_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
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
	pthread_mutex_unlock(&audit.wlock);

	ky_audit_members(&m);
	ky_audit_add_str(&m, "instance", d->instance);
	ky_audit_add_str(&m, "unit", d->unit);
	ky_audit_add_str(&m, "zone", cfg->zone);
	ky_audit_add_str(&m, "version", KYOK_VERSION);
	ky_audit_add_uint(&m, "pid", (uint64_t)getpid());
	if (audit.cut_partial > 0)
		ky_audit_add_uint(&m, "cut_partial_line", audit.cut_partial);
	if ((r = audit_event("start", &m, AUDIT_TAKEN)) != 0)
		goto fail_unlocked;
	ky_audit_members(&m);
	ky_audit_add_str(&m, "backend", dd->seal->ops->name);
	ky_audit_add_str(&m, "state", dd->state_path);
	snprintf(state, sizeof(state), "%s", created ? "created" : "opened");
	ky_audit_add_str(&m, "outcome", state);
	ky_audit_add_uint(&m, "next_counter", d->next_counter);
	if ((r = audit_event("unseal", &m, AUDIT_SYNCED)) != 0)
		goto fail_unlocked;

	pthread_mutex_lock(&audit.wlock);
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
		snprintf(err, errlen, "cannot start the audit log's writer thread");
		goto fail;
	}
	audit.thread_running = true;
	pthread_mutex_unlock(&audit.lock);
	pthread_mutex_unlock(&audit.wlock);
	return 0;
fail_unlocked:
	snprintf(err, errlen, "cannot write the audit log in '%s': %s", audit.dir,
	         ky_err_message(r));
	pthread_mutex_lock(&audit.wlock);
	pthread_mutex_lock(&audit.lock);
fail:
	audit_release_locked();
	pthread_mutex_unlock(&audit.lock);
	pthread_mutex_unlock(&audit.wlock);
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
		pthread_mutex_lock(&audit.lock);
		audit.thread_running = false;
		pthread_mutex_unlock(&audit.lock);
		pthread_cond_destroy(&audit.cond);
	}
	ky_audit_members(&m);
	ky_audit_add_str(&m, "unit", audit.unit);
	if (audit_event("stop", &m, AUDIT_TAKEN) != 0)
		unitd_log("error: cannot write the audit stop line");
	pthread_mutex_lock(&audit.wlock);
	pthread_mutex_lock(&audit.lock);
	if (audit.open && audit.pending > 0 && audit_checkpoint_locked() != 0)
		unitd_log("error: cannot write the final audit checkpoint: the last audit lines "
		          "stay unsigned");
	audit_release_locked(); /* writes and syncs the lines waiting */
	pthread_mutex_unlock(&audit.lock);
	pthread_mutex_unlock(&audit.wlock);
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
	r = audit_event("admin-command", &m, AUDIT_SYNCED);
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
	/* an intent is in the file before its request acts; an outcome may follow later */
	return audit_event("key-api", &m,
	                   phase == UNITD_AUDIT_INTENT ? AUDIT_WRITTEN : AUDIT_TAKEN);
}

void unitd_audit_seal(const struct ky_domain *d)
{
	struct ky_audit_line m;

	ky_audit_members(&m);
	ky_audit_add_uint(&m, "next_counter", d->next_counter);
	ky_audit_add_uint(&m, "admins", d->nadmins);
	ky_audit_add_str(&m, "new_mk", ky_new_state_name(d->new_state));
	ky_audit_add_str(&m, "current_mk", ky_cur_state_name(d->cur_state));
	if (audit_event("seal", &m, AUDIT_WRITTEN) != 0)
		unitd_log("error: the sealed state was written but the audit log could not say so");
}
