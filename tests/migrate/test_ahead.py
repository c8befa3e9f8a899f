"""Older code on a newer schema: what a rolling deploy and a code rollback need.

Release N+1 (a repository copy with one expand revision) migrates the database; release N
(this checkout) must keep serving on it, and must not try to move it.
"""

from __future__ import annotations

import pytest

from backend import create_app
from backend.config import Config
from backend.migrate import LifecycleError
from migration_tools.create import create_revision
from testkit.support import (
    ROOT,
    copy_repository,
    head_revision,
    probe_entrypoint,
    run_entrypoint,
    write_revision,
)
from tests.conftest import execute_sql, run_flask

NEXT = "a1b2c3d4e5f6"


@pytest.fixture
def newer(head_db, tmp_path):
    """The database migrated by release N+1: a nullable column on tasks, on top of N's head."""
    repo = copy_repository(tmp_path / "next")
    write_revision(repo, NEXT, head_revision(repo), "add task estimate",
                   upgrade='op.add_column("tasks", sa.Column("probe_estimate", sa.Integer()))',
                   downgrade='op.drop_column("tasks", "probe_estimate")')
    run_flask(["db", "upgrade"], head_db, cwd=repo)
    return head_db


def version(url) -> list[str]:
    return [v for (v,) in execute_sql(url, "SELECT version_num FROM alembic_version")]


def test_older_code_starts_and_serves_on_a_newer_schema(newer, tmp_path):
    # Act
    status, body, _ = probe_entrypoint(ROOT, newer, tmp_path / "out.log")

    # Assert
    log = (tmp_path / "out.log").read_text()
    assert status == 200, body
    assert f'"ahead": ["{NEXT}"]' in body and '"pending": []' in body
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "ahead of this code" in warnings[0]
    assert version(newer) == [NEXT]


def test_older_code_reads_and_writes_through_the_api_on_a_newer_schema(newer):
    client = create_app(Config(database_url=newer)).test_client()

    user = client.post("/api/users", json={"email": "a@example.com", "name": "A"}).get_json()
    project = client.post("/api/projects", json={"owner_id": user["id"], "name": "P"})
    task = client.post("/api/tasks", json={"project_id": project.get_json()["id"],
                                           "title": "written by N"})

    assert task.status_code == 201
    assert client.get(f"/api/tasks/{task.get_json()['id']}").status_code == 200
    assert client.get("/readyz").get_json()["ahead"] == [NEXT]


def test_flask_db_upgrade_is_a_no_op_that_says_why(newer):
    proc = run_flask(["db", "upgrade"], newer)

    assert "ahead of this code" in proc.stderr
    assert version(newer) == [NEXT]


def test_flask_db_downgrade_from_older_code_refuses(newer):
    proc = run_flask(["db", "downgrade"], newer, check=False)

    assert proc.returncode != 0
    assert "this code has no script for" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert version(newer) == [NEXT]


def test_strict_mode_refuses_a_newer_schema(newer, tmp_path):
    code, output, _ = run_entrypoint(ROOT, newer, tmp_path, MIGRATION_ALLOW_AHEAD="0")
    client = create_app(Config(database_url=newer, allow_ahead=False)).test_client()

    assert code != 0
    assert "MIGRATION_ALLOW_AHEAD=0 refuses" in output
    assert client.get("/readyz").status_code == 503


def test_a_database_that_never_held_this_codes_head_is_refused(newer, tmp_path):
    # Arrange: no record of this code's head ever being applied there.
    execute_sql(newer, "DELETE FROM migration_checksums")

    code, output, _ = run_entrypoint(ROOT, newer, tmp_path)

    assert code != 0
    assert "never held this code's head" in output
    assert version(newer) == [NEXT]


def test_create_migration_refuses_a_newer_schema(newer):
    with pytest.raises(LifecycleError, match="pull the newer code first"):
        create_revision(create_app(Config(database_url=newer)), "anything")
