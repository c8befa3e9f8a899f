"""Apply pending revisions, the same way ``flask db upgrade`` does, with a clear verdict.

Runs Alembic's own ``upgrade`` through Flask-Migrate's config and our ``migrations/env.py``,
so a manual ``flask db upgrade`` and the entrypoint share every rule. What this adds is the
refusals before touching anything, and one line that says what failed and where it left
the database.
"""

from __future__ import annotations

import logging
import time

from alembic import command
from flask import Flask

from backend.extensions import db
from backend.lifecycle import LifecycleError
from backend.lifecycle.database import describe_error
from backend.lifecycle.revisions import (
    current_revisions,
    load_scripts,
    pending_revisions,
    schema_status,
)

log = logging.getLogger("backend.lifecycle")


def _label(revisions: list[str]) -> str:
    return ", ".join(revisions) if revisions else "base"


def upgrade_to_head(app: Flask) -> list[str]:
    """Bring the database to head; return the revisions that were pending."""
    migrate_ext = app.extensions["migrate"]
    scripts = load_scripts(migrate_ext.directory)
    with db.engine.connect() as connection:
        status = schema_status(connection, scripts)
    if not status.pending:
        if status.reason:
            raise LifecycleError(status.reason)
        log.info("schema is at head %s: nothing to apply", _label(status.head))
        return []

    log.info("applying %d pending revision(s) from %s to %s",
             len(status.pending), _label(status.current), _label(status.head))
    started = time.perf_counter()
    try:
        command.upgrade(migrate_ext.migrate.get_config(), "head")
    except Exception as exc:  # any failure: say which revision and where we stand
        with db.engine.connect() as connection:
            now = current_revisions(connection)
        failed = next(iter(pending_revisions(scripts, now)), "?")
        doc = scripts.get_revision(failed).doc if failed != "?" else ""
        raise LifecycleError(
            f"migration {failed} ({doc}) failed: {describe_error(exc)}; "
            f"the database stays at {_label(now)}"
        ) from exc
    elapsed = time.perf_counter() - started
    log.info("upgraded from %s to %s: %d revision(s) in %.3fs",
             _label(status.current), _label(status.head), len(status.pending), elapsed,
             extra={"fields": {"from": status.current, "to": status.head,
                               "count": len(status.pending), "seconds": round(elapsed, 3)}})
    return status.pending

