"""Taking over a database that stock Flask-Migrate already migrated.

A team adopting the service brings a database that a plain ``flask db upgrade`` (Flask-Migrate's
own env.py: no lock, no checksums) has migrated for years. The first start of our entrypoint
must take it as it is: no revision run twice, the checksums of the applied revisions recorded
once, what is pending applied, the rows kept, and /readyz 200 (docs/adopting.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from testkit.support import (
    FIXTURE_REVISIONS,
    VENV_BIN,
    child_env,
    execute_sql,
    fixture_project,
    probe_entrypoint,
)

# The smallest Flask-Migrate application, as its documentation writes one.
STOCK_APP = '''\
import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
db = SQLAlchemy(app)
migrate = Migrate(app, db)
'''


def stock_flask_db(stock: Path, url, *args: str) -> None:
    """``flask --app app db ARGS`` in the stock application's folder, as its team runs it."""
    proc = subprocess.run([str(Path(VENV_BIN) / "flask"), "--app", "app", "db", *args],
                          cwd=stock, env=child_env(url), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"stock flask db {' '.join(args)}: {proc.stderr}"


def stock_project(tmp_path: Path, fixture: Path, url) -> Path:
    """A stock Flask-Migrate project (``flask db init``: its own env.py) holding the same
    revision files as the fixture application."""
    stock = tmp_path / "stock"
    stock.mkdir()
    (stock / "app.py").write_text(STOCK_APP)
    stock_flask_db(stock, url, "init")
    for revision in (fixture / "migrations/versions").glob("*.py"):
        shutil.copy2(revision, stock / "migrations/versions" / revision.name)
    return stock


@pytest.mark.parametrize("stock_target", ["head", FIXTURE_REVISIONS[0]],
                         ids=["stock-at-head", "stock-behind"])
def test_entrypoint_takes_over_a_database_stock_flask_migrate_migrated(
        tmp_path, empty_db, stock_target):
    # Arrange: stock Flask-Migrate migrates the database and the application writes rows.
    repo = fixture_project(tmp_path / "repo")
    stock = stock_project(tmp_path, repo, empty_db)
    stock_flask_db(stock, empty_db, "upgrade", stock_target)
    execute_sql(empty_db, "INSERT INTO widgets (name) VALUES ('kept'), ('also kept')")
    assert execute_sql(empty_db, "SELECT to_regclass('migration_checksums')") == [(None,)]

    # Act: our entrypoint's first start on it.
    status, body, _ = probe_entrypoint(repo, empty_db, tmp_path / "entrypoint.log")

    # Assert: serving at head, every revision's checksum recorded once, no row lost.
    log = (tmp_path / "entrypoint.log").read_text()
    assert status == 200, log
    assert json.loads(body)["current"] == [FIXTURE_REVISIONS[-1]]
    applied_by_stock = 2 if stock_target == "head" else 1
    assert f"recorded checksums of {applied_by_stock} revision(s) applied earlier" in log, log
    recorded = execute_sql(empty_db, "SELECT revision FROM migration_checksums ORDER BY 1")
    assert recorded == [(rev,) for rev in FIXTURE_REVISIONS]
    assert execute_sql(empty_db, "SELECT name FROM widgets ORDER BY id") == [
        ("kept",), ("also kept",)]


def test_a_taken_over_database_starts_again_without_recording_anything(tmp_path, empty_db):
    # Arrange: a stock-migrated database our entrypoint has already taken over once.
    repo = fixture_project(tmp_path / "repo")
    stock_flask_db(stock_project(tmp_path, repo, empty_db), empty_db, "upgrade")
    assert probe_entrypoint(repo, empty_db, tmp_path / "first.log")[0] == 200

    # Act
    status, _, _ = probe_entrypoint(repo, empty_db, tmp_path / "second.log")

    # Assert: the checksums were kept from the first start; nothing is recorded again.
    log = (tmp_path / "second.log").read_text()
    assert status == 200, log
    assert "recorded checksums" not in log, log
