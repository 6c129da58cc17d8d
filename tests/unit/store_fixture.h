/* The store tests on either backend: SQLite files in a temp dir (the default), or, when
 * KYOK_TEST_PG holds a PostgreSQL URI (tests/pg_run.sh starts a throw-away cluster), a schema
 * of their own per test in that database (options=-csearch_path=...).
 *
 * tfx_sql runs SQL by hand on a test's storage ("another program"): a path for SQLite, the URI
 * for PostgreSQL. The few SQLite spellings the tests use are given PostgreSQL's:
 * x'..' and zeroblob(N) (bytea values), hex(vp) (upper(encode(vp, 'hex'))). */
#ifndef KYOK_TESTS_STORE_FIXTURE_H
#define KYOK_TESTS_STORE_FIXTURE_H

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TFX_URI_MAX 512

static const char *tfx_pg(void)
{
	const char *u = getenv("KYOK_TEST_PG");

	return u != NULL && u[0] != '\0' ? u : NULL;
}

static bool tfx_is_pg(const char *where)
{
	return strncmp(where, "postgres", 8) == 0;
}

static void tfx_pg_exec(const char *conninfo, const char *q)
{
	PGconn *db = PQconnectdb(conninfo);
	PGresult *res;

	assert_int_equal(PQstatus(db), CONNECTION_OK);
	PQclear(PQexec(db, "SET client_min_messages = warning"));
	res = PQexec(db, q);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		fprintf(stderr, "SQL failed: %s: %s\n", q, PQresultErrorMessage(res));
	assert_true(PQresultStatus(res) == PGRES_COMMAND_OK ||
	            PQresultStatus(res) == PGRES_TUPLES_OK);
	PQclear(res);
	PQfinish(db);
}

/* q with SQLite's blob spellings made PostgreSQL's; malloc'd. */
static char *tfx_pg_dialect(const char *q)
{
	static const char *const from[] = {"zeroblob(", "x'", "hex(vp)"};
	static const char *const to[] = {"decode(repeat('00', ", "'\\x",
	                                 "upper(encode(vp, 'hex'))"};
	size_t cap = strlen(q) * 8 + 1, n = 0;
	char *out = malloc(cap);
	const char *start = q;

	assert_non_null(out);
	while (*q) {
		size_t k;
		for (k = 0; k < 3; k++)
			if (strncmp(q, from[k], strlen(from[k])) == 0)
				break;
		/* x'..' only as a literal of its own, not the end of a word or of a string */
		if (k == 1 && q > start &&
		    (q[-1] == '\'' || q[-1] == '_' || (q[-1] >= 'a' && q[-1] <= 'z') ||
		     (q[-1] >= 'A' && q[-1] <= 'Z') || (q[-1] >= '0' && q[-1] <= '9')))
			k = 3;
		if (k == 1) { /* x'HEX' -> '\xHEX'::bytea */
			n += (size_t)snprintf(out + n, cap - n, "%s", to[k]);
			q += strlen(from[k]);
			while (*q && *q != '\'')
				out[n++] = *q++;
			if (*q == '\'')
				q++;
			n += (size_t)snprintf(out + n, cap - n, "'::bytea");
			continue;
		}
		if (k == 0) { /* zeroblob(N) -> decode(repeat('00', N), 'hex') */
			n += (size_t)snprintf(out + n, cap - n, "%s", to[k]);
			q += strlen(from[k]);
			while (*q >= '0' && *q <= '9')
				out[n++] = *q++;
			n += (size_t)snprintf(out + n, cap - n, "), 'hex'");
		} else if (k < 3) {
			n += (size_t)snprintf(out + n, cap - n, "%s", to[k]);
			q += strlen(from[k]);
		} else {
			out[n++] = *q++;
		}
	}
	out[n] = '\0';
	return out;
}

static void tfx_sql(const char *where, const char *q)
{
	sqlite3 *db = NULL;

	if (tfx_is_pg(where)) {
		char *pq = tfx_pg_dialect(q);
		tfx_pg_exec(where, pq);
		free(pq);
		return;
	}
	assert_int_equal(sqlite3_open(where, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(sqlite3_exec(db, q, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

/* A new empty schema in the KYOK_TEST_PG database: *uri is a store URI (and libpq conninfo)
 * whose search_path is that schema. */
static void tfx_pg_schema_new(char *schema, size_t scap, char *uri, size_t ucap)
{
	static int seq;
	char q[256];
	const char *base = tfx_pg();

	snprintf(schema, scap, "t%ld_%d", (long)getpid(), ++seq);
	snprintf(q, sizeof(q), "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s", schema,
	         schema);
	tfx_pg_exec(base, q);
	assert_true((size_t)snprintf(uri, ucap, "%s%soptions=-csearch_path%%3D%s", base,
	                             strchr(base, '?') ? "&" : "?", schema) < ucap);
}

static void tfx_pg_schema_drop(const char *schema)
{
	char q[256];

	snprintf(q, sizeof(q), "DROP SCHEMA IF EXISTS %s CASCADE", schema);
	tfx_pg_exec(tfx_pg(), q);
}

/* For tests that read SQLite files with SQLite itself (WAL mode, file copies, an old schema
 * upgraded in place): there is no such thing on PostgreSQL. */
#define TFX_SQLITE_ONLY(f)                                                                        \
	do {                                                                                      \
		if ((f)->pg) {                                                                    \
			fprintf(stderr, "skipped on PostgreSQL: reads the SQLite file itself\n"); \
			skip();                                                                   \
		}                                                                                 \
	} while (0)

#define TFX_PG_ONLY(f)                                                              \
	do {                                                                        \
		if (!(f)->pg) {                                                     \
			fprintf(stderr, "PostgreSQL only: KYOK_TEST_PG not set\n"); \
			skip();                                                     \
		}                                                                   \
	} while (0)

#endif
