"""Compose projects on a real Docker engine, for the container suite and the benchmarks.

The container suite: what a user types, on a real Docker engine.

Run by ``make test-containers`` (not by ``make test``, which needs no Docker). Each test works
on a copy of the repository under its own compose project name, publishes the backend on a
free port, and takes the project down (volumes included) afterwards. Either ``docker
compose`` (the plugin) or ``docker-compose`` (the standalone tool) is used, whichever exists.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from testkit.support import ROOT, fixture_project, free_port, http_get, write_revision

# The passwords every test gives the roles (docker-compose.yml): the runtime role ``app``
# (PASSWORD), the owner ``app_owner`` and the superuser. The suite checks none of them ever
# shows in a log.
PASSWORD = "Pg-S3cret-Word"
OWNER_PASSWORD = "0wner-S3cret-Word"
SUPERUSER_PASSWORD = "Super-S3cret-Word"
ENV_FILE_VALUES = {"POSTGRES_PASSWORD": SUPERUSER_PASSWORD, "APP_OWNER_PASSWORD": OWNER_PASSWORD,
                   "APP_PASSWORD": PASSWORD}
# The two roles' URLs inside a compose project's network, as docker-compose.yml writes them.
RUNTIME_URL = f"postgresql://app:{PASSWORD}@db:5432/app"
OWNER_URL = f"postgresql://app_owner:{OWNER_PASSWORD}@db:5432/app"
# What a role may do, asked from inside a backend container (``python -c ROLE_CHECK VARIABLE
# STATEMENT...``) with the URL in the environment variable VARIABLE: a JSON object with the
# role's name ("current_user") and each statement's answer, "allowed" or "refused" (for want
# of a privilege), every one rolled back.
ROLE_CHECK = """
import json, os, sys
import psycopg2
from psycopg2 import errors
conn = psycopg2.connect(os.environ[sys.argv[1]])
answers = {}
with conn.cursor() as cur:
    cur.execute("SELECT current_user")
    answers["current_user"] = cur.fetchone()[0]
for statement in sys.argv[2:]:
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
        answers[statement] = "allowed"
    except errors.InsufficientPrivilege:
        answers[statement] = "refused"
    conn.rollback()
print(json.dumps(answers))
"""
# What the runtime role must be refused, and what it must be allowed, on the fixture's tables.
SCHEMA_AND_RECORDS = ("CREATE TABLE intruder (id int)", "DELETE FROM alembic_version")
ROWS = ("INSERT INTO widgets (name, size) VALUES ('w', 1)", "DELETE FROM widgets")
# The sessions other than the asking one connected to the current database, by role.
SESSION_ROLES = ("SELECT coalesce(string_agg(DISTINCT usename, ',' ORDER BY usename), '') "
                 "FROM pg_stat_activity WHERE datname = current_database() "
                 "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
CONTAINER_FILES = ("Dockerfile", "docker-compose.yml", "docker-compose.override.yml",
                   ".dockerignore", ".env.example", "deploy/compose/db-roles.sh",
                   "requirements.lock", "requirements-dev.lock")


@functools.cache
def compose_command() -> list[str]:
    """``docker compose`` when the plugin answers, else ``docker-compose``."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError("neither `docker compose` nor `docker-compose` is installed: "
                       "run ../shared/containers/setup.sh or install Docker")


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


class Project:
    """One compose project on a copy of the repository."""

    def __init__(self, repo: Path, production: bool, env_file: bool = True) -> None:
        self.repo = repo
        self.name = f"t{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        # Production is the image as built: docker-compose.yml alone, as docs/operations.md says.
        self.files = ["-f", "docker-compose.yml"] if production else []
        # The passwords come from the .env a user writes (the README's step), not from here.
        self.env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME": str(Path.home()), "BACKEND_PORT": str(self.port),
                    "COMPOSE_PROJECT_NAME": self.name}
        if env_file:
            write_env_file(repo)

    def __call__(self, *args: str, check: bool = True, timeout: float = 900,
                 as_printed: bool = False) -> subprocess.CompletedProcess:
        """A compose command on this project. ``as_printed`` leaves out ``-f``, as the docs
        print the commands that act on a running stack (``docker compose exec backend
        ...``): compose then reads the override too and finds the containers by project."""
        cmd = [*compose_command(), *([] if as_printed else self.files), *args]
        proc = subprocess.run(cmd, cwd=self.repo, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def exec(self, service: str, *command: str, check: bool = True, as_printed: bool = False
             ) -> subprocess.CompletedProcess:
        return self("exec", "-T", service, *command, check=check, as_printed=as_printed)

    def sql(self, statement: str) -> str:
        """One statement through psql in the db container, as the superuser; its rows,
        unaligned."""
        return self.exec("db", "psql", "-U", "postgres", "-d", "app", "-Atc", statement
                         ).stdout.strip()

    def logs(self, service: str = "backend") -> str:
        proc = self("logs", "--no-color", service)
        return proc.stdout + proc.stderr

    def container(self, service: str = "backend") -> dict:
        ids = self("ps", "-q", "-a", service).stdout.split()
        return json.loads(docker("inspect", ids[0]).stdout)[0]

    def wait_ready(self, timeout: float = 180) -> dict:
        """Poll the backend's /readyz until 200; fail early when the container has exited."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                status, body = http_get(self.port, "/readyz")
                if status == 200:
                    return json.loads(body)
                last = f"{status} {body}"
            except OSError as exc:
                last = str(exc)
            state = self.container()["State"]
            if state["Status"] == "exited":
                raise AssertionError(f"backend exited {state['ExitCode']}:\n{self.logs()}")
            time.sleep(0.5)
        raise AssertionError(f"/readyz not 200 within {timeout}s ({last}):\n{self.logs()}")

    def wait_exit(self, timeout: float = 180) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.container()["State"]
            if state["Status"] == "exited":
                return state["ExitCode"]
            time.sleep(0.5)
        raise AssertionError(f"backend still running after {timeout}s:\n{self.logs()}")

    def down(self) -> None:
        self("down", "-v", "--remove-orphans", "--timeout", "5", check=False)


def copy_for_containers(dest: Path) -> Path:
    """A copy of the project serving the fixture application, with the files an image and
    compose need: the containers prove the lifecycle whatever application is in the tree."""
    repo = fixture_project(dest)
    for name in CONTAINER_FILES:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    return repo


def write_env_file(repo: Path, values: dict[str, str] = ENV_FILE_VALUES) -> Path:
    """The README's step: .env.example copied to .env, each empty ``NAME=`` line given its
    value. A name .env.example does not list fails here: the user would not know to set it."""
    lines = (repo / ".env.example").read_text().splitlines()
    empty = [match[1] for line in lines if (match := re.fullmatch(r"([A-Z_]+)=", line))]
    assert sorted(empty) == sorted(values), f".env.example leaves {empty} to fill"
    path = repo / ".env"
    path.write_text("".join(f"{line}{values[line[:-1]]}\n" if line[:-1] in empty else
                            f"{line}\n" for line in lines))
    return path


# Expand -> background backfill -> contract on the fixture's widgets, as
# docs/safe-migrations.md tells it on the example's tasks.updated_at: the expand adds
# widgets.code (nullable, a default for new rows in its own statement) and registers the
# backfill of the rows that exist; the post-deploy contract finishes it and sets NOT NULL.
EXPAND, CONTRACT = "ac0000000001", "ac0000000002"
BACKFILL = "widgets_code"
NEW_ROW_CODE = "new"
_BACKGROUND = ("from backend.migrate.background import finish_backfill, register_backfill, "
               "unregister_backfill\nfrom backend.migrate.large_tables import set_not_null\n")


def write_backfill_release(repo: Path, parent: str, batch_pause: float = 0.0) -> None:
    """The expand revision on ``parent`` and its post-deploy contract, written into
    ``repo``'s migrations/versions. ``batch_pause`` (seconds) makes every batch of the
    backfill last at least that long, so that a test can stop a run half-way."""
    pause = f" AND (SELECT pg_sleep({batch_pause})) IS NOT NULL" if batch_pause else ""
    statement = ("UPDATE widgets SET code = 'W-' || id "
                 f"WHERE id > :start AND id <= :stop AND code IS NULL{pause}")
    write_revision(
        repo, EXPAND, parent, "add widget code", stamp="20261201_1000", imports=_BACKGROUND,
        upgrade='op.add_column("widgets", sa.Column("code", sa.String(40), nullable=True))\n'
                'op.alter_column("widgets", "code", '
                f'server_default=sa.text("\'{NEW_ROW_CODE}\'"))\n'
                f'register_backfill("{BACKFILL}", "widgets", "{statement}")',
        downgrade=f'unregister_backfill("{BACKFILL}")\nop.drop_column("widgets", "code")')
    write_revision(
        repo, CONTRACT, None, "require widget code", stamp="20261201_1001",
        imports=_BACKGROUND, branch_labels=("post",), depends_on=EXPAND,
        upgrade=f'finish_backfill("{BACKFILL}")\nset_not_null("widgets", "code")',
        downgrade='op.alter_column("widgets", "code", existing_type=sa.String(40), '
                  'nullable=True)')


def wait_replica_ready(name: str, timeout: float = 120) -> str:
    """Poll a container's /readyz from inside it until it answers 200; its logs then. A
    container that exits first fails at once, with its logs, instead of at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = docker("exec", name, "python", "-c",
                       "import urllib.request; urllib.request.urlopen("
                       "'http://127.0.0.1:8000/readyz', timeout=2)", check=False)
        if probe.returncode == 0:
            logs = docker("logs", name)
            return logs.stderr + logs.stdout
        state = docker("inspect", "--format", "{{.State.Running}}", name, check=False)
        if state.stdout.strip() == "false":
            raise AssertionError(f"{name} exited before it was ready:\n"
                                 f"{docker('logs', name, check=False).stderr}")
        time.sleep(0.5)
    raise AssertionError(f"{name} not ready:\n{docker('logs', name).stderr}")
