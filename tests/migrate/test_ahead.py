"""Older code on a newer schema: what a rolling deploy and a code rollback need.

Release N+1 (a project copy with one expand revision) migrates the database; release N
(the fixture project, one revision behind) must keep serving on it, and must not try to
move it.
"""

from __future__ import annotations

import json

import pytest

from testkit.support import (
    FIXTURE_REVISIONS,
    app_get,
    execute_sql,
    fixture_project,
    probe_entrypoint,
    run_entrypoint,
    run_python,
    write_revision,
)
from tests.conftest import run_flask

NEXT = "a1b2c3d4e5f6"


@pytest.fixture
def newer(fixture_db, tmp_path):
    """The database migrated by release N+1: a nullable column on widgets, on top of N's head."""
    repo = fixture_project(tmp_path / "next")
    write_revision(repo, NEXT, FIXTURE_REVISIONS[-1], "add widget estimate",
                   upgrade='op.add_column("widgets", sa.Column("probe_estimate", sa.Integer()))',
                   downgrade='op.drop_column("widgets", "probe_estimate")')
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)
    return fixture_db


def version(url) -> list[str]:
    return [v for (v,) in execute_sql(url, "SELECT version_num FROM alembic_version")]


def test_older_code_starts_and_serves_on_a_newer_schema(newer, fixture_repo, tmp_path):
    # Act
    status, body, _ = probe_entrypoint(fixture_repo, newer, tmp_path / "out.log")

    # Assert
    log = (tmp_path / "out.log").read_text()
    assert status == 200, body
    assert f'"ahead": ["{NEXT}"]' in body and '"pending": []' in body
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "ahead of this code" in warnings[0]
    assert version(newer) == [NEXT]


WRITE_AND_READ = """
import json
from backend import create_app

client = create_app().test_client()
created = client.post("/api/widgets", json={"name": "written by N"})
read = client.get(f"/api/widgets/{created.get_json()['id']}")
print(json.dumps({"created": [created.status_code, created.get_json()],
                  "read": [read.status_code, read.get_json()],
                  "ahead": client.get("/readyz").get_json()["ahead"]}))
"""


def test_older_code_reads_and_writes_through_the_api_on_a_newer_schema(newer, fixture_repo):
    # Act: release N's app, in process, on the schema N+1 migrated.
    proc = run_python(fixture_repo, WRITE_AND_READ, newer)

    # Assert
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["created"][0] == 201 and seen["created"][1]["name"] == "written by N"
    assert seen["read"] == [200, seen["created"][1]]
    assert seen["ahead"] == [NEXT]
    assert execute_sql(newer, "SELECT name, probe_estimate FROM widgets") == \
        [("written by N", None)]


def test_flask_db_upgrade_is_a_no_op_that_says_why(newer, fixture_repo):
    proc = run_flask(["db", "upgrade"], newer, cwd=fixture_repo)

    assert "ahead of this code" in proc.stderr
    assert version(newer) == [NEXT]


def test_flask_db_downgrade_from_older_code_refuses(newer, fixture_repo):
    proc = run_flask(["db", "downgrade"], newer, cwd=fixture_repo, check=False)

    assert proc.returncode != 0
    assert "this code has no script for" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert version(newer) == [NEXT]


def test_strict_mode_refuses_a_newer_schema(newer, fixture_repo, tmp_path):
    code, output, _ = run_entrypoint(fixture_repo, newer, tmp_path, MIGRATION_ALLOW_AHEAD="0")
    status, _ = app_get(fixture_repo, newer, "/readyz", MIGRATION_ALLOW_AHEAD="0")

    assert code != 0
    assert "MIGRATION_ALLOW_AHEAD=0 refuses" in output
    assert status == 503


def test_a_database_that_never_held_this_codes_head_is_refused(newer, fixture_repo, tmp_path):
    # Arrange: no record of this code's head ever being applied there.
    execute_sql(newer, "DELETE FROM migration_checksums")

    code, output, _ = run_entrypoint(fixture_repo, newer, tmp_path)

    assert code != 0
    assert "never held this code's head" in output
    assert version(newer) == [NEXT]


CREATE = """
from backend import create_app
from backend.migrate import LifecycleError
from migration_tools.create import create_revision

try:
    create_revision(create_app(), "anything")
except LifecycleError as exc:
    print(f"refused: {exc}")
"""


def test_create_migration_refuses_a_newer_schema(newer, tmp_path):
    # Arrange: release N's checkout, with a model change to write a revision for.
    repo = fixture_project(tmp_path / "n")
    models = repo / "backend/models/__init__.py"
    models.write_text(models.read_text().replace(
        "    size: Mapped[int | None] = mapped_column(sa.Integer)\n",
        "    size: Mapped[int | None] = mapped_column(sa.Integer)\n"
        "    colour: Mapped[str | None] = mapped_column(sa.String(20))\n"))
    assert "colour" in models.read_text()
    before = sorted((repo / "migrations/versions").iterdir())

    # Act
    proc = run_python(repo, CREATE, newer)

    # Assert
    assert proc.returncode == 0, proc.stderr
    assert "refused: " in proc.stdout and "pull the newer code first" in proc.stdout
    assert sorted((repo / "migrations/versions").iterdir()) == before
