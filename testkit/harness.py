"""What the migration tests share: our app wired to pytest-alembic, and facts about revisions.

pytest-alembic runs ``migrations/env.py`` itself and hands it the engine under test in
``config.attributes["connection"]``. Our env.py reads the Flask app (``current_app``) for its
settings and metadata, so every run happens inside an app built for the test database; the
Alembic config is Flask-Migrate's own (``script_location`` is set in code, not in
``alembic.ini``), so the tests load exactly the files ``flask db upgrade`` loads.

A history may have a post-deploy branch (backend/migrate/phases.py). The walks here run
the two phases as a deploy does: before a post-deploy revision is applied by a command of its
own, the background migrations registered so far run to their end with the real runner
(:func:`finish_background_migrations`), as ``flask migrations backfill run`` does before
``flask migrations post-deploy``; otherwise env.py refuses the step, as it refuses the deploy.
A walk in one command (``upgrade heads`` from scratch) leaves the work to the post-deploy
revision's ``finish_backfill``, which completes the backfill inline.

Nothing here runs in the service: it is imported by the tests and the benchmarks only, and
pytest-alembic is a development dependency.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_alembic.executor import CommandExecutor, ConnectionExecutor
from pytest_alembic.runner import MigrationContext
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from backend.config import Config
from backend.migrate import background
from backend.migrate.backfill_runner import run_all
from backend.migrate.checksums import applied_chain
from backend.migrate.phases import POST, read_phases
from migration_tools.fingerprint import BOOKKEEPING
from migration_tools.rehearse.runner import downgrade_target
from migration_tools.row_loss import expected_row_loss
from testkit.support import FIXTURE_REVISIONS, write_revision

if TYPE_CHECKING:
    import pytest_alembic.config
    from alembic.script import Script, ScriptDirectory
    from flask import Flask

# How a revision steps out of its transaction: an autocommit_block of its own (CREATE INDEX
# CONCURRENTLY), or one of the large-table helpers, each of which runs in one.
_LEAVES_TRANSACTION = re.compile(r"\bautocommit_block\s*\(|\blarge_tables\b")


def harness_settings(url: URL) -> Config:
    """Production settings, except that a lock wait fails at once instead of retrying with
    pauses: in a throwaway database nothing else holds a lock, so a wait is a test bug (a
    connection left in a transaction) and should say so in seconds, not after half a minute
    of retries.
    """
    return Config(database_url=url, migration_retries=1, migration_lock_wait=10.0)


@dataclass
class MigrationSession:
    """An app built for one test database, with its context pushed, and its engine."""

    app: Flask
    engine: Engine

    def alembic_config(self, directory: Path | None = None,
                       **options: Any) -> pytest_alembic.config.Config:
        """pytest-alembic's config around Flask-Migrate's Alembic config for this app.

        ``directory`` is a migrations directory other than the app's (a project copy's, with
        revisions a test wrote); ``options`` are pytest-alembic's own
        (``before_revision_data``, ``skip_revisions``...).
        """
        from pytest_alembic.config import Config as PytestAlembicConfig

        migrate = self.app.extensions["migrate"].migrate
        config = migrate.get_config(directory=None if directory is None else str(directory))
        # Some checks copy the config by reading alembic.ini again, with ``config_args`` as
        # defaults: the script_location Flask-Migrate sets in code must travel there too.
        config.config_args["script_location"] = config.get_main_option("script_location")
        return PytestAlembicConfig(alembic_config=config, **options)


@contextlib.contextmanager
def migration_session(url: URL) -> Iterator[MigrationSession]:
    """Build the app for ``url`` and keep its context pushed while the block runs, as
    ``flask db`` does around env.py; close every pooled connection afterwards, so the
    database can be dropped or used as a template."""
    from backend import create_app
    from backend.extensions import db

    app = create_app(harness_settings(url))
    with app.app_context():
        try:
            yield MigrationSession(app=app, engine=db.engine)
        finally:
            db.engine.dispose()


def leaves_transaction(script: Script) -> bool:
    """Whether a revision steps out of its transaction (``autocommit_block``, needed by
    ``CREATE INDEX CONCURRENTLY``, or a helper of backend/migrate/large_tables.py, which
    uses one). Such a revision cannot run inside a check that rolls every step back in one
    transaction."""
    return bool(_LEAVES_TRANSACTION.search(script_source(script)))


def script_source(script: Script) -> str:
    """The revision file's text, as written (comments included)."""
    with open(script.path, encoding="utf-8") as handle:
        return handle.read()


def transaction_leaving_revisions(scripts: ScriptDirectory) -> list[str]:
    """Every revision that uses ``autocommit_block``, oldest first."""
    return [script.revision for script in reversed(list(scripts.walk_revisions()))
            if leaves_transaction(script)]


def newest_merge(scripts: ScriptDirectory) -> str | None:
    """The newest merge revision, the floor for pytest-alembic's downgrade check.

    That check walks the history as one line; across two branches its line steps from one
    branch's tip to the other's, where "down one" undoes the wrong branch and the check fails
    a history that is fine. Below the newest merge it only upgrades; the downgrades there are
    proved by ``scripts/verify_migrations.sh``, which follows each revision's own parents.
    """
    for script in scripts.walk_revisions():  # newest first
        if script.is_merge_point:
            return script.revision
    return None


def row_counts(connection: Connection) -> dict[str, int]:
    """Rows in every table of the current schema but the migration bookkeeping, in one
    round trip. Reads in the caller's transaction, so uncommitted rows count."""
    tables = [name for (name,) in connection.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"))
        if name not in BOOKKEEPING]
    if not tables:
        return {}
    query = " UNION ALL ".join(
        f"SELECT '{name}', count(*) FROM \"{name}\"" for name in tables)
    return {name: count for name, count in connection.execute(text(query))}


def declared_row_loss(script: Script) -> dict[str, str]:
    """The tables a revision says it empties on purpose, with the reason, from its
    ``# rehearse: expect-row-loss <table> <reason>`` lines. A line without a reason is an
    error: like ``squawk-ignore``, an exception must say why."""
    declared, invalid = expected_row_loss(script.path)
    if invalid:
        raise ValueError(f"{script.revision}: `# rehearse: expect-row-loss` for {invalid} "
                         "gives no reason; write `# rehearse: expect-row-loss <table> <reason>`")
    return declared


def url_for_config_file(url: URL) -> tuple[URL, dict[str, str]]:
    """``url`` without the parts that render with ``%`` escapes (a socket directory in
    ``?host=``, a password), and the libpq variables that carry them instead.

    pytest-alembic hands a URL to a fresh interpreter through an ``alembic.ini`` option, and
    ConfigParser reads ``%`` as the start of an interpolation.
    """
    env = {}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    for key, variable in (("host", "PGHOST"), ("port", "PGPORT")):
        value = url.query.get(key)
        if isinstance(value, str):
            env[variable] = value
    return url.set(password=None).difference_update_query(["host", "port"]), env


def create_bookkeeping(connection: Connection) -> None:
    """Create the lifecycle's ``background_migrations`` table before a walk, empty.

    A revision that registers a backfill creates it (``CREATE TABLE IF NOT EXISTS``) and its
    downgrade leaves it, as ``alembic_version`` stays after a downgrade to base: it is
    bookkeeping, never part of a revision's schema. pytest-alembic's
    ``test_downgrade_leaves_no_trace`` reflects every table and cannot be told so; with the
    table there from the start, what it compares is the revisions' own schema."""
    connection.execute(text(background.CREATE_TABLE))
    connection.commit()


def finish_background_migrations(url: URL) -> None:
    """Run every registered background migration not done yet to its end, with the runner
    (``flask migrations backfill run``), on ``url``: what a deploy does between its
    pre-deploy and its post-deploy revisions. A failed batch fails the walk, in one line."""
    failures = run_all(url, harness_settings(url))
    if failures:
        raise RuntimeError(f"background migration(s) failed: {'; '.join(failures)}")


@dataclass
class DeployOrderExecutor(CommandExecutor):
    """pytest-alembic's executor, for a history with two phases.

    - An upgrade to a post-deploy revision (or to ``heads``) by a command of its own is
      preceded by the background migrations registered so far, run to their end: the
      deploy's order. Only on an engine: a check that runs the walk inside one transaction
      (pytest-alembic's ``test_downgrade_leaves_no_trace``) hands env.py a connection, and
      the runner's own connection would wait on that transaction's locks. There env.py
      runs inside the caller's transaction without its refusals, and the post-deploy
      revision's ``finish_backfill`` does the work inline.
    - A downgrade to a revision of pytest-alembic's flat walk undoes, newest first, each
      applied revision that comes after it in the walk, one Alembic step each. Alembic
      itself refuses "downgrade to the expand" from the contract that depends on it (the
      contract's branch has its own root: its downgrades follow ``down_revision`` only),
      and "downgrade to the first contract" would undo the next release's expand too,
      which the walk applied before it.
    """

    url: URL | None = None
    post: frozenset[str] = frozenset()

    def upgrade(self, revision: str) -> None:
        self.before_upgrade(revision)
        super().upgrade(revision)

    def downgrade(self, revision: str) -> None:
        if not self.post:
            super().downgrade(revision)
            return
        order = walk_order(self.script)
        # What the flat walk holds at the destination: every revision up to it, in order
        # (ancestors first, so nothing kept needs a revision undone).
        keep = set() if revision == "base" else set(order[:order.index(
            self.script.get_revision(revision).revision) + 1])
        applied = set(applied_chain(self.script, current_heads(self)))
        for rev in reversed(order):
            if rev in applied and rev not in keep:
                super().downgrade(downgrade_target(self.script.get_revision(rev)))

    def run_command(self, command: str, *args: Any, **kwargs: Any) -> list[str]:
        if command == "upgrade" and args:
            self.before_upgrade(str(args[0]))
        if command == "downgrade" and args and self.post and not kwargs:
            self.downgrade(str(args[0]))
            return []
        return super().run_command(command, *args, **kwargs)

    def before_upgrade(self, target: str) -> None:
        if self.url is None or not isinstance(self.alembic_config.attributes.get("connection"),
                                              Engine):
            return
        if target in self.post or target in ("heads", f"{POST}@head"):
            finish_background_migrations(self.url)


def current_heads(executor: CommandExecutor) -> list[str]:
    """The revisions in ``alembic_version``, read through env.py as pytest-alembic reads
    them (``execute_fn``: no destination, nothing changes)."""
    found: list[str] = []

    def collect(rev: Any, _context: Any) -> list:
        found.extend(rev or ())
        return []

    executor.execute_fn(collect)
    return sorted(found)


@dataclass
class PhasedMigrationContext(MigrationContext):
    """pytest-alembic's context, where ``current`` is the point its flat walk has reached.

    With both phases applied, ``alembic_version`` holds two revisions (one per phase), and
    pytest-alembic's own ``current`` names whichever comes first: its "next revision" and
    "previous revision" would then step from the wrong place. Here it is the newest, in the
    walk's order, of the revisions applied."""

    @property
    def current(self) -> str:
        heads = current_heads(self.command_executor)
        if len(heads) < 2:
            return heads[0] if heads else "base"
        applied = applied_chain(self.command_executor.script, heads)
        return max(applied, key=self.history.revision_indices.__getitem__)


@contextlib.contextmanager
def runner(config: pytest_alembic.config.Config, engine: Engine
           ) -> Iterator[MigrationContext]:
    """``pytest_alembic.runner`` for a history that may have two phases
    (:class:`DeployOrderExecutor`, :class:`PhasedMigrationContext`): the walks of
    ``test_upgrade``, ``test_up_down_consistency``, ``test_model_definitions_match_ddl``,
    ``test_downgrade_leaves_no_trace`` and the data tests go through both, in an order a
    deploy can take."""
    plain = CommandExecutor.from_config(config)
    executor = DeployOrderExecutor(
        **{field.name: getattr(plain, field.name) for field in dataclasses.fields(plain)},
        url=engine.url, post=read_phases(plain.script).post)
    context = PhasedMigrationContext.from_config(config, executor, ConnectionExecutor(engine))
    executor.configure(connection=engine)
    yield context


def walk_order(scripts: ScriptDirectory) -> list[str]:
    """Every revision of both phases, parents and ``depends_on`` targets first: a
    post-deploy revision comes after the main-line revisions it completes, and a
    pre-deploy revision that needs a post-deploy one after it."""
    return [script.revision for script in reversed(list(scripts.walk_revisions("base", "heads")))]


# A post-deploy branch for the fixture application (``widgets``), the tools' proof that they
# understand both phases: expand -> background backfill -> contract.
POST_EXPAND, POST_CONTRACT = "be0000000001", "be0000000002"
# Release N+2: an expand on the main line after the contract, and a second contract after
# the first, depending on it.
NEXT_EXPAND, NEXT_CONTRACT = "be0000000003", "be0000000004"
POST_BACKFILL = "widgets_code"
_BACKFILL_STATEMENT = ("UPDATE widgets SET code = 'W-' || id "
                       "WHERE id > :start AND id <= :stop AND code IS NULL")
_BACKGROUND_IMPORTS = ("from backend.migrate.background import finish_backfill, "
                       "register_backfill, unregister_backfill\n")
_MODEL_ANCHOR = "    size: Mapped[int | None] = mapped_column(sa.Integer)\n"
_EXPAND_DATA = '''"""add widget code: the column arrives empty, the backfill is only registered."""

from tests.migrations.data import rows

ROWS = [{"__tablename__": "widgets", "id": 990100 + i, "name": f"old {i}", "size": i}
        for i in range(3)]


def upgraded(db):
    assert rows(db, "SELECT count(*) FROM widgets WHERE id BETWEEN 990100 AND 990199 "
                    "AND code IS NULL") == [(3,)]
    assert rows(db, "SELECT state FROM background_migrations "
                    "WHERE name = 'widgets_code'") == [("pending",)]


def downgraded(db):
    assert rows(db, "SELECT count(*) FROM background_migrations "
                    "WHERE name = 'widgets_code'") == [(0,)]
    assert rows(db, "SELECT count(*) FROM widgets WHERE id BETWEEN 990100 AND 990199") == [(3,)]
'''
_CONTRACT_DATA = '''"""require widget code (post-deploy): the backfill done first, then NOT NULL."""

from tests.migrations.data import rejects, rows


def upgraded(db):
    assert rows(db, "SELECT count(*) FROM widgets WHERE id BETWEEN 990100 AND 990199 "
                    "AND code = 'W-' || id") == [(3,)]
    assert rows(db, "SELECT state FROM background_migrations "
                    "WHERE name = 'widgets_code'") == [("done",)]
    rejects(db, "INSERT INTO widgets (name, code) VALUES ('no code', NULL)")


def downgraded(db):
    assert rows(db, "SELECT is_nullable FROM information_schema.columns "
                    "WHERE table_name = 'widgets' AND column_name = 'code'") == [("YES",)]
'''


def add_post_deploy_branch(repo: Path, parent: str = FIXTURE_REVISIONS[-1],
                           next_release: bool = False) -> None:
    """Give a fixture project (``testkit.support.fixture_project``) release N+1's two phases:
    ``widgets.code`` added nullable on the main line, its rows registered for a background
    backfill (:data:`POST_EXPAND`), and a post-deploy contract that finishes that backfill
    and sets NOT NULL (:data:`POST_CONTRACT`, the root of the ``post`` branch, depending on
    the expand). ``next_release`` adds release N+2 on top: ``widgets.note`` on the main line
    (:data:`NEXT_EXPAND`) and an index on ``code`` after the first contract
    (:data:`NEXT_CONTRACT`, depending on N+2's expand), so that a walk meets a pre-deploy
    revision after a post-deploy one. The model follows the revisions as the contracts
    leave it; a project with ``tests/migrations/data`` gets the data files of N+1."""
    write_revision(repo, POST_EXPAND, parent, "add widget code",
                   upgrade="op.add_column('widgets', sa.Column('code', sa.String(40)))\n"
                           f'register_backfill("{POST_BACKFILL}", "widgets", '
                           f'"{_BACKFILL_STATEMENT}")',
                   downgrade=f'unregister_backfill("{POST_BACKFILL}")\n'
                             "op.drop_column('widgets', 'code')",
                   imports=_BACKGROUND_IMPORTS, stamp="20261210_1000")
    write_revision(repo, POST_CONTRACT, None, "require widget code",
                   upgrade=f'finish_backfill("{POST_BACKFILL}")\n'
                           "op.alter_column('widgets', 'code', nullable=False)",
                   downgrade="op.alter_column('widgets', 'code', nullable=True)",
                   imports=_BACKGROUND_IMPORTS, stamp="20261210_1001", branch_labels=(POST,),
                   depends_on=POST_EXPAND)
    # New rows get their code from the application, as the release that writes it would.
    _change_model(repo, _MODEL_ANCHOR, _MODEL_ANCHOR + _CODE_COLUMN)
    if next_release:
        add_next_release(repo)
    data = repo / "tests/migrations/data"
    if data.is_dir():
        (data / f"{POST_EXPAND}.py").write_text(_EXPAND_DATA)
        (data / f"{POST_CONTRACT}.py").write_text(_CONTRACT_DATA)


_CODE_COLUMN = "    code: Mapped[str] = mapped_column(sa.String(40), default='W-new')\n"


def add_next_release(repo: Path) -> None:
    """Release N+2 on top of :func:`add_post_deploy_branch`'s N+1: ``widgets.note`` on the
    main line (:data:`NEXT_EXPAND`) and an index on ``code`` after the first contract
    (:data:`NEXT_CONTRACT`, depending on N+2's expand): a pre-deploy revision after a
    post-deploy one."""
    write_revision(repo, NEXT_EXPAND, POST_EXPAND, "add widget note",
                   upgrade="op.add_column('widgets', sa.Column('note', sa.Text()))",
                   downgrade="op.drop_column('widgets', 'note')", stamp="20261211_1000")
    write_revision(repo, NEXT_CONTRACT, POST_CONTRACT, "index widget code",
                   upgrade="op.create_index('ix_widgets_code', 'widgets', ['code'])",
                   downgrade="op.drop_index('ix_widgets_code', table_name='widgets')",
                   stamp="20261211_1001", depends_on=NEXT_EXPAND)
    _change_model(repo, _CODE_COLUMN, _CODE_COLUMN.replace("default='W-new')",
                                                         "default='W-new', index=True)")
                  + "    note: Mapped[str | None] = mapped_column(sa.Text)\n")


def _change_model(repo: Path, anchor: str, replacement: str) -> None:
    model = repo / "backend/models/__init__.py"
    text = model.read_text()
    if anchor not in text:
        raise AssertionError("the fixture's Widget model changed: update the anchor here")
    model.write_text(text.replace(anchor, replacement))


def phases(repo: Path):
    """The phases of a project copy's history (backend.migrate.phases.Phases)."""
    from alembic.script import ScriptDirectory

    from backend.migrate.phases import read_phases

    return read_phases(ScriptDirectory(str(repo / "migrations")))
