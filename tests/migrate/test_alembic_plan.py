"""The one reader of Alembic's private plan: if an Alembic upgrade moves or reshapes it,
these fail here, naming it, instead of on a deploy."""

from __future__ import annotations

import shutil

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig

from testkit.support import FIXTURE_REVISIONS, url_text

# An env.py that applies nothing: it asks our adapter what the command is and plans to do.
RECORDING_ENV = '''
from alembic import context
from sqlalchemy import create_engine

from backend.migrate.alembic_plan import command_name, planned_steps

engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection)
    ctx = context.get_context()
    context.config.attributes["seen"] = (
        command_name(ctx), [(s.revision.revision, s.is_upgrade) for s in planned_steps(ctx)])
engine.dispose()
'''


@pytest.fixture
def recording_config(fixture_repo, tmp_path, empty_db) -> AlembicConfig:
    scripts = tmp_path / "migrations"
    shutil.copytree(fixture_repo / "migrations/versions", scripts / "versions")
    shutil.copy2(fixture_repo / "migrations/script.py.mako", scripts)
    (scripts / "env.py").write_text(RECORDING_ENV)
    config = AlembicConfig()
    config.set_main_option("script_location", str(scripts))
    config.set_main_option("sqlalchemy.url", url_text(empty_db).replace("%", "%%"))
    return config


def test_an_upgrade_is_named_and_its_steps_are_the_pending_revisions(recording_config):
    command.upgrade(recording_config, "head")

    name, steps = recording_config.attributes["seen"]
    assert name == "upgrade"
    assert steps == [(rev, True) for rev in FIXTURE_REVISIONS]


def test_a_downgrade_is_named_as_one(recording_config):
    command.downgrade(recording_config, "base")

    name, steps = recording_config.attributes["seen"]
    assert name == "downgrade"
    assert steps == []  # an empty database: nothing to undo
