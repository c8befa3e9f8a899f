"""The seam: the one place the service meets the application it serves.

Everything else in ``backend/`` (settings, serving, health, the migration lifecycle) and
every tool works on whatever tables ``db.metadata`` holds and whatever revisions
``migrations/versions/`` holds; none of it imports the application. The example behind this
seam is a small task tracker: its models (``backend/models/``), its API (``backend/api/``),
its history (``migrations/versions/``), its migration data files
(``tests/migrations/data/``) and its tests (``tests/api/``). A team adopting the service
replaces those and this function's body (docs/adopting.md).
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the application's tables and routes on ``app``.

    Importing the models is what puts every table on ``db.metadata``, which autogenerate and
    the schema checks compare the database with; extensions the models or views need (a
    login manager, a mail client) are initialised here too, after ``db``.
    """
    from backend import models  # noqa: F401  (registers every table)
    from backend.api import api
    from backend.api.commands import users_cli

    app.register_blueprint(api)
    app.cli.add_command(users_cli)
