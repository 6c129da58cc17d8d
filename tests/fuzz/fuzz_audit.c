/* Audit log files as 'kyok audit verify' reads them: lines split at '\n', each checked in
 * turn (the identity certificate taken from the file line, trusted as it is), then the end. */
#include <stdlib.h>
#include <string.h>

#include "kyok/audit.h"
#include "kyok/crypto.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (ky_crypto_init() != 0)
		abort();
	return 0;
}

static int fuzz_trust_all(void *arg, const char *instance, const char *unit, X509 *cert, char *why,
                          size_t whylen)
{
	(void)arg;
	(void)instance;
	(void)unit;
	(void)cert;
	(void)why;
	(void)whylen;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ky_audit_verifier *v = NULL;
	struct ky_audit_summary s;
	char why[1024];
	size_t pos = 0;
	bool first = true;
	int r = 0;

	if (ky_audit_verifier_new(NULL, fuzz_trust_all, NULL, false, &v) != 0)
		abort();
	while (pos < size && r == 0) {
		const uint8_t *nl = memchr(data + pos, '\n', size - pos);
		size_t n = nl ? (size_t)(nl - (data + pos)) : size - pos;
		r = ky_audit_verify_line(v, "fuzz", first, (const char *)data + pos, n, why,
		                         sizeof(why));
		first = false;
		pos += n + 1;
	}
	if (r == 0)
		FUZZ_IGNORE(ky_audit_verify_finish(v, why, sizeof(why)));
	ky_audit_verifier_summary(v, &s);
	ky_audit_verifier_free(v);
	return 0;
}
