/* kyok unit-add: a crypto unit added to the local instance, or re-created in place of a
 * lost one, certified by the instance's anchor. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/anchor.h"
#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/up_internal.h"
#include "kyok/imprint.h"

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
    "\n";

static int up_add_parse(int argc, char **argv, int *replace, const char **zone)
{
	enum { OPT_REPLACE = 0x2001, OPT_ZONE };
	static const struct cli_opt opts[] = {
	    {"replace", OPT_REPLACE, CLI_ARG_REQUIRED, "N",
	     "re-create unit N: it must not be running; what is left of its state is deleted, "
	     "after confirmation (--yes)"},
	    {"zone", OPT_ZONE, CLI_ARG_REQUIRED, "ZONE",
	     "zone of the new unit (default zone-N, or the zone of the unit replaced)"},
	    CLI_OPT_END};
	int c;
	char *end;

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		switch (c) {
		case 'h':
			cli_opts_help(stdout, unit_add_usage, opts, cli_common_opts);
			return -1;
		case OPT_REPLACE: {
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
		case OPT_ZONE:
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
