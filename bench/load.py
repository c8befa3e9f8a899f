"""Load from concurrent HTTP clients: several processes, each with several threads, each
thread on its own kept-alive ``http.client.HTTPConnection`` (reopened when the server closes
it). Each request of a plan may carry headers of its own (a user's ``Authorization``), and
a plan may carry headers every request sends. The client's own ceiling is measured against a
trivial server, so a reader can tell whether the client limits the figures.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing as mp
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from bench.common import percentile

CONNECTIONS = 16
PROCESSES = 4
OK = (200, 201, 204)


class Request(NamedTuple):
    """One request of a plan: a plan is a list of them, run in turn. A plain
    ``(method, path, body)`` tuple is one too, without headers of its own."""

    method: str
    path: str
    body: Any = None  # sent as JSON, with Content-Type: application/json
    headers: Mapping[str, str] | None = None


def encode(plan: Sequence[Sequence[Any]], headers: Mapping[str, str] | None = None
           ) -> list[tuple[str, str, bytes | None, dict[str, str]]]:
    """Each request as sent: (method, path, JSON bytes or None, headers), the plan's
    ``headers`` first and the request's own over them."""
    encoded = []
    for item in plan:
        req = Request(*item)
        body = None if req.body is None else json.dumps(req.body).encode()
        sent = {**(headers or {}), **(req.headers or {})}
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        encoded.append((req.method, req.path, body, sent))
    return encoded

MAX_REQUESTS_PER_THREAD = 500_000  # a bound on the loop, far above what 10 s can reach


def _thread_loop(port: int, encoded: list[tuple[str, str, bytes | None, dict[str, str]]],
                 deadline: float, out: list[Any]) -> None:
    """The plan's requests (as :func:`encode` gives them) in turn on one reused connection
    until the deadline; appends (ok, other, errors, latencies)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ok = other = errors = 0
    latencies: list[float] = []
    for i in range(MAX_REQUESTS_PER_THREAD):
        started = time.perf_counter()
        if started >= deadline:
            break
        method, path, body, headers = encoded[i % len(encoded)]
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status in OK:
                ok += 1
            else:
                other += 1
            latencies.append(time.perf_counter() - started)
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()  # reopened by the next request
    conn.close()
    out.append((ok, other, errors, latencies))


def _client_process(port: int, encoded: list[Any], threads: int, start_at: float,
                    seconds: float, results: Any) -> None:
    """One client process: ``threads`` connections, all starting at ``start_at``."""
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.perf_counter() + seconds
    out: list[Any] = []
    workers = [threading.Thread(target=_thread_loop, args=(port, encoded, deadline, out))
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


def load(port: int, path: str | Sequence[Sequence[Any]], seconds: float,
         connections: int = CONNECTIONS, processes: int = PROCESSES,
         headers: Mapping[str, str] | None = None) -> dict[str, float]:
    """Hammer ``path`` (a GET) or a plan of requests (:class:`Request`) for ``seconds`` with
    ``connections`` connections, every request sending ``headers`` besides its own;
    requests per second (successes only), errors, p50 and p99 latency."""
    plan = [Request("GET", path)] if isinstance(path, str) else path
    encoded = encode(plan, headers)  # once, before the clocks start
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    per_process = [connections // processes + (1 if i < connections % processes else 0)
                   for i in range(processes)]
    start_at = time.time() + 0.3  # every process starts together, after all have forked
    procs = [ctx.Process(target=_client_process,
                         args=(port, encoded, n, start_at, seconds, results), daemon=True)
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


