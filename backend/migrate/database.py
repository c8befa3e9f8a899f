"""Reaching the database: one connection attempt, and waiting until one succeeds.

Transient failures (refused, unknown host while DNS catches up, server starting) are
retried until the deadline; anything a retry cannot fix (wrong password, unknown role or
database, bad connection options) fails at once.
"""

from __future__ import annotations

import logging
import time

import psycopg2
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from backend.config import mask_url
from backend.migrate import LifecycleError
from backend.postgres import connect_kwargs, describe_error

log = logging.getLogger("backend.lifecycle")

_PERMANENT = (
    "password authentication failed",
    "no password supplied",
    "does not exist",          # role or database
    "no pg_hba.conf entry",
    "invalid connection option",
    "invalid dsn",
    "invalid integer value",
    "invalid sslmode",
    "permission denied for database",
)


def is_permanent(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _PERMANENT)


def try_connect(url: URL, timeout: float = 5.0) -> None:
    """Open and close one connection; raises psycopg2 errors as they come."""
    kwargs = connect_kwargs(url)
    kwargs.setdefault("connect_timeout", max(1, int(timeout)))
    psycopg2.connect(**kwargs).close()


def owner_engine(settings, app_engine: Engine) -> Engine:
    """The engine schema changes run on: the app's own in the simple mode; with
    MIGRATION_DATABASE_URL, one for the owner role, for one command (no pool to keep,
    nothing to cross a fork), since the app's serves as the runtime role."""
    if settings.migration_database_url is None:
        return app_engine
    return create_engine(settings.migration_database_url, poolclass=NullPool,
                         connect_args={"connect_timeout": 10,
                                       "application_name": "backend-migrate"})


def connect(url: URL, application_name: str = "backend", **extra):
    """A driver connection in autocommit mode; failing to connect is one line, masked."""
    try:
        conn = psycopg2.connect(**connect_kwargs(url), connect_timeout=10,
                                application_name=application_name, **extra)
    except psycopg2.Error as exc:
        raise LifecycleError(f"cannot connect to {mask_url(url)}: {describe_error(exc)}") \
            from None
    conn.autocommit = True
    return conn


def run_sql(url: URL, statement: str, application_name: str = "backend") -> list[tuple]:
    """One statement outside a transaction (CREATE/DROP DATABASE need that); its rows.
    Any failure is one line naming the statement's verb and the masked URL."""
    conn = connect(url, application_name)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description else []
    except psycopg2.Error as exc:
        raise LifecycleError(f"{statement.split()[0]} on {mask_url(url)} failed: "
                             f"{describe_error(exc)}") from None
    finally:
        conn.close()


def wait_for_database(url: URL, timeout: float, interval: float = 1.0) -> float:
    """Block until the database accepts a connection; return the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            try_connect(url, timeout=min(5.0, max(1.0, remaining)))
            waited = time.monotonic() - started
            log.info("database %s answered (attempt %d, %.2fs)", mask_url(url), attempt, waited)
            return waited
        except psycopg2.Error as exc:
            reason = describe_error(exc)
            if is_permanent(reason):
                raise LifecycleError(f"cannot connect to {mask_url(url)}: {reason}") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LifecycleError(
                    f"database {mask_url(url)} did not answer within {timeout:g}s: {reason}"
                ) from None
            log.info("waiting for database %s (attempt %d, %.0fs left): %s",
                     mask_url(url), attempt, remaining, reason)
            time.sleep(min(interval, remaining))
