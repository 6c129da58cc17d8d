/* kyok tke cryptounit-mk-rotate: moves key storage from the current master key to the
 * committed new one, then makes the new one current on every selected crypto unit.
 *
 * Two signed steps, each resumable, so a re-run after any interruption (of this command or
 * of a unit) reads where things stand and goes on:
 *  1. mk-reencipher to one unit, which re-enciphers the shared key storage in batches in
 *     the background; progress is read from its state ("storage") until no record is left
 *     under the current master key. Skipped when none is left.
 *  2. mk-setimm on every unit that has not made the new key current yet. A unit refuses it
 *     while any record is still under its current master key, so no order of commands or
 *     crashes loses key storage.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/tke_signing.h"
#include "kyok/ceremony.h"
#include "kyok/err.h"

#define ROT_POLL_MS      250
#define ROT_PLAIN_EVERY  5 /* seconds between progress lines off a terminal */
#define ROT_RESTARTS_MAX 3 /* mk-reencipher re-sent when the run stopped */
#define ROT_STALL_POLLS  8 /* polls seeing no run and no progress before re-sending */

struct rot {
	struct tke_run run;
	char old_vp[2 * KY_VP_LEN + 1];
	char target[2 * KY_VP_LEN + 1];
	struct cli_signer *signers;
	size_t nsigners;
	json_t *steps; /* --output json */
	uint64_t moved;
	bool storage_seen;
};

/* The store's view in a unit's state; have = false when the unit has no key storage. */
struct rot_storage {
	bool have;
	uint64_t under_current;
	uint64_t under_new;
	bool running;
	uint64_t done, total;
	char error[64];
};

static void rot_subject(const struct tke_unit *u, char *out, size_t outlen)
{
	snprintf(out, outlen, "crypto unit %d (%s)", u->u.number, u->u.zone);
}

static bool rot_unit_done(const struct rot *ro, const struct tke_unit *u)
{
	return u->st.cur_state == KY_CUR_VALID && strcmp(u->st.cur_vp, ro->target) == 0 &&
	       u->st.new_state == KY_NEW_EMPTY;
}

static bool rot_unit_pending(const struct rot *ro, const struct tke_unit *u)
{
	return u->st.cur_state == KY_CUR_VALID && u->st.new_state == KY_NEW_COMMITTED &&
	       strcmp(u->st.new_vp, ro->target) == 0 && strcmp(u->st.cur_vp, ro->target) != 0;
}

/* Pure: the storage object of a state reply. */
static int rot_storage_parse(const json_t *state, struct rot_storage *s)
{
	const json_t *o = json_object_get(state, "storage"), *re, *v;

	memset(s, 0, sizeof(*s));
	if (o == NULL || json_is_null(o))
		return 0;
	if (!json_is_object(o))
		return KY_ERR_BAD_REPLY;
	v = json_object_get(o, "records_under_current");
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return KY_ERR_BAD_REPLY;
	s->under_current = (uint64_t)json_integer_value(v);
	v = json_object_get(o, "records_under_new");
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		s->under_new = (uint64_t)json_integer_value(v);
	re = json_object_get(o, "reencipher");
	if (json_is_object(re)) {
		s->running = json_is_true(json_object_get(re, "running"));
		v = json_object_get(re, "done");
		if (json_is_integer(v) && json_integer_value(v) >= 0)
			s->done = (uint64_t)json_integer_value(v);
		v = json_object_get(re, "total");
		if (json_is_integer(v) && json_integer_value(v) >= 0)
			s->total = (uint64_t)json_integer_value(v);
		v = json_object_get(re, "error");
		if (json_is_string(v))
			snprintf(s->error, sizeof(s->error), "%s", json_string_value(v));
	}
	s->have = true;
	return 0;
}

/* Reads the storage view of one unit (errors printed by unit_state). */
static int rot_storage_read(struct rot *ro, const struct tke_unit *u, struct rot_storage *s)
{
	int r = KY_ERR_INTERNAL;
	json_t *st = NULL;
	char subject[128];

	if ((r = unit_state(&ro->run.inst, &u->u, &st)) != 0)
		return r;
	r = rot_storage_parse(st, s);
	json_decref(st);
	if (r != 0) {
		rot_subject(u, subject, sizeof(subject));
		return cli_err(r, subject, "its state has a malformed 'storage' object");
	}
	return 0;
}

/* ---- preconditions ---- */

static int rot_refuse(const struct tke_unit *u, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int rot_refuse(const struct tke_unit *u, int err, const char *fmt, ...)
{
	char subject[128], detail[640];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	rot_subject(u, subject, sizeof(subject));
	cli_fail(err, subject, "%s", detail);
	return err;
}

/* Every selected unit answers; the new registers agree on one committed key; every unit
 * is either done (that key current, new register EMPTY) or pending (old key current, that
 * key committed in the new register), and the pending ones share the old key. */
static int rot_check(struct rot *ro, size_t *npending)
{
	int err = 0;
	bool differ = false;

	*npending = 0;
	ro->target[0] = ro->old_vp[0] = '\0';
	for (size_t i = 0; i < ro->run.n; i++) {
		const struct tke_unit *u = &ro->run.units[i];
		if (!u->reachable) {
			rot_refuse(
			    u, KY_ERR_UNREACHABLE,
			    "rotation needs every selected crypto unit: start it, or deselect "
			    "it with 'kyok tke cryptounit-rm' (it will need the new key "
			    "before it serves again)");
			err = err != 0 ? err : KY_ERR_UNREACHABLE;
		}
	}
	if (err != 0)
		goto refused;
	for (size_t i = 0; i < ro->run.n; i++) {
		const struct tke_unit *u = &ro->run.units[i];
		if (u->st.new_state == KY_NEW_UNCOMMITTED) {
			rot_refuse(u, KY_ERR_REGISTER_STATE,
			           "new master key register is FULL UNCOMMITTED (vp %s): commit it "
			           "first (cryptounit-mk-commit)",
			           u->st.new_vp);
			err = err != 0 ? err : KY_ERR_REGISTER_STATE;
		} else if (u->st.new_state == KY_NEW_COMMITTED) {
			if (ro->target[0] == '\0')
				snprintf(ro->target, sizeof(ro->target), "%s", u->st.new_vp);
			else if (strcmp(ro->target, u->st.new_vp) != 0)
				differ = true;
		}
	}
	if (err != 0)
		goto refused;
	if (differ) {
		cli_fail(KY_ERR_VP_MISMATCH, NULL,
		         "the selected crypto units hold different new master keys");
		for (size_t i = 0; i < ro->run.n; i++) {
			const struct tke_unit *u = &ro->run.units[i];
			fprintf(stderr, "  crypto unit %d (%s): new register %s%s%s\n", u->u.number,
			        u->u.zone, ky_new_state_name(u->st.new_state),
			        u->st.new_vp[0] != '\0' ? ", vp " : "", u->st.new_vp);
		}
		fprintf(stderr, "clear the wrong ones (cryptounit-mk-clrnew), then load and commit "
		                "the same new master key on every unit\n");
		err = KY_ERR_VP_MISMATCH;
		goto refused;
	}
	if (ro->target[0] == '\0') {
		const struct tke_unit *u = &ro->run.units[0];
		cli_fail(
		    KY_ERR_REGISTER_STATE, NULL,
		    "no new master key to rotate to: the new master key register is EMPTY on "
		    "every selected crypto unit (current master key %s%s). Load and commit a "
		    "new master key first (cryptounit-mk-load, cryptounit-mk-commit), then run "
		    "this command. A rotation that already finished leaves the units so.",
		    u->st.cur_state == KY_CUR_VALID ? "vp " : "EMPTY",
		    u->st.cur_state == KY_CUR_VALID ? u->st.cur_vp : "");
		err = KY_ERR_REGISTER_STATE;
		goto refused;
	}
	for (size_t i = 0; i < ro->run.n; i++) {
		const struct tke_unit *u = &ro->run.units[i];
		if (rot_unit_done(ro, u))
			continue;
		if (rot_unit_pending(ro, u)) {
			(*npending)++;
			if (ro->old_vp[0] == '\0')
				snprintf(ro->old_vp, sizeof(ro->old_vp), "%s", u->st.cur_vp);
			else if (strcmp(ro->old_vp, u->st.cur_vp) != 0) {
				rot_refuse(
				    u, KY_ERR_VP_MISMATCH,
				    "its current master key (vp %s) differs from that of other "
				    "selected units (vp %s): the units must share one current "
				    "master key",
				    u->st.cur_vp, ro->old_vp);
				err = err != 0 ? err : KY_ERR_VP_MISMATCH;
			}
			continue;
		}
		if (u->st.cur_state == KY_CUR_EMPTY)
			rot_refuse(u, KY_ERR_REGISTER_STATE,
			           "current master key register is EMPTY: there is nothing to "
			           "re-encipher from (to set a first master key, use "
			           "cryptounit-mk-setimm)");
		else if (u->st.new_state == KY_NEW_EMPTY)
			rot_refuse(
			    u, KY_ERR_REGISTER_STATE,
			    "new master key register is EMPTY (current vp %s): load and commit "
			    "the new master key (vp %s) on this unit first (cryptounit-mk-load, "
			    "cryptounit-mk-commit)",
			    u->st.cur_vp, ro->target);
		else
			rot_refuse(u, KY_ERR_SAME_KEY, "the new master key equals the current one");
		err = err != 0 ? err : KY_ERR_REGISTER_STATE;
	}
	if (err != 0)
		goto refused;
	return 0;
refused:
	tke_note("nothing was sent to any crypto unit");
	return err;
}

/* ---- the signed steps ---- */

static int rot_vp_fill(void *ctx, struct tke_run *run, struct tke_unit *u, struct ky_command *c)
{
	const struct rot *ro = ctx;

	(void)run;
	(void)u;
	if (ky_hex_decode(ro->target, c->vp, KY_VP_LEN) != 0)
		return KY_ERR_INTERNAL;
	c->has_vp = true;
	return 0;
}

static int rot_setimm_plan(void *ctx, struct tke_run *run, struct tke_unit *u)
{
	const struct rot *ro = ctx;

	(void)run;
	if (rot_unit_done(ro, u)) {
		snprintf(u->detail, sizeof(u->detail), "the new master key is already current");
		u->result = TKE_UNCHANGED;
		return 0;
	}
	if (!rot_unit_pending(ro, u)) {
		snprintf(u->detail, sizeof(u->detail),
		         "registers changed meanwhile: current %s %s, new %s %s",
		         ky_cur_state_name(u->st.cur_state), u->st.cur_vp,
		         ky_new_state_name(u->st.new_state), u->st.new_vp);
		return KY_ERR_REGISTER_STATE;
	}
	return 0;
}

/* Sends mk-reencipher to the unit at index k only, one signed command: reported in full
 * (report), or when the unit took it in one line. Returns the exit status: 0 when the unit
 * took it. */
static int rot_send_reencipher(struct rot *ro, size_t k, bool report)
{
	const struct tke_op op = {KY_OP_MK_REENCIPHER, NULL, rot_vp_fill, ro};

	return tke_run_command(
	    &ro->run, &op,
	    &(struct tke_hooks){.signers_open = true,
	                        .signers = ro->signers,
	                        .nsigners = ro->nsigners,
	                        .title = "step 1 of 2: re-encipher key storage",
	                        .json_steps = ro->steps,
	                        .changed_note = report ? NULL : "took the re-encipherment over",
	                        .only = &ro->run.units[k]});
}

static void rot_bar(uint64_t done, uint64_t total, bool final)
{
	char bar[41];
	int width = 40, fill = total > 0 ? (int)((done * (uint64_t)width) / total) : width;

	if (fill > width)
		fill = width;
	memset(bar, '#', (size_t)fill);
	memset(bar + fill, '-', (size_t)(width - fill));
	bar[width] = '\0';
	fprintf(stderr, "\rre-enciphering key storage [%s] %llu/%llu %3d%%%s", bar,
	        (unsigned long long)done, (unsigned long long)total,
	        total > 0 ? (int)((done * 100) / total) : 100, final ? "\n" : "");
	fflush(stderr);
}

static double rot_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Index of a pending unit other than k that answers, or -1. */
static long rot_other_unit(struct rot *ro, size_t k)
{
	for (size_t i = 0; i < ro->run.n; i++) {
		struct rot_storage s;
		if (i == k || !rot_unit_pending(ro, &ro->run.units[i]))
			continue;
		if (rot_storage_read(ro, &ro->run.units[i], &s) == 0)
			return (long)i;
	}
	return -1;
}

/* Step 1: re-encipherment on one pending unit, followed until nothing is left under the
 * old key. Returns the exit status (what went wrong printed). */
static int rot_reencipher(struct rot *ro)
{
	int r = KY_ERR_INTERNAL, status = 0;
	size_t k = 0;
	struct rot_storage s;
	bool tty = isatty(STDERR_FILENO) != 0, sent = false;
	uint64_t start_total = 0, last_left = 0;
	int restarts = 0, stalled = 0;
	double last_line = 0;
	long other;

	while (k < ro->run.n && !rot_unit_pending(ro, &ro->run.units[k]))
		k++;
	if (k == ro->run.n) /* every unit is done already */
		return 0;
	if ((r = rot_storage_read(ro, &ro->run.units[k], &s)) != 0)
		return ky_err_exit(r);
	if (!s.have) {
		tke_note("crypto unit %d (%s) has no key storage configured: nothing to "
		         "re-encipher",
		         ro->run.units[k].u.number, ro->run.units[k].u.zone);
		return 0;
	}
	ro->storage_seen = true;
	if (s.under_current == 0 && !s.running) {
		tke_note("key storage holds no record under the current master key: going on "
		         "with set-immediate");
		return 0;
	}
	start_total = s.under_current;
	if (!s.running) {
		if ((status = rot_send_reencipher(ro, k, true)) != 0)
			return status;
		sent = true;
	} else {
		tke_note("crypto unit %d (%s) is already re-enciphering key storage: following it",
		         ro->run.units[k].u.number, ro->run.units[k].u.zone);
	}
	last_left = s.under_current;
	for (;;) {
		struct timespec ts = {0, ROT_POLL_MS * 1000000L};
		uint64_t total, done;

		nanosleep(&ts, NULL);
		r = rot_storage_read(ro, &ro->run.units[k], &s);
		if (r == KY_ERR_UNREACHABLE || r == KY_ERR_INSTANCE_DOWN) {
			if (tty)
				fputc('\n', stderr);
			if ((other = rot_other_unit(ro, k)) < 0 || restarts >= ROT_RESTARTS_MAX) {
				char subject[128];
				rot_subject(&ro->run.units[k], subject, sizeof(subject));
				return ky_err_exit(
				    cli_err(r, subject,
				            "it stopped answering during re-encipherment and no "
				            "other selected unit can take over: run 'kyok tke "
				            "cryptounit-mk-rotate' again when a unit is back (it "
				            "continues where it stopped)"));
			}
			restarts++;
			k = (size_t)other;
			if ((status = rot_send_reencipher(ro, k, false)) != 0)
				return status;
			stalled = 0;
			continue;
		}
		if (r != 0)
			return ky_err_exit(r);
		if (!s.have)
			return ky_err_exit(cli_err(KY_ERR_BAD_REPLY, NULL,
			                           "the unit's state no longer shows key storage"));
		total = start_total > s.total ? start_total : s.total;
		if (s.under_current > total)
			total = s.under_current;
		done = total - s.under_current;
		if (s.under_current == 0) {
			if (tty)
				rot_bar(total, total, true);
			ro->moved = total;
			break;
		}
		if (!s.running && s.error[0] != '\0') {
			char subject[128];
			if (tty)
				fputc('\n', stderr);
			rot_subject(&ro->run.units[k], subject, sizeof(subject));
			return ky_err_exit(
			    cli_err(ky_err_from_slug(s.error), subject,
			            "re-encipherment stopped (%s) with %llu records still under "
			            "the current master key",
			            s.error, (unsigned long long)s.under_current));
		}
		if (!s.running && s.under_current >= last_left) {
			/* Stopped with records left (the unit restarted?): send it again. */
			if (++stalled >= ROT_STALL_POLLS) {
				if (restarts >= ROT_RESTARTS_MAX) {
					char subject[128];
					if (tty)
						fputc('\n', stderr);
					rot_subject(&ro->run.units[k], subject, sizeof(subject));
					return ky_err_exit(
					    cli_err(KY_ERR_INTERNAL, subject,
					            "re-encipherment keeps stopping with %llu "
					            "records left: see the unit's log",
					            (unsigned long long)s.under_current));
				}
				restarts++;
				stalled = 0;
				if (tty)
					fputc('\n', stderr);
				if ((status = rot_send_reencipher(ro, k, !sent)) != 0)
					return status;
				sent = true;
				continue;
			}
		} else {
			stalled = 0;
		}
		last_left = s.under_current;
		if (tty) {
			rot_bar(done, total, false);
		} else if (rot_now() - last_line >= ROT_PLAIN_EVERY) {
			fprintf(stderr, "re-enciphering key storage: %llu of %llu records done\n",
			        (unsigned long long)done, (unsigned long long)total);
			last_line = rot_now();
		}
	}
	if (!cli_g.json)
		printf("key storage re-enciphered: no record left under the old master key\n\n");
	return 0;
}

/* Step 2: set-immediate on every pending unit. Returns the exit status. */
static int rot_setimm(struct rot *ro)
{
	int r = KY_ERR_INTERNAL, status;
	struct tke_op op = {KY_OP_MK_SETIMM, rot_setimm_plan, rot_vp_fill, ro};

	if ((r = tke_run_refresh(&ro->run)) != 0)
		return ky_err_exit(r);
	if ((r = tke_run_plan(&ro->run, &op)) != 0)
		return ky_err_exit(r);
	status = tke_run_finish(
	    &ro->run, &(struct tke_hooks){.signers_open = true,
	                                  .signers = ro->signers,
	                                  .nsigners = ro->nsigners,
	                                  .title = "step 2 of 2: make the new master key current",
	                                  .json_steps = ro->steps});
	for (size_t i = 0; i < ro->run.n; i++) {
		const struct tke_unit *u = &ro->run.units[i];
		if (u->result == TKE_REFUSED &&
		    strcmp(ky_err_slug(u->err), "not-reenciphered") == 0 && !cli_g.json)
			tke_note("key storage gained records under the old master key meanwhile: "
			         "run 'kyok tke cryptounit-mk-rotate' again");
	}
	return status;
}

int tke_mk_rotate_main(int argc, char **argv)
{
	static const char usage[] =
	    "usage: kyok tke cryptounit-mk-rotate [--yes]\n"
	    "\n"
	    "Rotates the master key of every selected crypto unit to the new master key\n"
	    "committed in their new registers (load and commit it first: cryptounit-mk-load,\n"
	    "cryptounit-mk-commit). Key storage is re-enciphered from the current to the new\n"
	    "master key by one unit, in batches, while the key API keeps serving; then the new\n"
	    "key is made current on every unit (set-immediate). If anything stops it (this\n"
	    "command, a unit), run it again: it continues where things stand. Asks for\n"
	    "confirmation (--yes answers it). Needs one administrator signature per unit and\n"
	    "step; every selected signature key signs each of them.\n";
	static const struct cli_opt longopts[] = {CLI_OPT_END};
	int r = KY_ERR_INTERNAL, status = 0, opt;
	struct rot ro = {0};
	struct tke_op probe = {KY_OP_MK_SETIMM, rot_setimm_plan, rot_vp_fill, &ro};
	size_t npending = 0;
	char question[200];

	while ((opt = cli_getopt(argc, argv, longopts, cli_common_opts)) != -1) {
		if (opt == 'h') {
			tke_print_help(usage, longopts);
			return 0;
		}
		if (cli_common_opt(opt, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if (cli_no_operands(argc, argv) != 0)
		return ky_err_exit(KY_ERR_USAGE);
	if ((r = tke_run_load(&ro.run)) != 0)
		goto out_r;
	if ((r = rot_check(&ro, &npending)) != 0)
		goto out_r;
	if (npending == 0) {
		/* Not reached: rot_check finds no target when every unit is done. */
		tke_note("the master key vp %s is current on every selected crypto unit",
		         ro.target);
		goto out;
	}
	/* Both steps need one signature on the units they go to: check before any password. */
	if ((r = tke_run_plan(&ro.run, &probe)) != 0 || (r = tke_run_check_signers(&ro.run)) != 0)
		goto out_r;
	tke_note("warning: the master key of %zu crypto unit%s changes from vp %.16s... to vp "
	         "%.16s...: key storage is re-enciphered under the new key, then the old key is "
	         "no longer used. Keep the new key's parts safe: without them key storage is "
	         "lost for good after a zeroize.",
	         npending, npending == 1 ? "" : "s", ro.old_vp, ro.target);
	snprintf(question, sizeof(question), "rotate the master key on %zu crypto unit%s?",
	         npending, npending == 1 ? "" : "s");
	if ((r = cli_confirm(question)) != 0) {
		tke_note("nothing was sent to any crypto unit");
		goto out_r;
	}
	if ((r = cli_signers_open(&ro.signers, &ro.nsigners)) != 0)
		goto out_r;
	if (cli_g.json && (ro.steps = json_array()) == NULL) {
		r = cli_err(KY_ERR_NOMEM, NULL, NULL);
		goto out_r;
	}
	if ((status = rot_reencipher(&ro)) != 0) {
		tke_note("the new master key was not made current anywhere: run 'kyok tke "
		         "cryptounit-mk-rotate' again to continue");
		goto out_json;
	}
	status = rot_setimm(&ro);
	if (!cli_g.json) {
		size_t done = 0;
		for (size_t i = 0; i < ro.run.n; i++)
			done += rot_unit_done(&ro, &ro.run.units[i]) ? 1 : 0;
		printf("master key vp %s is current on %zu of %zu crypto units\n", ro.target, done,
		       ro.run.n);
		if (done < ro.run.n)
			printf("re-run 'kyok tke cryptounit-mk-rotate' to complete the remaining "
			       "units\n");
	}
out_json:
	if (cli_g.json)
		cli_print_json(json_pack("{s:s, s:s, s:I, s:O}", "old_vp", ro.old_vp, "new_vp",
		                         ro.target, "records_reenciphered", (json_int_t)ro.moved,
		                         "steps", ro.steps != NULL ? ro.steps : json_null()));
	goto out;
out_r:
	status = ky_err_exit(r);
out:
	json_decref(ro.steps);
	cli_signers_free(ro.signers, ro.nsigners);
	tke_run_release(&ro.run);
	return status;
}
