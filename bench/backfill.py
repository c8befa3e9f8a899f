"""Benchmark 9: a background migration on a big table, from the deploy to the last row.

A backfill written inside a revision runs in the start path: the new release serves only
once every row is rewritten (benchmark 8 measured a median of 70 s at 500,000 rows before
N+1's backfill became a background migration). Registered with ``register_backfill`` instead, the
revision writes one row and ``flask migrations backfill run`` applies it later in short,
resumable batches. On one table of millions of widgets, filled once with
``generate_series`` and copied per measurement with ``CREATE DATABASE ... TEMPLATE``:

a. N+1's start to its first ``/readyz`` 200 (its revisions applied, the backfill registered)
   on the big table, against the same start on an empty one: the start must not grow with
   the table (target ratio <= 1.2);
b. the runner's rows per second, process start to exit, against one plain ``UPDATE`` of the
   same rows on another copy: what batching costs (no target; both rates reported);
c. API p99 while the runner works, against the steady state just before it, with clients
   on the fixture's read/write routes through two N+1 replicas (target <= 2.0);
d. the runner SIGKILLed at a random moment while ``backfill status`` shows it running, then
   run again: every row must be changed exactly once, and the work redone (rows the killed
   batch changed and PostgreSQL rolled back, counted by ``pg_stat_user_tables.n_tup_upd``,
   which counts aborted updates too) must be at most the batch in flight.

Release N and N+1 are the fixture application (``widgets``, tests/apps/fixture) from
testkit/rollout.py, as in benchmark 8, not the checkout's own application: the benchmark
measures the migration machinery, so it keeps measuring when a team removes the example.
N+1 here is N plus two revisions: a counter column with a constant default (a catalog-only
change) and the backfill ``counter = counter + 1``, so that a row changed twice, or never,
shows. Benchmark 8's N+1 also builds an index concurrently, a read of the whole table that
no way of backfilling avoids; it is left out here so that (a) measures the backfill alone.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from bench.common import (
    BenchError,
    BenchResult,
    Context,
    Row,
    child_env,
    connect,
    free_port,
    log,
    percentile,
    ratios,
    run_timed,
    spawn,
    sql,
    stop,
    summarize,
    tail,
    wait_for_200,
)
from testkit.rollout import (
    Fleet,
    Traffic,
    add_revisions,
    fill_widgets,
    release,
    serve_release,
)

NAME = "widgets_counter"
STATEMENT = "UPDATE widgets SET counter = counter + 1 WHERE id > :start AND id <= :stop"
PLAIN = "UPDATE widgets SET counter = counter + 1"
REVISIONS = (
    ("b0b0b0b00001", "add widget counter",
     'op.add_column("widgets", sa.Column("counter", sa.Integer(), nullable=False,\n'
     '                                   server_default="0"))',
     'op.drop_column("widgets", "counter")'),
    ("b0b0b0b00002", "count every widget once in the background",
     f'register_backfill({NAME!r}, "widgets", {STATEMENT!r})',
     f'unregister_backfill({NAME!r})'),
)
RUN = ["flask", "migrations", "backfill", "run"]
RUNNER_APP = "backend-backfill"  # the runner's application_name in pg_stat_activity
WORKERS = "2"       # (a): gunicorn's default here, as benchmark 1 starts it
CLIENTS = 8         # (c): client threads, as testkit's Traffic sends them
WARMUP = 2.0        # (c): seconds of traffic before the steady window begins


def _changes(url: URL) -> dict[str, int]:
    """How many rows the counter shows changed once, more than once, never."""
    once, more, never = sql(url, "SELECT count(*) FILTER (WHERE counter = 1), "
                                 "count(*) FILTER (WHERE counter > 1), "
                                 "count(*) FILTER (WHERE counter = 0) FROM widgets")[0]
    return {"once": once, "twice_or_more": more, "never": never}


def _progress(url: URL) -> dict[str, Any]:
    row = sql(url, "SELECT state, last_key, rows_done, batches_done, batch_size "
                   "FROM background_migrations WHERE name = %s", (NAME,))
    if not row:
        raise BenchError(f"background migration {NAME} is not registered in {url.database}")
    return dict(zip(("state", "last_key", "rows_done", "batches_done", "batch_size"), row[0],
                    strict=True))


def _runner_gone(url: URL, timeout: float = 120.0) -> None:
    """Wait until no runner connection is left on ``url``: a SIGKILLed runner's server process
    finishes its statement, finds the client gone and rolls back; only then are its
    statistics counted."""
    deadline = time.monotonic() + timeout
    while sql(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                   "AND application_name = %s", (url.database, RUNNER_APP))[0][0]:
        if time.monotonic() > deadline:
            raise BenchError(f"a runner connection stayed on {url.database} for {timeout:.0f}s")
        time.sleep(0.1)


def _rows_updated(url: URL) -> int:
    """``n_tup_upd`` of widgets: row updates attempted, committed or rolled back alike.
    A backend reports its counts as it exits, so read until two reads agree."""
    _runner_gone(url)
    query = "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'widgets'"
    last = None
    while True:
        time.sleep(1.0)
        now = sql(url, query)[0][0]
        if now == last:
            return int(now)
        last = now


def _upgrade(repo: Path, url: URL, log_path: Path) -> None:
    run_timed(["flask", "db", "upgrade"], repo, child_env(url), log_path)


def _start_to_ready(repo: Path, url: URL, log_path: Path) -> float:
    """(a) The entrypoint, from its process start to its first ``/readyz`` 200."""
    port = free_port()
    env = child_env(url, PORT=str(port), WEB_CONCURRENCY=WORKERS, ACCESS_LOG="0")
    started = time.perf_counter()
    proc = spawn([str(repo / "entrypoint.sh")], repo, env, log_path)
    try:
        ready = wait_for_200(port, "/readyz", proc, log_path, timeout=600)
    finally:
        stop(proc, grace=3.0)
    return ready - started


def _start_pair(ctx: Context, repo: Path, big_url: URL, empty: str, big_first: bool,
                log_path: Path) -> tuple[float, float]:
    """(a) N+1 started on ``big_url`` and on a fresh copy of ``empty``: (big, empty) seconds.
    The copies' files are flushed first, so that neither start shares the disk with the
    kernel writing a copy back."""
    empty_url = ctx.pg.create_database(template=empty, prefix="backfill_start")
    try:
        os.sync()
        times = {}
        for side in (("big", "empty") if big_first else ("empty", "big")):
            times[side] = _start_to_ready(repo, big_url if side == "big" else empty_url,
                                          log_path.with_suffix(f".{side}.log"))
    finally:
        ctx.pg.drop_database(empty_url.database)
    return times["big"], times["empty"]


def _latencies(traffic: Traffic, start: float, end: float) -> list[float]:
    return [took for when, outcome, took in traffic.outcomes
            if start <= when < end and outcome == "ok"]


def _under_traffic(repo: Path, url: URL, workdir: Path, steady: float) -> dict[str, float]:
    """(c) Two N+1 replicas under ``CLIENTS`` client threads: ``steady`` seconds as they
    are, then the runner to its end; latencies of either window, and the runner's time."""
    workdir.mkdir()
    fleet = Fleet(url, workdir)
    try:
        serve_release(fleet, repo, ("next-1", "next-2"))
        with Traffic(fleet, clients=CLIENTS) as traffic:
            time.sleep(WARMUP + steady)
            began = time.monotonic()
            seconds = run_timed(RUN, repo, child_env(url), workdir / "backfill.log",
                                timeout=3600)
            ended = time.monotonic()
    finally:
        fleet.close()
    before, during = _latencies(traffic, began - steady, began), _latencies(traffic, began,
                                                                            ended)
    if len(before) < 20 or len(during) < 20:
        raise BenchError(f"too few requests to compare: {len(before)} before the backfill, "
                         f"{len(during)} during it")
    done = _progress(url)
    if done["state"] != "done":
        raise BenchError(f"the backfill under traffic ended {done['state']}:\n"
                         f"{tail(workdir / 'backfill.log')}")
    return {"steady_p50_ms": percentile(before, 50) * 1000,
            "steady_p99_ms": percentile(before, 99) * 1000,
            "during_p50_ms": percentile(during, 50) * 1000,
            "during_p99_ms": percentile(during, 99) * 1000,
            "requests_steady": len(before), "requests_during": len(during),
            "failed": len(traffic.failures()), "traffic_runner_seconds": seconds,
            "traffic_runner_rows": done["rows_done"]}


def _runner_and_plain(ctx: Context, repo: Path, big: str, rows: int, rnd: int,
                      workdir: Path) -> dict[str, float]:
    """(b) The runner on one copy, one plain UPDATE on another, in turns; each copy at N+1
    (column added, backfill registered), each checked to end with every row changed once."""
    out: dict[str, float] = {}
    for side in (("runner", "plain") if rnd % 2 == 0 else ("plain", "runner")):
        url = ctx.pg.create_database(template=big, prefix="backfill_rate")
        try:
            _upgrade(repo, url, workdir / f"upgrade-{side}.log")
            before = _rows_updated(url)
            if side == "runner":
                seconds = run_timed(RUN, repo, child_env(url), workdir / "runner.log",
                                    timeout=3600)
                # The batches alone, first to last, as the runner recorded them.
                out["runner_work_seconds"] = float(sql(
                    url, "SELECT extract(epoch FROM finished_at - started_at) "
                         "FROM background_migrations WHERE name = %s", (NAME,))[0][0])
            else:
                conn = connect(url)
                try:
                    with conn.cursor() as cur:
                        started = time.perf_counter()
                        cur.execute(PLAIN)
                        seconds = time.perf_counter() - started
                finally:
                    conn.close()
            changed = _changes(url)
            if changed != {"once": rows, "twice_or_more": 0, "never": 0}:
                raise BenchError(f"{side}: rows changed {changed}, expected {rows:,} once")
            out[f"{side}_seconds"] = seconds
            out[f"{side}_rows_per_s"] = rows / seconds
            out[f"{side}_updates"] = _rows_updated(url) - before
        finally:
            ctx.pg.drop_database(url.database)
    return out


def _status(url: URL) -> str | None:
    """The migration's state as ``flask migrations backfill status`` reports it (the same
    function, called here so that a poll takes milliseconds, not an interpreter's start):
    ``running`` only while a runner holds it."""
    from backend.migrate.backfill_runner import status

    return next((row["state"] for row in status(url) if row["name"] == NAME), None)


def _wait_running(url: URL, proc: subprocess.Popen, workdir: Path) -> None:
    deadline = time.monotonic() + 120
    while _status(url) != "running":
        if proc.poll() is not None:
            raise BenchError(f"the runner exited {proc.returncode} before status showed it "
                             f"running:\n{tail(workdir / 'killed.log')}")
        if time.monotonic() > deadline:
            raise BenchError("backfill status did not show the runner running within 120s")
        time.sleep(0.01)


def _killed_and_resumed(ctx: Context, repo: Path, big: str, rows: int, unkilled: float,
                        work: float, rng: random.Random, workdir: Path) -> dict[str, Any]:
    """(d) A run SIGKILLed after a random delay while status shows it running, then a
    second run to the end; rows changed twice or never, and rows redone. ``unkilled`` and
    ``work`` are (b)'s run on the same table: the command's seconds and its batches'."""
    url = ctx.pg.create_database(template=big, prefix="backfill_kill")
    try:
        _upgrade(repo, url, workdir / "upgrade-kill.log")
        before = _rows_updated(url)
        started = time.perf_counter()
        proc = spawn(RUN, repo, child_env(url), workdir / "killed.log")
        try:
            _wait_running(url, proc, workdir)
            # Anywhere in the first 80% of the batches' time in the unkilled run: a batch
            # picked at random, the end left out so the kill finds the runner still at work.
            delay = rng.uniform(0.0, 0.8 * work)
            time.sleep(delay)
            if proc.poll() is not None or _status(url) != "running":
                raise BenchError(f"the runner was no longer running {delay:.2f}s after "
                                 "status showed it running: no kill to measure")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed_after = time.perf_counter() - started
        finally:
            stop(proc)
        # Its server process rolls the batch in flight back once it finds the client gone;
        # read the progress after that, so a commit already on its way is counted.
        _runner_gone(url)
        at_kill = _progress(url)
        resumed = run_timed(RUN, repo, child_env(url), workdir / "resumed.log", timeout=3600)
        changed = _changes(url)
        updates = _rows_updated(url) - before
        after = _progress(url)
    finally:
        ctx.pg.drop_database(url.database)
    if after["state"] != "done":
        raise BenchError(f"the resumed run ended {after['state']}:\n"
                         f"{tail(workdir / 'resumed.log')}")
    return {"delay": delay, "killed_after": killed_after, "resumed_seconds": resumed,
            "lost_seconds": killed_after + resumed - unkilled,
            "killed_at_rows_done": at_kill["rows_done"],
            "killed_at_batches": at_kill["batches_done"],
            # The batch in flight had the size the last committed batch recorded.
            "batch_in_flight": at_kill["batch_size"],
            "changed_twice": changed["twice_or_more"], "changed_never": changed["never"],
            "rows_redone": updates - rows}


def _templates(ctx: Context, repo: Path, rows: int) -> tuple[str, str]:
    """Two databases at N's head to copy from: ``widgets`` empty, and filled with ``rows``."""
    empty = ctx.pg.create_database(prefix="backfill_empty")
    _upgrade(repo, empty, ctx.workdir / "prepare.log")
    big = ctx.pg.create_database(template=empty.database, prefix="backfill_big")
    started = time.perf_counter()
    fill_widgets(big, rows)  # one INSERT ... SELECT generate_series, then ANALYZE
    # Vacuumed, as a table in service is: hint bits set and a visibility map, so that no
    # copy's first reader pays for writing them.
    sql(big, "VACUUM widgets")
    log(f"backfill: {rows:,} widgets written and vacuumed in "
        f"{time.perf_counter() - started:.1f}s")
    return empty.database, big.database


def run(ctx: Context) -> BenchResult:
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = 200_000 if ctx.quick else 5_000_000
    rounds = 1 if ctx.quick else 3
    pairs = 1 if ctx.quick else 2  # (a)'s pairs of starts per round: each is cheap
    steady = 5.0 if ctx.quick else 10.0
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    result = BenchResult(
        key="backfill",
        title="9. Background migration on a big table: start, rate, API latency, a kill",
        what=(f"`widgets` (the fixture application) with {rows:,} rows, filled once with "
              "generate_series and copied per measurement (CREATE DATABASE ... TEMPLATE). "
              "N+1 adds a counter column (constant default, catalog-only) and registers the "
              "backfill `counter = counter + 1` in batches over the key (register_backfill, "
              "default settings: batches aim at BACKFILL_BATCH_SECONDS = 0.5 s, at most "
              f"50,000 rows). (a) N+1's entrypoint ({WORKERS} workers) from process start to "
              f"the first /readyz 200, big table against empty, {pairs} pair(s) a round "
              "after one start not counted; (b) `flask migrations "
              "backfill run` (process start to exit) against one plain UPDATE of the same "
              f"rows; (c) two N+1 replicas, {CLIENTS} client threads on the fixture's "
              f"read/write routes: p99 while the runner works against the {steady:g} s "
              "before it; (d) the runner SIGKILLed after a random delay while `backfill "
              f"status` shows it running, then run again. {rounds} round(s); median "
              "(min-max)."),
        ours_label="named in the row",
        plain_label="named in the row",
    )
    repo_n = release(ctx.workdir / "n")
    repo_next = add_revisions(release(ctx.workdir / "next"), REVISIONS)
    empty, big = _templates(ctx, repo_n, rows)
    # One start not counted: the copy's first start compiles its modules' bytecode, which
    # would count against whichever side of (a) went first.
    warm = ctx.pg.create_database(template=empty, prefix="backfill_warm")
    try:
        _start_to_ready(repo_next, warm, ctx.workdir / "warm-up.log")
    finally:
        ctx.pg.drop_database(warm.database)
    runs: list[dict[str, Any]] = []
    for rnd in range(rounds):
        workdir = ctx.workdir / f"round{rnd}"
        workdir.mkdir()
        one: dict[str, Any] = {}
        # (a), in turns, on copies made for it; the last big copy stays for (c), with N+1
        # applied and its backfill pending.
        big_url: URL | None = None
        one["starts"] = []
        try:
            for pair in range(pairs):
                if big_url is not None:
                    ctx.pg.drop_database(big_url.database)
                big_url = ctx.pg.create_database(template=big, prefix="backfill_start")
                one["starts"].append(_start_pair(ctx, repo_next, big_url, empty,
                                                 big_first=(rnd + pair) % 2 == 0,
                                                 log_path=workdir / f"start-{pair}.log"))
            if big_url is None:
                raise BenchError("no start of N+1 was measured")
            registered = _progress(big_url)
            if (registered["state"], registered["rows_done"]) != ("pending", 0):
                raise BenchError(f"N+1's start left its backfill {registered}")
            one.update(_under_traffic(repo_next, big_url, workdir / "traffic", steady))
        finally:
            if big_url is not None:
                ctx.pg.drop_database(big_url.database)
        one["start_big"] = [big_s for big_s, _ in one["starts"]]
        one["start_empty"] = [empty_s for _, empty_s in one["starts"]]
        log(f"backfill: round {rnd + 1}/{rounds}: N+1 ready in "
            f"{', '.join(f'{x:.2f}' for x in one['start_big'])}s on {rows:,} rows, "
            f"{', '.join(f'{x:.2f}' for x in one['start_empty'])}s on none; under traffic p99 "
            f"{one['during_p99_ms']:.0f} ms vs {one['steady_p99_ms']:.0f} ms steady, runner "
            f"{one['traffic_runner_seconds']:.1f}s")
        one.update(_runner_and_plain(ctx, repo_next, big, rows, rnd, workdir))
        log(f"backfill: round {rnd + 1}/{rounds}: runner {one['runner_rows_per_s']:,.0f} "
            f"rows/s ({one['runner_seconds']:.1f}s), plain UPDATE "
            f"{one['plain_rows_per_s']:,.0f} rows/s ({one['plain_seconds']:.1f}s)")
        one.update(_killed_and_resumed(ctx, repo_next, big, rows, one["runner_seconds"],
                                       one["runner_work_seconds"], rng, workdir))
        log(f"backfill: round {rnd + 1}/{rounds}: killed after {one['killed_after']:.1f}s "
            f"({one['killed_at_rows_done']:,} rows committed, batch in flight "
            f"{one['batch_in_flight']:,}); rows redone {one['rows_redone']:,}, changed twice "
            f"{one['changed_twice']}, never {one['changed_never']}")
        runs.append(one)
    for name in (empty, big):
        ctx.pg.drop_database(name)

    def col(key: str) -> list[float]:
        return [r[key] for r in runs]

    start_big = [x for r in runs for x in r["start_big"]]
    start_empty = [x for r in runs for x in r["start_empty"]]
    start_ratio = ratios(start_big, start_empty)
    p99_ratio = ratios(col("during_p99_ms"), col("steady_p99_ms"))
    redone_ok = all(r["rows_redone"] <= r["batch_in_flight"] for r in runs)
    result.rows = [
        Row(f"a. N+1 start to first /readyz 200, backfill registered: {rows:,} rows (ours) "
            "vs an empty table (plain)", summarize(start_big), summarize(start_empty),
            start_ratio, "<= 1.2", start_ratio.median <= 1.2),
        Row("b. rows per second: `flask migrations backfill run` (ours) vs one plain "
            "UPDATE (plain)", summarize(col("runner_rows_per_s")),
            summarize(col("plain_rows_per_s")),
            ratios(col("runner_rows_per_s"), col("plain_rows_per_s")), "—", None,
            unit="rows/s", digits=0),
        Row("b. the same, the runner's batches alone (its started_at to finished_at)",
            summarize([rows / r["runner_work_seconds"] for r in runs]),
            summarize(col("plain_rows_per_s")),
            ratios([rows / r["runner_work_seconds"] for r in runs], col("plain_rows_per_s")),
            "—", None, unit="rows/s", digits=0),
        Row("b. the same: seconds for every row", summarize(col("runner_seconds")),
            summarize(col("plain_seconds")), ratios(col("runner_seconds"),
                                                    col("plain_seconds")), "—", None,
            digits=1),
        Row("c. API p99 latency: while the runner works (ours) vs steady state before it "
            "(plain)", summarize(col("during_p99_ms")), summarize(col("steady_p99_ms")),
            p99_ratio, "<= 2.0", p99_ratio.median <= 2.0, unit="ms", digits=1),
        Row("c. the same: p50 latency", summarize(col("during_p50_ms")),
            summarize(col("steady_p50_ms")),
            ratios(col("during_p50_ms"), col("steady_p50_ms")), "—", None, unit="ms",
            digits=1),
        Row("c. the same: failed requests", summarize(col("failed")), "—", "—", "0",
            sum(col("failed")) == 0, unit="", digits=0),
        Row("d. SIGKILL at a random batch, then resumed: rows changed twice or more",
            summarize(col("changed_twice")), "—", "—", "0", sum(col("changed_twice")) == 0,
            unit="", digits=0),
        Row("d. the same: rows never changed", summarize(col("changed_never")), "—", "—",
            "0", sum(col("changed_never")) == 0, unit="", digits=0),
        Row("d. the same: rows redone (ours) vs the batch in flight at the kill (plain)",
            summarize(col("rows_redone")), summarize(col("batch_in_flight")),
            summarize([r["rows_redone"] / r["batch_in_flight"] for r in runs]),
            "<= 1 batch", redone_ok, unit="", digits=0),
        Row("d. the same: seconds lost (killed run + resumed run - the unkilled run of b)",
            summarize(col("lost_seconds")), "—", "—", "—", None, digits=1),
    ]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    traffic_rate = summarize([r["traffic_runner_rows"] / r["traffic_runner_seconds"]
                              for r in runs])
    extra = [r["runner_updates"] - rows for r in runs]
    delays = ", ".join(f"{r['delay']:.1f}" for r in runs)
    committed = ", ".join(f"{r['killed_at_rows_done']:,}" for r in runs)
    result.notes = [
        f"Runner rows/s under traffic (c): {traffic_rate.fmt(0)} rows/s; requests in the "
        "steady and backfill windows of all rounds: "
        f"{sum(col('requests_steady')):,.0f} and {sum(col('requests_during')):,.0f}.",
        "The runner's time is the command's, its process start included (an interpreter "
        "and its imports); the plain UPDATE's is the statement's alone, one transaction "
        "holding every row's lock until it commits.",
        "Rows redone: widgets' n_tup_upd over the killed and the resumed run, minus the "
        "rows: updates PostgreSQL rolled back count there too. The same count over the "
        f"unkilled runs of b: {summarize(extra).fmt(0)} beyond the rows. Kill delays drawn "
        f"at random (seed {seed}): {delays} s after status showed the runner running; rows "
        f"committed at the kill: {committed}. The second run starts once the killed run's "
        "server process has rolled its batch back.",
        "Seconds lost include the second command's own start and the noise of a shared "
        "machine; rows redone is the figure the target is on.",
        f"Client, replicas, runner and PostgreSQL share the same {os.cpu_count()} cores; "
        f"load average (1, 5, 15 min) at this benchmark's start: {load_start}, at its end: "
        f"{load}.",
    ]
    result.raw = {"rows": rows, "rounds": rounds, "clients": CLIENTS, "steady": steady,
                  "seed": seed, "runs": runs}
    return result
