"""``scripts/rehearse.sh``: run the pending migrations on a copy of a real database first.

A revision that passes the tests on a few rows can still take an exclusive lock for
minutes on a large table, rewrite it, or delete rows through a bad ``WHERE``; its
downgrade may never have run against real data at all. The only honest answer is to run
it on a copy of production: this module copies a database (``pg_dump -Fc`` of a live one,
or a dump made by :mod:`backend.migrate.backup`) into a scratch database, applies every
pending revision one at a time through the same ``env.py`` as a real upgrade, rolls them
all back one at a time, applies them again, and reports for each revision how long it
took, which tables it rewrote, the strongest lock it held on each table and how row
counts changed. It follows the deploy's order when the history has two phases
(backend/migrate/phases.py): the pending pre-deploy revisions, then the background
migrations they registered, run to their end on the copy with the real runner (how long the
backfill takes on real data, and what it changes), then the pending post-deploy revisions;
the rollback goes back the same way. It fails (exit 1) when a step fails, a background
migration fails, a table loses rows the revision did not declare, the downgrades do not
restore the schema, or the schema at the heads does not match the models.

The source is only read. The scratch database has a unique name, is dropped at the end,
also after a failure, Ctrl-C or SIGTERM, and passwords reach the client tools through the
environment only; nothing printed contains one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL

from backend.migrate.database import connect, run_sql
from migration_tools import command_line

PROG = "rehearse"


def progress(message: str) -> None:
    """One line on stderr, so a long rehearsal shows where it is (stdout is the report)."""
    command_line.progress(PROG, message)


def rehearsal_connection(url: URL, **extra: Any) -> Any:
    """A driver connection named for the rehearsal in ``pg_stat_activity``."""
    return connect(url, PROG, **extra)


def rehearsal_sql(url: URL, statement: str) -> list[tuple]:
    """One statement on its own connection, named for the rehearsal; its rows."""
    return run_sql(url, statement, PROG)


def size_text(size: int) -> str:
    """A byte count as a person reads it: 512 B, 8.0 kB, 1.2 GB."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
