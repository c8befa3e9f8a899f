"""The post-deploy phase on a real PostgreSQL: expand, background backfill, contract.

Release N+1 of the fixture application (testkit.harness.add_post_deploy_branch) adds
``widgets.code`` (pre-deploy), registers a backfill for the rows that exist, and makes the
column NOT NULL in a post-deploy revision.
The start applies the expand only; ``flask migrations post-deploy`` refuses until the
backfill is done and names it; then it applies the contract. The next release's expand is
never held back by a contract still waiting.
"""

from __future__ import annotations

import psycopg2
import pytest

from testkit.harness import (
    NEXT_CONTRACT,
    NEXT_EXPAND,
    add_next_release,
    add_post_deploy_branch,
)
from testkit.harness import (
    POST_BACKFILL as BACKFILL,
)
from testkit.harness import (
    POST_CONTRACT as CONTRACT,
)
from testkit.harness import (
    POST_EXPAND as EXPAND,
)
from testkit.support import (
    FIXTURE_REVISIONS,
    app_get,
    execute_sql,
    fixture_project,
    probe_entrypoint,
    write_revision,
)
from tests.conftest import connect_kwargs, run_flask


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = fixture_project(tmp_path_factory.mktemp("post-deploy-repo"))
    add_post_deploy_branch(path)
    return path


def versions(url) -> list[str]:
    """alembic_version: the heads of what is applied (a contract that depends on the
    main line's head stands for both)."""
    with psycopg2.connect(**connect_kwargs(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT version_num FROM alembic_version ORDER BY 1")
        return [row[0] for row in cur.fetchall()]


def is_nullable(url, column: str) -> bool:
    with psycopg2.connect(**connect_kwargs(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT is_nullable FROM information_schema.columns "
                    "WHERE table_name = 'widgets' AND column_name = %s", (column,))
        return cur.fetchone()[0] == "YES"


def columns(url) -> set[str]:
    with psycopg2.connect(**connect_kwargs(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'widgets'")
        return {row[0] for row in cur.fetchall()}


def fill(url, rows: int) -> None:
    execute_sql(url, "INSERT INTO widgets (name, size) SELECT 'w' || g, g "
                     "FROM generate_series(1, %s) AS g", (rows,))


def test_the_start_applies_the_expand_and_leaves_the_contract(repo, fixture_db):
    fill(fixture_db, 300)

    upgraded = run_flask(["db", "upgrade"], fixture_db, cwd=repo)

    assert versions(fixture_db) == [EXPAND]
    assert is_nullable(fixture_db, "code")
    assert CONTRACT not in upgraded.stderr + upgraded.stdout
    status, ready = app_get(repo, fixture_db, "/readyz")
    assert status == 200, ready
    assert ready["pending"] == [] and ready["post_deploy_pending"] == [CONTRACT]


def test_post_deploy_refuses_while_the_backfill_is_unfinished_and_names_it(repo, fixture_db):
    fill(fixture_db, 300)
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)

    refused = run_flask(["migrations", "post-deploy"], fixture_db, cwd=repo, check=False)

    assert refused.returncode == 1
    lines = [line for line in refused.stderr.splitlines() if "post-deploy refused" in line]
    assert len(lines) == 1 and BACKFILL in lines[0] and EXPAND in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr
    assert versions(fixture_db) == [EXPAND] and is_nullable(fixture_db, "code")
    # `flask db upgrade heads` meets the same refusal: there is no way around it
    heads = run_flask(["db", "upgrade", "heads"], fixture_db, cwd=repo, check=False)
    assert heads.returncode != 0 and BACKFILL in heads.stderr
    assert versions(fixture_db) == [EXPAND]


def test_post_deploy_applies_the_contract_once_the_backfill_is_done(repo, fixture_db):
    fill(fixture_db, 300)
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)
    run_flask(["migrations", "backfill", "run"], fixture_db, cwd=repo)

    applied = run_flask(["migrations", "post-deploy"], fixture_db, cwd=repo)
    again = run_flask(["migrations", "post-deploy"], fixture_db, cwd=repo)

    assert f"applied 1 post-deploy revision(s): {CONTRACT}" in applied.stdout
    assert "nothing to apply" in again.stdout
    assert versions(fixture_db) == [CONTRACT]
    assert not is_nullable(fixture_db, "code")
    with psycopg2.connect(**connect_kwargs(fixture_db)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE code = 'W-' || id), count(*) FROM widgets")
        assert cur.fetchone() == (300, 300)
    status, ready = app_get(repo, fixture_db, "/readyz")
    assert status == 200 and ready["post_deploy_pending"] == []


def test_post_deploy_refuses_before_the_release_is_out(repo, fixture_db):
    refused = run_flask(["migrations", "post-deploy"], fixture_db, cwd=repo, check=False)

    assert refused.returncode == 1
    assert "the release is not out yet" in refused.stderr and EXPAND in refused.stderr
    assert versions(fixture_db) == [FIXTURE_REVISIONS[-1]]


def test_a_waiting_contract_does_not_hold_back_the_next_release(tmp_path, fixture_db):
    repo = fixture_project(tmp_path)
    add_post_deploy_branch(repo)
    fill(fixture_db, 50)
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)  # N+1 out; its contract waits
    add_next_release(repo)

    run_flask(["db", "upgrade"], fixture_db, cwd=repo)  # N+2's start

    assert versions(fixture_db) == [NEXT_EXPAND]
    assert is_nullable(fixture_db, "note")
    run_flask(["migrations", "backfill", "run"], fixture_db, cwd=repo)
    applied = run_flask(["migrations", "post-deploy"], fixture_db, cwd=repo)
    assert f"{CONTRACT}, {NEXT_CONTRACT}" in applied.stdout
    assert versions(fixture_db) == [NEXT_CONTRACT]


def test_downgrade_rolls_back_the_revision_applied_last(tmp_path, fixture_db):
    repo = fixture_project(tmp_path)
    add_post_deploy_branch(repo)
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)
    run_flask(["migrations", "backfill", "run"], fixture_db, cwd=repo)
    run_flask(["migrations", "post-deploy"], fixture_db, cwd=repo)
    add_next_release(repo)
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)  # the expand, applied after the contract

    assert versions(fixture_db) == sorted([CONTRACT, NEXT_EXPAND])
    undone = run_flask(["db", "downgrade"], fixture_db, cwd=repo)
    assert versions(fixture_db) == [CONTRACT], undone.stderr
    assert "note" not in columns(fixture_db) and not is_nullable(fixture_db, "code")

    run_flask(["db", "downgrade"], fixture_db, cwd=repo)  # now the contract is the latest
    assert versions(fixture_db) == [EXPAND]
    assert is_nullable(fixture_db, "code")


def test_an_expand_that_needs_an_unapplied_contract_is_refused_at_start(tmp_path, fixture_db):
    repo = fixture_project(tmp_path)
    add_post_deploy_branch(repo)
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)
    write_revision(repo, "ad0000000005", EXPAND, "reuse widget code",
                   upgrade="op.create_index('widgets_code_unique', 'widgets', ['code'])",
                   downgrade="op.drop_index('widgets_code_unique', table_name='widgets')",
                   stamp="20261202_1000", depends_on=CONTRACT)

    refused = run_flask(["db", "upgrade"], fixture_db, cwd=repo, check=False)

    assert refused.returncode != 0
    assert f"need post-deploy revision(s) {CONTRACT}" in refused.stderr
    assert "flask migrations post-deploy" in refused.stderr
    assert versions(fixture_db) == [EXPAND]


def test_two_post_deploy_heads_are_refused_naming_them(tmp_path, fixture_db):
    repo = fixture_project(tmp_path)
    add_post_deploy_branch(repo)
    for rev in ("ae0000000001", "ae0000000002"):
        write_revision(repo, rev, CONTRACT, f"contract {rev}", stamp="20261203_1000")

    refused = run_flask(["db", "upgrade"], fixture_db, cwd=repo, check=False)

    assert refused.returncode != 0
    assert ("the post-deploy revisions have 2 heads (ae0000000001, ae0000000002)"
            in refused.stderr)
    assert "flask db merge ae0000000001 ae0000000002" in refused.stderr
    assert versions(fixture_db) == [FIXTURE_REVISIONS[-1]]


def test_a_fresh_database_walks_both_phases_and_finishes_the_backfill_inline(repo, empty_db):
    # A developer's fresh database (or the tests' walk): the contract meets the backfill
    # registered moments earlier, and finishes it inside the revision.
    upgraded = run_flask(["db", "upgrade", "heads"], empty_db, cwd=repo)

    assert versions(empty_db) == [CONTRACT]
    assert "finished inside the revision" in upgraded.stderr
    status = run_flask(["migrations", "backfill", "status", "--json"], empty_db, cwd=repo)
    assert '"state": "done"' in status.stdout


def test_the_entrypoint_serves_and_says_what_waits_for_post_deploy(repo, fixture_db,
                                                                   tmp_path):
    status, body, _ = probe_entrypoint(repo, fixture_db, tmp_path / "out.log")

    assert status == 200, body
    assert versions(fixture_db) == [EXPAND]
    log = (tmp_path / "out.log").read_text()
    assert (f"1 post-deploy revision(s) wait: {CONTRACT}; run `flask migrations post-deploy`"
            in log)


def test_the_previous_release_serves_on_a_schema_its_successor_contracted(tmp_path,
                                                                          fixture_db):
    # Arrange: N+1 deployed, backfilled and contracted; then a rollback to N's code
    old = fixture_project(tmp_path / "n")
    new = fixture_project(tmp_path / "n-plus-1")
    add_post_deploy_branch(new)
    run_flask(["db", "upgrade"], fixture_db, cwd=new)
    run_flask(["migrations", "backfill", "run"], fixture_db, cwd=new)
    run_flask(["migrations", "post-deploy"], fixture_db, cwd=new)

    # Act: N starts (its upgrade is a no-op on a schema ahead of it) and answers readiness
    started = run_flask(["db", "upgrade"], fixture_db, cwd=old)
    status, ready = app_get(old, fixture_db, "/readyz")

    # Assert: ready, ahead (alembic_version's contract stands for N+1's expand too), nothing
    # of N's pending
    assert "the database is ahead of this code" in started.stderr
    assert status == 200, ready
    assert ready["ahead"] == [CONTRACT] and ready["pending"] == []
    assert ready["post_deploy_pending"] == []
