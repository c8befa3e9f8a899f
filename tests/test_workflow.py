"""The guide's development workflow, end to end, on a copy of the project serving the fixture
application (``widgets``): change a model, create the migration, apply it by (re)starting,
inspect, roll back. The change is one the README's examples never make, so a team following
the README cannot break this test.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy.engine import URL

from testkit.support import (
    FIXTURE_REVISIONS,
    child_env,
    execute_sql,
    fixture_project,
    probe_entrypoint,
)
from tests.conftest import run_flask

SIZE_LINE = "    size: Mapped[int | None] = mapped_column(sa.Integer)\n"
NOTE_LINE = "    probe_note: Mapped[str | None] = mapped_column(sa.String(100))\n"


def add_note_column(repo: Path) -> None:
    """Step 1 of the guide: a nullable column on the fixture's one model."""
    model = repo / "backend/models/__init__.py"
    text = model.read_text()
    assert SIZE_LINE in text, "the fixture model changed: update SIZE_LINE"
    model.write_text(text.replace(SIZE_LINE, SIZE_LINE + NOTE_LINE))


def create_migration(repo: Path, url: URL, message: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "scripts/create_migration.sh"), message], cwd=repo,
                          env=child_env(url), capture_output=True, text=True, timeout=120)


def versions(repo: Path) -> set[str]:
    return {p.name for p in (repo / "migrations/versions").glob("*.py")}


def note_column(url: URL) -> list:
    return execute_sql(url, "SELECT column_name FROM information_schema.columns "
                            "WHERE table_name = 'widgets' AND column_name = 'probe_note'")


def test_change_create_apply_inspect_roll_back(fixture_db, tmp_path):
    repo = fixture_project(tmp_path / "repo")

    # 1. Modify a model, 2. create the migration.
    add_note_column(repo)
    before = versions(repo)
    created = create_migration(repo, fixture_db, "add probe note to widgets")
    assert created.returncode == 0, created.stderr
    (new_file,) = versions(repo) - before
    new_rev = new_file.split("_")[2]

    # 4. Apply: start the service as the container does.
    status, body, _ = probe_entrypoint(repo, fixture_db, tmp_path / "out.log")
    assert status == 200, body
    assert note_column(fixture_db) == [("probe_note",)]

    # Verify: current shows the new head, history lists it.
    current = run_flask(["db", "current"], fixture_db, cwd=repo)
    assert new_rev in current.stdout and "(head)" in current.stdout
    history = run_flask(["db", "history"], fixture_db, cwd=repo)
    assert f"-> {new_rev} (head), add probe note to widgets" in history.stdout

    # Roll back: the column goes, the database is at the previous revision.
    run_flask(["db", "downgrade"], fixture_db, cwd=repo)
    assert note_column(fixture_db) == []
    current = run_flask(["db", "current"], fixture_db, cwd=repo)
    assert new_rev not in current.stdout
    assert FIXTURE_REVISIONS[-1] in current.stdout
