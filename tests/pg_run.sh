#!/bin/bash
# Runs a test program against a throw-away PostgreSQL cluster: KYOK_TEST_PG holds its URI.
#   tests/pg_run.sh PROGRAM [ARGS...]
set -u
. "$(dirname "$0")/pg.sh"
trap pg_stop EXIT
pg_start || exit 1
KYOK_TEST_PG=$KYOK_PG_URI "$@"
