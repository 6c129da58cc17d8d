/* kyok up: a local instance of crypto units on loopback, made (its directory, its units'
 * files and first start) or started again. Its other parts: up_files.c (the files below),
 * up_proc.c (the units' processes, kyok down), up_unit_add.c (kyok unit-add), up_status.c
 * (kyok status), up_tls.c (the TLS CA); up_internal.h, what they share.
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
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/anchor.h"
#include "cli/cli.h"
#include "cli/cmds.h"
#include "cli/up_internal.h"
#include "cli/up_tls.h"
#include "kyok/imprint.h"

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

/* The unit's identity request, certified by the instance's anchor into identity.crt. */
int up_certify(const char *dir, const char *unitd, const char *instance, const struct up_unit *u)
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

void up_report(const char *dir, const char *instance, struct up_unit *units, size_t n)
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
    "\n";

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
int up_url_port(const char *url)
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
	enum {
		OPT_TLS_CERT = 0x2001,
		OPT_TLS_KEY,
		OPT_LISTEN,
		OPT_PORT,
		OPT_STORE,
		OPT_SEAL_CONFIG,
		OPT_TLS,
		OPT_DIR,
		OPT_UNITS,
		OPT_ZONES
	};
	static const struct cli_opt opts[] = {
	    {"dir", OPT_DIR, CLI_ARG_REQUIRED, "DIR",
	     "instance directory (default: --instance, $KYOK_INSTANCE, else ~/.kyok/instance); "
	     "created 0700"},
	    {"units", OPT_UNITS, CLI_ARG_REQUIRED, "N",
	     "number of crypto units, 1 to 16 (default 2)"},
	    {"zones", OPT_ZONES, CLI_ARG_REQUIRED, "LIST",
	     "zone names, one per unit (default zone-1, zone-2, ...)"},
	    {"port", OPT_PORT, CLI_ARG_REQUIRED, "BASE",
	     "ports of the new units: BASE, BASE+1, ... (default: free ports picked once); only "
	     "when the instance is made"},
	    {"tls", OPT_TLS, CLI_ARG_NONE, NULL,
	     "serve HTTPS: make the instance's TLS CA (DIR/ca.crt, its key DIR/ca.key 0600) and a "
	     "certificate for each unit (unit-N/tls.crt, for 127.0.0.1); commands that talk to the "
	     "units trust DIR/ca.crt; only when the instance is made"},
	    {"seal-config", OPT_SEAL_CONFIG, CLI_ARG_REQUIRED, "FILE",
	     "sealing settings for every new unit's unit.conf: 'seal = tpm2' or 'seal = pkcs11' "
	     "and that backend's tpm2_* or pkcs11_* lines, paths absolute (default: seal = file; "
	     "see docs/sealing.md); only when the instance is made"},
	    {"store", OPT_STORE, CLI_ARG_REQUIRED, "URI",
	     "key storage the units share: a PostgreSQL URI, "
	     "postgresql://USER@HOST/DB?sslmode=verify-full, its password in a password file "
	     "(PGPASSFILE), never in the URI (default: $KYOK_STORE, else DIR/keys.db, SQLite; see "
	     "docs/storage.md); only when the instance is made"},
	    {"listen", OPT_LISTEN, CLI_ARG_REQUIRED, "ADDR",
	     "the IPv4 address of this host the new units listen on (default 127.0.0.1); one "
	     "outside loopback needs --tls or --tls-cert: plain HTTP is served on loopback only; "
	     "only when the instance is made"},
	    {"tls-cert", OPT_TLS_CERT, CLI_ARG_REQUIRED, "FILE",
	     "serve HTTPS with your own certificate (PEM, with its chain; it must name ADDR), "
	     "copied into each new unit's directory; commands that talk to the units then need "
	     "--cacert with its CA; only when the instance is made"},
	    {"tls-key", OPT_TLS_KEY, CLI_ARG_REQUIRED, "FILE",
	     "the certificate's key (PEM, no passphrase), copied with it"},
	    CLI_OPT_TEXT(
	        "\nUnits on other hosts join the instance with 'kyok host' (docs/operations.md, "
	        "\"Units\non several hosts\"); instance.json lists them with \"remote\": true, and "
	        "'kyok up'\nleaves them alone.\n\nA new instance gets its imprint credential, "
	        "DIR/imprint-credential.pem (mode 0600):\nits units in imprint mode run commands "
	        "only with a claim made with it, and each\nunit.conf holds its public key "
	        "(imprint_verifier). Hand it to the administrators\nover a secure channel; delete "
	        "it once the units left imprint mode if you like\n(zeroize needs it again). An "
	        "instance whose unit.conf files have no\nimprint_verifier gets one (and a "
	        "credential when there is none) when it starts.\n\nkyok-unitd is found through "
	        "$KYOK_UNITD, next to kyok, in ../unitd (build tree),\nelse on PATH.\n"),
	    CLI_OPT_END};
	int r = KY_ERR_INTERNAL, c, nunits = 0, base_port = 0;
	bool tls = false;
	const char *dir_arg = NULL, *zones = NULL, *seal_path = NULL, *store = NULL;
	const char *listen = NULL, *tls_cert = NULL, *tls_key = NULL;
	const char *store_env = getenv("KYOK_STORE");
	char dir[PATH_MAX / 2 - 64], path[PATH_MAX], unitd[PATH_MAX], *end, *seal_conf = NULL;
	struct up_unit *units = NULL;

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		switch (c) {
		case 'h':
			cli_opts_help(stdout, up_usage, opts, cli_common_opts);
			return 0;
		case OPT_DIR:
			dir_arg = optarg;
			break;
		case OPT_UNITS: {
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
		case OPT_ZONES:
			zones = optarg;
			break;
		case OPT_SEAL_CONFIG:
			seal_path = optarg;
			break;
		case OPT_TLS:
			tls = true;
			break;
		case OPT_PORT: {
			long v;
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno != 0 || end == optarg || *end != '\0' || v < 1 || v > 65535)
				return cli_fail(KY_ERR_USAGE, "--port",
				                "'%s': give a port number from 1 to 65535", optarg);
			base_port = (int)v;
			break;
		}
		case OPT_STORE:
			store = optarg;
			break;
		case OPT_LISTEN:
			listen = optarg;
			break;
		case OPT_TLS_CERT:
			tls_cert = optarg;
			break;
		case OPT_TLS_KEY:
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
