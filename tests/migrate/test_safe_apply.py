"""Faults a deploy survives with nothing lost: many replicas, kills, lock waits, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from backend.migrate.lock import LOCK_KEY
from backend.postgres import connect_kwargs
from testkit.support import (
    FIXTURE_REVISIONS,
    child_env,
    execute_sql,
    fixture_project,
    free_port,
    probe_entrypoint,
    run_entrypoint,
    stop,
    wait_for_http,
    write_revision,
)
from tests.conftest import run_flask

# The fixture's last revision: the one its edit test changes, and the parent of the ones
# the tests add.
LAST = FIXTURE_REVISIONS[-1]


def add_slow_revision(repo: Path) -> str:
    parent = LAST
    write_revision(repo, "5100aaaa0001", parent, "add a column slowly", imports="import os\n",
                   upgrade='op.add_column("widgets", sa.Column("slow", sa.Text()))\n'
                           'op.execute("SELECT pg_sleep(%s)"\n'
                           '           % float(os.environ.get("SLOW_SECONDS", "0")))',
                   downgrade='op.drop_column("widgets", "slow")')
    return parent


def version(url) -> list[str]:
    return [v for (v,) in execute_sql(url, "SELECT version_num FROM alembic_version")]


def has_column(url, table: str, column: str) -> bool:
    return bool(execute_sql(url, "SELECT 1 FROM information_schema.columns "
                                 "WHERE table_name = %s AND column_name = %s", (table, column)))


def lock_held(url) -> bool:
    return bool(execute_sql(url, "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                                 "AND ((classid::bigint << 32) | objid::bigint) = %s",
                            (LOCK_KEY,)))


def start_upgrade(repo: Path, url, log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(["flask", "db", "upgrade"], cwd=repo, env=child_env(url, **env),
                            stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sleeping_backend(url) -> int | None:
    rows = execute_sql(url, "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                            "AND query LIKE 'SELECT pg_sleep%%'", (url.database,))
    return rows[0][0] if rows else None


def test_eight_replicas_start_together_and_migrate_once(empty_db, fixture_repo, tmp_path):
    # Arrange
    repo = fixture_repo
    ports = [free_port() for _ in range(8)]

    # Act: eight entrypoints at once on an empty database.
    started = time.monotonic()
    procs = [subprocess.Popen([str(repo / "entrypoint.sh")], cwd=repo,
                              env=child_env(empty_db, PORT=str(port), WEB_CONCURRENCY="1"),
                              stdout=(tmp_path / f"{i}.log").open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
             for i, port in enumerate(ports)]
    try:
        answers = [wait_for_http(port, "/readyz", proc, timeout=60)
                   for port, proc in zip(ports, procs, strict=True)]
        seconds = time.monotonic() - started
    finally:
        for proc in procs:
            stop(proc)

    # Assert
    assert [status for status, _ in answers] == [200] * 8
    logs = "".join((tmp_path / f"{i}.log").read_text() for i in range(8))
    for revision in FIXTURE_REVISIONS:
        assert logs.count(f"applied {revision} ") == 1, revision
    assert logs.count("nothing to apply") == 7
    assert seconds < 60
    print(f"8 replicas ready in {seconds:.2f}s")


def test_sigkill_mid_revision_leaves_the_previous_revision_and_frees_the_lock(
        fixture_db, tmp_path):
    # Arrange
    repo = fixture_project(tmp_path / "repo")
    parent = add_slow_revision(repo)
    proc = start_upgrade(repo, fixture_db, tmp_path / "up.log", SLOW_SECONDS="60")
    wait_until(lambda: sleeping_backend(fixture_db) is not None, what="the slow revision")

    # Act
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    # Assert: the server notices within a second or two and rolls the revision back.
    wait_until(lambda: not lock_held(fixture_db) and sleeping_backend(fixture_db) is None,
               timeout=10, what="the lock to be released")
    assert version(fixture_db) == [parent]
    assert not has_column(fixture_db, "widgets", "slow")
    rerun = run_flask(["db", "upgrade"], fixture_db, cwd=repo)
    assert "applied 5100aaaa0001" in rerun.stderr
    assert version(fixture_db) == ["5100aaaa0001"]


def test_connection_terminated_mid_revision_fails_clearly_and_reruns(fixture_db, tmp_path):
    repo = fixture_project(tmp_path / "repo")
    parent = add_slow_revision(repo)
    log = tmp_path / "up.log"
    proc = start_upgrade(repo, fixture_db, log, SLOW_SECONDS="60")
    wait_until(lambda: sleeping_backend(fixture_db) is not None, what="the slow revision")

    execute_sql(fixture_db, "SELECT pg_terminate_backend(%s)", (sleeping_backend(fixture_db),))
    code = proc.wait(timeout=30)

    output = log.read_text()
    assert code != 0
    assert "5100aaaa0001 (add a column slowly) failed" in output
    assert ("terminating connection due to administrator command" in output
            or "server closed the connection unexpectedly" in output)
    assert f"the database stays at {parent}" in output
    assert "Traceback" not in output
    assert version(fixture_db) == [parent]
    assert not has_column(fixture_db, "widgets", "slow")
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)
    assert version(fixture_db) == ["5100aaaa0001"]


def test_a_held_table_lock_makes_the_migration_give_up_without_stalling_readers(
        fixture_db, tmp_path):
    # Arrange: an open transaction holds a lock on widgets; a reader queries it constantly.
    repo = fixture_project(tmp_path / "repo")
    parent = add_slow_revision(repo)
    holder = psycopg2.connect(**connect_kwargs(fixture_db))
    holder.cursor().execute("SELECT count(*) FROM widgets")  # AccessShareLock until rollback
    stalls: list[float] = []
    done = threading.Event()

    def reader() -> None:
        conn = psycopg2.connect(**connect_kwargs(fixture_db))
        conn.autocommit = True
        with conn.cursor() as cur:
            while not done.is_set():
                t0 = time.monotonic()
                cur.execute("SELECT count(*) FROM widgets")
                stalls.append(time.monotonic() - t0)
                time.sleep(0.01)
        conn.close()

    thread = threading.Thread(target=reader)
    thread.start()

    # Act
    try:
        proc = run_flask(["db", "upgrade"], fixture_db, cwd=repo, check=False,
                         MIGRATION_LOCK_TIMEOUT="1s", MIGRATION_RETRIES="3",
                         MIGRATION_RETRY_DELAY="0.2")
    finally:
        done.set()
        thread.join()
        holder.close()

    # Assert
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "could not lock a table within lock_timeout (1s) in 3 tries" in output
    assert output.count("retrying in") == 2
    assert version(fixture_db) == [parent]
    worst = max(stalls)
    print(f"longest reader stall: {worst:.3f}s over {len(stalls)} reads")
    assert worst < 1.0 + 0.5


def readyz(repo: Path, url, **env: str) -> tuple[int, dict]:
    """/readyz from a server of that repository (started without migrating)."""
    port = free_port()
    proc = subprocess.Popen(["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=repo,
                            env=child_env(url, PORT=str(port), WEB_CONCURRENCY="1",
                                          MIGRATE_ON_START="0", **env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        status, body = wait_for_http(port, "/readyz", proc)
    finally:
        stop(proc)
    return status, json.loads(body)


def test_several_heads_are_refused_before_any_change(fixture_db, tmp_path):
    repo = fixture_project(tmp_path / "repo")
    parent = LAST
    write_revision(repo, "aaaa00000001", parent, "branch a")
    write_revision(repo, "bbbb00000002", parent, "branch b")

    code, output, _ = run_entrypoint(repo, fixture_db, tmp_path)

    assert code != 0
    assert "2 heads (aaaa00000001, bbbb00000002)" in output
    assert "flask db merge heads" in output
    assert version(fixture_db) == [parent]
    status, body = readyz(repo, fixture_db)
    assert status == 503 and "2 heads" in body["reason"]


def test_an_unknown_database_revision_is_refused_untouched(fixture_db, fixture_repo, tmp_path):
    # A revision this code does not know, on a database that never held this code's head
    # (no checksum rows: another project, or one migrated before checksums were kept).
    repo = fixture_repo
    execute_sql(fixture_db, "UPDATE alembic_version SET version_num = 'feedface0000'")
    execute_sql(fixture_db, "DELETE FROM migration_checksums")
    before = execute_sql(fixture_db, "SELECT count(*) FROM migration_checksums")

    code, output, _ = run_entrypoint(repo, fixture_db, tmp_path)

    assert code != 0
    assert "feedface0000, which this code does not know" in output
    assert version(fixture_db) == ["feedface0000"]
    assert execute_sql(fixture_db, "SELECT count(*) FROM migration_checksums") == before
    status, body = readyz(repo, fixture_db)
    assert status == 503 and "does not know" in body["reason"]


def test_an_edited_applied_revision_is_refused_until_accepted(fixture_db, tmp_path):
    # Arrange: change a revision the database already has.
    repo = fixture_project(tmp_path / "repo")
    edited = next((repo / "migrations/versions").glob(f"*_{LAST}_*.py"))
    edited.write_text(edited.read_text() + "\n# edited after it was applied\n")

    # Act / Assert: refused, in the entrypoint and in /readyz.
    code, output, _ = run_entrypoint(repo, fixture_db, tmp_path)
    assert code != 0
    assert f"{LAST} (add widget size) were edited after they were applied" in output
    status, body = readyz(repo, fixture_db)
    assert status == 503 and "edited" in body["reason"]

    # An explicit override lets it start...
    status, _, _ = probe_entrypoint(repo, fixture_db, tmp_path / "allowed.log",
                                    MIGRATION_ALLOW_EDITED="1")
    assert status == 200

    # ...and after review, accepting the edit makes it normal again.
    accepted = run_flask(["migrations", "accept-edits"], fixture_db, cwd=repo)
    assert f"accepted edits to: {LAST}" in accepted.stdout
    status, _, _ = probe_entrypoint(repo, fixture_db, tmp_path / "accepted.log")
    assert status == 200


def test_json_logs_parse_line_by_line_and_hide_the_password(pg_server, fixture_repo, tmp_path):
    url = pg_server.create_database().set(password="Js0n-Secret")
    try:
        status, _, _ = probe_entrypoint(fixture_repo, url, tmp_path / "out.log", LOG_FORMAT="json")
    finally:
        pg_server.drop_database(url.database)

    assert status == 200
    lines = (tmp_path / "out.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    applied = [e for e in entries if e.get("event") == "revision"]
    assert len(applied) == len(FIXTURE_REVISIONS) and all(e["seconds"] >= 0 for e in applied)
    assert [e["count"] for e in entries if e.get("event") == "summary"] == \
        [len(FIXTURE_REVISIONS)]
    assert "Js0n-Secret" not in "\n".join(lines)


@pytest.mark.parametrize("name", ["MIGRATION_LOCK_TIMEOUT", "MIGRATION_STATEMENT_TIMEOUT"])
def test_a_malformed_timeout_is_refused_at_start(fixture_db, fixture_repo, tmp_path, name):
    code, output, _ = run_entrypoint(fixture_repo, fixture_db, tmp_path, **{name: "soon"})

    assert code != 0
    assert f"{name} must be a PostgreSQL duration" in output


def test_backup_is_taken_once_when_revisions_are_pending(empty_db, fixture_repo, tmp_path):
    repo = fixture_repo
    backups = tmp_path / "backups"
    env = {"BACKUP_BEFORE_MIGRATE": "1", "BACKUP_DIR": str(backups)}

    first, _, _ = probe_entrypoint(repo, empty_db, tmp_path / "first.log", **env)
    second, _, _ = probe_entrypoint(repo, empty_db, tmp_path / "second.log", **env)

    assert (first, second) == (200, 200)
    dumps = sorted(backups.glob("*.dump"))
    assert len(dumps) == 1
    assert f"_base_to_{LAST}" in dumps[0].name
    assert str(dumps[0]) in (tmp_path / "first.log").read_text()


def test_a_failing_backup_stops_the_upgrade(fixture_db, tmp_path):
    repo = fixture_project(tmp_path / "repo")
    parent = add_slow_revision(repo)
    backups = tmp_path / "backups"

    code, output, _ = run_entrypoint(repo, fixture_db, tmp_path, BACKUP_BEFORE_MIGRATE="1",
                                     BACKUP_DIR=str(backups), PG_DUMP="/nonexistent/pg_dump")

    assert code != 0
    assert "/nonexistent/pg_dump" in output
    assert version(fixture_db) == [parent]
    assert not has_column(fixture_db, "widgets", "slow")
    assert not backups.exists() or not any(backups.iterdir())


def test_a_replica_gives_up_waiting_for_the_lock_and_names_its_holder(fixture_db, tmp_path):
    # Arrange: another session holds the migration lock and sits idle.
    repo = fixture_project(tmp_path / "repo")
    parent = add_slow_revision(repo)
    holder = psycopg2.connect(**connect_kwargs(fixture_db))
    holder.autocommit = True
    with holder.cursor() as cur:
        cur.execute("SELECT pg_backend_pid(), pg_advisory_lock(%s)", (LOCK_KEY,))
        holder_pid = cur.fetchone()[0]

    # Act
    try:
        started = time.monotonic()
        proc = run_flask(["db", "upgrade"], fixture_db, cwd=repo, check=False,
                         MIGRATION_LOCK_WAIT="2")
        seconds = time.monotonic() - started
    finally:
        holder.close()

    # Assert
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"gave up after 2s waiting for the migration lock, held by pid {holder_pid}" in output
    assert "pg_advisory_lock" in output  # the holder's last query
    assert "waiting for the migration lock" in output
    assert seconds < 15
    assert version(fixture_db) == [parent]


def test_statement_timeout_bounds_a_revision(fixture_db, tmp_path):
    repo = fixture_project(tmp_path / "repo")
    parent = add_slow_revision(repo)

    proc = run_flask(["db", "upgrade"], fixture_db, cwd=repo, check=False, SLOW_SECONDS="5",
                     MIGRATION_STATEMENT_TIMEOUT="500ms")

    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "canceling statement due to statement timeout" in output
    assert version(fixture_db) == [parent]


def test_a_revision_can_set_its_own_timeout(fixture_db, tmp_path):
    # The session default is generous; the revision tightens it for itself with SET LOCAL.
    repo = fixture_project(tmp_path / "repo")
    parent = LAST
    write_revision(repo, "5100aaaa0002", parent, "sleep under its own timeout",
                   upgrade='op.execute("SET LOCAL statement_timeout = \'200ms\'")\n'
                           'op.execute("SELECT pg_sleep(2)")')

    proc = run_flask(["db", "upgrade"], fixture_db, cwd=repo, check=False)

    assert proc.returncode != 0
    assert "canceling statement due to statement timeout" in proc.stdout + proc.stderr
    assert version(fixture_db) == [parent]


def test_session_settings_hold_in_every_revision_even_in_an_autocommit_block(fixture_db, tmp_path):
    # Arrange: a revision that fails unless the migration session's settings are in force,
    # inside its transaction and inside an autocommit block.
    repo = fixture_project(tmp_path / "repo")
    check = ('op.execute("DO $$ BEGIN IF current_setting(\'lock_timeout\') <> \'3s\' '
             "OR current_setting('statement_timeout') <> '7min' "
             "OR current_setting('synchronous_commit') <> 'off' "
             "THEN RAISE EXCEPTION 'settings not in force'; END IF; END $$\")")
    write_revision(repo, "5e77aaaa0001", LAST, "check session settings",
                   upgrade=f"{check}\nwith op.get_context().autocommit_block():\n    {check}")

    # Act
    proc = run_flask(["db", "upgrade"], fixture_db, cwd=repo, check=False,
                     MIGRATION_LOCK_TIMEOUT="3s", MIGRATION_STATEMENT_TIMEOUT="7min")

    # Assert
    assert proc.returncode == 0, proc.stderr
    assert version(fixture_db) == ["5e77aaaa0001"]
