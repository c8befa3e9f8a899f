"""The shipped history: every revision goes up and down, and data survives the trip."""

from __future__ import annotations

import psycopg2
import pytest

from migration_tools.rehearse.runner import downgrade_target
from tests.conftest import execute_sql

SLUG_BEFORE = "c47d0e5a9f26"     # index tasks by due date
SLUG_ADDED = "5e81b3c92d47"      # add project slug
SLUG_BACKFILLED = "6c2d9e4f8a17"  # backfill project slugs from names
STATUS_CHECKED = "a9c36f7b0e18"  # check task status values (NOT VALID)
STATUS_VALIDATED = "b1d4e7a2c905"  # validate task status check
SLUG_CHECKED = "e2f5a8d4c713"    # check project slug is set (fills NULLs, NOT VALID)
SLUG_REQUIRED = "f7a2c1e9b384"   # require project slug


def columns(url, table: str) -> list[str]:
    rows = execute_sql(url, "SELECT column_name FROM information_schema.columns "
                            "WHERE table_name = %s ORDER BY ordinal_position", (table,))
    return [name for (name,) in rows]


def version(url) -> str:
    return execute_sql(url, "SELECT version_num FROM alembic_version")[0][0]


def versions(url) -> set[str]:
    return {v for (v,) in execute_sql(url, "SELECT version_num FROM alembic_version")}


def test_every_revision_upgrades_downgrades_and_upgrades_again(migrator, empty_db):
    # Each step names its target, never "+1"/"-1": after a merge of two heads a relative
    # step from the branch point is ambiguous, and the history must still walk.
    scripts = migrator.scripts()
    revisions = migrator.revisions()
    assert len(revisions) >= 8

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
    assert tables == [("alembic_version",), ("migration_checksums",)]
    assert execute_sql(empty_db, "SELECT count(*) FROM alembic_version") == [(0,)]
    assert execute_sql(empty_db, "SELECT count(*) FROM migration_checksums") == [(0,)]


def test_models_match_the_schema_at_head(migrator):
    migrator.upgrade("head")

    migrator.check()  # raises when autogenerate would write a new revision


def seed_projects(url, names: list[str]) -> None:
    (user_id,), = execute_sql(url, "INSERT INTO users (email, name) VALUES "
                                   "('ada@example.com', 'Ada') RETURNING id")
    for name in names:
        execute_sql(url, "INSERT INTO projects (owner_id, name) VALUES (%s, %s)", (user_id, name))


def test_slug_backfill_transforms_existing_rows_and_rolls_back(migrator, empty_db):
    # Arrange: projects written before the slug column existed.
    migrator.upgrade(SLUG_BEFORE)
    seed_projects(empty_db, ["My First Project!", "  Hello   World  ", "???"])

    # Act
    migrator.upgrade(SLUG_BACKFILLED)

    # Assert
    rows = execute_sql(empty_db, "SELECT name, slug FROM projects ORDER BY id")
    assert rows == [("My First Project!", "my-first-project"),
                    ("  Hello   World  ", "hello-world"), ("???", "project")]

    migrator.downgrade(SLUG_BEFORE)
    assert "slug" not in columns(empty_db, "projects")
    names = execute_sql(empty_db, "SELECT name FROM projects ORDER BY id")
    assert names == [("My First Project!",), ("  Hello   World  ",), ("???",)]


def test_backfill_agrees_with_the_model_slugify(migrator, empty_db):
    from backend.models.project import slugify

    names = ["Ünïcode Näme", "a--b__c", "  trailing-  ", "CamelCase2026", "!!!"]
    migrator.upgrade(SLUG_BEFORE)
    seed_projects(empty_db, names)

    migrator.upgrade(SLUG_BACKFILLED)

    slugs = [slug for (slug,) in execute_sql(empty_db, "SELECT slug FROM projects ORDER BY id")]
    assert slugs == [slugify(name) for name in names]


def test_require_slug_fills_rows_written_by_old_code(migrator, empty_db):
    migrator.upgrade(SLUG_BACKFILLED)
    seed_projects(empty_db, ["Written Before Deploy"])  # old code: slug left NULL
    assert execute_sql(empty_db, "SELECT slug FROM projects") == [(None,)]

    migrator.upgrade(SLUG_CHECKED)
    assert execute_sql(empty_db, "SELECT slug FROM projects") == [("written-before-deploy",)]
    migrator.upgrade(SLUG_REQUIRED)

    nullable = execute_sql(empty_db, "SELECT is_nullable FROM information_schema.columns "
                                     "WHERE table_name = 'projects' AND column_name = 'slug'")
    assert nullable == [("NO",)]
    leftover = execute_sql(empty_db, "SELECT conname FROM pg_constraint "
                                     "WHERE conname = 'ck_projects_slug_not_null'")
    assert leftover == []

    migrator.downgrade(SLUG_BACKFILLED)
    assert execute_sql(empty_db, "SELECT name, slug FROM projects") == [
        ("Written Before Deploy", "written-before-deploy")]


def test_status_constraint_is_validated_and_enforced(migrator, empty_db):
    migrator.upgrade(SLUG_ADDED)
    seed_projects(empty_db, ["P"])
    execute_sql(empty_db, "INSERT INTO tasks (project_id, title, status) "
                          "SELECT id, 'ok', 'doing' FROM projects")

    validated = ("SELECT convalidated FROM pg_constraint WHERE conname = 'ck_tasks_status'")

    migrator.upgrade(STATUS_CHECKED)
    assert execute_sql(empty_db, validated) == [(False,)]
    migrator.upgrade(STATUS_VALIDATED)
    assert execute_sql(empty_db, validated) == [(True,)]
    with pytest.raises(psycopg2.errors.CheckViolation):
        execute_sql(empty_db, "INSERT INTO tasks (project_id, title, status) "
                              "SELECT id, 'bad', 'lost' FROM projects")

    migrator.downgrade(SLUG_ADDED)
    execute_sql(empty_db, "INSERT INTO tasks (project_id, title, status) "
                          "SELECT id, 'free again', 'lost' FROM projects")
    assert execute_sql(empty_db, "SELECT count(*) FROM tasks") == [(2,)]


def test_due_date_index_is_built_concurrently_and_dropped(migrator, empty_db):
    migrator.upgrade(SLUG_BEFORE)
    index = "SELECT indexname FROM pg_indexes WHERE indexname = 'ix_tasks_due_date'"
    assert execute_sql(empty_db, index) == [("ix_tasks_due_date",)]

    migrator.downgrade("-1")

    assert execute_sql(empty_db, index) == []
    assert "due_date" in columns(empty_db, "tasks")


def test_the_shipped_history_has_a_single_head():
    from alembic.script import ScriptDirectory

    from testkit.support import ROOT

    heads = ScriptDirectory(str(ROOT / "migrations")).get_heads()

    assert len(heads) == 1, f"several heads {heads}: merge them (scripts/resolve_conflict.sh)"
