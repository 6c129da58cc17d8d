/* HTTP handles to crypto units: the one place where the CLI makes them and gives them their
 * TLS settings, so that every command talking to units trusts the same CA certificates and
 * reports a TLS failure as such.
 *
 * CA certificates: --cacert FILE, else $KYOK_CA_FILE, else ca.crt in the instance directory
 * when there is one, else the system's store. Peer and host name are always verified.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/http.h"

const char *cli_http_ca_file(void)
{
	static char path[PATH_MAX];
	const char *env = getenv("KYOK_CA_FILE");

	if (cli_g.cacert != NULL)
		return cli_g.cacert;
	if (env != NULL && env[0] != '\0')
		return env;
	if (snprintf(path, sizeof(path), "%s/ca.crt", cli_instance_dir()) < (int)sizeof(path) &&
	    access(path, R_OK) == 0)
		return path;
	return NULL;
}

CURL *cli_http_new(void)
{
	static bool inited;

	if (!inited) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return NULL;
		inited = true;
	}
	return curl_easy_init();
}

int cli_http_tls(CURL *h, char errbuf[CURL_ERROR_SIZE])
{
	const char *ca = cli_http_ca_file();

	errbuf[0] = '\0';
	if (curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK ||
	    (ca != NULL && curl_easy_setopt(h, CURLOPT_CAINFO, ca) != CURLE_OK))
		return KY_ERR_INTERNAL;
	return 0;
}

/* The transfer failures that are TLS failures (certificate, name, handshake). */
static const CURLcode cli_http_tls_codes[] = {
    CURLE_SSL_CONNECT_ERROR,
    CURLE_PEER_FAILED_VERIFICATION,
    CURLE_SSL_CACERT_BADFILE,
    CURLE_SSL_CERTPROBLEM,
    CURLE_SSL_CIPHER,
    CURLE_SSL_ISSUER_ERROR,
    CURLE_SSL_CRL_BADFILE,
    CURLE_SSL_INVALIDCERTSTATUS,
    CURLE_SSL_PINNEDPUBKEYNOTMATCH,
    CURLE_SSL_SHUTDOWN_FAILED,
    CURLE_USE_SSL_FAILED,
};

static bool cli_http_is_tls(CURLcode cc)
{
	for (size_t i = 0; i < sizeof(cli_http_tls_codes) / sizeof(cli_http_tls_codes[0]); i++)
		if (cli_http_tls_codes[i] == cc)
			return true;
	return false;
}

int cli_http_failure(CURLcode cc, const char *url, const char *errbuf, char *why, size_t n)
{
	const char *ca = cli_http_ca_file();
	char detail[CURL_ERROR_SIZE + 128];

	if (!cli_http_is_tls(cc)) {
		snprintf(why, n, "%s: %s", url, curl_easy_strerror(cc));
		return KY_ERR_UNREACHABLE;
	}
	/* curl's text for the code, and its detail when it has one (which certificate check). */
	if (errbuf != NULL && errbuf[0] != '\0')
		snprintf(detail, sizeof(detail), "%s (%s)", curl_easy_strerror(cc), errbuf);
	else
		snprintf(detail, sizeof(detail), "%s", curl_easy_strerror(cc));
	if (ca != NULL)
		snprintf(why, n, "%s: %s; CA certificates from '%s'", url, detail, ca);
	else
		snprintf(why, n,
		         "%s: %s; CA certificates: the system's (give the instance's with --cacert "
		         "FILE or KYOK_CA_FILE)",
		         url, detail);
	return KY_ERR_TLS;
}
