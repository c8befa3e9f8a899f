"""scripts/resolve_conflict.sh: two heads become one, by merge or by rebase, rows intact."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from backend.config import parse_database_url
from backend.migrate import LifecycleError
from migration_tools.conflicts.hosts import is_local_host, non_local_hosts
from migration_tools.conflicts.plan import reparent_source
from testkit.harness import phases
from testkit.support import FIXTURE_REVISIONS, fixture_project, write_revision
from tests.conftest import child_env, execute_sql, run_flask

OTHER = "aaaa00000001"   # the older head: arrived from the other branch, not applied
LOCAL = "bbbb00000002"   # the newer head: written and applied here
PARENT = FIXTURE_REVISIONS[-1]  # the fixture's head, where both branches start
SEED = "INSERT INTO widgets (name, size) VALUES ('gear', 3), ('bolt', NULL), ('nut', 1)"
ROWS = {"widgets": "SELECT id, name, size FROM widgets ORDER BY id"}


def resolve(repo: Path, url, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "scripts/resolve_conflict.sh"), *args], cwd=repo,
                          env=child_env(url), capture_output=True, text=True, timeout=120)


def add_revision(repo: Path, rev: str, parent: str, stamp: str, message: str,
                 column: str, downgrade: str | None = None) -> Path:
    return write_revision(
        repo, rev, parent, message, stamp=stamp,
        upgrade=f'op.add_column("widgets", sa.Column("{column}", sa.Text(), nullable=True))',
        downgrade=downgrade or f'op.drop_column("widgets", "{column}")')


def snapshot(url) -> dict[str, list[tuple]]:
    return {table: execute_sql(url, query) for table, query in ROWS.items()}


def columns(url) -> set[str]:
    rows = execute_sql(url, "SELECT column_name FROM information_schema.columns "
                            "WHERE table_schema = 'public' AND table_name = 'widgets'")
    return {name for (name,) in rows}


def db_revisions(url) -> list[str]:
    return sorted(rev for (rev,) in execute_sql(url, "SELECT version_num FROM alembic_version"))


def heads(repo: Path) -> list[str]:
    return ScriptDirectory(str(repo / "migrations")).get_heads()


def files(repo: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (repo / "migrations/versions").glob("*.py")}


def down_revision(path: Path) -> str:
    return re.search(r"^down_revision = '(\w+)'$", path.read_text(), re.M)[1]


@pytest.fixture
def repo(tmp_path) -> Path:
    return fixture_project(tmp_path / "repo")


@pytest.fixture
def conflict(repo, fixture_db):
    """Two heads on the fixture's head, the newer one applied, rows written before it.

    As it happens: the local revision is written and applied, then a pull brings a
    revision another branch added on the same parent (older, since it was written first).
    """
    execute_sql(fixture_db, SEED)
    rows = snapshot(fixture_db)
    add_revision(repo, LOCAL, PARENT, "20261121_0900", "add b to widgets", "b")
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)
    add_revision(repo, OTHER, PARENT, "20261120_0900", "add a to widgets", "a")
    assert sorted(heads(repo)) == [OTHER, LOCAL] and db_revisions(fixture_db) == [LOCAL]
    return {"parent": PARENT, "rows": rows}


def test_merge_writes_a_merge_revision_and_upgrades(repo, fixture_db, conflict):
    # Act
    proc = resolve(repo, fixture_db, "merge", "-m", "merge a and b")

    # Assert
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [head] = heads(repo)
    merge = ScriptDirectory(str(repo / "migrations")).get_revision(head)
    assert set(merge.down_revision) == {OTHER, LOCAL}
    assert merge.doc == "merge a and b"
    assert db_revisions(fixture_db) == [head]
    assert {"a", "b"} <= columns(fixture_db)
    assert snapshot(fixture_db) == conflict["rows"]
    assert "flask db merge heads" in proc.stdout and "flask db upgrade" in proc.stdout


def test_rebase_moves_the_newer_head_onto_the_other(repo, fixture_db, conflict):
    # Arrange
    local_file = next((repo / "migrations/versions").glob(f"*_{LOCAL}_*.py"))
    body = local_file.read_text().split("def upgrade", 1)[1]

    # Act
    proc = resolve(repo, fixture_db, "rebase")

    # Assert
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert heads(repo) == [LOCAL]
    [rebased] = (repo / "migrations/versions").glob(f"*_{LOCAL}_*.py")
    assert down_revision(rebased) == OTHER
    assert f"Revises: {OTHER}" in rebased.read_text()
    assert rebased.read_text().split("def upgrade", 1)[1] == body
    assert db_revisions(fixture_db) == [LOCAL]
    assert {"a", "b"} <= columns(fixture_db)
    assert snapshot(fixture_db) == conflict["rows"]
    assert f"flask db downgrade {conflict['parent']}" in proc.stdout


def test_rebase_keep_moves_the_older_head_and_renames_it_after_its_new_parent(
        repo, fixture_db, conflict):
    # Arrange
    [original] = (repo / "migrations/versions").glob(f"*_{OTHER}_*.py")
    before = original.read_text()

    # Act: keep the applied revision; the unapplied one moves, so nothing is rolled back.
    proc = resolve(repo, fixture_db, "rebase", "--keep", LOCAL[:6])

    # Assert
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert heads(repo) == [OTHER]
    [moved] = (repo / "migrations/versions").glob(f"*_{OTHER}_*.py")
    [kept] = (repo / "migrations/versions").glob(f"*_{LOCAL}_*.py")
    assert down_revision(moved) == LOCAL
    assert moved.name > kept.name, "files must still sort in history order"
    assert not original.exists()
    header = ("Revises:", "down_revision", "Create Date:")
    assert ([ln for ln in moved.read_text().splitlines() if not ln.startswith(header)]
            == [ln for ln in before.splitlines() if not ln.startswith(header)])
    assert f"Revises: {LOCAL}" in moved.read_text()
    assert "Create Date: 2026-11-20" not in moved.read_text()
    assert "nothing to roll back" in proc.stdout
    assert db_revisions(fixture_db) == [OTHER]
    assert {"a", "b"} <= columns(fixture_db)
    assert snapshot(fixture_db) == conflict["rows"]


def test_rebase_rolls_back_only_the_moved_branch_when_the_database_has_both(
        repo, fixture_db, conflict):
    # Arrange: the database has both heads (upgrades refuse two heads, so by hand, as
    # an older tool would have left it); a value sits in the kept branch's column.
    execute_sql(fixture_db, "ALTER TABLE widgets ADD COLUMN a text; "
                            f"UPDATE widgets SET a = 'kept value'; "
                            f"INSERT INTO alembic_version VALUES ('{OTHER}')")

    # Act
    proc = resolve(repo, fixture_db, "rebase")

    # Assert
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert heads(repo) == [LOCAL] and db_revisions(fixture_db) == [LOCAL]
    assert {a for (a,) in execute_sql(fixture_db, "SELECT a FROM widgets")} == {"kept value"}
    assert snapshot(fixture_db) == conflict["rows"]


def test_rebase_changes_no_file_when_the_rollback_fails(repo, fixture_db):
    # Arrange: the local revision's downgrade() cannot run.
    add_revision(repo, LOCAL, PARENT, "20261121_0900", "add b to widgets", "b",
                 downgrade='op.execute("SELECT * FROM no_such_table")')
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)
    add_revision(repo, OTHER, PARENT, "20261120_0900", "add a to widgets", "a")
    before = files(repo)

    # Act
    proc = resolve(repo, fixture_db, "rebase")

    # Assert
    assert proc.returncode == 1
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("resolve_conflict: failed")]
    assert f"rolling back {LOCAL}" in line and "no_such_table" in line
    assert f"at {LOCAL}" in line and "no file was changed" in line
    assert files(repo) == before and db_revisions(fixture_db) == [LOCAL]


@pytest.mark.parametrize("action", ["merge", "rebase"])
def test_refuses_a_database_on_another_host_before_connecting(repo, conflict, action):
    # Arrange
    url = parse_database_url("postgresql://app:S3cret@db.example.com:5432/app")
    before = files(repo)

    # Act
    started = time.monotonic()
    proc = resolve(repo, url, action)

    # Assert
    assert proc.returncode != 0
    assert "db.example.com, not a local development database" in proc.stderr
    assert "--force" in proc.stderr
    assert "cannot reach" not in proc.stderr, "it must refuse before any connection"
    assert "S3cret" not in proc.stdout + proc.stderr
    assert time.monotonic() - started < 30
    assert files(repo) == before


def test_force_goes_past_the_local_check_and_rebase_stops_at_connecting(repo, conflict):
    # .invalid never resolves: the run gets as far as connecting, and stops there.
    url = parse_database_url("postgresql://app:S3cret@db.example.invalid:5432/app")
    before = files(repo)

    proc = resolve(repo, url, "rebase", "--force")

    assert proc.returncode != 0
    assert "not a local development database" not in proc.stderr
    assert "--force: working on db.example.invalid" in proc.stderr
    assert "cannot reach the database" in proc.stderr
    assert files(repo) == before


def test_merge_needs_only_the_files_when_the_database_does_not_answer(repo, conflict):
    # Arrange
    url = parse_database_url("postgresql://app:S3cret@db.example.invalid:5432/app")
    before = files(repo)

    # Act
    proc = resolve(repo, url, "--force", "merge")

    # Assert
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--force: working on db.example.invalid" in proc.stderr
    [merge] = set(files(repo)) - set(before)
    assert f"wrote migrations/versions/{merge}" in proc.stdout
    assert "the database was not upgraded (cannot reach the database" in proc.stdout
    assert "db upgrade` once it answers" in proc.stdout
    assert len(heads(repo)) == 1
    assert "S3cret" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("action", ["merge", "rebase"])
def test_refuses_when_there_is_one_head(repo, fixture_db, action):
    before = files(repo)

    proc = resolve(repo, fixture_db, action)

    assert proc.returncode != 0
    assert "nothing to resolve" in proc.stderr
    assert files(repo) == before


def test_without_arguments_shows_the_heads_and_both_ways(repo, fixture_db, conflict):
    proc = resolve(repo, fixture_db)

    assert proc.returncode == 0
    assert OTHER in proc.stderr and LOCAL in proc.stderr
    assert "resolve_conflict.sh merge" in proc.stderr
    assert "resolve_conflict.sh rebase" in proc.stderr
    assert db_revisions(fixture_db) == [LOCAL]


def test_rebase_refuses_a_keep_that_is_not_a_head(repo, fixture_db, conflict):
    before = files(repo)

    proc = resolve(repo, fixture_db, "rebase", "--keep", conflict["parent"])

    assert proc.returncode != 0
    assert "not one of the heads" in proc.stderr
    assert files(repo) == before and db_revisions(fixture_db) == [LOCAL]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", "[::1]", "/run/postgresql",
                                  "", "127.0.1.1"])
def test_local_hosts(host):
    assert is_local_host(host)


@pytest.mark.parametrize("host", ["db.example.com", "10.0.0.5", "2001:db8::1", "localhost.evil"])
def test_remote_hosts(host):
    assert not is_local_host(host)


@pytest.mark.parametrize(("url", "remote"), [
    ("postgresql://u@localhost/app", []),
    ("postgresql://u@/app?host=/var/run/postgresql", []),
    ("postgresql://u@/app", []),
    ("postgresql://u@localhost/app?host=db.example.com", ["db.example.com"]),
    ("postgresql://u@localhost/app?hostaddr=10.1.2.3", ["10.1.2.3"]),
    ("postgresql://u@db.example.com:5433/app", ["db.example.com"]),
])
def test_non_local_hosts_reads_every_place_libpq_does(url, remote):
    assert non_local_hosts(parse_database_url(url), environ={}) == remote


def test_a_socketless_url_follows_pghost():
    url = parse_database_url("postgresql://u@/app")
    assert non_local_hosts(url, environ={"PGHOST": "db.example.com"}) == ["db.example.com"]


@pytest.mark.parametrize("annotated", [False, True])
def test_reparent_source_changes_only_the_parent(annotated, tmp_path):
    (tmp_path / "migrations/versions").mkdir(parents=True)
    source = write_revision(tmp_path, "cccc", "aaaa", "m").read_text()
    if annotated:  # the form newer Alembic templates write
        source = source.replace("down_revision =", "down_revision: str | None =")

    text = reparent_source(source, "aaaa", "bbbb")

    assert "'bbbb'" in text and "Revises: bbbb" in text
    assert text.replace("bbbb", "aaaa") == source


def test_reparent_source_refuses_a_parent_it_cannot_find(tmp_path):
    (tmp_path / "migrations/versions").mkdir(parents=True)
    source = write_revision(tmp_path, "cccc", "aaaa", "m").read_text()

    with pytest.raises(LifecycleError, match="exactly once"):
        reparent_source(source, "ffff", "bbbb")


# --- beside a post-deploy branch -----------------------------------------------------------

POST_ROOT = "cccc00000003"  # the post-deploy branch, completing the fixture's head


def add_post_revision(repo: Path, rev: str, parent: str | None, stamp: str,
                      depends_on: str = PARENT) -> Path:
    return write_revision(repo, rev, parent, f"contract {rev}", stamp=stamp,
                          branch_labels=("post",) if parent is None else None,
                          depends_on=depends_on)


def test_two_pre_deploy_heads_beside_a_post_deploy_head_merge_without_it(repo, fixture_db):
    # Arrange: a post-deploy branch waiting, then the usual conflict on the main line.
    execute_sql(fixture_db, SEED)
    rows = snapshot(fixture_db)
    add_post_revision(repo, POST_ROOT, None, "20261121_0800")
    add_revision(repo, LOCAL, PARENT, "20261121_0900", "add b to widgets", "b")
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)
    add_revision(repo, OTHER, PARENT, "20261120_0900", "add a to widgets", "a")
    assert sorted(heads(repo)) == sorted([OTHER, LOCAL, POST_ROOT])

    # Act
    proc = resolve(repo, fixture_db, "merge")

    # Assert: the pre-deploy heads merged by id, the post-deploy head left beside them.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    history = phases(repo)
    [merge] = history.pre_heads
    assert set(ScriptDirectory(str(repo / "migrations")).get_revision(merge).down_revision) \
        == {OTHER, LOCAL}
    assert history.post_heads == (POST_ROOT,) and merge not in history.post
    assert history.problem() is None
    assert f"flask db merge {OTHER} {LOCAL} -m" in proc.stdout
    assert f"done: the history has one head per phase (pre-deploy {merge}; post-deploy " \
           f"{POST_ROOT})" in proc.stdout
    assert db_revisions(fixture_db) == [merge]  # the contract waits for post-deploy
    assert {"a", "b"} <= columns(fixture_db)
    assert snapshot(fixture_db) == rows


def test_one_pre_deploy_and_one_post_deploy_head_are_nothing_to_resolve(repo, fixture_db):
    add_post_revision(repo, POST_ROOT, None, "20261121_0800")
    before = files(repo)
    normal = f"one head per phase (pre-deploy {PARENT}; post-deploy {POST_ROOT})"

    merged = resolve(repo, fixture_db, "merge")
    rebased = resolve(repo, fixture_db, "rebase")
    shown = resolve(repo, fixture_db)

    for refused in (merged, rebased):
        assert refused.returncode == 1
        [line] = [ln for ln in refused.stderr.splitlines() if "refused" in ln]
        assert normal in line and line.endswith("nothing to resolve")
    assert shown.returncode == 0 and f"{normal}, as a post-deploy branch" in shown.stderr
    assert files(repo) == before
    assert db_revisions(fixture_db) == [PARENT]


def test_two_post_deploy_heads_merge_on_the_post_deploy_branch(repo, fixture_db):
    # Arrange: the post-deploy branch applied, then two contracts on it from two branches.
    add_post_revision(repo, POST_ROOT, None, "20261121_0800")
    run_flask(["migrations", "post-deploy"], fixture_db, cwd=repo)
    add_post_revision(repo, OTHER, POST_ROOT, "20261121_0900")
    add_post_revision(repo, LOCAL, POST_ROOT, "20261121_1000")

    # Act
    proc = resolve(repo, fixture_db, "merge")

    # Assert: a post-deploy merge, the main line untouched, the database brought to it.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    history = phases(repo)
    [merge] = history.post_heads
    assert merge in history.post and history.pre_heads == (PARENT,)
    assert set(ScriptDirectory(str(repo / "migrations")).get_revision(merge).down_revision) \
        == {OTHER, LOCAL}
    assert f"flask db merge {OTHER} {LOCAL} -m" in proc.stdout
    assert "flask db upgrade post@head" in proc.stdout
    assert db_revisions(fixture_db) == [merge]


def test_rebase_refuses_to_move_a_branch_a_post_deploy_revision_completes(repo, fixture_db):
    # Arrange: the newer head has a contract completing it; rolling it back would take
    # the contract along.
    add_revision(repo, LOCAL, PARENT, "20261121_0900", "add b to widgets", "b")
    add_post_revision(repo, POST_ROOT, None, "20261121_0930", depends_on=LOCAL)
    add_revision(repo, OTHER, PARENT, "20261120_0900", "add a to widgets", "a")
    before = files(repo)

    proc = resolve(repo, fixture_db, "rebase")

    assert proc.returncode == 1
    assert f"{POST_ROOT} depends on the branch of {LOCAL}" in proc.stderr
    assert "resolve_conflict.sh merge` instead" in proc.stderr
    assert files(repo) == before and db_revisions(fixture_db) == [PARENT]


def test_rebase_on_the_main_line_keeps_an_applied_post_deploy_revision(repo, fixture_db):
    # Arrange: the post-deploy branch applied, the local revision applied after it, then
    # an older revision from another branch on the same parent.
    execute_sql(fixture_db, SEED)
    rows = snapshot(fixture_db)
    add_post_revision(repo, POST_ROOT, None, "20261121_0800")
    add_revision(repo, LOCAL, PARENT, "20261121_0900", "add b to widgets", "b")
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)
    run_flask(["migrations", "post-deploy"], fixture_db, cwd=repo)
    add_revision(repo, OTHER, PARENT, "20261120_0900", "add a to widgets", "a")
    assert db_revisions(fixture_db) == sorted([LOCAL, POST_ROOT])

    # Act
    proc = resolve(repo, fixture_db, "rebase")

    # Assert: only the moved revision was rolled back and applied again; the contract,
    # which no upgrade of the main line would bring back, is still applied.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"rolls back {LOCAL}:" in proc.stdout
    assert phases(repo).pre_heads == (LOCAL,) and phases(repo).post_heads == (POST_ROOT,)
    assert db_revisions(fixture_db) == sorted([LOCAL, POST_ROOT])
    assert {"a", "b"} <= columns(fixture_db)
    assert snapshot(fixture_db) == rows
