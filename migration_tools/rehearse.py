"""``scripts/rehearse.sh``: run the pending migrations on a copy of a real database first.

A revision that passes the tests on a few rows can still take an exclusive lock for
minutes on a large table, rewrite it, or delete rows through a bad ``WHERE``; its
downgrade may never have run against real data at all. The only honest answer is to run
it on a copy of production: this module copies a database (``pg_dump -Fc`` of a live one,
or a dump made by :mod:`backend.migrate.backup`) into a scratch database, applies every
pending revision one at a time through the same ``env.py`` as a real upgrade, rolls them
all back one at a time, applies them again, and reports for each revision how long it
took, which tables it rewrote, the strongest lock it held on each table and how row
counts changed. It fails (exit 1) when a step fails, a table loses rows the revision did
not declare, the downgrades do not restore the schema, or the schema at head does not
match the models.

The source is only read. The scratch database has a unique name, is dropped at the end,
also after a failure, Ctrl-C or SIGTERM, and passwords reach the client tools through the
environment only; nothing printed contains one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from sqlalchemy.engine import URL

from backend.config import Config, ConfigError, log_format_from, mask_url, parse_database_url
from backend.logs import mask_secrets
from backend.migrate import LifecycleError, checksums
from backend.migrate.database import connect, describe_error, run_sql
from backend.migrate.revisions import label, read_state_with_cursor
from migration_tools import row_loss
from migration_tools.fingerprint import BOOKKEEPING, Schema, restored, snapshot_with_cursor
from migration_tools.row_loss import expected_row_loss
from migration_tools.scratch import create_database, drop_database, leftovers, scratch_name

PROG = "rehearse"
# Weakest first: PostgreSQL's own order of table lock modes (each conflicts with more).
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
CHECKS = {
    "downgrades_restore_schema": "the downgrades restore the starting schema",
    "upgrade_repeatable_schema": "the second upgrade gives the same schema",
    "upgrade_repeatable_rows": "the second upgrade gives the same row counts",
    "models_match": "the schema at head matches the models",
}
PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,30}$")
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
class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop, clean up, exit 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def progress(message: str) -> None:
    """One line on stderr, so a long rehearsal shows where it is (stdout is the report).

    A reader that went away (``| head``) must not stop the rehearsal half way.
    """
    with contextlib.suppress(OSError):
        print(f"{PROG}: {mask_secrets(message)}", file=sys.stderr, flush=True)


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
        self.conn = _connect(url)
        self.pids: set[int] = set()
        self._seen: Seen = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampler = _connect(url)

    def close(self) -> None:
        self.stop()
        for conn in (self.conn, self._sampler):
            with contextlib.suppress(psycopg2.Error):
                conn.close()

    # -- hooks on the migration engine --

    def watch(self, engine: Any) -> None:
        """Learn the migration connection's backend pid; record locks at each commit."""
        from sqlalchemy import event

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


# --- what a step found -------------------------------------------------------------------


@dataclass
class Step:
    """One revision applied or rolled back, and what it did to the tables."""

    phase: str            # "upgrade", "downgrade" or "re-upgrade"
    revision: str
    message: str
    seconds: float | None = None
    error: str | None = None
    rewrote: dict[str, dict[str, int]] = field(default_factory=dict)
    resized: dict[str, dict[str, int | None]] = field(default_factory=dict)
    locks: dict[str, str] = field(default_factory=dict)
    lock_seconds: dict[str, float] = field(default_factory=dict)
    rows: dict[str, dict[str, int | None]] = field(default_factory=dict)
    lost: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables_before: dict[str, dict[str, int]] = field(default_factory=dict)
    tables_after: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and not any(not v["expected"] for v in self.lost.values())


def rewritten(before: Snapshot, after: Snapshot) -> dict[str, dict[str, int]]:
    """Tables whose storage file changed: PostgreSQL wrote every row anew."""
    return {name: {"bytes_before": state.bytes, "bytes_after": after[name].bytes}
            for name, state in before.items()
            if name in after and after[name].filenode != state.filenode}


def strongest_locks(seen: Seen, before: Snapshot) -> tuple[dict[str, str], dict[str, float]]:
    """The strongest mode held on each table that existed before the step, and for about
    how long (from first sight to the commit that released it).

    A table the revision creates is locked too, but nobody can be waiting for it. The
    time is a lower bound: a lock taken between two samples is first seen a little late.
    """
    names = {state.oid: name for name, state in before.items()}
    modes: dict[str, dict[str, list[float]]] = {}
    for (oid, mode), times in seen.items():
        if oid in names:
            modes.setdefault(names[oid], {})[mode] = times
    locks = {name: strongest(found) for name, found in sorted(modes.items())}
    held = {name: round(modes[name][mode][1] - modes[name][mode][0], 3)
            for name, mode in locks.items()}
    return locks, held


def changes(before: Snapshot, after: Snapshot,
            attribute: str) -> dict[str, dict[str, int | None]]:
    """Tables whose row count (or size) changed; None: the table did not exist.

    A size change without a rewrite is worth seeing too: a backfill ``UPDATE`` writes a
    new version of every row, which can double a table until VACUUM reclaims the old ones.
    """
    found = {}
    for name in sorted(set(before) | set(after)):
        old = getattr(before[name], attribute) if name in before else None
        new = getattr(after[name], attribute) if name in after else None
        if old != new:
            found[name] = {"before": old, "after": new}
    return found


def tables_json(snapshot: Snapshot) -> dict[str, dict[str, int]]:
    return {name: {"rows": s.rows, "bytes": s.bytes} for name, s in sorted(snapshot.items())}


def lost_rows(before: Snapshot, after: Snapshot, expected: dict[str, str],
              reference: Snapshot | None = None) -> dict[str, dict[str, Any]]:
    """:func:`migration_tools.row_loss.lost_rows` on two snapshots, each finding with the
    reason its revision gave for it (``expected``), if any."""
    def rows(snapshot: Snapshot) -> dict[str, int]:
        return {name: state.rows for name, state in snapshot.items()}

    lost = row_loss.lost_rows(rows(before), rows(after),
                              None if reference is None else rows(reference))
    return {name: {"before": was, "after": left, "expected": expected.get(name)}
            for name, (was, left) in sorted(lost.items())}


# --- the rehearsal ------------------------------------------------------------------------


@dataclass
class Rehearsal:
    """Everything the report shows; filled in as the rehearsal goes."""

    source: str
    scratch: str = ""
    server: str = ""
    server_version: str = ""
    copy_seconds: float | None = None
    start: list[str] = field(default_factory=list)
    head: list[str] = field(default_factory=list)
    pending: list[dict[str, str]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    tables_start: Snapshot = field(default_factory=dict)
    tables_head: Snapshot = field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, problem: str) -> None:
        self.problems.append(mask_secrets(problem))

    def check(self, key: str, ok: bool, detail: str) -> None:
        """Record one whole-run check; a failed one is a problem too."""
        title = CHECKS[key]
        self.checks[key] = {"title": title, "ok": ok, "detail": mask_secrets(detail)}
        if not ok:
            self.fail(f"{title}: {detail}")


@dataclass(frozen=True)
class Options:
    """What to rehearse, where, and with which session timeouts (from the command line)."""

    from_url: URL | None
    from_dump: Path | None
    target_url: URL
    prefix: str
    lock_timeout: str
    statement_timeout: str
    verbose: bool
    jobs: int = 1


def _connect(url: URL, **extra: Any) -> Any:
    return connect(url, "rehearse", **extra)


def _execute(url: URL, statement: str) -> list[tuple]:
    return run_sql(url, statement, "rehearse")


@contextlib.contextmanager
def scratch_database(admin: URL, prefix: str, result: Rehearsal,
                     guard: SignalGuard) -> Iterator[URL]:
    """Create the scratch database; drop it however the block ends."""
    name = scratch_name(prefix)
    result.scratch = name
    try:
        create_database(admin, name, application_name="rehearse")
        progress(f"created scratch database {name} on {mask_url(admin.set(database=''))}")
        guard.scratch = admin.set(database=name)
        yield guard.scratch
    finally:
        guard.scratch = None
        with guard.deferred():
            try:
                drop_database(admin, name, "rehearse")
                progress(f"dropped scratch database {name}")
            except LifecycleError as exc:
                result.fail(f"could not drop the scratch database {name}: {exc}; drop it "
                            f'by hand: DROP DATABASE "{name}" WITH (FORCE)')
                progress(result.problems[-1])


class SignalGuard:
    """SIGINT and SIGTERM stop the rehearsal through the normal ``finally`` blocks.

    The handler raises :class:`KeyboardInterrupt`, but Python runs it only between two
    bytecodes, not while the main thread waits inside libpq for a statement that may run
    for an hour. So a watcher thread also wakes on the signal (``set_wakeup_fd``) and
    cancels every statement running in the scratch database; the wait ends and the
    handler runs. While the scratch database is being dropped signals are only noted: a
    second Ctrl-C must not leave it behind.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.scratch: URL | None = None
        self._defer = False
        self._previous: dict[int, Any] = {}
        self._pipe: tuple[int, int] | None = None
        self._old_wakeup = -1
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> SignalGuard:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._pipe = (read_end, write_end)
        self._old_wakeup = signal.set_wakeup_fd(write_end)
        self._watcher = threading.Thread(target=self._watch, name="rehearse-signals",
                                         daemon=True)
        self._watcher.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._old_wakeup)
        if self._pipe is not None:
            os.close(self._pipe[1])  # the watcher reads end-of-file and returns
            if self._watcher is not None:
                self._watcher.join(timeout=5)
            os.close(self._pipe[0])

    def _handle(self, signum: int, _frame: object) -> None:
        if self._defer:
            progress("dropping the scratch database first")
        if self.received is not None or self._defer:
            self.received = self.received or signum
            return  # raised once already (or cleaning up): the first one is on its way
        self.received = signum
        raise KeyboardInterrupt

    def _watch(self) -> None:
        assert self._pipe is not None
        while True:
            try:
                data = os.read(self._pipe[0], 64)
            except OSError:
                return
            if not data:
                return
            if self.scratch is not None and not self._defer:
                with contextlib.suppress(LifecycleError):
                    _execute(self.scratch, "SELECT pg_cancel_backend(pid) FROM "
                                           "pg_stat_activity WHERE datname = "
                                           "current_database() AND pid <> pg_backend_pid()")

    def raise_if_received(self) -> None:
        """A signal may have been absorbed as a cancelled statement: stop all the same."""
        if self.received is not None:
            raise Interrupted(self.received)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._defer = True
        try:
            yield
        finally:
            self._defer = False


# --- copying ------------------------------------------------------------------------------


def copy_into(options: Options, scratch: URL, workdir: Path) -> None:
    """Fill the scratch database from the source: a fresh dump of it, or the given one."""
    from backend.migrate.backup import current_revision, take_backup

    dump = options.from_dump
    if options.from_url is not None:
        source = options.from_url
        progress(f"dumping {mask_url(source)} (pg_dump -Fc; the source is only read)")
        started = time.perf_counter()
        revision = current_revision(source)
        dump = take_backup(source, workdir, revision, revision, keep=1)
        progress(f"dumped in {time.perf_counter() - started:.1f} s "
                 f"({_size(dump.stat().st_size)})")
    assert dump is not None
    progress(f"restoring {dump.name} into {scratch.database} (pg_restore, "
             f"{options.jobs} job(s))")
    started = time.perf_counter()
    restore_into(scratch, dump, options.jobs)
    progress(f"restored in {time.perf_counter() - started:.1f} s")


def restore_into(scratch: URL, dump: Path, jobs: int) -> None:
    """``pg_restore`` into the empty scratch database, in parallel.

    Not :func:`backend.migrate.backup.restore_backup`, which replaces a database in
    place (``--clean``, one transaction). Here the database is new and thrown away, so
    several jobs may load tables at once, and ``--no-privileges`` lets a production dump
    whose GRANTs name roles this server lacks restore all the same: privileges change
    neither the locks nor the time a revision takes.
    """
    from backend.migrate.pgtools import (
        find_pg_tool,
        libpq_connection,
        server_version_num,
        tool_error,
    )

    pg_restore = find_pg_tool("pg_restore", server_version_num(scratch))
    conninfo, env, password = libpq_connection(scratch)
    try:
        proc = subprocess.run(
            [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", "--no-password",
             f"--jobs={jobs}", f"--dbname={conninfo}", str(dump)],
            capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False)
    except OSError as exc:
        raise LifecycleError(f"cannot run {pg_restore}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        raise LifecycleError(f"restore of {dump} into the scratch database failed: "
                             f"{tool_error(proc.stderr, password)}")


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


# --- running the revisions -----------------------------------------------------------------


class Migrator:
    """The app and Alembic configuration a real ``flask db upgrade`` would use, pointed at
    the scratch database, so every revision goes through our ``env.py``: the lock, the
    session timeouts, the refusals, one transaction per revision, the checksums."""

    def __init__(self, url: URL, options: Options, observer: Observer) -> None:
        from backend import create_app
        from backend.extensions import db

        settings = dataclasses.replace(
            Config.from_env({**os.environ, "DATABASE_URL": url.render_as_string(False)}),
            # Nothing else uses the scratch database: a lock wait means a problem in the
            # revision itself, and a long statement is what we came to measure.
            lock_timeout=options.lock_timeout, statement_timeout=options.statement_timeout,
            migration_retries=1, migration_lock_wait=60.0,
            # A dump of the scratch database before each step would be pointless, and would
            # push real dumps out of BACKUP_DIR (only the newest BACKUP_KEEP are kept).
            backup_before_migrate=False)
        self.app = create_app(settings)
        _quiet(options.verbose)
        self._context = self.app.app_context()
        self._context.push()
        self.engine = db.engine
        observer.watch(self.engine)
        self.config = self.app.extensions["migrate"].migrate.get_config()
        self.config.stdout = io.StringIO()  # `check` prints a line we say better

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.engine.dispose()
        with contextlib.suppress(Exception):
            self._context.pop()

    def scripts(self) -> Any:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.config)

    def upgrade(self, revision: str) -> None:
        from alembic import command

        command.upgrade(self.config, revision)

    def downgrade(self, target: str) -> None:
        from alembic import command

        command.downgrade(self.config, target)

    def check(self) -> str | None:
        """None when the schema matches the models, else what autogenerate would add."""
        from alembic import command
        from alembic.util import AutogenerateDiffsDetected

        try:
            command.check(self.config)
        except AutogenerateDiffsDetected as exc:
            from migration_tools.verify import describe_diff

            return "; ".join(describe_diff(diff) for diff in exc.diffs)
        return None


def _quiet(verbose: bool) -> None:
    """Our progress lines say what happens; the per-revision log lines only with -v."""
    import logging

    level = logging.INFO if verbose else logging.WARNING
    for name in ("backend", "alembic", "flask_migrate"):
        logging.getLogger(name).setLevel(level)


def downgrade_target(script: Any) -> str:
    """How to ask Alembic to roll back exactly this one revision.

    ``<rev>@-1`` walks one step down that revision's own line, so a sibling branch stays
    applied. A merge revision goes back to its first parent: only the merge itself
    descends from that parent, so only the merge is undone.
    """
    parents = script.down_revision
    if isinstance(parents, tuple | list) and len(parents) > 1:
        return str(parents[0])
    return f"{script.revision}@-1"


def _one_line(exc: BaseException) -> str:
    """What went wrong, in one line without a password."""
    if isinstance(exc, LifecycleError | ConfigError):
        return mask_secrets(str(exc))
    return describe_error(exc)


class Runner:
    """Applies, rolls back and re-applies the pending revisions, measuring each step."""

    def __init__(self, migrator: Migrator, observer: Observer, result: Rehearsal,
                 guard: SignalGuard) -> None:
        self.migrator, self.observer, self.result, self.guard = \
            migrator, observer, result, guard
        self.scripts = migrator.scripts()
        self.expected: dict[str, dict[str, str]] = {}
        self.applied_at_start: set[str] = set()
        self.current: Snapshot = {}  # the tables now: each step's "after" is the next "before"

    def plan(self) -> list[Any] | None:
        """The pending revisions in the order a deploy applies them; None if it would
        refuse (several heads, a database revision this code does not know)."""
        from backend.migrate.revisions import (
            find_revision,
            heads_reason,
            pending_revisions,
            unknown_reason,
        )

        result = self.result
        result.start = self.observer.revision()
        result.head = sorted(self.scripts.get_heads())
        unknown = [rev for rev in result.start if find_revision(self.scripts, rev) is None]
        if unknown:
            result.fail(unknown_reason(unknown))
            return None
        if len(result.head) > 1:
            result.fail(heads_reason(result.head))
            return None
        self.applied_at_start = set(checksums.applied_chain(self.scripts, result.start))
        plan = [self.scripts.get_revision(rev)
                for rev in pending_revisions(self.scripts, result.start)]
        for script in plan:
            result.pending.append({"revision": script.revision, "message": script.doc or ""})
            declared, invalid = expected_row_loss(script.path)
            self.expected[script.revision] = declared
            for table in invalid:
                result.fail(f"{script.revision}: `# rehearse: expect-row-loss {table}` gives "
                            "no reason; write `# rehearse: expect-row-loss <table> <reason>`")
        return plan

    def run(self) -> None:
        plan = self.plan()
        if plan is None:
            return
        observer, result = self.observer, self.result
        result.tables_start = start = self.current = observer.snapshot()
        schema_start = observer.schema()
        progress(f"at {label(result.start)}: {len(plan)} revision(s) pending, "
                 f"{len(start)} table(s), {sum(t.rows for t in start.values())} row(s)")
        before_upgrade = self.apply(plan, "upgrade")
        if before_upgrade is None:
            return
        head_first, schema_head = self.current, observer.schema()
        if not self.roll_back(plan, before_upgrade):
            return
        self.compare("downgrades_restore_schema", schema_start,
                     observer.schema(), "schema before the first upgrade",
                     "schema after the downgrades")
        if self.apply(plan, "re-upgrade") is None:
            return
        result.tables_head = head = self.current
        self.compare("upgrade_repeatable_schema", schema_head, observer.schema(),
                     "schema at head the first time", "schema at head the second time")
        self.compare_rows(head_first, head)
        self.check_models()

    def apply(self, plan: list[Any], phase: str) -> dict[str, Snapshot] | None:
        """Upgrade one revision at a time; the snapshot before each, or None on failure."""
        before_each = {}
        for number, script in enumerate(plan, 1):
            before_each[script.revision] = self.current
            step = self.step(phase, script, number, len(plan), script.revision,
                             self.migrator.upgrade, self.applied_with(plan[:number]))
            if step.error is not None:
                return None
        return before_each

    def roll_back(self, plan: list[Any], before_upgrade: dict[str, Snapshot]) -> bool:
        """Downgrade one revision at a time, newest first, back to where the copy was."""
        for number, script in enumerate(reversed(plan), 1):
            step = self.step("downgrade", script, number, len(plan), downgrade_target(script),
                             self.migrator.downgrade,
                             self.applied_with(plan[:len(plan) - number]),
                             reference=before_upgrade[script.revision])
            if step.error is not None:
                return False
        return True

    def applied_with(self, scripts: list[Any]) -> set[str]:
        return self.applied_at_start | {script.revision for script in scripts}

    def step(self, phase: str, script: Any, number: int, total: int, target: str,
             action: Callable[[str], None], applied: set[str],
             reference: Snapshot | None = None) -> Step:
        """Run one revision one way, and measure it (``reference``: see :func:`lost_rows`).

        ``applied`` is the set of revisions that must be applied afterwards.
        """
        before = self.current
        step = Step(phase, script.revision, script.doc or "")
        self.result.steps.append(step)
        progress(f"{phase} {number}/{total}: {script.revision} ({step.message}) ...")
        self.observer.start()
        started = time.perf_counter()
        try:
            action(target)
        except Exception as exc:
            step.error = _one_line(exc)
        finally:
            step.seconds = round(time.perf_counter() - started, 3)
            seen = self.observer.stop()
        self.guard.raise_if_received()
        if step.error is None:
            step.error = self.one_revision(applied)
        after = self.current = self.observer.snapshot()
        step.tables_before, step.tables_after = tables_json(before), tables_json(after)
        step.rewrote = rewritten(before, after)
        step.resized = changes(before, after, "bytes")
        step.locks, step.lock_seconds = strongest_locks(seen, before)
        step.rows = changes(before, after, "rows")
        step.lost = lost_rows(before, after, self.expected.get(script.revision, {}),
                              reference)
        self.judge(step)
        return step

    def one_revision(self, expected: set[str]) -> str | None:
        """None when exactly the intended revisions are applied, else what differs.

        Every step names its target so that Alembic moves by one revision; this proves it
        did, so no timing or lock is ever pinned on the wrong revision.
        """
        applied = set(checksums.applied_chain(self.scripts, self.observer.revision()))
        if applied == expected:
            return None
        extra, missing = sorted(applied - expected), sorted(expected - applied)
        return (f"Alembic moved by more than this revision (now applied too: "
                f"{', '.join(extra) or 'none'}; not applied: {', '.join(missing) or 'none'})")

    def judge(self, step: Step) -> None:
        """Say how the step went, on stderr and, when it went wrong, in the problems."""
        where = f"{step.phase} of {step.revision} ({step.message})"
        if step.error is not None:
            self.result.fail(f"{where} failed: {step.error}")
        for table, loss in step.lost.items():
            if not loss["expected"]:
                self.result.fail(f"{where} lost rows in {table}: {loss['before']} -> "
                                 f"{loss['after']} (declare it in the revision with "
                                 f"`# rehearse: expect-row-loss {table} <reason>` if meant)")
        status = "FAILED" if step.error else "done"
        rewrote = ", ".join(step.rewrote) or "nothing"
        lost = [t for t, loss in step.lost.items() if not loss["expected"]]
        tail = f", LOST ROWS in {', '.join(lost)}" if lost else ""
        progress(f"  {status} in {step.seconds:.3f} s, rewrote {rewrote}{tail}"
                 + (f": {step.error}" if step.error else ""))

    def compare(self, key: str, expected: Schema, actual: Schema, was: str,
                now: str) -> None:
        """The verifier's rule (``fingerprint.restored``): the same schema, but that a
        constraint added ``NOT VALID`` may come back validated."""
        if restored(expected, actual):
            self.result.check(key, True, "same schema" if expected == actual else
                              "same schema (a NOT VALID constraint left validated)")
            return
        missing, extra = sorted(expected - actual), sorted(actual - expected)
        parts = []
        if missing:
            parts.append(f"only in the {was}: {'; '.join(missing[:5])}")
        if extra:
            parts.append(f"only in the {now}: {'; '.join(extra[:5])}")
        self.result.check(key, False, " | ".join(parts))

    def compare_rows(self, first: Snapshot, second: Snapshot) -> None:
        differ = {name: (first.get(name), second.get(name))
                  for name in sorted(set(first) | set(second))
                  if (first[name].rows if name in first else None)
                  != (second[name].rows if name in second else None)}
        if not differ:
            self.result.check("upgrade_repeatable_rows", True, "same row counts")
            return
        detail = "; ".join(f"{name}: {a.rows if a else 'missing'} then "
                           f"{b.rows if b else 'missing'}" for name, (a, b) in differ.items())
        self.result.check("upgrade_repeatable_rows", False, detail)

    def check_models(self) -> None:
        progress("comparing the schema at head with the models (alembic check)")
        try:
            diff = self.migrator.check()
        except Exception as exc:
            self.result.check("models_match", False,
                              f"the check itself failed: {_one_line(exc)}")
            return
        if diff is None:
            self.result.check("models_match", True, "no differences")
        else:
            self.result.check("models_match", False,
                              f"they differ, autogenerate would write: {diff}")


def refuse_an_older_target(source: URL, target: URL) -> None:
    """A dump restores into its own major version or a newer one, never an older one;
    tried anyway, it fails late and cryptically ("unsupported version (1.16) in file
    header", or an unknown setting such as ``transaction_timeout``). Say so before copying."""
    from backend.migrate.pgtools import server_major, server_version_num, show_major

    source_major = server_major(server_version_num(source))
    target_major = server_major(server_version_num(target))
    if target_major < source_major:
        raise LifecycleError(
            f"the target server runs PostgreSQL {show_major(target_major)}, older than the "
            f"source's {show_major(source_major)}: a copy restores only into the same major "
            f"version or a newer one; give --target-url a PostgreSQL "
            f"{show_major(source_major)} or newer")


def rehearse(options: Options, guard: SignalGuard) -> Rehearsal:
    """Copy, run, measure; the scratch database and the temporary dump are gone after."""
    if options.from_url is not None:
        refuse_an_older_target(options.from_url, options.target_url)
    source = mask_url(options.from_url) if options.from_url is not None \
        else str(options.from_dump)
    result = Rehearsal(source=source, server=mask_url(options.target_url.set(database="")))
    started = time.perf_counter()
    others = leftovers(options.target_url, options.prefix, "rehearse")
    if others:
        progress(f"note: {len(others)} other scratch database(s) on this server, from "
                 f"rehearsals running now or killed: {', '.join(others)}")
    workdir = Path(tempfile.mkdtemp(prefix="rehearsal-"))
    try:
        with scratch_database(options.target_url, options.prefix, result, guard) as scratch:
            copy_started = time.perf_counter()
            copy_into(options, scratch, workdir)
            result.copy_seconds = round(time.perf_counter() - copy_started, 3)
            _run_on(scratch, options, result, guard)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _run_on(scratch: URL, options: Options, result: Rehearsal, guard: SignalGuard) -> None:
    observer = Observer(scratch)
    migrator = None
    try:
        result.server_version = observer.server_version()
        migrator = Migrator(scratch, options, observer)
        Runner(migrator, observer, result, guard).run()
    finally:
        if migrator is not None:
            migrator.close()
        observer.close()


# --- the report ---------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "-"


def _find(result: Rehearsal, phase: str, revision: str) -> Step | None:
    return next((s for s in result.steps if s.phase == phase and s.revision == revision), None)


def _time_cell(step: Step | None) -> str:
    if step is None:
        return "not run"
    return f"**failed** after {_seconds(step.seconds)}" if step.error else _seconds(step.seconds)


def _rewrote_cell(step: Step | None) -> str:
    if step is None:
        return "-"
    return ", ".join(f"{name} ({_size(sizes['bytes_after'])})"
                     for name, sizes in step.rewrote.items())


def _size_cell(step: Step | None) -> str:
    if step is None:
        return "-"
    return ", ".join(f"{name} {_size(c['before']) if c['before'] is not None else 'new'} -> "
                     f"{_size(c['after']) if c['after'] is not None else 'dropped'}"
                     for name, c in step.resized.items())


def _locks_cell(step: Step | None) -> str:
    if step is None:
        return "-"
    return ", ".join(f"{name}: {mode} for {_held(step.lock_seconds[name])}"
                     for name, mode in step.locks.items())


def _held(seconds: float) -> str:
    return "< 0.01 s" if seconds < 0.005 else f"{seconds:.2f} s"


def _rows_cell(step: Step | None) -> str:
    if step is None:
        return "-"
    parts = []
    for name, change in step.rows.items():
        old, new = change["before"], change["after"]
        if name in step.lost:
            reason = step.lost[name]["expected"]
            verdict = f"expected: {reason}" if reason else "**LOST**"
            parts.append(f"{name} {old} -> {new if new is not None else 'dropped'} ({verdict})")
        elif old is None:
            parts.append(f"{name} new ({new})")
        elif new is None:
            parts.append(f"{name} dropped (had {old})")
        else:
            parts.append(f"{name} {old} -> {new}")
    return ", ".join(parts)


def _revision_row(result: Rehearsal, pending: dict[str, str], phase: str) -> str:
    rev = pending["revision"]
    step = _find(result, phase, rev)
    cells = [f"`{rev}`", pending["message"]]
    if phase == "upgrade":
        cells += [_time_cell(step), _time_cell(_find(result, "downgrade", rev)),
                  _time_cell(_find(result, "re-upgrade", rev))]
    else:
        cells.append(_time_cell(step))
    cells += [_rewrote_cell(step), _size_cell(step), _locks_cell(step), _rows_cell(step)]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def render_markdown(result: Rehearsal) -> str:
    """The report a reviewer reads before approving the deploy."""
    verdict = "passed" if result.ok else "FAILED"
    lines = [
        f"# Migration rehearsal: {verdict}",
        "",
        f"- source: {result.source}, at {label(result.start)}",
        f"- copied into scratch database `{result.scratch}` on {result.server} "
        f"(PostgreSQL {result.server_version or '?'}) in {_seconds(result.copy_seconds)}; "
        "dropped afterwards",
        (f"- {len(result.pending)} pending revision(s), to {label(result.head)}; each "
         "applied, rolled back, then applied again, one at a time through `env.py`")
        if result.pending else f"- nothing pending: head is {label(result.head)}",
        f"- total {_seconds(result.seconds)}",
    ]
    if result.pending:
        lines += ["", "## Upgrade", "",
                  "| revision | message | upgrade | downgrade | re-upgrade | rewrote | size "
                  "| strongest lock per table (held) | rows |",
                  "| --- | --- | ---: | ---: | ---: | --- | --- | --- | --- |"]
        lines += [_revision_row(result, p, "upgrade") for p in result.pending]
        lines += ["", "## Downgrade", "",
                  "| revision | message | downgrade | rewrote | size "
                  "| strongest lock per table (held) | rows |",
                  "| --- | --- | ---: | --- | --- | --- | --- |"]
        lines += [_revision_row(result, p, "downgrade") for p in reversed(result.pending)]
    lines += _tables_section(result) + _checks_section(result) + _legend(result)
    return "\n".join(lines) + "\n"


def _tables_section(result: Rehearsal) -> list[str]:
    if not result.tables_start:
        return []
    head = result.tables_head
    lines = ["", "## Tables", "", "| table | rows before | rows at head | size before "
             "| size at head |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in sorted(set(result.tables_start) | set(head)):
        a, b = result.tables_start.get(name), head.get(name)
        lines.append(f"| {name} | {a.rows if a else '-'} | {b.rows if b else '-'} | "
                     f"{_size(a.bytes) if a else '-'} | {_size(b.bytes) if b else '-'} |")
    return lines


def _checks_section(result: Rehearsal) -> list[str]:
    lines = ["", "## Checks", ""]
    for key, title in CHECKS.items():
        check = result.checks.get(key)
        if check is None:
            lines.append(f"- {title}: not run")
        else:
            mark = "ok" if check["ok"] else "**FAILED**"
            lines.append(f"- {title}: {mark} ({check['detail']})")
    if result.problems:
        lines += ["", "## Problems", ""] + [f"- {problem}" for problem in result.problems]
    return lines


def _legend(result: Rehearsal) -> list[str]:
    shown = [step for step in result.steps if step.phase != "re-upgrade"]
    modes = sorted({mode for step in shown for mode in step.locks.values()},
                   key=LOCK_MODES.index, reverse=True)
    if not modes:
        return []
    return ["", "Lock modes seen, strongest first:", ""] + \
        [f"- {mode}: {LOCK_BLOCKS[mode]}" for mode in modes]


def as_json(result: Rehearsal) -> dict[str, Any]:
    """The same facts for a machine: CI can gate on ``ok`` or on any step's numbers."""
    return {
        "ok": result.ok,
        "problems": result.problems,
        "source": result.source,
        "scratch_database": result.scratch,
        "server": result.server,
        "server_version": result.server_version,
        "copy_seconds": result.copy_seconds,
        "seconds": result.seconds,
        "start": result.start,
        "head": result.head,
        "pending": result.pending,
        "steps": [dataclasses.asdict(step) | {"ok": step.ok} for step in result.steps],
        "tables_start": tables_json(result.tables_start),
        "tables_head": tables_json(result.tables_head),
        "checks": result.checks,
    }


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="scripts/rehearse.sh",
        description="Rehearse the pending migrations on a scratch copy of a database: apply "
                    "each, roll each back, apply again; report times, table rewrites, "
                    "locks and row counts. Exit 0 when all is well, 1 when the rehearsal "
                    "found a problem, 2 when it could not run, 130/143 when stopped by "
                    "SIGINT/SIGTERM (the scratch database is dropped in every case).",
        epilog="A password in a URL is visible to other users in `ps`: leave it out and "
               "set PGPASSWORD or use ~/.pgpass instead. Relative paths are taken from "
               "where the script was started.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-url", metavar="URL",
                        help="copy this live database (pg_dump -Fc); it is only read")
    source.add_argument("--from-dump", metavar="FILE", type=Path,
                        help="restore this dump (from scripts/backup.sh or "
                             "BACKUP_BEFORE_MIGRATE); needs --target-url")
    parser.add_argument("--target-url", metavar="URL",
                        help="any database on the server where the scratch database is made "
                             "(the role needs CREATEDB); default: the --from-url server")
    parser.add_argument("--report", metavar="FILE", type=Path,
                        help="also write the markdown report to FILE")
    parser.add_argument("--json", metavar="FILE",
                        help="write the results as JSON to FILE ('-': to stdout, instead of "
                             "the markdown)")
    parser.add_argument("--prefix", default="rehearsal",
                        help="start of the scratch database's name (default: rehearsal)")
    parser.add_argument("--lock-timeout", default="1min", metavar="DURATION",
                        help="lock_timeout for the migration session (default: 1min)")
    parser.add_argument("--statement-timeout", default="6h", metavar="DURATION",
                        help="statement_timeout for the migration session (default: 6h)")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                        help="parallel pg_restore jobs (default: up to 4)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show the migration log lines (one per revision)")
    args = parser.parse_args(argv)
    return _options(parser, args), args


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Options:
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if not PREFIX.match(args.prefix):
        parser.error("--prefix must be lower-case letters, digits and _, at most 31")
    for name in ("lock_timeout", "statement_timeout"):
        if not re.match(r"^\d+(\.\d+)?\s*(us|ms|s|min|h|d)?$", getattr(args, name)):
            parser.error(f"--{name.replace('_', '-')} must be a PostgreSQL duration "
                         "such as 30s, 1min or 6h")
    try:
        from_url = parse_database_url(args.from_url, "--from-url") if args.from_url else None
        target = parse_database_url(args.target_url, "--target-url") if args.target_url \
            else from_url
    except ConfigError as exc:
        parser.error(str(exc))
    from_dump = _path(args.from_dump) if args.from_dump else None
    if target is None:
        parser.error("--from-dump needs --target-url: a server to restore the dump into")
    if from_dump is not None and not from_dump.is_file():
        parser.error(f"no such dump file: {from_dump}")
    for flag, value in (("--report", args.report), ("--json", args.json)):
        if value and str(value) != "-" and not _path(Path(value)).parent.is_dir():
            parser.error(f"{flag}: no such directory: {_path(Path(value)).parent}")
    return Options(from_url=from_url, from_dump=from_dump, target_url=target,
                   prefix=args.prefix, lock_timeout=args.lock_timeout,
                   statement_timeout=args.statement_timeout, verbose=args.verbose,
                   jobs=args.jobs)


def _path(path: Path) -> Path:
    """Relative to where the user stood: scripts/rehearse.sh moves to the repository root."""
    base = Path(os.environ.get("REHEARSE_CALLER_DIR") or os.getcwd())
    return path if path.is_absolute() else base / path


def write_outputs(result: Rehearsal, args: argparse.Namespace, stdout: Any) -> None:
    """Markdown to stdout (for a person or a CI log) unless ``--json -`` claims stdout for
    a machine; the files asked for get their copy either way."""
    markdown = render_markdown(result)
    document = json.dumps(as_json(result), indent=2) + "\n"
    if args.report:
        _path(args.report).write_text(markdown, encoding="utf-8")
    if args.json and args.json != "-":
        _path(Path(args.json)).write_text(document, encoding="utf-8")
    stdout.write(document if args.json == "-" else markdown)
    stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/rehearse.sh``: 0 passed, 1 found a problem, 2 could not run, 128+N signal."""
    from backend.logs import configure_logging

    options, args = parse_args(argv)
    configure_logging(log_format_from())
    _quiet(options.verbose)
    stdout = sys.stdout
    with SignalGuard() as guard:
        outcome = _run_guarded(options, guard)
    if isinstance(outcome, int):
        return outcome
    try:
        write_outputs(outcome, args, stdout)
    except OSError as exc:
        progress(f"cannot write the report: {exc}")
        return 2
    verdict = "passed" if outcome.ok else f"FAILED ({len(outcome.problems)} problem(s))"
    progress(f"rehearsal {verdict} in {outcome.seconds:.1f} s")
    return 0 if outcome.ok else 1


def _run_guarded(options: Options, guard: SignalGuard) -> Rehearsal | int:
    """The rehearsal, or the exit status when it could not run or was stopped.

    A signal may surface as a cancelled statement (our watcher cancels them) before its
    handler runs, so any failure is checked against ``guard.received`` first; the handler
    raises at most once, so the outer ``except`` is never itself interrupted.
    """
    try:
        try:
            # Anything a migration prints goes to stderr: stdout carries only the report.
            with contextlib.redirect_stdout(sys.stderr):
                result = rehearse(options, guard)
            guard.raise_if_received()
            return result
        except (ConfigError, LifecycleError, psycopg2.Error) as exc:
            guard.raise_if_received()
            progress(f"could not rehearse: {_one_line(exc)}")
            return 2
    except (KeyboardInterrupt, Interrupted):
        signum = guard.received or signal.SIGINT
        progress(f"stopped by {signal.Signals(signum).name}; the scratch database is gone; "
                 "no report")
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
