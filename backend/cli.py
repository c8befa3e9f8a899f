"""``flask migrations ...``: the lifecycle commands Flask-Migrate does not have."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
from alembic.script import ScriptDirectory
from flask import current_app
from flask.cli import AppGroup

from backend.config import ConfigError, mask_url
from backend.extensions import db
from backend.migrate import LifecycleError, backfill_progress, backfill_runner, checksums
from backend.migrate.backup import (
    current_revision,
    describe_dump,
    restore_backup,
    take_backup,
)
from backend.migrate.database import owner_engine
from backend.migrate.lock import migration_lock
from backend.migrate.post_deploy import apply_post_deploy
from backend.migrate.revisions import read_state

log = logging.getLogger("backend.lifecycle")

migrations_cli = AppGroup("migrations", help="Checks and repairs around `flask db`.")


@migrations_cli.command("accept-edits")
def accept_edits() -> None:
    """Record the current files of all applied revisions as reviewed.

    Run it after reviewing why an applied revision's file changed (a comment, a fix that
    matches what the database already has); the next start then accepts them.
    """
    settings = current_app.config["SERVICE_CONFIG"]
    scripts = ScriptDirectory(current_app.extensions["migrate"].directory)
    try:
        with owner_engine(settings, db.engine).connect() as connection, \
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


@migrations_cli.command("backup")
@click.option("--dir", "directory", type=click.Path(path_type=Path),
              help="Where to write the dump (default: BACKUP_DIR, else backups/).")
def backup(directory: Path | None) -> None:
    """Dump the database now (pg_dump -Fc), as before a migration; print the file's path.

    The newest BACKUP_KEEP dumps of the directory are kept. Exit 1 when it cannot dump.
    """
    settings = current_app.config["SERVICE_CONFIG"]
    url = settings.owner_url
    try:
        revision = current_revision(url)
        path = take_backup(url, directory or settings.backup_dir, revision, revision,
                           settings.backup_keep)
    except (ConfigError, LifecycleError) as exc:
        log.error("backup failed: %s", exc)
        sys.exit(1)
    click.echo(path)


@migrations_cli.command("restore")
@click.argument("dump", type=click.Path(path_type=Path))
@click.option("--yes", is_flag=True, help="Really replace the contents of the database.")
def restore(dump: Path, yes: bool) -> None:
    """Replace the contents of the database with a dump (pg_restore --clean, one
    transaction: all or nothing). Without --yes it only says what it would do (exit 2)."""
    url = current_app.config["SERVICE_CONFIG"].owner_url
    try:
        if not dump.is_file():
            raise LifecycleError(f"no such backup file: {dump}")
        if not yes:
            click.echo(f"restore: would replace the contents of {mask_url(url)} with "
                       f"{describe_dump(dump)}; nothing done. Run again with --yes to do it.",
                       err=True)
            sys.exit(2)
        restore_backup(url, dump)
    except (ConfigError, LifecycleError) as exc:
        log.error("restore failed: %s", exc)
        sys.exit(1)


backfill_cli = AppGroup("backfill", help="Background data migrations registered by revisions.")
migrations_cli.add_command(backfill_cli)


@backfill_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects instead.")
def backfill_status(as_json: bool) -> None:
    """Each background migration: state, rows done of the estimated total, rate and ETA."""
    try:
        rows = backfill_runner.status(current_app.config["SERVICE_CONFIG"].owner_url)
    except (ConfigError, LifecycleError) as exc:
        log.error("backfill status failed: %s", exc)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no background migrations registered")
        return
    table = [("NAME", "REVISION", "TABLE", "STATE", "ROWS DONE/TOTAL", "ROWS/S", "ETA")]
    for row in rows:
        rate, eta = row["rows_per_second"], row["eta_seconds"]
        table.append((row["name"], row["revision"], row["table"], row["state"],
                      f"{row['rows_done']}/{'' if row['state'] == 'done' else '~'}"
                      f"{row['rows_total']}",
                      f"{rate:.0f}" if rate else "-",
                      f"{eta}s" if eta is not None else "-"))
    widths = [max(len(str(line[i])) for line in table) for i in range(len(table[0]))]
    for line in table:
        cells = (str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        click.echo("  ".join(cells).rstrip())
    for row in rows:
        if row["error"]:
            click.echo(f"{row['name']} failed: {row['error']}")


@backfill_cli.command("run")
@click.option("--log-every", default=10, show_default=True, type=click.IntRange(min=1),
              help="A progress line every N batches.")
def backfill_run(log_every: int) -> None:
    """Apply the pending background migrations in resumable batches; exit 0 when all are
    done, 1 when one failed or the database was lost, 128 + the signal's number (143 for
    SIGTERM) when stopped by one. Safe to run in several replicas at once: each migration
    has one runner. On a terminal, each migration's progress is one line redrawn in place;
    logs sent to a pipe or a file get the log lines alone."""
    settings = current_app.config["SERVICE_CONFIG"]
    with backfill_progress.progress_on(sys.stderr) as progress:
        try:
            failures = backfill_runner.run_all(settings.owner_url, settings, log_every,
                                               progress)
        except backfill_runner.BackfillInterrupted as exc:
            log.error("backfill run %s", exc)
            # The status a shell gives a process that this signal killed: what the runner
            # exited with before it stopped on signals, so supervisors see the same code.
            sys.exit(128 + exc.signum)
        except (ConfigError, LifecycleError) as exc:
            log.error("backfill run failed: %s", exc)
            sys.exit(1)
    if failures:
        sys.exit(1)


@migrations_cli.command("post-deploy")
def post_deploy() -> None:
    """Apply the post-deploy (contract) revisions, once every replica serves the release.

    Refuses, changing nothing, while a pre-deploy revision they need is pending or a
    background migration they rely on is unfinished (it names it). Exit 0 when done.
    """
    try:
        applied = apply_post_deploy(current_app)
    except (ConfigError, LifecycleError) as exc:
        log.error("post-deploy refused: %s", exc)
        sys.exit(1)
    click.echo(f"applied {len(applied)} post-deploy revision(s): {', '.join(applied)}"
               if applied else "nothing to apply: no post-deploy revision is pending")
