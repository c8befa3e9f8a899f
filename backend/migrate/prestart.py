"""Before the service listens, and in each worker it forks.

gunicorn runs ``prepare_to_serve`` in its master process (``on_starting`` in
``gunicorn.conf.py``), after the app is loaded and before the port is opened, so one
interpreter starts instead of two and a replica only ever listens with its schema at head.
Any reason to refuse ends here with one log line and a non-zero exit: the port never opens.
``prepare_worker`` runs in every worker gunicorn forks, the first ones and any re-fork.
"""

from __future__ import annotations

import logging

from flask import Flask

from backend import deadline
from backend.config import ConfigError
from backend.engine import limit_request_time
from backend.extensions import db
from backend.migrate import LifecycleError
from backend.migrate.database import wait_for_database
from backend.migrate.interrupt import cancel_on_signal
from backend.migrate.upgrade import upgrade_to_head

log = logging.getLogger("backend.lifecycle")


def migrate_before_serving(app: Flask) -> None:
    """Wait for the database, then upgrade to head; exit the process on any refusal."""

    config = app.config["SERVICE_CONFIG"]
    try:
        with cancel_on_signal():
            wait_for_database(config.database_url, config.db_wait_timeout)
            with app.app_context():
                upgrade_to_head(app)
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


def prepare_worker(app: Flask) -> None:
    """Bound every database wait of this worker: the server stops a statement after
    ``DB_QUERY_TIMEOUT``; the client gives up one second later if the server cannot."""

    config = app.config["SERVICE_CONFIG"]
    deadline.install(config.db_query_timeout + 1)
    with app.app_context():
        # Forget (without closing) anything inherited; the checkout guard in
        # backend.engine would refuse it anyway.
        db.engine.dispose(close=False)
        limit_request_time(db.engine, config.db_query_timeout)
