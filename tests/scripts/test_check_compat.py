"""scripts/check_compat.sh: the previous release's API tests on this checkout's schema."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from testkit.support import ROOT, copy_repository, head_revision, write_revision
from tests.conftest import child_env


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A repository whose last commit is "the previous release": this project as it is."""
    repo = copy_repository(tmp_path_factory.mktemp("compat") / "repo")
    shutil.copytree(ROOT / "tests", repo / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "containers"))
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "N"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return repo


def check_compat(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "scripts/check_compat.sh"), *args], cwd=repo,
                          env=child_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture
def breaking(release):
    """Add one revision to the working tree (not committed), and take it away afterwards."""
    added = []

    def add(rev: str, message: str, upgrade: str, downgrade: str = "pass") -> None:
        added.append(write_revision(release, rev, head_revision(release), message,
                                    upgrade=upgrade, downgrade=downgrade))

    yield add
    for path in added:
        path.unlink()


def test_passes_on_the_shipped_history(release):
    proc = check_compat(release, "--against", "HEAD")

    assert proc.returncode == 0, proc.stderr
    assert "API tests pass on this checkout's schema" in proc.stderr


@pytest.mark.parametrize(("rev", "message", "upgrade"), [
    ("c0c0c0c00001", "drop task due date", 'op.drop_column("tasks", "due_date")'),
    ("c0c0c0c00002", "rename project name",
     'op.alter_column("projects", "name", new_column_name="title")'),
    ("c0c0c0c00003", "require a user tier",
     'op.add_column("users", sa.Column("tier", sa.Text(), nullable=False))'),
])
def test_catches_a_revision_the_previous_release_breaks_on(release, breaking, rev, message,
                                                           upgrade):
    breaking(rev, message, upgrade)

    proc = check_compat(release, "--against", "HEAD")

    assert proc.returncode == 1, proc.stderr
    assert f"breaks on the schema of revision(s) {rev}" in proc.stderr
    assert "tests/api/test_" in proc.stderr and "failed" in proc.stderr


def test_an_unknown_ref_is_exit_2(release):
    proc = check_compat(release, "--against", "no-such-ref")

    assert proc.returncode == 2
    assert "could not check" in proc.stderr
