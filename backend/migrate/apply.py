"""How ``migrations/env.py`` runs revisions against a live database.

Every command that changes the schema (``flask db upgrade``/``downgrade``/``stamp``, and the
entrypoint, which runs ``upgrade``) comes through :func:`run_locked`:

1. take the advisory lock (one migrator at a time, bounded wait);
2. set ``lock_timeout`` and ``statement_timeout`` for the session, so they also hold
   inside an ``autocommit_block`` (a migration may ``SET LOCAL`` its own);
3. refuse what is unsafe before touching anything: an unknown database revision,
   several heads, an applied revision whose file was edited;
4. run each revision in its own transaction, recording its file's checksum in the same
   transaction, and retry a revision that could not get its table lock in time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from alembic.runtime.migration import MigrationContext, RevisionStep
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from backend.config import Config
from backend.migrate import LifecycleError, background, checksums, grants
from backend.migrate.alembic_plan import command_name, planned_steps
from backend.migrate.backup import backup_before_migrate
from backend.migrate.lock import migration_lock
from backend.migrate.phases import Phases, ancestors, read_phases
from backend.migrate.revisions import (
    ahead_note,
    ahead_of_code,
    edited_reason,
    find_revision,
    label,
    read_state,
    unknown_reason,
)
from backend.postgres import describe_error
from backend.serving.metrics import MIGRATION_LOCK_TIMEOUTS, MIGRATION_SECONDS, REVISION_SECONDS

log = logging.getLogger("backend.migrations")
LOCK_NOT_AVAILABLE = "55P03"
# Set only by a developer's command on the embedded development database
# (migration_tools/embedded.py): refusing an unknown revision then names the branch that
# has it and the ways back. Production never sets it; its refusal stays one line.
explain_unknown: Callable[[ScriptDirectory, list[str]], str] | None = None


class RevisionRecorder:
    """Alembic's ``on_version_apply`` hook: a log line with the duration of each revision,
    and its checksum recorded (or forgotten, on downgrade) inside its own transaction."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.applied: list[str] = []
        self.heads: set[str] | None = None
        self.on_disk: dict[str, str] = {}  # checksums taken by the preflight

    def restart(self) -> None:
        self.last = time.perf_counter()

    def __call__(self, *, ctx, step, heads, run_args) -> None:
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        self.heads = set(heads)
        if step.is_stamp:
            return
        script = step.up_revision
        ident = step.up_revision_id
        if step.is_upgrade:
            checksums.record(ctx.connection, ident, script.path, self.on_disk.get(ident))
        else:
            checksums.forget(ctx.connection, ident)
        self.applied.append(ident)
        message = script.doc if script is not None else ""
        verb = "applied" if step.is_upgrade else "rolled back"
        REVISION_SECONDS.labels("up" if step.is_upgrade else "down").observe(elapsed)
        log.info("%s %s (%s) in %.3fs", verb, ident, message, elapsed,
                 extra={"fields": {"event": "revision", "revision": ident, "message": message,
                                   "direction": "up" if step.is_upgrade else "down",
                                   "seconds": round(elapsed, 3)}})


def set_session_timeouts(connection: Connection, settings: Config) -> None:
    """Session-level, not SET LOCAL: they must survive each revision's COMMIT and any
    ``autocommit_block``. A revision can still tighten or relax them with SET LOCAL."""
    connection.execute(text("SELECT set_config('lock_timeout', :v, false)"),
                       {"v": settings.lock_timeout})
    connection.execute(text("SELECT set_config('statement_timeout', :v, false)"),
                       {"v": settings.statement_timeout})
    # Each revision commits on its own; waiting for each commit's WAL flush would cost a
    # disk sync per revision. Atomicity does not depend on it (a revision and its version
    # row commit together or not at all), and run_locked ends with one synchronous commit,
    # which flushes every commit before it: nothing is served on a schema not yet durable.
    connection.execute(text("SET synchronous_commit = off"))
    if connection.dialect.server_version_info >= (14,):
        # A migrator killed mid-statement (SIGKILL, a lost container) is noticed within a
        # second, its transaction rolled back and its locks freed, instead of holding
        # them until the statement ends on its own.
        connection.execute(text("SET client_connection_check_interval = '1s'"))
    connection.commit()


def preflight(connection: Connection, ctx: MigrationContext, scripts: ScriptDirectory,
              settings: Config) -> tuple[list, dict[str, str]]:
    """Refuse before any change; return the planned steps and the files' checksums."""
    current, recorded = read_state(connection)
    connection.commit()
    heads = sorted(scripts.get_heads())
    history = read_phases(scripts)
    unknown = [rev for rev in current if find_revision(scripts, rev) is None]
    ahead = ahead_of_code(scripts, current, recorded) if unknown else []
    if ahead:
        return _on_a_newer_schema(ctx, ahead, heads, settings), {}
    if unknown:
        raise LifecycleError(explain_unknown(scripts, unknown) if explain_unknown
                             else unknown_reason(unknown))
    try:
        steps = planned_steps(ctx)
    except CommandError as exc:
        raise LifecycleError(history.problem() or str(exc)) from None
    if history.problem() and any(step.is_upgrade for step in steps):
        raise LifecycleError(history.problem())
    refuse_unfinished_backfills(connection, scripts, history, steps)

    on_disk = checksums.script_checksums(scripts)
    edited = checksums.edited_revisions(scripts, current, recorded, on_disk)
    if edited:
        if not settings.allow_edited:
            raise LifecycleError(edited_reason(scripts, edited))
        log.warning("MIGRATION_ALLOW_EDITED=1: going on although %s",
                    edited_reason(scripts, edited))

    checksums.ensure_table(connection)
    unrecorded = [rev for rev in checksums.applied_chain(scripts, current) if rev not in recorded]
    for rev in unrecorded:  # applied before checksums were kept: take them as they are now
        checksums.record(connection, rev, scripts.get_revision(rev).path, on_disk.get(rev))
    connection.commit()
    if unrecorded:
        log.info("recorded checksums of %d revision(s) applied earlier", len(unrecorded))
    return steps, on_disk


def refuse_unfinished_backfills(connection: Connection, scripts: ScriptDirectory,
                                history: Phases, steps: list) -> None:
    """A post-deploy revision about to run must find every background migration it relies
    on finished: those registered by the revisions it needs (along down_revision and
    depends_on). Its contract (a NOT NULL, a dropped column) would otherwise fail on, or
    lose, the rows the backfill has not reached yet."""
    post = [step.revision.revision for step in steps
            if isinstance(step, RevisionStep) and step.is_upgrade
            and step.revision.revision in history.post]
    if not post:
        return
    waiting = background.unfinished(connection, ancestors(scripts, post))
    connection.commit()
    if waiting:
        names = "; ".join(f"{row['name']} (revision {row['revision']}, {row['state']}, "
                          f"{row['rows_done']} row(s) done)" for row in waiting)
        raise LifecycleError(
            f"post-deploy revision(s) {', '.join(post)} wait for background migration(s) "
            f"{names}: let `flask migrations backfill run` finish them "
            "(`flask migrations backfill status` shows where they stand), then run this again")


def _on_a_newer_schema(ctx: MigrationContext, ahead: list[str], heads: list[str],
                       settings: Config) -> list:
    """A newer release migrated this database: nothing for this code to apply, and no
    script here to undo what the newer one did. An upgrade is a no-op that says why (so the
    entrypoint serves: older code on a newer schema, as a rolling deploy or a rollback
    needs); anything else is refused."""
    note = ahead_note(ahead, heads)
    if not settings.allow_ahead:
        raise LifecycleError(f"{note}; MIGRATION_ALLOW_AHEAD=0 refuses to run on it")
    if command_name(ctx) != "upgrade":  # Alembic's command: upgrade, downgrade, stamp
        raise LifecycleError(f"{note}: this code has no script for {', '.join(ahead)}, so "
                             "it cannot move the database; roll back with the release that "
                             "has them (its `flask db downgrade`)")
    log.warning("%s; nothing to apply, serving on it as it is "
                "(MIGRATION_ALLOW_AHEAD=0 would refuse)", note,
                extra={"fields": {"event": "ahead", "ahead": ahead, "head": heads}})
    return []


def _is_lock_timeout(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "pgcode", None) == LOCK_NOT_AVAILABLE


def run_with_retries(connection: Connection, ctx: MigrationContext, steps: list,
                     run: Callable[[], None], recorder: RevisionRecorder,
                     settings: Config) -> None:
    """Run the steps; retry a revision that hit ``lock_timeout``, with growing pauses."""
    for attempt in range(1, settings.migration_retries + 1):
        if attempt > 1:
            steps = planned_steps(ctx)  # what is left after the revisions that went in
        done_before = len(recorder.applied)
        recorder.restart()
        try:
            run()
            return
        except Exception as exc:
            index = len(recorder.applied) - done_before
            failed = steps[index].revision if index < len(steps) else None
            named = f"{failed.revision} ({failed.doc})" if failed else "?"
            lock_timeout = _is_lock_timeout(exc)
            if lock_timeout:
                MIGRATION_LOCK_TIMEOUTS.inc()
            if not lock_timeout or attempt == settings.migration_retries:
                reason = describe_error(exc)
                if lock_timeout:
                    reason = (f"could not lock a table within lock_timeout "
                              f"({settings.lock_timeout}) in {attempt} tries: {reason}")
                where = label(sorted(recorder.heads)) if recorder.heads is not None \
                    else label(_current(connection))
                raise LifecycleError(f"migration {named} failed: {reason}; "
                                     f"the database stays at {where}") from exc
            delay = settings.migration_retry_delay * 2 ** (attempt - 1)
            log.warning("migration %s could not lock a table within lock_timeout (%s), "
                        "try %d of %d; retrying in %.1fs", named, settings.lock_timeout,
                        attempt, settings.migration_retries, delay,
                        extra={"fields": {"event": "retry", "revision": failed and
                                          failed.revision, "attempt": attempt}})
            time.sleep(delay)


def _current(connection: Connection) -> list[str]:
    try:
        connection.rollback()
        return read_state(connection)[0]
    except Exception:  # the connection itself may be gone
        return ["unknown (connection lost)"]


def backup_first(connection: Connection, ctx: MigrationContext, steps: list,
                 settings: Config) -> None:
    """With BACKUP_BEFORE_MIGRATE=1, dump the database before the first revision runs.

    Inside the lock, so of many replicas only the one that migrates takes it; a failed
    dump raises, and nothing is migrated without the backup that was asked for.
    """
    if not any(isinstance(step, RevisionStep) for step in steps):
        return

    backup_before_migrate(connection.engine.url, list(ctx.get_current_heads()),
                          list(steps[-1].to_revisions), settings)


def make_durable(connection: Connection, recorder: RevisionRecorder) -> None:
    """One synchronous commit that writes: PostgreSQL flushes the WAL up to it, and so
    every revision committed before it (see ``set_session_timeouts``)."""
    if not recorder.applied:
        return
    with contextlib.suppress(Exception):  # after a lost connection there is nothing to flush
        connection.rollback()
        connection.execute(text("SET synchronous_commit = on"))
        connection.execute(text(f"UPDATE {checksums.TABLE} SET recorded_at = recorded_at "
                                "WHERE revision = :revision"), {"revision": recorder.applied[-1]})
        connection.commit()


def run_locked(connection: Connection, ctx: MigrationContext, scripts: ScriptDirectory,
               settings: Config, run: Callable[[], None], recorder: RevisionRecorder) -> None:
    """Everything a schema-changing command does, under the lock; timed from the moment
    it asks for the lock, by outcome (``backend_migration_duration_seconds``)."""
    started = time.perf_counter()
    outcome = "failed"
    try:
        _run_locked(connection, ctx, scripts, settings, run, recorder)
        outcome = "applied" if recorder.applied else "nothing"
    finally:
        MIGRATION_SECONDS.labels(outcome).observe(time.perf_counter() - started)


def _run_locked(connection: Connection, ctx: MigrationContext, scripts: ScriptDirectory,
                settings: Config, run: Callable[[], None], recorder: RevisionRecorder) -> None:
    """Everything a schema-changing command does, under the lock."""
    started = time.perf_counter()
    with migration_lock(connection, settings.migration_lock_wait):
        set_session_timeouts(connection, settings)
        steps, recorder.on_disk = preflight(connection, ctx, scripts, settings)
        before = label(sorted(ctx.get_current_heads()))
        if not steps:
            log.info("nothing to apply: the database is at %s", before)
            if settings.runtime_role:
                grants.keep(connection, settings.runtime_role, applied=False)
            return
        log.info("running %d revision(s) from %s", len(steps), before)
        backup_first(connection, ctx, steps, settings)
        try:
            run_with_retries(connection, ctx, steps, run, recorder, settings)
            if settings.runtime_role:
                grants.keep(connection, settings.runtime_role, applied=True)
        finally:
            make_durable(connection, recorder)
    elapsed = time.perf_counter() - started
    after = label(sorted(recorder.heads or ()))
    log.info("database now at %s: %d revision(s) from %s in %.3fs",
             after, len(recorder.applied), before, elapsed,
             extra={"fields": {"event": "summary", "from": before, "to": after,
                               "count": len(recorder.applied), "seconds": round(elapsed, 3)}})
