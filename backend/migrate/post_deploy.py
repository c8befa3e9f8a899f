"""``flask migrations post-deploy``: the contract revisions, once the release is out.

The start applies pre-deploy revisions only (backend/migrate/phases.py). What is left, the
post-deploy branch, runs here, after every replica serves the release that brought it:
then nothing still running reads what a contract removes. It refuses, before any change,
while the release is not out (a pre-deploy revision the post-deploy ones need is pending)
and, through the same refusal every upgrade has (backend/migrate/apply.py), while a
background migration they rely on is unfinished, naming it.
"""

from __future__ import annotations

import logging

from flask import Flask

from backend.extensions import db
from backend.migrate import LifecycleError
from backend.migrate.phases import POST, ancestors, read_phases
from backend.migrate.revisions import SchemaStatus, load_scripts, schema_status
from backend.migrate.upgrade import upgrade_to

log = logging.getLogger("backend.lifecycle")


def where_it_stands(app: Flask) -> SchemaStatus:
    settings = app.config["SERVICE_CONFIG"]
    scripts = load_scripts(app.extensions["migrate"].directory)
    with db.engine.connect() as connection:
        return schema_status(connection, scripts, allow_edited=settings.allow_edited,
                             allow_ahead=settings.allow_ahead)


def apply_post_deploy(app: Flask) -> list[str]:
    """Apply the pending post-deploy revisions; return them (empty: nothing to do)."""
    scripts = load_scripts(app.extensions["migrate"].directory)
    history = read_phases(scripts)
    if not history.has_post:
        return []
    if history.problem():
        raise LifecycleError(history.problem())
    status = where_it_stands(app)
    if status.reason and not status.pending:  # edited, unknown, ahead refused: as the start
        raise LifecycleError(status.reason)
    waiting = status.post_deploy_pending
    if not waiting:
        return []
    needed = ancestors(scripts, waiting)
    not_out = [rev for rev in status.pending if rev in needed]
    if not_out:
        raise LifecycleError(
            f"the release is not out yet: pre-deploy revision(s) {', '.join(not_out)}, which "
            f"the post-deploy revision(s) {', '.join(waiting)} need, are pending (a replica's "
            "start applies them): deploy the release first, then run this again")
    upgrade_to(app, f"{POST}@head")
    return waiting


def remind(app: Flask) -> None:
    """After a start: say what waits for ``flask migrations post-deploy``, if anything."""
    if not read_phases(load_scripts(app.extensions["migrate"].directory)).has_post:
        return
    waiting = where_it_stands(app).post_deploy_pending
    if waiting:
        log.info("%d post-deploy revision(s) wait: %s; run `flask migrations post-deploy` "
                 "once every replica serves this release", len(waiting), ", ".join(waiting),
                 extra={"fields": {"event": "post_deploy_pending", "revisions": waiting}})
