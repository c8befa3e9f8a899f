"""The WSGI entry: ``gunicorn wsgi:app``, and what ``flask`` finds from the repository root.

A developer's ``flask ...`` with ``DATABASE_URL`` unset works on the embedded development
database, like the scripts; gunicorn never does (the entrypoint refuses an unset
``DATABASE_URL`` before it starts, and the image has no embedded server)."""

import click
from flask.cli import ScriptInfo

from backend import create_app
from backend.config import ConfigError


def _loaded_by_flask_command() -> bool:
    context = click.get_current_context(silent=True)
    return context is not None and context.find_object(ScriptInfo) is not None


try:
    if _loaded_by_flask_command():
        from backend.lifecycle.embedded import config_for_flask_command

        app = create_app(config_for_flask_command())
    else:
        app = create_app()
except ConfigError as exc:  # one line for `flask db ...` too, not a traceback
    raise SystemExit(f"error: {exc}") from None
