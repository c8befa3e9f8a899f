"""scripts/verify_migrations.sh (migration_tools/verify.py) against pytest-alembic.

Ours answers the questions of pytest-alembic's ``test_downgrade_leaves_no_trace`` and
``test_up_down_consistency`` from one catalog query per step instead of reflection and
autogenerate, so it must be shown to agree with them: on copies of the repository, both
pass the shipped history, and both flag each broken downgrade below, ours naming the
revision at fault. pytest-alembic runs in-process, wired as ``tests/migrations/conftest.py``
wires it (our app, its env.py, the data files' rows), on the copy's migrations directory;
ours runs in-process too, and once through the script, as a user runs it.

The checks only ours makes (a second upgrade that differs from the first, a downgrade that
commits a trace outside its transaction, an upgrade that fails) have tests of their own.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_alembic
from alembic.script import ScriptDirectory
from pytest_alembic.plugin.error import AlembicTestFailure
from pytest_alembic.tests import default as reference_default
from pytest_alembic.tests import experimental as reference_experimental
from sqlalchemy.engine import URL

from migration_tools import verify
from migration_tools.verify import cli as verify_cli
from testkit.support import copy_repository, revisions, write_revision
from tests.conftest import ROOT, child_env, execute_sql, url_text
from tests.migrations import data, harness

pytestmark = pytest.mark.filterwarnings(
    "ignore:Can't validate argument 'dialect_options':sqlalchemy.exc.SAWarning")

SHIPPED = revisions()
HEAD = SHIPPED[-1]
NOTES = 'op.add_column("tasks", sa.Column("probe_note", sa.Text(), nullable=True))'


@dataclass(frozen=True)
class Broken:
    """A revision on top of the shipped head whose downgrade does not undo its upgrade."""

    revision: str
    message: str
    upgrade: str
    downgrade: str
    trace: str  # what our report shows of the difference

    def write(self, repo: Path, parent: str = HEAD) -> None:
        write_revision(repo, self.revision, parent, self.message, self.upgrade, self.downgrade)

    @property
    def label(self) -> str:
        return f"{self.revision} ({self.message})"


BROKEN = {
    "downgrade forgets a column": Broken(
        "cafe00000011", "add task notes", NOTES, "pass  # forgets op.drop_column",
        "+ column public.tasks.probe_note text"),
    "downgrade forgets an index": Broken(
        "cafe00000012", "index task titles",
        'op.create_index("ix_tasks_probe_title", "tasks", ["title"])',
        "pass  # forgets op.drop_index",
        "+ index public.tasks.ix_tasks_probe_title CREATE INDEX ix_tasks_probe_title "
        "ON public.tasks"),
    "downgrade drops a column the upgrade did not add": Broken(
        "cafe00000013", "add task summaries", NOTES.replace("probe_note", "probe_summary"),
        'op.drop_column("tasks", "probe_summary")\nop.drop_column("tasks", "created_at")',
        "- column public.tasks.created_at timestamp with time zone"),
}


@pytest.fixture
def databases(pg_server) -> Iterator[Callable[[], URL]]:
    """Fresh empty databases on the session's server, as many as the test asks for."""
    made: list[str] = []

    def make() -> URL:
        url = pg_server.create_database()
        made.append(url.database)
        return url

    yield make
    for name in made:
        pg_server.drop_database(name)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_repository(tmp_path / "repo")


REFERENCE_CHECKS = {
    "test_up_down_consistency": reference_default.test_up_down_consistency,
    "test_downgrade_leaves_no_trace": reference_experimental.test_downgrade_leaves_no_trace,
}


def reference(repo: Path, make_database: Callable[[], URL], rows: dict[str, list[dict]],
              checks: tuple[str, ...] = tuple(REFERENCE_CHECKS)) -> list[str]:
    """pytest-alembic's checks on ``repo``'s history, each on a fresh database as in
    test_pytest_alembic.py (with its skip of ``autocommit_block`` revisions in the
    downgrade check); the failures' texts, empty when they pass."""
    directory = repo / "migrations"
    scripts = ScriptDirectory(str(directory))
    skip = harness.transaction_leaving_revisions(scripts)
    failures = []
    for name in checks:
        with harness.migration_session(make_database()) as session:
            # MigrationSession.alembic_config, for a migrations directory other than ours.
            config = session.app.extensions["migrate"].migrate.get_config(
                directory=str(directory))
            config.config_args["script_location"] = config.get_main_option("script_location")
            settings = pytest_alembic.config.Config(alembic_config=config,
                                                    before_revision_data=rows)
            if name == "test_downgrade_leaves_no_trace":
                settings = dataclasses.replace(settings, skip_revisions=skip,
                                               minimum_downgrade_revision=harness.newest_merge(
                                                   scripts))
            try:
                with pytest_alembic.runner(config=settings, engine=session.engine) as runner:
                    REFERENCE_CHECKS[name](runner)
            except AlembicTestFailure as exc:
                failures.append(f"{name}: {exc}")
    return failures


@pytest.fixture(scope="module")
def rows(data_fixtures) -> dict[str, list[dict]]:
    return data.before_revision_data(data_fixtures)


def ours(repo: Path, url: URL, models: bool = True) -> verify.Report:
    return verify.verify(url, repo / "migrations", models=models)


def test_both_pass_the_shipped_history(repo, databases, rows) -> None:
    report = ours(repo, databases())

    assert report.all_problems() == []
    assert [result.revision for result in report.revisions] == SHIPPED
    assert report.stopped_at is None and report.models_seconds is not None
    assert reference(repo, databases, rows) == []


@pytest.mark.parametrize("scenario", list(BROKEN))
def test_both_flag_a_downgrade_that_leaves_a_trace(scenario: str, repo, databases,
                                                   rows) -> None:
    broken = BROKEN[scenario]
    broken.write(repo)

    # test_up_down_consistency only proves the downgrades run: these do.
    failures = reference(repo, databases, rows, ("test_downgrade_leaves_no_trace",))
    assert len(failures) == 1, failures
    assert f"'{broken.revision}'" in failures[0]

    report = ours(repo, databases())
    problems = [p for p in report.all_problems() if p.startswith("downgrade of")]
    assert len(problems) == 1, report.all_problems()
    assert problems[0].startswith(f"downgrade of {broken.label} leaves a trace"), problems
    assert broken.trace in problems[0], problems[0]
    assert [r.revision for r in report.revisions if r.problems] == [broken.revision]


def test_ours_reports_every_broken_revision_in_one_walk(repo, databases) -> None:
    """A trace is rolled back, so the walk goes on: one run names all three."""
    parent = HEAD
    for broken in BROKEN.values():
        broken.write(repo, parent)
        parent = broken.revision

    report = ours(repo, databases(), models=False)

    assert report.stopped_at is None
    assert [r.revision for r in report.revisions] == SHIPPED + [b.revision for b in
                                                                BROKEN.values()]
    assert [p.split(" leaves a trace")[0] for p in report.all_problems()] == [
        f"downgrade of {broken.label}" for broken in BROKEN.values()]


ONLY_OURS = {
    # Its downgrade restores the schema but leaves a row that changes the next upgrade:
    # pytest-alembic's consistency check only runs the second upgrade, ours compares it.
    "a second upgrade differs from the first": (
        "cafe00000021", "add a column named after the data",
        '''if op.get_bind().exec_driver_sql("SELECT count(*) FROM users").scalar():
    op.add_column("tasks", sa.Column("second", sa.Text()))
else:
    op.add_column("tasks", sa.Column("first", sa.Text()))''',
        '''op.drop_column("tasks", "first")
op.execute("INSERT INTO users (email, name) VALUES ('left@example.com', 'Left')")''',
        ["upgrading cafe00000021 (add a column named after the data) again gives a "
         "different schema", "- column public.tasks.first text",
         "+ column public.tasks.second text"]),
    "a trace committed outside the transaction": (
        "cafe00000022", "index task titles concurrently",
        "pass",
        '''with op.get_context().autocommit_block():
    op.create_index("ix_tasks_probe_title", "tasks", ["title"], postgresql_concurrently=True)''',
        ["downgrade of cafe00000022 (index task titles concurrently) leaves a trace",
         "cannot go on after cafe00000022 (index task titles concurrently)"]),
    "an upgrade that fails": (
        "cafe00000023", "rename a table that is not there",
        'op.rename_table("no_such_table", "still_not_there")', "pass",
        ['upgrade of cafe00000023 (rename a table that is not there) failed: relation '
         '"no_such_table" does not exist',
         "the walk stopped at cafe00000023"]),
}


@pytest.mark.parametrize("scenario", list(ONLY_OURS))
def test_ours_flags(scenario: str, repo, databases) -> None:
    revision, message, upgrade, downgrade, expected = ONLY_OURS[scenario]
    write_revision(repo, revision, HEAD, message, upgrade, downgrade)

    report = ours(repo, databases())
    problems = "\n".join(report.all_problems())

    for text in expected:
        assert text in problems, problems
    assert all(not r.problems for r in report.revisions if r.revision != revision)


def test_the_script_verifies_the_shipped_history(empty_db) -> None:
    proc = subprocess.run([str(ROOT / "scripts/verify_migrations.sh"), "-v"],
                          cwd=ROOT, env=child_env(empty_db), capture_output=True, text=True,
                          timeout=120)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:len(SHIPPED)]] == [
        ["ok", revision] for revision in SHIPPED], proc.stdout
    assert lines[-1].startswith(f"verified {len(SHIPPED)} revision(s) in "), proc.stdout
    assert lines[-1].endswith(" s per revision)"), proc.stdout


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = verify_cli.run(verify_cli.parse_args(list(args)), out, err)
    return code, out.getvalue(), err.getvalue()


def test_refuses_a_database_that_is_not_empty(empty_db) -> None:
    execute_sql(empty_db, "CREATE TABLE keep_me (id int)")

    code, out, err = run_cli("--url", url_text(empty_db))

    assert code == 2, out + err
    assert "the database is not empty (it has public.keep_me)" in err
    assert execute_sql(empty_db, "SELECT to_regclass('keep_me') IS NOT NULL") == [(True,)]


def test_server_url_makes_and_drops_its_scratch_database(pg_server) -> None:
    code, out, err = run_cli("--server-url", url_text(pg_server.url), "--no-models")

    assert code == 0, out + err
    name = err.split("created scratch database ")[1].split(";")[0]
    assert name.startswith("verify_")
    assert execute_sql(pg_server.url, "SELECT 1 FROM pg_database WHERE datname = %s",
                       (name,)) == []


def test_ours_flags_a_downgrade_that_leaves_a_constraint_validated(repo, databases) -> None:
    """A downgrade of VALIDATE CONSTRAINT that does nothing leaves the constraint stronger
    than it found it; pytest-alembic's autogenerate diff cannot see NOT VALID, ours does."""
    write_revision(repo, "cafe00000014", HEAD, "check task titles", stamp="20261120_1000",
                   upgrade="op.execute(\"ALTER TABLE tasks ADD CONSTRAINT ck_probe_title "
                           "CHECK (title <> '') NOT VALID\")",
                   downgrade='op.execute("ALTER TABLE tasks DROP CONSTRAINT ck_probe_title")')
    write_revision(repo, "cafe00000015", "cafe00000014", "validate task titles",
                   stamp="20261120_1001",
                   upgrade='op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT ck_probe_title")',
                   downgrade="pass  # leaves it validated")

    report = ours(repo, databases(), models=False)

    problems = [p for p in report.all_problems() if p.startswith("downgrade of")]
    assert len(problems) == 1, report.all_problems()
    assert problems[0].startswith("downgrade of cafe00000015 (validate task titles) leaves")
    assert "- constraint public.tasks.ck_probe_title CHECK (((title)::text <> ''::text)) " \
        "NOT VALID" in problems[0], problems[0]
