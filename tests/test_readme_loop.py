"""The README's development loop, command by command, in a fresh shell on a repository copy:
so the documented loop cannot silently break again.

A fresh shell is what a newcomer has after `make install`: no `DATABASE_URL`, the venv not
on PATH until the README's one step (`source .venv/bin/activate`). Each command runs as
printed; every development command then works on the embedded development database of the
copy. After each committed change, the suites that read the models and the history run in
the copy (the rest of `make test` does not depend on them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backend.config import parse_database_url
from migration_tools.embedded import embedded_database_url
from testkit.support import ROOT, VENV_BIN, copy_repository, execute_sql, url_text, write_revision

README = (ROOT / "README.md").read_text()
TITLE_LINE = "    title: Mapped[str] = mapped_column(sa.String(500))\n"
SLUG_LINE = "    slug: Mapped[str] = mapped_column(sa.String(SLUG_MAX))\n"
OLD_HEAD = "f7a2c1e9b384"
TEAMMATE = "d00d00000001"
# The suites that read the models and the history: where a user's change could collide.
SUITES = ("tests/migrations", "tests/scripts/test_create_migration.py", "tests/test_workflow.py")


def fresh_shell_env() -> dict[str, str]:
    """A new terminal: no DATABASE_URL, no active venv, the venv not on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_URL", "FLASK_", "VIRTUAL_ENV", "TEST_DATABASE_URL"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and Path(p).resolve() != Path(VENV_BIN).resolve())
    return env


class Shell:
    """Runs README lines in a repository copy, each in a fresh shell after the README's one
    step."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo

    def __call__(self, line: str, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["bash", "-c", f"source .venv/bin/activate && {line}"],
                              cwd=self.repo, env=fresh_shell_env(), capture_output=True,
                              text=True, timeout=300)
        if ok:
            assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def make_test(self, *suites: str, test_database_url: str) -> None:
        """The committed change keeps `make test` green: its history- and model-bound part."""
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *suites],
            cwd=self.repo, env={**fresh_shell_env(), "TEST_DATABASE_URL": test_database_url},
            capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert " failed" not in proc.stdout and re.search(r"\b[1-9]\d* passed", proc.stdout)


def readme_block(after: str, language: str = "") -> str:
    return re.search(re.escape(after) + rf".*?```{language}\n(.*?)```", README, re.S).group(1)


def current(sh: Shell) -> str:
    return sh("flask db current").stdout.strip()


def add_model_line(repo: Path, model: str, anchor: str, line: str) -> None:
    path = repo / "backend/models" / model
    path.write_text(path.read_text().replace(anchor, anchor + line))


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = copy_repository(tmp_path / "repo")
    shutil.copytree(ROOT / "tests", repo / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "containers",
                                                  Path(__file__).name))
    (repo / ".venv").symlink_to(ROOT / ".venv")
    return repo


def test_the_readme_loop_from_a_fresh_clone(repo, pg_server):
    sh = Shell(repo)
    test_server = url_text(pg_server.url)

    # 1. Change a model (the README's own example: notes on tasks), create the migration.
    #    The embedded database of a fresh clone is empty: it is brought to head first.
    add_model_line(repo, "task.py", TITLE_LINE,
                   "    notes: Mapped[str | None] = mapped_column(sa.Text)\n")
    created = sh('scripts/create_migration.sh "add notes to tasks"')
    path = repo / created.stdout.splitlines()[0]
    revision = re.search(r"Revision ID: (\w+)", path.read_text()).group(1)
    sample = readme_block("writes one\nfile, named by creation time:\n")
    assert re.sub(r"\d{8}_\d{4}_\w{12}_", "X_", created.stdout) == \
        re.sub(r"\d{8}_\d{4}_\w{12}_", "X_", sample)
    assert "the development database was 9 revision(s) behind" in created.stderr

    # 2. Review it: the data it changes (notes for old tasks) gets the README's data file.
    path.write_text(path.read_text().replace(
        "    # ### end Alembic commands ###\n\n\ndef downgrade",
        "    # ### end Alembic commands ###\n"
        "    op.execute(\"UPDATE tasks SET notes = '' WHERE notes IS NULL\")\n\n\ndef downgrade",
        1))
    example = readme_block("`tests/migrations/data/<its revision id>.py`:\n", "python")
    (repo / f"tests/migrations/data/{revision}.py").write_text(example)

    # 3. Apply, 5. inspect, 4. roll back, apply again: `flask` as printed.
    sh("flask db upgrade")
    assert current(sh) == f"{revision} (head)"
    assert f"{OLD_HEAD} -> {revision} (head), add notes to tasks" in sh("flask db history").stdout
    sh("flask db check")
    sh("flask db downgrade")
    assert current(sh) == OLD_HEAD
    given = re.search(r"^flask db downgrade (\w+)", readme_block("### 4. Roll back", "bash"),
                      re.M).group(1)
    sh(f"flask db downgrade {given}")
    assert current(sh) == given
    sh("flask db upgrade")
    assert current(sh) == f"{revision} (head)"

    # Committed: the suites still pass, the data file included.
    sh.make_test(*SUITES, test_database_url=test_server)

    # Backup and restore of the development database, with nothing else running.
    with embedded_database_url(repo / ".data/postgres") as url:
        execute_sql(parse_database_url(url), "INSERT INTO users (email, name) "
                                             "VALUES ('ada@example.com', 'Ada')")
    dump = sh("scripts/backup.sh").stdout.strip().splitlines()[-1]
    assert (repo / dump).is_file() or Path(dump).is_file()
    with embedded_database_url(repo / ".data/postgres") as url:
        execute_sql(parse_database_url(url), "DELETE FROM users")
    sh(f"scripts/restore.sh {dump} --yes")
    with embedded_database_url(repo / ".data/postgres") as url:
        assert execute_sql(parse_database_url(url), "SELECT email FROM users") == \
            [("ada@example.com",)]

    # Two heads: a teammate's revision on the same parent arrives with a pull.
    add_model_line(repo, "project.py", SLUG_LINE,
                   "    description: Mapped[str | None] = mapped_column(sa.Text)\n")
    write_revision(repo, TEAMMATE, OLD_HEAD, "add project description", stamp="20261120_0900",
                   upgrade='op.add_column("projects", sa.Column("description", sa.Text()))',
                   downgrade='op.drop_column("projects", "description")')
    shown = sh("scripts/resolve_conflict.sh")
    assert "resolve_conflict.sh merge" in shown.stdout + shown.stderr
    sh("scripts/resolve_conflict.sh merge")
    merge, *marks = current(sh).split()
    assert merge not in (revision, TEAMMATE) and "(head)" in marks
    sh("flask db check")

    # Committed: the history with its merge still walks, up and down.
    sh.make_test("tests/migrations", test_database_url=test_server)

