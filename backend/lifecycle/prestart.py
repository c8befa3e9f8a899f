"""Before the service listens: wait for the database, then apply pending migrations.

gunicorn runs this in its master process (``on_starting`` in ``gunicorn.conf.py``), after
the app is loaded and before the port is opened, so one interpreter starts instead of two
and a replica only ever listens with its schema at head. Any reason to refuse ends here
with one log line and a non-zero exit: the port never opens.
"""

from __future__ import annotations

import logging

from flask import Flask

from backend.config import ConfigError
from backend.lifecycle import LifecycleError

log = logging.getLogger("backend.lifecycle")


def migrate_before_serving(app: Flask) -> None:
    """Wait for the database, then upgrade to head; exit the process on any refusal."""
    from backend.lifecycle.backup import backup_settings
    from backend.lifecycle.database import wait_for_database
    from backend.lifecycle.upgrade import upgrade_to_head

    config = app.config["SERVICE_CONFIG"]
    try:
        backup_settings()  # a bad BACKUP_* value fails now, not just before a migration
        wait_for_database(config.database_url, config.db_wait_timeout)
        with app.app_context():
            upgrade_to_head(app)
    except (ConfigError, LifecycleError) as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(1) from None
