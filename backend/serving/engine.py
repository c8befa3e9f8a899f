"""The app's database engine: its options, the rule that no connection crosses a fork, and
a check at checkout that a pooled connection is still alive, without a round trip.

gunicorn's master migrates through this engine, then forks the workers. A pooled
connection copied into a child shares its socket with the parent and every sibling: two
processes then read each other's results (a worker answering with another request's rows).
SQLAlchemy's rule is that pooled connections never cross a fork; here it is enforced, not
just followed: a connection remembers the process that opened it, and any other process
that checks it out gets a fresh one instead (the inherited socket is left untouched, so the
owner is not disturbed either).
"""

from __future__ import annotations

import os
import select
from typing import Any

from sqlalchemy import Engine, event, exc

from backend.config import Config
from backend.serving.watchdog import WatchedConnection

APPLICATION_NAME = "backend"


def engine_options(config: Config) -> dict[str, Any]:
    """Flask-SQLAlchemy's ``SQLALCHEMY_ENGINE_OPTIONS`` for the service."""
    return {
        # No pool_pre_ping: a SELECT 1 per checkout was a quarter of a read's cost. A
        # connection the server closed while it sat in the pool is found at checkout by
        # looking at its socket instead (forbid_inherited_connections below).
        # One connection per request thread: a worker never holds more than it can use,
        # and the database sees at most workers x threads of them (plus /readyz's one).
        "pool_size": config.threads,
        "max_overflow": 0,
        "pool_timeout": config.db_query_timeout,
        "connect_args": {
            # Round trips the per-worker watchdog can bound (backend/serving/watchdog.py).
            "connection_factory": WatchedConnection,
            "connect_timeout": 5,
            "application_name": APPLICATION_NAME,
            # A peer that vanished without a FIN (a dead host, a dropped NAT entry) is
            # noticed within about a minute instead of the kernel's two hours.
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    }


def closed_while_idle(dbapi_connection) -> bool:
    """Whether the server has spoken on an idle connection: it only does so to end it.

    Between transactions PostgreSQL sends nothing unasked (this service never LISTENs);
    when it ends a session (a restart, pg_terminate_backend, idle_session_timeout) it sends
    the error and closes the socket, which then reads as ready. A socket with nothing to
    read is a connection as good as a SELECT 1 would find it, for one system call instead
    of a round trip. A peer that vanished without a word is the keepalives' to find.
    """
    if dbapi_connection.closed:
        return True
    fd = dbapi_connection.fileno()
    if fd < 1024:  # select()'s limit; a worker's few sockets are far below it
        return bool(select.select([fd], [], [], 0)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def forbid_inherited_connections(engine: Engine) -> None:
    """Make a pooled connection usable only in the process that opened it, and only while
    the server has not closed it."""

    @event.listens_for(engine, "connect")
    def _remember_owner(dbapi_connection, record) -> None:
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection, record, proxy) -> None:
        if record.info.get("pid") != os.getpid():
            # Detach without closing: closing would send a Terminate message on the
            # socket the parent still uses. The pool then connects anew for this process.
            record.dbapi_connection = proxy.dbapi_connection = None
            raise exc.DisconnectionError("connection opened in another process")
        if closed_while_idle(dbapi_connection):
            # The pool closes this one and checks out a fresh connection in its place.
            raise exc.DisconnectionError("connection closed by the server while idle")


def limit_request_time(engine: Engine, seconds: float) -> None:
    """Every new connection of ``engine`` runs with ``statement_timeout``: a slow query
    is stopped by the server after ``seconds``. Set in the connection's start-up packet,
    so it costs no round trip; only serving workers call this, migrations keep theirs."""

    @event.listens_for(engine, "do_connect")
    def _with_timeout(dialect, record, cargs, cparams) -> None:
        options = cparams.get("options", "")
        cparams["options"] = f"{options} -c statement_timeout={int(seconds * 1000)}".strip()
