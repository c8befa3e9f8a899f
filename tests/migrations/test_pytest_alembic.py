"""Every revision proved before it ships: pytest-alembic's checks, and its data, per revision.

pytest-alembic's built-in tests are bound by importing them here (its supported way besides
the ``--test-alembic`` flag, which would put them under ``tests/conftest.py``): they run with
every ``pytest`` run, on a fresh database, through ``migrations/env.py``. They walk the
history as it is on disk, both phases (the main line and the post-deploy branch, to
``heads``), so a new revision is covered the moment its file exists:

- ``test_upgrade``: base to the heads, one revision at a time;
- ``test_model_definitions_match_ddl``: at the heads, autogenerate finds nothing to write (a
  model changed without a migration fails here); the lifecycle's own tables are left out by
  env.py's ``include_name``, as in ``flask db migrate``;
- ``test_up_down_consistency``: up to the heads, down to base, up again;
- ``test_downgrade_leaves_no_trace`` (experimental): each revision's downgrade undoes exactly
  what its upgrade did (a forgotten ``drop_column`` fails here);
- ``test_all_models_register_on_metadata`` (experimental): the app's import of
  ``backend.models`` registers every model module below it.

pytest-alembic's ``test_single_head_revision`` is not among them: a history with a
post-deploy branch has two heads by design, one per phase. test_history.py's
``test_one_head_per_phase`` takes its place, with the refusal the deploy itself gives.

The walks follow the deploy's order between the phases (tests/migrations/conftest.py): before
a post-deploy revision the background migrations registered so far run to their end with the
real runner, so a contract meets the data it expects, and the data files check it.

The data files (``tests/migrations/data/``, convention in its ``__init__``) add rows before
their revisions in every walk, and ``test_revision_keeps_its_data[<revision>]`` proves each
revision keeps, transforms and restores them. What the checks rely on in env.py (it migrates
on the connection it is handed) has a test of its own.

These are tests of the checkout's own history, whatever application it holds: they name no
table and no revision, and read the revisions at collection (``pytest_generate_tests``), not
at import. That they catch what they should is proved on a fixture project, by
test_harness_catches.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import pytest_alembic
from alembic.script import ScriptDirectory
from pytest_alembic.runner import MigrationContext
from pytest_alembic.tests import (  # noqa: F401  (collected from here)
    experimental,
    test_model_definitions_match_ddl,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Connection, Engine, create_engine

from backend import MIGRATIONS_DIR
from migration_tools import row_loss
from testkit import harness
from tests.migrations import data

# SQLAlchemy 2.1 warns when pytest-alembic reflects a NOT VALID check constraint (the reflected
# dialect options go back into the constructor under a name it does not know); harmless here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Can't validate argument 'dialect_options':sqlalchemy.exc.SAWarning")


def history() -> list[str]:
    """The checkout's revisions, both phases, oldest first."""
    return harness.walk_order(ScriptDirectory(str(MIGRATIONS_DIR)))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One ``test_revision_keeps_its_data`` per revision on disk, read at collection, so a
    history of any application (or a revision added a moment ago) is covered."""
    if "revision" in metafunc.fixturenames:
        metafunc.parametrize("revision", history())


def label(scripts: ScriptDirectory, revision: str) -> str:
    """``<id> (<message>)``, how a failure names a revision."""
    return f"{revision} ({scripts.get_revision(revision).doc})"


class ConnectSpy:
    """An engine stand-in that counts the connections env.py takes from it."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.connections = engine, 0

    def connect(self) -> Connection:
        self.connections += 1
        return self.engine.connect()


def test_env_migrates_on_the_connection_it_is_given(alembic_config,
                                                     alembic_engine: Engine) -> None:
    """pytest-alembic hands env.py its engine, or for a check that rolls back, its open
    connection, in ``config.attributes["connection"]``. An env.py that opened its own would
    migrate outside that transaction: the check would wait on its own locks, or prove
    nothing."""
    spy = ConnectSpy(alembic_engine)
    with pytest_alembic.runner(config=alembic_config, engine=spy) as runner:
        assert runner.current == "base"
    assert spy.connections == 1, (
        "migrations/env.py did not migrate on config.attributes['connection']")


def test_downgrade_leaves_no_trace(alembic_config, alembic_engine: Engine,
                                   scripts: ScriptDirectory) -> None:
    """pytest-alembic's check runs every step inside one transaction and rolls it back; a
    revision that leaves its transaction (``autocommit_block``, for ``CREATE INDEX
    CONCURRENTLY``, or a large-table helper) cannot run there, so it is stamped over in this
    check only. Its own downgrade is still proved by ``test_up_down_consistency`` and
    test_history's round trip. The lifecycle's bookkeeping table exists before the walk
    (``harness.create_bookkeeping``): a revision registering a backfill creates it, and it is
    no revision's schema to undo.
    """
    config = dataclasses.replace(
        alembic_config, skip_revisions=harness.transaction_leaving_revisions(scripts),
        minimum_downgrade_revision=harness.newest_merge(scripts))
    with alembic_engine.connect() as connection:
        harness.create_bookkeeping(connection)
    # The check walks inside one transaction: env.py skips its refusals there, and a
    # post-deploy revision's finish_backfill completes its backfill inline.
    with harness.runner(config, alembic_engine) as runner:
        experimental.test_downgrade_leaves_no_trace(runner)


def test_all_models_register_on_metadata(alembic_config, alembic_engine: Engine, tmp_path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The check loads env.py in a fresh interpreter, from an ``alembic.ini`` in the working
    directory and a URL written into it: it gets an ``alembic.ini`` naming our migrations
    directory, and a URL without ``%`` escapes (ConfigParser would read them as
    interpolation), the rest going through libpq's variables. env.py builds the app there."""
    (tmp_path / "alembic.ini").write_text(f"[alembic]\nscript_location = {MIGRATIONS_DIR}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(MIGRATIONS_DIR.parent))
    url, variables = harness.url_for_config_file(alembic_engine.url)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    engine = create_engine(url)
    try:
        with pytest_alembic.runner(config=alembic_config, engine=engine) as runner:
            experimental.test_all_models_register_on_metadata(runner, "backend.models")
    finally:
        engine.dispose()


def check(fixture_check: data.Check | None, engine: Engine, name: str, when: str) -> None:
    """Run a data file's check in a transaction that is rolled back, naming the revision."""
    if fixture_check is None:
        return
    with engine.connect() as connection:
        try:
            fixture_check(connection)
        except AssertionError as exc:
            exc.add_note(f"data check of {name} failed {when}")
            raise
        finally:
            connection.rollback()


def counts(engine: Engine) -> dict[str, int]:
    """Rows per table, for the data tests' no-row-lost rule."""
    with engine.connect() as connection:
        return harness.row_counts(connection)


def undeclared_loss(before: dict[str, int], after: dict[str, int], declared: dict[str, str],
                    reference: dict[str, int] | None = None) -> dict[str, tuple[int, int]]:
    """The rehearsal's row-loss rule on the test data, but for the tables the revision
    declares it empties on purpose."""
    return {table: counts for table, counts in row_loss.lost_rows(before, after, reference).items()
            if table not in declared}


def test_revision_keeps_its_data(revision: str, runner_at_parent: MigrationContext,
                                 history_templates, data_fixtures: dict[str, data.DataFixture],
                                 scripts: ScriptDirectory) -> None:
    """At the parent, with every earlier data file's rows and this revision's: upgrade,
    downgrade and upgrade again; the data file's checks after each, and no row lost on the
    way but where the revision declares it (``# rehearse: expect-row-loss <table> <reason>``).
    The parent is the revision before it in the walk (with both phases applied, the database
    has two current revisions, of which the runner names one). Before a post-deploy
    revision's upgrade, the background migrations registered so far run to their end, as
    deployed (``harness.runner``).
    """
    runner = runner_at_parent
    engine = runner.connection_executor.connection  # the engine the runner was built on
    fixture = data_fixtures.get(revision) or data.DataFixture(revision=revision)
    declared = harness.declared_row_loss(scripts.get_revision(revision))
    name = label(scripts, revision)
    parent = history_templates.parent(revision)
    if fixture.rows:
        runner.insert_into(None, fixture.rows)
    at_parent = counts(engine)

    runner.raw_command("upgrade", revision)
    check(fixture.upgraded, engine, name, "after upgrade")  # the specific checks first
    upgraded = counts(engine)
    lost = undeclared_loss(at_parent, upgraded, declared)
    assert not lost, f"upgrade to {name} lost rows (table: before, after): {lost}"

    runner.raw_command("downgrade", parent)
    check(fixture.downgraded, engine, name, "after downgrade")
    lost = undeclared_loss(upgraded, counts(engine), declared, reference=at_parent)
    assert not lost, f"downgrade of {name} lost rows (table: before, after): {lost}"

    runner.raw_command("upgrade", revision)
    check(fixture.upgraded, engine, name, "after upgrade, downgrade, upgrade")


def test_every_data_file_names_a_revision(data_fixtures: dict[str, data.DataFixture]) -> None:
    """A data file for a revision that does not exist (a typo, a rebased id) checks nothing.
    An application without data files passes: they are needed only where rows are written."""
    unknown = sorted(set(data_fixtures) - set(history()))
    assert not unknown, f"data files for unknown revisions: {unknown}"


def test_revisions_that_write_rows_have_data_checks(
        data_fixtures: dict[str, data.DataFixture], scripts: ScriptDirectory) -> None:
    """A revision that updates, deletes or inserts rows itself is a data migration: it ships
    with rows to run over and a check of what it made of them."""
    def checked(fixture: data.DataFixture | None) -> bool:
        return fixture is not None and (bool(fixture.rows and fixture.has_checks)
                                        or bool(fixture.unchecked))

    missing = [label(scripts, script.revision) for script in scripts.walk_revisions()
               if data.writes_rows(harness.script_source(script))
               and not checked(data_fixtures.get(script.revision))]
    assert not missing, ("revisions that write rows need a data file with ROWS and a check "
                         "(tests/migrations/data/<revision>.py), or UNCHECKED = 'reason' there "
                         f"for one shipped before checks were written: {missing}")
