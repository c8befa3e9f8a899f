"""scripts/check_compat.sh: the previous release's tests on this checkout's schema.

Each test works on a git repository made from the fixture project (``widgets``): release N
is a commit with a small test suite of its own, and "this checkout" is its working tree,
to which a test adds the revision of release N+1.

With two phases, release N carries a post-deploy branch (testkit.harness.add_post_deploy_branch:
an expand registering a backfill, a contract finishing it and setting NOT NULL). N's tests
then run on the schema of a rolling deploy: N's own contract applied, this checkout's new
pre-deploy revisions applied, its new post-deploy revisions not (they run once N is gone).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testkit.harness import POST_CONTRACT, POST_EXPAND, add_post_deploy_branch
from testkit.support import FIXTURE_REVISIONS, child_env, fixture_project, url_text, write_revision

# Release N's own tests: a database per run on TEST_DATABASE_URL's server, migrated with the
# tree's revisions, and the app's test client, as a team's suite would have them.
CONFTEST = '''\
"""Release N's test setup: a fresh database on TEST_DATABASE_URL's server, at head."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from backend import create_app
from backend.config import Config, parse_database_url
from migration_tools import scratch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def client():
    server = parse_database_url(os.environ["TEST_DATABASE_URL"], "TEST_DATABASE_URL")
    url = scratch.create_database(server, f"compat_{uuid.uuid4().hex[:12]}")
    text = url.render_as_string(hide_password=False)
    subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], cwd=ROOT, check=True,
                   env={**os.environ, "DATABASE_URL": text}, capture_output=True)
    app = create_app(Config.for_url(url))
    app.testing = True
    yield app.test_client()
    from backend.extensions import db

    with app.app_context():
        db.engine.dispose()
    scratch.drop_database(server, url.database)
'''
WIDGET_TESTS = '''\
def test_add_and_list_widgets(client):
    created = client.post("/api/widgets", json={"name": "bolt"})
    listed = client.get("/api/widgets")

    assert created.status_code == 201
    assert [w["name"] for w in listed.get_json()["items"]] == ["bolt"]
'''
DOES_NOT_IMPORT = "from backend.models import Gadget  # not in this release\n\n" + WIDGET_TESTS
NEVER_PASSES = WIDGET_TESTS + '''

def test_never_passed(client):
    assert client.get("/api/widgets/1").status_code == 200
'''
NEW_REVISION = "cc0000000001"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                          cwd=repo, check=True, capture_output=True, text=True).stdout


def commit_tests(repo: Path, test_file: str, tag: str) -> None:
    (repo / "tests/api/test_widgets.py").write_text(test_file)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", tag)
    git(repo, "tag", tag)


def release_project(path: Path) -> Path:
    """The fixture project with release N's test setup, a git repository, nothing committed."""
    project = fixture_project(path)
    (project / "tests/api").mkdir(parents=True)
    (project / "tests/nothing").mkdir()
    for name in ("tests/__init__.py", "tests/api/__init__.py", "tests/nothing/__init__.py"):
        (project / name).write_text("")
    (project / "tests/conftest.py").write_text(CONFTEST)
    git(project, "init", "-q")
    return project


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Release N (tag n), and two broken references: tests that do not import (no-import),
    a test that fails whatever the schema (red). The working tree is left at n."""
    project = release_project(tmp_path_factory.mktemp("compat") / "repo")
    commit_tests(project, DOES_NOT_IMPORT, "no-import")
    commit_tests(project, NEVER_PASSES, "red")
    commit_tests(project, WIDGET_TESTS, "n")
    return project


@pytest.fixture(scope="module", params=[("upgrade",), ("upgrade", "heads")],
                ids=["n migrates with upgrade", "n migrates with upgrade heads"])
def phased_repo(request, tmp_path_factory) -> Path:
    """Release N (tag n) with a post-deploy branch: widgets.code added and backfilled, then
    made NOT NULL by a post-deploy contract. The working tree is left at n. N's test setup
    migrates as a team's may: `flask db upgrade` (the main line only) or `flask db upgrade
    heads` (both phases); the schema N's tests get must not depend on it."""
    project = release_project(tmp_path_factory.mktemp("compat-phases") / "repo")
    conftest = project / "tests/conftest.py"
    conftest.write_text(conftest.read_text().replace(
        '"db", "upgrade"]', ", ".join(f'"{arg}"' for arg in ("db", *request.param)) + "]"))
    assert repr(list(request.param))[1:-1].replace("'", '"') in conftest.read_text()
    add_post_deploy_branch(project)
    commit_tests(project, WIDGET_TESTS, "n")
    return project


@pytest.fixture
def added(phased_repo):
    """Revision files a test adds to phased_repo's working tree, removed afterwards."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        path.unlink()


@pytest.fixture
def next_release(repo):
    """Add release N+1's revision to the working tree (not committed); removed afterwards."""
    added: list[Path] = []

    def add(message: str, upgrade: str) -> None:
        added.append(write_revision(repo, NEW_REVISION, FIXTURE_REVISIONS[-1], message,
                                    upgrade=upgrade))

    yield add
    for path in added:
        path.unlink()


def check_compat(repo: Path, pg_server, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = child_env(None, TEST_DATABASE_URL=url_text(pg_server.url))
    environment.pop("COMPAT_TESTS", None)
    environment.update(env)
    return subprocess.run([str(repo / "scripts/check_compat.sh"), *args], cwd=repo,
                          env=environment, capture_output=True, text=True, timeout=300)


def last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.strip().splitlines()[-1]


def test_a_compatible_revision_passes(repo, pg_server, next_release):
    next_release("add widget colour",
                 'op.add_column("widgets", sa.Column("colour", sa.Text(), nullable=True))')

    proc = check_compat(repo, pg_server, "--against", "n")

    assert proc.returncode == 0, proc.stderr
    assert last_line(proc) == ("check_compat: n's tests/api pass on this checkout's schema "
                               "(1 test(s) ran)")


@pytest.mark.parametrize(("message", "upgrade"), [
    ("drop widget size", 'op.drop_column("widgets", "size")'),
    ("rename widget name", 'op.alter_column("widgets", "name", new_column_name="title")'),
])
def test_a_revision_the_previous_release_breaks_on_is_exit_1(repo, pg_server, next_release,
                                                              message, upgrade):
    next_release(message, upgrade)

    proc = check_compat(repo, pg_server, "--against", "n")

    assert proc.returncode == 1, proc.stderr
    assert (f"check_compat: n breaks on the schema of revision(s) {NEW_REVISION}: "
            "tests/api/test_widgets.py::test_add_and_list_widgets failed.") in proc.stderr
    assert "  tests/api/test_widgets.py::test_add_and_list_widgets: " in proc.stderr


def test_reference_tests_that_do_not_import_are_exit_2_not_a_verdict(repo, pg_server,
                                                                      next_release):
    next_release("drop widget size", 'op.drop_column("widgets", "size")')

    proc = check_compat(repo, pg_server, "--against", "no-import")

    assert proc.returncode == 2, proc.stderr
    assert last_line(proc).startswith(
        "check_compat: could not check: no-import's tests do not collect: "
        "tests/api/test_widgets.py: ImportError: cannot import name 'Gadget'")
    assert "breaks on the schema" not in proc.stderr


def test_a_test_that_fails_on_its_own_schema_too_is_exit_2(repo, pg_server):
    proc = check_compat(repo, pg_server, "--against", "red")

    assert proc.returncode == 2, proc.stderr
    assert last_line(proc).startswith(
        "check_compat: could not check: tests/api/test_widgets.py::test_never_passed fails on "
        "red's own revisions too, so the new schema is not the cause: ")
    assert "breaks on the schema" not in proc.stderr


def test_the_setting_chooses_the_tests_and_none_found_is_exit_2(repo, pg_server):
    proc = check_compat(repo, pg_server, "--against", "n", COMPAT_TESTS="tests/nothing")

    assert proc.returncode == 2, proc.stderr
    assert last_line(proc) == "check_compat: could not check: no tests found in n's tests/nothing"


def test_the_flag_wins_over_the_setting_and_repeats(repo, pg_server):
    proc = check_compat(repo, pg_server, "--against", "n", "--tests", "tests/nothing",
                        "--tests", "tests/api/test_widgets.py", COMPAT_TESTS="tests/missing")

    assert proc.returncode == 0, proc.stderr
    assert "n's tests/nothing tests/api/test_widgets.py pass" in last_line(proc)


@pytest.mark.parametrize(("args", "said"), [
    (("--against", "no-such-ref"), "'no-such-ref' is not a commit this repository knows"),
    (("--against", "n", "--tests", "tests/missing"), "n has no tests/missing to run"),
    (("--against", "n", "--tests", "../elsewhere"), "must name a file or folder inside"),
])
def test_what_cannot_be_checked_is_one_line_and_exit_2(repo, pg_server, args, said):
    proc = check_compat(repo, pg_server, *args)

    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [last_line(proc)]
    assert last_line(proc).startswith("check_compat: could not check: ")
    assert said in last_line(proc)


def test_help_names_the_flags_and_the_setting(repo, pg_server):
    proc = check_compat(repo, pg_server, "--help")

    assert proc.returncode == 0
    assert "--against REF" in proc.stdout and "--tests PATH" in proc.stdout
    assert "$COMPAT_TESTS" in proc.stdout


DROP_SIZE = 'op.drop_column("widgets", "size")'
RESTORE_SIZE = 'op.add_column("widgets", sa.Column("size", sa.Integer(), nullable=True))'


def test_a_new_post_deploy_revision_may_drop_what_the_previous_release_reads(
        phased_repo, pg_server, added):
    # The contract of a column n still reads: it runs only once n no longer serves.
    added.append(write_revision(phased_repo, "cc0000000011", POST_CONTRACT, "drop widget size",
                                upgrade=DROP_SIZE, downgrade=RESTORE_SIZE,
                                stamp="20261220_1000", depends_on=POST_EXPAND))

    proc = check_compat(phased_repo, pg_server, "--against", "n")

    assert proc.returncode == 0, proc.stderr
    assert ("running n's tests/api on this checkout's revisions (0 new: none; 1 new "
            "post-deploy left out, they run once n is gone: cc0000000011)") in proc.stderr
    assert last_line(proc) == ("check_compat: n's tests/api pass on this checkout's schema "
                               "(1 test(s) ran)")


def test_the_same_drop_as_a_pre_deploy_revision_breaks_the_previous_release(
        phased_repo, pg_server, added):
    added.append(write_revision(phased_repo, "cc0000000012", POST_EXPAND, "drop widget size",
                                upgrade=DROP_SIZE, downgrade=RESTORE_SIZE,
                                stamp="20261220_1000"))

    proc = check_compat(phased_repo, pg_server, "--against", "n")

    assert proc.returncode == 1, proc.stderr
    assert ("check_compat: n breaks on the schema of revision(s) cc0000000012: "
            "tests/api/test_widgets.py::test_add_and_list_widgets failed.") in proc.stderr


def test_a_new_expand_that_needs_the_previous_contract_runs_after_it(
        phased_repo, pg_server, added):
    """n's contract ran while n served, so an expand of this release may rely on it: n's
    tests get n's contract, then the expand (however n's own setup migrates: its
    `flask db upgrade` applies only the main line of a history with two phases, and
    refuses an expand whose contract is not applied)."""
    added.append(write_revision(
        phased_repo, "cc0000000013", POST_EXPAND, "index widget codes",
        upgrade="op.create_index('ix_widgets_code', 'widgets', ['code'])",
        downgrade="op.drop_index('ix_widgets_code', table_name='widgets')",
        stamp="20261220_1000", depends_on=POST_CONTRACT))

    proc = check_compat(phased_repo, pg_server, "--against", "n")

    assert proc.returncode == 0, proc.stderr
    assert "(1 new: cc0000000013)" in proc.stderr
    assert last_line(proc).endswith("pass on this checkout's schema (1 test(s) ran)")


def test_a_new_expand_that_needs_a_new_contract_cannot_be_checked(phased_repo, pg_server,
                                                                  added):
    added.append(write_revision(phased_repo, "cc0000000014", POST_CONTRACT, "new contract",
                                stamp="20261220_1000", depends_on=POST_EXPAND))
    added.append(write_revision(phased_repo, "cc0000000015", POST_EXPAND, "needs it",
                                stamp="20261220_1001", depends_on="cc0000000014"))

    proc = check_compat(phased_repo, pg_server, "--against", "n")

    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [last_line(proc)]
    assert last_line(proc).startswith(
        "check_compat: could not check: pre-deploy revision cc0000000015 needs post-deploy "
        "revision(s) cc0000000014, which n does not have")
