"""``scripts/create_migration.sh [--post-deploy] "message"``: autogenerate one revision, or
refuse.

A revision goes in one of two phases (backend/migrate/phases.py). Without ``--post-deploy``
it goes on the main line, on the pre-deploy head, even when a post-deploy branch stands
beside it as a second head (Alembic's own default, ``head``, fails on two heads). With
``--post-deploy`` it is a contract step: it goes on the post-deploy branch (the first one
starts it: ``down_revision = None``, ``branch_labels = ("post",)``; later ones sit on its
head) and ``depends_on`` the pre-deploy head, the main-line revision whose change it
completes.

Alembic compares the models with the schema at every head, both phases, and refuses a
database that is not there. So a development database behind either phase is brought to
both heads first (the embedded one, which is ours to change) or refused with the commands
that bring it there (any other). A background migration that a pending post-deploy revision
waits for is the one thing an upgrade refuses: on the embedded development database it is
run here, as ``flask migrations backfill run`` would (its tables hold a developer's rows,
small enough for that); anywhere else the refusal names that command.

Every refusal happens before Alembic writes anything, and if anything fails after the
file exists, the file is removed: a refused run leaves the tree as it found it.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import logging
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from flask import Flask

from backend import create_app
from backend.config import Config, ConfigError, database_url_setting
from backend.extensions import db
from backend.logs import configure_logging
from backend.migrate import LifecycleError
from backend.migrate.background import unfinished
from backend.migrate.phases import POST, Phases, ancestors, read_phases
from backend.migrate.revisions import SchemaStatus, ahead_note, find_revision, schema_status
from backend.migrate.upgrade import upgrade_to
from backend.postgres import describe_error
from migration_tools.branches import flask_command, ways_out
from migration_tools.embedded import database_url_or_embedded

log = logging.getLogger("backend.lifecycle")
SCRIPT = "scripts/create_migration.sh"
USAGE = f'usage: {SCRIPT} [--post-deploy] "what changed"'
_OP_CALL = re.compile(r"op\.(\w+)\(\s*(?:op\.f\()?['\"]?([\w.]*)")


# Operations that change columns or rows that already hold data: their revision deserves
# a data fixture (tests/migrations/data/<rev>.py) proving the rows survive.
TOUCHES_EXISTING = {"alter_column", "drop_column", "create_check_constraint",
                    "create_unique_constraint", "create_foreign_key", "drop_constraint",
                    "execute", "bulk_insert"}

# Contract operations: the previous release, still serving while this one deploys (and
# alone again after a code rollback), may read or write what they remove, rename or now
# require. Where each names its table and object among its positional arguments.
CONTRACT_TARGETS = {"drop_column": (0, 1), "drop_table": (0,), "drop_constraint": (1, 0),
                    "rename_table": (0,), "alter_column": (0, 1)}


def upgrade_ops(path: Path) -> list[tuple[str, str]]:
    """(operation, target) for each ``op.*`` call in the revision's upgrade()."""
    body = path.read_text().split("def upgrade", 1)[-1].split("def downgrade", 1)[0]
    return _OP_CALL.findall(body)


def summarize(ops: list[tuple[str, str]]) -> str:
    """One line naming the operations, e.g. add_column(tasks)."""
    calls = [f"{name}({target})" if target else name for name, target in ops]
    return ", ".join(calls) if calls else "no operations"


def contract_ops(path: Path) -> list[str]:
    """The contract operations in the revision's upgrade(), e.g. ``drop_column(widgets.size)``:
    drops, renames and ``alter_column(..., nullable=False)``. Read from the syntax tree,
    because what makes an ``alter_column`` a contract is a keyword on any of its lines."""
    try:
        tree = ast.parse(path.read_text())
    except SyntaxError:
        return []
    upgrade = next((node for node in tree.body
                    if isinstance(node, ast.FunctionDef) and node.name == "upgrade"), None)
    if upgrade is None:
        return []
    found: list[tuple[int, str]] = []
    for node in ast.walk(upgrade):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in ("op", "batch_op")
                and node.func.attr in CONTRACT_TARGETS):
            continue
        name = node.func.attr
        keywords = {kw.arg: kw.value for kw in node.keywords if kw.arg}
        detail = ""
        if name == "alter_column":
            nullable = keywords.get("nullable")
            if isinstance(nullable, ast.Constant) and nullable.value is False:
                detail = ", nullable=False"
            elif "new_column_name" in keywords:
                detail = ", new_column_name"
            else:
                continue
        names = [_literal(node.args[i]) if i < len(node.args) else "" for i in
                 CONTRACT_TARGETS[name]]
        if name == "drop_constraint" and not names[0]:
            names[0] = _literal(keywords.get("table_name"))
        target = ".".join(part for part in names if part)
        found.append((node.lineno, f"{name}({target}{detail})"))
    return [text for _, text in sorted(found)]


def _literal(node: ast.expr | None) -> str:
    """A name as the revision spells it: a string, or ``op.f("...")`` around one."""
    if isinstance(node, ast.Call) and node.args:
        node = node.args[0]
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""


def revision_id(path: Path) -> str:
    """The ``revision = '...'`` of a revision file; the file name's third part (what
    migrations/alembic.ini's file_template puts there) when a template left that out."""
    match = re.search(r"^revision\s*(?::[^=\n]*)?=\s*['\"]([\w-]+)['\"]", path.read_text(), re.M)
    return match[1] if match else path.name.split("_")[2]


@dataclass(frozen=True)
class Placement:
    """Where a new revision goes: the arguments Alembic's ``revision`` command takes."""

    head: str
    branch_label: str | None = None
    depends_on: str | None = None

    def describe(self) -> str:
        """One line for the summary, for a post-deploy revision."""
        where = ("starts the post-deploy branch (branch_labels ('post',))"
                 if self.branch_label else f"goes on the post-deploy head {self.head}")
        return f"{where}; depends_on {self.depends_on}, the pre-deploy head it completes"


def placement(history: Phases, post_deploy: bool) -> Placement:
    """Main line: on the pre-deploy head. Post-deploy: on the post-deploy head, or a new
    root labelled ``post`` (a root of its own: a label on a fork of the main line would
    spread to the main line's revisions), depending on the pre-deploy head."""
    pre = history.pre_heads[0] if history.pre_heads else None
    if not post_deploy:
        return Placement(head=pre or "head")
    if pre is None:
        raise LifecycleError("a post-deploy revision completes a main-line revision, and "
                             "the history has none yet: create the main-line revision "
                             f"first ({SCRIPT} \"...\")")
    if history.post_heads:
        return Placement(head=history.post_heads[0], depends_on=pre)
    return Placement(head="base", branch_label=POST, depends_on=pre)


def create_revision(app: Flask, message: str, catch_up: bool = False,
                    post_deploy: bool = False) -> Path:
    """Autogenerate a revision for the model changes; return the new file's path."""
    return create_placed(app, message, catch_up, post_deploy)[0]


def create_placed(app: Flask, message: str, catch_up: bool = False,
                  post_deploy: bool = False) -> tuple[Path, Placement]:
    """Autogenerate a revision for the model changes; return the new file's path and where
    in the history it went.

    The database is read only to diff the models against it. With ``catch_up`` (the
    embedded development database, which is ours to change), a database with pending
    revisions, in either phase, is brought to both heads first; any other is refused, and
    one at another branch's revision (after a git switch) gets the ways out.
    """

    with app.app_context():
        migrate_ext = app.extensions["migrate"]
        scripts = ScriptDirectory(migrate_ext.directory)
        history = read_phases(scripts)
        if history.problem():
            raise LifecycleError(history.problem())
        where = placement(history, post_deploy)
        try:
            with db.engine.connect() as connection:
                status = schema_status(connection, scripts)
        except Exception as exc:
            raise LifecycleError(f"cannot reach the database: {describe_error(exc)}") from None
        unknown = [rev for rev in status.current if find_revision(scripts, rev) is None]
        if unknown and not status.ahead:  # another branch's revision, after a git switch
            raise LifecycleError(ways_out(scripts, unknown, embedded=catch_up))
        if status.ahead:  # autogenerate would write a revision undoing the newer release's
            raise LifecycleError(f"{ahead_note(status.ahead, status.head)}: pull the newer "
                                 "code first, then create the revision on top of it")
        bring_to_every_head(app, scripts, status, catch_up)
        versions = Path(scripts.versions)
        before = set(versions.glob("*.py"))
        try:
            # Alembic's "Generating ... done" is progress: stdout holds only our summary.
            with contextlib.redirect_stdout(sys.stderr):
                command.revision(migrate_ext.migrate.get_config(opts=["autogenerate"]),
                                 message=message, autogenerate=True, head=where.head,
                                 branch_label=where.branch_label, depends_on=where.depends_on)
        except BaseException:
            for leftover in set(versions.glob("*.py")) - before:
                leftover.unlink()
            raise
        created = sorted(set(versions.glob("*.py")) - before)
        if not created:
            raise LifecycleError("the models have no change against the database: "
                                 "nothing to migrate, no file written")
        return created[0], where


def bring_to_every_head(app: Flask, scripts: ScriptDirectory, status: SchemaStatus,
                        catch_up: bool) -> None:
    """Autogenerate diffs the models against the schema at every head: bring the embedded
    development database there, or refuse any other database, saying what to run."""
    # Pending revisions are only listed when nothing worse (an unknown revision, an
    # edited one) was found, so a database with pending ones is safe to bring up.
    if status.reason and not status.pending:
        raise LifecycleError(f"the database is not at head ({status.reason}): resolve that "
                             "first, then create the new revision")
    behind = status.pending + status.post_deploy_pending
    if not behind:
        return
    flask = flask_command()
    waiting = backfills_waiting(scripts, status.post_deploy_pending)
    if not catch_up and status.pending:
        raise LifecycleError(
            f"the database is not at head ({status.reason}): apply them first with "
            f"`{flask} db upgrade` (same DATABASE_URL), then create the new revision")
    if not catch_up:
        first = (f"`{flask} migrations backfill run` (background migration(s) "
                 f"{', '.join(waiting)} unfinished), then " if waiting else "")
        raise LifecycleError(
            f"post-deploy revision(s) {', '.join(status.post_deploy_pending)} are not applied "
            "to the database, and a new revision is compared with the schema at every head: "
            f"apply them first with {first}`{flask} migrations post-deploy` (same "
            "DATABASE_URL), then create the new revision")
    post = len(status.post_deploy_pending)
    where = f" ({post} post-deploy); bringing it to both heads" if post else \
        "; bringing it to head"
    print(f"create_migration: the development database was {len(behind)} revision(s) "
          f"behind{where} first", file=sys.stderr)
    if waiting:
        run_backfills(app, waiting)
    upgrade_to(app, "heads")


def backfills_waiting(scripts: ScriptDirectory, post_pending: list[str]) -> list[str]:
    """The background migrations the pending post-deploy revisions wait for: registered by
    a revision they need and not done. An upgrade refuses to apply them before these are."""
    if not post_pending:
        return []
    with db.engine.connect() as connection:
        rows = unfinished(connection, ancestors(scripts, post_pending))
    return [row["name"] for row in rows]


def run_backfills(app: Flask, names: list[str]) -> None:
    """``flask migrations backfill run`` on the embedded development database, the command
    a developer would type, its output on stderr. Only there: elsewhere the refusal names
    it, since a backfill on shared data is an operator's decision."""
    print(f"create_migration: background migration(s) {', '.join(names)} are unfinished on "
          "the development database, and the post-deploy revisions wait for them: running "
          "`flask migrations backfill run` on it first", file=sys.stderr, flush=True)
    url = app.config["SERVICE_CONFIG"].database_url
    root = Path(app.extensions["migrate"].directory).parent
    env = {**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)}
    ran = subprocess.run([sys.executable, "-m", "flask", "migrations", "backfill", "run"],
                         cwd=root, env=env, stdout=sys.stderr, stdin=subprocess.DEVNULL,
                         check=False)
    if ran.returncode != 0:
        raise LifecycleError(f"`flask migrations backfill run` failed on the development "
                             f"database (exit {ran.returncode}, its reason above): fix the "
                             "background migration, then create the revision again")


def _give_to_directory_owner(path: Path) -> None:
    """Run as root (the development container, on a bind-mounted checkout), the new file
    would be root's on the host: give it to whoever owns ``migrations/versions``."""
    if os.geteuid() != 0:
        return
    owner = path.parent.stat()
    if (owner.st_uid, owner.st_gid) != (0, 0):
        os.chown(path, owner.st_uid, owner.st_gid)


def contract_suggestion(shown: str, message: str, contracts: list[str]) -> str:
    """The line for a main-line revision that holds a contract step: what it risks, which
    phase it belongs to, and the commands, ready to paste, that move it there."""
    again = f"{SCRIPT} --post-deploy {shlex.quote(message)}"
    return (f"  contract step ({', '.join(contracts)}): the previous release may still read "
            "or write what this removes while the new one deploys; it belongs to the "
            f"post-deploy phase: `rm {shlex.quote(shown)} && {again}`")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=SCRIPT,
        description="Write one migration revision from the changes in backend/models/.")
    parser.add_argument("--post-deploy", action="store_true",
                        help="a contract step (drop, rename, NOT NULL): on the post-deploy "
                             "branch, applied by `flask migrations post-deploy` once the "
                             "release is out")
    # For the script: where to write the new revision's id, for its lint.
    parser.add_argument("--revision-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("message", nargs="*", help="what changed")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    message = " ".join(args.message).strip()
    if not message:
        print(f"create_migration: a message is required. {USAGE}", file=sys.stderr)
        return 2

    configure_logging()
    embedded = not database_url_setting()
    with database_url_or_embedded() as url:
        try:
            app = create_app(Config.for_url(url))
            path, where = create_placed(app, message, catch_up=embedded,
                                        post_deploy=args.post_deploy)
        except (ConfigError, LifecycleError) as exc:
            print(f"create_migration: refused: {exc}", file=sys.stderr)
            return 1
    _give_to_directory_owner(path)
    revision = revision_id(path)
    if args.revision_file is not None:
        args.revision_file.write_text(revision + "\n")
    shown = str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    print(shown)
    ops = upgrade_ops(path)
    print(f"  upgrade: {summarize(ops)}")
    contracts = contract_ops(path)
    if args.post_deploy:
        print(f"  post-deploy: {where.describe()}")
    elif contracts:
        print(contract_suggestion(shown, message, contracts))
    touching = [name for name, _ in ops if name in TOUCHES_EXISTING]
    if touching:
        print(f"  it changes existing data ({', '.join(sorted(set(touching)))}): add rows and "
              f"checks for it in tests/migrations/data/{revision}.py (README, 'Testing "
              "migrations')")
    if args.post_deploy:
        print(f"  review it, then apply it with `{flask_command()} migrations post-deploy` "
              "once every replica serves the release it completes (the start and "
              "`flask db upgrade` leave it)")
    else:
        print(f"  review it, then apply it with `{flask_command()} db upgrade` (or restart "
              "the service)")
        # The previous release serves beside this one's start, never beside post-deploy.
        print("  before a release: scripts/check_compat.sh (does the previous release still "
              "work on it?)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
