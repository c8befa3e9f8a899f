"""The background migration runner on a real PostgreSQL, beyond the happy path: the progress
line on a terminal (and none in logs), the pauses on lock queues and on a lagging streaming
replica, a batch that hits lock_timeout, SIGTERM in the middle of a batch, SIGINT during a
pause and a lost connection. The revision and helpers are test_background's (``widgets``,
two backfills)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import pwd
import re
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from backend.migrate.backfill_progress import REDRAW_EVERY, ProgressLine, render_progress
from testkit.support import (
    FIXTURE_REVISIONS,
    VENV_BIN,
    PrivateServer,
    child_env,
    execute_sql,
    fixture_project,
    free_port,
    write_revision,
)
from tests.conftest import connect_kwargs, run_flask
from tests.migrate.test_background import (
    DOWNGRADE,
    IMPORTS,
    REVISION,
    SMALL,
    UPGRADE,
    changes,
    progress,
    registered,
    start_run,
    wait_for,
)

# A log line as backend.logs writes it in text: what a container's log holds, line by line.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) ")
# A backfill whose batches last as long as backfill_delay says: a test makes the batch in
# flight long enough to be interrupted, then sets the delay back to 0 to let a run finish.
DELAYED = ("UPDATE widgets SET size = size + 1 WHERE id > :start AND id <= :stop "
           "AND (SELECT count(*) FROM pg_sleep((SELECT seconds FROM backfill_delay))) = 1")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = fixture_project(tmp_path_factory.mktemp("runner-repo"))
    write_revision(path, REVISION, FIXTURE_REVISIONS[-1], "register widget backfills",
                   upgrade=UPGRADE, downgrade=DOWNGRADE, imports=IMPORTS)
    return path


@pytest.fixture(scope="module")
def delayed_repo(tmp_path_factory) -> Path:
    path = fixture_project(tmp_path_factory.mktemp("delayed-repo"))
    write_revision(path, "bf00000000d1", FIXTURE_REVISIONS[-1], "register a delayed backfill",
                   upgrade=f'register_backfill("widgets_delayed", "widgets", "{DELAYED}", '
                           'batch_size=100)',
                   downgrade='unregister_backfill("widgets_delayed")', imports=IMPORTS)
    return path


def delayed(delayed_repo: Path, url, rows: int, seconds: float) -> None:
    """``rows`` widgets, the delayed backfill registered, each batch sleeping ``seconds``."""
    registered(delayed_repo, url, rows)
    execute_sql(url, "CREATE TABLE backfill_delay (seconds float NOT NULL)")
    execute_sql(url, "INSERT INTO backfill_delay VALUES (%s)", (seconds,))


def flask_command() -> str:
    return shutil.which("flask", path=VENV_BIN) or "flask"


def read_all(fd: int, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> bytes:
    """Everything written to a pseudo-terminal until its writers close it (``proc`` exits),
    read as it comes: a terminal's buffer is small, and a writer blocks when it is full."""
    chunks, ends = [], time.monotonic() + timeout
    while time.monotonic() < ends:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            if proc is None:
                break  # nothing more for now, and nobody left to write
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the last writer closed its end
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


class Terminal:
    """A pseudo-terminal ``columns`` wide, raw: what is written arrives as written (no
    '\\n' turned into '\\r\\n'), so every carriage return in the output is the writer's.
    The writer's end is ``slave``; the test reads ``master``."""

    def __init__(self, columns: int) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        self._open = [self.master, self.slave]

    def close_slave(self) -> None:
        """Once a child holds its copy: the read ends when the last copy closes."""
        self._close(self.slave)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *_exc: object) -> None:
        for fd in list(self._open):
            self._close(fd)

    def _close(self, fd: int) -> None:
        if fd in self._open:
            self._open.remove(fd)
            os.close(fd)


def draws(output: str) -> list[str]:
    """The progress line's drawings, in order: what follows each carriage return."""
    return [piece.rstrip(" \r\n") for piece in output.split("\r")[1:] if piece.strip()]


def test_a_progress_line_shows_rows_of_the_total_percent_rate_and_eta():
    # Act
    line = render_progress("widgets_size", 250, 1000, 50.0)

    # Assert
    assert line == "widgets_size  [#####...............]  250/1000  25%  50 rows/s  ETA 15s"


def test_an_estimated_total_is_marked_and_a_narrow_terminal_gets_a_shorter_line():
    # Act
    wide = render_progress("widgets_size", 250_000, 2_000_000, 5000.0, exact=False, width=120)
    usual = render_progress("widgets_size", 250_000, 2_000_000, 5000.0, exact=False, width=80)
    narrow = render_progress("widgets_size", 250_000, 2_000_000, 5000.0, width=30)

    # Assert: '~' before an estimate; the bar left out before a figure is; never as wide
    # as the terminal (the line would wrap).
    assert wide == ("widgets_size  [##..................]  250000/~2000000  12%  5000 rows/s  "
                    "ETA 5m50s")
    assert usual == "widgets_size  250000/~2000000  12%  5000 rows/s  ETA 5m50s"
    assert narrow == "widgets_size  250000/2000000"


def test_the_progress_line_redraws_in_place_at_most_every_quarter_second():
    # Arrange: a terminal 100 columns wide, a clock the test moves.
    now = [0.0]
    with Terminal(100) as term, open(term.slave, "w", closefd=False) as stream:
        line = ProgressLine(stream, clock=lambda: now[0])

        # Act: 1000 rows in ten batches, nine of them within one redraw interval.
        line.start("widgets_size", 0, 1000)
        for _ in range(9):
            now[0] += REDRAW_EVERY / 10
            line.advance(100)
        now[0] = 1.0
        line.advance(100)
        now[0] = 2.0
        line.finish()
        output = read_all(term.master).decode()

    # Assert: three drawings (the start, one for the ten batches, the final line), each
    # after a carriage return on the same row; a newline only after the final one.
    assert draws(output) == [
        "widgets_size  [....................]  0/1000  0%",
        "widgets_size  [####################]  1000/1000  100%  1000 rows/s",
        "widgets_size  [####################]  1000/1000  100%  500 rows/s  done in 2s",
    ]
    assert output.count("\n") == 1 and output.endswith("done in 2s\n")


def test_run_on_a_terminal_draws_one_line_per_migration(repo, fixture_db):
    # Arrange
    registered(repo, fixture_db, 1000)

    # Act: the run's stderr is a terminal.
    with Terminal(120) as term:
        proc = subprocess.Popen([flask_command(), "migrations", "backfill", "run"], cwd=repo,
                                env=child_env(fixture_db, TERM="xterm", **SMALL),
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=term.slave)
        term.close_slave()
        output = read_all(term.master, proc).decode()
        code = proc.wait(timeout=120)

    # Assert: each migration's line redrawn in place, ending on its total; the log lines too.
    assert code == 0, output
    for name in ("widgets_name", "widgets_size"):
        mine = [drawn for drawn in draws(output) if drawn.startswith(f"{name}  [")]
        assert len(mine) >= 2, output
        assert re.search(rf"\r{name}  \[#{{20}}\]  1000/1000  100%  \d+ rows/s  done in \d+s *\n",
                         output), output
        assert f"background migration {name} done: 1000 row(s) changed" in output
    assert changes(fixture_db) == [(1, 1, 1000)]


def test_run_without_a_terminal_writes_the_log_lines_alone(repo, fixture_db):
    # Arrange
    registered(repo, fixture_db, 1000)

    # Act: stderr is a pipe, as in a container or CI.
    run = run_flask(["migrations", "backfill", "run", "--log-every", "3"], fixture_db,
                    cwd=repo, **SMALL)

    # Assert: no carriage return, no bar; every line a log line, the --log-every ones among.
    assert "\r" not in run.stderr and "[#" not in run.stderr
    lines = run.stderr.splitlines()
    assert lines and all(LOG_LINE.match(line) for line in lines), run.stderr
    assert any("row(s) changed, at key" in line for line in lines)


def test_sessions_queued_on_a_lock_pause_the_run_until_the_lock_is_released(repo, fixture_db):
    # Arrange: one session holds a lock on a table of the application (a migration's ACCESS
    # EXCLUSIVE, say); another session's write has queued behind it longer than the
    # threshold. The backfill's own table is not locked: only the queue can stop it.
    registered(repo, fixture_db, 1000)
    execute_sql(fixture_db, "CREATE TABLE ledger (id integer)")
    holder = psycopg2.connect(**connect_kwargs(fixture_db))
    queued = psycopg2.connect(**connect_kwargs(fixture_db))
    queued.autocommit = True
    writer = threading.Thread(target=queued.cursor().execute,
                              args=("INSERT INTO ledger VALUES (1)",))
    try:
        holder.cursor().execute("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE")
        writer.start()
        wait_for(lambda: execute_sql(
            fixture_db, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database() "
                        "AND now() - query_start > interval '0.8 seconds'")[0][0] == 1)

        # Act 1
        runner = start_run(repo, fixture_db, BACKFILL_MAX_LOCK_WAIT="0.5", **SMALL)
        wait_for(lambda: progress(fixture_db, "widgets_name")[0] == "paused")
        time.sleep(1.5)

        # Assert 1: paused before its first batch, and it stays so.
        assert progress(fixture_db, "widgets_name") == ("paused", None, 0)
        assert changes(fixture_db) == [(0, 0, 1000)]
    finally:
        holder.rollback()  # the queued INSERT goes through
        holder.close()
        writer.join(timeout=30)
        queued.close()

    # Act 2: the queue is gone.
    _, err = runner.communicate(timeout=120)

    # Assert 2: the reason named once, resumed, every row changed once.
    assert runner.returncode == 0, err
    paused = [line for line in err.splitlines() if "paused:" in line]
    assert len(paused) == 1, err
    assert "widgets_name paused: 1 session(s) waiting on a lock for more than 0.5s" in paused[0]
    assert "widgets_name resumed" in err
    assert changes(fixture_db) == [(1, 1, 1000)]
    assert execute_sql(fixture_db, "SELECT count(*) FROM ledger") == [(1,)]


def test_a_batch_that_hits_lock_timeout_is_retried_until_the_row_is_free(repo, fixture_db,
                                                                         tmp_path):
    # Arrange: another session holds row 10, in the first batch of both backfills, longer
    # than the lock_timeout each batch runs with.
    registered(repo, fixture_db, 1000)
    holder = psycopg2.connect(**connect_kwargs(fixture_db))
    log = tmp_path / "run.log"
    try:
        holder.cursor().execute("SELECT id FROM widgets WHERE id = 10 FOR UPDATE")
        with log.open("w") as out:
            runner = subprocess.Popen(
                [flask_command(), "migrations", "backfill", "run"], cwd=repo, stderr=out,
                stdout=subprocess.DEVNULL, env=child_env(
                    fixture_db, MIGRATION_LOCK_TIMEOUT="200ms", MIGRATION_RETRY_DELAY="0.1",
                    MIGRATION_RETRIES="100", **SMALL))

        # Act 1: the first batch gives up on the lock, twice at least.
        wait_for(lambda: log.read_text().count("gave up") >= 2)

        # Assert 1: the batch rolled back each time: nothing changed, nothing recorded.
        retries = [line for line in log.read_text().splitlines() if "gave up" in line]
        assert "widgets_name: first batch gave up (canceling statement due to lock " \
            "timeout), try 1 of 100" in retries[0]
        assert changes(fixture_db) == [(0, 0, 1000)]
        assert progress(fixture_db, "widgets_name") == ("running", None, 0)
    finally:
        holder.rollback()
        holder.close()

    # Act 2: the row is free.
    code = runner.wait(timeout=120)

    # Assert 2: done, every row changed exactly once, the count recorded matches.
    output = log.read_text()
    assert code == 0, output
    assert "failed" not in output
    assert changes(fixture_db) == [(1, 1, 1000)]
    assert [progress(fixture_db, name)[::2] for name in ("widgets_name", "widgets_size")] \
        == [("done", 1000), ("done", 1000)]


def backfill_session(url) -> list[tuple]:
    """The runner's session, when one is connected: (pid, state, seconds in its statement)."""
    return execute_sql(url, "SELECT pid, state, extract(epoch FROM now() - query_start) "
                            "FROM pg_stat_activity WHERE application_name = 'backend-backfill'")


def wait_for_a_long_batch(url) -> None:
    """Wait until the batch in flight has run 0.5s: one started after the delay became
    30s, which would take that long to finish on its own."""
    wait_for(lambda: any(state == "active" and seconds > 0.5
                         for _, state, seconds in backfill_session(url)))


def test_sigterm_cancels_the_batch_in_flight_and_exits_with_one_line(delayed_repo, fixture_db):
    # Arrange: batches committed, then one in flight that would take 30s.
    delayed(delayed_repo, fixture_db, 1000, seconds=0.05)
    runner = start_run(delayed_repo, fixture_db)
    wait_for(lambda: progress(fixture_db, "widgets_delayed")[2] > 0)
    execute_sql(fixture_db, "UPDATE backfill_delay SET seconds = 30")
    wait_for_a_long_batch(fixture_db)

    # Act
    sent = time.monotonic()
    runner.send_signal(signal.SIGTERM)
    _, err = runner.communicate(timeout=20)
    took = time.monotonic() - sent

    # Assert: out at once with 128 + SIGTERM and one line; the batch cancelled in the server
    # (its session gone in moments, not the 30s an orphaned statement would run on), its rows
    # untouched; every committed batch kept.
    assert runner.returncode == 128 + signal.SIGTERM, err
    assert took < 5
    wait_for(lambda: backfill_session(fixture_db) == [], timeout=2)
    state, last_key, rows_done = progress(fixture_db, "widgets_delayed")
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert lines == [line for line in err.splitlines() if "ERROR" in line]
    assert len(lines) == 1
    assert f"backfill run interrupted by SIGTERM: background migration widgets_delayed " \
        f"stopped after key {last_key} with {rows_done} row(s) changed; any batch in flight " \
        "was rolled back, the next run resumes there" in lines[0]
    assert execute_sql(fixture_db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") \
        == [(0,)]
    assert execute_sql(fixture_db, "SELECT size, count(*), max(id) FILTER (WHERE size = 1) "
                                   "FROM widgets GROUP BY size ORDER BY size") \
        == [(0, 1000 - rows_done, None), (1, rows_done, last_key)]
    assert state == "running"  # the status reports it pending: no runner holds it

    # Act 2: the next run, with quick batches.
    execute_sql(fixture_db, "UPDATE backfill_delay SET seconds = 0")
    second = run_flask(["migrations", "backfill", "run"], fixture_db, cwd=delayed_repo)

    # Assert 2: it resumed after the last committed batch; every row changed once.
    assert f"starting after key {last_key}, {rows_done} row(s) done" in second.stderr
    assert execute_sql(fixture_db, "SELECT size, count(*) FROM widgets GROUP BY size") \
        == [(1, 1000)]


def test_sigint_while_paused_exits_with_one_line(repo, fixture_db):
    # Arrange: the run paused by another session's long transaction.
    registered(repo, fixture_db, 1000)
    holder = psycopg2.connect(**connect_kwargs(fixture_db))
    try:
        holder.cursor().execute("SELECT count(*) FROM widgets")
        time.sleep(1.2)
        runner = start_run(repo, fixture_db, BACKFILL_MAX_TRANSACTION_AGE="1", **SMALL)
        wait_for(lambda: progress(fixture_db, "widgets_name")[0] == "paused")

        # Act: Ctrl-C at the terminal while it waits.
        runner.send_signal(signal.SIGINT)
        _, err = runner.communicate(timeout=20)
    finally:
        holder.rollback()
        holder.close()

    # Assert: 128 + SIGINT, one line naming where it stopped; no traceback, no click
    # "Aborted!"; nothing changed.
    assert runner.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and "Aborted" not in err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, err
    assert "backfill run interrupted by SIGINT: background migration widgets_name stopped " \
        "at the first key with 0 row(s) changed" in errors[0]
    assert changes(fixture_db) == [(0, 0, 1000)]


def test_a_lost_connection_ends_the_run_with_one_line(delayed_repo, fixture_db):
    # Arrange: a batch in flight that would take 30s.
    delayed(delayed_repo, fixture_db, 1000, seconds=0.05)
    runner = start_run(delayed_repo, fixture_db)
    wait_for(lambda: progress(fixture_db, "widgets_delayed")[2] > 0)
    execute_sql(fixture_db, "UPDATE backfill_delay SET seconds = 30")
    wait_for_a_long_batch(fixture_db)

    # Act: the server ends the runner's session (a failover, an administrator).
    execute_sql(fixture_db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'backend-backfill'")
    _, err = runner.communicate(timeout=20)

    # Assert: exit 1 with one line that says the next run resumes; no traceback.
    _, last_key, rows_done = progress(fixture_db, "widgets_delayed")
    assert runner.returncode == 1, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, err
    assert f"backfill run failed: background migration widgets_delayed: lost the connection " \
        f"after key {last_key}" in errors[0]
    assert "the next run resumes there" in errors[0]
    assert execute_sql(fixture_db, "SELECT count(*) FROM widgets WHERE size = 1") \
        == [(rows_done,)]


# A streaming replica of a primary of the test's own. The primary is the embedded server
# whatever TEST_DATABASE_URL says: the test pauses its replica's replay.


class StreamingReplica:
    """A hot standby of ``primary``: pg_basebackup -R (a standby.signal and
    primary_conninfo) with the binaries that run the primary, started on its own socket
    directory and port."""

    def __init__(self, primary: PrivateServer, base: Path) -> None:
        server = primary.server
        self.bin, self.user = server.bin_path, server.system_user
        self.data, self.sockets = base / "replica", base / "replica-sockets"
        self.sockets.mkdir()
        if self.user:  # as root, the embedded server runs as its own system user
            owner = pwd.getpwnam(self.user)
            for path in (base, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        info = server.get_postmaster_info()
        self._run("pg_basebackup", "-D", str(self.data), "-R", "-X", "stream", "-c", "fast",
                  "-h", str(info.socket_dir), "-p", str(info.port or 5432), "-U", "postgres")
        # The standby reports its replay position every second, not every 10: the primary's
        # replay_lag only moves when a report comes.
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            conf.write("wal_receiver_status_interval = 1\nhot_standby = on\n")
        self.port = free_port()
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-l",
                  str(self.data / "log"), "-o", f"-h '' -k {self.sockets} -p {self.port}",
                  "start")

    def url(self, primary_url):
        return primary_url.set(query={"host": str(self.sockets), "port": str(self.port)})

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop")

    def _run(self, command: str, *args: str) -> None:
        subprocess.run([str(self.bin / command), *args], check=True, capture_output=True,
                       timeout=60, **({"user": self.user} if self.user else {}))


@pytest.fixture
def replicated() -> Iterator[tuple[PrivateServer, StreamingReplica]]:
    # A short base directory: a socket's path must fit in 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="pgrepl-"))
    primary = PrivateServer(base / "primary")
    replica = None
    try:
        replica = StreamingReplica(primary, base)
        wait_for(lambda: execute_sql(primary.url, "SELECT state FROM pg_stat_replication")
                 == [("streaming",)], timeout=30)
        yield primary, replica
    finally:
        if replica is not None:
            replica.stop()
        primary.close()
        shutil.rmtree(base, ignore_errors=True)


def replay_lag(url) -> float:
    rows = execute_sql(url, "SELECT coalesce(extract(epoch FROM replay_lag), 0)::float "
                            "FROM pg_stat_replication")
    return rows[0][0] if rows else 0.0


class Writes(threading.Thread):
    """The application writing on the primary, a row every 0.1s, until stopped."""

    def __init__(self, url) -> None:
        super().__init__(daemon=True)
        self.url, self.stopped = url, threading.Event()
        execute_sql(url, "CREATE TABLE heartbeat (at timestamptz NOT NULL DEFAULT now())")

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            execute_sql(self.url, "INSERT INTO heartbeat DEFAULT VALUES")


def test_replication_lag_pauses_the_run_until_the_replica_replays_again(repo, replicated):
    # Arrange: the backfills registered on the primary, the replica streaming them; its
    # replay paused while the application goes on writing, so replay_lag grows past 1s.
    primary, replica = replicated
    url, replica_url = primary.url, replica.url(primary.url)
    run_flask(["db", "upgrade", FIXTURE_REVISIONS[-1]], url, cwd=repo)
    registered(repo, url, 1000)
    writes = Writes(url)
    writes.start()
    try:
        execute_sql(replica_url, "SELECT pg_wal_replay_pause()")
        wait_for(lambda: replay_lag(url) > 1.5, timeout=30)

        # Act 1
        runner = start_run(repo, url, BACKFILL_MAX_REPLICATION_LAG="1", **SMALL)
        wait_for(lambda: progress(url, "widgets_name")[0] == "paused")
        time.sleep(1.5)

        # Assert 1: paused before its first batch, and it stays so.
        assert progress(url, "widgets_name") == ("paused", None, 0)
        assert changes(url) == [(0, 0, 1000)]

        # Act 2: the replica replays again and catches up.
        execute_sql(replica_url, "SELECT pg_wal_replay_resume()")
        _, err = runner.communicate(timeout=120)
    finally:
        writes.stopped.set()
        writes.join(timeout=10)
        with contextlib.suppress(psycopg2.Error):
            execute_sql(replica_url, "SELECT pg_wal_replay_resume()")

    # Assert 2: the reason named, resumed, every row changed once, on the replica too.
    assert runner.returncode == 0, err
    assert re.search(r"widgets_name paused: replication lag of \d+s", err), err
    assert "widgets_name resumed" in err
    assert changes(url) == [(1, 1, 1000)]
    wait_for(lambda: changes(replica_url) == [(1, 1, 1000)], timeout=30)
