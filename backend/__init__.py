"""The service's app factory."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from backend.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def create_app(config: Config | None = None) -> Flask:
    """Build the app. Settings come from the environment unless a ``Config`` is given."""
    from backend import models  # noqa: F401  (registers every table on db.metadata)
    from backend.api import api
    from backend.cli import migrations_cli
    from backend.extensions import db, migrate
    from backend.health import health
    from backend.logs import configure_logging

    config = config or Config.from_env()
    configure_logging(config.log_format)

    app = Flask(__name__)
    app.config.update(
        SERVICE_CONFIG=config,
        SQLALCHEMY_DATABASE_URI=config.database_url,
        SQLALCHEMY_ENGINE_OPTIONS={
            "pool_pre_ping": True,
            "connect_args": {"connect_timeout": 5, "application_name": "backend"},
        },
        JSON_SORT_KEYS=False,
    )
    db.init_app(app)
    migrate.init_app(
        app, db, directory=str(MIGRATIONS_DIR),
        compare_type=True, compare_server_default=True, render_as_batch=False,
    )
    app.register_blueprint(health)
    app.register_blueprint(api)
    app.cli.add_command(migrations_cli)
    return app
