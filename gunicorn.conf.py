"""gunicorn settings, read from the environment the entrypoint passes on."""

import os
import sys

from backend.config import Config, ConfigError

# A malformed setting is one line and exit 2, before anything loads.
try:
    Config.from_env()
except ConfigError as exc:
    print(f"refusing to start: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Load the app once in the master: workers fork with the imports done, so start-up
# costs one import of the app instead of one per worker.
preload_app = True
# Heartbeat files in memory: a container's overlay disk can stall them.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")


def on_starting(server) -> None:
    """Migrate in the master, after the app is loaded and before the port opens.

    MIGRATE_ON_START=0 serves without migrating (``/readyz`` then says what is pending).
    """
    if os.environ.get("MIGRATE_ON_START", "1") != "0":
        from backend.lifecycle.prestart import migrate_before_serving

        migrate_before_serving(server.app.wsgi())


# No control socket: nothing here uses gunicornc, and the home directory may be read-only.
control_socket_disable = True

# gunicorn's own lines in the service's format: text, or one JSON object per line.
_json = os.environ.get("LOG_FORMAT", "text").strip().lower() == "json"
_formatter = {"()": "backend.logs.JsonFormatter"} if _json else {
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
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        # Alembic announces its plugins at import time; nothing a reader needs.
        "alembic.runtime.plugins": {"level": "WARNING"},
    },
}
