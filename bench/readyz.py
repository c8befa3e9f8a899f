"""Benchmark 5: what a readiness probe costs, against the liveness probe on the same server.

``/readyz`` reaches the database (one short statement on its own connection) and compares
its revisions with the scripts (parsed once per process); ``/healthz`` touches nothing. Both
are hammered on one gunicorn (our config, 2 workers, MIGRATE_ON_START=0 on a database at
head) by the client of ``bench/load.py``, whose own ceiling is measured too.
"""

from __future__ import annotations

import time

from bench.common import (
    ROOT,
    BenchError,
    BenchResult,
    Context,
    Row,
    child_env,
    free_port,
    log,
    run_timed,
    spawn,
    stop,
    summarize,
    wait_for_200,
)
from bench.load import CONNECTIONS, PROCESSES, client_ceiling, load

TARGET = 0.8
def run(ctx: Context) -> BenchResult:
    seconds = 3.0 if ctx.quick else 10.0
    rounds = 2 if ctx.quick else 3
    result = BenchResult(
        key="readyz",
        title="5. Readiness cost: /readyz against /healthz, requests per second",
        what=(f"One gunicorn (our gunicorn.conf.py, 2 workers, MIGRATE_ON_START=0, "
              f"database at head), {CONNECTIONS} concurrent connections from {PROCESSES} "
              f"client processes, {seconds:.0f} s per endpoint per round, {rounds} rounds "
              "alternating which endpoint goes first. Median (min-max)."),
        ours_label="/readyz",
        plain_label="/healthz",
    )
    url = ctx.pg.create_database()
    env = child_env(url, WEB_CONCURRENCY="2", MIGRATE_ON_START="0", LOG_FORMAT="text")
    run_timed(["flask", "db", "upgrade"], ROOT, env, ctx.workdir / "prepare.log")
    port = free_port()
    log_path = ctx.workdir / "gunicorn.log"
    server = spawn(["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"], ROOT,
                   dict(env, PORT=str(port)), log_path)
    runs: dict[str, list[dict[str, float]]] = {"/readyz": [], "/healthz": []}
    try:
        wait_for_200(port, "/readyz", server, log_path)
        load(port, "/readyz", 1.0)  # warm-up: pooled connections, first-request imports
        for rnd in range(rounds):
            order = ["/healthz", "/readyz"] if rnd % 2 == 0 else ["/readyz", "/healthz"]
            for path in order:
                runs[path].append(load(port, path, seconds))
            log(f"readyz: round {rnd + 1}/{rounds}: " + ", ".join(
                f"{p} {runs[p][-1]['rps']:.0f} req/s" for p in ("/readyz", "/healthz")))
    finally:
        stop(server)
    if server.returncode not in (0, -15, None):
        raise BenchError(f"gunicorn exited {server.returncode}")
    log("readyz: measuring the client's own ceiling")
    ceiling = client_ceiling(seconds)
    ctx.pg.drop_database(url.database)

    ready = [r["rps"] for r in runs["/readyz"]]
    health = [r["rps"] for r in runs["/healthz"]]
    ratio = summarize([r / h for r, h in zip(ready, health, strict=True)])
    result.rows = [
        Row("requests per second", summarize(ready), summarize(health), ratio,
            f">= {TARGET:.1f}", ratio.median >= TARGET, unit="req/s", digits=0),
        Row("p50 latency", summarize([r["p50_ms"] for r in runs["/readyz"]]),
            summarize([r["p50_ms"] for r in runs["/healthz"]]), "—", "—", None,
            unit="ms", digits=1),
        Row("p99 latency", summarize([r["p99_ms"] for r in runs["/readyz"]]),
            summarize([r["p99_ms"] for r in runs["/healthz"]]), "—", "—", None,
            unit="ms", digits=1),
    ]
    failures = {p: sum(r["errors"] + r["non_200"] for r in rs) for p, rs in runs.items()}
    result.notes = [
        f"Client ceiling: {ceiling['rps']:.0f} req/s against a trivial server that answers "
        f"and closes (same client, same {CONNECTIONS} connections, "
        f"{seconds:.0f} s), {ceiling['rps'] / max(health):.1f}x the best /healthz figure"
        + (": the client is not the bottleneck." if ceiling['rps'] > 1.5 * max(health)
           else ": close to the measured rates, so the client may be part of the limit."),
        "Client and server share the same cores: every figure is for the pair.",
        f"Errors or non-200 answers: /readyz {failures['/readyz']}, "
        f"/healthz {failures['/healthz']}.",
    ]
    result.raw = {"seconds_per_run": seconds, "rounds": rounds, "runs": runs,
                  "client_ceiling": ceiling}
    if ratio.median < TARGET:
        result.extra_md = explain(ctx)
    return result


def explain(ctx: Context) -> str:
    """Where one ``/readyz`` spends its time, in-process (Flask's test client, no HTTP), as
    against ``/healthz``: per-request cost, SQL statements per request, and a cProfile split."""
    import cProfile
    import pstats

    from backend import create_app
    from backend.config import Config

    log("readyz: explaining the miss in-process")
    url = ctx.pg.create_database()
    run_timed(["flask", "db", "upgrade"], ROOT, child_env(url), ctx.workdir / "explain.log")
    app = create_app(Config(database_url=url))
    client = app.test_client()
    count = 300 if ctx.quick else 1000
    for path in ("/healthz", "/readyz"):
        client.get(path)  # warm: the scripts' parse, pooled connection

    def timed(path: str) -> float:
        started = time.perf_counter()
        for _ in range(count):
            if client.get(path).status_code != 200:
                raise BenchError(f"{path} did not answer 200 in-process")
        return (time.perf_counter() - started) / count * 1000

    per_request = {path: timed(path) for path in ("/healthz", "/readyz")}
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(count):
        client.get("/readyz")
    profile.disable()
    raw = pstats.Stats(profile).stats  # type: ignore[attr-defined]

    def ms(pattern_file: str, name: str) -> float:
        total = sum(v[3] for k, v in raw.items() if k[0].endswith(pattern_file) and k[2] == name)
        return total / count * 1000

    buckets = {
        "whole request (Flask test client)": ms("flask/testing.py", "open"),
        "the view (readyz)": ms("backend/health.py", "readyz"),
        "pool checkout (idle socket check)": ms("sqlalchemy/pool/base.py", "_checkout"),
        "SQL statements (psycopg2 execute)": sum(
            v[3] for k, v in raw.items() if k[2] == "<method 'execute' of "
            "'psycopg2.extensions.cursor' objects>") / count * 1000,
        "schema_status (queries + comparing revisions)":
            ms("backend/migrate/revisions.py", "schema_status"),
        "pending_revisions (walking the scripts)":
            ms("backend/migrate/revisions.py", "pending_revisions"),
        "edited_revisions (checksum comparison)":
            ms("backend/migrate/checksums.py", "edited_revisions"),
    }
    statements = sum(v[1] for k, v in raw.items() if k[2] == "<method 'execute' of "
                     "'psycopg2.extensions.cursor' objects>") / count
    from backend.extensions import db

    with app.app_context():
        db.engine.dispose()
    ctx.pg.drop_database(url.database)
    lines = [
        "### Where /readyz spends its time (in-process, no HTTP)", "",
        f"{count} requests through Flask's test client: /healthz {per_request['/healthz']:.2f} "
        f"ms, /readyz {per_request['/readyz']:.2f} ms per request; {statements:.1f} SQL "
        "statements per /readyz. One more pass under cProfile (which inflates Python code):",
        "", "| where | ms per /readyz (profiled) |", "|---|---|",
        *[f"| {name} | {value:.3f} |" for name, value in buckets.items()], "",
    ]
    return "\n".join(lines)
