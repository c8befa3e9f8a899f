"""Benchmark 8: a rolling deploy under load, from N to N+1 and back to N.

testkit/rollout.py's harness, with more clients and rows than the suite uses, through the
sequence expand -> background backfill -> contract: two replicas of N (the fixture
application, ``widgets``) serve a read/write mix; a replica of N+1 (three expand revisions
on ``widgets``: a column, a concurrent index, and a backfill registered as a background
migration) starts, migrates and becomes ready; ``flask migrations post-deploy`` is tried
once and refused (the backfill is not done); ``flask migrations backfill run`` starts then
and works through the table while the N replicas leave rotation and stop one by one and a
second N+1 replica joins; once N is gone and the runner is done, ``flask migrations
post-deploy`` applies N+1's contract (a CHECK added NOT VALID, then validated) under
traffic; then N starts again on the contracted schema (a code rollback).
Reported: failed requests through all of it (target 0), latency during the deploy against
steady state before it (target: p99 within 2x), seconds from N+1's start to its first ready
answer (its migration included: before the backfill became a background migration it ran
there, a median of 70 s at 500,000 rows), the runner's time and the post-deploy step's.
"""

from __future__ import annotations

import os

from bench.common import (
    BenchError,
    BenchResult,
    Context,
    Row,
    child_env,
    log,
    percentile,
    run_timed,
    summarize,
)
from testkit.rollout import (
    Fleet,
    Traffic,
    fill_widgets,
    next_release,
    release,
    roll,
    serve_release,
)

CLIENTS = 16
STEADY = 5.0


def _latencies(traffic: Traffic, start: float, end: float) -> list[float]:
    return [took for when, outcome, took in traffic.outcomes
            if start <= when < end and outcome == "ok"]


def _one(ctx: Context, rows: int, rnd: int) -> dict[str, float]:
    """One deploy and rollback on a fresh database of ``rows`` widgets."""
    url = ctx.pg.create_database()
    workdir = ctx.workdir / f"round{rnd}"
    workdir.mkdir()
    current, newer = release(workdir / "n"), next_release(workdir / "next")
    run_timed(["flask", "db", "upgrade"], current, child_env(url), workdir / "prepare.log")
    fill_widgets(url, rows)
    fleet = Fleet(url, workdir)
    try:
        serve_release(fleet, current)
        with Traffic(fleet, clients=CLIENTS) as traffic:
            rollout = roll(fleet, current, newer, steady=STEADY)
    finally:
        fleet.close()
    ctx.pg.drop_database(url.database)
    ran = rollout.backfill
    if ran is None or ran.exit_code != 0:
        raise BenchError("N+1's backfill did not complete during the deploy:\n"
                         + (ran.log.read_text()[-2000:] if ran else "it never started"))
    early = rollout.early_post_deploy
    if early is None or early.exit_code != 1:
        raise BenchError("post-deploy before the backfill was not refused:\n"
                         + (early.output[-2000:] if early else "it never ran"))
    post = rollout.post_deploy
    if post is None or post.exit_code != 0:
        raise BenchError("N+1's contract was not applied after the deploy:\n"
                         + (post.output[-2000:] if post else "post-deploy never ran"))
    start, end = rollout.deploy_start, rollout.deploy_end
    steady = _latencies(traffic, start - STEADY, start)
    during = _latencies(traffic, start, end)
    return {"failed": len(traffic.failures()), "requests": len(traffic.outcomes),
            "to_ready": rollout.to_ready, "deploy_seconds": end - start,
            "steady_p50_ms": percentile(steady, 50) * 1000,
            "steady_p99_ms": percentile(steady, 99) * 1000,
            "deploy_p50_ms": percentile(during, 50) * 1000,
            "deploy_p99_ms": percentile(during, 99) * 1000,
            "left_rotation_early": len(fleet.not_ready_while_serving),
            "backfill_seconds": ran.ended - ran.started,
            "backfill_past_deploy": max(0.0, ran.ended - end),
            "post_deploy_seconds": post.ended - post.started}


def run(ctx: Context) -> BenchResult:
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = 100_000 if ctx.quick else 500_000
    rounds = 1 if ctx.quick else 3
    result = BenchResult(
        key="deploy",
        title="8. Rolling deploy N -> N+1 -> N under load",
        what=(f"Two replicas of N (1 worker x 4 threads each), {CLIENTS} clients on a "
              f"read/write mix sent only to ready replicas, {rows:,} widgets; N+1's three "
              "expand revisions run on start (a column, a concurrent index, a backfill "
              "registered as a background migration); once N+1's first replica is ready, "
              "`flask migrations post-deploy` is refused (the backfill is not done) and "
              "`flask migrations backfill run` works through the table while the N replicas "
              "leave rotation and stop one by one; once N is gone and the runner is done, "
              "`flask migrations post-deploy` applies N+1's contract (a CHECK added NOT "
              "VALID, then validated); then N starts again on the contracted schema. "
              f"{rounds} round(s); median (min-max). Plain here is the steady state before "
              "the deploy."),
        ours_label="during the deploy",
        plain_label="steady state",
    )
    runs = []
    for rnd in range(rounds):
        runs.append(_one(ctx, rows, rnd))
        log(f"deploy: round {rnd + 1}/{rounds}: {runs[-1]['failed']} failed of "
            f"{runs[-1]['requests']}, N+1 ready in {runs[-1]['to_ready']:.1f}s, p99 "
            f"{runs[-1]['deploy_p99_ms']:.0f} ms vs {runs[-1]['steady_p99_ms']:.0f} ms steady, "
            f"backfill {runs[-1]['backfill_seconds']:.1f}s, "
            f"post-deploy {runs[-1]['post_deploy_seconds']:.1f}s")

    def col(key: str) -> list[float]:
        return [r[key] for r in runs]

    p99_ratio = summarize([d / s for d, s in zip(col("deploy_p99_ms"), col("steady_p99_ms"),
                                                 strict=True)])
    result.rows = [
        Row("failed requests", summarize(col("failed")), "—", "—", "0",
            sum(col("failed")) == 0, unit="", digits=0),
        Row("p50 latency", summarize(col("deploy_p50_ms")), summarize(col("steady_p50_ms")),
            summarize([d / s for d, s in zip(col("deploy_p50_ms"), col("steady_p50_ms"),
                                             strict=True)]), "—", None, unit="ms", digits=1),
        Row("p99 latency", summarize(col("deploy_p99_ms")), summarize(col("steady_p99_ms")),
            p99_ratio, "<= 2.0", p99_ratio.median <= 2.0, unit="ms", digits=1),
        Row("N+1 start to ready (migration included)", summarize(col("to_ready")), "—", "—",
            "—", None),
        Row("whole deploy (N+1 start to last N stopped)", summarize(col("deploy_seconds")),
            "—", "—", "—", None),
        Row("N+1's backfill: `flask migrations backfill run`, start to exit, beside the deploy",
            summarize(col("backfill_seconds")), "—", "—", "—", None),
        Row("N+1's contract: `flask migrations post-deploy`, start to exit, under traffic",
            summarize(col("post_deploy_seconds")), "—", "—", "—", None),
    ]
    result.notes = [
        f"Requests sent in all rounds: {sum(col('requests')):,.0f}; N replicas that left "
        f"rotation before they were stopped: {sum(col('left_rotation_early')):.0f}.",
        "The runner starts once N+1's first replica answers ready and post-deploy has been "
        "refused; it ran past the last N's stop by "
        f"{summarize(col('backfill_past_deploy')).fmt(1, 's')}, so the latency 'during the "
        "deploy' covers the backfill where they overlapped. The contract comes after that "
        "window; the failed requests count it and the rollback too.",
        f"Client, replicas, runner and PostgreSQL share the same {os.cpu_count()} cores; "
        f"load average (1, 5, 15 min) at this benchmark's start: {load_start}, at its end: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
    ]
    result.raw = {"rows": rows, "rounds": rounds, "clients": CLIENTS, "runs": runs}
    return result
