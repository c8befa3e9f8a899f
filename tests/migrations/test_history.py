"""The checkout's history, whatever application it holds: every revision goes up, down and up
again by its own name, the downgrades leave nothing behind at base, the models match the
schema at head, and there is one head.

These name no table and no revision: what a particular revision must do to its rows is its
data file's to say (``tests/migrations/data/<revision>.py``, run by test_pytest_alembic.py's
``test_revision_keeps_its_data``), so it goes when its application goes.
"""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from migration_tools.rehearse.runner import downgrade_target
from testkit.support import ROOT, execute_sql

# What a database holds at base once the lifecycle has run on it: its own bookkeeping, empty.
BOOKKEEPING_AT_BASE = [("alembic_version",), ("migration_checksums",)]


def versions(url: URL) -> set[str]:
    return {v for (v,) in execute_sql(url, "SELECT version_num FROM alembic_version")}


def test_every_revision_upgrades_downgrades_and_upgrades_again(migrator, empty_db) -> None:
    # Each step names its target, never "+1"/"-1": after a merge of two heads a relative
    # step from the branch point is ambiguous, and the history must still walk.
    scripts = migrator.scripts()
    revisions = migrator.revisions()
    assert revisions, "migrations/versions holds no revision"

    for revision in revisions:
        migrator.upgrade(revision)
        assert revision in versions(empty_db)
        migrator.downgrade(downgrade_target(scripts.get_revision(revision)))
        assert revision not in versions(empty_db)
        migrator.upgrade(revision)
        assert revision in versions(empty_db)

    migrator.downgrade("base")
    tables = execute_sql(empty_db, "SELECT tablename FROM pg_tables "
                                   "WHERE schemaname = 'public' ORDER BY 1")
    assert tables == BOOKKEEPING_AT_BASE
    assert execute_sql(empty_db, "SELECT count(*) FROM alembic_version") == [(0,)]
    assert execute_sql(empty_db, "SELECT count(*) FROM migration_checksums") == [(0,)]


def test_models_match_the_schema_at_head(migrator) -> None:
    migrator.upgrade("head")

    migrator.check()  # raises when autogenerate would write a new revision


def test_the_history_has_a_single_head() -> None:
    heads = ScriptDirectory(str(ROOT / "migrations")).get_heads()

    assert len(heads) == 1, f"several heads {heads}: merge them (scripts/resolve_conflict.sh)"
