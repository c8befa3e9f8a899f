"""Liveness and readiness.

``/healthz`` says the process runs and touches nothing else, so a slow database never gets
a healthy worker restarted. ``/readyz`` says whether this replica should get traffic: the
database answers and its schema is the one this code was written for.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify
from sqlalchemy.exc import SQLAlchemyError

from backend.extensions import db
from backend.lifecycle.database import describe_error
from backend.lifecycle.revisions import disk_checksums, load_scripts, schema_status

health = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@health.get("/healthz")
def healthz():
    return jsonify(status="ok")


@health.get("/readyz")
def readyz():
    directory = current_app.extensions["migrate"].directory
    scripts = load_scripts(directory)
    settings = current_app.config["SERVICE_CONFIG"]
    try:
        with db.engine.connect() as connection:
            status = schema_status(connection, scripts, disk_checksums(directory),
                                   settings.allow_edited)
    except SQLAlchemyError as exc:
        reason = describe_error(exc)
        log.warning("readiness: database unavailable: %s", reason)
        body = {"status": "unavailable", "database": "error", "current": [],
                "head": sorted(scripts.get_heads()), "pending": [],
                "reason": f"database unavailable: {reason}"}
        return jsonify(body), 503
    body = {"status": "ready" if status.at_head else "not ready", "database": "ok",
            **status.as_dict()}
    return jsonify(body), 200 if status.at_head else 503
