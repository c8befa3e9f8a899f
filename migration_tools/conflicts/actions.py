"""Merge or rebase, run through Flask-Migrate and our env.py."""


from __future__ import annotations

import shlex
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from alembic.util import CommandError, to_tuple
from flask import Flask

from backend.extensions import db
from backend.migrate import LifecycleError
from backend.migrate.phases import POST, read_phases
from backend.migrate.revisions import current_revisions, forget_scripts, label
from backend.migrate.upgrade import upgrade_to, upgrade_to_head
from backend.postgres import describe_error
from migration_tools.branches import flask_command, unknown_revisions, ways_out
from migration_tools.conflicts import PROG, ResolveFailed
from migration_tools.conflicts.plan import (
    CREATE_DATE,
    FILE_STAMP,
    Conflict,
    RebasePlan,
    ancestors,
    relative,
    reparent_source,
)

# --------------------------------------------------------------------------- the actions


def say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def _applied(scripts: ScriptDirectory, current: Iterable[str]) -> set[str]:
    """Every revision a database at ``current`` has: the current ones and all below them."""
    return set().union(*(ancestors(scripts, rev) for rev in current))


def database_at(app: Flask) -> list[str]:

    with app.app_context():
        try:
            with db.engine.connect() as connection:
                return current_revisions(connection)
        except Exception as exc:
            raise LifecycleError(f"cannot reach the database: {describe_error(exc)}") from None


def check_known(scripts: ScriptDirectory, current: list[str], embedded: bool) -> None:
    """Rebase decides what to roll back from the database's revisions: refuse one at a
    revision these files lack (another branch's, after a switch), saying the ways out."""
    unknown = []
    for rev in current:
        try:
            scripts.get_revision(rev)
        except CommandError:
            unknown.append(rev)
    if unknown:
        raise LifecycleError(ways_out(scripts, unknown, embedded))


def _upgrade(app: Flask, changed: str, post: bool = False) -> list[str]:
    """``flask db upgrade`` as the entrypoint runs it; say where the database ends up.

    ``post``: the post-deploy phase was resolved. A database that has post-deploy revisions
    applied is brought to the resolved post-deploy head too, as it was at the head of that
    phase before; one that has none keeps them for ``flask migrations post-deploy``."""

    say("flask db upgrade")
    forget_scripts()  # the files just changed: parse them again
    before = database_at(app)
    scripts = ScriptDirectory(app.extensions["migrate"].directory)
    history = read_phases(scripts)
    tracks_post = bool(_applied(scripts, before) & history.post)
    with app.app_context():
        try:
            upgrade_to_head(app)
            if post and tracks_post:
                say(f"flask db upgrade {POST}@head  (the database has post-deploy revisions "
                    "applied: it gets the resolved post-deploy head too)")
                upgrade_to(app, f"{POST}@head")
        except LifecycleError as exc:
            raise ResolveFailed(f"{exc}; {changed}: fix the failing revision, then run "
                                "`flask db upgrade`") from None
    if post and not tracks_post:
        say("the post-deploy revisions stay for `flask migrations post-deploy`, which this "
            "database has not run")
    now = database_at(app)
    # Counted here rather than taken from upgrade_to_head: on a merged history the other
    # branch's revisions are applied too, and they are not above the current revision.
    applied = [s.revision for s in reversed(list(scripts.walk_revisions("base", "heads")))
               if s.revision in _applied(scripts, now) - _applied(scripts, before)]
    say(f"applied {label(applied) if applied else 'nothing'}; the database is at "
         f"{label(now)} (head)")
    return now


def run_merge(app: Flask, message: str, embedded: bool, conflict: Conflict) -> Path:
    """Write the merge revision, then upgrade; return the merge file.

    Only the conflict's heads are merged: beside a post-deploy branch, the heads of one
    phase, named by id. The merge needs only the files: it is written whatever the
    database's state. The upgrade after it needs a database that answers and is on this
    history; one that is not (unreachable, or at another branch's revision after a switch)
    keeps its state and gets a note saying why and what to do, and the merge stands."""
    migrate_ext = app.extensions["migrate"]
    target = conflict.merge_target
    named = target if isinstance(target, str) else " ".join(target)
    say(f"flask db merge {named} -m {shlex.quote(message)}")
    with app.app_context():
        script = command.merge(migrate_ext.migrate.get_config(), target, message=message)
    if script is None:
        raise ResolveFailed("alembic wrote no merge revision")
    path = Path(script.path)
    parents = ", ".join(to_tuple(script.down_revision, default=()))
    say(f"wrote {relative(path)}: merges {parents}")
    forget_scripts()
    scripts = ScriptDirectory(migrate_ext.directory)
    try:
        database_at(app)
    except LifecycleError as exc:
        say(f"the database was not upgraded ({exc}): run `{flask_command()} db upgrade` "
            "once it answers")
        return path
    unknown = unknown_revisions(app.config["SERVICE_CONFIG"].database_url, scripts)
    if unknown:
        say(f"the database was not upgraded: {ways_out(scripts, unknown, embedded)}")
        return path
    _upgrade(app, f"the merge revision {relative(path)} stays", post=conflict.post)
    return path


def _drop_bytecode(path: Path) -> None:
    # A rewrite that keeps the size and lands in the same second as the cached .pyc would
    # be shadowed by it: Python checks only mtime and size.
    for cached in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        cached.unlink(missing_ok=True)


def _target_path(plan: RebasePlan, source: str) -> tuple[Path, str]:
    """Where the re-parented file goes: same name, unless that would sort before its parent.

    File names start with the creation time, so a revision moved after a newer one gets a
    new stamp (and ``Create Date``) to keep ``ls`` in history order.
    """
    old = Path(plan.root.path)
    parent_name = Path(plan.keep.path).name
    if old.name > parent_name or not FILE_STAMP.match(old.name):
        return old, source
    now = datetime.now(UTC)
    renamed = old.with_name(now.strftime("%Y%m%d_%H%M_") + FILE_STAMP.sub("", old.name))
    if renamed.name <= parent_name:
        return old, source
    stamped = CREATE_DATE.sub(f"Create Date: {now.isoformat(sep=' ')}", source, count=1)
    return renamed, stamped


def run_rebase(app: Flask, scripts: ScriptDirectory, plan: RebasePlan,
               current: list[str], post: bool = False) -> Path:
    """Roll the moved branch back if applied, re-parent its root file, upgrade to head
    (``post``: the heads moved are post-deploy ones)."""
    migrate_ext = app.extensions["migrate"]
    root = plan.root
    branch_ids = [s.revision for s in plan.branch]
    applied = _applied(scripts, current)
    rolled_back = [rev for rev in branch_ids if rev in applied]
    kept_own = ancestors(scripts, plan.keep.revision) - ancestors(scripts, plan.ancestor)

    say(f"keeping {plan.keep.revision} ({plan.keep.doc}) in place; moving "
         f"{label(branch_ids)} ({plan.move.doc}) from {plan.ancestor} onto it")
    if rolled_back:
        # Roll back only the moved branch: if the database also has the kept branch, going
        # down to the ancestor would needlessly undo that one too. (A post-deploy revision
        # stays either way: one that depends on the moved branch refuses the rebase, and
        # one that depends on the ancestor or below is not undone by going down to it.)
        target = (f"{rolled_back[-1]}@-{len(rolled_back)}" if kept_own & applied
                  else plan.ancestor)
        say(f"flask db downgrade {target}  (rolls back {label(reversed(rolled_back))}: "
             "its downgrade() runs; the rows stay, what only it added, such as the values "
             "of a column it created, goes with it)")
        with app.app_context():
            try:
                command.downgrade(migrate_ext.migrate.get_config(), target)
            except LifecycleError as exc:  # env.py's verdict: it says where the database is
                raise ResolveFailed(f"rolling back {label(rolled_back)}: {exc}; "
                                    "no file was changed") from None
            except Exception as exc:

                raise ResolveFailed(
                    f"rolling back {label(rolled_back)} failed: {describe_error(exc)}; the "
                    f"database is at {label(database_at(app))}; no file was changed"
                ) from None
        say(f"the database is at {label(database_at(app))}")
    else:
        say(f"the database ({label(current)}) does not have {label(branch_ids)}: "
             "nothing to roll back")

    old = Path(root.path)
    source = reparent_source(old.read_text(), plan.ancestor, plan.keep.revision)
    new, source = _target_path(plan, source)
    say(f"deleting {relative(old)} and writing it again on top of {plan.keep.revision}")
    new.write_text(source)
    if new != old:
        old.unlink()
    _drop_bytecode(old)
    say(f"wrote {relative(new)}: down_revision {plan.ancestor} -> {plan.keep.revision}")
    _upgrade(app, f"{relative(new)} is re-parented onto {plan.keep.revision}", post=post)
    return new
