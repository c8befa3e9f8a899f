"""The checkout's history, whatever application it holds: every revision goes up, down and up
again by its own name, the downgrades leave nothing behind at base, the models match the
schema with both phases applied, and each phase has one head.

A history may carry a post-deploy branch beside the main line (backend/migrate/phases.py):
then it has two heads, one per phase, and that is no conflict. The walk goes through both
phases in the deploy's order (a post-deploy revision after the main-line revisions it
completes, and after the background migrations registered before it have run: see
tests/migrations/conftest.py's ``Migrator``).

These name no table and no revision: what a particular revision must do to its rows is its
data file's to say (``tests/migrations/data/<revision>.py``, run by test_pytest_alembic.py's
``test_revision_keeps_its_data``), so it goes when its application goes.
"""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from backend.migrate.bookkeeping import TABLES as BOOKKEEPING
from backend.migrate.checksums import applied_chain
from backend.migrate.phases import read_phases
from migration_tools.rehearse.runner import downgrade_target
from testkit.support import ROOT, execute_sql


def versions(url: URL) -> set[str]:
    return {v for (v,) in execute_sql(url, "SELECT version_num FROM alembic_version")}


def applied(migrator, url: URL) -> set[str]:
    """Every revision applied: ``alembic_version`` keeps only the heads of what is applied
    (a post-deploy revision that depends on the main line's head stands for both)."""
    return set(applied_chain(migrator.scripts(), sorted(versions(url))))


def test_every_revision_upgrades_downgrades_and_upgrades_again(migrator, empty_db) -> None:
    # Each step names its target, never "+1"/"-1": after a merge of two heads, or beside a
    # post-deploy branch, a relative step is ambiguous, and the history must still walk.
    scripts = migrator.scripts()
    revisions = migrator.revisions()
    assert revisions, "migrations/versions holds no revision"

    for revision in revisions:
        migrator.upgrade(revision)
        assert revision in applied(migrator, empty_db)
        migrator.downgrade(downgrade_target(scripts.get_revision(revision)))
        assert revision not in applied(migrator, empty_db)
        migrator.upgrade(revision)
        assert revision in applied(migrator, empty_db)

    assert applied(migrator, empty_db) == set(revisions)
    migrator.downgrade("base")
    tables = [name for (name,) in execute_sql(
        empty_db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    # What a database holds at base once the lifecycle has run on it: its own bookkeeping
    # (alembic_version, migration_checksums, background_migrations when a revision
    # registered a backfill), each empty.
    assert {"alembic_version", "migration_checksums"} <= set(tables) <= set(BOOKKEEPING), tables
    for table in tables:
        assert execute_sql(empty_db, f"SELECT count(*) FROM {table}") == [(0,)], table


def test_models_match_the_schema_at_the_heads(migrator) -> None:
    migrator.upgrade("heads")  # both phases: the models describe the schema after the contract

    migrator.check()  # raises when autogenerate would write a new revision


def test_one_head_per_phase() -> None:
    """One head on the main line, and at most one on the post-deploy branch: the normal two
    heads of a history with a post-deploy branch are no conflict; several heads within a
    phase are, and every command refuses them (the entrypoint, ``flask migrations
    post-deploy``, ``/readyz``), with this message."""
    phases = read_phases(ScriptDirectory(str(ROOT / "migrations")))

    assert phases.pre_heads, "migrations/versions holds no pre-deploy revision"
    assert phases.problem() is None, phases.problem()
