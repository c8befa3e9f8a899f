"""The service as production runs it: entrypoint.sh, gunicorn's workers, concurrent clients.

Every request must get its own answer, right after a start (the master has just migrated)
and after gunicorn re-forks a worker, and every setting is checked before anything runs.
The servers run a copy of the project serving the fixture application (``widgets``), so
these guarantees hold whatever application the checkout holds.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg2
import pytest
from sqlalchemy.engine import URL

from backend.postgres import connect_kwargs
from testkit.support import (
    execute_sql,
    free_port,
    port_answers,
    request,
    run_concurrently,
    run_entrypoint,
    start_entrypoint,
    stop,
    wait_for_http,
)

CLIENTS = 16
ROUNDS = 12  # each client: create a widget, read it back, list the first page


@dataclass
class Seen:
    """What clients sent and were answered: the problems, the widgets they created, and
    the widgets the list pages showed them."""

    problems: list[str] = field(default_factory=list)
    created: list[dict] = field(default_factory=list)
    listed: list[dict] = field(default_factory=list)

    def add(self, other: Seen) -> None:
        self.problems += other.problems
        self.created += other.created
        self.listed += other.listed


def client_rounds(port: int) -> Seen:
    """One client's requests; each answer is checked against what that client sent. A page
    holds at least this client's own widgets (up to its size): they were committed before
    it asked, however slowly the other clients are getting on."""
    seen = Seen()
    for _ in range(ROUNDS):
        name = uuid.uuid4().hex
        status, body = request(port, "POST", "/api/widgets", {"name": name})
        if status != 201 or body.get("name") != name:
            seen.problems.append(f"POST /api/widgets: {status} {body}")
            continue
        seen.created.append(body)
        status, got = request(port, "GET", f"/api/widgets/{body['id']}")
        if status != 200 or got != body:
            seen.problems.append(f"GET /api/widgets/{body['id']}: {status} {got} "
                                 f"(expected {body})")
        status, page = request(port, "GET", "/api/widgets")
        items = page.get("items") if isinstance(page, dict) else None
        if status != 200 or not isinstance(items, list) or \
                len(items) < min(50, len(seen.created)):
            seen.problems.append(f"GET /api/widgets: {status} {page}")
            continue
        seen.listed += items
    return seen


def serve(repo: Path, url: URL, tmp_path: Path, **env: str):
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    proc = start_entrypoint(repo, url, log, PORT=str(port), ACCESS_LOG="1", **env)
    return port, proc, log


def burst(port: int) -> Seen:
    """CLIENTS clients at once, from the first moment the port answers."""
    seen = Seen()
    for result in run_concurrently([lambda: client_rounds(port)] * CLIENTS, CLIENTS):
        if isinstance(result, Seen):
            seen.add(result)
        else:  # the client itself failed (a reset, a timeout)
            seen.problems.append(repr(result))
    return seen


def widgets_in(url: URL) -> dict[int, dict]:
    """Every widget the database holds, as the API renders one."""
    rows = execute_sql(url, "SELECT id, name, size FROM widgets")
    return {id_: {"id": id_, "name": name, "size": size} for id_, name, size in rows}


def assert_database_holds(url: URL, seen: Seen) -> None:
    """Every widget a client was told it created is in the database as answered, the
    database holds no other, and every widget a page showed is one it holds."""
    held = widgets_in(url)
    assert sorted(seen.created, key=lambda w: w["id"]) == sorted(held.values(),
                                                                  key=lambda w: w["id"])
    assert [item for item in seen.listed if held.get(item.get("id")) != item] == []


def pids_in(log: Path) -> set[str]:
    return set(re.findall(r'" \d{3} .* <(\d+)>$', log.read_text(), re.M))


def workers_of(proc) -> list[int]:
    return [child.pid for child in psutil.Process(proc.pid).children()]


@pytest.mark.parametrize("start", [1, 2, 3])
def test_concurrent_requests_right_after_start_each_get_their_own_answer(fixture_repo, empty_db,
                                                                        tmp_path, start):
    # Arrange: the master migrates the empty database, then forks two workers.
    port, proc, log = serve(fixture_repo, empty_db, tmp_path, WEB_CONCURRENCY="2")
    try:
        wait_for_http(port, "/healthz", proc)

        # Act
        seen = burst(port)
    finally:
        stop(proc)

    # Assert: every answer was the client's own, and the database agrees with them all.
    assert seen.problems == []
    assert len(seen.created) == CLIENTS * ROUNDS
    assert_database_holds(empty_db, seen)
    assert len(pids_in(log)) == 2, "both workers served"
    assert "Traceback" not in log.read_text()


def test_a_reforked_worker_opens_its_own_connections(fixture_repo, fixture_db, tmp_path):
    # Arrange: serving, then one worker dies and gunicorn forks a replacement.
    port, proc, log = serve(fixture_repo, fixture_db, tmp_path, WEB_CONCURRENCY="2")
    try:
        wait_for_http(port, "/healthz", proc)
        before = burst(port)
        assert before.problems == []
        killed = workers_of(proc)[0]
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            current = workers_of(proc)
            if len(current) == 2 and killed not in current:
                break
            time.sleep(0.1)

        # Act
        after = burst(port)
        current = workers_of(proc)
    finally:
        stop(proc)

    # Assert
    assert after.problems == []
    before.add(after)
    assert len(before.created) == 2 * CLIENTS * ROUNDS
    assert_database_holds(fixture_db, before)
    assert killed not in current and len(current) == 2
    assert {str(pid) for pid in current} <= pids_in(log), "the new worker served too"


@pytest.mark.parametrize(("name", "value", "says"), [
    ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY must be a whole number >= 1"),
    ("WEB_CONCURRENCY", "abc", "WEB_CONCURRENCY must be a whole number"),
    ("GUNICORN_TIMEOUT", "abc", "GUNICORN_TIMEOUT must be a whole number"),
    ("GUNICORN_THREADS", "0", "GUNICORN_THREADS must be a whole number >= 1"),
    ("PORT", "99999", "PORT must be a whole number >= 1 and <= 65535"),
    ("DB_WAIT_TIMEOUT", "nan", "DB_WAIT_TIMEOUT must be a non-negative number"),
    ("DB_QUERY_TIMEOUT", "0", "DB_QUERY_TIMEOUT must be a positive number"),
    ("MIGRATE_ON_START", "maybe", "MIGRATE_ON_START must be 1/true/yes/on or 0/false/no/off"),
    ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of text, json"),
    ("BACKUP_BEFORE_MIGRATE", "perhaps", "BACKUP_BEFORE_MIGRATE must be"),
])
def test_a_bad_setting_is_one_line_and_exit_2_before_anything_runs(fixture_repo, empty_db,
                                                                   tmp_path, name, value,
                                                                   says):
    code, output, _ = run_entrypoint(fixture_repo, empty_db, tmp_path, **{name: value})

    assert code == 2
    assert says in output
    assert "Traceback" not in output
    assert len([line for line in output.splitlines() if "refusing" in line]) == 1
    assert execute_sql(empty_db, "SELECT to_regclass('alembic_version')") == [(None,)]


def test_an_empty_setting_means_its_default(fixture_repo, empty_db, tmp_path):
    # Compose renders an unset ${WEB_CONCURRENCY:-} as an empty string.
    port, proc, _ = serve(fixture_repo, empty_db, tmp_path, WEB_CONCURRENCY="",
                          GUNICORN_TIMEOUT="")
    try:
        status, _ = wait_for_http(port, "/readyz", proc)
    finally:
        stop(proc)

    assert status == 200


@pytest.mark.parametrize("value", ["0", "false", "no", "off"])
def test_migrate_on_start_off_in_any_spelling_migrates_nothing(fixture_repo, empty_db, tmp_path,
                                                               value):
    port, proc, _ = serve(fixture_repo, empty_db, tmp_path, MIGRATE_ON_START=value)
    try:
        status, body = wait_for_http(port, "/readyz", proc)
        api_status, api_body = request(port, "GET", "/api/widgets")
    finally:
        stop(proc)

    assert status == 503 and '"pending"' in body
    assert api_status == 503
    assert "schema not ready" in api_body["error"]
    assert execute_sql(empty_db, "SELECT to_regclass('alembic_version')") == [(None,)]


def test_port_out_of_range_never_opens_a_port(fixture_repo, empty_db, tmp_path):
    code, _, _ = run_entrypoint(fixture_repo, empty_db, tmp_path, PORT="70000")

    assert code == 2
    assert not port_answers(70000 % 65536)


def test_a_stalled_upload_gets_408_and_leaves_threads_for_others(fixture_repo, fixture_db,
                                                                 tmp_path):
    # Arrange: one worker with four threads; three clients send headers, then stall.
    port, proc, _ = serve(fixture_repo, fixture_db, tmp_path, WEB_CONCURRENCY="1",
                          GUNICORN_THREADS="4", BODY_TIMEOUT="2")
    stalled = []
    try:
        wait_for_http(port, "/healthz", proc)
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", port), timeout=15)
            sock.sendall(b"POST /api/widgets HTTP/1.1\r\nHost: t\r\nContent-Type: "
                         b'application/json\r\nContent-Length: 100\r\n\r\n{"name"')
            stalled.append(sock)
        time.sleep(0.5)

        # Act
        healthz = request(port, "GET", "/healthz", timeout=1)
        answers = [sock.makefile("rb").read().decode() for sock in stalled]  # to EOF
    finally:
        for sock in stalled:
            sock.close()
        stop(proc)

    # Assert
    assert healthz[0] == 200
    assert all(answer.startswith("HTTP/1.1 408") for answer in answers), answers
    assert all("not received within 2s" in answer for answer in answers)


def keep_asking(port: int, until: threading.Event, outcomes: list) -> None:
    """New connections one after another, as clients that have not heard of the stop yet."""
    while not until.is_set():
        try:
            outcomes.append(request(port, "GET", "/api/widgets", timeout=10)[0])
        except ConnectionRefusedError:
            outcomes.append("refused")
        except OSError as exc:  # a reset, a connection dropped mid-answer
            outcomes.append(type(exc).__name__)
        time.sleep(0.01)


def test_sigterm_finishes_requests_in_flight_then_exits_0(fixture_repo, fixture_db, tmp_path):
    # Arrange: four requests held in flight by a lock on the table they write to, and a
    # client still opening new connections.
    port, proc, log = serve(fixture_repo, fixture_db, tmp_path, WEB_CONCURRENCY="2")
    holder = psycopg2.connect(**connect_kwargs(fixture_db))
    done, outcomes = threading.Event(), []
    asker = threading.Thread(target=keep_asking, args=(port, done, outcomes))
    try:
        wait_for_http(port, "/healthz", proc)
        holder.cursor().execute("LOCK TABLE widgets IN EXCLUSIVE MODE")
        with ThreadPoolExecutor(max_workers=4) as pool:
            posts = [pool.submit(request, port, "POST", "/api/widgets", {"name": f"inflight{i}"})
                     for i in range(4)]
            asker.start()
            time.sleep(1)

            # Act: the orchestrator stops the replica, then the lock goes.
            os.kill(proc.pid, signal.SIGTERM)
            time.sleep(1)
            holder.commit()
            answers = [post.result(timeout=30) for post in posts]
        code = proc.wait(timeout=30)
    finally:
        done.set()
        holder.close()
        stop(proc)
        asker.join(timeout=15)

    # Assert: in flight finished; new connections were answered or refused, never reset.
    assert [status for status, _ in answers] == [201] * 4
    assert execute_sql(fixture_db, "SELECT count(*) FROM widgets WHERE name LIKE 'inflight%'"
                       ) == [(4,)]
    assert code == 0
    assert set(outcomes) <= {200, "refused"}, outcomes
    assert 200 in outcomes and "refused" in outcomes
    assert "Traceback" not in log.read_text()
