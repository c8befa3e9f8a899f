"""The guide's development workflow, end to end, on a copy of the repository:
change a model, create the migration, apply it by (re)starting, inspect, roll back."""

from __future__ import annotations

from testkit.support import copy_repository, probe_entrypoint
from tests.conftest import execute_sql, run_flask
from tests.scripts.test_create_migration import add_notes_column, create_migration, versions


def notes_column(url) -> list:
    return execute_sql(url, "SELECT column_name FROM information_schema.columns "
                            "WHERE table_name = 'tasks' AND column_name = 'probe_note'")


def test_change_create_apply_inspect_roll_back(head_db, tmp_path):
    repo = copy_repository(tmp_path / "repo")

    # 1. Modify a model, 2. create the migration.
    add_notes_column(repo)
    before = versions(repo)
    created = create_migration(repo, head_db, "add notes to tasks")
    assert created.returncode == 0, created.stderr
    (new_file,) = versions(repo) - before
    new_rev = new_file.split("_")[2]

    # 4. Apply: start the service as the container does.
    status, body, _ = probe_entrypoint(repo, head_db, tmp_path / "out.log")
    assert status == 200, body
    assert notes_column(head_db) == [("probe_note",)]

    # Verify: current shows the new head, history lists it.
    current = run_flask(["db", "current"], head_db, cwd=repo)
    assert new_rev in current.stdout and "(head)" in current.stdout
    history = run_flask(["db", "history"], head_db, cwd=repo)
    assert f"-> {new_rev} (head), add notes to tasks" in history.stdout

    # Roll back: the column goes, the database is at the previous revision.
    run_flask(["db", "downgrade"], head_db, cwd=repo)
    assert notes_column(head_db) == []
    current = run_flask(["db", "current"], head_db, cwd=repo)
    assert new_rev not in current.stdout
