"""The seam, for the blog: its tables (users who follow each other, posts, threaded
comments) and its JSON routes under /api."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the blog's tables and blueprint; an app with a login manager or a mail
    client would call their ``init_app(app)`` here too, after ``db``."""
    from backend import models  # noqa: F401  (registers every table)
    from backend.api import api

    app.register_blueprint(api)
