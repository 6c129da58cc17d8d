/* The header timeout of the unit's HTTP server (unit.conf header_timeout).
 *
 * libmicrohttpd's own timeout counts silence only: a client that sends one header byte a
 * little more often than idle_timeout keeps its connection for ever. Here each connection
 * is timed from its accept, and again from the end of each request on a kept-alive
 * connection, until the access handler sees the next request's headers. A sweeper thread
 * cuts the connections past header_timeout with shutdown(2); the server's epoll worker then
 * reads end of file and closes the connection itself.
 *
 * Why shutdown() on a descriptor owned by MHD is safe: MHD (0.9.75, daemon.c
 * MHD_cleanup_connections and the failure path of new_connection_process_) calls the
 * MHD_CONNECTION_NOTIFY_CLOSED notification before it closes the socket, and that
 * notification removes the entry under the same mutex the sweeper holds while it calls
 * shutdown(). So the descriptor of an entry is open, and still this connection's, for as
 * long as the entry is in the table. close() is never called here.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "kyok/err.h"
#include "unitd/header_timer.h"
#include "unitd/log.h"

#define HEADER_TIMER_TICK_MS  200 /* how late a cut may come */
#define HEADER_TIMER_LOG_RATE 20  /* lines a second naming a cut connection */

struct header_conn {
	struct header_conn *prev, *next;
	int fd;
	bool waiting;          /* the next request's headers are not complete yet */
	bool cut;              /* shut down by the sweeper: logged once */
	bool served;           /* a request was answered on it: now kept alive */
	struct timespec since; /* waiting since (CLOCK_MONOTONIC) */
	char peer[INET6_ADDRSTRLEN];
};

struct unitd_header_timer {
	pthread_mutex_t lock; /* guards the list, every entry and stop */
	pthread_cond_t wake;
	pthread_t sweeper;
	bool stop;
	uint32_t timeout_s;
	struct header_conn *head;
	/* Clients that open connections and send nothing must not fill the disk: at most
	 * HEADER_TIMER_LOG_RATE lines a second name a connection, then one line counts the rest. */
	time_t log_second; /* CLOCK_MONOTONIC second of log_lines */
	unsigned log_lines, log_unnamed;
};

/* CLOCK_MONOTONIC cannot fail with a valid pointer on Linux. */
static void header_timer_now(struct timespec *t)
{
	(void)clock_gettime(CLOCK_MONOTONIC, t);
}

/* Time from since to now, in milliseconds. */
static long long header_timer_elapsed_ms(const struct timespec *since, const struct timespec *now)
{
	return (long long)(now->tv_sec - since->tv_sec) * 1000 +
	       (now->tv_nsec - since->tv_nsec) / 1000000;
}

/* Cuts the connections past the deadline; the caller holds the lock. */
static void header_timer_sweep_locked(struct unitd_header_timer *ht)
{
	struct timespec now;
	long long limit = (long long)ht->timeout_s * 1000;

	header_timer_now(&now);
	if (now.tv_sec != ht->log_second) {
		if (ht->log_unnamed > 0)
			unitd_log(
			    "http: %u more connections closed: headers not complete after %u s "
			    "(header_timeout; over %d lines a second)",
			    ht->log_unnamed, (unsigned)ht->timeout_s, HEADER_TIMER_LOG_RATE);
		ht->log_second = now.tv_sec;
		ht->log_lines = 0;
		ht->log_unnamed = 0;
	}
	for (struct header_conn *e = ht->head; e != NULL; e = e->next) {
		if (!e->waiting || e->cut || header_timer_elapsed_ms(&e->since, &now) < limit)
			continue;
		e->cut = true;
		/* The entry is in the table, so MHD has not closed e->fd yet (see the top). */
		(void)shutdown(e->fd, SHUT_RDWR);
		/* A kept-alive connection left unused looks the same as one whose next headers
		 * trickle in (MHD has the bytes): it is closed quietly, as idle pools expect. */
		if (e->served)
			continue;
		if (ht->log_lines >= HEADER_TIMER_LOG_RATE) {
			ht->log_unnamed++;
			continue;
		}
		ht->log_lines++;
		unitd_log("http: connection from %s closed: headers not complete after %u s "
		          "(header_timeout)",
		          e->peer, (unsigned)ht->timeout_s);
	}
}

static void *header_timer_main(void *arg)
{
	struct unitd_header_timer *ht = arg;
	struct timespec until;

	pthread_mutex_lock(&ht->lock);
	while (!ht->stop) {
		header_timer_sweep_locked(ht);
		header_timer_now(&until);
		until.tv_nsec += HEADER_TIMER_TICK_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (!ht->stop && pthread_cond_timedwait(&ht->wake, &ht->lock, &until) == 0)
			;
	}
	pthread_mutex_unlock(&ht->lock);
	return NULL;
}

int unitd_header_timer_new(uint32_t timeout_s, struct unitd_header_timer **out)
{
	int r = KY_ERR_INTERNAL;
	struct unitd_header_timer *ht = NULL;
	pthread_condattr_t ca;
	bool lock = false, cond = false;

	*out = NULL;
	if ((ht = calloc(1, sizeof(*ht))) == NULL) {
		r = KY_ERR_NOMEM;
		goto out;
	}
	ht->timeout_s = timeout_s;
	if (pthread_mutex_init(&ht->lock, NULL) != 0) {
		r = KY_ERR_INTERNAL;
		goto out;
	}
	lock = true;
	if (pthread_condattr_init(&ca) != 0) {
		r = KY_ERR_INTERNAL;
		goto out;
	}
	if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
	    pthread_cond_init(&ht->wake, &ca) != 0) {
		pthread_condattr_destroy(&ca);
		r = KY_ERR_INTERNAL;
		goto out;
	}
	pthread_condattr_destroy(&ca);
	cond = true;
	if (pthread_create(&ht->sweeper, NULL, header_timer_main, ht) != 0) {
		r = KY_ERR_INTERNAL;
		goto out;
	}
	*out = ht;
	ht = NULL; /* transferred */
	r = 0;
out:
	if (ht != NULL) {
		if (cond)
			pthread_cond_destroy(&ht->wake);
		if (lock)
			pthread_mutex_destroy(&ht->lock);
		free(ht);
	}
	return r;
}

void unitd_header_timer_free(struct unitd_header_timer *ht)
{
	struct header_conn *e;

	if (ht == NULL)
		return;
	pthread_mutex_lock(&ht->lock);
	ht->stop = true;
	pthread_cond_signal(&ht->wake);
	pthread_mutex_unlock(&ht->lock);
	pthread_join(ht->sweeper, NULL);
	/* MHD has stopped: it sent a CLOSED notification for every connection it had. */
	while ((e = ht->head) != NULL) {
		ht->head = e->next;
		free(e);
	}
	pthread_cond_destroy(&ht->wake);
	pthread_mutex_destroy(&ht->lock);
	free(ht);
}

static void header_conn_peer(struct MHD_Connection *c, char *out, size_t outlen)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci != NULL ? ci->client_addr : NULL;
	socklen_t len = 0;

	snprintf(out, outlen, "?");
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET)
		len = sizeof(struct sockaddr_in);
	else if (sa->sa_family == AF_INET6)
		len = sizeof(struct sockaddr_in6);
	if (len == 0 || getnameinfo(sa, len, out, (socklen_t)outlen, NULL, 0, NI_NUMERICHOST) != 0)
		snprintf(out, outlen, "?");
}

void unitd_header_timer_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                               enum MHD_ConnectionNotificationCode code)
{
	struct unitd_header_timer *ht = cls;
	struct header_conn *e = *socket_context;
	const union MHD_ConnectionInfo *ci;

	if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		if (e == NULL)
			return;
		pthread_mutex_lock(&ht->lock);
		if (e->prev != NULL)
			e->prev->next = e->next;
		else
			ht->head = e->next;
		if (e->next != NULL)
			e->next->prev = e->prev;
		pthread_mutex_unlock(&ht->lock);
		free(e);
		*socket_context = NULL;
		return;
	}
	if (code != MHD_CONNECTION_NOTIFY_STARTED)
		return;
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci == NULL || (e = calloc(1, sizeof(*e))) == NULL) {
		/* Not timed: say so rather than let it pass unseen. */
		unitd_log("http: a connection is not under header_timeout: %s",
		          ci == NULL ? "no descriptor" : "out of memory");
		return;
	}
	e->fd = ci->connect_fd;
	e->waiting = true;
	header_timer_now(&e->since);
	header_conn_peer(c, e->peer, sizeof(e->peer));
	pthread_mutex_lock(&ht->lock);
	e->next = ht->head;
	if (ht->head != NULL)
		ht->head->prev = e;
	ht->head = e;
	pthread_mutex_unlock(&ht->lock);
	*socket_context = e;
}

/* The entry of connection c, or NULL when it has none. */
static struct header_conn *header_conn_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci != NULL ? ci->socket_context : NULL;
}

void unitd_header_timer_headers_done(struct unitd_header_timer *ht, struct MHD_Connection *c)
{
	struct header_conn *e = header_conn_of(c);

	if (e == NULL)
		return;
	pthread_mutex_lock(&ht->lock);
	e->waiting = false;
	pthread_mutex_unlock(&ht->lock);
}

void unitd_header_timer_request_done(struct unitd_header_timer *ht, struct MHD_Connection *c)
{
	struct header_conn *e = header_conn_of(c);

	if (e == NULL)
		return;
	pthread_mutex_lock(&ht->lock);
	e->waiting = true;
	e->served = true;
	header_timer_now(&e->since);
	pthread_mutex_unlock(&ht->lock);
}
