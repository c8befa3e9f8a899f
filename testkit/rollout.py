"""A rolling deploy with processes, as an orchestrator runs one: replicas of release N serve,
a replica of N+1 starts (and migrates), becomes ready, then the N replicas are taken out of
rotation and stopped one by one. Used by the suite (tests/test_rolling_deploy.py) and by
``make bench`` (bench/deploy.py), which differ only in load and size.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from testkit.support import (
    ClientThreads,
    copy_repository,
    execute_sql,
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
    ("e0e0e0e00001", "add task estimate",
     'op.add_column("tasks", sa.Column("probe_estimate", sa.Integer()))',
     'op.drop_column("tasks", "probe_estimate")'),
    ("e0e0e0e00002", "index tasks by estimate",
     'with op.get_context().autocommit_block():\n'
     '    op.create_index("ix_tasks_probe_estimate", "tasks", ["probe_estimate"],\n'
     '                    postgresql_concurrently=True, if_not_exists=True)',
     'with op.get_context().autocommit_block():\n'
     '    op.drop_index("ix_tasks_probe_estimate", "tasks", postgresql_concurrently=True,\n'
     '                  if_exists=True)'),
    ("e0e0e0e00003", "backfill task estimates in batches",
     'bind = op.get_bind()\n'
     'with op.get_context().autocommit_block():\n'
     '    while bind.exec_driver_sql(\n'
     '            "UPDATE tasks SET probe_estimate = 1 WHERE id IN (SELECT id FROM tasks "\n'
     '            "WHERE probe_estimate IS NULL LIMIT 10000)").rowcount:\n'
     '        pass',
     'pass'),
)


def next_release(dest: Path) -> Path:
    """Release N+1: this checkout plus the expand revisions above."""
    repo = copy_repository(dest)
    parent = head_revision(repo)
    for rev, message, upgrade, downgrade in NEXT_REVISIONS:
        write_revision(repo, rev, parent, message, upgrade=upgrade, downgrade=downgrade)
        parent = rev
    return repo


def fill_tasks(url, rows: int) -> tuple[int, int]:
    """One user, one project, ``rows`` tasks; (user id, project id)."""
    user = execute_sql(url, "INSERT INTO users (email, name) VALUES ('deploy@example.com', "
                            "'Deploy') RETURNING id")[0][0]
    project = execute_sql(url, "INSERT INTO projects (owner_id, name, slug) VALUES "
                               "(%s, 'Deploy', 'deploy') RETURNING id", (user,))[0][0]
    execute_sql(url, "INSERT INTO tasks (project_id, title, status) SELECT %s, 'task ' || i, "
                     "'todo' FROM generate_series(1, %s) AS i", (project, rows))
    execute_sql(url, "ANALYZE tasks")
    return user, project


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

    def __init__(self, fleet: Fleet, project_id: int, clients: int) -> None:
        self.fleet, self.project_id = fleet, project_id
        self.outcomes: list[tuple[float, str, float]] = []  # (when, outcome, seconds)
        super().__init__(clients)

    def client(self) -> None:
        plan = [("POST", "/api/tasks", {"project_id": self.project_id, "title": "deploy"}),
                ("GET", f"/api/tasks?project_id={self.project_id}&per_page=20", None),
                ("GET", "/api/tasks/1", None)]
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
