"""Drive Alembic against a test database, through our env.py: by hand, or with pytest-alembic.

Everything here works on the checkout's own history (``migrations/versions``, whatever
application it holds, one revision or hundreds, with data files or none): nothing names a
table or a revision of the example, and revision ids are read when a test asks, never at
import.

pytest-alembic's ``alembic_runner`` fixture is built from the two fixtures below:
``alembic_engine`` (an engine on a fresh database, dropped after the test) and
``alembic_config`` (Flask-Migrate's Alembic config for an app built on that database, with
that app's context pushed for the whole test, because env.py reads ``current_app``). The
rows of the data files in ``tests/migrations/data/`` go in as ``before_revision_data``.
``runner_at_parent`` gives the per-revision data tests a database at a revision's parent,
cloned from a checkpoint of the history rather than replayed from base.

A history may have two phases, the main line and a post-deploy branch (one head each, see
backend/migrate/phases.py). Every walk here goes through both, to ``heads``, in the deploy's
order: pytest-alembic's runner is ``testkit.harness.runner``, whose steps run the registered
background migrations to their end before a post-deploy revision, as ``flask migrations
backfill run`` does before ``flask migrations post-deploy``; ``Migrator`` does the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

# Before the first import of the data files: their checks are plain asserts, and should show
# the values that differed when they fail, as a test's would.
pytest.register_assert_rewrite("tests.migrations.data")

import pytest_alembic  # noqa: E402
import pytest_alembic.config  # noqa: E402
from alembic import command  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from pytest_alembic.history import AlembicHistory  # noqa: E402
from pytest_alembic.runner import MigrationContext  # noqa: E402
from sqlalchemy import Engine  # noqa: E402
from sqlalchemy.engine import URL  # noqa: E402

from backend import MIGRATIONS_DIR, create_app  # noqa: E402
from backend.config import Config  # noqa: E402
from backend.migrate.phases import POST, read_phases  # noqa: E402
from testkit import harness  # noqa: E402
from tests.migrations import data  # noqa: E402


class Migrator:
    """Alembic's commands through Flask-Migrate's config, as ``flask db`` runs them, on one
    database, for tests that step through the history by hand."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.app = create_app(Config(database_url=url))

    def _run(self, fn, *args) -> None:
        with self.app.app_context():
            fn(self.app.extensions["migrate"].migrate.get_config(), *args)

    def upgrade(self, revision: str = "heads") -> None:
        """Upgrade to ``revision``; ``heads`` (the default) is both phases. Before a
        post-deploy revision, the background migrations registered so far run to their end,
        as the deploy runs them before ``flask migrations post-deploy``. (``head`` would be
        the pre-deploy head only: env.py retargets it, as for ``flask db upgrade``.)"""
        if revision in read_phases(self.scripts()).post or revision in ("heads", f"{POST}@head"):
            harness.finish_background_migrations(self.url)
        self._run(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        self._run(command.downgrade, revision)

    def check(self) -> None:
        self._run(command.check)

    def scripts(self) -> ScriptDirectory:
        return ScriptDirectory(self.app.extensions["migrate"].directory)

    def revisions(self) -> list[str]:
        """Every revision of both phases, oldest first (parents and ``depends_on`` targets
        before the revisions that need them)."""
        return harness.walk_order(self.scripts())

    def close(self) -> None:
        from backend.extensions import db

        with self.app.app_context():
            db.engine.dispose()


@pytest.fixture(scope="session")
def scripts() -> ScriptDirectory:
    """The checkout's history, read when first asked for (never at import)."""
    return ScriptDirectory(str(MIGRATIONS_DIR))


@pytest.fixture
def migrator(empty_db) -> Iterator[Migrator]:
    m = Migrator(empty_db)
    yield m
    m.close()


@pytest.fixture(scope="session")
def data_fixtures() -> dict[str, data.DataFixture]:
    """The data files, loaded once per session."""
    return data.load()


@pytest.fixture
def migration_session(empty_db) -> Iterator[harness.MigrationSession]:
    """The app for a fresh database, its context pushed for the whole test."""
    with harness.migration_session(empty_db) as session:
        yield session


@pytest.fixture
def alembic_engine(migration_session: harness.MigrationSession) -> Engine:
    """pytest-alembic's handle on the database; env.py migrates through it too."""
    return migration_session.engine


@pytest.fixture
def alembic_runner(alembic_config: pytest_alembic.config.Config,
                   alembic_engine: Engine) -> Iterator[MigrationContext]:
    """pytest-alembic's runner for its built-in tests, with the deploy's order between the
    phases (``testkit.harness.runner``)."""
    with harness.runner(alembic_config, alembic_engine) as runner:
        yield runner


@pytest.fixture
def alembic_config(migration_session: harness.MigrationSession,
                   data_fixtures: dict[str, data.DataFixture]) -> pytest_alembic.config.Config:
    """Our migrations directory and env.py, with the data files' rows before each revision."""
    return migration_session.alembic_config(
        before_revision_data=data.before_revision_data(data_fixtures))


class HistoryTemplates:
    """Checkpoints of the history holding the data files' rows: a database every
    ``EVERY`` revisions, built once per session and cloned by the data tests.

    A data test of revision N needs the database at N-1 with every earlier data file's rows.
    Replaying from base costs N steps per test, N squared in all; from the nearest checkpoint
    it costs fewer than ``EVERY``, and the suite grows linearly with the history. Each
    checkpoint is the previous one plus pytest-alembic's own walk (each revision's ``ROWS``,
    then its upgrade), so it holds what any walk would hold there.
    """

    EVERY = 10

    def __init__(self, pg_server, rows: dict) -> None:
        self.pg_server = pg_server
        self.rows = rows
        scripts = ScriptDirectory(str(MIGRATIONS_DIR))
        # base, then every revision in pytest-alembic's order ("heads" is no point of its own)
        self.order = AlembicHistory.parse(scripts.revision_map).revisions[:-1]
        self.templates: dict[str, str | None] = {"base": None}

    def parent(self, revision: str) -> str:
        """The revision before ``revision`` in the walk."""
        return self.order[self.order.index(revision) - 1]

    def checkpoint(self, revision: str) -> str | None:
        """The template database to start from for a database at ``revision`` (``None``:
        an empty one); the test walks from there to ``revision``."""
        index = self.order.index(revision)
        for start in range(0, index - index % self.EVERY + 1, self.EVERY):
            point = self.order[start]
            if point in self.templates:
                continue
            previous = self.templates[self.order[start - self.EVERY]]
            url = self.pg_server.create_database(template=previous)
            self.templates[point] = url.database  # dropped at the end, even if this fails
            with self.runner(url) as runner:
                runner.migrate_up_to(point)
        return self.templates[self.order[index - index % self.EVERY]]

    @contextlib.contextmanager
    def runner(self, url: URL) -> Iterator[MigrationContext]:
        """pytest-alembic's runner on ``url``, with the data files' rows."""
        with harness.migration_session(url) as session, harness.runner(
                session.alembic_config(before_revision_data=self.rows),
                session.engine) as runner:
            yield runner

    def drop(self) -> None:
        for name in self.templates.values():
            if name is not None:
                self.pg_server.drop_database(name)


@pytest.fixture(scope="session")
def history_templates(pg_server, data_fixtures) -> Iterator[HistoryTemplates]:
    """The checkpoints, built as the data tests first need them, dropped after the session."""
    templates = HistoryTemplates(pg_server, data.before_revision_data(data_fixtures))
    yield templates
    templates.drop()


@pytest.fixture
def runner_at_parent(revision: str, pg_server,
                     history_templates: HistoryTemplates) -> Iterator[MigrationContext]:
    """For a test parametrized by ``revision``: pytest-alembic's runner on a fresh database at
    that revision's parent, holding the rows of every data file up to there."""
    parent = history_templates.parent(revision)
    url = pg_server.create_database(template=history_templates.checkpoint(parent))
    try:
        with history_templates.runner(url) as runner:
            runner.migrate_up_to(parent)
            yield runner
    finally:
        pg_server.drop_database(url.database)
