"""``flask migrations ...``: the lifecycle commands Flask-Migrate does not have."""

from __future__ import annotations

import click
from alembic.script import ScriptDirectory
from flask import current_app
from flask.cli import AppGroup

from backend.lifecycle import LifecycleError

migrations_cli = AppGroup("migrations", help="Checks and repairs around `flask db`.")


@migrations_cli.command("accept-edits")
def accept_edits() -> None:
    """Record the current files of all applied revisions as reviewed.

    Run it after reviewing why an applied revision's file changed (a comment, a fix that
    matches what the database already has); the next start then accepts them.
    """
    from backend.extensions import db
    from backend.lifecycle import checksums
    from backend.lifecycle.lock import migration_lock
    from backend.lifecycle.revisions import read_state

    settings = current_app.config["SERVICE_CONFIG"]
    scripts = ScriptDirectory(current_app.extensions["migrate"].directory)
    try:
        with db.engine.connect() as connection, \
                migration_lock(connection, settings.migration_lock_wait):
            current, recorded = read_state(connection)
            on_disk = checksums.script_checksums(scripts)
            edited = checksums.edited_revisions(scripts, current, recorded, on_disk)
            checksums.ensure_table(connection)
            applied = checksums.applied_chain(scripts, current)
            for rev in applied:
                checksums.record(connection, rev, scripts.get_revision(rev).path)
            connection.commit()
    except LifecycleError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"recorded checksums of {len(applied)} applied revision(s); "
               f"accepted edits to: {', '.join(edited) if edited else 'none'}")
