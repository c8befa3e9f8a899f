"""Benchmark 4: production stays up while we migrate.

A ``tasks`` table of 1,000,000 rows (100,000 with QUICK) in our real schema at revision
``8b2e4d6f1a93`` (the parent of the index revision), filled with ``generate_series``. While
a writer (single-row INSERTs) and a reader (primary-key SELECTs), each in its own process
with its own connection, keep using it, the index-and-constraint change is applied:

- ours: the shipped revisions, through ``flask db upgrade`` (our env.py: lock_timeout 2s
  with retries, one transaction per revision): ``c47d0e5a9f26`` (CREATE INDEX CONCURRENTLY
  in an autocommit block), ``a9c36f7b0e18`` (CHECK ... NOT VALID) and ``b1d4e7a2c905``
  (VALIDATE, its own transaction). The last two are re-parented onto the first, so only
  these three run;
- naive: the same index and constraint as one plain revision (CREATE INDEX, ADD
  CONSTRAINT validated at once) through ``alembic upgrade head`` with the stock generic
  env.py: one transaction, no lock_timeout.

Every request is timed; the report gives the longest stall any request saw, and p99 before
and during the migration. A second scenario holds a transaction open on ``tasks`` (``BEGIN;
SELECT ... LIMIT 1``, ~8 s, then ROLLBACK) from just before the migration starts: our ALTER
gives up after lock_timeout and retries, so no request should wait longer than that, while the
naive ALTER queues behind the open transaction, and every request queues behind the ALTER.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from bench.common import (
    ROOT,
    BenchError,
    BenchResult,
    Context,
    Row,
    child_env,
    connect,
    connect_kwargs,
    copy_repo,
    log,
    percentile,
    plain_alembic_dir,
    run_timed,
    spawn,
    sql,
    stop,
    summarize,
    tail,
    write_alembic_ini,
)

LOCK_TIMEOUT = "2s"
LOCK_TIMEOUT_S = 2.0
STALL_TARGET = LOCK_TIMEOUT_S + 0.5
HOLD_SECONDS = 8.0
PACE = 0.005          # each client sends at most one request per 5 ms: a busy service, not a flood
LOAD_LIMIT = 120.0    # no client runs longer than this, whatever happens
BASE_REVISION = "8b2e4d6f1a93"
SHIPPED = {  # revision -> the parent it gets here (only the three tasks revisions run)
    "3f9a1c2b7d10": None,
    "8b2e4d6f1a93": "3f9a1c2b7d10",
    "c47d0e5a9f26": "8b2e4d6f1a93",
    "a9c36f7b0e18": "c47d0e5a9f26",
    "b1d4e7a2c905": "a9c36f7b0e18",
}

NAIVE_REVISION = '''"""index tasks by due date and check status, the naive way

Revision ID: 0a1be0000001
Revises: 8b2e4d6f1a93
Create Date: 2026-01-01 00:00:00.000000+00:00

"""
from alembic import op
import sqlalchemy as sa


revision = "0a1be0000001"
down_revision = "8b2e4d6f1a93"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_tasks_due_date", "tasks", ["due_date"])
    op.create_check_constraint("ck_tasks_status", "tasks", "status IN ('todo', 'doing', 'done')")


def downgrade():
    op.drop_constraint("ck_tasks_status", "tasks", type_="check")
    op.drop_index("ix_tasks_due_date", table_name="tasks")
'''

FILL = """
INSERT INTO users (email, name) VALUES ('bench@example.com', 'Bench');
INSERT INTO projects (owner_id, name)
    SELECT (SELECT min(id) FROM users), 'project ' || g FROM generate_series(1, 100) g;
INSERT INTO tasks (project_id, title, status, due_date)
    SELECT p.first + g % 100, 'task ' || g, (ARRAY['todo', 'doing', 'done'])[1 + g % 3],
           CASE WHEN g % 4 = 0 THEN NULL ELSE DATE '2026-01-01' + g % 365 END
    FROM generate_series(1, {rows}) g, (SELECT min(id) AS first FROM projects) p;
"""


# --- the versions folders ---------------------------------------------------------------------

def _shipped_file(revision: str) -> Path:
    matches = list((ROOT / "migrations" / "versions").glob(f"*_{revision}_*.py"))
    if len(matches) != 1:
        raise BenchError(f"expected one shipped file for revision {revision}, found {matches}")
    return matches[0]


def ours_versions(dest: Path) -> Path:
    """The shipped files, the constraint revision re-parented onto the index revision."""
    dest.mkdir(parents=True)
    for revision, parent in SHIPPED.items():
        source = _shipped_file(revision)
        text = source.read_text()
        text, count = re.subn(r"^down_revision = .*$", f"down_revision = {parent!r}", text,
                              count=1, flags=re.M)
        if count != 1:
            raise BenchError(f"no down_revision line in {source.name}")
        (dest / source.name).write_text(text)
    return dest


def naive_versions(dest: Path) -> Path:
    """The base two shipped files, then the naive revision."""
    dest.mkdir(parents=True)
    for revision in ("3f9a1c2b7d10", BASE_REVISION):
        shutil.copy2(_shipped_file(revision), dest / _shipped_file(revision).name)
    (dest / "0001_0a1be0000001_naive_index_and_check.py").write_text(NAIVE_REVISION)
    return dest


# --- the load -------------------------------------------------------------------------------

def _client(kind: str, kwargs: dict[str, Any], rows: int, go: Any, halt: Any,
            results: Any) -> None:
    """One client process, its own connection: time every request until told to stop.

    Samples are (monotonic start, seconds, ok); CLOCK_MONOTONIC is system-wide, so the
    parent can place them against the migration's start and end.
    """
    import psycopg2

    conn = psycopg2.connect(**kwargs, application_name=f"bench-{kind}")
    conn.autocommit = True
    cur = conn.cursor()
    rng = random.Random(kind)
    samples: list[tuple[float, float, bool]] = []
    go.wait(30)
    limit = time.monotonic() + LOAD_LIMIT
    next_at = time.monotonic()
    while not halt.is_set() and time.monotonic() < limit:
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
        next_at = max(next_at + PACE, time.monotonic())
        started = time.monotonic()
        ok = True
        try:
            if kind == "writer":
                cur.execute("INSERT INTO tasks (project_id, title, status, due_date) "
                            "SELECT min(id), 'live', 'todo', DATE '2026-06-01' FROM projects")
            else:
                cur.execute("SELECT id, title, status FROM tasks WHERE id = %s",
                            (rng.randint(1, rows),))
                cur.fetchall()
        except psycopg2.Error:
            ok = False
        samples.append((started, time.monotonic() - started, ok))
    conn.close()
    results.put((kind, samples))


def _holder(url: URL, seconds: float, times: dict[str, float]) -> None:
    """The long-open transaction: it reads one row of tasks (ACCESS SHARE), then sits idle
    in its transaction for ``seconds`` before rolling back."""
    conn = connect(url, autocommit=False, application_name="bench-long-transaction")
    try:
        with conn.cursor() as cur:
            times["begin"] = time.monotonic()
            cur.execute("SELECT id FROM tasks LIMIT 1")
            cur.fetchall()
            time.sleep(seconds)
        conn.rollback()
        times["end"] = time.monotonic()
    finally:
        conn.close()


def _migrate(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> tuple[int, str]:
    """Run the migration command; its exit code and log (it may fail: that is reported)."""
    proc = spawn(cmd, cwd, env, log_path)
    try:
        code = proc.wait(300)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise BenchError(f"{' '.join(cmd)} took over 300s:\n{tail(log_path)}") from None
    stop(proc)
    return code, log_path.read_text(errors="replace")


def _scenario(ctx: Context, template: str, variant: str, long_txn: bool, rows: int,
              roots: dict[str, Path], before: float, after: float) -> dict[str, Any]:
    """One run: fresh copy of the filled database, load, (long transaction), migration."""
    url = ctx.pg.create_database(template=template, prefix=f"live_{variant}")
    log_path = ctx.workdir / f"{variant}-{'long' if long_txn else 'quiet'}.log"
    log_path.write_text("")
    try:
        if variant == "ours":
            cmd = ["flask", "db", "upgrade"]
            cwd = roots["ours"]
            env = child_env(url, LOG_FORMAT="text", MIGRATION_LOCK_TIMEOUT=LOCK_TIMEOUT)
        else:
            ini = write_alembic_ini(roots["naive_env"], roots["naive_versions"], url)
            cmd, cwd, env = ["alembic", "-c", str(ini), "upgrade", "head"], roots["naive_env"], \
                child_env()
        mpctx = mp.get_context("fork")
        go, halt, results = mpctx.Event(), mpctx.Event(), mpctx.Queue()
        clients = [mpctx.Process(target=_client, daemon=True,
                                 args=(kind, connect_kwargs(url), rows, go, halt, results))
                   for kind in ("writer", "reader")]
        for client in clients:
            client.start()
        time.sleep(0.5)  # both connected
        go.set()
        load_start = time.monotonic()
        time.sleep(before)
        held: dict[str, float] = {}
        holder = None
        if long_txn:
            holder = threading.Thread(target=_holder, args=(url, HOLD_SECONDS, held))
            holder.start()
            time.sleep(0.5)  # the transaction is open before the migration starts
        t0 = time.monotonic()
        code, output = _migrate(cmd, cwd, env, log_path)
        t1 = time.monotonic()
        if holder is not None:
            holder.join(HOLD_SECONDS + 30)
        time.sleep(after)
        halt.set()
        samples: dict[str, list[tuple[float, float, bool]]] = {}
        for _ in clients:
            kind, got = results.get(timeout=LOAD_LIMIT + 30)
            samples[kind] = got
        for client in clients:
            client.join(10)
        state = sql(url, """
            SELECT (SELECT string_agg(version_num, ',') FROM alembic_version),
                   (SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                    WHERE c.relname = 'ix_tasks_due_date'),
                   (SELECT convalidated FROM pg_constraint WHERE conname = 'ck_tasks_status')
        """)[0]
    finally:
        ctx.pg.drop_database(url.database)

    everything = [s for got in samples.values() for s in got]
    warm = load_start + 0.3
    out: dict[str, Any] = {
        "migration_seconds": t1 - t0,
        "exit_code": code,
        "tries": 1 + len(re.findall(r"could not lock a table within lock_timeout .* retrying",
                                    output)),
        "version": state[0], "index_valid": state[1], "check_validated": state[2],
        "requests": len(everything),
        "errors": sum(1 for s in everything if not s[2]),
        "max_stall": max((s[1] for s in everything), default=float("nan")),
        "p99_before_ms": percentile([s[1] for s in everything if warm <= s[0] < t0], 99) * 1000,
        "p99_during_ms": percentile([s[1] for s in everything if t0 <= s[0] <= t1], 99) * 1000,
        "p99_during_corrected_ms": percentile(_corrected(
            [s[1] for s in everything if t0 <= s[0] <= t1]), 99) * 1000,
    }
    for kind, got in samples.items():
        out[f"max_stall_{kind}"] = max((s[1] for s in got), default=float("nan"))
    if held:
        out["held_seconds"] = held.get("end", t1) - held["begin"]
    out["log"] = [line for line in output.splitlines()
                  if re.search(r"applied|retrying|failed|Running upgrade|database now", line)]
    if code != 0:
        out["failure"] = next((line for line in output.splitlines()[::-1]
                               if "refusing" in line or "failed" in line or "Error" in line),
                              output.splitlines()[-1] if output else "")
    return out


def _corrected(latencies: list[float]) -> list[float]:
    """Latencies with the requests a stalled client never sent put back.

    Each client waits for one answer before sending the next, so a 7 s stall is one slow
    sample among thousands and barely moves a p99 (coordinated omission). A client paced at
    one request per ``PACE`` would have sent one every ``PACE`` meanwhile, each waiting a
    little less: they are added, as HdrHistogram's correction does.
    """
    out = list(latencies)
    for latency in latencies:
        missed = latency - PACE
        while missed > 0:
            out.append(missed)
            missed -= PACE
    return out


def _prepare(ctx: Context, rows: int) -> tuple[str, dict[str, Path]]:
    """The filled template database at 8b2e4d6f1a93, and the two ways to migrate it."""
    roots: dict[str, Path] = {}
    roots["ours"] = copy_repo(ctx.workdir / "ours", versions=ours_versions(
        ctx.workdir / "ours-versions"))
    roots["naive_versions"] = naive_versions(ctx.workdir / "naive-versions")
    roots["naive_env"] = plain_alembic_dir(ctx.workdir / "naive-env", roots["naive_versions"],
                                           ctx.pg.url)
    url = ctx.pg.create_database(prefix="live_template")
    run_timed(["flask", "db", "upgrade", BASE_REVISION], roots["ours"], child_env(url),
              ctx.workdir / "prepare.log")
    started = time.perf_counter()
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(FILL.format(rows=int(rows)))
            cur.execute("VACUUM ANALYZE")
    finally:
        conn.close()
    log(f"live: {rows:,} tasks written in {time.perf_counter() - started:.1f}s")
    return url.database, roots


def run(ctx: Context) -> BenchResult:
    rows = 100_000 if ctx.quick else 1_000_000
    rounds = 1 if ctx.quick else 3
    before, after = (1.5, 1.0) if ctx.quick else (2.0, 1.0)
    result = BenchResult(
        key="live",
        title="4. Production stays up while we migrate",
        what=(f"`tasks` with {rows:,} rows; a writer (INSERTs) and a reader (primary-key "
              f"SELECTs), each its own process and connection, one request per "
              f"{PACE * 1000:.0f} ms at most, from {before:g} s before the migration to "
              f"{after:g} s after it. Ours: the shipped revisions c47d0e5a9f26 (CREATE INDEX "
              "CONCURRENTLY), a9c36f7b0e18 (CHECK NOT VALID), b1d4e7a2c905 (VALIDATE) through "
              f"`flask db upgrade` (lock_timeout {LOCK_TIMEOUT}, retries). Plain: the same "
              "index and constraint as one naive revision (CREATE INDEX; ADD CONSTRAINT "
              "validated at once) through `alembic upgrade head`, stock env, one transaction, "
              f"no lock_timeout. {rounds} round(s), median (min-max)."),
        ours_label="shipped revisions, `flask db upgrade`",
        plain_label="naive DDL, `alembic upgrade head`",
    )
    template, roots = _prepare(ctx, rows)
    scenarios = [(False, "A: quiet table"),
                 (True, f"B: a transaction held open on tasks ~{HOLD_SECONDS:.0f} s")]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        label: {"ours": [], "naive": []} for _, label in scenarios}
    for rnd in range(rounds):
        for long_txn, label in scenarios:
            order = ["ours", "naive"] if rnd % 2 == 0 else ["naive", "ours"]
            for variant in order:
                outcome = _scenario(ctx, template, variant, long_txn, rows, roots, before,
                                    after)
                runs[label][variant].append(outcome)
                log(f"live: round {rnd + 1}/{rounds}, {label[:1]}, {variant}: migration "
                    f"{outcome['migration_seconds']:.1f}s (exit {outcome['exit_code']}, "
                    f"{outcome['tries']} tries), longest stall {outcome['max_stall']:.2f}s")
    ctx.pg.drop_database(template)

    for _, label in scenarios:
        ours, naive = runs[label]["ours"], runs[label]["naive"]

        def pair(key: str, ours=ours, naive=naive) -> tuple[Any, Any]:
            return (summarize([r[key] for r in ours]), summarize([r[key] for r in naive]))

        stall_o, stall_n = pair("max_stall")
        worst = max(stall_o.values)
        result.rows.append(Row(
            f"{label}: longest stall, any request", stall_o, stall_n,
            summarize([o["max_stall"] / n["max_stall"] for o, n in zip(ours, naive,
                                                                          strict=True)]),
            f"ours < {STALL_TARGET:.1f} s (lock_timeout + 0.5 s)", worst < STALL_TARGET))
        for kind in ("writer", "reader"):
            o, n = pair(f"max_stall_{kind}")
            result.rows.append(Row(f"{label}: longest stall, {kind}", o, n, "—", "—", None))
        for key, name in (("p99_before_ms", "p99 latency before the migration"),
                          ("p99_during_ms", "p99 latency during the migration"),
                          ("p99_during_corrected_ms", "p99 latency during the migration, "
                           "corrected for coordinated omission")):
            o, n = pair(key)
            result.rows.append(Row(f"{label}: {name}", o, n, "—", "—", None, unit="ms",
                                   digits=1))
        o, n = pair("migration_seconds")
        result.rows.append(Row(f"{label}: migration wall-clock", o, n, "—", "—", None))
        result.rows.append(Row(f"{label}: outcome", _outcome(ours), _outcome(naive),
                               "—", "—", None, unit=""))
    result.notes = [
        "Stall: the longest time any single request (writer or reader) waited for its "
        "answer, over the whole run. p99 'during' covers requests started between the "
        "migration command's start and its exit. A client waits for each answer before "
        "sending the next, so one long stall is one sample: the corrected p99 adds the "
        f"requests it would have sent every {PACE * 1000:.0f} ms meanwhile (HdrHistogram's "
        "correction).",
        f"Scenario B's transaction starts 0.5 s before the migration command and is rolled "
        f"back {HOLD_SECONDS:.0f} s later. A plain CREATE INDEX takes a SHARE lock, which an "
        "open reader does not block (writers wait for the build); ADD CONSTRAINT needs "
        "ACCESS EXCLUSIVE, which waits for the reader, and every later request queues behind "
        "it. Ours gives up after lock_timeout and retries with pauses of 1, 2, 4... s; while "
        "it waits, requests queue behind it for at most lock_timeout.",
        "Outcome: exit code, tries (1 + retries logged), and the final state of the index "
        "(valid?) and the CHECK (validated?).",
    ]
    result.raw = {"rows": rows, "rounds": rounds, "lock_timeout": LOCK_TIMEOUT,
                  "hold_seconds": HOLD_SECONDS, "runs": runs}
    return result


def _outcome(runs: list[dict[str, Any]]) -> str:
    """Exit codes, tries, and what the database ended with, per round."""
    def word(value: bool | None, yes: str, no: str) -> str:
        return "absent" if value is None else yes if value else no

    parts = []
    for r in runs:
        state = (f"index {word(r['index_valid'], 'valid', 'INVALID')}, "
                 f"check {word(r['check_validated'], 'validated', 'NOT validated')}")
        verdict = "applied" if r["exit_code"] == 0 else f"FAILED (exit {r['exit_code']})"
        tries = f"{r['tries']} {'try' if r['tries'] == 1 else 'tries'}"
        parts.append(f"{verdict} in {tries}; {state}")
    return "<br>".join(parts)
