"""A development database left at another branch's revision by `git switch`: the tools that
need only the files keep working, the others say where the revision is and the ways out,
and every command they suggest works as printed. Production keeps refusing in one line.

The project is a fixture copy made a git repository with two branches on the fixture
history: ``feature/colour`` adds FEATURE, ``main`` adds MAIN, both on the fixture's head. The
embedded development database (the copy's own ``.data/postgres``) is held up by this module
so each command joins it instead of starting it again.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from backend.config import parse_database_url
from backend.migrate.revisions import unknown_reason
from migration_tools.branches import shared_target, ways_out, whereabouts
from migration_tools.embedded import embedded_database_url
from testkit.support import (
    FIXTURE_REVISIONS,
    VENV_BIN,
    child_env,
    execute_sql,
    fixture_project,
    free_port,
    run_entrypoint,
    stop,
    wait_for_http,
    write_revision,
)
from tests.conftest import run_flask

FEATURE = "fb0000000001"  # on feature/colour: applied there, then the developer switched
MAIN = "fc0000000001"  # on main: this checkout's head
OTHER_HEAD = "fd0000000001"  # a second head on main, for the merge
BRANCH = "feature/colour"
PARENT = FIXTURE_REVISIONS[-1]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=Dev", "-c", "user.email=dev@example.com",
                           *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def add_column(repo: Path, rev: str, message: str, column: str, stamp: str,
               parent: str = PARENT) -> Path:
    return write_revision(
        repo, rev, parent, message, stamp=stamp,
        upgrade=f'op.add_column("widgets", sa.Column("{column}", sa.Text(), nullable=True))',
        downgrade=f'op.drop_column("widgets", "{column}")')


def dev_env(**extra: str) -> dict[str, str]:
    """A developer's shell: the venv on PATH, no DATABASE_URL (the embedded database)."""
    return child_env(**extra)


def run(repo: Path, command: list[str], **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=repo, env=dev_env(**extra), capture_output=True,
                          text=True, timeout=300)


def columns(url) -> set[str]:
    rows = execute_sql(url, "SELECT column_name FROM information_schema.columns "
                            "WHERE table_schema = 'public' AND table_name = 'widgets'")
    return {name for (name,) in rows}


def db_revisions(url) -> list[str]:
    return sorted(rev for (rev,) in execute_sql(url, "SELECT version_num FROM alembic_version"))


def suggested(message: str) -> list[list[str]]:
    """The commands of each way out, as printed (indented four spaces under their way)."""
    ways: list[list[str]] = []
    for line in message.splitlines():
        if re.match(r"^  \S", line):
            ways.append([])
        elif line.startswith("    ") and ways:
            ways[-1].append(line.strip())
    return ways


@pytest.fixture(scope="module")
def project() -> Iterator[tuple[Path, Path, object]]:
    """(the checkout on main, a clone on the feature branch, the embedded database's URL).

    Under /tmp, not pytest's tmp_path: run as root, the embedded server runs as a user of
    its own, which must be able to reach its data directory."""
    root = Path(tempfile.mkdtemp(prefix="branch-switch-"))
    try:
        yield from _project(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _project(root: Path) -> Iterator[tuple[Path, Path, object]]:
    repo = fixture_project(root / "repo")
    (repo / ".gitignore").write_text(".data/\nbackups/\n__pycache__/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "widgets")
    git(repo, "switch", "-q", "-c", BRANCH)
    add_column(repo, FEATURE, "add widget colour", "colour", "20260201_1000")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "colour")
    git(repo, "switch", "-q", "main")
    add_column(repo, MAIN, "add widget weight", "weight", "20260202_1000")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "weight")
    feature = root / "feature"
    git(root, "clone", "-q", "-b", BRANCH, str(repo), str(feature))
    with embedded_database_url(repo / ".data" / "postgres") as raw:
        yield repo, feature, parse_database_url(raw)


def on_main(repo: Path) -> None:
    """The checkout on main as committed, whatever an earlier test switched to or wrote."""
    git(repo, "switch", "-q", "-f", "main")
    git(repo, "clean", "-fdq")
    shutil.rmtree(repo / "backups", ignore_errors=True)


@pytest.fixture
def switched(project) -> tuple[Path, object]:
    """The checkout on main, clean; its embedded database at FEATURE (applied on the
    feature branch with its rows), as a developer has it right after `git switch main`."""
    repo, feature, url = project
    on_main(repo)
    server = url.set(database="postgres")
    execute_sql(server, f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
    execute_sql(server, f'CREATE DATABASE "{url.database}"')
    run_flask(["db", "upgrade"], url, cwd=feature)
    execute_sql(url, "INSERT INTO widgets (name, colour) VALUES ('gear', 'red')")
    assert db_revisions(url) == [FEATURE]
    return repo, url


# --------------------------------------------------------------------------- make run


def test_make_run_names_the_branch_and_its_ways_out_work_as_printed(switched):
    # Arrange
    repo, url = switched
    port = str(free_port())

    # Act
    refused = run(repo, ["python", "-m", "migration_tools.embedded"], PORT=port)
    [rollback, reset] = suggested(refused.stderr)
    for command in rollback:
        done = subprocess.run(command, shell=True, cwd=repo, env=dev_env(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}:\n{done.stdout}{done.stderr}"
    proc = subprocess.Popen(["python", "-m", "migration_tools.embedded"], cwd=repo,
                            env=dev_env(PORT=port), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        status, body = wait_for_http(int(port), "/readyz", proc, timeout=120)
    finally:
        stop(proc)

    # Assert
    assert refused.returncode == 1
    assert refused.stderr.count("run: refused:") == 1
    assert f"revision {FEATURE} (add widget colour), which this checkout does not have" \
        in refused.stderr
    assert f"Its file is on branch {BRANCH}: migrations/versions/" in refused.stderr
    assert rollback == [f"git switch {BRANCH}", f"flask db downgrade {PARENT}",
                        "git switch main"]
    assert reset == ["scripts/reset_dev_database.sh"]
    assert status == 200, body
    assert db_revisions(url) == [MAIN]
    assert execute_sql(url, "SELECT name FROM widgets") == [("gear",)], "the rows stay"


def test_the_reset_backs_up_then_rebuilds_at_head(switched):
    # Arrange
    repo, url = switched
    refused = run(repo, ["flask", "db", "upgrade"])
    [_, [command]] = suggested(refused.stderr)

    # Act
    proc = subprocess.run(command, shell=True, cwd=repo, env=dev_env(), capture_output=True,
                          text=True, timeout=300)

    # Assert (and the backup comes back, with the command it prints, on the feature branch)
    assert refused.returncode == 1 and f"git switch {BRANCH}" in refused.stderr
    assert proc.returncode == 0, proc.stderr
    [dump] = (repo / "backups/reset").glob("*.dump")
    assert dump.name.endswith(f"_{FEATURE}_to_{FEATURE}.dump")
    assert f"backed up the database (at {FEATURE}) to backups/reset/{dump.name}" in proc.stderr
    assert f"scripts/restore.sh backups/reset/{dump.name} --yes" in proc.stderr
    assert db_revisions(url) == [MAIN]
    assert "weight" in columns(url) and "colour" not in columns(url)
    assert execute_sql(url, "SELECT count(*) FROM widgets") == [(0,)]
    restore = re.search(r"`(scripts/restore.sh \S+ --yes)`", proc.stderr)[1]
    git(repo, "switch", "-q", BRANCH)
    restored = subprocess.run(restore, shell=True, cwd=repo, env=dev_env(),
                              capture_output=True, text=True, timeout=300)
    assert restored.returncode == 0, restored.stderr
    assert db_revisions(url) == [FEATURE]
    assert execute_sql(url, "SELECT name, colour FROM widgets") == [("gear", "red")]


def test_the_reset_refuses_a_database_named_by_database_url(project, fixture_db):
    # Arrange
    repo, _, _ = project
    on_main(repo)
    before = db_revisions(fixture_db)
    dumps = sorted((repo / "backups").rglob("*.dump"))

    # Act
    proc = subprocess.run([str(repo / "scripts/reset_dev_database.sh")], cwd=repo,
                          env=child_env(fixture_db), capture_output=True, text=True,
                          timeout=120)

    # Assert
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("reset_dev_database: refused: DATABASE_URL is set")
    assert sorted((repo / "backups").rglob("*.dump")) == dumps == [], "no backup taken"
    assert db_revisions(fixture_db) == before


# --------------------------------------------------------------------------- production


def test_production_keeps_refusing_in_one_line(project, fixture_db, tmp_path):
    # Arrange: the database a feature build migrated, then the main build deployed on it.
    repo, feature, _ = project
    on_main(repo)
    run_flask(["db", "upgrade"], fixture_db, cwd=feature)

    # Act
    code, output, _ = run_entrypoint(repo, fixture_db, tmp_path, timeout=180)

    # Assert
    assert code != 0
    assert len([ln for ln in output.splitlines() if unknown_reason([FEATURE]) in ln]) == 1
    assert "git switch" not in output and "reset_dev_database" not in output
    assert db_revisions(fixture_db) == [FEATURE]


# --------------------------------------------------------------------------- the tools


def test_merge_needs_only_the_files(switched):
    # Arrange: a pull brought a second head onto main.
    repo, url = switched
    add_column(repo, OTHER_HEAD, "add widget shape", "shape", "20260203_1000")

    # Act
    proc = run(repo, [str(repo / "scripts/resolve_conflict.sh"), "merge", "-m", "merge"])

    # Assert
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [head] = ScriptDirectory(str(repo / "migrations")).get_heads()
    merge = ScriptDirectory(str(repo / "migrations")).get_revision(head)
    assert set(merge.down_revision) == {MAIN, OTHER_HEAD}
    assert "the database was not upgraded" in proc.stdout
    assert f"git switch {BRANCH}" in proc.stdout and "reset_dev_database.sh" in proc.stdout
    assert db_revisions(url) == [FEATURE]


def test_rebase_refuses_with_the_ways_out(switched):
    # Arrange
    repo, url = switched
    add_column(repo, OTHER_HEAD, "add widget shape", "shape", "20260203_1000")
    before = sorted(p.name for p in (repo / "migrations/versions").glob("*.py"))

    # Act
    proc = run(repo, [str(repo / "scripts/resolve_conflict.sh"), "rebase"])

    # Assert
    assert proc.returncode == 1
    assert "resolve_conflict: refused: the embedded development database is at revision" \
        in proc.stderr
    assert f"git switch {BRANCH}" in proc.stderr
    assert sorted(p.name for p in (repo / "migrations/versions").glob("*.py")) == before
    assert db_revisions(url) == [FEATURE]


def test_create_migration_refuses_with_the_ways_out_and_leaves_no_file(switched):
    # Arrange
    repo, _ = switched
    before = sorted(p.name for p in (repo / "migrations/versions").glob("*.py"))

    # Act
    proc = run(repo, [str(repo / "scripts/create_migration.sh"), "add widget notes"])

    # Assert
    assert proc.returncode == 1
    assert "create_migration: refused: the embedded development database is at revision " \
           f"{FEATURE}" in proc.stderr
    assert suggested(proc.stderr)[0] == [f"git switch {BRANCH}", f"flask db downgrade {PARENT}",
                                         "git switch main"]
    assert "flask db upgrade" not in proc.stderr, "upgrading cannot help here"
    assert sorted(p.name for p in (repo / "migrations/versions").glob("*.py")) == before


def test_the_graph_is_drawn_and_names_the_branch(switched):
    repo, _ = switched

    proc = run(repo, [str(repo / "scripts/migration_graph.sh")])

    assert proc.returncode == 0
    assert f"rev_{MAIN}" in proc.stdout
    assert f"its file is on branch {BRANCH}" in proc.stderr


# --------------------------------------------------------------------------- git's answers


def test_a_file_no_branch_holds_is_found_in_its_commit(project, tmp_path, monkeypatch):
    # Arrange: a clone where the feature branch was deleted after its commit was made.
    monkeypatch.setenv("CALLER_PATH", VENV_BIN)  # a shell with the venv active
    repo, _, _ = project
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    commit = git(clone, "rev-parse", "--short", f"origin/{BRANCH}").strip()
    git(clone, "switch", "-q", "--detach", commit)
    git(clone, "switch", "-q", "main")
    git(clone, "update-ref", "-d", f"refs/remotes/origin/{BRANCH}")
    scripts = ScriptDirectory(str(clone / "migrations"))

    # Act
    found = whereabouts(scripts, [FEATURE], root=clone)
    message = ways_out(scripts, [FEATURE], embedded=True, root=clone)

    # Assert
    assert found.holder is not None and found.holder.ref == commit
    assert f"commit {commit} (no branch has it now)" in message
    assert suggested(message)[0] == [f"git switch --detach {commit}",
                                     f"flask db downgrade {PARENT}", "git switch main"]


def test_a_remote_branch_is_switched_to_detached(project, tmp_path, monkeypatch):
    monkeypatch.setenv("CALLER_PATH", VENV_BIN)
    repo, _, _ = project
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    scripts = ScriptDirectory(str(clone / "migrations"))

    message = ways_out(scripts, [FEATURE], embedded=False, root=clone)

    assert f"Its file is on branch origin/{BRANCH}" in message
    assert suggested(message) == [[f"git switch --detach origin/{BRANCH}",
                                   f"flask db downgrade {PARENT}", "git switch main"]]
    assert "reset_dev_database" not in message, "only the embedded database is reset"


def test_without_git_only_the_reset_is_offered(fixture_repo, tmp_path):
    scripts = ScriptDirectory(str(fixture_repo / "migrations"))

    message = ways_out(scripts, ["ab12cd34ef56"], embedded=True, root=tmp_path)

    assert "No branch or commit of this repository has its file" in message
    assert suggested(message) == [["scripts/reset_dev_database.sh"]]


@pytest.mark.parametrize(("graph", "unknown", "known", "target"), [
    ({"f2": ("f1",), "f1": ("a",)}, ["f2"], {"a"}, "a"),
    ({"f1": ()}, ["f1"], {"a"}, "base"),
    ({"m": ("x", "y"), "x": ("a",), "y": ("b",)}, ["m"], {"a", "b"}, None),
    ({"f1": ("gone",)}, ["f1"], {"a"}, None),
])
def test_shared_target(graph, unknown, known, target):
    assert shared_target(graph, unknown, known) == target

