/* kyok audit verify: checks the audit logs of crypto units (include/kyok/audit.h). */
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cmds.h"
#include "kyok/audit.h"
#include "kyok/crypto.h"

#define AUDIT_FILE_MAX ((size_t)2 * 1024 * 1024 * 1024) /* above the unit's largest file */

static const char audit_verify_usage[] =
    "usage: kyok audit verify [--cert PEM] [FILE...] [options]\n"
    "\n"
    "Checks crypto units' audit logs: every line's place in the hash chain (seq and\n"
    "prev) and every checkpoint's signature by the unit's identity key. Finds a line\n"
    "removed, inserted, moved or edited, names the first such line and why, and exits\n"
    "non-zero. Lines after the last checkpoint cannot be checked: that is an error too\n"
    "(a running unit signs a checkpoint at least every audit_checkpoint_ms, and at stop).\n"
    "\n"
    "Without FILE: the logs of every unit of the instance (--instance DIR):\n"
    "DIR/unit-N/data/audit/audit-*.jsonl, each unit's files in order, from seq 1 on.\n"
    "With FILE...: those files of one unit, in the order given, as one stretch of its\n"
    "chain (it may begin anywhere, e.g. after older files were archived).\n"
    "\n"
    "The identity certificate comes from each file's first line and must hold the key\n"
    "pinned for that unit in the workspace's known_units (see 'kyok tke cryptounits'),\n"
    "unless --cert gives the certificate to check against.\n"
    "\n";

struct audit_trust {
	const char *unit; /* expected unit id (instance mode), or NULL */
	const char *instance;
};

/* The log's certificate is trusted when its key is the one pinned for that unit. */
static int audit_trust_pinned(void *arg, const char *instance, const char *unit, X509 *cert,
                              char *why, size_t whylen)
{
	const struct audit_trust *t = arg;
	char fp[65], pinned[65];
	int r;

	if (t->unit != NULL && (strcmp(unit, t->unit) != 0 || strcmp(instance, t->instance) != 0)) {
		snprintf(
		    why, whylen,
		    "the log is of unit %s of instance %s, but that directory holds unit %s of "
		    "instance %s",
		    unit, instance, t->unit, t->instance);
		return KY_ERR_AUDIT_SIGNATURE;
	}
	if (ky_pubkey_fingerprint(X509_get0_pubkey(cert), fp) != 0) {
		snprintf(why, whylen, "cannot fingerprint the log's identity certificate");
		return KY_ERR_CRYPTO;
	}
	r = cli_known_unit_lookup(instance, unit, pinned);
	if (r == KY_ERR_NOT_FOUND) {
		snprintf(why, whylen,
		         "crypto unit %s of instance %s is not pinned in %s/known_units: contact "
		         "it once ('kyok tke cryptounits'), or give its certificate with --cert",
		         unit, instance, cli_workspace());
		return KY_ERR_NOT_FOUND;
	}
	if (r != 0) {
		snprintf(why, whylen, "cannot read the pinned identities");
		return r;
	}
	if (strcmp(fp, pinned) != 0) {
		snprintf(why, whylen,
		         "the log's identity key (sha256 %s) is not the one pinned for unit %s "
		         "(sha256 %s): this log was not written by that unit",
		         fp, unit, pinned);
		return KY_ERR_AUDIT_SIGNATURE;
	}
	return 0;
}

/* Feeds every line of one file. */
static int audit_verify_file(struct ky_audit_verifier *v, const char *path, char *why,
                             size_t whylen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf b = {0};
	size_t pos = 0, lineno = 0;
	char where[600];

	if ((r = ky_file_read(path, AUDIT_FILE_MAX, &b)) != 0) {
		snprintf(why, whylen, "%s: cannot read: %s", path, ky_err_message(r));
		goto out;
	}
	/* A running unit's present file ends in room reserved ahead: zero bytes, no line. */
	while (b.len > 0 && b.data[b.len - 1] == '\0')
		b.len--;
	if (b.len == 0) {
		r = KY_ERR_AUDIT_LINE;
		snprintf(why, whylen, "%s: no line in the file", path);
		goto out;
	}
	while (pos < b.len) {
		const uint8_t *nl = memchr(b.data + pos, '\n', b.len - pos);
		lineno++;
		snprintf(where, sizeof(where), "%s:%zu", path, lineno);
		if (nl == NULL) {
			r = KY_ERR_AUDIT_LINE;
			snprintf(why, whylen, "%s: last line has no newline (cut short)", where);
			goto out;
		}
		if ((r = ky_audit_verify_line(v, where, lineno == 1, (const char *)b.data + pos,
		                              (size_t)(nl - (b.data + pos)), why, whylen)) != 0)
			goto out;
		pos = (size_t)(nl - b.data) + 1;
	}
	r = 0;
out:
	ky_buf_free(&b);
	return r;
}

static int audit_report(const char *label, struct ky_audit_verifier *v, int r, const char *why)
{
	struct ky_audit_summary s;

	if (r != 0) /* why names the file and line */
		return cli_err(r, strncmp(why, label, strlen(label)) == 0 ? NULL : label, "%s",
		               why);
	ky_audit_verifier_summary(v, &s);
	printf("%s: ok: %llu lines (seq %llu to %llu), %llu signed checkpoints, %s\n", label,
	       (unsigned long long)s.lines, (unsigned long long)s.first_seq,
	       (unsigned long long)s.last_seq, (unsigned long long)s.checkpoints,
	       s.clean_stop ? "ends with a clean stop" : "the unit was running (or crashed)");
	return 0;
}

static int audit_name_filter(const struct dirent *e)
{
	const char *n = e->d_name;
	size_t len = strlen(n);

	return len == strlen("audit-00000000.jsonl") && strncmp(n, "audit-", 6) == 0 &&
	       strcmp(n + len - 6, ".jsonl") == 0 && strspn(n + 6, "0123456789") == 8;
}

/* Every unit of the instance, each from seq 1. */
static int audit_verify_instance(void)
{
	int r = KY_ERR_INTERNAL, first = 0;
	struct cli_instance inst;
	char dir[700], path[1000], why[1024], label[128];

	if ((r = cli_instance_load(&inst)) != 0)
		return r;
	for (size_t i = 0; i < inst.nunits; i++) {
		const struct cli_unit *u = &inst.units[i];
		struct audit_trust t = {.unit = u->id, .instance = inst.id};
		struct ky_audit_verifier *v = NULL;
		struct dirent **names = NULL;
		int n;

		snprintf(label, sizeof(label), "crypto unit %d (%s)", u->number, u->zone);
		snprintf(dir, sizeof(dir), "%s/unit-%d/data/audit", inst.dir, u->number);
		why[0] = '\0';
		if ((n = scandir(dir, &names, audit_name_filter, alphasort)) < 0) {
			r = KY_ERR_NOT_FOUND;
			snprintf(why, sizeof(why), "no audit log in '%s'", dir);
		} else if (n == 0) {
			r = KY_ERR_NOT_FOUND;
			snprintf(why, sizeof(why), "no audit-*.jsonl file in '%s'", dir);
		} else if ((r = ky_audit_verifier_new(NULL, audit_trust_pinned, &t, true, &v)) !=
		           0) {
			snprintf(why, sizeof(why), "out of memory");
		} else {
			for (int k = 0; k < n && r == 0; k++) {
				snprintf(path, sizeof(path), "%s/%s", dir, names[k]->d_name);
				r = audit_verify_file(v, path, why, sizeof(why));
			}
			if (r == 0)
				r = ky_audit_verify_finish(v, why, sizeof(why));
		}
		for (int k = 0; k < n; k++)
			free(names[k]);
		free(names);
		if ((r = audit_report(label, v, r, why)) != 0 && first == 0)
			first = r;
		ky_audit_verifier_free(v);
	}
	return first;
}

/* Some files of one unit, in the order given. */
static int audit_verify_files(char **files, int nfiles, const char *cert_path)
{
	int r = KY_ERR_INTERNAL;
	struct audit_trust t = {0};
	struct ky_audit_verifier *v = NULL;
	struct ky_buf pem = {0};
	X509 *cert = NULL;
	char why[1024] = "";

	if (cert_path != NULL) {
		if ((r = ky_file_read(cert_path, 64 * 1024, &pem)) != 0 ||
		    (r = ky_buf_append(&pem, "", 1)) != 0)
			return cli_err(r, cert_path, "cannot read the certificate");
		if ((r = ky_cert_from_pem((const char *)pem.data, &cert)) != 0) {
			ky_buf_free(&pem);
			return cli_err(r, cert_path, "not a PEM certificate");
		}
		ky_buf_free(&pem);
	}
	r = ky_audit_verifier_new(cert ? X509_get0_pubkey(cert) : NULL, audit_trust_pinned, &t,
	                          false, &v);
	X509_free(cert);
	if (r != 0)
		return cli_err(r, NULL, NULL);
	for (int i = 0; i < nfiles && r == 0; i++)
		r = audit_verify_file(v, files[i], why, sizeof(why));
	if (r == 0)
		r = ky_audit_verify_finish(v, why, sizeof(why));
	r = audit_report(nfiles == 1 ? files[0] : "audit log", v, r, why);
	ky_audit_verifier_free(v);
	return r;
}

static int audit_verify_main(int argc, char **argv)
{
	enum { OPT_CERT = 0x2001 };
	static const struct cli_opt opts[] = {{"cert", OPT_CERT, CLI_ARG_REQUIRED, "PEM",
	                                       "the unit's identity certificate (PEM, as served by "
	                                       "GET /v1/admin/identity); FILE... only"},
	                                      CLI_OPT_END};
	const char *cert = NULL;
	int c;

	while ((c = cli_getopt(argc, argv, opts, cli_common_opts)) != -1) {
		if (c == 'h') {
			cli_opts_help(stdout, audit_verify_usage, opts, cli_common_opts);
			return 0;
		}
		if (c == OPT_CERT)
			cert = optarg;
		else if (cli_common_opt(c, optarg) != 0)
			return ky_err_exit(KY_ERR_USAGE);
	}
	if (optind < argc)
		return ky_err_exit(audit_verify_files(argv + optind, argc - optind, cert));
	if (cert != NULL)
		return cli_fail(KY_ERR_USAGE, "kyok audit verify",
		                "--cert goes with FILE...: an instance's units each have their own "
		                "certificate, pinned in known_units");
	return ky_err_exit(audit_verify_instance());
}

static const struct cli_cmd audit_cmds[] = {
    {"verify", audit_verify_main, "check audit logs: hash chain and checkpoint signatures"},
    {NULL, NULL, NULL},
};

int audit_main(int argc, char **argv)
{
	return cli_dispatch("kyok audit", audit_cmds, argc, argv);
}
