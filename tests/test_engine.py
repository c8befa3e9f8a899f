"""The serving engine's connections: a pooled connection never crosses a fork (a child
that checks one out gets its own), one the server closed while idle is replaced at checkout
without a round trip, and a round trip never outlasts the deadline.

The checks need no table, so they run on an empty database, whatever application is present.
"""

from __future__ import annotations

import json
import os
import time

import psycopg2
from sqlalchemy import event, text

from backend import create_app
from backend.config import Config
from backend.extensions import db
from backend.postgres import connect_kwargs
from backend.serving import watchdog
from backend.serving.watchdog import NoAnswer, WatchedConnection


def backend_pid() -> int:
    return db.session.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_a_forked_child_gets_a_connection_of_its_own(empty_db):
    # Arrange: the parent holds a pooled connection, as gunicorn's master does after migrating.
    app = create_app(Config(database_url=empty_db))
    with app.app_context():
        parent_backend = backend_pid()
        db.session.remove()  # back to the pool, ready to be (wrongly) reused
        read, write = os.pipe()

        # Act
        child = os.fork()
        if child == 0:  # the child: use the pool, report which server process answered
            try:
                os.write(write, str(backend_pid()).encode())
            finally:
                os._exit(0)
        os.close(write)
        child_backend = int(os.read(read, 64).decode() or 0)
        os.waitpid(child, 0)

        # Assert: different server processes, and the parent's connection still works.
        assert child_backend not in (0, parent_backend)
        assert backend_pid() == parent_backend
        db.engine.dispose()


def test_a_connection_the_server_closed_while_idle_is_replaced_at_checkout(empty_db):
    # Arrange: a pooled connection, then its server process ended (a restart, an idle
    # timeout, an operator's pg_terminate_backend) while it sits in the pool.
    app = create_app(Config(database_url=empty_db))
    with app.app_context():
        statements: list[str] = []
        event.listen(db.engine, "before_cursor_execute",
                     lambda conn, cur, statement, *_: statements.append(statement))
        stale = backend_pid()
        db.session.remove()
        with psycopg2.connect(**connect_kwargs(empty_db)) as admin, admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (stale,))
        time.sleep(0.2)
        statements.clear()

        # Act: the next request's first statement
        fresh = backend_pid()

        # Assert: it ran on a new connection, with no error and no ping before it
        assert fresh != stale
        assert statements == ["SELECT pg_backend_pid()"]
        db.engine.dispose()


def _slow_round_trips(url) -> dict:
    """In a process of its own (the watchdog is per process and stays): a half-second
    deadline, a statement the server would run for ten seconds, then one within it."""
    watchdog.start(0.5)
    conn = psycopg2.connect(**connect_kwargs(url), connection_factory=WatchedConnection)
    began = time.monotonic()
    try:
        conn.cursor().execute("SELECT pg_sleep(10)")
        error = ""
    except NoAnswer as exc:
        error = str(exc)
    took, closed = time.monotonic() - began, bool(conn.closed)
    quick = psycopg2.connect(**connect_kwargs(url), connection_factory=WatchedConnection)
    with quick.cursor() as cur:
        cur.execute("SELECT pg_sleep(0.2), 1")
        answered = cur.fetchone()[1]
    return {"error": error, "took": took, "closed": closed, "answered": answered}


def test_a_round_trip_past_the_deadline_ends_at_the_deadline(empty_db):
    # Arrange / act: in a forked child, so the watchdog's deadline stays out of this process
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.write(write, json.dumps(_slow_round_trips(empty_db)).encode())
        finally:
            os._exit(0)
    os.close(write)
    result = json.loads(os.read(read, 4096).decode())
    os.waitpid(child, 0)

    # Assert: given up at the deadline, the connection closed for the pool to replace; a
    # round trip inside the deadline left alone
    assert result["error"] == "the database did not answer within 0.5s"
    assert 0.45 <= result["took"] < 2.0
    assert result["closed"]
    assert result["answered"] == 1
