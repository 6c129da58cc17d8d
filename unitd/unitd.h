/* kyok-unitd internals: configuration, hardening, sealing, the HTTP server. */
#ifndef KYOK_UNITD_H
#define KYOK_UNITD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kyok/ceremony.h"
#include "kyok/common.h"

#define UNITD_ERR_MAX 512 /* room for one error sentence */

/* ---- config.c: small and pure, no I/O beyond reading the file ---- */

#define UNITD_CONFIG_MAX_BYTES (64 * 1024)
#define UNITD_HOST_MAX         255

struct unitd_config {
	char instance[KY_ID_MAX + 1];
	char unit[KY_ID_MAX + 1];
	char zone[KY_ID_MAX + 1];
	char host[UNITD_HOST_MAX + 1]; /* without brackets for IPv6 literals */
	uint16_t port;                 /* 0 = pick a free one */
	char *data_dir;                /* relative paths are resolved against the config's dir */
	char *port_file;               /* NULL when not set */
	char *log_file;                /* NULL = stderr */
};

/* Parses config text. name is what messages call the file ("unit.conf"), base_dir the
 * directory relative paths are resolved against. On error returns KY_ERR_CONFIG and err
 * holds "NAME:LINE: what was wrong"; cfg is left released. */
int unitd_config_parse(const char *name, const char *base_dir, const char *text, size_t n,
                       struct unitd_config *cfg, char *err, size_t errlen) KY_WUR;
/* Reads path and parses it (KY_ERR_CONFIG with a message naming the file on any error). */
int unitd_config_load(const char *path, struct unitd_config *cfg, char *err, size_t errlen) KY_WUR;
void unitd_config_release(struct unitd_config *cfg);

/* ---- harden.c ---- */

/* No core dumps, not dumpable, umask 077, SIGPIPE ignored, OpenSSL secure heap, jansson
 * memory cleansed on free. Call first thing, before anything secret exists. */
int unitd_harden(char *err, size_t errlen) KY_WUR;

/* ---- log (server.c) ---- */

/* Opens the log (path NULL = stderr). */
int unitd_log_open(const char *path, char *err, size_t errlen) KY_WUR;
/* Reopens the log file after rotation (SIGHUP); keeps the old one on failure. */
void unitd_log_reopen(void);
/* True when the log lines already land on stderr (no log file, or stderr is that file). */
bool unitd_log_reaches_stderr(void);
void unitd_log_close(void);
/* One line, prefixed with the UTC time. Never pass secrets. */
void unitd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- seal.c ---- */

/* A sealing backend: a function table so TPM or PKCS#11 sealing can come later. */
struct unitd_seal;
struct unitd_seal_ops {
	const char *name;
	int (*seal)(struct unitd_seal *s, const void *aad, size_t aadlen, const uint8_t *pt,
	            size_t n, struct ky_buf *out);
	/* KY_ERR_STATE_CORRUPT when the blob does not open. */
	int (*open)(struct unitd_seal *s, const void *aad, size_t aadlen, const uint8_t *in,
	            size_t n, struct ky_buf *out);
	void (*free)(struct unitd_seal *s);
};
struct unitd_seal {
	const struct unitd_seal_ops *ops;
	void *priv;
};

/* Holds the data directory: created 0700 when missing, locked against a second daemon. */
struct unitd_store {
	char *dir;
	char *state_path;
	int lock_fd;
	struct unitd_seal *seal;
};

/* Creates or checks data_dir, takes its lock, opens the file seal backend (seal.key:
 * created on first start, refused when its size or mode is wrong). */
int unitd_store_open(const char *data_dir, struct unitd_store *st, char *err, size_t errlen) KY_WUR;
void unitd_store_release(struct unitd_store *st);
/* Loads the unit state, or creates and writes a new one on first start. Refuses a state
 * that does not open (never overwrites it) or belongs to another unit or instance. */
int unitd_state_load(struct unitd_store *st, const struct unitd_config *cfg, struct ky_domain **out,
                     char *err, size_t errlen) KY_WUR;
/* Seals d and writes it atomically: afterwards the file holds d, or on error the old state. */
int unitd_state_write(struct unitd_store *st, const struct ky_domain *d) KY_WUR;

/* ---- server.c ---- */

struct unitd_server;

/* Binds host:port (port 0 = a free one), starts serving. Takes ownership of *dom (set to
 * NULL). The store must outlive the server. */
int unitd_server_start(const struct unitd_config *cfg, struct unitd_store *st,
                       struct ky_domain **dom, struct unitd_server **out, char *err,
                       size_t errlen) KY_WUR;
uint16_t unitd_server_port(const struct unitd_server *srv);
/* Numeric bound address, for the start line ("127.0.0.1", "[::1]"). */
const char *unitd_server_addr(const struct unitd_server *srv);
/* Stops serving (waits for requests in flight), frees the state. NULL is a no-op. */
void unitd_server_free(struct unitd_server *srv);

#endif
