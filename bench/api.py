"""Benchmark 6: the API under load: 50 concurrent clients on a read/write mix.

One gunicorn (our gunicorn.conf.py and its defaults: 2 gthread workers of 4 threads, access
log off) on a database at head. The seed signs a user up through the API, which hands out
its token, and every request of the plan carries it (``Authorization: Bearer``), so each
one pays for the token's lookup as a client's would. The clients of ``bench/load.py`` run a
plan of five requests in turn: list the user's project's tasks, create a task, read the
project, update a task's status, read the user (three reads, two writes). The same clients
then hammer ``/healthz``, which touches no database, for scale: the ratio says what the
database work costs per request. The target is zero errors: every request answered 2xx,
none refused, none dropped.

Then what the metrics cost: the same mix against the same server (metrics on, the default)
and against a second one started with ``METRICS=off`` (nothing recorded, ``/metrics``
answers 404), in interleaved runs (on, off, on, off ...), each from the seeded rows. The
target is metrics-on throughput at least 0.95 of metrics-off (the median of the per-pair
ratios).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from bench.common import (
    ROOT,
    BenchError,
    BenchResult,
    Context,
    Row,
    child_env,
    free_port,
    http_status,
    log,
    ratios,
    run_timed,
    spawn,
    sql,
    stop,
    summarize,
    wait_for_200,
)
from bench.load import PROCESSES, Request, load
from testkit.support import request

CLIENTS = 50
METRICS_TARGET = 0.95


@dataclass
class Seed:
    """The plan, the headers every request of it sends, and the seeded tasks (what a reset
    goes back to)."""

    plan: list[Request]
    headers: dict[str, str]
    task_ids: list[int]


def seed(port: int) -> Seed:
    """One user (and its token), one project, twenty tasks; the plan that reads and writes
    them, with the token."""
    status, user = request(port, "POST", "/api/users", {"email": "load@example.com",
                                                        "name": "Load"})
    if status != 201 or not isinstance(user, dict) or not user.get("token"):
        raise BenchError(f"could not seed a user: {status} {user}")
    headers = {"Authorization": f"Bearer {user['token']}"}
    status, project = request(port, "POST", "/api/projects", {"name": "Load test"},
                              headers=headers)
    if status != 201 or not isinstance(project, dict):
        raise BenchError(f"could not seed a project: {status} {project}")
    tasks = []
    for i in range(20):
        status, task = request(port, "POST", "/api/tasks",
                               {"project_id": project["id"], "title": f"task {i}"},
                               headers=headers)
        if status != 201 or not isinstance(task, dict):
            raise BenchError(f"could not seed a task: {status} {task}")
        tasks.append(task)
    plan = [
        Request("GET", f"/api/tasks?project_id={project['id']}&per_page=20"),
        Request("POST", "/api/tasks", {"project_id": project["id"], "title": "from the load"}),
        Request("GET", f"/api/projects/{project['id']}"),
        Request("PATCH", f"/api/tasks/{tasks[3]['id']}", {"status": "doing"}),
        Request("GET", f"/api/users/{user['id']}"),
    ]
    return Seed(plan, headers, [task["id"] for task in tasks])


def reset(url: URL, rows: Seed) -> None:
    """Back to the seeded rows, so that every metrics run lists and counts the same tasks:
    the mix's inserts gone (and vacuumed away), the updated task as it was."""
    sql(url, "DELETE FROM tasks WHERE id > %s", (rows.task_ids[-1],))
    sql(url, "UPDATE tasks SET status = 'todo' WHERE id = %s", (rows.task_ids[3],))
    sql(url, "VACUUM (ANALYZE) tasks")


def start_server(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, int]:
    """The entrypoint on a port of its own, once it is ready."""
    port = free_port()
    server = spawn([str(ROOT / "entrypoint.sh")], ROOT, dict(env, PORT=str(port)), log_path)
    try:
        wait_for_200(port, "/readyz", server, log_path)
    except BaseException:
        stop(server)
        raise
    return server, port


def run(ctx: Context) -> BenchResult:
    seconds = 5.0 if ctx.quick else 30.0
    rounds = 1 if ctx.quick else 3
    # The metrics pairs: shorter runs, more of them, each pair run back to back.
    pair_seconds = 5.0 if ctx.quick else 10.0
    pairs = 1 if ctx.quick else 4
    result = BenchResult(
        key="api",
        title="6. API under load: 50 clients on a read/write mix, against /healthz",
        what=(f"One gunicorn (our gunicorn.conf.py, defaults: 2 workers x 4 threads; "
              f"ACCESS_LOG=0), database at head. {CLIENTS} concurrent kept-alive connections "
              f"from {PROCESSES} client processes, each request with the seeded user's "
              f"bearer token, {seconds:.0f} s per run, {rounds} round(s); each round runs "
              "the API mix (3 reads, 2 writes) and then /healthz with the same clients. "
              f"Then {pairs} pair(s) of {pair_seconds:.0f} s runs of the mix, from the "
              "seeded rows: this server (metrics on, the default) in the ours column, then a "
              "second one started with METRICS=off in the plain column. Median (min-max)."),
        ours_label="API mix (last rows: metrics on)",
        plain_label="/healthz (last rows: METRICS=off)",
    )
    url = ctx.pg.create_database()
    # /metrics on the service's own port (no METRICS_PORT), where the checks below ask.
    env = child_env(url, ACCESS_LOG="0", LOG_FORMAT="text", METRICS_PORT="")
    run_timed(["flask", "db", "upgrade"], ROOT, env, ctx.workdir / "prepare.log")
    runs: dict[str, list[dict[str, float]]] = {"api": [], "healthz": [], "metrics_on": [],
                                               "metrics_off": []}
    servers: list[subprocess.Popen] = []
    try:
        # Metrics on is the default; said here so that a METRICS in the caller's
        # environment cannot turn them off unseen.
        server, port = start_server(dict(env, METRICS="on"), ctx.workdir / "gunicorn.log")
        servers.append(server)
        rows = seed(port)
        plan, headers = rows.plan, rows.headers
        load(port, plan, 1.0, connections=CLIENTS, headers=headers)  # warm-up
        for rnd in range(rounds):
            runs["api"].append(load(port, plan, seconds, connections=CLIENTS, headers=headers))
            runs["healthz"].append(load(port, "/healthz", seconds, connections=CLIENTS))
            log(f"api: round {rnd + 1}/{rounds}: API {runs['api'][-1]['rps']:.0f} req/s "
                f"({runs['api'][-1]['errors'] + runs['api'][-1]['non_200']:.0f} errors), "
                f"/healthz {runs['healthz'][-1]['rps']:.0f} req/s")

        off, off_port = start_server(dict(env, METRICS="off"),
                                     ctx.workdir / "gunicorn-metrics-off.log")
        servers.append(off)
        # Each side must be what its column says, or the ratio measures nothing.
        for name, side_port, expected in (("metrics on", port, 200),
                                          ("METRICS=off", off_port, 404)):
            got = http_status(side_port, "/metrics", timeout=10)
            if got != expected:
                raise BenchError(f"{name}: /metrics answered {got}, not {expected}; is the "
                                 "METRICS setting in backend/config.py?")
        load(off_port, plan, 1.0, connections=CLIENTS, headers=headers)  # warm-up, as above
        for pair in range(pairs):
            for key, side_port in (("metrics_on", port), ("metrics_off", off_port)):
                reset(url, rows)
                runs[key].append(load(side_port, plan, pair_seconds, connections=CLIENTS,
                                      headers=headers))
            log(f"api: metrics pair {pair + 1}/{pairs}: on "
                f"{runs['metrics_on'][-1]['rps']:.0f} req/s, off "
                f"{runs['metrics_off'][-1]['rps']:.0f} req/s")
    finally:
        for server in servers:
            stop(server)
    for server in servers:
        if server.returncode not in (0, -15, None):
            raise BenchError(f"gunicorn exited {server.returncode}")
    ctx.pg.drop_database(url.database)

    def column(key: str, field: str) -> list[float]:
        return [r[field] for r in runs[key]]

    def failures(key: str) -> list[float]:
        return [r["errors"] + r["non_200"] for r in runs[key]]

    errors, health_errors = failures("api"), failures("healthz")
    metric_errors = failures("metrics_on") + failures("metrics_off")
    rps, health = column("api", "rps"), column("healthz", "rps")
    on, off_rps = column("metrics_on", "rps"), column("metrics_off", "rps")
    metrics_ratio = ratios(on, off_rps)
    result.rows = [
        Row("requests per second", summarize(rps), summarize(health),
            summarize([a / h for a, h in zip(rps, health, strict=True)]), "—", None,
            unit="req/s", digits=0),
        Row("p50 latency", summarize(column("api", "p50_ms")),
            summarize(column("healthz", "p50_ms")), "—", "—", None, unit="ms", digits=1),
        Row("p99 latency", summarize(column("api", "p99_ms")),
            summarize(column("healthz", "p99_ms")), "—", "—", None, unit="ms", digits=1),
        Row("errors (non-2xx or failed)", summarize(errors), summarize(health_errors), "—",
            "0", sum(errors) == 0, unit="", digits=0),
        Row("API mix, metrics on / METRICS=off: requests per second", summarize(on),
            summarize(off_rps), metrics_ratio, f">= {METRICS_TARGET:.2f}",
            metrics_ratio.median >= METRICS_TARGET, unit="req/s", digits=0),
        Row("API mix, metrics on / METRICS=off: p99 latency",
            summarize(column("metrics_on", "p99_ms")),
            summarize(column("metrics_off", "p99_ms")),
            ratios(column("metrics_on", "p99_ms"), column("metrics_off", "p99_ms")),
            unit="ms", digits=1),
        Row("API mix, metrics on / METRICS=off: errors", summarize(failures("metrics_on")),
            summarize(failures("metrics_off")), "—", "0", sum(metric_errors) == 0, unit="",
            digits=0),
    ]
    medians = summarize(on).median / summarize(off_rps).median
    result.notes = [
        "Client and server share the same 2 cores: every figure is for the pair.",
        "Every API request carries the seeded user's token (Authorization: Bearer), looked "
        "up by its SHA-256 on each request.",
        f"Requests answered 2xx in all API runs: {sum(column('api', 'ok')):.0f}; in the "
        f"metrics runs: on {sum(column('metrics_on', 'ok')):.0f}, off "
        f"{sum(column('metrics_off', 'ok')):.0f}.",
        "Metrics rows: the METRICS=off server starts after the rounds above, on the same "
        "database; then both stay up and the load goes to one at a time, metrics on first "
        "in each pair, every run from the seeded rows. The "
        "ratio is the median of the per-pair ratios; the ratio of the median throughputs "
        f"is {medians:.2f}.",
    ]
    result.raw = {"seconds_per_run": seconds, "rounds": rounds, "clients": CLIENTS,
                  "metrics_seconds_per_run": pair_seconds, "metrics_pairs": pairs,
                  "runs": runs}
    return result
