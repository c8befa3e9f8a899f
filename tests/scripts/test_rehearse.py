"""scripts/rehearse.sh: pending revisions run on a scratch copy, measured, and cleaned up.

The rehearsals run on the fixture application with a history of their own (a second table,
``parts``, and the revisions after it), so they prove the same whatever application the
checkout serves, and no revision id is known before a test builds it. The deploy's two
phases are rehearsed on the fixture with a post-deploy branch (an expand registering a
backfill, a contract finishing it and setting NOT NULL: testkit.harness.add_post_deploy_branch).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from backend.migrate.backup import take_backup
from migration_tools.rehearse.findings import lost_rows
from migration_tools.rehearse.observer import TableState, strongest
from testkit.harness import POST_BACKFILL, POST_CONTRACT, POST_EXPAND, add_post_deploy_branch
from testkit.support import (
    FIXTURE_REVISIONS,
    PrivateServer,
    fixture_project,
    revisions,
    write_revision,
)
from tests.conftest import child_env, execute_sql, run_flask, url_text

# The rehearsal history, after the fixture's own: ``parts`` is created at EARLY, where the
# early source stands; the four revisions after it are what a deploy would apply there.
EARLY = "rh0000000001"
ADD_WEIGHT, BACKFILL, CHECK_SIZE, VALIDATE_SIZE = PENDING = (
    "rh0000000002", "rh0000000003", "rh0000000004", "rh0000000005")
HEAD = PENDING[-1]
HISTORY = [
    (EARLY, FIXTURE_REVISIONS[-1], "create parts", """
op.create_table(
    "parts",
    sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column("widget_id", sa.BigInteger(), nullable=False),
    sa.Column("label", sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(["widget_id"], ["widgets.id"],
                            name=op.f("fk_parts_widget_id_widgets")),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_parts")),
)""", 'op.drop_table("parts")'),
    # Nullable, no default: a catalog-only change under a brief exclusive lock.
    (ADD_WEIGHT, EARLY, "add part weight",
     'op.add_column("parts", sa.Column("weight", sa.Integer(), nullable=True))',
     'op.drop_column("parts", "weight")'),
    # A data migration on its own: row locks only.
    (BACKFILL, ADD_WEIGHT, "backfill part weights",
     'op.execute("UPDATE parts SET weight = length(label) WHERE weight IS NULL")', "pass"),
    # NOT VALID: no scan under the exclusive lock; the next revision validates.
    (CHECK_SIZE, BACKFILL, "check widget sizes",
     'op.execute("ALTER TABLE widgets ADD CONSTRAINT ck_widgets_size_not_negative "\n'
     '           "CHECK (size >= 0) NOT VALID")',
     'op.execute("ALTER TABLE widgets DROP CONSTRAINT ck_widgets_size_not_negative")'),
    # VALIDATE scans under SHARE UPDATE EXCLUSIVE: reads and writes go on.
    (VALIDATE_SIZE, CHECK_SIZE, "validate widget size check",
     'op.execute("ALTER TABLE widgets VALIDATE CONSTRAINT ck_widgets_size_not_negative")',
     'op.execute("ALTER TABLE widgets DROP CONSTRAINT ck_widgets_size_not_negative")\n'
     'op.execute("ALTER TABLE widgets ADD CONSTRAINT ck_widgets_size_not_negative "\n'
     '           "CHECK (size >= 0) NOT VALID")'),
]
PART_MODEL = """

class Part(db.Model):
    __tablename__ = "parts"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    widget_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("widgets.id"))
    label: Mapped[str] = mapped_column(sa.String(200))
    weight: Mapped[int | None] = mapped_column(sa.Integer)
"""
# Widgets 1-500 have ten parts each; widgets 501-1000 have none.
SEED = """
INSERT INTO widgets (name, size)
    SELECT 'Widget ' || g, g % 50 FROM generate_series(1, 1000) g;
INSERT INTO parts (widget_id, label{weight_column})
    SELECT 1 + (g - 1) / 10, 'Part ' || g{weight_value} FROM generate_series(1, 5000) g;
"""
CHECKSUM = "SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY {key}), '')) FROM {table} t"
TABLES = {"widgets": "id", "parts": "id", "alembic_version": "version_num",
          "migration_checksums": "revision"}


def rehearsal_project(dest: Path) -> Path:
    """The fixture project with the rehearsal history and a model for ``parts``."""
    repo = fixture_project(dest)
    models = repo / "backend/models/__init__.py"
    text = models.read_text()
    models.write_text(text.replace('\n\n__all__ = ["Widget"]',
                                   PART_MODEL + '\n\n__all__ = ["Part", "Widget"]'))
    assert "class Part" in models.read_text(), "the fixture's models file changed its layout"
    for number, (rev, parent, message, upgrade, downgrade) in enumerate(HISTORY):
        write_revision(repo, rev, parent, message, upgrade=upgrade, downgrade=downgrade,
                       stamp=f"20260201_{10 + number}00")
    return repo


def seed(url, with_weight: bool) -> None:
    execute_sql(url, SEED.format(weight_column=", weight" if with_weight else "",
                                 weight_value=", g % 7" if with_weight else ""))


@pytest.fixture(scope="module")
def rehearsal_repo(tmp_path_factory) -> Path:
    """The project the sources were migrated with (read-only: a test copies it to add
    revisions of its own)."""
    repo = rehearsal_project(tmp_path_factory.mktemp("rehearsal") / "repo")
    assert revisions(repo) == [*FIXTURE_REVISIONS, EARLY, *PENDING]
    return repo


@pytest.fixture
def repo(rehearsal_repo, tmp_path) -> Path:
    """A copy of the rehearsal project of this test's own, to write revisions into."""
    return shutil.copytree(rehearsal_repo, tmp_path / "repo", symlinks=True)


@pytest.fixture(scope="module")
def early_source(pg_server, rehearsal_repo):
    """A database at an earlier revision, with a few thousand rows: four revisions pending."""
    url = pg_server.create_database()
    run_flask(["db", "upgrade", EARLY], url, cwd=rehearsal_repo)
    seed(url, with_weight=False)
    yield url
    pg_server.drop_database(url.database)


@pytest.fixture(scope="module")
def head_source(pg_server, rehearsal_repo):
    """A database at the rehearsal head, with rows: only a test's own revisions are pending."""
    url = pg_server.create_database()
    run_flask(["db", "upgrade"], url, cwd=rehearsal_repo)
    seed(url, with_weight=True)
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


def rehearse(*args: str, repo: Path, cwd: Path | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "scripts/rehearse.sh"), *args], cwd=cwd or repo,
                          env=child_env(None), capture_output=True, text=True,
                          timeout=timeout)


def from_url(source, prefix: str, *extra: str, repo: Path):
    return rehearse("--from-url", url_text(source), "--prefix", prefix, *extra, repo=repo)


def steps(document: dict, phase: str) -> dict[str, dict]:
    return {step["revision"]: step for step in document["steps"] if step["phase"] == phase}


def table_row(markdown: str, revision: str, section: str = "## Upgrade") -> str:
    """The markdown table line of ``revision`` in one section of the report."""
    part = markdown.split(section, 1)[1].split("\n## ", 1)[0]
    return next(line for line in part.splitlines() if line.startswith(f"| `{revision}`"))


def test_pending_revisions_pass_and_leave_the_source_alone(early_source, rehearsal_repo,
                                                          pg_server, prefix, tmp_path):
    before = fingerprint(early_source)
    report, as_json = tmp_path / "report.md", tmp_path / "report.json"

    proc = from_url(early_source, prefix, "--report", str(report), "--json", str(as_json),
                    repo=rehearsal_repo)

    assert proc.returncode == 0, proc.stderr
    assert report.read_text() == proc.stdout
    assert proc.stdout.startswith("# Migration rehearsal: passed")
    for rev in PENDING:
        times = r"\| \d+\.\d{3} s \| \d+\.\d{3} s \| \d+\.\d{3} s \|"
        assert re.search(times, table_row(proc.stdout, rev)), table_row(proc.stdout, rev)
        assert f"upgrade 1/{len(PENDING)}" in proc.stderr
    document = json.loads(as_json.read_text())
    assert document["ok"] is True and document["start"] == [EARLY]
    assert document["head"] == [HEAD]
    assert [p["revision"] for p in document["pending"]] == list(PENDING)
    for phase in ("upgrade", "downgrade", "re-upgrade"):
        assert list(steps(document, phase)) == (list(PENDING) if phase != "downgrade"
                                                else list(PENDING[::-1]))
        assert all(s["seconds"] > 0 and s["error"] is None for s in steps(document, phase)
                   .values())
    upgrades = steps(document, "upgrade")
    # Adding a column: a brief exclusive lock, no rewrite. The backfill: row locks only.
    # VALIDATE: reads and writes go on. Each on its own table, and only there.
    assert upgrades[ADD_WEIGHT]["locks"] == {"parts": "AccessExclusiveLock"}
    assert upgrades[ADD_WEIGHT]["rewrote"] == {}
    assert upgrades[BACKFILL]["locks"] == {"parts": "RowExclusiveLock"}
    assert upgrades[VALIDATE_SIZE]["locks"] == {"widgets": "ShareUpdateExclusiveLock"}
    assert upgrades[VALIDATE_SIZE]["lock_seconds"]["widgets"] >= 0
    assert "widgets: ShareUpdateExclusiveLock for " in table_row(proc.stdout, VALIDATE_SIZE)
    assert document["tables_start"]["parts"]["rows"] == 5000
    assert document["tables_start"]["widgets"]["rows"] == 1000
    assert upgrades[ADD_WEIGHT]["tables_after"]["parts"]["rows"] == 5000
    assert all(check["ok"] for check in document["checks"].values())
    assert set(document["checks"]) == {"downgrades_restore_schema", "models_match",
                                       "upgrade_repeatable_schema", "upgrade_repeatable_rows"}

    assert fingerprint(early_source) == before
    assert scratch_databases(pg_server, prefix) == []


def test_a_type_change_rewrites_its_table_and_a_nullable_column_does_not(head_source, repo,
                                                                         prefix, pg_server):
    write_revision(repo, "aaaa00000001", HEAD, "add part priority", stamp="20261120_1000",
                   upgrade='op.add_column("parts", sa.Column("priority", sa.Integer()))',
                   downgrade='op.drop_column("parts", "priority")')
    write_revision(repo, "aaaa00000002", "aaaa00000001", "widen part priority",
                   stamp="20261120_1100",
                   upgrade='op.alter_column("parts", "priority", type_=sa.BigInteger())',
                   downgrade='op.alter_column("parts", "priority", type_=sa.Integer())')
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
    assert upgrades["aaaa00000001"]["locks"] == {"parts": "AccessExclusiveLock"}
    assert list(upgrades["aaaa00000002"]["rewrote"]) == ["parts"]
    assert upgrades["aaaa00000002"]["rewrote"]["parts"]["bytes_after"] > 0
    assert upgrades["aaaa00000002"]["locks"] == {"parts": "AccessExclusiveLock"}
    assert list(steps(document, "downgrade")["aaaa00000002"]["rewrote"]) == ["parts"]
    assert fingerprint(head_source) == before
    assert scratch_databases(pg_server, prefix) == []


def test_rows_deleted_by_a_migration_fail_the_rehearsal_unless_declared(head_source, repo,
                                                                        prefix, pg_server):
    write_revision(repo, "bbbb00000001", HEAD, "drop every tenth part", stamp="20261120_1000",
                   upgrade='op.execute("DELETE FROM parts WHERE id % 10 = 0")')
    write_revision(repo, "bbbb00000002", "bbbb00000001", "drop widgets without parts",
                   stamp="20261120_1100",
                   upgrade="# rehearse: expect-row-loss widgets never built from any part\n"
                           'op.execute("DELETE FROM widgets w WHERE NOT EXISTS '
                           '(SELECT 1 FROM parts p WHERE p.widget_id = w.id)")')
    before = fingerprint(head_source)

    proc = from_url(head_source, prefix, repo=repo)

    assert proc.returncode == 1, proc.stderr
    problems = proc.stdout.split("## Problems", 1)[1]
    assert "lost rows in parts: 5000 -> 4500" in problems
    assert "widgets" not in problems
    assert "parts 5000 -> 4500 (**LOST**)" in table_row(proc.stdout, "bbbb00000001")
    assert "widgets 1000 -> 500 (expected: never built from any part)" in \
        table_row(proc.stdout, "bbbb00000002")
    assert "LOST ROWS in parts" in proc.stderr
    assert fingerprint(head_source) == before
    assert scratch_databases(pg_server, prefix) == []


def test_a_failing_revision_stops_the_rehearsal_and_leaves_nothing_behind(head_source, repo,
                                                                          prefix, pg_server):
    write_revision(repo, "cccc00000001", HEAD, "add part serial", stamp="20261120_1000",
                   upgrade='op.add_column("parts", sa.Column("serial", sa.Text()))',
                   downgrade='op.drop_column("parts", "serial")')
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


def test_a_downgrade_that_leaves_a_column_behind_is_caught(head_source, repo, prefix,
                                                         pg_server):
    write_revision(repo, "eeee00000001", HEAD, "add widget colour", stamp="20261120_1000",
                   upgrade='op.add_column("widgets", sa.Column("colour", sa.Text()))')

    proc = from_url(head_source, prefix, "--json", "-", repo=repo)

    assert proc.returncode == 1, proc.stderr
    document = json.loads(proc.stdout)
    restored = document["checks"]["downgrades_restore_schema"]
    assert restored["ok"] is False
    assert "only in the schema after the downgrades: column public.widgets.colour text" in \
        restored["detail"]
    # The column is still there, so applying the revision again fails.
    assert 'column "colour" of relation "widgets" already exists' in \
        steps(document, "re-upgrade")["eeee00000001"]["error"]
    assert scratch_databases(pg_server, prefix) == []


@pytest.mark.parametrize("upgrade, leftover", [
    ('op.execute("CREATE SEQUENCE invoice_numbers")', "sequence public.invoice_numbers bigint"),
    ('op.execute("CREATE VIEW light_parts AS SELECT id FROM parts WHERE weight < 3")',
     "view public.light_parts"),
], ids=["sequence", "view"])
def test_a_downgrade_that_leaves_a_sequence_or_a_view_behind_is_caught(
        head_source, repo, prefix, upgrade, leftover):
    # Arrange: a revision whose downgrade forgets what its upgrade made.
    write_revision(repo, "eeee00000002", HEAD, "add a leftover", stamp="20261120_1000",
                   upgrade=upgrade)

    # Act
    proc = from_url(head_source, prefix, "--json", "-", repo=repo)

    # Assert
    assert proc.returncode == 1, proc.stderr
    restored = json.loads(proc.stdout)["checks"]["downgrades_restore_schema"]
    assert restored["ok"] is False
    assert f"only in the schema after the downgrades: {leftover}" in restored["detail"]


def test_from_dump_rehearses_a_backup_file(early_source, rehearsal_repo, pg_server, prefix,
                                           tmp_path):
    dump = take_backup(early_source, tmp_path / "backups", EARLY, EARLY)

    # Relative paths are taken from where the script was started.
    proc = rehearse("--from-dump", str(dump.relative_to(tmp_path)), "--target-url",
                    url_text(pg_server.url), "--prefix", prefix, "--report", "report.md",
                    repo=rehearsal_repo, cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report.md").read_text() == proc.stdout
    assert f"- source: {dump}, at {EARLY}" in proc.stdout
    for rev in PENDING:
        assert re.search(r"\| \d+\.\d{3} s \| \d+\.\d{3} s \| \d+\.\d{3} s \|",
                         table_row(proc.stdout, rev))
    assert scratch_databases(pg_server, prefix) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_revision_drops_the_scratch_database(head_source, repo, pg_server, prefix,
                                                         signum):
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


def test_a_password_is_never_printed_and_bad_usage_is_refused(fixture_repo):
    proc = rehearse("--from-url", "postgresql://app:s3cret-pw@127.0.0.1:1/app",
                    repo=fixture_repo, timeout=60)

    assert proc.returncode == 2
    assert "could not rehearse: cannot connect to postgresql://app:***@127.0.0.1:1/app" \
        in proc.stderr
    assert "s3cret-pw" not in proc.stdout + proc.stderr

    proc = rehearse("--from-dump", "/nonexistent.dump", repo=fixture_repo, timeout=60)
    assert proc.returncode == 2
    assert "--from-dump needs --target-url" in proc.stderr


def test_a_downgrade_is_blamed_only_for_rows_it_removed_itself():
    def tables(**rows: int) -> dict[str, TableState]:
        return {name: TableState(oid, 0, 0, count)
                for oid, (name, count) in enumerate(rows.items())}

    before_upgrade = tables(parts=5000, widgets=1000)
    # A later revision deleted 500 parts; this downgrade drops the table its upgrade made
    # and gives back the widgets its upgrade had added, then deletes ten more widgets.
    before = tables(parts=4500, widgets=1200, labels=300)
    after = tables(parts=4500, widgets=990)

    lost = lost_rows(before, after, {}, reference=before_upgrade)

    assert lost == {"widgets": {"before": 1200, "after": 990, "expected": None}}
    assert lost_rows(before, after, {"labels": "moved back"})["labels"]["expected"] == "moved back"


def test_lock_modes_compare_in_postgresql_order():
    assert strongest({"RowExclusiveLock", "ShareUpdateExclusiveLock"}) == \
        "ShareUpdateExclusiveLock"
    assert strongest({"ShareLock", "ShareRowExclusiveLock", "AccessShareLock"}) == \
        "ShareRowExclusiveLock"
    assert strongest({"ExclusiveLock", "AccessExclusiveLock"}) == "AccessExclusiveLock"


@pytest.mark.parametrize("given", ["--from-url", "--from-dump"])
def test_a_target_older_than_the_source_is_refused_before_copying(fixture_repo, tmp_path,
                                                                  given):
    # Arrange: a source on PostgreSQL 18 (or a dump of it) and a target on 16. Their data
    # is not under tmp_path: pytest prunes old base dirs, which another run may own.
    data = Path(tempfile.mkdtemp(prefix="pgold-"))
    source = PrivateServer(data / "pg18", major=18)
    target = PrivateServer(data / "pg16", major=16)
    try:
        source_arg = url_text(source.url)
        if given == "--from-dump":
            source_arg = str(take_backup(source.url, tmp_path / "dumps", None, None))
        # Act
        proc = rehearse(given, source_arg, "--target-url", url_text(target.url),
                        "--prefix", "rt_old", repo=fixture_repo)
        created = execute_sql(target.url, "SELECT count(*) FROM pg_database "
                                          "WHERE datname LIKE 'rt_old%'")
    finally:
        source.close()
        target.close()
        shutil.rmtree(data, ignore_errors=True)

    # Assert
    assert proc.returncode == 2
    assert "runs PostgreSQL 16, older than the source's 18" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert created == [(0,)]


@pytest.fixture(scope="module")
def phased_repo(tmp_path_factory) -> Path:
    """The fixture project with release N+1's two phases (an expand whose rows a background
    migration fills, a post-deploy contract that makes the column NOT NULL)."""
    repo = fixture_project(tmp_path_factory.mktemp("rehearsal-phases") / "repo")
    add_post_deploy_branch(repo)
    return repo


@pytest.fixture(scope="module")
def release_n_source(pg_server, fixture_repo):
    """Production at release N (the fixture's head), 3000 widgets: N+1 pending."""
    url = pg_server.create_database()
    run_flask(["db", "upgrade"], url, cwd=fixture_repo)
    execute_sql(url, "INSERT INTO widgets (name, size) "
                     "SELECT 'Widget ' || g, g % 50 FROM generate_series(1, 3000) g")
    yield url
    pg_server.drop_database(url.database)


def test_a_deploy_with_two_phases_is_rehearsed_in_its_order(release_n_source, phased_repo,
                                                           pg_server, prefix):
    before = execute_sql(release_n_source, CHECKSUM.format(key="id", table="widgets"))

    proc = from_url(release_n_source, prefix, "--json", "-", repo=phased_repo)

    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["ok"] is True, document["problems"]
    assert [(p["revision"], p["phase"]) for p in document["pending"]] == [
        (POST_EXPAND, "pre-deploy"), (POST_CONTRACT, "post-deploy")]
    order = [(step["phase"], step["revision"]) for step in document["steps"]]
    assert order == [("upgrade", POST_EXPAND), ("upgrade", POST_CONTRACT),
                     ("downgrade", POST_CONTRACT), ("downgrade", POST_EXPAND),
                     ("re-upgrade", POST_EXPAND), ("re-upgrade", POST_CONTRACT)]
    # The backfill ran between the phases, each pass, to its end, over every row.
    assert [(b["phase"], b["name"], b["revision"], b["rows"], b["state"])
            for b in document["backfills"]] == [
        ("upgrade", POST_BACKFILL, POST_EXPAND, 3000, "done"),
        ("re-upgrade", POST_BACKFILL, POST_EXPAND, 3000, "done")]
    assert all(b["batches"] >= 1 for b in document["backfills"])
    first_pass = proc.stderr.split("re-upgrade 1/2")[0]
    assert first_pass.index(f"upgrade 1/2: {POST_EXPAND}") < first_pass.index(
        f"upgrade: 1 background migration(s) to the end: {POST_BACKFILL}") < \
        first_pass.index(f"upgrade 2/2: {POST_CONTRACT}"), proc.stderr
    contract = steps(document, "upgrade")[POST_CONTRACT]
    assert contract["error"] is None and contract["locks"] == {"widgets": "AccessExclusiveLock"}
    assert all(check["ok"] for check in document["checks"].values()), document["checks"]
    assert execute_sql(release_n_source, CHECKSUM.format(key="id", table="widgets")) == before
    assert scratch_databases(pg_server, prefix) == []


def test_the_report_has_a_section_per_phase(release_n_source, phased_repo, prefix):
    proc = from_url(release_n_source, prefix, repo=phased_repo)

    assert proc.returncode == 0, proc.stderr
    report = proc.stdout
    assert "- 2 pending revision(s), to " in report
    assert "(1 pre-deploy, 1 post-deploy); in the deploy's order" in report
    sections = ["### 1. Pre-deploy revisions", "### 2. Background migrations",
                "### 3. Post-deploy revisions", "## Downgrade"]
    assert [report.index(name) for name in sections] == sorted(
        report.index(name) for name in sections)
    pre, backfills, post = (report.split(name, 1)[1].split("\n### ", 1)[0].split("\n## ")[0]
                            for name in sections[:3])
    assert f"| `{POST_EXPAND}` |" in pre and POST_CONTRACT not in pre
    assert f"| `{POST_CONTRACT}` |" in post and POST_EXPAND not in post
    row = next(line for line in backfills.splitlines() if line.startswith(f"| `{POST_BACKFILL}`"))
    assert row.startswith(f"| `{POST_BACKFILL}` | `{POST_EXPAND}` | widgets | upgrade | 3000 |")
    assert row.endswith("| done |")
    assert "require widget code (post-deploy)" in table_row(report, POST_CONTRACT, "## Downgrade")


def test_a_pending_expand_that_needs_a_pending_contract_is_refused(release_n_source,
                                                                   phased_repo, tmp_path,
                                                                   prefix, pg_server):
    repo = shutil.copytree(phased_repo, tmp_path / "repo", symlinks=True)
    write_revision(repo, "ffff00000001", POST_EXPAND, "needs the contract",
                   stamp="20261230_1000", depends_on=POST_CONTRACT)

    proc = from_url(release_n_source, prefix, "--json", "-", repo=repo)

    assert proc.returncode == 1, proc.stderr
    document = json.loads(proc.stdout)
    assert document["problems"] == [
        f"the pre-deploy revisions need post-deploy revision(s) {POST_CONTRACT} first, and a "
        "start never applies those: run `flask migrations post-deploy` with the release that "
        "brought them, then rehearse this one"]
    assert document["steps"] == []
    assert scratch_databases(pg_server, prefix) == []
