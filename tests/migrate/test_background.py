"""Background migrations on a real PostgreSQL: a revision registers a batched change on
``widgets``; ``flask migrations backfill run`` applies it, every row exactly once, through
kills, concurrent runners, an unhealthy database and a failing batch."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time

import psycopg2
import pytest

from backend.migrate.background import check_definition, to_driver_sql
from testkit.support import (
    FIXTURE_REVISIONS,
    VENV_BIN,
    child_env,
    execute_sql,
    fixture_project,
    write_revision,
)
from tests.conftest import connect_kwargs, run_flask

IMPORTS = "from backend.migrate.background import register_backfill, unregister_backfill\n"
REVISION = "bf0000000001"
# Each backfill changes its column in a way that shows how often a row was changed: size
# counts up from 0, name gains one '+' per change. The one-row sleep (an InitPlan, run once
# per batch) makes batches last long enough to be interrupted.
SIZE_STATEMENT = ("UPDATE widgets SET size = size + 1 WHERE id > :start AND id <= :stop "
                  "AND (SELECT count(*) FROM pg_sleep(0.005)) = 1")
NAME_STATEMENT = ("UPDATE widgets SET name = name || '+' WHERE id > :start AND id <= :stop "
                  "AND (SELECT count(*) FROM pg_sleep(0.005)) = 1")
UPGRADE = (f'register_backfill("widgets_size", "widgets", "{SIZE_STATEMENT}", batch_size=50)\n'
           f'register_backfill("widgets_name", "widgets", "{NAME_STATEMENT}", batch_size=50)')
DOWNGRADE = 'unregister_backfill("widgets_name")\nunregister_backfill("widgets_size")'
# Small batches, so that a run takes many of them.
SMALL = {"BACKFILL_MAX_BATCH_SIZE": "100"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = fixture_project(tmp_path_factory.mktemp("background-repo"))
    write_revision(path, REVISION, FIXTURE_REVISIONS[-1], "register widget backfills",
                   upgrade=UPGRADE, downgrade=DOWNGRADE, imports=IMPORTS)
    return path


def fill(url, rows: int) -> None:
    execute_sql(url, "INSERT INTO widgets (name, size) SELECT 'w' || g, 0 "
                     "FROM generate_series(1, %s) AS g", (rows,))


def registered(repo, url, rows: int):
    """Rows in widgets, then the revision that registers the backfills applied."""
    fill(url, rows)
    run_flask(["db", "upgrade"], url, cwd=repo)
    return url


def changes(url) -> list[tuple]:
    """(times size changed, times name changed, rows) grouped: [(1, 1, N)] is exactly once."""
    return execute_sql(url, "SELECT size, length(name) - length(rtrim(name, '+')), count(*) "
                            "FROM widgets GROUP BY 1, 2 ORDER BY 1, 2")


def progress(url, name: str) -> tuple:
    return execute_sql(url, "SELECT state, last_key, rows_done FROM background_migrations "
                            "WHERE name = %s", (name,))[0]


def start_run(repo, url, **env: str) -> subprocess.Popen:
    return subprocess.Popen([shutil.which("flask", path=VENV_BIN), "migrations", "backfill",
                             "run"], cwd=repo, env=child_env(url, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_registration_leaves_the_data_untouched(repo, fixture_db):
    # Arrange
    fill(fixture_db, 2000)

    # Act
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)

    # Assert: two pending rows naming the revision; no widget changed.
    assert execute_sql(fixture_db, "SELECT name, revision, table_name, state, rows_done "
                                   "FROM background_migrations ORDER BY name") == [
        ("widgets_name", REVISION, "widgets", "pending", 0),
        ("widgets_size", REVISION, "widgets", "pending", 0)]
    assert changes(fixture_db) == [(0, 0, 2000)]


def test_registration_renders_offline(repo, fixture_db):
    # Act
    proc = run_flask(["db", "upgrade", f"{FIXTURE_REVISIONS[-1]}:{REVISION}", "--sql"],
                     fixture_db, cwd=repo)

    # Assert: the table and the row, as SQL a DBA can apply.
    assert "CREATE TABLE IF NOT EXISTS background_migrations" in proc.stdout
    assert "INSERT INTO background_migrations" in proc.stdout
    assert "'widgets_size'" in proc.stdout


def test_downgrade_unregisters_and_keeps_the_changed_rows(repo, fixture_db):
    # Arrange: registered and run.
    registered(repo, fixture_db, 300)
    run_flask(["migrations", "backfill", "run"], fixture_db, cwd=repo)

    # Act
    run_flask(["db", "downgrade", FIXTURE_REVISIONS[-1]], fixture_db, cwd=repo)

    # Assert
    assert execute_sql(fixture_db, "SELECT count(*) FROM background_migrations") == [(0,)]
    assert changes(fixture_db) == [(1, 1, 300)]


def test_run_changes_every_row_once_and_status_reports_done(repo, fixture_db):
    # Arrange
    registered(repo, fixture_db, 3000)

    # Act
    run = run_flask(["migrations", "backfill", "run"], fixture_db, cwd=repo, check=False,
                    **SMALL)
    status = run_flask(["migrations", "backfill", "status", "--json"], fixture_db, cwd=repo)

    # Assert
    assert run.returncode == 0, run.stderr
    assert changes(fixture_db) == [(1, 1, 3000)]
    rows = {row["name"]: row for row in json.loads(status.stdout)}
    assert set(rows) == {"widgets_size", "widgets_name"}
    for row in rows.values():
        assert (row["revision"], row["table"], row["state"]) == (REVISION, "widgets", "done")
        assert row["rows_done"] == row["rows_total"] == 3000


def test_status_before_a_run_lists_pending_migrations(repo, fixture_db):
    # Arrange
    registered(repo, fixture_db, 500)

    # Act
    text = run_flask(["migrations", "backfill", "status"], fixture_db, cwd=repo)
    data = run_flask(["migrations", "backfill", "status", "--json"], fixture_db, cwd=repo)

    # Assert
    assert "widgets_size" in text.stdout and "pending" in text.stdout
    assert [(row["name"], row["state"], row["rows_done"], row["rows_total"])
            for row in json.loads(data.stdout)] == [("widgets_name", "pending", 0, 500),
                                                   ("widgets_size", "pending", 0, 500)]


def test_a_killed_run_resumes_after_its_last_committed_batch(repo, fixture_db):
    # Arrange: a run under way, killed at a random moment after its first batches.
    registered(repo, fixture_db, 20000)
    first = start_run(repo, fixture_db, **SMALL)
    wait_for(lambda: progress(fixture_db, "widgets_name")[2] > 0
             or progress(fixture_db, "widgets_size")[2] > 0)
    time.sleep(random.uniform(0.0, 1.0))
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    killed_at = {name: progress(fixture_db, name) for name in ("widgets_size", "widgets_name")}

    # Act
    second = run_flask(["migrations", "backfill", "run"], fixture_db, cwd=repo, check=False,
                       **SMALL)

    # Assert: all rows changed once; the second run started where the first one committed.
    assert second.returncode == 0, second.stderr
    assert changes(fixture_db) == [(1, 1, 20000)]
    interrupted = [(name, last) for name, (state, last, _) in killed_at.items()
                   if state != "done" and last is not None]
    assert interrupted, killed_at
    for name, last_key in interrupted:
        assert f"{name} (revision {REVISION}) on widgets: starting after key {last_key}" \
            in second.stderr
    assert [progress(fixture_db, name)[0] for name in killed_at] == ["done", "done"]


def test_two_runners_at_once_change_each_row_once(repo, fixture_db):
    # Arrange
    registered(repo, fixture_db, 5000)

    # Act
    runners = [start_run(repo, fixture_db, **SMALL) for _ in range(2)]
    outputs = [runner.communicate(timeout=120) for runner in runners]

    # Assert: both done and successful, each row changed once by each backfill.
    assert [runner.returncode for runner in runners] == [0, 0], outputs
    assert changes(fixture_db) == [(1, 1, 5000)]
    assert "another runner holds it" in outputs[0][1] + outputs[1][1]


def test_a_long_transaction_pauses_the_run_until_it_ends(repo, fixture_db):
    # Arrange: another session's transaction older than the threshold.
    registered(repo, fixture_db, 1000)
    holder = psycopg2.connect(**connect_kwargs(fixture_db))
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT count(*) FROM widgets")
        time.sleep(1.2)

        # Act 1
        runner = start_run(repo, fixture_db, BACKFILL_MAX_TRANSACTION_AGE="1", **SMALL)
        wait_for(lambda: progress(fixture_db, "widgets_name")[0] == "paused")
        time.sleep(1.5)

        status = run_flask(["migrations", "backfill", "status", "--json"], fixture_db,
                           cwd=repo)

        # Assert 1: paused, nothing changed.
        assert progress(fixture_db, "widgets_name") == ("paused", None, 0)
        assert [row["state"] for row in json.loads(status.stdout)] == ["paused", "pending"]
        assert changes(fixture_db) == [(0, 0, 1000)]
    finally:
        holder.rollback()
        holder.close()

    # Act 2: the transaction has ended.
    _, err = runner.communicate(timeout=120)

    # Assert 2
    assert runner.returncode == 0, err
    assert "paused: a transaction open for" in err
    assert changes(fixture_db) == [(1, 1, 1000)]


def test_a_failing_batch_marks_the_migration_failed(tmp_path, fixture_db):
    # Arrange: a statement that fails on its first batch.
    repo = fixture_project(tmp_path / "repo")
    write_revision(repo, "bf00000000f1", FIXTURE_REVISIONS[-1], "register a broken backfill",
                   upgrade='register_backfill("widgets_broken", "widgets", "UPDATE widgets '
                           'SET size = size / 0 WHERE id > :start AND id <= :stop")',
                   downgrade='unregister_backfill("widgets_broken")', imports=IMPORTS)
    registered(repo, fixture_db, 100)

    # Act
    run = run_flask(["migrations", "backfill", "run"], fixture_db, cwd=repo, check=False)

    # Assert: non-zero, one line naming the migration and the error, the state recorded.
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    failed = [line for line in run.stderr.splitlines() if "widgets_broken failed" in line]
    assert len(failed) == 1 and "division by zero" in failed[0]
    state, error = execute_sql(fixture_db, "SELECT state, error FROM background_migrations")[0]
    assert state == "failed" and "division by zero" in error
    assert changes(fixture_db) == [(0, 0, 100)]


def test_the_statement_reaches_the_driver_with_casts_and_percent_signs_intact():
    # Act
    driver = to_driver_sql("UPDATE t SET s = 'x%' WHERE id > :start::bigint AND id <= :stop")

    # Assert
    assert driver == "UPDATE t SET s = 'x%%' WHERE id > %(start)s::bigint AND id <= %(stop)s"


@pytest.mark.parametrize("name, statement", [
    ("no_stop", "UPDATE t SET s = 1 WHERE id > :start"),
    ("bad name!", "UPDATE t SET s = 1 WHERE id > :start AND id <= :stop"),
])
def test_a_definition_the_runner_cannot_apply_is_refused(name, statement):
    # Act / Assert
    with pytest.raises(ValueError, match="background migration"):
        check_definition(name, statement, 100)


def test_the_verifier_walks_a_revision_that_registers_a_backfill(repo, empty_db):
    # Act: up, down, up again on an empty database; the bookkeeping table the registration
    # creates is the lifecycle's, like alembic_version, so its downgrade leaves no trace.
    proc = subprocess.run([str(repo / "scripts/verify_migrations.sh"), "--url",
                           empty_db.render_as_string(hide_password=False)],
                          cwd=repo, env=child_env(), capture_output=True, text=True,
                          timeout=300)

    # Assert
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"verified {len(FIXTURE_REVISIONS) + 1} revision(s)" in proc.stdout
