"""The migration tests fail where they should: each broken change below goes into a copy of
the project serving the fixture application (``widgets``, ``testkit.support.fixture_project``),
the relevant migration test runs there in a child pytest (on our session's server), and it
must fail, naming the revision (or the column) at fault. The fixture, not the checkout's
application, so this holds whatever application the checkout serves; the child gets the
tests of tests/migrations and their fixtures, without the checkout's data files (they belong
to its history, not the fixture's).

A history with a post-deploy branch (one head on the main line, one on the branch) is the
other side of the proof: the child runs every migration test on it and must pass, the
normal two heads included, while a second head within the post-deploy phase fails.

The children start together, when the first of these tests asks for them, so they cost
about one child's start-up on two cores rather than one each.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.harness import (
    NEXT_CONTRACT,
    NEXT_EXPAND,
    POST_CONTRACT,
    POST_EXPAND,
    add_post_deploy_branch,
)
from testkit.support import (
    FIXTURE_REVISIONS,
    ROOT,
    child_env,
    fixture_project,
    url_text,
    write_revision,
)

FIXTURE_HEAD = FIXTURE_REVISIONS[-1]
MODULE = "tests/migrations/test_pytest_alembic.py"
HISTORY = "tests/migrations/test_history.py"
# What the child needs of tests/: the fixtures and the migration tests, nothing else.
TEST_FILES = ("__init__.py", "conftest.py", "migrations")


def forgotten_drop_column(repo: Path) -> None:
    write_revision(repo, "cafe00000001", FIXTURE_HEAD, "add widget probe notes",
                   upgrade='op.add_column("widgets", sa.Column("probe_note", sa.Text(), '
                           'nullable=True))',
                   downgrade="pass  # forgets op.drop_column")


def model_without_migration(repo: Path) -> None:
    model = repo / "backend/models/__init__.py"
    anchor = "    size: Mapped[int | None] = mapped_column(sa.Integer)\n"
    text = model.read_text()
    assert anchor in text, "the fixture's Widget model changed: update this scenario's anchor"
    model.write_text(text.replace(
        anchor, anchor + "    estimate_hours: Mapped[int | None] = mapped_column(sa.Integer)\n"))


def second_head(repo: Path) -> None:
    write_revision(repo, "cafe00000003", FIXTURE_REVISIONS[-2], "branch off the history")


def second_post_deploy_head(repo: Path) -> None:
    add_post_deploy_branch(repo)
    for rev in ("cafe00000006", "cafe00000007"):
        write_revision(repo, rev, POST_CONTRACT, f"contract {rev}", stamp="20261211_1000",
                       depends_on=POST_EXPAND)


def two_releases_with_post_deploy_revisions(repo: Path) -> None:
    add_post_deploy_branch(repo, next_release=True)


def data_loss(repo: Path) -> None:
    write_revision(repo, "cafe00000004", FIXTURE_HEAD, "archive small widgets",
                   upgrade="""op.execute("DELETE FROM widgets WHERE size < 10")""")
    (repo / "tests/migrations/data/cafe00000004.py").write_text('''"""archive small widgets."""

from tests.migrations.data import rows

ROWS = [{"__tablename__": "widgets", "id": 990001, "name": "small", "size": 1}]


def upgraded(db):
    assert rows(db, "SELECT id, size FROM widgets WHERE id = 990001") == [(990001, 1)]
''')


def data_migration_without_data_file(repo: Path) -> None:
    write_revision(repo, "cafe00000005", FIXTURE_HEAD, "default widget sizes",
                   upgrade="""op.execute("UPDATE widgets SET size = 1 WHERE size IS NULL")""")


@dataclass(frozen=True)
class Scenario:
    """A change, the migration test that must catch it (``None``: every selected test must
    pass), and what the child's output names."""

    change_repository: Callable[[Path], None]
    selection: list[str]
    failing_test: str | None
    names: tuple[str, ...]


SCENARIOS = {
    "downgrade forgets a column": Scenario(
        forgotten_drop_column, [MODULE, "-k", "test_downgrade_leaves_no_trace"],
        f"{MODULE}::test_downgrade_leaves_no_trace", ("cafe00000001", "probe_note")),
    "model changed without a migration": Scenario(
        model_without_migration, [MODULE, "-k", "test_model_definitions_match_ddl"],
        f"{MODULE}::test_model_definitions_match_ddl", ("add_column('widgets'", "estimate_hours")),
    "second head": Scenario(
        second_head, [f"{HISTORY}::test_one_head_per_phase"],
        f"{HISTORY}::test_one_head_per_phase",
        (f"the revision history has 2 heads (cafe00000003, {FIXTURE_HEAD})",
         'flask db merge heads -m "merge heads"')),
    "second post-deploy head": Scenario(
        second_post_deploy_head, [f"{HISTORY}::test_one_head_per_phase"],
        f"{HISTORY}::test_one_head_per_phase",
        ("the post-deploy revisions have 2 heads (cafe00000006, cafe00000007)",
         "flask db merge cafe00000006 cafe00000007")),
    "one head per phase is no conflict": Scenario(
        two_releases_with_post_deploy_revisions, [MODULE, HISTORY, "-rp"], None,
        (f"PASSED {HISTORY}::test_one_head_per_phase",
         f"PASSED {HISTORY}::test_every_revision_upgrades_downgrades_and_upgrades_again",
         f"PASSED {MODULE}::test_upgrade",
         f"PASSED {MODULE}::test_up_down_consistency",
         f"PASSED {MODULE}::test_model_definitions_match_ddl",
         f"PASSED {MODULE}::test_downgrade_leaves_no_trace",
         *(f"PASSED {MODULE}::test_revision_keeps_its_data[{rev}]"
           for rev in (POST_EXPAND, POST_CONTRACT, NEXT_EXPAND, NEXT_CONTRACT)))),
    "data migration loses rows": Scenario(
        data_loss, [f"{MODULE}::test_revision_keeps_its_data[cafe00000004]"],
        f"{MODULE}::test_revision_keeps_its_data[cafe00000004]",
        ("cafe00000004 (archive small widgets)", "after upgrade")),
    "data migration without a data file": Scenario(
        data_migration_without_data_file,
        [MODULE, "-k", "test_revisions_that_write_rows_have_data_checks"],
        f"{MODULE}::test_revisions_that_write_rows_have_data_checks",
        ("cafe00000005 (default widget sizes)", "tests/migrations/data/<revision>.py")),
}


def checkout_data_file(directory: str, names: list[str]) -> set[str]:
    """shutil.copytree's ``ignore``: the checkout's own data files, which name revisions
    the fixture's history does not have (the loader in ``__init__.py`` stays)."""
    if Path(directory).resolve() != (ROOT / "tests/migrations/data").resolve():
        return {name for name in names if name == "__pycache__"}
    return {name for name in names if name != "__init__.py"}


def copy_with_tests(dest: Path) -> Path:
    """The fixture project, with testkit and the tests the child runs (copy_repository
    leaves both out)."""
    fixture_project(dest)
    shutil.copytree(ROOT / "testkit", dest / "testkit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "tests").mkdir(exist_ok=True)
    for name in TEST_FILES:
        src = ROOT / "tests" / name
        if src.is_dir():
            shutil.copytree(src, dest / "tests" / name, ignore=checkout_data_file,
                            dirs_exist_ok=True)
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
            scenario.change_repository(repo)
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

    if expected.failing_test is None:
        summary = output.strip().splitlines()[-1]
        assert code == 0, f"expected the child's tests to pass, got exit {code}:\n{output}"
        assert "passed" in summary and "failed" not in summary and "error" not in summary, output
    else:
        assert code == 1, f"expected the child's tests to fail (exit 1), got {code}:\n{output}"
        assert f"FAILED {expected.failing_test}" in output, output
        assert "1 failed" in output, output
    for name in expected.names:
        assert name in output, f"{name!r} is not named in the child's output:\n{output}"
