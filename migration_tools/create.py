"""``scripts/create_migration.sh "message"``: autogenerate one revision, or refuse.

Every refusal happens before Alembic writes anything, and if anything fails after the
file exists, the file is removed: a refused run leaves the tree as it found it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from flask import Flask

from backend import create_app
from backend.config import Config, ConfigError, database_url_setting
from backend.extensions import db
from backend.logs import configure_logging
from backend.migrate import LifecycleError
from backend.migrate.revisions import ahead_note, find_revision, schema_status
from backend.migrate.upgrade import upgrade_to_head
from backend.postgres import describe_error
from migration_tools.branches import flask_command, ways_out
from migration_tools.embedded import database_url_or_embedded

log = logging.getLogger("backend.lifecycle")
USAGE = 'usage: scripts/create_migration.sh "what changed"'
_OP_CALL = re.compile(r"op\.(\w+)\(\s*(?:op\.f\()?['\"]?([\w.]*)")


# Operations that change columns or rows that already hold data: their revision deserves
# a data fixture (tests/migrations/data/<rev>.py) proving the rows survive.
TOUCHES_EXISTING = {"alter_column", "drop_column", "create_check_constraint",
                    "create_unique_constraint", "create_foreign_key", "drop_constraint",
                    "execute", "bulk_insert"}


def upgrade_ops(path: Path) -> list[tuple[str, str]]:
    """(operation, target) for each ``op.*`` call in the revision's upgrade()."""
    body = path.read_text().split("def upgrade", 1)[-1].split("def downgrade", 1)[0]
    return _OP_CALL.findall(body)


def summarize(ops: list[tuple[str, str]]) -> str:
    """One line naming the operations, e.g. add_column(tasks)."""
    calls = [f"{name}({target})" if target else name for name, target in ops]
    return ", ".join(calls) if calls else "no operations"


def create_revision(app: Flask, message: str, catch_up: bool = False) -> Path:
    """Autogenerate a revision for the model changes; return the new file's path.

    The database is read only to diff the models against it. With ``catch_up`` (the
    embedded development database, which is ours to change), a database with pending
    revisions is brought to head first; any other is refused, and one at another branch's
    revision (after a git switch) gets the ways out.
    """

    with app.app_context():
        migrate_ext = app.extensions["migrate"]
        scripts = ScriptDirectory(migrate_ext.directory)
        try:
            with db.engine.connect() as connection:
                status = schema_status(connection, scripts)
        except Exception as exc:
            raise LifecycleError(f"cannot reach the database: {describe_error(exc)}") from None
        if len(status.head) > 1:
            raise LifecycleError(status.reason or "several heads")
        unknown = [rev for rev in status.current if find_revision(scripts, rev) is None]
        if unknown and not status.ahead:  # another branch's revision, after a git switch
            raise LifecycleError(ways_out(scripts, unknown, embedded=catch_up))
        if status.ahead:  # autogenerate would write a revision undoing the newer release's
            raise LifecycleError(f"{ahead_note(status.ahead, status.head)}: pull the newer "
                                 "code first, then create the revision on top of it")
        # Pending revisions are only listed when nothing worse (an unknown revision, an
        # edited one) was found, so a database with pending ones is safe to bring up.
        if status.pending and catch_up:
            print(f"create_migration: the development database was {len(status.pending)} "
                  "revision(s) behind; bringing it to head first", file=sys.stderr)
            upgrade_to_head(app)
        elif status.reason:
            raise LifecycleError(
                f"the database is not at head ({status.reason}): apply them first with "
                f"`{flask_command()} db upgrade` (same DATABASE_URL), then create the "
                "new revision"
            )
        versions = Path(scripts.versions)
        before = set(versions.glob("*.py"))
        try:
            # Alembic's "Generating ... done" is progress: stdout holds only our summary.
            with contextlib.redirect_stdout(sys.stderr):
                command.revision(migrate_ext.migrate.get_config(opts=["autogenerate"]),
                                 message=message, autogenerate=True)
        except BaseException:
            for leftover in set(versions.glob("*.py")) - before:
                leftover.unlink()
            raise
        created = sorted(set(versions.glob("*.py")) - before)
        if not created:
            raise LifecycleError("the models have no change against the database: "
                                 "nothing to migrate, no file written")
        return created[0]


def _give_to_directory_owner(path: Path) -> None:
    """Run as root (the development container, on a bind-mounted checkout), the new file
    would be root's on the host: give it to whoever owns ``migrations/versions``."""
    if os.geteuid() != 0:
        return
    owner = path.parent.stat()
    if (owner.st_uid, owner.st_gid) != (0, 0):
        os.chown(path, owner.st_uid, owner.st_gid)


def main(argv: list[str]) -> int:
    message = " ".join(argv).strip()
    if not message:
        print(f"create_migration: a message is required. {USAGE}", file=sys.stderr)
        return 2

    configure_logging()
    embedded = not database_url_setting()
    with database_url_or_embedded() as url:
        try:
            app = create_app(Config.for_url(url))
            path = create_revision(app, message, catch_up=embedded)
        except (ConfigError, LifecycleError) as exc:
            print(f"create_migration: refused: {exc}", file=sys.stderr)
            return 1
    _give_to_directory_owner(path)
    print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    ops = upgrade_ops(path)
    print(f"  upgrade: {summarize(ops)}")
    touching = [name for name, _ in ops if name in TOUCHES_EXISTING]
    if touching:
        revision = path.name.split("_")[2]
        print(f"  it changes existing data ({', '.join(sorted(set(touching)))}): add rows and "
              f"checks for it in tests/migrations/data/{revision}.py (README, 'Testing "
              "migrations')")
    print(f"  review it, then apply it with `{flask_command()} db upgrade` (or restart "
          "the service)")
    print("  before a release: scripts/check_compat.sh (does the previous release still work "
          "on it?)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
