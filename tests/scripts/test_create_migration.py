"""scripts/create_migration.sh: one new revision for a model change, or a clear refusal."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from testkit.support import copy_repository, revisions, write_revision
from tests.conftest import VENV_BIN, child_env, execute_sql, run_flask

# A column no real model change will add (tests must not collide with yours).
NOTES_COLUMN = "    probe_note: Mapped[str | None] = mapped_column(sa.Text)\n"
TITLE_LINE = "    title: Mapped[str] = mapped_column(sa.String(500))\n"


def create_migration(repo: Path, url, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "scripts/create_migration.sh"), *args], cwd=repo,
                          env=child_env(url), capture_output=True, text=True, timeout=120)


def versions(repo: Path) -> set[str]:
    return {p.name for p in (repo / "migrations/versions").glob("*.py")}


def add_notes_column(repo: Path) -> None:
    model = repo / "backend/models/task.py"
    model.write_text(model.read_text().replace(TITLE_LINE, TITLE_LINE + NOTES_COLUMN))


@pytest.fixture
def repo(tmp_path) -> Path:
    return copy_repository(tmp_path / "repo")


def test_creates_one_revision_for_a_model_change(repo, head_db):
    # Arrange
    add_notes_column(repo)
    before = versions(repo)

    # Act
    proc = create_migration(repo, head_db, "add task notes")

    # Assert
    assert proc.returncode == 0, proc.stderr
    created = versions(repo) - before
    assert len(created) == 1
    name = created.pop()
    assert name.endswith("_add_task_notes.py") and name[:8].isdigit()
    assert f"migrations/versions/{name}" in proc.stdout
    assert "add_column(tasks)" in proc.stdout
    text = (repo / "migrations/versions" / name).read_text()
    assert "op.add_column('tasks', sa.Column('probe_note'" in text
    assert "op.drop_column('tasks', 'probe_note')" in text
    assert "1 revision(s) linted, 0 finding(s)" in proc.stdout + proc.stderr
    assert "changes existing data" not in proc.stdout


def test_points_to_a_data_fixture_when_existing_columns_change(repo, head_db):
    # Arrange: widen an existing column.
    model = repo / "backend/models/task.py"
    model.write_text(model.read_text().replace("sa.String(500)", "sa.String(1000)"))
    before = versions(repo)

    # Act
    proc = create_migration(repo, head_db, "widen task titles")

    # Assert
    assert proc.returncode == 0, proc.stderr
    (name,) = versions(repo) - before
    revision = name.split("_")[2]
    assert "alter_column(tasks)" in proc.stdout
    assert f"changes existing data (alter_column): add rows and checks for it in " \
           f"tests/migrations/data/{revision}.py" in proc.stdout


@pytest.mark.parametrize("args", [[], [""], ["   "]])
def test_refuses_an_empty_message(repo, head_db, args):
    before = versions(repo)

    proc = create_migration(repo, head_db, *args)

    assert proc.returncode != 0
    assert "a message is required" in proc.stderr
    assert versions(repo) == before


def test_refuses_when_the_models_did_not_change(repo, head_db):
    before = versions(repo)

    proc = create_migration(repo, head_db, "nothing changed")

    assert proc.returncode != 0
    assert "no change" in proc.stderr
    assert versions(repo) == before


def test_refuses_when_the_database_is_behind(repo, head_db):
    run_flask(["db", "downgrade"], head_db, cwd=repo)
    add_notes_column(repo)
    before = versions(repo)

    proc = create_migration(repo, head_db, "add task notes")

    assert proc.returncode != 0
    assert "not at head" in proc.stderr
    assert "flask db upgrade" in proc.stderr
    assert versions(repo) == before


def test_refuses_when_the_history_has_two_heads(repo, head_db):
    # Arrange: two revisions on the same parent, as when two branches each added one.
    parent = execute_sql(head_db, "SELECT version_num FROM alembic_version")[0][0]
    for rev in ("aaaa00000001", "bbbb00000002"):
        write_revision(repo, rev, parent, f"branch {rev}")
    add_notes_column(repo)
    before = versions(repo)

    # Act
    proc = create_migration(repo, head_db, "add task notes")

    # Assert
    assert proc.returncode != 0
    assert "2 heads" in proc.stderr
    assert "aaaa00000001" in proc.stderr and "bbbb00000002" in proc.stderr
    assert "flask db merge" in proc.stderr
    assert versions(repo) == before


def test_refuses_an_unreachable_database_with_a_masked_url(repo, head_db):
    url = head_db.set(host="127.0.0.1", port=1, query={}, password="Hidd3n")
    add_notes_column(repo)
    before = versions(repo)

    proc = create_migration(repo, url, "add task notes")

    assert proc.returncode != 0
    assert "cannot reach the database" in proc.stderr
    assert "Hidd3n" not in proc.stdout + proc.stderr
    assert versions(repo) == before


def test_brings_the_embedded_development_database_to_head_first(repo):
    # Arrange: a fresh clone: no DATABASE_URL, and no embedded database yet.
    add_notes_column(repo)
    before = versions(repo)

    # Act
    proc = create_migration(repo, None, "add task notes")

    # Assert
    assert proc.returncode == 0, proc.stderr
    assert (f"development database was {len(revisions())} revision(s) behind; bringing it "
            "to head first") in proc.stderr
    assert len(versions(repo) - before) == 1


@pytest.mark.parametrize("other_flask", [False, True], ids=["no flask", "another flask"])
def test_the_command_it_suggests_works_in_a_shell_without_the_venv(repo, head_db, tmp_path,
                                                                    other_flask):
    # Arrange: a checkout with its .venv, behind head, and a shell whose PATH has no flask,
    # or another one (a global install, a pyenv shim) that knows nothing of this project.
    (repo / ".venv").symlink_to(Path(VENV_BIN).parent)
    run_flask(["db", "downgrade"], head_db, cwd=repo)
    add_notes_column(repo)
    path = "/usr/bin:/bin"
    if other_flask:
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin/flask").write_text("#!/bin/sh\necho 'not this project' >&2; exit 2\n")
        (tmp_path / "bin/flask").chmod(0o755)
        path = f"{tmp_path / 'bin'}:{path}"
    env = child_env(head_db, PATH=path)
    script = str(repo / "scripts/create_migration.sh")

    # Act
    proc = subprocess.run([script, "add task notes"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120)

    # Assert: the printed command, run as printed in that shell, applies what is pending.
    assert proc.returncode != 0
    command = re.search(r"apply them first with `([^`]+)`", proc.stderr).group(1)
    assert command == ".venv/bin/flask db upgrade"
    applied = subprocess.run(command.split(), cwd=repo, env=env, capture_output=True,
                             text=True, timeout=120)
    assert applied.returncode == 0, applied.stderr


def test_the_embedded_database_line_follows_log_format(repo):
    add_notes_column(repo)
    env = child_env(None, LOG_FORMAT="json")

    proc = subprocess.run([str(repo / "scripts/create_migration.sh"), "add task notes"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)

    assert proc.returncode == 0, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if "using the embedded PostgreSQL" in ln]
    assert json.loads(line)["level"] == "info"
