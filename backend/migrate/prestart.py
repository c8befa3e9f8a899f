"""Before the service listens, and in each worker it forks.

gunicorn runs ``prepare_to_serve`` in its master process (``on_starting`` in
``gunicorn.conf.py``), after the app is loaded and before the port is opened, so one
interpreter starts instead of two and a replica only ever listens with its schema at head.
Any reason to refuse ends here with one log line and a non-zero exit: the port never opens.
What each forked worker does before serving is ``backend.serving.worker.prepare_worker``.
"""

from __future__ import annotations

import logging

from flask import Flask

from backend.config import ConfigError
from backend.extensions import db
from backend.migrate import LifecycleError
from backend.migrate.database import wait_for_database
from backend.migrate.interrupt import cancel_on_signal
from backend.migrate.post_deploy import remind
from backend.migrate.upgrade import upgrade_to_head

log = logging.getLogger("backend.lifecycle")


def migrate_before_serving(app: Flask) -> None:
    """Wait for the database, then upgrade to head; exit the process on any refusal."""

    config = app.config["SERVICE_CONFIG"]
    try:
        with cancel_on_signal():
            wait_for_database(config.owner_url, config.db_wait_timeout)
            with app.app_context():
                upgrade_to_head(app)
                remind(app)
    except (ConfigError, LifecycleError) as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(1) from None


def prepare_to_serve(app: Flask, migrate: bool = True) -> None:
    """Migrate (unless told not to), then close what that opened: the workers are forked
    from this process, and a pooled connection must never cross a fork."""

    if migrate:
        migrate_before_serving(app)
    with app.app_context():
        db.engine.dispose()

