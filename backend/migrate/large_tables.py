"""Operations for revisions on large, busy tables, where plain Alembic leaves traps.

Call them from a revision's ``upgrade()`` in place of the plain ``op`` call::

    from backend.migrate.large_tables import create_index_concurrently

    def upgrade():
        create_index_concurrently("ix_tasks_due_date", "tasks", ["due_date"])

Each one runs its statements in an ``autocommit_block``: every statement commits on its own,
so no lock is held from one to the next, and a statement that scans the table holds only a
lock that lets reads and writes go on. The revision's version row is still written only
after all of them succeeded; a retry after a failure (or a kill) starts the helper again, so
each first clears what an interrupted attempt may have left behind.

The session's ``lock_timeout`` and ``statement_timeout`` (MIGRATION_LOCK_TIMEOUT,
MIGRATION_STATEMENT_TIMEOUT) bound every statement here too: raise the statement timeout for
a scan that takes longer, with ``op.execute("SET statement_timeout = '1h'")`` first.
Rendered offline (``flask db upgrade --sql``), they print the same statements, without the
catalog look-up that only a live database can answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


def create_index_concurrently(index_name: str, table_name: str, columns: Sequence[str], *,
                              unique: bool = False, where: str | None = None,
                              schema: str | None = None) -> None:
    """``CREATE INDEX CONCURRENTLY``, after dropping an INVALID index of the same name.

    A concurrent build that fails (a deadlock, a duplicate for a unique index, a cancel, a
    kill) leaves its index behind, marked INVALID: never used by a query, still updated by
    every write. ``IF NOT EXISTS`` alone would then keep the broken index and report
    success, so the leftover is dropped (concurrently) first.
    """
    context = op.get_context()
    with context.autocommit_block():
        if not context.as_sql and _index_is_invalid(index_name, schema):
            op.drop_index(index_name, table_name=table_name, schema=schema,
                          postgresql_concurrently=True, if_exists=True)
        op.create_index(index_name, table_name, list(columns), unique=unique, schema=schema,
                        postgresql_concurrently=True, if_not_exists=True,
                        postgresql_where=sa.text(where) if where else None)


def set_not_null(table_name: str, column_name: str, *, schema: str | None = None) -> None:
    """``SET NOT NULL`` without holding an exclusive lock through a scan of the table.

    Plain ``SET NOT NULL`` scans every row under ACCESS EXCLUSIVE: no reads, no writes for
    as long as the scan takes. Instead: a ``CHECK (column IS NOT NULL) NOT VALID`` (a
    moment's lock, no scan), ``VALIDATE`` it (the scan, under SHARE UPDATE EXCLUSIVE, which
    lets reads and writes go on), then ``SET NOT NULL``, which PostgreSQL 12 and later prove
    from the valid check without scanning, and drop the check. A NULL left in the column
    fails the ``VALIDATE`` with the constraint's name; the column stays nullable.
    """
    table, column = _table(table_name, schema), _quote(column_name)
    check = _quote(_check_name(table_name, column_name))
    with op.get_context().autocommit_block():
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}")  # a retry's
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {check} "
                   f"CHECK ({column} IS NOT NULL) NOT VALID")
        op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL")
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {check}")


def add_foreign_key(constraint_name: str, source_table: str, referent_table: str,
                    local_columns: Sequence[str], remote_columns: Sequence[str], *,
                    ondelete: str | None = None, schema: str | None = None) -> None:
    """A foreign key added ``NOT VALID``, then validated in a statement of its own.

    Adding it valid checks every existing row while holding SHARE ROW EXCLUSIVE on both
    tables, which blocks their writes for the whole scan. ``NOT VALID`` takes the lock for
    a moment (new rows are checked from then on); ``VALIDATE`` then checks the old rows
    under SHARE UPDATE EXCLUSIVE, with writes going on. An orphan row fails the
    ``VALIDATE``; the key stays, NOT VALID, and a retry adds it afresh.
    """
    table = _table(source_table, schema)
    name = _quote(constraint_name)
    with op.get_context().autocommit_block():
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")  # a retry's
        op.create_foreign_key(op.f(constraint_name), source_table, referent_table,
                              list(local_columns), list(remote_columns), ondelete=ondelete,
                              source_schema=schema, referent_schema=schema,
                              postgresql_not_valid=True)
        op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def add_enum_value(enum_name: str, value: str, *, before: str | None = None,
                   after: str | None = None, schema: str | None = None) -> None:
    """``ALTER TYPE ... ADD VALUE IF NOT EXISTS``, committed at once.

    Inside the revision's transaction the new value could not be used until that
    transaction commits ("unsafe use of new value"), so a revision that adds a value and
    then writes it fails. Committed on its own, the value is usable by the statements after
    it. An enum value cannot be removed again: a downgrade leaves it in place.
    """
    if before and after:
        raise ValueError("add_enum_value: give before or after, not both")
    position = ""
    if before:
        position = f" BEFORE {_literal(before)}"
    elif after:
        position = f" AFTER {_literal(after)}"
    with op.get_context().autocommit_block():
        op.execute(f"ALTER TYPE {_table(enum_name, schema)} ADD VALUE IF NOT EXISTS "
                   f"{_literal(value)}{position}")


def _index_is_invalid(index_name: str, schema: str | None) -> bool:
    """Whether an index of that name exists and is INVALID (a failed concurrent build)."""
    return bool(op.get_bind().execute(sa.text(
        "SELECT NOT i.indisvalid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = :name AND n.nspname = coalesce(:schema, current_schema())"),
        {"name": index_name, "schema": schema}).scalar())


def _check_name(table_name: str, column_name: str) -> str:
    # Identifiers stop at 63 bytes; PostgreSQL would truncate a longer one silently, and
    # the DROP at the end must name exactly what the ADD made.
    return f"ck_{table_name}_{column_name}_not_null"[:63]


def _quote(name: str) -> str:
    return op.get_context().dialect.identifier_preparer.quote(name)


def _table(name: str, schema: str | None) -> str:
    return f"{_quote(schema)}.{_quote(name)}" if schema else _quote(name)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
