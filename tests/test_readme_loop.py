"""The documented development loop (docs/workflow.md, and the README's everyday commands),
command by command, in a fresh shell on a repository copy: so it cannot silently break.

A fresh shell is what a newcomer has after `make install`: no `DATABASE_URL`, the venv not
on PATH until the documented one step (`source .venv/bin/activate`). Every command is run as
the pages print it; the few the pages print with their own example's arguments (a message,
a revision id, a dump's name) are run in the same form with this test's. Every development
command then works on the copy's embedded development database.

The copy serves the suite's fixture application (tests/apps/fixture), not the checkout's:
the scenario here (a `colour` for widgets) shares nothing with the pages' examples, and a
change a user has committed to their own application (the pages' `tasks.notes`, or any
other) can neither break this test nor be broken by it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.config import parse_database_url
from migration_tools.embedded import embedded_database_url
from testkit.support import (
    FIXTURE_APP,
    FIXTURE_REVISIONS,
    ROOT,
    VENV_BIN,
    copy_repository,
    execute_sql,
    swap_app,
    url_text,
    write_revision,
)

PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
SIZE_LINE = "    size: Mapped[int | None] = mapped_column(sa.Integer)\n"
TEAMMATE = "d00d00000001"
# The suite that reads the models and the history: where a committed change could collide.
SUITE = "tests/migrations"


def documented_blocks(language: str = "bash") -> str:
    return "".join(block for page in PAGES for block in
                   re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.S))


def documented(line: str) -> str:
    """``line`` exactly as a page prints it in a shell block (comments aside)."""
    printed = {re.sub(r"\s+#.*$", "", raw).strip() for raw in documented_blocks().splitlines()}
    assert line in printed, f"no page prints `{line}` any more: update this test with it"
    return line


def documented_form(pattern: str) -> None:
    """A page prints a command of this form (with its own example's arguments)."""
    assert re.search(pattern, documented_blocks(), re.M), f"no page prints {pattern!r}"


def fresh_shell_env() -> dict[str, str]:
    """A new terminal: no DATABASE_URL, no active venv, the venv not on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_URL", "FLASK_", "VIRTUAL_ENV", "TEST_DATABASE_URL"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and Path(p).resolve() != Path(VENV_BIN).resolve())
    return env


class Shell:
    """Runs documented lines in a repository copy, each in a fresh shell after the
    documented one step."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.activate = documented("source .venv/bin/activate")

    def __call__(self, line: str, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["bash", "-c", f"{self.activate} && {line}"],
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


def current(sh: Shell) -> str:
    return sh(documented("flask db current")).stdout.strip()


def add_model_line(repo: Path, line: str) -> None:
    path = repo / "backend/models/__init__.py"
    path.write_text(path.read_text().replace(SIZE_LINE, SIZE_LINE + line))


def on_embedded(repo: Path, statement: str) -> list[tuple]:
    with embedded_database_url(repo / ".data/postgres") as url:
        return execute_sql(parse_database_url(url), statement)


@pytest.fixture
def repo() -> Iterator[Path]:
    """A copy serving the fixture application, with the suite and the Makefile.

    Outside pytest's own temporary folder: the embedded PostgreSQL runs as another user,
    which must reach the copy's data and binaries, and any pytest process that starts
    meanwhile makes that folder private to its owner again."""
    with tempfile.TemporaryDirectory(prefix="loop-", ignore_cleanup_errors=True) as scratch:
        yield make_copy(Path(scratch) / "repo")


def make_copy(repo: Path) -> Path:
    repo = copy_repository(repo)
    shutil.copytree(ROOT / "tests", repo / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "containers"), dirs_exist_ok=True)
    shutil.copytree(ROOT / "testkit", repo / "testkit", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "requirements.lock", "requirements-dev.lock"):
        shutil.copy2(ROOT / name, repo / name)
    (repo / ".venv").symlink_to(ROOT / ".venv")
    return swap_app(repo, FIXTURE_APP)


def test_the_documented_loop_from_a_fresh_clone(repo, pg_server):
    sh = Shell(repo)
    test_server = url_text(pg_server.url)
    old_head = FIXTURE_REVISIONS[-1]

    # 1. Change a model, create the migration. The embedded database of a fresh clone is
    #    empty: it is brought to head first.
    add_model_line(repo, "    colour: Mapped[str | None] = mapped_column(sa.String(30))\n")
    documented_form(r'^scripts/create_migration\.sh "[^"]+"$')
    created = sh('scripts/create_migration.sh "add colour to widgets"')
    path = repo / created.stdout.splitlines()[0]
    revision = re.search(r"Revision ID: (\w+)", path.read_text()).group(1)
    sample = re.search(r"writes one file, named by creation\s+time, then lints it:\n+```\n(.*?)```",
                       (ROOT / "docs/workflow.md").read_text(), re.S).group(1)

    def shape(text: str) -> str:
        return re.sub(r"\d{8}_\d{4}_\w{12}_\w+\.py", "FILE", re.sub(r"\(\w+\)", "(T)", text))
    assert shape(created.stdout) == shape(sample)
    assert f"was {len(FIXTURE_REVISIONS)} revision(s) behind" in created.stderr

    # 2. Review it: it now fills the new column for old rows, so it gets a data file, and
    #    the lint passes on it and on the whole history.
    path.write_text(path.read_text().replace(
        "    # ### end Alembic commands ###\n\n\ndef downgrade",
        "    # ### end Alembic commands ###\n"
        "    op.execute(\"UPDATE widgets SET colour = 'plain' WHERE colour IS NULL\")\n\n\n"
        "def downgrade", 1))
    (repo / f"tests/migrations/data/{revision}.py").write_text(
        "from tests.migrations.data import rows\n\n"
        'ROWS = [{"__tablename__": "widgets", "id": 70001, "name": "an old widget"}]\n\n\n'
        "def upgraded(db):\n"
        '    assert rows(db, "SELECT colour FROM widgets WHERE id = 70001") == [("plain",)]\n\n\n'
        "def downgraded(db):\n"
        '    assert rows(db, "SELECT name FROM widgets WHERE id = 70001") == '
        '[("an old widget",)]\n')
    # The whole history: the new revision is clean (the fixture's own history may carry
    # findings of its own; they are not this loop's).
    linted = sh(documented("scripts/lint_migrations.sh"), ok=False)
    assert linted.returncode in (0, 1) and "revision(s) linted" in linted.stdout, linted.stderr
    assert revision not in linted.stdout, linted.stdout
    sh(documented("scripts/lint_migrations.sh head"))

    # 3. Apply, 5. inspect, 4. roll back, apply again: `flask` as printed.
    sh(documented("flask db upgrade"))
    assert current(sh) == f"{revision} (head)"
    history = sh(documented("flask db history")).stdout
    assert f"{old_head} -> {revision} (head), add colour to widgets" in history
    assert sh(documented("flask db heads")).stdout.startswith(f"{revision} (head)")
    sh(documented("flask db check"))
    sh(documented("flask db downgrade"))
    assert current(sh) == old_head
    documented_form(r"^flask db downgrade \w+$")
    sh(f"flask db downgrade {FIXTURE_REVISIONS[0]}")
    assert current(sh) == FIXTURE_REVISIONS[0]
    sh("flask db upgrade")
    assert current(sh) == f"{revision} (head)"

    # The graph marks the head and the development database's revision.
    graph = sh(documented("scripts/migration_graph.sh")).stdout
    assert f"{revision} (head) (current)" in graph or (
        f"{revision} (head)" in graph and "current" in graph)
    sh(documented("scripts/migration_graph.sh --output history.md"))
    assert (repo / "history.md").read_text().startswith("```mermaid")

    # 6. Prove the history: the script, and the Make target with and without options.
    walked = sh(documented("scripts/verify_migrations.sh -v"))
    assert revision in walked.stdout + walked.stderr
    sh(documented("make verify-migrations"))
    sh(documented('make verify-migrations VERIFY_ARGS="-v"'))

    # Committed: the history- and model-bound suite still passes, the data file included.
    sh.make_test(SUITE, test_database_url=test_server)

    # Backup and restore of the development database, with nothing else running.
    on_embedded(repo, "INSERT INTO widgets (name) VALUES ('kept')")
    dump = sh(documented("scripts/backup.sh")).stdout.strip().splitlines()[-1]
    assert (repo / dump).is_file() or Path(dump).is_file()
    on_embedded(repo, "DELETE FROM widgets")
    documented_form(r"^scripts/restore\.sh \S+ --yes$")
    sh(f"scripts/restore.sh {dump} --yes")
    assert on_embedded(repo, "SELECT name FROM widgets") == [("kept",)]

    # Two heads: a teammate's revision on the same parent arrives with a pull.
    add_model_line(repo, "    weight: Mapped[int | None] = mapped_column(sa.Integer)\n")
    write_revision(repo, TEAMMATE, old_head, "add widget weight", stamp="20261120_0900",
                   upgrade='op.add_column("widgets", sa.Column("weight", sa.Integer()))',
                   downgrade='op.drop_column("widgets", "weight")')
    shown = sh(documented("scripts/resolve_conflict.sh"), ok=False)
    assert "resolve_conflict.sh merge" in shown.stdout + shown.stderr
    sh(documented("scripts/resolve_conflict.sh merge"))
    merge, *marks = current(sh).split()
    assert merge not in (revision, TEAMMATE) and "(head)" in marks
    sh("flask db check")

    # Committed: the history with its merge still walks, up and down.
    sh.make_test(SUITE, test_database_url=test_server)
