/* The key-management API client behind 'kyok kp': API key, token, one HTTP connection
 * pool for the process, failover across the instance's crypto units, Key Protect errors.
 * Private to cli/kp*.c.
 */
#ifndef KYOK_CLI_KP_CLIENT_H
#define KYOK_CLI_KP_CLIENT_H

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>

#include "cli/cli.h"

/* Options every 'kyok kp' command accepts besides the common ones. */
struct kp_opts {
	const char *apikey_file; /* --apikey-file, else $KYOK_APIKEY_FILE */
	int unit;                /* --unit N: try that unit first (0 = the first) */
	bool verbose;            /* --verbose: which unit served, failovers */
	const char *instance_id; /* -i/--instance-ID: must be the instance's id */
	const char *key_ring;    /* --key-ring RING: header X-Kms-Key-Ring of every request */
};
extern struct kp_opts kp_o;

/* Ids from 0x1201: past the common options' (0x10xx) and --imprint-credential's (0x1101), as
 * a kp table holds the common rows too. */
enum {
	KP_OPT_APIKEY_FILE = 0x1201,
	KP_OPT_VERBOSE,
	KP_OPT_UNIT,
	KP_OPT_KEY_RING,
};
/* The options of every kp command (the kp ones, the common ones) and its common help: the
 * common options a kp command takes, ibmcloud kp's -i and -o among them; password and card
 * options are accepted but not listed. */
extern const struct cli_opt kp_common_opts[];

/* The kp options, then the common ones (cli_common_opt). KY_ERR_USAGE (printed). */
int kp_common_opt(int opt, const char *arg) KY_WUR;
/* Refuses an ibmcloud kp option that kyok kp does not offer, by name, with the reason:
 * prints "error: <name>: this ibmcloud kp option is not offered by kyok kp: <why>" and
 * returns the error code KY_ERR_KP_OPTION_NOT_OFFERED (its exit status is KY_EXIT_USAGE). */
int kp_refuse_opt(const char *name, const char *why);
/* Reasons shared by several commands. */
#define KP_WHY_SECRET_ARGV                                                                      \
	"key material on the command line is seen by every user of this host (ps, /proc): put " \
	"the raw bytes in a file and give --payload-file FILE"
#define KP_WHY_IMPORT_TOKEN                                                               \
	"kyok kp takes a key encrypted to the import token on key create only: give new " \
	"material here with --payload-file FILE (raw bytes, over TLS)"
/* The instance ID kp_load compares with the instance's (pure): 0, or
 * KY_ERR_KP_INSTANCE_MISMATCH when want is set and differs. */
int kp_instance_check(const char *have, const char *want) KY_WUR;
/* Prints usage, the lines of opts and the common kp options on stdout. */
void kp_print_help(const char *usage, const struct cli_opt *opts);

/* Key ring IDs go into URL paths and headers: letters, digits and '-', 2 to 100 (Key
 * Protect's rule). Pure. */
bool kp_ring_id_ok(const char *id);
/* Loads the instance and checks -i/--instance-ID or $KP_INSTANCE_ID against it, as the first
 * request does; for commands that send none. 0, or the error (printed). */
int kp_instance_load(void) KY_WUR;

/* Key ids and aliases go into URL paths: letters, digits, '-', '_', 1 to 90. Pure. */
bool kp_key_id_ok(const char *id);
/* Exactly one operand (the key id) after getopt: *id set, or KY_ERR_USAGE (printed). */
int kp_key_operand(int argc, char **argv, const char **id) KY_WUR;

struct kp_reply {
	long status;
	struct ky_buf body;
	json_t *json; /* the body parsed, NULL when empty or not JSON */
	const struct cli_unit *unit;
	bool token_refused; /* the token service refused the API key (status 4xx) */
	bool replayed;      /* the unit had carried the request out already: its kept reply */
	bool sent;          /* transport failure after some of the request went out */
};
/* Cleanses every string of the reply (it may hold key material) and frees it. */
void kp_reply_release(struct kp_reply *rep);

/* One API request to path (e.g. "/api/v2/keys?limit=10"). body (may be NULL) is sent as
 * ctype; prefer (may be NULL) is the Prefer header. Tries the units in instance.json order
 * from --unit, units that failed in the last minute last: a connection failure, a timeout
 * or an HTTP 5xx moves on to the next one. A request that changes something carries one
 * request id (Idempotency-Key) to every unit it is sent to, so it is carried out once.
 * Returns 0 with rep filled when a unit answered below 500, or when every unit answered 5xx
 * (rep holds the last answer); KY_ERR_UNREACHABLE and others printed. The token is fetched
 * on first use and kept for the process. */
int kp_request(const char *method, const char *path, const char *ctype, const json_t *body,
               const char *prefer, struct kp_reply *rep) KY_WUR;
/* kp_request, then status check: 2xx -> 0; else the API's error is printed as
 * "error: <subject>: <errorMsg>: <reason>" and the exit status returned (rep released). */
int kp_call(const char *method, const char *path, const char *ctype, const json_t *body,
            const char *prefer, const char *subject, struct kp_reply *rep);

/* kp_call for the Key Protect features that a unit may not have (key rings, aliases, import
 * tokens, registrations): a unit without the endpoint (HTTP 404 "no such endpoint", or 405)
 * is reported as "error: <subject>: the instance's crypto units do not offer this Key
 * Protect feature: ..." naming the feature, the request and the unit; anything else as
 * kp_call does. */
int kp_call_feature(const char *method, const char *path, const char *ctype, const json_t *body,
                    const char *subject, const char *feature, struct kp_reply *rep);

/* Exit status for an API error: the kyok error code named by the reason, else by HTTP
 * status (400/404/413/422 input, 401/403 refused, 409/410 state, 5xx unit). Pure. */
int kp_exit_for(long status, const char *code);

/* The string member key of o, or "" (never NULL). Pure. */
const char *kp_json_str(const json_t *o, const char *key);

/* cli_print_json that cleanses what it printed (replies may hold key material). */
void kp_print_json(json_t *j);

/* Overwrites every string value inside j (secrets in request or reply bodies). */
void kp_json_cleanse(json_t *j);

/* Reads a file of at most max bytes into out (cleansed by ky_buf_free); errors printed
 * with the flag that named it. Empty files are refused. */
int kp_file_read(const char *path, const char *flag, size_t max, struct ky_buf *out) KY_WUR;
/* Writes a 0600 file atomically; errors printed. */
int kp_file_write(const char *path, const void *p, size_t n) KY_WUR;

/* Frees the connection pool and cleanses the token (kyok kp calls it before exit). */
void kp_close(void);

#endif
