"""The service as production runs it: entrypoint.sh, gunicorn's workers, concurrent clients.

Every request must get its own answer, right after a start (the master has just migrated)
and after gunicorn re-forks a worker, and every setting is checked before anything runs.
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
from pathlib import Path

import psutil
import psycopg2
import pytest

from testkit.support import (
    ROOT,
    free_port,
    port_answers,
    request,
    run_concurrently,
    run_entrypoint,
    start_entrypoint,
    stop,
    wait_for_http,
)
from tests.conftest import connect_kwargs, execute_sql

CLIENTS = 16
ROUNDS = 12  # each client: create a user, read it back, list a page


def client_session(port: int) -> list[str]:
    """One client's requests; each answer is checked against what that client sent."""
    problems = []
    for _ in range(ROUNDS):
        email = f"{uuid.uuid4().hex}@example.com"
        status, body = request(port, "POST", "/api/users", {"email": email, "name": "n"})
        if status != 201 or body.get("email") != email:
            problems.append(f"POST /api/users: {status} {body}")
            continue
        status, got = request(port, "GET", f"/api/users/{body['id']}")
        if status != 200 or got != body:
            problems.append(f"GET /api/users/{body['id']}: {status} {got} (expected {body})")
        status, page = request(port, "GET", "/api/users?per_page=5")
        if status != 200 or len(page.get("items", [])) != 5:
            problems.append(f"GET /api/users: {status} {page}")
    return problems


def serve(url, tmp_path: Path, **env: str):
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    proc = start_entrypoint(ROOT, url, log, PORT=str(port), ACCESS_LOG="1", **env)
    return port, proc, log


def burst(port: int) -> list[str]:
    """CLIENTS clients at once, from the first moment the port answers."""
    results = run_concurrently([lambda: client_session(port)] * CLIENTS, CLIENTS)
    return [str(p) for r in results for p in (r if isinstance(r, list) else [r])]


def pids_in(log: Path) -> set[str]:
    return set(re.findall(r'" \d{3} .* <(\d+)>$', log.read_text(), re.M))


def workers_of(proc) -> list[int]:
    return [child.pid for child in psutil.Process(proc.pid).children()]


@pytest.mark.parametrize("start", [1, 2, 3])
def test_concurrent_requests_right_after_start_each_get_their_own_answer(empty_db, tmp_path,
                                                                        start):
    # Arrange: the master migrates the empty database, then forks two workers.
    port, proc, log = serve(empty_db, tmp_path, WEB_CONCURRENCY="2")
    try:
        wait_for_http(port, "/healthz", proc)

        # Act
        problems = burst(port)
    finally:
        stop(proc)

    # Assert
    assert problems == []
    assert len(pids_in(log)) == 2, "both workers served"
    assert "Traceback" not in log.read_text()


def test_a_reforked_worker_opens_its_own_connections(head_db, tmp_path):
    # Arrange: serving, then one worker dies and gunicorn forks a replacement.
    port, proc, log = serve(head_db, tmp_path, WEB_CONCURRENCY="2")
    try:
        wait_for_http(port, "/healthz", proc)
        assert burst(port) == []
        killed = workers_of(proc)[0]
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            current = workers_of(proc)
            if len(current) == 2 and killed not in current:
                break
            time.sleep(0.1)

        # Act
        problems = burst(port)
        current = workers_of(proc)
    finally:
        stop(proc)

    # Assert
    assert problems == []
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
def test_a_bad_setting_is_one_line_and_exit_2_before_anything_runs(empty_db, tmp_path, name,
                                                                   value, says):
    code, output, _ = run_entrypoint(ROOT, empty_db, tmp_path, **{name: value})

    assert code == 2
    assert says in output
    assert "Traceback" not in output
    assert len([line for line in output.splitlines() if "refusing" in line]) == 1
    assert execute_sql(empty_db, "SELECT to_regclass('alembic_version')") == [(None,)]


def test_an_empty_setting_means_its_default(empty_db, tmp_path):
    # Compose renders an unset ${WEB_CONCURRENCY:-} as an empty string.
    port, proc, _ = serve(empty_db, tmp_path, WEB_CONCURRENCY="", GUNICORN_TIMEOUT="")
    try:
        status, _ = wait_for_http(port, "/readyz", proc)
    finally:
        stop(proc)

    assert status == 200


@pytest.mark.parametrize("value", ["0", "false", "no", "off"])
def test_migrate_on_start_off_in_any_spelling_migrates_nothing(empty_db, tmp_path, value):
    port, proc, _ = serve(empty_db, tmp_path, MIGRATE_ON_START=value)
    try:
        status, body = wait_for_http(port, "/readyz", proc)
        api_status, api_body = request(port, "GET", "/api/users")
    finally:
        stop(proc)

    assert status == 503 and '"pending"' in body
    assert api_status == 503
    assert "schema not ready" in api_body["error"]
    assert execute_sql(empty_db, "SELECT to_regclass('alembic_version')") == [(None,)]


def test_port_out_of_range_never_opens_a_port(empty_db, tmp_path):
    code, _, _ = run_entrypoint(ROOT, empty_db, tmp_path, PORT="70000")

    assert code == 2
    assert not port_answers(70000 % 65536)


def test_a_stalled_upload_gets_408_and_leaves_threads_for_others(head_db, tmp_path):
    # Arrange: one worker with four threads; three clients send headers, then stall.
    port, proc, _ = serve(head_db, tmp_path, WEB_CONCURRENCY="1", GUNICORN_THREADS="4",
                          BODY_TIMEOUT="2")
    stalled = []
    try:
        wait_for_http(port, "/healthz", proc)
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", port), timeout=15)
            sock.sendall(b"POST /api/users HTTP/1.1\r\nHost: t\r\nContent-Type: "
                         b'application/json\r\nContent-Length: 100\r\n\r\n{"email"')
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
            outcomes.append(request(port, "GET", "/api/users?per_page=1", timeout=10)[0])
        except ConnectionRefusedError:
            outcomes.append("refused")
        except OSError as exc:  # a reset, a connection dropped mid-answer
            outcomes.append(type(exc).__name__)
        time.sleep(0.01)


def test_sigterm_finishes_requests_in_flight_then_exits_0(head_db, tmp_path):
    # Arrange: four requests held in flight by a lock on the table they write to, and a
    # client still opening new connections.
    port, proc, log = serve(head_db, tmp_path, WEB_CONCURRENCY="2")
    holder = psycopg2.connect(**connect_kwargs(head_db))
    done, outcomes = threading.Event(), []
    asker = threading.Thread(target=keep_asking, args=(port, done, outcomes))
    try:
        wait_for_http(port, "/healthz", proc)
        holder.cursor().execute("LOCK TABLE users IN EXCLUSIVE MODE")
        with ThreadPoolExecutor(max_workers=4) as pool:
            posts = [pool.submit(request, port, "POST", "/api/users",
                                 {"email": f"inflight{i}@example.com", "name": "n"})
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
    assert code == 0
    assert set(outcomes) <= {200, "refused"}, outcomes
    assert 200 in outcomes and "refused" in outcomes
    assert "Traceback" not in log.read_text()
