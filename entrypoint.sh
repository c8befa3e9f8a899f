#!/usr/bin/env bash
# Container (and `make run`) entrypoint: wait for PostgreSQL, apply pending migrations,
# then hand the process over to gunicorn. Any refusal exits non-zero before gunicorn starts.
set -euo pipefail

cd "$(dirname "$0")"
if [ -x .venv/bin/python ]; then
    PATH="$PWD/.venv/bin:$PATH"
fi

if [ -z "${DATABASE_URL:-}" ]; then
    echo "entrypoint: DATABASE_URL is not set: give a PostgreSQL URL such as postgresql://user:password@host:5432/dbname" >&2
    exit 2
fi

echo "entrypoint: waiting for the database (up to ${DB_WAIT_TIMEOUT:-60}s), then applying pending migrations" >&2
python -m backend.lifecycle.prestart

echo "entrypoint: starting gunicorn on port ${PORT:-8000}" >&2
exec gunicorn --config gunicorn.conf.py wsgi:app
