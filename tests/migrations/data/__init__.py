"""Data fixtures for migrations: rows that go through a revision, and what must hold after.

A migration that works on empty tables can still lose, mangle or reject real rows. So a
revision that touches data (a backfill, a constraint, a type change) ships a data file,
``tests/migrations/data/<revision id>.py``. Every name in it is optional:

``ROWS``
    Rows inserted right before the revision upgrades, against its parent's schema: a list of
    dicts, each naming its table under ``"__tablename__"`` (pytest-alembic's
    ``before_revision_data`` format). They go in during every walk through the history
    (``test_upgrade``, ``test_up_down_consistency``, ``test_model_definitions_match_ddl``,
    ``test_downgrade_leaves_no_trace`` and every data test), so the revisions after this one
    run over them too. Rows of all data files share the tables: give explicit primary keys
    from a block no other data file uses (1000-1999, 2000-2999, ..., one per file) and
    unique values where a column is unique (emails).

``def upgraded(db: Connection) -> None``
    Asserts what must hold once the revision has upgraded over those rows.

``def downgraded(db: Connection) -> None``
    Asserts what must hold once its downgrade has run, back at the parent revision.

``UNCHECKED = "reason"``
    For a revision that writes rows but shipped before anyone wrote checks for it (an
    inherited history): the reason it goes without ``ROWS`` and a check. It still runs in
    every walk through the history; only the demand for a data check is waived, with the
    reason on record. New revisions get real checks.

Checks run in a transaction that is rolled back afterwards, so they may write to prove a
constraint holds: :func:`rejects` asserts a statement breaks a constraint, :func:`rows`
returns plain tuples to compare with a literal. Their asserts show the values that differed,
as a test's do. Any other function in a data file starts with ``_``: a misspelt check
(``upgrade``) would otherwise be skipped in silence, so loading refuses it.

``test_revision_keeps_its_data[<revision>]`` runs for every revision, with a data file or
without: a database at the parent holding every earlier data file's rows; this file's
``ROWS``; upgrade, ``upgraded``, no row lost; downgrade, ``downgraded``, no row lost; upgrade
again, ``upgraded`` again. A revision that deletes rows on purpose says so in its own file,
``# rehearse: expect-row-loss <table> <reason>``, the declaration scripts/rehearse.sh reads.

A revision whose code writes rows itself (``UPDATE``, ``DELETE`` or ``INSERT`` in
``op.execute``, ``op.bulk_insert``, SQLAlchemy's ``update()``/``delete()``/``insert()``) must
have a data file with ``ROWS`` and a check, or ``test_revisions_that_write_rows_have_data_checks``
fails.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

DIRECTORY = Path(__file__).resolve().parent
Check = Callable[[Connection], None]
CHECKS = ("upgraded", "downgraded")
# How a revision's code writes rows: SQL in op.execute(), op.bulk_insert, SQLAlchemy's
# update()/delete()/insert() constructs.
_WRITES_ROWS = re.compile(
    r"\b(?:UPDATE\s+\w+\s+SET|DELETE\s+FROM|INSERT\s+INTO)\b"  # SQL, in op.execute()
    r"|\bop\.bulk_insert\("
    r"|\b(?:sa|sqlalchemy)\.(?:update|delete|insert)\(|\.(?:update|delete|insert)\(\)",
    re.IGNORECASE)


@dataclass(frozen=True)
class DataFixture:
    """One data file, loaded: what the harness inserts and checks around its revision."""

    revision: str
    path: Path | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    upgraded: Check | None = None
    downgraded: Check | None = None
    unchecked: str = ""

    @property
    def has_checks(self) -> bool:
        """Whether the file asserts anything, beyond the rows it brings."""
        return self.upgraded is not None or self.downgraded is not None


def load(directory: Path = DIRECTORY, package: str = __name__) -> dict[str, DataFixture]:
    """Every data file in ``directory`` (the package ``package``), by revision; none is
    fine, since data files are optional. Imported by module name (``importlib`` accepts an
    id that starts with a digit, where an import statement would not), so that pytest, told
    to by the migrations conftest, rewrites their asserts and a failed check shows its
    values. ``directory`` is another package only for the tests of this loader."""
    fixtures = {}
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{path.stem}")
        stray = [name for name, value in vars(module).items()
                 if callable(value) and getattr(value, "__module__", None) == module.__name__
                 and not name.startswith("_") and name not in CHECKS]
        if stray:  # a misspelt check would be skipped without a word
            raise ValueError(f"{path.name}: functions {stray} are not checks "
                             f"({', '.join(CHECKS)}); start helpers with '_'")
        fixtures[path.stem] = DataFixture(
            revision=path.stem, path=path, rows=list(getattr(module, "ROWS", [])),
            upgraded=getattr(module, "upgraded", None),
            downgraded=getattr(module, "downgraded", None),
            unchecked=str(getattr(module, "UNCHECKED", "")).strip(),
        )
    return fixtures


def before_revision_data(fixtures: dict[str, DataFixture]) -> dict[str, list[dict[str, Any]]]:
    """The ``ROWS`` of every data file, as pytest-alembic's ``before_revision_data``."""
    return {rev: fixture.rows for rev, fixture in fixtures.items() if fixture.rows}


def writes_rows(source: str) -> bool:
    """Whether a revision's code changes rows itself, and so needs a data file."""
    return _WRITES_ROWS.search(source) is not None


def rows(db: Connection, statement: str, **params: Any) -> list[tuple]:
    """The result of a query as plain tuples, ready to compare with a literal."""
    return [tuple(row) for row in db.execute(text(statement), params)]


def rejects(db: Connection, statement: str, **params: Any) -> None:
    """Assert the database refuses ``statement`` for breaking a constraint (check, not null,
    unique, foreign key). Any other error, such as a typo in the SQL, fails the check rather
    than passing it. Runs in a savepoint, so the check can go on after the refusal."""
    savepoint = db.begin_nested()
    try:
        db.execute(text(statement), params)
    except IntegrityError:
        savepoint.rollback()
        return
    savepoint.rollback()
    raise AssertionError(f"the database accepted: {statement} {params or ''}".rstrip())
