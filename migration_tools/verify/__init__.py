"""``scripts/verify_migrations.sh``: prove every revision's downgrade undoes its upgrade, fast.

pytest-alembic's ``test_downgrade_leaves_no_trace`` reflects the whole schema into SQLAlchemy
``MetaData`` and runs autogenerate against it twice per revision, and every step is an
Alembic command (config, script directory, ``env.py``). Both costs grow with the history:
about a quarter of a second per revision at a hundred revisions, minutes for a long-lived
project. The same question has a cheaper answer: PostgreSQL can describe its own schema in
one catalog query, and the revisions' ``upgrade()``/``downgrade()`` functions can run
directly on one connection.

So this module walks the history from base to head, in-process, on ONE connection of an
empty scratch database, and for each revision R:

1. upgrades R and takes the schema S1 (one catalog query: :mod:`migration_tools.fingerprint`);
2. downgrades R: the schema must equal S0, the one before R's upgrade
   ("downgrade of R (message) leaves a trace"), a constraint's ``NOT VALID`` state
   included. A downgrade raising ``NotImplementedError`` marks R as
   irreversible on purpose, as pytest-alembic accepts it;
3. upgrades R again: the schema must equal S1 ("upgrading R again gives a different
   schema"), the up/down consistency that pytest-alembic's ``test_up_down_consistency``
   checks by running it.

At head, once, the schema is compared with the models exactly as ``flask db check`` does
(``alembic check`` through ``migrations/env.py``, so with its ``include_name``).

Each step runs in its own transaction, as ``env.py`` runs each revision in production, and a
revision that steps out of it (``op.get_context().autocommit_block()``, for
``CREATE INDEX CONCURRENTLY``) works as it does there. Every problem is collected: a downgrade
that leaves a trace is rolled back, when it can be, so the walk goes on to the next
revision. Only an upgrade that fails stops it, since nothing after it can run.

What is compared: schemas, extensions, tables (partitioning, persistence, comments), columns
(type, nullability, default, identity, generated, collation, comment), constraints
(``pg_get_constraintdef`` and whether validated), indexes (``pg_get_indexdef`` and whether
valid), sequences (parameters, owner), views, enum/domain/range/composite types, functions
and triggers; not grants, owners, policies or row data. Column order is not compared (a
downgrade that drops and re-adds a column is fine), as autogenerate does not compare it.
``alembic_version`` and ``migration_checksums`` are left out.

The revisions run without ``env.py``'s advisory lock, session timeouts, refusals and
checksums: those guard a shared database, and this one is a scratch one no one else uses.
A revision that reads ``alembic_version`` while it runs sees none: it is written once, at
head.

The database is either one the caller names (``--url`` or ``DATABASE_URL``), which must be
empty and is left at head, or a scratch database this module creates on a server
(``--server-url``, or the embedded development PostgreSQL when nothing is named) and drops
at the end.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from backend import MIGRATIONS_DIR
from backend.config import mask_url
from backend.migrate import LifecycleError
from backend.migrate.database import describe_error
from migration_tools.fingerprint import Schema, restored, schema_diff, snapshot

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from alembic.runtime.migration import MigrationContext
    from alembic.script import Script, ScriptDirectory

PROG = "verify_migrations"
SCRATCH_PREFIX = "verify"


# What makes a database not empty, for --url: anything a revision could have created.
_OCCUPIED = r"""
SELECT n.nspname || '.' || c.relname FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
ORDER BY 1 LIMIT 6
"""


@dataclass
class RevisionResult:
    """What happened to one revision: its steps' durations and its problems."""

    revision: str
    message: str
    seconds: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    note: str | None = None

    @property
    def label(self) -> str:
        return f"{self.revision} ({self.message})"

    def line(self) -> str:
        """One line for ``-v``: verdict, revision, and the time of each step."""
        steps = "  ".join(f"{name} {seconds:.3f} s" for name, seconds in self.seconds.items())
        verdict = "FAIL" if self.problems else "ok  "
        extra = f"  ({self.note})" if self.note else ""
        return f"{verdict} {self.label}  {steps}{extra}".rstrip()


@dataclass
class Report:
    """The outcome of a verification: per revision, whole-run problems, and timings."""

    revisions: list[RevisionResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    walk_seconds: float = 0.0
    models_seconds: float | None = None
    stopped_at: str | None = None

    @property
    def ok(self) -> bool:
        return not self.all_problems()

    @property
    def seconds(self) -> float:
        return self.walk_seconds + (self.models_seconds or 0.0)

    def all_problems(self) -> list[str]:
        """Every problem, the revisions' in history order first."""
        return [p for result in self.revisions for p in result.problems] + self.problems

    def summary(self) -> str:
        count = len(self.revisions)
        per = self.seconds / count if count else 0.0
        return f"verified {count} revision(s) in {self.seconds:.2f} s ({per:.3f} s per revision)"


class _Walk:
    """The walk over the history on one connection, through one MigrationContext."""

    def __init__(self, connection: Connection, ctx: MigrationContext, report: Report,
                 on_revision: Callable[[RevisionResult], None] | None) -> None:
        self.connection = connection
        self.ctx = ctx
        self.report = report
        self.on_revision = on_revision

    def step(self, fn: Callable[[], Any],
             keep: Callable[[Schema], bool] | None = None) -> tuple[Schema, float, bool]:
        """Run ``fn`` (a revision's ``upgrade`` or ``downgrade``) in its own transaction, as
        env.py runs a revision, and snapshot the schema before it commits; roll it back
        instead when ``keep`` says no. Returns the schema ``fn`` left, its duration, and
        whether it was kept (committed)."""
        started = time.perf_counter()
        with self.ctx.begin_transaction() as transaction:
            fn()
            schema = snapshot(self.connection)
            kept = keep is None or keep(schema)
            if not kept:
                transaction.rollback()
        return schema, time.perf_counter() - started, kept

    def settled(self) -> Schema:
        """The schema now, read outside any transaction of the context's."""
        schema = snapshot(self.connection)
        self.connection.commit()
        return schema

    def revision(self, script: Script, before: Schema) -> Schema | None:
        """Upgrade, downgrade and upgrade again one revision; return the schema the walk goes
        on from, or None when it cannot go on."""
        result = RevisionResult(script.revision, script.doc or "")
        self.report.revisions.append(result)
        label = result.label
        module = script.module
        try:
            after, result.seconds["up"], _ = self.step(module.upgrade)
        except Exception as exc:
            result.problems.append(f"upgrade of {label} failed: {_error(exc)}")
            return self.done(result, None)

        try:
            downgraded, result.seconds["down"], kept = self.step(
                module.downgrade, lambda schema: restored(before, schema))
        except NotImplementedError:
            # pytest-alembic's rule: an irreversible revision says so by raising.
            result.note = "downgrade not implemented: irreversible on purpose"
            return self.done(result, self.resume(result, after))
        except Exception as exc:
            result.problems.append(f"downgrade of {label} failed: {_error(exc)}")
            return self.done(result, self.resume(result, after))
        if not kept:
            result.problems.append(f"downgrade of {label} leaves a trace (- before the "
                                   "upgrade only, + after the downgrade only):\n    "
                                   + "\n    ".join(schema_diff(before, downgraded)))
            return self.done(result, self.resume(result, after))

        try:
            again, result.seconds["up again"], _ = self.step(module.upgrade)
        except Exception as exc:
            result.problems.append(f"upgrading {label} again failed (its downgrade does not "
                                   f"leave what its upgrade expects): {_error(exc)}")
            return self.done(result, None)
        if again != after:
            result.problems.append(f"upgrading {label} again gives a different schema (- after "
                                   "the first upgrade only, + after the second only):\n    "
                                   + "\n    ".join(schema_diff(after, again)))
        return self.done(result, again)

    def resume(self, result: RevisionResult, after: Schema) -> Schema | None:
        """After a downgrade was rolled back: go on from the upgraded schema if the rollback
        restored it. A revision that committed part of its downgrade outside its
        transaction (``autocommit_block``) leaves the database where the walk cannot trust
        the comparisons of the revisions after it."""
        if self.settled() == after:
            return after
        result.problems.append(f"cannot go on after {result.label}: its downgrade committed "
                               "changes outside its transaction (autocommit_block)")
        return None

    def done(self, result: RevisionResult, schema: Schema | None) -> Schema | None:
        if schema is None:
            self.report.stopped_at = result.revision
        if self.on_revision is not None:
            self.on_revision(result)
        return schema


def _error(exc: BaseException) -> str:
    """One line for a failed step: the database's message, or the Python error's type and
    message (a typo in a revision is not a database error)."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        return describe_error(exc)
    return f"{type(exc).__name__}: {describe_error(exc)}"


def history(directory: Path) -> tuple[AlembicConfig, ScriptDirectory, list[Script]]:
    """Alembic's config and script directory for ``directory``, and its revisions from base to
    head (parents before children), the order ``alembic upgrade`` applies them in."""
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    config = AlembicConfig(str(directory / "alembic.ini"))
    config.set_main_option("script_location", str(directory))
    scripts = ScriptDirectory.from_config(config)
    return config, scripts, list(reversed(list(scripts.walk_revisions("base", "heads"))))


def walk(connection: Connection, directory: Path = MIGRATIONS_DIR, report: Report | None = None,
         on_revision: Callable[[RevisionResult], None] | None = None) -> Report:
    """Walk the history on ``connection`` (an empty database, not in a transaction), checking
    each revision; stamp the heads at the end when every upgrade went in.

    The session commits without waiting for the WAL flush (``synchronous_commit = off``): a
    server crash could lose the last commits, which in a scratch database costs nothing, and
    three commits per revision no longer wait for the disk.
    """
    from alembic.operations import Operations
    from alembic.runtime.environment import EnvironmentContext

    report = report or Report()
    config, scripts, revisions = history(directory)
    started = time.perf_counter()
    connection.execute(text("SET synchronous_commit = off"))
    connection.commit()
    # One context for the whole walk: revisions see the usual `op` and `alembic.context`.
    with EnvironmentContext(config, scripts) as environment:
        environment.configure(connection=connection, transaction_per_migration=False)
        ctx = environment.get_context()
        state: Schema | None = snapshot(connection)
        connection.commit()
        walker = _Walk(connection, ctx, report, on_revision)
        with Operations.context(ctx):
            for script in revisions:
                state = walker.revision(script, state)
                if state is None:
                    break
        if state is not None:
            with ctx.begin_transaction():
                ctx.stamp(scripts, "heads")
    report.walk_seconds = time.perf_counter() - started
    return report


def describe_diff(diff: Any) -> str:
    """One autogenerate difference, short: ``add_column tasks.notes``.

    Alembic gives tuples such as ``('add_column', schema, 'tasks', Column)`` or
    ``('modify_type', schema, 'tasks', 'priority', ...)``, and lists of them.
    """
    if isinstance(diff, list):
        return ", ".join(describe_diff(item) for item in diff)
    if not isinstance(diff, tuple) or not diff:
        return str(diff)
    named = next((item for item in diff[1:] if getattr(item, "name", None)), None)
    if named is not None:
        table = getattr(getattr(named, "table", None), "name", None)
        path = f"{table}.{named.name}" if table and table != named.name else str(named.name)
    else:
        path = ".".join(item for item in diff[1:4] if isinstance(item, str))
    return f"{diff[0]} {path}"


def compare_models(connection: Connection, url: URL, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """What ``flask db check`` would report on ``connection`` (at head): the app's models
    against the schema, through ``directory``'s ``env.py`` (so its ``include_name`` and
    Flask-Migrate's ``compare_type``/``compare_server_default`` apply). Empty when they
    match."""
    from alembic import command
    from alembic.util import AutogenerateDiffsDetected

    from backend import create_app
    from backend.config import Config
    from backend.extensions import db

    app = create_app(Config(database_url=url))
    try:
        with app.app_context():
            config = app.extensions["migrate"].migrate.get_config(directory=str(directory))
            config.attributes["connection"] = connection  # env.py migrates on it, no other
            config.stdout = io.StringIO()  # "No new upgrade operations detected."
            try:
                command.check(config)
            except AutogenerateDiffsDetected as exc:
                return [describe_diff(diff) for diff in exc.diffs]
            finally:
                connection.rollback()
            return []
    finally:
        with app.app_context():
            db.engine.dispose()


def occupied(connection: Connection) -> list[str]:
    """Up to six relations already in the database (empty when it is empty)."""
    names = [row[0] for row in connection.execute(text(_OCCUPIED))]
    connection.rollback()
    return names


def verify(url: URL, directory: Path = MIGRATIONS_DIR, *, models: bool = True,
           on_revision: Callable[[RevisionResult], None] | None = None) -> Report:
    """Verify the history in ``directory`` on the EMPTY database at ``url`` (left at head).

    Raises :class:`LifecycleError` when it cannot run at all (no connection, a database
    that is not empty); problems with the revisions are in the returned report.
    """
    engine = create_engine(url, poolclass=NullPool, connect_args={
        "connect_timeout": 10, "application_name": PROG})
    try:
        try:
            connection = engine.connect()
        except Exception as exc:
            raise LifecycleError(f"cannot connect to {mask_url(url)}: {describe_error(exc)}") \
                from None
        with connection:
            found = occupied(connection)
            if found:
                raise LifecycleError(
                    f"refusing to verify on {mask_url(url)}: the database is not empty (it has "
                    f"{', '.join(found[:5])}{', ...' if len(found) > 5 else ''}); give an "
                    "empty scratch database, or --server-url to have one made and dropped")
            report = walk(connection, directory, on_revision=on_revision)
            if report.stopped_at is not None:
                report.problems.append("the schema at head was not compared with the models: "
                                       f"the walk stopped at {report.stopped_at}")
            elif models:
                started = time.perf_counter()
                try:
                    diffs = compare_models(connection, url, directory)
                except Exception as exc:
                    diffs = None
                    report.problems.append("the comparison of the schema at head with the "
                                           f"models failed: {_error(exc)}")
                report.models_seconds = time.perf_counter() - started
                if diffs:
                    report.problems.append("the schema at head does not match the models; "
                                           "autogenerate would write: " + "; ".join(diffs))
            return report
    finally:
        engine.dispose()
