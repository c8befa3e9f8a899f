"""Drive Alembic in-process against a test database, through our env.py."""

from __future__ import annotations

import pytest
from alembic import command

from backend import create_app
from backend.config import Config


class Migrator:
    def __init__(self, url) -> None:
        self.app = create_app(Config(database_url=url))

    def _run(self, fn, *args) -> None:
        with self.app.app_context():
            fn(self.app.extensions["migrate"].migrate.get_config(), *args)

    def upgrade(self, revision: str = "head") -> None:
        self._run(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        self._run(command.downgrade, revision)

    def check(self) -> None:
        self._run(command.check)

    def revisions(self) -> list[str]:
        """Every revision, oldest first."""
        from alembic.script import ScriptDirectory

        with self.app.app_context():
            scripts = ScriptDirectory(self.app.extensions["migrate"].directory)
        return [rev.revision for rev in reversed(list(scripts.walk_revisions()))]

    def close(self) -> None:
        from backend.extensions import db

        with self.app.app_context():
            db.engine.dispose()


@pytest.fixture
def migrator(empty_db):
    m = Migrator(empty_db)
    yield m
    m.close()
