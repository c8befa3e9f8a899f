"""Two roles on a real PostgreSQL: the owner migrates, the runtime role serves and can
change rows but never the schema nor the lifecycle's records.

The database belongs to the owner role (as a managed database's application owner would);
the runtime role is a plain login. ``MIGRATION_DATABASE_URL`` names the first,
``DATABASE_URL`` the second; the lifecycle keeps the runtime role's grants. The roles come
from tests/conftest.py (``roles``, ``create_roles``), which the outage and rolling-deploy
tests share: they run with both roles too.
"""

from __future__ import annotations

import time

from testkit.support import (
    ClientThreads,
    execute_sql,
    fixture_project,
    free_port,
    request,
    start_entrypoint,
    stop,
    wait_for_http,
    write_revision,
)
from tests.conftest import refused, run_flask, two_roles

SCHEMA_CHANGES = [
    "CREATE TABLE intruder (id int)",
    "ALTER TABLE widgets ADD COLUMN intruder int",
    "DROP TABLE widgets",
    "TRUNCATE widgets",
    "CREATE INDEX intruder ON widgets (name)",
    "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "DELETE FROM alembic_version",
    "UPDATE alembic_version SET version_num = 'x'",
    "INSERT INTO migration_checksums (revision, checksum, filename) VALUES ('x', 'x', 'x')",
    "UPDATE migration_checksums SET checksum = 'x'",
]


class Writers(ClientThreads):
    """Clients creating and reading widgets through every worker while a test acts."""

    def __init__(self, port: int, clients: int = 8) -> None:
        super().__init__(clients)
        self.port, self.statuses = port, []

    def client(self) -> None:
        while not self.done.is_set():
            status, body = request(self.port, "POST", "/api/widgets", {"name": "w", "size": 1})
            self.statuses.append(status)
            if status == 201:
                self.statuses.append(request(self.port, "GET", f"/api/widgets/{body['id']}")[0])


def test_the_runtime_role_serves_and_cannot_change_the_schema(roles, tmp_path):
    owner, runtime = roles
    repo = fixture_project(tmp_path / "repo")
    port = free_port()
    proc = start_entrypoint(repo, runtime, tmp_path / "out.log", PORT=str(port),
                            **two_roles(owner))
    try:
        # Act: the start migrates as the owner, then every worker serves as the runtime role
        ready = wait_for_http(port, "/readyz", proc, timeout=60)[0]
        with Writers(port) as writers:
            while len(writers.statuses) < 200 and proc.poll() is None:
                time.sleep(0.05)
    finally:
        stop(proc)

    # Assert: served, rows written, and the tables belong to the owner
    assert ready == 200, (tmp_path / "out.log").read_text()
    assert writers.statuses and set(writers.statuses) <= {200, 201}
    assert execute_sql(runtime, "SELECT count(*) > 0 FROM widgets") == [(True,)]
    assert execute_sql(owner, "SELECT DISTINCT tableowner FROM pg_tables "
                              "WHERE schemaname = 'public'") == [(owner.username,)]
    # and the runtime role may change rows, but nothing else
    assert not refused(runtime, "UPDATE widgets SET size = size + 1")
    assert not refused(runtime, "DELETE FROM widgets WHERE size < 0")
    assert not refused(runtime, "SELECT version_num FROM alembic_version")
    for statement in SCHEMA_CHANGES:
        assert refused(runtime, statement), statement


def test_a_table_a_new_revision_creates_is_granted_in_the_same_upgrade(roles, tmp_path):
    owner, runtime = roles
    repo = fixture_project(tmp_path / "repo")
    run_flask(["db", "upgrade"], runtime, cwd=repo, **two_roles(owner))
    write_revision(repo, "ab0000000001", run_flask(["db", "heads"], runtime, cwd=repo,
                                                    **two_roles(owner)).stdout.split()[0],
                   "add gadgets",
                   upgrade="op.create_table('gadgets', sa.Column('id', sa.BigInteger, "
                           "sa.Identity(), primary_key=True), sa.Column('name', sa.Text))",
                   downgrade="op.drop_table('gadgets')")

    run_flask(["db", "upgrade"], runtime, cwd=repo, **two_roles(owner))

    assert execute_sql(runtime, "INSERT INTO gadgets (name) VALUES ('g') RETURNING id") == [(1,)]
    assert refused(runtime, "DROP TABLE gadgets")
    # a table the owner creates by hand later gets the data privileges by default
    execute_sql(owner, "CREATE TABLE by_hand (id int)")
    assert not refused(runtime, "INSERT INTO by_hand VALUES (1)")


def test_serving_as_the_runtime_role_alone_needs_no_ddl_when_nothing_is_pending(roles,
                                                                              tmp_path):
    # Arrange: the owner migrated; the service then starts with the runtime role only, and
    # MIGRATE_ON_START on (the start path used to run CREATE TABLE IF NOT EXISTS)
    owner, runtime = roles
    repo = fixture_project(tmp_path / "repo")
    run_flask(["db", "upgrade"], runtime, cwd=repo, **two_roles(owner))
    port = free_port()

    proc = start_entrypoint(repo, runtime, tmp_path / "out.log", PORT=str(port))
    try:
        ready = wait_for_http(port, "/readyz", proc, timeout=60)[0]
        created = request(port, "POST", "/api/widgets", {"name": "w", "size": 2})[0]
    finally:
        stop(proc)

    assert ready == 200 and created == 201, (tmp_path / "out.log").read_text()


def test_backups_and_background_migrations_run_as_the_owner(roles, tmp_path):
    owner, runtime = roles
    repo = fixture_project(tmp_path / "repo")
    run_flask(["db", "upgrade"], runtime, cwd=repo, **two_roles(owner))

    backup = run_flask(["migrations", "backup", "--dir", str(tmp_path / "dumps")], runtime,
                       cwd=repo, **two_roles(owner))
    status = run_flask(["migrations", "backfill", "status"], runtime, cwd=repo,
                       **two_roles(owner))

    assert backup.stdout.strip().endswith(".dump")
    assert status.returncode == 0


def test_a_migration_url_to_another_database_is_refused_in_one_line(roles, tmp_path):
    owner, runtime = roles
    elsewhere = owner.set(database="postgres")

    proc = run_flask(["db", "current"], runtime, check=False,
                     MIGRATION_DATABASE_URL=elsewhere.render_as_string(hide_password=False))

    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "MIGRATION_DATABASE_URL and DATABASE_URL must name the same database" in output
    assert "owner-pw" not in output and "runtime-pw" not in output
    assert "Traceback" not in output
