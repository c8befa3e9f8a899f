"""Alembic environment: how every migration command talks to the database.

Everything here applies to every path that runs migrations (the entrypoint, a manual
``flask db upgrade`` or ``flask db downgrade``), because they all come through this file.
"""

import logging
import time

from alembic import context
from flask import current_app

from backend.logs import configure_logging

config = context.config
configure_logging(current_app.config["SERVICE_CONFIG"].log_format)
logger = logging.getLogger("backend.migrations")

migrate_ext = current_app.extensions["migrate"]
target_metadata = migrate_ext.db.metadata


def skip_empty_autogenerate(context, revision, directives):
    """Write no file when the models did not change (Flask-Migrate's own rule)."""
    if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
        directives[:] = []
        logger.info("No changes in schema detected.")


class _RevisionTimer:
    """Logs one line per applied revision with its duration."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def __call__(self, *, ctx, step, heads, run_args) -> None:
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        if step.is_stamp:
            return
        ident = step.up_revision_id
        script = step.up_revision
        message = script.doc if script is not None else ""
        direction = "up" if step.is_upgrade else "down"
        verb = "applied" if step.is_upgrade else "rolled back"
        logger.info("%s %s (%s) in %.3fs", verb, ident, message, elapsed,
                    extra={"fields": {"revision": ident, "message": message,
                                      "direction": direction, "seconds": round(elapsed, 3)}})


def run_migrations_offline() -> None:
    """Render SQL instead of running it (``flask db upgrade --sql``)."""
    context.configure(
        url=migrate_ext.db.engine.url,
        target_metadata=target_metadata,
        literal_binds=True,
        transaction_per_migration=True,
        **{k: v for k, v in migrate_ext.configure_args.items() if k != "render_as_batch"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    conf_args = dict(migrate_ext.configure_args)
    conf_args.setdefault("process_revision_directives", skip_empty_autogenerate)
    with migrate_ext.db.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # One transaction per revision: a failure rolls back that revision only, and
            # the database stays at the last revision that fully applied.
            transaction_per_migration=True,
            on_version_apply=_RevisionTimer(),
            **conf_args,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
