/* kyok-unitd: one software crypto unit.
 *
 *   kyok-unitd --config unit.conf
 *
 * Start order: harden the process, read the config, open the log, take the data directory,
 * open the seal, load or create the unit state, bind, serve, write the port file. SIGTERM
 * or SIGINT stop it cleanly; SIGHUP reopens the log file.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kyok/crypto.h"
#include "kyok/err.h"
#include "unitd/audit.h"
#include "unitd/config.h"
#include "unitd/harden.h"
#include "unitd/identity.h"
#include "unitd/keystore.h"
#include "unitd/log.h"
#include "unitd/nice.h"
#include "unitd/seal.h"
#include "unitd/server.h"
#include "unitd/unitd.h"

#ifndef KYOK_VERSION
#define KYOK_VERSION "0.1.0"
#endif

static void unitd_usage(FILE *fp)
{
	fprintf(fp,
	        "usage: kyok-unitd --config PATH [--identity-request CSR]\n"
	        "\n"
	        "Runs one kyok crypto unit: its sealed domain state, the admin endpoint\n"
	        "/v1/admin/... that 'kyok tke' talks to, and the key API /api/v2/...\n"
	        "(Key Protect v2 compatible) with its token service /identity/token.\n"
	        "\n"
	        "options:\n"
	        "  -c, --config PATH   unit configuration file (required)\n"
	        "  --identity-request CSR\n"
	        "                      for a new unit: make its identity key (kept sealed in\n"
	        "                      data_dir), write its certificate request to CSR and exit;\n"
	        "                      the holder of the instance's unit trust anchor issues\n"
	        "                      identity_cert from it ('kyok up' does it locally)\n"
	        "  -h, --help          show this help\n"
	        "  -V, --version       show the version\n"
	        "\n"
	        "config file: 'key = value' lines, '#' comments:\n"
	        "  instance = ID       service instance (1..64 of A-Z a-z 0-9 . _ -)\n"
	        "  unit = ID           this crypto unit\n"
	        "  zone = ID           availability zone\n"
	        "  listen = HOST:PORT  default 127.0.0.1:0 (0 = any free port)\n"
	        "  data_dir = PATH     sealed state and the seal key's file (created 0700)\n"
	        "  port_file = PATH    optional: receives the bound port\n"
	        "  log_file = PATH     optional: log here instead of stderr\n"
	        "  store = sqlite:PATH key storage shared by the instance's units (key API)\n"
	        "  key_limit = N       optional: keys in the instance (default 5000)\n"
	        "  store_lock_wait_ms = MS\n"
	        "                      optional: how long to wait at start for key storage\n"
	        "                      locked by another writer (default 10000)\n"
	        "  key_cache = N       optional: keys kept opened in memory (default key_limit,\n"
	        "                      at most 100000; beyond it the least used are closed)\n"
	        "  api_tls_cert = PATH PEM certificate chain: serve HTTPS (needed off loopback)\n"
	        "  api_tls_key = PATH  its PEM private key\n"
	        "  token_ttl = SECONDS optional: access token lifetime (default 3600)\n"
	        "  reencipher_batch = N\n"
	        "                      optional: records re-enciphered per transaction during a\n"
	        "                      master key rotation (default 500)\n"
	        "  reencipher_pause_ms = MS\n"
	        "                      optional: pause between those transactions, so that a\n"
	        "                      rotation does not hog the disk (default 0)\n"
	        "  seal = file|tpm2|pkcs11\n"
	        "                      optional: where the seal key lives (default file: a\n"
	        "                      0600 file in data_dir; see docs/sealing.md)\n"
	        "  tpm2_tcti = TCTI    seal = tpm2: how to reach the TPM, e.g.\n"
	        "                      device:/dev/tpmrm0 (default: the TCTI loader's)\n"
	        "  pkcs11_module = PATH\n"
	        "                      seal = pkcs11: the token's PKCS#11 module\n"
	        "  pkcs11_token = LABEL\n"
	        "                      seal = pkcs11: the token's label\n"
	        "  pkcs11_key_label = LABEL\n"
	        "                      seal = pkcs11: label of the seal keys (default kyok-seal)\n"
	        "  pkcs11_pin_file = PATH\n"
	        "                      seal = pkcs11: file holding the token's user PIN\n"
	        "  threads = N         optional: threads serving requests (default 8 per CPU,\n"
	        "                      at most 128)\n"
	        "  max_connections = N optional: open connections, all clients (default 1000)\n"
	        "  max_connections_per_client = N\n"
	        "                      optional: open connections from one client address;\n"
	        "                      more are closed at once (default 64, 0 = no limit)\n"
	        "  idle_timeout = SECONDS\n"
	        "                      optional: a connection silent this long is closed\n"
	        "                      (default 30)\n"
	        "  body_timeout = SECONDS\n"
	        "                      optional: a request body must arrive whole within this\n"
	        "                      time of its headers, or the connection is closed\n"
	        "                      (default 60)\n"
	        "  header_timeout = SECONDS\n"
	        "                      optional: a request's headers must arrive whole within\n"
	        "                      this time of the connection's accept (or of the end of\n"
	        "                      its previous request), or the connection is closed\n"
	        "                      (default 10)\n"
	        "  anchor_cert = PATH  the instance's unit trust anchor certificate (required:\n"
	        "                      it must be the one sealed in the unit state)\n"
	        "  identity_cert = PATH\n"
	        "                      this unit's identity certificate issued by the anchor\n"
	        "                      (read when the unit state is created)\n"
	        "  audit_max_bytes = N optional: size at which the audit log (data_dir/audit)\n"
	        "                      goes on in a new file (default 67108864, at least 4096)\n"
	        "  audit_checkpoint_ms = MS\n"
	        "                      optional: longest wait of an audit line for its signed\n"
	        "                      checkpoint (default 1000)\n"
	        "  imprint_verifier = HEX\n"
	        "                      public key (64 hex digits) of the instance's imprint\n"
	        "                      credential: in imprint mode the unit runs a command only\n"
	        "                      with a claim made with it (none: it runs none)\n"
	        "  metrics = 1|0       optional: count requests by route for GET /metrics\n"
	        "                      (default 1; 0 leaves the request counters out)\n"
	        "  policy_pass_interval = SECONDS\n"
	        "                      optional: how often the unit rotates keys whose\n"
	        "                      rotation policy is due and purges keys deleted 90 days\n"
	        "                      ago (default 3600)\n"
	        "  policy_pass_days_ahead = DAYS\n"
	        "                      optional, for tests only: that pass's clock runs DAYS\n"
	        "                      ahead of the system's (default 0)\n"
	        "relative paths are taken from the config file's directory.\n");
}

/* A start failure: to the log, and to stderr too when the log is a file, so that whoever
 * started the daemon sees why it stopped. */
static void unitd_start_error(const char *msg)
{
	unitd_log("error: %s", msg);
	if (!unitd_log_reaches_stderr())
		fprintf(stderr, "error: %s\n", msg);
}

/* Writes "PORT\n" to path atomically. */
static int unitd_port_file(const char *path, uint16_t port)
{
	char line[16];
	int n = snprintf(line, sizeof(line), "%u\n", (unsigned)port);

	return ky_file_write_atomic(path, line, (size_t)n, 0600);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"identity-request", required_argument, NULL, 'R'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	int r = KY_ERR_INTERNAL, status = KY_EXIT_INTERNAL, opt, sig = 0;
	const char *config_path = NULL, *csr_path = NULL;
	char err[UNITD_ERR_MAX] = "";
	struct unitd_config cfg;
	struct unitd_datadir dd = {.lock_fd = -1};
	struct ky_domain *dom = NULL;
	struct unitd_keystore *ks = NULL;
	struct unitd_server *srv = NULL;
	sigset_t sigs;
	bool port_written = false, created = false;

	memset(&cfg, 0, sizeof(cfg));
	while ((opt = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 'R':
			csr_path = optarg;
			break;
		case 'h':
			unitd_usage(stdout);
			return 0;
		case 'V':
			printf("kyok-unitd %s\n", KYOK_VERSION);
			return 0;
		default:
			fprintf(stderr, "usage: kyok-unitd --config PATH (see --help)\n");
			return KY_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "error: unexpected argument '%s'\n", argv[optind]);
		fprintf(stderr, "usage: kyok-unitd --config PATH (see --help)\n");
		return KY_EXIT_USAGE;
	}
	if (config_path == NULL) {
		fprintf(stderr, "error: missing --config PATH\n");
		fprintf(stderr, "usage: kyok-unitd --config PATH (see --help)\n");
		return KY_EXIT_USAGE;
	}

	/* Before anything secret exists. */
	if ((r = unitd_harden(err, sizeof(err))) != 0) {
		fprintf(stderr, "error: %s\n", err);
		return ky_err_exit(r);
	}
	if ((r = unitd_config_load(config_path, &cfg, err, sizeof(err))) != 0) {
		fprintf(stderr, "error: %s\n", err);
		status = r == KY_ERR_CONFIG ? KY_EXIT_USAGE : ky_err_exit(r);
		goto out;
	}
	if ((r = unitd_secure_heap_init(&cfg, err, sizeof(err))) != 0) {
		fprintf(stderr, "error: %s\n", err);
		status = ky_err_exit(r);
		goto out;
	}
	if ((r = unitd_log_open(cfg.log_file, err, sizeof(err))) != 0) {
		fprintf(stderr, "error: %s\n", err);
		status = ky_err_exit(r);
		goto out;
	}
	/* Blocked here, so every server thread inherits the mask and sigwait gets them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	if ((errno = pthread_sigmask(SIG_BLOCK, &sigs, NULL)) != 0) {
		unitd_start_error("cannot block signals");
		goto out;
	}

	if (csr_path != NULL) {
		if ((r = unitd_datadir_open(&cfg, &dd, err, sizeof(err))) != 0 ||
		    (r = unitd_identity_request(&dd, &cfg, csr_path, err, sizeof(err))) != 0) {
			unitd_start_error(err);
			status = r == KY_ERR_CONFIG ? KY_EXIT_USAGE : ky_err_exit(r);
			goto out;
		}
		unitd_datadir_release(&dd);
		unitd_config_release(&cfg);
		unitd_log_close();
		return 0;
	}
	/* The audit log opens once the state is unsealed: its lines are signed by the unit's
	 * identity key. No audit log, no service. */
	if ((r = unitd_datadir_open(&cfg, &dd, err, sizeof(err))) == 0) {
		created = access(dd.state_path, F_OK) != 0;
		r = unitd_state_load(&dd, &cfg, &dom, err, sizeof(err));
	}
	if (r == 0)
		r = unitd_audit_open(&cfg, &dd, dom, created, err, sizeof(err));
	if (r != 0) {
		unitd_start_error(err);
		status = r == KY_ERR_CONFIG ? KY_EXIT_USAGE : ky_err_exit(r);
		goto out;
	}
	if (cfg.store != NULL && (r = unitd_keystore_open(&cfg, &dd, &ks, err, sizeof(err))) != 0) {
		unitd_start_error(err);
		status = r == KY_ERR_CONFIG ? KY_EXIT_USAGE : ky_err_exit(r);
		goto out;
	}
	if (cfg.store != NULL)
		(void)unitd_nice_init(); /* before the first request */
	if ((r = unitd_server_start(&cfg, &dd, &dom, &ks, &srv, err, sizeof(err))) != 0) {
		unitd_start_error(err);
		status = r == KY_ERR_CONFIG ? KY_EXIT_USAGE : ky_err_exit(r);
		goto out;
	}
	if (cfg.port_file != NULL) {
		if ((r = unitd_port_file(cfg.port_file, unitd_server_port(srv))) != 0) {
			snprintf(err, sizeof(err), "cannot write port file '%s': %s", cfg.port_file,
			         ky_err_message(r));
			unitd_start_error(err);
			status = ky_err_exit(r);
			goto out;
		}
		port_written = true;
	}
	unitd_log("kyok-unitd: unit %s zone %s instance %s listening on %s://%s:%u%s", cfg.unit,
	          cfg.zone, cfg.instance, cfg.tls_cert ? "https" : "http", unitd_server_addr(srv),
	          (unsigned)unitd_server_port(srv),
	          cfg.store ? "" : " (no key storage: no key API)");
	if (cfg.store != NULL && unitd_nice_available())
		unitd_log("key creations run at nice %d while they work: reads come first when the "
		          "CPUs are all busy",
		          KY_STORE_WRITE_NICE);
	else if (cfg.store != NULL)
		unitd_log(
		    "key creations run at the priority of reads: this unit cannot give a thread "
		    "its priority back once lowered (it needs an RLIMIT_NICE of 20, "
		    "LimitNICE=+0 in a systemd service, or CAP_SYS_NICE), or it runs at nice "
		    "%d or more already",
		    KY_STORE_WRITE_NICE);

	for (;;) {
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			unitd_log_reopen();
			unitd_log("log reopened");
			continue;
		}
		break;
	}
	unitd_log("kyok-unitd: unit %s stopping (%s)", cfg.unit,
	          sig == SIGTERM ? "SIGTERM" : "SIGINT");
	status = 0;
out:
	unitd_server_free(srv); /* stops serving, frees the live state and key storage */
	unitd_audit_close();    /* after the last request: stop line, final checkpoint */
	unitd_keystore_free(ks);
	ky_domain_free(dom);
	if (port_written)
		(void)unlink(cfg.port_file);
	unitd_datadir_release(&dd);
	if (status == 0)
		unitd_log("kyok-unitd: unit %s stopped", cfg.unit);
	unitd_config_release(&cfg);
	unitd_log_close();
	return status;
}
