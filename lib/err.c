/* The error table: every code has a slug, an exit status, an HTTP status and a message. */
#include <string.h>

#include "kyok/err.h"

const char *ky_err_message(int err)
{
	switch ((enum ky_err)err) {
#define KY_ERR_MSG(name, slug, exitc, http, msg) \
	case KY_ERR_##name:                      \
		return msg;
		KY_ERRORS(KY_ERR_MSG)
#undef KY_ERR_MSG
	case KY_ERR__COUNT:
		break;
	}
	return "unknown error";
}

const char *ky_err_slug(int err)
{
	switch ((enum ky_err)err) {
#define KY_ERR_SLUG(name, slug, exitc, http, msg) \
	case KY_ERR_##name:                       \
		return slug;
		KY_ERRORS(KY_ERR_SLUG)
#undef KY_ERR_SLUG
	case KY_ERR__COUNT:
		break;
	}
	return "unknown";
}

int ky_err_exit(int err)
{
	switch ((enum ky_err)err) {
#define KY_ERR_EXIT(name, slug, exitc, http, msg) \
	case KY_ERR_##name:                       \
		return exitc;
		KY_ERRORS(KY_ERR_EXIT)
#undef KY_ERR_EXIT
	case KY_ERR__COUNT:
		break;
	}
	return KY_EXIT_INTERNAL;
}

int ky_err_http(int err)
{
	switch ((enum ky_err)err) {
#define KY_ERR_HTTP(name, slug, exitc, http, msg) \
	case KY_ERR_##name:                       \
		return http;
		KY_ERRORS(KY_ERR_HTTP)
#undef KY_ERR_HTTP
	case KY_ERR__COUNT:
		break;
	}
	return 500;
}

int ky_err_from_slug(const char *s)
{
	if (s == NULL)
		return KY_ERR_INTERNAL;
	for (int e = 0; e < KY_ERR__COUNT; e++)
		if (strcmp(ky_err_slug(e), s) == 0)
			return e;
	return KY_ERR_INTERNAL;
}
