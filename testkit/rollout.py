"""A rolling deploy with processes, as an orchestrator runs one: replicas of release N serve,
a replica of N+1 starts (and migrates), becomes ready, then the N replicas are taken out of
rotation and stopped one by one. Used by the suite (tests/test_rolling_deploy.py) and by
``make bench`` (bench/deploy.py), which differ only in load and size.

Release N is the fixture application (``widgets``, tests/apps/fixture), not whatever
application the checkout holds: the deploy proves the serving machinery, so it keeps
proving it when a team replaces the example.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL

from testkit.support import (
    ClientThreads,
    execute_sql,
    fixture_project,
    free_port,
    head_revision,
    http_get,
    request,
    start_entrypoint,
    stop,
    write_revision,
)

# Release N+1's revisions, all expand: a nullable column, a concurrent index on it, and a
# backfill in batches (each batch its own short transaction, so no long row locks).
NEXT_REVISIONS = (
    ("e0e0e0e00001", "add widget weight",
     'op.add_column("widgets", sa.Column("probe_weight", sa.Integer()))',
     'op.drop_column("widgets", "probe_weight")'),
    ("e0e0e0e00002", "index widgets by weight",
     'with op.get_context().autocommit_block():\n'
     '    op.create_index("ix_widgets_probe_weight", "widgets", ["probe_weight"],\n'
     '                    postgresql_concurrently=True, if_not_exists=True)',
     'with op.get_context().autocommit_block():\n'
     '    op.drop_index("ix_widgets_probe_weight", "widgets", postgresql_concurrently=True,\n'
     '                  if_exists=True)'),
    ("e0e0e0e00003", "backfill widget weights in batches",
     'bind = op.get_bind()\n'
     'with op.get_context().autocommit_block():\n'
     '    while bind.exec_driver_sql(\n'
     '            "UPDATE widgets SET probe_weight = 1 WHERE id IN (SELECT id FROM widgets "\n'
     '            "WHERE probe_weight IS NULL LIMIT 10000)").rowcount:\n'
     '        pass',
     'pass'),
)


def release(dest: Path) -> Path:
    """Release N: a copy of the project serving the fixture application."""
    return fixture_project(dest)


def next_release(dest: Path) -> Path:
    """Release N+1: release N plus the expand revisions above."""
    repo = release(dest)
    parent = head_revision(repo)
    for rev, message, upgrade, downgrade in NEXT_REVISIONS:
        write_revision(repo, rev, parent, message, upgrade=upgrade, downgrade=downgrade)
        parent = rev
    return repo


def fill_widgets(url: URL, rows: int) -> int:
    """``rows`` widgets in a database at release N's head, so N+1's index and backfill have
    a table of some size to work through; the number of rows written."""
    execute_sql(url, "INSERT INTO widgets (name) SELECT 'widget ' || i "
                     "FROM generate_series(1, %s) AS i", (rows,))
    execute_sql(url, "ANALYZE widgets")
    return rows


@dataclass
class Replica:
    name: str
    repo: Path
    port: int = field(default_factory=free_port)
    proc: object = None
    log: Path | None = None


class Fleet:
    """The replicas and the endpoint list an orchestrator keeps: only replicas whose
    ``/readyz`` answers 200 get traffic; one is taken out of it before it is stopped."""

    def __init__(self, url, workdir: Path) -> None:
        self.url, self.workdir = url, workdir
        self.replicas: dict[str, Replica] = {}
        self.ready: list[Replica] = []
        self.not_ready_while_serving: list[str] = []  # an N replica dropping out of rotation
        self._draining: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._prober = threading.Thread(target=self._probe, daemon=True)

    def start(self, name: str, repo: Path, **env: str) -> Replica:
        replica = Replica(name, repo, log=self.workdir / f"{name}.log")
        replica.proc = start_entrypoint(repo, self.url, replica.log, PORT=str(replica.port),
                                        WEB_CONCURRENCY="1", ACCESS_LOG="0", **env)
        self.replicas[name] = replica
        if not self._prober.is_alive():
            self._prober.start()
        return replica

    def _probe(self) -> None:
        while not self._stop.is_set():
            for replica in list(self.replicas.values()):
                if replica.name in self._draining:
                    continue
                try:
                    ok = http_get(replica.port, "/readyz", timeout=2)[0] == 200
                except OSError:
                    ok = False
                with self._lock:
                    if ok and replica not in self.ready:
                        self.ready.append(replica)
                    elif not ok and replica in self.ready:
                        self.ready.remove(replica)
                        self.not_ready_while_serving.append(replica.name)
            time.sleep(0.1)

    def wait_ready(self, name: str, timeout: float = 120) -> float:
        started = time.monotonic()
        replica = self.replicas[name]
        while replica not in self.ready:
            if replica.proc.poll() is not None:
                raise AssertionError(f"{name} exited:\n{replica.log.read_text()}")
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{name} not ready within {timeout}s")
            time.sleep(0.05)
        return time.monotonic() - started

    def retire(self, name: str, drain: float = 0.5) -> int:
        """Out of rotation first (the endpoints update), then SIGTERM; its exit code."""
        replica = self.replicas[name]
        with self._lock:
            self._draining.add(name)
            if replica in self.ready:
                self.ready.remove(replica)
        time.sleep(drain)  # requests already routed to it finish; no new ones come
        os.kill(replica.proc.pid, signal.SIGTERM)
        code = replica.proc.wait(timeout=60)
        del self.replicas[name]
        self._draining.discard(name)
        return code

    def pick(self) -> Replica | None:
        with self._lock:
            if not self.ready:
                return None
            return self.ready[next(_counter) % len(self.ready)]

    def close(self) -> None:
        self._stop.set()
        for replica in self.replicas.values():
            stop(replica.proc)


_counter = itertools.count()


@dataclass
class Rollout:
    """What one deploy and rollback took, for the test's asserts and the benchmark's rows."""

    deploy_start: float
    deploy_end: float
    to_ready: float  # N+1's first replica: start (migration included) to ready
    exit_codes: list[int]
    rollback_readyz: tuple[int, str]


def serve_release(fleet: Fleet, repo: Path, names: tuple[str, ...] = ("n-1", "n-2")) -> None:
    for name in names:
        fleet.start(name, repo)
    for name in names:
        fleet.wait_ready(name)


def roll(fleet: Fleet, old: Path, new: Path, steady: float = 1.0) -> Rollout:
    """With ``old`` serving as n-1 and n-2 (and traffic on): ``steady`` seconds as they
    are, then N+1 replaces them one by one, then ``old`` starts again on the new schema."""
    time.sleep(steady)
    start = time.monotonic()
    fleet.start("next-1", new)
    to_ready = fleet.wait_ready("next-1", timeout=300)
    codes = [fleet.retire("n-1")]
    fleet.start("next-2", new)
    fleet.wait_ready("next-2")
    codes.append(fleet.retire("n-2"))
    end = time.monotonic()
    fleet.start("n-again", old)
    fleet.wait_ready("n-again")
    readyz = http_get(fleet.replicas["n-again"].port, "/readyz")
    time.sleep(1)
    return Rollout(start, end, to_ready, codes, readyz)


class Traffic(ClientThreads):
    """Clients sending a read/write mix through the fleet; every outcome kept with its time."""

    def __init__(self, fleet: Fleet, clients: int) -> None:
        self.fleet = fleet
        self.outcomes: list[tuple[float, str, float]] = []  # (when, outcome, seconds)
        super().__init__(clients)

    def client(self) -> None:
        plan = [("POST", "/api/widgets", {"name": "deploy"}),
                ("GET", "/api/widgets", None),
                ("GET", "/api/widgets/1", None)]
        for method, path, body in itertools.cycle(plan):
            if self.done.is_set():
                return
            replica, started = self.fleet.pick(), time.monotonic()
            if replica is None:
                self.outcomes.append((started, "no ready replica", 0.0))
                time.sleep(0.05)
                continue
            try:
                status, _ = request(replica.port, method, path, body, timeout=30)
                outcome = "ok" if status < 300 else f"{status} from {replica.name}"
            except OSError as exc:
                outcome = f"{type(exc).__name__} from {replica.name}"
            self.outcomes.append((started, outcome, time.monotonic() - started))

    def failures(self) -> list[str]:
        return [outcome for _, outcome, _ in self.outcomes if outcome != "ok"]
