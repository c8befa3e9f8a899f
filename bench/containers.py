"""Benchmark 7 (``make bench-containers``, needs a Docker engine): the runtime image's size,
and a container's start to its first ``/readyz`` 200 with nothing pending, as shipped
(``MIGRATE_ON_START=1``: wait, lock, check, then serve) against the same image told not
to migrate (``MIGRATE_ON_START=0``): what checking the schema on every start costs.
"""

from __future__ import annotations

import time
import urllib.request

from bench.common import BenchError, BenchResult, Context, Row, free_port, log, ratios, summarize
from testkit.containers import Project, copy_for_containers, docker

PASSWORD = "Pg-S3cret-Word"


def _start_to_ready(image: str, network: str, migrate: str) -> float:
    """Seconds from `docker run` to the first 200 from /readyz on the published port."""
    port = free_port()
    started = time.perf_counter()
    container = docker("run", "-d", "-p", f"127.0.0.1:{port}:8000", "--network", network,
                       "-e", f"DATABASE_URL=postgresql://app:{PASSWORD}@db:5432/app",
                       "-e", f"MIGRATE_ON_START={migrate}", image).stdout.strip()
    try:
        while time.perf_counter() - started < 120:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.02)
        raise BenchError(f"no /readyz 200 within 120 s: {docker('logs', container).stderr}")
    finally:
        docker("rm", "-f", container, check=False)


def run(ctx: Context) -> BenchResult:
    rounds = 3 if ctx.quick else 7
    result = BenchResult(
        key="containers",
        title="7. Containers: image size, and start to first /readyz 200 with nothing pending",
        what=(f"The runtime image (docker-compose.yml alone, no override) against its "
              f"PostgreSQL 17 service, database at head. {rounds} rounds alternating which "
              "variant starts first; each starts a fresh container with `docker run` and "
              "polls /readyz on the published port. Median (min-max)."),
        ours_label="MIGRATE_ON_START=1 (as shipped)",
        plain_label="MIGRATE_ON_START=0",
    )
    project = Project(copy_for_containers(ctx.workdir / "repo"), production=True)
    try:
        project("up", "-d", "--build")
        project.wait_ready()  # the history applied once; from here nothing is pending
        image = project.container()["Config"]["Image"]
        network = next(iter(project.container("db")["NetworkSettings"]["Networks"]))
        project("stop", "backend")
        size = int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout)
        ours: list[float] = []
        plain: list[float] = []
        for rnd in range(rounds):
            order = [("1", ours), ("0", plain)] if rnd % 2 == 0 else [("0", plain), ("1", ours)]
            for migrate, sink in order:
                sink.append(_start_to_ready(image, network, migrate))
            log(f"containers: round {rnd + 1}/{rounds}: migrate-on-start {ours[-1]:.2f}s, "
                f"without {plain[-1]:.2f}s")
    finally:
        project.down()
    result.rows = [
        Row("start to first /readyz 200", summarize(ours), summarize(plain),
            ratios(ours, plain), "—", None),
        Row("runtime image size", f"{size / 1e6:.0f} MB", "—", "—", "—", None, unit=""),
    ]
    result.notes = ["Both variants wait for nothing: the database is up and at head, so "
                    "the difference is the lock, the checks and the log lines of a start."]
    result.raw = {"rounds": rounds, "ours": ours, "plain": plain, "image_bytes": size}
    return result
