"""/healthz and /readyz, as the interface promises them.

The apps here are built in this process, where the checkout's application is imported;
readiness compares the database with a migration history, so each app is pointed at the
fixture application's history (``widgets``) and its databases, and no test depends on which
application the checkout holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from flask import Flask
from sqlalchemy.engine import URL

from backend import create_app
from backend.config import Config
from backend.extensions import db
from backend.postgres import connect_kwargs
from backend.serving import health
from testkit.support import (
    FIXTURE_REVISIONS,
    execute_sql,
    fixture_project,
    revisions,
    write_revision,
)
from tests.conftest import run_flask


@pytest.fixture
def make_app() -> Iterator:
    """``make_app(url, repo)``: an app on ``url`` whose readiness follows the history of
    ``repo``; its pool is closed after the test, before the database is dropped."""
    made: list[Flask] = []

    def make(url: URL, repo: Path) -> Flask:
        app = create_app(Config(database_url=url))
        app.extensions["migrate"].directory = str(repo / "migrations")
        made.append(app)
        return app

    yield make
    for app in made:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def app(make_app, fixture_db, fixture_repo) -> Flask:
    """An app on a database at the fixture history's head."""
    return make_app(fixture_db, fixture_repo)


@pytest.fixture
def client(app):
    return app.test_client()


def test_healthz_says_ok_without_a_database():
    # Arrange: an app pointed at a port where nothing listens.
    app = create_app(Config.from_env({"DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/none"}))

    # Act
    response = app.test_client().get("/healthz")

    # Assert
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_is_ready_at_head(client):
    response = client.get("/readyz")

    body = response.get_json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert body["database"] == "ok"
    assert body["current"] == body["head"] and len(body["head"]) == 1
    assert body["pending"] == []


def test_readyz_lists_pending_revisions_when_behind(make_app, fixture_db, fixture_repo):
    run_flask(["db", "downgrade", "--", "-2"], fixture_db, cwd=fixture_repo)
    app = make_app(fixture_db, fixture_repo)

    response = app.test_client().get("/readyz")

    body = response.get_json()
    assert response.status_code == 503
    assert body["pending"] == list(FIXTURE_REVISIONS)
    assert body["pending"][-1] == body["head"][0]
    assert "pending" in body["reason"]


def test_readyz_reports_unreachable_database_without_password():
    app = create_app(Config.from_env({"DATABASE_URL": "postgresql://u:s3cret@127.0.0.1:1/none"}))

    response = app.test_client().get("/readyz")

    body = response.get_json()
    assert response.status_code == 503
    assert body["database"] == "error"
    assert set(body) >= {"status", "current", "head", "pending", "reason"}
    assert "s3cret" not in response.get_data(as_text=True)


def test_readyz_survives_its_connection_being_dropped(client, fixture_db):
    # Arrange: a first answer opens the readiness connection; then the server drops it,
    # as after a database restart or failover.
    assert client.get("/readyz").status_code == 200
    killed = execute_sql(fixture_db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE application_name = 'backend-readyz' AND datname = %s",
                         (fixture_db.database,))
    assert killed == [(True,)]

    # Act
    response = client.get("/readyz")

    # Assert: one fresh connection, no false alarm.
    assert response.status_code == 200, response.get_json()


def test_readyz_on_a_database_never_migrated_lists_every_revision(make_app, empty_db,
                                                                   fixture_repo):
    app = make_app(empty_db, fixture_repo)

    response = app.test_client().get("/readyz")

    body = response.get_json()
    assert response.status_code == 503
    assert body["database"] == "ok"
    assert body["current"] == []
    assert body["pending"] == revisions(fixture_repo) == list(FIXTURE_REVISIONS)


def test_a_running_server_sees_a_revision_added_and_applied_since_it_started(make_app,
                                                                            fixture_db,
                                                                            tmp_path):
    # Arrange: a server of a repository copy, answering ready.
    repo = fixture_project(tmp_path / "repo")
    client = make_app(fixture_db, repo).test_client()
    assert client.get("/readyz").status_code == 200

    # Act: a new revision on disk (pending), then applied by hand.
    write_revision(repo, "beef00000001", FIXTURE_REVISIONS[-1], "a new revision")
    pending = client.get("/readyz").get_json()
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)
    applied = client.get("/readyz")

    # Assert
    assert pending["pending"] == ["beef00000001"]
    assert applied.status_code == 200
    assert applied.get_json()["current"] == ["beef00000001"]


def test_probes_queued_behind_a_read_share_the_next_one_and_never_an_older_one(
        app, fixture_db, monkeypatch):
    # Arrange: count the readiness statements and the probes at the reader's lock (the
    # database stays real), and hold a lock that makes the next read wait in the database.
    assert app.test_client().get("/readyz").status_code == 200
    reader = health._reader
    statements, arrivals = [], []
    real_query, real_lock = reader._query, reader.lock

    class CountingLock:
        def acquire(self, timeout: float = -1) -> bool:
            arrivals.append(time.monotonic())
            return real_lock.acquire(timeout=timeout)

        def release(self) -> None:
            real_lock.release()

    monkeypatch.setattr(reader, "_query", lambda url: statements.append(url) or real_query(url))
    monkeypatch.setattr(reader, "lock", CountingLock())
    answers = []

    def probe() -> None:
        answers.append(app.test_client().get("/readyz").status_code)

    def wait_until(condition, what: str) -> None:
        deadline = time.monotonic() + 5
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    blocker = psycopg2.connect(**connect_kwargs(fixture_db))
    threads = [threading.Thread(target=probe) for _ in range(4)]
    try:
        blocker.cursor().execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")

        # Act: one probe waits in the database; three more arrive behind it; the lock goes.
        threads[0].start()
        wait_until(lambda: execute_sql(
            fixture_db, "SELECT 1 FROM pg_stat_activity WHERE application_name = "
                        "'backend-readyz' AND wait_event_type = 'Lock' AND datname = %s",
            (fixture_db.database,)), "the first probe never reached the database")
        for thread in threads[1:]:
            thread.start()
        wait_until(lambda: len(arrivals) == 4, "the three probes never reached the reader")
    finally:
        blocker.close()  # ends its transaction: the first read goes on
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join(timeout=10)
    shared = len(statements)
    probe()  # arrives after every read so far has ended

    # Assert: the first read began before the three arrived, so they could not use it;
    # they shared one read of their own; a later probe got a read of its own.
    assert not any(thread.is_alive() for thread in threads)
    assert answers == [200] * 5
    assert shared == 2
    assert len(statements) == 3


def test_two_apps_in_one_process_each_read_their_own_database(app, make_app, empty_db,
                                                               fixture_repo):
    # Arrange: a second app, on a database never migrated, beside one at head.
    other = make_app(empty_db, fixture_repo)

    # Act: probes alternate between them (they share the process's readiness reader).
    answers = [a.test_client().get("/readyz").status_code for a in (app, other, app, other)]

    # Assert
    assert answers == [200, 503, 200, 503]
