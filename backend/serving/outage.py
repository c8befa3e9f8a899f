"""What a client gets when the database cannot serve its request: a quick 503, not a 500.

Three kinds of failure are the database's, not the request's, and answer 503 with a short
reason and ``Retry-After``: the database unreachable or not answering (down, restarting,
hung past the deadline), a statement stopped by ``statement_timeout``, and a schema that
lacks this code's tables (``MIGRATE_ON_START=0`` on a database not migrated yet). Each is
one log line, never a traceback: an outage under load must not bury the log.

While the database is known to be unreachable, a request would only wait to learn the
same thing, holding a worker thread that ``/healthz`` may need. So after such a failure
the process answers 503 at once for ``COOLDOWN`` seconds; then one request checks the
database (others keep getting 503 meanwhile), and the first success closes the circuit.
Recovery needs no restart. Rejections are summarised in one line every ``SUMMARY_EVERY``
seconds.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg2
from flask import Flask, Response, jsonify, request
from psycopg2 import errors as pg_errors
from sqlalchemy import exc as sa_exc

from backend.extensions import db
from backend.postgres import describe_error
from backend.serving.metrics import CIRCUIT_OPEN, CIRCUIT_REJECTIONS

log = logging.getLogger("backend.serving.outage")

COOLDOWN = 1.0
SUMMARY_EVERY = 5.0
# Codes meaning "this code's tables or columns are not there": a schema not migrated yet.
_SCHEMA_MISSING = (pg_errors.UndefinedTable, pg_errors.UndefinedColumn)


class DatabaseUnavailable(Exception):
    """The database is known to be unreachable; the message is the reason, one line."""


class Circuit:
    """Per-process memory of an outage; thread-safe, for threaded workers."""

    def __init__(self, cooldown: float = COOLDOWN) -> None:
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self.reason = ""          # empty: closed, requests go through
        self._retry_at = 0.0
        self._rejected = 0
        self._summary_at = 0.0

    def admit(self, probe) -> None:
        """Let a request through, or raise ``DatabaseUnavailable``.

        When the cooldown is over, the caller runs ``probe`` (a cheap statement) for
        everyone; other requests are turned away until it has answered.
        """
        if not self.reason:
            return
        with self._lock:
            reason, now = self.reason, time.monotonic()
            if reason and now < self._retry_at:
                self._count_rejection(now)
                raise DatabaseUnavailable(reason)
            self._retry_at = now + 3600  # this request probes; the rest wait for its verdict
        if not reason:
            return
        try:
            probe()
        except Exception as exc:  # whatever the probe met, the circuit must not stay shut
            self.failed(describe_error(exc))
            raise DatabaseUnavailable(self.reason) from None
        self.recovered()

    def failed(self, reason: str) -> None:
        with self._lock:
            first = not self.reason
            self.reason = reason
            CIRCUIT_OPEN.set(1)
            self._retry_at = time.monotonic() + self.cooldown
        if first:
            log.warning("database unavailable: %s; answering 503 until it is back", reason)

    def recovered(self) -> None:
        with self._lock:
            was, self.reason, self._retry_at = self.reason, "", 0.0
            CIRCUIT_OPEN.set(0)
            rejected, self._rejected = self._rejected, 0
        if was:
            log.warning("database available again (%d request(s) answered 503 meanwhile)",
                        rejected)

    def _count_rejection(self, now: float) -> None:
        self._rejected += 1
        CIRCUIT_REJECTIONS.inc()
        if now >= self._summary_at:
            self._summary_at = now + SUMMARY_EVERY
            log.warning("database unavailable: %d request(s) answered 503 so far: %s",
                        self._rejected, self.reason)


circuit = Circuit()


def classify(error: BaseException) -> tuple[str, bool] | None:
    """(reason, unreachable) for a failure that is the database's, else None (a bug)."""
    if isinstance(error, DatabaseUnavailable):
        return f"database unavailable: {error}", False
    if isinstance(error, sa_exc.TimeoutError):  # every pooled connection busy for too long
        return "database busy: no connection free in time", False
    orig = getattr(error, "orig", error)
    if isinstance(orig, pg_errors.QueryCanceled):
        return f"database too slow: {describe_error(orig)}", False
    if isinstance(orig, _SCHEMA_MISSING):
        return f"database schema not ready for this code: {describe_error(orig)}", False
    if (isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated) \
            or isinstance(orig, psycopg2.OperationalError | psycopg2.InterfaceError):
        return f"database unavailable: {describe_error(orig)}", True
    return None


def _answer(error: Exception) -> Response | tuple[Response, int]:
    verdict = classify(error)
    if verdict is None:
        log.exception("%s %s failed", request.method, request.path)
        return jsonify(error="internal error"), 500
    reason, unreachable = verdict
    if unreachable:
        circuit.failed(reason.removeprefix("database unavailable: "))
    elif not isinstance(error, DatabaseUnavailable):
        log.warning("%s %s: 503 %s", request.method, request.path, reason)
    response = jsonify(error=reason)
    response.status_code = 503
    response.headers["Retry-After"] = "1"
    return response


def _end_session(_error: BaseException | None) -> None:
    """Flask-SQLAlchemy ends each request's session with a ROLLBACK, after the response is
    made. On a database that hangs or has gone, that round trip fails, and an exception in
    teardown would replace the answer with a bare 500. The connection is already
    invalidated by then, so forgetting the session is all that is left to do."""

    try:
        db.session.remove()
    except (sa_exc.DBAPIError, psycopg2.Error):
        db.session.registry.clear()


def _ping() -> None:
    with db.engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")


def _admit() -> None:
    """While the database is known down, answer 503 at once, on every route of the
    application (whatever blueprints it registers); the health probes and /metrics say so
    themselves."""
    if request.blueprint not in ("health", "metrics"):
        circuit.admit(_ping)


def init_app(app: Flask) -> None:
    """Answer the database's failures with 503 everywhere in ``app``. Call it after
    ``db.init_app``: teardown functions run last-registered first, so ours goes first."""
    app.before_request(_admit)
    for error in (sa_exc.DBAPIError, sa_exc.TimeoutError, psycopg2.Error, DatabaseUnavailable):
        app.register_error_handler(error, _answer)
    app.teardown_appcontext(_end_session)
