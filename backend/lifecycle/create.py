"""``scripts/create_migration.sh "message"``: autogenerate one revision, or refuse.

Every refusal happens before Alembic writes anything, and if anything fails after the
file exists, the file is removed: a refused run leaves the tree as it found it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory

from backend.lifecycle import LifecycleError

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


def create_revision(message: str) -> Path:
    """Autogenerate a revision for the model changes; return the new file's path."""
    from backend import create_app
    from backend.config import Config
    from backend.extensions import db
    from backend.lifecycle.database import describe_error
    from backend.lifecycle.revisions import schema_status

    app = create_app(Config.from_env())
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
        if status.reason:
            raise LifecycleError(
                f"the database is not at head ({status.reason}): apply them first with "
                "`flask db upgrade`, then create the new revision"
            )
        versions = Path(scripts.versions)
        before = set(versions.glob("*.py"))
        try:
            command.revision(migrate_ext.migrate.get_config(opts=["autogenerate"]), message=message,
                             autogenerate=True)
        except BaseException:
            for leftover in set(versions.glob("*.py")) - before:
                leftover.unlink()
            raise
        created = sorted(set(versions.glob("*.py")) - before)
        if not created:
            raise LifecycleError("the models have no change against the database: "
                                 "nothing to migrate, no file written")
        return created[0]


def main(argv: list[str]) -> int:
    message = " ".join(argv).strip()
    if not message:
        print(f"create_migration: a message is required. {USAGE}", file=sys.stderr)
        return 2
    from backend.config import ConfigError
    from backend.lifecycle.embedded import database_url_or_embedded
    from backend.logs import configure_logging

    configure_logging()
    with database_url_or_embedded() as url:
        os.environ["DATABASE_URL"] = url
        try:
            path = create_revision(message)
        except (ConfigError, LifecycleError) as exc:
            print(f"create_migration: refused: {exc}", file=sys.stderr)
            return 1
    print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    ops = upgrade_ops(path)
    print(f"  upgrade: {summarize(ops)}")
    touching = [name for name, _ in ops if name in TOUCHES_EXISTING]
    if touching:
        revision = path.name.split("_")[2]
        print(f"  it changes existing data ({', '.join(sorted(set(touching)))}): add rows and "
              f"checks for it in tests/migrations/data/{revision}.py (README, 'Testing "
              "migrations')")
    print("  review it, then apply with `flask db upgrade` (or restart the service)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
