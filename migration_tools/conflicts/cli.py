"""``scripts/resolve_conflict.sh``'s command line."""


from __future__ import annotations

import argparse
import os
import sys

from alembic.script import ScriptDirectory

from backend import MIGRATIONS_DIR, create_app
from backend.config import Config, ConfigError, database_url_setting, parse_database_url
from backend.extensions import db
from backend.logs import configure_logging
from backend.migrate import LifecycleError
from backend.migrate.revisions import label
from migration_tools.command_line import progress
from migration_tools.conflicts import DEFAULT_MERGE_MESSAGE, PROG, SCRIPT, ResolveFailed
from migration_tools.conflicts.actions import check_known, database_at, run_merge, run_rebase, say
from migration_tools.conflicts.hosts import check_local
from migration_tools.conflicts.plan import find_conflict, overview, plan_rebase
from migration_tools.embedded import database_url_or_embedded

# --------------------------------------------------------------------------- the command


def _parser() -> argparse.ArgumentParser:
    force_help = "work on a database that is not on this machine"
    parser = argparse.ArgumentParser(
        prog=SCRIPT, description="Resolve two migration heads (beside a post-deploy "
        "branch: two heads of one phase): merge them, or rebase one.")
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

    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    conflict = find_conflict(scripts)
    if not conflict.exists:
        raise LifecycleError(conflict.nothing_to_resolve())
    heads = conflict.heads
    if action == "merge" and not message.strip():
        raise LifecycleError("the merge message is empty: give one with -m MESSAGE")
    plan = plan_rebase(scripts, keep, conflict) if action == "rebase" else None

    embedded = not database_url_setting()
    if not embedded:
        check_local(parse_database_url(os.environ["DATABASE_URL"]), force)
    if conflict.phase:
        say(f"{conflict.phase} heads: {', '.join(f'{h.revision} ({h.doc})' for h in heads)} "
            f"(the other phase's, {', '.join(conflict.others)}, are left alone)")
    else:
        say(f"heads: {', '.join(f'{h.revision} ({h.doc})' for h in heads)}")
    with database_url_or_embedded() as url:
        app = create_app(Config.for_url(url))
        try:
            if plan is not None:  # what to roll back depends on the database's revisions
                at = database_at(app)
                check_known(scripts, at, embedded)
                say(f"the database is at {label(at)}")
                run_rebase(app, scripts, plan, at, post=conflict.post)
            else:  # needs only the files; the upgrade after it, a database it can take
                run_merge(app, message, embedded, conflict)
        finally:

            with app.app_context():
                db.engine.dispose()
    after = find_conflict(ScriptDirectory(str(MIGRATIONS_DIR)))
    if after.exists:  # the other phase had several heads too
        say(f"done with the {conflict.phase} heads; {after.whose} have {len(after.heads)} "
            f"heads too: run `{SCRIPT} {action}` again for them")
    elif conflict.phase:
        say(f"done: the history has {after.heads_now()}")
    else:
        say(f"done: the history has one head, {label(h.revision for h in after.heads)}")


def main(argv: list[str]) -> int:
    """Exit 0 when resolved, or when asked only to show the heads and the ways out (no
    action); 1 on a refusal or a failed step (one line on stderr saying which, and where
    things stand); 2 on a usage error."""

    args = _parser().parse_args(argv)
    configure_logging()
    if args.action is None:

        print(overview(ScriptDirectory(str(MIGRATIONS_DIR))), file=sys.stderr)
        return 0
    try:
        resolve(args.action, getattr(args, "message", ""), getattr(args, "keep", None),
                args.force)
    except ResolveFailed as exc:
        progress(PROG, f"failed: {exc}")
        return 1
    except (ConfigError, LifecycleError) as exc:
        progress(PROG, f"refused: {exc}")
        return 1
    return 0
