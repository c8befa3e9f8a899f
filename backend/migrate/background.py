"""Background migrations: a data change on a big table, registered by a revision, applied later.

A revision that rewrites every row of a large table cannot run in the start path: at tens of
millions of rows it keeps the new release from serving for hours and holds row locks and WAL
for the whole ``UPDATE``. Instead the revision only *registers* the change (one row in
``background_migrations``), so the deploy goes on at once, and ``flask migrations backfill run``
applies it later, in batches, as GitLab's batched background migrations do::

    from backend.migrate.background import register_backfill, unregister_backfill

    def upgrade():
        register_backfill("widgets_size_zero", "widgets",
                          "UPDATE widgets SET size = 0 "
                          "WHERE id > :start AND id <= :stop AND size IS NULL")

    def downgrade():
        unregister_backfill("widgets_size_zero")

The statement runs once per batch with ``:start`` (exclusive) and ``:stop`` (inclusive) set to
a range of the key column, which must be an integer column with an index (the primary key).
The code released with the revision must already write new rows in their final form: the
backfill only fixes the rows that existed before. The runner lives in
:mod:`backend.migrate.backfill_runner`.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

log = logging.getLogger("backend.migrations")

TABLE = "background_migrations"
STATES = ("pending", "running", "paused", "done", "failed")
# The owner role creates it from a revision, like alembic_version; the runner only updates it.
CREATE_TABLE = f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        name varchar(200) PRIMARY KEY,
        revision varchar(64) NOT NULL,
        table_name varchar(200) NOT NULL,
        key_column varchar(200) NOT NULL,
        statement text NOT NULL,
        batch_size bigint NOT NULL CHECK (batch_size > 0),
        state varchar(16) NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'running', 'paused', 'done', 'failed')),
        last_key bigint,
        rows_done bigint NOT NULL DEFAULT 0,
        batches_done bigint NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        error text
    )
"""
_PLACEHOLDER = re.compile(r"(?<![:\w]):(start|stop)\b")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")

# Typed, so that offline mode can render the values as literals.
_rows = sa.table(TABLE, sa.column("name", sa.String), sa.column("revision", sa.String),
                 sa.column("table_name", sa.String), sa.column("key_column", sa.String),
                 sa.column("statement", sa.Text), sa.column("batch_size", sa.Integer))


def register_backfill(name: str, table: str, statement: str, *, key: str = "id",
                      batch_size: int = 1000, revision: str | None = None) -> None:
    """Queue a batched data change; call it from a revision's ``upgrade()``.

    Only a row is written, so the revision commits in milliseconds whatever the table's size.
    Through ``op.execute`` it renders in offline mode (``flask db upgrade --sql``) too, and it
    commits or rolls back with the revision's own transaction. Registering a name again (a
    re-applied revision) keeps the existing row and its progress. ``revision`` defaults to
    the calling revision module's ``revision``.
    """
    check_definition(name, statement, batch_size)
    if revision is None:
        caller = inspect.currentframe()
        revision = str((caller.f_back.f_globals if caller and caller.f_back else {})
                       .get("revision", ""))
    op.execute(CREATE_TABLE)
    op.execute(postgresql.insert(_rows).values(
        name=name, revision=revision or "unknown", table_name=table, key_column=key,
        statement=statement, batch_size=batch_size,
    ).on_conflict_do_nothing(index_elements=["name"]))


def unregister_backfill(name: str) -> None:
    """Forget a registered backfill; call it from the revision's ``downgrade()``.

    The rows it already changed stay changed: a data change has no inverse in general.
    """
    op.execute(sa.delete(_rows).where(_rows.c.name == name))


def finish_backfill(name: str) -> None:
    """Call it first in the post-deploy revision whose contract relies on a backfill.

    Deployed, this finds the migration done: ``flask migrations post-deploy`` (any upgrade
    through migrations/env.py) refuses to start while a background migration registered by
    a revision it needs is unfinished. A walk that applies every revision back to back (a
    fresh development database, the tests, ``make verify-migrations``) reaches the contract
    before any runner could; there the rest of the migration runs here, in the revision's
    transaction, as one statement over the keys left: what the runner would have done, on
    a table small enough for one statement. Offline (``--sql``) it renders nothing.
    """
    if context.is_offline_mode():
        return
    bind = op.get_bind()
    if bind.execute(sa.text(f"SELECT to_regclass('{TABLE}')")).scalar() is None:
        row = None
    else:
        row = bind.execute(sa.text(
            f"SELECT table_name, key_column, statement, last_key, state FROM {TABLE} "
            "WHERE name = :name FOR UPDATE"), {"name": name}).first()
    if row is None:
        raise ValueError(f"background migration {name} is not registered: the revision "
                         "that registers it must come before this one (depends_on)")
    if row.state == "done":
        return
    table = ".".join(f'"{part}"' for part in row.table_name.split(".", 1))
    key = f'"{row.key_column}"'
    start = row.last_key
    if start is None:
        start = bind.execute(sa.text(f"SELECT min({key}) - 1 FROM {table}")).scalar()
    stop = bind.execute(sa.text(f"SELECT max({key}) FROM {table}")).scalar()
    changed = 0
    if start is not None and stop is not None and stop > start:
        changed = max(bind.execute(sa.text(row.statement),
                                   {"start": start, "stop": stop}).rowcount, 0)
    bind.execute(sa.text(
        f"UPDATE {TABLE} SET state = 'done', error = NULL, last_key = coalesce(:stop, last_key), "
        "rows_done = rows_done + :changed, batches_done = batches_done + 1, "
        "started_at = coalesce(started_at, now()), updated_at = now(), finished_at = now() "
        "WHERE name = :name"), {"stop": stop, "changed": changed, "name": name})
    log.info("background migration %s finished inside the revision: %d row(s)", name, changed)


def unfinished(connection: sa.Connection, revisions: set[str]) -> list[dict]:
    """The background migrations registered by these revisions that are not done yet."""
    if connection.execute(sa.text(f"SELECT to_regclass('{TABLE}')")).scalar() is None:
        return []
    rows = connection.execute(sa.text(
        f"SELECT name, revision, state, rows_done FROM {TABLE} "
        "WHERE revision = ANY(:revisions) AND state <> 'done' ORDER BY created_at, name"),
        {"revisions": sorted(revisions)})
    return [dict(row._mapping) for row in rows]


def check_definition(name: str, statement: str, batch_size: int) -> None:
    """Refuse, while the revision is written, a definition the runner could not apply."""
    if not _NAME.match(name):
        raise ValueError(f"background migration name {name!r}: use 1-200 letters, digits, "
                         "'_', '.' or '-'")
    found = set(_PLACEHOLDER.findall(statement))
    if found != {"start", "stop"}:
        raise ValueError(f"background migration {name}: the statement needs both :start "
                         "and :stop (the key range of one batch)")
    if batch_size < 1:
        raise ValueError(f"background migration {name}: batch_size must be at least 1")


def to_driver_sql(statement: str) -> str:
    """The statement in psycopg2's parameter style: ``%`` doubled, ``:start`` and ``:stop``
    as named parameters (a ``::cast`` is left alone)."""
    return _PLACEHOLDER.sub(r"%(\1)s", statement.replace("%", "%%"))


def lock_key(name: str) -> int:
    """A fixed positive 63-bit advisory lock key per migration name, the same in every
    process and release (the migration lock's scheme, another namespace)."""
    digest = hashlib.sha256(f"backend.background:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
