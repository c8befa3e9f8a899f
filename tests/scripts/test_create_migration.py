"""scripts/create_migration.sh: one new revision for a model change, or a clear refusal.

Each test works on a copy of the project serving the fixture application (``widgets``) and
changes its model there, so the proof holds whatever application the checkout serves.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from testkit.support import FIXTURE_REVISIONS, fixture_project, write_revision
from tests.conftest import VENV_BIN, child_env, execute_sql, run_flask

# A column no real model change will add (tests must not collide with yours).
PROBE_COLUMN = "    probe_note: Mapped[str | None] = mapped_column(sa.Text)\n"
NAME_LINE = "    name: Mapped[str] = mapped_column(sa.String(200))\n"
MODELS = "backend/models/__init__.py"


def create_migration(repo: Path, url, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "scripts/create_migration.sh"), *args], cwd=repo,
                          env=child_env(url), capture_output=True, text=True, timeout=120)


def versions(repo: Path) -> set[str]:
    return {p.name for p in (repo / "migrations/versions").glob("*.py")}


def change_model(repo: Path, old: str, new: str) -> None:
    """Edit the fixture's model as a developer would; fail loudly if it no longer reads so."""
    model = repo / MODELS
    text = model.read_text()
    assert old in text, f"{MODELS} of the fixture no longer has {old.strip()!r}"
    model.write_text(text.replace(old, new))


def add_probe_column(repo: Path) -> None:
    change_model(repo, NAME_LINE, NAME_LINE + PROBE_COLUMN)


@pytest.fixture
def repo(tmp_path) -> Path:
    return fixture_project(tmp_path / "repo")


def test_creates_one_revision_for_a_model_change(repo, fixture_db):
    # Arrange
    add_probe_column(repo)
    before = versions(repo)

    # Act
    proc = create_migration(repo, fixture_db, "add widget probe note")

    # Assert
    assert proc.returncode == 0, proc.stderr
    created = versions(repo) - before
    assert len(created) == 1
    name = created.pop()
    assert name.endswith("_add_widget_probe_note.py") and name[:8].isdigit()
    assert f"migrations/versions/{name}" in proc.stdout
    assert "add_column(widgets)" in proc.stdout
    text = (repo / "migrations/versions" / name).read_text()
    assert "op.add_column('widgets', sa.Column('probe_note'" in text
    assert "op.drop_column('widgets', 'probe_note')" in text
    assert "1 revision(s) linted, 0 finding(s)" in proc.stdout + proc.stderr
    assert "changes existing data" not in proc.stdout


def test_points_to_a_data_fixture_when_existing_columns_change(repo, fixture_db):
    # Arrange: widen an existing column.
    change_model(repo, NAME_LINE, NAME_LINE.replace("sa.String(200)", "sa.String(1000)"))
    before = versions(repo)

    # Act
    proc = create_migration(repo, fixture_db, "widen widget names")

    # Assert
    assert proc.returncode == 0, proc.stderr
    (name,) = versions(repo) - before
    revision = name.split("_")[2]
    assert "alter_column(widgets)" in proc.stdout
    assert f"changes existing data (alter_column): add rows and checks for it in " \
           f"tests/migrations/data/{revision}.py" in proc.stdout


@pytest.mark.parametrize("args", [[], [""], ["   "]])
def test_refuses_an_empty_message(repo, fixture_db, args):
    before = versions(repo)

    proc = create_migration(repo, fixture_db, *args)

    assert proc.returncode != 0
    assert "a message is required" in proc.stderr
    assert versions(repo) == before


def test_refuses_when_the_models_did_not_change(repo, fixture_db):
    before = versions(repo)

    proc = create_migration(repo, fixture_db, "nothing changed")

    assert proc.returncode != 0
    assert "no change" in proc.stderr
    assert versions(repo) == before


def test_refuses_when_the_database_is_behind(repo, fixture_db):
    run_flask(["db", "downgrade"], fixture_db, cwd=repo)
    add_probe_column(repo)
    before = versions(repo)

    proc = create_migration(repo, fixture_db, "add widget probe note")

    assert proc.returncode != 0
    assert "not at head" in proc.stderr
    assert "flask db upgrade" in proc.stderr
    assert versions(repo) == before


def test_refuses_when_the_history_has_two_heads(repo, fixture_db):
    # Arrange: two revisions on the same parent, as when two branches each added one.
    parent = execute_sql(fixture_db, "SELECT version_num FROM alembic_version")[0][0]
    for rev in ("aaaa00000001", "bbbb00000002"):
        write_revision(repo, rev, parent, f"branch {rev}")
    add_probe_column(repo)
    before = versions(repo)

    # Act
    proc = create_migration(repo, fixture_db, "add widget probe note")

    # Assert
    assert proc.returncode != 0
    assert "2 heads" in proc.stderr
    assert "aaaa00000001" in proc.stderr and "bbbb00000002" in proc.stderr
    assert "flask db merge" in proc.stderr
    assert versions(repo) == before


def test_refuses_an_unreachable_database_with_a_masked_url(repo, fixture_db):
    url = fixture_db.set(host="127.0.0.1", port=1, query={}, password="Hidd3n")
    add_probe_column(repo)
    before = versions(repo)

    proc = create_migration(repo, url, "add widget probe note")

    assert proc.returncode != 0
    assert "cannot reach the database" in proc.stderr
    assert "Hidd3n" not in proc.stdout + proc.stderr
    assert versions(repo) == before


def test_brings_the_embedded_development_database_to_head_first(repo):
    # Arrange: a fresh clone: no DATABASE_URL, and no embedded database yet.
    add_probe_column(repo)
    before = versions(repo)

    # Act
    proc = create_migration(repo, None, "add widget probe note")

    # Assert
    assert proc.returncode == 0, proc.stderr
    assert (f"development database was {len(FIXTURE_REVISIONS)} revision(s) behind; bringing it "
            "to head first") in proc.stderr
    assert len(versions(repo) - before) == 1


@pytest.mark.parametrize("other_flask", [False, True], ids=["no flask", "another flask"])
def test_the_command_it_suggests_works_in_a_shell_without_the_venv(repo, fixture_db, tmp_path,
                                                                    other_flask):
    # Arrange: a checkout with its .venv, behind head, and a shell whose PATH has no flask,
    # or another one (a global install, a pyenv shim) that knows nothing of this project.
    (repo / ".venv").symlink_to(Path(VENV_BIN).parent)
    run_flask(["db", "downgrade"], fixture_db, cwd=repo)
    add_probe_column(repo)
    path = "/usr/bin:/bin"
    if other_flask:
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin/flask").write_text("#!/bin/sh\necho 'not this project' >&2; exit 2\n")
        (tmp_path / "bin/flask").chmod(0o755)
        path = f"{tmp_path / 'bin'}:{path}"
    env = child_env(fixture_db, PATH=path)
    script = str(repo / "scripts/create_migration.sh")

    # Act
    proc = subprocess.run([script, "add widget probe note"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120)

    # Assert: the printed command, run as printed in that shell, applies what is pending.
    assert proc.returncode != 0
    command = re.search(r"apply them first with `([^`]+)`", proc.stderr).group(1)
    assert command == ".venv/bin/flask db upgrade"
    applied = subprocess.run(command.split(), cwd=repo, env=env, capture_output=True,
                             text=True, timeout=120)
    assert applied.returncode == 0, applied.stderr


def test_the_embedded_database_line_follows_log_format(repo):
    add_probe_column(repo)
    env = child_env(None, LOG_FORMAT="json")

    proc = subprocess.run([str(repo / "scripts/create_migration.sh"), "add widget probe note"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)

    assert proc.returncode == 0, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if "using the embedded PostgreSQL" in ln]
    assert json.loads(line)["level"] == "info"
