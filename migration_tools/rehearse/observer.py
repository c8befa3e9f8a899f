"""What the rehearsal measures on the scratch database while revisions run: tables,
sizes, row counts, the schema, and the locks each revision takes (sampled from pg_locks)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from sqlalchemy import event
from sqlalchemy.engine import URL

from backend.migrate.revisions import read_state_with_cursor
from migration_tools.fingerprint import BOOKKEEPING, Schema, snapshot_with_cursor
from migration_tools.rehearse import rehearsal_connection

LOCK_MODES = ("AccessShareLock", "RowShareLock", "RowExclusiveLock",
              "ShareUpdateExclusiveLock", "ShareLock", "ShareRowExclusiveLock",
              "ExclusiveLock", "AccessExclusiveLock")
# What each mode keeps the application from doing while it is held, for the report.
LOCK_BLOCKS = {
    "AccessExclusiveLock": "blocks reads and writes",
    "ExclusiveLock": "blocks writes; plain reads go on",
    "ShareRowExclusiveLock": "blocks writes",
    "ShareLock": "blocks writes",
    "ShareUpdateExclusiveLock": "blocks other DDL and VACUUM; reads and writes go on",
    "RowExclusiveLock": "ordinary writes; blocks only DDL",
    "RowShareLock": "SELECT FOR UPDATE; blocks only DDL",
    "AccessShareLock": "ordinary reads; blocks only DDL",
}
# Whole-run checks: key (in the JSON) and what it asserts (in the report).

SAMPLE_EVERY = 0.002  # seconds between two looks at pg_locks while a revision runs

_USER_TABLES = """
    SELECT c.oid, n.nspname, c.relname, c.relfilenode, pg_total_relation_size(c.oid)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm')
      AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
"""
_OWN_LOCKS = ("SELECT relation::bigint, mode FROM pg_locks "
              "WHERE locktype = 'relation' AND pid = pg_backend_pid()")
_LOCKS_OF = ("SELECT relation::bigint, mode FROM pg_locks "
             "WHERE locktype = 'relation' AND pid = ANY(%s)")
# One line per column, constraint and index of the application's tables: two databases
# with the same lines have the same schema, whatever the order of columns.


# --- measurements -----------------------------------------------------------------------


@dataclass(frozen=True)
class TableState:
    """One table at one moment: identity, storage file, size and exact row count."""

    oid: int
    filenode: int
    bytes: int
    rows: int


Snapshot = dict[str, TableState]  # by table name ("tasks", or "schema.table" off public)
Seen = dict[tuple[int, str], list[float]]  # (table oid, lock mode) -> [first, last] seen


def table_name(schema: str, name: str) -> str:
    return name if schema == "public" else f"{schema}.{name}"


def strongest(modes: Iterator[str] | Sequence[str] | set[str]) -> str:
    """The mode that conflicts with the most others, in PostgreSQL's order."""
    return max(modes, key=lambda mode: LOCK_MODES.index(mode) if mode in LOCK_MODES else -1)


class Observer:
    """A separate connection to the scratch database that measures between revisions,
    and watches the migration connection's locks while one runs.

    Locks come from two places. Each commit of the migration connection records the
    locks its transaction holds at that moment (a table lock lasts until the end of the
    transaction, so none is missed, however short the revision). A sampler thread polls
    ``pg_locks`` for the migration connection's backend while the revision runs, which
    also sees statements run outside a transaction (``autocommit_block``, e.g. CREATE
    INDEX CONCURRENTLY) when they last longer than a few milliseconds.
    """

    def __init__(self, url: URL) -> None:
        self.conn = rehearsal_connection(url)
        self.pids: set[int] = set()
        self._seen: Seen = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampler = rehearsal_connection(url)

    def close(self) -> None:
        self.stop()
        for conn in (self.conn, self._sampler):
            with contextlib.suppress(psycopg2.Error):
                conn.close()

    # -- hooks on the migration engine --

    def watch(self, engine: Any) -> None:
        """Learn the migration connection's backend pid; record locks at each commit."""

        event.listen(engine, "connect", self._on_connect)
        event.listen(engine, "commit", self._on_commit)

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        self.pids.add(dbapi_connection.get_backend_pid())

    def _on_commit(self, connection: Any) -> None:
        """Inside the migration's transaction, just before COMMIT: read its own locks.

        Under a savepoint, so that even a failure here cannot spoil the transaction.
        """
        raw = connection.connection.dbapi_connection
        if raw is None or raw.info.transaction_status != \
                psycopg2.extensions.TRANSACTION_STATUS_INTRANS:
            return
        with raw.cursor() as cur:
            try:
                cur.execute("SAVEPOINT rehearse_locks")
                cur.execute(_OWN_LOCKS)
                rows = cur.fetchall()
                cur.execute("RELEASE SAVEPOINT rehearse_locks")
            except psycopg2.Error:
                with contextlib.suppress(psycopg2.Error):
                    cur.execute("ROLLBACK TO SAVEPOINT rehearse_locks")
                return
        self._add(rows)

    def _add(self, rows: list[tuple[int, str]]) -> None:
        now = time.monotonic()
        with self._mutex:
            for oid, mode in rows:
                if oid is not None:
                    self._seen.setdefault((int(oid), mode), [now, now])[1] = now

    # -- the sampler --

    def start(self) -> None:
        with self._mutex:
            self._seen.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="rehearse-locks",
                                        daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        with contextlib.suppress(psycopg2.Error), self._sampler.cursor() as cur:
            while not self._stop.is_set():
                if self.pids:
                    cur.execute(_LOCKS_OF, (sorted(self.pids),))
                    self._add(cur.fetchall())
                self._stop.wait(SAMPLE_EVERY)

    def stop(self) -> Seen:
        """Stop sampling; every (table oid, lock mode) seen since :meth:`start`, with the
        first and last time it was seen."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._mutex:
            return dict(self._seen)

    # -- between revisions --

    def _rows(self, statement: str | sql.Composable, params: Any = None) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()

    def snapshot(self) -> Snapshot:
        """Every application table with its storage file, size and exact row count."""
        tables = {}
        for oid, schema, name, filenode, size in self._rows(_USER_TABLES):
            if name in BOOKKEEPING and schema == "public":
                continue
            rows = self._rows(sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(name)))[0][0]
            tables[table_name(schema, name)] = TableState(oid, filenode, size, rows)
        return tables

    def schema(self) -> Schema:
        """The schema fingerprint, to compare two moments of the same database."""
        with self.conn.cursor() as cur:
            return snapshot_with_cursor(cur)

    def server_version(self) -> str:
        return str(self._rows("SHOW server_version")[0][0]).split()[0]

    def revision(self) -> list[str]:
        """The revisions in ``alembic_version``, as Alembic will read them."""
        with self.conn.cursor() as cur:
            return read_state_with_cursor(cur)[0]
