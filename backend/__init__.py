"""The service's app factory."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from werkzeug.routing import IntegerConverter

from backend.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# The largest request body the API reads; bigger ones get 413 before any is read.
# Every resource here is a few short strings: 64 KiB is generous.
MAX_BODY_BYTES = 64 * 1024


class AsciiIntConverter(IntegerConverter):
    """``<int:...>`` matching ASCII digits only: werkzeug's ``\\d+`` also takes the
    fullwidth U+FF11 and other scripts' digits, which int() reads as 1: one resource would
    answer to many URLs."""

    regex = r"[0-9]+"


def create_app(config: Config | None = None) -> Flask:
    """Build the app. Settings come from the environment unless a ``Config`` is given."""
    from backend import application
    from backend.cli import migrations_cli
    from backend.extensions import db, migrate
    from backend.logs import configure_logging
    from backend.serving import body, metrics, outage
    from backend.serving.engine import engine_options, forbid_inherited_connections
    from backend.serving.health import health

    config = config or Config.from_env()
    configure_logging(config.log_format)

    app = Flask(__name__)
    app.url_map.converters["int"] = AsciiIntConverter
    app.config.update(
        SERVICE_CONFIG=config,
        SQLALCHEMY_DATABASE_URI=config.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(config),
        JSON_SORT_KEYS=False,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    db.init_app(app)
    with app.app_context():
        forbid_inherited_connections(db.engine)
    metrics.init_app(app)  # first: its clock starts before any other hook can answer
    outage.init_app(app)
    body.init_app(app)
    migrate.init_app(
        app, db, directory=str(MIGRATIONS_DIR),
        compare_type=True, compare_server_default=True, render_as_batch=False,
    )
    app.register_blueprint(health)
    app.register_blueprint(metrics.blueprint)
    application.init_app(app)
    app.cli.add_command(migrations_cli)
    return app
