"""Benchmark 1: how long a replica takes to serve, with nothing to migrate.

The entrypoint waits for the database and runs the whole migration check (lock, refusals,
checksums) in gunicorn's master before the port opens. The question is what that costs
against the two things a team would otherwise run:

- bare gunicorn on the same app, which checks nothing (the floor), and
- the naive entrypoint, ``flask db upgrade && exec gunicorn``, with Flask-Migrate's stock
  ``env.py``: a second interpreter that imports the app only to find nothing pending.

Each variant is timed from the moment its process is started to its first 200: ``/readyz``
for ours and the naive one (both promise a schema at head), ``/healthz`` for bare gunicorn
(it promises nothing more). All three use the same gunicorn settings (ours, minus the
``on_starting`` hook for the other two) and the same worker count, against the same database
at head, and take turns in a rotating order so no variant always runs first.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import (
    ROOT,
    BenchResult,
    Context,
    Row,
    child_env,
    copy_repo,
    free_port,
    log,
    ratios,
    run_timed,
    spawn,
    stop,
    summarize,
    wait_for_200,
)

WORKERS = "2"

# Our gunicorn settings with the on_starting hook taken out: the same server, workers, preload
# and logging, so the only difference between the variants is how migrations are handled.
PLAIN_CONFIG = '''\
"""gunicorn.conf.py from the repository, without its on_starting hook (no wait, no migration)."""
import runpy as _runpy

for _name, _value in _runpy.run_path({path!r}).items():
    if _name != "on_starting" and not _name.startswith("_"):
        globals()[_name] = _value
'''


def _variants(workdir: Path, naive_root: Path) -> dict[str, tuple[str, Path, str]]:
    """name -> (shell command, working directory, readiness path)."""
    plain_config = workdir / "gunicorn_plain.conf.py"
    plain_config.write_text(PLAIN_CONFIG.format(path=str(ROOT / "gunicorn.conf.py")))
    gunicorn = f"exec gunicorn --config {plain_config} wsgi:app"
    return {
        "ours": (f"exec {ROOT / 'entrypoint.sh'}", ROOT, "/readyz"),
        "bare": (gunicorn, ROOT, "/healthz"),
        "naive": (f"flask db upgrade && {gunicorn}", naive_root, "/readyz"),
    }


def _start_once(command: str, cwd: Path, path: str, env: dict[str, str],
                log_path: Path) -> float:
    port = free_port()
    env = dict(env, PORT=str(port))
    started = time.perf_counter()
    proc = spawn(["bash", "-c", command], cwd, env, log_path)
    try:
        ready = wait_for_200(port, path, proc, log_path)
    finally:
        # A worker still booting when SIGTERM arrives can miss it (it has not installed its
        # own handlers yet) and would linger until gunicorn's graceful timeout: the time is
        # already taken, so give it 3 s, then SIGKILL the group.
        stop(proc, grace=3.0)
    return ready - started


def run(ctx: Context) -> BenchResult:
    rounds = 3 if ctx.quick else 7
    result = BenchResult(
        key="startup",
        title="1. Start-up: process start to first 200, nothing pending",
        what=("From starting the process to its first 200, with the database up and at head. "
              f"gunicorn with {WORKERS} workers in every variant; median of {rounds} rounds "
              "(min-max), after one warm-up round that is not counted."),
        ours_label="entrypoint.sh → /readyz",
        plain_label="named in the row",
    )
    url = ctx.pg.create_database()
    env = child_env(url, WEB_CONCURRENCY=WORKERS, LOG_FORMAT="text")
    log("startup: migrating the database to head")
    run_timed(["flask", "db", "upgrade"], ROOT, env, ctx.workdir / "startup-prepare.log")
    naive_root = copy_repo(ctx.workdir / "startup-naive", stock_env=True)
    variants = _variants(ctx.workdir, naive_root)
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rnd in range(rounds + 1):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for name in order:
            command, cwd, path = variants[name]
            seconds = _start_once(command, cwd, path, env,
                                  ctx.workdir / f"startup-{name}.log")
            if rnd > 0:  # round 0 warms the page cache and writes bytecode for the copies
                times[name].append(seconds)
        if rnd > 0:
            log(f"startup: round {rnd}/{rounds}: " +
                ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names))
    ctx.pg.drop_database(url.database)

    ours, bare, naive = (summarize(times[n]) for n in ("ours", "bare", "naive"))
    vs_naive = ratios(times["ours"], times["naive"])
    vs_bare = ratios(times["ours"], times["bare"])
    result.rows = [
        Row("vs naive: `flask db upgrade && exec gunicorn` (stock Flask-Migrate env.py) → "
            "/readyz", ours, naive, vs_naive, "<= 1.00", vs_naive.median <= 1.0),
        Row("vs bare `gunicorn wsgi:app` (no hook) → /healthz", ours, bare, vs_bare,
            "— (the floor)", None),
    ]
    result.notes = [
        "Ratios are the median of per-round ratios (both variants of a ratio ran in the same "
        "round), with their min-max.",
        "Bare and naive use the repository's gunicorn.conf.py without its on_starting hook "
        "(same preload, workers and logging), so they differ from ours only in how migrations "
        "are handled.",
        "The naive variant runs from a copy of the repository whose migrations/env.py and "
        "alembic.ini are Flask-Migrate's stock templates (no lock, timeouts, checksums or "
        "refusals).",
    ]
    result.raw = {"rounds": rounds, "workers": int(WORKERS), "seconds": times}
    return result
