"""Backups before migrations: pg_dump into private files, retention, restore, the scripts."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from backend.config import Config, ConfigError
from backend.migrate import LifecycleError, pgtools
from backend.migrate.backup import (
    backup_before_migrate,
    restore_backup,
    take_backup,
)
from backend.migrate.pgtools import find_pg_tool, server_version_num
from testkit.support import copy_repository, revisions
from tests.conftest import ROOT, child_env, execute_sql, run_flask

HEAD = revisions()[-1]
APP_TABLES = ("users", "projects", "tasks")
SEED = """
INSERT INTO users (email, name)
    SELECT 'user' || g || '@example.com', 'User ' || g FROM generate_series(1, 20) g;
INSERT INTO projects (owner_id, name, slug)
    SELECT id, 'Project of ' || name, 'project-' || id FROM users;
INSERT INTO tasks (project_id, title, status, due_date)
    SELECT p.id, 'Task ' || g || ' of ' || p.id, (ARRAY['todo', 'doing', 'done'])[1 + g % 3],
           DATE '2026-12-01' + g
    FROM projects p, generate_series(1, 5) g;
"""
SCRAMBLE = """
DELETE FROM tasks WHERE status = 'done';
UPDATE users SET name = 'changed' WHERE id % 2 = 0;
INSERT INTO users (email, name) VALUES ('late@example.com', 'Late');
"""


def snapshot(url) -> dict[str, object]:
    """Row count and a checksum of every row per table, the revision, and the sequences."""
    state: dict[str, object] = {}
    for table in APP_TABLES:
        state[table] = execute_sql(
            url, f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM {table} t"
        )[0]
    state["alembic_version"] = execute_sql(url, "SELECT version_num FROM alembic_version")
    state["sequences"] = execute_sql(
        url, "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1")
    return state


def seeded(url):
    execute_sql(url, SEED)
    state = snapshot(url)
    assert state["tasks"][0] == 100
    return state


def tables(url) -> list[str]:
    return [row[0] for row in execute_sql(
        url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


def write_tool(path: Path, body: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def fresh_db(pg_server):
    """An empty database, dropped afterwards."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url.database)


@pytest.fixture
def real_pg_dump(pg_server) -> str:
    return find_pg_tool("pg_dump", server_version_num(pg_server.url))


@pytest.fixture(autouse=True)
def no_tool_overrides(monkeypatch):
    """The developer's own PG_DUMP / PG_BIN_DIR must not steer these tests."""
    for name in ("PG_DUMP", "PG_RESTORE", "PSQL", "PG_BIN_DIR",
                 "BACKUP_BEFORE_MIGRATE", "BACKUP_DIR", "BACKUP_KEEP"):
        monkeypatch.delenv(name, raising=False)


# --- take_backup ----------------------------------------------------------------------


def test_take_backup_writes_one_private_file_named_by_time_and_revisions(head_db, tmp_path):
    # Arrange
    seeded(head_db)
    target = tmp_path / "backups"
    before = datetime.now(UTC).replace(microsecond=0)

    # Act
    path = take_backup(head_db, target, "", HEAD)

    # Assert
    assert sorted(p.name for p in target.iterdir()) == [path.name]
    match = re.fullmatch(rf"(\d{{8}}T\d{{6}}Z)_base_to_{HEAD}\.dump", path.name)
    assert match, path.name
    taken = datetime.strptime(match[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= taken <= datetime.now(UTC)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes()[:5] == b"PGDMP"  # the custom format pg_restore reads


def test_take_backup_logs_one_line_with_path_size_and_seconds(head_db, tmp_path, caplog):
    caplog.set_level("INFO", logger="backend.lifecycle")

    path = take_backup(head_db, tmp_path, "3f9a1c2b7d10", HEAD)

    lines = [r.getMessage() for r in caplog.records if "backed up" in r.getMessage()]
    assert len(lines) == 1
    assert str(path) in lines[0]
    assert f"{path.stat().st_size} bytes" in lines[0]
    assert re.search(r"in \d+\.\d{3}s", lines[0])


def test_restore_into_a_fresh_database_gives_the_same_rows(head_db, fresh_db, tmp_path):
    # Arrange
    original = seeded(head_db)
    dump = take_backup(head_db, tmp_path, HEAD, HEAD)

    # Act
    restore_backup(fresh_db, dump)

    # Assert
    assert snapshot(fresh_db) == original
    # The identity sequences came along: a new row gets a fresh id.
    execute_sql(fresh_db, "INSERT INTO users (email, name) VALUES ('new@example.com', 'New')")


def test_restore_over_the_same_database_undoes_later_changes(head_db, tmp_path):
    original = seeded(head_db)
    dump = take_backup(head_db, tmp_path, HEAD, HEAD)
    execute_sql(head_db, SCRAMBLE)
    assert snapshot(head_db) != original

    restore_backup(head_db, dump)

    assert snapshot(head_db) == original


def test_restore_names_tables_the_dump_does_not_have(head_db, tmp_path, caplog):
    # A migration applied after the dump created a table: --clean cannot know about it.
    dump = take_backup(head_db, tmp_path, HEAD, HEAD)
    execute_sql(head_db, "CREATE TABLE added_later (id int)")
    caplog.set_level("INFO", logger="backend.lifecycle")

    restore_backup(head_db, dump)

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "public.added_later" in warnings[0]
    assert "added_later" in tables(head_db)


def test_a_failed_restore_changes_nothing(head_db, tmp_path):
    original = seeded(head_db)
    not_a_dump = tmp_path / "20261125T093000Z_a_to_b.dump"
    not_a_dump.write_text("not a dump\n")

    with pytest.raises(LifecycleError) as info:
        restore_backup(head_db, not_a_dump)

    assert "\n" not in str(info.value)
    assert snapshot(head_db) == original


# --- retention -------------------------------------------------------------------------


def test_retention_keeps_the_newest_dumps_and_leaves_other_files_alone(head_db, tmp_path):
    # Arrange: four older dumps of ours, and files that only look related.
    old = ["20240101T000000Z_base_to_3f9a1c2b7d10.dump",
           "20250101T000000Z_3f9a1c2b7d10_to_8b2e4d6f1a93.dump",
           "20250601T120000Z_8b2e4d6f1a93_to_c47d0e5a9f26.dump",
           "20250601T120000Z_8b2e4d6f1a93_to_c47d0e5a9f26-1.dump"]
    others = ["keep-me.dump", "notes.txt", "20240101T000000Z_base_to_x.dump.bak",
              ".20240101.dump.partial"]
    for name in old + others:
        (tmp_path / name).write_text(name)

    # Act
    new = take_backup(head_db, tmp_path, HEAD, HEAD, keep=3)

    # Assert
    remaining = sorted(p.name for p in tmp_path.iterdir())
    assert remaining == sorted([*others, old[2], old[3], new.name])


def test_two_backups_in_the_same_second_both_survive(head_db, tmp_path):
    first = take_backup(head_db, tmp_path, HEAD, HEAD)
    second = take_backup(head_db, tmp_path, HEAD, HEAD)

    assert first != second
    assert first.exists() and second.exists()


def test_keep_below_one_is_refused(head_db, tmp_path):
    with pytest.raises(LifecycleError, match="keep"):
        take_backup(head_db, tmp_path, HEAD, HEAD, keep=0)
    assert list(tmp_path.iterdir()) == []


# --- failures leave nothing behind, and never show the password -----------------------


def test_a_missing_pg_dump_raises_and_leaves_no_file(head_db, tmp_path, monkeypatch):
    monkeypatch.setenv("PG_DUMP", "/nonexistent/pg_dump")

    with pytest.raises(LifecycleError, match="PG_DUMP=/nonexistent/pg_dump"):
        take_backup(head_db, tmp_path / "backups", HEAD, HEAD)

    assert list(tmp_path.rglob("*")) in ([], [tmp_path / "backups"])


def test_a_failing_pg_dump_raises_one_masked_line_and_leaves_no_file(
        head_db, tmp_path, monkeypatch, real_pg_dump):
    # Arrange: a pg_dump that answers --version, then writes half a dump and fails,
    # quoting the password the way a careless tool might.
    secret = head_db.password or "not-a-real-secret-42"
    url = head_db.set(password=secret)
    tool = write_tool(tmp_path / "pg_dump", f"""
[ "${{1:-}}" = --version ] && exec {real_pg_dump} --version
printf 'PGDMP partial'
echo "pg_dump: warning: something first" >&2
echo "pg_dump: error: could not connect to postgresql://app:$PGPASSWORD@db/app as $PGPASSWORD" >&2
echo "second line" >&2
exit 1
""")
    monkeypatch.setenv("PG_DUMP", str(tool))
    target = tmp_path / "backups"

    # Act
    with pytest.raises(LifecycleError) as info:
        take_backup(url, target, HEAD, HEAD)

    # Assert
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("pg_dump of ") and "could not connect" in message
    assert secret not in message
    assert list(target.iterdir()) == []


def test_the_password_reaches_pg_dump_through_the_environment_only(
        head_db, tmp_path, monkeypatch, real_pg_dump):
    # Arrange: a wrapper that records its arguments and PGPASSWORD, then runs the real one.
    secret = head_db.password or "not-a-real-secret-42"
    url = head_db.set(password=secret)
    argv_log, env_log = tmp_path / "argv", tmp_path / "pgpassword"
    tool = write_tool(tmp_path / "pg_dump", f"""
printf '%s\\n' "$@" >> {argv_log}
printf '%s' "${{PGPASSWORD:-}}" > {env_log}
exec {real_pg_dump} "$@"
""")
    monkeypatch.setenv("PG_DUMP", str(tool))

    # Act
    path = take_backup(url, tmp_path / "backups", HEAD, HEAD)

    # Assert
    assert path.stat().st_size > 0
    argv = argv_log.read_text()
    assert "--format=custom" in argv and f"dbname='{url.database}'" in argv
    assert secret not in argv
    assert env_log.read_text() == secret


def test_a_socket_url_keeps_its_host_and_never_its_password():
    url = make_url("postgresql+psycopg2://app:pw%20x@/appdb?host=/var/run/postgresql")

    conninfo, env, password = pgtools.libpq_connection(url)

    assert "host='/var/run/postgresql'" in conninfo
    assert "dbname='appdb'" in conninfo and "user='app'" in conninfo
    assert "pw" not in conninfo
    assert env["PGPASSWORD"] == password == "pw x"


# --- which binary ------------------------------------------------------------------------


def fake_tools(tmp_path: Path, versions: dict[str, str]) -> dict[str, Path]:
    """A bin directory per label holding a pg_dump that reports the given version."""
    dirs = {}
    for label, version in versions.items():
        bin_dir = tmp_path / label / "bin"
        bin_dir.mkdir(parents=True)
        write_tool(bin_dir / "pg_dump", f'echo "pg_dump (PostgreSQL) {version}"\n')
        dirs[label] = bin_dir
    return dirs


@pytest.mark.parametrize(("server", "expected"), [
    (150020, "path15"), (160004, "pgserver16"), (170002, "pgserver18"), (180004, "pgserver18"),
])
def test_the_nearest_new_enough_pg_dump_is_chosen(tmp_path, monkeypatch, server, expected):
    dirs = fake_tools(tmp_path, {"pgserver18": "18.4", "pgserver16": "16.14",
                                 "path15": "15.20 (Debian 15.20-0+deb12u1)"})
    monkeypatch.setattr(pgtools, "_pgserver_bin_dirs",
                        lambda: [dirs["pgserver18"], dirs["pgserver16"]])
    monkeypatch.setenv("PATH", f"{dirs['path15']}{os.pathsep}/usr/bin:/bin")

    assert find_pg_tool("pg_dump", server) == str(dirs[expected] / "pg_dump")
    # Without a server version, the order alone decides.
    assert find_pg_tool("pg_dump") == str(dirs["pgserver18"] / "pg_dump")


def test_a_bundled_pg_dump_that_cannot_run_is_skipped(tmp_path, monkeypatch):
    dirs = fake_tools(tmp_path, {"path15": "15.20"})
    broken = tmp_path / "pgserver18" / "bin"
    broken.mkdir(parents=True)
    write_tool(broken / "pg_dump", 'echo "error while loading shared libraries" >&2; exit 127\n')
    monkeypatch.setattr(pgtools, "_pgserver_bin_dirs", lambda: [broken])
    monkeypatch.setenv("PATH", f"{dirs['path15']}{os.pathsep}/usr/bin:/bin")

    assert find_pg_tool("pg_dump", 150020) == str(dirs["path15"] / "pg_dump")


def test_a_pg_dump_older_than_the_server_is_refused_in_one_line(tmp_path, monkeypatch):
    dirs = fake_tools(tmp_path, {"old": "15.20"})
    monkeypatch.setenv("PG_BIN_DIR", str(dirs["old"]))

    with pytest.raises(LifecycleError) as info:
        find_pg_tool("pg_dump", 180004)

    message = str(info.value)
    assert "\n" not in message
    assert "older than the server (PostgreSQL 18)" in message and "is 15" in message


def test_pg_bin_dir_without_the_tool_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PG_BIN_DIR", str(tmp_path))

    with pytest.raises(LifecycleError, match="has no pg_restore"):
        find_pg_tool("pg_restore")


def test_the_chosen_pg_dump_can_dump_the_test_server(pg_server):
    version = server_version_num(pg_server.url)

    tool = find_pg_tool("pg_dump", version)

    assert pgtools._tool_major(tool) >= pgtools.server_major(version)


# --- settings --------------------------------------------------------------------------


def backup_config(**env: str) -> Config:
    return Config.from_env({"DATABASE_URL": "postgresql://app@localhost/app", **env})


def test_backup_settings_default_to_off_five_dumps_in_backups():
    settings = backup_config()

    assert (settings.backup_before_migrate, settings.backup_dir, settings.backup_keep) == \
        (False, ROOT / "backups", 5)


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_backup_before_migrate_turns_on(value):
    assert backup_config(BACKUP_BEFORE_MIGRATE=value).backup_before_migrate


def test_backup_settings_read_dir_and_keep(tmp_path):
    settings = backup_config(BACKUP_DIR="var/dumps", BACKUP_KEEP="2")
    assert settings.backup_dir == ROOT / "var" / "dumps" and settings.backup_keep == 2
    assert backup_config(BACKUP_DIR=str(tmp_path)).backup_dir == tmp_path


@pytest.mark.parametrize(("name", "value"), [
    ("BACKUP_KEEP", "0"), ("BACKUP_KEEP", "-1"), ("BACKUP_KEEP", "many"),
    ("BACKUP_KEEP", "2.5"), ("BACKUP_BEFORE_MIGRATE", "maybe"),
])
def test_bad_backup_settings_are_refused_clearly(name, value):
    with pytest.raises(ConfigError, match=name):
        backup_config(**{name: value})


def test_backup_before_migrate_does_nothing_when_off(head_db, tmp_path):
    settings = backup_config(BACKUP_DIR=str(tmp_path / "b"))

    assert backup_before_migrate(head_db, [], [HEAD], settings) is None
    assert not (tmp_path / "b").exists()


def test_backup_before_migrate_dumps_when_on(head_db, tmp_path):
    settings = backup_config(BACKUP_BEFORE_MIGRATE="1", BACKUP_DIR=str(tmp_path))

    path = backup_before_migrate(head_db, ["3f9a1c2b7d10"], [HEAD], settings)

    assert path is not None and path.name.endswith(f"_3f9a1c2b7d10_to_{HEAD}.dump")


# --- the scripts -----------------------------------------------------------------------


def run_script(name: str, *args: str, url=None, cwd: Path = ROOT, **extra: str):
    env = child_env(url, **extra)
    if url is None:
        env.pop("DATABASE_URL", None)
    return subprocess.run([str(ROOT / "scripts" / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_scripts_backup_then_restore_round_trip(head_db, tmp_path):
    # Arrange
    original = seeded(head_db)

    # Act: back up, change the data, restore.
    taken = run_script("backup.sh", "--dir", str(tmp_path / "b"), url=head_db)
    assert taken.returncode == 0, taken.stderr
    dump = Path(taken.stdout.strip())
    execute_sql(head_db, SCRAMBLE)
    restored = run_script("restore.sh", str(dump), "--yes", url=head_db)

    # Assert
    assert restored.returncode == 0, restored.stderr
    assert dump.parent == tmp_path / "b" and dump.name.endswith(f"_{HEAD}_to_{HEAD}.dump")
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert "backup: dumping the database" in taken.stderr
    assert "restore: restoring" in restored.stderr
    assert snapshot(head_db) == original


def test_scripts_take_relative_paths_from_where_they_are_run(head_db, tmp_path):
    taken = run_script("backup.sh", "--dir", "rel", url=head_db, cwd=tmp_path)
    assert taken.returncode == 0, taken.stderr
    dump = Path(taken.stdout.strip())
    assert dump.parent == tmp_path / "rel"

    restored = run_script("restore.sh", f"rel/{dump.name}", "--yes", url=head_db, cwd=tmp_path)

    assert restored.returncode == 0, restored.stderr


def test_restore_script_refuses_without_yes(head_db, fresh_db, tmp_path):
    # Arrange: a dump of a seeded database, and a target with a password in its URL.
    seeded(head_db)
    dump = take_backup(head_db, tmp_path, HEAD, HEAD)
    secret = fresh_db.password or "not-a-real-secret-42"
    target = fresh_db.set(password=secret)

    # Act
    proc = run_script("restore.sh", str(dump), url=target)

    # Assert
    assert proc.returncode != 0
    assert "--yes" in proc.stderr and fresh_db.database in proc.stderr
    assert secret not in proc.stderr + proc.stdout
    assert tables(fresh_db) == []


def test_restore_script_refuses_a_missing_file(head_db, tmp_path):
    before = snapshot(head_db)

    proc = run_script("restore.sh", str(tmp_path / "nope.dump"), "--yes", url=head_db)

    assert proc.returncode != 0
    assert "no such file" in proc.stderr and "nope.dump" in proc.stderr
    assert snapshot(head_db) == before


@contextlib.contextmanager
def embedded_in(repo: Path) -> Iterator:
    """The embedded development database of a checkout, as its scripts start it."""
    from backend.config import parse_database_url
    from migration_tools.embedded import embedded_database_url

    with embedded_database_url(repo / ".data" / "postgres") as raw:
        yield parse_database_url(raw)


def test_without_database_url_backup_and_restore_use_the_embedded_database(tmp_path):
    # Arrange: a checkout of its own (its own .data/postgres), with rows in its database.
    repo = copy_repository(tmp_path / "repo")

    def script(name: str, *args: str) -> subprocess.CompletedProcess:
        env = child_env(None)
        return subprocess.run([str(repo / "scripts" / name), *args], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=120)

    with embedded_in(repo) as url:
        run_flask(["db", "upgrade"], url, cwd=repo)
        execute_sql(url, "INSERT INTO users (email, name) VALUES ('kept@example.com', 'K')")
    dump = script("backup.sh").stdout.strip().splitlines()[-1]
    with embedded_in(repo) as url:
        execute_sql(url, "DELETE FROM users")

    # Act: the guide's order: the service is stopped (so is the embedded server), restore.
    proc = script("restore.sh", dump, "--yes")

    # Assert
    assert proc.returncode == 0, proc.stderr
    assert "the embedded development database" in proc.stderr
    with embedded_in(repo) as url:
        assert execute_sql(url, "SELECT email FROM users") == [("kept@example.com",)]


@pytest.mark.parametrize("args", [[], ["--yes"], ["a.dump", "b.dump", "--yes"], ["--force"]])
def test_restore_script_usage_errors(args):
    proc = run_script("restore.sh", *args)

    assert proc.returncode == 2 and "usage: scripts/restore.sh FILE --yes" in proc.stderr


def test_backup_script_reports_a_failure_in_one_line(head_db, tmp_path):
    secret = head_db.password or "not-a-real-secret-42"
    missing = head_db.set(database="no_such_database_here", password=secret)

    proc = run_script("backup.sh", "--dir", str(tmp_path), url=missing)

    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "no_such_database_here" in errors[0]
    assert secret not in proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == []
