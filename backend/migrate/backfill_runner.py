"""The runner and the status of background migrations (``flask migrations backfill ...``).

Each batch is its own short transaction: the keyset query that finds the batch's upper key,
the registered statement over ``(start, stop]``, and the progress row, committed together. A
runner killed at any moment (SIGKILL included) therefore leaves either the whole batch and its
progress or neither, and the next run resumes after the last committed batch: every row is
changed exactly once. One runner per migration across replicas: a session-level advisory lock
per migration, released by PostgreSQL when the runner's connection ends, however it ends.

SIGTERM or SIGINT cancels the statement in flight (its batch rolls back at once instead of
running on in the server after the process is gone) and ends ``run_all`` with one
:class:`BackfillInterrupted` line; a lost connection ends it with one ``LifecycleError`` line.
Either way every committed batch is kept and the next run resumes after the last one.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from sqlalchemy.engine import URL

from backend.config import Config
from backend.migrate import LifecycleError
from backend.migrate.apply import LOCK_NOT_AVAILABLE
from backend.migrate.backfill_progress import ProgressLine
from backend.migrate.background import TABLE, lock_key, to_driver_sql
from backend.migrate.database import connect
from backend.migrate.interrupt import SIGNALS, install_cancelling_wait
from backend.postgres import describe_error

log = logging.getLogger("backend.lifecycle")

APPLICATION_NAME = "backend-backfill"
PAUSE_POLL = 1.0          # seconds between health checks while paused
WAIT_LOG_EVERY = 30.0     # seconds between "still waiting for another runner" lines
COUNT_CAP = 100_000       # keys counted exactly for the status's estimate; beyond, reltuples

QUERY_CANCELED = "57014"       # statement_timeout expired

_COLUMNS = ("name", "revision", "table_name", "key_column", "statement", "batch_size",
            "state", "last_key", "rows_done", "batches_done", "error")


class BackfillFailed(LifecycleError):
    """A batch failed for a reason a retry does not fix; the message is one line."""


class BackfillInterrupted(LifecycleError):
    """SIGINT or SIGTERM stopped the runner; what was in flight rolled back, every committed
    batch is kept. ``signum`` lets the command exit as a shell reports that signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


# The signals received during the current run_all, oldest first: a cancelled statement
# (QueryCanceled, SQLSTATE 57014, the same code statement_timeout gives) is a stop, not a
# batch to retry, when a signal asked for it.
_received: list[int] = []


@dataclass
class Migration:
    """One row of background_migrations, as the runner works on it."""

    name: str
    revision: str
    table_name: str
    key_column: str
    statement: str
    batch_size: int
    state: str
    last_key: int | None
    rows_done: int
    batches_done: int
    error: str | None

    def table(self) -> sql.Composable:
        return sql.Identifier(*self.table_name.split(".", 1))


def _table_exists(cur) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))
    return bool(cur.fetchone()[0])


def _load(cur, name: str) -> Migration | None:
    cur.execute(f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE name = %s", (name,))
    row = cur.fetchone()
    return Migration(*row) if row else None


def _set_state(cur, name: str, state: str, error: str | None = None) -> None:
    finished = ", finished_at = now()" if state == "done" else ""
    cur.execute(f"UPDATE {TABLE} SET state = %s, error = %s, updated_at = now(){finished} "
                "WHERE name = %s", (state, error, name))


def unhealthy(cur: psycopg2.extensions.cursor, settings: Config) -> str | None:
    """Why the database should not take a batch now, or None when it may.

    Only this database's client sessions count, not this runner's own: another database's
    long transaction on the same server does not hold back this one's cleanup. The owner role
    needs ``pg_monitor`` (or superuser) to see other roles' sessions; without it their
    ``xact_start`` and ``wait_event`` read as NULL and are missed.
    """
    # A session waiting on a heavyweight lock for seconds means writers are queueing; a
    # batch's row locks would lengthen the queue. Advisory waits are other runners' polls.
    cur.execute("""
        SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND wait_event_type = 'Lock' AND wait_event <> 'advisory'
          AND now() - query_start > make_interval(secs => %s)""",
                (settings.backfill_max_lock_wait,))
    waiting = cur.fetchone()[0]
    if waiting:
        return (f"{waiting} session(s) waiting on a lock for more than "
                f"{settings.backfill_max_lock_wait:g}s")
    # A long transaction holds back the xmin horizon: every row version a batch replaces
    # stays on disk (vacuum cannot remove it) until that transaction ends, so a backfill
    # beside it bloats the table by the rows it rewrites.
    cur.execute("""
        SELECT pid, extract(epoch FROM now() - xact_start)::int FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND backend_type = 'client backend' AND xact_start IS NOT NULL
          AND now() - xact_start > make_interval(secs => %s)
        ORDER BY xact_start LIMIT 1""", (settings.backfill_max_transaction_age,))
    row = cur.fetchone()
    if row:
        return f"a transaction open for {row[1]}s (pid {row[0]})"
    # pg_stat_replication has a row per connected standby (on the primary only); replay_lag
    # is NULL when the standby is idle and caught up.
    cur.execute("SELECT max(extract(epoch FROM replay_lag)) FROM pg_stat_replication")
    lag = cur.fetchone()[0]
    if lag is not None and lag > settings.backfill_max_replication_lag:
        return f"replication lag of {lag:.0f}s"
    return None


def _next_size(size: int, seconds: float, settings: Config) -> int:
    """Steer the batch size toward the target duration, at most halving or doubling per step
    so one odd batch (a cold cache, a checkpoint) does not swing it."""
    wanted = size * settings.backfill_batch_seconds / max(seconds, 0.001)
    return int(max(1, min(settings.backfill_max_batch_size, size * 2, max(size / 2, wanted))))


def _batch(cur, m: Migration, size: int, settings: Config) -> tuple[bool, int, int, int]:
    """One batch in one transaction: (finished, rows changed, next batch size, keys the
    batch covered)."""
    table, key = m.table(), sql.Identifier(m.key_column)
    cur.execute("BEGIN")
    try:
        cur.execute("SELECT set_config('lock_timeout', %s, true), "
                    "set_config('statement_timeout', %s, true)",
                    (settings.lock_timeout, settings.statement_timeout))
        start = m.last_key
        if start is None:
            cur.execute(sql.SQL("SELECT min({k}) - 1 FROM {t}").format(k=key, t=table))
            start = cur.fetchone()[0]
        stop, covered = None, 0
        if start is not None:
            # Keyset pagination: the index on the key finds the batch's end directly; OFFSET
            # would read and discard every row before it, slower with each batch. The count
            # comes from the same rows: the progress line's measure, which a statement that
            # skips rows (WHERE ... IS NULL) does not skew.
            cur.execute(sql.SQL("SELECT max(k), count(*) FROM (SELECT {k} AS k FROM {t} "
                                "WHERE {k} > %s ORDER BY {k} LIMIT %s) AS batch")
                        .format(k=key, t=table), (start, size))
            stop, covered = cur.fetchone()
        if stop is None:
            _set_state(cur, m.name, "done")
            cur.execute("COMMIT")
            return True, 0, size, 0
        began = time.monotonic()
        cur.execute(to_driver_sql(m.statement), {"start": start, "stop": stop})
        changed = max(cur.rowcount, 0)
        next_size = _next_size(size, time.monotonic() - began, settings)
        # The progress commits with the batch. The guard on last_key refuses to record a
        # batch over another's progress, should two runners ever meet on one migration.
        cur.execute(f"UPDATE {TABLE} SET last_key = %s, rows_done = rows_done + %s, "
                    "batches_done = batches_done + 1, batch_size = %s, state = 'running', "
                    "error = NULL, updated_at = now() "
                    "WHERE name = %s AND last_key IS NOT DISTINCT FROM %s",
                    (stop, changed, next_size, m.name, m.last_key))
        if cur.rowcount != 1:
            raise BackfillFailed(f"background migration {m.name}: its progress changed "
                                 "under this runner")
        cur.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(psycopg2.Error):  # a lost connection has rolled back
            cur.execute("ROLLBACK")
        raise
    m.last_key, m.rows_done, m.batches_done = stop, m.rows_done + changed, m.batches_done + 1
    return False, changed, next_size, covered


def _wait_until_healthy(cur, m: Migration, settings: Config,
                        progress: ProgressLine | None) -> None:
    reason = unhealthy(cur, settings)
    if reason is None:
        return
    _set_state(cur, m.name, "paused")
    log.warning("background migration %s paused: %s", m.name, reason)
    if progress:
        progress.update(note="paused", force=True)
    while reason is not None:
        time.sleep(PAUSE_POLL)
        reason = unhealthy(cur, settings)
    _set_state(cur, m.name, "running")
    log.info("background migration %s resumed: the database is healthy again", m.name)


def _estimate(cur, m: Migration, settings: Config) -> int | None:
    """Rows left above last_key, counted once per run for the progress line (each batch then
    subtracts its own); None when the count cannot be had quickly. Under the batches'
    timeouts: a plain SELECT queues behind a pending ACCESS EXCLUSIVE request on the table."""
    cur.execute("BEGIN")
    try:
        cur.execute("SELECT set_config('lock_timeout', %s, true), "
                    "set_config('statement_timeout', %s, true)",
                    (settings.lock_timeout, settings.statement_timeout))
        remaining = _remaining(cur, m)
        cur.execute("COMMIT")
        return remaining
    except psycopg2.Error as exc:
        with contextlib.suppress(psycopg2.Error):
            cur.execute("ROLLBACK")
        if _received or cur.connection.closed:
            raise
        log.info("background migration %s: no estimate of the rows left (%s)", m.name,
                 describe_error(exc))
        return None


def _apply(cur, m: Migration, settings: Config, log_every: int,
           progress: ProgressLine | None = None) -> None:
    """Run one migration's batches to the end; raise BackfillFailed on a lasting error,
    BackfillInterrupted on a signal, LifecycleError when the connection is lost."""
    try:
        _apply_batches(cur, m, settings, log_every, progress)
    except (KeyboardInterrupt, psycopg2.Error) as exc:
        # A signal during a statement surfaces as that statement's QueryCanceled.
        if isinstance(exc, psycopg2.Error) and not _received:
            raise
        raise _interrupted(cur, m) from None


def _apply_batches(cur, m: Migration, settings: Config, log_every: int,
                   progress: ProgressLine | None) -> None:
    where = f"after key {m.last_key}" if m.last_key is not None else "from the first key"
    log.info("background migration %s (revision %s) on %s: starting %s, %d row(s) done",
             m.name, m.revision, m.table_name, where, m.rows_done)
    cur.execute(f"UPDATE {TABLE} SET state = 'running', error = NULL, updated_at = now(), "
                "started_at = coalesce(started_at, now()) WHERE name = %s", (m.name,))
    if progress:
        left = _estimate(cur, m, settings)
        progress.start(m.name, m.rows_done, None if left is None else m.rows_done + left,
                       exact=left is not None and left < COUNT_CAP)
    size, began, attempt = m.batch_size, time.monotonic(), 0
    while True:
        _wait_until_healthy(cur, m, settings, progress)
        try:
            finished, _, size, covered = _batch(cur, m, size, settings)
            attempt = 0
        except psycopg2.Error as exc:
            if _received:
                raise  # the cancel a signal asked for: _apply says so
            reason = describe_error(exc)
            if cur.connection.closed:
                # Not the migration's failure: its row keeps 'running', the next run resumes.
                raise LifecycleError(f"background migration {m.name}: lost the connection "
                                     f"after key {m.last_key} ({reason}); the next run "
                                     "resumes there") from None
            attempt += 1
            retry = exc.pgcode in (LOCK_NOT_AVAILABLE, QUERY_CANCELED)
            if not retry or attempt >= settings.migration_retries:
                _record_failure(cur, m.name, reason)
                at = f" after key {m.last_key}" if m.last_key is not None else ""
                raise BackfillFailed(f"background migration {m.name} failed{at}: {reason}"
                                     ) from None
            if exc.pgcode == QUERY_CANCELED:
                size = max(1, size // 2)  # too big for statement_timeout: a smaller one
            batch = "first batch" if m.last_key is None else f"batch after key {m.last_key}"
            log.warning("background migration %s: %s gave up (%s), try %d of %d", m.name,
                        batch, reason, attempt, settings.migration_retries)
            time.sleep(settings.migration_retry_delay * attempt)
            continue
        if finished:
            if progress:
                progress.finish()
            log.info("background migration %s done: %d row(s) changed in %d batch(es), this "
                     "run %.1fs", m.name, m.rows_done, m.batches_done, time.monotonic() - began)
            return
        if progress:
            progress.advance(covered)
        if m.batches_done % log_every == 0:
            log.info("background migration %s: %d row(s) changed, at key %s, batch size %d",
                     m.name, m.rows_done, m.last_key, size)


def _interrupted(cur, m: Migration) -> BackfillInterrupted:
    """The one line for a signal during a migration, its progress read back: a signal
    between COMMIT and the bookkeeping in memory would otherwise name the batch before."""
    signum = _received[0] if _received else signal.SIGINT
    with contextlib.suppress(psycopg2.Error, KeyboardInterrupt):
        m = _load(cur, m.name) or m
    at = f"after key {m.last_key}" if m.last_key is not None else "at the first key"
    return BackfillInterrupted(
        f"interrupted by {signal.Signals(signum).name}: background migration {m.name} stopped "
        f"{at} with {m.rows_done} row(s) changed; any batch in flight was rolled back, the "
        "next run resumes there", signum)


def _record_failure(cur, name: str, reason: str) -> None:
    # When the connection itself is gone the row keeps 'running'; the next run resumes it.
    with contextlib.suppress(psycopg2.Error):
        _set_state(cur, name, "failed", reason)


def _try_lock(cur, name: str) -> bool:
    cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(name),))
    return bool(cur.fetchone()[0])


def _unlock(cur, name: str) -> None:
    cur.execute("SELECT pg_advisory_unlock(%s)", (lock_key(name),))


def run_all(url: URL, settings: Config, log_every: int = 10,
            progress: ProgressLine | None = None) -> list[str]:
    """Apply every background migration not done yet; return the failures' one-line reasons.

    A migration another runner holds is skipped at first, then waited for, so that this
    returns only once every migration is done or failed: ``run`` exits 0 meaning all done.
    ``progress`` (a terminal's) shows each migration's line as it goes. Raises
    BackfillInterrupted on SIGINT/SIGTERM and LifecycleError when the database is lost,
    each with one line.
    """
    with _stop_on_signal():
        try:
            return _run_all(url, settings, log_every, progress)
        except (KeyboardInterrupt, psycopg2.Error) as exc:
            if isinstance(exc, KeyboardInterrupt) or _received:
                # Between migrations: nothing of theirs was in flight.
                signum = _received[0] if _received else signal.SIGINT
                raise BackfillInterrupted(f"interrupted by {signal.Signals(signum).name}: "
                                          "stopped between background migrations; the next "
                                          "run resumes them", signum) from None
            raise LifecycleError(f"background migrations stopped: {describe_error(exc)}; "
                                 "the next run resumes after the last committed batch"
                                 ) from None


def _run_all(url: URL, settings: Config, log_every: int,
             progress: ProgressLine | None) -> list[str]:
    conn = connect(url, APPLICATION_NAME)
    failures: list[str] = []
    try:
        with conn.cursor() as cur:
            if not _table_exists(cur):
                log.info("no background migrations registered")
                return []
            cur.execute(f"SELECT name FROM {TABLE} WHERE state <> 'done' "
                        "ORDER BY created_at, name")
            names = [row[0] for row in cur.fetchall()]
            held: list[str] = []
            for name in names:
                if not _run_one(cur, name, settings, log_every, failures, progress):
                    log.info("background migration %s: another runner holds it; skipping "
                             "it for now", name)
                    held.append(name)
            for name in held:
                _wait_and_run(cur, name, settings, log_every, failures, progress)
    finally:
        conn.close()
    return failures


@contextlib.contextmanager
def _stop_on_signal() -> Iterator[None]:
    """SIGINT/SIGTERM raise KeyboardInterrupt at once, even while a statement runs: the wait
    callback (backend.migrate.interrupt) then sends PostgreSQL a cancel request, and the
    batch's transaction rolls back in the server right away. Without it psycopg2 waits in C:
    SIGINT would act only once the statement ends, and SIGTERM's default action kills the
    process silently while the server runs the orphaned batch to its end, holding the
    migration's advisory lock and the batch's row locks until it notices the client is gone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers
        return
    _received.clear()

    def interrupt(signum: int, _frame) -> None:
        _received.append(signum)
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in SIGNALS}
    callback = psycopg2.extensions.get_wait_callback()
    if callback is None:
        install_cancelling_wait()
    try:
        yield
    finally:
        psycopg2.extensions.set_wait_callback(callback)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_one(cur, name: str, settings: Config, log_every: int, failures: list[str],
             progress: ProgressLine | None = None) -> bool:
    """Apply one migration if no other runner holds it; False when another does."""
    if not _try_lock(cur, name):
        return False
    try:
        m = _load(cur, name)  # read after the lock: another runner may have finished it
        if m is not None and m.state != "done":
            try:
                _apply(cur, m, settings, log_every, progress)
            except BackfillFailed as exc:
                log.error("%s", exc)
                failures.append(str(exc))
    finally:
        if not cur.connection.closed:  # a lost connection took its advisory locks with it
            _unlock(cur, name)
    return True


def _wait_and_run(cur, name: str, settings: Config, log_every: int,
                  failures: list[str], progress: ProgressLine | None = None) -> None:
    # pg_try_advisory_lock in a loop, not pg_advisory_lock: a blocked lock call shows as a
    # lock wait, which would pause the runner we wait for.
    next_log = time.monotonic() + WAIT_LOG_EVERY
    while not _run_one(cur, name, settings, log_every, failures, progress):
        if time.monotonic() >= next_log:
            log.info("background migration %s: still held by another runner", name)
            next_log = time.monotonic() + WAIT_LOG_EVERY
        time.sleep(PAUSE_POLL)


def status(url: URL) -> list[dict[str, Any]]:
    """Every registered background migration with its progress, rate and ETA.

    A migration recorded running or paused that no runner holds (its runner died) is
    reported pending: the next ``run`` resumes it.
    """
    conn = connect(url, APPLICATION_NAME)
    try:
        with conn.cursor() as cur:
            if not _table_exists(cur):
                return []
            cur.execute("SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks "
                        "WHERE locktype = 'advisory' AND granted AND objsubid = 1")
            held = {row[0] for row in cur.fetchall()}
            cur.execute(f"SELECT {', '.join(_COLUMNS)}, "
                        "extract(epoch FROM coalesce(finished_at, updated_at) - started_at) "
                        f"FROM {TABLE} ORDER BY created_at, name")
            rows = cur.fetchall()
            return [_describe(cur, Migration(*row[:-1]), row[-1], held) for row in rows]
    except psycopg2.Error as exc:
        raise LifecycleError(f"background migrations status: {describe_error(exc)}") from None
    finally:
        conn.close()


def _describe(cur, m: Migration, elapsed: float | None, held: set[int]) -> dict[str, Any]:
    state = m.state
    if state in ("running", "paused") and lock_key(m.name) not in held:
        state = "pending"
    total = m.rows_done if m.state == "done" else m.rows_done + _remaining(cur, m)
    rate = m.rows_done / float(elapsed) if elapsed and m.rows_done else None
    eta = (total - m.rows_done) / rate if rate and m.state != "done" else None
    return {"name": m.name, "revision": m.revision, "table": m.table_name, "state": state,
            "rows_done": m.rows_done, "rows_total": total, "batches_done": m.batches_done,
            "last_key": m.last_key, "batch_size": m.batch_size,
            "rows_per_second": round(rate, 1) if rate else None,
            "eta_seconds": round(eta) if eta is not None else None, "error": m.error}


def _remaining(cur, m: Migration) -> int:
    """Rows left above last_key: counted through the key's index up to COUNT_CAP, beyond
    that the planner's estimate of the table (pg_class.reltuples, -1 before any ANALYZE)."""
    key = sql.Identifier(m.key_column)
    above = sql.SQL("WHERE {k} > %s").format(k=key) if m.last_key is not None else sql.SQL("")
    cur.execute(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {t} {w} LIMIT %s) AS left_over")
                .format(t=m.table(), w=above),
                ((m.last_key, COUNT_CAP) if m.last_key is not None else (COUNT_CAP,)))
    counted = cur.fetchone()[0]
    if counted < COUNT_CAP:
        return counted
    cur.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                (m.table_name,))
    row = cur.fetchone()
    return max(COUNT_CAP, (row[0] if row else 0) - m.rows_done)

