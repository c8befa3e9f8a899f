"""Benchmark 6: the API under load: 50 concurrent clients on a read/write mix.

One gunicorn (our gunicorn.conf.py and its defaults: 2 gthread workers of 4 threads, access
log off) on a database at head. The clients of ``bench/load.py`` run a plan of five requests
in turn: list a project's tasks, create a task, read the project, update a task's status,
read a user (three reads, two writes). The same clients then hammer ``/healthz``, which
touches no database, for scale: the ratio says what the database work costs per request.
The target is zero errors: every request answered 2xx, none refused, none dropped.
"""

from __future__ import annotations

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
from bench.load import PROCESSES, Request, load
from testkit.support import request

CLIENTS = 50


def seed(port: int) -> list[Request]:
    """One user, one project, twenty tasks; the plan that reads and writes them."""
    status, user = request(port, "POST", "/api/users", {"email": "load@example.com",
                                                        "name": "Load"})
    if status != 201:
        raise BenchError(f"could not seed a user: {status} {user}")
    _, project = request(port, "POST", "/api/projects", {"owner_id": user["id"],
                                                         "name": "Load test"})
    tasks = [request(port, "POST", "/api/tasks", {"project_id": project["id"],
                                                  "title": f"task {i}"})[1] for i in range(20)]
    return [
        ("GET", f"/api/tasks?project_id={project['id']}&per_page=20", None),
        ("POST", "/api/tasks", {"project_id": project["id"], "title": "from the load"}),
        ("GET", f"/api/projects/{project['id']}", None),
        ("PATCH", f"/api/tasks/{tasks[3]['id']}", {"status": "doing"}),
        ("GET", f"/api/users/{user['id']}", None),
    ]


def run(ctx: Context) -> BenchResult:
    seconds = 5.0 if ctx.quick else 30.0
    rounds = 1 if ctx.quick else 3
    result = BenchResult(
        key="api",
        title="6. API under load: 50 clients on a read/write mix, against /healthz",
        what=(f"One gunicorn (our gunicorn.conf.py, defaults: 2 workers x 4 threads; "
              f"ACCESS_LOG=0), database at head. {CLIENTS} concurrent kept-alive connections "
              f"from {PROCESSES} client processes, {seconds:.0f} s per run, {rounds} "
              "round(s); each round runs the API mix (3 reads, 2 writes) and then /healthz "
              "with the same clients. Median (min-max)."),
        ours_label="API mix",
        plain_label="/healthz",
    )
    url = ctx.pg.create_database()
    env = child_env(url, ACCESS_LOG="0", LOG_FORMAT="text")
    run_timed(["flask", "db", "upgrade"], ROOT, env, ctx.workdir / "prepare.log")
    port = free_port()
    log_path = ctx.workdir / "gunicorn.log"
    server = spawn([str(ROOT / "entrypoint.sh")], ROOT, dict(env, PORT=str(port)), log_path)
    runs: dict[str, list[dict[str, float]]] = {"api": [], "healthz": []}
    try:
        wait_for_200(port, "/readyz", server, log_path)
        plan = seed(port)
        load(port, plan, 1.0, connections=CLIENTS)  # warm-up: pools full, imports done
        for rnd in range(rounds):
            runs["api"].append(load(port, plan, seconds, connections=CLIENTS))
            runs["healthz"].append(load(port, "/healthz", seconds, connections=CLIENTS))
            log(f"api: round {rnd + 1}/{rounds}: API {runs['api'][-1]['rps']:.0f} req/s "
                f"({runs['api'][-1]['errors'] + runs['api'][-1]['non_200']:.0f} errors), "
                f"/healthz {runs['healthz'][-1]['rps']:.0f} req/s")
    finally:
        stop(server)
    if server.returncode not in (0, -15, None):
        raise BenchError(f"gunicorn exited {server.returncode}")
    ctx.pg.drop_database(url.database)

    def column(key: str, field: str) -> list[float]:
        return [r[field] for r in runs[key]]

    errors = [r["errors"] + r["non_200"] for r in runs["api"]]
    health_errors = [r["errors"] + r["non_200"] for r in runs["healthz"]]
    rps, health = column("api", "rps"), column("healthz", "rps")
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
    ]
    result.notes = [
        "Client and server share the same 2 cores: every figure is for the pair.",
        f"Requests answered 2xx in all API runs: {sum(column('api', 'ok')):.0f}.",
    ]
    result.raw = {"seconds_per_run": seconds, "rounds": rounds, "clients": CLIENTS,
                  "runs": runs}
    return result
