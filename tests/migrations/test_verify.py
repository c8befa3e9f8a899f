"""scripts/verify_migrations.sh (migration_tools/verify.py) against pytest-alembic.

Ours answers the questions of pytest-alembic's ``test_downgrade_leaves_no_trace`` and
``test_up_down_consistency`` from one catalog query per step instead of reflection and
autogenerate, so it must be shown to agree with them: both pass the checkout's own history
(whatever application it holds), and both flag each broken downgrade below, ours naming the
revision at fault. pytest-alembic runs in-process, wired as ``tests/migrations/conftest.py``
wires it (our app, its env.py, the data files' rows), on the history's migrations directory;
ours runs in-process too, and once through the script, as a user runs it.

The broken revisions go on a copy of the project serving the fixture application
(``widgets``, ``testkit.support.fixture_project``), never on the checkout's history, so they
hold whatever application the checkout serves. The app in this process is the checkout's,
so on the fixture copy the schema is not compared with the models (``models=False``); both
sides' downgrade checks compare the database with itself, not with the models.

The checks only ours makes (a second upgrade that differs from the first, a downgrade that
commits a trace outside its transaction, an upgrade that fails) have tests of their own, and
so does a history with two phases: both walk it (ours with the data files' rows, its
contract finishing the registered backfill inline), and ours names a second head within a
phase with the deploy's own refusal.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from pytest_alembic.plugin.error import AlembicTestFailure
from pytest_alembic.tests import default as reference_default
from pytest_alembic.tests import experimental as reference_experimental
from sqlalchemy.engine import URL

from migration_tools import verify
from migration_tools.verify import cli as verify_cli
from testkit import harness
from testkit.harness import (
    NEXT_CONTRACT,
    NEXT_EXPAND,
    POST_BACKFILL,
    POST_CONTRACT,
    POST_EXPAND,
    add_post_deploy_branch,
)
from testkit.support import (
    FIXTURE_REVISIONS,
    ROOT,
    child_env,
    execute_sql,
    fixture_project,
    revisions,
    url_text,
    write_revision,
)
from tests.migrations import data

pytestmark = pytest.mark.filterwarnings(
    "ignore:Can't validate argument 'dialect_options':sqlalchemy.exc.SAWarning")

FIXTURE_HEAD = FIXTURE_REVISIONS[-1]
PROBE = 'op.add_column("widgets", sa.Column("probe_note", sa.Text(), nullable=True))'


@dataclass(frozen=True)
class Broken:
    """A revision on top of the fixture's head whose downgrade does not undo its upgrade."""

    revision: str
    message: str
    upgrade: str
    downgrade: str
    trace: str  # what our report shows of the difference

    def write(self, repo: Path, parent: str = FIXTURE_HEAD) -> None:
        write_revision(repo, self.revision, parent, self.message, self.upgrade, self.downgrade)

    @property
    def label(self) -> str:
        return f"{self.revision} ({self.message})"


BROKEN = {
    "downgrade forgets a column": Broken(
        "cafe00000011", "add widget probe notes", PROBE, "pass  # forgets op.drop_column",
        "+ column public.widgets.probe_note text"),
    "downgrade forgets an index": Broken(
        "cafe00000012", "index widget names",
        'op.create_index("ix_widgets_probe_name", "widgets", ["name"])',
        "pass  # forgets op.drop_index",
        "+ index public.widgets.ix_widgets_probe_name CREATE INDEX ix_widgets_probe_name "
        "ON public.widgets"),
    "downgrade drops a column the upgrade did not add": Broken(
        "cafe00000013", "add widget summaries", PROBE.replace("probe_note", "probe_summary"),
        'op.drop_column("widgets", "probe_summary")\nop.drop_column("widgets", "size")',
        "- column public.widgets.size integer"),
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
    """A copy of the project serving the fixture application, for a test to break."""
    return fixture_project(tmp_path / "repo")


REFERENCE_CHECKS = {
    "test_up_down_consistency": reference_default.test_up_down_consistency,
    "test_downgrade_leaves_no_trace": reference_experimental.test_downgrade_leaves_no_trace,
}


def reference(repo: Path, make_database: Callable[[], URL], rows: dict[str, list[dict]],
              checks: tuple[str, ...] = tuple(REFERENCE_CHECKS)) -> list[str]:
    """pytest-alembic's checks on ``repo``'s history, each on a fresh database as in
    test_pytest_alembic.py (its runner, which walks both phases in a deploy's order, and
    its skip of ``autocommit_block`` revisions in the downgrade check); the failures' texts,
    empty when they pass."""
    directory = repo / "migrations"
    scripts = ScriptDirectory(str(directory))
    skip = harness.transaction_leaving_revisions(scripts)
    failures = []
    for name in checks:
        with harness.migration_session(make_database()) as session:
            settings = session.alembic_config(directory, before_revision_data=rows)
            if name == "test_downgrade_leaves_no_trace":
                settings = dataclasses.replace(settings, skip_revisions=skip,
                                               minimum_downgrade_revision=harness.newest_merge(
                                                   scripts))
                with session.engine.connect() as connection:
                    harness.create_bookkeeping(connection)
            try:
                with harness.runner(settings, session.engine) as runner:
                    REFERENCE_CHECKS[name](runner)
            except AlembicTestFailure as exc:
                failures.append(f"{name}: {exc}")
    return failures


@pytest.fixture(scope="module")
def rows(data_fixtures) -> dict[str, list[dict]]:
    return data.before_revision_data(data_fixtures)


def ours(repo: Path, url: URL, models: bool = False) -> verify.Report:
    return verify.verify(url, repo / "migrations", models=models)


def test_both_pass_the_checkouts_history(databases, rows) -> None:
    """Whatever application the checkout holds: its history, its models, its data files."""
    report = ours(ROOT, databases(), models=True)

    assert report.all_problems() == []
    assert [result.revision for result in report.revisions] == revisions(ROOT)
    assert report.stopped_at is None and report.models_seconds is not None
    assert reference(ROOT, databases, rows) == []


def test_both_pass_the_fixture_history(repo, databases) -> None:
    """The good history the broken revisions below go on top of: neither side complains
    before a test breaks it."""
    report = ours(repo, databases())

    assert report.all_problems() == []
    assert [result.revision for result in report.revisions] == list(FIXTURE_REVISIONS)
    assert reference(repo, databases, {}) == []


@pytest.mark.parametrize("scenario", list(BROKEN))
def test_both_flag_a_downgrade_that_leaves_a_trace(scenario: str, repo, databases) -> None:
    broken = BROKEN[scenario]
    broken.write(repo)

    # test_up_down_consistency only proves the downgrades run: these do.
    failures = reference(repo, databases, {}, ("test_downgrade_leaves_no_trace",))
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
    parent = FIXTURE_HEAD
    for broken in BROKEN.values():
        broken.write(repo, parent)
        parent = broken.revision

    report = ours(repo, databases())

    assert report.stopped_at is None
    assert [r.revision for r in report.revisions] == [
        *FIXTURE_REVISIONS, *(broken.revision for broken in BROKEN.values())]
    assert [p.split(" leaves a trace")[0] for p in report.all_problems()] == [
        f"downgrade of {broken.label}" for broken in BROKEN.values()]


ONLY_OURS = {
    # Its downgrade restores the schema but leaves a row that changes the next upgrade:
    # pytest-alembic's consistency check only runs the second upgrade, ours compares it.
    "a second upgrade differs from the first": (
        "cafe00000021", "add a column named after the data",
        '''if op.get_bind().exec_driver_sql("SELECT count(*) FROM widgets").scalar():
    op.add_column("widgets", sa.Column("second", sa.Text()))
else:
    op.add_column("widgets", sa.Column("first", sa.Text()))''',
        '''op.drop_column("widgets", "first")
op.execute("INSERT INTO widgets (name) VALUES ('left behind')")''',
        ["upgrading cafe00000021 (add a column named after the data) again gives a "
         "different schema", "- column public.widgets.first text",
         "+ column public.widgets.second text"]),
    "a trace committed outside the transaction": (
        "cafe00000022", "index widget names concurrently",
        "pass",
        '''with op.get_context().autocommit_block():
    op.create_index("ix_widgets_probe_name", "widgets", ["name"], postgresql_concurrently=True)''',
        ["downgrade of cafe00000022 (index widget names concurrently) leaves a trace",
         "cannot go on after cafe00000022 (index widget names concurrently)"]),
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
    write_revision(repo, revision, FIXTURE_HEAD, message, upgrade, downgrade)

    report = ours(repo, databases())
    problems = "\n".join(report.all_problems())

    for text in expected:
        assert text in problems, problems
    assert all(not r.problems for r in report.revisions if r.revision != revision)


def test_the_script_verifies_the_checkouts_history(empty_db) -> None:
    history = revisions(ROOT)

    proc = subprocess.run([str(ROOT / "scripts/verify_migrations.sh"), "-v"],
                          cwd=ROOT, env=child_env(empty_db), capture_output=True, text=True,
                          timeout=120)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:len(history)]] == [
        ["ok", revision] for revision in history], proc.stdout
    assert lines[-1].startswith(f"verified {len(history)} revision(s) in "), proc.stdout
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


def test_server_url_makes_and_drops_its_scratch_database(pg_server, fixture_repo) -> None:
    code, out, err = run_cli("--server-url", url_text(pg_server.url), "--no-models",
                             "--migrations", str(fixture_repo / "migrations"))

    assert code == 0, out + err
    name = err.split("created scratch database ")[1].split(";")[0]
    assert name.startswith("verify_")
    assert execute_sql(pg_server.url, "SELECT 1 FROM pg_database WHERE datname = %s",
                       (name,)) == []


def test_ours_flags_a_downgrade_that_leaves_a_constraint_validated(repo, databases) -> None:
    """A downgrade of VALIDATE CONSTRAINT that does nothing leaves the constraint stronger
    than it found it; pytest-alembic's autogenerate diff cannot see NOT VALID, ours does."""
    write_revision(repo, "cafe00000014", FIXTURE_HEAD, "check widget names",
                   stamp="20261120_1000",
                   upgrade="op.execute(\"ALTER TABLE widgets ADD CONSTRAINT ck_probe_name "
                           "CHECK (name <> '') NOT VALID\")",
                   downgrade='op.execute("ALTER TABLE widgets DROP CONSTRAINT ck_probe_name")')
    write_revision(repo, "cafe00000015", "cafe00000014", "validate widget names",
                   stamp="20261120_1001",
                   upgrade='op.execute("ALTER TABLE widgets VALIDATE CONSTRAINT ck_probe_name")',
                   downgrade="pass  # leaves it validated")

    report = ours(repo, databases())

    problems = [p for p in report.all_problems() if p.startswith("downgrade of")]
    assert len(problems) == 1, report.all_problems()
    assert problems[0].startswith("downgrade of cafe00000015 (validate widget names) leaves")
    assert "- constraint public.widgets.ck_probe_name CHECK (((name)::text <> ''::text)) " \
        "NOT VALID" in problems[0], problems[0]


@pytest.fixture
def two_phases(repo: Path) -> Path:
    """The fixture project with releases N+1 and N+2, each an expand and a post-deploy
    contract, and the data files of N+1 (3 widgets before its expand), with the data
    package they import."""
    for package in ("tests", "tests/migrations", "tests/migrations/data"):
        (repo / package).mkdir(exist_ok=True)
        shutil.copy2(ROOT / package / "__init__.py", repo / package / "__init__.py")
    add_post_deploy_branch(repo, next_release=True)
    return repo


def test_both_walk_both_phases_in_a_valid_order_with_data(two_phases, databases) -> None:
    """Each post-deploy revision comes after the main-line revisions it depends on; N+2's
    expand, which sits on N+1's expand, may come before N+1's contract. The contract meets
    the rows of the data file and finishes the backfill inline."""
    url = databases()

    report = ours(two_phases, url)

    assert report.all_problems() == []
    order = [result.revision for result in report.revisions]
    assert order == [*FIXTURE_REVISIONS, POST_EXPAND, NEXT_EXPAND, POST_CONTRACT, NEXT_CONTRACT]
    assert [r.revision for r in report.revisions if r.post_deploy] == [POST_CONTRACT,
                                                                       NEXT_CONTRACT]
    assert {r.revision: r.rows for r in report.revisions if r.rows} == {POST_EXPAND: 3}
    assert report.phases_line() == (f"pre-deploy: 4 revision(s), head {NEXT_EXPAND}; "
                                    f"post-deploy: 2 revision(s), head {NEXT_CONTRACT}")
    assert execute_sql(url, "SELECT count(*) FILTER (WHERE code = 'W-' || id), count(*) "
                            "FROM widgets") == [(3, 3)]
    assert execute_sql(url, "SELECT is_nullable FROM information_schema.columns "
                            "WHERE table_name = 'widgets' AND column_name = 'code'") == [("NO",)]
    assert execute_sql(url, "SELECT state FROM background_migrations WHERE name = %s",
                       (POST_BACKFILL,)) == [("done",)]
    assert execute_sql(url, "SELECT version_num FROM alembic_version") == [(NEXT_CONTRACT,)]
    assert reference(two_phases, databases, verify.data_rows(two_phases / "migrations")) == []


def test_a_second_head_within_a_phase_is_named_one_pre_and_one_post_are_not(
        two_phases, databases) -> None:
    for rev in ("cafe00000031", "cafe00000032"):
        write_revision(two_phases, rev, NEXT_CONTRACT, f"contract {rev}", stamp="20261212_1000")

    report = ours(two_phases, databases())

    assert report.all_problems() == [
        "the post-deploy revisions have 2 heads (cafe00000031, cafe00000032): merge them with "
        '`flask db merge cafe00000031 cafe00000032 -m "merge heads"` '
        "(or scripts/resolve_conflict.sh)"]
    assert all(not result.problems for result in report.revisions)


def test_the_script_marks_the_post_deploy_revisions_and_compares_the_models(
        two_phases, pg_server) -> None:
    proc = subprocess.run([str(two_phases / "scripts/verify_migrations.sh"), "-v",
                           "--server-url", url_text(pg_server.url)],
                          cwd=two_phases, env=child_env(None), capture_output=True, text=True,
                          timeout=120)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    marked = [line.split()[1] for line in lines if "[post-deploy]" in line]
    assert marked == [POST_CONTRACT, NEXT_CONTRACT], proc.stdout
    assert [line.split()[1] for line in lines if "[3 row(s)]" in line] == [POST_EXPAND]
    assert f"pre-deploy: 4 revision(s), head {NEXT_EXPAND}; post-deploy: 2 revision(s), " \
        f"head {NEXT_CONTRACT}" in lines, proc.stdout
    assert "models compared in" in proc.stdout
    assert lines[-1].startswith("verified 6 revision(s) in "), proc.stdout
