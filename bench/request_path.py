"""Benchmark 10: the request path, ours against a plain Flask app on the same database.

The service's promise is that its safety (a checked connection at checkout, a deadline on
every database round trip, quick 503s in an outage, request bodies read in time, masked log
lines) costs a request nothing a user would notice. So the project runs as a user starts it
(``entrypoint.sh`` with ``DATABASE_URL`` and nothing else: gunicorn.conf.py's defaults,
access log on) beside ``bench/plain_app/``: stock Flask + Flask-SQLAlchemy + gunicorn
(gthread, the same workers and threads, default pool, no pre-ping, access log on in a
comparable format) serving the same routes with the same JSON, on the same database and
rows. Every API request carries its user's bearer token, and the plain app checks it the
same way ours does: a ``before_request`` reads ``Authorization: Bearer``, hashes the token
with SHA-256 and looks the user's id up by the indexed ``users.token_hash``, or answers 401;
its queries keep to that user's rows as ours do, and its /api answers carry the same
``nosniff`` and ``no-store`` headers. The seed gives every user a token of its own, set in
SQL. Both servers stay up for the whole benchmark; the load goes to one at a time.

Three scenarios, each run on ours and then on plain, round after round: ``GET
/api/users/<id>`` over 1,000 users, each read with that user's own token; the read/write
mix of ``bench/api.py`` with the project owner's token (list a project's tasks, create a
task, read the project, update a task, read the owner: 3 reads, 2 writes); ``/healthz``
for scale. Per run: requests per second, p50/p99 latency, the workers' CPU per request
(utime + stime from ``/proc/<pid>/stat``) and their resident size after it. Before every
mix run the tasks it created are deleted and the table vacuumed, so every run starts from
the same rows. Before measuring, both servers are asked the same requests and must answer
the same status, JSON and security headers, and refuse alike a request without a token or
with an unknown one (401) and one for another user's rows (404), so a difference in speed
is never a difference in work. A round starts once the machine is quiet, and every run
reports the CPU that other processes took meanwhile: on a shared machine that is what
tells a real difference from a disturbed round. Then one in-process profile (Flask's test
client, no HTTP, the same tokens) says where a read's time goes on each side, with the cost
of an access-log line and of a full garbage collection over each app's heap.
"""

from __future__ import annotations

import cProfile
import hashlib
import http.client
import json
import logging
import os
import pstats
import random
import re
import runpy
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any
from unittest import mock

import psycopg2
from sqlalchemy.engine import URL

from backend.config import Config
from bench.common import (
    PYTHON,
    ROOT,
    VENV_BIN,
    BenchError,
    BenchResult,
    Context,
    Row,
    child_env,
    free_port,
    log,
    ratios,
    run_timed,
    spawn,
    sql,
    stop,
    summarize,
    tail,
    url_text,
    wait_for_200,
)
from bench.load import PROCESSES, Request, load

CLIENTS = 50
USERS = 1_000
TASKS = 20
THROUGHPUT_TARGET = 0.95
P99_TARGET = 1.1
PLAIN_DIR = ROOT / "bench" / "plain_app"
TICKS = os.sysconf("SC_CLK_TCK")
# Ours' defaults, which the plain side copies: the figures compare like with like only
# while both run the same number of workers and threads.
WORKERS = Config.__dataclass_fields__["web_concurrency"].default
THREADS = Config.__dataclass_fields__["threads"].default

SCENARIOS = {  # key: label in the table (in backticks: a bare <id> reads as an HTML tag)
    "get": "`GET /api/users/<id>`",
    "mix": "read/write mix (3 reads, 2 writes)",
    "healthz": "`/healthz`",
}
TARGETED = ("get", "mix")


# --- the servers ------------------------------------------------------------------------------

@dataclass
class Server:
    """One gunicorn under test: its master, port and log."""

    name: str
    proc: Popen
    port: int
    log_path: Path

    def workers(self) -> list[int]:
        """The master's children: gunicorn's workers (no other process forks from it)."""
        return children_of(self.proc.pid)


def children_of(parent: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process so far (fields 14 and 15 of /proc/<pid>/stat); 0 for
    one that has gone (a PostgreSQL backend that ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_ours(url: URL, workdir: Path) -> Server:
    """As a user starts it: the entrypoint with DATABASE_URL (and the port), defaults for
    everything else, so the access log is on and the workers and threads are the shipped
    ones."""
    port = free_port()
    log_path = workdir / "ours.log"
    proc = spawn([str(ROOT / "entrypoint.sh")], ROOT, child_env(url, PORT=str(port)), log_path)
    server = Server("ours", proc, port, log_path)
    try:
        wait_for_200(port, "/readyz", proc, log_path)
    except BaseException:
        stop(proc)
        raise
    return server


def start_plain(url: URL, workdir: Path) -> Server:
    """Stock gunicorn on the plain app, with ours' workers and threads."""
    port = free_port()
    log_path = workdir / "plain.log"
    cmd = [str(VENV_BIN / "gunicorn"), "--config", str(PLAIN_DIR / "gunicorn.conf.py"),
           "--bind", f"0.0.0.0:{port}", "--workers", str(WORKERS), "--threads", str(THREADS),
           "bench.plain_app.app:create_app()"]
    proc = spawn(cmd, ROOT, child_env(url), log_path)
    server = Server("plain", proc, port, log_path)
    try:
        wait_for_200(port, "/healthz", proc, log_path)
    except BaseException:
        stop(proc)
        raise
    return server


# --- the machine's other work ----------------------------------------------------------------
# The machine may be shared: a test suite starting mid-run takes CPU from one side only and
# tilts that round's ratio. So a round starts once the machine is quiet (or a limit has
# passed), and every run reports the CPU taken by processes that are none of ours.

QUIET = 0.25  # the share of all CPUs busy, over one second, below which a round may start


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs so far, from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def busy_share(seconds: float = 1.0) -> float:
    busy0, total0 = machine_ticks()
    time.sleep(seconds)
    busy1, total1 = machine_ticks()
    return (busy1 - busy0) / max(total1 - total0, 1)


def wait_quiet(limit: float) -> tuple[float, float]:
    """Wait until the CPUs are under QUIET busy, at most ``limit`` seconds: (the busy share
    last seen, seconds waited). Nothing of ours runs meanwhile, so what is busy is others'."""
    started = time.perf_counter()
    share = busy_share()
    while share > QUIET and time.perf_counter() - started < limit:
        time.sleep(4.0)
        share = busy_share()
    return share, time.perf_counter() - started


def postmaster_pid(url: URL) -> int | None:
    """The PostgreSQL server's main process when it runs on this machine (the embedded one
    does), so that its CPU is not counted as others'; None when it cannot be told."""
    try:
        data = sql(url, "SHOW data_directory")[0][0]
        pid = int(Path(data, "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError, IndexError, psycopg2.Error):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


# --- the data and the plans ----------------------------------------------------------------

@dataclass
class Seed:
    user_ids: list[int]
    project_id: int
    task_ids: list[int]


def token(user_id: int) -> str:
    """The seeded user's token: fixed, so that SQL can store its digest (see :func:`seed`)."""
    return f"bench-{user_id}"


def auth(user_id: int) -> dict[str, str]:
    """The headers that make a request the user's own."""
    return {"Authorization": f"Bearer {token(user_id)}"}


def seed(url: URL) -> Seed:
    """1,000 users, each with a token of its own, one project owned by the first, 20 tasks
    in it: in SQL, so both sides start from rows neither of them wrote."""
    sql(url, f"INSERT INTO users (email, name) SELECT 'user' || i || '@example.com', "
             f"'User ' || i FROM generate_series(1, {USERS}) AS i")
    # The digest the API stores: hex SHA-256 of the token's UTF-8 bytes (PostgreSQL 11+).
    sql(url, "UPDATE users SET token_hash = "
             "encode(sha256(convert_to('bench-' || id, 'UTF8')), 'hex')")
    user_ids = [row[0] for row in sql(url, "SELECT id FROM users ORDER BY id")]
    first = sql(url, "SELECT token_hash FROM users WHERE id = %s", (user_ids[0],))[0][0]
    if first != hashlib.sha256(token(user_ids[0]).encode()).hexdigest():
        raise BenchError(f"the seeded token digest {first!r} is not the API's digest of "
                         f"{token(user_ids[0])!r}")
    project_id = sql(url, "INSERT INTO projects (owner_id, name, slug) "
                          "VALUES (%s, 'Load test', 'load-test') RETURNING id",
                     (user_ids[0],))[0][0]
    sql(url, f"INSERT INTO tasks (project_id, title) SELECT %s, 'task ' || i "
             f"FROM generate_series(1, {TASKS}) AS i", (project_id,))
    task_ids = [row[0] for row in sql(url, "SELECT id FROM tasks ORDER BY id")]
    sql(url, "VACUUM (ANALYZE)")
    return Seed(user_ids, project_id, task_ids)


def reset(url: URL, rows: Seed) -> None:
    """Back to the seeded rows: the mix's inserts gone (and vacuumed away, so that the next
    run's count does not walk dead rows), the updated task as it was."""
    sql(url, "DELETE FROM tasks WHERE id > %s", (rows.task_ids[-1],))
    sql(url, "UPDATE tasks SET status = 'todo' WHERE id = %s", (rows.task_ids[3],))
    sql(url, "VACUUM (ANALYZE) tasks")


def plans(rows: Seed) -> dict[str, list[Request]]:
    """Every user once, each with its own token, in an order fixed across runs; the mix is
    bench/api.py's plan, with the token of the project's owner (the first user)."""
    users = [Request("GET", f"/api/users/{uid}", None, auth(uid)) for uid in rows.user_ids]
    random.Random(10).shuffle(users)
    owner = auth(rows.user_ids[0])
    mix = [
        Request("GET", f"/api/tasks?project_id={rows.project_id}&per_page=20", None, owner),
        Request("POST", "/api/tasks", {"project_id": rows.project_id, "title": "from the load"},
                owner),
        Request("GET", f"/api/projects/{rows.project_id}", None, owner),
        Request("PATCH", f"/api/tasks/{rows.task_ids[3]}", {"status": "doing"}, owner),
        Request("GET", f"/api/users/{rows.user_ids[0]}", None, owner),
    ]
    return {"get": users, "mix": mix, "healthz": [Request("GET", "/healthz")]}


# --- the same answers ------------------------------------------------------------------------

def ask(port: int, method: str, path: str, body: Any = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body).encode()
        sent = dict(headers or {})
        if payload:
            sent["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=sent)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, \
            response.read()
    finally:
        conn.close()


# Values that differ between two rows each side creates or updates itself.
_VOLATILE = {"id", "created_at", "updated_at"}
# Headers both sides must send alike on every answer: under /api, the ones that keep a
# browser from sniffing a type and every cache from keeping a user's data.
_NOTED = ("content-type", "x-content-type-options", "cache-control")


def _noted(answer: tuple[int, dict[str, str], bytes]) -> tuple[Any, ...]:
    return (answer[0], *(answer[1].get(name) for name in _NOTED))


def refusals(rows: Seed) -> list[tuple[int, Request]]:
    """Requests both sides must refuse, with the status: no token, an unknown one, one
    that is not a bearer token, and another user's rows read with a valid token."""
    owner, other = rows.user_ids[0], rows.user_ids[1]
    user = f"/api/users/{owner}"
    return [
        (401, Request("GET", user)),
        (401, Request("GET", user, None, {"Authorization": "Bearer not-a-token"})),
        (401, Request("GET", user, None, {"Authorization": f"Basic {token(owner)}"})),
        (401, Request("POST", "/api/tasks", {"project_id": rows.project_id, "title": "x"})),
        (404, Request("GET", user, None, auth(other))),
        (404, Request("GET", f"/api/projects/{rows.project_id}", None, auth(other))),
        (404, Request("PATCH", f"/api/tasks/{rows.task_ids[3]}", {"status": "done"},
                      auth(other))),
    ]


def check_same_answers(ours: Server, plain: Server, plan: dict[str, list[Request]],
                       rows: Seed) -> int:
    """Both servers answer every request of the plans alike: reads byte for byte, writes with
    the same status, headers of note and JSON (ids and times aside), each with the same
    security headers; and both refuse alike a request without a valid token (401) and one
    for another user's rows (404), whatever the error's wording. A plain app that did less
    work would make the comparison meaningless; this refuses to measure it."""
    reads = [r for r in plan["mix"] if r.method == "GET"] + plan["get"][:5] + plan["healthz"]
    writes = [r for r in plan["mix"] if r.method != "GET"]
    for method, path, body, headers in reads:
        a, b = ask(ours.port, method, path, body, headers), \
            ask(plain.port, method, path, body, headers)
        if (_noted(a), a[2]) != (_noted(b), b[2]) or a[0] != 200:
            raise BenchError(f"{method} {path}: ours answered {_noted(a)} {a[2][:300]!r}, "
                             f"plain {_noted(b)} {b[2][:300]!r}")
    for method, path, body, headers in writes:
        a, b = ask(ours.port, method, path, body, headers), \
            ask(plain.port, method, path, body, headers)
        ja, jb = json.loads(a[2]), json.loads(b[2])
        same = (_noted(a) == _noted(b) and a[0] in (200, 201)
                and ("location" in a[1]) == ("location" in b[1]) and ja.keys() == jb.keys()
                and all(ja[k] == jb[k] for k in ja.keys() - _VOLATILE))
        if not same:
            raise BenchError(f"{method} {path}: ours answered {_noted(a)} {ja}, "
                             f"plain {_noted(b)} {jb}")
    refused = refusals(rows)
    for expected, (method, path, body, headers) in refused:
        a, b = ask(ours.port, method, path, body, headers), \
            ask(plain.port, method, path, body, headers)
        if not (a[0] == b[0] == expected
                and all(a[1].get(n) == b[1].get(n) for n in _NOTED[1:])
                and (expected != 401 or a[1].get("www-authenticate")
                     == b[1].get("www-authenticate") == "Bearer")):
            raise BenchError(f"{method} {path} ({headers or 'no headers'}): expected "
                             f"{expected} from both; ours answered {_noted(a)} "
                             f"{a[2][:200]!r}, plain {_noted(b)} {b[2][:200]!r}")
    return len(reads) + len(writes) + len(refused)


# --- one measured run ------------------------------------------------------------------------

def measure(server: Server, plan: list[Request], seconds: float,
            postmaster: int | None) -> dict[str, float]:
    """One load run on ``server``: the client's figures plus the workers' CPU per answered
    request, their resident size afterwards, and the share of the CPUs that processes
    other than the server, the client and PostgreSQL (``postmaster`` and its children)
    took meanwhile."""
    workers = server.workers()
    postgres = [postmaster, *children_of(postmaster)] if postmaster else []
    ours = [server.proc.pid, *workers, *postgres]
    before = {pid: cpu_seconds(pid) for pid in ours}
    busy0, _ = machine_ticks()
    client0, started = os.times(), time.perf_counter()
    result = load(server.port, plan, seconds, connections=CLIENTS)
    client1, elapsed = os.times(), time.perf_counter() - started
    busy1, _ = machine_ticks()
    if server.workers() != workers:
        raise BenchError(f"{server.name}: a worker was replaced during the run:\n"
                         f"{tail_of(server)}")
    # A backend that started during the run (a connection the pool opened) spent all of its
    # CPU in it; one that ended is lost to the count, and so counted as others'.
    late = [pid for pid in children_of(postmaster) if pid not in before] if postmaster else []
    spent = {pid: cpu_seconds(pid) - before.get(pid, 0.0) for pid in [*ours, *late]}
    cpu = sum(spent[pid] for pid in workers)
    answered = result["ok"] + result["non_200"]
    result["cpu_ms_per_request"] = cpu / answered * 1000 if answered else float("nan")
    result["rss_mib"] = statistics.mean(rss_mib(pid) for pid in workers)
    result["workers"] = len(workers)
    client = (client1.children_user + client1.children_system
              - client0.children_user - client0.children_system)
    others = (busy1 - busy0) / TICKS - sum(spent.values()) - client
    result["others_cpu_share"] = max(others, 0.0) / (elapsed * (os.cpu_count() or 1))
    return result


def tail_of(server: Server) -> str:
    return tail(server.log_path)


_TROUBLE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|\[(WARNING|ERROR|CRITICAL)\]|Traceback")


def trouble(server: Server, limit: int = 20) -> list[str]:
    """The server log's warnings and errors (access lines aside), for results.json: a
    failed request or a slow round can then be traced to what the server said."""
    try:
        lines = server.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if _TROUBLE.search(line)][-limit:]


# --- where the time goes -------------------------------------------------------------------

def _access_line_cost(url: URL, count: int) -> dict[str, float]:
    """Microseconds to format one access-log line: plain's (gunicorn's ``%(message)s``),
    ours' line through a stock formatter, and ours as configured (that line, then its
    password masking). gunicorn writes the line outside Flask, so the in-process profile cannot see
    it. Ours' formatter and format are read from gunicorn.conf.py itself."""
    from gunicorn.glogging import Logger, SafeAtoms

    with mock.patch.dict(os.environ, {"DATABASE_URL": url_text(url)}):
        conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    spec = dict(conf["logconfig_dict"]["formatters"]["service"])
    module, _, name = spec.pop("()").rpartition(".")
    ours_formatter = getattr(__import__(module, fromlist=[name]), name)(**spec)
    unmasked = logging.Formatter(**spec)
    unmasked.converter = time.gmtime  # as ours' formatter: its only other difference
    plain_conf = runpy.run_path(str(PLAIN_DIR / "gunicorn.conf.py"))
    plain_formatter = logging.Formatter(Logger.access_fmt)
    atoms = SafeAtoms({"h": "127.0.0.1", "t": "[01/Dec/2026:10:00:00 +0000]",
                       "r": "GET /api/users/123 HTTP/1.1", "s": "200", "b": "96", "M": 1,
                       "p": "<12345>"})

    def per_line(formatter: logging.Formatter, fmt: str) -> float:
        record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 0, fmt,
                                   (atoms,), None)
        best = float("inf")
        for _ in range(7):
            started = time.process_time()
            for _ in range(count):
                formatter.format(record)
            best = min(best, time.process_time() - started)
        return best / count * 1e6

    return {"ours": per_line(ours_formatter, conf["access_log_format"]),
            "ours_unmasked": per_line(unmasked, conf["access_log_format"]),
            "plain": per_line(plain_formatter, plain_conf["access_log_format"])}


_HEAP = """
import gc, statistics, sys, time
{load}
gc.collect()
times = []
for _ in range(5):
    started = time.process_time()
    gc.collect()
    times.append(time.process_time() - started)
print(len(gc.get_objects()), statistics.median(times))
"""


def _heap(url: URL) -> dict[str, tuple[int, float]]:
    """Objects the garbage collector tracks once each app is loaded (fresh interpreter, as
    gunicorn loads it) and the CPU one full collection over them takes. A worker runs a full
    collection now and then under load, holding the GIL throughout: the larger the heap, the
    longer every thread waits."""
    loads = {"ours": "import wsgi",
             "plain": "from bench.plain_app.app import create_app\napp = create_app()"}
    found = {}
    for side, load_app in loads.items():
        done = subprocess.run([PYTHON, "-c", _HEAP.format(load=load_app)], cwd=ROOT,
                              env=child_env(url), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise BenchError(f"{side}: could not load the app to count its heap:\n"
                             f"{done.stderr[-2000:]}")
        objects, seconds = done.stdout.split()[-2:]
        found[side] = (int(objects), float(seconds))
    return found


_WATCHED = re.compile(r"<function Watched(Cursor|Connection)\.(\w+) at 0x\w+>")


def _function_label(key: tuple[str, int, str]) -> str:
    """A profile entry's name, the same on both sides: a path from the package down,
    psycopg2's C methods under one name whether ours' watched subclass or plain called them,
    and the two apps' views and models under the function's name."""
    filename, _, name = key
    if filename == "~":
        watched = _WATCHED.fullmatch(name)
        if watched:
            kind, method = watched.group(1).lower(), watched.group(2)
            return f"<method '{method}' of 'psycopg2.extensions.{kind}' objects>"
        return re.sub(r" at 0x\w+>", ">", name)
    path = Path(filename)
    # The views and models: each app's own, doing the same; paired by name.
    if {"api", "models", "plain_app"} & set(path.parts[-2:-1]):
        return f"the app's views and models:{name}"
    for anchor in ("site-packages", "backend", "bench"):
        if anchor in path.parts:
            parts = path.parts[path.parts.index(anchor) + (anchor == "site-packages"):]
            return f"{'/'.join(parts)}:{name}"
    return f"{path.name}:{name}"


def profile(url: URL, rows: Seed, quick: bool) -> tuple[str, dict[str, Any]]:
    """One read (GET /api/users/<id>, with that user's token) through each app in-process,
    Flask's test client and no HTTP: wall-clock and CPU time per request uninstrumented,
    then one cProfile pass each (timed in CPU, so waiting on the database counts for
    nothing) and the functions whose own time differs most. cProfile inflates Python code,
    so its microseconds are larger than the real ones; the differences point at the
    causes."""
    from backend import create_app
    from backend.extensions import db as ours_db
    from bench.plain_app.app import create_app as create_plain
    from bench.plain_app.models import db as plain_db

    log("request-path: profiling one read in-process")
    apps = {"ours": create_app(Config(database_url=url)),
            "plain": create_plain(url_text(url))}
    clients = {side: app.test_client() for side, app in apps.items()}
    count = 500 if quick else 2_000
    # Each user read with its own token, as over HTTP.
    reads = [(f"/api/users/{uid}", auth(uid)) for uid in rows.user_ids]

    def run(side: str) -> tuple[float, float]:
        client = clients[side]
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            path, headers = reads[i % len(reads)]
            if client.get(path, headers=headers).status_code != 200:
                raise BenchError(f"{side}: GET /api/users/<id> did not answer 200 in-process")
        return ((time.perf_counter() - wall) / count * 1e6,
                (time.process_time() - cpu) / count * 1e6)

    for side in apps:
        run(side)  # warm: pooled connection, statement caches
    timings: dict[str, list[tuple[float, float]]] = {"ours": [], "plain": []}
    for _ in range(3 if quick else 7):
        for side in apps:
            timings[side].append(run(side))
    stats: dict[str, dict[str, tuple[float, float]]] = {}
    for side in apps:
        prof = cProfile.Profile(time.process_time)
        prof.enable()
        run(side)
        prof.disable()
        raw = pstats.Stats(prof).stats  # type: ignore[attr-defined]
        merged: dict[str, tuple[float, float]] = {}
        for key, (_, calls, own, _cum, _) in raw.items():
            label = _function_label(key)
            c, t = merged.get(label, (0.0, 0.0))
            merged[label] = (c + calls / count, t + own / count * 1e6)
        stats[side] = merged
    for side, app in apps.items():
        with app.app_context():
            (ours_db if side == "ours" else plain_db).engine.dispose()
    access = _access_line_cost(url, 2_000 if quick else 20_000)
    heap = _heap(url)

    wall = {side: statistics.median(w for w, _ in values) for side, values in timings.items()}
    cpu = {side: statistics.median(c for _, c in values) for side, values in timings.items()}
    total = {side: sum(t for _, t in stats[side].values()) for side in stats}
    labels = set(stats["ours"]) | set(stats["plain"])
    diffs = sorted(((stats["ours"].get(k, (0, 0))[1] - stats["plain"].get(k, (0, 0))[1], k)
                    for k in labels), reverse=True)
    ours_only = sorted(((stats["ours"][k][1], k) for k in stats["ours"]
                        if k.startswith("backend/serving/")), reverse=True)
    top = [(d, k) for d, k in diffs if d > 0][:12]
    lines = [
        "### Where a read's time goes (in-process, no HTTP)", "",
        f"{count} `GET /api/users/<id>`, each with that user's token, through Flask's test "
        f"client on each app (no gunicorn, no sockets; the database is real), median of "
        f"{len(timings['ours'])} passes alternating the apps. Per request, uninstrumented: "
        f"wall-clock ours {wall['ours']:.0f} µs, plain {wall['plain']:.0f} µs (ratio "
        f"{wall['ours'] / wall['plain']:.2f}); CPU ours {cpu['ours']:.0f} µs, plain "
        f"{cpu['plain']:.0f} µs (ratio {cpu['ours'] / cpu['plain']:.2f}). Under cProfile, "
        f"timed in CPU (the profiler inflates Python code several times over): ours "
        f"{total['ours']:.0f} µs, plain {total['plain']:.0f} µs. The functions whose own "
        "CPU time per request is larger in ours, profiled:", "",
        "| function | calls per request, ours / plain | own µs per request, ours / plain "
        "| difference µs |", "|---|---|---|---|",
    ]
    for diff, label in top:
        o, p = stats["ours"].get(label, (0.0, 0.0)), stats["plain"].get(label, (0.0, 0.0))
        lines.append(f"| `{label}` | {o[0]:.1f} / {p[0]:.1f} | {o[1]:.1f} / {p[1]:.1f} "
                     f"| +{diff:.1f} |")
    lines += [
        "", f"Own CPU time of the project's serving code (`backend/serving/`) per request, "
        "profiled: "
        f"{sum(t for t, _ in ours_only):.1f} µs in {len(ours_only)} functions"
        + (": " + ", ".join(f"`{k}` {t:.1f}" for t, k in ours_only[:8]) if ours_only else "")
        + ".", "",
        f"Formatting one access-log line (gunicorn writes one per request on both sides, "
        f"outside Flask; CPU, best of 7): plain {access['plain']:.1f} µs (gunicorn's "
        f"`%(message)s`); ours' line with a stock formatter {access['ours_unmasked']:.1f} µs; "
        f"ours as configured {access['ours']:.1f} µs (the same line, then its password "
        "masking, backend/logs.py).", "",
        f"The garbage collector's heap once the app is loaded (a fresh interpreter, as "
        f"gunicorn loads it): ours {heap['ours'][0]:,} tracked objects, one full collection "
        f"{heap['ours'][1] * 1000:.0f} ms of CPU; plain {heap['plain'][0]:,} objects, "
        f"{heap['plain'][1] * 1000:.0f} ms. A worker under load runs such a collection now "
        "and then, holding the GIL: every thread of that worker waits meanwhile.", "",
    ]
    raw_out = {"count": count, "wall_us_per_request": {s: [w for w, _ in v]
                                                       for s, v in timings.items()},
               "cpu_us_per_request": {s: [c for _, c in v] for s, v in timings.items()},
               "profiled_total_us": total,
               "top_differences_us": [{"function": k, "ours": stats["ours"].get(k),
                                       "plain": stats["plain"].get(k), "diff": d}
                                      for d, k in top],
               "backend_own_us": {k: t for t, k in ours_only},
               "access_line_us": access,
               "heap": {side: {"objects": n, "full_collection_s": t}
                        for side, (n, t) in heap.items()}}
    return "\n".join(lines), raw_out


# --- the benchmark ---------------------------------------------------------------------------

def served_code() -> dict[str, Any]:
    """Which code ours ran: the commit and any files of the served code that differ from it,
    so a figure can be traced to the request path that produced it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD"),
            "changed": git("status", "--porcelain", "--", "backend", "gunicorn.conf.py",
                           "entrypoint.sh", "wsgi.py", "requirements.lock").splitlines()}


def run(ctx: Context) -> BenchResult:
    """The benchmark, with SIGTERM turned into an orderly exit while it runs: two servers and
    the database outlive a benchmark killed by default, and the `finally` clauses that stop
    them (here and in bench/run.py) run only when Python exits on its own terms."""

    def leave(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        return _run(ctx)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(ctx: Context) -> BenchResult:
    seconds = 3.0 if ctx.quick else 8.0
    rounds = 2 if ctx.quick else 5
    load_before = os.getloadavg()
    code = served_code()
    result = BenchResult(
        key="request-path",
        title="10. Request path: ours against a plain Flask app, same routes and rows",
        what=(f"Ours: `entrypoint.sh` with DATABASE_URL only (defaults: {WORKERS} gthread "
              f"workers x {THREADS} threads, access log on). Plain: stock Flask + "
              f"Flask-SQLAlchemy + gunicorn gthread ({WORKERS} x {THREADS}, default pool, no "
              "pre-ping, access log on in a comparable line; `bench/plain_app/`), the same "
              "routes and JSON, the same bearer-token check (SHA-256, indexed lookup) and "
              "ownership filters. Every request carries its user's token. One database at "
              f"head with {USERS:,} users, a project and {TASKS} tasks, both servers up "
              f"throughout. {CLIENTS} kept-alive connections "
              f"from {PROCESSES} client processes, {seconds:.0f} s per run, {rounds} rounds; "
              "in each, every scenario runs on ours then on plain. Ratios are the median of "
              "per-round ratios (min-max). CPU is the workers' utime + stime per answered "
              "request; RSS is VmRSS per worker after the run."),
        ours_label="entrypoint.sh, defaults",
        plain_label="stock Flask + gunicorn",
    )
    url = ctx.pg.create_database(prefix="bench_rp")
    run_timed(["flask", "db", "upgrade"], ROOT, child_env(url), ctx.workdir / "prepare.log")
    rows = seed(url)
    plan = plans(rows)
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        scenario: {"ours": [], "plain": []} for scenario in SCENARIOS}
    servers: list[Server] = []
    quiet: list[dict[str, float]] = []
    wait_limit = 15.0 if ctx.quick else 120.0
    postmaster = postmaster_pid(url)
    try:
        servers.append(start_ours(url, ctx.workdir))
        servers.append(start_plain(url, ctx.workdir))
        ours, plain = servers
        checked = check_same_answers(ours, plain, plan, rows)
        reset(url, rows)
        # Warm-up: pools full, first-request imports done, and the pages a preloaded
        # worker shares with its master copied (the first seconds of load cost ours a few
        # page faults per request, once).
        for server in servers:
            for scenario in SCENARIOS:
                load(server.port, plan[scenario], 1.0 if ctx.quick else 2.0,
                     connections=CLIENTS)
            reset(url, rows)
        for rnd in range(rounds):
            share, waited = wait_quiet(wait_limit)
            quiet.append({"busy_before": share, "waited": waited})
            for scenario in SCENARIOS:
                for server in servers:
                    if scenario == "mix":
                        reset(url, rows)
                    runs[scenario][server.name].append(
                        measure(server, plan[scenario], seconds, postmaster))
                log(f"request-path: round {rnd + 1}/{rounds}: {scenario}: " + ", ".join(
                    f"{side} {runs[scenario][side][-1]['rps']:.0f} req/s, p99 "
                    f"{runs[scenario][side][-1]['p99_ms']:.1f} ms, "
                    f"{runs[scenario][side][-1]['cpu_ms_per_request']:.2f} ms CPU, others "
                    f"{runs[scenario][side][-1]['others_cpu_share']:.0%}"
                    for side in ("ours", "plain")))
    finally:
        for server in servers:
            stop(server.proc)
    problems = {server.name: trouble(server) for server in servers}
    for server in servers:
        if server.proc.returncode not in (0, -15, None):
            raise BenchError(f"{server.name} exited {server.proc.returncode}:\n"
                             f"{tail_of(server)}")
    load_after = os.getloadavg()
    reset(url, rows)
    profile_md, profile_raw = profile(url, rows, ctx.quick)
    ctx.pg.drop_database(url.database)

    def col(scenario: str, side: str, field: str) -> list[float]:
        return [r[field] for r in runs[scenario][side]]

    for scenario, label in SCENARIOS.items():
        targeted = scenario in TARGETED
        rps = ratios(col(scenario, "ours", "rps"), col(scenario, "plain", "rps"))
        p99 = ratios(col(scenario, "ours", "p99_ms"), col(scenario, "plain", "p99_ms"))
        result.rows += [
            Row(f"{label}: requests per second", summarize(col(scenario, "ours", "rps")),
                summarize(col(scenario, "plain", "rps")), rps,
                f">= {THROUGHPUT_TARGET:.2f}" if targeted else "—",
                rps.median >= THROUGHPUT_TARGET if targeted else None, unit="req/s",
                digits=0),
            Row(f"{label}: p50 latency", summarize(col(scenario, "ours", "p50_ms")),
                summarize(col(scenario, "plain", "p50_ms")),
                ratios(col(scenario, "ours", "p50_ms"), col(scenario, "plain", "p50_ms")),
                unit="ms", digits=1),
            Row(f"{label}: p99 latency", summarize(col(scenario, "ours", "p99_ms")),
                summarize(col(scenario, "plain", "p99_ms")), p99,
                f"<= {P99_TARGET:.1f}" if targeted else "—",
                p99.median <= P99_TARGET if targeted else None, unit="ms", digits=1),
            Row(f"{label}: worker CPU per request",
                summarize(col(scenario, "ours", "cpu_ms_per_request")),
                summarize(col(scenario, "plain", "cpu_ms_per_request")),
                ratios(col(scenario, "ours", "cpu_ms_per_request"),
                       col(scenario, "plain", "cpu_ms_per_request")), unit="ms", digits=3),
            Row(f"{label}: RSS per worker after the run",
                summarize(col(scenario, "ours", "rss_mib")),
                summarize(col(scenario, "plain", "rss_mib")),
                ratios(col(scenario, "ours", "rss_mib"), col(scenario, "plain", "rss_mib")),
                unit="MiB", digits=1),
        ]
    failures = {side: sum(r["errors"] + r["non_200"] for s in runs for r in runs[s][side])
                for side in ("ours", "plain")}
    answered = {side: sum(r["ok"] for s in runs for r in runs[s][side])
                for side in ("ours", "plain")}
    others = {side: [r["others_cpu_share"] for s in runs for r in runs[s][side]]
              for side in ("ours", "plain")}
    result.notes = [
        f"Same work on both sides: before measuring, {checked} requests were asked of both "
        "servers and answered alike: those of the plans (reads byte for byte, writes with the "
        "same status, Location and JSON but for ids and times, all with the same nosniff and "
        "no-store headers), and requests without a valid token (401 from both) or for "
        "another user's rows (404 from both). Every API request carries its user's bearer "
        "token; both sides look it up by its SHA-256 in the indexed users.token_hash.",
        f"Client and servers share the same {os.cpu_count()} cores: the Python client takes "
        "a large share of them and hits both sides alike, so requests per second and latency "
        "are for the pair, and a server-side difference shows in them diluted. CPU per "
        "request is the workers' own and the figure least touched by the client.",
        "RSS is VmRSS, shared pages included: ours preloads the app in gunicorn's master "
        "(preload_app) and the workers share those pages; plain imports it in each worker.",
        f"Answered 2xx: ours {answered['ours']:,}, plain {answered['plain']:,}; failed or "
        f"other statuses: ours {failures['ours']}, plain {failures['plain']}; warning or "
        f"error lines in the server logs: ours {len(problems.get('ours', []))}, plain "
        f"{len(problems.get('plain', []))} (in results.json).",
        f"Other work on the machine: each round waited for the CPUs to be under "
        f"{QUIET:.0%} busy (at most {wait_limit:.0f} s; {sum(q['waited'] for q in quiet):.0f} "
        f"s waited in all, busy {max(q['busy_before'] for q in quiet):.0%} at worst when a "
        "round began). During the runs, processes other than the servers, the client and "
        "PostgreSQL took " + "; ".join(
            f"{side} {statistics.median(others[side]):.0%} (up to {max(others[side]):.0%})"
            for side in ("ours", "plain")) + " of the CPUs (median over runs).",
        "Load average (1, 5, 15 min) at the start of this benchmark: "
        + " ".join(f"{x:.2f}" for x in load_before) + "; after its last run: "
        + " ".join(f"{x:.2f}" for x in load_after) + ".",
        "py-spy is not in requirements-dev.lock, so the profile below is cProfile in-process.",
    ]
    result.extra_md = profile_md
    result.raw = {"seconds_per_run": seconds, "rounds": rounds, "clients": CLIENTS,
                  "workers": WORKERS, "threads": THREADS, "users": USERS, "runs": runs,
                  "load_before": load_before, "load_after": load_after,
                  "quiet": quiet, "profile": profile_raw, "served_code": code,
                  "server_log_problems": problems}
    return result
