"""What the migration tests share: our app wired to pytest-alembic, and facts about revisions.

pytest-alembic runs ``migrations/env.py`` itself and hands it the engine under test in
``config.attributes["connection"]``. Our env.py reads the Flask app (``current_app``) for its
settings and metadata, so every run happens inside an app built for the test database; the
Alembic config is Flask-Migrate's own (``script_location`` is set in code, not in
``alembic.ini``), so the tests load exactly the files ``flask db upgrade`` loads.

Nothing here runs in the service: it is imported by the tests only, and pytest-alembic is a
development dependency, imported when a test asks for its config.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from backend.config import Config
from migration_tools.fingerprint import BOOKKEEPING
from migration_tools.row_loss import expected_row_loss

if TYPE_CHECKING:
    import pytest_alembic.config
    from alembic.script import Script, ScriptDirectory
    from flask import Flask

# How a revision steps out of its transaction (for CREATE INDEX CONCURRENTLY).
_LEAVES_TRANSACTION = re.compile(r"\bautocommit_block\s*\(")


def harness_settings(url: URL) -> Config:
    """Production settings, except that a lock wait fails at once instead of retrying with
    pauses: in a throwaway database nothing else holds a lock, so a wait is a test bug (a
    connection left in a transaction) and should say so in seconds, not after half a minute
    of retries.
    """
    return Config(database_url=url, migration_retries=1, migration_lock_wait=10.0)


@dataclass
class MigrationSession:
    """An app built for one test database, with its context pushed, and its engine."""

    app: Flask
    engine: Engine

    def alembic_config(self, directory: Path | None = None,
                       **options: Any) -> pytest_alembic.config.Config:
        """pytest-alembic's config around Flask-Migrate's Alembic config for this app.

        ``directory`` is a migrations directory other than the app's (a project copy's, with
        revisions a test wrote); ``options`` are pytest-alembic's own
        (``before_revision_data``, ``skip_revisions``...).
        """
        from pytest_alembic.config import Config as PytestAlembicConfig

        migrate = self.app.extensions["migrate"].migrate
        config = migrate.get_config(directory=None if directory is None else str(directory))
        # Some checks copy the config by reading alembic.ini again, with ``config_args`` as
        # defaults: the script_location Flask-Migrate sets in code must travel there too.
        config.config_args["script_location"] = config.get_main_option("script_location")
        return PytestAlembicConfig(alembic_config=config, **options)


@contextlib.contextmanager
def migration_session(url: URL) -> Iterator[MigrationSession]:
    """Build the app for ``url`` and keep its context pushed while the block runs, as
    ``flask db`` does around env.py; close every pooled connection afterwards, so the
    database can be dropped or used as a template."""
    from backend import create_app
    from backend.extensions import db

    app = create_app(harness_settings(url))
    with app.app_context():
        try:
            yield MigrationSession(app=app, engine=db.engine)
        finally:
            db.engine.dispose()


def leaves_transaction(script: Script) -> bool:
    """Whether a revision steps out of its transaction (``autocommit_block``, needed by
    ``CREATE INDEX CONCURRENTLY``). Such a revision cannot run inside a check that rolls
    every step back in one transaction."""
    return bool(_LEAVES_TRANSACTION.search(script_source(script)))


def script_source(script: Script) -> str:
    """The revision file's text, as written (comments included)."""
    with open(script.path, encoding="utf-8") as handle:
        return handle.read()


def transaction_leaving_revisions(scripts: ScriptDirectory) -> list[str]:
    """Every revision that uses ``autocommit_block``, oldest first."""
    return [script.revision for script in reversed(list(scripts.walk_revisions()))
            if leaves_transaction(script)]


def newest_merge(scripts: ScriptDirectory) -> str | None:
    """The newest merge revision, the floor for pytest-alembic's downgrade check.

    That check walks the history as one line; across two branches its line steps from one
    branch's tip to the other's, where "down one" undoes the wrong branch and the check fails
    a history that is fine. Below the newest merge it only upgrades; the downgrades there are
    proved by ``scripts/verify_migrations.sh``, which follows each revision's own parents.
    """
    for script in scripts.walk_revisions():  # newest first
        if script.is_merge_point:
            return script.revision
    return None


def row_counts(connection: Connection) -> dict[str, int]:
    """Rows in every table of the current schema but the migration bookkeeping, in one
    round trip. Reads in the caller's transaction, so uncommitted rows count."""
    tables = [name for (name,) in connection.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"))
        if name not in BOOKKEEPING]
    if not tables:
        return {}
    query = " UNION ALL ".join(
        f"SELECT '{name}', count(*) FROM \"{name}\"" for name in tables)
    return {name: count for name, count in connection.execute(text(query))}


def declared_row_loss(script: Script) -> dict[str, str]:
    """The tables a revision says it empties on purpose, with the reason, from its
    ``# rehearse: expect-row-loss <table> <reason>`` lines. A line without a reason is an
    error: like ``squawk-ignore``, an exception must say why."""
    declared, invalid = expected_row_loss(script.path)
    if invalid:
        raise ValueError(f"{script.revision}: `# rehearse: expect-row-loss` for {invalid} "
                         "gives no reason; write `# rehearse: expect-row-loss <table> <reason>`")
    return declared


def url_for_config_file(url: URL) -> tuple[URL, dict[str, str]]:
    """``url`` without the parts that render with ``%`` escapes (a socket directory in
    ``?host=``, a password), and the libpq variables that carry them instead.

    pytest-alembic hands a URL to a fresh interpreter through an ``alembic.ini`` option, and
    ConfigParser reads ``%`` as the start of an interpolation.
    """
    env = {}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    for key, variable in (("host", "PGHOST"), ("port", "PGPORT")):
        value = url.query.get(key)
        if isinstance(value, str):
            env[variable] = value
    return url.set(password=None).difference_update_query(["host", "port"]), env
