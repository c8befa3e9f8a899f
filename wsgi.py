"""The WSGI entry: ``gunicorn wsgi:app``, and what ``flask`` finds from the repository root.

A developer's ``flask ...`` with ``DATABASE_URL`` unset works on the embedded development
database, like the scripts; gunicorn never does (the entrypoint refuses an unset
``DATABASE_URL`` before it starts, and the image has no embedded server)."""

import click
from flask.cli import ScriptInfo

from backend import create_app
from backend.config import Config, ConfigError


def _development_config() -> Config | None:
    """The settings of a developer's ``flask`` command: DATABASE_URL, or when it is unset
    the embedded development database. Imported here, not at the top: migration_tools is
    in a checkout, not in the production image, where this is None and Config reads the
    environment as usual."""
    context = click.get_current_context(silent=True)
    if context is None or context.find_object(ScriptInfo) is None:
        return None
    try:
        from migration_tools.embedded import config_for_flask_command
    except ImportError:
        return None
    return config_for_flask_command()


try:
    app = create_app(_development_config())
except ConfigError as exc:  # one line for `flask db ...` too, not a traceback
    raise SystemExit(f"error: {exc}") from None
