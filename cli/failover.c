/* How long the clients wait for a crypto unit, and which unit 'kyok kp' tries first.
 *
 * Timeouts: --timeout SECONDS, else $KYOK_TIMEOUT, else CLI_TIMEOUT_DEFAULT, for the whole
 * exchange with one unit; connecting gets at most CLI_CONNECT_TIMEOUT of it.
 *
 * Units that just failed: <instance dir>/unit-failures holds one line per unit that failed
 * recently, "<unit id> <unix time>". For CLI_FAILED_HOLD seconds after that time the unit
 * is tried after the others; a unit that serves again loses its line. The file is a hint
 * only: when it cannot be read or written, units are tried in their usual order (said with
 * --verbose), never refused.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/failover.h"

int cli_parse_timeout(const char *s, long *out)
{
	char *end;
	long v;

	if (s == NULL || s[0] < '0' || s[0] > '9')
		return KY_ERR_USAGE;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > CLI_TIMEOUT_MAX)
		return KY_ERR_USAGE;
	*out = v;
	return 0;
}

int cli_timeouts(long *connect_s, long *total_s, char *why, size_t whylen)
{
	const char *env = getenv("KYOK_TIMEOUT");
	long t = CLI_TIMEOUT_DEFAULT;

	if (cli_g.timeout > 0) {
		t = cli_g.timeout;
	} else if (env != NULL && env[0] != '\0' && cli_parse_timeout(env, &t) != 0) {
		snprintf(
		    why, whylen,
		    "$KYOK_TIMEOUT must be a whole number of seconds from 1 to %d, not '%.40s'",
		    CLI_TIMEOUT_MAX, env);
		return KY_ERR_USAGE;
	}
	*total_s = t;
	*connect_s = t < CLI_CONNECT_TIMEOUT ? t : CLI_CONNECT_TIMEOUT;
	return 0;
}

bool cli_api_request_safe(const char *method, const char *path)
{
	static const char *const safe_actions[] = {"wrap", "unwrap", "rewrap"};
	const char *a, *q;
	size_t n;

	if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
		return true;
	if (strcmp(method, "POST") != 0)
		return false;
	/* POST /api/v2/keys/{id}/actions/{action} or /api/v2/keys/{id}?action={action} */
	q = strchr(path, '?');
	if ((a = strstr(path, "/actions/")) != NULL && (q == NULL || a < q)) {
		a += strlen("/actions/");
		n = q != NULL ? (size_t)(q - a) : strlen(a);
		if (memchr(a, '/', n) != NULL)
			return false;
	} else if (q != NULL && strncmp(q, "?action=", 8) == 0) {
		a = q + 8;
		n = strcspn(a, "&");
		if (a[n] != '\0')
			return false; /* more arguments: not one of ours */
	} else {
		return false;
	}
	for (size_t i = 0; i < sizeof(safe_actions) / sizeof(safe_actions[0]); i++)
		if (strlen(safe_actions[i]) == n && memcmp(safe_actions[i], a, n) == 0)
			return true;
	return false;
}

void cli_unit_order(size_t n, size_t first, const int64_t *failed_at, int64_t now, size_t *order)
{
	size_t k = 0;

	/* From first on, round the list: units without a recent failure, then the others. */
	for (int pass = 0; pass < 2; pass++)
		for (size_t t = 0; t < n; t++) {
			size_t i = (first + t) % n;
			bool recent = failed_at != NULL && failed_at[i] > 0 &&
			              failed_at[i] <= now && now - failed_at[i] < CLI_FAILED_HOLD;
			if (recent == (pass == 1))
				order[k++] = i;
		}
}

int cli_failures_parse(const char *text, size_t len, const struct cli_instance *inst,
                       int64_t *failed_at)
{
	size_t pos = 0;

	for (size_t i = 0; i < inst->nunits; i++)
		failed_at[i] = 0;
	while (pos < len) {
		const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
		size_t ll = nl ? (size_t)(nl - line) : len - pos;
		char id[KY_ID_MAX + 2], buf[KY_ID_MAX + 40];
		long long t;
		int used = 0;

		pos += ll + (nl ? 1 : 0);
		if (ll == 0)
			continue;
		if (ll >= sizeof(buf))
			return KY_ERR_MALFORMED;
		memcpy(buf, line, ll);
		buf[ll] = '\0';
		if (sscanf(buf, "%65s %lld%n", id, &t, &used) != 2 || (size_t)used != ll ||
		    strlen(id) > KY_ID_MAX || t < 0)
			return KY_ERR_MALFORMED;
		for (size_t i = 0; i < inst->nunits; i++)
			if (strcmp(inst->units[i].id, id) == 0)
				failed_at[i] = (int64_t)t;
	}
	return 0;
}

static void cli_failures_path(const struct cli_instance *inst, char *p, size_t n)
{
	snprintf(p, n, "%s/unit-failures", inst->dir);
}

int cli_failures_load(const struct cli_instance *inst, int64_t *failed_at)
{
	char path[600];
	struct ky_buf b = {0};
	int r;

	for (size_t i = 0; i < inst->nunits; i++)
		failed_at[i] = 0;
	cli_failures_path(inst, path, sizeof(path));
	r = ky_file_read(path, 64 * 1024, &b);
	if (r == KY_ERR_NOT_FOUND)
		return 0;
	if (r == 0)
		r = cli_failures_parse((const char *)b.data, b.len, inst, failed_at);
	ky_buf_free(&b);
	return r;
}

int cli_failure_note(const struct cli_instance *inst, size_t idx, int64_t when)
{
	int64_t at[sizeof(inst->units) / sizeof(inst->units[0])];
	char path[600], line[KY_ID_MAX + 40];
	struct ky_buf out = {0};
	int r;

	if (idx >= inst->nunits)
		return KY_ERR_USAGE;
	if (cli_failures_load(inst, at) != 0) {
		/* an unreadable file is replaced */
		for (size_t i = 0; i < inst->nunits; i++)
			at[i] = 0;
	}
	if (at[idx] == when)
		return 0; /* nothing to write */
	at[idx] = when;
	for (size_t i = 0; i < inst->nunits; i++) {
		if (at[i] <= 0)
			continue;
		snprintf(line, sizeof(line), "%s %lld\n", inst->units[i].id, (long long)at[i]);
		if ((r = ky_buf_append_str(&out, line)) != 0)
			goto out;
	}
	cli_failures_path(inst, path, sizeof(path));
	r = ky_file_write_atomic(path, out.len ? out.data : (const uint8_t *)"", out.len, 0600);
out:
	ky_buf_free(&out);
	return r;
}
