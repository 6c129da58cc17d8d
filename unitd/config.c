/* The unit configuration file: "key = value" lines, '#' comments, blank lines.
 *
 *   instance  = inst-1          required, 1..64 of [A-Za-z0-9._-]
 *   unit      = unit-1          required, same
 *   zone      = zone-a          required, same
 *   listen    = 127.0.0.1:0     optional (this default), host:port, [v6]:port, port 0 = any
 *   data_dir  = /var/lib/kyok   required, created 0700 when missing
 *   port_file = unit.port       optional, receives the bound port
 *   log_file  = unit.log        optional, stderr when absent
 *   store     = sqlite:keys.db  optional, key storage shared by the units of the instance
 *                               (a bare path means sqlite:PATH; postgresql://... or
 *                               postgres://...: a PostgreSQL database, docs/storage.md);
 *                               the key API needs it
 *   key_limit = 5000            optional, keys in the instance, 1..10,000,000
 *   key_cache = N               optional, keys a unit keeps opened, 1..4,000,000 (default
 *                               key_limit, at most 100,000; sizes the secure heap)
 *   api_tls_cert = cert.pem     optional, PEM certificate chain of the HTTPS endpoint
 *   api_tls_key  = key.pem      optional, its PEM private key (both or neither; required
 *                               when listen is not a loopback address)
 *   token_ttl = 3600            optional, lifetime of API access tokens, 1..86400 s
 *   reencipher_batch = 500      optional, records re-enciphered per transaction, 1..100,000
 *   reencipher_pause_ms = 0     optional, pause between re-encipherment batches, 0..60,000 ms
 *                               (keeps a rotation from hogging the disk)
 *   seal = file                 optional, where the seal key lives: file (this default),
 *                               tpm2 or pkcs11 (docs/sealing.md)
 *   tpm2_tcti = swtpm:port=2321 seal = tpm2: how to reach the TPM (a TCTI string);
 *                               optional, the TCTI loader's default when absent
 *   pkcs11_module = PATH        seal = pkcs11: the token's PKCS#11 module, required
 *   pkcs11_token = LABEL        seal = pkcs11: the token's label (1..32), required
 *   pkcs11_key_label = LABEL    seal = pkcs11: label of the seal keys (1..64), optional,
 *                               kyok-seal by default
 *   pkcs11_pin_file = PATH      seal = pkcs11: file holding the user PIN, required
 *                               (a setting of another backend than 'seal' is refused)
 *   threads = N                 optional, threads serving requests, 1..256 (default 8 per
 *                               CPU, at most 128: a request waiting on key storage holds
 *                               its thread)
 *   max_connections = 1000      optional, open connections of all clients, 1..100,000 (also
 *                               bounded by the process's file descriptor limit)
 *   max_connections_per_client = 64
 *                               optional, open connections from one client address,
 *                               0..100,000 (0 = no limit per address: behind a proxy)
 *   idle_timeout = 30           optional, seconds without a byte before a connection is
 *                               closed, 1..3600
 *   body_timeout = 60           optional, seconds from a request's headers to the end of its
 *                               body, 1..3600
 *   header_timeout = 10         optional, seconds from a connection's accept (or the end of
 *                               its previous request) to the end of a request's headers,
 *                               1..3600
 *   anchor_cert = anchor.crt    the instance's unit trust anchor certificate (PEM); must be
 *                               the one sealed in the state (required to start)
 *   identity_cert = identity.crt  this unit's identity certificate issued by the anchor
 *                               (read once, when the state is created)
 *   audit_max_bytes = 67108864  optional, size at which the audit log moves on to a new file,
 *                               4096..1,073,741,824 (the chain goes on across files)
 *   audit_checkpoint_ms = 1000  optional, longest time audit lines wait for a signed
 *                               checkpoint, 10..60,000 ms
 *   store_lock_wait_ms = 10000  optional, how long the unit waits at start for key storage
 *                               that another writer holds locked, 100..600,000 ms
 *   imprint_verifier = HEX      the Ed25519 public key (64 hex digits) of the instance's
 *                               imprint credential; without it the unit accepts no command
 *                               while in imprint mode
 *   policy_pass_interval = 3600 optional, seconds between two passes of the policy pass
 *                               (rotation policies, purge 90 days after deletion), 1..86400
 *   policy_pass_days_ahead = 0  optional, a testing aid: the policy pass's clock runs this
 *                               many days ahead of the system's, 0..36500
 *
 * Relative paths are resolved against the directory of the config file. The parser only
 * parses: it touches no file but the one it reads.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyok/err.h"
#include "unitd/config.h"

enum config_kind {
	CONFIG_ID,
	CONFIG_LISTEN,
	CONFIG_PATH,
	CONFIG_STORE,
	CONFIG_UINT,
	CONFIG_SEAL,
	CONFIG_TEXT, /* printable ASCII, 1..max characters */
	CONFIG_VERIFIER,
};

struct config_key {
	const char *name;
	enum config_kind kind;
	bool required;
	uint32_t min, max; /* CONFIG_UINT */
};

static const struct config_key config_keys[] = {
    {"instance", CONFIG_ID, true, 0, 0},
    {"unit", CONFIG_ID, true, 0, 0},
    {"zone", CONFIG_ID, true, 0, 0},
    {"listen", CONFIG_LISTEN, false, 0, 0},
    {"data_dir", CONFIG_PATH, true, 0, 0},
    {"port_file", CONFIG_PATH, false, 0, 0},
    {"log_file", CONFIG_PATH, false, 0, 0},
    {"store", CONFIG_STORE, false, 0, 0},
    {"key_limit", CONFIG_UINT, false, 1, UNITD_KEY_LIMIT_MAX},
    {"key_cache", CONFIG_UINT, false, 1, UNITD_KEY_CACHE_MAX},
    {"api_tls_cert", CONFIG_PATH, false, 0, 0},
    {"api_tls_key", CONFIG_PATH, false, 0, 0},
    {"token_ttl", CONFIG_UINT, false, UNITD_TOKEN_TTL_MIN, UNITD_TOKEN_TTL_MAX},
    {"reencipher_batch", CONFIG_UINT, false, 1, UNITD_REENC_BATCH_MAX},
    {"reencipher_pause_ms", CONFIG_UINT, false, 0, UNITD_REENC_PAUSE_MAX},
    {"seal", CONFIG_SEAL, false, 0, 0},
    {"tpm2_tcti", CONFIG_TEXT, false, 1, UNITD_TCTI_MAX},
    {"pkcs11_module", CONFIG_PATH, false, 0, 0},
    {"pkcs11_token", CONFIG_TEXT, false, 1, UNITD_TOKEN_LABEL_MAX},
    {"pkcs11_key_label", CONFIG_TEXT, false, 1, UNITD_KEY_LABEL_MAX},
    {"pkcs11_pin_file", CONFIG_PATH, false, 0, 0},
    {"threads", CONFIG_UINT, false, 1, UNITD_THREADS_MAX},
    {"max_connections", CONFIG_UINT, false, 1, UNITD_CONN_MAX},
    {"max_connections_per_client", CONFIG_UINT, false, 0, UNITD_CONN_MAX},
    {"idle_timeout", CONFIG_UINT, false, 1, UNITD_TIMEOUT_MAX},
    {"body_timeout", CONFIG_UINT, false, 1, UNITD_TIMEOUT_MAX},
    {"header_timeout", CONFIG_UINT, false, 1, UNITD_TIMEOUT_MAX},
    {"anchor_cert", CONFIG_PATH, false, 0, 0},
    {"identity_cert", CONFIG_PATH, false, 0, 0},
    {"audit_max_bytes", CONFIG_UINT, false, UNITD_AUDIT_BYTES_MIN, UNITD_AUDIT_BYTES_MAX},
    {"audit_checkpoint_ms", CONFIG_UINT, false, UNITD_AUDIT_CKPT_MIN, UNITD_AUDIT_CKPT_MAX},
    {"imprint_verifier", CONFIG_VERIFIER, false, 0, 0},
    {"store_lock_wait_ms", CONFIG_UINT, false, UNITD_STORE_WAIT_MIN, UNITD_STORE_WAIT_MAX},
    {"metrics", CONFIG_UINT, false, 0, 1},
    {"policy_pass_interval", CONFIG_UINT, false, 1, UNITD_POLICY_PASS_INTERVAL_MAX},
    {"policy_pass_days_ahead", CONFIG_UINT, false, 0, UNITD_POLICY_PASS_AHEAD_MAX},
};
#define CONFIG_NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

static void config_err(char *err, size_t errlen, const char *name, size_t line, const char *fmt,
                       ...) __attribute__((format(printf, 5, 6)));

static void config_err(char *err, size_t errlen, const char *name, size_t line, const char *fmt,
                       ...)
{
	int off;
	va_list ap;

	if (line > 0)
		off = snprintf(err, errlen, "%s:%zu: ", name, line);
	else
		off = snprintf(err, errlen, "%s: ", name);
	if (off < 0 || (size_t)off >= errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err + off, errlen - (size_t)off, fmt, ap);
	va_end(ap);
}

static bool config_host_char_ok(char c, bool v6)
{
	if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	    c == '.' || c == '-')
		return true;
	return v6 && c == ':';
}

/* host:port, [v6-literal]:port. The port is 0..65535 in decimal. */
static int config_listen_parse(const char *v, struct unitd_config *cfg)
{
	const char *host, *colon, *p;
	size_t hostlen;
	bool v6 = false;
	unsigned long port = 0;

	if (v[0] == '[') {
		const char *close = strchr(v, ']');
		if (close == NULL || close[1] != ':')
			return KY_ERR_CONFIG;
		host = v + 1;
		hostlen = (size_t)(close - host);
		colon = close + 1;
		v6 = true;
	} else {
		colon = strrchr(v, ':');
		if (colon == NULL)
			return KY_ERR_CONFIG;
		host = v;
		hostlen = (size_t)(colon - v);
		if (memchr(host, ':', hostlen) != NULL)
			return KY_ERR_CONFIG; /* a v6 literal needs brackets */
	}
	if (hostlen < 1 || hostlen > UNITD_HOST_MAX)
		return KY_ERR_CONFIG;
	for (size_t i = 0; i < hostlen; i++)
		if (!config_host_char_ok(host[i], v6))
			return KY_ERR_CONFIG;
	p = colon + 1;
	if (*p == '\0' || strlen(p) > 5)
		return KY_ERR_CONFIG;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return KY_ERR_CONFIG;
		port = port * 10 + (unsigned long)(*p - '0');
	}
	if (port > 65535)
		return KY_ERR_CONFIG;
	memcpy(cfg->host, host, hostlen);
	cfg->host[hostlen] = '\0';
	cfg->port = (uint16_t)port;
	return 0;
}

/* True when host is an IP address literal outside loopback. A name is resolved when the unit
 * binds, and refused there if it is not loopback: the same rule, checked again. */
static bool config_host_not_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) != 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return !IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

/* Absolute copy of v, resolved against base_dir when relative. */
static int config_path_parse(const char *v, const char *base_dir, char **out)
{
	char *p = NULL;

	for (const char *c = v; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return KY_ERR_CONFIG;
	if (v[0] == '/' || base_dir == NULL || base_dir[0] == '\0') {
		p = strdup(v);
	} else if (asprintf(&p, "%s/%s", base_dir, v) < 0) {
		p = NULL;
	}
	if (p == NULL)
		return KY_ERR_NOMEM;
	if (strlen(p) >= PATH_MAX) {
		free(p);
		return KY_ERR_CONFIG;
	}
	*out = p;
	return 0;
}

/* "sqlite:PATH" or a bare PATH (same): the path resolved like any other. A scheme this
 * program has no backend for is left to ky_store_open to refuse by name. */
static int config_store_parse(const char *v, const char *base_dir, char **out)
{
	const char *colon = strchr(v, ':'), *path = v;
	char *p = NULL;
	int r;

	if (strncmp(v, "postgresql://", 13) == 0 || strncmp(v, "postgres://", 11) == 0) {
		/* libpq's URI, as it is (lib/store/pg.c refuses one that holds a password) */
		return (*out = strdup(v)) != NULL ? 0 : KY_ERR_NOMEM;
	}
	if (strncmp(v, "sqlite:", 7) == 0) {
		path = v + 7;
	} else if (colon != NULL && colon != v) {
		for (const char *c = v; c < colon; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
				goto bare;
		return KY_ERR_UNSUPPORTED; /* another backend's scheme */
	}
bare:
	if (*path == '\0')
		return KY_ERR_CONFIG;
	if ((r = config_path_parse(path, base_dir, &p)) != 0)
		return r;
	if (asprintf(out, "sqlite:%s", p) < 0) {
		*out = NULL;
		free(p);
		return KY_ERR_NOMEM;
	}
	free(p);
	return 0;
}

/* Decimal in [min, max], no sign, no leading zero. */
static int config_uint_parse(const char *v, uint32_t min, uint32_t max, uint32_t *out)
{
	uint64_t n = 0;

	if (v[0] == '\0' || strlen(v) > 10 || (v[0] == '0' && v[1] != '\0'))
		return KY_ERR_CONFIG;
	for (const char *c = v; *c; c++) {
		if (*c < '0' || *c > '9')
			return KY_ERR_CONFIG;
		n = n * 10 + (uint64_t)(*c - '0');
	}
	if (n < min || n > max)
		return KY_ERR_CONFIG;
	*out = (uint32_t)n;
	return 0;
}

static char **config_path_slot(struct unitd_config *cfg, const char *name)
{
	if (strcmp(name, "data_dir") == 0)
		return &cfg->data_dir;
	if (strcmp(name, "port_file") == 0)
		return &cfg->port_file;
	if (strcmp(name, "api_tls_cert") == 0)
		return &cfg->tls_cert;
	if (strcmp(name, "api_tls_key") == 0)
		return &cfg->tls_key;
	if (strcmp(name, "pkcs11_module") == 0)
		return &cfg->pkcs11_module;
	if (strcmp(name, "pkcs11_pin_file") == 0)
		return &cfg->pkcs11_pin_file;
	if (strcmp(name, "anchor_cert") == 0)
		return &cfg->anchor_cert;
	if (strcmp(name, "identity_cert") == 0)
		return &cfg->identity_cert;
	return &cfg->log_file;
}

static uint32_t *config_uint_slot(struct unitd_config *cfg, const char *name)
{
	if (strcmp(name, "key_limit") == 0)
		return &cfg->key_limit;
	if (strcmp(name, "key_cache") == 0)
		return &cfg->key_cache;
	if (strcmp(name, "reencipher_batch") == 0)
		return &cfg->reencipher_batch;
	if (strcmp(name, "reencipher_pause_ms") == 0)
		return &cfg->reencipher_pause_ms;
	if (strcmp(name, "threads") == 0)
		return &cfg->threads;
	if (strcmp(name, "max_connections") == 0)
		return &cfg->max_connections;
	if (strcmp(name, "max_connections_per_client") == 0)
		return &cfg->max_connections_per_client;
	if (strcmp(name, "idle_timeout") == 0)
		return &cfg->idle_timeout;
	if (strcmp(name, "body_timeout") == 0)
		return &cfg->body_timeout;
	if (strcmp(name, "header_timeout") == 0)
		return &cfg->header_timeout;
	if (strcmp(name, "audit_max_bytes") == 0)
		return &cfg->audit_max_bytes;
	if (strcmp(name, "audit_checkpoint_ms") == 0)
		return &cfg->audit_checkpoint_ms;
	if (strcmp(name, "store_lock_wait_ms") == 0)
		return &cfg->store_lock_wait_ms;
	if (strcmp(name, "metrics") == 0)
		return &cfg->metrics;
	if (strcmp(name, "policy_pass_interval") == 0)
		return &cfg->policy_pass_interval;
	if (strcmp(name, "policy_pass_days_ahead") == 0)
		return &cfg->policy_pass_days_ahead;
	return &cfg->token_ttl;
}

static char **config_text_slot(struct unitd_config *cfg, const char *name)
{
	if (strcmp(name, "tpm2_tcti") == 0)
		return &cfg->tpm2_tcti;
	if (strcmp(name, "pkcs11_token") == 0)
		return &cfg->pkcs11_token;
	return &cfg->pkcs11_key_label;
}

/* The sealing backends, by their unit.conf name. */
static const struct {
	const char *name;
	enum unitd_seal_kind kind;
} config_seals[] = {
    {"file", UNITD_SEAL_FILE},
    {"tpm2", UNITD_SEAL_TPM2},
    {"pkcs11", UNITD_SEAL_PKCS11},
};

const char *unitd_seal_kind_name(enum unitd_seal_kind kind)
{
	for (size_t i = 0; i < sizeof(config_seals) / sizeof(config_seals[0]); i++)
		if (config_seals[i].kind == kind)
			return config_seals[i].name;
	return "?";
}

static char *config_id_slot(struct unitd_config *cfg, const char *name)
{
	if (strcmp(name, "instance") == 0)
		return cfg->instance;
	if (strcmp(name, "unit") == 0)
		return cfg->unit;
	return cfg->zone;
}

static bool config_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Handles one "key = value" line (already stripped of its newline); seen[] holds the line
 * each key was set on. */
static int config_line(const char *name, const char *base_dir, size_t lineno, char *line,
                       struct unitd_config *cfg, size_t seen[CONFIG_NKEYS], char *err,
                       size_t errlen)
{
	char *key, *val, *eq, *end;
	const struct config_key *k = NULL;
	size_t ki;
	int r;

	while (config_blank(*line))
		line++;
	if (*line == '\0' || *line == '#')
		return 0;
	for (const char *c = line; *c; c++) {
		if ((unsigned char)*c < 0x20 && *c != '\t') {
			config_err(err, errlen, name, lineno, "control character in line");
			return KY_ERR_CONFIG;
		}
	}
	eq = strchr(line, '=');
	if (eq == NULL) {
		config_err(err, errlen, name, lineno, "expected 'key = value'");
		return KY_ERR_CONFIG;
	}
	key = line;
	end = eq;
	while (end > key && config_blank(end[-1]))
		end--;
	*end = '\0';
	val = eq + 1;
	while (config_blank(*val))
		val++;
	end = val + strlen(val);
	while (end > val && config_blank(end[-1]))
		end--;
	*end = '\0';

	if (key[0] == '\0') {
		config_err(err, errlen, name, lineno, "expected 'key = value': key is missing");
		return KY_ERR_CONFIG;
	}
	for (ki = 0; ki < CONFIG_NKEYS; ki++) {
		if (strcmp(config_keys[ki].name, key) == 0) {
			k = &config_keys[ki];
			break;
		}
	}
	if (k == NULL) {
		config_err(err, errlen, name, lineno,
		           "unknown key '%.64s' (known: instance, unit, zone, listen, data_dir, "
		           "port_file, log_file, store, key_limit, key_cache, api_tls_cert, "
		           "api_tls_key, "
		           "token_ttl, reencipher_batch, reencipher_pause_ms, seal, tpm2_tcti, "
		           "pkcs11_module, pkcs11_token, pkcs11_key_label, pkcs11_pin_file, "
		           "threads, max_connections, max_connections_per_client, idle_timeout, "
		           "body_timeout, header_timeout, anchor_cert, identity_cert, "
		           "audit_max_bytes, audit_checkpoint_ms, imprint_verifier, metrics, "
		           "store_lock_wait_ms, policy_pass_interval, policy_pass_days_ahead)",
		           key);
		return KY_ERR_CONFIG;
	}
	if (seen[ki] != 0) {
		config_err(err, errlen, name, lineno, "duplicate key '%s' (first set on line %zu)",
		           key, seen[ki]);
		return KY_ERR_CONFIG;
	}
	seen[ki] = lineno;
	if (val[0] == '\0') {
		config_err(err, errlen, name, lineno, "empty value for '%s'", key);
		return KY_ERR_CONFIG;
	}

	switch (k->kind) {
	case CONFIG_ID:
		if (!ky_id_valid(val)) {
			config_err(
			    err, errlen, name, lineno,
			    "bad value for '%s': use 1 to 64 characters of A-Z a-z 0-9 . _ -", key);
			return KY_ERR_CONFIG;
		}
		strcpy(config_id_slot(cfg, key), val);
		return 0;
	case CONFIG_LISTEN:
		if (config_listen_parse(val, cfg) != 0) {
			config_err(err, errlen, name, lineno,
			           "bad value for 'listen': expected host:port or [ipv6]:port with "
			           "port 0 to 65535, e.g. 127.0.0.1:0");
			return KY_ERR_CONFIG;
		}
		return 0;
	case CONFIG_PATH:
		r = config_path_parse(val, base_dir, config_path_slot(cfg, key));
		if (r == KY_ERR_NOMEM) {
			config_err(err, errlen, name, lineno, "out of memory");
			return r;
		}
		if (r != 0) {
			config_err(err, errlen, name, lineno,
			           "bad value for '%s': path has control characters or is too long",
			           key);
			return KY_ERR_CONFIG;
		}
		return 0;
	case CONFIG_STORE:
		r = config_store_parse(val, base_dir, &cfg->store);
		if (r == KY_ERR_NOMEM) {
			config_err(err, errlen, name, lineno, "out of memory");
			return r;
		}
		if (r == KY_ERR_UNSUPPORTED) {
			config_err(
			    err, errlen, name, lineno,
			    "bad value for 'store': unknown key storage '%.32s' (this kyok has "
			    "sqlite:PATH and postgresql://...)",
			    val);
			return KY_ERR_CONFIG;
		}
		if (r != 0) {
			config_err(err, errlen, name, lineno,
			           "bad value for 'store': expected sqlite:PATH or PATH");
			return KY_ERR_CONFIG;
		}
		return 0;
	case CONFIG_VERIFIER:
		if (ky_hex_decode(val, cfg->imprint.pub, KY_IMPRINT_PUB_LEN) != 0) {
			config_err(err, errlen, name, lineno,
			           "bad value for '%s': expected the 64 hex digits of the Ed25519 "
			           "public key of the instance's imprint credential",
			           key);
			return KY_ERR_CONFIG;
		}
		cfg->imprint.configured = true;
		return 0;
	case CONFIG_SEAL:
		for (size_t i = 0; i < sizeof(config_seals) / sizeof(config_seals[0]); i++) {
			if (strcmp(config_seals[i].name, val) == 0) {
				cfg->seal = config_seals[i].kind;
				return 0;
			}
		}
		config_err(err, errlen, name, lineno,
		           "bad value for 'seal': unknown sealing backend '%.32s' (use file, tpm2 "
		           "or pkcs11)",
		           val);
		return KY_ERR_CONFIG;
	case CONFIG_TEXT:
		if (strlen(val) > k->max) {
			config_err(err, errlen, name, lineno,
			           "bad value for '%s': at most %lu characters", key,
			           (unsigned long)k->max);
			return KY_ERR_CONFIG;
		}
		if ((*config_text_slot(cfg, key) = strdup(val)) == NULL) {
			config_err(err, errlen, name, lineno, "out of memory");
			return KY_ERR_NOMEM;
		}
		return 0;
	case CONFIG_UINT:
		if (config_uint_parse(val, k->min, k->max, config_uint_slot(cfg, key)) != 0) {
			config_err(err, errlen, name, lineno,
			           "bad value for '%s': expected a whole number from %lu to %lu",
			           key, (unsigned long)k->min, (unsigned long)k->max);
			return KY_ERR_CONFIG;
		}
		return 0;
	}
	config_err(err, errlen, name, lineno, "internal error");
	return KY_ERR_INTERNAL;
}

/* Index of key in config_keys. */
static size_t config_key_index(const char *key)
{
	size_t i;

	for (i = 0; i < CONFIG_NKEYS; i++)
		if (strcmp(config_keys[i].name, key) == 0)
			break;
	return i;
}

/* The backend settings fit 'seal': each one belongs to the chosen backend (none is
 * ignored), and the ones it needs are there. */
static int config_seal_check(const char *name, struct unitd_config *cfg,
                             const size_t seen[CONFIG_NKEYS], char *err, size_t errlen)
{
	static const struct {
		const char *key;
		enum unitd_seal_kind kind;
		bool required;
	} settings[] = {
	    {"tpm2_tcti", UNITD_SEAL_TPM2, false},
	    {"pkcs11_module", UNITD_SEAL_PKCS11, true},
	    {"pkcs11_token", UNITD_SEAL_PKCS11, true},
	    {"pkcs11_key_label", UNITD_SEAL_PKCS11, false},
	    {"pkcs11_pin_file", UNITD_SEAL_PKCS11, true},
	};

	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
		size_t line = seen[config_key_index(settings[i].key)];

		if (line != 0 && settings[i].kind != cfg->seal) {
			config_err(err, errlen, name, line,
			           "'%s' is a setting of seal = %s, but seal is %s: remove it or "
			           "set seal = %s",
			           settings[i].key, unitd_seal_kind_name(settings[i].kind),
			           unitd_seal_kind_name(cfg->seal),
			           unitd_seal_kind_name(settings[i].kind));
			return KY_ERR_CONFIG;
		}
		if (line == 0 && settings[i].required && settings[i].kind == cfg->seal) {
			config_err(err, errlen, name, 0, "seal = %s needs '%s'",
			           unitd_seal_kind_name(cfg->seal), settings[i].key);
			return KY_ERR_CONFIG;
		}
	}
	if (cfg->seal == UNITD_SEAL_PKCS11 && cfg->pkcs11_key_label == NULL &&
	    (cfg->pkcs11_key_label = strdup(UNITD_PKCS11_KEY_LABEL)) == NULL) {
		config_err(err, errlen, name, 0, "out of memory");
		return KY_ERR_NOMEM;
	}
	return 0;
}

int unitd_config_parse(const char *name, const char *base_dir, const char *text, size_t n,
                       struct unitd_config *cfg, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	size_t seen[CONFIG_NKEYS] = {0};
	size_t lineno = 0, pos = 0;
	char *line = NULL;

	memset(cfg, 0, sizeof(*cfg));
	strcpy(cfg->host, "127.0.0.1");
	cfg->port = 0;
	cfg->key_limit = 0;
	cfg->token_ttl = UNITD_TOKEN_TTL_DEFAULT;
	cfg->reencipher_batch = UNITD_REENC_BATCH_DEFAULT;
	cfg->reencipher_pause_ms = 0;
	cfg->max_connections = UNITD_CONN_DEFAULT;
	cfg->max_connections_per_client = UNITD_CONN_CLIENT_DEFAULT;
	cfg->idle_timeout = UNITD_IDLE_TIMEOUT_DEFAULT;
	cfg->body_timeout = UNITD_BODY_TIMEOUT_DEFAULT;
	cfg->header_timeout = UNITD_HEADER_TIMEOUT_DEFAULT;
	cfg->audit_max_bytes = UNITD_AUDIT_BYTES_DEFAULT;
	cfg->audit_checkpoint_ms = UNITD_AUDIT_CKPT_DEFAULT;
	cfg->store_lock_wait_ms = UNITD_STORE_WAIT_DEFAULT;
	cfg->metrics = 1;
	cfg->policy_pass_interval = UNITD_POLICY_PASS_INTERVAL_DEFAULT;
	cfg->policy_pass_days_ahead = 0;
	err[0] = '\0';

	if (n > UNITD_CONFIG_MAX_BYTES) {
		config_err(err, errlen, name, 0, "file too large (at most %d bytes)",
		           UNITD_CONFIG_MAX_BYTES);
		r = KY_ERR_CONFIG;
		goto out;
	}
	if ((line = malloc(n + 1)) == NULL) {
		config_err(err, errlen, name, 0, "out of memory");
		r = KY_ERR_NOMEM;
		goto out;
	}
	while (pos < n) {
		const char *nl = memchr(text + pos, '\n', n - pos);
		size_t len = nl ? (size_t)(nl - (text + pos)) : n - pos;

		lineno++;
		if (memchr(text + pos, '\0', len) != NULL) {
			config_err(err, errlen, name, lineno, "NUL byte in line");
			r = KY_ERR_CONFIG;
			goto out;
		}
		memcpy(line, text + pos, len);
		pos += len + (nl ? 1 : 0);
		if (len > 0 && line[len - 1] == '\r')
			len--;
		line[len] = '\0';
		if ((r = config_line(name, base_dir, lineno, line, cfg, seen, err, errlen)) != 0)
			goto out;
	}
	for (size_t i = 0; i < CONFIG_NKEYS; i++) {
		if (config_keys[i].required && seen[i] == 0) {
			config_err(err, errlen, name, 0, "missing required key '%s'",
			           config_keys[i].name);
			r = KY_ERR_CONFIG;
			goto out;
		}
	}
	if ((r = config_seal_check(name, cfg, seen, err, errlen)) != 0)
		goto out;
	if (cfg->tls_cert == NULL && config_host_not_loopback(cfg->host)) {
		config_err(err, errlen, name, seen[config_key_index("listen")],
		           "listen address %s is not a loopback address: it needs TLS (set "
		           "api_tls_cert and api_tls_key); plain HTTP is served on loopback "
		           "addresses only",
		           cfg->host);
		r = KY_ERR_CONFIG;
		goto out;
	}
	if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
		config_err(err, errlen, name, 0, "'%s' is set but '%s' is not: set both or neither",
		           cfg->tls_cert ? "api_tls_cert" : "api_tls_key",
		           cfg->tls_cert ? "api_tls_key" : "api_tls_cert");
		r = KY_ERR_CONFIG;
		goto out;
	}
	r = 0;
out:
	free(line);
	if (r != 0)
		unitd_config_release(cfg);
	return r;
}

int unitd_config_load(const char *path, struct unitd_config *cfg, char *err, size_t errlen)
{
	int r = KY_ERR_INTERNAL;
	struct ky_buf text = {0};
	char *dir = NULL, *slash, *absdir = NULL;

	memset(cfg, 0, sizeof(*cfg));
	r = ky_file_read(path, UNITD_CONFIG_MAX_BYTES, &text);
	if (r == KY_ERR_TOO_LARGE) {
		snprintf(err, errlen, "%s: file too large (at most %d bytes)", path,
		         UNITD_CONFIG_MAX_BYTES);
		r = KY_ERR_CONFIG;
		goto out;
	}
	if (r != 0) {
		snprintf(err, errlen, "%s: cannot read config file: %s", path,
		         r == KY_ERR_NOT_FOUND ? "no such file" : strerror(errno));
		r = KY_ERR_CONFIG;
		goto out;
	}
	if ((dir = strdup(path)) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	slash = strrchr(dir, '/');
	if (slash == NULL)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	/* Resolve the base now: the daemon's working directory is not the config's. */
	if ((absdir = realpath(dir, NULL)) == NULL) {
		snprintf(err, errlen, "%s: cannot resolve directory: %s", path, strerror(errno));
		r = KY_ERR_CONFIG;
		goto out;
	}
	r = unitd_config_parse(path, absdir, (const char *)text.data, text.len, cfg, err, errlen);
out:
	ky_buf_free(&text);
	free(dir);
	free(absdir);
	return r;
}

void unitd_config_release(struct unitd_config *cfg)
{
	if (cfg == NULL)
		return;
	free(cfg->data_dir);
	free(cfg->port_file);
	free(cfg->log_file);
	free(cfg->store);
	free(cfg->tls_cert);
	free(cfg->anchor_cert);
	free(cfg->identity_cert);
	free(cfg->tls_key);
	free(cfg->tpm2_tcti);
	free(cfg->pkcs11_module);
	free(cfg->pkcs11_token);
	free(cfg->pkcs11_key_label);
	free(cfg->pkcs11_pin_file);
	memset(cfg, 0, sizeof(*cfg));
}
