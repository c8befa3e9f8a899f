"""``GET /metrics`` as Prometheus scrapes it: on the service as production runs it
(entrypoint.sh, gunicorn's master and two workers, a real PostgreSQL), where the numbers must
add up across workers and survive a worker's re-fork, and on an app in this process, where
the process's own registry answers. The servers run a copy of the project serving the
fixture application (``widgets``, two revisions).
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import psutil
import psycopg2
import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from backend import create_app
from backend.config import Config
from backend.extensions import db
from backend.migrate.lock import LOCK_KEY
from backend.postgres import connect_kwargs
from backend.serving import metrics
from testkit.support import (
    FIXTURE_REVISIONS,
    PrivateServer,
    execute_sql,
    fixture_project,
    free_port,
    http_get,
    request,
    run_concurrently,
    start_entrypoint,
    stop,
    wait_for_http,
    write_revision,
)
from tests.conftest import run_flask
from tests.test_serving import pids_in, workers_of

CLIENTS = 12
ROUNDS = 10
WIDGETS = "/api/widgets"
Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by (name, labels)."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(port: int) -> Samples:
    status, text = http_get(port, "/metrics", timeout=10)
    assert status == 200, text
    return parse(text)


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


def served(samples: Samples, route: str, method: str = "GET", status: str = "200") -> float:
    return value(samples, "backend_http_requests_total", route=route, method=method,
                 status=status) or 0.0


def timed(samples: Samples, route: str, method: str = "GET") -> float:
    return value(samples, "backend_http_request_duration_seconds_count", route=route,
                 method=method) or 0.0


def read_widgets(port: int) -> list[int]:
    return [request(port, "GET", WIDGETS)[0] for _ in range(ROUNDS)]


def burst(port: int) -> list:
    """CLIENTS clients at once, ROUNDS reads each: their statuses, or what failed."""
    answers = []
    for result in run_concurrently([lambda: read_widgets(port)] * CLIENTS, CLIENTS):
        answers += result if isinstance(result, list) else [repr(result)]
    return answers


def serve(repo: Path, url, tmp_path: Path, **env: str):
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    proc = start_entrypoint(repo, url, log, PORT=str(port), **env)
    wait_for_http(port, "/readyz", proc)
    return port, proc, log


def wait_for_refork(proc, killed: int) -> list[int]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        current = workers_of(proc)
        if len(current) == 2 and killed not in current:
            return current
        time.sleep(0.1)
    raise AssertionError("gunicorn did not fork a new worker within 15s")


def test_counts_add_up_across_workers_and_survive_a_refork(fixture_repo, empty_db, tmp_path):
    # Arrange: the master migrates the empty database (the fixture's two revisions), then
    # forks two workers; concurrent clients read through both.
    port, proc, log = serve(fixture_repo, empty_db, tmp_path, WEB_CONCURRENCY="2",
                            ACCESS_LOG="1")
    try:
        first = burst(port)
        served_by = pids_in(log)
        scrapes = [scrape(port) for _ in range(6)]  # whichever worker answers each

        # Act: a worker dies; gunicorn forks a replacement, and both serve again.
        killed = workers_of(proc)[0]
        os.kill(killed, signal.SIGKILL)
        current = wait_for_refork(proc, killed)
        second = burst(port)
        after = [scrape(port) for _ in range(6)]
    finally:
        stop(proc)

    # Assert: every worker's requests, once each, whichever worker answered the scrape.
    n = CLIENTS * ROUNDS
    assert first == [200] * n and second == [200] * n
    assert len(served_by) == 2, "both workers served"
    assert {served(s, WIDGETS) for s in scrapes} == {n}
    assert {timed(s, WIDGETS) for s in scrapes} == {n}
    before = scrapes[-1]
    assert value(before, "backend_db_pool_checkouts_total") >= n
    assert value(before, "backend_db_pool_checkout_wait_seconds_count") >= 0  # the slow ones
    assert value(before, "backend_db_pool_connections_in_use") == 0
    # The dead worker's requests are kept, the new worker's added, none counted twice.
    assert {str(pid) for pid in current} - {str(killed)} <= pids_in(log)
    assert {served(s, WIDGETS) for s in after} == {2 * n}
    assert {timed(s, WIDGETS) for s in after} == {2 * n}
    assert value(after[-1], "backend_db_pool_connections_in_use") == 0
    # The start's migrations, recorded by the master before it forked.
    assert value(before, "backend_migration_revision_duration_seconds_count",
                 direction="up") == len(FIXTURE_REVISIONS)
    assert value(before, "backend_migration_revision_duration_seconds_count",
                 direction="down") == 0
    # The schema, read when asked.
    assert value(before, "backend_schema_revision", revision=FIXTURE_REVISIONS[-1]) == 1
    assert value(before, "backend_schema_pending_revisions") == 0
    assert value(before, "backend_schema_post_deploy_pending_revisions") == 0
    assert value(before, "backend_db_circuit_open") == 0
    assert value(before, "backend_metrics_database_errors_total", source="schema") == 0
    assert "Traceback" not in log.read_text()


def test_a_route_is_labelled_by_its_rule_and_unknown_paths_share_one_label(fixture_repo,
                                                                          fixture_db,
                                                                          tmp_path):
    port, proc, _ = serve(fixture_repo, fixture_db, tmp_path, WEB_CONCURRENCY="1")
    try:
        created = [request(port, "POST", WIDGETS, {"name": f"w{i}"})[1]["id"] for i in range(3)]
        for widget in created:
            request(port, "GET", f"{WIDGETS}/{widget}")
        for path in ("/nothing/here", "/api/widgets/x1", "/another"):
            request(port, "GET", path)
        request(port, "BREW", WIDGETS)
        samples = scrape(port)
    finally:
        stop(proc)

    assert served(samples, WIDGETS, "POST", "201") == 3
    assert served(samples, "/api/widgets/<int:widget_id>") == 3
    assert served(samples, "unmatched", status="404") == 3
    assert served(samples, "unmatched", "other", "405") == 1
    assert not [labels for name, labels in samples
                if name == "backend_http_requests_total" and
                any(v.startswith(("/api/widgets/1", "/nothing")) for _, v in labels)]


# One worker, the one that answered /readyz: a worker still booting when a stop comes would
# miss the SIGTERM, and the master would wait out GUNICORN_GRACEFUL_TIMEOUT for it.
ONE_WORKER = {"WEB_CONCURRENCY": "1"}


def test_a_fresh_directory_per_start_and_none_left_behind(fixture_repo, fixture_db, tmp_path):
    # Arrange: a master killed outright leaves its directory behind.
    base = tmp_path / "tmp"
    base.mkdir()
    port, proc, _ = serve(fixture_repo, fixture_db, tmp_path, TMPDIR=str(base), **ONE_WORKER)
    request(port, "GET", WIDGETS)
    killed = list(base.glob("backend-metrics-*"))
    files = [path.name for path in killed[0].glob("*.db")]
    processes = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children()]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=15)
    psutil.wait_procs(processes, timeout=15)

    # Act: the next start, then its stop.
    port, proc, _ = serve(fixture_repo, fixture_db, tmp_path, TMPDIR=str(base), **ONE_WORKER)
    try:
        running = list(base.glob("backend-metrics-*"))
        samples = scrape(port)
    finally:
        stop(proc)

    # Assert
    assert len(killed) == 1 and files
    assert len(running) == 1 and running != killed, "the killed master's directory removed"
    assert served(samples, WIDGETS) == 0, "nothing counted by the previous start"
    assert list(base.iterdir()) == []


QUERY_TIMEOUT = 2  # DB_QUERY_TIMEOUT: a round trip is given up one second after it


@pytest.fixture(scope="module")
def stoppable(fixture_repo):
    """A PostgreSQL of this module's own, to stop and pause."""
    server = PrivateServer(Path(tempfile.mkdtemp(prefix="pgtest-metrics-")))
    run_flask(["db", "upgrade"], server.url, cwd=fixture_repo)
    yield server
    server.resume()
    server.close()


def test_a_hung_database_costs_a_scrape_what_it_costs_readyz(stoppable, fixture_repo,
                                                            tmp_path):
    # Arrange
    port, proc, _ = serve(fixture_repo, stoppable.url, tmp_path, WEB_CONCURRENCY="2",
                          DB_QUERY_TIMEOUT=str(QUERY_TIMEOUT))
    try:
        # Act: the database hangs; Prometheus keeps scraping.
        stoppable.pause()
        took, scrapes = [], []
        for _ in range(3):
            began = time.monotonic()
            scrapes.append(scrape(port))
            took.append(time.monotonic() - began)
        stoppable.resume()
        again = scrape(port)
    finally:
        stoppable.resume()
        stop(proc)

    # Assert: bounded as /readyz is (a wait for its reader, then one round trip's
    # deadline); the database's series left out and counted; back once it answers.
    assert max(took) < 2 * (QUERY_TIMEOUT + 1) + 1, took
    assert all(value(s, "backend_schema_revision", revision=FIXTURE_REVISIONS[-1]) is None
               for s in scrapes)
    assert value(scrapes[-1], "backend_metrics_database_errors_total", source="schema") >= 3
    assert value(again, "backend_schema_revision", revision=FIXTURE_REVISIONS[-1]) == 1


def test_a_stopped_database_shows_the_breaker_open_and_metrics_still_answers(stoppable,
                                                                           fixture_repo,
                                                                           tmp_path):
    # Arrange
    port, proc, _ = serve(fixture_repo, stoppable.url, tmp_path, WEB_CONCURRENCY="2",
                          DB_QUERY_TIMEOUT=str(QUERY_TIMEOUT))
    try:
        healthy = scrape(port)

        # Act: the database stops; API requests open the breaker and are turned away.
        stoppable.stop()
        statuses = [request(port, "GET", WIDGETS)[0] for _ in range(30)]
        began = time.monotonic()
        down = [scrape(port) for _ in range(4)]
        took = (time.monotonic() - began) / len(down)

        # Act: it starts again; each worker's next request closes its breaker.
        stoppable.start()
        deadline, back = time.monotonic() + 20, None
        while time.monotonic() < deadline:
            for _ in range(4):
                request(port, "GET", WIDGETS)
            back = scrape(port)
            if value(back, "backend_db_circuit_open") == 0:
                break
            time.sleep(0.2)
    finally:
        stop(proc)

    # Assert
    assert value(healthy, "backend_db_circuit_open") == 0
    assert value(healthy, "backend_schema_revision", revision=FIXTURE_REVISIONS[-1]) == 1
    assert 503 in statuses
    assert {value(s, "backend_db_circuit_open") for s in down} == {1}
    assert took < 1, f"a scrape took {took:.2f}s with the database stopped"
    assert all(value(s, "backend_schema_revision", revision=FIXTURE_REVISIONS[-1]) is None
               for s in down)
    assert value(down[-1], "backend_metrics_database_errors_total", source="schema") >= 4
    assert value(down[-1], "backend_db_circuit_rejections_total") > 0
    assert served(down[-1], WIDGETS, status="503") == statuses.count(503)
    assert value(back, "backend_db_circuit_open") == 0
    assert value(back, "backend_schema_revision", revision=FIXTURE_REVISIONS[-1]) == 1


BACKFILL = "bf00000000f1"
BACKFILL_IMPORTS = "from backend.migrate.background import register_backfill, unregister_backfill\n"
BACKFILL_UPGRADE = ('register_backfill("widgets_size_up", "widgets", "UPDATE widgets SET size '
                    '= size + 1 WHERE id > :start AND id <= :stop", batch_size=100)')


def test_a_background_migration_shows_its_rows_and_state(fixture_db, tmp_path):
    # Arrange: 300 widgets, and a release whose revision registers a backfill over them.
    repo = fixture_project(tmp_path / "repo")
    write_revision(repo, BACKFILL, FIXTURE_REVISIONS[-1], "register a widget backfill",
                   upgrade=BACKFILL_UPGRADE,
                   downgrade='unregister_backfill("widgets_size_up")', imports=BACKFILL_IMPORTS)
    execute_sql(fixture_db, "INSERT INTO widgets (name, size) SELECT 'w' || g, 0 "
                            "FROM generate_series(1, 300) AS g")
    port, proc, _ = serve(repo, fixture_db, tmp_path)
    try:
        registered = scrape(port)

        # Act
        run_flask(["migrations", "backfill", "run"], fixture_db, cwd=repo)
        finished = scrape(port)
    finally:
        stop(proc)

    # Assert
    name = "widgets_size_up"
    assert value(registered, "backend_migration_revision_duration_seconds_count",
                 direction="up") == 1
    assert value(registered, "backend_schema_revision", revision=BACKFILL) == 1
    assert value(registered, "backend_background_migration_rows_done", name=name) == 0
    assert value(registered, "backend_background_migration_state", name=name,
                 state="pending") == 1
    assert value(finished, "backend_background_migration_rows_done", name=name) == 300
    assert value(finished, "backend_background_migration_rows_total", name=name) == 300
    assert value(finished, "backend_background_migration_state", name=name, state="done") == 1
    assert value(finished, "backend_background_migration_state", name=name,
                 state="pending") == 0
    assert value(finished, "backend_metrics_database_errors_total",
                 source="background_migrations") == 0


@pytest.fixture
def local_app(fixture_db, fixture_repo) -> Flask:
    app = create_app(Config(database_url=fixture_db))
    app.extensions["migrate"].directory = str(fixture_repo / "migrations")
    yield app
    with app.app_context():
        db.engine.dispose()


def test_without_gunicorn_the_process_registry_answers(local_app):
    client = local_app.test_client()
    before = parse(client.get("/metrics").get_data(as_text=True))

    for _ in range(3):
        client.get("/healthz")
    response = client.get("/metrics")
    after = parse(response.get_data(as_text=True))

    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    assert served(after, "/healthz") - served(before, "/healthz") == 3
    assert timed(after, "/healthz") - timed(before, "/healthz") == 3
    assert value(after, "backend_schema_revision", revision=FIXTURE_REVISIONS[-1]) == 1
    assert any(name.startswith("process_") for name, _ in after), "the process's own series"


def test_without_a_database_metrics_answers_200_and_counts_the_failure():
    app = create_app(Config.from_env({"DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/none"}))
    client = app.test_client()
    before = parse(client.get("/metrics").get_data(as_text=True))

    response = client.get("/metrics")
    after = parse(response.get_data(as_text=True))

    assert response.status_code == 200
    assert not [name for name, _ in after if name.startswith("backend_schema_")]
    assert (value(after, "backend_metrics_database_errors_total", source="schema")
            - value(before, "backend_metrics_database_errors_total", source="schema")) == 1


# --- METRICS=off and METRICS_PORT ---------------------------------------------------------


def statuses_of(calls: list) -> list:
    """Each call's result, in order; what failed as its repr."""
    return [result if isinstance(result, (int, tuple)) else repr(result)
            for result in run_concurrently(calls, CLIENTS)]


def test_metrics_off_records_nothing_and_metrics_answers_404(fixture_repo, fixture_db,
                                                             tmp_path):
    # Arrange: a TMPDIR of the test's own, and a multiprocess directory the environment
    # names, as an operator's might: neither may get a file.
    base, inherited = tmp_path / "tmp", tmp_path / "inherited"
    base.mkdir()
    inherited.mkdir()
    port, proc, log = serve(fixture_repo, fixture_db, tmp_path, WEB_CONCURRENCY="2",
                            METRICS="off", TMPDIR=str(base),
                            PROMETHEUS_MULTIPROC_DIR=str(inherited))
    try:
        # Act: right after the start, through both workers.
        served_api = burst(port)
        scraped = statuses_of([lambda: request(port, "GET", "/metrics")[0]] * CLIENTS)
        written = [*base.iterdir(), *inherited.iterdir()]
    finally:
        stop(proc)

    # Assert
    assert served_api == [200] * (CLIENTS * ROUNDS)
    assert scraped == [404] * CLIENTS
    assert written == [], "no multiprocess file, no directory"
    assert "Traceback" not in log.read_text()


PORT_ROUNDS = 3  # of the nine requests below, for each client


def test_metrics_port_answers_metrics_alone_and_the_public_port_everything_else(
        fixture_repo, fixture_db, tmp_path):
    # Arrange
    metrics_port = free_port()
    port, proc, log = serve(fixture_repo, fixture_db, tmp_path, WEB_CONCURRENCY="2",
                            ACCESS_LOG="1", METRICS_PORT=str(metrics_port))
    # (port, path, Host header or None, the status expected); the Host header names the
    # other port, and changes nothing: the port the connection came in on decides.
    plan = [
        (port, WIDGETS, None, 200),
        (port, "/healthz", None, 200),
        (port, "/metrics", None, 404),
        (port, "/metrics", f"127.0.0.1:{metrics_port}", 404),
        (metrics_port, "/metrics", None, 200),
        (metrics_port, "/metrics", f"127.0.0.1:{port}", 200),
        (metrics_port, WIDGETS, None, 404),
        (metrics_port, "/healthz", None, 404),
        (metrics_port, "/", None, 404),
    ]

    def client() -> list[tuple]:
        answers = []
        for _ in range(PORT_ROUNDS):
            for target, path, host, _expected in plan:
                status, _ = request(target, "GET", path,
                                    headers={"Host": host} if host else None)
                answers.append((target, path, host, status))
        return answers

    try:
        # Act: right after the start, through both workers, both ports at once.
        results = run_concurrently([client] * CLIENTS, CLIENTS)
        samples = scrape(metrics_port)
        served_by = pids_in(log)
    finally:
        stop(proc)

    # Assert
    expected = [(target, path, host, status) for target, path, host, status in plan]
    assert results == [expected * PORT_ROUNDS] * CLIENTS
    assert len(served_by) == 2, "both workers served"
    n = CLIENTS * PORT_ROUNDS
    assert served(samples, WIDGETS) == n
    assert served(samples, "/metrics") == 2 * n
    # The refused requests count as what they were, paths not found: none under its rule.
    assert served(samples, "unmatched", status="404") == 5 * n
    assert served(samples, "/metrics", status="404") == 0
    assert served(samples, WIDGETS, status="404") == 0


class FakeSocket:
    """What gunicorn hands the app as ``gunicorn.socket``: the accepted connection."""

    def __init__(self, address) -> None:
        self.address = address

    def getsockname(self):
        return self.address


@pytest.fixture
def port_app(fixture_db, fixture_repo) -> Flask:
    app = create_app(Config(database_url=fixture_db, port=8000, metrics_port=9100))
    app.extensions["migrate"].directory = str(fixture_repo / "migrations")
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize(("accepted", "healthz", "metrics"), [
    (("0.0.0.0", 8000), 200, 404),
    (("0.0.0.0", 9100), 404, 200),
    (("::", 9100, 0, 0), 404, 200),
    ("/run/gunicorn.sock", 200, 404),  # a Unix socket is never the metrics port
    (None, 200, 200),  # outside gunicorn: one listener, as if METRICS_PORT were unset
])
def test_the_port_a_connection_was_accepted_on_decides_never_the_host(port_app, accepted,
                                                                      healthz, metrics):
    client = port_app.test_client()
    environ = {} if accepted is None else {"gunicorn.socket": FakeSocket(accepted)}
    wrong_host = {"Host": "localhost:8000" if metrics == 200 else "localhost:9100",
                  "X-Forwarded-Port": "9100"}

    got = (client.get("/healthz", headers=wrong_host, environ_base=environ).status_code,
           client.get("/metrics", headers=wrong_host, environ_base=environ).status_code)

    assert got == (healthz, metrics)


def test_metrics_off_registers_no_hook_and_leaves_the_pool_alone(fixture_db, fixture_repo):
    app = create_app(Config(database_url=fixture_db, metrics=False))
    app.extensions["migrate"].directory = str(fixture_repo / "migrations")
    try:
        hooks = [*app.before_request_funcs.get(None, []), *app.after_request_funcs.get(None, [])]
        with app.app_context():
            pool = db.engine.pool
            listening = event.contains(db.engine, "checkout", metrics._checked_out)
        response = app.test_client().get("/metrics")
        healthz = app.test_client().get("/healthz")
    finally:
        with app.app_context():
            db.engine.dispose()

    assert not [hook for hook in hooks if hook.__module__ == metrics.__name__]
    assert not getattr(pool, "_metrics_measured", False)
    assert not listening
    assert response.status_code == 404
    assert healthz.status_code == 200


# --- migrations: their durations and their lock waits -------------------------------------

COLOUR = "ab00000000c1"


def wait_for_line(log: Path, text: str, proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"no {text!r} in the log within {timeout}s"
        time.sleep(0.05)


def test_a_start_records_its_migration_the_lock_it_waited_for_and_its_table_lock_timeouts(
        fixture_db, tmp_path):
    # Arrange: a release with a revision to apply, and a session holding the migration lock
    # and a lock on the revision's table.
    repo = fixture_project(tmp_path / "repo")
    write_revision(repo, COLOUR, FIXTURE_REVISIONS[-1], "add a widget colour",
                   upgrade='op.add_column("widgets", sa.Column("colour", sa.Text()))',
                   downgrade='op.drop_column("widgets", "colour")')
    blocker = psycopg2.connect(**connect_kwargs(fixture_db))
    port = free_port()
    log = tmp_path / "serve.log"
    try:
        with blocker.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            cur.execute("LOCK TABLE widgets IN ACCESS SHARE MODE")  # stays until rollback
        proc = start_entrypoint(repo, fixture_db, log, PORT=str(port), WEB_CONCURRENCY="1",
                                MIGRATION_LOCK_TIMEOUT="100ms", MIGRATION_RETRIES="20",
                                MIGRATION_RETRY_DELAY="0.1")
        try:
            # Act: the start waits for the migration lock a second, then its revision
            # waits for the table until a try has timed out.
            wait_for_line(log, "waiting for the migration lock", proc)
            time.sleep(1.0)
            with blocker.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            wait_for_line(log, "could not lock a table within lock_timeout", proc)
            blocker.rollback()
            wait_for_http(port, "/readyz", proc)
            migrated = scrape(port)
        finally:
            stop(proc)
    finally:
        blocker.close()

    # Act: the next start, with nothing left to apply.
    port, proc, _ = serve(repo, fixture_db, tmp_path, WEB_CONCURRENCY="1")
    try:
        again = scrape(port)
    finally:
        stop(proc)

    # Assert
    def count(samples, metric, **labels):
        return value(samples, f"{metric}_count", **labels)

    def total(samples, metric, **labels):
        return value(samples, f"{metric}_sum", **labels)

    waits, runs = "backend_migration_lock_wait_seconds", "backend_migration_duration_seconds"
    assert count(migrated, waits, outcome="acquired") == 1
    assert total(migrated, waits, outcome="acquired") >= 1.0
    assert count(migrated, waits, outcome="gave_up") == 0
    assert value(migrated, "backend_migration_lock_timeouts_total") >= 1
    assert count(migrated, runs, outcome="applied") == 1
    assert total(migrated, runs, outcome="applied") > total(migrated, waits, outcome="acquired")
    assert count(migrated, runs, outcome="nothing") == 0
    assert count(migrated, runs, outcome="failed") == 0
    assert count(migrated, "backend_migration_revision_duration_seconds", direction="up") == 1
    assert value(migrated, "backend_schema_revision", revision=COLOUR) == 1
    assert count(again, runs, outcome="nothing") == 1
    assert count(again, runs, outcome="applied") == 0
    assert count(again, waits, outcome="acquired") == 1
    assert total(again, waits, outcome="acquired") < 1.0
    assert value(again, "backend_migration_lock_timeouts_total") == 0
