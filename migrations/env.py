"""Alembic environment: how every migration command talks to the database.

Every path that runs migrations (the entrypoint, a manual ``flask db upgrade`` or
``flask db downgrade``) comes through this file, so all of them get the same protection:
an advisory lock, short lock and statement timeouts, refusals before any change, one
transaction per revision, checksums, and a log line per revision. The rules themselves
live in ``backend/migrate/apply.py``.
"""

import contextlib
import logging

from alembic import context
from flask import current_app, has_app_context
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from backend.config import mask_url
from backend.logs import configure_logging
from backend.migrate import LifecycleError, alembic_plan, bookkeeping, checksums, phases
from backend.migrate.apply import RevisionRecorder, run_locked
from backend.migrate.database import owner_engine
from backend.migrate.interrupt import cancel_on_signal
from backend.migrate.revisions import read_state
from backend.postgres import describe_error

config = context.config

if not has_app_context():
    # `flask db` and the entrypoint load this file inside the app. A tool that loads it in a
    # fresh interpreter (plain `alembic`, pytest-alembic's model registration check) gets the
    # same app, for the URL it names in sqlalchemy.url, else for DATABASE_URL.
    from backend import create_app
    from backend.config import Config

    _url = config.get_main_option("sqlalchemy.url")
    _app = create_app(Config.for_url(_url) if _url else Config.from_env())
    _app.app_context().push()

settings = current_app.config["SERVICE_CONFIG"]
configure_logging(settings.log_format)
logger = logging.getLogger("backend.migrations")

migrate_ext = current_app.extensions["migrate"]
target_metadata = migrate_ext.db.metadata


def skip_empty_autogenerate(context, revision, directives):
    """Write no file when the models did not change (Flask-Migrate's own rule)."""
    if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
        directives[:] = []
        logger.info("No changes in schema detected.")


def include_name(name, type_, parent_names) -> bool:
    """Autogenerate compares only the models' tables: the lifecycle's own are not ones."""
    return not (type_ == "table" and name in bookkeeping.TABLES)


def run_migrations_offline() -> None:
    """Render SQL instead of running it (``flask db upgrade --sql``)."""
    follow_phases(None)
    context.configure(
        url=migrate_ext.db.engine.url,
        target_metadata=target_metadata,
        literal_binds=True,
        transaction_per_migration=True,
        **{k: v for k, v in migrate_ext.configure_args.items() if k != "render_as_batch"},
    )
    with context.begin_transaction():
        context.run_migrations()


def migration_connection() -> contextlib.AbstractContextManager[Connection]:
    """The connection to migrate on: the app's engine, unless the caller handed one over in
    ``config.attributes["connection"]`` (an Engine, a Connection, or anything with
    ``connect()``), Alembic's documented channel. pytest-alembic uses it, so its checks and
    the migrations share one database and, where a check rolls back, one transaction."""
    given = config.attributes.get("connection")
    if given is None:
        # The owner role when MIGRATION_DATABASE_URL names one; the app's engine serves as
        # the runtime role, which cannot change the schema.
        engine = owner_engine(settings, migrate_ext.db.engine)
        try:
            return engine.connect()
        except DBAPIError as exc:  # one line (Flask-Migrate prints it), not a traceback
            raise LifecycleError(f"cannot connect to {mask_url(engine.url)}: "
                                 f"{describe_error(exc)}") from None
    if isinstance(given, Connection):
        return contextlib.nullcontext(given)
    return given.connect()


def follow_phases(connection: Connection | None) -> None:
    """``head`` and ``-1`` on a history with a post-deploy branch: the pre-deploy head, the
    phase applied last (backend/migrate/phases.py). Offline there is no database to ask,
    and ``-1`` goes as typed."""
    env = alembic_plan.environment()
    command, typed = alembic_plan.requested(env)
    history = phases.read_phases(context.script)
    if typed is None or not history.has_post:
        return
    began = connection is not None and not connection.in_transaction()
    current = read_state(connection)[0] if connection is not None else []
    target = phases.destination(context.script, history, command, typed, current,
                                lambda revisions: checksums.latest(connection, revisions))
    if began:  # what the caller did not open, close: each revision commits on its own
        connection.commit()
    if target:
        alembic_plan.retarget(env, target)


def run_migrations_online() -> None:
    conf_args = dict(migrate_ext.configure_args)
    conf_args.setdefault("process_revision_directives", skip_empty_autogenerate)
    recorder = RevisionRecorder()
    with migration_connection() as connection:
        # Already in a transaction: the caller owns it (a check that rolls each step back).
        # Run inside it, without the lock, the refusals and the checksums: they all commit.
        in_caller_transaction = connection.in_transaction()
        follow_phases(connection)
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # One transaction per revision: a failure rolls back that revision only, and
            # the database stays at the last revision that fully applied.
            transaction_per_migration=True,
            on_version_apply=None if in_caller_transaction else recorder,
            include_name=include_name,
            **conf_args,
        )

        def run() -> None:
            with context.begin_transaction():
                context.run_migrations()

        # upgrade, downgrade and stamp name a destination; current, check and autogenerate
        # do not, and change nothing.
        if in_caller_transaction or context.get_context().opts.get("destination_rev") is None:
            run()  # reads only (current, check, autogenerate), or the caller's transaction
            return
        with cancel_on_signal():
            run_locked(connection, context.get_context(), context.script, settings, run,
                       recorder)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
