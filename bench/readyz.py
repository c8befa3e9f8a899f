"""Benchmark 5: what a readiness probe costs, against the liveness probe on the same server.

``/readyz`` reaches the database (a pooled connection, two small queries) and compares its
revisions with the scripts (parsed once per process); ``/healthz`` touches nothing. Both are
hammered on one gunicorn (our config, 2 workers, MIGRATE_ON_START=0 on a database at head)
by one client: a few processes, each with a few threads, each thread with its own
``http.client.HTTPConnection`` reused for every request (kept alive when the server allows;
gunicorn's sync workers close after each response, so the client reconnects as needed).

The client's own ceiling is measured the same way against a trivial server that answers a
fixed response and closes, as gunicorn's sync workers do: if that ceiling is far above the
``/healthz`` rate, the client is not what limits the figures.
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing as mp
import socket
import threading
import time
from typing import Any

from bench.common import (
    ROOT,
    BenchError,
    BenchResult,
    Context,
    Row,
    child_env,
    free_port,
    log,
    percentile,
    run_timed,
    spawn,
    stop,
    summarize,
    wait_for_200,
)

TARGET = 0.8
CONNECTIONS = 16
PROCESSES = 4
MAX_REQUESTS_PER_THREAD = 500_000  # a bound on the loop, far above what 10 s can reach


def _thread_loop(port: int, path: str, deadline: float, out: list[Any]) -> None:
    """Requests on one reused connection until the deadline; appends (ok, other, errors,
    latencies)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ok = other = errors = 0
    latencies: list[float] = []
    for _ in range(MAX_REQUESTS_PER_THREAD):
        started = time.perf_counter()
        if started >= deadline:
            break
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                ok += 1
            else:
                other += 1
            latencies.append(time.perf_counter() - started)
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()  # reopened by the next request
    conn.close()
    out.append((ok, other, errors, latencies))


def _client_process(port: int, path: str, threads: int, start_at: float, seconds: float,
                    results: Any) -> None:
    """One client process: ``threads`` connections, all starting at ``start_at``."""
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.perf_counter() + seconds
    out: list[Any] = []
    workers = [threading.Thread(target=_thread_loop, args=(port, path, deadline, out))
               for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    ok = sum(o[0] for o in out)
    other = sum(o[1] for o in out)
    errors = sum(o[2] for o in out)
    # Latencies are thinned to at most 20,000 per process: enough for a p99.
    latencies = [lat for o in out for lat in o[3]]
    step = max(1, len(latencies) // 20_000)
    results.put((ok, other, errors, latencies[::step]))


def load(port: int, path: str, seconds: float, connections: int = CONNECTIONS,
         processes: int = PROCESSES) -> dict[str, float]:
    """Hammer ``path`` for ``seconds`` with ``connections`` connections; requests per second
    (200s only), errors, p50 and p99 latency."""
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    per_process = [connections // processes + (1 if i < connections % processes else 0)
                   for i in range(processes)]
    start_at = time.time() + 0.3  # every process starts together, after all have forked
    procs = [ctx.Process(target=_client_process,
                         args=(port, path, n, start_at, seconds, results), daemon=True)
             for n in per_process if n]
    for proc in procs:
        proc.start()
    gathered = [results.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join(10)
    ok = sum(g[0] for g in gathered)
    latencies = [lat for g in gathered for lat in g[3]]
    return {"rps": ok / seconds, "ok": ok, "non_200": sum(g[1] for g in gathered),
            "errors": sum(g[2] for g in gathered),
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}


_BODY = b'{"status":"ok"}\n'
_FIXED = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
          + str(len(_BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + _BODY)


def _trivial_worker(listener: socket.socket, seconds: float) -> None:
    """A sync worker with no app: accept, read the request, send a fixed answer, close."""
    listener.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            else:
                conn.sendall(_FIXED)


def client_ceiling(seconds: float, workers: int = 2) -> dict[str, float]:
    """The client against ``workers`` processes that accept, answer and close like gunicorn's
    sync workers but run no app: the most this client can see from such a server here."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    servers = [mp.get_context("fork").Process(target=_trivial_worker,
                                              args=(listener, seconds + 5), daemon=True)
               for _ in range(workers)]
    for server in servers:
        server.start()
    listener.close()
    try:
        return load(port, "/", seconds)
    finally:
        for server in servers:
            server.terminate()
            server.join(5)


def run(ctx: Context) -> BenchResult:
    seconds = 3.0 if ctx.quick else 10.0
    rounds = 2 if ctx.quick else 3
    result = BenchResult(
        key="readyz",
        title="5. Readiness cost: /readyz against /healthz, requests per second",
        what=(f"One gunicorn (our gunicorn.conf.py, 2 sync workers, MIGRATE_ON_START=0, "
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
        f"and closes like a sync worker (same client, same {CONNECTIONS} connections, "
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
        "pool checkout, incl. pre-ping (SELECT 1)": ms("sqlalchemy/pool/base.py", "_checkout"),
        "SQL statements (psycopg2 execute)": sum(
            v[3] for k, v in raw.items() if k[2] == "<method 'execute' of "
            "'psycopg2.extensions.cursor' objects>") / count * 1000,
        "schema_status (queries + comparing revisions)":
            ms("backend/lifecycle/revisions.py", "schema_status"),
        "pending_revisions (walking the scripts)":
            ms("backend/lifecycle/revisions.py", "pending_revisions"),
        "edited_revisions (checksum comparison)":
            ms("backend/lifecycle/checksums.py", "edited_revisions"),
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
