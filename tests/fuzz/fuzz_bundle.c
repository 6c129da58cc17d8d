/* A command bundle's text, as cmd-show, cmd-sign and cmd-submit read a file handed to them by
 * another workstation (cli/tke_bundle.c): every block found is then parsed as a CMS
 * structure, as the bundle verbs do. */
#include <stdlib.h>

#include "cli/tke_bundle.h"
#include "kyok/crypto.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tke_bundle b = {0};
	char why[256];

	if (tke_bundle_parse((const char *)data, size, &b, why, sizeof(why)) != 0)
		return 0;
	for (size_t i = 0; i < b.n; i++) {
		struct ky_buf content = {0};
		struct ky_cms_signer *s = NULL;
		size_t ns = 0;

		FUZZ_IGNORE(ky_cms_parse(b.cmds[i].der.data, b.cmds[i].der.len, &content, &s, &ns));
		free(s);
		ky_buf_free(&content);
	}
	tke_bundle_release(&b);
	return 0;
}
