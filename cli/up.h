/* What 'kyok host' (host.c) shares with 'kyok up' (up.c): one unit's files, its unit.conf and
 * instance.json are written in one place. Errors are printed where noted. */
#ifndef KYOK_CLI_UP_H
#define KYOK_CLI_UP_H

#include <stdbool.h>
#include <stddef.h>
#include <limits.h>
#include <sys/types.h>

#include "kyok/common.h"

#define UP_MAX_UNITS 16

struct up_unit {
	int number;
	char id[KY_ID_MAX + 1];
	char zone[KY_ID_MAX + 1];
	char dir[PATH_MAX / 2];
	char conf[PATH_MAX / 2 + 16];
	char pidf[PATH_MAX / 2 + 16];
	char portf[PATH_MAX / 2 + 16];
	char log[PATH_MAX / 2 + 16];
	pid_t pid;
	int port;
	char host[64]; /* the address it listens on, an IPv4 address (127.0.0.1 by default) */
	bool remote;   /* a unit of another host, joined with 'kyok host join-accept': only its
	                * entry of instance.json is here, kept as it is */
	char url[256]; /* its URL as instance.json has it, when kept from there (remote) */
	bool started;  /* by this run */
	bool failed;   /* did not start in this run; why says why */
	char why[256];
	const char *status;
};

/* u->dir, conf, pidf, portf, log: DIR/unit-<u->number>/... */
void up_unit_paths(struct up_unit *u, const char *dir);
/* Writes u->conf (HTTPS when DIR/ca.key or u->dir/tls.key exists; key storage of
 * DIR/store.uri, else DIR/keys.db); seal_conf NULL: the file backend. */
int up_write_conf(const char *dir, const char *instance, const struct up_unit *u,
                  const char *seal_conf) KY_WUR;
/* Writes DIR/instance.json with units (a remote unit keeps its URL and "remote": true).
 * Prints its errors. */
int up_write_instance(const char *dir, const char *instance, const struct up_unit *units,
                      size_t n) KY_WUR;
/* Finds kyok-unitd (KYOK_UNITD, next to kyok, ../unitd, PATH). Prints its errors. */
int up_find_unitd(char *out, size_t n) KY_WUR;
/* Checks a --store URI (PostgreSQL, no password, one line). Prints its errors. */
int up_store_check(const char *uri) KY_WUR;
/* n free TCP ports of the IPv4 address host. Prints its errors. */
int up_free_ports(const char *host, int *ports, size_t n) KY_WUR;
/* 1 and hex filled when conf has an imprint_verifier line, else 0. */
int up_imprint_conf_verifier(const char *conf, char *hex /* 65 */);
/* Appends the imprint_verifier line to conf. Prints its errors. */
int up_imprint_conf_add(const char *conf, const char *hex) KY_WUR;
/* A --zones list: comma separated ids, at most cap. KY_ERR_USAGE. Pure. */
int up_parse_zones(const char *list, char zones[][KY_ID_MAX + 1], size_t cap, size_t *n) KY_WUR;
/* rm -rf path. */
int up_rm_rf(const char *path);

#endif
