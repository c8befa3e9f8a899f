#!/usr/bin/env bash
# The database and its two roles for docker-compose.yml, run by its one-shot `db-roles`
# service on every `docker compose up`, before the backend starts. It creates what is
# missing and sets both passwords from the environment each time, so `.env` stays the one
# place they are kept:
#   app_owner  owns the database `app`, hence its schema `public` and every table the
#              migrations create; a member of pg_monitor, so that background migrations see
#              (and pause for) the runtime role's long transactions and lock waits
#   app        the runtime role: a plain login with CONNECT on `app` and nothing more. It
#              cannot create in `public` (PostgreSQL 15 and newer no longer grant CREATE on
#              it to PUBLIC; older servers have it revoked below); the lifecycle grants it
#              the data privileges after each upgrade (docs/operations.md, "Two roles").
# It connects as the superuser (PGHOST, PGUSER, PGPASSWORD) and reads APP_OWNER_PASSWORD and
# APP_PASSWORD from the environment, never from its command line. psql 15 or newer.
set -euo pipefail

fail() {
    printf 'db-roles: %s\n' "$*" >&2
    exit 1
}

for name in APP_OWNER_PASSWORD APP_PASSWORD; do
    value="${!name:-}"
    if [ -z "$value" ]; then
        fail "$name is not set: give it a value in .env (see .env.example)"
    fi
    # docker-compose.yml writes the passwords into URLs as they are.
    if ! [[ "$value" =~ ^[A-Za-z0-9._~-]+$ ]]; then
        fail "$name may hold only letters, digits and . _ ~ - (it goes into a URL as it is)"
    fi
done

if ! psql --no-psqlrc --quiet --dbname postgres --command 'SELECT 1' >/dev/null; then
    fail "cannot connect to ${PGHOST:-the server} as ${PGUSER:-postgres} (why: above)." \
        "POSTGRES_PASSWORD must be the one the pgdata volume was created with, and a volume" \
        "created before the two roles has no postgres role: \`docker compose down -v\`" \
        "deletes the volume, and its data, so that the next \`up\` starts afresh"
fi

psql --no-psqlrc --quiet --set ON_ERROR_STOP=1 --dbname postgres <<'SQL'
SET client_min_messages = warning;
\getenv owner_password APP_OWNER_PASSWORD
\getenv app_password APP_PASSWORD
SELECT 'CREATE ROLE app_owner'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_owner') \gexec
SELECT 'CREATE ROLE app'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') \gexec
ALTER ROLE app_owner WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'owner_password';
ALTER ROLE app WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
GRANT pg_monitor TO app_owner;
SELECT 'CREATE DATABASE app OWNER app_owner'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'app') \gexec
-- The two roles connect; no other role without a superuser's say.
REVOKE ALL ON DATABASE app FROM PUBLIC;
GRANT CONNECT ON DATABASE app TO app;
\connect app
SET client_min_messages = warning;
-- PostgreSQL 14 and older let every role create in public (owned by the superuser there):
-- give the schema to the owner and take CREATE away from everyone else.
SELECT current_setting('server_version_num')::int < 150000 AS before_15 \gset
\if :before_15
ALTER SCHEMA public OWNER TO app_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
\endif
SQL
echo "db-roles: the database app, its owner app_owner and the runtime role app are ready" >&2
