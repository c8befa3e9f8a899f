"""gunicorn settings, from the service's ``Config`` (every setting checked before anything)."""

import os
import sys

from backend.config import Config, ConfigError
from backend.migrate.prestart import prepare_to_serve
from backend.serving.worker import prepare_worker

# A malformed setting is one line and exit 2, before anything loads or migrates.
try:
    settings = Config.from_env()
except ConfigError as exc:
    print(f"refusing to start: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

bind = f"0.0.0.0:{settings.port}"
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


def post_fork(server, worker) -> None:
    """In each new worker (the first ones and every re-fork): bound every database wait."""
    prepare_worker(server.app.wsgi())


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
