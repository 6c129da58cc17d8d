/* The key-management API client: API key -> token (POST /identity/token, as the Key
 * Protect SDKs' IamAuthenticator does), then requests under /api/v2 with the token and the
 * instance id (Bluemix-Instance). One libcurl handle per process, so connections stay open
 * between requests (keep-alive). Tokens from one unit are valid on every unit of the
 * instance.
 *
 * Size: the client and what every kp command shares with it (options, files, JSON, the
 * errors its replies map to) stay in one file: the client reads the option state (kp_o:
 * --unit, --apikey-file, --instance-ID, --verbose) and the error mapping reads its replies,
 * so either half would need the other's internals.
 *
 * Failover: units are tried in instance.json order from --unit, those that failed in the
 * last minute last (cli/failover.c). A unit that cannot be reached, does not answer in time
 * or answers 5xx hands over to the next one. A request that changes something (anything but
 * GET, HEAD, wrap, unwrap, rewrap) carries a request id made here (Idempotency-Key), the same
 * on every unit it goes to: a unit that finds the id already carried out answers with the
 * reply kept then, so the change happens once however many units it was sent to.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/failover.h"
#include "cli/http.h"
#include "cli/kp_client.h"
#include "kyok/crypto.h"
#include "kyok/err.h"

#define KP_BODY_MAX         (8 * 1024 * 1024)
#define KP_REQUEST_ID_BYTES 16
#define KP_APIKEY_MAX       512
#define KP_TOKEN_MAX        8192
#define KP_APIKEY_FILE_MAX  4096

struct kp_opts kp_o;

static struct {
	bool loaded;
	struct cli_instance inst;
	CURL *h;
	char errbuf[CURL_ERROR_SIZE]; /* curl's detail of a failed transfer */
	char *token;                  /* ky_secret_alloc(KP_TOKEN_MAX) */
	char source[600];             /* where the API key came from, for messages */
	size_t next;                  /* index of the unit to try first */
	long connect_s, total_s;
	bool order_hint; /* unit-failures may reorder the units (not with --unit) */
} kp_s;

/* ---- options ---- */

const struct cli_opt kp_common_opts[] = {
    {"apikey-file", KP_OPT_APIKEY_FILE, CLI_ARG_REQUIRED, "FILE",
     "API key file (from 'kyok tke apikey-create'); default $KYOK_APIKEY_FILE, else the key "
     "itself in $KYOK_APIKEY"},
    {"unit", KP_OPT_UNIT, CLI_ARG_REQUIRED, "N",
     "try crypto unit N first (default: the first, a unit that failed in the last minute "
     "last); the others are tried in turn when a unit fails"},
    CLI_OPT_ROW_CACERT,
    {"verbose", KP_OPT_VERBOSE, CLI_ARG_NONE, NULL,
     "say which crypto unit served, and each failover"},
    {"instance-ID", 'i', CLI_ARG_REQUIRED, "ID",
     "refuse to run unless ID is the instance's id (as is $KP_INSTANCE_ID when set)"},
    {"instance-id", 'i', CLI_ARG_REQUIRED, NULL, NULL},
    {"key-ring", KP_OPT_KEY_RING, CLI_ARG_REQUIRED, "RING",
     "the key ring (header X-Kms-Key-Ring): keys are created in it, listed from it, and must "
     "be in it to be acted on"},
    {"output", 'o', CLI_ARG_REQUIRED, "table|json", "output format (default table)"},
    CLI_OPT_ROW_YES,
    CLI_OPT_ROW_INSTANCE,
    CLI_OPT_ROW_TIMEOUT,
    CLI_OPT_ROW_HELP,
    {"password-file", CLI_OPT_PASSWORD_FILE, CLI_ARG_REQUIRED, NULL, NULL},
    {"password-fd", CLI_OPT_PASSWORD_FD, CLI_ARG_REQUIRED, NULL, NULL},
    {"card-pin-file", CLI_OPT_CARD_PIN_FILE, CLI_ARG_REQUIRED, NULL, NULL},
    {"card-pin-fd", CLI_OPT_CARD_PIN_FD, CLI_ARG_REQUIRED, NULL, NULL},
    {"card-wait", CLI_OPT_CARD_WAIT, CLI_ARG_REQUIRED, NULL, NULL},
    CLI_OPT_END};

int kp_common_opt(int opt, const char *arg)
{
	char *end;
	long v;

	switch (opt) {
	case KP_OPT_APIKEY_FILE:
		if (arg[0] == '\0')
			return cli_err(KY_ERR_USAGE, cli_cmd_name(), "--apikey-file needs a path");
		kp_o.apikey_file = arg;
		return 0;
	case KP_OPT_VERBOSE:
		kp_o.verbose = true;
		return 0;
	case KP_OPT_UNIT:
		errno = 0;
		v = strtol(arg, &end, 10);
		if (errno != 0 || end == arg || *end != '\0' || v < 1 || v > 16) {
			cli_fail(KY_ERR_USAGE, cli_cmd_name(),
			         "--unit takes a crypto unit number, not '%s'", arg);
			return KY_ERR_USAGE;
		}
		kp_o.unit = (int)v;
		return 0;
	case 'i':
		if (arg[0] == '\0')
			return cli_err(KY_ERR_USAGE, cli_cmd_name(),
			               "-i/--instance-ID needs an ID");
		kp_o.instance_id = arg;
		return 0;
	case KP_OPT_KEY_RING:
		if (!kp_ring_id_ok(arg))
			return cli_err(
			    KY_ERR_USAGE, "--key-ring",
			    "'%.100s' is not a key ring ID (2 to 100 letters, digits, '-')", arg);
		kp_o.key_ring = arg;
		return 0;
	case 'o':
		/* -o json, as ibmcloud kp spells --output json (it accepts JSON too) */
		return cli_common_opt(CLI_OPT_OUTPUT, strcasecmp(arg, "json") == 0 ? "json" : arg);
	default:
		return cli_common_opt(opt, arg);
	}
}

bool kp_ring_id_ok(const char *id)
{
	size_t n = strlen(id);

	if (n < 2 || n > 100)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') ||
		      (id[i] >= '0' && id[i] <= '9') || id[i] == '-'))
			return false;
	return true;
}

int kp_refuse_opt(const char *name, const char *why)
{
	return cli_err(KY_ERR_KP_OPTION_NOT_OFFERED, name, "%s", why);
}

int kp_instance_check(const char *have, const char *want)
{
	if (want == NULL || want[0] == '\0' || strcmp(have, want) == 0)
		return 0;
	return KY_ERR_KP_INSTANCE_MISMATCH;
}

void kp_print_help(const char *usage, const struct cli_opt *opts)
{
	cli_opts_help(stdout, usage, opts, kp_common_opts);
}

bool kp_key_id_ok(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > 90)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return false;
	}
	return true;
}

int kp_key_operand(int argc, char **argv, const char **id)
{
	if (optind >= argc) {
		cli_fail(KY_ERR_USAGE, cli_cmd_name(), "give the key ID: see '%s --help'",
		         cli_cmd_name());
		return KY_ERR_USAGE;
	}
	if (optind + 1 < argc) {
		cli_fail(KY_ERR_USAGE, cli_cmd_name(), "unexpected argument '%s': see '%s --help'",
		         argv[optind + 1], cli_cmd_name());
		return KY_ERR_USAGE;
	}
	if (!kp_key_id_ok(argv[optind])) {
		cli_fail(
		    KY_ERR_USAGE, cli_cmd_name(),
		    "'%.100s' is not a key ID (letters, digits, '-', '_'; 'kyok kp keys' lists "
		    "them)",
		    argv[optind]);
		return KY_ERR_USAGE;
	}
	*id = argv[optind];
	return 0;
}

/* ---- files ---- */

int kp_file_read(const char *path, const char *flag, size_t max, struct ky_buf *out)
{
	int r = ky_file_read(path, max, out);
	char subject[600];

	snprintf(subject, sizeof(subject), "%s %s", flag, path);
	if (r == KY_ERR_TOO_LARGE)
		return cli_err(r, subject, "at most %zu bytes", max);
	if (r == KY_ERR_NOT_FOUND)
		return cli_err(r, subject, "no such file");
	if (r != 0)
		return cli_err(r, subject, "%s", strerror(errno));
	if (out->len == 0) {
		cli_fail(KY_ERR_MALFORMED, subject, "the file is empty");
		return KY_ERR_MALFORMED;
	}
	return 0;
}

int kp_file_write(const char *path, const void *p, size_t n)
{
	int r = ky_file_write_atomic(path, p, n, 0600);

	if (r != 0)
		cli_fail(r, path, "cannot write the file: %s", strerror(errno));
	return r;
}

/* ---- JSON ---- */

void kp_json_cleanse(json_t *j)
{
	const char *key;
	json_t *v;
	size_t i;

	if (json_is_string(j)) {
		OPENSSL_cleanse((char *)json_string_value(j), json_string_length(j));
	} else if (json_is_object(j)) {
		json_object_foreach(j, key, v) kp_json_cleanse(v);
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, v) kp_json_cleanse(v);
	}
}

const char *kp_json_str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s != NULL ? s : "";
}

void kp_print_json(json_t *j)
{
	char *s;

	if (j == NULL)
		return;
	s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	if (s != NULL) {
		fputs(s, stdout);
		fputc('\n', stdout);
		fflush(stdout);
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
	if (j->refcount <= 1)
		kp_json_cleanse(j);
	json_decref(j);
}

void kp_reply_release(struct kp_reply *rep)
{
	if (rep == NULL)
		return;
	kp_json_cleanse(rep->json);
	json_decref(rep->json);
	ky_buf_free(&rep->body);
	memset(rep, 0, sizeof(*rep));
}

/* ---- errors ---- */

int kp_exit_for(long status, const char *code)
{
	char slug[80];
	size_t n;

	/* kyok's reason codes are its error slugs in Key Protect's style: "not-found" is
	 * "NOT_FOUND_ERR". */
	if (code != NULL && (n = strlen(code)) > 4 && n < sizeof(slug) &&
	    strcmp(code + n - 4, "_ERR") == 0) {
		for (size_t i = 0; i < n - 4; i++)
			slug[i] = code[i] == '_' ? '-' : (char)tolower((unsigned char)code[i]);
		slug[n - 4] = '\0';
		code = slug;
	}
	if (code != NULL) {
		int e = ky_err_from_slug(code);
		if (e != KY_ERR_INTERNAL || strcmp(code, "internal") == 0)
			return ky_err_exit(e);
	}
	switch (status) {
	case 400:
	case 404:
	case 413:
	case 422:
		return KY_EXIT_INPUT;
	case 401:
	case 403:
		return KY_EXIT_REFUSED;
	case 409:
	case 410:
		return KY_EXIT_STATE;
	default:
		return status >= 500 ? KY_EXIT_UNIT : KY_EXIT_INTERNAL;
	}
}

/* Printable copy of an untrusted string, at most n characters. */
static void kp_clean_text(const char *s, char *out, size_t outlen, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; s != NULL && s[i] != '\0' && i < n && k + 1 < outlen; i++)
		out[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	out[k] = '\0';
}

/* "error: <subject>: <errorMsg>: <reason message>", without saying a part twice: kyok's
 * errorMsg is "<HTTP status text>: <message>" and its reason "<message>[: <detail>]". */
static void kp_error_line(const char *subject, const char *msg, const char *reason)
{
	const char *tail = strstr(msg, ": ");

	if (reason == NULL || reason[0] == '\0' || strcmp(msg, reason) == 0 ||
	    (strlen(msg) > strlen(reason) &&
	     strcmp(msg + strlen(msg) - strlen(reason), reason) == 0))
		fprintf(stderr, "error: %s: %s\n", subject, msg);
	else if (strncmp(reason, msg, strlen(msg)) == 0)
		fprintf(stderr, "error: %s: %s\n", subject, reason);
	else if (tail != NULL && strncmp(reason, tail + 2, strlen(tail + 2)) == 0)
		fprintf(stderr, "error: %s: %.*s: %s\n", subject, (int)(tail - msg), msg, reason);
	else
		fprintf(stderr, "error: %s: %s: %s\n", subject, msg, reason);
}

/* The API's error: KP {"resources": [{"errorMsg", "reasons": [{"code", "message"}]}]}, or
 * the token service's {"errorCode", "errorMessage"}. */
/* Refusals whose remedy is a kyok kp command: the unit's text names the API call (it answers
 * every client), the CLI adds its own command. */
static const struct {
	const char *code;
	const char *fix;
} kp_fixes[] = {
    {"DUAL_AUTH_REQUIRED_ERR",
     "another user (another API key, Writer or Manager) authorises the deletion first with "
     "'kyok kp key-schedule-delete ID'; then delete it within 7 days"},
};

static void kp_print_fix(const char *code)
{
	for (size_t i = 0; code != NULL && i < sizeof(kp_fixes) / sizeof(kp_fixes[0]); i++)
		if (strcmp(code, kp_fixes[i].code) == 0)
			fprintf(stderr, "fix: %s\n", kp_fixes[i].fix);
}

static int kp_fail_reply(const char *subject, const struct kp_reply *rep)
{
	const json_t *res = json_array_get(json_object_get(rep->json, "resources"), 0);
	const json_t *reason = json_array_get(json_object_get(res, "reasons"), 0);
	const char *msg = json_string_value(json_object_get(res, "errorMsg"));
	const char *code = json_string_value(json_object_get(reason, "code"));
	const char *rmsg = json_string_value(json_object_get(reason, "message"));
	char a[300], b[600], c[80];

	if (msg == NULL && rmsg == NULL) {
		/* the token service: IAM's errorCode, kyok's own code beside it */
		msg = json_string_value(json_object_get(rep->json, "errorMessage"));
		code = json_string_value(json_object_get(rep->json, "kyokCode"));
		if (code == NULL)
			code = json_string_value(json_object_get(rep->json, "errorCode"));
	}
	if (msg == NULL && rmsg == NULL) {
		fprintf(stderr, "error: %s: HTTP %ld from crypto unit %d\n", subject, rep->status,
		        rep->unit != NULL ? rep->unit->number : 0);
		return kp_exit_for(rep->status, NULL);
	}
	kp_clean_text(msg != NULL ? msg : rmsg, a, sizeof(a), 256);
	kp_clean_text(rmsg, b, sizeof(b), 512);
	kp_clean_text(code, c, sizeof(c), 64);
	kp_error_line(subject, a, rmsg != NULL ? b : NULL);
	kp_print_fix(code);
	if (kp_o.verbose)
		fprintf(stderr, "  (HTTP %ld, reason %s, crypto unit %d)\n", rep->status,
		        c[0] != '\0' ? c : "-", rep->unit != NULL ? rep->unit->number : 0);
	return kp_exit_for(rep->status, code);
}

/* ---- HTTP ---- */

static size_t kp_on_body(char *p, size_t size, size_t nmemb, void *ud)
{
	struct ky_buf *b = ud;
	size_t n = size * nmemb;

	if (b->len + n > KP_BODY_MAX || ky_buf_append(b, p, n) != 0)
		return 0;
	return n;
}

static int kp_load(void)
{
	int r;

	if (kp_s.loaded)
		return 0;
	if ((r = cli_instance_load(&kp_s.inst)) != 0)
		return r;
	if (kp_s.inst.nunits == 0)
		return cli_err(KY_ERR_CONFIG, kp_s.inst.dir, "instance.json lists no crypto unit");
	{
		const char *env = getenv("KP_INSTANCE_ID");
		const char *want = kp_o.instance_id != NULL ? kp_o.instance_id : env;
		if ((r = kp_instance_check(kp_s.inst.id, want)) != 0)
			return cli_err(
			    r, kp_o.instance_id != NULL ? "-i/--instance-ID" : "$KP_INSTANCE_ID",
			    "'%.100s' is not this instance: %s/instance.json is instance '%s'",
			    want, kp_s.inst.dir, kp_s.inst.id);
	}
	kp_s.next = 0;
	kp_s.order_hint = kp_o.unit == 0;
	{
		char why[200];
		if ((r = cli_timeouts(&kp_s.connect_s, &kp_s.total_s, why, sizeof(why))) != 0)
			return cli_err(r, cli_cmd_name(), "%s", why);
	}
	if (kp_o.unit > 0) {
		bool found = false;
		for (size_t i = 0; i < kp_s.inst.nunits; i++)
			if (kp_s.inst.units[i].number == kp_o.unit) {
				kp_s.next = i;
				found = true;
			}
		if (!found)
			return cli_err(KY_ERR_USAGE, "--unit", "the instance has no crypto unit %d",
			               kp_o.unit);
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || (kp_s.h = cli_http_new()) == NULL)
		return cli_err(KY_ERR_INTERNAL, NULL, "cannot start the HTTP client");
	kp_s.loaded = true;
	return 0;
}

int kp_instance_load(void)
{
	return kp_load();
}

void kp_close(void)
{
	if (kp_s.h != NULL)
		curl_easy_cleanup(kp_s.h);
	ky_secret_free(kp_s.token, KP_TOKEN_MAX);
	memset(&kp_s, 0, sizeof(kp_s));
}

static void kp_slist_free(struct curl_slist *l)
{
	for (struct curl_slist *p = l; p != NULL; p = p->next)
		OPENSSL_cleanse(p->data, strlen(p->data));
	curl_slist_free_all(l);
}

static int kp_slist_add(struct curl_slist **l, const char *line)
{
	struct curl_slist *n = curl_slist_append(*l, line);

	if (n == NULL)
		return KY_ERR_NOMEM;
	*l = n;
	return 0;
}

static size_t kp_on_header(char *p, size_t size, size_t nmemb, void *ud)
{
	struct kp_reply *rep = ud;
	size_t n = size * nmemb, k = strlen("Kyok-Replayed:");

	if (n >= k && strncasecmp(p, "Kyok-Replayed:", k) == 0)
		rep->replayed = true;
	return n;
}

/* One exchange with unit u. Transport failure: KY_ERR_UNREACHABLE with why, and rep->sent
 * when some of the request went out (the unit may have acted on it). */
static int kp_http(const struct cli_unit *u, const char *method, const char *path,
                   struct curl_slist *hdrs, const char *body, size_t n, struct kp_reply *rep,
                   char *why, size_t whylen)
{
	CURL *h = kp_s.h;
	char url[600];
	size_t base = strlen(u->url);
	CURLcode cc;

	memset(rep, 0, sizeof(*rep));
	rep->unit = u;
	while (base > 0 && u->url[base - 1] == '/')
		base--;
	if (snprintf(url, sizeof(url), "%.*s%s", (int)base, u->url, path) >= (int)sizeof(url)) {
		snprintf(why, whylen, "URL too long");
		return KY_ERR_USAGE;
	}
	curl_easy_reset(h); /* options only: open connections stay */
	if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, kp_s.connect_s) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_TIMEOUT, kp_s.total_s) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_NOPROXY, "localhost,127.0.0.1,::1") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, kp_on_body) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEDATA, &rep->body) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, kp_on_header) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HEADERDATA, rep) != CURLE_OK ||
	    cli_http_tls(h, kp_s.errbuf) != 0) {
		snprintf(why, whylen, "cannot set up the HTTP request");
		return KY_ERR_INTERNAL;
	}
	if (strcmp(method, "GET") == 0) {
		cc = curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	} else if (body == NULL && strcmp(method, "POST") != 0) {
		/* DELETE: no body at all */
		cc = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	} else {
		cc = curl_easy_setopt(h, CURLOPT_POSTFIELDS, body != NULL ? body : "");
		if (cc == CURLE_OK)
			cc = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
			                      (curl_off_t)(body != NULL ? n : 0));
		if (cc == CURLE_OK && strcmp(method, "POST") != 0)
			cc = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	}
	if (cc != CURLE_OK) {
		snprintf(why, whylen, "cannot set up the HTTP request");
		return KY_ERR_INTERNAL;
	}
	cc = curl_easy_perform(h);
	if (cc != CURLE_OK) {
		long sent = 0;
		/* Nothing sent (no connection, TLS handshake failed): the unit never saw it. */
		rep->sent =
		    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &sent) != CURLE_OK || sent > 0;
		ky_buf_free(&rep->body);
		if (cc == CURLE_WRITE_ERROR) {
			snprintf(why, whylen, "%s: reply larger than %d bytes", url, KP_BODY_MAX);
			return KY_ERR_BAD_REPLY;
		}
		return cli_http_failure(cc, url, kp_s.errbuf, why, whylen);
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rep->status);
	if (rep->body.len > 0)
		rep->json = json_loadb((const char *)rep->body.data, rep->body.len, 0, NULL);
	return 0;
}

/* ---- API key and token ---- */

/* Trims whitespace at both ends of p[0..n), in place; returns the new length. */
static size_t kp_trim(char *p, size_t n)
{
	size_t s = 0;

	while (n > 0 &&
	       (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	while (s < n && (p[s] == ' ' || p[s] == '\t' || p[s] == '\n' || p[s] == '\r'))
		s++;
	memmove(p, p + s, n - s);
	return n - s;
}

/* The API key: from --apikey-file / $KYOK_APIKEY_FILE (a JSON file with "apikey", as
 * apikey-create writes it, or the key alone on one line), else $KYOK_APIKEY. */
static int kp_apikey(char **out, char *source, size_t sourcelen)
{
	int r = KY_ERR_INTERNAL;
	const char *path = kp_o.apikey_file != NULL ? kp_o.apikey_file : getenv("KYOK_APIKEY_FILE");
	const char *env = getenv("KYOK_APIKEY");
	struct ky_buf b = {0};
	char *s = NULL;
	size_t n;

	*out = NULL;
	if ((s = ky_secret_alloc(KP_APIKEY_MAX)) == NULL)
		return cli_err(KY_ERR_NOMEM, NULL, NULL);
	if (path != NULL && path[0] != '\0') {
		json_t *j;
		const char *k;

		snprintf(source, sourcelen, "API key file %s", path);
		if ((r = cli_check_private("API key file", path)) != 0)
			goto out;
		if ((r = kp_file_read(path, "--apikey-file", KP_APIKEY_FILE_MAX, &b)) != 0)
			goto out;
		r = KY_ERR_MALFORMED;
		j = json_loadb((const char *)b.data, b.len, 0, NULL);
		if (j != NULL) {
			k = json_string_value(json_object_get(j, "apikey"));
			n = k != NULL ? strlen(k) : 0;
			if (n > 0 && n < KP_APIKEY_MAX)
				memcpy(s, k, n + 1);
			kp_json_cleanse(j);
			json_decref(j);
			if (n == 0 || n >= KP_APIKEY_MAX) {
				cli_fail(r, source, "JSON without a usable \"apikey\" field");
				goto out;
			}
		} else {
			n = kp_trim((char *)b.data, b.len);
			if (n == 0 || n >= KP_APIKEY_MAX || memchr(b.data, '\n', n) != NULL ||
			    memchr(b.data, '\0', n) != NULL) {
				cli_fail(r, source,
				         "not an API key file: JSON with \"apikey\" (as 'kyok tke "
				         "apikey-create' writes it), or the key alone on one line");
				goto out;
			}
			memcpy(s, b.data, n);
			s[n] = '\0';
		}
	} else if (env != NULL && env[0] != '\0') {
		snprintf(source, sourcelen, "API key in $KYOK_APIKEY");
		n = strlen(env);
		if (n >= KP_APIKEY_MAX) {
			r = cli_err(KY_ERR_MALFORMED, source, "too long");
			goto out;
		}
		memcpy(s, env, n + 1);
	} else {
		r = KY_ERR_USAGE;
		cli_fail(
		    r, cli_cmd_name(),
		    "no API key: give --apikey-file FILE (written by 'kyok tke apikey-create'), "
		    "or set KYOK_APIKEY_FILE");
		goto out;
	}
	for (const char *p = s; *p != '\0'; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
			r = KY_ERR_MALFORMED;
			cli_fail(r, source, "the API key has characters an API key never has");
			goto out;
		}
	*out = s;
	s = NULL; /* transferred */
	r = 0;
out:
	ky_secret_free(s, KP_APIKEY_MAX);
	ky_buf_free(&b);
	return r;
}

/* Form body "grant_type=...&apikey=..." (percent-encoded) in the secure heap. */
static int kp_token_form(const char *apikey, char **out, size_t *cap)
{
	static const char hex[] = "0123456789ABCDEF";
	const char *prefix = "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey=";
	size_t need = strlen(prefix) + 3 * strlen(apikey) + 1, k;
	char *s = ky_secret_alloc(need);

	*out = NULL;
	if (s == NULL)
		return KY_ERR_NOMEM;
	memcpy(s, prefix, strlen(prefix));
	k = strlen(prefix);
	for (const char *p = apikey; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			s[k++] = (char)c;
		} else {
			s[k++] = '%';
			s[k++] = hex[c >> 4];
			s[k++] = hex[c & 15];
		}
	}
	s[k] = '\0';
	*out = s;
	*cap = need;
	return 0;
}

/* POST /identity/token on u. 0 with kp_s.token set, or 0 with rep filled when the token
 * service refused the key (4xx: rep->token_refused); KY_ERR_UNREACHABLE when u cannot be
 * reached or answered 5xx (then rep holds the answer); other errors printed. */
static int kp_token_at(const struct cli_unit *u, struct kp_reply *rep, char *why, size_t whylen)
{
	int r = KY_ERR_INTERNAL;
	char *apikey = NULL, *form = NULL;
	size_t cap = 0;
	struct curl_slist *hdrs = NULL;
	const char *tok;

	if ((r = kp_apikey(&apikey, kp_s.source, sizeof(kp_s.source))) != 0)
		return r;
	if ((r = kp_token_form(apikey, &form, &cap)) != 0 ||
	    (r = kp_slist_add(&hdrs, "Content-Type: application/x-www-form-urlencoded")) != 0 ||
	    (r = kp_slist_add(&hdrs, "Accept: application/json")) != 0 ||
	    (r = kp_slist_add(&hdrs, "Expect:")) != 0) {
		cli_fail(r, NULL, NULL);
		goto out;
	}
	if ((r = kp_http(u, "POST", "/identity/token", hdrs, form, strlen(form), rep, why,
	                 whylen)) != 0) {
		if (r != KY_ERR_UNREACHABLE)
			cli_fail(r, NULL, "%s", why);
		goto out;
	}
	if (rep->status >= 500) {
		snprintf(why, whylen, "token service answered HTTP %ld", rep->status);
		r = KY_ERR_UNREACHABLE;
		goto out;
	}
	if (rep->status != 200) {
		rep->token_refused = true;
		r = 0;
		goto out;
	}
	tok = json_string_value(json_object_get(rep->json, "access_token"));
	if (tok == NULL || strlen(tok) == 0 || strlen(tok) >= KP_TOKEN_MAX) {
		r = KY_ERR_BAD_REPLY;
		cli_fail(r, "token service", "crypto unit %d answered without an access_token",
		         u->number);
		goto out;
	}
	for (const char *p = tok; *p != '\0'; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
			r = KY_ERR_BAD_REPLY;
			cli_fail(r, "token service", "the access token is not printable");
			goto out;
		}
	if (kp_s.token == NULL && (kp_s.token = ky_secret_alloc(KP_TOKEN_MAX)) == NULL) {
		r = KY_ERR_NOMEM;
		cli_fail(r, NULL, NULL);
		goto out;
	}
	memcpy(kp_s.token, tok, strlen(tok) + 1);
	if (kp_o.verbose)
		fprintf(stderr, "token from crypto unit %d (%s)\n", u->number, u->zone);
	kp_reply_release(rep);
	r = 0;
out:
	if (r != 0 && r != KY_ERR_UNREACHABLE)
		kp_reply_release(rep);
	kp_slist_free(hdrs);
	ky_secret_free(form, cap);
	ky_secret_free(apikey, KP_APIKEY_MAX);
	return r;
}

/* ---- requests ---- */

static int kp_api_headers(const char *ctype, const char *prefer, const char *rid,
                          struct curl_slist **hdrs)
{
	int r = KY_ERR_NOMEM;
	char line[KP_TOKEN_MAX + 64];
	uint8_t cid[8];
	char cidhex[17];

	*hdrs = NULL;
	snprintf(line, sizeof(line), "Authorization: Bearer %s", kp_s.token);
	r = kp_slist_add(hdrs, line);
	OPENSSL_cleanse(line, sizeof(line));
	if (r != 0)
		return r;
	snprintf(line, sizeof(line), "Bluemix-Instance: %s", kp_s.inst.id);
	if ((r = kp_slist_add(hdrs, line)) != 0 ||
	    (r = kp_slist_add(hdrs, "Accept: application/json")) != 0 ||
	    (r = kp_slist_add(hdrs, "Expect:")) != 0)
		return r;
	if (ky_random(cid, sizeof(cid)) == 0) {
		ky_hex_encode(cid, sizeof(cid), cidhex);
		snprintf(line, sizeof(line), "Correlation-Id: kyok-kp-%s", cidhex);
		if ((r = kp_slist_add(hdrs, line)) != 0)
			return r;
	}
	if (ctype != NULL) {
		snprintf(line, sizeof(line), "Content-Type: %s", ctype);
		if ((r = kp_slist_add(hdrs, line)) != 0)
			return r;
	}
	if (kp_o.key_ring != NULL) {
		snprintf(line, sizeof(line), "X-Kms-Key-Ring: %s", kp_o.key_ring);
		if ((r = kp_slist_add(hdrs, line)) != 0)
			return r;
	}
	if (prefer != NULL) {
		snprintf(line, sizeof(line), "Prefer: %s", prefer);
		if ((r = kp_slist_add(hdrs, line)) != 0)
			return r;
	}
	if (rid != NULL) {
		snprintf(line, sizeof(line), "Idempotency-Key: %s", rid);
		if ((r = kp_slist_add(hdrs, line)) != 0)
			return r;
	}
	return 0;
}

/* The order to try the units in: from kp_s.next, recently failed ones last (unless --unit). */
static void kp_order(size_t *order)
{
	int64_t failed[sizeof(kp_s.inst.units) / sizeof(kp_s.inst.units[0])];
	bool have = false;

	if (kp_s.order_hint) {
		int r = cli_failures_load(&kp_s.inst, failed);
		have = r == 0;
		if (r != 0 && kp_o.verbose)
			fprintf(stderr, "%s/unit-failures: unreadable (%s): units tried in order\n",
			        kp_s.inst.dir, ky_err_message(r));
	}
	cli_unit_order(kp_s.inst.nunits, kp_s.next, have ? failed : NULL, (int64_t)time(NULL),
	               order);
}

/* Notes in unit-failures that unit idx failed now (failed) or served (!failed). */
static void kp_note(size_t idx, bool failed)
{
	int r = cli_failure_note(&kp_s.inst, idx, failed ? (int64_t)time(NULL) : 0);

	if (r != 0 && kp_o.verbose)
		fprintf(stderr, "%s/unit-failures: cannot note crypto unit %d (%s)\n",
		        kp_s.inst.dir, kp_s.inst.units[idx].number, ky_err_message(r));
}

int kp_request(const char *method, const char *path, const char *ctype, const json_t *body,
               const char *prefer, struct kp_reply *rep)
{
	int r = KY_ERR_INTERNAL;
	char *text = NULL, why[700] = "", rid[8 + 2 * KP_REQUEST_ID_BYTES + 1] = "";
	struct kp_reply last = {0};
	size_t n, order[sizeof(kp_s.inst.units) / sizeof(kp_s.inst.units[0])];
	bool safe = cli_api_request_safe(method, path), maybe_done = false;

	memset(rep, 0, sizeof(*rep));
	if ((r = kp_load()) != 0)
		return r;
	n = kp_s.inst.nunits;
	kp_order(order);
	if (!safe) {
		uint8_t raw[KP_REQUEST_ID_BYTES];
		if ((r = ky_random(raw, sizeof(raw))) != 0)
			return cli_err(r, NULL, "cannot make a request id");
		memcpy(rid, "kyok-kp-", 8);
		ky_hex_encode(raw, sizeof(raw), rid + 8);
	}
	if (body != NULL && (text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL)
		return cli_err(KY_ERR_NOMEM, NULL, NULL);
	r = KY_ERR_UNREACHABLE;
	for (size_t t = 0; t < n; t++) {
		size_t idx = order[t];
		const struct cli_unit *u = &kp_s.inst.units[idx];
		struct curl_slist *hdrs = NULL;
		bool sent = false;

		why[0] = '\0';
		r = 0;
		if (kp_s.token == NULL) {
			r = kp_token_at(u, rep, why, sizeof(why));
			if (r == 0 && rep->token_refused)
				goto out; /* the caller prints the token service's refusal */
			if (r != 0 && r != KY_ERR_UNREACHABLE)
				goto out; /* printed */
		}
		if (r == 0) {
			if ((r = kp_api_headers(body != NULL ? ctype : NULL, prefer,
			                        safe ? NULL : rid, &hdrs)) != 0) {
				kp_slist_free(hdrs);
				cli_fail(r, NULL, NULL);
				goto out;
			}
			r = kp_http(u, method, path, hdrs, text, text != NULL ? strlen(text) : 0,
			            rep, why, sizeof(why));
			kp_slist_free(hdrs);
			if (r != 0 && r != KY_ERR_UNREACHABLE) {
				cli_fail(r, NULL, "%s", why);
				goto out;
			}
			sent = r == 0 || rep->sent;
			if (r == 0 && rep->status >= 500) {
				snprintf(why, sizeof(why), "HTTP %ld", rep->status);
				r = KY_ERR_UNREACHABLE;
			}
		}
		if (r == 0) {
			kp_s.next = idx; /* stay with the unit that serves */
			kp_s.order_hint = false;
			kp_note(idx, false);
			if (kp_o.verbose)
				fprintf(stderr, "served by crypto unit %d (%s, %s)\n", u->number,
				        u->zone, u->url);
			if (kp_o.verbose && rep->replayed)
				fprintf(stderr,
				        "request id %s had been carried out already: this is the "
				        "reply kept then\n",
				        rid);
			goto out;
		}
		/* This unit failed: keep its answer if it gave one, try the next. */
		kp_note(idx, true);
		maybe_done = maybe_done || (sent && !safe);
		if (rep->status >= 500) {
			kp_reply_release(&last);
			last = *rep; /* transferred */
			memset(rep, 0, sizeof(*rep));
		}
		if (kp_o.verbose || t + 1 < n)
			fprintf(stderr, "crypto unit %d (%s): %s%s%s%s\n", u->number, u->zone,
			        why[0] != '\0' ? why : ky_err_message(r),
			        t + 1 < n ? ": trying the next unit" : "",
			        t + 1 < n && sent && !safe ? " with the same request id " : "",
			        t + 1 < n && sent && !safe ? rid : "");
		r = KY_ERR_UNREACHABLE;
	}
	if (last.status != 0) {
		*rep = last; /* transferred: every unit failed, the last answer tells why */
		memset(&last, 0, sizeof(last));
		if (maybe_done)
			fprintf(
			    stderr,
			    "note: request id %s may have been carried out by a unit that did not "
			    "answer: check before you try again\n",
			    rid);
		r = 0;
		goto out;
	}
	if (maybe_done)
		cli_fail(KY_ERR_UNREACHABLE, "kyok kp",
		         "no crypto unit of instance '%s' answered (%zu tried), and the request "
		         "(request id %s) may have been carried out by one that did not answer: "
		         "check the key's state (e.g. 'kyok kp keys') before you try again",
		         kp_s.inst.id, n, rid);
	else
		cli_fail(KY_ERR_UNREACHABLE, "kyok kp",
		         "no crypto unit of instance '%s' answers (%zu tried): is it running "
		         "('kyok status')?",
		         kp_s.inst.id, n);
	r = KY_ERR_UNREACHABLE;
out:
	kp_reply_release(&last);
	if (text != NULL) {
		OPENSSL_cleanse(text, strlen(text));
		free(text);
	}
	return r;
}

int kp_call(const char *method, const char *path, const char *ctype, const json_t *body,
            const char *prefer, const char *subject, struct kp_reply *rep)
{
	int r = kp_request(method, path, ctype, body, prefer, rep);
	int status;

	if (r != 0)
		return ky_err_exit(r); /* printed */
	if (rep->status >= 200 && rep->status < 300 && !rep->token_refused)
		return 0;
	status = kp_fail_reply(rep->token_refused ? kp_s.source : subject, rep);
	kp_reply_release(rep);
	return status;
}

/* A unit's answer to a request for an endpoint it does not have: kyok-unitd answers 404
 * with the reason "no such endpoint", or 405 for a path it knows with another method. A
 * unit without registrations reads GET /api/v2/keys/registrations as a key whose id is
 * "registrations" and refuses it as no UUID (400). */
static bool kp_no_endpoint(const struct kp_reply *rep, const char *path)
{
	const json_t *res = json_array_get(json_object_get(rep->json, "resources"), 0);
	const json_t *reason = json_array_get(json_object_get(res, "reasons"), 0);
	const char *rmsg = json_string_value(json_object_get(reason, "message"));

	return rep->status == 405 ||
	       (rep->status == 404 && rmsg != NULL && strstr(rmsg, "no such endpoint") != NULL) ||
	       (rep->status == 400 && strcmp(path, "/api/v2/keys/registrations") == 0);
}

int kp_call_feature(const char *method, const char *path, const char *ctype, const json_t *body,
                    const char *subject, const char *feature, struct kp_reply *rep)
{
	int r = kp_request(method, path, ctype, body, NULL, rep);
	int status;

	if (r != 0)
		return ky_err_exit(r); /* printed */
	if (rep->status >= 200 && rep->status < 300 && !rep->token_refused)
		return 0;
	if (!rep->token_refused && kp_no_endpoint(rep, path)) {
		status = cli_fail(
		    KY_ERR_KP_NOT_OFFERED, subject, "%s: crypto unit %d answered HTTP %ld to %s %s",
		    feature, rep->unit != NULL ? rep->unit->number : 0, rep->status, method, path);
		kp_reply_release(rep);
		return status;
	}
	status = kp_fail_reply(rep->token_refused ? kp_s.source : subject, rep);
	kp_reply_release(rep);
	return status;
}
