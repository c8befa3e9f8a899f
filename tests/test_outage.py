"""A database that hangs or stops under load: quick 503s, a live /healthz, a quiet log, and
recovery without a restart. The server here is the module's own, paused and stopped for real;
the service is a copy of the project serving the fixture application (``widgets``).

The service runs with two roles, as docs/operations.md recommends: it migrates as the owner
(``MIGRATION_DATABASE_URL``) and its workers, the breaker and /readyz connect as the runtime
role (``DATABASE_URL``), which reconnects after the outage with its own privileges only.
tests/test_metrics.py stops and pauses a server under one role.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from testkit.support import (
    ClientThreads,
    PrivateServer,
    free_port,
    request,
    start_entrypoint,
    stop,
    wait_for_http,
)
from tests.conftest import create_roles, run_flask, serving_roles, two_roles

QUERY_TIMEOUT = 2  # DB_QUERY_TIMEOUT: the client gives up one second after it
CLIENTS = 6


@dataclass
class Outage:
    """The module's server, and the two roles of the database the service uses on it."""

    private: PrivateServer
    owner: URL
    runtime: URL

    def pause(self) -> None:
        self.private.pause()

    def resume(self) -> None:
        self.private.resume()

    def stop(self) -> None:
        self.private.stop()

    def start(self) -> None:
        self.private.start()


@pytest.fixture(scope="module")
def server(fixture_repo) -> Iterator[Outage]:
    private = PrivateServer(Path(tempfile.mkdtemp(prefix="pgtest-outage-")))
    try:
        owner, runtime = create_roles(private.url)
        run_flask(["db", "upgrade"], runtime, cwd=fixture_repo, **two_roles(owner))
        yield Outage(private, owner, runtime)
    finally:
        private.resume()
        private.close()  # the roles and the database go with the server


@pytest.fixture
def service(server, fixture_repo, tmp_path):
    port = free_port()
    log = tmp_path / "service.log"
    proc = start_entrypoint(fixture_repo, server.runtime, log, PORT=str(port),
                            WEB_CONCURRENCY="2", ACCESS_LOG="0",
                            DB_QUERY_TIMEOUT=str(QUERY_TIMEOUT), **two_roles(server.owner))
    wait_for_http(port, "/readyz", proc)
    yield port, log
    server.resume()
    stop(proc)


class Load(ClientThreads):
    """CLIENTS clients reading and writing in a loop; every answer kept as (status, body)."""

    def __init__(self, port: int) -> None:
        self.port, self.answers = port, []
        super().__init__(CLIENTS)

    def client(self) -> None:
        while not self.done.is_set():
            for method, path, payload in (("POST", "/api/widgets", {"name": "load"}),
                                          ("GET", "/api/widgets", None)):
                try:
                    self.answers.append(request(self.port, method, path, payload, timeout=30))
                except OSError as exc:
                    self.answers.append((0, str(exc)))


def healthz_latencies(port: int, seconds: float) -> list[tuple[float, int, float]]:
    """Poll /healthz the way a liveness probe does: (when it started, status, seconds taken)."""
    probes, begun = [], time.monotonic()
    while time.monotonic() - begun < seconds:
        started = time.monotonic()
        status, _ = request(port, "GET", "/healthz", timeout=30)
        probes.append((started - begun, status, time.monotonic() - started))
        time.sleep(0.2)
    return probes


def wait_until_served(port: int, timeout: float = 15) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if request(port, "GET", "/api/widgets")[0] == 200:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"the API did not recover within {timeout}s")


def test_a_hung_database_leaves_healthz_answering_and_the_api_answering_503(server, service):
    # Arrange
    port, log = service
    with Load(port) as load:
        time.sleep(1)

        # Act: the database hangs for 12 seconds under load.
        server.pause()
        probes = healthz_latencies(port, 12)
        server.resume()
        recovered = wait_until_served(port)
    statuses = {status for status, _ in load.answers}
    reconnected_as = serving_roles(server.owner)

    # Assert: requests caught in the hang wait out the deadline (a pooled connection's
    # ping, then one reconnect). A request admitted just before its worker saw the first
    # failure (one deadline into the hang) may hold a thread that long after it, so a probe
    # may queue behind it until then; from then on every probe is answered at once.
    deadline = QUERY_TIMEOUT + 1
    worst = 2 * deadline
    settled = deadline + worst
    assert {status for _, status, _ in probes} == {200}
    assert max(seconds for _, _, seconds in probes) < worst + 1
    late = [seconds for at, _, seconds in probes if at > settled]
    assert len(late) >= 5 and [seconds for seconds in late if seconds > 0.5] == []
    assert statuses <= {200, 201, 503}, [a for a in load.answers if a[0] not in (200, 201, 503)]
    assert 503 in statuses
    assert all("database" in body["error"] for status, body in load.answers if status == 503)
    assert recovered < 10
    assert reconnected_as == [server.runtime.username]
    text = log.read_text()
    assert "Traceback" not in text
    assert len(text.splitlines()) < 60


def test_a_stopped_database_answers_503_quietly_and_recovers_without_a_restart(server,
                                                                              service):
    # Arrange
    port, log = service
    lines_before = len(log.read_text().splitlines())
    with Load(port) as load:
        time.sleep(1)

        # Act: the database stops for 5 seconds under load, then starts again.
        server.stop()
        time.sleep(2)
        ready_status, ready = request(port, "GET", "/readyz")
        time.sleep(3)
        server.start()
        recovered = wait_until_served(port)
    failed = [body for status, body in load.answers if status == 503]
    reconnected_as = serving_roles(server.owner)

    # Assert
    assert {status for status, _ in load.answers} <= {200, 201, 503}
    assert len(failed) > 10
    assert all(body["error"].startswith("database unavailable") for body in failed)
    assert ready_status == 503 and ready["reason"].startswith("database unavailable")
    assert recovered < 10
    assert reconnected_as == [server.runtime.username]
    new_lines = log.read_text().splitlines()[lines_before:]
    assert not [line for line in new_lines if "Traceback" in line]
    assert len(new_lines) < 40, f"{len(failed)} failed requests made {len(new_lines)} lines"
