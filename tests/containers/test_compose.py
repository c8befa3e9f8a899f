"""The README's container path and the guide's loop, as a user types them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

from testkit.containers import (
    BACKFILL,
    CONTRACT,
    ENV_FILE_VALUES,
    EXPAND,
    NEW_ROW_CODE,
    OWNER_URL,
    ROLE_CHECK,
    ROWS,
    RUNTIME_URL,
    SCHEMA_AND_RECORDS,
    SESSION_ROLES,
    Project,
    copy_for_containers,
    docker,
    wait_replica_ready,
    write_backfill_release,
    write_env_file,
)
from testkit.support import FIXTURE_REVISIONS, child_env, head_revision, request, write_revision


def add_model_column(repo, column: str) -> None:
    """The guide's model change: a nullable text column on the fixture's widgets."""
    model = repo / "backend/models/__init__.py"
    text = model.read_text()
    anchor = "\n    def to_dict(self)"
    assert anchor in text
    model.write_text(text.replace(
        anchor, f"\n    {column}: Mapped[str | None] = mapped_column(sa.Text, nullable=True)\n"
                + anchor, 1))


def has_column(project, column: str) -> bool:
    return project.sql("SELECT count(*) FROM information_schema.columns WHERE "
                       f"table_name = 'widgets' AND column_name = '{column}'") == "1"


def role_answers(project, variable: str, statements: tuple[str, ...]) -> dict[str, str]:
    return json.loads(project.exec("backend", "python", "-c", ROLE_CHECK, variable,
                                   *statements).stdout)


def test_up_build_migrates_as_the_owner_and_serves_as_the_runtime_role(project):
    # Act
    project("up", "-d", "--build")
    ready = project.wait_ready()
    status, _ = request(project.port, "POST", "/api/widgets", {"name": "served"})
    serving = project.sql(SESSION_ROLES)
    runtime = role_answers(project, "DATABASE_URL", SCHEMA_AND_RECORDS + ROWS)
    owner = role_answers(project, "MIGRATION_DATABASE_URL", SCHEMA_AND_RECORDS)

    # Assert: the owner migrated (and dumped first), the runtime role serves, as uid 10001
    assert ready["current"] == ready["head"] and ready["pending"] == []
    logs = project.logs()
    assert logs.count("applied ") == len(FIXTURE_REVISIONS)
    assert project.exec("backend", "id", "-u").stdout.strip() == "10001"
    dumps = project.exec("backend", "ls", "/backups").stdout.split()
    assert len(dumps) == 1 and dumps[0].endswith(".dump")
    assert project.sql("SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables "
                       "WHERE schemaname = 'public'") == "app_owner"
    assert status == 201 and serving == "app"
    # and the runtime role changes rows, never the schema nor the lifecycle's records
    assert runtime == {"current_user": "app", **dict.fromkeys(SCHEMA_AND_RECORDS, "refused"),
                       **dict.fromkeys(ROWS, "allowed")}
    assert owner == {"current_user": "app_owner",
                     **dict.fromkeys(SCHEMA_AND_RECORDS, "allowed")}
    # The superuser is nobody's application role; no password ever reaches a log.
    assert project.sql("SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles "
                       "WHERE rolsuper") == "postgres"
    everything = logs + project.logs("db") + project.logs("db-roles")
    for password in ENV_FILE_VALUES.values():
        assert password not in everything and password[:9] not in everything


def test_without_its_passwords_compose_refuses_to_start_and_names_the_one_missing(tmp_path):
    """No default password: compose stops before anything is built or created, naming the
    variable and .env, whether .env is missing or copied from .env.example and not filled."""
    project = Project(copy_for_containers(tmp_path / "repo"), production=True, env_file=False)
    try:
        # Act
        bare = project("up", "-d", "--build", check=False)
        subprocess.run(["cp", ".env.example", ".env"], cwd=project.repo, check=True)
        copied = project("up", "-d", "--build", check=False)
        write_env_file(project.repo)
        filled = project("config", "--quiet", check=False)
        created = project("ps", "-a", "-q").stdout.split()
    finally:
        project.down()

    # Assert
    for refused in (bare, copied):
        assert refused.returncode != 0
        assert re.search(r"\b(POSTGRES_PASSWORD|APP_OWNER_PASSWORD|APP_PASSWORD)\b.*"
                         r"set \1 in \.env \(copy \.env\.example\)", refused.stderr
                         ), refused.stderr
    assert filled.returncode == 0, filled.stderr
    assert created == []


def test_down_then_up_keeps_the_data(project):
    # Arrange
    project("up", "-d", "--build")
    project.wait_ready()
    status, widget = request(project.port, "POST", "/api/widgets", {"name": "kept"})
    assert status == 201

    # Act
    project("down")
    project("up", "-d")
    project.wait_ready()

    # Assert
    assert request(project.port, "GET", f"/api/widgets/{widget['id']}") == (200, widget)
    assert "nothing to apply" in project.logs()


def test_a_failing_revision_stops_the_container_and_leaves_the_database(project):
    # Arrange: the shipped history plus a revision that fails after its first statement.
    parent = head_revision(project.repo)
    write_revision(project.repo, "ffff00000003", parent, "add a column then fail",
                   upgrade='op.add_column("widgets", sa.Column("doomed", sa.Text()))\n'
                           'op.execute("SELECT * FROM no_such_table")',
                   downgrade='op.drop_column("widgets", "doomed")')

    # Act
    project("up", "-d", "--build")
    code = project.wait_exit()

    # Assert
    logs = project.logs()
    assert code != 0
    assert "ffff00000003 (add a column then fail) failed" in logs and "no_such_table" in logs
    assert "Traceback" not in logs
    assert project.sql("SELECT version_num FROM alembic_version") == parent
    assert not has_column(project, "doomed")


def test_the_backend_waits_for_a_database_that_starts_late(project):
    # Arrange: the database and its roles made, the server stopped; then the backend alone.
    project("build")
    project("run", "--rm", "db-roles")
    project("stop", "db")
    project("up", "-d", "--no-deps", "backend")
    time.sleep(4)
    assert project.container()["State"]["Status"] == "running"

    # Act
    project("start", "db")
    ready = project.wait_ready()

    # Assert
    assert ready["pending"] == []
    assert "waiting for database" in project.logs()


def test_backup_then_restore_through_the_backend_gives_the_rows_back(project):
    # Arrange
    project("up", "-d", "--build")
    project.wait_ready()
    status, widget = request(project.port, "POST", "/api/widgets", {"name": "saved"})
    assert status == 201
    dump = project.exec("backend", "scripts/backup.sh").stdout.strip().splitlines()[-1]
    project.sql("DELETE FROM widgets")
    assert request(project.port, "GET", f"/api/widgets/{widget['id']}")[0] == 404

    # Act: the guide stops the service, restores, starts it again.
    project("stop", "backend")
    project("run", "--rm", "--no-deps", "--entrypoint", "scripts/restore.sh", "backend",
            dump, "--yes")
    project("start", "backend")
    project.wait_ready()

    # Assert
    assert request(project.port, "GET", f"/api/widgets/{widget['id']}") == (200, widget)


def test_the_guides_backup_first_with_pg_dump_in_the_db_container(project):
    # Arrange
    project("up", "-d", "--build")
    project.wait_ready()

    # Act: the guide's `pg_dump ... > backup.sql`, through compose, as the database's owner.
    dump = project.exec("db", "pg_dump", "-U", "app_owner", "-d", "app").stdout

    # Assert
    assert "CREATE TABLE public.widgets" in dump and "alembic_version" in dump


def test_three_replicas_started_at_once_one_migrates_all_serve(project):
    # Arrange: the image, the database and its roles, no backend yet.
    project("build")
    project("run", "--rm", "db-roles")
    network = next(iter(project.container("db")["NetworkSettings"]["Networks"]))
    backend_image = _built_image(project)

    # Act: three at once, with the two roles' URLs as docker-compose.yml gives them.
    names = [f"{project.name}-replica{i}" for i in range(3)]
    try:
        for name in names:
            docker("run", "-d", "--name", name, "--network", network, "-e",
                   f"DATABASE_URL={RUNTIME_URL}", "-e", f"MIGRATION_DATABASE_URL={OWNER_URL}",
                   "-e", "WEB_CONCURRENCY=1", backend_image)
        logs = {name: wait_replica_ready(name) for name in names}
    finally:
        for name in names:
            docker("rm", "-f", name, check=False)

    # Assert
    migrators = [name for name, log in logs.items() if "revision(s) from base" in log]
    assert len(migrators) == 1, logs
    assert all("database now at" in log or "nothing to apply" in log for log in logs.values())


def _built_image(project) -> str:
    """The backend image compose built for this project (its name differs between tools)."""
    images = docker("images", "--format", "{{.Repository}}").stdout.split()
    return next(name for name in images if name.startswith(project.name) and "backend" in name)


def test_expand_background_backfill_then_post_deploy_through_compose(project):
    """docs/safe-migrations.md's recipe in production's compose: the start applies the
    expand only and serves; `flask migrations post-deploy` refuses, naming the backfill,
    until `flask migrations backfill run` in the serving container has finished it."""
    # Arrange: the release before, serving rows the backfill will have to fill.
    project("up", "-d", "--build")
    project.wait_ready()
    project.sql("INSERT INTO widgets (name, size) SELECT 'w' || g, g "
                "FROM generate_series(1, 3000) AS g")
    write_backfill_release(project.repo, head_revision(project.repo))

    # Act 1: the new release, built and started as the operations page says.
    project("up", "-d", "--build")
    ready = project.wait_ready()
    status, fresh = request(project.port, "POST", "/api/widgets", {"name": "after the expand"})
    refused = project.exec("backend", "flask", "migrations", "post-deploy", check=False,
                           as_printed=True)

    # Assert 1: serving at the expand with the contract pending; new rows get their value
    # from the default; the contract refused by name, nothing changed.
    assert ready["current"] == [EXPAND] and ready["pending"] == []
    assert ready["post_deploy_pending"] == [CONTRACT]
    assert f"1 post-deploy revision(s) wait: {CONTRACT}" in project.logs()
    assert status == 201
    assert project.sql(f"SELECT code FROM widgets WHERE id = {fresh['id']}") == NEW_ROW_CODE
    assert refused.returncode == 1, refused.stdout + refused.stderr
    lines = [line for line in refused.stderr.splitlines() if "post-deploy refused" in line]
    assert len(lines) == 1 and BACKFILL in lines[0], refused.stderr
    assert project.sql("SELECT version_num FROM alembic_version") == EXPAND
    assert project.sql("SELECT count(*) FROM widgets WHERE code IS NULL") == "3000"

    # Act 2: the backfill in the serving container, then the contract.
    dumps_before = project.exec("backend", "ls", "/backups").stdout.split()
    run = project.exec("backend", "flask", "migrations", "backfill", "run", as_printed=True)
    status_table = project.exec("backend", "flask", "migrations", "backfill", "status",
                                as_printed=True).stdout
    done = json.loads(project.exec("backend", "flask", "migrations", "backfill", "status",
                                   "--json").stdout)
    again = project.exec("backend", "flask", "migrations", "backfill", "run")
    applied = project.exec("backend", "flask", "migrations", "post-deploy", as_printed=True)

    # Assert 2: every old row filled once, the column NOT NULL, a dump taken first, and
    # the service ready with nothing waiting.
    assert f"background migration {BACKFILL} done: 3000 row(s) changed" in run.stderr
    assert re.search(rf"^{BACKFILL}\s+{EXPAND}\s+widgets\s+done\s+3000/3000", status_table,
                     re.M), status_table
    assert [(m["name"], m["state"], m["rows_done"]) for m in done] == [(BACKFILL, "done", 3000)]
    assert "done:" not in again.stderr  # a second run finds nothing to do
    assert f"applied 1 post-deploy revision(s): {CONTRACT}" in applied.stdout
    assert project.sql("SELECT version_num FROM alembic_version") == CONTRACT
    assert project.sql("SELECT is_nullable FROM information_schema.columns "
                       "WHERE table_name = 'widgets' AND column_name = 'code'") == "NO"
    assert project.sql("SELECT count(*) FILTER (WHERE code = 'W-' || id), "
                       f"count(*) FILTER (WHERE code = '{NEW_ROW_CODE}') FROM widgets"
                       ) == "3000|1"
    assert len(project.exec("backend", "ls", "/backups").stdout.split()) == \
        len(dumps_before) + 1
    ready = project.wait_ready()
    assert ready["current"] == [CONTRACT] and ready["post_deploy_pending"] == []


def test_the_guides_loop_with_the_source_mounted(dev_project, tmp_path):
    # Arrange: the checkout belongs to a developer (uid 1234), not to root or to 10001.
    project, repo = dev_project, dev_project.repo
    for path in [repo, *repo.rglob("*")]:
        os.chown(path, 1234, 1234)
    project("up", "-d", "--build")
    project.wait_ready()

    # Act 1: a model change, its migration created through the container, then a restart.
    add_model_column(repo, "loop_note")
    created = project.exec("backend", "scripts/create_migration.sh", "add widget loop note")
    path = repo / re.search(r"^(migrations/versions/\S+\.py)$", created.stdout, re.M).group(1)
    project("restart", "backend")
    project.wait_ready()

    # Assert 1
    assert path.exists() and path.stat().st_uid == 1234
    assert has_column(project, "loop_note")
    rev = re.search(r"Revision ID: (\w+)", path.read_text()).group(1)
    assert rev in project.exec("backend", "flask", "db", "current").stdout
    assert "add widget loop note" in project.exec("backend", "flask", "db", "history").stdout

    # Act 2: roll back, then a restart applies it again.
    project.exec("backend", "flask", "db", "downgrade")
    gone = not has_column(project, "loop_note")
    project("restart", "backend")
    project.wait_ready()

    # Assert 2
    assert gone and has_column(project, "loop_note")

    # Act 3: the next change created on the host (its own embedded database), applied by
    # a restart of the container.
    add_model_column(repo, "loop_rank")
    host = subprocess.run(
        [str(repo / "scripts/create_migration.sh"), "add widget loop rank"], cwd=repo,
        env=child_env(), capture_output=True, text=True, timeout=300)
    project("restart", "backend")
    project.wait_ready()

    # Assert 3
    assert host.returncode == 0, host.stderr
    assert has_column(project, "loop_rank")
