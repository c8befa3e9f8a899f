"""scripts/rehearse.sh: pending revisions run on a scratch copy, measured, and cleaned up."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from backend.migrate.backup import take_backup
from migration_tools.rehearse.findings import lost_rows
from migration_tools.rehearse.observer import TableState, strongest
from testkit.support import PrivateServer, copy_repository, revisions, write_revision
from tests.conftest import ROOT, child_env, execute_sql, run_flask, url_text

EARLY = "c47d0e5a9f26"  # the shipped revisions after it are pending on the early source
HEAD = revisions()[-1]
SHIPPED_PENDING = revisions()[revisions().index(EARLY) + 1:]
# Users 1-500 own three projects each; users 501-1000 own none.
SEED = """
INSERT INTO users (email, name)
    SELECT 'user' || g || '@example.com', 'User ' || g FROM generate_series(1, 1000) g;
INSERT INTO projects (owner_id, name{slug_column})
    SELECT 1 + g % 500, 'Project ' || g{slug_value} FROM generate_series(1, 1500) g;
INSERT INTO tasks (project_id, title, status, due_date)
    SELECT 1 + g % 1500, 'Task ' || g, (ARRAY['todo', 'doing', 'done'])[1 + g % 3],
           date '2026-01-01' + g % 365
    FROM generate_series(1, 5000) g;
"""
CHECKSUM = "SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY {key}), '')) FROM {table} t"
TABLES = {"users": "id", "projects": "id", "tasks": "id", "alembic_version": "version_num",
          "migration_checksums": "revision"}


def seed(url, with_slug: bool) -> None:
    execute_sql(url, SEED.format(slug_column=", slug" if with_slug else "",
                                 slug_value=", 'project-' || g" if with_slug else ""))


@pytest.fixture(scope="module")
def early_source(pg_server):
    """A database at an earlier revision, with a few thousand rows: five revisions pending."""
    url = pg_server.create_database()
    run_flask(["db", "upgrade", EARLY], url)
    seed(url, with_slug=False)
    yield url
    pg_server.drop_database(url.database)


@pytest.fixture(scope="module")
def head_source(pg_server, head_template):
    """A database at the shipped head, with rows: only a test's own revisions are pending."""
    url = pg_server.create_database(template=head_template)
    seed(url, with_slug=True)
    yield url
    pg_server.drop_database(url.database)


@pytest.fixture
def prefix() -> str:
    """A scratch-name prefix of this test's own, so leftovers are this test's alone."""
    return f"rt_{uuid.uuid4().hex[:8]}"


def fingerprint(url) -> dict[str, str]:
    """Per-table checksums of the rows, Alembic's revision and our checksum table."""
    return {table: execute_sql(url, CHECKSUM.format(key=key, table=table))[0][0]
            for table, key in TABLES.items()}


def scratch_databases(pg_server, prefix: str) -> list[str]:
    rows = execute_sql(pg_server.url, "SELECT datname FROM pg_database WHERE datname LIKE %s",
                       (prefix + "%",))
    return [row[0] for row in rows]


def rehearse(*args: str, repo: Path = ROOT, cwd: Path | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "scripts/rehearse.sh"), *args], cwd=cwd or repo,
                          env=child_env(None), capture_output=True, text=True,
                          timeout=timeout)


def from_url(source, prefix: str, *extra: str, repo: Path = ROOT):
    return rehearse("--from-url", url_text(source), "--prefix", prefix, *extra, repo=repo)


def steps(document: dict, phase: str) -> dict[str, dict]:
    return {step["revision"]: step for step in document["steps"] if step["phase"] == phase}


def table_row(markdown: str, revision: str, section: str = "## Upgrade") -> str:
    """The markdown table line of ``revision`` in one section of the report."""
    part = markdown.split(section, 1)[1].split("\n## ", 1)[0]
    return next(line for line in part.splitlines() if line.startswith(f"| `{revision}`"))


def test_shipped_pending_revisions_pass_and_leave_the_source_alone(early_source, pg_server,
                                                                  prefix, tmp_path):
    before = fingerprint(early_source)
    report, as_json = tmp_path / "report.md", tmp_path / "report.json"

    proc = from_url(early_source, prefix, "--report", str(report), "--json", str(as_json))

    assert proc.returncode == 0, proc.stderr
    assert report.read_text() == proc.stdout
    assert proc.stdout.startswith("# Migration rehearsal: passed")
    for rev in SHIPPED_PENDING:
        times = r"\| \d+\.\d{3} s \| \d+\.\d{3} s \| \d+\.\d{3} s \|"
        assert re.search(times, table_row(proc.stdout, rev)), table_row(proc.stdout, rev)
        assert f"upgrade 1/{len(SHIPPED_PENDING)}" in proc.stderr
    document = json.loads(as_json.read_text())
    assert document["ok"] is True and document["start"] == [EARLY]
    assert document["head"] == [HEAD]
    assert [p["revision"] for p in document["pending"]] == SHIPPED_PENDING
    for phase in ("upgrade", "downgrade", "re-upgrade"):
        assert list(steps(document, phase)) == (SHIPPED_PENDING if phase != "downgrade"
                                                else SHIPPED_PENDING[::-1])
        assert all(s["seconds"] > 0 and s["error"] is None for s in steps(document, phase)
                   .values())
    upgrades = steps(document, "upgrade")
    # Adding a column: a brief exclusive lock, no rewrite. The backfill: row locks only.
    # VALIDATE: reads and writes go on.
    assert upgrades["5e81b3c92d47"]["locks"] == {"projects": "AccessExclusiveLock"}
    assert upgrades["5e81b3c92d47"]["rewrote"] == {}
    assert upgrades["6c2d9e4f8a17"]["locks"] == {"projects": "RowExclusiveLock"}
    assert upgrades["b1d4e7a2c905"]["locks"] == {"tasks": "ShareUpdateExclusiveLock"}
    assert upgrades["b1d4e7a2c905"]["lock_seconds"]["tasks"] >= 0
    assert "tasks: ShareUpdateExclusiveLock for " in table_row(proc.stdout, "b1d4e7a2c905")
    assert document["tables_start"]["tasks"]["rows"] == 5000
    assert upgrades["5e81b3c92d47"]["tables_after"]["projects"]["rows"] == 1500
    assert all(check["ok"] for check in document["checks"].values())
    assert set(document["checks"]) == {"downgrades_restore_schema", "models_match",
                                       "upgrade_repeatable_schema", "upgrade_repeatable_rows"}

    assert fingerprint(early_source) == before
    assert scratch_databases(pg_server, prefix) == []


def test_a_type_change_rewrites_its_table_and_a_nullable_column_does_not(head_source, prefix,
                                                                         pg_server, tmp_path):
    repo = copy_repository(tmp_path / "repo")
    write_revision(repo, "aaaa00000001", HEAD, "add task priority", stamp="20261120_1000",
                   upgrade='op.add_column("tasks", sa.Column("priority", sa.Integer()))',
                   downgrade='op.drop_column("tasks", "priority")')
    write_revision(repo, "aaaa00000002", "aaaa00000001", "widen task priority",
                   stamp="20261120_1100",
                   upgrade='op.alter_column("tasks", "priority", type_=sa.BigInteger())',
                   downgrade='op.alter_column("tasks", "priority", type_=sa.Integer())')
    before = fingerprint(head_source)

    proc = from_url(head_source, prefix, "--json", "-", repo=repo)

    # The models have no `priority`: that mismatch is the one problem reported.
    assert proc.returncode == 1, proc.stderr
    document = json.loads(proc.stdout)
    assert document["checks"]["models_match"]["ok"] is False
    assert "priority" in document["checks"]["models_match"]["detail"]
    assert len(document["problems"]) == 1
    upgrades = steps(document, "upgrade")
    assert upgrades["aaaa00000001"]["rewrote"] == {}
    assert upgrades["aaaa00000001"]["locks"] == {"tasks": "AccessExclusiveLock"}
    assert list(upgrades["aaaa00000002"]["rewrote"]) == ["tasks"]
    assert upgrades["aaaa00000002"]["rewrote"]["tasks"]["bytes_after"] > 0
    assert upgrades["aaaa00000002"]["locks"] == {"tasks": "AccessExclusiveLock"}
    assert list(steps(document, "downgrade")["aaaa00000002"]["rewrote"]) == ["tasks"]
    assert fingerprint(head_source) == before
    assert scratch_databases(pg_server, prefix) == []


def test_rows_deleted_by_a_migration_fail_the_rehearsal_unless_declared(head_source, prefix,
                                                                        pg_server, tmp_path):
    repo = copy_repository(tmp_path / "repo")
    write_revision(repo, "bbbb00000001", HEAD, "drop every tenth task", stamp="20261120_1000",
                   upgrade='op.execute("DELETE FROM tasks WHERE id % 10 = 0")')
    write_revision(repo, "bbbb00000002", "bbbb00000001", "drop users without projects",
                   stamp="20261120_1100",
                   upgrade="# rehearse: expect-row-loss users accounts that never did anything\n"
                           'op.execute("DELETE FROM users u WHERE NOT EXISTS '
                           '(SELECT 1 FROM projects p WHERE p.owner_id = u.id)")')
    before = fingerprint(head_source)

    proc = from_url(head_source, prefix, repo=repo)

    assert proc.returncode == 1, proc.stderr
    problems = proc.stdout.split("## Problems", 1)[1]
    assert "lost rows in tasks: 5000 -> 4500" in problems
    assert "users" not in problems
    assert "tasks 5000 -> 4500 (**LOST**)" in table_row(proc.stdout, "bbbb00000001")
    assert "users 1000 -> 500 (expected: accounts that never did anything)" in \
        table_row(proc.stdout, "bbbb00000002")
    assert "LOST ROWS in tasks" in proc.stderr
    assert fingerprint(head_source) == before
    assert scratch_databases(pg_server, prefix) == []


def test_a_failing_revision_stops_the_rehearsal_and_leaves_nothing_behind(head_source, prefix,
                                                                          pg_server, tmp_path):
    repo = copy_repository(tmp_path / "repo")
    write_revision(repo, "cccc00000001", HEAD, "add task notes", stamp="20261120_1000",
                   upgrade='op.add_column("tasks", sa.Column("notes", sa.Text()))',
                   downgrade='op.drop_column("tasks", "notes")')
    write_revision(repo, "cccc00000002", "cccc00000001", "touch a missing table",
                   stamp="20261120_1100", upgrade='op.execute("UPDATE no_such_table SET x = 1")')
    before = fingerprint(head_source)

    proc = from_url(head_source, prefix, repo=repo)

    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("# Migration rehearsal: FAILED")
    assert re.search(r"\| \d+\.\d{3} s \| not run \| not run \|",
                     table_row(proc.stdout, "cccc00000001"))
    assert "**failed** after" in table_row(proc.stdout, "cccc00000002")
    assert re.search(r"upgrade of cccc00000002 \(touch a missing table\) failed: .*"
                     r"no_such_table", proc.stdout)
    assert "the schema at head matches the models: not run" in proc.stdout
    assert fingerprint(head_source) == before
    assert scratch_databases(pg_server, prefix) == []


def test_a_downgrade_that_leaves_a_column_behind_is_caught(head_source, prefix, pg_server,
                                                         tmp_path):
    repo = copy_repository(tmp_path / "repo")
    write_revision(repo, "eeee00000001", HEAD, "add project colour", stamp="20261120_1000",
                   upgrade='op.add_column("projects", sa.Column("colour", sa.Text()))')

    proc = from_url(head_source, prefix, "--json", "-", repo=repo)

    assert proc.returncode == 1, proc.stderr
    document = json.loads(proc.stdout)
    restored = document["checks"]["downgrades_restore_schema"]
    assert restored["ok"] is False
    assert "only in the schema after the downgrades: column public.projects.colour text" in \
        restored["detail"]
    # The column is still there, so applying the revision again fails.
    assert 'column "colour" of relation "projects" already exists' in \
        steps(document, "re-upgrade")["eeee00000001"]["error"]
    assert scratch_databases(pg_server, prefix) == []


@pytest.mark.parametrize("upgrade, leftover", [
    ('op.execute("CREATE SEQUENCE invoice_numbers")', "sequence public.invoice_numbers bigint"),
    ('op.execute("CREATE VIEW open_tasks AS SELECT id FROM tasks")', "view public.open_tasks"),
], ids=["sequence", "view"])
def test_a_downgrade_that_leaves_a_sequence_or_a_view_behind_is_caught(
        head_source, prefix, tmp_path, upgrade, leftover):
    # Arrange: a revision whose downgrade forgets what its upgrade made.
    repo = copy_repository(tmp_path / "repo")
    write_revision(repo, "eeee00000002", HEAD, "add a leftover", stamp="20261120_1000",
                   upgrade=upgrade)

    # Act
    proc = from_url(head_source, prefix, "--json", "-", repo=repo)

    # Assert
    assert proc.returncode == 1, proc.stderr
    restored = json.loads(proc.stdout)["checks"]["downgrades_restore_schema"]
    assert restored["ok"] is False
    assert f"only in the schema after the downgrades: {leftover}" in restored["detail"]


def test_from_dump_rehearses_a_backup_file(early_source, pg_server, prefix, tmp_path):
    dump = take_backup(early_source, tmp_path / "backups", EARLY, EARLY)

    # Relative paths are taken from where the script was started.
    proc = rehearse("--from-dump", str(dump.relative_to(tmp_path)), "--target-url",
                    url_text(pg_server.url), "--prefix", prefix, "--report", "report.md",
                    cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report.md").read_text() == proc.stdout
    assert f"- source: {dump}, at {EARLY}" in proc.stdout
    for rev in SHIPPED_PENDING:
        assert re.search(r"\| \d+\.\d{3} s \| \d+\.\d{3} s \| \d+\.\d{3} s \|",
                         table_row(proc.stdout, rev))
    assert scratch_databases(pg_server, prefix) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_revision_drops_the_scratch_database(head_source, pg_server, prefix,
                                                         tmp_path, signum):
    repo = copy_repository(tmp_path / "repo")
    write_revision(repo, "dddd00000001", HEAD, "take a long time", stamp="20261120_1000",
                   upgrade='op.execute("SELECT pg_sleep(60)")')
    proc = subprocess.Popen([str(repo / "scripts/rehearse.sh"), "--from-url",
                             url_text(head_source), "--prefix", prefix], cwd=repo,
                            env=child_env(None), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not execute_sql(pg_server.url, "SELECT 1 FROM pg_stat_activity WHERE "
                              "datname LIKE %s AND query LIKE '%%pg_sleep(60)%%'",
                              (prefix + "%",)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 128 + signum, err
    assert time.monotonic() - sent < 15  # the sleeping statement was cancelled, not waited for
    assert f"stopped by {signum.name}" in err
    assert out == ""
    assert scratch_databases(pg_server, prefix) == []


def test_a_password_is_never_printed_and_bad_usage_is_refused():
    proc = rehearse("--from-url", "postgresql://app:s3cret-pw@127.0.0.1:1/app", timeout=60)

    assert proc.returncode == 2
    assert "could not rehearse: cannot connect to postgresql://app:***@127.0.0.1:1/app" \
        in proc.stderr
    assert "s3cret-pw" not in proc.stdout + proc.stderr

    proc = rehearse("--from-dump", "/nonexistent.dump", timeout=60)
    assert proc.returncode == 2
    assert "--from-dump needs --target-url" in proc.stderr


def test_a_downgrade_is_blamed_only_for_rows_it_removed_itself():
    def tables(**rows: int) -> dict[str, TableState]:
        return {name: TableState(oid, 0, 0, count)
                for oid, (name, count) in enumerate(rows.items())}

    before_upgrade = tables(tasks=5000, users=1000)
    # A later revision deleted 500 tasks; this downgrade drops the table its upgrade made
    # and gives back the users its upgrade had added, then deletes ten more users.
    before = tables(tasks=4500, users=1200, tags=300)
    after = tables(tasks=4500, users=990)

    lost = lost_rows(before, after, {}, reference=before_upgrade)

    assert lost == {"users": {"before": 1200, "after": 990, "expected": None}}
    assert lost_rows(before, after, {"tags": "moved back"})["tags"]["expected"] == "moved back"


def test_lock_modes_compare_in_postgresql_order():
    assert strongest({"RowExclusiveLock", "ShareUpdateExclusiveLock"}) == \
        "ShareUpdateExclusiveLock"
    assert strongest({"ShareLock", "ShareRowExclusiveLock", "AccessShareLock"}) == \
        "ShareRowExclusiveLock"
    assert strongest({"ExclusiveLock", "AccessExclusiveLock"}) == "AccessExclusiveLock"


@pytest.mark.parametrize("given", ["--from-url", "--from-dump"])
def test_a_target_older_than_the_source_is_refused_before_copying(tmp_path, given):
    # Arrange: a source on PostgreSQL 18 (or a dump of it) and a target on 16.
    source = PrivateServer(tmp_path / "pg18", major=18)
    target = PrivateServer(tmp_path / "pg16", major=16)
    try:
        source_arg = url_text(source.url)
        if given == "--from-dump":
            source_arg = str(take_backup(source.url, tmp_path / "dumps", None, None))
        # Act
        proc = rehearse(given, source_arg, "--target-url", url_text(target.url),
                        "--prefix", "rt_old")
        created = execute_sql(target.url, "SELECT count(*) FROM pg_database "
                                          "WHERE datname LIKE 'rt_old%'")
    finally:
        source.close()
        target.close()

    # Assert
    assert proc.returncode == 2
    assert "runs PostgreSQL 16, older than the source's 18" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert created == [(0,)]
