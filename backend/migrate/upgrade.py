"""Apply pending revisions exactly as ``flask db upgrade`` does, with a one-line verdict.

The rules (lock, timeouts, refusals, retries) live in ``migrations/env.py`` and
``backend/migrate/apply.py``, so this and a manual ``flask db upgrade`` behave the same.
What this adds for the entrypoint and ``flask migrations post-deploy`` is that any failure
becomes one line, not a traceback.
"""

from __future__ import annotations

from alembic import command
from alembic.util import CommandError
from flask import Flask

from backend.migrate import LifecycleError
from backend.postgres import describe_error


def upgrade_to(app: Flask, target: str) -> None:
    """Upgrade to ``target`` (``head``: the pre-deploy head), or raise ``LifecycleError``."""
    config = app.extensions["migrate"].migrate.get_config()
    try:
        command.upgrade(config, target)
    except LifecycleError:
        raise
    except CommandError as exc:
        raise LifecycleError(str(exc)) from exc
    except Exception as exc:
        raise LifecycleError(f"upgrade failed: {describe_error(exc)}") from exc


def upgrade_to_head(app: Flask) -> None:
    """Bring the database to head, or raise ``LifecycleError`` saying why not."""
    upgrade_to(app, "head")
