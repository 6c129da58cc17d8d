/* Signature key files: the PEM blocks and the certificate (no password). */
#include <openssl/x509.h>
#include <unistd.h>

#include "kyok/crypto.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	X509 *cert = NULL;
	char path[64];
	int fd = fuzz_memfile(data, size, path, sizeof(path));

	if (fd < 0)
		return 0;
	if (ky_sigkey_read_cert(path, &cert) == 0)
		FUZZ_IGNORE(ky_admin_cert_check(cert));
	X509_free(cert);
	close(fd);
	return 0;
}
