"""``scripts/migration_graph.sh``: the revision history as a Mermaid flowchart.

``flask db history`` prints a list, where a branch or a merge is easy to miss; two heads
are exactly what breaks a deploy (``/readyz`` and the entrypoint refuse them), so a picture
that shows the fork, the heads and where the database stands answers "what do I merge?"
at a glance. Mermaid renders in GitHub, GitLab and most editors without any tool.

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
from backend.migrate.revisions import current_revisions
from backend.postgres import describe_error
from migration_tools.branches import whereabouts
from migration_tools.command_line import progress
from migration_tools.embedded import DATA_DIR, embedded_database_url

USAGE = "usage: scripts/migration_graph.sh [--output FILE]"
PROG = "migration_graph"

# Heads are what a deploy upgrades to, so they stand out; the database's revision gets a
# second, distinct style so that both show on a node that is head and current.
CLASS_DEFS = (
    "classDef head fill:#e3f2fd,stroke:#1565c0,stroke-width:3px",
    "classDef current fill:#e8f5e9,stroke:#2e7d32,stroke-width:3px,stroke-dasharray:5 3",
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



def history_nodes(scripts: ScriptDirectory) -> list[Node]:
    """Every revision, parents before children, so the chart reads top (base) to bottom.

    ``walk_revisions`` goes from the heads down; reversing it keeps its topological order.
    ``down_revision`` is a tuple on a merge revision: each entry becomes an edge.
    """
    heads = set(scripts.get_heads())
    nodes = []
    for script in reversed(list(scripts.walk_revisions())):
        nodes.append(Node(
            revision=script.revision,
            message=(script.doc or "").strip(),
            parents=to_tuple(script.down_revision, default=()),
            dependencies=to_tuple(script.dependencies, default=()),
            branch_labels=tuple(sorted(script.branch_labels or ())),
            is_head=script.revision in heads,
        ))
    return nodes


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
    for node in nodes:
        markers = [m for m, on in (("head", node.is_head), ("current", node.revision in current))
                   if on]
        title = node.revision + "".join(f" ({m})" for m in markers)
        if node.branch_labels:
            title += f" [{', '.join(node.branch_labels)}]"
        label = f"{title}<br/>{_escape(node.message)}" if node.message else title
        lines.append(f'    {_node_id(node.revision)}["{label}"]')
    for node in nodes:
        for parent in node.parents:
            lines.append(f"    {_node_id(parent)} --> {_node_id(node.revision)}")
        for dependency in node.dependencies:
            lines.append(f"    {_node_id(dependency)} -.->|depends on| {_node_id(node.revision)}")
    lines.extend(f"    {definition}" for definition in CLASS_DEFS)
    heads = [_node_id(n.revision) for n in nodes if n.is_head]
    if heads:
        lines.append(f"    class {','.join(heads)} head")
    known = {n.revision for n in nodes}
    marked = [_node_id(rev) for rev in sorted(current) if rev in known]
    if marked:
        lines.append(f"    class {','.join(marked)} current")
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
    heads = [n.revision for n in nodes if n.is_head]
    progress(PROG, f"{len(nodes)} revision(s), {len(heads)} head(s): "
                   f"{', '.join(heads) or 'none'}")

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
