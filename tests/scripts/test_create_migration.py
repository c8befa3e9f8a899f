"""scripts/create_migration.sh: one new revision for a model change, or a clear refusal.

Each test works on a copy of the project serving the fixture application (``widgets``) and
changes its model there, so the proof holds whatever application the checkout serves.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import pytest

from testkit.harness import (
    POST_BACKFILL as BACKFILL,
)
from testkit.harness import (
    POST_CONTRACT as CONTRACT,
)
from testkit.harness import (
    POST_EXPAND as EXPAND,
)
from testkit.harness import (
    add_post_deploy_branch,
    phases,
)
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


# --- the post-deploy phase -----------------------------------------------------------------

SIZE_LINE = "    size: Mapped[int | None] = mapped_column(sa.Integer)\n"
REQUIRED_SIZE = "    size: Mapped[int] = mapped_column(sa.Integer, nullable=False)\n"
PRE_HEAD = FIXTURE_REVISIONS[-1]
SUGGESTION = "it belongs to the post-deploy phase"


def header(path: Path) -> dict[str, object]:
    """The identifiers a revision file assigns, as its lines say."""
    text = path.read_text()
    return {key: ast.literal_eval(re.search(rf"^{key} = (.+)$", text, re.M)[1])
            for key in ("revision", "down_revision", "branch_labels", "depends_on")}


def new_file(repo: Path, before: set[str]) -> Path:
    (name,) = versions(repo) - before
    return repo / "migrations/versions" / name


def test_post_deploy_revisions_start_a_branch_of_their_own_then_follow_it(repo, fixture_db):
    # Arrange: a contract step in the model: size becomes required.
    change_model(repo, SIZE_LINE, REQUIRED_SIZE)
    before = versions(repo)

    # Act
    first = create_migration(repo, fixture_db, "--post-deploy", "require widget size")

    # Assert: a root of its own, labelled post, completing the main line's head.
    assert first.returncode == 0, first.stderr
    first_path = new_file(repo, before)
    first_rev = header(first_path)["revision"]
    assert header(first_path) == {"revision": first_rev, "down_revision": None,
                                  "branch_labels": ("post",), "depends_on": PRE_HEAD}
    assert "upgrade: alter_column(widgets)" in first.stdout
    assert "starts the post-deploy branch" in first.stdout
    assert "migrations post-deploy` once every replica serves" in first.stdout
    assert SUGGESTION not in first.stdout
    assert "1 revision(s) linted" in first.stderr

    # Arrange: the contract applied, as once the release is out; then the column goes.
    run_flask(["migrations", "post-deploy"], fixture_db, cwd=repo)
    change_model(repo, REQUIRED_SIZE, "")
    before = versions(repo)

    # Act
    second = create_migration(repo, fixture_db, "--post-deploy", "drop widget size")

    # Assert: on the first, still completing the main line's head; no phase advice for a
    # drop that is already where it belongs, from create_migration or from its lint.
    assert second.returncode == 0, second.stderr
    second_path = new_file(repo, before)
    second_rev = header(second_path)["revision"]
    assert header(second_path) == {"revision": second_rev, "down_revision": first_rev,
                                   "branch_labels": None, "depends_on": PRE_HEAD}
    assert "upgrade: drop_column(widgets)" in second.stdout
    assert f"goes on the post-deploy head {first_rev}" in second.stdout
    assert SUGGESTION not in second.stdout
    [finding] = [ln for ln in second.stderr.splitlines() if ": ban-drop-column: " in ln]
    assert "post-deploy phase" not in finding
    history = phases(repo)
    assert history.pre_heads == (PRE_HEAD,)
    assert history.post_heads == (second_rev,)


def test_a_plain_revision_goes_on_the_main_line_beside_the_post_deploy_branch(repo, fixture_db):
    # Arrange: a post-deploy branch, applied; the history has two heads, one per phase.
    write_revision(repo, CONTRACT, None, "contract on the fixture", stamp="20261201_1001",
                   branch_labels=("post",), depends_on=PRE_HEAD)
    run_flask(["migrations", "post-deploy"], fixture_db, cwd=repo)
    add_probe_column(repo)
    before = versions(repo)

    # Act
    proc = create_migration(repo, fixture_db, "add widget probe note")

    # Assert: on the pre-deploy head, in no branch, depending on nothing; linted by its id.
    assert proc.returncode == 0, proc.stderr
    path = new_file(repo, before)
    rev = header(path)["revision"]
    assert header(path) == {"revision": rev, "down_revision": PRE_HEAD,
                            "branch_labels": None, "depends_on": None}
    assert SUGGESTION not in proc.stdout and "post-deploy:" not in proc.stdout
    assert "1 revision(s) linted, 0 finding(s)" in proc.stderr
    history = phases(repo)
    assert history.pre_heads == (rev,) and history.post_heads == (CONTRACT,)


def test_a_contract_step_on_the_main_line_suggests_the_post_deploy_phase(repo, fixture_db):
    # Arrange: a column removed from the model, the previous release still reads it.
    change_model(repo, SIZE_LINE, "")
    before = versions(repo)

    # Act
    proc = create_migration(repo, fixture_db, "drop widget size")

    # Assert: one line after the summary, with the commands that move it.
    assert proc.returncode == 0, proc.stderr
    path = new_file(repo, before)
    lines = proc.stdout.splitlines()
    [line] = [ln for ln in lines if SUGGESTION in ln]
    assert lines.index(line) == 2, proc.stdout  # the path, its operations, then this
    assert "contract step (drop_column(widgets.size))" in line
    assert "the previous release may still read or write what this removes" in line
    command = re.search(r"`([^`]+)`$", line)[1]
    assert command == (f"rm migrations/versions/{path.name} && "
                       "scripts/create_migration.sh --post-deploy 'drop widget size'")

    # Act: the suggestion, run as printed.
    moved = subprocess.run(["bash", "-c", command], cwd=repo, env=child_env(fixture_db),
                           capture_output=True, text=True, timeout=120)

    # Assert: the main-line file is gone, the same change is a post-deploy revision.
    assert moved.returncode == 0, moved.stderr
    assert not path.exists()
    post = new_file(repo, before)
    assert header(post)["branch_labels"] == ("post",)
    assert header(post)["depends_on"] == PRE_HEAD
    assert "upgrade: drop_column(widgets)" in moved.stdout
    assert SUGGESTION not in moved.stdout


def test_pending_post_deploy_revisions_are_refused_with_the_commands_that_apply_them(
        repo, fixture_db):
    # Arrange: the release is out (its expand applied), its background migration pending.
    add_post_deploy_branch(repo)
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)
    add_probe_column(repo)
    before = versions(repo)

    # Act
    proc = create_migration(repo, fixture_db, "add widget probe note")

    # Assert: nothing written, nothing applied; the commands in the order they must run.
    assert proc.returncode == 1
    [line] = [ln for ln in proc.stderr.splitlines() if "refused" in ln]
    assert f"post-deploy revision(s) {CONTRACT} are not applied" in line
    assert (f"`flask migrations backfill run` (background migration(s) {BACKFILL} "
            "unfinished), then `flask migrations post-deploy`") in line
    assert versions(repo) == before
    assert execute_sql(fixture_db, "SELECT version_num FROM alembic_version") == [(EXPAND,)]


def test_the_embedded_database_runs_its_backfill_and_comes_to_both_heads(repo):
    # Arrange: the embedded development database at the expand, its backfill pending.
    add_post_deploy_branch(repo)
    run_flask(["db", "upgrade"], None, cwd=repo)
    add_probe_column(repo)
    before = versions(repo)

    # Act
    proc = create_migration(repo, None, "add widget probe note")

    # Assert: the backfill ran, the contract was applied (the new revision holds no
    # alter_column for it), and the revision went on the main line.
    assert proc.returncode == 0, proc.stderr
    assert (f"background migration(s) {BACKFILL} are unfinished on the development "
            "database") in proc.stderr
    assert "1 revision(s) behind (1 post-deploy); bringing it to both heads first" \
        in proc.stderr
    assert "\n  upgrade: add_column(widgets)\n" in proc.stdout
    assert header(new_file(repo, before))["down_revision"] == EXPAND
