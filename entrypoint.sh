#!/usr/bin/env bash
# Container (and `make run`) entrypoint: wait for PostgreSQL, apply pending migrations
# (what `flask db upgrade` does, same env.py), then serve. gunicorn is exec'd and keeps
# PID 1; its master does the waiting and migrating (gunicorn.conf.py, on_starting) before
# it opens the port, so the app is imported once. Any refusal exits non-zero and the port
# never opens.
set -euo pipefail

cd "$(dirname "$0")"
if [ -x .venv/bin/python ]; then
    PATH="$PWD/.venv/bin:$PATH"
fi

# One line per event, in the format the rest of the service logs in.
say() {
    local level="$1"; shift
    if [ "${LOG_FORMAT:-text}" = "json" ]; then
        printf '{"time": "%s", "level": "%s", "logger": "entrypoint", "message": "%s"}\n' \
            "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$level" "$*" >&2
    else
        printf '%s %s entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" \
            "${level^^}" "$*" >&2
    fi
}

if [ -z "${DATABASE_URL:-}" ]; then
    say error "DATABASE_URL is not set: give a PostgreSQL URL such as postgresql://user:password@host:5432/dbname"
    exit 2
fi

# gunicorn reads WEB_CONCURRENCY itself as it loads, before gunicorn.conf.py checks the
# settings, and dies with a traceback on anything but digits. Empty means unset (compose
# renders an unset ${VAR:-} as ""); anything else not a number is refused the usual way.
case "${WEB_CONCURRENCY-}" in
    "") unset WEB_CONCURRENCY ;;
    *[!0-9]*) exec python -m backend.config ;;
esac

say info "waiting for the database (up to ${DB_WAIT_TIMEOUT:-60}s), applying pending migrations, then serving on port ${PORT:-8000}"
exec gunicorn --config gunicorn.conf.py wsgi:app
