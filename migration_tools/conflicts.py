"""``scripts/resolve_conflict.sh``: make a history with two heads linear (or merged) again.

Two branches that each added a revision on the same parent leave two heads, and with two
heads the entrypoint, ``/readyz`` and ``create_migration.sh`` all refuse. The team guide
offers two fixes, and this module runs either one end to end, through Flask-Migrate's
config and our ``migrations/env.py`` like every other migration path:

``merge``
    ``flask db merge heads`` writes a revision whose parents are both heads, then
    ``flask db upgrade`` applies whatever the database lacks. Nothing is rolled back.

``rebase``
    The newer head (by its ``Create Date``, then its file name; ``--keep`` picks the other
    way) is moved on top of the other one: the database first rolls it back if it had it
    (its ``downgrade()`` runs, so rows already in the tables stay), then its file is
    written again with ``down_revision`` pointing at the other head, then ``flask db
    upgrade`` applies both in the new order. Re-parenting the file instead of
    autogenerating a new one keeps the hand-written body (backfills, concurrent indexes).

Both change the schema of the database they talk to, and ``rebase`` runs a downgrade, so
a database that is not on this machine is refused unless ``--force`` says otherwise:
resolving a conflict is a development-time step, production only ever sees the result.
Every refusal happens before anything is touched.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.script import Script, ScriptDirectory
from alembic.util import to_tuple
from flask import Flask
from sqlalchemy.engine import URL

from backend.migrate import LifecycleError
from backend.migrate.revisions import label

PROG = "resolve_conflict"
SCRIPT = "scripts/resolve_conflict.sh"
DEFAULT_MERGE_MESSAGE = "merge heads"
LOCAL_NAMES = ("localhost",)


class ResolveFailed(LifecycleError):
    """A step failed after something was changed: the message says where things stand."""


# --------------------------------------------------------------------------- local only


def database_hosts(url: URL, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every host libpq could connect to for ``url``; empty means the default unix socket.

    ``?host=`` and ``?hostaddr=`` override the URL's host and may list several hosts
    (comma separated, or repeated); without any, libpq falls back to ``PGHOST``.
    """
    env = os.environ if environ is None else environ
    hosts: list[str] = []
    for key in ("host", "hostaddr"):
        value = url.query.get(key)
        values = (value,) if isinstance(value, str) else tuple(value or ())
        for item in values:
            hosts.extend(part.strip() for part in item.split(",") if part.strip())
    if url.host:
        hosts.insert(0, url.host)
    if not hosts and env.get("PGHOST", "").strip():
        hosts.extend(p.strip() for p in env["PGHOST"].split(",") if p.strip())
    return hosts


def is_local_host(host: str) -> bool:
    """A unix socket directory, ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip()
    if not host or host.startswith(("/", "@")):
        return True
    bare = host.strip("[]").lower()
    if bare in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def non_local_hosts(url: URL, environ: Mapping[str, str] | None = None) -> list[str]:
    """The hosts of ``url`` that are not this machine (empty for a local database)."""
    return [host for host in database_hosts(url, environ) if not is_local_host(host)]


def check_local(url: URL, force: bool) -> None:
    """Refuse a database on another machine, before any connection is attempted."""
    remote = non_local_hosts(url)
    if not remote:
        return
    if force:
        print(f"{PROG}: --force: working on {', '.join(remote)}, which is not this machine",
              file=sys.stderr)
        return
    raise LifecycleError(
        f"DATABASE_URL points at {', '.join(remote)}, not a local development database "
        "(localhost, 127.0.0.1, ::1 or a unix socket); resolving changes its schema "
        "(and rebase runs a downgrade): pass --force to do it anyway"
    )


# --------------------------------------------------------------------------- the history

_CREATE_DATE = re.compile(r"^Create Date:[ \t]*(?P<date>.+?)[ \t]*$", re.M)
_FILE_STAMP = re.compile(r"^\d{8}_\d{4}_")


def created(script: Script) -> tuple[datetime, str]:
    """How old a revision is: its ``Create Date`` header, then its file name.

    The header is what Alembic wrote when the file was generated; the file name (which
    starts with the creation time here) breaks ties and covers a file without a header.
    """
    path = Path(script.path)
    when = datetime.min.replace(tzinfo=UTC)
    match = _CREATE_DATE.search(path.read_text())
    if match:
        try:
            parsed = datetime.fromisoformat(match["date"])
            when = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    return when, path.name


def head_scripts(scripts: ScriptDirectory) -> list[Script]:
    """The heads, oldest first, so "the newer one" is always the last."""
    return sorted((scripts.get_revision(rev) for rev in scripts.get_heads()), key=created)


def ancestors(scripts: ScriptDirectory, revision: str) -> set[str]:
    """``revision`` and every revision below it, through every parent of a merge."""
    return {script.revision for script in scripts.walk_revisions("base", revision)}


def common_ancestor(scripts: ScriptDirectory, first: str, second: str) -> str:
    """The revision the two heads fork from: the nearest one both descend from."""
    common = ancestors(scripts, first) & ancestors(scripts, second)
    below = set().union(*(ancestors(scripts, rev) - {rev} for rev in common)) if common else set()
    nearest = sorted(common - below)
    if len(nearest) != 1:
        found = ", ".join(nearest) or "none"
        raise LifecycleError(f"{first} and {second} do not fork from one revision (common "
                             f"ancestors: {found}): use `{SCRIPT} merge` instead")
    return nearest[0]


def _relative(path: Path | str) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


@dataclass
class RebasePlan:
    """What ``rebase`` will do, worked out from the files before anything is touched."""

    keep: Script
    move: Script
    ancestor: str
    branch: list[Script]  # the moved branch, root (child of the ancestor) first

    @property
    def root(self) -> Script:
        return self.branch[0]


_DOWN_REVISION = r"^(down_revision[ \t]*(?::[^=\n]*)?=[ \t]*)(['\"]){rev}\2([ \t]*)$"
_REVISES = r"^(Revises:[ \t]*){rev}([ \t]*)$"


def reparent_source(source: str, old_parent: str, new_parent: str) -> str:
    """The revision file's text with its parent changed in ``down_revision`` and ``Revises:``.

    Refuses (rather than guessing) when the file does not say ``down_revision = '<old>'``
    exactly once, e.g. a hand-built tuple: rewriting it is then a job for a person.
    """
    pattern = re.compile(_DOWN_REVISION.format(rev=re.escape(old_parent)), re.M)
    text, count = pattern.subn(lambda m: f"{m[1]}{m[2]}{new_parent}{m[2]}{m[3]}", source)
    if count != 1:
        raise LifecycleError(f"cannot re-parent: the file does not assign "
                             f"down_revision = '{old_parent}' exactly once")
    revises = re.compile(_REVISES.format(rev=re.escape(old_parent)), re.M)
    return revises.sub(lambda m: f"{m[1]}{new_parent}{m[2]}", text, count=1)


def plan_rebase(scripts: ScriptDirectory, keep: str | None) -> RebasePlan:
    """Choose the head to move and check that re-parenting it is well defined."""
    heads = head_scripts(scripts)
    if len(heads) != 2:
        raise LifecycleError(f"rebase moves one head onto the other, and this history has "
                             f"{len(heads)} heads ({', '.join(h.revision for h in heads)}): "
                             f"use `{SCRIPT} merge` instead")
    if keep:
        chosen = [h for h in heads if h.revision.startswith(keep.strip())]
        if len(chosen) != 1:
            raise LifecycleError(f"--keep {keep}: not one of the heads "
                                 f"({', '.join(h.revision for h in heads)})")
        kept = chosen[0]
        moved = next(h for h in heads if h is not kept)
    else:
        kept, moved = heads
    ancestor = common_ancestor(scripts, kept.revision, moved.revision)

    own = ancestors(scripts, moved.revision) - ancestors(scripts, kept.revision)
    branch = [s for s in reversed(list(scripts.walk_revisions("base", moved.revision)))
              if s.revision in own]
    allowed = {ancestor} | own
    roots = [s for s in branch if ancestor in to_tuple(s.down_revision, default=())]
    parents = [to_tuple(s.down_revision, default=()) for s in branch]
    if (len(roots) != 1 or any(len(p) != 1 for p in parents)
            or any(not set(p) <= allowed for p in parents)):
        raise LifecycleError(f"the branch of {moved.revision} is not a line of revisions on "
                             f"{ancestor}: use `{SCRIPT} merge` instead")
    waiting = [s.revision for s in scripts.walk_revisions("base", kept.revision)
               if own & set(to_tuple(s.dependencies, default=()))]
    if waiting:
        raise LifecycleError(f"{', '.join(waiting)} depends on the branch of {moved.revision}, "
                             f"which cannot then move after it: use `{SCRIPT} merge` instead")
    reparent_source(Path(roots[0].path).read_text(), ancestor, kept.revision)  # checks it
    return RebasePlan(keep=kept, move=moved, ancestor=ancestor, branch=branch)


def overview(scripts: ScriptDirectory) -> str:
    """The heads and both ways out, for a run without arguments."""
    heads = head_scripts(scripts)
    lines = []
    if len(heads) < 2:
        lines.append(f"{PROG}: the revision history has "
                     f"{f'one head ({heads[0].revision})' if heads else 'no revision'}: "
                     "nothing to resolve")
    else:
        lines.append(f"{PROG}: the revision history has {len(heads)} heads (oldest first):")
        for head in heads:
            lines.append(f"  {head.revision}  {head.doc}  ({_relative(head.path)})")
    older = heads[0].revision if len(heads) == 2 else "the older head"
    newer = heads[-1].revision if len(heads) == 2 else "the newer head"
    lines += [
        "Two ways to get one head again:",
        f"  {SCRIPT} merge [-m MESSAGE]",
        "      write a merge revision whose parents are all heads (flask db merge heads),",
        "      then bring the database to it (flask db upgrade)",
        f"  {SCRIPT} rebase [--keep REV]",
        f"      roll {newer} back if the database has it (its downgrade runs), re-parent",
        f"      its file onto {older}, then flask db upgrade; --keep REV keeps REV in place",
        "      and moves the other head instead. Values stored only in what the rolled-back",
        "      revision added are lost with its downgrade; merge rolls nothing back.",
        "Both work on DATABASE_URL (or the embedded development database when it is unset);",
        "add --force to either one to work on a database that is not on this machine.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the actions


def _say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def _applied(scripts: ScriptDirectory, current: Iterable[str]) -> set[str]:
    """Every revision a database at ``current`` has: the current ones and all below them."""
    return set().union(*(ancestors(scripts, rev) for rev in current))


def _current(app: Flask) -> list[str]:
    from backend.extensions import db
    from backend.migrate.database import describe_error
    from backend.migrate.revisions import current_revisions

    with app.app_context():
        try:
            with db.engine.connect() as connection:
                return current_revisions(connection)
        except Exception as exc:
            raise LifecycleError(f"cannot reach the database: {describe_error(exc)}") from None


def _check_known(scripts: ScriptDirectory, current: list[str]) -> None:
    from alembic.util import CommandError

    unknown = []
    for rev in current:
        try:
            scripts.get_revision(rev)
        except CommandError:
            unknown.append(rev)
    if unknown:
        raise LifecycleError(f"the database is at {', '.join(unknown)}, which these revision "
                             "files do not contain: the code is older than the database")


def _upgrade(app: Flask, changed: str) -> list[str]:
    """``flask db upgrade`` as the entrypoint runs it; say where the database ends up."""
    from backend.migrate.revisions import forget_scripts
    from backend.migrate.upgrade import upgrade_to_head

    _say("flask db upgrade")
    forget_scripts()  # the files just changed: parse them again
    before = _current(app)
    with app.app_context():
        try:
            upgrade_to_head(app)
        except LifecycleError as exc:
            raise ResolveFailed(f"{exc}; {changed}: fix the failing revision, then run "
                                "`flask db upgrade`") from None
    now = _current(app)
    # Counted here rather than taken from upgrade_to_head: on a merged history the other
    # branch's revisions are applied too, and they are not above the current revision.
    scripts = ScriptDirectory(app.extensions["migrate"].directory)
    applied = [s.revision for s in reversed(list(scripts.walk_revisions("base", "heads")))
               if s.revision in _applied(scripts, now) - _applied(scripts, before)]
    _say(f"applied {label(applied) if applied else 'nothing'}; the database is at "
         f"{label(now)} (head)")
    return now


def run_merge(app: Flask, message: str) -> Path:
    """Write the merge revision, then upgrade; return the merge file."""
    migrate_ext = app.extensions["migrate"]
    _say(f"flask db merge heads -m {shlex.quote(message)}")
    with app.app_context():
        script = command.merge(migrate_ext.migrate.get_config(), "heads", message=message)
    if script is None:
        raise ResolveFailed("alembic wrote no merge revision")
    path = Path(script.path)
    parents = ", ".join(to_tuple(script.down_revision, default=()))
    _say(f"wrote {_relative(path)}: merges {parents}")
    _upgrade(app, f"the merge revision {_relative(path)} stays")
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
    if old.name > parent_name or not _FILE_STAMP.match(old.name):
        return old, source
    now = datetime.now(UTC)
    renamed = old.with_name(now.strftime("%Y%m%d_%H%M_") + _FILE_STAMP.sub("", old.name))
    if renamed.name <= parent_name:
        return old, source
    stamped = _CREATE_DATE.sub(f"Create Date: {now.isoformat(sep=' ')}", source, count=1)
    return renamed, stamped


def run_rebase(app: Flask, scripts: ScriptDirectory, plan: RebasePlan,
               current: list[str]) -> Path:
    """Roll the moved branch back if applied, re-parent its root file, upgrade to head."""
    migrate_ext = app.extensions["migrate"]
    root = plan.root
    branch_ids = [s.revision for s in plan.branch]
    applied = _applied(scripts, current)
    rolled_back = [rev for rev in branch_ids if rev in applied]
    kept_own = ancestors(scripts, plan.keep.revision) - ancestors(scripts, plan.ancestor)

    _say(f"keeping {plan.keep.revision} ({plan.keep.doc}) in place; moving "
         f"{label(branch_ids)} ({plan.move.doc}) from {plan.ancestor} onto it")
    if rolled_back:
        # Roll back only the moved branch: if the database also has the kept branch, going
        # down to the ancestor would needlessly undo that one too.
        target = (f"{rolled_back[-1]}@-{len(rolled_back)}" if kept_own & applied
                  else plan.ancestor)
        _say(f"flask db downgrade {target}  (rolls back {label(reversed(rolled_back))}: "
             "its downgrade() runs; the rows stay, what only it added, such as the values "
             "of a column it created, goes with it)")
        with app.app_context():
            try:
                command.downgrade(migrate_ext.migrate.get_config(), target)
            except LifecycleError as exc:  # env.py's verdict: it says where the database is
                raise ResolveFailed(f"rolling back {label(rolled_back)}: {exc}; "
                                    "no file was changed") from None
            except Exception as exc:
                from backend.migrate.database import describe_error

                raise ResolveFailed(
                    f"rolling back {label(rolled_back)} failed: {describe_error(exc)}; the "
                    f"database is at {label(_current(app))}; no file was changed"
                ) from None
        _say(f"the database is at {label(_current(app))}")
    else:
        _say(f"the database ({label(current)}) does not have {label(branch_ids)}: "
             "nothing to roll back")

    old = Path(root.path)
    source = reparent_source(old.read_text(), plan.ancestor, plan.keep.revision)
    new, source = _target_path(plan, source)
    _say(f"deleting {_relative(old)} and writing it again on top of {plan.keep.revision}")
    new.write_text(source)
    if new != old:
        old.unlink()
    _drop_bytecode(old)
    _say(f"wrote {_relative(new)}: down_revision {plan.ancestor} -> {plan.keep.revision}")
    _upgrade(app, f"{_relative(new)} is re-parented onto {plan.keep.revision}")
    return new


# --------------------------------------------------------------------------- the command


def _parser() -> argparse.ArgumentParser:
    force_help = "work on a database that is not on this machine"
    parser = argparse.ArgumentParser(
        prog=SCRIPT, description="Resolve two migration heads: merge them, or rebase one.")
    parser.add_argument("--force", action="store_true", help=force_help)
    actions = parser.add_subparsers(dest="action", metavar="{merge,rebase}")
    merge = actions.add_parser("merge", help="add a merge revision, then upgrade")
    merge.add_argument("-m", "--message", default=DEFAULT_MERGE_MESSAGE,
                       help=f"the merge revision's message (default: {DEFAULT_MERGE_MESSAGE!r})")
    rebase = actions.add_parser("rebase", help="move the newer head onto the other, then upgrade")
    rebase.add_argument("--keep", metavar="REV",
                        help="the head that stays where it is (default: the older one)")
    for sub in (merge, rebase):
        # SUPPRESS: a subcommand's default must not undo a --force given before it.
        sub.add_argument("--force", action="store_true", default=argparse.SUPPRESS,
                         help=force_help)
    return parser


def resolve(action: str, message: str, keep: str | None, force: bool) -> None:
    """Refuse what cannot or must not be done, then run ``action`` against the database."""
    from backend import MIGRATIONS_DIR, create_app
    from backend.config import Config, parse_database_url
    from migration_tools.embedded import database_url_or_embedded

    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    heads = head_scripts(scripts)
    if len(heads) < 2:
        raise LifecycleError(f"the revision history has "
                             f"{f'one head ({heads[0].revision})' if heads else 'no revision'}: "
                             "nothing to resolve")
    if action == "merge" and not message.strip():
        raise LifecycleError("the merge message is empty: give one with -m MESSAGE")
    plan = plan_rebase(scripts, keep) if action == "rebase" else None

    if os.environ.get("DATABASE_URL", "").strip():
        check_local(parse_database_url(os.environ["DATABASE_URL"]), force)
    _say(f"heads: {', '.join(f'{h.revision} ({h.doc})' for h in heads)}")
    with database_url_or_embedded() as url:
        app = create_app(Config.from_env({**os.environ, "DATABASE_URL": url}))
        try:
            current = _current(app)
            _check_known(scripts, current)
            _say(f"the database is at {label(current)}")
            if plan is not None:
                run_rebase(app, scripts, plan, current)
            else:
                run_merge(app, message)
        finally:
            from backend.extensions import db

            with app.app_context():
                db.engine.dispose()
    final = ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()
    _say(f"done: the history has one head, {label(final)}")


def main(argv: list[str]) -> int:
    """Exit 0 when resolved, or when asked only to show the heads and the ways out (no
    action); 1 on a refusal or a failed step (one line on stderr saying which, and where
    things stand); 2 on a usage error."""
    from backend.config import ConfigError
    from backend.logs import configure_logging

    args = _parser().parse_args(argv)
    configure_logging()
    if args.action is None:
        from backend import MIGRATIONS_DIR

        print(overview(ScriptDirectory(str(MIGRATIONS_DIR))), file=sys.stderr)
        return 0
    try:
        resolve(args.action, getattr(args, "message", ""), getattr(args, "keep", None),
                args.force)
    except ResolveFailed as exc:
        print(f"{PROG}: failed: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, LifecycleError) as exc:
        print(f"{PROG}: refused: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
