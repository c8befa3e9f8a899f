"""The migration tests fail where they should: each broken change below goes into a copy of
the repository, the relevant migration test runs there in a child pytest (on our session's
server), and it must fail, naming the revision (or the column) at fault.

The children start together, when the first of these tests asks for them, so the four of
them cost about one child's start-up on two cores rather than four.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.support import ROOT, copy_repository, revisions, write_revision
from tests.conftest import child_env, url_text

HEAD = revisions()[-1]
PARENT_OF_HEAD = revisions()[-2]
MODULE = "tests/migrations/test_pytest_alembic.py"
# What the child needs of tests/: the fixtures and the migration tests, nothing else.
TEST_FILES = ("__init__.py", "conftest.py", "support.py", "migrations")


def forgotten_drop_column(repo: Path) -> None:
    write_revision(repo, "cafe00000001", HEAD, "add task notes",
                   upgrade='op.add_column("tasks", sa.Column("probe_note", sa.Text(), '
                           'nullable=True))',
                   downgrade="pass  # forgets op.drop_column")


def model_without_migration(repo: Path) -> None:
    model = repo / "backend/models/task.py"
    anchor = "    due_date: Mapped[date | None] = mapped_column(sa.Date, index=True)\n"
    text = model.read_text()
    assert anchor in text, "backend/models/task.py changed: update this scenario's anchor"
    model.write_text(text.replace(
        anchor, anchor + "    estimate_hours: Mapped[int | None] = mapped_column(sa.Integer)\n"))


def second_head(repo: Path) -> None:
    write_revision(repo, "cafe00000003", PARENT_OF_HEAD, "branch off the history")


def data_loss(repo: Path) -> None:
    write_revision(repo, "cafe00000004", HEAD, "archive done tasks",
                   upgrade="""op.execute("DELETE FROM tasks WHERE status = 'done'")""")
    (repo / "tests/migrations/data/cafe00000004.py").write_text('''"""archive done tasks."""

from tests.migrations.data import rows

ROWS = [
    {"__tablename__": "users", "id": 990000, "email": "archive@example.com", "name": "Owner"},
    {"__tablename__": "projects", "id": 990000, "owner_id": 990000, "name": "P", "slug": "p"},
    {"__tablename__": "tasks", "id": 990001, "project_id": 990000, "title": "t", "status": "done"},
]


def upgraded(db):
    assert rows(db, "SELECT id, status FROM tasks WHERE id = 990001") == [(990001, "done")]
''')


@dataclass(frozen=True)
class Scenario:
    """A broken change, the migration test that must catch it, and what its output names."""

    break_repository: Callable[[Path], None]
    selection: list[str]
    failing_test: str
    names: tuple[str, ...]


SCENARIOS = {
    "downgrade forgets a column": Scenario(
        forgotten_drop_column, [MODULE, "-k", "test_downgrade_leaves_no_trace"],
        "test_downgrade_leaves_no_trace", ("cafe00000001", "probe_note")),
    "model changed without a migration": Scenario(
        model_without_migration, [MODULE, "-k", "test_model_definitions_match_ddl"],
        "test_model_definitions_match_ddl", ("add_column('tasks'", "estimate_hours")),
    "second head": Scenario(
        second_head, [MODULE, "-k", "test_single_head_revision"],
        "test_single_head_revision", ("cafe00000003", HEAD)),
    "data migration loses rows": Scenario(
        data_loss, [f"{MODULE}::test_revision_keeps_its_data[cafe00000004]"],
        "test_revision_keeps_its_data[cafe00000004]",
        ("cafe00000004 (archive done tasks)", "after upgrade")),
}


def copy_with_tests(dest: Path) -> Path:
    """The project and the tests the child runs; copy_repository leaves tests/ out."""
    copy_repository(dest)
    (dest / "tests").mkdir()
    for name in TEST_FILES:
        src = ROOT / "tests" / name
        if src.is_dir():
            shutil.copytree(src, dest / "tests" / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / "tests" / name)
    return dest


class Children:
    """One child pytest per selected scenario, all started at once, waited for one by one."""

    def __init__(self, names: list[str], base: Path, server_url: str) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self.results: dict[str, tuple[int, str]] = {}
        env = child_env(None, TEST_DATABASE_URL=server_url)
        for index, name in enumerate(names):
            scenario = SCENARIOS[name]
            repo = copy_with_tests(base / f"repo{index}")
            scenario.break_repository(repo)
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 f"--basetemp={base / f'bt{index}'}", *scenario.selection],
                cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True)

    def result(self, name: str) -> tuple[int, str]:
        if name not in self.results:
            out, _ = self.procs[name].communicate(timeout=180)
            self.results[name] = (self.procs[name].returncode, out)
        return self.results[name]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture(scope="module")
def children(request: pytest.FixtureRequest, pg_server,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Children]:
    """Start the children of every scenario selected in this run (and only those)."""
    selected = sorted({item.callspec.params["scenario"] for item in request.session.items
                       if item.module is request.module and hasattr(item, "callspec")})
    started = Children(selected, tmp_path_factory.mktemp("catches"), url_text(pg_server.url))
    yield started
    started.stop()


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_harness_catches(scenario: str, children: Children) -> None:
    code, output = children.result(scenario)
    expected = SCENARIOS[scenario]

    assert code == 1, f"expected the child's tests to fail (exit 1), got {code}:\n{output}"
    assert f"FAILED {MODULE}::{expected.failing_test}" in output, output
    assert "1 failed" in output, output
    for name in expected.names:
        assert name in output, f"{name!r} is not named in the child's output:\n{output}"
