"""The data-file machinery (tests/migrations/data/__init__.py), on data files of its own: the
loader refuses what would check nothing in silence, ``writes_rows`` tells a data migration
from a schema change, ``rejects`` passes only on a constraint the database enforces.

None of this uses the checkout's data files or revisions, so it holds for any application,
one with no data files included.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ProgrammingError

from tests.migrations import data

GOOD = '''"""a data file as the convention asks."""

ROWS = [{"__tablename__": "widgets", "id": 1000, "name": "kept"}]


def _mine(db):
    return db


def upgraded(db):
    assert _mine(db) is db


def downgraded(db):
    assert _mine(db) is db
'''


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """An importable package of data files of the test's own, under a name of its own (so no
    module of another test's is reused); its modules are forgotten afterwards."""
    name = f"probe_data_{uuid.uuid4().hex[:12]}"
    directory = tmp_path / name
    directory.mkdir()
    (directory / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield directory, name
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


def test_an_inherited_data_migration_can_go_unchecked_with_its_reason(package) -> None:
    # Arrange: a revision shipped before anyone wrote checks for it.
    directory, name = package
    (directory / "cafe00000032.py").write_text('UNCHECKED = "  applied in 2019, before checks  "\n')

    # Act
    fixture = data.load(directory, name)["cafe00000032"]

    # Assert: the reason is kept (trimmed); it brings no rows and no checks.
    assert fixture.unchecked == "applied in 2019, before checks"
    assert fixture.rows == [] and not fixture.has_checks


def test_loads_rows_and_checks_by_revision(package) -> None:
    directory, name = package
    (directory / "cafe00000031.py").write_text(GOOD)

    fixtures = data.load(directory, name)

    assert list(fixtures) == ["cafe00000031"]
    fixture = fixtures["cafe00000031"]
    assert fixture.rows == [{"__tablename__": "widgets", "id": 1000, "name": "kept"}]
    assert fixture.has_checks and fixture.upgraded and fixture.downgraded
    assert data.before_revision_data(fixtures) == {"cafe00000031": fixture.rows}


def test_no_data_files_is_no_fixture(package) -> None:
    """An application with no data migration needs no data file."""
    directory, name = package

    assert data.load(directory, name) == {}


def test_refuses_a_misspelt_check(package) -> None:
    """``upgrade`` for ``upgraded`` would be skipped without a word: loading refuses it."""
    directory, name = package
    (directory / "cafe00000032.py").write_text(GOOD.replace("def upgraded", "def upgrade"))

    with pytest.raises(ValueError, match=r"^cafe00000032\.py: functions \['upgrade'\] are "
                                         r"not checks \(upgraded, downgraded\)"):
        data.load(directory, name)


@pytest.mark.parametrize("source", [
    'op.execute("UPDATE widgets SET size = 1 WHERE size IS NULL")',
    "op.execute('delete from widgets')",
    'op.execute("INSERT INTO widgets (name) VALUES (\'x\')")',
    "op.bulk_insert(widgets, [{'name': 'x'}])",
    "op.execute(sa.update(widgets).values(size=1))",
    "op.execute(widgets.delete())",
])
def test_writes_rows_sees_a_data_migration(source: str) -> None:
    assert data.writes_rows(source)


@pytest.mark.parametrize("source", [
    'op.add_column("widgets", sa.Column("size", sa.Integer()))',
    'op.create_index("ix_widgets_name", "widgets", ["name"])',
    'op.execute("ALTER TABLE widgets VALIDATE CONSTRAINT ck_widgets_size")',
])
def test_writes_rows_lets_a_schema_change_pass(source: str) -> None:
    assert not data.writes_rows(source)


@pytest.fixture
def widgets(empty_db: URL) -> Iterator[Connection]:
    """A connection on a table with a check, in a transaction rolled back afterwards, as the
    harness runs a data file's checks."""
    engine = create_engine(empty_db)
    with engine.connect() as connection:
        connection.execute(text("CREATE TABLE widgets (name text NOT NULL, "
                                "size int CHECK (size > 0))"))
        yield connection
        connection.rollback()
    engine.dispose()


def test_rejects_passes_when_a_constraint_refuses(widgets: Connection) -> None:
    data.rejects(widgets, "INSERT INTO widgets (name, size) VALUES ('bad', 0)")

    # The check goes on after the refusal: the savepoint took the error away.
    assert data.rows(widgets, "SELECT count(*) FROM widgets") == [(0,)]


def test_rejects_fails_when_the_database_accepts(widgets: Connection) -> None:
    with pytest.raises(AssertionError, match="the database accepted: INSERT INTO widgets"):
        data.rejects(widgets, "INSERT INTO widgets (name, size) VALUES (:name, 1)", name="ok")


def test_rejects_does_not_pass_a_typo(widgets: Connection) -> None:
    """An error that is not a constraint's (here a misspelt column) fails the check."""
    with pytest.raises(ProgrammingError):
        data.rejects(widgets, "INSERT INTO widgets (nmae) VALUES ('x')")
