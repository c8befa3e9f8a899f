"""``scripts/migration_graph.sh``: the revision history as a Mermaid flowchart.

``flask db history`` prints a list, where a branch or a merge is easy to miss; two heads
are exactly what breaks a deploy (``/readyz`` and the entrypoint refuse them), so a picture
that shows the fork, the heads and where the database stands answers "what do I merge?"
at a glance. Mermaid renders in GitHub, GitLab and most editors without any tool.

A history may have two phases (backend/migrate/phases.py): the main line, and a post-deploy
branch with a root of its own whose revisions each ``depends_on`` the main-line revision they
complete. Post-deploy revisions are marked (``[post-deploy]`` and the ``post`` class), their
``depends_on`` edges dotted, so the branch reads as what it is: contracts waiting for
``flask migrations post-deploy``, not a fork to merge. Its head beside the main line's is
the normal shape; several heads within one phase are what every deploy command refuses, and
those heads are flagged (the ``conflict`` class, and the refusal's own message on stderr).

The graph comes from the revision files alone. The database only adds a marker, and is
optional: an unset or unreachable ``DATABASE_URL`` still gets the graph (with a note on
stderr), and no embedded server is started, since drawing a picture must not have side
effects.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from alembic.script import ScriptDirectory
from alembic.util import to_tuple
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from backend import MIGRATIONS_DIR
from backend.config import ConfigError, mask_url, parse_database_url
from backend.migrate.phases import POST, read_phases
from backend.migrate.revisions import current_revisions
from backend.postgres import describe_error
from migration_tools.branches import whereabouts
from migration_tools.command_line import progress
from migration_tools.embedded import DATA_DIR, embedded_database_url

USAGE = "usage: scripts/migration_graph.sh [--output FILE]"
PROG = "migration_graph"

# Heads are what a deploy upgrades to, so they stand out; the database's revision gets a
# second, distinct style so that both show on a node that is head and current. Post-deploy
# revisions get a fill of their own; a head among several in one phase, a red border. Later
# class lines win where styles overlap, so the order below is the order of importance.
CLASS_DEFS = (
    "classDef post fill:#fff3e0,stroke:#ef6c00",
    "classDef head fill:#e3f2fd,stroke:#1565c0,stroke-width:3px",
    "classDef current fill:#e8f5e9,stroke:#2e7d32,stroke-width:3px,stroke-dasharray:5 3",
    "classDef conflict stroke:#c62828,stroke-width:4px",
)


@dataclass(frozen=True)
class Node:
    """One revision as the graph needs it: identity, label, parents and markers."""

    revision: str
    message: str
    parents: tuple[str, ...]
    dependencies: tuple[str, ...]
    branch_labels: tuple[str, ...]
    is_head: bool
    post_deploy: bool = False


def history_nodes(scripts: ScriptDirectory) -> list[Node]:
    """Every revision, parents before children, so the chart reads top (base) to bottom.

    ``walk_revisions`` goes from the heads down; reversing it keeps its topological order
    (a ``depends_on`` target before the revision that needs it). ``down_revision`` is a
    tuple on a merge revision: each entry becomes an edge.
    """
    heads = set(scripts.get_heads())
    post = read_phases(scripts).post
    nodes = []
    for script in reversed(list(scripts.walk_revisions())):
        nodes.append(Node(
            revision=script.revision,
            message=(script.doc or "").strip(),
            parents=to_tuple(script.down_revision, default=()),
            dependencies=tuple(scripts.get_revision(name).revision
                               for name in to_tuple(script.dependencies, default=())),
            branch_labels=tuple(sorted(script.branch_labels or ())),
            is_head=script.revision in heads,
            post_deploy=script.revision in post,
        ))
    return nodes


def conflicting_heads(nodes: list[Node]) -> list[str]:
    """The heads no command can choose between: several within one phase (with a
    post-deploy branch, its head beside the main line's is the normal shape). The same rule
    as ``Phases.problem()``, on the nodes drawn."""
    pre = [n.revision for n in nodes if n.is_head and not n.post_deploy]
    post = [n.revision for n in nodes if n.is_head and n.post_deploy]
    return [rev for heads in (pre, post) if len(heads) > 1 for rev in heads]


def _node_id(revision: str) -> str:
    # A bare hex id may start with a digit or spell a Mermaid keyword ("end"): prefix it.
    return f"rev_{revision}"


def _escape(text: str) -> str:
    """Make a message safe inside a quoted Mermaid label (quotes and markup characters)."""
    for raw, entity in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, entity)
    return " ".join(text.split())


def render_mermaid(nodes: list[Node], current: Iterable[str] = ()) -> str:
    """The Mermaid text: one node per revision, one edge per parent, heads and current marked.

    Labels say "(head)" and "(current)" in words as well as by class, so the markers survive
    a renderer that ignores styles (or a reader of the raw text).
    """
    current = set(current)
    lines = ["flowchart TD"]
    if not nodes:
        lines.append('    empty["no revisions yet"]')
        return "\n".join(lines) + "\n"
    conflict = set(conflicting_heads(nodes))
    for node in nodes:
        markers = [m for m, on in (("head", node.is_head), ("current", node.revision in current),
                                   ("to merge", node.revision in conflict)) if on]
        title = node.revision + "".join(f" ({m})" for m in markers)
        if node.post_deploy:
            title += " [post-deploy]"
        labels = [label for label in node.branch_labels
                  if not (node.post_deploy and label == POST)]
        if labels:
            title += f" [{', '.join(labels)}]"
        label = f"{title}<br/>{_escape(node.message)}" if node.message else title
        lines.append(f'    {_node_id(node.revision)}["{label}"]')
    for node in nodes:
        for parent in node.parents:
            lines.append(f"    {_node_id(parent)} --> {_node_id(node.revision)}")
        for dependency in node.dependencies:
            lines.append(f"    {_node_id(dependency)} -.->|depends on| {_node_id(node.revision)}")
    lines.extend(f"    {definition}" for definition in CLASS_DEFS)
    post = [_node_id(n.revision) for n in nodes if n.post_deploy]
    if post:
        lines.append(f"    class {','.join(post)} post")
    heads = [_node_id(n.revision) for n in nodes if n.is_head]
    if heads:
        lines.append(f"    class {','.join(heads)} head")
    known = {n.revision for n in nodes}
    marked = [_node_id(rev) for rev in sorted(current) if rev in known]
    if marked:
        lines.append(f"    class {','.join(marked)} current")
    if conflict:
        lines.append(f"    class {','.join(_node_id(rev) for rev in sorted(conflict))} conflict")
    return "\n".join(lines) + "\n"


def database_revisions(environ: dict[str, str] | None = None) -> tuple[list[str] | None, str]:
    """The database's current revisions, or ``None`` and the reason they are unknown.

    ``DATABASE_URL``, else the embedded development database when this checkout has one
    (started for the moment if ``make run`` is not running), like every development
    command. Never raises: the graph is useful without a database, so any failure becomes
    a note for stderr instead of an error.
    """
    env = os.environ if environ is None else environ
    if env.get("DATABASE_URL", "").strip():
        try:
            return _revisions_at(parse_database_url(env["DATABASE_URL"]))
        except ConfigError as exc:
            return None, str(exc)
    if not DATA_DIR.is_dir():
        return None, "DATABASE_URL is not set and there is no embedded development database"
    try:
        with embedded_database_url() as raw:
            current, detail = _revisions_at(parse_database_url(raw))
    except (SystemExit, Exception) as exc:  # not installed, or it would not start
        return None, f"the embedded development database did not start: {exc}"
    return current, detail if current is None else "the embedded development database"


def _revisions_at(url: URL) -> tuple[list[str] | None, str]:
    engine = create_engine(url, connect_args={"connect_timeout": 5,
                                              "application_name": "migration_graph"})
    try:
        with engine.connect() as connection:
            return current_revisions(connection), f"the database {mask_url(url)}"
    except Exception as exc:  # any failure only costs the marker
        return None, f"cannot reach the database {mask_url(url)}: {describe_error(exc)}"
    finally:
        engine.dispose()


def unknown_note(scripts: ScriptDirectory, unknown: list[str]) -> str:
    """One line on database revisions the files lack: after a branch switch, where git has
    them (the graph is drawn all the same; it needs only the files)."""
    holder = whereabouts(scripts, unknown).holder
    where = (f": its file is on {'branch' if holder.ref != holder.commit else 'commit'} "
             f"{holder.ref} ({holder.path})" if holder else "")
    return (f"the database is at {', '.join(unknown)}, which these revision files do not "
            f"contain (another branch's, or newer code's){where}")


def heads_line(nodes: list[Node]) -> str:
    """How many revisions and heads; with a post-deploy branch, each head's phase."""
    heads = [n for n in nodes if n.is_head]
    phased = any(n.post_deploy for n in nodes)
    names = [f"{n.revision} ({'post-deploy' if n.post_deploy else 'pre-deploy'})" if phased
             else n.revision for n in heads]
    post = sum(1 for n in nodes if n.post_deploy)
    return (f"{len(nodes)} revision(s)" + (f" ({post} post-deploy)" if post else "")
            + f", {len(heads)} head(s): {', '.join(names) or 'none'}")


def main(argv: list[str]) -> int:
    """Exit 0 whenever the chart was produced: a missing database only costs the marker."""
    parser = argparse.ArgumentParser(
        prog="scripts/migration_graph.sh",
        description="Print the migration history as a Mermaid flowchart.")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="write the chart to FILE instead of stdout "
                             "(a .md file gets a ```mermaid fence)")
    args = parser.parse_args(argv)

    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    nodes = history_nodes(scripts)
    progress(PROG, heads_line(nodes))
    problem = read_phases(scripts).problem()
    if problem:
        progress(PROG, problem)

    current, detail = database_revisions()
    if current is None:
        progress(PROG, f"{detail}: the graph shows no current revision")
        current = []
    else:
        unknown = [rev for rev in current if rev not in {n.revision for n in nodes}]
        shown = ", ".join(current) or "base (no revision applied)"
        progress(PROG, f"{detail} is at {shown}")
        if unknown:
            progress(PROG, unknown_note(scripts, unknown))

    chart = render_mermaid(nodes, current)
    if args.output:
        path = Path(args.output)
        body = f"```mermaid\n{chart}```\n" if path.suffix.lower() == ".md" else chart
        path.write_text(body)
        progress(PROG, f"wrote {path}")
    else:
        sys.stdout.write(chart)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
