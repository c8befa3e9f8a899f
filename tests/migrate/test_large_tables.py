"""backend/migrate/large_tables.py: each helper, in a revision applied by ``flask db upgrade``
on a real database, leaves the schema it promises, and a retry after a failure succeeds."""

from __future__ import annotations

import psycopg2
import pytest

from testkit.support import FIXTURE_REVISIONS, execute_sql, fixture_project, write_revision
from tests.conftest import run_flask

IMPORTS = ("from backend.migrate.large_tables import (add_enum_value, add_foreign_key, "
           "create_index_concurrently, set_not_null)\n")


@pytest.fixture
def repo(tmp_path):
    return fixture_project(tmp_path / "repo")


def add_revision(repo, rev: str, upgrade: str, downgrade: str = "pass",
                 parent: str = FIXTURE_REVISIONS[-1]) -> str:
    write_revision(repo, rev, parent, f"large table op {rev}", upgrade=upgrade,
                   downgrade=downgrade, imports=IMPORTS)
    return rev


def upgrade(repo, url):
    return run_flask(["db", "upgrade"], url, cwd=repo, check=False)


def current(url) -> str:
    return execute_sql(url, "SELECT version_num FROM alembic_version")[0][0]


def test_an_invalid_index_left_by_a_failed_build_is_rebuilt(repo, fixture_db):
    # Arrange: a concurrent unique build that failed on duplicates left an INVALID index.
    execute_sql(fixture_db, "INSERT INTO widgets (name) VALUES ('a'), ('a'), ('b')")
    with pytest.raises(psycopg2.errors.UniqueViolation):
        execute_sql(fixture_db, "CREATE UNIQUE INDEX CONCURRENTLY ix_widgets_name "
                                "ON widgets (name)")
    execute_sql(fixture_db, "DELETE FROM widgets WHERE id = (SELECT max(id) FROM widgets "
                            "WHERE name = 'a')")
    add_revision(repo, "la0000000001", 'create_index_concurrently("ix_widgets_name", '
                                       '"widgets", ["name"], unique=True)')

    # Act
    proc = upgrade(repo, fixture_db)

    # Assert: one index of that name, valid and unique, and the revision recorded.
    assert proc.returncode == 0, proc.stderr
    assert execute_sql(fixture_db, "SELECT i.indisvalid, i.indisunique FROM pg_index i "
                                   "JOIN pg_class c ON c.oid = i.indexrelid "
                                   "WHERE c.relname = 'ix_widgets_name'") == [(True, True)]
    assert current(fixture_db) == "la0000000001"


def test_set_not_null_refuses_a_null_then_succeeds_on_retry(repo, fixture_db):
    # Arrange: one widget still without a size.
    execute_sql(fixture_db, "INSERT INTO widgets (name, size) VALUES ('a', 1), ('b', NULL)")
    add_revision(repo, "la0000000002", 'set_not_null("widgets", "size")',
                 downgrade='op.alter_column("widgets", "size", nullable=True)')

    # Act 1
    refused = upgrade(repo, fixture_db)

    # Assert 1: the check names the column's constraint; the column is still nullable.
    assert refused.returncode != 0
    assert "ck_widgets_size_not_null" in refused.stdout + refused.stderr
    assert nullable(fixture_db, "size") == "YES"
    assert current(fixture_db) == FIXTURE_REVISIONS[-1]

    # Act 2: the data fixed, the same revision again.
    execute_sql(fixture_db, "UPDATE widgets SET size = 0 WHERE size IS NULL")
    retried = upgrade(repo, fixture_db)

    # Assert 2: NOT NULL, and no helper constraint left behind.
    assert retried.returncode == 0, retried.stderr
    assert nullable(fixture_db, "size") == "NO"
    assert constraints(fixture_db, "widgets", "c") == []
    assert current(fixture_db) == "la0000000002"


def test_a_foreign_key_is_validated_after_it_is_added_not_valid(repo, fixture_db):
    # Arrange: a table whose rows point at widgets, one of them at nothing.
    execute_sql(fixture_db, "CREATE TABLE parts (id bigint PRIMARY KEY, widget_id bigint)")
    execute_sql(fixture_db, "INSERT INTO widgets (id, name) OVERRIDING SYSTEM VALUE "
                            "VALUES (1, 'a')")
    execute_sql(fixture_db, "INSERT INTO parts VALUES (1, 1), (2, 99)")
    add_revision(repo, "la0000000003",
                 'add_foreign_key("fk_parts_widget_id_widgets", "parts", "widgets", '
                 '["widget_id"], ["id"], ondelete="CASCADE")')

    # Act 1
    refused = upgrade(repo, fixture_db)

    # Assert 1: the orphan fails the validation; the key stays, not valid.
    assert refused.returncode != 0
    assert constraints(fixture_db, "parts", "f") == [("fk_parts_widget_id_widgets", False)]

    # Act 2
    execute_sql(fixture_db, "DELETE FROM parts WHERE widget_id = 99")
    retried = upgrade(repo, fixture_db)

    # Assert 2: one key, valid, enforced.
    assert retried.returncode == 0, retried.stderr
    assert constraints(fixture_db, "parts", "f") == [("fk_parts_widget_id_widgets", True)]
    with pytest.raises(psycopg2.errors.ForeignKeyViolation):
        execute_sql(fixture_db, "INSERT INTO parts VALUES (3, 98)")


def test_an_enum_value_is_usable_in_the_revision_that_adds_it(repo, fixture_db):
    # Arrange: an enum column, then a revision that adds a value and writes it at once.
    add_revision(repo, "la0000000004",
                 "op.execute(\"CREATE TYPE widget_kind AS ENUM ('plain')\")\n"
                 "op.add_column('widgets', sa.Column('kind', sa.Enum(name='widget_kind', "
                 "create_type=False), nullable=True))")
    add_revision(repo, "la0000000005",
                 'add_enum_value("widget_kind", "fancy", after="plain")\n'
                 "op.execute(\"UPDATE widgets SET kind = 'fancy'\")",
                 parent="la0000000004")
    execute_sql(fixture_db, "INSERT INTO widgets (name) VALUES ('a')")

    # Act
    proc = upgrade(repo, fixture_db)

    # Assert
    assert proc.returncode == 0, proc.stderr
    assert execute_sql(fixture_db, "SELECT enum_range(NULL::widget_kind)::text") == [
        ("{plain,fancy}",)]
    assert execute_sql(fixture_db, "SELECT kind::text FROM widgets") == [("fancy",)]


def test_offline_rendering_prints_the_concurrent_statements(repo, empty_db):
    # Arrange
    add_revision(repo, "la0000000006",
                 'create_index_concurrently("ix_widgets_size", "widgets", ["size"])\n'
                 'set_not_null("widgets", "name")')

    # Act: no database is read offline.
    proc = run_flask(["db", "upgrade", "--sql", f"{FIXTURE_REVISIONS[-1]}:la0000000006"],
                     empty_db, cwd=repo)

    # Assert
    sql = proc.stdout
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_widgets_size ON widgets (size)" in sql
    assert "CHECK (name IS NOT NULL) NOT VALID" in sql
    assert sql.index("VALIDATE CONSTRAINT") < sql.index("SET NOT NULL")


def nullable(url, column: str) -> str:
    return execute_sql(url, "SELECT is_nullable FROM information_schema.columns "
                            "WHERE table_name = 'widgets' AND column_name = %s", (column,))[0][0]


def constraints(url, table: str, kind: str) -> list[tuple[str, bool]]:
    return execute_sql(url, "SELECT conname, convalidated FROM pg_constraint "
                            "WHERE conrelid = %s::regclass AND contype = %s ORDER BY conname",
                       (table, kind))
