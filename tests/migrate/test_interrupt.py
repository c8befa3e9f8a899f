"""SIGINT or SIGTERM while a migration runs: the statement is cancelled at once, the
revision rolls back, the lock is freed, and one line says so."""

from __future__ import annotations

import os
import signal
import time

import psycopg2
import pytest

from backend.postgres import connect_kwargs
from testkit.support import (
    FIXTURE_REVISIONS,
    execute_sql,
    fixture_project,
    start_entrypoint,
    stop,
    write_revision,
)

SLEEP = 30  # the revision's statement would take this long if not cancelled


def wait_for_statement(url, text: str, timeout: float = 30) -> None:
    """Until a statement like ``text`` runs in this test's database: pg_stat_activity lists
    every database's sessions, idle ones with the last statement they ran."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if execute_sql(url, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s "
                            "AND state = 'active' AND datname = current_database() "
                            "AND pid <> pg_backend_pid()", (f"%{text}%",))[0][0]:
            return
        time.sleep(0.05)
    raise AssertionError(f"no statement like {text!r} started within {timeout}s")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_cancels_the_running_migration_and_says_so(fixture_db, tmp_path, signum):
    # Arrange: a revision that adds a column, then runs a long statement.
    repo = fixture_project(tmp_path / "repo")
    parent = FIXTURE_REVISIONS[-1]
    write_revision(repo, "ffff00000002", parent, "slow revision",
                   upgrade='op.add_column("widgets", sa.Column("slow", sa.Text()))\n'
                           f'op.execute("SELECT pg_sleep({SLEEP})")',
                   downgrade='op.drop_column("widgets", "slow")')
    log = tmp_path / "out.log"
    proc = start_entrypoint(repo, fixture_db, log)
    try:
        wait_for_statement(fixture_db, "pg_sleep")

        # Act
        sent = time.monotonic()
        os.kill(proc.pid, signum)
        code = proc.wait(timeout=SLEEP / 2)
        took = time.monotonic() - sent
    finally:
        stop(proc)

    # Assert
    output = log.read_text()
    assert code != 0
    assert took < SLEEP / 2
    assert f"interrupted by {signal.Signals(signum).name}" in output
    assert "canceling statement due to user request" in output
    assert len([line for line in output.splitlines() if "refusing to start" in line]) == 1
    assert "Traceback" not in output
    assert execute_sql(fixture_db, "SELECT version_num FROM alembic_version") == [(parent,)]
    assert execute_sql(fixture_db, "SELECT count(*) FROM information_schema.columns "
                                "WHERE table_name = 'widgets' AND column_name = 'slow'") == [(0,)]
    assert execute_sql(fixture_db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") \
        == [(0,)]


def test_sigterm_while_waiting_for_the_migration_lock_exits_with_one_line(
        empty_db, fixture_repo, tmp_path):
    # Arrange: another migrator holds the lock; this replica has the whole history pending.
    from backend.migrate.lock import LOCK_KEY

    holder = psycopg2.connect(**connect_kwargs(empty_db))
    holder.autocommit = True
    holder.cursor().execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    log = tmp_path / "out.log"
    proc = start_entrypoint(fixture_repo, empty_db, log)
    try:
        deadline = time.monotonic() + 30
        while "waiting for the migration lock" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

        # Act
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=10)
    finally:
        holder.close()
        stop(proc)

    # Assert
    output = log.read_text()
    assert code != 0
    assert "interrupted by SIGTERM" in output
    assert len([line for line in output.splitlines() if "refusing to start" in line]) == 1
    assert "Traceback" not in output
    assert execute_sql(empty_db, "SELECT to_regclass('alembic_version')") == [(None,)]
