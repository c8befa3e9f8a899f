"""Liveness and readiness.

``/healthz`` says the process runs and touches nothing else, so a slow database never gets
a healthy worker restarted. ``/readyz`` says whether this replica should get traffic: the
database answers and its schema is the one this code was written for.

``/readyz`` is polled often, so it costs one short statement: it reads the applied
revisions and their checksums on a driver connection of its own (the statement is the ping;
a connection gone stale is replaced once). Probes that queue for that connection behind a
read which began after they arrived share its rows. The answer for a given database state
is computed and serialised once, then reused; the scripts are parsed once per state of the
versions folder (one stat per request tells when a revision file came or went).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from functools import lru_cache

import psycopg2
from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy.engine import URL

from backend.extensions import db
from backend.migrate.revisions import (
    TABLES_SQL,
    disk_checksums,
    evaluate,
    load_scripts,
    parse_state,
    state_sql,
    versions_stamp,
)
from backend.postgres import connect_kwargs, describe_error
from backend.serving.watchdog import NoAnswer, WatchedConnection

health = Blueprint("health", __name__)
log = logging.getLogger(__name__)


State = tuple[tuple[str, str, str | None], ...]  # the rows, as read: the cache key


@health.get("/healthz")
def healthz():
    return jsonify(status="ok")


class _StateReader:
    """One autocommit driver connection per process, guarded for threaded workers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = 0
        self.conn = None
        self.cur = None
        self.prepared = False
        self.url: URL | None = None  # the database the connection is to
        # The last read on that connection: when it began, and its rows.
        self.last: tuple[float, State] | None = None

    def _connect(self, url: URL) -> None:
        if self.conn is not None and not self.conn.closed and self.pid == os.getpid():
            self.conn.close()  # to another database (never a connection inherited at fork)
        kwargs = connect_kwargs(url)
        kwargs.update(connect_timeout=3, application_name="backend-readyz",
                      connection_factory=WatchedConnection)
        self.conn = psycopg2.connect(**kwargs)
        self.conn.autocommit = True
        self.cur, self.pid, self.prepared = self.conn.cursor(), os.getpid(), False
        self.url = url

    def _query(self, url: URL) -> list[tuple]:
        if (self.conn is None or self.pid != os.getpid() or self.conn.closed
                or url != self.url):
            self._connect(url)
        cur = self.cur
        try:
            if not self.prepared:  # parsed and planned once per connection, not per request
                cur.execute(f"PREPARE readyz_state AS {state_sql(True, True)}")
                self.prepared = True
            cur.execute("EXECUTE readyz_state")
        except psycopg2.errors.UndefinedTable:  # not migrated (fully) yet
            cur.execute(TABLES_SQL)
            query = state_sql(*cur.fetchone())
            if not query:
                return []
            cur.execute(query)
        return cur.fetchall()

    def read(self, url: URL, wait: float) -> State:
        asked = time.monotonic()
        # Probes keep coming while the database hangs: each waits at most ``wait`` for the
        # one in flight, instead of piling up and taking every worker thread.
        if not self.lock.acquire(timeout=wait):
            raise NoAnswer(f"another readiness check has been waiting over {wait:g}s")
        try:
            # Probes that queued behind a read which began after they arrived take its rows:
            # the answer is still one the database gave after the probe came in, and a burst
            # of probes costs one statement instead of one each.
            if self.last is not None and self.last[0] > asked and url == self.url:
                return self.last[1]
            began, self.last = time.monotonic(), None
            rows = self._read_once(url)
            self.last = (began, rows)
            return rows
        finally:
            self.lock.release()

    def _read_once(self, url: URL) -> State:
        try:
            return tuple(self._query(url))
        except NoAnswer:
            raise  # hung, not stale: a second try would only wait as long again
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if self.conn is not None and not self.conn.closed:
                raise
            self.conn = None  # stale after a database restart: one fresh try
            return tuple(self._query(url))


_reader = _StateReader()


@lru_cache(maxsize=64)
def _answer(directory: str, stamp: int, state: State, allow_edited: bool, allow_ahead: bool
            ) -> tuple[bytes, int]:
    current, recorded = parse_state(state)
    status = evaluate(load_scripts(directory, stamp), current, recorded,
                      disk_checksums(directory, stamp), allow_edited, allow_ahead)
    body = {"status": "ready" if status.at_head else "not ready", "database": "ok",
            **status.as_dict()}
    return json.dumps(body).encode(), 200 if status.at_head else 503


@health.get("/readyz")
def readyz():
    directory = current_app.extensions["migrate"].directory
    settings = current_app.config["SERVICE_CONFIG"]
    try:
        state = _reader.read(db.engine.url, settings.db_query_timeout)
    except psycopg2.Error as exc:
        reason = describe_error(exc)
        log.warning("readiness: database unavailable: %s", reason)
        body = {"status": "unavailable", "database": "error", "current": [],
                "head": sorted(load_scripts(directory).get_heads()), "pending": [], "ahead": [],
                "reason": f"database unavailable: {reason}"}
        return jsonify(body), 503
    payload, code = _answer(directory, versions_stamp(directory), state,
                            settings.allow_edited, settings.allow_ahead)
    return Response(payload, status=code, mimetype="application/json")
