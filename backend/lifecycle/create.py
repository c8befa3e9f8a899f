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


def summarize(path: Path) -> str:
    """One line naming the operations of the revision's upgrade(), e.g. add_column(tasks)."""
    text = path.read_text()
    body = text.split("def upgrade", 1)[-1].split("def downgrade", 1)[0]
    calls = [f"{name}({target})" if target else name for name, target in _OP_CALL.findall(body)]
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
    print(f"  upgrade: {summarize(path)}")
    print("  review it, then apply with `flask db upgrade` (or restart the service)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
