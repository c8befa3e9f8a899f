"""The WSGI entry: ``gunicorn wsgi:app``, and what ``flask`` finds from the repository root."""

from backend import create_app
from backend.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:  # one line for `flask db ...` too, not a traceback
    raise SystemExit(f"error: {exc}") from None
