"""A rolling deploy with processes, as an orchestrator runs one: replicas of release N serve,
a replica of N+1 starts (and migrates), becomes ready, then the N replicas are taken out of
rotation and stopped one by one. Used by the suite (tests/test_rolling_deploy.py) and by
``make bench`` (bench/deploy.py, bench/backfill.py), which differ only in load and size.

Release N is the fixture application (``widgets``, tests/apps/fixture), not whatever
application the checkout holds: the deploy proves the serving machinery, so it keeps
proving it when a team replaces the example.

N+1's change goes expand -> background backfill -> contract. Its data change is a background
migration: its revision only registers the backfill, so N+1's start does not grow with the
table, and the deploy runs ``flask migrations backfill run`` once N+1's first replica is
ready, while both releases serve. Its contract is a post-deploy revision (the root of the
``post`` branch): the start never applies it; ``flask migrations post-deploy`` does, once
the N replicas are gone and the runner is done, with traffic still on.

The fleet's ``env`` goes to every process of the deploy, as one Deployment's and its Jobs'
settings do: with ``MIGRATION_DATABASE_URL`` (the owner role) beside ``DATABASE_URL`` (the
runtime role), each replica's start migrates as the owner and its workers serve as the
runtime role, and the runner and post-deploy, given the same two URLs, connect as the owner.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from backend.migrate.phases import POST
from testkit.support import (
    VENV_BIN,
    ClientThreads,
    child_env,
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

BACKFILL_IMPORTS = ("from backend.migrate.background import register_backfill, "
                    "unregister_backfill\n")
# N+1's background migration: every widget's weight is the length of its name. The guard on
# NULL leaves alone the rows N+1's code has already written in their final form.
BACKFILL = "widgets_probe_weight"
BACKFILL_STATEMENT = ("UPDATE widgets SET probe_weight = length(name) "
                      "WHERE id > :start AND id <= :stop AND probe_weight IS NULL")

# Release N+1's revisions, all expand: a nullable column, a concurrent index on it, and the
# backfill registered as a background migration (one row written; the runner applies it in
# batches later, each its own short transaction, so no long row locks and no wait at start).
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
    ("e0e0e0e00003", "backfill widget weights in the background",
     f'register_backfill({BACKFILL!r}, "widgets",\n'
     f'                  {BACKFILL_STATEMENT!r})',
     f'unregister_backfill({BACKFILL!r})'),
)

# N+1's contract, a post-deploy revision: the root of the ``post`` branch, depending on the
# revision that registers the backfill. It finishes the backfill (a no-op once the runner is
# done; `flask migrations post-deploy` refuses before it while the runner is not), then ties
# every weight to its name with a CHECK: added NOT VALID (a moment's ACCESS EXCLUSIVE lock, no
# scan) and validated in a statement of its own (the scan, under SHARE UPDATE EXCLUSIVE, with
# reads and writes going on), each committed on its own so no lock outlives its statement.
# Why not NOT NULL, where a backfill usually leads: the deploy rolls back to N afterwards,
# and N inserts rows without probe_weight, so under NOT NULL every write N makes would fail
# (and a row N wrote during the deploy after the runner had passed its key, NULL still, would
# fail the VALIDATE). A contract N cannot live with waits until no rollback to N is
# possible, a release later. This one N tolerates: NULL passes, and N never changes a name.
CONTRACT = "e0e0e0e00004"
CONTRACT_CHECK = "ck_widgets_probe_weight"
CONTRACT_IMPORTS = "from backend.migrate.background import finish_backfill\n"
CONTRACT_UPGRADE = (
    f"finish_backfill({BACKFILL!r})\n"
    "with op.get_context().autocommit_block():\n"
    f"    op.execute('ALTER TABLE widgets DROP CONSTRAINT IF EXISTS {CONTRACT_CHECK}')"
    "  # a retry's\n"
    f"    op.execute('ALTER TABLE widgets ADD CONSTRAINT {CONTRACT_CHECK} '\n"
    "               'CHECK (probe_weight IS NULL OR probe_weight = length(name)) NOT VALID')\n"
    f"    op.execute('ALTER TABLE widgets VALIDATE CONSTRAINT {CONTRACT_CHECK}')")
CONTRACT_DOWNGRADE = f"op.execute('ALTER TABLE widgets DROP CONSTRAINT IF EXISTS {CONTRACT_CHECK}')"

# N+1's code: the model gains the column and fills it on every insert, whichever route
# writes, so that no row N+1 writes needs the backfill. (Rows N writes meanwhile stay NULL
# until a runner reaches them: what the contract step after N is gone must account for.)
_MODEL_ANCHOR = "    size: Mapped[int | None] = mapped_column(sa.Integer)\n"
_MODEL_COLUMN = (
    "    # Release N+1: new rows in their final form; the background migration fixes older ones.\n"
    "    probe_weight: Mapped[int | None] = mapped_column(\n"
    "        sa.Integer, index=True,\n"
    "        default=lambda context: len(context.get_current_parameters()[\"name\"]))\n")
_DICT_ANCHOR = '"size": self.size}'
_DICT_FIELDS = '"size": self.size, "probe_weight": self.probe_weight}'


def release(dest: Path) -> Path:
    """Release N: a copy of the project serving the fixture application."""
    return fixture_project(dest)


def add_revisions(repo: Path, revisions: Iterable[tuple[str, str, str, str]]) -> Path:
    """Write ``(revision, message, upgrade, downgrade)`` revisions on top of ``repo``'s head,
    each on the one before, as a developer adds a release's migrations."""
    parent = head_revision(repo)
    for rev, message, upgrade, downgrade in revisions:
        imports = BACKFILL_IMPORTS if "_backfill(" in upgrade + downgrade else ""
        write_revision(repo, rev, parent, message, upgrade=upgrade, downgrade=downgrade,
                       imports=imports)
        parent = rev
    return repo


def _extend(path: Path, anchor: str, replacement: str) -> None:
    text = path.read_text()
    if anchor not in text:
        raise RuntimeError(f"{path} has no {anchor.strip()!r} to extend: the fixture "
                           "application changed, and release N+1's code with it must")
    path.write_text(text.replace(anchor, replacement, 1))


def next_release(dest: Path) -> Path:
    """Release N+1: release N plus the expand revisions above, the post-deploy contract
    (:data:`CONTRACT`), and code that writes the new column on every insert (the background
    migration only fixes the rows written before)."""
    repo = add_revisions(release(dest), NEXT_REVISIONS)
    write_revision(repo, CONTRACT, None, "check widget weights", upgrade=CONTRACT_UPGRADE,
                   downgrade=CONTRACT_DOWNGRADE, imports=CONTRACT_IMPORTS,
                   branch_labels=(POST,), depends_on=NEXT_REVISIONS[-1][0])
    models = repo / "backend/models/__init__.py"
    _extend(models, _MODEL_ANCHOR, _MODEL_ANCHOR + _MODEL_COLUMN)
    _extend(models, _DICT_ANCHOR, _DICT_FIELDS)
    return repo


def fill_widgets(url: URL, rows: int) -> int:
    """``rows`` widgets in a database at release N's head, so N+1's index and backfill have
    a table of some size to work through; the number of rows written."""
    execute_sql(url, "INSERT INTO widgets (name) SELECT 'widget ' || i "
                     "FROM generate_series(1, %s) AS i", (rows,))
    execute_sql(url, "ANALYZE widgets")
    return rows


def start_backfill(repo: Path, url: URL, log: Path, **env: str) -> subprocess.Popen:
    """``flask migrations backfill run`` in ``repo`` on ``url``, as an operator (or a Job)
    runs it once the release is out: in its own process group, its output in ``log``."""
    flask = shutil.which("flask", path=VENV_BIN) or "flask"
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([flask, "migrations", "backfill", "run"], cwd=repo,
                                env=child_env(url, **env), stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)


@dataclass
class BackfillRun:
    """One run of the runner beside the deploy, with its progress as it was seen."""

    started: float  # time.monotonic(), as Traffic's outcomes
    ended: float
    exit_code: int
    # (when, state, rows_done) of background_migrations' row, polled while the runner ran.
    progress: list[tuple[float, str, int]]
    log: Path


def run_backfill(repo: Path, url: URL, log: Path, name: str = BACKFILL,
                 timeout: float = 600, poll: float = 0.05, **env: str) -> BackfillRun:
    """Run the runner to its end, polling ``name``'s progress meanwhile: the samples show
    whether it changed the table batch by batch while the replicas served. ``env``: more
    settings for the runner (``MIGRATION_DATABASE_URL``); the polls read as ``url``'s role."""
    started = time.monotonic()
    proc = start_backfill(repo, url, log, **env)
    progress: list[tuple[float, str, int]] = []
    try:
        while proc.poll() is None:
            if time.monotonic() - started > timeout:
                raise AssertionError(f"the backfill ran over {timeout:.0f}s:\n{log.read_text()}")
            rows = execute_sql(url, "SELECT state, rows_done FROM background_migrations "
                                    "WHERE name = %s", (name,))
            if rows:
                progress.append((time.monotonic(), rows[0][0], rows[0][1]))
            time.sleep(poll)
        ended = time.monotonic()  # within one poll of its exit
    finally:
        stop(proc)
    return BackfillRun(started, ended, proc.returncode, progress, log)


@dataclass
class CommandRun:
    """One run of a ``flask`` command to its exit."""

    started: float  # time.monotonic(), as Traffic's outcomes
    ended: float
    exit_code: int
    output: str  # stdout and stderr, interleaved as written


def run_post_deploy(repo: Path, url: URL, log: Path, timeout: float = 300,
                    **env: str) -> CommandRun:
    """``flask migrations post-deploy`` in ``repo`` on ``url``, to its exit, as an operator
    (or a Job) runs it once every replica serves the release: in its own process group, so
    that a timeout stops all of it. ``env``: more settings (``MIGRATION_DATABASE_URL``)."""
    flask = shutil.which("flask", path=VENV_BIN) or "flask"
    started = time.monotonic()
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([flask, "migrations", "post-deploy"], cwd=repo,
                                env=child_env(url, **env), stdout=out, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        stop(proc)
    return CommandRun(started, time.monotonic(), code, log.read_text())


@dataclass
class Replica:
    name: str
    repo: Path
    port: int = field(default_factory=free_port)
    proc: object = None
    log: Path | None = None


class Fleet:
    """The replicas and the endpoint list an orchestrator keeps: only replicas whose
    ``/readyz`` answers 200 get traffic; one is taken out of it before it is stopped.

    ``url`` is every replica's ``DATABASE_URL``; ``env`` holds settings every process of the
    deploy gets besides (replicas, runner, post-deploy): ``MIGRATION_DATABASE_URL`` for two
    roles, the owner's, so that ``url`` is the runtime role's."""

    def __init__(self, url, workdir: Path, env: Mapping[str, str] | None = None) -> None:
        self.url, self.workdir, self.env = url, workdir, dict(env or {})
        self.replicas: dict[str, Replica] = {}
        self.ready: list[Replica] = []
        self.not_ready_while_serving: list[str] = []  # an N replica dropping out of rotation
        self._draining: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._prober = threading.Thread(target=self._probe, daemon=True)

    def start(self, name: str, repo: Path, **env: str) -> Replica:
        replica = Replica(name, repo, log=self.workdir / f"{name}.log")
        replica.proc = start_entrypoint(repo, self.url, replica.log,
                                        **{**self.env, "PORT": str(replica.port),
                                           "WEB_CONCURRENCY": "1", "ACCESS_LOG": "0", **env})
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
                    # Checked again under the lock: retire() may have taken the replica out
                    # while this probe was on its way, and must not see it come back.
                    if replica.name in self._draining or replica.name not in self.replicas:
                        continue
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
    backfill: BackfillRun | None = None  # the runner's run during the deploy
    # `flask migrations post-deploy` once N+1's first replica was ready, before the runner
    # started (refused: the backfill is not done), then once the deploy and the runner were.
    early_post_deploy: CommandRun | None = None
    post_deploy: CommandRun | None = None
    # What roll()'s ``at_ready`` returned, called once N+1's first replica was ready.
    at_ready: Any = None


def serve_release(fleet: Fleet, repo: Path, names: tuple[str, ...] = ("n-1", "n-2")) -> None:
    for name in names:
        fleet.start(name, repo)
    for name in names:
        fleet.wait_ready(name)


def roll(fleet: Fleet, old: Path, new: Path, steady: float = 1.0,
         backfill: bool = True, at_ready: Callable[[], Any] | None = None) -> Rollout:
    """With ``old`` serving as n-1 and n-2 (and traffic on): ``steady`` seconds as they
    are, then N+1 replaces them one by one, then ``old`` starts again on the new schema.

    Once N+1's first replica is ready its revision has registered the backfill, so (with
    ``backfill``) ``flask migrations post-deploy`` is tried once, too early (it must refuse:
    the contract relies on the backfill), then the runner starts, beside the replicas being
    replaced, as a Job or an operator would run it after the deploy's migration. Once the
    N replicas are gone and the runner is done, ``flask migrations post-deploy`` applies
    the contract while N+1 serves; the rollback to N comes after it, on the contracted
    schema. Without ``backfill`` both post-deploy runs are left out: they could only be
    refused. ``at_ready`` is called once N+1's first replica is ready (its migration done,
    before the runner and post-deploy), both releases serving: what it returns is kept in
    :attr:`Rollout.at_ready`, for a test to look at the schema N+1's start left.
    """
    time.sleep(steady)
    start = time.monotonic()
    early = post = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        fleet.start("next-1", new)
        to_ready = fleet.wait_ready("next-1", timeout=300)
        seen = at_ready() if at_ready is not None else None
        if backfill:
            early = run_post_deploy(new, fleet.url, fleet.workdir / "post-deploy-early.log",
                                    **fleet.env)
        runner = pool.submit(run_backfill, new, fleet.url, fleet.workdir / "backfill.log",
                             **fleet.env) if backfill else None
        codes = [fleet.retire("n-1")]
        fleet.start("next-2", new)
        fleet.wait_ready("next-2")
        codes.append(fleet.retire("n-2"))
        end = time.monotonic()
        ran = runner.result() if runner is not None else None
    if ran is not None and ran.exit_code == 0:
        post = run_post_deploy(new, fleet.url, fleet.workdir / "post-deploy.log", **fleet.env)
    fleet.start("n-again", old)
    fleet.wait_ready("n-again")
    readyz = http_get(fleet.replicas["n-again"].port, "/readyz")
    time.sleep(1)
    return Rollout(start, end, to_ready, codes, readyz, ran, early, post, seen)


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
