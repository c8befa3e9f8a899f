"""gunicorn settings, from the service's ``Config`` (every setting checked before anything)."""

import atexit
import fcntl
import gc
import glob
import os
import shutil
import sys
import tempfile

from backend.config import Config, ConfigError

# A malformed setting is one line and exit 2, before anything loads or migrates.
try:
    settings = Config.from_env()
except ConfigError as exc:
    print(f"refusing to start: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

# /metrics adds up what every process wrote (backend/serving/metrics.py): prometheus_client's
# multiprocess mode, whose directory must be named before any process imports it. The app,
# loaded after this file, imports it; so the directory is made here, in the master, once
# per start, and every worker inherits the variable. It lives under TMPDIR (/tmp by
# default: the one writable path of a read-only container). The master holds a lock on it
# while it lives and removes it as it exits; a master that could not (SIGKILL, a container
# killed) leaves its directory unlocked, and the next start under the same TMPDIR removes it.
# METRICS=off makes none, and drops the variable if the environment had it: nothing is
# written, and prometheus_client keeps its numbers in each process's memory, unread.
_METRICS_PREFIX = "backend-metrics-"
_METRICS_OWNER = ".owner"
_METRICS_MASTER = "BACKEND_METRICS_MASTER_PID"


def _remove_abandoned_metrics(base: str) -> None:
    for path in glob.glob(os.path.join(base, _METRICS_PREFIX + "*")):
        try:
            fd = os.open(os.path.join(path, _METRICS_OWNER), os.O_RDONLY)
        except OSError:
            continue  # not one of ours, or another user's
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its master still runs
        finally:
            os.close(fd)  # releases the lock, if it was taken
        shutil.rmtree(path, ignore_errors=True)


def _metrics_directory() -> str:
    """A fresh directory, locked before its name can be seen by another start's clean-up:
    made under a name that clean-up ignores, then renamed. gunicorn reads this file again
    on SIGHUP: the master then keeps the directory it made."""
    made = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.environ.get(_METRICS_MASTER) == str(os.getpid()) and os.path.isdir(made):
        return made
    base = tempfile.gettempdir()
    _remove_abandoned_metrics(base)
    staging = tempfile.mkdtemp(prefix="." + _METRICS_PREFIX, dir=base)
    owner = os.open(os.path.join(staging, _METRICS_OWNER), os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(owner, fcntl.LOCK_EX)  # held until this process (and its workers) end
    path = os.path.join(base, os.path.basename(staging)[1:])
    os.rename(staging, path)
    master = os.getpid()

    def remove() -> None:
        if os.getpid() == master:  # workers leave through sys.exit too, and keep it
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    os.environ[_METRICS_MASTER] = str(master)
    return path


if settings.metrics:
    try:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_directory()
    except OSError as exc:
        print(f"refusing to start: cannot make the metrics directory under "
              f"{tempfile.gettempdir()} (set TMPDIR to a writable directory): {exc}",
              file=sys.stderr)
        raise SystemExit(2) from None
else:
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

# Only now: these import the app's modules, and with them prometheus_client.
from prometheus_client import multiprocess  # noqa: E402

from backend.migrate.prestart import prepare_to_serve  # noqa: E402
from backend.serving.worker import prepare_worker  # noqa: E402

bind = [f"0.0.0.0:{settings.port}"]
# METRICS_PORT: a second listener, for /metrics alone (backend/serving/metrics.py tells the
# two apart by the port each connection was accepted on).
if settings.metrics and settings.metrics_port is not None:
    bind.append(f"0.0.0.0:{settings.metrics_port}")
workers = settings.web_concurrency
# Threads, not one request per process: a request waiting on a slow or hung database holds
# one thread, and /healthz (which touches no database) still finds a free one. The
# docs/operations.md, "Serving under load and faults", gives the measurements behind the choice.
worker_class = "backend.serving.worker.GracefulThreadWorker"
threads = settings.threads
# Load the app once in the master: workers fork with the imports done, so start-up
# costs one import of the app instead of one per worker.
preload_app = True
# Heartbeat files in memory: a container's overlay disk can stall them.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
timeout = settings.worker_timeout
graceful_timeout = settings.graceful_timeout
# One line per request (ACCESS_LOG=0 turns them off), gunicorn's usual line plus the
# duration and the pid of the worker that answered, as <pid>.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms %(p)s'
errorlog = "-"
loglevel = settings.log_level


def on_starting(server) -> None:
    """In the master, after the app is loaded and before the port opens: wait for the
    database and migrate (unless MIGRATE_ON_START=0), then close every connection that
    took, so that nothing opened here is inherited by a worker."""
    prepare_to_serve(server.app.wsgi(), migrate=settings.migrate_on_start)


def pre_fork(server, worker) -> None:
    """In the master, right before each fork: put everything it holds (the preloaded app
    and its imports) out of the garbage collector's reach. A worker's full collection then
    walks only the objects it made itself (over the whole inherited heap it paused every
    thread for tens of milliseconds, a p99 of its own), and leaving the inherited objects'
    headers untouched keeps their pages shared with the master."""
    gc.freeze()


def post_fork(server, worker) -> None:
    """In each new worker (the first ones and every re-fork): bound every database wait."""
    prepare_worker(server.app.wsgi())


def child_exit(server, worker) -> None:
    """In the master, once a worker has gone (stopped, killed or timed out): its gauges
    of live processes (connections in use, the breaker) go with it. Its counters stay: the
    requests it answered were answered."""
    if settings.metrics:
        multiprocess.mark_process_dead(worker.pid)


# No control socket: nothing here uses gunicornc, and the home directory may be read-only.
control_socket_disable = True

# gunicorn's own lines in the service's format: text, or one JSON object per line.
_formatter = {"()": "backend.logs.JsonFormatter"} if settings.log_format == "json" else {
    "()": "backend.logs.MaskingFormatter",
    "fmt": "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
    "datefmt": "%Y-%m-%dT%H:%M:%S",
}
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"service": _formatter},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "service",
                    "stream": "ext://sys.stderr"},
    },
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["console"],
                           "propagate": False},
        "gunicorn.access": {"level": "INFO" if settings.access_log else "WARNING",
                            "handlers": ["console"], "propagate": False},
        # Alembic announces its plugins at import time; nothing a reader needs.
        "alembic.runtime.plugins": {"level": "WARNING"},
    },
}
