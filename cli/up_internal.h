/* What the files of 'kyok up', 'unit-add', 'down' and 'status' share among themselves (up.h:
 * what 'kyok host' shares with them): up.c (kyok up: instance creation and restart),
 * up_files.c (the instance directory's files), up_proc.c (the units' processes, kyok down),
 * up_unit_add.c (kyok unit-add), up_status.c (kyok status). Errors are printed where
 * noted. */
#ifndef KYOK_CLI_UP_INTERNAL_H
#define KYOK_CLI_UP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "cli/cli.h"
#include "cli/up.h"
#include "kyok/common.h"
#include "kyok/imprint.h"

#define UP_SEAL_CONF_MAX 4096 /* --seal-config file */
#define UP_STORE_MAX     1024 /* --store URI */
#define UP_STORE_FILE    "store.uri"

/* up_files.c */
/* Absolute form of dir (not resolved: it may not exist yet). */
int up_abs_dir(const char *dir, char *out, size_t n) KY_WUR;
bool up_exists(const char *path);
/* Writes a file atomically, 0600. */
int up_write_text(const char *path, const char *text) KY_WUR;
/* Port of the 'listen' line of a unit.conf: 0 when it is 0, -1 when it has none. */
int up_conf_port(const char *conf);
/* Host of the 'listen' line of a unit.conf: "127.0.0.1" when it has none. */
void up_conf_host(const char *conf, char *out, size_t n);
/* Rewrites the 'listen' line of a unit.conf to HOST:port. Prints its errors. */
int up_conf_set_port(const char *conf, int port) KY_WUR;
/* The unit's URL, as instance.json has it. */
void up_unit_url(const struct up_unit *u, char *out, size_t n);
/* Makes DIR/imprint-credential.pem, gives its public key as hex. Prints its errors. */
int up_imprint_create(const char *dir, char hex[2 * KY_IMPRINT_PUB_LEN + 1]) KY_WUR;
/* The public key of DIR/imprint-credential.pem: 1, 0 when there is none, or an error
 * (printed). */
int up_imprint_existing(const char *dir, char hex[2 * KY_IMPRINT_PUB_LEN + 1]) KY_WUR;

/* up_proc.c */
/* The number a small file holds ("1234\n"); 0 when absent or malformed. */
long up_read_number(const char *path);
/* The last lines of a unit's log, on stderr. */
void up_log_tail(const char *log);
/* A running kyok-unitd of this unit's config: its pid, else 0. */
pid_t up_unit_running(const struct up_unit *u);
/* Starts kyok-unitd detached, writes its pid file. Prints its errors. */
int up_spawn(const char *unitd, struct up_unit *u) KY_WUR;
/* Waits for the port file of a unit started by this run: u->why says why not. */
int up_wait_port_quiet(struct up_unit *u) KY_WUR;
/* The same, its failure printed with the unit's log. */
int up_wait_port(struct up_unit *u) KY_WUR;
/* Stops the units this run started. */
void up_undo_started(struct up_unit *units, size_t n);

/* up.c */
/* Certifies the unit's identity with the instance's anchor (and its TLS certificate with
 * the instance's TLS CA, if it has one). Prints its errors. */
int up_certify(const char *dir, const char *unitd, const char *instance,
               const struct up_unit *u) KY_WUR;
/* The table (or JSON) of an instance's units, on stdout. */
void up_report(const char *dir, const char *instance, struct up_unit *units, size_t n);
/* Port of a unit URL, 0 when none. */
int up_url_port(const char *url);

#endif
