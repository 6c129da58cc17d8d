/* The policy pass: policies acted on over time, as Key Protect does. Every
 * policy_pass_interval seconds (unit.conf) a thread of each unit rotates the root keys whose
 * rotation policy is due and purges the keys deleted 90 days ago (lib/kms/schedule.c holds
 * the rules). Every unit of an instance runs it on the same key storage: each change is one
 * compare-and-swap, so a due key is changed by one unit and the others skip it.
 *
 * Each key acted on is logged, written to the audit trail (a "key-api" line with method
 * "POLICY", action "rotate" or "purge", API key "-": its intent before it is acted on, its
 * outcome after) and counted for /metrics. When the audit log does not take the intent line,
 * the pass stops there, says so in the unit log, and is tried again at the next interval.
 *
 * The pass reads its clock from the system: time(NULL), plus policy_pass_days_ahead days when
 * unit.conf sets it. That setting exists for tests (a key rotated a month from now, purged 90
 * days from now, without waiting), is logged at start, and is only ever set by whoever writes
 * unit.conf: no request can move the pass's clock.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyok/err.h"
#include "kyok/kms.h"
#include "unitd/audit.h"
#include "unitd/config.h"
#include "unitd/keystore.h"
#include "unitd/log.h"
#include "unitd/scheduler.h"

struct unitd_policy_pass {
	struct unitd_keystore *ks;
	uint32_t interval; /* seconds between passes */
	int64_t ahead;     /* seconds added to the system clock (testing aid) */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	bool started;
};

static _Atomic uint64_t pass_runs, pass_rotated, pass_purged, pass_raced, pass_failed;

static void pass_date(int64_t t, char out[24])
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || strftime(out, 24, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, 24, "?");
}

static const char *pass_what(enum ky_kms_due what)
{
	return what == KY_KMS_DUE_PURGE ? "purge" : what == KY_KMS_DUE_ROTATE ? "rotate" : "open";
}

static void pass_key(const char *id, const struct ky_key *before, const struct ky_key *after,
                     enum ky_kms_due what, int err, void *arg)
{
	char was[24] = "?";
	unsigned status = err == 0 ? 200 : (unsigned)ky_err_http(err);

	(void)arg;
	if (err == KY_ERR_CONFLICT || err == KY_ERR_NOT_FOUND)
		return; /* another unit came first: it logs and audits the change */
	if (before != NULL)
		pass_date(what == KY_KMS_DUE_PURGE
		              ? before->deleted
		              : before->versions[before->nversions - 1].created,
		          was);
	if (err != 0 && what == KY_KMS_DUE_NONE) {
		/* Its record does not open here: nothing was done, nothing to audit. */
		unitd_log("policy pass: key %s: left alone: %s", id, ky_err_message(err));
		return;
	}
	if (err != 0)
		unitd_log("policy pass: key %s: cannot %s it: %s", id, pass_what(what),
		          ky_err_message(err));
	else if (what == KY_KMS_DUE_PURGE)
		unitd_log("policy pass: key %s purged (deleted %s, 90 days ago or more)", id, was);
	else if (before != NULL)
		unitd_log("policy pass: key %s rotated to version %u (rotation policy: every %u "
		          "month%s; version %u made %s)",
		          id, after != NULL ? after->nversions : 0, before->rotation_months,
		          before->rotation_months == 1 ? "" : "s", before->nversions, was);
	if (unitd_audit_api(UNITD_AUDIT_DONE, "POLICY", "keys/{id}", pass_what(what), "-", id,
	                    status, err) != 0)
		unitd_log("policy pass: key %s: the audit log could not record the %s", id,
		          pass_what(what));
}

/* Before a due key is acted on: its intent line in the audit log, as the key API writes one
 * before it acts. The log refusing it stops the pass: nothing is done that the log would not
 * show. */
static int pass_gate(const char *id, const struct ky_key *k, enum ky_kms_due due, void *arg)
{
	(void)k;
	(void)arg;
	if (unitd_audit_api(UNITD_AUDIT_INTENT, "POLICY", "keys/{id}", pass_what(due), "-", id, 0,
	                    0) != 0)
		return KY_ERR_AUDIT_UNAVAILABLE;
	return 0;
}

int unitd_policy_pass_run(struct unitd_keystore *ks, int64_t now, struct ky_kms_sched *st)
{
	struct ky_kms kms;
	int r = KY_ERR_INTERNAL;

	memset(st, 0, sizeof(*st));
	if ((r = unitd_keystore_enter(ks, &kms)) != 0)
		return r;
	r = ky_kms_schedule_pass(&kms, now, pass_gate, pass_key, NULL, st);
	if (st->rotated + st->purged > 0)
		unitd_keystore_flush(ks); /* opened copies of changed keys */
	unitd_keystore_leave(ks);
	atomic_fetch_add(&pass_runs, 1);
	atomic_fetch_add(&pass_rotated, st->rotated);
	atomic_fetch_add(&pass_purged, st->purged);
	atomic_fetch_add(&pass_raced, st->raced);
	atomic_fetch_add(&pass_failed, st->failed);
	return r;
}

static void *pass_main(void *arg)
{
	struct unitd_policy_pass *pp = arg;
	int last = 0;

	pthread_mutex_lock(&pp->lock);
	while (!pp->stop) {
		struct ky_kms_sched st;
		struct timespec until;
		int r;

		pthread_mutex_unlock(&pp->lock);
		r = unitd_policy_pass_run(pp->ks, (int64_t)time(NULL) + pp->ahead, &st);
		/* No master key yet, key storage or the audit log refused: said once, tried
		 * again later. */
		if (r == KY_ERR_AUDIT_UNAVAILABLE && r != last)
			unitd_log(
			    "policy pass: skipped: the audit log does not take the intent line "
			    "of a due key: no key is rotated or purged until it does");
		else if (r != 0 && r != last && r != KY_ERR_NO_MASTER_KEY)
			unitd_log("policy pass: not run: %s", ky_err_message(r));
		last = r;
		pthread_mutex_lock(&pp->lock);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += pp->interval;
		while (!pp->stop && pthread_cond_timedwait(&pp->cond, &pp->lock, &until) == 0)
			;
	}
	pthread_mutex_unlock(&pp->lock);
	ky_gcm_thread_release();
	return NULL;
}

int unitd_policy_pass_start(const struct unitd_config *cfg, struct unitd_keystore *ks,
                            struct unitd_policy_pass **out)
{
	struct unitd_policy_pass *pp;

	*out = NULL;
	if (ks == NULL)
		return 0; /* no key storage, no keys */
	if ((pp = calloc(1, sizeof(*pp))) == NULL)
		return KY_ERR_NOMEM;
	pp->ks = ks;
	pp->interval = cfg->policy_pass_interval;
	pp->ahead = (int64_t)cfg->policy_pass_days_ahead * KY_KMS_DAY;
	pthread_mutex_init(&pp->lock, NULL);
	pthread_cond_init(&pp->cond, NULL);
	if (pthread_create(&pp->thread, NULL, pass_main, pp) != 0) {
		pthread_cond_destroy(&pp->cond);
		pthread_mutex_destroy(&pp->lock);
		free(pp);
		return KY_ERR_INTERNAL;
	}
	pp->started = true;
	if (pp->ahead != 0)
		unitd_log("policy pass: its clock runs %u days ahead of the system's "
		          "(policy_pass_days_ahead in unit.conf: for tests only)",
		          (unsigned)cfg->policy_pass_days_ahead);
	*out = pp;
	return 0;
}

void unitd_policy_pass_stop(struct unitd_policy_pass *pp)
{
	if (pp == NULL)
		return;
	pthread_mutex_lock(&pp->lock);
	pp->stop = true;
	pthread_cond_signal(&pp->cond);
	pthread_mutex_unlock(&pp->lock);
	if (pp->started)
		pthread_join(pp->thread, NULL);
	pthread_cond_destroy(&pp->cond);
	pthread_mutex_destroy(&pp->lock);
	free(pp);
}

void unitd_policy_pass_counts(struct unitd_policy_pass_counts *c)
{
	c->runs = atomic_load(&pass_runs);
	c->rotated = atomic_load(&pass_rotated);
	c->purged = atomic_load(&pass_purged);
	c->raced = atomic_load(&pass_raced);
	c->failed = atomic_load(&pass_failed);
}
