"""``scripts/reset_dev_database.sh``: back the embedded development database up, then
rebuild it at this checkout's head.

The way out of a development database that another branch migrated, when its rows do not
matter enough to go back to that branch and roll it back there. Only ever the embedded
development database (``.data/postgres``): with ``DATABASE_URL`` set it refuses, since a
database someone named may be anything, production included. The backup comes first,
through the same ``pg_dump`` machinery as ``scripts/backup.sh``; if it fails, nothing else
happens. Then the database is dropped, created empty and upgraded to head, exactly as the
entrypoint would upgrade it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sqlalchemy.engine import URL

from backend import create_app
from backend.config import Config, ConfigError, database_url_setting, parse_database_url
from backend.extensions import db
from backend.logs import configure_logging
from backend.migrate import LifecycleError
from backend.migrate.backup import current_revision, take_backup
from backend.migrate.database import run_sql
from backend.migrate.revisions import current_revisions, label
from backend.migrate.upgrade import upgrade_to_head
from migration_tools import scratch
from migration_tools.command_line import progress
from migration_tools.embedded import DATA_DIR, DATABASE, ROOT, embedded_database_url

PROG = "reset_dev_database"
SCRIPT = "scripts/reset_dev_database.sh"
# Beside the other dumps, in a folder of its own: the pre-migration dumps prune their folder
# to BACKUP_KEEP, and must not prune away the database a reset replaced.
BACKUP_SUBDIR = "reset"


def _shown(path: Path) -> str:
    """A path as the user can type it where they stand (scripts run from the root)."""
    here = Path(os.environ.get("CALLER_DIR") or os.getcwd()).resolve()
    try:
        return os.path.relpath(path, here) if path.resolve().is_relative_to(ROOT) else str(path)
    except ValueError:
        return str(path)


def _other_connections(url: URL) -> int:
    rows = run_sql(url.set(database="postgres"),
                   "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                   f"'{DATABASE}' AND pid <> pg_backend_pid()", PROG)
    return int(rows[0][0])


def reset(url: URL, settings: Config) -> tuple[Path, list[str]]:
    """Back up, drop, create, upgrade; return the backup and the revisions now applied.
    Refuses while anything else is connected: dropping would cut it off mid-request."""
    busy = _other_connections(url)
    if busy:
        raise LifecycleError(f"the embedded development database is in use ({busy} other "
                             "connection(s): is `make run` running?): stop it, then run "
                             f"{SCRIPT} again")
    current = current_revision(url)
    backup = take_backup(url, settings.backup_dir / BACKUP_SUBDIR, current, current,
                         settings.backup_keep)
    progress(PROG, f"backed up the database (at {label(current)}) to {_shown(backup)}")
    server = url.set(database="postgres")
    scratch.drop_database(server, DATABASE, PROG)
    scratch.create_database(server, DATABASE, application_name=PROG)
    progress(PROG, "dropped it and created it empty; upgrading to this checkout's head")
    app = create_app(Config.for_url(url))
    try:
        with app.app_context():
            upgrade_to_head(app)
            with db.engine.connect() as connection:
                now = current_revisions(connection)
    finally:
        with app.app_context():
            db.engine.dispose()
    return backup, now


def main(argv: list[str]) -> int:
    """0 when rebuilt; 1 on a refusal or a failed step (one line saying which); 2 on usage."""
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: {SCRIPT}\n{__doc__.splitlines()[0]}")
        return 0
    if argv:
        progress(PROG, f"unexpected argument {argv[0]!r}. usage: {SCRIPT}")
        return 2
    configure_logging()
    if database_url_setting():
        progress(PROG, "refused: DATABASE_URL is set, and this resets only the embedded "
                       f"development database ({DATA_DIR.relative_to(ROOT)}); unset "
                       "DATABASE_URL to reset that one, or roll the named database back with "
                       "`flask db downgrade`")
        return 1
    if not DATA_DIR.is_dir():
        progress(PROG, f"there is no embedded development database yet "
                       f"({DATA_DIR.relative_to(ROOT)}): `make run` creates one at head")
        return 0
    try:
        with embedded_database_url() as raw:
            url = parse_database_url(raw)
            settings = Config.for_url(url)
            backup, now = reset(url, settings)
    except (ConfigError, LifecycleError) as exc:
        progress(PROG, f"failed: {exc}")
        return 1
    progress(PROG, f"done: the embedded development database is at {label(now)} (this "
                   "checkout's head), with empty tables")
    progress(PROG, f"the old database is in {_shown(backup)}; on the branch that has its "
                   f"revisions, `scripts/restore.sh {_shown(backup)} --yes` brings it back")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
