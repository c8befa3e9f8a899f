# Two images from one file:
#   docker build .               the runtime image (the last stage): the service and nothing
#                                else, as production runs it
#   docker build --target dev .  the development image docker-compose.override.yml uses: the
#                                same base plus the development pins (lint, tests, autogenerate);
#                                the source is bind-mounted over /app instead of copied
# Both carry the PostgreSQL 17 client tools (pg_isready, pg_dump; at least the server's major
# in docker-compose.yml) and install the same pinned runtime dependencies as `make install`.
FROM python:3.11-slim-trixie AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

# The client's major version is in the package name; Debian trixie ships 17.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-17 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --create-home app \
    && mkdir -p /backups && chown 10001:10001 /backups

WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
EXPOSE 8000
ENTRYPOINT ["./entrypoint.sh"]


FROM base AS dev
# Runs as root so that it can write to a bind mount whoever owns it on the host;
# scripts/create_migration.sh gives a new revision its directory's owner, so the file is
# the developer's on the host, not root's.
COPY requirements-dev.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements-dev.lock


FROM base AS runtime
COPY backend ./backend
COPY migrations ./migrations
# The operator's scripts only: the developer tools (migration_tools/, the other scripts)
# stay in the checkout and the dev target.
COPY scripts/_common.sh scripts/backup.sh scripts/restore.sh ./scripts/
COPY entrypoint.sh gunicorn.conf.py wsgi.py ./

USER 10001:10001
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=4)"]
